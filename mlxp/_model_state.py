"""Checks of what a model file holds, shared by every model class before it builds anything.

A model's ``_from_model_state(config, arrays)`` checks the JSON config with
:func:`check_fields` and the tensors with :func:`check_tensors`, each raising a
``ValueError`` that says what is wrong; :func:`mlxp.load` prefixes it with "<path> is
not a valid mlxp model file". The checks need only the declared shapes, so nothing is
allocated for a file that is refused: memory stays bounded by the file's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from array_api_compat import array_namespace

__all__ = ["check_fields", "check_tensors"]


def check_fields(
    value: Any, what: str, required: set[str], optional: set[str] = frozenset()
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
    first = next(iter(arrays.values()), None)
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
