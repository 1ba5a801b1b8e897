"""Logistic regression: the estimator, its class weights, solver choice and margins."""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

from mlxp._classifier import MarginClassifierMixin
from mlxp._compat import move, to_numpy
from mlxp._dask import is_dask_array
from mlxp._params import Interval, StrOptions
from mlxp._validation import check_is_fitted, encode_labels, validate_data
from mlxp.base import BaseEstimator, ClassifierMixin
from mlxp.exceptions import warn_not_converged
from mlxp.linear_model._base import ITERATIVE_CONSTRAINTS, LinearModelMixin
from mlxp.linear_model._dask_logistic import fit_logistic_dask
from mlxp.linear_model._logistic_loss import LogisticObjective
from mlxp.linear_model._minimize import minimize_lbfgs, minimize_newton

__all__ = ["LogisticRegression"]

SOLVERS = ("lbfgs", "newton", "gd", "sgd")


class LogisticRegression(LinearModelMixin, MarginClassifierMixin, ClassifierMixin, BaseEstimator):
    """Logistic regression by maximum likelihood with an L2 penalty.

    Minimises C·Σᵢ sᵢ ℓᵢ + ½‖W‖² (the intercept is not penalised), where ℓᵢ is the
    cross-entropy of sample i: −log σ(±zᵢ) for two classes (one weight vector, the
    sigmoid) and −log softmax(zᵢ)_{yᵢ} for more (one weight vector per class).
    scikit-learn's parameter names and fitted attributes. float16 and bfloat16 inputs are
    computed in float32 (as :func:`mlxp._validation.validate_data` says).

    Parameters
    ----------
    penalty : {"l2", None}, default "l2"
        None drops the penalty (the same as ``C=inf``).
    C : float, default 1.0
        Inverse penalty strength, > 0.
    fit_intercept : bool, default True
    max_iter : int, default 100
        Iterations (lbfgs, newton, gd) or epochs (sgd) at most.
    tol : float, default 1e-4
        Stop once the largest gradient entry of the averaged objective is ≤ tol.
    solver : {"lbfgs", "newton", "gd", "sgd"}, default "lbfgs"
        "lbfgs": quasi-Newton, all on the device. "newton": Newton–Raphson (IRLS)
        with a Cholesky solve of the Hessian, fastest for moderate n_features ×
        n_classes. "gd": full-batch gradient descent with step 1/L. "sgd":
        mini-batches with an optimiser from :mod:`mlxp.optim`.
    class_weight : None, "balanced" or dict
        Weights per class, multiplying ``sample_weight``; "balanced" uses
        n_samples / (n_classes · count(class)). Dict values must be finite and ≥ 0,
        not all 0.
    random_state : int, Generator or None
        Seed of the sgd shuffles.
    warm_start : bool, default False
        Start from the previous solution when refitting on the same classes.
    optimizer : {"sgd", "momentum", "adam"} or an :mod:`mlxp.optim` optimiser
        Update rule of the "sgd" solver.
    batch_size : int, default 64
        Mini-batch size of the "sgd" solver.
    learning_rate : float or None
        Step size of "gd"/"sgd"; None derives it from the data (1/L).
    backend : str or None, default None
        Where to compute, as for :class:`~mlxp.linear_model.LinearRegression`.
    compile : {"auto", True, False}, default "auto"
        On JAX, whether the fit runs compiled: "lbfgs", "newton" and "gd" as one
        program (a ``jax.lax.while_loop`` of the iteration; the eager loop's iterate and
        iteration count, but for rounding), "sgd" as one program per epoch (the same
        shuffles and steps). "auto" compiles, once per solver and data shape (C, tol and
        the step size are the program's arguments), and runs eagerly, with a warning,
        should compiling fail; True compiles or raises (a ValueError on other backends);
        False never. See ``mlxp.linear_model._compiled_loop`` and ``._stochastic``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted (a NumPy array: labels may be strings).
    coef_ : array of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : array of shape (1,) or (n_classes,)
    n_features_in_ : int
    n_iter_ : int
        Iterations (epochs for sgd) run.

    Examples
    --------
    >>> from mlxp.datasets import load_digits
    >>> from mlxp.linear_model import LogisticRegression
    >>> X, y = load_digits()
    >>> model = LogisticRegression(C=0.1, max_iter=500).fit(X / 16, y)
    >>> model.score(X / 16, y) > 0.95
    True
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **ITERATIVE_CONSTRAINTS,
        "penalty": [StrOptions({"l2"}), None],
        "C": [Interval(numbers.Real, 0, None, closed="right")],
        "solver": [StrOptions(set(SOLVERS))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "warm_start": [bool],
        "compile": [StrOptions({"auto"}), bool],
    }

    def __init__(
        self,
        penalty: str | None = "l2",
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        solver: str = "lbfgs",
        class_weight: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        optimizer: Any = "sgd",
        batch_size: int = 64,
        learning_rate: float | None = None,
        backend: str | None = None,
        compile: bool | str = "auto",
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.class_weight = class_weight
        self.random_state = random_state
        self.warm_start = warm_start
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.backend = backend
        self.compile = compile

    def _class_weights(self, classes: Any, counts: list[float]) -> list[float]:
        """Per-class weights; "balanced" gives Σs / (K · Σ_{i in class k} sᵢ)."""
        if self.class_weight is None:
            return [1.0] * len(classes)
        if self.class_weight == "balanced":
            total = sum(counts)
            return [total / (len(classes) * c) if c > 0 else 1.0 for c in counts]
        unknown = set(self.class_weight) - set(classes.tolist())
        if unknown:
            raise ValueError(f"class_weight names labels not in y: {sorted(unknown, key=str)}.")
        weights = [float(self.class_weight.get(c, 1.0)) for c in classes.tolist()]
        if not any(weights):
            raise ValueError(
                f"class_weight={self.class_weight!r} gives every class weight 0: nothing to fit."
            )
        return weights

    def _check_class_weight(self) -> None:
        """Dict class weights are finite numbers ≥ 0 (else the loss is NaN or maximised)."""
        if not isinstance(self.class_weight, dict):
            return
        for label, weight in self.class_weight.items():
            number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
            if not number or not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"class_weight[{label!r}] = {weight!r}: class weights must be finite "
                    "numbers ≥ 0."
                )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Fit on X (n_samples, n_features) and class labels y (n_samples,).

        On any error the estimator is left exactly as it was before the call.
        """
        self._validate_params()
        self._check_class_weight()
        place, X, y, sw = validate_data(
            self, X, y, sample_weight, reset=True, require_y=True, labels=True
        )
        if is_dask_array(X):
            if self.compile is True:
                raise ValueError(
                    f"compile=True: the {self.solver} solver compiles only on JAX arrays, "
                    'not Dask ones; pass compile="auto" or False.'
                )
            fitted: LogisticRegression = fit_logistic_dask(self, X, y, sw)
            return fitted
        classes, indices = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {classes[0]!r}."
            )
        p, targets = X.shape[1], 1 if len(classes) == 2 else len(classes)
        objective = self._objective(place, X, classes, indices, sw)
        # Rows the objective does not fit (b without an intercept, W under an infinite
        # penalty) start, and so stay, at zero.
        theta = self._initial_theta(place, classes, p, targets, X.dtype) * objective.fitted_rows
        theta, n_iter, converged = self._solve(objective, theta)
        if targets > 1:
            # Softmax ignores a shift shared by all classes; pick the one with zero mean,
            # so that the margins (decision_function) are well defined.
            theta = theta - place.xp.mean(theta, axis=1, keepdims=True)
        if not converged:
            warn_not_converged(
                f"{self.solver} stopped after max_iter={self.max_iter} iterations without "
                "reaching tol; increase max_iter, scale the data, or loosen tol."
            )
        self.classes_ = classes
        self.coef_ = theta[:p, :].T
        self.intercept_ = theta[p, :]
        self.n_features_in_ = p
        self.n_iter_ = n_iter
        return self

    def _objective(
        self, place: Any, X: Any, classes: Any, indices: Any, sw: Any
    ) -> LogisticObjective:
        """The penalised cross-entropy, the samples weighted by ``sample_weight`` × class weight.

        Targets: the one-hot labels, only the column of the second class for two classes.
        """
        xp, dev, dtype = place.xp, place.device, X.dtype
        K = len(classes)
        idx = move(indices, xp, dev)  # int32 where the device has no int64
        one_hot = xp.astype(idx[:, None] == xp.arange(K, device=dev)[None, :], dtype)
        weights = xp.ones((X.shape[0],), dtype=dtype, device=dev) if sw is None else sw
        if self.class_weight is not None:
            counts = [float(c) for c in to_numpy(weights @ one_hot)]  # weighted class counts
            per_class = xp.asarray(self._class_weights(classes, counts), dtype=dtype, device=dev)
            weights = weights * (one_hot @ per_class)
        Y = one_hot[:, 1:] if K == 2 else one_hot
        l2 = 0.0 if self.penalty is None or self.C == float("inf") else 1.0 / self.C
        return LogisticObjective.from_weights(
            xp, X, Y, weights, l2=l2, fit_intercept=self.fit_intercept
        )

    def _solve(self, objective: LogisticObjective, theta: Any) -> tuple[Any, int, bool]:
        """Minimise ``objective`` from θ with the chosen solver: (θ, iterations, converged)."""
        if self.solver == "lbfgs":
            return minimize_lbfgs(
                objective, theta, tol=self.tol, max_iter=self.max_iter, compile=self.compile
            )
        if self.solver == "newton":
            return minimize_newton(
                objective, theta, tol=self.tol, max_iter=self.max_iter, compile=self.compile
            )
        return self._descend(objective, theta)

    def _initial_theta(self, place: Any, classes: Any, p: int, targets: int, dtype: Any) -> Any:
        xp = place.xp
        previous = getattr(self, "coef_", None)
        if (
            self.warm_start
            and previous is not None
            and previous.shape == (targets, p)
            and list(self.classes_) == list(classes)
        ):
            coef, intercept = place.to_compute(self.coef_), place.to_compute(self.intercept_)
            return xp.astype(xp.concat([coef.T, intercept[None, :]], axis=0), dtype)
        return xp.zeros((p + 1, targets), dtype=dtype, device=place.device)

    # ------------------------------------------------------------------ prediction
    def _margins(self, X: Any) -> tuple[Any, Any]:
        check_is_fitted(self)
        place, X, _, _ = validate_data(self, X, reset=False)
        coef, intercept = place.to_compute(self.coef_), place.to_compute(self.intercept_)
        if X.dtype != coef.dtype:
            X = place.xp.astype(X, coef.dtype)
        return place, X @ coef.T + intercept

    def decision_function(self, X: Any) -> Any:
        """Margins XWᵀ + b: shape (n_samples,) for two classes, else (n_samples, n_classes)."""
        lazy = self._on_chunks(self.decision_function, X, "margins")
        if lazy is not None:
            return lazy
        place, Z = self._margins(X)
        return place.to_caller(Z[:, 0] if Z.shape[1] == 1 else Z)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags
