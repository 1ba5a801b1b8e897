"""
Convolution: learned filters and misclassified digits
=====================================================

Train a small :class:`~mlxp.nn.CNNClassifier` (one 3×3 convolution with 8 filters, ReLU,
2×2 max pooling, a dense layer) on 1200 of the 8×8 digits, show the filters it learned
and the held-out digits it gets wrong. See :doc:`/user_guide/convolution`.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np

from mlxp.datasets import load_digits
from mlxp.exceptions import ConvergenceWarning
from mlxp.metrics import confusion_matrix
from mlxp.nn import CNNClassifier

X, y = load_digits()
X = X / 16.0
train, test = slice(0, 1200), slice(1200, None)

cnn = CNNClassifier(
    conv_layers=((8, 3),), dense_units=(32,), image_shape=(1, 8, 8), max_iter=20, random_state=0
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs are enough here
    cnn.fit(X[train], y[train])
pred = cnn.predict(X[test])
print(f"held-out accuracy: {cnn.score(X[test], y[test]):.3f}")
print(confusion_matrix(y[test], pred))

# %%
# The filters: ``coefs_[0]`` holds the kernels, of shape (out_channels, in_channels, 3, 3).
kernels = np.asarray(cnn.coefs_[0])
fig, axes = plt.subplots(1, len(kernels), figsize=(9, 1.6), layout="constrained")
for k, (ax, kernel) in enumerate(zip(axes, kernels, strict=True)):
    bound = np.abs(kernel).max()
    ax.imshow(kernel[0], cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_title(f"filter {k}", fontsize=8)
    ax.set_axis_off()
fig.suptitle("Learned 3×3 convolution filters (red > 0, blue < 0)")
plt.show()

# %%
# The misclassified held-out digits, with the predicted and the true label.
wrong = np.flatnonzero(pred != y[test])[:16]
fig, axes = plt.subplots(2, 8, figsize=(9, 2.9), layout="constrained")
for ax in axes.ravel():
    ax.set_axis_off()
for ax, i in zip(axes.ravel(), wrong, strict=False):
    ax.imshow(X[test][i].reshape(8, 8), cmap="gray_r")
    ax.set_title(f"{pred[i]} (true {y[test][i]})", fontsize=8)
fig.suptitle(f"{len(np.flatnonzero(pred != y[test]))} of {len(pred)} held-out digits misclassified")
plt.show()
