"""Regression metrics, computed on the inputs' device; each returns a 0-d array there."""

from __future__ import annotations

from typing import Any

from mlxp._backend import placement
from mlxp._compat import default_float
from mlxp._validation import _to_array

__all__ = ["mean_squared_error", "r2_score"]


def _prepare(y_true: Any, y_pred: Any, sample_weight: Any):
    y_true, y_pred = _to_array(y_true, "y_true"), _to_array(y_pred, "y_pred")
    if sample_weight is not None:
        sample_weight = _to_array(sample_weight, "sample_weight")
    place = placement(y_true=y_true, y_pred=y_pred, sample_weight=sample_weight)
    xp = place.xp
    y_true, y_pred = place.to_compute(y_true), place.to_compute(y_pred)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"y_true and y_pred have different shapes: {tuple(y_true.shape)} and "
            f"{tuple(y_pred.shape)}."
        )
    if y_true.shape[0] == 0:
        raise ValueError("y_true is empty: a metric needs at least one sample.")
    dtype = (
        y_pred.dtype
        if xp.isdtype(y_pred.dtype, "real floating")
        else default_float(xp, place.device)
    )
    y_true, y_pred = xp.astype(y_true, dtype), xp.astype(y_pred, dtype)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    if sample_weight is None:
        w = xp.ones((y_true.shape[0], 1), dtype=dtype, device=place.device)
    else:
        w = xp.astype(place.to_compute(sample_weight), dtype)[:, None]
    return place, xp, y_true, y_pred, w


def mean_squared_error(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> Any:
    """MSE = Σᵢ wᵢ‖yᵢ − ŷᵢ‖² / (k Σᵢ wᵢ) for targets of shape (n,) or (n, k)."""
    place, xp, y_true, y_pred, w = _prepare(y_true, y_pred, sample_weight)
    per_target = xp.sum(w * (y_true - y_pred) ** 2, axis=0) / xp.sum(w)
    return place.to_caller(xp.mean(per_target))


def r2_score(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> Any:
    """R² = 1 − Σ wᵢ(yᵢ − ŷᵢ)² / Σ wᵢ(yᵢ − ȳ)², averaged uniformly over targets.

    A constant target scores 1.0 when predicted exactly and 0.0 otherwise.
    """
    place, xp, y_true, y_pred, w = _prepare(y_true, y_pred, sample_weight)
    mean = xp.sum(w * y_true, axis=0) / xp.sum(w)
    residual = xp.sum(w * (y_true - y_pred) ** 2, axis=0)
    total = xp.sum(w * (y_true - mean) ** 2, axis=0)
    safe_total = xp.where(total == 0, xp.ones_like(total), total)
    score = xp.where(
        total == 0,
        xp.where(residual == 0, xp.ones_like(total), xp.zeros_like(total)),
        1 - residual / safe_total,
    )
    return place.to_caller(xp.mean(score))
