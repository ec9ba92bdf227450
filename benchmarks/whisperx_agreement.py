"""Issue 5 acceptance on every test clip (tests/data/speech), through the real command lines.

Runs, each as one process over all clips (so a model loads once per run):
  1. whisperx-npu --device npu --compute_type int8 --output_format all  -> five files per clip
  2. whisperx-npu --device npu --compute_type float32 (deterministic)   -> text
  3. stock whisperx --device cpu --compute_type float32 (deterministic) -> text, compared with 2
  4. as 2 with --batch_size 1                                           -> text, compared with 2
  5. as 2 with --vad_method silero                                      -> runs offline, WER
  6. optionally as 2 with AMANUENSIS_NPU_ATTENTION=<backend>            -> word disagreement

and prints a per-clip table plus the exact commands. Usage:
  python benchmarks/whisperx_agreement.py [--speech DIR] [--out DIR] [--attention emulator]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("txt", "srt", "vtt", "tsv", "json")
DETERMINISTIC = ["--temperature_increment_on_fallback", "None"]
COMMON = ["--no_align", "--language", "en", "--verbose", "False"]


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return took


def texts(out_dir: Path, clips: list[Path]) -> dict[str, str]:
    result = {}
    for clip in clips:
        data = json.loads((out_dir / f"{clip.stem}.json").read_text())
        result[clip.stem] = " ".join(s["text"].strip() for s in data["segments"]).strip()
    return result


def word_diff(a: str, b: str) -> float:
    """Word disagreement between two transcripts (normalised WER of b against a)."""
    from amanuensis_npu.evaluation import wer

    return wer(a, b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speech", default=str(REPO / "tests" / "data" / "speech"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "whisperx"))
    parser.add_argument("--attention", default=None, help="extra run with this attention backend")
    args = parser.parse_args()

    from amanuensis_npu.core.models import resolve_model

    clips = sorted(Path(args.speech).glob("*/*.wav"))
    assert clips, f"no clips under {args.speech}"
    assert len({c.stem for c in clips}) == len(clips), "clip names must be unique"
    model_dir = str(resolve_model("base"))
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    audio = [str(c) for c in clips]
    npu = ["whisperx-npu", *audio, "--model", "base", "--device", "npu"]
    f32 = ["--compute_type", "float32", *DETERMINISTIC, *COMMON]

    times = {}
    times["int8"] = run(
        [*npu, "--compute_type", "int8", *COMMON, "--output_format", "all", "-o", str(out / "i8")]
    )
    times["npu_f32"] = run([*npu, *f32, "-o", str(out / "npu")])
    times["stock_f32"] = run(
        ["whisperx", *audio, "--model", model_dir, "--device", "cpu", *f32, "-o", str(out / "cpu")]
    )
    times["npu_b1"] = run([*npu, *f32, "--batch_size", "1", "-o", str(out / "b1")])
    times["silero"] = run([*npu, *f32, "--vad_method", "silero", "-o", str(out / "silero")])
    if args.attention:
        env = {"AMANUENSIS_NPU_ATTENTION": args.attention}
        times[args.attention] = run([*npu, *f32, "-o", str(out / "alt")], env=env)

    npu_t, cpu_t = texts(out / "npu", clips), texts(out / "cpu", clips)
    b1_t, silero_t = texts(out / "b1", clips), texts(out / "silero", clips)
    alt_t = texts(out / "alt", clips) if args.attention else {}
    from amanuensis_npu.evaluation import find_reference

    header = f"{'clip':<58} {'chunks':>6} {'5 files':>7} {'=stock':>6} {'b1=b8':>6}"
    header += f" {'WER pyannote':>12} {'WER silero':>10}"
    if args.attention:
        header += f" {args.attention + ' diff':>14}"
    print("\n" + header)
    ok = True
    for clip in clips:
        stem = clip.stem
        files_ok = all((out / "i8" / f"{stem}.{ext}").is_file() for ext in FORMATS)
        same = npu_t[stem] == cpu_t[stem]
        batch_same = npu_t[stem] == b1_t[stem]
        ref = find_reference(clip)
        # An STM reference covers a time span; without word timestamps (--no_align) the
        # words cannot be cut to it, so WER is only given for whole-clip .txt references.
        whole = ref is not None and ref.start is None
        silero = f"{word_diff(ref.text, silero_t[stem]):.3f}" if whole else "n/a"
        pyannote = f"{word_diff(ref.text, npu_t[stem]):.3f}" if whole else "n/a"
        chunks = len(json.loads((out / "npu" / f"{stem}.json").read_text())["segments"])
        row = f"{clip.parent.name + '/' + clip.name:<58} {chunks:>6} {files_ok!s:>7} {same!s:>6} "
        row += f"{batch_same!s:>6} {pyannote:>12} {silero:>10}"
        if args.attention:
            row += f" {word_diff(npu_t[stem], alt_t[stem]):>14.4f}"
        print(row)
        ok &= files_ok and same and batch_same and bool(silero_t[stem])
        if not same:
            print(f"   npu  : {npu_t[stem]}\n   stock: {cpu_t[stem]}")
    print("\nwall time per run (s, one process over all clips, includes imports and model load):")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print("ALL OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
