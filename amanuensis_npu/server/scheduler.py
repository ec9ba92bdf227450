"""The queue in front of the one model: one transcription at a time, a bounded wait.

One worker thread owns the model (and so the NPU): requests run in arrival order, one
at a time, because the device serves one context and CTranslate2 already uses every
core. Gathering windows of concurrent requests into one encoder batch was measured
before it was built (benchmarks/server.py): on a 2-core CPU, encode() of 4 windows at
once was 1.18x faster than 4 single calls, on a part of the request's time, so the
simpler policy stays until an NPU shows a batch to be worth more. At most `max_queue`
requests wait; the next one is refused at once with 429 and a Retry-After estimated
from recent transcriptions, so a client is never left hanging. A waiting request whose
client has gone is dropped before it runs; one whose client leaves mid-transcription
stops at the next segment.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..messages import one_line
from .engine import Cancelled, Engine
from .errors import APIError

logger = logging.getLogger("amanuensis_npu.server")


class Job:
    """One request's work: samples, options, and how to tell it to stop."""

    def __init__(
        self,
        samples: np.ndarray,
        overrides: dict[str, Any],
        deadline: float | None = None,
        on_segment: Callable[[Any], None] | None = None,
        work: Callable[[], Any] | None = None,
    ) -> None:
        self.samples = samples
        self.work = work  # a realtime session's step: runs on the worker instead of engine.run
        self.overrides = overrides
        self.deadline = deadline  # time.monotonic() after which it stops
        self.on_segment = on_segment
        self.future: Future = Future()
        self.gone = threading.Event()  # the client disconnected
        self.started: float | None = None
        self.seconds = 0.0  # wall time of the transcription itself, queue wait excluded

    def check(self) -> None:
        """Raise Cancelled when the client left or the deadline passed (between segments)."""
        if self.gone.is_set():
            raise Cancelled("disconnected")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Cancelled("timeout")


class Scheduler:
    """A FIFO of Jobs served by one worker thread that first loads the model."""

    def __init__(self, engine: Engine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._sessions = 0  # open realtime sessions: each holds one place of the queue
        self._cond = threading.Condition()
        self._closing = False
        self._recent: deque[float] = deque(maxlen=16)  # seconds per finished transcription
        self._thread = threading.Thread(target=self._work, name="amanuensis-serve", daemon=True)
        self.on_load_failure: Callable[[str], None] | None = None
        self.on_ready: Callable[[], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued and running, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None

    @property
    def sessions(self) -> int:
        with self._cond:
            return self._sessions

    def _refuse(self) -> None:
        """Raise 503 when no work can be taken (no model, shutting down); lock held."""
        if self.engine.load_error is not None:
            raise APIError(503, f"the model failed to load: {self.engine.load_error}",
                           code="model_not_loaded")
        if self._closing:
            raise APIError(503, "the server is shutting down", code="shutting_down")

    def _full(self) -> APIError:
        retry = self._retry_after()
        live = f" and {self._sessions} live sessions are open" if self._sessions else ""
        return APIError(
            429,
            f"server busy: {len(self._waiting)} requests already wait for the model{live} "
            f"(--max-queue {self.max_queue}); retry in {retry} s",
            code="queue_full",
            headers={"Retry-After": str(retry)},
        )

    def submit(self, job: Job, session: bool = False) -> None:
        """Queue `job`, or raise APIError 429 (queue full) / 503 (no model, shutting down).

        A job of an open realtime session (`session=True`) is not counted again: the
        session took its place when it opened (`open_session`).
        """
        with self._cond:
            self._refuse()
            if not session and len(self._waiting) + self._sessions >= self.max_queue and (
                self._running is not None or self._waiting or not self.engine.ready
            ):
                raise self._full()
            self._waiting.append(job)
            self._cond.notify_all()

    def open_session(self) -> None:
        """A realtime session takes a place of the queue for as long as it is open, so
        `--max-queue` bounds live sessions and waiting requests together; 429 when full."""
        with self._cond:
            self._refuse()
            if len(self._waiting) + self._sessions >= self.max_queue:
                raise self._full()
            self._sessions += 1

    def close_session(self) -> None:
        with self._cond:
            self._sessions -= 1

    def cancel(self, job: Job) -> None:
        """The client left: drop the job if it still waits, else stop it at the next segment."""
        job.gone.set()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.future.set_exception(Cancelled("disconnected"))
                logger.info("dropped a queued request: its client disconnected")

    def _retry_after(self) -> int:
        """Seconds until a place frees up, from the recent transcriptions' durations."""
        mean = sum(self._recent) / len(self._recent) if self._recent else 5.0
        return max(1, min(120, math.ceil(mean)))

    def _work(self) -> None:
        try:
            self.engine.load()
        except Exception as exc:
            self.engine.load_error = one_line(exc)
            logger.info("the model failed to load: %s", self.engine.load_error)
            with self._cond:
                failed, self._waiting = list(self._waiting), deque()
            for job in failed:
                job.future.set_exception(APIError(503, self.engine.load_error))
            if self.on_load_failure is not None:
                self.on_load_failure(self.engine.load_error)
            return
        if self.on_ready is not None:
            self.on_ready()
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting:
                    return  # closing and nothing left
                job = self._waiting.popleft()
                self._running = job
            job.started = time.monotonic()
            outcome: Any = None
            try:
                if job.work is not None:
                    job.check()  # its session may have ended while it waited
                    outcome = job.work()
                else:
                    outcome = self.engine.run(job.samples, job.overrides, job.on_segment,
                                              job.check)
            except Cancelled as exc:
                logger.info("stopped a transcription: %s", exc.reason)
                outcome = exc
            except Exception as exc:  # one bad request must not stop the server
                logger.warning("transcription failed: %s", one_line(exc))
                outcome = exc
            finally:
                job.seconds = time.monotonic() - job.started
                self._recent.append(job.seconds)
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                elif outcome is not None:
                    job.future.set_result(outcome)
                with self._cond:
                    self._running = None
