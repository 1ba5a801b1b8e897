"""What the Array API standard lacks and mlxp needs, in one place.

Model code calls only standard functions; the few things the standard does not
define live here, each as a portable fallback written in standard operations
with, where a library offers something better, a small named fast path beside it:

* :class:`Generator` -- random numbers that are the same on every backend;
* :func:`to_numpy` / :func:`from_host` / :func:`move` -- arrays to the host, from the
  host, or to another namespace/device;
* :func:`default_float` / :func:`index_dtype` -- a device's default dtypes;
* :func:`synchronize` -- wait for queued device work (for timing);
* :func:`scatter_add` -- ``out[index[i]] += values[i]`` with repeated indices;
* :func:`slice_add` -- parts summed into regions of one array (the adjoint of reading
  convolution windows as strided slices);
* :func:`argmax` -- in the default index dtype, also on devices without int64;
* :func:`on_host` -- whether reading an array back to the host is free.

Ground floor: imports nothing from mlxp.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import array_api_compat as aac
import numpy as np

__all__ = [
    "Generator",
    "argmax",
    "check_random_state",
    "default_float",
    "from_host",
    "index_dtype",
    "move",
    "on_host",
    "scatter_add",
    "scatters",
    "slice_add",
    "synchronize",
    "take_rows",
    "to_numpy",
]


# --------------------------------------------------------------------------- conversion
def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host (PyTorch's
    bfloat16, which NumPy lacks, as float32: every bfloat16 value is one)."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    if aac.is_torch_array(x):
        x = x.detach().cpu().resolve_conj()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    if aac.is_cupy_array(x):
        return x.get()
    if aac.is_jax_array(x):
        return np.asarray(x)
    if hasattr(x, "__dlpack__"):  # array-api-strict and other standard libraries
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass
    return np.asarray(x)


def from_host(a: Any, xp: Any, *, device: Any = None, dtype: Any = None) -> Any:
    """A NumPy array or Python number as an array of ``xp`` on ``device`` (``dtype``: the
    one to cast to, if any): ``xp.asarray``, or on JAX ``jax.device_put`` of a NumPy copy
    (``jax.numpy.asarray(..., device=d)`` goes through a sharding constraint, about 0.3 ms
    a call on a CPU, three times the transfer itself; ``device_put`` alone would share the
    caller's memory on a CPU, where ``asarray`` copies)."""
    if aac.is_jax_namespace(xp):
        import jax

        return jax.device_put(np.array(a, dtype=dtype, copy=True), device)
    return xp.asarray(a, dtype=dtype, device=device)


def move(x: Any, xp: Any, device: Any) -> Any:
    """Return ``x`` as an array of namespace ``xp`` on ``device`` (no copy if already there)."""
    if _namespace_of(x) is xp:
        if aac.device(x) == device:
            return x
        wide = next((w for w in _NARROWER if x.dtype == getattr(xp, w, None)), None)
        if wide is not None and not _supports(xp, device, wide):
            x = xp.astype(x, getattr(xp, _NARROWER[wide]))
        return aac.to_device(x, device)
    host = to_numpy(x)
    narrower = _NARROWER.get(host.dtype.name)
    if narrower is not None and not _supports(xp, device, host.dtype.name):
        host = host.astype(narrower)
    return from_host(host, xp, device=device)


# 64-bit dtypes some devices lack (Apple's MPS, array-api-strict's no_float64 and no_x64)
# and what move() narrows them to there.
_NARROWER = {"float64": "float32", "complex128": "complex64", "int64": "int32"}


def _supports(xp: Any, device: Any, dtype_name: str) -> bool:
    return dtype_name in _info(xp, "dtypes", device)


def _info(xp: Any, query: str, device: Any) -> Any:
    """``xp.__array_namespace_info__().<query>(device=device)``; libraries whose info
    functions take no device answer for their default one. JAX's answers are kept per
    query, device and x64 mode (which changes them): JAX builds them anew at each call,
    0.3 ms, twice per fit. Others are asked each time (PyTorch's default dtype can change)."""
    if not hasattr(xp, "__name__") or not aac.is_jax_namespace(xp):
        return _ask_info(xp, query, device)
    key = (query, device, bool(sys.modules["jax"].config.jax_enable_x64))
    if key not in _JAX_INFO:
        _JAX_INFO[key] = _ask_info(xp, query, device)
    return _JAX_INFO[key]


_JAX_INFO: dict[Hashable, Any] = {}


def _ask_info(xp: Any, query: str, device: Any) -> Any:
    method = getattr(xp.__array_namespace_info__(), query)
    try:
        return method(device=device)
    except TypeError:
        return method()


def _namespace_of(x: Any) -> Any:
    try:
        return aac.array_namespace(x)
    except TypeError:
        return None


def default_float(xp: Any, device: Any) -> Any:
    """The real floating dtype ``xp`` uses by default on ``device``."""
    return _info(xp, "default_dtypes", device)["real floating"]


def synchronize(x: Any = None) -> None:
    """Block until the work queued for ``x`` (an array) is finished; a no-op on eager CPUs."""
    if x is None:
        return
    if aac.is_jax_array(x):
        x.block_until_ready()
    elif aac.is_torch_array(x) and x.device.type == "cuda":
        import torch

        torch.cuda.synchronize(x.device)
    elif aac.is_cupy_array(x):
        x.device.synchronize()


# --------------------------------------------------------------------------- random numbers
class Generator:
    """Random numbers that are identical on every backend and device.

    Draws on the host with NumPy's PCG64 bit generator, in float64, then casts
    and moves the result to the requested namespace and device. A seed thus fixes
    the numbers everywhere: the basis of "same seed, same model on every backend".
    The host draw costs a host-to-device copy, never a device-to-host read.
    """

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        if isinstance(seed, np.random.Generator):
            self._rng = seed
        else:
            self._rng = np.random.default_rng(seed)

    def _out(self, a: np.ndarray, xp: Any, dtype: Any, device: Any) -> Any:
        if dtype is None:
            dtype = default_float(xp, device)
        return from_host(a, xp, device=device, dtype=dtype)

    def normal(self, shape, *, xp, device=None, dtype=None, loc=0.0, scale=1.0) -> Any:
        """Samples of N(loc, scale²) of the given shape."""
        return self._out(self._rng.normal(loc, scale, size=shape), xp, dtype, device)

    def uniform(self, shape, *, xp, device=None, dtype=None, low=0.0, high=1.0) -> Any:
        """Samples of U[low, high) of the given shape."""
        return self._out(self._rng.uniform(low, high, size=shape), xp, dtype, device)

    def permutation(self, n: int, *, xp, device=None) -> Any:
        """A random permutation of ``range(n)`` as an index array."""
        perm = self._rng.permutation(n)
        return from_host(perm, xp, device=device, dtype=index_dtype(xp, device))

    def spawn_seed(self) -> int:
        """A fresh int seed drawn from this generator (to seed a model from a random_state)."""
        return int(self._rng.integers(0, 2**31 - 1))

    def integers(self, low: int, high: int, shape, *, xp, device=None) -> Any:
        """Uniform integers in [low, high) as an index array."""
        draw = self._rng.integers(low, high, size=shape)
        return from_host(draw, xp, device=device, dtype=index_dtype(xp, device))


def index_dtype(xp: Any, device: Any) -> Any:
    """The default integer dtype ``xp`` uses for indices on ``device``."""
    return _info(xp, "default_dtypes", device)["indexing"]


def check_random_state(seed: Any) -> Generator:
    """A :class:`Generator` from ``None``, an int, a NumPy Generator or a :class:`Generator`."""
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return Generator(int(seed.randint(0, 2**31 - 1)))
    if seed is None or isinstance(seed, np.random.Generator):
        return Generator(seed)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return Generator(int(seed))
    raise ValueError(f"random_state must be None, an int or a Generator; got {seed!r}.")


# --------------------------------------------------------------------------- scatter / windows
def scatters(xp: Any) -> bool:
    """Whether :func:`scatter_add` has ``xp``'s own scatter (NumPy, PyTorch, JAX, CuPy);
    elsewhere it loops over the largest multiplicity of an index."""
    own = (
        aac.is_numpy_namespace,
        aac.is_torch_namespace,
        aac.is_jax_namespace,
        aac.is_cupy_namespace,
    )
    return any(is_library(xp) for is_library in own)


def scatter_add(n: int, index: Any, values: Any, *, xp: Any = None) -> Any:
    """Sum rows of ``values`` into ``n`` slots: ``out[index[i]] += values[i]``.

    ``index`` has shape (m,), ``values`` shape (m, ...); the result has shape (n, ...).
    Repeated indices accumulate. Portable fallback: the scatter turned into K gathers,
    K the largest multiplicity of an index: slot s sums ``values[inv[s, k]]`` over k,
    with ``inv`` (n, K) built on the host from ``index`` (padding points at a zero row).
    O((n + m)·K) time and memory, exact; the library's own scatter where there is one.
    """
    xp = xp or aac.array_namespace(values)
    dev = aac.device(values)
    tail = tuple(values.shape[1:])
    if aac.is_numpy_namespace(xp):
        out = np.zeros((n, *tail), dtype=values.dtype)
        np.add.at(out, np.asarray(index), np.asarray(values))
        return out
    if aac.is_torch_namespace(xp):
        out = xp.zeros((n, *tail), dtype=values.dtype, device=dev)
        return out.index_add_(0, index.to(dtype=xp.int64), values)
    if aac.is_jax_namespace(xp):
        return xp.zeros((n, *tail), dtype=values.dtype).at[index].add(values)
    if aac.is_cupy_namespace(xp):
        import cupyx

        with dev:  # zeros ignores device= on CuPy: the current device would take it
            out = xp.zeros((n, *tail), dtype=values.dtype)
        cupyx.scatter_add(out, index, values)
        return out
    inverse = _inverse_index(to_numpy(index), n)  # (n, K) positions into values, m = none
    flat = xp.reshape(values, (values.shape[0], -1))
    flat = xp.concat([flat, xp.zeros((1, flat.shape[1]), dtype=flat.dtype, device=dev)], axis=0)
    out = xp.zeros((n, flat.shape[1]), dtype=flat.dtype, device=dev)
    for k in range(inverse.shape[1]):
        rows = xp.asarray(inverse[:, k], dtype=index_dtype(xp, dev), device=dev)
        out = out + xp.take(flat, rows, axis=0)
    return xp.reshape(out, (n, *tail))


def _inverse_index(index: np.ndarray, n: int) -> np.ndarray:
    """For each slot s < n, the positions i with index[i] = s, padded with len(index)."""
    m = index.shape[0]
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=n)[:n]
    width = max(int(counts.max(initial=0)), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(m) - np.repeat(starts, counts)  # position of each sorted entry in its slot
    inverse = np.full((n, width), m, dtype=np.int64)
    inverse[index[order], rank] = order
    return inverse


def slice_add(
    shape: tuple[int, ...], regions: list[tuple[slice, ...]], parts: list[Any], *, xp: Any = None
) -> Any:
    """A zero array of ``shape`` with ``out[region] += part`` for each region and part.

    Regions are tuples of slices (positive steps), one per axis; where they overlap the
    parts sum (the adjoint of reading each region: a transposed convolution sums window
    gradients this way). NumPy, CuPy and PyTorch add in place into one buffer, JAX with
    ``.at[region].add``; the portable fallback is one :func:`scatter_add` of all parts
    through the flat positions of their regions.
    """
    xp = xp or aac.array_namespace(parts[0])
    dtype, dev = parts[0].dtype, aac.device(parts[0])
    in_place = (aac.is_numpy_namespace, aac.is_cupy_namespace, aac.is_torch_namespace)
    if any(is_library(xp) for is_library in in_place):
        out = xp.zeros(shape, dtype=dtype, device=dev)
        with _ufunc_buffer(out[regions[0]], parts[0]):  # the callers' regions share a layout
            for region, part in zip(regions, parts, strict=True):
                out[region] += part
        return out
    if aac.is_jax_namespace(xp):
        out = xp.zeros(shape, dtype=dtype)
        for region, part in zip(regions, parts, strict=True):
            out = out.at[region].add(part)
        return out
    index = xp.concat([_flat_positions(shape, region, xp, dev) for region in regions])
    values = xp.concat([xp.reshape(part, (-1,)) for part in parts])
    return xp.reshape(scatter_add(math.prod(shape), index, values, xp=xp), shape)


_SCOPED_BUFFER = int(np.__version__.split(".")[0]) >= 2
"""NumPy 2 scopes ``setbufsize`` to the ``errstate`` context (a context variable)."""


@contextmanager
def _ufunc_buffer(*views: Any) -> Iterator[None]:
    """NumPy's ufuncs copy operands whose contiguous runs are short against their buffer
    (8192 elements) through it; for runs of 128 to 8191 elements, a buffer of the views'
    shortest run (rounded down to a multiple of 16, as NumPy asks) skips the copies, up
    to twice as fast. NumPy 2 only (scoped there); nothing for other libraries."""
    if not (_SCOPED_BUFFER and all(type(v) is np.ndarray for v in views)):
        yield
        return
    run = min(_contiguous_run(v) for v in views)
    with np.errstate():
        if 128 <= run < np.getbufsize():
            np.setbufsize(run - run % 16)
        yield


def _contiguous_run(view: Any) -> int:
    """The elements of the innermost run of consecutive memory of a NumPy array."""
    run, step = 1, view.itemsize
    for n, stride in zip(reversed(view.shape), reversed(view.strides), strict=True):
        if n > 1 and stride != step:
            break
        run, step = run * n, step * n
    return run


def _flat_positions(shape: tuple[int, ...], region: tuple[slice, ...], xp: Any, dev: Any) -> Any:
    """The row-major flat positions of the elements of ``region`` in ``shape``, flattened."""
    dt = index_dtype(xp, dev)
    position, step = xp.zeros((1,) * len(shape), dtype=dt, device=dev), 1
    for axis in reversed(range(len(shape))):
        start, stop, stride = region[axis].indices(shape[axis])
        along = xp.arange(start, stop, stride, dtype=dt, device=dev) * step
        position = position + xp.reshape(
            along, tuple(-1 if a == axis else 1 for a in range(len(shape)))
        )
        step *= shape[axis]
    return xp.reshape(position, (-1,))


# --------------------------------------------------------------------------- reductions
def take_rows(x: Any, rows: Any, *, xp: Any = None) -> Any:
    """``x[rows, ...]``: the rows of ``x`` (n, ...) at the non-negative integer indices
    ``rows`` (m,), the standard's ``take`` along axis 0. PyTorch: one gather by tensor
    indexing, where array-api-compat's ``take`` first wraps negative indices (3 more ops)."""
    xp = _namespace_of(x) if xp is None else xp
    if aac.is_torch_namespace(xp):
        return x[rows]
    return xp.take(x, rows, axis=0)


def argmax(x: Any, axis: int = -1) -> Any:
    """Index of the first maximum along ``axis``, in the device's default index dtype.

    ``xp.argmax`` where it can; on devices without int64 (array-api-strict's no_x64,
    whose argmax still produces int64), the first index reaching the maximum, found
    with ``where`` and ``min`` over ``arange``.
    """
    xp = aac.array_namespace(x)
    dev = aac.device(x)
    dtype = index_dtype(xp, dev)
    if dtype == getattr(xp, "int64", None):
        return xp.argmax(x, axis=axis)
    axis = axis % x.ndim
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    positions = xp.reshape(xp.arange(n, dtype=dtype, device=dev), tuple(shape))
    at_max = x == xp.max(x, axis=axis, keepdims=True)
    return xp.min(xp.where(at_max, positions, xp.full_like(positions, n)), axis=axis)


def on_host(xp: Any) -> bool:
    """Whether ``xp``'s arrays live in host memory (NumPy), so reading a flag is free.

    Solvers use it to pick a sequential variant (same result, less work) of a loop
    that on a device is written without host reads.
    """
    return aac.is_numpy_namespace(xp)
