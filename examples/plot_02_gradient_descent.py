"""
Gradient descent, SGD and Adam: loss curves
===========================================

Minimise the least-squares objective
:math:`f(\\theta) = \\frac{1}{2n}\\lVert X w + b - y\\rVert^2` on synthetic data with
the optimisers of :mod:`mlxp.optim`, written as a plain loop over
``params = optimizer.step(params, grads)``, and plot :math:`f - f^\\star` per pass over
the data. The gradient is :math:`\\nabla_w f = X^\\top r / n`, :math:`\\nabla_b f = \\bar r`
with :math:`r = Xw + b - y`. See :doc:`/user_guide/gradient_descent`.
"""

import matplotlib.pyplot as plt
import numpy as np

from mlxp import Generator
from mlxp.linear_model import LinearRegression
from mlxp.optim import SGD, Adam

rng = np.random.default_rng(0)
n, n_features = 500, 10
# columns scaled from 1 to 3: κ(XᵀX) ≈ 10, a well-conditioned problem
X = rng.normal(size=(n, n_features)) * np.linspace(1.0, 3.0, n_features)
y = X @ rng.normal(size=n_features) + 2.0 + 0.5 * rng.normal(size=n)


def loss_and_grads(p, rows=slice(None)):
    r = X[rows] @ p["w"] + p["b"] - y[rows]
    m = len(r)
    return 0.5 * float(r @ r) / m, {"w": X[rows].T @ r / m, "b": np.sum(r, keepdims=True) / m}


best = LinearRegression().fit(X, y)
f_star = loss_and_grads({"w": best.coef_, "b": np.atleast_1d(best.intercept_)})[0]
A = np.column_stack([X, np.ones(n)])
L = np.linalg.eigvalsh(A.T @ A / n).max()  # the gradient's Lipschitz constant
print(f"L = {L:.3f}, f* = {f_star:.3f}")


def run(optimizer, epochs, batch_size=None, seed=0):
    p = {"w": np.zeros(X.shape[1]), "b": np.zeros(1)}
    rng = Generator(seed)
    curve = [loss_and_grads(p)[0] - f_star]
    for _ in range(epochs):
        if batch_size is None:  # full batch: one step per pass
            p = optimizer.step(p, loss_and_grads(p)[1])
        else:
            order = np.asarray(rng.permutation(n, xp=np))
            for start in range(0, n, batch_size):
                p = optimizer.step(p, loss_and_grads(p, order[start : start + batch_size])[1])
        curve.append(loss_and_grads(p)[0] - f_star)
    return np.array(curve)


epochs = 60
curves = {
    "GD, η = 1/L": run(SGD(lr=1 / L), epochs),
    "SGD, batch 32, η = 0.2/L": run(SGD(lr=0.2 / L), epochs, batch_size=32),
    "Adam, batch 32, η = 0.05": run(Adam(lr=0.05), epochs, batch_size=32),
}
steps = {f"GD, η = {c}/L": run(SGD(lr=c / L), 30) for c in (0.5, 1.0, 1.9, 2.05)}

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
for label, curve in curves.items():
    left.semilogy(curve, label=label)
left.set(xlabel="pass over the data (epoch)", ylabel="f − f*", title="Optimisers")
left.legend(fontsize=8)
for label, curve in steps.items():
    right.semilogy(curve, label=label)
right.set(xlabel="iteration", ylabel="f − f*", title="Step size of gradient descent")
right.legend(fontsize=8)
plt.show()

# %%
# Gradient descent converges for any step :math:`\eta < 2/L` and diverges beyond it;
# :math:`1/L` is the safe choice mlxp makes when ``learning_rate=None``. SGD makes
# :math:`n/32` cheap steps per pass and gets close quickly, then stalls at a noise floor
# set by its step size; Adam adapts a step per coordinate.
