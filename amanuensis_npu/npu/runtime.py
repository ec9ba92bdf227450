"""The NPU runtime's public names in one import, for scripts, benchmarks and the kernel build.

Each lives in the module of its concern:

- `config`: the ``AMANUENSIS_NPU_*`` settings;
- `xrt`: finding pyxrt (or the simulated `xrt_sim`) and the NPU generation;
- `artifacts` / `sim_artifacts`: kernel artifact search and manifest checks;
- `session`: the open device, its hardware context, buffers and dispatch;
- `status`: whether the NPU can run here and why (`auto`, the fallback line, `info`);
- `backend`: `NPUAttention` (``attention="npu"``) and its CPU fallback policy.
"""

from __future__ import annotations

from .artifacts import (
    Artifact,
    ArtifactSet,
    artifact_roots,
    check_artifact,
    find_artifacts,
    read_insts,
)
from .backend import NPUAttention
from .config import SettingError, max_failures, simulated_batches, timeout_ms, xrt_mode
from .errors import NPUError, RunTimedOut
from .session import DispatchTiming, Session
from .sim_artifacts import artifacts_for
from .status import availability, describe, probe
from .xrt import device_nodes, import_pyxrt, load_xrt, target_from_name, target_from_sysfs

__all__ = [
    "Artifact",
    "ArtifactSet",
    "DispatchTiming",
    "NPUAttention",
    "NPUError",
    "RunTimedOut",
    "Session",
    "SettingError",
    "artifact_roots",
    "artifacts_for",
    "availability",
    "check_artifact",
    "describe",
    "device_nodes",
    "find_artifacts",
    "import_pyxrt",
    "load_xrt",
    "max_failures",
    "probe",
    "read_insts",
    "simulated_batches",
    "target_from_name",
    "target_from_sysfs",
    "timeout_ms",
    "xrt_mode",
]
