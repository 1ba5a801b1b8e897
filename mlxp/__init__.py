"""mlxp: machine-learning foundations written once against the Python Array API standard.

The same code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict. Choose where
to compute with :func:`set_backend`, :func:`use_backend` or ``MLXP_BACKEND=name[:device]``;
by default mlxp computes where the input arrays live.
"""

from importlib import metadata as _metadata

from mlxp._backend import (
    Backend,
    BackendUnavailableError,
    available_backends,
    from_environment,
    get_backend,
    set_backend,
    use_backend,
)
from mlxp._compat import Generator, synchronize, to_numpy
from mlxp.exceptions import ConvergenceWarning, NotFittedError
from mlxp.io import load, save

try:  # the installed distribution's version (pyproject.toml's), as ``mlxp --version`` says
    __version__ = _metadata.version("mlxp")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "ConvergenceWarning",
    "Generator",
    "NotFittedError",
    "__version__",
    "available_backends",
    "get_backend",
    "load",
    "save",
    "set_backend",
    "synchronize",
    "to_numpy",
    "use_backend",
]

from_environment()
