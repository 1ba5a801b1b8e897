"""The backend selector: set_backend, use_backend, MLXP_BACKEND and where a call computes."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import array_api_compat as aac
import array_api_strict as xps
import numpy as np
import pytest

import mlxp
from mlxp._backend import BACKEND_NAMES, _library, input_placement, make_backend, placement

REPO = Path(__file__).resolve().parents[1]
STRICT_DEVICES = ("CPU_DEVICE", "device1", "device2", "no_float64", "no_x64")


def _strict(values, device="CPU_DEVICE"):
    return xps.asarray(values, device=xps.Device(device))


# --------------------------------------------------------------------------- choosing a backend
def test_no_backend_is_chosen_by_default():
    assert mlxp.get_backend() is None


def test_set_backend_chooses_the_default_device():
    chosen = mlxp.set_backend("numpy")
    assert mlxp.get_backend() is chosen
    assert (chosen.name, chosen.device_name, chosen.device) == ("numpy", "cpu", "cpu")
    assert aac.is_numpy_namespace(chosen.xp)
    assert str(chosen) == "numpy:cpu"


def test_set_backend_with_a_device_name():
    chosen = mlxp.set_backend("array_api_strict", "device1")
    assert mlxp.get_backend() is chosen
    assert chosen.name == "array_api_strict"
    assert chosen.xp is xps
    assert chosen.device == xps.Device("device1")
    assert chosen.device_name == "device1"


def test_set_backend_with_a_library_device_object():
    chosen = mlxp.set_backend("array_api_strict", xps.Device("device2"))
    assert chosen.device_name == "device2"
    assert chosen.device == xps.Device("device2")


@pytest.mark.parametrize(
    "alias, name",
    [
        ("np", "numpy"),
        ("NumPy", "numpy"),
        ("strict", "array_api_strict"),
        ("array-api-strict", "array_api_strict"),
    ],
)
def test_names_have_aliases(alias, name):
    assert mlxp.set_backend(alias).name == name


def test_set_backend_none_resets():
    mlxp.set_backend("array_api_strict", "device1")
    assert mlxp.set_backend(None) is None
    assert mlxp.get_backend() is None


def test_use_backend_restores_the_previous_backend():
    outer = mlxp.set_backend("numpy")
    with mlxp.use_backend("array_api_strict", "device1") as inner:
        assert mlxp.get_backend() is inner
        assert inner.device == xps.Device("device1")
    assert mlxp.get_backend() is outer


def test_use_backend_restores_on_exception():
    with pytest.raises(KeyError), mlxp.use_backend("array_api_strict", "device2"):
        assert mlxp.get_backend().device_name == "device2"
        raise KeyError("boom")
    assert mlxp.get_backend() is None


def test_use_backend_nests():
    with mlxp.use_backend("array_api_strict", "device1") as outer:
        with mlxp.use_backend("numpy") as inner:
            assert mlxp.get_backend() is inner
            with mlxp.use_backend(None) as none:
                assert none is None
                assert mlxp.get_backend() is None
            assert mlxp.get_backend() is inner
        assert mlxp.get_backend() is outer
    assert mlxp.get_backend() is None


def test_use_backend_none_overrides_the_global_backend():
    chosen = mlxp.set_backend("numpy")
    with mlxp.use_backend(None):
        assert mlxp.get_backend() is None
    assert mlxp.get_backend() is chosen


def test_a_failed_use_backend_leaves_the_backend_alone():
    chosen = mlxp.set_backend("numpy")
    with pytest.raises(ValueError), mlxp.use_backend("nonsense"):
        pass  # pragma: no cover
    assert mlxp.get_backend() is chosen


# --------------------------------------------------------------------------- what is available
def test_available_backends_lists_numpy_and_every_strict_device():
    pairs = mlxp.available_backends()
    assert ("numpy", "cpu") in pairs
    for device in STRICT_DEVICES:
        assert ("array_api_strict", device) in pairs
    assert len(set(pairs)) == len(pairs)


AVAILABLE = mlxp.available_backends()


@pytest.mark.parametrize("name, device", AVAILABLE, ids=[f"{n}:{d}" for n, d in AVAILABLE])
def test_every_available_backend_allocates(name, device):
    backend = make_backend(name, device)
    assert (backend.name, backend.device_name) == (name, device)
    x = backend.xp.asarray([1.0, 2.0, 3.0], device=backend.device)
    assert aac.device(x) == backend.device
    np.testing.assert_array_equal(mlxp.to_numpy(x), [1.0, 2.0, 3.0])


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="Unknown backend 'nonsense'") as info:
        mlxp.set_backend("nonsense")
    for name in BACKEND_NAMES:
        assert name in str(info.value)
    assert mlxp.get_backend() is None


def test_a_name_must_be_a_string():
    with pytest.raises(TypeError, match="must be a str"):
        mlxp.set_backend(3)


def test_unknown_device_lists_the_devices():
    with pytest.raises(ValueError, match="no device 'device9'") as info:
        mlxp.set_backend("array_api_strict", "device9")
    for device in STRICT_DEVICES:
        assert device in str(info.value)


def test_numpy_has_no_gpu():
    with pytest.raises(ValueError, match=r"'numpy' has no device 'cuda:0'.*: cpu\."):
        mlxp.set_backend("numpy", "cuda")


@pytest.fixture
def fresh_libraries():
    """Forget which libraries were loaded, before and after the test."""
    _library.cache_clear()
    yield
    _library.cache_clear()


def _fake_cupy(is_available, device_count):
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "13.0.0"
    runtime = types.SimpleNamespace(getDeviceCount=device_count)
    cupy.cuda = types.SimpleNamespace(is_available=is_available, runtime=runtime)
    return cupy


def _broken_driver():
    raise RuntimeError("cudaErrorInsufficientDriver")


@pytest.mark.parametrize(
    "cupy",
    [_fake_cupy(lambda: False, lambda: 0), _fake_cupy(lambda: True, _broken_driver)],
    ids=["no-gpu", "broken-driver"],
)
def test_cupy_without_a_gpu_is_unavailable(cupy, monkeypatch, fresh_libraries):
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with pytest.raises(mlxp.BackendUnavailableError, match="no CUDA device was found"):
        mlxp.set_backend("cupy")
    assert mlxp.get_backend() is None
    assert not any(name == "cupy" for name, _ in mlxp.available_backends())


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_missing_cupy_is_unavailable():
    with pytest.raises(mlxp.BackendUnavailableError, match="cupy is not installed"):
        mlxp.set_backend("cupy")


# --------------------------------------------------------------------------- MLXP_BACKEND
def _python(code, backend_spec=None):
    env = {k: v for k, v in os.environ.items() if k != "MLXP_BACKEND"}
    if backend_spec is not None:
        env["MLXP_BACKEND"] = backend_spec
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRINT_BACKEND = "import mlxp; b = mlxp.get_backend(); print(b, b and b.device)"


def test_mlxp_backend_selects_a_device():
    result = _python(PRINT_BACKEND, "array_api_strict:device1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "array_api_strict:device1",
        "array_api_strict.Device('device1')",
    ]


def test_mlxp_backend_torch():
    pytest.importorskip("torch")
    result = _python(PRINT_BACKEND, "torch")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch:cpu", "cpu"]


def test_empty_mlxp_backend_chooses_nothing():
    result = _python(PRINT_BACKEND, " ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None"]


@pytest.mark.parametrize("spec", ["nonsense", "numpy:tpu"])
def test_bad_mlxp_backend_fails_at_first_use(spec):
    """``import mlxp`` succeeds (so ``mlxp info`` can explain); the first call that asks
    for the backend raises, naming the variable."""
    result = _python("import mlxp; mlxp.get_backend()", spec)
    assert result.returncode != 0
    assert f"ValueError: MLXP_BACKEND={spec!r}" in result.stderr
    if spec != "nonsense":
        return  # the rest is the same for every bad value
    fit = (
        "import numpy as np; from mlxp.linear_model import Ridge; "
        "Ridge().fit(np.ones((3, 1)), [1, 2, 3])"
    )
    result = _python(fit, spec)
    assert result.returncode != 0
    assert f"ValueError: MLXP_BACKEND={spec!r}" in result.stderr
    replaced = "import mlxp; mlxp.set_backend('numpy'); print(mlxp.get_backend())"
    result = _python(replaced, spec)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy:cpu"


def test_mlxp_backend_is_resolved_at_first_use(tmp_path):
    """``MLXP_BACKEND=cupy`` imports nothing at ``import mlxp`` (a CuPy probe there would
    initialise CUDA before a fork, leaving the child none): a stand-in ``cupy`` on the
    path says when it is imported, which is at the first ``get_backend``, once."""
    fake = tmp_path / "cupy"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import sys\nprint('cupy imported', file=sys.stderr)\n"
        "raise ImportError('a stand-in CuPy, for this test')\n"
    )
    code = (
        "import sys, mlxp\n"
        "print('mlxp imported', 'torch' in sys.modules, file=sys.stderr)\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        mlxp.get_backend()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLXP_BACKEND"}
    env.update(MLXP_BACKEND="cupy", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["BackendUnavailableError"] * 2
    assert result.stderr.split("\n")[:2] == ["mlxp imported False", "cupy imported"]
    assert result.stderr.count("cupy imported") == 1


def test_unknown_backend_name_probes_no_library(monkeypatch):
    """A mistyped name is refused from the list of names, without importing every library
    to say which are usable (seconds, and CUDA initialised by a CuPy probe)."""
    monkeypatch.setattr("mlxp._backend._library", None)  # any probe would raise TypeError
    with pytest.raises(ValueError, match=r"Unknown backend 'nmupy'\. Known backends: numpy, "):
        make_backend("nmupy")


def test_first_use_of_mlxp_backend_is_thread_safe(monkeypatch):
    """Threads asking for the backend at once resolve ``MLXP_BACKEND`` once and all get
    it; a ``set_backend`` afterwards replaces it."""
    from mlxp import _backend

    monkeypatch.setenv("MLXP_BACKEND", "array_api_strict:device1")
    calls = []
    parse = _backend.parse_backend_spec

    def slow_parse(spec):  # slow enough for the threads to overlap
        calls.append(spec)
        time.sleep(0.05)
        return parse(spec)

    monkeypatch.setattr(_backend, "parse_backend_spec", slow_parse)
    _backend.from_environment()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda _: mlxp.get_backend(), range(32)))
        assert calls == ["array_api_strict:device1"]
        assert {str(b) for b in seen} == {"array_api_strict:device1"}
        assert mlxp.set_backend("numpy") is mlxp.get_backend()
    finally:
        monkeypatch.delenv("MLXP_BACKEND")
        _backend.from_environment()
    assert mlxp.get_backend() is None


def test_listing_backends_leaves_jax_configuration_alone():
    """JAX's x64 switch is the user's: listing backends does not flip it, and without it
    mlxp computes on JAX in float32, as JAX does."""
    pytest.importorskip("jax")
    code = (
        "import jax, numpy as np, mlxp\n"
        "from mlxp.linear_model import LinearRegression\n"
        "mlxp.available_backends()\n"
        "print(jax.config.jax_enable_x64)\n"
        "X = np.random.default_rng(0).normal(size=(200, 3)); y = X @ [1.0, 2.0, 3.0] + 0.5\n"
        "with mlxp.use_backend('jax'):\n"
        "    model = LinearRegression().fit(X, y)\n"
        "print(model.coef_.dtype, np.abs(mlxp.to_numpy(model.coef_) - [1, 2, 3]).max() < 1e-4)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLXP_BACKEND", "JAX_ENABLE_X64")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "float32", "True"]


def test_backend_discovery_is_thread_safe():
    """One thread imports the optional libraries (listing backends) while another predicts
    on array-api-strict arrays: the second never meets a half-imported library."""
    pytest.importorskip("torch")
    code = (
        "import sys, threading, time, numpy as np, array_api_strict as xps, mlxp\n"
        "from mlxp.linear_model import LinearRegression\n"
        "X = np.random.default_rng(0).normal(size=(50, 3))\n"
        "model = LinearRegression().fit(X, X @ [1.0, 2.0, 3.0])\n"
        "Xs, errors, done = xps.asarray(X), [], threading.Event()\n"
        "def predict():\n"
        "    while 'torch' not in sys.modules:  # start while torch is half imported\n"
        "        time.sleep(0)\n"
        "    while not done.is_set():\n"
        "        try:\n"
        "            model.predict(xps.asarray(np.asarray(Xs) + 0.0))\n"
        "        except Exception as exc:\n"
        "            errors.append(repr(exc)); return\n"
        "worker = threading.Thread(target=predict); worker.start()\n"
        "mlxp.available_backends(); done.set(); worker.join()\n"
        "print(errors or 'ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLXP_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_loads_no_optional_library():
    code = "import sys, mlxp; print(sorted({'torch', 'jax', 'cupy'} & set(sys.modules)))"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- where a call computes
def test_non_arrays_compute_with_numpy():
    xp, device = input_placement(X=[[1.0, 2.0]], y=None, alpha=np.float64(0.5))
    assert aac.is_numpy_namespace(xp)
    assert device == "cpu"
    place = placement(X=[[1.0, 2.0]])
    assert aac.is_numpy_namespace(place.xp)
    assert aac.is_numpy_namespace(place.out_xp)


def test_arrays_compute_where_they_live():
    X, y = _strict([[1.0, 2.0]], "device1"), _strict([3.0], "device1")
    place = placement(X=X, y=y, sample_weight=None, alpha=np.float32(1.0))
    assert place.xp is place.out_xp is xps
    assert place.device == place.out_device == xps.Device("device1")
    assert place.to_compute(X) is X
    assert place.to_caller(y) is y
    assert place.to_compute(None) is None


def test_two_libraries_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="set_backend") as info:
        placement(X_train=np.ones(3), sample_weight=torch.ones(3))
    for word in ("X_train", "sample_weight", "numpy", "torch"):
        assert word in str(info.value)


def test_two_devices_are_refused():
    with pytest.raises(ValueError, match="set_backend") as info:
        input_placement(X_train=_strict([1.0]), sample_weight=_strict([1.0], "device1"))
    for word in ("X_train", "sample_weight", "CPU_DEVICE", "device1"):
        assert word in str(info.value)


def test_mixed_inputs_are_accepted_once_a_backend_is_chosen():
    X, y = _strict([[1.0, 2.0]], "device1"), np.array([3.0])
    mlxp.set_backend("array_api_strict", "device2")
    place = placement(X=X, y=y)
    assert place.xp is xps and place.device == xps.Device("device2")
    X_c, y_c = place.to_compute(X), place.to_compute(y)
    assert aac.device(X_c) == aac.device(y_c) == xps.Device("device2")
    result = place.to_caller(X_c[0, :] * y_c)  # back where the first input, X, lives
    assert aac.array_namespace(result) is xps
    assert aac.device(result) == xps.Device("device1")
    np.testing.assert_array_equal(mlxp.to_numpy(result), [3.0, 6.0])


def test_results_return_to_the_first_input():
    torch = pytest.importorskip("torch")
    y, X = torch.tensor([1.0, 2.0], dtype=torch.float64), np.array([3.0, 4.0])
    with mlxp.use_backend("array_api_strict", "device1"):
        place = placement(y=y, X=X)
    result = place.to_caller(place.to_compute(y) + place.to_compute(X))
    assert isinstance(result, torch.Tensor)
    assert result.dtype == torch.float64
    np.testing.assert_array_equal(result.numpy(), [4.0, 6.0])


def test_jax_keeps_float64():
    pytest.importorskip("jax")
    jax_backend = make_backend("jax")
    x = jax_backend.asarray(np.array([1.0, 1.0 + 2.0**-40]))
    assert x.dtype == jax_backend.xp.float64
    assert float(x[1] - x[0]) == 2.0**-40
