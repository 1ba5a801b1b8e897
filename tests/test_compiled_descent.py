"""The "gd" and "sgd" solvers compiled on JAX (compile="auto"): "gd" one
``jax.lax.while_loop``, "sgd" one program per epoch.

Checked against the same fit run eagerly (``compile=False``) and on NumPy: the same
iteration or epoch count, the same convergence warning, θ to float tolerance (the same
shuffles, the same steps, in the same order). Also: the step size, α, C and the weights
are arguments (one trace for a grid over them), divergence raises as eagerly, a failed
compile warns once and fits eagerly, and True is refused where nothing compiles.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest

import mlxp.linear_model._stochastic as stochastic
from mlxp.exceptions import DivergenceError
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.linear_model._iterative import LeastSquaresObjective
from mlxp.optim import SGD, Adam, AdamW, Optimizer
from tests.conftest import case_named, fresh_jit_caches, untraceable

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4))
Y_BINARY = (X @ RNG.normal(size=4) + RNG.normal(size=200) > 0).astype(int)
Y_THREE = np.argmax(X[:, :3] + RNG.normal(size=(200, 3)), axis=1)
Y_REAL = X @ RNG.normal(size=4) + 0.1 * RNG.normal(size=200)
WEIGHTS = RNG.uniform(0.5, 2.0, size=200)

MINI_BATCHES = {"solver": "sgd", "batch_size": 16, "random_state": 0, "tol": 1e-5, "max_iter": 20}
# (estimator, parameters, target, sample weights): compiled must equal eager on each.
FITS = {
    "logistic gd": (LogisticRegression, {"solver": "gd", "C": 0.1}, Y_BINARY, None),
    "logistic gd, max_iter runs out": (
        LogisticRegression,
        {"solver": "gd", "max_iter": 15, "tol": 0.0},
        Y_THREE,
        None,
    ),
    "logistic sgd, converging": (
        LogisticRegression,
        {**MINI_BATCHES, "C": 0.1, "batch_size": 100, "max_iter": 300, "tol": 1e-3},
        Y_BINARY,
        None,
    ),
    "logistic sgd, momentum, three classes": (
        LogisticRegression,
        {**MINI_BATCHES, "optimizer": "momentum", "fit_intercept": False},
        Y_THREE,
        None,
    ),
    "logistic sgd, adam, weights": (
        LogisticRegression,
        {**MINI_BATCHES, "optimizer": "adam"},
        Y_BINARY,
        WEIGHTS,
    ),
    "logistic sgd, a batch of every row": (
        LogisticRegression,
        {**MINI_BATCHES, "batch_size": 500, "optimizer": "adam"},
        Y_BINARY,
        None,
    ),
    "linear gd": (LinearRegression, {"solver": "gd", "max_iter": 2000}, Y_REAL, None),
    "ridge gd, weights": (Ridge, {"solver": "gd", "alpha": 3.0}, Y_REAL, WEIGHTS),
    "linear sgd, AdamW, learning rate": (
        LinearRegression,
        {**MINI_BATCHES, "optimizer": AdamW(0.05)},
        Y_REAL,
        None,
    ),
    "ridge sgd, two targets, uneven last batch": (
        Ridge,
        {**MINI_BATCHES, "alpha": 2.0, "batch_size": 30},
        np.stack([Y_REAL, -Y_REAL], axis=1),
        None,
    ),
}


def _fit(case, name, compile, dtype="float64", **changes):
    estimator, params, y, weights = FITS[name]
    model = estimator(compile=compile, **{**params, **changes})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = None if weights is None else case.asarray(weights, dtype)
        target = case.asarray(y, dtype) if estimator is not LogisticRegression else case.asarray(y)
        model.fit(case.asarray(X, dtype), target, sample_weight=w)
    return model, [str(w.message) for w in caught]


def _traced(monkeypatch):
    """The number of traces of the compiled "gd" iteration and "sgd" epoch from now on;
    the eager epoch refused, so a fit that should run compiled cannot pass uncompiled."""
    traces = []
    body, program = stochastic._gd_body, stochastic._epoch_program

    def counted_body(*args):
        traces.append("gd")
        return body(*args)

    def counted_program(*args):
        epoch = program(*args)

        def traced(*arrays):
            traces.append("sgd")
            return epoch(*arrays)

        return traced

    fresh_jit_caches(monkeypatch)
    monkeypatch.setattr(stochastic, "_gd_body", counted_body)
    monkeypatch.setattr(stochastic, "_epoch_program", counted_program)
    return traces


def _refuse_eager_epochs(monkeypatch):
    def refused(*args):
        raise AssertionError("an epoch ran uncompiled")

    monkeypatch.setattr(stochastic._Epochs, "_eager", refused)


@pytest.mark.parametrize("name", list(FITS))
def test_compiled_fit_equals_the_eager_one_and_numpy(monkeypatch, name):
    case = case_named("jax:cpu")
    eager, eager_warned = _fit(case, name, False)
    numpy_fit, _ = _fit(case_named("numpy:cpu"), name, False)
    traces = _traced(monkeypatch)
    if "sgd" in name:
        _refuse_eager_epochs(monkeypatch)
    compiled, warned = _fit(case, name, "auto")
    assert traces, "compile='auto' did not compile the solver on JAX"
    assert compiled.n_iter_ == eager.n_iter_ == numpy_fit.n_iter_
    assert warned == eager_warned  # the not-converged warning, or none, on both
    for attribute in ("coef_", "intercept_"):
        got, want, numpy_value = (
            np.asarray(getattr(m, attribute)) for m in (compiled, eager, numpy_fit)
        )
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got, numpy_value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["logistic sgd, adam, weights", "logistic sgd, a batch of every row", "linear gd"]
)
def test_float32_compiled_fit_stays_float32(monkeypatch, name):
    """Adam's step count is weakly typed in the programs: a strong int32 count makes its
    bias corrections, and so θ, float64 when traced (x64 on)."""
    case = case_named("jax:cpu")
    eager, _ = _fit(case, name, False, dtype="float32", max_iter=2)
    traces = _traced(monkeypatch)
    _refuse_eager_epochs(monkeypatch)
    compiled, warned = _fit(case, name, "auto", dtype="float32", max_iter=2)
    assert traces and not any("compiling" in message for message in warned)
    assert compiled.coef_.dtype == eager.coef_.dtype == case.dtype("float32")
    np.testing.assert_allclose(np.asarray(compiled.coef_), np.asarray(eager.coef_), rtol=2e-4)


def test_one_program_serves_any_step_size_penalty_and_weights(monkeypatch):
    """The step size, α, C, tol and the weights are the programs' arguments: a grid over
    them traces once per solver and data shape."""
    case = case_named("jax:cpu")
    traces = _traced(monkeypatch)
    for learning_rate, alpha in [(0.05, 1.0), (0.02, 5.0), (None, 0.5)]:
        _fit(
            case,
            "ridge sgd, two targets, uneven last batch",
            "auto",
            alpha=alpha,
            learning_rate=learning_rate,
        )
        _fit(case, "ridge gd, weights", "auto", alpha=alpha, learning_rate=learning_rate)
    for C, tol in [(1.0, 1e-4), (0.1, 1e-6)]:
        _fit(case, "logistic sgd, adam, weights", "auto", C=C, tol=tol, max_iter=3)
    assert sorted(traces) == ["gd", "sgd", "sgd"]


@pytest.mark.parametrize("solver", ["gd", "sgd"])
def test_divergence_raises_as_it_does_eagerly(solver):
    case = case_named("jax:cpu")
    name = "linear gd" if solver == "gd" else "linear sgd, AdamW, learning rate"
    change = (
        {"learning_rate": 10.0} if solver == "gd" else {"optimizer": "sgd", "learning_rate": 5.0}
    )
    messages = []
    for compile in ("auto", False):
        with pytest.raises(DivergenceError, match="learning_rate=") as raised:
            _fit(case, name, compile, **change)
        messages.append(str(raised.value).split(" with ")[1])
    assert messages[0] == messages[1]


def test_failed_compile_warns_once_and_fits_eagerly(monkeypatch):
    case = case_named("jax:cpu")
    untraceable(monkeypatch, LeastSquaresObjective)
    name = "linear sgd, AdamW, learning rate"
    eager, _ = _fit(case, name, False, max_iter=3)
    model, warned = _fit(case, name, "auto", max_iter=3)
    assert [m for m in warned if "compiling" in m] == [
        "compile='auto': compiling the solver's epoch failed (RuntimeError: not traceable); "
        "it runs uncompiled."
    ]
    np.testing.assert_allclose(np.asarray(model.coef_), np.asarray(eager.coef_), rtol=1e-12)
    _, warned = _fit(case, name, "auto", max_iter=3)
    assert not any("compiling" in message for message in warned)  # not tried again
    with pytest.raises(RuntimeError, match="not traceable"):
        _fit(case, name, True, max_iter=3)


class FixedMomentum(SGD):
    """A user's optimiser whose signature differs from its base class's."""

    def __init__(self, lr=0.05):
        super().__init__(lr, momentum=0.5)


class CountOnTheHost(Adam):
    """A user's optimiser that reads its step count back: it cannot be traced."""

    def _update(self, xp, p, g, state, lr, in_place=False):
        int(state["step"])
        return super()._update(xp, p, g, state, lr, in_place)


class Scaled(SGD):
    """A user's optimiser that keeps a setting of its own, outside its hyperparameters."""

    def __init__(self, lr=0.05, factor=1.0):
        super().__init__(lr)
        self.factor = factor

    def _update(self, xp, p, g, state, lr):
        return super()._update(xp, p, self.factor * g, state, lr)


class Undeclared(SGD):
    """A user's optimiser that declares a hyperparameter it keeps under another name."""

    _parameter_constraints: ClassVar = {**SGD._parameter_constraints, "damping": [float]}

    def __init__(self, lr=0.05, damping=0.5):
        Optimizer.__init__(self, lr, damping=damping)
        self.momentum, self.dampening, self.nesterov, self.weight_decay = 0.0, 0.0, False, 0.0
        self._damping = damping


@pytest.mark.parametrize("batch_size", [16, 500])
def test_users_optimizers_never_share_a_program(batch_size):
    """Two fits with a user's optimiser differing only in what it keeps for itself get
    programs of their own (equal to their eager fits), and one whose declared
    hyperparameters are not its attributes fits, compiled or not."""
    case = case_named("jax:cpu")
    name, more = "linear sgd, AdamW, learning rate", {"max_iter": 3, "batch_size": batch_size}
    for factor in (1.0, 0.1):
        fits = [
            _fit(case, name, c, optimizer=Scaled(factor=factor), **more)[0] for c in ("auto", False)
        ]
        np.testing.assert_allclose(*(np.asarray(m.coef_) for m in fits), rtol=1e-12)
        if factor == 1.0:
            first = np.asarray(fits[0].coef_)
    assert not np.allclose(first, np.asarray(fits[0].coef_))
    for on in (case, case_named("numpy:cpu")):
        _fit(on, name, "auto" if on is case else False, optimizer=Undeclared(), **more)


def test_a_users_optimizer_compiles_or_falls_back_alone(monkeypatch):
    """A user's optimiser is the program's constant as it is (not rebuilt from its
    hyperparameters); one that cannot be traced falls back, with a warning, for its own
    programs only: a later fit with another optimiser at the same shapes still compiles."""
    case = case_named("jax:cpu")
    name = "linear sgd, AdamW, learning rate"
    eager, _ = _fit(case, name, False, optimizer=FixedMomentum(), max_iter=3)
    traces = _traced(monkeypatch)
    compiled, warned = _fit(case, name, "auto", optimizer=FixedMomentum(), max_iter=3)
    assert traces and not any("compiling" in message for message in warned)
    np.testing.assert_allclose(np.asarray(compiled.coef_), np.asarray(eager.coef_), rtol=1e-12)
    for batch_size in (16, 500):  # an epoch, and the full-batch loop
        traces = _traced(monkeypatch)
        host = CountOnTheHost(0.05)
        _, warned = _fit(case, name, "auto", optimizer=host, max_iter=3, batch_size=batch_size)
        assert sum("compiling" in message for message in warned) == 1
        before = len(traces)
        _, warned = _fit(
            case, name, "auto", optimizer=Adam(0.05), max_iter=3, batch_size=batch_size
        )
        assert len(traces) > before and not any("compiling" in message for message in warned)


def test_adam_without_x64_is_as_accurate_compiled_as_eagerly():
    """With JAX's x64 mode off, 1 − βᵗ of a count on the device is float32: computed as
    −expm1(t ln β), not by cancellation (1 − 0.999 loses 1.3e-5 of it), the compiled fit
    stays as close to the eager one as the eager one is to NumPy's."""
    import jax

    case = case_named("jax:cpu")
    name, more = "logistic sgd, a batch of every row", {"max_iter": 100, "dtype": "float32"}
    numpy_fit, _ = _fit(case_named("numpy:cpu"), name, False, **more)
    previous = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        fits = {compile: _fit(case, name, compile, **more)[0] for compile in ("auto", False)}
    finally:
        jax.config.update("jax_enable_x64", previous)
    compiled, eager = (np.asarray(fits[c].coef_, dtype=np.float64) for c in ("auto", False))
    assert str(fits["auto"].coef_.dtype) == "float32"
    assert fits["auto"].n_iter_ == fits[False].n_iter_ == numpy_fit.n_iter_
    # 1 − βᵗ by cancellation: 6e-7 apart here; eager and NumPy: 7e-9
    np.testing.assert_allclose(eager, numpy_fit.coef_, atol=5e-8)
    np.testing.assert_allclose(compiled, eager, atol=5e-8)
