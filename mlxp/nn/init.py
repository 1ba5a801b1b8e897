"""Weight initialisers, drawn from the portable generator: same seed, same weights everywhere.

For a weight of fan-in ``fan_in`` and fan-out ``fan_out``:

* He (Kaiming): Var = 2/fan_in — uniform on ±√(6/fan_in), or normal with std √(2/fan_in);
* Glorot (Xavier): Var = 2/(fan_in + fan_out) — uniform on ±√(6/(fan_in + fan_out)),
  or normal with std √(2/(fan_in + fan_out)).
"""

from __future__ import annotations

import math
from typing import Any

from mlxp._compat import Generator

__all__ = ["INITIALIZERS", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform"]


def he_uniform(
    rng: Generator,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    *,
    xp: Any,
    device: Any,
    dtype: Any,
) -> Any:
    """U(−b, b) with b = √(6/fan_in): keeps activations' variance through ReLU layers."""
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(shape, xp=xp, device=device, dtype=dtype, low=-bound, high=bound)


def he_normal(
    rng: Generator,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    *,
    xp: Any,
    device: Any,
    dtype: Any,
) -> Any:
    """N(0, 2/fan_in)."""
    return rng.normal(shape, xp=xp, device=device, dtype=dtype, scale=math.sqrt(2.0 / fan_in))


def glorot_uniform(
    rng: Generator,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    *,
    xp: Any,
    device: Any,
    dtype: Any,
) -> Any:
    """U(−b, b) with b = √(6/(fan_in + fan_out)): balances forward and backward variance."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(shape, xp=xp, device=device, dtype=dtype, low=-bound, high=bound)


def glorot_normal(
    rng: Generator,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    *,
    xp: Any,
    device: Any,
    dtype: Any,
) -> Any:
    """N(0, 2/(fan_in + fan_out))."""
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(shape, xp=xp, device=device, dtype=dtype, scale=std)


INITIALIZERS = {
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
}
