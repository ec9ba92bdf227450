#!/usr/bin/env python3
"""IRON design of the Whisper encoder attention kernel (SPEC.md), for npu1 and npu2.

Prints (or writes with -o) the MLIR that `aiecc.py` turns into final.xclbin and
insts.bin. One kernel invocation computes one encoder layer for a whole batch:
every batch element, all 8 heads, all 48 query tiles (TQ = 32) of the 1536
padded frames, each query tile reading all 24 key tiles (TK = 64) in both
passes of SPEC §4, so there is no block-diagonal shortcut anywhere.

Data flow (the reasons are hardware limits, see kernels/README.md):

- A *group* is 4 columns x 4 compute rows = 16 cores working on one head at a
  time (npu1 has one group, npu2 two; group g takes heads h = g, g + G, ...).
  Each head takes 3 rounds; in round `rd` the core in column c, row r handles
  query tile `16 rd + 4 c + r`.
- `qr<col>`: shim -> the 4 cores of a column (broadcast), one 17,920-byte object
  per round: the column's 4 query tiles (4 x 32 x 64 int8), their 128 rowp row
  words, the head's 768 rowp key words (1536 int16 per-key K scales) and its 1536
  rowp V words (48 sub-tiles x 64 int16 V scales, SPEC v4). Four shim transfers
  (from `q`, then three times from `rowp`) fill one object; each core uses its slot
  `r` through the wrappers in iron_glue.cc, which also pick the key and V scales of
  the current key tile (cores count the kv objects of each pass).
- `kv<g>`: the head's K (stored as Kᵀ per key tile) and V tiles arrive on two
  shim channels and are joined in a memory tile into 8 KiB objects (Kᵀ tile j,
  V tile j), broadcast to the group's 16 cores: 24 objects for pass 1 (row max,
  K half used) and 24 for pass 2 (probabilities and P.V), per round.
- The rowp header is not sent: the design is built for n_frames = 1500 (every
  Whisper window) and passes each key tile's count of valid keys (64, and 28 for
  the last tile) to the kernel as a constant; padded keys are masked by it.
- `out<col>`: each core's 32 x 64 int16 output tile is joined in its column's
  memory tile (4 tiles = 128 consecutive rows) and drained to `out`.

Only numpy is needed to import this module (and to compute the transfer plan
and the configuration the manifest records); generating MLIR needs mlir-aie's
IRON (`aie.iron`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------- SPEC.md §1
SPEC_VERSION = 4
D = 64  # head dim
H = 8  # heads
FRAMES = 1500  # frames per 30 s window (n_frames in the rowp header)
TK = 64  # key tile
TQ = 32  # query tile
TP = TK * -(-FRAMES // TK)  # padded frames, 1536
NKT = -(-FRAMES // TK)  # key tiles processed per pass, 24
NQT = TP // TQ  # query tiles per head, 48
VSUB = 32  # keys per V scale sub-tile
HEADER_WORDS = 16
KEY_WORDS = HEADER_WORDS + TP  # first key-scale word (int16 pairs) in a head's rowp
KEY_WORD_COUNT = TP // 2  # 768
V_WORDS = KEY_WORDS + KEY_WORD_COUNT  # first V-scale word (int16 pairs)
V_WORD_COUNT = (TP // VSUB) * D // 2  # 1536
ROWP_WORDS = V_WORDS + V_WORD_COUNT  # 3856 int32 per (b, h)

# ------------------------------------------------------------------ this design
ROWS = 4  # compute rows per column on npu1 and npu2
COLS_PER_GROUP = 4
CORES_PER_GROUP = ROWS * COLS_PER_GROUP  # 16
ROUNDS = NQT // CORES_PER_GROUP  # 3 rounds of 16 query tiles per head
FIRST_CORE_ROW = 2
MEM_ROW = 1
SHIM_ROW = 0

LAST_VALID = FRAMES - (NKT - 1) * TK  # valid keys in the last key tile, 28
Q_DTYPE = "int8"  # SPEC v3 on
QR_Q_TILE_BYTES = TQ * D  # 2048: slot r's query tile (int8 32 x 64) at r * 2048
QR_WORDS_OFFSET = ROWS * QR_Q_TILE_BYTES  # 8192: slot r's 32 rowp row words at + 128 r
QR_KEYWORDS_OFFSET = QR_WORDS_OFFSET + ROWS * TQ * 4  # 8704: the head's 768 key words
QR_VWORDS_OFFSET = QR_KEYWORDS_OFFSET + KEY_WORD_COUNT * 4  # 11776: its 1536 V words
QR_BYTES = QR_VWORDS_OFFSET + V_WORD_COUNT * 4  # 17920
KV_V_OFFSET = TK * D  # 4096: the kv object is [Kᵀ tile 64 x 64][V tile 64 x 64], int8
KV_BYTES = 2 * TK * D  # 8192
OUT_TILE_ELEMS = TQ * D  # int16

# attention.o is iron_glue.cc (which includes attention.cc) built with Peano. Calls per
# query tile, all on core-local buffers m, l (int32 x 32) and acc (int32 x 32 x 64):
#   attn_qr_rows_init(m, l, acc)                          (also resets the key-tile counters)
#   attn_qr_tile_max(qr, kv, m, slot, valid)              key tiles 0..23 (pass 1)
#   attn_qr_tile_accum(qr, kv, m, l, acc, slot, valid)    key tiles 0..23 (pass 2)
#   attn_rows_finish(l, acc, out)
KERNEL_OBJECT = "attention.o"
ENTRY_POINTS = ("attn_qr_rows_init", "attn_qr_tile_max", "attn_qr_tile_accum", "attn_rows_finish")

TARGETS: dict[str, dict[str, Any]] = {
    # columns usable by one application; mmul shapes per SPEC §6.3
    "npu1": {
        "columns": 4,
        "device_class": "NPU1",
        "arch": "aie2",
        "mmul_qk": "4x8x8 int8 x int8",
        "mmul_pv": "4x8x4 int16 x int8",
    },
    "npu2": {
        "columns": 8,
        "device_class": "NPU2",
        "arch": "aie2p",
        "mmul_qk": "8x8x8 int8 x int8",
        "mmul_pv": "4x8x8 int16 x int8",
    },
}

# Per-core data memory (bytes) of this design; SPEC §6.2 with the qr object instead of
# separate q and rowp buffers (one fewer DMA input channel, see kernels/README.md).
# The qr object holds the head's key and V scale words (9 KiB), so no core needs a third
# input.
CORE_MEMORY = {
    "qr object (depth 1)": QR_BYTES,
    "kv objects (depth 2)": 2 * KV_BYTES,
    "out tile int16 32x64 (depth 1)": OUT_TILE_ELEMS * 2,
    "scores S int32 32x64 (attention.cc static)": TQ * TK * 4,
    "P int16 32x64 (attention.cc static)": TQ * TK * 2,
    "acc int32 32x64": TQ * D * 4,
    "row state m, l int32 x 32": 2 * TQ * 4,
    "E, G, R tables int32 (129 + 128 + 64)": (129 + 128 + 64) * 4,
    "stack": 1024,
}
CORE_MEMORY_LIMIT = 64 * 1024


def groups(target: str) -> int:
    return TARGETS[target]["columns"] // COLS_PER_GROUP


def runtime_buffers(batch: int) -> list[dict[str, Any]]:
    """The runtime sequence's arguments in order (SPEC §2); make_manifest checks them
    against amanuensis_npu.npu.quantization.buffer_layout, so the two cannot drift."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rows = (batch, H, TP, D)
    key_tiles = (batch, H, TP // TK, D, TK)  # K stored transposed per key tile (SPEC §2)
    specs = [
        ("q", Q_DTYPE, rows, "in"),
        ("k", "int8", key_tiles, "in"),
        ("v", "int8", rows, "in"),
        ("rowp", "int32", (batch, H, ROWP_WORDS), "in"),
        ("out", "int16", rows, "out"),
    ]
    return [
        {
            "name": name,
            "dtype": dtype,
            "shape": list(shape),
            "nbytes": int(np.prod(shape)) * np.dtype(dtype).itemsize,
            "direction": direction,
        }
        for name, dtype, shape, direction in specs
    ]


def design_config(target: str, batch: int) -> dict[str, Any]:
    """Tiling and placement, as recorded in the manifest."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose npu1 or npu2")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    t = TARGETS[target]
    g = groups(target)
    return {
        "device_class": t["device_class"],
        "arch": t["arch"],
        "tiles": {
            "head_dim": D,
            "heads": H,
            "frames": FRAMES,
            "padded_frames": TP,
            "query_tile": TQ,
            "key_tile": TK,
            "key_tiles_per_pass": NKT,
            "query_tiles_per_head": NQT,
            "valid_keys_last_tile": LAST_VALID,
            "rowp_header_words": HEADER_WORDS,
            "rowp_header_on_device": False,
            "qr_object_bytes": QR_BYTES,
            "qr_key_words_offset": QR_KEYWORDS_OFFSET,
            "qr_v_words_offset": QR_VWORDS_OFFSET,
            "v_scale_sub_tile": VSUB,
            "kv_object_bytes": KV_BYTES,
            "mmul_qk": t["mmul_qk"],
            "mmul_pv": t["mmul_pv"],
        },
        "placement": {
            "columns": t["columns"],
            "compute_rows": ROWS,
            "cores": t["columns"] * ROWS,
            "groups": g,
            "cores_per_group": CORES_PER_GROUP,
            "rounds_per_head": ROUNDS,
            "rounds_per_core_per_dispatch": batch * (H // g) * ROUNDS,
            "head_of_group": "h = g + G * step (G groups)",
            "query_tile_of_core": "16 * round + 4 * column_in_group + row",
            "core_memory_bytes": sum(CORE_MEMORY.values()),
            "kernel_object": KERNEL_OBJECT,
            "kernel_sources": ["attention/iron_glue.cc", "attention/attention.cc"],
            "entry_points": list(ENTRY_POINTS),
            "dispatches_per_layer": 1,
        },
    }


# ------------------------------------------------------------------ transfer plan


@dataclass(frozen=True)
class Transfer:
    """One shim DMA task of the runtime sequence (a fill or a drain).

    `offset`, `sizes` and `strides` are in elements of `buffer`, outermost first, as
    IRON's TensorAccessPattern takes them; `fifo` names the ObjectFifo endpoint and
    `column` the shim tile that runs the transfer.
    """

    kind: str  # "fill" | "drain"
    fifo: str
    buffer: str
    offset: int
    sizes: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    column: int
    group_step: int  # transfers of one step form one task group


def _bh(batch_index: int, head: int) -> int:
    return batch_index * H + head


def transfer_plan(target: str, batch: int) -> list[Transfer]:
    """Every shim transfer of one dispatch, in issue order.

    The same list drives build_program() and the data-movement test, so what is tested
    is what the runtime sequence does. Offsets, sizes and strides are in elements.
    """
    g_count = groups(target)
    plan: list[Transfer] = []
    step_index = 0

    def add(
        kind: str, fifo: str, buf: str, offset: int, sizes: tuple, strides: tuple, col: int
    ) -> None:
        plan.append(Transfer(kind, fifo, buf, offset, sizes, strides, col, step_index))

    half = TP // 2 * D  # a head's K or V in two halves keeps every DMA dim below 1024 words
    for b in range(batch):
        for step in range(H // g_count):
            for g in range(g_count):
                bh = _bh(b, step * g_count + g)
                base = bh * TP * D
                # The head's Kᵀ tiles and V tiles, once per pass per round, in key-tile order.
                reps = 2 * ROUNDS
                add(
                    "fill",
                    f"k{g}",
                    "k",
                    base,
                    (reps, 2, TP // 2, D),
                    (0, half, D, 1),
                    COLS_PER_GROUP * g,
                )
                add(
                    "fill",
                    f"v{g}",
                    "v",
                    base,
                    (reps, 2, TP // 2, D),
                    (0, half, D, 1),
                    COLS_PER_GROUP * g + 1,
                )
                for c in range(COLS_PER_GROUP):
                    col = COLS_PER_GROUP * g + c
                    for rd in range(ROUNDS):
                        qt0 = CORES_PER_GROUP * rd + ROWS * c  # query tile of slot 0
                        add(
                            "fill",
                            f"qr{col}",
                            "q",
                            base + qt0 * TQ * D,
                            (1, 1, ROWS * TQ, D),
                            (0, 0, D, 1),
                            col,
                        )
                        add(
                            "fill",
                            f"qr{col}",
                            "rowp",
                            bh * ROWP_WORDS + HEADER_WORDS + qt0 * TQ,
                            (1, 1, 1, ROWS * TQ),
                            (0, 0, 0, 1),
                            col,
                        )
                        # The head's key words (768), then its V words in two rows of 768
                        # (a DMA dimension holds at most 1023 words).
                        add(
                            "fill",
                            f"qr{col}",
                            "rowp",
                            bh * ROWP_WORDS + KEY_WORDS,
                            (1, 1, 1, KEY_WORD_COUNT),
                            (0, 0, 0, 1),
                            col,
                        )
                        add(
                            "fill",
                            f"qr{col}",
                            "rowp",
                            bh * ROWP_WORDS + V_WORDS,
                            (1, 1, 2, V_WORD_COUNT // 2),
                            (0, 0, V_WORD_COUNT // 2, 1),
                            col,
                        )
                    add(
                        "drain",
                        f"out{col}",
                        "out",
                        base + ROWS * c * TQ * D,
                        (1, ROUNDS, ROWS * TQ, D),
                        (0, CORES_PER_GROUP * TQ * D, D, 1),
                        col,
                    )
            step_index += 1
    return plan


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


def build_program(target: str, batch: int) -> Any:
    """The IRON program for `target` and `batch`, resolved to an MLIR module."""
    ok, reason = iron_status()
    if not ok:
        raise IronMissing(reason)
    import aie.iron as iron
    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import Tile
    from aie.iron.placers import SequentialPlacer

    n_cols = TARGETS[target]["columns"]
    g_count = groups(target)
    # Core-local buffers are `Buffer` in current mlir-aie, `GlobalBuffer` in older releases.
    buffer_cls = getattr(iron, "Buffer", None) or iron.GlobalBuffer

    qr_ty = np.ndarray[(QR_BYTES,), np.dtype[np.int8]]
    tile_ty = np.ndarray[(TK, D), np.dtype[np.int8]]
    kv_ty = np.ndarray[(2, TK, D), np.dtype[np.int8]]
    out_tile_ty = np.ndarray[(TQ, D), np.dtype[np.int16]]
    out_col_ty = np.ndarray[(ROWS * TQ, D), np.dtype[np.int16]]
    row_ty = np.ndarray[(TQ,), np.dtype[np.int32]]
    acc_ty = np.ndarray[(TQ, D), np.dtype[np.int32]]

    rows_init = Kernel("attn_qr_rows_init", KERNEL_OBJECT, [row_ty, row_ty, acc_ty])
    tile_max = Kernel("attn_qr_tile_max", KERNEL_OBJECT, [qr_ty, kv_ty, row_ty, np.int32, np.int32])
    tile_accum = Kernel(
        "attn_qr_tile_accum",
        KERNEL_OBJECT,
        [qr_ty, kv_ty, row_ty, row_ty, acc_ty, np.int32, np.int32],
    )
    rows_finish = Kernel("attn_rows_finish", KERNEL_OBJECT, [row_ty, acc_ty, out_tile_ty])

    # Kᵀ and V tiles of a group's head arrive on two shim channels and are joined tile by
    # tile in the memory tile of the group's first column, then broadcast to its 16 cores.
    kv: list[Any] = []
    k_in: list[Any] = []
    v_in: list[Any] = []
    for g in range(g_count):
        fifo = ObjectFifo(kv_ty, depth=2, name=f"kv{g}")
        parts = fifo.prod().join(
            offsets=[0, KV_V_OFFSET],
            placement=Tile(COLS_PER_GROUP * g, MEM_ROW),
            depths=[2, 2],
            obj_types=[tile_ty, tile_ty],
            names=[f"k{g}", f"v{g}"],
        )
        kv.append(fifo)
        k_in.append(parts[0])
        v_in.append(parts[1])

    # Shim -> the column's 4 cores directly: the memory tile's input channels are all
    # taken by the output join (4) and, in a group's first column, K and V (2).
    qr = [ObjectFifo(qr_ty, depth=1, name=f"qr{col}") for col in range(n_cols)]
    # The core writes one output tile per query tile (~100k cycles apart): depth 1 at the
    # core leaves room for the 17.5 KiB qr object; the memory tile keeps two.
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

    def core_body(
        of_qr, of_kv, of_out, row_max, row_sum, acc, k_init, k_max, k_accum, k_finish, slot
    ):
        # One query tile per iteration; the Worker repeats this for as long as the
        # runtime sequence supplies query tiles, so the core program is batch-agnostic.
        elem_qr = of_qr.acquire(1)
        k_init(row_max, row_sum, acc)
        for _ in range_(NKT - 1):
            elem_kv = of_kv.acquire(1)
            k_max(elem_qr, elem_kv, row_max, slot, TK)
            of_kv.release(1)
        elem_kv = of_kv.acquire(1)
        k_max(elem_qr, elem_kv, row_max, slot, LAST_VALID)  # keys >= 1500 are masked
        of_kv.release(1)
        for _ in range_(NKT - 1):
            elem_kv = of_kv.acquire(1)
            k_accum(elem_qr, elem_kv, row_max, row_sum, acc, slot, TK)
            of_kv.release(1)
        elem_kv = of_kv.acquire(1)
        k_accum(elem_qr, elem_kv, row_max, row_sum, acc, slot, LAST_VALID)
        of_kv.release(1)
        elem_out = of_out.acquire(1)
        k_finish(row_sum, acc, elem_out)
        of_out.release(1)
        of_qr.release(1)

    workers = []
    for col in range(n_cols):
        g = col // COLS_PER_GROUP
        for r in range(ROWS):
            state = [
                buffer_cls(row_ty, name=f"m_{col}_{r}"),
                buffer_cls(row_ty, name=f"l_{col}_{r}"),
                buffer_cls(acc_ty, name=f"acc_{col}_{r}"),
            ]
            workers.append(
                Worker(
                    core_body,
                    fn_args=[
                        qr[col].cons(),
                        kv[g].cons(),
                        out_parts[col][r].prod(),
                        *state,
                        rows_init,
                        tile_max,
                        tile_accum,
                        rows_finish,
                        r,
                    ],
                    placement=Tile(col, FIRST_CORE_ROW + r),
                )
            )

    layout = runtime_buffers(batch)
    arg_types = [
        np.ndarray[(int(np.prod(b["shape"])),), np.dtype[getattr(np, b["dtype"])]] for b in layout
    ]
    flat = {b["name"]: (int(np.prod(b["shape"])),) for b in layout}
    fifo_handles = {f"k{g}": k_in[g] for g in range(g_count)}
    fifo_handles |= {f"v{g}": v_in[g] for g in range(g_count)}
    fifo_handles |= {f"qr{col}": qr[col] for col in range(n_cols)}
    fifo_handles |= {f"out{col}": out_col[col] for col in range(n_cols)}

    rt = Runtime()
    with rt.sequence(*arg_types) as buffers:
        named = dict(zip([b["name"] for b in layout], buffers, strict=True))
        rt.start(*workers)
        plan = transfer_plan(target, batch)
        for step in sorted({t.group_step for t in plan}):
            tg = rt.task_group()
            for t in (t for t in plan if t.group_step == step):
                tap = TensorAccessPattern(flat[t.buffer], t.offset, list(t.sizes), list(t.strides))
                if t.kind == "fill":
                    rt.fill(
                        fifo_handles[t.fifo].prod(),
                        named[t.buffer],
                        tap=tap,
                        task_group=tg,
                        placement=Tile(t.column, SHIM_ROW),
                    )
                else:
                    rt.drain(
                        fifo_handles[t.fifo].cons(),
                        named[t.buffer],
                        tap=tap,
                        task_group=tg,
                        wait=True,
                        placement=Tile(t.column, SHIM_ROW),
                    )
            rt.finish_task_group(tg)

    program = Program(_device(target), rt)
    return program.resolve_program(SequentialPlacer())


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ok, reason = iron_status()
    epilog = (
        f"IRON here: {reason}. --config and --plan work without it; emitting MLIR needs "
        "mlir-aie (see kernels/README.md)."
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
    p.add_argument("-o", "--output", type=Path, help="write the MLIR here (default: stdout)")
    p.add_argument(
        "--config",
        action="store_true",
        help="print the tiling/placement JSON the manifest records, and exit",
    )
    p.add_argument(
        "--plan", action="store_true", help="print the shim transfer plan as JSON lines, and exit"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch < 1:
        print("design.py: --batch must be >= 1", file=sys.stderr)
        return 2
    if args.config:
        print(json.dumps(design_config(args.target, args.batch), indent=2))
        return 0
    if args.plan:
        for t in transfer_plan(args.target, args.batch):
            print(json.dumps(asdict(t)))
        return 0
    try:
        module = build_program(args.target, args.batch)
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
