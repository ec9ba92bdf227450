"""ONNX Runtime execution providers for the encoder: which NPU one is here, with which options.

Two kinds of vendor packages (see plugins.py): *plugin* EPs installed beside the PyPI
onnxruntime (Qualcomm `onnxruntime-qnn` 2.x, Intel `onnxruntime-ep-openvino`), chosen by
device; and *classic* builds that replace the `onnxruntime` module (AMD's VitisAI build
in Ryzen AI Software, `onnxruntime-openvino`), chosen by name in `providers=`. `auto`
asks both. Options are the ones each vendor documents:

- VitisAI: `config_file`, `cache_dir`, `cache_key`, as AMD's Whisper demo passes them
  (amd/RyzenAI-SW Demos/ASR/Whisper/run_whisper.py, `load_provider_options`); onnxruntime's
  docs/execution-providers/Vitis-AI-ExecutionProvider.md: the compiled model is cached in
  `{cache_dir}/{cache_key}`, compiled when the session starts. Our config file is
  modelled on the demo's config/vitisai_config_whisper_encoder.json (see that file).
- OpenVINO: `device_type` (NPU, GPU, CPU, AUTO) and `precision`, stated explicitly
  (FP32 unless asked: the CPU's default on AMX/avx512_bf16 CPUs is bf16, which changes
  results). The classic build takes both as provider options
  (docs/execution-providers/OpenVINO-ExecutionProvider.md); the plugin ignores them
  ("Provider option precision is ignored. Please set it via the load_config"), so for it
  `device_type` picks the OrtEpDevice whose `ov_device` matches and `precision` goes into
  `load_config` as `{"<device>": {"INFERENCE_PRECISION_HINT": "f32"}}`.
- QNN: `backend_path` = the HTP library, `QnnHtp.dll` on Windows, `libQnnHtp.so` on Linux
  and Android (docs/execution-providers/QNN-ExecutionProvider.md; onnxruntime_qnn's
  `_lib_name`), in the plugin package's folder when it is the plugin; float models run in
  FP16 (`enable_htp_fp16_precision=1`), which off the device (x86, the emulated HTP) also
  needs a target, `soc_model` with `htp_arch`. The graph is compiled ahead of time into an
  EP context file, cached like VitisAI's (sessions.py).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.models import cache_dir
from . import plugins

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
    """What onnxruntime offers, plugin EPs registered first; empty without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return []
    plugins.register_plugins()
    return list(onnxruntime.get_available_providers())


def provider_devices(name: str) -> list[str] | None:
    """Device kinds an available provider runs on (["CPU", "NPU"]), None when unknown."""
    if plugins.is_plugin(name):
        return plugins.device_summary(name)
    if name == OPENVINO:
        devices = openvino_devices()
        return None if devices is None else sorted({d.split(".")[0] for d in devices})
    return None


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
        devices = provider_devices(name)
        if devices is not None and "NPU" not in devices:
            short = name.removesuffix("ExecutionProvider")
            skipped.append(f"{short} sees no NPU ({', '.join(devices) or 'no devices'})")
            continue
        kind = "plugin" if plugins.is_plugin(name) else "build"
        return name, f"onnxruntime {version} offers {name} ({kind}) with an NPU"
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
        devices = provider_devices(OPENVINO)
        device = "NPU" if devices is None or "NPU" in devices else "CPU"
        return {"device_type": device, "precision": "FP32"}
    if name == QNN:
        return qnn_options()
    return {}


# The emulated HTP (x86) needs a target to compile for: a Snapdragon 8 Gen 2-class SoC
# (QNN docs: `soc_model`, `htp_arch` v73). On the device itself the backend finds its own.
QNN_EMULATION_TARGET = {"soc_model": "60", "htp_arch": "73"}


def qnn_backend_library(system: str | None = None) -> str:
    """The QNN HTP backend's file name on this platform (`sys.platform` values)."""
    return "QnnHtp.dll" if (system or sys.platform) == "win32" else "libQnnHtp.so"


def qnn_options(fp16: bool = True, target: dict[str, str] | None = None) -> dict[str, str]:
    """QNN HTP provider options for our float export (see the module docstring)."""
    library = qnn_backend_library()
    plugin = plugins.registered().get(QNN)
    if plugin is not None:  # the plugin package ships its backends beside its library
        library = str(Path(plugin.library).with_name(library))
    options = {"backend_path": library}
    if fp16:
        options["enable_htp_fp16_precision"] = "1"
        if target is None and platform.machine().lower() in ("x86_64", "amd64"):
            target = QNN_EMULATION_TARGET
        options.update(target or {})
    return options


_OV_PRECISION = {"FP32": "f32", "F32": "f32", "FP16": "f16", "F16": "f16", "BF16": "bf16"}


def openvino_plugin_options(options: dict, threads: int = 0) -> tuple[str, dict[str, str]]:
    """(device, options) for the OpenVINO plugin from options in the classic form.

    `device_type` chooses the device, `precision` becomes the load_config's precision
    hint (f32 when not given), `threads` its INFERENCE_NUM_THREADS; other options pass
    through as strings.
    """
    rest = {k: v for k, v in options.items() if k not in ("device_type", "precision")}
    device = str(options.get("device_type", "CPU")).upper()
    precision = str(options.get("precision", "FP32")).upper()
    hint = _OV_PRECISION.get(precision)
    if hint is None:
        raise ValueError(f"OpenVINO precision {precision!r}: use FP32, FP16 or BF16")
    config = json.loads(rest.get("load_config") or "{}")
    target = config.setdefault(device.split(".")[0], {})
    target.setdefault("INFERENCE_PRECISION_HINT", hint)
    if threads > 0:
        target.setdefault("INFERENCE_NUM_THREADS", str(threads))
    rest["load_config"] = json.dumps(config)
    return device.split(".")[0], {k: str(v) for k, v in rest.items()}


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
    available = available_providers()
    found = plugins.registered()
    info["plugins"] = ", ".join(f"{n} ({p.package})" for n, p in found.items()) or "none"
    for package, why in plugins.failed_plugins().items():
        info[f"plugin_failed_{package}"] = why
    for name in (*NPU_PROVIDERS, *sorted(found)):
        # A registered plugin is listed even when it offers no device: onnxruntime then
        # leaves it out of its providers (OpenVINO's plugin on an AMD CPU), and "none"
        # says why it is not used.
        if (name in available or name in found) and f"devices_{name}" not in info:
            devices = provider_devices(name)
            listed = ", ".join(devices or ["none"]) if devices is not None else "unknown"
            info[f"devices_{name}"] = listed
    if name == VITISAI:
        info["vitisai_config"] = str(vitisai_config_file())
        info["vitisai_cache"] = str(provider_cache_dir())
    return info
