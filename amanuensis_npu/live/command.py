"""`amanuensis-npu live`: transcribe a microphone, a file or stdin as the audio arrives.

Committed text goes to stdout a line per update as soon as it is committed (it never
changes afterwards, so a pipe can consume it); the changing tail goes to stderr, on a
terminal or with `--partial`. At the end (of the input, or Ctrl-C) the committed words are
written in WhisperX's output formats by the writers `transcribe` uses, each file
atomically: what was committed is never lost to an interruption.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TextIO

import numpy as np

from .streaming import StreamingTranscriber, Update, Word

logger = logging.getLogger("amanuensis_npu.live")

SAMPLE_RATE = StreamingTranscriber.SAMPLE_RATE
PACKET_SECONDS = 0.1  # what a real-time source delivers at a time
SEGMENT_GAP_SECONDS = 1.0  # a pause this long starts a new output segment
SEGMENT_MAX_SECONDS = 12.0
SENTENCE_PAUSE_SECONDS = 0.2  # after a full stop ("Mr. John" runs on without one)
_END = None  # the sources' end-of-stream mark


# -- sources: float32 chunks, in order ---------------------------------------------------


def file_chunks(samples: np.ndarray, seconds: float) -> Iterator[np.ndarray]:
    step = max(1, int(round(seconds * SAMPLE_RATE)))
    for i in range(0, samples.size, step):
        yield samples[i : i + step]


def _pump(chunks: Iterator[np.ndarray], out: queue.Queue, stop: threading.Event) -> None:
    try:
        for chunk in chunks:
            if stop.is_set():
                break
            out.put(chunk)
    except BaseException as exc:  # the consumer reports it
        out.put(exc)
    out.put(_END)


def paced(samples: np.ndarray, stop: threading.Event) -> Iterator[np.ndarray]:
    """A file as a microphone would deliver it: a packet every 100 ms of wall time."""
    started = time.monotonic()
    for i, chunk in enumerate(file_chunks(samples, PACKET_SECONDS)):
        due = started + (i + 1) * PACKET_SECONDS
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        yield chunk


def stdin_chunks(stream: Any) -> Iterator[np.ndarray]:
    """Raw PCM16 little-endian mono 16 kHz, as it arrives (an odd byte waits for its pair)."""
    carry = b""
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(int(PACKET_SECONDS * SAMPLE_RATE) * 2)
        if not data:
            return
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


def open_microphone(out: queue.Queue) -> Any:
    """A started sounddevice input stream at 16 kHz mono feeding `out`; one-line errors for
    a missing package, a missing PortAudio library or no input device."""
    try:
        import sounddevice
    except ImportError:
        raise RuntimeError(
            "microphone input needs sounddevice: pip install 'amanuensis-npu[live]' "
            "(or use --input FILE / --input -)"
        ) from None
    except OSError:  # sounddevice raises this when libportaudio is absent
        raise RuntimeError(
            "microphone input needs the PortAudio library (e.g. apt install libportaudio2); "
            "or use --input FILE / --input -"
        ) from None
    try:
        device = sounddevice.query_devices(kind="input")
    except Exception:
        raise RuntimeError("no microphone (input device) found; use --input FILE or --input -"
                           ) from None

    def callback(indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        if status:
            logger.info("live: microphone: %s", status)
        out.put(indata[:, 0].copy())

    try:
        stream = sounddevice.InputStream(
            samplerate=SAMPLE_RATE, channels=1, dtype="float32",
            blocksize=int(PACKET_SECONDS * SAMPLE_RATE), callback=callback,
        )
        stream.start()
    except Exception as exc:
        raise RuntimeError(f"cannot open the microphone {device['name']!r} at 16 kHz mono: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from None
    print(f"listening on {device['name']} (Ctrl-C ends and writes the outputs)",
          file=sys.stderr, flush=True)
    return stream


# -- what the user sees ------------------------------------------------------------------


@dataclass
class Display:
    """Committed lines on stdout; the partial tail on stderr, overwritten on a terminal."""

    out: TextIO
    err: TextIO
    partials: bool
    terminal: bool
    _shown: bool = False

    def show(self, update: Update) -> None:
        if update.committed_text:
            self._clear()
            print(update.committed_text, file=self.out, flush=True)
        if self.partials and update.partial_text:
            if self.terminal:
                self._clear()
                self.err.write(update.partial_text[-200:])
                self._shown = True
            else:
                print(f"... {update.partial_text}", file=self.err)
            self.err.flush()

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._shown = False


# -- outputs -----------------------------------------------------------------------------


def segments_of(words: list[Word]) -> list[list[Word]]:
    """Committed words cut into output segments (subtitle-sized): at a pause, at a sentence
    end followed by a short pause, and before a segment grows past 12 s."""
    segments: list[list[Word]] = []
    for w in words:
        current = segments[-1] if segments else None
        if (
            current is None
            or w.start - current[-1].end >= SEGMENT_GAP_SECONDS
            or w.end - current[0].start > SEGMENT_MAX_SECONDS
            or (
                current[-1].text.rstrip().endswith((".", "?", "!"))
                and w.start - current[-1].end >= SENTENCE_PAUSE_SECONDS
            )
        ):
            segments.append([w])
        else:
            current.append(w)
    return segments


def result_dict(words: list[Word], language: str | None) -> dict[str, Any]:
    """The result dict WhisperX's writers take (as `TranscriptionResult.to_dict` shapes it;
    live words carry no probability, so their entries have no score)."""
    from ..api import whisperx_words

    segments = []
    word_segments: list[dict[str, Any]] = []
    for group in segments_of(words):
        pieces = [SimpleNamespace(word=w.text, start=w.start, end=w.end, probability=0.0)
                  for w in group]
        entries = [{k: v for k, v in e.items() if k != "score"}
                   for e in whisperx_words(pieces, language)]
        word_segments.extend(entries)
        segments.append({
            "start": round(group[0].start, 3),
            "end": round(group[-1].end, 3),
            "text": "".join(w.text for w in group),
            "words": entries,
        })
    text = "".join(w.text for w in words).strip()
    return {"text": text, "segments": segments, "language": language or "en",
            "word_segments": word_segments}


def write_live_outputs(
    words: list[Word], language: str | None, args: argparse.Namespace, name: str
) -> list[str]:
    from ..jobs.outputs import formats_for, write_outputs

    options = {"highlight_words": False, "max_line_width": None, "max_line_count": None}
    os.makedirs(args.output_dir, exist_ok=True)
    return write_outputs(result_dict(words, language), args.output_dir, name,
                         formats_for(args.output_format), options)


# -- the command -------------------------------------------------------------------------


def _drain(source: queue.Queue, block: float) -> tuple[list[np.ndarray], bool]:
    """Every chunk waiting (waiting up to `block` s for the first); True at the end."""
    chunks: list[np.ndarray] = []
    try:
        item = source.get(timeout=block)
        while True:
            if item is _END:
                return chunks, True
            if isinstance(item, BaseException):
                raise item
            chunks.append(item)
            item = source.get_nowait()
    except queue.Empty:
        return chunks, False


@contextmanager
def _ctrl_c_sets(interrupted: threading.Event) -> Iterator[None]:
    """While streaming, the first Ctrl-C only sets `interrupted`: the loop ends after the pass
    under way and the stream is flushed. Python's own KeyboardInterrupt can be raised inside
    a finaliser or a library's cleanup, where it is printed and dropped, and the run then
    played on to the end (exit 0 once, in the suite); a flag cannot be dropped. A second
    Ctrl-C raises KeyboardInterrupt, to skip the flush."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_live(args: argparse.Namespace, model_options: dict[str, Any]) -> int:
    """The command: open the source, stream it through one transcriber, write outputs."""
    try:
        import whisperx.utils  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "output writers come from whisperx: pip install --no-deps whisperx==3.8.6"
        ) from None
    from .. import api

    if args.min_chunk <= 0:
        raise ValueError("--min_chunk must be positive")
    if args.realtime and args.input in (None, "-"):
        logger.info("live: --realtime applies to files; this source is real time already")
    stop = threading.Event()
    chunks: queue.Queue = queue.Queue()
    microphone = None
    samples = None
    if args.input is None:
        name = args.output_name or datetime.now().strftime("live-%Y%m%d-%H%M%S")
        microphone = open_microphone(chunks)  # before the model: a missing device fails fast
    elif args.input == "-":
        if sys.stdin.isatty():
            raise ValueError("--input - reads raw PCM16 mono 16 kHz from a pipe, not a terminal")
        name = args.output_name or datetime.now().strftime("live-%Y%m%d-%H%M%S")
    else:
        samples = api.load_audio(args.input)
        name = args.output_name or os.path.splitext(os.path.basename(args.input))[0]

    model = api.get_model(**model_options)
    transcriber = StreamingTranscriber(
        model, language=args.language, task=args.task, beam_size=args.beam_size,
        min_chunk_seconds=args.min_chunk, buffer_seconds=args.buffer, vad=args.vad,
        initial_prompt=args.initial_prompt,
    )
    terminal = sys.stderr.isatty()
    display = Display(sys.stdout, sys.stderr, partials=args.partial or terminal,
                      terminal=terminal)
    if samples is not None and not args.realtime:
        source: Callable[[], Iterator[np.ndarray]] | None = None
    elif samples is not None:
        source = lambda: paced(samples, stop)  # noqa: E731
    elif args.input == "-":
        source = lambda: stdin_chunks(sys.stdin.buffer)  # noqa: E731
    else:
        source = None
    if samples is not None and args.realtime:
        print(f"streaming {args.input} at real-time pace (Ctrl-C ends and writes the outputs)",
              file=sys.stderr, flush=True)
    if source is not None:
        threading.Thread(target=_pump, args=(source(), chunks, stop), daemon=True).start()

    interrupted = threading.Event()
    flush = True
    try:
        with _ctrl_c_sets(interrupted):
            if samples is not None and not args.realtime:
                for chunk in file_chunks(samples, args.min_chunk):
                    if interrupted.is_set():
                        break
                    transcriber.insert_audio(chunk)
                    display.show(transcriber.process())
            else:
                ended = False
                while not ended and not interrupted.is_set():
                    got, ended = _drain(chunks, PACKET_SECONDS)
                    for chunk in got:
                        transcriber.insert_audio(chunk)
                    display.show(transcriber.process())
    except KeyboardInterrupt:  # a second Ctrl-C during a pass: no flush either
        flush = not interrupted.is_set()
        interrupted.set()
    finally:
        stop.set()
        if microphone is not None:
            microphone.stop()
            microphone.close()
    # The microphone's normal end; for a file or stdin an interruption (status 130).
    status = 130 if interrupted.is_set() and (microphone is None or not flush) else 0
    if interrupted.is_set():
        what = "committing what was heard and writing" if flush else "writing what is committed"
        print(f"\nstopping: {what} the outputs", file=sys.stderr, flush=True)
    try:
        if flush:
            display.show(transcriber.finish())
    except KeyboardInterrupt:  # a second Ctrl-C: write what is committed without the flush
        status = 130
    display.close()
    written = write_live_outputs(transcriber.words, transcriber.language, args, name)
    logger.info("live: wrote %s", ", ".join(written))
    print(f"{len(transcriber.words)} words; wrote {', '.join(written)} in {args.output_dir}",
          file=sys.stderr, flush=True)
    return status
