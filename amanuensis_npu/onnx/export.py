"""Our Whisper encoder as a static-shape ONNX model, cached and checked.

The graph is our PyTorch encoder with float attention in standard operators
(MatMul, Softmax), exported with `[batch, n_mels, 3000] -> [batch, 1500, d_model]`
fixed, because the NPU compilers (VitisAI, OpenVINO NPU, QNN HTP) take static
shapes only. We use torch's TorchScript exporter at opset 17: that is the exporter
and opset of AMD's own Whisper flow (amd/RyzenAI-SW Transformer-examples/ASR/Whisper-AI/
README.md: `optimum-cli export onnx --opset 17`, then the shapes made static), and it
needs no package beyond `onnx`; torch 2.13 still ships it (with a deprecation notice).

Exports live in `<cache>/onnx/`, one file per model sha256 and batch size, written
to a temporary file and renamed, so a reader never sees half a model. An encoder
whose float32 weights pass the 2 GB one protobuf can hold (large-v1/v2/v3,
large-v3-turbo, distil-large-v3: 2.5 GB) keeps them in ONNX external data, one
`<export>.data` file beside it, written before the export that names it. On reuse a file
is checked (onnx.checker, shapes, metadata) and rebuilt when anything disagrees.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..attention import AttentionBackend, cpu_attention
from ..core.encoder import WhisperEncoder, cached_encoder_weights
from ..core.models import BASE_SHA256, cache_dir, resolve_model, sha256_file
from ..messages import one_line

logger = logging.getLogger("amanuensis_npu")

OPSET = 17
# Bump when the exported graph changes: old exports (and VitisAI's compiled copies of
# them, whose cache key includes it) are then rebuilt instead of reused.
EXPORT_FORMAT = "1"
N_FRAMES = 3000  # 30 s of 10 ms log-mel frames: the encoder's one input length
INPUT_NAME = "mel"
OUTPUT_NAME = "encoder_out"
META = "amanuensis_npu."
_MAX_PROTO_BYTES = 2_000_000_000  # one protobuf file holds at most 2 GB: beyond, external data


class _ExportAttention(AttentionBackend):
    """CPU attention without statistics: tracing must not count as attention calls."""

    name = "export"

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        return cpu_attention(q, k, v)


def exports_dir() -> Path:
    """Where exports are cached (and where `encoder="onnx"` looks for them)."""
    return cache_dir() / "onnx"


def export_path(model_sha256: str, batch: int, directory: Path | None = None) -> Path:
    return Path(directory or exports_dir()) / f"whisper-encoder-{model_sha256[:16]}-b{batch}.onnx"


def data_path(path: Path) -> Path:
    """The external-data file of an export too large for one protobuf."""
    return path.with_name(path.name + ".data")


def exported_batches(model_sha256: str, directory: Path | None = None) -> list[int]:
    """Batch sizes with an export file for this model (validity is checked on use)."""
    pattern = re.compile(rf"whisper-encoder-{model_sha256[:16]}-b(\d+)\.onnx$")
    root = Path(directory or exports_dir())
    if not root.is_dir():
        return []
    found = (pattern.match(p.name) for p in root.iterdir())
    return sorted(int(m.group(1)) for m in found if m and int(m.group(1)) > 0)


_SHA_CACHE: dict[tuple, str] = {}


def model_sha256(model_dir: os.PathLike | str) -> str:
    """sha256 of a model directory's model.bin, hashed once per process and file version.

    Whisper Base's joined file carries a stamp written when its digest was verified.
    """
    path = Path(model_dir) / "model.bin"
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        stamp = path.with_name("model.bin.sha256")
        if stamp.is_file() and stamp.read_text().strip() == BASE_SHA256:
            _SHA_CACHE[key] = BASE_SHA256
        else:
            _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dims(weights: dict[str, np.ndarray]) -> tuple[int, int, int]:
    d_model, n_mels, _ = weights["conv1/weight"].shape
    n_ctx = weights["position_encodings/encodings"].shape[0]
    return int(n_mels), int(n_ctx), int(d_model)


def _metadata(model_sha256: str, batch: int) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("amanuensis-npu")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        __version__ = "unknown"
    return {
        META + "model_sha256": model_sha256,
        META + "batch": str(batch),
        META + "export_format": EXPORT_FORMAT,
        # Recorded for bug reports, not checked: an upgrade that does not change the
        # graph must not force a rebuild (and a new NPU compile).
        META + "version": __version__,
    }


def _shape(value_info: object) -> list[int]:
    """Static dims of an onnx.ValueInfoProto; -1 marks a symbolic one."""
    dims = value_info.type.tensor_type.shape.dim  # type: ignore[attr-defined]
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def check_export(
    path: Path, model_sha256: str, batch: int, dims: tuple[int, int, int]
) -> str | None:
    """Why the file at `path` is not a usable export for this model and batch, or None."""
    import onnx

    n_mels, n_ctx, d_model = dims
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))  # by path: checks external data, takes > 2 GB
    except Exception as exc:
        return f"not a valid ONNX model ({one_line(exc)})"
    problem = _external_data_problem(model, path)
    if problem:
        return problem
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in _metadata(model_sha256, batch).items():
        if key != META + "version" and meta.get(key) != value:
            return f"metadata {key} is {meta.get(key)!r}, expected {value!r}"
    inputs, outputs = list(model.graph.input), list(model.graph.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        return "unexpected input/output names"
    if _shape(inputs[0]) != [batch, n_mels, N_FRAMES]:
        return f"input shape {_shape(inputs[0])}, expected {[batch, n_mels, N_FRAMES]}"
    if _shape(outputs[0]) != [batch, n_ctx, d_model]:
        return f"output shape {_shape(outputs[0])}, expected {[batch, n_ctx, d_model]}"
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 17:
        return "opset older than 17"
    return None


def _external_data_problem(model: object, path: Path) -> str | None:
    """Why the tensors an export keeps outside it are not all there (the checker only
    looks at where they are said to be, not at how much is there)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    sizes: dict[str, int] = {}
    for tensor in model.graph.initializer:  # type: ignore[attr-defined]
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        target = path.parent / info.location
        if info.location not in sizes:
            if not target.is_file():
                return f"external data {info.location} is missing"
            sizes[info.location] = target.stat().st_size
        end = (info.offset or 0) + (info.length or 0)
        if end > sizes[info.location]:
            return f"external data {info.location} is cut short ({sizes[info.location]} bytes)"
    return None


def _file_key(path: Path) -> tuple:
    """What identifies an export as written: its size and time, and its data file's."""
    st = path.stat()
    data = data_path(path)
    extra = (data.stat().st_size, data.stat().st_mtime_ns) if data.is_file() else ()
    return (str(path), st.st_size, st.st_mtime_ns, *extra)


_LOCK = threading.Lock()
_VALID: set[tuple] = set()


def ensure_export(
    weights: dict[str, np.ndarray], model_sha256: str, batch: int, directory: Path | None = None
) -> Path:
    """The export for this model and batch: reused when valid, else (re)built atomically."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    path = export_path(model_sha256, batch, directory)
    dims = _dims(weights)
    with _LOCK:
        if path.is_file():
            key = (*_file_key(path), model_sha256, batch)
            if key in _VALID or _stamp(path) == _stamp_text(key):
                _VALID.add(key)
                return path
            problem = check_export(path, model_sha256, batch, dims)
            if problem is None:
                _VALID.add(key)
                _write_stamp(path, key)
                return path
            logger.warning("ONNX export %s is unusable (%s); exporting it again", path, problem)
        _build(weights, model_sha256, batch, path)
        return path


# A checked export gets a stamp beside it (its size, modification time, model and batch),
# so later processes skip the check: loading and checking an 82 MB export took 1.5-4 s of
# every start. A file written again (new size or time) is checked again.
def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.checked")


def _stamp_text(key: tuple) -> str:
    return f"{EXPORT_FORMAT} " + " ".join(str(part) for part in key[1:])


def _stamp(path: Path) -> str | None:
    try:
        return _stamp_path(path).read_text()
    except OSError:
        return None


def _write_stamp(path: Path, key: tuple) -> None:
    try:
        _stamp_path(path).write_text(_stamp_text(key))
    except OSError:  # a read-only cache: the check runs again next time, nothing else
        pass


def _build(weights: dict[str, np.ndarray], model_sha256: str, batch: int, path: Path) -> None:
    import onnx

    n_mels, _, _ = _dims(weights)
    external = sum(int(a.size) * 4 for a in weights.values()) > _MAX_PROTO_BYTES
    logger.info("exporting the encoder to ONNX (batch %d) into %s", batch, path)
    encoder = WhisperEncoder.from_weights(weights, _ExportAttention(), prepack=False)
    example = torch.zeros(batch, n_mels, N_FRAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        # Past 2 GB the exporter needs a file name to put tensors beside (one file each);
        # they are gathered into one data file below.
        target: str | io.BytesIO = str(Path(scratch) / "traced.onnx") if external else io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice and its tracer's notes about
            # shapes read as Python numbers (static here by design) are not for users.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder,
                (example,),
                target,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
            )
        del encoder
        if isinstance(target, str):
            model = onnx.load(target)
        else:
            model = onnx.load_from_string(target.getvalue())
        for key, value in _metadata(model_sha256, batch).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.doc_string = "Whisper encoder exported by amanuensis-npu (static shapes)"
        if not external:
            onnx.checker.check_model(model)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            if external:
                os.close(fd)
                data = data_path(path)
                data.unlink(missing_ok=True)  # onnx appends to an existing data file
                path.unlink(missing_ok=True)  # no export may name a data file being rewritten
                onnx.save_model(model, tmp, save_as_external_data=True,
                                all_tensors_to_one_file=True, location=data.name,
                                size_threshold=1024)  # fmt: skip
                onnx.checker.check_model(tmp)
                os.chmod(data, 0o644)
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(model.SerializeToString())
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like the model's
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def export_encoder(
    model: str | os.PathLike = "base", batch: int = 1, out: str | os.PathLike | None = None
) -> Path:
    """Export a model's encoder to ONNX (or reuse a valid export) and return the file.

    `out` is a directory; by default the package cache, where `encoder="onnx"` finds
    exports, so exporting a batch size there makes batched pipelines use it.
    """
    model_dir = resolve_model(model)
    weights = cached_encoder_weights(model_dir)
    return ensure_export(weights, model_sha256(model_dir), batch, Path(out) if out else None)


