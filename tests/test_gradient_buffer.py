"""The training loop's flat gradient buffer (mlxp.nn.step._StepBuffers): mlxp's own layers
write their gradients into views of it (``Layer.grad_out``) where the library writes in
place, for mlxp's own optimisers.

Checked against the step that concatenates the layers' gradients (the buffer switched off):
the same model (bit for bit on NumPy; to rounding on PyTorch, whose MKL picks its matrix
product's kernel by the output's alignment) for a model whose layers all write (Dense;
Conv2D but on NumPy), one with a layer that does not (a user's), and an optimiser of a
user's that keeps the gradient it was given; and against finite differences.
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
    "dense-odd": lambda: [Dense(16, 5), ReLU(), Dense(5, 37), Tanh(), Dense(37, 3)],
    "user-layer": lambda: [Dense(16, 8), ReLU(), PlainDense(8, 3)],
    "conv": lambda: [Reshape((1, 4, 4)), Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(8, 3)],
}
OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "sgd-momentum": lambda: SGD(0.05, momentum=0.9),
    "remembering": lambda: Remembering(0.05),
}


def _openblas() -> bool:
    """Whether NumPy's BLAS is OpenBLAS, whose product is the same wherever its output
    starts (MKL's is not: it picks its kernel by alignment, as PyTorch's does)."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    return "openblas" in blas.lower()


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
    """The model of the concatenated gradients, with weight decay too (views of the
    gradient buffer off 16-byte boundaries in "dense-odd"); and on the libraries that write
    in place the buffer is what the step of a model whose layers all write hands mlxp's
    optimisers, every step, and never a user's optimiser (which may keep the gradient)."""
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
        rtol = 0 if backend.name == "numpy" and _openblas() else 1e-5
        np.testing.assert_allclose(got[0], expected[0], rtol=rtol)
        for name, value in expected[1].items():
            np.testing.assert_allclose(got[1][name], value, rtol=rtol, atol=rtol, err_msg=name)
    writes = backend.name in ("numpy", "torch", "cupy") and optimizer != "remembering"
    # a convolution writes ∂L/∂W into its view except on NumPy (a slower product there) and
    # PyTorch (its own convolution_backward makes new arrays)
    every_layer = model.startswith("dense") or (model == "conv" and backend.name == "cupy")
    assert len(buffered) == 2 * 10  # 2 fits of 2 epochs of 5 batches
    assert all(buffered) is any(buffered) is (writes and every_layer)


def test_the_buffer_matches_a_finite_difference_gradient():
    """The gradient the layers write into the buffer is ∂(Σᵢ ℓᵢ/n)/∂θ: against central
    differences of the loss in float64, every parameter."""
    from mlxp.nn.losses import CrossEntropyLoss

    model = Sequential(MODELS["dense"](), seed=1)
    model.build(array_api_compat.numpy, "cpu", "float64")
    layout = mlxp.nn.step.FlatLayout({k: tuple(v.shape) for k, v in model.parameters.items()})
    params = layout.flatten(model.parameters)
    buffers = mlxp.nn.step._StepBuffers(layout, gradients=True)
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


def test_a_users_layer_keeps_gradients_of_its_own(backend):
    """A subclass of Dense is a user's layer: it gets no views of the buffer, so the
    gradients it keeps from step to step are its own arrays, each step's values."""
    kept = []

    class Logging(Dense):
        def backward(self, grad, *, input_grad=True):
            dx = super().backward(grad, input_grad=input_grad)
            kept.append(backend.to_numpy(self.grads["W"]).copy())
            kept.append(self.grads["W"])
            return dx

    _fit(backend, lambda: [Dense(16, 8), ReLU(), Logging(8, 3)], OPTIMIZERS["adam"])
    for copied, held in zip(kept[::2], kept[1::2], strict=True):
        np.testing.assert_array_equal(backend.to_numpy(held), copied)


def test_a_dense_layer_without_grad_out_trains(backend):
    """A Dense pickled before ``grad_out`` existed (no such attribute) back-propagates by
    hand, and trains, as any other."""
    model = Sequential(MODELS["dense"](), seed=4)
    for layer in model.layers:
        layer.__dict__.pop("grad_out")
    x = backend.asarray(X[:5], "float32")
    dense = Sequential([Dense(16, 3)], seed=0)
    dense.layers[0].__dict__.pop("grad_out")
    dense.fit(x, backend.asarray(Y[:5]), loss="cross_entropy", epochs=1, progress=False)
    layer = dense.layers[0]
    layer.forward(x)
    layer.backward(backend.xp.ones((5, 3), dtype=x.dtype, device=backend.device))
    np.testing.assert_allclose(backend.to_numpy(layer.grads["b"]), [5.0] * 3)
    expected_W = X[:5].T @ np.ones((5, 3))
    np.testing.assert_allclose(backend.to_numpy(layer.grads["W"]), expected_W, rtol=1e-5)
    got = _fit(backend, lambda: model.layers, OPTIMIZERS["adam"])
    expected = _fit(backend, MODELS["dense"], OPTIMIZERS["adam"])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


def test_a_users_model_keeps_gradients_of_its_own(backend):
    """A subclass of Sequential is a user's model: its layers get no views of the buffer,
    so the gradients it keeps in its own ``backward`` stay each step's values."""
    kept = []

    class Keeping(Sequential):
        def backward(self, grad, *, input_grad=True):
            dx = super().backward(grad, input_grad=input_grad)
            grads = self.gradients()
            kept.append(({k: backend.to_numpy(v).copy() for k, v in grads.items()}, grads))
            return dx

    model = Keeping(MODELS["dense"](), seed=4)
    Xb, yb = backend.asarray(X, "float32"), backend.asarray(Y)
    model.fit(Xb, yb, loss="cross_entropy", epochs=1, batch_size=16, progress=False, compile=False)
    assert len(kept) == 5
    for copied, held in kept:
        for name, value in copied.items():
            np.testing.assert_array_equal(backend.to_numpy(held[name]), value, err_msg=name)


def test_torch_writes_nothing_in_place_while_compiling(monkeypatch):
    """Under ``torch.compile`` the step concatenates (no buffer written from a graph)."""
    torch = pytest.importorskip("torch")
    from mlxp._kernels import writes_in_place

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not writes_in_place(torch.zeros(3))


def test_conv2d_backward_writes_into_the_arrays_it_is_given(backend, rng):
    """∂L/∂W and ∂L/∂b written into (and returned as) views of one buffer where the library
    writes in place and mlxp computes them (∂L/∂W not on NumPy, nor when the batch is split
    into chunks; neither on PyTorch, whose own convolution_backward makes new arrays); the
    same values as without ``out``."""
    from mlxp.nn.convolution import conv2d, conv2d_backward

    xp = backend.xp
    x = backend.asarray(rng.standard_normal((3, 2, 6, 6)).astype("float32"))
    W = backend.asarray(rng.standard_normal((4, 2, 3, 3)).astype("float32"))
    y, cols = conv2d(x, W, None)
    g = backend.asarray(rng.standard_normal(tuple(y.shape)).astype("float32"))
    flat = xp.zeros((4 * 2 * 9 + 4,), dtype=x.dtype, device=backend.device)
    out = (xp.reshape(flat[:72], (4, 2, 3, 3)), flat[72:])
    _, dW, db = conv2d_backward(x, W, g, cols=cols)
    writes = backend.name in ("cupy", "numpy")
    for kwargs in ({"cols": cols}, {"max_bytes": 1}):  # one chunk, or one image a chunk
        _, dW_out, db_out = conv2d_backward(x, W, g, out=out, **kwargs)
        assert (dW_out is out[0]) is (writes and backend.name != "numpy" and "cols" in kwargs)
        assert (db_out is out[1]) is writes
        np.testing.assert_allclose(backend.to_numpy(dW_out), backend.to_numpy(dW), atol=1e-4)
        np.testing.assert_array_equal(backend.to_numpy(db_out), backend.to_numpy(db))
    # not a view a reshape keeps (permuted), or not W's shape: new arrays, the same values
    permuted = xp.permute_dims(
        xp.zeros((3, 3, 2, 4), dtype=x.dtype, device=backend.device), (3, 2, 0, 1)
    )
    for target in (permuted, flat[:72]):
        _, dW_new, _ = conv2d_backward(x, W, g, cols=cols, out=(target, None))
        assert dW_new is not target and tuple(dW_new.shape) == (4, 2, 3, 3)
        np.testing.assert_allclose(backend.to_numpy(dW_new), backend.to_numpy(dW), atol=1e-4)
