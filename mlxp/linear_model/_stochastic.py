"""Gradient descent and mini-batch SGD for any objective, with an :mod:`mlxp.optim` optimiser.

The objective provides ``value(θ)``, ``value_grad(θ) -> (f, ∇f, _)``, ``curvature(m)`` (an
upper bound L on ∇²f for batches of m rows) and, for mini-batches, either ``epoch(rng, m)``
(the batch objectives of one epoch, each with ``grad(θ)``: how Dask data are streamed) or
``batch(rows)`` (the unbiased estimate of f on some rows) and ``rows(begin, end)`` (the same
for a contiguous range, as views). The update rule is the optimiser's:
θ ← θ − η∇f for plain SGD, with momentum or Adam's moments otherwise; the default step is η = 1/L
(scaled by 1 − μ for momentum μ; Adam takes 10⁻³ as usual).

* Full batch ("gd"): stops once ‖∇f‖∞ ≤ tol·max(1, ‖∇f(θ₀)‖∞), checked every
  ``check_every`` steps (the only host reads).
* Mini-batches ("sgd"): rows shuffled every epoch by the portable generator (in memory:
  one permutation of all rows, cut into batches in order). After
  each epoch f is read back once; when it has not improved by ``tol`` (relative)
  for ``n_iter_no_change`` epochs the step is halved (:class:`~mlxp.optim.ReduceLROnPlateau`),
  and training stops once it has shrunk 10⁶-fold.

Both raise :class:`~mlxp.exceptions.DivergenceError`, naming the learning rate, when
f becomes non-finite or grows 10⁴-fold.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._compat import Generator
from mlxp.exceptions import DivergenceError
from mlxp.optim import SGD, Adam, Optimizer, ReduceLROnPlateau

__all__ = ["OPTIMIZERS", "contiguous_batches", "minimize_sgd", "shuffled_batches"]

_MOMENTUM = 0.9
OPTIMIZERS: dict[str, Callable[[Any], Optimizer]] = {
    "sgd": lambda lr: SGD(lr),
    "momentum": lambda lr: SGD(lr, momentum=_MOMENTUM, nesterov=True),
    "adam": lambda lr: Adam(lr),
}


def make_optimizer(optimizer: str | Optimizer, learning_rate: Any, curvature: Any) -> Optimizer:
    """The optimiser to use: a named rule with the default or given step, or a copy of one."""
    if isinstance(optimizer, Optimizer):
        opt = copy.deepcopy(optimizer)
        opt.reset()
        if learning_rate is not None:
            opt.lr = learning_rate
        return opt
    if learning_rate is None:
        if optimizer == "adam":
            learning_rate = 1e-3
        else:
            xp = array_namespace(curvature)
            eps = xp.finfo(curvature.dtype).eps
            step = 1 / xp.maximum(curvature, xp.full_like(curvature, eps))
            learning_rate = step * (1 - _MOMENTUM) if optimizer == "momentum" else step
    return OPTIMIZERS[optimizer](learning_rate)


def _check_divergence(xp: Any, value: Any, start: Any, lr: Any) -> None:
    if bool(xp.isfinite(value) & (value <= 1e4 * xp.abs(start) + 1e-30)):
        return
    raise DivergenceError(
        f"Training diverged (loss {float(value):.3g}, started at {float(start):.3g}) with "
        f"learning_rate={float(lr):.4g}. Use a smaller learning_rate, or learning_rate=None "
        "to derive the step from the data."
    )


def shuffled_batches(objective: Any, rng: Generator, batch_size: int) -> Iterator[Any]:
    """The batch objectives of one epoch in memory: the rows in one permutation drawn from
    ``rng`` (one gather), cut into batches of ``batch_size`` rows in order."""
    xp = array_namespace(objective.X)
    n = objective.X.shape[0]
    yield from contiguous_batches(
        objective.batch(rng.permutation(n, xp=xp, device=_device(objective.X))), batch_size
    )


def contiguous_batches(objective: Any, batch_size: int) -> Iterator[Any]:
    """``objective.rows(b, e)`` for consecutive ranges of ``batch_size`` rows (the last
    shorter): the batch estimates of f on its rows as stored."""
    n = objective.X.shape[0]
    for begin in range(0, n, batch_size):
        yield objective.rows(begin, min(begin + batch_size, n))


def minimize_sgd(
    objective: Any,
    theta: Any,
    *,
    tol: float,
    max_iter: int,
    batch_size: int,
    optimizer: str | Optimizer,
    learning_rate: float | None,
    rng: Generator,
    n_iter_no_change: int = 5,
    check_every: int = 10,
) -> tuple[Any, int, bool]:
    """Minimise ``objective`` from θ; returns (θ, steps or epochs run, converged)."""
    xp = array_namespace(theta)
    n = objective.X.shape[0]
    m = min(batch_size, n)
    opt = make_optimizer(optimizer, learning_rate, objective.curvature(m))
    start, grad, _ = objective.value_grad(theta)
    params = {"theta": theta}
    if m == n:
        threshold = tol * xp.maximum(xp.max(xp.abs(grad)), xp.ones_like(start))
        for it in range(1, max_iter + 1):
            params = opt.step(params, {"theta": grad})
            value, grad, _ = objective.value_grad(params["theta"])
            if it % check_every == 0 or it == max_iter:
                _check_divergence(xp, value, start, opt.lr)
                if bool(xp.max(xp.abs(grad)) <= threshold):
                    return params["theta"], it, True
        return params["theta"], max_iter, False

    plateau = ReduceLROnPlateau(1.0, factor=0.5, patience=n_iter_no_change - 1, threshold=tol)
    lr0 = opt.lr
    epoch_batches = getattr(objective, "epoch", None) or functools.partial(
        shuffled_batches, objective
    )
    for epoch in range(1, max_iter + 1):
        for batch in epoch_batches(rng, m):
            params = opt.step(params, {"theta": batch.grad(params["theta"])})
        value = objective.value(params["theta"])
        _check_divergence(xp, value, start, opt.lr)
        scale = plateau.step(float(value))  # one host read per epoch
        if scale < 1e-6:
            return params["theta"], epoch, True
        opt.lr = lr0 * scale
    return params["theta"], max_iter, False
