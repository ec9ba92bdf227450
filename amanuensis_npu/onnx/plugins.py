"""ONNX Runtime plugin execution providers: found, registered once, chosen by device.

Current vendor packages install an execution provider *beside* the PyPI onnxruntime
instead of replacing it (Qualcomm: `onnxruntime-qnn` 2.x; Intel:
`onnxruntime-ep-openvino`). ONNX Runtime's plugin EP API (onnxruntime docs,
execution-providers/plugin-ep-libraries/usage.md; Python: onnxruntime/python/
onnxruntime_pybind_state.cc) works in three steps:

1. `onnxruntime.register_execution_provider_library(name, package.get_library_path())`,
   once per process (a second registration under the same name fails);
2. `onnxruntime.get_ep_devices()` lists OrtEpDevice pairs (ep_name, hardware device with a
   type CPU/GPU/NPU, ep_metadata such as OpenVINO's `ov_device`);
3. `SessionOptions.add_provider_for_devices(devices, options)` puts the provider in a
   session. Naming it in `providers=[...]` instead gives a CPU-only session although
   `get_available_providers()` lists it.

AMD documents no plugin package for VitisAI (it ships in Ryzen AI Software's own
onnxruntime build); any installed `onnxruntime_ep_*` package with the same two
functions as Intel's (`get_library_path`, `get_ep_names`) is registered too.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("amanuensis_npu")

# Vendor packages by import name (their PyPI names: onnxruntime-qnn, onnxruntime-ep-openvino).
KNOWN_PACKAGES = ("onnxruntime_qnn", "onnxruntime_ep_openvino")


@dataclass(frozen=True)
class Plugin:
    """One registered plugin EP library: which package, under which EP name."""

    ep_name: str
    package: str
    library: str


_LOCK = threading.Lock()
_REGISTERED: dict[str, Plugin] = {}
_FAILED: dict[str, str] = {}  # package -> why it could not be registered
_DONE = False


@contextlib.contextmanager
def quiet_native_output(label: str) -> Iterator[None]:
    """Keep what native libraries print on fd 1/2 off the terminal; log it at info level.

    ONNX Runtime prints `[E:onnxruntime:...]` lines from its environment logger, which a
    session's log severity does not govern, and QNN prints notes of its own; our one
    warning line says what happened. Nested or concurrent uses share one redirection.
    """
    global _quiet_depth
    with _QUIET_LOCK:
        first = _quiet_depth == 0
        _quiet_depth += 1
        if first:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            capture = tempfile.TemporaryFile()
            saved = (os.dup(1), os.dup(2))
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            _quiet_state[:] = [capture, saved]
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                capture, saved = _quiet_state
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
                capture.seek(0)
                text = capture.read().decode(errors="replace").strip()
                capture.close()
                if text:
                    logger.info("%s (native output): %s", label, text.replace("\n", " | ")[:2000])


_QUIET_LOCK = threading.RLock()
_quiet_depth = 0
_quiet_state: list[Any] = []


def _candidate_packages() -> list[str]:
    names = list(KNOWN_PACKAGES)
    names += sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.name.startswith("onnxruntime_ep_") and m.name not in names
    )
    return names


def register_plugins() -> dict[str, Plugin]:
    """Register every installed plugin EP package with onnxruntime, once per process.

    Returns EP name -> Plugin. A package that fails to import or register is remembered
    with its reason (see `failed_plugins`) and not tried again.
    """
    global _DONE
    with _LOCK:
        if _DONE:
            return dict(_REGISTERED)
        try:
            import onnxruntime as ort
        except ImportError:
            _DONE = True
            return {}
        if not hasattr(ort, "register_execution_provider_library"):
            _DONE = True  # an onnxruntime older than the plugin API (1.22)
            return {}
        for package in _candidate_packages():
            try:
                module = importlib.import_module(package)
            except ImportError:
                continue
            except Exception as exc:  # a broken vendor package must not stop the others
                _FAILED[package] = f"import failed: {exc}"
                continue
            try:
                library = str(module.get_library_path())
                names = (
                    list(module.get_ep_names())
                    if hasattr(module, "get_ep_names")
                    else [module.get_ep_name()]
                )
            except Exception as exc:
                _FAILED[package] = f"no library: {exc}"
                continue
            # onnxruntime_qnn documents the EP name as the registration name; one library
            # may offer several EPs (names listed), registered once under the first.
            name = names[0]
            try:
                with quiet_native_output(f"registering {package}"):
                    ort.register_execution_provider_library(name, library)
            except Exception as exc:
                if "already registered" not in str(exc):
                    _FAILED[package] = f"registration failed: {str(exc).splitlines()[0]}"
                    continue
            for ep in names:
                _REGISTERED[ep] = Plugin(ep, package, library)
        _DONE = True
        return dict(_REGISTERED)


def failed_plugins() -> dict[str, str]:
    """Plugin packages that are installed but could not be registered, with the reason."""
    register_plugins()
    with _LOCK:
        return dict(_FAILED)


def is_plugin(ep_name: str) -> bool:
    return ep_name in register_plugins()


def ep_devices(ep_name: str) -> list[Any]:
    """The OrtEpDevice entries of one execution provider (registered first if a plugin)."""
    register_plugins()
    import onnxruntime as ort

    return [d for d in ort.get_ep_devices() if d.ep_name == ep_name]


def device_kind(ep_device: Any) -> str:
    """ "CPU", "GPU" or "NPU": the hardware an OrtEpDevice runs on.

    OpenVINO's plugin names its target in ep_metadata `ov_device` (its devices all report
    the host's hardware type); other plugins use the hardware device's type.
    """
    meta = dict(getattr(ep_device, "ep_metadata", {}) or {})
    if "ov_device" in meta:
        return str(meta["ov_device"]).split(".")[0].upper()
    kind = str(ep_device.device.type).rsplit(".", 1)[-1]
    return kind.upper()


def device_summary(ep_name: str) -> list[str]:
    """Device kinds an execution provider offers here, e.g. ["CPU", "NPU"] (for info)."""
    return sorted({device_kind(d) for d in ep_devices(ep_name)})


def registered() -> dict[str, Plugin]:
    """EP name -> Plugin for every plugin EP registered in this process (registers first)."""
    return register_plugins()
