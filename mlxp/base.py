"""scikit-learn's estimator conventions, without importing scikit-learn.

``get_params``/``set_params`` read the constructor signature, so ``clone``,
``Pipeline`` and ``GridSearchCV`` work; hyperparameters are stored untouched in
``__init__`` and validated in ``fit``. Owns too what every estimator's public methods
share: computing on the estimator's ``backend`` (:data:`BACKEND_CONSTRAINT`), the
selection a clone carries (``__sklearn_clone__``), and ``feature_names_in_``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from mlxp._backend import BACKEND_NAMES, get_backend, use_backend
from mlxp._dask import concrete
from mlxp._device import COMPUTE_METHODS, OnComputeDevice
from mlxp._frames import feature_names
from mlxp._params import validate_params
from mlxp.exceptions import BackendUnavailableError
from mlxp.metrics import accuracy_score, r2_score

__all__ = [
    "BACKEND_CONSTRAINT",
    "BackendSpec",
    "BaseEstimator",
    "ClassifierMixin",
    "RegressorMixin",
]


class BackendSpec:
    """A backend named as ``MLXP_BACKEND`` names it: ``"torch"``, ``"torch:cpu"``,
    ``"cupy:cuda:1"`` (whether the device exists here is checked when computing)."""

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        name = value.strip().partition(":")[0].lower().replace("-", "_")
        return name in BACKEND_NAMES or name in ("np", "strict")

    def describe(self, plural: bool = False) -> str:
        names = ", ".join(repr(n) for n in BACKEND_NAMES)
        return f"a str naming a backend among {{{names}}}, optionally with ':device'"


BACKEND_CONSTRAINT: list[Any] = [None, BackendSpec()]
"""The constraint of an estimator's ``backend`` parameter: None or a backend spec."""


def _active_backend() -> str | None:
    """The selection in force here (``use_backend``, ``set_backend``, ``MLXP_BACKEND``) as a
    spec, or None (none, or a bad ``MLXP_BACKEND``, which the clone's fit will report)."""
    try:
        backend = get_backend()
    except (ValueError, BackendUnavailableError):
        return None
    return None if backend is None else str(backend)


def _computing(method: Callable[..., Any], *, records_names: bool) -> Callable[..., Any]:
    """``method`` run on the estimator's ``backend`` (if not None); a ``fit`` also records
    ``feature_names_in_`` of a data frame's string columns, once it has succeeded."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        spec = getattr(self, "backend", None)
        if spec is not None:
            validate_params(self, {"backend": BACKEND_CONSTRAINT}, {"backend": spec})
        names = None
        if records_names:  # a TypeError for mixed column names, before any work
            names = feature_names(args[0] if args else kwargs.get("X"))
        scope = contextlib.nullcontext() if spec is None else use_backend(spec)
        with scope:
            result = method(self, *args, **kwargs)
        if names is not None:
            self.feature_names_in_ = names
        elif records_names and hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return result

    run._mlxp_computing = True  # type: ignore[attr-defined]
    return run


class BaseEstimator(OnComputeDevice):
    """Parameter handling and ``repr`` shared by every mlxp estimator.

    A subclass declares ``_parameter_constraints`` (see :mod:`mlxp._params`), one entry
    per constructor argument; ``fit`` calls :meth:`_validate_params` before any work.

    Where it computes: an estimator's ``backend`` parameter (``"torch"``, ``"torch:cpu"``,
    ``"cupy:cuda:1"``, as ``MLXP_BACKEND`` names them) makes its ``fit``, ``predict``,
    ``predict_proba``, ``decision_function``, ``score``... run inside
    ``mlxp.use_backend(backend)``; None (the default) keeps the rule of
    :mod:`mlxp._backend` (the selected backend, else the inputs' library). Cloned
    (``sklearn.base.clone``, as the searches do in the calling thread) while a backend is
    selected, an estimator with ``backend=None`` becomes one with that selection written
    out: ``clone(est).get_params()["backend"] == "torch:cpu"`` inside
    ``use_backend("torch")``; so threading and process (loky) workers, which do not see
    the caller's selection, compute there, and a clone of the clone too.
    ``cross_val_score(n_jobs=...)`` clones its later folds in joblib's thread, outside a
    ``use_backend`` block: give ``backend=``, or ``set_backend``, or ``pre_dispatch="all"``.

    Fitted on a data frame whose columns are all named by strings, ``fit`` records them
    as ``feature_names_in_`` (an object array), which later inputs must match
    (scikit-learn's rules, :mod:`mlxp._frames`).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in COMPUTE_METHODS:  # run on the estimator's ``backend`` when it names one
            method = getattr(cls, name, None)
            if inspect.isfunction(method) and not getattr(method, "_mlxp_computing", False):
                setattr(cls, name, _computing(method, records_names=name == "fit"))

    def __sklearn_clone__(self) -> BaseEstimator:
        """An unfitted copy with the same parameters (as ``sklearn.base.clone`` makes); an
        estimator with ``backend=None`` cloned while a backend is selected gets that
        selection as its ``backend`` (``get_params`` shows it, e.g. ``'torch:cpu'``), so a
        search's threading or process workers compute where the search was started."""
        from sklearn.base import clone  # only scikit-learn calls this hook

        params = {k: clone(v, safe=False) for k, v in self.get_params(deep=False).items()}
        if "backend" in params and params["backend"] is None:
            params["backend"] = _active_backend()
        return type(self)(**params)

    def _validate_params(self) -> None:
        """Check every constructor argument against ``_parameter_constraints``."""
        validate_params(self, self._parameter_constraints, self.get_params(deep=False))

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, by name (``deep`` expands nested estimators)."""
        params = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            params[name] = value
        return params

    def set_params(self, **params: Any) -> BaseEstimator:
        """Set constructor arguments by name (``step__param`` for nested estimators)."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {self!r}. "
                    f"Valid parameters are: {valid!r}."
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        signature = inspect.signature(type(self).__init__)
        changed = []
        for name in self._param_names():
            default = signature.parameters[name].default
            value = getattr(self, name)
            if value is not default and not (_is_plain(value) and value == default):
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def __sklearn_tags__(self) -> Any:  # scikit-learn >= 1.6 asks for this; imported lazily
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            input_tags=InputTags(allow_nan=False, sparse=False),
        )


def _is_plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, type(None), tuple))


class RegressorMixin:
    """``score`` as the coefficient of determination R² of ``predict(X)``."""

    _estimator_type = "regressor"
    predict: Callable[..., Any]  # the estimator's

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² = 1 − Σ wᵢ(yᵢ − ŷᵢ)² / Σ wᵢ(yᵢ − ȳ)², averaged uniformly over targets."""
        y, pred, sample_weight = concrete(y, self.predict(X), sample_weight)
        return float(r2_score(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import RegressorTags

        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.target_tags.required = True
        return tags


class ClassifierMixin:
    """``score`` as the (weighted) accuracy of ``predict(X)``."""

    _estimator_type = "classifier"
    predict: Callable[..., Any]  # the estimator's

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy = Σ wᵢ [ŷᵢ = yᵢ] / Σ wᵢ."""
        y, pred, sample_weight = concrete(y, self.predict(X), sample_weight)
        return float(accuracy_score(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        return tags
