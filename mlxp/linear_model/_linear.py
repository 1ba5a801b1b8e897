"""Linear and ridge regression: the estimators, their centring, weighting and solver choice."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar, TypeVar

from mlxp._dask import is_dask_array, predict_rows
from mlxp._params import Interval, StrOptions
from mlxp._validation import check_is_fitted, validate_data
from mlxp.base import BaseEstimator, RegressorMixin
from mlxp.exceptions import warn_not_converged
from mlxp.linear_model._base import ITERATIVE_CONSTRAINTS, LinearModelMixin
from mlxp.linear_model._closed_form import ClosedForm, intercept_of
from mlxp.linear_model._dask_exact import fit_linear_dask
from mlxp.linear_model._exact import solve_exact
from mlxp.linear_model._iterative import LeastSquaresObjective
from mlxp.optim import Optimizer

__all__ = ["LinearRegression", "Ridge"]

SOLVERS = ("auto", "cholesky", "qr", "svd", "gd", "sgd")
_Model = TypeVar("_Model", bound="_LinearModel")


class _LinearModel(LinearModelMixin, RegressorMixin, BaseEstimator):
    """Shared fit/predict for min ‖W‖ over (‖XW + b − Y‖²_s + α‖W‖²), s the sample weights.

    With an intercept, X and Y are centred by their weighted means; rows are then
    scaled by √sᵢ, the centred problem solved for W, and b = ȳ − x̄ W.
    """

    _alpha = 0.0
    rcond: float | None  # the estimator's
    compile: bool | str
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **ITERATIVE_CONSTRAINTS,
        "solver": [StrOptions(set(SOLVERS))],
        "rcond": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "compile": [StrOptions({"auto"}), bool],
    }

    def fit(self: _Model, X: Any, y: Any, sample_weight: Any = None) -> _Model:
        """Fit on X of shape (n_samples, n_features) and y of shape (n_samples[, n_targets]).

        ``sample_weight`` (n_samples,) weighs each squared residual; the exact solvers fit the
        weights scaled to max 1 (α scaled with them), so tiny or huge weights lose nothing.
        On any error the estimator is left exactly as it was before the call.
        """
        self._validate_params()
        place, X, y, sw = validate_data(self, X, y, sample_weight, reset=True, require_y=True)
        xp, exact = place.xp, self.solver not in ("gd", "sgd")
        closed_form = ClosedForm(xp, self.compile, self.fit_intercept)
        if is_dask_array(X):
            fitted: _Model = fit_linear_dask(self, X, y, sw)
            return fitted
        Y = xp.reshape(y, (-1, 1)) if y.ndim == 1 else y  # reshape: one op on JAX, not three
        alpha = self._alpha
        if sw is not None and exact:  # the step sizes of "gd" and "sgd" keep the scale
            largest = xp.max(sw)
            if alpha:  # Σ sᵢrᵢ² + α‖w‖² and Σ (sᵢ/c)rᵢ² + (α/c)‖w‖² share their minimiser
                alpha = alpha / float(largest)
            sw = sw / largest
        X, Y, x_mean, y_mean, null = closed_form.centre(xp, X, Y, sw)
        W, solver, n_iter = self._solve(closed_form, xp, X, Y, alpha, null, place.device)

        intercept = intercept_of(xp, W, x_mean, y_mean)  # (k,)
        if y.ndim == 1:
            coef, intercept = xp.reshape(W, (-1,)), intercept[0]  # NumPy: a NumPy scalar
        else:
            coef = W.T  # (k, p)
        # Only now, with everything computed, is the estimator updated.
        self.coef_, self.intercept_ = coef, intercept
        self.n_features_in_ = X.shape[1]
        self.solver_ = solver
        self.n_iter_ = n_iter
        return self

    def _solve(
        self,
        closed_form: ClosedForm,
        xp: Any,
        X: Any,
        Y: Any,
        alpha: float,
        null: Any,
        device: Any,
    ) -> tuple[Any, str, int]:
        """(W, solver used, iterations) for the centred, weighted problem."""
        solver = self.solver
        if alpha == float("inf"):  # weights so small against α that only W = 0 is left
            return xp.zeros((X.shape[1], Y.shape[1]), dtype=X.dtype, device=device), solver, 1
        if solver in ("gd", "sgd"):
            W, n_iter = self._minimize(xp, X, Y, alpha, device)
            return W, solver, n_iter
        W, solver = solve_exact(
            xp,
            X,
            Y,
            alpha,
            solver=solver,
            rcond=self.rcond,
            null=null,
            attempt=closed_form.attempt,
            run=closed_form.run,
        )
        return W, solver, 1

    def _minimize(self, xp: Any, X: Any, Y: Any, alpha: float, device: Any) -> tuple[Any, int]:
        """Run "gd" or "sgd" on ½n⁻¹(‖XW − Y‖² + α‖W‖²) from W = 0."""
        W, n_iter, converged = self._descend(
            LeastSquaresObjective(xp, X, Y, alpha=alpha),
            xp.zeros((X.shape[1], Y.shape[1]), dtype=X.dtype, device=device),
        )
        if not converged:
            unit = "iterations" if self.solver == "gd" else "epochs"
            warn_not_converged(
                f"{self.solver} stopped after max_iter={self.max_iter} {unit} without "
                "reaching tol; increase max_iter, loosen tol, or use an exact solver."
            )
        return W, n_iter

    def predict(self, X: Any) -> Any:
        """ŷ = X coefᵀ + intercept, of shape (n_samples,) or (n_samples, n_targets)."""
        check_is_fitted(self)
        if is_dask_array(X):  # blockwise: O(chunks) tasks, the fitted arrays as constants
            k = None if self.coef_.ndim == 1 else self.coef_.shape[0]  # y (n,) or (n, k)
            X = validate_data(self, X, reset=False)[1]
            return predict_rows(self.predict, X, width=k, dtype=self.coef_.dtype)
        place, X, _, _ = validate_data(self, X, reset=False)
        coef, intercept = place.to_compute(self.coef_), place.to_compute(self.intercept_)
        if X.dtype != coef.dtype:
            X = place.xp.astype(X, coef.dtype)
        scores = X @ coef if coef.ndim == 1 else X @ coef.T
        return place.to_caller(scores + intercept)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class LinearRegression(_LinearModel):
    """Ordinary least squares: minimise ‖Xw + b − y‖² over w and b.

    Parameters
    ----------
    fit_intercept : bool, default True
        Fit the intercept b (else b = 0).
    solver : {"auto", "cholesky", "qr", "svd", "gd", "sgd"}, default "auto"
        Exact solvers: normal equations via Cholesky, Householder QR, or the SVD
        (minimum-norm solution on rank-deficient data); "auto" picks among them
        by shape and conditioning (see :mod:`mlxp.linear_model._exact`). "qr" refuses
        rank-deficient X and gives the minimum-norm solution on wide X (n_samples − 1 <
        n_features with an intercept), as "svd" does. Iterative: full-batch gradient
        descent ("gd") or shuffled mini-batch SGD ("sgd") on ½n⁻¹‖Xw − y‖².
    rcond : float in [0, 1) or None, default None
        "svd" (and "auto" when it falls back to the SVD) treats directions of the
        column-scaled X below rcond·σ_max as zero; None means max(n, p)·ε. "svd" warns
        (:class:`~mlxp.linear_model.RankWarning`) with the effective rank when it drops one.
    compile : {"auto", True, False}, default "auto"
        On JAX, whether the fit runs compiled: the centring one ``jax.jit`` program,
        each factorisation tried another (the SVD in two), "gd" one ``jax.lax.while_loop``
        and "sgd" one program per epoch. "auto" compiles, once per configuration and
        data shape (α and the step size are arguments), and runs eagerly, with a warning,
        should compiling fail; True compiles or raises (a ValueError on other backends);
        False never. See ``mlxp.linear_model._closed_form`` and ``._stochastic``.
    max_iter : int, default 1000
        Iterations ("gd") or epochs ("sgd") at most.
    tol : float, default 1e-4
        "gd" stops when ‖∇f‖ ≤ tol·‖∇f(0)‖; "sgd" when the epoch loss improves by
        less than tol (relative) for 5 epochs.
    learning_rate : float or None, default None
        Step size of "gd"/"sgd"; None derives it from the data (1/L).
    batch_size : int, default 32
        Mini-batch size of "sgd".
    optimizer : {"sgd", "momentum", "adam"} or an :mod:`mlxp.optim` optimiser, default "sgd"
        Update rule of "sgd": plain steps, Nesterov momentum 0.9, or Adam.
    random_state : int, Generator or None
        Seed of the shuffles of "sgd" (same seed, same result on every backend).
    backend : str or None, default None
        Where to compute, named as ``MLXP_BACKEND`` ("torch", "cupy:cuda:1"); None:
        the selected backend, else the inputs' library (see :class:`mlxp.base.BaseEstimator`).

    float16 and bfloat16 inputs are computed in float32 (as
    :func:`mlxp._validation.validate_data` says); fitted attributes and predictions are float32.

    Attributes
    ----------
    coef_ : array of shape (n_features,) or (n_targets, n_features)
    intercept_ : 0-d array or array of shape (n_targets,)
    n_features_in_ : int
    n_iter_ : int
        Iterations ("gd") or epochs ("sgd") run; 1 for the exact solvers (one factorisation).
    solver_ : str
        The solver actually used ("auto" resolved).

    Examples
    --------
    >>> import numpy as np
    >>> from mlxp.linear_model import LinearRegression
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> model = LinearRegression().fit(X, 3 * X[:, 0] + 1)
    >>> np.round(model.coef_, 6), np.round(float(model.intercept_), 6)
    (array([3.]), 1.0)
    """

    def __init__(
        self,
        *,
        fit_intercept: bool = True,
        solver: str = "auto",
        max_iter: int = 1000,
        tol: float = 1e-4,
        learning_rate: float | None = None,
        batch_size: int = 32,
        optimizer: str | Optimizer = "sgd",
        random_state: Any = None,
        rcond: float | None = None,
        compile: bool | str = "auto",
        backend: str | None = None,
    ) -> None:
        self.rcond = rcond
        self.compile = compile
        self.backend = backend
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.random_state = random_state


class Ridge(_LinearModel):
    """Ridge regression: minimise ‖Xw + b − y‖² + α‖w‖² (the intercept b is not penalised).

    Parameters are those of :class:`LinearRegression`, plus ``alpha`` (≥ 0, default
    1.0), the strength of the L2 penalty. With α > 0 the problem is always well
    posed, so "auto" takes the Cholesky path on tall data.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_LinearModel._parameter_constraints,
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        fit_intercept: bool = True,
        solver: str = "auto",
        max_iter: int = 1000,
        tol: float = 1e-4,
        learning_rate: float | None = None,
        batch_size: int = 32,
        optimizer: str | Optimizer = "sgd",
        random_state: Any = None,
        rcond: float | None = None,
        compile: bool | str = "auto",
        backend: str | None = None,
    ) -> None:
        self.rcond = rcond
        self.compile = compile
        self.backend = backend
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.random_state = random_state

    @property
    def _alpha(self) -> float:  # type: ignore[override]  # the base: a constant 0
        return float(self.alpha)
