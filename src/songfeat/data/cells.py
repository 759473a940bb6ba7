"""What a table's cells mean when they hold no value, how a Spotify id is read from a cell, and how an id is echoed:
the rules `labels` and `download` share.

No pandas here: `songfeat download` runs on the 'collect' extra alone.
"""
from __future__ import annotations

import re

from ..features import is_spotify_id

_URI = re.compile(r"^spotify:track:([0-9A-Za-z]+)$")
_URL = re.compile(r"^https?://open\.spotify\.com/(?:intl-[a-z-]+/)?track/([0-9A-Za-z]+)(?:[/?#].*)?$")

ID_SHOWN = 64  # characters of an id a message shows whole; a longer one is shortened (`short_id`)

# Spellings of a missing *number* that software writes out (Python's and numpy's nan, pandas' <NA>, the Windows C
# runtime's 1.#QNAN): no one names a track so, so they are missing even in an id column, where a NaN id written out
# was downloaded as nan.mp3 and kept as the label id 'nan'.
NAN_WORDS = frozenset({"-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "NaN", "nan"})
# pandas' default words for a missing value (NAN_WORDS and "NA", "null", "None", "n/a", "#N/A", ...): missing in a label
# column (and a URL column), but only NAN_WORDS are in the id column, where "NA", "None" or "null" were real ids of a
# user's own table dropped as "the id cell is empty"
NA_WORDS = NAN_WORDS | frozenset({"#N/A", "#N/A N/A", "#NA", "N/A", "NA", "NULL", "None", "n/a", "null"})


def missing_id(cell: str) -> bool:
    """Whether an id cell names no track: blank, or a NaN written out (`NAN_WORDS`). The one rule `read_labels` and
    `download` share, so a label id and the file downloaded for it (`<id>.mp3`) cannot disagree."""
    s = cell.strip()
    return not s or s in NAN_WORDS


def missing_value(cell: str) -> bool:
    """Whether a value cell that is never a name (`download`'s preview URL) is empty: blank or one of `NA_WORDS` in any
    case ('none', 'NULL'), as a table saved by pandas or a spreadsheet writes it."""
    return cell.strip().lower() in _NA_LOWER


_NA_LOWER = frozenset({"", *(w.lower() for w in NA_WORDS)})


def unwrap_track_id(cell: str) -> str:
    """The id a `spotify:track:<id>` URI or an `open.spotify.com/track/<id>?si=...` URL names, else the cell stripped:
    the one reading of an id cell `download` (which names the file `<id>.mp3`) and `parse_track_id` (labels) share."""
    s = cell.strip()
    m = _URI.match(s) or _URL.match(s)
    return m.group(1) if m else s


def parse_track_id(raw: object) -> str | None:
    """A bare Spotify id from an id, a spotify:track: URI or an open.spotify.com URL; None otherwise."""
    if not isinstance(raw, str):
        return None
    s = unwrap_track_id(raw)
    return s if is_spotify_id(s) else None


def short_id(tid: object, quote: bool = False) -> str:
    """An id as messages echo it: whole up to ID_SHOWN characters, else its first and last characters around '...' and
    its length, so a cell of thousands of digits is not printed whole (twice, in a drop line). `quote`: as repr() shows
    it, the length outside the quotes."""
    text = str(tid)
    if len(text) <= ID_SHOWN:
        return repr(tid) if quote else text
    cut = f"{text[:24]}...{text[-12:]}"
    return f"{repr(cut) if quote else cut} ({len(text)} characters)"
