"""faster-whisper with our encoder: `WhisperModel(device="npu")`.

Every faster-whisper path (sequential and batched transcription, language
detection, word timestamps) reaches the encoder through `WhisperModel.encode`,
so overriding that one method puts our encoder under all of them while
CTranslate2 keeps decoding on the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import ctranslate2
import faster_whisper
import numpy as np
import torch

from ..attention import AttentionBackend, get_backend
from ..core.encoder import WhisperEncoder, cached_encoder_weights
from ..core.models import resolve_model
from ..core.weights import ModelFormatError, read_encoder_weights

DEVICES = ("npu", "cpu", "auto")


def attention_for_device(device: str, attention: str | AttentionBackend) -> str | AttentionBackend:
    """`device="cpu"` turns `attention="auto"` into the CPU backend; an explicit choice wins."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" and isinstance(attention, str) and attention.lower() == "auto":
        return "cpu"
    return attention


class NPUEncoderMixin:
    """Replaces `encode` of a faster-whisper `WhisperModel` (or subclass) with our encoder.

    Kept separate from `WhisperModel` so WhisperX's own WhisperModel subclass
    can reuse it.
    """

    npu_encoder: WhisperEncoder

    def _init_npu_encoder(
        self,
        model_path: str | os.PathLike | None,
        attention: str | AttentionBackend,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        if weights is None:
            weights = cached_encoder_weights(model_path)
        self.npu_encoder = WhisperEncoder.from_weights(weights, get_backend(attention))

    @property
    def attention_backend(self) -> AttentionBackend:
        """The backend our encoder sends attention to."""
        return self.npu_encoder.backend

    def encode(self, features: np.ndarray | torch.Tensor) -> ctranslate2.StorageView:
        """Run our encoder and hand CTranslate2 float32 encoder states it accepts as is."""
        if isinstance(features, torch.Tensor):
            x = features.detach().to(device="cpu", dtype=torch.float32)
        else:
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if x.dim() == 2:
            x = x.unsqueeze(0)
        with torch.inference_mode():
            out = self.npu_encoder(x)
        # from_array keeps the array alive; it must be float32, C-contiguous, writable.
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(out.numpy()))


class WhisperModel(NPUEncoderMixin, faster_whisper.WhisperModel):
    """faster-whisper's WhisperModel whose encoder attention runs on the NPU (or a stand-in).

    `device="npu"` (or `"auto"`) uses `attention` ("auto": the NPU when present,
    else the CPU backend with one warning); `device="cpu"` uses the CPU backend
    unless `attention` names another. `compute_type` applies to the
    CTranslate2 decoder, which always runs on the CPU.
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
        **model_kwargs: Any,
    ) -> None:
        attention = attention_for_device(device, attention)
        model_bytes = None
        if files:
            model_path = str(model_size_or_path)
            model_bytes = _read_file_entry(files["model.bin"])
            files = {**files, "model.bin": model_bytes}
        else:
            model_path = str(resolve_model(model_size_or_path, download_root, local_files_only))
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        # Our reader first: it checks the whole file and names it in its errors,
        # where CTranslate2 only says which variable it choked on.
        if model_bytes is not None:
            weights = read_encoder_weights(model_bytes)
        else:
            weights = cached_encoder_weights(model_path)
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
        self._init_npu_encoder(model_path, attention, weights)


def _read_file_entry(entry: Any) -> bytes:
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if hasattr(entry, "read"):
        return entry.read()
    raise TypeError("files['model.bin'] must be bytes or a file-like object")
