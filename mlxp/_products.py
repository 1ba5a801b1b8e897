"""Matrix products: the standard's A @ B in value, by the route each library does best.

Ground floor. The math makes every product of a training step here, so that one place
picks how: PyTorch's ``addmm`` and ``mm(out=)`` (one kernel each), NumPy's and CuPy's
``matmul(out=)`` into a buffer's view, and, inside :func:`mlxp._cublas.direct_products`
(a CUDA graph being captured), CuPy's products by direct cuBLAS calls, which CuPy's own
``@`` refuses during a capture. Everywhere else the standard's ``@``. Each route is
tested against ``@`` (``tests/test_products.py``).

* :func:`matmul` -- AB;
* :func:`addmm` -- c + AB, the bias added into the matrix product;
* :func:`matmul_into` -- AB written into a given array (a view of a flat gradient buffer).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_numpy_namespace, is_torch_namespace

from mlxp import _cublas
from mlxp._kernels import host_library, writes_into

__all__ = ["addmm", "matmul", "matmul_into"]


def matmul(A: Any, B: Any, /, *, xp: Any = None) -> Any:
    """AB, as the standard's ``matmul`` (1-D operands as vectors); on CuPy inside
    :func:`mlxp._cublas.direct_products`, by cuBLAS called directly."""
    xp = xp or array_namespace(A, B)
    if _cublas.routes(xp):
        return _cublas.matmul(A, B, xp=xp)
    return A @ B


def addmm(c: Any, A: Any, B: Any, /, *, xp: Any = None) -> Any:
    """c + AB for A (m, k), B (k, n) and c broadcasting to (m, n). PyTorch: ``addmm``, one
    kernel; NumPy: c added into the fresh product in place (no second (m, n) buffer);
    CuPy inside :func:`mlxp._cublas.direct_products`: c copied into the result, then one
    gemm adds AB to it; elsewhere AB + c."""
    xp = xp or array_namespace(A)
    if is_torch_namespace(xp):
        import torch

        return torch.addmm(c, A, B)
    if _cublas.routes(xp) and c.dtype == A.dtype:
        return _cublas.product(A, B, add=c, xp=xp)
    product = A @ B
    if is_numpy_namespace(xp) and product.dtype == c.dtype:
        product += c
        return product
    return product + c


def matmul_into(A: Any, B: Any, out: Any, /, *, xp: Any = None) -> Any:
    """AB for A (m, k), B (k, n): written into ``out`` (m, n), which is returned, where the
    library writes a product in place (:func:`mlxp._kernels.writes_in_place`; PyTorch
    ``mm(out=)``, NumPy and CuPy ``matmul(out=)``, or cuBLAS directly inside
    :func:`mlxp._cublas.direct_products`) and ``out`` is of its shape and dtype; else, or
    for ``out`` None, :func:`matmul`'s new array. The caller tells which by identity.
    The values are A @ B's to rounding: NumPy's OpenBLAS gives the same bits, PyTorch's
    MKL may not where ``out`` starts off a 16-byte boundary (it picks its kernel by
    alignment; 1e-16 relative in float64)."""
    xp = xp or array_namespace(A, B)
    shape = (A.shape[0], B.shape[1])
    if not writes_into(xp, out, shape, A, B):
        return matmul(A, B, xp=xp)
    if is_torch_namespace(xp):
        import torch

        return torch.mm(A, B, out=out)
    if _cublas.routes(xp):
        return _cublas.product(A, B, out=out, xp=xp)
    return host_library(xp).matmul(A, B, out=out)
