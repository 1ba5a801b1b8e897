"""Data frames as inputs: their column names and pandas' nullable dtypes.

scikit-learn's rules, which its users rely on: :func:`feature_names` reads the names a fit
records as ``feature_names_in_`` (all columns named by strings; None otherwise), and
:func:`check_feature_names` compares later inputs with them. :func:`from_frame` turns
pandas' nullable ``Int64``/``Float64``/``boolean`` columns into float64 with NaN for
``pd.NA``. pandas is never imported here unless the input is a pandas object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxp.exceptions import warn_user

__all__ = ["check_feature_names", "feature_names", "from_frame"]

_FRAME_LIBRARIES = ("pandas", "polars", "modin")


def _is_frame(obj: Any) -> bool:
    return type(obj).__module__.partition(".")[0] in _FRAME_LIBRARIES


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a data frame ``X`` if all are strings (an object array), else
    None (as scikit-learn's); TypeError for string names mixed with others."""
    if not (_is_frame(X) and hasattr(X, "columns")) or len(X.columns) == 0:
        return None
    names = np.asarray(list(X.columns), dtype=object)
    types = sorted(t.__qualname__ for t in {type(v) for v in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {types} as feature name / column name types. "
            "If you want feature names to be stored and validated, you must convert "
            "them all to strings, by using X.columns = X.columns.astype(str) for "
            "example. Otherwise you can remove feature / column names from your input "
            "data, or convert them all to a non-string data type."
        )
    return names if types == ["str"] else None


def check_feature_names(estimator: Any, X: Any) -> None:
    """scikit-learn's check of X's column names against the fitted ``feature_names_in_``:
    a ValueError listing unseen, missing or reordered names; a UserWarning when only one
    of the two has names."""
    fitted, names = getattr(estimator, "feature_names_in_", None), feature_names(X)
    est = type(estimator).__name__
    if fitted is None or names is None:
        if names is not None:
            warn_user(
                UserWarning(f"X has feature names, but {est} was fitted without feature names")
            )
        elif fitted is not None:
            warn_user(
                UserWarning(
                    f"X does not have valid feature names, but {est} was fitted with feature names"
                )
            )
        return
    if len(fitted) == len(names) and not np.any(fitted != names):
        return
    unseen, missing = sorted(set(names) - set(fitted)), sorted(set(fitted) - set(names))
    message = "The feature names should match those that were passed during fit.\n"
    for title, listed in (
        ("unseen at fit time:", unseen),
        ("seen at fit time, yet now missing:", missing),
    ):
        if listed:
            shown = [f"- {n}\n" for n in listed[:5]] + (["- ...\n"] if len(listed) > 5 else [])
            message += f"Feature names {title}\n" + "".join(shown)
    if not unseen and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def from_frame(obj: Any) -> Any:
    """A pandas frame or series of nullable numeric/boolean dtypes (``Int64``, ``Float64``,
    ``boolean``) as float64 with NaN for ``pd.NA``; any other object as it is."""
    if type(obj).__module__.partition(".")[0] != "pandas":
        return obj
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    dtypes = list(obj.dtypes) if hasattr(obj, "columns") else [getattr(obj, "dtype", None)]
    nullable = any(d is not None and not isinstance(d, np.dtype) for d in dtypes)
    if nullable and all(is_numeric_dtype(d) or is_bool_dtype(d) for d in dtypes):
        return obj.to_numpy(dtype=np.float64, na_value=np.nan)
    return obj
