"""Count the array operations and host synchronisations a piece of code issues.

On a GPU each array operation is one kernel launch (~5–10 µs of overhead), so a training
step costs about (operations) × (launch overhead) when its arrays are small. Two counters:

* :class:`TorchOps`, on PyTorch tensors: a ``TorchDispatchMode`` that sees every ATen
  operator as it is dispatched (after autograd and Python). Counted as **ops**: every
  operator except views (``OpOverload.is_view``: ``view``, ``reshape``'s alias, ``t``,
  ``transpose``, ``permute``, ``expand``, ``slice``, ``select``, ``unsqueeze``,
  ``squeeze``, ``as_strided``, ``alias``, ``detach``, ``diagonal``, ``unbind``, …),
  the metadata/allocation operators in :data:`NOT_KERNELS` (``empty``, ``empty_strided``,
  ``empty_like``, ``lift_fresh``, ``_unsafe_view``, ``_reshape_alias``, ``sym_*``
  sizes, ``is_contiguous``, ``set_``, ``resize_``, the profiler marks
  ``_record_function_enter_new``/``_exit``) and the synchronisations, counted apart as
  **syncs**: ``_local_scalar_dense`` (``.item()``, ``float()``, ``bool()`` through
  ``is_nonzero``), ``_linalg_check_errors`` (the error check of ``torch.linalg``'s
  ``cholesky``/``solve``, which reads the factorisation's status back on CUDA) and
  copies of a non-CPU tensor to the CPU (``_to_copy``/``copy_``).
* :class:`NamespaceOps`, on any other Array API library: the namespace module's
  functions (``xp.sum``, ``xp.exp``, …) and the array type's arithmetic, comparison and
  ``@`` operators are replaced, within the context, by counting wrappers; indexing,
  ``reshape``, ``permute_dims`` and the other views in :data:`NAMESPACE_VIEWS` are not
  counted, nor the configuration functions (``get_*``, ``set_*``, ``reset_*``), nor
  calls a counted call makes inside itself. ``__bool__``, ``__float__``,
  ``__int__``, ``__index__`` and ``__array__`` count as syncs. Where the array type
  cannot be patched (NumPy's ``ndarray`` and CuPy's are C types) only the namespace
  functions are counted, and :attr:`NamespaceOps.operators` is False.

:func:`marginal` turns two runs, of k and of 2k steps, into the count per step with the
fixed costs of a run (set-up, the epoch's shuffle, the final read-back) removed.
"""

from __future__ import annotations

import functools
import threading
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["NAMESPACE_VIEWS", "NOT_KERNELS", "Count", "NamespaceOps", "TorchOps", "marginal"]

NOT_KERNELS = frozenset(
    {
        *("empty", "empty_strided", "empty_like", "lift_fresh", "lift_fresh_copy", "set_"),
        *("resize_", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"),
        *("is_contiguous", "dim", "_record_function_enter_new", "_record_function_exit"),
        *("_unsafe_view", "_reshape_alias"),  # views without alias information
    }
)
SYNC_OPS = frozenset({"_local_scalar_dense", "is_nonzero", "item", "_linalg_check_errors"})
NAMESPACE_VIEWS = frozenset(
    {
        *("reshape", "permute_dims", "expand_dims", "squeeze", "broadcast_to", "asarray"),
        *("__array_namespace__", "__array_namespace_info__", "isdtype", "finfo", "iinfo"),
        *("result_type", "can_cast"),
    }
)
OPERATORS = [
    f"__{name}__"
    for name in "add radd sub rsub mul rmul truediv rtruediv floordiv pow rpow matmul rmatmul "
    "mod neg pos abs invert and rand or ror xor lt le gt ge eq ne iadd isub imul itruediv "
    "ipow imatmul".split()
]
SYNC_METHODS = ["__bool__", "__float__", "__int__", "__index__", "__array__", "__complex__"]


class Count:
    """Ops and syncs seen so far, with a tally by operator name (``by_name``)."""

    def __init__(self) -> None:
        self.ops = 0
        self.syncs = 0
        self.by_name: Counter[str] = Counter()

    def op(self, name: str) -> None:
        self.ops += 1
        self.by_name[name] += 1

    def sync(self, name: str) -> None:
        self.syncs += 1
        self.by_name[f"sync:{name}"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "syncs": self.syncs, "by_name": dict(self.by_name)}


def _torch_mode_base() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class TorchOps(Count):
    """``with TorchOps() as c: ...``: count the ATen operators PyTorch dispatches."""

    def __enter__(self) -> TorchOps:
        count = self

        class Mode(_torch_mode_base()):  # type: ignore[misc]
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                count.see(func, args, kwargs or {})
                return func(*args, **(kwargs or {}))

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    def see(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Classify one dispatched operator: view or metadata (ignored), sync, or op."""
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.sync(name)
        elif name in ("_to_copy", "copy_", "to") and _to_host(name, args, kwargs):
            self.sync(f"{name}->cpu")
        elif not (func.is_view or name in NOT_KERNELS):
            self.op(name)


def _to_host(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a copy moves a non-CPU tensor to the CPU."""
    import torch

    if name == "copy_":
        dst, src = args[0], args[1]
        return dst.device.type == "cpu" and src.device.type != "cpu"
    device = kwargs.get("device")
    return (
        device is not None and torch.device(device).type == "cpu" and args[0].device.type != "cpu"
    )


class NamespaceOps(Count):
    """``with NamespaceOps(xp, array_type) as c: ...``: count calls of ``xp``'s functions
    and of ``array_type``'s operators (restored on exit).

    ``xp`` is the namespace module mlxp computes with (``array_namespace(x)``), so every
    module that holds it sees the wrappers. Nested calls (a wrapped function calling
    another) count once, at the outermost level. Not thread-safe: count one thing at a time.
    """

    def __init__(self, xp: types.ModuleType, array_type: type | None = None) -> None:
        super().__init__()
        self.xp, self.array_type = xp, array_type
        self.operators = False
        self._saved: list[tuple[Any, str, Any]] = []
        self._depth = threading.local()

    def _wrap(self, function: Callable, name: str, sync: bool = False) -> Callable:
        @functools.wraps(function)
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            if depth == 0:
                (self.sync if sync else self.op)(name)
            self._depth.n = depth + 1
            try:
                return function(*args, **kwargs)
            finally:
                self._depth.n = depth

        return counted

    def _patch(self, owner: Any, name: str, sync: bool = False) -> bool:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
        if original is None or not callable(original):
            return False
        try:
            label = name.strip("_") if isinstance(owner, type) else name
            if isinstance(owner, types.ModuleType) and owner is not self.xp:
                label = f"{owner.__name__.rpartition('.')[2]}.{name}"
            setattr(owner, name, self._wrap(original, label, sync))
        except (TypeError, AttributeError):  # a C type: its slots cannot be replaced
            return False
        self._saved.append((owner, name, original))
        return True

    def _patch_module(self, module: types.ModuleType) -> None:
        """Wrap the module's public functions (ufuncs and builtins too), views apart."""
        for name in dir(module):
            value = getattr(module, name, None)
            function = callable(value) and not isinstance(value, (type, types.ModuleType))
            configuration = name.startswith(("_", "get_", "set_", "reset_", "enable_"))
            if function and not configuration and name not in NAMESPACE_VIEWS:
                self._patch(module, name)

    def __enter__(self) -> NamespaceOps:
        self._patch_module(self.xp)
        for extension in ("linalg", "fft"):
            module = getattr(self.xp, extension, None)
            if isinstance(module, types.ModuleType):
                self._patch_module(module)
        if self.array_type is not None:
            patched = [self._patch(self.array_type, n) for n in OPERATORS]
            self.operators = any(patched)
            for n in SYNC_METHODS:
                self._patch(self.array_type, n, sync=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def marginal(run: Callable[[int], Any], counter: Callable[[], Count], k: int) -> dict[str, Any]:
    """Ops and syncs per step: (count of ``run(2k)`` − count of ``run(k)``) / k.

    ``run(m)`` does m steps; ``counter()`` makes a fresh :class:`Count` context. The
    per-name tally is the same difference. Uncounted ``run(k)`` and ``run(2k)`` go first,
    so that what a first call of each size does once (JAX tracing a step, or a block gather
    for that many steps, it then keeps compiled) is not counted: on JAX the count is then
    the operations dispatched outside the compiled programs.
    """
    for m in (k, 2 * k):  # the warm-ups: their counts are dropped
        with counter():
            run(m)
    counts = []
    for m in (k, 2 * k):
        with counter() as c:
            run(m)
        counts.append(c)
    small, large = counts
    names = set(small.by_name) | set(large.by_name)
    by_name = {n: (large.by_name[n] - small.by_name[n]) / k for n in sorted(names)}
    return {
        "ops": (large.ops - small.ops) / k,
        "syncs": (large.syncs - small.syncs) / k,
        "operators_counted": getattr(large, "operators", True),
        "by_name": {n: v for n, v in by_name.items() if v},
    }


# --------------------------------------------------------------------------- what bench/ counts
def counter_for(to_device: Callable[[Any], Any]) -> Callable[[], Count]:
    """A fresh-counter factory for arrays made by ``to_device`` (a NumPy array -> the
    library's): :class:`TorchOps` for PyTorch tensors, else :class:`NamespaceOps`."""
    import numpy as np
    from array_api_compat import array_namespace, is_torch_array

    probe = to_device(np.zeros(1))
    if is_torch_array(probe):
        return TorchOps
    xp = array_namespace(probe)
    return lambda: NamespaceOps(xp, type(probe))


def network_step(
    to_device: Callable[[Any], Any], layers: Callable[[], list], data: Any, batch: int, k: int
) -> dict:
    """Ops per training step of ``Sequential.fit`` (Adam, cross-entropy) on arrays made by
    ``to_device``; ``data`` has at least 2k·batch samples."""
    from mlxp import nn
    from mlxp.optim import Adam

    X, y = data

    def run(m: int) -> None:
        net = nn.Sequential(layers(), seed=0)
        Xm, ym = to_device(X[: m * batch]), to_device(y[: m * batch])
        kwargs = {"epochs": 1, "batch_size": batch, "progress": False}
        net.fit(Xm, ym, loss="cross_entropy", optimizer=Adam(1e-3), **kwargs)

    return marginal(run, counter_for(to_device), k)


def torch_step(layers: Callable[[], list], data: Any, batch: int, k: int) -> dict:
    """Ops per step of the same network written natively in PyTorch (Adam ``foreach=True``)."""
    import torch

    X, y = (torch.from_numpy(a) for a in data)

    def run(m: int) -> None:
        torch.manual_seed(0)
        net = torch.nn.Sequential(*layers())
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
        for i in range(m):
            rows = slice(i * batch, (i + 1) * batch)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[rows]), y[rows]).backward()
            opt.step()

    return marginal(run, TorchOps, k)


def solver_iteration(
    to_device: Callable[[Any], Any], make: Callable[[int], Any], data: Any, k: int
) -> dict:
    """Ops per iteration of ``make(max_iter).fit`` on arrays made by ``to_device``: runs of
    k and 2k iterations (``make`` should set ``tol=0``; the non-convergence warning is
    silenced). Raises RuntimeError if the solver stops early."""
    import warnings

    X, y = (to_device(a) for a in data)

    def run(m: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make(m).fit(X, y)
        if int(__import__("mlxp").to_numpy(model.n_iter_)) != m:
            raise RuntimeError(f"the solver stopped after {model.n_iter_} < {m} iterations")

    return marginal(run, counter_for(to_device), k)


def solver_data(n: int, p: int) -> tuple[Any, Any]:
    """:func:`bench.estimators.logistic_data` with feature scales 1 … 10^1.5: conditioned so
    that L-BFGS runs every iteration it is given (``tol=0``) instead of stopping at f's
    precision after ~20, and the count is of full-history iterations."""
    import numpy as np

    from bench.estimators import logistic_data

    X, y = logistic_data(n, p)
    return X * np.logspace(0, 1.5, p), y


NETWORK_STEPS = 2  # k: runs of 2 and 4 steps
SOLVER_ITERATIONS = 10  # k: runs of 10 and 20, so that the history (10 pairs) is full
ITERATIVE = {"lbfgs", "newton"}


_COUNTED: dict[tuple[str, str, str], dict[str, Any]] = {}
COUNT_ROWS = 20_000
"""The most rows a solver's iteration is counted on (its count does not depend on them)."""


def row_counts(bench: Any, size: tuple[int, int], row: dict, target: Any) -> dict[str, Any]:
    """``ops``, ``syncs`` (per training step or solver iteration), ``ops_unit`` and
    ``operators_counted`` (False: namespace functions only, a lower bound) for a benchmark
    row on ``target`` (mlxp, or native PyTorch); {} for what is not counted (exact
    solvers, scikit-learn, cuML). A count that cannot be made gives ``ops`` None and the
    reason in ``ops_note``. The count depends neither on the problem size nor on the
    device: it is made once per model, solver and library (at the first size and device)
    and reused for the others."""
    key = (row["model"], row["solver"], row["backend"].partition(":")[0])
    if key not in _COUNTED:
        _COUNTED[key] = _count(bench, size, row, target)
    return _COUNTED[key]


def _count(bench: Any, size: tuple[int, int], row: dict, target: Any) -> dict[str, Any]:
    n, w = size
    try:
        if row["model"] in ("MLP", "CNN") and row["backend"].startswith("PyTorch"):
            import torch

            data = bench.data(2 * NETWORK_STEPS * bench.batch, w)
            layers = functools.partial(bench.layers, w, torch.nn)
            counted = torch_step(layers, data, bench.batch, NETWORK_STEPS)
        elif row["model"] in ("MLP", "CNN") and not row["peer"]:
            data = bench.data(2 * NETWORK_STEPS * bench.batch, w)
            layers = functools.partial(bench.layers, w)
            counted = network_step(target.to_device, layers, data, bench.batch, NETWORK_STEPS)
        elif row["solver"] in ITERATIVE and not row["peer"]:
            params = {**bench.params, "solver": row["solver"], "tol": 0.0, "max_iter": 0}

            def make(max_iter: int) -> Any:
                return bench.estimator(**{**params, "max_iter": max_iter})

            k = SOLVER_ITERATIONS if row["solver"] == "lbfgs" else 2
            # counted at most 20 000 rows: as many ops, no second 800 MB X at 1e6 (GPU check)
            data = solver_data(min(n, COUNT_ROWS), w)
            counted = solver_iteration(target.to_device, make, data, k)
        else:
            return {}
    except (RuntimeError, ImportError) as exc:
        return {"ops": None, "syncs": None, "ops_note": str(exc)}
    unit = "step" if row["model"] in ("MLP", "CNN") else "iteration"
    keys = ("ops", "syncs", "operators_counted")
    return {**{k: counted[k] for k in keys}, "ops_unit": unit}
