"""Output files, written by WhisperX's own writers, each one atomically.

WhisperX's `ResultWriter.__call__` opens `<output_dir>/<basename>.<ext>` and writes into
it in place (whisperx/utils.py), so an interrupted run leaves half a file under the real
name and equal basenames overwrite each other. We keep its writers' `write_result` (the
formats stay byte-for-byte WhisperX's) and choose the path ourselves: a temporary file in
the same directory, flushed to disk, then `os.replace`d over the final name.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

FORMATS = ("txt", "srt", "vtt", "tsv", "json")
PART_SUFFIX = ".amanuensis-part"


def formats_for(output_format: str) -> tuple[str, ...]:
    """The extensions `--output_format` stands for (`all`: the five WhisperX writes)."""
    return FORMATS if output_format == "all" else (output_format,)


def write_atomic(path: str, write: Callable[[TextIO], None]) -> None:
    """Write a text file so that readers see the old file or the whole new one, never a part."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}{PART_SUFFIX}"
    )
    try:
        # "x" creates with the user's umask (mkstemp would make it 0600).
        with open(tmp, "x", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_outputs(
    result: dict[str, Any],
    output_dir: str,
    name: str,
    formats: Sequence[str],
    writer_options: dict[str, Any],
) -> list[str]:
    """Write `result` in every format as `<output_dir>/<name>.<ext>`; the relative paths."""
    from whisperx.utils import get_writer

    written = []
    for ext in formats:
        writer = get_writer(ext, output_dir)
        rel = f"{name}.{ext}"
        path = os.path.join(output_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(
            path, lambda fh, w=writer: w.write_result(result, file=fh, options=writer_options)
        )
        written.append(rel)
    return written


def remove_stale_parts(directories: Iterable[str]) -> int:
    """Delete temporary files a killed run left behind in these directories; how many."""
    removed = 0
    for directory in set(directories):
        for path in glob.glob(os.path.join(glob.escape(directory), f".*{PART_SUFFIX}")):
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
