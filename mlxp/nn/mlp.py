"""Multi-layer perceptrons with scikit-learn's interface: ``MLPClassifier`` and ``MLPRegressor``.

Owns the estimators' hyperparameters and their constraints, the network they build, the
scikit-learn stopping rule and L2-penalised loss curve, and the fitted attributes
(``coefs_``: every weight the layers declare, ``intercepts_``: the matching biases).
"""

from __future__ import annotations

import copy
from numbers import Integral, Real
from typing import Any, ClassVar

from mlxp._classifier import MarginClassifierMixin
from mlxp._compat import argmax, check_random_state, move
from mlxp._model_state import (
    check_fields,
    classes_to_json,
    feature_names_to_json,
    params_from_json,
    params_to_json,
)
from mlxp._params import Interval, StrOptions, Tuples
from mlxp._validation import check_is_fitted, validate_data
from mlxp.base import BACKEND_CONSTRAINT, BaseEstimator, ClassifierMixin, RegressorMixin
from mlxp.exceptions import warn_not_converged
from mlxp.nn import layers as L
from mlxp.nn import streaming
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mlxp.nn.model_files import check_fitted
from mlxp.nn.sequential import Sequential
from mlxp.nn.stopping import SklearnStopping, set_aside
from mlxp.nn.streaming import BlockwiseClassifier
from mlxp.optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

ACTIVATIONS = {"relu": L.ReLU, "tanh": L.Tanh, "logistic": L.Sigmoid, "identity": None}

_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_POSITIVE = Interval(Real, 0, None, closed="neither")


def _weights(model: Sequential) -> tuple[list[Any], list[Any]]:
    """(coefs_, intercepts_): every weight the layers declare (``Layer.decayed``), in layer
    order, and the other parameters (the biases) of the layers that have weights."""
    coefs = list(model.decayed.values())
    intercepts = [
        v
        for layer in model.layers
        if layer.decayed
        for k, v in layer.params.items()
        if k not in layer.decayed
    ]
    return coefs, intercepts


class _BaseMLP(BaseEstimator):
    """Shared fitting: a :class:`Sequential` of Dense layers and activations, trained by
    mini-batch Adam or SGD on the mean loss + ½·alpha·‖W‖²/n (biases not penalised).

    ``compile`` ("auto", True or False) is :meth:`Sequential.fit`'s: "auto" runs each
    training step as one compiled program on JAX, True also on CuPy and PyTorch."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "hidden_layer_sizes": [_POSITIVE_INT, Tuples(_POSITIVE_INT)],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"adam", "sgd"})],
        "alpha": [_NON_NEGATIVE],
        "batch_size": [StrOptions({"auto"}), _POSITIVE_INT],
        "learning_rate_init": [_POSITIVE],
        "max_iter": [_POSITIVE_INT],
        "tol": [_NON_NEGATIVE],
        "n_iter_no_change": [_POSITIVE_INT],
        "early_stopping": [bool],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "momentum": [_NON_NEGATIVE],
        "nesterovs_momentum": [bool],
        "shuffle": [bool],
        "verbose": [bool, Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [_POSITIVE],
        "warm_start": [bool],
        "compile": [StrOptions({"auto"}), bool],
        "backend": BACKEND_CONSTRAINT,
    }
    feature_names_in_: Any  # fitted, as the following (set by a fit or a model file)
    classes_: Any
    _y_1d: bool

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        random_state: Any = None,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        shuffle: bool = True,
        verbose: bool | str = False,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        warm_start: bool = False,
        compile: bool | str = "auto",
        backend: str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.shuffle = shuffle
        self.verbose = verbose
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.warm_start = warm_start
        self.compile = compile
        self.backend = backend

    # ------------------------------------------------------------------ training
    def _network_input(self, X: Any) -> tuple[Any, dict[str, Any]]:
        """(X as the rows the network reads, what :meth:`_network` needs to know of X)."""
        return X, {}

    def _network(self, n_in: int, n_out: int, seed: int) -> Sequential:
        sizes = self.hidden_layer_sizes
        widths = [n_in, *((sizes,) if isinstance(sizes, Integral) else sizes), n_out]
        layers: list[Any] = []
        activation = ACTIVATIONS[self.activation]
        init = "he_uniform" if self.activation == "relu" else "glorot_uniform"
        for i in range(len(widths) - 1):
            layers.append(L.Dense(widths[i], widths[i + 1], init=init))
            if activation is not None and i < len(widths) - 2:
                layers.append(activation())
        return Sequential(layers, seed=seed)

    def _optimizer(self) -> Any:
        if self.solver == "adam":
            return Adam(self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        return SGD(
            self.learning_rate_init,
            momentum=self.momentum,
            nesterov=self.nesterovs_momentum and self.momentum > 0,
        )

    def _train(
        self, place: Any, X: Any, targets: Any, n_out: int, loss: Any, network: dict[str, Any]
    ) -> None:
        """Fit the network (a new one, or the last with ``warm_start``) on (X, targets);
        ``network`` holds what :meth:`_network` needs beyond the sizes. ``partial_fit``
        (``self._partial``): one epoch continuing the last network and its optimiser."""
        seed = check_random_state(self.random_state).spawn_seed()
        p, partial = X.shape[1], getattr(self, "_partial", False)
        previous: Any = getattr(self, "_model", None) if self.warm_start or partial else None
        reuse = previous is not None and (self.n_features_in_, self.n_outputs_) == (p, n_out)
        X, targets, validation = (
            (X, targets, None)
            if partial or not self.early_stopping
            else set_aside(place, X, targets, self.validation_fraction, seed)
        )
        # a warm start trains a copy, kept only once training is done (as a cold fit's net)
        model = previous.copy() if reuse else self._network(p, n_out, seed, **network)
        self._n_train = X.shape[0]
        stopping = SklearnStopping(self, validation)
        batch = min(200 if self.batch_size == "auto" else self.batch_size, X.shape[0])
        carried = getattr(self, "_optimizer_state", None) if partial and reuse else None
        opt = copy.deepcopy(carried) if carried is not None else self._optimizer()  # a load: None
        history = model.fit(
            X,
            targets,
            loss=loss,
            optimizer=opt,
            epochs=1 if partial else self.max_iter,
            batch_size=batch,
            shuffle=self.shuffle,
            callbacks=[stopping],
            progress=self.verbose,
            weight_decay=self.alpha,
            compile=self.compile,
        )
        if not (stopping.converged or partial):
            warn_not_converged(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and "
                "the optimization hasn't converged yet."
            )
        self._set_network(model)
        self._optimizer_state: Any = opt  # partial_fit continues it (not saved in model files)
        kept = self.loss_curve_ if partial and reuse else []
        self.loss_curve_: list[float] = kept + stopping.loss_curve
        self.loss_ = self.loss_curve_[-1]
        self.best_loss_ = None if validation is not None else min(self.loss_curve_)
        if validation is not None:
            self.validation_scores_ = stopping.scores
            self.best_validation_score_ = stopping.best_score
        self.n_iter_ = len(kept) + len(history["loss"])
        self.n_outputs_: int = n_out
        self.n_features_in_: int = p

    def _set_network(self, model: Sequential) -> None:
        """Keep the trained network, and its weights as the fitted attributes."""
        self._model = model
        self.coefs_, self.intercepts_ = _weights(model)
        self.n_layers_ = len(self.coefs_) + 1

    def _margins(self, X: Any) -> tuple[Any, Any]:
        check_is_fitted(self, "coefs_")
        place, X, _, _ = validate_data(self, self._network_input(X)[0], reset=False)
        model, X = self._model.placed(X, place.xp, place.device, in_place=False)
        return place, model.infer_batches(X)

    # ------------------------------------------------------------------ model files
    def _get_model_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        check_is_fitted(self, "coefs_")
        config, arrays = self._model._get_model_state()
        fitted = {
            "loss_curve_": self.loss_curve_,
            "n_features_in_": self.n_features_in_,
            "n_outputs_": self.n_outputs_,
            "_y_1d": getattr(self, "_y_1d", True),
            **feature_names_to_json(self),
            **classes_to_json(self),
        }
        return {
            "class": type(self).__name__,
            "params": params_to_json(type(self).__name__, self.get_params(deep=False)),
            "network": config,
            "fitted": fitted,
        }, arrays

    @classmethod
    def _from_model_state(cls, config: dict[str, Any], arrays: dict[str, Any]) -> _BaseMLP:
        """The estimator of a file: its config checked field by field, its network against
        the tensors and the fitted fields against the network (ValueError saying why)."""
        check_fields(config, "the config", {"class", "params", "network", "fitted"})
        params = check_fields(config["params"], "'params'", set(), set(cls._param_names()))
        est = cls(**params_from_json(params))
        est._validate_params()
        model = Sequential._from_model_state(config["network"], arrays)
        fitted = check_fitted(config["fitted"], model, classifier=isinstance(est, ClassifierMixin))
        est._set_network(model)
        est.loss_curve_ = [float(v) for v in fitted["loss_curve_"]]
        est.loss_ = est.loss_curve_[-1]
        est.n_iter_ = len(est.loss_curve_)
        est.n_outputs_ = fitted["n_outputs_"]
        est.n_features_in_ = fitted["n_features_in_"]
        est._y_1d = fitted["_y_1d"]
        for name in ("feature_names_in_", "classes_"):
            if name in fitted:
                setattr(est, name, fitted[name])
        return est


class MLPClassifier(BlockwiseClassifier, MarginClassifierMixin, ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained on the cross-entropy.

    Hidden layers Dense → activation; the output is one logit with the sigmoid
    for two classes, K logits with the softmax otherwise. Minimises the mean
    cross-entropy + ½·alpha·‖W‖²/n with Adam or SGD (Nesterov momentum) on mini-batches,
    stopping as scikit-learn does (no ``tol`` gain for ``n_iter_no_change`` epochs, on the
    training loss or, with ``early_stopping``, the validation accuracy). Parameters and
    fitted attributes (``coefs_``, ``intercepts_``, ``classes_``, ``loss_``,
    ``loss_curve_``, ``n_iter_``) are scikit-learn's.

    Examples
    --------
    >>> from mlxp.datasets import load_digits
    >>> from mlxp.nn import MLPClassifier
    >>> X, y = load_digits()
    >>> clf = MLPClassifier((64,), max_iter=30, random_state=0).fit(X / 16, y)
    >>> clf.score(X / 16, y) > 0.95
    True
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on X (n_samples, n_features) and class labels y (n_samples,); X, y may be
        Dask arrays of row chunks, streamed (see :mod:`mlxp.nn.streaming`)."""
        self._partial = False
        return self._fit_labels(X, y, None)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch (one pass over X, y, in memory or Dask) continuing the network and its
        optimiser, as scikit-learn's: ``classes`` (every label) is required on the first
        call; no stopping rule, no early-stopping split, no convergence warning."""
        classes = streaming.partial_fit_classes(getattr(self, "classes_", None), classes)
        self._partial = True
        return self._fit_labels(X, y, classes)

    def _fit_labels(self, X: Any, y: Any, classes: Any) -> MLPClassifier:
        self._validate_params()
        X, network = self._network_input(X)
        X, y = streaming.known_chunks(X, y)
        first = not (self._partial and hasattr(self, "classes_"))
        place, X, y, _ = validate_data(self, X, y, reset=first, require_y=True, labels=True)
        classes, indices = streaming.class_indices(y, classes)
        if len(classes) < 2:
            raise ValueError(
                "MLPClassifier needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {classes[0]!r}."
            )
        xp, dev = place.xp, place.device
        lazy = streaming.is_dask(indices) and streaming.is_dask(X)
        idx = indices if lazy else move(indices, xp, dev)
        loss: Loss
        if len(classes) == 2:
            targets, n_out, loss = xp.astype(idx, X.dtype)[:, None], 1, BCEWithLogitsLoss()
        else:
            targets, n_out, loss = idx, len(classes), CrossEntropyLoss()
        self._train(place, X, targets, n_out, loss, network)
        self.classes_ = classes
        self.out_activation_ = "logistic" if n_out == 1 else "softmax"
        return self

    def _score_network(self, model: Sequential, X: Any, targets: Any) -> float:
        xp = model.xp
        out = model.infer_batches(X)
        if out.shape[1] == 1:
            hits = xp.astype(out[:, 0] > 0, X.dtype) == targets[:, 0]
        else:
            hits = argmax(out, axis=1) == targets
        return float(xp.mean(xp.astype(hits, X.dtype)))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: identity output, mean squared error + ½·alpha·‖W‖²/n.

    Targets may have several columns (shape (n, k)); otherwise as :class:`MLPClassifier`.
    """

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets)
        (in memory, or Dask arrays of row chunks)."""
        self._partial = False
        return self._fit_targets(X, y)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch continuing the network and its optimiser (see MLPClassifier's)."""
        self._partial = True
        return self._fit_targets(X, y)

    def _fit_targets(self, X: Any, y: Any) -> MLPRegressor:
        self._validate_params()
        X, y = streaming.known_chunks(X, y)
        first = not (self._partial and hasattr(self, "coefs_"))
        place, X, y, _ = validate_data(self, X, y, reset=first, require_y=True)
        y_1d = y.ndim == 1
        Y = y[:, None] if y_1d else y
        self._train(place, X, Y, Y.shape[1], MSELoss(), {})
        self._y_1d = y_1d
        self.out_activation_ = "identity"
        return self

    def _score_network(self, model: Sequential, X: Any, Y: Any) -> float:
        xp = model.xp
        residual = xp.sum((Y - model.infer_batches(X)) ** 2, axis=0)
        total = xp.sum((Y - xp.mean(Y, axis=0)) ** 2, axis=0)
        safe = xp.where(total == 0, xp.ones_like(total), total)
        return float(xp.mean(1 - residual / safe))

    def predict(self, X: Any) -> Any:
        """Network outputs: shape (n_samples,) if fitted on 1-D y, else (n_samples, n_targets);
        for Dask X, a lazy Dask array computed by row chunk."""
        if streaming.is_dask(X):
            width = None if self._y_1d else self.n_outputs_
            return streaming.blockwise(self.predict, X, width, self.coefs_[0].dtype)
        place, out = self._margins(X)
        return place.to_caller(out[:, 0] if self._y_1d else out)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
