"""Where training batches come from: arrays in memory, or row chunks of a Dask array
streamed to the compute device one chunk ahead.

A *source* is what :func:`mlxp.nn.training.fit` reads: ``n_samples``,
``n_batches(batch_size)`` and ``batches(rng, batch_size)``, which yields (xb, yb) pairs on
the model's device in the model's dtype: shuffled when ``rng`` is a generator, in stored
order when it is None (evaluation passes). :class:`InMemory` holds two arrays,
:class:`DaskChunks` streams the row chunks of a Dask pair.

Streaming (data larger than memory)
-----------------------------------
Each epoch draws, on the calling thread and from the model's one portable generator,
first the order of the chunks (a permutation of the k chunks; nothing is drawn when
k = 1), then one row permutation per chunk in that order. Chunk j + 1 is then computed,
gathered in its permuted row order and moved to the compute device by a background
thread while chunk j trains; chunk j is released before chunk j + 1 trains, so at most
two chunks are held. Batches are cut **within** a chunk: a chunk of s rows gives
⌈s / batch_size⌉ batches, the last one shorter when batch_size does not divide s (a
batch never mixes two chunks). The first chunk of an epoch is not overlapped (its draws
follow the previous epoch's), and each chunk costs one scheduler round trip (a few to
tens of milliseconds on ``distributed``), which a chunk should take longer to train.

Same seed, same model: all draws come from the model's generator in a fixed order, so a
seed and a chunking fix the whole run, on every backend and scheduler. A single-chunk
Dask array trains exactly as the same data in memory; with several chunks the shuffle is
by chunk (rows of one chunk stay together within an epoch), so the weights differ from
the in-memory run's while the accuracy reached is the same. Data-parallel training
across GPU workers is on paper in ``docs/user_guide/scaling_out.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from array_api_compat import array_namespace, is_dask_namespace
from array_api_compat import device as _device

from mlxp._backend import get_backend, placement
from mlxp._compat import index_dtype, move, take_rows
from mlxp._dask import compute, map_rows, stream_chunks
from mlxp._dask import is_dask_array as is_dask
from mlxp._device import consumer_context
from mlxp._validation import encode_labels, labels_to_host, to_array

__all__ = [
    "GATHER_VALUES",
    "BlockwiseClassifier",
    "DaskChunks",
    "InMemory",
    "blockwise",
    "class_indices",
    "gather_block",
    "is_dask",
    "known_chunks",
    "partial_fit_classes",
    "predict_lazily",
    "source",
    "source_on_model",
    "split_chunks",
]


GATHER_VALUES = 2**22
"""Shuffled batches are gathered from memory this many values (of X) at a time."""


class InMemory:
    """Arrays X (n, ...) and y (n, ...) on the model's device, in the model's dtype."""

    n_samples: int

    def __init__(self, X: Any, y: Any) -> None:
        self.X, self.y = X, y
        self.n_samples = X.shape[0]

    def n_batches(self, batch_size: int) -> int:
        return math.ceil(self.n_samples / batch_size)

    def batches(self, rng: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """Batches of ``batch_size`` rows, taken in one permutation of all rows drawn from
        ``rng`` (None: as stored, as views). The rows of several consecutive batches
        (about :data:`GATHER_VALUES` values) are gathered by one op, then sliced: a
        fraction of a gather per step, the same batches as one gather each."""
        X, y, n = self.X, self.y, self.n_samples
        xp = array_namespace(X)
        if rng is None:
            yield from _slices(X, y, batch_size)
            return
        order = rng.permutation(n, xp=xp, device=_device(X))
        per_row = max(1, math.prod(X.shape[1:]))
        block = batch_size * max(1, GATHER_VALUES // (batch_size * per_row))
        for start in range(0, n, block):
            rows = order[start : min(start + block, n)]
            yield from _slices(take_rows(X, rows, xp=xp), take_rows(y, rows, xp=xp), batch_size)

    def blocks(
        self, rng: Any, batch_size: int, steps: int, gather: Callable[..., Any] | None = None
    ) -> Iterator[tuple[Any, Any, Any]]:
        """The batches of :meth:`batches` (the same rows in the same order, the same draw
        from ``rng``), ``steps`` at a time, stacked for a block of steps
        (:func:`mlxp.nn.step.run_block`): (xs (k, b, ...), ys (k, b, ...), row weights
        (k, b)), b = ``batch_size``, k = ``steps`` but in the last block. The last batch is
        padded to b rows of weight 0 (copies of row 0), so every batch has one shape. Each
        block is one call of ``gather`` (:func:`gather_block`, or a compiled form of it:
        one dispatch per block on JAX, where it is jitted)."""
        X, y, n = self.X, self.y, self.n_samples
        gather = gather or gather_block
        order = (
            None if rng is None else rng.permutation(n, xp=array_namespace(X), device=_device(X))
        )
        total = math.ceil(n / batch_size) * batch_size
        for lo in range(0, total, steps * batch_size):
            k = min(steps, (total - lo) // batch_size)
            yield gather(X, y, order, lo, n, steps=k, batch_size=batch_size)


def gather_block(
    X: Any, y: Any, order: Any, start: Any, n: Any, *, steps: int, batch_size: int
) -> tuple[Any, Any, Any]:
    """Positions ``start`` … ``start`` + k·b − 1 of an epoch's row order as k = ``steps``
    batches of b = ``batch_size`` rows: (xs (k, b, ...), ys (k, b, ...), row weights
    (k, b)). Position p < n is row ``order[p]`` (``order`` None: row p), weight 1; past n,
    row 0, weight 0 (the padding of the last batch). Standard operations only; ``start``
    and n may be 0-d integer arrays, so one compiled program serves every block and data
    size of a shape."""
    xp, dev = array_namespace(X), _device(X)
    positions = start + xp.arange(steps * batch_size, dtype=index_dtype(xp, dev), device=dev)
    inside = positions < n
    rows = xp.where(inside, positions, xp.zeros_like(positions))
    if order is not None:
        rows = xp.where(inside, take_rows(order, rows, xp=xp), xp.zeros_like(positions))
    xs = xp.reshape(take_rows(X, rows, xp=xp), (steps, batch_size, *X.shape[1:]))
    ys = xp.reshape(take_rows(y, rows, xp=xp), (steps, batch_size, *y.shape[1:]))
    return xs, ys, xp.reshape(xp.astype(inside, X.dtype), (steps, batch_size))


def _slices(X: Any, y: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """(X, y) cut into consecutive batches of ``batch_size`` rows (views; the last shorter)."""
    n = X.shape[0]
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)  # in bounds: the standard leaves larger stops undefined
        yield X[lo:hi, ...], y[lo:hi, ...]


class DaskChunks:
    """Row chunks of Dask arrays X and y (chunked alike along axis 0 only), streamed.
    ``fetch(i)`` returns chunk i of (X, y) as arrays of the chunk library (by default
    :func:`~mlxp._dask.stream_chunks`' one ``dask.compute`` of the two blocks)."""

    def __init__(
        self,
        X: Any,
        y: Any,
        xp: Any,
        device: Any,
        dtype: Any,
        fetch: Callable[[int], tuple[Any, Any]] | None = None,
    ) -> None:
        self.X, self.y, self.xp, self.device, self.dtype = X, y, xp, device, dtype
        self.sizes = [int(s) for s in X.chunks[0]]
        self.n_samples = sum(self.sizes)
        self.fetch = fetch

    def n_batches(self, batch_size: int) -> int:
        return sum(math.ceil(s / batch_size) for s in self.sizes)

    def _prepare(self, chunk: tuple[Any, ...]) -> tuple[Any, ...]:
        """A chunk (its rows in planned order) moved to the compute device, X cast to the
        model's dtype. Runs in the prefetch thread, in the training thread's device and
        stream (:func:`mlxp._device.consumer_context`)."""
        xc, yc = move(chunk[0], self.xp, self.device), move(chunk[1], self.xp, self.device)
        return (xc if xc.dtype == self.dtype else self.xp.astype(xc, self.dtype)), yc

    def batches(self, rng: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """Batches cut within each chunk, the chunks streamed by
        :func:`~mlxp._dask.stream_chunks` (the next one prefetched)."""
        where = consumer_context(self.xp, self.device)
        chunks = stream_chunks(
            (self.X, self.y), rng, fetch=self.fetch, prepare=self._prepare, where=where
        )
        for xc, yc in chunks:
            yield from _slices(xc, yc, batch_size)
            del xc, yc  # released before the next chunk trains


def known_chunks(X: Any, y: Any = None) -> tuple[Any, Any]:
    """(X, y) as they are unless one is a Dask array: then both are, the other wrapped
    (as one chunk), with every row-chunk size known (computed once, by a pass over the
    blocks' shapes, where Dask lost them, e.g. after boolean indexing)."""
    if not (is_dask(X) or is_dask(y)):
        return X, y
    import dask.array as da

    out = []
    for a, name in ((X, "X"), (y, "y")):
        if a is not None and not is_dask(a):
            a = da.from_array(to_array(a, name), chunks=-1)
        elif a is not None and any(math.isnan(s) for s in a.chunks[0]):
            a = a.compute_chunk_sizes()
        out.append(a)
    return out[0], out[1]


def _as_pair(X: Any, y: Any) -> tuple[Any, Any]:
    """Dask X and y chunked alike by rows (y rechunked, or wrapped, to X's row chunks;
    X rechunked to whole rows); ValueError when their lengths differ."""
    import dask.array as da

    X, y = known_chunks(X, y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} samples but y has {y.shape[0]} (X is a Dask array of "
            f"row chunks {X.chunks[0][:4]}...)."
        )
    if X.ndim > 1 and any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    rows = (X.chunks[0], *tuple((s,) for s in y.shape[1:]))
    y = y.rechunk(rows) if is_dask(y) else da.from_array(y, chunks=rows)
    return X, y


def _compute_place(X: Any) -> tuple[Any, Any]:
    """Where chunks of Dask ``X`` train: the chosen backend (unless it is Dask itself),
    else the chunk library (NumPy, or CuPy under dask-cuda) on its device."""
    backend = get_backend()
    if backend is not None and not is_dask_namespace(backend.xp):
        return backend.xp, backend.device
    return array_namespace(X._meta), _device(X._meta)


def source(model: Any, X: Any, y: Any) -> InMemory | DaskChunks:
    """The training source of (X, y), the model built or moved where it trains (in place);
    ValueError for empty or mismatched data."""
    if is_dask(X) or is_dask(y):
        X, y = _as_pair(X, y)
        xp, dev = _compute_place(X)
        model.placed(move(X._meta, xp, dev), xp, dev, in_place=True)
        if X.shape[0] == 0:
            raise ValueError("fit needs at least one sample; X is empty.")
        return DaskChunks(X, y, xp, dev, model.dtype)
    X, y = to_array(X, "X"), to_array(y, "y")
    place = placement(X=X, y=y)
    _, X = model.placed(place.to_compute(X), place.xp, place.device, in_place=True)
    n = X.shape[0]
    if n == 0:
        raise ValueError("fit needs at least one sample; X is empty.")
    if y.shape[0] != n:
        raise ValueError(f"X has {n} samples but y has {y.shape[0]}.")
    return InMemory(X, place.to_compute(y))


def source_on_model(model: Any, X: Any, y: Any) -> InMemory | DaskChunks:
    """(X, y) as a source on the device the (built) model lives on: validation data."""
    xp, dev = model.xp, model.device
    if is_dask(X) or is_dask(y):
        return DaskChunks(*_as_pair(X, y), xp, dev, model.dtype)
    X = move(to_array(X, "X"), xp, dev)
    X = X if X.dtype == model.dtype else xp.astype(X, model.dtype)
    return InMemory(X, move(to_array(y, "y"), xp, dev))


def predict_lazily(model: Any, X: Any, batch_size: int | None) -> Any:
    """``model.predict`` of each row chunk of Dask X, lazily (:func:`blockwise`), the model
    built first (on the chunk library) if it is not; ValueError unless each sample's output
    is a vector."""
    X, _ = known_chunks(X)
    if not model.built:
        cxp, dev = array_namespace(X._meta), _device(X._meta)
        model.placed(move(X._meta, cxp, dev), cxp, dev, in_place=True)
    shape = model.output_shape(tuple(X.shape[1:]))
    if len(shape) != 1:
        raise ValueError(
            f"predict on a Dask array needs one output vector per sample; this model gives "
            f"outputs of shape {shape}. Compute X (or its chunks) and predict in memory."
        )
    return blockwise(lambda block: model.predict(block, batch_size), X, shape[0], model.dtype)


def blockwise(method: Callable[[Any], Any], X: Any, width: int | None, dtype: Any) -> Any:
    """``method`` (an in-memory prediction of a fitted estimator) applied to each row
    chunk of Dask X, lazily (:func:`~mlxp._dask.map_rows`): a graph of one task per chunk
    over X's, holding the fitted estimator once and never its fit. Output (n,) if
    ``width`` is None, else (n, width)."""
    return map_rows(method, X, width=width, dtype=dtype)


def class_indices(y: Any, classes: Any = None) -> tuple[Any, Any]:
    """(classes, indices): the sorted classes (``classes`` if given, else those of y) on
    the host, and the int64 index of each label of y among them: a NumPy array for y in
    memory, a lazy blockwise ``searchsorted`` for Dask y, whose classes come from one tree
    reduction of per-chunk uniques (y is never gathered on the client). Labels are
    checked as :func:`~mlxp._validation.encode_labels` does; ValueError for a label of
    y outside the given ``classes``."""
    if is_dask(y):
        import dask.array as da

        found, _ = encode_labels(compute(da.unique(y))[0])
    else:
        found, indices = encode_labels(y)
    if classes is None:
        classes = found
        if not is_dask(y):
            return classes, indices
    else:
        classes, _ = encode_labels(classes)
        unknown = [c for c in found.tolist() if c not in set(classes.tolist())]
        if unknown:
            raise ValueError(f"y contains labels not in classes={classes.tolist()}: {unknown}.")
    if not is_dask(y):  # y may be on a device: looked up on the host, as encode_labels does
        hxp = array_namespace(classes)
        labels = hxp.asarray(labels_to_host(y))
        return classes, hxp.astype(hxp.searchsorted(classes, labels), hxp.int64)
    xp = array_namespace(y._meta)
    host = move(classes, xp, _device(y._meta))

    def index(block: Any) -> Any:
        return xp.astype(xp.searchsorted(host, block), xp.int64)

    return classes, y.map_blocks(index, meta=xp.empty((0,), dtype=xp.int64))


def partial_fit_classes(fitted: Any, classes: Any) -> Any:
    """The classes a ``partial_fit`` call encodes its labels with, as scikit-learn's:
    ``classes`` on the first call (``fitted`` None), where they are required; the fitted
    ones after, ``classes`` (if given again) being the same."""
    if fitted is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if fitted is None:
        return classes
    if classes is not None and encode_labels(classes)[0].tolist() != fitted.tolist():
        raise ValueError(
            f"`classes={list(classes)!r}` is not the same as on last call to partial_fit, "
            f"was: {fitted.tolist()!r}."
        )
    return fitted


def split_chunks(X: Any, y: Any, fraction: float, rng: Any) -> tuple[Any, Any, Any]:
    """(X, y of the training rows, (X, y) of the validation rows) of Dask X, y: in each
    row chunk of s rows, round(fraction·s) rows (at least one in all) drawn by a
    permutation from ``rng`` are set aside. The training rows stay lazy (one task per
    chunk), in the drawn order; the validation rows are computed, moved where the chunks
    train (they must fit in memory). For one chunk this is the in-memory split."""
    import dask.array as da

    X, y = _as_pair(X, y)
    sizes = [int(s) for s in X.chunks[0]]
    n_val = [round(fraction * s) for s in sizes]
    n_val[0] = max(n_val[0], 1 - min(1, sum(n_val)))
    if sum(n_val) >= sum(sizes):
        raise ValueError(
            f"early_stopping: validation_fraction={fraction} of {sum(sizes)} sample(s) sets "
            f"{sum(n_val)} aside for validation and leaves no sample to train on."
        )
    cxp = array_namespace(X._meta)
    train: list[tuple[Any, Any]] = []
    held: list[tuple[Any, Any]] = []
    for i, (size, v) in enumerate(zip(sizes, n_val, strict=True)):
        rows = rng.permutation(size, xp=cxp)
        for part, chosen in ((held, rows[:v]), (train, rows[v:])):
            if chosen.shape[0]:
                part.append((X.blocks[i][chosen], y.blocks[i][chosen]))
    X_val, y_val = compute(
        da.concatenate([a for a, _ in held]), da.concatenate([b for _, b in held])
    )
    xp, dev = _compute_place(X)
    X_tr, y_tr = da.concatenate([a for a, _ in train]), da.concatenate([b for _, b in train])
    return X_tr, y_tr, (move(X_val, xp, dev), move(y_val, xp, dev))


class BlockwiseClassifier:
    """Mixin of a fitted classifier: ``predict``, ``predict_proba`` and
    ``predict_log_proba`` of Dask X are lazy Dask arrays computed by row chunk
    (:func:`blockwise`) with the in-memory methods of the next class in the MRO;
    any other input goes to those methods directly."""

    classes_: Any  # set by fit, as coefs_ (the output dtype is the weights')
    coefs_: list[Any]

    def predict(self, X: Any) -> Any:
        """The most probable label of each sample; lazy for Dask X."""
        if not is_dask(X):
            return super().predict(X)  # type: ignore[misc]
        return blockwise(super().predict, X, None, self.classes_.dtype)  # type: ignore[misc]

    def predict_proba(self, X: Any) -> Any:
        """P(class | x), shape (n_samples, n_classes); lazy for Dask X."""
        if not is_dask(X):
            return super().predict_proba(X)  # type: ignore[misc]
        method = super().predict_proba  # type: ignore[misc]
        return blockwise(method, X, len(self.classes_), self.coefs_[0].dtype)

    def predict_log_proba(self, X: Any) -> Any:
        """log P(class | x); lazy for Dask X."""
        if not is_dask(X):
            return super().predict_log_proba(X)  # type: ignore[misc]
        method = super().predict_log_proba  # type: ignore[misc]
        return blockwise(method, X, len(self.classes_), self.coefs_[0].dtype)
