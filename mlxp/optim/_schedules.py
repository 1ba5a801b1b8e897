"""Learning-rate schedules for every mlxp model that trains iteratively.

A schedule is built from the initial learning rate η₀ and maps an epoch (counted
from 0) to the learning rate for that epoch, a Python float, using the closed forms
of ``torch.optim.lr_scheduler``. Apply one at the start of each epoch::

    for epoch in range(n_epochs):
        apply_schedule(optimizer, schedule, epoch)   # optimizer.lr = schedule(epoch)
        ...

:class:`ReduceLROnPlateau` depends on the training history instead: call its
``step(metric)`` once per epoch with the epoch's metric and set ``optimizer.lr``
to what it returns.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

from mlxp._params import POSITIVE_INT, Interval, StrOptions, validate_params

__all__ = [
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "ReduceLROnPlateau",
    "Schedule",
    "StepLR",
    "apply_schedule",
]

_POSITIVE = [Interval(numbers.Real, 0, None, closed="neither")]
_NON_NEGATIVE = [Interval(numbers.Real, 0, None, closed="left")]
_EPOCH = {"epoch": [Interval(numbers.Integral, 0, None, closed="left")]}


class Schedule:
    """Base class: a learning rate per epoch, ``schedule(epoch) -> float``.

    Parameters
    ----------
    lr : float
        The initial learning rate η₀ > 0.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"lr": _POSITIVE}

    def __init__(self, lr: float, **hyperparameters: Any) -> None:
        validate_params(self, self._parameter_constraints, {"lr": lr, **hyperparameters})
        self.lr = float(lr)

    def __call__(self, epoch: int) -> float:
        validate_params(self, _EPOCH, {"epoch": epoch})
        return self._at(int(epoch))

    def _at(self, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ConstantLR(Schedule):
    """η_e = η₀ for every epoch e (unlike torch's ConstantLR, which has a warm-up factor)."""

    def _at(self, epoch: int) -> float:
        return self.lr


class StepLR(Schedule):
    """η_e = η₀ · γ^⌊e / step_size⌋: multiply by γ every ``step_size`` epochs."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _POSITIVE,
        "step_size": [POSITIVE_INT],
        "gamma": _POSITIVE,
    }

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(lr, step_size=step_size, gamma=gamma)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def _at(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Schedule):
    """η_e = η₀ · γᵉ."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"lr": _POSITIVE, "gamma": _POSITIVE}

    def __init__(self, lr: float, gamma: float) -> None:
        super().__init__(lr, gamma=gamma)
        self.gamma = float(gamma)

    def _at(self, epoch: int) -> float:
        return self.lr * self.gamma**epoch


class CosineAnnealingLR(Schedule):
    """η_e = η_min + (η₀ − η_min)(1 + cos(πe / T_max)) / 2.

    Reaches η_min at e = T_max; past it the cosine continues (rising again), as torch's.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _POSITIVE,
        "T_max": [POSITIVE_INT],
        "eta_min": _NON_NEGATIVE,
    }

    def __init__(self, lr: float, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(lr, T_max=T_max, eta_min=eta_min)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def _at(self, epoch: int) -> float:
        cosine = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        return self.eta_min + (self.lr - self.eta_min) * cosine


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    Call :meth:`step` once per epoch with the epoch's metric (a host float). A metric
    improves on the best so far, in mode "min", when it is below best·(1 − threshold)
    (above best·(1 + threshold) in mode "max"): torch's "rel" threshold. After
    ``patience`` epochs in a row without improvement, the next one without improvement
    sets η ← max(η·factor, min_lr) and starts the count again.

    Parameters
    ----------
    lr : float
        The initial learning rate η₀ > 0.
    factor : float
        The reduction factor, in (0, 1).
    patience : int
        How many epochs without improvement are tolerated, ≥ 0.
    threshold : float
        The relative improvement that counts, ≥ 0.
    mode : {"min", "max"}
        Whether the metric should decrease (a loss) or increase (an accuracy).
    min_lr : float
        The floor of the learning rate, ≥ 0.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "lr": _POSITIVE,
        "factor": [Interval(numbers.Real, 0, 1, closed="neither")],
        "patience": [Interval(numbers.Integral, 0, None, closed="left")],
        "threshold": _NON_NEGATIVE,
        "mode": [StrOptions({"min", "max"})],
        "min_lr": _NON_NEGATIVE,
    }

    def __init__(
        self,
        lr: float,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        mode: str = "min",
        min_lr: float = 0.0,
    ) -> None:
        given = dict(lr=lr, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr)
        validate_params(self, self._parameter_constraints, {**given, "mode": mode})
        self.lr, self.factor, self.threshold = float(lr), float(factor), float(threshold)
        self.patience, self.mode, self.min_lr = int(patience), mode, float(min_lr)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0

    def step(self, metric: float) -> float:
        """Record one epoch's metric; return the learning rate for the next epoch."""
        metric = float(metric)
        if self._improves(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.num_bad_epochs = 0
        return self.lr

    def __call__(self, epoch: int | None = None) -> float:
        """The current learning rate (``epoch`` is accepted for uniformity and ignored)."""
        return self.lr

    def _improves(self, metric: float) -> bool:
        if self.mode == "min":
            return metric < self.best * (1.0 - self.threshold)
        return metric > self.best * (1.0 + self.threshold)


def apply_schedule(optimizer: Any, schedule: Schedule | ReduceLROnPlateau, epoch: int) -> float:
    """Set ``optimizer.lr = schedule(epoch)`` and return that learning rate."""
    optimizer.lr = schedule(epoch)
    return float(optimizer.lr)
