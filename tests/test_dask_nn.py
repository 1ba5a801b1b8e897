"""Networks on Dask arrays (mlxp.nn.streaming): training streams row chunks one chunk ahead.

Every test that computes a Dask graph runs on one ``distributed.LocalCluster`` of two
in-process workers with one thread each (the module's ``client`` fixture), as users run
it; the source-level tests (prefetch order, chunks released) inject their own ``fetch``.
References: the same fit in memory (identical weights for one chunk, where the shuffles
coincide), the accuracy reached in memory for several chunks, NumPy predictions.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import array_api_compat.numpy as np_ns  # noqa: E402
import dask  # noqa: E402

from mlxp.datasets import load_digits  # noqa: E402
from mlxp.exceptions import ConvergenceWarning  # noqa: E402
from mlxp.nn import (  # noqa: E402
    BatchNorm1d,
    CNNClassifier,
    Dense,
    Dropout,
    MLPClassifier,
    MLPRegressor,
    ReLU,
    Sequential,
)
from mlxp.nn.streaming import DaskChunks  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    f"ignore::{ConvergenceWarning.__module__}.ConvergenceWarning"
)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return X / 16, y


def _chunked(X, y, rows):
    return da.from_array(X, chunks=(rows, *X.shape[1:])), da.from_array(y, chunks=rows)


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def _net():
    return Sequential([Dense(6, 16), ReLU(), Dropout(0.2), Dense(16, 1)], seed=3)


def test_one_chunk_trains_exactly_as_in_memory(client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = X @ rng.normal(size=(6, 1))
    fit = dict(epochs=3, batch_size=32, progress=False)
    a, b = _net(), _net()
    ha = a.fit(X, y, validation_data=(X[:50], y[:50]), **fit)
    Xd, yd = _chunked(X, y, 300)
    hb = b.fit(Xd, yd, validation_data=(Xd[:50], yd[:50]), **fit)
    assert ha == hb
    assert _same(a.get_weights().values(), b.get_weights().values())
    assert b.evaluate(Xd, yd) == a.evaluate(X, y)
    lazy = b.predict(Xd)
    assert isinstance(lazy, da.Array) and np.array_equal(lazy.compute(), a.predict(X))


def test_streamed_batchnorm_moves_its_running_statistics_as_in_memory(client):
    """Chunks of three batches in stored order cut the batches the data in memory gives:
    the same steps, so the same weights and running statistics."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6)) + 1.0
    y = X @ rng.normal(size=(6, 1))

    def net():
        return Sequential([Dense(6, 8), BatchNorm1d(8), ReLU(), Dense(8, 1)], seed=3)

    fit = dict(epochs=2, batch_size=32, shuffle=False, progress=False)
    a, b = net(), net()
    a.fit(X, y, **fit)
    b.fit(*_chunked(X, y, 96), **fit)
    expected = a.get_weights()
    assert not np.allclose(expected["1.running_mean"], 0.0)
    for name, value in b.get_weights().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-12, err_msg=name)


def test_chunks_train_on_the_chosen_backend(client):
    torch = pytest.importorskip("torch")
    import mlxp

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    y = X @ rng.normal(size=(6, 1))
    a, b = _net(), _net()
    with mlxp.use_backend("torch"):
        a.fit(X, y, epochs=2, progress=False)
        b.fit(*_chunked(X, y, 200), epochs=2, progress=False)
    weights = b.get_weights().values()
    assert all(isinstance(w, torch.Tensor) for w in weights)
    assert _same([w.numpy() for w in a.get_weights().values()], [w.numpy() for w in weights])


def test_one_chunk_on_jax_trains_as_in_memory(client):
    """On JAX, data in memory trains by compiled blocks of steps (jax.lax.scan), Dask
    chunks by the compiled step batch after batch: one chunk, the same model."""
    pytest.importorskip("jax")
    import mlxp
    from mlxp._compat import to_numpy

    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 6))
    y = X @ rng.normal(size=(6, 1))
    a, b = _net(), _net()
    with mlxp.use_backend("jax:cpu"):
        ha = a.fit(X, y, epochs=2, batch_size=32, progress=False)
        hb = b.fit(*_chunked(X, y, 300), epochs=2, batch_size=32, progress=False)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-5)
    for u, v in zip(a.get_weights().values(), b.get_weights().values(), strict=True):
        np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_estimator_one_chunk_equals_memory(client, digits, early_stopping):
    X, y = digits
    make = lambda: MLPClassifier((16,), max_iter=4, random_state=0, early_stopping=early_stopping)  # noqa: E731
    a, b = make().fit(X, y), make().fit(*_chunked(X, y, X.shape[0]))
    assert _same(a.coefs_, b.coefs_) and _same(a.intercepts_, b.intercepts_)
    assert a.loss_curve_ == b.loss_curve_
    assert all(type(w) is np.ndarray for w in b.coefs_)  # concrete, not lazy


def test_several_chunks_reach_the_in_memory_accuracy(client, digits):
    X, y = digits

    def make(**k):
        return MLPClassifier((32,), max_iter=10, learning_rate_init=0.01, random_state=0, **k)

    memory = make().fit(X, y).score(X, y)
    Xd, yd = _chunked(X, y, 700)  # 3 chunks, the last one short
    first, second = make().fit(Xd, yd), make().fit(Xd, yd)
    assert _same(first.coefs_, second.coefs_)  # same seed, same chunking: same model
    assert memory > 0.95 and first.score(X, y) > memory - 0.02
    stopped = make(early_stopping=True).fit(Xd, y)
    assert stopped.score(X, y) > 0.9 and len(stopped.validation_scores_) == stopped.n_iter_


def test_batches_stay_in_a_chunk_and_cover_it_once(client):
    n, rows = 103, 25
    X = np.arange(n, dtype=np.float64)[:, None]
    source = DaskChunks(*_chunked(X, X[:, 0], rows), np_ns, "cpu", np_ns.float64)
    rng = Sequential([], seed=0).build(np_ns, "cpu", np_ns.float64).rng
    epochs = []
    for _ in range(2):
        batches = [yb for _, yb in source.batches(rng, 10)]
        assert len(batches) == source.n_batches(10) == 4 * 3 + 1
        assert all(len({int(v) // rows for v in yb}) == 1 for yb in batches)
        seen = np.concatenate(batches)
        assert sorted(seen) == list(range(n))
        epochs.append(seen)
    assert not np.array_equal(*epochs)  # reshuffled: chunk order and rows within chunks
    stored = np.concatenate([yb for _, yb in source.batches(None, 10)])
    assert np.array_equal(stored, np.arange(n))


def _recording_source(k, rows, started):
    X = np.repeat(np.arange(k, dtype=np.float64), rows)[:, None]
    Xd, yd = _chunked(X, X[:, 0], rows)

    def fetch(i):
        started[i].set()
        return dask.compute(Xd.blocks[i], yd.blocks[i], scheduler="sync")

    return DaskChunks(Xd, yd, np_ns, "cpu", np_ns.float64, fetch=fetch)


def test_the_first_batch_of_a_short_chunk_is_its_mean(client, monkeypatch):
    """The divergence guard's reference, the first batch's mean loss: with chunks of 4 rows
    and batches of 32, the first batch is the chunk's 4 rows, and its mean is over them."""
    import mlxp.nn.training

    seen, check = [], mlxp.nn.training._DivergenceGuard.check

    def spy(self, model, epoch, epoch_loss, first, opt):
        seen.append(first)
        return check(self, model, epoch, epoch_loss, first, opt)

    monkeypatch.setattr(mlxp.nn.training._DivergenceGuard, "check", spy)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)

    def model():
        return Sequential([Dense(5, 8), ReLU(), Dense(8, 3)], seed=0)

    Xd, yd = da.from_array(X, chunks=(4, 5)), da.from_array(y, chunks=4)
    model().fit(
        Xd, yd, loss="cross_entropy", epochs=1, batch_size=32, shuffle=False, progress=False
    )
    expected = model().evaluate(X[:4], y[:4], loss="cross_entropy")["loss"]
    assert seen == [pytest.approx(expected, rel=1e-6)]


def test_the_next_chunk_is_fetched_while_the_current_one_trains():
    k, rows = 4, 30
    started = [threading.Event() for _ in range(k)]
    source = _recording_source(k, rows, started)
    overlapped = []
    for _, yb in source.batches(Sequential([], seed=1).build(np_ns, "cpu", None).rng, 10):
        j = int(yb[0])
        if j + 1 < k:  # a sequential loader would fetch j + 1 only after chunk j ends
            overlapped.append(started[j + 1].wait(timeout=10))
    assert overlapped and all(overlapped)


class _Tracked(np.ndarray):
    """A NumPy array that can be weakly referenced: to see when a chunk is freed."""


def test_a_chunk_is_released_before_the_next_one_trains():
    k, rows = 4, 20
    refs = {}
    X = np.repeat(np.arange(k, dtype=np.float64), rows)[:, None]
    Xd, yd = _chunked(X, X[:, 0], rows)

    def fetch(i):
        xc, yc = dask.compute(Xd.blocks[i], yd.blocks[i], scheduler="sync")
        xc, yc = xc.view(_Tracked), yc.view(_Tracked)
        refs[i] = (weakref.ref(xc), weakref.ref(yc))
        return xc, yc

    source = DaskChunks(Xd, yd, np_ns, "cpu", np_ns.float64, fetch=fetch)
    current = -1
    for xb, yb in source.batches(None, 10):  # in stored order: batches are views
        assert isinstance(xb, _Tracked)
        j = int(yb[0])
        if j != current:
            held = [i for i, pair in refs.items() if any(r() is not None for r in pair)]
            assert set(held) <= {j, j + 1}, (j, held)
            current = j
    del xb, yb
    assert all(r() is None for pair in refs.values() for r in pair)


def test_partial_fit_in_memory_and_on_dask(client, digits):
    X, y = digits
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier((16,)).partial_fit(X, y)
    with pytest.raises(ValueError, match="not in classes"):
        MLPClassifier((16,)).partial_fit(X, y, classes=np.arange(9))

    def make(**k):
        return MLPClassifier((32,), learning_rate_init=0.01, random_state=0, **k)

    a, b = make(), make()
    Xd, yd = _chunked(X, y, X.shape[0])
    for _ in range(8):
        a.partial_fit(X, y, classes=np.arange(10))
        b.partial_fit(Xd, yd, classes=np.arange(10))
    assert _same(a.coefs_, b.coefs_) and a.n_iter_ == 8 and len(a.loss_curve_) == 8
    with pytest.raises(ValueError, match="not the same as on last call"):
        a.partial_fit(X, y, classes=np.arange(11))
    # eight passes with the optimiser carried over equal an 8-epoch fit
    full = make(max_iter=8, n_iter_no_change=100).fit(X, y)
    assert _same(a.coefs_, full.coefs_) and a.score(X, y) > 0.9
    c = make().partial_fit(*_chunked(X, y, 600), classes=np.arange(10))
    assert c.n_iter_ == 1 and c.loss_ < np.log(10)  # better than the uniform guess
    r = MLPRegressor((8,), random_state=0).partial_fit(*_chunked(X, y.astype(float), 600))
    assert r.n_iter_ == 1 and r.predict(X).shape == (X.shape[0],)


def test_predictions_are_lazy_blockwise_and_match_numpy(client, digits):
    X, y = digits
    Xd, yd = _chunked(X, y, 500)
    clf = MLPClassifier((16,), max_iter=3, random_state=0).fit(Xd, yd)
    tasks = len(Xd.__dask_graph__())
    for method in ("predict", "predict_proba", "predict_log_proba"):
        lazy = getattr(clf, method)(Xd)
        assert isinstance(lazy, da.Array) and len(lazy.__dask_graph__()) == tasks + Xd.numblocks[0]
        assert np.allclose(lazy.compute(), getattr(clf, method)(X))
    reg = MLPRegressor((8,), max_iter=3, random_state=0).fit(Xd, np.stack([y, -y], axis=1))
    assert np.allclose(reg.predict(Xd).compute(), reg.predict(X))
    images = X.reshape(-1, 1, 8, 8)
    cnn = CNNClassifier(((4, 3),), (8,), max_iter=2, random_state=0).fit(*_chunked(images, y, 900))
    assert np.array_equal(cnn.predict(_chunked(images, y, 500)[0]).compute(), cnn.predict(images))


def test_string_labels_and_unknown_chunk_sizes(client, digits):
    X, y = digits
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    Xd, yd = _chunked(X, names[y], 500)
    keep = da.from_array(np.ones(X.shape[0], dtype=bool), chunks=500)
    Xn, yn = Xd[keep], yd[keep]  # boolean indexing: Dask no longer knows the chunk sizes
    assert np.isnan(Xn.chunks[0][0])
    make = lambda: MLPClassifier((16,), max_iter=3, random_state=0)  # noqa: E731
    a, b = make().fit(Xd, yd), make().fit(Xn, yn)
    assert _same(a.coefs_, b.coefs_) and list(a.classes_) == sorted(names)
    assert np.array_equal(a.predict(Xd).compute(), a.predict(X))


def test_bad_inputs_are_refused_before_training(client, digits):
    X, y = digits
    Xd, _ = _chunked(X, y, 500)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MLPClassifier((8,), max_iter=1).fit(Xd, y[:-1])
    with pytest.raises(ValueError, match=r"X has 1797 samples but y has 1796"):
        _net().fit(da.from_array(X[:, :6], chunks=500), y[:-1], progress=False)
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier((8,), max_iter=1).fit(Xd, da.zeros(X.shape[0], chunks=500))
    with pytest.raises(ValueError, match="continuous"):
        MLPClassifier((8,), max_iter=1).fit(Xd, da.from_array(y + 0.5, chunks=500))
