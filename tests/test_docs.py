"""The documentation site: every public name in the API reference; the build, warnings as errors.

The build runs the command the README gives (into a temporary folder instead of
``docs/_build/html``), which executes every example of the gallery. It needs the ``docs``
extra (part of the ``test`` extra); without it the build test is skipped, saying so.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlxp

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
BUILD_DEPENDENCIES = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "myst_parser")


def _public_modules() -> list[str]:
    """mlxp and every submodule with no underscore-prefixed part (``__main__`` excluded)."""
    names = [
        info.name
        for info in pkgutil.walk_packages(mlxp.__path__, "mlxp.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return ["mlxp", *sorted(names)]


def _documented() -> list[str]:
    """The full names listed in the autosummary tables of ``docs/api/*.rst``."""
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[docs]')")
    from sphinx.ext.autosummary.generate import find_autosummary_in_files

    files = sorted(str(path) for path in (DOCS / "api").glob("*.rst"))
    return [entry.name for entry in find_autosummary_in_files(files)]


def _resolve(full_name: str):
    module, _, name = full_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_api_reference_lists_every_public_name():
    """Each name in a public module's ``__all__`` is documented, at that name or at another
    public name bound to the same object (a re-export is documented once); each public
    module has its page, and each documented name exists."""
    documented = _documented()
    objects = [_resolve(name) for name in documented]  # a stale entry fails here
    missing = []
    for module_name in _public_modules():
        assert (DOCS / "api" / f"{module_name}.rst").is_file(), f"no page for {module_name}"
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not any(other is obj for other in objects):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from docs/api/*.rst: {missing}"


def _readme_command() -> list[str]:
    """The build command of the README's Documentation section, as an argument list."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^python -m sphinx (.+) docs docs/_build/html$", readme, re.MULTILINE)
    assert match, "README.md does not show the docs build command"
    return [sys.executable, "-m", "sphinx", *match.group(1).split(), "docs"]


def test_docs_build_with_warnings_as_errors_and_examples_executed(tmp_path):
    for name in BUILD_DEPENDENCIES:
        pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [*_readme_command(), str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, f"sphinx failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    assert "WARNING" not in run.stderr, run.stderr
    # Every example ran and drew its figures, and the pages embed them.
    examples = sorted(EXAMPLES.glob("plot_*.py"))
    assert len(examples) >= 5
    for example in examples:
        page = (out / "auto_examples" / f"{example.stem}.html").read_text(encoding="utf-8")
        assert f"sphx_glr_{example.stem}_001.png" in page, example.name
        assert (out / "_images" / f"sphx_glr_{example.stem}_001.png").is_file(), example.name
    for page in ("least_squares", "gradient_descent", "logistic_regression", "neural_networks"):
        html = (out / "user_guide" / f"{page}.html").read_text(encoding="utf-8")
        assert "sphx_glr_plot_" in html and 'class="math' in html, page
    # Every name of the API reference was found and documented by autodoc.
    for name in _documented():
        html = (out / "api" / "generated" / f"{name}.html").read_text(encoding="utf-8")
        assert f'id="{name}"' in html, f"{name} has no documented object on its page"
