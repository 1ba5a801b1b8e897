"""Losses: ``forward(pred, target)`` gives the 0-d mean loss, ``backward()`` its gradient ∂L/∂pred.

Owns the loss objects and the names that pick them (:data:`LOSSES`). The math is in
:mod:`mlxp.nn.functional`; a loss checks shapes and keeps what ``backward`` needs.
Targets may be integer arrays; they are cast to the dtype of ``pred`` where a floating
target is needed.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from mlxp.nn import functional as F

__all__ = ["LOSSES", "BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss", "make_loss"]


class Loss:
    """Base class: ``forward`` caches (pred, target); ``backward`` returns ∂L/∂pred.

    :meth:`value_and_grad` is what a training step calls: the summed loss of a batch and
    the gradient of its mean, in one pass, keeping nothing.
    """

    def __init__(self) -> None:
        self._cache: tuple[Any, Any] | None = None

    def forward(self, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def backward(self) -> Any:
        raise NotImplementedError

    def check(self, pred: Any, target: Any) -> None:
        """ValueError unless ``target`` fits ``pred`` (shapes read, no array value)."""
        _same_shape(pred, target)

    def value_and_grad(self, pred: Any, target: Any, weights: Any = None) -> tuple[Any, Any]:
        """(Σᵢ wᵢℓᵢ, ∂(Σᵢ wᵢℓᵢ / m)/∂pred) for the per-sample losses ℓᵢ of the rows of pred,
        row weights w (n,) (None: all 1) and m = Σᵢ wᵢ; the first is 0-d. The mean loss
        of ``forward`` is Σᵢ ℓᵢ / n. Zero weights mask padding rows out of both."""
        n = pred.shape[0]
        per_row = math.prod(pred.shape[1:])
        residual = self._residual(pred, target)  # ∂(Σ over all elements)/∂pred
        elements = self._elements(pred, target)
        if weights is None:
            return self._reduce(elements) / per_row, residual / (n * per_row)
        xp = array_namespace(pred)
        w = xp.reshape(weights, (n,) + (1,) * (pred.ndim - 1))
        m = xp.sum(weights)
        return self._reduce(elements * w) / per_row, residual * (w / (m * per_row))

    def _elements(self, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def _residual(self, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def _reduce(self, elements: Any) -> Any:
        return array_namespace(elements).sum(elements)

    def _cached(self) -> tuple[Any, Any]:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call first.")
        return self._cache

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _like(target: Any, pred: Any) -> Any:
    """``target`` in the floating dtype of ``pred`` (integer 0/1 targets allowed)."""
    xp = array_namespace(pred)
    return target if target.dtype == pred.dtype else xp.astype(target, pred.dtype)


def _same_shape(pred: Any, target: Any) -> None:
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(
            f"target must have the shape of pred {tuple(pred.shape)}; got {tuple(target.shape)}."
        )


class MSELoss(Loss):
    """L = mean((p − t)²) over all N elements of p and t (same shape); ∂L/∂p = 2(p − t)/N."""

    def forward(self, pred: Any, target: Any) -> Any:
        _same_shape(pred, target)
        self._cache = (pred, target)
        return F.mse(pred, target)

    def backward(self) -> Any:
        return F.mse_backward(*self._cached())

    def _elements(self, pred: Any, target: Any) -> Any:
        r = pred - _like(target, pred)
        return r * r

    def _residual(self, pred: Any, target: Any) -> Any:
        return 2 * (pred - _like(target, pred))


class CrossEntropyLoss(Loss):
    """L = −(1/n) Σᵢ log softmax(zᵢ)_{tᵢ} for logits Z (n, K) and integer classes t (n,).

    Computed with a shifted log-sum-exp (finite at any finite logits);
    ∂L/∂Z = (softmax(Z) − onehot(t))/n. Classes outside [0, K) are not checked (that
    would read the device) and contribute 0.
    """

    def check(self, pred: Any, target: Any) -> None:
        if pred.ndim != 2:
            raise ValueError(f"pred must be logits of shape (n, K); got {tuple(pred.shape)}.")
        if target.ndim != 1 or target.shape[0] != pred.shape[0]:
            raise ValueError(
                f"target must be class indices of shape ({pred.shape[0]},); "
                f"got {tuple(target.shape)}."
            )
        if not array_namespace(target).isdtype(target.dtype, "integral"):
            raise ValueError(f"target must hold integer class indices; got dtype {target.dtype}.")

    def forward(self, pred: Any, target: Any) -> Any:
        self.check(pred, target)
        value, residual = F.softmax_cross_entropy(pred, target)
        self._cache = (residual, pred.shape[0])  # one softmax serves backward too
        return value / pred.shape[0]

    def backward(self) -> Any:
        residual, n = self._cached()
        return residual / n

    def value_and_grad(self, pred: Any, target: Any, weights: Any = None) -> tuple[Any, Any]:
        value, residual = F.softmax_cross_entropy(pred, target, weights)
        if weights is None:
            return value, residual / pred.shape[0]
        return value, residual / array_namespace(weights).sum(weights)


class BCEWithLogitsLoss(Loss):
    """L = mean(softplus(z) − t·z), i.e. the mean binary cross-entropy of σ(z) against t.

    Logits z and targets t ∈ [0, 1] of the same shape, mean over all N elements,
    finite at any finite z; ∂L/∂z = (σ(z) − t)/N.
    """

    def forward(self, pred: Any, target: Any) -> Any:
        _same_shape(pred, target)
        self._cache = (pred, target)
        return F.bce_with_logits(pred, target)

    def backward(self) -> Any:
        return F.bce_with_logits_backward(*self._cached())

    def _elements(self, pred: Any, target: Any) -> Any:
        return F.softplus(pred) - _like(target, pred) * pred

    def _residual(self, pred: Any, target: Any) -> Any:
        return F.sigmoid(pred) - _like(target, pred)


LOSSES = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss, "bce_with_logits": BCEWithLogitsLoss}
"""The losses ``Sequential.fit`` and ``evaluate`` accept by name."""


def make_loss(loss: str | Loss) -> Loss:
    """A fresh loss of that name (see :data:`LOSSES`), or ``loss`` itself."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)} or a Loss; got {loss!r}.")
        return LOSSES[loss]()
    return loss
