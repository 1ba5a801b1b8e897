"""The command line: ``python -m mlxp info`` and ``python -m mlxp demo [--backend SPEC]``."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import mlxp
from mlxp._backend import (
    Backend,
    BackendUnavailableError,
    backend_report,
    environment_error,
    get_backend,
    make_backend,
    parse_backend_spec,
)
from mlxp.datasets import load_diabetes, load_digits
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import CNNClassifier, MLPClassifier

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # X_train, X_test, y_train, y_test


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.25, seed: int = 0
) -> Split:
    """A shuffled split, seeded; as scikit-learn's, the first indices of the permutation test."""
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) - round((1 - test_fraction) * len(y))
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


def diabetes() -> Split:
    return train_test_split(*load_diabetes())


def digits() -> Split:
    X, y = load_digits()
    return train_test_split(X / 16.0, y)  # pixels 0..16 scaled to [0, 1]


def r2(model: Any, X: Any, y: Any) -> float:
    return float(model.score(X, y))


def accuracy(model: Any, X: Any, y: Any) -> float:
    return float(model.score(X, y))


def _gd() -> LinearRegression:
    return LinearRegression(solver="gd", max_iter=5000)  # converges in ~1700 steps here


@dataclass(frozen=True)
class DemoEntry:
    """One row of the tour: a model, the data it learns, and how it is judged on held-out data."""

    name: str
    data: str
    load: Callable[[], Split]
    make: Callable[[], Any]
    metric_name: str = "test R²"
    metric: Callable[[Any, Any, Any], float] = r2  # (fitted model, X_test, y_test) -> value


# Later models append their entry here.
DEMOS: list[DemoEntry] = [
    DemoEntry("LinearRegression", "diabetes", diabetes, LinearRegression),
    DemoEntry("LinearRegression(solver='gd', max_iter=5000)", "diabetes", diabetes, _gd),
    DemoEntry("Ridge(alpha=1.0)", "diabetes", diabetes, lambda: Ridge(alpha=1.0)),
    DemoEntry(
        "LogisticRegression",
        "digits",
        digits,
        lambda: LogisticRegression(max_iter=1000),
        "test accuracy",
        accuracy,
    ),
    DemoEntry(
        "LogisticRegression(solver='newton')",
        "digits",
        digits,
        lambda: LogisticRegression(solver="newton"),
        "test accuracy",
        accuracy,
    ),
    DemoEntry(
        "MLPClassifier((256,))",
        "digits",
        digits,
        lambda: MLPClassifier((256,), max_iter=300, random_state=0),
        "test accuracy",
        accuracy,
    ),
    DemoEntry(
        "CNNClassifier(conv 16-32, dense 64)",
        "digits",
        digits,
        lambda: CNNClassifier(image_shape=(1, 8, 8), tol=1e-2, random_state=0),
        "test accuracy",
        accuracy,
    ),
]

COLUMNS = ("model", "data", "backend", "device", "metric", "value", "fit time (s)")


def run_demo(backend: Backend) -> list[tuple[str, ...]]:
    """Fit every demo entry on ``backend``; one table row per entry."""
    rows: list[tuple[str, ...]] = []
    with mlxp.use_backend(backend.name, backend.device):
        for entry in DEMOS:
            # The estimators would move NumPy data themselves; moving it first keeps
            # the host-to-device copy out of the fit time.
            X_train, X_test, y_train, y_test = map(backend.asarray, entry.load())
            entry.make().fit(X_train, y_train)  # warm-up: first-call compilation is not timed
            model = entry.make()
            start = time.perf_counter()
            model.fit(X_train, y_train)
            mlxp.synchronize(model.coefs_[-1] if hasattr(model, "coefs_") else model.coef_)
            seconds = time.perf_counter() - start
            value = entry.metric(model, X_test, y_test)
            row = (entry.name, entry.data, backend.name, backend.device_name, entry.metric_name)
            rows.append((*row, f"{value:.4f}", f"{seconds:.4f}"))
    return rows


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )


def info() -> str:
    lines = [
        f"mlxp {mlxp.__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.platform()}",
        "backends:",
    ]
    for row in backend_report():
        if row["reason"] is None:
            status = f"{row['version']}  devices: {', '.join(row['devices'])}"
            status += f"  (no GPU: {row['note']})" if row["note"] else ""
        else:
            status = f"unavailable: {row['reason']}"
        lines.append(f"  {row['name']:<17} {status}")
    problem = environment_error()
    if problem is not None:
        lines.append(f"chosen backend (MLXP_BACKEND): unusable, {problem}")
    else:
        chosen = get_backend()
        lines.append(
            f"chosen backend (MLXP_BACKEND): {chosen or 'none (computation follows the inputs)'}"
        )
    return "\n".join(lines)


def demo_backend(spec: str | None) -> Backend:
    """The backend of the tour: ``--backend``, else ``MLXP_BACKEND``, else NumPy."""
    if spec is not None:
        return parse_backend_spec(spec)
    return get_backend() or make_backend("numpy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxp", description="mlxp: machine learning on any Array API library."
    )
    parser.add_argument("--version", action="version", version=f"mlxp {mlxp.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("info", help="versions, platform and the backends usable here")
    demo = commands.add_parser("demo", help="train every model on bundled data and time it")
    demo.add_argument(
        "--backend",
        default=None,
        metavar="name[:device]",
        help="where to compute, e.g. numpy, torch:cuda:0, array_api_strict:device1 "
        "(default: MLXP_BACKEND if set, else numpy)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
    elif args.command == "demo":
        try:
            backend = demo_backend(args.backend)
        except (ValueError, BackendUnavailableError) as exc:
            print(f"mlxp demo: error: {exc}", file=sys.stderr)
            return 2
        print(format_table(COLUMNS, run_demo(backend)))
        print("fit time: one fit after an untimed warm-up fit, synchronised before the clock stops")
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
