"""Hyperparameter checks declared as data, one function to check them, one wording of errors.

Every estimator declares ``_parameter_constraints``: for each constructor argument, a
list of the constraints it may satisfy (any one suffices), as scikit-learn does::

    _parameter_constraints = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"auto", "svd"})],
        "optimizer": [StrOptions({"sgd", "adam"}), Optimizer],
        "random_state": ["random_state"],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), None],
    }

A constraint is an :class:`Interval`, a :class:`StrOptions`, a :class:`Tuples`, a class
(any instance passes), ``None`` (the value None passes) or ``"random_state"``. Layers,
optimisers and schedules call :func:`validate_params` with their own constraints in
``__init__``. A value that satisfies none raises :class:`~mlxp.exceptions.InvalidParameterError`
(a ``ValueError`` and a ``TypeError``) worded as scikit-learn's::

    The 'alpha' parameter of Ridge must be a float in the range [0, inf). Got -1.0 instead.

Numbers never include booleans, and a real interval never includes NaN; an interval
includes ±inf only where it is closed there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlxp._compat import Generator
from mlxp.exceptions import InvalidParameterError

__all__ = ["POSITIVE_INT", "Interval", "StrOptions", "Tuples", "validate_params"]


class Interval:
    """Numbers of ``type`` (``numbers.Integral`` or ``numbers.Real``) between ``left`` and
    ``right`` (None: unbounded), ``closed`` "left", "right", "both" or "neither"."""

    def __init__(self, type: type, left: float | None, right: float | None, *, closed: str) -> None:
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"closed must be 'left', 'right', 'both' or 'neither'; got {closed!r}")
        self.type, self.left, self.right, self.closed = type, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.type):
            return False
        if isinstance(value, numbers.Real) and math.isnan(value):
            return False
        low = -math.inf if self.left is None else self.left
        high = math.inf if self.right is None else self.right
        left_ok = value >= low if self.closed in ("left", "both") else value > low
        right_ok = value <= high if self.closed in ("right", "both") else value < high
        return left_ok and right_ok

    def _range(self) -> str:
        low = "-inf" if self.left is None else repr(self.left)
        high = "inf" if self.right is None else repr(self.right)
        opening = "[" if self.closed in ("left", "both") else "("
        closing = "]" if self.closed in ("right", "both") else ")"
        return f"in the range {opening}{low}, {high}{closing}"

    def describe(self, plural: bool = False) -> str:
        kind = "int" if self.type is numbers.Integral else "float"
        return f"{kind}s {self._range()}" if plural else f"{_article(kind)} {self._range()}"


class StrOptions:
    """One of the strings in ``options``."""

    def __init__(self, options: set[str]) -> None:
        self.options = set(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def describe(self, plural: bool = False) -> str:
        listed = ", ".join(repr(o) for o in sorted(self.options))
        return f"{'strs' if plural else 'a str'} among {{{listed}}}"


class Tuples:
    """A tuple (or list) of ``length`` items (any length if None), each satisfying ``item``."""

    def __init__(self, item: Any, length: int | None = None, *, min_length: int = 0) -> None:
        self.item, self.length, self.min_length = item, length, min_length

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, (tuple, list)):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return len(value) >= self.min_length and all(_satisfies(self.item, v) for v in value)

    def describe(self, plural: bool = False) -> str:
        noun = "pair" if self.length == 2 else "tuple"
        head = f"{noun}s" if plural else f"a {noun}"
        return f"{head} of {_describe(self.item, plural=True)}"


POSITIVE_INT = Interval(numbers.Integral, 1, None, closed="left")
"""The constraint of a size or a count: an int ≥ 1."""

_RANDOM_STATE = [
    None,
    Interval(numbers.Integral, 0, 2**32 - 1, closed="both"),
    np.random.Generator,
    np.random.RandomState,
    Generator,
]


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _satisfies(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if constraint == "random_state":
        return any(_satisfies(c, value) for c in _RANDOM_STATE)
    if isinstance(constraint, type):
        return isinstance(value, constraint) and not (
            constraint is not bool and isinstance(value, bool) and issubclass(constraint, int)
        )
    return constraint.is_satisfied_by(value)


def _describe(constraint: Any, plural: bool = False) -> str:
    if constraint is None:
        return "None"
    if constraint == "random_state":
        return (
            f"{_describe(_RANDOM_STATE[1])}, a numpy.random.Generator, a numpy.random.RandomState, "
            "an mlxp.Generator or None"
        )
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__!r}"
    return constraint.describe(plural)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def validate_params(
    owner: Any, constraints: Mapping[str, list[Any]], params: Mapping[str, Any]
) -> None:
    """Raise :class:`InvalidParameterError` for the first of ``params`` that satisfies
    none of its ``constraints``; ``owner`` (an object or a name) names the caller.

    Every parameter must have a constraint (a missing one is a bug in mlxp: KeyError).
    """
    name = owner if isinstance(owner, str) else type(owner).__name__
    for param, value in params.items():
        options = constraints[param]
        if not any(_satisfies(c, value) for c in options):
            allowed = _join([_describe(c) for c in options])
            raise InvalidParameterError(
                f"The {param!r} parameter of {name} must be {allowed}. Got {value!r} instead."
            )
