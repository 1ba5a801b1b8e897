"""bench/compiled_steps.py (the GPU check's CUDA-graph table) on jax:cpu, where compile=True
is jax.jit: one row per model and batch, and the compiled fits' losses are the eager fits'."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import case_named

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_steps_tables_both_modes_with_equal_losses(tmp_path):
    case_named("jax:cpu")
    out = tmp_path / "graphs.md"
    command = [sys.executable, "bench/compiled_steps.py", "jax:cpu", "--models", "mlp,cnn",
               "--n", "96", "--width", "4", "--batches", "32", "--epochs", "1", "--repeat", "1",
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| mlp", "| cnn"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        eager, compiled, ratio = (float(c) for c in cells[2:5])
        assert ratio == pytest.approx(compiled / eager, abs=0.006)
        losses = [float(v) for v in cells[5].split(",")]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_compiled_steps_names_a_backend_it_cannot_run():
    result = subprocess.run([sys.executable, "bench/compiled_steps.py", "nope:cpu"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0 and "nope:cpu: no such backend here" in result.stderr
