"""Download the 30-s previews listed in a track table, safely enough to kill and rerun at any time.

Each preview is streamed to `<id><ext>.part`, its length checked against Content-Length, its audio
checked to decode, and only then renamed to `<id><ext>` (`os.replace` is atomic), so a file with a
final name is always complete. A rerun deletes stale `.part` files and skips previews already on
disk and decodable. Failures (HTTP 404, truncated bodies, bytes that are not audio, ...) go to
`download-failures.csv` in the output folder; transient ones (429, 5xx, network errors, truncation)
are retried with backoff first, honouring Retry-After.
"""
from __future__ import annotations

import csv
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
import urllib3

from .. import atomic
from ..audio import DecoderLog, audio_info, is_cut_off, iter_audio
from ..errors import AudioError, CutOffAudioError, SongfeatError, WorkFailed, counted
from .cells import missing_id, missing_value, unwrap_track_id
from .spotify_api import RETRYABLE_STATUS, RetryPolicy, parse_retry_after

REPORT_NAME = "download-failures.csv"
REPORT_COLUMNS = ("track_id", "url", "reason", "attempts")
PART_SUFFIX = ".part"
LOCK_NAME = ".songfeat-download.lock"
CHUNK_BYTES = 1 << 16
MAX_BYTES = 50 * 1024 * 1024  # a 30-s preview is ~0.5 MB; anything this big is not one
TIMEOUT = 30.0  # seconds to connect, and between bytes while reading
TRANSFER_FACTOR = 10  # one attempt may take at most this many timeouts in all (a slow drip is abandoned, then retried)
DEFAULT_EXT = ".mp3"  # Spotify's previews are MP3
CONTENT_TYPES = {
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
    "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/mp4": ".m4a", "audio/aac": ".aac",
}
EXTENSIONS = tuple(dict.fromkeys((DEFAULT_EXT, *CONTENT_TYPES.values())))
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # becomes a file name: no dots, slashes


@dataclass(frozen=True)
class Failure:
    """One preview that could not be downloaded."""

    track_id: str
    url: str
    reason: str
    attempts: int


@dataclass
class DownloadReport:
    """What one `download` run did."""

    out_dir: Path
    report_path: Path
    total: int = 0  # tracks with a preview URL
    downloaded: int = 0
    already: int = 0  # valid files found on disk and skipped
    no_preview: int = 0  # rows without a preview URL (not failures)
    no_id: int = 0  # rows without a track id: nothing to name a file after
    repeated: int = 0  # rows repeating a track id listed before (the first row's URL is the one fetched)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line for the terminal."""
        line = (f"{self.out_dir}: {self.downloaded} downloaded, {self.already} already there, "
                f"{len(self.failures)} failed of {counted(self.total, 'preview')}")
        if self.no_preview:
            line += f"; {counted(self.no_preview, 'track has', 'tracks have')} no preview URL"
        if self.no_id:
            line += f"; {counted(self.no_id, 'row has', 'rows have')} no track id"
        if self.repeated:
            line += f"; {counted(self.repeated, 'row repeats', 'rows repeat')} a track id listed before"
        if self.failures:
            line += f"; failures listed in {self.report_path}"
        return line + f" ({self.seconds:.1f} s)"


def read_tracks(tracks_csv: str | Path) -> tuple[list[tuple[str, str]], int, int, int]:
    """([(track_id, preview_url)], rows without a preview, rows without an id, rows repeating an id) from a track table,
    one entry per id (its first row's): every row is counted somewhere, so none goes missing without a word. A table
    with no rows is a SongfeatError (a refusal, status 2)."""
    path = Path(tracks_csv)
    if path.is_dir():
        raise SongfeatError(path, "is a folder; --tracks takes a track table (CSV)")
    if not path.is_file():
        raise SongfeatError(path, "no such track table")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets save CSVs with a BOM
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            id_col = "track_id" if "track_id" in cols else "id" if "id" in cols else None
            if id_col is None or "preview_url" not in cols:
                raise SongfeatError(path, f"needs columns track_id (or id) and preview_url; has {', '.join(cols) or 'none'}")
            seen: dict[str, str] = {}
            no_preview = no_id = repeated = rows = 0
            for row in reader:
                rows += 1
                # a spotify:track: URI or an open.spotify.com URL names its id, as in a label table: <id>.mp3 pairs
                tid = unwrap_track_id(row.get(id_col) or "")
                if missing_id(tid):  # a NaN id written out was fetched as nan.mp3; "NA" or "None" is an id, as in labels
                    tid = ""
                url = (row.get("preview_url") or "").strip()
                if missing_value(url):  # a table saved by pandas with NaN (or None, NULL) written out
                    url = ""
                if not tid:
                    no_id += 1
                    continue
                if tid in seen:
                    repeated += 1
                    continue
                if not url:
                    no_preview += 1
                    seen[tid] = ""
                    continue
                seen[tid] = url
    except UnicodeDecodeError:
        raise SongfeatError(path, "not a UTF-8 CSV file") from None
    except csv.Error as e:
        raise SongfeatError(path, f"malformed CSV ({e})") from None
    except OSError as e:
        raise SongfeatError(path, f"cannot read ({e.strerror or e})") from None
    if not rows:  # it ended with '0 of 0 previews' and status 0, as if every preview were there
        raise SongfeatError(path, "no track rows (the file holds a header and nothing else); nothing to download")
    return [(t, u) for t, u in seen.items() if u], no_preview, no_id, repeated


def check_audio(path: str | Path) -> None:
    """Raise AudioError unless `path` is audio that actually decodes (a header alone is not enough), and
    CutOffAudioError when it holds less than its header promises: a body cut short with no Content-Length to
    tell (or a short one) decodes as far as it goes, so only the header's promise shows it."""
    log = DecoderLog(path)
    try:
        audio_info(path, log)
        cut = is_cut_off(log.text())
    finally:
        log.close()
    if cut:
        raise CutOffAudioError(path, "cut off: it holds less than its mp3 header promises")
    for block in iter_audio(path):
        if block.size:
            return
    raise AudioError(path, "no audio frames decode")


def existing(out_dir: Path, track_id: str) -> Path | None:
    """The valid preview already downloaded for `track_id`, if any."""
    for ext in EXTENSIONS:
        p = out_dir / f"{track_id}{ext}"
        if p.is_file():
            try:
                check_audio(p)
                return p
            except AudioError:
                continue
    return None


def remove_stale_parts(out_dir: Path) -> int:
    """Delete temporary files an interrupted run left behind; return how many."""
    n = 0
    for p in out_dir.glob(f"*{PART_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def _extension(content_type: str | None, url: str) -> str:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in CONTENT_TYPES:
        return CONTENT_TYPES[ctype]
    suffix = Path(url.split("?")[0]).suffix.lower()
    return suffix if suffix in EXTENSIONS else DEFAULT_EXT


class _Attempt(Exception):
    """One failed attempt: why, whether another may succeed, and how long the server asked us to wait."""

    def __init__(self, reason: str, retryable: bool, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.retryable, self.wait = reason, retryable, wait


def _body(r: requests.Response, deadline: float, stop: threading.Event | None) -> Iterator[bytes]:
    """The response body as it arrives; _Attempt once `deadline` (monotonic) passes or `stop` is set.

    read1 returns whatever one socket read brings, so a server dripping a byte at a time (each
    within the read timeout) cannot hold an attempt past the deadline, as iter_content's full-chunk reads could.
    """
    while True:
        if stop is not None and stop.is_set():
            raise _Attempt("cancelled", False)
        if time.monotonic() > deadline:
            raise _Attempt("too slow: the transfer did not finish in time", True)
        try:
            chunk = r.raw.read1(CHUNK_BYTES, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as e:  # urllib3's errors as requests' (as iter_content maps them)
            raise requests.exceptions.ReadTimeout(e) from None
        except urllib3.exceptions.ProtocolError as e:
            raise requests.exceptions.ChunkedEncodingError(e) from None
        except urllib3.exceptions.DecodeError as e:
            raise requests.exceptions.ContentDecodingError(e) from None
        except urllib3.exceptions.HTTPError as e:  # SSLError and the like
            raise requests.exceptions.ConnectionError(e) from None
        if not chunk:
            return
        yield chunk


def _fetch(session: requests.Session, track_id: str, url: str, out_dir: Path, timeout: float,
           stop: threading.Event | None = None) -> Path:
    """One attempt: stream to a .part file, check length and audio, rename into place. Raises _Attempt.

    A local write failure (a full disk, a read-only folder) raises WorkFailed: it is no fault of
    this preview and would fail every other one too.
    """
    part: Path | None = None
    deadline = time.monotonic() + TRANSFER_FACTOR * timeout
    try:
        with session.get(url, stream=True, timeout=(timeout, timeout), headers={"Accept-Encoding": "identity"}) as r:
            if r.status_code != 200:
                wait = parse_retry_after(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
                raise _Attempt(f"HTTP {r.status_code} {r.reason or ''}".strip(), r.status_code in RETRYABLE_STATUS, wait)
            length = r.headers.get("Content-Length", "")
            expected = int(length) if length.isdigit() else None
            if expected is not None and expected > MAX_BYTES:
                raise _Attempt(f"too large for a preview ({expected} bytes)", False)
            final = out_dir / f"{track_id}{_extension(r.headers.get('Content-Type'), url)}"
            part = final.with_name(final.name + PART_SUFFIX)
            got = 0
            with open(part, "wb") as f:
                try:
                    for chunk in _body(r, deadline, stop):
                        f.write(chunk)
                        got += len(chunk)
                        if got > MAX_BYTES:
                            raise _Attempt(f"too large for a preview (over {MAX_BYTES} bytes)", False)
                except requests.exceptions.ChunkedEncodingError:
                    of = f" of {expected}" if expected is not None else ""
                    raise _Attempt(f"truncated: got {got}{of} bytes before the connection closed", True) from None
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and got != expected:
                raise _Attempt(f"truncated: got {got} of {expected} bytes", True)
            if got == 0:
                raise _Attempt("empty body", True)
            try:
                check_audio(part)
            except CutOffAudioError as e:
                raise _Attempt(f"truncated: {e.reason}", True) from None
            except AudioError as e:
                raise _Attempt(f"not audio: {e.reason}", False) from None
            os.replace(part, final)
            part = None
            for ext in EXTENSIONS:  # an undecodable older file under another extension is now obsolete
                other = out_dir / f"{track_id}{ext}"
                if other != final and other.exists():
                    other.unlink(missing_ok=True)
            return final
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
        raise _Attempt("truncated: the connection closed before the whole body arrived", True) from None
    except requests.exceptions.Timeout:
        raise _Attempt(f"timed out after {timeout:g} s", True) from None
    except requests.exceptions.ConnectionError as e:
        raise _Attempt(f"connection failed ({type(e).__name__})", True) from None
    except requests.exceptions.RequestException as e:
        raise _Attempt(f"bad request ({type(e).__name__}: {e})", False) from None
    except OSError as e:  # after the network errors (RequestException is an OSError too): our own disk
        raise WorkFailed(e.filename or part or out_dir, f"cannot write ({e.strerror or e})") from None
    finally:
        if part is not None:
            part.unlink(missing_ok=True)


def download_one(
    session: requests.Session, track_id: str, url: str, out_dir: Path, policy: RetryPolicy, timeout: float = TIMEOUT,
    stop: threading.Event | None = None,
) -> tuple[str, Failure | None]:
    """Fetch one preview with retries; ("already" | "downloaded" | "failed" | "cancelled", failure or None).

    Once `stop` is set (Ctrl-C, a full disk) it gives up at the next chunk or after its current wait.
    """
    if stop is not None and stop.is_set():
        return "cancelled", None
    if not SAFE_ID.match(track_id):
        return "failed", Failure(track_id, url, "unsafe track_id for a file name", 0)
    if not url.lower().startswith(("http://", "https://")):  # a scheme is case-insensitive: HTTP://... is one too
        return "failed", Failure(track_id, url, "preview_url is not an http(s) URL", 0)
    if existing(out_dir, track_id) is not None:
        return "already", None
    attempt = 0
    while True:
        try:
            _fetch(session, track_id, url, out_dir, timeout, stop)
            return "downloaded", None
        except _Attempt as a:
            if stop is not None and stop.is_set():
                return "cancelled", None
            if not a.retryable or attempt >= policy.retries:
                return "failed", Failure(track_id, url, a.reason, attempt + 1)
            wait = policy.wait(a.wait, attempt)
            if wait > policy.max_retry_after:
                return "failed", Failure(track_id, url, f"{a.reason}; server asks to wait {wait:.0f} s", attempt + 1)
            policy.sleep(wait)
            if stop is not None and stop.is_set():
                return "cancelled", None
            attempt += 1


class _InFlight:
    """The sockets of the downloads in flight, so that Ctrl-C can cut them (`cut`): a worker waiting on a stalled server
    held the run for up to --timeout after Ctrl-C, however often it was pressed, as the pool waits for its workers."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.cutting = False
        self.pools: dict[type, type] = {}  # a urllib3 pool class -> its subclass whose connections register here

    def _tracked(self, pool: type) -> type:
        """`pool` (a urllib3 connection pool class) with connections that register their sockets here as they connect."""
        if pool not in self.pools:
            live = self

            class Connection(pool.ConnectionCls):  # type: ignore[misc, name-defined]
                def _new_conn(self) -> socket.socket:  # the bare socket, before a proxy's CONNECT and a TLS handshake
                    sock = super()._new_conn()
                    live.add(sock)
                    return sock

                def connect(self) -> None:
                    super().connect()
                    live.add(self.sock)  # TLS wrapped it in a new socket object (and detached the bare one)

            self.pools[pool] = type(pool.__name__, (pool,), {"ConnectionCls": Connection})
        return self.pools[pool]

    def add(self, sock: Any) -> None:
        """Register `sock` to be cut (shut at once if the run is stopping already: it connected just then); a TLS layer
        that is no socket (TLS to an HTTPS proxy, then to the server) is left to the socket under it."""
        if isinstance(sock, socket.socket):
            with self.lock:
                self.sockets.add(sock)
                if self.cutting:
                    _shut(sock)

    def track(self, manager: urllib3.PoolManager) -> None:
        """Register the connections `manager` makes from now on (direct, through an HTTP(S) proxy or a SOCKS one)."""
        manager.pool_classes_by_scheme = {scheme: self._tracked(pool)
                                          for scheme, pool in manager.pool_classes_by_scheme.items()}

    def session(self) -> requests.Session:
        """A requests session whose connections, a proxy's too, are registered here."""
        s = requests.Session()
        for prefix in ("http://", "https://"):
            s.mount(prefix, _Adapter(self))
        return s

    def cut(self) -> None:
        """Shut every registered socket down: a read waiting on it returns at once (and the worker, seeing the run stop,
        gives up), and so does one that connects from now on."""
        with self.lock:
            self.cutting = True
            for sock in list(self.sockets):
                _shut(sock)


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with its connections registered in an _InFlight: those through a proxy (HTTP_PROXY,
    HTTPS_PROXY) come from a pool manager of their own, made on first use, and were not, so Ctrl-C did not cut them."""

    def __init__(self, in_flight: _InFlight) -> None:
        self.in_flight = in_flight  # before super().__init__, which makes the direct pool manager
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.in_flight.track(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        made = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if made:
            self.in_flight.track(manager)
        return manager


def _shut(sock: socket.socket) -> None:
    """Shut a socket down both ways, so that a read blocked on it returns (one closed already is left alone)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _lock(out_dir: Path) -> Any:
    """Hold an exclusive lock on the folder (released by the OS even on SIGKILL); None where unsupported."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent runs are the user's business
        return None
    try:
        f = open(out_dir / LOCK_NAME, "a")
    except OSError as e:
        raise SongfeatError(out_dir, f"cannot write into the folder ({e.strerror or e})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SongfeatError(out_dir, "another `songfeat download` is writing into this folder") from None
    return f


def write_report(path: Path, failures: list[Failure]) -> None:
    """Atomically write the failures table (header only when nothing failed); a write error is a WorkFailed."""
    try:
        with atomic.replacing(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(REPORT_COLUMNS)
            for x in sorted(failures, key=lambda x: x.track_id):
                w.writerow((x.track_id, x.url, x.reason, x.attempts))
    except OSError as e:
        raise WorkFailed(path, f"cannot write ({e.strerror or e})") from None


def download(
    tracks_csv: str | Path,
    out_dir: str | Path,
    *,
    concurrency: int = 8,
    retries: int | None = None,
    timeout: float = TIMEOUT,
    policy: RetryPolicy | None = None,
    progress: bool = True,
    on_message: Callable[[str], None] | None = None,
) -> DownloadReport:
    """Download every preview in `tracks_csv` into `out_dir` as `<track_id>.mp3` (or the served format).

    `retries` overrides `policy.retries`. Already-valid files are skipped; failures are returned and
    written to `out_dir/download-failures.csv`. Safe to interrupt (even SIGKILL) and rerun. A table or folder it cannot
    use is a SongfeatError before any download; a write that fails once they run (a full disk) is a WorkFailed.
    """
    if concurrency < 1:
        raise SongfeatError(None, f"--concurrency must be at least 1 (got {concurrency})")
    policy = policy or RetryPolicy()
    if retries is not None:
        policy = replace(policy, retries=retries)
    tracks, no_preview, no_id, repeated = read_tracks(tracks_csv)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SongfeatError(out, "exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent that is a file, no permission
        raise SongfeatError(out, f"cannot create the folder ({e.strerror or e})") from None
    report = DownloadReport(out_dir=out, report_path=out / REPORT_NAME, total=len(tracks), no_preview=no_preview,
                            no_id=no_id, repeated=repeated)
    lock = _lock(out)
    start = time.monotonic()
    stop = threading.Event()  # set on the way out (Ctrl-C, a full disk): workers stop instead of finishing their retries
    if policy.sleep is time.sleep:
        policy = replace(policy, sleep=stop.wait)  # a Retry-After wait that Ctrl-C cuts short
    try:
        stale = remove_stale_parts(out)
        if stale and on_message is not None:
            on_message(f"{out}: removed {stale} partial file(s) left by an interrupted run")
        local = threading.local()
        in_flight = _InFlight()

        def work(tid: str, url: str) -> tuple[str, Failure | None]:
            if not hasattr(local, "session"):
                local.session = in_flight.session()
            return download_one(local.session, tid, url, out, policy, timeout, stop)

        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from ..progress import bar as new_bar

        bar = new_bar(TextColumn("downloading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), show=progress)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="songfeat-download")
        try:
            with bar:
                task = bar.add_task("downloading", total=len(tracks))
                futures = [pool.submit(work, tid, url) for tid, url in tracks]
                for fut in as_completed(futures):
                    status, failure = fut.result()
                    if status == "downloaded":
                        report.downloaded += 1
                    elif status == "already":
                        report.already += 1
                    elif failure is not None:
                        report.failures.append(failure)
                    bar.advance(task)
        except BaseException:
            stop.set()
            in_flight.cut()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        order = {tid: i for i, (tid, _) in enumerate(tracks)}
        report.failures.sort(key=lambda x: order[x.track_id])  # the table's order, not the order the downloads ended in
        write_report(report.report_path, report.failures)
    finally:
        if lock is not None:
            lock.close()
    report.seconds = time.monotonic() - start
    return report
