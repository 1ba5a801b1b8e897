"""The repository keeps its promises: README commands work, CI runs them, code is lint-clean."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    return [
        line.strip()
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_ci_runs_exactly_the_readme_test_command():
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert len(ci) == 1 and ci[0] in _commands()
    assert "pytest" in ci[0]


def test_readme_demo_command_is_the_one_tested():
    demo = [c for c in _commands() if "mlxp demo" in c]
    assert demo and demo[0].endswith("python -m mlxp demo")


BENCH_COMMANDS = [c for c in _commands() if c.startswith("python bench/run.py")]


@pytest.mark.parametrize("command", BENCH_COMMANDS)
def test_readme_bench_commands_parse(command, monkeypatch):
    """Each benchmark command in the README is valid: its options parse and plan a run (the
    runs themselves take minutes; `--quick` is run end to end in tests/test_cli.py)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import run as bench_run

    args = bench_run.parse_args(shlex.split(command)[2:])
    sizes, repeats = bench_run.plan(args)
    assert sizes and all(sizes.values()) and all(r >= 1 for r in repeats.values())


def test_readme_quotes_bench_commands():
    assert len(BENCH_COMMANDS) >= 2


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_examples_run(index):
    code = _blocks("python")[index]
    if "cuda" in code or "cupy" in code:
        pytest.skip("needs a GPU")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
