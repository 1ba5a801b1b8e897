"""The public API type-checks: mypy, as configured in pyproject.toml ([tool.mypy]: strict on
the public modules and on tests/api_typing/public_api.py, a program using the API), from a cold
cache, every estimator, layer and optimiser module in it or named as left out (and why); the
checked program runs; and the package says it ships types (``py.typed``, in the package data)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlxp.exceptions import ConvergenceWarning

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


def test_every_estimator_layer_and_optimiser_module_is_checked():
    """Each module of mlxp.linear_model, mlxp.nn and mlxp.optim is in [tool.mypy]'s files
    (itself or its folder) or, not both, named there in a comment saying why it is left out."""
    text = (ROOT / "pyproject.toml").read_text()
    files = tomllib.loads(text)["tool"]["mypy"]["files"]
    left_out = set(re.findall(r"^\s*# (mlxp/\S+\.py): \S", text, flags=re.MULTILINE))
    modules = [
        path.relative_to(ROOT).as_posix()
        for package in ("linear_model", "nn", "optim")
        for path in sorted((ROOT / "mlxp" / package).glob("*.py"))
    ]
    assert len(modules) > 20 and all((ROOT / name).is_file() for name in left_out)
    for name in modules:
        checked = any(name == f or name.startswith(f"{f}/") for f in files)
        assert checked != (name in left_out), name


@pytest.mark.filterwarnings(f"ignore::{ConvergenceWarning.__module__}.ConvergenceWarning")
def test_the_checked_program_runs(tmp_path):
    """The program mypy checks is a real one: it runs, saving a model to ``path``."""
    from tests.api_typing.public_api import main

    assert main(str(tmp_path / "model.mlxp")) > 0 and (tmp_path / "model.mlxp").is_file()
