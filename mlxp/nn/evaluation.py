"""The evaluation passes of :meth:`Sequential.fit` and :meth:`Sequential.evaluate`: the
mean loss and the accuracy of a model over the rows of a source (:mod:`mlxp.nn.streaming`),
in evaluation mode, batch by batch in stored order, both from one forward pass, read back
from the device once.

A batch's totals come from :func:`batch_totals`, a function of the batch and its row
weights (0 on padding rows) in standard operations. On JAX, data in memory is evaluated by
blocks of :data:`BLOCK_BATCHES` batches: each block gathered by one compiled program and
totalled by another (a ``jax.lax.scan`` of :func:`batch_totals` in one ``jax.jit``, the
weights its arguments), the batches left over one such call each, so a pass is a few
dispatches instead of some twenty per batch, and data of any size reuses the block programs
(the gather, a small program that takes the whole data, compiles once per data shape). A
model whose layers mix rows (:meth:`Sequential.mixes_rows`) is never padded: it goes batch by
batch, as every other library does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from typing import Any

from array_api_compat import array_namespace, is_jax_namespace
from array_api_compat import device as _device

from mlxp._compat import argmax, to_numpy
from mlxp._jit import config_key, jitted, may_compile, run_or_fall_back
from mlxp.nn import streaming
from mlxp.nn.losses import Loss
from mlxp.nn.step import bound, compile_gather, layers_key

__all__ = ["BLOCK_BATCHES", "accuracy", "batch_totals", "evaluate", "infer_by_blocks"]

BLOCK_BATCHES = 8
"""Batches per compiled evaluation block on JAX (fewer where the block's inputs would pass
:data:`mlxp.nn.streaming.GATHER_VALUES` values)."""


def evaluate(
    model: Any,
    data: Any,
    loss_fn: Loss,
    batch_size: int,
    metrics: tuple[str, ...] = (),
    compile: Any = "auto",
) -> dict[str, float]:
    """{"loss": the mean loss on a source's (X, y)}, and "accuracy" if in ``metrics``, from
    one pass; ``compile`` as in :meth:`Sequential.fit` (False: no compiled program)."""
    hits = "accuracy" in metrics
    loss, right = _totals(model, data, loss_fn, hits, batch_size, compile)
    logs = {"loss": loss / data.n_samples}
    if hits:
        logs["accuracy"] = right / data.n_samples
    return logs


def accuracy(model: Any, data: Any, batch_size: int, compile: Any = "auto") -> float:
    """The fraction of a source's rows whose class is predicted (see :func:`batch_totals`)."""
    right = _totals(model, data, None, True, batch_size, compile)[1]
    return right / int(data.n_samples)


def batch_totals(
    model: Any, loss_fn: Loss | None, hits: bool, xb: Any, yb: Any, w: Any = None
) -> tuple[Any, Any]:
    """(Σᵢ wᵢℓᵢ, Σᵢ wᵢ[row i's class is predicted]) over a batch (0-d arrays; 0 for what
    is not asked: ``loss_fn`` None, ``hits`` False), with row weights w (n,) (None: all 1)
    and the model's output in evaluation mode. The predicted class is the argmax of K > 1
    outputs, or output > 0 for one logit (y then holds 0/1)."""
    out = model.infer(xb)
    xp, dtype = array_namespace(out), out.dtype
    loss = right = xp.zeros((), dtype=dtype, device=_device(out))
    if loss_fn is not None and w is None:  # the mean of ``forward``: any Loss has one
        loss = loss_fn.forward(out, yb) * out.shape[0]
    elif loss_fn is not None:  # inside a compiled block (the gradient is never computed)
        loss_fn.check(out, yb)
        loss = loss_fn.value_and_grad(out, yb, w)[0]
    if hits:
        if out.shape[1] == 1:
            predicted = xp.astype(out[:, 0] > 0, dtype)
            truth = xp.astype(xp.reshape(yb, (-1,)), dtype)
        else:
            predicted = xp.astype(argmax(out, axis=1), dtype)  # no int64 needed
            truth = xp.astype(yb, dtype)
        correct = xp.astype(predicted == truth, dtype)
        right = xp.sum(correct if w is None else correct * w)
    return loss, right


def _totals(
    model: Any, data: Any, loss_fn: Loss | None, hits: bool, batch_size: int, compile: Any
) -> tuple[float, float]:
    """(Σ of the rows' losses, Σ of their hits) over ``data``, read back once: by compiled
    blocks on JAX (unless ``compile`` is False, the data streamed, or rows mixed), else
    batch by batch; under "auto" a block program that fails falls back, with a warning."""
    features = tuple(data.X.shape[1:])
    key = ("evaluate", layers_key(model), config_key(loss_fn), hits)
    if (
        is_jax_namespace(model.xp)
        and isinstance(data, streaming.InMemory)
        and may_compile(key, compile)
        and not model.mixes_rows(features)
    ):
        totals = run_or_fall_back(
            key,
            compile,
            "evaluation step",
            lambda: _by_blocks(model, data, key, loss_fn, hits, batch_size),
        )
        if totals is not None:
            return totals
    xp = model.xp
    loss = right = xp.zeros((), dtype=model.dtype, device=model.device)
    for xb, yb in data.batches(None, batch_size):
        batch_loss, batch_right = batch_totals(model, loss_fn, hits, xb, yb)
        loss, right = loss + batch_loss, right + batch_right
    both = to_numpy(xp.stack([loss, right]))
    return float(both[0]), float(both[1])


def _by_blocks(
    model: Any, data: Any, key: Hashable, loss_fn: Loss | None, hits: bool, batch_size: int
) -> tuple[float, float]:
    """:func:`_totals` on JAX: blocks of k batches gathered (the last batch padded with
    weight-0 rows) and totalled by one jitted program each, kept under ``key``; the
    batches left over after the last full block, one call each of the same programs at
    k = 1."""
    program = jitted(key, _block_program(model, loss_fn, hits))
    weights = model.get_weights()
    totals = model.xp.zeros((2,), dtype=model.dtype, device=model.device)
    for block in _blocks(data.X, data.y, batch_size):
        totals = program(weights, totals, *block)
    both = to_numpy(totals)
    return float(both[0]), float(both[1])


def _blocks(X: Any, y: Any, batch_size: int) -> Iterator[tuple[Any, Any, Any]]:
    """The rows of (X, y) in stored order as blocks of batches (xs, ys, row weights) by
    the compiled :func:`mlxp.nn.streaming.gather_block`: k = :data:`BLOCK_BATCHES` batches
    (fewer where a block's inputs would pass :data:`mlxp.nn.streaming.GATHER_VALUES`
    values) while whole blocks remain, then k = 1, the last batch padded with row 0 at
    weight 0: two shapes for data of any size."""
    n, b = X.shape[0], batch_size
    per_block = streaming.GATHER_VALUES // (b * max(1, math.prod(X.shape[1:])))
    steps = max(1, min(BLOCK_BATCHES, per_block))
    gather = compile_gather(streaming.gather_block, array_namespace(X))
    start, end = 0, math.ceil(n / b) * b
    while start < end:
        k = steps if start + steps * b <= end else 1
        yield gather(X, y, None, start, n, steps=k, batch_size=b)
        start += k * b


def infer_by_blocks(model: Any, x: Any, batch_size: int) -> Any:
    """The model's outputs on the rows of x in evaluation mode, in batches of
    ``batch_size`` rows, on JAX by compiled blocks as the passes above (the last batch
    padded, the padding's outputs dropped); None elsewhere, for a model that mixes rows, or
    when compiling fails (with a warning): the caller then goes batch by batch."""
    key = ("infer", layers_key(model))
    if not is_jax_namespace(model.xp) or not may_compile(key, "auto"):
        return None
    if model.mixes_rows(tuple(x.shape[1:])):
        return None
    xp, n = model.xp, x.shape[0]
    program = jitted(key, _infer_program(model))
    none = xp.zeros((n, 0), dtype=x.dtype, device=_device(x))  # the gather's labels: nothing
    weights = model.get_weights()
    parts = run_or_fall_back(
        key,
        "auto",
        "inference step",
        lambda: [program(weights, xs) for xs, _, _ in _blocks(x, none, batch_size)],
    )
    if parts is None:
        return None
    out = parts[0] if len(parts) == 1 else xp.concat(parts)
    return out[:n, ...]


def _infer_program(model: Any) -> Any:
    """(weights, xs (k, b, ...)) → the outputs of the k batches (k·b, ...), by
    ``jax.lax.map`` of :meth:`Sequential.infer`, the model bound to ``weights``."""
    from jax import lax

    def block(weights: Any, xs: Any) -> Any:
        with bound(model, weights):
            out = lax.map(model.infer, xs)
        return array_namespace(out).reshape(out, (-1, *out.shape[2:]))

    return block


def _block_program(model: Any, loss_fn: Loss | None, hits: bool) -> Any:
    """(weights, totals (2,), xs (k, b, ...), ys (k, b, ...), ws (k, b)) → totals plus the
    block's (Σ wℓ, Σ w·hit): a ``jax.lax.scan`` of :func:`batch_totals`, the model bound
    to ``weights`` while it is traced."""
    from jax import lax

    def block(weights: Any, totals: Any, xs: Any, ys: Any, ws: Any) -> Any:
        def body(carry: Any, batch: Any) -> Any:
            loss, right = batch_totals(model, loss_fn, hits, *batch)
            return carry + array_namespace(carry).stack([loss, right]), None

        with bound(model, weights):
            totals, _ = lax.scan(body, totals, (xs, ys, ws))
        return totals

    return block
