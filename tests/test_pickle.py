"""Every estimator pickles and unpickles on every backend, the copy predicting the same:
what ``joblib.dump`` and ``cross_validate(..., n_jobs=2)`` rely on."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import mlxp
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import CNNClassifier, Dense, Dropout, MLPClassifier, MLPRegressor, ReLU, Sequential

rng = np.random.default_rng(0)
X = rng.normal(size=(30, 16))
Y_CLASSES = np.arange(30) % 3
Y_REAL = X[:, 0] - 0.5 * X[:, 1]

MODELS = {
    "MLPClassifier": (lambda: MLPClassifier((4,), max_iter=3, random_state=0), Y_CLASSES),
    "MLPRegressor": (lambda: MLPRegressor((4,), max_iter=3, random_state=0), Y_REAL),
    "CNNClassifier": (
        lambda: CNNClassifier(((2, 3),), (4,), image_shape=(1, 4, 4), max_iter=1, random_state=0),
        Y_CLASSES,
    ),
    "Sequential": (
        lambda: Sequential([Dense(16, 4), ReLU(), Dropout(0.2), Dense(4, 1)], seed=0),
        Y_REAL[:, None],
    ),
    "LinearRegression": (LinearRegression, Y_REAL),
    "Ridge": (lambda: Ridge(alpha=0.3), Y_REAL),
    "LogisticRegression": (LogisticRegression, Y_CLASSES),
}


def _fitted(backend, name):
    make, y = MODELS[name]
    model, X_in = make(), backend.asarray(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlxp.ConvergenceWarning)
        if isinstance(model, Sequential):
            model.fit(X_in, backend.asarray(y), epochs=1, progress=False)
        else:
            model.fit(X_in, backend.asarray(y))
    return model, X_in


@pytest.mark.parametrize("name", MODELS)
def test_pickle_round_trip_on_every_backend(backend, name):
    model, X_in = _fitted(backend, name)
    again = pickle.loads(pickle.dumps(model))
    expected = backend.to_numpy(model.predict(X_in))
    np.testing.assert_array_equal(backend.to_numpy(again.predict(X_in)), expected)
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(
            backend.to_numpy(again.predict_proba(X_in)), backend.to_numpy(model.predict_proba(X_in))
        )


@pytest.mark.parametrize("name", ["MLPClassifier", "Sequential"])
def test_an_unpickled_network_trains_on(backend, name):
    """The copy knows where its weights live: a warm start (or another epoch) runs there."""
    model, X_in = _fitted(backend, name)
    again = pickle.loads(pickle.dumps(model))
    y = backend.asarray(MODELS[name][1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlxp.ConvergenceWarning)
        if name == "Sequential":
            again.fit(X_in, y, epochs=1, progress=False)
        else:
            again.set_params(warm_start=True, max_iter=1).fit(X_in, y)
    assert backend.to_numpy(again.predict(X_in)).shape[0] == X.shape[0]


def test_joblib_and_parallel_cross_validation_on_jax(tmp_path):
    """The reported failure: a JAX-fitted MLP in joblib.dump and cross_validate(n_jobs=2)."""
    jnp = pytest.importorskip("jax.numpy")
    joblib = pytest.importorskip("joblib")
    model_selection = pytest.importorskip("sklearn.model_selection")
    clf, X_in = MLPClassifier((4,), max_iter=2, random_state=0), jnp.asarray(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlxp.ConvergenceWarning)
        clf.fit(X_in, jnp.asarray(Y_CLASSES))
        joblib.dump(clf, tmp_path / "clf.joblib")
        again = joblib.load(tmp_path / "clf.joblib")
        np.testing.assert_array_equal(
            np.asarray(again.predict(X_in)), np.asarray(clf.predict(X_in))
        )
        result = model_selection.cross_validate(
            clf, X_in, jnp.asarray(Y_CLASSES), cv=2, n_jobs=2, return_estimator=True
        )
    assert len(result["estimator"]) == 2
    assert all(type(e.coefs_[0]) is type(clf.coefs_[0]) for e in result["estimator"])
