"""The vocal gate: raise instrumentalness where both taggers say "no voice", a cue the heads under-use.

Spotify's instrumentalness "predicts whether a track contains no vocals; values above 0.5 are intended to represent
instrumental tracks". The labelled previews hold almost no instrumentals (3 of 138), so the heads learn that music the
taggers call rock, folk or classical is sung, and a loud piano piece reads 0.37. The gate is a two-input logistic
P(instrumental) on log(probability + 0.001) of two clip-level tag cues, chosen by their meaning:

* `voice`: the largest of the MTT tagger's voice words (vocal, singing, voice, male/female vocal, choir, ...);
* `instrumental`: the MSD tagger's "instrumental" tag (last.fm listeners' word for music without a voice).

It is fitted on the training previews (Spotify label > 0.5) and the behaviour fitting half's instrumental (1) and sung
or spoken (0) clips, never on FMA (Echo Nest's instrumentalness is another annotator's, see `songfeat.sources`). Where
P >= `RAMP`[1] the clip's instrumentalness becomes at least `value` (the median of Spotify's catalogue table over its
tracks above 0.5, without the labelled clips: 0.875), near the median of the mixture "instrumental with probability P",
which is what absolute error rewards; that median jumps at P = 0.5, but there it is a coin toss (any value between the
heads' and `value` has nearly the same expected error), so between `RAMP`[0] and `RAMP`[1] the value rises on a
straight line instead: the jump made a clip's instrumentalness swing 0.875 -> 0.54 between its FLAC and its AAC. It
never lowers a prediction. Inputs are read from the heads' own evidence rows, so training and `analyze` see the same numbers.
"""
from __future__ import annotations

import numpy as np

VOICE_WORDS = ("vocal", "vocals", "singing", "voice", "male vocal", "female vocal", "male voice", "female voice", "woman",
               "man", "male", "female", "choir", "choral", "opera")
INSTRUMENTAL_TAG = "instrumental"
INPUTS = ("mtt_voice_max", "msd_instrumental")
EPS = 1e-3
FEATURE = "instrumentalness"


def parts(lay: list[dict]) -> list[dict]:
    """The leading parts of an evidence layout the gate reads: the taggers' tag log-odds (`heads.DEFAULT_PARTS`)."""
    out = []
    for part in lay:
        if part["block"] != "tagger" or part["transform"] != "logit":
            break
        out.append(part)
    return out


def _tag_columns(lay: list[dict]) -> tuple[list[int], int]:
    """Columns of the heads' evidence rows holding the MTT voice words' and the MSD "instrumental" tag's logits."""
    from .tagger import MSD_TAGS, MTT_TAGS

    voice, instr, col = None, None, 0
    for part in parts(lay):
        if part["name"] == "mtt_tags":
            voice = [col + MTT_TAGS.index(w) for w in VOICE_WORDS]
        elif part["name"] == "msd_tags":
            instr = col + MSD_TAGS.index(INSTRUMENTAL_TAG)
        col += part["stop"] - part["start"]
    if voice is None or instr is None:
        raise ValueError("the vocal gate needs the taggers' msd_tags and mtt_tags (logit) at the start of the evidence layout")
    return voice, instr


def inputs(evidence: np.ndarray, weights: np.ndarray | None, lay: list[dict]) -> np.ndarray:
    """One clip's gate inputs [voice, instrumental] from its evidence rows [W, D] (duration-weighted over windows)."""
    voice, instr = _tag_columns(lay)
    p = 1 / (1 + np.exp(-np.asarray(evidence, dtype=np.float64)[:, voice + [instr]]))
    mean = np.average(p, axis=0, weights=weights)
    return np.array([mean[:-1].max(), mean[-1]])


def typical_value(catalogue: np.ndarray) -> float:
    """The median of the catalogue's instrumentalness values above 0.5: what the gate sets an instrumental clip to."""
    y = np.asarray(catalogue, dtype=float)
    y = y[np.isfinite(y) & (y > 0.5)]
    if not len(y):
        raise ValueError("the catalogue table has no instrumentalness above 0.5")
    return float(np.median(y))


def fit(x: np.ndarray, instrumental: np.ndarray, value: float) -> dict:
    """The gate's logistic on inputs [N, 2] and 0/1 targets (scikit-learn's default L2, C = 1), raising to `value`
    (`typical_value`): a JSON-ready dict."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(instrumental, dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError("the vocal gate needs instrumental and sung clips among its fitting rows")
    lr = LogisticRegression().fit(np.log(np.asarray(x, dtype=float) + EPS), y)
    return {"inputs": list(INPUTS), "intercept": float(lr.intercept_[0]), "coef": [float(c) for c in lr.coef_[0]],
            "value": float(value), "feature": FEATURE, "fitting_rows": {"instrumental": int(y.sum()), "sung": int(len(y) - y.sum())}}


def probability(gate: dict, x: np.ndarray) -> np.ndarray:
    """P(instrumental) of gate inputs [N, 2] (or one clip's [2])."""
    z = gate["intercept"] + np.log(np.atleast_2d(np.asarray(x, dtype=float)) + EPS) @ np.asarray(gate["coef"])
    return 1 / (1 + np.exp(-z))


RAMP = (0.35, 0.65)  # P below: unchanged; above: at least `value`; between: a straight line (chosen a priori, symmetric)


def apply(gate: dict, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Instrumentalness values [N] after the gate: at least `value` where P >= RAMP[1], unchanged where P <= RAMP[0],
    on the line between in between; never lowered."""
    v = np.asarray(values, dtype=float)
    t = np.clip((probability(gate, x) - RAMP[0]) / (RAMP[1] - RAMP[0]), 0.0, 1.0)
    return v + (np.maximum(v, gate["value"]) - v) * t


def apply_clip(gate: dict | None, learned: np.ndarray, targets, evidence: np.ndarray, weights, lay: list[dict]) -> np.ndarray:
    """One clip's learned values [T] (in `targets` order) after a bundle's gate (none: unchanged), from its evidence rows."""
    out = np.array(learned, dtype=float)
    if gate:
        col = list(targets).index(gate["feature"])
        out[col] = apply(gate, out[col:col + 1], inputs(evidence, weights, lay))[0]
    return out
