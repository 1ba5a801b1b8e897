"""Careless and hostile inputs: refused up front with a clear message, or handled as documented."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.nn import MLPClassifier, MLPRegressor


def _xy(rng, n=40, p=3):
    X = rng.normal(size=(n, p))
    return X, X @ np.array([1.0, -2.0, 0.5])[:p] + 0.3, (X[:, 0] > 0).astype(np.int64)


@pytest.mark.parametrize("strings", [np.array([["1.5", "2"]] * 4), np.array([[b"1", b"2"]] * 4)])
def test_numeric_strings_are_refused(strings):
    with pytest.raises(
        ValueError,
        match=r"real numbers: dtype=.numeric. is not compatible with arrays of bytes/strings",
    ):
        LinearRegression().fit(strings, np.arange(4.0))


def test_object_arrays_are_converted_or_refused_naming_the_value():
    X = np.array([[1, 2.5], [3, 4], [5, 6.5]], dtype=object)
    model = LinearRegression().fit(X, [1.0, 2.0, 3.5])
    assert model.coef_.dtype == np.float64
    with pytest.raises(ValueError, match=r"could not convert.*'abc'"):
        LinearRegression().fit(np.array([[1, "abc"], [2, 3]], dtype=object), [1.0, 2.0])


@pytest.mark.parametrize("weight", [0, 0.0, -1, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("make", [LinearRegression, Ridge, LogisticRegression])
def test_scalar_sample_weight_is_checked_like_an_array(backend, make, weight, rng):
    X, y, labels = _xy(rng)
    target = labels if make is LogisticRegression else y
    with pytest.raises(ValueError, match=r"sample_weight|Negative|non-zero"):
        make().fit(backend.asarray(X), backend.asarray(target), sample_weight=weight)


def test_a_valid_scalar_sample_weight_changes_nothing(rng):
    X, y, _ = _xy(rng)
    ours = Ridge(alpha=1.0).fit(X, y, sample_weight=3.0)
    np.testing.assert_allclose(ours.coef_, Ridge(alpha=3.0**-1).fit(X, y).coef_, rtol=1e-10)


@pytest.mark.parametrize(
    "class_weight", [{0: -1.0}, {0: 0.0, 1: 0.0}, {1: float("nan")}, {0: float("inf")}, {0: "x"}]
)
def test_hostile_class_weights_are_refused(backend, class_weight, rng):
    X, _, labels = _xy(rng)
    model = LogisticRegression(class_weight=class_weight)
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(backend.asarray(X), backend.asarray(labels))
    assert not hasattr(model, "coef_")


@pytest.mark.parametrize("scale", [1e-320, 1e-300, 1e300])
def test_tiny_or_huge_weights_fit_as_scikit_learn(scale, rng):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y, _ = _xy(rng)
    sw = np.full(len(y), scale)
    # Equal weights do not change least squares (scikit-learn's own fit at 1e-320 loses
    # 5 digits of the intercept, so the unweighted fit is the reference); for ridge they
    # weigh the data against α.
    for ours, theirs, their_sw in [
        (LinearRegression(), linear_model.LinearRegression(), None),
        (Ridge(alpha=1.0), linear_model.Ridge(alpha=1.0), sw),
    ]:
        ours.fit(X, y, sample_weight=sw)
        theirs.fit(X, y, sample_weight=their_sw)
        assert np.all(np.isfinite(ours.coef_))
        np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-6, atol=1e-12)
        # b = ȳ − x̄ w for equal weights (scikit-learn's subnormal weighted means lose digits)
        intercept = y.mean() - X.mean(axis=0) @ theirs.coef_
        np.testing.assert_allclose(ours.intercept_, intercept, rtol=1e-9)


@pytest.mark.parametrize("solver", ["lbfgs", "newton", "gd"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_vanishing_weights_leave_logistic_regression_only_its_intercept(
    backend, solver, n_classes, rng
):
    """Weights of 1e-320 make λ/Σs overflow: the penalty then holds W at exactly 0, and b is
    the closed-form maximum likelihood of the class frequencies (log-odds, or centred
    log-frequencies for softmax) instead of NaN."""
    weights = backend.asarray(np.full(40, 1e-320))
    if not float(backend.to_numpy(weights * 1.0)[0]) > 0:  # JAX on CPU flushes them to 0
        pytest.skip(f"{backend} has no float64 subnormals")
    X, _, _ = _xy(rng)
    labels = rng.integers(0, n_classes, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LogisticRegression(solver=solver, max_iter=2000, tol=1e-8).fit(
            backend.asarray(X), backend.asarray(labels), sample_weight=weights
        )
    frequency = np.bincount(labels) / 40
    if n_classes == 2:
        expected = [np.log(frequency[1] / frequency[0])]
    else:
        expected = np.log(frequency) - np.log(frequency).mean()
    assert np.all(backend.to_numpy(model.coef_) == 0)
    np.testing.assert_allclose(backend.to_numpy(model.intercept_), expected, rtol=1e-5)


def _half_dtypes(backend):
    names = {"numpy": ["float16"], "torch": ["float16", "bfloat16"], "jax": ["float16", "bfloat16"]}
    return names.get(backend.name, [])


@pytest.mark.parametrize(
    "make",
    [
        LinearRegression,
        Ridge,
        LogisticRegression,
        lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
        lambda: MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
    ],
    ids=["LinearRegression", "Ridge", "LogisticRegression", "MLPClassifier", "MLPRegressor"],
)
def test_half_precision_is_computed_in_float32(backend, make, rng):
    halves = _half_dtypes(backend)
    if not halves:
        pytest.skip(f"{backend} has no float16")
    X, y, labels = _xy(rng, n=60)
    model = make()
    classifier = isinstance(model, (LogisticRegression, MLPClassifier))
    for half in halves:
        Xh = backend.xp.astype(backend.asarray(X, "float32"), getattr(backend.xp, half))
        target = backend.asarray(labels) if classifier else backend.asarray(y, "float32")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(converge|iterations)")
            model.fit(Xh, target)
        pred = backend.to_numpy(model.predict(Xh))
        assert np.all(np.isfinite(pred)) and pred.shape == (60,)
        # the same fit as for the same values given in float32
        X32 = backend.xp.astype(Xh, backend.xp.float32)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(converge|iterations)")
            same = backend.to_numpy(make().fit(X32, target).predict(X32))
        if not classifier:
            assert pred.dtype == np.float32
        np.testing.assert_allclose(pred, same, rtol=1e-5, atol=1e-5)


def _torch(backend):
    if backend.name != "torch":
        pytest.skip("torch only")
    import torch

    return torch


@pytest.mark.parametrize(
    "make",
    [LinearRegression, LogisticRegression, lambda: MLPClassifier(max_iter=5, random_state=0)],
    ids=["LinearRegression", "LogisticRegression", "MLPClassifier"],
)
def test_inputs_requiring_grad_leave_no_graph(backend, make, rng):
    torch = _torch(backend)
    X, y, labels = _xy(rng)
    model = make()
    classifier = not isinstance(model, LinearRegression)
    Xt = backend.asarray(X).requires_grad_(True)
    yt = backend.asarray(labels) if classifier else backend.asarray(y).requires_grad_(True)
    sw = None if isinstance(model, MLPClassifier) else backend.asarray(np.ones(len(X)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(converge|iterations)")
        model.fit(Xt, yt) if sw is None else model.fit(Xt, yt, sample_weight=sw.requires_grad_())
    fitted = [v for v in vars(model).values() if isinstance(v, torch.Tensor)]
    fitted += [c for c in getattr(model, "coefs_", []) if isinstance(c, torch.Tensor)]
    outputs = [model.predict(Xt)] + ([model.predict_proba(Xt)] if classifier else [])
    for t in fitted + outputs:
        assert t.grad_fn is None and not t.requires_grad


def test_torch_meta_sparse_and_wide_unsigned_labels_are_refused(backend, rng):
    torch = _torch(backend)
    X, y, labels = _xy(rng)
    with pytest.raises(ValueError, match="'meta' device"):
        LinearRegression().fit(torch.ones((40, 3), device="meta"), backend.asarray(y))
    with pytest.raises(TypeError, match="Sparse data was passed for X"):
        LinearRegression().fit(backend.asarray(X).to_sparse(), backend.asarray(y))
    with pytest.raises(TypeError, match="uint64 labels"):
        LogisticRegression().fit(backend.asarray(X), torch.asarray(labels, dtype=torch.uint64))
