"""scikit-learn's estimator conventions, without importing scikit-learn.

``get_params``/``set_params`` read the constructor signature, so ``clone``,
``Pipeline`` and ``GridSearchCV`` work; hyperparameters are stored untouched in
``__init__`` and validated in ``fit``.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from mlxp._dask import concrete
from mlxp._params import validate_params
from mlxp.metrics import accuracy_score, r2_score

__all__ = ["BaseEstimator", "ClassifierMixin", "RegressorMixin"]


class BaseEstimator:
    """Parameter handling and ``repr`` shared by every mlxp estimator.

    A subclass declares ``_parameter_constraints`` (see :mod:`mlxp._params`), one entry
    per constructor argument; ``fit`` calls :meth:`_validate_params` before any work.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

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

    def __sklearn_tags__(self):  # scikit-learn >= 1.6 asks for this; imported lazily
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

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² = 1 − Σ wᵢ(yᵢ − ŷᵢ)² / Σ wᵢ(yᵢ − ȳ)², averaged uniformly over targets."""
        y, pred, sample_weight = concrete(y, self.predict(X), sample_weight)
        return float(r2_score(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        from sklearn.utils import RegressorTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.target_tags.required = True
        return tags


class ClassifierMixin:
    """``score`` as the (weighted) accuracy of ``predict(X)``."""

    _estimator_type = "classifier"

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy = Σ wᵢ [ŷᵢ = yᵢ] / Σ wᵢ."""
        y, pred, sample_weight = concrete(y, self.predict(X), sample_weight)
        return float(accuracy_score(y, pred, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        return tags
