"""WER of stock faster-whisper and of our WhisperModel, per folder of clips, side by side.

Deterministic decoding (temperature 0), same options for both; references are
`.txt` files or `.stm` files (then only words inside the STM's span count).

    python benchmarks/wer.py [--data DIR] [--compute_type float32] [--attention cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import SPEECH, clips, whisper_model

DEFAULT_DATA = SPEECH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="base")
    parser.add_argument("--compute_type", default="float32")
    parser.add_argument("--attention", default="cpu")
    args = parser.parse_args(argv)

    from amanuensis_npu.core.models import resolve_model
    from amanuensis_npu.evaluation import find_reference, hypothesis_text, word_counts

    model_dir = str(resolve_model(args.model))
    models = {
        "stock": whisper_model(model_dir, ours=False, compute_type=args.compute_type),
        f"ours ({args.attention})": whisper_model(
            model_dir, ours=True, compute_type=args.compute_type, attention=args.attention
        ),
    }
    scored = [p for p in clips(Path(args.data)) if find_reference(p) is not None]
    print(f"{'folder':14} " + " ".join(f"{name:>22}" for name in models))
    totals: dict[str, dict[str, list[int]]] = {}
    for name, model in models.items():
        for clip in scored:
            ref = find_reference(clip)
            segments, _ = model.transcribe(str(clip), temperature=0.0, word_timestamps=True)
            errors, words = word_counts(ref.text, hypothesis_text(list(segments), ref))
            folder = totals.setdefault(clip.parent.name, {}).setdefault(name, [0, 0])
            folder[0] += errors
            folder[1] += words
    for folder, per_model in totals.items():
        cells = [
            f"{e:>5}/{n:<5} {e / max(n, 1):7.2%}" for e, n in (per_model[m] for m in models)
        ]
        print(f"{folder:14} " + " ".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
