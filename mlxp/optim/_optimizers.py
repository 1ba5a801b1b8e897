"""Optimisers shared by every mlxp model: SGD, Adam, AdamW and RMSprop.

An optimiser maps parameters and their gradients, both dicts of arrays keyed by
name, to the updated parameters: ``params = opt.step(params, grads)``. The update
rules are ``torch.optim``'s term for term. Nothing is written in place (so JAX
works): each step returns new arrays and replaces the state's buffers with new
ones. The state of a parameter (its step count t and buffers such as velocities
and moments) is created at its first step with ``zeros_like``, hence on its device
and in its dtype. Step sizes and bias corrections are Python floats computed from
the integer step count, so float32 parameters stay float32, and ``step`` never
reads an array back to the host.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import array_api_compat as aac

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop"]

Array = Any


class Optimizer:
    """Base class: the step loop, per-parameter state, the learning rate, state dicts.

    A subclass names its hyperparameters in ``_hyperparameters`` (besides ``lr``) and
    implements ``_init_state`` (the zero buffers of one parameter) and ``_update``
    (one parameter's new value, replacing the buffers in its state dict).

    Parameters
    ----------
    lr : float or 0-d array
        The learning rate η > 0. A 0-d array of the parameters' namespace (a step
        derived from the data) is used as it is, cast to each parameter's dtype,
        and never read back to the host.
    """

    _hyperparameters: tuple[str, ...] = ()

    def __init__(self, lr: float | Array) -> None:
        self._lr = _check_lr(lr, allow_zero=False)
        self.state: dict[str, dict[str, Any]] = {}

    @property
    def lr(self) -> float | Array:
        """The current learning rate; schedules set it (``opt.lr = schedule(epoch)``)."""
        return self._lr

    @lr.setter
    def lr(self, value: float | Array) -> None:
        self._lr = _check_lr(value, allow_zero=True)

    def step(self, params: dict[str, Array], grads: dict[str, Array]) -> dict[str, Array]:
        """Return the updated parameters as new arrays; the inputs are left unchanged.

        ``grads`` holds the gradient of the loss with respect to each parameter,
        same names and shapes. A parameter with no gradient (name absent or None)
        is returned as it is and its state is left untouched, as in torch.
        """
        unknown = sorted(set(grads) - set(params))
        if unknown:
            raise ValueError(f"grads has entries for unknown parameters: {unknown}.")
        updated = {}
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                updated[name] = p
                continue
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(
                    f"The gradient of {name!r} has shape {tuple(g.shape)}, "
                    f"but the parameter has shape {tuple(p.shape)}."
                )
            xp = aac.array_namespace(p)
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {"step": 0, **self._init_state(xp, p)}
            state["step"] += 1
            updated[name] = self._update(xp, p, g, state, self._lr_for(xp, p))
        return updated

    def reset(self) -> None:
        """Forget all state (step counts and buffers); the hyperparameters stay."""
        self.state = {}

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's type, hyperparameters and per-parameter state, arrays as they are.

        Arrays are never modified in place, so later steps do not alter the result.
        """
        return {
            "optimizer": type(self).__name__,
            "lr": self._lr,
            "hyperparameters": {k: getattr(self, k) for k in self._hyperparameters},
            "state": {name: dict(s) for name, s in self.state.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (from an optimiser of the same type)."""
        kind = state_dict.get("optimizer")
        if kind != type(self).__name__:
            raise ValueError(f"A {kind} state dict cannot be loaded into {type(self).__name__}.")
        validated = type(self)(1.0, **state_dict["hyperparameters"])
        for k in self._hyperparameters:
            setattr(self, k, getattr(validated, k))
        self.lr = state_dict["lr"]
        self.state = {name: dict(s) for name, s in state_dict["state"].items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in ("lr", *self._hyperparameters))
        return f"{type(self).__name__}({args})"

    def _lr_for(self, xp: Any, p: Array) -> float | Array:
        """The learning rate in ``p``'s dtype (a 0-d float64 lr must not promote float32)."""
        lr = self._lr
        if isinstance(lr, float) or lr.dtype == p.dtype:
            return lr
        return xp.astype(lr, p.dtype)

    def _init_state(self, xp: Any, p: Array) -> dict[str, Array]:
        return {}

    def _update(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    g ← g + λp;  v ← μv + g (v₀ = 0, so v₁ = g);  p ← p − η·(g + μv if nesterov else v).
    With μ = 0: p ← p − η(g + λp).
    """

    _hyperparameters = ("momentum", "nesterov", "weight_decay")

    def __init__(
        self,
        lr: float | Array,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.momentum = _check_real("momentum", momentum, low=0.0)
        self.weight_decay = _check_real("weight_decay", weight_decay, low=0.0)
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be True or False; got nesterov={nesterov!r}.")
        if nesterov and self.momentum == 0.0:
            raise ValueError(f"nesterov=True requires momentum > 0; got momentum={momentum!r}.")
        self.nesterov = nesterov

    def _init_state(self, xp: Any, p: Array) -> dict[str, Array]:
        return {"momentum_buffer": xp.zeros_like(p)} if self.momentum else {}

    def _update(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = state["momentum_buffer"] = self.momentum * state["momentum_buffer"] + g
            g = g + self.momentum * v if self.nesterov else v
        return p - lr * g


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, as ``torch.optim.Adam``.

    g ← g + λp;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    p ← p − η/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).
    """

    _hyperparameters = ("betas", "eps", "weight_decay")

    def __init__(
        self,
        lr: float | Array = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got betas={betas!r}.")
        self.betas = (
            _check_real("beta1", betas[0], low=0.0, high=1.0),
            _check_real("beta2", betas[1], low=0.0, high=1.0),
        )
        self.eps = _check_real("eps", eps, low=0.0)
        self.weight_decay = _check_real("weight_decay", weight_decay, low=0.0)

    def _init_state(self, xp: Any, p: Array) -> dict[str, Array]:
        return {"exp_avg": xp.zeros_like(p), "exp_avg_sq": xp.zeros_like(p)}

    def _update(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        if self.weight_decay:
            g = g + self.weight_decay * p
        return self._adam(xp, p, g, state, lr)

    def _adam(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        """The bias-corrected moment step shared by Adam and AdamW."""
        beta1, beta2 = self.betas
        t = state["step"]
        m = state["exp_avg"] = beta1 * state["exp_avg"] + (1.0 - beta1) * g
        v = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * (g * g)
        denom = xp.sqrt(v) / math.sqrt(1.0 - beta2**t) + self.eps
        return p - (lr / (1.0 - beta1**t)) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    p ← p − ηλp, then the Adam step on p with the raw gradient g (no L2 term).
    """

    def __init__(
        self,
        lr: float | Array = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _update(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        if self.weight_decay:
            p = p * (1.0 - lr * self.weight_decay)
        return self._adam(xp, p, g, state, lr)


class RMSprop(Optimizer):
    """RMSprop, optionally centred and with momentum, as ``torch.optim.RMSprop``.

    g ← g + λp;  s ← αs + (1−α)g²;  d = √s + ε, or √(s − ḡ²) + ε with ḡ ← αḡ + (1−α)g if
    centred;  p ← p − η·g/d, or with momentum b ← μb + g/d, p ← p − ηb.
    """

    _hyperparameters = ("alpha", "eps", "momentum", "centered", "weight_decay")

    def __init__(
        self,
        lr: float | Array = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.alpha = _check_real("alpha", alpha, low=0.0, high=1.0)
        self.eps = _check_real("eps", eps, low=0.0)
        self.momentum = _check_real("momentum", momentum, low=0.0)
        if not isinstance(centered, bool):
            raise ValueError(f"centered must be True or False; got centered={centered!r}.")
        self.centered = centered
        self.weight_decay = _check_real("weight_decay", weight_decay, low=0.0)

    def _init_state(self, xp: Any, p: Array) -> dict[str, Array]:
        state = {"square_avg": xp.zeros_like(p)}
        if self.momentum:
            state["momentum_buffer"] = xp.zeros_like(p)
        if self.centered:
            state["grad_avg"] = xp.zeros_like(p)
        return state

    def _update(self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any) -> Array:
        alpha = self.alpha
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = state["square_avg"] = alpha * state["square_avg"] + (1.0 - alpha) * (g * g)
        if self.centered:
            g_avg = state["grad_avg"] = alpha * state["grad_avg"] + (1.0 - alpha) * g
            s = s - g_avg * g_avg
        denom = xp.sqrt(s) + self.eps
        if self.momentum:
            b = state["momentum_buffer"] = self.momentum * state["momentum_buffer"] + g / denom
            return p - lr * b
        return p - lr * (g / denom)


# --------------------------------------------------------------------------- validation
def _check_real(name: str, value: Any, *, low: float, high: float | None = None) -> float:
    """``value`` as a float in [low, high) (or [low, ∞)), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {name}={value!r}.")
    value = float(value)
    if high is None:
        if not low <= value < math.inf:
            raise ValueError(f"{name} must be finite and >= {low}; got {name}={value!r}.")
    elif not low <= value < high:
        raise ValueError(f"{name} must be in [{low}, {high}); got {name}={value!r}.")
    return value


def _check_lr(lr: Any, *, allow_zero: bool) -> float | Array:
    """A finite lr > 0 (≥ 0 when a schedule sets it) as a float, or a real 0-d array as is."""
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        value = float(lr)
        if not (math.isfinite(value) and (value > 0.0 or (allow_zero and value == 0.0))):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"lr must be finite and {bound}; got lr={lr!r}.")
        return value
    if aac.is_array_api_obj(lr) and lr.ndim == 0:
        if aac.array_namespace(lr).isdtype(lr.dtype, "real floating"):
            return lr
    raise ValueError(f"lr must be a positive number or a real floating 0-d array; got lr={lr!r}.")
