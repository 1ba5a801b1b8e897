"""Convolution kernels a library has and the standard lacks: each function gives the
library's own result, or None where it has none, and the caller
(:mod:`mlxp.nn.convolution`) then computes in standard operations (windows and matrix
products). PyTorch's are oneDNN's on a CPU and cuDNN's on CUDA: the forward pass one
kernel, where the matrix-product route copies every window (kh·kw times the input's
memory, kept for the backward pass) and multiplies, and the backward pass one, where that
route takes two or three (products, a sum, a transposed convolution).

Images are NCHW: x (N, C, H, W), weights W (K, C, kh, kw); a geometry is a stride
(sh, sw), a padding ((top, bottom), (left, right)) and a dilation (dh, dw), as in
:mod:`mlxp.nn.convolution`. PyTorch pads each side of an axis alike, so a padding with
top ≠ bottom or left ≠ right (``padding="same"`` with an even kernel) is left to the
caller.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_torch_namespace

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d"]

Pair = tuple[int, int]


def _symmetric(pads: tuple[Pair, Pair]) -> Pair | None:
    """(ph, pw) where each axis is padded alike on both sides, else None."""
    (top, bottom), (left, right) = pads
    return (top, left) if top == bottom and left == right else None


def conv2d(
    x: Any, W: Any, b: Any, stride: Pair, pads: tuple[Pair, Pair], dilation: Pair, *, xp: Any
) -> Any:
    """y (N, K, OH, OW) = b[k] + Σ_{c,i,j} W[k, c, i, j] · x̃[n, c, h·sh + i·dh, w·sw + j·dw]
    (b None: no bias) by the library's own convolution: PyTorch's ``conv2d`` where the
    padding is symmetric, its output copied to be stored batch innermost as
    :func:`mlxp.nn.convolution.conv2d` stores its own (the layers after it then read and
    write one layout: PyTorch's ReLU gradient over two ran 6× slower); None elsewhere (and
    for any ``xp`` but PyTorch's namespace).

    Not JAX's ``lax.conv_general_dilated``: on a CPU its compiled CNN epoch took 9× the
    window-matrix route's time (LeNet at width 8)."""
    padding = _symmetric(pads)
    if padding is None or not is_torch_namespace(xp):
        return None
    import torch

    y = torch.nn.functional.conv2d(x, W, b, stride, padding, dilation)
    return y.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def conv2d_backward(
    x: Any,
    W: Any,
    grad: Any,
    stride: Pair,
    pads: tuple[Pair, Pair],
    dilation: Pair,
    *,
    bias: bool,
    input_grad: bool,
    xp: Any,
) -> tuple[Any, Any, Any] | None:
    """(∂L/∂x, ∂L/∂W, ∂L/∂b) of :func:`conv2d` for g = ∂L/∂y (N, K, OH, OW), ∂L/∂x None
    without ``input_grad`` and ∂L/∂b None without ``bias``: PyTorch's
    ``convolution_backward``, all three in one operation, where the padding is symmetric;
    None elsewhere."""
    padding = _symmetric(pads)
    if padding is None or not is_torch_namespace(xp):
        return None
    import torch

    dx, dW, db = torch.ops.aten.convolution_backward(
        grad,
        x,
        W,
        [W.shape[0]] if bias else None,
        list(stride),
        list(padding),
        list(dilation),
        False,  # not transposed
        [0, 0],
        1,  # groups
        [input_grad, True, bias],
    )
    return dx, dW, db


def conv_transpose2d(g: Any, W: Any, stride: Pair, dilation: Pair, extra: Pair) -> Any:
    """The transposed convolution of g (N, K, OH, OW) with W (K, C, kh, kw), unpadded, with
    ``extra`` rows and columns no window reaches, by the library's own kernel; None where
    it has none (the caller then folds the window gradients in standard operations)."""
    if not is_torch_namespace(array_namespace(g)):
        return None
    import torch

    return torch.nn.functional.conv_transpose2d(
        g, W, stride=stride, dilation=dilation, output_padding=extra
    )
