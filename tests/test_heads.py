"""The heads' fit: interval targets, determinism, and sane outputs far outside the fitted range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from songfeat import behaviour
from songfeat.heads import FitConfig, fit_heads, intervals_from_labels, intervals_from_rules, predict_rows
from songfeat.models.heads import Heads


def _data(seed=0):
    rng = np.random.default_rng(seed)
    n = 120
    ev = rng.standard_normal((n, 6)).astype(np.float32)
    num = rng.standard_normal((n, 5)).astype(np.float32)
    y = np.full((n, 7), np.nan)
    y[:100, 1] = 1 / (1 + np.exp(-(1.5 * ev[:100, 0])))  # energy follows evidence column 0
    y[:100, 2] = 0.05  # songs: low speechiness
    lo, hi = intervals_from_labels(y)
    # 20 "speech" rows with a strong column 3, known only by the bound speechiness > 0.66
    ev[100:, 3] += 4.0
    blo, bhi = intervals_from_rules([behaviour.parse_rules("speechiness>0.66")] * 20)
    lo[100:], hi[100:] = blo, bhi
    return ev, num, lo, hi, np.ones(n)


def _fit(seed=42):
    torch.manual_seed(0)
    ev, num, lo, hi, w = _data()
    m = Heads(7, n_inputs=5, n_evidence=6, head_hidden=8, members=2)
    fit_heads(m, ev, num, lo, hi, w, FitConfig(hidden=8, members=2, steps=300, weight_decay=0.002, hidden_decay=0.02, seed=seed,
                                                  feature_parts=()))  # synthetic columns: no named parts
    return m, ev, num


def test_fit_meets_labels_and_bounds():
    m, ev, num = _fit()
    p = predict_rows(m, ev, num)
    assert np.corrcoef(p[:100, 1], 1 / (1 + np.exp(-1.5 * ev[:100, 0])))[0, 1] > 0.9
    assert np.median(p[:100, 2]) < 0.15 and np.mean(p[100:, 2] > 0.66) > 0.9


def test_fit_is_bit_identical_on_rerun():
    a, _, _ = _fit()
    b, _, _ = _fit()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_far_outside_inputs_are_clamped_not_pinned():
    m, ev, num = _fit()
    far = predict_rows(m, ev[:5] * 1000, num[:5])
    edge = predict_rows(m, np.sign(ev[:5]) * 1e6, num[:5])
    assert np.allclose(far, edge)  # beyond +-4 sd every input is the same input: no unbounded extrapolation


@pytest.mark.slow
def test_train_heads_on_own_labels_makes_an_analyzable_bundle(tmp_path):
    import soundfile as sf

    from songfeat import synth
    from songfeat.analyze import analyze
    from songfeat.own_heads import train_heads

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["track_id,energy"]
    for i, db in enumerate((-30, -26, -22, -18, -14, -10)):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100 + 10 * i, seconds=6.0, peak_dbfs=db, seed=i), 44100)
        rows.append(f"c{i},{0.2 + 0.12 * i:.2f}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    from songfeat.errors import SongfeatWarning

    with pytest.warns(SongfeatWarning, match="no labels for danceability, speechiness, .*stage 1's prediction"):
        out, _ = train_heads(tmp_path / "labels.csv", audio, tmp_path / "bundle", cache=tmp_path / "cache", progress=False,
                          cfg=FitConfig(members=1, steps=100))
    r = analyze(audio / "c5.wav", model=out)
    assert 0 < r["energy"] < 1 and r["speechiness"] is not None


def test_private_and_restricted_parts_are_read_only_where_allowed():
    ev, num, lo, hi, w = _data()
    ev[:100, 5] = ev[:100, 0]  # a copy of energy's cue in a column that only speechiness may read
    cols = ["a:all"] * 5 + ["p:all"]
    cfg = FitConfig(hidden=8, members=2, steps=100, weight_decay=0.002, hidden_decay=0.02,
                    private_parts=(("p:all", ("speechiness",)),), feature_parts=(("valence", ("a:all",)),))
    torch.manual_seed(0)
    m = Heads(7, n_inputs=5, n_evidence=6, head_hidden=8, members=2)
    fit_heads(m, ev, num, lo, hi, w, cfg, columns=cols)
    for member in m.members:
        skip = member.skip.weight.detach().numpy()
        assert np.all(skip[[0, 1, 3, 4, 5, 6], 5] == 0) and np.any(skip[2, 5] != 0)  # only speechiness reads 'p'
        assert np.all(member.hidden.weight.detach().numpy()[:, 5] == 0)  # the shared path never does
        assert np.all(member.out.weight.detach().numpy()[5] == 0)  # valence is restricted: linear only
        assert np.any(skip[1, :5] != 0)  # energy still learns from its own columns
    with pytest.raises(ValueError, match="part names"):
        fit_heads(m, ev, num, lo, hi, w, FitConfig(feature_parts=(("valence", ("a:all",)),)))


def test_absolute_loss_fits_the_median_squared_the_mean():
    """Skewed labels (most 0.1, a tenth 0.9) on uninformative inputs: the absolute loss predicts near the median
    (what MAE rewards), the squared loss near the mean 0.18."""
    rng = np.random.default_rng(1)
    n = 200
    ev = rng.standard_normal((n, 3)).astype(np.float32)
    num = rng.standard_normal((n, 5)).astype(np.float32)
    y = np.full((n, 7), np.nan)
    y[:, 6] = np.where(np.arange(n) % 10 == 0, 0.9, 0.1)
    lo, hi = intervals_from_labels(y)
    preds = {}
    for loss in ("absolute", "squared"):
        torch.manual_seed(0)
        m = Heads(7, n_inputs=5, n_evidence=3, head_hidden=4, members=1)
        fit_heads(m, ev, num, lo, hi, np.ones(n), FitConfig(hidden=4, members=1, steps=300, weight_decay=1.0,
                                                            feature_parts=(), loss=loss))
        preds[loss] = float(np.median(predict_rows(m, ev, num)[:, 6]))
    assert abs(preds["absolute"] - 0.1) < 0.03
    assert abs(preds["squared"] - 0.18) < 0.03


def test_feature_weights_move_only_their_feature():
    """Per-feature loss weights (`fit_heads(feature_weights=...)`): all ones is the unweighted fit to the bit; weighting
    the rows labelled 0.9 ten times on one feature pulls that feature's median prediction up, and leaves the others'
    fit where it was."""
    rng = np.random.default_rng(1)
    n = 200
    ev = rng.standard_normal((n, 3)).astype(np.float32)
    num = rng.standard_normal((n, 5)).astype(np.float32)
    y = np.full((n, 7), np.nan)
    y[:, 6] = y[:, 3] = np.where(np.arange(n) % 10 == 0, 0.9, 0.1)
    lo, hi = intervals_from_labels(y)
    cfg = FitConfig(hidden=4, members=1, steps=300, weight_decay=1.0, feature_parts=())

    def fit(fw):
        torch.manual_seed(0)
        m = Heads(7, n_inputs=5, n_evidence=3, head_hidden=4, members=1)
        fit_heads(m, ev, num, lo, hi, np.ones(n), cfg, feature_weights=fw)
        return m, np.median(predict_rows(m, ev, num), axis=0)

    plain, p0 = fit(None)
    ones, p1 = fit(np.ones((n, 7)))
    for (ka, va), (kb, vb) in zip(plain.state_dict().items(), ones.state_dict().items()):
        assert torch.equal(va, vb), ka
    fw = np.ones((n, 7))
    fw[np.arange(n) % 10 == 0, 6] = 10.0  # the 0.9 rows weigh as much as the 0.1 rows on liveness only
    _, p2 = fit(fw)
    assert p0[6] < 0.2 and p2[6] > 0.3  # liveness leaves the median 0.1
    assert abs(p2[3] - p0[3]) < 0.05  # acousticness, same labels, unweighted: still at its median


def test_catalogue_region_gives_every_feature_where_tracks_meeting_all_rules_lie():
    """A clip's rules pick catalogue tracks; each learned feature's target is their 10th-90th percentile, rules or not."""
    import pandas as pd

    from songfeat.heads import TARGETS, catalogue_region

    rng = np.random.default_rng(0)
    n = 2000
    cat = pd.DataFrame({t: rng.uniform(0, 1, n) for t in TARGETS})
    quiet = cat["energy"] < 0.3
    cat.loc[quiet, "danceability"] = rng.uniform(0.2, 0.4, quiet.sum())  # quiet tracks dance 0.2-0.4 here
    region = catalogue_region(cat, behaviour.parse_rules("energy<0.3; instrumentalness>0.5; key C major"))
    assert set(region) == set(TARGETS)  # the key rule is not a learned feature: ignored
    sub = cat[quiet & (cat["instrumentalness"] > 0.5)]
    assert region["danceability"] == pytest.approx((sub["danceability"].quantile(0.1), sub["danceability"].quantile(0.9)))
    assert 0.2 <= region["danceability"][0] < region["danceability"][1] <= 0.4
    assert region["energy"][1] < 0.3 and region["instrumentalness"][0] > 0.5  # the rules' own sides
    assert catalogue_region(cat, behaviour.parse_rules("energy<0.01; danceability>0.99")) == {}  # too few tracks
    assert catalogue_region(cat, []) == {}


def test_ridge_member_blends_each_feature_by_its_weight():
    from types import SimpleNamespace

    from songfeat.sources import ridge_predictions

    m, ev, num = _fit()
    rng = np.random.default_rng(1)
    extra = rng.standard_normal((len(ev), 3)).astype(np.float32)
    r = Heads(7, n_inputs=5, n_evidence=6, head_hidden=8, members=2, ridge_inputs=3)
    missing, unexpected = r.load_state_dict(m.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("ridge_", "blend")) for k in missing)
    coef = (rng.standard_normal((7, 10)) * 0.05, rng.standard_normal(7) * 0.05, rng.standard_normal(10), 1 + rng.random(10))
    full = np.concatenate([ev, extra], axis=1)
    r.set_ridge(*coef, np.zeros(7))
    r.eval()
    alone = predict_rows(m, ev, num)
    assert np.array_equal(predict_rows(r, full, num), alone)  # weight 0: the heads exactly
    blend = np.array([0, 0.25, 0.5, 1.0, 0, 0, 0.75])
    r.set_ridge(*coef, blend)
    with torch.no_grad():
        stage1 = m.base(numeric=torch.from_numpy(num)).numpy()
    recs = [SimpleNamespace(blocks={"mfcc_band": extra[i:i + 1]}, weights=np.ones(1)) for i in range(len(ev))]
    ridge = ridge_predictions(coef, recs, stage1)  # the numpy form the held-out selection scores
    assert np.allclose(predict_rows(r, full, num), (1 - blend) * alone + blend * ridge, atol=1e-5)
    assert not np.allclose(ridge[:, 3], alone[:, 3], atol=1e-3)  # the test can tell the two members apart
    # audio unlike any fitted (silence, noise: 10-20 sd out) meets the ridge's clamp as it meets the heads'
    far = np.concatenate([ev[:5], extra[:5] * 1000], axis=1)
    edge = np.concatenate([ev[:5], np.sign(extra[:5]) * 1e6], axis=1)
    assert np.allclose(predict_rows(r, far, num[:5]), predict_rows(r, edge, num[:5]))
