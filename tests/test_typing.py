"""The public API type-checks: mypy, as configured in pyproject.toml ([tool.mypy]: strict on
the public modules and on tests/api_typing/public_api.py, a program using the API), from a cold
cache; and the package says it ships types (``py.typed``, in the package data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 reads pyproject.toml itself


def test_py_typed_ships_with_the_package():
    assert (ROOT / "mlxp" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["mlxp"]


def test_mypy_strict_on_the_public_api(tmp_path):
    """One cold run over the configured files plus a call against a public signature that
    must be the only error (so the check can fail)."""
    pytest.importorskip("mypy")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and "tests/api_typing/public_api.py" in config["files"]
    bad = tmp_path / "wrong_call.py"
    bad.write_text("import mlxp\n\nmlxp.set_backend(3)\n")
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(
        [*command, *config["files"], str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert errors[0].startswith(f"{bad}:3:") and 'incompatible type "int"' in errors[0]
