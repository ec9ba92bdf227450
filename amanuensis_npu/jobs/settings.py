"""What a job is asked to do: its settings and the inputs left for this run.

Apart from the driver (runner.py) so the Ray actors, which receive both, do not import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .inputs import Input


@dataclass
class JobSettings:
    """Everything a job needs besides its inputs.

    `model_options` go to `api.get_model` as keywords and `decode_options` to
    faster-whisper's `transcribe`; both are passed through untouched, so a new model or
    decoding option needs no change here.
    """

    output_dir: str
    formats: tuple[str, ...]
    writer_options: dict[str, Any]
    model_options: dict[str, Any]
    decode_options: dict[str, Any]
    batch_size: int | None = None
    retry_failed: bool = False
    force: bool = False
    progress: bool = True
    ray_address: str | None = None  # None: this process; "local": embedded Ray; else a cluster
    workers: int | None = None  # Ray actors (default: one per node)

    def fingerprint(self) -> str:
        """What shapes the outputs (not threads, workers or progress): a changed one redoes."""
        shaping = {
            "model": {k: str(v) for k, v in self.model_options.items() if k != "cpu_threads"},
            "decode": self.decode_options,
            "batch_size": self.batch_size,
            "formats": list(self.formats),
            "writer": self.writer_options,
        }
        text = json.dumps(shaping, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Task:
    """One input to transcribe in this run."""

    input: Input
    name: str  # output name, relative to the output directory, without extension
    size: int
    mtime_ns: int
    duration: float  # from the container's metadata; 0 when unknown
