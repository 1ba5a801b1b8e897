"""Model files: byte-exact round trips, safetensors interoperability, strict validation,
atomic writes, and loading on every backend without running stored code."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys

import array_api_compat as aac
import numpy as np
import pytest

import mlxp
import mlxp.io
from mlxp.io import FORMAT, read_arrays, register_model, write_arrays


@register_model(name="tests.test_io.Dummy")
class Dummy:
    """The smallest model: a config and a dict of arrays."""

    def __init__(self, hidden: int, arrays: dict) -> None:
        self.hidden = hidden
        self.arrays = arrays

    def _get_model_state(self):
        return {"hidden": self.hidden, "activation": "relu"}, dict(self.arrays)

    @classmethod
    def _from_model_state(cls, config, arrays):
        assert config["class"] == "tests.test_io.Dummy" and config["activation"] == "relu"
        return cls(config["hidden"], arrays)


def _dummy_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W": rng.normal(size=(3, 4)).astype(np.float32),
        "b": rng.normal(size=(4,)),
        "steps": np.array(7, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def _raw(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    """A file in the safetensors layout from a header given as-is (no validation)."""
    text = json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


def _text(header: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header


ARRAYS = {
    "bool": np.array([[True, False], [False, True]]),
    "uint8": np.arange(7, dtype=np.uint8),
    "int8": np.arange(-3, 3, dtype=np.int8),
    "int16": np.arange(-300, 300, 7, dtype=np.int16),
    "uint16": np.arange(5, dtype=np.uint16) * 9000,
    "float16": np.linspace(-2, 2, 9, dtype=np.float16),
    "int32": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
    "uint32": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
    "float32": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "float64": np.array([np.pi, -0.0, np.inf, np.nan, 1e-310]),
    "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "uint64": np.array([2**64 - 1], dtype=np.uint64),
    "complex64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "scalar": np.array(2.5),
    "scalar_int": np.array(-4, dtype=np.int32),
    "empty": np.zeros((0,), dtype=np.float32),
    "empty_2d": np.zeros((2, 0, 3), dtype=np.int64),
    "transposed": np.arange(12.0).reshape(3, 4).T[::2],
    "big_endian": np.arange(5, dtype=">f8") / 3,
}


def _assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, a in expected.items():
        b = np.asarray(got[name])
        assert b.shape == a.shape and b.dtype == a.dtype.newbyteorder("="), name
        assert b.tobytes() == a.astype(a.dtype.newbyteorder("=")).tobytes(), name


# --------------------------------------------------------------------------- the format
def test_round_trip_is_byte_exact(tmp_path):
    path = tmp_path / "a.safetensors"
    write_arrays(path, ARRAYS, {"note": "hello", "unicode": "π≈3.14"})
    arrays, meta = read_arrays(path)
    _assert_same(arrays, ARRAYS)
    assert meta["note"] == "hello" and meta["unicode"] == "π≈3.14"
    assert len(meta["mlxp.sha256"]) == 64
    for a in arrays.values():
        assert a.flags.writeable and a.flags.c_contiguous and a.flags.aligned


def test_layout_follows_the_spec(tmp_path):
    path = tmp_path / "a.safetensors"
    write_arrays(path, ARRAYS)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert raw[8 : 8 + n].decode().rstrip(" ").endswith("}")
    entries = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    pos = 0
    for (begin, end), name in entries:
        assert begin == pos and begin % ARRAYS[name].dtype.itemsize == 0  # contiguous, aligned
        pos = end
    assert 8 + n + pos == len(raw)


def test_official_reader_reads_our_files(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    safe_open = pytest.importorskip("safetensors").safe_open
    path = tmp_path / "a.safetensors"
    write_arrays(path, ARRAYS, {"note": "hello"})
    _assert_same(st.load_file(path), ARRAYS)
    with safe_open(path, framework="np") as f:
        assert f.metadata() == read_arrays(path)[1]


def test_we_read_official_files(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "a.safetensors"
    expected = {k: np.ascontiguousarray(v, v.dtype.newbyteorder("=")) for k, v in ARRAYS.items()}
    st.save_file(expected, path, metadata={"format": "np", "note": "x"})
    arrays, meta = read_arrays(path)
    _assert_same(arrays, expected)
    assert meta == {"format": "np", "note": "x"}
    st.save_file(expected, path, metadata={"sha256": "another tool's own entry"})
    assert read_arrays(path)[1] == {"sha256": "another tool's own entry"}


def test_pytorch_reads_model_files(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "m.safetensors"
    mlxp.save(Dummy(3, _dummy_arrays()), path)
    tensors = st_torch.load_file(path)
    for name, a in _dummy_arrays().items():
        assert isinstance(tensors[name], torch.Tensor)
        np.testing.assert_array_equal(tensors[name].numpy(), a)
        assert tensors[name].numpy().dtype == a.dtype


def test_bfloat16_is_written_as_bf16_and_read_as_float32(tmp_path):
    """bfloat16 arrays (PyTorch's, JAX's, ml_dtypes') are written as safetensors' BF16, which
    PyTorch's safetensors reader reads back bit for bit; read_arrays widens BF16, its own or
    that reader's, to float32 exactly (NumPy has no bfloat16)."""
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    special = [1.0, -2.5, 3.140625, 1e-38, 3e38, float("inf"), float("nan"), -0.0]
    values = torch.tensor(special).to(torch.bfloat16)
    widened = values.float().numpy()
    arrays = {"torch": values.reshape(2, 4)}
    with contextlib.suppress(ImportError):  # the same bits (NaN's too) as NumPy and JAX arrays
        import ml_dtypes

        arrays["ml_dtypes"] = values.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        import jax.numpy as jnp

        arrays["jax"] = jnp.asarray(arrays["ml_dtypes"])
    path = tmp_path / "bf16.safetensors"
    write_arrays(path, arrays)
    theirs, (ours, _) = st_torch.load_file(path), read_arrays(path)
    for name, a in arrays.items():
        assert theirs[name].dtype == torch.bfloat16 and theirs[name].shape == a.shape
        assert torch.equal(theirs[name].flatten().view(torch.int16), values.view(torch.int16))
        assert ours[name].dtype == np.float32 and ours[name].shape == a.shape
        assert ours[name].tobytes() == widened.tobytes(), name
    st_torch.save_file({"w": values}, path)
    w = read_arrays(path)[0]["w"]
    assert w.dtype == np.float32 and w.tobytes() == widened.tobytes()


def test_write_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "a.safetensors"
    with pytest.raises(TypeError, match="dtype object"):
        write_arrays(path, {"x": np.array([None])})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        write_arrays(path, {}, {"n": 1})
    with pytest.raises(ValueError, match="reserved"):
        write_arrays(path, {}, {"mlxp.sha256": "0"})
    with pytest.raises(ValueError, match="Invalid array name"):
        write_arrays(path, {"__metadata__": np.zeros(1)})
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- damaged files
@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    mlxp.save(Dummy(3, _dummy_arrays()), path)
    return path


def test_truncated_files_are_refused(model_file, tmp_path):
    raw = model_file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for cut in (0, 3, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 5, len(raw) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="truncated file"):
            read_arrays(path)
        with pytest.raises(ValueError, match="truncated file"):
            mlxp.load(path)


def test_every_flipped_data_byte_is_detected(model_file):
    raw = bytearray(model_file.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    assert start < len(raw)
    for i in range(start, len(raw)):
        raw[i] ^= 0x01
        model_file.write_bytes(raw)
        with pytest.raises(ValueError, match="checksum mismatch"):
            mlxp.load(model_file)
        raw[i] ^= 0x01


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_flipped_header_byte_is_detected(model_file, mask):
    raw = bytearray(model_file.read_bytes())
    for i in range(8 + int.from_bytes(raw[:8], "little")):
        raw[i] ^= mask
        model_file.write_bytes(raw)
        with pytest.raises(ValueError, match=r"not a valid|not an mlxp model file"):
            mlxp.load(model_file)
        raw[i] ^= mask


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_raw({"a": F32}, bytes(8), length=10**6), "header length 1000000 runs past the end"),
        (_raw({"a": F32}, bytes(8), length=2**64 - 1), "runs past the end"),
        (
            _raw({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, bytes(12)),
            "starts at data byte 4, not 8 \\(overlap or gap\\)",
        ),
        (_raw({"a": {**F32, "data_offsets": [4, 12]}}, bytes(12)), "overlap or gap"),
        (_raw({"a": {**F32, "dtype": "F8_E4M3"}}, bytes(8)), "unsupported dtype 'F8_E4M3'"),
        (_raw({"a": {**F32, "dtype": "BF16"}}, bytes(8)), "spans 8 bytes, not 4"),
        (_raw({"a": {**F32, "dtype": "X99"}}, bytes(8)), "unsupported dtype 'X99'"),
        (_raw({"a": {**F32, "shape": [3]}}, bytes(8)), "spans 8 bytes, not 12"),
        (_raw({"a": {**F32, "shape": [-2]}}, bytes(8)), "invalid shape"),
        (_raw({"a": {**F32, "shape": [2.0]}}, bytes(8)), "invalid shape"),
        (_raw({"a": {**F32, "shape": [0] * 70, "data_offsets": [0, 0]}}, b""), "invalid shape"),
        (_raw({"a": {**F32, "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, b""), "invalid"),
        (_raw({"a": {**F32, "data_offsets": [8, 0]}}, bytes(8)), "invalid data_offsets"),
        (_raw({"a": {**F32, "data_offsets": [0]}}, bytes(8)), "invalid data_offsets"),
        (_raw({"a": {**F32, "extra": 1}}, bytes(8)), "exactly the fields"),
        (_raw({"a": F32}, bytes(9)), "1 unexpected bytes after the last tensor"),
        (_raw({"a": F32, "__metadata__": {"k": 1}}, bytes(8)), "map of strings"),
        (_raw({"a": {**F32, "dtype": "BOOL", "data_offsets": [0, 2]}}, b"\x01\x02"), "0 and 1"),
        (_text(b"[]"), "does not start with"),
        (_text(b' {"a": 1}'), "does not start with"),
        (_text(b'{"a"'), "not valid UTF-8 JSON"),
        (_text(b"{\xff}"), "not valid UTF-8 JSON"),
        (_text(b'{"a":1,"a":1}'), "duplicate keys"),
        (_text(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nests too deeply"),
        (b"PK\x03\x04 a zip, or a pickle", "runs past the end"),
        (b"\x80\x04\x95", "less than the 8-byte header length"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_files_are_refused(tmp_path, raw, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        read_arrays(path)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        mlxp.load(path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_endless_files_are_refused_without_reading_them():
    """A device that never ends (or a pipe) is refused from its metadata, not read."""
    with pytest.raises(ValueError, match="not a regular file"):
        mlxp.load("/dev/zero")


def test_plain_safetensors_files_are_not_models(tmp_path):
    path = tmp_path / "plain.safetensors"
    write_arrays(path, {"a": np.zeros(2)}, {"format": "pt"})
    with pytest.raises(ValueError, match="not an mlxp model file"):
        mlxp.load(path)
    st = pytest.importorskip("safetensors.numpy")
    st.save_file({"a": np.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an mlxp model file"):
        mlxp.load(path)
    # mlxp metadata written by another tool, without the checksum, is refused too
    st.save_file({"a": np.zeros(2)}, path, metadata={"format": FORMAT, "mlxp": "{}"})
    with pytest.raises(ValueError, match="no checksum"):
        mlxp.load(path)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"class": "os.system"}', "class 'os.system', which is not registered"),
        ('{"class": "mlxp_no_such_module.Payload"}', "not registered"),
        ('{"class": "collections.OrderedDict"}', "not registered"),
        ('{"hidden": 3}', "names no model class"),
        ('["os.system"]', "names no model class"),
        ("{not json", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_loading_runs_no_code(tmp_path, config, message):
    path = tmp_path / "evil.safetensors"
    write_arrays(path, {"a": np.zeros(2)}, {"format": FORMAT, "mlxp": config})
    modules = set(sys.modules)
    with pytest.raises(ValueError, match=message):
        mlxp.load(path)
    assert set(sys.modules) == modules  # nothing was imported
    assert "mlxp_no_such_module" not in sys.modules


def test_registry_rules(tmp_path):
    class Unregistered(Dummy):
        pass

    with pytest.raises(TypeError, match="not a registered model class"):
        mlxp.save(Unregistered(1, {}), tmp_path / "u.safetensors")
    with pytest.raises(TypeError, match="lacks _get_model_state"):
        register_model(type("NoState", (), {}))
    with pytest.raises(ValueError, match="already registered"):
        register_model(Unregistered, name="tests.test_io.Dummy")
    assert register_model(Dummy, name="tests.test_io.Dummy") is Dummy  # idempotent
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- atomic writes
class _FailingFile:
    """A file whose third write fails: after the header, in the middle of the data."""

    def __init__(self, f) -> None:
        self.f, self.calls = f, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data):
        self.calls += 1
        if self.calls == 3:
            raise OSError("disk full")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _boom(*args, **kwargs):
    raise OSError("disk full")


@pytest.mark.parametrize("failure", ["write", "fsync", "replace"])
def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "m.safetensors"
    mlxp.save(Dummy(1, {"a": np.zeros(3)}), path)
    before = path.read_bytes()
    if failure == "write":
        opened = []

        def failing_open(*args, **kwargs):
            opened.append(args[0])
            return _FailingFile(builtins.open(*args, **kwargs))

        monkeypatch.setattr(mlxp.io, "open", failing_open, raising=False)
    else:
        monkeypatch.setattr(os, failure, _boom)
    with pytest.raises(OSError, match="disk full"):
        mlxp.save(Dummy(2, _dummy_arrays()), path)
    with pytest.raises(OSError, match="disk full"):
        mlxp.save(Dummy(2, _dummy_arrays()), tmp_path / "new.safetensors")
    monkeypatch.undo()
    if failure == "write":
        assert all(os.path.dirname(p) == str(tmp_path) for p in opened)  # temp file beside
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert mlxp.load(path).hidden == 1


def test_save_overwrites(tmp_path):
    path = tmp_path / "m.safetensors"
    mlxp.save(Dummy(1, {"a": np.zeros(3)}), path)
    mlxp.save(Dummy(2, {"a": np.ones(2)}), str(path))
    model = mlxp.load(str(path))
    assert model.hidden == 2 and np.array_equal(model.arrays["a"], np.ones(2))
    assert os.listdir(tmp_path) == ["m.safetensors"]


# --------------------------------------------------------------------------- backends
def _expected_dtype(backend, dtype: np.dtype) -> str:
    info = backend.xp.__array_namespace_info__()
    try:
        supported = info.dtypes(device=backend.device)
    except TypeError:
        supported = info.dtypes()
    narrower = {"float64": "float32", "int64": "int32"}
    return dtype.name if dtype.name in supported else narrower[dtype.name]


@pytest.mark.parametrize("how", ["object", "spec", "active"])
def test_load_on_every_backend(backend, tmp_path, how):
    path = tmp_path / "m.safetensors"
    expected = _dummy_arrays()
    mlxp.save(Dummy(3, expected), path)
    if how == "active":
        with mlxp.use_backend(backend.name, backend.device):
            model = mlxp.load(path)
    else:
        model = mlxp.load(path, backend=backend.backend if how == "object" else str(backend))
    assert model.hidden == 3
    for name, a in expected.items():
        x = model.arrays[name]
        assert aac.array_namespace(x) is backend.xp
        assert aac.device(x) == backend.device
        assert x.dtype == backend.dtype(_expected_dtype(backend, a.dtype)), name
        np.testing.assert_allclose(backend.to_numpy(x), a, rtol=1e-6)


def test_save_from_every_backend(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    arrays = {k: backend.asarray(v) for k, v in _dummy_arrays().items()}
    mlxp.save(Dummy(3, arrays), path)
    loaded = mlxp.load(path).arrays  # NumPy: no backend active
    _assert_same(loaded, {k: backend.to_numpy(v) for k, v in arrays.items()})
    assert all(isinstance(v, np.ndarray) for v in loaded.values())


def test_load_rejects_a_bad_backend(model_file):
    with pytest.raises(TypeError, match="backend must be"):
        mlxp.load(model_file, backend=3)
    with pytest.raises(ValueError, match="Unknown backend"):
        mlxp.load(model_file, backend="tensorflow")
