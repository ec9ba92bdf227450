"""The `transcribe()` API and the `amanuensis-npu` CLI on real and broken inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

import amanuensis_npu
from amanuensis_npu.evaluation import wer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "amanuensis_npu" / "assets" / "demo.wav"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
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
    assert "auto_picks" in out and " cpu" in out.split("auto_picks", 1)[1].splitlines()[0]
    assert "emulator" in out
