"""Genre priors from tag probabilities, catalogue-derived rule intervals, per-feature decay and its nested selection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from songfeat import behaviour, genre_prior
from songfeat.heads import TARGETS, FitConfig, catalogue_intervals, intervals_from_rules
from songfeat.tagger import MSD_TAGS, MTT_TAGS


def _table():
    t = len(TARGETS)
    return {"pseudo_weight": 0.5, "targets": list(TARGETS), "annotators": {
        "a": {"genres": ["Classical", "Dance"], "tags": [["mtt:classical"], ["msd:dance", "mtt:dance"]],
              "means": [[0.2] * t, [0.8] * t], "tracks": [10, 10], "overall": [0.5] * t}}}


def _tags(**probs):
    x = np.zeros((1, len(MSD_TAGS) + len(MTT_TAGS)))
    for k, v in probs.items():
        model, name = k.split("__")
        x[0, (MSD_TAGS.index(name) if model == "msd" else len(MSD_TAGS) + MTT_TAGS.index(name))] = v
    return x


def _p(logit):
    return 1 / (1 + np.exp(-logit))


def test_no_confident_genre_gives_the_overall_mean():
    out = genre_prior.apply(_tags(), _table())
    assert out.shape == (1, len(TARGETS))
    np.testing.assert_allclose(_p(out), 0.5, atol=1e-9)


def test_a_confident_tag_pulls_toward_its_genre_but_is_shrunk():
    classical = _p(genre_prior.apply(_tags(mtt__classical=1.0), _table()))
    dance = _p(genre_prior.apply(_tags(msd__dance=0.2, mtt__dance=0.9), _table()))  # the genre's most probable tag counts
    np.testing.assert_allclose(classical, (0.2 * 1.0 + 0.5 * 0.5) / 1.5)
    np.testing.assert_allclose(dance, (0.8 * 0.9 + 0.5 * 0.5) / 1.4)


def test_every_mapped_tag_exists_in_the_tagger():
    for genres in genre_prior.GENRE_TAGS.values():
        for tags in genres.values():
            for t in tags:
                genre_prior._tag_index(t)  # raises ValueError for a misspelt tag


@pytest.mark.shared
def test_tables_leave_out_excluded_tracks(shared_data):
    full = genre_prior.build_table(shared_data)
    fma = pd.read_csv(shared_data / "fma-echonest" / "clips_labels.csv", dtype={"track_id": str})
    less = genre_prior.build_table(shared_data, exclude_ids=set(fma["track_id"]))
    assert sum(less["annotators"]["echonest"]["tracks"]) < sum(full["annotators"]["echonest"]["tracks"])
    assert full["annotators"]["spotify"]["tracks"] == less["annotators"]["spotify"]["tracks"]
    en = full["annotators"]["echonest"]
    g = en["genres"].index("Classical")
    assert en["means"][g][TARGETS.index("acousticness")] > en["overall"][TARGETS.index("acousticness")]


def test_catalogue_intervals_sit_on_the_rules_side():
    rng = np.random.default_rng(0)
    cat = pd.DataFrame({t: rng.uniform(0, 1, 2000) for t in TARGETS})
    cat.loc[:40, "liveness"] = 0.95
    cat.loc[41:, "liveness"] = 0.1  # only 41 tracks above 0.8: too few, the margin rule applies
    rules = behaviour.parse_rules("speechiness>0.66; energy<0.2; liveness>0.8")
    b = catalogue_intervals(cat, rules)
    lo, hi = b["speechiness>0.66"]
    assert 0.66 < lo < hi <= 1.0 and abs(lo - (0.66 + 0.034)) < 0.03 and abs(hi - (1 - 0.034)) < 0.03
    lo, hi = b["energy<0.2"]
    assert 0.0 <= lo < hi < 0.2
    assert "liveness>0.8" not in b
    ilo, ihi = intervals_from_rules([rules], b)
    j = TARGETS.index("liveness")
    assert (ilo[0, j], ihi[0, j]) == pytest.approx((0.9, 1.0))  # the margin interval


def test_per_feature_decay_matches_the_scalar_and_shrinks_only_its_feature():
    from test_heads import _data

    from songfeat.heads import fit_heads
    from songfeat.models.heads import Heads

    def fit(decay):
        import torch

        ev, num, lo, hi, w = _data()
        torch.manual_seed(0)  # the same stage 1 for both fits
        m = Heads(len(TARGETS), n_inputs=num.shape[1], n_evidence=ev.shape[1], head_hidden=4, members=1)
        fit_heads(m, ev, num, lo, hi, w, FitConfig(members=1, steps=60, weight_decay=decay, monotone=False, feature_parts=()))
        return m.members[0].skip.weight.detach().numpy()

    same = fit(0.5)
    np.testing.assert_allclose(fit((0.5,) * len(TARGETS)), same, rtol=1e-5, atol=1e-6)
    j = TARGETS.index("energy")
    strong = fit(tuple(100.0 if t == "energy" else 0.5 for t in TARGETS))
    assert np.abs(strong[j]).sum() < 0.5 * np.abs(same[j]).sum()


def test_monotone_keeps_stage1_weight_of_residual_features_non_negative():
    from test_heads import _data

    from songfeat.heads import fit_heads
    from songfeat.models.heads import Heads

    ev, num, lo, hi, w = _data()
    cfg = FitConfig(members=2, steps=60, feature_parts=())  # synthetic columns: no named parts
    m = Heads(len(TARGETS), n_inputs=num.shape[1], n_evidence=ev.shape[1], head_hidden=4, members=2,
              residual=cfg.residual_mask())
    fit_heads(m, ev, num, lo, hi, w, cfg)
    n_z = m.z_mean.numel()
    for mem in m.members:
        for j, r in enumerate(cfg.residual_mask()):
            if r:
                assert mem.skip.weight[j, n_z - len(TARGETS) + j].item() >= 0.0


class _FakeData:
    """Two features; a source's predictions are off by a decay-dependent amount, different per feature."""

    def __init__(self):
        self.source = np.array(["forro"] * 4 + ["poprock"] * 4 + ["older"] * 4)
        self.y_fit = np.zeros((12, len(TARGETS)))
        self.seen = []

    def predict(self, train, test, lay, cfg):
        self.seen.append(set(self.source[train]) | set(self.source[test]))
        d = cfg.decays()
        err = np.abs(np.log10(d) - np.where(np.arange(len(TARGETS)) == 0, 1.0, -1.0))  # feature 0 best at 10, others at 0.1
        squared = np.array([x == "squared" for x in cfg.losses()])
        err = err + np.where(np.arange(len(TARGETS)) == 2, ~squared, squared) * 0.5  # feature 2 best squared, others absolute
        return np.tile(err, (test.sum(), 1))


def test_select_decay_chooses_per_feature_inside_the_pool_only():
    from songfeat.heads import LOSSES
    from songfeat.sources import select_decay

    data = _FakeData()
    pool = data.source != "forro"
    chosen, info = select_decay(data, pool, None, FitConfig(), grid=(0.1, 1.0, 10.0), losses=LOSSES)
    decay = chosen.decays()
    assert decay[0] == 10.0 and all(c == 0.1 for c in decay[1:])
    assert chosen.losses() == ["squared" if j == 2 else "absolute" for j in range(len(TARGETS))]
    assert info["chosen_loss"] == chosen.losses() and info["chosen"] == list(decay)
    fixed, _ = select_decay(data, pool, None, FitConfig(loss="squared"), grid=(0.1, 1.0, 10.0))  # without losses: kept
    assert fixed.loss == "squared" and list(fixed.decays()) == list(decay)
    assert info["inner_sources"] == ["poprock", "older"]
    assert all("forro" not in s for s in data.seen)  # the held-out source never entered a fit or a score
