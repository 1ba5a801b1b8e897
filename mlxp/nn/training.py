"""The training loop of :meth:`Sequential.fit`, and the evaluation passes it shares with
:meth:`Sequential.evaluate`.

Owns the epochs, the optimisation step (weight decay on the layers' declared weights),
the divergence check, the per-epoch metrics, learning-rate schedules, the callbacks and
the progress bar. The batches (shuffled, or in stored order) come from a *source* of
:mod:`mlxp.nn.streaming`: arrays in memory, or Dask row chunks streamed one ahead. The
model is used through its public methods only: ``placed``, ``rng``,
``forward``/``backward``, ``infer``, ``parameters``/``gradients``,
``get_weights``/``set_weights``, ``decayed`` and ``clear_caches``. Values stay on the
device during an epoch; the loss is read back once per epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mlxp._compat import synchronize
from mlxp.exceptions import DivergenceError
from mlxp.nn import streaming
from mlxp.nn.callbacks import History, Progress
from mlxp.nn.losses import Loss, make_loss
from mlxp.optim import SGD, Adam, Optimizer, ReduceLROnPlateau, Schedule

__all__ = ["OPTIMIZERS", "accuracy", "evaluate", "fit"]

OPTIMIZERS = {"adam": lambda: Adam(1e-3), "sgd": lambda: SGD(1e-2, momentum=0.9)}
"""The optimisers ``fit`` accepts by name, with their default settings."""

DIVERGENCE_FACTOR = 1e4
"""An epoch loss this many times the first batch's loss (or non-finite) is divergence."""


def fit(
    model: Any,
    X: Any,
    y: Any,
    *,
    loss: str | Loss,
    optimizer: str | Optimizer,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    validation_data: tuple[Any, Any] | None,
    callbacks: list[Any] | None,
    progress: bool | str,
    weight_decay: float,
    metrics: tuple[str, ...],
    schedule: Schedule | ReduceLROnPlateau | None,
) -> History:
    """Mini-batch training of ``model``; see :meth:`mlxp.nn.Sequential.fit`."""
    loss_fn = make_loss(loss)
    opt = OPTIMIZERS[optimizer]() if isinstance(optimizer, str) else optimizer
    data, validation = _training_data(model, X, y, validation_data)
    step = _Step(model, loss_fn, opt, weight_decay)
    history, callbacks = History(), list(callbacks or [])
    for callback in callbacks:
        callback.on_train_begin(model)
    bar = Progress(progress, epochs, data.n_batches(batch_size))
    guard = _DivergenceGuard(model)
    for epoch in range(1, epochs + 1):
        if schedule is not None and not isinstance(schedule, ReduceLROnPlateau):
            opt.lr = schedule(epoch - 1)
        start = time.perf_counter()
        batches = data.batches(model.rng if shuffle else None, batch_size)
        total, first = _epoch(model, batches, step, bar, epoch)
        epoch_loss = float(total) / data.n_samples  # the one host read of the epoch
        guard.check(model, epoch, epoch_loss, first, opt)
        logs = {"loss": epoch_loss}
        if "accuracy" in metrics:
            logs["accuracy"] = accuracy(model, data, batch_size)
        if validation is not None:
            val = evaluate(model, validation, loss_fn, batch_size, metrics)
            logs.update({f"val_{k}": v for k, v in val.items()})
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        bar.end_epoch(epoch, logs, time.perf_counter() - start)
        if isinstance(schedule, ReduceLROnPlateau):
            opt.lr = schedule.step(logs.get("val_loss", logs["loss"]))
        if any([callback.on_epoch_end(model, epoch, logs) for callback in callbacks]):
            break
    bar.close()
    synchronize(next(iter(model.parameters.values()), None))
    return history


def _training_data(model: Any, X: Any, y: Any, validation_data: Any) -> tuple[Any, Any]:
    """The sources (:mod:`mlxp.nn.streaming`) of the training data and of the validation
    data (or None), the model built or moved where it trains; arrays in memory or Dask
    row chunks; ValueError for empty or mismatched data."""
    data = streaming.source(model, X, y)
    if validation_data is None:
        return data, None
    return data, streaming.source_on_model(model, *validation_data)


class _Step:
    """One optimisation step on a batch: forward, backward, weight decay, update.

    Weight decay adds λW/m to the gradient of every weight the layers declare
    (``Layer.decayed``) for a batch of m samples: an L2 penalty ½λ‖W‖²/n per sample.
    """

    def __init__(self, model: Any, loss_fn: Loss, opt: Optimizer, weight_decay: float) -> None:
        self.model, self.loss_fn, self.opt = model, loss_fn, opt
        self.weight_decay = weight_decay
        self.decayed = set(model.decayed)

    def __call__(self, xb: Any, yb: Any) -> Any:
        """The batch's mean loss (0-d, on the device), after updating the parameters."""
        model = self.model
        value = self.loss_fn.forward(model.forward(xb, training=True), yb)
        model.backward(self.loss_fn.backward(), input_grad=False)
        params, grads = model.parameters, model.gradients()
        if self.weight_decay:
            decay = self.weight_decay / xb.shape[0]
            grads = {k: g + decay * params[k] if k in self.decayed else g for k, g in grads.items()}
        model.set_weights(self.opt.step(params, grads))
        model.clear_caches()
        return value


def _epoch(model: Any, batches: Any, step: _Step, bar: Progress, epoch: int) -> tuple[Any, Any]:
    """(Σ over the batches of mean loss × batch size, the first batch's loss), both 0-d on
    the device; ``batches`` yields the epoch's (xb, yb) (a source's ``batches``)."""
    xp = model.xp
    total, first = xp.zeros((), dtype=model.dtype, device=model.device), None
    for i, (xb, yb) in enumerate(batches):
        value = step(xb, yb)
        total = total + value * xb.shape[0]
        first = value if first is None else first
        bar.update(epoch, i + 1)
    return total, first


class _DivergenceGuard:
    """Raise :class:`DivergenceError`, the last good weights restored, when an epoch's
    loss is non-finite or :data:`DIVERGENCE_FACTOR` times the very first batch's loss."""

    def __init__(self, model: Any) -> None:
        self.good, self.first_loss = model.get_weights(), None

    def check(self, model: Any, epoch: int, epoch_loss: float, first: Any, opt: Any) -> None:
        if self.first_loss is None:
            self.first_loss = float(first)  # the reference for "blowing up", read once
        reference = DIVERGENCE_FACTOR * max(self.first_loss, 1e-12)
        if not math.isfinite(epoch_loss) or epoch_loss > reference:
            model.set_weights(self.good)
            raise DivergenceError(
                f"Training diverged at epoch {epoch} (loss {epoch_loss:.3g}, first batch "
                f"{self.first_loss:.3g}) with learning rate {float(opt.lr):.4g}; the last good "
                "weights were kept. Use a smaller learning rate."
            )
        self.good = model.get_weights()


def evaluate(
    model: Any, data: Any, loss_fn: Loss, batch_size: int, metrics: tuple[str, ...] = ()
) -> dict[str, float]:
    """{"loss": the mean loss on a source's (X, y)} (and "accuracy" if in ``metrics``), in
    evaluation mode, by batches in stored order (see :mod:`mlxp.nn.streaming`)."""
    xp = model.xp
    total = xp.zeros((), dtype=model.dtype, device=model.device)
    for xb, yb in data.batches(None, batch_size):
        total = total + loss_fn.forward(model.infer(xb), yb) * xb.shape[0]
    logs = {"loss": float(total) / data.n_samples}
    if "accuracy" in metrics:
        logs["accuracy"] = accuracy(model, data, batch_size)
    return logs


def accuracy(model: Any, data: Any, batch_size: int) -> float:
    """The fraction of a source's rows whose class is predicted: the argmax of K > 1
    outputs, or output > 0 for one logit (y then holds 0/1)."""
    xp, dtype = model.xp, model.dtype
    hits = xp.zeros((), dtype=dtype, device=model.device)
    for xb, yb in data.batches(None, batch_size):
        out = model.infer(xb)
        if out.shape[1] == 1:
            predicted = xp.astype(out[:, 0] > 0, dtype)
            truth = xp.astype(xp.reshape(yb, (-1,)), dtype)
        else:
            predicted = xp.astype(xp.argmax(out, axis=1), dtype)
            truth = xp.astype(yb, dtype)
        hits = hits + xp.sum(xp.astype(predicted == truth, dtype))
    return float(hits) / data.n_samples
