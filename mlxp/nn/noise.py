"""The uniforms a training step's Dropout layers take (:class:`NoiseStream`), drawn from the
model's portable generator in blocks, consumed batch by batch or stacked for a block of
steps: the same values, in the same order, on every backend and however the epoch is run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as _device

__all__ = ["NOISE_BLOCK_VALUES", "NoiseStream"]

NOISE_BLOCK_VALUES = 2**22
"""The noise of this many values (over a block of batches) is drawn in one host draw."""


class NoiseStream:
    """The uniforms the Dropout layers of ``model`` take, batch after batch, for an epoch of
    ``n_samples`` rows: :meth:`take` gives a batch of m rows one array ``(m, *shape)`` per layer
    (:meth:`Sequential.noise_shapes`). Values are drawn from the model's generator in
    blocks of about :data:`NOISE_BLOCK_VALUES` (never more than the epoch still needs), one
    host draw and one copy to the device each, and consumed in batch order; a batch that
    does not fit in what is left of a block starts a new one."""

    flat: Any  # the block being consumed (None before the first)

    def __init__(self, model: Any, n_samples: int) -> None:
        self.model, self.remaining = model, n_samples
        self.shapes: list[tuple[int, ...]] | None = None
        self.flat, self.start = None, 0

    def take(self, xb: Any) -> tuple[Any, ...]:
        """The noise of the batch ``xb`` (its rows, shape, namespace, device and dtype)."""
        m = xb.shape[0]
        if self.shapes is None:
            self.shapes = self.model.noise_shapes(tuple(xb.shape[1:]))
        if not self.shapes:
            return ()
        per_row = sum(math.prod(shape) for shape in self.shapes)
        if self.flat is None or self.start + m * per_row > self.flat.shape[0]:
            values = max(m, min(self.remaining, NOISE_BLOCK_VALUES // per_row)) * per_row
            self.flat = self.model.rng.uniform(
                (values,), xp=array_namespace(xb), device=_device(xb), dtype=xb.dtype
            )
            self.start = 0
        draws = []
        for shape in self.shapes:
            size = m * math.prod(shape)
            draws.append(
                array_namespace(xb).reshape(self.flat[self.start : self.start + size], (m, *shape))
            )
            self.start += size
        self.remaining -= m
        return tuple(draws)

    def block(self, sizes: list[int], rows: int, features: tuple[int, ...], like: Any) -> Any:
        """The noise of consecutive batches of ``sizes`` rows (one sample of shape
        ``features``), the same values :meth:`take` gives batch after batch, stacked per
        layer as (k, ``rows``, *shape), each batch padded to ``rows`` rows of 1: consumed
        on the host, then one copy per layer to the device and dtype of ``like``."""
        host = np.zeros((), dtype=np.float64)
        draws = [self.take(np.broadcast_to(host, (m, *features))) for m in sizes]
        xp, stacked = array_namespace(like), []
        for i, shape in enumerate(self.shapes or []):
            layer = np.ones((len(sizes), rows, *shape))
            for j, batch in enumerate(draws):
                layer[j, : sizes[j]] = batch[i]
            stacked.append(xp.asarray(layer, dtype=like.dtype, device=_device(like)))
        return tuple(stacked)
