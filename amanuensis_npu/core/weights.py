"""Reader for CTranslate2 `model.bin` files.

We build our PyTorch encoder from the very file faster-whisper loads, so the
two can never disagree about weights. CTranslate2 ships no Python reader, and
the format is small (see the layout below), so it is parsed here with numpy.

Layout (little-endian): u32 binary version; string spec name; u32 spec
revision; u32 variable count, then per variable: string name, u8 rank, u32 per
dim, u8 dtype id, u32 byte count, raw bytes; u32 alias count, then
(alias, target) string pairs. A string is a u16 length counting a trailing
NUL, then UTF-8 bytes and the NUL.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CTranslate2 dtype ids -> numpy dtypes. bfloat16 has no numpy dtype: it is
# read as uint16 and widened by hand.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5


class ModelFormatError(ValueError):
    """The file is not a readable CTranslate2 Whisper model."""


@dataclass
class CT2Model:
    """Raw variables of a model.bin, with aliases already resolved."""

    path: str
    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: memoryview, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelFormatError(
                f"{self.path}: truncated or corrupt CTranslate2 model "
                f"(needed {n} bytes at offset {self.pos}, file has {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise ModelFormatError(f"{self.path}: corrupt CTranslate2 model (bad string record)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFormatError(f"{self.path}: corrupt CTranslate2 model ({exc})") from None


def read_model_bin(source: str | os.PathLike | bytes) -> CT2Model:
    """Parse a whole model.bin (a path, or its bytes) into numpy arrays.

    Arrays are views on the file's bytes where possible, so reading the
    145 MB Base model costs no copy until the caller converts a tensor.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        path = "<model.bin bytes>"
        data = memoryview(source)
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "model.bin")
        try:
            with open(path, "rb") as fh:
                data = memoryview(fh.read())
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: model file not found") from None
        except IsADirectoryError:
            raise ModelFormatError(f"{path}: is a directory, not a model.bin") from None
    r = _Reader(data, path)
    version = r.u32()
    if not 1 <= version <= 6:
        raise ModelFormatError(
            f"{path}: not a CTranslate2 model (binary version {version}, expected 1-6)"
        )
    if version < 4:
        raise ModelFormatError(
            f"{path}: CTranslate2 binary version {version} predates typed variables; "
            "re-convert the model with a current ct2-transformers-converter"
        )
    spec = r.string()
    revision = r.u32()
    count = r.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        rank = r.u8()
        shape = tuple(r.u32() for _ in range(rank))
        dtype_id = r.u8()
        nbytes = r.u32()
        raw = r.take(nbytes)
        if dtype_id not in _DTYPES:
            # float8 and future types: keep the bytes, fail only if someone uses them.
            variables[name] = np.frombuffer(raw, dtype=np.uint8)
            continue
        dtype = _DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if expected != nbytes:
            raise ModelFormatError(
                f"{path}: corrupt CTranslate2 model (variable {name!r} has {nbytes} bytes, "
                f"shape {shape} needs {expected})"
            )
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if dtype_id == _BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        variables[name] = arr
    for _ in range(r.u32()):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise ModelFormatError(f"{path}: alias {alias!r} points to missing {target!r}")
        variables[alias] = variables[target]
    return CT2Model(path=path, version=version, spec=spec, revision=revision, variables=variables)


_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


def saved_compute_type(source: str | os.PathLike | bytes) -> str:
    """The compute type CTranslate2 infers from a model.bin (its "default"), e.g. "float16".

    Mirrors `Model::infer_compute_type` (CTranslate2 src/models/model.cc): the
    type of the variables named "*weight" (in name order, the last one wins),
    combined with the float type of the other non-scalar, non-scale variables
    for int8 weights (`data_type_to_compute_type`, src/types.cc). Only the
    variable headers are read (the file is memory-mapped), so it costs no
    145 MB read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _saved_compute_type(memoryview(source), "<model.bin bytes>")
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _saved_compute_type(view, path)
            finally:
                view.release()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: model file not found") from None
    except ValueError:  # mmap of an empty file
        raise ModelFormatError(f"{path}: truncated or corrupt CTranslate2 model (empty)") from None


def _saved_compute_type(data: memoryview, path: str) -> str:
    r = _Reader(data, path)
    version = r.u32()
    if not 4 <= version <= 6:
        raise ModelFormatError(f"{path}: not a CTranslate2 model (binary version {version})")
    r.string()  # spec
    r.u32()  # revision
    dtypes: dict[str, tuple[int, int]] = {}
    for _ in range(r.u32()):
        name = r.string()
        rank = r.u8()
        r.take(4 * rank)
        dtype_id = r.u8()
        r.take(r.u32())
        dtypes[name] = (dtype_id, rank)
    weight, other = 0, 0
    for name in sorted(dtypes):
        dtype_id, rank = dtypes[name]
        if name.endswith("weight"):
            weight = dtype_id
        elif rank > 0 and "_scale" not in name:
            other = dtype_id
    weight_name = _DTYPE_NAMES.get(weight, "float32")
    if weight_name == "int8":
        return "int8_" + {"float16": "float16", "bfloat16": "bfloat16"}.get(
            _DTYPE_NAMES.get(other, ""), "float32"
        )
    return weight_name if weight_name in ("int16", "float16", "bfloat16") else "float32"


def _dequantize(name: str, variables: dict[str, np.ndarray]) -> np.ndarray:
    value = variables[name]
    scale = variables.get(name + "_scale")
    if value.dtype == np.int8 and scale is not None:
        flat = value.reshape(value.shape[0], -1).astype(np.float32)
        scale = np.asarray(scale, dtype=np.float32)
        if scale.ndim == 0 or scale.size == 1:
            flat = flat / float(scale.reshape(-1)[0])
        else:
            flat = flat / scale.reshape(-1, 1)
        return flat.reshape(value.shape)
    if value.dtype == np.int16 and scale is not None:
        return value.astype(np.float32) / float(np.asarray(scale).reshape(-1)[0])
    if value.dtype.kind != "f":
        raise ModelFormatError(f"variable {name!r} has unsupported dtype {value.dtype}")
    return value.astype(np.float32)


def read_encoder_weights(source: str | os.PathLike | bytes) -> dict[str, np.ndarray]:
    """The Whisper encoder's tensors as float32, keyed without the `encoder/` prefix.

    Accepts float32, float16, bfloat16, int8 (+ `_scale`), int8_float16 and
    int16 models; flag variables and the decoder are ignored.
    """
    model = read_model_bin(source)
    if model.spec and model.spec != "WhisperSpec":
        raise ModelFormatError(f"{model.path}: not a Whisper model (spec {model.spec!r})")
    required = ("encoder/conv1/weight", "encoder/conv2/weight", "encoder/layer_norm/gamma")
    missing = [n for n in required if n not in model.variables]
    if missing:
        raise ModelFormatError(f"{model.path}: not a Whisper model (missing {missing[0]!r})")
    out: dict[str, np.ndarray] = {}
    for name, value in model.variables.items():
        if not name.startswith("encoder/") or name.endswith("_scale"):
            continue
        key = name[len("encoder/") :]
        if key == "num_heads":
            out[key] = np.asarray(value).astype(np.int64)
            continue
        if value.ndim == 0 or (value.dtype.kind in "iu" and name + "_scale" not in model.variables):
            continue  # flags, strings and unknown scalars
        out[key] = _dequantize(name, model.variables)
    return out


def encoder_num_heads(weights: dict[str, np.ndarray]) -> int:
    """Heads are stored as a scalar; older models omit it, and then Whisper uses d_model / 64."""
    if "num_heads" in weights:
        return int(np.asarray(weights["num_heads"]).reshape(-1)[0])
    return weights["conv1/weight"].shape[0] // 64


def model_bin_path(model_dir: str | os.PathLike) -> Path:
    """The model.bin inside a CTranslate2 model directory, with a clear error if absent."""
    path = Path(model_dir)
    candidate = path / "model.bin" if path.is_dir() else path
    if not candidate.is_file():
        raise ModelFormatError(f"{path}: not a CTranslate2 model directory (no model.bin)")
    return candidate
