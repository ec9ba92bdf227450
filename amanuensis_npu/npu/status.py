"""Whether the NPU backend can run here, and why: for `auto`, the fallback line and `info`.

`availability` answers cheaply without opening the device (pyxrt, the device node, the
NPU generation from the PCI id or the simulated device, the kernel artifacts). Its
`summary` is the few words of the one-line fallback warning ("NPU not found"), its
`detail` the whole reason, which `describe` (what `amanuensis-npu info` prints) gives once.
"""

from __future__ import annotations

import os
from typing import Any

from ..attention import Availability, live_backend
from .artifacts import ArtifactSet, artifact_roots, find_artifacts
from .config import SettingError, check, max_failures, timeout_ms, xrt_mode
from .errors import NPUError
from .sim_artifacts import artifacts_for
from .xrt import device_nodes, device_target, is_simulated, load_xrt, target_from_name

NOT_FOUND = "NPU not found"


def _any_shape(target: str, simulated: bool) -> ArtifactSet:
    """The artifacts of every model shape on hardware (a machine may have built only the
    sizes it serves); in simulation Base's set, which is generated when absent."""
    return artifacts_for(target, True) if simulated else find_artifacts(target, False, 0)


def availability() -> Availability:
    """Whether `attention="npu"` can use a device here; never raises."""
    try:
        check()
        xrt, where = load_xrt()
        if xrt is None:
            return _without_pyxrt(where)
        target, detail = device_target(xrt)
        if target is None:
            summary = NOT_FOUND if not device_nodes() else "unsupported NPU"
            return Availability(False, summary, detail)
        simulated = is_simulated(xrt)
        try:
            arts = _any_shape(target, simulated)
        except NPUError as exc:
            return Availability(False, f"no usable NPU kernel for {target}", str(exc))
    except ValueError as exc:  # a bad AMANUENSIS_NPU_* setting: its message is the summary
        text = str(exc)
        return Availability(False, text if "AMANUENSIS_NPU_" in text else "NPU check failed", text)
    except Exception as exc:  # availability must never raise
        return Availability(False, "NPU check failed", str(exc) or type(exc).__name__)
    if simulated:
        return Availability(
            True,
            f"simulated {target} NPU",
            f"SIMULATED {target} device (AMANUENSIS_NPU_XRT=sim, no NPU hardware) with "
            f"simulated kernel artifact {arts.summary()}",
            simulated=True,
        )
    return Availability(
        True, f"{target} NPU", f"{target} NPU at {detail} with kernel artifact {arts.summary()}"
    )


def _without_pyxrt(where: str) -> Availability:
    if xrt_mode() == "off":
        return Availability(False, "NPU switched off (AMANUENSIS_NPU_XRT=off)", where)
    if "failed to import" in where:
        return Availability(False, "XRT's Python bindings (pyxrt) failed to import", where)
    if device_nodes():
        return Availability(False, "NPU found but XRT's Python bindings (pyxrt) are missing", where)
    return Availability(
        False, NOT_FOUND, f"{where}; no NPU device node either (/dev/accel/accel* absent)"
    )


def probe() -> tuple[bool, str]:
    """(usable, the whole reason): `availability` as a pair, for scripts and benchmarks."""
    found = availability()
    return found.ok, found.detail


def describe() -> dict[str, Any]:
    """Everything `amanuensis-npu info` shows about XRT, the device and the artifacts.

    Says the reason once. Opens the device to read its name (harmless, and what users
    need to see when detection goes wrong); never raises.
    """
    found = availability()
    status = "available" if found.ok else "not available"
    if found.summary != found.detail:
        status += f": {found.summary}"
    info: dict[str, Any] = {
        "available": found.ok,
        "status": status,
        "reason": found.detail,
        "simulated": found.simulated,
        "xrt_mode": None,
        "pyxrt": None,
        "device_nodes": device_nodes(),
        "device_name": None,
        "target": None,
        "artifacts": [],
        "artifact_search_path": [str(r) for r in artifact_roots()],
        "settings": _settings(),
    }
    try:
        info["xrt_mode"] = xrt_mode()
        xrt, where = load_xrt()
    except SettingError:
        return info  # the reason above is the bad setting
    info["pyxrt"] = where if xrt is not None else "not available (see reason)"
    if xrt is not None:
        try:
            name = xrt.device(0).get_info(xrt.xrt_info_device.name)
            info["device_name"] = name
            info["target"] = target_from_name(name)
        except Exception as exc:
            info["device_error"] = f"could not open device 0: {exc}"
        target = info["target"] or device_target(xrt)[0]
        if target is not None:
            try:
                arts = _any_shape(target, is_simulated(xrt))
                info["artifacts"] = [
                    {
                        "directory": str(a.directory),
                        "batch": a.batch if a.batch is not None else "any",
                        "heads": a.heads,
                        "simulated": a.simulated,
                        "spec_version": a.manifest.get("spec_version"),
                        "target": a.target,
                        "sha256": a.sha256,
                    }
                    for a in arts.artifacts()
                ]
            except Exception as exc:
                info["artifact_error"] = str(exc)
    state = getattr(live_backend("npu"), "state", None)
    if callable(state):
        info["backend_state"] = state()
    return info


def _settings() -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, read in (("max_failures", max_failures), ("timeout_ms", timeout_ms)):
        try:
            settings[key] = read()
        except SettingError:
            settings[key] = "invalid (see reason)"
    for name in ("SIM_DEVICE", "SIM_FAULTS", "SIM_BATCHES", "ARTIFACTS"):
        value = os.environ.get(f"AMANUENSIS_NPU_{name}")
        if value is not None:
            settings[f"AMANUENSIS_NPU_{name}"] = value
    return settings
