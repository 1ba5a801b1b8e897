"""Max, average and global average pooling of images as pure functions (shapes in each docstring).

Owns the pools' forward and backward passes; the window arithmetic they share with the
convolutions is in ``mlxp.nn._windows``, and :mod:`mlxp.nn.functional` re-exports every
public name (``F.max_pool2d``). Images are NCHW: x (N, C, H, W), pooled in windows of
(kh, kw) moved by (sh, sw) over x padded by ((top, bottom), (left, right)); the output has
OH = ⌊(H + top + bottom − kh)/sh⌋ + 1 rows (likewise OW).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

from array_api_compat import (
    array_namespace,
)
from array_api_compat import device as _device

from mlxp._compat import index_dtype, slice_add
from mlxp._kernels import max_and_argmax, spread_by_index
from mlxp.nn._windows import (
    Pads,
    Pair,
    as_pads,
    batch_chunks,
    batch_first,
    batch_rows,
    concat_batches,
    crop,
    nbytes,
    out_size,
    pad_images,
    padded_images,
    pair,
    window_regions,
    window_stack,
)
from mlxp.nn.convolution import IM2COL_MAX_BYTES

__all__ = [
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
]


def _pool_geometry(kernel_size: Any, stride: Any, padding: Any) -> tuple[Pair, Pair, Pads]:
    kernel = pair(kernel_size)
    return kernel, kernel if stride is None else pair(stride), as_pads(padding)


def _pool_windows(
    x: Any, kernel: Pair, stride: Pair, pads: Pads, fill: float, xp: Any, name: str
) -> tuple[Pair, Any, list[Any]]:
    """The output size (OH, OW), the padded images (:func:`padded_images`) and their window
    views: for each offset (i, j), row-major, the (C, OH, OW, N) strided slice of the
    images it reads (no gather, and long copies)."""
    out = out_size(x, kernel, stride, pads, (1, 1), name)
    images = padded_images(x, pads, fill, xp)
    return out, images, [images[region] for region in window_regions(kernel, stride, (1, 1), out)]


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
    first maximum of each window (of its first NaN, if any, as PyTorch; on CuPy one of its
    NaNs), by :func:`mlxp._kernels.max_and_argmax` of the views (on PyTorch one op after
    their stack, which is one strided copy there and on CuPy,
    :func:`~mlxp.nn._windows.window_stack`; uint8 offsets on NumPy, int32 above 256).
    """
    xp = xp or array_namespace(x)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    out, images, views = _pool_windows(x, kernel, stride, pads, -math.inf, xp, "max_pool2d")
    if not return_indices:
        return batch_first(functools.reduce(xp.maximum, views), xp)

    def stacked() -> Any:
        return window_stack(images, kernel, stride, (1, 1), out, 0, xp)

    y, a = max_and_argmax(views, stacked=stacked, xp=xp)
    return batch_first(y, xp), a


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
    else found again. The offset gradients g ⊙ [a = o] are computed at once
    (:func:`mlxp._kernels.spread_by_index`); windows
    that tile the image interleave into it with one copy, others are added into their
    strided slices (:func:`~mlxp._compat.slice_add`)."""
    xp = xp or array_namespace(grad)
    if indices is None:
        _, indices = max_pool2d(x, kernel_size, stride, padding, return_indices=True, xp=xp)
    kernel, stride, pads = _pool_geometry(kernel_size, stride, padding)
    N, C, H, W = x.shape
    k, out = kernel[0] * kernel[1], (grad.shape[2], grad.shape[3])
    parts = spread_by_index(xp.permute_dims(grad, (1, 2, 3, 0)), indices, k, xp=xp)
    if stride == kernel and pads == ((0, 0), (0, 0)):
        blocks = xp.permute_dims(xp.reshape(parts, (*kernel, C, *out, N)), (2, 3, 0, 4, 1, 5))
        images = xp.reshape(blocks, (C, out[0] * kernel[0], out[1] * kernel[1], N))
        rest = ((0, H - images.shape[1]), (0, W - images.shape[2]))
        return batch_first(pad_images(images, rest, 0.0, xp, axes=(1, 2)), xp)
    padded = (C, H + sum(pads[0]), W + sum(pads[1]), N)
    regions, parts = window_regions(kernel, stride, (1, 1), out), [parts[a, ...] for a in range(k)]
    return crop(batch_first(slice_add(padded, regions, parts, xp=xp), xp), pads)


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
    _, _, views = _pool_windows(x, kernel, stride, pads, 0.0, xp, "avg_pool2d")
    return batch_first(functools.reduce(operator.add, views) / (kernel[0] * kernel[1]), xp)


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
    regions = window_regions(kernel, stride, (1, 1), out)
    bytes_per = nbytes(xp, grad.dtype) + nbytes(xp, index_dtype(xp, _device(grad)))
    parts = []
    for rows in batch_chunks(N, C * out[0] * out[1] * size * bytes_per, max_bytes):
        g = xp.permute_dims(batch_rows(grad, rows), (1, 2, 3, 0)) / size
        padded = (C, H + sum(pads[0]), W + sum(pads[1]), g.shape[3])
        images = slice_add(padded, regions, [g] * size, xp=xp)
        parts.append(crop(batch_first(images, xp), pads))
    return concat_batches(parts, xp)


def global_avg_pool2d(x: Any, /, *, xp: Any = None) -> Any:
    """y[n, c] = mean_{h,w} x[n, c, h, w]: (N, C, H, W) → (N, C)."""
    xp = xp or array_namespace(x)
    return xp.mean(x, axis=(2, 3))


def global_avg_pool2d_backward(x_shape: tuple[int, ...], grad: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂x[n, c, h, w] = g[n, c]/(H·W), of shape ``x_shape`` (N, C, H, W)."""
    xp = xp or array_namespace(grad)
    scale = 1 / (x_shape[2] * x_shape[3])
    return xp.broadcast_to(grad[:, :, None, None] * scale, tuple(x_shape))
