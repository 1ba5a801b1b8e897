"""The arithmetic of the layers and losses as pure functions of arrays (shapes in each docstring).

Owns dense, the activations, batch normalisation and the losses; each forward function
has a matching ``*_backward`` that maps the gradient g of the loss with respect to the
output to the gradients with respect to the inputs and parameters. Layers
(:mod:`mlxp.nn.layers`) and losses (:mod:`mlxp.nn.losses`) hold state and call these.
Element-wise functions accept any shape; every result keeps the input's namespace,
device and floating dtype. Signature convention (as array-api-extra):
``f(x, ..., *, xp=None)``, the namespace derived from the arrays when not given.

Re-exported here: the overflow-free :func:`softplus`, :func:`sigmoid`, :func:`log_softmax`
and :func:`softmax` of :mod:`mlxp._special` (the linear models share them), the
convolutions of :mod:`mlxp.nn.convolution` and the pools of :mod:`mlxp.nn.pooling`.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._kernels import fuses_log_softmax, positive_part, positive_part_grad, sum_into
from mlxp._kernels import log_softmax as kernel_log_softmax
from mlxp._products import addmm, matmul, matmul_into
from mlxp._special import log_softmax, sigmoid, softmax, softplus
from mlxp.nn.convolution import IM2COL_MAX_BYTES, conv2d, conv2d_backward
from mlxp.nn.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "IM2COL_MAX_BYTES",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_running",
    "batch_norm_train",
    "bce_with_logits",
    "bce_with_logits_backward",
    "conv2d",
    "conv2d_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "dense",
    "dense_backward",
    "gelu",
    "gelu_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "log_softmax",
    "max_pool2d",
    "max_pool2d_backward",
    "mse",
    "mse_backward",
    "one_hot",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "softplus",
    "tanh",
    "tanh_backward",
]


# --------------------------------------------------------------------------- dense
def dense(x: Any, W: Any, b: Any, /, *, xp: Any = None) -> Any:
    """y = xW + b for x (n, in), W (in, out), b (out,); y is (n, out).

    b is added into the product (:func:`mlxp._products.addmm`: one kernel on PyTorch, in
    place on NumPy).
    """
    xp = xp or array_namespace(x)
    return addmm(b, x, W, xp=xp) if x.ndim == 2 else matmul(x, W, xp=xp) + b


def dense_backward(
    x: Any,
    W: Any,
    grad: Any,
    /,
    *,
    input_grad: bool = True,
    out: Any = (None, None),
    xp: Any = None,
) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂W, ∂L/∂b) = (g Wᵀ, xᵀ g, Σₙ g) for g = ∂L/∂y of shape (n, out).

    With ``input_grad=False`` the first term is skipped (returned as None). ``out``: arrays
    (in, out) and (out,) that ∂L/∂W and ∂L/∂b are written into, and returned as, where the
    library can (:func:`mlxp._products.matmul_into`, :func:`mlxp._kernels.sum_into`)."""
    xp = xp or array_namespace(grad)
    dW, db = matmul_into(x.T, grad, out[0], xp=xp), sum_into(grad, 0, out[1], xp=xp)
    return (matmul(grad, W.T, xp=xp) if input_grad else None), dW, db


# --------------------------------------------------------------------------- activations
def relu(x: Any, /, *, xp: Any = None) -> Any:
    """y = max(x, 0), element-wise, by :func:`mlxp._kernels.positive_part`."""
    return positive_part(x, xp=xp)


def relu_backward(x: Any, grad: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂x = g ⊙ [x > 0] (0 at x = 0, as PyTorch); x may be the input or the output y.
    One op on PyTorch, two elsewhere (:func:`mlxp._kernels.positive_part_grad`)."""
    return positive_part_grad(x, grad, xp=xp)


def leaky_relu(x: Any, /, negative_slope: float = 0.01, *, xp: Any = None) -> Any:
    """y = x for x > 0, else a·x with a = ``negative_slope``."""
    xp = xp or array_namespace(x)
    return xp.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(
    x: Any, grad: Any, /, negative_slope: float = 0.01, *, xp: Any = None
) -> Any:
    """∂L/∂x = g for x > 0, else a·g."""
    xp = xp or array_namespace(grad)
    return xp.where(x > 0, grad, negative_slope * grad)


def sigmoid_backward(s: Any, grad: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂x = g ⊙ s(1 − s), from the output s = σ(x)."""
    return grad * s * (1 - s)


def tanh(x: Any, /, *, xp: Any = None) -> Any:
    """y = tanh(x), element-wise."""
    xp = xp or array_namespace(x)
    return xp.tanh(x)


def tanh_backward(y: Any, grad: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂x = g ⊙ (1 − y²), from the output y = tanh(x)."""
    return grad * (1 - y * y)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def gelu(x: Any, /, *, xp: Any = None) -> Any:
    """GELU, tanh approximation: y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), PyTorch's
    ``gelu(x, approximate="tanh")``; within 1e-3 of the exact x·Φ(x), whose erf the
    Array API standard lacks."""
    xp = xp or array_namespace(x)
    return 0.5 * x * (1 + xp.tanh(_GELU_C * (x + _GELU_A * x**3)))


def gelu_backward(x: Any, grad: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂x = g ⊙ [½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)], with
    t = tanh(√(2/π)(x + 0.044715x³)) as in :func:`gelu`."""
    xp = xp or array_namespace(x)
    t = xp.tanh(_GELU_C * (x + _GELU_A * x**3))
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (_GELU_C * (1 + 3 * _GELU_A * x * x))
    return grad * slope


def softmax_backward(s: Any, grad: Any, /, *, axis: int = -1, xp: Any = None) -> Any:
    """∂L/∂x = s ⊙ (g − Σ g ⊙ s), the sum along ``axis``, from the output s."""
    xp = xp or array_namespace(grad)
    return s * (grad - xp.sum(grad * s, axis=axis, keepdims=True))


# --------------------------------------------------------------------------- batch norm
def _per_channel(x: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axes to reduce (all but axis 1) and the shape that broadcasts a (C,) vector over x."""
    axes = (0, *range(2, x.ndim))
    return axes, (1, x.shape[1], *([1] * (x.ndim - 2)))


def batch_norm_train(
    x: Any, gamma: Any, beta: Any, /, eps: float = 1e-5, *, rows: Any = None, xp: Any = None
) -> tuple[Any, Any, Any, Any, Any]:
    """Normalise with the batch statistics of each channel (axis 1) of x (n, C, ...).

    μ = mean(x), σ² = mean((x − μ)²) over every axis but 1 (m values per channel);
    x̂ = (x − μ)/√(σ² + ε), y = γ x̂ + β. Returns (y, x̂, 1/√(σ² + ε), μ, s²) with
    s² = σ² m/(m − 1) the unbiased variance (for running statistics); the last three
    have shape (C,), like γ and β.

    ``rows``: weights r (n,) of 0 or 1, the statistics over the rows of weight 1 only
    (a batch padded to a fixed size, the padding unseen): μ = Σ r x/m, σ² = Σ r (x − μ)²/m
    with m = Σ r times the values per row and channel. m must exceed 1 (else s² is not
    finite); it is not checked, as under a trace it cannot be read.
    """
    xp = xp or array_namespace(x)
    axes, shape = _per_channel(x)
    if rows is None:
        m: Any = math.prod(x.shape[i] for i in axes)
        mean = xp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = xp.mean(centred * centred, axis=axes, keepdims=True)
    else:
        r, m = _row_weights(rows, x, xp)
        mean = xp.sum(r * x, axis=axes, keepdims=True) / m
        centred = x - mean
        var = xp.sum(r * (centred * centred), axis=axes, keepdims=True) / m
    inv_std = 1 / xp.sqrt(var + eps)
    x_hat = centred * inv_std
    y = xp.reshape(gamma, shape) * x_hat + xp.reshape(beta, shape)
    unbiased = xp.reshape(var, (-1,)) * (m / (m - 1))
    return y, x_hat, xp.reshape(inv_std, (-1,)), xp.reshape(mean, (-1,)), unbiased


def _row_weights(rows: Any, x: Any, xp: Any) -> tuple[Any, Any]:
    """(r (n, 1, ...) broadcasting over x, m = Σ r × the values per row and channel)."""
    per_row = math.prod(x.shape[2:])
    r = xp.reshape(xp.astype(rows, x.dtype), (-1, *([1] * (x.ndim - 1))))
    return r, xp.sum(r) * per_row


def batch_norm_running(
    running_mean: Any, running_var: Any, mean: Any, var: Any, /, momentum: float
) -> tuple[Any, Any]:
    """The running statistics after a training batch, as ``torch.nn.BatchNorm`` moves them.

    μ̄ ← (1 − momentum)·μ̄ + momentum·μ and σ̄² ← (1 − momentum)·σ̄² + momentum·s², with μ
    and s² the batch mean and unbiased variance (:func:`batch_norm_train`); all (C,).
    Returns the new (μ̄, σ̄²); nothing is modified."""
    m = momentum
    return (1 - m) * running_mean + m * mean, (1 - m) * running_var + m * var


def batch_norm_eval(
    x: Any,
    gamma: Any,
    beta: Any,
    running_mean: Any,
    running_var: Any,
    /,
    eps: float = 1e-5,
    *,
    xp: Any = None,
) -> tuple[Any, Any, Any]:
    """y = γ (x − μ̄)/√(σ̄² + ε) + β with the running statistics μ̄, σ̄² (C,); x is (n, C, ...).

    Returns (y, x̂, 1/√(σ̄² + ε)).
    """
    xp = xp or array_namespace(x)
    _, shape = _per_channel(x)
    inv_std = 1 / xp.sqrt(running_var + eps)
    x_hat = (x - xp.reshape(running_mean, shape)) * xp.reshape(inv_std, shape)
    return xp.reshape(gamma, shape) * x_hat + xp.reshape(beta, shape), x_hat, inv_std


def batch_norm_backward(
    x_hat: Any,
    inv_std: Any,
    gamma: Any,
    grad: Any,
    /,
    training: bool,
    *,
    rows: Any = None,
    xp: Any = None,
) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂γ, ∂L/∂β) from x̂ and 1/√(σ² + ε) of the forward pass.

    ∂L/∂γ = Σ g ⊙ x̂, ∂L/∂β = Σ g (sums over every axis but 1). With batch statistics
    (``training``), for d = γg over the m values of a channel,
    ∂L/∂x = (1/√(σ² + ε)) (d − mean(d) − x̂ ⊙ mean(d ⊙ x̂)); with running statistics,
    which do not depend on x, ∂L/∂x = d/√(σ̄² + ε).

    With the ``rows`` weights r of :func:`batch_norm_train`: the rows of weight 0 are the
    padding of a batch, out of the loss as well, and g must be 0 on them (every loss of
    mlxp weighs them 0). ∂L/∂γ, ∂L/∂β and the means are then sums over the rows of
    weight 1 (g is not masked here: in a compiled step that product cost 15% of a CNN
    step), and ∂L/∂x is 0 on the padding, which entered neither the statistics nor the loss.
    """
    xp = xp or array_namespace(grad)
    axes, shape = _per_channel(grad)
    r, m = (None, None) if rows is None else _row_weights(rows, grad, xp)
    d_gamma = xp.sum(grad * x_hat, axis=axes)
    d_beta = xp.sum(grad, axis=axes)
    d = grad * xp.reshape(gamma * inv_std, shape)
    if not training:
        return d, d_gamma, d_beta
    if r is None:
        mean_d = xp.mean(d, axis=axes, keepdims=True)
        mean_dx = xp.mean(d * x_hat, axis=axes, keepdims=True)
        return d - mean_d - x_hat * mean_dx, d_gamma, d_beta
    mean_d = xp.sum(d, axis=axes, keepdims=True) / m  # d is 0 on the rows of weight 0
    mean_dx = xp.sum(d * x_hat, axis=axes, keepdims=True) / m
    return r * (d - mean_d - x_hat * mean_dx), d_gamma, d_beta


# --------------------------------------------------------------------------- losses
def _like(target: Any, pred: Any, xp: Any) -> Any:
    """``target`` cast to the floating dtype of ``pred`` (integer 0/1 targets allowed)."""
    return target if target.dtype == pred.dtype else xp.astype(target, pred.dtype)


def mse(pred: Any, target: Any, /, *, xp: Any = None) -> Any:
    """L = mean((p − t)²) over all N elements; p and t of the same shape; L is 0-d."""
    xp = xp or array_namespace(pred)
    r = pred - _like(target, pred, xp)
    return xp.mean(r * r)


def mse_backward(pred: Any, target: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂p = 2(p − t)/N, of the shape of p."""
    xp = xp or array_namespace(pred)
    return (2 / math.prod(pred.shape)) * (pred - _like(target, pred, xp))


def one_hot(target: Any, /, num_classes: int, dtype: Any, *, xp: Any = None) -> Any:
    """Y (n, K) with Yᵢₖ = [tᵢ = k] for integer classes t (n,); a class outside [0, K) gives 0s."""
    xp = xp or array_namespace(target)
    classes = xp.arange(num_classes, dtype=target.dtype, device=_device(target))
    return xp.astype(target[:, None] == classes[None, :], dtype)


def softmax_cross_entropy(
    logits: Any, target: Any, /, weights: Any = None, *, xp: Any = None
) -> tuple[Any, Any]:
    """(Σᵢ wᵢℓᵢ, wᵢ(softmax(zᵢ) − yᵢ)) with ℓᵢ = logsumexp(zᵢ) − zᵢ,tᵢ, from one softmax.

    Logits Z (n, K), classes t (n,), optional row weights w (n,) (None: all 1). With the
    shift s = Z − max Z, e = exp(s) and S = Σₖ e: ℓᵢ = log Sᵢ − sᵢ,tᵢ and ∂ℓᵢ/∂zᵢ =
    e/S − yᵢ for the one-hot Y, built once; Σᵢ ℓᵢ is one dot product ⟨Y, log S − s⟩
    (each row of Y sums to 1). Where log softmax is one kernel (PyTorch), that kernel for
    the first four steps (:func:`_cross_entropy_from_log_softmax`). Returns the 0-d summed
    loss and the (n, K) residual, the gradient of the sum; finite at any finite Z.
    """
    xp = xp or array_namespace(logits)
    if fuses_log_softmax(xp):
        return _cross_entropy_from_log_softmax(logits, target, weights, xp)
    s = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(s)
    total = xp.sum(e, axis=1, keepdims=True)
    Y = one_hot(target, logits.shape[1], logits.dtype, xp=xp)
    losses = xp.reshape(xp.log(total) - s, (-1,))  # −log softmax; ℓᵢ = ⟨Yᵢ, that⟩
    if weights is not None:
        w = weights[:, None]
        return matmul(xp.reshape(w * Y, (-1,)), losses, xp=xp), (e / total - Y) * w
    return matmul(xp.reshape(Y, (-1,)), losses, xp=xp), e / total - Y


def _cross_entropy_from_log_softmax(
    logits: Any, target: Any, weights: Any, xp: Any
) -> tuple[Any, Any]:
    """:func:`softmax_cross_entropy` where log softmax is one kernel
    (:func:`mlxp._kernels.log_softmax`: the shift, exp, sum and log fused), then the same
    one-hot algebra: Σᵢ wᵢℓᵢ = −⟨wY, log P⟩ and the residual w(P − Y), P = exp(log P)."""
    log_p = kernel_log_softmax(logits, xp=xp)
    Y = one_hot(target, logits.shape[1], logits.dtype, xp=xp)
    rows = Y if weights is None else weights[:, None] * Y
    value = -matmul(xp.reshape(rows, (-1,)), xp.reshape(log_p, (-1,)), xp=xp)
    residual = xp.exp(log_p) - Y
    return value, residual if weights is None else residual * weights[:, None]


def cross_entropy(logits: Any, target: Any, /, *, xp: Any = None) -> Any:
    """L = −(1/n) Σᵢ log softmax(zᵢ)_{tᵢ} for logits Z (n, K) and classes t (n,); L is 0-d.

    Computed as (1/n) Σᵢ (logsumexp(zᵢ) − zᵢ,tᵢ), shifted: finite at any finite Z.
    """
    return softmax_cross_entropy(logits, target, xp=xp)[0] / logits.shape[0]


def cross_entropy_backward(logits: Any, target: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂Z = (softmax(Z) − Y)/n, shape (n, K)."""
    return softmax_cross_entropy(logits, target, xp=xp)[1] / logits.shape[0]


def bce_with_logits(logits: Any, target: Any, /, *, xp: Any = None) -> Any:
    """L = mean(softplus(z) − t·z) = mean(−t log σ(z) − (1 − t) log(1 − σ(z))); L is 0-d.

    z and t (in [0, 1]) of the same shape, mean over all N elements; finite at any finite z.
    """
    xp = xp or array_namespace(logits)
    return xp.mean(softplus(logits, xp=xp) - _like(target, logits, xp) * logits)


def bce_with_logits_backward(logits: Any, target: Any, /, *, xp: Any = None) -> Any:
    """∂L/∂z = (σ(z) − t)/N, of the shape of z."""
    xp = xp or array_namespace(logits)
    n = math.prod(logits.shape)
    return (sigmoid(logits, xp=xp) - _like(target, logits, xp)) / n
