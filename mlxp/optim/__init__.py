"""Optimisers and learning-rate schedules shared by every mlxp model.

``params = optimizer.step(params, grads)`` updates a dict of parameter arrays from a
dict of gradients with SGD, Adam, AdamW or RMSprop (torch.optim's update rules), in
the parameters' namespace, device and dtype. A schedule gives the learning rate of
each epoch: ``optimizer.lr = schedule(epoch)``.
"""

from mlxp.optim._optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from mlxp.optim._schedules import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    ReduceLROnPlateau,
    Schedule,
    StepLR,
    apply_schedule,
)

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "Schedule",
    "StepLR",
    "apply_schedule",
]
