"""``CNNClassifier``: a convolutional image classifier with scikit-learn's interface.

Owns the convolutional architecture and how images (or flat rows) become the network's
input; training, stopping and the fitted attributes are :class:`MLPClassifier`'s.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from array_api_compat import array_namespace

from mlxp._params import POSITIVE_INT, Tuples
from mlxp.nn import conv_layers as CL
from mlxp.nn import layers as L
from mlxp.nn.mlp import MLPClassifier
from mlxp.nn.sequential import Sequential

__all__ = ["CNNClassifier"]


class CNNClassifier(MLPClassifier):
    """Convolutional network classifier: [Conv2D → ReLU → MaxPool2D] × k → Dense layers.

    Each entry ``(channels, kernel)`` of ``conv_layers`` is a "same"-padded convolution
    followed by ReLU and 2×2 max pooling (pooling is skipped along an image axis shorter
    than 2); then ``dense_units`` hidden Dense+ReLU layers and the output layer. Trained
    like :class:`MLPClassifier` (cross-entropy + ½·alpha·‖W‖²/n, Adam or SGD, the same
    stopping rule and fitted attributes; ``coefs_`` holds every weight, kernels included).

    Input: images of shape (n, channels, height, width), or flat rows of
    channels·height·width values with ``image_shape=(channels, height, width)``. Flat
    rows without ``image_shape`` are read as one-row images (1, 1, n_features), which
    lets the estimator run inside any scikit-learn pipeline.

    Examples
    --------
    >>> from mlxp.datasets import load_digits
    >>> from mlxp.nn import CNNClassifier
    >>> X, y = load_digits()
    >>> cnn = CNNClassifier(image_shape=(1, 8, 8), max_iter=5, random_state=0)
    >>> cnn.fit(X[:300] / 16, y[:300]).predict(X[:2] / 16).shape
    (2,)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **MLPClassifier._parameter_constraints,
        "conv_layers": [Tuples(Tuples(POSITIVE_INT, 2))],
        "dense_units": [Tuples(POSITIVE_INT)],
        "image_shape": [None, Tuples(POSITIVE_INT, 3)],
    }

    def __init__(
        self,
        conv_layers: tuple[tuple[int, int], ...] = ((16, 3), (32, 3)),
        dense_units: tuple[int, ...] = (64,),
        *,
        image_shape: tuple[int, int, int] | None = None,
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
        self.conv_layers = conv_layers
        self.dense_units = dense_units
        self.image_shape = image_shape
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

    def _image_shape(self, n_features: int, input_shape: Any) -> tuple[int, int, int]:
        """The (C, H, W) of a sample: of the images given to fit, else ``image_shape``,
        else one row (1, 1, n_features); ValueError if it does not hold n_features."""
        shape = input_shape or self.image_shape or (1, 1, n_features)
        if math.prod(shape) != n_features:
            raise ValueError(
                f"image_shape {tuple(shape)} holds {math.prod(shape)} values, but X has "
                f"{n_features} features per sample."
            )
        return tuple(shape)

    def _network(
        self, n_in: int, n_out: int, seed: int, input_shape: tuple[int, ...] | None = None
    ) -> Sequential:
        channels, height, width = self._image_shape(n_in, input_shape)
        layers: list[Any] = [L.Reshape((channels, height, width))]
        for out_channels, kernel in self.conv_layers:
            layers += [CL.Conv2D(channels, out_channels, kernel, padding="same"), L.ReLU()]
            pool = (min(2, height), min(2, width))
            if pool != (1, 1):
                layers.append(CL.MaxPool2D(pool))
            channels, height, width = out_channels, height // pool[0], width // pool[1]
        layers.append(L.Flatten())
        widths = [channels * height * width, *self.dense_units, n_out]
        for i in range(len(widths) - 1):
            layers.append(L.Dense(widths[i], widths[i + 1], init="he_uniform"))
            if i < len(widths) - 2:
                layers.append(L.ReLU())
        return Sequential(layers, seed=seed)

    def _network_input(self, X: Any) -> tuple[Any, dict[str, Any]]:
        """Images (n, C, H, W) as rows (n, C·H·W), with their shape for :meth:`_network`;
        anything else as it is."""
        if getattr(X, "ndim", None) != 4:
            return X, {}
        xp = array_namespace(X)
        return xp.reshape(X, (X.shape[0], -1)), {"input_shape": tuple(X.shape[1:])}
