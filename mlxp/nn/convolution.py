"""Convolution and pooling of images as pure functions of arrays (shapes in each docstring).

Owns the window arithmetic of convolutions and pools, forward and backward;
:mod:`mlxp.nn.functional` re-exports every public name (``F.conv2d``).

Images are NCHW: x (N, C, H, W). A window geometry is a kernel (kh, kw), a stride
(sh, sw), a padding ((top, bottom), (left, right)) and a dilation (dh, dw); the output
has OH = ⌊(H + top + bottom − dh(kh − 1) − 1)/sh⌋ + 1 rows (likewise OW). The shapes are
NCHW whatever the storage: a convolution stores its output batch innermost (C, H, W, N),
element-wise layers and pools keep that order, and the next convolution then reads its
windows as long contiguous runs (see :func:`_window_matrix`).
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from typing import Any

from array_api_compat import (
    array_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)
from array_api_compat import device as _device

from mlxp._compat import argmax, index_dtype, slice_add

__all__ = [
    "IM2COL_MAX_BYTES",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "pair",
]

IM2COL_MAX_BYTES = 256 * 2**20
"""Bound on the buffers that grow with the kernel area (kh·kw values per output element:
the window matrix of a convolution and its window gradients, the spread gradient of an
average pool): a batch that would exceed it is processed in chunks along N, each within
the bound (at least one image per chunk). The pools' forward passes need no such buffer."""

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]


def pair(value: int | tuple[int, int]) -> Pair:
    """(a, a) from an int a, (a, b) from a pair."""
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    return (int(value[0]), int(value[1]))


def _pads(padding: int | tuple[int, int] | Pads) -> Pads:
    """((top, bottom), (left, right)) from p, (ph, pw) or the pairs themselves."""
    rows, columns = pair(padding) if isinstance(padding, numbers.Integral) else padding
    return pair(rows), pair(columns)


def _out_size(x: Any, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, name: str) -> Pair:
    """(OH, OW), or a ValueError naming the shapes when the dilated kernel exceeds the input."""
    padded = tuple(x.shape[2 + a] + sum(pads[a]) for a in (0, 1))
    span = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1))
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"{name}: the (dilated) kernel {span} is larger than the padded input {padded} "
            f"(input of shape {tuple(x.shape)}, padding {pads})."
        )
    return ((padded[0] - span[0]) // stride[0] + 1, (padded[1] - span[1]) // stride[1] + 1)


def _pad(x: Any, pads: Pads, value: float, xp: Any, axes: Pair = (2, 3)) -> Any:
    """x (N, C, H, W) surrounded by ``value``: (N, C, H + top + bottom, W + left + right).

    ``axes`` names the image's (H, W) axes when they are not 2 and 3."""
    for axis, (before, after) in zip(axes, pads, strict=True):
        if before or after:
            shape = list(x.shape)
            blocks = []
            for size in (before, after):
                shape[axis] = size
                blocks.append(xp.full(tuple(shape), value, dtype=x.dtype, device=_device(x)))
            x = xp.concat([blocks[0], x, blocks[1]], axis=axis)
    return x


def _chunks(n: int, bytes_per_image: int, max_bytes: int) -> list[slice]:
    """Slices of the batch holding at most ``max_bytes`` of buffers each (≥ 1 image)."""
    per = max(1, max_bytes // max(1, bytes_per_image))
    return [slice(lo, min(lo + per, n)) for lo in range(0, n, per)]


def _nbytes(xp: Any, dtype: Any) -> int:
    return (xp.finfo(dtype) if xp.isdtype(dtype, "real floating") else xp.iinfo(dtype)).bits // 8


def _cat(parts: list[Any], xp: Any) -> Any:
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _rows(x: Any, rows: slice) -> Any:
    """x[rows] along the batch axis; x itself when that is all of it."""
    return x if rows.start == 0 and rows.stop == x.shape[0] else x[rows, ...]


def _unpad(x: Any, pads: Pads) -> Any:
    """The inverse of :func:`_pad`: crop the borders of x (N, C, Hp, Wp)."""
    (top, bottom), (left, right) = pads
    return x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]


def conv2d(
    x: Any,
    W: Any,
    b: Any = None,
    stride: int | Pair = 1,
    padding: int | Pair | Pads = 0,
    dilation: int | Pair = 1,
    *,
    max_bytes: int = IM2COL_MAX_BYTES,
    xp: Any = None,
) -> tuple[Any, Any]:
    """2-D cross-correlation of x (N, C, H, W) with W (K, C, kh, kw), plus b (K,) or None.

    y[n, k, h, w] = b[k] + Σ_{c,i,j} W[k, c, i, j] · x̃[n, c, h·sh + i·dh, w·sw + j·dw],
    x̃ the zero-padded input. The windows of x̃ form a matrix X̃ (C·kh·kw, OH·OW·N)
    (:func:`_window_matrix`), and Y = W̃X̃ is one matrix product, W̃ being W reshaped to
    (K, C·kh·kw). Returns (y (N, K, OH, OW), X̃); X̃ is None when the batch was processed
    in chunks (see :data:`IM2COL_MAX_BYTES`), and :func:`conv2d_backward` then extracts
    the windows again. ``padding`` is p, (ph, pw) or ((top, bottom), (left, right));
    ``xp`` overrides the namespace of x. y is a view of Y, stored batch innermost.
    """
    xp = xp or array_namespace(x)
    kernel, stride, pads, dilation = _geometry(W, stride, padding, dilation)
    out = _out_size(x, kernel, stride, pads, dilation, "conv2d")
    N, K = x.shape[0], W.shape[0]
    W2 = xp.reshape(W, (K, -1))
    parts, cols = [], None
    for rows in _chunks(N, _conv_bytes(W2, out, x, xp), max_bytes):
        cols = _window_matrix(_rows(x, rows), kernel, stride, pads, dilation, out, xp)
        Y = W2 @ cols if b is None else W2 @ cols + xp.reshape(b, (K, 1))
        parts.append(_batch_first(xp.reshape(Y, (K, *out, -1)), xp))
    return _cat(parts, xp), (cols if len(parts) == 1 else None)


def _geometry(W: Any, stride: Any, padding: Any, dilation: Any) -> tuple[Pair, Pair, Pads, Pair]:
    return (W.shape[2], W.shape[3]), pair(stride), _pads(padding), pair(dilation)


def _conv_bytes(W2: Any, out: Pair, x: Any, xp: Any) -> int:
    """Bytes per image of the window matrix and of the scatter index its adjoint may need."""
    index_bytes = _nbytes(xp, index_dtype(xp, _device(x)))
    return W2.shape[1] * out[0] * out[1] * (_nbytes(xp, x.dtype) + index_bytes)


def _window_regions(kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> list[tuple]:
    """For each kernel offset (i, j), row-major, the region of the padded batch-last images
    (C, Hp, Wp, N) that offset reads: rows i·dh + h·sh for h < OH, columns j·dw + w·sw for
    w < OW, every channel and image."""
    every = slice(None)
    return [
        (
            every,
            slice(i * dilation[0], i * dilation[0] + stride[0] * (out[0] - 1) + 1, stride[0]),
            slice(j * dilation[1], j * dilation[1] + stride[1] * (out[1] - 1) + 1, stride[1]),
            every,
        )
        for i, j in _offsets(kernel)
    ]


def _window_views(
    x: Any, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, out: Pair, fill: float, xp: Any
) -> list[Any]:
    """The windows of x (N, C, H, W) padded with ``fill``: for each kernel offset (i, j),
    row-major, the (C, OH, OW, N) strided slice x̃[:, i·dh + h·sh, j·dw + w·sw, :].

    The padded input is stored (C, Hp, Wp, N), batch innermost, so each slice's rows are
    runs of N (OW·N for stride 1) contiguous values: no gather, and long copies."""
    images = _pad(_batch_last(x, xp), pads, fill, xp, axes=(1, 2))
    return [images[region] for region in _window_regions(kernel, stride, dilation, out)]


def _window_matrix(
    x: Any, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, out: Pair, xp: Any
) -> Any:
    """X̃ (C·kh·kw, OH·OW·N) of x (N, C, H, W): X̃[(c, i, j), (h, w, n)] = x̃[n, c, h·sh + i·dh,
    w·sw + j·dw], the kh·kw window views (:func:`_window_views`) stacked."""
    N, C = x.shape[0], x.shape[1]
    views = _window_views(x, kernel, stride, pads, dilation, out, 0.0, xp)
    return xp.reshape(xp.stack(views, axis=1), (C * kernel[0] * kernel[1], out[0] * out[1] * N))


def _batch_last(x: Any, xp: Any) -> Any:
    """x (N, C, H, W) as (C, H, W, N), stored in that order (a copy unless it already is).

    Flattening and unflattening is the standard's way to ask for row-major storage: free
    when the permuted view is already contiguous, one copy otherwise."""
    images = xp.permute_dims(x, (1, 2, 3, 0))
    return xp.reshape(xp.reshape(images, (-1,)), images.shape)


def _batch_first(images: Any, xp: Any) -> Any:
    """(C, H, W, N) → (N, C, H, W), a view."""
    return xp.permute_dims(images, (3, 0, 1, 2))


def conv2d_backward(
    x: Any,
    W: Any,
    grad: Any,
    stride: int | Pair = 1,
    padding: int | Pair | Pads = 0,
    dilation: int | Pair = 1,
    *,
    cols: Any = None,
    bias: bool = True,
    input_grad: bool = True,
    max_bytes: int = IM2COL_MAX_BYTES,
    xp: Any = None,
) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂W, ∂L/∂b) of :func:`conv2d` for g = ∂L/∂y (N, K, OH, OW).

    With G = g as (K, OH·OW·N): ∂L/∂W̃ = G X̃ᵀ, ∂L/∂b = Σ_{n,h,w} g, and the window
    gradients ∂L/∂X̃ = W̃ᵀG are summed back into the pixels they were taken from, one
    strided slice per kernel offset (:func:`~mlxp._compat.slice_add`), then the padding
    is cropped. ``cols`` is the X̃ returned by the forward pass (None: extracted again).
    ∂L/∂x is None with ``input_grad=False``, ∂L/∂b None with ``bias=False``.
    """
    xp = xp or array_namespace(grad)
    kernel, stride, pads, dilation = _geometry(W, stride, padding, dilation)
    N, C, H, Wd = x.shape
    K, out = W.shape[0], (grad.shape[2], grad.shape[3])
    W2 = xp.reshape(W, (K, -1))
    padded = (C, H + sum(pads[0]), Wd + sum(pads[1]))
    regions = _window_regions(kernel, stride, dilation, out)
    whole = cols is not None
    chunks = [slice(0, N)] if whole else _chunks(N, _conv_bytes(W2, out, x, xp), max_bytes)
    dW, dx_parts = None, []
    for rows in chunks:
        g = _rows(grad, rows)
        n = g.shape[0]
        G = xp.reshape(xp.permute_dims(g, (1, 2, 3, 0)), (K, -1))
        if cols is None:
            X = _window_matrix(_rows(x, rows), kernel, stride, pads, dilation, out, xp)
        else:
            X = cols
        # (X̃ Gᵀ)ᵀ rather than G X̃ᵀ: X̃ is the larger operand, and BLAS reads it untransposed
        part = xp.matrix_transpose(X @ xp.matrix_transpose(G))
        dW = part if dW is None else dW + part
        if input_grad:
            dX = xp.reshape(xp.matrix_transpose(W2) @ G, (C, len(regions), *out, n))
            parts = [dX[:, a, ...] for a in range(len(regions))]
            images = slice_add((*padded, n), regions, parts, xp=xp)
            dx_parts.append(_unpad(_batch_first(images, xp), pads))
    dx = _cat(dx_parts, xp) if input_grad else None
    db = xp.sum(grad, axis=(0, 2, 3)) if bias else None
    return dx, xp.reshape(dW, W.shape), db


# --------------------------------------------------------------------------- pooling
def _pool_geometry(kernel_size: Any, stride: Any, padding: Any) -> tuple[Pair, Pair, Pads]:
    kernel = pair(kernel_size)
    return kernel, kernel if stride is None else pair(stride), _pads(padding)


def _pool_windows(x: Any, kernel: Pair, stride: Pair, pads: Pads, fill: float, xp: Any, name: str):
    """The output size (OH, OW) and the window views (:func:`_window_views`) of a pool."""
    out = _out_size(x, kernel, stride, pads, (1, 1), name)
    return out, _window_views(x, kernel, stride, pads, (1, 1), out, fill, xp)


def max_pool2d(
    x: Any,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    *,
    return_indices: bool = False,
    xp: Any = None,
) -> Any:
    """y[n, c, h, w] = max_{i,j} x̃[n, c, h·sh + i, w·sw + j], x̃ padded with −∞.

    x is (N, C, H, W), y (N, C, OH, OW); stride defaults to the kernel size. Computed as
    an element-wise maximum of strided views, one per offset (i, j). With ``return_indices``,
    (y, a) where a[c, h, w, n] (batch last) is the row-major offset i·kw + j of the
    first maximum of each window: the views stacked once, reduced by max and argmax.
    """
    xp = xp or array_namespace(x)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    _, views = _pool_windows(x, kernel, stride, pads, -math.inf, xp, "max_pool2d")
    if not return_indices:
        return _batch_first(functools.reduce(xp.maximum, views), xp)
    if is_numpy_namespace(xp):  # its argmax along a leading axis is slow: a running maximum
        y, a = views[0], xp.zeros(views[0].shape, dtype=xp.int32)
        for o, view in enumerate(views[1:], start=1):
            better = view > y
            y, a = xp.maximum(y, view), a + better * (o - a)
        return _batch_first(y, xp), a
    stacked = xp.stack(views, axis=0)
    return _batch_first(xp.max(stacked, axis=0), xp), argmax(stacked, axis=0)


def _offsets(kernel: Pair) -> list[Pair]:
    """The kernel offsets (i, j) in row-major order."""
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]


def max_pool2d_backward(
    x: Any,
    y: Any,
    grad: Any,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    *,
    indices: Any = None,
    xp: Any = None,
) -> Any:
    """∂L/∂x of :func:`max_pool2d` for input x: each g[n, c, h, w] goes to the first
    maximum of its window in row-major order (as PyTorch), summed where windows overlap;
    y is not read. ``indices``: the forward's argmax offsets a (``return_indices``),
    else found again. The offset gradients g ⊙ [a = o] are computed at once; windows
    that tile the image interleave into it with one copy, others are added into their
    strided slices (:func:`~mlxp._compat.slice_add`)."""
    xp = xp or array_namespace(grad)
    if indices is None:
        _, indices = max_pool2d(x, kernel_size, stride, padding, return_indices=True, xp=xp)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    N, C, H, W = x.shape
    k, out = kernel[0] * kernel[1], (grad.shape[2], grad.shape[3])
    offsets = xp.arange(k, dtype=indices.dtype, device=_device(indices))
    hit, g = indices == offsets[:, None, None, None, None], xp.permute_dims(grad, (1, 2, 3, 0))
    bools = any(f(xp) for f in (is_numpy_namespace, is_cupy_namespace, is_torch_namespace))
    parts = g * hit if bools else xp.where(hit, g, 0.0)  # NumPy's where branches
    if stride == kernel and pads == ((0, 0), (0, 0)):
        blocks = xp.permute_dims(xp.reshape(parts, (*kernel, C, *out, N)), (2, 3, 0, 4, 1, 5))
        images = xp.reshape(blocks, (C, out[0] * kernel[0], out[1] * kernel[1], N))
        rest = ((0, H - images.shape[1]), (0, W - images.shape[2]))
        return _batch_first(_pad(images, rest, 0.0, xp, axes=(1, 2)), xp)
    padded = (C, H + sum(pads[0]), W + sum(pads[1]), N)
    regions, parts = _window_regions(kernel, stride, (1, 1), out), [parts[a, ...] for a in range(k)]
    return _unpad(_batch_first(slice_add(padded, regions, parts, xp=xp), xp), pads)


def avg_pool2d(
    x: Any,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    *,
    xp: Any = None,
) -> Any:
    """y[n, c, h, w] = (1/(kh·kw)) Σ_{i,j} x̃[n, c, h·sh + i, w·sw + j], x̃ zero-padded.

    The padding counts in the mean (PyTorch's ``count_include_pad=True``). x is
    (N, C, H, W), y (N, C, OH, OW); stride defaults to the kernel size. Summed over
    the kh·kw offsets (i, j) of strided views, as :func:`max_pool2d`.
    """
    xp = xp or array_namespace(x)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    _, views = _pool_windows(x, kernel, stride, pads, 0.0, xp, "avg_pool2d")
    return _batch_first(functools.reduce(operator.add, views) / (kernel[0] * kernel[1]), xp)


def avg_pool2d_backward(
    x_shape: tuple[int, ...],
    grad: Any,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    *,
    max_bytes: int = IM2COL_MAX_BYTES,
    xp: Any = None,
) -> Any:
    """∂L/∂x (``x_shape``) of :func:`avg_pool2d`: g[n, c, h, w]/(kh·kw) added to every
    pixel of its window (summed where windows overlap), the padding cropped.

    The same g/(kh·kw) goes into each offset's strided slice of the padded input
    (:func:`~mlxp._compat.slice_add`); chunks along N bound the portable fallback's
    scatter buffers (kh·kw values per output element)."""
    xp = xp or array_namespace(grad)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    N, C, H, W = x_shape
    out, size = (grad.shape[2], grad.shape[3]), kernel[0] * kernel[1]
    regions = _window_regions(kernel, stride, (1, 1), out)
    bytes_per = _nbytes(xp, grad.dtype) + _nbytes(xp, index_dtype(xp, _device(grad)))
    parts = []
    for rows in _chunks(N, C * out[0] * out[1] * size * bytes_per, max_bytes):
        g = xp.permute_dims(_rows(grad, rows), (1, 2, 3, 0)) / size
        padded = (C, H + sum(pads[0]), W + sum(pads[1]), g.shape[3])
        images = slice_add(padded, regions, [g] * size, xp=xp)
        parts.append(_unpad(_batch_first(images, xp), pads))
    return _cat(parts, xp)
