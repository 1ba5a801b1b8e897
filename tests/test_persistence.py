"""Fitted linear estimators round-trip through mlxp.save/mlxp.load on every backend:
same predictions, fitted attributes and parameters, arrays on the backend asked for."""

from __future__ import annotations

import json

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
from mlxp.io import write_arrays
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.optim import SGD, Adam, Optimizer
from tests.conftest import widest_float

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 3))
Y1 = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=60)
Y2 = np.stack([Y1, X[:, 0] - 1.0], axis=1)
MULTI = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])  # three classes
STRINGS = np.array(["cat", "dog"])[(X[:, 1] > 0).astype(int)]

CASES = {
    "LinearRegression 1-D y": (lambda: LinearRegression(), Y1),
    "LinearRegression 2-D y": (lambda: LinearRegression(fit_intercept=False), Y2),
    "Ridge": (lambda: Ridge(alpha=0.5, optimizer=Adam(0.01, betas=(0.8, 0.9))), Y2),
    "LogisticRegression binary": (lambda: LogisticRegression(C=float("inf")), Y1 > 0),
    "LogisticRegression multiclass": (lambda: LogisticRegression(class_weight="balanced"), MULTI),
    "LogisticRegression strings": (lambda: LogisticRegression(class_weight={"dog": 2.0}), STRINGS),
}
SCALARS = ("n_features_in_", "n_iter_", "solver_")


def _labels(backend, y):
    """Targets on the backend; string labels stay NumPy."""
    return y if y.dtype.kind == "U" else backend.asarray(y)


def _params(model):
    """get_params with optimisers by value (class, lr and hyperparameters)."""
    return {k: repr(v) if isinstance(v, Optimizer) else v for k, v in model.get_params().items()}


def _outputs(model, X_in):
    out = {"predict": mlxp.to_numpy(model.predict(X_in))}
    if hasattr(model, "predict_proba"):
        out["predict_proba"] = mlxp.to_numpy(model.predict_proba(X_in))
    return out


@pytest.mark.parametrize("case", CASES, ids=str)
def test_round_trip_on_the_same_backend(backend, case, tmp_path):
    make, y = CASES[case]
    dtype, _ = widest_float(backend)
    X_in = backend.asarray(X, dtype)
    model = make().fit(X_in, _labels(backend, y))
    mlxp.save(model, tmp_path / "model.mlxp")
    loaded = mlxp.load(tmp_path / "model.mlxp", backend=str(backend))

    assert type(loaded) is type(model)
    assert _params(loaded) == _params(model)
    for name, value in _outputs(model, X_in).items():
        got = mlxp.to_numpy(getattr(loaded, name)(X_in))
        if value.dtype.kind == "f" and backend.device_name.startswith("cuda"):
            # A loaded coef_ is contiguous where the fitted one may be a transposed view, for
            # which a GPU's BLAS may pick another kernel, summing in another order.
            tol = 8 * np.finfo(value.dtype).eps
            np.testing.assert_allclose(got, value, rtol=tol, atol=tol * np.abs(value).max())
        else:
            np.testing.assert_array_equal(got, value)
    for name in ("coef_", "intercept_"):
        ours, theirs = getattr(loaded, name), getattr(model, name)
        np.testing.assert_array_equal(mlxp.to_numpy(ours), mlxp.to_numpy(theirs))
        assert aac.array_namespace(ours) is aac.array_namespace(theirs)
        assert aac.device(ours) == backend.device and ours.dtype == theirs.dtype
    for name in SCALARS:
        assert getattr(loaded, name, None) == getattr(model, name, None)
    if hasattr(model, "classes_"):
        assert isinstance(loaded.classes_, np.ndarray)
        assert loaded.classes_.dtype == model.classes_.dtype
        np.testing.assert_array_equal(loaded.classes_, model.classes_)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_saved_from_numpy_loads_onto_every_backend(backend, case, tmp_path):
    make, y = CASES[case]
    model = make().fit(X, y)
    mlxp.save(model, tmp_path / "model.mlxp")
    loaded = mlxp.load(tmp_path / "model.mlxp", backend=str(backend))

    dtype, rtol = widest_float(backend)
    assert aac.device(loaded.coef_) == backend.device
    assert loaded.coef_.dtype == backend.dtype(dtype)
    assert _params(loaded) == _params(model)
    expected = _outputs(model, X)
    for name, value in _outputs(loaded, backend.asarray(X, dtype)).items():
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(value, expected[name], rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(value, expected[name])


@pytest.mark.parametrize("cls", [LinearRegression, Ridge, LogisticRegression])
def test_an_unfitted_estimator_cannot_be_saved(cls, tmp_path):
    with pytest.raises(mlxp.NotFittedError):
        mlxp.save(cls(), tmp_path / "model.mlxp")
    assert not (tmp_path / "model.mlxp").exists()


@pytest.mark.filterwarnings("ignore::mlxp.exceptions.ConvergenceWarning")  # 20 epochs
def test_a_loaded_estimator_refits_as_a_fresh_one(tmp_path):
    model = Ridge(alpha=2.0, solver="sgd", optimizer=Adam(0.05), random_state=3, max_iter=20)
    mlxp.save(model.fit(X, Y1), tmp_path / "model.mlxp")
    loaded = mlxp.load(tmp_path / "model.mlxp")
    assert loaded.optimizer is not model.optimizer
    np.testing.assert_array_equal(loaded.fit(X, Y1).coef_, model.fit(X, Y1).coef_)


class _MySGD(SGD):
    """An optimiser mlxp's table does not know."""


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(optimizer=_MySGD(0.1)), "optimizer=_MySGD"),
        (dict(optimizer=SGD(np.asarray(0.1))), "with a float lr"),
        (dict(random_state=np.random.default_rng(0)), "random_state=Generator"),
    ],
)
def test_parameters_without_a_plain_form_are_refused(params, match, tmp_path):
    model = Ridge(**params).fit(X, Y1)
    with pytest.raises(TypeError, match=match):
        mlxp.save(model, tmp_path / "model.mlxp")
    assert not (tmp_path / "model.mlxp").exists()


def test_an_optimizer_is_rebuilt_only_from_mlxp_optim(tmp_path):
    optimizer = {"optimizer": "os.system", "lr": 0.1, "hyperparameters": {}}
    config = {
        "class": "Ridge",
        "params": {**Ridge().get_params(), "optimizer": optimizer},
        "fitted": {"n_features_in_": 1, "n_iter_": 1, "solver_": "cholesky"},
    }
    arrays = {"coef_": np.ones(1), "intercept_": np.zeros(())}
    write_arrays(tmp_path / "m.mlxp", arrays, {"format": "mlxp-1", "mlxp": json.dumps(config)})
    with pytest.raises(ValueError, match="not one of"):
        mlxp.load(tmp_path / "m.mlxp")


@pytest.mark.parametrize("labels", ["int32", "uint8", "float32", "bool"])
def test_a_network_classifier_keeps_its_labels_dtype_and_continues_after_a_load(labels, tmp_path):
    """A loaded MLPClassifier predicts labels of the dtype it was fitted on (they came
    back as int64 or float64), and its ``partial_fit`` continues the loaded network with
    a fresh optimiser (the optimiser's state is not saved; it raised AttributeError),
    matching one epoch of the saved model from a fresh optimiser."""
    from mlxp.nn import MLPClassifier

    y = (X[:, 0] > 0).astype(labels)
    model = MLPClassifier((4,), max_iter=3, random_state=0, shuffle=False)
    with pytest.warns(mlxp.exceptions.ConvergenceWarning):
        model.fit(X, y)
    mlxp.save(model, tmp_path / "model.mlxp")
    loaded = mlxp.load(tmp_path / "model.mlxp")
    assert loaded.classes_.dtype == model.classes_.dtype == np.dtype(labels)
    assert loaded.predict(X).dtype == np.dtype(labels)
    loaded.partial_fit(X, y)
    model._optimizer_state = None  # the saved model, continued from a fresh optimiser
    model.partial_fit(X, y)
    for got, expected in zip(loaded.coefs_, model.coefs_, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
