"""The shipped default model: a complete bundle, honest accuracy on real previews, a reproducible recipe."""
from __future__ import annotations

import json

import numpy as np
import pytest

from songfeat import features
from songfeat.bundle import DEFAULT_DIR, load_bundle
from songfeat.errors import SongfeatError


def test_default_bundle_is_complete():
    b = load_bundle()
    cfg = json.loads((DEFAULT_DIR / "config.json").read_text())  # strict JSON (no NaN)
    assert b.targets == features.LEARNED and b.config["numeric_source"] == "measured"
    assert b.frontend is not None and set(b.needs) == {"frontend", "numeric"}
    for key in ("scalers", "split", "metrics", "provenance", "hparams", "frontend"):
        assert cfg.get(key), key
    held = cfg["metrics"]["stage1_heldout_on_spotify_values"]
    assert held["model"]["average"]["mae"] < held["mean_predictor"]["average"]["mae"]
    card = (DEFAULT_DIR / "MODEL_CARD.md").read_text()
    cv = cfg["metrics"]["dev_previews_cv"]["learned"]
    assert f"{cv['model']['average']['mae']:.3f}" in card  # the card is written from this config
    assert cv["model"]["average"]["mae"] < cv["mean_predictor"]["average"]["mae"]


def test_default_bundle_predicts_in_range():
    b = load_bundle()
    rng = np.random.default_rng(0)
    front = rng.standard_normal((4, *b.frontend.shape)).astype(np.float32) * 20
    numeric = np.array([[120, -8, 5, 1, 4], [80, -20, 0, 0, 3], [170, -4, 11, 1, 4], [60, -30, 2, 0, 4]], np.float32)
    out = b.predict(front, numeric)
    assert out.shape == (4, 7) and np.all((out >= 0) & (out <= 1))
    assert out[:, features.LEARNED.index("energy")].std() > 0.01  # not one constant


@pytest.mark.shared
def test_stage1_recipe_learns_from_the_table(shared_data):
    from songfeat.data.labels import read_labels
    from songfeat.default_model import TABLE, train_base

    table = read_labels(shared_data / TABLE).frame
    fit = train_base(table, exclude_ids=set(), seed=1, epochs=8, progress=False)
    m = fit.metrics
    assert m["model"]["targets"]["energy"]["pearson"] > 0.75  # loudness drives energy strongly
    assert m["model"]["average"]["mae"] < 0.9 * m["mean_predictor"]["average"]["mae"]


@pytest.mark.shared
@pytest.mark.slow
def test_cross_validated_accuracy_on_dev_previews_beats_the_mean(shared_data):
    from songfeat.accuracy import evaluate_audio

    prev = shared_data / "spotify-previews"
    r = evaluate_audio(prev / "labels.csv", prev / "audio", cv=5, workers=2, progress=False)
    assert r["n_clips"] == 102 and not r["failed"]
    model, mean = r["learned"]["model"]["average"], r["learned"]["mean_predictor"]["average"]
    assert model["mae"] < 0.95 * mean["mae"], (model, mean)
    assert r["learned"]["model"]["targets"]["energy"]["pearson"] > 0.5
    assert r["measured"]["loudness_mae_db"] < 2.0
    assert r["measured"]["tempo"]["up_to_octave"] > 0.6


@pytest.mark.shared
def test_plain_evaluation_refuses_clips_the_model_was_fitted_on(shared_data):
    from songfeat.accuracy import evaluate_audio

    prev = shared_data / "spotify-previews"
    with pytest.raises(SongfeatError, match="--cv"):
        evaluate_audio(prev / "labels.csv", prev / "audio", progress=False)
