"""A music library served by `songfeat serve`: an SQLite index of its files and their analysis results.

`Index` is the SQLite file (WAL mode; default `<library>/.songfeat/library.db`): one row per audio
file, keyed by path, with its id (exactly as `songfeat analyze` assigns it), size, mtime, SHA-256,
the model version its features came from, and an analysis count. A scan brings it in line with the
folder: new files are added (a file moved, renamed or copied takes the result its content already has),
files whose size or mtime changed are hashed again and re-analysed when their content changed, removed files are
dropped, and rows analysed by another model are queued
again (their old features are served until the new ones are in). A file that failed because of the server,
not its content (it ran out of time, or its worker process died), is queued again by the next scan (at start, on
`POST /library/rescan`, or the periodic one), up to `TRANSIENT_TRIES` analyses in all (a longer time limit starts the
count again); a file that failed on its content keeps its reason until it changes. Two files of different content
named by the same Spotify id serve the first by path, and an id that is a file's content id (an upload's) serves that
file, not another merely named by it (each scan counts such ids, and warns when they change); cached
audio analyses of content no file holds, or of another version of the analysis code, are dropped.

`Library` adds the background analysis: a bounded pool of worker processes (pebble) with a time limit
per file, so a hostile file can fail its own analysis but never crash or hang the server. The queue
is the database itself (rows in state `pending`), so a killed server resumes where it stopped and
finishes every file exactly once. What it does is logged (`songfeat.library`, each line 'songfeat: ...'): a scan
that changed something, the queue's progress every PROGRESS_SECONDS while it is analysed, and each file that fails.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import serve_options
from .audio import DATA_DIR, capture_output  # DATA_DIR: inside the library folder, the database and stored uploads
from .errors import SongfeatError, counted
from .provenance import MEASURING_CODE, source_digest, weights_digest

LOG = logging.getLogger(__name__)

DB_NAME = "library.db"
UPLOADS = "uploads"
SERVE_LOCK = "serve.lock"  # beside the index: held by the one server using it (and its uploads folder)
ID_PATTERN = re.compile(r"[0-9A-Za-z]{22}")  # Spotify ids and songfeat content ids are both 22 base-62 characters
# the order in which the files an id names are `served`: a file whose id is its own content id (an upload, a file not
# named by a Spotify id) before files that merely carry that id as their name, then by path
SERVED_ORDER = "id != substr(sha256, 1, 22), path"
TIME_LIMIT = float(serve_options.default("time-limit"))  # seconds one file may take in a worker before it is killed and the file marked failed
WORKER_MEMORY = 4 << 30  # address-space cap of one worker (bytes): a file that needs more fails alone (peak today ~0.75 GiB)
MAX_TASKS_PER_WORKER = 500  # a worker process is replaced after this many files, so leaks cannot grow
TRANSIENT_TRIES = 3  # analyses a file gets when each times out or kills its worker; then it stays failed until it changes
SCAN_BATCH = 200  # rows per transaction while scanning; the workers start on the first batch at once
SCAN_FLUSH_SECONDS = 1.0  # and a smaller batch is written after this long: large files take long to hash
WRITABLE = "give --db a path in a folder this user can write (a read-only library folder needs one)"  # an index's advice
SHOWN = 5  # unreadable places, and ids shared by files of different content, a scan report names (it counts them all)
PROGRESS_SECONDS = 10.0  # at most one progress line this often while the queue is analysed (and one when it empties)
ANALYSIS_MODULE = "songfeat.analysis:audio_analysis"  # Spotify's audio-analysis object, when songfeat has it
SCHEMA = """
CREATE TABLE IF NOT EXISTS tracks (
    path TEXT PRIMARY KEY,
    source TEXT NOT NULL DEFAULT 'library',  -- 'library' (found by a scan) or 'upload' (POSTed)
    id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,                     -- 'pending', 'done' or 'failed'
    model TEXT,                              -- model version that produced `features` / `error`
    features TEXT,                           -- Spotify's audio-features object, JSON
    error TEXT,                              -- why the analysis failed (no server paths)
    analyses INTEGER NOT NULL DEFAULT 0,     -- analyses of this content recorded so far (by the row's model)
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tracks_id ON tracks(id);
CREATE INDEX IF NOT EXISTS tracks_state ON tracks(state);
CREATE TABLE IF NOT EXISTS audio_analyses (
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    analysis TEXT NOT NULL,
    PRIMARY KEY (sha256, version)
);
CREATE TABLE IF NOT EXISTS failed_analyses (  -- added later: an older index gets it when opened (IF NOT EXISTS)
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    error TEXT NOT NULL,                     -- why this content's audio analysis failed (no server paths)
    PRIMARY KEY (sha256, version)
);
"""


def model_version(model: str | Path | None = None) -> str:
    """A short fingerprint of what makes a result: the model bundle (its config.json and weights) and the code that
    decodes and measures (tempo, key, loudness, the heads' evidence: `provenance.MEASURING_CODE`) and the tagger's and
    VAD's weight files (`provenance.LISTENING_WEIGHTS`), stored with every result. A new measuring recipe (the
    loudness moved to Echo Nest's segment level) requeues old results as a new
    model does."""
    from .bundle import CONFIG, DEFAULT_DIR, WEIGHTS

    folder = DEFAULT_DIR if model in (None, "default") else Path(model)
    h = weights_digest(source_digest(MEASURING_CODE, Path(__file__).parent), root=Path(__file__).parent)
    for name in (CONFIG, WEIGHTS):
        try:
            with open(folder / name, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        except OSError as e:
            raise SongfeatError(folder / name, f"cannot read the model bundle ({e.strerror or e})") from None
    return h.hexdigest()[:16]


def analysis_version(target: str = ANALYSIS_MODULE) -> str | None:
    """A fingerprint of the audio-analysis code (its source file and the measuring code it reads tempo, key and metre
    from: a cached analysis must not outlive a new metre rule), or None when songfeat has none yet."""
    module, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    h = source_digest(MEASURING_CODE, Path(__file__).parent)
    with open(spec.origin, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    return f"{attr}-" + h.hexdigest()[:16]


def is_valid_id(s: str) -> bool:
    """True for a well-formed track id (22 base-62 characters); anything else is refused before any lookup."""
    return isinstance(s, str) and ID_PATTERN.fullmatch(s) is not None


def default_db(root: str | Path) -> Path:
    """Where a library's database lives unless --db says otherwise."""
    return Path(root) / DATA_DIR / DB_NAME


def served(rows: Iterable[tuple]) -> Iterator[tuple]:
    """Of index rows (id, sha256, ...) in SERVED_ORDER, those whose file holds the content of its id's first file: an
    id that is some file's content id (the first 22 hex digits of its SHA-256: an upload's, or a plain-named file's)
    serves that content, not a file of other content merely named by it; two files of different content named by one
    Spotify id serve the first by path, whatever their states or which was indexed first; copies of the content served
    all serve it."""
    first: dict[str, str] = {}
    for row in rows:
        if first.setdefault(row[0], row[1]) == row[1]:
            yield row


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Entry:
    """What the index knows about one id: its state, and its features (JSON text) or failure reason."""

    id: str
    state: str  # 'done', 'pending' or 'failed'
    features: str | None
    error: str | None
    path: str
    analyses: int = 0  # analyses recorded for this content (by the current model, once it has one)


@dataclass
class ScanReport:
    """What one scan changed."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    requeued: int = 0  # rows whose model version is stale
    unchanged: int = 0
    unchecked: int = 0  # rows kept as they were because their file or folder could not be read this time
    unreadable: list[str] = field(default_factory=list)  # what could not be listed or read, with why (a few)
    unreadable_count: int = 0  # places that could not be listed or read (all of them)
    duplicate_ids: int = 0  # ids that files of different content share (named by the same Spotify id)
    duplicates: list[str] = field(default_factory=list)  # a few of them, each with the file served and those not
    seconds: float = 0.0

    def changed_anything(self) -> bool:
        """Whether this scan added, changed, removed or requeued a track: a scan that did not is not said on the console."""
        return bool(self.added or self.changed or self.removed or self.requeued)

    def summary(self, root: Path, counts: dict[str, int]) -> str:
        """The console's line for this scan, with the index's `counts` after it."""
        return (f"songfeat: scanned {root} in {self.seconds:.1f} s: {self.added} added, {self.changed} changed, "
                f"{self.removed} removed, {self.requeued} requeued, {self.unreadable_count} unreadable; "
                f"{counted(sum(counts.values()), 'track')}, {counts['pending']} to analyse")


class Index:
    """The SQLite file: one connection per thread, WAL so readers never wait for the writer."""

    def __init__(self, db: str | Path, model: str):
        self.path = Path(db)
        self.model = model
        self._local = threading.local()
        self._warned: dict[str, object] = {}  # what the last scan warned about, by kind: not logged again every scan
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self.conn()
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            with con:  # a write that changes nothing: an index this process cannot write is refused here, not by every scan
                con.execute("DELETE FROM tracks WHERE 0")
        except OSError as e:  # its folder cannot be made (a read-only library folder)
            raise SongfeatError(self.path, f"cannot create the index ({e.strerror or e}); {WRITABLE}") from None
        except sqlite3.Error as e:
            if any(words in str(e) for words in ("readonly", "unable to open")):  # sqlite's words for no write access
                raise SongfeatError(self.path, f"cannot write the index ({e}); {WRITABLE}") from None
            # a corrupt or foreign file: say so, and leave it as it is
            raise SongfeatError(self.path, f"cannot open the index ({e}); move it aside to build a new one") from None

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit off; `with conn:` commits)."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0)
            con.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a killed process
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    # ---- reading ------------------------------------------------------------------------------
    def lookup(self, ids: Iterable[str]) -> dict[str, Entry]:
        """Entries for the given ids (unknown ids are absent): of the files an id names, those `served`; of these (copies
        of one content), a done row wins."""
        wanted = list(dict.fromkeys(ids))
        rank = {"done": 0, "pending": 1, "failed": 2}
        out: dict[str, Entry] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = self.conn().execute(
                f"SELECT id, sha256, state, features, error, path, analyses FROM tracks WHERE id IN "
                f"({','.join('?' * len(chunk))}) ORDER BY {SERVED_ORDER}", chunk)
            for r in served(rows):
                e = Entry(r[0], *r[2:])
                if e.state == "pending" and e.features is not None:  # stale model: serve the old result meanwhile
                    e.state = "done"
                old = out.get(e.id)
                if old is None or rank[e.state] < rank[old.state]:
                    out[e.id] = e
        return out

    def counts(self) -> dict[str, int]:
        """Rows per state, e.g. {'done': 10, 'pending': 2, 'failed': 1}."""
        out = {"done": 0, "pending": 0, "failed": 0}
        out.update(dict(self.conn().execute("SELECT state, count(*) FROM tracks GROUP BY state").fetchall()))
        return out

    def pending_count(self) -> int:
        """Rows waiting for analysis (in flight included): `counts()["pending"]` from the state index alone, so the
        dispatcher can ask after every batch of results without reading every row of a large library."""
        return self.conn().execute("SELECT count(*) FROM tracks WHERE state='pending'").fetchone()[0]

    def pending(self, limit: int, skip: set[str]) -> list[tuple[str, int, int]]:
        """Up to `limit` (path, size, mtime_ns) of rows waiting for analysis, oldest first, not in `skip`."""
        rows = self.conn().execute("SELECT path, size, mtime_ns FROM tracks WHERE state='pending' ORDER BY rowid LIMIT ?",
                                   (limit + len(skip),)).fetchall()
        return [r for r in rows if r[0] not in skip][:limit]

    def row(self, path: str) -> tuple | None:
        return self.conn().execute("SELECT id, size, mtime_ns, sha256, state FROM tracks WHERE path=?", (path,)).fetchone()

    def cached_analysis(self, sha256: str, version: str) -> str | None:
        r = self.conn().execute("SELECT analysis FROM audio_analyses WHERE sha256=? AND version=?", (sha256, version)).fetchone()
        return r[0] if r else None

    def failed_analysis(self, sha256: str, version: str) -> str | None:
        """Why the audio analysis of this content failed, if it did: a bad file is not analysed again per request."""
        r = self.conn().execute("SELECT error FROM failed_analyses WHERE sha256=? AND version=?", (sha256, version)).fetchone()
        return r[0] if r else None

    # ---- writing ------------------------------------------------------------------------------
    def record(self, path: str, size: int, mtime_ns: int, features: dict | None, error: str | None) -> bool:
        """Store one analysis result; False (nothing written) if the file changed or left the index meanwhile."""
        con = self.conn()
        with con:
            cur = con.execute(
                "UPDATE tracks SET state=?, model=?, features=?, error=?, analyses=analyses+1, updated=? "
                "WHERE path=? AND size=? AND mtime_ns=? AND state='pending'",
                ("done" if features is not None else "failed", self.model,
                 None if features is None else json.dumps(features), error, time.time(), path, size, mtime_ns))
        return cur.rowcount == 1

    def store_analysis(self, sha256: str, version: str, analysis: dict) -> None:
        con = self.conn()
        with con:
            con.execute("INSERT OR REPLACE INTO audio_analyses VALUES (?, ?, ?)", (sha256, version, json.dumps(analysis)))

    def store_analysis_failure(self, sha256: str, version: str, error: str) -> None:
        """Remember why this content's audio analysis failed, keyed as results are (content hash, code version)."""
        con = self.conn()
        with con:
            con.execute("INSERT OR REPLACE INTO failed_analyses VALUES (?, ?, ?)", (sha256, version, error))

    def add_upload(self, path: str, ident: str, sha256: str) -> None:
        """Index a stored upload (pending analysis) unless it is already there; a pending row takes the stored file's
        size and mtime (a retried upload whose file was put back)."""
        st = os.stat(path)
        con = self.conn()
        with con:
            con.execute("INSERT INTO tracks (path, source, id, size, mtime_ns, sha256, state, updated) "
                        "VALUES (?, 'upload', ?, ?, ?, ?, 'pending', ?) ON CONFLICT(path) DO UPDATE SET "
                        "size=excluded.size, mtime_ns=excluded.mtime_ns WHERE tracks.state='pending'",
                        (path, ident, st.st_size, st.st_mtime_ns, sha256, time.time()))

    def scan(self, root: Path, rehash: bool = False, on_batch=None, time_limit: float | None = None,
             analysis: str | None = None) -> ScanReport:
        """Bring the index in line with `root` (recursively) and the stored uploads; see the module docstring. With
        `time_limit` (the server's), files that ran out of a shorter one are tried again; with `analysis` (the audio-analysis
        code's version, `analysis_version`), cached audio analyses and failures of any other version are dropped."""
        from .analyze import track_identity
        from .audio import scan_inputs

        t0 = time.monotonic()
        report = ScanReport()
        skip = {(root / DATA_DIR).resolve(), (self.path.parent / UPLOADS).resolve()}  # our own files, not the library's
        files, errors, _ = scan_inputs([root])
        # a folder that cannot be listed (out of file descriptors, unmounted, no permission) is not an empty one: the
        # rows under it, and those of files that cannot be read now, are kept as they are until a scan can see them
        unseen = [Path(os.path.abspath(e.path)) for e in errors]
        unseen += [u.resolve() for u in unseen]
        report.unreadable = [str(e) for e in errors[:SHOWN]]
        places = len(errors)  # and the files that cannot be read, below
        con = self.conn()
        known = {r[0]: r[1:] for r in con.execute("SELECT path, source, size, mtime_ns, sha256, state, model, error, "
                                                  "analyses FROM tracks")}
        # this model's results by content and file type, for a file moved, renamed or copied: its twin's result is its own
        twins = {(sha, Path(p).suffix.lower()): p for p, (_src, _size, _mtime, sha, state, model, error, _tries) in known.items()
                 if model == self.model and (state == "done" or (state == "failed" and not is_transient(error)))}
        seen: set[str] = set()
        pending_writes: list[tuple] = []
        flushed = time.monotonic()

        def flush() -> None:
            nonlocal flushed
            flushed = time.monotonic()
            if pending_writes:
                with con:
                    for sql, args in pending_writes:
                        con.execute(sql, args)
                pending_writes.clear()
                if on_batch:
                    on_batch()

        for f in files:
            try:
                resolved = f.resolve()
                if not skip.isdisjoint(resolved.parents):
                    continue
                path = str(resolved)
                st = resolved.stat()
                if path in seen:
                    continue
                seen.add(path)
                old = known.get(path)
                same = old is not None and not rehash and (old[1], old[2]) == (st.st_size, st.st_mtime_ns)
                sha = None if same else file_sha256(resolved)
                if old is not None and old[3] == sha:  # touched, or rehashed: same content, same result
                    pending_writes.append(("UPDATE tracks SET size=?, mtime_ns=? WHERE path=?", (st.st_size, st.st_mtime_ns, path)))
                    same = True
                if same:
                    self._keep(old, path, pending_writes, report, time_limit)
                    continue
                identity = track_identity(resolved, sha)  # the hash just taken: the file is read once
                twin = twins.get((sha, resolved.suffix.lower()))
                result = twin and con.execute("SELECT state, features, error, analyses FROM tracks WHERE path=? AND sha256=? "
                                              "AND model=? AND state IN ('done', 'failed')", (twin, sha, self.model)).fetchone()
                state, features, error, tries = result or ("pending", None, None, 0)
                model = self.model if result else None
                if features is not None:  # the twin's numbers under this file's own id (its name's, if a Spotify id)
                    features = json.dumps({**json.loads(features), **identity})
                pending_writes.append((
                    "INSERT OR REPLACE INTO tracks (path, source, id, size, mtime_ns, sha256, state, model, features, error, "
                    "analyses, updated) VALUES (?, 'library', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (path, identity["id"], st.st_size, st.st_mtime_ns, sha, state, model, features, error, tries, time.time())))
                if old is None:
                    report.added += 1
                else:
                    report.changed += 1
            except OSError as e:  # vanished or unreadable while scanning: its row stays until a scan can read it
                unseen.append(Path(f).resolve())
                places += 1
                if len(report.unreadable) < SHOWN:
                    report.unreadable.append(f"{f}: {e.strerror or type(e).__name__}")
                continue
            if len(pending_writes) >= SCAN_BATCH or time.monotonic() - flushed > SCAN_FLUSH_SECONDS:
                flush()
        for path, (source, _size, _mtime, _sha, state, model, _error, _tries) in known.items():
            if path in seen:
                continue
            if source == "library" and any(Path(path).is_relative_to(u) for u in unseen):
                report.unchecked += 1
                continue
            if source == "upload" and os.path.isfile(path):
                self._keep(known[path], path, pending_writes, report, time_limit)
                continue
            if source == "upload" and state == "failed" and model == self.model:  # its file is deleted, its reason kept
                report.unchanged += 1
                continue
            pending_writes.append(("DELETE FROM tracks WHERE path=?", (path,)))
            report.removed += 1
        # results of content no file holds now, or of older analysis code (each analysis ~100 KB); `version != NULL` is
        # never true: without `analysis`, none is dropped for its version
        for table in ("audio_analyses", "failed_analyses"):
            pending_writes.append((f"DELETE FROM {table} WHERE sha256 NOT IN (SELECT sha256 FROM tracks) OR version != ?",
                                   (analysis,)))
        flush()
        report.unreadable_count = places
        report.duplicate_ids, report.duplicates = self.duplicates()
        report.seconds = time.monotonic() - t0
        self._warn_once("unreadable", (places, report.unchecked, report.unreadable) if places or report.unchecked else None,
                        "songfeat: scan of %s could not read %d place(s), %d track(s) kept unchecked: %s", root, places,
                        report.unchecked, "; ".join(report.unreadable))
        self._warn_once("duplicates", report.duplicates, "songfeat: %d id(s) name files of different content; each is "
                        "served from the file it is the content id of, else its first file by path (rename the others): "
                        "%s", report.duplicate_ids, "; ".join(report.duplicates))
        return report

    def _warn_once(self, kind: str, what: object, message: str, *args: object) -> None:
        """Log a scan's warning of this kind when `what` it is about is not what the last scan's said: once, not every
        --rescan-interval while nothing changes (a dangling symlink cost a line a minute)."""
        if what and what != self._warned.get(kind):
            LOG.warning(message, *args)
        self._warned[kind] = what

    def duplicates(self) -> tuple[int, list[str]]:
        """Ids that files of different content share (two files named by one Spotify id, or a file named by another's
        content id), and a few of them, each with the file served (`served`) and the files of other content that are not."""
        rows = self.conn().execute("SELECT id, sha256, path FROM tracks WHERE id IN (SELECT id FROM tracks GROUP BY id "
                                   f"HAVING count(DISTINCT sha256) > 1) ORDER BY id, {SERVED_ORDER}").fetchall()
        kept = {r[2] for r in served(rows)}
        paths: dict[str, list[str]] = {}
        for ident, _sha, path in rows:
            paths.setdefault(ident, []).append(path)
        return len(paths), [f"{ident}: {files[0]} is served, not {', '.join(p for p in files if p not in kept)}"
                            for ident, files in list(paths.items())[:SHOWN]]

    def _keep(self, row: tuple, path: str, writes: list, report: ScanReport, time_limit: float | None = None) -> None:
        """An unchanged file: queue it again only if its result came from another model version, or it failed for the
        server's sake (a time-out or a dead worker), not its own, fewer than TRANSIENT_TRIES times, or it ran out of a
        shorter time limit than `time_limit`."""
        _source, _size, _mtime, _sha, state, model, error, tries = row
        again = requeue_tries(error, tries, time_limit) if state == "failed" else None
        if (state in ("done", "failed") and model != self.model) or again == 0:
            writes.append(("UPDATE tracks SET state='pending', analyses=0 WHERE path=?", (path,)))  # its own count of tries
            report.requeued += 1
        elif again is not None:  # the count the row has (not this scan's older copy of it)
            writes.append(("UPDATE tracks SET state='pending' WHERE path=?", (path,)))
            report.requeued += 1
        else:
            report.unchanged += 1


# ---- work done inside the worker processes --------------------------------------------------------


class AnalysisFailed(Exception):
    """An on-demand analysis failed; str() is the reason, without server paths."""


class FileChanged(AnalysisFailed):
    """The file was replaced after the index last saw it: its result belongs to no indexed content (rescan)."""


CHANGED = "the file changed while it was queued or analysed; it is rescanned and analysed again"
TIMED_OUT = "analysis took longer than the {limit:g}-s limit and was stopped"
DIED = "the analysing process died (exit code {code})"
# the beginnings of the reasons above: a failure that says more about the server (busy, short of memory) than the file
TRANSIENT = (TIMED_OUT.split("{")[0], DIED.split("{")[0])
TIMED_OUT_LIMIT = re.compile(re.escape(TRANSIENT[0]) + r"([0-9.e+]+)-s limit")  # the limit a time-out ran out of


def is_transient(reason: str | None) -> bool:
    """A failure reason that blames the server, not the file (a time-out or a dead worker)."""
    return reason is not None and reason.startswith(TRANSIENT)


def retryable(reason: str | None, tries: int) -> bool:
    """A stored failure the next scan (or the upload posted again) tries again: transient, fewer than TRANSIENT_TRIES."""
    return is_transient(reason) and tries < TRANSIENT_TRIES


RETRIED = "; it is analysed again after the next library scan (POST /library/rescan)"
GIVEN_UP = "; it failed so {tries} times and is not tried again until its content changes"
LONGER = " or the server runs with a longer --time-limit"  # what else retries a time-out given up


def longer_limit(reason: str | None, time_limit: float | None) -> bool:
    """Whether `reason` is a time-out under a shorter limit than `time_limit`: such a file is tried again, with a new
    count of tries (given up after TRANSIENT_TRIES, it stayed failed even when the server ran with a longer limit)."""
    found = TIMED_OUT_LIMIT.match(reason or "")
    return found is not None and time_limit is not None and float(found.group(1)) < time_limit


def requeue_tries(reason: str | None, tries: int, time_limit: float | None) -> int | None:
    """The count of tries a failure under the current model is queued again with, or None if it stays failed: 0 for a
    time-out under a shorter limit than `time_limit` (a new count), `tries` while it is `retryable`. One rule for a
    scan's unchanged file and an upload posted again."""
    if longer_limit(reason, time_limit):
        return 0
    return tries if retryable(reason, tries) else None


def failure_note(reason: str | None, tries: int = 0) -> str:
    """What a stored failure's reason gains for clients: a time-out or a dead worker is retried by the next scan, or
    has used up its TRANSIENT_TRIES; any other failure gains nothing."""
    if not is_transient(reason):
        return ""
    if retryable(reason, tries):
        return RETRIED
    return GIVEN_UP.format(tries=tries) + (LONGER if TIMED_OUT_LIMIT.match(reason) else "")


class TransientFailure(AnalysisFailed):
    """The analysis ran out of time or lost its process: try again later, the file may well be fine."""


def _nice() -> None:
    """Workers run at a lower priority than the HTTP process (lookups stay quick) and with capped memory."""
    import resource

    try:
        os.nice(5)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = WORKER_MEMORY if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass


def _init_worker() -> None:
    """Worker start-up: lower priority, one inference thread (onnxruntime; torch too when loaded), the default model loaded once."""
    from .analyze import _init_worker as one_thread, get_bundle

    _nice()
    one_thread()
    get_bundle(None)


def features_job(path: str) -> tuple[dict | None, str | None]:
    """Analyze one file: (features, None) or (None, reason). Never raises for a bad file."""
    from .analyze import analyze

    try:
        with capture_output():  # decoder noise stays out of the server's stderr (the batch rules of `analyze`)
            return analyze(path), None
    except SongfeatError as e:
        return None, e.reason
    except MemoryError:
        return None, "out of memory while analysing"
    except Exception as e:  # a library failing on one file must not fail the pool
        return None, f"analysis failed ({type(e).__name__}: {_without_path(str(e), path)})"


@contextlib.contextmanager
def deadline(path: str, limit: float | None) -> Iterator[None]:
    """In a worker: end this process with SIGALRM (its default action, which native code cannot hold off) once the body
    has run `limit` seconds, scaled up for audio over 10 minutes by `path`'s header as `analyze --timeout` is
    (`analyze.time_limit`): under one flat limit a 2-hour mix on a busy server was stopped three times and given up.
    The header is read here, not in the server, which no decoder may crash; pebble's limit (the most it scales to) is
    only a backstop. None: no limit of its own."""
    if limit is None or not hasattr(signal, "setitimer"):
        yield
        return
    from .analyze import header_seconds, time_limit  # imported before the clock starts: no file's time

    start = time.monotonic()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, limit)  # the plain limit while the header is read
    try:
        try:
            with capture_output():
                seconds = header_seconds(path)
        except Exception:  # the analysis says what is wrong with the file
            seconds = None
        signal.setitimer(signal.ITIMER_REAL, max(time_limit(limit, seconds) - (time.monotonic() - start), 1e-3))
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def guarded_job(job, path: str, limit: float | None = None) -> tuple[dict | None, str | None]:
    """`job(path)` with its failure as a reason free of server paths: a job's own exception type may not unpickle in
    the server, and one that does not breaks pebble's whole pool and aborts every file in flight. `limit`: `deadline`'s."""
    try:
        with deadline(path, limit):
            return job(path)
    except SongfeatError as e:
        return None, e.reason
    except Exception as e:
        return None, f"analysis failed ({type(e).__name__}: {_without_path(str(e), path)})"


def _without_path(text: str, path: str) -> str:
    """`text` with the server path of `path` cut down to its file name (reasons are sent to HTTP clients)."""
    return text.replace(str(Path(path).parent) + os.sep, "").replace(str(path), Path(path).name)


def analysis_job(target: str, path: str, sha256: str | None = None, limit: float | None = None) -> dict:
    """Spotify's audio-analysis object for one file, from the function named by `target` ('module:function').

    Raises only AnalysisFailed with a reason free of server paths: an exception the server cannot unpickle (a
    SongfeatError, whose __init__ takes two arguments) would break pebble's whole pool and stop every analysis.
    With `sha256` (the content the index knows), FileChanged if the file no longer holds it: the result is cached
    under that hash for good, so it must not describe a replacement no scan has seen yet. `limit`: `deadline`'s.
    """
    module, _, attr = target.partition(":")
    try:
        with deadline(path, limit):
            if sha256 is not None and _hash_or_none(path) != sha256:  # replaced, or moved or removed since the last scan
                raise FileChanged(CHANGED)
            with capture_output():
                return getattr(importlib.import_module(module), attr)(path)
    except AnalysisFailed:
        raise
    except SongfeatError as e:
        raise AnalysisFailed(e.reason) from None
    except MemoryError:
        raise AnalysisFailed("out of memory while analysing") from None
    except Exception as e:
        raise AnalysisFailed(f"analysis failed ({type(e).__name__}: {_without_path(str(e), path)})") from None


def _hash_or_none(path: str) -> str | None:
    """The file's SHA-256, or None when it cannot be read (moved or removed): that says nothing about its content, so
    it must not become a failure cached under the content's hash (a renamed file would keep it for good)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def _same_file(path: str, size: int, mtime_ns: int) -> bool:
    """The file still has the size and mtime a job was queued with (a vanished file counts as changed)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (size, mtime_ns)


# ---- the library: index + background analysis ----------------------------------------------------


@dataclass
class Stats:
    """Counters the HTTP layer exports as metrics."""

    done: int = 0
    failed: int = 0
    timed_out: int = 0
    crashed: int = 0
    seconds: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))

    def mean_seconds(self) -> float:
        """Recent seconds per file; before the first one, a guess that covers workers still starting (torch import)."""
        return sum(self.seconds) / len(self.seconds) if self.seconds else 10.0


def rough_span(seconds: float) -> str:
    """A duration for the console, as a person would round it: '40 s', '12 min', '3 h 5 min'."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@dataclass
class QueueRun:
    """One stretch of the queue's analysis, from its first file to the queue's emptying: what the console says of it."""

    started: float  # time.monotonic() of its first file
    said: float  # and of its last progress line (its start, before the first)
    finished: int = 0  # files whose result or failure was recorded
    failed: int = 0

    def line(self, left: int, now: float) -> str:
        """'analysed N of M (K failed), ~T left' (the time from this stretch's pace), or its last line when none is left."""
        took = now - self.started
        head = f"songfeat: analysed {self.finished} of {self.finished + left} ({self.failed} failed)"
        if not left:
            return f"{head} in {rough_span(took)}; the queue is empty"
        return f"{head}, ~{rough_span(took / self.finished * left)} left" if self.finished else head


class Library:
    """A library folder, its index, and the worker pool that keeps the index's results complete."""

    def __init__(self, root: str | Path, db: str | Path | None = None, workers: int = 1, time_limit: float = TIME_LIMIT,
                 analysis_target: str = ANALYSIS_MODULE, model: str | None = None, job=None):
        """`job(path) -> (features | None, reason | None)` runs in the workers (default: `features_job`, songfeat's analysis)."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SongfeatError(self.root, "library folder not found")
        self.index = Index(db or default_db(self.root), model or model_version())
        self.workers = max(1, int(workers))
        self.time_limit = float(time_limit)
        from .analyze import MAX_TIMEOUT_FACTOR

        self._backstop = self.time_limit * MAX_TIMEOUT_FACTOR + 30  # pebble's limit: each job's own `deadline` comes first
        self.analysis_target = analysis_target
        self.job = job or features_job
        self.analysis_version = analysis_version(analysis_target)
        self.uploads = self.index.path.parent / UPLOADS
        self.stats = Stats()
        self.last_scan: ScanReport | None = None
        self._run: QueueRun | None = None  # the queue's analysis under way, for the console (the dispatcher's own)
        self._pool = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._urgent: collections.deque = collections.deque()  # ("features", path) / ("analysis", path, sha)
        self._inflight: dict[str, object] = {}  # job key -> pebble future
        self._broken: set[str] = set()  # job keys aborted once by a broken pool (a second time, they fail)
        self._transient_analyses: dict[str, str] = {}  # sha256 -> why its audio analysis timed out or died, until a scan
        self._waiters: dict[str, concurrent.futures.Future] = {}
        self._results: collections.deque = collections.deque()
        self._scan_lock = threading.Lock()
        self._scan_requested = False  # a requested scan waits for the running one (more requests join it)
        self._stopping = False
        self.indexing = False  # True while the start-up scan runs: an id the index lacks may be a file not reached yet
        self._threads: list[threading.Thread] = []
        self._lock_file: IO[str] | None = None  # the open SERVE_LOCK while this library serves (`claim`)

    # ---- life cycle -----------------------------------------------------------------------------
    def claim(self, db_option: str = "--db") -> None:
        """Take the index's serving lock (released by `stop` or the process's end), or SongfeatError if another server
        holds it: a second `songfeat serve` on the same library (even one whose port was taken) removed the first's
        uploads in progress (a 500 for their clients) and ran a second queue over the same index. `db_option`: how the
        refusal names the setting of another index (`SONGFEAT_DB` under `serve.app_from_env`)."""
        if self._lock_file is not None:
            return
        try:
            import fcntl
        except ImportError:  # no flock (Windows): unguarded, as before
            return
        try:
            lock = open(self.index.path.parent / SERVE_LOCK, "a")
        except OSError as e:
            raise SongfeatError(self.index.path.parent / SERVE_LOCK, f"cannot open the serving lock ({e.strerror or e})") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise SongfeatError(self.index.path, "another songfeat serve is using this index; run one server per "
                                                 f"library (or give this one a {db_option} in another folder)") from None
        self._lock_file = lock

    def start(self, rehash: bool = False, rescan_interval: float = 0.0) -> None:
        """Start the worker pool, the dispatcher and a first scan (in the background: serving starts at once).

        Uploads a killed server was receiving (`stage_upload`'s `incoming-*.part`) are removed first: the serving lock
        (`claim`) says no other server is receiving any, and nothing else would ever remove them."""
        self.claim()
        for part in self.uploads.glob("incoming-*.part") if self.uploads.is_dir() else ():
            with contextlib.suppress(OSError):
                part.unlink()
        self._pool = self._new_pool()
        self.indexing = True
        for target, args in ((self._dispatch, ()), (self._scan_loop, (rehash, rescan_interval))):
            t = threading.Thread(target=target, args=args, daemon=True, name=f"songfeat-{target.__name__.strip('_')}")
            t.start()
            self._threads.append(t)

    def _new_pool(self):
        """A pebble pool of `workers` spawned, capped processes (replaced whole if pebble marks it broken)."""
        import multiprocessing

        from pebble import ProcessPool

        init = _init_worker if self.job is features_job else _nice
        return ProcessPool(max_workers=self.workers, max_tasks=MAX_TASKS_PER_WORKER, initializer=init,
                           context=multiprocessing.get_context("spawn"))

    def stop(self) -> None:
        """Stop the dispatcher, then the pool (in-flight files stay pending in the index and are redone by the next start).

        The dispatcher is the pool's one user: a pool stopped under it, as it handed the pool a file a scan had just found,
        failed that `schedule` (an 'analysis dispatcher' traceback as the server stopped)."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        dispatcher, others = self._threads[:1], self._threads[1:]  # in the order `start` made them
        for t in dispatcher:
            t.join(timeout=5)
        if self._pool is not None:
            self._pool.stop()
            self._pool.join(timeout=10)
        for t in others:
            t.join(timeout=5)
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    def scan(self, rehash: bool = False) -> ScanReport:
        """Scan now (one scan at a time) and wake the workers."""
        with self._scan_lock:
            self._scan_requested = False  # requests from now on need a scan after this one
            with self._lock:
                self._transient_analyses.clear()  # a scan retries what failed for the server's sake, analyses too
            report = self.index.scan(self.root, rehash=rehash, on_batch=self.kick, time_limit=self.time_limit,
                                     analysis=self.analysis_version)
        if report.changed_anything() or self.last_scan is None:  # the first is said however little it found
            LOG.info(report.summary(self.root, self.index.counts()))
        self.last_scan = report
        self.kick()
        return report

    def request_scan(self) -> bool:
        """Scan in a background thread unless a requested scan is already waiting: a flood of rescan requests costs
        at most one scan after the running one, and no thread of the HTTP server's pool. False if joined."""
        with self._lock:
            if self._scan_requested:
                return False
            self._scan_requested = True
        threading.Thread(target=self._background_scan, daemon=True, name="songfeat-rescan").start()
        return True

    def _background_scan(self, rehash: bool = False) -> None:
        """`scan` for the background threads: a scan that fails (an index it cannot write, a full disk, a lock held too
        long) is one logged line, and the next scan tries again; raised, it ended the periodic scans for good."""
        try:
            self.scan(rehash)
        except Exception as e:
            LOG.error("songfeat: scan of %s failed (%s: %s); the next scan tries again", self.root, type(e).__name__, e,
                      exc_info=not isinstance(e, (sqlite3.Error, OSError)))

    def _scan_loop(self, rehash: bool, interval: float) -> None:
        try:
            self._background_scan(rehash)
        finally:
            self.indexing = False
        while interval > 0 and not self._stopping:
            with self._lock:
                self._wake.wait_for(lambda: self._stopping, timeout=interval)
            if not self._stopping:
                self._background_scan()

    def kick(self) -> None:
        """Wake the dispatcher: there may be new pending rows in the index."""
        with self._lock:
            self._idle = False
            self._wake.notify_all()

    # ---- asking for work ------------------------------------------------------------------------
    def queue_depth(self, pending: int) -> int:
        """Files waiting for analysis (not yet finished), plus queued on-demand audio analyses; `pending` is the index's
        pending rows as the caller has just counted them (`counts()["pending"]`), sparing a second query."""
        return pending + sum(1 for j in self._urgent if j[0] == "analysis")

    def prioritise(self, paths: Iterable[str]) -> concurrent.futures.Future:
        """Move these pending files to the front of the queue; the future resolves when all are analysed."""
        futs = [self._request(("features", p)) for p in paths]
        return _all_of(futs)

    def _request(self, job: tuple) -> concurrent.futures.Future:
        key = f"{job[0]}:{job[1]}"
        with self._lock:
            fut = self._waiters.get(key)
            if fut is None:
                fut = self._waiters[key] = concurrent.futures.Future()
                self._urgent.appendleft(job)
                self._wake.notify_all()
            return fut

    def retry_after(self, n: int = 1) -> int:
        """Seconds a client should wait before asking again for `n` files just moved to the queue's front."""
        rounds = -(-max(1, n) // self.workers)
        return max(1, min(60, int(rounds * self.stats.mean_seconds() + 1)))

    def upload(self, tmp: str | Path, suffix: str = "") -> tuple[str, concurrent.futures.Future | None]:
        """Take an uploaded file (moved into the library's uploads folder) and queue it; (id, future or None if done)."""
        from .analyze import track_identity

        sha = file_sha256(tmp)
        self.uploads.mkdir(parents=True, exist_ok=True)
        same = self.index.conn().execute(  # these bytes posted before under another name or type: the same upload
            "SELECT path FROM tracks WHERE sha256=? AND source='upload' ORDER BY state='done' DESC, path LIMIT 1",
            (sha,)).fetchone()
        # never a Spotify-id stem: the id is the content hash
        dest = Path(same[0]) if same else self.uploads / f"{sha[:22]}.upload{suffix or '.bin'}"
        failed = self._failed_upload(str(dest))
        if failed is not None:  # these bytes failed before: the same answer, without another analysis
            os.unlink(tmp)
            return failed
        if dest.exists():
            os.unlink(tmp)
        else:
            os.replace(tmp, dest)
        ident = track_identity(dest, sha)["id"]
        self.index.add_upload(str(dest), ident, sha)
        state = self.index.conn().execute("SELECT state FROM tracks WHERE path=?", (str(dest),)).fetchone()
        if state is not None and state[0] == "done":
            return ident, None
        return ident, self._request(("features", str(dest)))

    def _failed_upload(self, path: str) -> tuple[str, concurrent.futures.Future] | None:
        """(id, failed future) if this stored-upload path failed under the current model; another model's failure is
        dropped so the upload is analysed again."""
        con = self.index.conn()
        row = con.execute("SELECT id, model, error, analyses FROM tracks WHERE path=? AND state='failed'", (path,)).fetchone()
        if row is None:
            return None
        if row[1] != self.index.model:
            with con:
                con.execute("DELETE FROM tracks WHERE path=? AND state='failed'", (path,))
            return None
        again = requeue_tries(row[2], row[3], self.time_limit)
        if again is not None:  # posted again after a time-out: analysed again
            with con:  # (`upload` puts the file back if it is gone, and add_upload takes its size and mtime)
                con.execute("UPDATE tracks SET state='pending', analyses=? WHERE path=? AND state='failed'", (again, path))
            return None
        return row[0], _failed(_stored_failure(row[2] or "analysis failed", row[3]))

    def forget_upload(self, ident: str) -> None:
        """Delete a failed upload's stored file (a bad upload leaves no audio behind); its row keeps the reason, so the
        same bytes posted again get the same 400 without another analysis. A time-out or dead worker keeps the file."""
        rows = self.index.conn().execute("SELECT path, error, analyses FROM tracks WHERE id=? AND source='upload' "
                                         "AND state='failed'", (ident,)).fetchall()
        for path, error, tries in rows:
            if retryable(error, tries):  # kept, so that the next scan or the same upload posted again can retry it
                continue
            try:
                os.unlink(path)
            except OSError:
                pass

    def audio_analysis(self, ident: str) -> tuple[str | None, concurrent.futures.Future | None]:
        """(cached analysis JSON, None), or (None, future of the analysis being computed); KeyError if unknown."""
        if self.analysis_version is None:
            raise NotImplementedError("audio analysis is not available in this songfeat version")
        rows = self.index.conn().execute(f"SELECT id, sha256, path, source, state FROM tracks WHERE id=? "
                                         f"ORDER BY {SERVED_ORDER}", (ident,))
        # the file `lookup` serves, a done one first; a failed upload has no file, unless it timed out (kept for a retry)
        rows = sorted((r for r in served(rows) if not (r[3] == "upload" and r[4] == "failed" and not os.path.isfile(r[2]))),
                      key=lambda r: r[4] != "done")
        if not rows:
            raise KeyError(ident)
        sha, path = rows[0][1:3]
        cached = self.index.cached_analysis(sha, self.analysis_version)
        if cached is not None:
            return cached, None
        error = self.index.failed_analysis(sha, self.analysis_version)
        if error is not None:  # failed before: the same answer, without another analysis
            return None, _failed(_failure(error))
        with self._lock:
            error = self._transient_analyses.get(sha)
        if error is not None:  # timed out or died since the last scan: not run again per request either
            return None, _failed(_failure(error))
        return None, self._request(("analysis", path, sha))

    # ---- the dispatcher thread --------------------------------------------------------------------
    def _dispatch(self) -> None:
        cap = self.workers * 2  # a little ahead of the workers so none idles between files
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._stopping or self._results or len(self._inflight) < cap and
                                    (self._urgent or not self._idle), timeout=1.0)
                if self._stopping:
                    break
                results = list(self._results)
                self._results.clear()
            try:
                for r in results:
                    self._finish(*r)
                self._fill(cap)
                self._say_progress(bool(results))
            except Exception:  # the dispatcher must outlive any one failure, or every later request waits for ever
                LOG.exception("songfeat: analysis dispatcher")
                self._replace_broken_pool()
                time.sleep(0.5)
        for fut in list(self._waiters.values()):
            fut.cancel()

    _idle = False  # True after the queue was found empty; a kick or a result makes it look again

    def _fill(self, cap: int) -> None:
        while len(self._inflight) < cap:
            with self._lock:
                job = self._urgent.popleft() if self._urgent else None
            if job is None:
                rows = self.index.pending(cap - len(self._inflight), {k[9:] for k in self._inflight if k.startswith("features:")})
                if not rows:
                    self._idle = True
                    return
                for path, size, mtime in rows:
                    self._submit(("features", path), size, mtime)
                continue
            if job[0] == "features":
                row = self.index.row(job[1])
                if row is None or row[4] != "pending":  # gone, or finished meanwhile: answer the waiter
                    self._resolve(f"features:{job[1]}", None if row is None or row[4] == "done" else AnalysisFailed("analysis failed"))
                    continue
                if f"features:{job[1]}" not in self._inflight:
                    self._submit(job, row[1], row[2])
            else:
                if f"analysis:{job[1]}" not in self._inflight:
                    self._submit(job, 0, 0)

    def _say_progress(self, finished: bool) -> None:
        """Log the queue's progress every PROGRESS_SECONDS while it is analysed, and once when it empties (looked at after
        files `finished`); nothing while it is idle."""
        run, now = self._run, time.monotonic()
        due = run is not None and now - run.said >= PROGRESS_SECONDS
        if run is None or not (due or finished):
            return
        left = self.index.pending_count()  # in flight included: a row stays pending until its result is in
        if left and not due:
            return
        if left or run.finished:  # a stretch whose files all left the index before their results says nothing
            LOG.info(run.line(left, now))
        run.said = now
        if not left:
            self._run = None

    def _replace_broken_pool(self) -> None:
        """Start a new pool if pebble marked this one broken (e.g. a worker sent something unpicklable)."""
        if self._pool is None or self._pool.active:
            return
        with self._lock:
            if self._stopping:
                return
            old, self._pool = self._pool, self._new_pool()
        old.stop()

    def _submit(self, job: tuple, size: int, mtime: int) -> None:
        key = f"{job[0]}:{job[1]}"
        self._replace_broken_pool()
        backstop = self._backstop
        if job[0] == "features":
            fut = self._pool.schedule(guarded_job, args=(self.job, job[1], self.time_limit), timeout=backstop)
            if self._run is None:
                self._run = QueueRun(time.monotonic(), time.monotonic())
        else:
            fut = self._pool.schedule(analysis_job, args=(self.analysis_target, job[1], job[2], self.time_limit),
                                      timeout=backstop)
        self._inflight[key] = fut
        t0 = time.monotonic()

        def done(f, job=job, size=size, mtime=mtime, t0=t0) -> None:
            with self._lock:
                self._results.append((job, size, mtime, f, time.monotonic() - t0))
                self._idle = False
                self._wake.notify_all()

        fut.add_done_callback(done)

    def _finish(self, job: tuple, size: int, mtime: int, fut, seconds: float) -> None:
        from concurrent.futures.process import BrokenProcessPool

        from pebble import ProcessExpired

        key = f"{job[0]}:{job[1]}"
        self._inflight.pop(key, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, BrokenProcessPool) and key not in self._broken:  # aborted with every job in flight: redo once
            self._broken.add(key)
            if job[0] == "analysis":
                with self._lock:
                    self._urgent.append(job)
            return  # a features row is still pending: the dispatcher takes it again
        self._broken.discard(key)
        if isinstance(exc, AnalysisFailed):
            reason = str(exc)
        elif isinstance(exc, concurrent.futures.TimeoutError) or (
                isinstance(exc, ProcessExpired) and exc.exitcode == -getattr(signal, "SIGALRM", 0)):  # its `deadline`, or the backstop
            self.stats.timed_out += 1
            reason = TIMED_OUT.format(limit=self.time_limit)
        elif isinstance(exc, ProcessExpired):
            self.stats.crashed += 1
            reason = DIED.format(code=exc.exitcode)
        elif exc is not None:
            reason = f"analysis failed ({type(exc).__name__}: {exc})"
        else:
            reason = None
        if job[0] == "analysis":
            if reason is None:
                self.index.store_analysis(job[2], self.analysis_version, fut.result())
            elif isinstance(exc, FileChanged):
                self.request_scan()
            elif is_transient(reason):  # not kept in the index: asked for again after the next scan, it runs again
                with self._lock:
                    self._transient_analyses[job[2]] = reason
            else:
                self.index.store_analysis_failure(job[2], self.analysis_version, reason)
            if reason is not None and not isinstance(exc, FileChanged):
                LOG.warning("songfeat: could not make the audio analysis of %s: %s", job[1], reason)
            self._resolve(key, None if reason is None else _failure(reason))
            return
        if not _same_file(job[1], size, mtime):  # replaced since it was queued, and no scan has seen it yet
            self.request_scan()
            self._resolve(key, FileChanged(CHANGED))
            return
        features, error = (None, reason) if reason is not None else fut.result()
        if features is not None:
            self.stats.done += 1
            self.stats.seconds.append(seconds)
        else:
            self.stats.failed += 1
        recorded = self.index.record(job[1], size, mtime, features, error)
        if recorded and self._run is not None:
            self._run.finished += 1
            self._run.failed += features is None
        if features is not None:
            self._resolve(key, None)
            return
        row = self.index.conn().execute("SELECT analyses FROM tracks WHERE path=?", (job[1],)).fetchone()
        why, tries = error or "analysis failed", row[0] if row else TRANSIENT_TRIES
        if recorded:  # in the words of its id's 404, a time-out's retry included
            LOG.warning("songfeat: could not analyse %s: %s%s", job[1], why, failure_note(why, tries))
        self._resolve(key, _stored_failure(why, tries))

    def _resolve(self, key: str, exc: BaseException | None) -> None:
        with self._lock:
            fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)


def _failure(reason: str) -> AnalysisFailed:
    """The exception a failed analysis resolves with: TransientFailure for a time-out or a dead worker."""
    return (TransientFailure if is_transient(reason) else AnalysisFailed)(reason)


def _stored_failure(reason: str, tries: int) -> AnalysisFailed:
    """A recorded failure after `tries` analyses: as `_failure`, except that a time-out which used up its tries is a
    plain failure of the content (a 400 for an upload), saying so."""
    if is_transient(reason) and not retryable(reason, tries):
        return AnalysisFailed(reason + failure_note(reason, tries))
    return _failure(reason)


def _failed(exc: AnalysisFailed) -> concurrent.futures.Future:
    """A future already failed with `exc`: a remembered failure answers as a fresh one does."""
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_exception(exc)
    return fut


def _all_of(futs: list[concurrent.futures.Future]) -> concurrent.futures.Future:
    """A future that resolves (to None) when every one of `futs` has finished, however each ended."""
    out: concurrent.futures.Future = concurrent.futures.Future()
    if not futs:
        out.set_result(None)
        return out
    left = [len(futs)]
    lock = threading.Lock()

    def one_done(_f) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last and not out.done():
            out.set_result(None)

    for f in futs:
        f.add_done_callback(one_done)
    return out


def stage_upload(directory: str | Path) -> tuple[int, str]:
    """A new temporary file for an upload in `directory` (same filesystem as the uploads folder): (fd, path)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix="incoming-", suffix=".part", dir=directory)


__all__ = ["Library", "Index", "Entry", "ScanReport", "AnalysisFailed", "model_version", "is_valid_id", "default_db",
           "analysis_version", "stage_upload"]
