"""The programs ``jax.jit`` made, kept for later calls, and what a failed compile does.

One cache for every compiled program of the package (training steps and blocks,
evaluation and inference passes, solver loops, closed-form fits), so that a program is
traced once per key and the memory they hold is bounded by :data:`JIT_CACHE_SIZE`.

``compile="auto"`` compiles where that is known to help and, should compiling fail,
runs uncompiled with a warning (:func:`run_or_fall_back`); that program is not tried
again in the process (:func:`may_compile`). True compiles or raises; False never.
"""

from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from array_api_compat import device as array_device

from mlxp.exceptions import warn_user

__all__ = [
    "JIT_CACHE_SIZE",
    "UNTRACEABLE_SIZE",
    "config_key",
    "donatable",
    "jitted",
    "may_compile",
    "mlxp_own",
    "object_number",
    "out_of_memory",
    "placed_numbers",
    "run_or_fall_back",
    "unshared",
]

T = TypeVar("T")

JIT_CACHE_SIZE = 32
"""How many jitted programs are kept for later fits (a step or a block holds the model it
was made from; a network's fit on JAX makes four: its step, its block, its layout's
flatten and views; the block gather is one for all fits)."""

_JITTED: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
# keys of programs that failed under compile="auto", the most recent UNTRACEABLE_SIZE
_UNTRACEABLE: OrderedDict[Hashable, None] = OrderedDict()
UNTRACEABLE_SIZE = 256


def jitted(key: Hashable, fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """The jitted program kept under ``key`` (the most recent :data:`JIT_CACHE_SIZE`),
    else ``jax.jit(fn, **options)``, kept unless ``key`` is None."""
    import jax

    if key is not None and key in _JITTED:
        _JITTED.move_to_end(key)
        return _JITTED[key]
    program: Callable[..., Any] = jax.jit(fn, **options)
    if key is not None:
        _JITTED[key] = program
        while len(_JITTED) > JIT_CACHE_SIZE:
            _JITTED.popitem(last=False)
    return program


def may_compile(key: Hashable, compile: bool | str) -> bool:
    """Whether to try the program kept under ``key``: with ``compile`` True always, with
    False never, with "auto" unless it failed before (:func:`run_or_fall_back`)."""
    return compile is True or (compile is not False and key not in _UNTRACEABLE)


def run_or_fall_back(
    key: Hashable, compile: bool | str, what: str, run: Callable[[], T]
) -> T | None:
    """``run()``, a run of the compiled program kept under ``key``; None when it raised
    under "auto": then the warning that ``what`` runs uncompiled, and ``key`` is not
    tried again. A ValueError (the data's, which the uncompiled run raises too), the
    device's memory running out (:func:`out_of_memory`: the uncompiled run would need
    as much, and a smaller batch may well compile) and any error under ``compile=True``
    propagate; any other error while running is taken for a failed compile."""
    try:
        return run()
    except ValueError:
        raise
    except Exception as reason:
        if compile is True or out_of_memory(reason):
            raise
        _UNTRACEABLE[key] = None
        while len(_UNTRACEABLE) > UNTRACEABLE_SIZE:
            _UNTRACEABLE.popitem(last=False)
        warn_user(
            RuntimeWarning(
                f"compile='auto': compiling the {what} failed ({type(reason).__name__}: "
                f"{reason}); it runs uncompiled."
            )
        )
        return None


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the device's memory ran out: a MemoryError (CuPy's
    ``OutOfMemoryError`` is one), PyTorch's ``OutOfMemoryError``, or XLA's runtime error
    with status RESOURCE_EXHAUSTED (JAX)."""
    return (
        isinstance(error, MemoryError)
        or type(error).__name__ == "OutOfMemoryError"
        or "RESOURCE_EXHAUSTED" in str(error)
    )


def placed_numbers(state: dict[str, Any], like: Any) -> dict[str, Any]:
    """``state`` with its Python numbers (the rate, the step count) as a jitted step takes
    them: put on ``like``'s device by ``jax.device_put``, weakly typed, as the step's own
    outputs are. Left as numbers, each mix of numbers and placed arrays (a first batch, the
    later ones, a later epoch's first) would be a signature of its own, compiled anew."""
    import jax

    dev = array_device(like)
    return {
        k: jax.device_put(v, dev) if isinstance(v, int | float) else v for k, v in state.items()
    }


def donatable(arrays: dict[str, Any]) -> dict[str, Any]:
    """Copies of JAX ``arrays`` for a program that donates its arguments: a donated array is
    deleted, so one that others still hold (a layer's running statistics, kept by
    ``get_weights`` or early stopping, or the user's own) must go in as a copy."""
    import jax.numpy as jnp

    return {k: jnp.array(v, copy=True) for k, v in arrays.items()}


def unshared(*groups: dict[str, Any]) -> list[dict[str, Any]]:
    """The dicts of arrays to donate to one program, each array that appeared before in
    them (the same array, or another on the same buffer) replaced by a copy: a program
    cannot be given one buffer twice to donate (a user's optimiser may hand out one zero
    array as two of its state buffers)."""
    import jax.numpy as jnp

    seen: set[int] = set()
    out = []
    for group in groups:
        fresh = {}
        for k, v in group.items():
            if hasattr(v, "shape") and _buffer(v) in seen:
                v = jnp.array(v, copy=True)
            seen.add(_buffer(v))
            fresh[k] = v
        out.append(fresh)
    return out


def _buffer(array: Any) -> int:
    """Where a JAX array's data live (two arrays can share them: ``jax.device_put`` of an
    array onto its own device gives a new array of the same buffer); else its ``id``."""
    try:
        return int(array.unsafe_buffer_pointer())
    except Exception:  # not a single-device JAX array (a number, a sharded array)
        return id(array)


def config_key(obj: Any, fields: Iterable[str] | None = None) -> Hashable:
    """What a program traced with ``obj`` as a constant (a layer, a loss, an optimiser)
    depends on: its class and the reprs of its ``fields`` (else its repr); for an object
    of a class not mlxp's own, as a user's subclass may keep more than its declared
    configuration, also a number given to that object alone (:func:`object_number`)."""
    if fields is None:
        described: Hashable = repr(obj)
    else:
        described = (type(obj).__qualname__, tuple(repr(getattr(obj, f, None)) for f in fields))
    if mlxp_own(obj):
        return described
    return ("object", object_number(obj), described)


def mlxp_own(obj: Any) -> bool:
    """Whether ``obj`` is of one of mlxp's own classes, not a user's (a subclass of one
    included): its configuration describes it whole, and it keeps nothing it computed in
    a training step (a gradient, say) past that step."""
    module = type(obj).__module__
    return module == "mlxp" or module.startswith("mlxp.")


def object_number(obj: Any) -> int:
    """A number given to ``obj`` alone, never to another object (an ``id`` is reused once
    its object is gone, and a compile failure marked under it would pass to a new one);
    a fresh number at each call for an object that cannot be a weak dictionary's key
    (unhashable, or not weakly referenceable)."""
    try:
        if obj not in _OBJECT_NUMBERS:
            _OBJECT_NUMBERS[obj] = next(_COUNTER)
        return _OBJECT_NUMBERS[obj]
    except TypeError:
        return next(_COUNTER)


_OBJECT_NUMBERS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_COUNTER = itertools.count()
