"""Metrics, computed on the inputs' device.

Each returns an array of the inputs' namespace and device (a 0-d array for scores),
or NumPy when the labels are strings. Class labels are encoded on the host once; labels
and weights given as NumPy arrays beside inputs elsewhere go where those are.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import is_numpy_array

from mlxp._backend import placement
from mlxp._compat import default_float, index_dtype, move, scatter_add, scatters
from mlxp._device import on_inputs_device
from mlxp._validation import encode_label_pair, to_array

__all__ = ["accuracy_score", "confusion_matrix", "log_loss", "mean_squared_error", "r2_score"]


def _summing_dtype(xp: Any, dtype: Any, device: Any) -> Any:
    """The dtype a metric sums in: ``dtype`` where it is a real float of 32 bits or more;
    float32 for half precisions (float16 sums 1e5 values to inf or NaN, bfloat16 counts by
    steps of 8 past 2048); else the device's default float."""
    if dtype is not None and xp.isdtype(dtype, "real floating"):
        return dtype if xp.finfo(dtype).bits >= 32 else xp.float32
    return default_float(xp, device)


def _check_weights(w: Any, n: int) -> None:
    if tuple(w.shape) != (n,):
        raise ValueError(f"sample_weight has shape {tuple(w.shape)}; expected {(n,)}.")


def _prepare(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, ...]:
    # placed before conversion: lists and data frames do not vote (input_placement), nor
    # NumPy weights, which go where y is, as they do in fit
    weights = None if is_numpy_array(sample_weight) else sample_weight
    place = placement(y_true=y_true, y_pred=y_pred, sample_weight=weights)
    y_true, y_pred = to_array(y_true, "y_true"), to_array(y_pred, "y_pred")
    if sample_weight is not None:
        sample_weight = to_array(sample_weight, "sample_weight")
    xp = place.xp
    y_true, y_pred = place.to_compute(y_true), place.to_compute(y_pred)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"y_true and y_pred have different shapes: {tuple(y_true.shape)} and "
            f"{tuple(y_pred.shape)}."
        )
    if y_true.ndim not in (1, 2):
        raise ValueError(f"y_true must be of shape (n,) or (n, k); got {tuple(y_true.shape)}.")
    if y_true.shape[0] == 0:
        raise ValueError("y_true is empty: a metric needs at least one sample.")
    dtype = _summing_dtype(xp, y_pred.dtype, place.device)
    y_true, y_pred = xp.astype(y_true, dtype), xp.astype(y_pred, dtype)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    if sample_weight is None:
        w = xp.ones((y_true.shape[0], 1), dtype=dtype, device=place.device)
    else:
        w = place.to_compute(sample_weight)
        _check_weights(w, y_true.shape[0])
        w = xp.astype(w, dtype)[:, None]
    return place, xp, y_true, y_pred, w


@on_inputs_device("y_true", "y_pred", "sample_weight")
def mean_squared_error(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> Any:
    """MSE = Σᵢ wᵢ‖yᵢ − ŷᵢ‖² / (k Σᵢ wᵢ) for targets of shape (n,) or (n, k)."""
    place, xp, y_true, y_pred, w = _prepare(y_true, y_pred, sample_weight)
    per_target = xp.sum(w * (y_true - y_pred) ** 2, axis=0) / xp.sum(w)
    return place.to_caller(xp.mean(per_target))


@on_inputs_device("y_true", "y_pred", "sample_weight")
def r2_score(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> Any:
    """R² = 1 − Σ wᵢ(yᵢ − ŷᵢ)² / Σ wᵢ(yᵢ − ȳ)², averaged uniformly over targets.

    A constant target scores 1.0 when predicted exactly and 0.0 otherwise.
    """
    place, xp, y_true, y_pred, w = _prepare(y_true, y_pred, sample_weight)
    mean = xp.sum(w * y_true, axis=0) / xp.sum(w)
    residual = xp.sum(w * (y_true - y_pred) ** 2, axis=0)
    total = xp.sum(w * (y_true - mean) ** 2, axis=0)
    # constant where it is, among the weighted rows: told exactly, as Σ w(y − ȳ)² is a
    # rounding error there, which each library's summation order makes different
    counted = w > 0
    top = xp.max(xp.where(counted, y_true, -xp.inf), axis=0)
    constant = (top == xp.min(xp.where(counted, y_true, xp.inf), axis=0)) | (total == 0)
    safe_total = xp.where(constant, xp.ones_like(total), total)
    score = xp.where(
        constant,
        xp.where(residual == 0, xp.ones_like(total), xp.zeros_like(total)),
        1 - residual / safe_total,
    )
    return place.to_caller(xp.mean(score))


def _placed_labels(
    y_true: Any, y_pred: Any, sample_weight: Any, labels: Any = None, dtype: Any = None
) -> tuple[Any, ...]:
    """Class indices of both label arrays, on the inputs' device, and the weights."""
    classes, true_idx, pred_idx = encode_label_pair(y_true, y_pred, labels)
    arrays = {"y_true": y_true, "y_pred": y_pred, "sample_weight": sample_weight}
    arrays = {k: v for k, v in arrays.items() if hasattr(v, "shape")}
    # labels and weights given on the host (NumPy) go where the others are, as in fit
    elsewhere = {k: v for k, v in arrays.items() if not is_numpy_array(v)}
    place = placement(**(elsewhere or arrays))
    xp, dev = place.xp, place.device
    true_idx, pred_idx = move(true_idx, xp, dev), move(pred_idx, xp, dev)
    if sample_weight is not None:
        sample_weight = place.to_compute(to_array(sample_weight, "sample_weight"))
        _check_weights(sample_weight, true_idx.shape[0])
        dtype = sample_weight.dtype if dtype is None else dtype
    dtype = _summing_dtype(xp, dtype, dev)
    if sample_weight is None:
        w = xp.ones(true_idx.shape, dtype=dtype, device=dev)
    else:
        w = xp.astype(sample_weight, dtype)
    return place, xp, classes, true_idx, pred_idx, w


@on_inputs_device("y_true", "y_pred", "sample_weight")
def accuracy_score(
    y_true: Any, y_pred: Any, *, normalize: bool = True, sample_weight: Any = None
) -> Any:
    """Accuracy Σ wᵢ[ŷᵢ = yᵢ] / Σ wᵢ (the weighted count of hits if not ``normalize``)."""
    place, xp, _, true_idx, pred_idx, w = _placed_labels(y_true, y_pred, sample_weight)
    hits = xp.sum(w * xp.astype(true_idx == pred_idx, w.dtype))
    return place.to_caller(hits / xp.sum(w) if normalize else hits)


@on_inputs_device("y_true", "y_pred", "sample_weight")
def confusion_matrix(
    y_true: Any, y_pred: Any, *, labels: Any = None, sample_weight: Any = None
) -> Any:
    """C[i, j] = Σ w over samples of true class i predicted as class j, classes sorted.

    Each weight added into its cell i·K + j of the K² cells by the library's own scatter
    (:func:`mlxp._compat.scatter_add`: NumPy, PyTorch, JAX, CuPy), on the inputs' device:
    O(n + K²), where a product of (n, K) one-hot matrices takes O(n·K) memory (and TF32's
    rounding on a GPU that multiplies so); that product elsewhere (array-api-strict, Dask).
    """
    place, xp, classes, true_idx, pred_idx, w = _placed_labels(
        y_true, y_pred, sample_weight, labels
    )
    K = len(classes)
    if scatters(xp):
        counts = xp.reshape(scatter_add(K * K, true_idx * K + pred_idx, w, xp=xp), (K, K))
    else:  # no scatter of its own (scatter_add's fallback loops over a cell's rows)
        slots = xp.arange(K, device=place.device)
        T = xp.astype(true_idx[:, None] == slots[None, :], w.dtype)
        counts = (T * w[:, None]).T @ xp.astype(pred_idx[:, None] == slots[None, :], w.dtype)
    if sample_weight is None:
        counts = xp.astype(xp.round(counts), index_dtype(xp, place.device))
    return place.to_caller(counts)


@on_inputs_device("y_prob")
def log_loss(y_true: Any, y_prob: Any, *, labels: Any = None, sample_weight: Any = None) -> Any:
    """Cross-entropy −Σ wᵢ log pᵢ,yᵢ / Σ wᵢ of predicted probabilities ``y_prob``.

    ``y_prob`` has shape (n, n_classes), columns in sorted class order, or (n,) with the
    probability of the larger class of two. Probabilities are clipped to [ε, 1 − ε].
    """
    y_prob = to_array(y_prob, "y_prob")
    place = placement(y_prob=y_prob)
    xp = place.xp
    prob = place.to_compute(y_prob)
    prob = xp.astype(prob, _summing_dtype(xp, prob.dtype, place.device))
    if prob.ndim == 1:
        prob = xp.stack([1 - prob, prob], axis=1)
    classes, true_idx, _ = encode_label_pair(y_true, y_true, labels)
    if prob.ndim != 2 or prob.shape[0] != true_idx.shape[0]:
        raise ValueError(
            f"y_prob has shape {tuple(y_prob.shape)}; expected ({true_idx.shape[0]}, "
            f"{len(classes)}) for {true_idx.shape[0]} labels of y_true."
        )
    if len(classes) != prob.shape[1]:
        raise ValueError(
            f"y_prob has {prob.shape[1]} columns but there are {len(classes)} classes "
            f"({list(classes)!r}); pass labels= to name them all."
        )
    _, _, _, true_idx, _, w = _placed_labels(y_true, y_true, sample_weight, classes)
    # the labels (a list, NumPy...) may live elsewhere than y_prob: to its place and dtype
    true_idx, w = move(true_idx, xp, place.device), move(w, xp, place.device)
    w = xp.astype(w, prob.dtype)
    eps = xp.finfo(prob.dtype).eps
    prob = xp.clip(prob, eps, 1 - eps)
    picked = xp.take_along_axis(prob, true_idx[:, None], axis=1)[:, 0]
    return place.to_caller(-xp.sum(w * xp.log(picked)) / xp.sum(w))
