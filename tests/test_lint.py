"""The code base stays ruff-clean (the configuration lives in pyproject.toml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import console_script

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = console_script("ruff")
    assert ruff, "ruff is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run(
        [ruff, "check", "amanuensis_npu", "benchmarks", "tests", "kernels"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
