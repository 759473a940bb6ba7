"""The feature catalogue: every feature songfeat reports, its range and how it is obtained.

This is the one place that lists targets. Everything else (models, JSON output, label tables)
asks this module instead of spelling feature names again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only when a model's inputs are built: `songfeat --help` loads no numpy
    import numpy as np

SPOTIFY_ID = re.compile(r"[0-9A-Za-z]{22}")  # a Spotify track id: 22 base-62 characters


@dataclass(frozen=True)
class Feature:
    """One Spotify audio feature: name, value range, and whether we learn or measure it."""

    name: str
    low: float
    high: float
    kind: str  # "learned": predicted by a model; "measured": computed by signal processing
    integer: bool = False
    doc: str = ""
    absent: float | None = None  # a value outside [low, high] that means "none found" and is reported as it is


FEATURES: tuple[Feature, ...] = (
    Feature("danceability", 0.0, 1.0, "learned", doc="how suitable for dancing (tempo, rhythm stability, beat strength)"),
    Feature("energy", 0.0, 1.0, "learned", doc="perceived intensity and activity"),
    Feature("speechiness", 0.0, 1.0, "learned", doc="presence of spoken words"),
    Feature("acousticness", 0.0, 1.0, "learned", doc="confidence the track is acoustic"),
    Feature("instrumentalness", 0.0, 1.0, "learned", doc="likelihood the track has no vocals"),
    Feature("valence", 0.0, 1.0, "learned", doc="musical positiveness"),
    Feature("liveness", 0.0, 1.0, "learned", doc="presence of an audience"),
    Feature("tempo", 0.0, 250.0, "measured", doc="beats per minute"),
    Feature("loudness", -60.0, 0.0, "measured", doc="overall loudness in dB, Spotify's scale"),
    Feature("key", -1, 11, "measured", integer=True, doc="pitch class of the key, -1 when none is detected"),
    Feature("mode", 0, 1, "measured", integer=True, doc="1 major, 0 minor"),
    Feature("time_signature", 3, 7, "measured", integer=True, absent=0,
            doc="beats per bar (3 to 7 means 3/4 to 7/4; 0 when there is no beat, tempo 0)"),
    Feature("duration_ms", 0, 2**31 - 1, "measured", integer=True, doc="length of the audio in milliseconds"),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

#: The seven features a model predicts, in Spotify's usual order.
LEARNED: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "learned")
#: The five the seed report predicted.
SEED_TARGETS: tuple[str, ...] = ("danceability", "energy", "speechiness", "acousticness", "instrumentalness")
#: The seed's numeric-model inputs, taken from a label table.
SEED_NUMERIC_INPUTS: tuple[str, ...] = ("valence", "tempo", "loudness", "key", "mode", "time_signature")
#: Numeric inputs available from the audio alone (valence is a target, not a measurement).
MEASURED_NUMERIC_INPUTS: tuple[str, ...] = ("tempo", "loudness", "key", "mode", "time_signature")
#: Every labelled column of Spotify's audio-features object (the twelve a label table carries).
LABEL_COLUMNS: tuple[str, ...] = LEARNED + ("tempo", "loudness", "key", "mode", "time_signature")

#: Keys of Spotify's audio-features JSON, in the order the Web API returned them.
SPOTIFY_KEYS: tuple[str, ...] = (
    "danceability", "energy", "key", "loudness", "mode", "speechiness", "acousticness",
    "instrumentalness", "liveness", "valence", "tempo", "type", "id", "uri", "track_href",
    "analysis_url", "duration_ms", "time_signature",
)


PITCH_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")  # Spotify's key 0..11


def key_name(key: int, mode: int) -> str | None:
    """Spotify's (key, mode) as a name, e.g. (1, 0) -> "C# minor"; None when there is no key (-1)."""
    if not 0 <= int(key) <= 11:
        return None
    return f"{PITCH_NAMES[int(key)]} {'major' if int(mode) == 1 else 'minor'}"


def camelot(key: int, mode: int) -> str | None:
    """The Camelot wheel code DJs mix by, e.g. C major "8B", A minor "8A" (relative keys share a number,
    a step round the wheel is a fifth); None when there is no key (-1)."""
    if not 0 <= int(key) <= 11:
        return None
    major = int(key) if int(mode) == 1 else (int(key) + 3) % 12  # a minor key sits on its relative major's number
    return f"{(7 * major + 7) % 12 + 1}{'B' if int(mode) == 1 else 'A'}"


def check_targets(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return `names` as a tuple after checking each is a known feature; raise ValueError naming the bad one."""
    out = []
    for n in names:
        if n not in BY_NAME:
            raise ValueError(f"unknown feature {n!r}; known: {', '.join(BY_NAME)}")
        out.append(n)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate feature in {out}")
    return tuple(out)


#: Spotify's time_signature where there is no beat: every one of the 105 rows with tempo 0 in the catalogue tables of
#: ../shared/data/spotify-features has 0 (label tables read 0 and 1 as "no metre", an empty label).
NO_METRE = 0
#: What a model reads for NO_METRE: models learnt from label rows that all have a metre (3-5), and every clip without
#: a beat was fed 4 before songfeat reported 0, so their inputs, and so their answers, stay as they were.
NO_METRE_INPUT = 4.0


def model_numeric(names: tuple[str, ...] | list[str], values: np.ndarray | list[float]) -> np.ndarray:
    """Measured values (one row, or rows x `names`) as a model reads them: time_signature's NO_METRE becomes
    NO_METRE_INPUT. The one place that mapping lives, for training and prediction alike."""
    import numpy as np

    out = np.array(values, dtype=values.dtype if isinstance(values, np.ndarray) and values.dtype.kind == "f" else np.float64)
    if "time_signature" in names:
        col = out[..., list(names).index("time_signature")]
        col[col == NO_METRE] = NO_METRE_INPUT
    return out


def clip_value(name: str, value: float) -> float:
    """Clamp a value into its feature's range (and round integer features); a feature's `absent` value (time
    signature 0: no beat) is kept as it is."""
    f = BY_NAME[name]
    if f.absent is not None and float(value) == f.absent:
        return float(f.absent)
    v = min(max(float(value), f.low), f.high)
    return float(round(v)) if f.integer else v


def is_spotify_id(s: object) -> bool:
    """True for a Spotify track id (22 base-62 characters), the `id` of Spotify's JSON."""
    return isinstance(s, str) and SPOTIFY_ID.fullmatch(s) is not None
