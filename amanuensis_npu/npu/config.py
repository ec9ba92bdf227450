"""The ``AMANUENSIS_NPU_*`` settings of the NPU runtime.

Each is read when it is used, not at import, so a process (or a test) can change
them; a bad value raises `SettingError` with a one-line message naming the variable,
which the backend turns into its fallback line while attention runs on the CPU.

- ``AMANUENSIS_NPU_XRT``: unset/``auto`` (pyxrt from site-packages, else
  ``$XILINX_XRT/python``, else ``/opt/xilinx/xrt/python``), ``sim`` (the simulated
  device, `amanuensis_npu.npu.xrt_sim`), or ``off`` (never use the NPU).
- ``AMANUENSIS_NPU_ARTIFACTS``: a directory searched first for kernel artifacts
  (then ``$AMANUENSIS_NPU_CACHE/artifacts``, then the package; `artifacts`).
- ``AMANUENSIS_NPU_MAX_FAILURES``: consecutive failed calls before the NPU is
  disabled for the process (default 3).
- ``AMANUENSIS_NPU_TIMEOUT_MS``: the wait for one run (default 10000 on hardware,
  600000 in the simulation, whose "device" is a scalar host build of the kernel).
- ``AMANUENSIS_NPU_SIM_BATCHES``: batch sizes to generate simulated artifacts for,
  one per size as real builds are (e.g. ``1,8``); unset, one serves any batch.
- ``AMANUENSIS_NPU_SIM_HEADS``: head counts the simulation has "built" (e.g. ``8``);
  unset, it generates a set for any model's shape. Set, it rehearses a machine where
  only those shapes are built.
  ``AMANUENSIS_NPU_SIM_DEVICE`` and ``AMANUENSIS_NPU_SIM_FAULTS`` belong to `xrt_sim`.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MAX_FAILURES = 3
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_SIM_TIMEOUT_MS = 600_000

_HARDWARE = ("", "auto", "hw", "hardware", "pyxrt")
_SIM = ("sim", "simulated", "simulation")
_OFF = ("off", "0", "none", "no", "false", "disable", "disabled")


class SettingError(ValueError):
    """An ``AMANUENSIS_NPU_*`` variable has a value the runtime cannot use; one line."""


def xrt_mode() -> str:
    """'hardware', 'sim' or 'off', from AMANUENSIS_NPU_XRT."""
    value = os.environ.get("AMANUENSIS_NPU_XRT", "").strip().lower()
    if value in _HARDWARE:
        return "hardware"
    if value in _SIM:
        return "sim"
    if value in _OFF:
        return "off"
    raise SettingError(f"AMANUENSIS_NPU_XRT must be unset, 'sim' or 'off', got {value!r}")


def _positive_int(name: str, default: int, what: str) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingError(f"{name} must be a positive integer ({what}), got {raw!r}") from None
    if value < 1:
        raise SettingError(f"{name} must be a positive integer ({what}), got {value}")
    return value


def max_failures() -> int:
    """Consecutive failures after which the NPU is disabled for the process."""
    return _positive_int("AMANUENSIS_NPU_MAX_FAILURES", DEFAULT_MAX_FAILURES, "failures")


def timeout_ms() -> int:
    """How long one run may take before it counts as hung."""
    default = DEFAULT_SIM_TIMEOUT_MS if xrt_mode() == "sim" else DEFAULT_TIMEOUT_MS
    return _positive_int("AMANUENSIS_NPU_TIMEOUT_MS", default, "milliseconds")


def artifacts_dir() -> Path | None:
    """The user's artifact directory (AMANUENSIS_NPU_ARTIFACTS), searched before the cache."""
    value = os.environ.get("AMANUENSIS_NPU_ARTIFACTS", "").strip()
    return Path(value).expanduser() if value else None


def _positive_list(name: str, what: str) -> list[int] | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        sizes = sorted({int(x) for x in raw.replace(" ", ",").split(",") if x})
    except ValueError:
        raise SettingError(f"{name} must list {what}, got {raw!r}") from None
    if not sizes or sizes[0] < 1:
        raise SettingError(f"{name} must list positive {what}, got {raw!r}")
    return sizes


def simulated_batches() -> list[int] | None:
    """Batch sizes from AMANUENSIS_NPU_SIM_BATCHES, or None for one any-batch artifact."""
    return _positive_list("AMANUENSIS_NPU_SIM_BATCHES", "batch sizes")


def simulated_heads() -> list[int] | None:
    """Head counts from AMANUENSIS_NPU_SIM_HEADS, or None: the simulation builds any shape."""
    return _positive_list("AMANUENSIS_NPU_SIM_HEADS", "head counts")


def check() -> None:
    """Read every runtime setting once, so a bad value is reported before any device work."""
    xrt_mode()
    max_failures()
    timeout_ms()
    if xrt_mode() == "sim":
        simulated_batches()
        simulated_heads()
