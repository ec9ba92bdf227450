"""Word error rate against reference transcripts, the way the accuracy targets are stated.

References come as `<clip>.txt` (plain text) or `<clip>.stm` (speaker turns with
times; only hypothesis words inside the STM's time span count, because the
recording has unlabelled audio outside it). Both sides go through Whisper's own English
normaliser (`normalize`) before jiwer aligns and scores them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@functools.cache
def _whisper_normalizer() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()  # reads its British/American spelling table once


def normalize(text: str) -> str:
    """Whisper's own English text normaliser (`EnglishTextNormalizer`, whisper/normalizers/
    english.py, from the `whisper-normalizer` package), the one Whisper's paper and the Open
    ASR Leaderboard score with.

    Why not a table of our own: Whisper writes a spoken "ten" as "ten" or "10" depending on
    a near-tie that the CPU's arithmetic can tip, and spells currencies, British/American
    spellings and contractions either way; the published normaliser maps each pair to one
    form ("ten of clubs" and "10 of clubs" -> "10 of clubs", "didn't" -> "did not",
    "colour" -> "color"), so neither spelling counts as an error and our WERs compare with
    published ones.
    """
    return " ".join(_whisper_normalizer()(text).split())


@dataclass
class Reference:
    """A reference transcript and, for STM files, the time span it covers."""

    text: str
    start: float | None = None
    end: float | None = None


def find_reference(audio: str | Path) -> Reference | None:
    """The `.txt` or `.stm` next to an audio file, if there is one."""
    audio = Path(audio)
    txt = audio.with_suffix(".txt")
    if txt.is_file():
        return Reference(txt.read_text(encoding="utf-8").strip())
    stm = audio.with_suffix(".stm")
    if stm.is_file():
        return read_stm(stm)
    return None


def read_stm(path: str | Path) -> Reference:
    """Reference text of an STM file and the time range it covers.

    STM lines are `file channel speaker start end [<label>] text`; lines
    starting with `;;` are comments and `ignore_time_segment_in_scoring`
    segments carry no reference words.
    """
    rows: list[tuple[float, float, str]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(";;"):
            continue
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            raise ValueError(f"{path}: malformed STM line: {line!r}")
        start, end = float(parts[3]), float(parts[4])
        text = parts[5] if len(parts) > 5 else ""
        text = re.sub(r"^<[^>]*>\s*", "", text)
        if text.strip().lower() == "ignore_time_segment_in_scoring":
            continue
        rows.append((start, end, text))
    if not rows:
        raise ValueError(f"{path}: STM file has no scored segments")
    rows.sort()
    return Reference(" ".join(t for _, _, t in rows), rows[0][0], max(e for _, e, _ in rows))


def hypothesis_text(segments: list[Any], reference: Reference) -> str:
    """The hypothesis words that fall inside the reference's span (all words for .txt).

    With an STM, segments must carry word timestamps; a word counts when its
    midpoint lies inside the span.
    """
    if reference.start is None or reference.end is None:
        return " ".join(_text(s) for s in segments)
    kept = []
    for seg in segments:
        words = seg.words if hasattr(seg, "words") else seg.get("words")
        if not words:
            raise ValueError("STM references need word timestamps (word_timestamps=True)")
        for w in words:
            if isinstance(w, dict):
                start, end, word = w["start"], w["end"], w["word"]
            else:
                start, end, word = w.start, w.end, w.word
            if reference.start <= (start + end) / 2 <= reference.end:
                kept.append(word)
    return "".join(kept)


def _text(segment: Any) -> str:
    return segment.text if hasattr(segment, "text") else segment["text"]


def wer(reference: str, hypothesis: str) -> float:
    """WER of normalised texts (jiwer), 0.0 for an empty reference and hypothesis."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def word_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words), for pooling WER over several clips."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())
