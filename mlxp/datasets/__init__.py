"""Small real data sets shipped inside the package (see ``data/README.md`` for sources).

Loaders return NumPy arrays; move them to a backend with ``mlxp.get_backend().asarray``
or let the estimators do it.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

__all__ = ["load_diabetes", "load_digits"]


def _read(name: str, delimiter: str | None) -> np.ndarray:
    path = resources.files(__package__) / "data" / name
    with path.open("rb") as raw, gzip.open(raw) as f:
        return np.loadtxt(f, delimiter=delimiter)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """8×8 images of handwritten digits: X (1797, 64) float64 in [0, 16], y (1797,) int64 in 0..9.

    UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998).
    """
    data = _read("digits.csv.gz", ",")
    return data[:, :-1], data[:, -1].astype(np.int64)


def load_diabetes(*, scaled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Diabetes progression: X (442, 10) float64, y (442,) float64 (a disease measure).

    Ten baseline variables (age, sex, BMI, blood pressure, six serum measurements) of
    442 patients (Efron, Hastie, Johnstone, Tibshirani, 2004, "Least Angle Regression").
    ``scaled=True`` centres each column and scales it to unit Euclidean norm, as
    scikit-learn's ``load_diabetes`` does; ``scaled=False`` gives the raw values.
    """
    X = _read("diabetes_data_raw.csv.gz", None)
    y = _read("diabetes_target.csv.gz", None)
    if scaled:
        X = X - X.mean(axis=0)
        X = X / np.sqrt((X**2).sum(axis=0))
    return X, y
