"""What a user installs: the version everywhere the same, the changelog, the extras the
README names (each defined; the CPU ones satisfied here, each backend running a fit)."""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlxp
from mlxp.__main__ import main
from mlxp.linear_model import Ridge

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
README = (ROOT / "README.md").read_text()

CPU_EXTRAS = {"torch": "torch", "jax": "jax", "strict": "array_api_strict", "dask": "dask"}
"""The extras CI installs (through backends/cpu.txt), and the backend each one runs."""
CPU_ONLY = ("docs",)  # CI installs these too; no backend of their own


def test_the_version_is_one_everywhere():
    assert mlxp.__version__ == metadata.version("mlxp") == PROJECT["version"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--version"])  # what the console script runs (project.scripts)
    assert done.value.code == 0 and out.getvalue().strip() == f"mlxp {mlxp.__version__}"
    assert PROJECT["scripts"]["mlxp"] == "mlxp.__main__:main"


@pytest.mark.parametrize("command", [[sys.executable, "-m", "mlxp"], ["mlxp"]], ids=str)
def test_version_on_the_command_line(command):
    if command == ["mlxp"] and shutil.which("mlxp") is None:
        pytest.skip("the mlxp console script is not installed (pip install -e .)")
    result = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == f"mlxp {mlxp.__version__}"


def test_the_changelog_keeps_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    sections = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert sections[0] == "Unreleased" and PROJECT["version"] in sections
    assert "### Added" in text


def test_runtime_dependencies_are_few():
    names = {requirements.Requirement(r).name for r in PROJECT["dependencies"]}
    assert names == {"numpy", "array-api-compat", "tqdm"}


def test_every_extra_the_readme_names_exists():
    named = set()
    for group in re.findall(r"\.\[([a-z0-9_,-]+)\]", README):
        named.update(group.split(","))
    assert {"test", "torch", "jax", "strict"} <= named  # the README says what each is for
    assert named <= set(EXTRAS), sorted(named - set(EXTRAS))


def _unsatisfied(extra):
    missing = []
    for line in EXTRAS[extra]:
        req = requirements.Requirement(line)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(f"{req} (found {version})")
    return missing


@pytest.mark.parametrize("extra", [*CPU_EXTRAS, *CPU_ONLY])
def test_the_cpu_extras_are_installed_and_run(extra):
    if extra not in EXTRAS:
        pytest.skip(f"no [{extra}] extra in pyproject.toml yet")
    assert _unsatisfied(extra) == []
    if extra in CPU_ONLY:
        return
    name = CPU_EXTRAS[extra]
    if name not in mlxp._backend.BACKEND_NAMES:
        pytest.skip(f"no {name} backend in this mlxp")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    model = Ridge(alpha=1e-3, backend=name).fit(X, y)
    np.testing.assert_allclose(mlxp.to_numpy(model.coef_), [1.0, -2.0, 0.5], atol=1e-2)
    library = type(model.coef_).__module__.partition(".")[0]
    assert library in {"jax": ("jax", "jaxlib"), "dask": ("numpy",)}.get(name, (name,)), library


@pytest.mark.parametrize("cuda", ["12", "13"])
def test_the_gpu_recipes_install_the_cuda_builds(cuda):
    """backends/cudaNN.txt: the CPU matrix, then CuPy and JAX built for that CUDA major
    (cpu.txt's jax[cpu] alone would leave the jax:cuda cases skipped on a GPU)."""
    lines = (ROOT / "backends" / f"cuda{cuda}.txt").read_text().splitlines()
    lines = [line for line in lines if line.strip() and not line.startswith("#")]
    assert lines[0] == "-r cpu.txt"
    wanted = {
        requirements.Requirement(line).name: requirements.Requirement(line) for line in lines[1:]
    }
    assert wanted[f"cupy-cuda{cuda}x"].extras == {"ctk"}
    assert wanted["jax"].extras == {f"cuda{cuda}"}


def test_the_test_extra_has_the_test_tools():
    names = {requirements.Requirement(r).name for r in EXTRAS["test"]}
    assert {"mypy", "nbclient", "nbformat", "ipykernel", "ipywidgets", "pandas"} <= names
    assert _unsatisfied("test") == []
