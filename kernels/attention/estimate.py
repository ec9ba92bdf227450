"""SPEC §6.4's cycle estimate of one encoder layer on the NPU: an estimate, not a
measurement (`design.py --estimate` prints it; SPEC.md quotes it and the tests check
that it does)."""

from __future__ import annotations

from typing import Any

from layout import (
    CORES_PER_GROUP,
    KV_BYTES,
    NKT,
    NQT,
    PAIRS,
    ROUNDS,
    TARGETS,
    TK,
    TQ,
    WHISPER_HEADS,
    WHISPER_LAYERS,
    D,
    H,
    groups,
    steps,
)

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
