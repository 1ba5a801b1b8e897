"""The model registry: which classes a model file may name, and how to find them.

mlxp's own estimators are listed in a fixed table, name → (module, class), so that no
estimator module has to import the file format to register itself and the file
format never imports an estimator module at import time: :func:`model_class`
imports the module of a table entry only when a file asks for that entry. A name
read from a file is only ever a key of this table (or of the classes a user
registered with :func:`register_model`), never a module path to import.

A model class provides ``_get_model_state() -> (config, arrays)`` (config of JSON
types, arrays by name) and the class method ``_from_model_state(config, arrays)``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BUILTIN_MODELS",
    "model_class",
    "model_name",
    "register_model",
    "registered_names",
]

BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "LinearRegression": ("mlxp.linear_model._linear", "LinearRegression"),
    "Ridge": ("mlxp.linear_model._linear", "Ridge"),
    "LogisticRegression": ("mlxp.linear_model._logistic", "LogisticRegression"),
    "Sequential": ("mlxp.nn.sequential", "Sequential"),
    "MLPClassifier": ("mlxp.nn.mlp", "MLPClassifier"),
    "MLPRegressor": ("mlxp.nn.mlp", "MLPRegressor"),
    "CNNClassifier": ("mlxp.nn.cnn", "CNNClassifier"),
}
"""mlxp's own model classes, by the name a model file stores."""

_USER_MODELS: dict[str, type] = {}


def _check_protocol(cls: type) -> None:
    for method in ("_get_model_state", "_from_model_state"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__qualname__} cannot be registered: it lacks {method}().")


def register_model(cls: type | None = None, *, name: str | None = None) -> Any:
    """Class decorator: let :func:`mlxp.load` rebuild models of a user's class ``cls``.

    ``name`` (default: the class's qualified name) is what model files store; it may
    not be one of mlxp's own names nor one registered for another class.
    """

    def add(c: type) -> type:
        _check_protocol(c)
        key = name or c.__qualname__
        same = (c.__module__, c.__qualname__)
        if key in BUILTIN_MODELS and BUILTIN_MODELS[key] != same:
            raise ValueError(f"Model class name {key!r} is already registered for mlxp's own.")
        old = _USER_MODELS.get(key, c)
        if old is not c and (old.__module__, old.__qualname__) != same:
            raise ValueError(f"Model class name {key!r} is already registered for {old!r}.")
        _USER_MODELS[key] = c
        return c

    return add if cls is None else add(cls)


def model_name(cls: type) -> str | None:
    """The name model files store for ``cls``, or None if it is not a registered class."""
    where = (cls.__module__, cls.__qualname__)
    for key, entry in BUILTIN_MODELS.items():
        if entry == where:
            return key
    return next((k for k, c in _USER_MODELS.items() if c is cls), None)


def model_class(name: str) -> type | None:
    """The class registered under ``name`` (importing mlxp's own module on demand), or None."""
    if name in BUILTIN_MODELS:
        module, attr = BUILTIN_MODELS[name]
        return getattr(importlib.import_module(module), attr)
    return _USER_MODELS.get(name)


def registered_names() -> list[str]:
    """Every name :func:`model_class` knows, sorted."""
    return sorted({*BUILTIN_MODELS, *_USER_MODELS})
