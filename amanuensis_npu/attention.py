"""Attention backends: the seam between the PyTorch encoder and the hardware.

The encoder hands every self-attention core (`softmax(q kᵀ / sqrt(d)) v`) to a
backend object, so the same encoder runs on the NPU, on a bit-exact emulator
of the NPU kernel, or on the float CPU path. Backends are looked up by name so
that the CLI, the Python API and the faster-whisper/WhisperX integrations all
accept the same `attention=` strings.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger("amanuensis_npu")


@dataclass
class AttentionStats:
    """Counters a backend keeps so a transcription can report what really ran.

    Thread-safe: one backend may serve several transcriptions at once.
    """

    calls: int = 0
    fallbacks: int = 0
    fallback_reasons: Counter = field(default_factory=Counter)
    dispatches: int = 0
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    device_time_s_per_layer: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: Any) -> None:
        """Increment counters atomically (`fallback_reason=` and `layer_time=(layer, s)`).

        The same increments go to every collector opened with `collect_stats()`
        in the calling context, which is how one transcription gets its own
        counters while several share a backend.
        """
        for collector in _COLLECTORS.get():
            collector._apply(dict(deltas))
        self._apply(deltas)

    def _apply(self, deltas: dict[str, Any]) -> None:
        with self._lock:
            reason = deltas.pop("fallback_reason", None)
            if reason is not None:
                self.fallbacks += 1
                self.fallback_reasons[reason] += 1
            layer_time = deltas.pop("layer_time", None)
            if layer_time is not None:
                layer, seconds = layer_time
                prev = self.device_time_s_per_layer.get(layer, 0.0)
                self.device_time_s_per_layer[layer] = prev + seconds
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to keep after the backend moves on."""
        with self._lock:
            return {
                "attention_calls": self.calls,
                "fallbacks": self.fallbacks,
                "fallback_reasons": dict(self.fallback_reasons),
                "dispatches": self.dispatches,
                "bytes_to_device": self.bytes_to_device,
                "bytes_from_device": self.bytes_from_device,
                "device_time_s_per_layer": dict(self.device_time_s_per_layer),
            }


_COLLECTORS: contextvars.ContextVar[tuple[AttentionStats, ...]] = contextvars.ContextVar(
    "amanuensis_npu_stats_collectors", default=()
)


@contextlib.contextmanager
def collect_stats() -> Iterator[AttentionStats]:
    """Counters for the attention work done inside this block, in this thread/context only."""
    stats = AttentionStats()
    token = _COLLECTORS.set((*_COLLECTORS.get(), stats))
    try:
        yield stats
    finally:
        _COLLECTORS.reset(token)


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here: a few words for the one-line warning, and the whole story.

    `summary` goes into the fallback line users see on every run without the device
    (`cpu_fallback_message`); `detail` is shown once, by `amanuensis-npu info`.
    """

    ok: bool
    summary: str
    detail: str = ""
    simulated: bool = False


class AttentionBackend:
    """Computes `softmax(q kᵀ / sqrt(head_dim)) v` for one encoder layer.

    Inputs and output are `torch.float32` tensors of shape
    `[batch, heads, frames, head_dim]`. `layer` is the encoder layer index,
    passed so device backends can report per-layer timings; backends must not
    change their arithmetic because of it.
    """

    name: str = "abstract"

    def __init__(self) -> None:
        self.stats = AttentionStats()

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        self.stats.add(calls=1)
        return self.forward(q, k, v, layer=layer)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def availability(cls) -> Availability:
        """Whether this backend can run on this machine; host backends always can."""
        return Availability(True, cls.name, f"{cls.name} runs on the host")

    @property
    def route(self) -> str:
        """What actually computes attention, for the line that reports what ran."""
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class CPUAttention(AttentionBackend):
    """Float32 attention on the CPU; the reference path and the fallback."""

    name = "cpu"

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        return cpu_attention(q, k, v)


def cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Float attention with the scale applied at run time, as CTranslate2 does."""
    return F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]))


# name -> "module:attribute" of a zero-argument factory, imported on first use so
# that `import amanuensis_npu` stays cheap and optional backends cannot break it. The
# strings are data: this module imports no backend, backends import this module.
_REGISTRY: dict[str, str | Callable[[], AttentionBackend]] = {
    "cpu": CPUAttention,
    "emulator": "amanuensis_npu.npu.emulator:EmulatorAttention",
    "npu": "amanuensis_npu.npu.backend:NPUAttention",
}
_SINGLETONS: dict[str, AttentionBackend] = {}
_SINGLETON_LOCK = threading.Lock()
FALLBACK_HINT = "attention runs on the CPU (details: amanuensis-npu info)"


def register_backend(name: str, factory: str | Callable[[], AttentionBackend]) -> None:
    """Make a backend selectable by name everywhere (`attention=name`, CLI `--attention`)."""
    _REGISTRY[name] = factory


def backend_names() -> list[str]:
    """Names accepted by `get_backend`, `auto` included."""
    return ["auto", *_REGISTRY]


def _factory(name: str) -> Callable[[], AttentionBackend]:
    target = _REGISTRY[name]
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def backend_availability(name: str) -> Availability:
    """Whether the registered backend `name` can run here, without constructing it."""
    try:
        factory = _factory(name)
    except ImportError as exc:  # pragma: no cover - only when the package is broken
        return Availability(False, f"{name} backend missing", f"cannot import it ({exc})")
    probe = getattr(factory, "availability", None)
    return probe() if callable(probe) else Availability(True, name)


def npu_availability() -> tuple[bool, str]:
    """Whether the NPU backend can run here, and the whole reason (what `info` shows)."""
    found = backend_availability("npu")
    return found.ok, found.detail


def resolve_auto() -> tuple[str, str]:
    """The backend `auto` picks and the whole reason, for `info` and the fallback warning."""
    ok, reason = npu_availability()
    return ("npu" if ok else "cpu"), reason


def cpu_fallback_message(summary: str) -> str:
    """The one line every route prints when attention meant for a device runs on the CPU.

    `auto` and an explicit `attention="npu"` use the same words; the long reason
    belongs to `amanuensis-npu info`, which says it once.
    """
    return f"{summary}; {FALLBACK_HINT}"


def live_backend(name: str) -> AttentionBackend | None:
    """The shared instance `get_backend(name)` made in this process, if any (never creates one)."""
    with _SINGLETON_LOCK:
        return _SINGLETONS.get(name)


_warned_auto = False


def get_backend(name: str | AttentionBackend = "auto") -> AttentionBackend:
    """Return the shared backend instance for `name` (or pass an instance through).

    Instances are shared per process so that one NPU device serves every model
    and its statistics add up; `auto` prefers the NPU and otherwise warns once,
    in one short line, and uses the CPU backend.
    """
    global _warned_auto
    if isinstance(name, AttentionBackend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"attention must be a backend name or an AttentionBackend, got {name!r}")
    key = name.lower()
    if key == "auto":
        found = backend_availability("npu")
        key = "npu" if found.ok else "cpu"
        if not found.ok and not _warned_auto:
            logger.warning(cpu_fallback_message(found.summary))
            _warned_auto = True
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown attention backend {name!r}; choose one of: {', '.join(backend_names())}"
        )
    with _SINGLETON_LOCK:
        backend = _SINGLETONS.get(key)
        if backend is None:
            backend = _factory(key)()
            _SINGLETONS[key] = backend
    return backend
