"""glibc's malloc thresholds, set once per process for training on the host.

On Linux, glibc's ``malloc`` serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes by
a fresh ``mmap`` (unmapped again by ``free``) and gives the heap's free top back to the
system once it passes ``M_TRIM_THRESHOLD``. Both start at 128 KiB and rise only when a
block served by ``mmap`` is freed: to its size and twice its size, for blocks of up to
32 MiB (so at most 32 MiB and 64 MiB). A training step allocates and frees temporaries of
a few MiB every step (a convolution's windows, the activations, their gradients). At
thresholds just past those sizes the heap is trimmed at the end of a step and grown again
in the next one, and every page of it is faulted in and zeroed by the kernel anew: the
benchmark's CNN (512 images, batch 64) took 25 000 page faults and 64 ms of kernel time in
an 81–100 ms NumPy epoch of a fresh process, against 2 faults and 30–40 ms once the
thresholds were raised (transparent huge pages in ``madvise`` mode, as on most systems;
where the kernel backs the heap with huge pages, far fewer faults are at stake). A
long-running process that once freed a large block (the benchmark harness) has its
thresholds raised already, which is why its timings did not show it.

:func:`tune_malloc` sets the thresholds where glibc's own rule ends (32 MiB, 64 MiB)
the first time a network trains. Setting them switches that rule off for the process,
harmless at its maximum, and replaces what another library may have set with
``mallopt`` before. The cost is memory kept for reuse: a free heap top of up to 64 MiB
per malloc arena (a threaded process has several), and, as glibc always does once its
threshold has risen, freed blocks under 32 MiB that lie below live ones
(``malloc_trim(0)`` returns what is free); 11 MiB more stayed
resident in that CNN's process. It does nothing off glibc, with another allocator
preloaded (jemalloc, tcmalloc, mimalloc), when the environment sets these thresholds
itself (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_`` or their ``GLIBC_TUNABLES``), or with ``MLXP_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 * 2**20
"""Bytes from which an allocation gets its own ``mmap``: glibc's dynamic maximum on 64-bit."""
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
"""Free bytes at the heap's top past which glibc returns them: twice the above, as its rule."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_USER_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_TUNABLES = ("mmap_threshold", "trim_threshold", "top_pad", "mmap_max")  # glibc.malloc.*
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_tuned: bool | None = None  # None: not tried yet in this process


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring), once per
    process; whether they are raised (False off glibc, with another allocator preloaded,
    when the environment sets them, or with ``MLXP_TUNE_MALLOC=0``)."""
    global _tuned
    if _tuned is None:
        mallopt = _glibc_mallopt() if _allowed() else None
        _tuned = mallopt is not None and bool(
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return _tuned


def _allowed() -> bool:
    env = os.environ
    if env.get("MLXP_TUNE_MALLOC", "1") == "0" or any(name in env for name in _USER_SETTINGS):
        return False
    tunables = env.get("GLIBC_TUNABLES", "")
    preloaded = env.get("LD_PRELOAD", "")
    return not any(f"glibc.malloc.{name}" in tunables for name in _TUNABLES) and not any(
        name in preloaded for name in _OTHER_ALLOCATORS
    )


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``; None off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    return mallopt
