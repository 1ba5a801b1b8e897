"""Neural networks: layers with forward and backward propagation, losses, a training loop."""

from mlxp.nn.layers import (
    GELU,
    BatchNorm1d,
    Dense,
    Dropout,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mlxp.nn.mlp import MLPClassifier, MLPRegressor
from mlxp.nn.sequential import EarlyStopping, History, Sequential

__all__ = [
    "GELU",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "History",
    "Layer",
    "LeakyReLU",
    "Loss",
    "MLPClassifier",
    "MLPRegressor",
    "MSELoss",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
