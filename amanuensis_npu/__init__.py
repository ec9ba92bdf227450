"""Whisper encoder self-attention on the AMD Ryzen AI NPU for faster-whisper and WhisperX."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AttentionBackend",
    "WhisperModel",
    "get_backend",
    "load_encoder",
    "transcribe",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import transcribe
    from .attention import AttentionBackend, get_backend
    from .core.encoder import load_encoder
    from .integrations.faster_whisper import WhisperModel

_LAZY = {
    "AttentionBackend": ".attention",
    "get_backend": ".attention",
    "load_encoder": ".core.encoder",
    "WhisperModel": ".integrations.faster_whisper",
    "transcribe": ".api",
}


def __getattr__(name: str) -> Any:
    # Lazy so `amanuensis-npu info` and `--help` stay fast and never import
    # faster-whisper or torch before they are needed.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
