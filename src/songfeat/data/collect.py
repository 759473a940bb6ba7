"""Collect a labelled track table from Spotify's Web API, the way the seed project did, but resumable.

For each genre the collector pages through `genre:<name>` track searches (50 per page), keeps each
track id once, and then asks audio-features for the labels in batches of 100. The output is one CSV
in the normalised label schema (`COLUMNS`). Spotify serves at most 1,000 results per search query,
so once `genre:<name>` runs dry the collector continues with `genre:<name> year:<y>` slices, newest
year first, until the genre has `per_genre` tracks or the catalogue runs out.

Spotify closed audio-features (and preview URLs) to apps registered after 2024-11-27. A 403 from
audio-features is reported in one line (`FEATURES_CLOSED`); the metadata is still written, with
empty label columns.

Progress lives in the CSV itself plus a small `<out>.state.json` (which query, which offset), both
replaced atomically every few seconds, so a rerun after an interruption continues where it stopped
and never writes a track twice.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import SongfeatError, WorkFailed, counted
from ..features import LABEL_COLUMNS
from ..output import OutputLock
from . import spotify_api
from .spotify_api import RetryPolicy, SpotifyAPIError

META_COLUMNS: tuple[str, ...] = ("track_id", "name", "artists", "album", "popularity", "duration_ms", "preview_url", "genre")
#: The normalised label schema: track metadata, then Spotify's twelve labels (empty when unknown).
COLUMNS: tuple[str, ...] = META_COLUMNS + LABEL_COLUMNS
ARTIST_SEPARATOR = "; "  # artist names often contain commas, rarely semicolons
PAGE_SIZE = 50  # Spotify's maximum `limit` for search
SEARCH_CAP = 1000  # Spotify's maximum offset + limit for one search query
FEATURES_BATCH = 100  # Spotify's maximum ids per audio-features request
FIRST_YEAR = 1950  # oldest year slice tried once a genre's plain query runs dry
CHECKPOINT_SECONDS = 2.0  # at most this much work is redone after a hard kill
STATE_VERSION = 1

FEATURES_CLOSED = (
    "Spotify answered 403 Forbidden on audio-features: Spotify closed audio-features to new apps on 2024-11-27, "
    "so no labels were fetched; the track metadata was still written. For labels use the repo's "
    "../shared/data/spotify-features tables, FMA's Echo Nest features, or `songfeat analyze` (see docs/collect.md)."
)


@dataclass
class CollectReport:
    """What one `collect` run produced."""

    out: Path
    state: Path
    tracks: int = 0  # rows in the CSV now
    added: int = 0  # rows added by this run
    per_genre: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)  # genres whose catalogue ran out below per_genre
    with_features: int = 0  # rows whose labels are filled
    features_closed: bool = False  # audio-features answered 403
    message: str | None = None  # FEATURES_CLOSED when features_closed

    def summary(self) -> str:
        """One line for the terminal."""
        genres = ", ".join(f"{g} {n}" for g, n in self.per_genre.items())
        labels = "audio-features closed (403)" if self.features_closed else f"{self.with_features} with audio features"
        return f"{self.out}: {counted(self.tracks, 'track')} ({self.added} new; {genres}); {labels}"


def _atomic_write(path: Path, write: Callable[[Any], None], newline: str | None = None) -> None:
    """Write a file atomically (`atomic.replacing`); a failed write is one WorkFailed line, the last save kept."""
    try:
        with atomic.replacing(path, "w", encoding="utf-8", newline=newline) as f:
            write(f)
    except OSError as e:  # a full disk, a read-only folder: the last saved file stays as it was
        raise WorkFailed(path, f"cannot write ({e.strerror or e}); the last saved progress is kept") from None


def write_table(path: Path, rows: Iterable[dict[str, str]]) -> None:
    """Atomically write rows in the normalised schema (`COLUMNS`)."""

    def write(f: Any) -> None:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    _atomic_write(path, write, newline="")


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """Rows of an earlier (possibly interrupted) run, by track id, first occurrence kept."""
    rows: dict[str, dict[str, str]] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a table re-saved by a spreadsheet starts with a BOM
            reader = csv.DictReader(f)
            header = tuple(reader.fieldnames or ())
            if header != COLUMNS:
                raise SongfeatError(path, "exists but is not a `songfeat collect` table (its columns differ); choose another --out")
            for row in reader:
                tid = (row.get("track_id") or "").strip()
                if tid and tid not in rows:
                    rows[tid] = {c: (row.get(c) or "") for c in COLUMNS}
    except UnicodeDecodeError:
        raise SongfeatError(path, "exists but is not a UTF-8 CSV table; choose another --out") from None
    except csv.Error as e:
        raise SongfeatError(path, f"exists but is not a readable CSV table ({e}); choose another --out") from None
    except OSError as e:
        raise SongfeatError(path, f"cannot read ({e.strerror or e})") from None
    return rows


def genre_queries(genre: str, first_year: int = FIRST_YEAR, last_year: int | None = None) -> list[str]:
    """The search queries tried for one genre, in order: the plain genre, then one per year, newest first."""
    g = f'"{genre}"' if " " in genre else genre
    last = last_year if last_year is not None else _dt.date.today().year
    return [f"genre:{g}"] + [f"genre:{g} year:{y}" for y in range(last, first_year - 1, -1)]


def parse_genres(genres: str | Sequence[str]) -> list[str]:
    """Genre names from a comma-separated string or a list: trimmed, lower-cased, unique, in order."""
    items = genres.split(",") if isinstance(genres, str) else list(genres)
    out: list[str] = []
    for g in items:
        g = " ".join(str(g).split()).lower()
        if g and g not in out:
            out.append(g)
    if not out:
        raise SongfeatError(None, "no genres given (e.g. --genres pop,rock,jazz)")
    return out


def _text(value: Any) -> str:
    """A string field of an API answer, or "" when it is missing or not a string (a proxy's garbage)."""
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    """A finite number from an API answer, or None (missing, NaN, infinite, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _whole(value: Any) -> str:
    """An integer field (popularity, duration_ms) as text, "" unless it is a finite number."""
    v = _number(value)
    return "" if v is None else str(int(v))


def track_id_of(item: Any) -> str | None:
    """The id of a search result, or None when the item is not a track object with a string id."""
    tid = item.get("id") if isinstance(item, dict) else None
    return tid.strip() or None if isinstance(tid, str) else None


def track_row(item: dict[str, Any], genre: str) -> dict[str, str]:
    """One search result (a Spotify track object) as a row of the normalised schema, labels empty; malformed fields stay empty."""
    artists = ARTIST_SEPARATOR.join(_text(a.get("name")) for a in item.get("artists") or [] if isinstance(a, dict))
    album = item.get("album")
    row = {c: "" for c in COLUMNS}
    row.update(
        track_id=str(track_id_of(item)),
        name=_text(item.get("name")),
        artists=artists,
        album=_text(album.get("name")) if isinstance(album, dict) else "",
        popularity=_whole(item.get("popularity")),
        duration_ms=_whole(item.get("duration_ms")),
        preview_url=_text(item.get("preview_url")),
        genre=genre,
    )
    return row


def _fill_labels(row: dict[str, str], features: dict[str, Any]) -> None:
    """Copy the labels from a feature object; a value that is not a finite number (NaN, text) stays empty."""
    for c in LABEL_COLUMNS:
        v = _number(features.get(c))
        row[c] = "" if v is None else str(v)
    if not row["duration_ms"]:
        row["duration_ms"] = _whole(features.get("duration_ms"))


def _chunks(items: Sequence[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i:i + n])


class _Checkpoint:
    """The CSV plus the sidecar state, saved together at most every CHECKPOINT_SECONDS (or when forced)."""

    def __init__(self, out: Path, state_path: Path, rows: dict[str, dict[str, str]], state: dict[str, Any]):
        self.out, self.state_path, self.rows, self.state = out, state_path, rows, state
        self.last = 0.0

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < CHECKPOINT_SECONDS:
            return
        # CSV first: a kill between the two leaves the state behind the CSV, and rerunning the
        # older offsets only meets ids already in the CSV, which are skipped.
        write_table(self.out, self.rows.values())
        _atomic_write(self.state_path, lambda f: json.dump(self.state, f, indent=1))
        self.last = now


def _load_state(path: Path) -> dict[str, Any]:
    fresh: dict[str, Any] = {"version": STATE_VERSION, "queries": {}, "genre_done": {}, "features_tried": []}
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SongfeatError(path, f"unreadable resume state ({e}); delete it to start the searches over") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SongfeatError(path, "resume state from another songfeat version; delete it to start the searches over")
    for k, v in fresh.items():
        state.setdefault(k, v)
    queries, done, tried = state["queries"], state["genre_done"], state["features_tried"]
    if not (isinstance(queries, dict) and all(isinstance(o, int) and not isinstance(o, bool) for o in queries.values())
            and isinstance(done, dict) and isinstance(tried, list) and all(isinstance(t, str) for t in tried)):
        raise SongfeatError(path, "damaged resume state (queries, genre_done or features_tried has the wrong form); "
                                  "delete it to start the searches over")
    return state


def collect(
    genres: str | Sequence[str],
    per_genre: int,
    out: str | Path,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_url: str | None = None,
    token_url: str | None = None,
    features: bool = True,
    require_preview: bool = False,
    policy: RetryPolicy | None = None,
    progress: bool = True,
    search_cap: int = SEARCH_CAP,
    first_year: int = FIRST_YEAR,
    on_message: Callable[[str], None] | None = None,
) -> CollectReport:
    """Collect up to `per_genre` unique tracks per genre into `out` (CSV), then their audio features.

    Credentials and endpoints fall back to $SPOTIPY_CLIENT_ID / $SPOTIPY_CLIENT_SECRET and
    $SONGFEAT_SPOTIFY_API_URL / $SONGFEAT_SPOTIFY_TOKEN_URL. Rerunning with the same `out` resumes.
    `require_preview` keeps only tracks with a preview URL; `features=False` skips audio-features.
    `on_message` receives retry notices (one line each). Raises SongfeatError for a refusal before any request (bad
    arguments, credentials, an --out it cannot use), WorkFailed (SpotifyAPIError for API failures) after saving progress.
    """
    genre_list = parse_genres(genres)
    if per_genre < 1:
        raise SongfeatError(None, f"--per-genre must be at least 1 (got {per_genre})")
    policy = policy or RetryPolicy()
    out = Path(out)
    if out.is_dir():
        raise SongfeatError(out, "is a directory; --out takes a CSV file name")
    if not out.parent.is_dir():
        raise SongfeatError(out.parent, "output folder does not exist")
    state_path = out.with_name(out.name + ".state.json")
    api, token = spotify_api.resolve_endpoints(api_url, token_url)
    cid, secret = spotify_api.resolve_credentials(client_id, client_secret)

    # held for the whole run, as analyze -o holds its output: a second run into the same table (another genre, say)
    # read it before the first saved, then each overwrote the other's rows at every save
    lock = OutputLock(out)
    try:
        rows = read_table(out) if out.exists() else {}
        state = _load_state(state_path)
        before = len(rows)
        ckpt = _Checkpoint(out, state_path, rows, state)
        sp = spotify_api.make_client(cid, secret, api, token)
        report = CollectReport(out=out, state=state_path)

        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        from ..progress import bar as new_bar

        bar = new_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), show=progress)
        try:
            with bar:
                counts = {g: 0 for g in genre_list}
                for r in rows.values():
                    if r["genre"] in counts:
                        counts[r["genre"]] += 1
                task = bar.add_task("searching", total=per_genre * len(genre_list),
                                    completed=sum(min(n, per_genre) for n in counts.values()))
                for genre in genre_list:
                    bar.update(task, description=f"searching {genre}")
                    got = _search_genre(sp, genre, per_genre, counts, rows, state, ckpt, policy, require_preview,
                                        search_cap, first_year, on_message, lambda: bar.advance(task))
                    if got < per_genre:
                        report.short[genre] = got
                    ckpt.save()
                report.per_genre = {g: counts[g] for g in genre_list}
                if features:
                    _fetch_features(sp, rows, state, ckpt, policy, report, bar, on_message)
        finally:
            if rows or out.exists():  # a run that found nothing (bad credentials, say) leaves no empty table
                ckpt.save(force=True)
        report.tracks = len(rows)
        report.added = len(rows) - before
        report.with_features = sum(1 for r in rows.values() if r[LABEL_COLUMNS[0]] != "")
        return report
    finally:
        lock.release()


def _search_genre(
    sp: Any, genre: str, per_genre: int, counts: dict[str, int], rows: dict[str, dict[str, str]],
    state: dict[str, Any], ckpt: _Checkpoint, policy: RetryPolicy, require_preview: bool,
    search_cap: int, first_year: int, on_message: Callable[[str], None] | None, advance: Callable[[], None],
) -> int:
    """Page through one genre's queries until it has `per_genre` tracks or they run dry; return its count."""
    offsets: dict[str, int] = state["queries"]
    queries = genre_queries(genre, first_year)
    for q in queries:
        if counts[genre] >= per_genre or state["genre_done"].get(genre):
            break
        off = offsets.get(q, 0)
        while off >= 0 and counts[genre] < per_genre:
            limit = min(PAGE_SIZE, search_cap - off)
            if limit <= 0:
                off = -1
                break
            page = spotify_api.call(lambda q=q, limit=limit, off=off: sp.search(q=q, type="track", limit=limit, offset=off),
                                    f"search {q!r} offset {off}", policy, on_message)
            tracks = page.get("tracks") if isinstance(page, dict) else None
            if not isinstance(tracks, dict) or not isinstance(tracks.get("items"), list):
                raise SpotifyAPIError(f"search {q!r} offset {off}", "answer has no tracks.items list")
            items = tracks["items"]
            used = 0
            for item in items:
                used += 1
                tid = track_id_of(item)
                if tid is None or tid in rows:
                    continue
                if require_preview and not _text(item.get("preview_url")):
                    continue
                rows[tid] = track_row(item, genre)
                counts[genre] += 1
                advance()
                if counts[genre] >= per_genre:
                    break
            total = tracks.get("total")
            end = off + used
            if used == len(items) and (len(items) < limit or (isinstance(total, int) and end >= total)):
                if q == queries[0] and isinstance(total, int) and total <= search_cap:
                    state["genre_done"][genre] = True  # the plain query reached everything: no year slices
                end = -1
            off = end
            offsets[q] = off
            ckpt.save()
        offsets[q] = off
    return counts[genre]


def _fetch_features(
    sp: Any, rows: dict[str, dict[str, str]], state: dict[str, Any], ckpt: _Checkpoint, policy: RetryPolicy,
    report: CollectReport, bar: Any, on_message: Callable[[str], None] | None,
) -> None:
    """Fill the label columns from audio-features, 100 ids per request; stop with FEATURES_CLOSED on a 403."""
    tried = set(state["features_tried"])
    todo = [tid for tid, r in rows.items() if r[LABEL_COLUMNS[0]] == "" and tid not in tried]
    task = bar.add_task("audio features", total=len(todo))
    for batch in _chunks(todo, FEATURES_BATCH):
        def fetch(ids: list[str] = batch) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # spotipy flags the endpoint as deprecated
                try:
                    return sp.audio_features(ids)
                except TypeError:  # spotipy got no JSON and looked inside None: `call` retries a None
                    return None

        try:
            found = spotify_api.call(fetch, f"audio-features ({len(batch)} ids)", policy, on_message)
        except SpotifyAPIError as e:
            if e.status == 403:
                report.features_closed = True
                report.message = FEATURES_CLOSED
                return
            raise
        if not isinstance(found, list):
            raise SpotifyAPIError("audio-features", "answer is not a list of feature objects")
        by_id = {f["id"]: f for f in found if isinstance(f, dict) and isinstance(f.get("id"), str)}
        for tid in batch:
            if tid in by_id:
                _fill_labels(rows[tid], by_id[tid])
            if rows[tid][LABEL_COLUMNS[0]] == "":
                state["features_tried"].append(tid)  # Spotify has no (usable) features for it: don't ask again
        bar.advance(task, len(batch))
        ckpt.save()
