"""The training loop of :meth:`Sequential.fit`.

Owns the epochs, the optimisation step (weight decay on the layers' declared weights),
the divergence check, the per-epoch metrics, learning-rate schedules, the callbacks and
the progress bar. The batches (shuffled, or in stored order) come from a *source* of
:mod:`mlxp.nn.streaming`: arrays in memory, or Dask row chunks streamed one ahead. The
model is used through its public methods only: ``placed``, ``rng``,
``forward``/``backward``, ``infer``, ``parameters``/``gradients``,
``get_weights``/``set_weights``, ``decayed`` and ``clear_caches``. Values stay on the
device during an epoch; the loss is read back once per epoch. The metrics and validation
passes are :mod:`mlxp.nn.evaluation`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._compat import synchronize, to_numpy
from mlxp._jit import donatable, may_compile, placed_numbers, run_or_fall_back, unshared
from mlxp._memory import tune_malloc
from mlxp.exceptions import DivergenceError
from mlxp.nn import streaming
from mlxp.nn.callbacks import History, Progress
from mlxp.nn.evaluation import accuracy, evaluate
from mlxp.nn.losses import Loss, make_loss
from mlxp.nn.noise import NOISE_BLOCK_VALUES, NoiseStream
from mlxp.nn.step import (
    COMPILE_OPTIONS,
    FlatLayout,
    compile_block,
    compile_gather,
    compile_layout,
    compile_step,
    make_step,
    run_block,
    step_key,
)
from mlxp.optim import SGD, Adam, Optimizer, ReduceLROnPlateau, Schedule

__all__ = ["BLOCK_STEPS", "OPTIMIZERS", "fit"]

OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {
    "adam": lambda: Adam(1e-3),
    "sgd": lambda: SGD(1e-2, momentum=0.9),
}
"""The optimisers ``fit`` accepts by name, with their default settings."""

BLOCK_STEPS = 8
"""Steps per compiled block on JAX: a fixed count, so that one block program serves data of
any size (the remainder of an epoch goes through the compiled step)."""

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
    compile: Any = "auto",
) -> History:
    """Mini-batch training of ``model``; see :meth:`mlxp.nn.Sequential.fit`."""
    if not (
        compile is True or compile is False or (isinstance(compile, str) and compile == "auto")
    ):
        # by identity: 1, 0 and NumPy's booleans equal True or False, and would pass `in`
        raise ValueError(f"compile must be one of {COMPILE_OPTIONS}; got {compile!r}.")
    loss_fn = make_loss(loss)
    opt = OPTIMIZERS[optimizer]() if isinstance(optimizer, str) else optimizer
    data, validation = _training_data(model, X, y, validation_data)
    tune_malloc()  # the steps' temporaries reuse the heap, not fresh pages (mlxp._memory)
    trainer = _Trainer(model, loss_fn, opt, weight_decay, compile, batch_size, data)
    history, callbacks = History(), list(callbacks or [])
    for callback in callbacks:
        callback.on_train_begin(model)
    bar = Progress(progress, epochs, data.n_batches(batch_size))
    guard = _DivergenceGuard(model)
    for epoch in range(1, epochs + 1):
        if schedule is not None and not isinstance(schedule, ReduceLROnPlateau):
            opt.lr = schedule(epoch - 1)
        start = time.perf_counter()
        total, first = trainer.epoch(data, model.rng if shuffle else None, bar, epoch)
        epoch_loss = total / data.n_samples
        guard.check(model, epoch, epoch_loss, first, opt)
        logs = {"loss": epoch_loss}
        if "accuracy" in metrics:
            logs["accuracy"] = accuracy(model, data, batch_size, compile)
        if validation is not None:
            val = evaluate(model, validation, loss_fn, batch_size, metrics, compile)
            logs.update({f"val_{k}": v for k, v in val.items()})
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        bar.end_epoch(epoch, logs, time.perf_counter() - start)
        if isinstance(schedule, ReduceLROnPlateau):
            opt.lr = schedule.step(logs.get("val_loss", logs["loss"]))
        if any([callback.on_epoch_end(model, epoch, logs) for callback in callbacks]):
            break
    trainer.save_optimizer_state()
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


class _Trainer:
    """The state a fit carries between steps (the flat parameters, the optimiser's state,
    the layers' buffers) and the step that advances it, compiled as ``compile`` says.

    The model holds views of the parameters at the end of each epoch (:meth:`epoch`), so
    validation, callbacks and the divergence guard see them; an epoch starts from the
    model's weights, so a callback that sets them is followed."""

    step: Callable[..., tuple[Any, ...]]  # (params, state, buffers, loss) of a batch
    block: Callable[..., tuple[Any, ...]] | None  # (params, state, buffers, losses) of k

    def __init__(
        self,
        model: Any,
        loss_fn: Loss,
        opt: Optimizer,
        weight_decay: float,
        mode: Any,
        rows: int,
        data: Any,
    ) -> None:
        self.model, self.opt, self.batch_size = model, opt, rows
        params = model.parameters
        self.layout = FlatLayout({k: tuple(v.shape) for k, v in params.items()})
        # the step may write into the buffers it is given: each epoch flattens fresh
        # parameters, each fit a fresh optimiser state (so no snapshot is ever written)
        self.eager = make_step(model, loss_fn, opt, weight_decay, self.layout, in_place=True)
        self.key = key = step_key(model, loss_fn, opt, weight_decay, self.layout)
        tried = mode if may_compile(key, mode) else False  # not again after a failure
        self.step, self.compiler = compile_step(self.eager, model.xp, tried, key)
        self.mode, self.pending = mode, self.compiler is not None
        self.flatten, self.views = self.layout.flatten, self.layout.views
        if self.compiler is not None:
            self.flatten, self.views = compile_layout(self.layout, model.xp)
        self.opt_state = self._optimizer_state(self.flatten(params))
        # padding the last batch keeps one compiled shape: the padding's weight 0 keeps it
        # out of the loss, and out of the statistics of layers that take ``rows``; a model
        # with a layer that mixes rows (Softmax over the batch axis), or a layer of its own
        # with buffers (that might hold statistics of the rows) is not padded
        layers = model.layers
        self.pad = (
            self.compiler is not None
            and not model.mixes_rows(tuple(data.X.shape[1:]))
            and all(layer.batch_statistics or not layer.buffers for layer in layers)
        )
        # short batches of up to this many rows stay unpadded: with such layers a batch of
        # one row, which BatchNorm1d refuses (padded, its running variance would take the
        # unbiased correction m/(m − 1) at m = 1)
        self.unpadded_max = 1 if any(layer.batch_statistics for layer in layers) else 0
        self.ones: Any = None  # row weights of a full padded batch
        self.block = compile_block(self.eager, model.xp, key) if self.pad else None
        self.gather = compile_gather(streaming.gather_block, model.xp)

    def _optimizer_state(self, flat: Any) -> dict[str, Any]:
        """The optimiser's state of the flat buffer: its per-parameter state flattened
        (a previous fit's, or a loaded one), else fresh."""
        state = self.opt.state
        if not state or set(state) != set(self.layout.names):
            return self.opt.init_state(flat)
        first = state[self.layout.names[0]]
        flat_state = {"step": first["step"]}
        for key in first:
            if key != "step":
                flat_state[key] = self.flatten({k: state[k][key] for k in state})
        return flat_state

    def save_optimizer_state(self) -> None:
        """The optimiser's state put back per parameter (views of the flat buffers)."""
        flat = {k: v for k, v in self.opt_state.items() if k not in ("step", "lr")}
        step = self.opt_state["step"]
        step = step if isinstance(step, int) else int(step)  # read once, after training
        views = {key: self.views(buffer) for key, buffer in flat.items()}
        self.opt.state = {
            name: {"step": step, **{key: views[key][name] for key in flat}}
            for name in self.layout.names
        }

    def epoch(self, data: Any, rng: Any, bar: Progress, epoch: int) -> tuple[float, float]:
        """(Σ over the batches of the summed loss, the first batch's mean loss) after one
        step per batch of ``data`` (a source of :mod:`streaming`, shuffled by ``rng``
        unless None), read from the device once, as the vector of the batches' losses;
        the model then holds the new weights. Data in memory with a compiled block (JAX)
        trains by blocks of steps, one call each, unless its last batch is too short to pad
        (``unpadded_max``): then batch by batch."""
        model = self.model
        weights = model.get_weights()
        params = self.flatten({k: weights[k] for k in self.layout.names})
        buffers = {k: v for k, v in weights.items() if k not in self.layout.slices}
        state = {**self.opt_state, "lr": self.opt.lr}
        if self.compiler == "jax.jit":  # the step donates (deletes) what it is given: a
            # rate given as an array and the layers' buffers, which others hold, as copies
            rate = donatable({"lr": state["lr"]}) if hasattr(state["lr"], "shape") else {}
            state, buffers = placed_numbers({**state, **rate}, params), donatable(buffers)
            _, state = unshared({"params": params}, state)  # each buffer donated once
        elif self.compiler is not None:  # captured or torch-compiled: 0-d arrays
            state = self._as_arrays(state, params)
        noise = NoiseStream(model, data.n_samples)
        carry = (params, state, buffers)
        blocks = self.block is not None and isinstance(data, streaming.InMemory)
        if blocks and not 0 < data.n_samples % self.batch_size <= self.unpadded_max:
            carry, values, first_rows = self._blocks(carry, data, rng, noise, (bar, epoch))
        else:
            batches = data.batches(rng, self.batch_size)
            carry, values, first_rows = self._batches(carry, batches, noise, (bar, epoch))
        params, state, buffers = carry
        self.opt_state = {k: v for k, v in state.items() if k != "lr"}
        model.set_weights({**self.views(params), **buffers})
        losses = to_numpy(values)  # the one host read of the epoch
        return float(losses.sum(dtype="float64")), float(losses[0]) / first_rows

    def _batches(self, carry: Any, batches: Any, noise: NoiseStream, progress: Any) -> Any:
        """(carry, the batches' summed losses (one 1-d array), the first batch's rows) after
        one step per batch of ``batches`` (a Dask chunk may end a batch early)."""
        values: list[Any] = []  # stacked once per epoch: no op per step
        first_rows = 0
        for i, (xb, yb) in enumerate(batches):
            batch, draws = self._batch(xb, yb, noise.take(xb))
            *carry, value = self._run("step", *carry, batch, draws)
            values.append(value)
            first_rows = first_rows or xb.shape[0]
            progress[0].update(progress[1], i + 1)
        return tuple(carry), self.model.xp.stack(values), first_rows

    def _blocks(self, carry: Any, data: Any, rng: Any, noise: NoiseStream, progress: Any) -> Any:
        """:meth:`_batches` for data in memory, by compiled blocks of a fixed number k of
        steps (:data:`BLOCK_STEPS`, fewer where a block's inputs or noise would pass
        :data:`streaming.GATHER_VALUES` or :data:`NOISE_BLOCK_VALUES` values): each block's
        batches gathered by one op and trained by one call; the last n_batches mod k batches
        by the compiled step, one call each. k depends on the model and the batch size
        only, so data of any size reuses the two compiled programs (the gather, a small
        program that takes the whole X, compiles once per data shape)."""
        n, b = data.n_samples, self.batch_size
        sizes = [min(b, n - lo) for lo in range(0, n, b)]
        features = tuple(data.X.shape[1:])
        noise_row = sum(math.prod(s) for s in self.model.noise_shapes(features))
        steps = min(BLOCK_STEPS, streaming.GATHER_VALUES // (b * max(1, math.prod(features))))
        if noise_row:
            steps = min(steps, NOISE_BLOCK_VALUES // (b * noise_row))
        steps = max(1, steps)
        values, done = [], 0
        for batches in data.blocks(rng, b, steps, self.gather):
            k = batches[0].shape[0]
            draws = noise.block(sizes[done : done + k], b, features, batches[0])
            program = "block" if k == steps else "_stepwise"
            *carry, block_values = self._run(program, *carry, batches, draws)
            values.append(block_values)
            done += k
            progress[0].update(progress[1], done, k)
        stacked = values[0] if len(values) == 1 else self.model.xp.concat(values)
        return tuple(carry), stacked, sizes[0]

    def _stepwise(self, *args: Any) -> tuple[Any, ...]:
        """A block's batches trained by one call of the (compiled) step each."""
        return run_block(self.step, *args)

    def _as_arrays(self, state: dict[str, Any], like: Any) -> dict[str, Any]:
        xp, dev = array_namespace(like), _device(like)
        lr, step = state["lr"], state["step"]
        lr = xp.asarray(lr, dtype=like.dtype, device=dev) if isinstance(lr, float) else lr
        step = xp.asarray(step, device=dev) if isinstance(step, int) else step
        return {**state, "lr": lr, "step": step}

    def _batch(
        self, xb: Any, yb: Any, draws: tuple[Any, ...]
    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The step's batch and noise: as they are, or, for a compiled step, with row
        weights and a last short batch padded to the full size (weight 0); a short batch
        of at most ``unpadded_max`` rows (one, for BatchNorm) stays as it is, unweighted."""
        if not self.pad:
            return (xb, yb), draws
        xp, m = array_namespace(xb), xb.shape[0]
        if m == self.batch_size:  # the full batches' weights, made once
            if self.ones is None:
                self.ones = xp.ones((m,), dtype=xb.dtype, device=_device(xb))
            return (xb, yb, self.ones), draws
        if m <= self.unpadded_max:
            return (xb, yb), draws
        w = xp.ones((m,), dtype=xb.dtype, device=_device(xb))
        if m < self.batch_size:
            extra = self.batch_size - m
            xb, yb, w = (_pad_rows(a, extra, 0) for a in (xb, yb, w))
            draws = tuple(_pad_rows(u, extra, 1) for u in draws)
        return (xb, yb, w), draws

    def _run(self, program: str, *args: Any) -> tuple[Any, ...]:
        """One call of ``self.step`` or ``self.block``; under ``compile="auto"`` a compiled
        program that fails on its first call is replaced, with a warning, by the uncompiled
        step (and the block by the loop of it), for this fit and, the step's key marked
        (:func:`mlxp._jit.run_or_fall_back`), for later fits of an equal model."""
        run: Callable[..., tuple[Any, ...]] = getattr(self, program)
        if not self.pending:
            return run(*args)
        self.pending = False
        ran = run_or_fall_back(self.key, self.mode, "training step", lambda: run(*args))
        if ran is not None:
            return ran
        self.step, self.compiler = self.eager, None
        if self.block is not None:  # the blocks' batches, one eager step each
            self.block = self._stepwise
        run = getattr(self, program)
        return run(*args)


def _pad_rows(a: Any, extra: int, value: float) -> Any:
    """a with ``extra`` rows of ``value`` appended."""
    xp = array_namespace(a)
    fill = xp.full((extra, *a.shape[1:]), value, dtype=a.dtype, device=_device(a))
    return xp.concat([a, fill], axis=0)


class _DivergenceGuard:
    """Raise :class:`DivergenceError`, the last good weights restored, when an epoch's
    loss is non-finite or :data:`DIVERGENCE_FACTOR` times the very first batch's loss."""

    first_loss: float | None

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
