"""Routing: which implementation of Whisper's encoder runs, chosen with `encoder=`.

- "torch": our PyTorch encoder; its attention core goes to an AttentionBackend (our
  NPU kernel, its emulator, or the CPU), see attention.py.
- "onnx": the whole encoder exported to ONNX and run by ONNX Runtime on an execution
  provider: the vendors' own NPU route (VitisAI, OpenVINO, QNN), or the CPU. Any call
  it cannot run goes to our torch encoder on the CPU (amanuensis_npu/onnx/runner.py).
- "openvino[:DEVICE[:PRECISION]]": the ONNX export compiled by OpenVINO for CPU (default),
  GPU, NPU or AUTO, in f32 unless bf16/f16 is asked (amanuensis_npu/openvino/).
- "auto": with `device="npu"` and `attention="auto"`, an NPU execution provider if
  onnxruntime has one (it moves the whole encoder); else the torch encoder with our
  NPU attention kernel when that is usable; else the CPU: OpenVINO's encoder when
  openvino is installed (faster than ours), in bf16 where the CPU computes bf16 natively
  (closer to float32 than stock faster-whisper's int8 encoder, and twice as fast as it;
  measured by benchmarks/cpu_precision.py), else f32; else our torch encoder, with
  one short warning that points at `amanuensis-npu info` for the reasons (none when the
  user switched the NPU off with AMANUENSIS_NPU_XRT=off). With `device="cpu"`, or an
  explicit `attention=`, the torch encoder.

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

ENCODERS = ("auto", "torch", "onnx", "openvino")
NO_NPU_LINE = "No NPU found; the encoder runs on the CPU (details: amanuensis-npu info)"


def check_encoder(encoder: str) -> str:
    """The encoder setting normalised ("openvino:npu" -> "openvino:NPU:f32"), or ValueError."""
    if isinstance(encoder, str) and encoder.split(":")[0].lower() == "openvino":
        from .openvino.devices import parse

        device, precision = parse(encoder)
        return f"openvino:{device}:{precision}"
    key = encoder.lower() if isinstance(encoder, str) else encoder
    if key not in ENCODERS:
        raise ValueError(
            f"encoder must be one of {', '.join(ENCODERS)} (openvino[:DEVICE[:PRECISION]]), "
            f"got {encoder!r}"
        )
    return key


def _npu_switched_off() -> bool:
    from .npu.config import xrt_mode

    try:
        return xrt_mode() == "off"
    except Exception:  # a bad value is reported where the NPU is opened
        return False


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
    from .openvino.devices import auto_precision, installed

    version = installed()
    if version is not None:
        precision, because = auto_precision()
        why = (
            f"{ort_reason}; attention: {npu.summary}; "
            f"openvino {version} on the CPU in {precision}; {because}"
        )
        return f"openvino:CPU:{precision}", why
    return "torch:cpu", f"{ort_reason}; attention: {npu.summary}; openvino not installed"


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
    reason = f"encoder={encoder!r} chosen explicitly"
    if encoder == "auto":
        if onnx_providers is not None:
            encoder = "onnx"  # naming providers is asking for the ONNX route
            reason = "auto: onnx_providers named"
        else:
            choice, why = resolve_auto(device, attention)
            reason = f"auto: {why}"
            logger.info("encoder auto: %s (%s)", choice, why)
            if choice.startswith("onnx:"):
                encoder = "onnx"
            else:
                encoder = choice if choice.startswith("openvino:") else TORCH
                on_cpu = choice == "torch:cpu" or choice.startswith("openvino:CPU:")
                if on_cpu and device != "cpu" and _attention_is_auto(attention):
                    if not _npu_switched_off():  # the user's own choice needs no warning
                        _warn_once("auto", NO_NPU_LINE)
                    attention = "cpu"  # said once above; the attention layer need not repeat it
    if encoder == TORCH:
        if onnx_providers is not None:
            raise ValueError("onnx_providers applies to encoder='onnx' (or 'auto')")
        torch_encoder = WhisperEncoder.from_weights(weights, get_backend(attention))
        torch_route = TorchRoute(torch_encoder)
        torch_route.reason = reason
        return torch_route, torch_encoder
    if not (_attention_is_auto(attention) or attention == "cpu"):
        raise ValueError(
            f"attention={attention!r} applies to encoder='torch'; the ONNX encoder computes "
            "attention inside ONNX Runtime"
        )
    if encoder.startswith("openvino:"):
        if onnx_providers is not None:
            raise ValueError("onnx_providers applies to encoder='onnx' (or 'auto')")
        from .openvino.route import OpenVinoRoute

        _, ov_device, precision = encoder.split(":")
        fallback = WhisperEncoder.from_weights(weights, get_backend("cpu"))
        route = OpenVinoRoute(
            weights, model_sha256(), ov_device, precision, fallback, threads=threads
        )
        route.reason = f"{reason}; {route.downgraded}" if route.downgraded else reason
        return route, fallback
    from .onnx.providers import CPU, check_spec, default_spec
    from .onnx.runner import OnnxRoute

    spec = check_spec(onnx_providers) if onnx_providers is not None else default_spec(device)
    if onnx_providers is None and device != "cpu" and spec == [CPU]:
        _warn_once(  # device="npu" asked for an NPU provider; say there is none
            "onnx-cpu",
            "ONNX: no NPU execution provider; runs on CPUExecutionProvider "
            "(details: amanuensis-npu info)",
        )
    fallback = WhisperEncoder.from_weights(weights, get_backend("cpu"))
    route = OnnxRoute(weights, model_sha256(), spec, fallback, threads=threads)
    route.reason = reason
    return route, fallback


def describe(device: str = "npu") -> dict[str, Any]:
    """`info` lines: what `auto` picks for `device` and why."""
    choice, reason = resolve_auto(device)
    return {"encoder_auto_picks": choice, "encoder_auto_reason": reason}
