"""How a failure reads to people: one line.

Exceptions from PyAV, CTranslate2, ONNX Runtime or Ray often carry tracebacks or
multi-line dumps; the CLI, the job summary, the failures file and the fallback
warnings all show only the first line, and the rest goes to `--verbose`.
"""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
