"""`amanuensis-npu serve`: OpenAI's audio API and a web page over one loaded model.

The server sits above the library and uses only its public names (`api`, `jobs`,
`attention`, `core.routes`); nothing below imports it. Its parts, one concern each:
`options` (command line and settings), `errors` (OpenAI-shaped errors), `limits`
(upload size and API key, checked before a body is parsed), `forms` (a multipart request
as a checked transcription request), `engine` (the model and one transcription, segment
by segment), `scheduler` (the queue in front of the one model), `formats` (json, text,
srt, vtt, verbose_json, SSE), `realtime` (OpenAI's Realtime transcription over a
WebSocket, on `live`'s streaming transcriber), `app` (the routes), `main` (uvicorn and signals), and
`static/` (the page: plain HTML, JS and CSS).
"""

from .options import ServerSettings

__all__ = ["ServerSettings"]
