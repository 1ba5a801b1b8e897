"""Sequential and the MLP estimators: gradients, training, reproducibility across backends."""

from __future__ import annotations

import json

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
from mlxp.nn import (
    BatchNorm1d,
    BatchNorm2d,
    CNNClassifier,
    Conv2D,
    CrossEntropyLoss,
    Dense,
    Dropout,
    EarlyStopping,
    Flatten,
    MaxPool2D,
    MLPClassifier,
    MLPRegressor,
    MSELoss,
    ReLU,
    Sequential,
    Tanh,
)
from tests.conftest import require_float64, widest_float


def _net(seed=0):
    return Sequential([Dense(4, 6), Tanh(), Dense(6, 5), ReLU(), Dense(5, 3)], seed=seed)


def _conv_net(seed=0):
    return Sequential(
        [Conv2D(2, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(18, 3)], seed=seed
    )


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_backward_matches_finite_differences_end_to_end(backend, kind):
    require_float64(backend)
    rng = np.random.default_rng(0)
    if kind == "dense":
        X, model = rng.normal(size=(7, 4)), _net()
    else:
        X, model = rng.normal(size=(7, 2, 4, 6)), _conv_net()
    y = rng.integers(0, 3, size=7)
    loss = CrossEntropyLoss()
    Xb, yb = backend.asarray(X), backend.asarray(y)
    model.build(backend.xp, backend.device, backend.xp.float64)
    loss.forward(model.forward(Xb, training=True), yb)
    grad_input = backend.to_numpy(model.backward(loss.backward()))
    analytic = {k: backend.to_numpy(v) for k, v in model.gradients().items()}
    weights = {k: backend.to_numpy(v) for k, v in model.parameters.items()}

    def value(ws, x=X):
        model.set_weights({k: backend.asarray(v) for k, v in ws.items()})
        return float(loss.forward(model.forward(backend.asarray(x)), yb))

    h = 1e-6
    for name, w in weights.items():
        for i in [tuple(j) for j in np.ndindex(w.shape)][:6]:
            up, down = dict(weights), dict(weights)
            up[name], down[name] = w.copy(), w.copy()
            up[name][i] += h
            down[name][i] -= h
            numeric = (value(up) - value(down)) / (2 * h)
            assert analytic[name][i] == pytest.approx(numeric, rel=1e-5, abs=1e-9), name
    for index in [(2, 1), (4, 3)] if kind == "dense" else [(2, 1, 1, 2), (5, 0, 3, 5)]:
        step = np.zeros_like(X)
        step[index] = h
        numeric = (value(weights, X + step) - value(weights, X - step)) / (2 * h)
        assert grad_input[index] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_same_seed_same_trained_weights_on_every_backend(backend):
    require_float64(backend)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)

    def train(to):
        model = Sequential([Dense(4, 8), ReLU(), Dropout(0.2), Dense(8, 3)], seed=7)
        model.fit(to(X), to(y), loss="cross_entropy", epochs=3, batch_size=16, progress=False)
        return {k: mlxp.to_numpy(v) for k, v in model.parameters.items()}

    reference = train(lambda a: a)
    trained = train(backend.asarray)
    for name, value in reference.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-10, atol=1e-12)


def test_fit_history_predict_evaluate(backend, dtype, capsys):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1
    model = Sequential([Dense(3, 16), ReLU(), Dense(16, 1)], seed=0)
    Xb, yb = backend.asarray(X, dtype), backend.asarray(y, dtype)
    history = model.fit(Xb, yb, loss=MSELoss(), epochs=30, batch_size=20, validation_data=(Xb, yb))
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal
    assert len(history["loss"]) == 30 and history["loss"][-1] < 0.1 * history["loss"][0]
    assert set(history) == {"loss", "val_loss"}
    pred = model.predict(Xb, batch_size=64)
    assert aac.device(pred) == backend.device and pred.dtype == backend.dtype(dtype)
    np.testing.assert_allclose(  # atol: outputs near 0 (5e-4), where a GPU kernel chosen
        backend.to_numpy(pred), backend.to_numpy(model.predict(Xb)), rtol=1e-5, atol=1e-6
    )  # for another batch shape rounds otherwise
    assert model.evaluate(Xb, yb)["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way
def test_divergence_keeps_the_last_good_weights():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 3)) * 100, rng.normal(size=(50, 1)) * 100
    model = Sequential([Dense(3, 8), ReLU(), Dense(8, 1)], seed=0)
    model.fit(X, y, epochs=1, progress=False, optimizer=mlxp.optim.SGD(1e-9))
    good = {k: np.array(v) for k, v in model.parameters.items()}
    with pytest.raises(mlxp.exceptions.DivergenceError, match="learning rate 1e\\+06"):
        model.fit(X, y, epochs=5, progress=False, optimizer=mlxp.optim.SGD(1e6))
    for name, value in model.parameters.items():  # diverged in epoch 1: back to the start
        np.testing.assert_array_equal(value, good[name])


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 1))  # pure noise: overfits
    X_val, y_val = rng.normal(size=(40, 5)), rng.normal(size=(40, 1))
    model = Sequential([Dense(5, 64), ReLU(), Dense(64, 1)], seed=0)
    stop = EarlyStopping("val_loss", patience=3)
    history = model.fit(
        X,
        y,
        epochs=200,
        batch_size=8,
        validation_data=(X_val, y_val),
        callbacks=[stop],
        optimizer=mlxp.optim.Adam(1e-2),
        progress=False,
    )
    assert len(history["loss"]) < 200
    best = min(history["val_loss"])
    assert model.evaluate(X_val, y_val)["loss"] == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("optimizer", [mlxp.optim.Adam, mlxp.optim.AdamW])
def test_training_writes_into_no_array_it_did_not_make(optimizer):
    """The loop lets Adam write into the flat buffers it owns (NumPy): the weights and the
    optimiser state of an earlier fit, a snapshot or a state dict, are left as they were."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, size=40)
    model, opt = Sequential([Dense(5, 8), ReLU(), Dense(8, 3)], seed=0), optimizer(1e-2)
    model.build(np, "cpu", np.float32)
    first = model.get_weights()
    kwargs = {"loss": "cross_entropy", "batch_size": 8, "progress": False, "optimizer": opt}
    model.fit(X, y, epochs=2, **kwargs)
    snapshot, saved = model.get_weights(), opt.state_dict()
    copies = [{k: v.copy() for k, v in d.items()} for d in (first, snapshot)]
    moments = {
        (n, k): v.copy() for n, s in saved["state"].items() for k, v in s.items() if k != "step"
    }
    model.fit(X, y, epochs=2, **kwargs)
    for held, copy in zip((first, snapshot), copies, strict=True):
        for name, value in held.items():
            np.testing.assert_array_equal(value, copy[name])
    for (name, key), value in moments.items():
        np.testing.assert_array_equal(saved["state"][name][key], value)
    assert any(not np.array_equal(v, snapshot[k]) for k, v in model.get_weights().items())


def test_batchnorm_and_dropout_inside_a_model_train_and_infer():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(128, 6)), rng.integers(0, 2, size=128)
    model = Sequential([Dense(6, 16), BatchNorm1d(16), ReLU(), Dropout(0.3), Dense(16, 2)], seed=0)
    history = model.fit(X, y, loss="cross_entropy", epochs=20, batch_size=32, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_array_equal(model.predict(X), model.predict(X))  # eval is deterministic


def test_a_training_forward_hands_out_the_running_statistics_and_writes_none():
    X = np.random.default_rng(6).normal(size=(8, 4)) + 2.0
    model = Sequential([Dense(4, 3), BatchNorm1d(3), ReLU(), Dense(3, 2)], seed=0)
    model.build(np, "cpu", np.float64)
    before = model.get_weights()
    model.forward(X, training=True)
    assert all(value is before[k] for k, value in model.get_weights().items())
    updates = model.state_updates()
    assert set(updates) == {"1.running_mean", "1.running_var"}
    assert not np.allclose(updates["1.running_mean"], 0.0)
    model.set_weights(updates)  # how a loop written by hand commits them
    np.testing.assert_array_equal(model.get_weights()["1.running_var"], updates["1.running_var"])
    model.clear_caches()
    assert model.state_updates() == {}


@pytest.mark.parametrize("rank", [2, 4])
def test_fit_moves_the_running_statistics_as_torch_does(backend, rank):
    """BatchNorm first, so that its batches are the data's whatever the weights do: after
    two epochs in stored order (a short last batch; jax.jit on JAX) the running statistics
    are torch.nn.BatchNorm1d/2d's after the same batches, and nothing of the last step
    (cache, pending update) stays on the layers."""
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(7)
    if rank == 2:
        X = rng.normal(size=(40, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.0]
        model = Sequential([BatchNorm1d(3, momentum=0.2), Dense(3, 2)], seed=0)
        ref = torch.nn.BatchNorm1d(3, momentum=0.2, dtype=torch.float64)
    else:
        X = rng.normal(size=(40, 2, 3, 3)) * 2 + 1
        model = Sequential([BatchNorm2d(2, momentum=0.2), Flatten(), Dense(18, 2)], seed=0)
        ref = torch.nn.BatchNorm2d(2, momentum=0.2, dtype=torch.float64)
    y = rng.normal(size=(40, 2))
    Xb, yb = backend.asarray(X, dtype), backend.asarray(y, dtype)
    model.fit(Xb, yb, epochs=2, batch_size=16, shuffle=False, progress=False)
    for _ in range(2):
        for i in range(0, 40, 16):
            ref(torch.tensor(X[i : i + 16]))
    weights = model.get_weights()
    for key, theirs in [("0.running_mean", ref.running_mean), ("0.running_var", ref.running_var)]:
        np.testing.assert_allclose(
            backend.to_numpy(weights[key]), theirs.numpy(), rtol=10 * rtol, atol=10 * rtol
        )
    assert model.state_updates() == {}
    assert all(layer._cache == {} and layer.grads == {} for layer in model.layers)


# --------------------------------------------------------------------------- estimators
def _digits_split():
    from mlxp.datasets import load_digits

    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:450], order[450:]
    return X[train] / 16, X[test] / 16, y[train], y[test]


def test_mlp_classifier_reaches_97_percent_on_digits():
    X_train, X_test, y_train, y_test = _digits_split()
    clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=0)
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.97
    assert [w.shape for w in clf.coefs_] == [(64, 256), (256, 10)]
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_ == clf.loss_curve_[-1]
    proba = clf.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X_test))


def test_mlp_regressor_fits_several_targets(backend):
    require_float64(backend)
    rng = np.random.default_rng(6)
    X = rng.uniform(-1, 1, size=(300, 2))
    Y = np.column_stack([np.sin(2 * X[:, 0]), X[:, 0] * X[:, 1]])
    reg = MLPRegressor(
        (32, 32), activation="tanh", max_iter=400, random_state=0, learning_rate_init=1e-2
    )
    reg.fit(backend.asarray(X), backend.asarray(Y))
    pred = reg.predict(backend.asarray(X))
    assert pred.shape == (300, 2) and aac.device(pred) == backend.device
    assert reg.score(backend.asarray(X), backend.asarray(Y)) > 0.9


def test_partial_fit_takes_labels_on_the_device(backend):
    """``partial_fit`` with y in X's library (on a GPU: CuPy or CUDA labels) looks the labels
    up among ``classes`` on the host, as ``fit`` does; it raised TypeError converting them
    to NumPy. The same model as from NumPy labels."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0)
    Xb = backend.asarray(X, widest_float(backend)[0])
    models = [MLPClassifier((4,), random_state=0) for _ in range(2)]
    for model, labels in zip(models, (backend.asarray(y), y), strict=True):
        for _ in range(2):
            model.partial_fit(Xb, labels, classes=np.arange(4))
    np.testing.assert_array_equal(models[0].classes_, np.arange(4))
    for a, b in zip(models[0].coefs_, models[1].coefs_, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_mlp_labels_early_stopping_and_bad_input():
    X_train, X_test, y_train, y_test = _digits_split()
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = MLPClassifier((32,), early_stopping=True, random_state=0, max_iter=200)
    clf.fit(X_train, names[y_train])
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert (clf.predict(X_test) == names[y_test]).mean() > 0.9
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier().fit(X_train, np.zeros(len(X_train)))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X_train, y_train)
    with pytest.raises(ValueError, match="'activation' parameter"):
        MLPRegressor(activation="swish").fit(X_train, y_train)
    with pytest.raises(mlxp.NotFittedError):
        MLPRegressor().predict(X_test)


# --------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def trained_classifier():
    X_train, X_test, y_train, _ = _digits_split()
    clf = MLPClassifier((32,), max_iter=20, random_state=0)
    with pytest.warns(mlxp.ConvergenceWarning):
        clf.fit(X_train, y_train)
    return clf, X_test


def test_saved_models_load_on_every_backend_with_identical_predictions(
    backend, trained_classifier, tmp_path
):
    require_float64(backend)
    clf, X_test = trained_classifier
    path = tmp_path / "digits.mlxp"
    mlxp.save(clf, path)
    loaded = mlxp.load(path, backend=mlxp._backend.make_backend(backend.name, backend.device))
    assert aac.device(loaded.coefs_[0]) == backend.device
    np.testing.assert_array_equal(
        backend.to_numpy(loaded.predict(backend.asarray(X_test))), clf.predict(X_test)
    )
    np.testing.assert_allclose(
        backend.to_numpy(loaded.predict_proba(backend.asarray(X_test))),
        clf.predict_proba(X_test),
        rtol=1e-10,
        atol=1e-12,
    )
    assert loaded.get_params() == clf.get_params() and loaded.loss_curve_ == clf.loss_curve_

    net = _net(seed=3)
    X = np.random.default_rng(0).normal(size=(5, 4))
    expected = net.predict(X)
    mlxp.save(net, tmp_path / "net.mlxp")
    again = mlxp.load(tmp_path / "net.mlxp", backend=f"{backend.name}:{backend.device_name}")
    np.testing.assert_allclose(
        backend.to_numpy(again.predict(backend.asarray(X))), expected, rtol=1e-12
    )


def test_bfloat16_networks_load_as_they_were_saved(backend, tmp_path):
    """A network trained in bfloat16 (PyTorch, JAX) keeps that dtype through its file, bit
    for bit; on a library without bfloat16 it loads as float32, the same values."""
    bfloat16 = getattr(backend.xp, "bfloat16", None)
    if bfloat16 is None:
        pytest.skip(f"{backend.name} has no bfloat16")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    X_in = backend.xp.astype(backend.asarray(X), bfloat16)
    net = _net(seed=3)
    net.fit(X_in, backend.asarray(y), epochs=2, loss="cross_entropy", progress=False)
    assert net.dtype == bfloat16
    path = tmp_path / "bf16.mlxp"
    mlxp.save(net, path)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}

    def bits(w):  # float32 of a bfloat16's bits, comparable on NumPy
        return backend.to_numpy(backend.xp.astype(w, backend.xp.float32))

    weights = {k: bits(w) for k, w in net.get_weights().items()}
    again = mlxp.load(path, backend=str(backend))
    assert again.dtype == bfloat16
    for name, w in again.get_weights().items():
        assert w.dtype == bfloat16 and aac.device(w) == backend.device
        np.testing.assert_array_equal(bits(w), weights[name])
    predicted, expected = bits(again.predict(X_in)), bits(net.predict(X_in))
    if backend.device_name.startswith("cuda"):  # its BLAS may pick a kernel by alignment
        tol = 4 * 2.0**-8  # four of bfloat16's roundings
        np.testing.assert_allclose(predicted, expected, rtol=tol, atol=tol * abs(expected).max())
    else:
        np.testing.assert_array_equal(predicted, expected)
    on_numpy = mlxp.load(path, backend="numpy")
    for name, w in on_numpy.get_weights().items():
        assert w.dtype == np.float32
        np.testing.assert_array_equal(w, weights[name])


def test_damaged_model_files_are_refused(trained_classifier, tmp_path):
    clf, _ = trained_classifier
    path = tmp_path / "model.mlxp"
    mlxp.save(clf, path)
    data = path.read_bytes()
    (tmp_path / "cut.mlxp").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        mlxp.load(tmp_path / "cut.mlxp")
    tampered = bytearray(data)
    tampered[-5] ^= 0xFF
    (tmp_path / "tampered.mlxp").write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match=r"checksum|damaged|tamper"):
        mlxp.load(tmp_path / "tampered.mlxp")


def test_inference_elsewhere_leaves_the_model_where_it_is(trained_classifier):
    strict = pytest.importorskip("array_api_strict")
    clf, X_test = trained_classifier
    device1 = strict.asarray(X_test, device=strict.Device("device1"))
    pred = clf.predict(device1)  # weights copied to device1 for this call only
    assert aac.device(pred) == strict.Device("device1")
    assert isinstance(clf.coefs_[0], np.ndarray)
    assert all(isinstance(v, np.ndarray) for v in clf._model.parameters.values())
    np.testing.assert_array_equal(mlxp.to_numpy(pred), clf.predict(X_test))


def test_cnn_classifier_reaches_98_percent_on_digits():
    X_train, X_test, y_train, y_test = _digits_split()
    cnn = CNNClassifier(image_shape=(1, 8, 8), tol=1e-2, random_state=0).fit(X_train, y_train)
    assert cnn.score(X_test, y_test) >= 0.98
    images = CNNClassifier(tol=1e-2, random_state=0, max_iter=3)
    with pytest.warns(mlxp.ConvergenceWarning):
        images.fit(X_train.reshape(-1, 1, 8, 8), y_train)
    flat = CNNClassifier(image_shape=(1, 8, 8), tol=1e-2, random_state=0, max_iter=3)
    with pytest.warns(mlxp.ConvergenceWarning):
        flat.fit(X_train, y_train)
    np.testing.assert_allclose(images.coefs_[-1], flat.coefs_[-1])  # same model either way
    np.testing.assert_array_equal(images.predict(X_test.reshape(-1, 1, 8, 8)), flat.predict(X_test))
    with pytest.raises(ValueError, match="image_shape"):
        CNNClassifier(image_shape=(1, 7, 7)).fit(X_train, y_train)


def test_learning_rate_schedules_drive_the_optimizer():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=(64, 1))
    model = Sequential([Dense(3, 1)], seed=0)
    opt = mlxp.optim.SGD(0.1)
    model.fit(
        X,
        y,
        epochs=4,
        optimizer=opt,
        progress=False,
        schedule=mlxp.optim.StepLR(0.1, step_size=2, gamma=0.5),
    )
    assert opt.lr == pytest.approx(0.05)  # epochs 0, 1 at 0.1; epochs 2, 3 at 0.05
    plateau = mlxp.optim.ReduceLROnPlateau(0.1, factor=0.5, patience=0, threshold=0.5)
    noise = rng.normal(size=(64, 1))
    model.fit(X, noise, epochs=6, optimizer=opt, progress=False, schedule=plateau)
    assert opt.lr < 0.1
