"""Exact least-squares solvers: minimise ‖XW − Y‖² + α‖W‖² for W of shape (p, k).

Every solver takes a centred (and row-weighted) design ``X`` of shape (n, p), targets
``Y`` of shape (n, k) and, when ``X`` was centred, the unit vector ``null`` (n,) that its
columns are orthogonal to (uᵀX = 0, which costs one rank); it returns ``W``. Each uses only
the Array API standard's ``linalg`` extension, so it runs on any backend and device.

Conditioning is measured on the column-equilibrated p × p factor (columns scaled to unit
norm, as accuracy of Cholesky and Householder QR does not depend on column scales):
κ is the ratio of its extreme singular values, a few p³ flops, not a bound from the diagonal.

How ``solver="auto"`` chooses, cheapest first. For tall X (n ≫ p) the normal equations
cost one product XᵀX (np² flops, a single BLAS-3 call) and a p × p factorisation, while
QR and the SVD factor the whole n × p matrix (several times more flops, in less
parallel kernels), so Cholesky is several times faster than either:

1. tall data: Cholesky of XᵀX + αI, kept while κ(XᵀX) < ε^(-1/4) (8e3 in float64, 54 in
   float32). Its error grows like κ(XᵀX)·ε, so it keeps at least ¾ of the digits and
   loses at most log₁₀ κ(X) (2 in float64, under 1 in float32) to QR;
2. otherwise Householder QR of X (error ~ κ(X)·ε), kept while κ(X) < 1/ε (QR still has
   correct digits; with an explicit ``rcond``, while κ(X) < 1/``rcond``): "auto" is then
   exactly "qr", so never less accurate than it;
3. otherwise -- numerically rank-deficient, or wide data -- the SVD, minimum-norm.

``solver="svd"`` factors the column-equilibrated X, so a direction is dropped only when it
is below ``rcond``·σ_max relative to the columns' own scale (``rcond`` None: max(n, p)·ε);
full column rank is solved there, and otherwise the minimum-norm solution of the
r retained directions is taken from the SVD of X itself, with a :class:`RankWarning`
naming the effective rank r when it is below min(n − 1 if centred, p).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from array_api_compat import device as _device

from mlxp._cholesky import is_cholesky_factor
from mlxp.exceptions import RankWarning, SolverError, warn_user

__all__ = [
    "RankWarning",
    "SolverError",
    "attempt",
    "cholesky_gram",
    "failure",
    "rungs",
    "solve_exact",
    "solve_svd",
    "usable",
]


def _eps(xp: Any, dtype: Any) -> float:
    return float(xp.finfo(dtype).eps)


def _nonzero(xp: Any, d: Any) -> Any:
    return xp.where(d > 0, d, xp.ones_like(d))


def _condition(xp: Any, T: Any) -> Any:
    """κ₂ of the p × p factor T: the ratio of its extreme singular values (0-d array); ∞
    for a singular T, without dividing by its zero singular value (NumPy would warn)."""
    s = xp.linalg.svdvals(T)
    smallest = xp.min(s)
    singular = smallest == 0
    ratio = xp.max(s) / xp.where(singular, xp.ones_like(smallest), smallest)
    return xp.where(singular, xp.full_like(smallest, float("inf")), ratio)


def _penalised(alpha: Any) -> bool:
    """Whether α adds a penalty: a number > 0, or an array (a compiled fit's traced α)."""
    return not isinstance(alpha, Real) or alpha != 0


def _nan(xp: Any, X: Any, k: int) -> Any:
    return xp.full((X.shape[1], k), float("nan"), dtype=X.dtype, device=_device(X))


def _cholesky(xp: Any, X: Any, Y: Any, alpha: Any, null: Any = None) -> tuple[Any, Any]:
    return cholesky_gram(xp, X.T @ X, X.T @ Y, alpha)


def cholesky_gram(xp: Any, A: Any, B: Any, alpha: Any = 0.0) -> tuple[Any, Any]:
    """(W, κ) from the normal equations (A + αI) W = B, A = XᵀX (p, p), B = XᵀY (p, k).

    Cholesky LLᵀ = D⁻¹(A + αI)D⁻¹ (D² its diagonal), then L Z = D⁻¹B and Lᵀ (DW) = Z;
    κ is that of the equilibrated A + αI (inf, and W NaN, where the factorisation fails).
    Used directly by the Dask path, which reduces A and B over the chunks of X.
    """
    p = A.shape[0]
    if _penalised(alpha):
        A = A + alpha * xp.eye(p, dtype=A.dtype, device=_device(A))
    d = _nonzero(xp, xp.sqrt(xp.linalg.diagonal(A)))
    A = A / (d[:, None] * d[None, :])
    inf = xp.asarray(float("inf"), dtype=A.dtype, device=_device(A))
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # NumPy and PyTorch raise on a matrix that is not positive definite
        return _nan(xp, A, B.shape[1]), inf
    Z = xp.linalg.solve(L, B / d[:, None])
    W = xp.linalg.solve(L.T, Z) / d[:, None]
    factored = is_cholesky_factor(L, A, xp=xp)
    # κ of a failed factor is not asked for: PyTorch's CUDA Cholesky hands back NaNs where
    # its CPU one raises, and its SVD of those raises instead of giving NaN
    L = xp.where(factored, L, xp.eye(p, dtype=L.dtype, device=_device(L)))
    return W, xp.where(factored, _condition(xp, L) ** 2, inf)  # L equilibrated


def _reflect_out(xp: Any, X: Any, Y: Any, null: Any) -> tuple[Any, Any]:
    """Rows 2..n of H X and H Y, H the Householder reflection taking ``null`` (≥ 0) to −e₁;
    the first row of H X is uᵀX = 0, so the system keeps its solutions with one row less."""
    v = xp.concat([null[:1] + 1, null[1:]])
    scale = 2 / (v @ v)
    X = X - scale * v[:, None] * (v @ X)[None, :]
    Y = Y - scale * v[:, None] * (v @ Y)[None, :]
    return X[1:, :], Y[1:, :]


def _qr(xp: Any, X: Any, Y: Any, alpha: Any, null: Any = None) -> tuple[Any, Any]:
    """W from X = QR (of [X; √α I] for ridge), solving R W = QᵀY; also κ(R).

    Wide data without a penalty (n − 1 < p if centred, else n < p) takes the minimum-norm
    solution from Xᵀ = QR: Rᵀ Z = Y, W = Q Z, after reflecting out the centring's rank.
    """
    n, p = X.shape
    dev = _device(X)
    wide = n - (null is not None) < p and not _penalised(alpha)
    if wide and null is not None:
        X, Y = _reflect_out(xp, X, Y, null)
        n -= 1
        if n == 0:  # one sample: after centring nothing is left, W = 0 is the minimum norm
            zero = xp.zeros((p, Y.shape[1]), dtype=X.dtype, device=dev)
            return zero, xp.asarray(1.0, dtype=X.dtype, device=dev)
    if _penalised(alpha):
        X = xp.concat([X, (alpha**0.5) * xp.eye(p, dtype=X.dtype, device=dev)], axis=0)
    Q, R = xp.linalg.qr(X.T if wide else X)
    try:
        W = Q @ xp.linalg.solve(R.T, Y) if wide else xp.linalg.solve(R, Q[:n, :].T @ Y)
    except Exception:  # exactly singular R
        W = xp.full((p, Y.shape[1]), float("nan"), dtype=X.dtype, device=dev)
    R = R / _nonzero(xp, xp.linalg.vector_norm(R, axis=0))[None, :]  # X's columns equilibrated
    return W, _condition(xp, R)


def solve_svd(
    xp: Any,
    X: Any,
    Y: Any,
    alpha: float = 0.0,
    *,
    rcond: float | None = None,
    null: Any = None,
    warn: bool = True,
    run: Any = None,
) -> Any:
    """W = V diag(sᵢ / (sᵢ² + α)) Uᵀ Y from X = U diag(s) Vᵀ (ridge, α > 0).

    With α = 0, see the module docstring: directions below ``rcond``·σ_max of the
    column-equilibrated X count as zero, with a :class:`RankWarning` if ``warn``. The
    rank is read back once, to decide. ``run(f, *arrays_and_numbers)`` runs each array
    part, ``f(xp, ...)``: as it is (None), or compiled (``_closed_form.ClosedForm.run``).
    """
    run = run or (lambda f, *args: f(xp, *args))
    if alpha:
        return run(_svd_ridge, X, Y, alpha)
    W, count = run(_svd_scaled, X, Y, _rcond(xp, X, rcond))
    rank = int(count)  # one host read, to decide
    if rank < X.shape[1]:
        W = run(_svd_truncated, X, Y, rank)
    n, p = X.shape
    if warn and rank < min(n - (null is not None), p):
        warn_user(
            RankWarning(
                f"solver='svd': X has effective rank {rank} of {min(n, p)} at rcond="
                f"{_rcond(xp, X, rcond):.3g}; the minimum-norm solution ignores the other "
                "directions (collinear or constant columns?). Lower rcond to keep them."
            )
        )
    return W


def _rcond(xp: Any, X: Any, rcond: float | None) -> float:
    return max(X.shape) * _eps(xp, X.dtype) if rcond is None else rcond


def _svd_ridge(xp: Any, X: Any, Y: Any, alpha: Any) -> Any:
    """W = V diag(sᵢ / (sᵢ² + α)) Uᵀ Y (α > 0)."""
    U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    return Vt.T @ ((s / (s**2 + alpha))[:, None] * (U.T @ Y))


def _svd_scaled(xp: Any, X: Any, Y: Any, cut: Any) -> tuple[Any, Any]:
    """(W, r): the solution from the SVD of the column-equilibrated X, right when r, the
    number of its singular values above ``cut``·σ_max (a 0-d array), is p."""
    norms = _nonzero(xp, xp.linalg.vector_norm(X, axis=0))
    U, s, Vt = xp.linalg.svd(X / norms[None, :], full_matrices=False)
    kept = s > cut * xp.max(s)
    # 1/s where kept (all of s when r = p), else 0: no division by a zero s, whose warning
    # would be an error under -W error for the W that r < p throws away
    factor = xp.where(kept, 1 / xp.where(kept, s, xp.ones_like(s)), xp.zeros_like(s))
    W = (Vt.T @ (factor[:, None] * (U.T @ Y))) / norms[:, None]
    return W, xp.sum(xp.astype(kept, s.dtype))


def _svd_truncated(xp: Any, X: Any, Y: Any, rank: Any) -> Any:
    """The minimum-norm solution of X's ``rank`` largest directions."""
    U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    kept = xp.arange(s.shape[0], dtype=s.dtype, device=_device(X)) < rank
    factor = xp.where(kept, 1 / xp.where(kept, s, xp.ones_like(s)), xp.zeros_like(s))
    return Vt.T @ (factor[:, None] * (U.T @ Y))


_FACTORISATIONS = {"cholesky": _cholesky, "qr": _qr}
_FAILURES = {
    "cholesky": "XᵀX + alpha·I is singular or not positive definite",
    "qr": "R is singular because X is rank-deficient",
}


def rungs(solver: str, shape: tuple[int, ...], eps: float, rcond: float | None) -> list[Any]:
    """The factorisations ``solver`` tries on X of ``shape`` (n, p), in turn, each as
    (name, the largest κ at which its W is kept): "cholesky" and "qr" alone up to 1/ε
    (else a :class:`SolverError`); "auto" as the module docstring says, Cholesky then QR
    on tall data (the SVD after them, or at once on wide data); "svd" none."""
    if solver in _FACTORISATIONS:
        return [(solver, 1 / eps)]
    if solver == "auto" and shape[0] >= shape[1]:
        return [("cholesky", eps**-0.25), ("qr", _largest_condition(eps, rcond))]
    return []


def _largest_condition(eps: float, rcond: float | None) -> float:
    """The κ(R) below which QR is kept: 1/ε, or 1/``rcond`` (∞ for ``rcond=0``)."""
    cut = eps if rcond is None else rcond
    return 1 / cut if cut else math.inf


def attempt(xp: Any, name: str, X: Any, Y: Any, alpha: Any, null: Any, limit: Any) -> Any:
    """(W, ok) by factorisation ``name`` ("cholesky" or "qr"): ok (0-d bool) says W is
    finite and the factor's κ below ``limit``. No host read: the caller reads ok."""
    W, condition = _FACTORISATIONS[name](xp, X, Y, alpha, null)
    return W, usable(xp, W, condition, limit)


def usable(xp: Any, W: Any, condition: Any, limit: Any) -> Any:
    """Whether W is finite and its factor's κ (``condition``) below ``limit`` (0-d bool;
    no host read)."""
    return xp.all(xp.isfinite(W)) & (condition < limit)


def failure(name: str, shape: tuple[int, ...]) -> SolverError:
    """The error of ``solver=name`` ("cholesky" or "qr") refusing X of ``shape`` (n, p)."""
    n, p = shape
    return SolverError(
        f"solver={name!r} failed: {_FAILURES[name]} (X has {n} sample(s) and {p} "
        "feature(s), after centring; collinear or constant columns?). Use solver='svd' or "
        "solver='auto'."
    )


def solve_exact(
    xp: Any,
    X: Any,
    Y: Any,
    alpha: float = 0.0,
    *,
    solver: str = "auto",
    rcond: float | None = None,
    null: Any = None,
    attempt: Any = attempt,
    run: Any = None,
) -> tuple[Any, str]:
    """(W, the solver used) by ``solver`` ("auto", "cholesky", "qr" or "svd"): the
    :func:`rungs` in turn, one host read each (``attempt``: :func:`attempt`, or a
    compiled form of it), then the SVD (its parts run by ``run``: see :func:`solve_svd`);
    a :class:`SolverError` where "cholesky" or "qr"
    fails. Rank-deficient data (one-hot columns with an intercept...) get the minimum
    norm from the SVD by design."""
    for name, limit in rungs(solver, X.shape, _eps(xp, X.dtype), rcond):
        W, ok = attempt(xp, name, X, Y, alpha, null, limit)
        if bool(ok):
            return W, name
        if solver != "auto":
            raise failure(name, X.shape)
    W = solve_svd(xp, X, Y, alpha, rcond=rcond, null=null, warn=solver == "svd", run=run)
    return W, "svd"
