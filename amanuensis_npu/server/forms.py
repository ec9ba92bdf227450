"""A multipart request as OpenAI's clients send it, checked field by field.

Field names and values are those of the `openai` client (openai-python,
`types/audio/transcription_create_params.py`, `translation_create_params.py`): the
temperature arrives as a string, repeated fields carry brackets
(`timestamp_granularities[]`, `lib/_qs.py`), `stream` is "true"/"false". Anything else is
refused with a 400 that names it, rather than ignored: a client asking for diarization
or token logprobs must learn that it does not get it. The published schema is
openai/openai-openapi's `CreateTranscriptionRequest` (a copy with its source in
tests/data/openai/); tests/test_server_schema.py checks each field family against it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.datastructures import FormData, UploadFile

from ..api import AudioError, load_audio
from .errors import APIError

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MODEL_ALIASES = ("whisper-1",)  # what OpenAI's clients send unless told otherwise

TRANSCRIPTION_FIELDS = {
    "file", "model", "language", "prompt", "response_format", "temperature",
    "timestamp_granularities[]", "timestamp_granularities", "stream", "chunking_strategy",
    "chunking_strategy[type]", "chunking_strategy[threshold]",
    "chunking_strategy[prefix_padding_ms]", "chunking_strategy[silence_duration_ms]",
}
TRANSLATION_FIELDS = {"file", "model", "prompt", "response_format", "temperature", "language"}
NOT_SUPPORTED = {
    "include[]": "include[] (token logprobs) is not supported",
    "languages[]": "languages[] (several candidate languages) is not supported: "
    "send one 'language'",
    "keywords[]": "keywords[] is not supported: put the words in 'prompt'",
    "known_speaker_names[]": "speaker names need diarization, which this server does not do",
    "known_speaker_references[]": "speaker references need diarization, "
    "which this server does not do",
}


@dataclass
class AudioRequest:
    """One transcription or translation request, checked, with its decoded audio."""

    task: str  # "transcribe" or "translate"
    filename: str
    samples: np.ndarray
    response_format: str = "json"
    granularities: tuple[str, ...] = ()
    stream: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # faster-whisper keywords


def _unknown(form: FormData, allowed: set[str]) -> None:
    for key in form.keys():
        base = key.split("[", 1)[0]
        if key in allowed:
            continue
        reason = NOT_SUPPORTED.get(key) or next(
            (why for name, why in NOT_SUPPORTED.items() if name.split("[", 1)[0] == base), None
        )
        raise APIError(400, reason or f"unknown field '{key}'", param=key,
                       code="unsupported_parameter")


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise APIError(400, f"'{name}' must be a text field, not a file", param=name)
    value = value.strip()
    return value or None


def check_model(value: str | None, model_id: str) -> None:
    if value is not None and value not in (model_id, *MODEL_ALIASES):
        raise APIError(
            400, f"unknown model '{value}': this server has '{model_id}' (also called "
            f"{', '.join(repr(a) for a in MODEL_ALIASES)})", param="model",
            code="model_not_found",
        )


def _language(value: str, supported: list[str]) -> str:
    code = value.lower()
    if code in supported:
        return code
    try:
        from whisperx.utils import TO_LANGUAGE_CODE  # names as OpenAI's API also takes them

        if TO_LANGUAGE_CODE.get(code) in supported:
            return TO_LANGUAGE_CODE[code]
    except ImportError:
        pass
    raise APIError(400, f"unknown language '{value}': use an ISO-639-1 code such as 'en'",
                   param="language", code="unsupported_language")


VAD_FIELDS = {  # OpenAI's VadConfig name -> faster-whisper's VadOptions name, type
    "threshold": ("threshold", float),
    "prefix_padding_ms": ("speech_pad_ms", int),
    "silence_duration_ms": ("min_silence_duration_ms", int),
}


def _chunking(form: FormData) -> dict[str, Any]:
    """`chunking_strategy` as faster-whisper's VAD: "auto" is its VAD with its defaults;
    `server_vad` (sent by the openai client as `chunking_strategy[type]` and friends) sets
    the VAD's threshold, padding and silence. Unset: no VAD, the server's own setting."""
    strategy = _text(form, "chunking_strategy")
    kind = _text(form, "chunking_strategy[type]")
    if strategy is None and kind is None:
        if any(k.startswith("chunking_strategy[") for k in form.keys()):
            raise APIError(400, "chunking_strategy[type] is required (server_vad)",
                           param="chunking_strategy[type]")
        return {}
    if strategy is not None:
        if strategy != "auto":
            raise APIError(400, f"chunking_strategy must be 'auto' or a server_vad object, "
                           f"got '{strategy}'", param="chunking_strategy")
        return {"vad_filter": True}
    if kind != "server_vad":
        raise APIError(400, f"chunking_strategy[type] must be 'server_vad', got '{kind}'",
                       param="chunking_strategy[type]")
    vad: dict[str, Any] = {}
    for name, (ours, kind_of) in VAD_FIELDS.items():
        key = f"chunking_strategy[{name}]"
        value = _text(form, key)
        if value is None:
            continue
        try:
            vad[ours] = kind_of(value)
        except ValueError:
            raise APIError(400, f"{key} must be a {kind_of.__name__} number, got '{value}'",
                           param=key) from None
    return {"vad_filter": True, "vad_parameters": vad}


async def parse(
    form: FormData, task: str, model_id: str, languages: list[str]
) -> AudioRequest:
    """Check every field, read and decode the file; APIError(400) names the first problem."""
    _unknown(form, TRANSCRIPTION_FIELDS if task == "transcribe" else TRANSLATION_FIELDS)
    check_model(_text(form, "model"), model_id)
    response_format = _text(form, "response_format") or "json"
    if response_format == "diarized_json":
        raise APIError(400, "response_format 'diarized_json' needs diarization, which this "
                       "server does not do; verbose_json has the segments", param="response_format",
                       code="unsupported_parameter")
    if response_format not in RESPONSE_FORMATS:
        raise APIError(
            400, f"unknown response_format '{response_format}': use one of "
            f"{', '.join(RESPONSE_FORMATS)}", param="response_format",
        )
    overrides: dict[str, Any] = {"task": task}
    language = _text(form, "language")
    if language is not None:
        overrides["language"] = _language(language, languages)
    prompt = _text(form, "prompt")
    if prompt is not None:
        overrides["initial_prompt"] = prompt
    temperature = _text(form, "temperature")
    if temperature is not None:
        try:
            value = float(temperature)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise APIError(400, f"temperature must be a number from 0 to 1, got '{temperature}'",
                           param="temperature")
        overrides["temperature"] = [value]  # as `--temperature T` alone: no fallback
    granularities = tuple(
        g.strip() for key in ("timestamp_granularities[]", "timestamp_granularities")
        for g in form.getlist(key) if isinstance(g, str)
    )
    for g in granularities:
        if g not in GRANULARITIES:
            raise APIError(400, f"unknown timestamp granularity '{g}': use segment or word",
                           param="timestamp_granularities[]")
    if "word" in granularities:
        overrides["word_timestamps"] = True
    overrides.update(_chunking(form))
    stream_text = (_text(form, "stream") or "false").lower()
    if stream_text not in ("true", "false"):
        raise APIError(400, f"stream must be true or false, got '{stream_text}'", param="stream")
    upload = form.get("file")
    if upload is None:
        raise APIError(400, "no file: send the audio as the multipart field 'file'",
                       param="file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "'file' must be a file upload (multipart), not a text field",
                       param="file")
    name = upload.filename or "upload"
    data = await upload.read()
    if not data:
        raise APIError(400, f"{name}: the file is empty", param="file", code="empty_file")
    from starlette.concurrency import run_in_threadpool

    try:  # by content: PyAV probes the bytes, the name's extension plays no part
        samples = await run_in_threadpool(load_audio, io.BytesIO(data), name)
    except AudioError as exc:
        raise APIError(400, str(exc), param="file", code="invalid_audio") from None
    return AudioRequest(
        task=task,
        filename=name,
        samples=samples,
        response_format=response_format,
        granularities=granularities,
        stream=stream_text == "true",
        overrides=overrides,
    )
