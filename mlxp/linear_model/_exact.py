"""Exact least-squares solvers: minimise ‖XW − Y‖² + α‖W‖² for W of shape (p, k).

Every solver takes a centred (and row-weighted) design ``X`` of shape (n, p) and
targets ``Y`` of shape (n, k), and returns ``W``; each uses only the Array API
standard's ``linalg`` extension, so it runs on any backend and device.

How ``solver="auto"`` chooses, cheapest first. For tall X (n ≫ p) the normal equations
cost one product XᵀX (np² flops, a single BLAS-3 call) and a p × p factorisation, while
QR and the SVD factor the whole n × p matrix (several times more flops, in less
parallel kernels), so Cholesky is several times faster than either:

1. tall data (n ≥ p): Cholesky of XᵀX + αI -- fastest. Its error grows like
   κ(XᵀX)·ε, so it is kept only when κ(XᵀX), estimated from the factor's diagonal,
   stays below 1/√ε (about 7e7 in float64, 3e3 in float32);
2. otherwise Householder QR of X (error ~ κ(X)·ε), kept while κ(X) < 1/√ε;
3. otherwise -- nearly rank-deficient, or wide data (n < p) -- the SVD, which gives
   the minimum-norm solution, as scikit-learn's lstsq-based solver does.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from mlxp.exceptions import SolverError

__all__ = ["SolverError", "solve_auto", "solve_cholesky", "solve_qr", "solve_svd"]


def _eps(xp: Any, dtype: Any) -> float:
    return float(xp.finfo(dtype).eps)


def _condition_from_triangle(xp: Any, T: Any) -> Any:
    """A cheap lower bound of κ(T) for triangular T: max |Tᵢᵢ| / min |Tᵢᵢ| (0-d array)."""
    d = xp.abs(xp.linalg.diagonal(T))
    return xp.max(d) / xp.min(d)


def _is_good(xp: Any, W: Any, condition: Any, limit: float) -> bool:
    # One host read per fit, to decide: finite result and acceptable conditioning.
    return bool(xp.all(xp.isfinite(W)) & (condition < limit))


def _cholesky(xp: Any, X: Any, Y: Any, alpha: float) -> tuple[Any, Any]:
    """W from Cholesky LLᵀ = XᵀX + αI, then L Z = XᵀY and Lᵀ W = Z; also κ(XᵀX + αI)."""
    p = X.shape[1]
    A = X.T @ X
    if alpha:
        A = A + alpha * xp.eye(p, dtype=X.dtype, device=_device(X))
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # NumPy, PyTorch, CuPy raise; JAX returns NaNs instead
        nan = xp.full((p, Y.shape[1]), float("nan"), dtype=X.dtype, device=_device(X))
        return nan, xp.asarray(float("inf"), dtype=X.dtype, device=_device(X))
    Z = xp.linalg.solve(L, X.T @ Y)
    W = xp.linalg.solve(L.T, Z)
    return W, _condition_from_triangle(xp, L) ** 2


def _qr(xp: Any, X: Any, Y: Any, alpha: float) -> tuple[Any, Any]:
    """W from X = QR (of [X; √α I] for ridge), solving R W = QᵀY; also κ(R).

    Wide data without a penalty (n < p) takes the minimum-norm solution from
    Xᵀ = QR instead: Rᵀ Z = Y, W = Q Z.
    """
    n, p = X.shape
    dev = _device(X)
    wide = n < p and not alpha
    if alpha:
        X = xp.concat([X, (alpha**0.5) * xp.eye(p, dtype=X.dtype, device=dev)], axis=0)
    Q, R = xp.linalg.qr(X.T if wide else X)
    try:
        W = Q @ xp.linalg.solve(R.T, Y) if wide else xp.linalg.solve(R, Q[:n, :].T @ Y)
    except Exception:  # exactly singular R
        W = xp.full((p, Y.shape[1]), float("nan"), dtype=X.dtype, device=dev)
    return W, _condition_from_triangle(xp, R)


def solve_svd(xp: Any, X: Any, Y: Any, alpha: float = 0.0) -> Any:
    """W = V diag(sᵢ / (sᵢ² + α)) Uᵀ Y from X = U diag(s) Vᵀ.

    With α = 0, singular values below max(n, p)·ε·s_max count as zero, which gives
    the minimum-norm solution on rank-deficient (e.g. collinear) data.
    """
    U, s, Vt = xp.linalg.svd(X, full_matrices=False)
    if alpha:
        factor = s / (s**2 + alpha)
    else:
        cutoff = xp.max(s) * max(X.shape) * _eps(xp, X.dtype)
        kept = s > cutoff
        factor = xp.where(kept, 1 / xp.where(kept, s, xp.ones_like(s)), xp.zeros_like(s))
    return Vt.T @ (factor[:, None] * (U.T @ Y))


def solve_cholesky(xp: Any, X: Any, Y: Any, alpha: float = 0.0) -> Any:
    """Normal equations (XᵀX + αI) W = XᵀY via Cholesky; fastest for tall data.

    Raises :class:`SolverError` when the matrix is numerically singular (κ ≥ 1/ε).
    """
    W, condition = _cholesky(xp, X, Y, alpha)
    if not _is_good(xp, W, condition, 1 / _eps(xp, X.dtype)):
        raise SolverError(
            "solver='cholesky' failed: XᵀX + alpha·I is singular or not positive definite "
            f"{_shape_note(X)}. Use solver='svd' or solver='auto'."
        )
    return W


def solve_qr(xp: Any, X: Any, Y: Any, alpha: float = 0.0) -> Any:
    """Householder QR of the design, X = QR, solving the triangular system R W = QᵀY.

    Raises :class:`SolverError` when R is numerically singular (κ(R) ≥ 1/ε).
    """
    W, condition = _qr(xp, X, Y, alpha)
    if not _is_good(xp, W, condition, 1 / _eps(xp, X.dtype)):
        raise SolverError(
            f"solver='qr' failed: R is singular because X is rank-deficient {_shape_note(X)}. "
            "Use solver='svd' or solver='auto'."
        )
    return W


def _shape_note(X: Any) -> str:
    n, p = X.shape
    return (
        f"(X has {n} sample(s) and {p} feature(s), after centring; collinear or constant columns?)"
    )


def solve_auto(xp: Any, X: Any, Y: Any, alpha: float = 0.0) -> tuple[Any, str]:
    """Cholesky, else QR, else SVD, as the module docstring explains; returns (W, solver)."""
    n, p = X.shape
    limit = 1 / _eps(xp, X.dtype) ** 0.5
    if n >= p:
        W, condition = _cholesky(xp, X, Y, alpha)
        if _is_good(xp, W, condition, limit):
            return W, "cholesky"
        W, condition = _qr(xp, X, Y, alpha)
        if _is_good(xp, W, condition, limit):
            return W, "qr"
    return solve_svd(xp, X, Y, alpha), "svd"
