"""benchmarks/accuracy.py on real speech: its parsing, its metrics, and that its bars can fail.

One end-to-end run on a one-second clip measures two stand-in backends: float16
rounding of Q/K/V (harmless: must pass every bar) and a score scale of 1/16
instead of 1/8 (a mistake of an earlier NPU attempt: must fail the attention
bars). That proves the report separates good numerics from bad ones without
waiting for the emulator.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import _npu_helpers
import torch
import torch.nn.functional as F
from conftest import SPEECH

from amanuensis_npu.attention import AttentionBackend, register_backend
from amanuensis_npu.evaluation import normalize

REPO = Path(__file__).resolve().parents[1]


def _load_accuracy():
    spec = importlib.util.spec_from_file_location(
        "accuracy_bench", REPO / "benchmarks" / "accuracy.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy_bench"] = module
    spec.loader.exec_module(module)
    return module


accuracy = _load_accuracy()
no_npu_env = _npu_helpers.no_npu_env
sim_env = _npu_helpers.sim_env


class _Float16Inputs(AttentionBackend):
    name = "test_fp16_inputs"

    def forward(self, q, k, v, *, layer=None):
        r = [t.half().float() for t in (q, k, v)]
        return F.scaled_dot_product_attention(*r, scale=1.0 / 8.0)


class _WrongScale(AttentionBackend):
    name = "test_scale_1_16"

    def forward(self, q, k, v, *, layer=None):
        return F.scaled_dot_product_attention(q, k, v, scale=1.0 / 16.0)


register_backend("test_fp16_inputs", _Float16Inputs)
register_backend("test_scale_1_16", _WrongScale)


def test_normalize_is_whispers_english_normaliser():
    """Whisper's published EnglishTextNormalizer (openai/whisper, whisper/normalizers/
    english.py; its tests/test_normalizer.py gives these mappings), not a table of ours."""
    from whisper_normalizer.english import EnglishTextNormalizer

    whisper = EnglishTextNormalizer()
    for text in ("Mr. John Dashwood, cold-hearted!", "  I didn't   know...\nYou?",
                 "Mrs. Smith", "twenty-five dollars", "The colour of $20"):
        assert normalize(text) == " ".join(whisper(text).split()), text
    assert normalize("Mr. John Dashwood, cold-hearted!") == "mister john dashwood cold hearted"
    assert normalize("I didn't know") == "i did not know"  # contractions expanded
    assert normalize("colour") == "color"  # British spellings to American
    assert normalize("twenty-five dollars") == "$25"  # numbers and currencies in digits


def test_ten_of_clubs_and_10_of_clubs_compare_equal():
    """Whisper writes a spoken "ten" either way (a near-tie the CPU's arithmetic can tip):
    through Whisper's normaliser neither spelling is an error."""
    from amanuensis_npu.evaluation import wer, word_counts

    assert normalize("ten of clubs") == normalize("10 of clubs") == "10 of clubs"
    assert wer("Ten of clubs.", "10 of clubs") == 0.0
    assert word_counts("ten of clubs", "10 of clubs") == (0, 3)


def test_stm_reference_and_span():
    ref = accuracy.read_stm(SPEECH / "conversation" / "sample.stm")
    text, start, end = ref.text, ref.start, ref.end
    assert (start, end) == (6.68, 29.987)
    # `cut -d' ' -f6- sample.stm | wc -w` gives 81 (SOURCES.md says 85; the file has 81);
    # Whisper's normaliser expands contractions ("it's" -> "it is"), so 87 words are scored
    # (recomputed with whisper-normalizer 0.1.15).
    assert len(normalize(text).split()) == 87
    assert text.startswith("Hello? Hello? Oh, hello.")


def test_find_clips_pairs_references():
    clips = {c.name: c for c in accuracy.find_clips(SPEECH)}
    assert len(clips) == 12
    assert clips["lecture/lecture.wav"].reference is None
    assert clips["conversation/sample.wav"].ref_kind == "stm"
    assert clips["cards/001.wav"].reference.strip() == "ten of clubs"
    assert sum(c.reference is not None for c in clips.values()) == 11


def test_exact_attention_matches_definition_on_small_case():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 64, generator=g) for _ in range(3))
    ref = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 8.0, -1) @ v.double()
    assert torch.allclose(accuracy.exact_attention(q, k, v), ref, atol=1e-12)
    cos, rel = accuracy.head_metrics(ref * 2.0, ref)
    assert cos.shape == (1, 2) and abs(cos.min() - 1.0) < 1e-12 and abs(rel.max() - 1.0) < 1e-12


def _one_clip(tmp_path: Path, out: Path) -> list[str]:
    """The benchmark's arguments for one short clip with its reference, writing to `out`."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("001.wav", "001.txt"):
        shutil.copy(SPEECH / "cards" / name, data / name)
    return ["--data", str(data), "--out", str(out), "--beam-size", "1"]


def test_end_to_end_on_one_clip_flags_a_wrong_score_scale(tmp_path):
    out = tmp_path / "out"
    argv = _one_clip(tmp_path, out)
    argv += ["--backends", "test_fp16_inputs", "test_scale_1_16", "npu"]
    assert accuracy.main(argv) == 0
    result = json.loads((out / "accuracy.json").read_text())
    assert (out / "accuracy.md").read_text().startswith("# Attention accuracy")
    assert (out / "fidelity.png").stat().st_size > 10_000
    assert result["windows"] == 1

    fid = result["fidelity"]
    # The float32 yardstick itself is near-exact against float64.
    assert fid["cpu"]["attention_min_cosine"] > 0.999999
    assert len(fid["test_fp16_inputs"]["per_head_min_cosine"]) == 6
    assert all(len(row) == 8 for row in fid["test_fp16_inputs"]["per_head_min_cosine"])
    checks = {c["what"]: c["pass"] for c in result["acceptance"]}
    assert checks["test_fp16_inputs attention min cosine"]
    assert checks["test_fp16_inputs encoder-output min cosine vs cpu"]
    assert 0.9999 < fid["test_fp16_inputs"]["encoder_audio_frames_min_cosine"] <= 1.0
    assert not checks["test_scale_1_16 attention min cosine"]
    assert not checks["test_scale_1_16 attention max relative L2"]

    tr = result["transcripts"]
    assert set(tr["wer"]) == {"cpu", "test_fp16_inputs", "test_scale_1_16"}
    cpu_text = tr["per_clip"]["001.wav"]["cpu"]["text"]
    assert "of" in normalize(cpu_text).split()
    assert 0.0 <= tr["wer"]["cpu"] <= 1.0
    if "npu" in result["skipped_backends"]:
        assert result["skipped_backends"]["npu"]


def test_npu_results_on_the_simulated_device_equal_the_emulators(tmp_path, sim_env):
    """The benchmark's "npu" column is what a user with an NPU reads; on the simulated device
    (the kernel's host build behind pyxrt's API) it must hold real results, bit for bit the
    emulator's, not a skip."""
    out = tmp_path / "out"
    argv = _one_clip(tmp_path, out)
    assert accuracy.main([*argv, "--backends", "emulator", "npu"]) == 0
    result = json.loads((out / "accuracy.json").read_text())
    assert result["skipped_backends"] == {}
    fid = result["fidelity"]
    assert fid["npu"] == fid["emulator"]
    assert 0.999 < fid["npu"]["attention_min_cosine"] < 1.0  # int8 arithmetic, not float
    clip = result["transcripts"]["per_clip"]["001.wav"]
    assert clip["npu"]["text"] == clip["emulator"]["text"]
    assert result["transcripts"]["wer"]["npu"] == result["transcripts"]["wer"]["emulator"]
