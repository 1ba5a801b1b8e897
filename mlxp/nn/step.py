"""The pure training step of a network, its flat parameter buffer, its noise, its compiled forms.

A step is ``(params, opt_state, model_state, batch, noise) → (params, opt_state,
model_state, loss)`` with nothing mutated: ``params`` is every parameter of the model in
one flat buffer (:class:`FlatLayout`; the layers get views of it), ``opt_state`` the
optimiser's state of that buffer plus the learning rate ``"lr"`` (a float, or a 0-d
array in a compiled step, so a schedule does not recompile it), ``model_state`` the
layers' buffers by name (BatchNorm's running statistics), ``batch`` (x, y) or
(x, y, row weights), ``noise`` the uniforms of the Dropout layers (:class:`NoiseStream`),
and ``loss`` the batch's summed loss Σᵢ wᵢℓᵢ (0-d, on the device).

``compile_step`` wraps a step: ``jax.jit`` with donated buffers on JAX, a CUDA graph
replayed per batch on CuPy, ``torch.compile`` on PyTorch when asked.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from array_api_compat import array_namespace, is_cupy_namespace, is_jax_namespace
from array_api_compat import device as _device

__all__ = [
    "COMPILE_OPTIONS",
    "FlatLayout",
    "NoiseStream",
    "compile_step",
    "make_step",
    "step_key",
    "warn_fallback",
]

COMPILE_OPTIONS = ("auto", True, False)
"""``compile=``: "auto" compiles where it is known to help (JAX) and falls back with a
warning if that fails; True compiles on JAX, CuPy and PyTorch or raises; False never."""

NOISE_BLOCK_VALUES = 2**22
"""The noise of this many values (over a block of batches) is drawn in one host draw."""


class FlatLayout:
    """Where each named array lives in one flat 1-D buffer: consecutive, in name order.

    ``flatten`` concatenates arrays into a buffer (one op); ``views`` gives the named
    arrays back as reshaped slices of a buffer (views on NumPy, CuPy and PyTorch).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.names = list(shapes)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.slices, start = {}, 0
        for name, shape in self.shapes.items():
            self.slices[name] = slice(start, start + math.prod(shape))
            start += math.prod(shape)
        self.size = start

    def flatten(self, arrays: dict[str, Any]) -> Any:
        """The buffer holding ``arrays`` (every name of the layout)."""
        xp = array_namespace(*arrays.values())
        return xp.concat([xp.reshape(arrays[k], (-1,)) for k in self.names])

    def views(self, flat: Any) -> dict[str, Any]:
        """The named arrays of buffer ``flat``, each of its shape."""
        xp = array_namespace(flat)
        return {k: xp.reshape(flat[self.slices[k]], self.shapes[k]) for k in self.names}

    def mask(self, names: set[str], like: Any) -> Any:
        """A buffer of 1 at the entries of ``names``, else 0, in the dtype of ``like``."""
        xp = array_namespace(like)
        parts = [
            xp.full(
                self.shapes[k], 1.0 if k in names else 0.0, dtype=like.dtype, device=_device(like)
            )
            for k in self.names
        ]
        return self.flatten(dict(zip(self.names, parts, strict=True)))


def make_step(
    model: Any,
    loss_fn: Any,
    opt: Any,
    weight_decay: float,
    layout: FlatLayout,
    in_place: bool = False,
) -> Callable[..., tuple[Any, Any, Any, Any]]:
    """The pure step of ``model`` (see the module docstring) with ``loss_fn`` and ``opt``;
    with ``in_place``, for a loop that owns ``params`` and the buffers of ``opt_state``
    and passes each step what the last one returned, the optimiser may write into them
    (NumPy: no fresh buffers; :meth:`mlxp.optim.Optimizer.update`).

    Weight decay adds (λ/m)·p to the gradient of every weight the layers declare
    (``Layer.decayed``) for a batch of m samples (Σ wᵢ with row weights): an L2 penalty
    ½λ‖W‖²/n per sample. The step binds the parameters (views of ``params``) and buffers
    to the layers, runs forward and backward, and restores what the layers held, so
    nothing of the call stays on them.
    """
    if weight_decay:
        mask = layout.mask(set(model.decayed), next(iter(model.parameters.values())))

    def step(
        params: Any, opt_state: dict[str, Any], model_state: dict[str, Any], batch: Any, noise: Any
    ) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
        xb, yb, *weights = batch
        w = weights[0] if weights else None
        value, grads, model_state = _forward_backward(
            model, loss_fn, layout.views(params), model_state, (xb, yb, w), noise
        )
        g = layout.flatten(grads)
        if weight_decay:
            rows = xb.shape[0] if w is None else array_namespace(w).sum(w)
            g = g + (weight_decay / rows) * (mask * params)
        inner = {k: v for k, v in opt_state.items() if k != "lr"}
        params, inner = opt.update(params, g, inner, opt_state["lr"], in_place=in_place)
        return params, {**inner, "lr": opt_state["lr"]}, model_state, value

    return step


def _forward_backward(
    model: Any,
    loss_fn: Any,
    params: dict[str, Any],
    model_state: dict[str, Any],
    batch: Any,
    noise: Any,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(Σ wᵢℓᵢ, ∂(mean loss)/∂params by name, the buffers after the forward), the model's
    parameters and buffers set to ``params`` and ``model_state`` for the call only."""
    xb, yb, w = batch
    slots = [  # (name, the layer's dict holding it, its key there)
        (f"{i}.{key}", held, key)
        for i, layer in enumerate(model.layers)
        for held in (layer.params, layer.buffers)
        for key in held
    ]
    saved = [held[key] for _, held, key in slots]
    given = {**params, **model_state}
    for name, held, key in slots:
        held[key] = given[name]
    try:
        out = model.forward(xb, training=True, noise=noise)
        loss_fn.check(out, yb)
        value, grad = loss_fn.value_and_grad(out, yb, w)
        model.backward(grad, input_grad=False)
        grads = model.gradients()
        state = {name: held[key] for name, held, key in slots if name in model_state}
    finally:
        for (_, held, key), value_before in zip(slots, saved, strict=True):
            held[key] = value_before
        for layer in model.layers:
            layer.clear_cache()
            layer.grads = {}
    return value, grads, state


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


JIT_CACHE_SIZE = 8
"""How many jitted steps are kept for later fits (each holds the model it was made from)."""

_JITTED: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()


def step_key(
    model: Any, loss_fn: Any, opt: Any, weight_decay: float, layout: FlatLayout
) -> Hashable:
    """What a traced step depends on besides its arguments: the layers' and the loss's
    configurations, the optimiser's type and hyperparameters (not its learning rate, an
    argument when compiled), the weight decay, the parameter shapes, dtype and device.
    Two fits with equal keys can share one compiled step."""
    hyper = tuple(repr(getattr(opt, k)) for k in opt._hyperparameters)
    return (
        tuple(repr(layer) for layer in model.layers),
        repr(loss_fn),
        type(opt).__name__,
        hyper,
        float(weight_decay),
        tuple(layout.shapes.items()),
        str(model.dtype),
        str(model.device),
    )


def compile_step(
    step: Callable[..., Any], xp: Any, mode: Any, key: Hashable = None
) -> tuple[Callable[..., Any], str | None]:
    """(the step to run, what compiled it: "jax.jit", "cuda-graph", "torch.compile" or None).

    ``mode`` as :data:`COMPILE_OPTIONS`. "auto" compiles on JAX only (eager dispatch is
    what costs there); True also captures CUDA graphs on CuPy and uses ``torch.compile``
    on PyTorch; other libraries, or False, run the step as it is. On JAX, a ``key``
    (:func:`step_key`) seen in one of the last :data:`JIT_CACHE_SIZE` fits gives that
    fit's jitted step back, already compiled for the shapes it saw: a refit (a grid
    search, a new seed) does not trace and compile again.
    """
    if mode is False:
        return step, None
    if is_jax_namespace(xp):
        import jax

        if key is not None and key in _JITTED:
            _JITTED.move_to_end(key)
            return _JITTED[key], "jax.jit"
        jitted = jax.jit(step, donate_argnums=(0, 1, 2))
        if key is not None:
            _JITTED[key] = jitted
            while len(_JITTED) > JIT_CACHE_SIZE:
                _JITTED.popitem(last=False)
        return jitted, "jax.jit"
    if mode != "auto" and is_cupy_namespace(xp):
        return _CudaGraphStep(step), "cuda-graph"
    if mode != "auto" and xp.__name__.endswith("torch"):
        import torch

        return torch.compile(step, dynamic=False), "torch.compile"
    if mode is True:
        raise ValueError(f"compile=True: no compiler for the {xp.__name__} backend.")
    return step, None


class _CudaGraphStep:
    """A step captured once into a CUDA graph (``cupy.cuda.Graph`` by stream capture) per
    input shape, then replayed: the inputs are copied into the captured buffers and the
    outputs read from its buffers. Untested here (no GPU): written from CuPy's docs.

    The first call of a shape runs the step eagerly (allocations and kernel compilation
    must not happen during capture), the second captures it, later calls replay it."""

    graphs: dict[Any, tuple[Any, Any, Any, Any]]  # key: (graph, inputs, outputs, stream)
    seen: set[Any]

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step, self.graphs, self.seen = step, {}, set()

    def __call__(self, *args: Any) -> Any:
        import cupy

        leaves = _leaves(args)
        key = tuple((tuple(a.shape), str(a.dtype)) for a in leaves)
        if key not in self.seen:
            self.seen.add(key)
            return self.step(*args)
        if key not in self.graphs:
            inputs = [cupy.array(a, copy=True) for a in leaves]
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                stream.begin_capture()
                outputs = self.step(*_rebuild(args, iter(inputs)))
                graph = stream.end_capture()
            self.graphs[key] = (graph, inputs, outputs, stream)
        graph, inputs, outputs, stream = self.graphs[key]
        for buffer, value in zip(inputs, leaves, strict=True):
            buffer[...] = value
        graph.launch(stream)
        stream.synchronize()
        return _copy_tree(outputs)


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [] if tree is None or isinstance(tree, (int, float)) else [tree]


def _rebuild(tree: Any, leaves: Iterator[Any]) -> Any:
    if isinstance(tree, (tuple, list)):
        return type(tree)(_rebuild(item, leaves) for item in tree)
    if isinstance(tree, dict):
        return {key: _rebuild(tree[key], leaves) for key in sorted(tree)}
    return tree if tree is None or isinstance(tree, (int, float)) else next(leaves)


def _copy_tree(tree: Any) -> Any:
    """The outputs of a replay, copied out of the graph's buffers (the next replay
    overwrites them)."""
    return _rebuild(tree, iter([leaf.copy() for leaf in _leaves(tree)]))


def warn_fallback(reason: Exception) -> None:
    """The warning of ``compile="auto"`` when compiling failed and the step runs eagerly."""
    warnings.warn(
        f"compile='auto': compiling the training step failed ({type(reason).__name__}: "
        f"{reason}); training with the uncompiled step.",
        RuntimeWarning,
        stacklevel=3,
    )
