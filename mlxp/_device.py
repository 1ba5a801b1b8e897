"""Run on the compute device: the device context CuPy needs, entered once per public call.

CuPy allocates on its *current* device and launches kernels there, while array-api-compat's
creation functions ignore ``device=`` for CuPy; :func:`device_context` makes the compute
device current, and :class:`OnComputeDevice` enters it around every estimator's and
``Sequential``'s public compute methods, so code below them needs no care.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat as aac

from mlxp._backend import placement

__all__ = ["COMPUTE_METHODS", "OnComputeDevice", "device_context"]


def device_context(xp: ModuleType, device: Any) -> contextlib.AbstractContextManager[Any]:
    """A ``with`` block that makes ``device`` current where the library needs it.

    CuPy allocates on its *current* device, and array-api-compat's ``zeros``, ``ones``,
    ``full``, ``arange``, ``eye``, ``empty`` (and their ``_like``) ignore ``device=`` for
    CuPy (only ``asarray`` honours it), so on ``cupy:cuda:1`` a bias would land on device 0
    beside weights on device 1: inside ``with cupy.cuda.Device(1)`` both land on 1, and
    kernels launch there. Nothing for the other libraries, which place by ``device=``.
    """
    if aac.is_cupy_namespace(xp) and hasattr(device, "id"):
        # A fresh Device per block: each keeps its own stack of the devices it replaced,
        # so threads sharing the backend's Device object cannot restore each other's.
        return type(device)(device.id)
    return contextlib.nullcontext()


COMPUTE_METHODS = (
    "fit",
    "partial_fit",
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "score",
    "transform",
    "evaluate",
)


class OnComputeDevice:
    """Base class whose public compute methods (:data:`COMPUTE_METHODS`, ``method(X, ...)``)
    run inside :func:`device_context` of where ``X`` computes (:func:`placement`): every
    subclass's methods of those names, its own or from mixins, are wrapped once, so no
    estimator needs to remember it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in COMPUTE_METHODS:
            method = inspect.getattr_static(cls, name, None)
            if inspect.isfunction(method) and not hasattr(method, "_on_compute_device"):
                setattr(cls, name, _on_compute_device(method))


def _on_compute_device(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def on_device(self: Any, *args: Any, **kwargs: Any) -> Any:
        X = args[0] if args else kwargs.get("X")
        try:
            place = placement(X=X)
        except Exception:  # e.g. a bad MLXP_BACKEND: the method reports it, in its order
            return method(self, *args, **kwargs)
        with device_context(place.xp, place.device):
            return method(self, *args, **kwargs)

    on_device._on_compute_device = True  # type: ignore[attr-defined]
    return on_device
