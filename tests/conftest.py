"""One fixture, ``backend``, runs a test on every (library, device) pair mlxp knows.

Pairs that cannot run here (no GPU, library not installed) are skipped with the
reason, which ``-ra`` shows in the summary. Dask (lazy, chunked) is opt-in: only tests
marked ``@pytest.mark.dask`` run on it; the others skip it, saying so. ``dtype`` adds
float32 and float64 wherever the device supports them.
"""

from __future__ import annotations

import os

# scikit-learn runs its array-API conformance check only with this set (before SciPy loads).
os.environ.setdefault("SCIPY_ARRAY_API", "1")


def _share_the_cores() -> None:
    """Under pytest-xdist, give each worker's BLAS and OpenMP pools (NumPy's OpenBLAS,
    PyTorch's) the cores divided by the number of workers, as scikit-learn's test suite
    does, unless the caller set them: two workers of two threads each on two cores spin
    against each other, and a matrix product can then take 10-50 times as long. Set
    before NumPy loads, and inherited by the commands the tests start."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores()

# The tests hold float32 results to float32's precision. On a recent NVIDIA GPU, JAX
# multiplies float32 in TF32 (10-bit inputs) by default and PyTorch convolves so through
# cuDNN: the test process asks for full float32 products (a user's setting, which mlxp
# itself leaves alone), in JAX's flag and in the variable NVIDIA's libraries read.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import numpy as np
import pytest

import backends
import mlxp

CASES = backends.cases(include_dask=True)


@pytest.fixture(params=CASES, ids=str)
def backend(request) -> backends.Case:
    case = request.param
    if case.backend is None:
        pytest.skip(f"{case}: {case.reason}")
    if case.name == "dask" and request.node.get_closest_marker("dask") is None:
        pytest.skip(
            "dask: opt-in (@pytest.mark.dask) for the cheap tests that apply; lazy arrays "
            "recompute on every host read, and tests/test_dask.py covers the estimators"
        )
    return case


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture(params=["float32", "float64"])
def dtype(request, backend) -> str:
    if request.param not in backend.float_dtypes:
        pytest.skip(f"{backend} does not support {request.param}")
    return request.param


@pytest.fixture(autouse=True)
def _no_backend_leaks():
    """Every test starts and ends with no backend chosen."""
    mlxp.set_backend(None)
    yield
    mlxp.set_backend(None)


class Unrecognised:
    """A namespace mlxp does not recognise, forwarding to ``xp``: forces portable fallbacks."""

    __name__ = "unrecognised"

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        return getattr(self._xp, name)


def case_named(name: str) -> backends.Case:
    """The backend case printed as ``name`` ("jax:cpu"), for a test of one backend;
    skipped, with the reason, where it cannot run."""
    case = next(c for c in backends.cases() if str(c) == name)
    if case.backend is None:
        pytest.skip(case.reason)
    return case


def require_float64(backend) -> None:
    """Skip on devices without float64 (finite differences and tight tolerances need it)."""
    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")


def widest_float(backend) -> tuple[str, float]:
    """The widest float dtype of the device and a matching relative tolerance."""
    return ("float64", 1e-10) if "float64" in backend.float_dtypes else ("float32", 2e-5)


def built(layer, backend, dtype: str = "float64", seed: int = 1):
    """``layer`` initialised on the backend's namespace and device, in ``dtype``."""
    layer.initialize(
        mlxp.Generator(seed), xp=backend.xp, device=backend.device, dtype=backend.dtype(dtype)
    )
    return layer


def rtol_for(dtype: str) -> float:
    """A tolerance that scales with the precision of ``dtype``."""
    return 1e-4 if dtype == "float32" else 1e-9


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def fresh_jit_caches(monkeypatch) -> None:
    """No jitted program and no compile failure remembered, for this test only."""
    import mlxp._jit

    monkeypatch.setattr(mlxp._jit, "_JITTED", type(mlxp._jit._JITTED)())
    monkeypatch.setattr(mlxp._jit, "_UNTRACEABLE", type(mlxp._jit._UNTRACEABLE)())


def untraceable(monkeypatch, objective_type) -> None:
    """Fresh jit caches, and ``objective_type.from_leaves`` (what a compiled solver rebuilds
    its objective with) raising as a program that cannot be traced would."""
    fresh_jit_caches(monkeypatch)

    def refuse(*args):
        raise RuntimeError("not traceable")

    monkeypatch.setattr(objective_type, "from_leaves", classmethod(refuse))
