"""Bad input gets a clear error before any work, and never damages a fitted model."""

from __future__ import annotations

import numpy as np
import pytest

import mlxp
from mlxp.exceptions import InvalidParameterError
from mlxp.linear_model import LinearRegression, Ridge, _base, _linear
from mlxp.optim import SGD
from tests.conftest import widest_float

rng = np.random.default_rng(0)
X_GOOD = rng.normal(size=(20, 3))
Y_GOOD = X_GOOD @ np.array([1.0, -1.0, 2.0]) + 0.5


def _with(X=X_GOOD, y=Y_GOOD, **kwargs):
    return {"X": X, "y": y, **kwargs}


def _nan_at(a, index):
    a = a.copy()
    a[index] = np.nan
    return a


def _inf_at(a, index):
    a = a.copy()
    a[index] = np.inf
    return a


BAD_FIT_INPUTS = {
    "1-D X": (_with(X=X_GOOD[:, 0]), ValueError, "Expected 2D array, got 1D array"),
    "3-D X": (_with(X=X_GOOD[:, :, None]), ValueError, "Expected 2D array, got 3D array"),
    "no samples": (_with(X=np.empty((0, 3)), y=np.empty(0)), ValueError, r"0 sample\(s\)"),
    "no features": (_with(X=np.empty((20, 0))), ValueError, r"0 feature\(s\)"),
    "NaN in X": (_with(X=_nan_at(X_GOOD, (3, 1))), ValueError, "Input X contains NaN"),
    "inf in X": (_with(X=_inf_at(X_GOOD, (0, 0))), ValueError, "Input X contains infinity"),
    "NaN in y": (_with(y=_nan_at(Y_GOOD, 4)), ValueError, "Input y contains NaN"),
    "complex X": (_with(X=X_GOOD + 1j), ValueError, "Complex data not supported"),
    "strings in X": (_with(X=np.array([["a", "b", "c"]] * 20)), ValueError, "real numbers"),
    "object X": (_with(X=np.array([[{}, 1, 2]] * 20, dtype=object)), TypeError, "real number"),
    "y too short": (
        _with(y=Y_GOOD[:-1]),
        ValueError,
        r"samples: \[20, 19\]",
    ),
    "3-D y": (_with(y=Y_GOOD[:, None, None]), ValueError, "y must be 1-D or 2-D"),
    "no y": (_with(y=None), ValueError, "requires y to be passed"),
    "short weights": (
        _with(sample_weight=np.ones(5)),
        ValueError,
        r"\.shape == \(5,\)",
    ),
    "2-D weights": (_with(sample_weight=np.ones((20, 2))), ValueError, "sample_weight.shape"),
    "negative weight": (_with(sample_weight=-np.ones(20)), ValueError, "Negative values"),
    "zero weights": (_with(sample_weight=np.zeros(20)), ValueError, "at least one non-zero"),
    "NaN weight": (
        _with(sample_weight=_nan_at(np.ones(20), 0)),
        ValueError,
        "weight contains NaN",
    ),
}

BAD_PARAMS = {
    "solver": (dict(solver="lsqr"), ValueError, "'solver' parameter of Ridge must be a str among"),
    "alpha": (
        dict(alpha=-1.0),
        ValueError,
        r"'alpha' parameter of Ridge must be a float in the range \[0",
    ),
    "alpha type": (
        dict(alpha="big"),
        TypeError,
        "'alpha' parameter of Ridge must be a float.*Got 'big'",
    ),
    "max_iter": (
        dict(max_iter=0),
        ValueError,
        r"'max_iter' parameter of Ridge must be an int in the range \[1",
    ),
    "max_iter type": (
        dict(max_iter=2.5),
        TypeError,
        "'max_iter' parameter of Ridge must be an int",
    ),
    "tol": (
        dict(tol=-1e-3),
        ValueError,
        r"'tol' parameter of Ridge must be a float in the range \[0",
    ),
    "learning_rate": (
        dict(learning_rate=0.0),
        ValueError,
        r"'learning_rate' parameter of Ridge must be a float in the range \(0",
    ),
    "batch_size": (
        dict(batch_size=0),
        ValueError,
        r"'batch_size' parameter of Ridge must be an int in the range \[1",
    ),
    "fit_intercept": (
        dict(fit_intercept="yes"),
        TypeError,
        "'fit_intercept' parameter of Ridge must be an instance of 'bool'",
    ),
    "random_state": (
        dict(random_state="seed"),
        ValueError,
        "'random_state' parameter of Ridge must be",
    ),
    "optimizer": (
        dict(optimizer="lion"),
        ValueError,
        "'optimizer' parameter of Ridge must be a str among",
    ),
    "optimizer type": (dict(optimizer=SGD), TypeError, "an instance of 'Optimizer'"),
}


@pytest.fixture
def no_work(monkeypatch):
    """Make any solver call fail the test: errors must come before the work."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a solver ran although the input was invalid")

    monkeypatch.setattr(_linear, "solve_exact", forbidden)
    monkeypatch.setattr(_linear.ClosedForm, "centre", forbidden)
    monkeypatch.setattr(_base, "minimize_sgd", forbidden)


@pytest.mark.parametrize("case", BAD_FIT_INPUTS, ids=str)
def test_bad_fit_input_raises_before_work_and_keeps_the_fit(case, request):
    kwargs, error, message = BAD_FIT_INPUTS[case]
    model = Ridge().fit(X_GOOD, Y_GOOD)
    before = dict(vars(model))
    request.getfixturevalue("no_work")
    with pytest.raises(error, match=message):
        model.fit(kwargs.pop("X"), kwargs.pop("y"), **kwargs)
    assert vars(model) == before and all(vars(model)[k] is v for k, v in before.items())


def test_sparse_input_is_refused_with_a_hint():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"Sparse data was passed for X.*toarray"):
        LinearRegression().fit(sparse.csr_array(X_GOOD), Y_GOOD)


@pytest.mark.parametrize("case", BAD_PARAMS, ids=str)
def test_bad_hyperparameters_raise_in_fit_not_init(case, no_work):
    params, error, message = BAD_PARAMS[case]
    model = Ridge(**params)  # accepted here, as scikit-learn requires
    with pytest.raises(error, match=message) as info:
        model.fit(X_GOOD, Y_GOOD)
    assert not hasattr(model, "coef_")
    assert isinstance(info.value, InvalidParameterError)  # a ValueError and a TypeError


def test_bad_input_on_every_backend(backend):
    X = backend.asarray(_nan_at(X_GOOD, (2, 2)))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LinearRegression().fit(X, backend.asarray(Y_GOOD))
    with pytest.raises(ValueError, match="Expected 2D array"):
        LinearRegression().fit(backend.asarray(X_GOOD[:, 0]), backend.asarray(Y_GOOD))
    model = LinearRegression().fit(backend.asarray(X_GOOD), backend.asarray(Y_GOOD))
    with pytest.raises(ValueError, match="X has 2 features, but LinearRegression is expecting 3"):
        model.predict(backend.asarray(X_GOOD[:, :2]))
    with pytest.raises(ValueError, match="Input X contains infinity"):
        model.predict(backend.asarray(_inf_at(X_GOOD, (0, 1))))


def test_values_near_the_dtypes_largest_are_finite(backend):
    """Finite values whose sum overflows pass the finiteness check, without a warning
    (an overflowing reduction warns on NumPy); a NaN or an infinity anywhere fails it."""
    dtype, _ = widest_float(backend)
    big = float(np.finfo(dtype).max) / 2
    X = np.array([[big, 1.0], [big, -1.0], [big, 2.0], [big, 0.5]])
    model = LinearRegression().fit(
        backend.asarray(X_GOOD[:, :2], dtype), backend.asarray(Y_GOOD, dtype)
    )
    model.predict(backend.asarray(X, dtype))  # Σ X is 2·max: overflows; each value is finite
    for bad, message in ((_nan_at(X, (1, 1)), "NaN"), (_inf_at(X, (0, 1)), "infinity")):
        with pytest.raises(ValueError, match=f"Input X contains {message}"):
            model.predict(backend.asarray(bad, dtype))


def test_mixed_libraries_are_named_in_the_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"X is a numpy array but y is a torch array"):
        LinearRegression().fit(X_GOOD, torch.asarray(Y_GOOD))


def test_mixed_devices_are_named_in_the_error():
    strict = pytest.importorskip("array_api_strict")
    X = strict.asarray(X_GOOD, device=strict.Device("device1"))
    y = strict.asarray(Y_GOOD, device=strict.Device("device2"))
    with pytest.raises(ValueError, match=r"X is on .*device1.* but y is on .*device2"):
        LinearRegression().fit(X, y)
    with mlxp.use_backend("array_api_strict", "device1"):  # a chosen backend gathers them
        model = LinearRegression().fit(X, y)
    np.testing.assert_allclose(mlxp.to_numpy(model.coef_), [1.0, -1.0, 2.0], rtol=1e-9)


def test_predict_before_fit_says_to_call_fit():
    with pytest.raises(mlxp.NotFittedError, match=r"not fitted yet\. Call 'fit'") as info:
        LinearRegression().predict(X_GOOD)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


def test_not_fitted_error_is_scikit_learns_too_once_it_is_loaded():
    exceptions = pytest.importorskip("sklearn.exceptions")
    with pytest.raises(exceptions.NotFittedError):  # scikit-learn code catches ours
        Ridge().predict(X_GOOD)


def test_failed_iterative_fit_leaves_no_half_fitted_model():
    model = LinearRegression(solver="gd", learning_rate=100.0)
    with pytest.raises(mlxp.linear_model.DivergenceError):
        model.fit(X_GOOD, Y_GOOD)
    assert not any(k.endswith("_") for k in vars(model))


# --------------------------------------------------------------------------- warnings' lines
def _warning_sources():
    from mlxp.linear_model import LogisticRegression
    from mlxp.nn import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    labels = (X[:, 0] > 0).astype(int)
    collinear = np.concatenate([X, X[:, :1]], axis=1)
    return {
        "RankWarning": lambda: LinearRegression(solver="svd").fit(collinear, X[:, 0]),
        "ConvergenceWarning, gd": lambda: LinearRegression(solver="gd", max_iter=2).fit(X, X[:, 0]),
        "ConvergenceWarning, lbfgs": lambda: LogisticRegression(max_iter=2).fit(X, labels),
        "ConvergenceWarning, MLP": lambda: MLPClassifier((4,), max_iter=1).fit(X, labels),
        "DataConversionWarning": lambda: LogisticRegression().fit(X, labels[:, None]),
        "feature names": lambda: (
            LinearRegression()
            .fit(__import__("pandas").DataFrame(X, columns=list("abc")), X[:, 0])
            .predict(X)
        ),
    }


@pytest.mark.parametrize("name", list(_warning_sources()))
def test_warnings_point_at_the_users_line(name):
    """Each warning mlxp gives names the caller's line, not one of mlxp's: the default
    filter then shows it once per line of the user's, where it can be acted on."""
    if name == "feature names":
        pytest.importorskip("pandas")
    with pytest.warns(Warning) as caught:
        _warning_sources()[name]()
    assert {w.filename for w in caught} == {__file__}, [str(w.message) for w in caught]
