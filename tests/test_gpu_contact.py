"""GPU first contact, checked without a GPU: fakes stand in for CuPy and its devices.

* a CuPy that imports but cannot compile or launch a kernel is an unavailable backend,
  with the reason, in ``mlxp.available_backends()`` and in the test/bench matrix;
* public compute methods run inside the compute device's context (CuPy allocates on its
  current device: array-api-compat's ``zeros``/``eye``... ignore ``device=`` for CuPy);
* the Cholesky solvers check the factor instead of trusting the library to raise (CuPy
  returns a partial factor silently): on every backend, and with a fake silent one.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import ClassVar

import array_api_compat as aac
import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import backends
import mlxp
import mlxp._compat
import mlxp._device
import mlxp._gpu_probe
import mlxp.io
import mlxp.metrics
import mlxp.nn.streaming
from mlxp._backend import Placement, _library, make_backend
from mlxp._cholesky import is_cholesky_factor
from mlxp._compat import Generator, scatter_add
from mlxp._device import device_context
from mlxp.exceptions import SolverError
from mlxp.linear_model import LogisticRegression, Ridge
from mlxp.linear_model._exact import solve_exact
from mlxp.nn import BatchNorm1d, Conv2D, Dense, Layer, MLPRegressor, ReLU, Sequential
from tests.conftest import Unrecognised


# --------------------------------------------------------------------------- a CuPy that cannot
class CompileException(Exception):
    """What ``cupy.cuda.compiler.CompileException`` looks like: NVRTC's log as the message."""


class FakeDevice:
    """A ``cupy.cuda.Device`` look-alike that records which device is current."""

    current: ClassVar[list[int]] = []  # the stack of entered devices, innermost last

    def __init__(self, id: int = 0) -> None:
        self.id = id

    def __enter__(self) -> FakeDevice:
        FakeDevice.current.append(self.id)
        return self

    def __exit__(self, *exc) -> None:
        FakeDevice.current.pop()


def _cupy_failing_at(stage: str) -> types.ModuleType:
    """A fake ``cupy`` with one GPU whose first kernel of ``stage`` fails (NumPy otherwise)."""

    def fail(*args, **kwargs):
        raise CompileException(
            'catastrophic error: cannot open source file "cuda_fp16.h"\n(long NVRTC log)'
        )

    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.0.0"
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    cupy.cuda = types.SimpleNamespace(is_available=lambda: True, runtime=runtime, Device=FakeDevice)
    cupy.float32 = np.float32
    cupy.arange = fail if stage == "elementwise" else np.arange
    cupy.reshape = np.reshape
    cupy.sum = {"reduction": fail, "wrong": lambda x: np.sum(x) + 1}.get(stage, np.sum)
    return cupy


@pytest.fixture
def fresh_libraries():
    _library.cache_clear()
    mlxp._gpu_probe._device_problem.cache_clear()
    yield
    _library.cache_clear()
    mlxp._gpu_probe._device_problem.cache_clear()


@pytest.mark.parametrize("stage", ["elementwise", "reduction"])
def test_cupy_that_cannot_compile_is_unavailable_with_the_reason(
    stage, monkeypatch, fresh_libraries
):
    monkeypatch.setitem(sys.modules, "cupy", _cupy_failing_at(stage))
    with pytest.raises(
        mlxp.BackendUnavailableError, match=r"cannot run a kernel.*CompileException.*\[ctk\]"
    ):
        mlxp.set_backend("cupy")
    assert not any(name == "cupy" for name, _ in mlxp.available_backends())
    (case,) = [c for c in backends.cases() if c.name == "cupy"]  # the matrix skips it
    assert case.backend is None and "cuda_fp16.h" in case.reason and "NVRTC log" not in case.reason
    assert FakeDevice.current == []


def test_cupy_probes_a_second_gpu_only_when_a_backend_names_it(monkeypatch, fresh_libraries):
    """Loading CuPy probes cuda:0 alone (no context on the other GPUs); cuda:1 is probed
    when first named, and a faulty one is unavailable without taking cuda:0 away."""
    cupy = _cupy_failing_at("none")
    cupy.cuda.runtime.getDeviceCount = lambda: 2
    probed = []

    def arange(*args, **kwargs):  # the probe's first kernel, on the current device
        probed.append(FakeDevice.current[-1])
        if FakeDevice.current[-1] == 1:
            raise RuntimeError("cudaErrorDevicesUnavailable: all CUDA-capable devices are busy")
        return np.arange(*args, **kwargs)

    cupy.arange = arange
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", types.ModuleType("xp"))
    assert make_backend("cupy").device_name == "cuda:0" and probed == [0]
    for _ in range(2):  # asked once, the failure remembered
        with pytest.raises(mlxp.BackendUnavailableError, match=r"cuda:1 but.*busy.*cuda:0 works"):
            make_backend("cupy:cuda:1")
    assert make_backend("cupy:cuda:0").device_name == "cuda:0" and probed == [0, 1]
    cases = {str(c): c for c in backends.cases() if c.name == "cupy"}  # the matrix skips it
    assert cases["cupy:cuda:0"].backend is not None and "busy" in cases["cupy:cuda:1"].reason


def test_cupy_that_computes_wrongly_is_unavailable(monkeypatch, fresh_libraries):
    monkeypatch.setitem(sys.modules, "cupy", _cupy_failing_at("wrong"))
    with pytest.raises(mlxp.BackendUnavailableError, match=r"computed 79\.0 instead of 78"):
        mlxp.set_backend("cupy")


# --------------------------------------------------------------------------- device context
FAKE_CUPY = types.ModuleType("cupy")  # is_cupy_namespace reads only the name


def test_a_torch_device_without_an_index_names_pytorchs_current_gpu(monkeypatch, fresh_libraries):
    """``torch.device("cuda")``, PyTorch's usual name for the GPU, names PyTorch's current
    CUDA device, though it is not equal to ``torch.device("cuda:0")`` (its index is None);
    against the device table PyTorch's loader builds on a two-GPU machine."""
    torch = pytest.importorskip("torch")
    import mlxp._backend as backend_module

    real = backend_module._LOADERS["torch"]

    def two_gpus():
        lib = real()
        gpus = {f"cuda:{i}": torch.device(f"cuda:{i}") for i in (0, 1)}
        return backend_module._Library(lib.version, lib.xp, {**lib.devices, **gpus})

    if not torch.cuda.is_available():  # no GPU: refused as any device the library lacks
        with pytest.raises(ValueError, match="has no device"):
            make_backend("torch", torch.device("cuda"))
    monkeypatch.setitem(backend_module._LOADERS, "torch", two_gpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # torch.cuda.set_device(1)
    _library.cache_clear()
    assert torch.device("cuda") != torch.device("cuda:1")
    for device, expected in [
        (torch.device("cuda"), "cuda:1"),
        (torch.device("cuda:0"), "cuda:0"),
        ("cuda", "cuda:0"),
    ]:
        assert make_backend("torch", device).device_name == expected
    with pytest.raises(ValueError, match="has no device"):
        make_backend("torch", torch.device("cuda:2"))


TOO_OLD = "CUDA initialization: The NVIDIA driver on your system is too old (found version 12080)."


def test_a_pytorch_that_cannot_start_cuda_says_why(monkeypatch, fresh_libraries):
    """Where PyTorch's CUDA start warns and finds no GPU (a driver too old for its CUDA
    build), the warning is the reason shown by ``mlxp info`` and by the torch:cuda cases'
    skips. It used to escape from the listing of backends: under warnings as errors, the
    test run would fail while collecting."""
    torch = pytest.importorskip("torch")
    from mlxp.__main__ import info

    def is_available():
        warnings.warn(TOO_OLD, UserWarning, stacklevel=2)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    row = next(r for r in mlxp._backend.backend_report() if r["name"] == "torch")
    assert row["reason"] is None and row["devices"] == ["cpu"] and row["note"] == TOO_OLD
    assert f"devices: cpu  (no GPU: {TOO_OLD})" in info()
    case = next(c for c in backends.cases() if str(c) == "torch:cuda:0")
    assert case.backend is None and case.reason == f"torch: no CUDA device was found ({TOO_OLD})"


def test_pytorch_warnings_beside_its_gpus_are_issued_again():
    """Warnings PyTorch gives while finding GPUs it can use are not the listing's to keep."""

    def is_available():
        warnings.warn("a notice", UserWarning, stacklevel=1)  # from this module
        return True

    cuda = types.SimpleNamespace(is_available=is_available, device_count=lambda: 2)
    fake = types.SimpleNamespace(cuda=cuda, device=lambda name: f"device {name}")
    with pytest.warns(UserWarning, match="a notice"):
        devices, note = mlxp._gpu_probe.torch_cuda_devices(fake)
    assert devices == {"cuda:0": "device cuda:0", "cuda:1": "device cuda:1"} and note is None
    with warnings.catch_warnings(record=True) as seen:  # as issued: filters by module apply
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "a notice", UserWarning, module=__name__)
        mlxp._gpu_probe.torch_cuda_devices(fake)
    assert seen == []


def test_device_context_makes_a_cupy_device_current_and_nothing_else():
    with device_context(FAKE_CUPY, FakeDevice(1)):
        assert FakeDevice.current == [1]
        with device_context(FAKE_CUPY, FakeDevice(0)):
            assert FakeDevice.current == [1, 0]
        assert FakeDevice.current == [1]
    assert FakeDevice.current == []
    with device_context(np_xp, "cpu"):
        assert FakeDevice.current == []


@pytest.fixture
def creation_spy(monkeypatch):
    """Every public compute call computes on a fake cuda:1; records the current device at
    each ``zeros``/``ones``/``eye``/``full``/``arange`` (and ``*_like``) of the NumPy
    namespace (None: outside)."""
    seen = []
    for name in ("zeros", "ones", "eye", "full", "arange", "zeros_like", "ones_like"):
        real = getattr(np_xp, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(FakeDevice.current[-1] if FakeDevice.current else None)
            return _real(*args, **kwargs)

        monkeypatch.setattr(np_xp, name, spy)
    fake = Placement(FAKE_CUPY, FakeDevice(1), np_xp, "cpu")
    monkeypatch.setattr(mlxp._device, "placement", lambda **arrays: fake)
    return seen


def test_estimators_create_arrays_inside_the_compute_device(creation_spy, rng):
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=40)
    ridge = Ridge(alpha=1.0).fit(X, y)  # eye(p) for the penalty
    mlp = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with pytest.warns(mlxp.exceptions.ConvergenceWarning):
        mlp.fit(X, y)
    model = Sequential([Dense(3, 4), ReLU(), Dense(4, 1)], seed=0)
    model.fit(X, y[:, None], epochs=1, batch_size=8, progress=False)
    logistic = LogisticRegression().fit(X, y > 0)
    predictions = [ridge.predict(X), mlp.predict(X), model.predict(X), ridge.score(X, y)]
    predictions += [logistic.predict(X), logistic.predict_proba(X)]  # from a mixin: zeros_like
    assert creation_spy and set(creation_spy) == {1}  # biases and eye on cuda:1, none on 0
    assert FakeDevice.current == []
    Xc, yc = X - X.mean(axis=0), y - y.mean()  # the context changes no number
    coef = np.linalg.solve(Xc.T @ Xc + np.eye(3), Xc.T @ yc)
    np.testing.assert_allclose(mlxp.to_numpy(ridge.coef_), coef, rtol=1e-10)
    assert all(np.all(np.isfinite(p)) for p in predictions)


def test_metrics_create_arrays_inside_the_compute_device(creation_spy, monkeypatch):
    """The public metrics, called outside any estimator, enter the device of their inputs'
    placement too (array-api-compat's creation functions ignore device= on CuPy), placed
    by the arguments the metric places itself by (not ``labels``)."""
    placed, fake = [], mlxp._device.placement(y=None)
    monkeypatch.setattr(
        mlxp._device, "placement", lambda **arrays: placed.append(sorted(arrays)) or fake
    )
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    mlxp.metrics.accuracy_score(y, p, sample_weight=np.ones(4))
    mlxp.metrics.confusion_matrix(y, p, labels=np.array([0, 1]))
    assert placed == [["sample_weight", "y_pred", "y_true"], ["y_pred", "y_true"]]
    mlxp.metrics.r2_score(y * 1.0, p * 1.0)
    mlxp.metrics.mean_squared_error(y * 1.0, p * 1.0)
    mlxp.metrics.log_loss(y, np.array([0.2, 0.7, 0.4, 0.1]))
    assert creation_spy and set(creation_spy) == {1}
    assert FakeDevice.current == []


def test_the_prefetch_thread_works_in_the_training_threads_device_and_stream(monkeypatch):
    """consumer_context, made on the training thread, enters that thread's device and CuPy
    stream in the prefetch thread, where each Dask chunk is moved and cast."""
    da = pytest.importorskip("dask.array")
    stream = FakeDevice(7)  # a context manager: "entering the stream" records 7
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda device_id: [stream][device_id - 1])
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    where = mlxp._device.consumer_context(FAKE_CUPY, FakeDevice(1))
    assert FakeDevice.current == []
    with where():
        assert FakeDevice.current == [1, 7]
    assert isinstance(mlxp._device.consumer_context(np_xp, "cpu")(), contextlib.nullcontext)
    torch = pytest.importorskip("torch")  # PyTorch CUDA: the training thread's stream
    import array_api_compat.torch as torch_xp

    entered = []
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"stream of {device}")
    monkeypatch.setattr(
        torch.cuda, "stream", lambda s: entered.append(s) or contextlib.nullcontext()
    )
    with mlxp._device.consumer_context(torch_xp, torch.device("cuda:1"))():
        assert entered == ["stream of cuda:1"]
    monkeypatch.delitem(sys.modules, "cupy")
    seen = []

    def recording(xp, device):
        def enter():
            seen.append(threading.current_thread().name)
            return FakeDevice(1)

        return enter

    monkeypatch.setattr(mlxp.nn.streaming, "consumer_context", recording)
    X = da.from_array(np.random.default_rng(0).normal(size=(40, 3)), chunks=10)
    model = Sequential([Dense(3, 2)], seed=0)
    model.fit(X, X[:, :2], epochs=1, progress=False)
    assert len(seen) == 4 and all(name.startswith("mlxp-prefetch") for name in seen)


JAX_SECOND_DEVICE = """
import os, sys, warnings
warnings.simplefilter("error", RuntimeWarning)  # a compiled pass that failed falls back so
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, numpy as np
import mlxp, mlxp._backend as B
from mlxp.linear_model import LogisticRegression, Ridge
from mlxp.metrics import confusion_matrix
from mlxp.nn import Dense, MLPClassifier, Sequential

first, second = jax.devices("cpu")[:2]  # the default device, and one named cuda:1
B._LOADERS["jax"] = lambda: B._Library(jax.__version__, jnp, {"cpu": first, "cuda:1": second})
B._library.cache_clear()
jax.config.update("jax_transfer_guard_device_to_device", "disallow")
rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4))
y = (X[:, 0] > 0).astype(np.int64)
mlxp.set_backend("jax:cuda:1")
for model in (Ridge(1.0), LogisticRegression(), MLPClassifier((5,), max_iter=2)):
    model.fit(X, y)
    model.score(X, y)
    assert model.predict(jax.device_put(X, second)).devices() == {second}
mlxp.set_backend(None)
Xd, yd = jax.device_put(X, second), jax.device_put(y, second)
assert confusion_matrix(yd, yd).devices() == {second}
net = Sequential([Dense(4, 2)], seed=0)
net.fit(Xd, yd, epochs=1, loss="cross_entropy", progress=False)
assert net.infer_batches(Xd, 16).devices() == {second}  # predict's pass, called directly
assert net.infer_batches(x=Xd, batch_size=16).devices() == {second}
with mlxp._device.consumer_context(jnp, second)():
    assert jnp.zeros(3).devices() == {second}
print("no copies")
"""


def test_jax_makes_its_arrays_on_the_compute_device():
    """On a second JAX device (``jax:cuda:1``, or ``jax:cpu`` on a GPU machine, whose
    default device is the GPU) fits, predictions, scores and metrics make their arrays
    where they compute, and the prefetch thread too: ``zeros``, ``ones``, ``full`` with
    ``device=`` fill on JAX's default device and copy, unless inside ``device_context``
    (``jax.default_device``). Two host devices stand in, copies between them refused."""
    pytest.importorskip("jax")
    run = subprocess.run(
        [sys.executable, "-c", JAX_SECOND_DEVICE], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and "no copies" in run.stdout, run.stderr[-3000:]


def test_sequential_build_creates_inside_the_device(creation_spy, monkeypatch):
    monkeypatch.setattr(mlxp.nn.sequential, "device_context", lambda xp, dev: FakeDevice(1))
    Sequential([Dense(3, 4)], seed=0).build(np_xp, "cpu", np_xp.float64)
    assert creation_spy and set(creation_spy) == {1}


class OwnLayer(Layer):
    """A user's layer: its ``initialize`` runs on the device it is given, as mlxp's do."""

    def initialize(self, rng, *, xp, device, dtype):
        self.params["scale"] = xp.ones((3,), dtype=dtype, device=device)


@pytest.mark.parametrize(
    "layer", [Dense(3, 4), Conv2D(1, 2, 3), BatchNorm1d(3), OwnLayer()], ids=type
)
def test_layer_initialize_creates_inside_the_device_it_is_given(layer, creation_spy, monkeypatch):
    """Called directly, outside a public method: the biases, scales and running statistics
    that ``xp.zeros``/``ones`` make (whose ``device=`` CuPy's namespace ignores) are made
    inside the device's context, with the weights."""
    entered = []

    def recording(xp, device):
        entered.append((xp, device))
        return FakeDevice(1)

    monkeypatch.setattr(mlxp._device, "device_context", recording)
    layer.initialize(Generator(0), xp=np_xp, device="cpu", dtype=np_xp.float64)
    assert entered == [(np_xp, "cpu")]
    assert creation_spy and set(creation_spy) == {1}


class PositionalLayer(Layer):
    """A user's layer taking ``initialize``'s arguments its own way: positionally, with a
    default dtype and a keyword of its own."""

    def initialize(self, rng, xp, device, dtype=None, *, scale=1.0):
        self.params["b"] = scale * xp.ones((2,), dtype=dtype or xp.float64, device=device)


def test_initialize_of_any_signature_runs_inside_the_device(creation_spy, monkeypatch):
    """The device context finds ``xp`` and ``device`` however a layer takes them, and
    the call reaches ``initialize`` unchanged (positional, defaulted, extra keywords)."""
    entered = []

    def recording(xp, device):
        entered.append((xp, device))
        return FakeDevice(1)

    monkeypatch.setattr(mlxp._device, "device_context", recording)
    layer = PositionalLayer()
    layer.initialize(Generator(0), np_xp, "cpu", scale=2.0)
    assert entered == [(np_xp, "cpu")] and set(creation_spy) == {1}
    np.testing.assert_array_equal(layer.params["b"], [2.0, 2.0])
    with pytest.raises(TypeError):  # a wrong call is the layer's to report
        layer.initialize(Generator(0))


def test_load_checks_a_model_file_inside_the_device(tmp_path, rng, monkeypatch):
    """``mlxp.load`` onto a backend checks the tensors it moved there (finite, shapes)
    inside that device's context: on ``cupy:cuda:1`` the checks' kernels would otherwise
    launch on device 0, which CuPy refuses without peer access."""
    X = rng.normal(size=(30, 3))
    with pytest.warns(mlxp.ConvergenceWarning):  # three epochs: enough to save a network
        network = MLPRegressor((4,), max_iter=3).fit(X, X[:, 0])
    models = [Ridge().fit(X, X @ [1.0, 2.0, 3.0]), network]
    seen = []
    real = np_xp.isfinite

    def spy(x):
        seen.append(FakeDevice.current[-1] if FakeDevice.current else None)
        return real(x)

    monkeypatch.setattr(mlxp.io, "device_context", lambda xp, dev: FakeDevice(1))
    for model in models:
        path = tmp_path / f"{type(model).__name__}.safetensors"
        mlxp.save(model, path)
        seen.clear()
        monkeypatch.setattr(np_xp, "isfinite", spy)
        loaded = mlxp.load(path, backend="numpy")
        monkeypatch.setattr(np_xp, "isfinite", real)
        assert seen and set(seen) == {1}
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_scatter_add_on_cupy_makes_its_sums_on_the_values_device(monkeypatch):
    """``scatter_add``'s CuPy branch makes its zeros inside the values' device (CuPy's
    ``zeros`` takes the current one) before ``cupyx.scatter_add`` adds into them."""
    made = []
    fake = types.ModuleType("cupy")

    def zeros(shape, dtype):
        made.append(FakeDevice.current[-1] if FakeDevice.current else None)
        return np.zeros(shape, dtype=dtype)

    fake.zeros = zeros
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = lambda out, index, values: np.add.at(out, index, values)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setattr(mlxp._compat.aac, "device", lambda x: FakeDevice(1))
    out = scatter_add(2, np.array([0, 1, 0]), np.ones((3, 2)), xp=fake)
    assert made == [1]
    np.testing.assert_array_equal(out, [[2.0, 2.0], [1.0, 1.0]])


# --------------------------------------------------------------------------- Cholesky
def test_cholesky_factor_is_checked_on_every_backend(backend, dtype):
    xp = backend.xp
    A = backend.asarray([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]], dtype)
    assert np.linalg.eigvalsh(backend.to_numpy(A)).min() < 0  # not positive definite
    try:
        L = xp.linalg.cholesky(A)
    except Exception:  # NumPy, PyTorch, array-api-strict raise
        pass
    else:  # JAX returns NaNs, CuPy a partial factor: neither passes
        assert not bool(is_cholesky_factor(L, A, xp=xp))
    # Positive definite, badly conditioned (κ ≈ 1e6 in float32, 1e12 in float64): accepted.
    s = 1e-3 if dtype == "float32" else 1e-6
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    B = Q @ np.diag([1, 1, 1, s, s, s**2]) @ Q.T
    B = backend.asarray(B / np.sqrt(np.outer(np.diag(B), np.diag(B))), dtype)
    assert bool(is_cholesky_factor(xp.linalg.cholesky(B), B, xp=xp))


def _tf32(x):
    """x rounded to TF32 where it is float32: 10 of float32's 23 mantissa bits (truncated)."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return x
    return (x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


class TF32Array(np.ndarray):
    """A float32 array whose products round their inputs to TF32, as CuPy's do under
    ``CUPY_TF32=1`` and JAX's on a recent NVIDIA GPU by default."""

    def __matmul__(self, other):
        return np.matmul(_tf32(self), _tf32(other)).view(TF32Array)


def _tf32_namespace(name):
    """A stand-in namespace of library ``name`` over NumPy (the ``is_*_namespace`` tests
    read only the name), its ``matmul`` TF32's unless asked for the highest precision."""
    fake = types.ModuleType(name)
    for attr in ("astype", "float32", "float64", "max", "abs", "tril", "finfo", "all"):
        setattr(fake, attr, getattr(np_xp, attr))
    fake.linalg = types.SimpleNamespace(diagonal=np.linalg.diagonal)

    def matmul(a, b, precision=None):
        exact = str(precision).endswith("HIGHEST")
        return np.matmul(*((np.asarray(a), np.asarray(b)) if exact else (_tf32(a), _tf32(b))))

    fake.matmul = matmul
    return fake


@pytest.mark.parametrize("library", ["cupy", "jax.numpy"])
def test_cholesky_factor_check_holds_under_tf32_products(library):
    """Where float32 products may be TF32's (CuPy under ``CUPY_TF32=1``, JAX on a GPU by
    default), the check's product is not: a TF32 one would miss A by about 2⁻¹⁰ max aₖₖ
    and refuse every factor (Newton would descend by gradient steps, the exact solvers
    skip Cholesky). CuPy: a float64 product; JAX (no float64 without x64): its highest
    precision. Stand-in namespaces over NumPy, TF32 products."""
    fake = _tf32_namespace(library)
    M = np.random.default_rng(0).normal(size=(40, 8))
    A = (M.T @ M / 40 + 0.1 * np.eye(8)).astype(np.float32)
    L = np.linalg.cholesky(A).view(TF32Array)
    A = A.view(TF32Array)
    tf32_miss = np.abs(np.tril(np.asarray(L @ L.T) - A)).max() / A.diagonal().max()
    assert tf32_miss > 4 * 9 * np.finfo(np.float32).eps  # what the float32 check would see
    assert bool(is_cholesky_factor(L, A, xp=fake))
    partial = np.tril(A).view(TF32Array)  # a partial factor is still refused
    assert not bool(is_cholesky_factor(partial, A, xp=fake))


# PyTorch 2.9 and 2.10 warn, once, on reading or setting allow_tf32, asking for the newer
# fp32_precision settings (2.11 and 2.13 do not); the test sets what a user of the older
# setting sets (setting only the newer one would make PyTorch's own reads of it raise).
@pytest.mark.filterwarnings("ignore:Please use the new API settings to control TF32:UserWarning")
def test_cholesky_factor_check_holds_with_pytorch_tf32_on_cuda(backend):
    """PyTorch on CUDA with the user's ``allow_tf32``: the check's product is float64.
    (The test process sets ``NVIDIA_TF32_OVERRIDE=0``, which keeps TF32 off whatever
    ``allow_tf32`` says, so the product's dtype is asserted besides the verdict.)"""
    torch = pytest.importorskip("torch")
    from mlxp._cholesky import _full_precision_gram

    if backend.name != "torch" or not backend.device_name.startswith("cuda"):
        pytest.skip("PyTorch's TF32 applies to its CUDA devices")
    M = torch.randn(40, 8, device=backend.device)
    A = M.T @ M / 40 + 0.1 * torch.eye(8, device=backend.device)
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        L = torch.linalg.cholesky(A)
        assert bool(is_cholesky_factor(L, A))
        assert _full_precision_gram(L, backend.xp).dtype == torch.float64
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


class SilentCholesky(Unrecognised):
    """A namespace whose Cholesky returns, without raising, the partial factor a library
    leaves when it stops at the last pivot: the leading block factored, the last row raw."""

    def __init__(self, xp):
        super().__init__(xp)
        self.linalg = types.SimpleNamespace(
            **{k: getattr(xp.linalg, k) for k in dir(xp.linalg) if not k.startswith("_")}
        )
        self.linalg.cholesky = self._partial

    def _partial(self, A):
        xp, p = self._xp, A.shape[0]
        L1 = xp.linalg.cholesky(A[: p - 1, : p - 1])
        zero = xp.zeros((p - 1, 1), dtype=A.dtype, device=aac.device(A))
        return xp.concat([xp.concat([L1, zero], axis=1), A[p - 1 :, :]], axis=0)


def test_a_silent_partial_factor_is_caught(backend, rng):
    xp = backend.xp
    X = rng.normal(size=(50, 4))
    X -= X.mean(axis=0)
    Y = (X @ rng.normal(size=(4, 2))) + 0.01 * rng.normal(size=(50, 2))
    Xb, Yb = backend.asarray(X), backend.asarray(Y)
    silent = SilentCholesky(xp)
    W, solver = solve_exact(silent, Xb, Yb)
    assert solver == "qr"  # the partial factor was refused, the next solver taken
    np.testing.assert_allclose(backend.to_numpy(W), np.linalg.lstsq(X, Y)[0], rtol=1e-4)
    with pytest.raises(SolverError, match="not positive definite"):
        solve_exact(silent, Xb, Yb, solver="cholesky")
    assert solve_exact(xp, Xb, Yb)[1] == "cholesky"  # the library's own factor passes


class NaNCholesky(SilentCholesky):
    """PyTorch's CUDA linear algebra, as a namespace: a Cholesky that hands back NaNs for a
    matrix it cannot factor (its CPU one raises), and an SVD that raises for non-finite
    input (as PyTorch's does on every device)."""

    def _partial(self, A):
        if not bool(self._xp.all(self._xp.isfinite(A))):
            return A * float("nan")
        return self._xp.linalg.cholesky(A)

    def _svdvals(self, A):
        if not bool(self._xp.all(self._xp.isfinite(A))):
            raise RuntimeError("linalg.svd: the input matrix contained non-finite values")
        return self._xp.linalg.svdvals(A)

    def __init__(self, xp):
        super().__init__(xp)
        self.linalg.svdvals = self._svdvals


def test_a_factor_of_nans_gives_no_condition_number_and_no_error(backend):
    """A Gram matrix that overflowed (|x| ~ 1e160 in float64) factored to NaNs: κ = inf
    and W NaN (what makes the exact solvers try the next one), not an error from the SVD
    of NaNs."""
    from mlxp.linear_model._exact import cholesky_gram

    if "float64" not in backend.float_dtypes:
        pytest.skip(f"{backend} has no float64")
    A = backend.asarray(np.array([[np.inf, 1.0], [1.0, 2.0]]))
    B = backend.asarray(np.ones((2, 1)))
    with np.errstate(invalid="ignore"):  # NumPy's own warning as it equilibrates inf
        W, condition = cholesky_gram(NaNCholesky(backend.xp), A, B)
    assert np.isinf(float(condition)) and np.isnan(backend.to_numpy(W)).all()


def test_weights_of_1e_320_fit_under_pytorch_cudas_division(monkeypatch, rng):
    """PyTorch's CUDA build divides a tensor by a Python number as a product with its
    reciprocal (``div_true_kernel_cuda``), which is inf for a subnormal number: the
    logistic objective divides its weights by their largest as an array, so weights of
    1e-320 still leave the intercept's closed form. The division stood in on torch:cpu."""
    torch = pytest.importorskip("torch")
    from mlxp.linear_model import LogisticRegression

    divide = torch.Tensor.__truediv__

    def as_on_cuda(tensor, other):
        if isinstance(other, float) and tensor.is_floating_point():
            with np.errstate(over="ignore", divide="ignore"):
                return tensor * float(np.float64(1.0) / np.float64(other))
        return divide(tensor, other)

    monkeypatch.setattr(torch.Tensor, "__truediv__", as_on_cuda)
    X, labels = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    weights = torch.full((40,), 1e-320, dtype=torch.float64)
    model = LogisticRegression(tol=1e-8, max_iter=2000)
    model.fit(torch.asarray(X), torch.asarray(labels), sample_weight=weights)
    frequency = np.bincount(labels) / 40
    expected = np.log(frequency[1] / frequency[0])
    np.testing.assert_allclose(model.intercept_.numpy(), [expected], rtol=1e-5)


# --------------------------------------------------------------------------- bench/gpu_check.sh
ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "gpu_check.sh"


def _gpu_phases() -> list[tuple[str, int, list[str]]]:
    """(name, limit, bench/run.py options) of each phase the script runs on a GPU."""
    text = CHECK.read_text().split('if [ "$DRY" = 0 ]')[1:]  # the GPU branches
    found = []
    for branch in text:
        for line in branch.split("\nelse")[0].splitlines():
            if line.strip().startswith(("phase ", "bench ")):
                words = shlex.split(line.replace("$GPUS", "cupy,torch:cuda:0"))
                found.append((words[1], int(words[2]), words[3:]))
    return found


def test_gpu_check_fits_in_eight_minutes_and_its_bench_options_parse(monkeypatch):
    phases = _gpu_phases()
    names = [name for name, _, _ in phases]
    expected = {"tests-cupy", "tests-cuda", "linear", "logistic", "mlp", "cnn", "bench-graphs"}
    assert expected <= set(names)
    limits = sum(limit for _, limit, _ in phases) + 30 + 25  # + wheels and environment
    assert limits + 3 * (len(phases) + 2) <= 477  # each limit and its kill's 3 s grace,
    # with a few seconds left for the script's own steps between the phases
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import run as bench_run

    for name, _, options in phases:
        if name.startswith("tests-") or options[:2] == ["$PY", "bench/compiled_steps.py"]:
            continue
        args = bench_run.parse_args(options)
        sizes, _ = bench_run.plan(args)
        assert {str(c) for c in args.cases} <= {"cupy:cuda:0", "torch:cuda:0", "numpy:cpu"}
        assert all(sizes.values())


def test_gpu_scripts_are_valid_bash():
    for script in (CHECK, ROOT / "bench" / "gpu_wheels.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        if shutil.which("shellcheck"):
            result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, result.stdout
    usage = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: bench/gpu_check.sh OUTDIR" in usage.stderr
