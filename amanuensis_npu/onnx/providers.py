"""ONNX Runtime execution providers for the encoder: which NPU one is here, with which options.

The vendors reach their NPUs through ONNX Runtime builds of their own (AMD: VitisAI in
Ryzen AI Software; Intel: onnxruntime-openvino; Qualcomm: onnxruntime-qnn), each
importable as `onnxruntime`. `onnxruntime.get_available_providers()` says which one is
installed, so that is what `auto` asks. Options are the ones each vendor documents:

- VitisAI: `config_file`, `cache_dir`, `cache_key`, as AMD's Whisper demo passes them
  (amd/RyzenAI-SW Demos/ASR/Whisper/run_whisper.py, `load_provider_options`); onnxruntime's
  docs/execution-providers/Vitis-AI-ExecutionProvider.md: the compiled model is cached in
  `{cache_dir}/{cache_key}`, compiled when the session starts. Our config file is
  modelled on the demo's config/vitisai_config_whisper_encoder.json (see that file).
- OpenVINO: `device_type` = "NPU" (docs/execution-providers/OpenVINO-ExecutionProvider.md).
- QNN: `backend_path` = the HTP library, QnnHtp.dll on Windows, libQnnHtp.so elsewhere
  (docs/execution-providers/QNN-ExecutionProvider.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.models import cache_dir

VITISAI = "VitisAIExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
QNN = "QNNExecutionProvider"
CPU = "CPUExecutionProvider"
# `auto`'s order of preference: AMD first (this project's hardware), then Intel, Qualcomm.
NPU_PROVIDERS = (VITISAI, OPENVINO, QNN)

ProviderSpec = str | tuple[str, dict[str, Any]]


def onnxruntime_version() -> str | None:
    """The importable onnxruntime's version (whichever vendor built it), or None."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(getattr(onnxruntime, "__version__", "unknown"))


def available_providers() -> list[str]:
    """What the installed onnxruntime build offers; empty without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def openvino_devices() -> list[str] | None:
    """OpenVINO's device ids (e.g. CPU, GPU, NPU), or None when the build cannot say.

    The call is the one onnxruntime's OpenVINO documentation gives for listing devices;
    it only exists in the OpenVINO build.
    """
    try:
        from onnxruntime.capi import _pybind_state

        return [str(d) for d in _pybind_state.get_available_openvino_device_ids()]
    except Exception:
        return None


def npu_provider() -> tuple[str | None, str]:
    """The NPU execution provider `auto` would use, and why (or why none) in one phrase."""
    version = onnxruntime_version()
    if version is None:
        return None, "onnxruntime is not installed"
    available = available_providers()
    skipped = []
    for name in NPU_PROVIDERS:
        if name not in available:
            continue
        if name == OPENVINO:
            devices = openvino_devices()
            if devices is not None and not any(d.startswith("NPU") for d in devices):
                skipped.append(f"OpenVINO sees no NPU ({', '.join(devices) or 'no devices'})")
                continue
        return name, f"onnxruntime {version} offers {name}"
    why = f"onnxruntime {version} has no NPU execution provider"
    return None, "; ".join([why, *skipped])


def vitisai_config_file() -> Path:
    """The VitisAI pass configuration shipped in the package (package data)."""
    return Path(__file__).with_name("vitisai_config_whisper_encoder.json")


def provider_cache_dir() -> Path:
    """Where execution providers keep what they compile (VitisAI: `{this}/{cache_key}`)."""
    return cache_dir() / "onnx" / "compiled"


def cache_key(model_sha256: str, batch: int, export_format: str) -> str:
    """VitisAI's cache key: a different export never reuses another one's compiled model."""
    return f"whisper-encoder-{model_sha256[:16]}-b{batch}-f{export_format}"


def default_options(name: str, model_sha256: str, batch: int, export_format: str) -> dict:
    """The options a provider named without options gets (see the module docstring)."""
    if name == VITISAI:
        return {
            "config_file": str(vitisai_config_file()),
            "cache_dir": str(provider_cache_dir()),
            "cache_key": cache_key(model_sha256, batch, export_format),
        }
    if name == OPENVINO:
        return {"device_type": "NPU"}
    if name == QNN:
        return {"backend_path": "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"}
    return {}


def check_spec(spec: Sequence[ProviderSpec]) -> list[ProviderSpec]:
    """Validate a user's providers list (names, or (name, options) pairs) without changing it."""
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or not spec:
        raise ValueError(
            "onnx_providers must be a non-empty list of provider names or (name, options) pairs"
        )
    for item in spec:
        ok_pair = (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        )
        if not (isinstance(item, str) or ok_pair):
            raise ValueError(
                f"onnx_providers: {item!r} is neither a name nor a (name, options) pair"
            )
    return list(spec)


def default_spec(device: str) -> list[ProviderSpec]:
    """Providers when the user names none: the NPU one if onnxruntime has it, then the CPU."""
    if device == "cpu":
        return [CPU]
    name, _ = npu_provider()
    return [name, CPU] if name else [CPU]


def session_providers(
    spec: Sequence[ProviderSpec], model_sha256: str, batch: int, export_format: str
) -> list[tuple[str, dict]]:
    """ONNX Runtime's `providers=` for one exported batch size.

    A bare name gets the vendor defaults above; a (name, options) pair passes through
    unchanged, so users can set anything their vendor documents.
    """
    out = []
    for item in spec:
        if isinstance(item, str):
            out.append((item, default_options(item, model_sha256, batch, export_format)))
        else:
            out.append((item[0], item[1]))
    return out


def parse_providers(text: str | None) -> list[ProviderSpec] | None:
    """Providers from a command line or environment variable.

    Either comma-separated names ("OpenVINOExecutionProvider,CPUExecutionProvider") or
    the JSON form of ONNX Runtime's `providers=` list
    ('[["OpenVINOExecutionProvider", {"device_type": "NPU"}], "CPUExecutionProvider"]').
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"onnx providers: not valid JSON ({exc})") from None
        if not isinstance(raw, list):
            raise ValueError("onnx providers: the JSON form must be a list")
        spec = [tuple(item) if isinstance(item, list) else item for item in raw]
    else:
        spec = [name.strip() for name in text.split(",") if name.strip()]
    return check_spec(spec)


def describe() -> dict[str, Any]:
    """What `amanuensis-npu info` shows about onnxruntime."""
    name, reason = npu_provider()
    info: dict[str, Any] = {
        "version": onnxruntime_version() or "not installed",
        "providers": ", ".join(available_providers()) or "none",
        "npu_provider": name or "none",
        "reason": reason,
    }
    if OPENVINO in available_providers():
        devices = openvino_devices()
        info["openvino_devices"] = ", ".join(devices) if devices is not None else "unknown"
    if name == VITISAI:
        info["vitisai_config"] = str(vitisai_config_file())
        info["vitisai_cache"] = str(provider_cache_dir())
    return info
