"""Image layers (NCHW): Conv2D, MaxPool2D, AvgPool2D and GlobalAvgPool2D.

Owns the layers' window arguments (int or pair, ``padding="same"``) and their checks;
the arithmetic is in :mod:`mlxp.nn.convolution` and :mod:`mlxp.nn.pooling`. The base
:class:`~mlxp.nn.layers.Layer` and the layers of flat data are in :mod:`mlxp.nn.layers`.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

from mlxp._compat import Generator
from mlxp._params import POSITIVE_INT, Interval, StrOptions, Tuples
from mlxp.exceptions import InvalidParameterError
from mlxp.nn import convolution as C
from mlxp.nn import functional as F
from mlxp.nn import pooling as P
from mlxp.nn.init import INITIALIZERS
from mlxp.nn.layers import Layer

__all__ = ["AvgPool2D", "Conv2D", "GlobalAvgPool2D", "MaxPool2D"]

_SIZE = [POSITIVE_INT, Tuples(POSITIVE_INT, 2)]
"""An int ≥ 1 or a pair of them (kernel sizes, strides, dilations)."""
_NON_NEGATIVE = Interval(Integral, 0, None, closed="left")
_OFFSET = [_NON_NEGATIVE, Tuples(_NON_NEGATIVE, 2)]
"""An int ≥ 0 or a pair of them (paddings)."""


def _check_images(layer: Layer, x: Any, channels: int | None = None) -> None:
    """ValueError unless x is (N, C, H, W), with C = ``channels`` when given."""
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        expected = f"(N, {'C' if channels is None else channels}, H, W)"
        raise ValueError(
            f"{type(layer).__name__} expects input of shape {expected}; got {tuple(x.shape)}."
        )


def _window_output(
    layer: Layer,
    shape: tuple[int, ...],
    channels: int | None,
    kernel: Any,
    stride: Any,
    pads: Any,
    dilation: Any = (1, 1),
) -> tuple[int, int]:
    """(OH, OW) of one sample (C, H, W) under windows ``kernel``; ValueError if it cannot be."""
    padded = [shape[1 + a] + sum(pads[a]) for a in (0, 1)] if len(shape) == 3 else []
    span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    if (
        not padded
        or (channels is not None and shape[0] != channels)
        or any(s > p for s, p in zip(span, padded, strict=True))
    ):
        raise ValueError(f"{layer!r} cannot take samples of shape {tuple(shape)}.")
    return tuple((padded[a] - span[a]) // stride[a] + 1 for a in (0, 1))


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch) of images x (N, C, H, W).

    y[n, o, h, w] = b[o] + Σ_{c,i,j} W[o, c, i, j] · x̃[n, c, h·sh + i·dh, w·sw + j·dw],
    x̃ the zero-padded input; y is (N, out_channels, OH, OW) with
    OH = ⌊(H + 2ph − dh(kh − 1) − 1)/sh⌋ + 1 (likewise OW). ``params["W"]`` has shape
    (out_channels, in_channels, kh, kw), ``params["b"]`` (out_channels,) (absent with
    ``bias=False``). W is drawn by ``init`` with fan_in = in_channels·kh·kw and
    fan_out = out_channels·kh·kw; b starts at 0. kernel_size, stride, padding and
    dilation are an int or a pair (rows, columns); ``padding="same"`` (stride 1 only)
    keeps H and W, padding dh(kh − 1) rows in all, one more at the bottom than at the
    top when that is odd (as PyTorch; likewise for columns).

    Example: ``Conv2D(1, 8, 5, padding="same")`` maps (N, 1, 28, 28) to (N, 8, 28, 28).
    """

    decayed = ("W",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "in_channels": [POSITIVE_INT],
        "out_channels": [POSITIVE_INT],
        "kernel_size": _SIZE,
        "stride": _SIZE,
        "padding": [StrOptions({"same"}), *_OFFSET],
        "dilation": _SIZE,
        "bias": [bool],
        "init": [StrOptions(set(INITIALIZERS))],
    }

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        init: str = "he_uniform",
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            init=init,
        )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = C.pair(kernel_size), C.pair(stride)
        self.dilation = C.pair(dilation)
        if padding == "same":
            if self.stride != (1, 1):
                raise InvalidParameterError(
                    "The 'padding' parameter of Conv2D may be 'same' only with stride 1; "
                    f"got stride {self.stride}."
                )
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            rows, columns = total
            self._pads = ((rows // 2, rows - rows // 2), (columns // 2, columns - columns // 2))
            self.padding: tuple[int, int] | str = "same"
        else:
            ph, pw = C.pair(padding)  # type: ignore[arg-type]  # not "same" here
            self.padding = (ph, pw)
            self._pads = ((ph, ph), (pw, pw))
        self.bias, self.init = bias, init

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        self.params = {
            "W": INITIALIZERS[self.init](
                rng, shape, fan_in, fan_out, xp=xp, device=device, dtype=dtype
            )
        }
        if self.bias:
            self.params["b"] = xp.zeros((self.out_channels,), dtype=dtype, device=device)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {
            "W": (self.out_channels, self.in_channels, *self.kernel_size)
        }
        return {**shapes, "b": (self.out_channels,)} if self.bias else shapes

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        geometry = self.kernel_size, self.stride, self._pads, self.dilation
        return (self.out_channels, *_window_output(self, shape, self.in_channels, *geometry))

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x, self.in_channels)
        y, cols = C.conv2d(
            x, self.params["W"], self.params.get("b"), self.stride, self._pads, self.dilation
        )
        self._cache = {"x": x, "cols": cols if training else None}  # X̃ only for training
        return y

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Fill ``grads`` (into ``grad_out``'s arrays where bound and the library can);
        return ∂L/∂x, or None with ``input_grad=False`` (a first layer)."""
        bound = getattr(self, "grad_out", {})  # absent from a layer pickled before it existed
        dx, dW, db = C.conv2d_backward(
            self._cache["x"],
            self.params["W"],
            grad,
            self.stride,
            self._pads,
            self.dilation,
            cols=self._cache["cols"],
            bias=self.bias,
            input_grad=input_grad,
            out=(bound.get("W"), bound.get("b")),
        )
        self.grads = {"W": dW} if db is None else {"W": dW, "b": db}
        return dx

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if self.padding == "same" else list(self.padding),
            "dilation": list(self.dilation),
            "bias": self.bias,
            "init": self.init,
        }


class _Pool2D(Layer):
    """Shared arguments of the pooling layers: windows of ``kernel_size``, moved by
    ``stride`` (default: the kernel size, windows side by side; smaller strides overlap),
    ``padding`` at most half the kernel on each side (as PyTorch)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "kernel_size": _SIZE,
        "stride": [None, *_SIZE],
        "padding": _OFFSET,
    }

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding)
        self.kernel_size = C.pair(kernel_size)
        self.stride = self.kernel_size if stride is None else C.pair(stride)
        self.padding = C.pair(padding)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise InvalidParameterError(
                f"The 'padding' parameter of {type(self).__name__} must be at most half the "
                f"kernel size {self.kernel_size}. Got {padding!r} instead."
            )

    def _geometry(self) -> tuple[Any, ...]:
        return self.kernel_size, self.stride, self.padding

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        pads = tuple((p, p) for p in self.padding)
        return (shape[0], *_window_output(self, shape, None, self.kernel_size, self.stride, pads))

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }


class MaxPool2D(_Pool2D):
    """y[n, c, h, w] = max over the window (kh, kw) at (h·sh, w·sw) of x (N, C, H, W),
    padded with −∞. Backward routes each gradient to the first maximum of its window
    (as PyTorch); y is (N, C, OH, OW), OH = ⌊(H + 2ph − kh)/sh⌋ + 1."""

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x)
        if not training:  # backward, if asked, finds the argmax again
            self._cache = {"x": x}
            return P.max_pool2d(x, *self._geometry())
        y, indices = P.max_pool2d(x, *self._geometry(), return_indices=True)
        self._cache = {"x": x, "indices": indices}
        return y

    def _input_grad(self, grad: Any) -> Any:
        x, indices = self._cache["x"], self._cache.get("indices")
        return P.max_pool2d_backward(x, None, grad, *self._geometry(), indices=indices)


class AvgPool2D(_Pool2D):
    """y[n, c, h, w] = mean over the window (kh, kw) at (h·sh, w·sw) of x (N, C, H, W),
    zero-padded, the padding counted (PyTorch's ``count_include_pad=True``); y is
    (N, C, OH, OW), OH = ⌊(H + 2ph − kh)/sh⌋ + 1."""

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x)
        self._cache = {"shape": tuple(x.shape)}
        return P.avg_pool2d(x, *self._geometry())

    def _input_grad(self, grad: Any) -> Any:
        return P.avg_pool2d_backward(self._cache["shape"], grad, *self._geometry())


class GlobalAvgPool2D(Layer):
    """y[n, c] = mean_{h,w} x[n, c, h, w]: (N, C, H, W) → (N, C)."""

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x)
        self._cache = {"shape": tuple(x.shape)}
        return F.global_avg_pool2d(x)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"GlobalAvgPool2D cannot take samples of shape {tuple(shape)}.")
        return (shape[0],)

    def _input_grad(self, grad: Any) -> Any:
        return F.global_avg_pool2d_backward(self._cache["shape"], grad)
