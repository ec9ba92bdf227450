"""Encoder routes: which implementation of Whisper's encoder runs, chosen with `encoder=`.

- "torch": our PyTorch encoder; its attention core goes to an AttentionBackend (our
  NPU kernel, its emulator, or the CPU), see attention.py.
- "onnx": the whole encoder exported to ONNX and run by ONNX Runtime on an execution
  provider: the vendors' own NPU route (VitisAI, OpenVINO, QNN), or the CPU. Any call
  it cannot run goes to our torch encoder on the CPU (amanuensis_npu/onnx/runner.py).
- "auto": with `device="npu"` and `attention="auto"`, an NPU execution provider if
  onnxruntime has one (it moves the whole encoder); else the torch encoder with our
  NPU attention kernel when that is usable; else the torch encoder on the CPU, with one
  warning naming what was tried. With `device="cpu"`, or an explicit `attention=`, the
  torch encoder.

The routes themselves and their per-transcription counters live in core/routes.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .attention import AttentionBackend, backend_availability, get_backend
from .core.routes import TORCH, EncoderRoute, TorchRoute

logger = logging.getLogger("amanuensis_npu")

ENCODERS = ("auto", "torch", "onnx")


def check_encoder(encoder: str) -> str:
    key = encoder.lower() if isinstance(encoder, str) else encoder
    if key not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    return key


def _attention_is_auto(attention: str | AttentionBackend) -> bool:
    return isinstance(attention, str) and attention.lower() == "auto"


def resolve_auto(device: str, attention: str | AttentionBackend = "auto") -> tuple[str, str]:
    """What `encoder="auto"` picks ("onnx:<provider>", "torch:npu" or "torch:cpu") and why."""
    if device == "cpu":
        return "torch:cpu", "device cpu"
    if not _attention_is_auto(attention):
        return "torch", f"attention={attention!r} chosen explicitly"
    from .onnx.providers import npu_provider

    provider, ort_reason = npu_provider()
    if provider is not None:
        return f"onnx:{provider}", ort_reason
    npu = backend_availability("npu")
    if npu.ok:
        return "torch:npu", f"{ort_reason}; attention: {npu.summary}"
    return "torch:cpu", f"{ort_reason}; attention: {npu.summary}"


_warned: set[str] = set()  # the one-time warnings this process has given
_warn_lock = threading.Lock()


def _warn_once(kind: str, message: str, *args: Any) -> None:
    """Log `message` the first time `kind` comes up in this process: a model per file in a
    loop must not repeat it."""
    with _warn_lock:
        if kind in _warned:
            return
        _warned.add(kind)
    logger.warning(message, *args)


def build_route(
    encoder: str,
    device: str,
    attention: str | AttentionBackend,
    weights: dict[str, np.ndarray],
    model_sha256: Callable[[], str],
    onnx_providers: Sequence[Any] | None = None,
    threads: int = 0,
) -> tuple[EncoderRoute, Any]:
    """The route for these settings and the torch encoder it uses (or falls back to).

    `device` is already validated; `attention` already has the device's default.
    """
    from .core.encoder import WhisperEncoder

    encoder = check_encoder(encoder)
    if encoder == "auto":
        if onnx_providers is not None:
            encoder = "onnx"  # naming providers is asking for the ONNX route
        else:
            choice, reason = resolve_auto(device, attention)
            if choice.startswith("onnx:"):
                encoder = "onnx"
                logger.info("encoder auto: ONNX Runtime (%s)", reason)
            else:
                encoder = TORCH
                if choice == "torch:cpu" and device != "cpu" and _attention_is_auto(attention):
                    _warn_once(
                        "auto",
                        "No NPU (%s); the encoder runs on the CPU (details: amanuensis-npu info)",
                        reason,
                    )
                    attention = "cpu"  # said once above; the attention layer need not repeat it
    if encoder == TORCH:
        if onnx_providers is not None:
            raise ValueError("onnx_providers applies to encoder='onnx' (or 'auto')")
        torch_encoder = WhisperEncoder.from_weights(weights, get_backend(attention))
        return TorchRoute(torch_encoder), torch_encoder
    if not (_attention_is_auto(attention) or attention == "cpu"):
        raise ValueError(
            f"attention={attention!r} applies to encoder='torch'; the ONNX encoder computes "
            "attention inside ONNX Runtime"
        )
    from .onnx.providers import CPU, check_spec, default_spec, npu_provider
    from .onnx.runner import OnnxRoute

    spec = check_spec(onnx_providers) if onnx_providers is not None else default_spec(device)
    if onnx_providers is None and device != "cpu" and spec == [CPU]:
        _warn_once(  # device="npu" asked for an NPU provider; say there is none
            "onnx-cpu",
            "%s; the ONNX encoder runs on CPUExecutionProvider (details: amanuensis-npu info)",
            npu_provider()[1],
        )
    fallback = WhisperEncoder.from_weights(weights, get_backend("cpu"))
    route = OnnxRoute(weights, model_sha256(), spec, fallback, threads=threads)
    return route, fallback


def describe(device: str = "npu") -> dict[str, Any]:
    """`info` lines: what `auto` picks for `device` and why."""
    choice, reason = resolve_auto(device)
    return {"encoder_auto_picks": choice, "encoder_auto_reason": reason}
