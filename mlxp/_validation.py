"""Input conversion and checks shared by every estimator, all done before any work.

Owns: turning array-likes into arrays (:func:`to_array`; pandas' nullable dtypes become
floats, ``pd.NA`` NaN), checking X, y and sample weights (:func:`validate_data`), a data
frame's column names checked against ``feature_names_in_`` (:mod:`mlxp._frames`),
``check_is_fitted``, and class labels
(:func:`encode_labels`, :func:`encode_label_pair`). Each function raises a
``ValueError`` or ``TypeError`` whose message names the problem (wording follows
scikit-learn's, which users of that ecosystem know).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import array_api_compat as aac
import numpy as np

from mlxp._backend import DISCOVERY_LOCK, Placement, placement
from mlxp._compat import default_float, to_numpy
from mlxp._dask import is_dask_array
from mlxp._frames import check_feature_names, from_frame
from mlxp._kernels import all_finite
from mlxp.exceptions import DataConversionWarning, NotFittedError, ecosystem_class, warn_user

__all__ = [
    "NotFittedError",
    "as_host_array",
    "check_is_fitted",
    "encode_label_pair",
    "encode_labels",
    "labels_to_host",
    "to_array",
    "validate_data",
]


def check_is_fitted(estimator: Any, attribute: str = "coef_") -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has been fitted."""
    if not hasattr(estimator, attribute):
        raise ecosystem_class(NotFittedError, "NotFittedError")(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


def to_array(x: Any, name: str) -> Any:
    """Arrays of an Array API library pass through; anything else becomes NumPy.

    The first look at ``x`` waits for any library import in progress in another thread
    (see :data:`~mlxp._backend.DISCOVERY_LOCK`)."""
    with DISCOVERY_LOCK:
        foreign = aac.is_array_api_obj(x) and not aac.is_numpy_array(x)
    if foreign:
        return _torch_data(x, name) if aac.is_torch_array(x) else x
    return as_host_array(x, name)


def _torch_data(x: Any, name: str) -> Any:
    """A torch tensor as data: dense, with storage, and detached from autograd (else
    training would be recorded into its graph and fitted arrays would carry a grad_fn)."""
    if str(x.layout) != "torch.strided":
        raise TypeError(
            f"Sparse data was passed for {name} (a torch tensor with layout {x.layout}), but "
            "dense data is required. Use '.to_dense()' to convert it."
        )
    if x.device.type == "meta":
        raise ValueError(
            f"{name} is a torch tensor on the 'meta' device, which holds no values; "
            "move it to a real device (e.g. '.to(\"cpu\")' after filling it)."
        )
    return x.detach() if x.requires_grad else x


def as_host_array(obj: Any, name: str = "X") -> np.ndarray:
    """Turn a list, tuple, data frame or other array-like into a NumPy array.

    Sparse matrices are refused (mlxp is dense), and object arrays are converted
    to float64 or refused with the value that could not be converted.
    """
    if (
        hasattr(obj, "tocsr")
        or hasattr(obj, "todense")
        or type(obj).__name__.startswith(("csr_", "csc_", "coo_", "bsr_", "lil_", "dok_", "dia_"))
    ):
        raise TypeError(
            f"Sparse data was passed for {name}, but dense data is required. "
            "Use '.toarray()' to convert to a dense numpy array."
        )
    try:
        arr = np.asarray(from_frame(obj))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype.kind in "US":
        raise ValueError(
            f"{name} must hold real numbers: dtype='numeric' is not compatible with arrays of "
            "bytes/strings. Convert your data to numeric values explicitly instead."
        )
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            message = f"{name} must hold real numbers; could not convert it to float: {exc}"
            raise type(exc)(message) from None
    return arr


def _check_dtype(xp: Any, x: Any, name: str) -> None:
    if xp.isdtype(x.dtype, "complex floating"):
        raise ValueError(f"Complex data not supported: {name} has dtype {x.dtype}.")
    if not (xp.isdtype(x.dtype, "numeric") or xp.isdtype(x.dtype, "bool")):
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}.")


def _as_float(xp: Any, x: Any, dtype: Any) -> Any:
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _check_finite(xp: Any, x: Any, name: str) -> None:
    # One host read per array, once per call: not in any loop.
    if bool(all_finite(x, xp=xp)):
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
    floating dtype (float32 and float64 kept; float16 and bfloat16 computed in float32,
    which linear algebra and training need; integers and booleans cast to the
    backend's default float), ``y`` of shape (n_samples,) or (n_samples, n_targets)
    and ``sample_weight`` of shape (n_samples,), both in ``X``'s dtype; a number as
    ``sample_weight`` is the same weight for every sample, checked as an array is
    (finite, ≥ 0, not all zero). Torch tensors are detached from autograd; sparse
    tensors, tensors on the 'meta' device and torch labels of unsigned dtypes wider
    than uint8 (which torch cannot index) are refused.
    With ``labels=True``, ``y`` holds class labels: it stays where it was (any dtype,
    strings included), flattened to (n_samples,) with a warning if it was a column.
    With ``reset=False``, ``X`` must have ``estimator.n_features_in_`` columns.
    """
    if require_y and y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None."
        )
    if not reset:
        check_feature_names(estimator, X)
    X = to_array(X, "X")
    # a list or a data frame as y, and NumPy weights (as scikit-learn's fit_params pass
    # them), go where X is; not into Dask X, whose chunks' library they would have to match
    follows = not is_dask_array(X)
    y_votes = aac.is_array_api_obj(y) or not follows
    if y is not None:
        on_host = not aac.is_array_api_obj(y) or aac.is_numpy_array(y)
        y = labels_to_host(y) if labels and on_host else to_array(y, "y")
    sw_is_array = sample_weight is not None and not _is_number(sample_weight)
    if sw_is_array:
        sample_weight = to_array(sample_weight, "sample_weight")
    host_labels = labels and aac.is_numpy_array(y)  # labels may stay on the host (strings)
    device_weights = sw_is_array and not (follows and aac.is_numpy_array(sample_weight))
    place = placement(
        X=X,
        y=y if y_votes and not host_labels else None,
        sample_weight=sample_weight if device_weights else None,
    )
    X = _check_X(estimator, place, X, reset)
    n_samples = X.shape[0]
    if y is not None and labels:
        y = _check_labels(y, n_samples)
    elif y is not None:
        y = _check_targets(place, y, n_samples, X.dtype, multi_output)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(place.xp, sample_weight, X, place)
    return place, X, y, sample_weight


def _check_X(estimator: Any, place: Placement, X: Any, reset: bool) -> Any:
    """X on the compute device: 2-D, not empty, real, finite, with the fitted width
    (``reset=False``), in a real floating dtype (integers cast to the default float)."""
    xp = place.xp
    X = place.to_compute(X)
    _check_dtype(xp, X, "X")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead: X has shape {tuple(X.shape)}. "
            "Reshape your data either using X.reshape(-1, 1) if your data has a single "
            "feature or X.reshape(1, -1) if it contains a single sample."
        )
    for axis, what in ((0, "sample(s)"), (1, "feature(s)")):
        if X.shape[axis] == 0:
            raise ValueError(
                f"Found array with 0 {what} (shape={tuple(X.shape)}) while a minimum of 1 "
                "is required."
            )
    if not reset and X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    real = xp.isdtype(X.dtype, "real floating")
    if real and xp.finfo(X.dtype).bits < 32:
        X = xp.astype(X, xp.float32)  # float16, bfloat16: linalg and training need float32
    X = _as_float(xp, X, X.dtype if real else default_float(xp, place.device))
    if not aac.is_dask_array(X):  # lazy X: its fit's one pass checks (a check would be a pass)
        _check_finite(xp, X, "X")
    return X


def _check_length(y: Any, n_samples: int) -> None:
    if y.shape[0] != n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{n_samples}, {y.shape[0]}] (X has {n_samples} rows, y has {y.shape[0]})."
        )


def _check_targets(place: Placement, y: Any, n_samples: int, dtype: Any, multi: bool) -> Any:
    """Regression targets on the compute device: (n,) or (n, k ≥ 1), finite, in ``dtype``."""
    xp = place.xp
    y = place.to_compute(y)
    _check_dtype(xp, y, "y")
    if y.ndim not in ((1, 2) if multi else (1,)):
        raise ValueError(f"y must be 1-D or 2-D; got shape {tuple(y.shape)}.")
    _check_length(y, n_samples)
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError(f"y has 0 targets (shape={tuple(y.shape)}).")
    y = _as_float(xp, y, dtype)
    _check_finite(xp, y, "y")
    return y


def _check_labels(y: Any, n_samples: int) -> Any:
    if y.ndim == 2 and y.shape[1] == 1:
        warn_user(
            ecosystem_class(DataConversionWarning, "DataConversionWarning")(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples, ), for example using ravel()."
            )
        )
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array of class labels; got shape {tuple(y.shape)}.")
    if aac.is_torch_array(y) and str(y.dtype) in ("torch.uint16", "torch.uint32", "torch.uint64"):
        raise TypeError(
            f"y holds torch {str(y.dtype)[6:]} labels, which torch cannot index; "
            "convert them to int64 (y.to(torch.int64)) or pass them as a NumPy array."
        )
    _check_length(y, n_samples)
    return y


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_sample_weight(xp: Any, sample_weight: Any, X: Any, place: Placement) -> Any:
    n_samples, dtype = X.shape[0], X.dtype
    if _is_number(sample_weight):
        if not math.isfinite(sample_weight):
            raise ValueError(f"sample_weight={sample_weight!r} is not a finite number.")
        # like a column of X: its library, device and, on Dask, its chunks' library (a
        # Dask full() has NumPy chunks, which CuPy chunks of X would refuse to meet)
        sample_weight = xp.full_like(X[:, 0], float(sample_weight), dtype=dtype)
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


def encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class labels of any kind (ints, strings, booleans) to (classes, indices), on the host.

    ``classes`` is sorted as by ``np.unique``; ``indices`` (int64) maps each sample to
    its class. Done once per fit: labels are data about the problem, not math.
    """
    labels = labels_to_host(y)
    if labels.dtype.kind == "f":
        if np.isnan(labels).any():
            raise ValueError("Input y contains NaN.")
        if not np.isfinite(labels).all():
            raise ValueError("Input y contains infinity.")
        if np.any(labels != np.round(labels)):
            raise ValueError(
                "Unknown label type: continuous. A classifier needs discrete class labels, "
                "not continuous values (use a regressor for those)."
            )
    if labels.dtype.kind == "c":
        raise ValueError("Complex data not supported in y.")
    try:
        classes, indices = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"y mixes label types that cannot be ordered: {exc}") from None
    return classes, indices.reshape(-1).astype(np.int64)


def labels_to_host(y: Any) -> np.ndarray:
    """Labels as a NumPy array, whatever library they came from."""
    if hasattr(y, "__array_namespace__") or hasattr(y, "__dlpack__"):
        return to_numpy(y)
    return np.asarray(from_frame(y))


def encode_label_pair(
    y_true: Any, y_pred: Any, labels: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, true indices, predicted indices) for two label arrays, on the host.

    Classes are ``labels`` if given (values outside them raise), else the sorted union.
    """
    true_host, pred_host = labels_to_host(y_true), labels_to_host(y_pred)
    if true_host.ndim != 1 or pred_host.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D arrays of labels.")
    if true_host.shape[0] != pred_host.shape[0]:
        raise ValueError(
            f"y_true and y_pred have different lengths: {true_host.shape[0]} and "
            f"{pred_host.shape[0]}."
        )
    if true_host.shape[0] == 0:
        raise ValueError("y_true is empty: a metric needs at least one sample.")
    both = np.concatenate([true_host, pred_host])
    if labels is None:
        classes, indices = encode_labels(both)
    else:
        classes = np.asarray(labels_to_host(labels))
        if classes.ndim != 1 or classes.shape[0] == 0:
            raise ValueError(f"labels must be a non-empty 1-D list of labels; got {labels!r}.")
        order = np.argsort(classes)
        positions = np.searchsorted(classes, both, sorter=order)
        positions = np.clip(positions, 0, len(classes) - 1)
        indices = order[positions]
        if np.any(classes[indices] != both):
            raise ValueError("y contains labels that are not in labels=.")
    n = true_host.shape[0]
    return classes, indices[:n], indices[n:]
