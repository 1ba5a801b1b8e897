"""Full-batch minimisers that stay on the device: L-BFGS and damped Newton.

Both take an objective with ``value_grad(θ) -> (f, ∇f, Z)`` and
``line_values(θ, Z, D, α) -> f(θ + αD)`` for a vector of step sizes (see
:class:`~mlxp.linear_model._logistic_loss.LogisticObjective`). The line search is
done on the device: f is evaluated at a fixed ladder of steps α = 1, ½, ¼, … at
once, and the largest step meeting Armijo's condition f(θ + αD) ≤ f(θ) + c·α·∇fᵀD
is picked with ``where``/``argmax``, without reading anything back. Convergence
(‖∇f‖∞ ≤ tol, or a relative decrease of f below 64ε) is also tracked on the
device; a converged iterate is frozen, and the host reads one flag every
``check_every`` iterations, so stopping late costs a few no-op iterations and
never changes the answer. With NumPy, whose arrays are already on the host, the
same search runs sequentially and the flag is read every iteration: identical
iterates, less work.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _device

from mlxp._compat import on_host

_ARMIJO = 1e-4
_N_STEPS = 12  # steps 1, 1/2, ..., 1/2048


def _line_search(
    xp: Any, objective: Any, theta: Any, Z: Any, value: Any, grad: Any, direction: Any, steps: Any
) -> tuple[Any, Any, Any]:
    """(α, accepted, X·D): the largest ladder step meeting Armijo's condition.

    On a device, every step of the ladder is evaluated at once and α picked with
    ``where``/``max`` (α = 0 if none qualifies). With arrays in host memory, where
    reading a flag is free, the steps are tried one at a time instead, largest first:
    the same α, usually for the price of one evaluation.
    """
    slope = xp.sum(grad * direction)
    dZ = objective.margins(direction)
    if on_host(xp):
        alpha = 0 * steps[0]
        for i in range(steps.shape[0]):
            step = steps[i : i + 1]
            f = objective.line_values(theta, Z, direction, step, dZ)[0]
            if bool(xp.isfinite(f) & (f <= value + _ARMIJO * step[0] * slope)):
                alpha = step[0]
                break
        accepted = (alpha > 0) & (slope < 0)
    else:
        values = objective.line_values(theta, Z, direction, steps, dZ)
        ok = (values <= value + _ARMIJO * steps * slope) & xp.isfinite(values)
        accepted = xp.any(ok) & (slope < 0)
        alpha = xp.max(xp.where(ok & accepted, steps, xp.zeros_like(steps)))
    return alpha, accepted, dZ


def _ladder(xp: Any, like: Any) -> Any:
    powers = xp.arange(_N_STEPS, dtype=like.dtype, device=_device(like))
    return 0.5**powers


def _converged(xp: Any, grad: Any, old: Any, new: Any, tol: float, eps: float) -> Any:
    """‖∇f‖∞ ≤ tol, or f decreased by less than 64ε relative (scikit-learn's lbfgs rule)."""
    small_grad = xp.max(xp.abs(grad)) <= tol
    scale = xp.maximum(xp.maximum(xp.abs(old), xp.abs(new)), xp.ones_like(old))
    return small_grad | ((old - new) <= 64 * eps * scale)


def minimize_lbfgs(
    objective: Any, theta: Any, *, tol: float, max_iter: int, memory: int = 10, check_every: int = 5
) -> tuple[Any, int, bool]:
    """Minimise with L-BFGS from θ; returns (θ, iterations, converged).

    ``converged`` is False when ``max_iter`` ran out first. A line search that finds
    no decrease at all means f is flat to working precision, which counts as converged.

    The direction is −H∇f by the two-loop recursion over the last ``memory`` pairs
    sₖ = θₖ₊₁ − θₖ, yₖ = ∇fₖ₊₁ − ∇fₖ, with H₀ = γI, γ = sᵀy/yᵀy (1/‖∇f‖ at first).
    Pairs with too little curvature (sᵀy ≤ ε‖s‖‖y‖) get ρ = 0, which removes them.
    """
    xp = array_namespace(theta)
    check_every = 1 if on_host(xp) else check_every
    eps = float(xp.finfo(theta.dtype).eps)
    steps = _ladder(xp, theta)
    value, grad, Z = objective.value_grad(theta)
    norm = xp.linalg.vector_norm(grad)
    gamma = 1 / xp.maximum(norm, xp.full_like(norm, eps))
    pairs: deque = deque(maxlen=memory)
    converged = xp.max(xp.abs(grad)) <= tol
    n_iter = xp.zeros((), dtype=xp.int32, device=_device(theta))
    for it in range(1, max_iter + 1):
        q, alphas = grad, []
        for s, y, rho in reversed(pairs):
            a = rho * xp.sum(s * q)
            q = q - a * y
            alphas.append(a)
        r = gamma * q
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            r = r + s * (a - rho * xp.sum(y * r))
        direction = -r
        alpha, accepted, dZ = _line_search(xp, objective, theta, Z, value, grad, direction, steps)
        alpha = xp.where(converged, 0 * alpha, alpha)
        new_theta = theta + alpha * direction
        new_value, new_grad, new_Z = objective.value_grad(new_theta, Z + alpha * dZ)
        s, y = new_theta - theta, new_grad - grad
        sy = xp.sum(s * y)
        curved = sy > eps * xp.linalg.vector_norm(s) * xp.linalg.vector_norm(y)
        safe_sy = xp.where(curved, sy, xp.ones_like(sy))
        pairs.append((s, y, xp.where(curved, 1 / safe_sy, 0 * sy)))
        gamma = xp.where(curved, sy / xp.where(curved, xp.sum(y * y), xp.ones_like(sy)), gamma)
        n_iter = n_iter + xp.astype(~converged, xp.int32)
        converged = converged | ~accepted | _converged(xp, new_grad, value, new_value, tol, eps)
        theta, value, grad, Z = new_theta, new_value, new_grad, new_Z
        if it % check_every == 0 and bool(converged):  # one host read per check_every steps
            break
    return theta, int(n_iter), bool(converged)


def minimize_newton(
    objective: Any, theta: Any, *, tol: float, max_iter: int, check_every: int = 1
) -> tuple[Any, int, bool]:
    """Damped Newton: solve ∇²f D = −∇f by Cholesky, then the on-device line search.

    Newton converges in a handful of iterations, so the flag is read every step by
    default; each step costs one Hessian (n·(pK)²) and one Cholesky ((pK)³). Once the
    tolerance is met, one more step polishes θ: convergence being quadratic, that
    brings it to near machine precision for the price of one iteration.
    """
    xp = array_namespace(theta)
    eps = float(xp.finfo(theta.dtype).eps)
    steps = _ladder(xp, theta)
    shape = theta.shape
    value, grad, Z = objective.value_grad(theta)
    converged = xp.max(xp.abs(grad)) <= tol
    frozen = xp.zeros_like(converged)  # converged one step ago: the polishing step is done
    n_iter = xp.zeros((), dtype=xp.int32, device=_device(theta))
    for it in range(1, max_iter + 1):
        H = objective.hessian(theta, Z)
        # A relative jitter keeps a singular H (softmax with penalty=None) factorable.
        jitter = 10 * H.shape[0] * eps * xp.max(xp.abs(H))
        H = H + jitter * xp.eye(H.shape[0], dtype=H.dtype, device=_device(H))
        L = xp.linalg.cholesky(H)
        flat = xp.reshape(grad, (-1, 1))
        direction = -xp.reshape(xp.linalg.solve(L.T, xp.linalg.solve(L, flat)), shape)
        alpha, accepted, dZ = _line_search(xp, objective, theta, Z, value, grad, direction, steps)
        alpha = xp.where(frozen, 0 * alpha, alpha)
        new_theta = theta + alpha * direction
        new_value, new_grad, new_Z = objective.value_grad(new_theta, Z + alpha * dZ)
        n_iter = n_iter + xp.astype(~frozen, xp.int32)
        frozen = frozen | converged
        converged = converged | ~accepted | _converged(xp, new_grad, value, new_value, tol, eps)
        theta, value, grad, Z = new_theta, new_value, new_grad, new_Z
        if it % check_every == 0 and bool(frozen):
            break
    return theta, int(n_iter), bool(converged)
