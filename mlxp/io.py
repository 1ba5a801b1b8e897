"""Model files: the safetensors format plus an mlxp config, written and read without pickle.

Layout of a file (the safetensors format, https://github.com/huggingface/safetensors):

* 8 bytes: N, the length of the header, an unsigned 64-bit little-endian integer;
* N bytes: the header, UTF-8 JSON padded with spaces to a multiple of 8 bytes::

      {"__metadata__": {"format": "mlxp-1", "mlxp": "<config>", "mlxp.sha256": "<hex>"},
       "<name>": {"dtype": "F32", "shape": [3, 4], "data_offsets": [begin, end]}, ...}

  ``dtype`` is one of BOOL U8 I8 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 C64; the offsets
  count from the first byte after the header, ``end - begin`` is ``prod(shape) * itemsize``
  and the tensors tile the rest of the file exactly, with no gap and no overlap;
* the tensor data: raw little-endian row-major bytes, widest item size first, then by
  name (as the reference writer does, so every tensor is aligned to its item size).

``__metadata__`` maps strings to strings. :func:`write_arrays` adds ``mlxp.sha256``: the
SHA-256 of the header without it (compact JSON, sorted keys) followed by the data, so
a changed byte in a tensor, a shape or the config is detected (integrity, not
authenticity). A model file also holds ``format`` = ``mlxp-1`` and ``mlxp``, the model's
config, whose ``class`` is a name of the model registry (:mod:`mlxp._registry`): loading
looks it up there and never imports nor runs anything a file names. Any safetensors reader
reads the tensors of an mlxp file (``safetensors.torch`` all of them, ``safetensors.numpy``
all but BF16 ones, for want of a NumPy bfloat16).

bfloat16 arrays (PyTorch's, JAX's, ``ml_dtypes``') are written as BF16: the upper 16 bits of
their float32 values. NumPy has no bfloat16, so :func:`read_arrays` returns them as float32
(exactly: every bfloat16 is a float32; :func:`write_arrays` writes those back as F32), and
:func:`load` casts them back to bfloat16 where the backend's library has one (PyTorch,
JAX), else keeps float32. A model file mixing BF16 with other floating tensors is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import uuid
from collections.abc import Mapping
from typing import Any

import array_api_compat as aac
import numpy as np

from mlxp._backend import Backend, get_backend, make_backend, parse_backend_spec
from mlxp._compat import move, to_numpy
from mlxp._device import device_context
from mlxp._registry import model_class, model_name, register_model, registered_names

__all__ = ["FORMAT", "load", "read_arrays", "register_model", "save", "write_arrays"]

FORMAT = "mlxp-1"
_CHECKSUM = "mlxp.sha256"  # metadata key of the checksum
_MAX_HEADER = 100_000_000  # bytes; the reference reader's limit
_DTYPES = {  # safetensors dtype -> NumPy type string without its byte-order character
    "BOOL": "b1", "U8": "u1", "I8": "i1", "I16": "i2", "U16": "u2", "F16": "f2", "I32": "i4",
    "U32": "u4", "F32": "f4", "F64": "f8", "I64": "i8", "U64": "u8", "C64": "c8",
    "BF16": "u2",  # stored as its bits; read as float32
}  # fmt: skip
_CODES = {kind: code for code, kind in _DTYPES.items() if code != "BF16"}


# --------------------------------------------------------------------------- model files
def save(model: Any, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (of a registered class) to one safetensors file at ``path``, atomically."""
    key = model_name(type(model))
    if key is None:
        raise TypeError(
            f"{type(model).__qualname__} is not a registered model class; "
            "decorate it with mlxp.io.register_model to save it."
        )
    config, arrays = model._get_model_state()
    try:
        text = json.dumps({**config, "class": key}, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The config of {key} is not plain JSON: {exc}") from None
    write_arrays(path, arrays, {"format": FORMAT, "mlxp": text})


def load(path: str | os.PathLike[str], backend: Backend | str | None = None) -> Any:
    """Read a model saved by :func:`save`, its arrays on ``backend``.

    ``backend`` is a :class:`~mlxp.Backend`, a spec such as ``"torch"`` or
    ``"array_api_strict:device1"``, or ``None`` for the active backend, else NumPy.

    Raises ``ValueError`` for a damaged file, one that is not an mlxp model file, and one
    whose content does not describe a valid model (``"<path> is not a valid mlxp model
    file: <why>"``): a config field missing, unknown or of the wrong type; tensors
    missing or unexpected (named, as PyTorch's ``load_state_dict`` does), of another
    shape than the declared layers imply, not of one real floating dtype, or holding NaN
    or infinity; fitted fields that disagree with the network. The checksum only detects
    accidents (anyone can recompute it), so these checks run on every file, before the
    model is built: nothing beyond the file's tensors is allocated for a file refused.
    """
    if backend is None:
        backend = get_backend() or make_backend("numpy")
    elif isinstance(backend, str):
        backend = parse_backend_spec(backend)
    elif not isinstance(backend, Backend):
        raise TypeError(f"backend must be a Backend, a name or None; got {type(backend).__name__}.")
    arrays, meta, bfloat16 = _read(path)
    where = os.fspath(path)
    if meta.get("format") != FORMAT or "mlxp" not in meta:
        raise ValueError(
            f"{where} is not an mlxp model file: its metadata lacks format={FORMAT!r} and "
            "an 'mlxp' config (mlxp.io.read_arrays reads the arrays of any safetensors file)."
        )
    if _CHECKSUM not in meta:
        raise ValueError(f"{where} is not a valid mlxp model file: it has no checksum.")
    if bfloat16 and any(arrays[k].dtype.kind == "f" for k in arrays.keys() - bfloat16):
        raise ValueError(  # one verdict on every backend, those without bfloat16 included
            f"{where} is not a valid mlxp model file: it mixes BF16 tensors with other "
            "floating ones (a model's are of one dtype)."
        )
    try:
        config = json.loads(meta["mlxp"])
    except (ValueError, RecursionError):
        raise ValueError(f"{where} is damaged: its mlxp config is not valid JSON.") from None
    name = config.get("class") if isinstance(config, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"{where} is damaged: its mlxp config names no model class.")
    cls = model_class(name)
    if cls is None:
        raise ValueError(
            f"{where} holds a model of class {name!r}, which is not registered (registered: "
            f"{', '.join(registered_names())}). Loading never imports code a file "
            "names: import the module that registers the class first."
        )
    moved = {k: _placed(v, backend, k in bfloat16) for k, v in arrays.items()}
    try:  # on the device (CuPy's current one would run the checks of cupy:cuda:1's tensors)
        with device_context(backend.xp, backend.device):
            return cls._from_model_state(config, moved)  # type: ignore[attr-defined]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        reason = str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{where} is not a valid mlxp model file: {reason}") from exc


# --------------------------------------------------------------------------- arrays
def write_arrays(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``arrays`` (of any backend) and ``metadata`` (str to str) as a safetensors file.

    Atomic: the file is written beside ``path`` under a temporary name, synced to
    disk, then renamed over ``path``; on failure ``path`` is untouched and the
    temporary file removed. Adds the ``mlxp.sha256`` metadata entry (a reserved key).
    """
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("metadata must map str to str.")
    if _CHECKSUM in meta:
        raise ValueError(f"The metadata key {_CHECKSUM!r} is reserved for the checksum.")
    host = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"Invalid array name {name!r}.")
        if str(getattr(array, "dtype", "")).endswith("bfloat16"):  # torch.bfloat16 included
            host[name] = ("BF16", _bfloat16_bits(array), tuple(array.shape))
            continue
        h = to_numpy(array)
        code = _CODES.get(h.dtype.str[1:])
        if code is None:
            raise TypeError(
                f"Array {name!r} has dtype {h.dtype}, which a model file cannot hold "
                f"(supported: {', '.join(np.dtype(k).name for k in _CODES)}, bfloat16)."
            )
        host[name] = (code, np.ascontiguousarray(h, dtype="<" + _DTYPES[code]), h.shape)
    order = sorted(host, key=lambda n: (-host[n][1].itemsize, n))
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name in order:
        code, data, shape = host[name]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset]}
        offset += data.nbytes
        header[name]["data_offsets"].append(offset)
    meta[_CHECKSUM] = _digest(header, [host[n][1] for n in order])
    text = json.dumps(header, separators=(",", ":"))
    blob = (text + " " * (-len(text) % 8)).encode()
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for name in order:
                f.write(host[name][1])  # type: ignore[arg-type]  # an ndarray is a buffer
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _bfloat16_bits(array: Any) -> np.ndarray:
    """The bits of a bfloat16 array (PyTorch's, JAX's or ml_dtypes'), as little-endian uint16."""
    if aac.is_torch_array(array):  # NumPy cannot hold it: its bits as int16 first
        array = array.view(aac.array_namespace(array).int16)
    return np.ascontiguousarray(to_numpy(array)).view(np.uint16).astype("<u2")


def read_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read any safetensors file: its arrays (NumPy, writable; BF16 tensors as float32) and
    its metadata.

    Validates strictly and raises ``ValueError`` naming the problem; checks the
    ``mlxp.sha256`` checksum when the file has one. Reads the 8-byte header length
    and the header first, and the data only once the header accounts for every byte
    of the file: memory is bounded by the file's size (twice it for BF16 data, widened),
    and a device or a pipe (no size) is refused rather than read until memory runs out.
    """
    arrays, meta, _ = _read(path)
    return arrays, meta


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str], set[str]]:
    """:func:`read_arrays`, and the names of the tensors the file holds as BF16."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"{os.fspath(path)} is not a valid safetensors file: {problem}.")

    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise bad("it is not a regular file")
        size = os.fstat(f.fileno()).st_size
        header, n = _read_header(f, size, bad)
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise bad("__metadata__ is not a map of strings to strings")
        entries = [(name, *_check_entry(name, info, bad)) for name, info in header.items()]
        _check_layout(entries, size - 8 - n, bad)
        data = memoryview(f.read(size - 8 - n))
    if _CHECKSUM in meta:
        header["__metadata__"] = {k: v for k, v in meta.items() if k != _CHECKSUM}
        if _digest(header, [data]) != meta[_CHECKSUM]:
            raise bad("checksum mismatch: the data or header changed after writing (tampered?)")
    arrays = {}
    for name, code, shape, (begin, end) in entries:
        raw = np.frombuffer(data[begin:end], dtype="<" + _DTYPES[code])
        if code == "BOOL" and np.any(raw.view(np.uint8) > 1):
            raise bad(f"boolean tensor {name!r} holds bytes other than 0 and 1")
        if code == "BF16":  # the upper half of a float32: exactly one
            wide = raw.astype(np.uint32)
            wide <<= 16
            arrays[name] = wide.view(np.float32).reshape(shape)
        else:
            arrays[name] = raw.astype("=" + _DTYPES[code]).reshape(shape)
    return arrays, meta, {name for name, code, *_ in entries if code == "BF16"}


def _placed(a: np.ndarray, backend: Backend, bfloat16: bool) -> Any:
    """A tensor read from a file on ``backend``: as bfloat16 if it was one there and the
    backend's library has that dtype, else as read."""
    x = move(a, backend.xp, backend.device)
    narrow = getattr(backend.xp, "bfloat16", None) if bfloat16 else None
    return x if narrow is None else backend.xp.astype(x, narrow)


def _read_header(f: Any, size: int, bad: Any) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of the open file ``f`` of ``size`` bytes, and its length."""
    if size < 8:
        raise bad(f"truncated file ({size} bytes, less than the 8-byte header length)")
    n = int.from_bytes(f.read(8), "little")
    if n > size - 8:
        raise bad(f"truncated file: header length {n} runs past the end of its {size} bytes")
    if n > _MAX_HEADER:
        raise bad(f"header length {n} is over the {_MAX_HEADER}-byte limit")
    try:
        text = str(f.read(n), "utf-8")
        if not text.startswith("{"):
            raise ValueError("it does not start with '{'")
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise bad("the header nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise bad(f"the header is not valid UTF-8 JSON ({exc})") from None
    return header, n


def _check_layout(entries: list[tuple[Any, ...]], data_len: int, bad: Any) -> None:
    """The tensors tile the ``data_len`` data bytes exactly, each its declared size."""
    pos = 0
    for name, code, shape, (begin, end) in sorted(entries, key=lambda e: e[3]):
        if begin != pos:
            raise bad(f"tensor {name!r} starts at data byte {begin}, not {pos} (overlap or gap)")
        size = math.prod(shape) * np.dtype(_DTYPES[code]).itemsize
        if end - begin != size:
            raise bad(f"tensor {name!r} ({code} {shape}) spans {end - begin} bytes, not {size}")
        pos = end
    if pos > data_len:
        raise bad(f"truncated file: the tensors need {pos} bytes of data, only {data_len} remain")
    if pos < data_len:
        raise bad(f"{data_len - pos} unexpected bytes after the last tensor")


def _check_entry(name: str, info: Any, bad: Any) -> tuple[str, list[int], list[int]]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {name!r} needs exactly the fields dtype, shape and data_offsets")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in _DTYPES:
        raise bad(f"tensor {name!r} has unsupported dtype {code!r} (known: {' '.join(_DTYPES)})")
    sizes = isinstance(shape, list) and len(shape) <= 32 and all(_is_size(d) for d in shape)
    if not sizes or math.prod(max(d, 1) for d in shape) >= 2**62:  # NumPy's own limits
        raise bad(f"tensor {name!r} has an invalid shape {shape!r}")
    valid = isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_size, offsets))
    if not valid or offsets[0] > offsets[1]:
        raise bad(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    return code, shape, offsets


def _is_size(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate keys")
    return out


def _digest(header: dict[str, Any], chunks: list[Any]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()
