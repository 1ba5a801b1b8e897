"""Convolution, pooling and image layers of mlxp.nn on every backend.

Oracles: plain NumPy loops over the output positions (float64), PyTorch (values and
autograd gradients) and central finite differences (every backward). Shapes are
shared between tests: JAX compiles each operation once per shape.
"""

from __future__ import annotations

import json
import math
import warnings

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
from mlxp import Generator
from mlxp.nn import (
    AvgPool2D,
    BatchNorm2d,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sequential,
)
from mlxp.nn import functional as F
from mlxp.nn._windows import window_stack
from tests.conftest import Unrecognised, built, require_float64, widest_float


# --------------------------------------------------------------------------- helpers
def _check_grad(analytic: np.ndarray, f, a: np.ndarray, name: str, h: float = 1e-6) -> None:
    """Compare ``analytic`` with central differences of the scalar f at a, at 12 entries
    (all when fewer), drawn at random: each costs two evaluations of f."""
    entries = list(np.ndindex(a.shape))
    picks = np.random.default_rng(a.size).permutation(len(entries))[:12]
    for i in (entries[k] for k in picks):
        up, down = a.copy(), a.copy()
        up[i] += h
        down[i] -= h
        numeric = (f(up) - f(down)) / (2 * h)
        assert analytic[i] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, i)


def _pads(padding, kernel, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) as PyTorch pads, "same" included."""
    k, d = np.broadcast_to(kernel, 2), np.broadcast_to(dilation, 2)
    if padding == "same":
        total = d * (k - 1)
        return tuple((int(t // 2), int(t - t // 2)) for t in total)
    p = np.broadcast_to(padding, 2)
    return ((int(p[0]), int(p[0])), (int(p[1]), int(p[1])))


# --------------------------------------------------------------------------- references
def conv_reference(x, W, b, stride, pads, dilation) -> np.ndarray:
    """y[:, :, h, w] = Σ W ⊙ (the dilated window at (h·sh, w·sw)), one output position at a time."""
    (sh, sw), (dh, dw) = np.broadcast_to(stride, 2), np.broadcast_to(dilation, 2)
    xp_ = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    K, _, kh, kw = W.shape
    OH = (xp_.shape[2] - dh * (kh - 1) - 1) // sh + 1
    OW = (xp_.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], K, OH, OW))
    for h in range(OH):
        for w in range(OW):
            rows = slice(h * sh, h * sh + dh * (kh - 1) + 1, dh)
            cols = slice(w * sw, w * sw + dw * (kw - 1) + 1, dw)
            y[:, :, h, w] = np.tensordot(xp_[:, :, rows, cols], W, axes=([1, 2, 3], [1, 2, 3]))
    return y if b is None else y + b[None, :, None, None]


def pool_reference(x, kernel, stride, padding, kind: str) -> np.ndarray:
    """Max (padded with −∞) or mean (zero padding counted) of each window, one at a time."""
    (kh, kw), (ph, pw) = np.broadcast_to(kernel, 2), np.broadcast_to(padding, 2)
    sh, sw = np.broadcast_to(kernel if stride is None else stride, 2)
    fill = -np.inf if kind == "max" else 0.0
    xp_ = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    OH, OW = (xp_.shape[2] - kh) // sh + 1, (xp_.shape[3] - kw) // sw + 1
    y = np.zeros((*x.shape[:2], OH, OW))
    reduce = np.max if kind == "max" else np.mean
    for h in range(OH):
        for w in range(OW):
            y[:, :, h, w] = reduce(xp_[:, :, h * sh : h * sh + kh, w * sw : w * sw + kw], (2, 3))
    return y


# (N, C, H, W), (K, kh, kw), stride, padding, dilation
CONV_CASES = {
    "3x3_same": ((2, 3, 7, 6), (4, 3, 3), 1, "same", 1),
    "2x4_same_even": ((2, 3, 7, 6), (2, 2, 4), 1, "same", 1),
    "stride2_pad1": ((2, 3, 7, 6), (4, 3, 2), 2, 1, 1),
    "dilated": ((1, 2, 9, 8), (3, 3, 3), (2, 1), (1, 2), (2, 1)),
    "dilated_same": ((1, 2, 9, 8), (2, 3, 2), 1, "same", 2),
    "stride_gt_kernel": ((1, 2, 9, 8), (2, 2, 2), 3, 1, 1),
    "whole_image": ((2, 1, 5, 4), (3, 5, 4), 1, 0, 1),
}


def _conv_case(name, rng, bias=True):
    shape, (K, kh, kw), stride, padding, dilation = CONV_CASES[name]
    layer = Conv2D(shape[1], K, (kh, kw), stride, padding, dilation, bias=bias)
    x = rng.normal(size=shape)
    W, b = rng.normal(size=(K, shape[1], kh, kw)), rng.normal(size=K)
    return layer, x, W, (b if bias else None)


def _set(layer, backend, dtype, W, b=None):
    built(layer, backend, dtype)
    layer.params = {"W": backend.asarray(W, dtype)}
    if b is not None:
        layer.params["b"] = backend.asarray(b, dtype)
    return layer


# --------------------------------------------------------------------------- Conv2D
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_matches_loops_and_torch(backend, name):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(0)
    layer, x, W, b = _conv_case(name, rng)
    _, (_, kh, kw), stride, padding, dilation = CONV_CASES[name]
    pads = _pads(padding, (kh, kw), dilation)
    _set(layer, backend, dtype, W, b)
    y = layer.forward(backend.asarray(x, dtype))
    expected = conv_reference(x, W, b, stride, pads, dilation)
    assert tuple(y.shape) == expected.shape
    if padding == "same":
        assert tuple(y.shape[2:]) == x.shape[2:]
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=rtol, atol=10 * rtol)

    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    with warnings.catch_warnings():  # "same" with an even kernel: PyTorch pads a copy
        warnings.simplefilter("ignore", UserWarning)
        yt = torch.nn.functional.conv2d(xt, Wt, bt, stride, padding, dilation)
    np.testing.assert_allclose(expected, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    R = rng.normal(size=expected.shape)
    (yt * torch.tensor(R)).sum().backward()
    dx = layer.backward(backend.asarray(R, dtype))
    assert set(layer.grads) == {"W", "b"}
    for mine, theirs in [(dx, xt), (layer.grads["W"], Wt), (layer.grads["b"], bt)]:
        np.testing.assert_allclose(
            backend.to_numpy(mine), theirs.grad.numpy(), rtol=rtol, atol=10 * rtol
        )


@pytest.mark.parametrize(
    ("name", "bias"), [("stride2_pad1", True), ("dilated", False), ("2x4_same_even", True)]
)
def test_conv2d_backward_matches_finite_differences(backend, name, bias):
    require_float64(backend)
    rng = np.random.default_rng(1)
    layer, x, W, b = _conv_case(name, rng, bias)
    _set(layer, backend, "float64", W, b)
    R = rng.normal(size=tuple(layer.forward(backend.asarray(x)).shape))

    def scalar(x_np, W_np, b_np):
        _set(layer, backend, "float64", W_np, b_np)
        return float(np.sum(R * backend.to_numpy(layer.forward(backend.asarray(x_np)))))

    scalar(x, W, b)
    dx = backend.to_numpy(layer.backward(backend.asarray(R)))
    grads = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    assert set(grads) == ({"W", "b"} if bias else {"W"})
    _check_grad(dx, lambda a: scalar(a, W, b), x, "x")
    _check_grad(grads["W"], lambda a: scalar(x, a, b), W, "W")
    if bias:
        _check_grad(grads["b"], lambda a: scalar(x, W, a), b, "b")


def test_conv2d_without_bias_has_no_b(backend):
    layer = built(Conv2D(3, 2, 3, bias=False), backend, "float32")
    assert set(layer.params) == {"W"}
    assert tuple(layer.params["W"].shape) == (2, 3, 3, 3)
    with_bias = built(Conv2D(3, 2, 3), backend, "float32")
    assert tuple(with_bias.params["b"].shape) == (2,)
    assert not np.any(backend.to_numpy(with_bias.params["b"]))


def test_conv2d_init_uses_the_fan_in_of_the_kernel():
    layer = Conv2D(16, 64, (3, 5))
    layer.initialize(Generator(0), xp=np, device="cpu", dtype=np.float64)
    W = layer.params["W"]
    bound = math.sqrt(6 / (16 * 3 * 5))  # he_uniform, fan_in = in_channels·kh·kw
    assert np.abs(W).max() <= bound
    assert W.var() == pytest.approx(bound**2 / 3, rel=0.05)


def test_first_layer_can_skip_the_input_gradient(backend):
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(2)
    layer, x, W, b = _conv_case("3x3_same", rng)
    _set(layer, backend, dtype, W, b)
    R = backend.asarray(rng.normal(size=(2, 4, 7, 6)), dtype)
    layer.forward(backend.asarray(x, dtype), training=True)  # keeps the window matrix
    layer.backward(R)
    full = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    assert layer.backward(R, input_grad=False) is None
    for key, value in layer.grads.items():
        np.testing.assert_allclose(backend.to_numpy(value), full[key], rtol=rtol)


# --------------------------------------------------------------------------- pooling
# (N, C, H, W), kernel, stride, padding
POOL_CASES = {
    "2x2": ((2, 3, 8, 7), 2, None, 0),  # the odd last column is dropped, as PyTorch
    "overlap_pad": ((2, 3, 8, 7), 3, 2, 1),
    "rect": ((2, 3, 8, 7), (3, 2), (1, 2), (1, 0)),
}
POOLS = {"max": MaxPool2D, "avg": AvgPool2D}


def _pool(kind, name):
    shape, kernel, stride, padding = POOL_CASES[name]
    return POOLS[kind](kernel, stride, padding), shape


def _torch_pool(torch, kind, name, xt):
    _, kernel, stride, padding = POOL_CASES[name]
    if kind == "max":
        return torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
    return torch.nn.functional.avg_pool2d(xt, kernel, stride, padding)


@pytest.mark.parametrize("name", list(POOL_CASES))
@pytest.mark.parametrize("kind", list(POOLS))
def test_pool_matches_loops_and_torch(backend, kind, name):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(3)
    layer, shape = _pool(kind, name)
    x = rng.normal(size=shape)
    y = layer.forward(backend.asarray(x, dtype))
    expected = pool_reference(x, *POOL_CASES[name][1:], kind)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=rtol, atol=rtol)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_pool(torch, kind, name, xt)
    np.testing.assert_allclose(expected, yt.detach().numpy(), rtol=1e-12)
    R = rng.normal(size=expected.shape)
    (yt * torch.tensor(R)).sum().backward()
    grad = layer.backward(backend.asarray(R, dtype))
    np.testing.assert_allclose(backend.to_numpy(grad), xt.grad.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", list(POOL_CASES))
def test_max_pool_ties_go_to_the_first_maximum(backend, name):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(4)
    layer, shape = _pool("max", name)
    x = rng.integers(0, 3, size=shape).astype(float)  # many ties in every window
    x[0, 0] = 1.0  # a constant channel: every window is one tie
    layer.forward(backend.asarray(x, dtype))
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_pool(torch, "max", name, xt)
    R = rng.normal(size=tuple(yt.shape))
    (yt * torch.tensor(R)).sum().backward()
    grad = layer.backward(backend.asarray(R, dtype))
    np.testing.assert_allclose(backend.to_numpy(grad), xt.grad.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize(
    "pool", [(1, 1, 0), (2, 2, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (17, 3, 8)]
)
def test_numpy_max_pool_indices_match_the_argmax(pool):
    """NumPy's first-equal indices (uint8 up to 256 offsets, then int32) are the portable
    path's argmax of the stacked windows, for 1 to 289 offsets: ties (of ±0 too) go to the
    first maximum, a window holding NaN to its first NaN; and the gradients follow them."""
    rng = np.random.default_rng(8)
    values = [np.nan, -np.inf, np.inf, -0.0, 0.0, 1.0, 2.0]
    x = rng.choice(values, p=[0.01, 0.04, 0.01, 0.2, 0.2, 0.3, 0.24], size=(3, 2, 19, 18))
    x = x.astype(np.float32)  # ties everywhere, a NaN in some windows
    portable = Unrecognised(aac.array_namespace(x))
    y, a = F.max_pool2d(x, *pool, return_indices=True)
    y_ref, a_ref = F.max_pool2d(x, *pool, return_indices=True, xp=portable)
    assert np.isnan(y).any() and not np.isnan(y).all()
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(a, a_ref)
    offsets = np.prod(pool[0]) if isinstance(pool[0], tuple) else pool[0] ** 2
    assert a.dtype == (np.uint8 if offsets <= 256 else np.int32)
    g = rng.normal(size=y.shape)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(x, y, g, *pool, indices=a),
        F.max_pool2d_backward(x, y, g, *pool, xp=portable),
    )


# --------------------------------------------------------------------------- finite differences
IMAGE_LAYERS = {
    "max_pool": (lambda: MaxPool2D(3, 2, 1), (2, 3, 8, 7), False),
    "avg_pool": (lambda: AvgPool2D((3, 2), (1, 2), (1, 0)), (2, 3, 8, 7), False),
    "global_avg_pool": (GlobalAvgPool2D, (2, 3, 8, 7), False),
    "flatten": (Flatten, (2, 3, 8, 7), False),
    "batchnorm2d_train": (lambda: BatchNorm2d(3), (2, 3, 8, 7), True),
    "batchnorm2d_eval": (lambda: BatchNorm2d(3), (2, 3, 8, 7), False),
}


@pytest.mark.parametrize("name", list(IMAGE_LAYERS))
def test_image_layer_backward_matches_finite_differences(backend, name):
    require_float64(backend)
    make, shape, training = IMAGE_LAYERS[name]
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    layer = built(make(), backend)
    params = {k: rng.normal(size=tuple(v.shape)) for k, v in layer.params.items()}
    running = {k: rng.uniform(0.5, 1.5, size=tuple(v.shape)) for k, v in layer.buffers.items()}

    def output(x_np, ps):
        layer.params = {k: backend.asarray(v) for k, v in ps.items()}
        layer.buffers = {k: backend.asarray(v) for k, v in running.items()}
        return layer.forward(backend.asarray(x_np), training=training)

    R = rng.normal(size=tuple(output(x, params).shape))

    def scalar(x_np, ps):
        return float(np.sum(R * backend.to_numpy(output(x_np, ps))))

    output(x, params)
    grad_x = backend.to_numpy(layer.backward(backend.asarray(R)))
    assert set(layer.grads) == set(layer.params)
    _check_grad(grad_x, lambda a: scalar(a, params), x, "x")
    analytic = {k: backend.to_numpy(v) for k, v in layer.grads.items()}
    for key, value in params.items():
        _check_grad(analytic[key], lambda a, key=key: scalar(x, {**params, key: a}), value, key)


def test_batchnorm2d_matches_torch(backend):
    torch = pytest.importorskip("torch")
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(6)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    ours = built(BatchNorm2d(3, momentum=0.2, eps=1e-3), backend, dtype)
    ours.params = {"gamma": backend.asarray(gamma, dtype), "beta": backend.asarray(beta, dtype)}
    ref = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(gamma))
        ref.bias.copy_(torch.tensor(beta))
    for training in (True, True, False):
        ref.train(training)
        x, R = rng.normal(size=(2, 3, 8, 7)) * 2 + 1, rng.normal(size=(2, 3, 8, 7))
        xt = torch.tensor(x, requires_grad=True)
        ref.zero_grad()
        (ref(xt) * torch.tensor(R)).sum().backward()
        held = dict(ours.buffers)
        y = ours.forward(backend.asarray(x, dtype), training=training)
        assert all(ours.buffers[k] is v for k, v in held.items())  # forward writes no buffer
        grad = ours.backward(backend.asarray(R, dtype))
        ours.buffers.update(ours.state_updates())  # a loop by hand commits the statistics
        pairs = [
            (y, ref(xt).detach() if not training else None),
            (grad, xt.grad),
            (ours.grads["gamma"], ref.weight.grad),
            (ours.grads["beta"], ref.bias.grad),
            (ours.buffers["running_mean"], ref.running_mean),
            (ours.buffers["running_var"], ref.running_var),
        ]
        for mine, theirs in pairs:
            if theirs is not None:
                np.testing.assert_allclose(
                    backend.to_numpy(mine), theirs.numpy(), rtol=10 * rtol, atol=100 * rtol
                )


def test_global_avg_pool_and_flatten_shapes(backend):
    x = backend.asarray(np.arange(2 * 3 * 8 * 7, dtype=float).reshape(2, 3, 8, 7), "float32")
    pooled = GlobalAvgPool2D().forward(x)
    np.testing.assert_allclose(
        backend.to_numpy(pooled), backend.to_numpy(x).mean(axis=(2, 3)), rtol=1e-6
    )
    flat = Flatten()
    y = flat.forward(x)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(x).reshape(2, -1))
    assert tuple(flat.backward(y).shape) == (2, 3, 8, 7)


# --------------------------------------------------------------------------- portable paths
def test_portable_path_matches_the_strided_fast_path():
    """NumPy behind an unrecognised namespace: ``take`` windows and one-hot scatter_add."""
    rng = np.random.default_rng(7)
    x, W = rng.normal(size=(2, 3, 9, 8)), rng.normal(size=(4, 3, 3, 2))
    portable = Unrecognised(aac.array_namespace(x))
    assert not aac.is_numpy_namespace(portable)
    geometry = ((2, 1), ((1, 2), (0, 1)), (2, 1))
    fast, cols = F.conv2d(x, W, None, *geometry)
    slow, slow_cols = F.conv2d(x, W, None, *geometry, xp=portable)
    np.testing.assert_allclose(slow, fast, rtol=1e-12)
    np.testing.assert_allclose(slow_cols, cols, rtol=0)
    R = rng.normal(size=fast.shape)
    expected = F.conv2d_backward(x, W, R, *geometry, cols=cols)
    for mine, theirs in zip(
        F.conv2d_backward(x, W, R, *geometry, xp=portable), expected, strict=True
    ):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    pool = (3, 2, 1)
    y = F.max_pool2d(x, *pool)
    np.testing.assert_array_equal(F.max_pool2d(x, *pool, xp=portable), y)
    R = rng.normal(size=y.shape)
    np.testing.assert_allclose(
        F.max_pool2d_backward(x, y, R, *pool, xp=portable),
        F.max_pool2d_backward(x, y, R, *pool),
        rtol=1e-12,
    )
    np.testing.assert_allclose(F.avg_pool2d(x, *pool, xp=portable), F.avg_pool2d(x, *pool))
    np.testing.assert_allclose(
        F.avg_pool2d_backward(x.shape, R, *pool, xp=portable),
        F.avg_pool2d_backward(x.shape, R, *pool),
        rtol=1e-12,
    )


@pytest.mark.parametrize("padding", [((1, 1), (2, 2)), ((0, 1), (1, 0))])
def test_library_convolution_matches_the_matrix_products(backend, padding):
    """PyTorch's own convolution (oneDNN, cuDNN: ``mlxp._conv_kernels``), forward and all
    three gradients in one ``convolution_backward``, against the window matrix and its
    products (behind an unrecognised namespace); an asymmetric padding, which PyTorch's
    ``conv2d`` cannot take, goes the products' way there too (X̃ kept for the backward)."""
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(5)
    x, W, b = rng.normal(size=(3, 2, 9, 8)), rng.normal(size=(4, 2, 3, 2)), rng.normal(size=4)
    x, W, b = (backend.asarray(a, dtype) for a in (x, W, b))
    geometry = ((2, 1), padding, (1, 2))
    portable = Unrecognised(backend.xp)
    y, cols = F.conv2d(x, W, b, *geometry)
    expected, _ = F.conv2d(x, W, b, *geometry, xp=portable)
    own = backend.name == "torch" and padding[0][0] == padding[0][1]
    assert (cols is None) is own
    if own:  # stored batch innermost, as the products' y: the next layers keep one layout
        assert y.permute(1, 2, 3, 0).is_contiguous()
    np.testing.assert_allclose(
        backend.to_numpy(y), backend.to_numpy(expected), rtol=rtol, atol=rtol
    )
    R = backend.asarray(rng.normal(size=tuple(y.shape)), dtype)
    for input_grad, bias in [(True, True), (False, False)]:
        flags = {"input_grad": input_grad, "bias": bias}
        mine = F.conv2d_backward(x, W, R, *geometry, cols=cols, **flags)
        theirs = F.conv2d_backward(x, W, R, *geometry, xp=portable, **flags)
        for a, e in zip(mine, theirs, strict=True):
            assert (a is None) is (e is None)
            if a is not None:
                np.testing.assert_allclose(
                    backend.to_numpy(a), backend.to_numpy(e), rtol=rtol, atol=10 * rtol
                )


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"), [((2, 3), (2, 1), (1, 2)), ((1, 1), (1, 1), (1, 1))]
)
def test_window_stack_matches_loops(backend, axis, kernel, stride, dilation):
    """S[(i, j)][c, h, w, n] = images[c, i·dh + h·sh, j·dw + w·sw, n], the offsets along
    ``axis``: one strided copy on NumPy, CuPy and PyTorch, the standard's stack elsewhere
    and behind an unrecognised namespace; with a 1×1 kernel NumPy's is a view, no copy."""
    images = np.random.default_rng(3).normal(size=(2, 7, 8, 3))
    out = tuple(
        (images.shape[1 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in (0, 1)
    )
    expected = np.stack(
        [
            images[:, i * dilation[0] :: stride[0], j * dilation[1] :: stride[1]][
                :, : out[0], : out[1]
            ]
            for i in range(kernel[0])
            for j in range(kernel[1])
        ],
        axis=axis,
    )
    on_backend = backend.asarray(images, widest_float(backend)[0])
    for xp in (backend.xp, Unrecognised(backend.xp)):
        stacked = window_stack(on_backend, kernel, stride, dilation, out, axis, xp)
        np.testing.assert_allclose(backend.to_numpy(stacked), expected, rtol=1e-6)
    if isinstance(on_backend, np.ndarray):
        one = window_stack(on_backend, kernel, stride, dilation, out, axis, backend.xp)
        assert np.shares_memory(one, on_backend) == (kernel == (1, 1))


# --------------------------------------------------------------------------- chunking
def _assert_close(backend, pairs, rtol):
    for mine, theirs in pairs:
        np.testing.assert_allclose(
            backend.to_numpy(mine), backend.to_numpy(theirs), rtol=rtol, atol=rtol
        )


def test_chunked_batches_match_the_whole_batch(backend):
    """One image per chunk (the bound is 1 byte), on the shapes of the tests above."""
    dtype, rtol = widest_float(backend)
    rng = np.random.default_rng(8)
    shape, (K, kh, kw), *geometry = CONV_CASES["stride2_pad1"]
    x = backend.asarray(rng.normal(size=shape), dtype)
    W = backend.asarray(rng.normal(size=(K, shape[1], kh, kw)), dtype)
    b = backend.asarray(rng.normal(size=K), dtype)
    y, cols = F.conv2d(x, W, b, *geometry)
    R = backend.asarray(rng.normal(size=tuple(y.shape)), dtype)
    y_chunked, none = F.conv2d(x, W, b, *geometry, max_bytes=1)
    assert none is None
    whole = [y, *F.conv2d_backward(x, W, R, *geometry, cols=cols)]
    chunked = [y_chunked, *F.conv2d_backward(x, W, R, *geometry, max_bytes=1)]
    _assert_close(backend, zip(chunked, whole, strict=True), rtol)

    shape, *pool = POOL_CASES["overlap_pad"]
    R = backend.asarray(rng.normal(size=(2, 3, 4, 4)), dtype)
    pair = (
        F.avg_pool2d_backward(shape, R, *pool, max_bytes=1),
        F.avg_pool2d_backward(shape, R, *pool),
    )
    _assert_close(backend, [pair], rtol)


def test_uneven_chunks():
    rng = np.random.default_rng(9)
    x, W, b = rng.normal(size=(5, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    geometry = (2, 1, 1)
    y, cols = F.conv2d(x, W, b, *geometry)
    R = rng.normal(size=y.shape)
    # 3·3·2 window values at 4·3 output positions per image; float64 values, int64 indices
    bound = 2 * 18 * 12 * 16  # chunks of 2, 2 and 1 images
    y_chunked, none = F.conv2d(x, W, b, *geometry, max_bytes=bound)
    assert none is None
    np.testing.assert_allclose(y_chunked, y, rtol=1e-12)
    chunked = F.conv2d_backward(x, W, R, *geometry, max_bytes=bound)
    for mine, theirs in zip(chunked, F.conv2d_backward(x, W, R, *geometry, cols=cols), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)


# --------------------------------------------------------------------------- dtype and device
NEW_LAYERS = {
    "conv": (lambda: Conv2D(3, 3, 3, padding="same"), False),
    "max_pool": (lambda: MaxPool2D(3, 2, 1), False),
    "avg_pool": (lambda: AvgPool2D(2), False),
    "global_avg_pool": (GlobalAvgPool2D, False),
    "flatten": (Flatten, False),
    "batchnorm2d": (lambda: BatchNorm2d(3), True),
}


@pytest.mark.parametrize("name", list(NEW_LAYERS))
def test_layer_keeps_float32_and_device(backend, name):
    make, training = NEW_LAYERS[name]
    layer = built(make(), backend, "float32")
    x = backend.asarray(np.random.default_rng(9).normal(size=(2, 3, 8, 7)), "float32")
    y = layer.forward(x, training=training)
    grad = layer.backward(backend.xp.ones_like(y))
    assert tuple(grad.shape) == (2, 3, 8, 7)
    arrays = [y, grad, *layer.params.values(), *layer.grads.values(), *layer.buffers.values()]
    for a in arrays:
        assert a.dtype == backend.dtype("float32")
        assert aac.device(a) == backend.device


CONFIGS = [
    *(make for make, _ in NEW_LAYERS.values()),
    lambda: Conv2D(3, 4, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), bias=False),
    lambda: AvgPool2D((3, 2), stride=1, padding=(1, 0)),
]


@pytest.mark.parametrize("make", CONFIGS)
def test_layer_config_rebuilds_the_layer(make):
    layer = make()
    config = json.loads(json.dumps(layer.get_config()))
    assert type(layer)(**config).get_config() == layer.get_config()


def test_small_cnn_trains_the_same_on_every_backend(backend):
    """Two epochs of Adam, float32, batches of the shape the float32 test above uses."""
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(8, 3, 8, 7)).astype(np.float32), rng.integers(0, 3, size=8)

    def train(to):
        model = Sequential(
            [Conv2D(3, 3, 3, padding="same"), ReLU(), MaxPool2D(3, 2, 1), Flatten(), Dense(48, 3)],
            seed=3,
        )
        model.fit(to(X), to(y), loss="cross_entropy", epochs=2, batch_size=2, progress=False)
        return {k: mlxp.to_numpy(v) for k, v in model.parameters.items()}

    reference = train(lambda a: a)
    trained = train(backend.asarray)
    for name, value in reference.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Conv2D(0, 2, 3), "in_channels"),
        (lambda: Conv2D(1, 2.0, 3), "out_channels"),
        (lambda: Conv2D(1, 2, 0), "kernel_size"),
        (lambda: Conv2D(1, 2, (3,)), "kernel_size"),
        (lambda: Conv2D(1, 2, (3, True)), "kernel_size"),
        (lambda: Conv2D(1, 2, 3, stride=0), "stride"),
        (lambda: Conv2D(1, 2, 3, padding=-1), "padding"),
        (lambda: Conv2D(1, 2, 3, padding="valid"), "padding"),
        (lambda: Conv2D(1, 2, 3, stride=2, padding="same"), "padding"),
        (lambda: Conv2D(1, 2, 3, dilation=(1, 0)), "dilation"),
        (lambda: Conv2D(1, 2, 3, bias=1), "bias"),
        (lambda: Conv2D(1, 2, 3, init="zeros"), "init"),
        (lambda: MaxPool2D(2, padding=2), "padding"),
        (lambda: AvgPool2D((3, 2), padding=(1, 2)), "padding"),
        (lambda: AvgPool2D(2, stride=0), "stride"),
        (lambda: MaxPool2D(-1), "kernel_size"),
        (lambda: BatchNorm2d(0), "num_features"),
    ],
)
def test_bad_constructor_arguments(make, argument):
    with pytest.raises(ValueError, match=f"'{argument}' parameter"):
        make()


def test_bad_inputs(backend):
    def images(*shape):
        return backend.asarray(np.ones(shape), "float32")

    conv = built(Conv2D(3, 2, 3, padding=1, dilation=2), backend, "float32")
    with pytest.raises(
        ValueError, match=r"Conv2D expects input of shape \(N, 3, H, W\); got \(3, 4, 4\)"
    ):
        conv.forward(images(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\); got \(2, 4, 5, 5\)"):
        conv.forward(images(2, 4, 5, 5))
    with pytest.raises(
        ValueError, match=r"kernel \(5, 5\) is larger than the padded input \(4, 6\)"
    ):
        conv.forward(images(2, 3, 2, 4))
    with pytest.raises(
        ValueError, match=r"kernel \(3, 3\) is larger than the padded input \(2, 4\)"
    ):
        MaxPool2D(3).forward(images(2, 3, 2, 4))
    with pytest.raises(ValueError, match=r"AvgPool2D expects input of shape \(N, C, H, W\)"):
        AvgPool2D(2).forward(images(2, 8, 8))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D expects .*got \(2, 8\)"):
        GlobalAvgPool2D().forward(images(2, 8))
    with pytest.raises(ValueError, match=r"BatchNorm2d expects x of shape \(N, 3, H, W\)"):
        built(BatchNorm2d(3), backend, "float32").forward(images(2, 3, 4), training=True)
