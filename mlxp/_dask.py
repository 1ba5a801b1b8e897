"""Dask arrays, the one place mlxp builds Dask graphs: detection, row blocks, tree reductions,
blockwise maps.

A Dask array's chunks are arrays of a *chunk library* (NumPy, or CuPy under dask-cuda):
that library computes every chunk and holds every small result (fitted attributes, the
optimiser state on the client). Estimators see Dask through four calls:

* :func:`is_dask_array` -- whether an input is a Dask array;
* :func:`chunk_namespace` -- the Array API namespace of its chunks;
* :func:`row_blocks` -- X (one column chunk) with y and sample weights cut into the same row
  chunks, as one tuple of delayed blocks per row chunk;
* :func:`tree_reduce` + :func:`compute` -- ``chunk_fn`` on each row block, the results merged
  by ``merge_fn`` in a tree of fan-in 16 (O(chunks) tasks, depth log₁₆ chunks), all
  requested reductions evaluated by one ``dask.compute`` (X is read once per call);
* :func:`as_column` -- y (n,) as (n, 1), its keys new to the call;
* :func:`concrete` -- Dask arrays among some arrays computed together (``score``);
* :func:`map_rows` -- a function of a NumPy/CuPy chunk applied blockwise (O(chunks) tasks),
  lazy, its graph holding only the chunks of X and the small arrays the function closes over;
* :func:`stream_chunks` -- the row chunks of X (and y, weights) computed one at a time, in a
  shuffled order with their rows shuffled, the next one fetched while the current one is
  used: how the networks and mini-batch SGD train on data larger than memory.

Nothing here keeps a graph between calls: each reduction is built from the (persisted)
chunks of X and small client arrays, so a graph does not grow from one iteration to the next.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import array_api_compat as aac

from mlxp._backend import use_backend
from mlxp._compat import move, take_rows, to_numpy

__all__ = [
    "aligned_rows",
    "as_column",
    "chunk_namespace",
    "compute",
    "concrete",
    "dask_module",
    "is_dask_array",
    "map_rows",
    "predict_rows",
    "row_blocks",
    "stream_chunks",
    "tree_reduce",
]


def is_dask_array(x: Any) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (without importing Dask when it is not)."""
    return aac.is_dask_array(x)


def chunk_namespace(x: Any) -> Any:
    """The Array API namespace of the chunks of the Dask array ``x`` (NumPy or CuPy)."""
    return aac.array_namespace(x._meta)


def dask_module(name: str = "dask") -> Any:
    """``dask`` (or ``dask.array`` ...), imported on first use and typed as Any (untyped)."""
    return importlib.import_module(name)


def _rows(x: Any, row_chunks: tuple[int, ...]) -> Any:
    """``x`` cut into ``row_chunks`` along axis 0, one chunk along the others."""
    da = dask_module("dask.array")

    if not is_dask_array(x):
        x = da.from_array(x, chunks=(row_chunks, *tuple(x.shape[1:])))
    return x.rechunk((row_chunks, *tuple(-1 for _ in x.shape[1:])))


def aligned_rows(X: Any, *others: Any, min_rows: int = 1) -> list[Any]:
    """[X, others...] as Dask arrays cut into the same row chunks (``None`` others stay
    ``None``): X keeps its row chunks (merged where a chunk has fewer than ``min_rows``
    rows, as TSQR needs) and gets one column chunk; the others (y, weights: Dask or NumPy)
    are cut into the same rows."""
    rows = X.chunks[0]
    if min(rows) < min_rows:
        size = max(min_rows, max(rows))
        X = X.rechunk({0: size})
        rows = X.chunks[0]
    return [_rows(X, rows), *(None if o is None else _rows(o, rows) for o in others)]


def row_blocks(X: Any, *others: Any, min_rows: int = 1) -> list[tuple[Any, ...]]:
    """Delayed (X block, other blocks...) per row chunk of :func:`aligned_rows`; ``None``
    others stay ``None``."""
    arrays = aligned_rows(X, *others, min_rows=min_rows)
    k = len(arrays[0].chunks[0])
    parts = [  # optimize_graph=False: keys shared with y's graph
        [None] * k if a is None else a.to_delayed(optimize_graph=False).ravel() for a in arrays
    ]
    return list(zip(*parts, strict=True))


def _fold(merge_fn: Callable[[Any, Any], Any], *parts: Any) -> Any:
    return functools.reduce(merge_fn, parts)


def tree_reduce(
    chunk_fn: Callable[..., Any],
    merge_fn: Callable[[Any, Any], Any],
    blocks: Sequence[tuple[Any, ...]],
    *args: Any,
    fan_in: int = 16,
) -> Any:
    """A delayed ``merge_fn``-reduction of ``chunk_fn(*block, *args)`` over the blocks:
    each merge task folds up to ``fan_in`` results left to right (so up to 16 chunks cost
    one merge task, one round trip: a pass's latency, not its work, is what a deep binary
    tree adds)."""
    dask = dask_module()

    level = [dask.delayed(chunk_fn)(*block, *args) for block in blocks]
    fold = dask.delayed(functools.partial(_fold, merge_fn))
    while len(level) > 1:
        level = [fold(*level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
    return level[0]


def concrete(*arrays: Any) -> list[Any]:
    """The arrays with every Dask one computed (together, one ``dask.compute``)."""
    lazy = [i for i, a in enumerate(arrays) if is_dask_array(a)]
    out = list(arrays)
    for i, value in zip(lazy, compute(*(arrays[i] for i in lazy)) if lazy else (), strict=True):
        out[i] = value
    return out


def compute(*reductions: Any) -> tuple[Any, ...]:
    """Evaluate delayed reductions (or Dask arrays) together: one ``dask.compute``.

    Every graph goes unoptimised, so a key mlxp sends twice (a chunk of y in two passes)
    is always sent as the same task, never once as a fused variant: the distributed
    scheduler warns about a key redefined while it still holds it (it can deadlock)."""
    return tuple(dask_module().compute(*reductions, optimize_graph=False))


def as_column(y: Any) -> Any:
    """Dask y (n,) as (n, 1), under a name new to this call: the keys of a fit's column
    are never those of another fit still held by the scheduler (as ``y[:, None]``'s,
    named by a hash of y, would be)."""
    meta = y._meta[:, None]
    return y.map_blocks(
        _column, new_axis=1, chunks=(y.chunks[0], (1,)), meta=meta, name=f"column-{uuid4().hex}"
    )


def _column(block: Any) -> Any:
    return block[:, None]


def map_rows(fn: Callable[[Any], Any], X: Any, *, width: int | None, dtype: Any) -> Any:
    """``fn`` on each row chunk of X (n, ...): a lazy Dask array of shape (n,) (``width``
    None) or (n, width), O(chunks) tasks. ``fn`` maps a chunk (m, ...) to (m,) or
    (m, width) of ``dtype`` (a NumPy, CuPy or PyTorch dtype, or a string)."""
    if X.ndim > 1:
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    meta = _empty(X, dtype, (0,) if width is None else (0, 0))
    if width is None:
        drop = list(range(1, X.ndim))
        return X.map_blocks(fn, drop_axis=drop, chunks=(X.chunks[0],), meta=meta)
    chunks = (X.chunks[0], (width,))
    if X.ndim == 1:
        return X.map_blocks(fn, new_axis=[1], chunks=chunks, meta=meta)
    return X.map_blocks(fn, drop_axis=list(range(2, X.ndim)), chunks=chunks, meta=meta)


def _empty(X: Any, dtype: Any, shape: tuple[int, ...]) -> Any:
    import numpy

    kind = numpy.dtype(str(dtype).rsplit(".", 1)[-1])  # torch.float32 -> float32
    if kind.kind not in "biuf":  # string labels: NumPy whatever the chunks
        return numpy.empty(shape, dtype=kind)
    return chunk_namespace(X).empty(shape, dtype=kind)


def _on_host_chunk(method: Callable[[Any], Any], block: Any) -> Any:
    with use_backend(None):  # compute where the chunk is, whatever the client chose
        return method(block)


def predict_rows(method: Callable[[Any], Any], X: Any, *, width: int | None, dtype: Any) -> Any:
    """An estimator's ``method`` on each row chunk of Dask X, lazily: shape (n,) for
    ``width`` None, else (n, width), as ``method`` returns for a chunk. The graph holds
    X's chunks and the method (its estimator's fitted arrays as constants): O(chunks)
    tasks, never the fit."""
    return map_rows(functools.partial(_on_host_chunk, method), X, width=width, dtype=dtype)


Chunk = tuple[Any, ...]


def _compute_blocks(arrays: Sequence[Any], i: int) -> Chunk:
    """Block i of each array (None stays None), computed together: one ``dask.compute``.
    The blocks go as unoptimised delayed values, as :func:`row_blocks`' do, so a key
    shared with an earlier reduction (y[:, None] of y's chunks, say) is sent with the same
    task, never a fused variant (which the scheduler warns about: it can deadlock)."""
    present = [
        a.blocks[i].to_delayed(optimize_graph=False).ravel()[0] for a in arrays if a is not None
    ]
    values = iter(compute(*present))
    return tuple(None if a is None else next(values) for a in arrays)


def chunk_plan(sizes: Sequence[int], rng: Any, xp: Any) -> tuple[list[int], list[Any]]:
    """(order of the chunks, row permutation of each chunk in that order) drawn from
    ``rng`` in that sequence: the chunk order first (nothing drawn for one chunk), then one
    permutation per chunk. ``rng`` None: stored order, rows as stored (None)."""
    k = len(sizes)
    if rng is None:
        return list(range(k)), [None] * k
    order = [int(i) for i in to_numpy(rng.permutation(k, xp=xp))] if k > 1 else [0]
    return order, [rng.permutation(sizes[i], xp=xp) for i in order]


def _permuted(c: Any, perm: Any) -> Any:
    """c's rows in the order of ``perm`` (a host array), moved to c's library and device."""
    return take_rows(c, move(perm, aac.array_namespace(c), aac.device(c)))


def stream_chunks(
    arrays: Sequence[Any],
    rng: Any,
    *,
    fetch: Callable[[int], Chunk] | None = None,
    prepare: Callable[[Chunk], Chunk] | None = None,
    where: Callable[[], Any] = contextlib.nullcontext,
) -> Iterator[Chunk]:
    """The row chunks of Dask ``arrays`` (chunked alike along axis 0; None entries stay
    None), one tuple of chunk-library arrays at a time, in the order and row order of
    :func:`chunk_plan` (drawn here, on the calling thread, so the generator's sequence never
    depends on the prefetch). Chunk j + 1 is fetched (``fetch(i)``, by default one
    ``dask.compute`` of the blocks), its rows gathered and ``prepare``-d (moved to the
    compute device, cast) by a background thread while chunk j is used; a chunk is
    released before the next one is yielded, so at most two are held."""
    fetch = fetch or functools.partial(_compute_blocks, arrays)
    first = next(a for a in arrays if a is not None)
    sizes = [int(s) for s in first.chunks[0]]
    import array_api_compat.numpy as host

    # drawn on the host, then moved to each array's own library (X's chunks may be CuPy's
    # and y's NumPy's: NumPy cannot index by a CuPy permutation)
    order, perms = chunk_plan(sizes, rng, host)

    def load(j: int) -> Chunk:
        chunk = fetch(order[j])
        with where():  # the caller's device and stream (mlxp._device.consumer_context)
            if perms[j] is not None:
                chunk = tuple(None if c is None else _permuted(c, perms[j]) for c in chunk)
            return chunk if prepare is None else prepare(chunk)

    with ThreadPoolExecutor(1, thread_name_prefix="mlxp-prefetch") as pool:
        pending: Future[Chunk] = pool.submit(load, 0)
        for j in range(len(order)):
            chunk = pending.result()
            if j + 1 < len(order):
                pending = pool.submit(load, j + 1)
            yield chunk
            del chunk  # released before the next chunk is used
