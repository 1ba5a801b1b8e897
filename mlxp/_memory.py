"""glibc's malloc thresholds, set once per process for training on the host.

On Linux, glibc's ``malloc`` serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes by
a fresh ``mmap`` (unmapped again by ``free``) and gives the heap's free top back to the
system once it passes ``M_TRIM_THRESHOLD``. Both start at 128 KiB and rise only when a
block served by ``mmap`` is freed: to its size and twice its size, up to 32 MiB and
64 MiB. A training step allocates and frees temporaries of a few MiB every step (a
convolution's windows, the activations, their gradients). At thresholds just past those
sizes the heap is trimmed at the end of a step and grown again in the next one, and every
page of it is faulted in and zeroed by the kernel anew: the benchmark's CNN (512 images,
batch 64) took 25 000 page faults and 64 ms of kernel time in an 81–100 ms NumPy epoch
of a fresh process, against 2 faults and 30–35 ms once the thresholds were raised. A
long-running process that once freed a 32 MiB array (the benchmark harness, say) is
already there, which is why its timings did not show it.

:func:`tune_malloc` sets the thresholds where glibc's own rule ends (32 MiB, 64 MiB)
the first time a network trains, at the cost of keeping up to 64 MiB of freed memory
in the heap for reuse (11 MiB more resident in that CNN's process). It does nothing
off glibc, when the environment tunes malloc itself (``MALLOC_*_`` variables or
``GLIBC_TUNABLES``), or with ``MLXP_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform

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
_tuned: bool | None = None  # None: not tried yet in this process


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring), once per
    process; whether they are raised (False off glibc, when the environment tunes malloc,
    or with ``MLXP_TUNE_MALLOC=0``)."""
    global _tuned
    if _tuned is None:
        _tuned = _allowed() and _set_thresholds()
    return _tuned


def _allowed() -> bool:
    if os.environ.get("MLXP_TUNE_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    return "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")


def _set_thresholds() -> bool:
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
