"""The suite's sampled comparisons, run on every clip, window and speech layer.

The test suite compares each route with its reference on a sample of the test speech
(tests/conftest.py: SAMPLE_CLIPS, SAMPLE_WINDOWS, SPEECH_LAYER_WINDOWS) so that it runs in
minutes. This runs the same tests with AMANUENSIS_NPU_TEST_SWEEP=1: every clip against stock
faster-whisper (sequential, with word timestamps), every 30 s window through every encoder
route, and every encoder layer of every window through the kernel's scalar and AIE paths
bit for bit against the emulator. About an hour on a 2-core machine.

    python benchmarks/sweep.py                 # the modules below, swept
    python benchmarks/sweep.py -k parity       # extra pytest arguments pass through
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = (
    "tests/test_encoder.py",
    "tests/test_numerics.py",
    "tests/test_faster_whisper.py",
    "tests/test_onnx_encoder.py",
    "tests/test_vendor_runtimes.py",
)


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    env = {**os.environ, "AMANUENSIS_NPU_TEST_SWEEP": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", *MODULES, *extra]
    start = time.perf_counter()
    code = subprocess.call(command, cwd=REPO, env=env)
    print(f"sweep: exit {code} in {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
