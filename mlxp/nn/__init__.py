"""Neural networks: layers with forward and backward propagation, losses, a training loop."""

from mlxp.nn.cnn import CNNClassifier
from mlxp.nn.layers import (
    GELU,
    AvgPool2D,
    BatchNorm1d,
    BatchNorm2d,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from mlxp.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from mlxp.nn.mlp import MLPClassifier, MLPRegressor
from mlxp.nn.sequential import EarlyStopping, History, Sequential

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
