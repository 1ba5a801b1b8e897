"""The L-BFGS and Newton solvers run as one compiled program on JAX (compile="auto").

Checked against the same fit run eagerly (``compile=False``): θ to float tolerance, and
the same iteration count and convergence flag, since the compiled loop tests the rule
after every iteration, as each eager read does for the iterations since the last. Also:
one program per solver, configuration and shapes, whatever C and tol; the fallback, with
a warning, when compiling fails; True refused where nothing compiles.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mlxp._jit
import mlxp.linear_model._compiled_loop
import mlxp.linear_model._minimize
from mlxp.linear_model import LogisticRegression
from mlxp.linear_model._logistic_loss import LogisticObjective
from tests.conftest import case_named, untraceable

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 6))
Y_BINARY = (X @ RNG.normal(size=6) + RNG.normal(size=300) > 0).astype(int)
Y_THREE = np.argmax(X[:, :3] + RNG.normal(size=(300, 3)), axis=1)

# (LogisticRegression parameters, labels): the fits whose compiled run must match the
# eager one, converging or not, masked gradients included.
FITS = {
    "binary": ({}, Y_BINARY),
    "three classes": ({}, Y_THREE),
    "no intercept": ({"fit_intercept": False}, Y_THREE),
    "no penalty": ({"penalty": None}, Y_BINARY),
    "max_iter runs out": ({"max_iter": 3, "tol": 0.0}, Y_THREE),
    "converged at the start": ({"tol": 10.0}, Y_BINARY),
}


def _fit(case, solver, params, y, compile, sample_weight=None):
    model = LogisticRegression(solver=solver, compile=compile, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = None if sample_weight is None else case.asarray(sample_weight, "float64")
        model.fit(case.asarray(X, "float64"), case.asarray(y), sample_weight=weights)
    return model, [str(w.message) for w in caught]


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("name", list(FITS))
def test_compiled_run_equals_the_eager_one(monkeypatch, solver, name):
    case = case_named("jax:cpu")
    params, y = FITS[name]
    traces = _traced(monkeypatch, solver)
    compiled, warned = _fit(case, solver, params, y, "auto")
    eager, eager_warned = _fit(case, solver, params, y, False)
    assert traces, "compile='auto' did not compile the solver on JAX"
    assert compiled.n_iter_ == eager.n_iter_
    assert warned == eager_warned  # the not-converged warning, or none, on both
    for attribute in ("coef_", "intercept_"):
        got, want = (np.asarray(getattr(m, attribute)) for m in (compiled, eager))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def _traced(monkeypatch, solver):
    """The number of traces of ``solver``'s compiled iteration from now on."""
    traces = []
    name = f"_{solver}_body"
    body = getattr(mlxp.linear_model._minimize, name)

    def counted(*args):
        traces.append(1)
        return body(*args)

    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    monkeypatch.setattr(mlxp.linear_model._minimize, name, counted)
    return traces


def test_one_program_serves_any_c_tol_and_weights(monkeypatch):
    """C, tol, max_iter (of any integer type, beyond int32 too) and the sample weights
    are the program's arguments, not its constants: a grid search over them compiles
    once per data shape."""
    case = case_named("jax:cpu")
    traces = _traced(monkeypatch, "lbfgs")
    weights = RNG.uniform(0.5, 2.0, size=300)
    for C, tol, max_iter in [(1.0, 1e-4, 100), (0.1, 1e-6, np.int64(50)), (10.0, 1e-3, 2**31)]:
        params = {"C": C, "tol": tol, "max_iter": max_iter}
        compiled, _ = _fit(case, "lbfgs", params, Y_BINARY, "auto", weights)
        eager, _ = _fit(case, "lbfgs", params, Y_BINARY, False, weights)
        assert compiled.n_iter_ == eager.n_iter_
        np.testing.assert_allclose(np.asarray(compiled.coef_), np.asarray(eager.coef_), rtol=1e-9)
    assert len(traces) == 1
    _fit(case, "lbfgs", {}, Y_THREE, "auto")  # three classes: other shapes, a new trace
    assert len(traces) == 2


def test_failed_compile_warns_once_and_fits_eagerly(monkeypatch):
    case = case_named("jax:cpu")
    untraceable(monkeypatch, LogisticObjective)
    eager, _ = _fit(case, "lbfgs", {}, Y_BINARY, False)
    fallback, warned = _fit(case, "lbfgs", {}, Y_BINARY, "auto")
    assert len(warned) == 1 and "compiling the solver's loop failed" in warned[0]
    np.testing.assert_array_equal(np.asarray(fallback.coef_), np.asarray(eager.coef_))
    _, warned = _fit(case, "lbfgs", {}, Y_BINARY, "auto")
    assert not any("compiling" in message for message in warned)  # not tried again
    with pytest.raises(RuntimeError, match="not traceable"):
        _fit(case, "lbfgs", {}, Y_BINARY, True)


@pytest.mark.parametrize("solver", ["lbfgs", "newton", "gd", "sgd", "sgd, one batch"])
def test_compile_true_is_refused_where_nothing_compiles(solver):
    one_batch = solver == "sgd, one batch"  # runs the full-batch loop, named as asked
    solver = "sgd" if one_batch else solver
    model = LogisticRegression(solver=solver, compile=True, batch_size=1000 if one_batch else 64)
    with pytest.raises(ValueError, match=f"the {solver} solver compiles only on JAX"):
        model.fit(X, Y_BINARY)
    assert not hasattr(model, "coef_")
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match=f"the {solver} solver compiles only on JAX arrays, not"):
        model.fit(da.from_array(X, chunks=100), da.from_array(Y_BINARY, chunks=100))


def test_compile_is_a_checked_parameter():
    with pytest.raises(ValueError, match="compile"):
        LogisticRegression(compile="always").fit(X, Y_BINARY)
    assert LogisticRegression().get_params()["compile"] == "auto"
