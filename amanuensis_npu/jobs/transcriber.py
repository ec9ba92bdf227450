"""One model, many files: the unit of work of a job, the same in this process and in a Ray actor.

The model is loaded once, when the Transcriber is made, and serves every file after it;
what comes back is plain data (the writers' result dict, the segments to print, what ran)
so it crosses a process boundary as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

ROUTE_KEYS = ("backend", "encoder", "encoder_device", "encoder_precision", "encoder_reason")


@dataclass
class FileResult:
    """What transcribing one file produced, and what ran to produce it."""

    result: dict[str, Any]  # the whisper/whisperx result dict the writers take
    segments: list[tuple[float, float, str]]
    duration: float
    backend: str  # attention backend that ran ("npu", "emulator", "cpu"; "none": whole encoder)
    encoder: str  # encoder route ("torch" unless another was chosen)
    device: str | None  # the NPU device's name when one ran, e.g. "NPU Phoenix (simulated)"
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of this transcription
    # api.route_fields: encoder, its device, precision and why it was picked
    route: dict[str, str] = field(default_factory=dict)


class Transcriber:
    """A loaded model and the decoding options of a job.

    `model_options` are `api.get_model`'s keywords (model, device, attention,
    compute_type, cpu_threads, and whatever routes are added there); `decode_options`
    are faster-whisper's `transcribe` keywords, plus WhisperX's `suppress_numerals`.
    """

    def __init__(
        self,
        model_options: dict[str, Any],
        decode_options: dict[str, Any],
        batch_size: int | None = None,
    ) -> None:
        from ..api import get_model

        self.model_options = dict(model_options)
        self.decode_options = dict(decode_options)
        self.batch_size = batch_size
        self.model = get_model(**self.model_options)
        if self.decode_options.pop("suppress_numerals", False):
            self.decode_options["suppress_tokens"] = [
                *self.decode_options.get("suppress_tokens", [-1]),
                *self._numeral_tokens(),
            ]

    def _numeral_tokens(self) -> list[int]:
        """Tokens with digits or currency signs, found the way WhisperX finds them."""
        from faster_whisper.tokenizer import Tokenizer
        from whisperx.asr import find_numeral_symbol_tokens

        tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task=self.decode_options.get("task", "transcribe"),
            language=self.decode_options.get("language") or "en",
        )
        return find_numeral_symbol_tokens(tokenizer)

    @staticmethod
    def load(source: str | BinaryIO, name: str) -> np.ndarray:
        """Decode a file (or its bytes) to 16 kHz samples; errors name it `name`."""
        from ..api import load_audio

        return load_audio(source, name=name)

    def __call__(
        self, audio: np.ndarray, progress: Callable[[float, float], None] | None = None
    ) -> FileResult:
        from ..api import transcribe

        start = time.perf_counter()
        result = transcribe(
            audio,
            **self.model_options,
            batch_size=self.batch_size,
            progress=progress,
            **self.decode_options,
        )
        backend = self.model.attention_backend
        state = backend.state() if hasattr(backend, "state") else {}
        return FileResult(
            result=result.to_dict(),
            segments=[(s.start, s.end, s.text.strip()) for s in result.segments],
            duration=float(result.info.duration),
            backend=result.backend,
            encoder=result.encoder,
            device=state.get("device_name"),
            stats=result.stats,
            seconds=time.perf_counter() - start,
            route={k: getattr(result, k) for k in ROUTE_KEYS},
        )
