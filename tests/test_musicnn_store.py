"""`songfeat build --frontend musicnn` caches the tagger's vector per clip; `mlp-head` trains on it and analyzes new audio."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from songfeat import frontend, tagger
from songfeat.analyze import analyze
from songfeat.data.store import build_store, open_store
from songfeat.models import create
from songfeat.musicnn_frontend import LEVEL_DB, levelled, resample
from songfeat.train import Dataset, train_bundle, train_model

from test_store import clip, make_dataset


def test_spec_size_matches_tagger():
    assert frontend.MUSICNN.shape == (tagger.VECTOR_SIZE, 1) == (frontend.MUSICNN_CHANNELS, 1)
    assert frontend.get_spec("musicnn") is frontend.MUSICNN


@pytest.fixture(scope="module")
def musicnn_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mstore")
    labels, audio, ids = make_dataset(root, 4, seconds=2.0)
    report = build_store(labels, audio, root / "out", frontend="musicnn", workers=1, progress=False, descriptors=False)
    return {"report": report, "out": root / "out", "audio": audio, "ids": ids}


@pytest.mark.slow
def test_store_caches_the_tagger_vector(musicnn_store):
    assert musicnn_store["report"].ok
    store = open_store(musicnn_store["out"])
    assert store.spec == frontend.MUSICNN and store.manifest["frontend_name"] == "musicnn"
    arr = store.array()
    assert arr.shape == (4, tagger.VECTOR_SIZE, 1)
    tid = store.ids()[0]
    path = store.index().set_index("track_id").loc[tid, "path"]
    from songfeat.audio import load_audio

    y = frontend.fit_window(load_audio(path, max_seconds=30.0), frontend.MUSICNN)  # what the build fed the tagger,
    heard = levelled(resample(y, 44100))  # brought to the default model's tagger level first
    np.testing.assert_allclose(arr[0, :, 0], tagger.vector(tagger.describe(heard, sr=16000)), rtol=1e-5, atol=1e-5)
    tags = arr[:, tagger.layout()["msd_tags"], 0]
    assert np.all((tags >= 0) & (tags <= 1)) and np.ptp(tags, axis=0).max() > 0  # clips differ


@pytest.mark.slow
def test_mlp_head_trains_on_the_store_and_analyzes(musicnn_store, tmp_path):
    split = {"train": musicnn_store["ids"][:3], "val": musicnn_store["ids"][3:], "test": []}
    out = train_bundle("mlp-head", musicnn_store["out"], tmp_path / "bundle", targets=["energy", "valence"], epochs=3,
                       split=split, progress=False)
    wav = tmp_path / "new.wav"
    sf.write(wav, clip(9, 4.0), 44100)
    res = analyze(wav, model=out)
    assert 0.0 <= res["energy"] <= 1.0 and 0.0 <= res["valence"] <= 1.0


def test_the_musicnn_front_end_hears_each_window_at_the_default_models_level():
    """A store's (and a bundle's) musicnn vector is the tagger's output for the window brought to `LEVEL_DB`, as the
    default model's evidence is: the same clip 12 dB quieter gives the same vector; a spec saved before the field
    existed (no `tagger_level_db`) still feeds the window as it is, so a model trained on it hears what it learnt on."""
    assert frontend.MUSICNN.tagger_level_db == LEVEL_DB
    y = clip(3, 4.0)
    quiet = (y * 10 ** (-12 / 20)).astype(np.float32)
    loud_v, quiet_v = (frontend.compute(frontend.MUSICNN, w)[0, :, 0].numpy() for w in (y, quiet))
    assert np.abs(loud_v - quiet_v).max() < 1e-3
    old = frontend.FrontendSpec.from_dict({k: v for k, v in frontend.MUSICNN.to_dict().items() if k != "tagger_level_db"})
    assert old.tagger_level_db is None
    np.testing.assert_allclose(frontend.compute(old, quiet)[0, :, 0].numpy(), tagger.vector(tagger.describe(quiet)),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(frontend.compute(old, quiet)[0, :, 0].numpy() - quiet_v).max() > 0.01  # so the level did matter


def test_resuming_a_store_of_other_musicnn_settings_says_which(tmp_path):
    """A musicnn store from before the levelling has the same front-end name: the refusal names the setting that moved."""
    from songfeat.data.store import _frontend_change

    was = {k: v for k, v in frontend.MUSICNN.to_dict().items() if k != "tagger_level_db"}
    said = _frontend_change({"frontend_name": "musicnn", "frontend": was},
                            {"frontend_name": "musicnn", "frontend": frontend.MUSICNN.to_dict()})
    assert said == f"musicnn front-end settings (tagger_level_db None before, {LEVEL_DB} now)"
    assert _frontend_change({"frontend_name": "mfcc", "frontend": {}}, {"frontend_name": "musicnn", "frontend": {}}) == (
        "front-end mfcc vs musicnn")


def test_mlp_head_learns_a_function_of_the_vector():
    """On held-out rows it beats the mean on a target that depends on a few inputs (so it uses them)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 64, 1)).astype(np.float32)
    y = 1 / (1 + np.exp(-(x[:, 0, 0] - x[:, 5, 0])))[:, None].astype(np.float32)
    ids = [str(i) for i in range(400)]
    data = Dataset(targets=y, target_names=("energy",), ids=ids, frontend=x)
    tr, te = data.select_ids(ids[:300]), data.select_ids(ids[300:])
    model, scalers, _ = train_model("mlp-head", tr, None, epochs=40, progress=False, early_stop_patience=None)
    assert model.out == "sigmoid"
    from songfeat.train import apply_scalers

    fe, _ = apply_scalers(te, scalers)
    with torch.no_grad():
        pred = model.eval()(frontend=fe).numpy()
    mae = np.abs(pred - te.targets).mean()
    assert mae < 0.6 * np.abs(te.targets - tr.targets.mean()).mean(), mae


def test_mlp_head_refuses_bad_settings():
    with pytest.raises(ValueError):
        create("mlp-head", 1, out="softmax")
    with pytest.raises(ValueError):
        create("mlp-head", 1, dropout=1.0)
