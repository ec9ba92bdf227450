"""What the benchmarks share, so that each measures the same way: where the test speech and
the results are, the clips, the CPU a number was measured on, the two models every
comparison is between (stock faster-whisper and ours), and timing side by side.

Each script imports it as `common` (run as `python benchmarks/x.py`, its folder is on the
path; a test that loads a benchmark by its path puts the folder there first).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech"
RESULTS = REPO / "benchmarks" / "results"

# The CPU extensions that decide CTranslate2's and OpenVINO's speed and OpenVINO's bf16.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16")


def clips(folder: Path, suffixes: Iterable[str] = (".wav",)) -> list[Path]:
    """Every audio file under `folder` ending in one of `suffixes`, in a stable order."""
    wanted = tuple(suffixes)
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in wanted)


def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo key (empty where there is none)."""
    found: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            found.setdefault(key.strip(), value.strip())
    return found


def cpu_name() -> str:
    """The CPU's model name: every number depends on it, so results say it."""
    return (
        _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"
    )


def cpu_flags(wanted: Iterable[str] = CPU_FLAGS) -> list[str]:
    """Which of `wanted` this CPU has (read on Linux; none elsewhere)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in wanted if f in flags]


def whisper_model(
    model_dir: str | Path,
    *,
    ours: bool,
    compute_type: str,
    threads: int = 0,
    device: str = "cpu",
    **settings: Any,
) -> Any:
    """Stock faster-whisper's WhisperModel (on the CPU), or ours with `device` and
    `settings` (encoder=, attention=): loaded alike, so a difference is the encoder's."""
    if not ours:
        import faster_whisper

        return faster_whisper.WhisperModel(
            str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads
        )
    import amanuensis_npu

    return amanuensis_npu.WhisperModel(
        str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads, **settings
    )


def side_by_side(
    runs: dict[str, Callable[[], Any]],
    rounds: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of every run in each round, all in this process, the order reversed every
    other round: drift on a shared machine then falls on every run alike, and the ratio of
    medians holds where absolute times move by 10% between runs. Warm up before."""
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
        if progress is not None:
            progress(r + 1)
    return seconds
