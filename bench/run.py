"""Benchmark harness: time mlxp's estimators on every backend, with scikit-learn as a peer.

    python bench/run.py [--backends numpy,torch,...] [--sizes 2000x20,100000x100]
                        [--repeat 5] [--out DIR] [--quick]

Each fit is timed after one untimed warm-up fit, with the device synchronised on
``coef_`` before the clock is read. Writes ``results.json`` (machine, settings, raw
rows) and ``results.md`` (median seconds and the ratio to NumPy) into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `backends`

import backends
import mlxp
from mlxp._backend import backend_report
from mlxp.linear_model import LinearRegression

SOLVERS = ("auto", "cholesky", "qr", "svd")
PEER = "scikit-learn"
QUICK_SIZES = "200x5,1000x10"


def time_fit(make: Callable[[], Any], X: Any, y: Any, repeat: int, sync: Callable[[Any], None]):
    """Fit a fresh ``make()`` once untimed, then ``repeat`` times; the last model and the times."""
    sync(make().fit(X, y).coef_)
    times = []
    for _ in range(repeat):
        model = make()
        start = time.perf_counter()
        model.fit(X, y)
        sync(model.coef_)
        times.append(time.perf_counter() - start)
    return model, times


def make_data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features (well conditioned for n ≫ p) and a noisy linear target, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = X @ rng.standard_normal(p) + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


def measure(model_name, solver, backend, size, make, X, y, repeat, sync, ref_coef) -> dict:
    """Time ``make().fit(X, y)``; one result row with the times, train R² and Δcoef."""
    model, times = time_fit(make, X, y, repeat, sync)
    coef = mlxp.to_numpy(model.coef_)
    return {
        "model": model_name,
        "solver": solver,
        "solver_used": getattr(model, "solver_", solver),
        "backend": backend,
        "n_samples": size[0],
        "n_features": size[1],
        "dtype": str(coef.dtype),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "r2_train": float(model.score(X, y)),
        "max_abs_diff_coef_vs_sklearn": (
            None if ref_coef is None else float(np.max(np.abs(coef - ref_coef)))
        ),
    }


def run(cases: list[backends.Case], sizes: list[tuple[int, int]], repeat: int) -> list[dict]:
    try:
        from sklearn.linear_model import LinearRegression as SkLinearRegression
    except ImportError:
        SkLinearRegression = None
    rows = []
    for size in sizes:
        X, y = make_data(*size)
        ref_coef = None
        if SkLinearRegression is not None:
            ref_coef = SkLinearRegression().fit(X, y).coef_
            args = (X, y, repeat, lambda _: None, ref_coef)
            rows.append(measure("LinearRegression", "lstsq", PEER, size, SkLinearRegression, *args))
        for case in cases:
            args = (case.asarray(X), case.asarray(y), repeat, case.synchronize, ref_coef)
            for solver in SOLVERS:
                make = functools.partial(LinearRegression, solver=solver)
                rows.append(measure("LinearRegression", solver, str(case), size, make, *args))
            print(f"  {size[0]}x{size[1]} {case}: done", file=sys.stderr)
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    """Rows model × solver × size; a column per backend (and the peer): median s (ratio)."""
    by_key = {
        (r["model"], r["solver"], r["n_samples"], r["n_features"], r["backend"]): r for r in rows
    }
    keys = dict.fromkeys(
        (r["model"], r["solver"], r["n_samples"], r["n_features"])
        for r in rows
        if r["backend"] != PEER
    )
    lines = [
        "| model | solver | size | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---:|" * len(columns),
    ]
    for model, solver, n, p in keys:
        numpy_row = by_key.get((model, solver, n, p, "numpy:cpu"))
        cells = []
        for col in columns:
            r = by_key.get((model, solver if col != PEER else "lstsq", n, p, col))
            if r is None:
                cells.append("—")
                continue
            ratio = f"{r['median_s'] / numpy_row['median_s']:.2f}" if numpy_row else "—"
            cells.append(f"{r['median_s']:.3g} ({ratio})")
        used = next(r["solver_used"] for k, r in by_key.items() if k[:4] == (model, solver, n, p))
        label = f"{solver} → {used}" if used != solver else solver
        lines.append(f"| {model} | {label} | {n}x{p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    versions = {r["name"]: r["version"] for r in backend_report()}
    for name in ("sklearn", "scipy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "mlxp": mlxp.__version__,
        "versions": versions,
    }


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"2000x20,100000x100"`` -> [(2000, 20), (100000, 100)]."""
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of NxP, e.g. 2000x20,100000x100")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", help="comma-separated names or name:device (default: all)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default="2000x20,100000x100", help="comma-separated NxP"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed fits per cell (default 5)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, repeat 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = parse_sizes(QUICK_SIZES), 2
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    all_cases = backends.cases()
    wanted = None if args.backends is None else [w.strip() for w in args.backends.split(",")]
    for w in wanted or []:
        if not any(w in (c.name, str(c)) for c in all_cases):
            parser.error(f"unknown backend {w!r}; known: {', '.join(map(str, all_cases))}")
    chosen = [c for c in all_cases if wanted is None or c.name in wanted or str(c) in wanted]
    cases = [c for c in chosen if c.backend is not None]
    skipped = [{"backend": str(c), "reason": c.reason} for c in chosen if c.backend is None]
    for s in skipped:
        print(f"skipping {s['backend']}: {s['reason']}", file=sys.stderr)

    rows = run(cases, args.sizes, args.repeat)
    settings = {"sizes": [f"{n}x{p}" for n, p in args.sizes], "repeat": args.repeat, "warmup": 1}
    machine = machine_info()
    result = {"machine": machine, "settings": settings, "skipped": skipped, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    columns = [str(c) for c in cases] + ([PEER] if any(r["backend"] == PEER for r in rows) else [])
    table = markdown(rows, columns)
    note = (
        f"Median fit time in seconds over {args.repeat} runs after one warm-up (ratio to "
        f"numpy:cpu); {PEER}: its LinearRegression (lstsq) on NumPy, one number per size."
    )
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    where = f"{machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}"
    text = f"# Benchmark results\n\n{where}; {versions}.\n\n{note}\n\n{table}\n"
    (args.out / "results.md").write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
