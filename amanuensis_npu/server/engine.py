"""The one loaded model and one transcription on it, a segment at a time.

faster-whisper yields segments lazily: the work for the next window is done when the
loop asks for it. So a request's deadline and its client's disconnect are checked
between segments (a running CTranslate2 or NPU call cannot be interrupted), and a
streaming request gets each segment's text as soon as it exists. Decoding options are
the `transcribe` command's defaults with the request's fields on top, and the model is
the one `jobs.Transcriber` loads for the command, so the text is the command's text.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..api import NO_BACKEND, TranscriptionResult, route_fields, transcribe
from ..attention import collect_stats
from ..core.routes import collect_encoder_stats
from ..jobs.transcriber import Transcriber


class Cancelled(Exception):
    """The transcription stopped between segments: its deadline passed or its client left."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "timeout" or "disconnected"


def model_id(model: str | os.PathLike) -> str:
    """The name /v1/models lists for the loaded model: a name as the command was given it
    (`base`, `tiny.en`, `Systran/faster-whisper-small`: what a client would send back),
    a directory by its last part (its full path is nobody else's business)."""
    text = os.fspath(model)
    if not Path(text).expanduser().exists():
        return text
    return text.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or text


class Engine:
    """Loads the model once (`load`), then runs one transcription at a time (`run`)."""

    def __init__(
        self,
        model_options: dict[str, Any],
        decode_options: dict[str, Any],
        batch_size: int | None = None,
    ) -> None:
        self.model_options = dict(model_options)
        self.decode_options = dict(decode_options)
        self.batch_size = batch_size
        self.model_id = model_id(self.model_options.get("model", "base"))
        self.transcriber: Transcriber | None = None
        self.load_error: str | None = None
        self.loaded_at: float | None = None
        self._totals: Counter = Counter()
        self._reasons: Counter = Counter()
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.transcriber is not None

    def load(self) -> None:
        self.transcriber = Transcriber(self.model_options, self.decode_options, self.batch_size)
        self.loaded_at = time.time()

    def languages(self) -> list[str]:
        """The codes the model takes (Whisper's list while it is still loading)."""
        if self.transcriber is None:
            from whisperx.utils import LANGUAGES

            return list(LANGUAGES)
        return list(self.transcriber.model.supported_languages)

    def options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """faster-whisper's keywords: the command's defaults, then the request's fields."""
        assert self.transcriber is not None
        return {**self.transcriber.decode_options, **overrides}

    def run(
        self,
        samples: np.ndarray,
        overrides: dict[str, Any],
        on_segment: Callable[[Any], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> TranscriptionResult:
        """Transcribe `samples`; `check()` runs before each segment and may raise Cancelled."""
        assert self.transcriber is not None, "the model is not loaded"
        options = self.options(overrides)
        model = self.transcriber.model
        if check is not None:
            check()
        if samples.size == 0:  # the library's own answer for no audio: an empty transcript
            result = transcribe(samples, **self.model_options, **options)
            self._count(result)
            return result
        with collect_stats() as stats, collect_encoder_stats() as encoder_stats:
            if self.batch_size:
                from faster_whisper import BatchedInferencePipeline

                segments_iter, info = BatchedInferencePipeline(model).transcribe(
                    samples, batch_size=self.batch_size, **options
                )
            else:
                segments_iter, info = model.transcribe(samples, **options)
            segments = []
            while True:
                if check is not None:
                    check()
                segment = next(segments_iter, None)
                if segment is None:
                    break
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        result = TranscriptionResult(
            text="".join(s.text for s in segments).strip(),
            segments=segments,
            info=info,
            stats={**stats.snapshot(), **encoder_stats.snapshot()},
            **route_fields(model, encoder_stats.main_route()),
        )
        self._count(result)
        return result

    def _count(self, result: TranscriptionResult) -> None:
        stats = result.stats
        with self._lock:
            self._totals["transcriptions"] += 1
            self._totals["audio_seconds"] += float(result.info.duration)
            for key in ("attention_calls", "fallbacks", "dispatches", "encoder_calls",
                        "encoder_fallbacks"):
                self._totals[key] += int(stats.get(key, 0))
            self._reasons.update(stats.get("fallback_reasons", {}))
            self._reasons.update(stats.get("encoder_fallback_reasons", {}))

    def route(self) -> dict[str, Any]:
        """What runs (encoder, attention, NPU device or why not) and what fell back so far."""
        from ..routing import resolve_auto

        assert self.transcriber is not None
        model = self.transcriber.model
        backend = model.attention_backend
        state = backend.state() if hasattr(backend, "state") else {}
        if state.get("device_name"):  # a session is open on the device
            npu = state["device_name"]
        elif state and not (state.get("disabled") or state.get("unavailable")):
            npu = f"usable, not opened yet: {backend.route}"
        else:
            why = state.get("disabled") or state.get("unavailable")
            if not why:
                device = self.model_options.get("device", "npu")
                why = resolve_auto(device, self.model_options.get("attention", "auto"))[1]
            npu = f"not used ({why})"
        with self._lock:
            totals = dict(self._totals)
            reasons = dict(self._reasons)
        fields = route_fields(model, None)
        out: dict[str, Any] = {
            "model": self.model_id,
            "encoder": fields["encoder"],
            "encoder_device": fields["encoder_device"],
            "encoder_precision": fields["encoder_precision"],
            "encoder_reason": fields["encoder_reason"],
            "transcriptions": totals.get("transcriptions", 0),
            "audio_seconds": round(totals.get("audio_seconds", 0.0), 3),
            "encoder_calls": totals.get("encoder_calls", 0),
            "encoder_fallbacks": totals.get("encoder_fallbacks", 0),
            "fallback_reasons": reasons,
        }
        if fields["backend"] == NO_BACKEND:  # the whole encoder ran: no attention to report
            out["attention"] = NO_BACKEND
            return out
        out.update({
            "attention": getattr(backend, "route", None) or backend.name,
            "npu": npu,
            "attention_calls": totals.get("attention_calls", 0),
            "attention_fallbacks": totals.get("fallbacks", 0),
            "npu_dispatches": totals.get("dispatches", 0),
        })
        return out
