#!/usr/bin/env python3
"""What each NPU's arithmetic does to the transcript, measured on the test speech.

Every row runs Whisper Base's encoder in one NPU's arithmetic on the same 30 s windows
and is compared with our float32 torch encoder (the reference row) two ways:

- encoder output: cosine (float64, whole window) and max abs difference;
- transcript: the window decoded by CTranslate2 float32 (beam 5, temperature 0,
  condition_on_previous_text False, no timestamps, language en) from that encoder's output, and the
  words that differ from the reference row's transcript (jiwer, Whisper's English normaliser).

Rows (`--routes`):
- `emulator`: our own NPU kernel's arithmetic (attention="emulator": int8 Q/K/V,
  integer softmax, bit-exact to the kernel; the rest of the encoder stays float32).
- `openvino-f32`, `openvino-bf16`: the `openvino` package on the CPU device with
  INFERENCE_PRECISION_HINT stated (bf16 runs in bf16 only where the CPU has
  AMX/avx512_bf16; the effective precision is read back and reported).
- `qnn-fp16`, `qnn-a16w8`: Qualcomm's HTP (Hexagon NPU) backend from `onnxruntime-qnn`
  2.x, which emulates the NPU on x86 (minutes per window), every node on the HTP
  backend (CPU fallback disabled): FP16 precision, and a QDQ model with 16-bit
  activations and 8-bit weights made by `onnxruntime.quantization` for QNN.
- `quark-bfp16`, `quark-bf16`: AMD Quark's BFP16 and BF16 configs, the arithmetic the
  VitisAI compiler uses for Whisper on Strix-class NPUs, run by ONNX Runtime on the CPU
  with Quark's custom operators. Quark pins onnx<=1.22, so it runs in its own venv
  (made on first use, see --quark-venv) through benchmarks/npu_numerics_quark.py.

Every vendor row starts from our export (`amanuensis_npu.onnx.export.export_encoder`).
A row whose package is missing reads "not installed" and the log says how to install it.
Emulated NPUs are slow: `--windows` (default 2) sets how many windows every row measures.
Calibration data for the quantized QDQ model comes from windows that are not measured.

Writes npu_numerics.json and npu_numerics.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, SPEECH, cpu_flags, cpu_name

DEFAULT_OUT = RESULTS / "npu_numerics"
QUARK_WORKER = Path(__file__).resolve().with_name("npu_numerics_quark.py")
QUARK_VERSION = "0.13"
DEFAULT_QUARK_VENV = Path.home() / ".cache" / "amanuensis-npu" / f"quark-{QUARK_VERSION}-venv"
SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
N_FRAMES = 3000  # log-mel frames per 30 s window
# Snapdragon X Elite's HTP (soc_model 60, HTP v73): a laptop NPU, the peer of Ryzen AI.
QNN_SOC = {"soc_model": "60", "htp_arch": "73"}
ROUTES = (
    "emulator",
    "openvino-f32",
    "openvino-bf16",
    "quark-bfp16",
    "quark-bf16",
    "qnn-fp16",
    "qnn-a16w8",
)

log = logging.getLogger("npu_numerics")


class NotInstalled(RuntimeError):
    """The row's package is missing; the message says how to install it."""


# --------------------------------------------------------------------------- windows


@dataclass
class Window:
    """Up to 30 s of speech: one encoder window, transcribed as a whole."""

    name: str
    audio: np.ndarray
    reference: str | None  # the human transcript, when one covers exactly this audio


def _read(path: Path) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(path), sampling_rate=SAMPLE_RATE)


def _joined(paths: list[Path], gap_s: float = 0.5) -> tuple[np.ndarray, str]:
    """Short utterances one after another with a short pause: a window full of speech."""
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    texts = []
    for path in paths:
        parts += [_read(path), gap]
        texts.append(path.with_suffix(".txt").read_text(encoding="utf-8").strip())
    return np.concatenate(parts[:-1]), " ".join(texts)


def speech_windows(data: Path = SPEECH) -> list[Window]:
    """The test speech as full windows, in the order rows measure them."""
    librivox, libri_ref = _joined(sorted((data / "librivox").glob("*.wav")))
    cards, cards_ref = _joined(sorted((data / "cards").glob("*.wav")))
    lecture = _read(data / "lecture" / "lecture.wav")
    w = WINDOW_SECONDS * SAMPLE_RATE
    return [
        Window("librivox: 5 utterances joined", librivox, libri_ref),
        Window("conversation", _read(data / "conversation" / "sample.wav")[:w], None),
        Window("lecture 0-30 s", lecture[:w], None),
        Window("lecture 30-60 s", lecture[w : 2 * w], None),
        Window("cards: 5 clips joined", cards, cards_ref),
    ]


def first_mel(audio: np.ndarray, feature_extractor: Any) -> np.ndarray:
    """The [1, 80, 3000] window faster-whisper's transcribe() encodes first for this audio."""
    from faster_whisper.audio import pad_or_trim

    features = feature_extractor(audio)
    content = features.shape[-1] - 1  # transcribe() drops the last frame too
    return pad_or_trim(features[:, : min(N_FRAMES, content)]).astype(np.float32)[None]


# ---------------------------------------------------------------------------- routes


@dataclass
class Route:
    """One row: how to build its encoder, and what its numbers mean."""

    key: str
    route: str
    precision: str
    timing: str  # "CPU" or "emulation on x86": what the seconds per window are
    # (export path getter, calibration windows, threads) -> encoder: [1,80,3000] -> [1,1500,512]
    build: Callable[[Callable[[], Path], list[np.ndarray], int], Callable[[np.ndarray], np.ndarray]]
    notes: list[str] = field(default_factory=list)


def _torch_encoder(attention: str) -> Callable[..., Any]:
    def build(_onnx: Callable[[], Path], _calib: list[np.ndarray], threads: int) -> Any:
        import torch

        import amanuensis_npu

        torch.set_num_threads(threads)
        encoder = amanuensis_npu.load_encoder("base", attention=attention).eval()

        def run(mel: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return encoder(torch.from_numpy(mel)).numpy().astype(np.float32, copy=True)

        return run

    return build


def _openvino(precision: str, notes: list[str]) -> Callable[..., Any]:
    def build(onnx_path: Callable[[], Path], _calib: list[np.ndarray], threads: int) -> Any:
        try:
            import openvino as ov
        except ImportError as exc:
            raise NotInstalled("pip install openvino") from exc

        core = ov.Core()
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        compiled = core.compile_model(
            str(onnx_path()),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": precision,
            },
        )
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        effective = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        notes.append(
            f"openvino {ov.__version__}; CPU capabilities {', '.join(caps)}; "
            f"asked {precision}, compiled model reports {effective}"
        )
        output = compiled.output(0)

        def run(mel: np.ndarray) -> np.ndarray:
            return np.asarray(compiled([mel])[output], dtype=np.float32)

        return run

    return build


def _strip_metadata(src: Path, dst: Path) -> Path:
    """A copy without metadata_props: qnn_preprocess_model fails on them (onnxruntime 1.32)."""
    import onnx

    model = onnx.load(str(src))
    del model.metadata_props[:]
    onnx.save(model, str(dst))
    return dst


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over mel windows."""

    def __init__(self, mels: list[np.ndarray]) -> None:
        self._it = iter(mels)

    def get_next(self) -> dict[str, np.ndarray] | None:
        mel = next(self._it, None)
        return None if mel is None else {"mel": mel}


def _qnn(fp16: bool, notes: list[str]) -> Callable[..., Any]:
    def build(onnx_path: Callable[[], Path], calib: list[np.ndarray], threads: int) -> Any:
        import onnxruntime as ort

        try:
            import onnxruntime_qnn as qnn
        except ImportError as exc:
            hint = "pip install onnxruntime-qnn  (2.x: a plugin EP beside onnxruntime)"
            raise NotInstalled(hint) from exc

        name = qnn.get_ep_name()
        if not any(d.ep_name == name for d in ort.get_ep_devices()):
            ort.register_execution_provider_library(name, qnn.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
        model = onnx_path()
        if not fp16:
            model = _qdq_a16w8(model, calib, notes)
        options = {"backend_path": qnn.get_qnn_htp_path(), **QNN_SOC}
        if fp16:
            options["enable_htp_fp16_precision"] = "1"
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        # Every node on the HTP backend, or no session: a row must be the NPU's arithmetic.
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.add_provider_for_devices(devices, options)
        session = ort.InferenceSession(str(model), sess_options=so)
        providers = session.get_providers()
        if providers[0] != name:
            raise RuntimeError(f"session runs on {providers}, not {name}")
        shown = {**options, "backend_path": Path(options["backend_path"]).name}
        notes.append(f"onnxruntime-qnn {qnn.__version__}, options {shown}, strict (no CPU EP)")

        def run(mel: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {"mel": mel})[0], dtype=np.float32)

        return run

    return build


def _qdq_a16w8(onnx_path: Path, calib: list[np.ndarray], notes: list[str]) -> Path:
    """QDQ model for QNN: uint16 activations, uint8 weights, calibrated on unmeasured windows."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    work = onnx_path.parent
    bare = _strip_metadata(onnx_path, work / "encoder.nometa.onnx")
    pre = work / "encoder.qnn_pre.onnx"
    if not qnn_preprocess_model(str(bare), str(pre)):
        pre = bare
    out = work / "encoder.qdq_a16w8.onnx"
    t0 = time.perf_counter()
    config = get_qnn_qdq_config(
        str(pre),
        _Calibration(calib),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
    )
    quantize(str(pre), str(out), config)
    notes.append(
        f"QDQ A16W8 by onnxruntime.quantization (get_qnn_qdq_config, MinMax) on "
        f"{len(calib)} calibration window(s) in {time.perf_counter() - t0:.0f} s"
    )
    return out


# ------------------------------------------------------------------------ AMD Quark


def ensure_quark_venv(venv: Path) -> Path:
    """The Python of a venv with amd-quark; made with pip on first use (a few minutes)."""
    from importlib.metadata import version

    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import quark.onnx, onnxruntime"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log.info("making a venv for AMD Quark %s in %s (pins onnx<=1.22)", QUARK_VERSION, venv)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            f"amd-quark=={QUARK_VERSION}", "onnxruntime>=1.22.2,<=1.28",
            # Quark builds its custom operators with torch's C++ extension tooling; the
            # project's own torch version, so pip takes the same (CPU) build.
            f"torch=={version('torch')}",
        ],
    ]  # fmt: skip
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise NotInstalled(
                f"could not make the Quark venv ({' '.join(cmd[:4])}...: {' '.join(tail)}); "
                f"make it by hand: python3.11 -m venv {venv} && {python} -m pip install "
                f"amd-quark=={QUARK_VERSION}"
            )
    if subprocess.run(probe, capture_output=True).returncode != 0:
        raise NotInstalled(f"amd-quark does not import in {venv}")
    return python


class QuarkWorker:
    """benchmarks/npu_numerics_quark.py in Quark's venv: quantizes once, then encodes on request."""

    def __init__(self, python: Path, onnx_path: Path, config: str, calib: list[np.ndarray],
                 threads: int, notes: list[str]) -> None:  # fmt: skip
        work = onnx_path.parent / f"quark-{config.lower()}"
        work.mkdir(exist_ok=True)
        calib_dir = work / "calib"
        calib_dir.mkdir(exist_ok=True)
        for i, mel in enumerate(calib):
            np.save(calib_dir / f"{i}.npy", mel)
        self.work = work
        cmd = [
            str(python), str(QUARK_WORKER), "--model", str(onnx_path), "--config", config,
            "--calib", str(calib_dir), "--out", str(work / "quantized.onnx"),
            "--threads", str(threads),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        # Quark reports at length (tables, JIT builds): kept in a file, not on the terminal.
        self.stderr = (work / "quark.log").open("w")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=env, cwd=work,  # Quark writes a quantized_info.csv into its working directory
        )  # fmt: skip
        ready = self._reply()
        notes.append(ready)

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("OK "):
            code = self.proc.wait(timeout=60) if not line else None
            raise RuntimeError(
                f"Quark worker failed ({line or f'exit status {code}'}; see {self.stderr.name})"
            )
        return line[3:]

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        assert self.proc.stdin is not None
        src, dst = self.work / "in.npy", self.work / "out.npy"
        np.save(src, mel)
        self.proc.stdin.write(f"{src}\t{dst}\n")
        self.proc.stdin.flush()
        self._reply()
        return np.load(dst).astype(np.float32)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


def _quark(config: str, venv: Path, notes: list[str]) -> Callable[..., Any]:
    def build(onnx_path: Callable[[], Path], calib: list[np.ndarray], threads: int) -> Any:
        python = ensure_quark_venv(venv)
        return QuarkWorker(python, onnx_path(), config, calib, threads, notes)

    return build


def make_routes(keys: list[str], quark_venv: Path) -> list[Route]:
    """The reference row first, then the requested rows in the order given."""
    table: dict[str, Route] = {}

    def add(key: str, route: str, precision: str, timing: str, build_for: Callable) -> None:
        notes: list[str] = []
        table[key] = Route(key, route, precision, timing, build_for(notes), notes)

    add("reference", "our torch encoder (reference)", "float32", "CPU",
        lambda n: _torch_encoder("cpu"))  # fmt: skip
    add("emulator", "our NPU kernel (emulator), attention only", "int8 Q/K/V, integer softmax",
        "emulation on x86", lambda n: _torch_encoder("emulator"))  # fmt: skip
    add("openvino-f32", "OpenVINO CPU", "f32", "CPU", lambda n: _openvino("f32", n))
    add("openvino-bf16", "OpenVINO CPU", "bf16", "CPU", lambda n: _openvino("bf16", n))
    add("qnn-fp16", "QNN HTP (Qualcomm NPU)", "FP16", "emulation on x86",
        lambda n: _qnn(True, n))  # fmt: skip
    add("qnn-a16w8", "QNN HTP (Qualcomm NPU)", "QDQ A16W8", "emulation on x86",
        lambda n: _qnn(False, n))  # fmt: skip
    add("quark-bfp16", "AMD Quark -> ORT CPU (AMD NPU arithmetic)", "BFP16", "emulation on x86",
        lambda n: _quark("BFP16", quark_venv, n))  # fmt: skip
    add("quark-bf16", "AMD Quark -> ORT CPU", "BF16", "emulation on x86",
        lambda n: _quark("BF16", quark_venv, n))  # fmt: skip
    unknown = [k for k in keys if k not in table]
    if unknown:
        raise SystemExit(f"npu_numerics: unknown routes {unknown}; choose from {', '.join(ROUTES)}")
    return [table["reference"], *(table[k] for k in keys if k != "reference")]


# ----------------------------------------------------------------------- transcripts


class CachedEncoder:
    """A route's encoder behind a cache keyed by the mel's bytes.

    The windows measured for fidelity are the first windows transcribe() encodes, so a
    transcript reuses those outputs; any other window the decoder asks for (a seek past
    a final timestamp) runs on the route and is counted.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.run = run
        self.cache: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        self.extra_calls = 0

    @staticmethod
    def key(mel: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(mel, dtype=np.float32).tobytes()).hexdigest()

    def measure(self, mel: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        out = self.run(mel)
        seconds = time.perf_counter() - t0
        self.cache[self.key(mel)] = out
        return out, seconds

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        key = self.key(mel)
        if key not in self.cache:
            self.extra_calls += 1
            self.cache[key] = self.run(mel)
        return self.cache[key]


def decoder_model(threads: int) -> Any:
    """faster-whisper float32 whose encode() is whatever encoder is plugged in."""
    import ctranslate2
    import faster_whisper

    from amanuensis_npu.core.models import resolve_model

    class RouteModel(faster_whisper.WhisperModel):
        encoder: Callable[[np.ndarray], np.ndarray]

        def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
            mel = np.asarray(features, dtype=np.float32)
            if mel.ndim == 2:
                mel = mel[None]
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(self.encoder(mel)))

    return RouteModel(
        str(resolve_model("base")), device="cpu", compute_type="float32", cpu_threads=threads
    )


def transcribe(model: Any, audio: np.ndarray, beam_size: int) -> str:
    segments, _ = model.transcribe(
        audio,
        language="en",
        beam_size=beam_size,
        temperature=0.0,
        condition_on_previous_text=False,
        # One decoding pass per window: with timestamps, a window whose last segment ends
        # on a timestamp pair is decoded again from there, on a second encoder call that
        # costs minutes on an emulated NPU and is not the window measured above.
        without_timestamps=True,
    )
    return " ".join(s.text.strip() for s in segments).strip()


# ------------------------------------------------------------------------- measuring


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-300))


def measure_route(
    route: Route,
    windows: list[Window],
    mels: list[np.ndarray],
    calib: list[np.ndarray],
    reference: dict[str, Any] | None,
    model: Any,
    onnx_path: Callable[[], Path],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One row: build the route, encode every window, transcribe every window."""
    from amanuensis_npu.evaluation import word_counts

    row: dict[str, Any] = {
        "key": route.key,
        "route": route.route,
        "precision": route.precision,
        "timing": route.timing,
    }
    t0 = time.perf_counter()
    try:
        run = route.build(onnx_path, calib, args.threads)
    except NotInstalled as exc:
        log.warning("%s: not installed (%s)", route.key, exc)
        return {**row, "status": "not installed", "install": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a vendor failing is a result to report
        log.warning("%s: failed to start: %s", route.key, str(exc).splitlines()[0][:300])
        return {**row, "status": "failed", "error": str(exc).splitlines()[0][:300]}
    row["setup_seconds"] = time.perf_counter() - t0
    encoder = CachedEncoder(run)
    try:
        if route.timing == "CPU":
            encoder.run(mels[0])  # warm-up, so the first window's time is not the compile
        outputs, seconds = [], []
        for window, mel in zip(windows, mels, strict=True):
            out, secs = encoder.measure(mel)
            outputs.append(out)
            seconds.append(secs)
            log.info("%s: %s encoded in %.1f s", route.key, window.name, secs)
        row["seconds_per_window"] = seconds
        model.encoder = encoder
        texts = [transcribe(model, w.audio, args.beam_size) for w in windows]
        row["extra_encoder_calls"] = encoder.extra_calls
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: failed: %s", route.key, str(exc).splitlines()[0][:300])
        return {**row, "status": "failed", "error": str(exc).splitlines()[0][:300]}
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()
    row["status"] = "measured"
    row["notes"] = list(route.notes)
    row["texts"] = texts
    row["outputs"] = outputs  # dropped before the JSON is written
    if reference is None:  # this is the reference row
        row["encoder_cosine"] = [1.0] * len(windows)
        row["encoder_max_abs"] = [0.0] * len(windows)
        row["words_changed"] = [0] * len(windows)
    else:
        row["encoder_cosine"] = [
            cosine(o, r) for o, r in zip(outputs, reference["outputs"], strict=True)
        ]
        row["encoder_max_abs"] = [
            float(np.abs(o - r).max()) for o, r in zip(outputs, reference["outputs"], strict=True)
        ]
        row["words_changed"] = [
            word_counts(ref, hyp)[0] for ref, hyp in zip(reference["texts"], texts, strict=True)
        ]
    row["words_total"] = [word_counts(ref, ref)[1] for ref in (reference or row)["texts"]]
    errors = [
        word_counts(w.reference, t) for w, t in zip(windows, texts, strict=True) if w.reference
    ]
    if errors:
        row["wer_vs_human"] = sum(e for e, _ in errors) / max(sum(n for _, n in errors), 1)
    for key in ("encoder_cosine", "words_changed", "texts"):
        for window, value in zip(windows, row[key], strict=True):
            log.info("%s [%s] %s: %s", route.key, window.name, key, value)
    return row


# -------------------------------------------------------------------------- the table


def summarize(row: dict[str, Any], reference_seconds: float | None) -> dict[str, Any]:
    """The table's cells for one measured row, computed from its per-window measurements."""
    cos = row["encoder_cosine"]
    median_s = statistics.median(row["seconds_per_window"])
    return {
        "cos_min": min(cos),
        "cos_mean": statistics.fmean(cos),
        "max_abs": max(row["encoder_max_abs"]),
        "words_changed": sum(row["words_changed"]),
        "words_total": sum(row["words_total"]),
        "seconds": median_s,
        "ratio": median_s / reference_seconds if reference_seconds else None,
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The table "what each NPU's arithmetic does to the transcript", from the rows' data."""
    rows = result["rows"]
    ref = next((r for r in rows if r["key"] == "reference" and r["status"] == "measured"), None)
    ref_s = statistics.median(ref["seconds_per_window"]) if ref else None
    lines = [
        "| route | precision | encoder cosine min / mean | max abs | words changed / total "
        "| s per window (x reference) | time is |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["status"] != "measured":
            what = row["status"]
            lines.append(f"| {row['route']} | {row['precision']} | {what} | | | | |")
            continue
        s = summarize(row, ref_s)
        ratio = f" ({s['ratio']:.2f}x)" if s["ratio"] is not None else ""
        lines.append(
            f"| {row['route']} | {row['precision']} | {s['cos_min']:.5f} / {s['cos_mean']:.5f} "
            f"| {s['max_abs']:.3g} | {s['words_changed']} / {s['words_total']} "
            f"| {s['seconds']:.2f}{ratio} | {row['timing']} |"
        )
    return "\n".join(lines) + "\n"


def markdown_report(result: dict[str, Any]) -> str:
    names = ", ".join(result["windows"])
    out = [
        "# What each NPU's arithmetic does to the transcript",
        "",
        f"{len(result['windows'])} windows of the test speech ({names}); encoder outputs and "
        "transcripts compared with our float32 torch encoder. Decoding: CTranslate2 float32, "
        f"beam {result['settings']['beam_size']}, temperature 0, "
        "condition_on_previous_text False, without timestamps (one decoding pass per "
        "window), language en.",
        "",
        markdown_table(result),
        f"Measured {result['date']} on {result['cpu']} ({result['threads']} threads); "
        f"CPU flags: {', '.join(result['cpu_flags']) or 'none of amx/avx512_bf16'}.",
        f"Command: `{result['command']}`",
        "",
    ]
    for row in result["rows"]:
        if row["status"] == "not installed":
            out.append(f"- {row['key']}: not installed; install with `{row['install']}`")
        elif row["status"] == "failed":
            out.append(f"- {row['key']}: failed: {row['error']}")
        else:
            for note in row.get("notes", []):
                out.append(f"- {row['key']}: {note}")
    return "\n".join(out) + "\n"


def cpu_description() -> tuple[str, list[str]]:
    return cpu_name(), cpu_flags(("avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16"))


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from faster_whisper.feature_extractor import FeatureExtractor

    from amanuensis_npu.onnx.export import export_encoder

    all_windows = speech_windows(args.data)
    if not 1 <= args.windows <= len(all_windows):
        raise SystemExit(f"npu_numerics: --windows must be 1..{len(all_windows)}")
    windows = all_windows[: args.windows]
    extractor = FeatureExtractor(feature_size=80)
    mels = [first_mel(w.audio, extractor) for w in windows]
    # Calibration for quantized rows: windows that are not measured (all, if none is left).
    calib_windows = all_windows[args.windows :][:2] or all_windows[:2]
    calib = [first_mel(w.audio, extractor) for w in calib_windows]
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    exported: list[Path] = []

    def onnx_path() -> Path:
        """Our export, made on first use: torch rows need none."""
        if not exported:
            exported.append(export_encoder("base", batch=1, out=work))
            log.info("export: %s", exported[0])
        return exported[0]

    routes = make_routes(args.routes, args.quark_venv)
    model = decoder_model(args.threads)
    rows: list[dict[str, Any]] = []
    reference = None
    for route in routes:
        log.info("measuring %s (%s %s)", route.key, route.route, route.precision)
        row = measure_route(route, windows, mels, calib, reference, model, onnx_path, args)
        rows.append(row)
        if route.key == "reference":
            if row["status"] != "measured":
                raise SystemExit(f"npu_numerics: the reference row failed: {row.get('error')}")
            reference = row
        if args.partial:
            _write(args, _result(args, windows, calib_windows, rows))
    result = _result(args, windows, calib_windows, rows)
    _write(args, result)
    return result


def _result(args: argparse.Namespace, windows: list[Window], calib_windows: list[Window],
            rows: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    cpu, flags = cpu_description()
    clean = [{k: v for k, v in r.items() if k != "outputs"} for r in rows]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpu_flags": flags,
        "threads": args.threads,
        "command": "python benchmarks/npu_numerics.py " + " ".join(args.argv),
        "windows": [w.name for w in windows],
        "calibration_windows": [w.name for w in calib_windows],
        "settings": {
            "beam_size": args.beam_size,
            "temperature": 0.0,
            "condition_on_previous_text": False,
            "language": "en",
            "without_timestamps": True,
            "decoder_compute_type": "float32",
        },
        "rows": clean,
    }


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    (args.out / "npu_numerics.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "npu_numerics.md").write_text(markdown_report(result))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--routes",
        default=",".join(ROUTES),
        help=f"rows besides the reference, comma-separated (default: {','.join(ROUTES)})",
    )
    p.add_argument("--windows", type=int, default=2,
                   help="30 s windows every row measures (default 2; emulated NPUs take minutes "
                   "per window)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--data", type=Path, default=SPEECH)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quark-venv", type=Path, default=DEFAULT_QUARK_VENV,
                   help="venv for amd-quark (made on first use; it pins onnx<=1.22)")  # fmt: skip
    p.add_argument("--partial", action="store_true",
                   help="rewrite the JSON and table after every row (for long runs)")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    raw = sys.argv[1:] if argv is None else argv
    args = p.parse_args(raw)
    args.argv = raw
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    log.setLevel(logging.INFO)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    result = run(args)
    print(markdown_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
