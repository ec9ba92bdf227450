"""benchmarks/npu_numerics.py's own part, on real speech: its rows are measurements.

The vendor rows need packages and minutes of NPU emulation, so this runs the cheap
rows only (the float32 reference and our kernel's emulator) on one window, then
checks each number of the table against a value computed here independently: the
emulator's encoder cosine from `load_encoder` directly, the reference transcript
from stock faster-whisper float32, the word counts from the transcripts.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LIBRIVOX

from amanuensis_npu.evaluation import normalize, word_counts

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks' shared `common`
    spec = importlib.util.spec_from_file_location(
        "npu_numerics_bench", REPO / "benchmarks" / "npu_numerics.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["npu_numerics_bench"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("npu_numerics")
    args = bench.parse_args(["--routes", "emulator", "--windows", "1", "--out", str(out)])
    bench.run(args)
    saved = json.loads((out / "npu_numerics.json").read_text())
    return saved, (out / "npu_numerics.md").read_text(), out


def _mel(audio: np.ndarray) -> torch.Tensor:
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    features = FeatureExtractor(feature_size=80)(audio)
    return torch.from_numpy(pad_or_trim(features[:, : features.shape[-1] - 1]))[None].float()


def test_the_first_window_is_the_five_librivox_utterances_joined():
    from faster_whisper.audio import decode_audio

    window = bench.speech_windows()[0]
    clips = [decode_audio(str(p), sampling_rate=16000) for p in LIBRIVOX]
    assert len(window.audio) == sum(len(c) for c in clips) + 4 * 8000
    assert len(window.audio) < 30 * 16000
    refs = [p.with_suffix(".txt").read_text().strip() for p in LIBRIVOX]
    assert normalize(window.reference) == normalize(" ".join(refs))


def test_emulator_row_is_the_measured_cosine_of_our_kernels_arithmetic(run):
    import amanuensis_npu

    saved, _, _ = run
    rows = {r["key"]: r for r in saved["rows"]}
    assert [r["key"] for r in saved["rows"]] == ["reference", "emulator"]
    assert all(r["status"] == "measured" for r in saved["rows"])
    mel = _mel(bench.speech_windows()[0].audio)
    with torch.inference_mode():
        ref = amanuensis_npu.load_encoder("base", attention="cpu")(mel).double()
        emu = amanuensis_npu.load_encoder("base", attention="emulator")(mel).double()
    cos = float((ref.flatten() @ emu.flatten()) / (ref.norm() * emu.norm()))
    max_abs = float((ref - emu).abs().max())
    (measured,) = rows["emulator"]["encoder_cosine"]
    assert measured == pytest.approx(cos, abs=1e-9)
    assert rows["emulator"]["encoder_max_abs"][0] == pytest.approx(max_abs, rel=1e-4)
    # The kernel's int8 arithmetic is close to float but not float: a copied
    # reference (1.0) or a wrong window would both show here.
    assert 0.999 < measured < 0.999999
    assert rows["emulator"]["seconds_per_window"][0] > 0


def test_reference_transcript_is_stock_faster_whisper_float32(run):
    import faster_whisper

    from amanuensis_npu.core.models import resolve_model

    saved, _, _ = run
    window = bench.speech_windows()[0]
    stock = faster_whisper.WhisperModel(
        str(resolve_model("base")), device="cpu", compute_type="float32", cpu_threads=2
    )
    text = bench.transcribe(stock, window.audio, beam_size=5)
    (ours,) = saved["rows"][0]["texts"]
    errors, words = word_counts(text, ours)
    assert words > 40
    # Two float32 encoders (ours, CTranslate2's): a near-tie may flip a word, not more.
    assert errors <= 0.02 * words, (text, ours)


def test_table_reads_the_rows_measurements(run):
    saved, md, _ = run
    ref, emu = saved["rows"]
    (emu_text,) = emu["texts"]
    (ref_text,) = ref["texts"]
    changed, total = word_counts(ref_text, emu_text)
    assert emu["words_changed"] == [changed]
    assert emu["words_total"] == [total] == [len(normalize(ref_text).split())]
    cos = emu["encoder_cosine"][0]
    line = next(x for x in md.splitlines() if x.startswith("| our NPU kernel (emulator)"))
    assert f"| {cos:.5f} / {cos:.5f} |" in line
    assert f"| {changed} / {total} |" in line
    ratio = emu["seconds_per_window"][0] / ref["seconds_per_window"][0]
    assert f"({ratio:.2f}x)" in line
    assert "emulation on x86" in line
    assert saved["windows"] == ["librivox: 5 utterances joined"]
    assert saved["settings"]["beam_size"] == 5 and saved["settings"]["temperature"] == 0.0
