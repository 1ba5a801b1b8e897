"""The closed-form fit of LinearRegression and Ridge: centring and weighting, then the
factorisations of :mod:`._exact`, each a compiled program on JAX.

JAX dispatches every operation it runs eagerly as a call of its own, about 0.1 ms each
on a CPU, and materialises each transpose before the product that uses it. An eager fit
at 500x20 took 3.5 ms where NumPy spends 0.45 ms, and at 50000x50 the Gram matrix XᵀX
alone took 12 ms eagerly, 6.5 ms compiled (NumPy: 4.2 ms). With ``compile="auto"`` on
JAX the centring is one ``jax.jit`` program and each factorisation tried, with its
check, is another: a fit is two or three compiled calls, a few eager operations (the
weights' scaling, the intercept, the reshapes) and, as eagerly, one host read per
factorisation tried (500x20: 1.2–1.5 ms against 3.5–5.7 ms eager; NumPy 0.5 ms). The
SVD, for rank-deficient or wide data, reads the rank back half-way: its parts before and
after that read are programs of their own. α, the cut-off and the largest condition
number kept are the programs' arguments, so one compilation per configuration (intercept
or not, weights or not, penalty or not) and shape serves a grid search over α. A failed
compile under "auto" warns and runs that part eagerly (:func:`mlxp._jit.run_or_fall_back`);
True compiles or raises (a ValueError on other libraries); False never.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from array_api_compat import array_namespace, is_jax_namespace
from array_api_compat import device as _device

from mlxp._jit import jitted, may_compile, run_or_fall_back
from mlxp.linear_model._exact import attempt

__all__ = ["ClosedForm", "centre", "intercept_of"]

WHAT = "closed-form fit"


def centre(xp: Any, X: Any, Y: Any, sw: Any, fit_intercept: bool) -> tuple[Any, ...]:
    """(X, Y, x̄, ȳ, u) for the centred, weighted problem min ‖√s(XW + b − Y)‖²: with an
    intercept, X and Y (n, p), (n, k) centred by their means weighted by s (n,) (ones for
    None), and u = √s/‖√s‖ (n,), the unit vector the centred √s·X is orthogonal to;
    then rows scaled by √sᵢ. x̄, ȳ and u are None without an intercept."""
    x_mean = y_mean = null = None
    if fit_intercept:
        n = X.shape[0]
        weights = xp.ones((n,), dtype=X.dtype, device=_device(X)) if sw is None else sw
        total = xp.sum(weights)
        x_mean, y_mean = (weights @ X) / total, (weights @ Y) / total
        X, Y = X - x_mean, Y - y_mean
        null = xp.sqrt(weights) / xp.sqrt(total)
    if sw is not None:
        root = xp.sqrt(sw)[:, None]
        X, Y = X * root, Y * root
    return X, Y, x_mean, y_mean, null


def intercept_of(xp: Any, W: Any, x_mean: Any, y_mean: Any) -> Any:
    """b = ȳ − x̄W (k,), or zeros without an intercept (x̄ None)."""
    if x_mean is None:
        return xp.zeros((W.shape[1],), dtype=W.dtype, device=_device(W))
    return y_mean - x_mean @ W


class ClosedForm:
    """:func:`centre` and :func:`mlxp.linear_model._exact.attempt`, each run as a compiled
    program on JAX unless ``compile`` is False or compiling it failed before (then as
    they are). ``compile=True`` on other arrays is a ValueError, raised here."""

    def __init__(self, xp: Any, compile: bool | str, fit_intercept: bool) -> None:
        self.compiled = compile is not False and is_jax_namespace(xp)
        if compile is True and not self.compiled:
            raise ValueError(
                "compile=True: linear fits compile only on JAX arrays; "
                'pass compile="auto" or False.'
            )
        self.compile, self.fit_intercept = compile, fit_intercept

    def centre(self, xp: Any, X: Any, Y: Any, sw: Any) -> tuple[Any, ...]:
        """:func:`centre` of (X, Y) with weights ``sw`` (or None)."""
        key = ("closed-form centre", self.fit_intercept)
        fit_intercept = self.fit_intercept

        def program(X: Any, Y: Any, sw: Any) -> tuple[Any, ...]:
            return centre(array_namespace(X), X, Y, sw, fit_intercept)

        centred = self._run(key, program, X, Y, sw)
        return centre(xp, X, Y, sw, fit_intercept) if centred is None else centred

    def attempt(
        self, xp: Any, name: str, X: Any, Y: Any, alpha: float, null: Any, limit: float
    ) -> Any:
        """:func:`mlxp.linear_model._exact.attempt`: (W, ok) by factorisation ``name``."""
        if not self.compiled:
            return attempt(xp, name, X, Y, alpha, null, limit)

        def program(X: Any, Y: Any, alpha: Any, null: Any, limit: Any) -> Any:
            # α: a traced scalar where there is a penalty, else the number 0 (a constant)
            penalty = 0.0 if alpha is None else alpha
            return attempt(array_namespace(X), name, X, Y, penalty, null, limit)

        # Python floats enter jax.jit as weakly typed scalars (X's dtype): no retrace for
        # a new α or limit, and no jax.device_put of our own.
        key = ("closed-form attempt", name)
        solved = self._run(key, program, X, Y, float(alpha) or None, null, float(limit))
        return attempt(xp, name, X, Y, alpha, null, limit) if solved is None else solved

    def run(self, part: Callable[..., Any], *args: Any) -> Any:
        """``part(xp, *args)``, an array part of the SVD solver (arrays and numbers
        only: the numbers are the program's arguments, weakly typed, not constants)."""
        xp = array_namespace(args[0])
        if not self.compiled:
            return part(xp, *args)

        def program(*args: Any) -> Any:
            return part(array_namespace(args[0]), *args)

        done = self._run(("closed-form svd", part.__name__), program, *args)
        return part(xp, *args) if done is None else done

    def _run(self, key: Hashable, program: Callable[..., Any], *args: Any) -> Any:
        """``program`` jitted (kept under ``key``) on ``args``; None where it should not or
        could not run compiled."""
        if not self.compiled or not may_compile(key, self.compile):
            return None
        compiled = jitted(key, program)
        return run_or_fall_back(key, self.compile, WHAT, lambda: compiled(*args))
