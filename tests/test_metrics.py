"""Metrics against scikit-learn's, on every backend, with and without sample weights."""

from __future__ import annotations

import array_api_compat as aac
import numpy as np
import pytest

from mlxp import metrics

sk_metrics = pytest.importorskip("sklearn.metrics")

rng = np.random.default_rng(0)
Y_TRUE = rng.normal(size=(40, 3))
Y_PRED = Y_TRUE + 0.3 * rng.normal(size=(40, 3))
WEIGHTS = rng.uniform(0.1, 2.0, size=40)
LABELS_TRUE = rng.integers(0, 4, size=40)
LABELS_PRED = np.where(rng.uniform(size=40) < 0.7, LABELS_TRUE, rng.integers(0, 4, size=40))
PROBA = rng.dirichlet(np.ones(4), size=40)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("columns", [None, 3])
def test_regression_metrics(backend, dtype, weighted, columns):
    y_true = Y_TRUE[:, 0] if columns is None else Y_TRUE
    y_pred = Y_PRED[:, 0] if columns is None else Y_PRED
    sw = WEIGHTS if weighted else None
    args = (backend.asarray(y_true, dtype), backend.asarray(y_pred, dtype))
    kwargs = {"sample_weight": None if sw is None else backend.asarray(sw, dtype)}
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for ours, theirs in [
        (metrics.r2_score, sk_metrics.r2_score),
        (metrics.mean_squared_error, sk_metrics.mean_squared_error),
    ]:
        value = ours(*args, **kwargs)
        assert aac.device(value) == backend.device and value.shape == ()
        expected = theirs(y_true, y_pred, sample_weight=sw)
        assert float(value) == pytest.approx(expected, rel=rtol)


@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics(backend, weighted):
    sw = WEIGHTS if weighted else None
    true, pred = backend.asarray(LABELS_TRUE), backend.asarray(LABELS_PRED)
    bw = None if sw is None else backend.asarray(sw)
    accuracy = metrics.accuracy_score(true, pred, sample_weight=bw)
    assert aac.device(accuracy) == backend.device
    assert float(accuracy) == pytest.approx(
        sk_metrics.accuracy_score(LABELS_TRUE, LABELS_PRED, sample_weight=sw)
    )
    confusion = metrics.confusion_matrix(true, pred, sample_weight=bw)
    np.testing.assert_allclose(
        backend.to_numpy(confusion),
        sk_metrics.confusion_matrix(LABELS_TRUE, LABELS_PRED, sample_weight=sw),
        rtol=1e-6,
    )
    dtype = backend.float_dtypes[-1]
    loss = metrics.log_loss(true, backend.asarray(PROBA, dtype), sample_weight=bw)
    expected = sk_metrics.log_loss(LABELS_TRUE, PROBA, sample_weight=sw)
    assert float(loss) == pytest.approx(expected, rel=1e-5 if dtype == "float32" else 1e-12)


def test_string_labels_and_explicit_label_order():
    true = np.array(["b", "a", "c", "a", "b"])
    pred = np.array(["b", "c", "c", "a", "a"])
    assert float(metrics.accuracy_score(true, pred)) == pytest.approx(0.6)
    order = ["c", "b", "a"]
    np.testing.assert_array_equal(
        metrics.confusion_matrix(true, pred, labels=order),
        sk_metrics.confusion_matrix(true, pred, labels=order),
    )
    with pytest.raises(ValueError, match="not in labels"):
        metrics.confusion_matrix(true, pred, labels=["a", "b"])
    assert float(metrics.accuracy_score(true, pred, normalize=False)) == 3.0


@pytest.mark.parametrize("labels_as", ["list", "numpy", "strings"])
def test_log_loss_takes_labels_from_elsewhere_than_the_probabilities(backend, dtype, labels_as):
    """y_prob on the backend, y_true (and the weights) a list or NumPy array of labels:
    placed where y_prob is, in its dtype, as scikit-learn computes it."""
    y = {"list": LABELS_TRUE.tolist(), "numpy": LABELS_TRUE}.get(
        labels_as, np.array(list("abcd"))[LABELS_TRUE]
    )
    value = metrics.log_loss(y, backend.asarray(PROBA, dtype), sample_weight=WEIGHTS)
    assert aac.device(value) == backend.device and value.dtype == backend.dtype(dtype)
    expected = sk_metrics.log_loss(LABELS_TRUE, PROBA, sample_weight=WEIGHTS)
    assert float(value) == pytest.approx(expected, rel=1e-5 if dtype == "float32" else 1e-12)


def test_binary_log_loss_from_one_column_and_errors():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.8, 0.6, 0.3])
    assert float(metrics.log_loss(y, p)) == pytest.approx(sk_metrics.log_loss(y, p))
    assert np.isfinite(float(metrics.log_loss(y, np.array([0.0, 1.0, 0.0, 1.0]))))
    with pytest.raises(ValueError, match="3 columns but there are 2 classes"):
        metrics.log_loss(y, rng.dirichlet(np.ones(3), size=4))
    with pytest.raises(ValueError, match="different lengths"):
        metrics.accuracy_score(y, y[:3])
    with pytest.raises(ValueError, match="different shapes"):
        metrics.r2_score(np.ones(3), np.ones(4))
