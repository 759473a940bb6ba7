"""`songfeat serve` end to end: the real spotipy client against a server on a loopback port.

Most tests share one server (a `songfeat serve` subprocess over a small generated library). The
restart and kill -9 tests start their own. Library-level tests (hostile files, model changes) run
the worker pool without HTTP.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("pebble")

from songfeat.library import Index, Library, analysis_version, default_db  # noqa: E402
from spotify_standin import hermetic_env, hermetic_environ, kill_when  # noqa: E402,F401  (hermetic_env: autouse)

pytestmark = pytest.mark.filterwarnings("ignore:You're using:DeprecationWarning")  # spotipy's note on audio_features
TOKEN = "test-token-1234"
SPOTIFY_IDS = ["4uLU6hMCjMI75M1A2tKUQC", "0eGsygTp906u18L0Oimnem", "7ouMYWpwJ422jRcDASZB7P"]
PLAIN = ["intro", "live/encore", "demo take 2"]
SR = 22050


def make_clip(path: Path, seconds: float = 5.0, seed: int = 0, fmt: str | None = None) -> Path:
    """A generated clip: a pulsed tone over noise, different for every seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pulse = (np.sin(2 * np.pi * (1.5 + seed % 3) * t) > 0).astype(np.float32)
    y = 0.3 * np.sin(2 * np.pi * (180 + 60 * seed) * t) * (0.4 + 0.6 * pulse) + 0.03 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y.astype(np.float32), SR, format=fmt)
    return path


def make_library(root: Path, n_extra: int = 0, seconds: float = 5.0) -> dict[str, Path]:
    """Spotify-id-named and plain-named clips (wav and flac, nested folders); returns {relative name: path}."""
    files = {}
    for i, name in enumerate(SPOTIFY_IDS + PLAIN + [f"extra/{k:03d}" for k in range(n_extra)]):
        ext = ".flac" if i % 2 else ".wav"
        files[name] = make_clip(root / (name + ext), seconds=seconds, seed=i)
    return files


def mp3_bytes(seconds: float = 5.0, seed: int = 7) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.02 * rng.standard_normal(t.size)
    sf.write(buf, y.astype(np.float32), SR, format="MP3")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `songfeat serve` subprocess on a free loopback port."""

    def __init__(self, library: Path, *args: str, token: str | None = TOKEN, log: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "songfeat.cli", "serve", "--library", str(library), "--port", str(self.port),
                    "--workers", "1", *args]
        self.env = hermetic_environ(**({"SONGFEAT_TOKEN": token} if token else {}))
        self.log = log or library.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"songfeat serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        pytest.fail(f"songfeat serve did not answer within {timeout:g} s")

    def health(self) -> dict:
        return requests.get(self.base + "/healthz", timeout=10).json()

    def wait_analysed(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["last_scan"] is not None and h["pending"] == 0 and h["tracks"] > 0:
                return h
            time.sleep(0.2)
        pytest.fail(f"library not analysed within {timeout:g} s: {self.health()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spotify(base: str, token: str | None = TOKEN):
    """The real spotipy client, pointed at our server (retries off, so statuses reach the test)."""
    import spotipy

    sp = spotipy.Spotify(auth=token, requests_timeout=30, retries=0, status_retries=0)
    sp.prefix = base + "/v1/"
    return sp


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def raw_get(base: str, target: str, token: str | None = TOKEN) -> tuple[int, dict]:
    """GET a request target byte for byte (no client-side normalisation of '..' or escapes)."""
    host, port = base.removeprefix("http://").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    con.putrequest("GET", target, skip_accept_encoding=True)
    if token:
        con.putheader("Authorization", f"Bearer {token}")
    con.endheaders()
    r = con.getresponse()
    body = r.read()
    con.close()
    return r.status, json.loads(body) if body else {}


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:22]


# ---- one shared server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve") / "music"
    files = make_library(root)
    srv = Server(root, "--max-upload-mb", "1", "--allowed-host", "music.lan").start()
    try:
        srv.wait_analysed()
        yield srv, root, files
    finally:
        srv.stop()


def ids_of(root: Path) -> dict[str, str]:
    """{file name: id} as the index holds them."""
    con = sqlite3.connect(default_db(root))
    try:
        return {Path(p).name: i for p, i in con.execute("SELECT path, id FROM tracks WHERE source='library'")}
    finally:
        con.close()


def test_spotipy_batch_and_single_lookups(served):
    srv, root, files = served
    sp = spotify(srv.base)
    ids = ids_of(root)
    intro = ids[files["intro"].name]
    assert len(ids) == 6
    for name in ids:  # Spotify-id stems keep their id; other files get a content hash, as `songfeat analyze` does
        stem = Path(name).stem
        assert (ids[name] == stem) == (stem in SPOTIFY_IDS)
    wanted = [SPOTIFY_IDS[0], "AAAAAAAAAAAAAAAAAAAAAA", intro, SPOTIFY_IDS[0], SPOTIFY_IDS[2]]
    got = sp.audio_features(wanted)
    assert len(got) == 5 and got[1] is None  # unknown id: null in its place
    assert [g["id"] if g else None for g in got] == [wanted[0], None, wanted[2], wanted[3], wanted[4]]
    assert got[0] == got[3]  # duplicates repeated
    assert got[0]["uri"] == f"spotify:track:{SPOTIFY_IDS[0]}" and got[2]["uri"] == f"songfeat:track:{intro}"
    for f in filter(None, got):
        assert f["type"] == "audio_features" and 0 <= f["energy"] <= 1 and f["tempo"] >= 0 and 0 <= f["key"] <= 11
    assert sp.audio_features(SPOTIFY_IDS[1])[0]["id"] == SPOTIFY_IDS[1]  # spotipy's single-string form
    one = sp._get(f"audio-features/{SPOTIFY_IDS[2]}")  # GET /v1/audio-features/{id}
    assert one == got[4]
    every = sp.audio_features(list(ids.values()))
    assert all(every) and len({f["danceability"] for f in every} | {f["energy"] for f in every}) > 2  # real, varied results


def test_the_server_says_its_scan_and_its_analysis_on_stderr(served):
    # `songfeat serve` printed its start-up line and nothing more: not what the scan found, nor how far the analysis was.
    srv, _, _ = served
    wait_for(lambda: "songfeat: analysed 6 of 6 (0 failed)" in srv.log.read_text(), timeout=30)
    assert re.search(r"songfeat: scanned .*: 6 added, 0 changed, 0 removed, 0 requeued, 0 unreadable", srv.log.read_text())

def test_lookup_errors(served):
    import spotipy

    srv, _, _ = served
    sp = spotify(srv.base)
    with pytest.raises(spotipy.SpotifyException) as e:
        sp.audio_features(SPOTIFY_IDS * 34)  # 102 ids
    assert e.value.http_status == 400
    r = requests.get(srv.base + "/v1/audio-features", params={"ids": "tooshort," + SPOTIFY_IDS[0]}, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["status"] == 400 and "invalid id" in r.json()["error"]["message"]
    r = requests.get(srv.base + "/v1/audio-features/AAAAAAAAAAAAAAAAAAAAAA", headers=auth())
    assert r.status_code == 404 and r.json() == {"error": {"status": 404, "message": r.json()["error"]["message"]}}
    assert requests.get(srv.base + "/v1/audio-features", headers=auth()).status_code == 400  # no ids
    r = requests.get(srv.base + "/v1/no-such-endpoint", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    r = requests.delete(srv.base + "/v1/audio-features", headers=auth())
    assert r.status_code == 405 and r.json()["error"]["status"] == 405
    r = requests.get(srv.base + "/v1/audio-features", params={"ids": SPOTIFY_IDS[0], "wait": "maybe"}, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["status"] == 400  # FastAPI's 422, in Spotify's shape


def test_token_required(served):
    import spotipy

    srv, _, _ = served
    for token in (None, "wrong-token"):
        with pytest.raises(spotipy.SpotifyException) as e:
            spotify(srv.base, token=token).audio_features([SPOTIFY_IDS[0]])
        assert e.value.http_status == 401
    r = requests.get(srv.base + f"/v1/audio-features/{SPOTIFY_IDS[0]}")
    assert r.status_code == 401 and r.json()["error"] == {"status": 401, "message": "No token provided"}
    assert requests.get(srv.base + "/metrics").status_code == 401
    assert requests.get(srv.base + "/healthz").status_code == 200  # liveness needs no token


def test_traversal_nul_and_huge_ids_refused(served):
    srv, _, _ = served
    for target in ("/v1/audio-features/..", "/v1/audio-features/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/audio-features/%2e%2e%2fintro",
                   "/v1/audio-features/abc%00def", "/v1/audio-features/" + "A" * 5000,
                   "/v1/audio-features?ids=..%2F..%2Fetc%2Fpasswd", "/v1/audio-features?ids=%00",
                   "/v1/audio-features?ids=" + "A" * 5000, "/v1/audio-analysis/..%2Fintro",
                   "/v1/audio-features/" + "..%2F" * 10 + "music%2Fintro.wav"):
        status, body = raw_get(srv.base, target)
        assert status in (400, 404), target
        assert body["error"]["status"] == status, target
    assert requests.get(srv.base + "/healthz").status_code == 200


def test_concurrent_spotipy_requests(served):
    srv, root, _ = served
    ids = list(ids_of(root).values())
    expected = spotify(srv.base).audio_features(ids)
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "sp"):
            local.sp = spotify(srv.base)
        t0 = time.perf_counter()
        got = local.sp.audio_features(ids[i % 6:] + ids[: i % 6])
        return got == expected[i % 6:] + expected[: i % 6], time.perf_counter() - t0

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(200)))
    assert all(ok for ok, _ in results), f"{sum(not ok for ok, _ in results)} of 200 requests failed"
    lat = sorted(s for _, s in results)
    print(f"\n200 requests at concurrency 20: p50 {lat[100] * 1000:.1f} ms, p99 {lat[197] * 1000:.1f} ms, errors 0")


def test_uploads(served):
    srv, _, _ = served
    mp3 = mp3_bytes()
    r = requests.post(srv.base + "/v1/audio-features", data=mp3, headers={**auth(), "Content-Type": "audio/mpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == content_id(mp3) and r.json()["uri"] == f"songfeat:track:{content_id(mp3)}"
    r2 = requests.post(srv.base + "/v1/audio-features", files={"file": ("song.mp3", mp3, "audio/mpeg")}, headers=auth())
    assert r2.status_code == 200 and r2.json() == r.json()  # multipart, same content: same id and result
    assert spotify(srv.base).audio_features([content_id(mp3)])[0] == r.json()  # stored under its content hash
    bad = {"truncated.mp3": (mp3[:300], "audio/mpeg"), "notes.txt": (b"not audio at all\n" * 200, "text/plain")}
    for name, (data, ctype) in bad.items():
        r = requests.post(srv.base + "/v1/audio-features", files={"file": (name, data, ctype)}, headers=auth())
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.json()["error"]["status"] == r.status_code and name in r.json()["error"]["message"]
        assert "/" not in r.json()["error"]["message"]  # no server paths in messages
        assert spotify(srv.base).audio_features([SPOTIFY_IDS[0]])[0]["id"] == SPOTIFY_IDS[0]  # still serving
    r = requests.post(srv.base + "/v1/audio-features", data=b"", headers=auth())
    assert r.status_code == 400


def test_upload_size_cap(served):
    srv, _, _ = served
    big = b"\0" * 1_500_000  # the shared server runs with --max-upload-mb 1
    r = requests.post(srv.base + "/v1/audio-features", data=big, headers=auth())
    assert r.status_code == 413 and r.json()["error"]["status"] == 413

    def chunks():  # no Content-Length: the cap is enforced while reading
        for _ in range(40):
            yield b"\0" * 65536

    r = requests.post(srv.base + "/v1/audio-features", data=chunks(), headers=auth())
    assert r.status_code == 413
    r = requests.post(srv.base + "/v1/audio-features", files={"file": ("big.wav", big)}, headers=auth())
    assert r.status_code == 413
    assert requests.get(srv.base + "/healthz").json()["status"] == "ok"
    uploads = [p for p in (Path(srv.cmd[srv.cmd.index("--library") + 1]) / ".songfeat" / "uploads").iterdir()]
    assert not [p for p in uploads if p.name.startswith("incoming-")]  # no temporary files left behind


def test_audio_analysis_endpoint(served):
    srv, _, _ = served
    r = requests.get(srv.base + f"/v1/audio-analysis/{SPOTIFY_IDS[0]}", headers=auth())
    assert analysis_version() is not None  # songfeat.analysis ships, so the endpoint must answer
    assert r.status_code == 200, r.text
    assert {"track", "bars", "beats", "sections", "segments", "tatums"} <= set(r.json())
    assert requests.get(srv.base + "/v1/audio-analysis/bad", headers=auth()).status_code == 400


def test_metrics_and_docs(served):
    srv, _, _ = served
    text = requests.get(srv.base + "/metrics", headers=auth()).text
    for name in ("songfeat_http_requests_total", "songfeat_http_request_duration_seconds_bucket",
                 "songfeat_analysis_queue_depth", 'songfeat_analyses_total{outcome="done"}', 'songfeat_analyses_total{outcome="failed"}'):
        assert name in text, name
    done = [line for line in text.splitlines() if line.startswith('songfeat_analyses_total{outcome="done"}')]
    assert float(done[0].split()[-1]) >= 6
    assert requests.get(srv.base + "/docs").status_code == 200
    paths = requests.get(srv.base + "/openapi.json").json()["paths"]
    assert "/v1/audio-features" in paths and "/v1/audio-features/{id}" in paths


# ---- restarts ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_restart_keeps_results_and_follows_the_folder(tmp_path):
    root = tmp_path / "music"
    files = make_library(root)
    srv = Server(root).start()
    try:
        srv.wait_analysed()
        ids = list(ids_of(root).values())
        before = spotify(srv.base).audio_features(ids)
    finally:
        srv.stop()
    gone = files["intro"]
    gone_id = ids_of(root)[gone.name]
    gone.unlink()  # removed: disappears from answers
    changed = files[SPOTIFY_IDS[1]]
    make_clip(changed, seed=42, fmt="FLAC")  # same name, new content: re-analysed
    srv = Server(root).start()
    try:
        same = [i for i in ids if i not in (gone_id, SPOTIFY_IDS[1])]
        after = spotify(srv.base).audio_features(same)  # answered at once, from the index
        assert after == [b for b, i in zip(before, ids) if i in same]
        wait_for(lambda: srv.health()["last_scan"] is not None)
        assert srv.health()["last_scan"]["removed"] == 1 and srv.health()["last_scan"]["changed"] == 1
        srv.wait_analysed()
        assert spotify(srv.base).audio_features([gone_id]) == [None]
        new = spotify(srv.base).audio_features([SPOTIFY_IDS[1]])[0]
        old = before[ids.index(SPOTIFY_IDS[1])]
        assert new != old
    finally:
        srv.stop()
    con = sqlite3.connect(default_db(root))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    counts = dict(con.execute("SELECT path, analyses FROM tracks").fetchall())
    assert len(counts) == 5 and set(counts.values()) == {1}  # nothing analysed twice across the restart


@pytest.mark.slow
def test_kill_9_during_analysis_then_restart(tmp_path):
    root = tmp_path / "music"
    make_library(root, n_extra=10, seconds=8.0)  # 16 files
    db = default_db(root)

    def part_way() -> bool:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                c = dict(con.execute("SELECT state, count(*) FROM tracks GROUP BY state").fetchall())
            finally:
                con.close()
        except sqlite3.Error:
            return False
        return c.get("done", 0) >= 2 and c.get("pending", 0) >= 4

    first = Server(root)
    kill_when(first.cmd, first.env, part_way, timeout=120)
    con = sqlite3.connect(db)
    done_before = con.execute("SELECT count(*) FROM tracks WHERE state='done'").fetchone()[0]
    con.close()
    assert 2 <= done_before < 16
    time.sleep(1.0)  # the killed server's orphaned workers notice their pipe closed and exit
    srv = Server(root).start()
    try:
        h = srv.wait_analysed()
        assert h["done"] == 16 and h["failed"] == 0
        assert all(spotify(srv.base).audio_features(list(ids_of(root).values())))
    finally:
        srv.stop()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT analyses FROM tracks").fetchall()
    assert len(rows) == 16 and all(n == 1 for (n,) in rows), rows  # every file analysed exactly once
    print(f"\nkill -9 after {done_before} of 16 files; after restart 16 of 16 analysed, each exactly once")


# ---- the library without HTTP ---------------------------------------------------------------------


def hostile_job(path: str):
    """A stand-in analysis: hangs or kills its own process for some files, answers for the rest."""
    name = Path(path).name
    if "hang" in name:
        time.sleep(3600)
    if "crash" in name:
        os.kill(os.getpid(), signal.SIGKILL)
    if "slow" in name:
        time.sleep(2.0)
    if "raise" in name:
        raise RuntimeError("decoder exploded")
    if "hog" in name:
        np.ones(16 << 30, dtype=np.uint8)  # more than a worker may have
    if "unpicklable" in name:
        from songfeat.errors import SongfeatError

        raise SongfeatError(path, "cannot be sent back")  # its two-argument __init__ fails to unpickle in the server
    return {"id": name, "energy": 0.5}, None


def unreadable_analysis(path: str) -> dict:
    """A stand-in for songfeat.analysis.audio_analysis on a file no decoder reads: it raises as the real one does."""
    from songfeat.errors import AudioError

    raise AudioError(path, "not a readable audio file (no decoder recognises its format)")


def fake_analysis(path: str) -> dict:
    """A stand-in for songfeat.analysis.audio_analysis, to test the endpoint's caching path now."""
    info = sf.info(path)
    return {"meta": {"analyzer_version": "test"}, "track": {"duration": info.duration}, "bars": [], "beats": [],
            "sections": [], "segments": [], "tatums": []}


def wait_for(pred, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


@contextlib.contextmanager
def uvicorn_server(app, http="auto", **options):
    """`app` on a free loopback port, in this process (uvicorn in a thread); yields the uvicorn.Server (its port is
    `server.config.port`, its open connections `server.server_state.connections`)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", http=http, **options))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: server.started, timeout=30)
        yield server
    finally:
        server.should_exit = True
        t.join(30)


@contextlib.contextmanager
def serving(app, http="auto", **options):
    """`app` on a free loopback port, in this process (uvicorn in a thread); yields its base URL."""
    with uvicorn_server(app, http, **options) as server:
        yield f"http://127.0.0.1:{server.config.port}"


def test_hostile_files_fail_alone(tmp_path):
    root = tmp_path / "music"
    for name in ("a-hang", "b-crash", "c-raise", "c-hog", "d-ok", "e-ok", "f-ok"):
        make_clip(root / f"{name}.wav", seconds=1.5)
    lib = Library(root, workers=1, time_limit=3.0, job=hostile_job)
    lib.start()
    try:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=90)
        con = sqlite3.connect(lib.index.path)
        rows = {Path(p).stem: (s, e) for p, s, e in con.execute("SELECT path, state, error FROM tracks")}
        assert rows["a-hang"][0] == "failed" and "limit" in rows["a-hang"][1]
        assert rows["b-crash"][0] == "failed" and "died" in rows["b-crash"][1]
        assert rows["c-raise"][0] == "failed" and "decoder exploded" in rows["c-raise"][1]
        assert rows["c-hog"][0] == "failed" and "MemoryError" in rows["c-hog"][1]  # memory is capped per worker
        assert all(rows[n][0] == "done" for n in ("d-ok", "e-ok", "f-ok"))  # the pool survived all four
        assert (lib.stats.timed_out, lib.stats.crashed) == (1, 1)
    finally:
        lib.stop()


def test_model_change_and_file_changes_requeue(tmp_path):
    root = tmp_path / "music"
    files = make_library(root)
    db = tmp_path / "index.db"
    idx = Index(db, model="model-a")
    assert idx.scan(root).added == 6
    con = idx.conn()
    with con:
        con.execute("UPDATE tracks SET state='done', model='model-a', features='{\"energy\": 0.5}'")
    assert idx.scan(root).unchanged == 6
    os.utime(files["intro"], ns=(time.time_ns(), time.time_ns() + 5_000_000_000))  # touched, same content: kept
    make_clip(files["demo take 2"], seed=99)  # new content
    files["live/encore"].unlink()
    r = idx.scan(root)
    assert (r.changed, r.removed, r.unchanged) == (1, 1, 4)
    idx_b = Index(db, model="model-b")  # a new default model
    assert idx_b.scan(root).requeued == 4
    stale = idx_b.lookup([SPOTIFY_IDS[0]])[SPOTIFY_IDS[0]]
    assert stale.state == "done" and stale.features  # the old result is served until the new one is in


def scanned_library(tmp_path: Path) -> tuple[Path, dict[str, Path], Index, sqlite3.Connection]:
    """`make_library` under tmp_path/music, scanned once into an index of model "m": (root, files, index, connection)."""
    root = tmp_path / "music"
    files = make_library(root)
    idx = Index(tmp_path / "index.db", model="m")
    idx.scan(root)
    return root, files, idx, idx.conn()


def test_a_moved_renamed_or_copied_file_takes_its_result_without_another_analysis(tmp_path):
    # A file moved to another folder or renamed was a new file to the scan, so it was analysed again, its id answering
    # 503 meanwhile (a DJ's folder moved: every song in it, for hours). The same bytes and model give the same result;
    # only the id fields follow the new name. A copy under another type is analysed: the type picks the decoder.
    from songfeat.analyze import track_identity

    root, files, idx, con = scanned_library(tmp_path)
    with con:
        for path, in con.execute("SELECT path FROM tracks").fetchall():
            con.execute("UPDATE tracks SET state='done', model='m', analyses=1, features=? WHERE path=?",
                        (json.dumps({"energy": len(path), **track_identity(path)}), path))
    energy = {name: len(str(p)) for name, p in files.items()}
    (root / "moved").mkdir()
    os.replace(files["intro"], root / "moved" / "intro.flac")
    os.replace(files[SPOTIFY_IDS[0]], root / "renamed.wav")  # its id was its name: now its content hash
    os.replace(files["demo take 2"], root / f"{SPOTIFY_IDS[2][::-1]}.flac")  # and the other way round
    (root / "copy.wav").write_bytes(files["live/encore"].read_bytes())
    (root / "copy.flac").write_bytes(files["live/encore"].read_bytes())  # a wav named .flac
    report = idx.scan(root)
    assert (report.added, report.removed) == (5, 3)
    rows = {p: (state, n, json.loads(f) if f else None)
            for p, state, n, f in con.execute("SELECT path, state, analyses, features FROM tracks")}
    for name, was in (("moved/intro.flac", "intro"), ("renamed.wav", SPOTIFY_IDS[0]),
                      (f"{SPOTIFY_IDS[2][::-1]}.flac", "demo take 2"), ("copy.wav", "live/encore")):
        state, n, features = rows[str(root / name)]
        assert (state, n) == ("done", 1) and features == {"energy": energy[was], **track_identity(root / name)}, name
    assert rows[str(root / "copy.flac")][:2] == ("pending", 0)
    assert idx.counts() == {"done": 7, "pending": 1, "failed": 0}


def test_a_scan_reads_each_new_file_once(tmp_path, monkeypatch):
    # A scan read every new or changed file twice: for its SHA-256, then again for track_identity's content id over the
    # same bytes, so the first scan of a large library took twice the reading it needs (5 GB: 17 s, half of it again).
    import importlib

    analyze_module = importlib.import_module("songfeat.analyze")  # `songfeat.analyze` is also the function
    root = tmp_path / "music"
    files = make_library(root)
    real, read = analyze_module.content_id, []
    monkeypatch.setattr(analyze_module, "content_id", lambda path: read.append(path) or real(path))
    idx = Index(tmp_path / "index.db", model="m")
    assert idx.scan(root).added == 6 and read == []
    ids = {Path(p).name: i for p, i in idx.conn().execute("SELECT path, id FROM tracks")}
    assert all(ids[p.name] == content_id(p.read_bytes()) for name, p in files.items() if name in PLAIN)  # the same ids


def test_a_scan_of_large_files_writes_what_it_has_every_second(tmp_path, monkeypatch):
    # A scan wrote its rows 200 at a time: over large files (hi-res albums, hour-long mixes: 200 of them are tens of GB
    # to hash) the index stayed empty and the workers idle for minutes, every id unknown, until 200 files had been read.
    import songfeat.library

    root = tmp_path / "music"
    for k in range(4):
        make_clip(root / f"{k}.wav", seconds=1.0, seed=k)
    real = songfeat.library.file_sha256
    monkeypatch.setattr(songfeat.library, "file_sha256", lambda path: time.sleep(0.6) or real(path))  # a large file
    idx = Index(tmp_path / "index.db", model="m")
    written: list[int] = []
    idx.scan(root, on_batch=lambda: written.append(sum(idx.counts().values())))
    assert written[0] < 4 and written[-1] == 4, written


def test_audio_analyses_of_content_no_file_holds_are_dropped(tmp_path):
    # The audio analyses of a file replaced (re-tagged, re-encoded) or removed stayed in the index for good, one object
    # of ~100 KB per song and version; failed ones were already dropped by the scan. A moved file keeps its analysis.
    root, files, idx, con = scanned_library(tmp_path)
    before = {sha for (sha,) in con.execute("SELECT sha256 FROM tracks")}
    for sha in before:
        idx.store_analysis(sha, "v1", {"beats": []})
    make_clip(files["intro"], seed=99)  # new content
    files["live/encore"].unlink()
    os.replace(files["demo take 2"], root / "renamed.flac")  # moved: the same content
    idx.scan(root)
    now = {sha for (sha,) in con.execute("SELECT sha256 FROM tracks")}
    kept = {sha for (sha,) in con.execute("SELECT sha256 FROM audio_analyses")}
    assert kept == before & now and len(kept) == 4


def test_audio_analyses_of_an_older_analysis_code_are_dropped(tmp_path):
    # Cached audio analyses (and failures) are keyed by content and analysis-code version, but only content no file
    # holds was pruned: after an update of the analysis code every old object (~100 KB a song) stayed for good.
    root = tmp_path / "music"
    make_library(root)
    lib = Library(root, workers=1, model="m", job=hostile_job, analysis_target="test_serve:fake_analysis")
    lib.scan()
    con = lib.index.conn()
    shas = [sha for (sha,) in con.execute("SELECT sha256 FROM tracks ORDER BY path")]
    for sha in shas[:3]:
        lib.index.store_analysis(sha, "audio_analysis-0123456789abcdef", {"beats": []})  # an older code's
        lib.index.store_analysis(sha, lib.analysis_version, {"beats": []})
    lib.index.store_analysis_failure(shas[3], "audio_analysis-0123456789abcdef", "not a readable audio file")
    lib.index.store_analysis_failure(shas[4], lib.analysis_version, "not a readable audio file")
    lib.scan()
    for table in ("audio_analyses", "failed_analyses"):
        versions = {v for (v,) in con.execute(f"SELECT version FROM {table}")}
        assert versions == {lib.analysis_version}, table
    assert con.execute("SELECT count(*) FROM audio_analyses").fetchone()[0] == 3  # this code's are kept
    assert lib.index.failed_analysis(shas[4], lib.analysis_version) == "not a readable audio file"


def test_two_files_named_by_one_spotify_id_serve_the_first_by_path_and_are_warned_about(tmp_path, caplog):
    # Two files named <id>.ext in two folders, with different content, got the same id: lookups answered whichever row
    # SQLite returned first (the older one, or the one analysed first), and nothing said so.
    import logging

    root = tmp_path / "music"
    ident = SPOTIFY_IDS[0]
    second = make_clip(root / "b" / f"{ident}.flac", seconds=1.0, seed=2, fmt="FLAC")
    lib = Library(root, workers=1, model="m", job=hostile_job, analysis_target="test_serve:fake_analysis")
    assert lib.scan().duplicate_ids == 0  # b/ is indexed first: its row is the older one
    first = make_clip(root / "a" / f"{ident}.wav", seconds=1.0, seed=1)
    copy = make_clip(root / "c" / f"{ident}.wav", seconds=1.0, seed=1)  # a copy of a/'s file: the same content, no clash
    with caplog.at_level(logging.WARNING, logger="songfeat"):
        report = lib.scan()
        assert lib.scan().duplicate_ids == 1  # counted by every scan, warned about once while nothing changes
    assert report.duplicate_ids == 1 and len(report.duplicates) == 1
    assert str(first) in report.duplicates[0] and str(second) in report.duplicates[0] and str(copy) not in report.duplicates[0]
    warned = [r.getMessage() for r in caplog.records if ident in r.getMessage()]
    assert len(warned) == 1 and str(first) in warned[0] and str(second) in warned[0], warned
    con = lib.index.conn()
    with con:  # b/'s file analysed, a/'s not yet: still a/'s (a 503 until it is), not b/'s result meanwhile
        con.execute("UPDATE tracks SET state='done', model='m', features='{\"energy\": 0.2}' WHERE path=?", (str(second),))
    entry = lib.index.lookup([ident])[ident]
    assert (entry.path, entry.state) in ((str(first), "pending"), (str(copy), "pending"))
    with con:
        con.execute("UPDATE tracks SET state='done', model='m', features='{\"energy\": 0.9}' WHERE path=?", (str(first),))
    assert lib.index.lookup([ident])[ident].features == '{"energy": 0.9}'
    sha_b = lib.index.row(str(second))[3]
    lib.index.store_analysis(sha_b, lib.analysis_version, {"beats": ["b"]})
    cached, fut = lib.audio_analysis(ident)  # the audio analysis follows the same file: a/'s, not b/'s cached one
    assert cached is None and fut is not None and lib._urgent[0][1] == str(first)
    second.unlink()
    with caplog.at_level(logging.WARNING, logger="songfeat"):
        assert lib.scan().duplicate_ids == 0 and lib.last_scan.duplicates == []


def test_an_uploads_content_id_serves_the_upload_not_a_file_named_by_it(tmp_path, caplog):
    # A library file named <22 hex digits>.wav, with those digits an upload's content id, took the id over whenever its
    # path sorted first (an index kept outside the library folder, --db): GET answered that file's features, its 503
    # or its failure for the upload's id, and the POST itself could get the other file's features (or a 500 while that
    # file waited). An id that is a file's content id now serves that content; files merely named by it come after.
    import logging

    from songfeat.library import stage_upload
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "plain.wav", seconds=1.0, seed=3)
    lib = Library(root, db=tmp_path / "z" / "index.db", workers=1, model="m",  # uploads in tmp_path/z: after music/
                  job=hostile_job, analysis_target="test_serve:fake_analysis")
    lib.scan()
    lib.uploads.mkdir(parents=True)
    fd, tmp = stage_upload(lib.uploads)
    with os.fdopen(fd, "wb") as f:
        f.write(make_clip(tmp_path / "posted.wav", seconds=1.0, seed=4).read_bytes())
    ident, _ = lib.upload(tmp, ".wav")
    assert ident == content_id((tmp_path / "posted.wav").read_bytes())
    impostor = make_clip(root / "a" / f"{ident}.wav", seconds=1.0, seed=5)  # other content, named by the upload's id
    with caplog.at_level(logging.WARNING, logger="songfeat"):
        report = lib.scan()
    upload_path = next(lib.uploads.glob(f"{ident}.upload.wav"))
    assert str(impostor) < str(upload_path)  # first by path: the impostor won every lookup
    assert report.duplicate_ids == 1 and report.duplicates[0].startswith(f"{ident}: {upload_path} is served, not {impostor}")
    assert any("the file it is the content id of" in r.getMessage() for r in caplog.records)
    con = lib.index.conn()
    with con:  # the impostor analysed, the upload still waiting: its 503, not the impostor's features
        con.execute("UPDATE tracks SET state='done', model='m', features='{\"energy\": 0.1}' WHERE path=?", (str(impostor),))
    entry = lib.index.lookup([ident])[ident]
    assert (entry.path, entry.state) == (str(upload_path), "pending")
    with con:
        con.execute("UPDATE tracks SET state='done', model='m', features='{\"energy\": 0.9}' WHERE path=?", (str(upload_path),))
    cached, fut = lib.audio_analysis(ident)
    assert cached is None and lib._urgent[0][1] == str(upload_path)  # the audio analysis follows the same file
    with serving(create_app(lib, start=False)) as base:
        r = requests.get(f"{base}/v1/audio-features/{ident}")
        assert r.status_code == 200 and r.json() == {"energy": 0.9}, r.text
        r = requests.get(f"{base}/v1/audio-features", params={"ids": f"{ident},{ident}"})
        assert r.json() == {"audio_features": [{"energy": 0.9}] * 2}, r.text
    impostor.rename(impostor.with_name("renamed.wav"))  # named otherwise, it has an id of its own again
    assert lib.scan().duplicate_ids == 0


def test_in_process_app_503_wait_and_audio_analysis(tmp_path):
    import uvicorn

    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_library(root)
    make_clip(root / "slow.wav", seed=5)
    lib = Library(root, workers=1, job=hostile_job, analysis_target="test_serve:fake_analysis")
    app = create_app(lib, token=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, timeout=30)
        wait_for(lambda: lib.index.counts()["pending"] == 7)  # the first scan is in
        slow = ids_of(root)["slow.wav"]
        r = requests.get(base + f"/v1/audio-features/{slow}")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["status"] == 503
        r = requests.get(base + "/v1/audio-features", params={"ids": slow, "wait": "true"}, timeout=90)
        assert r.status_code == 200 and r.json()["audio_features"][0]["id"] == "slow.wav"  # hostile_job's answer
        r = requests.get(base + f"/v1/audio-analysis/{SPOTIFY_IDS[0]}", timeout=60)
        assert r.status_code == 200 and abs(r.json()["track"]["duration"] - 5.0) < 0.01
        again = requests.get(base + f"/v1/audio-analysis/{SPOTIFY_IDS[0]}", timeout=60)
        assert again.json() == r.json()
        assert lib.index.conn().execute("SELECT count(*) FROM audio_analyses").fetchone()[0] == 1
        assert requests.get(base + "/v1/audio-analysis/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
        wait_for(lambda: lib.index.counts()["pending"] == 0)
        r = requests.get(base + "/v1/audio-features", params={"ids": SPOTIFY_IDS[0]}).json()  # no token configured
        assert r["audio_features"][0]["energy"] == 0.5
        make_clip(root / "new" / "arrival.wav", seed=11)  # a file added while serving
        assert requests.post(base + "/library/rescan").status_code == 202
        wait_for(lambda: "arrival.wav" in ids_of(root))
        r = requests.get(base + f"/v1/audio-features/{ids_of(root)['arrival.wav']}", params={"wait": "true"}, timeout=90)
        assert r.status_code == 200 and r.json()["id"] == "arrival.wav"
    finally:
        server.should_exit = True
        t.join(30)


def test_an_id_asked_for_before_the_first_scan_reached_it_is_a_503(tmp_path):
    # Serving starts before the start-up scan ends: an id whose file the scan had not reached yet answered 404 (null in a
    # batch), which an app takes for "not in this library" and may well remember; on a large library, for minutes.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    ident = content_id((root / "intro.wav").read_bytes())
    lib = Library(root, workers=1, model="test", job=hostile_job)
    real, go = lib.index.scan, threading.Event()

    def slow_scan(*args, **kwargs) -> object:
        """The index's scan, once `go` is set: a large library's first scan."""
        go.wait(30)
        return real(*args, **kwargs)

    lib.index.scan = slow_scan
    with serving(create_app(lib, wait_seconds=30)) as base:
        for target in (f"audio-features/{ident}", f"audio-features?ids={ident},{SPOTIFY_IDS[0]}", f"audio-analysis/{ident}"):
            r = requests.get(f"{base}/v1/{target}", timeout=30)
            assert r.status_code == 503 and r.headers["Retry-After"] == "5" and "not indexed yet" in r.text, r.text
        # one rule, one answer: the audio analysis's 503 was worded apart, and its ?wait=true, which the 503 advises, ignored
        said = {target: requests.get(f"{base}/v1/{target}/{SPOTIFY_IDS[0]}", timeout=30).json()["error"]["message"]
                for target in ("audio-features", "audio-analysis")}
        assert len(set(said.values())) == 1 and "add wait=true" in said["audio-analysis"], said
        waited = []
        threading.Thread(target=lambda: waited.append(requests.get(f"{base}/v1/audio-analysis/{SPOTIFY_IDS[0]}",
                                                                   params={"wait": "true"}, timeout=60))).start()
        threading.Timer(0.5, go.set).start()
        r = requests.get(f"{base}/v1/audio-features", params={"ids": f"{ident},{SPOTIFY_IDS[0]}", "wait": "true"}, timeout=60)
        assert r.status_code == 200 and r.json() == {"audio_features": [{"id": "intro.wav", "energy": 0.5}, None]}, r.text
        for target in ("audio-features", "audio-analysis"):  # scanned: unknown
            r = requests.get(f"{base}/v1/{target}/{SPOTIFY_IDS[0]}", timeout=30)
            assert r.status_code == 404 and r.json()["error"]["message"] == f"no track with id {SPOTIFY_IDS[0]} in this library"
        wait_for(lambda: waited, timeout=30)
        assert waited[0].status_code == 404, waited[0].text  # held until the scan ended, then unknown


def test_result_version_follows_the_measuring_code(tmp_path, monkeypatch):
    # Results are kept per model version; a new measuring recipe (not only a new model) must requeue them.
    from songfeat import library

    from songfeat.provenance import MEASURING_CODE

    here = tmp_path / "pkg"
    here.mkdir()
    monkeypatch.setattr(library, "__file__", str(here / "library.py"))
    for name in MEASURING_CODE:
        (here / name).write_text("# v1\n")
    (here / "descriptors.py").write_text("LOUDNESS = 'lufs'\n")
    a = library.model_version()
    assert library.model_version() == a
    (here / "descriptors.py").write_text("LOUDNESS = 'segment level'\n")
    b = library.model_version()
    assert b != a
    # the heads' evidence (VAD, pitch, tagger) makes the learned features: a change there requeues too
    (here / "pitch.py").write_text("# v2\n")
    c = library.model_version()
    assert c != b
    # and the ranges and rounding the descriptors clip their values with (features.py was left out until 2026-12-06)
    (here / "features.py").write_text("# v2\n")
    assert library.model_version() != c
    c = library.model_version()
    # so do the pretrained listeners' weights: a new tagger file requeues, a notice beside it does not
    (here / "weights" / "musicnn").mkdir(parents=True)
    (here / "weights" / "musicnn" / "NOTICE.md").write_text("ISC\n")
    assert library.model_version() == c
    (here / "weights" / "musicnn" / "MSD_musicnn.onnx").write_bytes(b"v1")
    d = library.model_version()
    assert d != c
    (here / "weights" / "musicnn" / "MSD_musicnn.onnx").write_bytes(b"v2")
    assert library.model_version() != d
    # a cached audio-analysis object holds the track's tempo, key and metre: a new metre rule must not be served stale
    a = library.analysis_version()
    (here / "descriptors.py").write_text("METRE_MIN_BEAT_CONFIDENCE = 0.1\n")
    assert library.analysis_version() not in (a, None)


# ---- a hostile client ------------------------------------------------------------------------------


def test_failed_audio_analysis_keeps_the_pool_and_hides_paths(tmp_path):
    # The real audio_analysis raises AudioError for a file no decoder reads; unpickled in the server it broke
    # pebble's pool, and the dispatcher died with it: nothing was analysed again and `wait=true` hung for its 60 s.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.5)
    lib = Library(root, workers=1, job=hostile_job, analysis_target="test_serve:unreadable_analysis")
    with serving(create_app(lib, wait_seconds=10)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        r = requests.get(f"{base}/v1/audio-analysis/{ids_of(root)['intro.wav']}", timeout=30)
        assert r.status_code == 404 and r.json()["error"]["status"] == 404
        assert "not a readable audio file" in r.json()["error"]["message"] and str(tmp_path) not in r.text
        make_clip(root / "later.wav", seconds=1.5, seed=3)
        lib.scan()
        r = requests.get(f"{base}/v1/audio-features/{ids_of(root)['later.wav']}", params={"wait": "true"}, timeout=30)
        assert r.status_code == 200 and r.json()["id"] == "later.wav"  # the pool still analyses


def test_unpicklable_failure_fails_only_its_file(tmp_path):
    # A job whose exception the server cannot unpickle broke pebble's whole pool: the files in flight beside it were
    # marked failed and the dispatcher died, so nothing was analysed again. Now only that file fails.
    root = tmp_path / "music"
    for name in ("a-ok", "b-unpicklable", "c-ok", "d-ok"):
        make_clip(root / f"{name}.wav", seconds=1.0)
    lib = Library(root, workers=1, job=hostile_job, model="test")
    lib.start()
    try:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        rows = {Path(p).stem: (s, n) for p, s, n in lib.index.conn().execute("SELECT path, state, analyses FROM tracks")}
        assert rows.pop("b-unpicklable")[0] == "failed"
        assert set(rows.values()) == {("done", 1)}, rows
        error = lib.index.conn().execute("SELECT error FROM tracks WHERE path LIKE '%b-unpicklable.wav'").fetchone()[0]
        assert error == "cannot be sent back"
    finally:
        lib.stop()


def test_rescan_requests_coalesce_and_show_no_path(tmp_path):
    # Each POST /library/rescan queued a whole scan on the server's thread pool: 60 of them on a 3,000-file library
    # held an upload for 9 s behind 60 scans. Now requests made while a scan waits join it.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    scans, real = [], lib.index.scan

    def slow_scan(*args, **kwargs):
        scans.append(time.monotonic())
        time.sleep(0.2)
        return real(*args, **kwargs)

    lib.index.scan = slow_scan
    with serving(create_app(lib, start=False)) as base, requests.Session() as s:
        answers = [s.post(base + "/library/rescan") for _ in range(30)]
        assert {r.status_code for r in answers} == {202}
        assert str(tmp_path) not in answers[0].text  # no server path in the answer
        time.sleep(1.0)
        assert 1 <= len(scans) <= 2, len(scans)
        make_clip(root / "later.wav", seconds=1.0, seed=2)  # a request after the scans still gets a scan of its own
        assert s.post(base + "/library/rescan").status_code == 202
        wait_for(lambda: "later.wav" in ids_of(root), timeout=10)


def test_corrupt_index_is_a_clear_error_and_kept(tmp_path):
    from songfeat.errors import SongfeatError

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    db = default_db(root)
    db.parent.mkdir(parents=True)
    junk = b"SQLite format 3\0" + bytes(range(256)) * 8
    db.write_bytes(junk)
    with pytest.raises(SongfeatError) as e:
        Library(root, workers=1, model="test")
    assert str(db) in str(e.value) and "not a database" in str(e.value)
    assert db.read_bytes() == junk  # nothing overwritten


def test_an_index_that_cannot_be_written_is_refused_with_what_to_do(tmp_path, monkeypatch):
    # An index the server could only read (a read-only file or folder) was opened: it answered from it, every scan died
    # with a traceback ("attempt to write a readonly database") and no result could be stored. And a read-only library
    # folder, where the index cannot be made, was told to "move it aside": --db elsewhere is what it needs.
    import errno

    from songfeat.errors import SongfeatError

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    Library(root, workers=1, model="test").scan()
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: real(f"file:{path}?mode=ro", uri=True, **kw))  # no write access
    with pytest.raises(SongfeatError) as e:
        Library(root, workers=1, model="test")
    assert str(default_db(root)) in str(e.value) and "readonly" in str(e.value) and "--db" in str(e.value)
    monkeypatch.undo()

    def read_only(self, *args, **kwargs) -> None:
        """Path.mkdir in a folder this user cannot write."""
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(SongfeatError) as e:
        Library(root, db=tmp_path / "elsewhere" / "library.db", workers=1, model="test")
    assert "Permission denied" in str(e.value) and "--db" in str(e.value) and "move it aside" not in str(e.value)


def test_a_failed_scan_does_not_end_the_periodic_scans(tmp_path, caplog):
    # A scan that raised (an index it could not write, a full disk, a lock held past the busy timeout) ended the scan
    # thread with a traceback: there was no periodic scan for the rest of the server's life, and last_scan stayed null.
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test", job=hostile_job)
    real, failures = lib.index.scan, [sqlite3.OperationalError("database is locked")]

    def failing_once(*args, **kwargs) -> object:
        """The index's scan, raising the first time as a locked index does."""
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    lib.index.scan = failing_once
    lib.start(rescan_interval=0.2)
    try:
        wait_for(lambda: lib.last_scan is not None, timeout=30)  # the next scan ran
    finally:
        lib.stop()
    assert "scan of" in caplog.text and "database is locked" in caplog.text and "Traceback" not in caplog.text


def test_a_stop_while_the_dispatcher_hands_a_file_to_the_pool_is_quiet(tmp_path, caplog):
    # stop() stopped the pool under the dispatcher: one handing the pool a file a scan had just found (a loaded machine
    # is slow to) then failed its schedule ("The Pool is not active") and logged an 'analysis dispatcher' traceback as
    # the server stopped, which failed the test above now and then.
    import logging

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test", job=hostile_job)
    real, found, pool_stopped = lib.index.pending, threading.Event(), threading.Event()

    def pending_then_slow(*args, **kwargs) -> list:
        """The index's pending rows; once there are some, handed over after the pool is stopped (or 2 s, if it is not)."""
        rows = real(*args, **kwargs)
        if rows:
            found.set()
            pool_stopped.wait(timeout=2)
        return rows

    lib.index.pending = pending_then_slow
    lib.start()
    pool, stop_pool = lib._pool, lib._pool.stop
    pool.stop = lambda: (stop_pool(), pool_stopped.set())
    try:
        assert found.wait(timeout=30)
    finally:
        lib.stop()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not pool.active and not any(t.is_alive() for t in lib._threads)


def decoding_job(path: str) -> tuple[dict | None, str | None]:
    """A stand-in analysis that decodes the file as songfeat does (a corrupt one fails in the decoder's own words) and
    takes a while, so the queue is seen part way."""
    from songfeat.audio import load_audio

    load_audio(path, max_seconds=1.0)
    time.sleep(0.4)
    return {"id": Path(path).name, "energy": 0.5}, None


def test_the_console_says_each_scan_the_queues_progress_and_each_failure(tmp_path, caplog, monkeypatch):
    # stderr showed only the start-up line: no scan summary, no analysis progress and no failed file, all of which were
    # only in /healthz and /metrics.
    import logging

    import songfeat.library

    monkeypatch.setattr(songfeat.library, "PROGRESS_SECONDS", 0.3, raising=False)
    root = tmp_path / "music"
    for i in range(4):
        make_clip(root / f"song{i}.wav", seconds=1.0, seed=i)
    bad = root / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(200))  # a corrupt file
    lib = Library(root, workers=1, model="m", job=decoding_job)
    caplog.set_level(logging.INFO, logger="songfeat")

    def said(pattern: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]

    lib.start()
    try:
        wait_for(lambda: said(r"analysed 5 of 5 \(1 failed\)"), timeout=120)
        assert said(r"scanned .*: 5 added, 0 changed, 0 removed, 0 requeued, 0 unreadable")
        reason = lib.index.conn().execute("SELECT error FROM tracks WHERE path=?", (str(bad),)).fetchone()[0]
        failed = said("broken.wav")
        assert len(failed) == 1 and str(bad) in failed[0] and reason in failed[0], failed  # in the error's own words
        assert [r.levelno for r in caplog.records if "broken.wav" in r.getMessage()] == [logging.WARNING]
        on_the_way = said(r"analysed [0-4] of 5 \([01] failed\)")
        assert on_the_way and any(re.search(r", ~\d+ s left$", line) for line in on_the_way), on_the_way
        lines = len(caplog.records)
        time.sleep(1.5)  # idle: five progress periods and nothing to say
        lib.scan()  # a scan that changed nothing: no summary either
        assert len(caplog.records) == lines, [r.getMessage() for r in caplog.records[lines:]]
        make_clip(root / "late.wav", seconds=1.0, seed=9)
        lib.scan()
        wait_for(lambda: said(r"analysed 1 of 1 \(0 failed\)"), timeout=60)
        assert said(r"scanned .*: 1 added, 0 changed, 0 removed, 0 requeued, 0 unreadable")
    finally:
        lib.stop()


def test_serve_writes_its_log_lines_to_stderr_unless_quiet(tmp_path, monkeypatch):
    # The library logged through Python's last-resort handler, which prints warnings only: the scan summaries and the
    # progress lines, at INFO, never showed. `serve.run` sends songfeat's lines to stderr; --quiet keeps to warnings.
    import logging

    from typer.testing import CliRunner

    import songfeat.serve as serve
    from songfeat.cli import app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    quiet = []

    def fake_run(lib, sock=None, **options):  # no server: what run was asked for, then let the library go
        quiet.append(options.get("quiet"))
        sock.close()
        lib.stop()

    monkeypatch.setattr(serve, "run", fake_run)
    for args, expected in (((), False), (("--quiet",), True)):
        r = CliRunner().invoke(app, ["serve", "--library", str(root), "--port", "0", "--workers", "1", *args])
        assert r.exit_code == 0 and quiet[-1] is expected, r.output
    log, root_log = logging.getLogger("songfeat"), logging.getLogger()
    saved = root_log.handlers[:], log.handlers[:], log.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root_log.handlers.clear()  # no logging set up, as in `songfeat serve` (pytest's handlers are put back below)
    try:
        for quiet_, shown in ((False, True), (True, False)):
            serve.console_log(quiet=quiet_)
            logging.getLogger("songfeat.library").info("songfeat: scanned x")
            logging.getLogger("songfeat.library").warning("songfeat: could not analyse y")
            assert ("songfeat: scanned x\n" in stream.getvalue()) == shown, stream.getvalue()
            assert stream.getvalue().endswith("songfeat: could not analyse y\n"), stream.getvalue()
            stream.truncate(0)
            stream.seek(0)
        assert len(log.handlers) == 1  # set up once, however often asked
    finally:
        root_log.handlers[:], log.handlers[:] = saved[:2]
        log.setLevel(saved[2])


def test_made_up_methods_do_not_grow_the_metrics(tmp_path):
    # h11 (uvicorn without httptools) passes any token as the method; each one used to become a new label series.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False), http="h11") as base:
        for k in range(50):
            con = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
            con.request(f"BREW{k}", "/healthz")
            r = con.getresponse()
            assert r.status == 405 and json.loads(r.read())["error"]["status"] == 405
            con.close()
        text = requests.get(base + "/metrics").text
        assert "BREW" not in text and 'method="other"' in text


def _send_head(base: str, header_bytes: int) -> bytes:
    """A raw GET /healthz whose one extra header holds `header_bytes` bytes; what the server answered."""
    import socket

    sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=20)
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * header_bytes + b"\r\nConnection: close\r\n\r\n"
        try:
            for i in range(0, len(head), 1 << 16):
                sock.sendall(head[i:i + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):  # refused and closed before the head was all sent
            pass
        return _read_all(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_a_huge_request_head_gets_431_not_the_servers_memory(tmp_path, impl):
    # httptools buffered a header whole, however large (a 200-MB header was read into memory); h11 had its own
    # limit but answered a bare 400
    from songfeat.http_protocol import MAX_HEAD_BYTES, uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    options = uvicorn_options() if impl == "httptools" else {**uvicorn_options(), "http": "h11"}
    assert impl == "h11" or options["http"] != "h11"
    with serving(create_app(lib, start=False), **options) as base:
        answer = _send_head(base, 8 << 20)
        assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 431 Request Header Fields Too Large", b"HTTP/1.1 400 Bad Request")
        if impl == "httptools":
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 431
        assert _send_head(base, MAX_HEAD_BYTES // 2).startswith(b"HTTP/1.1 200")  # a large but fair head is served
        assert requests.get(base + "/healthz", timeout=10).status_code == 200  # and the server goes on


def _read_all(sock) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(1 << 16):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def test_a_request_head_that_never_finishes_gets_408(tmp_path, monkeypatch):
    # uvicorn waited for a head without limit: idle connections and headers sent a byte at a time ("slowloris") stayed
    # open until the server ran out of file descriptors
    import socket

    from songfeat import http_protocol
    from songfeat.serve import create_app

    monkeypatch.setattr(http_protocol, "HEAD_SECONDS", 1.0)
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False), **http_protocol.uvicorn_options()) as base:
        port = int(base.rsplit(":", 1)[1])
        for sent in (b"", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"):  # nothing at all; a head without its end
            with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
                sock.sendall(sent)
                t0 = time.monotonic()
                answer = _read_all(sock)
                assert answer.startswith(b"HTTP/1.1 408 Request Timeout") and time.monotonic() - t0 < 10
                assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 408
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:  # keep-alive: a pause between requests
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(1 << 16).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert _read_all(sock).startswith(b"HTTP/1.1 200")


def _bounded_server(tmp_path):
    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    return serving(create_app(Library(root, workers=1, model="test"), start=False), **uvicorn_options())


def _raw(base: str, data: bytes, then: bytes = b"", repeat: int = 0) -> bytes:
    """Send `data` in one go (then `then` `repeat` times, while the server reads); everything the server answered."""
    import socket

    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=20) as sock:
        sock.sendall(data)
        try:
            for _ in range(repeat):
                sock.sendall(then)
        except (BrokenPipeError, ConnectionResetError):  # refused and closed while sending
            pass
        return _read_all(sock)


# a POST whose body the app reads to its end (then 400: a multipart body with no file part): after a body left unread
# the connection is closed (CloseUnreadBody), so nothing pipelined after it is read at all
READ_POST = b"POST /v1/audio-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
NO_FILE = b"--b\r\nX-Note: 1\r\n\r\nab\r\n\r\ncde\r\n--b--\r\n"  # blank lines inside a body do not end it


def test_a_body_sent_with_its_head_does_not_count_as_head(tmp_path):
    # a 70-130 KB upload sent in one go got 431: the whole read, body included, was counted as head bytes
    from songfeat.http_protocol import MAX_HEAD_BYTES

    with _bounded_server(tmp_path) as base:
        for size in (MAX_HEAD_BYTES + 1000, 2 * MAX_HEAD_BYTES):
            head = f"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
            answer = _raw(base, head + b"a" * size)
            assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 405 Method Not Allowed", (size, answer[:120])
        pipelined = b"".join(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n" for _ in range(30))
        answer = _raw(base, pipelined + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 31  # 93 KB of small pipelined heads in one read: each its own


def test_a_pipelined_head_counts_towards_its_own_cap(tmp_path):
    # only the first head of a read was counted: the start of a pipelined request's head that came in the same read
    # counted towards no cap, so that head could grow past MAX_HEAD_BYTES by one read's size
    from songfeat.http_protocol import MAX_HEAD_BYTES

    first = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES * 3 // 4)
    rest = b"a" * (MAX_HEAD_BYTES // 2) + b"\r\nConnection: close\r\n\r\n"  # under the cap alone; 1.25 caps in all
    with _bounded_server(tmp_path) as base:
        answer = _raw(base, first, then=rest, repeat=1)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 431 Request Header Fields Too Large" in answer, answer[-300:]
        fair = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES // 2)
        answer = _raw(base, fair, then=b"p" * (MAX_HEAD_BYTES // 4) + b"\r\nConnection: close\r\n\r\n", repeat=1)
        assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[-300:]  # a pipelined head under the cap is served


def test_a_head_pipelined_after_a_body_counts_towards_its_own_cap(tmp_path):
    # a body was fed to the parser whole, with whatever came after it in the same read: the start of a head pipelined
    # after a body counted towards no cap, so that head could grow past MAX_HEAD_BYTES by one read's size (256 KiB)
    from songfeat.http_protocol import MAX_HEAD_BYTES

    big = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES * 3 // 4)
    rest = b"a" * (MAX_HEAD_BYTES // 2) + b"\r\nConnection: close\r\n\r\n"  # under the cap alone; 1.25 caps in all
    fair = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES // 2)
    bodies = (b"Content-Length: %d\r\n\r\n" % len(NO_FILE) + NO_FILE,
              b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(NO_FILE) + NO_FILE + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
    with _bounded_server(tmp_path) as base:
        for body in bodies:
            post = READ_POST + body
            answer = _raw(base, post + big, then=rest, repeat=1)  # (the 431 may come before the upload's 400, closing)
            assert b"HTTP/1.1 431 Request Header Fields Too Large" in answer, answer[-300:]
            answer = _raw(base, post + fair, then=b"p" * (MAX_HEAD_BYTES // 4) + b"\r\nConnection: close\r\n\r\n", repeat=1)
            assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 200 OK") == 1, answer[-300:]  # fair: served


def test_growing_chunked_trailers_get_431(tmp_path):
    # httptools buffers a chunked body's trailer fields whole and only the head was capped: a client sending one
    # endless trailer grew the server by 300 MB in 100 s and was never cut off
    head = READ_POST + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(NO_FILE) + NO_FILE + b"\r\n0\r\nX-T: "
    with _bounded_server(tmp_path) as base:
        answer = _raw(base, head, then=b"t" * (1 << 16), repeat=64)  # 4 MB of trailer at most
        assert b"HTTP/1.1 431 Request Header Fields Too Large" in answer, answer[-300:]
        assert json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])["error"]["status"] == 431
        form = b"--b\r\nX-Note: 1\r\n\r\n" + b"x" * 20000 + b"\r\n--b--\r\n"
        chunked = (READ_POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   + b"".join(b"1\r\n%c\r\n" % c for c in form) + b"0\r\nX-Fine: yes\r\n\r\n")
        answer = _raw(base, chunked)  # 120 KB of tiny chunks and a small trailer, all read: a fair request
        assert answer.startswith(b"HTTP/1.1 400") and b"no file part" in answer, answer[:200]


def test_an_overlong_request_target_gets_414_not_431(tmp_path):
    # a URL over the head's 64 KiB was answered 431 "request headers larger than 64 KiB": the status (and the message)
    # of a header, though no header had been sent; the request line alone is that long, so it is 414 URI Too Long
    from songfeat.http_protocol import MAX_HEAD_BYTES

    with _bounded_server(tmp_path) as base:
        for blank, size in ((b"", MAX_HEAD_BYTES + 1000), (b"", 8 << 20), (b"\r\n", 2 * MAX_HEAD_BYTES)):
            line = blank + b"GET /v1/audio-features/" + b"a" * size + b" HTTP/1.1\r\n"
            answer = _raw(base, line[: 1 << 16], then=line[1 << 16:] + b"Host: localhost\r\nConnection: close\r\n\r\n",
                          repeat=1)  # in two reads at least, as a long line arrives
            assert answer.split(b"\r\n", 1)[0].startswith(b"HTTP/1.1 414 "), (size, answer[:200])
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body == {"error": {"status": 414, "message": f"request target (URL) longer than {MAX_HEAD_BYTES >> 10} KiB"}}
        answer = _raw(base, b"GET /v1/audio-features/" + b"a" * (MAX_HEAD_BYTES // 2) + b" HTTP/1.1\r\nHost: localhost\r\n"
                      + b"X-Big: " + b"b" * (MAX_HEAD_BYTES // 2) + b"\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]  # a fair target with headers past the cap: still 431
        answer = _raw(base, b"GET /v1/audio-features/" + b"a" * (MAX_HEAD_BYTES // 2) + b" HTTP/1.1\r\nHost: localhost\r\n"
                      + b"Connection: close\r\n\r\n")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["status"] == 400  # a long but fair one reaches the app
        assert requests.get(base + "/healthz", timeout=10).status_code == 200


def test_requests_the_parser_rejects_get_spotifys_error_shape(tmp_path):
    # uvicorn answered these with a plain-text "Invalid HTTP request received."
    with _bounded_server(tmp_path) as base:
        for bad in (b"FOO /v1/audio-features HTTP/1.1\r\nHost: localhost\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
                    "GET /v1/audio-features/\u00e9t\u00e9 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()):
            answer = _raw(base, bad)
            assert answer.startswith(b"HTTP/1.1 400 Bad Request"), (bad, answer[:120])
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["error"]["status"] == 400 and body["error"]["message"], bad
        assert requests.get(base + "/healthz", timeout=10).status_code == 200


def test_the_parsers_400_names_the_problem(tmp_path):
    # every request the parser refused got the same "Invalid HTTP request received.": a client smuggling a body past a
    # proxy, or one sending a Content-Length twice, was not told which rule it broke
    cases = {b"POST /library/rescan HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc":
             "Duplicate Content-Length",
             b"POST /library/rescan HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\n": "Transfer-Encoding can't be present with Content-Length",
             b"FROB /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n": "Invalid method encountered",
             b"GET /v1/audio-features/\xff HTTP/1.1\r\nHost: localhost\r\n\r\n": "Invalid char in url path",
             b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": "an HTTP/2 connection preface: this server speaks HTTP/1.1 only",
             b"CONNECT localhost:80 HTTP/1.1\r\nHost: localhost\r\n\r\n":  # was uvicorn's url parser's "User callback error"
             "the request target is neither a path (/healthz) nor a URL (http://host/healthz)"}
    with _bounded_server(tmp_path) as base:
        for bad, reason in cases.items():
            answer = _raw(base, bad)
            assert answer.startswith(b"HTTP/1.1 400 Bad Request"), (bad, answer[:120])
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == {
                "status": 400, "message": f"malformed HTTP request: {reason}"}, (bad, answer)
        assert requests.get(base + "/healthz", timeout=10).status_code == 200


def test_the_head_size_rule_holds_under_uvicorns_own_httptools(tmp_path):
    # songfeat's protocol refuses a head over 64 KiB; the app run by uvicorn's own httptools protocol (`uvicorn
    # --http httptools`) answered a 1-MB header or URL as any other request
    from songfeat.http_protocol import MAX_HEAD_BYTES
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    with serving(create_app(Library(root, workers=1, model="test"), start=False), http="httptools") as base:
        for size in (MAX_HEAD_BYTES + 1, 1 << 20):
            answer = _send_head(base, size)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == {
                "status": 431, "message": f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB"}
        url = b"/healthz?x=" + b"a" * (MAX_HEAD_BYTES - 20)  # (a URL over 65,535 bytes httptools refuses itself)
        answer = _raw(base, b"GET " + url + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == {
            "status": 414, "message": f"request target (URL) longer than {MAX_HEAD_BYTES >> 10} KiB"}
        # the most songfeat's own protocol takes is taken: a head of exactly 64 KiB with its separators counted
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: \r\n\r\n"
        fair = head.replace(b"X-Big: ", b"X-Big: " + b"a" * (MAX_HEAD_BYTES - len(head)))
        assert len(fair) == MAX_HEAD_BYTES and _raw(base, fair).startswith(b"HTTP/1.1 200"), _raw(base, fair)[:200]


def test_a_trickling_upload_gets_408(tmp_path, monkeypatch):
    # an upload sent a byte now and then, each before the idle time-out, was waited for without end, holding one of the
    # few upload slots (4 per worker): a handful of such clients made every later upload a 429, for as long as they liked
    import socket

    from songfeat import serve
    from songfeat.serve import create_app

    monkeypatch.setattr(serve, "BODY_IDLE_SECONDS", 1.0)
    monkeypatch.setattr(serve, "BODY_MIN_RATE", 100, raising=False)
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False)) as base:
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=20) as sock:
            sock.sendall(b"POST /v1/audio-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n"
                         b"Content-Length: 100000\r\n\r\nRIFF")
            sock.settimeout(0.3)
            t0, answer = time.monotonic(), b""
            while not answer and time.monotonic() - t0 < 10:
                try:
                    answer = sock.recv(1 << 16)
                except socket.timeout:
                    sock.sendall(b"\0")  # a byte every 0.3 s: never idle for the 1 s the idle time-out waits
            took = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408"), (answer[:200], took)
        message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]
        assert message.startswith("upload too slow: ") and message.endswith("(an upload may take 1 s plus 1 s per 100 bytes sent)") and took < 5, (message, took)
        wait_for(lambda: not [p for p in lib.uploads.glob("*") if p.name.startswith("incoming-")], timeout=10)


def test_a_heads_clock_starts_with_its_first_byte(tmp_path, monkeypatch):
    # the clock a silent connection starts was kept for the head that followed: a head begun after 50 quiet seconds
    # was cut 10 s later, not HEAD_SECONDS after its first byte as documented
    import socket

    from songfeat import http_protocol

    monkeypatch.setattr(http_protocol, "HEAD_SECONDS", 2.0)
    with _bounded_server(tmp_path) as base:
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=20) as sock:
            time.sleep(1.5)
            t0 = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # a head begun, never finished
            answer = _read_all(sock)
            waited = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408") and waited > 1.0, (answer[:60], waited)


def test_a_stalled_upload_gets_408_and_frees_its_slot(tmp_path, monkeypatch):
    # an upload whose client stopped sending waited for ever, holding one of the few upload slots (4 per worker): five
    # such clients made every later upload a 429
    import socket

    from songfeat import serve
    from songfeat.serve import create_app

    monkeypatch.setattr(serve, "BODY_IDLE_SECONDS", 0.5)
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False)) as base:
        port = int(base.rsplit(":", 1)[1])
        for multipart in (False, True, False, True, False):  # more than the 4 slots
            ctype = "multipart/form-data; boundary=xyz" if multipart else "audio/wav"
            head = (f"POST /v1/audio-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: 100000\r\n\r\n").encode()
            body = b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\nRIFF" if multipart else b"RIFF...."
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(head + body)  # and then nothing more
                answer = _read_all(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"] == "upload stalled: no data for 0.5 s"
        assert not [p for p in lib.uploads.glob("*") if p.name.startswith("incoming-")]  # no temporary left behind


def test_a_client_leaving_mid_upload_is_no_server_error(tmp_path, caplog):
    # a client that hung up mid-upload was logged as "Exception in ASGI application" with a ClientDisconnect traceback
    import logging
    import socket

    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's own loggers do not propagate to the root
    with caplog.at_level(logging.WARNING), serving(create_app(lib, start=False)) as base:
        uvicorn_log.addHandler(caplog.handler)
        for multipart in (False, True):
            ctype = "multipart/form-data; boundary=xyz" if multipart else "audio/wav"
            with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=20) as sock:
                sock.sendall(f"POST /v1/audio-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
                             f"Content-Length: 100000\r\n\r\n".encode()
                             + (b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\n" if multipart else b"")
                             + b"RIFF" + b"\0" * 5000)
            wait_for(lambda: not [p for p in lib.uploads.glob("*") if p.name.startswith("incoming-")], timeout=20)
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        time.sleep(0.5)
        uvicorn_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_a_trickling_upload_does_not_keep_a_stopped_server_alive(tmp_path, monkeypatch):
    # uvicorn waited for every open request on shutdown: an upload sent a byte every few seconds kept the process
    # running after SIGTERM for as long as the client liked
    import socket

    import uvicorn

    from songfeat import http_protocol
    from songfeat.serve import create_app

    monkeypatch.setattr(http_protocol, "SHUTDOWN_SECONDS", 1.0)
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Library(root, workers=1, model="test"), start=False), host="127.0.0.1",
                                           port=port, log_level="critical", **http_protocol.uvicorn_options()))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started, timeout=30)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /v1/audio-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n"
                     b"Content-Length: 1000000\r\n\r\nRIFF")
        time.sleep(0.5)  # the upload is running, waiting for more of its body
        t0 = time.monotonic()
        server.should_exit = True
        t.join(30)
        assert not t.is_alive() and time.monotonic() - t0 < 15


def _asking(port: int, target: str, close: bool = False) -> socket.socket:
    """A client connection with a small receive buffer that has sent `GET target` (and read nothing yet)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers is small
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{'Connection: close' if close else ''}\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_a_client_that_never_reads_its_answer_is_cut_and_the_server_goes_on(tmp_path, monkeypatch, caplog, impl):
    # uvicorn hands a whole answer to the connection's buffer and closing waits for it to be sent: a client that asked
    # for an 8-MB answer and read none of it held its connection and ~5 MB of the server's memory for good (the
    # keep-alive time-out closed it only in name)
    import logging

    from songfeat import http_protocol
    from songfeat.serve import create_app

    monkeypatch.setattr(http_protocol, "SEND_SECONDS", 1.0)
    options = http_protocol.uvicorn_options()
    if impl == "h11":  # songfeat serve's protocol where httptools is not installed
        options["http"] = http_protocol.h11_protocol()
    ident = SPOTIFY_IDS[0]
    lib = analysed_library(tmp_path, ident, pad=8_000_000)
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's own loggers do not propagate to the root
    with caplog.at_level(logging.INFO), uvicorn_server(create_app(lib, start=False), **options) as server:
        uvicorn_log.addHandler(caplog.handler)
        try:
            base = f"http://127.0.0.1:{server.config.port}"
            with _asking(server.config.port, f"/v1/audio-features/{ident}") as sock:
                t0 = time.monotonic()
                wait_for(lambda: any(r.name == "songfeat.http_protocol" for r in caplog.records), timeout=20)
                cut = time.monotonic() - t0
                wait_for(lambda: not server.server_state.connections, timeout=10)  # gone, its buffer with it
                got = _read_all(sock)  # a reset: nothing more comes
            assert len(got) < 8_000_000 and cut < 5.0, (len(got), cut)  # 1 s, looked at every 0.25 s; a busy machine
            r = requests.get(base + f"/v1/audio-features/{ident}", timeout=30)  # and a client that reads is answered
            assert r.status_code == 200 and len(r.json()["pad"]) == 8_000_000
            time.sleep(0.3)
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "songfeat.http_protocol"]
    assert len(lines) == 1 and re.fullmatch(r"songfeat: closed the connection of 127\.0\.0\.1:\d+: it read nothing of its "
                                            r"answer for 1 s \(\d+ bytes unsent\)", lines[0]), lines
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [(r.name, r.getMessage()) for r in caplog.records]


def test_a_client_reading_slowly_gets_its_whole_answer(tmp_path, monkeypatch, caplog):
    # the time-out is on an answer that stops moving, not on its length: a client reading 250 kB/s takes 14 s over
    # this one, several times the time-out. The kernel takes more of the answer from the server's buffer only once much
    # of its own (megabytes) is free, so that buffer alone stood still for seconds while the client read; the kernel's
    # unacknowledged bytes are counted too
    import logging

    from songfeat import http_protocol
    from songfeat.serve import create_app

    monkeypatch.setattr(http_protocol, "SEND_SECONDS", 1.0)
    ident, size, rate, step = SPOTIFY_IDS[0], 3_500_000, 250_000, 0.05
    lib = analysed_library(tmp_path, ident, pad=size)
    with caplog.at_level(logging.INFO), uvicorn_server(create_app(lib, start=False), **http_protocol.uvicorn_options()) as server:
        with _asking(server.config.port, f"/v1/audio-features/{ident}", close=True) as sock:
            answer, chunk = b"", b"-"
            while chunk:  # `rate` bytes a second: rate * step of them every `step` s
                time.sleep(step)
                due = len(answer) + int(rate * step)
                while chunk and len(answer) < due:
                    chunk = sock.recv(due - len(answer))
                    answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(json.loads(body)["pad"]) == size, (head, len(body))
    assert not [r.getMessage() for r in caplog.records if r.name == "songfeat.http_protocol"]


def _refusals() -> dict[str, tuple[bytes, int, str]]:
    """Raw requests a server with TOKEN, a 1-MB cap and PAGE's CORS answers before reading their body: 64 KiB of a
    50-MB upload (sent without a length: 1.3 MB of chunks, the cap passed while reading) -> (request, status, message)."""
    some = b"RIFF" + b"\0" * ((1 << 16) - 4)
    token = f"Authorization: Bearer {TOKEN}\r\n"
    too_big, refused = "upload larger than the 1 MB limit", "cross-origin request refused"

    def post(fields: str, path: str = "/v1/audio-features", body: bytes | None = None) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n{fields}".encode()
        return head + (b"Content-Length: 50000000\r\n\r\n" + some if body is None else body)

    chunked = b"Transfer-Encoding: chunked\r\n\r\n" + b"10000\r\n%s\r\n" % some * 20
    return {"413 declared": (post(token), 413, too_big),
            "413 while read": (post(token, body=chunked), 413, too_big),
            "401 no token": (post(""), 401, "No token provided"),
            "401 wrong token": (post("Authorization: Bearer nope\r\n"), 401, "Invalid access token"),
            "403 another origin": (post(f"Origin: {EVIL}\r\nSec-Fetch-Site: cross-site\r\n{token}"), 403,
                                   f"{refused}: a page at {EVIL}"),
            "403 a CORS origin": (post(f"Origin: {PAGE}\r\n{token}"), 403, f"{refused}: a page at {PAGE}"),
            "405 no upload route": (post(token, "/healthz"), 405, "Method not allowed")}


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_a_body_refused_unread_is_not_received_the_connection_closes(tmp_path, impl):
    # a refusal sent before its body was read (413, 401, 403, 405) came at once, but kept the connection alive without
    # Connection: close: uvicorn then read and discarded the rest of the body however large (1 GB in 0.3 s after a 413),
    # and a client that stopped sending it had its next request taken as that body (no answer)
    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    app = create_app(Library(root, workers=1, model="test"), token=TOKEN, max_upload_mb=1, start=False,
                     cors_origins=[PAGE])
    options = uvicorn_options() if impl == "httptools" else {**uvicorn_options(), "http": "h11"}
    with serving(app, **options) as base:
        for case, (request, status, message) in _refusals().items():
            with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=3) as sock:
                try:
                    sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):  # refused and closed while sending
                    pass
                answer = _read_all(sock)  # kept open, this timed out (uvicorn closes an idle connection after 5 s)
                with pytest.raises((BrokenPipeError, ConnectionResetError)):  # closed: no more is read (it was drained)
                    for _ in range(64):
                        sock.sendall(b"\0" * (1 << 20))
            head, body = answer.split(b"\r\n\r\n", 1)
            fields = dict(line.split(": ", 1) for line in head.decode().lower().split("\r\n")[1:])
            assert head.startswith(f"HTTP/1.1 {status} ".encode()) and fields.get("connection") == "close", (case, head)
            error = json.loads(body)["error"]
            assert error["status"] == status and error["message"].startswith(message), (case, error)
            assert fields.get("access-control-allow-origin") == (PAGE if case == "403 a CORS origin" else None), case


def _one_answer(sock) -> tuple[int, dict[str, str], bytes]:
    """Read one answer (status, lower-case header fields, body of its Content-Length) off a kept connection, leaving
    what follows it (a pipelined request's answer) to be read next."""
    reader = sock.makefile("rb", buffering=0)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = reader.read(1)
        assert byte, f"the connection closed after {head!r}"
        head += byte
    fields = dict(line.split(": ", 1) for line in head.decode().lower().strip().split("\r\n")[1:])
    body = b""
    while len(body) < int(fields.get("content-length", 0)):
        chunk = reader.read(int(fields["content-length"]) - len(body))
        assert chunk, f"the connection closed after {head + body!r}"
        body += chunk
    return int(head.split()[1]), fields, body


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_a_small_refused_body_is_read_and_the_connection_kept(tmp_path, impl):
    # a refusal sent before a small body was read (a 401 of a 2-KB upload sent whole with its head) closed the
    # connection too, costing a keep-alive client a new one for its next request; a body of at most 64 KiB that arrives
    # within a second is now read and dropped instead. Larger, chunked, slow ones and Expect: 100-continue still close.
    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import DRAIN_BYTES, create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    app = create_app(Library(root, workers=1, model="test"), token=TOKEN, max_upload_mb=1, start=False)
    options = uvicorn_options() if impl == "httptools" else {**uvicorn_options(), "http": "h11"}

    def post(body: bytes, path: str = "/v1/audio-features", length: int | None = None, fields: str = "") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: audio/wav\r\n{fields}Content-Length: "
                f"{len(body) if length is None else length}\r\n\r\n").encode() + body

    health = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with serving(app, **options) as base:
        address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=10) as sock:
            for request, status in ((post(b"x" * 2000), 401), (post(b"x" * DRAIN_BYTES, "/nowhere"), 404),
                                    (post(b"x" * 100, "/healthz"), 405)):
                sock.sendall(request)
                got, fields, _ = _one_answer(sock)
                assert got == status and "connection" not in fields, (got, fields)
                sock.sendall(health)  # the same connection serves the next request: the body was not taken as it
                got, fields, body = _one_answer(sock)
                assert got == 200 and json.loads(body)["status"] == "ok", (got, body)
            half = post(b"x" * 500, length=1000)  # the body that arrives whole within a second is read, not waited for
            sock.sendall(half)
            time.sleep(0.2)
            sock.sendall(b"x" * 500 + health)
            assert _one_answer(sock)[0] == 401 and _one_answer(sock)[0] == 200
        closed = {"over 64 KiB": post(b"x" * (DRAIN_BYTES + 1)),
                  "declared, not sent": post(b"x" * 10, length=1000),  # a slow body is not waited for beyond a second
                  "chunked": post(b"", fields="Transfer-Encoding: chunked\r\n").replace(b"Content-Length: 0\r\n", b"")
                  + b"5\r\nxxxxx\r\n0\r\n\r\n",
                  "100-continue": post(b"", length=10, fields="Expect: 100-continue\r\n")}
        for case, request in closed.items():
            with socket.create_connection(address, timeout=10) as sock:
                t0 = time.monotonic()
                sock.sendall(request)
                got, fields, _ = _one_answer(sock)
                assert got == 401 and fields.get("connection") == "close", (case, got, fields)
                assert time.monotonic() - t0 < 5, case
                assert _read_all(sock) == b"", case  # and closed


def test_uploads_a_killed_server_was_receiving_are_removed_at_start(tmp_path):
    # kill -9 during an upload left its incoming-*.part (up to the upload cap) in .songfeat/uploads for good
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    lib.uploads.mkdir(parents=True, exist_ok=True)
    stale = lib.uploads / "incoming-abc123.part"
    stale.write_bytes(b"RIFF" + b"\0" * 1000)
    kept = lib.uploads / "0123456789abcdefghijkl.upload.wav"
    kept.write_bytes(b"RIFF")
    lib.start()
    try:
        assert not stale.exists() and kept.exists()
    finally:
        lib.stop()


def test_a_second_server_on_the_same_library_leaves_the_first_alone(tmp_path):
    # A second `songfeat serve` on a library already served (its port taken, or another port) started its own queue over
    # the index and removed the first server's uploads in progress: their clients got a 500 (FileNotFoundError).
    from typer.testing import CliRunner

    from songfeat.cli import app
    from songfeat.library import SongfeatError

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    first = Library(root, workers=1, model="test")
    first.start()
    try:
        first.uploads.mkdir(parents=True, exist_ok=True)
        receiving = first.uploads / "incoming-abc123.part"  # an upload the first server is receiving
        receiving.write_bytes(b"RIFF" + b"\0" * 1000)
        second = Library(root, workers=1, model="test")
        with pytest.raises(SongfeatError, match="another songfeat serve"):
            second.start()
        r = CliRunner().invoke(app, ["serve", "--library", str(root), "--port", str(free_port()), "--workers", "1"])
        assert r.exit_code == 2 and "another songfeat serve is using this index" in r.output, r.output
        assert receiving.exists() and second._pool is None
    finally:
        first.stop()
    second.start()  # the first has stopped: its lock went with it
    second.stop()


def test_a_port_in_use_is_one_line_before_any_work_and_port_zero_says_its_port(tmp_path):
    # A busy --port was uvicorn's own "ERROR: [Errno 98]" line and exit 3, after the workers had started and the folder
    # was scanned; --port 0 announced ":0" instead of the port the system chose.
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "songfeat.cli", "serve", "--library", str(root), "--port", str(port), "--workers", "1"]
        p = subprocess.run(cmd, env=hermetic_environ(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"songfeat: error: cannot listen on 127.0.0.1:{port} (Address already in use)"]
    assert not (root / ".songfeat" / "library.db").exists() or not Library(root, workers=1).index.counts()["done"]
    log = tmp_path / "zero.log"
    proc = subprocess.Popen(cmd[:7] + ["0", "--workers", "1"], env=hermetic_environ(), stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))
    try:
        deadline = time.monotonic() + 90
        while "serving" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        said = log.read_text()
        chosen = int(said.split("http://127.0.0.1:")[1].split("/")[0])
        assert chosen > 0, said
        wait_for(lambda: _answers(f"http://127.0.0.1:{chosen}/healthz"), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_head_is_answered_like_get_without_a_body(tmp_path):
    # every route answered HEAD with 405, /healthz included
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    with serving(create_app(Library(root, workers=1, model="test"), start=False)) as base:
        get, head = requests.get(base + "/healthz", timeout=10), requests.head(base + "/healthz", timeout=10)
        assert (head.status_code, head.content) == (200, b"") and head.headers["content-type"] == get.headers["content-type"]
        assert requests.head(base + "/v1/audio-features/" + "A" * 22, timeout=10).status_code == 404
        assert requests.get(base + "/healthz", timeout=10).json()["status"] == "ok"


def test_a_folder_that_cannot_be_listed_keeps_its_rows(tmp_path, monkeypatch):
    # out of file descriptors, a scan could not list the library and took every file for gone: all rows were deleted,
    # done tracks answered 404 and were analysed again once the scan could see them
    import errno
    import os

    root = tmp_path / "music"
    make_clip(root / "a.wav", seconds=1.0)
    make_clip(root / "sub" / "b.wav", seconds=1.0, seed=1)
    make_clip(root / "sub" / "c.wav", seconds=1.0, seed=2)
    lib = Library(root, workers=1, model="test")
    assert lib.scan().added == 3
    real = os.scandir
    blocked: set[str] = set()

    def scandir(path="."):
        if os.path.abspath(path) in blocked:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    (root / "sub" / "c.wav").unlink()  # really gone, but inside the folder nobody can list
    blocked.add(str(root / "sub"))
    report = lib.scan()
    assert (report.removed, report.unchecked, report.unchanged) == (0, 2, 1)
    assert "cannot list folder" in report.unreadable[0] and "Too many open files" in report.unreadable[0]
    blocked.add(str(root))  # the whole library unreadable (unmounted): nothing is dropped either
    report = lib.scan()
    assert (report.removed, report.unchecked) == (0, 3) and sum(lib.index.counts().values()) == 3
    blocked.clear()  # readable again: what is really gone goes, the rest is as it was
    report = lib.scan()
    assert (report.removed, report.added, report.unchecked) == (1, 0, 0) and sum(lib.index.counts().values()) == 2


def test_what_a_scan_cannot_read_is_warned_about_once_and_counted(tmp_path, monkeypatch, caplog):
    # A dangling symlink (a FIFO, a folder without permission) was warned about by every scan, a line a minute for good
    # with the default --rescan-interval; and "could not read N place(s)" left out files that could not be hashed.
    import songfeat.library

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    make_clip(root / "locked.wav", seconds=1.0, seed=1)
    (root / "gone.mp3").symlink_to(tmp_path / "nowhere.mp3")
    real = songfeat.library.file_sha256

    def file_sha256(path) -> str:
        """The real hash, but locked.wav cannot be read."""
        if Path(path).name == "locked.wav":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(songfeat.library, "file_sha256", file_sha256)
    idx = Index(tmp_path / "index.db", model="m")
    for _ in range(3):
        assert len(idx.scan(root).unreadable) == 2
    assert caplog.text.count("could not read") == 1 and "could not read 2 place(s)" in caplog.text
    (root / "gone.mp3").unlink()  # something changed: said again
    idx.scan(root)
    assert caplog.text.count("could not read") == 2 and "could not read 1 place(s)" in caplog.text


def test_empty_id_is_named(tmp_path):
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False)) as base:
        for ids in (f"{SPOTIFY_IDS[0]},,{SPOTIFY_IDS[1]}", f"{SPOTIFY_IDS[0]},"):
            r = requests.get(base + "/v1/audio-features", params={"ids": ids})
            assert r.status_code == 400 and "invalid id ''" in r.json()["error"]["message"], r.text


def analysed_library(tmp_path, ident: str, pad: int = 0) -> Library:
    """A library (tmp_path/music) of one clip named `ident`, indexed and marked analysed with features {"id": ident}
    (and `"pad"`, a string of `pad` bytes, when given: an answer that large)."""
    root = tmp_path / "music"
    make_clip(root / f"{ident}.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    lib.scan()
    con = lib.index.conn()
    with con:
        con.execute("UPDATE tracks SET state='done', features=?", (json.dumps({"id": ident, **({"pad": "x" * pad} if pad else {})}),))
    return lib


def test_repeated_ids_parameters_are_all_looked_up(tmp_path):
    # `?ids=a&ids=b` answered for b alone: one entry for two ids asked, so an app zipping ids with answers misread them
    from songfeat.serve import create_app

    lib = analysed_library(tmp_path, SPOTIFY_IDS[1])
    with serving(create_app(lib, start=False)) as base:
        r = requests.get(base + "/v1/audio-features", params=[("ids", SPOTIFY_IDS[0]), ("ids", f"{SPOTIFY_IDS[1]},{SPOTIFY_IDS[0]}")])
        assert r.status_code == 200 and r.json() == {"audio_features": [None, {"id": SPOTIFY_IDS[1]}, None]}, r.text
        r = requests.get(base + "/v1/audio-features", params=[("ids", SPOTIFY_IDS[0])] * 101)
        assert r.status_code == 400 and "Too many ids" in r.json()["error"]["message"]
        r = requests.get(base + "/v1/audio-features", params=[("ids", ""), ("ids", SPOTIFY_IDS[0])])
        assert r.status_code == 400 and "invalid id ''" in r.json()["error"]["message"]


def test_overlong_multipart_boundary_is_a_400(tmp_path):
    # python-multipart refuses a boundary over 256 bytes in its constructor, which ran outside the 400 handling: a 500.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, start=False)) as base:
        r = requests.post(base + "/v1/audio-features", data=b"--" + b"b" * 300 + b"\r\n",
                          headers={"Content-Type": "multipart/form-data; boundary=" + "b" * 300})
        assert r.status_code == 400 and r.json()["error"]["status"] == 400 and "multipart" in r.json()["error"]["message"]
    assert not [p for p in lib.uploads.iterdir() if p.name.startswith("incoming-")]  # no temporary file left


MALFORMED_MULTIPART = {  # body (boundary 'b') -> python-multipart's words for it, which the 400 quotes
    b"--b\r\nCon\xfftent-Disposition: form-data; name=file\r\n\r\nRIFF\r\n--b--\r\n": "Found invalid character 255 in header at 8",
    b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nRIFF\r\n--b--\r\n": "Expected boundary character 98, got 120 at index 4",
    b"--bX\r\nContent-Disposition: form-data; name=file\r\n\r\nRIFF\r\n--b--\r\n": "Did not find CR at end of boundary (3)"}


def test_a_malformed_multipart_body_is_a_400_and_prints_no_raw_line(served, tmp_path, caplog):
    # python-multipart logs each malformed body on its own logger before raising for it; with no handler there, Python
    # printed the line raw on the server's stderr ('Found invalid character 255 in header at 8'), outside songfeat's lines
    import logging

    from songfeat.serve import create_app

    srv, _, _ = served
    for body, said in MALFORMED_MULTIPART.items():
        r = requests.post(srv.base + "/v1/audio-features", data=body,
                          headers={**auth(), "Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 400 and r.json() == {"error": {"status": 400, "message": f"malformed multipart body ({said})"}}
    assert requests.get(srv.base + "/healthz", timeout=10).status_code == 200  # written before the answer: all there now
    log = srv.log.read_text()
    assert not [line for line in log.splitlines() if any(said in line for said in MALFORMED_MULTIPART.values())], log
    root = tmp_path / "music"  # the lines are songfeat's, at DEBUG: shown only to who asks for them
    make_clip(root / "intro.wav", seconds=1.0)
    with serving(create_app(Library(root, workers=1, model="test"), start=False)) as base, caplog.at_level(logging.DEBUG):
        body, said = next(iter(MALFORMED_MULTIPART.items()))
        assert requests.post(base + "/v1/audio-features", data=body,
                             headers={"Content-Type": "multipart/form-data; boundary=b"}).status_code == 400
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if said in r.getMessage()]
    assert records == [("songfeat.serve", logging.DEBUG, f"songfeat: malformed multipart body: {said}")], records


def test_a_file_replaced_before_a_scan_gets_no_stale_result(tmp_path):
    # A result was written whenever the *index row* still had the queued size and mtime, so a file replaced while it
    # was analysed (before any scan saw it) kept the old content's result, until a scan that --rescan-interval 0 never
    # runs; and an audio-analysis object of the new content was cached for good under the old content's hash.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "slow.wav", seconds=1.0)
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, job=hostile_job, model="test", analysis_target="test_serve:fake_analysis")
    with serving(create_app(lib, wait_seconds=20)) as base:
        wait_for(lambda: "features:" + str(root / "slow.wav") in lib._inflight, timeout=30)
        make_clip(root / "slow.wav", seconds=2.0, seed=4)  # replaced while its (2-s) analysis runs
        st = os.stat(root / "slow.wav")
        wait_for(lambda: lib.index.row(str(root / "slow.wav"))[4] == "done", timeout=30)
        assert lib.index.row(str(root / "slow.wav"))[1:3] == (st.st_size, st.st_mtime_ns)  # the result is the new file's

        make_clip(root / "intro.wav", seconds=2.5, seed=5)  # replaced after the scan: the index still holds the old hash
        ident = ids_of(root)["intro.wav"]
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert r.status_code == 404 and "changed" in r.json()["error"]["message"], r.text
        wait_for(lambda: lib.index.row(str(root / "intro.wav"))[1] == os.stat(root / "intro.wav").st_size, timeout=30)
        r = requests.get(f"{base}/v1/audio-analysis/{ids_of(root)['intro.wav']}", timeout=30)  # a new content, a new id
        assert r.status_code == 200 and abs(r.json()["track"]["duration"] - 2.5) < 0.01, r.text
        assert requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30).status_code == 404


def test_a_file_moved_before_a_scan_keeps_its_audio_analysis(tmp_path):
    # An audio analysis asked for after its file was moved (renamed, or put in another folder) and before a scan saw
    # it failed with FileNotFoundError, and that failure was cached under the content's hash: once the scan found the
    # file at its new place, the same content answered 404 "could not be analysed" for good.
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, job=hostile_job, model="test", analysis_target="test_serve:fake_analysis")
    with serving(create_app(lib, wait_seconds=20)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["done"] == 1, timeout=30)
        ident = ids_of(root)["intro.wav"]
        (root / "sub").mkdir()
        os.replace(root / "intro.wav", root / "sub" / "renamed.wav")
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert r.status_code == 404 and "FileNotFoundError" not in r.text and "changed" in r.json()["error"]["message"]
        wait_for(lambda: "renamed.wav" in ids_of(root) and "intro.wav" not in ids_of(root), timeout=30)  # the scan it asked for
        assert lib.index.conn().execute("SELECT count(*) FROM failed_analyses").fetchone()[0] == 0
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert r.status_code == 200 and abs(r.json()["track"]["duration"] - 1.0) < 0.01, r.text


def test_a_token_no_header_can_carry_is_refused(tmp_path):
    # A non-ASCII --token was accepted, and then no request could ever match it (headers are read as latin-1): 401 for all.
    from typer.testing import CliRunner

    from songfeat.cli import app
    from songfeat.serve import check_token, create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    r = CliRunner().invoke(app, ["serve", "--library", str(root), "--token", "clé-secrète"])
    assert r.exit_code == 2 and "--token" in r.output and "ASCII" in r.output
    with pytest.raises(ValueError, match="ASCII"):
        create_app(Library(root, workers=1, model="test"), token=" padded", start=False)
    check_token("s3cret-token_ok")  # a usual token passes
    # an empty token read as none: `--token ''` or an empty SONGFEAT_TOKEN served without authentication, silently
    r = CliRunner().invoke(app, ["serve", "--library", str(root), "--token", ""])
    assert r.exit_code == 2 and "--token" in r.output and "empty" in r.output
    r = CliRunner().invoke(app, ["serve", "--library", str(root)], env={"SONGFEAT_TOKEN": ""})
    assert r.exit_code == 2 and "empty" in r.output


def _request(base: str, target: str, headers: list[tuple[str, str]], method: str = "GET",
             body: bytes = b"") -> tuple[int, dict, bytes]:
    """A request sent as given (`headers` in order, repeats kept, Host among them if wanted; a body with its
    Content-Length): status, headers, body."""
    host, port = base.removeprefix("http://").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    con.putrequest(method, target, skip_host=any(k.lower() == "host" for k, _ in headers), skip_accept_encoding=True)
    for k, v in headers:
        con.putheader(k, v)
    if body:
        con.putheader("Content-Length", str(len(body)))
    con.endheaders(body or None)
    r = con.getresponse()
    answer = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    con.close()
    return answer


def test_cors_is_opt_in_and_a_preflight_needs_no_token(tmp_path):
    # Browser apps written for Spotify's Web API call it from JavaScript; without CORS headers a browser hides every answer.
    from typer.testing import CliRunner

    from songfeat.cli import app
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    page = "http://localhost:5173"
    lookup = f"/v1/audio-features?ids={SPOTIFY_IDS[0]}"
    preflight = [("Origin", page), ("Access-Control-Request-Method", "GET"), ("Access-Control-Request-Headers", "authorization")]
    with serving(create_app(Library(root, workers=1, model="test"), token=TOKEN, start=False)) as base:  # off by default
        status, headers, _ = _request(base, lookup, preflight, method="OPTIONS")
        assert status == 405 and not [k for k in headers if k.startswith("access-control-")]
        status, headers, _ = _request(base, lookup, [("Origin", page), *auth().items()])
        assert status == 200 and not [k for k in headers if k.startswith("access-control-")]
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, token=TOKEN, start=False, cors_origins=[page, "https://viz.example"])) as base:
        status, headers, _ = _request(base, lookup, preflight, method="OPTIONS")  # no token: browsers send none here
        assert status == 200 and headers["access-control-allow-origin"] == page
        assert "authorization" in headers["access-control-allow-headers"].lower()
        assert {"GET", "HEAD", "OPTIONS"} <= set(headers["access-control-allow-methods"].replace(" ", "").split(","))
        status, headers, _ = _request(base, lookup, [*preflight, ("Access-Control-Request-Private-Network", "true")],
                                      method="OPTIONS")  # Chrome's, from a public page to this local server
        assert status == 200 and headers["access-control-allow-private-network"] == "true"
        for bad in ([("Origin", "http://evil.example"), *preflight[1:]],  # an origin not named
                    [preflight[0], ("Access-Control-Request-Method", "POST")]):  # a method not allowed
            status, headers, body = _request(base, lookup, bad, method="OPTIONS")
            assert status == 400 and json.loads(body)["error"]["status"] == 400, body
            assert headers.get("access-control-allow-origin") != "http://evil.example"
        status, headers, body = _request(base, lookup, [("Origin", page)])  # the request itself still needs the token
        assert status == 401 and json.loads(body)["error"]["message"] == "No token provided"
        assert headers["access-control-allow-origin"] == page  # and the page may read why
        status, headers, body = _request(base, lookup, [("Origin", page), *auth().items()])
        assert status == 200 and json.loads(body) == {"audio_features": [None]}
        assert headers["access-control-allow-origin"] == page and "retry-after" in headers["access-control-expose-headers"].lower()
        status, headers, _ = _request(base, lookup, [("Origin", "http://evil.example"), *auth().items()])
        assert status == 200 and "access-control-allow-origin" not in headers  # answered, but no page of it may read it
    with serving(create_app(lib, token=TOKEN, start=False, cors_origins=["*"])) as base:
        status, headers, _ = _request(base, lookup, [("Origin", "http://any.example"), *auth().items()])
        assert status == 200 and headers["access-control-allow-origin"] == "*"
    with pytest.raises(ValueError, match="would never match"):
        create_app(lib, start=False, cors_origins=[page + "/"])
    for given, said in ((page + "/", f"browsers send it as '{page}'"), ("HTTP://LocalHost:5173", f"'{page}'"),
                        ("https://viz.example:443", "'https://viz.example'"), ("localhost:5173", "not an origin"),
                        ("null", "'*'")):
        r = CliRunner().invoke(app, ["serve", "--library", str(root), "--cors-origin", "*", "--cors-origin", given])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert r.output.startswith("songfeat: error: --cors-origin: ") and said in r.output, r.output


def test_a_page_from_an_allowed_origin_can_read_a_500(tmp_path, monkeypatch):
    # an unhandled exception's 500 came from Starlette's ServerErrorMiddleware, outside the CORS middleware: a page from
    # an allowed origin saw a bare "CORS error", never the JSON saying what went wrong
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, model="test")

    def broken(ids):
        raise RuntimeError("index gone")

    monkeypatch.setattr(lib.index, "lookup", broken)  # every lookup fails unhandled
    page, other = "http://localhost:5173", "http://evil.example"
    lookup = f"/v1/audio-features?ids={SPOTIFY_IDS[0]}"
    error = {"error": {"status": 500, "message": "internal error (RuntimeError)"}}
    with serving(create_app(lib, token=TOKEN, start=False, cors_origins=[page])) as base:
        for method in ("GET", "HEAD"):
            status, headers, body = _request(base, lookup, [("Origin", page), *auth().items()], method=method)
            assert status == 500 and headers["access-control-allow-origin"] == page, (method, headers)
            assert "Origin" in headers["vary"] and "retry-after" in headers["access-control-expose-headers"].lower()
            assert json.loads(body) == error if method == "GET" else body == b""
        status, headers, body = _request(base, lookup, [("Origin", other), *auth().items()])
        assert status == 500 and "access-control-allow-origin" not in headers and "Origin" in headers["vary"]
        assert json.loads(body) == error
        status, headers, _ = _request(base, "/v1/no-such-endpoint", [("Origin", page), *auth().items()])
        assert status == 404 and headers["access-control-allow-origin"] == page  # as every other error already was
        text = _request(base, "/metrics", list(auth().items()))[2].decode()
        assert 'route="/v1/audio-features",status="500"' in text  # counted as before
    with serving(create_app(lib, token=TOKEN, start=False, cors_origins=["*"])) as base:
        status, headers, body = _request(base, lookup, [("Origin", other), *auth().items()])
        assert status == 500 and headers["access-control-allow-origin"] == "*" and json.loads(body) == error
    with serving(create_app(lib, token=TOKEN, start=False)) as base:  # CORS off: the same 500, no CORS header
        status, headers, body = _request(base, lookup, [("Origin", page), *auth().items()])
        assert status == 500 and json.loads(body) == error and not [k for k in headers if k.startswith("access-control-")]


def test_a_trailing_slash_is_the_path_without_it_never_a_redirect(tmp_path):
    # `/v1/audio-features/{id}/` got Starlette's 307 to a Location built from the request's Host header
    from songfeat.serve import create_app

    lib = analysed_library(tmp_path, SPOTIFY_IDS[0])
    evil = [("Host", "evil.example"), *auth().items()]
    # a name the server is reached by (a proxy's): one not allowed gets 400 before any redirect could be made
    with serving(create_app(lib, token=TOKEN, start=False, allowed_hosts=["evil.example"])) as base:
        for path in ("/healthz", f"/v1/audio-features/{SPOTIFY_IDS[0]}", f"/v1/audio-features?ids={SPOTIFY_IDS[0]}",
                     "/v1/audio-features/AAAAAAAAAAAAAAAAAAAAAA", "/metrics", "/v1/no-such-endpoint"):
            slashed = path.replace("?", "/?") if "?" in path else path + "/"
            want_status, _, want_body = _request(base, path, evil)
            status, headers, body = _request(base, slashed, evil)
            assert status == want_status and "location" not in headers, (slashed, status, headers)
            if path != "/metrics":  # its own counts move between the two requests
                assert body == want_body, slashed
        assert _request(base, f"/v1/audio-features/{SPOTIFY_IDS[0]}/", evil)[0] == 200
        for target in ("/healthz//", f"/v1/audio-features/{SPOTIFY_IDS[0]}%2F"):  # one literal slash only is dropped
            status, headers, body = _request(base, target, evil)
            assert status == 404 and "location" not in headers and json.loads(body)["error"]["status"] == 404, target
        text = _request(base, "/metrics", auth().items())[2].decode()
        assert 'route="/healthz",status="200"' in text  # counted under its route, not as an unmatched path


# A page on any site can make its visitor's browser POST a form (multipart/form-data or text/plain, no custom header: a
# CORS "simple request", sent without a preflight) to http://127.0.0.1:PORT. With no token the server stored and analysed
# the upload, or rescanned, for a page that could not even read the answer; a page of a --cors-origin origin could read it
# too. The docs said uploads and rescans "stay same-origin": only preflights did.
FORM_BOUNDARY = "----songfeat-test-boundary"
FORM = [("Content-Type", f"multipart/form-data; boundary={FORM_BOUNDARY}")]
TEXT = [("Content-Type", "text/plain")]
EVIL, PAGE = "http://evil.example", "http://localhost:5173"


def _form(data: bytes, name: str = "song.mp3") -> bytes:
    """A multipart/form-data body of one file field, as a page's <form enctype="multipart/form-data"> posts it."""
    return (f"--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: audio/mpeg\r\n\r\n").encode() + data + f"\r\n--{FORM_BOUNDARY}--\r\n".encode()


@contextlib.contextmanager
def _watched(tmp_path, monkeypatch, **options):
    """An app (create_app(..., **options), no workers) over one analysed clip, whose rescans and uploads are recorded
    instead of done; yields (base URL, rescans asked for, uploads taken, stored upload files now)."""
    from songfeat.serve import create_app

    lib = analysed_library(tmp_path, SPOTIFY_IDS[0])
    scans, uploads = [], []
    monkeypatch.setattr(lib, "request_scan", lambda: scans.append(1))

    def upload(*args):  # the first step of storing and analysing an upload
        uploads.append(args)
        raise RuntimeError("the upload was taken")

    monkeypatch.setattr(lib, "upload", upload)
    with serving(create_app(lib, start=False, **options)) as base:
        yield base, scans, uploads, lambda: sorted(p.name for p in lib.uploads.iterdir()) if lib.uploads.exists() else []


def _refused(base: str, target: str, headers: list[tuple[str, str]], who: str) -> dict:
    """POST `target` as a page's form would, from `headers`: assert the 403 names `who` and says what to do; its headers."""
    body, kind = (_form(mp3_bytes(1.0)), FORM) if target == "/v1/audio-features" else (b"x=1", TEXT)
    status, answer, raw = _request(base, target, [*headers, *kind], method="POST", body=body)
    assert status == 403, (headers, target, status, raw)
    error = json.loads(raw)["error"]
    assert error["status"] == 403 and f"cross-origin request refused: {who}" in error["message"], error
    assert f"may not POST {target}" in error["message"] and "no Origin header (curl, scripts, spotipy)" in error["message"]
    assert error["message"].endswith("--cors-origin opens the GET routes only")
    assert "connection" not in answer  # its small body, sent whole, is read and dropped: the connection is kept for the next
    return answer


CROSS_ORIGIN = {  # headers a browser sends with another origin's POST: (headers, who the message names)
    "cross-site page": ([("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")], f"a page at {EVIL}"),
    "old browser or plain-http address": ([("Origin", EVIL)], f"a page at {EVIL}"),  # no Sec-Fetch-Site: Origin decides
    "same site, other port": ([("Origin", "http://127.0.0.1:5173"), ("Sec-Fetch-Site", "same-site")], "a page at http://127.0.0.1:5173"),
    "sandboxed or file:// page": ([("Origin", "null"), ("Sec-Fetch-Site", "cross-site")], "a sandboxed or file:// page"),
    "fetch metadata alone": ([("Sec-Fetch-Site", "cross-site")], "a page of another origin (Sec-Fetch-Site: cross-site)"),
}


@pytest.mark.parametrize("case", list(CROSS_ORIGIN))
def test_a_page_of_another_origin_cannot_upload(tmp_path, monkeypatch, case):
    headers, who = CROSS_ORIGIN[case]
    with _watched(tmp_path, monkeypatch) as (base, scans, uploads, stored):
        answer = _refused(base, "/v1/audio-features", headers, who)
        assert not [k for k in answer if k.startswith("access-control-")]
        assert not uploads and stored() == []  # nothing stored or analysed


@pytest.mark.parametrize("case", list(CROSS_ORIGIN))
def test_a_page_of_another_origin_cannot_rescan(tmp_path, monkeypatch, case):
    headers, who = CROSS_ORIGIN[case]
    with _watched(tmp_path, monkeypatch) as (base, scans, uploads, stored):
        _refused(base, "/library/rescan", headers, who)
        assert not scans


def test_an_allowed_cors_origin_still_cannot_post(tmp_path, monkeypatch):
    # --cors-origin opens the GET routes (the docs: "uploads and rescans stay same-origin"); its page may read the 403
    with _watched(tmp_path, monkeypatch, cors_origins=[PAGE]) as (base, scans, uploads, stored):
        for headers in ([("Origin", PAGE), ("Sec-Fetch-Site", "cross-site")], [("Origin", PAGE)]):
            for target in ("/v1/audio-features", "/library/rescan"):
                answer = _refused(base, target, headers, f"a page at {PAGE}")
                assert answer["access-control-allow-origin"] == PAGE  # so the page can show why
            answer = _refused(base, "/library/rescan", [("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")], f"a page at {EVIL}")
            assert "access-control-allow-origin" not in answer  # any other page may not even read that
        assert not scans and not uploads and stored() == []
    with _watched(tmp_path / "any", monkeypatch, cors_origins=["*"]) as (base, scans, uploads, stored):
        _refused(base, "/library/rescan", [("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")], f"a page at {EVIL}")
        assert not scans


def test_the_same_origin_and_clients_without_origin_may_post(tmp_path, monkeypatch):
    with _watched(tmp_path, monkeypatch, cors_origins=[PAGE]) as (base, scans, uploads, stored):
        own_host = base.removeprefix("http://")
        allowed = {"curl, spotipy, scripts (no Origin)": [],
                   "own page (/docs)": [("Origin", base), ("Sec-Fetch-Site", "same-origin")],
                   "own page, old browser or plain-http address": [("Origin", base)],
                   "own page, Host in capitals": [("Host", own_host.upper()), ("Origin", base)],
                   "typed by the user": [("Sec-Fetch-Site", "none")]}
        for case, headers in allowed.items():
            status, _, raw = _request(base, "/library/rescan", [*headers, *TEXT], method="POST", body=b"x=1")
            assert status == 202 and json.loads(raw) == {"status": "scanning"}, (case, status, raw)
            status, _, raw = _request(base, "/v1/audio-features", [*headers, *FORM], method="POST", body=_form(b""))
            assert status == 400 and "empty upload" in json.loads(raw)["error"]["message"], (case, raw)  # past the check
        assert len(scans) == len(allowed)
        status, _, raw = _request(base, "/v1/audio-features", FORM, method="POST", body=_form(mp3_bytes(1.0)))
        assert status == 500 and len(uploads) == 1  # taken (the recording stand-in then fails it)


def test_a_cross_origin_post_is_refused_whatever_the_token(tmp_path, monkeypatch):
    with _watched(tmp_path, monkeypatch, token=TOKEN) as (base, scans, uploads, stored):
        for headers in ([("Origin", EVIL)], [("Origin", EVIL), *auth().items()]):  # 403 before the token's 401
            _refused(base, "/library/rescan", headers, f"a page at {EVIL}")
        assert not scans
        assert _request(base, "/library/rescan", list(auth().items()), method="POST")[0] == 202
        assert _request(base, "/library/rescan", [("Origin", base), *auth().items()], method="POST")[0] == 202
        assert _request(base, "/library/rescan", [("Origin", base)], method="POST")[0] == 401  # the token still counts
        assert len(scans) == 2
        text = _request(base, "/metrics", list(auth().items()))[2].decode()
        assert 'route="/library/rescan",status="403"' in text  # counted under its route


def test_reading_is_open_to_any_origin_as_before(tmp_path, monkeypatch):
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    with _watched(tmp_path, monkeypatch, cors_origins=[PAGE]) as (base, scans, uploads, stored):
        for headers in ([("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")], [("Origin", PAGE), ("Sec-Fetch-Site", "same-site")],
                        [("Origin", "null")], [("Origin", EVIL)], []):
            for method in ("GET", "HEAD"):
                status, answer, raw = _request(base, lookup, headers, method=method)
                assert status == 200, (headers, method, raw)
                assert raw == b"" if method == "HEAD" else json.loads(raw) == {"id": SPOTIFY_IDS[0]}
                assert answer.get("access-control-allow-origin") == (PAGE if dict(headers).get("Origin") == PAGE else None)
            assert _request(base, f"/v1/audio-features?ids={SPOTIFY_IDS[0]}", headers)[0] == 200
            assert _request(base, "/healthz", headers)[0] == 200
        preflight = [("Origin", PAGE), ("Access-Control-Request-Method", "GET"), ("Sec-Fetch-Site", "same-site")]
        assert _request(base, lookup, preflight, method="OPTIONS")[0] == 200  # preflights as before


@pytest.mark.parametrize("origin, scheme, host, same", [
    ("http://127.0.0.1:8080", "http", "127.0.0.1:8080", True),
    ("http://localhost:8080", "http", "LocalHost:8080", True),  # case
    ("HTTP://LOCALHOST:8080", "http", "localhost:8080", True),
    ("http://localhost", "http", "localhost:80", True),  # a default port, spelled or not
    ("https://music.example", "https", "music.example:443", True),
    ("http://[::1]:8080", "http", "[::1]:8080", True),  # IPv6 literals, however spelled
    ("http://[::1]:8080", "http", "[0:0:0:0:0:0:0:1]:8080", True),
    ("http://[::1]:8080", "http", "[::2]:8080", False),
    ("http://[::1]:8080", "http", "::1:8080", False),
    ("http://localhost:8080", "http", "localhost:8081", False),  # port
    ("http://localhost", "http", "localhost:8080", False),
    ("http://localhost:80", "https", "localhost:80", False),  # scheme: a plain-http page is not the https server's
    ("https://localhost:8080", "http", "localhost:8080", False),
    ("http://127.0.0.1:8080", "http", "localhost:8080", False),  # another name is another origin
    ("http://localhost:8080.evil.example", "http", "localhost:8080", False),
    ("http://user@localhost:8080", "http", "localhost:8080", False),  # not an origin
    ("http://localhost:8080/", "http", "localhost:8080", False),
    ("http://localhost:99999", "http", "localhost:99999", False),
    ("null", "http", "localhost:8080", False),
    ("", "http", "localhost:8080", False),
    ("http://localhost:8080", "http", None, False),  # no Host (HTTP/1.0), or more than one
])
def test_an_origin_is_compared_with_the_requests_own(origin, scheme, host, same):
    from songfeat.serve import is_same_origin

    assert is_same_origin(origin, scheme, host) is same


# DNS rebinding: a page at http://evil.example:PORT whose owner then points evil.example at 127.0.0.1 makes its visitor's
# browser talk to the local server as the page's own origin (Host, Origin and Sec-Fetch-Site all the page's): the
# cross-origin check let it through, and without a token it read every GET route (the library, /healthz, /metrics) and
# posted uploads and rescans.
def _as_page_of(base: str, host: str) -> list[tuple[str, str]]:
    """The headers a browser sends with the requests of a page served from `host` (`{port}`: the server's port) to its own
    origin: what a rebinding page's requests carry, its name in Host."""
    host = host.format(port=base.rsplit(":", 1)[1])
    return [("Host", host), ("Origin", f"http://{host}"), ("Sec-Fetch-Site", "same-origin")]


def _host_refused(answer: tuple[int, dict, bytes], host: str, loopback: bool = True) -> str:
    """Assert `answer` is the 400 refusing Host `host`, in Spotify's shape, saying how to allow it; its message."""
    status, headers, raw = answer
    assert status == 400 and headers["content-type"] == "application/json", (host, status, raw)
    error = json.loads(raw)["error"]
    assert error == {"status": 400, "message": error["message"]}
    served = "listens on a loopback address and answers" if loopback else "answers"
    assert error["message"].startswith(f"Host {host} refused: this server {served} only requests addressed to localhost, "
                                       "*.localhost, 127.x.x.x, [::1] or a name given with --allowed-host."), error
    assert "(DNS rebinding)" in error["message"], error
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    assert error["message"].endswith(f"start it with --allowed-host {name.lower().strip('[]').removesuffix('.')}"), error
    return error["message"]


def test_a_rebinding_page_gets_nothing_from_a_loopback_server(tmp_path, monkeypatch):
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    with _watched(tmp_path, monkeypatch) as (base, scans, uploads, stored):
        port = base.rsplit(":", 1)[1]
        page = _as_page_of(base, "evil.example:{port}")
        for target in (lookup, f"/v1/audio-features?ids={SPOTIFY_IDS[0]}", f"/v1/audio-analysis/{SPOTIFY_IDS[0]}",
                       "/healthz", "/metrics", "/docs", "/openapi.json", "/v1/no-such-endpoint"):
            _host_refused(_request(base, target, page), f"evil.example:{port}")
        status, headers, raw = _request(base, lookup, page, method="HEAD")
        assert status == 400 and raw == b"" and headers["content-type"] == "application/json"
        _host_refused(_request(base, "/library/rescan", [*page, *TEXT], method="POST", body=b"x=1"), f"evil.example:{port}")
        _host_refused(_request(base, "/v1/audio-features", [*page, *FORM], method="POST", body=_form(mp3_bytes(1.0))),
                      f"evil.example:{port}")
        _host_refused(_request(base, lookup, [("Host", "evil.example")]), "evil.example")  # no Origin, no port: the same
        assert not scans and not uploads and stored() == []  # nothing acted on
        own = _as_page_of(base, "127.0.0.1:{port}")  # the same requests from the server's own page are answered
        assert _request(base, lookup, own)[0] == 200
        assert _request(base, "/library/rescan", [*own, *TEXT], method="POST", body=b"x=1")[0] == 202 and len(scans) == 1
        text = _request(base, "/metrics", [])[2].decode()
        assert 'route="unmatched",status="400"' in text  # refusals are counted


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_an_absolute_form_target_is_checked_by_its_own_host(tmp_path, impl):
    # `GET http://evil.example/healthz HTTP/1.1` with `Host: localhost` was answered 200: the check read Host, which a
    # server must ignore for a target in absolute form, whose authority names the host (RFC 9112, 3.2.2); and h11 took
    # such a target whole for its path (404 for `http://localhost/healthz`)
    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    app = create_app(Library(root, workers=1, model="test"), start=False)
    options = uvicorn_options() if impl == "httptools" else {**uvicorn_options(), "http": "h11"}
    with serving(app, **options) as base:
        port = base.rsplit(":", 1)[1]

        def answer(target: str, fields: str = "Host: localhost\r\n", version: str = "1.1") -> tuple[int, dict, bytes]:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as sock:
                sock.sendall(f"GET {target} HTTP/{version}\r\n{fields}Connection: close\r\n\r\n".encode())
                return _one_answer(sock)

        for target, host in ((f"http://evil.example:{port}/healthz", f"evil.example:{port}"),
                             ("http://evil.example/v1/audio-features?ids=" + SPOTIFY_IDS[0], "evil.example"),
                             (f"HTTP://10.0.0.1:{port}/healthz", f"10.0.0.1:{port}")):
            _host_refused(answer(target), host)
            two = answer(target, "Host: localhost\r\nHost: 127.0.0.1\r\n")  # however many Host fields
            if impl == "httptools":
                _host_refused(two, host)
            else:  # h11 refuses two Host fields itself, in its plain text
                assert two[0] == 400, two
        status, _, raw = answer(f"http://localhost:{port}")  # no path: its path is /, as it is under h11 (httptools: a 400)
        assert status == 404 and json.loads(raw) == {"error": {"status": 404, "message": "Service not found"}}, raw
        status, _, raw = answer("http://user@localhost/healthz")
        assert status == 400 and json.loads(raw)["error"]["message"].startswith("malformed Host header user@localhost")
        for target, fields, version in ((f"http://localhost:{port}/healthz", "Host: evil.example\r\n", "1.1"),
                                        (f"http://127.0.0.1:{port}/healthz?x=1", "", "1.0"),  # Host is not needed
                                        ("/healthz", "Host: localhost\r\n", "1.1")):  # the usual form, as before
            status, _, raw = answer(target, fields, version)
            assert status == 200 and json.loads(raw)["status"] == "ok", (target, status, raw)


def test_loopback_names_and_addresses_are_answered_and_no_other(tmp_path, monkeypatch):
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    with _watched(tmp_path, monkeypatch) as (base, scans, uploads, stored):
        port = base.rsplit(":", 1)[1]
        for host in ("localhost", "localhost:{port}", "LocalHost:{port}", "localhost.:{port}", "music.localhost:{port}",
                     "a.b.localhost", "127.0.0.1", "127.0.0.1:{port}", "127.3.2.1:{port}", "[::1]", "[::1]:{port}",
                     "[0:0:0:0:0:0:0:1]:{port}"):
            status, _, raw = _request(base, lookup, _as_page_of(base, host))
            assert status == 200 and json.loads(raw) == {"id": SPOTIFY_IDS[0]}, (host, status, raw)
            assert _request(base, "/library/rescan", [*_as_page_of(base, host), *TEXT], method="POST", body=b"x=1")[0] == 202
        for host in ("evil.example", "evil.example:{port}", "Evil.Example:{port}", "localhost.evil.example:{port}",
                     "localhostevil.example", "evil.example.:{port}", "127.0.0.1.nip.io:{port}", "10.0.0.1:{port}",
                     "0.0.0.0:{port}", "192.168.1.5", "[::2]:{port}", "[fd00::1]"):
            given = host.format(port=port)
            _host_refused(_request(base, lookup, _as_page_of(base, host)), given)
            _host_refused(_request(base, "/library/rescan", [*_as_page_of(base, host), *TEXT], method="POST", body=b"x=1"),
                          given)
        for headers, said in (([("Host", "localhost:99999")], "malformed Host header localhost:99999"),
                              ([("Host", "user@localhost")], "malformed Host header user@localhost"),
                              ([("Host", "")], "malformed Host header ''"),
                              ([("Host", "localhost"), ("Host", "evil.example")], "more than one Host header"),
                              ([("Host", "evil.example"), ("Host", "localhost")], "more than one Host header")):
            status, _, raw = _request(base, lookup, headers)
            assert status == 400 and json.loads(raw)["error"]["message"].startswith(said), (headers, raw)
        answer = _raw(base, b"GET /healthz HTTP/1.0\r\n\r\n")  # no Host at all
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"].startswith("no Host header: send the name")
        assert len(scans) == 12  # the loopback ones only


def test_allowed_hosts_add_names_and_star_turns_the_check_off(tmp_path, monkeypatch):
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    allowed = ["music.lan", "*.home.arpa", "192.168.1.5", "[FD00::1]"]
    with _watched(tmp_path, monkeypatch, allowed_hosts=allowed) as (base, scans, uploads, stored):
        port = base.rsplit(":", 1)[1]
        for host in ("music.lan", "music.lan:{port}", "MUSIC.LAN.:{port}", "a.home.arpa", "x.y.home.arpa:{port}",
                     "192.168.1.5:{port}", "[fd00:0:0::1]:{port}", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}"):
            assert _request(base, lookup, _as_page_of(base, host))[0] == 200, host
        assert _request(base, "/library/rescan", [*_as_page_of(base, "music.lan:{port}"), *TEXT], method="POST",
                        body=b"x=1")[0] == 202  # the page the proxy serves may post, as the server's own
        for host in ("home.arpa", "evil.example:{port}", "music.lan.evil.example", "evilmusic.lan", "192.168.1.6:{port}",
                     "[fd00::2]"):
            _host_refused(_request(base, lookup, _as_page_of(base, host)), host.format(port=port))
    with _watched(tmp_path / "any", monkeypatch, allowed_hosts="*") as (base, scans, uploads, stored):
        page = _as_page_of(base, "evil.example:{port}")  # as before this check: any name is answered
        assert _request(base, lookup, page)[0] == 200
        assert _request(base, "/library/rescan", [*page, *TEXT], method="POST", body=b"x=1")[0] == 202
        assert scans == [1]
    from songfeat.serve import create_app

    for given, said in (("music.lan:8080", "give the host name alone, 'music.lan'"),
                        ("http://music.lan/", "give the host name alone, 'music.lan'"),
                        (".lan", "give '*.lan'"), ("a.*.lan", "is not a host name"), ("", "is not a host name")):
        with pytest.raises(ValueError, match=re.escape(said)):
            create_app(Library(tmp_path / "music", workers=1, model="test"), start=False, allowed_hosts=[given])


def test_a_server_bound_elsewhere_checks_host_only_when_told(tmp_path, monkeypatch):
    # on an address other than loopback the operator chose to expose the server, under names it cannot know
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    for bind in ("0.0.0.0", "::", "192.168.1.5"):
        with _watched(tmp_path / bind.replace(":", "_"), monkeypatch, bind=bind) as (base, scans, uploads, stored):
            for host in ("evil.example:{port}", "music.lan", "localhost:{port}", "10.0.0.1"):
                assert _request(base, lookup, _as_page_of(base, host))[0] == 200, (bind, host)
    with _watched(tmp_path / "named", monkeypatch, bind="0.0.0.0", allowed_hosts=["music.lan"]) as (base, *_):
        port = base.rsplit(":", 1)[1]
        for host in ("music.lan:{port}", "localhost:{port}", "127.0.0.1:{port}"):
            assert _request(base, lookup, _as_page_of(base, host))[0] == 200, host
        _host_refused(_request(base, lookup, _as_page_of(base, "evil.example:{port}")), f"evil.example:{port}",
                      loopback=False)
    for bind in ("::1", "localhost", "127.0.0.2"):  # other spellings of loopback are loopback
        with _watched(tmp_path / bind.replace(":", "_"), monkeypatch, bind=bind) as (base, *_):
            _host_refused(_request(base, lookup, [("Host", "evil.example")]), "evil.example")


def test_a_refused_host_is_readable_by_an_allowed_page(tmp_path, monkeypatch):
    # a page of a --cors-origin origin calling this server under a name not allowed reads why, not a bare CORS error
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    with _watched(tmp_path, monkeypatch, cors_origins=[PAGE]) as (base, scans, uploads, stored):
        port = base.rsplit(":", 1)[1]
        status, headers, raw = _request(base, lookup, [("Host", f"music.lan:{port}"), ("Origin", PAGE)])
        _host_refused((status, headers, raw), f"music.lan:{port}")
        assert headers["access-control-allow-origin"] == PAGE
        status, headers, _ = _request(base, lookup, [("Host", f"music.lan:{port}"), ("Origin", EVIL)])
        assert status == 400 and "access-control-allow-origin" not in headers


def test_the_served_cli_checks_host_and_says_how(served, tmp_path):
    from typer.testing import CliRunner

    from songfeat.cli import app

    srv, _, _ = served
    port = srv.port
    lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
    _host_refused(_request(srv.base, lookup, [*_as_page_of(srv.base, "evil.example:{port}"), *auth().items()]),
                  f"evil.example:{port}")
    _host_refused(_request(srv.base, "/healthz", _as_page_of(srv.base, "evil.example:{port}")), f"evil.example:{port}")
    for host in ("music.lan:{port}", "localhost:{port}", "[::1]:{port}"):  # --allowed-host music.lan, and loopback
        assert _request(srv.base, lookup, [*_as_page_of(srv.base, host), *auth().items()])[0] == 200, host
    answer = _raw(srv.base, f"GET http://evil.example:{port}/healthz HTTP/1.1\r\nHost: localhost:{port}\r\n"
                  "Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ") and f"Host evil.example:{port} refused".encode() in answer, answer
    r = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert "--allowed-host" in r.output and "DNS-rebinding" in r.output
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    for given, said in (("music.lan:8080", "'music.lan'"), ("*lan", "not a host name")):
        r = CliRunner().invoke(app, ["serve", "--library", str(root), "--allowed-host", "ok.lan", "--allowed-host", given])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert r.output.startswith("songfeat: error: --allowed-host: ") and said in r.output, r.output


def test_repeated_authorization_headers_are_refused(tmp_path):
    # only the first Authorization header was read: a request carrying two was authorised by whichever came first
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lookup = f"/v1/audio-features?ids={SPOTIFY_IDS[0]}"
    good, bad = ("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong-token")
    lib = Library(root, workers=1, model="test")
    with serving(create_app(lib, token=TOKEN, start=False)) as base:
        assert _request(base, lookup, [good])[0] == 200
        for headers in ([good, bad], [bad, good], [good, good]):
            status, answer, body = _request(base, lookup, headers)
            assert status == 400 and answer["www-authenticate"] == 'Bearer error="invalid_request"', (headers, status)
            assert json.loads(body) == {"error": {"status": 400, "message": "invalid request: more than one Authorization header"}}
    with serving(create_app(lib, start=False)) as base:  # no token configured: the header is not read at all
        assert _request(base, lookup, [bad, bad])[0] == 200


# ---- failures are remembered ------------------------------------------------------------------------


def counted(kind: str, path: str) -> None:
    """Log one analysis (its kind and file name) to $SONGFEAT_TEST_CALLS: workers are processes, so a file counts."""
    with open(os.environ["SONGFEAT_TEST_CALLS"], "a") as f:
        f.write(f"{kind} {Path(path).name.split('.upload')[0]}\n")


def picky_job(path: str):
    """A counted stand-in analysis that fails, as the real one does, on a file no decoder reads."""
    counted("features", path)
    try:
        sf.info(path)
    except Exception:
        return None, "not a readable audio file (no decoder recognises its format)"
    return {"id": Path(path).name, "energy": 0.5}, None


def picky_analysis(path: str) -> dict:
    """A counted stand-in for songfeat.analysis.audio_analysis: fails on a file no decoder reads."""
    counted("analysis", path)
    try:
        return fake_analysis(path)
    except Exception:
        return unreadable_analysis(path)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_failed_analysis_is_not_redone_per_request(tmp_path, monkeypatch):
    # A file whose audio analysis failed was analysed again on every request (seconds of work each, for any client that
    # repeats the GET). Now the failure is kept beside the results, keyed the same way (content hash, code version):
    # the same answer without another analysis, across a restart, until the file's content changes.
    from songfeat.serve import create_app

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(log))
    root = tmp_path / "music"
    bad = root / f"{SPOTIFY_IDS[0]}.wav"  # a Spotify-id name: the id stays when the content is replaced
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"RIFF not really a wave file" * 100)
    ident = SPOTIFY_IDS[0]

    def library() -> Library:
        return Library(root, workers=1, job=picky_job, model="test", analysis_target="test_serve:picky_analysis")

    lib = library()
    with serving(create_app(lib, wait_seconds=30)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        first = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert first.status_code == 404 and "not a readable audio file" in first.json()["error"]["message"], first.text
        for _ in range(3):
            again = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
            assert (again.status_code, again.json()) == (first.status_code, first.json())
        features = [requests.get(f"{base}/v1/audio-features/{ident}", timeout=30) for _ in range(3)]
        assert {(r.status_code, r.text) for r in features} == {(features[0].status_code, features[0].text)}
        assert features[0].status_code == 404 and "could not be analysed" in features[0].json()["error"]["message"]
        batch = requests.get(f"{base}/v1/audio-features", params={"ids": f"{ident},{ident}"}, timeout=30)
        assert batch.json() == {"audio_features": [None, None]}
        assert sorted(calls(log)) == [f"analysis {bad.name}", f"features {bad.name}"]  # one of each, not one per request

    lib = library()  # a restart: the failure was kept in the index
    with serving(create_app(lib, wait_seconds=30)) as base:
        wait_for(lambda: lib.last_scan is not None, timeout=30)
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert (r.status_code, r.json()) == (first.status_code, first.json())
        assert len(calls(log)) == 2
        make_clip(bad, seconds=1.5)  # replaced with good audio: a rescan sees new content, and it is analysed again
        assert requests.post(f"{base}/library/rescan").status_code == 202
        wait_for(lambda: lib.index.counts() == {"done": 1, "pending": 0, "failed": 0}, timeout=30)
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert r.status_code == 200 and abs(r.json()["track"]["duration"] - 1.5) < 0.01, r.text
        assert requests.get(f"{base}/v1/audio-features/{ident}", timeout=30).status_code == 200
        assert calls(log)[2:] == [f"features {bad.name}", f"analysis {bad.name}"]
        assert lib.index.conn().execute("SELECT count(*) FROM failed_analyses").fetchone()[0] == 0  # the scan dropped it


def test_a_failed_upload_is_not_redone_per_request(tmp_path, monkeypatch):
    # A failed upload's row was deleted with its file, so posting the same bad bytes again ran the whole analysis again.
    # Now the row (not the file) stays: the same bytes get the same 400 at once, across a scan and a restart.
    from songfeat.serve import create_app

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(log))
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    junk = b"not audio at all\n" * 200

    def library() -> Library:
        return Library(root, workers=1, job=picky_job, model="test", analysis_target="test_serve:picky_analysis")

    def post(base: str, data: bytes) -> requests.Response:
        return requests.post(f"{base}/v1/audio-features", files={"file": ("bad.wav", data, "audio/wav")}, timeout=60)

    lib = library()
    with serving(create_app(lib)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        first = post(base, junk)
        assert first.status_code == 400 and "bad.wav" in first.json()["error"]["message"], first.text
        for _ in range(3):
            again = post(base, junk)
            assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert calls(log).count(f"features {content_id(junk)}") == 1
        assert [p.name for p in lib.uploads.iterdir()] == []  # no audio kept, nor temporary files
        lib.scan()
        assert (post(base, junk).status_code, lib.index.counts()["failed"]) == (400, 1)  # a scan keeps the reason
    lib = library()
    with serving(create_app(lib)) as base:
        wait_for(lambda: lib.last_scan is not None, timeout=30)
        r = post(base, junk)
        assert (r.status_code, r.json()) == (first.status_code, first.json())
        assert calls(log).count(f"features {content_id(junk)}") == 1
        good = mp3_bytes(seconds=1.0)
        r = requests.post(f"{base}/v1/audio-features", files={"file": ("good.mp3", good, "audio/mpeg")}, timeout=60)
        assert r.status_code == 200 and calls(log).count(f"features {content_id(good)}") == 1  # other bytes: analysed


def test_an_uploads_name_in_a_400_is_never_empty_and_quoted_when_unprintable(tmp_path, monkeypatch):
    # `?filename=/` was shown as nothing (": not a readable audio file"), and a NUL or a 5,000-character name as sent
    from songfeat.serve import create_app

    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(tmp_path / "calls.log"))
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, job=picky_job, model="test")
    with serving(create_app(lib)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        for i, (name, shown) in enumerate((("/", "upload"), ("a/", "a"), ("\0.wav", repr("\0.wav")),
                                           ("x" * 5000, repr("x" * 100) + "..."))):
            r = requests.post(f"{base}/v1/audio-features", params={"filename": name}, data=b"junk %d\n" % i * 100, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["message"] == (
                f"{shown}: not a readable audio file (no decoder recognises its format)"), (name[:20], r.text)


def test_the_same_bytes_under_another_name_are_the_same_upload(tmp_path, monkeypatch):
    # the stored name carried the upload's suffix, so one file posted as .wav, .flac, raw and multipart was stored four
    # times and analysed four times; bad bytes posted again under another name were analysed again
    from songfeat.serve import create_app

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(log))
    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    lib = Library(root, workers=1, job=picky_job, model="test", analysis_target="test_serve:picky_analysis")
    good, junk = mp3_bytes(seconds=1.0), b"not audio at all\n" * 200
    with serving(create_app(lib)) as base:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=30)
        for data in (good, junk):
            answers = [requests.post(f"{base}/v1/audio-features", timeout=60, **kw).json() for kw in (
                {"data": data, "headers": {"Content-Type": "audio/mpeg"}},
                {"data": data},
                {"data": data, "params": {"filename": "x.flac"}},
                {"files": {"file": ("a.WAV", data, "audio/wav")}})]
            if data is junk:  # each 400 names the upload as this post named it
                answers = [(a["error"]["status"], a["error"]["message"].split(": ", 1)[1]) for a in answers]
            assert all(a == answers[0] for a in answers), answers
            assert calls(log).count(f"features {content_id(data)}") == 1
        assert len([p for p in lib.uploads.iterdir()]) == 1  # the good one, stored once; the bad one keeps no file
        assert lib.index.conn().execute("SELECT COUNT(*) FROM tracks WHERE source='upload'").fetchone()[0] == 2


def hang_once(kind: str, path: str) -> None:
    """Hang (until the time limit kills the worker) if $SONGFEAT_TEST_HANG_ONCE exists, taking it: one slow moment."""
    counted(kind, path)
    try:
        os.unlink(os.environ["SONGFEAT_TEST_HANG_ONCE"])
    except FileNotFoundError:
        return
    time.sleep(3600)


def flaky_job(path: str):
    """A counted stand-in analysis that times out once (while the marker file exists), then answers."""
    hang_once("features", path)
    return {"id": Path(path).name, "energy": 0.5}, None


def flaky_analysis(path: str) -> dict:
    """A counted stand-in audio analysis that times out once, then answers."""
    hang_once("analysis", path)
    return fake_analysis(path)


def test_a_time_out_is_not_the_files_fault(tmp_path, monkeypatch):
    # A file whose analysis ran out of time (a busy server) or lost its worker was kept as failed, like a corrupt file,
    # until its content changed; a timed-out upload got a 400 and lost its audio. Now such a failure is answered as
    # the server's: features and analyses are tried again after the next scan, and an upload gets a 503 and is kept,
    # so posting it again retries it. A failure on the file's content is still kept until it changes (tests above).
    from songfeat.serve import create_app

    log, marker = tmp_path / "calls.log", tmp_path / "hang-once"
    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(log))
    monkeypatch.setenv("SONGFEAT_TEST_HANG_ONCE", str(marker))
    root = tmp_path / "music"
    make_clip(root / f"{SPOTIFY_IDS[0]}.wav", seconds=1.0)
    ident = SPOTIFY_IDS[0]
    marker.touch()
    lib = Library(root, workers=1, time_limit=2.0, job=flaky_job, model="test", analysis_target="test_serve:flaky_analysis")
    with serving(create_app(lib, wait_seconds=30)) as base:
        wait_for(lambda: lib.index.counts().get("failed") == 1, timeout=60)
        r = requests.get(f"{base}/v1/audio-features/{ident}", timeout=30)
        assert r.status_code == 404 and "limit" in r.text and "next library scan" in r.text, r.text
        assert requests.post(f"{base}/library/rescan").status_code == 202
        wait_for(lambda: lib.index.counts() == {"done": 1, "pending": 0, "failed": 0}, timeout=60)
        assert requests.get(f"{base}/v1/audio-features/{ident}", timeout=30).status_code == 200
        assert calls(log) == [f"features {ident}.wav"] * 2

        marker.touch()
        first = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert first.status_code == 404 and "next library scan" in first.text, first.text
        again = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert (again.status_code, again.json()) == (first.status_code, first.json())  # not run again per request
        assert lib.index.conn().execute("SELECT count(*) FROM failed_analyses").fetchone()[0] == 0  # nor kept for good
        lib.scan()
        r = requests.get(f"{base}/v1/audio-analysis/{ident}", timeout=30)
        assert r.status_code == 200 and abs(r.json()["track"]["duration"] - 1.0) < 0.01, r.text
        assert calls(log)[2:] == [f"analysis {ident}.wav"] * 2

        marker.touch()
        data = mp3_bytes(seconds=1.0)
        up = requests.post(f"{base}/v1/audio-features", files={"file": ("song.mp3", data, "audio/mpeg")}, timeout=60)
        assert up.status_code == 503 and "Retry-After" in up.headers and "post it again" in up.text, up.text
        assert len(list(lib.uploads.iterdir())) == 1  # the audio is kept for the retry
        kept = requests.get(f"{base}/v1/audio-analysis/{content_id(data)}", timeout=30)
        assert kept.status_code == 200, kept.text  # its audio is there, so its audio analysis can be had
        up = requests.post(f"{base}/v1/audio-features", files={"file": ("song.mp3", data, "audio/mpeg")}, timeout=60)
        assert up.status_code == 200, up.text
        assert calls(log).count(f"features {content_id(data)}") == 2


def slow_job(path: str):
    """A stand-in analysis that takes $SONGFEAT_TEST_SLEEP seconds, then answers."""
    time.sleep(float(os.environ["SONGFEAT_TEST_SLEEP"]))
    return {"id": Path(path).name, "energy": 0.5}, None


def test_a_long_files_time_limit_grows_with_its_audio(tmp_path, monkeypatch):
    # Every file had the flat --time-limit (300 s): a 2-hour mix, or a 6-hour wav, took longer on a busy server, was
    # stopped, tried again three times and given up. A file's limit now grows with its audio, by its header, as
    # `analyze --timeout`'s does (read in the worker: no decoder runs in the server); a short file's does not.
    monkeypatch.setenv("SONGFEAT_TEST_SLEEP", "3")
    root = tmp_path / "music"
    make_clip(root / "short.wav", seconds=1.0)
    sf.write(str(root / "long.wav"), np.zeros(1_200_000, np.float32), 1000, subtype="PCM_U8")  # 20 min: twice the limit
    lib = Library(root, workers=1, time_limit=2.0, job=slow_job, model="test")
    lib.start()
    try:
        wait_for(lambda: lib.last_scan is not None and lib.index.counts()["pending"] == 0, timeout=90)
        rows = {Path(p).stem: (s, e) for p, s, e in lib.index.conn().execute("SELECT path, state, error FROM tracks")}
        assert rows["long"] == ("done", None), rows
        assert rows["short"][0] == "failed" and rows["short"][1].startswith("analysis took longer than the 2-s limit")
        assert (lib.stats.timed_out, lib.stats.crashed) == (1, 0)
    finally:
        lib.stop()


def test_a_time_out_is_retried_a_few_times_not_forever(tmp_path):
    # A file that hangs or kills its worker every time would cost a worker its whole time limit on every periodic scan;
    # after TRANSIENT_TRIES analyses it stays failed until its content changes, like a corrupt file.
    from songfeat.library import TIMED_OUT, TRANSIENT_TRIES

    root = tmp_path / "music"
    make_clip(root / "slow.wav", seconds=1.0)
    idx = Index(tmp_path / "index.db", model="m")
    idx.scan(root)
    con = idx.conn()
    for tries in range(1, TRANSIENT_TRIES + 2):
        with con:
            con.execute("UPDATE tracks SET state='failed', model='m', error=?, analyses=?", (TIMED_OUT.format(limit=300), tries))
        assert idx.scan(root).requeued == (1 if tries < TRANSIENT_TRIES else 0), tries
    make_clip(root / "slow.wav", seconds=1.0, seed=4)  # new content: analysed again, its count starts afresh
    assert idx.scan(root).changed == 1 and idx.counts()["pending"] == 1
    with con:
        con.execute("UPDATE tracks SET state='failed', model='m', error=?, analyses=?", (TIMED_OUT.format(limit=300), 9))
    assert Index(tmp_path / "index.db", model="m2").scan(root).requeued == 1  # a new model: its own tries
    assert con.execute("SELECT state, analyses FROM tracks").fetchall() == [("pending", 0)]


def test_a_time_out_given_up_is_tried_again_under_a_longer_limit(tmp_path):
    # A file that ran out of a short --time-limit three times stayed failed when the server was restarted with a longer
    # one (and with --rescan): the 404 named the short limit, yet only new content or a new model could bring it back.
    # The same bytes posted again were refused with the stored 400.
    from songfeat.library import TIMED_OUT, TRANSIENT_TRIES, failure_note

    root = tmp_path / "music"
    make_clip(root / "slow.wav", seconds=1.0)
    data = (root / "slow.wav").read_bytes()
    db, given_up = tmp_path / "index.db", TIMED_OUT.format(limit=2)
    Index(db, model="m").scan(root)

    def library(time_limit: float) -> Library:
        """The library served with `time_limit`, its file and an upload of the same bytes given up under 2 s."""
        lib = Library(root, db=db, workers=1, model="m", time_limit=time_limit)
        with lib.index.conn() as con:
            con.execute("INSERT OR REPLACE INTO tracks (path, source, id, size, mtime_ns, sha256, state, updated) "
                        "VALUES (?, 'upload', ?, 0, 0, ?, 'failed', 0)",
                        (str(lib.uploads / f"{content_id(data)}.upload.wav"), content_id(data), hashlib.sha256(data).hexdigest()))
            con.execute("UPDATE tracks SET state='failed', model='m', error=?, analyses=?", (given_up, TRANSIENT_TRIES))
        return lib

    def refused_at_once(lib: Library) -> bool:
        """Whether the same bytes posted again get their stored failure (a done future), not a new analysis."""
        (tmp_path / "incoming.wav").write_bytes(data)
        return lib.upload(tmp_path / "incoming.wav", ".wav")[1].done()

    lib = library(2)
    assert lib.scan().requeued == 0 and refused_at_once(lib)  # the same limit: given up, as before
    assert "--time-limit" in failure_note(given_up, TRANSIENT_TRIES)  # the 404 and 400 say what brings it back
    lib = library(600)
    assert lib.scan().requeued == 1 and not refused_at_once(lib)  # queued, not the stored failure
    assert lib.index.conn().execute("SELECT state, analyses FROM tracks").fetchall() == [("pending", 0)] * 2  # tries afresh


def test_one_rule_requeues_a_failure_for_a_scan_and_an_upload_posted_again():
    # The scan's unchanged file (`Index._keep`) and the upload posted again (`Library._failed_upload`) each wrote out
    # which failure is tried again and with what count of tries; both now ask `requeue_tries`.
    from songfeat.library import DIED, TIMED_OUT, TRANSIENT_TRIES, requeue_tries

    short = TIMED_OUT.format(limit=2)
    assert requeue_tries(short, TRANSIENT_TRIES, 600) == 0  # given up under a shorter limit: a new count of tries
    assert requeue_tries(short, TRANSIENT_TRIES, 2) is None and requeue_tries(short, TRANSIENT_TRIES, None) is None
    assert requeue_tries(short, 1, 2) == 1 and requeue_tries(DIED.format(code=-9), 1, 600) == 1  # its count kept
    assert requeue_tries("not an audio file", 1, 600) is None and requeue_tries(None, 0, 600) is None


def test_the_pending_count_is_the_counts_pending_rows(tmp_path):
    # The dispatcher asks how many files are left after every batch of results; it grouped every row of the index by
    # state for it (7 ms on 100,000 tracks), where `pending_count` reads the pending rows of the state index alone.
    root = tmp_path / "music"
    for i in range(3):
        make_clip(root / f"{i}.wav", seconds=0.5, seed=i)
    idx = Index(tmp_path / "index.db", model="m")
    idx.scan(root)
    assert idx.pending_count() == idx.counts()["pending"] == 3
    with idx.conn() as con:
        con.execute("UPDATE tracks SET state='done' WHERE rowid=1")
    assert idx.pending_count() == idx.counts()["pending"] == 2


def test_a_timed_out_upload_is_retried_then_refused(tmp_path, monkeypatch):
    # Posting an upload again after its time-out retries it, even when its stored file has gone (an index from before
    # the file was kept, or a hand-cleaned folder: it got a 503 forever); after TRANSIENT_TRIES time-outs the same bytes
    # get a 400 at once and leave no file, as a corrupt upload does.
    from songfeat.library import TRANSIENT_TRIES
    from songfeat.serve import create_app

    log, marker = tmp_path / "calls.log", tmp_path / "hang-once"
    monkeypatch.setenv("SONGFEAT_TEST_CALLS", str(log))
    monkeypatch.setenv("SONGFEAT_TEST_HANG_ONCE", str(marker))
    root = tmp_path / "music"
    root.mkdir()
    lib = Library(root, workers=1, time_limit=2.0, job=flaky_job, model="test", analysis_target="test_serve:flaky_analysis")

    def post(base: str, data: bytes) -> requests.Response:
        return requests.post(f"{base}/v1/audio-features", files={"file": ("song.mp3", data, "audio/mpeg")}, timeout=60)

    with serving(create_app(lib)) as base:
        wait_for(lambda: lib.last_scan is not None, timeout=30)
        good, bad = mp3_bytes(seconds=1.0), mp3_bytes(seconds=1.0, seed=8)
        marker.touch()
        assert post(base, good).status_code == 503
        for f in lib.uploads.iterdir():
            f.unlink()  # the stored file is gone
        r = post(base, good)
        assert r.status_code == 200, r.text  # put back and analysed
        for k in range(TRANSIENT_TRIES):
            marker.touch()
            r = post(base, bad)
            assert r.status_code == (503 if k < TRANSIENT_TRIES - 1 else 400), (k, r.text)
        assert "not tried again" in r.json()["error"]["message"], r.text
        again = post(base, bad)
        assert (again.status_code, again.json()) == (400, r.json())
        assert calls(log).count(f"features {content_id(bad)}") == TRANSIENT_TRIES  # not run a fourth time
        assert sorted(f.name.split(".")[0] for f in lib.uploads.iterdir()) == [content_id(good)[:22]]


OLD_SCHEMA = """
CREATE TABLE tracks (path TEXT PRIMARY KEY, source TEXT NOT NULL DEFAULT 'library', id TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL, model TEXT, features TEXT, error TEXT,
    analyses INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE INDEX tracks_id ON tracks(id);
CREATE INDEX tracks_state ON tracks(state);
CREATE TABLE audio_analyses (sha256 TEXT NOT NULL, version TEXT NOT NULL, analysis TEXT NOT NULL, PRIMARY KEY (sha256, version));
"""


def test_an_index_from_before_failed_analyses_still_opens(tmp_path):
    # The table of failed audio analyses came later: an index written without it must open, keep its rows, and gain it.
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(OLD_SCHEMA)
    with con:
        con.execute("INSERT INTO tracks VALUES ('/m/a.wav', 'library', ?, 1, 1, 'abc', 'done', 'test', '{\"energy\": 0.5}', "
                    "NULL, 1, 0)", (SPOTIFY_IDS[0],))
        con.execute("INSERT INTO audio_analyses VALUES ('abc', 'v1', '{}')")
    con.close()
    idx = Index(db, model="test")
    assert idx.lookup([SPOTIFY_IDS[0]])[SPOTIFY_IDS[0]].features == '{"energy": 0.5}'
    assert idx.cached_analysis("abc", "v1") == "{}" and idx.failed_analysis("abc", "v1") is None
    idx.store_analysis_failure("abc", "v2", "not a readable audio file")
    assert Index(db, model="test").failed_analysis("abc", "v2") == "not a readable audio file"


def test_a_library_that_is_a_file_is_named_as_such(tmp_path):
    # `serve --library song.wav` said "song.wav: no such folder", of a file that plainly exists.
    from typer.testing import CliRunner

    from songfeat.cli import app

    song = tmp_path / "song.wav"
    make_clip(song, seconds=1.0)
    r = CliRunner().invoke(app, ["serve", "--library", str(song)])
    assert r.exit_code == 2 and f"{song}: is a file, not a folder" in r.output, r.output
    r = CliRunner().invoke(app, ["serve", "--library", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such folder" in r.output, r.output


def test_the_no_token_warnings_judge_the_address_bound_not_the_host_string(tmp_path, monkeypatch):
    """`--host` was judged as a string: a name of this machine on 127.0.1.1 (here 127.1) was warned about as exposed,
    and a name that resolves to an exposed address (here `localhost`, resolved to 0.0.0.0) was not. The address the
    socket is bound to decides now, as it does the Host check."""
    from typer.testing import CliRunner

    import songfeat.serve as serve
    from songfeat.cli import app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    bound = []

    def fake_run(lib, sock=None, **_):  # no server: what the socket is bound to, then let the library go
        bound.append(sock.getsockname()[0])
        sock.close()
        lib.stop()

    monkeypatch.setattr(serve, "run", fake_run)
    exposed = "without --token: anyone who can reach it can read and upload"
    rebinding = "--allowed-host '*' without --token"

    def said(host: str, *more: str) -> str:
        r = CliRunner().invoke(app, ["serve", "--library", str(root), "--host", host, "--port", "0", "--workers", "1", *more])
        assert r.exit_code == 0, r.output
        return r.output

    for host, address, warned in (("127.1", "127.0.0.1", False), ("localhost", "127.0.0.1", False),
                                  ("0.0.0.0", "0.0.0.0", True)):
        out = said(host)
        assert bound[-1] == address and (f"serving on {host} {exposed}" in out) == warned, (host, out)
        assert (rebinding in said(host, "--allowed-host", "*")) != warned, host  # Host unchecked on loopback: said too
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("0.0.0.0" if host == "localhost" else host, *a, **k))
    out = said("localhost")
    assert bound[-1] == "0.0.0.0" and f"serving on localhost {exposed}" in out, out


def _answered(answer: bytes) -> tuple[int, dict[str, str], dict]:
    """A raw answer's status, lower-case header fields and JSON body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:])
    return int(head.split()[1]), fields, json.loads(body) if body else {}


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_an_expectation_other_than_100_continue_gets_417(tmp_path, impl):
    # `Expect: x-foo` was ignored: a client waiting for an expectation it asked for was answered as if it had asked for
    # none; RFC 9110 10.1.1 lets a server answer 417 Expectation Failed instead
    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    options = uvicorn_options() if impl == "httptools" else {**uvicorn_options(), "http": "h11"}
    with serving(create_app(Library(root, workers=1, model="test"), start=False), **options) as base:
        def ask(expect: bytes, method: bytes = b"GET", target: bytes = b"/healthz", body: bytes = b"") -> bytes:
            return _raw(base, method + b" " + target + b" HTTP/1.1\r\nHost: localhost\r\nExpect: " + expect
                        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

        for expect, shown in ((b"x-foo", "x-foo"), (b"100-continue, x-foo", "100-continue, x-foo"),
                              (b"100-continue;x=1", "100-continue;x=1"), (b"\xe2\x9c\x93", r"'\xe2\x9c\x93'")):
            status, fields, body = _answered(ask(expect))
            assert status == 417 and fields["content-type"] == "application/json", (expect, status, body)
            assert body == {"error": {"status": 417, "message": f"Expect header {shown} cannot be met: this server meets "
                                      "only 'Expect: 100-continue'; send the request without it"}}, body
        status, fields, body = _answered(ask(b"x-foo", b"POST", b"/library/rescan", b"x=1"))  # before the token, the body
        assert status == 417 and fields["connection"] == "close", (status, fields)  # unread, so the connection closes
        assert _answered(ask(b"x-foo", b"HEAD"))[:3:2] == (417, {})  # HEAD as GET, no body
        for fine in (b"100-continue", b"100-Continue", b"", b" , 100-continue"):  # the one expectation; empty members
            assert _answered(ask(fine))[0] == 200, fine
        assert 'route="unmatched",status="417"' in requests.get(base + "/metrics", timeout=10).text  # counted


def test_header_values_in_messages_show_their_bytes_escaped_not_garbled(tmp_path, monkeypatch):
    # a UTF-8 Host header (`müsic.lan`) was refused as `malformed Host header mÃ¼sic.lan`: its bytes read as latin-1 and
    # shown as text; Origin and Sec-Fetch-Site, echoed by the cross-origin 403, the same
    with _watched(tmp_path, monkeypatch) as (base, scans, _uploads, _stored):
        def refusal(fields: str, method: str = "GET", target: str = "/healthz") -> str:
            answer = _raw(base, f"{method} {target} HTTP/1.1\r\n{fields}Content-Length: 0\r\nConnection: close\r\n\r\n"
                          .encode())
            message = _answered(answer)[2]["error"]["message"]
            assert message.isascii() and message.isprintable(), message
            return message

        assert refusal("Host: müsic.lan\r\n") == r"malformed Host header 'm\xc3\xbcsic.lan': give host[:port]"
        assert refusal("Host: müsic.lan:8080\r\n").startswith(r"malformed Host header 'm\xc3\xbcsic.lan:8080'")
        assert refusal("Host: evil.example\r\n").startswith("Host evil.example refused")  # printable ASCII as before
        said = refusal("Host: localhost\r\nOrigin: http://ünï.example\r\n", "POST", "/library/rescan")
        assert said.startswith(r"cross-origin request refused: a page at 'http://\xc3\xbcn\xc3\xaf.example' may not"), said
        said = refusal("Host: localhost\r\nSec-Fetch-Site: crößsite\r\n", "POST", "/library/rescan")
        assert said.startswith(r"cross-origin request refused: a page of another origin (Sec-Fetch-Site: "
                               r"'cr\xc3\xb6\xc3\x9fsite')"), said
        assert not scans


def test_the_parsers_400_is_logged_once_by_songfeat_naming_the_problem(tmp_path, caplog):
    # uvicorn logged its own "Invalid HTTP request received." (naming no problem) for each request songfeat's protocol
    # refused; songfeat logs one line naming the client and the problem instead. Under h11, which songfeat's protocol
    # does not answer, uvicorn's line is its only one and stays.
    import logging

    from songfeat.http_protocol import uvicorn_options
    from songfeat.serve import create_app

    root = tmp_path / "music"
    make_clip(root / "intro.wav", seconds=1.0)
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's own loggers do not propagate to the root
    for options, ours in ((uvicorn_options(), True), ({**uvicorn_options(), "http": "h11"}, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING), serving(create_app(Library(root, workers=1, model="test"), start=False),
                                                       **options) as base:
            uvicorn_log.addHandler(caplog.handler)
            try:
                answer = _raw(base, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                assert answer.startswith(b"HTTP/1.1 400"), answer
                assert requests.get(base + "/healthz", timeout=10).status_code == 200
            finally:
                uvicorn_log.removeHandler(caplog.handler)
        lines = [(r.name, r.getMessage()) for r in caplog.records]
        theirs = [line for line in lines if line == ("uvicorn.error", "Invalid HTTP request received.")]
        mine = [line for line in lines if line[0] == "songfeat.http_protocol"]
        if ours:
            assert not theirs and len(mine) == 1, lines
            assert re.fullmatch(r"songfeat: refused a malformed HTTP request from 127\.0\.0\.1:\d+: Duplicate "
                                r"Content-Length", mine[0][1]), mine
        else:
            assert len(theirs) == 1 and not mine, lines


def _env_library(tmp_path: Path, monkeypatch, **settings: str) -> Path:
    """A library folder with no audio, named to `app_from_env` by SONGFEAT_LIBRARY, with SONGFEAT_<setting> as given."""
    root = tmp_path / "music"
    root.mkdir()
    (root / "notes.txt").write_text("no audio here")
    for k in [k for k in os.environ if k.startswith("SONGFEAT_")]:
        monkeypatch.delenv(k)
    for k, v in {"LIBRARY": str(root), "WORKERS": "1", **settings}.items():
        monkeypatch.setenv(f"SONGFEAT_{k}", v)
    return root


def test_app_from_env_runs_under_uvicorn_with_the_apps_rules(tmp_path, monkeypatch, capsys):
    # there was no way to run the app under another ASGI server (`uvicorn ... --factory`, gunicorn): only `songfeat
    # serve`, or a Python script calling create_app
    from songfeat.http_protocol import MAX_HEAD_BYTES
    from songfeat.serve import app_from_env

    _env_library(tmp_path, monkeypatch, TOKEN=TOKEN, MAX_UPLOAD_MB="0.001", RESCAN_INTERVAL="0")
    with serving(app_from_env, factory=True, http="httptools") as base:  # uvicorn's own protocol, as `uvicorn` runs it
        wait_for(lambda: requests.get(base + "/healthz", timeout=10).json()["last_scan"] is not None)
        assert requests.get(base + "/healthz", timeout=10).json()["workers"] == 1
        lookup = f"/v1/audio-features/{SPOTIFY_IDS[0]}"
        assert requests.get(base + lookup, timeout=10).status_code == 401  # SONGFEAT_TOKEN
        assert requests.get(base + lookup, headers=auth(), timeout=10).status_code == 404
        status, _, raw = _request(base, "/v1/audio-features", [*auth().items()], method="POST", body=b"x" * 2000)
        assert status == 413 and "0.001 MB" in json.loads(raw)["error"]["message"]  # SONGFEAT_MAX_UPLOAD_MB
        status, _, raw = _request(base, "/healthz", [("Host", "evil.example")])  # the Host check, as on a loopback address
        assert status == 400 and json.loads(raw)["error"]["message"] == (
            "Host evil.example refused: this server answers only requests addressed to localhost, *.localhost, "
            "127.x.x.x, [::1] or a name given with SONGFEAT_ALLOWED_HOST. A web page whose own name was pointed at this "
            "machine (DNS rebinding) sends its name; to reach the server under that name yourself (a reverse proxy, a "
            "LAN name), start it with SONGFEAT_ALLOWED_HOST=evil.example")
        assert _answered(_send_head(base, MAX_HEAD_BYTES + 1))[0] == 431  # HeadLimit
        assert _request(base, "/healthz", [("Expect", "x-foo")])[0] == 417
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:  # a second process on the same library (uvicorn --workers 2)
            app_from_env()
        assert stopped.value.code == 3
        assert capsys.readouterr().err == (f"songfeat: error: {default_db(tmp_path / 'music')}: another songfeat serve is "
                                           "using this index; run one server per library (or give this one a SONGFEAT_DB in "
                                           "another folder)\n")
    monkeypatch.setenv("SONGFEAT_ALLOWED_HOST", "music.lan, *.home.arpa")  # more names, as --allowed-host gives them
    with serving(app_from_env, factory=True) as base:  # and the lock went with the first server
        for host, status in (("music.lan", 200), ("a.home.arpa", 200), ("evil.example", 400)):
            assert _request(base, "/healthz", [("Host", host)])[0] == status, host


def test_app_from_env_says_what_is_missing_or_wrong_in_one_line(tmp_path, monkeypatch, capsys):
    from songfeat.serve import app_from_env

    root = _env_library(tmp_path, monkeypatch)
    monkeypatch.delenv("SONGFEAT_LIBRARY")
    env = hermetic_environ()  # under uvicorn itself: its status for an app that cannot start, no traceback
    r = subprocess.run([sys.executable, "-m", "uvicorn", "songfeat.serve:app_from_env", "--factory", "--port", "0"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr == (
        "songfeat: error: SONGFEAT_LIBRARY is not set: give the music folder to serve, e.g. SONGFEAT_LIBRARY=~/Music "
        "uvicorn songfeat.serve:app_from_env --factory\n"), r.stderr
    bad = {"LIBRARY": (str(root / "nope"), f"SONGFEAT_LIBRARY={root / 'nope'}: no such folder"),
           "WORKERS": ("two", "SONGFEAT_WORKERS='two': give a whole number of at least 1"),
           "TIME_LIMIT": ("0", "SONGFEAT_TIME_LIMIT='0': give a number of at least 1"),
           "RESCAN": ("maybe", "SONGFEAT_RESCAN='maybe': give 1 or 0 (true or false)"),
           "TOKEN": ("", "SONGFEAT_TOKEN: it is empty"),
           "CORS_ORIGIN": ("http://localhost:3000/", "SONGFEAT_CORS_ORIGIN: 'http://localhost:3000/' would never match"),
           "ALLOWED_HOST": ("music.lan:80", "SONGFEAT_ALLOWED_HOST: 'music.lan:80': give the host name alone")}
    for name, (value, said) in bad.items():
        monkeypatch.setenv("SONGFEAT_LIBRARY", str(root))
        monkeypatch.setenv(f"SONGFEAT_{name}", value)
        with pytest.raises(SystemExit) as stopped:
            app_from_env()
        err = capsys.readouterr().err
        assert stopped.value.code == 3 and err.startswith(f"songfeat: error: {said}") and err.count("\n") == 1, (name, err)
        monkeypatch.delenv(f"SONGFEAT_{name}")
    monkeypatch.setenv("SONGFEAT_LIBRARY", str(root))
    monkeypatch.setenv("SONGFEAT_WORKERS", "1")
    monkeypatch.setenv("SONGFEAT_CORS_ORIGIN", "*")
    with serving(app_from_env, factory=True):  # a setting that opens the library to pages is warned about by its name
        assert "songfeat: warning: SONGFEAT_CORS_ORIGIN='*' without SONGFEAT_TOKEN: any web page" in capsys.readouterr().err


def test_env_settings_take_serves_defaults_and_limits_from_the_command(tmp_path, monkeypatch):
    """SONGFEAT_* variables left unset get `songfeat serve`'s defaults, and a value under an option's least is refused
    as the command refuses it: both from the one table the command declares its options with (`serve_options`), where
    `settings_from_env` repeated them (60, 50, 300 s, the least values), free to drift apart."""
    import inspect

    from songfeat import serve_options
    from songfeat.cli import serve_cmd
    from songfeat.errors import SongfeatError
    from songfeat.serve import settings_from_env

    declared = inspect.signature(serve_cmd).parameters
    for option, (default, least) in serve_options.DEFAULTS.items():  # the command's own options are the table's
        info = declared[option.replace("-", "_")].default
        assert (info.default, info.min) == (default, least), option
    root = tmp_path / "music"
    root.mkdir()
    settings = settings_from_env({"SONGFEAT_LIBRARY": str(root)})
    assert (settings["rescan_interval"], settings["max_upload_mb"], settings["time_limit"]) == (60.0, 50.0, 300.0)
    assert (settings["rehash"], settings["quiet"], settings["db"], settings["token"]) == (False, False, None, None)
    monkeypatch.setitem(serve_options.DEFAULTS, "time-limit", (120.0, 1.0))  # the table changes: so do the variables'
    monkeypatch.setitem(serve_options.DEFAULTS, "rescan-interval", (60.0, 5.0))
    assert settings_from_env({"SONGFEAT_LIBRARY": str(root)})["time_limit"] == 120.0
    with pytest.raises(SongfeatError, match=r"SONGFEAT_RESCAN_INTERVAL='1': give a number of at least 5$"):
        settings_from_env({"SONGFEAT_LIBRARY": str(root), "SONGFEAT_RESCAN_INTERVAL": "1"})


def test_log_lines_name_an_ipv6_client_in_brackets():
    # the parser's 400 and the stalled-reader lines printed an IPv6 client as ::1:40312, its port lost in the address
    from songfeat.http_protocol import peer

    assert (peer(("::1", 40312)), peer(("127.0.0.1", 8080)), peer(None)) == ("[::1]:40312", "127.0.0.1:8080", "a client")
