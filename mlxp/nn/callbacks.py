"""Callbacks of the training loop: :class:`History`, :class:`EarlyStopping`, the progress bar.

A callback is any object with ``on_train_begin(model)`` and
``on_epoch_end(model, epoch, logs) -> bool`` (True stops training), ``logs`` holding the
epoch's values by name ("loss", "accuracy", "val_loss", ...).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["EarlyStopping", "History", "Progress"]


class History(dict):
    """Per-epoch values recorded by :meth:`Sequential.fit`: ``history["loss"][epoch]`` etc."""


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best epoch.
    ``mode`` is "min" for losses and "max" for scores ("auto": max if "acc" in the name).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = (
            ("max" if "acc" in monitor or "score" in monitor else "min") if mode == "auto" else mode
        )
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, model: Any) -> None:
        self.best, self.best_epoch, self.wait, self._weights = None, -1, 0, None

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool:
        if self.monitor not in logs:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, but the logs only have "
                f"{sorted(logs)}; pass validation_data to fit to get val_* values."
            )
        value = logs[self.monitor]
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self._weights = model.get_weights()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            if self.restore_best_weights and self._weights is not None:
                model.set_weights(self._weights)
            return True
        return False


class Progress:
    """A one-line progress bar per epoch on a terminal; silent otherwise (no dependency)."""

    def __init__(self, enabled: bool, epochs: int, steps: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.epochs, self.steps = epochs, steps

    def update(self, epoch: int, step: int) -> None:
        if self.enabled and (step == self.steps or step % max(1, self.steps // 20) == 0):
            done = int(20 * step / self.steps)
            bar = "=" * done + ">" + " " * (20 - done)
            print(
                f"\repoch {epoch}/{self.epochs} [{bar}] {step}/{self.steps}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.enabled:
            values = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
            print(
                f"\repoch {epoch}/{self.epochs}  {seconds:.1f}s  {values}" + " " * 20,
                file=sys.stderr,
                flush=True,
            )
