"""The exceptions and warnings mlxp raises (all ``ValueError`` subclasses are bad-input errors).

Ground floor: imports nothing from mlxp, so every other module may raise these.
"""

from __future__ import annotations

import functools
import sys
import warnings

__all__ = [
    "BackendUnavailableError",
    "ConvergenceWarning",
    "DataConversionWarning",
    "DivergenceError",
    "InvalidParameterError",
    "NotFittedError",
    "RankWarning",
    "SolverError",
    "ecosystem_class",
    "warn_not_converged",
    "warn_user",
]


class BackendUnavailableError(RuntimeError):
    """The requested backend is known but cannot be used on this machine."""


class InvalidParameterError(ValueError, TypeError):
    """A hyperparameter has the wrong type or value (both a ``ValueError`` and a
    ``TypeError``, as scikit-learn's error of the same name)."""


class NotFittedError(ValueError, AttributeError):
    """``predict`` (or similar) was called before ``fit``."""


class DivergenceError(ValueError):
    """The loss became non-finite or blew up: the learning rate is too large."""


class SolverError(ValueError):
    """A factorisation failed because the problem is (numerically) singular."""


class RankWarning(UserWarning):
    """``solver="svd"`` discarded directions of X below its ``rcond`` cutoff."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


class DataConversionWarning(UserWarning):
    """Input was reshaped or converted implicitly (e.g. a column-vector ``y``)."""


@functools.cache
def _with_sklearn_base(cls: type, sklearn_class: type | None) -> type:
    if sklearn_class is None:
        return cls
    return type(cls.__name__, (cls, sklearn_class), {"__module__": __name__})


def ecosystem_class(cls: type, sklearn_name: str) -> type:
    """``cls``, also deriving from scikit-learn's class of that name when it is loaded.

    Code that catches scikit-learn's ``NotFittedError`` or ``ConvergenceWarning``
    (its own checks included) then catches ours; scikit-learn is never imported here.
    """
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    return _with_sklearn_base(cls, getattr(sklearn_exceptions, sklearn_name, None))


def warn_user(warning: Warning) -> None:
    """``warnings.warn(warning)`` attributed to the first caller outside mlxp: the user's
    line, so that the default filter shows it once per line of theirs, not once in all."""
    frame, stacklevel = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("mlxp."):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(warning, stacklevel=stacklevel)


def warn_not_converged(message: str) -> None:
    """Emit a :class:`ConvergenceWarning` (scikit-learn's too, when it is loaded) saying
    ``message``, attributed to the user's line (:func:`warn_user`)."""
    warn_user(ecosystem_class(ConvergenceWarning, "ConvergenceWarning")(message))
