"""Fixtures and helpers for the NPU runtime tests (simulated XRT device)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

SPEECH = Path(__file__).resolve().parent / "data" / "speech"

_NPU_ENV = (
    "AMANUENSIS_NPU_XRT",
    "AMANUENSIS_NPU_SIM_FAULTS",
    "AMANUENSIS_NPU_SIM_DEVICE",
    "AMANUENSIS_NPU_SIM_BATCHES",
    "AMANUENSIS_NPU_SIM_HEADS",
    "AMANUENSIS_NPU_ARTIFACTS",
    "AMANUENSIS_NPU_MAX_FAILURES",
    "AMANUENSIS_NPU_TIMEOUT_MS",
)


@pytest.fixture
def no_npu_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment: no NPU settings, an empty private artifact cache.

    The joined model and the host kernel build are shared with the session's real
    cache (symlinked), so each test does not join 145 MB or run g++ again.
    """
    from amanuensis_npu.core.models import cache_dir

    for name in _NPU_ENV:
        monkeypatch.delenv(name, raising=False)
    shared = cache_dir()
    cache = tmp_path / "npu-cache"
    cache.mkdir()
    for sub in ("models", "kernel-host"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        (cache / sub).symlink_to(shared / sub, target_is_directory=True)
    monkeypatch.setenv("AMANUENSIS_NPU_CACHE", str(cache))
    return cache


@pytest.fixture
def sim_env(no_npu_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The simulated XRT device, fault numbering restarted, a private artifact cache."""
    from amanuensis_npu.npu import xrt_sim

    monkeypatch.setenv("AMANUENSIS_NPU_XRT", "sim")
    xrt_sim.reset_counters()
    yield no_npu_env
    xrt_sim.reset_counters()


def npu_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings the NPU backend logged (the one-warning-per-reason contract)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "NPU" in r.getMessage()
    ]
