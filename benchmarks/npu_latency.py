#!/usr/bin/env python3
"""NPU attention latency: per layer, per 30 s window, dispatch overhead, sync vs compute.

Q, K, V come from the float encoder run on a real clip (default: the package's
demo clip), so the kernel sees realistic data. Each encoder layer's attention
is dispatched to the NPU backend repeatedly; every dispatch's host-side phases
are timed separately:

- write+sync in: `bo.write` and `bo.sync(TO_DEVICE)` of every input buffer,
- launch: the kernel call (command submission; the dispatch overhead the host sees),
- wait: `run.wait` until the run state comes back (device execution + completion),
- sync+read out: `bo.sync(FROM_DEVICE)` and `bo.read` of the output,
- host: quantize/pack and dequantize/unpack (the rest of the call).

The CPU float attention for the same layer is timed alongside for a ratio.

Without an NPU this prints why and exits 0 without numbers. With
AMANUENSIS_NPU_XRT=sim it runs on the simulated device, and every number is
labelled as simulated host time: the "device" there is a scalar C++ build of
the kernel on the CPU, so the numbers say nothing about NPU speed.

    python benchmarks/npu_latency.py [--audio clip.wav] [--batch 1 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO = REPO / "amanuensis_npu" / "assets" / "demo.wav"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "npu_latency.json"


def _capture_qkv(model: str, audio: Path) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Q, K, V of every encoder layer for the first 30 s window of `audio` (float CPU path)."""
    from faster_whisper.audio import decode_audio
    from faster_whisper.feature_extractor import FeatureExtractor

    from amanuensis_npu.attention import CPUAttention
    from amanuensis_npu.core.encoder import load_encoder

    class Capture(CPUAttention):
        name = "capture"

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def forward(self, q, k, v, *, layer=None):  # type: ignore[no-untyped-def]
            self.seen.append((q.clone(), k.clone(), v.clone()))
            return super().forward(q, k, v, layer=layer)

    capture = Capture()
    encoder = load_encoder(model, attention=capture)
    samples = decode_audio(str(audio), sampling_rate=16000)
    mel = FeatureExtractor(feature_size=encoder.n_mels)(samples)
    mel = np.pad(mel, ((0, 0), (0, max(0, 3000 - mel.shape[1]))))[:, :3000]
    with torch.inference_mode():
        encoder(torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None])
    return capture.seen


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def measure(
    qkv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], batch: int, repeats: int
) -> dict[str, Any]:
    """Time every layer `repeats` times (after one warm-up) on a fresh NPU backend."""
    from amanuensis_npu.attention import cpu_attention
    from amanuensis_npu.npu.backend import NPUAttention

    backend = NPUAttention()
    if not backend.available:
        raise RuntimeError(f"NPU backend unavailable: {backend.state()['unavailable']}")
    backend.keep_timings = True
    layers: list[dict[str, Any]] = []
    for layer, (q, k, v) in enumerate(qkv):
        qb, kb, vb = (t.expand(batch, -1, -1, -1).contiguous() for t in (q, k, v))
        calls, cpu_calls = [], []
        backend(qb, kb, vb, layer=layer)  # warm-up: buffers allocated, kernel loaded
        backend.timings.clear()
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend(qb, kb, vb, layer=layer)
            calls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cpu_attention(qb, kb, vb)
            cpu_calls.append(time.perf_counter() - t0)
        phases = [t for (_, _, t) in backend.timings]
        per_call = max(1, len(phases) // repeats)  # dispatches per call (chunked batches)

        def per(name: str, phases: list = phases, per_call: int = per_call) -> float:
            return _median([getattr(t, name) for t in phases]) * per_call

        layers.append(
            {
                "layer": layer,
                "call_s": _median(calls),
                "cpu_float_attention_s": _median(cpu_calls),
                "write_sync_in_s": per("write_sync_in"),
                "launch_s": per("launch"),
                "wait_s": per("wait"),
                "sync_read_out_s": per("sync_read_out"),
                "dispatches_per_call": per_call,
            }
        )
        for row in layers[-1:]:
            device = row["write_sync_in_s"] + row["launch_s"] + row["wait_s"]
            device += row["sync_read_out_s"]
            row["host_pack_unpack_s"] = max(0.0, row["call_s"] - device)
    stats = backend.stats.snapshot()
    if stats["fallbacks"]:
        raise RuntimeError(f"the NPU path fell back to the CPU: {stats['fallback_reasons']}")
    total = {key: sum(r[key] for r in layers) for key in layers[0] if key.endswith("_s")}
    sync = total["write_sync_in_s"] + total["sync_read_out_s"]
    device = sync + total["launch_s"] + total["wait_s"]
    return {
        "batch": batch,
        "repeats": repeats,
        "layers": layers,
        "window_s": total["call_s"] / batch,
        "window_cpu_float_attention_s": total["cpu_float_attention_s"] / batch,
        "dispatch_overhead_launch_s": _median([r["launch_s"] for r in layers]),
        "share_sync": sync / device if device else float("nan"),
        "share_wait": total["wait_s"] / device if device else float("nan"),
        "share_launch": total["launch_s"] / device if device else float("nan"),
        "dispatches": stats["dispatches"],
        "bytes_to_device": stats["bytes_to_device"],
        "bytes_from_device": stats["bytes_from_device"],
    }


def _print(result: dict[str, Any], label: str, simulated: bool) -> None:
    ms = 1000.0
    tag = "SIM " if simulated else ""  # every simulated number is marked, row by row
    print(f"\nbatch {result['batch']} ({label}); medians of {result['repeats']} runs, ms")
    head = "layer  call  write+sync-in  launch    wait  sync+read-out  host  | cpu-float"
    print(f"{tag}{head}")
    for r in result["layers"]:
        print(
            f"{tag}{r['layer']:>5} {r['call_s'] * ms:>6.2f} {r['write_sync_in_s'] * ms:>13.3f} "
            f"{r['launch_s'] * ms:>7.3f} {r['wait_s'] * ms:>7.2f} "
            f"{r['sync_read_out_s'] * ms:>13.3f} "
            f"{r['host_pack_unpack_s'] * ms:>6.2f} | {r['cpu_float_attention_s'] * ms:>8.2f}"
        )
    ratio = result["window_s"] / result["window_cpu_float_attention_s"]
    print(
        f"{tag}per 30 s window: attention {result['window_s'] * ms:.1f} ms vs CPU float "
        f"{result['window_cpu_float_attention_s'] * ms:.1f} ms (ratio {ratio:.2f}); "
        f"dispatch launch overhead {result['dispatch_overhead_launch_s'] * 1e6:.0f} us; "
        f"device-side time: sync {result['share_sync']:.0%}, wait (compute) "
        f"{result['share_wait']:.0%}, launch {result['share_launch']:.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    p.add_argument("--model", default="base")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    from amanuensis_npu.npu.status import availability

    found = availability()
    reason = found.detail
    if not found.ok:
        print(f"No NPU here: {reason}.")
        print("Nothing measured: this benchmark only reports measured NPU numbers.")
        return 0
    simulated = found.simulated
    label = (
        "SIMULATED host time: xrt_sim runs a scalar C++ kernel on the CPU; NOT NPU time"
        if simulated
        else "measured on the NPU"
    )
    print(f"NPU: {reason}")
    if simulated:
        print(f"*** {label} ***")
    qkv = _capture_qkv(args.model, args.audio)
    results = []
    for batch in args.batch:
        try:
            result = measure(qkv, batch, args.repeats)
        except RuntimeError as exc:
            print(f"batch {batch}: not measured ({exc})")
            continue
        result["label"] = label
        result["simulated"] = simulated
        results.append(result)
        _print(result, label, simulated)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"simulated": simulated, "label": label, "probe": reason, "runs": results}, indent=2
        )
        + "\n"
    )
    print(f"\nwrote {args.out}" + (" (SIMULATED host time)" if simulated else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
