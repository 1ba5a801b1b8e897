"""mlxp._kernels: each library's fast path against the portable fallback beside it."""

from __future__ import annotations

import numpy as np
import pytest

from mlxp._compat import to_numpy
from mlxp._kernels import adam_update
from tests.conftest import rtol_for


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
