"""The bring-up kit of kernels/bringup/: plans, runs on the simulated device, and on an NPU.

Without an NPU (CI): every bring-up design's runtime sequence passes the shim DMA queue
check, kernels/bringup/test.py runs each design end to end on the simulated device
(AMANUENSIS_NPU_XRT=sim: the host-built kernel computes, the runtime calls and buffers
are the real ones) and prints PASS against the emulator, it prints FAIL when the device
returns garbage or an error state, and `make -C kernels bringup SIM=1` runs the four in
order and stops at the first failure.

With an NPU (`requires_npu`): the same four designs on the hardware, from the artifacts
`make -C kernels bringup` built (AMANUENSIS_NPU_BRINGUP_DIR, default
kernels/build/bringup/lut/<target>); they skip, with the reason, on a machine without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _numerics_helpers import require_tool

REPO = Path(__file__).resolve().parents[1]
BRINGUP = REPO / "kernels" / "bringup"
DESIGNS = ("exp2n", "scores", "head", "layer")


def _run(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=full)


def test_every_bringup_design_passes_the_plan_check():
    proc = _run([sys.executable, str(BRINGUP / "designs.py"), "--check-plan"], {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 * len(DESIGNS)  # every design on npu1 and npu2
    for line, (design, target) in zip(
        lines, [(d, t) for d in DESIGNS for t in ("npu1", "npu2")], strict=True
    ):
        assert line.startswith(f"{design} {target}: at most ") and line.endswith(": ok"), line


def test_bringup_reports_garbage_and_error_states_as_fail():
    cmd = [sys.executable, str(BRINGUP / "test.py"), "--design", "scores"]
    zeros = _run(cmd, {"AMANUENSIS_NPU_XRT": "sim", "AMANUENSIS_NPU_SIM_FAULTS": "zeros"})
    assert zeros.returncode == 1 and zeros.stdout.startswith("FAIL scores"), zeros.stdout
    assert "values differ from the emulator" in zeros.stdout and "what it tells" in zeros.stdout
    error = _run(cmd, {"AMANUENSIS_NPU_XRT": "sim", "AMANUENSIS_NPU_SIM_FAULTS": "error"})
    assert error.returncode == 1 and "ended in ERT_CMD_STATE_ERROR" in error.stdout


def test_bringup_layer_takes_the_models_head_count():
    """The layer design for tiny.en's 6 heads, on the simulated device: every value of
    the 6-head output equals the emulator's (6 x 1536 x 64 of them)."""
    cmd = [sys.executable, str(BRINGUP / "test.py"), "--design", "layer", "--heads", "6"]
    proc = _run(cmd, {"AMANUENSIS_NPU_XRT": "sim"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"PASS layer (npu1, simulated): {6 * 1536 * 64} values")


def test_make_bringup_runs_in_order_and_stops_at_the_first_failure():
    # One command runs the four designs end to end on the simulated device, in order, each
    # PASS against the emulator; a device returning garbage stops it at the first design.
    require_tool("make", "cannot run `make -C kernels bringup`")
    cmd = [
        "make",
        "-s",
        "-C",
        str(REPO / "kernels"),
        "bringup",
        "SIM=1",
        f"PYTHON={sys.executable}",
    ]
    ok = _run(cmd, {"AMANUENSIS_NPU_SIM_FAULTS": ""})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    passes = [ln for ln in ok.stdout.splitlines() if ln.startswith("PASS ")]
    assert [ln.split()[1] for ln in passes] == list(DESIGNS)
    assert all(" (npu1, simulated): " in ln for ln in passes)
    assert "bring-up: all four designs PASS" in ok.stdout
    bad = _run(cmd, {"AMANUENSIS_NPU_SIM_FAULTS": "zeros"})
    assert bad.returncode != 0
    assert "FAIL exp2n" in bad.stdout and "bring-up stopped at 'exp2n'" in bad.stdout
    assert "scores" not in bad.stdout.split("bring-up stopped")[0].split("FAIL exp2n")[1]


def _npu_artifacts(design: str) -> Path:
    sys.path.insert(0, str(REPO))
    from amanuensis_npu.npu import xrt as xrt_loader

    if os.environ.get("AMANUENSIS_NPU_XRT", "").lower() in ("sim", "off"):
        pytest.skip("AMANUENSIS_NPU_XRT selects no hardware")
    xrt, how = xrt_loader.load_xrt()
    if xrt is None or xrt_loader.is_simulated(xrt):
        pytest.skip(f"no NPU here ({how})")
    target, where = xrt_loader.device_target(xrt)
    if target is None:
        pytest.skip(f"no NPU here ({where})")
    default = REPO / "kernels" / "build" / "bringup" / "lut" / target
    base = Path(os.environ.get("AMANUENSIS_NPU_BRINGUP_DIR", default))
    if not (base / design / "final.xclbin").is_file():
        pytest.fail(f"an NPU is here but {base / design} has no build: make -C kernels bringup")
    return base / design


@pytest.mark.requires_npu
@pytest.mark.parametrize("design", DESIGNS)
def test_bringup_design_on_the_npu(design):
    directory = _npu_artifacts(design)
    cmd = [sys.executable, str(BRINGUP / "test.py"), "--design", design, "--dir", str(directory)]
    proc = _run(cmd, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"PASS {design} ")


@pytest.mark.parametrize("design", ["exp2n", "scores", "head"])
def test_bringup_design_builds_against_iron_as_documented(monkeypatch, design):
    # designs.build_program() against the recording stand-in of IRON's API that
    # test_kernel_build uses: each issues exactly its runtime_sequence, with the stack set.
    import _fake_iron as fake

    sys.path.insert(0, str(BRINGUP))
    import designs

    fake.install(monkeypatch)
    designs.build_program(design, "npu2")
    rt = fake.Program.last.rt
    assert all(w.stack_size == designs.design.STACK_BYTES for w in rt.workers)
    assert len(rt.workers) == (1 if design in ("exp2n", "scores") else 16)
    seq = designs.runtime_sequence(design, "npu2")
    assert len(rt.ops) == len(seq)
    kinds = [op[0] for op in rt.ops]
    assert kinds == [op.kind if hasattr(op, "kind") else "finish" for op in seq]
