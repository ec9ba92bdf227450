"""Checks made on the raw ASGI request, before a body is parsed: size, then API key.

Starlette's multipart parser caps only non-file fields (`max_part_size`), and it reads
the whole upload to disk before any route runs, so a 30 MB upload would be read in full
just to be refused. Here the declared Content-Length is checked before a byte of the
body is read, and the bytes actually received are counted as they arrive (a chunked
upload has no Content-Length). The API key is checked the same way, without reading
the body, and compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import error_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may GET without the key: liveness, and the page (it holds no data and
# asks for the key itself when the API answers 401).
OPEN_PATHS = ("/health", "/", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)


async def send_error(
    send: Send, status: int, message: str, code: str | None, headers: dict[str, str] | None = None
) -> None:
    body = error_bytes(status, message, code)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised into the app from `receive` when the body passes the limit; answered 413."""


class UploadLimit:
    """413 for a body over `max_bytes`: on its Content-Length at once, else as bytes arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        mb = self.max_bytes / (1024 * 1024)
        return f"request body larger than the server's limit of {mb:g} MB (--max-upload-mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await send_error(send, 413, self._message(), "request_too_large",
                                     {"connection": "close"})
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_error(send, 413, self._message(), "request_too_large",
                                 {"connection": "close"})


class ApiKey:
    """401 unless `Authorization: Bearer <key>`; OPTIONS (CORS preflight) and open paths pass."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        if not hmac.compare_digest(given, self.key):
            message = ("missing API key: send 'Authorization: Bearer <key>'" if not given
                       else "incorrect API key")
            await send_error(send, 401, message, "invalid_api_key",
                             {"www-authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _exempt(scope: Scope) -> bool:
        if scope["method"] == "OPTIONS":
            return True
        path = scope["path"]
        return scope["method"] in ("GET", "HEAD") and (
            path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        )
