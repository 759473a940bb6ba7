"""Label tables: Spotify-style CSVs in their several schemas read into one normalised, validated schema.

Handled (sniffed from the header, never from the file name):

- the seed's ``all_tracks`` (track_id, track_name, track_artist, ... preview_url)
- Kaggle "1.2M songs" ``tracks_features.csv`` (id, name, album, album_id, artists, artist_ids, ...)
- Kaggle "Ultimate Spotify Tracks DB" (genre, artist_name, letter keys C/C#/..., Major/Minor,
  Excel-mangled time signatures such as "4-Apr" for 4/4, UTF-8 BOM, one id under several genres)
- Kaggle "600k tracks" (id, name, artists as a Python-list string, id_artists, release_date)
- ``spotify:track:<id>`` URIs and ``open.spotify.com/track/<id>`` URLs in the id column
- the scout's combined table, the previews' labels.csv, and FMA's Echo Nest table (numeric ids,
  a subset of the features, empty cells)

Every row is normalised to `NORMALISED_COLUMNS` (numbers as float64, NaN where unknown). Rows that
cannot be trusted are dropped and listed in `LabelTable.dropped` with a reason; Spotify's own
"not detected" sentinels (tempo 0, time signature 0 or 1) and values outside a column's range
(danceability 1.7, tempo -5) become NaN and are listed in `LabelTable.nulled` rather than costing
the row its other labels (`LabelTable.nulled_lines` says the out-of-range ones).

A table's ids are paired with an audio folder's files by `index_audio`, the one pairing `build`, `evaluate-audio`,
`train-heads` and the shared labelled sources use (`pair_labels_audio`, `pair_table`).
"""
from __future__ import annotations

import ast
import re
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import features
from ..audio import scan_inputs
from ..errors import SongfeatError, SongfeatWarning
from .cells import NA_WORDS, missing_id, parse_track_id, short_id

NORMALISED_COLUMNS: tuple[str, ...] = (
    "track_id", "name", "artists", "album", "genre", *features.LABEL_COLUMNS, "duration_ms", "popularity",
)
#: Columns of `NORMALISED_COLUMNS` that hold numbers (float64, NaN when unknown).
NUMERIC_COLUMNS: tuple[str, ...] = (*features.LABEL_COLUMNS, "duration_ms", "popularity")
#: Separator used when a track has several artists or genres.
LIST_SEP = "; "

# Accepted ranges for *labels*. They are the catalogue's ranges, widened only where Spotify's own
# data goes past its documentation: loudness above 0 dB occurs on clipped masters (up to +1.6 in
# the shared tables) and Echo Nest tempi reach 251 BPM.
LOUDNESS_MAX_LABEL = 3.0
TEMPO_MAX_LABEL = 300.0
FMA_ID_WIDTH = 6  # FMA audio files are named {track_id:06d}.mp3

_SPOTIFY_ID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])([0-9A-Za-z]{22})(?![0-9A-Za-z])")
_FREE_ID = re.compile(r"[^\s/\\\x00-\x1f\x7f]{1,200}")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # an id like -5 or 2.5 in a numbered table
_WHOLE = re.compile(r"(\d+)(?:\.0*)?")  # 2, or 2.0 as pandas writes the ids of a column with a blank (a float column)

_ALIASES: dict[str, tuple[str, ...]] = {
    "track_id": ("track_id", "id", "spotify_id", "track_uri", "uri", "trackid", "spotify_track_id"),
    "name": ("name", "track_name", "track", "title", "song_name", "song"),
    "artists": ("artists", "artist_name", "artist", "track_artist", "artists_names", "artist_names"),
    "album": ("album", "album_name", "track_album_name"),
    "genre": ("genre", "playlist_genre", "genre_title", "track_genre"),
    "duration_ms": ("duration_ms",),
    "popularity": ("popularity", "track_popularity"),
}
_PITCH = {"C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5, "E#": 5,
          "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11}
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
OUT_OF_RANGE = "out of range: "  # how a `nulled` reason for a value outside its column's range begins (not a sentinel)


@dataclass
class LabelTable:
    """A label file normalised: `frame` (one row per track), what was dropped and why, and where it came from."""

    frame: pd.DataFrame  # column track_id first, then NORMALISED_COLUMNS, then any extra metadata
    dropped: pd.DataFrame  # row (0-based data row in the file: line row + 2), track_id (as written), reason
    source: str  # the file read
    schema: str = "generic"  # which known schema was sniffed
    nulled: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["row", "track_id", "column", "value", "reason"]))
    unread: list[str] = field(default_factory=list)  # '<file>: column ... is not read (did you mean ...?)', one a column

    def __len__(self) -> int:
        return len(self.frame)

    def drop_counts(self) -> dict[str, int]:
        """Dropped rows counted by reason kind (the text before the first ':'), for reports."""
        if self.dropped.empty:
            return {}
        kinds = self.dropped["reason"].str.split(":", n=1).str[0]
        return {str(k): int(v) for k, v in kinds.value_counts().items()}

    def dropped_lines(self) -> list[str]:
        """One line per dropped row, '<file>: line N (<id>): <reason>', for warnings (N counts the header as line 1;
        a long id shortened, `short_id`). An empty or blank id cell names no id, '<file>: line N: <reason>', the reason
        saying so (it read '(nan)', pandas' empty cell)."""
        return [f"{self.source}: line {int(r.row) + 2}{_id_shown(r.track_id)}: {r.reason}"
                for r in self.dropped.itertuples()]

    def nulled_lines(self) -> list[str]:
        """One line per out-of-range cell read as missing, '<file>: line N (<id>): <column> <value> outside [lo, hi]: read
        as missing ...', for warnings: the row keeps its other labels, and the user must hear which value was not used
        (Spotify's own 'not detected' sentinels, tempo 0 and the like, are not said: they mean missing)."""
        bad = self.nulled[self._out_of_range()]
        return [f"{self.source}: line {int(r.row) + 2}{_id_shown(r.track_id)}: {r.reason.removeprefix(OUT_OF_RANGE)}: "
                "read as missing (the row's other labels are used)" for r in bad.itertuples()]

    def _out_of_range(self) -> pd.Series:
        """Which `nulled` cells held a value outside their column's range (OUT_OF_RANGE), not a sentinel for missing."""
        if self.nulled.empty:
            return pd.Series(False, index=self.nulled.index, dtype=bool)
        return self.nulled["reason"].str.startswith(OUT_OF_RANGE)

    def summary(self) -> dict:
        """Counts for a report or manifest: rows kept, dropped (by reason), values nulled (by reason)."""
        kinds = self.nulled["reason"].where(~self._out_of_range(),
                                            OUT_OF_RANGE + self.nulled["column"])  # one count a column, not a value
        nulled = {} if self.nulled.empty else {str(k): int(v) for k, v in kinds.value_counts().items()}
        return {"source": self.source, "schema": self.schema, "rows": len(self.frame),
                "dropped": int(len(self.dropped)), "dropped_by_reason": self.drop_counts(), "nulled_by_reason": nulled}


def _id_shown(raw: object) -> str:
    """' (<id>)' for a drop line, `short_id`; '' for an empty or blank id cell (NaN, as pandas reads it, or spaces)."""
    missing = raw is None or (isinstance(raw, float) and np.isnan(raw)) or not str(raw).strip()
    return "" if missing else f" ({short_id(raw)})"


def spotify_id_in(text: str) -> str | None:
    """The first stand-alone 22-character base-62 token in `text` (e.g. a file stem '<id>_preview')."""
    m = _SPOTIFY_ID_IN_TEXT.search(text)
    return m.group(1) if m else None


def _fma_id(raw: object) -> str | None:
    """FMA's numeric id as its audio files name it (zero-padded to 6 digits), from a whole number of 0 or more, also
    written as a float (`2.0`: pandas writes a column of ids so when one is blank); None if not one."""
    if isinstance(raw, (int, np.integer)):
        n = int(raw)
    elif isinstance(raw, float) and raw.is_integer():
        n = int(raw)
    elif isinstance(raw, str) and (m := _WHOLE.fullmatch(raw.strip())):
        # padded as text: int() refuses strings of over 4,300 digits (a ValueError from deep inside read_labels)
        return (m.group(1).lstrip("0") or "0").zfill(FMA_ID_WIDTH)
    else:
        return None
    return f"{n:0{FMA_ID_WIDTH}d}" if n >= 0 else None  # 0 too: a researcher's own clips are often numbered from 0


def _free_id(raw: object) -> str | None:
    """Any other non-empty id without whitespace or path separators (researchers' own ids), in Unicode NFC: a 'café'
    typed in a table and a 'café.wav' named on macOS (NFD) look alike and must pair."""
    if not isinstance(raw, str):
        return None
    s = unicodedata.normalize("NFC", raw.strip())
    return s if _FREE_ID.fullmatch(s) and s not in (".", "..") else None


def _numbered_id(raw: object) -> str | None:
    """An id in a table whose ids are mostly numbers: a whole number as FMA names its files (`_fma_id`), and any other
    text as the user's own id (`_free_id`: 'intro' among 1, 2, 3 pairs with intro.wav); a number that is not a whole
    one of 0 or more (-5, 2.5) is None."""
    n = _fma_id(raw)
    if n is not None or not isinstance(raw, str) or _NUMBER.fullmatch(raw.strip()):
        return n
    return _free_id(raw)


def _bad_id(raw: object, kind: str) -> str:
    """Why `read_labels` drops a row's id, read as ids of `kind` are (`normalise_id`)."""
    if not isinstance(raw, str) or not raw.strip():
        return "bad track_id: the id cell is empty"
    if missing_id(raw):
        return f"bad track_id: the id cell holds {raw.strip()!r}, a missing value written out"
    if kind == "spotify":
        return (f"bad track_id: {short_id(raw, quote=True)} is not a Spotify id (22 letters and digits), as most ids in "
                "this table are")
    if kind == "fma" and _NUMBER.fullmatch(raw.strip()):
        return (f"bad track_id: {short_id(raw, quote=True)} is not a whole number of 0 or more; most ids in this table "
                f"are numbers, read as FMA names files (2 pairs with {2:0{FMA_ID_WIDTH}d}.mp3)")
    return (f"bad track_id: {short_id(raw, quote=True)} cannot name an audio file (it holds whitespace, a slash or a "
            "control character)")


def _id_parser(values: pd.Series):
    """Pick how ids are read from what most of them look like: Spotify, FMA numbers (other text kept as the user's own
    ids), or free text."""
    sample = values.dropna().astype(str)
    sample = sample[~sample.map(missing_id)].head(2000)
    if len(sample) == 0:
        return parse_track_id, "spotify"
    spotify = sample.map(lambda v: parse_track_id(v) is not None).mean()
    numeric = sample.map(lambda v: _fma_id(v) is not None).mean()
    if spotify >= 0.5:
        return parse_track_id, "spotify"
    if numeric >= 0.5:
        return _numbered_id, "fma"
    return _free_id, "free"


def normalise_id(raw: object, kind: str = "spotify") -> str | None:
    """Normalise one id the way `read_labels` does for ids of `kind` ('spotify', 'fma' or 'free')."""
    return {"spotify": parse_track_id, "fma": _numbered_id, "free": _free_id}[kind](raw)


def index_audio(audio_dir: str | Path, ids: set[str], id_kind: str = "spotify",
                on_message: Callable[[str], None] | None = None) -> tuple[dict[str, Path], list[Path], int]:
    """Find each label id's audio file under `audio_dir`; returns (id -> path, unlabelled files, repeats).

    The one pairing `build` and `evaluate-audio` / `train-heads` (`pair_table`) share, so a folder pairs the
    same way in each: a file names its id by its stem, read as the labels' ids were read (`normalise_id`: '1.mp3' for
    FMA-style id 000001) or holding a Spotify id ('<id>_preview.mp3'). Files go in name order and the first for an id
    is used; the repeats (x.mp3 beside x.wav) are counted and said once. Inputs the walk refuses (broken or looping
    links, FIFOs, ...) are matched like files, so a labelled one fails later with its reason. A folder that cannot
    be listed, a repeat and the walk's notes go to `on_message` ('error: ...', 'warning: ...'); without it the first
    two are SongfeatWarnings.
    """
    audio_dir = Path(audio_dir)
    files, refused, notes = scan_inputs([audio_dir])
    for e in refused:
        if not e.reason.startswith("cannot list folder"):
            files.append(Path(e.path))
        elif on_message:
            on_message(f"error: {e}")
        else:
            warnings.warn(str(e), SongfeatWarning, stacklevel=3)
    for n in notes:
        if on_message:
            on_message(f"warning: {n}")
    files.sort(key=str)
    found: dict[str, Path] = {}
    unlabelled: list[Path] = []
    repeats = 0
    first_repeat = None
    for p in files:
        stem = unicodedata.normalize("NFC", p.stem)  # as `_free_id` reads the table's ids
        tid = stem if stem in ids else normalise_id(stem, id_kind)
        if tid not in ids:
            tid = spotify_id_in(stem)  # e.g. "<id>_preview.mp3"
        if tid is None or tid not in ids:
            unlabelled.append(p)
        elif tid in found:
            repeats += 1  # a second file for one id (x.mp3 and x.wav): the first, sorted, is used
            first_repeat = first_repeat or (tid, found[tid], p)
        else:
            found[tid] = p
    if first_repeat:  # said, not only counted: the user may have meant the other file
        tid, used, other = first_repeat
        message = (f"{audio_dir}: {repeats} audio file(s) repeat a labelled id and are not used; the first by name is "
                   f"(e.g. {short_id(tid)}: {used.name} used, {other.name} not)")
        if on_message:
            on_message(f"warning: {message}")
        else:
            warnings.warn(message, SongfeatWarning, stacklevel=3)
    return found, unlabelled, repeats


def _scalar(v: object) -> float | str:
    """A cell as a float (NaN when missing or blank) or, when it is text, the stripped text to parse."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    s = str(v).strip()
    return np.nan if s == "" else s


def _parse_key(v: object) -> float:
    """Pitch class 0-11 (or -1) from a number or a letter name (C, C#, Db, F♯ ...); NaN if missing; raises if unreadable."""
    s = _scalar(v)
    if not isinstance(s, str):
        return s
    s = s.replace("♯", "#").replace("♭", "b")
    try:
        return float(s)
    except ValueError:
        pass
    letter = s.split()[0]
    key = letter[0].upper() + letter[1:].upper()
    if key in _PITCH:
        return float(_PITCH[key])
    raise ValueError(f"unreadable key {v!r}")


def _parse_mode(v: object) -> float:
    """1 major / 0 minor from a number or Major/Minor/maj/min; NaN if missing; raises if unreadable."""
    s = _scalar(v)
    if not isinstance(s, str):
        return s
    s = s.lower()
    if s in ("major", "maj", "1", "1.0"):
        return 1.0
    if s in ("minor", "min", "0", "0.0"):
        return 0.0
    raise ValueError(f"unreadable mode {v!r}")


def _parse_time_signature(v: object) -> float:
    """Beats per bar from a number, '3/4', or Excel's date mangling of it ('4-Mar' = 3/4, 'Mar-04'); raises if unreadable."""
    s = _scalar(v)
    if not isinstance(s, str):
        return s
    try:
        return float(s)
    except ValueError:
        pass
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", s)
    if m:
        return float(m.group(1))
    # Excel read "3/4" as the date 4 March and wrote it back as "4-Mar": the month is the numerator.
    m = re.fullmatch(r"(\d+)-([A-Za-z]{3})[a-z]*", s) or re.fullmatch(r"([A-Za-z]{3})[a-z]*-(\d+)", s)
    if m:
        month = m.group(2) if m.group(1).isdigit() else m.group(1)
        if month.lower() in _MONTHS:
            return float(_MONTHS[month.lower()])
    raise ValueError(f"unreadable time_signature {v!r}")


def _parse_artists(v: object) -> object:
    """Artists as one string joined by '; ' (the 600k schema writes a Python list as text)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            items = ast.literal_eval(s)
            if isinstance(items, (list, tuple)):
                return LIST_SEP.join(str(x).strip() for x in items if str(x).strip()) or None
        except (ValueError, SyntaxError):
            pass
    return s or None


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    """The first column (case-insensitively) among `names`."""
    lower = {c.lower().strip(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _sniff_schema(cols: set[str]) -> str:
    """Name the known schema a header belongs to (for provenance; parsing itself is by column)."""
    if {"genre", "artist_name", "track_name", "track_id"} <= cols:
        return "kaggle-ultimate"
    if {"id", "artists", "id_artists"} <= cols:
        return "kaggle-600k"
    if {"id", "album_id", "artist_ids"} <= cols:
        return "kaggle-1.2m"
    if {"track_id", "track_name", "track_artist"} <= cols:
        return "seed"
    if {"artist", "track", "track_id", "type"} <= cols:
        return "kattapriyatham"
    if {"label_source", "origin"} <= cols:
        return "previews"
    if "source" in cols and "track_id" in cols:
        return "combined"
    if "track_id" in cols and not ({"loudness", "key", "mode"} & cols):
        return "fma-echonest"
    return "generic"


_BINARY_KINDS = (  # (magic bytes, what the file is, what to do): a label file saved or fetched in the wrong format
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook?)", "save it as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook", "save it as CSV"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it first"),
    (b"PAR1", "a Parquet file", "export it as CSV"),
    (b"%PDF", "a PDF document", "export the table as CSV"),
)


def _check_text(path: Path) -> str:
    """The file's text encoding ('utf-16' for Excel's "Unicode Text", else 'utf-8-sig'); SongfeatError for a binary file."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise SongfeatError(path, f"cannot read ({e.strerror or e})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    for magic, what, todo in _BINARY_KINDS:
        if head.startswith(magic):
            raise SongfeatError(path, f"is {what}, not a CSV text file; {todo}")
    controls = sum(head.count(bytes([c])) for c in (*range(9), *range(14, 32)))
    if b"\x00" in head.split(b"\n", 1)[0] or controls > 0.05 * len(head):  # a stray NUL in a row is that row's problem
        raise SongfeatError(path, "is a binary file, not a CSV text file")
    return "utf-8-sig"


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as text (so ids keep leading zeros), stripping a UTF-8 BOM; SongfeatError when it cannot.

    index_col=False: a row ending in a delimiter (some exporters end every line with ',') must not shift every
    value one column left by making the ids the index.
    """
    if not path.exists():
        raise SongfeatError(path, "no such file")
    if path.is_dir():
        raise SongfeatError(path, "is a directory, not a CSV file")
    if not path.is_file():  # a FIFO blocked the read for ever, a pipe (<(...), /dev/stdin) was drained by the first read
        raise SongfeatError(path, "is a pipe or device, not a regular CSV file; save the labels to a file and name that")
    encoding = _check_text(path)
    try:
        sep = _sniff_sep(path, encoding)
        df = _parse_csv(path, sep, encoding)
    except UnicodeDecodeError:
        if encoding == "utf-16":
            raise SongfeatError(path, "not a readable UTF-16 text file") from None
        encoding = "latin-1"
        try:
            sep = _sniff_sep(path, encoding)
            df = _parse_csv(path, sep, encoding)
        except Exception as e:  # pragma: no cover - latin-1 decodes any byte
            raise SongfeatError(path, f"not a readable CSV ({e})") from None
    except pd.errors.EmptyDataError:
        raise SongfeatError(path, "empty file (no header row)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise SongfeatError(path, f"not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    _check_duplicate_columns(path, encoding, sep)
    df.attrs["encoding"] = encoding
    df.attrs["sep"] = sep
    return df


def _parse_csv(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    """pandas' read of the file; a row with more fields than the header (an unquoted delimiter in a name) is read
    into spare columns, dropped afterwards, instead of failing the whole file: read_labels drops that row alone."""
    import csv

    # every cell as written but blanks: "NA" or "None" may be a user's own id; read_labels masks NA_WORDS elsewhere
    # (and in the id column only NAN_WORDS, `missing_id`)
    opts = dict(sep=sep, encoding=encoding, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True,
                index_col=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)  # extra fields in the first row: flagged in read_labels
        try:
            return pd.read_csv(path, **opts)
        except pd.errors.ParserError as e:
            if "Expected" not in str(e):
                raise
        with open(path, newline="", encoding=encoding, errors="replace") as f:
            rows = csv.reader(f, delimiter=sep)
            header = next(rows, [])
            widest = max((len(r) for r in rows), default=0)
        if widest <= len(header):
            raise pd.errors.ParserError("rows do not split into the header's fields")
        names = [*header, *(f"\0extra{k}" for k in range(widest - len(header)))]
        df = pd.read_csv(path, header=None, skiprows=1, names=names, **opts)
        return df[df.columns[:len(header)]]


def _check_duplicate_columns(path: Path, encoding: str, sep: str) -> None:
    """Refuse a header naming a column read here twice (e.g. two 'energy' after a merge): which one is right is unknowable."""
    import csv

    known = {n for names in _ALIASES.values() for n in names} | set(NUMERIC_COLUMNS)
    with open(path, newline="", encoding=encoding, errors="replace") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    where: dict[str, list[int]] = {}
    for k, c in enumerate(header, start=1):
        name = c.strip().lstrip("\ufeff").lower()
        if name in known:
            where.setdefault(name, []).append(k)
    for name, cols in where.items():
        if len(cols) > 1:
            raise SongfeatError(path, f"column {name!r} appears {len(cols)} times in the header (columns "
                                      f"{', '.join(map(str, cols))}); keep one")


def _sniff_sep(path: Path, encoding: str) -> str:
    """The delimiter of the header line: ',' unless ';' (European Excel) or a tab is more frequent."""
    with open(path, encoding=encoding, errors="strict") as f:
        header = f.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] > counts[","] else ","


def _short_rows(path: Path, encoding: str, width: int, sep: str = ",") -> dict[int, int]:
    """Data rows with fewer fields than the header (a file cut off mid-row), or with values beyond it (an unquoted
    delimiter inside a value shifts the rest): {row: fields}. Empty trailing fields (a line ending in ',') are fine."""
    import csv

    short: dict[int, int] = {}
    with open(path, newline="", encoding=encoding, errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        next(reader, None)
        i = 0
        for rec in reader:
            if not rec or all(not x.strip() for x in rec):  # pandas skips blank lines too
                continue
            if len(rec) < width or any(x.strip() for x in rec[width:]):
                short[i] = len(rec)
            i += 1
    return short


def _unread_columns(path: Path, cols: list[str], present: list[str]) -> list[str]:
    """Columns whose name is near a feature's but is none (a misspelt 'valance', 'liveliness'), one line each: their
    values are not read, and a user must hear so rather than lose that feature's labels in silence."""
    import difflib

    known = {n for names in _ALIASES.values() for n in names} | set(NUMERIC_COLUMNS)
    known |= {"year", "release_date", "explicit", "id_artists", "artist_ids", "preview_url", "source", "label_source"}
    out = []
    for c in cols:
        name = c.lower().strip()
        if name in known:
            continue
        near = difflib.get_close_matches(name, features.LABEL_COLUMNS, n=1, cutoff=0.8)
        if near and near[0] not in present:
            out.append(f"{path}: column {c!r} is not read: no feature has that name (did you mean {near[0]!r}?)")
    return out


def _float_column(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers from text; returns (values, mask of cells that were present but not numbers)."""
    num = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & raw.astype(str).str.strip().ne("") & num.isna()
    return num.astype("float64"), bad


def read_labels(path: str | Path, *, id_column: str | None = None) -> LabelTable:
    """Read a Spotify-style label CSV (any schema above) into the normalised schema, dropping bad rows with reasons."""
    path = Path(path)
    raw = _read_csv(path)
    cols = list(raw.columns)
    lower_cols = {c.lower() for c in cols}
    schema = _sniff_schema(lower_cols)
    id_col = id_column if id_column is not None else _find(cols, _ALIASES["track_id"])
    if id_column is not None and id_column not in cols:
        raise SongfeatError(path, f"no column {id_column!r} (columns: {', '.join(cols)})")
    label_cols = {name: _find(cols, (name,)) for name in features.LABEL_COLUMNS}
    present = [n for n, c in label_cols.items() if c is not None]
    if id_col is None or not present:
        what = "no track id column (track_id, id, uri ...)" if id_col is None else "no Spotify feature columns (danceability, energy, ...)"
        raise SongfeatError(path, f"unknown label schema: {what}; columns: {', '.join(cols[:20]) or '(none)'}")
    raw = raw.apply(lambda col: col if col.name == id_col else col.mask(col.isin(NA_WORDS)))

    n = len(raw)
    reasons: list[str | None] = [None] * n

    def flag(mask: np.ndarray | pd.Series, reason_of) -> None:
        for i in np.flatnonzero(np.asarray(mask)):
            if reasons[i] is None:
                reasons[i] = reason_of(i)

    short = _short_rows(path, raw.attrs["encoding"], len(cols), raw.attrs["sep"])
    if raw.attrs["sep"] != ",":  # files saved with ';' (European Excel) usually write decimal commas: 0,5
        for c in cols:
            if c.lower() in NUMERIC_COLUMNS:
                raw[c] = raw[c].str.replace(",", ".", regex=False)
    if short:
        rows = np.array(sorted(short))
        rows = rows[rows < n]
        flag(np.isin(np.arange(n), rows), lambda i: f"{'truncated row' if short[i] < len(cols) else 'extra fields'}: "
                                                     f"{short[i]} of {len(cols)} fields")

    parse_id, id_kind = _id_parser(raw[id_col])
    ids = raw[id_col].map(lambda v: parse_id(v) if isinstance(v, str) and not missing_id(v) else None)
    flag(ids.isna(), lambda i: _bad_id(raw[id_col].iat[i], id_kind))

    out = pd.DataFrame({"track_id": ids})
    for meta in ("name", "album", "genre"):
        c = _find(cols, _ALIASES[meta])
        out[meta] = raw[c].str.strip() if c is not None and c != id_col else None
    c = _find(cols, _ALIASES["artists"])
    out["artists"] = raw[c].map(_parse_artists) if c is not None else None

    parsers = {"key": _parse_key, "mode": _parse_mode, "time_signature": _parse_time_signature}
    for name in NUMERIC_COLUMNS:
        c = label_cols.get(name) or _find(cols, _ALIASES.get(name, (name,)))
        if c is None:
            out[name] = np.nan
            continue
        if name in parsers:
            vals = np.full(n, np.nan)
            for i, v in enumerate(raw[c].to_numpy(dtype=object)):
                try:
                    vals[i] = parsers[name](v)
                except ValueError as e:
                    if reasons[i] is None:
                        reasons[i] = f"unreadable value: {e}"
            out[name] = vals
        else:
            vals, bad = _float_column(raw[c])
            flag(bad, lambda i, name=name, c=c: f"unreadable value: {name} {raw[c].iat[i]!r} is not a number")
            out[name] = vals

    # Spotify's "not detected" sentinels: the row keeps its other labels, the value becomes NaN.
    nulled_rows: list[dict] = []
    unused: dict[int, list[str]] = {}  # row -> its out-of-range cells nulled ('danceability 1.7 outside [0, 1]')

    def null(mask: pd.Series, column: str, reason: str, out_of_range: bool = False) -> None:
        """Make these cells NaN, listed in `nulled` with `reason`; `out_of_range`, with 'out of range: <column> <value>
        <reason>' (OUT_OF_RANGE: a value the user must hear was not used, not a sentinel meaning missing), and in
        `unused` as '<column> <value> <reason>'."""
        for i in np.flatnonzero(mask.to_numpy()):
            if reasons[i] is None:
                value = float(out[column].iat[i])
                cell = f"{column} {value:g} {reason}"
                nulled_rows.append({"row": int(i), "track_id": out["track_id"].iat[i], "column": column, "value": value,
                                    "reason": OUT_OF_RANGE + cell if out_of_range else reason})
                if out_of_range:
                    unused.setdefault(int(i), []).append(cell)
        out.loc[mask, column] = np.nan

    null(out["tempo"] == 0, "tempo", "tempo 0 (no tempo detected)")
    null(out["time_signature"].isin([0.0, 1.0]), "time_signature", "time_signature 0/1 (no metre detected)")
    null(out["duration_ms"] <= 0, "duration_ms", "duration_ms not positive")

    # Ranges: the catalogue's, widened only as documented at the top of the module.
    ranges = {f: (features.BY_NAME[f].low, features.BY_NAME[f].high) for f in features.LABEL_COLUMNS}
    ranges["loudness"] = (features.BY_NAME["loudness"].low, LOUDNESS_MAX_LABEL)
    ranges["tempo"] = (features.BY_NAME["tempo"].low, TEMPO_MAX_LABEL)
    ranges["popularity"] = (0.0, 100.0)
    # A value outside them is that cell's problem: it becomes NaN (listed in `nulled`, said by `nulled_lines`) and the
    # row keeps its other labels; a row left with none is dropped, naming the cells.
    for name, (lo, hi) in ranges.items():
        v = out[name]
        null(v.notna() & ((v < lo) | (v > hi)), name, f"outside [{lo:g}, {hi:g}]", out_of_range=True)
    for name in ("key", "mode", "time_signature"):
        v = out[name]
        null(v.notna() & (v != v.round()), name, "is not a whole number", out_of_range=True)
    flag(out[list(present)].isna().all(axis=1), lambda i: (
        f"{OUT_OF_RANGE}{', '.join(unused[i])}, and no other feature is labelled" if i in unused
        else "no labels: every feature cell is empty"))

    # Extra metadata worth keeping (the rest of the file's columns are left out on purpose).
    extras = {"year": ("year",), "release_date": ("release_date",), "explicit": ("explicit",),
              "artist_ids": ("id_artists", "artist_ids"), "preview_url": ("preview_url",), "label_source": ("source", "label_source")}
    for name, names in extras.items():
        c = _find(cols, names)
        if c is not None:
            out[name] = raw[c]

    # Duplicate ids (Kaggle lists one track under each of its genres): the first *usable* row is kept, with all genres
    # (a usable row repeating one dropped for a bad value is no duplicate: it was once dropped as one of itself).
    valid = pd.Series([r is None for r in reasons])
    dup = valid & out["track_id"].where(valid).duplicated(keep="first") & out["track_id"].notna()
    if dup.any():
        tids = out["track_id"].to_numpy(dtype=object)
        valid_np = valid.to_numpy()
        first_row: dict[str, int] = {}
        genres: dict[str, list[str]] = {}
        gen = out["genre"].to_numpy(dtype=object)
        for i in np.flatnonzero(valid_np):
            t = tids[i]
            first_row.setdefault(t, int(i))
            if isinstance(gen[i], str) and gen[i] not in genres.setdefault(t, []):
                genres[t].append(gen[i])
        if genres:
            firsts = np.array(sorted(first_row.values()))
            out.loc[firsts, "genre"] = [LIST_SEP.join(genres.get(tids[i], [])) or None for i in firsts]
        lab = out[list(features.LABEL_COLUMNS)].to_numpy(dtype=float)
        for i in np.flatnonzero(dup.to_numpy()):
            j = first_row[tids[i]]
            same = np.allclose(lab[i], lab[j], equal_nan=True)
            reasons[i] = f"duplicate track_id: same as line {j + 2}" + ("" if same else " but labels differ (first kept)")

    keep = np.array([r is None for r in reasons], dtype=bool)  # bool even for a header-only file (no rows)
    dropped = pd.DataFrame({
        "row": np.flatnonzero(~keep).astype(int),
        "track_id": raw[id_col].to_numpy(dtype=object)[~keep],
        "reason": [r for r in reasons if r is not None],
    })
    frame = out.loc[keep].reset_index(drop=True)
    frame = frame[[*NORMALISED_COLUMNS, *[c for c in frame.columns if c not in NORMALISED_COLUMNS]]]
    for name in NUMERIC_COLUMNS:
        frame[name] = frame[name].astype("float64")
    nulled = pd.DataFrame(nulled_rows, columns=["row", "track_id", "column", "value", "reason"])
    nulled = nulled[nulled["row"].isin(np.flatnonzero(keep))].reset_index(drop=True)
    frame.attrs["id_kind"] = id_kind
    return LabelTable(frame=frame, dropped=dropped, source=str(path), schema=schema, nulled=nulled,
                      unread=_unread_columns(path, cols, present))


def pair_labels_audio(labels_csv: str | Path, audio_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Labels joined to audio files by track id (= file stem); returns (rows with a 'path' column, ids without audio)."""
    return pair_table(read_labels(labels_csv).frame, audio_dir)


def pair_table(table: pd.DataFrame, audio_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """`pair_labels_audio` for a label frame already read: files are found as `build` finds them
    (`index_audio`), a second file for one id said in a SongfeatWarning and the first by name used."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise SongfeatError(audio_dir, "audio folder not found" if not audio_dir.exists() else "not a folder")
    ids = table["track_id"].astype(str)
    found, _unlabelled, _repeats = index_audio(audio_dir, set(ids), table.attrs.get("id_kind", "spotify"))
    table = table.assign(path=[str(found[t]) if t in found else None for t in ids])
    missing = table.loc[table["path"].isna(), "track_id"].astype(str).tolist()
    return table.dropna(subset=["path"]).reset_index(drop=True), missing
