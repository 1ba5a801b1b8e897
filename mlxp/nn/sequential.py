"""``Sequential``: a container of layers, with forward and backward propagation.

Owns building the layers' parameters, where they live (namespace, device, dtype) and
moving them, the weights by name, inference (``predict``, ``evaluate``) and the model
file state, with the fixed table of layer classes a file may name (:data:`LAYERS`).
``fit`` delegates to the training loop of :mod:`mlxp.nn.training`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from array_api_compat import array_namespace as _namespace
from array_api_compat import device as _device

from mlxp._backend import placement
from mlxp._compat import Generator, default_float, move
from mlxp._device import OnComputeDevice, device_context
from mlxp._model_state import check_fields
from mlxp._validation import to_array
from mlxp.nn import evaluation, streaming, training
from mlxp.nn.callbacks import EarlyStopping, History
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, make_loss
from mlxp.nn.model_files import LAYERS, check_weights, layers_from_config
from mlxp.optim import Optimizer, ReduceLROnPlateau, Schedule

__all__ = ["LAYERS", "PREDICT_MAX_BYTES", "EarlyStopping", "History", "Sequential"]

PREDICT_MAX_BYTES = 256 * 2**20
"""Inference without a batch size runs on batches whose activations (every layer's
output, which the layers keep until the batch is done) take at most this many bytes."""

_ACCURACY_LOSSES = (CrossEntropyLoss, BCEWithLogitsLoss)


class Sequential(OnComputeDevice):
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
        self._xp: Any = None  # where the parameters live, once built
        self._device: Any = None
        self._dtype: Any = None

    # ------------------------------------------------------------------ parameters
    def build(
        self, xp: Any, device: Any, dtype: Any, weights: dict[str, Any] | None = None
    ) -> Sequential:
        """Create every layer's parameters on ``device`` in ``dtype`` (done on first use);
        with ``weights`` (named as :meth:`get_weights`, of the layers' shapes, on that
        device in that dtype), install those instead, drawing and allocating nothing."""
        self._rng = Generator(self.seed)
        with device_context(xp, device):
            for i, layer in enumerate(self.layers):
                if weights is None:
                    layer.initialize(self._rng, xp=xp, device=device, dtype=dtype)
                else:
                    params = {k: weights[f"{i}.{k}"] for k in layer.param_shapes()}
                    buffers = {k: weights[f"{i}.{k}"] for k in layer.buffer_shapes()}
                    layer.attach(self._rng, params, buffers)
        self._xp, self._device, self._dtype = xp, device, dtype
        return self

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one sample's output for one sample's input of ``shape`` (no batch
        axis), from the layers' configs; ValueError if a layer cannot take its input."""
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def copy(self) -> Sequential:
        """An independent copy (its own layers, dicts and generator) sharing the arrays,
        which nothing modifies in place: training it leaves this model as it is."""
        shared = [self._xp, self._device, self._dtype, *self.get_weights().values()]
        shared += [g for layer in self.layers for g in layer.grads.values()]
        return copy.deepcopy(self, {id(v): v for v in shared})

    @property
    def built(self) -> bool:
        return self._dtype is not None

    @property
    def xp(self) -> Any:
        """The namespace of the parameters (None until built)."""
        return self._xp

    @property
    def device(self) -> Any:
        """The device of the parameters (None until built)."""
        return self._device

    @property
    def dtype(self) -> Any:
        """The floating dtype of the parameters, which inputs are cast to (None until built)."""
        return self._dtype

    @property
    def rng(self) -> Generator:
        """The generator of the run: it drew the parameters, then draws masks and shuffles."""
        return self._rng

    @property
    def parameters(self) -> dict[str, Any]:
        """Every trainable array, named ``"<layer index>.<name>"``."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()
        }

    @property
    def decayed(self) -> dict[str, Any]:
        """The weights (each layer's ``decayed`` parameters), in layer order, named like
        :attr:`parameters`: what weight decay shrinks."""
        layers = enumerate(self.layers)
        return {f"{i}.{k}": layer.params[k] for i, layer in layers for k in layer.decayed}

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

    def placed(self, X: Any, xp: Any, device: Any, *, in_place: bool) -> tuple[Sequential, Any]:
        """(model, X) on ``device`` of ``xp``, X cast to the model's dtype.

        Built there on first use. Otherwise, when the weights live elsewhere, they are
        moved: in this model with ``in_place`` (training), else in a copy (inference
        never moves the model itself).
        """
        if not self.built:
            floating = xp.isdtype(X.dtype, "real floating")
            self.build(xp, device, X.dtype if floating else default_float(xp, device))
        model = self
        if self._xp is not xp or self._device != device:
            model = self if in_place else self._copy()
            model.set_weights({k: move(v, xp, device) for k, v in self.get_weights().items()})
            weights = model.get_weights()
            model._xp, model._device = xp, device
            model._dtype = next(iter(weights.values())).dtype if weights else self._dtype
        return model, X if X.dtype == model.dtype else xp.astype(X, model.dtype)

    def _copy(self) -> Sequential:
        """A copy whose layers have their own dicts of parameters, buffers and gradients."""
        model = copy.copy(self)
        model.layers = [copy.copy(layer) for layer in self.layers]
        for layer in model.layers:
            layer.params, layer.buffers, layer.grads = dict(layer.params), dict(layer.buffers), {}
            layer.clear_cache()
        return model

    # ------------------------------------------------------------------ propagation
    def forward(self, x: Any, training: bool = False, noise: Any = None, rows: Any = None) -> Any:
        """The output of the last layer for input ``x``; each layer caches for backward.

        ``noise``: one uniform array per layer that ``draws`` (Dropout), in order, of the
        shape of its input (see :meth:`noise_shapes`); None: those layers draw their own.
        ``rows``: (n,) 0 or 1, the rows that layers with ``batch_statistics`` (BatchNorm)
        take their statistics over; None: every row.
        """
        draws = iter(noise) if noise is not None else None
        for layer in self.layers:
            if layer.draws and draws is not None:
                x = layer.forward(x, training=training, noise=next(draws))
            elif layer.batch_statistics and rows is not None:
                x = layer.forward(x, training=training, rows=rows)
            else:
                x = layer.forward(x, training=training)
        return x

    def noise_shapes(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The input shape of one sample at each layer that ``draws``, in order, for one
        sample's input of ``shape``: what a training step's ``noise`` holds per row."""
        shapes = []
        for layer in self.layers:
            if layer.draws:
                shapes.append(tuple(shape))
            shape = layer.output_shape(shape)
        return shapes

    def mixes_rows(self, shape: tuple[int, ...]) -> bool:
        """Whether any layer's output rows depend on other rows of its input
        (:meth:`Layer.mixes_rows`), for one sample's input of ``shape``."""
        for layer in self.layers:
            if layer.mixes_rows(shape):
                return True
            shape = layer.output_shape(shape)
        return False

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Back-propagate ∂L/∂output; returns ∂L/∂input (None with ``input_grad=False``,
        which skips it), fills every ``layer.grads``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(reversed(self.layers)):
            grad = layer.backward(grad, input_grad=input_grad or i < last)
        return grad

    def infer(self, x: Any) -> Any:
        """The output in evaluation mode, leaving no cache on any layer."""
        out = self.forward(x)
        self.clear_caches()
        return out

    def infer_batches(self, x: Any, batch_size: int | None = None) -> Any:
        """:meth:`infer` on batches of ``batch_size`` rows of ``x``, concatenated; None: as
        many rows as :data:`PREDICT_MAX_BYTES` of activations hold (estimated from the
        layers' output sizes: a sample's input and outputs, in the model's dtype)."""
        xp, n = _namespace(x), x.shape[0]
        if batch_size is None:
            shape, sizes = tuple(x.shape[1:]), [math.prod(x.shape[1:])]
            try:
                for layer in self.layers:
                    shape = layer.output_shape(shape)
                    sizes.append(math.prod(shape))
            except ValueError:  # the input does not fit: forward says why
                sizes = [0]
            per_sample = sum(sizes) * xp.finfo(x.dtype).bits // 8
            batch_size = max(1, PREDICT_MAX_BYTES // per_sample) if per_sample else n
        if batch_size >= n:
            return self.infer(x)
        out = evaluation.infer_by_blocks(self, x, batch_size)  # JAX: compiled; else None
        if out is not None:
            return out
        parts = [self.infer(x[i : min(i + batch_size, n), ...]) for i in range(0, n, batch_size)]
        return xp.concat(parts, axis=0)

    def state_updates(self) -> dict[str, Any]:
        """The buffers' new values from the last training :meth:`forward` (BatchNorm's
        running statistics), named like :meth:`get_weights` (``"<layer index>.<name>"``):
        the model's next state, which ``forward`` does not write. ``fit`` commits them; a
        loop written by hand does with ``model.set_weights(model.state_updates())``."""
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in layer.state_updates().items()
        }

    def clear_caches(self) -> None:
        """Forget what every layer kept of the last forward pass (and handed out)."""
        for layer in self.layers:
            layer.clear_cache()

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
        progress: bool | str = "auto",
        weight_decay: float = 0.0,
        metrics: tuple[str, ...] = (),
        schedule: Schedule | ReduceLROnPlateau | None = None,
        compile: bool | str = "auto",
    ) -> History:
        """Mini-batch training; returns the :class:`History` of per-epoch losses (and accuracy).

        Each step: forward on a batch, the loss's gradient back-propagated, and one
        optimiser update of every parameter (one flat buffer); ``weight_decay`` adds λW/m to
        the weight gradients (an L2 penalty ½λ‖W‖²/n per sample). Batches are gathered on
        the device; the loss is accumulated there and read back once per epoch.
        ``metrics=("accuracy",)`` also records the accuracy (an extra pass over the data).
        ``progress``: a tqdm bar (True; the epoch's logs in its postfix), none, or "auto".
        ``schedule`` (from :mod:`mlxp.optim`) sets the learning rate of each epoch; a
        ``ReduceLROnPlateau`` is stepped with the epoch's validation loss (else its loss).
        ``compile``: "auto" runs the step as one ``jax.jit`` program on JAX (falling back,
        with a warning, if that fails); True also uses CUDA graphs on CuPy (products by
        direct cuBLAS calls) and ``torch.compile`` on PyTorch, or raises;
        False never compiles. A compiled step gives the uncompiled step's results to float
        tolerance (on JAX, with :mod:`mlxp.nn.evaluation`'s compiled metrics and validation
        passes, unless False).
        X, y (and the validation data) may be Dask arrays chunked by rows, streamed to the
        device one chunk ahead and shuffled by chunk (see :mod:`mlxp.nn.streaming`).
        """
        return training.fit(
            self,
            X,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            validation_data=validation_data,
            callbacks=callbacks,
            progress=progress,
            weight_decay=weight_decay,
            metrics=metrics,
            schedule=schedule,
            compile=compile,
        )

    # ------------------------------------------------------------------ inference
    def predict(self, X: Any, batch_size: int | None = None) -> Any:
        """Outputs of the last layer (eval mode), in the caller's namespace and device,
        computed on batches of ``batch_size`` rows (None: as many rows as
        :data:`PREDICT_MAX_BYTES` of activations hold; see :meth:`infer_batches`). For a
        Dask X of one output vector per sample, a lazy Dask array (one task per row chunk)."""
        if streaming.is_dask(X):
            return streaming.predict_lazily(self, X, batch_size)
        X = to_array(X, "X")
        place = placement(X=X)
        model, Xc = self.placed(place.to_compute(X), place.xp, place.device, in_place=False)
        return place.to_caller(model.infer_batches(Xc, batch_size))

    def evaluate(
        self, X: Any, y: Any, *, loss: str | Loss = "mse", batch_size: int = 256
    ) -> dict[str, float]:
        """The mean ``loss`` on (X, y), and the accuracy for classification losses, in one pass."""
        loss_fn = make_loss(loss)
        metrics = ("accuracy",) if isinstance(loss_fn, _ACCURACY_LOSSES) else ()
        if streaming.is_dask(X) or streaming.is_dask(y):  # streamed by row chunks
            model = self.copy()
            return evaluation.evaluate(
                model, streaming.source(model, X, y), loss_fn, batch_size, metrics
            )
        X, y = to_array(X, "X"), to_array(y, "y")
        place = placement(X=X, y=y)
        model, Xc = self.placed(place.to_compute(X), place.xp, place.device, in_place=False)
        data = streaming.InMemory(Xc, place.to_compute(y))
        return evaluation.evaluate(model, data, loss_fn, batch_size, metrics)

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
        """The model of a file's config and tensors, checked (ValueError saying what is
        wrong) before anything is allocated; the file's tensors become the weights."""
        check_fields(config, "the network config", {"class", "layers"}, {"seed"})
        seed = config.get("seed")
        if seed is not None and (type(seed) is not int or seed < 0):
            raise ValueError(f"the network's seed {seed!r} is not None nor an int >= 0")
        layers = layers_from_config(config["layers"])
        check_weights(layers, arrays)
        model = cls(layers, seed=seed)
        if arrays:
            first = next(iter(arrays.values()))
            model.build(_namespace(first), _device(first), first.dtype, weights=arrays)
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_xp"] = state["_device"] = None  # neither pickles everywhere: re-derived
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        weights = self.get_weights()
        if self.built and weights:
            first = next(iter(weights.values()))
            self._xp, self._device = _namespace(first), _device(first)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner},\n], seed={self.seed!r})"
