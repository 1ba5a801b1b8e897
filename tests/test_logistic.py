"""Logistic regression against scikit-learn, finite differences and its own optimality condition."""

from __future__ import annotations

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
from mlxp.linear_model import LogisticRegression
from mlxp.linear_model._logistic_loss import LogisticObjective
from tests.conftest import require_float64

datasets = pytest.importorskip("sklearn.datasets")
sk_linear = pytest.importorskip("sklearn.linear_model")


def _standardise(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


BINARY = (_standardise(datasets.load_breast_cancer().data), datasets.load_breast_cancer().target)
IRIS = (_standardise(datasets.load_iris().data), datasets.load_iris().target)


# --------------------------------------------------------------------------- against scikit-learn
@pytest.mark.dask
@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("data", ["binary", "multiclass"])
def test_matches_scikit_learn(backend, solver, data):
    require_float64(backend)
    X, y = BINARY if data == "binary" else IRIS
    sw = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    ours = LogisticRegression(C=0.5, solver=solver, tol=1e-10, max_iter=1000)
    ours.fit(backend.asarray(X), backend.asarray(y), sample_weight=backend.asarray(sw))
    # Newton converges to machine precision, as scikit-learn's newton-cholesky does; both
    # L-BFGS stop on the same relative-decrease rule, a little short of it.
    sk_solver, tol = ("newton-cholesky", 1e-9) if solver == "newton" else ("lbfgs", 2e-6)
    theirs = sk_linear.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000, solver=sk_solver)
    theirs.fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(backend.to_numpy(ours.coef_), theirs.coef_, rtol=50 * tol)
    np.testing.assert_allclose(
        backend.to_numpy(ours.intercept_), theirs.intercept_, rtol=50 * tol, atol=tol
    )
    proba = ours.predict_proba(backend.asarray(X))
    np.testing.assert_allclose(backend.to_numpy(proba), theirs.predict_proba(X), atol=tol)
    assert aac.device(proba) == backend.device
    assert ours.coef_.shape == theirs.coef_.shape and ours.intercept_.shape == (
        theirs.intercept_.shape
    )
    assert ours.score(backend.asarray(X), backend.asarray(y)) == pytest.approx(theirs.score(X, y))


def _reference_gradient(theta, X, y, sw, C, fit_intercept):
    """∇ of C·Σ sᵢℓᵢ + ½‖W‖² by central differences of a plain NumPy objective."""

    def objective(t):
        Z = X @ t[:-1] + (t[-1] if fit_intercept else 0)
        if t.shape[1] == 1:
            z = Z[:, 0]
            losses = np.logaddexp(0, z) - y * z
        else:
            losses = np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(y)), y]
        return C * np.sum(sw * losses) + 0.5 * np.sum(t[:-1] ** 2)

    grad = np.zeros_like(theta)
    for i in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        grad[i] = (objective(theta + step) - objective(theta - step)) / 2e-6
    return grad


@pytest.mark.parametrize("data", ["binary", "multiclass"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_solution_satisfies_the_optimality_condition(data, fit_intercept):
    X, y = BINARY if data == "binary" else IRIS
    X, y = X[::3], y[::3]
    sw = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    model = LogisticRegression(C=2.0, fit_intercept=fit_intercept, solver="newton", tol=1e-12)
    model.fit(X, y, sample_weight=sw)
    theta = np.vstack([model.coef_.T, model.intercept_[None, :]])
    grad = _reference_gradient(theta, X, y, sw, 2.0, fit_intercept)
    if not fit_intercept:
        grad[-1] = 0
    assert np.abs(grad).max() < 1e-5


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_objective_gradient_and_hessian_by_finite_differences(backend, binary, fit_intercept):
    require_float64(backend)
    rng = np.random.default_rng(0)
    n, p, K = 12, 3, 1 if binary else 4
    X = rng.normal(size=(n, p))
    Y = np.eye(2 if binary else K)[rng.integers(0, 2 if binary else K, n)]
    Y = Y[:, 1:] if binary else Y
    sw = rng.uniform(0.5, 2, size=n)
    theta = rng.normal(size=(p + 1, K))
    if not fit_intercept:
        theta[-1] = 0
    objective = LogisticObjective.from_weights(
        backend.xp,
        backend.asarray(X),
        backend.asarray(Y),
        backend.asarray(sw),
        l2=0.7,
        fit_intercept=fit_intercept,
    )
    _, grad, Z = objective.value_grad(backend.asarray(theta))
    H = backend.to_numpy(objective.hessian(backend.asarray(theta), Z))
    h = 1e-6
    for i in np.ndindex(theta.shape):
        if i[0] == p and not fit_intercept:
            continue
        step = np.zeros_like(theta)
        step[i] = h
        up = objective.value_grad(backend.asarray(theta + step))
        down = objective.value_grad(backend.asarray(theta - step))
        numeric = (float(up[0]) - float(down[0])) / (2 * h)
        assert float(backend.to_numpy(grad)[i]) == pytest.approx(numeric, rel=1e-6, abs=1e-9)
        column = (backend.to_numpy(up[1]) - backend.to_numpy(down[1])) / (2 * h)
        flat = i[0] * K + i[1]
        np.testing.assert_allclose(H[:, flat], column.reshape(-1), rtol=1e-5, atol=1e-8)
    steps = backend.asarray(np.array([1.0, 0.5, 0.0]))
    direction = rng.normal(size=theta.shape)
    if not fit_intercept:
        direction[-1] = 0
    D = backend.asarray(direction)
    along = backend.to_numpy(
        objective.line_values(backend.asarray(theta), Z, D, steps, objective.margins(D))
    )
    for a, v in zip([1.0, 0.5, 0.0], along, strict=True):
        assert v == pytest.approx(float(objective.value(backend.asarray(theta + a * direction))))


# --------------------------------------------------------------------------- solvers
@pytest.mark.parametrize(
    "solver,params",
    [("gd", {"max_iter": 3000}), ("sgd", {"max_iter": 1000, "batch_size": 16})]
    + [("sgd", {"max_iter": 1000, "batch_size": 16, "optimizer": o}) for o in ["momentum", "adam"]],
)
def test_first_order_solvers_approach_the_optimum(backend, dtype, solver, params):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=200) > 0).astype(int)
    exact = LogisticRegression(C=0.1, solver="newton", tol=1e-12).fit(X, y)
    model = LogisticRegression(C=0.1, solver=solver, tol=1e-6, random_state=0, **params)
    model.fit(backend.asarray(X, dtype), backend.asarray(y))
    # GD converges; SGD's shrinking steps freeze it within about 1e-2 of the optimum.
    atol = 1e-4 if solver == "gd" else 1.5e-2
    np.testing.assert_allclose(backend.to_numpy(model.coef_), exact.coef_, atol=atol)
    assert model.coef_.dtype == backend.dtype(dtype)


def test_sgd_same_seed_same_model_on_every_backend(backend):
    require_float64(backend)
    X, y = IRIS
    params = dict(solver="sgd", batch_size=16, max_iter=5, tol=0.0, random_state=3)
    with pytest.warns(mlxp.ConvergenceWarning):
        reference = LogisticRegression(**params).fit(X, y)
    with pytest.warns(mlxp.ConvergenceWarning):
        model = LogisticRegression(**params).fit(backend.asarray(X), backend.asarray(y))
    np.testing.assert_allclose(backend.to_numpy(model.coef_), reference.coef_, rtol=1e-12)


def test_lbfgs_reads_the_host_rarely(monkeypatch):
    strict = pytest.importorskip("array_api_strict")
    reads = []
    for name in ["__bool__", "__float__", "__int__"]:
        original = getattr(strict._array_object.Array, name)

        def counted(self, _original=original):
            reads.append(1)
            return _original(self)

        monkeypatch.setattr(strict._array_object.Array, name, counted)
    X, y = IRIS
    model = LogisticRegression(max_iter=200, tol=1e-8).fit(strict.asarray(X), strict.asarray(y))
    # validation reads a few flags; the loop reads one every 5 iterations, and n_iter_ once
    assert model.n_iter_ > 20
    assert len(reads) <= 10 + model.n_iter_ // 5


def test_max_iter_warns_and_warm_start_resumes():
    X, y = IRIS
    with pytest.warns(mlxp.ConvergenceWarning, match="max_iter=5"):
        model = LogisticRegression(max_iter=5, warm_start=True, tol=1e-8).fit(X, y)
    model.set_params(max_iter=500)
    model.fit(X, y)
    cold = LogisticRegression(max_iter=500, tol=1e-8).fit(X, y)
    assert model.n_iter_ < cold.n_iter_
    np.testing.assert_allclose(model.coef_, cold.coef_, atol=1e-4)


# --------------------------------------------------------------------------- numerics and labels
def test_huge_logits_give_finite_results(backend):
    dtype = backend.float_dtypes[-1]
    X = np.array([[1e4], [-1e4], [2e4], [-2e4]])
    y = np.array([1.0, 0.0, 0.0, 1.0])  # the last two are wrong at huge margins
    objective = LogisticObjective.from_weights(
        backend.xp,
        backend.asarray(X, dtype),
        backend.asarray(y[:, None], dtype),
        backend.asarray(np.ones(4), dtype),
        l2=0.0,
        fit_intercept=True,
    )
    value, grad, _ = objective.value_grad(backend.asarray(np.array([[1.0], [0.0]]), dtype))
    assert np.isfinite(backend.to_numpy(grad)).all()
    assert float(value) == pytest.approx(1e4, rel=1e-6)  # (0 + 0 + 2e4 + 2e4) / 4
    for n_classes in (2, 3):
        fitted = LogisticRegression(C=100.0).fit(np.eye(6) * 3, np.arange(6) % n_classes)
        huge = backend.asarray(np.eye(6) * 1e5, dtype)
        proba = backend.to_numpy(fitted.predict_proba(huge))
        log_proba = backend.to_numpy(fitted.predict_log_proba(huge))
        assert np.isfinite(proba).all() and np.isfinite(log_proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.exp(log_proba), proba, atol=1e-6)


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "emu"]),
        np.array([False, True]),
        np.array([-3, 7]),
        np.array([2.0, 5.0, 9.0]),
    ],
    ids=["strings", "booleans", "ints", "integral floats"],
)
def test_any_labels_come_back_as_given(backend, labels):
    X, y = IRIS
    y = labels[np.minimum(y, len(labels) - 1)]
    model = LogisticRegression()
    Xb = backend.asarray(X)
    if labels.dtype.kind in "biuf":
        yb = backend.asarray(y)
    else:
        yb = y  # strings stay NumPy
    model.fit(Xb, yb)
    np.testing.assert_array_equal(model.classes_, np.unique(labels))
    pred = model.predict(Xb)
    if labels.dtype.kind in "biuf":
        assert aac.array_namespace(pred) is aac.array_namespace(Xb)
    else:
        assert isinstance(pred, np.ndarray)
    assert (backend.to_numpy(pred) == y).mean() > 0.8
    assert model.score(Xb, yb) > 0.8
    width = 1 if len(labels) == 2 else len(labels)
    assert model.coef_.shape == (width, 4)
    assert model.decision_function(Xb).shape == ((150,) if width == 1 else (150, width))


@pytest.mark.parametrize("dtype", ["int64", "uint8", "uint16", "uint32"])
def test_labels_given_as_numpy_beside_X_elsewhere(backend, dtype):
    """NumPy labels (as the error about PyTorch's wide unsigned labels advises) beside X on
    another library: ``predict`` gives them back in X's library (wide unsigned ones looked
    up on the host: PyTorch cannot gather them), and ``score`` compares on the host."""
    X, y = IRIS
    y = (y * 7).astype(dtype)
    Xb = backend.asarray(X)
    model = LogisticRegression().fit(Xb, y)
    pred = model.predict(Xb)
    assert aac.array_namespace(pred) is aac.array_namespace(Xb)
    assert backend.to_numpy(pred).dtype.kind == np.dtype(dtype).kind  # no_x64: int32
    accuracy = (backend.to_numpy(pred) == y).mean()
    assert accuracy > 0.9 and model.score(Xb, y) == pytest.approx(accuracy)
    for weights in (backend.asarray(np.ones(len(y))), np.ones(len(y))):  # host ones follow X
        assert model.score(Xb, y, sample_weight=weights) == pytest.approx(accuracy)
    refit = LogisticRegression().fit(Xb, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(backend.to_numpy(refit.coef_), backend.to_numpy(model.coef_))


def test_class_weight_is_sample_weight_per_class():
    X, y = IRIS
    weights = {0: 3.0, 1: 0.5, 2: 1.0}
    a = LogisticRegression(class_weight=weights, tol=1e-10, max_iter=500).fit(X, y)
    sw = np.array([weights[c] for c in y])
    b = LogisticRegression(tol=1e-10, max_iter=500).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-8)
    y_unbalanced = np.where(np.arange(150) < 130, 0, 1)
    balanced = LogisticRegression(class_weight="balanced").fit(X, y_unbalanced)
    counts = np.bincount(y_unbalanced)
    sw = (150 / (2 * counts))[y_unbalanced]
    manual = LogisticRegression().fit(X, y_unbalanced, sample_weight=sw)
    np.testing.assert_allclose(balanced.coef_, manual.coef_, rtol=1e-6)


BAD = {
    "one class": (dict(), np.zeros(150, int), ValueError, "only one class"),
    "NaN label": (dict(), np.where(np.arange(150) == 3, np.nan, 1.0), ValueError, "NaN"),
    "continuous": (dict(), np.linspace(0, 1, 150), ValueError, "Unknown label type: continuous"),
    "C = 0": (
        dict(C=0.0),
        IRIS[1],
        ValueError,
        r"'C' parameter of LogisticRegression must be a float in the range \(0, inf\]",
    ),
    "solver": (
        dict(solver="liblinear"),
        IRIS[1],
        ValueError,
        "'solver' parameter of LogisticRegression must be a str among",
    ),
    "penalty": (
        dict(penalty="l1"),
        IRIS[1],
        ValueError,
        "'penalty' parameter of LogisticRegression must be a str among {'l2'} or None",
    ),
    "class_weight": (
        dict(class_weight="auto"),
        IRIS[1],
        ValueError,
        "'class_weight' parameter of LogisticRegression must be",
    ),
    "unknown class": (dict(class_weight={7: 2.0}), IRIS[1], ValueError, "not in y"),
    "optimizer": (dict(solver="sgd", optimizer="lion"), IRIS[1], ValueError, "optimizer"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_is_refused_before_work(case, monkeypatch):
    params, y, error, message = BAD[case]
    from mlxp.linear_model import _base, _logistic

    def forbidden(*args, **kwargs):
        raise AssertionError("a solver ran although the input was invalid")

    for name in ["minimize_lbfgs", "minimize_newton"]:
        monkeypatch.setattr(_logistic, name, forbidden)
    monkeypatch.setattr(_base, "minimize_sgd", forbidden)
    with pytest.raises(error, match=message):
        LogisticRegression(**params).fit(IRIS[0], y)


def test_digits_accuracy_on_a_held_out_split():
    from mlxp.datasets import load_digits

    X, y = load_digits()
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:450], order[450:]
    model = LogisticRegression(max_iter=1000).fit(X[train] / 16, y[train])
    assert model.score(X[test] / 16, y[test]) > 0.95


@pytest.mark.parametrize("data", ["binary", "multiclass"])
def test_host_and_device_line_searches_take_the_same_steps(data):
    """NumPy tries the ladder of steps one by one; a device evaluates it at once."""
    strict = pytest.importorskip("array_api_strict")
    X, y = BINARY if data == "binary" else IRIS
    host = LogisticRegression(tol=1e-8, max_iter=300).fit(X, y)
    device = LogisticRegression(tol=1e-8, max_iter=300).fit(strict.asarray(X), strict.asarray(y))
    assert host.n_iter_ == device.n_iter_
    np.testing.assert_allclose(mlxp.to_numpy(device.coef_), host.coef_, rtol=1e-9, atol=1e-12)
