"""A loopback stand-in for Spotify's Web API and preview CDN, with fault injection, for the tests.

It imitates what `songfeat collect` / `download` touch: POST /api/token (client credentials),
GET /v1/search (type=track, `genre:X` and `year:Y` filters, Spotify's limit/offset rules and its
cap on offset + limit), GET /v1/audio-features?ids=..., and GET /preview/<id>.mp3 serving real,
decodable MP3 bytes. Faults: queued error responses on any path (429 with Retry-After, 500, ...),
a 403 on audio-features, and per-preview faults (404, truncated body, not audio, slow, flaky).
Every request is logged, so tests assert on what the client did rather than on timing.

Run it by hand with `python tests/spotify_standin.py` to try the CLI against it.
"""
from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"


def make_mp3(seconds: float = 1.0, freq: float = 440.0, sr: int = 44100) -> bytes:
    """A short sine tone as MP3 bytes (libsndfile >= 1.1 writes MP3)."""
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="MP3")
    return buf.getvalue()


@dataclass
class Logged:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float


@dataclass
class Fault:
    """A queued error response for requests whose path starts with `path`."""

    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    times: int = 1
    when: dict[str, str] = field(default_factory=dict)  # only requests whose query has these values


class _Server(ThreadingHTTPServer):
    """The stand-in's HTTP server. A client that hangs up mid-answer (download cuts its connections on Ctrl-C or a
    fatal error) is what a real server sees every day: not a traceback printed on a test's captured stderr."""

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SpotifyStandIn:
    """The server: start() in a thread on 127.0.0.1:<free port>, stop() when done (or use `with`)."""

    def __init__(self, catalogue: dict[str, int] | None = None, *, shared: int = 0, years: tuple[int, ...] = (2020,),
                 search_cap: int = 1000):
        """`catalogue`: tracks per genre; `shared`: how many of each genre's tracks also appear under the next genre."""
        self.catalogue = catalogue if catalogue is not None else {"pop": 30, "rock": 30}
        self.search_cap = search_cap
        self.tracks: dict[str, dict[str, Any]] = {}
        self.by_genre: dict[str, list[str]] = {}
        for gi, (genre, n) in enumerate(self.catalogue.items()):
            code = "".join(ch for ch in genre if ch.isalnum())[:6]
            ids = []
            for i in range(n):
                tid = f"{code}{i:05d}x{gi}"
                self.tracks[tid] = {"id": tid, "year": years[i % len(years)], "i": i, "genre": genre}
                ids.append(tid)
            self.by_genre[genre] = ids
        genres = list(self.by_genre)
        for a, b in zip(genres, genres[1:], strict=False):
            self.by_genre[b] = self.by_genre[a][:shared] + self.by_genre[b]
        self.features_forbidden = False
        self.no_features: set[str] = set()
        self.no_preview: set[str] = set()
        self.preview_faults: dict[str, str] = {}  # id -> "404" | "truncated" | "not_audio" | "flaky" | "slow" | "drip"
        #                                             | "cut_unsized" / "cut_unsized_once" (half a body, no Content-Length)
        #                                             | "stall" (no answer at all for stall_seconds; logged as status 0)
        self.slow_seconds = 0.5
        self.drip_seconds = 0.02  # "drip": one byte this often (each well within a read timeout) ...
        self.drip_for = 5.0  # ... for this long, then the connection closes
        self.stall_seconds = 30.0
        self.search_delay = 0.0  # seconds before each search answer (to kill a run part-way)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.mp3 = make_mp3()
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._tokens = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- set-up -------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base + "/v1/"

    @property
    def token_url(self) -> str:
        return self.base + "/api/token"

    def fail(self, path: str, status: int, times: int = 1, headers: dict[str, str] | None = None, body: Any = None,
             when: dict[str, str] | None = None) -> None:
        """Answer the next `times` requests under `path` (and matching `when`) with `status` (JSON `body` if given)."""
        raw = b"" if body is None else json.dumps(body).encode()
        self.faults.append(Fault(path, status, dict(headers or {}), raw, times, dict(when or {})))

    def start(self) -> SpotifyStandIn:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="spotify-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SpotifyStandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- what tests read back -----------------------------------------------------------------
    def requests(self, path: str = "") -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(path)]

    def features(self, tid: str) -> dict[str, Any]:
        """The audio features the stand-in serves for a track (a pure function of its index)."""
        i = self.tracks[tid]["i"]
        return {
            "danceability": round(0.1 + (i % 9) / 10, 3), "energy": 0.5, "key": i % 12, "loudness": -7.5,
            "mode": i % 2, "speechiness": 0.05, "acousticness": 0.2, "instrumentalness": 0.0, "liveness": 0.1,
            "valence": 0.6, "tempo": 120.0 + i, "type": "audio_features", "id": tid, "uri": f"spotify:track:{tid}",
            "track_href": "", "analysis_url": "", "duration_ms": 30000 + i, "time_signature": 4,
        }

    def track_object(self, tid: str) -> dict[str, Any]:
        t = self.tracks[tid]
        return {
            "id": tid, "name": f"Song {t['i']}, {t['genre']}", "popularity": t["i"] % 100, "duration_ms": 180000 + t["i"],
            "artists": [{"name": f"Artist {t['i']}"}, {"name": "Guest, Jr."}], "album": {"name": f"Album {t['i'] // 10}"},
            "preview_url": None if tid in self.no_preview else f"{self.base}/preview/{tid}.mp3", "type": "track",
        }

    # ---- answering ----------------------------------------------------------------------------
    def _take_fault(self, path: str, query: dict[str, str]) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if path.startswith(f.path) and f.times > 0 and all(query.get(k) == v for k, v in f.when.items()):
                    f.times -= 1
                    return f
        return None

    def _hit(self, key: str) -> int:
        with self._lock:
            self._hits[key] = self._hits.get(key, 0) + 1
            return self._hits[key]

    def search(self, q: dict[str, str]) -> tuple[int, Any]:
        limit, offset = int(q.get("limit", 10)), int(q.get("offset", 0))
        if q.get("type") != "track" or not 1 <= limit <= 50 or offset < 0:
            return 400, {"error": {"status": 400, "message": "Bad request"}}
        if offset + limit > self.search_cap:
            return 400, {"error": {"status": 400, "message": "Invalid limit/offset"}}
        genre, year = None, None
        for term in q.get("q", "").replace('"', "").split(" "):
            if term.startswith("genre:"):
                genre = term[6:]
            elif term.startswith("year:"):
                year = int(term[5:])
        ids = [t for t in self.by_genre.get(genre or "", []) if year is None or self.tracks[t]["year"] == year]
        page = ids[offset:offset + limit]
        return 200, {"tracks": {"href": "", "items": [self.track_object(t) for t in page], "limit": limit,
                                "offset": offset, "total": len(ids), "next": None, "previous": None}}

    def audio_features(self, q: dict[str, str]) -> tuple[int, Any]:
        if self.features_forbidden:
            return 403, {"error": {"status": 403, "message": "Forbidden"}}
        ids = [i for i in q.get("ids", "").split(",") if i]
        if not 1 <= len(ids) <= 100:
            return 400, {"error": {"status": 400, "message": "Bad request: 1 to 100 ids"}}
        return 200, {"audio_features": [self.features(t) if t in self.tracks and t not in self.no_features else None for t in ids]}


def _handler(standin: SpotifyStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SpotifyStandIn/1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _record(self, status: int, query: dict[str, str]) -> None:
            with standin._lock:
                standin.log.append(Logged(self.command, urlparse(self.path).path, query, status, time.monotonic()))

        def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None,
                  query: dict[str, str] | None = None) -> None:
            self._record(status, query or {})
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any, query: dict[str, str]) -> None:
            self._send(status, json.dumps(obj).encode(), query=query)

        def _query(self) -> dict[str, str]:
            return {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}

        def _fault(self, path: str, query: dict[str, str]) -> bool:
            f = standin._take_fault(path, query)
            if f is None:
                return False
            self._send(f.status, f.body, headers=f.headers, query=query)
            return True

        def do_POST(self) -> None:
            path, query = urlparse(self.path).path, self._query()
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self._fault(path, query):
                return
            if path != "/api/token":
                return self._json(404, {"error": {"status": 404, "message": "Not found"}}, query)
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if form.get("grant_type") != "client_credentials" or self.headers.get("Authorization") != expected:
                return self._json(400, {"error": "invalid_client", "error_description": "Invalid client"}, query)
            with standin._lock:
                standin._tokens += 1
                token = f"tok-{standin._tokens}"
            self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}, query)

        def do_GET(self) -> None:
            path, query = urlparse(self.path).path, self._query()
            if self._fault(path, query):
                return
            if path.startswith("/preview/"):
                return self._preview(path, query)
            if not (self.headers.get("Authorization") or "").startswith("Bearer tok-"):
                return self._json(401, {"error": {"status": 401, "message": "No token provided"}}, query)
            if path == "/v1/search":
                time.sleep(standin.search_delay)
                return self._json(*standin.search(query), query)
            if path.rstrip("/") == "/v1/audio-features":
                return self._json(*standin.audio_features(query), query)
            self._json(404, {"error": {"status": 404, "message": "Service not found"}}, query)

        def _audio_head(self, query: dict[str, str], length: int | None) -> None:
            """A 200 audio/mpeg status line and headers (no Content-Length when `length` is None: closed when done)."""
            self._record(200, query)
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length" if length is not None else "Connection",
                             str(length) if length is not None else "close")
            self.end_headers()

        def _preview(self, path: str, query: dict[str, str]) -> None:
            tid = path.rsplit("/", 1)[-1].removesuffix(".mp3")
            if tid not in standin.tracks:
                return self._send(404, b"not found", "text/plain", query=query)
            kind = standin.preview_faults.get(tid)
            n = standin._hit(tid)
            body = standin.mp3
            if kind == "404":
                return self._send(404, b"<html>Not Found</html>", "text/html", query=query)
            if kind == "not_audio":
                return self._send(200, b"<html><body>Sign in to continue</body></html>" * 20, "audio/mpeg", query=query)
            if kind == "flaky" and n == 1:
                return self._send(500, b"oops", "text/plain", query=query)
            if kind == "truncated" or (kind == "truncated_once" and n == 1):
                self._audio_head(query, len(body))
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if kind == "cut_unsized" or (kind == "cut_unsized_once" and n == 1):  # no length to check it against
                self._audio_head(query, None)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if kind == "slow":
                self._audio_head(query, len(body))
                step = max(1, len(body) // 5)
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(standin.slow_seconds / 5)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-body
                    self.close_connection = True
                return
            if kind == "stall":  # a server that took the request and says nothing: the client waits on its timeout
                self._record(0, query)
                end = time.monotonic() + standin.stall_seconds
                while time.monotonic() < end and standin._server is not None:
                    time.sleep(0.05)
                self.close_connection = True
                return
            if kind == "drip":
                self._audio_head(query, len(body))
                end = time.monotonic() + standin.drip_for
                try:
                    for i in range(len(body)):
                        if time.monotonic() > end:
                            break
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(standin.drip_seconds)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            self._send(200, body, "audio/mpeg", query=query)

    return Handler


if __name__ == "__main__":
    s = SpotifyStandIn({"pop": 120, "rock": 120, "jazz": 40}).start()
    print(f"export SONGFEAT_SPOTIFY_API_URL={s.api_url} SONGFEAT_SPOTIFY_TOKEN_URL={s.token_url}")
    print(f"export SPOTIPY_CLIENT_ID={CLIENT_ID} SPOTIPY_CLIENT_SECRET={CLIENT_SECRET}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()


# ---- keeping tests on loopback ---------------------------------------------------------------------

#: Variables that could send a test's requests elsewhere: proxies, real credentials, real endpoints.
LEAKY_ENV_VARS = ("SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET", "SONGFEAT_SPOTIFY_API_URL", "SONGFEAT_SPOTIFY_TOKEN_URL",
                  "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def hermetic_environ(**extra: str) -> dict[str, str]:
    """os.environ for a subprocess with LEAKY_ENV_VARS removed and loopback exempt from proxies, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV_VARS}
    env.update(NO_PROXY="127.0.0.1,localhost", **extra)
    return env


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse in the modules that import it: no real credentials, endpoints or proxies leak into a test."""
    for k in LEAKY_ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def kill_when(cmd: list[str], env: dict[str, str], ready, timeout: float = 30.0) -> None:
    """Run `cmd`, SIGKILL it as soon as `ready()` is true (polling), and check it died by that signal.

    Fails the test if `ready()` never becomes true within `timeout` seconds (the job never got part-way).
    """
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd[3] if len(cmd) > 3 else cmd} never got part-way within {timeout:g} s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
