"""What OpenVINO offers here, and what `encoder="openvino[:DEVICE[:PRECISION]]"` asks of it.

Precision is always stated: f32 when `openvino[:DEVICE]` names none. What `auto` picks
on the CPU is `auto_precision()`'s: bf16 where OpenVINO computes bf16 natively
(avx512_bf16 or AMX: Zen 4, Zen 5, Sapphire Rapids and later), f32 elsewhere. Measured
with benchmarks/cpu_precision.py on the test speech: bf16's encoder is closer to
CTranslate2's float32 encoder than stock faster-whisper's int8 encoder is, on every
window, and about twice as fast as it (README, "Precision on the CPU").

Apart from the compiling route (route.py), so that checking an `encoder=` setting loads
neither openvino nor the ONNX route.
"""

from __future__ import annotations

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
NAME = "openvino"


def parse(encoder: str) -> tuple[str, str]:
    """(device, precision) from "openvino", "openvino:NPU", "openvino:CPU:bf16"."""
    parts = encoder.split(":")
    if parts[0].lower() != NAME or len(parts) > 3:
        raise ValueError(f"not an OpenVINO encoder: {encoder!r}")
    device = (parts[1] if len(parts) > 1 and parts[1] else "CPU").upper()
    precision = parts[2].lower() if len(parts) > 2 else "f32"
    if device.split(".")[0] not in DEVICES:
        raise ValueError(f"OpenVINO device must be one of {', '.join(DEVICES)}, got {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be f32, f16 or bf16, got {precision!r}")
    return device, PRECISIONS[precision]


def installed() -> str | None:
    """The importable openvino's version, or None."""
    try:
        import openvino
    except Exception:  # ImportError, or a wheel that does not load on this system
        return None
    return str(getattr(openvino, "__version__", "unknown")).split("-")[0]


def available_devices() -> list[str]:
    """OpenVINO's devices here (e.g. ["CPU"]); empty without openvino."""
    try:
        import openvino

        return [str(d) for d in openvino.Core().available_devices]
    except Exception:
        return []


def native_bf16() -> tuple[bool, str]:
    """Whether OpenVINO computes bf16 natively on this CPU, and what says so.

    OpenVINO's CPU plugin lists BF16 among its OPTIMIZATION_CAPABILITIES and makes bf16
    its default INFERENCE_PRECISION_HINT only where the CPU has bf16 instructions
    (avx512_bf16 or AMX); a capability without that default would be emulated and slow.
    """
    try:
        import openvino

        core = openvino.Core()
        caps = {str(c).upper() for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
        default = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    except Exception as exc:  # no openvino, or a CPU plugin that cannot say
        return False, f"OpenVINO cannot tell ({type(exc).__name__})"
    if "BF16" in caps and default == openvino.Type.bf16:
        return True, "the CPU computes bf16 natively"
    return False, "no native bf16 on this CPU"


def auto_precision() -> tuple[str, str]:
    """The precision `encoder="auto"` runs OpenVINO's CPU encoder in, and why."""
    native, why = native_bf16()
    return ("bf16", why) if native else ("f32", why)
