"""Live transcription against the offline transcript of the same audio by the same model.

Simulated real time: audio arrives on the audio clock in packets (default 100 ms); each
`process()` call advances the clock by its measured wall time, and audio that arrived
meanwhile is fed before the next call. Nothing sleeps, so a clip costs only its compute,
while every commit gets the time at which a real-time loop would have had it. Printed per
clip and pooled:

- word difference: WER of the live text against the offline text (Whisper's normaliser);
- lost / duplicated words at trims: offline words missing within a second of a buffer
  trim, and live words that repeat their neighbour where the offline text does not;
- latency: from a word's end in the audio (the offline transcript's time for the word,
  when aligned) to the clock time at which the call committing it returned (p50 / p95);
- real-time factor: compute time / audio time;
- WER of the offline and of the live text against the human reference, where there is one;
- offline against itself: a second offline transcription's word difference from the first.
  Where faster-whisper falls back to sampling (temperature 0.2 and up, as on the noisy
  conversation), the offline text is one draw of several, and this is the floor of `diff`.

`--streams 1,2,3` then streams the first clip N times at once at real pace (wall clock,
sleeping between packets), one pass at a time on the one model as the server runs them,
and prints each N's latency and how far the streams ended behind the audio: the number of
live streams one process keeps up with.

    python benchmarks/live.py [--model base] [--compute_type default] [--streams 1,2]
    python benchmarks/live.py --live_beam_size 2   # cheaper live passes, beam-5 reference
    python benchmarks/live.py --repeat 3           # each run is one draw: median, range
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from difflib import SequenceMatcher
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech"
DEFAULT_CLIPS = [
    SPEECH / "lecture" / "lecture.wav",
    SPEECH / "conversation" / "sample.wav",
    *sorted((SPEECH / "librivox").glob("*.wav")),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def stream(transcriber, audio: np.ndarray, packet: float) -> dict:  # noqa: ANN001
    """Feed `audio` on the simulated clock; commits as (word, clock time), trims, compute."""
    sr = transcriber.SAMPLE_RATE
    step = int(round(packet * sr))
    clock = compute = 0.0
    fed = 0
    commits: list[tuple[object, float]] = []
    trims: list[float] = []
    start = transcriber.buffer_start
    while fed < audio.size:
        while fed < audio.size and (fed + step) / sr <= clock + 1e-9:
            transcriber.insert_audio(audio[fed : fed + step])
            fed += step
        t0 = time.perf_counter()
        update = transcriber.process()
        spent = time.perf_counter() - t0
        compute += spent
        clock += spent
        commits += [(w, clock) for w in update.committed]
        if transcriber.buffer_start != start:
            start = transcriber.buffer_start
            trims.append(start)
        if fed < audio.size and (fed + step) / sr > clock:
            clock = (fed + step) / sr  # wait for the next packet
    clock = max(clock, audio.size / sr)
    t0 = time.perf_counter()
    update = transcriber.finish()
    spent = time.perf_counter() - t0
    compute += spent
    commits += [(w, clock + spent) for w in update.committed]
    return {"commits": commits, "trims": trims, "compute": compute}


def new_transcriber(model, args: argparse.Namespace):  # noqa: ANN001, ANN201
    """A stream's transcriber with the command line's policy options."""
    from amanuensis_npu.live import StreamingTranscriber

    return StreamingTranscriber(
        model, language=args.language, beam_size=args.live_beam_size,
        min_chunk_seconds=args.min_chunk, buffer_seconds=args.buffer,
    )


def paced_stream(transcriber, audio: np.ndarray, packet: float, t0: float,  # noqa: ANN001
                 lock: threading.Lock) -> dict:
    """Feed `audio` at real pace from wall time `t0`; passes run one at a time under `lock`.
    Before each pass every packet that has arrived by then is fed, as the command and the
    server drain their queues (feeding one packet per pass kept a late stream late for
    good). Commits as (word, seconds since t0), and the lag: finish time minus audio end."""
    sr = transcriber.SAMPLE_RATE
    step = int(round(packet * sr))
    commits: list[tuple[object, float]] = []
    compute = 0.0
    fed = 0
    while fed < audio.size:
        arrived = min(audio.size, int((time.perf_counter() - t0) * sr) // step * step)
        if arrived <= fed:
            time.sleep(max(0.0, t0 + (fed + step) / sr - time.perf_counter()))
            continue
        transcriber.insert_audio(audio[fed:arrived])
        fed = arrived
        with lock:
            t = time.perf_counter()
            update = transcriber.process()
            compute += time.perf_counter() - t
        commits += [(w, time.perf_counter() - t0) for w in update.committed]
    with lock:
        t = time.perf_counter()
        update = transcriber.finish()
        compute += time.perf_counter() - t
    done = time.perf_counter() - t0
    commits += [(w, done) for w in update.committed]
    return {"commits": commits, "lag": done - audio.size / sr, "compute": compute}


def concurrent_streams(model, audio: np.ndarray, offline: list, n: int,  # noqa: ANN001
                       args: argparse.Namespace) -> str:
    """One line: `n` streams of `audio` at once, their latency, lag and word difference."""
    from amanuensis_npu.evaluation import word_counts

    lock = threading.Lock()
    runs: list[dict] = [{} for _ in range(n)]
    t0 = time.perf_counter() + 0.5

    def one(i: int) -> None:  # streams start 0.3 s apart, not on the same packet
        runs[i] = paced_stream(new_transcriber(model, args), audio, args.packet, t0 + i * 0.3,
                               lock)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies: list[float] = []
    errors = words = 0
    for run in runs:
        live = [w for w, _ in run["commits"]]
        _, _, ends = trim_errors(offline, live, [])
        latencies += [t - ends.get(k, w.end) for k, (w, t) in enumerate(run["commits"])]
        e, m = word_counts("".join(w.word for w in offline), "".join(w.text for w in live))
        errors, words = errors + e, words + m
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    lags = ", ".join(f"{r['lag']:.1f}" for r in runs)
    busy = sum(r["compute"] for r in runs) / (audio.size / 16000 + max(r["lag"] for r in runs))
    return (f"{n:7d} {p50:5.2f} {p95:5.2f} {errors / max(words, 1):6.1%} {busy:6.0%}   {lags}")


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def trim_errors(offline: list, live: list, trims: list[float]) -> tuple[int, int, dict]:
    """(lost at trims, duplicated, live word index -> offline end time) by aligning words."""
    a = [_key(w.word) for w in offline]
    b = [_key(w.text) for w in live]
    lost = duplicated = 0
    ends: dict[int, float] = {}
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                ends[j1 + k] = offline[i1 + k].end
        if op in ("delete", "replace") and i2 - i1 > j2 - j1:
            for w in offline[i1 + (j2 - j1) : i2]:
                if any(abs(w.start - t) <= 1.0 or abs(w.end - t) <= 1.0 for t in trims):
                    lost += 1
        if op in ("insert", "replace") and j2 - j1 > i2 - i1:
            for j in range(j1 + (i2 - i1), j2):
                if (j > 0 and b[j] == b[j - 1]) or (j + 1 < len(b) and b[j] == b[j + 1]):
                    duplicated += 1
    return lost, duplicated, ends


def stream_clips(model, args: argparse.Namespace, offline_of: dict,  # noqa: ANN001
                 transcribe_offline) -> tuple[float, float, float]:  # noqa: ANN001
    """One run over the clips: a row per clip and the pooled row; (diff, p50, RTF) pooled.
    Each clip's audio and offline transcripts are made once, in `offline_of`, for reruns."""
    from faster_whisper.audio import decode_audio

    from amanuensis_npu.evaluation import find_reference, hypothesis_text, word_counts

    errors = words = lost_all = dup_all = 0
    latencies: list[float] = []
    audio_s = compute_s = 0.0
    for clip in map(Path, args.clips):
        if clip not in offline_of:
            audio = decode_audio(str(clip))
            segments = transcribe_offline(audio)
            offline = [w for s in segments for w in (s.words or [])]
            again = word_counts("".join(w.word for w in offline),
                                "".join(s.text for s in transcribe_offline(audio)))
            offline_of[clip] = (audio, segments, offline, again)
        audio, segments, offline, again = offline_of[clip]
        transcriber = new_transcriber(model, args)
        run = stream(transcriber, audio, args.packet)
        live = [w for w, _ in run["commits"]]
        e, n = word_counts("".join(w.word for w in offline), "".join(w.text for w in live))
        lost, dup, ends = trim_errors(offline, live, run["trims"])
        lat = [t - ends.get(i, w.end) for i, (w, t) in enumerate(run["commits"])]
        seconds = audio.size / 16000
        errors, words, lost_all, dup_all = errors + e, words + n, lost_all + lost, dup_all + dup
        latencies += lat
        audio_s, compute_s = audio_s + seconds, compute_s + run["compute"]
        p50, p95 = (np.percentile(lat, [50, 95]) if lat else (float("nan"),) * 2)
        ref = find_reference(clip)
        against = ""
        if ref is not None:
            as_segments = [SimpleNamespace(text="".join(w.text for w in live), words=[
                SimpleNamespace(start=w.start, end=w.end, word=w.text) for w in live])]
            live_wer = word_counts(ref.text, hypothesis_text(as_segments, ref))
            off_wer = word_counts(ref.text, hypothesis_text(segments, ref))
            rates = [f"{e_ / max(n_, 1):.1%}" for e_, n_ in (off_wer, live_wer)]
            against = " / ".join(rates)
        name = str(clip.relative_to(SPEECH)) if clip.is_relative_to(SPEECH) else clip.name
        print(f"{name[-36:]:36} {seconds:5.1f} {e / max(n, 1):6.1%} {lost:4d} {dup:3d} "
              f"{len(run['trims']):5d} {p50:5.2f} {p95:5.2f} {run['compute'] / seconds:5.2f} "
              f"{against:>16} {again[0] / max(again[1], 1):7.1%}",
              flush=True)
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    print(f"{'all':36} {audio_s:5.1f} {errors / max(words, 1):6.1%} {lost_all:4d} "
          f"{dup_all:3d} {'':5} {p50:5.2f} {p95:5.2f} {compute_s / audio_s:5.2f}")
    return errors / max(words, 1), float(p50), compute_s / audio_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", default=[str(c) for c in DEFAULT_CLIPS])
    parser.add_argument("--model", default="base")
    parser.add_argument("--device", default="npu", help="as the CLI's (npu: auto route)")
    parser.add_argument("--encoder", default="auto")
    parser.add_argument("--attention", default="auto", help="auto|cpu|emulator|npu")
    parser.add_argument("--compute_type", default="default")
    parser.add_argument("--beam_size", type=int, default=5)
    parser.add_argument("--live_beam_size", type=int, default=None,
                        help="the live passes' beam (default: --beam_size, the offline one's)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--packet", type=float, default=0.1, help="seconds per audio packet")
    parser.add_argument("--min_chunk", type=float, default=1.0)
    parser.add_argument("--buffer", type=float, default=15.0)
    parser.add_argument("--streams", default="", help="e.g. 1,2,3: concurrent streams to try")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs over the clips: a pass's timing moves the next pass's "
                        "audio, so one run is one draw; prints the median and range")
    args = parser.parse_args(argv)
    args.live_beam_size = args.live_beam_size or args.beam_size
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    counts = [int(n) for n in args.streams.split(",") if n.strip()]

    from amanuensis_npu import api

    model = api.get_model(args.model, device=args.device, compute_type=args.compute_type,
                          encoder=args.encoder, attention=args.attention)
    route = api.route_fields(model, None)
    backend = model.attention_backend
    attention = "" if route["backend"] == "none" else f", attention {backend.route}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load {load:.1f}; model {args.model} "
          f"{args.compute_type} (encoder {route['encoder']} on {route['encoder_device']}, "
          f"{route['encoder_precision']}{attention}), beam {args.beam_size} "
          f"(live {args.live_beam_size}), "
          f"packets {args.packet:g} s, min chunk {args.min_chunk:g} s, buffer {args.buffer:g} s")
    header = (f"{'clip':36} {'sec':>5} {'diff':>6} {'lost':>4} {'dup':>3} {'trims':>5} "
              f"{'p50':>5} {'p95':>5} {'RTF':>5} {'ref WER off/live':>16} {'off/off':>7}")
    print(header)
    offline_of: dict[Path, tuple[np.ndarray, list, list, tuple[int, int]]] = {}

    def transcribe_offline(audio: np.ndarray) -> list:
        return list(model.transcribe(
            audio, language=args.language, beam_size=args.beam_size, word_timestamps=True
        )[0])

    pooled: list[tuple[float, float, float]] = []
    for repeat in range(args.repeat):
        if args.repeat > 1:
            print(f"run {repeat + 1} of {args.repeat}:")
        pooled.append(stream_clips(model, args, offline_of, transcribe_offline))
    if args.repeat > 1:
        diff, p50, rtf = (float(np.median(v)) for v in zip(*pooled, strict=True))
        print(f"median of {args.repeat} runs: diff {diff:.1%}, p50 {p50:.2f} s, RTF {rtf:.2f} "
              f"(diff {min(d for d, _, _ in pooled):.1%}-{max(d for d, _, _ in pooled):.1%}, "
              f"p50 {min(q for _, q, _ in pooled):.2f}-{max(q for _, q, _ in pooled):.2f})")
    print("goals: diff <= 5%, lost 0, dup 0, p50 <= 2 s")
    if route["backend"] != "none":
        stats = backend.stats.snapshot()
        print(f"attention: {backend.route}, {stats['attention_calls']} calls, "
              f"{stats['fallbacks']} fell back to the CPU")
    if counts:
        audio, _, offline, _ = offline_of[Path(args.clips[0])]
        print(f"\n{len(audio) / 16000:.0f} s of {Path(args.clips[0]).name} streamed N times at "
              "once at real pace, one pass at a time:")
        print(f"{'streams':>7} {'p50':>5} {'p95':>5} {'diff':>6} {'busy':>6}   lag at the end (s)")
        for n in counts:
            print(concurrent_streams(model, audio, offline, n, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
