"""A transcription as each `response_format` and as server-sent events.

Shapes are OpenAI's (openai-python `types/audio/`: `transcription.py`,
`transcription_verbose.py`, `transcription_segment.py`, `transcription_word.py`,
`translation_verbose.py`, `transcription_text_delta_event.py`,
`transcription_text_done_event.py`). srt and vtt are WhisperX's writers' output, the
files `amanuensis-npu transcribe` writes, with the segments' own times.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from typing import Any

from ..api import TranscriptionResult, whisperx_words

# The writers' defaults of `amanuensis-npu transcribe` (no highlighting, no line limits).
WRITER_OPTIONS = {"highlight_words": False, "max_line_width": None, "max_line_count": None}
TEXT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def usage(result: TranscriptionResult) -> dict[str, Any]:
    """Billing-style usage as OpenAI reports it for Whisper: audio seconds, rounded up."""
    return {"type": "duration", "seconds": math.ceil(float(result.info.duration))}


def language_name(code: str | None) -> str:
    """OpenAI says "english", not "en", in verbose responses."""
    from whisperx.utils import LANGUAGES

    return LANGUAGES.get(code or "", code or "")


def subtitles(result: TranscriptionResult, ext: str) -> str:
    """srt or vtt exactly as the command's writer makes the file."""
    from whisperx.utils import get_writer

    buffer = io.StringIO()
    get_writer(ext, ".").write_result(result.to_dict(), file=buffer, options=WRITER_OPTIONS)
    return buffer.getvalue()


def verbose(
    result: TranscriptionResult, task: str, granularities: Iterable[str]
) -> dict[str, Any]:
    """`verbose_json`: segments unless only words were asked for, words when asked for."""
    wanted = set(granularities) or {"segment"}
    body: dict[str, Any] = {
        "language": "english" if task == "translate" else language_name(result.info.language),
        "duration": float(result.info.duration),
        "text": result.text,
    }
    if "segment" in wanted:
        body["segments"] = [
            {
                "id": i,
                "seek": int(s.seek),
                "start": float(s.start),
                "end": float(s.end),
                "text": s.text,
                "tokens": [int(t) for t in s.tokens],
                "temperature": float(s.temperature or 0.0),
                "avg_logprob": float(s.avg_logprob),
                "compression_ratio": float(s.compression_ratio),
                "no_speech_prob": float(s.no_speech_prob),
            }
            for i, s in enumerate(result.segments)
        ]
    if "word" in wanted and task == "transcribe":
        body["words"] = [
            {"word": w["word"], "start": w["start"], "end": w["end"]}
            for s in result.segments
            for w in whisperx_words(s.words or [], result.info.language)
        ]
    if task == "transcribe":  # OpenAI's translation responses carry no usage
        body["usage"] = usage(result)
    return body


def render(
    result: TranscriptionResult, response_format: str, task: str, granularities: Iterable[str]
) -> tuple[str, str]:
    """(body, media type) of a finished transcription."""
    if response_format == "json":
        body: dict[str, Any] = {"text": result.text}
        if task == "transcribe":  # CreateTranslationResponseJson is {"text"} only
            body["usage"] = usage(result)
        return json.dumps(body), "application/json"
    if response_format == "verbose_json":
        return json.dumps(verbose(result, task, granularities)), "application/json"
    if response_format == "text":
        return result.text + "\n", TEXT_TYPES["text"]
    return subtitles(result, response_format), TEXT_TYPES[response_format]


class Deltas:
    """Segment texts as `transcript.text.delta` pieces whose concatenation is the final text.

    The final text is the segments' texts joined and stripped, so the first piece loses its
    leading space and each piece's trailing space waits for the next piece: a trailing
    space at the very end is never sent.
    """

    def __init__(self) -> None:
        self.sent = False
        self.pending = ""

    def __call__(self, text: str) -> str:
        if not self.sent:
            text = text.lstrip()
        body = text.rstrip()
        if not body:
            if self.sent:
                self.pending += text
            return ""
        delta = (self.pending if self.sent else "") + body
        self.pending = text[len(body):]
        self.sent = True
        return delta


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"


def delta_event(delta: str) -> str:
    return sse({"type": "transcript.text.delta", "delta": delta})


def done_event(result: TranscriptionResult) -> str:
    return sse({"type": "transcript.text.done", "text": result.text})


def error_event(body: dict[str, Any]) -> str:
    """A failure after the stream began (its status line is already sent)."""
    return sse({"type": "error", **body})
