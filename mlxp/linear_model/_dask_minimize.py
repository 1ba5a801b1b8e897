"""L-BFGS and damped Newton on Dask data: one fused pass per iteration, the state on the client.

The iterates are those of :mod:`~mlxp.linear_model._minimize` on the host (same L-BFGS
memory and curvature test, same Armijo ladder and largest-acceptable step, same
convergence rule), each evaluation one call of an
:class:`~mlxp.linear_model._dask_logistic.Evaluator` (f and ∇f, for Newton ∇²f, at the
ladder's first step in the pass that takes the gradient; the smaller steps only when it is
rejected). Only p × K arrays (and Newton's (qK) × (qK) system) live here, as arrays of the
chunk library: no graph is kept from one iteration to the next.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from mlxp._cholesky import cholesky_solve
from mlxp._compat import to_numpy

__all__ = ["minimize_dask"]

_ARMIJO = 1e-4
_LADDER = [0.5**j for j in range(12)]
_FIRST = 1  # steps tried in the pass that takes the gradient; the rest only if needed


def _converged(xp: Any, grad: Any, old: Any, new: Any, tol: float, eps: float) -> bool:
    scale = max(abs(float(old)), abs(float(new)), 1.0)
    return bool(float(xp.max(xp.abs(grad))) <= tol or float(old - new) <= 64 * eps * scale)


def _armijo(xp: Any, values: Any, f: Any, slope: Any, steps: Any) -> int | None:
    """Index of the largest of ``steps`` meeting Armijo's condition, or None."""
    if float(slope) >= 0:
        return None
    bound = f + _ARMIJO * xp.asarray(steps, dtype=values.dtype) * slope
    flags = to_numpy((values <= bound) & xp.isfinite(values)).tolist()
    return flags.index(True) if True in flags else None


def _two_loop(xp: Any, grad: Any, pairs: list[tuple[Any, Any, Any]], gamma: float) -> Any:
    q, alphas = grad, []
    for s, y, rho in reversed(pairs):
        a = rho * xp.sum(s * q)
        q = q - a * y
        alphas.append(a)
    r = gamma * q
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        r = r + s * (a - rho * xp.sum(y * r))
    return -r


def _newton_direction(xp: Any, H: Any, grad: Any, eps: float) -> Any:
    """D solving (H + jitter·I) D = −∇f (:func:`mlxp._cholesky.cholesky_solve`); −∇f where
    the factorisation fails, as :func:`mlxp.linear_model._minimize._newton_direction`."""
    jitter = 10 * H.shape[0] * eps * xp.max(xp.abs(H))
    H = H + jitter * xp.eye(H.shape[0], dtype=H.dtype, device=_device(H))
    D = -xp.reshape(cholesky_solve(H, xp.reshape(grad, (-1, 1)), xp=xp), grad.shape)
    return xp.where(xp.all(xp.isfinite(D)), D, -grad)


def minimize_dask(
    evaluate: Any,
    theta: Any,
    *,
    solver: str,
    tol: float,
    max_iter: int,
    memory: int = 10,
) -> tuple[Any, int, bool]:
    """L-BFGS or damped Newton from θ, one pass per iteration; (θ, iterations, converged)."""
    xp, newton = evaluate.xp, solver == "newton"
    eps = float(xp.finfo(theta.dtype).eps)
    zero = xp.zeros_like(theta)
    values, grads, H = evaluate(theta, zero, [0.0], 1, newton)
    f, g = values[0], grads[0]
    if not bool(xp.isfinite(f) & xp.all(xp.isfinite(g))):
        raise ValueError("Input X contains NaN or infinity.")
    converged, frozen, n_iter = float(xp.max(xp.abs(g))) <= tol, False, 0
    pairs: list[tuple[Any, Any, Any]] = []
    gamma = 1 / max(float(xp.linalg.vector_norm(g)), eps)
    for _ in range(max_iter):
        if converged and not newton:
            break
        D = _newton_direction(xp, H, g, eps) if newton else _two_loop(xp, g, pairs, gamma)
        slope = xp.sum(g * D)
        values, grads, H_new = evaluate(theta, D, _LADDER[:_FIRST], 1, newton)
        j = _armijo(xp, values, f, slope, _LADDER[:_FIRST])
        if j is None and float(slope) < 0:  # the smaller steps; ∇f at the next one down
            values, grads, H_new = evaluate(theta, D, _LADDER[_FIRST:], 1, newton)
            more = _armijo(xp, values, f, slope, _LADDER[_FIRST:])
            j = None if more is None else _FIRST + more
            k = None if more is None else more
        else:
            k = j
        alpha = 0.0 if j is None else float(_LADDER[j])
        new_theta = theta + alpha * D
        if k is None:  # no step taken: θ, f and ∇f stay
            new_f, new_g, H_new = f, g, H
        elif k < len(grads):
            new_f, new_g = values[k], grads[k]
        else:  # a step whose gradient the pass did not evaluate
            at = evaluate(new_theta, zero, [0.0], 1, newton)
            new_f, new_g, H_new = at[0][0], at[1][0], at[2]
        n_iter += 1
        if newton:
            frozen, H = converged, H_new
        s, y = new_theta - theta, new_g - g
        sy = float(xp.sum(s * y))
        curved = sy > eps * float(xp.linalg.vector_norm(s) * xp.linalg.vector_norm(y))
        pairs = ([*pairs, (s, y, 1 / sy if curved else 0.0)])[-memory:]  # ρ = 0 removes it
        gamma = sy / float(xp.sum(y * y)) if curved else gamma
        converged = converged or j is None or _converged(xp, new_g, f, new_f, tol, eps)
        theta, f, g = new_theta, new_f, new_g
        if frozen:
            break
    return theta, n_iter, converged
