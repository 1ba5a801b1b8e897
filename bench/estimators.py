"""Linear-model benchmarks: mlxp's LinearRegression, Ridge and LogisticRegression solvers
beside scikit-learn (on the host) and cuML (on the GPU, when ``import cuml`` works).

Each fit is a fresh estimator on data already on the target; ``predict`` is timed on the
last fitted model. Quality, computed outside the clock: training R² or accuracy, the
largest difference from scikit-learn's ``coef_`` or ``predict_proba``, and iterations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mlxp
from bench.timing import Peaks, Target, device_memory, host_target, timed
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge

SKLEARN = "scikit-learn"
CUML = "cuML"
# Both sides solve the same problem to the same gradient tolerance. At the shared
# default (tol=1e-4) two "converged" fits of 50000x50 differ by ~5e-3 in predict_proba,
# which would hide real disagreements; at 1e-6 they agree to ~2e-5 for a few more steps.
LOGISTIC_PARAMS = {"C": 1.0, "tol": 1e-6, "max_iter": 1000}
RIDGE_PARAMS = {"alpha": 1.0}


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


@dataclass(frozen=True)
class Peer:
    """Another library's estimator: ``make()`` builds it unfitted; ``target`` places its data.

    ``target`` is None, and ``reason`` says why, when the library cannot run here.
    """

    name: str
    solver: str
    make: Callable[[], Any] | None = None
    target: Target | None = None
    reason: str | None = None


def sklearn_peer(name: str, solver: str, **params: Any) -> Peer:
    """scikit-learn's ``linear_model.<name>(**params)`` on NumPy arrays."""
    try:
        from sklearn import linear_model
    except ImportError as exc:
        return Peer(SKLEARN, solver, reason=f"scikit-learn is not installed ({exc})")
    make = functools.partial(getattr(linear_model, name), **params)
    return Peer(SKLEARN, solver, make, host_target(SKLEARN))


def cuml_peer(name: str, solver: str, **params: Any) -> Peer:
    """cuML's ``<name>(**params)`` on CuPy arrays, if ``import cuml`` works."""
    try:
        import cuml
        import cupy
    except Exception as exc:  # not installed, or installed without a usable GPU
        return Peer(CUML, solver, reason=f"import cuml failed ({type(exc).__name__}: {exc})")
    target = Target(
        name=CUML,
        to_device=cupy.asarray,
        to_host=cupy.asnumpy,
        sync=lambda _: cupy.cuda.get_current_stream().synchronize(),
        peak_key="cupy:cuda:0",
        memory=lambda start=False: device_memory("cupy", None, start),
    )
    return Peer(CUML, solver, functools.partial(getattr(cuml, name), **params), target)


@dataclass(frozen=True)
class EstimatorBench:
    """One estimator of the registry: its data, mlxp solvers, peers and quality measures."""

    title: str  # the estimator's name, first column of the table
    sizes: str  # default NxP list
    data: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    estimator: type  # mlxp estimator, built as estimator(solver=..., **params)
    solvers: tuple[str, ...]  # the first is the one plotted
    peers: Callable[[], list[Peer]]  # every peer, available or not (with the reason)
    score: str  # name of model.score(X, y) in the rows: "r2_train", "accuracy_train"
    compared: str  # what is compared with scikit-learn: max_abs_diff_<compared>_vs_sklearn
    output: Callable[[Any, Any], Any]  # (fitted model, X) -> the compared array
    params: dict[str, Any] = field(default_factory=dict)
    quick_sizes: str = "500x10"
    repeat: int = 5
    size_label: str = "n_samples × n_features"

    def make(self, solver: str) -> Callable[[], Any]:
        return functools.partial(self.estimator, solver=solver, **self.params)

    def run(
        self,
        size: tuple[int, int],
        data: tuple[np.ndarray, np.ndarray],
        targets: list[Target],
        peers: list[Peer],
        repeat: int,
        peaks: Peaks,
        settle: bool = True,
    ) -> list[dict[str, Any]]:
        """Rows for the available peers, then every target × solver, on one data set (each
        fit timed alone: nothing takes turns, ``settle`` has nothing to do)."""
        measured = [
            self.measure(peer.solver, peer.target, peer.make, data, repeat)
            for peer in peers
            if peer.target is not None
        ]
        reference = next((out for row, out in measured if row["backend"] == SKLEARN), None)
        rows = [
            self.compare(row, out, None if row["backend"] == SKLEARN else reference)
            for row, out in measured
        ]
        for target in targets:
            for solver in self.solvers:
                row, out = self.measure(solver, target, self.make(solver), data, repeat)
                rows.append(self.compare(row, out, reference))
        return rows

    def measure(
        self,
        solver: str,
        target: Target,
        make: Callable[[], Any],
        data: tuple[np.ndarray, np.ndarray],
        repeat: int,
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Time ``make().fit`` and ``predict`` on ``target``; the row and the compared output."""
        X, y = (target.to_device(a) for a in data)
        target.sync(X)

        def fitted(model: Any) -> None:
            target.sync(model.coef_)

        model, fit = timed(lambda: make().fit(X, y), fitted, repeat, target.memory)
        _, predict = timed(lambda: model.predict(X), target.sync, repeat, prefix="predict_")
        out = mlxp.to_numpy(self.output(model, X))
        n_iter = getattr(model, "n_iter_", None)
        row = {
            "model": self.title,
            "solver": solver,
            "solver_used": getattr(model, "solver_", solver),
            "backend": target.name,
            "size": "x".join(map(str, data[0].shape)),
            "n_samples": data[0].shape[0],
            "n_features": data[0].shape[1],
            "dtype": str(mlxp.to_numpy(model.coef_).dtype),
            **fit,
            **predict,
            self.score: float(model.score(X, y)),
            "n_iter": None if n_iter is None else int(np.max(mlxp.to_numpy(n_iter))),
        }
        return row, out

    def compare(
        self, row: dict[str, Any], out: np.ndarray, reference: np.ndarray | None
    ) -> dict[str, Any]:
        """The row with max |out − scikit-learn's output| (None without a reference)."""
        diff = None if reference is None else float(np.max(np.abs(out - reference)))
        return {**row, f"max_abs_diff_{self.compared}_vs_sklearn": diff}


LINEAR = EstimatorBench(
    title="LinearRegression",
    sizes="500x20,5000x50,50000x50",
    data=linear_data,
    estimator=LinearRegression,
    solvers=("auto", "cholesky", "qr", "svd"),
    peers=lambda: [
        sklearn_peer("LinearRegression", "lstsq"),
        cuml_peer("LinearRegression", "eig"),
    ],
    score="r2_train",
    compared="coef",
    output=lambda model, X: model.coef_,
)

RIDGE = EstimatorBench(
    title="Ridge",
    sizes="500x20,5000x50,50000x50",
    data=linear_data,
    estimator=Ridge,
    solvers=("auto", "svd"),
    peers=lambda: [
        sklearn_peer("Ridge", "auto", **RIDGE_PARAMS),
        cuml_peer("Ridge", "eig", **RIDGE_PARAMS),
    ],
    score="r2_train",
    compared="coef",
    output=lambda model, X: model.coef_,
    params=RIDGE_PARAMS,
)

LOGISTIC = EstimatorBench(
    title="LogisticRegression",
    sizes="5000x20,50000x50",
    data=logistic_data,
    estimator=LogisticRegression,
    solvers=("lbfgs", "newton"),
    peers=lambda: [
        sklearn_peer("LogisticRegression", "lbfgs", **LOGISTIC_PARAMS),
        cuml_peer("LogisticRegression", "qn", **LOGISTIC_PARAMS),
    ],
    score="accuracy_train",
    compared="proba",
    output=lambda model, X: model.predict_proba(X),
    params=LOGISTIC_PARAMS,
)
