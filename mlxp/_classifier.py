"""Predictions of a classifier from its margins (logits), shared by every mlxp classifier."""

from __future__ import annotations

from typing import Any

from mlxp._compat import argmax, to_numpy
from mlxp._special import log_softmax, sigmoid

__all__ = ["MarginClassifierMixin"]


class MarginClassifierMixin:
    """``predict_proba``, ``predict_log_proba`` and ``predict`` from ``_margins(X)``.

    ``_margins(X)`` returns (placement, Z) with Z of shape (n, 1) — one logit z, for two
    classes — or (n, K). Probabilities are [1 − σ(z), σ(z)] or softmax(Z); labels come
    from ``classes_``.
    """

    def predict_proba(self, X: Any) -> Any:
        """P(class | x), shape (n_samples, n_classes), columns in ``classes_`` order."""
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            positive = sigmoid(Z, xp=xp)
            return place.to_caller(xp.concat([1 - positive, positive], axis=1))
        return place.to_caller(xp.exp(log_softmax(Z, xp=xp)))

    def predict_log_proba(self, X: Any) -> Any:
        """log P(class | x), computed without overflow."""
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            Z = xp.concat([-Z, Z], axis=1) / 2  # softmax([−z/2, z/2]) = [1 − σ(z), σ(z)]
        return place.to_caller(log_softmax(Z, xp=xp))

    def predict(self, X: Any) -> Any:
        """The most probable label of each sample, as given to ``fit``.

        Numeric and boolean labels come back in the input's namespace and device;
        other labels (strings) as a NumPy array.
        """
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            Z = xp.concat([xp.zeros_like(Z), Z], axis=1)  # class 1 iff z > 0
        best = argmax(Z, axis=1)
        if self.classes_.dtype.kind in "biuf":
            return place.out_xp.take(place.to_caller(self.classes_), place.to_caller(best))
        return self.classes_[to_numpy(best)]
