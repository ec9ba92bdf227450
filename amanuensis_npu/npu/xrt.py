"""Finding XRT's Python bindings (pyxrt) and telling which NPU generation is present.

The runtime takes whatever module `load_xrt` returns as ``xrt``: XRT's ``pyxrt``, or
`amanuensis_npu.npu.xrt_sim` when ``AMANUENSIS_NPU_XRT=sim``. Nothing here opens the
device; `device_target` reads the PCI id the amdxdna driver exposes in sysfs.

Device names are the amdxdna driver's (amd/xdna-driver ``src/driver/amdxdna``:
``npu1_regs.c`` "NPU Phoenix" (also Hawk Point, same PCI id 0x1502);
``npu4_regs.c`` ``npu4_rev_vbnv_tbl`` "NPU Strix", "NPU Strix Halo", "NPU Krackan 1/2",
"NPU Gorgon Point 1/2/3", all PCI id 0x17f0) or the older "RyzenAI-npu1/4/5/6" ones.
mlir-aie groups them the same way: npu1 = Phoenix, npu2 = Strix, Strix Halo, Krackan,
Gorgon Point (``XRTHostRuntime.NPU_MODELS`` in
``python/utils/hostruntime/xrtruntime/hostruntime.py``).
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from .config import xrt_mode

XRT_LOCATIONS = ("$XILINX_XRT/python", "/opt/xilinx/xrt/python")
# npu2 names first: "npu1" is not a substring of them, but "NPU" alone would match all.
NPU2_NAMES = ("npu4", "npu5", "npu6", "strix", "krackan", "gorgon")
NPU1_NAMES = ("npu1", "phoenix", "hawk")
# PCI device ids of the NPU functions (xdna-driver amdxdna_pci_drv.c ``amdxdna_ids``).
PCI_TARGETS = {"0x1502": "npu1", "0x17f0": "npu2"}

_cache: dict[str, tuple[ModuleType | None, str]] = {}
_lock = threading.Lock()


def load_xrt() -> tuple[ModuleType | None, str]:
    """The module to use as ``xrt`` and where it came from, or (None, why not)."""
    mode = xrt_mode()
    if mode == "off":
        return None, "the NPU is switched off (AMANUENSIS_NPU_XRT=off)"
    if mode == "sim":
        from . import xrt_sim

        return xrt_sim, f"simulated XRT ({xrt_sim.__name__}, AMANUENSIS_NPU_XRT=sim)"
    with _lock:
        if "hardware" not in _cache:
            _cache["hardware"] = import_pyxrt()
        return _cache["hardware"]


def import_pyxrt() -> tuple[ModuleType | None, str]:
    """Import XRT's pyxrt from site-packages or XRT's install, or say where it was not."""
    try:
        module = importlib.import_module("pyxrt")
        return module, f"pyxrt from {getattr(module, '__file__', '?')}"
    except ImportError as exc:
        first_error = str(exc)
    tried = []
    for location in XRT_LOCATIONS:
        if location.startswith("$XILINX_XRT"):
            root = os.environ.get("XILINX_XRT")
            if not root:
                continue
            location = os.path.join(root, "python")
        tried.append(location)
        if not glob.glob(os.path.join(location, "pyxrt*")):
            continue
        sys.path.insert(0, location)
        try:
            module = importlib.import_module("pyxrt")
            return module, f"pyxrt from {getattr(module, '__file__', location)}"
        except ImportError as exc:  # e.g. built for another Python
            sys.path.remove(location)
            return None, f"pyxrt in {location} failed to import ({exc})"
    where = ", ".join(tried)
    if not os.environ.get("XILINX_XRT"):
        where += " ($XILINX_XRT unset)"
    return None, f"XRT Python bindings (pyxrt) not found ({first_error}; looked in {where})"


def is_simulated(xrt: ModuleType) -> bool:
    """True for the simulated pyxrt (it says so itself; no name matching)."""
    return bool(getattr(xrt, "SIMULATED", False))


def device_nodes() -> list[str]:
    """The accel device nodes the amdxdna driver creates (empty without the driver)."""
    return sorted(glob.glob("/dev/accel/accel*"))


def target_from_name(name: str) -> str | None:
    """'npu1' or 'npu2' from an XRT device name, None for anything else."""
    lowered = name.lower()
    if any(key in lowered for key in NPU2_NAMES):
        return "npu2"
    if any(key in lowered for key in NPU1_NAMES):
        return "npu1"
    return None


def target_from_sysfs() -> str | None:
    """'npu1' or 'npu2' from the PCI id behind /dev/accel/accel*, None if unknown."""
    for node in device_nodes():
        pci_id = Path("/sys/class/accel") / Path(node).name / "device" / "device"
        try:
            value = pci_id.read_text().strip().lower()
        except OSError:
            continue
        if value in PCI_TARGETS:
            return PCI_TARGETS[value]
    return None


def device_target(xrt: ModuleType) -> tuple[str | None, str]:
    """The NPU generation present and where it is, or (None, why not); opens nothing."""
    if is_simulated(xrt):
        return xrt.simulated_target(), "simulated device"
    nodes = device_nodes()
    if not nodes:
        return None, "no NPU device node (/dev/accel/accel* absent: no Ryzen AI NPU or no amdxdna)"
    target = target_from_sysfs()
    if target is None:
        return None, f"{', '.join(nodes)} is not a supported Ryzen AI NPU (npu1/npu2)"
    return target, nodes[0]
