"""
Logistic regression: a decision boundary
========================================

Fit :class:`~mlxp.linear_model.LogisticRegression` by maximum likelihood on two
overlapping Gaussian clouds, with Newton's method and with L-BFGS, and draw the
probability :math:`\\sigma(w^\\top x + b)` and the boundary :math:`w^\\top x + b = 0`.
See :doc:`/user_guide/logistic_regression`.
"""

import matplotlib.pyplot as plt
import numpy as np

from mlxp.linear_model import LogisticRegression

rng = np.random.default_rng(0)
n = 200
X = np.vstack([rng.normal([-1.0, -0.5], 1.0, (n, 2)), rng.normal([1.2, 0.8], 1.0, (n, 2))])
y = np.repeat([0, 1], n)

models = {s: LogisticRegression(solver=s, tol=1e-8).fit(X, y) for s in ("newton", "lbfgs")}
for solver, model in models.items():
    print(
        f"{solver:6s} {model.n_iter_:2d} iterations  w = {np.round(model.coef_[0], 6)}"
        f"  b = {np.round(model.intercept_, 6)}  accuracy = {model.score(X, y):.3f}"
    )

model = models["newton"]
xx, yy = np.meshgrid(np.linspace(-5, 5, 200), np.linspace(-5, 5, 200))
proba = model.predict_proba(np.column_stack([xx.ravel(), yy.ravel()]))[:, 1].reshape(xx.shape)

fig, ax = plt.subplots(figsize=(6, 4.8), layout="constrained")
shade = ax.contourf(xx, yy, proba, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
ax.contour(xx, yy, proba, levels=[0.5], colors="k", linewidths=2)
ax.scatter(*X[y == 0].T, marker="o", facecolor="white", edgecolor="k", s=18, label="class 0")
ax.scatter(*X[y == 1].T, marker="^", facecolor="k", edgecolor="white", s=22, label="class 1")
ax.legend(loc="upper left")
fig.colorbar(shade, label="P(y = 1 | x)")
ax.set(xlabel="x₁", ylabel="x₂", title="Decision boundary P = ½ (Newton)")
plt.show()

# %%
# Newton's method converges in a handful of iterations (quadratically, near the optimum),
# each solving a :math:`(p+1)\times(p+1)` system; L-BFGS takes more but cheaper steps.
# Both reach the same maximum-likelihood estimate.
