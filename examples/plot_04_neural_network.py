"""
Neural networks: backpropagation checked, then trained
======================================================

Build a two-layer network with :class:`~mlxp.nn.Sequential`, check the gradients that
backward propagation leaves in each layer against central finite differences, then train
it on the 8×8 digits and plot the training and validation loss per epoch.
See :doc:`/user_guide/neural_networks`.
"""

import matplotlib.pyplot as plt
import numpy as np

from mlxp.datasets import load_digits
from mlxp.nn import CrossEntropyLoss, Dense, ReLU, Sequential, Tanh

X, y = load_digits()
X = X / 16.0

# %%
# Backward propagation against finite differences
# -----------------------------------------------
# ``forward`` caches what each layer needs; ``backward`` takes
# :math:`\partial L/\partial z^{(2)}` from the loss and leaves
# :math:`\partial L/\partial W^{(l)}`, :math:`\partial L/\partial b^{(l)}` in
# ``layer.grads``. A smooth activation (tanh) keeps the finite differences exact to
# :math:`O(h^2)`.
net = Sequential([Dense(64, 16), Tanh(), Dense(16, 10)], seed=0)
net.build(np, "cpu", np.float64)  # parameters on NumPy's CPU, in float64
loss = CrossEntropyLoss()
xb, yb = X[:20], y[:20]


def objective():
    return float(loss.forward(net.forward(xb, training=True), yb))


objective()
net.backward(loss.backward())
analytic = {k: np.array(v) for k, v in net.gradients().items()}

h = 1e-6
for name, param in net.parameters.items():
    flat = param.reshape(-1)  # a view: perturb the weights in place
    errors = []
    for i in range(0, flat.size, max(1, flat.size // 25)):
        old = flat[i]
        flat[i] = old + h
        up = objective()
        flat[i] = old - h
        down = objective()
        flat[i] = old
        errors.append(abs((up - down) / (2 * h) - analytic[name].reshape(-1)[i]))
    print(f"{name}: shape {param.shape}, max |backprop − finite difference| = {max(errors):.1e}")

# %%
# Training
# --------
# :meth:`~mlxp.nn.Sequential.fit` runs mini-batch Adam on the cross-entropy and returns
# the :class:`~mlxp.nn.History` of per-epoch losses.

net = Sequential([Dense(64, 64), ReLU(), Dense(64, 10)], seed=0)
history = net.fit(
    X[:1400],
    y[:1400],
    loss="cross_entropy",
    epochs=15,
    batch_size=32,
    validation_data=(X[1400:], y[1400:]),
    progress=False,
)
print(net.evaluate(X[1400:], y[1400:], loss="cross_entropy"))

fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
ax.plot(history["loss"], label="training loss")
ax.plot(history["val_loss"], label="validation loss")
ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="MLP 64-64-10 on digits, Adam")
ax.legend()
plt.show()
