"""Fused kernels a library has and the standard lacks, each beside its standard fallback.

Ground floor. On a GPU a step costs about its number of kernel launches, so where PyTorch
does in one kernel what the standard needs several operations for, the math calls the
function here: PyTorch's kernel on PyTorch, the standard operations everywhere else. On
NumPy an operation costs about its passes over memory and its fresh buffers, so there a
function writes into buffers it owns or is given (``out=``) where the fallback allocates.
Each fast path is tested against its fallback (``tests/test_kernels.py``, and the tests of
the layers that use them). The math modules import no array library themselves.

* :func:`all_finite` -- whether every value of an array is finite;
* :func:`concat_flat` -- arrays flattened and laid end to end in one 1-D buffer;
* :func:`positive_part`, :func:`positive_part_grad` -- max(x, 0) and g ⊙ [x > 0] (ReLU);
* :func:`log_softmax` -- z − logsumexp(z) along axis 1, and :func:`fuses_log_softmax`;
* :func:`max_and_argmax` -- the maximum of arrays and the index of the first holding it;
* :func:`spread_by_index` -- values sent to slot ``index`` of k slots, zeros elsewhere;
* :func:`strided_view` -- a view of an array with given shape and strides, or None;
* :func:`adam_update` -- Adam's step, in the caller's buffers on NumPy if it gives them up;
* :func:`sum_into` -- a sum written into a given array (a view of a flat gradient buffer),
  and :func:`writes_in_place`, :func:`writes_into` (products: :mod:`mlxp._products`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from array_api_compat import (
    array_namespace,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)
from array_api_compat import device as _device

from mlxp._compat import argmax
from mlxp._special import log_softmax as _standard_log_softmax

__all__ = [
    "adam_update",
    "all_finite",
    "concat_flat",
    "fuses_log_softmax",
    "host_library",
    "log_softmax",
    "max_and_argmax",
    "positive_part",
    "positive_part_grad",
    "spread_by_index",
    "strided_view",
    "sum_into",
    "writes_in_place",
    "writes_into",
]

_BOOL_ARITHMETIC = (is_numpy_namespace, is_cupy_namespace, is_torch_namespace, is_jax_namespace)
"""The libraries whose arithmetic takes a boolean array as 0/1 (the standard does not)."""


def all_finite(x: Any, /, *, xp: Any = None) -> Any:
    """Whether every xᵢ is finite (0-d bool; True for an empty x). PyTorch: its smallest
    and largest value by one ``aminmax`` reduction (a NaN makes both NaN), both finite
    when 0·min + 0·max = 0 (0·±inf is NaN; no sum of them can overflow): five kernels,
    one over x, where ``all(isfinite(x))`` takes five over x and a boolean copy (5.3 ms
    against 0.45 ms over 50000 × 50 float64 on a CPU); elsewhere the standard's
    ``all(isfinite(x))`` (on NumPy as fast as a reduction: 1.0 ms there)."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp) and x.numel():
        import torch

        smallest, largest = torch.aminmax(x)
        return smallest * 0 + largest * 0 == 0
    return xp.all(xp.isfinite(x))


def concat_flat(arrays: list[Any], /, *, xp: Any = None) -> Any:
    """The arrays, each flattened (C order), laid end to end: one 1-D buffer of Σ sizes.

    JAX, while tracing (``jax.jit``): each part written at its offset into one zero buffer
    (``dynamic_update_slice``, in place once compiled); XLA's CPU concatenate, evaluated
    per element and fused into every consumer, cost 0.6 ms per use on a 235 146-value
    gradient, the writes 0.13 ms in all. Elsewhere, and eagerly, the standard's ``concat``."""
    xp = xp or array_namespace(*arrays)
    parts = [xp.reshape(a, (-1,)) for a in arrays]
    if not is_jax_namespace(xp) or len(parts) < 2 or not _tracing(parts):
        return xp.concat(parts)
    from jax import lax

    dtype = xp.result_type(*parts)
    flat = xp.zeros((sum(p.shape[0] for p in parts),), dtype=dtype)  # joins the parts' device
    start = 0
    for part in parts:
        flat = lax.dynamic_update_slice(flat, xp.astype(part, dtype), (start,))
        start += part.shape[0]
    return flat


def _tracing(arrays: list[Any]) -> bool:
    """Whether any of these JAX arrays is a tracer (inside ``jax.jit`` and the like)."""
    import jax

    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def positive_part(x: Any, /, *, xp: Any = None) -> Any:
    """max(x, 0), element-wise. NumPy (a real floating array): the maximum with an array of
    zeros, written into that array. Its maximum with a scalar takes a loop two to three
    times slower than with an array. PyTorch (a floating tensor): ``relu``, one kernel that
    ``torch.compile`` traces whole (its ``maximum`` with a Python float asks
    ``result_type`` first, a graph break). Elsewhere the standard's ``maximum(x, 0.0)``."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp) and x.is_floating_point():  # relu keeps integers integral
        import torch

        return torch.relu(x)
    if is_numpy_namespace(xp):
        import numpy as np

        if type(x) is np.ndarray and x.dtype.kind == "f":
            zeros = np.zeros_like(x)
            return np.maximum(x, zeros, out=zeros)
    return xp.maximum(x, 0.0)


def positive_part_grad(x: Any, grad: Any, /, *, xp: Any = None) -> Any:
    """g ⊙ [x > 0] (0 at x = 0, as PyTorch). PyTorch: ``threshold_backward``, one kernel
    (g at x ≤ 0 dropped, finite or not). Libraries promoting booleans in arithmetic: one
    comparison and one product (NumPy's ``where`` would branch on every element), so a
    non-finite g at x ≤ 0 gives NaN there; ``where([x > 0], g, 0)`` elsewhere."""
    xp = xp or array_namespace(grad)
    if is_torch_namespace(xp):
        import torch

        return torch.ops.aten.threshold_backward(grad, x, 0.0)
    if any(is_lib(xp) for is_lib in _BOOL_ARITHMETIC):
        return grad * (x > 0)
    return xp.where(x > 0, grad, 0.0)


def fuses_log_softmax(xp: Any) -> bool:
    """Whether :func:`log_softmax` is one kernel on ``xp`` (PyTorch), not four or more."""
    return is_torch_namespace(xp)


def log_softmax(z: Any, /, *, xp: Any = None) -> Any:
    """z − logsumexp(z) along axis 1 of z (n, K): PyTorch's ``log_softmax``, else
    :func:`mlxp._special.log_softmax` (the maximum shifted out first)."""
    xp = xp or array_namespace(z)
    if is_torch_namespace(xp):
        import torch

        return torch.log_softmax(z, dim=1)
    return _standard_log_softmax(z, axis=1, xp=xp)


def max_and_argmax(
    views: list[Any], /, *, stacked: Callable[[], Any] | None = None, xp: Any = None
) -> tuple[Any, Any]:
    """(m, a) for arrays ``views`` of one shape: m their element-wise maximum, a the index
    of the first view holding it (of its first NaN, if any, as ``argmax`` and PyTorch;
    CuPy's argmax, reducing in a tree, may pick a later NaN of a window of several).
    NumPy, whose argmax along a leading axis is slow: the maximum of the views, then the
    first view equal to it (:func:`_first_equal`; a is uint8 there, int32 above 256
    views). Elsewhere the views stacked, by ``stacked()`` where the caller has a faster
    way than the standard's ``stack`` (``mlxp.nn._windows.window_stack``), then on
    PyTorch one ``torch.max``, elsewhere ``max`` and :func:`mlxp._compat.argmax`."""
    xp = xp or array_namespace(*views)
    if is_numpy_namespace(xp):
        m = functools.reduce(xp.maximum, views)
        a, nan = _first_equal(views, m, xp), xp.isnan(m)
        if xp.any(nan):
            a = xp.where(nan, _first_equal([xp.isnan(v) for v in views], nan, xp), a)
        return m, a
    x = xp.stack(views, axis=0) if stacked is None else stacked()
    if is_torch_namespace(xp):
        import torch

        values, indices = torch.max(x, dim=0)
        return values, indices
    return xp.max(x, axis=0), argmax(x, axis=0)


def _first_equal(views: list[Any], y: Any, xp: Any) -> Any:
    """a = the first o with viewsₒ = y (y their maximum; NaN equals nothing), element-wise:
    a = e₀(1 + e₁(1 + ⋯(1 + e_{k−2}))) for eₒ = [viewsₒ ≠ y], small integers in place (NumPy:
    twice as fast as a running maximum and index)."""
    dtype = xp.uint8 if len(views) <= 256 else xp.int32
    a = xp.zeros(y.shape, dtype=dtype)
    for o in range(len(views) - 2, -1, -1):
        a += 1
        a *= views[o] != y
    return a


def spread_by_index(values: Any, index: Any, k: int, /, *, xp: Any = None) -> Any:
    """P (k, *values.shape) with P[o] = values where index = o, else 0, for integer
    ``index`` of values' shape in [0, k). PyTorch: zeros and one ``scatter_`` (two ops);
    elsewhere the comparison with 0..k−1 and a product (or ``where``), three."""
    xp = xp or array_namespace(values)
    if is_torch_namespace(xp):
        zeros = values.new_zeros((k, *values.shape))
        return zeros.scatter_(0, index[None, ...], values[None, ...])
    offsets = xp.arange(k, dtype=index.dtype, device=_device(index))
    hit = index == xp.reshape(offsets, (k,) + (1,) * index.ndim)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):  # NumPy's where branches
        return values * hit
    return xp.where(hit, values, 0.0)


def strided_view(
    x: Any, shape: tuple[int, ...], strides: tuple[int, ...], /, *, xp: Any = None
) -> Any:
    """The view V of C-contiguous x with V[i₀, i₁, …] = x.flat[Σₖ iₖ·stridesₖ] (strides in
    elements), where the library makes one: NumPy (read-only) and CuPy ``as_strided``,
    PyTorch ``Tensor.as_strided``; None elsewhere, or for x not C-contiguous. Its elements
    may overlap: never write into it. ``ValueError`` for a view reaching outside x."""
    xp = xp or array_namespace(x)
    if is_torch_namespace(xp):
        contiguous = x.is_contiguous()
    elif is_numpy_namespace(xp) or is_cupy_namespace(xp):
        contiguous = x.flags.c_contiguous
    else:
        return None
    extent = sum((n - 1) * step for n, step in zip(shape, strides, strict=True))
    if min(shape, default=1) > 0 and (min(strides, default=0) < 0 or extent >= math.prod(x.shape)):
        raise ValueError(f"a view of shape {shape}, strides {strides} reaches past {x.shape}")
    if not contiguous:
        return None
    if is_torch_namespace(xp):
        return x.as_strided(shape, strides)
    in_bytes = tuple(step * x.itemsize for step in strides)
    if is_cupy_namespace(xp):
        import cupy

        return cupy.lib.stride_tricks.as_strided(x, shape, in_bytes)
    import numpy as np

    return np.lib.stride_tricks.as_strided(x, shape, in_bytes, writeable=False)


def adam_update(
    p: Any,
    g: Any,
    u: Any,
    w: Any,
    betas: tuple[float, float],
    step: Any,
    eps: Any,
    /,
    *,
    in_place: bool = False,
) -> tuple[Any, Any, Any]:
    """(p − s·u′/(√w′ + ε), u′, w′) with u′ = β₁u + g and w′ = β₂w + g², for arrays of one
    shape and the scalars s = ``step`` and ε = ``eps`` (floats or 0-d arrays).

    ``in_place``: p, u and w are the caller's to overwrite (it reads them no more). On
    NumPy the results are then written into them, with one temporary: three in-cache
    passes fewer and no fresh buffers (g is only read). Otherwise, and on every other
    library, the ten standard operations, new arrays."""
    beta1, beta2 = betas
    if in_place and _writable_numpy(p, g, u, w):
        import numpy as np

        np.multiply(u, beta1, out=u)
        u += g
        np.multiply(w, beta2, out=w)
        t = np.multiply(g, g)
        w += t
        np.sqrt(w, out=t)
        t += eps
        np.divide(u, t, out=t)
        t *= step
        p -= t
        return p, u, w
    xp = array_namespace(p, g, u, w)
    u = beta1 * u + g
    w = beta2 * w + g * g
    return p - step * (u / (xp.sqrt(w) + eps)), u, w


def _writable_numpy(*arrays: Any) -> bool:
    """Whether every array is a writable NumPy array of the first one's dtype and shape."""
    import numpy as np

    first = arrays[0]
    return all(
        type(a) is np.ndarray
        and a.dtype == first.dtype
        and a.shape == first.shape
        and a.flags.writeable
        for a in arrays
    )


def writes_in_place(x: Any, /, *, xp: Any = None) -> bool:
    """Whether x's library writes results into existing arrays here (``out=``), so that a
    view of a buffer can receive them, and x is such a view (C-contiguous: its reshapes
    are views too): NumPy (a writable array), CuPy, and PyTorch outside ``torch.compile``
    (a tensor that needs no autograd). JAX has no views, the standard no ``out=``."""
    xp = xp or array_namespace(x)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        return bool(x.flags.c_contiguous and getattr(x.flags, "writeable", True))
    if is_torch_namespace(xp):
        import torch

        return not (x.requires_grad or torch.compiler.is_compiling()) and x.is_contiguous()
    return False


def writes_into(xp: Any, out: Any, shape: tuple[int, ...], *arrays: Any) -> bool:
    """Whether a result of ``shape`` computed from ``arrays`` can be written into ``out``:
    of that shape, the arrays' dtype and library (not a library's scalar or subclass)."""
    return (
        out is not None
        and tuple(out.shape) == shape
        and all(type(a) is type(out) and a.dtype == out.dtype for a in arrays)
        and writes_in_place(out, xp=xp)
    )


def sum_into(x: Any, axis: int | tuple[int, ...], out: Any, /, *, xp: Any = None) -> Any:
    """Σ x along ``axis``: written into ``out``, which is returned, where the library sums
    into a given array (:func:`writes_in_place`; the same reduction, so the same values)
    and ``out`` is of the result's shape and dtype; else the standard's ``sum``."""
    xp = xp or array_namespace(x)
    axes = tuple(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    if not writes_into(xp, out, shape, x):
        return xp.sum(x, axis=axis)
    if is_torch_namespace(xp):
        import torch

        return torch.sum(x, dim=axes, out=out)
    return host_library(xp).sum(x, axis=axis, out=out)


def host_library(xp: Any) -> Any:
    """NumPy or CuPy itself, for ``out=`` (which the compat namespaces need not pass on)."""
    if is_numpy_namespace(xp):
        import numpy

        return numpy
    import cupy

    return cupy
