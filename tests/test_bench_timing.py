"""bench.timing.interleaved: calls taking turns are called equally often, so networks trained
across the turns have trained for as many epochs when their quality is compared."""

from __future__ import annotations

import time

import bench.timing
from bench.timing import Timed, interleaved


def _counted(seconds):
    calls = []

    def call():
        time.sleep(seconds)
        calls.append(1)
        return len(calls)

    return calls, Timed(call, lambda _: None)


def test_turns_warm_every_call_alike(monkeypatch):
    """A fast (2 ms) and a slow (20 ms) call: the same number of untimed calls per turn, as
    many as make WARM_SECONDS of the fast one's calls (capped); the results are the last
    timed calls'."""
    monkeypatch.setattr(bench.timing, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(bench.timing, "WARM_SECONDS", 0.01)
    (fast, fast_call), (slow, slow_call) = _counted(0.002), _counted(0.02)
    (fast_result, fast_stats), (slow_result, slow_stats) = interleaved([fast_call, slow_call], 3)
    assert len(fast) == len(slow) == fast_result == slow_result
    settle = (len(fast) - 2) // 3 - 1  # warm-up, steady run, then 3 turns of settle + 1
    assert 2 <= settle <= 5 and len(fast) == 2 + 3 * (settle + 1)
    assert len(fast_stats["times_s"]) == len(slow_stats["times_s"]) == 3


def test_a_single_call_does_not_settle():
    calls, call = _counted(0.0)
    ((result, stats),) = interleaved([call], 4)
    assert len(calls) == result == 5 and len(stats["times_s"]) == 4


def test_a_smoke_test_takes_turns_without_settling(monkeypatch):
    """``settle=False`` (``--quick``): no pause and no untimed calls between turns, the
    calls still made equally often: a warm-up, then one timed call per turn."""
    monkeypatch.setattr(bench.timing, "SETTLE_SECONDS", 10.0)  # would show as a hang
    (fast, fast_call), (slow, slow_call) = _counted(0.0), _counted(0.001)
    results = interleaved([fast_call, slow_call], 3, settle=False)
    assert len(fast) == len(slow) == 4
    assert [len(stats["times_s"]) for _, stats in results] == [3, 3]


class _Pool:
    """A memory pool as CuPy's: blocks freed by one call stay in it for the next."""

    def __init__(self):
        self.used, self.held = 0, 0

    def allocate(self, n):
        self.held = max(self.held, self.used + n)

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.held

    def free_all_blocks(self):
        self.held = self.used


def test_each_warm_up_reports_its_own_peak_memory_in_a_shared_pool(monkeypatch):
    """Two calls on one GPU's pool, the first taking 100 bytes and freeing them, the second
    80: the second's warm-up adds 80 bytes, not 0 (it would reuse the first's freed
    blocks), because the pool's unused blocks are released before each warm-up."""
    import sys
    import types

    pool = _Pool()
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cuda = types.SimpleNamespace(get_current_stream=lambda: stream)
    cupy = types.SimpleNamespace(get_default_memory_pool=lambda: pool, cuda=cuda)
    monkeypatch.setitem(sys.modules, "cupy", cupy)

    def memory(start=False):
        return bench.timing.device_memory("cupy", None, start)

    calls = [Timed(lambda n=n: pool.allocate(n), lambda _: None, memory) for n in (100, 80)]
    (_, first), (_, second) = interleaved(calls, 1, settle=False)
    grown = [
        s["memory_after_warmup_bytes"] - s["memory_before_warmup_bytes"] for s in (first, second)
    ]
    assert grown == [100, 80]


def test_a_jax_warm_up_under_an_earlier_peak_reports_no_memory():
    """JAX never resets a device's peak: a warm-up that stays under an earlier call's
    peak reports None (not that call's peak as its own); one that raises it, its own."""

    class Device:
        platform = "gpu"

        def __init__(self):
            self.in_use, self.peak = 0, 0

        def use(self, n):  # allocate n bytes for the call, then free them
            self.peak = max(self.peak, self.in_use + n)

        def memory_stats(self):
            return {"bytes_in_use": self.in_use, "peak_bytes_in_use": self.peak}

    device = Device()

    def memory(start=False):
        return bench.timing.device_memory("jax", device, start)

    calls = [Timed(lambda n=n: device.use(n), lambda _: None, memory) for n in (500, 20, 800)]
    stats = [s for _, s in interleaved(calls, 1, settle=False)]
    assert [s["memory_after_warmup_bytes"] for s in stats] == [500, None, 800]
