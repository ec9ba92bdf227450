"""Shared helpers for the attention-numerics tests: speech windows, Q/K/V capture, metrics."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

WINDOW_FRAMES = 3000  # 30 s of log-mel frames
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")


def speech_dir() -> Path:
    """The shared speech clips: $AMANUENSIS_SPEECH_DIR, else ../shared/data/speech."""
    explicit = os.environ.get("AMANUENSIS_SPEECH_DIR")
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve().parent.parent
    for base in (here.parent / "shared", Path("/work/shared")):
        if (base / "data" / "speech").is_dir():
            return base / "data" / "speech"
    return here.parent / "shared" / "data" / "speech"


def speech_clips() -> list[Path]:
    root = speech_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS)


def mel_windows(path: Path, n_mels: int = 80) -> list[np.ndarray]:
    """The clip's 30 s log-mel windows, as faster-whisper cuts them."""
    from faster_whisper.audio import decode_audio, pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = decode_audio(str(path), sampling_rate=16000)
    features = FeatureExtractor(feature_size=n_mels)(audio)
    content = max(features.shape[-1] - 1, 1)
    return [
        pad_or_trim(features[:, seek : seek + WINDOW_FRAMES]).astype(np.float32)
        for seek in range(0, content, WINDOW_FRAMES)
    ]


@dataclass
class Captured:
    """One encoder layer's attention inputs on one window, and the float32 CPU encoder output."""

    clip: str
    window: int
    layer: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def recording_backend():
    from amanuensis_npu.attention import AttentionBackend, cpu_attention

    class Recording(AttentionBackend):
        name = "recording"

        def __init__(self) -> None:
            super().__init__()
            self.records: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def forward(self, q, k, v, *, layer=None):  # type: ignore[override]
            self.records.append((layer, q.detach().clone(), k.detach().clone(), v.detach().clone()))
            return cpu_attention(q, k, v)

    return Recording()


def capture_speech(model: str = "base") -> tuple[list[Captured], list[tuple[str, int, np.ndarray]]]:
    """Q/K/V of every layer on every 30 s window of every shared clip, plus the mels."""
    from amanuensis_npu.encoder import load_encoder

    rec = recording_backend()
    encoder = load_encoder(model, attention=rec)
    captured: list[Captured] = []
    mels: list[tuple[str, int, np.ndarray]] = []
    root = speech_dir()
    for path in speech_clips():
        name = str(path.relative_to(root))
        for w, mel in enumerate(mel_windows(path)):
            rec.records.clear()
            with torch.inference_mode():
                encoder(torch.from_numpy(mel).unsqueeze(0))
            for layer, q, k, v in rec.records:
                captured.append(Captured(name, w, int(layer), q, k, v))
            mels.append((name, w, mel))
    return captured, mels


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float64 softmax(q kᵀ / sqrt(d)) v."""
    q64, k64, v64 = q.double(), k.double(), v.double()
    return torch.softmax((q64 @ k64.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1) @ v64


def head_metrics(out: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per (batch, head) cosine and relative L2 error of `out` against `ref` (float64)."""
    o = out.double().flatten(2)
    r = ref.double().flatten(2)
    cos = (o * r).sum(-1) / (o.norm(dim=-1) * r.norm(dim=-1)).clamp_min(1e-300)
    rel = (o - r).norm(dim=-1) / r.norm(dim=-1).clamp_min(1e-300)
    return cos.numpy(), rel.numpy()
