"""The vocal gate: inputs read from the heads' evidence rows, a fit that raises only where the taggers hear no voice."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat import vocal_gate
from songfeat.heads import DEFAULT_PARTS, NO_TAGGER_PARTS, assemble, layout
from songfeat.tagger import MSD_TAGS, MTT_TAGS

TAGS = layout(DEFAULT_PARTS[:2])  # msd_tags, mtt_tags as log-odds: what the gate reads


def evidence(voice: float, instrumental: float, windows: int = 2, other: float = 0.02) -> np.ndarray:
    """Evidence rows whose MTT voice words read `voice` (one of them; the rest `other`) and MSD "instrumental" reads
    `instrumental`."""
    tagger = np.full((windows, 100), other)
    tagger[:, 50 + MTT_TAGS.index("female vocal")] = voice
    tagger[:, MSD_TAGS.index("instrumental")] = instrumental
    return assemble({"tagger": tagger}, TAGS)


def test_inputs_are_the_clip_mean_of_the_tags():
    ev = np.concatenate([evidence(0.4, 0.01, 1), evidence(0.1, 0.2, 1)])
    x = vocal_gate.inputs(ev, np.array([3.0, 1.0]), TAGS)  # the first window three times as long
    assert x == pytest.approx([0.75 * 0.4 + 0.25 * 0.1, 0.75 * 0.01 + 0.25 * 0.2], abs=1e-6)


def test_inputs_need_the_taggers_log_odds_first():
    with pytest.raises(ValueError, match="msd_tags and mtt_tags"):
        vocal_gate.inputs(np.zeros((1, 10)), None, layout(NO_TAGGER_PARTS))


def fitted() -> dict:
    rng = np.random.default_rng(0)
    sung = np.c_[rng.uniform(0.1, 0.6, 40), rng.uniform(0.001, 0.03, 40)]
    instr = np.c_[rng.uniform(0.005, 0.05, 10), rng.uniform(0.08, 0.3, 10)]
    return vocal_gate.fit(np.r_[sung, instr], np.r_[np.zeros(40), np.ones(10)], value=0.875)


def test_gate_raises_instrumentals_and_never_lowers():
    g = fitted()
    assert g["coef"][0] < 0 < g["coef"][1]  # more voice: less instrumental; more "instrumental" tag: more
    x = np.array([[0.02, 0.2], [0.4, 0.01], [0.02, 0.2]])
    out = vocal_gate.apply(g, np.array([0.1, 0.1, 0.95]), x)
    assert out.tolist() == pytest.approx([0.875, 0.1, 0.95])  # raised; a song left alone; a higher value kept
    clip = vocal_gate.apply_clip(g, np.full(7, 0.1), ["danceability", "energy", "speechiness", "acousticness",
                                                     "instrumentalness", "valence", "liveness"],
                                 evidence(0.02, 0.2), None, TAGS)
    assert clip[4] == pytest.approx(0.875) and np.all(np.delete(clip, 4) == 0.1)  # only instrumentalness moves
    assert vocal_gate.apply_clip(None, np.full(7, 0.1), [], evidence(0.02, 0.2), None, TAGS).tolist() == [0.1] * 7


def test_gate_rises_on_a_line_near_even_odds_instead_of_jumping():
    # a step at P = 0.5 made one clip read 0.875 as FLAC and 0.54 as AAC (P 0.52 -> 0.19) and another 0.875 -> 0.29
    # at 6 dB less: near even odds a small change of P may move the answer a little, not most of the scale
    lo, hi = vocal_gate.RAMP
    g = {"intercept": 0.0, "coef": [0.0, 1.0], "value": 0.875, "feature": "instrumentalness"}

    def at(p: float, v: float = 0.1) -> float:  # P(instrumental) = logistic(log(x + EPS)) = p for x = p / (1 - p) - EPS
        return float(vocal_gate.apply(g, np.array([v]), np.array([[0.5, p / (1 - p) - vocal_gate.EPS]]))[0])

    assert at(lo - 0.05) == pytest.approx(0.1) and at(hi + 0.05) == pytest.approx(0.875)
    assert at((lo + hi) / 2) == pytest.approx((0.1 + 0.875) / 2)
    ps = np.linspace(0.2, 0.8, 121)
    values = np.array([at(p) for p in ps])
    assert np.all(np.diff(values) >= 0) and np.abs(np.diff(values)).max() < 0.02  # steps of 0.005 in P: no jump
    assert at(0.9, v=0.95) == pytest.approx(0.95) and at(0.5, v=0.95) == pytest.approx(0.95)  # never lowered


def test_fit_needs_both_classes_and_value_comes_from_the_catalogue():
    with pytest.raises(ValueError, match="instrumental and sung"):
        vocal_gate.fit(np.full((5, 2), 0.1), np.zeros(5), value=0.9)
    assert vocal_gate.typical_value(np.array([0.0, 0.2, 0.6, 0.9, np.nan, 0.95])) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="above 0.5"):
        vocal_gate.typical_value(np.array([0.1, 0.2]))


def test_shipped_gate_reads_voice_down_and_instrumental_up():
    from songfeat.bundle import load_bundle

    g = load_bundle().config.get("vocal_gate")
    assert g, "the default bundle ships a vocal gate"
    assert g["inputs"] == list(vocal_gate.INPUTS) and g["coef"][0] < 0 < g["coef"][1]
    assert 0.5 < g["value"] < 1 and g["fitting_rows"]["instrumental"] >= 5
    # a clip whose taggers hear a voice is never raised; one they call instrumental with no voice is
    assert vocal_gate.probability(g, [0.4, 0.01])[0] < 0.5 < vocal_gate.probability(g, [0.005, 0.3])[0]
