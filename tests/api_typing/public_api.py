"""A program using mlxp's public API as a user writes it, checked by mypy --strict
(tests/test_typing.py), and run there: every call here must reach a fully annotated signature."""

from __future__ import annotations

import numpy as np

import mlxp
from mlxp.base import BaseEstimator
from mlxp.datasets import load_diabetes, load_digits
from mlxp.linear_model import LinearRegression, LogisticRegression, Ridge
from mlxp.metrics import accuracy_score, r2_score
from mlxp.nn import Dense, MLPClassifier, Sequential
from mlxp.nn.callbacks import History, show_progress
from mlxp.optim import SGD, Adam, StepLR, apply_schedule


def main(path: str) -> float:
    X, y = load_diabetes()
    with mlxp.use_backend("numpy") as backend:
        assert backend is None or isinstance(backend, mlxp.Backend)
        model: LinearRegression = LinearRegression(backend="numpy").fit(X, y)
    ridge: Ridge = Ridge(alpha=0.5).fit(X, y)
    params: dict[str, object] = ridge.get_params()
    assert isinstance(model, BaseEstimator) and "backend" in params
    mlxp.save(model, path)
    loaded = mlxp.load(path)
    score: float = model.score(X, y) + float(r2_score(y, loaded.predict(X)))
    images, labels = load_digits()
    clf = LogisticRegression(C=0.1).fit(images / 16, labels)
    net = MLPClassifier((8,), max_iter=5, verbose="auto")
    fitted = net.fit(images / 16, labels)
    history: History = Sequential([Dense(64, 2)], seed=0).fit(
        images / 16, np.zeros((len(labels), 2)), epochs=1, progress=show_progress(False)
    )
    sgd = SGD(0.1, momentum=0.9)
    lr: float = apply_schedule(sgd, StepLR(0.1, step_size=2), 3)
    weights = Adam(1e-3).step({"w": np.ones(3)}, {"w": np.ones(3)})
    names: list[str] = [f"{n}:{d}" for n, d in mlxp.available_backends()]
    accuracy = float(accuracy_score(labels, clf.predict(images / 16)))
    return score + accuracy + len(names) + len(history) + fitted.n_iter_ + lr + len(weights)
