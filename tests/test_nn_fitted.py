"""What the nn estimators keep: every declared weight in ``coefs_`` and the L2 penalty,
no trace of the data they predicted on; one wording of hyperparameter errors.

Oracles: the shapes the architecture implies, the penalty recomputed from the network's
weights, weak references and pickle sizes.
"""

from __future__ import annotations

import gc
import pickle
import weakref

import numpy as np
import pytest

import mlxp
import mlxp.nn.evaluation
from mlxp.exceptions import InvalidParameterError
from mlxp.nn import (
    CNNClassifier,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    MLPClassifier,
    MLPRegressor,
    ReLU,
    Reshape,
    Sequential,
    Softmax,
)
from mlxp.nn.normalization import BatchNorm1d


def _images(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 64))
    return X, (X[:, :8].sum(axis=1) > 0).astype(int) + (X[:, 8:16].sum(axis=1) > 0)


def _one_conv_cnn(**params) -> CNNClassifier:
    settings = {"image_shape": (1, 8, 8), "max_iter": 1, "random_state": 0}
    cnn = CNNClassifier(conv_layers=((4, 3),), dense_units=(16,), **{**settings, **params})
    X, y = _images()
    with pytest.warns(mlxp.ConvergenceWarning):
        return cnn.fit(X, y)


def test_cnn_coefs_hold_the_kernels_in_layer_order():
    cnn = _one_conv_cnn()
    assert [c.shape for c in cnn.coefs_] == [(4, 1, 3, 3), (64, 16), (16, 3)]
    assert [b.shape for b in cnn.intercepts_] == [(4,), (16,), (3,)]
    assert cnn.n_layers_ == len(cnn.coefs_) + 1


def test_cnn_loss_curve_penalises_every_weight_kernels_included(monkeypatch):
    recorded = []
    fit = Sequential.fit

    def recording_fit(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        recorded.append(history)
        return history

    monkeypatch.setattr(Sequential, "fit", recording_fit)
    alpha = 0.5
    cnn = _one_conv_cnn(alpha=alpha)
    weights = [layer.params["W"] for layer in cnn._model.layers if "W" in layer.params]
    assert len(weights) == 3  # the kernel and the two dense weights
    n = _images()[0].shape[0]
    penalty = 0.5 * alpha * sum(float(np.sum(W**2)) for W in weights) / n
    assert cnn.loss_curve_[0] - recorded[0]["loss"][0] == pytest.approx(penalty, rel=1e-9)


def test_mlp_coefs_and_penalty_are_the_dense_weights():
    X, y = _images()
    clf = MLPClassifier((8,), max_iter=2, random_state=0)
    with pytest.warns(mlxp.ConvergenceWarning):
        clf.fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 8), (8, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (3,)]
    assert clf.n_layers_ == 3


def _fitted_models():
    X, y = _images()
    clf = MLPClassifier((8,), max_iter=2, random_state=0)
    reg = MLPRegressor((8,), max_iter=2, random_state=0)
    cnn = CNNClassifier(((2, 3),), (8,), image_shape=(1, 8, 8), max_iter=1, random_state=0)
    with pytest.warns(mlxp.ConvergenceWarning):
        models = [clf.fit(X, y), reg.fit(X, y.astype(float)), cnn.fit(X, y)]
    net = Sequential([Dense(64, 8), ReLU(), Dense(8, 1)], seed=0)
    net.fit(X, y[:, None].astype(float), epochs=1, progress=False)
    return [*models, net]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "evaluate"])
def test_inference_keeps_nothing_of_the_data(method):
    for model in _fitted_models():
        if not hasattr(model, method):
            continue
        before = len(pickle.dumps(model))
        X = np.random.default_rng(1).normal(size=(2000, 64))  # 1 MB, fresh
        args = (X, np.zeros((2000, 1))) if method == "evaluate" else (X,)
        if method == "score":
            args = (X, np.zeros(2000, dtype=int))
        getattr(model, method)(*args)
        assert len(pickle.dumps(model)) < before + X.nbytes // 100, (model, method)
        ref = weakref.ref(X)
        del X, args
        gc.collect()
        assert ref() is None, (model, method)


def test_training_leaves_no_batch_on_the_layers():
    X, y = _images()
    net = Sequential([Reshape((1, 8, 8)), Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten()])
    net.layers.append(Dense(18, 3))
    net.fit(X, y, loss="cross_entropy", epochs=1, progress=False, validation_data=(X, y))
    assert all(layer._cache == {} for layer in net.layers)


def test_every_layer_can_skip_its_input_gradient():
    x = np.random.default_rng(2).normal(size=(4, 3))
    for layer in [ReLU(), Softmax(), Dropout(0.5), BatchNorm1d(3), Dense(3, 3)]:
        Sequential([layer], seed=0).build(np, "cpu", np.float64)
        layer.forward(x, training=True)
        assert layer.backward(np.ones((4, 3)), input_grad=False) is None


def test_hyperparameter_errors_have_one_wording():
    expected = (
        "The 'p' parameter of Dropout must be a float in the range [0.0, 1.0). Got 1.0 instead."
    )
    with pytest.raises(InvalidParameterError) as info:
        Dropout(1.0)
    assert str(info.value) == expected
    with pytest.raises(InvalidParameterError, match="'alpha' parameter of MLPRegressor"):
        MLPRegressor(alpha=-1.0).fit(*_images())
    with pytest.raises(InvalidParameterError, match="'conv_layers' parameter of CNNClassifier"):
        CNNClassifier(conv_layers=((4, 0),)).fit(*_images())


def test_model_files_name_only_known_layers():
    config = {"class": "Sequential", "seed": 0, "layers": [{"class": "Generator", "config": {}}]}
    with pytest.raises(ValueError, match="Unknown layer 'Generator'"):
        Sequential._from_model_state(config, {})


# --------------------------------------------------------------------------- robustness
def _estimators():
    cnn = CNNClassifier(((2, 3),), (8,), image_shape=(1, 8, 8), max_iter=4, random_state=0)
    return {
        "MLPClassifier": MLPClassifier((8,), max_iter=4, random_state=0),
        "MLPRegressor": MLPRegressor((8,), max_iter=4, random_state=0),
        "CNNClassifier": cnn,
    }


def _data(backend, name):
    X, y = _images(60)
    return backend.asarray(X), backend.asarray(y.astype(float) if "Regressor" in name else y)


def _state(model, backend):
    out = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    return {
        "out": backend.to_numpy(out(_data(backend, "")[0])),
        "coefs": [backend.to_numpy(c) for c in model.coefs_],
        "n_iter": model.n_iter_,
        "loss_curve": list(model.loss_curve_),
    }


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor", "CNNClassifier"])
def test_an_interrupted_warm_start_leaves_the_old_model(backend, name, monkeypatch):
    model = _estimators()[name]
    X, y = _data(backend, name)
    with pytest.warns(mlxp.ConvergenceWarning):
        model.fit(X, y)
    before = _state(model, backend)
    update, calls = mlxp.optim.Adam.update, []

    def interrupted(self, params, grads, state, lr=None, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # two steps change the weights (in place on NumPy), then Ctrl-C
            raise KeyboardInterrupt
        return update(self, params, grads, state, lr, **kwargs)

    monkeypatch.setattr(mlxp.optim.Adam, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.set_params(warm_start=True, compile=False).fit(X, y)  # the eager step
    monkeypatch.undo()
    after = _state(model, backend)
    np.testing.assert_array_equal(after["out"], before["out"])
    for a, b in zip(after["coefs"], before["coefs"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (after["n_iter"], after["loss_curve"]) == (before["n_iter"], before["loss_curve"])
    with pytest.warns(mlxp.ConvergenceWarning):  # and an uninterrupted warm start trains on
        model.fit(X, y)
    assert model.n_iter_ == 4 and model.loss_curve_ != before["loss_curve"]


@pytest.mark.parametrize(
    ("make", "n", "fraction"),
    [
        (lambda f: MLPRegressor(early_stopping=True, validation_fraction=f), 1, 0.1),
        (lambda f: MLPClassifier(early_stopping=True, validation_fraction=f), 2, 0.9),
        (lambda f: CNNClassifier(early_stopping=True, validation_fraction=f), 3, 0.9),
    ],
)
def test_an_early_stopping_split_that_leaves_nothing_to_train_on(make, n, fraction):
    X, y = _images(n)
    y = np.arange(n) % 2
    with pytest.raises(ValueError, match=f"validation_fraction={fraction} of {n} sample"):
        make(fraction).fit(X, y)


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor", "CNNClassifier", "Sequential"])
def test_prediction_runs_in_batches_within_the_memory_budget(backend, name, monkeypatch):
    X, y = _data(backend, name)
    if name == "Sequential":
        model = Sequential([Reshape((1, 8, 8)), Conv2D(1, 2, 3), Flatten(), Dense(72, 1)], seed=0)
        targets = backend.asarray(_images(60)[1][:, None].astype(float))
        model.fit(X, targets, epochs=1, progress=False)
    else:
        model = _estimators()[name].set_params(max_iter=1)
        with pytest.warns(mlxp.ConvergenceWarning):
            model.fit(X, y)
    methods = ["predict", "predict_proba"] if hasattr(model, "predict_proba") else ["predict"]
    whole = {m: backend.to_numpy(getattr(model, m)(X)) for m in methods}
    rows, infer, by_blocks = [], Sequential.infer, mlxp.nn.evaluation.infer_by_blocks

    def spy(self, x):
        if "Tracer" not in type(x).__name__:  # a compiled block's trace: counted below
            rows.append(x.shape[0])
        return infer(self, x)

    def blocks_spy(model, x, batch_size):  # JAX: batches of batch_size rows in compiled blocks
        out = by_blocks(model, x, batch_size)
        if out is not None:
            n = x.shape[0]
            rows.extend(min(batch_size, n - i) for i in range(0, n, batch_size))
        return out

    monkeypatch.setattr(Sequential, "infer", spy)
    monkeypatch.setattr(mlxp.nn.evaluation, "infer_by_blocks", blocks_spy)
    monkeypatch.setattr(mlxp.nn.sequential, "PREDICT_MAX_BYTES", 4_000)
    for m in methods:
        rows.clear()
        got = backend.to_numpy(getattr(model, m)(X))
        np.testing.assert_allclose(got, whole[m], rtol=1e-5, atol=1e-7)
        assert len(rows) > 1 and sum(rows) == X.shape[0], rows
        assert max(rows) * 64 * 4 <= 4_000  # a sample's input alone takes 64 floats
