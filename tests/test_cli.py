"""The command line (``python -m mlxp``) and the benchmark harness, run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlxp
from mlxp.__main__ import DEMOS
from mlxp._backend import BACKEND_NAMES

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "MLXP_BACKEND"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def demo_rows(stdout: str) -> dict[str, list[str]]:
    """The demo table's rows by model name (columns split on runs of two spaces)."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        if len(cells) == 7:
            rows[cells[0]] = cells
    return rows


def test_version():
    result = run("-m", "mlxp", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mlxp {mlxp.__version__}"


def test_no_command_prints_help():
    result = run("-m", "mlxp")
    assert result.returncode == 0
    assert "usage: mlxp" in result.stdout
    assert "info" in result.stdout and "demo" in result.stdout


def test_info_lists_every_backend():
    result = run("-m", "mlxp", "info")
    assert result.returncode == 0, result.stderr
    assert f"mlxp {mlxp.__version__}" in result.stdout
    lines = {ln.split()[0]: ln for ln in result.stdout.splitlines() if ln.strip()}
    for name in BACKEND_NAMES:
        assert "devices:" in lines[name] or "unavailable:" in lines[name]
    assert "devices: cpu" in lines["numpy"]
    assert "none (computation follows the inputs)" in result.stdout


def test_info_shows_the_chosen_backend():
    result = run("-m", "mlxp", "info", env={"MLXP_BACKEND": "numpy"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("numpy:cpu")


@pytest.mark.parametrize(
    ("args", "backend", "device"),
    [
        ((), "numpy", "cpu"),
        (("--backend", "array_api_strict:device1"), "array_api_strict", "device1"),
    ],
)
def test_demo(args, backend, device):
    result = run("-m", "mlxp", "demo", *args)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[:4] == ["model", "data", "backend", "device"]
    rows = demo_rows(result.stdout)
    assert list(rows) == [entry.name for entry in DEMOS], result.stdout
    for entry in DEMOS:
        _, data, row_backend, row_device, metric, value, seconds = rows[entry.name]
        assert (data, row_backend, row_device) == (entry.data, backend, device)
        assert metric == entry.metric_name
        if (data, metric) == ("diabetes", "test R²"):
            assert float(value) > 0.4
        assert float(seconds) >= 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nonsense", "Unknown backend 'nonsense'"), ("numpy:gpu7", "has no device 'gpu7'")],
)
def test_demo_rejects_a_bad_backend(spec, message):
    result = run("-m", "mlxp", "demo", "--backend", spec)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_quick(tmp_path):
    result = run("bench/run.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data) >= {"machine", "settings", "rows"}
    assert {"platform", "cpu_count", "versions", "threads"} <= set(data["machine"])
    assert "OMP_NUM_THREADS" in data["machine"]["threads"]
    settings = data["settings"]
    assert settings["repeat"] == 2
    assert settings["models"] == ["linear", "logistic"]
    assert settings["sizes"] == {"linear": ["200x5", "1000x10"], "logistic": ["200x5", "1000x10"]}
    rows = data["rows"]
    assert {row["backend"] for row in rows} >= {"numpy:cpu", "scikit-learn"}
    for row in rows:
        assert row["median_s"] > 0
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert len(row["times_s"]) == 2
        loose = row["dtype"] == "float32"
        if row["model"] == "LinearRegression":
            assert row["r2_train"] > 0.9
            diff = row["max_abs_diff_coef_vs_sklearn"]
            tol = 1e-3 if loose else 1e-8
        else:
            assert row["model"] == "LogisticRegression"
            assert row["accuracy_train"] > 0.7
            assert row["n_iter"] >= 1
            diff = row["max_abs_diff_proba_vs_sklearn"]
            # float32 L-BFGS stops ~1e-3 away: its line search cannot lower f any further.
            tol = 5e-3 if loose else 1e-4
        # None only for the peer's own rows (no difference to itself).
        assert (diff is None) == (row["backend"] == "scikit-learn")
        assert diff is None or diff < tol
    numpy_rows = [row for row in rows if row["backend"] == "numpy:cpu"]
    solvers = {(row["model"], row["solver"]) for row in numpy_rows}
    assert solvers == {
        ("LinearRegression", "auto"),
        ("LinearRegression", "cholesky"),
        ("LinearRegression", "qr"),
        ("LinearRegression", "svd"),
        ("LogisticRegression", "lbfgs"),
        ("LogisticRegression", "newton"),
    }
    table = (tmp_path / "results.md").read_text()
    assert "| model | solver | size | numpy:cpu" in table
    assert "| scikit-learn | numpy:cpu / peer |" in table
    assert table.count("| LinearRegression |") == 4 * 2
    assert table.count("| LogisticRegression |") == 2 * 2


def test_bench_models_and_sizes(tmp_path):
    """``--models`` picks the registry entries; ``--sizes MODEL=…`` applies to that model only."""
    args = ["--models", "logistic", "--backends", "numpy", "--repeat", "1"]
    args += ["--sizes", "300x4", "--sizes", "logistic=400x3", "--out", str(tmp_path)]
    result = run("bench/run.py", *args)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["sizes"] == {"logistic": ["400x3"]}
    assert {(r["model"], r["n_samples"], r["n_features"]) for r in data["rows"]} == {
        ("LogisticRegression", 400, 3)
    }
    bad = run("bench/run.py", "--models", "linear,mlp", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert "--models" in bad.stderr


def test_epoch_benchmark_quick(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run(
        [
            sys.executable,
            "bench/epochs.py",
            "--quick",
            "--models",
            "mlp,cnn",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "epochs.json").read_text())["rows"]
    assert {(r["model"], r["who"].split()[0]) for r in rows} == {
        ("mlp", "mlxp"),
        ("mlp", "torch"),
        ("cnn", "mlxp"),
        ("cnn", "torch"),
    }
    assert all(r["seconds"] > 0 and r["gflops"] > 0 for r in rows)
    assert "| mlp | mlxp numpy:cpu |" in (tmp_path / "epochs.md").read_text()
