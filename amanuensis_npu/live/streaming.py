"""Streaming transcription with the LocalAgreement-2 policy over a rolling audio buffer.

Whisper hears 30 s windows, not streams, so a live transcriber transcribes a growing buffer
again each time enough new audio has arrived. Words near the end of the buffer change from
one pass to the next; a word is committed once two consecutive passes agree on it and on
everything before it (LocalAgreement-2, Macháček et al., "Turning Whisper into Real-Time
Transcription System", 2023). Committed words never change. Once the buffer is longer than
`buffer_seconds` it is cut at the end of a committed segment or sentence (in the quietest
20 ms near the gap, since Whisper's word times are approximate), and the committed text
whose audio was cut away becomes the prompt of later passes, as previous text conditions
each window of an offline transcription.

Two rules keep a word from being lost or doubled where passes overlap committed audio: a
word of a new pass whose middle lies at or before the end of the last committed word is
the committed word heard again (matched by time), and an n-gram of up to five words at the
head of the new part that repeats the tail of the committed text is dropped (matched by
normalised text, for words whose times moved).

With `vad=True` faster-whisper's Silero VAD decides whether the audio after the committed
words holds speech: if not, the model does not run, and silence is dropped from the
buffer. Passes also use faster-whisper's `vad_filter`, so silence inside the buffer
does not make Whisper invent text.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

import numpy as np

logger = logging.getLogger("amanuensis_npu.live")

PROMPT_CHARS = 200  # committed text prompting a pass (whisper_streaming's size)
MAX_BUFFER_SECONDS = 30.0  # Whisper's window: past it a pass costs two encoder windows
KEEP_SILENCE_SECONDS = 0.5  # of trailing silence kept when silence is dropped
UTTERANCE_END_SECONDS = 0.5  # of silence after the VAD's padded speech: an utterance ended
TRIM_PAUSE_SECONDS = 0.5  # a pause between two words ends a segment for trimming
CUT_SEARCH_SECONDS = 0.1  # a cut goes to the quietest 20 ms this far around a word gap
NO_SPEECH_SKIP = 0.9  # segments Whisper itself calls silence this surely carry no words
_SENTENCE_END = (".", "?", "!", "\u3002", "\uff1f", "\uff01")
_OVERLAP_NGRAM = 5
_PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"  # openai/whisper's, for the anomaly test


def _anomalous(words: Sequence[Any]) -> bool:
    """Whisper's own test for a hallucinated segment (openai/whisper transcribe.py,
    `is_segment_anomaly`, which faster-whisper applies with `hallucination_silence_threshold`):
    its first eight words are mostly improbable, or far too short or too long. At the open
    end of a live buffer Whisper often invents a sentence of zero-length words there
    ("And then we're going to go back to Dublin.", each 0.00 s, after a lecture's pause), and
    an utterance end would commit it: such a segment is not taken from the pass."""

    def score(word: Any) -> float:
        duration = word.end - word.start
        value = 1.0 if word.probability < 0.15 else 0.0
        if duration < 0.133:
            value += (0.133 - duration) * 15
        if duration > 2.0:
            value += duration - 2.0
        return value

    kept = [w for w in words if w.word.strip() not in _PUNCTUATION][:8]
    if not kept:
        return False
    total = sum(score(w) for w in kept)
    return total >= 3 or total + 0.01 >= len(kept)


@dataclass(frozen=True)
class Word:
    """One word, timed on the stream's clock (seconds since its first sample)."""

    start: float
    end: float
    text: str  # as faster-whisper's words: leading space, punctuation attached


def _join(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words).strip()


@dataclass
class Update:
    """What one call changed: words committed now, and the tail that may still change."""

    committed: list[Word] = field(default_factory=list)
    partial: list[Word] = field(default_factory=list)

    @property
    def committed_text(self) -> str:
        return _join(self.committed)

    @property
    def partial_text(self) -> str:
        return _join(self.partial)


def _key(text: str) -> str:
    """A word as passes are compared: case, spaces and punctuation do not count, since a
    later pass often capitalises or punctuates a word differently once it hears more."""
    return "".join(ch for ch in text.lower() if unicodedata.category(ch)[0] in "LN")


def _agreed(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """How many words the two hypotheses share from their start (compared by `_key`)."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if _key(a.text) != _key(b.text):
            break
        n += 1
    return n


class StreamingTranscriber:
    """One audio stream's live transcript (LocalAgreement-2 over a rolling buffer).

    `model` is a `faster_whisper.WhisperModel` (stock or `amanuensis_npu.WhisperModel`);
    only its public `transcribe` is called. Feed float32 mono 16 kHz samples with
    `insert_audio`, call `process` as often as convenient (it transcribes only when at
    least `min_chunk_seconds` of new audio arrived) and `finish` at the end of the stream.

    Not thread-safe, by design: one transcriber per stream, driven by one thread (the
    model may be shared between transcribers as faster-whisper allows).
    """

    SAMPLE_RATE = 16000

    def __init__(
        self,
        model: Any,
        *,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = 5,
        min_chunk_seconds: float = 1.0,
        buffer_seconds: float = 15.0,
        vad: bool = True,
        initial_prompt: str | None = None,
    ) -> None:
        if min_chunk_seconds <= 0:
            raise ValueError(f"min_chunk_seconds must be positive, got {min_chunk_seconds}")
        if not 0 < buffer_seconds <= MAX_BUFFER_SECONDS:
            raise ValueError(
                f"buffer_seconds must be in (0, {MAX_BUFFER_SECONDS:g}], got {buffer_seconds}"
            )
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
        self._model = model
        self._language = language
        self._task = task
        self._beam_size = beam_size
        self._min_chunk = int(round(min_chunk_seconds * self.SAMPLE_RATE))
        self._buffer_seconds = buffer_seconds
        self._vad = vad
        self._initial_prompt = initial_prompt
        self.reset()

    # -- the public calls -------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream: a new one starts at time 0 (the model is kept)."""
        self._audio = np.zeros(0, dtype=np.float32)
        self._offset = 0.0  # the stream time of self._audio[0]
        self._unprocessed = 0  # samples inserted since the last pass
        self._committed: list[Word] = []
        self._tentative: list[Word] = []  # the last pass's words past the committed ones
        self._detected: str | None = None  # the language, once a pass has heard words

    def insert_audio(self, samples: np.ndarray) -> None:
        """Append float32 mono 16 kHz samples in [-1, 1] (PCM16 divided by 32768)."""
        array = np.asarray(samples)
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"expected float samples in [-1, 1], got {array.dtype} (PCM16: divide by 32768)"
            )
        if array.size:
            self._audio = np.concatenate([self._audio, array.astype(np.float32, copy=False)])
            self._unprocessed += array.size

    def process(self) -> Update:
        """Transcribe the buffer if `min_chunk_seconds` of new audio arrived; else an empty
        Update (no words committed and no partial: nothing was heard since the last call)."""
        if self._unprocessed < self._min_chunk:
            return Update()
        return self._pass(final=False)

    def finish(self) -> Update:
        """End of stream: commit everything still heard (one last pass over audio not yet
        transcribed). The clock keeps running if audio follows; `reset` starts afresh."""
        if self._unprocessed:
            update = self._pass(final=True)
        else:
            update = Update(self._tentative, [])
            self._committed.extend(self._tentative)
            self._tentative = []
        self._offset += self._audio.size / self.SAMPLE_RATE
        self._audio = np.zeros(0, dtype=np.float32)
        return update

    @property
    def words(self) -> list[Word]:
        """Every word committed so far, in order."""
        return list(self._committed)

    @property
    def language(self) -> str | None:
        """The language given, else the one detected by the first pass that heard words."""
        return self._language or self._detected

    @property
    def buffer_start(self) -> float:
        """The stream time where the audio buffer now begins (it moves at each trim)."""
        return self._offset

    # -- one pass ---------------------------------------------------------------------

    def _pass(self, final: bool) -> Update:
        self._unprocessed = 0
        speech_end = self._speech_end() if self._vad else None
        if self._vad and speech_end is None:
            logger.debug("live: no speech after %.2f s, model not run", self._last_end())
            if final:
                commit, self._tentative = self._tentative, []
                self._committed.extend(commit)
                return Update(commit, [])
            if not self._tentative:
                self._drop_silence()
            return Update([], list(self._tentative))
        buffer_end = self._offset + self._audio.size / self.SAMPLE_RATE
        pausing = speech_end is not None and buffer_end - speech_end >= UTTERANCE_END_SECONDS
        hypothesis, segment_ends = self._transcribe()
        heard = self._heard_again(hypothesis)
        new = hypothesis[heard:]
        if final or (pausing and all(w.end <= speech_end for w in new)):
            # The end of the stream, or of an utterance: this pass heard all of it.
            commit, self._tentative = new, []
        else:
            n = _agreed(self._tentative, new)
            commit, self._tentative = new[:n], new[n:]
        self._committed.extend(commit)
        if not final:
            self._trim(hypothesis[: heard + len(commit)], segment_ends, hypothesis)
        return Update(commit, list(self._tentative))

    def _last_end(self) -> float:
        return self._committed[-1].end if self._committed else self._offset

    def _speech_end(self) -> float | None:
        """Where the speech after the committed words ends (stream time, the VAD's padding
        included), or None if there is none: faster-whisper's Silero VAD, with pauses of
        half a second ending speech (its default of two seconds is for cutting files)."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        start = max(0, int((self._last_end() - self._offset) * self.SAMPLE_RATE))
        region = self._audio[start:]
        if not region.size:
            return None
        spans = get_speech_timestamps(region, VadOptions(min_silence_duration_ms=500))
        if not spans:
            return None
        return self._offset + (start + spans[-1]["end"]) / self.SAMPLE_RATE

    def _prompt(self) -> str | None:
        """The committed text whose audio has left the buffer, its last ~200 characters
        (cut at a word), after the initial prompt; the committed words still in the buffer
        are heard again, and prompting with them would make Whisper skip them."""
        gone = [w for w in self._committed if (w.start + w.end) / 2 <= self._offset]
        text = " ".join(filter(None, [(self._initial_prompt or "").strip(), _join(gone)]))
        if len(text) > PROMPT_CHARS:
            text = text[-PROMPT_CHARS:]
            text = text.split(" ", 1)[1] if " " in text else text
        return text or None

    def _transcribe(self) -> tuple[list[Word], set[int]]:
        """One pass over the buffer: its words on the stream clock, and the indices of the
        words that end a segment.

        With timestamp tokens, as faster-whisper decodes by default. A buffer cut
        mid-speech makes faster-whisper (as Whisper) decode its unfinished last segment
        again in a second window, so such a pass costs two encoder runs; without timestamp
        tokens it would cost one, but then Whisper loops on short buffers: base heard
        "He was not. He was not." in the first second of a clip and repeated a whole
        sentence at its end, and both tiny.en and base had such loops committed."""
        segments, info = self._model.transcribe(
            self._audio,
            language=self._language or self._detected,
            task=self._task,
            beam_size=self._beam_size,
            word_timestamps=True,
            initial_prompt=self._prompt(),
            condition_on_previous_text=True,
            vad_filter=self._vad,
        )
        words: list[Word] = []
        ends: set[int] = set()
        for segment in segments:
            if segment.no_speech_prob > NO_SPEECH_SKIP:
                continue
            if segment.words and _anomalous(segment.words):
                logger.debug("live: dropped a hallucinated segment: %s", segment.text.strip())
                continue
            for w in segment.words or ():
                words.append(Word(self._offset + w.start, self._offset + w.end, w.word))
            if words and segment.words:
                ends.add(len(words) - 1)
        if words and self._language is None and self._detected is None:
            # Per-pass detection would let the language flip on a short or noisy buffer.
            self._detected = info.language
            logger.info("live: language %s (p=%.2f)", info.language, info.language_probability)
        logger.debug(
            "live: pass over %.2f-%.2f s: %d words",
            self._offset, self._offset + self._audio.size / self.SAMPLE_RATE, len(words),
        )
        return words, ends

    def _heard_again(self, hypothesis: list[Word]) -> int:
        """How many words at the head of this pass are committed words heard again.

        By content first: the committed words still in the buffer are aligned with the
        pass (difflib), and the pass's word matched with the last committed word, if its
        start is within a second of that word's, is the last one heard again. A committed
        word at the edge of a buffer often gets an end stretched over the next word's
        audio, so times alone would drop that next word. When the last committed word has
        no match (the pass heard it otherwise), by time: a word whose middle lies at or
        before the last committed end, then an n-gram of up to five words at the head of
        the rest repeating the committed tail."""
        if not self._committed or not hypothesis:
            return 0
        last = self._committed[-1]
        in_buffer = [_key(w.text) for w in self._committed if w.end > self._offset + 1e-6]
        if in_buffer:
            keys = [_key(w.text) for w in hypothesis]
            matcher = SequenceMatcher(None, in_buffer, keys, autojunk=False)
            for a, b, size in reversed(matcher.get_matching_blocks()):
                if size and a + size == len(in_buffer):
                    j = b + size - 1
                    if abs(hypothesis[j].start - last.start) < 1.0:
                        return j + 1
                    break
        heard = 0
        while heard < len(hypothesis) and (
            hypothesis[heard].start + hypothesis[heard].end
        ) / 2 <= last.end:
            heard += 1
        rest = hypothesis[heard:]
        if rest and abs(rest[0].start - last.end) < 1.0:
            tail = [_key(w.text) for w in self._committed[-_OVERLAP_NGRAM:]]
            for n in range(min(len(tail), len(rest)), 0, -1):
                if tail[-n:] == [_key(w.text) for w in rest[:n]]:
                    logger.debug("live: dropped %d re-heard word(s): %s", n, _join(rest[:n]))
                    return heard + n
        return heard

    # -- the buffer -------------------------------------------------------------------

    def _cut(self, time: float) -> None:
        samples = int(round((time - self._offset) * self.SAMPLE_RATE))
        if samples <= 0:
            return
        self._audio = self._audio[samples:]
        self._offset += samples / self.SAMPLE_RATE
        logger.debug("live: buffer cut at %.2f s", self._offset)

    def _trim(
        self, committed: list[Word], segment_ends: set[int], hypothesis: list[Word]
    ) -> None:
        """Past `buffer_seconds`, cut after the last word of this pass that is committed
        (`committed`, the pass's head) and ends a segment, a pause or a sentence, between it
        and the next word: everything before the cut is committed, and what the pass heard
        after it stays in the buffer. Past Whisper's 30 s window, after the last committed word of
        the pass, whatever it ends."""
        seconds = self._audio.size / self.SAMPLE_RATE
        if seconds <= self._buffer_seconds:
            return
        full = seconds > MAX_BUFFER_SECONDS - self._min_chunk / self.SAMPLE_RATE
        if not committed:
            if full and not hypothesis:  # 30 s in which Whisper heard nothing (VAD off)
                self._cut(self._offset + seconds - self._buffer_seconds)
            return
        cut_after = forced = None
        for i, w in enumerate(committed):
            nxt = hypothesis[i + 1] if i + 1 < len(hypothesis) else None
            forced = (w, nxt)
            pause = nxt is not None and nxt.start - w.end >= TRIM_PAUSE_SECONDS
            if i in segment_ends or pause or w.text.rstrip().endswith(_SENTENCE_END):
                cut_after = (w, nxt)
        if cut_after is None and full:
            cut_after = forced
        if cut_after is not None:
            w, nxt = cut_after
            if nxt is None:
                self._cut(w.end)
            else:
                self._cut(self._quietest(w.end, max(w.end, nxt.start)))

    def _quietest(self, start: float, end: float) -> float:
        """The middle of the quietest 20 ms from `start` to `end` (stream times), widened by
        `CUT_SEARCH_SECONDS` each side. Whisper's word times are off by a tenth of a second
        or more: tiny.en put "And" 0.13 s after its start, and a cut in the middle of the
        gap it saw fell inside the word, which no later pass then heard."""
        frame, hop = int(0.02 * self.SAMPLE_RATE), int(0.01 * self.SAMPLE_RATE)
        lo = int((start - CUT_SEARCH_SECONDS - self._offset) * self.SAMPLE_RATE)
        hi = int((end + CUT_SEARCH_SECONDS - self._offset) * self.SAMPLE_RATE)
        lo, hi = max(lo, 0), min(hi, self._audio.size)
        if hi - lo < frame:
            return (start + end) / 2
        region = self._audio[lo:hi].astype(np.float64)
        energy = np.convolve(region * region, np.ones(frame), mode="valid")[::hop]
        best = lo + int(np.argmin(energy)) * hop + frame // 2
        return self._offset + best / self.SAMPLE_RATE

    def _drop_silence(self) -> None:
        """No speech after the committed words and nothing tentative: the buffer's audio
        past its last half second is not needed, once it holds no committed speech or has
        grown past `buffer_seconds` (a pause inside a sentence keeps its context)."""
        seconds = self._audio.size / self.SAMPLE_RATE
        holds_committed = bool(self._committed) and self._committed[-1].end > self._offset
        if holds_committed and seconds <= self._buffer_seconds:
            return
        end = self._offset + seconds
        self._cut(max(end - KEEP_SILENCE_SECONDS, self._last_end()))
