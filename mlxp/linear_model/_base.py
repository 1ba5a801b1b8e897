"""What every linear estimator shares: the constraints of its iterative-solver
hyperparameters, the "gd"/"sgd" solver run, and its model-file state.

A fitted linear estimator is saved (:func:`mlxp.save`) as a config of its constructor
parameters, fitted scalars (``n_features_in_``, ``n_iter_``, ``solver_``) and labels
(``classes_`` and their NumPy dtype), and ``coef_`` and ``intercept_`` as arrays. An
``optimizer`` parameter that is an :mod:`mlxp.optim` optimiser is stored as its class
name, learning rate and hyperparameters, and rebuilt only from a fixed table of
:mod:`mlxp.optim`'s classes; any other value that JSON cannot hold is refused (TypeError).
"""

from __future__ import annotations

import numbers
from typing import Any, Protocol

from mlxp._compat import check_random_state
from mlxp._model_state import (
    check_fields,
    check_tensors,
    classes_from_json,
    classes_to_json,
    feature_names_from_json,
    feature_names_to_json,
    params_from_json,
    params_to_json,
)
from mlxp._params import POSITIVE_INT, Interval, StrOptions
from mlxp._validation import check_is_fitted
from mlxp.base import BACKEND_CONSTRAINT
from mlxp.linear_model._stochastic import OPTIMIZERS, minimize_sgd
from mlxp.optim import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["ITERATIVE_CONSTRAINTS", "LinearModelMixin"]

ITERATIVE_CONSTRAINTS: dict[str, list[Any]] = {
    "fit_intercept": [bool],
    "max_iter": [POSITIVE_INT],
    "tol": [Interval(numbers.Real, 0, None, closed="left")],
    "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"), None],
    "batch_size": [POSITIVE_INT],
    "optimizer": [StrOptions(set(OPTIMIZERS)), Optimizer],
    "random_state": ["random_state"],
    "backend": BACKEND_CONSTRAINT,
}
"""The constraints of the parameters LinearRegression, Ridge and LogisticRegression share."""

_SAVED_OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop)}
_OPTIMIZER_FORM = ", or an optimiser of mlxp.optim (SGD, Adam, AdamW, RMSprop) with a float lr"
_FITTED_ARRAYS = ("coef_", "intercept_")
_FITTED_SCALARS = ("n_features_in_", "n_iter_", "solver_")
_FITTED_SOLVERS = ("cholesky", "qr", "svd", "gd", "sgd")  # what solver_ may be


class _Estimator(Protocol):
    """What the model-file methods of :class:`LinearModelMixin` need from their estimator
    (:class:`mlxp.base.BaseEstimator` has them)."""

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def _validate_params(self) -> None: ...

    @classmethod
    def _param_names(cls) -> list[str]: ...


class LinearModelMixin:
    """The "gd"/"sgd" run and ``_get_model_state``/``_from_model_state`` of a linear estimator."""

    # the estimator's hyperparameters (set by its __init__)
    fit_intercept: bool
    solver: str
    tol: float
    max_iter: int
    batch_size: int
    optimizer: str | Optimizer
    learning_rate: float | None
    random_state: Any
    compile: bool | str

    def _descend(self, objective: Any, theta: Any) -> tuple[Any, int, bool]:
        """Run "gd" (full batch, plain steps) or "sgd" (mini-batches, ``optimizer``) from θ,
        compiled on JAX as ``compile`` says."""
        full = self.solver == "gd"
        return minimize_sgd(
            objective,
            theta,
            tol=self.tol,
            max_iter=self.max_iter,
            batch_size=objective.X.shape[0] if full else self.batch_size,
            optimizer="sgd" if full else self.optimizer,
            learning_rate=self.learning_rate,
            rng=check_random_state(self.random_state),
            compile=self.compile,
            solver=self.solver,
        )

    def _get_model_state(self: _Estimator) -> tuple[dict[str, Any], dict[str, Any]]:
        check_is_fitted(self)
        name = type(self).__name__
        params = params_to_json(
            name, self.get_params(deep=False), _encode_optimizer, encodable=_OPTIMIZER_FORM
        )
        fitted = {k: getattr(self, k) for k in _FITTED_SCALARS if hasattr(self, k)}
        fitted.update(feature_names_to_json(self))
        fitted.update(classes_to_json(self))
        return {"params": params, "fitted": fitted}, {k: getattr(self, k) for k in _FITTED_ARRAYS}

    @classmethod
    def _from_model_state(
        cls: type[_Estimator], config: dict[str, Any], arrays: dict[str, Any]
    ) -> Any:
        """The estimator of a file: its params checked against the constraints, its fitted
        fields by name and type, its tensors against them (ValueError saying why)."""
        check_fields(config, "the config", {"class", "params", "fitted"})
        params = check_fields(config["params"], "'params'", set(), set(cls._param_names()))
        est = cls(**params_from_json(params, _decode_optimizer))
        est._validate_params()
        fitted = _check_fitted(config["fitted"], classifier=hasattr(cls, "predict_proba"))
        if "classes_" in fitted:
            fitted["classes_"] = classes_from_json(fitted["classes_"], fitted.pop("classes_dtype"))
        _check_coefficients(arrays, fitted)
        if "feature_names_in_" in fitted:
            fitted["feature_names_in_"] = feature_names_from_json(fitted, fitted["n_features_in_"])
        for k, v in {**fitted, **{k: arrays[k] for k in _FITTED_ARRAYS}}.items():
            setattr(est, k, v)
        return est


def _check_fitted(fitted: object, *, classifier: bool) -> dict[str, Any]:
    """The fitted fields of a file: exactly those a fit sets, each of its type."""
    required = {"n_features_in_", "n_iter_"} | (
        {"classes_", "classes_dtype"} if classifier else {"solver_"}
    )
    fitted = dict(check_fields(fitted, "'fitted'", required, required | {"feature_names_in_"}))
    for name, low in (("n_features_in_", 1), ("n_iter_", 0)):
        value = fitted[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"fitted {name} must be an int >= {low}; got {value!r}")
    if not classifier and fitted["solver_"] not in _FITTED_SOLVERS:
        raise ValueError(
            f"fitted solver_ must be one of {_FITTED_SOLVERS}; got {fitted['solver_']!r}"
        )
    if classifier:
        classes = fitted["classes_"]
        distinct = isinstance(classes, list) and len(set(map(repr, classes))) == len(classes)
        if not distinct or len(classes) < 2:
            raise ValueError("fitted classes_ is not a list of 2 or more distinct labels")
    return fitted


def _check_coefficients(arrays: dict[str, Any], fitted: dict[str, Any]) -> None:
    """coef_ (p,) or (k, p) and intercept_ () or (k,), with p = n_features_in_ (k = 1 for
    two classes, one per class otherwise), one real floating dtype, finite."""
    p = fitted["n_features_in_"]
    coef = arrays.get("coef_")
    if "classes_" in fitted:
        k = len(fitted["classes_"])
        rows: tuple[int, ...] = (1 if k == 2 else k,)
    else:
        rows = tuple(coef.shape[:-1]) if coef is not None and coef.ndim == 2 else ()
    check_tensors(
        arrays,
        {
            "coef_": ((*rows, p), f"a model of {p} features"),
            "intercept_": (rows, f"coef_ of shape {(*rows, p)}"),
        },
    )


def _encode_optimizer(value: Any) -> dict[str, Any] | None:
    """An optimiser of mlxp.optim's table with a float lr as a tagged dict (else None)."""
    if type(value) not in _SAVED_OPTIMIZERS.values() or not isinstance(value.lr, numbers.Real):
        return None
    saved = value.state_dict()  # its per-parameter state is not saved: fit resets it
    hyper = params_to_json(saved["optimizer"], saved["hyperparameters"])
    return {"optimizer": saved["optimizer"], "lr": saved["lr"], "hyperparameters": hyper}


def _decode_optimizer(value: Any) -> Any:
    """The inverse of :func:`_encode_optimizer`; only a class of mlxp.optim's table."""
    cls = _SAVED_OPTIMIZERS.get(value.get("optimizer"))
    if cls is None:
        raise ValueError(
            f"The saved optimiser {value!r} is not one of {sorted(_SAVED_OPTIMIZERS)}."
        )
    return cls(value["lr"], **params_from_json(value["hyperparameters"]))
