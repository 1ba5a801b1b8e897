"""``Sequential``: a stack of layers, forward and backward propagation, and a training loop."""

from __future__ import annotations

import copy
import math
import sys
import time
from typing import Any

from array_api_compat import array_namespace as _namespace
from array_api_compat import device as _device

from mlxp._backend import placement
from mlxp._compat import Generator, default_float, move, synchronize
from mlxp._validation import to_array
from mlxp.exceptions import DivergenceError
from mlxp.nn.layers import Conv2D, Dense
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mlxp.optim import SGD, Adam, Optimizer, ReduceLROnPlateau, Schedule

__all__ = ["EarlyStopping", "History", "Sequential"]

OPTIMIZERS = {"adam": lambda: Adam(1e-3), "sgd": lambda: SGD(1e-2, momentum=0.9)}
LOSSES = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss, "bce_with_logits": BCEWithLogitsLoss}
_ACCURACY_LOSSES = (CrossEntropyLoss, BCEWithLogitsLoss)


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

    def on_train_begin(self, model: Sequential) -> None:
        self.best, self.best_epoch, self.wait, self._weights = None, -1, 0, None

    def on_epoch_end(self, model: Sequential, epoch: int, logs: dict[str, float]) -> bool:
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


class _Progress:
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


class Sequential:
    """Layers applied in order: forward ``x → layers[0] → … → layers[-1]``.

    ``backward(g)`` propagates ∂L/∂output back through the layers in reverse,
    leaving each layer's parameter gradients in ``layer.grads``. Parameters are
    created on first use, on the inputs' (or the chosen backend's) device, from one
    portable generator seeded with ``seed``; the same generator then draws dropout
    masks and shuffles, so a seed fixes the whole training run on every backend.

    Examples
    --------
    >>> import numpy as np
    >>> from mlxp.nn import Dense, ReLU, Sequential
    >>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 1)], seed=0)
    >>> model.predict(np.ones((2, 4))).shape
    (2, 1)
    """

    def __init__(self, layers: list[Any], seed: int | None = None) -> None:
        self.layers = list(layers)
        self.seed = seed
        self._place: tuple[Any, Any, Any] | None = None  # (xp, device, dtype) once built

    # ------------------------------------------------------------------ parameters
    def build(self, xp: Any, device: Any, dtype: Any) -> Sequential:
        """Create every layer's parameters on ``device`` in ``dtype`` (done on first use)."""
        self._rng = Generator(self.seed)
        for layer in self.layers:
            layer.initialize(self._rng, xp=xp, device=device, dtype=dtype)
        self._place = (xp, device, dtype)
        return self

    @property
    def built(self) -> bool:
        return self._place is not None

    @property
    def parameters(self) -> dict[str, Any]:
        """Every trainable array, named ``"<layer index>.<name>"``."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()
        }

    def gradients(self) -> dict[str, Any]:
        """The gradients left by the last ``backward``, named like :attr:`parameters`."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()
        }

    def get_weights(self) -> dict[str, Any]:
        """Parameters and buffers (e.g. running statistics), by name: a snapshot, not a copy."""
        weights = dict(self.parameters)
        for i, layer in enumerate(self.layers):
            weights.update({f"{i}.{k}": v for k, v in layer.buffers.items()})
        return weights

    def set_weights(self, weights: dict[str, Any]) -> None:
        for name, value in weights.items():
            index, key = name.split(".", 1)
            layer = self.layers[int(index)]
            (layer.params if key in layer.params else layer.buffers)[key] = value

    def _ensure_built(self, X: Any, xp: Any, device: Any) -> Any:
        """Build on first use; for training elsewhere, move the weights there. X cast to fit."""
        dtype = X.dtype if xp.isdtype(X.dtype, "real floating") else default_float(xp, device)
        if not self.built:
            self.build(xp, device, dtype)
        elif self._place[0] is not xp or self._place[1] != device:
            self.set_weights({k: move(v, xp, device) for k, v in self.get_weights().items()})
            self._place = (xp, device, next(iter(self.get_weights().values())).dtype)
        dtype = self._place[2]
        return X if X.dtype == dtype else xp.astype(X, dtype)

    def _on(self, X: Any, xp: Any, device: Any) -> tuple[Sequential, Any]:
        """(model, X) for inference on ``device``: this model, or a copy whose weights were
        moved there (inference never moves the model itself); X cast to its dtype."""
        if not self.built:
            return self, self._ensure_built(X, xp, device)
        model = self
        if self._place[0] is not xp or self._place[1] != device:
            model = copy.copy(self)
            model.layers = [copy.copy(layer) for layer in self.layers]
            for layer in model.layers:
                layer.params, layer.buffers, layer.grads = (
                    dict(layer.params),
                    dict(layer.buffers),
                    {},
                )
            model.set_weights({k: move(v, xp, device) for k, v in self.get_weights().items()})
            model._place = (xp, device, next(iter(model.get_weights().values())).dtype)
        dtype = model._place[2]
        return model, X if X.dtype == dtype else xp.astype(X, dtype)

    # ------------------------------------------------------------------ propagation
    def forward(self, x: Any, training: bool = False) -> Any:
        """The output of the last layer for input ``x``."""
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, grad: Any) -> Any:
        """Back-propagate ∂L/∂output; returns ∂L/∂input, fills every ``layer.grads``."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def _backward_for_training(self, grad: Any) -> None:
        """:meth:`backward` without ∂L/∂input, which training never uses."""
        for i in range(len(self.layers) - 1, 0, -1):
            grad = self.layers[i].backward(grad)
        first = self.layers[0]
        if isinstance(first, (Dense, Conv2D)):
            first.backward(grad, input_grad=False)
        else:
            first.backward(grad)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        loss: str | Loss = "mse",
        optimizer: str | Optimizer = "adam",
        epochs: int = 10,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        callbacks: list[Any] | None = None,
        progress: bool = True,
        weight_decay: float = 0.0,
        metrics: tuple[str, ...] = (),
        schedule: Schedule | ReduceLROnPlateau | None = None,
    ) -> History:
        """Mini-batch training; returns the :class:`History` of per-epoch losses (and accuracy).

        Each step: forward on a batch, the loss's gradient back-propagated, and one
        ``optimizer.step`` on every parameter; ``weight_decay`` adds λW/m to the weight
        gradients (an L2 penalty ½λ‖W‖²/n per sample). Batches are gathered on the
        device; the loss is accumulated there and read back once per epoch.
        ``metrics=("accuracy",)`` also records the accuracy (an extra pass over the data).
        ``schedule`` (from :mod:`mlxp.optim`) sets the learning rate of each epoch; a
        ``ReduceLROnPlateau`` is stepped with the epoch's validation loss (else its loss).
        """
        loss_fn = _make_loss(loss)
        opt = OPTIMIZERS[optimizer]() if isinstance(optimizer, str) else optimizer
        place = placement(X=to_array(X, "X"), y=to_array(y, "y"))
        xp, dev = place.xp, place.device
        X, y = place.to_compute(to_array(X, "X")), place.to_compute(to_array(y, "y"))
        X = self._ensure_built(X, xp, dev)
        n = X.shape[0]
        if n == 0:
            raise ValueError("fit needs at least one sample; X is empty.")
        if y.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has {y.shape[0]}.")
        if validation_data is not None:
            X_val = self._ensure_built(place.to_compute(to_array(validation_data[0], "X")), xp, dev)
            y_val = place.to_compute(to_array(validation_data[1], "y"))
        history, callbacks = History(), list(callbacks or [])
        for callback in callbacks:
            callback.on_train_begin(self)
        steps = math.ceil(n / batch_size)
        bar = _Progress(progress, epochs, steps)
        good = self.get_weights()
        first_batch = first_loss = None
        for epoch in range(1, epochs + 1):
            if schedule is not None and not isinstance(schedule, ReduceLROnPlateau):
                opt.lr = schedule(epoch - 1)
            start = time.perf_counter()
            order = self._rng.permutation(n, xp=xp, device=dev) if shuffle else None
            total = xp.zeros((), dtype=X.dtype, device=dev)
            for step in range(steps):
                lo, hi = step * batch_size, min((step + 1) * batch_size, n)
                if order is None:
                    xb, yb = X[lo:hi, ...], y[lo:hi, ...]
                else:
                    rows = order[lo:hi]
                    xb, yb = xp.take(X, rows, axis=0), xp.take(y, rows, axis=0)
                value = loss_fn.forward(self.forward(xb, training=True), yb)
                self._backward_for_training(loss_fn.backward())
                params, grads = self.parameters, self.gradients()
                if weight_decay:
                    decay = weight_decay / (hi - lo)
                    grads = {
                        k: g + decay * params[k] if k.endswith(".W") else g
                        for k, g in grads.items()
                    }
                self.set_weights(opt.step(params, grads))
                total = total + value * (hi - lo)
                if first_batch is None:
                    first_batch = value  # the reference for "blowing up", read after epoch 1
                bar.update(epoch, step + 1)
            epoch_loss = float(total) / n  # the one host read of the epoch
            if first_loss is None:
                first_loss = float(first_batch)
            if not math.isfinite(epoch_loss) or epoch_loss > 1e4 * max(first_loss, 1e-12):
                self.set_weights(good)
                raise DivergenceError(
                    f"Training diverged at epoch {epoch} (loss {epoch_loss:.3g}, first batch "
                    f"{first_loss:.3g}) with learning "
                    f"rate {float(opt.lr):.4g}; the last good weights were kept. Use a smaller "
                    "learning rate."
                )
            good = self.get_weights()
            logs = {"loss": epoch_loss}
            if "accuracy" in metrics:
                logs["accuracy"] = self._accuracy(X, y, loss_fn, batch_size)
            if validation_data is not None:
                val = self._evaluate(X_val, y_val, loss_fn, batch_size, metrics)
                logs.update({f"val_{k}": v for k, v in val.items()})
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            bar.end_epoch(epoch, logs, time.perf_counter() - start)
            if isinstance(schedule, ReduceLROnPlateau):
                opt.lr = schedule.step(logs.get("val_loss", logs["loss"]))
            stop = [callback.on_epoch_end(self, epoch, logs) for callback in callbacks]
            if any(stop):
                break
        synchronize(next(iter(self.parameters.values()), None))
        return history

    # ------------------------------------------------------------------ inference
    def predict(self, X: Any, batch_size: int | None = None) -> Any:
        """Outputs of the last layer (eval mode), in the caller's namespace and device."""
        X = to_array(X, "X")
        place = placement(X=X)
        xp = place.xp
        model, Xc = self._on(place.to_compute(X), xp, place.device)
        n = Xc.shape[0]
        if batch_size is None or batch_size >= n:
            return place.to_caller(model.forward(Xc))
        parts = [
            model.forward(Xc[i : min(i + batch_size, n), ...]) for i in range(0, n, batch_size)
        ]
        return place.to_caller(xp.concat(parts, axis=0))

    def evaluate(
        self, X: Any, y: Any, *, loss: str | Loss = "mse", batch_size: int = 256
    ) -> dict[str, float]:
        """The mean ``loss`` on (X, y), and the accuracy for classification losses."""
        loss_fn = _make_loss(loss)
        place = placement(X=to_array(X, "X"), y=to_array(y, "y"))
        model, Xc = self._on(place.to_compute(to_array(X, "X")), place.xp, place.device)
        metrics = ("accuracy",) if isinstance(loss_fn, _ACCURACY_LOSSES) else ()
        yc = place.to_compute(to_array(y, "y"))
        return model._evaluate(Xc, yc, loss_fn, batch_size, metrics)

    def _evaluate(
        self, X: Any, y: Any, loss_fn: Loss, batch_size: int, metrics: tuple[str, ...] = ()
    ) -> dict[str, float]:
        xp = _namespace(X)
        total = xp.zeros((), dtype=X.dtype, device=_device(X))
        for i in range(0, X.shape[0], batch_size):
            end = min(i + batch_size, X.shape[0])
            xb, yb = X[i:end, ...], y[i:end, ...]
            total = total + loss_fn.forward(self.forward(xb), yb) * xb.shape[0]
        logs = {"loss": float(total) / X.shape[0]}
        if "accuracy" in metrics:
            logs["accuracy"] = self._accuracy(X, y, loss_fn, batch_size)
        return logs

    def _accuracy(self, X: Any, y: Any, loss_fn: Loss, batch_size: int) -> float:
        xp = _namespace(X)
        hits = xp.zeros((), dtype=X.dtype, device=_device(X))
        for i in range(0, X.shape[0], batch_size):
            end = min(i + batch_size, X.shape[0])
            out, yb = self.forward(X[i:end, ...]), y[i:end, ...]
            if out.shape[1] == 1:
                predicted = xp.astype(out[:, 0] > 0, X.dtype)
                truth = xp.astype(xp.reshape(yb, (-1,)), X.dtype)
            else:
                predicted = xp.astype(xp.argmax(out, axis=1), X.dtype)
                truth = xp.astype(yb, X.dtype)
            hits = hits + xp.sum(xp.astype(predicted == truth, X.dtype))
        return float(hits) / X.shape[0]

    # ------------------------------------------------------------------ model files
    def _get_model_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config = {
            "class": "Sequential",
            "seed": self.seed,
            "layers": [
                {"class": type(layer).__name__, "config": layer.get_config()}
                for layer in self.layers
            ],
        }
        return config, self.get_weights() if self.built else {}

    @classmethod
    def _from_model_state(cls, config: dict[str, Any], arrays: dict[str, Any]) -> Sequential:
        from mlxp.nn import layers as layer_module

        layers = []
        for spec in config["layers"]:
            layer_class = getattr(layer_module, spec["class"], None)
            if not (isinstance(layer_class, type) and issubclass(layer_class, layer_module.Layer)):
                raise ValueError(f"Unknown layer {spec['class']!r} in the model file.")
            layers.append(layer_class(**spec["config"]))
        model = cls(layers, seed=config.get("seed"))
        if arrays:
            first = next(iter(arrays.values()))
            xp = _namespace(first)
            model.build(xp, _device(first), first.dtype)
            model.set_weights(arrays)
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._place is not None:  # modules do not pickle; the namespace is re-derived
            state["_place"] = (None, *self._place[1:])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._place is not None and self._place[0] is None:
            first = next(iter(self.get_weights().values()))
            self._place = (_namespace(first), *self._place[1:])

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner},\n], seed={self.seed!r})"


def _make_loss(loss: str | Loss) -> Loss:
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)} or a Loss; got {loss!r}.")
        return LOSSES[loss]()
    return loss
