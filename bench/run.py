"""Benchmark harness: time mlxp's estimators on every backend, with scikit-learn as a peer.

    python bench/run.py [--models linear,logistic] [--backends numpy,torch,...]
                        [--sizes [MODEL=]NxP,...] [--repeat 5] [--out DIR] [--quick]

Each fit is timed after one untimed warm-up fit, with the device synchronised on
``coef_`` before the clock is read. Writes ``results.json`` (machine, settings, raw
rows) and ``results.md`` (median seconds and the ratio to NumPy) into ``--out``.
See bench/README.md.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `backends`

import backends
import mlxp
from mlxp._backend import backend_report
from mlxp.linear_model import LinearRegression, LogisticRegression

PEER = "scikit-learn"
NUMPY = "numpy:cpu"
QUICK_SIZES = "200x5,1000x10"
# Both sides solve the same problem to the same gradient tolerance. At the shared
# default (tol=1e-4) two "converged" fits of 50000x50 differ by ~5e-3 in predict_proba,
# which would hide real disagreements; at 1e-6 they agree to ~2e-5 for a few more steps.
LOGISTIC_PARAMS = {"C": 1.0, "tol": 1e-6, "max_iter": 1000}
QUALITY = {  # row key -> its format in results.md; keys a row lacks are left out
    "r2_train": "R² {:.3f}",
    "accuracy_train": "acc {:.3f}",
    "max_abs_diff_coef_vs_sklearn": "Δcoef {:.0e}",
    "max_abs_diff_proba_vs_sklearn": "Δproba {:.0e}",
    "n_iter": "{} it",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
THREAD_VARS += ("VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "XLA_FLAGS")


def linear_data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features (well conditioned for n ≫ p) and a noisy linear target, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = X @ rng.standard_normal(p) + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


def logistic_data(n: int, p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; labels 1[X·w + 0.5·logistic noise > 0] as float64 0/1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = (X @ rng.standard_normal(p) + 0.5 * rng.logistic(size=n) > 0).astype(np.float64)
    return X, y


def sklearn(name: str, **params: Any) -> Callable[[], Any] | None:
    """A factory of scikit-learn's ``linear_model.<name>(**params)``; None if not installed."""
    try:
        from sklearn import linear_model
    except ImportError:
        return None
    return functools.partial(getattr(linear_model, name), **params)


@dataclass(frozen=True)
class ModelBench:
    """One model of the registry: its data, mlxp solvers, peer and quality measures."""

    title: str  # the estimator's name, first column of the table
    sizes: str  # default NxP list
    data: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    estimator: type  # mlxp estimator, built as estimator(solver=..., **params)
    solvers: tuple[str, ...]
    peer: Callable[[], Any] | None  # unfitted scikit-learn estimator (None: not installed)
    peer_solver: str
    score: str  # name of model.score(X, y) in the rows: "r2_train", "accuracy_train"
    compared: str  # what is compared with the peer: max_abs_diff_<compared>_vs_sklearn
    output: Callable[[Any, Any], Any]  # (fitted model, X) -> the compared array
    params: dict[str, Any] = field(default_factory=dict)

    def make(self, solver: str) -> Callable[[], Any]:
        return functools.partial(self.estimator, solver=solver, **self.params)


MODELS = {
    "linear": ModelBench(
        title="LinearRegression",
        sizes="2000x20,100000x100",
        data=linear_data,
        estimator=LinearRegression,
        solvers=("auto", "cholesky", "qr", "svd"),
        peer=sklearn("LinearRegression"),
        peer_solver="lstsq",
        score="r2_train",
        compared="coef",
        output=lambda model, X: model.coef_,
    ),
    "logistic": ModelBench(
        title="LogisticRegression",
        sizes="50000x50",
        data=logistic_data,
        estimator=LogisticRegression,
        solvers=("lbfgs", "newton"),
        peer=sklearn("LogisticRegression", **LOGISTIC_PARAMS),
        peer_solver="lbfgs",
        score="accuracy_train",
        compared="proba",
        output=lambda model, X: model.predict_proba(X),
        params=LOGISTIC_PARAMS,
    ),
}


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


def measure(bench, solver, backend, size, make, X, y, repeat, sync, reference) -> dict:
    """Time ``make().fit(X, y)``; one result row with the times, score, Δ vs peer, n_iter."""
    model, times = time_fit(make, X, y, repeat, sync)
    out = mlxp.to_numpy(bench.output(model, X))
    n_iter = getattr(model, "n_iter_", None)
    return {
        "model": bench.title,
        "solver": solver,
        "solver_used": getattr(model, "solver_", solver),
        "backend": backend,
        "n_samples": size[0],
        "n_features": size[1],
        "dtype": str(mlxp.to_numpy(model.coef_).dtype),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        bench.score: float(model.score(X, y)),
        f"max_abs_diff_{bench.compared}_vs_sklearn": (
            None if reference is None else float(np.max(np.abs(out - reference)))
        ),
        "n_iter": None if n_iter is None else int(np.max(n_iter)),
    }


def run(benches, sizes, cases, repeat) -> list[dict]:
    """Rows for every model × size × (peer, then each backend × solver)."""
    rows = []
    for name, bench in benches.items():
        for size in sizes[name]:
            X, y = bench.data(*size)
            reference = None
            if bench.peer is not None:
                reference = np.asarray(bench.output(bench.peer().fit(X, y), X))
                args = (X, y, repeat, lambda _: None, None)  # no Δ of the peer to itself
                rows.append(measure(bench, bench.peer_solver, PEER, size, bench.peer, *args))
            for case in cases:
                args = (case.asarray(X), case.asarray(y), repeat, case.synchronize, reference)
                for solver in bench.solvers:
                    rows.append(measure(bench, solver, str(case), size, bench.make(solver), *args))
                print(f"  {name} {size[0]}x{size[1]} {case}: done", file=sys.stderr)
    return rows


def quality(r: dict) -> str:
    """``R² 1.000, Δcoef 2e-15`` or ``acc 0.964, Δproba 2e-05, 17 it`` (known keys only)."""
    return ", ".join(f.format(r[k]) for k, f in QUALITY.items() if r.get(k) is not None)


def markdown(rows: list[dict], columns: list[str]) -> str:
    """Rows model × solver × size; a column per backend and the peer: median s (ratio)."""
    by_key = {
        (r["model"], r["solver"], r["n_samples"], r["n_features"], r["backend"]): r for r in rows
    }
    peers = {(r["model"], r["n_samples"], r["n_features"]): r for r in rows if r["backend"] == PEER}
    keys = dict.fromkeys(k[:4] for k in by_key if k[4] != PEER)
    extra = [f"{NUMPY} / peer", f"{NUMPY} quality", "peer quality"]
    lines = [
        "| model | solver | size | " + " | ".join(columns + extra) + " |",
        "|---|---|---|" + "---:|" * (len(columns) + 1) + "---|---|",
    ]
    for model, solver, n, p in keys:
        numpy_row, peer = by_key.get((model, solver, n, p, NUMPY)), peers.get((model, n, p))
        cells = []
        for col in columns:
            r = peer if col == PEER else by_key.get((model, solver, n, p, col))
            if r is None:
                cells.append("—")
                continue
            ratio = f"{r['median_s'] / numpy_row['median_s']:.2f}" if numpy_row else "—"
            cells.append(f"{r['median_s']:.3g} ({ratio})")
        both = numpy_row and peer
        cells.append(f"**{numpy_row['median_s'] / peer['median_s']:.2f}**" if both else "—")
        cells += [quality(r) if r else "—" for r in (numpy_row, peer)]
        used = next(r["solver_used"] for k, r in by_key.items() if k[:4] == (model, solver, n, p))
        label = f"{solver} → {used}" if used != solver else solver
        lines.append(f"| {model} | {label} | {n}x{p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Platform, CPUs, thread settings and library versions (call after the runs)."""
    versions = {r["name"]: r["version"] for r in backend_report()}
    for name in ("sklearn", "scipy", "threadpoolctl"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    threads: dict[str, Any] = {v: os.environ.get(v) for v in THREAD_VARS}
    if "torch" in sys.modules:
        threads["torch.get_num_threads"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threads["threadpoolctl"] = None
    else:
        keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture")
        threads["threadpoolctl"] = [{k: i.get(k) for k in keys} for i in threadpool_info()]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "mlxp": mlxp.__version__,
        "versions": versions,
        "threads": threads,
    }


def parse_sizes(text: str) -> tuple[str | None, list[tuple[int, int]]]:
    """``"2000x20,100000x100"`` -> (None, [(2000, 20), (100000, 100)]); ``"linear=…"``: its own."""
    model, _, spec = text.rpartition("=")
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in spec.split(",") if s.strip()]
        ok = sizes and all(len(s) == 2 and min(s) >= 1 for s in sizes) and model in ("", *MODELS)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [MODEL=]NxP[,NxP...] with MODEL in {', '.join(MODELS)}, "
            "e.g. 2000x20,100000x100 or logistic=50000x50"
        )
    return model or None, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma list (default: all)")
    parser.add_argument("--backends", help="comma-separated names or name:device (default: all)")
    defaults = "; ".join(f"{k} {b.sizes}" for k, b in MODELS.items())
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        action="append",
        default=[],
        help=f"[MODEL=]NxP,... for all models or MODEL only; repeatable (default: {defaults})",
    )
    parser.add_argument("--repeat", type=int, help="timed fits per cell (default 5; --quick 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true", help=f"default sizes {QUICK_SIZES}")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names or any(m not in MODELS for m in names):
        parser.error(f"--models {args.models!r}: choose from {', '.join(MODELS)}")
    benches = {m: MODELS[m] for m in names}
    sizes = {}
    for name, bench in benches.items():
        default = parse_sizes(QUICK_SIZES if args.quick else bench.sizes)[1]
        given = [s for m, s in args.sizes if m in (None, name)]
        sizes[name] = given[-1] if given else default

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

    rows = run(benches, sizes, cases, repeat)
    settings = {"models": names, "repeat": repeat, "warmup": 1, "logistic_params": LOGISTIC_PARAMS}
    settings["sizes"] = {m: [f"{n}x{p}" for n, p in s] for m, s in sizes.items()}
    machine = machine_info()
    result = {"machine": machine, "settings": settings, "skipped": skipped, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    columns = [str(c) for c in cases] + ([PEER] if any(r["backend"] == PEER for r in rows) else [])
    table = markdown(rows, columns)
    peers = "; ".join(
        f"{b.title}: {b.peer_solver}" + "".join(f", {k}={v}" for k, v in b.params.items())
        for b in benches.values()
    )
    note = (
        f"Median fit time in seconds over {repeat} runs after one warm-up (ratio to {NUMPY}); "
        f"{PEER}: its estimator on NumPy, one number per size ({peers}; mlxp gets the same "
        f"parameters). **{NUMPY} / peer** < 1: mlxp on NumPy is faster. Quality: training R² or "
        "accuracy, max |Δ| of coef_ or predict_proba vs the peer, iterations."
    )
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    where = f"{machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}"
    text = f"# Benchmark results\n\n{where}; {versions}.\n\n{note}\n\n{table}\n"
    (args.out / "results.md").write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
