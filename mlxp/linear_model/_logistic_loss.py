"""The penalised logistic (cross-entropy) objective of a linear model, as pure array code.

Parameters are one array θ of shape (p + 1, K): the weights W = θ[:p] and, with an
intercept, the bias b = θ[p] (a zero row that stays zero otherwise). Margins are
Z = XW + b of shape (n, K). With sample weights s and λ = 1/C,

    f(θ) = (1/Σs) [ Σᵢ sᵢ ℓᵢ(Zᵢ) + ½λ‖W‖² ]            (b is not penalised)

which has scikit-learn's minimiser (C·Σ sᵢℓᵢ + ½‖W‖², divided by C·Σs). The loss is

* binary (K = 1, yᵢ ∈ {0, 1}): ℓ = softplus(z) − yz, with ∂ℓ/∂z = σ(z) − y;
* multinomial (K ≥ 3, one-hot Y): ℓ = logsumexp(Z) − ⟨Z, Y⟩, with ∂ℓ/∂Z = softmax(Z) − Y,

both written in overflow-free forms (finite at margins of ±1e4). Because Z is linear
in θ, the objective along a line θ + αD needs X·D only once: :meth:`line_values`
evaluates many step sizes α for the price of a few element-wise passes.
:meth:`value_grad`, what the minimisers call once an iteration, costs two products
with X (X·W and Xᵀ·R) and a few element-wise passes: ℓ and ∂ℓ/∂z share one
``logaddexp``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from array_api_compat import device as _device

from mlxp._compat import from_host
from mlxp._special import log_softmax, sigmoid, softmax
from mlxp.linear_model._iterative import largest_eigenvalue


class LogisticObjective:
    """f(θ), ∇f(θ) and (for Newton) ∇²f(θ) of the penalised cross-entropy above.

    ``X`` (n, p); ``Y`` (n, 1) of 0/1 for binary or one-hot (n, K); ``sample_weight`` (n,);
    ``l2`` = λ = 1/C (0 for no penalty).
    """

    def __init__(
        self, xp: Any, X: Any, Y: Any, s: Any, *, l2_scaled: Any, fit_intercept: bool
    ) -> None:
        self.xp, self.X, self.Y, self.s = xp, X, Y, s
        self.binary = Y.shape[1] == 1
        self.l2_scaled, self.fit_intercept = l2_scaled, fit_intercept
        p = X.shape[1]
        mask = xp.ones((p + 1, 1), dtype=X.dtype, device=_device(X))
        self.penalised = xp.concat([mask[:p, :], 0 * mask[p:, :]], axis=0)  # no penalty on b
        self.fitted_rows = mask if fit_intercept else self.penalised  # b fixed at 0
        self.masked = not fit_intercept  # whether ∇f is multiplied by fitted_rows
        self._cache: dict[str, Any] | None = None

    @classmethod
    def from_weights(
        cls, xp: Any, X: Any, Y: Any, sample_weight: Any, *, l2: float, fit_intercept: bool
    ) -> LogisticObjective:
        """Normalise the sample weights s to sum to one, and λ to λ̃ = λ/Σs.

        The weights are first divided by the largest (one host read), so that tiny or huge
        weights neither underflow nor overflow. Where λ̃ is beyond the floating range (all
        weights vanishing against λ), the penalty holds W at 0 and only b is fitted.
        """
        largest = xp.max(sample_weight)
        peak = float(largest)
        # divided by the array: PyTorch's CUDA divide by a number multiplies by its
        # reciprocal, inf for a subnormal peak (weights of 1e-320)
        s = sample_weight / largest
        total = xp.sum(s)
        l2_peak = l2 / peak  # a Python float: inf, not an overflow warning, beyond the range
        frozen = not math.isfinite(l2_peak)
        objective = cls(
            xp,
            X,
            Y,
            (s / total)[:, None],
            l2_scaled=0.0 if frozen else l2_peak / total,
            fit_intercept=fit_intercept,
        )
        if frozen:
            objective.fitted_rows = objective.fitted_rows * (1 - objective.penalised)
            objective.masked = True
        return objective

    def leaves(self) -> tuple[Any, ...]:
        """The arrays the objective is made of (λ̃ as a 0-d array): what a compiled
        program takes as arguments, so that one program serves any data of the same
        shapes and any C."""
        l2 = from_host(self.l2_scaled, self.xp, device=_device(self.X), dtype=self.X.dtype)
        return self.X, self.Y, self.s, l2, self.penalised, self.fitted_rows

    def config(self) -> tuple[bool, bool]:
        """What :meth:`leaves` leaves out (whether ∇f is masked), hashable."""
        return (self.fit_intercept, self.masked)

    @classmethod
    def from_leaves(
        cls, xp: Any, config: tuple[bool, bool], leaves: tuple[Any, ...]
    ) -> LogisticObjective:
        """The objective of :meth:`leaves` and :meth:`config` (inside a traced program)."""
        objective = cls.__new__(cls)
        objective.xp, objective._cache = xp, None
        objective.fit_intercept, objective.masked = config
        X, Y, s, objective.l2_scaled, objective.penalised, objective.fitted_rows = leaves
        objective.X, objective.Y, objective.s = X, Y, s
        objective.binary = Y.shape[1] == 1
        return objective

    def batch(self, rows: Any) -> LogisticObjective:
        """The unbiased mini-batch estimate of f on ``rows``: weights scaled by n/m."""
        xp = self.xp
        scale = self.X.shape[0] / rows.shape[0]
        batch = copy.copy(self)  # the masks and λ̃ are shared, not rebuilt each step
        batch._cache = None
        batch.X = xp.take(self.X, rows, axis=0)
        batch.Y = xp.take(self.Y, rows, axis=0)
        batch.s = xp.take(self.s, rows, axis=0) * scale
        return batch

    def rows(self, begin: int, end: int) -> LogisticObjective:
        """:meth:`batch` of the contiguous rows begin..end−1 (slices: views, no gather)."""
        batch = copy.copy(self)
        batch._cache = None
        scale = self.X.shape[0] / (end - begin)
        batch.X, batch.Y = self.X[begin:end, ...], self.Y[begin:end, ...]
        batch.s = self.s[begin:end, ...] * scale
        return batch

    def curvature(self, batch_size: int) -> Any:
        """An upper bound L on ∇²f, raised by the mini-batch noise for ``batch_size`` rows.

        ∇²f ⪯ c·X̃ᵀdiag(s)X̃ + λ̃ with c = ¼ (sigmoid) or ½ (softmax); for batches of m
        rows, add c·n·max sᵢ‖x̃ᵢ‖²/m (the largest single-row curvature, averaged down).
        """
        xp = self.xp
        n = self.X.shape[0]
        c = 0.25 if self.binary else 0.5
        ones = xp.ones((n, 1), dtype=self.X.dtype, device=_device(self.X))
        Xt = xp.concat([self.X, ones], axis=1) * xp.sqrt(self.s)
        rows = xp.max(xp.sum(Xt**2, axis=1)) * n / batch_size if batch_size < n else 0.0
        return c * (largest_eigenvalue(xp, Xt) * n + rows) + self.l2_scaled

    def margins(self, theta: Any) -> Any:
        """Z = X W + b, shape (n, K)."""
        return self.X @ theta[:-1, :] + theta[-1:, :]

    def _losses(self, Z: Any, e: Any = None) -> Any:
        """Σᵢ sᵢℓᵢ for margins of shape (..., n, K), summed over the last two axes.

        ``e`` = e^−|Z|, when the caller has it, saves recomputing it (binary case).
        """
        xp = self.xp
        if self.binary:
            e = xp.exp(-xp.abs(Z)) if e is None else e
            per_sample = xp.maximum(Z, xp.zeros_like(Z)) + xp.log1p(e) - self.Y * Z
        else:
            per_sample = -self.Y * log_softmax(Z, xp=xp)
        return xp.sum(xp.sum(self.s * per_sample, axis=-1), axis=-1)

    def value(self, theta: Any) -> Any:
        """f(θ) alone (one product X·W, no gradient)."""
        W = theta * self.penalised
        return self._losses(self.margins(theta)) + 0.5 * self.l2_scaled * self.xp.sum(W**2)

    def _derived(self) -> dict[str, Any]:
        """Constants of value_grad and hessian, made on first use (a batch makes its own).

        Binary: with the sign σ̃ = 1 − 2y, ℓ = softplus(σ̃z) and ∂ℓ/∂z = σ̃·σ(σ̃z) =
        σ̃·exp(σ̃z − ℓ), so neither y nor a separate sigmoid enters the loop.
        """
        if self._cache is None:
            xp, X, s = self.xp, self.X, self.s
            n, dev = X.shape[0], _device(X)
            sign = 1 - 2 * self.Y
            self._cache = {
                "sign": sign,
                "s_sign": s * sign,
                "sY": s * self.Y,
                "s_row": xp.reshape(s, (1, n)),
                "zero": xp.zeros((1, 1), dtype=X.dtype, device=dev),
                "l2_rows": self.l2_scaled * self.penalised,  # λ̃ on W, 0 on b
            }
        return self._cache

    def value_grad(self, theta: Any, Z: Any = None) -> tuple[Any, Any, Any]:
        """(f(θ), ∇f(θ), Z): ∇_W = Xᵀ R + λ̃W, ∇_b = Σᵢ Rᵢ, with R = s ⊙ ∂ℓ/∂Z.

        Pass the margins ``Z`` of θ when known to skip X·W.
        """
        xp, c = self.xp, self._derived()
        Z = self.margins(theta) if Z is None else Z
        penalty = c["l2_rows"] * theta  # λ̃W, and 0 on b
        if self.binary:
            U = c["sign"] * Z
            losses = xp.logaddexp(c["zero"], U)  # ℓ = softplus(σ̃z)
            value = xp.reshape(c["s_row"] @ losses, ())
            R = c["s_sign"] * xp.exp(U - losses)
        else:
            log_p = log_softmax(Z, xp=xp)
            value = -(xp.reshape(c["sY"], (-1,)) @ xp.reshape(log_p, (-1,)))
            R = self.s * xp.exp(log_p) - c["sY"]
        flat = xp.reshape(theta, (-1,))
        value = value + 0.5 * (flat @ xp.reshape(penalty, (-1,)))
        grad = xp.concat([self.X.T @ R, xp.sum(R, axis=0, keepdims=True)], axis=0) + penalty
        return value, (grad * self.fitted_rows if self.masked else grad), Z

    def grad(self, theta: Any) -> Any:
        """∇f(θ) alone, without f (what a mini-batch step needs)."""
        xp = self.xp
        Z = self.margins(theta)
        P = sigmoid(Z, xp=xp) if self.binary else softmax(Z, xp=xp)
        return self._gradient(theta * self.penalised, P)

    def _gradient(self, W: Any, P: Any) -> Any:
        """∇f from the penalised weights W and the probabilities P of the margins."""
        xp = self.xp
        R = self.s * (P - self.Y)
        grad = xp.concat([self.X.T @ R, xp.sum(R, axis=0, keepdims=True)], axis=0)
        return (grad + self.l2_scaled * W) * self.fitted_rows

    def line_values(self, theta: Any, Z: Any, direction: Any, steps: Any, dZ: Any) -> Any:
        """f(θ + αD) for every α in ``steps`` (m,), from the margins Z of θ and dZ of D."""
        xp = self.xp
        Zs = Z[None, :, :] + steps[:, None, None] * dZ[None, :, :]
        W, D = theta * self.penalised, direction * self.penalised
        ww, wd, dd = xp.sum(W * W), xp.sum(W * D), xp.sum(D * D)
        penalty = 0.5 * self.l2_scaled * (ww + 2 * steps * wd + steps**2 * dd)
        return self._losses(Zs) + penalty

    def hessian(self, theta: Any, Z: Any) -> Any:
        """∇²f as a (qK, qK) matrix over θ flattened row-major, q = p + 1.

        H[(j,k),(m,l)] = Σᵢ sᵢ x̃ᵢⱼ x̃ᵢₘ Pᵢₖ(δₖₗ − Pᵢₗ) with x̃ = [x, 1] and P the
        probabilities (binary: σ(1 − σ)), plus λ̃ on the penalised weights. Rows of θ
        held at zero (no intercept) get an identity block, so the system stays solvable.
        """
        xp, c = self.xp, self._derived()
        n, p = self.X.shape
        q, K, dev = p + 1, Z.shape[1], _device(Z)
        if "Xt" not in c:  # [X, 1], kept once a Hessian is asked for
            c["Xt"] = xp.concat([self.X, xp.ones((n, 1), dtype=Z.dtype, device=dev)], axis=1)
        Xt = c["Xt"]
        if self.binary:
            U = c["sign"] * Z
            sig = xp.exp(U - xp.logaddexp(c["zero"], U))  # σ(σ̃z); σ(1 − σ) is symmetric
            H = Xt.T @ ((self.s * (sig * (1 - sig))) * Xt)
        else:
            P = xp.exp(log_softmax(Z, xp=xp))
            SPX = (self.s * P)[:, :, None] * Xt[:, None, :]  # (n, K, q)
            gram = xp.permute_dims(SPX, (1, 2, 0)) @ Xt  # (K, q, q): Σ s Pₖ x̃ x̃ᵀ
            eye_k = xp.eye(K, dtype=Z.dtype, device=dev)
            diagonal = xp.permute_dims(gram, (1, 0, 2))[:, :, :, None] * eye_k[None, :, None, :]
            A = xp.reshape(P[:, None, :] * Xt[:, :, None], (n, q * K))  # (i, (j, k))
            H = xp.reshape(diagonal, (q * K, q * K)) - (self.s * A).T @ A
        keep, ridge = self._hessian_masks(q, K)
        return H * keep + ridge

    def _hessian_masks(self, q: int, K: int) -> tuple[Any, Any]:
        """(keep ⊗ keep, diag(λ̃ on the penalised weights, 1 on rows held at zero))."""
        c = self._derived()
        if "keep" not in c:
            xp, dev, dtype = self.xp, _device(self.X), self.X.dtype
            ones = xp.ones((1, K), dtype=dtype, device=dev)
            keep = xp.reshape(self.fitted_rows * ones, (q * K,))
            penalised = xp.reshape(self.penalised * ones, (q * K,))
            ridge = self.l2_scaled * penalised + (1 - keep)
            c["keep"] = keep[:, None] * keep[None, :]
            c["ridge"] = xp.eye(q * K, dtype=dtype, device=dev) * ridge[None, :]
        return c["keep"], c["ridge"]
