"""Logistic regression on Dask arrays: one fused pass over X per iteration, state on the client.

The labels are encoded by a tree reduction (each chunk's sorted uniques and weighted counts,
merged by union): ``classes_`` and the class weights are known without y leaving the
workers. Each chunk then builds the in-memory
:class:`~mlxp.linear_model._logistic_loss.LogisticObjective` of its rows (weights
sᵢ/Σs, no penalty) and one evaluation is a tree sum over chunks of

* f and ∇f at θ + D, the first step of the Armijo ladder (``value_grad`` from the margins
  Z = Xθ and dZ = XD), and for Newton ∇²f there too (``hessian``, a (qK) × (qK) matrix,
  q = p + 1),

all in one ``dask.compute``: the line search's first trial and the next gradient (and
Hessian) in one read of X. Only when α = 1 is rejected does a second pass evaluate f at the
ladder's smaller steps ½ … 2⁻¹¹ (``line_values``: element-wise work on the same margins)
and ∇f at ½, and a third only when a still smaller step is taken (rare: L-BFGS and Newton
mostly accept α = 1). The penalty ½λ̃‖W‖² is added on the client, where the small
optimiser state lives (arrays of the chunk library). No graph is kept between iterations,
so a fit costs O(iterations × chunks) tasks.

The iterates are those of :mod:`~mlxp.linear_model._minimize` on the host (same L-BFGS
memory and curvature test, same Armijo ladder and largest-acceptable step, same
convergence rule; :mod:`~mlxp.linear_model._dask_minimize`), so a Dask fit equals the
in-memory one to rounding.

"gd" runs the in-memory :func:`~mlxp.linear_model._stochastic.minimize_sgd` on these
evaluations (one pass per step). "sgd" streams the chunks to the client one at a time
(:func:`~mlxp._dask.stream_chunks`: chunk order and each chunk's rows shuffled by the
estimator's generator, the next chunk prefetched), each chunk's objective weighted by n/c
so that its batches are unbiased estimates of f; an epoch costs that streaming pass and one
evaluation of f. On one chunk this is the in-memory sgd (same draws, same batches); with
several, batches never mix two chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from mlxp._compat import to_numpy
from mlxp._dask import (
    aligned_rows,
    chunk_namespace,
    compute,
    row_blocks,
    stream_chunks,
    tree_reduce,
)
from mlxp._validation import encode_labels
from mlxp.linear_model._dask_minimize import minimize_dask
from mlxp.linear_model._iterative import gram_eigenvalue
from mlxp.linear_model._logistic_loss import LogisticObjective
from mlxp.linear_model._stochastic import contiguous_batches

__all__ = [
    "DescentObjective",
    "Evaluator",
    "encode_labels_dask",
    "fit_logistic_dask",
]


# ---------------------------------------------------------------------------- labels
def _chunk_labels(yb: Any, sb: Any) -> tuple[Any, Any]:
    classes, indices = encode_labels(yb)  # host labels: data about the problem, not math
    weights = None if sb is None else to_numpy(sb)
    return classes, np.bincount(indices, weights=weights, minlength=len(classes))


def _merge_labels(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    classes = np.union1d(a[0], b[0])
    counts = np.zeros(len(classes))
    for part, weight in (a, b):
        counts[np.searchsorted(classes, part)] += weight
    return classes, counts


def encode_labels_dask(X: Any, y: Any, sw: Any) -> tuple[np.ndarray, np.ndarray]:
    """(classes (sorted, NumPy), weighted count of each) by one reduction over y's chunks."""
    blocks = [(yb, sb) for _, yb, sb in row_blocks(X, y, sw)]
    classes, counts = compute(tree_reduce(_chunk_labels, _merge_labels, blocks))[0]
    return np.asarray(classes), np.asarray(counts)


# ---------------------------------------------------------------------------- evaluation
def _chunk_objective(
    Xb: Any, yb: Any, sb: Any, setup: dict[str, Any], row_scale: float = 1.0, l2: float = 0.0
) -> LogisticObjective:
    """The objective of one chunk's rows, weights s·(class weight)/Σ (times ``row_scale``),
    penalty λ̃ = ``l2`` (none by default: the client adds it once)."""
    xp = array_namespace(Xb)
    classes = setup["classes"]
    idx = np.searchsorted(classes, to_numpy(yb))
    K = len(classes)
    one_hot = xp.asarray(np.eye(K)[idx], dtype=Xb.dtype)
    s = xp.asarray(setup["class_scale"][idx] * row_scale, dtype=Xb.dtype)
    if sb is not None:
        s = s * xp.astype(sb, Xb.dtype)
    Y = one_hot[:, 1:] if K == 2 else one_hot
    return LogisticObjective(
        xp, Xb, Y, s[:, None], l2_scaled=l2, fit_intercept=setup["fit_intercept"]
    )


_Evaluation = tuple[Any, list[Any], Any]  # (values (m,), gradients, Hessian or None)


def _chunk_eval(*args: Any) -> _Evaluation:
    """:func:`_evaluate` of one chunk; a NaN in the chunk makes f NaN, which the client
    reports, without NumPy's warning."""
    with np.errstate(invalid="ignore"):
        return _evaluate(*args)


def _evaluate(
    Xb: Any,
    yb: Any,
    sb: Any,
    setup: dict[str, Any],
    theta: Any,
    direction: Any,
    steps: Any,
    n_grads: int,
    hessian: bool,
) -> _Evaluation:
    """(f at each step, ∇f at the first ``n_grads`` steps, ∇²f at steps[0] or None)."""
    xp = array_namespace(Xb)
    obj = _chunk_objective(Xb, yb, sb, setup)
    theta, direction = xp.asarray(theta, dtype=Xb.dtype), xp.asarray(direction, dtype=Xb.dtype)
    steps = xp.asarray(steps, dtype=Xb.dtype)
    Z, dZ = obj.margins(theta), obj.margins(direction)
    fitted = [  # f and ∇f together where ∇f is wanted, f alone at the other steps
        obj.value_grad(theta + steps[j] * direction, Z + steps[j] * dZ)[:2] for j in range(n_grads)
    ]
    values = [xp.reshape(v, (1,)) for v, _ in fitted]
    if n_grads < steps.shape[0]:
        values.append(obj.line_values(theta, Z, direction, steps[n_grads:], dZ))
    H = None
    if hessian:
        H = obj.hessian(theta + steps[0] * direction, Z + steps[0] * dZ)
        keep = xp.reshape(obj.fitted_rows * xp.ones((1, theta.shape[1]), dtype=Xb.dtype), (-1,))
        H = H - xp.eye(H.shape[0], dtype=H.dtype) * (1 - keep)[None, :]  # added once, on the client
    return xp.concat(values), [g for _, g in fitted], H


def _chunk_gram(Xb: Any, yb: Any, sb: Any, setup: dict[str, Any]) -> tuple[Any, Any]:
    """(X̃ᵀdiag(s)X̃, max sᵢ‖x̃ᵢ‖²) of one chunk, X̃ = [X, 1]: what bounds ∇²f (gd's step)
    and the curvature of a single row (sgd's)."""
    xp = array_namespace(Xb)
    obj = _chunk_objective(Xb, yb, sb, setup)
    Xt = xp.concat([Xb, xp.ones((Xb.shape[0], 1), dtype=Xb.dtype)], axis=1) * xp.sqrt(obj.s)
    return Xt.T @ Xt, xp.max(xp.sum(Xt**2, axis=1))


def _merge_gram(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    return a[0] + b[0], array_namespace(a[1]).maximum(a[1], b[1])


def _merge_eval(a: _Evaluation, b: _Evaluation) -> _Evaluation:
    H = None if a[2] is None else a[2] + b[2]
    return a[0] + b[0], [x + y for x, y in zip(a[1], b[1], strict=True)], H


class Evaluator:
    """f, ∇f (and ∇²f) of the penalised objective over the chunks, one pass per call.

    ``classes``/``counts`` from :func:`encode_labels_dask`; ``class_weights`` one per class;
    ``l2`` = 1/C (0 for none). Results are arrays of the chunk library.
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        sw: Any,
        classes: Any,
        counts: Any,
        class_weights: Any,
        *,
        l2: float,
        fit_intercept: bool,
        peak: float,
    ) -> None:
        self.xp = chunk_namespace(X)
        self.arrays = aligned_rows(X, y, sw)
        self.blocks = row_blocks(*self.arrays)
        self.n = X.shape[0]
        self.passes = 0
        total = float(np.dot(counts, class_weights)) / peak  # Σ sᵢ/peak · (class weight)
        self.setup = {
            "classes": classes,
            "class_scale": np.asarray(class_weights) / (peak * total),
            "fit_intercept": fit_intercept,
        }
        self.l2 = l2 / peak / total
        p, K = X.shape[1], 1 if len(classes) == 2 else len(classes)
        self.shape, self.dtype = (p + 1, K), X.dtype
        rows = np.ones((p + 1, 1))
        rows[p] = 0.0
        self.penalised = self.xp.asarray(rows, dtype=X.dtype)
        self.fitted = self.xp.asarray(
            rows if not fit_intercept else np.ones((p + 1, 1)), dtype=X.dtype
        )

    def curvature(self, batch_size: int) -> Any:
        """L = c·(λ_max(X̃ᵀdiag(s)X̃) + n·max sᵢ‖x̃ᵢ‖²/m) + λ̃ (c = ¼ binary, ½ softmax,
        X̃ = [X, 1], the row term only for batches of m < n rows): the bound the in-memory
        gd and sgd step by (1/L), from one pass and a power iteration."""
        reduction = tree_reduce(_chunk_gram, _merge_gram, self.blocks, self.setup)
        G, row = (self.xp.asarray(a) for a in compute(reduction)[0])
        self.passes += 1
        if not bool(self.xp.all(self.xp.isfinite(G)) & self.xp.isfinite(row)):
            raise ValueError("Input X contains NaN or infinity.")
        bound = gram_eigenvalue(self.xp, G)
        if batch_size < self.n:
            bound = bound + row * self.n / batch_size
        return (0.25 if self.shape[1] == 1 else 0.5) * bound + self.l2

    def chunk_objective(self, Xc: Any, yc: Any, sc: Any) -> LogisticObjective:
        """The in-memory objective of one computed chunk of c rows, its weights scaled by
        n/c and penalised by λ̃: its ``rows(b, e)`` are the unbiased estimates of f on
        batches of those rows, as in memory."""
        return _chunk_objective(Xc, yc, sc, self.setup, self.n / Xc.shape[0], self.l2)

    def __call__(
        self, theta: Any, direction: Any, steps: Any, n_grads: int, hessian: bool = False
    ) -> _Evaluation:
        """(values (m,), [gradients], Hessian or None) at θ + αD for α in ``steps``."""
        xp = self.xp
        args = (
            self.setup,
            to_numpy(theta),
            to_numpy(direction),
            np.asarray(steps),
            n_grads,
            hessian,
        )
        values, grads, H = compute(tree_reduce(_chunk_eval, _merge_eval, self.blocks, *args))[0]
        self.passes += 1
        steps = xp.asarray(np.asarray(steps), dtype=self.dtype)
        W, D = theta * self.penalised, direction * self.penalised
        ww, wd, dd = xp.sum(W * W), xp.sum(W * D), xp.sum(D * D)
        values = values + 0.5 * self.l2 * (ww + 2 * steps * wd + steps**2 * dd)
        grads = [g + self.l2 * (W + steps[j] * D) * self.fitted for j, g in enumerate(grads)]
        if H is not None:
            q = self.shape[0] * self.shape[1]
            keep = xp.reshape(self.fitted * xp.ones((1, self.shape[1]), dtype=self.dtype), (q,))
            pen = xp.reshape(self.penalised * xp.ones((1, self.shape[1]), dtype=self.dtype), (q,))
            H = H + xp.eye(q, dtype=self.dtype) * (self.l2 * pen + (1 - keep))[None, :]
        return values, grads, H


class DescentObjective:
    """The objective :func:`~._stochastic.minimize_sgd` runs "gd" and "sgd" on: f and ∇f by
    one pass of ``evaluate`` each, and an epoch's batches streamed
    (:func:`~mlxp._dask.stream_chunks`: chunks in a shuffled order, each one's rows
    shuffled and cut into batches, the next chunk prefetched)."""

    def __init__(self, evaluate: Evaluator) -> None:
        self.evaluate, self.X = evaluate, evaluate.arrays[0]

    def value_grad(self, theta: Any) -> tuple[Any, Any, None]:
        values, grads, _ = self.evaluate(theta, self.evaluate.xp.zeros_like(theta), [0.0], 1)
        return values[0], grads[0], None

    def value(self, theta: Any) -> Any:
        return self.evaluate(theta, self.evaluate.xp.zeros_like(theta), [0.0], 0)[0][0]

    def curvature(self, batch_size: int) -> Any:
        return self.evaluate.curvature(batch_size)

    def epoch(self, rng: Any, batch_size: int) -> Iterator[LogisticObjective]:
        """The batch objectives of one pass, batches cut within each chunk."""
        self.evaluate.passes += 1
        for Xc, yc, sc in stream_chunks(self.evaluate.arrays, rng):
            yield from contiguous_batches(self.evaluate.chunk_objective(Xc, yc, sc), batch_size)


def fit_logistic_dask(est: Any, X: Any, y: Any, sw: Any) -> Any:
    """Fit ``est`` (a LogisticRegression) on Dask X, labels y, weights sw; set its attributes
    (concrete arrays of the chunk library) only once everything is computed."""
    classes, counts = encode_labels_dask(X, y, sw)
    if len(classes) < 2:
        raise ValueError(
            "This solver needs samples of at least 2 classes in the data, but the data "
            f"contains only one class: {classes[0]!r}."
        )
    peak = 1.0 if sw is None else float(compute(sw.max())[0])
    l2 = 0.0 if est.penalty is None or est.C == float("inf") else 1.0 / est.C
    evaluate = Evaluator(
        X,
        y,
        sw,
        classes,
        counts,
        est._class_weights(classes, list(counts)),
        l2=l2,
        fit_intercept=est.fit_intercept,
        peak=peak,
    )
    xp, (q, K) = evaluate.xp, evaluate.shape
    theta = xp.zeros((q, K), dtype=X.dtype)
    previous = getattr(est, "coef_", None)
    if est.warm_start and previous is not None and previous.shape == (K, q - 1):
        if list(est.classes_) == list(classes):
            coef = xp.asarray(to_numpy(est.coef_), dtype=X.dtype)
            bias = xp.asarray(to_numpy(est.intercept_), dtype=X.dtype)
            theta = xp.concat([coef.T, bias[None, :]], axis=0) * evaluate.fitted
    if est.solver in ("gd", "sgd"):
        theta, n_iter, converged = est._descend(DescentObjective(evaluate), theta)
    else:
        theta, n_iter, converged = minimize_dask(
            evaluate, theta, solver=est.solver, tol=est.tol, max_iter=est.max_iter
        )
    if K > 1:
        theta = theta - xp.mean(theta, axis=1, keepdims=True)
    if not converged:
        from mlxp.exceptions import warn_not_converged

        warn_not_converged(
            f"{est.solver} stopped after max_iter={est.max_iter} iterations without "
            "reaching tol; increase max_iter, scale the data, or loosen tol."
        )
    est.classes_, est.coef_, est.intercept_ = classes, theta[:-1, :].T, theta[-1, :]
    est.n_features_in_, est.n_iter_ = q - 1, n_iter
    est.n_passes_ = evaluate.passes
    return est
