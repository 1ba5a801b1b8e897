"""First contact with a GPU: can a CuPy install compile and launch kernels here, and which
CUDA devices does PyTorch see (and if none, why)?"""

from __future__ import annotations

import functools
import sys
import warnings
from types import ModuleType
from typing import Any

from mlxp.exceptions import BackendUnavailableError

__all__ = ["probe_cupy", "probe_cupy_device", "torch_cuda_devices"]


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
        hint = (  # cuda:0 is probed first: where it works, the installation does
            "install CuPy with its CUDA toolkit pieces: pip install 'mlxp[cuda12]' or "
            "'mlxp[cuda13]' (CuPy's [ctk] extra)"
            if index == 0
            else "cuda:0 works: this GPU may be busy (exclusive mode), out of memory or faulty"
        )
        raise BackendUnavailableError(
            f"CuPy {cupy.__version__} sees cuda:{index} but cannot run a kernel there "
            f"({problem}); {hint}"
        )


def probe_cupy_device(name: str) -> None:
    """:func:`probe_cupy` of the GPU ``name`` ("cuda:i"), asked once and remembered (a
    failure too), when a backend first names it; cuda:0 was probed as CuPy loaded. So
    importing mlxp creates no CUDA context on the other GPUs, and one of them busy or
    faulty does not take the rest away (arrays already on a GPU are not probed: they
    were made there)."""
    index = int(name.partition(":")[2])
    problem = _device_problem(index) if index else None
    if problem is not None:
        raise problem


@functools.cache
def _device_problem(index: int) -> BackendUnavailableError | None:
    import cupy

    try:
        probe_cupy(cupy, index)
    except BackendUnavailableError as problem:
        return problem
    return None


def torch_cuda_devices(torch: ModuleType) -> tuple[dict[str, Any], str | None]:
    """PyTorch's CUDA devices ("cuda:i" -> ``torch.device``), and where there are none, what
    PyTorch warned while looking (a driver too old for its CUDA build, say): a reason to
    show, not a warning escaping from the listing of backends (which a test run with
    warnings as errors would meet while collecting). Warnings beside devices found are
    issued again."""
    # Process-wide, as warnings filters are before Python 3.14: run once per process, under
    # the backend discovery lock, and another thread's warnings meanwhile are caught too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        for w in caught:  # as issued, with the module filters name
            module = next(
                (k for k, m in sys.modules.items() if getattr(m, "__file__", None) == w.filename),
                None,
            )
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, module=module)
    notes = [(str(w.message).strip().splitlines() or [""])[0][:200] for w in caught]
    return {f"cuda:{i}": torch.device(f"cuda:{i}") for i in range(count)}, (
        None if count or not notes else "; ".join(notes)
    )
