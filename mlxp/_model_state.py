"""What a model file holds, written and checked alike by every model class.

A model's ``_get_model_state`` writes its constructor parameters with
:func:`params_to_json`, and its ``_from_model_state(config, arrays)`` reads them back with
:func:`params_from_json`, checks the JSON config with :func:`check_fields` and the
tensors with :func:`check_tensors`, each raising a ``ValueError`` that says what is
wrong; :func:`mlxp.load` prefixes it with "<path> is not a valid mlxp model file". The
checks need only the declared shapes, so nothing is allocated for a file that is refused:
memory stays bounded by the file's size.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
from array_api_compat import array_namespace

__all__ = [
    "check_fields",
    "check_tensors",
    "classes_from_json",
    "classes_to_json",
    "feature_names_from_json",
    "feature_names_to_json",
    "params_from_json",
    "params_to_json",
]


def check_fields(
    value: Any, what: str, required: AbstractSet[str], optional: AbstractSet[str] = frozenset()
) -> dict[str, Any]:
    """``value`` as a dict with every ``required`` key and no key outside ``optional``."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object (got {type(value).__name__})")
    missing, unknown = sorted(required - set(value)), sorted(set(value) - required - optional)
    if missing:
        raise ValueError(f"{what} lacks the field(s) {', '.join(map(repr, missing))}")
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(map(repr, unknown))}")
    return value


def check_tensors(
    arrays: Mapping[str, Any], expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> None:
    """``arrays`` are exactly the tensors ``expected`` names (missing and unexpected ones
    named as PyTorch's ``load_state_dict`` does), each of its expected shape, all of one
    real floating dtype, and finite. ``expected`` maps a name to (shape, what needs it)."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    problems = [
        f"{kind} key(s): {', '.join(map(repr, keys))}"
        for kind, keys in (("Missing", missing), ("Unexpected", unexpected))
        if keys
    ]
    if problems:
        raise ValueError(f"its tensors do not match the model. {'; '.join(problems)}")
    first: Any = next(iter(arrays.values()), None)
    for name, (shape, owner) in expected.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(shape):
            raise ValueError(
                f"tensor {name!r} has shape {tuple(a.shape)}, but {owner} needs {tuple(shape)}"
            )
        xp = array_namespace(a)
        if not xp.isdtype(a.dtype, "real floating") or a.dtype != first.dtype:
            raise ValueError(
                f"tensor {name!r} has dtype {a.dtype}; every tensor of a model must have the "
                f"same real floating dtype (the first has {first.dtype})"
            )
        if not bool(xp.all(xp.isfinite(a))):  # one read per tensor, once per load
            raise ValueError(f"tensor {name!r} holds non-finite values (NaN or infinity)")


def params_to_json(
    owner: str,
    params: Mapping[str, Any],
    encode: Callable[[Any], Any] | None = None,
    *,
    encodable: str = "",
) -> dict[str, Any]:
    """Constructor parameters as JSON values, to be read back by :func:`params_from_json`.

    Numbers, strings, booleans, None and lists are JSON's own; tuples, non-finite floats and
    dicts (of any keys) are tagged, ``{"tuple": [...]}``, ``{"float": "inf"}``,
    ``{"dict": [[key, value], ...]}``; ``encode`` may turn another value into a tagged
    dict (an optimiser, say: ``encodable`` names what it accepts, for the error message).
    Anything else raises ``TypeError`` naming the parameter.
    """

    def to_json(name: str, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            value = float(value)
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, (tuple, list)):
            items = [to_json(name, v) for v in value]
            return {"tuple": items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            return {"dict": [[to_json(name, k), to_json(name, v)] for k, v in value.items()]}
        tagged = None if encode is None else encode(value)
        if tagged is None:
            raise TypeError(
                f"{owner} cannot be saved: its parameter {name}={value!r} is not a number, a "
                f"string, a tuple, a list, a dict, None{encodable}."
            )
        return tagged

    return {name: to_json(name, value) for name, value in params.items()}


def params_from_json(
    params: Mapping[str, Any], decode: Callable[[dict[str, Any]], Any] | None = None
) -> dict[str, Any]:
    """The inverse of :func:`params_to_json`; a tagged dict it does not know goes to
    ``decode``, and without one (or when ``decode`` returns None) is a ``ValueError``."""

    def from_json(value: Any) -> Any:
        if isinstance(value, list):
            return [from_json(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"tuple"} and isinstance(value["tuple"], list):
            return tuple(from_json(v) for v in value["tuple"])
        if set(value) == {"float"} and value["float"] in ("inf", "-inf", "nan"):
            return float(value["float"])
        if set(value) == {"dict"} and isinstance(value["dict"], list):
            return {from_json(k): from_json(v) for k, v in value["dict"]}
        decoded = None if decode is None else decode(value)
        if decoded is None:
            raise ValueError(f"a parameter holds {value!r}, which is no saved value")
        return decoded

    return {name: from_json(value) for name, value in params.items()}


def feature_names_to_json(estimator: Any) -> dict[str, Any]:
    """``{"feature_names_in_": [names]}`` for an estimator fitted on named columns, else {}."""
    names = getattr(estimator, "feature_names_in_", None)
    return {} if names is None else {"feature_names_in_": [str(n) for n in names]}


def feature_names_from_json(fitted: dict[str, Any], n_features: int) -> Any:
    """The saved ``feature_names_in_`` as an object array (None if not saved): distinct
    strings, one per feature, else a ``ValueError``."""
    if "feature_names_in_" not in fitted:
        return None
    names = fitted["feature_names_in_"]
    valid = isinstance(names, list) and all(isinstance(n, str) for n in names)
    if not valid or len(set(names)) != len(names) or len(names) != n_features:
        raise ValueError(f"fitted feature_names_in_ is not a list of {n_features} distinct strings")
    return np.asarray(names, dtype=object)


def classes_to_json(estimator: Any) -> dict[str, Any]:
    """``{"classes_": [labels], "classes_dtype": their dtype}`` for a fitted classifier,
    so that ``predict`` gives the labels' dtype back after a load; else {}."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return {}
    return {"classes_": classes.tolist(), "classes_dtype": classes.dtype.str}


def classes_from_json(values: list[Any], dtype: str | None) -> Any:
    """``classes_`` again: a NumPy array of booleans, numbers or strings, in its saved dtype
    (None: as NumPy reads the list, for files written before the dtype was saved)."""
    labels = np.asarray(values)
    dtype = labels.dtype.str if dtype is None else dtype
    if not isinstance(dtype, str) or dtype[1:2] not in tuple("biufU"):
        raise ValueError(f"The saved classes_ have dtype {dtype!r}, not one of labels.")
    return labels.astype(dtype)
