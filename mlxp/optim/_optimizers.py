"""Optimisers shared by every mlxp model: SGD, Adam, AdamW and RMSprop.

An optimiser maps parameters and their gradients, both dicts of arrays keyed by
name, to the updated parameters: ``params = opt.step(params, grads)``, one parameter
after another (the readable reference). The training loop instead keeps every
parameter of a model in one flat buffer and calls the pure
``params, state = opt.update(params, grads, state)``: the same rule as a short fixed
sequence of whole-buffer operations, whatever the number of parameters (as
PyTorch's ``foreach`` optimisers). The update rules are ``torch.optim``'s term for
term. Nothing is written in place (so JAX works): each step returns new arrays and
replaces the state's buffers with new ones; only a caller that gives the buffers up
(``update(..., in_place=True)``: the training loop) lets Adam write into them on NumPy.
The state of a parameter (its step count t and buffers such as velocities
and moments) is created at its first step with ``zeros_like``, hence on its device
and in its dtype. Step sizes and bias corrections are Python floats computed from
the integer step count, so float32 parameters stay float32, and ``step`` never
reads an array back to the host; in ``update`` the count may be a 0-d array (a
traced, compiled step), the same expressions then computed on the device.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import array_api_compat as aac

from mlxp._kernels import adam_update
from mlxp._params import Interval, Tuples, validate_params
from mlxp._special import one_minus_power
from mlxp.exceptions import InvalidParameterError

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop"]

Array = Any


class _RealScalarArray:
    """A constraint of :mod:`mlxp._params`: a real floating 0-d array of any namespace."""

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, numbers.Number) or not aac.is_array_api_obj(value):
            return False
        return bool(
            value.ndim == 0 and aac.array_namespace(value).isdtype(value.dtype, "real floating")
        )

    def describe(self, plural: bool = False) -> str:
        return "real floating 0-d arrays" if plural else "a real floating 0-d array"


_NON_NEGATIVE = [Interval(numbers.Real, 0, None, closed="left")]
_LR = [Interval(numbers.Real, 0, None, closed="neither"), _RealScalarArray()]
_SCHEDULED_LR = [Interval(numbers.Real, 0, None, closed="left"), _RealScalarArray()]
_DECAY_RATE = [Interval(numbers.Real, 0, 1, closed="left")]


def _as_lr(lr: float | Array) -> float | Array:
    """A validated learning rate: a number as a Python float, a 0-d array as it is."""
    return float(lr) if isinstance(lr, numbers.Real) else lr


class Optimizer:
    """Base class: the step loop, per-parameter state, the learning rate, state dicts.

    A subclass declares ``lr`` and its hyperparameters, in the order of its signature, in
    ``_parameter_constraints`` (see :mod:`mlxp._params`; ``__init__`` checks them), and
    implements ``_init_state`` (the zero buffers of one parameter) and
    ``_update(xp, p, g, state, lr)`` (one parameter's new value, replacing the buffers in its
    state dict); one that can write into buffers it is given up (see :meth:`update`) also
    overrides ``_update_in_place``.

    Parameters
    ----------
    lr : float or 0-d array
        The learning rate η > 0. A 0-d array of the parameters' namespace (a step
        derived from the data) is used as it is, cast to each parameter's dtype,
        and never read back to the host.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"lr": _LR}

    def __init__(self, lr: float | Array, **hyperparameters: Any) -> None:
        validate_params(self, self._parameter_constraints, {"lr": lr, **hyperparameters})
        self._lr = _as_lr(lr)
        self.state: dict[str, dict[str, Any]] = {}

    @property
    def _hyperparameters(self) -> tuple[str, ...]:
        """The names of the hyperparameters besides ``lr``."""
        return tuple(name for name in self._parameter_constraints if name != "lr")

    @property
    def lr(self) -> float | Array:
        """The current learning rate; schedules set it (``opt.lr = schedule(epoch)``)."""
        return self._lr

    @lr.setter
    def lr(self, value: float | Array) -> None:
        validate_params(self, {"lr": _SCHEDULED_LR}, {"lr": value})  # a schedule may reach 0
        self._lr = _as_lr(value)

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

    def init_state(self, p: Array) -> dict[str, Any]:
        """The state of a parameter (or a flat buffer of them) before its first update."""
        return {"step": 0, **self._init_state(aac.array_namespace(p), p)}

    def update(
        self,
        p: Array,
        g: Array,
        state: dict[str, Any],
        lr: float | Array | None = None,
        *,
        in_place: bool = False,
    ) -> tuple[Array, dict[str, Any]]:
        """(p', state'): one step of p (any shape, typically every parameter of a model
        flattened into one buffer) with gradient g, pure: ``state`` (from
        :meth:`init_state`, or a previous ``update``) is not modified. ``lr`` overrides
        :attr:`lr` (a 0-d array keeps a compiled step from depending on its value).

        ``in_place=True`` says the caller gives p and the state's buffers up (it will read
        them no more, as a training loop that owns them): an optimiser may then write the
        results into them where the library allows it (Adam and AdamW on NumPy,
        :func:`mlxp._kernels.adam_update`), and p' and state' may be those arrays."""
        xp = aac.array_namespace(p)
        state = {**state, "step": state["step"] + 1}
        lr = self._lr if lr is None else lr
        if not isinstance(lr, float) and lr.dtype != p.dtype:
            lr = xp.astype(lr, p.dtype)
        update = self._update_in_place if in_place else self._update
        return update(xp, p, g, state, lr), state

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
        """p's new value, the buffers of ``state`` replaced."""
        raise NotImplementedError

    def _update_in_place(
        self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any
    ) -> Array:
        """:meth:`_update` for a caller that gives p and the state's buffers up (see
        :meth:`update`); an optimiser that can write into them overrides it."""
        return self._update(xp, p, g, state, lr)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    g ← g + λp;  v ← μv + g (v₀ = 0, so v₁ = g);  p ← p − η·(g + μv if nesterov else v).
    With μ = 0: p ← p − η(g + λp).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _LR,
        "momentum": _NON_NEGATIVE,
        "nesterov": [bool],
        "weight_decay": _NON_NEGATIVE,
    }

    def __init__(
        self,
        lr: float | Array,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if nesterov and momentum == 0:
            raise InvalidParameterError(
                f"nesterov=True requires momentum > 0; got momentum={momentum!r}."
            )
        self.momentum, self.nesterov, self.weight_decay = (
            float(momentum),
            nesterov,
            float(weight_decay),
        )

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
    p ← p − η/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε). The state holds the moments scaled,
    u = m/(1−β₁) and w = v/(1−β₂), so that they update as u ← β₁u + g and w ← β₂w + g²
    (two operations fewer), and the step is p − c·u/(√w + ε′) with the scalars
    c = η√(1−β₂ᵗ)(1−β₁)/((1−β₁ᵗ)√(1−β₂)) and ε′ = ε√(1−β₂ᵗ)/√(1−β₂): ten whole-buffer
    operations in all, the same iterates as torch's to rounding.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _LR,
        "betas": [Tuples(_DECAY_RATE[0], 2)],
        "eps": _NON_NEGATIVE,
        "weight_decay": _NON_NEGATIVE,
    }

    def __init__(
        self,
        lr: float | Array = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def _init_state(self, xp: Any, p: Array) -> dict[str, Array]:
        return {"exp_avg": xp.zeros_like(p), "exp_avg_sq": xp.zeros_like(p)}

    def _update_in_place(
        self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any
    ) -> Array:
        return self._update(xp, p, g, state, lr, in_place=True)

    def _update(
        self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any, in_place: bool = False
    ) -> Array:
        if self.weight_decay:
            g = g + self.weight_decay * p
        return self._adam(p, g, state, lr, in_place)

    def _adam(self, p: Array, g: Array, state: dict[str, Any], lr: Any, in_place: bool) -> Array:
        """The bias-corrected moment step shared by Adam and AdamW
        (:func:`mlxp._kernels.adam_update`; in place if the caller gives the buffers up)."""
        beta1, beta2 = self.betas
        t = state["step"]
        root = one_minus_power(beta2, t, p.dtype) ** 0.5  # a float, or 0-d when t is an array
        scale = (1.0 - beta1) / (1.0 - beta2) ** 0.5
        eps = self.eps * root / (1.0 - beta2) ** 0.5
        step = lr * root * scale / one_minus_power(beta1, t, p.dtype)
        if not isinstance(root, float):  # 0-d, in float32 at least: back to p's dtype
            xp = aac.array_namespace(root)
            step, eps = xp.astype(step, p.dtype), xp.astype(eps, p.dtype)
        p, state["exp_avg"], state["exp_avg_sq"] = adam_update(
            p, g, state["exp_avg"], state["exp_avg_sq"], self.betas, step, eps, in_place=in_place
        )  # the moments scaled: u = m / (1 − β₁), w = v / (1 − β₂)
        return p


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

    def _update(
        self, xp: Any, p: Array, g: Array, state: dict[str, Any], lr: Any, in_place: bool = False
    ) -> Array:
        if self.weight_decay:
            p = p * (1.0 - lr * self.weight_decay)
        return self._adam(p, g, state, lr, in_place)


class RMSprop(Optimizer):
    """RMSprop, optionally centred and with momentum, as ``torch.optim.RMSprop``.

    g ← g + λp;  s ← αs + (1−α)g²;  d = √s + ε, or √(s − ḡ²) + ε with ḡ ← αḡ + (1−α)g if
    centred;  p ← p − η·g/d, or with momentum b ← μb + g/d, p ← p − ηb.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _LR,
        "alpha": _DECAY_RATE,
        "eps": _NON_NEGATIVE,
        "momentum": _NON_NEGATIVE,
        "centered": [bool],
        "weight_decay": _NON_NEGATIVE,
    }

    def __init__(
        self,
        lr: float | Array = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            lr,
            alpha=alpha,
            eps=eps,
            momentum=momentum,
            centered=centered,
            weight_decay=weight_decay,
        )
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.centered, self.weight_decay = centered, float(weight_decay)

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
