"""What to transcribe and where each output goes.

Inputs come as files, directories (walked recursively; audio is recognised by its
extension) and manifests (one path per line, or CSV with a `path` column). Every input
gets an output name relative to the output directory that mirrors where it came from, so
equal names in different folders never collide; inputs that would still share a name
(`lecture.mp3` and `lecture.m4a` side by side) keep their extension in it. All of it is
checked before any model is loaded, so a typo is reported at once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Containers and codecs PyAV (faster-whisper's decoder) reads that people keep speech in.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".oga", ".opus", ".aac", ".wma", ".aif",
        ".aiff", ".amr", ".mka", ".webm", ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".3gp",
    }
)

NAMING_HELP = (
    "Outputs are named after their input (talk.wav -> talk.txt); inputs found in a directory "
    "keep their place in its tree under --output_dir. Inputs that would share an output name "
    "keep their extension in it (lecture.mp3 -> lecture.mp3.txt, lecture.m4a -> "
    "lecture.m4a.txt), and equal names from different folders given on the command line are "
    "numbered (talk.wav.txt, talk.wav.2.txt), so no output ever overwrites another."
)


@dataclass(frozen=True)
class Input:
    """One audio file of a job."""

    path: str  # absolute: the journal's key
    shown: str  # as the user named it, for messages
    rel: str  # natural output name relative to the output directory, without extension


class InputError(ValueError):
    """A manifest or command line that cannot be turned into inputs."""


def is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def collect_inputs(
    paths: Sequence[str], manifests: Sequence[str] = ()
) -> tuple[list[Input], list[str]]:
    """The inputs named by `paths` and `manifests`, in order, each once; and one-line errors.

    A missing path or a directory without audio is an error for that path only; the
    others are still returned.
    """
    inputs: list[Input] = []
    errors: list[str] = []
    for path in paths:
        _expand(path, None, inputs, errors)
    for manifest in manifests:
        try:
            entries = read_manifest(manifest)
        except (OSError, InputError) as exc:
            errors.append(str(exc) if isinstance(exc, InputError) else f"{manifest}: {_why(exc)}")
            continue
        base = os.path.dirname(os.path.abspath(manifest))
        for entry in entries:
            _expand(os.path.join(base, entry), base, inputs, errors, shown=entry)
    seen: set[str] = set()
    unique = []
    for item in inputs:
        if item.path not in seen:
            seen.add(item.path)
            unique.append(item)
    return unique, errors


def read_manifest(manifest: str) -> list[str]:
    """Paths listed in a manifest: one per line (`#` comments), or CSV with a `path` column."""
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputError(f"{manifest}: no such manifest") from None
    except UnicodeDecodeError:
        raise InputError(f"{manifest}: not a text file (one path per line, or CSV)") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    columns = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    if "path" in columns:
        index = columns.index("path")
        rows = csv.reader(io.StringIO("\n".join(lines[1:])))
        return [row[index].strip() for row in rows if len(row) > index and row[index].strip()]
    first = os.path.join(os.path.dirname(os.path.abspath(manifest)), lines[0].strip())
    if len(columns) > 1 and not os.path.exists(first):
        raise InputError(f"{manifest}: a CSV manifest needs a 'path' column")
    return [ln.strip() for ln in lines]


def _expand(
    path: str, base: str | None, out: list[Input], errors: list[str], shown: str | None = None
) -> None:
    shown = shown or path
    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        found = 0
        for root, dirs, files in os.walk(absolute):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not is_audio(name):
                    continue
                full = os.path.join(root, name)
                inside = os.path.relpath(full, absolute)
                rel = _manifest_rel(full, base) if base is not None else inside
                out.append(Input(full, os.path.join(shown, inside), _strip_ext(rel)))
                found += 1
        if not found:
            extensions = ", ".join(sorted(AUDIO_EXTENSIONS))
            errors.append(f"{shown}: no audio files in this directory (looked for {extensions})")
        return
    if not os.path.exists(absolute):
        errors.append(f"{shown}: no such file")
        return
    rel = _manifest_rel(absolute, base) if base is not None else os.path.basename(absolute)
    out.append(Input(absolute, shown, _strip_ext(rel)))


def _manifest_rel(path: str, base: str) -> str:
    """Where a manifest entry's outputs go: its path from the manifest's folder, or from `/`."""
    rel = os.path.relpath(path, base)
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):
        drive, tail = os.path.splitdrive(path)
        rel = os.path.join(drive.strip(":\\/"), tail.lstrip("\\/")) if drive else tail.lstrip("/")
    return rel


def _strip_ext(rel: str) -> str:
    return os.path.splitext(rel)[0]


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def assign_names(inputs: Iterable[Input], fixed: Mapping[str, str] | None = None) -> dict[str, str]:
    """Output name (relative, no extension) for each input path; no two are equal.

    `fixed` holds names already written by earlier runs (input path -> name): those
    inputs keep them and nobody else may take them. Comparison ignores case, as the
    file systems of macOS and Windows do. Deterministic: the same inputs give the same
    names whatever the order of earlier runs.
    """
    inputs = list(inputs)
    paths = {item.path for item in inputs}
    fixed = {p: n for p, n in (fixed or {}).items() if p in paths}
    names: dict[str, str] = dict(fixed)
    taken = {n.casefold() for n in fixed.values()}
    groups: dict[str, list[Input]] = {}
    for item in inputs:
        if item.path not in names:
            groups.setdefault(item.rel.casefold(), []).append(item)
    plain = [g[0] for g in groups.values() if len(g) == 1 and g[0].rel.casefold() not in taken]
    for item in plain:
        names[item.path] = item.rel
        taken.add(item.rel.casefold())
    for group in groups.values():
        for item in group:
            if item.path in names:
                continue
            ext = os.path.splitext(item.path)[1]
            candidate = item.rel + ext
            number = 1
            while candidate.casefold() in taken:
                number += 1
                candidate = f"{item.rel}{ext}.{number}"
            names[item.path] = candidate
            taken.add(candidate.casefold())
    return names


def probe_duration(path: str) -> float:
    """Seconds of audio from the container's metadata (cheap: nothing is decoded); 0 if unknown."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            streams = container.streams.audio
            if streams and streams[0].duration is not None and streams[0].time_base:
                return float(streams[0].duration * streams[0].time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except Exception:  # unreadable here: transcription will say why
        return 0.0
    return 0.0
