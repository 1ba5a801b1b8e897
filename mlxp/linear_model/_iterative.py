"""The least-squares objective for the iterative solvers, and the power iteration they share.

f(W) = ½c‖XW − Y‖² + ½λ‖W‖², with c = 1/n and λ = α/n on the whole data (so f has
the exact solvers' minimiser), and ∇f(W) = cXᵀ(XW − Y) + λW. Minimised by
:func:`~mlxp.linear_model._stochastic.minimize_sgd` with an :mod:`mlxp.optim` rule.

:class:`GramObjective` is the same f from the Gram matrices alone (G = XᵀX, B = XᵀY,
t = ‖Y‖²: f(W) = ½c(⟨W, GW⟩ − 2⟨W, B⟩ + t) + ½λ‖W‖²), which is how full-batch gradient
descent runs on Dask data after one pass: every step is then p × p work on the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import device as _device

from mlxp._compat import Generator, from_host

__all__ = ["GramObjective", "LeastSquaresObjective", "gram_eigenvalue", "largest_eigenvalue"]


def _power(xp: Any, product: Callable[[Any], Any], like: Any, p: int, n_iter: int) -> Any:
    """‖Av‖ after ``n_iter`` steps v ← Av/‖Av‖ from the portable generator's v (seed 0)."""
    v = Generator(0).normal((p,), xp=xp, device=_device(like), dtype=like.dtype)
    v = v / xp.linalg.vector_norm(v)
    for _ in range(n_iter):
        w = product(v)
        v = w / (xp.linalg.vector_norm(w) + xp.finfo(like.dtype).smallest_normal)
    return xp.linalg.vector_norm(product(v))


def largest_eigenvalue(xp: Any, X: Any, n_iter: int = 30) -> Any:
    """λ_max(XᵀX / n) by power iteration v ← XᵀXv/‖XᵀXv‖, as a 0-d array (no host read)."""
    return _power(xp, lambda v: X.T @ (X @ v), X, X.shape[1], n_iter) / X.shape[0]


def gram_eigenvalue(xp: Any, G: Any, n_iter: int = 30) -> Any:
    """λ_max(G) of a symmetric PSD G (p, p) by the same power iteration (G = XᵀX gives
    n·:func:`largest_eigenvalue` of X, to rounding)."""
    return _power(xp, lambda v: G @ v, G, G.shape[0], n_iter)


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
        self.xp, self.X, self.Y = xp, X, Y
        self.c = 1 / n if row_scale is None else row_scale
        self.l2 = alpha / n if l2 is None else l2

    def leaves(self) -> tuple[Any, ...]:
        """The arrays the objective is made of (c and λ as 0-d arrays): a compiled
        program's arguments, so one program serves any data of the same shapes and any α."""
        dev, dtype = _device(self.X), self.X.dtype
        c, l2 = (from_host(v, self.xp, device=dev, dtype=dtype) for v in (self.c, self.l2))
        return self.X, self.Y, c, l2

    def config(self) -> tuple[()]:
        """What :meth:`leaves` leaves out: nothing."""
        return ()

    @classmethod
    def from_leaves(
        cls, xp: Any, config: tuple[()], leaves: tuple[Any, ...]
    ) -> LeastSquaresObjective:
        """The objective of :meth:`leaves` (inside a traced program)."""
        X, Y, c, l2 = leaves
        return cls(xp, X, Y, alpha=0.0, row_scale=c, l2=l2)

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
        X, Y = xp.take(self.X, rows, axis=0), xp.take(self.Y, rows, axis=0)
        return LeastSquaresObjective(xp, X, Y, alpha=0.0, row_scale=1 / rows.shape[0], l2=self.l2)

    def rows(self, begin: int, end: int) -> LeastSquaresObjective:
        """:meth:`batch` of the contiguous rows begin..end−1 (slices: views, no gather)."""
        X, Y = self.X[begin:end, ...], self.Y[begin:end, ...]
        return LeastSquaresObjective(
            self.xp, X, Y, alpha=0.0, row_scale=1 / (end - begin), l2=self.l2
        )

    def curvature(self, batch_size: int) -> Any:
        """L = λ_max(XᵀX)/n + λ, plus max‖xᵢ‖²/m for batches of m < n rows."""
        xp = self.xp
        n = self.X.shape[0]
        L = largest_eigenvalue(xp, self.X) + self.l2
        if batch_size < n:
            L = L + xp.max(xp.sum(self.X**2, axis=1)) / batch_size
        return L


class GramObjective:
    """:class:`LeastSquaresObjective`'s f and ∇f (full batch only) from G = XᵀX (p, p),
    B = XᵀY (p, k) and t = ‖Y‖² of ``n`` rows; ``X`` is kept for its shape only (a Dask
    array: nothing of it is computed here)."""

    def __init__(self, xp: Any, X: Any, G: Any, B: Any, t: Any, *, alpha: float) -> None:
        self.xp, self.X, self.G, self.B, self.t = xp, X, G, B, t
        self.c, self.l2 = 1 / X.shape[0], alpha / X.shape[0]

    def value_grad(self, W: Any) -> tuple[Any, Any, None]:
        xp = self.xp
        GW = self.G @ W
        quadratic = xp.sum(W * GW) - 2 * xp.sum(W * self.B) + self.t
        value = 0.5 * self.c * quadratic + 0.5 * self.l2 * xp.sum(W**2)
        return value, self.c * (GW - self.B) + self.l2 * W, None

    def value(self, W: Any) -> Any:
        return self.value_grad(W)[0]

    def grad(self, W: Any) -> Any:
        return self.value_grad(W)[1]

    def curvature(self, batch_size: int) -> Any:
        """L = λ_max(G)/n + λ (full batch: ``batch_size`` is n)."""
        return gram_eigenvalue(self.xp, self.G) * self.c + self.l2
