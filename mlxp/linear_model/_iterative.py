"""The least-squares objective for the iterative solvers, and the power iteration they share.

f(W) = ½c‖XW − Y‖² + ½λ‖W‖², with c = 1/n and λ = α/n on the whole data (so f has
the exact solvers' minimiser), and ∇f(W) = cXᵀ(XW − Y) + λW. Minimised by
:func:`~mlxp.linear_model._stochastic.minimize_sgd` with an :mod:`mlxp.optim` rule.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from mlxp._compat import Generator

__all__ = ["LeastSquaresObjective", "largest_eigenvalue"]


def largest_eigenvalue(xp: Any, X: Any, n_iter: int = 30) -> Any:
    """λ_max(XᵀX / n) by power iteration v ← XᵀXv/‖XᵀXv‖, as a 0-d array (no host read)."""
    n, p = X.shape
    v = Generator(0).normal((p,), xp=xp, device=_device(X), dtype=X.dtype)
    v = v / xp.linalg.vector_norm(v)
    for _ in range(n_iter):
        w = X.T @ (X @ v)
        v = w / (xp.linalg.vector_norm(w) + xp.finfo(X.dtype).smallest_normal)
    return xp.linalg.vector_norm(X.T @ (X @ v)) / n


class LeastSquaresObjective:
    """f(W) = ½c‖XW − Y‖² + ½λ‖W‖² for ``X`` (n, p), ``Y`` and ``W`` (p, k)."""

    def __init__(
        self,
        xp: Any,
        X: Any,
        Y: Any,
        *,
        alpha: float,
        row_scale: float | None = None,
        l2: float | None = None,
    ) -> None:
        n = X.shape[0]
        self.xp, self.X, self.Y, self.alpha = xp, X, Y, alpha
        self.c = 1 / n if row_scale is None else row_scale
        self.l2 = alpha / n if l2 is None else l2

    def value(self, W: Any) -> Any:
        xp = self.xp
        return 0.5 * self.c * xp.sum((self.X @ W - self.Y) ** 2) + 0.5 * self.l2 * xp.sum(W**2)

    def value_grad(self, W: Any) -> tuple[Any, Any, Any]:
        xp = self.xp
        residual = self.X @ W - self.Y
        value = 0.5 * self.c * xp.sum(residual**2) + 0.5 * self.l2 * xp.sum(W**2)
        return value, self.c * (self.X.T @ residual) + self.l2 * W, None

    def grad(self, W: Any) -> Any:
        """∇f(W) = c·Xᵀ(XW − Y) + λW alone, without f (what a mini-batch step needs)."""
        return self.c * (self.X.T @ (self.X @ W - self.Y)) + self.l2 * W

    def batch(self, rows: Any) -> LeastSquaresObjective:
        """The unbiased estimate of f on ``rows``: ½‖X_B W − Y_B‖²/m + ½λ‖W‖²."""
        xp = self.xp
        return LeastSquaresObjective(
            xp,
            xp.take(self.X, rows, axis=0),
            xp.take(self.Y, rows, axis=0),
            alpha=self.alpha,
            row_scale=1 / rows.shape[0],
            l2=self.l2,
        )

    def rows(self, begin: int, end: int) -> LeastSquaresObjective:
        """:meth:`batch` of the contiguous rows begin..end−1 (slices: views, no gather)."""
        return LeastSquaresObjective(
            self.xp,
            self.X[begin:end, ...],
            self.Y[begin:end, ...],
            alpha=self.alpha,
            row_scale=1 / (end - begin),
            l2=self.l2,
        )

    def curvature(self, batch_size: int) -> Any:
        """L = λ_max(XᵀX)/n + λ, plus max‖xᵢ‖²/m for batches of m < n rows."""
        xp = self.xp
        n = self.X.shape[0]
        L = largest_eigenvalue(xp, self.X) + self.l2
        if batch_size < n:
            L = L + xp.max(xp.sum(self.X**2, axis=1)) / batch_size
        return L
