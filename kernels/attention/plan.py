"""The runtime sequence of one dispatch and its check against the shim DMA task queue.

The runtime sequence is one task group per round. Round r + 1's transfers are issued
before round r's are awaited, so the cores never wait for the host between rounds,
and at most two rounds are in flight: every shim channel holds at most 4 pushes, the
depth of a shim DMA task queue (aie-rt driver/src/dma/xaie_dma.c,
XAIE_DMA_MAX_QUEUE_SIZE; mlir-aie include/aie/Dialect/AIEX/Utils/DmaQueueModel.h).
Every transfer is awaited, which is what retires a push in that queue model.
`check_plan` replays the sequence against the model; `design.py --check-plan` prints it.
The same sequence drives design.py's IRON program, kernels/bringup/designs.py and the
data-movement test, so what is checked is what runs. Only numpy is needed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from layout import (
    COLS_PER_GROUP,
    CORES_PER_GROUP,
    HEADER_WORDS,
    NKT,
    NQT,
    PAIRS,
    Q_TILE_BYTES,
    REC_BYTES,
    ROUNDS,
    ROWP_WORDS,
    ROWS,
    TP,
    TQ,
    D,
    H,
    groups,
    steps,
)

# The shim DMA's task queue depth and buffer descriptors per shim tile (aie-rt
# driver/src/dma/xaie_dma.c XAIE_DMA_MAX_QUEUE_SIZE; 16 BDs per shim DMA).
QUEUE_DEPTH = 4
SHIM_BDS = 16

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
