"""Errors as OpenAI sends them: `{"error": {"message", "type", "param", "code"}}`.

The `openai` client maps the status to its exception class (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError, ...) and shows the
message, so every message is one line that says what to change.
"""

from __future__ import annotations

import json
from typing import Any

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """A request that gets an error response; `headers` go with it (Retry-After, ...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error response."""
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_bytes(status: int, message: str, code: str | None = None) -> bytes:
    """The body for the ASGI layers that answer before any framework sees the request."""
    return json.dumps(error_body(status, message, None, code)).encode()
