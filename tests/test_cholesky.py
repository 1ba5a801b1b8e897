"""mlxp._cholesky: a failed factorisation gives NaN, or fails the check, on every library."""

from __future__ import annotations

import types

import array_api_compat as aac
import numpy as np
import pytest

from mlxp._cholesky import cholesky_solve
from mlxp._compat import to_numpy
from tests.conftest import Unrecognised, rtol_for


# --------------------------------------------------------------------------- cholesky_solve
def test_cholesky_solve_solves_a_positive_definite_system(backend, dtype, rng):
    """A X = B for A = MMᵀ + I (5×5, positive definite), B (5, 2): the fast path (PyTorch:
    cholesky_ex and cholesky_solve) and the fallback (the standard's cholesky and solve)
    against NumPy's solve in float64."""
    M = rng.standard_normal((5, 5))
    A, B = M @ M.T + np.eye(5), rng.standard_normal((5, 2))
    args = [backend.asarray(a.astype(dtype)) for a in (A, B)]
    fast, fallback = cholesky_solve(*args), cholesky_solve(*args, xp=Unrecognised(backend.xp))
    expected = np.linalg.solve(A, B)
    for out in (fast, fallback):
        assert out.dtype == args[0].dtype and tuple(out.shape) == (5, 2)
        np.testing.assert_allclose(to_numpy(out), expected, rtol=50 * rtol_for(dtype), atol=1e-5)


def test_cholesky_solve_flags_an_indefinite_matrix_with_nan_on_torch():
    """PyTorch's fast path reads no status back: a failed factorisation gives NaN, which
    the Newton solver replaces by a gradient step."""
    torch = pytest.importorskip("torch")
    A = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # eigenvalues 3, −1
    assert torch.isnan(cholesky_solve(A, torch.ones((2, 1), dtype=torch.float64))).all()


def test_cholesky_solve_flags_an_indefinite_matrix_with_nan_everywhere(backend):
    """Not positive definite (eigenvalues 3, −1): NaN on every backend, whether its
    Cholesky raises (NumPy, array-api-strict), gives NaNs (JAX) or flags it (PyTorch)."""
    dtype = "float64" if "float64" in backend.float_dtypes else "float32"
    A = backend.asarray(np.array([[1.0, 2.0], [2.0, 1.0]]), dtype)
    for xp in (None, Unrecognised(backend.xp)):
        X = cholesky_solve(A, backend.asarray(np.ones((2, 1)), dtype), xp=xp)
        assert np.isnan(to_numpy(X)).all()


def _stand_in(cholesky):
    """A namespace mlxp does not recognise (so the factor is checked), NumPy's but for
    ``linalg.cholesky``."""
    numpy_xp = aac.array_namespace(np.ones(1))
    xp = types.ModuleType("stand_in")
    for name in ("max", "abs", "all", "where", "nan", "finfo", "full", "tril", "result_type"):
        setattr(xp, name, getattr(numpy_xp, name))
    xp.linalg = types.SimpleNamespace(
        cholesky=cholesky, solve=np.linalg.solve, diagonal=np.linalg.diagonal
    )
    return xp


def test_cholesky_solve_rejects_a_partial_factor():
    """CuPy's default Cholesky returns cuSOLVER's partial factor on an indefinite matrix,
    finite and wrong: here the lower triangle of A itself (positive diagonal, so only the
    residual |A − LLᵀ| tells). X is NaN; the true factor of a definite A passes, also when
    A is symmetric only to rounding (a Hessian made by a matrix product: the check reads the
    lower triangle, as the factorisation does)."""
    A = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert np.isnan(cholesky_solve(A, np.ones((2, 1)), xp=_stand_in(np.tril))).all()
    exact = _stand_in(np.linalg.cholesky)
    for definite in ([[4.0, 2.0], [2.0, 3.0]], [[1.0, 1e-14], [0.0, 1.0]]):
        definite = np.array(definite)
        want = np.linalg.solve(np.tril(definite) + np.tril(definite, -1).T, np.ones((2, 1)))
        for xp in (exact, None):
            np.testing.assert_allclose(cholesky_solve(definite, np.ones((2, 1)), xp=xp), want)
