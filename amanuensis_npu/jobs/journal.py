"""The job journal: one SQLite file in the output directory that says what is done.

A row is written only after every output of its input is in place, in one transaction,
so after Ctrl-C or SIGKILL the journal never claims a file that is not complete; at worst
the files that were in flight are transcribed again. The driver alone writes it (also
with Ray), from one thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

JOURNAL_NAME = ".amanuensis-npu-journal.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,      -- absolute input path
    size INTEGER NOT NULL,      -- bytes, when it was transcribed
    mtime_ns INTEGER NOT NULL,  -- modification time, when it was transcribed
    duration REAL,              -- seconds of audio
    name TEXT NOT NULL,         -- output name, relative to the output directory, no extension
    outputs TEXT NOT NULL,      -- JSON list of output files, relative to the output directory
    settings TEXT NOT NULL,     -- fingerprint of the options that shape the outputs
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,                 -- why it failed
    route TEXT,                 -- encoder and attention that ran
    fallbacks INTEGER,          -- attention calls that fell back to the CPU
    started REAL,               -- unix time the transcription started
    seconds REAL                -- wall time of the transcription
)
"""


@dataclass(frozen=True)
class Entry:
    """What the journal knows about one input."""

    path: str
    size: int
    mtime_ns: int
    duration: float | None
    name: str
    outputs: list[str]
    settings: str
    status: str
    error: str | None


class Journal:
    """The journal of the job writing into `output_dir`; created on the first record.

    Creating it lazily keeps a run whose every input fails from leaving an output
    directory (or a journal in the current one) behind.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.path = os.path.join(os.fspath(output_dir), JOURNAL_NAME)
        self._db: sqlite3.Connection | None = None
        if os.path.exists(self.path):
            self._open()

    @property
    def exists(self) -> bool:
        return self._db is not None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            db = sqlite3.connect(self.path)
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(f"schema version {version}")
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.commit()
            except sqlite3.DatabaseError as exc:
                db.close()
                raise RuntimeError(
                    f"{self.path}: not a journal this version can read ({exc}); move it away "
                    "to start the job afresh"
                ) from None
            self._db = db
        return self._db

    def entries(self) -> dict[str, Entry]:
        """Every input the journal knows, by absolute path (the resume scan reads this once)."""
        if self._db is None:
            return {}
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, duration, name, outputs, settings, status, error "
            "FROM files"
        )
        return {
            r[0]: Entry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])
            for r in rows
        }

    def record(
        self,
        *,
        path: str,
        size: int,
        mtime_ns: int,
        duration: float | None,
        name: str,
        outputs: Sequence[str],
        settings: str,
        status: str,
        error: str | None = None,
        route: str | None = None,
        fallbacks: int | None = None,
        started: float | None = None,
        seconds: float | None = None,
    ) -> None:
        """Write one input's outcome, durably, in one transaction."""
        db = self._open()
        with db:
            db.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, duration, name, outputs, "
                "settings, status, error, route, fallbacks, started, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path, size, mtime_ns, duration, name, json.dumps(list(outputs)), settings,
                 status, error, route, fallbacks, started, seconds),
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
