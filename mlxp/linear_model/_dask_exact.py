"""Exact least squares on Dask arrays: X read once per pass, never held, solved on the client.

With weights s (max-scaled to 1, as in memory) and A = [X | Y] of q = p + k columns:

* **Gram pass** (Cholesky, and the first try of "auto"): each row chunk c gives its weight
  w_c = Σ s, weighted mean m_c and *centred* Gram C_c = Σ s (a − m_c)(a − m_c)ᵀ; chunks merge
  pairwise in a tree by Chan et al.'s update, w = w_a + w_b, δ = m_b − m_a,
  m = m_a + δ·w_b/w, C = C_a + C_b + (w_a w_b / w) δδᵀ, which never subtracts two large
  uncentred moments. The p × p solve (A + αI)W = B is :func:`~._exact.cholesky_gram`.
* **TSQR pass** ("qr", "svd", and "auto" when κ(XᵀX) ≥ ε^(-1/4)): the R factor of
  [√s, √s·X, √s·Y] (the ones column first when fitting an intercept) by
  ``dask.array.linalg.tsqr``. Projecting out the first column is centring, so the trailing
  block [[R, Z], [0, ρ]] is the R factor of the centred, weighted problem:
  ‖XW − Y‖² = ‖RW − Z‖² + const, and :func:`~._exact.solve_exact`
  solves the p × p problem (RW ≈ Z) with the minimisers of the full one -- minimum-norm and
  ridge included. The means come from the first row: x̄ = R[0, 1:]/R[0, 0].

* **Gradient descent** ("gd"): f and ∇f of the least-squares objective need only the
  Gram statistics of the (weighted, centred) data, so after the Gram pass every gd step is
  p × p work on the client (:class:`~._iterative.GramObjective`), with the in-memory step
  1/L (power iteration on G) and stopping rule: the iterates of gd on NumPy, to rounding.
* **Mini-batch SGD** ("sgd"): the same f for the epoch's value and the divergence test; a
  second pass finds max sᵢ‖xᵢ − x̄‖² for the in-memory step, then each epoch streams the
  chunks (:func:`~mlxp._dask.stream_chunks`), centred and weighted on arrival, into
  batches cut within a chunk: on one chunk, the in-memory sgd's iterates.

So "auto" costs one pass on well-conditioned data and two otherwise. The SVD's default
rcond, max(n, p)·ε, is carried over from the full problem. Data with fewer rows than
columns, which has no tall factor, is small by nature: it is computed into memory and
solved by the in-memory path.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from mlxp._dask import (
    aligned_rows,
    as_column,
    chunk_namespace,
    compute,
    concrete,
    dask_module,
    row_blocks,
    stream_chunks,
    tree_reduce,
)
from mlxp.exceptions import warn_not_converged
from mlxp.linear_model._exact import cholesky_gram, failure, solve_exact, usable
from mlxp.linear_model._iterative import GramObjective, LeastSquaresObjective
from mlxp.linear_model._stochastic import contiguous_batches

__all__ = [
    "StreamedLeastSquares",
    "descend_dask",
    "fit_linear_dask",
    "gram_statistics",
    "solve_dask",
    "tall_factor",
]


def _chunk_stats(Xb: Any, Yb: Any, sb: Any) -> tuple[Any, Any, Any, Any]:
    """(w, mean, centred Gram, max s) of one row chunk of A = [X | Y]."""
    xp = array_namespace(Xb)
    A = xp.concat([Xb, xp.astype(Yb, Xb.dtype)], axis=1)
    s = xp.ones((A.shape[0],), dtype=A.dtype) if sb is None else xp.astype(sb, A.dtype)
    w = xp.sum(s)
    mean = (s @ A) / xp.where(w > 0, w, xp.ones_like(w))
    centred = A - mean
    return w, mean, (centred * s[:, None]).T @ centred, xp.max(s)


def _merge_stats(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, Any, Any, Any]:
    """Chan et al.'s pairwise update of (w, mean, centred Gram), and the largest weight."""
    wa, ma, Ca, pa = a
    wb, mb, Cb, pb = b
    xp = array_namespace(Ca)
    w = wa + wb
    share = wb / xp.where(w > 0, w, xp.ones_like(w))
    delta = mb - ma
    mean = ma + delta * share
    C = Ca + Cb + (wa * share) * (delta[:, None] * delta[None, :])
    return w, mean, C, xp.maximum(pa, pb)


def gram_statistics(X: Any, Y: Any, sw: Any) -> Any:
    """Delayed (Σs, weighted mean (q,), centred Gram (q, q), max s) of [X | Y] over rows."""
    return tree_reduce(_chunk_stats, _merge_stats, row_blocks(X, Y, sw))


def _weighted(X: Any, Y: Any, sw: Any, fit_intercept: bool) -> Any:
    """[√s, √s·X, √s·Y] (the first column only with an intercept), blockwise."""
    da = dask_module("dask.array")

    parts = [X, Y]
    if fit_intercept:  # like X's first column, chunks of X's library (da.ones: NumPy's)
        parts.insert(0, da.ones_like(X[:, :1]))
    A = da.concatenate([p.rechunk({0: X.chunks[0]}) for p in parts], axis=1)
    if sw is not None:
        A = A * da.sqrt(sw.rechunk(X.chunks[0]))[:, None]
    return A.rechunk({1: -1})


def tall_factor(X: Any, Y: Any, sw: Any, fit_intercept: bool) -> Any:
    """The R factor (lazy) of [√s, √s·X, √s·Y] by TSQR: one pass over X."""
    da = dask_module("dask.array")

    A = _weighted(X, Y, sw, fit_intercept)
    q = A.shape[1]
    if min(A.chunks[0]) < q:
        A = A.rechunk({0: max(q, max(A.chunks[0]))})
    _, R = da.linalg.tsqr(A)
    return R


def _cholesky(
    xp: Any, stats: tuple[Any, ...], p: int, alpha: float, fit_intercept: bool, limit: float
) -> tuple[Any, Any]:
    """W from the Gram statistics (None if κ ≥ limit); also the means."""
    w, mean, C, _ = stats
    G = C if fit_intercept else C + w * (mean[:, None] * mean[None, :])
    W, condition = cholesky_gram(xp, G[:p, :p], G[:p, p:], alpha)
    return (W if bool(usable(xp, W, condition, limit)) else None), mean


def _from_factor(
    xp: Any, R: Any, p: int, fit_intercept: bool, solver: str, alpha: float, rcond: Any
) -> tuple[Any, str, Any]:
    """(W, solver, means) from the TSQR factor R of [√s, √s·X, √s·Y]."""
    first = 1 if fit_intercept else 0
    mean = R[0, 1:] / R[0, 0] if fit_intercept else None
    Rx, Z = R[first : first + p, first : first + p], R[first : first + p, first + p :]
    W, used = solve_exact(xp, Rx, Z, alpha, solver=solver, rcond=rcond)
    return W, used, mean


def _check_stats(xp: Any, stats: tuple[Any, ...]) -> None:
    _w, mean, C, _top = stats
    if not bool(xp.all(xp.isfinite(C)) & xp.all(xp.isfinite(mean))):
        raise ValueError("Input X or y contains NaN or infinity.")


def solve_dask(
    X: Any, Y: Any, sw: Any, *, alpha: float, solver: str, fit_intercept: bool, rcond: Any
) -> tuple[Any, Any, str]:
    """(W (p, k), intercept (k,), solver used) of min ‖√s(XW + b − Y)‖² + α‖W‖² on Dask
    X (n, p), Y (n, k) and weights ``sw`` (n,) or None; W and b in the chunk library."""
    xp = chunk_namespace(X)
    n, p = X.shape
    eps = float(xp.finfo(X.dtype).eps)
    cut = rcond if rcond is not None else max(n, p) * eps
    stats = None
    if solver in ("auto", "cholesky"):
        stats = compute(gram_statistics(X, Y, sw))[0]
        _check_stats(xp, stats)
        if sw is not None:
            top = stats[3]
            if not bool(top > 0):
                raise ValueError("Sample weights must contain at least one non-zero number.")
            stats = (stats[0] / top, stats[1], stats[2] / top, top)
            alpha = alpha / float(top)
        W, mean = _cholesky(
            xp, stats, p, alpha, fit_intercept, eps**-0.25 if solver == "auto" else 1 / eps
        )
        used = "cholesky"
        if W is None and solver == "cholesky":
            raise failure("cholesky", (n, p))
    if stats is None or W is None:
        R = xp.asarray(compute(tall_factor(X, Y, sw, fit_intercept))[0])
        if not bool(xp.all(xp.isfinite(R))):
            raise ValueError("Input X or y contains NaN or infinity.")
        if sw is not None and stats is None:
            top = float(compute(sw.max())[0])
            if not top > 0:
                raise ValueError("Sample weights must contain at least one non-zero number.")
            alpha = alpha / top
            R = R / math.sqrt(top)
        elif sw is not None and stats is not None:
            R = R / math.sqrt(float(stats[3]))
        W, used, mean = _from_factor(xp, R, p, fit_intercept, solver, alpha, cut)
    k = Y.shape[1]
    if fit_intercept:
        intercept = mean[p:] - mean[:p] @ W
    else:
        intercept = xp.zeros((k,), dtype=W.dtype)
    return W, intercept, used


def _chunk_row_norm(Xb: Any, sb: Any, mean: Any) -> Any:
    """max sᵢ‖xᵢ − x̄‖² over one chunk (x̄ = ``mean``, or no centring for None)."""
    xp = array_namespace(Xb)
    centred = Xb if mean is None else Xb - xp.asarray(mean, dtype=Xb.dtype)
    norms = xp.sum(centred**2, axis=1)
    return xp.max(norms if sb is None else norms * xp.astype(sb, Xb.dtype))


def _larger(a: Any, b: Any) -> Any:
    return array_namespace(a).maximum(a, b)


class StreamedLeastSquares(GramObjective):
    """:class:`~._iterative.GramObjective` (f and ∇f on the client from the Gram pass) with
    the mini-batches of "sgd" streamed from Dask X, Y, weights s: each chunk centred by the
    means x̄, ȳ of the whole data (with an intercept) and scaled by √s, as the in-memory
    problem, its rows shuffled and cut into batches (:func:`~mlxp._dask.stream_chunks`)."""

    def __init__(self, xp: Any, arrays: list[Any], stats: Any, *, alpha: float, center: bool):
        X, p = arrays[0], arrays[0].shape[1]
        w, mean, C, _ = stats
        G = C if center else C + w * (mean[:, None] * mean[None, :])
        t = xp.sum(xp.linalg.diagonal(G[p:, p:]))
        super().__init__(xp, X, G[:p, :p], G[:p, p:], t, alpha=alpha)
        self.arrays, self.alpha = arrays, alpha
        self.mean = mean if center else None

    def curvature(self, batch_size: int) -> Any:
        """L = λ_max(G)/n + λ, plus max sᵢ‖xᵢ − x̄‖²/m (one pass) for batches of m < n."""
        L = super().curvature(batch_size)
        if batch_size >= self.X.shape[0]:
            return L
        p = self.X.shape[1]
        x_mean = None if self.mean is None else self.mean[:p]
        X, _, sw = self.arrays
        row = compute(tree_reduce(_chunk_row_norm, _larger, row_blocks(X, sw), x_mean))[0]
        return L + self.xp.asarray(row, dtype=L.dtype) / batch_size

    def epoch(self, rng: Any, batch_size: int) -> Any:
        """The batch objectives of one pass over the chunks, batches cut within a chunk."""
        xp, p = self.xp, self.X.shape[1]
        for Xc, Yc, sc in stream_chunks(self.arrays, rng):
            Yc = xp.astype(Yc, Xc.dtype)
            if self.mean is not None:
                Xc, Yc = Xc - self.mean[:p], Yc - self.mean[p:]
            if sc is not None:
                root = xp.sqrt(xp.astype(sc, Xc.dtype))[:, None]
                Xc, Yc = Xc * root, Yc * root
            chunk = LeastSquaresObjective(xp, Xc, Yc, alpha=self.alpha, l2=self.l2)
            yield from contiguous_batches(chunk, batch_size)


def descend_dask(est: Any, X: Any, Y: Any, sw: Any) -> tuple[Any, Any, int]:
    """(W (p, k), intercept (k,), iterations) of ``est``'s "gd" or "sgd" on Dask X, Y,
    weights sw: one Gram pass, then gd on the client on ½n⁻¹(‖√s(X − x̄)W − √s(Y − ȳ)‖² +
    α‖W‖²) (the weights unscaled and the data centred when fitting an intercept, as in
    memory), or sgd on its mini-batches streamed chunk by chunk."""
    xp = chunk_namespace(X)
    p = X.shape[1]
    stats = compute(gram_statistics(X, Y, sw))[0]
    _check_stats(xp, stats)
    arrays = aligned_rows(X, Y, sw)
    objective = StreamedLeastSquares(xp, arrays, stats, alpha=est._alpha, center=est.fit_intercept)
    W, n_iter, converged = est._descend(objective, xp.zeros((p, Y.shape[1]), dtype=X.dtype))
    if not converged:
        unit = "iterations" if est.solver == "gd" else "epochs"
        warn_not_converged(
            f"{est.solver} stopped after max_iter={est.max_iter} {unit} without reaching "
            "tol; increase max_iter, loosen tol, or use an exact solver."
        )
    mean = stats[1]
    if not est.fit_intercept:
        return W, xp.zeros((Y.shape[1],), dtype=W.dtype), n_iter
    return W, mean[p:] - mean[:p] @ W, n_iter


def fit_linear_dask(est: Any, X: Any, y: Any, sw: Any) -> Any:
    """Fit ``est`` (LinearRegression, Ridge) on Dask X (n, p), y (n[, k]), weights sw;
    its attributes are set, as concrete arrays of the chunk library, once all is computed."""
    n, p = X.shape
    if n - est.fit_intercept < p:  # wide: no tall factor, and small by nature
        host = list(concrete(X, y, sw))
        return est.fit(*host)
    Y = as_column(y) if y.ndim == 1 else y
    if est.solver in ("gd", "sgd"):
        W, intercept, n_iter = descend_dask(est, X, Y, sw)
        return _set(est, W, intercept, y.ndim, est.solver, n_iter)
    W, intercept, solver = solve_dask(
        X,
        Y,
        sw,
        alpha=est._alpha,
        solver=est.solver,
        fit_intercept=est.fit_intercept,
        rcond=est.rcond,
    )
    return _set(est, W, intercept, y.ndim, solver, 1)


def _set(est: Any, W: Any, intercept: Any, ndim: int, solver: str, n_iter: int) -> Any:
    """The fitted attributes of ``est`` from W (p, k) and the intercept (k,)."""
    coef = W.T
    if ndim == 1:
        coef, intercept = coef[0, :], intercept[0]
    est.coef_, est.intercept_ = coef, intercept
    est.n_features_in_, est.solver_, est.n_iter_ = W.shape[0], solver, n_iter
    return est
