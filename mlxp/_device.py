"""Run on the compute device: the device context CuPy (and JAX) need, entered once per
public call.

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

__all__ = [
    "COMPUTE_METHODS",
    "InitializesOnDevice",
    "OnComputeDevice",
    "consumer_context",
    "device_context",
    "on_inputs_device",
]


def device_context(xp: ModuleType, device: Any) -> contextlib.AbstractContextManager[Any]:
    """A ``with`` block that makes ``device`` current where the library needs it.

    CuPy allocates on its *current* device, and array-api-compat's ``zeros``, ``ones``,
    ``full``, ``arange``, ``eye``, ``empty`` (and their ``_like``) ignore ``device=`` for
    CuPy (only ``asarray`` honours it), so on ``cupy:cuda:1`` a bias would land on device 0
    beside weights on device 1: inside ``with cupy.cuda.Device(1)`` both land on 1, and
    kernels launch there. JAX's ``zeros``, ``ones``, ``full``, ``empty`` (and their
    ``_like``) with ``device=`` fill the array on JAX's *default* device and copy it over,
    so on ``jax:cpu`` on a GPU machine each bias and optimiser buffer would be made on the
    GPU: inside ``jax.default_device(device)`` they are made where they belong. Nothing for
    the other libraries, which place by ``device=``.
    """
    if aac.is_cupy_namespace(xp) and hasattr(device, "id"):
        # A fresh Device per block (CuPy keeps the replaced devices in a per-thread stack;
        # older CuPys kept them on the Device object, shared by the backend's threads).
        return type(device)(device.id)
    if aac.is_jax_namespace(xp) and hasattr(device, "platform"):
        import jax

        return jax.default_device(device)
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
    "infer_batches",  # Sequential's batched forward pass (predict's), public too
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
    parameters = list(inspect.signature(method).parameters)
    name = parameters[1] if len(parameters) > 1 else "X"  # X, or x (infer_batches)

    @functools.wraps(method)
    def on_device(self: Any, *args: Any, **kwargs: Any) -> Any:
        X = args[0] if args else kwargs.get(name)
        return _placed_call(lambda: {"X": X}, method, (self, *args), kwargs)

    on_device._on_compute_device = True  # type: ignore[attr-defined]
    return on_device


class InitializesOnDevice:
    """Base class whose ``initialize(rng, *, xp, device, dtype)`` (a layer's, creating its
    parameters) runs inside :func:`device_context` of ``xp`` and ``device``, in every
    subclass: called outside a public method (which enters the context itself), a bias
    made by ``xp.zeros(..., device=device)`` would land on CuPy's current device."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        method = vars(cls).get("initialize")
        if inspect.isfunction(method):
            cls.initialize = _initialize_on_device(method)  # type: ignore[attr-defined]


def _initialize_on_device(initialize: Callable[..., Any]) -> Callable[..., Any]:
    """``initialize`` inside the context of the ``xp`` and ``device`` it is called with
    (however the subclass takes them); called as it is where they cannot be told."""
    signature = inspect.signature(initialize)

    @functools.wraps(initialize)
    def on_device(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # for initialize to report, in its own words
            return initialize(*args, **kwargs)
        bound.apply_defaults()
        xp, device = bound.arguments.get("xp"), bound.arguments.get("device")
        context = contextlib.nullcontext() if xp is None else device_context(xp, device)
        with context:
            return initialize(*args, **kwargs)

    return on_device


def _placed_call(
    arrays: Callable[[], dict[str, Any]], function: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    """``function(*args, **kwargs)`` inside :func:`device_context` of where ``arrays()``
    compute (:func:`placement`); run as it is when that fails (bad or mixed inputs, a bad
    ``MLXP_BACKEND``), for the function to report it, in its order."""
    try:
        place = placement(**arrays())
    except Exception:
        return function(*args, **kwargs)
    with device_context(place.xp, place.device):
        return function(*args, **kwargs)


def on_inputs_device(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: the function runs inside :func:`device_context` of where its arguments
    ``names`` compute (those given, with a shape), as :class:`OnComputeDevice` does for
    methods: for the public functions (:mod:`mlxp.metrics`) called outside an estimator."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function)

        def arrays(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs).arguments
            return {k: bound[k] for k in names if hasattr(bound.get(k), "shape")}

        @functools.wraps(function)
        def on_device(*args: Any, **kwargs: Any) -> Any:
            return _placed_call(lambda: arrays(args, kwargs), function, args, kwargs)

        return on_device

    return decorate


def consumer_context(
    xp: ModuleType, device: Any
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """For work another thread does for this one (the prefetch of Dask chunks): a factory
    of ``with`` blocks that make this thread's device, and on CuPy and PyTorch CUDA its
    current stream, current there. Without them that thread gathers, moves and casts on
    device 0, and with per-thread default streams (or a training stream of the user's,
    ``with torch.cuda.stream(s)``) queues its copies on a stream of its own, unordered with
    the kernels that read them (and PyTorch's allocator could hand a chunk's memory on)."""
    if aac.is_torch_namespace(xp) and getattr(device, "type", None) == "cuda":
        import torch

        return functools.partial(torch.cuda.stream, torch.cuda.current_stream(device))
    if not (aac.is_cupy_namespace(xp) and hasattr(device, "id")):
        return functools.partial(device_context, xp, device)
    import cupy

    stream = cupy.cuda.get_current_stream(device.id)

    def enter() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(device_context(xp, device))
        stack.enter_context(stream)
        return stack

    return enter
