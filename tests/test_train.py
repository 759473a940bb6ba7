"""Training: bundles for every family round-trip through load_bundle, runs are deterministic, the CLI works end to end."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from songfeat.bundle import load_bundle
from songfeat.evaluate import evaluate_bundle, predict_dataset
from songfeat.features import SEED_NUMERIC_INPUTS, SEED_TARGETS
from songfeat.frontend import FrontendSpec
from songfeat.train import Dataset, fit_scalers, make_split, train_bundle

TINY = FrontendSpec(kind="mfcc", sample_rate=8000, n_fft=256, hop_length=256, n_mels=24, n_mfcc=16, frames=24,
                    window_seconds=0.75)


def tiny_dataset(n: int = 40, seed: int = 0) -> Dataset:
    """Front-end-shaped noise whose mean level drives the targets, plus the seed's 6 numeric inputs."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.05, 0.95, size=(n, len(SEED_TARGETS) + 2)).astype(np.float32)
    fe = rng.standard_normal((n, *TINY.shape)).astype(np.float32) + 3 * y[:, :1, None]
    num = rng.standard_normal((n, 6)).astype(np.float32)
    num[:, 0] = y[:, 5]  # valence column of the numeric inputs = the valence label
    names = SEED_TARGETS + ("valence", "liveness")
    return Dataset(targets=y, target_names=names, ids=[f"t{i:03d}" for i in range(n)], frontend=fe, numeric=num,
                   numeric_names=SEED_NUMERIC_INPUTS, spec=TINY)


FAMILIES = ("numeric-mlp", "cnn-simple", "cnn-valence", "cnn-complex", "lstm-simple", "lstm-multitask", "combiner")


@pytest.mark.parametrize("name", FAMILIES)
def test_bundle_round_trip_gives_identical_predictions(name: str, tmp_path):
    data = tiny_dataset()
    out = train_bundle(name, data, tmp_path / name, epochs=2, progress=False, batch_size=16)
    cfg = json.loads((out / "config.json").read_text())
    for key in ("model", "hparams", "targets", "inputs", "frontend", "numeric_inputs", "numeric_source", "scalers",
                "split", "metrics", "provenance", "training"):
        assert key in cfg, key
    assert cfg["model"] == name and cfg["metrics"]["split"] == "test"
    assert set(cfg["split"]["train"]).isdisjoint(cfg["split"]["test"])
    b = load_bundle(out)
    test = data.select_targets(b.targets).select_ids(cfg["split"]["test"])
    again = predict_dataset(b, test)
    m = evaluate_bundle(out, data=test)
    assert again.shape == (len(test), len(b.targets))
    assert m["targets"][b.targets[0]]["mae"] == pytest.approx(cfg["metrics"]["targets"][b.targets[0]]["mae"], abs=1e-6)
    if name == "combiner":  # one safetensors file carries the pretrained sub-models too
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert any(k.startswith("lstm.") for k in keys) and any(k.startswith("mlp.") for k in keys)


def test_family_default_targets(tmp_path):
    data = tiny_dataset()
    cfg = json.loads((train_bundle("cnn-valence", data, tmp_path / "v", epochs=1, progress=False) / "config.json").read_text())
    assert cfg["targets"] == ["valence"]
    cfg = json.loads((train_bundle("lstm-simple", data, tmp_path / "l", epochs=1, progress=False) / "config.json").read_text())
    assert cfg["targets"] == ["danceability"]


def test_numeric_input_cannot_also_be_a_target(tmp_path):
    with pytest.raises(ValueError, match="both"):
        train_bundle("numeric-mlp", tiny_dataset(), tmp_path / "x", targets=["valence"], epochs=1, progress=False)


def test_same_seed_same_weights_different_seed_different(tmp_path):
    data = tiny_dataset()
    kw = dict(epochs=3, progress=False, batch_size=8)
    a = load_bundle(train_bundle("lstm-multitask", data, tmp_path / "a", seed=7, **kw)).model.state_dict()
    b = load_bundle(train_bundle("lstm-multitask", data, tmp_path / "b", seed=7, **kw)).model.state_dict()
    c = load_bundle(train_bundle("lstm-multitask", data, tmp_path / "c", seed=8, **kw)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_lowers_the_loss_and_early_stops(tmp_path):
    data = tiny_dataset(n=80)
    cfg = json.loads((train_bundle("lstm-multitask", data, tmp_path / "m", epochs=30, early_stop_patience=2,
                                   progress=False, lr=0.01) / "config.json").read_text())
    hist = cfg["training"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert cfg["training"]["best_epoch"] >= 1
    assert len(hist) == cfg["training"]["epochs_run"] <= 30


def test_combiner_plateau_schedule_steps_down(tmp_path):
    from songfeat.train import fit

    class Lin(torch.nn.Module):
        inputs = ("numeric",)

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, frontend=None, numeric=None):
            return self.fc(numeric)

    model = Lin()
    x = torch.randn(32, 3)
    y = torch.zeros(32, 1)  # reached quickly: the training loss plateaus and the rate steps down
    rec = fit(model, (None, x, y), None, epochs=40, lr_steps=(0.01, 0.005, 0.002, 0.001), plateau_patience=1,
              early_stop_patience=None, progress=False)
    lrs = [h["lr"] for h in rec["history"]]
    assert lrs[0] == 0.01 and set(lrs) <= {0.01, 0.005, 0.002, 0.001}
    assert lrs == sorted(lrs, reverse=True)


def test_scalers_are_per_channel_and_from_training_rows_only():
    data = tiny_dataset()
    sc = fit_scalers(data.subset(range(10)))
    assert len(sc["frontend"]["mean"]) == TINY.shape[0] and len(sc["numeric"]["mean"]) == 6
    assert sc["frontend"]["mean"][0] == pytest.approx(float(data.frontend[:10, 0].mean()), rel=1e-5)


def test_artist_split_keeps_artists_apart():
    ids = [f"t{i}" for i in range(30)]
    groups = [f"a{i % 7}" for i in range(30)]
    s = make_split(ids, "artist", seed=1, groups=groups)
    g = {p: {groups[ids.index(i)] for i in s[p]} for p in s}
    assert g["train"].isdisjoint(g["test"]) and g["train"].isdisjoint(g["val"])


# ---- end to end through a real store and the CLI ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A store built by the data engineer's build_store from 16 generated clips (small front-end, no descriptors)."""
    import soundfile as sf

    from songfeat.data.store import build_store
    from songfeat.data.synthetic import synth_clip, synth_labels

    root = tmp_path_factory.mktemp("store")
    audio = root / "audio"
    audio.mkdir()
    lab = synth_labels(16, seed=3)
    rng = np.random.default_rng(3)
    rows = []
    for i, (e, d, a, s) in enumerate(lab):
        tid = f"{i:022d}"
        sf.write(audio / f"{tid}.wav", synth_clip(np.array([e, d, a, s]), 8000, 1.2, rng), 8000)
        rows.append({"track_id": tid, "danceability": d, "energy": e, "speechiness": s, "acousticness": a,
                     "instrumentalness": 0.5, "valence": float(rng.random()), "liveness": 0.1, "tempo": 120.0,
                     "loudness": -8.0, "key": 1, "mode": 1, "time_signature": 4})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    build_store(root / "labels.csv", audio, root / "store", frontend=TINY, workers=1, progress=False, descriptors=False)
    return root / "store"


def test_cli_train_evaluate_compare(tiny_store, tmp_path):
    from songfeat.cli import app

    run = CliRunner()
    r = run.invoke(app, ["train", "lstm-multitask", "--store", str(tiny_store), "--out", str(tmp_path / "lstm"),
                         "--epochs", "2", "--targets", "energy,danceability"])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "--out", str(tmp_path / "mlp"),
                         "--epochs", "2", "--targets", "energy", "--activation", "sigmoid"])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["evaluate", str(tmp_path / "lstm"), "--store", str(tiny_store), "--format", "json",
                         "--scatter", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert set(res["targets"]) == {"energy", "danceability"} and res["split"] == "test"
    assert (tmp_path / "s.png").is_file()
    r = run.invoke(app, ["evaluate", str(tmp_path / "lstm"), "--store", str(tiny_store)])
    assert r.exit_code == 0 and "| energy |" in r.output
    r = run.invoke(app, ["compare", str(tmp_path / "lstm"), str(tmp_path / "mlp"), "--store", str(tiny_store)])
    assert r.exit_code == 0, r.output
    assert "lstm-multitask" in r.output and "numeric-mlp" in r.output and "X" in r.output
    r = run.invoke(app, ["train", "nope", "--store", str(tiny_store), "--out", str(tmp_path / "n")])
    assert r.exit_code == 2 and "unknown model" in r.output


def test_store_bundle_predicts_through_bundle_predict(tiny_store, tmp_path):
    from songfeat.data.store import open_store

    out = train_bundle("cnn-simple", tiny_store, tmp_path / "c", epochs=1, progress=False)
    b = load_bundle(out)
    st = open_store(tiny_store)
    assert b.frontend == st.spec
    y = b.predict(frontend=st.array()[:3])
    assert y.shape == (3, 1) and ((y >= 0) & (y <= 1)).all()
