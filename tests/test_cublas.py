"""mlxp._cublas on the CPU: the gemm it plans, run by a column-major BLAS written out in
NumPy from the BLAS definition, against the row-major product; and whole fits with every
product of their steps sent that way. The ctypes call itself runs only on a GPU
(bench/gpu_check.sh: tests/test_compile.py's CUDA-graph test and capture_refusal)."""

from __future__ import annotations

import types

import array_api_compat.numpy as xp
import numpy as np
import pytest
from array_api_compat import is_numpy_namespace
from numpy.lib.stride_tricks import as_strided

from mlxp import _cublas, nn
from mlxp._cublas import (
    direct_products,
    layout,
    loaded_paths,
    matching_library,
    plan,
    product,
)
from mlxp._products import addmm, matmul, matmul_into
from mlxp.optim import Adam

RNG = np.random.default_rng(0)


def _reach(x) -> int:
    """The offset of x's last element from its first, in elements."""
    return sum((n - 1) * s // x.itemsize for n, s in zip(x.shape, x.strides, strict=True))


def _stored(x, rows: int, cols: int, ld: int):
    """The column-major (rows, cols) matrix at x's first element, leading dimension ld; it
    must reach exactly as far as x (no element outside it is read or written)."""
    assert ld >= max(1, rows), f"ld {ld} < rows {rows}"
    reach = (rows - 1) + (cols - 1) * ld
    assert reach == _reach(x), f"the matrix reaches {reach}, the array {_reach(x)}"
    return as_strided(x, (rows, cols), (x.itemsize, ld * x.itemsize))


def reference_gemm(opa, opb, m, n, k, a, lda, b, ldb, c, ldc, beta, calls=None):
    """C ← op(A) op(B) + βC, column-major, as the BLAS defines it (op 0: N, 1: T; α = 1;
    β = 0: C is not read)."""
    A = _stored(a, *((m, k) if opa == 0 else (k, m)), lda)
    B = _stored(b, *((k, n) if opb == 0 else (n, k)), ldb)
    C = _stored(c, m, n, ldc)
    product = (A if opa == 0 else A.T) @ (B if opb == 0 else B.T)
    C[...] = product if beta == 0 else product + beta * C
    if calls is not None:
        calls.append((m, n, k))


def _operand(shape, kind, dtype):
    """An array of ``shape`` laid out as ``kind``: C-contiguous, a transposed view (F),
    a block of a wider array (rows padded), a transposed block (columns padded), every
    other row and column (no gemm layout: copied), rows reversed (negative stride)."""
    r, c = shape
    if kind == "C":
        return RNG.standard_normal((r, c)).astype(dtype)
    if kind == "F":
        return RNG.standard_normal((c, r)).astype(dtype).T
    if kind == "padded rows":
        return RNG.standard_normal((r, c + 3)).astype(dtype)[:, :c]
    if kind == "padded columns":
        return RNG.standard_normal((c, r + 2)).astype(dtype)[:, :r].T
    if kind == "every other":
        return RNG.standard_normal((2 * r, 2 * c)).astype(dtype)[::2, ::2]
    if kind == "overlapping rows":  # row i starts one element after row i − 1
        flat = RNG.standard_normal(r + c).astype(dtype)
        return as_strided(flat, (r, c), (flat.itemsize, flat.itemsize), writeable=False)
    return RNG.standard_normal((r, c)).astype(dtype)[::-1]


KINDS = ["C", "F", "padded rows", "padded columns", "every other", "overlapping rows", "reversed"]
SIZES = [(4, 3, 5), (1, 3, 5), (4, 1, 5), (4, 3, 1), (1, 1, 1), (1, 7, 1), (4, 0, 5)]


@pytest.mark.parametrize("a_kind", KINDS)
@pytest.mark.parametrize("b_kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_the_planned_gemm_is_the_row_major_product(a_kind, b_kind, size):
    """Every layout pair and degenerate size, in both dtypes: the planned column-major
    gemm writes A @ B into a new row-major C, reading and writing only the arrays' own
    elements."""
    m, k, n = size
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-5)):
        A, B = _operand((m, k), a_kind, dtype), _operand((k, n), b_kind, dtype)
        got = product(A, B, xp=xp, launch=reference_gemm)
        assert got.shape == (m, n) and got.flags.c_contiguous and got.dtype == dtype
        np.testing.assert_allclose(got, A @ B, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("add", ["none", "row", "column"])
def test_a_product_into_a_padded_view_adds_and_touches_nothing_else(dtype, add):
    """C a (4, 5) block of a (4, 8) buffer (row stride 8): AB (+ a bias, gemm's β = 1) is
    written there and the buffer's other columns are left as they were."""
    A, B = _operand((4, 3), "F", dtype), _operand((3, 5), "C", dtype)
    bias = {"none": None, "row": RNG.standard_normal(5), "column": RNG.standard_normal((4, 1))}
    c = None if bias[add] is None else bias[add].astype(dtype)
    buffer = np.full((4, 8), 7.0, dtype=dtype)
    got = product(A, B, out=buffer[:, :5], add=c, xp=xp, launch=reference_gemm)
    assert np.shares_memory(got, buffer)
    expected = A @ B if c is None else A @ B + c
    np.testing.assert_allclose(buffer[:, :5], expected, rtol=1e-6 if dtype == "float32" else 1e-13)
    assert (buffer[:, 5:] == 7).all()


def test_layout_reads_strides_in_elements_and_skips_length_one_axes():
    row_major, column_major = np.zeros((3, 4), np.float32), np.zeros((4, 3), np.float32).T
    assert layout(row_major) == (0, 4) and layout(column_major) == (1, 3)
    assert layout(np.zeros((3, 8))[:, :4]) == (0, 8)  # padded rows: ld is the row stride
    assert layout(np.zeros((1, 4))[:, ::2]) == (1, 2)  # one row, strided: op T, ld its stride
    assert layout(np.zeros((4, 1))[::2]) == (0, 2)  # one column, strided: op N, ld its stride
    assert layout(np.zeros((3, 4))[::2, ::2]) is None and layout(np.zeros((3, 4))[::-1]) is None
    assert layout(np.broadcast_to(np.zeros(4), (3, 4))) is None  # zero stride


def test_plan_and_product_refuse_what_gemm_cannot_take():
    """An output of another layout, shape or dtype, operands whose inner sizes differ:
    ValueErrors before any gemm (cuBLAS would read past B's end)."""
    A, B = np.zeros((3, 2)), np.zeros((2, 4))
    with pytest.raises(ValueError, match="row-major"):
        plan(A, B, np.zeros((4, 3)).T)
    for out in (np.zeros((3, 5)), np.zeros((3, 4), np.float32)):
        with pytest.raises(ValueError, match=r"out must be \(3, 4\) float64"):
            product(A, B, out=out, xp=xp, launch=reference_gemm)
    with pytest.raises(ValueError, match=r"\(m, k\) \(k, n\), not \(3, 2\) \(3, 4\)"):
        product(A, np.zeros((3, 4)), xp=xp, launch=reference_gemm)


@pytest.mark.parametrize(
    "shapes",
    [((4, 3), (3, 5)), ((3,), (3,)), ((3,), (3, 5)), ((4, 3), (3,)), ((2, 4, 3), (3, 5)),
     ((3, 0), (0, 4)), ((2, 3, 0), (0,))],
)  # fmt: skip
def test_matmul_takes_vectors_and_a_batch_by_a_matrix(shapes, monkeypatch):
    """1-D operands as a row or a column, a batch's leading axes as rows: one planned gemm
    each, the standard product's shape and values; a batch by a batch, and integers, by
    the library's own @."""
    calls = []
    monkeypatch.setattr(_cublas, "_launch", lambda *args: reference_gemm(*args, calls=calls))
    A, B = (RNG.standard_normal(s) for s in shapes)
    got = _cublas.matmul(A, B, xp=xp)
    launched = 0 if 0 in A.shape else 1  # an empty sum is zeros, without gemm
    assert got.shape == (A @ B).shape and len(calls) == launched
    np.testing.assert_allclose(got, A @ B, rtol=1e-13)
    _cublas.matmul(np.ones((2, 3, 4)), np.ones((2, 4, 5)), xp=xp)
    _cublas.matmul(np.ones((3, 4), int), np.ones((4, 2), int), xp=xp)
    assert len(calls) == launched


def test_products_route_to_cublas_only_on_cupy_inside_direct_products(monkeypatch):
    calls = []
    monkeypatch.setattr(_cublas, "_launch", lambda *args: reference_gemm(*args, calls=calls))
    A, B = RNG.standard_normal((3, 2)), RNG.standard_normal((2, 4))
    cupy_like = types.SimpleNamespace(__name__="array_api_compat.cupy")
    assert not _cublas.routes(cupy_like) and not _cublas.routes(xp)
    with direct_products():
        assert _cublas.routes(cupy_like) and not _cublas.routes(xp)
        matmul(A, B, xp=xp)
    assert not _cublas.routes(cupy_like) and not calls


def _route_numpy_products(monkeypatch, calls):
    """Products on NumPy sent to the planned gemm (run by the reference BLAS), as CuPy's
    are inside direct_products."""
    monkeypatch.setattr(_cublas, "routes", lambda space: is_numpy_namespace(space))
    monkeypatch.setattr(_cublas, "_launch", lambda *args: reference_gemm(*args, calls=calls))


def test_the_product_routes_give_the_standard_product(monkeypatch):
    calls = []
    _route_numpy_products(monkeypatch, calls)
    A, B, c = RNG.standard_normal((3, 2)), RNG.standard_normal((2, 4)), RNG.standard_normal(4)
    out = np.zeros((3, 4))
    np.testing.assert_allclose(addmm(c, A, B, xp=xp), A @ B + c, rtol=1e-13)
    assert matmul_into(A, B, out, xp=xp) is out
    np.testing.assert_allclose(out, A @ B, rtol=1e-13)
    np.testing.assert_allclose(matmul(A, B, xp=xp), A @ B, rtol=1e-13)
    assert len(calls) == 3


def _mlp():
    data = np.random.default_rng(5)
    layers = [nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 5), nn.ReLU(), nn.Dense(5, 3)]
    return nn.Sequential(layers, seed=1), data.standard_normal((16, 6)), data.integers(0, 3, 16)


def _cnn():
    layers = [
        nn.Conv2D(1, 3, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(3, 4, 3, padding="same"),
        nn.ReLU(), nn.Flatten(), nn.Dense(4 * 3 * 3, 3),
    ]  # fmt: skip
    data = np.random.default_rng(5)
    X = data.standard_normal((16, 1, 8, 8))
    return nn.Sequential(layers, seed=1), X, data.integers(0, 3, 16)


# products per step: forward, the loss's dot product, weight gradients, input gradients (not
# the first layer's). MLP: 3 + 1 + 3 + 2; CNN: 3 + 1 + 1 + 2, NumPy making the convolutions'
# weight gradients by its own product (X̃Gᵀ)ᵀ, which CuPy makes through matmul_into
STEPS = {"mlp": (_mlp, 9), "cnn": (_cnn, 7)}


@pytest.mark.parametrize("name", STEPS)
def test_a_fit_with_every_product_by_the_planned_gemm_equals_the_fit(name, monkeypatch):
    """Two steps of an MLP and of a CNN (convolutions, a padded one, pooling, dense), in
    float64: with every product of the step sent to the planned gemm, the weights are the
    usual fit's to rounding, and every product of the step went that way."""
    make, per_step = STEPS[name]
    model, X, y = make()
    model.fit(X, y, loss="cross_entropy", optimizer=Adam(1e-2), batch_size=8, epochs=1,
              progress=False)  # fmt: skip
    calls = []
    _route_numpy_products(monkeypatch, calls)
    routed, X, y = make()
    routed.fit(X, y, loss="cross_entropy", optimizer=Adam(1e-2), batch_size=8, epochs=1,
               progress=False)  # fmt: skip
    assert str(routed.dtype) == "float64"
    assert len(calls) == 2 * per_step
    for key, value in model.get_weights().items():
        np.testing.assert_allclose(routed.get_weights()[key], value, rtol=1e-10, atol=1e-12)


def test_loaded_paths_reads_the_path_column_of_proc_maps():
    """Each library once, in order, a path with a space whole; deleted files left out."""
    maps = (
        "7f01-7f02 r--p 00000000 08:01 123   /usr/lib/libc.so.6\n"
        "7f03-7f04 r-xp 00000000 00:00 0 \n"
        "7f05-7f06 r--p 00000000 08:01 456   /opt/cu13/lib/libcublasLt.so.13\n"
        "7f07-7f08 r--p 00000000 08:01 789   /opt/cu13/lib/libcublas.so.13.1.0\n"
        "7f09-7f0a r-xp 00001000 08:01 789   /opt/cu13/lib/libcublas.so.13.1.0\n"
        "7f0b-7f0c r--p 00000000 08:01 790   /tmp/old/libcublas.so.12 (deleted)\n"
        "7f0d-7f0e r--p 00000000 08:01 791   /a b/libcublas.so\n"
    )
    want = ["/opt/cu13/lib/libcublas.so.13.1.0", "/a b/libcublas.so"]
    assert loaded_paths(maps, "libcublas.so") == want
    assert loaded_paths(maps, "libcusolver.so") == []


def test_matching_library_is_the_one_of_cupys_version_or_none():
    versions = {"/a/libcublas.so.12": (120901, 12901), "/b/libcublas.so.13": (130100, 13100)}
    assert matching_library(list(versions), 130100, versions.get) == "/b/libcublas.so.13"
    assert matching_library(list(versions), 12901, versions.get) == "/a/libcublas.so.12"
    with pytest.raises(RuntimeError, match="0 libcublas of CuPy's cuBLAS version 110000"):
        matching_library(list(versions), 110000, versions.get)
    with pytest.raises(RuntimeError, match=r"2 libcublas .* cannot tell CuPy's"):
        matching_library(["/a", "/b"], 7, lambda path: (7,))
    with pytest.raises(RuntimeError, match=r"\(none\)"):
        matching_library([], 7, versions.get)


def test_the_weighted_cross_entropy_makes_its_dot_product_by_the_planned_gemm(monkeypatch):
    """Row weights (a padded batch's zeros among them): the same loss and residual, with
    its one product sent to the planned gemm."""
    from mlxp.nn.functional import softmax_cross_entropy

    Z, t = RNG.standard_normal((6, 4)), RNG.integers(0, 4, 6)
    w = np.array([1.0, 0.5, 2.0, 0.0, 1.0, 0.0])
    expected = softmax_cross_entropy(Z, t, w, xp=xp)
    calls = []
    _route_numpy_products(monkeypatch, calls)
    got = softmax_cross_entropy(Z, t, w, xp=xp)
    assert len(calls) == 1
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13)
