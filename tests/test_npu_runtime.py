"""NPU runtime: pyxrt plumbing, simulated device, artifacts, fallback policy, statistics.

There is no NPU here; everything device-side runs through `amanuensis_npu.xrt_sim`,
whose "kernel" is the host-compiled scalar build of the attention kernel. The one
thing that needs hardware (a real pyxrt and /dev/accel) is skipped with that reason.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import _npu_helpers as helpers
import numpy as np
import pytest

from amanuensis_npu import npu_runtime, xrt_sim

no_npu_env = helpers.no_npu_env  # fixtures
sim_env = helpers.sim_env
npu_warnings = helpers.npu_warnings
xrt = xrt_sim


# ----------------------------------------------------------------------- sim semantics


def _tiny_xclbin(tmp_path: Path, n_buffers: int = 2, per_batch: int = 16) -> xrt.xclbin:
    path = tmp_path / "tiny.xclbin"
    buffers = [
        {"name": f"b{i}", "dtype": "uint8", "nbytes_per_batch": per_batch} for i in range(n_buffers)
    ]
    xrt.write_simulated_xclbin(path, target="npu1", buffers_per_batch=buffers, spec_version="t")
    return xrt.xclbin(str(path))


def _open_tiny(tmp_path: Path, n_buffers: int = 2):
    dev = xrt.device(0)
    xb = _tiny_xclbin(tmp_path, n_buffers)
    dev.register_xclbin(xb)
    ctx = xrt.hw_context(dev, xb.get_uuid())
    krnl = xrt.kernel(ctx, "MLIR_AIE")
    insts = tmp_path / "insts.bin"
    n_words = xrt.write_simulated_insts(insts, xb.get_uuid(), n_buffers)
    words = np.fromfile(insts, dtype="<u4")
    instr = xrt.bo(dev, words.nbytes, xrt.bo.cacheable, krnl.group_id(1))
    instr.write(words, 0)
    instr.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, words.nbytes, 0)
    return dev, krnl, instr, n_words


def test_sim_data_moves_only_on_sync(sim_env):
    dev = xrt.device(0)
    buf = xrt.bo(dev, 8, xrt.bo.host_only, 3)
    data = np.arange(8, dtype=np.int8)
    with pytest.raises(TypeError):
        buf.write(data)  # pyxrt: the offset is not optional
    buf.write(data, 0)
    assert not buf._dev.any(), "write must not reach the device before sync"
    buf.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, 8, 0)
    assert np.array_equal(buf._dev.view(np.int8), data)
    buf._dev[:] = 7  # the device writes its own memory ...
    assert np.array_equal(buf.read(8, 0), data)  # ... invisible until synced back
    buf.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, 8, 0)
    out = buf.read(8, 0)
    assert out.dtype == np.int8 and (out == 7).all()
    with pytest.raises(RuntimeError):
        buf.write(np.zeros(9, np.int8), 0)  # past the end
    with pytest.raises(RuntimeError):
        buf.write(np.zeros((4, 4), np.int8)[:, ::2], 0)  # strided view: wrong bytes in pyxrt


def test_sim_refuses_more_buffers_than_kernel_arguments(sim_env, tmp_path):
    dev, krnl, instr, n_words = _open_tiny(tmp_path)
    n_data = 8 - 3  # the stand-in has mlir-aie's 8 arguments: opcode, instr, count, 5 buffers
    bos = [xrt.bo(dev, 16, xrt.bo.host_only, krnl.group_id(3 + i)) for i in range(n_data)]
    bos.append(xrt.bo(dev, 16, xrt.bo.host_only, 0))
    with pytest.raises(RuntimeError, match="arguments"):
        krnl(3, instr, n_words, *bos)


def test_sim_run_state_reports_kernel_failures(sim_env, tmp_path, monkeypatch):
    """Failures come back as states, not exceptions: wrong group id, missing instructions."""
    ran = []
    monkeypatch.setattr(xrt_sim, "_run_host_kernel", lambda meta, bufs: ran.append(len(bufs)))
    dev, krnl, instr, n_words = _open_tiny(tmp_path)
    good = [xrt.bo(dev, 16, xrt.bo.host_only, krnl.group_id(3 + i)) for i in range(2)]
    state = krnl(3, instr, n_words, *good).wait(5000)
    assert state == xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED and ran == [2]
    wrong_group = [xrt.bo(dev, 16, xrt.bo.host_only, krnl.group_id(1)) for _ in range(2)]
    assert krnl(3, instr, n_words, *wrong_group).wait(5000).name == "ERT_CMD_STATE_ERROR"
    unsynced = xrt.bo(dev, instr.size(), xrt.bo.cacheable, krnl.group_id(1))
    assert krnl(3, unsynced, n_words, *good).wait(5000).name == "ERT_CMD_STATE_ERROR"
    assert krnl(2, instr, n_words, *good).wait(5000).name == "ERT_CMD_STATE_ERROR"
    assert ran == [2], "the kernel must not run on rejected arguments"


def test_sim_hang_times_out_and_never_blocks(sim_env, tmp_path, monkeypatch):
    monkeypatch.setattr(xrt_sim, "_run_host_kernel", lambda meta, bufs: None)
    monkeypatch.setenv("AMANUENSIS_NPU_SIM_FAULTS", "timeout@1")
    dev, krnl, instr, n_words = _open_tiny(tmp_path)
    bos = [xrt.bo(dev, 16, xrt.bo.host_only, krnl.group_id(3 + i)) for i in range(2)]
    run = krnl(3, instr, n_words, *bos)
    t0 = time.perf_counter()
    assert run.wait(50) == xrt.ert_cmd_state.ERT_CMD_STATE_TIMEOUT
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(RuntimeError, match="timeout"):
        run.wait()  # 0 = forever: refused instead of hanging the test
    assert krnl(3, instr, n_words, *bos).wait(5000).name == "ERT_CMD_STATE_COMPLETED"


def test_sim_rejects_real_xclbin_and_unknown_kernel(sim_env, tmp_path):
    real = tmp_path / "final.xclbin"
    real.write_bytes(b"xclbin2\0" + bytes(64))
    with pytest.raises(RuntimeError, match="real xclbin"):
        xrt.xclbin(str(real))
    dev = xrt.device(0)
    xb = _tiny_xclbin(tmp_path)
    with pytest.raises(RuntimeError, match="not registered"):
        xrt.hw_context(dev, xb.get_uuid())
    dev.register_xclbin(xb)
    ctx = xrt.hw_context(dev, xb.get_uuid())
    with pytest.raises(RuntimeError, match="no kernel"):
        xrt.kernel(ctx, "NOT_THERE")
    with pytest.raises(RuntimeError):
        xrt.device(1)


def test_sim_device_names_map_to_targets(sim_env, monkeypatch):
    assert "simulated" in xrt.device(0).get_info(xrt.xrt_info_device.name)
    assert npu_runtime.target_from_name(xrt.device(0).get_info(xrt.xrt_info_device.name)) == "npu1"
    monkeypatch.setenv("AMANUENSIS_NPU_SIM_DEVICE", "npu2")
    assert npu_runtime.target_from_name(xrt.device(0).get_info(xrt.xrt_info_device.name)) == "npu2"
    for name, target in [
        ("RyzenAI-npu1", "npu1"),
        ("RyzenAI-npu4", "npu2"),
        ("RyzenAI-npu5", "npu2"),
        ("RyzenAI-npu6", "npu2"),
        ("NPU Strix Halo", "npu2"),
        ("NPU Krackan", "npu2"),
        ("NPU Hawk Point", "npu1"),
        ("xilinx_u250_gen3x16", None),
    ]:
        assert npu_runtime.target_from_name(name) == target, name


def test_fault_syntax():
    faults = xrt_sim.parse_faults("error@3, zeros@5+,open,hang")
    assert [(f.kind, f.first, f.open_ended) for f in faults] == [
        ("error", 3, False),
        ("zeros", 5, True),
        ("open", None, False),
        ("timeout", None, False),
    ]
    assert [faults[0].applies(n) for n in (2, 3, 4)] == [False, True, False]
    assert [faults[1].applies(n) for n in (4, 5, 9)] == [False, True, True]
    for bad in ("eror", "error@0", "error@x", "nan@-1"):
        with pytest.raises(ValueError, match="AMANUENSIS_NPU_SIM_FAULTS"):
            xrt_sim.parse_faults(bad)


def test_open_fault_counts_opens(sim_env, monkeypatch):
    monkeypatch.setenv("AMANUENSIS_NPU_SIM_FAULTS", "open@2")
    xrt.device(0)
    with pytest.raises(RuntimeError, match="simulated fault"):
        xrt.device(0)
    xrt.device(0)


def test_read_insts_binary_and_hex_text(tmp_path):
    words = np.array([0x06030100, 0x00000105, 0xDEADBEEF], dtype="<u4")
    words.tofile(tmp_path / "insts.bin")
    assert np.array_equal(npu_runtime.read_insts(tmp_path / "insts.bin"), words)
    (tmp_path / "insts.txt").write_text("".join(f"{w:08x}\n" for w in words))
    assert np.array_equal(npu_runtime.read_insts(tmp_path / "insts.txt"), words)
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03\xff\xfe")
    with pytest.raises(npu_runtime.NPUError):
        npu_runtime.read_insts(tmp_path / "odd.bin")


# ----------------------------------------------------------------------- availability


def test_probe_without_npu_says_why(no_npu_env):
    """No NPU and no AMANUENSIS_NPU_XRT: not available, and the reason names what is missing."""
    if npu_runtime._import_pyxrt()[0] is not None and npu_runtime.device_nodes():
        pytest.skip("this machine has XRT and an NPU device node")
    ok, reason = npu_runtime.probe()
    assert ok is False
    assert "pyxrt" in reason or "/dev/accel" in reason, reason
    info = npu_runtime.describe()
    assert info["available"] is False and info["reason"] == reason
    assert info["xrt_mode"] == "hardware"


def test_probe_off_and_bad_settings(no_npu_env, monkeypatch):
    monkeypatch.setenv("AMANUENSIS_NPU_XRT", "off")
    assert npu_runtime.probe() == (False, "the NPU is switched off (AMANUENSIS_NPU_XRT=off)")
    monkeypatch.setenv("AMANUENSIS_NPU_XRT", "bogus")
    ok, reason = npu_runtime.probe()
    assert not ok and "AMANUENSIS_NPU_XRT" in reason


@pytest.mark.skipif(
    npu_runtime._import_pyxrt()[0] is None or not npu_runtime.device_nodes(),
    reason="needs real hardware: XRT's pyxrt and a Ryzen AI NPU (/dev/accel/accel*)",
)
def test_real_device_opens_and_reports_target(no_npu_env):  # pragma: no cover - hardware
    xrt_mod, _ = npu_runtime.load_xrt()
    name = xrt_mod.device(0).get_info(xrt_mod.xrt_info_device.name)
    assert npu_runtime.target_from_name(name) in ("npu1", "npu2"), name


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# Tests that need the numerics modules follow in test_npu_runtime's second half.
_ = threading
