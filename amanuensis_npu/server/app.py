"""The routes: OpenAI's audio API, the model list, /health and the page.

Handlers never run a transcription on the event loop: the audio is decoded in a thread,
the transcription runs in the scheduler's worker, and the handler awaits it while
watching for its client leaving (then the job is dropped from the queue, or stopped at
its next segment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from ..api import TranscriptionResult
from ..messages import one_line
from .engine import Cancelled, Engine
from .errors import APIError, error_body
from .formats import Deltas, delta_event, done_event, error_event, render
from .forms import MODEL_ALIASES, parse
from .limits import ApiKey, BodyTooLarge, UploadLimit
from .options import ServerSettings
from .realtime import realtime
from .scheduler import Job, Scheduler

logger = logging.getLogger("amanuensis_npu.server")
STATIC = files("amanuensis_npu.server") / "static"
POLL_SECONDS = 0.2  # how often a waiting handler looks for its client having left


def create_app(settings: ServerSettings, engine: Engine | None = None) -> FastAPI:
    """The ASGI app; the model loads in the background when the app starts (lifespan)."""
    engine = engine or Engine(settings.model_options, settings.decode_options, settings.batch_size)
    scheduler = Scheduler(engine, settings.max_queue)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        # uvicorn calls this after in-flight requests have finished (graceful shutdown)
        await asyncio.to_thread(scheduler.close)

    app = FastAPI(title="amanuensis-npu", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.scheduler = scheduler
    app.state.settings = settings

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}
        body = error_body(exc.status_code, message.get(exc.status_code, str(exc.detail)))
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(400, one_line(exc)), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug here still answers in OpenAI's shape, in one line (the log has the rest)."""
        logger.error("%s %s failed: %s", request.method, request.url.path, one_line(exc),
                     exc_info=exc)
        return JSONResponse(error_body(500, f"internal error: {one_line(exc)}"), status_code=500)

    def model_card(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": started, "owned_by": "amanuensis-npu"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list",
                "data": [model_card(m) for m in (engine.model_id, *MODEL_ALIASES)]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        if model not in (engine.model_id, *MODEL_ALIASES):
            raise APIError(404, f"no model '{model}': this server has '{engine.model_id}'",
                           param="model", code="model_not_found")
        return model_card(model)

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.load_error is not None:
            return JSONResponse({"status": "error", "error": engine.load_error}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        body = {"status": "ok", "route": engine.route(),
                "queue": {"waiting": scheduler.waiting, "busy": scheduler.busy,
                          "sessions": scheduler.sessions, "max_queue": settings.max_queue}}
        return JSONResponse(body)

    async def audio(request: Request, task: str, page: bool = False) -> Response:
        try:
            form = await request.form(max_files=1, max_fields=64)
        except BodyTooLarge:
            raise  # UploadLimit answers it
        except Exception as exc:  # malformed multipart, too many parts, wrong content type
            raise APIError(400, f"cannot read the form: {one_line(exc)}") from None
        languages = _languages(engine)
        try:
            req = await parse(form, task, engine.model_id, languages)
        finally:
            await form.close()
        deadline = time.monotonic() + settings.timeout if settings.timeout else None
        if req.stream:
            return _stream(request, scheduler, req.samples, req.overrides, deadline)
        job = Job(req.samples, req.overrides, deadline)
        scheduler.submit(job)
        result = await _wait(request, scheduler, job)
        if page:
            return JSONResponse(_page_body(result, task, req.granularities, engine, job))
        body, media_type = render(result, req.response_format, task, req.granularities)
        return Response(body, media_type=media_type)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await audio(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await audio(request, "translate")

    @app.post("/page/{task}", include_in_schema=False)
    async def page_audio(request: Request, task: str) -> Response:
        """The page's request: the verbose result and every download, from one run."""
        if task not in ("transcribe", "translate"):
            raise APIError(404, f"no route POST /page/{task}")
        return await audio(request, task, page=True)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    # OpenAI's Realtime transcription over a WebSocket; it checks the key itself (the
    # ApiKey layer sees HTTP only, and browsers send the key as a subprotocol)
    app.add_api_websocket_route("/v1/realtime", realtime)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # Outermost first on the way in: CORS answers preflights and decorates every answer,
    # then the key, then the size (Starlette adds middleware outside the previous one).
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
            expose_headers=["Retry-After"],
        )
    return app


def _languages(engine: Engine) -> list[str]:
    return engine.languages()


def _page_body(
    result: TranscriptionResult, task: str, granularities: tuple[str, ...], engine: Engine,
    job: Job,
) -> dict[str, Any]:
    """What the page shows and offers for download, each rendered as the API renders it."""
    formats = {ext: render(result, fmt, task, granularities)[0]
               for ext, fmt in (("txt", "text"), ("srt", "srt"), ("vtt", "vtt"),
                                ("json", "verbose_json"))}
    return {
        "verbose": json.loads(formats["json"]),
        "formats": formats,
        "route": engine.route(),
        "seconds": round(job.seconds, 3),
    }


def _failure(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, Cancelled):
        if exc.reason == "timeout":
            return APIError(504, "the transcription took longer than the server's --timeout",
                            code="timeout", headers={"x-should-retry": "false"})
        return APIError(499, "the client disconnected", code="client_closed_request")
    return APIError(500, f"transcription failed: {one_line(exc)}", code="transcription_failed")


async def _wait(request: Request, scheduler: Scheduler, job: Job) -> TranscriptionResult:
    """The job's result; drops the job if the client disconnects while it waits or runs."""
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
        if done:
            break
        if await request.is_disconnected():
            scheduler.cancel(job)
    try:
        return future.result()
    except BaseException as exc:
        raise _failure(exc) from None


def _stream(
    request: Request, scheduler: Scheduler, samples: Any, overrides: dict[str, Any],
    deadline: float | None,
) -> StreamingResponse:
    """`stream=true`: a delta event per segment as it is made, then the done event."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()
    deltas = Deltas()

    def on_segment(segment: Any) -> None:
        delta = deltas(segment.text)
        if delta:
            loop.call_soon_threadsafe(pieces.put_nowait, delta)

    job = Job(samples, overrides, deadline, on_segment)
    scheduler.submit(job)  # a full queue is a 429 before the stream starts
    future = asyncio.wrap_future(job.future)

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                getter = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield delta_event(getter.result())
                    continue
                getter.cancel()
                while not pieces.empty():
                    yield delta_event(pieces.get_nowait())
                try:
                    result = future.result()
                except BaseException as exc:
                    yield error_event(_failure(exc).body())
                    return
                yield done_event(result)
                return
        finally:
            if not job.future.done():  # the client left (Starlette cancelled us)
                scheduler.cancel(job)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
