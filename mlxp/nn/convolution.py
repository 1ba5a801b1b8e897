"""Convolution of images as a pure function of arrays, forward and backward (shapes in each
docstring); the pools are in :mod:`mlxp.nn.pooling`, the window arithmetic both share in
``mlxp.nn._windows``. :mod:`mlxp.nn.functional` re-exports every public name (``F.conv2d``).

Images are NCHW: x (N, C, H, W). A window geometry is a kernel (kh, kw), a stride
(sh, sw), a padding ((top, bottom), (left, right)) and a dilation (dh, dw); the output
has OH = ⌊(H + top + bottom − dh(kh − 1) − 1)/sh⌋ + 1 rows (likewise OW). The shapes are
NCHW whatever the storage: a convolution stores its output batch innermost (C, H, W, N),
and the next convolution reads its windows as long contiguous runs.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import (
    array_namespace,
    is_jax_namespace,
    is_numpy_namespace,
)
from array_api_compat import device as _device

from mlxp import _conv_kernels as own
from mlxp._compat import index_dtype, slice_add
from mlxp._kernels import sum_into, writes_in_place
from mlxp._products import addmm, matmul, matmul_into
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
    pair,
    window_matrix,
    window_regions,
)

__all__ = ["IM2COL_MAX_BYTES", "conv2d", "conv2d_backward", "pair"]

IM2COL_MAX_BYTES = 256 * 2**20
"""Bound on the buffers that grow with the kernel area (kh·kw values per output element:
the window matrix of a convolution and its window gradients, the spread gradient of an
average pool): a batch that would exceed it is processed in chunks along N, each within
the bound (at least one image per chunk). The pools' forward passes need no such buffer."""


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
    (:func:`window_matrix`), and Y = W̃X̃ is one matrix product, W̃ being W reshaped to
    (K, C·kh·kw). Returns (y (N, K, OH, OW), X̃); X̃ is None when the batch was processed
    in chunks (see :data:`IM2COL_MAX_BYTES`), and :func:`conv2d_backward` then extracts
    the windows again. ``padding`` is p, (ph, pw) or ((top, bottom), (left, right));
    ``xp`` overrides the namespace of x. y is a view of Y, stored batch innermost. Where
    the library has its own convolution (:func:`mlxp._conv_kernels.conv2d`: PyTorch, with
    a symmetric padding), (its y, stored so too, None).
    """
    xp = xp or array_namespace(x)
    kernel, stride, pads, dilation = _geometry(W, stride, padding, dilation)
    out = out_size(x, kernel, stride, pads, dilation, "conv2d")  # checks the geometry
    y = own.conv2d(x, W, b, stride, pads, dilation, xp=xp)
    if y is not None:
        return y, None
    N, K = x.shape[0], W.shape[0]
    W2 = xp.reshape(W, (K, -1))
    parts, cols = [], None
    for rows in batch_chunks(N, _conv_bytes(W2, out, x, xp), max_bytes):
        cols = window_matrix(batch_rows(x, rows), kernel, stride, pads, dilation, out, xp)
        Y = _matmul_add(W2, cols, b, xp)
        parts.append(batch_first(xp.reshape(Y, (K, *out, -1)), xp))
    return concat_batches(parts, xp), (cols if len(parts) == 1 else None)


def _matmul_add(A: Any, B: Any, b: Any, xp: Any) -> Any:
    """AB + b[:, None] (b None: AB), by :func:`mlxp._products.addmm`: one kernel on PyTorch,
    b added in place on NumPy."""
    return matmul(A, B, xp=xp) if b is None else addmm(xp.reshape(b, (-1, 1)), A, B, xp=xp)


def _geometry(W: Any, stride: Any, padding: Any, dilation: Any) -> tuple[Pair, Pair, Pads, Pair]:
    return (W.shape[2], W.shape[3]), pair(stride), as_pads(padding), pair(dilation)


def _conv_bytes(W2: Any, out: Pair, x: Any, xp: Any) -> int:
    """Bytes per image charged for the window matrix: a value and an index-sized word per
    entry (room for the window gradients beside it)."""
    index_bytes = nbytes(xp, index_dtype(xp, _device(x)))
    return int(W2.shape[1]) * out[0] * out[1] * (nbytes(xp, x.dtype) + index_bytes)


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
    out: Any = (None, None),
    xp: Any = None,
) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂W, ∂L/∂b) of :func:`conv2d` for g = ∂L/∂y (N, K, OH, OW).

    With G = g as (K, OH·OW·N): ∂L/∂W̃ = G X̃ᵀ and ∂L/∂b = Σ_{n,h,w} g. ∂L/∂x is the
    transposed convolution of g: the window gradients W̃ᵀG summed back into the pixels
    they were read from (:func:`_fold`, a few whole-buffer ops; on NumPy and JAX, added
    per kernel offset, :func:`_fold_in_place`; on PyTorch its own transposed convolution),
    the padding cropped. ``cols`` is the X̃ returned by the forward pass (None: extracted
    again). ∂L/∂x is None with ``input_grad=False``, ∂L/∂b None with ``bias=False``;
    buffers are bounded by ``max_bytes`` as in :func:`conv2d`. ``out``: arrays of the
    shapes of W and b that ∂L/∂W and ∂L/∂b are written into, and returned as, where the
    library can (:func:`mlxp._products.matmul_into`, :func:`mlxp._kernels.sum_into`; not
    ∂L/∂W on NumPy, whose faster product is the transposed one, nor over chunks). Where
    the library has its own (:func:`mlxp._conv_kernels.conv2d_backward`: PyTorch, with a
    symmetric padding), its three results, new arrays.
    """
    xp = xp or array_namespace(grad)
    geometry = _geometry(W, stride, padding, dilation)
    grads = own.conv2d_backward(x, W, grad, *geometry[1:], bias=bias, input_grad=input_grad, xp=xp)
    if grads is not None:
        return grads
    K, size = W.shape[0], (grad.shape[2], grad.shape[3])
    W2 = xp.reshape(W, (K, -1))
    chunks = [slice(0, x.shape[0])]
    if cols is None:
        chunks = batch_chunks(x.shape[0], _conv_bytes(W2, size, x, xp), max_bytes)
    into = None  # the (K, C·kh·kw) view of out[0] (contiguous: a reshape is a view)
    target = out[0] if out[0] is not None and tuple(out[0].shape) == tuple(W.shape) else None
    if target is not None and len(chunks) == 1 and writes_in_place(target, xp=xp):
        into = xp.reshape(target, (K, -1))
    dW = None
    for rows in chunks:
        G = _grad_matrix(batch_rows(grad, rows), xp)
        X = window_matrix(batch_rows(x, rows), *geometry, size, xp) if cols is None else cols
        part = _weight_product(G, X, xp, into)
        dW = part if dW is None else dW + part
    dx = _input_grad(tuple(x.shape), W, grad, geometry, max_bytes, xp) if input_grad else None
    db = sum_into(grad, (0, 2, 3), out[1], xp=xp) if bias else None
    return dx, target if into is not None and dW is into else xp.reshape(dW, W.shape), db


def _weight_product(G: Any, X: Any, xp: Any, into: Any = None) -> Any:
    """G X̃ᵀ (K, C·kh·kw). NumPy's BLAS is faster on (X̃ Gᵀ)ᵀ (X̃, the larger operand, read
    untransposed); elsewhere G X̃ᵀ, stored in the shape of W (no copy to reshape it), and
    written into ``into`` where the library can (:func:`mlxp._products.matmul_into`)."""
    if is_numpy_namespace(xp):
        return xp.matrix_transpose(X @ xp.matrix_transpose(G))
    return matmul_into(G, xp.matrix_transpose(X), into, xp=xp)


def _grad_matrix(g: Any, xp: Any) -> Any:
    """g (n, K, OH, OW) as G (K, OH·OW·n), batch innermost (a view of a convolution's output
    gradient stored so)."""
    return xp.reshape(xp.permute_dims(g, (1, 2, 3, 0)), (g.shape[1], -1))


def _input_grad(
    shape: tuple[int, ...],
    W: Any,
    grad: Any,
    geometry: tuple[Pair, Pair, Pads, Pair],
    max_bytes: int,
    xp: Any,
) -> Any:
    """∂L/∂x (``shape``) = the window gradients W̃ᵀG folded (:func:`_fold`), in chunks
    along N that keep the fold's buffers within ``max_bytes``; or the library's own
    transposed convolution onto the padded image, cropped
    (:func:`mlxp._conv_kernels.conv_transpose2d`: PyTorch, where its own ``conv2d_backward``
    is not used), the rows and columns no window reaches added as ``extra``."""
    kernel, stride, pads, dilation = geometry
    N, C, H, Wd = shape
    K, out = W.shape[0], (grad.shape[2], grad.shape[3])
    padded = (H + sum(pads[0]), Wd + sum(pads[1]))
    reach = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    extra = ((padded[0] - reach[0]) % stride[0], (padded[1] - reach[1]) % stride[1])
    images = own.conv_transpose2d(grad, W, stride, dilation, extra)  # the library's, if any
    if images is not None:
        return crop(images, pads)
    # NumPy adds in place with no launch cost, XLA fuses the slice additions of a compiled
    # step: both run them faster than the fold's padded copies
    in_place = is_numpy_namespace(xp) or is_jax_namespace(xp)
    fold = _fold_in_place if in_place else _fold
    # W̃ with its columns ordered (c, j, i) for the fold: it reads rows i next to image rows
    Wt = xp.reshape(W if in_place else xp.permute_dims(W, (0, 1, 3, 2)), (K, -1))
    per_image = C * kernel[0] * kernel[1] * out[1] * (out[0] * (1 + stride[0]) + padded[0] + 2)
    parts = []
    for rows in batch_chunks(N, per_image * nbytes(xp, grad.dtype), max_bytes):
        G = _grad_matrix(batch_rows(grad, rows), xp)
        windows = matmul(xp.matrix_transpose(Wt), G, xp=xp)
        images = fold(windows, C, kernel, stride, dilation, out, padded, xp)
        parts.append(crop(batch_first(images, xp), pads))
    return concat_batches(parts, xp)


def _fold(
    D: Any, C: int, kernel: Pair, stride: Pair, dilation: Pair, out: Pair, padded: Pair, xp: Any
) -> Any:
    """The adjoint of the window matrix: D (C·kw·kh, OH·OW·n), rows ordered (c, j, i),
    summed into the padded images (C, Hp, Wp, n) they were read from:
    x̃[c, h·sh + i·dh, w·sw + j·dw, n] += D[(c, j, i), (h, w, n)].

    Two skewed sums (:func:`_skew_sum`), first over the kernel rows i, then over its
    columns j: each spreads the output positions by the stride (zeros between), pads the
    rows to the length the skew needs, and sums the kh (or kw) shifted copies at once.
    """
    (kh, kw), (sh, sw), (dh, dw), (OH, OW), (Hp, Wp) = kernel, stride, dilation, out, padded
    n = D.shape[1] // (OH * OW)
    di, dj = (dh if kh > 1 else 0), (dw if kw > 1 else 0)
    rows = xp.reshape(D, (C * kw, kh, OH, OW * n))
    rows = _fit(_spread(rows, 2, sh, xp), 2, Hp + 1 + di, xp)
    summed = xp.reshape(_skew_sum(rows, di, xp), (C, kw, Hp + 1, OW, n))  # row Hp is zero
    columns = _fit(_spread(summed, 3, sw, xp), 3, Wp, xp)
    images = _skew_sum(xp.reshape(columns, (C, kw, (Hp + 1) * Wp, n)), dj, xp)
    return xp.reshape(images[:, : Hp * Wp, :], (C, Hp, Wp, n))


def _fold_in_place(
    D: Any, C: int, kernel: Pair, stride: Pair, dilation: Pair, out: Pair, padded: Pair, xp: Any
) -> Any:
    """:func:`_fold` for D with rows ordered (c, i, j): each kernel offset's window gradients
    added into their strided slice of the padded images (:func:`~mlxp._compat.slice_add`)."""
    regions = window_regions(kernel, stride, dilation, out)
    n = D.shape[1] // (out[0] * out[1])
    parts = xp.reshape(D, (C, len(regions), *out, n))
    shape = (C, *padded, n)
    return slice_add(shape, regions, [parts[:, a, ...] for a in range(len(regions))], xp=xp)


def _skew_sum(P: Any, d: int, xp: Any) -> Any:
    """S (M, R − d, B) with S[:, y] = Σ_i P[:, i, y − i·d] (terms outside P are zero), for
    P (M, k, R, B) whose entries at t > R − k·d − 1 along R are zero.

    Flattening each row block (k, R, B) and reading its first k(R − d)·B values as
    (k, R − d, B) shifts block i by i·d: what wraps from block i − 1 is its zero tail.
    """
    M, k, R, B = P.shape
    flat = xp.reshape(P, (M, k * R * B))[:, : k * (R - d) * B]
    return xp.sum(xp.reshape(flat, (M, k, R - d, B)), axis=1)


def _spread(x: Any, axis: int, step: int, xp: Any) -> Any:
    """x with step − 1 zeros after each entry along ``axis`` (its length times ``step``)."""
    if step == 1:
        return x
    shape = list(x.shape)
    shape.insert(axis + 1, step - 1)
    zeros = xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x))
    spread = xp.concat([xp.expand_dims(x, axis=axis + 1), zeros], axis=axis + 1)
    return xp.reshape(spread, (*x.shape[:axis], -1, *x.shape[axis + 1 :]))


def _fit(x: Any, axis: int, size: int, xp: Any) -> Any:
    """x cut, or zero-padded at the end, to ``size`` along ``axis``."""
    have = x.shape[axis]
    if have >= size:
        return x if have == size else x[(slice(None),) * axis + (slice(0, size),)]
    shape = list(x.shape)
    shape[axis] = size - have
    zeros = xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x))
    return xp.concat([x, zeros], axis=axis)
