#!/usr/bin/env python3
"""The bring-up designs: the smallest programs that isolate each risk of the first NPU run.

    python kernels/bringup/designs.py --design exp2n --target npu1 -o build/exp2n/aie.mlir
    python kernels/bringup/designs.py --check-plan

Run in this order (`make -C kernels bringup` does, and stops at the first FAIL):

1. `exp2n`  one core, the exponent unit alone (attn_exp2n_block) over every input it can
            take, t = 0..T_ZERO: the lookup units and their table layout (EXP=lut) or the
            table-free arithmetic (EXP=nolut), rounding modes, 512-bit loads and stores.
2. `scores` one core, one query tile against one key record (attn_tile_scores): the int8
            mmul shapes, the host's 8 x 8 block layout, the per-key rescale.
3. `head`   attention.design with one head on one group of 16 cores: ObjectFifos,
            broadcasts, the memory-tile joins, both passes, the reciprocal, the drain.
4. `layer`  attention.design itself: all heads, one group (npu1) or two (npu2).

Like design.py, importing this needs only numpy; emitting MLIR needs mlir-aie's IRON.
The transfer plans of exp2n and scores are tiny (one fill per input, one drain); head and
layer use plan.runtime_sequence, so `--check-plan` replays all four against the shim
DMA queue model of plan.check_plan.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DESIGNS = ("exp2n", "scores", "head", "layer")
T_ZERO = 14 << 12  # SPEC §1
EXP_BLOCK = 1024  # attention.cc ATTN_EXP_BLOCK: exponents per kernel call
EXP_BLOCKS = -(-(T_ZERO + 1) // EXP_BLOCK)  # 57 blocks cover 0..T_ZERO
EXP_WORDS = EXP_BLOCKS * EXP_BLOCK
Q_TILE_BYTES = 2048
REC_BYTES = 4352
S_WORDS = 32 * 64


def _load_design():
    name = "amanuensis_attention_design"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "attention" / "design.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


design = _load_design()
import layout  # noqa: E402 - design.py's siblings, on the path it puts them on
import plan  # noqa: E402


def _heads(name: str, heads: int | None) -> int:
    """`head` is one head; `layer` the model's count (default Base's 8)."""
    return 1 if name == "head" else (heads or layout.H)


def runtime_buffers(name: str, heads: int | None = None) -> list[dict[str, Any]]:
    """The runtime sequence's arguments of design `name`, in order (batch 1)."""
    if name == "exp2n":
        specs = [("t", "int32", (EXP_WORDS,), "in"), ("p", "int32", (EXP_WORDS,), "out")]
    elif name == "scores":
        specs = [
            ("q", "int8", (Q_TILE_BYTES,), "in"),
            ("krec", "int8", (REC_BYTES,), "in"),
            ("s", "int32", (S_WORDS,), "out"),
        ]
    elif name in ("head", "layer"):
        return layout.runtime_buffers(1, _heads(name, heads))
    else:
        raise ValueError(f"unknown design {name!r}; choose one of {DESIGNS}")
    return layout.buffer_table(specs)


def runtime_sequence(name: str, target: str, heads: int | None = None) -> list:
    """Every shim transfer and task-group finish of one dispatch of design `name`."""
    if name in ("head", "layer"):
        return plan.runtime_sequence(target, 1, _heads(name, heads))
    t = plan.Transfer
    if name == "exp2n":
        blocks = (1, 1, EXP_BLOCKS, EXP_BLOCK)  # every DMA dimension below 1024 words
        stride = (0, 0, EXP_BLOCK, 1)
        seq = [
            t("fill", "t_in", "t", 0, blocks, stride, 0, 0),
            t("drain", "p_out", "p", 0, blocks, stride, 0, 0),
        ]
    elif name == "scores":
        seq = [
            t("fill", "q_in", "q", 0, (1, 1, 1, Q_TILE_BYTES), (0, 0, 0, 1), 0, 0),
            t("fill", "k_in", "krec", 0, (1, 1, 1, REC_BYTES), (0, 0, 0, 1), 0, 0),
            t("drain", "s_out", "s", 0, (1, 1, 1, S_WORDS), (0, 0, 0, 1), 0, 0),
        ]
    else:
        raise ValueError(f"unknown design {name!r}; choose one of {DESIGNS}")
    return [*seq, plan.Finish(0)]


def build_program(name: str, target: str, heads: int | None = None) -> Any:
    """The IRON program of design `name` for `target`, resolved to an MLIR module."""
    if name in ("head", "layer"):
        return design.build_program(target, 1, _heads(name, heads))
    ok, reason = design.iron_status()
    if not ok:
        raise design.IronMissing(reason)
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.device import Tile
    from aie.iron.placers import SequentialPlacer

    i32 = np.dtype[np.int32]
    i8 = np.dtype[np.int8]
    if name == "exp2n":
        block_ty = np.ndarray[(EXP_BLOCK,), i32]
        fifos = {"t_in": ObjectFifo(block_ty, depth=2), "p_out": ObjectFifo(block_ty, depth=2)}
        kernel = Kernel("attn_exp2n_block", layout.KERNEL_OBJECT, [block_ty, block_ty])

        def core_body(of_t, of_p, k):
            t, p = of_t.acquire(1), of_p.acquire(1)
            k(t, p)
            of_t.release(1)
            of_p.release(1)

        args = [fifos["t_in"].cons(), fifos["p_out"].prod(), kernel]
    elif name == "scores":
        q_ty = np.ndarray[(Q_TILE_BYTES,), i8]
        k_ty = np.ndarray[(REC_BYTES,), i8]
        s_ty = np.ndarray[(S_WORDS,), i32]
        fifos = {
            "q_in": ObjectFifo(q_ty, depth=1),
            "k_in": ObjectFifo(k_ty, depth=1),
            "s_out": ObjectFifo(s_ty, depth=1),
        }
        kernel = Kernel("attn_tile_scores", layout.KERNEL_OBJECT, [q_ty, k_ty, s_ty])

        def core_body(of_q, of_k, of_s, k):
            q, kr, s = of_q.acquire(1), of_k.acquire(1), of_s.acquire(1)
            k(q, kr, s)
            of_q.release(1)
            of_k.release(1)
            of_s.release(1)

        args = [fifos["q_in"].cons(), fifos["k_in"].cons(), fifos["s_out"].prod(), kernel]
    else:
        raise ValueError(f"unknown design {name!r}; choose one of {DESIGNS}")
    worker = Worker(
        core_body,
        fn_args=args,
        placement=Tile(0, layout.FIRST_CORE_ROW),
        stack_size=layout.STACK_BYTES,
    )
    table = runtime_buffers(name)
    arg_types = [
        np.ndarray[(int(np.prod(b["shape"])),), np.dtype[getattr(np, b["dtype"])]] for b in table
    ]
    rt = Runtime()
    with rt.sequence(*arg_types) as buffers:
        named = dict(zip([b["name"] for b in table], buffers, strict=True))
        rt.start(worker)
        group = rt.task_group()
        for op in runtime_sequence(name, target):
            if isinstance(op, plan.Finish):
                rt.finish_task_group(group)
                continue
            size = int(np.prod(next(b["shape"] for b in table if b["name"] == op.buffer)))
            tap = TensorAccessPattern((size,), op.offset, list(op.sizes), list(op.strides))
            move = rt.fill if op.kind == "fill" else rt.drain
            fifo = fifos[op.fifo]
            move(
                fifo.prod() if op.kind == "fill" else fifo.cons(),
                named[op.buffer],
                tap=tap,
                task_group=group,
                wait=op.wait,
                placement=Tile(op.column, layout.SHIM_ROW),
            )
    program = Program(design._device(target), rt)
    return program.resolve_program(SequentialPlacer())


def print_plan_check() -> int:
    """`--check-plan`: every design on every target against the shim DMA queue model."""
    status = 0
    for name in DESIGNS:
        for target in sorted(layout.TARGETS):
            result = plan.check_plan(runtime_sequence(name, target))
            verdict = "ok" if result.ok else "PROBLEM"
            print(
                f"{name} {target}: at most {result.max_outstanding} outstanding pushes per shim "
                f"channel (limit {plan.QUEUE_DEPTH}), {result.max_bds} of {plan.SHIM_BDS} "
                f"buffer descriptors per shim tile: {verdict}"
            )
            for problem in result.problems[:5]:
                print(f"  {problem}")
            status |= 0 if result.ok else 1
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--design", choices=DESIGNS, default="exp2n")
    p.add_argument("--target", choices=sorted(layout.TARGETS), default="npu1")
    p.add_argument("-o", "--output", type=Path, help="write the MLIR here (default: stdout)")
    p.add_argument("--check-plan", action="store_true", help="check every design's plan; exit")
    p.add_argument("--heads", type=int, help="heads of the layer design (the model's; default 8)")
    args = p.parse_args(argv)
    if args.check_plan:
        return print_plan_check()
    try:
        module = build_program(args.design, args.target, args.heads)
    except design.IronMissing as exc:
        print(f"designs.py: {exc}", file=sys.stderr)
        return 2
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(str(module))
    else:
        print(module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
