"""Data frames as scikit-learn takes them: ``feature_names_in_``, the column checks and
their wording, pandas' nullable dtypes; checked against scikit-learn's own estimators."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import mlxp
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import CNNClassifier, MLPClassifier, MLPRegressor

pd = pytest.importorskip("pandas")
sklearn_linear = pytest.importorskip("sklearn.linear_model")

ESTIMATORS = [
    (LinearRegression, sklearn_linear.LinearRegression, {}),
    (Ridge, sklearn_linear.Ridge, {}),
    (LogisticRegression, sklearn_linear.LogisticRegression, {}),
    (MLPClassifier, None, {"hidden_layer_sizes": (3,), "max_iter": 2, "random_state": 0}),
    (MLPRegressor, None, {"hidden_layer_sizes": (3,), "max_iter": 2, "random_state": 0}),
    (CNNClassifier, None, {"conv_layers": ((2, 2),), "dense_units": (3,), "max_iter": 2}),
]
IDS = [cls.__name__ for cls, _, _ in ESTIMATORS]


def _data(n=30, p=4):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, p))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return pd.DataFrame(X, columns=[f"f{j}" for j in range(p)]), y


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlxp.exceptions.ConvergenceWarning)
        return est.fit(X, y)


def _sklearn_error(sk_cls, fit_X, X, y):
    """What scikit-learn raises or warns for predict(X) after fit(fit_X)."""
    est = sk_cls().fit(fit_X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est.predict(X)
        except ValueError as exc:
            return ValueError, str(exc)
    return UserWarning, str(caught[0].message)


@pytest.mark.parametrize(("cls", "sk_cls", "kw"), ESTIMATORS, ids=IDS)
def test_feature_names_in_is_recorded_as_scikit_learn_records_it(cls, sk_cls, kw):
    X, y = _data()
    est = _fit(cls(**kw), X, y)
    expected = sklearn_linear.Ridge().fit(X, y).feature_names_in_
    assert est.feature_names_in_.dtype == object
    np.testing.assert_array_equal(est.feature_names_in_, expected)
    _fit(est, X.to_numpy(), y)  # refitted on an array: the names are gone, as in sklearn
    assert not hasattr(est, "feature_names_in_")
    X_int = X.set_axis(range(X.shape[1]), axis=1)  # non-string names are not recorded
    assert not hasattr(_fit(cls(**kw), X_int, y), "feature_names_in_")


@pytest.mark.parametrize(("cls", "sk_cls", "kw"), ESTIMATORS, ids=IDS)
def test_columns_reordered_or_renamed_raise_scikit_learn_s_error(cls, sk_cls, kw):
    X, y = _data()
    est = _fit(cls(**kw), X, y)
    reordered = X[["f1", "f0", "f2", "f3"]]
    renamed = X.rename(columns={"f3": "g", "f2": "h"})
    for bad in (reordered, renamed, X[["f0", "f1", "f2"]]):
        kind, message = _sklearn_error(sklearn_linear.Ridge, X, bad, y)
        assert kind is ValueError
        with pytest.raises(ValueError) as info:
            est.predict(bad)
        assert str(info.value) == message
    assert (
        "Feature names must be in the same order"
        in _sklearn_error(sklearn_linear.Ridge, X, reordered, y)[1]
    )


@pytest.mark.parametrize(("cls", "sk_cls", "kw"), ESTIMATORS, ids=IDS)
def test_names_on_one_side_only_warn_as_scikit_learn_warns(cls, sk_cls, kw):
    X, y = _data()
    for fit_X, predict_X in ((X, X.to_numpy()), (X.to_numpy(), X)):
        est = _fit(cls(**kw), fit_X, y)
        kind, message = _sklearn_error(sklearn_linear.Ridge, fit_X, predict_X, y)
        assert kind is UserWarning
        with pytest.warns(UserWarning) as caught:
            est.predict(predict_X)
        assert str(caught[0].message) == message.replace("Ridge", cls.__name__)


def test_the_reordered_example_raises_instead_of_returning_other_numbers():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(50, 3)) * [1, 10, 100], columns=["age", "income", "debt"])
    y = X @ np.array([3.0, -1.0, 0.5]) + 2
    model = LinearRegression().fit(X, y)
    np.testing.assert_allclose(model.predict(X), y, atol=1e-8)
    with pytest.raises(ValueError, match="should match those that were passed during fit"):
        model.predict(X[["debt", "age", "income"]])


def test_mixed_column_name_types_are_refused_before_any_work():
    X, y = _data()
    X.columns = ["a", 1, "c", "d"]
    est = LinearRegression()
    with pytest.raises(TypeError) as ours:
        est.fit(X, y)
    with pytest.raises(TypeError) as theirs:
        sklearn_linear.LinearRegression().fit(X, y)
    assert str(ours.value) == str(theirs.value)
    assert not hasattr(est, "coef_")


@pytest.mark.parametrize("dtype", ["Int64", "Float64", "boolean"])
def test_nullable_dtypes_with_na_raise_the_nan_error(dtype):
    X, y = _data()
    values = {"Int64": [1, 0], "Float64": [0.5, 1.5], "boolean": [True, False]}[dtype] * 15
    values[3] = pd.NA
    X["f0"] = pd.array(values, dtype=dtype)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LinearRegression().fit(X, y)
    y_na = pd.Series(pd.array([1.0] * 29 + [pd.NA], dtype="Float64"))
    with pytest.raises(ValueError, match="Input y contains NaN"):
        LinearRegression().fit(X.drop(columns="f0"), y_na)


def test_nullable_dtypes_without_na_fit_as_floats():
    X, y = _data()
    nullable = X.assign(
        f0=pd.array((X["f0"] > 0).astype(int), dtype="Int64"),
        f1=pd.array(X["f1"], dtype="Float64"),
        f2=pd.array(X["f2"] > 0, dtype="boolean"),
    )
    plain = nullable.astype("float64")
    ours = LinearRegression().fit(nullable, pd.Series(pd.array(y, dtype="Int64")))
    reference = sklearn_linear.LinearRegression().fit(plain, y)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-10)
    np.testing.assert_allclose(ours.predict(nullable), reference.predict(plain), atol=1e-10)
    labels = pd.Series(pd.array(y, dtype="Int64"))
    clf = LogisticRegression().fit(nullable, labels)
    assert clf.classes_.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("cls", "kw"), [(LogisticRegression, {}), (MLPRegressor, ESTIMATORS[4][2])], ids=str
)
def test_pickles_and_model_files_keep_feature_names(cls, kw, tmp_path):
    X, y = _data()
    est = _fit(cls(**kw), X, y)
    path = tmp_path / "model.mlxp"
    mlxp.save(est, path)
    for copy in (pickle.loads(pickle.dumps(est)), mlxp.load(path)):
        np.testing.assert_array_equal(copy.feature_names_in_, est.feature_names_in_)
        with pytest.raises(ValueError, match="same order"):
            copy.predict(X[X.columns[::-1]])


def test_a_model_file_with_bad_feature_names_is_refused(tmp_path):
    from mlxp._model_state import feature_names_from_json

    assert feature_names_from_json({}, 2) is None
    for bad in (["a"], ["a", "a"], ["a", 1], "ab"):
        with pytest.raises(ValueError, match="2 distinct strings"):
            feature_names_from_json({"feature_names_in_": bad}, 2)


def test_pandas_is_not_imported_for_arrays():
    code = (
        "import sys, numpy as np; from mlxp.linear_model import Ridge; "
        "Ridge().fit(np.eye(3), np.ones(3)).predict(np.eye(3)); "
        "assert 'pandas' not in sys.modules, 'pandas imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
