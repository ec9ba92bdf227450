"""The OpenVINO encoder route (`encoder="openvino[:DEVICE[:PRECISION]]"`).

Our ONNX export compiled by the `openvino` package (`Core().compile_model(onnx, device,
config)`), on the CPU, an Intel GPU or NPU, or AUTO. Why the `openvino` package and not
the OpenVINO plugin EP: both gave the same output and the same time on our export
(measured side by side, 2 threads: 2.43 s vs 2.41 s per window on a loaded machine, max
abs difference between them 0), and the package is one wheel on Linux, Windows and
macOS that does not depend on one onnxruntime version.

Precision is always stated: f32 when `openvino[:DEVICE]` names none. What `auto` picks
on the CPU is `auto_precision()`'s: bf16 where OpenVINO computes bf16 natively
(avx512_bf16 or AMX: Zen 4, Zen 5, Sapphire Rapids and later), f32 elsewhere. Measured
with benchmarks/cpu_precision.py on the test speech: bf16's encoder is closer to
CTranslate2's float32 encoder than stock faster-whisper's int8 encoder is, on every
window, and about twice as fast as it (README, "Precision on the CPU").

Compiled models are cached (OpenVINO's CACHE_DIR) so a second start compiles nothing.
OpenVINO keys a model compiled from a file by its path and options only (openvino
src/inference/src/compilation_context.cpp, `ModelCache::compute_hash(model_path, ...)`),
not by its content, so each export gets a cache folder named after the file's size and
modification time: an export written again gets a new folder, and the old ones go.

Fallback, batch sizes and counters are the ONNX route's (runner.py): a device that cannot
compile or run the model sends those calls to our torch encoder on the CPU, said once.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from . import providers as eps
from .runner import OnnxRoute

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
NAME = "openvino"

logger = logging.getLogger("amanuensis_npu")


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


def describe() -> dict[str, str]:
    """What `amanuensis-npu info` shows about openvino."""
    version = installed()
    if version is None:
        return {"version": "not installed (pip install openvino: encoder=openvino)"}
    precision, why = auto_precision()
    return {
        "version": version,
        "devices": ", ".join(available_devices()) or "none",
        "auto_precision": f"{precision} ({why})",
        "compile_cache": str(cache_root()),
    }


def cache_root() -> Path:
    """Where OpenVINO's compiled models are kept (beside the other providers' compiles)."""
    return eps.provider_cache_dir() / "openvino"


def cache_dir_for(export: Path) -> Path:
    """OpenVINO's CACHE_DIR for this export file as it is now (see the module docstring);
    folders of earlier versions of the same export are removed."""
    st = export.stat()
    root = cache_root()
    target = root / f"{export.stem}-{st.st_size}-{st.st_mtime_ns}"
    if root.is_dir():
        for old in root.glob(f"{export.stem}-*"):
            if old != target and old.is_dir() and old.name.count("-") == target.name.count("-"):
                shutil.rmtree(old, ignore_errors=True)
    return target


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
        try:  # True when OpenVINO read the compiled model from CACHE_DIR: nothing compiled
            self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:
            self.loaded_from_cache = False

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
    try:
        config["CACHE_DIR"] = str(cache_dir_for(path))
    except OSError as exc:  # an unwritable cache costs a compile per start, nothing else
        logger.info("OpenVINO compile cache unavailable (%s)", exc)
    core = openvino.Core()
    compiled = CompiledEncoder(core.compile_model(str(path), device, config), device)
    logger.info(
        "OpenVINO %s encoder (batch file %s) %s", device, path.name,
        "loaded from its compile cache" if compiled.loaded_from_cache else "compiled",
    )  # fmt: skip
    return compiled


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
        self.downgraded = ""  # why the precision that runs is not the one asked for
        if precision == "bf16" and device == "CPU":
            native, why = native_bf16()
            if not native:  # OpenVINO 2026.4 crashes (SIGSEGV) on bf16 without bf16 hardware
                logger.warning("OpenVINO: %s (needs avx512_bf16 or AMX); the encoder runs in f32",
                               why)
                self.downgraded = f"bf16 asked, {why}: f32 ran"
                precision = "f32"
        self.requested_device, self._precision = device, precision
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
    def precision(self) -> str:
        """The inference precision hint OpenVINO compiled the encoder with."""
        return self._precision

    @property
    def name(self) -> str:
        suffix = "" if self.precision == "f32" else f":{self.precision}"
        return f"{NAME}:{self._provider}{suffix}"

    def missing(self, requested: list[str], got: list[str]) -> list[str]:
        """AUTO may pick any device; an explicit one must be the one that ran."""
        return [] if requested == ["AUTO"] else super().missing(requested, got)
