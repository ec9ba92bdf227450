"""The attention kernel's data layout (SPEC.md §1-§2, §6.2), for npu1 and npu2.

The shapes every part agrees on (head dim, tiles, records, the qr/kv/out objects), the
targets and the placement of cores in groups, what sits in each compute tile's 64 KiB
(`core_memory`, `memory_map`), the runtime sequence's buffers (`runtime_buffers`,
checked by kernels/make_manifest.py against amanuensis_npu.npu.quantization's
buffer_layout) and the tiling the manifest records (`design_config`). design.py builds
the IRON program from it and plan.py the runtime sequence. Only numpy is needed.
"""

from __future__ import annotations

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
