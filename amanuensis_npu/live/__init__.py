"""Live transcription: a stream of audio in, words out as soon as they are stable.

`StreamingTranscriber` (in `.streaming`) is the policy; `amanuensis-npu live` (`.command`)
feeds it from a microphone, a file or stdin. Both use only faster-whisper's public
`WhisperModel.transcribe`, so any model (stock or `amanuensis_npu.WhisperModel`) streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["StreamingTranscriber", "Update", "Word"]

if TYPE_CHECKING:  # pragma: no cover
    from .streaming import StreamingTranscriber, Update, Word


def __getattr__(name: str) -> Any:
    # Lazy: `amanuensis-npu --help` must not import numpy's and faster-whisper's world.
    if name in __all__:
        from . import streaming

        return getattr(streaming, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
