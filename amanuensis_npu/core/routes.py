"""The encoder seam: an encoder route turns log-mel windows into encoder states.

Routes ("torch": our PyTorch encoder; "onnx": ONNX Runtime, amanuensis_npu/onnx/)
share this base and its counters, so a transcription can say which route encoded
its windows and why a call fell back, whatever the route. Choosing a route is
amanuensis_npu/routing.py's job.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TORCH = "torch"


@dataclass
class EncoderStats:
    """Encoder calls, windows per route and fallbacks; thread-safe like AttentionStats."""

    calls: int = 0
    windows: int = 0
    fallbacks: int = 0
    fallback_reasons: Counter = field(default_factory=Counter)
    routes: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, route: str, windows: int, fallback_reason: str | None = None) -> None:
        """Count one encoder call here and in every collector open in this context."""
        for target in (*_COLLECTORS.get(), self):
            with target._lock:
                target.calls += 1
                target.windows += windows
                target.routes[route] += windows
                if fallback_reason is not None:
                    target.fallbacks += 1
                    target.fallback_reasons[fallback_reason] += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict counters under keys distinct from the attention statistics'."""
        with self._lock:
            return {
                "encoder_calls": self.calls,
                "encoder_windows": self.windows,
                "encoder_routes": dict(self.routes),
                "encoder_fallbacks": self.fallbacks,
                "encoder_fallback_reasons": dict(self.fallback_reasons),
            }

    def main_route(self) -> str | None:
        """The route that encoded the most windows (None before any call)."""
        with self._lock:
            return self.routes.most_common(1)[0][0] if self.routes else None


_COLLECTORS: contextvars.ContextVar[tuple[EncoderStats, ...]] = contextvars.ContextVar(
    "amanuensis_npu_encoder_collectors", default=()
)


@contextlib.contextmanager
def collect_encoder_stats() -> Iterator[EncoderStats]:
    """Encoder counters for the work done inside this block, in this context only."""
    stats = EncoderStats()
    token = _COLLECTORS.set((*_COLLECTORS.get(), stats))
    try:
        yield stats
    finally:
        _COLLECTORS.reset(token)


class EncoderRoute:
    """Log-mel `[B, n_mels, 3000]` -> encoder states `[B, 1500, d_model]` float32 numpy."""

    name: str = "abstract"
    # Why this route was picked (routing.build_route sets it): the route line says it.
    reason: str = ""
    # True for routes that run the whole encoder (ONNX Runtime, OpenVINO): no attention
    # backend runs, so there are no attention calls to count or fall back.
    whole_encoder: bool = False

    def __init__(self) -> None:
        self.stats = EncoderStats()

    @property
    def device(self) -> str:
        """Where the encoder runs (an ONNX provider, an OpenVINO device, "CPU")."""
        return "CPU"

    @property
    def precision(self) -> str:
        """The arithmetic the encoder computes in ("f32", "bf16", ...)."""
        return "f32"

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class TorchRoute(EncoderRoute):
    """Our PyTorch encoder (attention on its backend)."""

    name = TORCH

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = self.encoder(mel)
        self.stats.add(self.name, int(out.shape[0]))
        return np.ascontiguousarray(out.numpy())
