"""A solver's whole run as one compiled program on JAX.

JAX dispatches every array operation it runs eagerly as a call of its own, about 0.1 ms
each on a CPU: an L-BFGS iteration of :mod:`._minimize` makes about 60, so 12 ms at
5000x20 where NumPy spends 0.4 ms. ``jax.jit`` of the solver's run, its start (f and ∇f
at θ₀, the empty history) then a ``jax.lax.while_loop`` of its iteration, with the
objective's arrays as the program's arguments, runs as one call: 0.2 ms an iteration
there. The loop tests the convergence rule on the device after every iteration, as each
of the eager loop's reads does for the iterations since the previous one, so both stop
at the same iterate as far as rounding lets them: XLA fuses and may reorder sums, so
where the rule is met at the rounding floor (tol = 0, f stalled to 64ε), or on long
runs over a flat objective (hundreds of iterations) where rounding differences grow,
the counts may part.

Compiling costs about 0.5 s, once per solver, objective configuration and array shapes
in a process (``jax.jit``'s cache; C and tol are arguments, so a grid search over them
reuses one program; each program keeps what it compiled for every shape it met, and
:data:`mlxp._jit.JIT_CACHE_SIZE` bounds the programs). Eager JAX pays a like price on
first contact with new shapes, since it compiles each operation for them: a first fit
at 5000x20 took 1–2 s either way, the next ones 70 ms eagerly against 9–18 ms compiled.
So ``compile="auto"`` compiles on JAX, as :meth:`mlxp.nn.Sequential.fit` does; should
compiling fail, the fit runs eagerly with a warning, and that program is not tried again
(:func:`mlxp._jit.run_or_fall_back`). True compiles or raises; False never.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from array_api_compat import array_namespace, is_jax_namespace
from array_api_compat import device as _device

from mlxp._compat import from_host
from mlxp._jit import jitted, may_compile, run_or_fall_back

__all__ = ["CompiledLoop"]

# start(xp, objective, θ, *numbers, *options) -> (carry, done): the state before the
# first iteration; body(xp, objective, carry, *options) -> (carry, done): one iteration.
# numbers: 0-d arrays (tol, a step size); options: hashable; done: 0-d bool.
Start = Callable[..., tuple[Any, Any]]
Body = Callable[..., tuple[Any, Any]]


class CompiledLoop:
    """The compiled run of one fit of ``solver`` on ``objective`` from θ.

    ``compile`` is "auto", True or False. Compiling needs JAX arrays and an objective
    with ``leaves()``, ``config()`` and ``from_leaves(xp, config, leaves)``; True
    elsewhere is a ValueError, raised here, before any iteration. ``options``: hashable
    constants of the program (passed to its functions), part of its key: a failure to
    compile is remembered for those options, data configuration and shapes only.
    """

    def __init__(
        self,
        solver: str,
        objective: Any,
        theta: Any,
        compile: bool | str,
        options: tuple[Hashable, ...] = (),
    ) -> None:
        self.solver, self.compile, self.options, self.key = solver, compile, options, None
        if compile is False:
            return
        jax_arrays = is_jax_namespace(array_namespace(theta))
        if jax_arrays and hasattr(objective, "leaves"):
            self.objective_type, self.leaves = type(objective), objective.leaves()
            self.config = (self.objective_type, objective.config())
            shapes = tuple((tuple(a.shape), str(a.dtype)) for a in (theta, *self.leaves))
            self.key = (solver, self.config, shapes, options)
        elif compile is True:
            where = "JAX arrays" if not jax_arrays else "an objective with leaves()"
            raise ValueError(
                f"compile=True: the {solver} solver compiles only on {where}; "
                'pass compile="auto" or False.'
            )

    @property
    def available(self) -> bool:
        """Whether the fit should run compiled."""
        return self.key is not None and may_compile(self.key, self.compile)

    def run(
        self,
        start: Start,
        body: Body,
        theta: Any,
        numbers: tuple[Any, ...],
        limit: int,
    ) -> tuple[Any, int, bool] | None:
        """``start`` at θ, then at most ``limit`` iterations of ``body``, stopping after
        the first whose ``done`` is true (at once if ``start``'s is), all compiled:
        (carry, iterations, done), or None when compiling failed under "auto" (warned;
        the caller runs eagerly). ``numbers``: the run's scalars (tol, a step size: Python
        numbers or 0-d arrays), passed to ``start`` as 0-d arrays of θ's dtype, so a new
        value does not compile anew; the options are the last arguments of both."""
        assert self.key is not None
        key = ("solver", self.config, start, body, self.options)
        xp, device = array_namespace(theta), _device(theta)
        arrays = tuple(
            xp.astype(v, theta.dtype)
            if hasattr(v, "dtype")
            else from_host(v, xp, device=device, dtype=theta.dtype)
            for v in numbers
        )
        # int32 whatever the caller's integer type: one program for every max_iter.
        limit_array = from_host(min(int(limit), 2**31 - 1), xp, device=device, dtype=xp.int32)
        ran = run_or_fall_back(
            self.key,
            self.compile,
            "solver's loop",
            lambda: jitted(key, self._program(start, body))(
                self.leaves, theta, arrays, limit_array
            ),
        )
        if ran is None:
            return None
        iterations, carry, done = ran
        return carry, int(iterations), bool(done)

    def _program(self, start: Start, body: Body) -> Callable[..., Any]:
        import jax

        objective_type, config, options = self.objective_type, self.config[1], self.options

        def program(leaves: Any, theta: Any, numbers: Any, limit: Any) -> Any:
            xp = array_namespace(theta)
            objective = objective_type.from_leaves(xp, config, leaves)

            def more(state: Any) -> Any:
                return (state[0] < limit) & ~state[2]

            def iteration(state: Any) -> Any:
                carry, done = body(xp, objective, state[1], *options)
                return state[0] + 1, carry, done

            carry, done = start(xp, objective, theta, *numbers, *options)
            return jax.lax.while_loop(more, iteration, (xp.zeros((), dtype=xp.int32), carry, done))

        return program
