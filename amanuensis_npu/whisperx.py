"""WhisperX with our encoder: the names WhisperX users import.

`from amanuensis_npu.whisperx import load_model` is the documented entry point
(whisperx's `load_model` signature, `device="npu"`); the code lives in
`amanuensis_npu.integrations.whisperx` beside the other integrations.
"""

from __future__ import annotations

from .integrations.whisperx import (
    AMD_NPU,
    DEVICE_NAMES,
    DiarizationPipeline,
    ModelUnavailableError,
    NPUWhisperModel,
    UnsupportedComputeTypeError,
    WhisperXNPUError,
    align,
    claims_device,
    install,
    load_align_model,
    load_model,
    uninstall,
)

__all__ = [
    "AMD_NPU",
    "DEVICE_NAMES",
    "DiarizationPipeline",
    "ModelUnavailableError",
    "NPUWhisperModel",
    "UnsupportedComputeTypeError",
    "WhisperXNPUError",
    "align",
    "claims_device",
    "install",
    "load_align_model",
    "load_model",
    "uninstall",
]
