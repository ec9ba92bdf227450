"""A transcription job: check inputs, skip what is done, transcribe the rest, say what happened.

The same driver serves one file and an archive of thousands, on one machine or on Ray:
inputs are checked before a model is loaded; the journal in the output directory decides
what is left (done and unchanged inputs are skipped, failed ones wait for
`--retry-failed`); one model transcribes every file; every output is written atomically
and recorded only once it is complete. One progress bar
counts seconds of audio; the end is one line about the route that ran and one summary.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..api import NO_BACKEND, AudioError, route_line, route_phrase
from ..messages import one_line
from .inputs import Input, assign_names, probe_duration
from .journal import Journal
from .outputs import remove_stale_parts, write_atomic, write_outputs
from .settings import JobSettings, Task
from .transcriber import FileResult, Transcriber

FAILURES_NAME = "amanuensis-npu-failures.tsv"


@dataclass
class JobSummary:
    """The outcome of a job, as the summary line states it."""

    transcribed: int = 0
    skipped: int = 0
    failed: int = 0
    failed_before: int = 0  # failed in an earlier run, unchanged, not retried
    interrupted: bool = False
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    routes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # why each route was picked
    attention_ran: bool = False  # some file ran an attention backend (the torch encoder)
    attention_calls: int = 0
    fallbacks: int = 0
    encoder_fallbacks: int = 0

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.failed_before else 0

    def line(self) -> str:
        head = "interrupted" if self.interrupted else "done"
        text = (
            f"{head}: {self.transcribed} transcribed, {self.skipped} skipped, "
            f"{self.failed} failed"
        )
        if self.failed_before:
            text += f", {self.failed_before} failed earlier (--retry-failed retries them)"
        if self.transcribed and self.wall_seconds > 0:
            speed = self.audio_seconds / self.wall_seconds  # audio seconds per second = h/h
            text += (
                f" ({_clock(self.audio_seconds)} of audio in {_clock(self.wall_seconds)}, "
                f"{speed:.1f} audio h/h)"
            )
        return text

    def route_line(self) -> str:
        """What ran, and the attention fallback counter only where an attention backend ran."""
        return route_line(
            list(self.routes), list(self.reasons),
            self.attention_calls if self.attention_ran else None, self.fallbacks,
            self.encoder_fallbacks,
        )


def run_job(
    inputs: Sequence[Input],
    errors: Sequence[str],
    settings: JobSettings,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> JobSummary:
    """Run a job to the end (or Ctrl-C) and return its summary; the model loads only if needed."""
    out = out or sys.stdout
    err = err or sys.stderr
    started = time.perf_counter()
    summary = JobSummary()
    for message in errors:
        print(f"error: {message}", file=err)
        summary.failed += 1
        summary.failures.append((message.split(": ", 1)[0], message.split(": ", 1)[-1]))
    journal = Journal(settings.output_dir)
    fatal = False
    try:
        tasks = _plan(inputs, settings, journal, summary, err)
        if tasks:
            _transcribe(tasks, settings, journal, summary, out, err)
    except Exception:
        fatal = True  # e.g. the model cannot load: the caller prints that one error
        raise
    finally:
        summary.wall_seconds = time.perf_counter() - started
        if summary.transcribed:
            print(summary.route_line(), file=err)
        if not fatal or summary.transcribed:
            print(summary.line(), file=err)
            _write_failures(journal, settings.output_dir, summary, err)
        journal.close()
    return summary


def _plan(
    inputs: Sequence[Input],
    settings: JobSettings,
    journal: Journal,
    summary: JobSummary,
    err: TextIO,
) -> list[Task]:
    """The resume scan: what is left to do, with output names that collide with nothing."""
    entries = journal.entries()
    fingerprint = settings.fingerprint()
    names = assign_names(inputs, {p: e.name for p, e in entries.items()})
    tasks = []
    for item in inputs:
        try:
            st = os.stat(item.path)
        except OSError as exc:
            _fail_early(summary, item.shown, exc.strerror or str(exc), err)
            continue
        entry = entries.get(item.path)
        unchanged = (
            entry is not None
            and entry.size == st.st_size
            and entry.mtime_ns == st.st_mtime_ns
            and entry.settings == fingerprint
            and not settings.force
        )
        if unchanged and entry.status == "done" and all(
            os.path.exists(os.path.join(settings.output_dir, o)) for o in entry.outputs
        ):
            summary.skipped += 1
            continue
        if unchanged and entry.status == "failed" and not settings.retry_failed:
            summary.failed_before += 1
            summary.failures.append((item.shown, entry.error or "failed"))
            continue
        tasks.append(Task(item, names[item.path], st.st_size, st.st_mtime_ns, 0.0))
    dirs = {os.path.dirname(os.path.join(settings.output_dir, t.name)) for t in tasks}
    remove_stale_parts(d for d in dirs if os.path.isdir(d))
    for task in tasks:
        task.duration = probe_duration(task.input.path)
    return tasks


def _fail_early(summary: JobSummary, shown: str, reason: str, err: TextIO) -> None:
    print(f"error: {shown}: {reason}", file=err)
    summary.failed += 1
    summary.failures.append((shown, reason))


class _Bar:
    """One tqdm bar in seconds of audio for the whole job, with ETA and audio hours per hour.

    Its percentage only reads 100 when every file is done, and it prints that line once
    (when it closes).
    """

    FORMAT = (
        "{desc}: {pct:3d}%|{bar}| {n:.0f}/{total:.0f} s of audio "
        "[{elapsed}<{remaining}, {speed}]"
    )

    def __init__(self, total: float, files: int, enabled: bool, err: TextIO) -> None:
        from tqdm import tqdm

        class AudioBar(tqdm):
            @property
            def format_dict(self) -> dict[str, Any]:
                d = super().format_dict
                total = d["total"] or 0
                d["pct"] = 100 if d["n"] >= total else min(99, math.floor(100 * d["n"] / total))
                rate = d["rate"] or (d["n"] / d["elapsed"] if d["elapsed"] else 0)
                d["speed"] = f"{rate:.1f} audio h/h" if rate else "? audio h/h"
                return d

        self.files = files
        self.done_files = 0
        self.done_audio = 0.0
        self.total = max(total, 1e-3)
        self._make = lambda: AudioBar(
            total=self.total,
            desc=f"0/{files} files",
            unit="s",
            disable=not enabled,
            file=err,
            bar_format=self.FORMAT,
            dynamic_ncols=True,
        )
        self.bar: Any = None

    def start(self) -> None:
        """Show the bar: once a model is ready, so a model that cannot load prints only its
        one error line, not a bar stuck at 0%."""
        if self.bar is None:
            self.bar = self._make()

    def within(self, task: Task, done: float) -> None:
        """Progress inside a file; never reaches the end of the file (its completion does)."""
        if task.duration <= 0:
            return
        self.start()
        target = self.done_audio + min(done, task.duration * 0.999)
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def finished(self, task: Task) -> None:
        self.start()
        self.done_files += 1
        self.done_audio += task.duration
        self.bar.set_description_str(f"{self.done_files}/{self.files} files", refresh=False)
        if self.done_files < self.files:
            self.bar.update(max(0.0, self.done_audio - self.bar.n))

    def write(self, text: str, file: TextIO) -> None:
        if self.bar is None:
            print(text, file=file)
        else:
            self.bar.write(text, file=file)

    def close(self, complete: bool) -> None:
        if complete:
            self.start()
            self.bar.n = self.total
        if self.bar is not None:
            self.bar.close()


def _transcribe(
    tasks: list[Task],
    settings: JobSettings,
    journal: Journal,
    summary: JobSummary,
    out: TextIO,
    err: TextIO,
) -> None:
    bar = _Bar(sum(t.duration for t in tasks), len(tasks), settings.progress, err)
    fingerprint = settings.fingerprint()
    held: list[dict[str, Any]] = []  # failures kept until the journal exists (see Journal)
    complete = False
    try:
        for task, outcome, started in _execute(tasks, settings, bar):
            record = dict(
                path=task.input.path, size=task.size, mtime_ns=task.mtime_ns,
                duration=task.duration or None, name=task.name, settings=fingerprint,
                started=started,
            )
            if isinstance(outcome, FileResult):
                try:
                    outputs = write_outputs(
                        outcome.result, settings.output_dir, task.name, settings.formats,
                        settings.writer_options,
                    )
                except OSError as exc:
                    outcome = OSError(f"{task.input.shown}: cannot write outputs ({exc})")
            if isinstance(outcome, FileResult):
                route = _route(outcome)
                for pending in held:
                    journal.record(**pending)
                held.clear()
                journal.record(
                    **record, outputs=outputs, status="done", route=route,
                    fallbacks=outcome.stats.get("fallbacks", 0), seconds=outcome.seconds,
                )
                summary.transcribed += 1
                summary.audio_seconds += outcome.duration
                summary.routes[route] += 1
                summary.reasons[outcome.route.get("encoder_reason", "")] += 1
                summary.attention_ran |= outcome.backend != NO_BACKEND
                summary.encoder_fallbacks += outcome.stats.get("encoder_fallbacks", 0)
                summary.attention_calls += outcome.stats.get("attention_calls", 0)
                summary.fallbacks += outcome.stats.get("fallbacks", 0)
                _print_segments(task, outcome, len(tasks) > 1, bar, out)
            else:
                message = one_line(outcome)
                if task.input.shown not in message and task.input.path not in message:
                    message = f"{task.input.shown}: {message}"
                bar.write(f"error: {message}", file=err)
                summary.failed += 1
                summary.failures.append(
                    (task.input.shown, message.removeprefix(f"{task.input.shown}: "))
                )
                failed = dict(**record, outputs=[], status="failed", error=message)
                if journal.exists:
                    journal.record(**failed)
                else:
                    held.append(failed)
            bar.finished(task)
        complete = True
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close(complete)


def _execute(
    tasks: list[Task], settings: JobSettings, bar: _Bar
) -> Iterator[tuple[Task, FileResult | BaseException, float]]:
    if settings.ray_address is not None:
        from .ray_actors import run_on_ray

        bar.start()  # the actors load their models themselves
        yield from run_on_ray(tasks, settings)
    else:
        yield from _run_here(tasks, settings, bar)


def _run_here(
    tasks: list[Task], settings: JobSettings, bar: _Bar
) -> Iterator[tuple[Task, FileResult | BaseException, float]]:
    """One model in this process, one file after the other.

    The model loads when the first file has decoded: a job whose every file is unreadable
    never loads one. Decoding the next file in a thread while this one is transcribed was
    tried and measured (benchmarks/archive.py: 0.97x on 2 cores, base, the test clips):
    decoding is about 1% of the time, so it was left out.
    """
    transcriber: Transcriber | None = None
    for task in tasks:
        started = time.time()
        try:
            audio = Transcriber.load(task.input.path, task.input.shown)
            if transcriber is None:
                transcriber = Transcriber(
                    settings.model_options, settings.decode_options, settings.batch_size
                )
                bar.start()
            result = transcriber(audio, lambda done, total, t=task: bar.within(t, done))
        except AudioError as exc:
            yield task, exc, started
            continue
        except Exception as exc:  # one bad file must not stop the job
            if transcriber is None:
                raise  # the model itself cannot load: one error for the job
            yield task, exc, started
            continue
        yield task, result, started


def _route(result: FileResult) -> str:
    fields = result.route or {
        "backend": result.backend, "encoder": result.encoder,
        "encoder_device": "CPU", "encoder_precision": "f32",
    }
    return route_phrase(fields, result.device)


def _print_segments(task: Task, result: FileResult, several: bool, bar: _Bar, out: TextIO) -> None:
    from whisperx.utils import format_timestamp

    def clock(t: float) -> str:
        return format_timestamp(t, always_include_hours=False, decimal_marker=".")

    lines = [f"==> {task.input.shown} <=="] if several else []
    lines += [f"[{clock(s)} --> {clock(e)}] {text}" for s, e, text in result.segments]
    if several:
        lines.append("")
    if lines:
        bar.write("\n".join(lines), file=out)
        out.flush()


def _write_failures(journal: Journal, output_dir: str, summary: JobSummary, err: TextIO) -> None:
    """The failures file next to the journal: every input of this job that failed, and why."""
    path = os.path.join(output_dir, FAILURES_NAME)
    if not journal.exists:
        return  # nothing was ever written here; the errors were printed
    if not summary.failures:
        if os.path.exists(path):
            os.unlink(path)
        return

    def write(fh: TextIO) -> None:
        fh.write("file\treason\n")
        for name, reason in summary.failures:
            fh.write(f"{name}\t{' '.join(reason.split())}\n")

    write_atomic(path, write)
    print(f"failures listed in {path}", file=err)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
