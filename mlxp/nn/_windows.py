"""The window arithmetic shared by convolutions and pools (private: the names may change).

Images are NCHW: x (N, C, H, W). A window geometry is a kernel (kh, kw), a stride
(sh, sw), a padding ((top, bottom), (left, right)) and a dilation (dh, dw); the output
has OH = ⌊(H + top + bottom − dh(kh − 1) − 1)/sh⌋ + 1 rows (likewise OW). The shapes are
NCHW whatever the storage: a convolution stores its output batch innermost (C, H, W, N),
element-wise layers and pools keep that order, and the next convolution then reads its
windows as long contiguous runs (see :func:`window_matrix`). Also here: the chunks along
N that bound a batch's buffers.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from array_api_compat import device as _device

from mlxp._kernels import strided_view

__all__ = [
    "Pads",
    "Pair",
    "as_pads",
    "batch_chunks",
    "batch_first",
    "batch_last",
    "batch_rows",
    "concat_batches",
    "crop",
    "nbytes",
    "offsets",
    "out_size",
    "pad_images",
    "padded_images",
    "pair",
    "window_matrix",
    "window_regions",
    "window_stack",
]

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]


def pair(value: int | tuple[int, int] | Sequence[int]) -> Pair:
    """(a, a) from an int a, (a, b) from a pair (or a list of two)."""
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    assert not isinstance(value, int)  # for the type checker: an Integral is handled
    return (int(value[0]), int(value[1]))


def as_pads(padding: int | tuple[int, int] | Pads) -> Pads:
    """((top, bottom), (left, right)) from p, (ph, pw) or the pairs themselves."""
    if isinstance(padding, numbers.Integral):
        return pair(int(padding)), pair(int(padding))
    assert not isinstance(padding, int)
    rows, columns = padding
    return pair(rows), pair(columns)


def out_size(x: Any, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, name: str) -> Pair:
    """(OH, OW), or a ValueError naming the shapes when the dilated kernel exceeds the input."""
    padded = tuple(x.shape[2 + a] + sum(pads[a]) for a in (0, 1))
    span = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1))
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"{name}: the (dilated) kernel {span} is larger than the padded input {padded} "
            f"(input of shape {tuple(x.shape)}, padding {pads})."
        )
    return ((padded[0] - span[0]) // stride[0] + 1, (padded[1] - span[1]) // stride[1] + 1)


def pad_images(x: Any, pads: Pads, value: float, xp: Any, axes: Pair = (2, 3)) -> Any:
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


def batch_chunks(n: int, bytes_per_image: int, max_bytes: int) -> list[slice]:
    """Slices of the batch holding at most ``max_bytes`` of buffers each (≥ 1 image)."""
    per = max(1, max_bytes // max(1, bytes_per_image))
    return [slice(lo, min(lo + per, n)) for lo in range(0, n, per)]


def nbytes(xp: Any, dtype: Any) -> int:
    """Bytes per element of ``dtype``."""
    info = xp.finfo(dtype) if xp.isdtype(dtype, "real floating") else xp.iinfo(dtype)
    return int(info.bits) // 8


def concat_batches(parts: list[Any], xp: Any) -> Any:
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def batch_rows(x: Any, rows: slice) -> Any:
    """x[rows] along the batch axis; x itself when that is all of it."""
    return x if rows.start == 0 and rows.stop == x.shape[0] else x[rows, ...]


def crop(x: Any, pads: Pads) -> Any:
    """The inverse of :func:`pad_images`: crop the borders of x (N, C, Hp, Wp)."""
    (top, bottom), (left, right) = pads
    return x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]


def window_regions(
    kernel: Pair, stride: Pair, dilation: Pair, out: Pair
) -> list[tuple[slice, ...]]:
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
        for i, j in offsets(kernel)
    ]


def padded_images(x: Any, pads: Pads, fill: float, xp: Any) -> Any:
    """x (N, C, H, W) padded with ``fill`` and stored batch innermost: (C, Hp, Wp, N), so
    that each window's rows are runs of N (OW·N for stride 1) contiguous values."""
    return pad_images(batch_last(x, xp), pads, fill, xp, axes=(1, 2))


def window_stack(
    images: Any, kernel: Pair, stride: Pair, dilation: Pair, out: Pair, axis: int, xp: Any
) -> Any:
    """The window views of the padded images (C, Hp, Wp, N) (:func:`padded_images`) stacked
    along ``axis``, 0 or 1: S (kh·kw, C, OH, OW, N) or (C, kh·kw, OH, OW, N) with
    S[.., (i, j), ..][c, h, w, n] = images[c, i·dh + h·sh, j·dw + w·sw, n].

    Where the library has strided views (:func:`mlxp._kernels.strided_view`: NumPy, CuPy,
    PyTorch), one copy of the 6-D view of every window, on a GPU one kernel where the
    stack of kh·kw views takes up to one per view (PyTorch copies each view apart above
    4 dimensions, CuPy's concatenation of more than 8 first copies tables of the views'
    addresses and strides to the device); a view where no copy is needed (a 1×1 kernel).
    Elsewhere the standard's ``stack`` of the views."""
    C, Hp, Wp, N = images.shape
    (kh, kw), (sh, sw), (dh, dw), (OH, OW) = kernel, stride, dilation, out
    size = {"c": C, "i": kh, "j": kw, "h": OH, "w": OW, "n": N}
    step = {"c": Hp * Wp * N, "i": dh * Wp * N, "j": dw * N, "h": sh * Wp * N, "w": sw * N, "n": 1}
    order = "ijchwn" if axis == 0 else "cijhwn"
    shape, strides = tuple(size[a] for a in order), tuple(step[a] for a in order)
    view = strided_view(images, shape, strides, xp=xp)
    if view is None:
        regions = window_regions(kernel, stride, dilation, out)
        return xp.stack([images[region] for region in regions], axis=axis)
    stacked = (kh * kw, C, OH, OW, N) if axis == 0 else (C, kh * kw, OH, OW, N)
    return xp.reshape(view, stacked)


def window_matrix(
    x: Any, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, out: Pair, xp: Any
) -> Any:
    """X̃ (C·kh·kw, OH·OW·N) of x (N, C, H, W): X̃[(c, i, j), (h, w, n)] = x̃[n, c, h·sh + i·dh,
    w·sw + j·dw], the kh·kw windows of the zero-padded images stacked (:func:`window_stack`)."""
    N, C = x.shape[0], x.shape[1]
    images = padded_images(x, pads, 0.0, xp)
    stacked = window_stack(images, kernel, stride, dilation, out, 1, xp)
    return xp.reshape(stacked, (C * kernel[0] * kernel[1], out[0] * out[1] * N))


def batch_last(x: Any, xp: Any) -> Any:
    """x (N, C, H, W) as (C, H, W, N), stored in that order (a copy unless it already is).

    Flattening and unflattening is the standard's way to ask for row-major storage: free
    when the permuted view is already contiguous, one copy otherwise."""
    images = xp.permute_dims(x, (1, 2, 3, 0))
    return xp.reshape(xp.reshape(images, (-1,)), images.shape)


def batch_first(images: Any, xp: Any) -> Any:
    """(C, H, W, N) → (N, C, H, W), a view."""
    return xp.permute_dims(images, (3, 0, 1, 2))


def offsets(kernel: Pair) -> list[Pair]:
    """The kernel offsets (i, j) in row-major order."""
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
