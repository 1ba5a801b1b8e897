"""The arithmetic of the layers and losses as pure functions of arrays (shapes in each docstring).

Each forward function has a matching ``*_backward`` that maps the gradient g of the
loss with respect to the output to the gradients with respect to the inputs and
parameters. Layers (:mod:`mlxp.nn.layers`) and losses (:mod:`mlxp.nn.losses`) hold
state and call these. Element-wise functions accept any shape; every result keeps
the input's namespace, device and floating dtype.

The three overflow-free primitives :func:`softplus`, :func:`sigmoid` and
:func:`log_softmax` take the namespace first, ``f(xp, z)``, as the linear models
(which already hold ``xp``) call them.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

__all__ = [
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_train",
    "bce_with_logits",
    "bce_with_logits_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "dense",
    "dense_backward",
    "gelu",
    "gelu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "log_softmax",
    "mse",
    "mse_backward",
    "one_hot",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "softplus",
    "tanh",
    "tanh_backward",
]


# --------------------------------------------------------------------------- dense
def dense(x: Any, W: Any, b: Any) -> Any:
    """y = xW + b for x (n, in), W (in, out), b (out,); y is (n, out)."""
    return x @ W + b


def dense_backward(x: Any, W: Any, grad: Any, input_grad: bool = True) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂W, ∂L/∂b) = (g Wᵀ, xᵀ g, Σₙ g) for g = ∂L/∂y of shape (n, out).

    With ``input_grad=False`` the first term is skipped (returned as None).
    """
    xp = array_namespace(grad)
    return (grad @ W.T if input_grad else None), x.T @ grad, xp.sum(grad, axis=0)


# --------------------------------------------------------------------------- stable primitives
def softplus(xp: Any, z: Any) -> Any:
    """log(1 + eᶻ) = max(z, 0) + log1p(e^−|z|), finite for any finite z."""
    return xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))


def sigmoid(xp: Any, z: Any) -> Any:
    """σ(z) = 1/(1 + e⁻ᶻ), via e^−|z| so that neither branch overflows."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(xp: Any, Z: Any, axis: int = -1) -> Any:
    """Z − logsumexp(Z) along ``axis``, shifted by the maximum first."""
    shifted = Z - xp.max(Z, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


# --------------------------------------------------------------------------- activations
def relu(x: Any) -> Any:
    """y = max(x, 0), element-wise."""
    xp = array_namespace(x)
    return xp.maximum(x, xp.zeros_like(x))


def relu_backward(x: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ [x > 0] (0 at x = 0, as PyTorch)."""
    xp = array_namespace(grad)
    return xp.where(x > 0, grad, xp.zeros_like(grad))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """y = x for x > 0, else a·x with a = ``negative_slope``."""
    xp = array_namespace(x)
    return xp.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(x: Any, grad: Any, negative_slope: float = 0.01) -> Any:
    """∂L/∂x = g for x > 0, else a·g."""
    xp = array_namespace(grad)
    return xp.where(x > 0, grad, negative_slope * grad)


def sigmoid_backward(s: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ s(1 − s), from the output s = σ(x)."""
    return grad * s * (1 - s)


def tanh(x: Any) -> Any:
    """y = tanh(x), element-wise."""
    return array_namespace(x).tanh(x)


def tanh_backward(y: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ (1 − y²), from the output y = tanh(x)."""
    return grad * (1 - y * y)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def gelu(x: Any) -> Any:
    """GELU, tanh approximation: y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).

    The exact form x·Φ(x) needs erf, which the Array API standard lacks; this is
    PyTorch's ``gelu(x, approximate="tanh")`` (within 1e-3 of the exact form).
    """
    xp = array_namespace(x)
    return 0.5 * x * (1 + xp.tanh(_GELU_C * (x + _GELU_A * x**3)))


def gelu_backward(x: Any, grad: Any) -> Any:
    """∂L/∂x = g ⊙ [½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)].

    Here t = tanh(√(2/π)(x + 0.044715x³)), as in :func:`gelu`.
    """
    xp = array_namespace(x)
    t = xp.tanh(_GELU_C * (x + _GELU_A * x**3))
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (_GELU_C * (1 + 3 * _GELU_A * x * x))
    return grad * slope


def softmax(x: Any, axis: int = -1) -> Any:
    """s = exp(x − logsumexp(x)) along ``axis`` (shifted by the maximum: no overflow)."""
    xp = array_namespace(x)
    return xp.exp(log_softmax(xp, x, axis=axis))


def softmax_backward(s: Any, grad: Any, axis: int = -1) -> Any:
    """∂L/∂x = s ⊙ (g − Σ g ⊙ s), the sum along ``axis``, from the output s."""
    xp = array_namespace(grad)
    return s * (grad - xp.sum(grad * s, axis=axis, keepdims=True))


# --------------------------------------------------------------------------- batch norm
def _per_channel(x: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axes to reduce (all but axis 1) and the shape that broadcasts a (C,) vector over x."""
    axes = (0, *range(2, x.ndim))
    return axes, (1, x.shape[1], *([1] * (x.ndim - 2)))


def batch_norm_train(
    x: Any, gamma: Any, beta: Any, eps: float = 1e-5
) -> tuple[Any, Any, Any, Any, Any]:
    """Normalise with the batch statistics of each channel (axis 1) of x (n, C, ...).

    μ = mean(x), σ² = mean((x − μ)²) over every axis but 1 (m values per channel);
    x̂ = (x − μ)/√(σ² + ε), y = γ x̂ + β. Returns (y, x̂, 1/√(σ² + ε), μ, s²) with
    s² = σ² m/(m − 1) the unbiased variance (for running statistics); the last three
    have shape (C,), like γ and β.
    """
    xp = array_namespace(x)
    axes, shape = _per_channel(x)
    m = math.prod(x.shape[i] for i in axes)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1 / xp.sqrt(var + eps)
    x_hat = centred * inv_std
    y = xp.reshape(gamma, shape) * x_hat + xp.reshape(beta, shape)
    unbiased = xp.reshape(var, (-1,)) * (m / (m - 1))
    return y, x_hat, xp.reshape(inv_std, (-1,)), xp.reshape(mean, (-1,)), unbiased


def batch_norm_eval(
    x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, eps: float = 1e-5
) -> tuple[Any, Any, Any]:
    """y = γ (x − μ̄)/√(σ̄² + ε) + β with the running statistics μ̄, σ̄² (C,); x is (n, C, ...).

    Returns (y, x̂, 1/√(σ̄² + ε)).
    """
    xp = array_namespace(x)
    _, shape = _per_channel(x)
    inv_std = 1 / xp.sqrt(running_var + eps)
    x_hat = (x - xp.reshape(running_mean, shape)) * xp.reshape(inv_std, shape)
    return xp.reshape(gamma, shape) * x_hat + xp.reshape(beta, shape), x_hat, inv_std


def batch_norm_backward(
    x_hat: Any, inv_std: Any, gamma: Any, grad: Any, training: bool
) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂γ, ∂L/∂β) from x̂ and 1/√(σ² + ε) of the forward pass.

    ∂L/∂γ = Σ g ⊙ x̂, ∂L/∂β = Σ g (sums over every axis but 1). With batch statistics
    (``training``), for d = γg over the m values of a channel,
    ∂L/∂x = (1/√(σ² + ε)) (d − mean(d) − x̂ ⊙ mean(d ⊙ x̂)); with running statistics,
    which do not depend on x, ∂L/∂x = d/√(σ̄² + ε).
    """
    xp = array_namespace(grad)
    axes, shape = _per_channel(grad)
    d_gamma = xp.sum(grad * x_hat, axis=axes)
    d_beta = xp.sum(grad, axis=axes)
    d = grad * xp.reshape(gamma * inv_std, shape)
    if not training:
        return d, d_gamma, d_beta
    mean_d = xp.mean(d, axis=axes, keepdims=True)
    mean_dx = xp.mean(d * x_hat, axis=axes, keepdims=True)
    return d - mean_d - x_hat * mean_dx, d_gamma, d_beta


# --------------------------------------------------------------------------- losses
def _like(target: Any, pred: Any) -> Any:
    """``target`` cast to the floating dtype of ``pred`` (integer 0/1 targets allowed)."""
    xp = array_namespace(pred)
    return target if target.dtype == pred.dtype else xp.astype(target, pred.dtype)


def mse(pred: Any, target: Any) -> Any:
    """L = mean((p − t)²) over all N elements; p and t of the same shape; L is 0-d."""
    xp = array_namespace(pred)
    r = pred - _like(target, pred)
    return xp.mean(r * r)


def mse_backward(pred: Any, target: Any) -> Any:
    """∂L/∂p = 2(p − t)/N, of the shape of p."""
    return (2 / math.prod(pred.shape)) * (pred - _like(target, pred))


def one_hot(target: Any, num_classes: int, dtype: Any) -> Any:
    """Y (n, K) with Yᵢₖ = [tᵢ = k] for integer classes t (n,); a class outside [0, K) gives 0s."""
    xp = array_namespace(target)
    classes = xp.arange(num_classes, dtype=target.dtype, device=_device(target))
    return xp.astype(target[:, None] == classes[None, :], dtype)


def cross_entropy(logits: Any, target: Any) -> Any:
    """L = −(1/n) Σᵢ log softmax(zᵢ)_{tᵢ} for logits Z (n, K) and classes t (n,); L is 0-d.

    Computed as −(1/n) Σ Y ⊙ (Z − logsumexp(Z)), Y one-hot: finite at any finite Z.
    """
    xp = array_namespace(logits)
    Y = one_hot(target, logits.shape[1], logits.dtype)
    return -xp.sum(Y * log_softmax(xp, logits, axis=1)) / logits.shape[0]


def cross_entropy_backward(logits: Any, target: Any) -> Any:
    """∂L/∂Z = (softmax(Z) − Y)/n, shape (n, K)."""
    Y = one_hot(target, logits.shape[1], logits.dtype)
    return (softmax(logits, axis=1) - Y) / logits.shape[0]


def bce_with_logits(logits: Any, target: Any) -> Any:
    """L = mean(softplus(z) − t·z) = mean(−t log σ(z) − (1 − t) log(1 − σ(z))); L is 0-d.

    z and t (in [0, 1]) of the same shape, mean over all N elements; finite at any finite z.
    """
    xp = array_namespace(logits)
    return xp.mean(softplus(xp, logits) - _like(target, logits) * logits)


def bce_with_logits_backward(logits: Any, target: Any) -> Any:
    """∂L/∂z = (σ(z) − t)/N, of the shape of z."""
    xp = array_namespace(logits)
    n = math.prod(logits.shape)
    return (sigmoid(xp, logits) - _like(target, logits)) / n
