"""The backend matrix shared by the tests and the benchmarks (not shipped with mlxp).

``cases()`` enumerates every (library, device) pair mlxp knows, usable here or
not (with the reason); a :class:`Case` converts NumPy arrays there and back and
synchronises its device for timing. Install recipes: ``cpu.txt`` (what CI uses),
``cuda12.txt`` and ``cuda13.txt`` (GPU machines).
"""

from __future__ import annotations

import os

# The test and benchmark matrix runs JAX in float64, as the user of a process may choose
# (mlxp itself never changes JAX's configuration); set before anything imports JAX.
os.environ.setdefault("JAX_ENABLE_X64", "1")
# On a GPU, JAX takes 75% of its memory at start in every process (each pytest-xdist worker,
# beside CuPy's and PyTorch's pools): the matrix lets it allocate as it goes instead.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from dataclasses import dataclass
from typing import Any

import numpy as np

import mlxp
from mlxp._backend import BACKEND_NAMES, Backend, backend_report, make_backend
from mlxp.exceptions import BackendUnavailableError

__all__ = ["Case", "cases"]

# Device entries expected on a GPU machine, listed (and skipped) when absent.
_GPU_DEVICES = {"torch": "cuda:0", "cupy": "cuda:0", "jax": "cuda:0"}


@dataclass(frozen=True)
class Case:
    """One (library, device) pair; ``backend`` is None and ``reason`` set when unusable."""

    name: str
    device_name: str
    backend: Backend | None = None
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.device_name}"

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def device(self) -> Any:
        return self.backend.device

    @property
    def float_dtypes(self) -> tuple[str, ...]:
        """The real floating dtypes this device supports ("float32", "float64")."""
        info = self.xp.__array_namespace_info__()
        try:
            supported = info.dtypes(device=self.device, kind="real floating")
        except TypeError:
            supported = info.dtypes(kind="real floating")
        return tuple(name for name in ("float32", "float64") if name in supported)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """A NumPy array (or array-like) as an array of this case, optionally cast.

        Dask arrays get three row chunks (so that reductions merge chunks)."""
        host = np.asarray(a, dtype=dtype)
        if self.name == "dask" and host.ndim:
            import dask.array as da

            rows = max(1, -(-host.shape[0] // 3))
            return da.from_array(host, chunks=(rows, *host.shape[1:]))
        return self.backend.asarray(host)

    def to_numpy(self, x: Any) -> np.ndarray:
        return mlxp.to_numpy(x)

    def synchronize(self, x: Any) -> None:
        mlxp.synchronize(x)


def _case(name: str, device: str) -> Case:
    """The case of one listed device; unavailable, with the reason, where its first use
    fails (a GPU beyond cuda:0 is probed then: a busy or faulty one)."""
    try:
        return Case(name, device, backend=make_backend(name, device))
    except BackendUnavailableError as reason:
        return Case(name, device, reason=str(reason))


def cases(include_dask: bool = False) -> list[Case]:
    """Every known (library, device) pair, usable ones first in each library; Dask (lazy,
    run on a cluster of its own) only with ``include_dask``."""
    out = []
    for row in backend_report():
        name = row["name"]
        if name == "dask" and not include_dask:
            continue
        if row["reason"] is not None:
            out.append(Case(name, _GPU_DEVICES.get(name, "cpu"), reason=row["reason"]))
            continue
        out.extend(_case(name, dev) for dev in row["devices"])
        gpu = _GPU_DEVICES.get(name)
        if gpu and gpu not in row["devices"]:
            note = f" ({row['note']})" if row.get("note") else ""
            out.append(Case(name, gpu, reason=f"{name}: no CUDA device was found{note}"))
    order = {name: i for i, name in enumerate(BACKEND_NAMES)}
    return sorted(out, key=lambda c: (order[c.name], c.backend is None))
