"""The OpenVINO encoder route (`encoder="openvino[:DEVICE[:PRECISION]]"`).

Our ONNX export compiled by the `openvino` package (`Core().compile_model(onnx, device,
config)`), on the CPU, an Intel GPU or NPU, or AUTO. Why the `openvino` package and not
the OpenVINO plugin EP: both gave the same output and the same time on our export
(measured side by side, 2 threads: 2.43 s vs 2.41 s per window on a loaded machine, max
abs difference between them 0), and the package is one wheel on Linux, Windows and
macOS that does not depend on one onnxruntime version.

Which device and precision run, and what `auto` picks, is devices.py's.

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

from ..onnx import providers as eps
from ..onnx.runner import OnnxRoute
from .devices import NAME, auto_precision, available_devices, installed, native_bf16

logger = logging.getLogger("amanuensis_npu")


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
