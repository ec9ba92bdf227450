"""Side-by-side transcription speed: stock faster-whisper vs our encoder routes.

Variants: stock faster-whisper (CTranslate2's encoder, int8 or float32), ours as `auto`
picks it here (`default-int8`: on a CPU without an NPU, OpenVINO's encoder, in bf16 where
the CPU computes bf16 natively), OpenVINO f32 (`openvino-int8`), our torch encoder
(`cpu-int8`), the ONNX Runtime route, the emulator and the NPU. `-int8` is the CTranslate2
decoder's precision, as stock's. Each row gives the encoder time per 30 s window, the
encoder's share of the whole transcription and the end-to-end time.

All variants run in one process, in alternating order, after a warm-up, and
the median of N runs is reported as a ratio to the first variant (stock int8) —
absolute times on shared 2-core machines move by 10% between runs, ratios
measured side by side do not.

    python benchmarks/speed.py                       # 60 s lecture clip, beam 5, 5 rounds
    python benchmarks/speed.py --batch_size 8        # faster-whisper's batched pipeline
    python benchmarks/speed.py --audio my.wav --rounds 3 --variants stock-int8,npu-int8
    python benchmarks/speed.py --variants stock-int8,cpu-int8,onnx-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, SPEECH, cpu_flags, cpu_name, side_by_side, whisper_model

DEFAULT_AUDIO = SPEECH / "lecture" / "lecture.wav"

# name -> (ours?, compute_type, attention, device, encoder route)
VARIANTS: dict[str, tuple[bool, str, str, str, str]] = {
    "stock-int8": (False, "int8", "", "cpu", ""),
    "stock-float32": (False, "float32", "", "cpu", ""),
    "npu-int8": (True, "int8", "auto", "npu", "auto"),
    "cpu-int8": (True, "int8", "cpu", "cpu", "torch"),
    "cpu-float32": (True, "float32", "cpu", "cpu", "torch"),
    "emulator-int8": (True, "int8", "emulator", "cpu", "torch"),
    "onnx-int8": (True, "int8", "auto", "npu", "onnx"),
    "openvino-int8": (True, "int8", "auto", "cpu", "openvino:CPU:f32"),
    "openvino-bf16-int8": (True, "int8", "auto", "cpu", "openvino:CPU:bf16"),
    "default-int8": (True, "int8", "auto", "npu", "auto"),
}
DEFAULT_VARIANTS = "stock-int8,stock-float32,default-int8,openvino-int8,cpu-int8"


class EncodeTimer:
    """Wraps a model's `encode` to time encoder work per 30 s window."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self.windows = 0
        inner = model.encode

        def timed(features: Any) -> Any:
            start = time.perf_counter()
            out = inner(features)
            self.seconds += time.perf_counter() - start
            self.windows += 1 if features.ndim == 2 else features.shape[0]
            return out

        model.encode = timed


def build(name: str, model_dir: str, threads: int) -> Any:
    ours, compute_type, attention, device, encoder = VARIANTS[name]
    if not ours:
        return whisper_model(model_dir, ours=False, compute_type=compute_type, threads=threads)
    return whisper_model(
        model_dir, ours=True, compute_type=compute_type, threads=threads, device=device,
        attention=attention, encoder=encoder,
    )  # fmt: skip


def route(model: Any) -> str:
    """What encoded: CTranslate2 (stock), or our route and its attention backend."""
    encoder_route = getattr(model, "encoder_route", None)
    if encoder_route is None:
        return "ct2"
    if encoder_route.name == "torch":
        return f"torch/{model.attention_backend.name}"
    return encoder_route.name


def cpu_model() -> str:
    """The CPU's name and the vector extensions that decide OpenVINO's speed (Linux)."""
    has = cpu_flags(("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"))
    return f"{cpu_name()} ({', '.join(has) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO))
    parser.add_argument("--model", default="base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam_size", type=int, default=5)
    parser.add_argument(
        "--batch_size", type=int, default=0,
        help="run faster-whisper's BatchedInferencePipeline at this batch size (0: sequential)",
    )  # fmt: skip
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--json", default=str(RESULTS / "speed.json"))
    args = parser.parse_args(argv)

    import torch
    from faster_whisper import decode_audio

    from amanuensis_npu.core.models import resolve_model

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    model_dir = str(resolve_model(args.model))
    audio = decode_audio(args.audio)
    duration = len(audio) / 16000
    # Deterministic decoding so every variant does the same decoding work.
    options = {"beam_size": args.beam_size, "temperature": 0.0, "language": "en"}

    models, timers, texts, runners = {}, {}, {}, {}
    for name in names:
        models[name] = build(name, model_dir, args.threads)
        timers[name] = EncodeTimer(models[name])
        if args.batch_size > 0:
            import faster_whisper

            pipeline = faster_whisper.BatchedInferencePipeline(models[name])
            runners[name] = lambda a, p=pipeline: p.transcribe(
                a, batch_size=args.batch_size, **options
            )
        else:
            runners[name] = lambda a, m=models[name]: m.transcribe(a, **options)
        segments, _ = runners[name](audio)  # warm-up
        texts[name] = "".join(s.text for s in segments).strip()

    encoded: dict[str, list[tuple[float, int]]] = {n: [] for n in names}  # per run

    def transcription(name: str) -> Any:
        def run() -> None:
            timer = timers[name]
            timer.seconds, timer.windows = 0.0, 0
            segments, _ = runners[name](audio)
            list(segments)
            encoded[name].append((timer.seconds, max(timer.windows, 1)))

        return run

    walls = side_by_side(
        {name: transcription(name) for name in names}, args.rounds,
        lambda r: print(f"round {r}/{args.rounds} done", file=sys.stderr),
    )  # fmt: skip
    enc = {n: [s / windows for s, windows in encoded[n]] for n in names}
    share = {n: [s / w for (s, _), w in zip(encoded[n], walls[n], strict=True)] for n in names}

    base = statistics.median(walls[names[0]])
    rows = []
    for name in names:
        wall = statistics.median(walls[name])
        rows.append(
            {
                "variant": name,
                "wall_s": round(wall, 3),
                "rtf": round(wall / duration, 4),
                "encoder_s_per_window": round(statistics.median(enc[name]), 3),
                "encoder_share": round(statistics.median(share[name]), 3),
                f"ratio_vs_{names[0]}": round(wall / base, 3),
                "backend": route(models[name]),
                "runs_s": [round(w, 3) for w in walls[name]],
            }
        )
    ratio_key = f"ratio_vs_{names[0]}"
    mode = f"batched, batch {args.batch_size}" if args.batch_size else "sequential"
    print(
        f"audio {args.audio} ({duration:.1f} s), {mode}, beam {args.beam_size}, "
        f"{args.rounds} rounds, {args.threads} threads"
    )
    print(f"CPU: {cpu_model()}")
    print(
        f"{'variant':18} {'wall s':>8} {'RTF':>7} {'enc s/win':>10} {'enc share':>10} "
        f"{ratio_key:>22}  backend"
    )
    for row in rows:
        print(
            f"{row['variant']:18} {row['wall_s']:8.2f} {row['rtf']:7.3f} "
            f"{row['encoder_s_per_window']:10.3f} {row['encoder_share']:10.2f} "
            f"{row[ratio_key]:22.3f}  {row['backend']}"
        )
    pairs = (
        ("emulator-int8", "cpu-int8"),
        ("npu-int8", "stock-int8"),
        ("onnx-int8", "cpu-int8"),
        ("onnx-int8", "stock-int8"),
        ("openvino-int8", "cpu-int8"),
        ("openvino-int8", "stock-int8"),
        ("openvino-bf16-int8", "stock-int8"),
        ("default-int8", "stock-int8"),
    )
    for a, b in pairs:
        if a in walls and b in walls:
            ratio = statistics.median(walls[a]) / statistics.median(walls[b])
            enc_ratio = statistics.median(enc[a]) / statistics.median(enc[b])
            print(f"{a} / {b}: end-to-end {ratio:.3f}, encoder per window {enc_ratio:.3f}")
    same = {n: texts[n] == texts[names[0]] for n in names}
    from amanuensis_npu.evaluation import wer

    # Word error rate of each variant's text against the first's (0 = identical words).
    words = {n: round(wer(texts[names[0]], texts[n]), 4) for n in names}
    changed = ", ".join(f"{n} {w:.2%}" for n, w in words.items())
    print(f"words changed vs {names[0]}: {changed}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "audio": args.audio, "duration_s": duration, "rounds": args.rounds,
                "threads": args.threads, "options": options, "batch_size": args.batch_size,
                "results": rows,
                "same_text_as_first": same, "wer_vs_first": words, "cpu": cpu_model(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
