"""`amanuensis-npu serve` measured against calling `transcribe()` directly, in one run.

    python benchmarks/server.py                       # Whisper Base, a 3.5 s clip
    python benchmarks/server.py --model DIR --clip tests/data/speech/lecture/lecture.wav

Prints, side by side:
- overhead per request: server round trip minus a direct `transcribe()` of the same file
  with the same options, alternating the two after a warm-up (median of --rounds);
- throughput (requests/s) and p50/p95 latency with 1 client and with 4 concurrent
  clients on the same audio, the same number of requests each;
- the server's RSS after 20 and after --requests requests (a per-request leak shows);
- whether batching encoder windows pays on this machine: `encode()` of 4 windows as one
  batch against 4 single calls, alternating (what cross-request batching would gain on
  the CPU route; on the NPU one dispatch per layer serves a batch, not measurable here).
Nothing is asserted: the numbers are for reading. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from common import SPEECH, side_by_side

DEFAULT_CLIP = SPEECH / "cards" / "005.wav"
OPTIONS = {"language": "en", "temperature": [0.0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, device: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "amanuensis_npu.cli", "serve", "--port", str(port),
         "--model", model, "--device", device, "--language", "en", "--temperature", "0",
         "--max-queue", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        time.sleep(0.5)
    raise SystemExit("the server was not ready within 300 s")


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def request(url: str, data: bytes, name: str) -> float:
    start = time.perf_counter()
    r = requests.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data)},
                      data={"model": "whisper-1"}, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def clients(url: str, data: bytes, name: str, n_clients: int, total: int) -> tuple[float, list]:
    """(wall seconds, latencies) of `total` requests spread over `n_clients` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    per = total // n_clients

    def run() -> None:
        for _ in range(per):
            t = request(url, data, name)
            with lock:
                latencies.append(t)

    threads = [threading.Thread(target=run) for _ in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def encoder_batching(model: str, device: str, clip: Path, rounds: int) -> tuple[float, float]:
    """Median seconds of encode(4 windows at once) and of 4 x encode(1 window)."""
    from amanuensis_npu.api import get_model, load_audio

    whisper = get_model(model, device=device)
    samples = load_audio(clip)
    mel = whisper.feature_extractor(samples)[:, :3000]
    window = np.zeros((80, 3000), dtype=np.float32)
    window[:, : mel.shape[1]] = mel
    batch = np.stack([window] * 4)
    whisper.encode(batch[:1])  # warm-up
    whisper.encode(batch)
    seconds = side_by_side(
        {
            "together": lambda: whisper.encode(batch),
            "apart": lambda: [whisper.encode(batch[i : i + 1]) for i in range(4)],
        },
        rounds,
    )
    return statistics.median(seconds["together"]), statistics.median(seconds["apart"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--device", default="npu", help="as `serve --device` (npu: auto)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--rounds", type=int, default=10, help="alternations for overhead")
    parser.add_argument("--load", type=int, default=16, help="requests per throughput mode")
    parser.add_argument("--requests", type=int, default=200, help="requests before the RSS")
    parser.add_argument("--encoder-only", action="store_true",
                        help="only the encoder batching measurement (no server)")
    args = parser.parse_args()
    if args.encoder_only:
        return encoder_report(args)

    import amanuensis_npu

    data = args.clip.read_bytes()
    name = args.clip.name
    proc, url = start_server(args.model, args.device)
    try:
        route = requests.get(f"{url}/health", timeout=10).json()["route"]
        print(f"clip {name}, model {args.model}; server route: encoder {route['encoder']}, "
              f"attention {route['attention']}; {os.cpu_count()} CPUs")
        # warm-up both sides
        request(url, data, name)
        amanuensis_npu.transcribe(str(args.clip), model=args.model, device=args.device,
                                  **OPTIONS)
        direct, served = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            amanuensis_npu.transcribe(str(args.clip), model=args.model, device=args.device,
                                      **OPTIONS)
            direct.append(time.perf_counter() - t)
            served.append(request(url, data, name))
        d, s = statistics.median(direct), statistics.median(served)
        print(f"\nper request (median of {args.rounds}, alternating): transcribe() "
              f"{d * 1000:.0f} ms, server {s * 1000:.0f} ms, overhead {(s - d) * 1000:+.0f} ms "
              f"({s / d:.2f}x)")

        print(f"\n{'clients':>8} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
        rates = {}
        for n in (1, 4, 1, 4):  # twice each, interleaved: the machine is shared and noisy
            wall, lat = clients(url, data, name, n, args.load)
            rates.setdefault(n, []).append(len(lat) / wall)
            print(f"{n:>8} {len(lat):>9} {len(lat) / wall:>7.2f} "
                  f"{percentile(lat, 50) * 1000:>8.0f} {percentile(lat, 95) * 1000:>8.0f}")
        one, four = statistics.median(rates[1]), statistics.median(rates[4])
        print(f"throughput, 4 clients vs 1: {four / one:.2f}x")

        done = 1 + args.rounds + 4 * args.load
        while done < 20:
            request(url, data, name)
            done += 1
        rss20 = rss_mb(proc.pid)
        at20 = done
        while done < args.requests:
            request(url, data, name)
            done += 1
        rss_n = rss_mb(proc.pid)
        print(f"\nserver RSS: {rss20:.0f} MB after {at20} requests, {rss_n:.0f} MB after {done} "
              f"({rss_n - rss20:+.0f} MB)")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        print(f"server exit status after SIGTERM: {code}")

    return encoder_report(args)


def encoder_report(args: argparse.Namespace) -> int:
    together, apart = encoder_batching(args.model, args.device, args.clip, args.rounds)
    print(f"\nencoder ({args.model}), 4 windows: one batch {together * 1000:.0f} ms, 4 single "
          f"calls {apart * 1000:.0f} ms ({apart / together:.2f}x from batching)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
