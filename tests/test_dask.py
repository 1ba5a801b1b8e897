"""The linear models on Dask arrays, on a distributed LocalCluster started here.

Every Dask fit is checked against the same fit on the NumPy arrays (exact solvers to
1e-10 relative on correlated data; L-BFGS and Newton follow the in-memory iterates, so to
1e-8), each Dask linear-algebra call mlxp relies on against NumPy, the fitted attributes
for being concrete, ``predict`` for an O(chunks) graph without the fit, the iterative
solvers for one pass (one ``dask.compute``) per iteration of a constant size, and one
out-of-core fit on worker processes whose memory limit is below their share of X.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import mlxp  # noqa: E402
from mlxp.exceptions import ConvergenceWarning, RankWarning  # noqa: E402
from mlxp.linear_model import (  # noqa: E402
    LinearRegression,
    LogisticRegression,
    Ridge,
    _dask_logistic,
)
from mlxp.linear_model._dask_exact import _weighted, gram_statistics, tall_factor  # noqa: E402

CHUNK = 700


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


@pytest.fixture(scope="module")
def client():
    """Two in-process workers of one thread; the scheduler's warnings are recorded."""
    messages = _Messages()
    logging.getLogger("distributed").addHandler(messages)
    with (
        distributed.LocalCluster(
            processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
    logging.getLogger("distributed").removeHandler(messages)
    assert not [m for m in messages.records if "run_spec" in m], messages.records


def _correlated(rng, n=3000, p=6, k=None):
    """Columns correlated at ~0.9 (κ(X) ~ 30), known coefficients, noise."""
    Z = rng.normal(size=(n, p))
    X = Z + 2.5 * Z[:, :1] + 3.0
    W = np.arange(1.0, p + 1) if k is None else rng.normal(size=(p, k))
    y = X @ W + 0.5 + 0.1 * rng.normal(size=(n,) if k is None else (n, k))
    return X, y


def _dask(*arrays):
    return [None if a is None else da.from_array(a, chunks=CHUNK).persist() for a in arrays]


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b)))


# ------------------------------------------------------------------ the Dask calls used
def test_gram_reduction_and_tsqr_match_numpy(client, rng):
    X, y = _correlated(rng)
    s = rng.uniform(0.1, 2.0, size=X.shape[0])
    Xd, Yd, sd = _dask(X, y[:, None], s)
    w, mean, C, top = gram_statistics(Xd, Yd, sd).compute()
    A = np.column_stack([X, y])
    m = s @ A / s.sum()
    np.testing.assert_allclose(mean, m, rtol=1e-13)
    np.testing.assert_allclose(C, ((A - m) * s[:, None]).T @ (A - m), rtol=1e-11)
    assert w == pytest.approx(s.sum(), rel=1e-13) and top == s.max()
    R = tall_factor(Xd, Yd, sd, True).compute()
    B = np.column_stack([np.ones(len(s)), X, y]) * np.sqrt(s)[:, None]
    R_np = np.linalg.qr(B, mode="r")
    np.testing.assert_allclose(np.abs(R), np.abs(R_np), rtol=1e-9, atol=1e-9 * np.abs(R_np).max())
    assert np.allclose(R, np.triu(R))


def test_array_api_compat_dask_cholesky_is_not_relied_on(rng):
    """The reason mlxp's Dask path factors p × p matrices on the client: array-api-compat
    1.16's Dask cholesky returns the upper factor (this test notices when that is fixed)."""
    import array_api_compat.dask.array as dxp

    A = rng.normal(size=(4, 4))
    A = A @ A.T + 4 * np.eye(4)
    L = np.asarray(dxp.linalg.cholesky(da.from_array(A)))
    if np.allclose(L, np.tril(L)):
        pytest.skip("array-api-compat's Dask cholesky is lower now")
    assert np.allclose(L.T @ L, A)


# ------------------------------------------------------------------ exact solvers
@pytest.mark.parametrize(
    "make",
    [
        lambda: LinearRegression(),
        lambda: LinearRegression(solver="cholesky", fit_intercept=False),
        lambda: LinearRegression(solver="qr"),
        lambda: LinearRegression(solver="svd"),
        lambda: Ridge(3.0),
        lambda: Ridge(0.5, solver="qr", fit_intercept=False),
        lambda: Ridge(2.0, solver="svd"),
    ],
    ids=["ols-auto", "ols-chol-noint", "ols-qr", "ols-svd", "ridge", "ridge-qr-noint", "ridge-svd"],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [None, 2])
def test_exact_solvers_equal_numpy(client, rng, make, weighted, k):
    X, y = _correlated(rng, k=k)
    s = rng.uniform(0.1, 5.0, size=X.shape[0]) if weighted else None
    ref = make().fit(X, y, sample_weight=s)
    Xd, yd, sd = _dask(X, y, s)
    model = make().fit(Xd, yd, sample_weight=sd)
    assert isinstance(model.coef_, np.ndarray)  # concrete, of the chunk library
    assert type(model.intercept_) is type(ref.intercept_)
    assert model.solver_ == ref.solver_
    assert _rel(model.coef_, ref.coef_) < 1e-10
    assert np.max(np.abs(model.intercept_ - ref.intercept_)) < 1e-10 * np.max(np.abs(y))


def test_auto_falls_back_to_tsqr_on_ill_conditioned_data(client, rng):
    X, y = _correlated(rng)
    X[:, 1] = X[:, 0] + 1e-5 * rng.normal(size=X.shape[0])  # κ(XᵀX) ≫ ε^(-1/4)
    ref = LinearRegression().fit(X, y)
    model = LinearRegression().fit(*_dask(X, y))
    assert ref.solver_ == model.solver_ == "qr"
    assert _rel(model.coef_, ref.coef_) < 1e-8  # κ(X) ~ 1e6: QR's own accuracy


def test_rank_deficient_svd_is_minimum_norm(client, rng):
    X, y = _correlated(rng)
    X = np.column_stack([X, X[:, 0]])
    with pytest.warns(RankWarning):
        ref = LinearRegression(solver="svd").fit(X, y)
    with pytest.warns(RankWarning):
        model = LinearRegression(solver="svd").fit(*_dask(X, y))
    assert _rel(model.coef_, ref.coef_) < 1e-8
    assert LinearRegression().fit(*_dask(X, y)).solver_ == "svd"


def test_wide_data_and_bad_input(client, rng):
    X, y = rng.normal(size=(5, 8)), rng.normal(size=5)
    model = LinearRegression().fit(*_dask(X, y))  # computed into memory, as documented
    np.testing.assert_allclose(model.coef_, LinearRegression().fit(X, y).coef_, rtol=1e-12)
    X, y = _correlated(rng)
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LinearRegression().fit(*_dask(X, y))
    with pytest.raises(ValueError, match="NaN"):
        LogisticRegression().fit(*_dask(X, (y > y.mean()).astype(int)))
    for solver in ("gd", "sgd"):
        with pytest.raises(ValueError, match="NaN"):
            LinearRegression(solver=solver).fit(*_dask(X, y))
        with pytest.raises(ValueError, match="NaN"):
            LogisticRegression(solver=solver).fit(*_dask(X, y > y.mean()))


# ------------------------------------------------------------------ prediction
def test_predict_is_blockwise_and_never_refits(client, rng):
    X, y = _correlated(rng)
    Xd, yd = _dask(X, y)
    model = LinearRegression().fit(Xd, yd)
    pred = model.predict(Xd)
    n_chunks = Xd.numblocks[0]
    graph = dict(pred.__dask_graph__())
    assert len(graph) <= 2 * n_chunks  # X's chunks and one task per chunk
    assert {k[0] for k in graph} <= {Xd.name, pred.name}
    np.testing.assert_allclose(pred.compute(), model.predict(X), rtol=1e-12)
    assert isinstance(model.score(Xd, yd), float)
    labels = np.where(y > np.median(y), "high", "low")
    clf = LogisticRegression().fit(Xd, da.from_array(labels, chunks=CHUNK))
    for method in (clf.predict, clf.predict_proba, clf.decision_function, clf.predict_log_proba):
        out = method(Xd)
        assert len(dict(out.__dask_graph__())) <= 2 * n_chunks
        expected = getattr(LogisticRegression().fit(X, labels), method.__name__)(X)
        got = out.compute()
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
        else:
            np.testing.assert_array_equal(got, expected)
    assert clf.score(Xd, labels) == pytest.approx(clf.score(X, labels))


@pytest.mark.parametrize("k", [1, 3])
def test_predict_keeps_the_shape_of_y_with_columns(client, rng, k):
    """Fitted on y (n, k), one column included, ``predict`` on Dask X is (n, k), as in
    memory: with k = 1 it was declared (n,) while each chunk gave (m, 1), and computing
    it failed."""
    X, y = _correlated(rng, k=k)
    Xd, yd = _dask(X, y)
    model = LinearRegression().fit(Xd, yd)
    pred = model.predict(Xd)
    assert pred.shape == (len(y), k) == model.predict(X).shape
    np.testing.assert_allclose(pred.compute(), model.predict(X), rtol=1e-12)
    assert model.score(Xd, yd) == pytest.approx(model.score(X, y))


# ------------------------------------------------------------------ iterative solvers
def _classes(rng, K):
    X, y = _correlated(rng, p=5)
    X = (X - X.mean(0)) / X.std(0)
    logits = X @ rng.normal(size=(5, K)) + rng.normal(size=(len(y), K))
    return X, np.argmax(logits, axis=1)


@pytest.mark.parametrize(
    ("solver", "K", "weights"),
    [
        ("lbfgs", 2, None),
        ("lbfgs", 2, "balanced"),
        ("lbfgs", 3, "sample"),
        ("newton", 2, "sample"),
        ("newton", 3, None),
        ("newton", 3, "balanced"),
    ],
)
def test_logistic_equals_numpy(client, rng, solver, K, weights):
    X, y = _classes(rng, K)
    s = rng.uniform(0.2, 3.0, size=len(y)) if weights == "sample" else None
    cw = "balanced" if weights == "balanced" else None
    # Multinomial Newton without a penalty on b: H is singular along the shared shift of the
    # intercepts, which the in-memory Newton's jitter does not always overcome (a NumPy-side
    # limitation, not Dask's); compared without intercept there.
    intercept = not (solver == "newton" and K == 3)
    make = lambda: LogisticRegression(  # noqa: E731
        solver=solver, C=0.5, class_weight=cw, tol=1e-8, fit_intercept=intercept
    )
    ref = make().fit(X, y, sample_weight=s)
    Xd, yd, sd = _dask(X, y, s)
    model = make().fit(Xd, yd, sample_weight=sd)
    assert isinstance(model.coef_, np.ndarray) and model.coef_.shape == ref.coef_.shape
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    assert _rel(model.coef_, ref.coef_) < 1e-6
    # the Dask driver's line search is not the in-memory compact L-BFGS's: a few iterations apart
    assert abs(model.n_iter_ - ref.n_iter_) <= max(2, 0.1 * ref.n_iter_)


@pytest.mark.parametrize(
    ("make", "weighted", "k"),
    [
        (lambda: LinearRegression(solver="gd", tol=1e-6, max_iter=3000), False, None),
        (lambda: Ridge(3.0, solver="gd", tol=1e-6, max_iter=3000), True, 2),
        (lambda: Ridge(0.5, solver="gd", fit_intercept=False, max_iter=30), True, None),
    ],
)
def test_least_squares_gd_equals_numpy(client, rng, make, weighted, k):
    """One Gram pass, then gd on p × p matrices: the in-memory iterates (step, stopping)."""
    X, y = _correlated(rng, n=2000, p=4, k=k)
    X = X - X.mean(0)  # κ ~ 10: gd reaches tol in a few hundred steps
    s = rng.uniform(0.2, 3.0, size=len(X)) if weighted else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=30: on both sides
        ref = make().fit(X, y, sample_weight=s)
        model = make().fit(*_dask(X, y, s))
    assert isinstance(model.coef_, np.ndarray) and model.solver_ == "gd"
    assert model.n_iter_ == ref.n_iter_ and (model.n_iter_ < 3000 or ref.n_iter_ == 30)
    assert _rel(model.coef_, ref.coef_) < 1e-10
    assert _rel(model.intercept_, ref.intercept_ + 1e-300) < 1e-10 or not np.any(ref.intercept_)


@pytest.mark.parametrize(("K", "weighted"), [(2, True), (3, False)])
def test_logistic_gd_equals_numpy(client, rng, monkeypatch, K, weighted):
    """gd: one curvature pass, then one pass (f, ∇f) per step of constant size."""
    X, y = _classes(rng, K)
    s = rng.uniform(0.2, 3.0, size=len(y)) if weighted else None
    make = lambda: LogisticRegression(solver="gd", C=0.5, tol=3e-2, max_iter=300)  # noqa: E731
    ref = make().fit(X, y, sample_weight=s)
    sizes = _count_computes(monkeypatch)
    model = make().fit(*_dask(X, y, s))
    assert ref.n_iter_ < 300 and model.n_iter_ == ref.n_iter_
    assert _rel(model.coef_, ref.coef_) < 1e-10
    assert _rel(model.intercept_, ref.intercept_) < 1e-10
    # labels (and the largest weight), curvature, then f and ∇f at θ₀ and after every step
    assert len(sizes) == model.n_passes_ + 1 + weighted == model.n_iter_ + 3 + weighted
    assert len(set(sizes[-model.n_iter_ - 1 :])) == 1  # all of one graph size


def _count_computes(monkeypatch):
    """Graph sizes of every dask.compute the logistic path makes."""
    sizes = []
    real = _dask_logistic.compute

    def counting(*args):
        sizes.append(sum(len(dict(a.__dask_graph__())) for a in args))
        return real(*args)

    monkeypatch.setattr(_dask_logistic, "compute", counting)
    return sizes


def test_one_constant_pass_per_iteration(client, rng, monkeypatch):
    """L-BFGS (and Newton): one dask.compute per iteration, each of the same graph size."""
    X, y = _classes(rng, 3)
    Xd, yd = _dask(X, y)
    passes = {}
    for max_iter in (2, 4, 8):
        sizes = _count_computes(monkeypatch)
        with pytest.warns(ConvergenceWarning):
            model = LogisticRegression(max_iter=max_iter, tol=0, penalty=None).fit(Xd, yd)
        evaluations = sizes[1:]  # after the label pass
        assert len(set(evaluations)) == 1  # no graph carried from one iteration to the next
        assert model.n_passes_ == len(evaluations) <= max_iter + 2
        passes[max_iter] = len(evaluations)
    assert passes[8] - passes[4] <= 4 + 1 and passes[4] - passes[2] <= 2 + 1  # linear
    sizes = _count_computes(monkeypatch)
    model = LogisticRegression(solver="newton", C=0.1, fit_intercept=False).fit(Xd, yd)
    assert len(set(sizes[1:])) == 1 and model.n_passes_ == len(sizes) - 1 <= model.n_iter_ + 2


def test_set_backend_dask_and_environment(client, rng):
    X, y = _correlated(rng, n=500)
    with mlxp.use_backend("dask"):
        model = LinearRegression().fit(X, y)
        pred = model.predict(X)
    assert isinstance(model.coef_, np.ndarray) and isinstance(pred, np.ndarray)
    np.testing.assert_allclose(pred, LinearRegression().fit(X, y).predict(X), rtol=1e-10)
    code = "import mlxp; print(mlxp.get_backend())"
    env = {**os.environ, "MLXP_BACKEND": "dask"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "dask:cpu", out.stderr


# ------------------------------------------------------------------ out of core, processes
def _affine(block, w):
    return block @ w + 0.5


def test_out_of_core_on_worker_processes():
    """X of 160 MB made lazily on two worker processes limited to 250 MiB each: a worker
    starts at ~145 MB, so holding its half of X (80 MB) would take it past the spill (70%)
    and pause (80%) thresholds. The fits end with nothing spilled and no worker restarted."""
    n, p, chunk = 2_000_000, 10, 100_000
    with (
        distributed.LocalCluster(
            processes=True,
            n_workers=2,
            threads_per_worker=1,
            memory_limit="250MiB",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        workers = set(c.scheduler_info()["workers"])
        X = da.random.default_rng(0).random(size=(n, p), chunks=(chunk, p)) - 0.5
        w = np.linspace(-3, 3, p)
        # blockwise, w a constant of each task: X @ w would make w a one-chunk Dask array
        # whose column w[:, None] every fit's graph holds under one hashed name
        z = X.map_blocks(_affine, w, drop_axis=1, dtype=X.dtype)
        results = [LinearRegression().fit(X, z).coef_]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the passes are what is tested
            results.append(LogisticRegression(max_iter=2).fit(X, z > 0.5).coef_)
            results.append(LogisticRegression(max_iter=1).fit(X, da.floor(z).clip(-1, 1)).coef_)
        spilled = c.run(lambda dask_worker: dask_worker.data.spilled_total.disk)
        assert set(c.scheduler_info()["workers"]) == workers  # no worker restarted
        assert all(v == 0 for v in spilled.values()), spilled
    np.testing.assert_allclose(results[0], w, atol=1e-9)
    assert results[1].shape == (1, p) and results[2].shape == (3, p)
    assert np.corrcoef(results[1][0], w)[0, 1] > 0.99


# ------------------------------------------------------------------ mini-batch SGD, streamed
SGD_CASES = ["linear-weighted", "ridge-adam", "binary-weighted", "multinomial"]


def _sgd_cases(rng):
    X, y = _correlated(rng, n=2000, p=5)
    X = (X - X.mean(0)) / X.std(0)
    s = rng.uniform(0.5, 2.0, size=len(y))
    labels = (y > np.median(y)).astype(int) + (y > np.quantile(y, 0.8))
    seeded = dict(solver="sgd", random_state=1, max_iter=15, tol=0.0)
    return {
        "linear-weighted": (LinearRegression(**seeded), X, y, s),
        "ridge-adam": (
            Ridge(alpha=3.0, optimizer="adam", learning_rate=0.05, **seeded),
            X,
            y,
            None,
        ),
        "binary-weighted": (LogisticRegression(batch_size=64, **seeded), X, labels > 0, s),
        "multinomial": (LogisticRegression(C=0.5, batch_size=64, **seeded), X, labels, None),
    }


def _fit_quietly(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*data[:2], sample_weight=data[2])


def _stream_fetches(monkeypatch):
    """Graph sizes of the dask.compute calls that fetch a chunk to stream."""
    import mlxp._dask

    sizes, real = [], mlxp._dask.compute

    def counting(*args):
        sizes.append(sum(len(dict(a.__dask_graph__())) for a in args))
        return real(*args)

    monkeypatch.setattr(mlxp._dask, "compute", counting)
    return sizes


@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_on_one_chunk_is_the_in_memory_sgd(client, rng, case):
    """Same seed, same model: one chunk is shuffled and cut into batches as in memory."""
    model, X, y, s = _sgd_cases(rng)[case]
    ref = _fit_quietly(type(model)(**model.get_params()), X, y, s)
    one = [None if a is None else da.from_array(a, chunks=-1) for a in (X, y, s)]
    fitted = _fit_quietly(model, *one)
    assert isinstance(fitted.coef_, np.ndarray) and fitted.n_iter_ == ref.n_iter_ == 15
    assert _rel(fitted.coef_, ref.coef_) < 1e-10
    assert _rel(fitted.intercept_, ref.intercept_) < 1e-10


@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_streams_chunks_to_the_in_memory_accuracy(client, rng, monkeypatch, case):
    """Several chunks: shuffled by chunk, so other batches, the same quality; each epoch
    fetches every chunk once, by graphs of one size (nothing carried across epochs)."""
    model, X, y, s = _sgd_cases(rng)[case]
    ref = _fit_quietly(type(model)(**model.get_params()), X, y, s)
    data = _dask(X, y, s)
    sizes = _stream_fetches(monkeypatch)
    fitted = _fit_quietly(model, *data)
    chunks = data[0].numblocks[0]
    assert chunks == 3 and len(sizes) == chunks * fitted.n_iter_ and len(set(sizes)) == 1
    assert isinstance(fitted.coef_, np.ndarray)
    assert fitted.score(X, y) == pytest.approx(ref.score(X, y), abs=0.02)
    if isinstance(model, LogisticRegression):
        assert _rel(fitted.coef_, ref.coef_) < 0.1
    else:
        assert _rel(fitted.coef_, ref.coef_) < 1e-2


# ------------------------------------------------------------------ chunks on a GPU
class DeviceChunk(np.ndarray):
    """A stand-in for chunks of a GPU library (CuPy under dask-cuda): NumPy's arithmetic,
    but, as CuPy, refusing to meet a host (plain NumPy) array in one operation or one
    concatenation; Dask takes its concatenation by ``__array_priority__``, as CuPy's."""

    __array_priority__ = 100

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(_host(a) for a in inputs):
            raise TypeError("a host array beside a device one")
        plain = [a.view(np.ndarray) if isinstance(a, DeviceChunk) else a for a in inputs]
        result = getattr(ufunc, method)(*plain, **kwargs)
        return result.view(DeviceChunk) if isinstance(result, np.ndarray) else result


def _host(a):
    return type(a) is np.ndarray and a.ndim > 0


def _device_concatenate(arrays, axis=0, **kwargs):
    if any(_host(a) for a in arrays):
        raise TypeError("a host array beside a device one")
    return np.concatenate([np.asarray(a) for a in arrays], axis=axis, **kwargs).view(DeviceChunk)


@pytest.fixture
def device_chunks():
    """Dask arrays of :class:`DeviceChunk` chunks, from NumPy arrays."""
    from dask.array.dispatch import concatenate_lookup

    concatenate_lookup.register(DeviceChunk, _device_concatenate)
    return lambda a: da.from_array(a.view(DeviceChunk), chunks=CHUNK, asarray=False)


def test_tall_factor_makes_its_intercept_column_in_the_chunks_library(device_chunks, rng):
    """TSQR's column of ones (an intercept) is made like X's chunks: made by ``da.ones``
    (NumPy chunks) it met CuPy chunks in one concatenation, which CuPy refuses."""
    X, y = _correlated(rng)
    A = _weighted(device_chunks(X), device_chunks(y[:, None]), None, fit_intercept=True)
    assert type(A._meta) is DeviceChunk  # the stand-in's chunks stop here: NumPy's own
    # functions (broadcast_to in Dask's ones) return plain arrays, CuPy's do not


def test_a_number_as_sample_weight_is_made_in_the_chunks_library(device_chunks, rng):
    """``sample_weight=2.0`` with Dask X becomes weights chunked as X is (``da.full`` has
    NumPy chunks, which CuPy chunks of X refuse to meet)."""
    from mlxp._validation import validate_data

    X, y = _correlated(rng)
    sw = validate_data(LinearRegression(), device_chunks(X), da.from_array(y), 2.0, reset=True)[3]
    assert type(sw._meta) is DeviceChunk  # Dask makes the chunks from it
    np.testing.assert_array_equal(sw.compute(scheduler="sync"), np.full(len(y), 2.0))


def test_streamed_chunks_are_permuted_by_host_draws_moved_to_each_chunk(monkeypatch, rng):
    """The rows of each streamed chunk are permuted by a permutation drawn on the host and
    moved to that chunk's own library and device: X's chunks may be CuPy's and y's NumPy's
    (host labels), and NumPy cannot index by a CuPy array. The same draws as in memory."""
    import array_api_compat.numpy as host

    import mlxp._dask
    from mlxp._compat import Generator

    X, y = _correlated(rng, n=2100)
    moved = []
    real_move = mlxp._dask.move

    def spy(perm, xp, device):
        moved.append((type(perm), xp, device))
        return real_move(perm, xp, device)

    monkeypatch.setattr(mlxp._dask, "move", spy)
    plans = []
    real_plan = mlxp._dask.chunk_plan
    monkeypatch.setattr(mlxp._dask, "chunk_plan", lambda *a: plans.append(a[2]) or real_plan(*a))
    chunks = list(mlxp._dask.stream_chunks(_dask(X, y), Generator(5)))
    assert plans == [host] and len(moved) == 2 * len(chunks) == 6
    assert all(kind is np.ndarray and xp is host for kind, xp, _ in moved)
    order, perms = real_plan([CHUNK] * 3, Generator(5), host)
    for (Xc, yc), i, perm in zip(chunks, order, perms, strict=True):
        rows = slice(i * CHUNK, (i + 1) * CHUNK)
        np.testing.assert_array_equal(Xc, X[rows][perm])
        np.testing.assert_array_equal(yc, y[rows][perm])


def _cupy():
    """CuPy where it runs here (a GPU), else a skip saying why."""
    from mlxp._backend import _library

    found = _library("cupy")
    if isinstance(found, Exception):
        pytest.skip(f"cupy: {found}")
    import cupy

    return cupy


def test_estimators_on_cupy_chunks(client, rng):
    """Dask arrays of CuPy chunks (as dask-cuda makes them): every exact solver with an
    intercept and a number as ``sample_weight``, and streamed SGD with the labels a NumPy
    array (its row permutations are drawn on the host and moved to each chunk's library),
    give the models of NumPy chunks."""
    cupy = _cupy()
    X, y = _correlated(rng)
    on_gpu = [da.from_array(cupy.asarray(a), chunks=CHUNK) for a in (X, y)]
    on_host = _dask(X, y)
    for solver in ("auto", "cholesky", "qr", "svd"):
        gpu = LinearRegression(solver=solver).fit(*on_gpu, sample_weight=2.0)
        host = LinearRegression(solver=solver).fit(*on_host, sample_weight=2.0)
        assert _rel(mlxp.to_numpy(gpu.coef_), host.coef_) < 1e-8
    labels = (y > np.median(y)).astype(int)
    sgd = {"solver": "sgd", "max_iter": 3, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gpu = LogisticRegression(**sgd).fit(on_gpu[0], labels)
        host = LogisticRegression(**sgd).fit(on_host[0], labels)
    assert _rel(mlxp.to_numpy(gpu.coef_), host.coef_) < 1e-6
