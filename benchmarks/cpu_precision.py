"""Which precision the CPU encoder should run in, judged against float32 and human transcripts.

The question a faster-whisper user asks is not "does it equal amanuensis-npu's own float32
encoder" but "is it at least as good as what I run today": stock faster-whisper with
`compute_type="int8"` (CTranslate2's int8 encoder and decoder). So every row is compared
with stock float32 (CTranslate2's float32 encoder and decoder, the reference) and with the
human transcripts, with stock int8's own distance as the bar:

- encoder cosine vs CTranslate2's float32 encoder, on every 30 s window of the test speech
  (faster-whisper's cut: zero-filled features after the audio);
- words changed vs stock float32's transcript (Whisper's English normaliser via
  amanuensis_npu.evaluation, jiwer's alignment), temperature 0, no conditioning on the
  previous text (measuring.md: near-ties otherwise snowball), beam 5;
- WER against the human references (LibriVox, cards, the conversation's STM).

    python benchmarks/cpu_precision.py                     # every clip of tests/data/speech
    python benchmarks/cpu_precision.py --data ../shared/data/speech --threads 2
    python benchmarks/cpu_precision.py --rescore results.json   # score saved transcripts again

Per clip as well as in total: one clip that falls into a repetition loop ("I'm sorry, I'm
sorry, ...") under one encoder dominates a total, and a reader should see that it is one clip.

The `auto` precision rule (amanuensis_npu.openvino.route.auto_precision) is bf16 only
where OpenVINO computes bf16 natively; this script prints what it picks here and why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import SPEECH, clips, cpu_name, whisper_model

DEFAULT_DATA = SPEECH
# Word timestamps: the conversation's STM covers part of the clip, scored by word times.
OPTIONS = {
    "temperature": 0.0,
    "beam_size": 5,
    "condition_on_previous_text": False,
    "word_timestamps": True,
}

# row -> (ours?, encoder route, decoder compute_type)
ROWS: dict[str, tuple[bool, str, str]] = {
    "stock float32": (False, "", "float32"),
    "stock int8": (False, "", "int8"),
    "ours auto, int8 decoder": (True, "auto", "int8"),
    "ours openvino bf16, int8 decoder": (True, "openvino:CPU:bf16", "int8"),
    "ours openvino f32, int8 decoder": (True, "openvino:CPU:f32", "int8"),
    "ours torch f32, int8 decoder": (True, "torch", "int8"),
    "ours openvino bf16, float32 decoder": (True, "openvino:CPU:bf16", "float32"),
}


def windows(paths: list[Path]) -> list[tuple[str, Any]]:
    """(name, mel) for every 30 s window, faster-whisper's way (features zero-filled)."""
    import numpy as np
    from faster_whisper import decode_audio
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor(feature_size=80)
    out = []
    for path in paths:
        mel = fe(decode_audio(str(path)))
        for i, start in enumerate(range(0, mel.shape[-1], 3000)):
            window = pad_or_trim(mel[:, start : start + 3000])
            out.append((f"{path.parent.name}/{path.stem}#{i}", np.ascontiguousarray(window)))
    return out


def cosine(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def encoder_cosines(model_dir: Path, mels: list, threads: int) -> dict[str, list[float]]:
    import ctranslate2
    import torch

    import amanuensis_npu

    def ct2(compute_type: str) -> Any:
        model = ctranslate2.models.Whisper(
            str(model_dir), compute_type=compute_type, intra_threads=threads
        )
        return lambda x: np.array(model.encode(ctranslate2.StorageView.from_array(x), True))

    import numpy as np

    encoders = {"stock int8": ct2("int8")}
    for name, route in (
        ("ours openvino bf16", "openvino:CPU:bf16"),
        ("ours openvino f32", "openvino:CPU:f32"),
        ("ours torch f32", "torch"),
    ):
        m = amanuensis_npu.WhisperModel(
            model_dir, device="cpu", encoder=route, cpu_threads=threads
        )
        encoders[name] = lambda x, r=m.encoder_route: np.asarray(r(torch.from_numpy(x)))
    reference = ct2("float32")
    out: dict[str, list[float]] = {name: [] for name in encoders}
    for _, mel in mels:
        x = mel[None].astype(np.float32)
        ref = reference(x)
        for name, run in encoders.items():
            out[name].append(cosine(run(x), ref))
    return out


def transcripts(model_dir: Path, paths: list[Path], threads: int) -> dict[str, dict]:
    from amanuensis_npu.evaluation import find_reference, hypothesis_text

    out: dict[str, dict] = {}
    for row, (ours, route, compute_type) in ROWS.items():
        device = "cpu" if route != "auto" else "npu"
        settings = {"device": device, "encoder": route} if ours else {}
        model = whisper_model(
            model_dir, ours=ours, compute_type=compute_type, threads=threads, **settings
        )
        picked = model.encoder_route.name if ours else f"ctranslate2 {compute_type}"
        start = time.perf_counter()
        texts, scored = {}, {}
        for path in paths:
            segments, _ = model.transcribe(str(path), **OPTIONS)
            segments = list(segments)
            texts[str(path)] = "".join(s.text for s in segments).strip()
            human = find_reference(path)
            if human is not None:
                scored[str(path)] = hypothesis_text(segments, human)
        out[row] = {
            "route": picked,
            "texts": texts,
            "scored": scored,
            "seconds": time.perf_counter() - start,
        }
        del model
    return out


def word_table(runs: dict[str, dict], paths: list[Path]) -> dict[str, dict]:
    from amanuensis_npu.evaluation import find_reference, word_counts

    reference = runs["stock float32"]["texts"]
    table = {}
    for row, run in runs.items():
        changed = total = errors = ref_words = 0
        for path in paths:
            e, n = word_counts(reference[str(path)], run["texts"][str(path)])
            changed, total = changed + e, total + n
            human = find_reference(path)
            if human is not None:
                e, n = word_counts(human.text, run["scored"][str(path)])
                errors, ref_words = errors + e, ref_words + n
        table[row] = {
            "route": run["route"],
            "words_changed_vs_stock_f32": changed,
            "words": total,
            "wer_vs_human": errors / ref_words if ref_words else None,
            "human_words": ref_words,
        }
    return table


def clip_table(runs: dict[str, dict], paths: list[Path]) -> list[str]:
    """Markdown rows: words changed vs stock float32, per clip and encoder row."""
    from amanuensis_npu.evaluation import word_counts

    reference = runs["stock float32"]["texts"]
    names = [r for r in runs if r != "stock float32"]
    lines = ["| clip | words (stock f32) | " + " | ".join(names) + " |"]
    lines.append("| --- " * (len(names) + 2) + "|")
    for path in paths:
        ref = reference[str(path)]
        cells = [str(word_counts(ref, runs[r]["texts"][str(path)])[0]) for r in names]
        name = f"{path.parent.name}/{path.stem}"
        lines.append(f"| {name} | {len(ref.split())} | " + " | ".join(cells) + " |")
    return lines


def print_transcripts(runs: dict[str, dict], paths: list[Path]) -> dict[str, dict]:
    table = word_table(runs, paths)
    print("\n| transcription | route | words changed vs stock float32 | WER vs human |")
    print("| --- | --- | --- | --- |")
    for row, t in table.items():
        wer = "-" if t["wer_vs_human"] is None else f"{100 * t['wer_vs_human']:.2f}%"
        print(
            f"| {row} | {t['route']} | {t['words_changed_vs_stock_f32']} of {t['words']} "
            f"| {wer} ({t['human_words']} words) |"
        )
    print("\nWords changed vs stock float32, per clip:\n")
    print("\n".join(clip_table(runs, paths)))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-transcripts", action="store_true", help="encoder cosines only")
    parser.add_argument("--rescore", help="score the transcripts saved in this --json file")
    args = parser.parse_args(argv)
    if args.rescore:
        saved = json.loads(Path(args.rescore).read_text())
        print(f"CPU (of the saved run): {saved['cpu']}")
        print_transcripts(saved["runs"], [Path(p) for p in saved["clips"]])
        return 0

    from amanuensis_npu.core.models import resolve_model
    from amanuensis_npu.openvino.route import auto_precision

    model_dir = resolve_model(args.model)
    paths = clips(Path(args.data))
    mels = windows(paths)
    precision, why = auto_precision()
    print(f"CPU: {cpu_name()}; auto picks OpenVINO {precision} ({why})")
    print(f"{len(paths)} clips, {len(mels)} windows, {args.threads} threads\n")
    cos = encoder_cosines(model_dir, mels, args.threads)
    print("| encoder | cosine vs CTranslate2 float32: min | mean | windows above stock int8 |")
    print("| --- | --- | --- | --- |")
    stock = cos["stock int8"]
    for name, values in cos.items():
        above = sum(v > s for v, s in zip(values, stock, strict=True))
        print(
            f"| {name} | {min(values):.6f} | {sum(values) / len(values):.6f} | "
            f"{'-' if name == 'stock int8' else f'{above} of {len(values)}'} |"
        )
    result: dict[str, Any] = {"cpu": cpu_name(), "auto": [precision, why], "cosines": cos}
    if not args.no_transcripts:
        runs = transcripts(model_dir, paths, args.threads)
        result["transcripts"] = print_transcripts(runs, paths)
        result["clips"] = [str(p) for p in paths]
        result["runs"] = runs  # texts and scored hypotheses, for --rescore
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
