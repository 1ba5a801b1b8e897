"""mlxp._memory: glibc's malloc thresholds raised once, the first time a network trains.

Checked by the calls a stand-in libc receives (the values, once per process, and none
where the user or the platform says no), and by its effect in a fresh process: the page
faults of training epochs, counted by the kernel, with and without it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlxp._memory as memory

ROOT = Path(__file__).resolve().parents[1]


class FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


@pytest.fixture
def libc(monkeypatch):
    """A stand-in glibc mallopt, no environment setting, nothing tuned yet."""
    fake = FakeLibc()
    monkeypatch.setattr(memory, "_tuned", None)
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: fake.mallopt)
    for name in (*memory._USER_SETTINGS, "GLIBC_TUNABLES", "MLXP_TUNE_MALLOC", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_the_thresholds_are_set_once_where_glibc_takes_them(libc):
    """M_MMAP_THRESHOLD (−3) to 32 MiB and M_TRIM_THRESHOLD (−1) to 64 MiB, the values
    glibc's dynamic rule ends at on 64-bit, then nothing more in this process."""
    assert memory.tune_malloc() is True
    assert libc.calls == [(-3, 32 * 2**20), (-1, 64 * 2**20)]
    assert memory.tune_malloc() is True and len(libc.calls) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MLXP_TUNE_MALLOC", "0"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "1048576"),
        ("MALLOC_TOP_PAD_", "0"),
        ("MALLOC_MMAP_MAX_", "0"),
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=4096"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ],
)
def test_the_environment_keeps_its_own_settings(libc, monkeypatch, name, value):
    """The user's thresholds (variables or tunables), another allocator, or the opt-out."""
    monkeypatch.setenv(name, value)
    assert memory.tune_malloc() is False and libc.calls == []


def test_other_malloc_tunables_do_not_stop_it(libc, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert memory.tune_malloc() is True and len(libc.calls) == 2


def test_nothing_is_set_off_glibc_or_when_libc_refuses(libc, monkeypatch):
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: None)
    assert memory.tune_malloc() is False and libc.calls == []
    monkeypatch.setattr(memory, "_tuned", None)
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: libc.mallopt)
    libc.result = 0  # a 32-bit glibc refuses a 32 MiB mmap threshold
    assert memory.tune_malloc() is False and libc.calls == [(-3, 32 * 2**20)]


def test_glibc_mallopt_is_found_only_on_glibc(monkeypatch):
    if memory.platform.libc_ver()[0] == "glibc":
        assert callable(memory._glibc_mallopt())
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory._glibc_mallopt() is None


def test_fit_tunes_malloc(libc):
    import numpy as np

    from mlxp.nn import Dense, Sequential

    X, y = np.zeros((8, 3)), np.arange(8) % 2
    Sequential([Dense(3, 2)], seed=0).fit(X, y, loss="cross_entropy", epochs=1, progress=False)
    assert libc.calls == [(-3, 32 * 2**20), (-1, 64 * 2**20)]


FAULTS = textwrap.dedent(
    """
    import resource
    import numpy as np
    from mlxp import nn
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256)
    layers = [nn.Conv2D(1, 8, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(8, 16, 5), nn.ReLU(),
              nn.MaxPool2D(2), nn.Flatten(), nn.Dense(256, 10)]
    net = nn.Sequential(layers, seed=0)
    fit = lambda: net.fit(X, y, loss="cross_entropy", epochs=1, batch_size=64, progress=False)
    fit()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fit(); fit()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(**env: str) -> int:
    """Page faults of two epochs in a fresh process, in an environment without malloc
    settings and with glibc's own use of huge pages off (so that its heap faults in 4 KiB
    pages as on most systems), plus ``env``."""
    import os

    dropped = (*memory._USER_SETTINGS, "GLIBC_TUNABLES", "MLXP_TUNE_MALLOC", "LD_PRELOAD")
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    clean["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"
    run = subprocess.run(
        [sys.executable, "-c", FAULTS],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1])


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(memory.platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.skipif(_huge_pages_always(), reason="the kernel backs every heap by huge pages")
def test_a_fresh_process_trains_without_faulting_its_pages_anew():
    """Two CNN epochs (four steps of 64 images each) in a fresh process: with glibc's
    starting thresholds the steps' temporaries are unmapped or trimmed and faulted in
    again (thousands of page faults); tuned, the heap keeps them (a few dozen at most)."""
    tuned, untuned = _faults(), _faults(MLXP_TUNE_MALLOC="0")
    assert untuned > 1000 and tuned < untuned / 10, (tuned, untuned)
