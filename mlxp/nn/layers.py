"""Layers: parameter holders with ``forward`` and ``backward`` (math in :mod:`mlxp.nn.functional`).

A layer's parameters live in ``layer.params`` (a dict of arrays) and, after
``backward``, their gradients in ``layer.grads`` under the same names. Parameters
are created by ``initialize`` with the portable generator, so that a seed fixes
them on every backend; ``forward`` caches what ``backward`` needs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._compat import Generator
from mlxp.nn import functional as F
from mlxp.nn.init import INITIALIZERS

__all__ = [
    "GELU",
    "AvgPool2D",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


def _check_real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a real number in the interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a real number; got {value!r}.")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}; got {value!r}.")


class Layer:
    """Base class: no parameters, identity ``initialize``; subclasses override the rest.

    ``get_config()`` returns the constructor arguments (JSON types only), so a model
    file can rebuild the layer without running any stored code.
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}  # state that is saved but not trained

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        """Create the parameters (and buffers) on ``device`` in ``dtype``."""

    def forward(self, x: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer y = xW + b.

    ``params["W"]`` has shape (in_features, out_features) and ``params["b"]`` shape
    (out_features,); W is drawn by ``init`` (see :mod:`mlxp.nn.init`), b starts at 0.
    """

    def __init__(
        self, in_features: int, out_features: int, *, init: str = "glorot_uniform"
    ) -> None:
        super().__init__()
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {tuple(INITIALIZERS)}; got {init!r}.")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        self.in_features, self.out_features = in_features, out_features
        self.init = init

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        shape = (self.in_features, self.out_features)
        self.params["W"] = INITIALIZERS[self.init](
            rng, shape, self.in_features, self.out_features, xp=xp, device=device, dtype=dtype
        )
        self.params["b"] = xp.zeros((self.out_features,), dtype=dtype, device=device)

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense expects input of shape (n, {self.in_features}); got {tuple(x.shape)}."
            )
        self._x = x
        return F.dense(x, self.params["W"], self.params["b"])

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        """Fill ``grads``; return ∂L/∂x, or None with ``input_grad=False`` (a first layer,
        whose input needs no gradient: that saves a third of its backward cost)."""
        dx, dW, db = F.dense_backward(self._x, self.params["W"], grad_out, input_grad=input_grad)
        self.grads = {"W": dW, "b": db}
        return dx

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
        }


# --------------------------------------------------------------------------- activations
class ReLU(Layer):
    """y = max(x, 0), element-wise; any shape."""

    def forward(self, x: Any, training: bool = False) -> Any:
        self._x = x
        return F.relu(x)

    def backward(self, grad_out: Any) -> Any:
        return F.relu_backward(self._x, grad_out)


class LeakyReLU(Layer):
    """y = x for x > 0, else a·x with a = ``negative_slope``; any shape."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        _check_real("negative_slope", negative_slope, low_open=True, high_open=True)
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any, training: bool = False) -> Any:
        self._x = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out: Any) -> Any:
        return F.leaky_relu_backward(self._x, grad_out, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """y = σ(x) = 1/(1 + e⁻ˣ), element-wise, computed without overflow; any shape."""

    def forward(self, x: Any, training: bool = False) -> Any:
        self._y = F.sigmoid(x)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        return F.sigmoid_backward(self._y, grad_out)


class Tanh(Layer):
    """y = tanh(x), element-wise; any shape."""

    def forward(self, x: Any, training: bool = False) -> Any:
        self._y = F.tanh(x)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        return F.tanh_backward(self._y, grad_out)


class GELU(Layer):
    """y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), element-wise; any shape.

    The tanh approximation of x·Φ(x) (PyTorch's ``GELU(approximate="tanh")``): the
    exact form needs erf, which the Array API standard does not define.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        self._x = x
        return F.gelu(x)

    def backward(self, grad_out: Any) -> Any:
        return F.gelu_backward(self._x, grad_out)


class Softmax(Layer):
    """y = exp(x − logsumexp(x)) along ``axis``; any shape. Backward: s ⊙ (g − Σ g ⊙ s)."""

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"axis must be an int; got {axis!r}.")
        self.axis = int(axis)

    def forward(self, x: Any, training: bool = False) -> Any:
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(
                f"axis {self.axis} is out of range for input of shape {tuple(x.shape)}."
            )
        self._y = F.softmax(x, axis=self.axis)
        return self._y

    def backward(self, grad_out: Any) -> Any:
        return F.softmax_backward(self._y, grad_out, axis=self.axis)

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


# --------------------------------------------------------------------------- regularisation
class Dropout(Layer):
    """Inverted dropout: in training y = x ⊙ m/(1 − p), m ~ Bernoulli(1 − p); else y = x.

    The mask is drawn at each training forward from the generator given to
    ``initialize`` (uᵢ ~ U[0, 1), mᵢ = [uᵢ ≥ p]), so a seed fixes it on every backend.
    Any input shape; scaling by 1/(1 − p) keeps the expected output equal to x.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        _check_real("p", p, low=0.0, high=1.0, high_open=True)
        self.p = float(p)
        self._rng: Generator | None = None
        self._mask: Any = None

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        self._rng = rng

    def forward(self, x: Any, training: bool = False) -> Any:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        if self._rng is None:
            raise RuntimeError("Dropout needs a generator: call initialize(rng, ...) first.")
        xp = array_namespace(x)
        u = self._rng.uniform(tuple(x.shape), xp=xp, device=_device(x), dtype=x.dtype)
        self._mask = xp.astype(u >= self.p, x.dtype) / (1 - self.p)
        return x * self._mask

    def backward(self, grad_out: Any) -> Any:
        return grad_out if self._mask is None else grad_out * self._mask

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}


class _BatchNorm(Layer):
    """Batch normalisation over the channels (axis 1); subclasses fix the input ranks.

    y = γ (x − μ)/√(σ² + ε) + β per channel. In training μ, σ² are the batch mean
    and biased variance, and the buffers move towards the batch statistics:
    running_mean ← (1 − momentum)·running_mean + momentum·μ, and likewise
    running_var with the unbiased variance. In evaluation the running statistics
    are used. Parameters ``gamma`` (ones) and ``beta`` (zeros) and buffers
    ``running_mean`` (zeros) and ``running_var`` (ones) have shape (C,).
    """

    _ranks: tuple[int, ...] = ()
    _shapes = ""  # the accepted input shapes, for error messages; C is num_features

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if (
            isinstance(num_features, bool)
            or not isinstance(num_features, numbers.Integral)
            or num_features < 1
        ):
            raise ValueError(f"num_features must be a positive int; got {num_features!r}.")
        _check_real("momentum", momentum, low=0.0, high=1.0)
        _check_real("eps", eps, low=0.0, low_open=True, high_open=True)
        self.num_features = int(num_features)
        self.momentum, self.eps = float(momentum), float(eps)

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        shape = (self.num_features,)
        self.params["gamma"] = xp.ones(shape, dtype=dtype, device=device)
        self.params["beta"] = xp.zeros(shape, dtype=dtype, device=device)
        self.buffers["running_mean"] = xp.zeros(shape, dtype=dtype, device=device)
        self.buffers["running_var"] = xp.ones(shape, dtype=dtype, device=device)

    def forward(self, x: Any, training: bool = False) -> Any:
        name = type(self).__name__
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            shapes = self._shapes.replace("C", str(self.num_features))
            raise ValueError(f"{name} expects x of shape {shapes}; got {tuple(x.shape)}.")
        gamma, beta = self.params["gamma"], self.params["beta"]
        self._training = training
        if not training:
            y, self._x_hat, self._inv_std = F.batch_norm_eval(
                x,
                gamma,
                beta,
                self.buffers["running_mean"],
                self.buffers["running_var"],
                self.eps,
            )
            return y
        if math.prod(x.shape) // self.num_features < 2:
            raise ValueError(
                f"{name} needs more than one value per feature in training; "
                f"got x of shape {tuple(x.shape)}."
            )
        y, self._x_hat, self._inv_std, mean, var = F.batch_norm_train(x, gamma, beta, self.eps)
        m = self.momentum
        self.buffers["running_mean"] = (1 - m) * self.buffers["running_mean"] + m * mean
        self.buffers["running_var"] = (1 - m) * self.buffers["running_var"] + m * var
        return y

    def backward(self, grad_out: Any) -> Any:
        dx, d_gamma, d_beta = F.batch_norm_backward(
            self._x_hat, self._inv_std, self.params["gamma"], grad_out, self._training
        )
        self.grads = {"gamma": d_gamma, "beta": d_beta}
        return dx

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of x (n, C) or (n, C, L), as ``torch.nn.BatchNorm1d``.

    Statistics per feature (axis 1) over the n (and L) values; see :class:`_BatchNorm`.
    """

    _ranks = (2, 3)
    _shapes = "(n, C) or (n, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images x (N, C, H, W), as ``torch.nn.BatchNorm2d``.

    Statistics per channel over the N·H·W values; see :class:`_BatchNorm`.
    """

    _ranks = (4,)
    _shapes = "(N, C, H, W)"


# --------------------------------------------------------------------------- images (NCHW)
def _int_pair(name: str, value: Any, low: int) -> tuple[int, int]:
    """(a, b) from an int or a pair of ints, each ≥ ``low``; ValueError naming ``name``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low for v in items
    )
    if not ok:
        kind = "positive" if low == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int or a pair of them; got {value!r}.")
    return int(items[0]), int(items[1])


def _check_images(layer: Layer, x: Any, channels: int | None = None) -> None:
    """ValueError unless x is (N, C, H, W), with C = ``channels`` when given."""
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        expected = f"(N, {'C' if channels is None else channels}, H, W)"
        raise ValueError(
            f"{type(layer).__name__} expects input of shape {expected}; got {tuple(x.shape)}."
        )


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
        super().__init__()
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {tuple(INITIALIZERS)}; got {init!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False; got {bias!r}.")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _int_pair("kernel_size", kernel_size, 1)
        self.stride = _int_pair("stride", stride, 1)
        self.dilation = _int_pair("dilation", dilation, 1)
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"padding 'same' needs stride 1; got stride {self.stride}.")
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            self._pads = tuple((t // 2, t - t // 2) for t in total)
            self.padding: tuple[int, int] | str = "same"
        else:
            if isinstance(padding, str):
                raise ValueError(f"padding must be 'same', an int or a pair; got {padding!r}.")
            self.padding = _int_pair("padding", padding, 0)
            self._pads = tuple((p, p) for p in self.padding)
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

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x, self.in_channels)
        self._x = x
        y, cols = F.conv2d(
            x, self.params["W"], self.params.get("b"), self.stride, self._pads, self.dilation
        )
        self._cols = cols if training else None  # kept for backward only when training
        return y

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        """Fill ``grads``; return ∂L/∂x, or None with ``input_grad=False`` (a first layer)."""
        dx, dW, db = F.conv2d_backward(
            self._x,
            self.params["W"],
            grad_out,
            self.stride,
            self._pads,
            self.dilation,
            cols=self._cols,
            bias=self.bias,
            input_grad=input_grad,
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

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = _int_pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _int_pair("stride", stride, 1)
        self.padding = _int_pair("padding", padding, 0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"padding must be at most half the kernel size {self.kernel_size}; "
                f"got {self.padding}."
            )

    def _geometry(self) -> tuple[Any, ...]:
        return self.kernel_size, self.stride, self.padding

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
        self._x = x
        self._y = F.max_pool2d(x, *self._geometry())
        return self._y

    def backward(self, grad_out: Any) -> Any:
        return F.max_pool2d_backward(self._x, self._y, grad_out, *self._geometry())


class AvgPool2D(_Pool2D):
    """y[n, c, h, w] = mean over the window (kh, kw) at (h·sh, w·sw) of x (N, C, H, W),
    zero-padded, the padding counted (PyTorch's ``count_include_pad=True``); y is
    (N, C, OH, OW), OH = ⌊(H + 2ph − kh)/sh⌋ + 1."""

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x)
        self._shape = tuple(x.shape)
        return F.avg_pool2d(x, *self._geometry())

    def backward(self, grad_out: Any) -> Any:
        return F.avg_pool2d_backward(self._shape, grad_out, *self._geometry())


class GlobalAvgPool2D(Layer):
    """y[n, c] = mean_{h,w} x[n, c, h, w]: (N, C, H, W) → (N, C)."""

    def forward(self, x: Any, training: bool = False) -> Any:
        _check_images(self, x)
        self._shape = tuple(x.shape)
        return F.global_avg_pool2d(x)

    def backward(self, grad_out: Any) -> Any:
        return F.global_avg_pool2d_backward(self._shape, grad_out)


class Flatten(Layer):
    """(N, d₁, …, d_k) → (N, d₁·…·d_k), row-major (as ``torch.nn.Flatten``)."""

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim < 1:
            raise ValueError(f"Flatten expects input of shape (N, ...); got {tuple(x.shape)}.")
        self._shape = tuple(x.shape)
        return array_namespace(x).reshape(x, (x.shape[0], -1))

    def backward(self, grad_out: Any) -> Any:
        return array_namespace(grad_out).reshape(grad_out, self._shape)


class Reshape(Layer):
    """y = x reshaped to (n, *shape): e.g. flat rows (n, C·H·W) to images (n, C, H, W)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(v) for v in shape)

    def forward(self, x: Any, training: bool = False) -> Any:
        if math.prod(x.shape[1:]) != math.prod(self.shape):
            raise ValueError(
                f"Reshape to {self.shape} needs {math.prod(self.shape)} values per sample; "
                f"got input of shape {tuple(x.shape)}."
            )
        self._in_shape = tuple(x.shape)
        return array_namespace(x).reshape(x, (x.shape[0], *self.shape))

    def backward(self, grad_out: Any) -> Any:
        return array_namespace(grad_out).reshape(grad_out, self._in_shape)

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}
