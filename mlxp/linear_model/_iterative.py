"""Gradient-descent solvers for f(W) = (½‖XW − Y‖² + ½α‖W‖²) / n.

∇f(W) = (Xᵀ(XW − Y) + αW) / n, and the update is W ← W − η∇f(W). Both solvers
share the exact solvers' minimiser. The step η defaults to 1/L, L the largest
eigenvalue of (XᵀX + αI)/n found by power iteration, so they converge without
tuning. The loss is read back to the host only at check points (every
``check_every`` steps for full-batch GD, once per epoch for SGD), never per step.
"""

from __future__ import annotations

import warnings
from typing import Any

from array_api_compat import device as _device

from mlxp._compat import Generator
from mlxp.exceptions import ConvergenceWarning, DivergenceError, ecosystem_class

__all__ = ["DivergenceError", "gradient_descent", "largest_eigenvalue", "sgd"]


def largest_eigenvalue(xp: Any, X: Any, n_iter: int = 30) -> Any:
    """λ_max(XᵀX / n) by power iteration v ← XᵀXv/‖XᵀXv‖, as a 0-d array (no host read)."""
    n, p = X.shape
    v = Generator(0).normal((p,), xp=xp, device=_device(X), dtype=X.dtype)
    v = v / xp.linalg.vector_norm(v)
    for _ in range(n_iter):
        w = X.T @ (X @ v)
        v = w / (xp.linalg.vector_norm(w) + xp.finfo(X.dtype).smallest_normal)
    return xp.linalg.vector_norm(X.T @ (X @ v)) / n


def _inverse(xp: Any, curvature: Any) -> Any:
    """1/L as a step size; L = 0 (all-constant X: nothing to fit) gives a harmless 1/ε."""
    return 1 / xp.maximum(curvature, xp.full_like(curvature, xp.finfo(curvature.dtype).eps))


def _loss(xp: Any, X: Any, Y: Any, W: Any, alpha: float) -> Any:
    return (xp.sum((X @ W - Y) ** 2) + alpha * xp.sum(W**2)) / (2 * X.shape[0])


def _gradient(X: Any, Y: Any, W: Any, alpha: float, n_total: int) -> Any:
    """(Xᵀ(XW − Y) + α·(m/n)·W) / m for a batch of m of the n rows."""
    m = X.shape[0]
    return (X.T @ (X @ W - Y) + (alpha * m / n_total) * W) / m


def _warn_not_converged(name: str, max_iter: int, unit: str) -> None:
    warnings.warn(
        ecosystem_class(ConvergenceWarning, "ConvergenceWarning")(
            f"{name} stopped after max_iter={max_iter} {unit} without reaching tol; "
            "increase max_iter, loosen tol, or use an exact solver."
        ),
        stacklevel=4,
    )


def _check_divergence(xp: Any, loss: Any, loss0: Any, learning_rate: Any, name: str) -> None:
    if bool(xp.isfinite(loss) & (loss <= 1e4 * loss0 + 1e-30)):
        return
    raise DivergenceError(
        f"{name} diverged (loss {float(loss):.3g}, started at {float(loss0):.3g}) with "
        f"learning_rate={float(learning_rate):.4g}. Use a smaller learning_rate, or "
        "learning_rate=None to derive the step from the data."
    )


def gradient_descent(
    xp: Any,
    X: Any,
    Y: Any,
    *,
    alpha: float,
    learning_rate: float | None,
    max_iter: int,
    tol: float,
    check_every: int = 10,
) -> tuple[Any, int]:
    """Full-batch gradient descent from W = 0; returns (W, iterations run).

    Stops once ‖∇f(W)‖ ≤ tol·‖∇f(0)‖, checked every ``check_every`` steps.
    """
    n, p = X.shape
    if learning_rate is None:
        lr = _inverse(xp, largest_eigenvalue(xp, X) + alpha / n)
    else:
        lr = learning_rate
    W = xp.zeros((p, Y.shape[1]), dtype=X.dtype, device=_device(X))
    loss0 = _loss(xp, X, Y, W, alpha)
    threshold = tol * xp.linalg.vector_norm(_gradient(X, Y, W, alpha, n))
    for it in range(1, max_iter + 1):
        grad = _gradient(X, Y, W, alpha, n)
        W = W - lr * grad
        if it % check_every == 0 or it == max_iter:
            _check_divergence(xp, _loss(xp, X, Y, W, alpha), loss0, lr, "Gradient descent")
            if bool(xp.linalg.vector_norm(grad) <= threshold):
                return W, it
    _warn_not_converged("Gradient descent", max_iter, "iterations")
    return W, max_iter


def sgd(
    xp: Any,
    X: Any,
    Y: Any,
    *,
    alpha: float,
    learning_rate: float | None,
    max_iter: int,
    tol: float,
    batch_size: int,
    rng: Generator,
    n_iter_no_change: int = 5,
) -> tuple[Any, int]:
    """Mini-batch SGD over shuffled epochs from W = 0; returns (W, epochs run).

    The default step 1/(L + R²/m), with R² the largest squared row norm and m the
    batch size, bounds the curvature of every mini-batch loss. When the epoch's loss
    has not improved by more than ``tol`` (relative) for ``n_iter_no_change`` epochs
    in a row, the step is halved (so SGD settles on the minimiser instead of
    hovering around it); training stops once it has shrunk 10⁶-fold.
    """
    n, p = X.shape
    m = min(batch_size, n)
    dev = _device(X)
    if learning_rate is None:
        row_norm = xp.max(xp.sum(X**2, axis=1))
        lr = _inverse(xp, largest_eigenvalue(xp, X) + row_norm / m + alpha / n)
    else:
        lr = learning_rate
    lr0 = lr
    W = xp.zeros((p, Y.shape[1]), dtype=X.dtype, device=dev)
    loss0 = _loss(xp, X, Y, W, alpha)
    best, stalled = float("inf"), 0
    for epoch in range(1, max_iter + 1):
        order = rng.permutation(n, xp=xp, device=dev)
        for start in range(0, n, m):
            rows = order[start : min(start + m, n)]
            Xb, Yb = xp.take(X, rows, axis=0), xp.take(Y, rows, axis=0)
            W = W - lr * _gradient(Xb, Yb, W, alpha, n)
        loss = _loss(xp, X, Y, W, alpha)
        _check_divergence(xp, loss, loss0, lr, "SGD")
        loss = float(loss)  # one host read per epoch
        stalled = stalled + 1 if loss > best - tol * abs(best) else 0
        best = min(best, loss)
        if stalled >= n_iter_no_change:
            lr, stalled = lr / 2, 0
            if bool(lr < lr0 * 1e-6):
                return W, epoch
    _warn_not_converged("SGD", max_iter, "epochs")
    return W, max_iter
