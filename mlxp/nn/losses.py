"""Losses: ``forward(pred, target)`` gives the 0-d mean loss, ``backward()`` its gradient ∂L/∂pred.

Owns the loss objects and the names that pick them (:data:`LOSSES`). The math is in
:mod:`mlxp.nn.functional`; a loss checks shapes and keeps what ``backward`` needs.
Targets may be integer arrays; they are cast to the dtype of ``pred`` where a floating
target is needed.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from mlxp.nn import functional as F

__all__ = ["LOSSES", "BCEWithLogitsLoss", "CrossEntropyLoss", "Loss", "MSELoss", "make_loss"]


class Loss:
    """Base class: ``forward`` caches (pred, target); ``backward`` returns ∂L/∂pred."""

    def __init__(self) -> None:
        self._cache: tuple[Any, Any] | None = None

    def forward(self, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def backward(self) -> Any:
        raise NotImplementedError

    def _cached(self) -> tuple[Any, Any]:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward call first.")
        return self._cache

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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


class CrossEntropyLoss(Loss):
    """L = −(1/n) Σᵢ log softmax(zᵢ)_{tᵢ} for logits Z (n, K) and integer classes t (n,).

    Computed with a shifted log-sum-exp (finite at any finite logits);
    ∂L/∂Z = (softmax(Z) − onehot(t))/n. Classes outside [0, K) are not checked (that
    would read the device) and contribute 0.
    """

    def forward(self, pred: Any, target: Any) -> Any:
        if pred.ndim != 2:
            raise ValueError(f"pred must be logits of shape (n, K); got {tuple(pred.shape)}.")
        if target.ndim != 1 or target.shape[0] != pred.shape[0]:
            raise ValueError(
                f"target must be class indices of shape ({pred.shape[0]},); "
                f"got {tuple(target.shape)}."
            )
        if not array_namespace(target).isdtype(target.dtype, "integral"):
            raise ValueError(f"target must hold integer class indices; got dtype {target.dtype}.")
        self._cache = (pred, target)
        return F.cross_entropy(pred, target)

    def backward(self) -> Any:
        return F.cross_entropy_backward(*self._cached())


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


LOSSES = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss, "bce_with_logits": BCEWithLogitsLoss}
"""The losses ``Sequential.fit`` and ``evaluate`` accept by name."""


def make_loss(loss: str | Loss) -> Loss:
    """A fresh loss of that name (see :data:`LOSSES`), or ``loss`` itself."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)} or a Loss; got {loss!r}.")
        return LOSSES[loss]()
    return loss
