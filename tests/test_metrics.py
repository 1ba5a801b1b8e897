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


def test_half_precision_inputs_are_summed_in_float32():
    """float16 and bfloat16 (a mixed-precision network's outputs) are summed in float32: in
    their own precision 1e5 squared errors of 1 overflowed to inf, 70 000 weights of 1
    summed to NaN, and bfloat16 counted by steps of 8 past 2048."""
    n = 100_000
    zeros, ones = np.zeros(n, np.float16), np.ones(n, np.float16)
    assert float(metrics.mean_squared_error(zeros, ones)) == 1.0
    assert float(metrics.r2_score((np.arange(n) % 7).astype(np.float16), zeros)) < 0
    labels = np.arange(70_000) % 2
    assert float(metrics.accuracy_score(labels, labels, sample_weight=ones[:70_000])) == 1.0
    proba = np.full((n, 2), 0.5, np.float16)
    assert float(metrics.log_loss(np.arange(n) % 2, proba)) == pytest.approx(np.log(2), 1e-3)
    torch = pytest.importorskip("torch")
    y = torch.arange(3001) % 2
    weights = torch.ones(3001, dtype=torch.bfloat16)
    counts = metrics.confusion_matrix(y, y, sample_weight=weights)
    np.testing.assert_array_equal(counts.float().numpy(), [[1501, 0], [0, 1500]])


def test_r2_of_a_constant_target_is_the_same_on_every_backend(backend):
    """A constant target (0.1, not a binary fraction: its mean rounds) scores 1.0 when
    predicted exactly and 0.0 otherwise, among the weighted rows too, whatever the order a
    library sums in (NumPy gave -4.6e26, PyTorch 0.0)."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    y = np.full(30, 0.1)
    pred = y + np.linspace(-0.01, 0.01, 30)
    assert float(metrics.r2_score(backend.asarray(y, dtype), backend.asarray(pred, dtype))) == 0.0
    assert float(metrics.r2_score(backend.asarray(y, dtype), backend.asarray(y, dtype))) == 1.0
    y2 = np.column_stack([y, np.arange(30.0)])  # one constant target, one not
    y2[0, 0] = 5.0  # ... constant among the rows of weight > 0 only
    w = np.r_[0.0, np.ones(29)]
    got = metrics.r2_score(
        backend.asarray(y2, dtype),
        backend.asarray(y2 + 0.5, dtype),
        sample_weight=backend.asarray(w, dtype),
    )
    expected = (0.0 + (1 - 29 * 0.25 / np.sum((np.arange(1.0, 30) - 15) ** 2))) / 2
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: metrics.mean_squared_error(
                [1.0, 2.0, 3.0], [1.0, 2.0, 4.0], sample_weight=[2.0]
            ),
            "sample_weight has shape",
        ),
        (
            lambda: metrics.r2_score(
                [1.0, 2.0, 3.0], [1.0, 2.0, 4.0], sample_weight=np.ones((3, 1))
            ),
            "sample_weight has shape",
        ),
        (
            lambda: metrics.accuracy_score([1, 2, 3], [1, 2, 3], sample_weight=[1.0, 2.0]),
            "sample_weight has shape",
        ),
        (lambda: metrics.log_loss([1], np.full((4, 2), 0.5), labels=[0, 1]), "y_prob has shape"),
        (lambda: metrics.confusion_matrix([1, 2], [1, 2], labels=[]), "labels must be a non-empty"),
        (lambda: metrics.mean_squared_error(np.float64(1.0), np.float64(2.0)), "of shape"),
        (lambda: metrics.mean_squared_error(np.ones((2, 2, 2)), np.ones((2, 2, 2))), "of shape"),
    ],
    ids=[
        "weights too short",
        "weights 2-D",
        "label weights",
        "log_loss lengths",
        "no labels",
        "0-d",
        "3-D",
    ],
)
def test_misshapen_metric_inputs_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_label_metrics_take_host_labels_and_weights_beside_predictions_elsewhere(backend):
    """y_true and sample_weight given as NumPy (as ``fit`` takes labels and scikit-learn's
    fit_params pass weights) beside y_pred elsewhere: computed where y_pred is, as from
    inputs all there (they raised on the mixed libraries)."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    pred = backend.asarray(LABELS_PRED)
    weights = WEIGHTS.astype(dtype)
    for function in (metrics.accuracy_score, metrics.confusion_matrix):
        got = function(LABELS_TRUE, pred, sample_weight=weights)
        want = function(backend.asarray(LABELS_TRUE), pred, sample_weight=backend.asarray(weights))
        assert aac.array_namespace(got) is aac.array_namespace(pred)
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=1e-6)


def test_lists_go_where_the_arrays_are(backend):
    """A list (or data frame) has no library: it goes where the arrays among the inputs
    are, in the metrics and in ``fit``/``score`` alike (it was taken for a NumPy array, and
    refused beside arrays of another library)."""
    from mlxp.linear_model import Ridge

    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    y = Y_TRUE[:, 0].tolist()
    pred = backend.asarray(Y_PRED[:, 0], dtype)
    for function in (metrics.mean_squared_error, metrics.r2_score):
        got = function(y, pred, sample_weight=WEIGHTS.tolist())
        assert aac.array_namespace(got) is aac.array_namespace(pred)
        want = function(
            backend.asarray(y, dtype), pred, sample_weight=backend.asarray(WEIGHTS, dtype)
        )
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    X = backend.asarray(PROBA, dtype)
    model = Ridge().fit(X, y)
    assert aac.array_namespace(model.coef_) is aac.array_namespace(X)
    assert model.score(X, y) == pytest.approx(
        float(Ridge().fit(PROBA, y).score(PROBA, y)), rel=1e-4
    )


def test_regression_metrics_and_score_take_numpy_weights_beside_arrays_elsewhere(backend):
    """NumPy weights (scikit-learn's fit_params) beside y on another library go where y
    is, in the regression metrics and a regressor's ``score`` as in its ``fit``."""
    from mlxp.linear_model import Ridge

    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    y, pred = backend.asarray(Y_TRUE[:, 0], dtype), backend.asarray(Y_PRED[:, 0], dtype)
    for function in (metrics.mean_squared_error, metrics.r2_score):
        got = function(y, pred, sample_weight=WEIGHTS)
        want = function(y, pred, sample_weight=backend.asarray(WEIGHTS, dtype))
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    X = backend.asarray(PROBA, dtype)
    model = Ridge().fit(X, y, sample_weight=WEIGHTS)
    assert model.score(X, y, sample_weight=WEIGHTS) == pytest.approx(
        model.score(X, y, sample_weight=backend.asarray(WEIGHTS, dtype)), rel=1e-5
    )
