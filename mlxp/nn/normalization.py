"""Batch normalisation layers: BatchNorm1d (flat data, sequences) and BatchNorm2d (images).

Owns the running statistics (buffers). A training ``forward`` computes their new values
but does not write them: it hands them out (:meth:`~mlxp.nn.Layer.state_updates`) for the
training step to return as the model's new state. The arithmetic is in
:mod:`mlxp.nn.functional` (``batch_norm_train``, ``batch_norm_running``,
``batch_norm_eval``, ``batch_norm_backward``).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, ClassVar

from mlxp._compat import Generator
from mlxp._params import POSITIVE_INT, Interval
from mlxp.nn import functional as F
from mlxp.nn.layers import Layer

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Layer):
    """Batch normalisation over the channels (axis 1); subclasses fix the input ranks.

    y = γ (x − μ)/√(σ² + ε) + β per channel. In training μ, σ² are the batch mean
    and biased variance, and the running statistics move towards the batch statistics:
    running_mean ← (1 − momentum)·running_mean + momentum·μ, and likewise
    running_var with the unbiased variance. ``forward`` leaves ``buffers`` as they were
    and hands the new values out through :meth:`state_updates` until ``clear_cache``;
    whoever trains commits them (``fit``'s step returns them as the model's new state; by
    hand, ``layer.buffers.update(layer.state_updates())``). A training ``forward`` given
    ``rows`` (0/1 per row) takes the statistics over the rows of weight 1 only: a compiled
    step pads a short last batch to the full size and the padding stays unseen. In
    evaluation the running statistics are used. Parameters ``gamma`` (ones) and ``beta``
    (zeros) and buffers ``running_mean`` (zeros) and ``running_var`` (ones) have shape (C,).
    """

    batch_statistics = True
    _ranks: tuple[int, ...] = ()
    _shapes = ""  # the accepted input shapes, for error messages; C is num_features
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "num_features": [POSITIVE_INT],
        "momentum": [Interval(Real, 0.0, 1.0, closed="both")],
        "eps": [Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(num_features=num_features, momentum=momentum, eps=eps)
        self.num_features = int(num_features)
        self.momentum, self.eps = float(momentum), float(eps)

    def initialize(self, rng: Generator, *, xp: Any, device: Any, dtype: Any) -> None:
        shape = (self.num_features,)
        self.params["gamma"] = xp.ones(shape, dtype=dtype, device=device)
        self.params["beta"] = xp.zeros(shape, dtype=dtype, device=device)
        self.buffers["running_mean"] = xp.zeros(shape, dtype=dtype, device=device)
        self.buffers["running_var"] = xp.ones(shape, dtype=dtype, device=device)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) + 1 not in self._ranks or shape[0] != self.num_features:
            shapes = self._shapes.replace("C", str(self.num_features))
            raise ValueError(f"{type(self).__name__} expects x of shape {shapes}; got {shape}.")
        return tuple(shape)

    def forward(self, x: Any, training: bool = False, rows: Any = None) -> Any:
        """y (the shape of x); in training, ``rows`` (n,) of 0 or 1, if given, marks the
        rows the batch statistics are taken over (the others: padding)."""
        name = type(self).__name__
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            shapes = self._shapes.replace("C", str(self.num_features))
            raise ValueError(f"{name} expects x of shape {shapes}; got {tuple(x.shape)}.")
        gamma, beta, buffers = self.params["gamma"], self.params["beta"], self.buffers
        if not training:
            running = buffers["running_mean"], buffers["running_var"]
            y, x_hat, inv_std = F.batch_norm_eval(x, gamma, beta, *running, self.eps)
            self._cache = {"x_hat": x_hat, "inv_std": inv_std, "training": False}
            return y
        if math.prod(x.shape) // self.num_features < 2:
            raise ValueError(
                f"{name} needs more than one value per feature in training; "
                f"got x of shape {tuple(x.shape)}."
            )
        y, x_hat, inv_std, mean, var = F.batch_norm_train(x, gamma, beta, self.eps, rows=rows)
        running = buffers["running_mean"], buffers["running_var"]
        new_mean, new_var = F.batch_norm_running(*running, mean, var, self.momentum)
        updates = {"running_mean": new_mean, "running_var": new_var}
        self._cache = {"x_hat": x_hat, "inv_std": inv_std, "training": True, "rows": rows}
        self._cache["updates"] = updates
        return y

    def state_updates(self) -> dict[str, Any]:
        """{"running_mean": μ̄, "running_var": σ̄²} (C,) after the last training forward
        (see :class:`_BatchNorm`); ``{}`` after an evaluation forward or ``clear_cache``."""
        return dict(self._cache.get("updates", {}))

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Fill ``grads``; return ∂L/∂x (None with ``input_grad=False``)."""
        c = self._cache
        dx, d_gamma, d_beta = F.batch_norm_backward(
            c["x_hat"], c["inv_std"], self.params["gamma"], grad, c["training"], rows=c.get("rows")
        )
        self.grads = {"gamma": d_gamma, "beta": d_beta}
        return dx if input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of x (n, C) or (n, C, L), as ``torch.nn.BatchNorm1d``.

    Statistics per feature (axis 1) over the n (and L) values; see :class:`_BatchNorm`.
    """

    _ranks = (2, 3)
    _shapes = "(n, C) or (n, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images x (N, C, H, W), as ``torch.nn.BatchNorm2d``.

    Statistics per channel over the N·H·W values; see :class:`_BatchNorm`.
    """

    _ranks = (4,)
    _shapes = "(N, C, H, W)"
