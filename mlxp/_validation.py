"""Input checks shared by every estimator, all done before any work.

Each function raises a ``ValueError`` or ``TypeError`` whose message names the
problem (wording follows scikit-learn's, which users of that ecosystem know).
"""

from __future__ import annotations

import warnings
from typing import Any

import array_api_compat as aac

from mlxp._backend import Placement, placement
from mlxp._compat import as_host_array, default_float, labels_to_host
from mlxp.exceptions import DataConversionWarning, NotFittedError, ecosystem_class

__all__ = ["NotFittedError", "check_is_fitted", "validate_data"]


def check_is_fitted(estimator: Any, attribute: str = "coef_") -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has been fitted."""
    if not hasattr(estimator, attribute):
        raise ecosystem_class(NotFittedError, "NotFittedError")(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


def _to_array(x: Any, name: str) -> Any:
    """Arrays of an Array API library pass through; anything else becomes NumPy."""
    if aac.is_array_api_obj(x) and not aac.is_numpy_array(x):
        return x
    return as_host_array(x, name)


def _check_dtype(xp: Any, x: Any, name: str) -> None:
    if xp.isdtype(x.dtype, "complex floating"):
        raise ValueError(f"Complex data not supported: {name} has dtype {x.dtype}.")
    if not (xp.isdtype(x.dtype, "numeric") or xp.isdtype(x.dtype, "bool")):
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}.")


def _as_float(xp: Any, x: Any, dtype: Any) -> Any:
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _check_finite(xp: Any, x: Any, name: str) -> None:
    # One host read per array, once per call: not in any loop.
    if bool(xp.all(xp.isfinite(x))):
        return
    if bool(xp.any(xp.isnan(x))):
        raise ValueError(f"Input {name} contains NaN.")
    raise ValueError(f"Input {name} contains infinity or a value too large for {x.dtype}.")


def validate_data(
    estimator: Any,
    X: Any,
    y: Any = None,
    sample_weight: Any = None,
    *,
    reset: bool,
    require_y: bool = False,
    multi_output: bool = True,
    labels: bool = False,
) -> tuple[Placement, Any, Any, Any]:
    """Check and convert ``X`` (and ``y``, ``sample_weight``) for ``estimator``.

    Returns the :class:`~mlxp._backend.Placement` of the call and the arrays moved
    to the compute backend: ``X`` of shape (n_samples, n_features) in a real
    floating dtype (float32 and float64 kept, integers and booleans cast to the
    backend's default float), ``y`` of shape (n_samples,) or (n_samples, n_targets)
    and ``sample_weight`` of shape (n_samples,), both in ``X``'s dtype.
    With ``labels=True``, ``y`` holds class labels: it stays where it was (any dtype,
    strings included), flattened to (n_samples,) with a warning if it was a column.
    With ``reset=False``, ``X`` must have ``estimator.n_features_in_`` columns.
    """
    cls = type(estimator).__name__
    if require_y and y is None:
        raise ValueError(f"{cls} requires y to be passed, but the target y is None.")
    X = _to_array(X, "X")
    if y is not None:
        on_host = not aac.is_array_api_obj(y) or aac.is_numpy_array(y)
        y = labels_to_host(y) if labels and on_host else _to_array(y, "y")
    sw_is_array = sample_weight is not None and not isinstance(sample_weight, (int, float))
    if sw_is_array:
        sample_weight = _to_array(sample_weight, "sample_weight")
    host_labels = labels and aac.is_numpy_array(y)  # labels may stay on the host (strings)
    place = placement(
        X=X, y=None if host_labels else y, sample_weight=sample_weight if sw_is_array else None
    )
    xp, dev = place.xp, place.device

    X = place.to_compute(X)
    _check_dtype(xp, X, "X")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead: X has shape {tuple(X.shape)}. "
            "Reshape your data either using X.reshape(-1, 1) if your data has a single "
            "feature or X.reshape(1, -1) if it contains a single sample."
        )
    n_samples, n_features = X.shape
    if n_samples == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 "
            "is required."
        )
    if n_features == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 "
            "is required."
        )
    if not reset:
        expected = estimator.n_features_in_
        if n_features != expected:
            raise ValueError(
                f"X has {n_features} features, but {cls} is expecting {expected} features as input."
            )
    float_dtype = X.dtype if xp.isdtype(X.dtype, "real floating") else default_float(xp, dev)
    X = _as_float(xp, X, float_dtype)
    _check_finite(xp, X, "X")

    if y is not None and labels:
        y = _check_labels(y, n_samples)
    elif y is not None:
        y = place.to_compute(y)
        _check_dtype(xp, y, "y")
        if y.ndim not in ((1, 2) if multi_output else (1,)):
            raise ValueError(f"y must be 1-D or 2-D; got shape {tuple(y.shape)}.")
        if y.shape[0] != n_samples:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{n_samples}, {y.shape[0]}] (X has {n_samples} rows, y has {y.shape[0]})."
            )
        if y.ndim == 2 and y.shape[1] == 0:
            raise ValueError(f"y has 0 targets (shape={tuple(y.shape)}).")
        y = _as_float(xp, y, float_dtype)
        _check_finite(xp, y, "y")

    if sample_weight is not None:
        sample_weight = _check_sample_weight(xp, dev, sample_weight, n_samples, float_dtype, place)
    return place, X, y, sample_weight


def _check_labels(y: Any, n_samples: int) -> Any:
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            ecosystem_class(DataConversionWarning, "DataConversionWarning")(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples, ), for example using ravel()."
            ),
            stacklevel=4,
        )
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array of class labels; got shape {tuple(y.shape)}.")
    if y.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {y.shape[0]}] (X has {n_samples} rows, y has {y.shape[0]})."
        )
    return y


def _check_sample_weight(xp, dev, sample_weight, n_samples, dtype, place) -> Any:
    if isinstance(sample_weight, (int, float)):
        return xp.full((n_samples,), float(sample_weight), dtype=dtype, device=dev)
    sw = place.to_compute(sample_weight)
    _check_dtype(xp, sw, "sample_weight")
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight.shape == {tuple(sw.shape)}, expected {(n_samples,)}!")
    sw = _as_float(xp, sw, dtype)
    _check_finite(xp, sw, "sample_weight")
    if bool(xp.any(sw < 0)):
        raise ValueError("Negative values in data passed to sample_weight.")
    if not bool(xp.any(sw > 0)):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw
