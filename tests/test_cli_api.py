"""The `transcribe()` API and the `amanuensis-npu` CLI on real and broken inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import wave
from pathlib import Path

import pytest
from conftest import CARDS, LIBRIVOX, console_script

import amanuensis_npu
from amanuensis_npu import api
from amanuensis_npu.evaluation import wer
from amanuensis_npu.npu import status

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "amanuensis_npu" / "assets" / "demo.wav"
ILL_DISPOSED = LIBRIVOX[1]  # "He was not an ill-disposed young man."


def cli(*args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **extra_env}
    env.pop("AMANUENSIS_NPU_XRT", None)
    return subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write_wav(path: Path, n_samples: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * n_samples)
    return path


def test_transcribe_demo_clip() -> None:
    result = amanuensis_npu.transcribe(DEMO, device="cpu", temperature=0.0)
    reference = (REPO / "amanuensis_npu" / "assets" / "demo.txt").read_text()
    assert wer(reference, result.text) <= 0.03, result.text
    assert result.backend == "cpu"
    assert result.info.language == "en" and result.info.duration == pytest.approx(27.2, abs=0.1)
    assert result.segments and result.segments[-1].end <= 27.3
    # 6 layers per encoder call: language detection, then each decoding window.
    calls = result.stats["attention_calls"]
    assert calls >= 12 and calls % 6 == 0
    assert result.stats["fallbacks"] == 0


def test_transcribe_stats_are_per_call() -> None:
    a = amanuensis_npu.transcribe(DEMO, device="cpu", temperature=0.0, language="en")
    b = amanuensis_npu.transcribe(DEMO, device="cpu", temperature=0.0, language="en")
    # Counters belong to one transcription, not to the shared backend's lifetime.
    assert a.stats["attention_calls"] == b.stats["attention_calls"]
    assert a.stats["attention_calls"] in (6, 12)
    assert a.text == b.text


@pytest.mark.parametrize("n_samples", [0, 160], ids=["zero-length", "10ms"])
def test_empty_and_tiny_audio_give_empty_transcript(tmp_path: Path, n_samples: int) -> None:
    result = amanuensis_npu.transcribe(write_wav(tmp_path / "a.wav", n_samples), device="cpu")
    assert result.text == ""


def test_bad_audio_raises_one_line_errors(tmp_path: Path) -> None:
    from amanuensis_npu.api import AudioError

    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all")
    with pytest.raises(AudioError, match=r"fake\.wav: cannot decode audio"):
        amanuensis_npu.transcribe(fake, device="cpu")
    with pytest.raises(AudioError, match="no such file"):
        amanuensis_npu.transcribe(tmp_path / "missing.wav", device="cpu")


def test_cli_writes_every_format_and_survives_bad_inputs(tmp_path: Path) -> None:
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all")
    empty = write_wav(tmp_path / "empty.wav", 0)
    out = tmp_path / "out"
    proc = cli(
        "transcribe", str(tmp_path / "missing.wav"), str(fake), str(DEMO), str(empty),
        "--device", "cpu", "--temperature", "0", "--output_dir", str(out),
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr
    assert "missing.wav: no such file" in errors[0]
    assert "fake.wav: cannot decode audio" in errors[1]
    assert "Traceback" not in proc.stderr
    for ext in ("txt", "srt", "vtt", "tsv", "json"):
        assert (out / f"demo.{ext}").stat().st_size > 0, ext
        assert (out / f"empty.{ext}").exists(), ext
    data = json.loads((out / "demo.json").read_text())
    assert data["language"] == "en" and len(data["segments"]) >= 5
    assert "Dashwood" in (out / "demo.srt").read_text()
    assert "-->" in (out / "demo.vtt").read_text()
    assert "Dashwood" in proc.stdout  # the transcript is printed as it is made
    assert "%|" in proc.stderr  # progress bar on stderr


def test_cli_word_timestamps_json(tmp_path: Path) -> None:
    proc = cli(
        "transcribe", str(DEMO), "--device", "cpu", "--word_timestamps", "True",
        "--language", "en", "--beam_size", "1", "--output_format", "json",
        "--output_dir", str(tmp_path), "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    words = [w for s in json.loads((tmp_path / "demo.json").read_text())["segments"]
             for w in s["words"]]
    assert words[0]["word"].strip() == "And" and words[0]["start"] < 0.5
    assert all(w["start"] <= w["end"] for w in words)


@pytest.mark.parametrize(
    "make_model, message",
    [
        ("truncated", "truncated or corrupt"),
        ("not-a-model", "not a CTranslate2 model directory"),
    ],
)
def test_cli_broken_models(tmp_path: Path, base_dir: Path, make_model: str, message: str) -> None:
    model = tmp_path / make_model
    model.mkdir()
    if make_model == "truncated":
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copy(base_dir / name, model / name)
        with open(base_dir / "model.bin", "rb") as fh:
            (model / "model.bin").write_bytes(fh.read(10_000_000))
    else:
        (model / "notes.txt").write_text("hello")
    proc = cli("transcribe", str(DEMO), "--model", str(model), "--output_dir", str(tmp_path))
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 1
    verbose = cli("--verbose", "transcribe", str(DEMO), "--model", str(model))
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_cli_info_explains_backend_choice() -> None:
    proc = cli("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for key in ("python", "torch", "ctranslate2", "faster-whisper", "auto_picks", "auto_reason"):
        assert key in out, key
    # no NPU here: attention auto picks the CPU, or no attention backend at all when the
    # encoder auto picks a whole-encoder route (OpenVINO, when installed)
    picks = out.split("auto_picks", 1)[1].splitlines()[0].split()
    encoder = out.split("encoder_auto_picks", 1)[1].splitlines()[0].split()[0]
    assert picks == (["cpu"] if encoder.startswith("torch") else ["none"]), (picks, encoder)
    assert "emulator" in out


# --- word-level subtitles, as stock whisperx writes them (issue 11, item 2) ---------------


def _whisperx_shaped(segments: list, language: str) -> dict:
    """Stock faster-whisper segments in the shape stock whisperx's aligner produces.

    whisperx/alignment.py makes one word entry per `text.split(" ")` item of the segment
    text, without the space; a word's start and end are the first and last times of its
    characters, rounded to 3 decimals. Here each character's time is that of the
    faster-whisper word piece it belongs to.
    """
    out = []
    for s in segments:
        assert "".join(w.word for w in s.words) == s.text  # every character has a piece
        piece_of = [w for w in s.words for _ in w.word]
        words, pos = [], 0
        for token in s.text.split(" "):
            if token:
                pieces = piece_of[pos : pos + len(token)]
                words.append(
                    {
                        "word": token,
                        "start": round(pieces[0].start, 3),
                        "end": round(max(w.end for w in pieces), 3),
                    }
                )
            pos += len(token) + 1
        out.append({"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                    "words": words})  # fmt: skip
    return {"segments": out, "language": language}


def test_word_level_subtitles_match_stock_whisperx(tmp_path: Path, base_dir: Path) -> None:
    """SRT/VTT with --highlight_words equal stock whisperx's writers fed stock-shaped words."""
    import faster_whisper
    from whisperx.utils import get_writer

    proc = cli(
        "transcribe", str(ILL_DISPOSED), "--device", "cpu", "--compute_type", "float32",
        "--language", "en", "--temperature", "0", "--beam_size", "5",
        "--word_timestamps", "True", "--highlight_words", "True",
        "--output_dir", str(tmp_path / "ours"), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stock = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32")
    segments, _ = stock.transcribe(
        str(ILL_DISPOSED), language="en", temperature=0.0, beam_size=5, word_timestamps=True
    )
    reference = _whisperx_shaped(list(segments), "en")
    del stock
    options = {"highlight_words": True, "max_line_width": None, "max_line_count": None}
    for fmt in ("srt", "vtt"):
        get_writer(fmt, str(tmp_path))(reference, str(ILL_DISPOSED), options)
    name = ILL_DISPOSED.stem
    for fmt in ("srt", "vtt"):
        ours = (tmp_path / "ours" / f"{name}.{fmt}").read_text()
        assert ours == (tmp_path / f"{name}.{fmt}").read_text(), fmt
        assert "<u>ill-disposed</u>" in ours and "ill -disposed" not in ours, ours
        assert "  " not in ours, ours
    data = json.loads((tmp_path / "ours" / f"{name}.json").read_text())
    words = [(w["word"], w["start"], w["end"]) for s in data["segments"] for w in s["words"]]
    assert words == [(w["word"], w["start"], w["end"]) for s in reference["segments"]
                     for w in s["words"]]  # fmt: skip
    assert "ill-disposed" in [w[0] for w in words]
    assert data["word_segments"] == [w for s in data["segments"] for w in s["words"]]
    times = [t for s in data["segments"] for t in (s["start"], s["end"])]
    times += [t for w in data["word_segments"] for t in (w["start"], w["end"], w["score"])]
    assert all(round(t, 3) == t for t in times), times


@pytest.mark.parametrize("language", ["ja", "zh"])
def test_words_of_languages_without_spaces_keep_their_own_times(
    language: str, tmp_path: Path
) -> None:
    """Japanese and Chinese have no spaces to split words on: each faster-whisper word keeps
    its entry and times (stock whisperx makes one entry per character from its aligner;
    without one, faster-whisper's words are the finest unit that has times), and whisperx's
    writers join them without spaces, for the languages whisperx lists as such."""
    import whisperx.utils
    from whisperx.utils import get_writer

    from amanuensis_npu.api import LANGUAGES_WITHOUT_SPACES

    assert sorted(LANGUAGES_WITHOUT_SPACES) == sorted(whisperx.utils.LANGUAGES_WITHOUT_SPACES)
    clip = CARDS[4]  # English speech decoded as Japanese / Chinese: real CJK words
    result = amanuensis_npu.transcribe(clip, device="cpu", compute_type="float32",
                                       language=language, temperature=0.0,
                                       word_timestamps=True)  # fmt: skip
    data = result.to_dict()
    assert data["language"] == language
    for seg, pieces in zip(data["segments"], result.segments, strict=True):
        expected = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in pieces.words
            if w.word.strip()
        ]
        assert [{k: w[k] for k in ("word", "start", "end")} for w in seg["words"]] == expected
    assert max(len(s["words"]) for s in data["segments"]) > 3, data
    # Word-level subtitles cut at 6 characters a line: only possible with word entries.
    options = {"highlight_words": False, "max_line_width": 6, "max_line_count": 1}
    get_writer("srt", str(tmp_path))(data, str(clip), options)
    srt = (tmp_path / f"{clip.stem}.srt").read_text()
    texts = [ln for ln in srt.splitlines() if ln and "-->" not in ln and not ln.isdigit()]
    assert len(texts) > len(data["segments"]) and not any(" " in t for t in texts), srt
    assert "".join(texts) == "".join(s["text"] for s in data["segments"]).replace(" ", "")


def test_json_times_are_rounded_like_whisperx(tmp_path: Path) -> None:
    """No `17.240000000000002`: every JSON time has at most 3 decimals (whisperx rounds so)."""
    proc = cli(
        "transcribe", str(DEMO), "--device", "cpu", "--output_format", "json",
        "--output_dir", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "demo.json").read_text()
    assert not re.search(r"\d\.\d{4,}", text.replace('"score"', "")), text
    data = json.loads(text)
    assert len(data["segments"]) >= 3 and data["segments"][-1]["end"] <= 27.3


# --- quiet, truthful logs (issue 11, item 5) ----------------------------------------------


def test_default_run_prints_no_warning_but_the_cpu_line(tmp_path: Path) -> None:
    """The README's first command as a user types it: no CTranslate2 float16 warning; on stderr
    only the progress bar, (no NPU here) one short line saying the CPU is used, the route that
    ran and the summary."""
    script = console_script("amanuensis-npu")
    assert script, "console script amanuensis-npu missing: pip install -e ."
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONWARNINGS" and (k == "AMANUENSIS_NPU_CACHE" or "AMANUENSIS_NPU_" not in k)
    }
    proc = subprocess.run(
        [script, "transcribe", str(DEMO), "--output_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Dashwood" in (tmp_path / "demo.txt").read_text()
    lines = [ln for ln in re.split(r"[\r\n]+", proc.stderr) if ln.strip()]
    other = [ln for ln in lines if "%|" not in ln]  # tqdm's progress bar redraws
    assert "ctranslate2" not in proc.stderr and "float16" not in proc.stderr, proc.stderr
    warnings = [ln for ln in other if re.search("warn", ln, re.IGNORECASE)]
    assert len(warnings) <= 1 and all("cpu" in ln.lower() for ln in warnings), other
    npu_here, _ = status.probe()
    if not npu_here:  # the default is the NPU, so its absence is said, once
        assert len(warnings) == 1 and "NPU" in warnings[0], other
    # Besides that line: what ran, and the job's summary; nothing else.
    rest = [ln for ln in other if ln not in warnings]
    assert [ln.split(":")[0] for ln in rest] == ["route", "done"], other
    assert all(len(ln) < 100 for ln in other), other  # logs are one short line


# --- models other than base, offline (issue 11, item 7) ------------------------------------


def test_other_model_offline_is_one_line_naming_the_offline_sizes(tmp_path: Path) -> None:
    proc = cli(
        "transcribe", str(DEMO), "--model", "small", "--output_dir", str(tmp_path / "out"),
        HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: model 'small' is not available offline"), errors
    assert "offline sizes: base, tiny.en" in errors[0] and "local CTranslate2" in errors[0]
    assert "internet connection" not in proc.stderr
    from amanuensis_npu.core.weights import ModelFormatError

    with pytest.raises(ModelFormatError, match="offline sizes: base, tiny.en") as info:
        amanuensis_npu.WhisperModel("small", download_root=str(tmp_path / "dl"),
                                    local_files_only=True)  # fmt: skip
    assert "\n" not in str(info.value)


# --- the API under threads (issue 13) -------------------------------------------------------


def test_stats_are_per_transcription_when_threads_transcribe_at_once() -> None:
    clips = [CARDS[0], LIBRIVOX[1], DEMO]
    options = {"device": "cpu", "temperature": 0.0, "language": "en", "beam_size": 1}
    alone = {c: amanuensis_npu.transcribe(c, **options) for c in clips}
    models_before = dict(api._MODELS)
    barrier = threading.Barrier(len(clips))
    together: dict[Path, object] = {}

    def work(clip: Path) -> None:
        barrier.wait()
        together[clip] = amanuensis_npu.transcribe(clip, **options)

    threads = [threading.Thread(target=work, args=(c,)) for c in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(together) == set(clips)
    for clip in clips:
        a, b = alone[clip].stats, together[clip].stats
        assert a["attention_calls"] > 0 and a["attention_calls"] % 6 == 0
        assert b["attention_calls"] == a["attention_calls"], clip.name
        assert together[clip].text == alone[clip].text
    # The demo clip needs more encoder windows than the 2 s card: counts really differ.
    assert together[DEMO].stats["attention_calls"] > together[CARDS[0]].stats["attention_calls"]
    assert api._MODELS == models_before  # the same settings loaded no second model


def test_one_cached_model_per_settings() -> None:
    barrier = threading.Barrier(3)
    got: list[object] = []

    def load() -> None:
        barrier.wait()
        got.append(api.get_model("base", "cpu", "auto", "int8"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(got) == 3 and got[0] is got[1] is got[2]
    assert api.get_model("base", "cpu", "auto", "int8") is got[0]
    other = api.get_model("base", "cpu", "auto", "float32")
    assert other is not got[0]
    assert (got[0].model.compute_type, other.model.compute_type) == ("int8_float32", "float32")
