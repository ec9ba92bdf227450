#!/usr/bin/env python3
"""Run one bring-up design on the NPU (or the simulated device) and compare with the emulator.

    python kernels/bringup/test.py --design exp2n --dir kernels/build/bringup/npu1/exp2n
    AMANUENSIS_NPU_XRT=sim python kernels/bringup/test.py --design layer   # no NPU needed
    python kernels/bringup/test.py --design layer --heads 20 --dir ...     # a large model's layer

Prints one line, `PASS <design> (<target>): ...` or `FAIL <design> (<target>): ...`, then
what the result tells; exits 0 on PASS, 1 on FAIL, 2 when it cannot run (no device, no
artifacts). The expected output is the emulator's (amanuensis_npu.npu.emulator, SPEC.md),
computed here from the same inputs. On the simulated device (AMANUENSIS_NPU_XRT=sim) the
artifacts are simulated stand-ins written to a temporary directory and the "device" runs
the host-built scalar kernel: that checks this script, the buffers and the runtime calls,
not the NPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import designs  # noqa: E402 - the sibling module, as mlir-aie's examples import theirs

WHAT_PASS_PROVES = {
    "exp2n": "the exponent unit gives SPEC §4.1's EXP2N for every input 0..T_ZERO on this "
    "device: lookup tables laid out for this bank width and in two banks (EXP=lut), or the "
    "table-free arithmetic (EXP=nolut); rounding modes and 512-bit loads as assumed",
    "scores": "one core's int8 mmul shapes, the host's 8 x 8 block layout and the per-key "
    "rescale give SPEC §4 step 0 exactly",
    "head": "the data movement of one head (qr/kv ObjectFifos, the memory-tile join, the "
    "16-way broadcasts, both passes, the reciprocal, the output join and drain) works",
    "layer": "the full layer dispatch agrees with the emulator; the runtime can use this "
    "artifact set (make -C kernels install)",
}
WHAT_FAIL_TELLS = {
    "exp2n": "the exponent unit is wrong on this device. Rebuild with EXP=nolut and rerun: if "
    "that passes, the lookup units or their table layout/banks are the cause (send both "
    "outputs and the aiecc log); if it fails too, rounding modes or vector loads are",
    "scores": "the matrix product or the block layout differs from SPEC §2/§4 (first differing "
    "element above); send the output",
    "head": "the exponent and one tile compute right, so the data movement is wrong: send the "
    "output, the first differing (row, channel) and the aiecc log",
    "layer": "one head works but the whole layer does not: the second group (npu2), the head "
    "order or the task-group pipelining; send the output and the aiecc log",
}


def _rng_qkv(heads: int, seed: int = 7):
    """Float Q, K, V `[1, heads, 1500, 64]` with attention that is neither flat nor one-hot."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (1, heads, 1500, 64)
    base = torch.randn(shape, generator=g)
    q = 2.0 * base + torch.randn(shape, generator=g)
    k = 2.0 * base + torch.randn(shape, generator=g) + 0.5
    v = torch.randn(shape, generator=g) * 3.0 - 1.0
    return q, k, v


def _unblock(tile: np.ndarray, rows: int) -> np.ndarray:
    """A tile in the host's 8 x 8 block order (SPEC §2) back to `rows x 64`, row-major."""
    return tile.reshape(rows // 8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(rows, 64)


def case(name: str, heads: int | None = None) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """(buffers in argument order, indices of the outputs, the expected output); `heads`
    is the layer design's head count (default Base's)."""
    from amanuensis_npu.npu import emulator as emu
    from amanuensis_npu.npu import quantization as qz

    if name == "exp2n":
        t = np.arange(designs.EXP_WORDS, dtype=np.int64).clip(max=designs.T_ZERO)
        want = emu.exp2n(t).astype(np.int32)
        return [t.astype(np.int32), np.full(designs.EXP_WORDS, -1, np.int32)], [1], want
    if name == "scores":
        packed = qz.pack_layer(*_rng_qkv(1))
        q_tile = packed.buffers[0][0, 0, 0].copy()  # query tile 0
        krec = packed.buffers[1][0, 0, 0].copy()  # key record 0
        q8 = _unblock(q_tile, 32).astype(np.int64)
        kt = _unblock(krec[:4096], 64).astype(np.int64)  # dims x keys
        kq = krec[4096:4224].view("<i2").astype(np.int64)
        want = ((q8 @ kt) * kq + (1 << 13)) >> 14  # SPEC §4 step 0
        out = np.full(designs.S_WORDS, -1, np.int32)
        return [q_tile, krec, out], [2], want.reshape(-1).astype(np.int32)
    packed = qz.pack_layer(*_rng_qkv(1 if name == "head" else heads or qz.HEADS))
    bufs = [np.ascontiguousarray(b) for b in packed.buffers[:4]]
    want = emu.emulate_layer(bufs)
    return [*bufs, np.full_like(want, 0x5A5A)], [4], want


def run(xrt, xclbin: Path, insts_path: Path, buffers: list[np.ndarray], outputs: list[int]):
    """One dispatch, as amanuensis_npu.npu.session does it; returns (state name, outputs)."""
    from amanuensis_npu.npu.artifacts import read_insts

    dev = xrt.device(0)
    xb = xrt.xclbin(str(xclbin))
    dev.register_xclbin(xb)
    ctx = xrt.hw_context(dev, xb.get_uuid())
    kernel = xrt.kernel(ctx, "MLIR_AIE")
    insts = read_insts(insts_path)
    ibo = xrt.bo(dev, insts.nbytes, xrt.bo.cacheable, kernel.group_id(1))
    ibo.write(insts, 0)
    to_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
    from_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE
    ibo.sync(to_dev, insts.nbytes, 0)
    bos = []
    for i, arr in enumerate(buffers):
        bo = xrt.bo(dev, arr.nbytes, xrt.bo.host_only, kernel.group_id(3 + i))
        bo.write(arr.reshape(-1).view(np.uint8), 0)
        bo.sync(to_dev, arr.nbytes, 0)
        bos.append(bo)
    r = kernel(3, ibo, int(insts.size), *bos)
    state = r.wait(60_000)
    if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
        return getattr(state, "name", str(state)), []
    got = []
    for i in outputs:
        bos[i].sync(from_dev, buffers[i].nbytes, 0)
        raw = np.asarray(bos[i].read(buffers[i].nbytes, 0)).view(np.uint8)
        got.append(raw.view(buffers[i].dtype).reshape(buffers[i].shape))
    return "ERT_CMD_STATE_COMPLETED", got


def simulated_artifacts(
    name: str, target: str, directory: Path, heads: int | None = None
) -> tuple[Path, Path]:
    """Simulated xclbin and insts for design `name` (AMANUENSIS_NPU_XRT=sim only)."""
    from amanuensis_npu.npu import xrt_sim

    layout = designs.runtime_buffers(name, heads)
    u = xrt_sim.write_simulated_xclbin(
        directory / "final.xclbin",
        target=target,
        buffers_per_batch=[
            {"name": b["name"], "dtype": b["dtype"], "nbytes_per_batch": b["nbytes"]}
            for b in layout
        ],
        spec_version=str(designs.design.SPEC_VERSION),
        design=name,
        heads=1 if name == "head" else heads or designs.design.H,
    )
    xrt_sim.write_simulated_insts(directory / "insts.bin", u, len(layout))
    return directory / "final.xclbin", directory / "insts.bin"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--design", choices=designs.DESIGNS, required=True)
    p.add_argument("--dir", type=Path, help="directory with final.xclbin and insts.bin")
    p.add_argument(
        "--heads", type=int, help="heads of the layer design, as it was built (default 8)"
    )
    args = p.parse_args(argv)
    from amanuensis_npu.npu import xrt as xrt_loader

    xrt, how = xrt_loader.load_xrt()
    if xrt is None:
        print(f"CANNOT RUN {args.design}: no XRT ({how})")
        return 2
    target, where = xrt_loader.device_target(xrt)
    if target is None:
        print(f"CANNOT RUN {args.design}: {where}")
        return 2
    buffers, outputs, want = case(args.design, args.heads)
    with tempfile.TemporaryDirectory(prefix="bringup-") as tmp:
        if xrt_loader.is_simulated(xrt):
            xclbin, insts = simulated_artifacts(args.design, target, Path(tmp), args.heads)
        else:
            if args.dir is None:
                print(f"CANNOT RUN {args.design}: give --dir with the built artifacts")
                return 2
            xclbin, insts = args.dir / "final.xclbin", args.dir / "insts.bin"
            if not (xclbin.is_file() and insts.is_file()):
                print(f"CANNOT RUN {args.design}: no final.xclbin/insts.bin in {args.dir}")
                return 2
        t0 = time.perf_counter()
        state, got = run(xrt, xclbin, insts, buffers, outputs)
        elapsed = time.perf_counter() - t0
    label = f"{args.design} ({target}{', simulated' if xrt_loader.is_simulated(xrt) else ''})"
    if state != "ERT_CMD_STATE_COMPLETED":
        print(f"FAIL {label}: the run ended in {state}")
        print(
            "  what it tells: the design did not complete (a hang or a DMA/lock error): send "
            "this output, `xrt-smi examine` and the aiecc log"
        )
        return 1
    out = got[0].reshape(-1)
    expect = np.asarray(want).reshape(-1)
    bad = np.flatnonzero(out != expect)
    if bad.size:
        i = int(bad[0])
        print(
            f"FAIL {label}: {bad.size} of {expect.size} values differ from the emulator, "
            f"first at {i}: {out[i]} (expected {expect[i]})"
        )
        print(f"  what it tells: {WHAT_FAIL_TELLS[args.design]}")
        return 1
    print(f"PASS {label}: {expect.size} values equal the emulator's ({elapsed:.2f} s wall)")
    if xrt_loader.is_simulated(xrt):
        print("  simulated device: this checks the script, the buffers and the runtime calls only")
    else:
        print(f"  what it proves: {WHAT_PASS_PROVES[args.design]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
