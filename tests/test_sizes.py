"""Whisper sizes other than base and tiny.en on the encoder routes (issue 24, item 2).

CTranslate2 models with random weights in the published shapes, cut to 2 layers to stay
small (layers are repeats; heads, width and mel bins are what differ): small's 12 heads
of d 768 on 80 mel bins, large-v3's (and turbo's) 20 heads of d 1280 on 128. The reference
is CTranslate2's own encoder (compute_type float32) on the same model, fed real speech
features made by faster-whisper's extractor at the model's mel count. The simulated NPU
at 12 heads and at 20 heads with 128 mel bins is checked against the emulator,
bit for bit, in tests/test_npu_runtime.py.
"""

from __future__ import annotations

from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from _ct2_builders import build_whisper_model
from conftest import CARDS

from amanuensis_npu import load_encoder
from amanuensis_npu.core.encoder import cached_encoder_weights
from amanuensis_npu.npu.fidelity import cosine
from amanuensis_npu.onnx import export
from amanuensis_npu.routing import build_route

SHAPES = {  # published d_model, heads and mel bins; 2 of their layers
    "small": {"d": 768, "heads": 12, "n_mels": 80},
    "large-v3": {"d": 1280, "heads": 20, "n_mels": 128},
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sizes")
    return {
        name: build_whisper_model(
            root / name, None, layers=2, decoder_layers=1, vocab=64, seed=i, **shape
        )[0]
        for i, (name, shape) in enumerate(SHAPES.items())
    }


def speech_features(n_mels: int) -> np.ndarray:
    """One 30 s window of a real recording, as faster-whisper computes it for a model
    with `n_mels` bins (large-v3 and turbo: 128)."""
    import faster_whisper
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = faster_whisper.decode_audio(str(CARDS[0]))
    audio = np.pad(audio, (0, max(0, 480000 - audio.size)))[:480000]
    mel = FeatureExtractor(feature_size=n_mels)(audio)[:, :3000]
    return np.ascontiguousarray(mel[None], dtype=np.float32)


def ct2_encoder(model_dir: Path, mel: np.ndarray) -> np.ndarray:
    ct2 = ctranslate2.models.Whisper(str(model_dir), compute_type="float32")
    return np.array(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))


def close(got: np.ndarray, ref: np.ndarray) -> None:
    """Float32 reorderings apart, nothing more: tests/test_encoder.py's bounds, the mean
    one doubled for d 1280's longer sums (measured here: 1.0e-5
    there, 0.4e-5 at d 768; max abs 2.6e-4 and 0.7e-4)."""
    assert got.shape == ref.shape
    diff = np.abs(got.astype(np.float64) - ref)
    assert float(diff.max()) <= 1e-3, float(diff.max())
    assert float(diff.mean()) <= 2e-5, float(diff.mean())
    assert cosine(torch.from_numpy(got).double(), torch.from_numpy(ref).double()) >= 0.99999


@pytest.mark.parametrize("size", SHAPES)
def test_our_reader_and_encoder_equal_ct2s_encoder(shaped: dict, size: str) -> None:
    shape = SHAPES[size]
    mel = speech_features(shape["n_mels"])
    ref = ct2_encoder(shaped[size], mel)
    enc = load_encoder(shaped[size], attention="cpu")
    assert (enc.d_model, enc.n_heads, enc.n_layers, enc.n_mels) == (
        shape["d"], shape["heads"], 2, shape["n_mels"],
    )  # fmt: skip
    with torch.inference_mode():
        got = enc(torch.from_numpy(mel)).numpy()
    assert got.shape == (1, 1500, shape["d"])
    close(got, ref)


def test_onnx_and_openvino_encoders_past_one_protobuf(
    shaped: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """large-v1/v2/v3 and turbo have 2.5 GB of float32 encoder weights, more than one
    protobuf holds: the export keeps them in one external-data file, which ONNX Runtime
    and OpenVINO read, each equal to CTranslate2's encoder. The 2 GB line is lowered here
    so that small's 12-head shape takes that path in seconds (a 32-layer d-1280 export
    takes minutes and 11 GB)."""
    monkeypatch.setenv("AMANUENSIS_NPU_CACHE", str(tmp_path))
    monkeypatch.setattr(export, "_MAX_PROTO_BYTES", 1 << 20)
    model_dir = shaped["small"]
    mel = speech_features(80)
    ref = ct2_encoder(model_dir, mel)
    weights = cached_encoder_weights(model_dir)
    sha = export.model_sha256(model_dir)
    for encoder in ("onnx", "openvino:CPU:f32"):
        route, _ = build_route(encoder, "cpu", "auto", weights, lambda: sha)
        close(route(torch.from_numpy(mel)), ref)
        snap = route.stats.snapshot()
        assert (snap["encoder_windows"], snap["encoder_fallbacks"]) == (1, 0), (encoder, snap)
    path = export.export_path(sha, 1)
    data = export.data_path(path)
    assert data.stat().st_size > 40 * path.stat().st_size  # the weights are outside
    assert export.check_export(path, sha, 1, (80, 1500, 768)) is None
    with open(data, "r+b") as fh:  # an interrupted copy of the data file
        fh.truncate(data.stat().st_size // 2)
    assert "cut short" in export.check_export(path, sha, 1, (80, 1500, 768))
    monkeypatch.setattr(export, "_VALID", set())  # as a new process would see it
    assert export.ensure_export(weights, sha, 1) == path
    assert export.check_export(path, sha, 1, (80, 1500, 768)) is None  # rebuilt whole
