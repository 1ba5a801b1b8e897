"""mlxp._products: each library's route for a matrix product against the standard's ``@``
(the direct cuBLAS route of CuPy's captured steps: tests/test_cublas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mlxp._compat import to_numpy
from mlxp._products import addmm, matmul
from tests.conftest import Unrecognised, rtol_for


# --------------------------------------------------------------------------- addmm
@pytest.mark.parametrize("bias", ["row", "column"])
def test_addmm_matches_the_standard_product_and_sum(backend, dtype, bias, rng):
    A, B = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)
    c = rng.standard_normal((5,) if bias == "row" else (4, 1)).astype(dtype)
    args = [backend.asarray(a) for a in (c, A, B)]
    fast, fallback = addmm(*args), addmm(*args, xp=Unrecognised(backend.xp))
    expected = A @ B + c
    for out in (fast, fallback):
        assert out.dtype == args[1].dtype and tuple(out.shape) == (4, 5)
        np.testing.assert_allclose(to_numpy(out), expected, rtol=rtol_for(dtype), atol=1e-6)
    np.testing.assert_allclose(to_numpy(fast), to_numpy(fallback), rtol=rtol_for(dtype))


# --------------------------------------------------------------------------- matmul
@pytest.mark.parametrize(
    "shapes", [((4, 3), (3, 5)), ((3,), (3,)), ((3,), (3, 5)), ((4, 3), (3,)), ((2, 4, 3), (3, 5))]
)
def test_matmul_is_the_standard_product(backend, dtype, shapes, rng):
    """Matrices, vectors and a batch of matrices by one matrix: the standard's ``@``, of
    its shape and dtype, equal to NumPy's to rounding."""
    A, B = (rng.standard_normal(s).astype(dtype) for s in shapes)
    got = matmul(backend.asarray(A), backend.asarray(B))
    expected = A @ B
    assert tuple(got.shape) == expected.shape and got.dtype == backend.asarray(A).dtype
    np.testing.assert_allclose(to_numpy(got), expected, rtol=rtol_for(dtype), atol=1e-6)
