"""Linear and ridge regression against closed forms, NumPy and scikit-learn, on every backend."""

from __future__ import annotations

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
from mlxp.linear_model import DivergenceError, LinearRegression, RankWarning, Ridge, SolverError
from mlxp.linear_model._iterative import LeastSquaresObjective
from tests.conftest import rtol_for

EXACT = ["auto", "cholesky", "qr", "svd"]


def _data(rng, n=120, p=6, k=None, noise=0.0):
    X = rng.normal(size=(n, p)) + rng.normal(size=p)  # non-centred columns
    W = rng.normal(size=(p,) if k is None else (p, k))
    b = 0.7 if k is None else rng.normal(size=k)
    y = X @ W + b + noise * rng.normal(size=(n,) if k is None else (n, k))
    return X, y, W, b


def _lstsq(X, y, sample_weight=None, alpha=0.0, fit_intercept=True):
    """Reference: centre, weight and solve with NumPy (pinv for ridge-free rank deficiency)."""
    sw = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
    x_mean = sw @ X / sw.sum() if fit_intercept else np.zeros(X.shape[1])
    y_mean = sw @ y / sw.sum() if fit_intercept else np.zeros(y.shape[1:])
    Xc, yc = (X - x_mean) * np.sqrt(sw)[:, None], (y - y_mean).T * np.sqrt(sw)
    W = np.linalg.pinv(Xc.T @ Xc + alpha * np.eye(X.shape[1])) @ Xc.T @ yc.T
    return W.T, y_mean - x_mean @ W


def _assert_in_place_of(result, reference, backend):
    assert aac.array_namespace(result) is aac.array_namespace(reference)
    assert aac.device(result) == aac.device(reference)


# --------------------------------------------------------------------------- exact solvers
@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("k", [None, 3])
def test_exact_solvers_recover_known_coefficients(backend, dtype, solver, k, rng):
    X, y, W, b = _data(rng, k=k)
    Xb, yb = backend.asarray(X, dtype), backend.asarray(y, dtype)
    model = LinearRegression(solver=solver).fit(Xb, yb)
    rtol = rtol_for(dtype) * 10
    np.testing.assert_allclose(backend.to_numpy(model.coef_), W.T, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.to_numpy(model.intercept_), b, rtol=rtol, atol=rtol)
    assert model.coef_.shape == ((6,) if k is None else (3, 6))
    assert model.coef_.dtype == backend.dtype(dtype)
    _assert_in_place_of(model.coef_, Xb, backend)
    pred = model.predict(Xb)
    _assert_in_place_of(pred, Xb, backend)
    assert pred.dtype == backend.dtype(dtype) and pred.shape == y.shape
    np.testing.assert_allclose(backend.to_numpy(pred), y, rtol=rtol, atol=rtol * 10)
    assert model.n_iter_ == 1 and model.n_features_in_ == 6
    assert model.solver_ == ("cholesky" if solver == "auto" else solver)


@pytest.mark.dask
@pytest.mark.parametrize("solver", EXACT)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_matches_closed_form_with_weights(backend, solver, fit_intercept, rng):
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    X, y, _, _ = _data(rng, noise=0.3, k=2)
    sw = rng.uniform(0.1, 3.0, size=len(X))
    model = Ridge(alpha=2.5, solver=solver, fit_intercept=fit_intercept)
    model.fit(backend.asarray(X), backend.asarray(y), sample_weight=backend.asarray(sw))
    coef, intercept = _lstsq(X, y, sw, alpha=2.5, fit_intercept=fit_intercept)
    np.testing.assert_allclose(backend.to_numpy(model.coef_), coef, rtol=1e-9)
    np.testing.assert_allclose(backend.to_numpy(model.intercept_), intercept, rtol=1e-9, atol=1e-12)


@pytest.mark.dask
@pytest.mark.parametrize("solver", EXACT)
def test_matches_scikit_learn_on_diabetes(backend, solver):
    linear_model = pytest.importorskip("sklearn.linear_model")
    datasets = pytest.importorskip("sklearn.datasets")
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    X, y = datasets.load_diabetes(return_X_y=True)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    for ours, theirs in [
        (LinearRegression(solver=solver), linear_model.LinearRegression()),
        (Ridge(alpha=0.1, solver=solver), linear_model.Ridge(alpha=0.1, solver="cholesky")),
        (
            Ridge(alpha=1.0, solver=solver, fit_intercept=False),
            linear_model.Ridge(alpha=1.0, solver="cholesky", fit_intercept=False),
        ),
    ]:
        ours.fit(backend.asarray(X), backend.asarray(y), sample_weight=backend.asarray(sw))
        theirs.fit(X, y, sample_weight=sw)
        np.testing.assert_allclose(backend.to_numpy(ours.coef_), theirs.coef_, rtol=1e-7)
        np.testing.assert_allclose(float(ours.intercept_), theirs.intercept_, rtol=1e-7, atol=1e-9)
        Xb, yb = backend.asarray(X), backend.asarray(y)
        assert ours.score(Xb, yb) == pytest.approx(theirs.score(X, y), rel=1e-9)


def test_collinear_columns_give_minimum_norm_like_scikit_learn(backend, rng):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X = rng.normal(size=(50, 3))
    X = np.column_stack([X, X[:, 0], 2 * X[:, 1]])  # rank 3 of 5 columns
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=50)
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    model = LinearRegression().fit(backend.asarray(X, dtype), backend.asarray(y, dtype))
    assert model.solver_ == "svd"
    coef, _ = _lstsq(X, y)
    reference = linear_model.LinearRegression().fit(X, y).coef_
    rtol = 1e-8 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(backend.to_numpy(model.coef_), coef, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.to_numpy(model.coef_), reference, rtol=rtol, atol=rtol)
    with pytest.raises(SolverError, match="solver='svd'"):
        LinearRegression(solver="cholesky").fit(
            backend.asarray(X, dtype), backend.asarray(y, dtype)
        )


def test_a_constant_or_zero_column_has_exactly_zero_singular_values(backend, rng):
    """A constant column with an intercept (zero once centred), or a zero column: an
    exactly singular design. "auto" takes the SVD silently (no division by the zero
    singular value: the suite turns warnings into errors), gives that column 0 and the
    others their least-squares values; "svd" says the rank; "qr" refuses."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    X = rng.normal(size=(60, 3))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=60)
    rtol = 1e-8 if dtype == "float64" else 1e-4
    for column, fit_intercept in ((1.0, True), (0.0, False)):
        Xc = X.copy()
        Xc[:, 2] = column
        Xb, yb = backend.asarray(Xc, dtype), backend.asarray(y, dtype)
        model = LinearRegression(fit_intercept=fit_intercept).fit(Xb, yb)
        assert model.solver_ == "svd"
        design = np.c_[X[:, :2], np.ones(60)] if fit_intercept else X[:, :2]
        want = np.linalg.lstsq(design, y, rcond=None)[0][:2]
        np.testing.assert_allclose(
            backend.to_numpy(model.coef_), [*want, 0.0], rtol=rtol, atol=rtol
        )
        with pytest.warns(RankWarning, match="effective rank 2 of 3"):
            LinearRegression(solver="svd", fit_intercept=fit_intercept).fit(Xb, yb)
        with pytest.raises(SolverError, match="solver='qr' failed"):
            LinearRegression(solver="qr", fit_intercept=fit_intercept).fit(Xb, yb)


def test_wide_data_gets_minimum_norm_interpolant(backend, rng):
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    X, y = rng.normal(size=(8, 20)), rng.normal(size=8)
    # Centring makes wide data rank-deficient, so QR's minimum-norm path needs no intercept.
    for solver, fit_intercept in [("auto", True), ("svd", True), ("qr", False), ("svd", False)]:
        model = LinearRegression(solver=solver, fit_intercept=fit_intercept)
        model.fit(backend.asarray(X), backend.asarray(y))
        coef, _ = _lstsq(X, y, fit_intercept=fit_intercept)
        np.testing.assert_allclose(backend.to_numpy(model.coef_), coef, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            backend.to_numpy(model.predict(backend.asarray(X))), y, rtol=1e-8
        )


def test_auto_falls_back_from_cholesky_on_ill_conditioned_data(rng):
    X = rng.normal(size=(200, 4))
    X[:, 3] = X[:, 2] + 1e-6 * rng.normal(size=200)  # κ(X) ≈ 1e6: κ(XᵀX) ≈ 1e12
    y = X @ np.array([1.0, 2.0, 3.0, 4.0])
    model = LinearRegression().fit(X, y)
    assert model.solver_ == "qr"
    np.testing.assert_allclose(model.coef_, [1, 2, 3, 4], rtol=1e-6)
    assert Ridge(alpha=1.0).fit(X, y).solver_ == "cholesky"  # the penalty conditions it
    assert LinearRegression().fit(X[:3], y[:3]).solver_ == "svd"  # wide


def test_integer_weights_equal_repeated_rows(backend, rng):
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    X, y, _, _ = _data(rng, n=30, noise=0.5)
    counts = rng.integers(0, 4, size=30)
    for solver in EXACT:
        weighted = Ridge(alpha=0.5, solver=solver).fit(
            backend.asarray(X), backend.asarray(y), sample_weight=backend.asarray(counts)
        )
        repeated = Ridge(alpha=0.5, solver=solver).fit(
            backend.asarray(np.repeat(X, counts, axis=0)), backend.asarray(np.repeat(y, counts))
        )
        np.testing.assert_allclose(
            backend.to_numpy(weighted.coef_), backend.to_numpy(repeated.coef_), rtol=1e-9
        )


# --------------------------------------------------------------------------- iterative solvers
def test_gradient_matches_finite_differences(rng):
    X, Y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    W, xp = rng.normal(size=(4, 2)), aac.array_namespace(X)
    for objective in [
        LeastSquaresObjective(xp, X, Y, alpha=0.3),
        LeastSquaresObjective(xp, X, Y, alpha=0.3).batch(np.array([1, 5, 7, 7])),
    ]:
        _, analytic, _ = objective.value_grad(W)
        numeric = np.zeros_like(W)
        h = 1e-6
        for i in np.ndindex(W.shape):
            step = np.zeros_like(W)
            step[i] = h
            numeric[i] = (objective.value(W + step) - objective.value(W - step)) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
        assert objective.value(W) == pytest.approx(float(objective.value_grad(W)[0]))


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_iterative_solvers_converge_to_the_exact_solution(backend, dtype, solver, rng):
    X, y, _, _ = _data(rng, n=200, p=5, noise=0.1)
    Xb, yb = backend.asarray(X, dtype), backend.asarray(y, dtype)
    tol = 1e-9 if dtype == "float64" else 1e-5
    model = Ridge(alpha=0.5, solver=solver, tol=tol, max_iter=3000, random_state=0)
    model.fit(Xb, yb)
    coef, intercept = _lstsq(X, y, alpha=0.5)
    # GD converges to the optimum; SGD's shrinking steps leave it within ~1e-3 of it.
    tol = {("gd", "float64"): 1e-6, ("gd", "float32"): 1e-3}.get((solver, dtype), 2e-3)
    np.testing.assert_allclose(backend.to_numpy(model.coef_), coef, rtol=tol, atol=tol)
    np.testing.assert_allclose(float(model.intercept_), intercept, rtol=tol, atol=5 * tol)
    assert 1 <= model.n_iter_ < 3000
    assert model.coef_.dtype == backend.dtype(dtype)
    _assert_in_place_of(model.coef_, Xb, backend)


@pytest.mark.filterwarnings("ignore::mlxp.ConvergenceWarning")
def test_sgd_same_seed_same_model_on_every_backend(backend, rng):
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    X, y, _, _ = _data(rng, n=100, p=4, noise=1.0)
    params = dict(solver="sgd", batch_size=16, max_iter=20, tol=0.0, random_state=42)
    reference = LinearRegression(**params).fit(X, y)
    model = LinearRegression(**params).fit(backend.asarray(X), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(model.coef_), reference.coef_, rtol=1e-12)
    other_seed = LinearRegression(**{**params, "random_state": 43}).fit(X, y)
    assert not np.allclose(other_seed.coef_, reference.coef_, rtol=1e-12, atol=0)


def test_gd_stops_on_tol_and_caps_at_max_iter(rng):
    X, y, _, _ = _data(rng, noise=0.1)
    with pytest.warns(mlxp.ConvergenceWarning, match="max_iter=37"):
        assert LinearRegression(solver="gd", tol=0.0, max_iter=37).fit(X, y).n_iter_ == 37
    loose = LinearRegression(solver="gd", tol=1e-2, max_iter=10_000).fit(X, y).n_iter_
    tight = LinearRegression(solver="gd", tol=1e-8, max_iter=10_000).fit(X, y).n_iter_
    assert loose < tight < 10_000


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_divergence_names_the_learning_rate_and_keeps_the_previous_fit(backend, solver, rng):
    X, y, _, _ = _data(rng)
    Xb, yb = backend.asarray(X), backend.asarray(y)
    model = LinearRegression(solver="svd").fit(Xb, yb)
    coef, intercept = model.coef_, model.intercept_
    model.set_params(solver=solver, learning_rate=50.0)
    with pytest.raises(DivergenceError, match=r"learning_rate=50"):
        model.fit(Xb, yb)
    assert model.coef_ is coef and model.intercept_ is intercept and model.solver_ == "svd"


# --------------------------------------------------------------------------- placement and dtypes
def test_chosen_backend_computes_there_and_returns_to_the_caller(backend, rng):
    X, y, W, b = _data(rng)
    with mlxp.use_backend(backend.name, backend.device):
        model = LinearRegression().fit(X, y)  # NumPy in
        pred = model.predict(X)
    _assert_in_place_of(model.coef_, backend.asarray(X), backend)  # fitted on the backend
    assert isinstance(pred, np.ndarray)  # results back where the input came from
    np.testing.assert_allclose(pred, X @ W + b, rtol=1e-4, atol=1e-4)


def test_predict_follows_the_input_namespace(backend, rng):
    X, y, W, b = _data(rng)
    model = LinearRegression().fit(X, y)  # fitted with NumPy
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    pred = model.predict(backend.asarray(X, dtype))
    _assert_in_place_of(pred, backend.asarray(X, dtype), backend)
    np.testing.assert_allclose(backend.to_numpy(pred), X @ W + b, rtol=1e-4, atol=1e-4)


def test_integer_inputs_become_the_default_float(backend, rng):
    X = rng.integers(-5, 5, size=(40, 3))
    y = X @ np.array([1, 2, 3]) + 4
    model = LinearRegression().fit(backend.asarray(X), backend.asarray(y))
    info = backend.xp.__array_namespace_info__()
    expected = info.default_dtypes(device=backend.device)["real floating"]
    assert model.coef_.dtype == expected
    np.testing.assert_allclose(backend.to_numpy(model.coef_), [1, 2, 3], rtol=1e-4)


def test_lists_and_read_only_arrays_are_accepted_and_not_modified(rng):
    X, y, W, _ = _data(rng)
    X.setflags(write=False)
    before = X.copy()
    model = LinearRegression().fit(X.tolist(), y.tolist(), sample_weight=[1.0] * len(y))
    assert isinstance(model.predict(X.tolist()), np.ndarray)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_allclose(model.coef_, W, rtol=1e-9)


def test_column_vector_y_gives_one_row_of_coefficients(rng):
    X, y, _, _ = _data(rng)
    model = LinearRegression().fit(X, y[:, None])
    assert model.coef_.shape == (1, 6) and model.intercept_.shape == (1,)
    assert model.predict(X).shape == (120, 1)


# --------------------------------------------------------------------------- scikit-learn tools
def test_clone_pipeline_and_grid_search(rng):
    base = pytest.importorskip("sklearn.base")
    model_selection = pytest.importorskip("sklearn.model_selection")
    pipeline = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X, y, _, _ = _data(rng, noise=2.0)
    ridge = Ridge(alpha=3.0, solver="qr")
    copy = base.clone(ridge)
    assert copy is not ridge and copy.get_params() == ridge.get_params()
    pipe = pipeline.make_pipeline(preprocessing.StandardScaler(), Ridge())
    search = model_selection.GridSearchCV(pipe, {"ridge__alpha": [0.01, 1.0, 1000.0]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["ridge__alpha"] in (0.01, 1.0)
    assert search.score(X, y) > 0.5
    assert repr(ridge) == "Ridge(alpha=3.0, solver='qr')"
    with pytest.raises(ValueError, match="Invalid parameter 'alhpa'"):
        ridge.set_params(alhpa=1.0)
