"""The server's own command-line options and the settings they make.

Model and decoding options are the `transcribe` command's (same names, same defaults):
a request answers what `amanuensis-npu transcribe` prints for the same file and options.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

API_KEY_ENV = "AMANUENSIS_NPU_API_KEY"
OPENAI_UPLOAD_MB = 25  # OpenAI's own limit for /v1/audio/*


@dataclass(frozen=True)
class ServerSettings:
    """What one server runs with: the model, the decoding defaults and the limits."""

    model_options: dict[str, Any]
    decode_options: dict[str, Any]
    batch_size: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = OPENAI_UPLOAD_MB * 1024 * 1024
    max_queue: int = 8
    timeout: float | None = None  # seconds from arrival to the last segment


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve`'s own options (the model and decoding groups come from `transcribe`)."""
    s = parser.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; set --api-key then)")
    s.add_argument("--port", type=int, default=8000, help="TCP port")
    s.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' (or set ${API_KEY_ENV}); "
                   "/health, OPTIONS and the page itself stay open")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from this origin ('*' for any; repeatable; "
                   "default: none, the server's own page needs none)")
    s.add_argument("--max-upload-mb", type=float, default=OPENAI_UPLOAD_MB,
                   help="largest request body; larger ones get 413 before they are read")
    s.add_argument("--max-queue", type=int, default=8,
                   help="requests that may wait for the model; more get 429 with Retry-After")
    s.add_argument("--timeout", type=float, default=None,
                   help="seconds a request may take, queue included (checked between segments)")


def settings_from_args(
    args: argparse.Namespace, model_options: dict[str, Any], decode_options: dict[str, Any]
) -> ServerSettings:
    """Settings from `serve`'s parsed command line; bad limits are refused in one line."""
    if args.max_queue < 0:
        raise ValueError("--max-queue must be 0 or more")
    if args.max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be positive")
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if args.batch_size and args.vad_filter is False:
        raise ValueError("--batch_size needs the VAD: the batched pipeline cuts audio at pauses")
    return ServerSettings(
        model_options=model_options,
        decode_options=decode_options,
        batch_size=args.batch_size,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        cors_origins=tuple(args.cors_origin),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_queue=args.max_queue,
        timeout=args.timeout,
    )
