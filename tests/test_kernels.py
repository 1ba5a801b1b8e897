"""mlxp._kernels: each library's fast path against the portable fallback beside it."""

from __future__ import annotations

import numpy as np
import pytest

from mlxp._compat import to_numpy
from mlxp._kernels import (
    adam_update,
    all_finite,
    concat_flat,
    positive_part,
    strided_view,
    sum_into,
    writes_in_place,
)
from mlxp._products import matmul_into
from tests.conftest import Unrecognised, rtol_for


# --------------------------------------------------------------------------- positive_part
def test_positive_part_matches_the_maximum_with_zero(backend, dtype, rng):
    """max(x, 0) on a permuted view (the layout a convolution's output has), with NaN, ±inf
    and ±0: fast path, standard fallback and NumPy's maximum agree (NumPy's fast path bit
    for bit, the signs of 0 and NaN included), and the fast path keeps dtype and order."""
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x.reshape(-1)[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    xb = backend.xp.permute_dims(backend.asarray(x), (3, 0, 1, 2))
    expected = np.maximum(x, 0).transpose(3, 0, 1, 2)
    fast, fallback = positive_part(xb), positive_part(xb, xp=Unrecognised(backend.xp))
    for out in (fast, fallback):
        assert out.dtype == xb.dtype and tuple(out.shape) == expected.shape
        np.testing.assert_array_equal(to_numpy(out), expected)
    if backend.name != "array_api_strict":  # integers (the standard's maximum takes no
        ints = backend.asarray(np.arange(-3, 3))  # float beside them): as maximum(x, 0.0)
        standard = positive_part(ints, xp=Unrecognised(backend.xp))
        assert positive_part(ints).dtype == standard.dtype  # the library's promotion
        np.testing.assert_array_equal(to_numpy(positive_part(ints)), [0, 0, 0, 0, 1, 2])
    if isinstance(fast, np.ndarray):  # NumPy's fast path: the sign of 0 and NaN kept too
        np.testing.assert_array_equal(np.signbit(fast), np.signbit(expected))
        assert fast.strides == np.maximum(to_numpy(xb), 0).strides


# --------------------------------------------------------------------------- all_finite
@pytest.mark.parametrize(
    "value", [None, float("nan"), float("inf"), -float("inf"), "largest", "-0", "tiny"]
)
def test_all_finite_matches_the_element_wise_test(backend, value, rng):
    """Fast path and standard fallback agree with NumPy's isfinite over every kind of
    value: a NaN or ±inf anywhere, the dtype's largest (whose sum overflows), −0.0, a
    subnormal; and an empty array is all finite."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    x = rng.normal(size=(7, 5)).astype(dtype)
    if value is not None:
        special = {
            "largest": np.finfo(dtype).max,
            "-0": -0.0,
            "tiny": np.finfo(dtype).smallest_subnormal,
        }
        x[3, 2] = special.get(value, value)
        x[6, 4] = special.get(value, value)
    for a in (x, x[:0]):
        xb = backend.asarray(a, dtype)
        want = bool(np.isfinite(a).all())
        assert bool(all_finite(xb)) is want
        assert bool(all_finite(xb, xp=Unrecognised(backend.xp))) is want


# --------------------------------------------------------------------------- concat_flat
def test_concat_flat_lays_the_flattened_arrays_end_to_end(backend, dtype, rng):
    """The fast path (JAX, while tracing: writes into one buffer; eagerly the standard's
    concat), inside ``jax.jit`` too, and the fallback (the standard's concat) equal NumPy's
    concatenation of the raveled arrays."""
    host = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (4,), (2, 3, 2), (1,)]]
    arrays = [backend.asarray(a) for a in host]
    expected = np.concatenate([a.ravel() for a in host])
    outs = [concat_flat(arrays), concat_flat(arrays, xp=Unrecognised(backend.xp))]
    if backend.name.startswith("jax"):
        import jax

        outs.append(jax.jit(concat_flat)(arrays))
    for out in outs:
        assert out.dtype == arrays[0].dtype and tuple(out.shape) == (expected.size,)
        np.testing.assert_array_equal(to_numpy(out), expected)
    np.testing.assert_array_equal(to_numpy(concat_flat(arrays[:1])), host[0].ravel())


# --------------------------------------------------------------------------- adam_update
def _adam_case(backend, dtype, rng, n=37):
    p, g, u = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    w = np.abs(rng.standard_normal(n)).astype(dtype)
    return [backend.asarray(a) for a in (p, g, u, w)]


@pytest.mark.parametrize("scalar", ["float", "0-d"])
def test_adam_update_in_place_matches_the_standard_operations(backend, dtype, scalar, rng):
    """In place (NumPy: written into p, u, w) or not, the same values as the fallback's
    ten standard operations; g is never written."""
    arrays = _adam_case(backend, dtype, rng)
    xp = backend.xp
    step, eps = 0.01, 1e-3
    if scalar == "0-d":
        step = xp.asarray(step, dtype=arrays[0].dtype, device=backend.device)
    expected = [to_numpy(a) for a in adam_update(*arrays, (0.9, 0.99), step, eps)]
    g_before = np.array(to_numpy(arrays[1]), copy=True)
    got = adam_update(*arrays, (0.9, 0.99), step, eps, in_place=True)
    for a, e in zip(got, expected, strict=True):
        assert a.dtype == arrays[0].dtype
        np.testing.assert_allclose(to_numpy(a), e, rtol=rtol_for(dtype), atol=1e-7)
    np.testing.assert_array_equal(to_numpy(arrays[1]), g_before)
    if backend.name == "numpy":  # the buffers given up hold the results
        assert all(a is b for a, b in zip(got, (arrays[0], *arrays[2:]), strict=True))


def test_adam_update_in_place_falls_back_where_it_cannot_write(rng):
    """A read-only buffer, or a gradient of another dtype: new arrays, as the fallback."""
    p, g, u, w = (np.abs(rng.standard_normal(5)).astype(np.float32) for _ in range(4))
    expected = adam_update(p, g, u, w, (0.9, 0.99), 0.01, 1e-3)
    p.flags.writeable = False
    got = adam_update(p, g, u, w, (0.9, 0.99), 0.01, 1e-3, in_place=True)
    assert got[0] is not p and got[1] is not u
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, e)
    p.flags.writeable = True
    wide = adam_update(p, g.astype(np.float64), u, w, (0.9, 0.99), 0.01, 1e-3, in_place=True)
    assert wide[0] is not p and wide[0].dtype == np.float64


# --------------------------------------------------------------------------- matmul_into, sum_into
WRITES_IN_PLACE = ("numpy", "torch", "cupy")


def _into_case(backend, dtype, rng):
    A, B = rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
    xp = backend.xp
    out = xp.zeros((4 * 3 + 3 + 1,), dtype=backend.asarray(A).dtype, device=backend.device)
    return backend.asarray(A), backend.asarray(B), out, A.T @ B


def test_matmul_into_writes_the_product_into_a_view_of_a_buffer(backend, dtype, rng):
    """Aᵀ B written into a (4, 3) view of a flat buffer where the library writes in place
    (the view returned, the buffer holding it), else a new array; both equal to the
    standard product exactly (the same BLAS call) and to NumPy's to rounding."""
    A, B, flat, expected = _into_case(backend, dtype, rng)
    xp = backend.xp
    view = xp.reshape(flat[:12], (4, 3))
    got, fallback = matmul_into(A.T, B, view), matmul_into(A.T, B, view, xp=Unrecognised(xp))
    in_place = backend.name in WRITES_IN_PLACE
    assert (got is view) is in_place and fallback is not view
    assert bool(writes_in_place(view)) is in_place
    np.testing.assert_array_equal(to_numpy(got), to_numpy(A.T @ B))
    np.testing.assert_allclose(to_numpy(got), expected, rtol=rtol_for(dtype), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(fallback), to_numpy(A.T @ B))
    if in_place:
        np.testing.assert_array_equal(to_numpy(flat)[:12], to_numpy(got).ravel())
    assert matmul_into(A.T, B, None) is not None  # no buffer: the product


def test_sum_into_writes_the_sum_into_a_view_of_a_buffer(backend, dtype, rng):
    """Σ over axis 0 (and −2) of a (5, 3) array written into a (3,) view, and over axes
    (0, 2) (and (−3, −1)) of a (2, 3, 4) array, where the library writes in place; else
    new arrays; both equal to the standard's sum exactly."""
    _, B, flat, _ = _into_case(backend, dtype, rng)
    xp = backend.xp
    view = flat[12:15]
    C = backend.asarray(rng.standard_normal((2, 3, 4)).astype(dtype))
    cases = [(B, 0), (B, -2), (C, (0, 2)), (C, (-3, -1))]
    for x, axis in cases:
        got, fallback = sum_into(x, axis, view), sum_into(x, axis, view, xp=Unrecognised(xp))
        assert (got is view) is (backend.name in WRITES_IN_PLACE) and fallback is not view
        for out in (got, fallback):
            np.testing.assert_array_equal(to_numpy(out), to_numpy(xp.sum(x, axis=axis)))


def test_into_kernels_return_new_arrays_where_they_cannot_write(rng):
    """A read-only buffer, one of another dtype or shape: a new array, the same values."""
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    read_only = np.zeros((4, 3))
    read_only.flags.writeable = False
    strided = np.zeros((3, 4)).T  # F-ordered: its reshapes would be copies
    for out in (read_only, np.zeros((4, 3), np.float32), np.zeros((3, 4)), strided):
        got = matmul_into(A.T, B, out)
        assert got is not out and got.dtype == np.float64
        np.testing.assert_array_equal(got, A.T @ B)
    assert sum_into(B, 0, np.zeros(4)) is not None and sum_into(B, 0, read_only[0]).shape == (3,)
    assert not writes_in_place(read_only) and not writes_in_place(strided)


def test_torch_writes_in_place_only_where_autograd_and_compiling_allow():
    torch = pytest.importorskip("torch")
    assert writes_in_place(torch.zeros(3))
    assert not writes_in_place(torch.zeros(3, requires_grad=True))
    assert not writes_in_place(torch.zeros(3, 4).T)  # not contiguous


# --------------------------------------------------------------------------- strided_view
HAS_STRIDED_VIEWS = ("numpy", "torch", "cupy")


def test_strided_view_reads_the_flat_positions(backend):
    """V[i, j, k] = x.flat[6i + 2j + k]: overlapping windows of a C-contiguous x, as NumPy's
    indexing of the flat positions gives them, where the library has strided views; None
    where it has none, or for a permuted (not C-contiguous) x."""
    x = np.arange(24.0).reshape(2, 3, 4)
    shape, strides = (3, 4, 5), (6, 2, 1)
    i, j, k = np.indices(shape)
    positions = 6 * i + 2 * j + k
    view = strided_view(backend.asarray(x), shape, strides)
    if backend.name not in HAS_STRIDED_VIEWS:
        assert view is None
        return
    assert tuple(view.shape) == shape
    np.testing.assert_array_equal(backend.to_numpy(view), x.reshape(-1)[positions])
    assert (
        strided_view(backend.xp.permute_dims(backend.asarray(x), (2, 1, 0)), shape, strides) is None
    )
    assert strided_view(backend.asarray(x), shape, strides, xp=Unrecognised(backend.xp)) is None
    if isinstance(view, np.ndarray):  # NumPy's overlapping view cannot be written into
        assert not view.flags.writeable


@pytest.mark.parametrize(("shape", "strides"), [((2, 13), (12, 1)), ((2, 3), (-1, 4))])
def test_strided_view_refuses_a_view_past_the_array(backend, shape, strides):
    """A view of x (24,) whose last element is x.flat[1·12 + 12·1] = x.flat[24] reaches past
    x; so does one with a negative stride (before its start). Only the libraries that make
    the view check it (the others give None)."""
    if backend.name not in HAS_STRIDED_VIEWS:
        pytest.skip(f"{backend.name} has no strided views (strided_view gives None)")
    x = backend.asarray(np.zeros(24))
    with pytest.raises(ValueError, match="reaches past"):
        strided_view(x, shape, strides)
    assert tuple(strided_view(x, (2, 12), (12, 1)).shape) == (2, 12)  # x.flat[23]: it fits
