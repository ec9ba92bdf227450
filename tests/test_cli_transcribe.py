"""`amanuensis-npu transcribe` as a user sees it, checked against stock faster-whisper + whisperx.

Every output format is compared with what stock whisperx's writers write for stock
faster-whisper's result on the same audio (float32 decoding on both sides, temperature 0:
our encoder gives the same tokens); word times with stock faster-whisper's; the route line
with the model's layer count; the simulated NPU with the emulator it must equal bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CARDS, LECTURE, LIBRIVOX

FORMATS = ("txt", "srt", "vtt", "tsv", "json")  # what whisperx writes for "all"
SAME = ("--compute_type", "float32", "--temperature", "0", "--language", "en")
WRITER_OPTIONS = {"highlight_words": False, "max_line_width": None, "max_line_count": None}


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    if "AMANUENSIS_NPU_XRT" not in (env or {}):
        full_env.pop("AMANUENSIS_NPU_XRT", None)
    return subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )


@pytest.fixture(scope="module")
def stock(base_dir: Path):
    import faster_whisper

    return faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32")


def stock_result(stock, audio: Path, **options) -> dict:  # noqa: ANN001
    segments, info = stock.transcribe(str(audio), temperature=0.0, language="en", **options)
    segments = list(segments)
    return {
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in segments],
        "language": info.language,
        "words": [w for s in segments for w in (s.words or [])],
    }


def stock_files(result: dict, audio: Path, out: Path, formats=FORMATS) -> dict[str, str]:
    """What stock whisperx's writers write for this result."""
    from whisperx.utils import get_writer

    out.mkdir(parents=True, exist_ok=True)
    result = {k: v for k, v in result.items() if k != "words"}
    for ext in formats:
        get_writer(ext, str(out))(result, str(audio), WRITER_OPTIONS)
    return {ext: (out / f"{audio.stem}.{ext}").read_text() for ext in formats}


def test_every_format_matches_stock_whisperx(stock, tmp_path: Path) -> None:  # noqa: ANN001
    clip = LIBRIVOX[0]
    out = tmp_path / "ours"
    # --verbose after the subcommand is accepted.
    proc = cli("transcribe", str(clip), "--device", "cpu", *SAME, "-o", str(out), "--verbose")
    assert proc.returncode == 0, proc.stderr
    expected = stock_files(stock_result(stock, clip), clip, tmp_path / "stock")
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        f"{clip.stem}.{ext}" for ext in FORMATS
    }
    for ext in ("txt", "srt", "vtt", "tsv"):
        assert (out / f"{clip.stem}.{ext}").read_text() == expected[ext], ext
    ours = json.loads((out / f"{clip.stem}.json").read_text())
    theirs = json.loads(expected["json"])
    assert ours["language"] == theirs["language"] == "en"
    assert [s["text"] for s in ours["segments"]] == [s["text"] for s in theirs["segments"]]
    for a, b in zip(ours["segments"], theirs["segments"], strict=True):
        assert a["start"] == pytest.approx(b["start"], abs=1e-3)
        assert a["end"] == pytest.approx(b["end"], abs=1e-3)
    assert "Dashwood" in (out / f"{clip.stem}.txt").read_text()


def test_tsv_alone(stock, tmp_path: Path) -> None:  # noqa: ANN001
    clip = CARDS[0]
    proc = cli("transcribe", str(clip), "--device", "cpu", *SAME, "-f", "tsv", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["001.tsv"]
    expected = stock_files(stock_result(stock, clip), clip, tmp_path / "stock", ("tsv",))
    assert (tmp_path / "001.tsv").read_text() == expected["tsv"]


def test_json_words_have_their_own_times(stock, tmp_path: Path) -> None:  # noqa: ANN001
    clip = LIBRIVOX[0]
    proc = cli("transcribe", str(clip), "--device", "cpu", *SAME, "--word_timestamps", "True",
               "-f", "json", "-o", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / f"{clip.stem}.json").read_text())
    words = [w for s in data["segments"] for w in s["words"]]
    reference = stock_result(stock, clip, word_timestamps=True)["words"]
    assert [w["word"].strip() for w in words] == [w.word.strip() for w in reference]
    for ours, theirs in zip(words, reference, strict=True):
        assert abs(ours["start"] - theirs.start) <= 0.02, (ours, theirs)
        assert abs(ours["end"] - theirs.end) <= 0.02, (ours, theirs)
    assert len({w["start"] for w in words}) > len(data["segments"])  # not one time per segment


def test_batch_size_matches_stock_batched_pipeline(stock, tmp_path: Path) -> None:  # noqa: ANN001
    import faster_whisper

    import amanuensis_npu

    clip = LECTURE
    segments, _ = faster_whisper.BatchedInferencePipeline(stock).transcribe(
        str(clip), batch_size=2, temperature=0.0, language="en"
    )
    segments = list(segments)
    assert len(segments) >= 3  # three windows in two batches
    expected_text = "".join(s.text for s in segments).strip()
    result = amanuensis_npu.transcribe(
        clip, device="cpu", compute_type="float32", batch_size=2, temperature=0.0, language="en"
    )
    assert result.text == expected_text
    proc = cli("transcribe", str(clip), "--device", "cpu", *SAME, "--batch_size", "2",
               "-f", "txt", "-o", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    expected_file = "".join(f"{s.text.strip()}\n" for s in segments)
    assert (tmp_path / "lecture.txt").read_text() == expected_file


def _encode(source: Path, target: Path, codec: str, rate: int = 16000, layout: str = "mono"):
    """Re-encode a clip with PyAV (mp3, aac in m4a, 44.1 kHz stereo PCM)."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        for frame in src.decode(audio=0):
            for out in resampler.resample(frame):
                for packet in stream.encode(out):
                    dst.mux(packet)
        for out in resampler.resample(None):
            for packet in stream.encode(out):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)


def test_inputs_sharing_a_name_keep_every_output(stock, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "in"
    folder.mkdir()
    sources = {
        "lecture.mp3": (LIBRIVOX[1], "libmp3lame", 16000, "mono"),
        "lecture_stereo44k.wav": (LIBRIVOX[4], "pcm_s16le", 44100, "stereo"),
        "lecture.m4a": (CARDS[4], "aac", 16000, "mono"),
    }
    for name, (clip, codec, rate, layout) in sources.items():
        _encode(clip, folder / name, codec, rate, layout)
    out = tmp_path / "out3"
    inputs = [str(folder / name) for name in sources]
    proc = cli("transcribe", *inputs, "--device", "cpu", *SAME, "--output_format", "all",
               "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(files) == 15, files
    stems = {"lecture.mp3": "lecture.mp3", "lecture_stereo44k.wav": "lecture_stereo44k",
             "lecture.m4a": "lecture.m4a"}
    for name, stem in stems.items():
        expected = stock_result(stock, folder / name)  # stock decodes the same mp3/m4a/wav
        txt = "".join(f"{s['text'].strip()}\n" for s in expected["segments"])
        assert (out / f"{stem}.txt").read_text() == txt, name
    # Several files on stdout: each transcript under its own header, in input order.
    headers = [ln for ln in proc.stdout.splitlines() if ln.startswith("==> ")]
    assert headers == [f"==> {path} <==" for path in inputs]


def test_suppress_numerals_reaches_decoding(tmp_path: Path) -> None:
    clip = CARDS[0]  # "ten of clubs"
    plain = cli("transcribe", str(clip), "--device", "cpu", *SAME, "-f", "txt", "-o",
                str(tmp_path / "a"), "--no-progress")
    spelled = cli("transcribe", str(clip), "--device", "cpu", *SAME, "-f", "txt", "-o",
                  str(tmp_path / "b"), "--no-progress", "--suppress_numerals")
    assert plain.returncode == spelled.returncode == 0, (plain.stderr, spelled.stderr)
    assert re.search(r"\d", (tmp_path / "a" / "001.txt").read_text())  # "10 of ..."
    text = (tmp_path / "b" / "001.txt").read_text()
    assert not re.search(r"\d", text) and "ten" in text.lower(), text


def test_decoding_options_reach_faster_whisper_as_whisperx_means_them() -> None:
    """whisperx's option names become faster-whisper's keywords with whisperx's meaning.

    The fallback schedule is the one whisperx/transcribe.py builds,
    `np.arange(temperature, 1.0 + 1e-6, increment)`; --vad_onset starts speech and
    --vad_offset ends it, which faster-whisper's `VadOptions` calls `threshold` and
    `neg_threshold`; every keyword binds to faster-whisper's `transcribe` signature.
    """
    import inspect

    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.vad import VadOptions

    from amanuensis_npu.cli import build_parser, decode_options

    def options(*argv: str) -> dict:
        return decode_options(build_parser().parse_args(["transcribe", "a.wav", *argv]))

    for first, step in ((0.0, 0.2), (0.0, 0.3), (0.4, 0.2), (0.5, 0.25), (0.0, 1.0)):
        got = options("--temperature", str(first), "--temperature_increment_on_fallback",
                      str(step))["temperature"]  # fmt: skip
        assert got == pytest.approx(list(np.arange(first, 1.0 + 1e-6, step))), (first, step)
    assert options("--temperature", "0")["temperature"] == [0.0]
    # whisperx: `increment is None` -> `temperature = [temperature]`, no fallback at all.
    assert options("--temperature_increment_on_fallback", "None")["temperature"] == [0.0]
    assert options("--temperature", "0.4", "--temperature_increment_on_fallback",
                   "None")["temperature"] == [0.4]  # fmt: skip
    assert "temperature" not in options()  # neither: faster-whisper's own 0.0 ... 1.0

    vad = options("--vad_filter", "True", "--vad_onset", "0.6", "--vad_offset", "0.2")
    assert vad["vad_filter"] is True
    assert VadOptions(**vad["vad_parameters"]) == VadOptions(threshold=0.6, neg_threshold=0.2)

    named = options("--beam_size", "3", "--best_of", "4", "--patience", "1.5",
                    "--length_penalty", "0.9", "--compression_ratio_threshold", "2.1",
                    "--logprob_threshold", "-0.7", "--no_speech_threshold", "0.4",
                    "--suppress_tokens=-1,50362", "--condition_on_previous_text", "False",
                    "--initial_prompt", "Cards.", "--hotwords", "clubs", "--task", "translate",
                    "--word_timestamps", "True", "--language", "de")  # fmt: skip
    expected = {"beam_size": 3, "best_of": 4, "patience": 1.5, "length_penalty": 0.9,
                "compression_ratio_threshold": 2.1, "log_prob_threshold": -0.7,
                "no_speech_threshold": 0.4, "suppress_tokens": [-1, 50362],
                "condition_on_previous_text": False, "initial_prompt": "Cards.",
                "hotwords": "clubs", "task": "translate", "word_timestamps": True,
                "language": "de"}  # fmt: skip
    assert {k: named[k] for k in expected} == expected
    for method in (WhisperModel.transcribe, BatchedInferencePipeline.transcribe):
        inspect.signature(method).bind(None, "a.wav", **{**named, **vad})


ROUTE = re.compile(
    r"^route: encoder (\w+) on CPU in f32, attention (.+); (\d+) of (\d+) attention calls "
    r"fell back to the CPU; why: (.+)$"
)


def _route(stderr: str) -> tuple[str, ...]:
    lines = [m.groups() for ln in stderr.splitlines() if (m := ROUTE.match(ln))]
    assert len(lines) == 1, stderr
    return lines[0]


def test_route_line_for_the_emulator_and_the_simulated_npu(tmp_path: Path) -> None:
    clip = CARDS[0]  # one window; with --language, one encoder pass of 6 layers
    common = ["transcribe", str(clip), *SAME, "-f", "txt", "--no-progress"]
    emulator = cli(*common, "--attention", "emulator", "-o", str(tmp_path / "emu"))
    assert emulator.returncode == 0, emulator.stderr
    assert _route(emulator.stderr)[:4] == ("torch", "emulator", "0", "6")
    assert _route(emulator.stderr)[4] == "auto, attention='emulator' chosen explicitly"

    sim = {"AMANUENSIS_NPU_XRT": "sim"}
    npu = cli(*common, "--attention", "npu", "-o", str(tmp_path / "npu"), env=sim)
    assert npu.returncode == 0, npu.stderr
    assert _route(npu.stderr)[:4] == ("torch", "npu on NPU Phoenix (simulated)", "0", "6")
    # The simulated device runs the kernel the emulator models bit for bit.
    assert (tmp_path / "npu" / "001.txt").read_text() == (tmp_path / "emu" / "001.txt").read_text()

    faulty = cli(*common, "--attention", "npu", "-o", str(tmp_path / "faulty"),
                 env={**sim, "AMANUENSIS_NPU_SIM_FAULTS": "error@2"})
    assert faulty.returncode == 0, faulty.stderr
    assert _route(faulty.stderr)[:4] == ("torch", "npu on NPU Phoenix (simulated)", "1", "6")
    assert "this call ran on the CPU" in faulty.stderr


@pytest.mark.parametrize(
    ("encoder", "name", "device", "precision"),
    [("openvino:CPU:bf16", "openvino:CPU:bf16", "CPU", "bf16"),
     ("onnx", "onnx:CPUExecutionProvider", "CPUExecutionProvider", "f32")],
)
def test_whole_encoder_route_line_names_no_attention(
    tmp_path: Path, encoder: str, name: str, device: str, precision: str
) -> None:
    """OpenVINO and ONNX Runtime run the whole encoder: no attention backend and no
    attention counter in the line, only the encoder, its device, precision and why."""
    pytest.importorskip("openvino" if encoder.startswith("openvino") else "onnxruntime")
    from amanuensis_npu.openvino import devices

    proc = cli("transcribe", str(CARDS[0]), *SAME, "-f", "txt", "--no-progress",
               "--encoder", encoder, "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("route:"))
    why = f"encoder={encoder!r} chosen explicitly"
    if precision == "bf16" and not devices.native_bf16()[0]:
        # bf16 without bf16 hardware crashes OpenVINO: f32 runs, said on the line and before
        name, precision = "openvino:CPU", "f32"
        why = "bf16 asked, no native bf16 on this CPU: f32 ran"
        assert "OpenVINO: no native bf16 on this CPU" in proc.stderr
    assert line == f"route: encoder {name} on {device} in {precision}; why: {why}", line
    assert "attention" not in line


def test_tiny_en_on_the_simulated_npu_gives_the_emulators_text(
    tmp_path: Path, tiny_en_dir: Path
) -> None:
    """tiny.en has 6 heads, not Base's 8: the simulated NPU must serve it with no fallback
    (4 layers, one encoder pass with --language) and write the emulator's text."""
    clip = CARDS[0]
    common = ["transcribe", str(clip), "--model", str(tiny_en_dir), *SAME, "-f", "txt",
              "--no-progress"]
    emulator = cli(*common, "--attention", "emulator", "-o", str(tmp_path / "emu"))
    assert emulator.returncode == 0, emulator.stderr
    assert _route(emulator.stderr)[:4] == ("torch", "emulator", "0", "4")
    npu = cli(*common, "--attention", "npu", "-o", str(tmp_path / "npu"),
              env={"AMANUENSIS_NPU_XRT": "sim"})
    assert npu.returncode == 0, npu.stderr
    assert _route(npu.stderr)[:4] == ("torch", "npu on NPU Phoenix (simulated)", "0", "4")
    text = (tmp_path / "npu" / "001.txt").read_text()
    assert text == (tmp_path / "emu" / "001.txt").read_text() and text.strip()


def test_inputs_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    not_a_model = tmp_path / "model"
    not_a_model.mkdir()
    proc = cli("transcribe", str(tmp_path / "missing.wav"), str(CARDS[0]), "--model",
               str(not_a_model), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0] == f"error: {tmp_path / 'missing.wav'}: no such file", lines
    assert "not a CTranslate2 model directory" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_help_shows_defaults_and_naming() -> None:
    proc = cli("transcribe", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert re.search(r"--beam_size BEAM_SIZE beams in beam search \(default: 5\)", text)
    assert "(default: all)" in text and "(default: base)" in text
    assert "lecture.mp3 -> lecture.mp3.txt" in text and "--retry-failed" in text
