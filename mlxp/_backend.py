"""Backend selection: which array library and device mlxp computes with.

A backend is a (library, device) pair. With none chosen -- the default -- mlxp computes in
the namespace and on the device of its input arrays. One can be chosen globally with
:func:`set_backend`, for a block with :func:`use_backend`, or for the process with
``MLXP_BACKEND=name[:device]``, resolved by the first call that asks for the backend, which
imports the library (a forked process can still initialise CUDA) and raises for a bad value
(``python -m mlxp info`` explains it). Libraries are imported lazily, so ``import mlxp``
never fails for want of CuPy, a CUDA driver, PyTorch or JAX; mlxp never changes a library's
global configuration (JAX computes in float64 only where ``jax_enable_x64`` is set).

Discovery is thread-safe: a library is imported under :data:`DISCOVERY_LOCK`, and the first
look at an input's library (:func:`input_placement`) waits for it, as array-api-compat reads
``sys.modules``, where a library another thread is importing is only partly initialised.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat as aac

from mlxp._compat import move
from mlxp._gpu_probe import probe_cupy, probe_cupy_device, torch_cuda_devices
from mlxp.exceptions import BackendUnavailableError

__all__ = [
    "BACKEND_NAMES",
    "DISCOVERY_LOCK",
    "Backend",
    "BackendUnavailableError",
    "Placement",
    "available_backends",
    "backend_report",
    "environment_error",
    "from_environment",
    "get_backend",
    "input_placement",
    "make_backend",
    "parse_backend_spec",
    "placement",
    "set_backend",
    "use_backend",
]

BACKEND_NAMES = ("numpy", "cupy", "torch", "jax", "array_api_strict", "dask")
_ALIASES = {"array-api-strict": "array_api_strict", "strict": "array_api_strict", "np": "numpy"}

DISCOVERY_LOCK = threading.RLock()
"""Held while mlxp imports an array library, and while it first inspects input arrays."""


@dataclass(frozen=True)
class Backend:
    """A compute target: the library ``name``, its Array API namespace ``xp`` and a ``device``.

    ``device`` is the library's own device object (what ``xp.asarray(..., device=)``
    takes); ``device_name`` is its short text form, as in ``MLXP_BACKEND=torch:cuda:0``.
    """

    name: str
    device_name: str
    xp: ModuleType = field(repr=False, compare=False)
    device: Any = field(repr=False, compare=False)

    def asarray(self, x: Any) -> Any:
        """``x`` as an array of this backend, on its device (no copy if already there)."""
        return move(x, self.xp, self.device)

    def __str__(self) -> str:
        return f"{self.name}:{self.device_name}"


@dataclass(frozen=True)
class _Library:
    version: str
    xp: ModuleType
    devices: dict[str, Any]  # device name -> library device object, default first
    check: Callable[[str], None] | None = None  # raises if a device named first fails
    note: str | None = None  # why the library sees no GPU, where it said


# --------------------------------------------------------------------------- the libraries
def _load_numpy() -> _Library:
    import array_api_compat.numpy as xp
    import numpy

    return _Library(numpy.__version__, xp, {"cpu": "cpu"})


def _load_array_api_strict() -> _Library:
    import array_api_strict as xp

    devices = xp.__array_namespace_info__().devices()
    return _Library(xp.__version__, xp, {d._device: d for d in devices})


def _load_torch() -> _Library:
    import array_api_compat.torch as xp
    import torch

    cuda, note = torch_cuda_devices(torch)
    devices = {"cpu": torch.device("cpu"), **cuda}
    if torch.backends.mps.is_available():
        devices["mps"] = torch.device("mps")
    return _Library(torch.__version__, xp, devices, note=note)


def _load_jax() -> _Library:
    # JAX's x64 setting is the user's (JAX_ENABLE_X64 or jax.config): without it, JAX
    # and thus mlxp on JAX compute in float32 (float64 inputs are narrowed by move()).
    import jax
    import jax.numpy as xp

    devices = {"cpu": jax.devices("cpu")[0]}
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    devices.update({f"cuda:{i}": d for i, d in enumerate(gpus)})
    return _Library(jax.__version__, xp, devices)


def _load_cupy() -> _Library:
    import cupy  # imports fine without a GPU; the first allocation would fail

    try:
        count = cupy.cuda.runtime.getDeviceCount() if cupy.cuda.is_available() else 0
    except Exception:  # a missing or broken driver raises CUDARuntimeError
        count = 0
    if count == 0:
        raise BackendUnavailableError(
            "no CUDA device was found (CuPy is installed but cupy.cuda.is_available() is False)"
        )
    probe_cupy(cupy, 0)  # whether this CuPy compiles and runs kernels; others on first use
    import array_api_compat.cupy as xp

    devices = {f"cuda:{i}": cupy.cuda.Device(i) for i in range(count)}
    return _Library(cupy.__version__, xp, devices, check=probe_cupy_device)


def _load_dask() -> _Library:
    # Lazy, chunked arrays (dask.array); their chunks' library (NumPy, or CuPy under
    # dask-cuda) computes each chunk and holds the small results (see mlxp._dask).
    import array_api_compat.dask.array as xp

    return _Library(importlib.metadata.version("dask"), xp, {"cpu": "cpu"})


_LOADERS = {
    "numpy": _load_numpy,
    "cupy": _load_cupy,
    "torch": _load_torch,
    "jax": _load_jax,
    "array_api_strict": _load_array_api_strict,
    "dask": _load_dask,
}


@functools.cache
def _library(name: str) -> _Library | BackendUnavailableError:
    """Import a library once (under :data:`DISCOVERY_LOCK`); remember why it failed if it did."""
    try:
        with DISCOVERY_LOCK:
            return _LOADERS[name]()
    except BackendUnavailableError as exc:
        return exc
    except ImportError as exc:
        return BackendUnavailableError(f"{name} is not installed ({exc})")
    except Exception as exc:  # e.g. a broken CUDA install raising at import
        return BackendUnavailableError(f"{name} failed to load: {type(exc).__name__}: {exc}")


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _LOADERS:  # not probing every library for the message: seconds, and CUDA
        raise ValueError(
            f"Unknown backend {name!r}. Known backends: {', '.join(BACKEND_NAMES)} "
            "(`python -m mlxp info` lists those usable here)."
        )
    return key


def available_backends() -> list[tuple[str, str]]:
    """The (name, device) pairs found on this machine: the library importable and working
    (for CuPy: on cuda:0; another GPU is probed when a backend first names it)."""
    return [(row["name"], device) for row in backend_report() for device in row["devices"]]


def backend_report() -> list[dict[str, Any]]:
    """Every known backend's version, devices and note (why no GPU), or why it is unusable."""
    rows = []
    for name in BACKEND_NAMES:
        lib = _library(name)
        if isinstance(lib, _Library):
            row = {"version": lib.version, "devices": list(lib.devices), "reason": None}
            row["note"] = lib.note
        else:
            row = {"version": None, "devices": [], "reason": str(lib), "note": None}
        rows.append({"name": name, **row})
    return rows


def make_backend(name: str, device: Any = None) -> Backend:
    """Resolve a name and a device (text, library object or ``None`` for the default);
    ``name`` may carry its device, as ``MLXP_BACKEND`` does: ``"torch:cuda:1"``."""
    if device is None and isinstance(name, str) and ":" in name:
        name, _, spec_device = name.partition(":")
        device = spec_device or None
    name = _canonical(name)
    lib = _library(name)
    if not isinstance(lib, _Library):
        raise BackendUnavailableError(f"Backend {name!r} is unavailable: {lib}")
    if device is None:
        device_name, dev = next(iter(lib.devices.items()))
        return Backend(name, device_name, lib.xp, dev)
    for device_name, dev in lib.devices.items():
        if device == device_name or (not isinstance(device, str) and device == dev):
            if lib.check is not None:
                lib.check(device_name)
            return Backend(name, device_name, lib.xp, dev)
    torch = getattr(device, "type", None) == "cuda" and importlib.import_module("torch")
    if torch and device.index is None and torch.cuda.is_available():  # torch.device("cuda")
        return make_backend(name, f"cuda:{torch.cuda.current_device()}")  # current GPU
    if isinstance(device, str) and device in ("cuda", "gpu"):
        return make_backend(name, "cuda:0")
    raise ValueError(
        f"Backend {name!r} has no device {device!r}; its devices here: {', '.join(lib.devices)}."
    )


def parse_backend_spec(spec: str) -> Backend:
    """Parse ``name[:device]``, e.g. ``torch``, ``torch:cuda:1``, ``array_api_strict:device1``."""
    return make_backend(spec.strip())


# --------------------------------------------------------------------------- the active backend
_global: Backend | None = None
_environment_error: Exception | None = None  # why MLXP_BACKEND could not be used
_environment_spec: str | None = None  # MLXP_BACKEND, until the first call resolves it
_scoped: contextvars.ContextVar[Backend | str | None] = contextvars.ContextVar(
    "mlxp_backend", default="unset"
)


def set_backend(name: str | None, device: Any = None) -> Backend | None:
    """Compute on ``name`` (and ``device``) from now on; ``None`` to follow the inputs again.

    Raises ``ValueError`` for an unknown name or device and
    :class:`BackendUnavailableError` for a known backend that cannot run here.
    """
    global _global, _environment_error, _environment_spec
    chosen = None if name is None else make_backend(name, device)
    with DISCOVERY_LOCK:  # not to be overwritten by a thread resolving MLXP_BACKEND
        _global = chosen
        _environment_error = _environment_spec = None  # an explicit choice replaces it
    return chosen


def get_backend() -> Backend | None:
    """The backend in force, or ``None`` when computation follows the input arrays.

    Raises the error of a bad ``MLXP_BACKEND`` (until :func:`set_backend` replaces it).
    """
    scoped = _scoped.get()
    if not isinstance(scoped, str):  # "unset" is the only str it holds
        return scoped
    if _environment_spec is not None:
        _resolve_environment()
    if _environment_error is not None:
        raise type(_environment_error)(str(_environment_error))
    return _global


def environment_error() -> str | None:
    """Why ``MLXP_BACKEND`` cannot be used, or None (it is unset, or valid)."""
    if _environment_spec is not None:
        _resolve_environment()
    return None if _environment_error is None else str(_environment_error)


@contextlib.contextmanager
def use_backend(name: str | None, device: Any = None) -> Iterator[Backend | None]:
    """Compute on ``name``/``device`` inside a ``with`` block (thread- and task-local)."""
    backend = None if name is None else make_backend(name, device)
    token = _scoped.set(backend)
    try:
        yield backend
    finally:
        _scoped.reset(token)


def from_environment() -> None:
    """Read ``MLXP_BACKEND=name[:device]`` (unset or empty: no global backend), for the
    first :func:`get_backend` to resolve: the library is imported then, not here."""
    global _global, _environment_error, _environment_spec
    spec = os.environ.get("MLXP_BACKEND", "").strip() or None
    with DISCOVERY_LOCK:  # not to be overwritten by a resolution in flight
        _global, _environment_error, _environment_spec = None, None, spec


def _resolve_environment() -> None:
    """The global backend from ``MLXP_BACKEND``, made once (under :data:`DISCOVERY_LOCK`);
    a value naming no usable backend is kept as the error :func:`get_backend` raises."""
    global _global, _environment_error, _environment_spec
    with DISCOVERY_LOCK:
        if (spec := _environment_spec) is None:  # resolved by another thread, or replaced
            return
        try:
            _global = parse_backend_spec(spec)
        except (ValueError, BackendUnavailableError) as exc:
            _environment_error = type(exc)(f"MLXP_BACKEND={spec!r}: {exc}")
        _environment_spec = None


# --------------------------------------------------------------------------- where to compute
def _library_name(xp: ModuleType) -> str:
    for name, test in (
        ("numpy", aac.is_numpy_namespace),
        ("torch", aac.is_torch_namespace),
        ("jax", aac.is_jax_namespace),
        ("cupy", aac.is_cupy_namespace),
        ("array_api_strict", aac.is_array_api_strict_namespace),
        ("dask", aac.is_dask_namespace),
    ):
        if test(xp):
            return name
    return getattr(xp, "__name__", str(xp))


@dataclass(frozen=True)
class Placement:
    """Where a call computes (``xp``, ``device``) and where its results go (``out_xp``...)."""

    xp: ModuleType
    device: Any
    out_xp: ModuleType
    out_device: Any

    def to_compute(self, x: Any) -> Any:
        return None if x is None else move(x, self.xp, self.device)

    def to_caller(self, x: Any) -> Any:
        return move(x, self.out_xp, self.out_device)


def input_placement(*, mixed_ok: bool = False, **arrays: Any) -> tuple[ModuleType, Any]:
    """The namespace and device shared by the named input arrays.

    Non-array inputs (lists, ``None``, data frames) do not vote; with no arrays at
    all the answer is NumPy on the CPU. Arrays from two libraries or on two devices
    raise a ``ValueError`` naming both, unless ``mixed_ok`` (then the first one wins).
    """
    found: list[tuple[str, ModuleType, Any]] = []
    with DISCOVERY_LOCK:
        for arg, x in arrays.items():
            if x is not None and aac.is_array_api_obj(x) and not _is_numpy_scalar(x):
                found.append((arg, aac.array_namespace(x), aac.device(x)))
    if not found:
        return make_backend("numpy").xp, "cpu"
    first_arg, xp, dev = found[0]
    for arg, other_xp, other_dev in [] if mixed_ok else found[1:]:
        if other_xp is not xp:
            raise ValueError(
                f"{first_arg} is a {_library_name(xp)} array but {arg} is a "
                f"{_library_name(other_xp)} array; pass arrays from one library, or choose "
                "a backend with mlxp.set_backend(...) to have them moved there."
            )
        if other_dev != dev:
            raise ValueError(
                f"{first_arg} is on device {dev} but {arg} is on device {other_dev}; "
                "move them to one device, or choose a backend with mlxp.set_backend(...)."
            )
    return xp, dev


def _is_numpy_scalar(x: Any) -> bool:
    import numpy

    return isinstance(x, numpy.generic)


def placement(**arrays: Any) -> Placement:
    """Where to compute for these inputs: the chosen backend, else the inputs' own place."""
    backend = get_backend()
    out_xp, out_dev = input_placement(mixed_ok=backend is not None, **arrays)
    if backend is None:
        return Placement(out_xp, out_dev, out_xp, out_dev)
    return Placement(backend.xp, backend.device, out_xp, out_dev)
