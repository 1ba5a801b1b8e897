"""scikit-learn's stopping rule for the network estimators, as a training callback, and
the validation rows it sets aside."""

from __future__ import annotations

from typing import Any

from mlxp._compat import Generator
from mlxp.nn import streaming

__all__ = ["SklearnStopping", "set_aside"]


def set_aside(
    place: Any, X: Any, targets: Any, fraction: float, seed: int
) -> tuple[Any, Any, tuple[Any, Any]]:
    """(the training rows of X, of targets, (X, targets) of a random ``fraction`` of the
    rows set aside for validation); Dask row chunks set their share aside each."""
    if streaming.is_dask(X):
        return streaming.split_chunks(X, targets, fraction, Generator(seed))
    n, xp = X.shape[0], place.xp
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise ValueError(
            f"early_stopping: validation_fraction={fraction} of {n} "
            f"sample(s) sets {n_val} aside for validation and leaves no sample to train on."
        )
    order = Generator(seed).permutation(n, xp=xp, device=place.device)
    val_rows, rows = order[:n_val], order[n_val:]
    validation = (xp.take(X, val_rows, axis=0), xp.take(targets, val_rows, axis=0))
    return xp.take(X, rows, axis=0), xp.take(targets, rows, axis=0), validation


class SklearnStopping:
    """scikit-learn's rule: stop after ``n_iter_no_change`` epochs without a ``tol`` gain.

    The monitored value is the training loss (with the L2 term), or with
    ``validation`` the validation score, whose best weights are restored at the end.
    The estimator gives ``alpha``, ``tol``, ``n_iter_no_change``, the number of training
    rows ``_n_train`` and ``_score_network(model, X, targets)``.
    """

    def __init__(self, estimator: Any, validation: tuple[Any, Any] | None) -> None:
        self.est, self.validation = estimator, validation
        self.loss_curve: list[float] = []
        self.scores: list[float] = []
        self.best_loss, self.best_score, self.best_weights, self.count = float("inf"), None, None, 0
        self.converged = False

    def on_train_begin(self, model: Any) -> None:
        pass

    def on_epoch_end(self, model: Any, epoch: int, logs: dict[str, float]) -> bool:
        est = self.est
        penalty = float(sum(model.xp.sum(W**2) for W in model.decayed.values()))  # one read
        loss = logs["loss"] + 0.5 * est.alpha * penalty / est._n_train
        self.loss_curve.append(loss)
        if self.validation is not None:
            score = est._score_network(model, *self.validation)
            self.scores.append(score)
            improved = self.best_score is None or score >= self.best_score + est.tol
            if self.best_score is None or score > self.best_score:
                self.best_score, self.best_weights = score, model.get_weights()
        else:
            improved = loss <= self.best_loss - est.tol
            self.best_loss = min(self.best_loss, loss)
        self.count = 0 if improved else self.count + 1
        if self.count > est.n_iter_no_change:
            self.converged = True
            if self.best_weights is not None:
                model.set_weights(self.best_weights)
            return True
        return False
