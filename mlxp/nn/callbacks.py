"""Callbacks of the training loop: :class:`History`, :class:`EarlyStopping`, the progress bar
(:mod:`tqdm`'s, shown with ``progress=True``, or with ``"auto"`` on a terminal or in a notebook).

A callback is any object with ``on_train_begin(model)`` and
``on_epoch_end(model, epoch, logs) -> bool`` (True stops training), ``logs`` holding the
epoch's values by name ("loss", "accuracy", "val_loss", ...).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["EarlyStopping", "History", "Progress", "show_progress"]


class History(dict[str, list[float]]):
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
        self.best: float | None = None
        self.best_epoch, self.wait, self._weights = -1, 0, None

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


def show_progress(progress: bool | int | str) -> bool:
    """Whether to show a bar: ``True``/``False`` (or a sklearn-style ``verbose`` int) as
    said; ``"auto"`` when stderr is a terminal or the code runs in a Jupyter kernel."""
    if progress != "auto":
        return bool(progress)
    return sys.stderr.isatty() or _in_notebook()


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (the test :mod:`tqdm.autonotebook` makes)."""
    ipython = sys.modules.get("IPython")
    shell = None if ipython is None else ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Progress:
    """The training bar: :mod:`tqdm.auto`'s (a widget in a notebook, text on a terminal)
    over every batch of every epoch, the last epoch's logs and time in its postfix.

    ``progress`` is ``True``, ``False`` or ``"auto"`` (see :func:`show_progress`); tqdm
    is imported only when a bar is shown.
    """

    def __init__(self, progress: bool | int | str, epochs: int, steps: int) -> None:
        self.epochs, self.steps, self.bar = epochs, steps, None
        if show_progress(progress):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs * steps, unit="batch", desc=f"epoch 1/{epochs}")

    def update(self, epoch: int, step: int, steps: int = 1) -> None:
        """``steps`` more batches done, the last the ``step``-th of ``epoch``."""
        if self.bar is not None:
            self.bar.update(steps)

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{self.epochs}", refresh=False)
            self.bar.set_postfix({**logs, "time": f"{seconds:.2f}s"})

    def close(self) -> None:
        """End the bar where training stopped (early stopping may end it before the last)."""
        if self.bar is not None:
            self.bar.close()
