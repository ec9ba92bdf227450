#!/usr/bin/env python3
"""IRON design of the Whisper encoder attention kernel (SPEC.md), for npu1 and npu2.

Prints (or writes with -o) the MLIR that `aiecc.py` turns into final.xclbin and
insts.bin. One kernel invocation computes one encoder layer for a whole batch:
every batch element, all H heads (6 for tiny to 20 for large; 8 for Base, the
default), all 48 query tiles (TQ = 32) of the 1536
padded frames, each query tile reading all 24 key tiles (TK = 64) in both
passes of SPEC §4, so there is no block-diagonal shortcut anywhere.

Data flow (the reasons are hardware limits, see kernels/README.md):

- A *group* is 4 columns x 4 compute rows = 16 cores working on one head at a
  time (npu1 has one group, npu2 two; group g takes heads h = g, g + G, ...; with
  an odd head count on npu2 the last step has one head, and group 1 idles in it).
  The head count only changes how many steps the runtime sequence has: per core
  the objects, their sizes and the core program are the same for every H.
  Each head takes 3 rounds; in round `rd` the core in column c, row r handles
  query tile `16 rd + 4 c + r`.
- `qr<col>`: shim -> the 4 cores of a column (broadcast), one 8,704-byte object
  per round: the column's 4 query tiles (int8, in the host's 8 x 8 block order)
  and their 128 rowp row words. Two shim transfers fill it (from `q`, from `rowp`).
- `kv<g>`: 8,704-byte objects of two 4,352-byte records (SPEC §2: a tile and its
  scales), joined in the group's first memory tile from two shim channels and
  broadcast to the group's 16 cores. Pass 1 (row max) streams keys only: 12 objects
  of two key records (tiles 2j, 2j + 1). Pass 2 streams 24 objects of (key record j,
  value record j). Two shim transfers per channel per round.
- The rowp header is not sent: the design is built for n_frames = 1500 (every
  Whisper window) and passes each key tile's count of valid keys (64, and 28 for
  the last tile) to the kernel as a constant; padded keys are masked by it.
- `out<col>`: each core's 32 x 64 int16 output tile is joined in its column's
  memory tile (4 tiles = 128 consecutive rows) and drained to `out`.

The runtime sequence (plan.py) is one task group per round, two rounds in flight, every
transfer awaited; `--check-plan` replays it against the shim DMA task queue. The shapes,
the per-core memory and the runtime buffers are layout.py's; `--estimate` prints
estimate.py's cycle estimate.

Only numpy is needed to import this module and its siblings (and to compute the
transfer plan and the configuration the manifest records); generating MLIR needs
mlir-aie's IRON (`aie.iron`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

# The siblings, importable however this file is loaded (as a script, or by path from
# kernels/make_manifest.py, kernels/bringup/ and the tests), as mlir-aie's examples
# import theirs.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimate import CLOCK_MHZ, cycle_estimate, size_estimate_rows  # noqa: E402
from layout import (  # noqa: E402
    COLS_PER_GROUP,
    FIRST_CORE_ROW,
    KERNEL_OBJECT,
    KV_BYTES,
    LAST_VALID,
    MEM_ROW,
    NKT,
    OUT_TILE_ELEMS,
    PAIRS,
    QR_BYTES,
    REC_BYTES,
    ROWS,
    SHIM_ROW,
    SPEC_VERSION,
    STACK_BYTES,
    TARGETS,
    TK,
    TQ,
    WHISPER_HEADS,
    D,
    H,
    design_config,
    groups,
    runtime_buffers,
)
from plan import (  # noqa: E402
    QUEUE_DEPTH,
    SHIM_BDS,
    Finish,
    check_plan,
    runtime_sequence,
    transfer_plan,
)

# ---------------------------------------------------------------------- IRON part


class IronMissing(RuntimeError):
    """mlir-aie's Python package (aie.iron) is not importable."""


def iron_status() -> tuple[bool, str]:
    """Whether IRON can be imported here, and if not, why (one sentence)."""
    try:
        import aie.iron  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot generate"
        return False, f"mlir-aie (IRON) not installed: import aie.iron failed ({exc})"
    return True, "mlir-aie (IRON) is importable"


def _device(target: str) -> Any:
    """The IRON device object; class names moved between mlir-aie releases."""
    import aie.iron.device as devices

    names = {"npu1": ("NPU1", "NPU1Col4"), "npu2": ("NPU2",)}[target]
    for name in names:
        cls = getattr(devices, name, None)
        if cls is not None:
            return cls()
    raise IronMissing(f"this mlir-aie has none of the device classes {names}")


def build_program(target: str, batch: int, heads: int = H) -> Any:
    """The IRON program for `target` and `batch`, resolved to an MLIR module.

    Written against IRON as mlir-aie documents it: per-core state as `LocalBuffer`s
    created inside the core body (mlir-aie test/python/localbuffer.py), kernel calls on
    acquired ObjectFifo elements and those buffers (python/iron/kernel.py, `func.call`
    on MLIR values), Python ints for the constant arguments.
    """
    ok, reason = iron_status()
    if not ok:
        raise IronMissing(reason)
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, LocalBuffer, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import Tile
    from aie.iron.placers import SequentialPlacer

    if "stack_size" not in inspect.signature(Worker.__init__).parameters:
        raise IronMissing(
            "this mlir-aie's IRON Worker takes no stack_size; the design sets the core stack "
            f"to {STACK_BYTES} bytes explicitly (kernels/README.md): install a newer mlir-aie"
        )

    g_count = min(groups(target), heads)  # the one-head bring-up design uses one group
    n_cols = g_count * COLS_PER_GROUP

    qr_ty = np.ndarray[(QR_BYTES,), np.dtype[np.int8]]
    rec_ty = np.ndarray[(REC_BYTES,), np.dtype[np.int8]]
    kv_ty = np.ndarray[(KV_BYTES,), np.dtype[np.int8]]
    out_tile_ty = np.ndarray[(TQ, D), np.dtype[np.int16]]
    out_col_ty = np.ndarray[(ROWS * TQ, D), np.dtype[np.int16]]
    row_ty = np.ndarray[(TQ,), np.dtype[np.int32]]
    s_ty = np.ndarray[(TQ * TK,), np.dtype[np.int32]]
    p_ty = np.ndarray[(TQ * TK,), np.dtype[np.int16]]
    acc_ty = np.ndarray[(TQ * D,), np.dtype[np.int32]]

    rows_init = Kernel("attn_qr_rows_init", KERNEL_OBJECT, [row_ty, row_ty, acc_ty])
    pass1 = Kernel(
        "attn_qr_pass1",
        KERNEL_OBJECT,
        [qr_ty, kv_ty, s_ty, row_ty, np.int32, np.int32, np.int32],
    )
    pass2 = Kernel(
        "attn_qr_pass2",
        KERNEL_OBJECT,
        [qr_ty, kv_ty, s_ty, p_ty, row_ty, row_ty, acc_ty, np.int32, np.int32],
    )
    rows_finish = Kernel("attn_rows_finish", KERNEL_OBJECT, [row_ty, acc_ty, out_tile_ty])

    # Key and value records of a group's head arrive on two shim channels and are joined
    # record by record in the memory tile of the group's first column, then broadcast
    # to its 16 cores.
    kv: list[Any] = []
    fifo_handles: dict[str, Any] = {}
    for g in range(g_count):
        fifo = ObjectFifo(kv_ty, depth=2, name=f"kv{g}")
        parts = fifo.prod().join(
            offsets=[0, REC_BYTES],
            placement=Tile(COLS_PER_GROUP * g, MEM_ROW),
            depths=[2, 2],
            obj_types=[rec_ty, rec_ty],
            names=[f"k{g}", f"v{g}"],
        )
        kv.append(fifo)
        fifo_handles[f"k{g}"] = parts[0]
        fifo_handles[f"v{g}"] = parts[1]

    # Shim -> the column's 4 cores directly: the memory tile's input channels are taken
    # by the output join (4) and, in a group's first column, the kv join (2).
    qr = [ObjectFifo(qr_ty, depth=1, name=f"qr{col}") for col in range(n_cols)]
    # One output tile per query tile (~200k cycles apart): depth 1 at the core; the
    # memory tile keeps two.
    out_col = [ObjectFifo(out_col_ty, depth=2, name=f"out{col}") for col in range(n_cols)]
    out_parts = [
        out_col[col]
        .prod()
        .join(
            offsets=[r * OUT_TILE_ELEMS for r in range(ROWS)],
            placement=Tile(col, MEM_ROW),
            depths=[1] * ROWS,
            obj_types=[out_tile_ty] * ROWS,
            names=[f"out{col}_{r}" for r in range(ROWS)],
        )
        for col in range(n_cols)
    ]
    fifo_handles |= {f"qr{col}": qr[col] for col in range(n_cols)}
    fifo_handles |= {f"out{col}": out_col[col] for col in range(n_cols)}

    def core_body(of_qr, of_kv, of_out, k_init, k_pass1, k_pass2, k_finish, slot):
        # Core-local state and scratch: buffers the allocator places and counts.
        m = LocalBuffer(row_ty)
        lsum = LocalBuffer(row_ty)
        acc = LocalBuffer(acc_ty)
        s = LocalBuffer(s_ty)
        p = LocalBuffer(p_ty)
        # One query tile per iteration; the Worker repeats this for as long as the
        # runtime sequence supplies query tiles, so the core program is batch-agnostic.
        elem_qr = of_qr.acquire(1)
        k_init(m, lsum, acc)
        for _ in range_(PAIRS - 1):
            elem_kv = of_kv.acquire(1)
            k_pass1(elem_qr, elem_kv, s, m, slot, TK, TK)
            of_kv.release(1)
        elem_kv = of_kv.acquire(1)
        k_pass1(elem_qr, elem_kv, s, m, slot, TK, LAST_VALID)  # keys >= 1500 are masked
        of_kv.release(1)
        for _ in range_(NKT - 1):
            elem_kv = of_kv.acquire(1)
            k_pass2(elem_qr, elem_kv, s, p, m, lsum, acc, slot, TK)
            of_kv.release(1)
        elem_kv = of_kv.acquire(1)
        k_pass2(elem_qr, elem_kv, s, p, m, lsum, acc, slot, LAST_VALID)
        of_kv.release(1)
        elem_out = of_out.acquire(1)
        k_finish(lsum, acc, elem_out)
        of_out.release(1)
        of_qr.release(1)

    workers = []
    for col in range(n_cols):
        g = col // COLS_PER_GROUP
        for r in range(ROWS):
            workers.append(
                Worker(
                    core_body,
                    fn_args=[
                        qr[col].cons(),
                        kv[g].cons(),
                        out_parts[col][r].prod(),
                        rows_init,
                        pass1,
                        pass2,
                        rows_finish,
                        r,
                    ],
                    placement=Tile(col, FIRST_CORE_ROW + r),
                    stack_size=STACK_BYTES,
                )
            )

    layout = runtime_buffers(batch, heads)
    arg_types = [
        np.ndarray[(int(np.prod(b["shape"])),), np.dtype[getattr(np, b["dtype"])]] for b in layout
    ]
    flat = {b["name"]: (int(np.prod(b["shape"])),) for b in layout}

    rt = Runtime()
    with rt.sequence(*arg_types) as buffers:
        named = dict(zip([b["name"] for b in layout], buffers, strict=True))
        rt.start(*workers)
        task_groups: dict[int, Any] = {}
        for op in runtime_sequence(target, batch, heads):
            if isinstance(op, Finish):
                rt.finish_task_group(task_groups.pop(op.group))
                continue
            if op.group not in task_groups:
                task_groups[op.group] = rt.task_group()
            tap = TensorAccessPattern(flat[op.buffer], op.offset, list(op.sizes), list(op.strides))
            move = rt.fill if op.kind == "fill" else rt.drain
            handle = fifo_handles[op.fifo]
            move(
                handle.prod() if op.kind == "fill" else handle.cons(),
                named[op.buffer],
                tap=tap,
                task_group=task_groups[op.group],
                wait=op.wait,
                placement=Tile(op.column, SHIM_ROW),
            )

    program = Program(_device(target), rt)
    return program.resolve_program(SequentialPlacer())


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ok, reason = iron_status()
    epilog = (
        f"IRON here: {reason}. --config, --plan and --check-plan work without it; emitting "
        "MLIR needs mlir-aie (see kernels/README.md)."
    )
    p = argparse.ArgumentParser(
        description="Emit the MLIR of the amanuensis-npu attention kernel (SPEC.md v"
        f"{SPEC_VERSION}) for one NPU generation and batch size.",
        epilog=epilog,
    )
    p.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="npu1",
        help="npu1 (Phoenix, Hawk Point) or npu2 (Strix, Krackan)",
    )
    p.add_argument("--batch", type=int, default=1, help="30 s windows per dispatch")
    p.add_argument(
        "--heads",
        type=int,
        help=f"attention heads per layer: the model's size ({_sizes_text()}; default {H}); "
        "--check-plan without it replays every size",
    )
    p.add_argument("-o", "--output", type=Path, help="write the MLIR here (default: stdout)")
    p.add_argument(
        "--config",
        action="store_true",
        help="print the tiling/placement JSON the manifest records, and exit",
    )
    p.add_argument(
        "--plan", action="store_true", help="print the shim transfer plan as JSON lines, and exit"
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print SPEC §6.4's cycle estimate per target (an estimate, not a measurement)",
    )
    p.add_argument(
        "--check-plan",
        action="store_true",
        help="replay the runtime sequence of npu1 and npu2 (batch 1 and 8, every Whisper "
        f"size) against the shim DMA task queue ({QUEUE_DEPTH} deep); exit 1 if a channel "
        "ever holds more",
    )
    return p


def _sizes_text() -> str:
    return ", ".join(f"{name} {h}" for name, h in WHISPER_HEADS.items())


def print_plan_check(
    batches: tuple[int, ...] = (1, 8), heads: tuple[int, ...] | None = None
) -> int:
    """`--check-plan`: one line per target and head count, the most outstanding pushes.

    Without `heads`, every Whisper size (WHISPER_HEADS): the queue depth is a property of
    the sequence's shape per round, and an odd count on npu2 changes that shape.
    """
    status = 0
    for h in heads or tuple(sorted(set(WHISPER_HEADS.values()))):
        for target in sorted(TARGETS):
            worst = None
            for batch in batches:
                result = check_plan(runtime_sequence(target, batch, h))
                if worst is None or result.max_outstanding > worst[1].max_outstanding:
                    worst = (batch, result)
                for problem in result.problems[:5]:
                    print(f"{target} {h} heads batch {batch}: {problem}")
                if not result.ok:
                    status = 1
            batch, result = worst
            verdict = "ok" if result.max_outstanding <= QUEUE_DEPTH and result.ok else "FAILED"
            print(
                f"{target} {h} heads: at most {result.max_outstanding} outstanding pushes per "
                f"shim channel (limit {QUEUE_DEPTH}); at most {result.max_bds} of {SHIM_BDS} "
                f"buffer descriptors per shim tile; batches {', '.join(map(str, batches))}: "
                f"{verdict}"
            )
            if result.max_outstanding > QUEUE_DEPTH:
                status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch < 1 or (args.heads is not None and args.heads < 1):
        print("design.py: --batch and --heads must be >= 1", file=sys.stderr)
        return 2
    if args.check_plan:
        return print_plan_check(heads=(args.heads,) if args.heads else None)
    heads = args.heads or H
    if args.estimate:
        for target in sorted(TARGETS):
            e = cycle_estimate(target, heads=heads)
            print(
                f"{target} {heads} heads (estimate): compute {e['compute_cycles_low'] / 1e6:.2f}-"
                f"{e['compute_cycles_high'] / 1e6:.2f} M cycles per layer = "
                f"{e['compute_ms_low']:.1f}-{e['compute_ms_high']:.1f} ms at "
                f"{CLOCK_MHZ[target]} MHz; kv stream {e['stream_cycles'] / 1e6:.2f} M cycles "
                f"= {e['stream_ms']:.2f} ms; bound: {e['bound']}"
            )
        if args.heads is None:
            print("per Whisper size (estimate; SPEC §6.4):")
            print("\n".join(size_estimate_rows()))
        return 0
    if args.config:
        print(json.dumps(design_config(args.target, args.batch, heads), indent=2))
        return 0
    if args.plan:
        for t in transfer_plan(args.target, args.batch, heads):
            print(json.dumps(asdict(t)))
        return 0
    try:
        module = build_program(args.target, args.batch, heads)
    except IronMissing as exc:
        print(f"design.py: {exc}", file=sys.stderr)
        return 2
    text = str(module)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
