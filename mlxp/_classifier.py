"""Predictions of a classifier from its margins (logits), shared by every mlxp classifier."""

from __future__ import annotations

from typing import Any

from mlxp._compat import argmax, to_numpy
from mlxp._dask import is_dask_array, predict_rows
from mlxp._special import log_softmax, sigmoid
from mlxp._validation import check_is_fitted, validate_data

__all__ = ["MarginClassifierMixin"]


class MarginClassifierMixin:
    """``predict_proba``, ``predict_log_proba`` and ``predict`` from ``_margins(X)``.

    ``_margins(X)`` returns (placement, Z) with Z of shape (n, 1) — one logit z, for two
    classes — or (n, K). Probabilities are [1 − σ(z), σ(z)] or softmax(Z); labels come
    from ``classes_``.
    """

    def _on_chunks(self, method: Any, X: Any, columns: str) -> Any:
        """``method`` blockwise on Dask X (lazy, O(chunks) tasks), or None for other X.

        ``columns``: "labels" (n,), "classes" (n, K), "margins" (n,) or (n, K)."""
        if not is_dask_array(X):
            return None
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)[1]
        margins = None if self.coef_.shape[0] == 1 else self.coef_.shape[0]  # as decision_function
        width = {"labels": None, "classes": len(self.classes_), "margins": margins}
        dtype = self.classes_.dtype if columns == "labels" else self.coef_.dtype
        return predict_rows(method, X, width=width[columns], dtype=dtype)

    def predict_proba(self, X: Any) -> Any:
        """P(class | x), shape (n_samples, n_classes), columns in ``classes_`` order."""
        lazy = self._on_chunks(self.predict_proba, X, "classes")
        if lazy is not None:
            return lazy
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            positive = sigmoid(Z, xp=xp)
            return place.to_caller(xp.concat([1 - positive, positive], axis=1))
        return place.to_caller(xp.exp(log_softmax(Z, xp=xp)))

    def predict_log_proba(self, X: Any) -> Any:
        """log P(class | x), computed without overflow."""
        lazy = self._on_chunks(self.predict_log_proba, X, "classes")
        if lazy is not None:
            return lazy
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            Z = xp.concat([-Z, Z], axis=1) / 2  # softmax([−z/2, z/2]) = [1 − σ(z), σ(z)]
        return place.to_caller(log_softmax(Z, xp=xp))

    def predict(self, X: Any) -> Any:
        """The most probable label of each sample, as given to ``fit``.

        Numeric and boolean labels come back in the input's namespace and device;
        other labels (strings) as a NumPy array. On Dask input: a lazy Dask array of labels.
        """
        lazy = self._on_chunks(self.predict, X, "labels")
        if lazy is not None:
            return lazy
        place, Z = self._margins(X)
        xp = place.xp
        if Z.shape[1] == 1:
            Z = xp.concat([xp.zeros_like(Z), Z], axis=1)  # class 1 iff z > 0
        best = argmax(Z, axis=1)
        kind, size = self.classes_.dtype.kind, self.classes_.dtype.itemsize
        if kind in "bif" or (kind == "u" and size == 1):
            return place.out_xp.take(place.to_caller(self.classes_), place.to_caller(best))
        # strings, and unsigned labels wider than a byte, which PyTorch cannot gather: on
        # the host, the labels then given back where the input came from
        labels = self.classes_[to_numpy(best)]
        return place.to_caller(labels) if kind == "u" else labels
