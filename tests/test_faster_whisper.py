"""`amanuensis_npu.WhisperModel` against stock faster-whisper on the sampled test clips
(every clip with AMANUENSIS_NPU_TEST_SWEEP=1, see conftest.SAMPLE_CLIPS).

Decoding is deterministic (temperature=0): with faster-whisper's default
temperature fallback, even stock faster-whisper gives different text on two
runs of the same clip.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faster_whisper
import pytest
from conftest import BATCHED_CLIPS, CLIPS, SAMPLE_CLIPS

import amanuensis_npu
from amanuensis_npu.evaluation import find_reference, hypothesis_text, word_counts

DETERMINISTIC = {"temperature": 0.0, "beam_size": 5}


@pytest.fixture(scope="module")
def models(base_dir: Path) -> tuple:
    stock = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32")
    ours = amanuensis_npu.WhisperModel(base_dir, device="cpu", compute_type="float32")
    return stock, ours


def _run(model, clip: Path, batched: bool, **options) -> list:  # noqa: ANN001
    if batched:
        pipeline = faster_whisper.BatchedInferencePipeline(model)
        segments, _ = pipeline.transcribe(str(clip), batch_size=8, **options)
    else:
        segments, _ = model.transcribe(str(clip), **options)
    return list(segments)


@pytest.fixture(scope="module")
def word_runs(models: tuple) -> dict:
    """Sequential transcription with word timestamps, both models, sampled clips (reused below)."""
    stock, ours = models
    return {
        clip: (
            _run(stock, clip, False, word_timestamps=True, **DETERMINISTIC),
            _run(ours, clip, False, word_timestamps=True, **DETERMINISTIC),
        )
        for clip in SAMPLE_CLIPS
    }


def _text(segments: list) -> str:
    return "".join(s.text for s in segments).strip()


def test_device_cpu_uses_cpu_backend(models: tuple) -> None:
    assert models[1].attention_backend.name == "cpu"


def test_sequential_with_word_timestamps_matches_stock(word_runs: dict) -> None:
    for clip, (stock, ours) in word_runs.items():
        assert _text(ours) == _text(stock), clip.name
        stock_words = [w for s in stock for w in s.words]
        our_words = [w for s in ours for w in s.words]
        assert [w.word for w in our_words] == [w.word for w in stock_words], clip.name
        for a, b in zip(our_words, stock_words, strict=True):
            assert abs(a.start - b.start) <= 0.02 and abs(a.end - b.end) <= 0.02, (clip.name, a, b)
        assert [(s.start, s.end) for s in ours] == [(s.start, s.end) for s in stock]


def test_batched_pipeline_text_matches_stock(models: tuple, stock_texts: dict) -> None:
    # (Sequential transcribe is compared above, with word timestamps on.)
    _, ours = models
    for clip in BATCHED_CLIPS:
        expected = stock_texts[clip, True]
        assert _text(_run(ours, clip, True, **DETERMINISTIC)) == expected, clip.name


def test_language_detection_and_vad(models: tuple) -> None:
    stock, ours = models
    clip = next(c for c in CLIPS if c.parent.name == "conversation")
    _, info_stock = stock.transcribe(str(clip), temperature=0.0, vad_filter=True)
    segs, info = ours.transcribe(str(clip), temperature=0.0, vad_filter=True)
    assert info.language == info_stock.language == "en"
    assert abs(info.language_probability - info_stock.language_probability) < 1e-3
    assert info.duration_after_vad < info.duration  # the silent opening was cut
    assert _text(list(segs))


def test_wer_librivox_and_conversation(word_runs: dict) -> None:
    errors = words = 0
    for clip, (_, ours) in word_runs.items():
        if clip.parent.name == "librivox":
            ref = find_reference(clip)
            e, n = word_counts(ref.text, hypothesis_text(ours, ref))
            errors, words = errors + e, words + n
    assert words >= 35  # two sampled LibriVox clips, 40 words before normalising
    assert errors / words <= 0.03, f"librivox WER {errors / words:.3f}"
    conv = next(c for c in word_runs if c.parent.name == "conversation")
    ref = find_reference(conv)
    stock_e, n = word_counts(ref.text, hypothesis_text(word_runs[conv][0], ref))
    ours_e, _ = word_counts(ref.text, hypothesis_text(word_runs[conv][1], ref))
    assert n == 87  # the STM's 81 words, contractions expanded by Whisper's normaliser
    assert ours_e <= stock_e, f"conversation WER {ours_e / n:.3f} vs stock {stock_e / n:.3f}"


def test_auto_without_npu_warns_once_and_uses_cpu(
    base_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amanuensis_npu import attention, routing

    monkeypatch.delenv("AMANUENSIS_NPU_XRT", raising=False)
    monkeypatch.setattr(attention, "_warned_auto", False)
    monkeypatch.setattr(routing, "_warned", set())
    found = attention.backend_availability("npu")
    assert not found.ok and found.summary
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
        amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
    assert model.attention_backend.name == "cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    # One short line; the reasons (what was tried) are `info`'s.
    assert "runs on the CPU" in warnings[0] and "amanuensis-npu info" in warnings[0]
    assert len(warnings[0]) < 100, warnings[0]
    assert found.summary in routing.describe()["encoder_auto_reason"]


def test_bad_device_is_rejected(base_dir: Path) -> None:
    with pytest.raises(ValueError, match="device must be one of"):
        amanuensis_npu.WhisperModel(base_dir, device="cuda")


def test_files_in_memory_load_like_a_directory(base_dir: Path, models: tuple) -> None:
    # faster-whisper's files= path: model bytes in memory, no directory on disk.
    names = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")
    files = {n: (base_dir / n).read_bytes() for n in names}
    in_memory = amanuensis_npu.WhisperModel("base-in-memory", device="cpu", files=files)
    del files  # the model has read them; the bytes need not stay beside three models
    clip = next(c for c in CLIPS if c.parent.name == "librivox")
    expected = _text(_run(models[1], clip, False, **DETERMINISTIC))
    assert _text(_run(in_memory, clip, False, **DETERMINISTIC)) == expected


def test_default_compute_type_loads_without_conversion_warning(
    base_dir: Path, capfd: pytest.CaptureFixture
) -> None:
    """Whisper Base is saved in float16; CTranslate2 runs it as float32 on a CPU without
    efficient float16 and warns on every load unless that type is asked for by name."""
    import ctranslate2

    model = amanuensis_npu.WhisperModel(base_dir, device="cpu")
    assert "compute type inferred" not in capfd.readouterr().err
    supported = ctranslate2.get_supported_compute_types("cpu")
    assert model.model.compute_type == ("float16" if "float16" in supported else "float32")
