"""WhisperX integration (issue 5), the Python API: `load_model`, the install hook, offline
VAD, alignment and diarization models. The command line and the patch are
test_whisperx_cli.py: a module apart, so the two pipelines here are freed before those
tests load models of their own (together they held the suite's peak memory).

whisperx is imported unconditionally: CI installs it with .ci/install-whisperx.sh,
and a missing whisperx must fail this module, not skip it. Transcripts are
compared with stock whisperx run on the same model directory with
deterministic decoding (temperature 0, no fallback), on the short clips; the
every-clip comparison is benchmarks/whisperx_agreement.py.
"""

from __future__ import annotations

import inspect
import logging
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import whisperx  # noqa: F401  (a missing whisperx must fail here, loudly)
import whisperx.asr
from conftest import LECTURE, LIBRIVOX, WHISPERX_CLIPS

import amanuensis_npu.integrations.whisperx as wxn
from amanuensis_npu.evaluation import wer

DETERMINISTIC = {"temperatures": [0.0]}


def _text(result: dict) -> str:
    return " ".join(s["text"].strip() for s in result["segments"])


@pytest.fixture(scope="module")
def audio() -> dict[Path, object]:
    return {clip: whisperx.load_audio(str(clip)) for clip in [*WHISPERX_CLIPS, LECTURE]}


@pytest.fixture(scope="module")
def npu_pipeline(base_dir: Path) -> whisperx.asr.FasterWhisperPipeline:
    """Our pipeline with the CPU attention backend, so it must equal stock whisperx exactly."""
    return wxn.load_model(
        "base",
        device="npu",
        compute_type="float32",
        language="en",
        asr_options=DETERMINISTIC,
        attention="cpu",
    )


@pytest.fixture(scope="module")
def stock_pipeline(base_dir: Path) -> whisperx.asr.FasterWhisperPipeline:
    return whisperx.load_model(
        str(base_dir), "cpu", compute_type="float32", language="en", asr_options=DETERMINISTIC
    )


# --- Python API ---------------------------------------------------------------------------


def test_load_model_has_whisperx_signature() -> None:
    ours = inspect.signature(wxn.load_model).parameters
    stock = inspect.signature(wxn._STOCK_LOAD_MODEL).parameters
    assert wxn._STOCK_LOAD_MODEL.__module__ == "whisperx.asr"
    assert list(ours)[: len(stock)] == list(stock)
    for name, param in stock.items():
        if name != "device":
            assert ours[name].default == param.default, name
    assert ours["device"].default == "npu"
    assert [n for n in ours if n not in stock] == ["attention", "encoder", "onnx_providers"]
    for name in ("attention", "encoder", "onnx_providers"):
        assert ours[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_pipeline_is_whisperx_with_our_encoder(npu_pipeline, audio) -> None:  # noqa: ANN001
    assert isinstance(npu_pipeline, whisperx.asr.FasterWhisperPipeline)
    model = npu_pipeline.model
    assert isinstance(model, whisperx.asr.WhisperModel)
    assert isinstance(model, wxn.NPUWhisperModel)
    assert model.model.device == "cpu"  # CTranslate2 decodes on the CPU
    before = model.attention_backend.stats.snapshot()["attention_calls"]
    result = npu_pipeline.transcribe(audio[WHISPERX_CLIPS[0]], batch_size=8)
    after = model.attention_backend.stats.snapshot()["attention_calls"]
    # One 30 s window through 6 encoder layers: our encoder, not CTranslate2's, ran.
    assert after - before == 6 * len(result["segments"])
    assert _text(result)


@pytest.mark.parametrize("clip", WHISPERX_CLIPS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_transcript_matches_stock_whisperx(npu_pipeline, stock_pipeline, audio, clip) -> None:  # noqa: ANN001
    ours = npu_pipeline.transcribe(audio[clip], batch_size=8)
    stock = stock_pipeline.transcribe(audio[clip], batch_size=8)
    assert [s["text"] for s in ours["segments"]] == [s["text"] for s in stock["segments"]]
    assert [(s["start"], s["end"]) for s in ours["segments"]] == [
        (s["start"], s["end"]) for s in stock["segments"]
    ]


def test_librivox_word_error_rate(npu_pipeline, audio) -> None:  # noqa: ANN001
    """A real outcome, not only agreement: the text is close to the human reference."""
    errors = []
    for clip in LIBRIVOX[:2]:
        hyp = _text(npu_pipeline.transcribe(audio[clip], batch_size=8))
        errors.append(wer(clip.with_suffix(".txt").read_text(), hyp))
    assert max(errors) < 0.2, errors


def test_batch_size_1_and_8_agree(npu_pipeline, audio) -> None:  # noqa: ANN001
    one = npu_pipeline.transcribe(audio[LECTURE], batch_size=1)
    eight = npu_pipeline.transcribe(audio[LECTURE], batch_size=8)
    assert len(one["segments"]) >= 3  # several chunks, so batching really groups windows
    assert [s["text"] for s in one["segments"]] == [s["text"] for s in eight["segments"]]


def test_install_routes_whisperx_load_model(base_dir: Path, npu_pipeline) -> None:  # noqa: ANN001
    import whisperx.transcribe

    stock = whisperx.asr.load_model
    wxn.install()
    try:
        assert whisperx.transcribe.load_model is whisperx.asr.load_model is not stock
        # Reuse the loaded model (model=) so the hook's routing, not model loading, is timed.
        pipe = whisperx.load_model("base", device="npu", model=npu_pipeline.model, language="en")
        assert pipe.model is npu_pipeline.model
        assert isinstance(pipe.vad_model, whisperx.vads.Pyannote)
        fresh = whisperx.load_model("base", device="amd-npu", language="en", compute_type="int8")
        assert isinstance(fresh.model, wxn.NPUWhisperModel)
        del fresh, pipe  # one more pipeline at a time beside the module's two (memory)
        cpu = whisperx.load_model(str(base_dir), device="cpu", compute_type="int8")
        assert type(cpu.model) is whisperx.asr.WhisperModel  # other devices stay stock
    finally:
        wxn.uninstall()
    assert whisperx.asr.load_model is stock
    assert whisperx.transcribe.load_model is stock
    assert whisperx.asr.Silero is not wxn.OfflineSilero


def test_npu_name_yields_to_torch_npu(fake_torch_npu, base_dir, caplog) -> None:  # noqa: ANN001
    assert wxn.torch_npu_present()
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        assert wxn.claims_device("npu") is False
    assert "amd-npu" in caplog.text
    assert wxn.claims_device("amd-npu") is True
    wxn.install()
    try:
        # "npu" now goes to stock whisperx, whose CTranslate2 rejects it: not silently ours.
        with pytest.raises(ValueError, match="npu"):
            whisperx.load_model(str(base_dir), device="npu", compute_type="int8")
    finally:
        wxn.uninstall()


def test_npu_name_is_ours_without_torch_npu() -> None:
    assert not wxn.torch_npu_present()
    assert wxn.claims_device("npu") and wxn.claims_device("amd-npu")
    assert not wxn.claims_device("cpu") and not wxn.claims_device("cuda")


# --- offline VAD, alignment and diarization ---------------------------------------------


def test_silero_vad_loads_offline_from_package(npu_pipeline, audio, monkeypatch) -> None:  # noqa: ANN001
    def no_hub(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("torch.hub must not be used for silero VAD")

    monkeypatch.setattr(torch.hub, "load", no_hub)
    pipe = wxn.load_model(
        "base", device="npu", model=npu_pipeline.model, vad_method="silero", language="en"
    )
    assert isinstance(pipe.vad_model, wxn.OfflineSilero)
    assert whisperx.asr.Silero is not wxn.OfflineSilero  # patched only while loading
    clip = LIBRIVOX[0]
    hyp = _text(pipe.transcribe(audio[clip], batch_size=8))
    assert wer(clip.with_suffix(".txt").read_text(), hyp) < 0.2


def test_silero_without_package_says_how_to_fix(monkeypatch) -> None:  # noqa: ANN001
    def offline_hub(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("It looks like there is no internet connection")

    monkeypatch.setitem(sys.modules, "silero_vad", None)
    monkeypatch.setattr(torch.hub, "load", offline_hub)
    with pytest.raises(wxn.ModelUnavailableError, match="pip install silero-vad"):
        wxn.OfflineSilero(vad_onset=0.5, chunk_size=30)


def test_alignment_model_missing_offline_names_it(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)  # where torch.hub downloads from
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(wxn.ModelUnavailableError) as info:
        wxn.load_align_model("en", "npu")
    msg = str(info.value)
    assert "WAV2VEC2_ASR_BASE_960H" in msg
    assert str(tmp_path / "checkpoints") in msg and "--no_align" in msg
    assert "\n" not in msg


def _tiny_wav2vec2() -> tuple[torch.nn.Module, dict]:
    """A random, tiny torchaudio wav2vec2 CTC model: stands in for the hub checkpoint."""
    from torchaudio.models import wav2vec2_model

    torch.manual_seed(0)
    labels = ["-", "|", *"etaonihsrdlumwcfgypbvkxjqz'"]
    model = wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2)],
        extractor_conv_bias=False,
        encoder_embed_dim=32,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=1,
        encoder_num_heads=2,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=len(labels),
    ).eval()
    meta = {"language": "en", "dictionary": {c: i for i, c in enumerate(labels)}}
    return model, {**meta, "type": "torchaudio"}


def test_alignment_sentence_splitter_missing_offline_names_it(
    npu_pipeline,
    audio,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    """Even with an alignment model at hand, whisperx.align needs NLTK data it downloads."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: False)  # what offline download returns
    model, meta = _tiny_wav2vec2()
    clip = WHISPERX_CLIPS[2]
    result = npu_pipeline.transcribe(audio[clip], batch_size=8)
    with pytest.raises(wxn.ModelUnavailableError) as info:
        wxn.align(result["segments"], model, meta, audio[clip], "npu")
    assert "punkt_tab" in str(info.value) and "--no_align" in str(info.value)
    assert "\n" not in str(info.value)


def test_diarization_model_missing_offline_names_it(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(wxn.ModelUnavailableError) as info:
        wxn.DiarizationPipeline(device="npu", cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "pyannote/speaker-diarization-community-1" in msg and "--diarize" in msg
    assert "\n" not in msg
