"""Apply, check or revert patches/whisperx-3.8.6-npu.patch on the installed whisperx.

`amanuensis-npu patch-whisperx [--dry-run|--revert]` calls `run()`. The patch
is applied here in Python rather than with `patch`/`git apply`, because
neither program is guaranteed on a user's machine, and because we want an
all-or-nothing result: every hunk is checked against the file before anything
is written, and each file is replaced atomically. A hunk must match exactly at
its line number or nearby; a whisperx that is not 3.8.6 (or was edited) is
refused with the hunk that does not fit, never patched half-way.

The whisperx found is the one Python would import (`importlib.util.find_spec`),
so `PYTHONPATH=/tmp/copy amanuensis-npu patch-whisperx` patches a copy.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

PATCH_NAME = "whisperx-3.8.6-npu.patch"
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_FUZZ_LINES = 200


class PatchError(RuntimeError):
    """The patch cannot be applied or reverted cleanly; nothing was written."""


@dataclass
class Hunk:
    old_start: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


@dataclass
class FilePatch:
    path: str  # relative to the directory that holds the whisperx package
    hunks: list[Hunk] = field(default_factory=list)


def patch_file() -> Path:
    """Where the patch lives: the source tree, or the data dir a wheel installs it to."""
    candidates = [
        Path(__file__).resolve().parents[2] / "patches" / PATCH_NAME,
        Path(sysconfig.get_path("data")) / "share" / "amanuensis-npu" / "patches" / PATCH_NAME,
        Path(sys.prefix) / "share" / "amanuensis-npu" / "patches" / PATCH_NAME,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise PatchError(f"{PATCH_NAME} not found (looked in {', '.join(map(str, candidates))})")


def parse_patch(text: str) -> list[FilePatch]:
    """Unified diff -> files and hunks. Text before the first `---` (the header) is ignored."""
    lines = text.splitlines(keepends=True)
    files: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            target = lines[i + 1][4:].strip().split("\t")[0]
            files.append(FilePatch(path=target.split("/", 1)[1] if "/" in target else target))
            i += 2
            continue
        match = _HUNK_RE.match(line)
        if match and files:
            old_len = int(match.group(2) or "1")
            new_len = int(match.group(4) or "1")
            hunk = Hunk(old_start=int(match.group(1)))
            i += 1
            while i < len(lines) and (len(hunk.old) < old_len or len(hunk.new) < new_len):
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    i += 1
                    continue
                # A blank context line may have lost its leading space in transit.
                tag, content = (" ", body) if body in ("\n", "\r\n") else (body[:1], body[1:])
                if tag == " ":
                    hunk.old.append(content)
                    hunk.new.append(content)
                elif tag == "-":
                    hunk.old.append(content)
                elif tag == "+":
                    hunk.new.append(content)
                else:
                    raise PatchError(f"malformed hunk line {i + 1}: {body!r}")
                i += 1
            if len(hunk.old) != old_len or len(hunk.new) != new_len:
                raise PatchError(f"truncated hunk in patch near line {i}")
            files[-1].hunks.append(hunk)
            continue
        i += 1
    if not files:
        raise PatchError("no file changes found in the patch")
    return files


def _find(lines: list[str], block: list[str], expected: int) -> int | None:
    """Index where `block` occurs, trying the expected line first, then nearby."""
    n = len(block)
    for delta in range(_FUZZ_LINES + 1):
        for pos in {expected + delta, expected - delta}:
            if 0 <= pos <= len(lines) - n and lines[pos : pos + n] == block:
                return pos
    return None


def _transform(lines: list[str], hunks: list[Hunk], reverse: bool) -> list[str] | None:
    """Apply all hunks (or their reverse); None if any hunk does not match."""
    out = list(lines)
    shift = 0
    for hunk in hunks:
        src, dst = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        pos = _find(out, src, hunk.old_start - 1 + shift)
        if pos is None:
            return None
        out[pos : pos + len(src)] = dst
        shift += len(dst) - len(src)
    return out


def whisperx_root() -> Path:
    """The directory holding the `whisperx` package Python would import."""
    spec = importlib.util.find_spec("whisperx")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError("whisperx is not installed (pip install --no-deps whisperx==3.8.6)")
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def status(root: Path, files: list[FilePatch]) -> str:
    """'applied', 'unapplied', or raise PatchError naming the file that fits neither."""
    states = set()
    for fp in files:
        target = root / fp.path
        if not target.is_file():
            raise PatchError(f"{target}: missing; is this whisperx 3.8.6?")
        lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
        if _transform(lines, fp.hunks, reverse=False) is not None:
            states.add("unapplied")
        elif _transform(lines, fp.hunks, reverse=True) is not None:
            states.add("applied")
        else:
            raise PatchError(
                f"{target} matches neither stock whisperx 3.8.6 nor the patched file; "
                "not touching it (reinstall whisperx==3.8.6 first)"
            )
    if len(states) != 1:
        raise PatchError("whisperx is partly patched; reinstall whisperx==3.8.6 and retry")
    return states.pop()


def _write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run(
    dry_run: bool = False,
    revert: bool = False,
    target: str | os.PathLike | None = None,
    out: TextIO | None = None,
) -> int:
    """Apply (or revert) the patch; `dry_run` only reports. Returns a process exit status.

    `target` is the directory holding the `whisperx` package (default: the
    installed one). Re-applying an applied patch, or reverting an unapplied
    one, is a no-op that succeeds.
    """
    out = out or sys.stdout
    try:
        source = patch_file()
        files = parse_patch(source.read_text(encoding="utf-8"))
        root = Path(target).resolve() if target else whisperx_root()
        if root.name == "whisperx" and (root / "__init__.py").is_file():
            root = root.parent  # given the package itself rather than its parent
        state = status(root, files)
        want = "unapplied" if revert else "applied"
        verb = "revert" if revert else "apply"
        if state == want:
            print(f"whisperx at {root / 'whisperx'}: patch already {want}; nothing to do", file=out)
            return 0
        changes = []
        for fp in files:
            path = root / fp.path
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            result = _transform(lines, fp.hunks, reverse=revert)
            if result is None:  # status() said it fits; keep the all-or-nothing promise anyway
                raise PatchError(f"{path}: hunk does not match")
            changes.append((path, "".join(result), len(fp.hunks)))
        for path, text, n_hunks in changes:
            if dry_run:
                print(f"would {verb} {source.name} to {path} ({n_hunks} hunks)", file=out)
            else:
                _write_atomic(path, text)
                print(f"{'reverted' if revert else 'applied'} {source.name}: {path}", file=out)
        if dry_run:
            print("dry run: nothing changed", file=out)
        return 0
    except (PatchError, OSError) as exc:
        print(f"patch-whisperx: error: {exc}", file=sys.stderr)
        return 1


def patch_state() -> str:
    """One phrase for `amanuensis-npu info`: is plain `whisperx --device npu` routed to us?"""
    try:
        state = status(whisperx_root(), parse_patch(patch_file().read_text(encoding="utf-8")))
    except (PatchError, OSError) as exc:
        return f"unknown ({exc})"
    return "applied" if state == "applied" else "not applied (amanuensis-npu patch-whisperx)"


def main(argv: list[str] | None = None) -> int:
    """`python -m amanuensis_npu.integrations.whisperx_patch [--dry-run] [--revert] [--target]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="patch-whisperx", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="show what would change")
    parser.add_argument("--revert", action="store_true", help="remove the patch")
    parser.add_argument("--target", help="directory holding the whisperx package")
    args = parser.parse_args(argv)
    return run(dry_run=args.dry_run, revert=args.revert, target=args.target)


if __name__ == "__main__":
    sys.exit(main())
