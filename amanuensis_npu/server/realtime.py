"""OpenAI's Realtime API for transcription: `GET /v1/realtime`, a WebSocket.

Why it is built this way:
- The model is shared. Each transcription step of a session (the streaming transcriber's
  `process` or `finish`) is a job of the server's scheduler, run by its one worker, so a
  session waits its turn like any request, and an open session holds one place of
  `--max-queue` (a client that vanishes gives it back when its socket closes).
- The event loop never transcribes: it decodes, resamples (libav's resampler, which keeps
  its filter state across chunks) and runs the speech detector (a few ms per 100 ms of
  audio), then hands the audio to the session's own task, which runs one step at a time
  (the transcriber is not thread-safe).
- Turns are cut by faster-whisper's Silero model with the session's threshold, prefix
  padding and silence duration; each turn is one item, its words sent as deltas as the
  streaming transcriber commits them, then `completed` with the whole transcript.
- Every bad event gets one `error` event and the session goes on, as OpenAI's does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..messages import one_line
from .engine import Engine
from .errors import TYPES, APIError
from .forms import _language, check_model
from .scheduler import Job, Scheduler

logger = logging.getLogger("amanuensis_npu.server")

SAMPLE_RATE = 16000  # what Whisper and the speech detector take
RATES = (24000, 16000)  # OpenAI's PCM rate, and Whisper's own (as vLLM takes it)
WINDOW = 512  # the speech detector's window at 16 kHz (32 ms)
MIN_COMMIT_MS = 100  # OpenAI refuses a commit of less audio
MAX_BUFFER_SAMPLES = 10 * 60 * SAMPLE_RATE  # uncommitted audio a client-committed session holds
KEY_PROTOCOL = "openai-insecure-api-key."
PARTIAL_EVENT = "amanuensis.input_audio_transcription.partial"  # opt-in: ?partial=true
SESSION_OBJECT = "realtime.transcription_session"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class EventError(Exception):
    """A client event that cannot be done: answered with one `error` event."""

    def __init__(self, message: str, code: str, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.kind = message, code, param, kind


# ------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI's server_vad; its defaults are OpenAI's documented ones."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def public(self) -> dict[str, Any]:
        return {"type": "server_vad", "threshold": self.threshold,
                "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms}


@dataclass(frozen=True)
class Config:
    rate: int = 24000
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)

    def transcription(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.language:
            out["language"] = self.language
        if self.prompt:
            out["prompt"] = self.prompt
        return out


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventError(f"'{param}' must be an object", "invalid_type", param)
    return value


def _unknown(given: dict[str, Any], allowed: set[str], param: str) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise EventError(f"unknown parameter '{param}.{extra[0]}' for a transcription session",
                         "unknown_parameter", f"{param}.{extra[0]}")


def _rate(fmt: Any, param: str) -> int:
    fmt = _object(fmt, param)
    _unknown(fmt, {"type", "rate"}, param)
    kind = fmt.get("type", "audio/pcm")
    if kind != "audio/pcm":
        raise EventError(f"audio format '{kind}' is not supported: send 'audio/pcm' "
                         "(PCM16 little-endian mono) at 24000 or 16000 Hz",
                         "unsupported_audio_format", f"{param}.type")
    rate = fmt.get("rate", 24000)
    if rate not in RATES or isinstance(rate, bool):
        raise EventError(f"sample rate {rate!r} is not supported: use 24000 or 16000",
                         "unsupported_sample_rate", f"{param}.rate")
    return int(rate)


def _transcription(value: Any, param: str, config: Config, engine: Engine,
                   languages: list[str]) -> Config:
    if value is None:
        return config
    value = _object(value, param)
    _unknown(value, {"model", "language", "prompt"}, param)
    model = value.get("model", config.model)
    try:
        check_model(model, engine.model_id)
        language = value.get("language", config.language) or None
        if language is not None:
            language = _language(str(language), languages)
    except APIError as exc:
        raise EventError(exc.message, exc.code or "invalid_value",
                         f"{param}.{exc.param}") from None
    prompt = value.get("prompt", config.prompt)
    if prompt is not None and not isinstance(prompt, str):
        raise EventError(f"'{param}.prompt' must be a string", "invalid_type", f"{param}.prompt")
    return replace(config, model=model, language=language, prompt=prompt or None)


def _turn_detection(value: Any, param: str) -> TurnDetection | None:
    if value is None:
        return None
    value = _object(value, param)
    _unknown(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms",
                     "create_response", "interrupt_response", "idle_timeout_ms"}, param)
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise EventError(f"turn detection '{kind}' is not supported: use 'server_vad' or null",
                         "unsupported_turn_detection", f"{param}.type")
    out = TurnDetection()
    checks = {"threshold": (float, 0.0, 1.0), "prefix_padding_ms": (int, 0, 10_000),
              "silence_duration_ms": (int, 32, 10_000)}
    for name, (kind_, low, high) in checks.items():
        if value.get(name) is None:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not (
            low <= number <= high
        ) or (kind_ is int and number != int(number)):
            raise EventError(f"'{param}.{name}' must be a number from {low} to {high}",
                             "invalid_value", f"{param}.{name}")
        out = replace(out, **{name: kind_(number)})
    return out


def _no_extras(session: dict[str, Any], param: str) -> None:
    include = session.get("include")
    if include:
        raise EventError("'include' (logprobs) is not supported", "unsupported_parameter",
                         f"{param}.include")


def parse_ga(session: Any, config: Config, engine: Engine, languages: list[str]) -> Config:
    """`session.update` in the GA form: the whole change, or an EventError and no change."""
    session = _object(session, "session")
    _unknown(session, {"type", "audio", "include", "id", "object", "expires_at"}, "session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise EventError(f"session type '{kind}' is not supported: this server runs "
                         "'transcription' sessions only", "unsupported_session_type",
                         "session.type")
    _no_extras(session, "session")
    audio = _object(session.get("audio", {}), "session.audio")
    _unknown(audio, {"input"}, "session.audio")
    inp = _object(audio.get("input", {}), "session.audio.input")
    _unknown(inp, {"format", "transcription", "noise_reduction", "turn_detection"},
             "session.audio.input")
    if inp.get("noise_reduction") is not None:
        raise EventError("noise_reduction is not supported: send null",
                         "unsupported_parameter", "session.audio.input.noise_reduction")
    if "format" in inp:
        config = replace(config, rate=_rate(inp["format"], "session.audio.input.format"))
    config = _transcription(inp.get("transcription"), "session.audio.input.transcription",
                            config, engine, languages)
    if "turn_detection" in inp:
        config = replace(config, turn_detection=_turn_detection(
            inp["turn_detection"], "session.audio.input.turn_detection"))
    return config


def parse_beta(session: Any, config: Config, engine: Engine, languages: list[str]) -> Config:
    """`transcription_session.update`, the beta form (`input_audio_format: "pcm16"`)."""
    session = _object(session, "session")
    _unknown(session, {"input_audio_format", "input_audio_transcription", "turn_detection",
                       "input_audio_noise_reduction", "include", "modalities", "client_secret"},
             "session")
    _no_extras(session, "session")
    if session.get("input_audio_noise_reduction") is not None:
        raise EventError("input_audio_noise_reduction is not supported: send null",
                         "unsupported_parameter", "session.input_audio_noise_reduction")
    fmt = session.get("input_audio_format", "pcm16")
    if fmt != "pcm16":
        raise EventError(f"input_audio_format '{fmt}' is not supported: send 'pcm16' "
                         "(24 kHz PCM16 little-endian mono)", "unsupported_audio_format",
                         "session.input_audio_format")
    config = replace(config, rate=24000)
    config = _transcription(session.get("input_audio_transcription"),
                            "session.input_audio_transcription", config, engine, languages)
    if "turn_detection" in session:
        config = replace(config, turn_detection=_turn_detection(
            session["turn_detection"], "session.turn_detection"))
    return config


# ------------------------------------------------------------------------- audio


def decode_pcm16(audio: Any) -> np.ndarray:
    """The samples of an append's base64 PCM16 little-endian mono audio."""
    if not isinstance(audio, str):
        raise EventError("'audio' must be a base64 string of PCM16 audio", "invalid_type",
                         "audio")
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise EventError("'audio' is not valid base64", "invalid_base64", "audio") from None
    if len(raw) % 2:
        raise EventError(f"'audio' has {len(raw)} bytes: PCM16 samples are 2 bytes each",
                         "invalid_audio", "audio")
    return np.frombuffer(raw, dtype="<i2")


class Resampler:
    """PCM16 at the session's rate to float32 at 16 kHz; libav keeps the filter's state
    between chunks, so 100 ms appends resample as one stream would."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._av = None
        if rate != SAMPLE_RATE:
            import av

            self._av = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        if pcm.size == 0:
            return np.zeros(0, np.float32)
        if self._av is None:
            return pcm.astype(np.float32) / 32768.0
        import av

        frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._av.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


class SpeechDetector:
    """Silero's speech probability per 32 ms window (faster-whisper's model), turned into
    turn starts and stops with the session's threshold and silence duration; the lower
    threshold that keeps speech going is Silero's own (threshold - 0.15)."""

    def __init__(self, turn: TurnDetection) -> None:
        from faster_whisper.vad import get_vad_model

        self.model = get_vad_model()
        self.threshold = turn.threshold
        self.neg_threshold = max(turn.threshold - 0.15, 0.01)
        self.silence = turn.silence_duration_ms * SAMPLE_RATE // 1000
        self.pending = np.zeros(0, np.float32)
        self.previous = np.zeros(WINDOW, np.float32)  # context of the next window
        self.position = 0  # absolute sample index of pending[0]
        self.speaking = False
        self.silent_from: int | None = None

    def push(self, samples: np.ndarray) -> list[tuple[str, int]]:
        """("start" | "stop", absolute sample index) for each change in these samples."""
        self.pending = np.concatenate([self.pending, samples])
        count = self.pending.size // WINDOW
        if count == 0:
            return []
        windows = self.pending[: count * WINDOW]
        # the window before gives the first new one its context; its own output is dropped
        probs = np.asarray(self.model(np.concatenate([self.previous, windows]))).reshape(-1)
        probs = probs[1:]
        self.previous = windows[-WINDOW:].copy()
        self.pending = self.pending[count * WINDOW:]
        changes = []
        for i, p in enumerate(probs[:count]):
            start = self.position + i * WINDOW
            if not self.speaking:
                if p >= self.threshold:
                    self.speaking, self.silent_from = True, None
                    changes.append(("start", start))
                continue
            if p >= self.threshold:
                self.silent_from = None
            elif p < self.neg_threshold and self.silent_from is None:
                self.silent_from = start
            if self.silent_from is not None and start + WINDOW - self.silent_from >= self.silence:
                self.speaking, self.silent_from = False, None
                changes.append(("stop", start + WINDOW))
        self.position += count * WINDOW
        return changes


# ------------------------------------------------------------------------- a session


class Turn:
    """One item: its audio as it arrives, and its transcriber (made on first use)."""

    def __init__(self, item_id: str, start: int) -> None:
        self.item_id = item_id
        self.previous_item_id: str | None = None
        self.start = start  # absolute 16 kHz sample index of its first sample
        self.pending: list[np.ndarray] = []
        self.samples = 0
        self.fresh = 0  # samples given since the last step
        self.ended = False
        self.dropped = False  # cleared or failed: no more events for it
        self.text = ""
        self.transcriber: Any = None

    def give(self, audio: np.ndarray) -> None:
        if audio.size:
            self.pending.append(audio)
            self.samples += audio.size
            self.fresh += audio.size


def ms(samples: int) -> int:
    return int(round(samples * 1000 / SAMPLE_RATE))


class Session:
    """One WebSocket's transcription session: client events in, server events out."""

    def __init__(self, ws: WebSocket, scheduler: Scheduler, engine: Engine,
                 languages: list[str], partial: bool) -> None:
        self.ws, self.scheduler, self.engine = ws, scheduler, engine
        self.languages = languages
        self.partial = partial
        self.id = _id("sess")
        self.config = Config()
        self.resampler = Resampler(self.config.rate)
        self.detector: SpeechDetector | None = SpeechDetector(self.config.turn_detection)
        self.buffer = np.zeros(0, np.float32)  # audio not yet given to a turn
        self.buffer_start = 0  # absolute sample index of buffer[0]
        self.turn: Turn | None = None  # the open turn (server VAD: speech going on)
        self.queue: deque[Turn] = deque()  # turns the worker has not finished
        self.last_item_id: str | None = None
        self.jobs: set[Job] = set()
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------------ output

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": _id("event"), **event}
        async with self.lock:
            await self.ws.send_text(json.dumps(event))

    async def error(self, exc: EventError, event_id: Any = None) -> None:
        await self.send({"type": "error", "error": {
            "type": exc.kind, "code": exc.code, "message": exc.message, "param": exc.param,
            "event_id": event_id if isinstance(event_id, str) else None}})

    def session_ga(self) -> dict[str, Any]:
        c = self.config
        return {"type": "transcription", "id": self.id, "object": SESSION_OBJECT, "include": [],
                "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": c.rate},
                    "transcription": c.transcription(),
                    "turn_detection": c.turn_detection.public() if c.turn_detection else None}}}

    def session_beta(self) -> dict[str, Any]:
        c = self.config
        return {"id": self.id, "object": SESSION_OBJECT, "modalities": ["text"],
                "input_audio_format": "pcm16", "input_audio_transcription": c.transcription(),
                "turn_detection": c.turn_detection.public() if c.turn_detection else None}

    # ------------------------------------------------------------------ input

    async def handle(self, text: str) -> None:
        try:
            event = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            await self.error(EventError(f"the event is not valid JSON: {one_line(exc)}",
                                        "invalid_json"))
            return
        event_id = event.get("event_id") if isinstance(event, dict) else None
        try:
            if not isinstance(event, dict):
                raise EventError("an event must be a JSON object", "invalid_event")
            kind = event.get("type")
            handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise EventError(
                    f"event type {kind!r} is not supported by a transcription session "
                    "(session.update, input_audio_buffer.append/commit/clear)",
                    "invalid_event_type", "type")
            await handler(self, event)
        except EventError as exc:
            await self.error(exc, event_id)

    async def on_session_update(self, event: dict[str, Any]) -> None:
        await self._configure(parse_ga(event.get("session"), self.config, self.engine,
                                       self.languages))
        await self.send({"type": "session.updated", "session": self.session_ga()})

    async def on_beta_update(self, event: dict[str, Any]) -> None:
        await self._configure(parse_beta(event.get("session"), self.config, self.engine,
                                         self.languages))
        await self.send({"type": "transcription_session.updated",
                         "session": self.session_beta()})

    async def _configure(self, config: Config) -> None:
        old, self.config = self.config, config
        if config.rate != old.rate:
            self.resampler = Resampler(config.rate)
        if config.turn_detection != old.turn_detection:
            if self.turn is not None:  # the turn the old detector opened ends here
                self._give_until(self.buffer_start + self.buffer.size)
                await self._commit_turn()
            self.detector = SpeechDetector(config.turn_detection) if config.turn_detection \
                else None
            if self.detector is not None:  # its clock is the session's audio clock
                self.detector.position = self.buffer_start + self.buffer.size

    async def on_append(self, event: dict[str, Any]) -> None:
        pcm = decode_pcm16(event.get("audio"))
        incoming = pcm.size * SAMPLE_RATE // self.config.rate
        if self.detector is None and self.buffer.size + incoming > MAX_BUFFER_SAMPLES:
            raise EventError(f"the input audio buffer is full ({MAX_BUFFER_SAMPLES // 960_000} "
                             "minutes uncommitted): commit or clear it", "input_audio_buffer_full")
        audio = self.resampler(pcm)
        self.buffer = np.concatenate([self.buffer, audio])
        if self.detector is None:  # the client commits
            return
        for change, at in self.detector.push(audio):
            if change == "start":
                prefix = self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000
                begin = max(at - prefix, self.buffer_start)
                self._drop_until(begin)
                self.turn = Turn(_id("item"), begin)
                await self.send({"type": "input_audio_buffer.speech_started",
                                 "audio_start_ms": ms(begin), "item_id": self.turn.item_id})
            elif self.turn is not None:
                self._give_until(at)
                await self.send({"type": "input_audio_buffer.speech_stopped",
                                 "audio_end_ms": ms(at), "item_id": self.turn.item_id})
                await self._commit_turn()
        if self.turn is not None:
            self._give_until(self.buffer_start + self.buffer.size)
        else:  # idle: keep what a start's prefix padding may reach back for
            keep = (self.config.turn_detection.prefix_padding_ms + 1000) * SAMPLE_RATE // 1000
            self._drop_until(self.buffer_start + self.buffer.size - keep)
        self.wake.set()

    def _drop_until(self, at: int) -> None:
        cut = min(max(0, at - self.buffer_start), self.buffer.size)
        self.buffer, self.buffer_start = self.buffer[cut:], self.buffer_start + cut

    def _give_until(self, at: int) -> None:
        assert self.turn is not None
        cut = min(max(0, at - self.buffer_start), self.buffer.size)
        self.turn.give(self.buffer[:cut])
        self._drop_until(at)

    async def _commit_turn(self) -> None:
        turn, self.turn = self.turn, None
        assert turn is not None
        turn.ended = True
        turn.previous_item_id, self.last_item_id = self.last_item_id, turn.item_id
        if turn not in self.queue:
            self.queue.append(turn)
        await self.send({"type": "input_audio_buffer.committed",
                         "previous_item_id": turn.previous_item_id, "item_id": turn.item_id})
        self.wake.set()

    async def on_commit(self, event: dict[str, Any]) -> None:
        if self.detector is not None:
            if self.turn is None:
                raise EventError("nothing to commit: the server VAD heard no speech since "
                                 "the last turn", "input_audio_buffer_commit_empty")
            self._give_until(self.buffer_start + self.buffer.size)
            self.detector.speaking, self.detector.silent_from = False, None
            await self._commit_turn()
            return
        have = ms(self.buffer.size)
        if have < MIN_COMMIT_MS:
            raise EventError(f"buffer too small: {have} ms of audio, a commit needs at least "
                             f"{MIN_COMMIT_MS} ms", "input_audio_buffer_commit_empty")
        self.turn = Turn(_id("item"), self.buffer_start)
        self._give_until(self.buffer_start + self.buffer.size)
        await self._commit_turn()

    async def on_clear(self, event: dict[str, Any]) -> None:
        self._drop_until(self.buffer_start + self.buffer.size)
        if self.turn is not None:  # the open turn goes with its audio
            self.turn.dropped = True
            self.turn = None
        if self.detector is not None:
            self.detector.speaking, self.detector.silent_from = False, None
        await self.send({"type": "input_audio_buffer.cleared"})

    HANDLERS = {
        "session.update": on_session_update,
        "transcription_session.update": on_beta_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
    }

    # ------------------------------------------------------------------ transcription

    async def work(self) -> None:
        """The session's turns, one transcription step at a time, in order."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.turn is not None and self.turn not in self.queue:
                self.queue.append(self.turn)
            while self.queue:
                turn = self.queue[0]
                if turn.dropped:
                    self.queue.popleft()
                    continue
                if turn.ended:
                    await self._step(turn, final=True)
                    self.queue.popleft()
                    continue
                if turn.fresh < SAMPLE_RATE:  # the transcriber's minimum chunk (1 s)
                    break
                await self._step(turn, final=False)

    def _transcriber(self) -> Any:
        from ..live.streaming import StreamingTranscriber

        assert self.engine.transcriber is not None, "the model is not loaded"
        options = self.engine.options({})
        return StreamingTranscriber(
            self.engine.transcriber.model,
            language=self.config.language or options.get("language"),
            beam_size=options.get("beam_size") or 5,
            initial_prompt=self.config.prompt or options.get("initial_prompt"),
        )

    async def _step(self, turn: Turn, final: bool) -> None:
        audio = np.concatenate(turn.pending) if turn.pending else np.zeros(0, np.float32)
        turn.pending, turn.fresh = [], 0

        def run() -> Any:
            if turn.transcriber is None:
                turn.transcriber = self._transcriber()
            if audio.size:
                turn.transcriber.insert_audio(audio)
            return turn.transcriber.finish() if final else turn.transcriber.process()

        job = Job(np.zeros(0, np.float32), {}, work=run)
        try:
            self.scheduler.submit(job, session=True)
            self.jobs.add(job)
            future = asyncio.wrap_future(job.future)
            await asyncio.wait({future})  # never cancels the job's own future
            update = future.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            turn.dropped = True
            logger.info("live transcription failed: %s", one_line(exc))
            message = exc.message if isinstance(exc, APIError) else one_line(exc)
            await self.send({"type": "conversation.item.input_audio_transcription.failed",
                             "item_id": turn.item_id, "content_index": 0, "error": {
                                 "type": "server_error", "code": "transcription_failed",
                                 "message": f"transcription failed: {message}"}})
            return
        finally:
            self.jobs.discard(job)
        if turn.dropped:  # cleared while it ran
            return
        delta = "".join(word.text for word in update.committed)
        if not turn.text:
            delta = delta.lstrip()
        if delta:
            turn.text += delta
            await self.send({"type": "conversation.item.input_audio_transcription.delta",
                             "item_id": turn.item_id, "content_index": 0, "delta": delta})
        if self.partial and not final:
            await self.send({"type": PARTIAL_EVENT, "item_id": turn.item_id,
                             "content_index": 0, "text": update.partial_text.strip()})
        if final:
            await self.send({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": turn.item_id, "content_index": 0, "transcript": turn.text,
                "usage": {"type": "duration", "seconds": round(turn.samples / SAMPLE_RATE, 3)}})

    def close(self) -> None:
        for job in list(self.jobs):
            self.scheduler.cancel(job)


# ------------------------------------------------------------------------- the route


def _subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to accept: a browser that offers any must get one of them back."""
    if "realtime" in offered:
        return "realtime"
    plain = [p for p in offered if not p.startswith(KEY_PROTOCOL)]
    return (plain or offered or [None])[0]


def _given_key(ws: WebSocket) -> str:
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in ws.scope.get("subprotocols", []):
        if protocol.startswith(KEY_PROTOCOL):
            return protocol[len(KEY_PROTOCOL):]
    return ""


async def _refuse(ws: WebSocket, kind: str, code: str, message: str, close: int) -> None:
    event = {"type": "error", "event_id": _id("event"), "error": {
        "type": kind, "code": code, "message": message, "param": None, "event_id": None}}
    await ws.send_text(json.dumps(event))
    await ws.close(code=close, reason=message[:120])


async def realtime(ws: WebSocket) -> None:
    """`GET /v1/realtime` (`?intent=transcription`): one transcription session."""
    app = ws.app
    scheduler: Scheduler = app.state.scheduler
    engine: Engine = app.state.engine
    key = app.state.settings.api_key
    await ws.accept(subprotocol=_subprotocol(list(ws.scope.get("subprotocols", []))))
    if key:
        given = _given_key(ws)
        if not hmac.compare_digest(given.encode(), key.encode()):
            message = ("missing API key: send 'Authorization: Bearer <key>' or the subprotocol "
                       f"'{KEY_PROTOCOL}<key>'" if not given else "incorrect API key")
            await _refuse(ws, "invalid_request_error", "invalid_api_key", message, 1008)
            return
    intent = ws.query_params.get("intent", "transcription")
    if intent != "transcription":
        await _refuse(ws, "invalid_request_error", "unsupported_intent",
                      f"intent '{intent}' is not supported: this server runs transcription "
                      "sessions only (?intent=transcription)", 1008)
        return
    try:
        scheduler.open_session()
    except APIError as exc:
        close = 1013 if exc.status == 429 else 1011
        await _refuse(ws, TYPES.get(exc.status, "server_error"), exc.code or "unavailable",
                      exc.message, close)
        return
    partial = ws.query_params.get("partial", "").lower() in ("1", "true", "yes")
    session = Session(ws, scheduler, engine, engine.languages(), partial)
    worker = asyncio.create_task(session.work())
    logger.info("live session %s opened", session.id)
    try:
        await session.send({"type": "session.created", "session": session.session_ga()})
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.handle(message["text"])
            else:
                await session.error(EventError(
                    "binary frames are not events: send JSON text (audio as base64 in "
                    "input_audio_buffer.append)", "invalid_event"))
            if worker.done():
                break
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left (possibly mid-send)
    finally:
        worker.cancel()
        session.close()
        scheduler.close_session()
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            logger.warning("live session %s failed: %s", session.id,
                           one_line(worker.exception()))
        logger.info("live session %s closed", session.id)
