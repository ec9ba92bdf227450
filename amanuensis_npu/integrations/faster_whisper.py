"""faster-whisper with our encoder: `WhisperModel(device="npu")`.

Every faster-whisper path (sequential and batched transcription, language
detection, word timestamps) reaches the encoder through `WhisperModel.encode`,
so overriding that one method puts our encoder under all of them while
CTranslate2 keeps decoding on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ctranslate2
import faster_whisper
import numpy as np
import torch

from ..attention import AttentionBackend
from ..core.encoder import WhisperEncoder, cached_encoder_weights
from ..core.models import resolve_model
from ..core.routes import EncoderRoute
from ..core.weights import ModelFormatError, read_encoder_weights, saved_compute_type
from ..routing import build_route, check_encoder

DEVICES = ("npu", "cpu", "auto")


def attention_for_device(device: str, attention: str | AttentionBackend) -> str | AttentionBackend:
    """`device="cpu"` turns `attention="auto"` into the CPU backend; an explicit choice wins."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" and isinstance(attention, str) and attention.lower() == "auto":
        return "cpu"
    return attention


# What CTranslate2 falls back to when the saved type is not efficient on the device, in
# its order of preference (src/types.cc, `resolve_compute_type` with fallback enabled).
_CT2_FALLBACKS = {
    "float32": ("float32",),
    "float16": ("float16", "float32"),
    "bfloat16": ("bfloat16", "float32"),
    "int16": ("int16", "int8_float32", "float32"),
    "int8_float32": ("int8_float32", "int16", "float32"),
    "int8_float16": ("int8_float16", "int8_float32", "float16", "int16", "float32"),
    "int8_bfloat16": ("int8_bfloat16", "int8_float32", "bfloat16", "float32"),
}


def cpu_compute_type(compute_type: str, model: str | os.PathLike | bytes) -> str:
    """`compute_type`, with "default" spelled out as the type CTranslate2 would run here.

    CTranslate2's "default" is the type the model was saved in (float16 for
    Whisper Base); on a CPU without efficient float16 it converts to float32
    and logs a warning on every load. Asking for that same type explicitly
    gives the same arithmetic without the warning.
    """
    if compute_type != "default":
        return compute_type
    supported = ctranslate2.get_supported_compute_types("cpu")
    saved = saved_compute_type(model)
    for candidate in _CT2_FALLBACKS.get(saved, ("float32",)):
        if candidate in supported:
            return candidate
    return "float32"


class NPUEncoderMixin:
    """Replaces `encode` of a faster-whisper `WhisperModel` (or subclass) with our encoder.

    Kept separate from `WhisperModel` so WhisperX's own WhisperModel subclass
    can reuse it.
    """

    npu_encoder: WhisperEncoder
    encoder_route: EncoderRoute

    def _init_npu_encoder(
        self,
        model_path: str | os.PathLike | None,
        attention: str | AttentionBackend,
        weights: dict[str, np.ndarray] | None = None,
        *,
        encoder: str = "torch",
        onnx_providers: Sequence[Any] | None = None,
        device: str = "npu",
        threads: int = 0,
        model_bytes: bytes | None = None,
    ) -> None:
        if weights is None:
            weights = cached_encoder_weights(model_path)

        def sha256() -> str:
            from ..onnx.export import bytes_sha256, model_sha256

            return bytes_sha256(model_bytes) if model_bytes else model_sha256(model_path)

        self.encoder_route, self.npu_encoder = build_route(
            encoder, device, attention, weights, sha256, onnx_providers, threads
        )

    @property
    def attention_backend(self) -> AttentionBackend:
        """The backend our torch encoder sends attention to (with encoder="onnx": the
        CPU backend of the torch encoder that takes calls ONNX Runtime cannot run)."""
        return self.npu_encoder.backend

    def encode(self, features: np.ndarray | torch.Tensor) -> ctranslate2.StorageView:
        """Run our encoder and hand CTranslate2 float32 encoder states it accepts as is."""
        if isinstance(features, torch.Tensor):
            x = features.detach().to(device="cpu", dtype=torch.float32)
        else:
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if x.dim() == 2:
            x = x.unsqueeze(0)
        out = self.encoder_route(x)
        # from_array keeps the array alive; it must be float32, C-contiguous, writable.
        return ctranslate2.StorageView.from_array(out)


class WhisperModel(NPUEncoderMixin, faster_whisper.WhisperModel):
    """faster-whisper's WhisperModel whose encoder runs on the NPU (or a stand-in).

    `encoder` picks the route (amanuensis_npu.routing): "torch" is our
    PyTorch encoder with attention on `attention`; "onnx" is the exported encoder on
    ONNX Runtime, on `onnx_providers` (None: an NPU execution provider onnxruntime
    has, else the CPU); "auto" (default) prefers an NPU execution provider, then our
    NPU attention kernel, then the CPU with one warning. `device="cpu"` means the
    torch encoder with the CPU backend unless `encoder`/`attention` say otherwise.
    `compute_type` applies to the CTranslate2 decoder, which always runs on the CPU.
    """

    def __init__(
        self,
        model_size_or_path: str = "base",
        device: str = "npu",
        device_index: int | list[int] = 0,
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        download_root: str | None = None,
        local_files_only: bool = False,
        files: dict | None = None,
        revision: str | None = None,
        use_auth_token: str | bool | None = None,
        attention: str | AttentionBackend = "auto",
        encoder: str = "auto",
        onnx_providers: Sequence[Any] | None = None,
        **model_kwargs: Any,
    ) -> None:
        attention = attention_for_device(device, attention)
        encoder = check_encoder(encoder)
        model_bytes = None
        if files:
            model_path = str(model_size_or_path)
            model_bytes = _read_file_entry(files["model.bin"])
            files = {**files, "model.bin": model_bytes}
        else:
            model_path = str(
                resolve_model(
                    model_size_or_path, download_root, local_files_only, revision, use_auth_token
                )
            )
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        # Our reader first: it checks the whole file and names it in its errors,
        # where CTranslate2 only says which variable it choked on.
        if model_bytes is not None:
            weights = read_encoder_weights(model_bytes)
        else:
            weights = cached_encoder_weights(model_path)
        compute_type = cpu_compute_type(
            compute_type, model_bytes if model_bytes is not None else model_path
        )
        try:
            super().__init__(
                model_path,
                device="cpu",
                device_index=device_index,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                num_workers=num_workers,
                files=files,
                **model_kwargs,
            )
        except RuntimeError as exc:
            raise ModelFormatError(
                f"{model_path}: CTranslate2 cannot load the model ({exc})"
            ) from None
        self.model_path = model_path
        self._init_npu_encoder(
            model_path,
            attention,
            weights,
            encoder=encoder,
            onnx_providers=onnx_providers,
            device=device,
            threads=cpu_threads,
            model_bytes=model_bytes,
        )


def _read_file_entry(entry: Any) -> bytes:
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if hasattr(entry, "read"):
        return entry.read()
    raise TypeError("files['model.bin'] must be bytes or a file-like object")
