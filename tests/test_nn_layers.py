"""Layers, losses and initialisers of mlxp.nn on every backend.

Oracles: central finite differences (every backward), NumPy formulas and PyTorch
(values, autograd gradients, BatchNorm1d running statistics).
"""

from __future__ import annotations

import json
import math

import array_api_compat as aac
import numpy as np
import pytest

from mlxp import Generator
from mlxp.nn import (
    GELU,
    BatchNorm1d,
    BatchNorm2d,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    Dense,
    Dropout,
    LeakyReLU,
    MSELoss,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.init import INITIALIZERS
from tests.conftest import built, require_float64, widest_float

# name -> (layer factory, input shape, training); Dropout draws the same mask each call
# because every evaluation re-initialises it with the same seed. Shapes are shared between
# tests: JAX compiles each operation once per shape.
LAYERS = {
    "dense": (lambda: Dense(4, 3), (5, 4), False),
    "relu": (ReLU, (5, 4), False),
    "leaky_relu": (lambda: LeakyReLU(0.1), (5, 4), False),
    "sigmoid": (Sigmoid, (5, 4), False),
    "tanh": (Tanh, (5, 4), False),
    "gelu": (GELU, (5, 4), False),
    "softmax": (Softmax, (5, 4), False),
    "softmax_axis0": (lambda: Softmax(axis=0), (5, 4), False),
    "dropout": (lambda: Dropout(0.3), (5, 4, 2), True),
    "batchnorm_train": (lambda: BatchNorm1d(4), (5, 4), True),
    "batchnorm_train_3d": (lambda: BatchNorm1d(4), (5, 4, 2), True),
    "batchnorm_eval": (lambda: BatchNorm1d(4), (5, 4), False),
}


def _inputs(rng: np.random.Generator, shape) -> np.ndarray:
    """Values in ±[0.2, 1.5]: away from the kink of (leaky) ReLU at 0."""
    return rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def _numeric_grad(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function f at a."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    return grad


# --------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_backward_matches_finite_differences(backend, name):
    require_float64(backend)
    make, shape, training = LAYERS[name]
    rng = np.random.default_rng(0)
    x = _inputs(rng, shape)
    layer = built(make(), backend)
    params = {k: rng.normal(size=tuple(v.shape)) for k, v in layer.params.items()}
    running = {k: rng.uniform(0.5, 1.5, size=tuple(v.shape)) for k, v in layer.buffers.items()}

    def output(x_np, ps):
        built(layer, backend)  # same dropout mask at every call
        layer.params = {k: backend.asarray(v) for k, v in ps.items()}
        layer.buffers = {k: backend.asarray(v) for k, v in running.items()}
        return layer.forward(backend.asarray(x_np), training=training)

    R = rng.normal(size=tuple(output(x, params).shape))

    def scalar(x_np, ps):
        return float(np.sum(R * backend.to_numpy(output(x_np, ps))))

    output(x, params)
    grad_x = backend.to_numpy(layer.backward(backend.asarray(R)))
    assert set(layer.grads) == set(layer.params)
    np.testing.assert_allclose(
        grad_x, _numeric_grad(lambda a: scalar(a, params), x), rtol=1e-5, atol=1e-7
    )
    analytic = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    for key, value in params.items():
        numeric = _numeric_grad(lambda a, key=key: scalar(x, {**params, key: a}), value)
        np.testing.assert_allclose(analytic[key], numeric, rtol=1e-5, atol=1e-7, err_msg=key)


LOSSES = {
    "mse": (MSELoss, lambda rng: rng.normal(size=(5, 4))),
    "cross_entropy": (CrossEntropyLoss, lambda rng: rng.integers(0, 4, size=5)),
    "bce_with_logits": (BCEWithLogitsLoss, lambda rng: rng.integers(0, 2, size=(5, 4))),
}


def _loss_oracle(name: str, z: np.ndarray, t: np.ndarray) -> float:
    """The losses written directly from their definitions (moderate inputs only)."""
    if name == "mse":
        return float(np.mean((z - t) ** 2))
    if name == "cross_entropy":
        log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        return float(-np.mean(log_p[np.arange(z.shape[0]), t]))
    s = 1 / (1 + np.exp(-z))
    return float(np.mean(-t * np.log(s) - (1 - t) * np.log(1 - s)))


def _pred_shape(name: str, target: np.ndarray) -> tuple[int, ...]:
    return (target.shape[0], 4) if name == "cross_entropy" else target.shape


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_value_and_backward(backend, name):
    require_float64(backend)
    make, draw = LOSSES[name]
    rng = np.random.default_rng(1)
    t = draw(rng)
    z = rng.normal(size=_pred_shape(name, t)) * 2
    loss, tb = make(), backend.asarray(t)
    value = loss.forward(backend.asarray(z), tb)
    assert value.ndim == 0
    assert float(value) == pytest.approx(_loss_oracle(name, z, t), rel=1e-12)
    grad = backend.to_numpy(loss.backward())
    numeric = _numeric_grad(lambda a: float(loss.forward(backend.asarray(a), tb)), z)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["mse", "bce_with_logits"])
def test_integer_targets_are_cast(backend, name):
    make = LOSSES[name][0]
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, size=(5, 4))
    z = backend.asarray(rng.normal(size=(5, 4)), "float32")
    as_int, as_float = make(), make()
    value = as_int.forward(z, backend.asarray(t))
    assert value.dtype == backend.dtype("float32")
    assert float(value) == pytest.approx(float(as_float.forward(z, backend.asarray(t, "float32"))))
    np.testing.assert_array_equal(
        backend.to_numpy(as_int.backward()), backend.to_numpy(as_float.backward())
    )


# --------------------------------------------------------------------------- against PyTorch
def _torch_activations(torch):
    F = torch.nn.functional
    return {
        "relu": (ReLU, F.relu),
        "leaky_relu": (lambda: LeakyReLU(0.1), lambda x: F.leaky_relu(x, 0.1)),
        "sigmoid": (Sigmoid, torch.sigmoid),
        "tanh": (Tanh, torch.tanh),
        "gelu": (GELU, lambda x: F.gelu(x, approximate="tanh")),
        "softmax": (Softmax, lambda x: F.softmax(x, dim=-1)),
        "softmax_axis0": (lambda: Softmax(axis=0), lambda x: F.softmax(x, dim=0)),
    }


@pytest.mark.parametrize(
    "name", ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "softmax", "softmax_axis0"]
)
def test_activation_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    make, reference = _torch_activations(torch)[name]
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(3)
    x, R = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4))
    layer = make()
    y = layer.forward(backend.asarray(x, dtype))
    grad = layer.backward(backend.asarray(R, dtype))
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)
    (yt * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(y), yt.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.to_numpy(grad), xt.grad.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize(("shape", "momentum"), [((5, 4), 0.1), ((5, 4, 2), 0.3)])
def test_batchnorm_matches_torch(backend, shape, momentum):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rtol = max(rtol, 1e-9)
    rng = np.random.default_rng(4)
    C = shape[1]
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    ours = built(BatchNorm1d(C, momentum=momentum, eps=1e-3), backend, dtype)
    ours.params = {"gamma": backend.asarray(gamma, dtype), "beta": backend.asarray(beta, dtype)}
    ref = torch.nn.BatchNorm1d(C, momentum=momentum, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(gamma))
        ref.bias.copy_(torch.tensor(beta))
    for training in (True, True, True, False):
        ref.train(training)
        x, R = rng.normal(size=shape) * 2 + 1, rng.normal(size=shape)
        xt = torch.tensor(x, requires_grad=True)
        ref.zero_grad()
        yt = ref(xt)
        (yt * torch.tensor(R)).sum().backward()
        held = dict(ours.buffers)
        y = ours.forward(backend.asarray(x, dtype), training=training)
        assert all(ours.buffers[k] is v for k, v in held.items())  # forward writes no buffer
        grad = ours.backward(backend.asarray(R, dtype))
        ours.buffers.update(ours.state_updates())  # a loop by hand commits the statistics
        pairs = [
            (y, yt.detach()),
            (grad, xt.grad),
            (ours.grads["gamma"], ref.weight.grad),
            (ours.grads["beta"], ref.bias.grad),
            (ours.buffers["running_mean"], ref.running_mean),
            (ours.buffers["running_var"], ref.running_var),
        ]
        for mine, theirs in pairs:
            np.testing.assert_allclose(
                backend.to_numpy(mine), theirs.numpy(), rtol=rtol, atol=10 * rtol
            )


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    make, draw = LOSSES[name]
    rng = np.random.default_rng(5)
    t = draw(rng)
    z = rng.normal(size=_pred_shape(name, t)) * 3
    loss = make()
    value = loss.forward(backend.asarray(z, dtype), backend.asarray(t))
    grad = loss.backward()
    zt = torch.tensor(z, requires_grad=True)
    F = torch.nn.functional
    if name == "mse":
        ref = F.mse_loss(zt, torch.tensor(t))
    elif name == "cross_entropy":
        ref = F.cross_entropy(zt, torch.tensor(t))
    else:
        ref = F.binary_cross_entropy_with_logits(zt, torch.tensor(t, dtype=torch.float64))
    ref.backward()
    assert float(value) == pytest.approx(ref.item(), rel=rtol)
    np.testing.assert_allclose(backend.to_numpy(grad), zt.grad.numpy(), rtol=rtol, atol=rtol)


def test_weighted_cross_entropy_matches_torch(backend):
    """Σᵢ wᵢℓᵢ and the gradient of its mean, wᵢ(P − Y)/Σw, with row weights (the step's
    padded last batch, class weights), on every backend, against PyTorch's losses."""
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(6)
    z, t, w = rng.normal(size=(7, 4)) * 3, rng.integers(0, 4, size=7), rng.uniform(0, 2, size=7)
    value, grad = CrossEntropyLoss().value_and_grad(
        backend.asarray(z, dtype), backend.asarray(t), backend.asarray(w, dtype)
    )
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(t), reduction="none")
    (ref @ torch.tensor(w)).backward()
    assert float(value) == pytest.approx(float(ref.detach() @ torch.tensor(w)), rel=rtol)  # Σ wᵢℓᵢ
    np.testing.assert_allclose(
        backend.to_numpy(grad), zt.grad.numpy() / w.sum(), rtol=rtol, atol=rtol
    )


# --------------------------------------------------------------------------- stability
def _finite(backend, *arrays) -> bool:
    return all(np.all(np.isfinite(backend.to_numpy(a))) for a in arrays)


def test_sigmoid_stable_at_large_logits(backend, dtype):
    z = np.tile(np.array([-1e4, -50.0, 0.0, 50.0, 1e4])[:, None], (1, 4))
    layer = Sigmoid()
    y = layer.forward(backend.asarray(z, dtype))
    grad = layer.backward(backend.asarray(np.ones_like(z), dtype))
    assert _finite(backend, y, grad)
    np.testing.assert_allclose(backend.to_numpy(y)[[0, 2, 4], 0], [0.0, 0.5, 1.0])


def test_bce_and_cross_entropy_stable_at_large_logits(backend, dtype):
    rng = np.random.default_rng(9)
    z = 1e4 * rng.choice([-1.0, 1.0], size=(5, 4))
    t = rng.integers(0, 2, size=(5, 4))
    bce = BCEWithLogitsLoss()
    value = bce.forward(backend.asarray(z, dtype), backend.asarray(t, dtype))
    assert _finite(backend, value, bce.backward())
    assert float(value) == pytest.approx(np.mean(np.where((z > 0) == (t == 1), 0.0, 1e4)))
    logits = 1e4 * rng.integers(-1, 2, size=(5, 4)).astype(float)
    labels = rng.integers(0, 4, size=5)
    ce = CrossEntropyLoss()
    value = ce.forward(backend.asarray(logits, dtype), backend.asarray(labels))
    assert _finite(backend, value, ce.backward())
    top = logits.max(axis=1)
    log_sum_exp = top + np.log(np.sum(np.exp(logits - top[:, None]), axis=1))
    expected = np.mean(log_sum_exp - logits[np.arange(5), labels])
    assert float(value) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- initialisers
VARIANCE = {
    "he_uniform": lambda fi, fo: 2 / fi,
    "he_normal": lambda fi, fo: 2 / fi,
    "glorot_uniform": lambda fi, fo: 2 / (fi + fo),
    "glorot_normal": lambda fi, fo: 2 / (fi + fo),
}


@pytest.mark.parametrize("init", list(INITIALIZERS))
def test_initializer_statistics(init):
    fan_in, fan_out = 300, 500
    w = INITIALIZERS[init](
        Generator(0), (fan_in, fan_out), fan_in, fan_out, xp=np, device="cpu", dtype=np.float64
    )
    variance = VARIANCE[init](fan_in, fan_out)
    assert w.shape == (fan_in, fan_out)
    assert abs(w.mean()) < 5 * math.sqrt(variance / w.size)
    assert w.var() == pytest.approx(variance, rel=0.03)
    if init.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3 * variance)


@pytest.mark.parametrize("init", list(INITIALIZERS))
def test_initializer_same_seed_same_weights_everywhere(backend, dtype, init):
    def draw(xp, device, dt):
        return INITIALIZERS[init](Generator(7), (6, 5), 6, 5, xp=xp, device=device, dtype=dt)

    w = draw(backend.xp, backend.device, backend.dtype(dtype))
    assert w.dtype == backend.dtype(dtype) and aac.device(w) == backend.device
    reference = draw(np, "cpu", np.dtype(dtype))
    np.testing.assert_array_equal(backend.to_numpy(w), reference)


# --------------------------------------------------------------------------- dropout
def test_dropout_is_identity_in_eval(backend):
    x = backend.asarray(np.arange(20.0).reshape(5, 4), "float32")
    layer = built(Dropout(0.5), backend, "float32")
    y = layer.forward(x)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(x))
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(x)), backend.to_numpy(x))


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_dropout_statistics_in_training(backend, p):
    layer = built(Dropout(p), backend, "float32")
    x = backend.xp.ones((40, 50, 5, 10), dtype=backend.dtype("float32"), device=backend.device)
    y = backend.to_numpy(layer.forward(x, training=True))
    assert y.shape == (40, 50, 5, 10)
    assert np.mean(y == 0) == pytest.approx(p, abs=0.01)
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)
    grad = backend.to_numpy(layer.backward(x))
    np.testing.assert_array_equal(grad, y)  # ∂y/∂x is the scaled mask


def test_dropout_same_seed_same_mask_everywhere(backend, dtype):
    shape = (5, 4, 2)

    def mask(b):
        layer = built(Dropout(0.4), b, dtype, seed=11)
        ones = b.xp.ones(shape, dtype=b.dtype(dtype), device=b.device)
        first = b.to_numpy(layer.forward(ones, training=True))
        return first, b.to_numpy(layer.forward(ones, training=True))

    import backends

    numpy_case = next(c for c in backends.cases() if c.name == "numpy")
    ours, reference = mask(backend), mask(numpy_case)
    np.testing.assert_array_equal(ours[0], reference[0])
    np.testing.assert_array_equal(ours[1], reference[1])
    assert not np.array_equal(ours[0], ours[1])  # a fresh mask at each training forward


# --------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 3), (6, 2, 3, 3)], ids=["1d", "1d-L", "2d"])
def test_batchnorm_rows_weigh_the_padding_out(backend, shape):
    """A training forward given ``rows`` (a batch padded with rows of weight 0, as a
    compiled step pads its short last batch) is PyTorch's BatchNorm on the rows of weight
    1 alone: outputs, input gradients, γ and β gradients and running statistics; the
    padding, out of the loss (no gradient reaches its outputs), gets no input gradient."""
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rtol = max(rtol, 1e-9)
    rng = np.random.default_rng(8)
    C, real = shape[1], 4
    layer_type, ref_type = (
        (BatchNorm2d, torch.nn.BatchNorm2d)
        if len(shape) == 4
        else (BatchNorm1d, torch.nn.BatchNorm1d)
    )
    ours = built(layer_type(C, momentum=0.3), backend, dtype)
    ref = ref_type(C, momentum=0.3, dtype=torch.float64)
    x, R = rng.normal(size=shape) * 2 + 1, rng.normal(size=shape)
    x[real:], R[real:] = 50.0, 0.0  # the padding: far from the rows, so seeing it would show
    rows = np.array([1.0] * real + [0.0] * (shape[0] - real))
    xt = torch.tensor(x[:real], requires_grad=True)
    yt = ref(xt)
    (yt * torch.tensor(R[:real])).sum().backward()
    y = ours.forward(backend.asarray(x, dtype), training=True, rows=backend.asarray(rows, dtype))
    grad = backend.to_numpy(ours.backward(backend.asarray(R, dtype)))
    pairs = [
        (backend.to_numpy(y)[:real], yt.detach()),
        (grad[:real], xt.grad),
        (ours.grads["gamma"], ref.weight.grad),
        (ours.grads["beta"], ref.bias.grad),
        *((ours.state_updates()[k], getattr(ref, k)) for k in ("running_mean", "running_var")),
    ]
    for mine, theirs in pairs:
        mine = mine if isinstance(mine, np.ndarray) else backend.to_numpy(mine)
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=rtol * 10, atol=10 * rtol)
    np.testing.assert_array_equal(grad[real:], 0.0)


def test_batchnorm_train_and_eval(backend):
    dtype, rtol = widest_float(backend)
    tol = max(rtol, 1e-9) * 100
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 4)) * [1.0, 2.0, 0.5, 1.0] + [3.0, -1.0, 0.0, 0.0]
    layer = built(BatchNorm1d(4, momentum=0.2), backend, dtype)
    y = backend.to_numpy(layer.forward(backend.asarray(x, dtype), training=True))
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=tol)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=tol)
    running_mean, running_var = 0.2 * x.mean(axis=0), 0.8 + 0.2 * x.var(axis=0, ddof=1)
    # The training forward hands the new statistics out and leaves the buffers as they were.
    updates = {k: backend.to_numpy(v) for k, v in layer.state_updates().items()}
    np.testing.assert_allclose(updates["running_mean"], running_mean, rtol=tol)
    np.testing.assert_allclose(updates["running_var"], running_var, rtol=tol)
    np.testing.assert_array_equal(backend.to_numpy(layer.buffers["running_mean"]), 0.0)
    np.testing.assert_array_equal(backend.to_numpy(layer.buffers["running_var"]), 1.0)
    layer.buffers.update(layer.state_updates())
    np.testing.assert_allclose(
        backend.to_numpy(layer.buffers["running_mean"]), running_mean, rtol=tol
    )
    np.testing.assert_allclose(
        backend.to_numpy(layer.buffers["running_var"]), running_var, rtol=tol
    )
    # Evaluation: running statistics, untouched by the call, each row on its own.
    y_eval = backend.to_numpy(layer.forward(backend.asarray(x, dtype)))
    np.testing.assert_allclose(
        y_eval, (x - running_mean) / np.sqrt(running_var + 1e-5), rtol=tol, atol=tol
    )
    row = backend.to_numpy(layer.forward(backend.asarray(x[:1], dtype)))
    assert layer.state_updates() == {}
    np.testing.assert_allclose(row, y_eval[:1], rtol=tol, atol=tol)
    np.testing.assert_allclose(
        backend.to_numpy(layer.buffers["running_mean"]), running_mean, rtol=tol
    )
    with pytest.raises(ValueError, match="more than one value"):
        layer.forward(backend.asarray(x[:1], dtype), training=True)


# --------------------------------------------------------------------------- dtype and device
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_keeps_float32_and_device(backend, name):
    make, shape, training = LAYERS[name]
    layer = built(make(), backend, "float32")
    x = backend.asarray(_inputs(np.random.default_rng(7), shape), "float32")
    y = layer.forward(x, training=training)
    grad = layer.backward(backend.xp.ones_like(y))
    arrays = [y, grad, *layer.params.values(), *layer.grads.values(), *layer.buffers.values()]
    for a in arrays:
        assert a.dtype == backend.dtype("float32")
        assert aac.device(a) == backend.device


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_keeps_float32_and_device(backend, name):
    make, draw = LOSSES[name]
    rng = np.random.default_rng(8)
    t = draw(rng)
    z = backend.asarray(rng.normal(size=_pred_shape(name, t)), "float32")
    loss = make()
    value = loss.forward(z, backend.asarray(t))
    grad = loss.backward()
    for a in (value, grad):
        assert a.dtype == backend.dtype("float32")
        assert aac.device(a) == backend.device


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_config_rebuilds_the_layer(name):
    layer = LAYERS[name][0]()
    config = json.loads(json.dumps(layer.get_config()))
    assert type(layer)(**config).get_config() == layer.get_config()


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: LeakyReLU("0.1"), "negative_slope"),
        (lambda: LeakyReLU(float("nan")), "negative_slope"),
        (lambda: Softmax(axis=1.5), "axis"),
        (lambda: Softmax(axis=True), "axis"),
        (lambda: Dropout(1.0), "p"),
        (lambda: Dropout(-0.1), "p"),
        (lambda: Dropout(True), "p"),
        (lambda: Dropout("half"), "p"),
        (lambda: BatchNorm1d(0), "num_features"),
        (lambda: BatchNorm1d(2.0), "num_features"),
        (lambda: BatchNorm1d(3, momentum=1.5), "momentum"),
        (lambda: BatchNorm1d(3, eps=0.0), "eps"),
        (lambda: BatchNorm1d(3, eps=-1e-5), "eps"),
    ],
)
def test_bad_constructor_arguments(make, argument):
    with pytest.raises(ValueError, match=f"'{argument}' parameter"):
        make()


def test_bad_inputs(backend):
    x = backend.asarray(np.ones((5, 4)), "float32")
    labels = backend.asarray(np.array([0, 1, 1, 0, 2]))
    with pytest.raises(ValueError, match="BatchNorm1d expects x"):
        built(BatchNorm1d(3), backend, "float32").forward(x, training=True)
    with pytest.raises(ValueError, match="axis"):
        Softmax(axis=2).forward(x)
    with pytest.raises(ValueError, match=r"^target"):
        MSELoss().forward(x, backend.asarray(np.ones((5,)), "float32"))
    with pytest.raises(ValueError, match=r"^target"):
        BCEWithLogitsLoss().forward(x, backend.asarray(np.ones((4, 5)), "float32"))
    with pytest.raises(ValueError, match=r"^target .*integer"):
        CrossEntropyLoss().forward(x, backend.asarray(np.zeros(5), "float32"))
    with pytest.raises(ValueError, match=r"^target .*shape"):
        CrossEntropyLoss().forward(x, labels[:3])
    with pytest.raises(ValueError, match=r"^pred"):
        CrossEntropyLoss().forward(x[:, 0], labels)
    with pytest.raises(RuntimeError, match="forward"):
        MSELoss().backward()
    with pytest.raises(RuntimeError, match="initialize"):
        Dropout(0.5).forward(x, training=True)
