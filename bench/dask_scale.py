"""Dask benchmarks: mlxp's linear models on a LocalCluster beside dask-ml, quality beside time.

    python bench/run.py --backends dask [--sizes 1000000x20] [--repeat N] [--out DIR]

(or ``python bench/dask_scale.py``). A ``LocalCluster(n_workers=2, threads_per_worker=1)``
of worker processes; X made by ``dask.array.random`` in 10 row chunks and persisted, so
times are those of fitting, not of making data. Measured:

* OLS: mlxp ``LinearRegression`` (one Gram pass) vs dask-ml's ``LinearRegression``
  (iterative), until the model is usable (coefficients concrete); R² and the largest
  coefficient difference from NumPy's lstsq on the same data;
* binary logistic: mlxp lbfgs on Dask vs dask-ml lbfgs and admm vs mlxp on NumPy in memory
  (timed before the cluster starts: its processes slow a NumPy fit in the client);
  training log-loss, accuracy and the coefficient difference from mlxp on NumPy;
* ``predict``: tasks in its graph beside the number of chunks;
* fit time against ``max_iter`` (tol=0, 20 000 × 20): linear in iterations.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

from mlxp.exceptions import ConvergenceWarning
from mlxp.linear_model import LinearRegression, LogisticRegression

CHUNKS = 10


def _data(n: int, p: int, seed: int = 0) -> tuple[Any, Any, Any]:
    import dask.array as da

    X = da.random.default_rng(seed).normal(size=(n, p), chunks=(-(-n // CHUNKS), p))
    w = np.linspace(-1, 1, p)
    noise = da.random.default_rng(seed + 1).normal(size=(n,), chunks=X.chunks[0])
    y = X @ w + 0.5 + 0.1 * noise
    label = (X @ w + 0.5 * noise > 0).astype(np.float64)
    return [a.persist() for a in (X, y, label)]


def _timed(fn, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def _log_loss(coef, intercept, X, y) -> float:
    z = X @ np.ravel(coef) + float(np.ravel(intercept)[0])
    return float(np.mean(np.logaddexp(0, z) - y * z))


def _dask_ml() -> Any:
    try:
        import dask_ml.linear_model as dml
    except Exception as exc:  # not installed, or incompatible with this Dask
        return f"dask-ml unavailable: {type(exc).__name__}: {exc}"
    return dml


def linear_rows(X, y, Xh, yh, repeat: int, dml: Any) -> list[dict[str, Any]]:
    A = np.column_stack([Xh, np.ones(len(yh))])
    truth = np.linalg.lstsq(A, yh, rcond=None)[0][:-1]
    rows = []
    fits = {"mlxp (Dask)": lambda: LinearRegression().fit(X, y)}
    if not isinstance(dml, str):
        fits["dask-ml"] = lambda: dml.LinearRegression().fit(X, y)
    for name, fit in fits.items():
        seconds, model = _timed(fit, repeat)
        coef = np.ravel(model.coef_)
        r2 = 1 - np.sum((Xh @ coef + float(np.ravel(model.intercept_)[0]) - yh) ** 2) / np.sum(
            (yh - yh.mean()) ** 2
        )
        error = float(np.max(np.abs(coef - truth)))
        rows.append({"model": "OLS", "who": name, "seconds": seconds, "r2": r2, "coef_err": error})
    return rows


PARAMS = {"C": 1.0, "tol": 1e-6, "max_iter": 200}


def numpy_fit(n: int, p: int, repeat: int) -> tuple[float, Any]:
    """mlxp on the same data in memory, timed before any cluster starts (a LocalCluster's
    processes and the client's threads slow a NumPy fit in the client several-fold)."""
    Xh, _, lh = (a.compute(scheduler="threads") for a in _data(n, p))
    return _timed(lambda: LogisticRegression(**PARAMS).fit(Xh, lh), repeat)


def logistic_rows(X, label, Xh, lh, repeat: int, dml: Any, reference: Any) -> list[dict[str, Any]]:
    fits = {"mlxp lbfgs (Dask)": lambda: LogisticRegression(**PARAMS).fit(X, label)}
    if not isinstance(dml, str):
        for solver in ("lbfgs", "admm"):
            fits[f"dask-ml {solver}"] = lambda s=solver: dml.LogisticRegression(
                solver=s, C=1.0, tol=1e-6, max_iter=200
            ).fit(X, label)
    timed = {"mlxp (NumPy, in memory, no cluster running)": reference}
    for name, fit in fits.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            timed[name] = _timed(fit, repeat)
    rows, first = [], None
    for name, (seconds, model) in timed.items():
        coef = np.ravel(model.coef_)
        first = coef if first is None else first
        z = Xh @ coef + float(np.ravel(model.intercept_)[0])
        rows.append(
            {
                "model": "binary logistic",
                "who": name,
                "seconds": seconds,
                "log_loss": _log_loss(coef, model.intercept_, Xh, lh),
                "accuracy": float(np.mean((z > 0) == (lh > 0.5))),
                "coef_diff_vs_numpy": float(np.max(np.abs(coef - first))),
                "passes": getattr(model, "n_passes_", None),
            }
        )
    return rows


def scaling_rows(repeat: int) -> list[dict[str, Any]]:
    X, _, label = _data(20_000, 20, seed=3)
    rows = []
    for max_iter in (5, 10, 20, 40):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = lambda m=max_iter: LogisticRegression(max_iter=m, tol=0).fit(X, label)  # noqa: E731
            seconds, model = _timed(fit, repeat)
        rows.append({"max_iter": max_iter, "seconds": seconds, "passes": model.n_passes_})
    model = LogisticRegression().fit(X, label)
    pred = model.predict(X)
    tasks = {"chunks": X.numblocks[0], "predict_tasks": len(dict(pred.__dask_graph__()))}
    return rows, tasks


def run(n: int = 1_000_000, p: int = 20, repeat: int = 1) -> dict[str, Any]:
    """All the measurements above, on a fresh LocalCluster of two worker processes."""
    import distributed

    reference = numpy_fit(n, p, repeat)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        dml = _dask_ml()
        X, y, label = _data(n, p)
        Xh, yh, lh = (a.compute() for a in (X, y, label))
        rows = linear_rows(X, y, Xh, yh, repeat, dml)
        rows += logistic_rows(X, label, Xh, lh, repeat, dml, reference)
        scaling, tasks = scaling_rows(repeat)
    note = dml if isinstance(dml, str) else None
    return {"size": f"{n}x{p}", "rows": rows, "max_iter": scaling, "predict": tasks, "note": note}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"## Dask, LocalCluster 2 workers x 1 thread, {result['size']}", ""]
    for r in result["rows"]:
        quality = ", ".join(
            f"{k} {v:.4g}"
            for k, v in r.items()
            if k not in ("model", "who", "seconds") and isinstance(v, (float, int))
        )
        lines.append(f"- {r['model']}, {r['who']}: {r['seconds']:.2f} s ({quality})")
    lines.append("")
    lines += [
        f"- max_iter {r['max_iter']}: {r['seconds']:.2f} s, {r['passes']} passes"
        for r in result["max_iter"]
    ]
    t = result["predict"]
    lines.append(f"- predict: {t['predict_tasks']} tasks for {t['chunks']} chunks")
    if result["note"]:
        lines.append(f"- {result['note']}")
    return "\n".join(lines) + "\n"


def main(
    sizes: list[tuple[int, int]] | None = None, repeat: int = 1, out: Path | None = None
) -> int:
    results = [run(n, p, repeat) for n, p in (sizes or [(1_000_000, 20)])]
    text = "".join(markdown(r) for r in results)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "dask.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "dask.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
