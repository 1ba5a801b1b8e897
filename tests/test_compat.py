"""mlxp._compat, what the Array API standard lacks, against NumPy references on every backend."""

from __future__ import annotations

import contextlib
import types

import array_api_compat as aac
import array_api_strict as xps
import numpy as np
import pytest

import mlxp
import mlxp._compat as compat
from mlxp._backend import make_backend
from mlxp._compat import (
    _SCOPED_BUFFER,
    Generator,
    _contiguous_run,
    _supports,
    _ufunc_buffer,
    check_random_state,
    default_float,
    from_host,
    index_dtype,
    move,
    scatter_add,
    slice_add,
    synchronize,
    take_rows,
    to_numpy,
)
from tests.conftest import Unrecognised, rtol_for


def _indexing_dtype(backend):
    return backend.xp.__array_namespace_info__().default_dtypes(device=backend.device)["indexing"]


def _assert_on(x, backend, dtype=None):
    assert aac.array_namespace(x) is backend.xp
    assert aac.device(x) == backend.device
    if dtype is not None:
        assert x.dtype == dtype


# --------------------------------------------------------------------------- Generator
def test_same_seed_same_numbers_on_every_backend(backend, dtype):
    gen, ref = Generator(42), np.random.default_rng(42)
    kw = {"xp": backend.xp, "device": backend.device, "dtype": backend.dtype(dtype)}
    normal = gen.normal((3, 4), loc=1.5, scale=2.0, **kw)
    uniform = gen.uniform((5,), low=-2.0, high=3.0, **kw)
    perm = gen.permutation(7, xp=backend.xp, device=backend.device)
    ints = gen.integers(2, 9, (2, 3), xp=backend.xp, device=backend.device)
    # Drawn in float64 on the host, then rounded once to the requested dtype.
    np.testing.assert_array_equal(to_numpy(normal), ref.normal(1.5, 2.0, (3, 4)).astype(dtype))
    np.testing.assert_array_equal(to_numpy(uniform), ref.uniform(-2.0, 3.0, 5).astype(dtype))
    np.testing.assert_array_equal(to_numpy(perm), ref.permutation(7))
    np.testing.assert_array_equal(to_numpy(ints), ref.integers(2, 9, (2, 3)))
    assert to_numpy(normal).dtype == to_numpy(uniform).dtype == np.dtype(dtype)


def test_draws_have_the_requested_shape_dtype_and_device(backend, dtype):
    gen = Generator(0)
    for draw in (gen.normal, gen.uniform):
        x = draw((2, 3), xp=backend.xp, device=backend.device, dtype=backend.dtype(dtype))
        assert tuple(x.shape) == (2, 3)
        _assert_on(x, backend, backend.dtype(dtype))


def test_draws_default_to_the_default_float(backend):
    x = Generator(0).normal((4,), xp=backend.xp, device=backend.device)
    _assert_on(x, backend, default_float(backend.xp, backend.device))


def test_uniform_stays_in_range(backend):
    x = to_numpy(Generator(1).uniform((1000,), xp=backend.xp, device=backend.device, low=3, high=4))
    assert x.min() >= 3.0 and x.max() < 4.0
    assert x.max() - x.min() > 0.9


def test_permutation_is_a_permutation(backend):
    perm = Generator(3).permutation(50, xp=backend.xp, device=backend.device)
    _assert_on(perm, backend, _indexing_dtype(backend))
    assert tuple(perm.shape) == (50,)
    np.testing.assert_array_equal(np.sort(to_numpy(perm)), np.arange(50))
    assert not np.array_equal(to_numpy(perm), np.arange(50))


def test_integers_stay_in_range(backend):
    ints = Generator(4).integers(-3, 5, (200,), xp=backend.xp, device=backend.device)
    _assert_on(ints, backend, _indexing_dtype(backend))
    np.testing.assert_array_equal(np.unique(to_numpy(ints)), np.arange(-3, 5))


def test_different_seeds_differ():
    a = to_numpy(Generator(0).normal((5,), xp=np))
    b = to_numpy(Generator(1).normal((5,), xp=np))
    assert not np.any(a == b)
    c = to_numpy(Generator(None).normal((5,), xp=np))
    d = to_numpy(Generator(None).normal((5,), xp=np))
    assert not np.any(c == d)


def test_generator_shares_a_numpy_generator():
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    gen = Generator(rng)
    np.testing.assert_array_equal(gen.normal((3,), xp=np), ref.normal(size=3))
    np.testing.assert_array_equal(rng.normal(size=3), ref.normal(size=3))  # one shared stream


def test_check_random_state_accepts_seeds():
    ref = Generator(7).normal((4,), xp=np)
    for seed in (7, np.int64(7)):
        np.testing.assert_array_equal(check_random_state(seed).normal((4,), xp=np), ref)
    assert isinstance(check_random_state(None), Generator)
    gen = Generator(0)
    assert check_random_state(gen) is gen
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(check_random_state(rng).normal((4,), xp=np), ref)
    legacy = check_random_state(np.random.RandomState(0))
    again = check_random_state(np.random.RandomState(0))
    np.testing.assert_array_equal(legacy.normal((3,), xp=np), again.normal((3,), xp=np))


@pytest.mark.parametrize("seed", ["0", True, False, 1.5, [1, 2]], ids=repr)
def test_check_random_state_rejects(seed):
    with pytest.raises(ValueError, match="random_state must be"):
        check_random_state(seed)


# --------------------------------------------------------------------------- to_numpy and move
def test_round_trip_preserves_values_and_dtype(backend, dtype, rng):
    a = rng.standard_normal((3, 2)).astype(dtype)
    x = backend.asarray(a)
    _assert_on(x, backend, backend.dtype(dtype))
    host = to_numpy(x)
    assert isinstance(host, np.ndarray)
    assert host.dtype == a.dtype
    np.testing.assert_array_equal(host, a)


@pytest.mark.parametrize("int_dtype", ["int32", "int8", "bool"])
def test_round_trip_of_small_integers_and_booleans(backend, int_dtype):
    a = np.array([[0, 1, 0], [1, 1, 0]], dtype=int_dtype)
    x = backend.asarray(a)
    assert to_numpy(x).dtype == a.dtype
    np.testing.assert_array_equal(to_numpy(x), a)


def test_to_numpy_of_scalars_and_lists():
    assert to_numpy(2.5) == np.asarray(2.5)
    np.testing.assert_array_equal(to_numpy([1, 2]), np.array([1, 2]))


def test_to_numpy_of_bfloat16_gives_float32():
    """PyTorch's bfloat16 (a mixed-precision model's outputs, or labels) has no NumPy
    dtype: it comes to the host as float32, which holds each of its values exactly (its
    conversion raised "unsupported ScalarType BFloat16")."""
    torch = pytest.importorskip("torch")
    values = torch.tensor([1.5, -2.0, 3.140625, 1e30], dtype=torch.bfloat16)
    host = to_numpy(values)
    assert host.dtype == np.float32
    np.testing.assert_array_equal(host, values.float().numpy())


def test_to_numpy_of_a_torch_tensor_that_requires_grad():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, dtype=torch.float64, requires_grad=True) * 2
    np.testing.assert_array_equal(to_numpy(t), [2.0, 2.0, 2.0])


def test_from_host_matches_asarray_on_the_device(backend, dtype, rng):
    a = rng.standard_normal((2, 3))
    for value, cast in ((a, backend.dtype(dtype)), (a.astype(dtype), None), (0.25, None)):
        x = from_host(value, backend.xp, device=backend.device, dtype=cast)
        ref = backend.xp.asarray(value, dtype=cast, device=backend.device)
        _assert_on(x, backend, ref.dtype)
        assert tuple(x.shape) == tuple(ref.shape)
        np.testing.assert_array_equal(to_numpy(x), to_numpy(ref))
    ints = from_host(
        np.arange(4), backend.xp, device=backend.device, dtype=_indexing_dtype(backend)
    )
    _assert_on(ints, backend, _indexing_dtype(backend))
    if backend.name == "jax":  # a copy, as jax.numpy.asarray makes (device_put would share
        big = rng.standard_normal((64, 256)).astype(dtype)  # an array this big on a CPU)
        host = big.copy()
        x = from_host(host, backend.xp, device=backend.device)
        host[...] = 0
        np.testing.assert_array_equal(to_numpy(x), big)


def test_move_to_the_same_place_does_not_copy(backend, rng):
    x = backend.asarray(rng.standard_normal(4))
    assert move(x, backend.xp, backend.device) is x
    assert backend.backend.asarray(x) is x


def test_move_between_backends(backend, rng):
    a = rng.standard_normal((2, 3)).astype(backend.float_dtypes[-1])
    x = backend.asarray(a)
    there = move(x, xps, xps.Device("device1"))
    assert aac.array_namespace(there) is xps and there.device == xps.Device("device1")
    host = move(x, aac.array_namespace(np.ones(1)), "cpu")
    assert isinstance(host, np.ndarray)
    back = move(there, backend.xp, backend.device)
    _assert_on(back, backend, x.dtype)
    np.testing.assert_array_equal(to_numpy(back), a)
    np.testing.assert_array_equal(host, a)


@pytest.mark.parametrize("source", ["numpy", "array_api_strict"])
@pytest.mark.parametrize(
    "target, wide, narrow",
    [
        ("no_float64", "float64", "float32"),
        ("no_x64", "float64", "float32"),
        ("no_x64", "int64", "int32"),
        ("no_float64", "int64", "int64"),
        ("device2", "float64", "float64"),
    ],
)
def test_move_narrows_what_the_device_lacks(source, target, wide, narrow):
    a = np.array([1.5, -2.0, 3.0]).astype(wide)
    x = a if source == "numpy" else xps.asarray(a)
    moved = move(x, xps, xps.Device(target))
    assert moved.device == xps.Device(target)
    assert moved.dtype == getattr(xps, narrow)
    np.testing.assert_array_equal(to_numpy(moved), a.astype(narrow))


# --------------------------------------------------------------------------- scatter_add
FAST_PATHS = (
    aac.is_numpy_namespace,
    aac.is_torch_namespace,
    aac.is_jax_namespace,
    aac.is_cupy_namespace,
)
INDEX = np.array([3, 0, 3, 3, 5, 0, 1])  # repeated indices; slots 2, 4 and 6 stay empty


def _scatter_case(backend, dtype, tail, rng):
    values = rng.standard_normal((len(INDEX), *tail)).astype(dtype)
    expected = np.zeros((7, *tail), dtype=dtype)
    np.add.at(expected, INDEX, values)
    return backend.asarray(INDEX), backend.asarray(values), expected


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
@pytest.mark.parametrize("tail", [(), (2,), (2, 3)], ids=["1d", "2d", "3d"])
def test_scatter_add_matches_np_add_at(backend, dtype, tail, fallback, rng):
    index, values, expected = _scatter_case(backend, dtype, tail, rng)
    assert index.dtype == _indexing_dtype(backend)
    xp = Unrecognised(backend.xp) if fallback else None
    if fallback:
        assert not any(is_library(xp) for is_library in FAST_PATHS)
    out = scatter_add(7, index, values, xp=xp)
    _assert_on(out, backend, values.dtype)
    assert tuple(out.shape) == expected.shape
    np.testing.assert_allclose(to_numpy(out), expected, rtol=rtol_for(dtype), atol=1e-6)
    assert not np.any(to_numpy(out)[[2, 4, 6]])


# --------------------------------------------------------------------------- slice_add
SLICE_SHAPE = (2, 7, 6)
SLICE_REGIONS = [  # overlapping, strided, and one reaching the last element
    (slice(None), slice(0, 5, 2), slice(1, 4)),
    (slice(None), slice(1, 6, 2), slice(0, 6, 3)),
    (slice(0, 1), slice(2, 7), slice(5, 6)),
    (slice(None), slice(0, 5, 2), slice(1, 4)),  # the first region again: sums
]


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
def test_slice_add_matches_in_place_numpy(backend, dtype, fallback, rng):
    expected = np.zeros(SLICE_SHAPE, dtype=dtype)
    parts = []
    for region in SLICE_REGIONS:
        part = rng.standard_normal(expected[region].shape).astype(dtype)
        expected[region] += part
        parts.append(part)
    xp = Unrecognised(backend.xp) if fallback else None
    out = slice_add(SLICE_SHAPE, SLICE_REGIONS, [backend.asarray(p) for p in parts], xp=xp)
    _assert_on(out, backend, backend.dtype(dtype))
    assert tuple(out.shape) == SLICE_SHAPE
    np.testing.assert_allclose(to_numpy(out), expected, rtol=rtol_for(dtype), atol=1e-6)
    assert not np.any(to_numpy(out)[:, :, :][expected == 0])


@pytest.mark.skipif(not _SCOPED_BUFFER, reason="NumPy < 2 does not scope setbufsize")
@pytest.mark.parametrize("run", [64, 588, 1600, 8192])
def test_numpy_slice_add_buffers_by_the_contiguous_run(run, rng, monkeypatch):
    """Inside the adds NumPy's ufunc buffer is the regions' contiguous run (a multiple of
    16, 128 to 8191 elements; else NumPy's own), and it is restored after; the sums are
    those of plain in-place adds."""
    default = np.getbufsize()
    view = np.zeros((3, run + 5), np.float32)[:, 1 : run + 1]
    assert _contiguous_run(view) == run and _contiguous_run(view[:, ::2]) == 1
    with _ufunc_buffer(view, np.ones((3, run), np.float32)):
        assert np.getbufsize() == (run - run % 16 if 128 <= run < default else default)
    assert np.getbufsize() == default
    regions = [(slice(None), slice(i, i + run)) for i in range(3)]
    parts = [rng.standard_normal((4, run)).astype(np.float32) for _ in regions]
    expected = np.zeros((4, run + 2), np.float32)
    for region, part in zip(regions, parts, strict=True):
        expected[region] += part
    seen = []
    with monkeypatch.context() as patch:  # slice_add asks for the buffer of that run
        patch.setattr(compat, "_ufunc_buffer", _spy(seen, _ufunc_buffer))
        np.testing.assert_array_equal(slice_add(expected.shape, regions, parts), expected)
    assert seen == [(run - run % 16 if 128 <= run < default else default, run)]
    assert np.getbufsize() == default


def _spy(seen, buffer):
    """``_ufunc_buffer`` recording (the buffer size inside, the run of its first view)."""

    @contextlib.contextmanager
    def spy(*views):
        with buffer(*views):
            seen.append((np.getbufsize(), _contiguous_run(views[0])))
            yield

    return spy


# --------------------------------------------------------------------------- synchronize
def test_synchronize(backend):
    x = backend.asarray(np.ones(3, dtype=np.float32)) * 2
    assert synchronize(x) is None
    assert mlxp.synchronize(None) is None
    np.testing.assert_array_equal(to_numpy(x), [2.0, 2.0, 2.0])


# --------------------------------------------------------------------------- default_float
@pytest.mark.parametrize(
    "name, device, expected",
    [
        ("numpy", "cpu", "float64"),
        ("torch", "cpu", "float32"),
        ("jax", "cpu", "float64"),
        ("array_api_strict", "CPU_DEVICE", "float64"),
        ("array_api_strict", "device1", "float64"),
        ("array_api_strict", "device2", "float32"),
        ("array_api_strict", "no_float64", "float32"),
        ("array_api_strict", "no_x64", "float32"),
    ],
)
def test_default_float(name, device, expected):
    if name in ("torch", "jax"):
        pytest.importorskip(name)
    backend = make_backend(name, device)
    assert default_float(backend.xp, backend.device) == getattr(backend.xp, expected)


def test_default_float_follows_torch_default_dtype():
    torch = pytest.importorskip("torch")
    backend = make_backend("torch")
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert default_float(backend.xp, backend.device) == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_default_float_of_a_namespace_without_devices():
    class Info:
        def default_dtypes(self):  # an older info object: no device argument
            return {"real floating": "float16"}

    xp = types.SimpleNamespace(__array_namespace_info__=Info)
    assert default_float(xp, "anywhere") == "float16"


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
def test_take_rows_matches_numpy_fancy_indexing(backend, fallback, rng):
    X = rng.normal(size=(9, 3, 2)).astype(np.float32)
    rows = np.array([8, 0, 3, 3, 5])
    x = backend.asarray(X)
    dtype = index_dtype(backend.xp, backend.device)
    index = backend.xp.asarray(rows, dtype=dtype, device=backend.device)
    xp = Unrecognised(backend.xp) if fallback else None
    out = take_rows(x, index, xp=xp)
    assert aac.array_namespace(out) is aac.array_namespace(x)
    assert aac.device(out) == aac.device(x)
    np.testing.assert_array_equal(to_numpy(out), X[rows])


def test_jax_dtypes_follow_its_x64_mode():
    """JAX's answers are kept, per x64 mode: switching the mode changes them."""
    jax = pytest.importorskip("jax")
    backend = make_backend("jax", "cpu")
    previous = jax.config.jax_enable_x64
    try:
        for x64 in (True, False, True):
            jax.config.update("jax_enable_x64", x64)
            assert _supports(backend.xp, backend.device, "float64") is x64
            assert default_float(backend.xp, backend.device) == getattr(
                backend.xp, "float64" if x64 else "float32"
            )
    finally:
        jax.config.update("jax_enable_x64", previous)
