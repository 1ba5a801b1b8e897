"""The evaluation passes (mlxp.nn.evaluation): the mean loss and the accuracy against NumPy
formulas applied to the model's own predictions, on every backend; on JAX, compiled blocks
against the uncompiled pass, their reuse, their fallback and the rows they must not pad."""

from __future__ import annotations

import numpy as np
import pytest

import mlxp._jit
import mlxp.nn.evaluation
import mlxp.nn.losses
import mlxp.nn.streaming
from mlxp.nn import BatchNorm1d, Dense, Dropout, Layer, ReLU, Sequential, Softmax
from tests.conftest import case_named

RNG = np.random.default_rng(1)
X = RNG.normal(size=(70, 5))  # 70 rows at batch 16: four full batches and a short one
Y = RNG.integers(0, 3, size=70)
Y_BINARY = (X[:, 0] + X[:, 1] > 0).astype(np.float32)[:, None]  # (70, 1), as the logit


def _model(outputs=3):
    layers = [Dense(5, 8), BatchNorm1d(8), ReLU(), Dropout(0.5), Dense(8, outputs)]
    return Sequential(layers, seed=0)


def _trained(backend, outputs=3, y=Y):
    model = _model(outputs)
    loss = "cross_entropy" if outputs > 1 else "bce_with_logits"
    model.fit(
        backend.asarray(X), backend.asarray(y), loss=loss, epochs=2, batch_size=16, progress=False
    )
    return model


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_loss_and_accuracy_are_the_formulas_on_the_predictions(backend):
    """Cross-entropy (mean of −log softmax at the class) and accuracy (argmax = class) of
    ``predict``'s outputs, in float64 NumPy: one pass gives both, batch 16 with a short
    last batch, BatchNorm in its running statistics and Dropout off."""
    model = _trained(backend)
    Xb, yb = backend.asarray(X), backend.asarray(Y)
    out = backend.to_numpy(model.predict(Xb)).astype(np.float64)
    loss = -_log_softmax(out)[np.arange(70), Y].mean()
    got = model.evaluate(Xb, yb, loss="cross_entropy", batch_size=16)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["accuracy"] == np.mean(out.argmax(axis=1) == Y)


def test_one_logit_is_a_class_above_zero(backend):
    """Binary cross-entropy with logits, and accuracy as (output > 0) = y."""
    model = _trained(backend, outputs=1, y=Y_BINARY)
    Xb, yb = backend.asarray(X), backend.asarray(Y_BINARY)
    z = backend.to_numpy(model.predict(Xb))[:, 0].astype(np.float64)
    y = Y_BINARY[:, 0]
    loss = np.mean(np.logaddexp(0.0, z) - y * z)
    got = model.evaluate(Xb, yb, loss="bce_with_logits", batch_size=16)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["accuracy"] == np.mean((z > 0) == y)


def _traced(monkeypatch):
    """The batch counts of each trace of a compiled evaluation block from now on."""
    traces, batch_totals = [], mlxp.nn.evaluation.batch_totals
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())

    def counted(*args):
        import jax

        if isinstance(args[3], jax.core.Tracer):
            traces.append(tuple(args[3].shape))
        return batch_totals(*args)

    monkeypatch.setattr(mlxp.nn.evaluation, "batch_totals", counted)
    return traces


@pytest.mark.parametrize("block", [3, 8])
def test_jax_blocks_equal_the_uncompiled_pass_and_serve_any_size(monkeypatch, block):
    """On JAX the pass runs by compiled blocks (batches padded with weight-0 rows) and
    gives what the uncompiled pass gives; data of other sizes traces nothing new. Blocks
    of 3 (70 rows: a block, then two batches at k = 1, the last padded); of 8, more
    batches than any of these data have: every batch at k = 1."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp.nn.evaluation, "BLOCK_BATCHES", block)
    model = _trained(jax_case)
    traces = _traced(monkeypatch)
    for n in (70, 64, 9, 40):
        data = mlxp.nn.streaming.InMemory(
            jax_case.asarray(X[:n], "float32"), jax_case.asarray(Y[:n])
        )
        loss_fn = mlxp.nn.losses.CrossEntropyLoss()
        compiled = mlxp.nn.evaluation.evaluate(model, data, loss_fn, 16, ("accuracy",))
        eager = mlxp.nn.evaluation.evaluate(model, data, loss_fn, 16, ("accuracy",), False)
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-6)
        assert compiled["accuracy"] == eager["accuracy"]
    assert traces == ([(16, 5)] if block == 8 else [(16, 5), (16, 5)])  # k = 1; k = 3 and 1


class _Untraceable(Layer):
    """The identity, through the host: fine eagerly, refused by a trace."""

    def forward(self, x, training=False):
        return x * float(np.asarray(x).max() > -np.inf)


def test_jax_falls_back_with_a_warning_and_data_errors_stay_errors():
    jax_case = case_named("jax:cpu")
    model = Sequential([Dense(5, 3), _Untraceable()], seed=0)
    Xb, yb = jax_case.asarray(X, "float32"), jax_case.asarray(Y)
    with pytest.warns(RuntimeWarning, match="compiling the evaluation step failed") as caught:
        got = model.evaluate(Xb, yb, loss="cross_entropy", batch_size=16)
    assert [w.filename for w in caught] == [__file__]  # the user's line, not mlxp's
    out = jax_case.to_numpy(model.predict(Xb)).astype(np.float64)
    assert got["accuracy"] == np.mean(out.argmax(axis=1) == Y)
    with pytest.raises(ValueError, match="target must be class indices"):
        _model().evaluate(Xb, jax_case.asarray(Y[:, None]), loss="cross_entropy")


def test_jax_does_not_pad_a_softmax_over_the_batch(monkeypatch):
    """Softmax(axis=0) sees every row of a batch: the padding would change its outputs, so
    JAX evaluates such a model batch by batch, equal to NumPy."""
    jax_case, numpy_case = case_named("jax:cpu"), case_named("numpy:cpu")
    traces = _traced(monkeypatch)
    got = {}
    for case in (jax_case, numpy_case):
        model = Sequential([Dense(5, 3), Softmax(axis=0)], seed=0)
        got[str(case)] = model.evaluate(case.asarray(X), case.asarray(np.eye(3)[Y]), batch_size=16)
    assert got["jax:cpu"]["loss"] == pytest.approx(got["numpy:cpu"]["loss"], rel=1e-5)
    assert traces == []


@pytest.mark.parametrize("block", [3, 8])
def test_jax_predicts_by_compiled_blocks_of_batches(monkeypatch, block):
    """``predict`` with a batch size on JAX: compiled blocks (the padding's outputs dropped)
    give the outputs of one uncompiled batch, and data of any size uses two programs (k
    batches, and one), the model's weights their arguments."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp.nn.evaluation, "BLOCK_BATCHES", block)
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    model = _trained(jax_case)
    for n in (70, 64, 9, 48):
        Xb = jax_case.asarray(X[:n], "float32")
        got = jax_case.to_numpy(model.predict(Xb, batch_size=16))
        assert got.shape == (n, 3)
        np.testing.assert_allclose(got, jax_case.to_numpy(model.infer(Xb)), rtol=1e-5, atol=1e-6)
    program = next(v for k, v in mlxp._jit._JITTED.items() if k[0] == "infer")
    assert program._cache_size() == (1 if block == 8 else 2)


def test_jax_predicts_batch_by_batch_what_it_cannot_compile_or_pad():
    """A layer a trace refuses: a warning, then the batches one by one; a softmax over the
    batch: batch by batch too, each batch normalised over its own rows, as on NumPy."""
    jax_case = case_named("jax:cpu")
    Xb = jax_case.asarray(X, "float32")
    model = Sequential([Dense(5, 3), _Untraceable()], seed=0)
    with pytest.warns(RuntimeWarning, match="compiling the inference step failed"):
        got = jax_case.to_numpy(model.predict(Xb, batch_size=16))
    np.testing.assert_allclose(got, jax_case.to_numpy(model.predict(Xb)), rtol=1e-6)
    numpy_case = case_named("numpy:cpu")
    outputs = []
    for case in (jax_case, numpy_case):
        model = Sequential([Dense(5, 3), Softmax(axis=0)], seed=0)
        outputs.append(case.to_numpy(model.predict(case.asarray(X, "float32"), batch_size=16)))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5)
    np.testing.assert_allclose(outputs[0][64:].sum(axis=0), 1.0, rtol=1e-5)  # the short batch


class _Scale(Layer):
    """y = s·x, ``s`` not in its configuration (a user's layer may hold more than it says)."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x, training=False):
        return x * self.s

    def _input_grad(self, grad):
        return grad * self.s


def test_jax_programs_of_users_layers_are_the_models_own(monkeypatch):
    """Two models whose user layers print alike but compute differently: each predicts and
    evaluates with its own layers, not with the first model's compiled program; mlxp's own
    layers, described whole by their configuration, share one program."""
    jax_case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    Xb = jax_case.asarray(X, "float32")
    for s in (1.0, 100.0):
        model = Sequential([Dense(5, 3), _Scale(s)], seed=0)
        batched = jax_case.to_numpy(model.predict(Xb, batch_size=16))
        np.testing.assert_allclose(batched, jax_case.to_numpy(model.infer(Xb)), rtol=1e-6)
        got = model.evaluate(Xb, jax_case.asarray(np.eye(3)[Y]), batch_size=16)["loss"]
        expected = np.mean((jax_case.to_numpy(model.infer(Xb)) - np.eye(3)[Y]) ** 2)
        assert got == pytest.approx(expected, rel=1e-5)
    for seed in (0, 1):
        Sequential([Dense(5, 3), ReLU()], seed=seed).predict(Xb, batch_size=16)
    programs = [k for k in mlxp._jit._JITTED if k[0] == "infer"]
    assert len(programs) == 3  # one per user model, one for both of mlxp's


def test_jax_predict_and_evaluate_leave_the_layers_as_they_were():
    """Gradients and forward caches of a hand-written step survive a compiled predict and
    evaluate (of this model, and of another traced through the same program)."""
    jax_case = case_named("jax:cpu")
    Xb, yb = jax_case.asarray(X, "float32"), jax_case.asarray(Y)
    model, other = (Sequential([Dense(5, 4), ReLU(), Dense(4, 3)], seed=s) for s in (0, 1))
    loss = mlxp.nn.losses.CrossEntropyLoss()
    model.predict(Xb)  # builds it
    loss.forward(model.forward(Xb, training=True), yb)
    model.backward(loss.backward())
    grads = model.gradients()
    caches = [layer._cache for layer in model.layers]
    other.predict(Xb, batch_size=16)
    model.predict(Xb, batch_size=16)
    model.evaluate(Xb, yb, loss="cross_entropy", batch_size=16)
    assert model.gradients().keys() == grads.keys()
    for name, g in grads.items():
        assert model.gradients()[name] is g
    assert [layer._cache for layer in model.layers] == caches


class _ScaledCrossEntropy(mlxp.nn.losses.CrossEntropyLoss):
    """A user's loss whose repr does not show the setting it keeps for itself."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def value_and_grad(self, pred, target, weights=None):
        value, grad = super().value_and_grad(pred, target, weights)
        return self.scale * value, self.scale * grad


def test_a_users_loss_gets_a_compiled_pass_of_its_own():
    """Two user losses with equal reprs but different settings: each compiled pass gives
    its own loss (keyed by the object, :func:`mlxp._jit.config_key`), not the first's."""
    jax_case = case_named("jax:cpu")
    model = _trained(jax_case)
    data = mlxp.nn.streaming.InMemory(jax_case.asarray(X, "float32"), jax_case.asarray(Y))
    losses = [
        mlxp.nn.evaluation.evaluate(model, data, _ScaledCrossEntropy(s), 16, ())["loss"]
        for s in (1.0, 2.0)
    ]
    assert repr(_ScaledCrossEntropy(1.0)) == repr(_ScaledCrossEntropy(2.0))
    assert losses[1] == pytest.approx(2 * losses[0], rel=1e-6)
