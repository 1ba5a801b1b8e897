"""Full-batch minimisers that stay on the device: L-BFGS and damped Newton.

Both need from the objective only ``value_grad(θ) -> (f, ∇f, Z)`` (Newton also
``hessian(θ, Z)``, Z being the third value): f a 0-d array, ∇f an array shaped
like θ (see :class:`~mlxp.linear_model._logistic_loss.LogisticObjective`). An
objective may also have ``settle(arrays) -> arrays``, called with the loop's state
(θ, f, ∇f, β and the L-BFGS history) at every host read, for lazy arrays to be
materialised there (Dask's ``persist``), so that a graph does not grow across reads.

**Line search, one trial per iteration.** Each iteration evaluates f and ∇f at
θ + βD only and accepts the point if it meets Armijo's condition
f(θ + βD) ≤ f(θ) + c·β·∇fᵀD; a rejected trial leaves θ where it was and halves β
for the next iteration, an accepted one resets β to 1. The steps tried are the
ladder β = 1, ½, ¼, …, 1/2048 of a backtracking search, spread over iterations: the
largest step that qualifies is taken, the memory is one evaluation's, O(n·K), and
the gradient of the accepted point is the one already computed. The choice is made
with ``where``, without reading anything back. A ladder run out (β < 1/2048) means f
is flat to working precision, which counts as converged.

**Host reads.** Convergence (‖∇f‖∞ ≤ tol, or an accepted step decreasing f by less
than 64ε relative — scikit-learn's lbfgs rule — or a flat f) is read back only every
``check_every`` iterations (and after the last), for every iteration since the previous
read at once, so the fit stops at the first iterate meeting the rule whatever the
backend's reading pace: zero host synchronisations in the other iterations. Newton,
whose iterations are few and each costs a Cholesky factorisation, reads its flag every
iteration.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._cholesky import cholesky_solve
from mlxp._compat import on_host, to_numpy
from mlxp.linear_model._compiled_loop import CompiledLoop

__all__ = ["minimize_lbfgs", "minimize_newton"]

_ARMIJO = 1e-4
_FLOOR = 0.5**11  # the smallest step of the ladder 1, 1/2, ..., 1/2048


def _step(
    xp: Any, objective: Any, theta: Any, value: Any, grad: Any, direction: Any, beta: Any, one: Any
) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    """(θ', f', ∇f', Z', accepted, β', βD): the trial θ + βD if it meets Armijo's
    condition, else θ unchanged (Z' is the trial's margins either way: callers that
    keep margins select them with ``accepted``). ``beta`` and ``one`` are 0-d arrays."""
    move = beta * direction
    slope = xp.reshape(grad, (-1,)) @ xp.reshape(move, (-1,))  # β∇fᵀD exactly: β = 2⁻ᵏ
    trial = theta + move
    new_value, new_grad, Z = objective.value_grad(trial)
    ok = new_value - value <= _ARMIJO * slope  # False for a NaN value
    theta = xp.where(ok, trial, theta)
    value = xp.where(ok, new_value, value)
    grad = xp.where(ok, new_grad, grad)
    beta = xp.where(ok, one, 0.5 * beta)
    return theta, value, grad, Z, ok, beta, move


def _converged(
    xp: Any, grad_max: Any, old: Any, new: Any, ok: Any, beta: Any, tol: Any, one: Any
) -> Any:
    """‖∇f‖∞ ≤ tol (``grad_max`` = ‖∇f‖∞); or an accepted step lowered f by less than
    64ε relative; or f is flat (no step of the ladder qualified). Element-wise: the
    arguments may be stacks of iterations."""
    eps = float(xp.finfo(old.dtype).eps)
    small_grad = grad_max <= tol
    scale = xp.maximum(xp.maximum(xp.abs(old), xp.abs(new)), one)
    stalled = ok & ((old - new) <= 64 * eps * scale)
    return small_grad | stalled | (beta < _FLOOR)


class _History:
    """The last m pairs sₖ = θₖ₊₁ − θₖ, yₖ = ∇fₖ₊₁ − ∇fₖ in compact form (Byrd, Nocedal and
    Schnabel 1994).

    With S, Y the (m, d) stacks of the pairs, oldest first, D = diag(SYᵀ), R the upper
    triangle of SYᵀ (Rᵢⱼ = sᵢᵀyⱼ, i ≤ j) and H₀ = γI, γ = sᵀy/yᵀy of the newest pair,

        H = γI + [Sᵀ γYᵀ] [[R⁻ᵀ(D + γYYᵀ)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]] [S; γY],

    the L-BFGS inverse Hessian. Stored: V = [S; Y] (2m, d), its Gram matrix G = VVᵀ and
    R⁻¹, updated from the previous R⁻¹ without a solve (dropping the oldest pair keeps
    the trailing block of the inverse; the new column is [−R̃⁻¹r; 1]/δ with
    r = S̃y, δ = sᵀy). Empty slots are zero pairs with a unit diagonal in R: they
    contribute nothing. A pair without curvature (sᵀy ≤ ε‖s‖‖y‖, a rejected step
    among them) is not stored. Before the first pair, γ = 1/‖∇f₀‖.
    """

    def __init__(self, xp: Any, grad: Any, memory: int) -> None:
        m, d, dev, dtype = memory, math.prod(grad.shape), _device(grad), grad.dtype
        self.xp, self.m = xp, m
        eps = xp.finfo(dtype).eps
        self.V = xp.zeros((2 * m, d), dtype=dtype, device=dev)
        self.R_inv = xp.eye(m, dtype=dtype, device=dev)
        # G's newest slot holds δ = 1/‖∇f₀‖ and ‖y‖² = 1 until a pair arrives: γ = δ.
        norm = xp.linalg.vector_norm(grad)
        delta = 1 / xp.maximum(norm, xp.full_like(norm, eps))
        newest = xp.zeros((2 * m, 2 * m), dtype=dtype, device=dev)
        ii = xp.arange(2 * m, device=dev)
        pair = (ii[:, None] == m - 1) & (ii[None, :] == 2 * m - 1)
        pair = xp.astype(pair | xp.permute_dims(pair, (1, 0)), dtype)
        last = xp.astype((ii[:, None] == 2 * m - 1) & (ii[None, :] == 2 * m - 1), dtype)
        self.G = newest + delta * pair + last
        self.gamma = delta
        self._constants(dtype, dev)

    def _constants(self, dtype: Any, dev: Any) -> None:
        xp, m = self.xp, self.m
        self.zero_row = xp.zeros((1, m - 1), dtype=dtype, device=dev)
        self.unit_last = xp.astype(xp.arange(m, device=dev) == m - 1, dtype)
        self.one = xp.ones((), dtype=dtype, device=dev)

    @classmethod
    def from_state(cls, xp: Any, state: tuple[Any, Any, Any, Any]) -> _History:
        """The history holding ``state`` (what :meth:`state` returned): how a compiled
        loop, which carries the arrays alone, rebuilds it."""
        history = cls.__new__(cls)
        history.xp, history.m = xp, state[2].shape[0]
        history.restore(state)
        history._constants(state[0].dtype, _device(state[0]))
        return history

    def direction(self, grad: Any) -> Any:
        """−H∇f, from the products V∇f, R⁻¹(·), G and Vᵀ(·): 12 array operations."""
        xp, m, gamma = self.xp, self.m, self.gamma
        g = xp.reshape(grad, (-1,))
        ab = self.V @ g
        a, b = ab[:m], ab[m:]
        u = self.R_inv @ a  # R⁻¹Sg
        d = xp.linalg.diagonal(self.G[:m, m:])  # D = diag(SYᵀ)
        t = b - self.G[m:, m:] @ u - (d / gamma) * u
        p = xp.permute_dims(self.R_inv, (1, 0)) @ t  # −R⁻ᵀ(D + γYYᵀ)R⁻¹Sg/γ + R⁻ᵀYg
        step = gamma * (xp.permute_dims(self.V, (1, 0)) @ xp.concat([p, u]) - g)
        return xp.reshape(step, grad.shape)

    def update(self, s: Any, y: Any) -> None:
        """Push the pair (s, y), the oldest dropping out, if it has curvature."""
        xp, m = self.xp, self.m
        s, y = xp.reshape(s, (1, -1)), xp.reshape(y, (1, -1))
        V = xp.concat([self.V[1:m, :], s, self.V[m + 1 :, :], y], axis=0)
        G = V @ xp.permute_dims(V, (1, 0))
        ss, sy, yy = G[m - 1, m - 1], G[m - 1, 2 * m - 1], G[2 * m - 1, 2 * m - 1]
        eps = float(xp.finfo(G.dtype).eps)
        curved = sy > eps * xp.sqrt(ss * yy)
        delta = xp.where(curved, sy, self.one)
        kept = xp.concat([self.R_inv[1:, 1:], self.zero_row], axis=0)  # (m, m − 1)
        column = (self.unit_last - kept @ G[: m - 1, 2 * m - 1]) / delta
        R_inv = xp.concat([kept, column[:, None]], axis=1)
        self.V = xp.where(curved, V, self.V)
        self.G = xp.where(curved, G, self.G)
        self.R_inv = xp.where(curved, R_inv, self.R_inv)
        self.gamma = self.G[m - 1, 2 * m - 1] / self.G[2 * m - 1, 2 * m - 1]

    def state(self) -> tuple[Any, Any, Any, Any]:
        """The arrays held (references, not copies: every update makes new ones)."""
        return self.V, self.G, self.R_inv, self.gamma

    def restore(self, state: tuple[Any, Any, Any, Any]) -> None:
        self.V, self.G, self.R_inv, self.gamma = state


def minimize_lbfgs(
    objective: Any,
    theta: Any,
    *,
    tol: float,
    max_iter: int,
    memory: int = 10,
    check_every: int = 5,
    compile: bool | str = "auto",
) -> tuple[Any, int, bool]:
    """Minimise with L-BFGS from θ; returns (θ, iterations, converged).

    The direction is −H∇f with H the compact L-BFGS matrix of the last ``memory`` pairs
    (:class:`_History`), the step the one-trial line search of the module docstring.
    ``converged`` is False when ``max_iter`` ran out first. Convergence is read back
    every ``check_every`` iterations and after the last: one host read of the rule's
    flags for each iteration since the previous read, computed together from the states
    kept, so that the fit stops at the first iterate meeting the rule, as if it had been
    read every iteration: the same θ and iteration count on every backend, but for
    rounding (libraries round sums differently: at the rounding floor, tol = 0 or f
    stalled, and on long runs over a flat objective, counts may part). On JAX the whole run
    may be one compiled program, which tests the rule after every iteration on the
    device (``compile``: see :mod:`._compiled_loop`).
    """
    xp = array_namespace(theta)
    loop = CompiledLoop("lbfgs", objective, theta, compile, (memory,))
    if loop.available:
        ran = loop.run(_lbfgs_start, _lbfgs_body, theta, (tol,), max_iter)
        if ran is not None:
            return ran[0][0][0], ran[1], ran[2]
    check_every = 1 if on_host(xp) else check_every  # NumPy: reading is free
    value, grad, _ = objective.value_grad(theta)
    if bool(xp.max(xp.abs(grad)) <= tol):
        return theta, 0, True
    history = _History(xp, grad, memory)
    one = xp.ones_like(value)
    state, window = (theta, value, grad, one), []
    for it in range(1, max_iter + 1):
        state, ok = _lbfgs_iteration(xp, objective, history, state, one)
        window.append((state, ok))
        if it % check_every == 0 or it == max_iter:  # the one host read of check_every steps
            first = _first_converged(xp, value, window, tol, one)
            if first is not None:
                return window[first][0][0], it - len(window) + 1 + first, True
            state = _settle(objective, state, history)
            value, window = state[1], []
    return state[0], max_iter, False


def _first_converged(
    xp: Any, value: Any, window: list[tuple[Any, Any]], tol: float, one: Any
) -> int | None:
    """The position in ``window``, the (state, accepted) of each iteration since the last
    read (whose f was ``value``), of the first state meeting the rule; None if none does.
    The flags of all are computed at once, stacked: one host read, of whether any holds."""
    if len(window) == 1:  # NumPy's every read: no stacking
        return 0 if bool(_flag(xp, value, *window[0], tol, one)) else None
    states = [state for state, _ in window]
    values = xp.stack([value, *(state[1] for state in states)])
    grads = xp.stack([state[2] for state in states])
    grad_max = xp.max(xp.abs(xp.reshape(grads, (len(states), -1))), axis=1)
    oks, betas = xp.stack([ok for _, ok in window]), xp.stack([state[3] for state in states])
    flags = _converged(xp, grad_max, values[:-1], values[1:], oks, betas, tol, one)
    if not bool(xp.any(flags)):  # the read; the flags themselves only once, at the end
        return None
    return next(i for i, flag in enumerate(to_numpy(flags).tolist()) if flag)


def _lbfgs_start(
    xp: Any, objective: Any, theta: Any, tol: Any, memory: int
) -> tuple[tuple[Any, Any, Any], Any]:
    """The compiled loop's first carry (state, history arrays, tol), and whether θ
    already meets ‖∇f‖∞ ≤ tol."""
    value, grad, _ = objective.value_grad(theta)
    history = _History(xp, grad, memory)
    state = (theta, value, grad, xp.ones_like(value))
    return (state, history.state(), tol), xp.max(xp.abs(grad)) <= tol


def _lbfgs_body(
    xp: Any, objective: Any, carry: tuple[Any, Any, Any], memory: int
) -> tuple[Any, Any]:
    """One L-BFGS iteration on the compiled loop's carry, and its convergence flag (the
    history's length ``memory`` is in its arrays' shapes)."""
    state, saved, tol = carry
    history, one = _History.from_state(xp, saved), xp.ones_like(state[1])
    new_state, ok = _lbfgs_iteration(xp, objective, history, state, one)
    return (new_state, history.state(), tol), _flag(xp, state[1], new_state, ok, tol, one)


def _flag(xp: Any, value: Any, state: tuple[Any, ...], ok: Any, tol: Any, one: Any) -> Any:
    """The rule for the iterate ``state`` (θ, f, ∇f, β) reached from f = ``value``."""
    return _converged(xp, xp.max(xp.abs(state[2])), value, state[1], ok, state[3], tol, one)


def _settle(
    objective: Any, state: tuple[Any, ...], history: _History | None = None
) -> tuple[Any, ...]:
    """The state (and history) through ``objective.settle``, where it has one."""
    settle = getattr(objective, "settle", None)
    if settle is None:
        return state
    saved = history.state() if history is not None else ()
    arrays = list(settle([*state, *saved]))
    if history is not None:
        history.restore(tuple(arrays[len(state) :]))
    return tuple(arrays[: len(state)])


def _lbfgs_iteration(
    xp: Any, objective: Any, history: _History, state: tuple[Any, ...], one: Any
) -> tuple[tuple[Any, ...], Any]:
    """One L-BFGS iteration from state (θ, f, ∇f, β): the new state, and whether the
    trial step was accepted (a 0-d bool array)."""
    theta, value, grad, beta = state
    direction = history.direction(grad)
    new_theta, new_value, new_grad, _, ok, beta, move = _step(
        xp, objective, theta, value, grad, direction, beta, one
    )
    # A rejected trial leaves ∇f, so y = 0 and the pair is not stored.
    history.update(move, new_grad - grad)
    return (new_theta, new_value, new_grad, beta), ok


def _newton_direction(xp: Any, objective: Any, theta: Any, Z: Any, grad: Any) -> Any:
    """D solving (∇²f + jitter·I) D = −∇f by Cholesky; the relative jitter keeps a
    singular ∇²f (softmax with penalty=None) factorable. Should the factorisation still
    fail (D not finite: CuPy's partial factor, PyTorch's flagged one), D = −∇f, a
    gradient step, chosen on the device without reading anything back."""
    eps = float(xp.finfo(theta.dtype).eps)
    H = objective.hessian(theta, Z)
    jitter = 10 * H.shape[0] * eps * xp.max(xp.abs(H))
    H = H + jitter * xp.eye(H.shape[0], dtype=H.dtype, device=_device(H))
    D = -xp.reshape(cholesky_solve(H, xp.reshape(grad, (-1, 1)), xp=xp), theta.shape)
    return xp.where(xp.all(xp.isfinite(D)), D, -grad)


def minimize_newton(
    objective: Any, theta: Any, *, tol: float, max_iter: int, compile: bool | str = "auto"
) -> tuple[Any, int, bool]:
    """Damped Newton: solve ∇²f D = −∇f by Cholesky, then the one-trial line search.

    Newton converges in a handful of iterations, so the flag is read every step; each
    step costs one Hessian (n·(pK)²) and one Cholesky ((pK)³). Once the tolerance is
    met, one more step polishes θ: convergence being quadratic, that brings it to near
    machine precision for the price of one iteration. On JAX the whole run may be one
    compiled program (``compile``: see :mod:`._compiled_loop`).
    """
    xp = array_namespace(theta)
    loop = CompiledLoop("newton", objective, theta, compile)
    if loop.available:
        ran = loop.run(_newton_start, _newton_body, theta, (tol,), max_iter)
        if ran is not None:
            (state, converged, _), iterations, _ = ran
            return state[0], iterations, bool(converged)
    value, grad, Z = objective.value_grad(theta)
    converged = bool(xp.max(xp.abs(grad)) <= tol)
    one = xp.ones_like(value)
    state = (theta, value, grad, Z, one)
    for done in range(max_iter):  # iterations done so far
        polishing = converged
        state, flag = _newton_iteration(xp, objective, state, tol, one)
        if polishing:
            return state[0], done + 1, True
        converged = bool(flag)
        state = _settle(objective, state)
    return state[0], max_iter, converged


def _newton_iteration(
    xp: Any, objective: Any, state: tuple[Any, ...], tol: Any, one: Any
) -> tuple[tuple[Any, ...], Any]:
    """One damped Newton iteration from state (θ, f, ∇f, Z, β): the new state and the
    convergence flag (a 0-d bool array)."""
    theta, value, grad, Z, beta = state
    direction = _newton_direction(xp, objective, theta, Z, grad)
    new_theta, new_value, new_grad, trial_Z, ok, beta, _ = _step(
        xp, objective, theta, value, grad, direction, beta, one
    )
    Z = xp.where(ok, trial_Z, Z)
    flag = _converged(xp, xp.max(xp.abs(new_grad)), value, new_value, ok, beta, tol, one)
    return (new_theta, new_value, new_grad, Z, beta), flag


def _newton_start(xp: Any, objective: Any, theta: Any, tol: Any) -> tuple[Any, Any]:
    """The compiled loop's first carry (state, converged, tol); never done before the
    first iteration, which polishes θ when it already meets the tolerance."""
    value, grad, Z = objective.value_grad(theta)
    state = (theta, value, grad, Z, xp.ones_like(value))
    converged = xp.max(xp.abs(grad)) <= tol
    return (state, converged, tol), xp.zeros_like(converged)


def _newton_body(xp: Any, objective: Any, carry: tuple[Any, Any, Any]) -> tuple[Any, Any]:
    """One Newton iteration on the compiled loop's carry: done once the iteration after
    convergence, the polishing one, has run."""
    state, converged, tol = carry
    state, flag = _newton_iteration(xp, objective, state, tol, xp.ones_like(state[1]))
    return (state, converged | flag, tol), converged
