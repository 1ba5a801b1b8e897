"""Neural networks: layers with forward and backward propagation, losses, a training loop.

Floors, each importing only those below: the math (``_windows``, ``convolution``,
``pooling``, ``functional``, ``init``); the layers (``layers``, ``conv_layers``,
``normalization``); ``losses``; the step and the training loop (``step``, ``callbacks``,
``stopping``, ``streaming``, ``training``); the container ``sequential``; the estimators
(``mlp``, then ``cnn``).
"""

from mlxp.nn.callbacks import EarlyStopping, History
from mlxp.nn.cnn import CNNClassifier
from mlxp.nn.conv_layers import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from mlxp.nn.layers import (
    GELU,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mlxp.nn.mlp import MLPClassifier, MLPRegressor
from mlxp.nn.normalization import BatchNorm1d, BatchNorm2d
from mlxp.nn.sequential import Sequential

__all__ = [
    "GELU",
    "AvgPool2D",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "CNNClassifier",
    "Conv2D",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "GlobalAvgPool2D",
    "History",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MLPClassifier",
    "MLPRegressor",
    "MSELoss",
    "MaxPool2D",
    "ReLU",
    "Reshape",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
