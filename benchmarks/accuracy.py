#!/usr/bin/env python3
"""Accuracy of the NPU attention numerics on real speech, measured three ways.

1. Attention fidelity: the float CPU path's Q, K, V are captured at every
   encoder layer and every backend under test (emulator, NPU when present)
   recomputes that layer's attention from the very same inputs. Each head's
   output is compared with float64 exact attention (cosine, relative L2), so
   errors cannot compound across layers and hide or exaggerate each other.
2. Encoder output: the whole encoder run with the backend vs the CPU path.
3. Transcripts: faster-whisper decoding (CTranslate2, float32) fed by our
   encoder with each backend; WER against the references and the share of
   words where the backend's transcript differs from the CPU path's.
   Decoding is deterministic (temperature 0, no conditioning on previous
   text) so that a difference is the numerics, not sampling or a repetition
   loop.

Writes accuracy.json, accuracy.md and fidelity.png into --out, prints the
markdown table and one PASS/FAIL line per acceptance bar. With --check the
exit status is 1 when a bar fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amanuensis_npu.evaluation import read_stm
from amanuensis_npu.evaluation import word_counts as word_errors
from amanuensis_npu.npu.fidelity import cosine, exact_attention, head_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "tests" / "data" / "speech"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "accuracy"
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")
WINDOW_FRAMES = 3000  # log-mel frames per 30 s encoder window

# Acceptance bars of issue 3 (numerics): why each exists is in the issue.
BARS = {
    "attention_min_cosine": 0.9998,
    "attention_max_rel_l2": 0.02,
    "encoder_min_cosine": 0.9998,
    "word_disagreement_max": 0.01,
    "wer_delta_max_points": 0.5,
}

log = logging.getLogger("accuracy")


# --------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One audio file and what we know to compare its transcript with."""

    path: Path
    name: str
    reference: str | None = None
    ref_kind: str | None = None  # "txt" | "stm"
    span: tuple[float, float] | None = None  # STM time range, seconds


def find_clips(folder: Path) -> list[Clip]:
    """Every audio file under `folder`, with its `.txt` or `.stm` reference if any."""
    if not folder.is_dir():
        raise SystemExit(f"accuracy: data folder not found: {folder}")
    clips = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTS):
        clip = Clip(path=path, name=str(path.relative_to(folder)))
        txt, stm = path.with_suffix(".txt"), path.with_suffix(".stm")
        if stm.is_file():
            ref = read_stm(stm)
            clip.reference, clip.ref_kind, clip.span = ref.text, "stm", (ref.start, ref.end)
        elif txt.is_file():
            clip.reference, clip.ref_kind = txt.read_text(encoding="utf-8"), "txt"
        clips.append(clip)
    if not clips:
        raise SystemExit(f"accuracy: no audio files ({', '.join(AUDIO_EXTS)}) in {folder}")
    return clips


# ----------------------------------------------------------------- attention capture


def _capture_backend_class() -> type:
    from amanuensis_npu.attention import AttentionBackend, cpu_attention

    class CaptureAttention(AttentionBackend):
        """CPU attention that keeps each layer's inputs, so others can be fed the same ones."""

        name = "capture"

        def __init__(self) -> None:
            super().__init__()
            self.records: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def forward(self, q, k, v, *, layer=None):  # type: ignore[override]
            index = len(self.records) if layer is None else layer
            self.records.append((index, q.detach().clone(), k.detach().clone(), v.detach().clone()))
            return cpu_attention(q, k, v)

    return CaptureAttention


# ------------------------------------------------------------------------ backends


def available_backends(requested: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Backends to test by name, and the reason for each one that cannot run here."""
    from amanuensis_npu.attention import get_backend, npu_availability

    found: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in requested:
        if name == "npu":
            ok, reason = npu_availability()
            if not ok:
                skipped[name] = reason
                continue
        try:
            found[name] = get_backend(name)
        except Exception as exc:  # noqa: BLE001 - report any backend failure, keep going
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return found, skipped


# ------------------------------------------------------------------------ features


def load_audio(path: Path) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(path), sampling_rate=16000)


def mel_windows(audio: np.ndarray, n_mels: int = 80) -> list[np.ndarray]:
    """The 30 s log-mel windows faster-whisper would hand the encoder for this audio."""
    return [mel for mel, _ in mel_windows_with_content(audio, n_mels)]


def mel_windows_with_content(audio: np.ndarray, n_mels: int = 80) -> list[tuple[np.ndarray, int]]:
    """Each 30 s window with the number of encoder frames that hold audio (the rest is padding).

    Reported apart because short clips leave most of a window as padded silence, where
    attention is nearly uniform and small absolute errors weigh more in the cosine.
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    features = FeatureExtractor(feature_size=n_mels)(audio)
    content = max(features.shape[-1] - 1, 1)
    return [
        (
            pad_or_trim(features[:, seek : seek + WINDOW_FRAMES]).astype(np.float32),
            max(1, -(-min(WINDOW_FRAMES, content - seek) // 2)),
        )
        for seek in range(0, content, WINDOW_FRAMES)
    ]


# ------------------------------------------------------------------------ fidelity


@dataclass
class FidelityAccumulator:
    """Per backend: cosines and relative errors keyed by (layer, head) over all windows."""

    cos: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    rel: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    encoder_cos: list[float] = field(default_factory=list)
    encoder_content_cos: list[float] = field(default_factory=list)

    def add_layer(self, layer: int, cos: np.ndarray, rel: np.ndarray) -> None:
        for b in range(cos.shape[0]):
            for h in range(cos.shape[1]):
                self.cos.setdefault((layer, h), []).append(float(cos[b, h]))
                self.rel.setdefault((layer, h), []).append(float(rel[b, h]))

    def summary(self) -> dict[str, Any]:
        layers = sorted({lh[0] for lh in self.cos})
        heads = sorted({lh[1] for lh in self.cos})
        per_layer = []
        for layer in layers:
            cos = [c for h in heads for c in self.cos.get((layer, h), [])]
            rel = [r for h in heads for r in self.rel.get((layer, h), [])]
            per_layer.append(
                {
                    "layer": layer,
                    "min_cosine": min(cos),
                    "median_cosine": statistics.median(cos),
                    "max_rel_l2": max(rel),
                    "median_rel_l2": statistics.median(rel),
                    "samples": len(cos),
                }
            )
        per_head_min = [[min(self.cos[(lay, h)]) for h in heads] for lay in layers]
        per_head_median = [[statistics.median(self.cos[(lay, h)]) for h in heads] for lay in layers]
        per_head_max_rel = [[max(self.rel[(lay, h)]) for h in heads] for lay in layers]
        all_cos = [c for v in self.cos.values() for c in v]
        all_rel = [r for v in self.rel.values() for r in v]
        out: dict[str, Any] = {
            "per_layer": per_layer,
            "per_head_min_cosine": per_head_min,
            "per_head_median_cosine": per_head_median,
            "per_head_max_rel_l2": per_head_max_rel,
            "attention_min_cosine": min(all_cos) if all_cos else None,
            "attention_median_cosine": statistics.median(all_cos) if all_cos else None,
            "attention_max_rel_l2": max(all_rel) if all_rel else None,
            "attention_median_rel_l2": statistics.median(all_rel) if all_rel else None,
        }
        if self.encoder_cos:
            out["encoder_min_cosine"] = min(self.encoder_cos)
            out["encoder_median_cosine"] = statistics.median(self.encoder_cos)
            out["encoder_cosine_per_window"] = list(self.encoder_cos)
            out["encoder_audio_frames_min_cosine"] = min(self.encoder_content_cos)
            out["encoder_audio_frames_cosine_per_window"] = list(self.encoder_content_cos)
        return out


def window_fidelity(
    encoder: torch.nn.Module,
    mel: np.ndarray,
    backends: dict[str, Any],
    accumulators: dict[str, FidelityAccumulator],
    audio_frames: int = 1500,
) -> None:
    """Measure one 30 s window: per-layer attention for every backend, then encoder output.

    `accumulators` must hold a key per backend name plus "cpu" (the float32
    path itself against float64, which shows how good the yardstick is).
    """
    capture = _capture_backend_class()()
    x = torch.from_numpy(mel).unsqueeze(0)
    with torch.inference_mode():
        encoder.backend = capture
        enc_cpu = encoder(x)
        for layer, q, k, v in capture.records:
            exact = exact_attention(q, k, v)
            from amanuensis_npu.attention import cpu_attention

            accumulators["cpu"].add_layer(layer, *head_metrics(cpu_attention(q, k, v), exact))
            for name, backend in backends.items():
                out = backend(q, k, v, layer=layer)
                accumulators[name].add_layer(layer, *head_metrics(out, exact))
        for name, backend in backends.items():
            encoder.backend = backend
            enc = encoder(x)
            accumulators[name].encoder_cos.append(cosine(enc, enc_cpu))
            accumulators[name].encoder_content_cos.append(
                cosine(enc[:, :audio_frames], enc_cpu[:, :audio_frames])
            )


# ---------------------------------------------------------------------- transcripts


def transcribe_words(model: Any, clip: Clip, language: str | None, beam_size: int) -> dict:
    """Deterministic transcript of one clip; for STM references only words inside its span."""
    use_words = clip.span is not None
    t0 = time.perf_counter()
    segments, info = model.transcribe(
        str(clip.path),
        language=language,
        beam_size=beam_size,
        temperature=0.0,
        condition_on_previous_text=False,
        word_timestamps=use_words,
    )
    segments = list(segments)
    elapsed = time.perf_counter() - t0
    text = " ".join(s.text.strip() for s in segments)
    scored = text
    if use_words:
        lo, hi = clip.span
        words = [w for s in segments for w in (s.words or [])]
        scored = "".join(w.word for w in words if lo <= (w.start + w.end) / 2 <= hi)
    return {
        "text": text.strip(),
        "scored_text": scored.strip(),
        "seconds": elapsed,
        "language": info.language,
    }


# -------------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 7) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown_report(result: dict[str, Any]) -> str:
    n_clips = len(result["clips"])
    lines = [f"# Attention accuracy ({result['windows']} windows, {n_clips} clips)", ""]
    lines += [f"Model `{result['model']}`, data `{result['data']}`.", ""]
    for name, reason in result["skipped_backends"].items():
        lines.append(f"- backend `{name}` not measured: {reason}")
    if result["skipped_backends"]:
        lines.append("")
    fid = result["fidelity"]
    names = list(fid)
    lines += ["## Per-layer attention vs float64 exact (all heads x windows)", ""]
    header = (
        "| layer | "
        + " | ".join(f"{n} min cos | {n} median cos | {n} max rel L2" for n in names)
        + " |"
    )
    lines += [header, "|" + "---|" * (1 + 3 * len(names))]
    n_layers = len(fid[names[0]]["per_layer"]) if names else 0
    for i in range(n_layers):
        cells = []
        for n in names:
            row = fid[n]["per_layer"][i]
            cells += [fmt(row["min_cosine"]), fmt(row["median_cosine"]), fmt(row["max_rel_l2"], 5)]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [
        "## Summary",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, digits in [
        ("attention_min_cosine", 7),
        ("attention_median_cosine", 7),
        ("attention_max_rel_l2", 5),
        ("encoder_min_cosine", 7),
        ("encoder_median_cosine", 7),
        ("encoder_audio_frames_min_cosine", 7),
    ]:
        lines.append(f"| {key} | " + " | ".join(fmt(fid[n].get(key), digits) for n in names) + " |")
    lines += [
        "",
        "Encoder cosines are over the whole window (the acceptance bar);",
        "`encoder_audio_frames_min_cosine` only over the encoder frames that hold audio,",
        "since a short clip leaves most of its window as padded silence.",
    ]
    tr = result.get("transcripts")
    if tr:
        lines += ["", "## Transcripts (temperature 0, condition_on_previous_text=False)", ""]
        backends = list(tr["wer"])
        lines += ["| metric | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
        lines.append(
            "| WER % (clips with references) | "
            + " | ".join(fmt(100 * tr["wer"][b], 2) for b in backends)
            + " |"
        )
        lines.append(
            "| words differing from cpu % | "
            + " | ".join(fmt(100 * tr["disagreement"].get(b, 0.0), 2) for b in backends)
            + " |"
        )
        lines.append(
            "| transcription seconds (sum) | "
            + " | ".join(fmt(tr["seconds"][b], 1) for b in backends)
            + " |"
        )
        lines += [
            "",
            "| clip | "
            + " | ".join(f"{b} WER %" for b in backends)
            + " | "
            + " | ".join(f"{b} diff words" for b in backends if b != "cpu")
            + " |",
            "|---|" + "---|" * (2 * len(backends) - 1),
        ]
        for clip in result["clips"]:
            per = tr["per_clip"][clip]
            wers = [
                fmt(100 * per[b]["wer"], 1) if per[b].get("wer") is not None else "-"
                for b in backends
            ]
            diffs = [str(per[b]["diff_words"]) for b in backends if b != "cpu"]
            lines.append(f"| {clip} | " + " | ".join(wers + diffs) + " |")
    lines += ["", "## Acceptance", ""]
    for check in result["acceptance"]:
        lines.append(
            f"- {'PASS' if check['pass'] else 'FAIL'} {check['what']}: "
            f"{check['value']} (bar {check['bar']})"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-layer fidelity as 1 - cosine on a log scale, so 0.9998 and 0.99999 are both visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fid = result["fidelity"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, summ in fid.items():
        layers = [r["layer"] for r in summ["per_layer"]]
        mins = [max(1 - r["min_cosine"], 1e-12) for r in summ["per_layer"]]
        meds = [max(1 - r["median_cosine"], 1e-12) for r in summ["per_layer"]]
        rels = [max(r["max_rel_l2"], 1e-12) for r in summ["per_layer"]]
        line = axes[0].plot(layers, mins, marker="o", label=f"{name} worst head")[0]
        axes[0].plot(
            layers, meds, marker="x", ls="--", color=line.get_color(), label=f"{name} median"
        )
        axes[1].plot(layers, rels, marker="o", color=line.get_color(), label=f"{name} worst head")
    axes[0].axhline(1 - BARS["attention_min_cosine"], color="red", lw=1, label="bar (0.9998)")
    axes[1].axhline(BARS["attention_max_rel_l2"], color="red", lw=1, label="bar (2%)")
    axes[0].set(
        yscale="log",
        xlabel="encoder layer",
        ylabel="1 - cosine vs float64 exact",
        title="Attention output fidelity per layer",
    )
    axes[1].set(
        yscale="log",
        xlabel="encoder layer",
        ylabel="relative L2 error",
        title="Relative L2 error per layer",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{result['windows']} windows of {len(result['clips'])} clips, model {result['model']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def acceptance(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's bars, applied to every non-CPU backend that was measured."""
    checks = []
    for name, summ in result["fidelity"].items():
        if name == "cpu":
            continue
        checks += [
            {
                "what": f"{name} attention min cosine",
                "value": summ["attention_min_cosine"],
                "bar": f">= {BARS['attention_min_cosine']}",
                "pass": summ["attention_min_cosine"] >= BARS["attention_min_cosine"],
            },
            {
                "what": f"{name} attention max relative L2",
                "value": summ["attention_max_rel_l2"],
                "bar": f"<= {BARS['attention_max_rel_l2']}",
                "pass": summ["attention_max_rel_l2"] <= BARS["attention_max_rel_l2"],
            },
            {
                "what": f"{name} encoder-output min cosine vs cpu",
                "value": summ.get("encoder_min_cosine"),
                "bar": f">= {BARS['encoder_min_cosine']}",
                "pass": summ.get("encoder_min_cosine", -1) >= BARS["encoder_min_cosine"],
            },
        ]
    tr = result.get("transcripts")
    if tr:
        for name in tr["wer"]:
            if name == "cpu":
                continue
            dis = tr["disagreement"][name]
            delta = 100 * (tr["wer"][name] - tr["wer"]["cpu"])
            checks += [
                {
                    "what": f"{name} words differing from cpu",
                    "value": f"{100 * dis:.2f}%",
                    "bar": f"<= {100 * BARS['word_disagreement_max']:.0f}%",
                    "pass": dis <= BARS["word_disagreement_max"],
                },
                {
                    "what": f"{name} WER minus cpu WER",
                    "value": f"{delta:+.2f} points",
                    "bar": f"<= {BARS['wer_delta_max_points']} points",
                    "pass": delta <= BARS["wer_delta_max_points"],
                },
            ]
    return checks


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    import amanuensis_npu

    clips = find_clips(Path(args.data))
    if args.max_clips:
        clips = clips[: args.max_clips]
    backends, skipped = available_backends(args.backends)
    if not backends:
        raise SystemExit(
            "accuracy: none of the requested backends can run here: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    for name, reason in skipped.items():
        log.warning("backend %s skipped: %s", name, reason)

    accumulators = {name: FidelityAccumulator() for name in ["cpu", *backends]}
    encoder = amanuensis_npu.load_encoder(args.model, attention="cpu")
    encoder.eval()
    windows = 0
    audio_cache: dict[str, np.ndarray] = {}
    for clip in clips:
        audio = load_audio(clip.path)
        audio_cache[clip.name] = audio
        mels = mel_windows_with_content(audio)
        for i, (mel, audio_frames) in enumerate(mels):
            t0 = time.perf_counter()
            window_fidelity(encoder, mel, backends, accumulators, audio_frames)
            windows += 1
            log.info(
                "fidelity %s window %d/%d: %.1f s",
                clip.name,
                i + 1,
                len(mels),
                time.perf_counter() - t0,
            )
    del encoder

    result: dict[str, Any] = {
        "model": args.model,
        "data": str(args.data),
        "clips": [c.name for c in clips],
        "windows": windows,
        "backends": list(backends),
        "skipped_backends": skipped,
        "torch_threads": torch.get_num_threads(),
        "fidelity": {name: acc.summary() for name, acc in accumulators.items()},
    }
    # The cpu entry measures float32 vs float64; it has no encoder comparison with itself.
    for key in ("encoder_cosine_per_window", "encoder_audio_frames_cosine_per_window"):
        result["fidelity"]["cpu"].pop(key, None)

    if not args.no_transcripts:
        result["transcripts"] = transcripts(args, clips, backends)
    result["acceptance"] = acceptance(result)
    return result


def transcripts(args: argparse.Namespace, clips: list[Clip], backends: dict[str, Any]) -> dict:
    from amanuensis_npu import WhisperModel

    names = ["cpu", *[n for n in backends if n != "cpu"]]
    language = None if args.language == "auto" else args.language
    per_clip: dict[str, dict[str, Any]] = {c.name: {} for c in clips}
    for name in names:
        model = WhisperModel(args.model, device="cpu", compute_type="float32", attention=name)
        for clip in clips:
            per_clip[clip.name][name] = transcribe_words(model, clip, language, args.beam_size)
            log.info("%s [%s] %s", clip.name, name, per_clip[clip.name][name]["text"])
        del model
    wer: dict[str, float] = {}
    disagreement: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name in names:
        errs = refs = diff = cpu_words = 0
        for clip in clips:
            entry = per_clip[clip.name][name]
            if clip.reference is not None:
                e, n = word_errors(clip.reference, entry["scored_text"])
                entry["wer"] = e / n if n else None
                errs, refs = errs + e, refs + n
            d, n = word_errors(per_clip[clip.name]["cpu"]["text"], entry["text"])
            entry["diff_words"] = d
            diff, cpu_words = diff + d, cpu_words + n
        wer[name] = errs / refs if refs else float("nan")
        disagreement[name] = diff / cpu_words if cpu_words else 0.0
        seconds[name] = sum(per_clip[c.name][name]["seconds"] for c in clips)
    return {
        "wer": wer,
        "disagreement": disagreement,
        "seconds": seconds,
        "per_clip": per_clip,
        "settings": {
            "temperature": 0.0,
            "condition_on_previous_text": False,
            "beam_size": args.beam_size,
            "language": args.language,
            "compute_type": "float32",
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder of clips with optional .txt/.stm references (default: %(default)s)",
    )
    p.add_argument("--model", default="base", help="model name or CT2 directory (default: base)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument(
        "--backends",
        nargs="+",
        default=["emulator", "npu"],
        help="backends compared with the CPU path; npu is skipped with the reason "
        "when unavailable (default: emulator npu)",
    )
    p.add_argument("--language", default="en", help="decoding language, or 'auto' to detect")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--max-clips", type=int, default=0, help="only the first N clips (0: all)")
    p.add_argument("--no-transcripts", action="store_true", help="fidelity only, no decoding")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--check", action="store_true", help="exit 1 when an acceptance bar fails")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown_report(result)
    (args.out / "accuracy.md").write_text(report)
    plot(result, args.out / "fidelity.png")
    print(report)
    print(
        f"wrote {args.out / 'accuracy.json'}, accuracy.md, fidelity.png "
        f"({result['wall_seconds']:.0f} s)"
    )
    failed = [c for c in result["acceptance"] if not c["pass"]]
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
