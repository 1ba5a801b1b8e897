"""Solving with a symmetric positive definite matrix by Cholesky, the factor checked.

Ground floor. The Newton solvers' directions and the exact solvers' normal equations
factor A = LLᵀ. Libraries disagree on a matrix that is not positive definite: NumPy and
array-api-strict raise, JAX returns NaNs, PyTorch reports it in a status it need not read
back, and CuPy's default returns cuSOLVER's partial factor, finite and wrong. Here every
one of them gives NaN (:func:`cholesky_solve`), or is checked (:func:`is_cholesky_factor`),
so that the callers can fall back (a gradient step, another solver) without a host read.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import (
    array_namespace,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)
from array_api_compat import device as _device

__all__ = ["cholesky_solve", "is_cholesky_factor"]


def cholesky_solve(A: Any, B: Any, /, *, xp: Any = None) -> Any:
    """X solving A X = B for a symmetric positive definite A (n, n) and B (n, k): A = LLᵀ
    by Cholesky, then Ly = B and LᵀX = y. PyTorch: ``cholesky_ex`` and ``cholesky_solve``
    (no status read back: ``cholesky`` and ``solve`` synchronise on CUDA), X NaN where the
    factorisation failed; elsewhere the standard's ``cholesky`` and two ``solve``, X NaN
    where NumPy or array-api-strict raise, or JAX gives NaNs, or (CuPy's partial factor,
    an unknown library's) L fails :func:`is_cholesky_factor`. Callers check X is finite."""
    xp = xp or array_namespace(A, B)
    if is_torch_namespace(xp):
        import torch

        L, info = torch.linalg.cholesky_ex(A)
        return torch.where(info == 0, torch.cholesky_solve(B, L), torch.nan)
    try:
        L = xp.linalg.cholesky(A)
    except Exception as error:  # NumPy's (array-api-strict's) or PyTorch's LinAlgError
        if "LinAlgError" not in type(error).__name__:
            raise
        return xp.full(B.shape, xp.nan, dtype=xp.result_type(A, B), device=_device(B))
    X = xp.linalg.solve(L.T, xp.linalg.solve(L, B))
    reports = (is_numpy_namespace, is_jax_namespace, is_array_api_strict_namespace)
    if any(is_library(xp) for is_library in reports):
        return X
    return xp.where(is_cholesky_factor(L, A, xp=xp), X, xp.nan)


def is_cholesky_factor(L: Any, A: Any, /, *, xp: Any = None) -> Any:
    """Whether L is a computed Cholesky factor of the symmetric A (p, p) (0-d bool, no
    host read): a positive diagonal and |A − LLᵀ| ≤ 4(p + 1)ε maxₖ aₖₖ on the lower
    triangle, the one a factorisation reads (A made by a product is symmetric only to
    rounding). A computed factor is within γₚ₊₁ ≈ (p + 1)ε whatever the conditioning; a
    partial one (CuPy's, cuSOLVER's) misses by O(1), and NaNs (JAX's) fail. One p³ product,
    never TF32's (10-bit inputs would fail every float32 factor): JAX's at its highest
    precision (its GPU default is TF32), float64 for float32 on CuPy (``CUPY_TF32=1``) and
    on PyTorch's CUDA devices (``allow_tf32``)."""
    xp = xp or array_namespace(L, A)
    tol = 4 * (A.shape[0] + 1) * xp.finfo(A.dtype).eps * xp.max(xp.linalg.diagonal(A))
    residual = xp.max(xp.abs(xp.tril(_full_precision_gram(L, xp) - A)))
    return (residual <= tol) & xp.all(xp.linalg.diagonal(L) > 0)


def _full_precision_gram(L: Any, xp: Any) -> Any:
    """L Lᵀ with no input rounded below L's own precision (see :func:`is_cholesky_factor`)."""
    if is_jax_namespace(xp):
        import jax

        return xp.matmul(L, L.T, precision=jax.lax.Precision.HIGHEST)
    on_cuda = is_cupy_namespace(xp) or (is_torch_namespace(xp) and L.device.type == "cuda")
    wide = xp.astype(L, xp.float64) if on_cuda and L.dtype == xp.float32 else L
    return wide @ wide.T
