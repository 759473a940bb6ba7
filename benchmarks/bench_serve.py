"""How fast `songfeat serve` answers, against the floor of reading the same results from its SQLite file.

    python benchmarks/bench_serve.py [--files 100] [--requests 2000] [--workers 2]

Generates a library of short clips, starts `songfeat serve` on a loopback port and waits until every
clip is analysed. Then:
  * cached batch lookups (GET /v1/audio-features?ids=<100 ids>) at concurrency 1, 20 and 100, from an
    asyncio client on keep-alive connections: p50 / p99 latency and requests per second;
  * the floor: the same 100-id lookups done in this process straight from the SQLite file
    (`Index.lookup` + assembling the JSON text), one after another;
  * upload throughput: a 10 MB file whose result is already cached (streaming + hashing only), and
    fresh 5-s mp3s that are analysed on arrival.
Client and server share the machine's CPUs, so the server figures are a lower bound. The lookups' peer is
the SQLite floor (last column: requests/s as a multiple of it). Needs the `serve` and `collect` extras (FastAPI,
uvicorn; requests); without them it stops with one line. The temporary library is removed at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import benchutil

SR = 22050


def clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pulse = (np.sin(2 * np.pi * (1 + seed % 4) * t) > 0).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * (150 + 7 * seed) * t) * (0.4 + 0.6 * pulse) + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _get(reader, writer, target: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status, time.perf_counter() - t0


async def load(port: int, target: bytes, concurrency: int, total: int) -> tuple[list[float], int, float]:
    """`total` GETs of `target` over `concurrency` keep-alive connections: (latencies, errors, seconds)."""
    lat: list[float] = []
    errors = 0
    left = [total]

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while left[0] > 0:
            left[0] -= 1
            status, s = await _get(reader, writer, target)
            lat.append(s)
            errors += status != 200
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return lat, errors, time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100, help="clips in the library (ids per lookup: at most 100)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--workers", type=int, default=2, help="the server's analysis workers")
    ap.add_argument("--uploads", type=int, default=8, help="fresh 5-s mp3s to upload")
    args = ap.parse_args()
    benchutil.at_least_one(files=args.files, requests=args.requests, workers=args.workers, uploads=args.uploads)
    benchutil.require("requests")
    benchutil.require("fastapi", why="songfeat serve")
    import requests

    from songfeat.library import Index, default_db

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    root = tmp / "music"
    root.mkdir()
    for i in range(args.files):
        sf.write(root / f"track-{i:04d}.flac", clip(2.0, i), SR)
    port = free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    env.pop("SONGFEAT_TOKEN", None)
    with open(tmp / "serve.log", "wb") as log:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "songfeat.cli", "serve", "--library", str(root), "--port", str(port),
                                 "--workers", str(args.workers), "--max-upload-mb", "20"],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                h = requests.get(base + "/healthz", timeout=5).json()
                if h["tracks"] == args.files and h["pending"] == 0:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                sys.exit(f"bench_serve: the server exited: {(tmp / 'serve.log').read_text()[-1000:].strip()}")
            time.sleep(0.5)
        print(f"library: {args.files} clips of 2 s analysed by {args.workers} workers in {time.monotonic() - t0:.1f} s "
              f"(server start-up included); {os.cpu_count()} CPUs shared by client and server\n")

        index = Index(default_db(root), model="bench")
        ids = [r[0] for r in index.conn().execute("SELECT id FROM tracks ORDER BY path LIMIT 100")]
        target = ("/v1/audio-features?ids=" + ",".join(ids)).encode()

        floor = []
        for _ in range(args.requests):
            s = time.perf_counter()
            entries = index.lookup(ids)
            '{"audio_features": [' + ", ".join(entries[i].features for i in ids) + "]}"
            floor.append(time.perf_counter() - s)
        floor_rps = len(floor) / sum(floor)
        print(f"| cached lookups of {len(ids)} ids | p50 ms | p99 ms | req/s | errors | req/s vs SQLite floor |")
        print("|---|---|---|---|---|---|")
        print(f"| SQLite file directly (floor, in-process, sequential) | {pct(floor, 50) * 1e3:.2f} | {pct(floor, 99) * 1e3:.2f} "
              f"| {floor_rps:.0f} | 0 | 1.00 |")
        asyncio.run(load(port, target, 10, 200))  # warm-up
        for conc in (1, 20, 100):
            lat, errors, secs = asyncio.run(load(port, target, conc, args.requests))
            rps = len(lat) / secs
            print(f"| songfeat serve, concurrency {conc} | {pct(lat, 50) * 1e3:.2f} | {pct(lat, 99) * 1e3:.2f} | {rps:.0f} "
                  f"| {errors} | {rps / floor_rps:.2f} |")

        rng = np.random.default_rng(0)  # five different bodies: the same bad bytes again are answered from the index
        noise = [rng.integers(0, 255, 10_000_000, dtype=np.uint8).tobytes() for _ in range(5)]
        buf = io.BytesIO()
        sf.write(buf, clip(30.0, 999), SR, format="FLAC")
        cached = buf.getvalue()  # analysed once below; later posts of it only stream and hash
        requests.post(base + "/v1/audio-features", data=cached, headers={"Content-Type": "audio/flac"}).raise_for_status()
        print("\n| upload | files | MB | seconds | MB/s | files/s | statuses |")
        print("|---|---|---|---|---|---|---|")
        for label, bodies in (
            (f"{len(cached) / 1e6:.1f} MB flac, result cached (stream + hash)", [cached] * 20),
            ("10 MB of noise (stream + hash + rejected by the decoder)", noise),
            ("5-s mp3, new content (stream + analysis)", None),
        ):
            if bodies is None:
                bodies = []
                for k in range(args.uploads):
                    b = io.BytesIO()
                    sf.write(b, clip(5.0, 5000 + k), SR, format="MP3")
                    bodies.append(b.getvalue())
            statuses: dict[int, int] = {}
            t0 = time.perf_counter()
            with requests.Session() as s:
                for body in bodies:
                    r = s.post(base + "/v1/audio-features", data=body, headers={"Content-Type": "application/octet-stream"})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            secs = time.perf_counter() - t0
            mb = sum(map(len, bodies)) / 1e6
            print(f"| {label} | {len(bodies)} | {mb:.1f} | {secs:.2f} | {mb / secs:.1f} | {len(bodies) / secs:.1f} | {statuses} |")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)  # the library, its index and the server's log (was left in /tmp)


if __name__ == "__main__":
    main()
