"""
Least squares: fit lines and residuals
======================================

Fit :math:`y \\approx w x + b` on one feature of the diabetes data (body-mass index) with
each exact solver of :class:`~mlxp.linear_model.LinearRegression`, check that they agree,
and look at the residuals :math:`r_i = y_i - \\hat y_i`. Then see which solver
``solver="auto"`` picks for a well-conditioned and a nearly collinear design.
See :doc:`/user_guide/least_squares`.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np

from mlxp.datasets import load_diabetes
from mlxp.exceptions import RankWarning
from mlxp.linear_model import LinearRegression

X, y = load_diabetes()
x = X[:, [2]]  # body-mass index, centred and scaled
fits = {s: LinearRegression(solver=s).fit(x, y) for s in ("cholesky", "qr", "svd")}
for solver, model in fits.items():
    print(f"{solver:8s} w = {float(model.coef_[0]):.6f}  b = {float(model.intercept_):.6f}")

model = fits["qr"]
grid = np.linspace(x.min(), x.max(), 2)[:, None]
residuals = y - model.predict(x)

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
left.scatter(x[:, 0], y, s=8, alpha=0.6, label="patients")
left.plot(grid[:, 0], model.predict(grid), color="C3", lw=2, label="least-squares line")
left.vlines(
    x[:40, 0], y[:40], model.predict(x[:40]), color="0.5", lw=0.8, label="residuals (40 patients)"
)
left.set(xlabel="body-mass index (scaled)", ylabel="disease progression", title="Fit")
left.legend(loc="upper left", fontsize=8)
right.scatter(model.predict(x), residuals, s=8, alpha=0.6)
right.axhline(0.0, color="C3", lw=1)
right.set(
    xlabel="fitted value", ylabel="residual", title=f"Residuals (R² = {model.score(x, y):.3f})"
)
plt.show()

# %%
# Which solver "auto" picks
# -------------------------
# With all ten features the design is well conditioned and tall: Cholesky of
# :math:`X^\top X`. Add a column almost equal to another and its condition number
# explodes: Cholesky would lose too many digits, so "auto" moves on to QR, and to the SVD
# once the design is numerically rank-deficient.
rng = np.random.default_rng(0)
near = np.column_stack([X, X[:, 0] + 1e-6 * rng.normal(size=len(X))])
same = np.column_stack([X, X[:, 0]])
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RankWarning)
    for name, design in [("ten features", X), ("nearly collinear", near), ("collinear", same)]:
        print(
            f"{name:17s} cond = {np.linalg.cond(design):9.3g}  ->",
            LinearRegression().fit(design, y).solver_,
        )
