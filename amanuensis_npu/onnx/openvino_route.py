"""The OpenVINO encoder route (`encoder="openvino[:DEVICE[:PRECISION]]"`).

Our ONNX export compiled by the `openvino` package (`Core().compile_model(onnx, device,
config)`), on the CPU, an Intel GPU or NPU, or AUTO. Why the `openvino` package and not
the OpenVINO plugin EP: both gave the same output and the same time on our export
(measured side by side, 2 threads: 2.43 s vs 2.41 s per window on a loaded machine, max
abs difference between them 0), and the package is one wheel on Linux, Windows and
macOS that does not depend on one onnxruntime version.

Precision is always stated: f32 unless asked (OpenVINO's CPU default is bf16 on CPUs
with AMX or avx512_bf16, which changes the transcript). Fallback, batch sizes and
counters are the ONNX route's (runner.py): a device that cannot compile or run the
model sends those calls to our torch encoder on the CPU, said once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import providers as eps
from .runner import OnnxRoute

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


def describe() -> dict[str, str]:
    """What `amanuensis-npu info` shows about openvino."""
    version = installed()
    if version is None:
        return {"version": "not installed (pip install openvino: encoder=openvino)"}
    return {"version": version, "devices": ", ".join(available_devices()) or "none"}


class CompiledEncoder:
    """An OpenVINO compiled model with the two methods the ONNX route calls on a session."""

    def __init__(self, compiled: Any, device: str) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        try:
            ran = [str(d) for d in compiled.get_property("EXECUTION_DEVICES")]
        except Exception:
            ran = [device]
        self.devices = ran or [device]

    def get_providers(self) -> list[str]:
        return list(self.devices)

    def run(self, outputs: Any, feed: dict) -> list:
        (x,) = feed.values()
        return [self.request.infer({0: x})[0].copy()]


def compile_encoder(path: Path, providers: list[tuple[str, dict]], threads: int) -> Any:
    """Compile the export at `path` for `providers[0]` = (device, {"precision": ...})."""
    import openvino

    device, options = providers[0]
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if device in ("CPU", "AUTO", "GPU"):
        config["INFERENCE_PRECISION_HINT"] = options.get("precision", "f32")
    if threads > 0 and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    if device != "CPU":  # GPU/NPU compiles are slow: OpenVINO caches them here
        config["CACHE_DIR"] = str(eps.provider_cache_dir() / "openvino")
    core = openvino.Core()
    return CompiledEncoder(core.compile_model(str(path), device, config), device)


class OpenVinoRoute(OnnxRoute):
    """Encoder route `openvino:<device that ran>` (see the module docstring)."""

    def __init__(
        self,
        weights: dict,
        model_sha256: str,
        device: str,
        precision: str,
        fallback: Any,
        *,
        threads: int = 0,
        export_dir: Path | None = None,
    ) -> None:
        self.device, self.precision = device, precision
        super().__init__(
            weights,
            model_sha256,
            [(device, {"precision": precision})],
            fallback,
            threads=threads,
            session_factory=compile_encoder,
            export_dir=export_dir,
        )

    @property
    def name(self) -> str:
        suffix = "" if self.precision == "f32" else f":{self.precision}"
        return f"{NAME}:{self._provider}{suffix}"

    def missing(self, requested: list[str], got: list[str]) -> list[str]:
        """AUTO may pick any device; an explicit one must be the one that ran."""
        return [] if requested == ["AUTO"] else super().missing(requested, got)
