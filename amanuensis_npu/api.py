"""One-call transcription: `amanuensis_npu.transcribe(audio)`.

Models are cached per (model, device, compute type, attention, threads) so
that a loop over files, or several threads, pays the model load once and
shares one NPU device.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from .attention import AttentionBackend, collect_stats
from .core.routes import collect_encoder_stats
from .messages import one_line

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """The audio input cannot be read or decoded."""


@dataclass
class TranscriptionResult:
    """What one transcription produced and what ran to produce it."""

    text: str
    segments: list[Any]
    info: Any
    # The attention backend that ran ("npu", "emulator", "cpu"), "none" when the whole
    # encoder ran on ONNX Runtime or OpenVINO (no attention backend is called then).
    backend: str
    stats: dict[str, Any] = field(default_factory=dict)
    # The encoder route that encoded most windows: "torch", "onnx:CPUExecutionProvider", ...
    encoder: str = "torch"
    encoder_device: str = "CPU"  # the ONNX provider / OpenVINO device / "CPU" that ran it
    encoder_precision: str = "f32"
    encoder_reason: str = ""  # why the route was picked (auto's reason, or the explicit choice)

    def route(self) -> dict[str, Any]:
        """What ran, as the server and `info` report it: the attention fields only when
        an attention backend ran."""
        out: dict[str, Any] = {
            "encoder": self.encoder,
            "encoder_device": self.encoder_device,
            "encoder_precision": self.encoder_precision,
            "encoder_reason": self.encoder_reason,
            "attention": self.backend,
        }
        if self.backend != NO_BACKEND:
            out["attention_calls"] = int(self.stats.get("attention_calls", 0))
            out["attention_fallbacks"] = int(self.stats.get("fallbacks", 0))
        if self.stats.get("encoder_fallbacks"):
            out["encoder_fallbacks"] = int(self.stats["encoder_fallbacks"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The result dict whisperx's writers take, shaped as stock whisperx shapes it.

        whisperx's subtitle writers join word entries with one space (no space for
        the languages in `LANGUAGES_WITHOUT_SPACES`, whisperx/utils.py), because its
        aligner makes one entry per space-separated word of the segment text, without
        the space (whisperx/alignment.py, `align`). faster-whisper's words instead
        carry their leading space and split "ill-disposed" into " ill" + "-disposed".
        So pieces are regrouped into whitespace-delimited words, and times and scores
        are rounded to 3 decimals as whisperx rounds them.
        """
        language = self.info.language
        segments = []
        word_segments: list[dict[str, Any]] = []
        for s in self.segments:
            seg: dict[str, Any] = {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
            }
            if s.words is not None:
                seg["words"] = whisperx_words(s.words, language)
                word_segments.extend(seg["words"])
            segments.append(seg)
        result: dict[str, Any] = {"text": self.text, "segments": segments, "language": language}
        if any("words" in seg for seg in segments):
            result["word_segments"] = word_segments
        return result


# whisperx/utils.py and whisperx/alignment.py (3.8.6): words are not space-separated.
LANGUAGES_WITHOUT_SPACES = ("ja", "zh")


def whisperx_words(words: Sequence[Any], language: str | None) -> list[dict[str, Any]]:
    """faster-whisper `Word`s as whisperx word entries: one per whitespace-delimited word.

    A piece that does not begin with whitespace continues the previous word
    ("-disposed" after " ill"). The score is the mean over the word's characters
    of their piece's probability, as whisperx averages its per-character scores.
    """
    if language in LANGUAGES_WITHOUT_SPACES:
        groups = [[w] for w in words if w.word.strip()]
    else:
        groups: list[list[Any]] = []
        for w in words:
            if not w.word.strip():
                continue
            if groups and not w.word[:1].isspace():
                groups[-1].append(w)
            else:
                groups.append([w])
    out = []
    for group in groups:
        chars = sum(len(w.word.strip()) for w in group)
        score = sum(w.probability * len(w.word.strip()) for w in group) / chars
        out.append(
            {
                "word": "".join(w.word for w in group).strip(),
                "start": round(group[0].start, 3),
                "end": round(max(w.end for w in group), 3),
                "score": round(score, 3),
            }
        )
    return out


NO_BACKEND = "none"  # `backend` when the whole encoder ran outside our torch encoder


def route_fields(model: Any, main_route: str | None) -> dict[str, str]:
    """The route fields of a result, from the model and the route that encoded most windows.

    One builder for `transcribe()`, the server and jobs, so each says the same: a whole-
    encoder route (ONNX Runtime, OpenVINO) has no attention backend, so `backend` is
    "none" unless its calls fell back to our torch encoder for most windows.
    """
    route = model.encoder_route
    name = main_route or route.name
    whole = route.whole_encoder and not name.startswith("torch")
    return {
        "backend": NO_BACKEND if whole else model.attention_backend.name,
        "encoder": name,
        "encoder_device": route.device if whole else "CPU",
        "encoder_precision": route.precision if whole else "f32",
        "encoder_reason": route.reason,
    }


def route_line(
    routes: Sequence[str], reasons: Sequence[str], attention_calls: int | None, fallbacks: int,
    encoder_fallbacks: int = 0,
) -> str:
    """The one closing line about what ran: `routes` from `route_phrase`, the attention
    counter only when an attention backend ran (`attention_calls` is None otherwise)."""
    text = "route: " + (" | ".join(routes) if routes else "none")
    if attention_calls is not None:
        text += f"; {fallbacks} of {attention_calls} attention calls fell back to the CPU"
    if encoder_fallbacks:
        text += f"; {encoder_fallbacks} encoder calls fell back to our torch encoder on the CPU"
    if reasons:
        text += "; why: " + " | ".join(dict.fromkeys(brief_reason(r) for r in reasons if r))
    return text


def brief_reason(reason: str) -> str:
    """A route's reason for the closing line: its deciding clause only (the last one), since
    the whole chain of what was tried is long and already in `info` and `encoder_reason`."""
    auto = reason.startswith("auto: ")
    last = reason.removeprefix("auto: ").rsplit("; ", 1)[-1]
    return f"auto, {last}" if auto else last


def route_phrase(fields: dict[str, str], attention_device: str | None = None) -> str:
    """"encoder openvino:CPU:bf16 on CPU in bf16" or "encoder torch on CPU in f32,
    attention npu on <device>" for one result's route fields."""
    text = f"encoder {fields['encoder']} on {fields['encoder_device']} in " \
        f"{fields['encoder_precision']}"
    if fields["backend"] != NO_BACKEND:
        attention = fields["backend"]
        if attention_device:
            attention += f" on {attention_device}"
        text += f", attention {attention}"
    return text


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def get_model(
    model: str | os.PathLike = "base",
    device: str = "npu",
    attention: str | AttentionBackend = "auto",
    compute_type: str = "default",
    cpu_threads: int = 0,
    encoder: str = "auto",
    onnx_providers: list | None = None,
) -> Any:
    """A cached `amanuensis_npu.WhisperModel` for these settings."""
    from .integrations.faster_whisper import WhisperModel

    providers_key = repr(onnx_providers)  # lists and option dicts are not hashable
    key = (os.fspath(model), device, attention, compute_type, cpu_threads, encoder, providers_key)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = WhisperModel(
                os.fspath(model),
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                attention=attention,
                encoder=encoder,
                onnx_providers=onnx_providers,
            )
        return _MODELS[key]


def load_audio(
    audio: str | os.PathLike | BinaryIO | np.ndarray, name: str | None = None
) -> np.ndarray:
    """16 kHz mono float32 samples, with a one-line error naming the input if it is unreadable.

    `name` is what errors call a stream (a file's bytes sent to another process, say).
    """
    if isinstance(audio, np.ndarray):
        return np.ascontiguousarray(audio, dtype=np.float32)
    from faster_whisper import decode_audio

    is_path = isinstance(audio, (str, os.PathLike))
    if name is None:
        name = os.fspath(audio) if is_path else "<audio stream>"
    if is_path:
        if not os.path.exists(audio):
            raise AudioError(f"{name}: no such file")
        if os.path.isdir(audio):
            raise AudioError(f"{name}: is a directory, not an audio file")
    try:
        return decode_audio(audio, sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many types for bad containers
        raise AudioError(f"{name}: cannot decode audio ({one_line(exc)})") from None


def transcribe(
    audio: str | os.PathLike | BinaryIO | np.ndarray,
    model: str | os.PathLike = "base",
    device: str = "npu",
    attention: str | AttentionBackend = "auto",
    compute_type: str = "default",
    batch_size: int | None = None,
    cpu_threads: int = 0,
    progress: Callable[[float, float], None] | None = None,
    encoder: str = "auto",
    onnx_providers: list | None = None,
    **transcribe_kwargs: Any,
) -> TranscriptionResult:
    """Transcribe a file (or 16 kHz samples) with Whisper, encoder attention on `attention`.

    `encoder` ("auto", "torch", "onnx", "openvino[:DEVICE[:PRECISION]]") and
    `onnx_providers` pick the encoder route,
    as in `WhisperModel`. `transcribe_kwargs` are faster-whisper's `transcribe`
    options (language, beam_size, word_timestamps, vad_filter, temperature, ...).
    With `batch_size`, faster-whisper's BatchedInferencePipeline is used.
    `progress(seconds_done, seconds_total)` is called after each segment.
    """
    samples = load_audio(audio)
    whisper = get_model(
        model, device, attention, compute_type, cpu_threads, encoder, onnx_providers
    )
    with collect_stats() as stats, collect_encoder_stats() as encoder_stats:
        if samples.size == 0:
            segments_iter, info = _empty(transcribe_kwargs)
        elif batch_size:
            from faster_whisper import BatchedInferencePipeline

            pipeline = BatchedInferencePipeline(whisper)
            segments_iter, info = pipeline.transcribe(
                samples, batch_size=batch_size, **transcribe_kwargs
            )
        else:
            segments_iter, info = whisper.transcribe(samples, **transcribe_kwargs)
        segments = []
        for segment in segments_iter:
            segments.append(segment)
            if progress is not None:
                progress(min(segment.end, info.duration), info.duration)
    text = "".join(s.text for s in segments).strip()
    return TranscriptionResult(
        text=text,
        segments=segments,
        info=info,
        stats={**stats.snapshot(), **encoder_stats.snapshot()},
        **route_fields(whisper, encoder_stats.main_route()),
    )


def _empty(options: dict[str, Any]) -> tuple[list, Any]:
    """faster-whisper cannot transcribe zero samples; an empty transcript is the right answer."""
    from faster_whisper.transcribe import TranscriptionInfo

    info = TranscriptionInfo(
        language=options.get("language") or "en",
        language_probability=1.0,
        duration=0.0,
        duration_after_vad=0.0,
        all_language_probs=None,
        transcription_options=None,
        vad_options=None,
    )
    return [], info
