"""WhisperX integration (issue 5), the command line: `whisperx-npu` (as a process and in
process, so faults can be injected), the whisperx patch, and bad input. Transcripts are
compared with stock whisperx's command on the same model directory with deterministic
decoding (temperature 0, no fallback).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import whisperx  # noqa: F401  (a missing whisperx must fail here, loudly)
import whisperx.asr
from conftest import CARDS, LIBRIVOX, WHISPERX_CLIPS, console_script

import amanuensis_npu.integrations.whisperx as wxn
from amanuensis_npu.evaluation import wer
from amanuensis_npu.integrations import whisperx_patch
from amanuensis_npu.integrations.whisperx_cli import ATTENTION_ENV

REPO = Path(__file__).resolve().parents[1]
FORMATS = ("txt", "srt", "vtt", "tsv", "json")
CLI_DETERMINISTIC = ["--temperature_increment_on_fallback", "None"]
PATCH = REPO / "patches" / "whisperx-3.8.6-npu.patch"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop(ATTENTION_ENV, None)  # only what a test passes in `extra`
    return {**env, **extra}


def _run(cmd: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=REPO
    )


def _run_as_user(cmd: list[str], **extra: str) -> subprocess.CompletedProcess:
    """As a user runs it: Python's warnings shown, no test-only variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", ATTENTION_ENV)}
    env.pop("AMANUENSIS_NPU_XRT", None)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**env, **extra}, cwd=REPO
    )


def _stats_line(output: str) -> tuple[str, int, int]:
    """whisperx-npu's closing log line: (backend, attention calls, fallbacks)."""
    m = re.search(r"attention backend '(\w+)': (\d+) calls, (\d+) fallbacks", output)
    assert m, output[-2000:]
    return m.group(1), int(m.group(2)), int(m.group(3))


def _script(name: str) -> str:
    path = console_script(name)
    assert path, f"console script {name!r} missing: pip install -e . (and .ci/install-whisperx.sh)"
    return path


def _json_text(path: Path) -> str:
    return " ".join(s["text"].strip() for s in json.loads(path.read_text())["segments"])


# --- whisperx-npu command line -------------------------------------------------------------


def _cues(subtitles: str) -> str:
    """The words of an SRT/VTT file: every line that is not a header, index or time line."""
    keep = [
        ln for ln in subtitles.splitlines()
        if ln.strip() and ln != "WEBVTT" and "-->" not in ln and not ln.strip().isdigit()
    ]  # fmt: skip
    return " ".join(keep)


def test_cli_emulator_int8_writes_all_five_formats(tmp_path: Path) -> None:
    """AMANUENSIS_NPU_ATTENTION=emulator reaches whisperx-npu; every format holds the words."""
    clip = WHISPERX_CLIPS[0]
    proc = _run(
        [_script("whisperx-npu"), str(clip), "--model", "base", "--device", "npu",
         "--compute_type", "int8", "--no_align", "--language", "en",
         "--output_format", "all", "--output_dir", str(tmp_path)],
        AMANUENSIS_NPU_ATTENTION="emulator",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    backend, calls, fallbacks = _stats_line(proc.stdout + proc.stderr)
    assert (backend, fallbacks) == ("emulator", 0)
    assert calls >= 6 and calls % 6 == 0  # 6 encoder layers per window, all on the emulator
    reference = clip.with_suffix(".txt").read_text()
    out = {ext: (tmp_path / f"{clip.stem}.{ext}").read_text() for ext in FORMATS}
    tsv = [line.split("\t") for line in out["tsv"].splitlines()]
    assert tsv[0] == ["start", "end", "text"]
    texts = {
        "json": _json_text(tmp_path / f"{clip.stem}.json"),
        "txt": out["txt"],
        "srt": _cues(out["srt"]),
        "vtt": _cues(out["vtt"]),
        "tsv": " ".join(row[2] for row in tsv[1:]),
    }
    for ext, text in texts.items():
        assert wer(reference, text) < 0.2, (ext, text)
    segments = json.loads(out["json"])["segments"]
    assert [(round(s["start"] * 1000), round(s["end"] * 1000)) for s in segments] == [
        (int(row[0]), int(row[1])) for row in tsv[1:]
    ]


def test_cli_amd_npu_default_compute_type_matches_stock_whisperx(
    tmp_path: Path, base_dir: Path
) -> None:
    """`--device amd-npu --compute_type default` (float32, as stock whisperx's CPU default)
    gives stock whisperx's transcript, quietly: no CTranslate2 float16 warning, no torchcodec
    warning, no Lightning checkpoint notice, while a real whisperx warning still shows."""
    clips = [str(WHISPERX_CLIPS[2])]
    common = ["--compute_type", "default", *CLI_DETERMINISTIC, "--no_align", "--language", "en"]
    ours = _run_as_user(
        [_script("whisperx-npu"), *clips, "--model", "base", "--device", "amd-npu", *common,
         "--speaker_embeddings", "-o", str(tmp_path / "npu")],
        AMANUENSIS_NPU_ATTENTION="cpu",
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-2000:]
    stock = _run(
        [_script("whisperx"), *clips, "--model", str(base_dir), "--device", "cpu", *common,
         "-o", str(tmp_path / "cpu")]
    )  # fmt: skip
    assert stock.returncode == 0, stock.stderr[-2000:]
    for clip in WHISPERX_CLIPS[2:]:
        a = _json_text(tmp_path / "npu" / f"{clip.stem}.json")
        b = _json_text(tmp_path / "cpu" / f"{clip.stem}.json")
        assert a and a == b
    output = ours.stdout + ours.stderr
    assert "Whisper encoder from amanuensis-npu" in output
    assert _stats_line(output)[:2] == ("cpu", 6)  # our encoder ran, on the backend asked for
    for noise in ("float16", "torchcodec", "Lightning automatically upgraded", "Traceback"):
        assert noise not in output, (noise, output[-3000:])
    assert "--speaker_embeddings has no effect without --diarize" in ours.stderr


def test_cli_silero_vad_offline(tmp_path: Path) -> None:
    """`--vad_method silero` runs offline; the speech it finds is the silero-vad package's."""
    import silero_vad

    clip = LIBRIVOX[0]
    proc = _run(
        [_script("whisperx-npu"), str(clip), "--model", "base", "--device", "npu",
         "--compute_type", "int8", "--vad_method", "silero", "--no_align", "--language", "en",
         "--output_format", "json", "-o", str(tmp_path)],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    segments = json.loads((tmp_path / f"{clip.stem}.json").read_text())["segments"]
    # whisperx's settings: its default onset 0.5 as threshold, chunks of at most 30 s.
    speech = silero_vad.get_speech_timestamps(
        torch.from_numpy(whisperx.load_audio(str(clip))), silero_vad.load_silero_vad(),
        sampling_rate=16000, threshold=0.5, max_speech_duration_s=30, return_seconds=True,
    )  # fmt: skip
    assert speech and segments
    # whisperx merges VAD regions into <= 30 s chunks: the first starts where speech starts.
    assert abs(segments[0]["start"] - speech[0]["start"]) <= 0.05, (segments[0], speech[0])
    assert abs(segments[-1]["end"] - speech[-1]["end"]) <= 0.05, (segments[-1], speech[-1])
    text = " ".join(s["text"] for s in segments)
    assert wer(clip.with_suffix(".txt").read_text(), text) < 0.2


@pytest.fixture
def no_transcription(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records every whisperx transcription that starts (a missing model must prevent all)."""
    calls: list = []
    stock = whisperx.asr.FasterWhisperPipeline.transcribe

    def recorded(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(args)
        return stock(self, *args, **kwargs)

    monkeypatch.setattr(whisperx.asr.FasterWhisperPipeline, "transcribe", recorded)
    return calls


def _whisperx_npu(*args: str) -> int:
    """In-process `whisperx-npu` (short clip, int8, quiet), so faults can be injected."""
    from amanuensis_npu.integrations import whisperx_cli

    return whisperx_cli.main(
        [str(WHISPERX_CLIPS[2]), "--model", "base", "--device", "npu", "--compute_type", "int8",
         "--language", "en", "--verbose", "False", *args]
    )  # fmt: skip


def test_cli_alignment_offline_stops_before_transcribing(
    tmp_path, monkeypatch, capsys, no_transcription  # noqa: ANN001
) -> None:
    """Alignment on (as stock) with the network cut off: one line, and no work thrown away."""

    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code = _whisperx_npu("-o", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 1
    assert no_transcription == []
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("whisperx-npu: error: alignment model WAV2VEC2_ASR_BASE_960H")


def test_cli_diarization_offline_stops_before_transcribing(
    tmp_path, monkeypatch, capsys, no_transcription  # noqa: ANN001
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = _whisperx_npu("--no_align", "--diarize", "--model_dir", str(tmp_path / "hf"),
                         "-o", str(tmp_path / "out"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert no_transcription == []
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("whisperx-npu: error: diarization model ")
    assert "pyannote/speaker-diarization-community-1" in lines[0]


@pytest.fixture(scope="module")
def offline_alignment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Stand-ins for what alignment downloads: a tiny random wav2vec2 CTC model in the
    Hugging Face layout (loaded by whisperx through --align_model DIR, as a user's own
    model would be) and an NLTK punkt_tab sentence splitter with no trained parameters."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    root = tmp_path_factory.mktemp("offline-alignment")
    model = root / "wav2vec2-tiny"
    model.mkdir()
    labels = ["<pad>", "|", *"etaonihsrdlumwcfgypbvkxjqz'"]
    (model / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(labels)}))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(model / "vocab.json"), pad_token="<pad>", unk_token="<pad>", word_delimiter_token="|"
    )
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(model)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(labels), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, pad_token_id=0,
    )  # fmt: skip
    Wav2Vec2ForCTC(config).eval().save_pretrained(model)
    punkt = root / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).write_text("")
    return model, root / "nltk_data"


class _SimulatedFault(RuntimeError):
    pass


# Classes and messages, not exception objects: an exception made at collection lives for
# the session, and once raised its traceback kept the run's whole model alive (0.5 GB).
@pytest.mark.parametrize(
    "fault_type, message",
    [(wxn.ModelUnavailableError, "alignment model for 'xx' is not available offline"),
     (_SimulatedFault, "alignment crashed")],
    ids=["known-error", "unexpected-error"],
)  # fmt: skip
def test_cli_stage_failing_after_transcription_keeps_the_transcript(
    offline_alignment, tmp_path, monkeypatch, capsys, no_transcription, fault_type, message  # noqa: ANN001
) -> None:
    """Alignment's models load (so the run starts), then alignment itself fails: the
    transcripts are written, without word timings, and the message says what is missing."""
    import nltk
    import whisperx.alignment

    model_dir, nltk_data = offline_alignment
    monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])
    loads: list = []
    stock_load = whisperx.alignment.load_align_model

    def counted_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loads.append(args)
        return stock_load(*args, **kwargs)

    def failing_align(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise fault_type(message)

    monkeypatch.setattr(whisperx.alignment, "load_align_model", counted_load)
    monkeypatch.setattr(whisperx.alignment, "align", failing_align)
    out = tmp_path / "out"
    args = ("--align_model", str(model_dir), "-o", str(out))
    if issubclass(fault_type, wxn.WhisperXNPUError):
        assert _whisperx_npu(*args) == 1
    else:
        with pytest.raises(_SimulatedFault):
            _whisperx_npu(*args)
    err = capsys.readouterr().err
    assert len(no_transcription) == 1 and len(loads) == 1  # loaded once, before transcribing
    clip = WHISPERX_CLIPS[2]
    wrote = f"wrote 1 transcript to {out} without word alignment"
    assert wrote in err, err
    if issubclass(fault_type, wxn.WhisperXNPUError):
        assert err.strip().splitlines() == [
            f"whisperx-npu: error: alignment failed: {message}", wrote
        ], err
    for ext in FORMATS:
        assert (out / f"{clip.stem}.{ext}").is_file(), ext
    data = json.loads((out / f"{clip.stem}.json").read_text())
    assert not any("words" in s for s in data["segments"])
    assert wer(clip.with_suffix(".txt").read_text(), (out / f"{clip.stem}.txt").read_text()) < 0.2


def test_cli_aligns_offline_with_local_models(offline_alignment, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The preloaded alignment model is the one whisperx aligns with: words come out."""
    import nltk

    model_dir, nltk_data = offline_alignment
    monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])
    out = tmp_path / "out"
    assert _whisperx_npu("--align_model", str(model_dir), "-o", str(out)) == 0
    clip = WHISPERX_CLIPS[2]
    data = json.loads((out / f"{clip.stem}.json").read_text())
    words = [w["word"] for w in data["word_segments"]]
    # whisperx splits the segment text on spaces: the words are the transcript's words.
    assert words == " ".join(s["text"].strip() for s in data["segments"]).split()
    assert words and all("start" in w for w in data["word_segments"])


def test_cli_stock_arguments_untouched(capsys) -> None:  # noqa: ANN001
    from amanuensis_npu.integrations import whisperx_cli

    assert whisperx_cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "whisperx-npu 3.8.6"


# --- the whisperx patch --------------------------------------------------------------------


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture
def whisperx_copy(tmp_path: Path) -> Path:
    """A private copy of the installed whisperx, importable with PYTHONPATH=<returned dir>."""
    installed = Path(next(iter(whisperx.__spec__.submodule_search_locations)))
    root = tmp_path / "site"
    shutil.copytree(installed, root / "whisperx", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _patch_cli(root: Path, *flags: str) -> subprocess.CompletedProcess:
    return _run(
        [sys.executable, "-m", "amanuensis_npu.cli", "patch-whisperx", *flags], PYTHONPATH=str(root)
    )


def test_patch_dry_run_apply_run_and_revert(whisperx_copy: Path, tmp_path: Path) -> None:
    original = _tree_digest(whisperx_copy)

    dry = _patch_cli(whisperx_copy, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would apply" in dry.stdout
    assert _tree_digest(whisperx_copy) == original

    assert whisperx_patch.run(target=whisperx_copy) == 0
    changed = _tree_digest(whisperx_copy)
    assert {k for k in original if original[k] != changed[k]} == {"whisperx/__main__.py"}
    again = io.StringIO()
    assert whisperx_patch.run(target=whisperx_copy, out=again) == 0
    assert "already applied" in again.getvalue()

    out = tmp_path / "out"
    clip = WHISPERX_CLIPS[2]
    run = _run(
        [sys.executable, "-m", "whisperx", str(clip), "--model", "base", "--device", "npu",
         "--compute_type", "int8", "--no_align", "--language", "en", "-o", str(out)],
        PYTHONPATH=str(whisperx_copy),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Whisper encoder from amanuensis-npu" in run.stdout + run.stderr
    for ext in FORMATS:
        assert (out / f"{clip.stem}.{ext}").is_file()
    assert wer(clip.with_suffix(".txt").read_text(), _json_text(out / f"{clip.stem}.json")) < 0.5

    # Without the plugin, the patched whisperx says so in one line (argparse error, exit 2).
    no_plugin = _run(
        [sys.executable, "-c",
         "import runpy, sys; sys.modules['amanuensis_npu'] = None; "
         f"sys.argv = ['whisperx', {str(clip)!r}, '--device', 'npu']; "
         "runpy.run_module('whisperx', run_name='__main__')"],
        PYTHONPATH=str(whisperx_copy),
    )  # fmt: skip
    assert no_plugin.returncode == 2
    assert "Traceback" not in no_plugin.stderr
    assert "amanuensis-npu plugin, which is not installed" in no_plugin.stderr

    dry_revert = io.StringIO()
    assert whisperx_patch.run(target=whisperx_copy, revert=True, dry_run=True, out=dry_revert) == 0
    assert "would revert" in dry_revert.getvalue()
    assert _tree_digest(whisperx_copy) == changed

    reverted = _patch_cli(whisperx_copy, "--revert")
    assert reverted.returncode == 0, reverted.stderr
    assert _tree_digest(whisperx_copy) == original


def test_patched_cli_leaves_npu_to_torch_npu(whisperx_copy: Path, fake_torch_npu: Path) -> None:
    assert whisperx_patch.run(target=whisperx_copy) == 0
    probe = (
        "import whisperx.__main__ as m; "
        "print(m._wants_amd_npu('npu'), m._wants_amd_npu('amd-npu'), m._wants_amd_npu('cpu'))"
    )
    plain = _run([sys.executable, "-c", probe], PYTHONPATH=str(whisperx_copy))
    assert plain.stdout.split() == ["True", "True", "False"], plain.stderr[-1000:]
    ascend = _run(
        [sys.executable, "-c", probe], PYTHONPATH=f"{whisperx_copy}{os.pathsep}{fake_torch_npu}"
    )
    assert ascend.stdout.split() == ["False", "True", "False"], ascend.stderr[-1000:]


def test_patch_refuses_a_modified_whisperx(whisperx_copy: Path) -> None:
    main = whisperx_copy / "whisperx" / "__main__.py"
    text = main.read_text().replace("from whisperx.transcribe import transcribe_task", "pass")
    main.write_text(text)
    before = _tree_digest(whisperx_copy)
    assert whisperx_patch.run(target=whisperx_copy) == 1
    assert whisperx_patch.run(target=whisperx_copy, revert=True) == 1
    assert _tree_digest(whisperx_copy) == before


def test_patch_equals_git_apply(whisperx_copy: Path, tmp_path: Path) -> None:
    """Our applier and git's agree byte for byte, so the file is a standard unified diff."""
    git_copy = tmp_path / "git"
    shutil.copytree(whisperx_copy, git_copy)
    proc = subprocess.run(
        ["git", "apply", "-p1", str(PATCH)], cwd=git_copy, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert whisperx_patch.run(target=whisperx_copy) == 0
    assert _tree_digest(whisperx_copy) == _tree_digest(git_copy)


def test_dry_run_on_installed_whisperx_changes_nothing() -> None:
    installed = Path(next(iter(whisperx.__spec__.submodule_search_locations))).parent
    before = _tree_digest(installed / "whisperx")
    proc = _run([sys.executable, "-m", "amanuensis_npu.cli", "patch-whisperx", "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout or "dry run: nothing changed" in proc.stdout
    assert _tree_digest(installed / "whisperx") == before


# --- bad input: one clear line -------------------------------------------------------------


def test_float16_is_refused_clearly() -> None:
    with pytest.raises(wxn.UnsupportedComputeTypeError, match="int8 or float32"):
        wxn.load_model("base", device="npu", compute_type="float16")


@pytest.fixture
def ct2_models(monkeypatch) -> list:  # noqa: ANN001
    """Every CTranslate2 Whisper model built while the test runs (faster-whisper builds
    them through `ctranslate2.models.Whisper`)."""
    import ctranslate2

    made: list = []
    stock = ctranslate2.models.Whisper

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(stock(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ctranslate2.models, "Whisper", recording)
    return made


@pytest.mark.parametrize("compute_type", ["int8", "float32"])
def test_compute_type_reaches_ctranslate2(
    compute_type: str, ct2_models: list, base_dir: Path, tmp_path: Path
) -> None:
    """`load_model(compute_type=...)` and `whisperx-npu --compute_type` decode in that type,
    as CTranslate2 itself reports it for the same request on this CPU (int8 may read
    int8_float32), never silently in float32."""
    import ctranslate2

    from amanuensis_npu.integrations import whisperx_cli

    stock = ctranslate2.models.Whisper(str(base_dir), device="cpu", compute_type=compute_type)
    expected = stock.compute_type
    del stock
    ct2_models.clear()
    pipeline = wxn.load_model("base", device="npu", compute_type=compute_type, attention="cpu")
    assert [m.compute_type for m in ct2_models] == [expected]
    assert pipeline.model.model is ct2_models[0]
    del pipeline
    ct2_models.clear()
    code = whisperx_cli.main(
        [str(CARDS[0]), "--model", "base", "--device", "npu", "--compute_type", compute_type,
         *CLI_DETERMINISTIC, "--no_align", "--language", "en", "--output_format", "txt",
         "--verbose", "False", "-o", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert [m.compute_type for m in ct2_models] == [expected]
    assert (tmp_path / f"{CARDS[0].stem}.txt").read_text().strip()


def test_unknown_model_offline_is_one_clear_line(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(wxn.ModelUnavailableError) as info:
        wxn.load_model("tiny", device="npu", download_root=str(tmp_path))
    assert "'tiny'" in str(info.value) and "offline sizes: base, tiny.en" in str(info.value)
    assert "\n" not in str(info.value)
