"""CuPy's matrix products by direct cuBLAS calls, which a CUDA graph can capture.

Ground floor. CuPy refuses every cuBLAS call while its current stream is capturing (its
``setStream`` raises NotImplementedError: cupy#6290), though cuBLAS itself supports stream
capture (the cuBLAS guide, "CUDA Graphs Support"; PyTorch captures its products so).
Inside :func:`direct_products`, :mod:`mlxp._products` sends CuPy's float32 and float64
products here: ``cublas{S,D}gemm_v2`` called through ctypes with CuPy's own handle, on
CuPy's current stream, from the ``libcublas`` CuPy loaded (the one of CuPy's cuBLAS
version, among those in ``/proc/self/maps``), and, while a graph is captured, into a
workspace kept with that graph (``cublasSetWorkspace``), so that cuBLAS allocates nothing
during the capture. Outside it, nothing changes.

A row-major C (m, n) = A (m, k) B (k, n) is, read column-major, Cᵀ = Bᵀ Aᵀ: one ``gemm``
with the operands swapped (:func:`plan`). A row-major operand read column-major is its
transpose (no op), a column-major one (a transposed view) is itself (op T); any other
layout is first copied to a contiguous array. Tested on the CPU against a column-major
BLAS written out in NumPy (``tests/test_cublas.py``); the ctypes call itself runs only on
a GPU (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "WORKSPACE_BYTES",
    "direct_products",
    "loaded_paths",
    "matching_library",
    "matmul",
    "plan",
    "product",
    "routes",
]

WORKSPACE_BYTES = 32 * 2**20
"""The cuBLAS workspace of one captured graph (PyTorch's default on Hopper GPUs)."""

_DIRECT: contextvars.ContextVar[tuple[bool, Any]] = contextvars.ContextVar(
    "mlxp_direct_products", default=(False, None)
)  # (on, the workspace or None)
_INT_MAX = 2**31 - 1  # gemm's sizes and leading dimensions are C ints
_NO_OP, _TRANSPOSE = 0, 1  # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T
_HOST_POINTERS = 0  # cublasPointerMode_t: CUBLAS_POINTER_MODE_HOST (alpha, beta)


@contextlib.contextmanager
def direct_products(workspace: Any = None) -> Iterator[None]:
    """Within it, CuPy's products made through :mod:`mlxp._products` call cuBLAS
    directly (:func:`product`), so that a stream capture can take them in; with a
    ``workspace`` (a CuPy buffer of :data:`WORKSPACE_BYTES`, kept as long as what is
    captured), cuBLAS works in it instead of its own pool."""
    token = _DIRECT.set((True, workspace))
    try:
        yield
    finally:
        _DIRECT.reset(token)


def routes(xp: Any) -> bool:
    """Whether a product on the library ``xp`` goes to :func:`product` here: CuPy, inside
    :func:`direct_products`."""
    return xp.__name__.endswith("cupy") and _DIRECT.get()[0]  # the name first: Dynamo traces it


def matmul(A: Any, B: Any, *, xp: Any) -> Any:
    """A @ B for 1-D and 2-D operands, and an N-D A by a 2-D B (its leading axes as rows),
    by :func:`product`; other shapes, and dtypes other than float32 and float64, by the
    library's own ``@``."""
    if A.ndim == 0 or B.ndim == 0 or B.ndim > 2 or A.dtype != B.dtype:
        return A @ B
    A2 = xp.reshape(A, (1, A.shape[0]) if A.ndim == 1 else (math.prod(A.shape[:-1]), A.shape[-1]))
    B2 = xp.reshape(B, (-1, 1)) if B.ndim == 1 else B
    if A2.shape[1] != B2.shape[0]:
        return A @ B  # the library's own error
    C = product(A2, B2, xp=xp)
    return xp.reshape(C, tuple(A.shape[:-1]) + tuple(B.shape[1:]))


def product(
    A: Any,
    B: Any,
    *,
    out: Any = None,
    add: Any = None,
    xp: Any,
    launch: Callable[..., None] | None = None,
) -> Any:
    """C = AB (+ ``add``, broadcast to C first, then gemm's β = 1) for 2-D A (m, k) and
    B (k, n) of one float dtype, written into ``out`` (row-major, unit column stride) if
    given, else into a new C-contiguous array; returned. ``launch``: what runs the gemm
    :func:`plan` describes (default: cuBLAS through ctypes; the tests pass a NumPy BLAS)."""
    if str(A.dtype) not in ("float32", "float64") or A.dtype != B.dtype:
        return A @ B if add is None else A @ B + add
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"a product of 2-D arrays (m, k) (k, n), not {A.shape} {B.shape}")
    m, n = A.shape[0], B.shape[1]
    if out is not None and (tuple(out.shape) != (m, n) or out.dtype != A.dtype):
        raise ValueError(f"out must be {(m, n)} {A.dtype}, not {tuple(out.shape)} {out.dtype}")
    C = xp.empty((m, n), dtype=A.dtype) if out is None else out  # on the current device
    beta = 0.0
    if add is not None:
        C[...] = add
        beta = 1.0
    if m and n and A.shape[1]:
        operands = [x if layout(x) else xp.ascontiguousarray(x) for x in (A, B)]
        (launch or _launch)(*plan(operands[0], operands[1], C), beta)
    elif add is None:
        C[...] = 0  # an empty sum (k = 0)
    return C


def layout(x: Any) -> tuple[int, int] | None:
    """(op, ld) such that ``op`` of the column-major matrix at x's first element with
    leading dimension ``ld`` is xᵀ, for a 2-D x (r, c): a row-major x is stored as xᵀ
    (op N, ld its row stride), a column-major one as x (op T, ld its column stride);
    None for any other layout (negative, zero, overlapping or interleaved strides). In
    elements; the stride of an axis of length 1 is not read, whatever it is."""
    (r, c), size = x.shape, x.itemsize
    s0, s1 = (s // size if s % size == 0 else -1 for s in x.strides)
    if (c == 1 or s1 == 1) and (r == 1 or s0 >= max(1, c)):
        return _NO_OP, max(1, c) if r == 1 else s0
    if (r == 1 or s0 == 1) and s1 >= max(1, r):
        return _TRANSPOSE, s1
    return None


def plan(A: Any, B: Any, C: Any) -> tuple[Any, ...]:
    """gemm's arguments (opa, opb, m, n, k, a, lda, b, ldb, c, ldc), column-major, that
    write AB into the row-major C (m, n): Cᵀ (n, m) = op(B-as-stored) op(A-as-stored),
    a = B, b = A, ldc = C's row stride. A and B as :func:`layout` takes them."""
    (m, k), n = A.shape, B.shape[1]
    (op_b, ld_b), (op_a, ld_a) = layout(B), layout(A)
    ldc = max(1, n) if m == 1 else C.strides[0] // C.itemsize
    if (C.strides[1] != C.itemsize and n > 1) or ldc < max(1, n):
        raise ValueError(f"C must be row-major with unit column stride, not {C.strides}")
    if max(m, n, k, ld_a, ld_b, ldc) > _INT_MAX:
        raise ValueError(f"gemm takes sizes below 2**31, not {(m, k, n)} (ld {ld_a, ld_b, ldc})")
    return op_b, op_a, n, m, k, B, ld_b, A, ld_a, C, ldc


def _launch(
    opa: int, opb: int, m: int, n: int, k: int, a: Any, lda: int, b: Any, ldb: int,
    c: Any, ldc: int, beta: float,
) -> None:  # fmt: skip
    """cublas{S,D}gemm_v2 on CuPy's handle and current stream (in the workspace of
    :func:`direct_products`, if given), α = 1 and β host values; the handle's pointer mode
    is put back as it was (CuPy sets its stream again before each call of its own)."""
    import ctypes

    import cupy

    lib, handle = _library(), cupy.cuda.device.get_cublas_handle()
    name = "cublasSgemm_v2" if str(c.dtype) == "float32" else "cublasDgemm_v2"
    scalar = ctypes.c_float if name == "cublasSgemm_v2" else ctypes.c_double
    _check(lib.cublasSetStream_v2(handle, cupy.cuda.get_current_stream().ptr), "SetStream")
    workspace = _DIRECT.get()[1]
    if workspace is not None:  # after SetStream, which resets it
        status = lib.cublasSetWorkspace_v2(handle, workspace.data.ptr, workspace.nbytes)
        _check(status, "SetWorkspace")
    mode = ctypes.c_int()
    _check(lib.cublasGetPointerMode_v2(handle, ctypes.byref(mode)), "GetPointerMode")
    if mode.value != _HOST_POINTERS:
        _check(lib.cublasSetPointerMode_v2(handle, _HOST_POINTERS), "SetPointerMode")
    try:
        alpha, beta_value = scalar(1.0), scalar(beta)
        status = getattr(lib, name)(handle, opa, opb, m, n, k, ctypes.byref(alpha), a.data.ptr,
                                    lda, b.data.ptr, ldb, ctypes.byref(beta_value), c.data.ptr,
                                    ldc)  # fmt: skip
        _check(status, name.removeprefix("cublas").removesuffix("_v2"))
    finally:
        if mode.value != _HOST_POINTERS:
            _check(lib.cublasSetPointerMode_v2(handle, mode.value), "SetPointerMode")


def _check(status: int, call: str) -> None:
    if status != 0:
        raise RuntimeError(f"cublas{call}_v2 returned status {status}")


@functools.cache
def _library() -> Any:
    """The libcublas CuPy calls, with the argument types of the calls :func:`_launch`
    makes: among the libcublas this process has loaded (CuPy's handle made first, so
    that CuPy's is), the one whose version is CuPy's cuBLAS version; a RuntimeError
    where there is none, or several of that version (a handle of one library must not
    reach another)."""
    import ctypes

    import cupy
    from cupy_backends.cuda.libs import cublas

    wanted = cublas.getVersion(cupy.cuda.device.get_cublas_handle())
    try:
        with open("/proc/self/maps") as maps:
            paths = loaded_paths(maps.read(), "libcublas.so")
    except OSError:
        paths = []
    lib = ctypes.CDLL(matching_library(paths, wanted, lambda path: _versions(ctypes.CDLL(path))))
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.cublasSetStream_v2.argtypes = [p, p]
    lib.cublasSetWorkspace_v2.argtypes = [p, p, ctypes.c_size_t]
    lib.cublasGetPointerMode_v2.argtypes = [p, ctypes.POINTER(i)]
    lib.cublasSetPointerMode_v2.argtypes = [p, i]
    for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
        getattr(lib, name).argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
    return lib


def matching_library(
    paths: list[str], wanted: int, versions: Callable[[str], tuple[int, ...]]
) -> str:
    """The one path among ``paths`` whose ``versions`` include ``wanted``; a RuntimeError
    naming them where none does, or several (a handle of one library must not reach
    another)."""
    matching = [path for path in paths if wanted in versions(path)]
    if len(matching) != 1:
        raise RuntimeError(
            f"{len(matching)} libcublas of CuPy's cuBLAS version {wanted} among the "
            f"libraries this process has loaded ({paths or 'none'}): cannot tell CuPy's"
        )
    return matching[0]


def _versions(lib: Any) -> tuple[int, ...]:
    """A libcublas's version as cublasGetVersion may give it: major·10⁴ + minor·10² + patch
    (cuBLAS 12 on) or major·10³ + minor·10² + patch (cuBLAS 11), from cublasGetProperty
    (MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL); () where unreadable."""
    import ctypes

    parts = []
    for kind in (0, 1, 2):
        value = ctypes.c_int()
        if lib.cublasGetProperty(kind, ctypes.byref(value)) != 0:
            return ()
        parts.append(value.value)
    major, minor, patch = parts
    return (major * 10000 + minor * 100 + patch, major * 1000 + minor * 100 + patch)


def loaded_paths(maps: str, stem: str) -> list[str]:
    """The distinct paths, in order, of the libraries named ``stem`` or ``stem.N…`` in the
    text of ``/proc/self/maps`` (its last column); a file deleted since it was mapped (its
    path marked " (deleted)") is left out."""
    paths: list[str] = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # address, perms, offset, dev, inode, path
        path = fields[5].strip() if len(fields) == 6 else ""
        name = path.rsplit("/", 1)[-1]
        if path.endswith(" (deleted)"):
            continue
        if (name == stem or name.startswith(stem + ".")) and path not in paths:
            paths.append(path)
    return paths
