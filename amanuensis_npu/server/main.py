"""Run the server: settings, uvicorn, and the signals that end it cleanly.

uvicorn stops accepting on SIGTERM/SIGINT, lets in-flight requests finish, then runs
the app's shutdown (the scheduler finishes its queue). It then re-raises the signal
it caught against the handler that was installed before it ran; a SIGTERM handler of
our own that does nothing makes that a normal return, so the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from .options import settings_from_args

logger = logging.getLogger("amanuensis_npu.server")


def _requirements() -> None:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: Starlette's form parser)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"the server needs its extra ({exc.name} is missing): "
            "pip install 'amanuensis-npu[server]'"
        ) from None
    try:
        import whisperx.utils  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "srt/vtt writers come from whisperx: pip install --no-deps whisperx==3.8.6"
        ) from None


def serve(
    args: argparse.Namespace, model_options: dict[str, Any], decode_options: dict[str, Any]
) -> int:
    """`amanuensis-npu serve`: runs until SIGTERM/SIGINT; 0 after a clean stop, 1 if the
    model cannot load."""
    _requirements()
    import uvicorn

    from .app import create_app

    settings = settings_from_args(args, model_options, decode_options)
    app = create_app(settings)
    engine, scheduler = app.state.engine, app.state.scheduler
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port,
        log_level="info" if args.verbose else "warning", access_log=args.verbose,
        timeout_graceful_shutdown=None,
    )
    server = uvicorn.Server(config)
    failed: list[str] = []

    def load_failed(reason: str) -> None:
        failed.append(reason)
        server.should_exit = True

    def ready() -> None:
        route = engine.route()
        print(f"ready: model {route['model']}, encoder {route['encoder']}, attention "
              f"{route['attention']}", file=sys.stderr, flush=True)

    scheduler.on_load_failure = load_failed
    scheduler.on_ready = ready
    scheme_host = f"http://{settings.host}:{settings.port}"
    print(f"serving {scheme_host} (OpenAI API at {scheme_host}/v1, page at {scheme_host}/); "
          f"loading model {engine.model_id}", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed:
        print(f"error: the model failed to load: {failed[0]}", file=sys.stderr)
        return 1
    return 0
