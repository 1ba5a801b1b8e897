"""The command line (``python -m mlxp``) and the benchmark harness, run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import backends
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


@pytest.mark.parametrize("spec", ["nonsense", "numpy:tpu"])
def test_a_bad_mlxp_backend_is_explained_not_a_traceback(spec):
    result = run("-m", "mlxp", "info", env={"MLXP_BACKEND": spec})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stdout.splitlines()[-1]
    assert "unusable" in last and f"MLXP_BACKEND={spec!r}" in last
    assert "numpy" in last  # the reason names what is available
    if spec != "nonsense":
        return  # the rest is the same for every bad value
    result = run("-m", "mlxp", "--version", env={"MLXP_BACKEND": spec})
    assert result.returncode == 0 and result.stdout.strip() == f"mlxp {mlxp.__version__}"
    result = run("-m", "mlxp", "demo", env={"MLXP_BACKEND": spec})
    assert result.returncode == 2 and f"MLXP_BACKEND={spec!r}" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_computes_where_mlxp_backend_says():
    """``--backend`` wins; without it the demo follows MLXP_BACKEND, else NumPy."""
    from mlxp.__main__ import demo_backend

    assert str(demo_backend(None)) == "numpy:cpu"
    assert str(demo_backend("array_api_strict:device1")) == "array_api_strict:device1"
    mlxp.set_backend("array_api_strict", "device2")
    assert str(demo_backend(None)) == "array_api_strict:device2"
    assert str(demo_backend("numpy")) == "numpy:cpu"


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


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BENCH_TITLES = {
    "linear": "LinearRegression",
    "ridge": "Ridge",
    "logistic": "LogisticRegression",
    "mlp": "MLP",
    "cnn": "CNN",
}


def section(markdown: str, title: str) -> list[str]:
    """The table rows (not header or rule) under ``## title`` in results.md."""
    text = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return lines[2:]


def check_row(row: dict) -> None:
    """Timings well-formed and the quality of each model's fits as expected."""
    for prefix in ("", "predict_"):
        assert 0 < row[f"{prefix}min_s"] <= row[f"{prefix}median_s"] <= row[f"{prefix}max_s"]
        assert len(row[f"{prefix}times_s"]) == 2
        assert row[f"{prefix}warmup_s"] > 0
    # CPU-only here: there is no device memory pool to grow.
    assert row["memory_before_warmup_bytes"] is row["memory_after_warmup_bytes"] is None
    loose = row["dtype"] == "float32"
    if row["model"] in ("LinearRegression", "Ridge"):
        assert row["r2_train"] > 0.9
        diff = row["max_abs_diff_coef_vs_sklearn"]
        tol = 1e-3 if loose else 1e-8
    elif row["model"] == "LogisticRegression":
        assert row["accuracy_train"] > 0.7
        assert row["n_iter"] >= 1
        diff = row["max_abs_diff_proba_vs_sklearn"]
        # float32 L-BFGS stops ~1e-3 away: its line search cannot lower f any further.
        tol = 1e-2 if loose else 1e-4
    else:
        assert row["model"] in ("MLP", "CNN")
        assert 0 <= row["accuracy_train"] <= 1
        assert 0 < row["final_loss"] < 20
        assert row["gflops"] > 0 and row["flops_per_epoch"] > 0
        assert row["fraction_of_peak"] > 0
        return
    # None only for the peer's own rows (no difference to itself).
    assert (diff is None) == (row["backend"] == "scikit-learn")
    assert diff is None or diff < tol


def test_bench_quick(tmp_path):
    """``--quick`` runs every model on every backend and peer, and writes well-formed files."""
    result = run("bench/run.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data) == {"machine", "settings", "skipped", "peaks", "transfers", "rows"}
    machine = data["machine"]
    assert {"platform", "cpu_count", "versions", "devices", "threads", "load_average"} <= set(
        machine
    )
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"} <= set(machine["threads"])
    settings = data["settings"]
    assert settings["models"] == list(BENCH_TITLES)
    assert settings["repeat"] == dict.fromkeys(BENCH_TITLES, 2)
    assert settings["sizes"] == {
        "linear": ["500x10"],
        "ridge": ["500x10"],
        "logistic": ["500x10"],
        "mlp": ["128x32", "256x32"],
        "cnn": ["64x4", "128x4"],
    }
    usable = [str(c) for c in backends.cases() if c.backend is not None]
    for backend in usable:
        peak = data["peaks"][backend]
        assert peak["float32"] > 0
        assert peak["float64"] is None or peak["float64"] > 0
    assert data["peaks"]["numpy:cpu"]["float64"] > 0
    transfers = {(t["model"], t["size"], t["backend"]): t for t in data["transfers"]}
    for name, title in BENCH_TITLES.items():
        for size in settings["sizes"][name]:
            for backend in usable:
                t = transfers[title, size, backend]
                assert t["bytes"] > 0
                assert 0 <= t["to_device_min_s"] <= t["to_device_median_s"]
                assert 0 <= t["to_host_min_s"] <= t["to_host_median_s"]
    rows = data["rows"]
    for row in rows:
        check_row(row)
    solvers = {(r["model"], r["solver"]) for r in rows if r["backend"] == "numpy:cpu"}
    assert solvers == {
        ("LinearRegression", "auto"),
        ("LinearRegression", "cholesky"),
        ("LinearRegression", "qr"),
        ("LinearRegression", "svd"),
        ("Ridge", "auto"),
        ("Ridge", "svd"),
        ("LogisticRegression", "lbfgs"),
        ("LogisticRegression", "newton"),
        ("MLP", "adam"),
        ("CNN", "adam"),
    }
    ran = {(r["model"], r["backend"]) for r in rows}
    assert {(title, b) for title in BENCH_TITLES.values() for b in usable} <= ran
    peers = {("LinearRegression", "scikit-learn"), ("Ridge", "scikit-learn")}
    peers |= {("LogisticRegression", "scikit-learn"), ("MLP", "scikit-learn")}
    if "torch" in machine["versions"] and machine["versions"]["torch"]:
        peers |= {("MLP", "PyTorch cpu"), ("CNN", "PyTorch cpu")}
    assert peers <= {(r["model"], r["backend"]) for r in rows if r["peer"]}
    skipped = {s["name"] for s in data["skipped"]}
    if machine["versions"]["cuml"] is None:
        assert {"cuML (linear)", "cuML (ridge)", "cuML (logistic)"} <= skipped

    table = (tmp_path / "results.md").read_text()
    for title in ("Fit time", "Predict time", "Quality", "Warm-up", "Host↔device transfer"):
        assert f"## {title}" in table
    assert "| model | solver | size | numpy:cpu |" in table
    fit = section(table, "Fit time")  # one row per model × solver × size
    assert len(fit) == sum(1 for r in rows if r["backend"] == "numpy:cpu")
    for name, title in BENCH_TITLES.items():
        for size in settings["sizes"][name]:
            assert any(ln.startswith(f"| {title} | ") and f" | {size} | " in ln for ln in fit)
    assert all(ln.count("|") == fit[0].count("|") for ln in fit)
    assert "float32 GFLOP/s" in table
    assert len(section(table, "Networks: achieved GFLOP/s")) == 4

    if "matplotlib" in result.stderr and "no plots" in result.stderr:
        assert machine["versions"]["matplotlib"] is None
        return
    for title in BENCH_TITLES.values():
        assert (tmp_path / f"{title}.png").read_bytes()[:8] == PNG_MAGIC


def test_bench_models_and_sizes(tmp_path):
    """``--models`` picks the registry entries; ``--sizes MODEL=…`` applies to that model only."""
    args = ["--models", "logistic,mlp", "--backends", "numpy", "--repeat", "1"]
    args += ["--sizes", "300x4", "--sizes", "logistic=400x3", "--out", str(tmp_path)]
    result = run("bench/run.py", *args)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["sizes"] == {"logistic": ["400x3"], "mlp": ["300x4"]}
    assert data["settings"]["repeat"] == {"logistic": 1, "mlp": 1}
    assert {(r["model"], r["size"]) for r in data["rows"]} == {
        ("LogisticRegression", "400x3"),
        ("MLP", "300x4"),
    }
    assert {r["backend"] for r in data["rows"] if not r["peer"]} == {"numpy:cpu"}
    mlp = next(r for r in data["rows"] if r["model"] == "MLP" and r["backend"] == "numpy:cpu")
    assert (mlp["n_samples"], mlp["width"], mlp["batch_size"]) == (300, 4, 128)
    bad = run("bench/run.py", "--models", "linear,nonsense", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert "--models" in bad.stderr
    bad = run("bench/run.py", "--sizes", "mlp=12", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert "NxP" in bad.stderr
