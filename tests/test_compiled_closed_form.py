"""LinearRegression's and Ridge's exact solvers compiled on JAX (compile="auto").

Checked against the same fit run eagerly (``compile=False``), to float tolerance: the
same solver chosen, the same warnings and errors, along every path of "auto" (Cholesky
kept, Cholesky refused for QR, both refused for the SVD, wide data) and with weights,
several targets and no intercept. Also: α and the weights are arguments, not constants
(one trace per configuration); the SVD's parts compiled around its read of the rank; the
fallback, with a warning, when compiling fails; True refused where nothing compiles.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import mlxp._jit
import mlxp.linear_model._closed_form
import mlxp.linear_model._exact
from mlxp.linear_model import LinearRegression, Ridge
from mlxp.linear_model._exact import SolverError
from tests.conftest import case_named

RNG = np.random.default_rng(3)
X = RNG.normal(size=(80, 5))
Y = X @ RNG.normal(size=5) + 0.1 * RNG.normal(size=80)
Y2 = np.stack([Y, X @ RNG.normal(size=5)], axis=1)
WEIGHTS = RNG.uniform(0.2, 3.0, size=80)
# κ(XᵀX) past ε^(-1/4) (8e3) with X of full rank: Cholesky refused, QR kept.
ILL = X.copy()
ILL[:, 4] = X[:, 3] + 1e-3 * RNG.normal(size=80)
# A duplicated column: rank-deficient, so the SVD.
DEFICIENT = np.concatenate([X, X[:, :1]], axis=1)

# name: (estimator, parameters, X, y, sample weights, the solver "auto" should pick)
FITS = {
    "ols": (LinearRegression, {}, X, Y, None, "cholesky"),
    "ols, no intercept": (LinearRegression, {"fit_intercept": False}, X, Y, None, "cholesky"),
    "ridge, weights": (Ridge, {"alpha": 2.5}, X, Y, WEIGHTS, "cholesky"),
    "ridge, two targets": (Ridge, {"alpha": 0.5}, X, Y2, None, "cholesky"),
    "ols, weights, two targets": (LinearRegression, {}, X, Y2, WEIGHTS, "cholesky"),
    "ill-conditioned: qr": (LinearRegression, {}, ILL, Y, None, "qr"),
    "rank-deficient: svd": (LinearRegression, {}, DEFICIENT, Y, None, "svd"),
    "wide: svd": (Ridge, {"alpha": 0.0}, X[:4], Y[:4], None, "svd"),
    "explicit qr, wide": (LinearRegression, {"solver": "qr"}, X[:4], Y[:4], None, "qr"),
    "explicit svd": (Ridge, {"solver": "svd", "alpha": 1.0}, X, Y, None, "svd"),
}


def _fit(case, estimator, params, X, y, sw, compile):
    model = estimator(compile=compile, **params)
    weights = None if sw is None else case.asarray(sw, "float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(case.asarray(X, "float64"), case.asarray(y, "float64"), sample_weight=weights)
    return model, [str(w.message) for w in caught]


def _traced(monkeypatch):
    """The factorisations and SVD parts traced for a compiled program from now on, by
    name ("cholesky", "qr"; "_svd_ridge", "_svd_scaled", "_svd_truncated")."""
    import jax

    traced = []
    attempt = mlxp.linear_model._closed_form.attempt

    def counted(xp, name, X, *args):
        if isinstance(X, jax.core.Tracer):
            traced.append(name)
        return attempt(xp, name, X, *args)

    def counting(part):
        @functools.wraps(part)
        def counted_part(xp, X, *args):
            if isinstance(X, jax.core.Tracer):
                traced.append(part.__name__)
            return part(xp, X, *args)

        return counted_part

    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    monkeypatch.setattr(mlxp.linear_model._closed_form, "attempt", counted)
    for name in ("_svd_ridge", "_svd_scaled", "_svd_truncated"):
        part = getattr(mlxp.linear_model._exact, name)
        monkeypatch.setattr(mlxp.linear_model._exact, name, counting(part))
    return traced


@pytest.mark.parametrize("name", list(FITS))
def test_compiled_fit_equals_the_eager_one(monkeypatch, name):
    case = case_named("jax:cpu")
    estimator, params, X_, y, sw, solver = FITS[name]
    traced = _traced(monkeypatch)
    compiled, warned = _fit(case, estimator, params, X_, y, sw, "auto")
    eager, eager_warned = _fit(case, estimator, params, X_, y, sw, False)
    truncated = ["_svd_scaled", "_svd_truncated"]  # rank read back, below p
    expected = {
        "ols": ["cholesky"],
        "ols, no intercept": ["cholesky"],
        "ridge, weights": ["cholesky"],
        "ridge, two targets": ["cholesky"],
        "ols, weights, two targets": ["cholesky"],
        "ill-conditioned: qr": ["cholesky", "qr"],
        "rank-deficient: svd": ["cholesky", "qr", *truncated],  # both refused first
        "wide: svd": truncated,
        "explicit qr, wide": ["qr"],
        "explicit svd": ["_svd_ridge"],
    }
    assert traced == expected[name]
    assert compiled.solver_ == eager.solver_ == solver
    assert warned == eager_warned
    for attribute in ("coef_", "intercept_"):
        got, want = (np.asarray(getattr(m, attribute)) for m in (compiled, eager))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    reference, _ = _fit(case_named("numpy:cpu"), estimator, params, X_, y, sw, "auto")
    np.testing.assert_allclose(np.asarray(compiled.coef_), reference.coef_, rtol=1e-8, atol=1e-10)


def test_one_program_serves_any_alpha_and_weights(monkeypatch):
    """α, the weights and the data are arguments, not constants: a grid search over α
    traces the Cholesky program once per configuration and shape."""
    case = case_named("jax:cpu")
    traced = _traced(monkeypatch)
    for alpha in (0.1, 1.0, 30.0):
        for sw in (WEIGHTS, RNG.uniform(0.5, 1.0, size=80)):
            compiled, _ = _fit(case, Ridge, {"alpha": alpha}, X, Y, sw, "auto")
            eager, _ = _fit(case, Ridge, {"alpha": alpha}, X, Y, sw, False)
            np.testing.assert_allclose(
                np.asarray(compiled.coef_), np.asarray(eager.coef_), rtol=1e-9
            )
    assert traced == ["cholesky"]
    _fit(case, Ridge, {"alpha": 1.0}, X[:60], Y[:60], None, "auto")  # other shapes: a trace
    assert traced == ["cholesky", "cholesky"]


def test_explicit_solver_errors_are_the_eager_ones():
    case = case_named("jax:cpu")
    for compile in ("auto", False):
        with pytest.raises(SolverError, match="solver='cholesky' failed"):
            _fit(case, LinearRegression, {"solver": "cholesky"}, DEFICIENT, Y, None, compile)
        with pytest.raises(SolverError, match="solver='qr' failed"):
            _fit(case, LinearRegression, {"solver": "qr"}, DEFICIENT, Y, None, compile)


def test_float32_fit_compiles_in_float32(monkeypatch):
    """Python numbers enter the program weakly typed: a float32 fit stays float32."""
    case = case_named("jax:cpu")
    traced = _traced(monkeypatch)
    model = Ridge(alpha=1.0).fit(case.asarray(X, "float32"), case.asarray(Y, "float32"))
    assert traced == ["cholesky"]
    assert str(model.coef_.dtype) == "float32" and str(model.intercept_.dtype) == "float32"
    reference = Ridge(alpha=1.0).fit(X, Y)
    np.testing.assert_allclose(np.asarray(model.coef_), reference.coef_, rtol=1e-4, atol=1e-5)


def test_failed_compile_warns_once_and_fits_eagerly(monkeypatch):
    case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    monkeypatch.setattr(mlxp._jit, "_UNTRACEABLE", type(mlxp._jit._UNTRACEABLE)())
    centre = mlxp.linear_model._closed_form.centre

    def refuse_traces(xp, X, *args):
        import jax

        if isinstance(X, jax.core.Tracer):
            raise RuntimeError("not traceable")
        return centre(xp, X, *args)

    monkeypatch.setattr(mlxp.linear_model._closed_form, "centre", refuse_traces)
    eager, _ = _fit(case, Ridge, {}, X, Y, None, False)
    fallback, warned = _fit(case, Ridge, {}, X, Y, None, "auto")
    assert warned == [
        "compile='auto': compiling the closed-form fit failed (RuntimeError: not traceable); "
        "it runs uncompiled."
    ]
    np.testing.assert_allclose(np.asarray(fallback.coef_), np.asarray(eager.coef_), rtol=1e-12)
    _, warned = _fit(case, Ridge, {}, X, Y, None, "auto")
    assert warned == []  # not tried again
    with pytest.raises(RuntimeError, match="not traceable"):
        _fit(case, Ridge, {}, X, Y, None, True)


@pytest.mark.parametrize("solver", ["auto", "gd", "sgd"])
def test_compile_true_is_refused_where_nothing_compiles(solver):
    model = Ridge(compile=True, solver=solver)
    with pytest.raises(ValueError, match="linear fits compile only on JAX arrays"):
        model.fit(X, Y)
    assert not hasattr(model, "coef_")
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="linear fits compile only on JAX arrays"):
        model.fit(da.from_array(X, chunks=40), da.from_array(Y, chunks=40))


def test_compile_is_a_checked_parameter():
    for estimator in (LinearRegression, Ridge):
        with pytest.raises(ValueError, match="compile"):
            estimator(compile="always").fit(X, Y)
        assert estimator().get_params()["compile"] == "auto"


@pytest.mark.parametrize("compile", ["auto", False])
def test_rcond_zero_keeps_every_finite_qr(compile):
    """rcond=0: QR is kept at any condition number (its limit 1/rcond is ∞), and a fit
    that Cholesky takes never reaches it."""
    for case_name in ("jax:cpu", "numpy:cpu"):
        case = case_named(case_name)
        for X_, solver in ((X, "cholesky"), (ILL, "qr")):
            model, _ = _fit(case, LinearRegression, {"rcond": 0.0}, X_, Y, None, compile)
            assert model.solver_ == solver
            want = np.linalg.lstsq(np.c_[X_, np.ones(80)], Y, rcond=None)[0][:-1]
            np.testing.assert_allclose(np.asarray(model.coef_), want, rtol=1e-6)


def test_compile_true_compiles_on_jax(monkeypatch):
    case = case_named("jax:cpu")
    traced = _traced(monkeypatch)
    compiled, _ = _fit(case, Ridge, {}, X, Y, None, True)
    assert traced == ["cholesky"]
    eager, _ = _fit(case, Ridge, {}, X, Y, None, False)
    np.testing.assert_allclose(np.asarray(compiled.coef_), np.asarray(eager.coef_), rtol=1e-9)


def test_compiled_fit_without_x64_is_float32_throughout(monkeypatch):
    """With JAX's x64 mode off (its default outside these tests) the data are float32 and
    α and the κ limit, Python floats, enter the programs weakly typed: the compiled fit
    equals the eager one and NumPy's float32 fit to float32 tolerance."""
    import jax

    case = case_named("jax:cpu")
    monkeypatch.setattr(mlxp._jit, "_UNTRACEABLE", type(mlxp._jit._UNTRACEABLE)())
    previous = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        traced = _traced(monkeypatch)
        fits = {}
        for compile in ("auto", False):
            model = Ridge(alpha=2.5, compile=compile)
            model.fit(
                case.asarray(X, "float32"),
                case.asarray(Y, "float32"),
                sample_weight=case.asarray(WEIGHTS, "float32"),
            )
            assert str(model.coef_.dtype) == "float32"
            fits[compile] = np.asarray(model.coef_)
        assert traced == ["cholesky"]
    finally:
        jax.config.update("jax_enable_x64", previous)
    np.testing.assert_allclose(fits["auto"], fits[False], rtol=1e-5, atol=1e-6)
    reference = Ridge(alpha=2.5).fit(
        X.astype("float32"), Y.astype("float32"), sample_weight=WEIGHTS.astype("float32")
    )
    np.testing.assert_allclose(fits["auto"], reference.coef_, rtol=1e-4, atol=1e-5)


def test_svd_of_full_rank_data_compiles_one_part(monkeypatch):
    """solver="svd" on data of full rank: the equilibrated SVD alone (its rank, read
    back, is p); the same W as eagerly and as NumPy, and no RankWarning."""
    case = case_named("jax:cpu")
    traced = _traced(monkeypatch)
    for compile in ("auto", False):
        model, warned = _fit(case, LinearRegression, {"solver": "svd"}, X, Y, None, compile)
        assert warned == [] and model.solver_ == "svd"
        reference, _ = _fit(
            case_named("numpy:cpu"), LinearRegression, {"solver": "svd"}, X, Y, None, False
        )
        np.testing.assert_allclose(np.asarray(model.coef_), reference.coef_, rtol=1e-10)
    assert traced == ["_svd_scaled"]
