"""The pure training step of a network, its flat parameter buffer, its noise, its compiled forms.

A step is ``(params, opt_state, model_state, batch, noise) → (params, opt_state,
model_state, loss)`` with nothing mutated: ``params`` is every parameter of the model in
one flat buffer (:class:`FlatLayout`; the layers get views of it), ``opt_state`` the
optimiser's state of that buffer plus the learning rate ``"lr"`` (a number; a 0-d array
in a compiled step, so a schedule does not recompile it: :func:`mlxp._jit.placed_numbers`),
``model_state`` the layers' buffers by name (BatchNorm's running statistics), ``batch`` (x, y) or
(x, y, row weights), ``noise`` the uniforms of the Dropout layers
(:class:`mlxp.nn.noise.NoiseStream`),
and ``loss`` the batch's summed loss Σᵢ wᵢℓᵢ (0-d, on the device).

``compile_step`` wraps a step: ``jax.jit`` with donated buffers on JAX, a CUDA graph
replayed per batch on CuPy, ``torch.compile`` on PyTorch when asked.

A *block* is k steps over k batches stacked ahead of time (``run_block``: the loop; on JAX
``compile_block``: one ``jax.lax.scan`` in one ``jax.jit``, so k steps cost one dispatch and
the batches never pass through Python one by one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from array_api_compat import array_namespace, is_cupy_namespace, is_jax_namespace
from array_api_compat import device as _device

from mlxp._jit import config_key, jitted, mlxp_own, object_number
from mlxp._kernels import concat_flat, writes_in_place
from mlxp.nn.cuda_graph import CAPTURE_ISSUE, CudaGraphStep, capture_refusal

__all__ = [
    "COMPILE_OPTIONS",
    "FlatLayout",
    "bound",
    "compile_block",
    "compile_gather",
    "compile_layout",
    "compile_step",
    "layers_key",
    "make_step",
    "run_block",
    "step_key",
]

COMPILE_OPTIONS = ("auto", True, False)
"""``compile=``: "auto" compiles where it is known to help (JAX) and falls back with a
warning if that fails; True compiles on JAX, CuPy and PyTorch or raises; False never."""


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
        return concat_flat([arrays[k] for k in self.names])

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
    own = mlxp_own(opt) and mlxp_own(model)  # a user's may keep gradients past the step
    buffers = _StepBuffers(layout, gradients=own) if in_place else None

    def step(
        params: Any, opt_state: dict[str, Any], model_state: dict[str, Any], batch: Any, noise: Any
    ) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
        xb, yb, *weights = batch
        w = weights[0] if weights else None
        views, targets = buffers.views(params) if buffers else (layout.views(params), None)
        value, grads, model_state = _forward_backward(
            model, loss_fn, views, model_state, (xb, yb, w), noise, targets
        )
        g = buffers.flatten(grads, targets) if buffers else layout.flatten(grads)
        if weight_decay:
            rows = xb.shape[0] if w is None else array_namespace(w).sum(w)
            g = g + (weight_decay / rows) * (mask * params)
        inner = {k: v for k, v in opt_state.items() if k != "lr"}
        params, inner = opt.update(params, g, inner, opt_state["lr"], in_place=in_place)
        return params, {**inner, "lr": opt_state["lr"]}, model_state, value

    return step


class _StepBuffers:
    """What a training loop that owns its buffers (``make_step(in_place=True)``) keeps
    between steps, on a library that writes in place (:func:`mlxp._kernels.writes_in_place`):
    the views of its parameter buffer while it is the same array, and, with
    ``gradients``, a flat gradient buffer whose views mlxp's own layers write their
    gradients into (``Layer.grad_out``), so the step needs no concatenation. Each step
    overwrites that buffer, so it serves only a model and an optimiser that keep no
    gradient past the step (mlxp's own, :func:`mlxp._jit.mlxp_own`: the caller decides).
    Elsewhere (JAX, the standard, PyTorch while compiling) the step takes fresh views and
    concatenates, as the pure step does."""

    def __init__(self, layout: FlatLayout, gradients: bool) -> None:
        self.layout, self.gradients = layout, gradients
        self.params: Any = None
        self.param_views: dict[str, Any] = {}
        self.grad: Any = None
        self.grad_views: dict[str, Any] = {}

    def views(self, params: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the parameters' views of ``params``, the gradient views to bind, or None)."""
        if params is not self.params:  # else checked when it was first seen
            if not writes_in_place(params):
                return self.layout.views(params), None
            self.params, self.param_views = params, self.layout.views(params)
        if not self.gradients:
            return self.param_views, None
        if self.grad is None:  # a fit's parameters keep their dtype and device
            self.grad = array_namespace(params).empty_like(params)
            self.grad_views = self.layout.views(self.grad)
        return self.param_views, self.grad_views

    def flatten(self, grads: dict[str, Any], targets: dict[str, Any] | None) -> Any:
        """The flat gradient: the buffer itself when every layer wrote into its views,
        else the gradients concatenated (one op)."""
        if targets is not None and all(grads[k] is targets[k] for k in self.layout.names):
            return self.grad
        return self.layout.flatten(grads)


def _forward_backward(
    model: Any,
    loss_fn: Any,
    params: dict[str, Any],
    model_state: dict[str, Any],
    batch: Any,
    noise: Any,
    grad_out: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(Σ wᵢℓᵢ, ∂(mean loss)/∂params by name, the new ``model_state``), the model's
    parameters and buffers set to ``params`` and ``model_state`` for the call only, and
    mlxp's own layers' ``grad_out`` to the arrays of ``grad_out`` named for their
    parameters (:func:`bound`).

    The new state is ``model_state`` with the values the training forward handed out
    (:meth:`Sequential.state_updates`); a layer of its own that still writes a buffer in
    ``forward`` has that value kept."""
    xb, yb, w = batch
    with bound(model, {**params, **model_state}, grad_out) as slots:
        out = model.forward(xb, training=True, noise=noise, rows=w)
        updates = model.state_updates()  # else what a layer wrote itself (older layers)
        state = {n: updates.get(n, held[k]) for n, held, k in slots if n in model_state}
        loss_fn.check(out, yb)
        value, grad = loss_fn.value_and_grad(out, yb, w)
        model.backward(grad, input_grad=False)
        grads = model.gradients()
    return value, grads, state


@contextmanager
def bound(
    model: Any, weights: dict[str, Any], grad_out: dict[str, Any] | None = None
) -> Iterator[list[tuple[str, Any, str]]]:
    """The model's parameters and buffers set to ``weights`` (named as
    :meth:`Sequential.get_weights` names them: every one), and with ``grad_out`` (named
    as the parameters) the ``grad_out`` of each of mlxp's own layers, for the block only;
    afterwards the layers hold what they held before (weights, forward caches and
    gradients alike: nothing of the block stays on them). Gives the slots (name, the
    layer's dict holding it, its key there), to read what a layer wrote."""
    slots = [
        (f"{i}.{key}", held, key)
        for i, layer in enumerate(model.layers)
        for held in (layer.params, layer.buffers)
        for key in held
    ]
    saved = [held[key] for _, held, key in slots]
    kept = [(layer._cache, layer.grads, getattr(layer, "grad_out", {})) for layer in model.layers]
    for name, held, key in slots:
        held[key] = weights[name]
    if grad_out is not None:
        for i, layer in enumerate(model.layers):
            if mlxp_own(layer):  # a user's layer may keep its gradients past the step
                layer.grad_out = {key: grad_out[f"{i}.{key}"] for key in layer.params}
    try:
        yield slots
    finally:
        for (_, held, key), value_before in zip(slots, saved, strict=True):
            held[key] = value_before
        for layer, (cache, grads, out) in zip(model.layers, kept, strict=True):
            layer._cache, layer.grads, layer.grad_out = cache, grads, out


def run_block(
    step: Callable[..., Any],
    params: Any,
    opt_state: Any,
    model_state: Any,
    batches: Any,
    noise: Any,
) -> tuple[Any, Any, Any, Any]:
    """k steps, one per batch of ``batches`` = (xs (k, m, ...), ys (k, m, ...), row weights
    (k, m)) with the noise ``noise`` (per layer (k, m, ...)): (params, opt_state,
    model_state, the k summed losses (k,)). The loop a compiled block replaces."""
    xs, ys, ws = batches
    values = []
    for j in range(xs.shape[0]):
        batch = (xs[j, ...], ys[j, ...], ws[j, ...])
        draws = tuple(u[j, ...] for u in noise)
        params, opt_state, model_state, value = step(params, opt_state, model_state, batch, draws)
        values.append(value)
    return params, opt_state, model_state, array_namespace(xs).stack(values)


def step_key(
    model: Any, loss_fn: Any, opt: Any, weight_decay: float, layout: FlatLayout
) -> Hashable:
    """What a traced step depends on besides its arguments: the layers
    (:func:`layers_key`), the loss's configuration, the optimiser's type and
    hyperparameters (not its learning rate, an argument when compiled; a user's loss or
    optimiser class: that object, :func:`mlxp._jit.config_key`), the weight decay,
    the parameter shapes, dtype and device. Two fits with equal keys can share one
    compiled step."""
    return (
        layers_key(model),
        config_key(loss_fn),
        config_key(opt, opt._hyperparameters),
        float(weight_decay),
        tuple(layout.shapes.items()),
        str(model.dtype),
        str(model.device),
    )


def layers_key(model: Any) -> Hashable:
    """What a program traced through ``model``'s layers depends on besides their weights:
    the layers' reprs (class and configuration) when each is one of mlxp's own, which its
    configuration describes whole (a model file rebuilds it from that alone); else the
    model itself, as a layer of the user's may hold more than its configuration says
    (:func:`mlxp._jit.object_number`)."""
    if all(mlxp_own(layer) for layer in model.layers):
        return tuple(repr(layer) for layer in model.layers)
    return ("model", object_number(model))


def compile_step(
    step: Callable[..., Any], xp: Any, mode: Any, key: Hashable = None
) -> tuple[Callable[..., Any], str | None]:
    """(the step to run, what compiled it: "jax.jit", "cuda-graph", "torch.compile" or None).

    ``mode`` as :data:`COMPILE_OPTIONS`. "auto" compiles on JAX only (eager dispatch is
    what costs there); True also captures CUDA graphs on CuPy, the step's products made
    by direct cuBLAS calls (a ValueError where such a product is not captured and replayed
    right: :func:`mlxp.nn.cuda_graph.capture_refusal`), and uses
    ``torch.compile`` on PyTorch; other libraries, or False, run the step as it is. On
    JAX, a ``key`` (:func:`step_key`) seen in one of the last :data:`mlxp._jit.JIT_CACHE_SIZE`
    fits gives that fit's jitted step back, already compiled for the shapes it saw: a
    refit (a grid search, a new seed) does not trace and compile again.
    """
    if mode is False:
        return step, None
    if is_jax_namespace(xp):
        return jitted(key, step, donate_argnums=(0, 1, 2)), "jax.jit"
    if mode != "auto" and is_cupy_namespace(xp):
        refusal = capture_refusal()
        if refusal is not None:
            raise ValueError(
                "compile=True on CuPy captures the step in a CUDA graph, and this CuPy does "
                f"not capture matrix products ({refusal}; {CAPTURE_ISSUE}): use compile=False."
            )
        return CudaGraphStep(step), "cuda-graph"
    if mode != "auto" and xp.__name__.endswith("torch"):
        import torch

        return torch.compile(step, dynamic=False), "torch.compile"
    if mode is True:
        raise ValueError(f"compile=True: no compiler for the {xp.__name__} backend.")
    return step, None


def compile_block(step: Callable[..., Any], xp: Any, key: Hashable = None) -> Any:
    """:func:`run_block` of ``step`` as one program: on JAX a ``jax.lax.scan`` of the step
    over the stacked batches in one ``jax.jit`` (buffers donated; kept for later fits under
    ``key`` as :func:`compile_step` keeps steps); None for other libraries."""
    if not is_jax_namespace(xp):
        return None
    import jax

    def block(params: Any, opt_state: Any, model_state: Any, batches: Any, noise: Any) -> Any:
        def body(carry: Any, inputs: Any) -> Any:
            *carry, value = step(*carry, *inputs)
            return tuple(carry), value

        carry, values = jax.lax.scan(body, (params, opt_state, model_state), (batches, noise))
        return (*carry, values)

    return jitted(None if key is None else ("block", key), block, donate_argnums=(0, 1, 2))


def compile_gather(gather: Callable[..., Any], xp: Any) -> Callable[..., Any]:
    """``gather`` (:func:`mlxp.nn.streaming.gather_block`) as one jitted program on JAX,
    its step and batch counts static (a block's batches gathered in one dispatch, not
    eight), kept for later fits; else ``gather`` itself."""
    if not is_jax_namespace(xp):
        return gather
    return jitted(("gather", gather), gather, static_argnames=("steps", "batch_size"))


def compile_layout(layout: FlatLayout, xp: Any) -> tuple[Callable[..., Any], ...]:
    """(flatten, views) of ``layout``: on JAX each one jitted program (one dispatch for
    all the arrays, not one or two per array), kept for later fits; else its methods."""
    if not is_jax_namespace(xp):
        return layout.flatten, layout.views
    shapes = tuple(layout.shapes.items())
    return jitted(("flatten", shapes), layout.flatten), jitted(("views", shapes), layout.views)
