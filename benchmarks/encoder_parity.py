"""Our encoder (CPU attention) vs CTranslate2's own encoder, window by window.

CTranslate2 runs with compute_type float32, the only setting our float32
encoder can be compared with exactly (int8 differs by 0.03-0.06 by design).

    python benchmarks/encoder_parity.py [--data DIR] [--model base]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import SPEECH, clips

DEFAULT_DATA = SPEECH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="base")
    args = parser.parse_args(argv)

    import ctranslate2
    import numpy as np
    import torch
    from faster_whisper import decode_audio
    from faster_whisper.feature_extractor import FeatureExtractor

    from amanuensis_npu import load_encoder
    from amanuensis_npu.core.models import resolve_model

    model_dir = resolve_model(args.model)
    ct2 = ctranslate2.models.Whisper(str(model_dir), compute_type="float32")
    encoder = load_encoder(model_dir, attention="cpu")
    fe = FeatureExtractor(feature_size=encoder.n_mels)
    worst = {"mean": 0.0, "max": 0.0, "cos": 1.0}
    print(f"{'window':60} {'mean abs':>10} {'max abs':>10} {'1 - cosine':>12}")
    for clip in clips(Path(args.data), (".wav", ".flac", ".mp3")):
        mel = fe(decode_audio(str(clip)), padding=160 * 3000)
        for start in range(0, max(mel.shape[-1] - 3000, 1), 3000):
            x = np.ascontiguousarray(mel[None, :, start : start + 3000], dtype=np.float32)
            ref = np.array(ct2.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))
            with torch.inference_mode():
                got = encoder(torch.from_numpy(x)).numpy()
            diff = np.abs(got - ref)
            a, b = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
            cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            name = f"{clip.relative_to(args.data)}@{start // 100}s"
            print(f"{name:60} {diff.mean():10.2e} {diff.max():10.2e} {1 - cos:12.2e}")
            worst = {
                "mean": max(worst["mean"], float(diff.mean())),
                "max": max(worst["max"], float(diff.max())),
                "cos": min(worst["cos"], cos),
            }
    print(
        f"worst: mean abs {worst['mean']:.2e} (bar 1e-5), max abs {worst['max']:.2e} (bar 5e-3), "
        f"cosine {worst['cos']:.12f} (bar 0.99999)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
