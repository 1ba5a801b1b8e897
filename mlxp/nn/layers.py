"""Layers: parameter holders with ``forward`` and ``backward`` (math in :mod:`mlxp.nn.functional`).

Owns the base :class:`Layer` (its contract: parameters, buffers, the cache of the last forward,
which parameters are weights) and the layers of flat data: Dense, the activations, Dropout,
Flatten and Reshape. Batch normalisation is in :mod:`mlxp.nn.normalization`, the image layers
in :mod:`mlxp.nn.conv_layers`.

A layer's parameters live in ``layer.params`` (a dict of arrays) and, after ``backward``, their
gradients in ``layer.grads`` under the same names: where a training step binds
``layer.grad_out`` to views of its flat gradient buffer, into those arrays if the layer can
(Dense, Conv2D, where the library writes in place), saving a copy. Parameters are created by
``initialize`` with the portable generator, so that a seed fixes them on every backend;
``forward`` caches what ``backward`` needs, until ``clear_cache``; a training ``forward`` that
moves a buffer (BatchNorm's running statistics) hands its new value out through
``state_updates`` instead of writing it. Constructor arguments are checked against the layer's
``_parameter_constraints`` (see :mod:`mlxp._params`).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._compat import Generator
from mlxp._device import InitializesOnDevice
from mlxp._params import POSITIVE_INT, Interval, StrOptions, Tuples, validate_params
from mlxp.nn import functional as F
from mlxp.nn.init import INITIALIZERS

__all__ = [
    "GELU",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


class Layer(InitializesOnDevice):
    """Base class: no parameters, identity ``initialize``; subclasses override the rest.

    ``decayed`` names the parameters that are weights: weight decay shrinks them, the
    estimators' L2 penalty and ``coefs_`` count them; the other parameters (biases, scales) are
    neither. A layer with ``draws`` takes the uniforms of its random mask as ``forward(x,
    training, noise=u)`` (u ~ U[0, 1) of the shape of x), so that a training step receives its
    randomness instead of drawing it. A layer with ``batch_statistics`` computes statistics
    over the rows of a training batch (BatchNorm) and takes ``forward(x, training, rows=r)``, r
    (n,) of 0 or 1: the rows of weight 0 (a padded batch's padding) must not enter them.
    ``get_config()`` returns the constructor arguments (JSON types only), so a model file can
    rebuild the layer without running any stored code.
    """

    decayed: ClassVar[tuple[str, ...]] = ()
    draws: ClassVar[bool] = False  # True: training forward takes ``noise`` (Dropout)
    batch_statistics: ClassVar[bool] = False  # True: training forward takes ``rows``
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def __init__(self, **config: Any) -> None:
        """Check ``config`` (the subclass's constructor arguments) against its constraints."""
        validate_params(self, self._parameter_constraints, config)
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.grad_out: dict[str, Any] = {}  # where backward may write grads; bound per step
        self.buffers: dict[str, Any] = {}  # state that is saved but not trained
        self._cache: dict[str, Any] = {}  # what the last forward keeps for backward

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        """Create the parameters (and buffers) on ``device`` in ``dtype``."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter ``initialize`` creates, from the config alone."""
        return {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each buffer ``initialize`` creates, from the config alone."""
        return {}

    def attach(self, rng: Generator, params: dict[str, Any], buffers: dict[str, Any]) -> None:
        """Take ``params`` and ``buffers`` (of :meth:`param_shapes`, :meth:`buffer_shapes`,
        e.g. read from a model file) instead of drawing them: ``initialize`` without
        allocating. ``rng`` is the generator ``initialize`` would have been given."""
        self.params, self.buffers = dict(params), dict(buffers)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one sample's output for one sample's input of ``shape`` (no
        batch axis); ValueError if the layer cannot take it. Default: unchanged."""
        return tuple(shape)

    def mixes_rows(self, shape: tuple[int, ...]) -> bool:
        """Whether a row of the output depends on other rows of the input, for one sample's
        input of ``shape`` (training statistics apart: ``batch_statistics``). Such a model's
        batches are never padded. Default: False."""
        return False

    def forward(self, x: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """∂L/∂x for g = ∂L/∂y of the last ``forward``, after filling ``grads``; None with
        ``input_grad=False`` (a first layer, whose input needs no gradient), skipping it."""
        return self._input_grad(grad) if input_grad else None

    def _input_grad(self, grad: Any) -> Any:
        """∂L/∂x of a layer without parameters."""
        raise NotImplementedError

    def state_updates(self) -> dict[str, Any]:
        """The new values of buffers computed by the last training ``forward``, by buffer
        name; ``{}`` for a layer without any, or after ``clear_cache``. ``forward`` never
        writes ``buffers`` itself: the training step returns these as the model's new
        state, and a loop written by hand commits them
        (``layer.buffers.update(layer.state_updates())``)."""
        return {}

    def clear_cache(self) -> None:
        """Forget what the last ``forward`` kept for ``backward`` (its input, say) and the
        buffers' new values it handed out (:meth:`state_updates`)."""
        self._cache = {}

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

    decayed = ("W",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "in_features": [POSITIVE_INT],
        "out_features": [POSITIVE_INT],
        "init": [StrOptions(set(INITIALIZERS))],
    }

    def __init__(
        self, in_features: int, out_features: int, *, init: str = "glorot_uniform"
    ) -> None:
        super().__init__(in_features=in_features, out_features=out_features, init=init)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.init = init

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        shape = (self.in_features, self.out_features)
        self.params["W"] = INITIALIZERS[self.init](
            rng, shape, self.in_features, self.out_features, xp=xp, device=device, dtype=dtype
        )
        self.params["b"] = xp.zeros((self.out_features,), dtype=dtype, device=device)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.in_features, self.out_features), "b": (self.out_features,)}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(shape) != (self.in_features,):
            raise ValueError(
                f"Dense({self.in_features}, ...) cannot take samples of shape {shape}."
            )
        return (self.out_features,)

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense expects input of shape (n, {self.in_features}); got {tuple(x.shape)}."
            )
        self._cache = {"x": x}
        return F.dense(x, self.params["W"], self.params["b"])

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Fill ``grads`` (into ``grad_out``'s arrays where bound); return ∂L/∂x, or None
        with ``input_grad=False`` (a third of the backward cost saved)."""
        bound = getattr(self, "grad_out", {})  # absent from a layer pickled before it existed
        W, out = self.params["W"], (bound.get("W"), bound.get("b"))
        dx, dW, db = F.dense_backward(self._cache["x"], W, grad, input_grad=input_grad, out=out)
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
    """y = max(x, 0), element-wise; any shape. Backward reads the output: [y > 0] = [x > 0]."""

    def forward(self, x: Any, training: bool = False) -> Any:
        y = F.relu(x)
        self._cache = {"y": y}
        return y

    def _input_grad(self, grad: Any) -> Any:
        return F.relu_backward(self._cache["y"], grad)


class LeakyReLU(Layer):
    """y = x for x > 0, else a·x with a = ``negative_slope``; any shape."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "negative_slope": [Interval(Real, None, None, closed="neither")]
    }

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__(negative_slope=negative_slope)
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any, training: bool = False) -> Any:
        self._cache = {"x": x}
        return F.leaky_relu(x, self.negative_slope)

    def _input_grad(self, grad: Any) -> Any:
        return F.leaky_relu_backward(self._cache["x"], grad, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """y = σ(x) = 1/(1 + e⁻ˣ), element-wise, computed without overflow; any shape."""

    def forward(self, x: Any, training: bool = False) -> Any:
        y = F.sigmoid(x)
        self._cache = {"y": y}
        return y

    def _input_grad(self, grad: Any) -> Any:
        return F.sigmoid_backward(self._cache["y"], grad)


class Tanh(Layer):
    """y = tanh(x), element-wise; any shape."""

    def forward(self, x: Any, training: bool = False) -> Any:
        y = F.tanh(x)
        self._cache = {"y": y}
        return y

    def _input_grad(self, grad: Any) -> Any:
        return F.tanh_backward(self._cache["y"], grad)


class GELU(Layer):
    """y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), element-wise; any shape.

    The tanh approximation of x·Φ(x) (PyTorch's ``GELU(approximate="tanh")``): the
    exact form needs erf, which the Array API standard does not define.
    """

    def forward(self, x: Any, training: bool = False) -> Any:
        self._cache = {"x": x}
        return F.gelu(x)

    def _input_grad(self, grad: Any) -> Any:
        return F.gelu_backward(self._cache["x"], grad)


class Softmax(Layer):
    """y = exp(x − logsumexp(x)) along ``axis``; any shape. Backward: s ⊙ (g − Σ g ⊙ s)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "axis": [Interval(Integral, None, None, closed="neither")]
    }

    def __init__(self, axis: int = -1) -> None:
        super().__init__(axis=axis)
        self.axis = int(axis)

    def forward(self, x: Any, training: bool = False) -> Any:
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(
                f"axis {self.axis} is out of range for input of shape {tuple(x.shape)}."
            )
        y = F.softmax(x, axis=self.axis)
        self._cache = {"y": y}
        return y

    def _input_grad(self, grad: Any) -> Any:
        return F.softmax_backward(self._cache["y"], grad, axis=self.axis)

    def mixes_rows(self, shape: tuple[int, ...]) -> bool:
        return self.axis % (len(shape) + 1) == 0  # along the batch axis

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


# --------------------------------------------------------------------------- regularisation
class Dropout(Layer):
    """Inverted dropout: in training y = x ⊙ m/(1 − p), m ~ Bernoulli(1 − p); else y = x.

    The mask is mᵢ = [uᵢ ≥ p] for uniforms uᵢ ~ U[0, 1): given as ``noise`` (a training
    step draws a block of batches' uniforms at once), else drawn at the training
    forward from the generator given to ``initialize``; so a seed fixes it on every
    backend. Any input shape; scaling by 1/(1 − p) keeps the expected output equal to x.
    """

    draws = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "p": [Interval(Real, 0.0, 1.0, closed="left")]
    }

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.p = float(p)
        self._rng: Generator | None = None

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        self._rng = rng

    def attach(self, rng: Generator, params: dict[str, Any], buffers: dict[str, Any]) -> None:
        self._rng = rng

    def forward(self, x: Any, training: bool = False, noise: Any = None) -> Any:
        self._cache = {}
        if not training or self.p == 0.0:
            return x
        xp = array_namespace(x)
        if noise is None:
            if self._rng is None:
                raise RuntimeError("Dropout needs a generator: call initialize(rng, ...) first.")
            noise = self._rng.uniform(tuple(x.shape), xp=xp, device=_device(x), dtype=x.dtype)
        elif tuple(noise.shape) != tuple(x.shape):
            raise ValueError(
                f"Dropout noise of shape {tuple(noise.shape)} for input {tuple(x.shape)}."
            )
        self._cache = {"mask": xp.astype(noise >= self.p, x.dtype) / (1 - self.p)}
        return x * self._cache["mask"]

    def _input_grad(self, grad: Any) -> Any:
        return grad * self._cache["mask"] if "mask" in self._cache else grad

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}


# --------------------------------------------------------------------------- shapes
class Flatten(Layer):
    """(N, d₁, …, d_k) → (N, d₁·…·d_k), row-major (as ``torch.nn.Flatten``)."""

    def forward(self, x: Any, training: bool = False) -> Any:
        if x.ndim < 1:
            raise ValueError(f"Flatten expects input of shape (N, ...); got {tuple(x.shape)}.")
        self._cache = {"shape": tuple(x.shape)}
        return array_namespace(x).reshape(x, (x.shape[0], -1))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)

    def _input_grad(self, grad: Any) -> Any:
        return array_namespace(grad).reshape(grad, self._cache["shape"])


class Reshape(Layer):
    """y = x reshaped to ``(n, *shape)``: e.g. flat rows (n, C·H·W) to images (n, C, H, W)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "shape": [Tuples(POSITIVE_INT, min_length=1)]
    }

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape=shape)
        self.shape = tuple(int(v) for v in shape)

    def forward(self, x: Any, training: bool = False) -> Any:
        if math.prod(x.shape[1:]) != math.prod(self.shape):
            raise ValueError(
                f"Reshape to {self.shape} needs {math.prod(self.shape)} values per sample; "
                f"got input of shape {tuple(x.shape)}."
            )
        self._cache = {"shape": tuple(x.shape)}
        return array_namespace(x).reshape(x, (x.shape[0], *self.shape))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(shape) != math.prod(self.shape):
            raise ValueError(f"Reshape to {self.shape} cannot take samples of shape {shape}.")
        return self.shape

    _input_grad = Flatten._input_grad  # g back to the input's shape

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}
