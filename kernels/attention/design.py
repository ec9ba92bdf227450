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

The runtime sequence is one task group per round. Round r + 1's transfers are issued
before round r's are awaited, so the cores never wait for the host between rounds,
and at most two rounds are in flight: every shim channel holds at most 4 pushes, the
depth of a shim DMA task queue (aie-rt driver/src/dma/xaie_dma.c,
XAIE_DMA_MAX_QUEUE_SIZE; mlir-aie include/aie/Dialect/AIEX/Utils/DmaQueueModel.h).
Every transfer is awaited, which is what retires a push in that queue model.
`check_plan` replays the sequence against the model; `--check-plan` prints it.

Only numpy is needed to import this module (and to compute the transfer plan
and the configuration the manifest records); generating MLIR needs mlir-aie's
IRON (`aie.iron`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------- SPEC.md §1-§2
SPEC_VERSION = 5
D = 64  # head dim
H = 8  # heads of Whisper Base, the default shape; every size differs only in H
# The encoder shapes Whisper ships (heads per layer; every head is 64 wide over 1500
# frames): tiny 6, base 8, small 12, medium 16, large-v1/v2/v3 and turbo 20.
WHISPER_HEADS = {"tiny": 6, "base": 8, "small": 12, "medium": 16, "large": 20}
WHISPER_LAYERS = {"tiny": 4, "base": 6, "small": 12, "medium": 24, "large": 32}  # dispatches
FRAMES = 1500  # frames per 30 s window (n_frames in the rowp header)
TK = 64  # key tile
TQ = 32  # query tile
TP = TK * -(-FRAMES // TK)  # padded frames, 1536
NKT = -(-FRAMES // TK)  # key tiles processed per pass, 24
NQT = TP // TQ  # query tiles per head, 48
VSUB = 32  # keys per V scale sub-tile
HEADER_WORDS = 16
ROWP_WORDS = HEADER_WORDS + TP  # 1552 int32 per (b, h): header, one word per query row
Q_TILE_BYTES = TQ * D  # 2048: a query tile, int8 in 8 x 8 blocks
REC_BYTES = TK * D + 2 * (TK // VSUB) * D  # 4352: a key or value record (tile + scales)

# ------------------------------------------------------------------ this design
ROWS = 4  # compute rows per column on npu1 and npu2
COLS_PER_GROUP = 4
CORES_PER_GROUP = ROWS * COLS_PER_GROUP  # 16
ROUNDS = NQT // CORES_PER_GROUP  # 3 rounds of 16 query tiles per head
FIRST_CORE_ROW = 2
MEM_ROW = 1
SHIM_ROW = 0

LAST_VALID = FRAMES - (NKT - 1) * TK  # valid keys in the last key tile, 28
PAIRS = NKT // 2  # pass-1 objects per query tile: key tiles (2j, 2j + 1)
QR_WORDS_OFFSET = ROWS * Q_TILE_BYTES  # 8192: slot r's 32 rowp row words at + 128 r
QR_BYTES = QR_WORDS_OFFSET + ROWS * TQ * 4  # 8704
KV_BYTES = 2 * REC_BYTES  # 8704
OUT_TILE_ELEMS = TQ * D  # int16

# The shim DMA's task queue depth and buffer descriptors per shim tile (aie-rt
# driver/src/dma/xaie_dma.c XAIE_DMA_MAX_QUEUE_SIZE; 16 BDs per shim DMA).
QUEUE_DEPTH = 4
SHIM_BDS = 16

# attention.o is iron_glue.cc (which includes attention.cc) built with Peano. Calls per
# query tile, on the core-local buffers m, l (int32 x 32), acc (int32 32 x 64) and the
# scratch s (int32 32 x 64), p (int16 32 x 64):
#   attn_qr_rows_init(m, l, acc)
#   attn_qr_pass1(qr, kv, s, m, slot, valid0, valid1)          12 pairs of key tiles
#   attn_qr_pass2(qr, kv, s, p, m, l, acc, slot, valid)         key tiles 0..23
#   attn_rows_finish(l, acc, out)
KERNEL_OBJECT = "attention.o"
ENTRY_POINTS = ("attn_qr_rows_init", "attn_qr_pass1", "attn_qr_pass2", "attn_rows_finish")

TARGETS: dict[str, dict[str, Any]] = {
    # columns usable by one application; mmul shapes per SPEC §6.3 (aie_api
    # include/aie_api/detail/mmul.hpp, "Matrix multiplication modes for real types")
    "npu1": {
        "columns": 4,
        "device_class": "NPU1",
        "arch": "aie2",
        "mmul_qk": "4x8x8 int8 x int8",
        "mmul_pv": "2x8x8 int16 x int8",
    },
    "npu2": {
        "columns": 8,
        "device_class": "NPU2",
        "arch": "aie2p",
        "mmul_qk": "8x8x8 int8 x int8",
        "mmul_pv": "4x8x8 int16 x int8",
    },
}

# The core's stack, set explicitly on every Worker (IRON `Worker(..., stack_size=)`; mlir-aie
# docs "Core Data Memory": the default is 1024 bytes, an overflow writes over buffers, and
# newer aiecc measures the linked core's stack and fails the build when `stack_size` is
# below it). 1024 is not enough: the lookup-table exponent keeps a linear_approx object
# (128 bytes of scratch ring plus ~300 bytes of vector members, aie_api
# detail/aie2/linear_approx.hpp:308-330) and a parallel_lookup (two 64-byte vectors) on the
# stack, and rows_finish keeps two 32-word row arrays. No host build can measure Peano's
# frames: 2048 is a margin, and aiecc's stack measurement is the check.
STACK_BYTES = 2048

# The exponent is a build-time choice (kernels/Makefile EXP=lut|nolut): "lut" uses the
# lookup units (aie::linear_approx, aie::parallel_lookup) and their tables; "nolut"
# computes the same integers with multiplies, shifts and selects and needs no table.
EXPONENTS = ("lut", "nolut")
DEFAULT_EXPONENT = "lut"

# The lookup tables: LUT_ab pinned to bank A, LUT_cd to bank B (attention_tables.h,
# mlir-aie aie_bank_placement.h); each holds two copies (SPEC §6.2).
LUT_TABLES = {
    "exp linear_approx LUT_ab, 128 (slope, offset) x 2 copies (bank A)": ("A", 128 * 2 * 4 * 2),
    "exp linear_approx LUT_cd, 2 copies (bank B)": ("B", 128 * 2 * 4 * 2),
    "2^(13-n) parallel_lookup LUT_ab, 16 int16 x 2 copies (bank A)": ("A", 16 * 2 * 2),
    "2^(13-n) parallel_lookup LUT_cd, 2 copies (bank B)": ("B", 16 * 2 * 2),
}
LUT_PAIRS = (
    (
        "exp linear_approx LUT_ab, 128 (slope, offset) x 2 copies (bank A)",
        "exp linear_approx LUT_cd, 2 copies (bank B)",
    ),
    (
        "2^(13-n) parallel_lookup LUT_ab, 16 int16 x 2 copies (bank A)",
        "2^(13-n) parallel_lookup LUT_cd, 2 copies (bank B)",
    ),
)


def core_memory(exp: str = DEFAULT_EXPONENT) -> dict[str, int]:
    """Everything in a compute tile's 64 KiB data memory (SPEC §6.2), for exponent `exp`.

    The ObjectFifo buffers and the LocalBuffers are aie.buffer ops the allocator places;
    the stack is STACK_BYTES, set on every Worker; the reciprocal seeds are the object's
    .rodata, which the linker puts in the data region left by the buffers (mlir-aie
    lib/Targets/AIETargetLdScript.cpp); the lookup tables (exp "lut" only) are pinned to
    banks A and B. tests/ check the table sizes against the compiled object's.
    """
    if exp not in EXPONENTS:
        raise ValueError(f"unknown exponent {exp!r}; choose one of {EXPONENTS}")
    items = {
        f"stack (Worker stack_size, {STACK_BYTES})": STACK_BYTES,
        "qr object (depth 1)": QR_BYTES,
        "kv objects (depth 2)": 2 * KV_BYTES,
        "out tile int16 32x64 (depth 1)": OUT_TILE_ELEMS * 2,
        "s scores int32 32x64 (LocalBuffer)": TQ * TK * 4,
        "p probabilities int16 32x64 (LocalBuffer)": TQ * TK * 2,
        "acc int32 32x64 (LocalBuffer)": TQ * D * 4,
        "m, l int32 x 32 (LocalBuffers)": 2 * TQ * 4,
    }
    if exp == "lut":
        items |= {name: size for name, (_bank, size) in LUT_TABLES.items()}
    items["reciprocal seeds R int32 x 64 (rodata)"] = 64 * 4
    return items


CORE_MEMORY = core_memory()
CORE_MEMORY_LIMIT = 64 * 1024
BANK_BYTES = 16 * 1024  # banks A-D of a compute tile's data memory (mlir-aie: bank B at 0x4000)
BANKS = "ABCD"


def _buffers(exp: str) -> list[tuple[str, int]]:
    """core_memory(exp)'s allocator-placed buffers, one per ObjectFifo element."""
    out = []
    for name, size in core_memory(exp).items():
        if name.startswith("stack") or "(rodata)" in name or "(bank" in name:
            continue
        depth = 2 if "depth 2" in name else 1
        out += [(name if depth == 1 else f"{name} [{i}]", size // depth) for i in range(depth)]
    return out


def memory_map(exp: str = DEFAULT_EXPONENT) -> dict[str, tuple[int, int]]:
    """A placement of core_memory(exp): {item: (start, end)} in tile-relative bytes.

    A model of mlir-aie's placement, not its code (mlir-aie docs "Core Data Memory"): the
    stack at offset 0; bank-pinned tables reserved in their banks before anything else
    (here at the top of the bank); then each buffer, largest first, at the lowest
    64-byte aligned address where it fits; the .rodata in the lowest gap left. Depth-2
    ObjectFifo elements are separate buffers. Raises ValueError if something does not
    fit. aiecc's own bank reservation and `--check-lut-banks` are the build-time check.
    """
    items = core_memory(exp)
    placed: dict[str, tuple[int, int]] = {}
    stack = next(n for n in items if n.startswith("stack"))
    placed[stack] = (0, items[stack])
    if exp == "lut":
        top = {bank: (BANKS.index(bank) + 1) * BANK_BYTES for bank in BANKS}
        for name, (bank, size) in LUT_TABLES.items():
            top[bank] -= -(-size // 64) * 64
            placed[name] = (top[bank], top[bank] + size)

    def first_fit(size: int, align: int) -> int:
        start = 0
        for lo, hi in sorted(placed.values()):
            if start + size <= lo:
                return start
            start = max(start, -(-hi // align) * align)
        if start + size > CORE_MEMORY_LIMIT:
            raise ValueError(f"core memory map: no room for {size} bytes in {CORE_MEMORY_LIMIT}")
        return start

    for name, size in sorted(_buffers(exp), key=lambda item: -item[1]):
        start = first_fit(size, 64)
        placed[name] = (start, start + size)
    for name, size in items.items():
        if "(rodata)" in name:
            start = first_fit(size, 16)
            placed[name] = (start, start + size)
    spans = sorted(placed.values())
    for (_, end_a), (start_b, _) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise ValueError("core memory map: two items overlap")
    return placed


def bank_of(span: tuple[int, int]) -> str:
    """The bank an item lies in; ValueError if it crosses a bank boundary."""
    start, end = span
    if start // BANK_BYTES != (end - 1) // BANK_BYTES:
        raise ValueError(f"{span} crosses a bank boundary")
    return BANKS[start // BANK_BYTES]


def groups(target: str) -> int:
    return TARGETS[target]["columns"] // COLS_PER_GROUP


def runtime_buffers(batch: int, heads: int = H) -> list[dict[str, Any]]:
    """The runtime sequence's arguments in order (SPEC §2); make_manifest checks them
    against amanuensis_npu.npu.quantization.buffer_layout, so the two cannot drift."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    records = (batch, heads, TP // TK, REC_BYTES)
    specs = [
        ("q", "int8", (batch, heads, NQT, Q_TILE_BYTES), "in"),
        ("k", "int8", records, "in"),
        ("v", "int8", records, "in"),
        ("rowp", "int32", (batch, heads, ROWP_WORDS), "in"),
        ("out", "int16", (batch, heads, TP, D), "out"),
    ]
    return buffer_table(specs)


def buffer_table(specs: list[tuple[str, str, tuple[int, ...], str]]) -> list[dict[str, Any]]:
    """(name, dtype, shape, direction) rows as the manifest records runtime arguments."""
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


def steps(target: str, heads: int) -> int:
    """Heads one group takes in turn per batch element: ceil(heads / groups)."""
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads}")
    g_count = min(groups(target), heads)
    return -(-heads // g_count)


def design_config(target: str, batch: int, heads: int = H) -> dict[str, Any]:
    """Tiling and placement for `heads` heads per layer, as recorded in the manifest."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose npu1 or npu2")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    t = TARGETS[target]
    g = min(groups(target), heads)
    n_steps = steps(target, heads)
    return {
        "device_class": t["device_class"],
        "arch": t["arch"],
        "tiles": {
            "head_dim": D,
            "heads": heads,
            "frames": FRAMES,
            "padded_frames": TP,
            "query_tile": TQ,
            "key_tile": TK,
            "key_tiles_per_pass": NKT,
            "query_tiles_per_head": NQT,
            "valid_keys_last_tile": LAST_VALID,
            "rowp_header_words": HEADER_WORDS,
            "rowp_header_on_device": False,
            "host_block": 8,
            "record_bytes": REC_BYTES,
            "qr_object_bytes": QR_BYTES,
            "kv_object_bytes": KV_BYTES,
            "pass1_objects_per_query_tile": PAIRS,
            "pass2_objects_per_query_tile": NKT,
            "v_scale_sub_tile": VSUB,
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
            "head_steps_per_batch_element": n_steps,
            "idle_group_steps_per_batch_element": n_steps * g - heads,
            "rounds_per_core_per_dispatch": batch * n_steps * ROUNDS,
            "head_of_group": "h = g + G * step (G groups; skipped when h >= heads)",
            "query_tile_of_core": "16 * round + 4 * column_in_group + row",
            "core_memory_bytes": sum(CORE_MEMORY.values()),
            "kernel_object": KERNEL_OBJECT,
            "kernel_sources": ["attention/iron_glue.cc", "attention/attention.cc"],
            "entry_points": list(ENTRY_POINTS),
            "dispatches_per_layer": 1,
            "task_groups_in_flight": 2,
        },
    }


# ------------------------------------------------------------------ transfer plan


@dataclass(frozen=True)
class Transfer:
    """One shim DMA task of the runtime sequence (a fill or a drain).

    `offset`, `sizes` and `strides` are in elements of `buffer`, outermost first, as
    IRON's TensorAccessPattern takes them; `fifo` names the ObjectFifo endpoint and
    `column` the shim tile that runs the transfer. `group` is the task group (one per
    round of every group's head); `wait` says the task is awaited when its group is
    finished (every task is: an await is what retires a queue push).
    """

    kind: str  # "fill" | "drain"
    fifo: str
    buffer: str
    offset: int
    sizes: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    column: int
    group: int
    wait: bool = True

    @property
    def channel(self) -> tuple[int, str, str]:
        """The shim DMA channel: (column, direction, ObjectFifo). One ObjectFifo endpoint
        on a shim tile is one channel of that tile."""
        return (self.column, "MM2S" if self.kind == "fill" else "S2MM", self.fifo)


@dataclass(frozen=True)
class Finish:
    """`Runtime.finish_task_group`: awaits every waited task of `group`, in issue order."""

    group: int


def _bh(batch_index: int, head: int, heads: int = H) -> int:
    return batch_index * heads + head


def runtime_sequence(target: str, batch: int, heads: int = H) -> list[Transfer | Finish]:
    """The runtime sequence of one dispatch, in issue order: tasks and group finishes.

    Round r's task group is finished after round r + 1's tasks are issued, so two
    rounds are in flight. Per round: on each group's two kv channels, one pass-1 and one
    pass-2 fill; on each column's qr channel, a fill from `q` and one from `rowp`; on its
    out channel, one drain.
    """
    g_count = min(groups(target), heads)  # one head (the bring-up) uses one group
    seq: list[Transfer | Finish] = []
    head_bytes = NKT * REC_BYTES  # a head's 24 records
    half_rec = REC_BYTES // 2  # 2176 bytes = 544 words: every DMA dimension stays < 1024 words
    group = 0
    for b in range(batch):
        for step in range(steps(target, heads)):
            for rd in range(ROUNDS):
                for g in range(g_count):
                    if step * g_count + g >= heads:
                        continue  # an odd head count: this group idles in the last step
                    bh = _bh(b, step * g_count + g, heads)
                    col_k, col_v = COLS_PER_GROUP * g, COLS_PER_GROUP * g + 1
                    base = bh * head_bytes

                    def add(kind, fifo, buf, offset, sizes, strides, col, _g=group):
                        seq.append(Transfer(kind, fifo, buf, offset, sizes, strides, col, _g))

                    # Pass 1: key records 2j (k channel) and 2j + 1 (v channel) join into
                    # one object; pass 2: key record j and value record j.
                    pairs = (1, PAIRS, 2, half_rec)
                    every_other = (0, 2 * REC_BYTES, half_rec, 1)
                    add("fill", f"k{g}", "k", base, pairs, every_other, col_k)
                    add("fill", f"v{g}", "k", base + REC_BYTES, pairs, every_other, col_v)
                    all_records = (1, 1, 2 * NKT, half_rec)
                    contiguous = (0, 0, half_rec, 1)
                    add("fill", f"k{g}", "k", base, all_records, contiguous, col_k)
                    add("fill", f"v{g}", "v", base, all_records, contiguous, col_v)
                    for c in range(COLS_PER_GROUP):
                        col = COLS_PER_GROUP * g + c
                        qt0 = CORES_PER_GROUP * rd + ROWS * c  # query tile of slot 0
                        add(
                            "fill",
                            f"qr{col}",
                            "q",
                            (bh * NQT + qt0) * Q_TILE_BYTES,
                            (1, 1, ROWS, Q_TILE_BYTES),
                            (0, 0, Q_TILE_BYTES, 1),
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
                        add(
                            "drain",
                            f"out{col}",
                            "out",
                            (bh * TP + qt0 * TQ) * D,
                            (1, 1, ROWS * TQ, D),
                            (0, 0, D, 1),
                            col,
                        )
                if group > 0:
                    seq.append(Finish(group - 1))
                group += 1
    seq.append(Finish(group - 1))
    return seq


def transfer_plan(target: str, batch: int, heads: int = H) -> list[Transfer]:
    """Every shim transfer of one dispatch, in issue order.

    The same list drives build_program() and the data-movement test, so what is tested
    is what the runtime sequence does. Offsets, sizes and strides are in elements.
    """
    return [op for op in runtime_sequence(target, batch, heads) if isinstance(op, Transfer)]


@dataclass
class PlanCheck:
    """What `check_plan` found: the most pushes outstanding on one shim channel, the
    most buffer descriptors live on one shim tile, and every problem (empty if none)."""

    max_outstanding: int
    max_bds: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_plan(seq: list[Transfer | Finish], depth: int = QUEUE_DEPTH) -> PlanCheck:
    """Replay a runtime sequence against the shim DMA task queue and a progress model.

    Queue (mlir-aie DmaQueueModel.h): every push occupies a slot on its channel until an
    await retires it; an await retires the channel's oldest token-issuing push and
    everything ahead of it (in-order execution). A push onto a full queue is dropped by
    the hardware (what waits on it hangs), or, with newer mlir-aie, preceded by a poll
    that blocks until the oldest push there completes.

    Progress (conservative): a round's transfers complete only when every transfer of
    that round has been issued and every earlier round has completed (the cores of a
    group consume their kv objects in lock step, so no round can finish while a column
    still lacks its query tiles). An await, or a blocking poll, that needs a round whose
    transfers are not all issued yet can never return: the sequence deadlocks.
    """
    problems: list[str] = []
    issued: dict[int, int] = defaultdict(int)
    total: dict[int, int] = defaultdict(int)
    for op in seq:
        if isinstance(op, Transfer):
            total[op.group] += 1
    queues: dict[tuple, list[Transfer]] = defaultdict(list)
    max_out = 0
    max_bds = 0

    def completable(group: int) -> bool:
        return all(issued[g] == total[g] for g in range(group + 1))

    for i, op in enumerate(seq):
        if isinstance(op, Transfer):
            q = queues[op.channel]
            if len(q) >= depth:
                oldest = q[0].group
                how = (
                    "a poll for a free slot would wait for group "
                    f"{oldest}, whose transfers are "
                    + ("all issued" if completable(oldest) else "not all issued yet: deadlock")
                )
                problems.append(
                    f"op {i}: push onto {op.channel} with {len(q)} outstanding "
                    f"(queue depth {depth}); the hardware drops it, or {how}"
                )
            q.append(op)
            issued[op.group] += 1
            max_out = max(max_out, len(q))
            bds = sum(len(v) for k, v in queues.items() if k[0] == op.column)
            max_bds = max(max_bds, bds)
            if bds > SHIM_BDS:
                problems.append(f"op {i}: {bds} buffer descriptors live on shim column {op.column}")
        else:
            if not completable(op.group):
                problems.append(
                    f"op {i}: finishing group {op.group} awaits transfers that cannot "
                    "complete before later pushes: deadlock"
                )
            for key, q in queues.items():
                waited = [t for t in q if t.group == op.group and t.wait]
                if waited:
                    # each await pops the oldest token-issuing push and all before it
                    last = max(q.index(t) for t in waited)
                    queues[key] = q[last + 1 :]
    never = [k for k, q in queues.items() if q]
    if never:
        problems.append(f"{len(never)} channels end with pushes never awaited (never retired)")
    return PlanCheck(max_out, max_bds, problems)


# ----------------------------------------------------------------- cycle estimate
# SPEC §6.4: an estimate, not a measurement; nothing here has run on an NPU.
# - Matrix products at measured, not peak, utilisation: single-core int8/bf16 matmul
#   kernels reached 26-43 % of peak on Phoenix and Strix (nod-ai/iree-amd-aie issue 1198).
# - Peak MACs per cycle of the mmul shapes used (aie_api detail/mmul.hpp).
# - Vector work per step (query tile x key tile) as ranges of cycles, from the count of
#   vector instructions per 16 lanes in attention.cc's AIE path (SPEC §6.3): the low end
#   assumes they pipeline into the VLIW slots, the high end that they barely do.
# - Clocks: the top DPM level of amdxdna's tables (xdna-driver src/driver/amdxdna/
#   npu1_regs.c npu1_dpm_clk_table: H-clock up to 1600 MHz; npu4_regs.c: up to 1800 MHz);
#   lower levels (down to 800 / 792 MHz) scale the times up proportionally.
# - Stream: the memory tile broadcasts a group's kv objects on one 32-bit stream,
#   4 bytes per cycle.
PEAK_MACS = {"npu1": {"qk": 256, "pv": 128}, "npu2": {"qk": 512, "pv": 256}}
MMUL_UTILISATION = (0.43, 0.26)  # best and worst measured, issue 1198
VECTOR_CYCLES = {  # per step, (low, high), both targets
    "rescale s' = s kq (both passes)": (260, 1040),
    "row max (pass 1)": (130, 400),
    "exponent and EXP2N (pass 2)": (1000, 3200),
    "row sums (pass 2)": (160, 320),
    "V weights (pass 2)": (770, 1540),
}
FINISH_CYCLES = (2000, 3200)  # per query tile: 32 scalar reciprocals, O * y, srs, store
CLOCK_MHZ = {"npu1": 1600, "npu2": 1800}
STREAM_BYTES_PER_CYCLE = 4


def cycle_estimate(target: str, batch: int = 1, heads: int = H) -> dict[str, Any]:
    """SPEC §6.4's per-layer estimate for `target` and `heads`: compute and stream cycles,
    ms. An idle group (odd heads on npu2) counts: the layer takes as long as the busiest
    group, so compute divides by the cores of `groups x steps`, not by the heads."""
    macs = TQ * TK * D  # one 32 x 64 x 64 product
    g_count = min(groups(target), heads)
    cores = g_count * CORES_PER_GROUP
    head_slots = steps(target, heads) * g_count  # heads, plus idle slots of the last step
    n_steps = batch * head_slots * NQT * NKT
    tiles = batch * head_slots * NQT
    out: dict[str, Any] = {"target": target, "heads": heads, "cores": cores, "steps": n_steps}
    for end, u in zip(("low", "high"), MMUL_UTILISATION, strict=True):
        i = 0 if end == "low" else 1
        matmul = 2 * macs / PEAK_MACS[target]["qk"] / u + macs / PEAK_MACS[target]["pv"] / u
        vector = sum(v[i] for v in VECTOR_CYCLES.values())
        step = matmul + vector
        layer = (n_steps * step + tiles * FINISH_CYCLES[i]) / cores
        out[f"matmul_per_step_{end}"] = round(matmul)
        out[f"vector_per_step_{end}"] = vector
        out[f"compute_cycles_{end}"] = round(layer)
        out[f"compute_ms_{end}"] = layer / (CLOCK_MHZ[target] * 1e3)
    rounds_per_group = batch * steps(target, heads) * ROUNDS
    stream = rounds_per_group * (PAIRS + NKT) * KV_BYTES / STREAM_BYTES_PER_CYCLE
    out["stream_cycles"] = round(stream)
    out["stream_ms"] = stream / (CLOCK_MHZ[target] * 1e3)
    out["bound"] = "compute" if out["compute_cycles_low"] > stream else "stream"
    return out


def size_estimate_rows() -> list[str]:
    """SPEC §6.4's per-size table rows (markdown), from `cycle_estimate`: compute per
    layer and per 30 s window (one dispatch per layer), per target. Estimates."""
    rows = []
    for name, heads in WHISPER_HEADS.items():
        layers = WHISPER_LAYERS[name]
        cells = [f"{name} ({heads} heads x {layers} layers)"]
        for target in sorted(TARGETS):
            e = cycle_estimate(target, heads=heads)
            lo, hi = e["compute_ms_low"], e["compute_ms_high"]
            cells.append(
                f"{lo:.1f}-{hi:.1f} ms per layer, {lo * layers:.0f}-{hi * layers:.0f} ms "
                f"per window ({e['bound']} bound)"
            )
        rows.append("| " + " | ".join(cells) + " |")
    return rows


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
