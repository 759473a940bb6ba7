"""Proof that the seed's audio models learn: on generated clips whose labels are known functions of the sound,
lstm-multitask and cnn-complex reach held-out Pearson >= 0.9 averaged over the four labels, and >= 0.8 on
every single label (so no label can be ignored behind a good average).

The clips (songfeat.data.synthetic) carry four independent labels: level (energy), pulse rate
(danceability), tonal-vs-noisy share (acousticness) and speech-like modulation depth (speechiness).
They go through the real front-end code path (frontend.compute) with a CI-sized MFCC spec (8 kHz,
4 s, 16 x 32), and the models are trained with songfeat.train.train_bundle and scored through the
saved bundle (load_bundle -> Bundle.predict) on test clips they never saw.

Measured (2,400 clips: 1,800 train / 300 val / 300 test, seed 0, torch 2.13 CPU):
  lstm-multitask: energy 0.992, danceability (pulse rate) 0.868, acousticness 0.989, speechiness 0.955
  cnn-complex:    energy 0.951, danceability (pulse rate) 0.867, acousticness 0.963, speechiness 0.891 (12 epochs)
Pulse rate (counting clicks) is the hardest label for both; per-label >= 0.9 was not reached in a CI-sized run.
"""
from __future__ import annotations

import json

import pytest

from songfeat.data.synthetic import SYNTH_TARGETS, synthetic_dataset
from songfeat.evaluate import evaluate_bundle
from songfeat.train import train_bundle

N_CLIPS = 2400
MIN_MEAN_PEARSON = 0.9
MIN_PEARSON = 0.8
#: CI-sized schedules (the seed's own 20 / 6 epochs are the CLI defaults; here we fix what the test needs)
RUNS = {
    "lstm-multitask": dict(epochs=40, batch_size=32, lr=3e-3),
    "cnn-complex": dict(epochs=12, batch_size=8, lr=1e-3),
}


@pytest.fixture(scope="module")
def clips():
    return synthetic_dataset(N_CLIPS, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_model_learns_known_functions_of_the_sound(name, clips, tmp_path):
    n = len(clips)
    split = {"train": clips.ids[: int(0.75 * n)], "val": clips.ids[int(0.75 * n): int(0.875 * n)],
             "test": clips.ids[int(0.875 * n):]}
    out = train_bundle(name, clips, tmp_path / name, targets=SYNTH_TARGETS, split=split, seed=0,
                       early_stop_patience=None, progress=False, **RUNS[name])
    test = clips.select_ids(split["test"])
    res = evaluate_bundle(out, data=test)
    r = {t: round(res["targets"][t]["pearson"], 3) for t in SYNTH_TARGETS}
    secs = json.loads((out / "config.json").read_text())["training"]["seconds"]
    print(f"{name}: held-out Pearson {r} (n={len(test)}, {secs:.0f} s training)")
    assert not res["constant_outputs"]
    mean = sum(r.values()) / len(r)
    assert mean >= MIN_MEAN_PEARSON, f"{name}: mean Pearson {mean:.3f} < {MIN_MEAN_PEARSON} ({r})"
    for t in SYNTH_TARGETS:
        assert r[t] >= MIN_PEARSON, f"{name} {t}: Pearson {r[t]} < {MIN_PEARSON} ({r})"
