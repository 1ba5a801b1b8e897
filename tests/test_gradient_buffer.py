"""The training loop's flat gradient buffer (mlxp.nn.step._StepBuffers): the layers write
their gradients into views of it (``Layer.grad_out``) where the library writes in place.

Checked against the step that concatenates the layers' gradients (the buffer switched off):
the same model, bit for bit, for a model whose layers all write (Dense), one with a layer
that does not (a user's, or a convolution), and an optimiser of a user's that keeps the
gradient it was given.
"""

from __future__ import annotations

import array_api_compat.numpy
import numpy as np
import pytest

import mlxp.nn.step
from mlxp.nn import Conv2D, Dense, Flatten, ReLU, Reshape, Sequential, Tanh
from mlxp.optim import SGD, Adam

RNG = np.random.default_rng(0)
X = RNG.normal(size=(70, 16))
Y = RNG.integers(0, 3, size=70)


class PlainDense(Dense):
    """A user's Dense whose backward knows nothing of ``grad_out``."""

    def backward(self, grad, *, input_grad=True):
        x, W = self._cache["x"], self.params["W"]
        self.grads = {"W": x.T @ grad, "b": array_sum(grad)}
        return grad @ W.T if input_grad else None


def array_sum(grad):
    from array_api_compat import array_namespace

    return array_namespace(grad).sum(grad, axis=0)


class Remembering(SGD):
    """p ← p − η(gₜ + gₜ₋₁): keeps the gradient it is given, as it is, in its state."""

    def _init_state(self, xp, p):
        return {"last": xp.zeros_like(p)}

    def _update(self, xp, p, g, state, lr):
        direction = g + state["last"]
        state["last"] = g
        return p - lr * direction


MODELS = {
    "dense": lambda: [Dense(16, 8), ReLU(), Dense(8, 6), Tanh(), Dense(6, 3)],
    "user-layer": lambda: [Dense(16, 8), ReLU(), PlainDense(8, 3)],
    "conv": lambda: [Reshape((1, 4, 4)), Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(8, 3)],
}
OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "sgd-momentum": lambda: SGD(0.05, momentum=0.9),
    "remembering": lambda: Remembering(0.05),
}


def _fit(backend, layers, optimizer, **kwargs):
    model = Sequential(layers(), seed=4)
    Xb, yb = backend.asarray(X, "float32"), backend.asarray(Y)
    history = model.fit(
        Xb, yb, loss="cross_entropy", optimizer=optimizer(), epochs=2, batch_size=16,
        progress=False, compile=False, **kwargs,
    )  # fmt: skip
    return history["loss"], {k: backend.to_numpy(v) for k, v in model.get_weights().items()}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", list(MODELS))
def test_the_gradient_buffer_trains_the_model_concatenation_trains(
    backend, model, optimizer, monkeypatch
):
    """Bit for bit the model of the concatenated gradients, with weight decay too; and on
    the libraries that write in place the buffer is what a Dense-only model's step hands
    the optimiser, every step."""
    used = []
    flatten = mlxp.nn.step._StepBuffers.flatten

    def spy(self, grads, targets):
        g = flatten(self, grads, targets)
        used.append(g is self.grad)
        return g

    monkeypatch.setattr(mlxp.nn.step._StepBuffers, "flatten", spy)
    buffered = []
    for decay in (0.0, 0.1):
        got = _fit(backend, MODELS[model], OPTIMIZERS[optimizer], weight_decay=decay)
        buffered += used
        with monkeypatch.context() as off:
            off.setattr(mlxp.nn.step, "writes_in_place", lambda x: False)
            expected = _fit(backend, MODELS[model], OPTIMIZERS[optimizer], weight_decay=decay)
        used.clear()
        np.testing.assert_array_equal(got[0], expected[0])
        for name, value in expected[1].items():
            np.testing.assert_array_equal(got[1][name], value, err_msg=name)
    writes = backend.name in ("numpy", "torch", "cupy")
    assert len(buffered) == 2 * 10  # 2 fits of 2 epochs of 5 batches
    assert all(buffered) is any(buffered) is (writes and model == "dense")


def test_the_buffer_matches_a_finite_difference_gradient():
    """The gradient the layers write into the buffer is ∂(Σᵢ ℓᵢ/n)/∂θ: against central
    differences of the loss in float64, every parameter."""
    from mlxp.nn.losses import CrossEntropyLoss

    model = Sequential(MODELS["dense"](), seed=1)
    model.build(array_api_compat.numpy, "cpu", "float64")
    layout = mlxp.nn.step.FlatLayout({k: tuple(v.shape) for k, v in model.parameters.items()})
    params, buffers = layout.flatten(model.parameters), mlxp.nn.step._StepBuffers(layout)
    views, targets = buffers.views(params)
    value, grads, _ = mlxp.nn.step._forward_backward(
        model, CrossEntropyLoss(), views, {}, (X, Y, None), (), targets
    )
    g = buffers.flatten(grads, targets)
    assert g is buffers.grad

    def loss(theta):
        with mlxp.nn.step.bound(model, layout.views(theta)):
            out = model.forward(X)
        shifted = out - out.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(Y)), Y].mean()

    h, picks = 1e-6, RNG.choice(layout.size, size=40, replace=False)
    for i in picks:
        e = np.zeros(layout.size)
        e[i] = h
        numeric = (loss(params + e) - loss(params - e)) / (2 * h)
        np.testing.assert_allclose(g[i], numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(value / len(Y), loss(params), rtol=1e-12)


def test_layers_keep_no_gradient_views_after_a_fit():
    """``grad_out`` is bound for the step only: afterwards every layer holds what it held
    (an empty dict), and no layer's gradients alias the loop's buffer."""
    model = Sequential(MODELS["dense"](), seed=0)
    model.fit(X, Y, loss="cross_entropy", epochs=1, batch_size=16, progress=False)
    assert all(layer.grad_out == {} and layer.grads == {} for layer in model.layers)
