"""A search computes where the user asked: the ``backend`` parameter, and the selection a
clone carries into scikit-learn's threading and process (loky) workers."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import mlxp
from mlxp.base import BACKEND_CONSTRAINT
from mlxp.exceptions import InvalidParameterError
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import CNNClassifier, MLPClassifier, MLPRegressor

sklearn = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
torch = pytest.importorskip("torch")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

ALL = [LinearRegression, Ridge, LogisticRegression, MLPClassifier, MLPRegressor, CNNClassifier]


def on_torch(estimator, X, y):
    """A scorer run in the worker: 1.0 if the fitted coefficients are torch tensors."""
    return float(isinstance(estimator.coef_, torch.Tensor))


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    return X, X @ np.arange(1.0, 6.0) + 0.1 * rng.normal(size=60)


def _search(n_jobs):
    return GridSearchCV(
        Ridge(), {"alpha": [0.1, 1.0, 10.0]}, cv=3, n_jobs=n_jobs,
        scoring={"r2": "r2", "on_torch": on_torch}, refit="r2",
    )  # fmt: skip


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_estimator_declares_backend(cls):
    assert cls().get_params()["backend"] is None
    assert cls._parameter_constraints["backend"] is BACKEND_CONSTRAINT
    with pytest.raises(InvalidParameterError, match="'backend' parameter of"):
        cls(backend="tourch").fit(np.eye(4), [0, 1, 0, 1])


def test_backend_parameter_computes_there_and_returns_to_the_caller():
    X, y = _data()
    model = Ridge(backend="torch:cpu").fit(X, y)
    assert isinstance(model.coef_, torch.Tensor)
    assert isinstance(model.predict(X), np.ndarray)
    with mlxp.use_backend("numpy"):  # the parameter wins over the selection around it
        assert isinstance(Ridge(backend="torch").fit(X, y).coef_, torch.Tensor)
    with mlxp.use_backend("torch"):
        assert isinstance(Ridge(backend="numpy").fit(X, y).coef_, np.ndarray)
    reference = Ridge().fit(X, y)
    np.testing.assert_allclose(model.coef_.numpy(), reference.coef_, rtol=1e-10)
    assert mlxp.get_backend() is None


def test_clone_carries_the_selection_and_says_so():
    est = Ridge(alpha=2.0)
    assert clone(est).backend is None
    with mlxp.use_backend("torch"):
        cloned = clone(est)
        assert clone(Ridge(backend="numpy")).backend == "numpy"  # an explicit one is kept
    assert cloned.get_params() == {**est.get_params(), "backend": "torch:cpu"}
    assert clone(cloned).backend == "torch:cpu"  # a clone of the clone computes there too
    mlxp.set_backend("torch")
    assert clone(est).backend == "torch:cpu"
    mlxp.set_backend(None)


@pytest.mark.parametrize("joblib_backend", ["threading", "loky"])
def test_a_parallel_search_fits_on_the_selected_backend(joblib_backend):
    X, y = _data()
    with mlxp.use_backend("torch"):
        serial = _search(1).fit(X, y)
        with joblib.parallel_backend(joblib_backend, n_jobs=2):
            search = _search(2).fit(X, y)
    assert serial.cv_results_["mean_test_on_torch"].tolist() == [1.0, 1.0, 1.0]
    assert search.cv_results_["mean_test_on_torch"].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(
        search.cv_results_["mean_test_r2"], serial.cv_results_["mean_test_r2"], rtol=1e-12
    )
    assert search.best_params_ == serial.best_params_
    assert isinstance(search.best_estimator_.coef_, torch.Tensor)
    on_numpy = _search(1).fit(X, y)  # the same numbers as NumPy, which is not torch
    assert on_numpy.cv_results_["mean_test_on_torch"].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(
        search.cv_results_["mean_test_r2"], on_numpy.cv_results_["mean_test_r2"], rtol=1e-10
    )


def test_the_backend_parameter_round_trips_through_model_files(tmp_path):
    X, y = _data()
    ridge = Ridge(backend="torch:cpu").fit(X, y)
    with pytest.warns(mlxp.exceptions.ConvergenceWarning):
        mlp = MLPRegressor((3,), max_iter=2, backend="numpy").fit(X, y)
    for est in (ridge, mlp):
        mlxp.save(est, tmp_path / "m.mlxp")
        assert mlxp.load(tmp_path / "m.mlxp").get_params() == est.get_params()


@pytest.mark.parametrize("backend", ["selected", "parameter", "pre_dispatch"])
def test_cross_validate_with_workers_computes_on_the_chosen_backend(backend):
    """``cross_validate(n_jobs=2, cv=8)`` clones only its first folds in the calling thread:
    inside ``use_backend`` alone the later ones ran on NumPy. The README's ways each put
    every fold on torch: ``set_backend``, ``backend=``, or ``pre_dispatch="all"``."""
    from sklearn.model_selection import cross_validate

    X, y = _data()
    options = {"cv": 8, "n_jobs": 2, "scoring": on_torch}
    estimator = Ridge(backend="torch") if backend == "parameter" else Ridge()
    if backend == "selected":
        mlxp.set_backend("torch")
    try:
        with mlxp.use_backend("torch") if backend == "pre_dispatch" else contextlib.nullcontext():
            extra = {"pre_dispatch": "all"} if backend == "pre_dispatch" else {}
            scores = cross_validate(estimator, X, y, **options, **extra)["test_score"]
    finally:
        mlxp.set_backend(None)
    assert scores.tolist() == [1.0] * 8
