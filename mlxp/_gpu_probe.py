"""The first-contact check of a CuPy install: can it compile and launch kernels here?"""

from __future__ import annotations

from types import ModuleType

from mlxp.exceptions import BackendUnavailableError

__all__ = ["probe_cupy"]


def probe_cupy(cupy: ModuleType, index: int) -> None:
    """Compile and launch an elementwise kernel, a reduction and a cuBLAS product on
    device ``index``; a CuPy that imports but cannot (no NVRTC or CUDA headers, a
    library missing) or computes wrongly is unavailable, with the reason."""
    try:
        with cupy.cuda.Device(index):
            x = cupy.arange(8, dtype=cupy.float32)
            m = cupy.reshape(x, (2, 4))
            value = float(cupy.sum(2 * x + 1) + (m @ m.T)[0, 0])  # 64 + 14, one host read
        problem = None if value == 78.0 else f"computed {value} instead of 78"
    except Exception as exc:
        problem = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    if problem is not None:
        raise BackendUnavailableError(
            f"CuPy {cupy.__version__} sees cuda:{index} but cannot run a kernel there "
            f"({problem}); install CuPy with its CUDA toolkit pieces: "
            "pip install 'mlxp[cuda12]' or 'mlxp[cuda13]' (CuPy's [ctk] extra)"
        )
