"""How the benchmarks time things: where a run computes, warm-up apart, device synchronised.

A :class:`Target` is where one column of the results computes: an mlxp backend case,
or a peer library's own placement (scikit-learn on the host, PyTorch on its device,
cuML on CuPy). :func:`timed` runs a call once untimed (the warm-up: compilation,
caches, memory-pool growth), then ``repeat`` times, synchronising the device before
each clock read; :func:`interleaved` does so for several calls taking turns, so that
their ratios survive a machine whose speed drifts. :func:`transfer` times moving the
data there and back on its own; :func:`matmul_peak` measures the matrix-multiply rate
that network runs are set against.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import backends

SETTLE_SECONDS = 0.3
"""When calls take turns (:func:`interleaved`), each turn first pauses this long, so the
thread pools the previous library left spinning go to sleep (OpenBLAS's workers spin about
0.1 s after a product), then makes untimed calls (:data:`WARM_SECONDS`), so its own pools
are awake and its data in cache again, then the timed one. Without the
pause a PyTorch epoch right after a NumPy one ran up to 1.6× slower; without the untimed
call a JAX epoch of 15 ms took 23 ms after the pause."""
WARM_SECONDS = 0.1
"""How long a turn's untimed calls last (:data:`SETTLE_SECONDS`), for the fastest of the
calls taking turns: every call makes the same number of them (one to
:data:`WARM_CALLS_MAX`), from the calls' second untimed runs, so that networks trained
across turns have trained for as many epochs when their quality is compared. After the
pause, a single untimed MLP epoch (2000x64, about 14 ms) left JAX's next one at 1.3× its
median among back-to-back calls, NumPy's at 1.1×; after 0.1 s of untimed epochs, 25 rounds
gave medians of 12.7 ms (JAX) and 16.5 ms (NumPy), against 17.2 and 17.3 after one."""
WARM_CALLS_MAX = 10
PEAK_REPEAT = 3  # timings per matmul peak (the best is kept), after a warm-up product
PEAK_SECONDS = 0.05  # the least each timing lasts


def _no_memory(start: bool = False) -> int | None:
    return None


@dataclass(frozen=True)
class Target:
    """Where a run computes: NumPy data moved there and back, its work awaited, its memory read.

    ``peak_key`` names the matmul peak that applies (the backend doing the arithmetic);
    ``host`` marks targets that compute on the caller's NumPy arrays (no transfer).
    """

    name: str
    to_device: Callable[[np.ndarray], Any]
    to_host: Callable[[Any], np.ndarray]
    sync: Callable[[Any], None]
    peak_key: str
    float_dtypes: tuple[str, ...] = ("float32", "float64")
    memory: Callable[..., int | None] = field(default=_no_memory)  # (start=False), as device_memory
    host: bool = False


def case_target(case: backends.Case) -> Target:
    """The target of mlxp computing on a backend case of ``backends.cases()``."""
    return Target(
        name=str(case),
        to_device=case.asarray,
        to_host=case.to_numpy,
        sync=case.synchronize,
        peak_key=str(case),
        float_dtypes=case.float_dtypes,
        memory=lambda start=False: device_memory(case.name, case.device, start),
    )


def host_target(name: str) -> Target:
    """A peer computing on NumPy arrays in host memory (scikit-learn)."""
    return Target(
        name=name,
        to_device=np.asarray,
        to_host=np.asarray,
        sync=lambda _: None,
        peak_key="numpy:cpu",
        host=True,
    )


def device_memory(library: str, device: Any, start: bool = False) -> int | None:
    """Device memory around a warm-up, in bytes; None on CPUs, which have no pool to grow.

    ``start=True`` (before the warm-up): the pool's unused blocks are freed and its peak
    reset, and the bytes in use now are returned; then (after it) the most in use since:
    PyTorch CUDA's peak allocation, the size of CuPy's pool (it keeps every block it took,
    so it is at least the peak of use), JAX GPU's peak use (which JAX never resets: None
    when the warm-up did not raise it, an earlier and larger peak hiding its own). Without
    the reset a call could reuse what an earlier one freed into the same pool (native
    PyTorch's epoch before mlxp's on the same GPU, say) and show no growth."""
    if library == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        if start:
            cupy.cuda.get_current_stream().synchronize()
            pool.free_all_blocks()
            return int(pool.used_bytes())
        return int(pool.total_bytes())
    if library == "torch" and getattr(device, "type", None) == "cuda":
        import torch

        if start:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            return int(torch.cuda.memory_allocated(device))
        return int(torch.cuda.max_memory_allocated(device))
    if library == "jax" and getattr(device, "platform", "cpu") != "cpu":
        stats = device.memory_stats() or {}
        if start:
            _JAX_PEAKS[str(device)] = stats.get("peak_bytes_in_use")
            return stats.get("bytes_in_use")
        peak = stats.get("peak_bytes_in_use")
        return peak if peak != _JAX_PEAKS.get(str(device)) else None  # unknown: not a new peak
    return None


_JAX_PEAKS: dict[str, int | None] = {}  # a JAX device's peak before a warm-up


def summary(times: Sequence[float], prefix: str = "") -> dict[str, Any]:
    """``median_s``, ``min_s``, ``max_s`` and every time of a timed call, keys prefixed."""
    return {
        f"{prefix}median_s": statistics.median(times),
        f"{prefix}min_s": min(times),
        f"{prefix}max_s": max(times),
        f"{prefix}times_s": list(times),
    }


@dataclass(frozen=True)
class Timed:
    """A call to time: ``call()`` then ``sync(result)`` waits for the device; ``memory``
    reads the device memory around the warm-up, ``memory(start=True)`` before it
    (:func:`device_memory`; None on CPUs)."""

    call: Callable[[], Any]
    sync: Callable[[Any], None]
    memory: Callable[..., int | None] | None = None


def interleaved(
    calls: Sequence[Timed], repeat: int, settle: bool = True
) -> list[tuple[Any, dict[str, Any]]]:
    """:func:`timed` of several calls taking turns: each warmed up once, then ``repeat``
    rounds of one timed run each, in order. A machine whose speed drifts (other tenants,
    clocks, thermals) then slows every call of a round alike, so the ratios of their
    medians hold where medians of back-to-back runs would not. With several calls each
    turn settles first (:data:`SETTLE_SECONDS`: a pause, then untimed calls), so a
    timed call runs as it would among calls of its own kind; ``settle=False`` (a smoke
    test, ``--quick``) skips that."""
    warm, times = [], [[] for _ in calls]
    for c in calls:
        before = c.memory(start=True) if c.memory else None
        start = time.perf_counter()
        c.sync(result := c.call())
        warm.append((result, time.perf_counter() - start, before, c.memory() if c.memory else None))
    results = [w[0] for w in warm]
    settle_calls = 0
    if len(calls) > 1 and settle:  # the same for all: ~WARM_SECONDS of the fastest's calls
        steady = []
        for i, c in enumerate(calls):
            start = time.perf_counter()
            c.sync(result := c.call())
            steady.append(time.perf_counter() - start)
            results[i] = result
        settle_calls = min(WARM_CALLS_MAX, max(1, math.ceil(WARM_SECONDS / max(min(steady), 1e-9))))
    for _ in range(repeat):
        for i, c in enumerate(calls):
            if settle_calls:
                time.sleep(SETTLE_SECONDS)
                for _ in range(settle_calls):
                    c.sync(c.call())
            start = time.perf_counter()
            c.sync(result := c.call())
            times[i].append(time.perf_counter() - start)
            results[i] = result
    out = []
    for c, result, (_, warmup, before, after), t in zip(calls, results, warm, times, strict=True):
        stats = {**summary(t), "warmup_s": warmup}
        if c.memory:
            stats |= {"memory_before_warmup_bytes": before, "memory_after_warmup_bytes": after}
        out.append((result, stats))
    return out


def timed(
    call: Callable[[], Any],
    sync: Callable[[Any], None],
    repeat: int,
    memory: Callable[..., int | None] | None = None,
    prefix: str = "",
) -> tuple[Any, dict[str, Any]]:
    """Run ``call()`` once untimed, then ``repeat`` times timed; the last result and the stats.

    ``sync(result)`` waits for the device before the clock is read. The warm-up's own
    time is reported beside the stats, and with ``memory`` the device memory read
    before and after it (its growth: pools, caches, compiled kernels' workspaces).
    """
    result, stats = interleaved([Timed(call, sync, memory)], repeat)[0]
    return result, {prefix + key: value for key, value in stats.items()}


def transfer(target: Target, arrays: Sequence[np.ndarray], repeat: int) -> dict[str, Any]:
    """Median seconds to move ``arrays`` to the target (synchronised) and back to NumPy.

    One untimed round trip first, like every other measurement.
    """
    to_device, to_host = [], []
    for i in range(repeat + 1):
        start = time.perf_counter()
        moved = [target.to_device(a) for a in arrays]
        for m in moved:
            target.sync(m)
        middle = time.perf_counter()
        for m in moved:
            target.to_host(m)
        end = time.perf_counter()
        if i:
            to_device.append(middle - start)
            to_host.append(end - middle)
    return {
        "bytes": int(sum(a.nbytes for a in arrays)),
        **summary(to_device, "to_device_"),
        **summary(to_host, "to_host_"),
    }


def matmul_peak(target: Target, dtype: str, size: int) -> float | None:
    """GFLOP/s of ``size``×``size`` products ``a @ a`` in ``dtype``; None where the target
    lacks the dtype.

    Each of a few timings covers enough back-to-back products to last about
    ``PEAK_SECONDS`` (a single small product is at the mercy of thread wake-ups on a
    busy machine); the best timing is kept, as a peak should be.
    """
    if dtype not in target.float_dtypes:
        return None
    rng = np.random.default_rng(0)
    a = target.to_device(rng.standard_normal((size, size)).astype(dtype))
    target.sync(a @ a)  # warm-up
    start = time.perf_counter()
    target.sync(a @ a)
    count = max(1, math.ceil(PEAK_SECONDS / (time.perf_counter() - start)))
    best = float("inf")
    for _ in range(PEAK_REPEAT):
        start = time.perf_counter()
        for _ in range(count):
            c = a @ a
        target.sync(c)
        best = min(best, (time.perf_counter() - start) / count)
    return 2 * size**3 / best / 1e9


class Peaks:
    """Matmul peaks (float32 and float64 GFLOP/s) per ``peak_key``, measured on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.measured: dict[str, dict[str, float | None]] = {}

    def of(self, target: Target) -> dict[str, float | None]:
        if target.peak_key not in self.measured:
            self.measured[target.peak_key] = {
                dtype: matmul_peak(target, dtype, self.size) for dtype in ("float32", "float64")
            }
        return self.measured[target.peak_key]
