"""Training: bundles for every family round-trip through load_bundle, runs are deterministic, the CLI works end to end."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

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


class Lin(torch.nn.Module):
    """A one-layer model on 3 numeric inputs, for tests of `fit` itself."""

    inputs = ("numeric",)

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, frontend=None, numeric=None):
        return self.fc(numeric)


def test_combiner_plateau_schedule_steps_down(tmp_path):
    from songfeat.train import fit

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
    trained = r.stderr
    r = run.invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "--out", str(tmp_path / "mlp"),
                         "--epochs", "2", "--targets", "energy", "--activation", "sigmoid"])
    assert r.exit_code == 0, r.output
    r = run.invoke(app, ["evaluate", str(tmp_path / "lstm"), "--store", str(tiny_store), "--format", "json",
                         "--scatter", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res["targets"]) == {"energy", "danceability"} and res["split"] == "test"
    assert (tmp_path / "s.png").is_file()
    # 16 clips leave 3 to test: scored, but said to be too few in one line naming the bundle and n (it said nothing)
    few = (f"songfeat: warning: {tmp_path / 'lstm'}: scored on only {res['n']} held-out clips: too few for the figures "
           "to mean much (under 16 clips a Pearson r of 0.5 cannot be told from none")
    assert res["n"] < 16 and r.stderr.startswith(few) and len(r.stderr.splitlines()) == 1, r.stderr
    assert trained == r.stderr  # train said it too, of the metrics it recorded (it said nothing of 2 to 15 clips)
    r = run.invoke(app, ["evaluate", str(tmp_path / "lstm"), "--store", str(tiny_store)])
    assert r.exit_code == 0 and "| energy |" in r.stdout and r.stderr.startswith(few)
    r = run.invoke(app, ["compare", str(tmp_path / "lstm"), str(tmp_path / "mlp"), "--store", str(tiny_store)])
    assert r.exit_code == 0, r.output
    assert "lstm-multitask" in r.stdout and "numeric-mlp" in r.stdout and "X" in r.stdout
    # the row says which inputs the numeric-mlp read (label or measured ones), not only its folder's name
    assert "| numeric-mlp, label inputs (mlp) |" in r.stdout and "| lstm-multitask (lstm) |" in r.stdout, r.stdout
    assert r.stderr.startswith(few) and f"songfeat: warning: {tmp_path / 'mlp'}: scored on only" in r.stderr
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


def test_out_never_deletes_what_is_not_a_bundle(tmp_path):
    """`train --out` over a folder of other files, or over a file, used to replace it (deleting what it held)."""
    from songfeat.errors import SongfeatError

    data = tiny_dataset(12)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.txt").write_text("years of work")
    with pytest.raises(SongfeatError, match=r"holds no model bundle \(1 entry, e\.g\. 'chapter1.txt'\)"):  # "1 entries"
        train_bundle("numeric-mlp", data, folder, epochs=1, progress=False)
    assert (folder / "chapter1.txt").read_text() == "years of work"
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    with pytest.raises(SongfeatError, match="not a model bundle"):
        train_bundle("numeric-mlp", data, file, epochs=1, progress=False)
    assert file.read_text() == "keep me"
    out = train_bundle("numeric-mlp", data, tmp_path / "b", epochs=1, progress=False)
    assert train_bundle("numeric-mlp", data, out, epochs=1, seed=1, progress=False) == out  # a bundle is replaced
    (tmp_path / "empty").mkdir()
    train_bundle("numeric-mlp", data, tmp_path / "empty", epochs=1, progress=False)  # so is an empty folder


BROKEN_CONFIGS = {
    "null": (lambda c: None, "not a bundle config object"),
    "list": (lambda c: [1, 2], "not a bundle config object"),
    "no targets": (lambda c: {k: v for k, v in c.items() if k != "targets"}, "'targets' must be"),
    "unknown target": (lambda c: {**c, "targets": ["groove"]}, "unknown feature 'groove'"),
    "bad hparams": (lambda c: {**c, "hparams": {**c["hparams"], "n_inputs": "six"}}, "cannot build model"),
    "short scaler": (lambda c: {**c, "scalers": {**c["scalers"], "numeric": {"mean": [0.0], "std": [1.0]}}},
                     "scaler 'numeric'"),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_a_broken_bundle_config_names_the_file(case, tmp_path):
    """An edited or mangled config.json fails with SongfeatError naming it, not an AttributeError from inside torch."""
    from songfeat.errors import SongfeatError

    out = train_bundle("numeric-mlp", tiny_dataset(12), tmp_path / "b", epochs=1, progress=False)
    edit, message = BROKEN_CONFIGS[case]
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(SongfeatError, match=message) as err:
        load_bundle(out)
    assert str(err.value).startswith(str(out))


def test_too_few_usable_rows_names_the_store_and_the_empty_columns(tiny_store, tmp_path):
    """Used to be 'only 0 training rows (of 0 usable)': no store named, no hint that a column is empty throughout."""
    from songfeat.errors import SongfeatError

    with pytest.raises(SongfeatError, match="only 0 training rows .*16 clips.*tempo in 16") as e:
        train_bundle("numeric-mlp", tiny_store, tmp_path / "m", numeric_source="measured", epochs=1, progress=False)
    assert str(e.value).startswith(f"{tiny_store}: ")  # built --no-descriptors: nothing measured


def test_evaluate_names_a_store_or_split_that_cannot_be_scored(tiny_store, tmp_path):
    """Recorded ids missing from the store were a bare KeyError; an empty or 1-clip split, numpy's concatenate error."""
    from songfeat.errors import SongfeatError

    out = train_bundle("numeric-mlp", tiny_store, tmp_path / "m", epochs=1, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    cfg["split"]["test"] = ["0" * 21 + "x", *cfg["split"]["test"]]  # a clip from some other store
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SongfeatError, match=f"^{tiny_store}: 1 of the bundle's .* not in it\\); is it the store"):
        evaluate_bundle(out, tiny_store)
    for ids, held in (([], "0 clips"), (cfg["split"]["test"][1:2], "1 clip")):  # it said "holds 1 clips"
        cfg["split"]["test"] = ids
        (out / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(SongfeatError, match=f"^{out}: its 'test' split holds {held}; metrics need at least 2"):
            evaluate_bundle(out, tiny_store)
    with pytest.raises(SongfeatError, match="records no 'holdout' split .*train, val, test"):
        evaluate_bundle(out, tiny_store, split="holdout")


def test_compare_flags_results_on_different_clips(tiny_store, tmp_path):
    """Bundles trained with other splits (or on other stores) were tabled side by side as if scored alike."""
    from songfeat.evaluate import compare

    a = train_bundle("numeric-mlp", tiny_store, tmp_path / "a", epochs=1, progress=False)
    b = train_bundle("numeric-mlp", tiny_store, tmp_path / "b", epochs=1, seed=7, progress=False)
    ra, rb = evaluate_bundle(a, tiny_store), evaluate_bundle(b, tiny_store)
    assert ra["clips"] != rb["clips"] and "**note**: scored on different sets of clips" in compare([ra, rb])
    assert "different sets" not in compare([ra, evaluate_bundle(a, tiny_store)])


def test_cli_targets_naming_nothing_is_refused(tiny_store, tmp_path):
    """`--targets ""` (an empty shell variable) used to train the family's default targets without a word."""
    from songfeat.cli import app

    r = CliRunner().invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "--out", str(tmp_path / "m"),
                                 "--epochs", "1", "--targets", ""])
    assert r.exit_code == 2 and "--targets names no feature" in r.output
    assert not (tmp_path / "m").exists()


def test_cli_research_errors_are_one_line_and_name_the_file(tiny_store, tmp_path, monkeypatch):
    """An OSError (a full disk) is an error line naming the file, not a traceback; control characters are escaped."""
    from songfeat import train
    from songfeat.cli import app

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "m" / "model.safetensors"))

    monkeypatch.setattr(train, "train_bundle", disk_full)
    r = CliRunner().invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == f"songfeat: error: {tmp_path / 'm' / 'model.safetensors'}: No space left on device"
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no\nsuch"), "--store", str(tiny_store)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "no\\nsuch" in r.output


def test_a_bundle_is_finished_before_it_replaces_the_old_one(tmp_path):
    """train-default and train-heads wrote the new weights into place, then exported model.onnx beside them: a stop in
    between left new weights beside the old model.onnx. `finish` now runs on the complete new bundle before the swap."""
    from songfeat.bundle import CONFIG, WEIGHTS, save_bundle
    from songfeat.models import create

    data = tiny_dataset(12)
    out = train_bundle("numeric-mlp", data, tmp_path / "b", epochs=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    config = json.loads((out / CONFIG).read_text())
    model = create("numeric-mlp", n_outputs=len(config["targets"]), **config.get("hparams", {}))

    def stopped(folder):
        assert (folder / WEIGHTS).is_file() and folder != out  # the complete new bundle, not yet in place
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_bundle(out, model, config, finish=stopped)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old bundle, whole
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # and no temporary folder left beside it
    save_bundle(out, model, config, finish=lambda folder: (folder / "extra.txt").write_text("made before the swap"))
    assert (out / "extra.txt").read_text() == "made before the swap"


def test_evaluate_audio_refuses_an_unknown_format_before_any_work(tmp_path):
    # `evaluate-audio -f xml` analysed every clip and then printed markdown, exit 0
    from typer.testing import CliRunner

    from songfeat.cli import app

    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(tmp_path / "labels.csv"), "--audio", str(tmp_path),
                                 "-f", "xml"])
    assert r.exit_code == 2 and r.stderr.strip() == "songfeat: error: --format must be md or json, not 'xml'"


def test_train_options_a_family_or_machine_cannot_take_are_one_line(tiny_store, tmp_path):
    # each printed a traceback from inside torch or a constructor: --device cuda without CUDA (AssertionError), --variant
    # on a family other than combiner (TypeError), and the composite 'heads' / 'stack' families (a shape mismatch)
    import torch
    from typer.testing import CliRunner

    from songfeat.cli import app

    base = ["train", "--store", str(tiny_store), "-o", str(tmp_path / "b"), "--epochs", "1"]
    cases = [(["cnn-simple", "--variant", "a"], "model 'cnn-simple' takes no 'variant'"),
             (["lstm-simple", "--activation", "sigmoid"], "model 'lstm-simple' takes no 'activation'"),
             (["numeric-mlp", "--device", "tpu"], "device must be cpu or cuda"),
             (["heads"], "'heads' is not trained from a store: it is fitted by `songfeat train-heads`"),
             (["stack"], "'stack' is not trained from a store")]
    if not torch.cuda.is_available():
        cases.append((["numeric-mlp", "--device", "cuda"], "sees no CUDA device; use --device cpu"))
    for args, message in cases:
        r = CliRunner().invoke(app, [base[0], *args, *base[1:]])
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
        assert r.stderr.strip().startswith("songfeat: error: ") and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "b").exists()


def test_an_output_that_cannot_be_written_is_named_before_training(tiny_store, tmp_path, monkeypatch):
    # a read-only place failed only once the bundle was trained, naming the temporary folder ('../ro/.b.2ybm2fl7')
    import errno
    import tempfile

    from typer.testing import CliRunner

    from songfeat.cli import app

    def read_only(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = tmp_path / "ro" / "b"
    r = CliRunner().invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "-o", str(out), "--epochs", "1"])
    assert r.exit_code == 2 and r.stderr.strip() == f"songfeat: error: {out}: cannot be written (Permission denied)", r.output


def test_artist_split_keeps_a_collaboration_with_its_artists():
    """Artists were grouped by the whole label string, so 'a1; a2' could be tested on while a1's own tracks trained."""
    ids = [f"t{i:02d}" for i in range(40)]
    groups = [f"a{i % 12}" for i in range(30)] + [f"a{i % 12}; a{(i + 5) % 12}" for i in range(10)]
    for seed in range(5):
        s = make_split(ids, "artist", seed=seed, groups=groups)
        names = {p: {n.strip() for i in s[p] for n in groups[ids.index(i)].split(";")} for p in s}
        assert names["train"].isdisjoint(names["test"]) and names["train"].isdisjoint(names["val"]), seed
        assert names["val"].isdisjoint(names["test"]), seed


def test_artist_split_without_any_artist_is_refused(tiny_store, tmp_path):
    """A label table with no artists made every clip its own 'artist': a random split, recorded as 'artist'."""
    with pytest.raises(ValueError, match="split 'artist' needs artist names in the label table, and it has none"):
        train_bundle("numeric-mlp", tiny_store, tmp_path / "m", split="artist", epochs=1, progress=False)
    assert not (tmp_path / "m").exists()


def test_a_sigmoid_family_learns_a_target_outside_0_1_with_a_linear_output(tmp_path):
    """cnn-simple and lstm-multitask end in a sigmoid: `--targets tempo` trained fine and every prediction stayed
    below 1 (MAE ~120 bpm). They now get a linear output for such targets; the combiner, always sigmoid, refuses them."""
    data = tiny_dataset()
    tempo = replace(data, targets=100 + 50 * data.targets[:, :1], target_names=("tempo",))
    for name in ("cnn-simple", "lstm-multitask"):
        b = load_bundle(train_bundle(name, tempo, tmp_path / name, targets=["tempo"], epochs=1, progress=False))
        assert b.config["hparams"]["out"] == "linear" and b.model.out == "linear", name
    b = load_bundle(train_bundle("lstm-multitask", data, tmp_path / "unit", epochs=1, progress=False))
    assert b.model.out == "sigmoid"  # the seed's head for [0, 1] features, as before
    with pytest.raises(ValueError, match=r"the dataset has no target column\(s\) \['danceability'\] \(it has: tempo\)"):
        train_bundle("cnn-simple", tempo, tmp_path / "d", epochs=1, progress=False)  # was tuple.index's bare error
    with pytest.raises(ValueError, match="combiner's output is a sigmoid.*tempo lies outside it"):
        train_bundle("combiner", data, tmp_path / "c", targets=["energy", "tempo"], epochs=1, progress=False)


@pytest.mark.parametrize("kw, message", [({"lr": 0.0}, "learning rate must be a positive number, not 0.0"),
                                          ({"lr": float("nan")}, "learning rate must be a positive number"),
                                          ({"lr": -1e-3}, "learning rate must be a positive number"),
                                          ({"epochs": 0}, "epochs must be at least 1, not 0"),
                                          ({"batch_size": 0}, "batch size must be at least 1, not 0")])
def test_numbers_that_cannot_train_are_refused_before_any_work(kw, message, tmp_path):
    """`--lr 0` trained at 1e-3 without a word (`lr or 1e-3`), and epochs=0 wrote an untrained model with metrics."""
    with pytest.raises(ValueError, match=message):
        train_bundle("numeric-mlp", tiny_dataset(12), tmp_path / "m", progress=False, **{"epochs": 1, **kw})
    assert not (tmp_path / "m").exists()


def test_an_explicit_split_whose_parts_share_clips_is_refused(tmp_path):
    """An explicit split with a clip in train and test reported metrics partly on training rows."""
    data = tiny_dataset(20)
    split = {"train": data.ids[:14], "val": data.ids[14:17], "test": data.ids[12:20]}
    with pytest.raises(ValueError, match="2 ids are in both 'train' and 'test'"):
        train_bundle("numeric-mlp", data, tmp_path / "m", split=split, epochs=1, progress=False)


def test_a_store_of_another_front_end_is_named_in_one_line(tiny_store):
    """Was 'store front-end FrontendSpec(kind=..., ...) differs from the bundle's FrontendSpec(...)', naming no file."""
    from songfeat.errors import SongfeatError
    from songfeat.frontend import MFCC_DENSE
    from songfeat.data.dataset import dataset_for_bundle

    config = {"inputs": ["frontend"], "frontend": MFCC_DENSE.to_dict(), "targets": ["energy"]}
    with pytest.raises(SongfeatError) as e:
        dataset_for_bundle(config, tiny_store)
    assert str(e.value) == (f"{tiny_store}: built with the custom mfcc (16x24) front-end, but the bundle reads "
                            "mfcc-dense (20x646); use the store it was trained from")


def test_mlp_head_on_a_store_of_another_front_end_is_one_line_naming_the_build_it_needs(tiny_store, tmp_path, monkeypatch):
    """`train mlp-head` (the head for musicnn vectors) on an MFCC store fitted an MLP to the flattened spectrogram and
    wrote the bundle without a word; it is refused now, naming the store and the build that makes one it can read."""
    from songfeat.cli import app
    from songfeat.data.store import Store
    from songfeat.errors import SongfeatError

    def unread(self):
        raise AssertionError("the store's array was read before its front-end was checked")

    monkeypatch.setattr(Store, "array", unread)
    with pytest.raises(SongfeatError) as e:
        train_bundle("mlp-head", tiny_store, tmp_path / "head", epochs=1, progress=False)
    assert str(e.value) == (f"{tiny_store}: built with the custom mfcc (16x24) front-end, but mlp-head needs a store "
                            "built with --frontend musicnn; build one from the same labels and audio with `songfeat "
                            "build --labels ... --audio ... --out NEW_STORE --frontend musicnn`")
    r = CliRunner().invoke(app, ["train", "mlp-head", "--store", str(tiny_store), "--out", str(tmp_path / "head")])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0] == f"songfeat: error: {e.value}", r.output
    assert not (tmp_path / "head").exists()
    with pytest.raises(SongfeatError, match="needs a store built with --frontend musicnn"):  # a Dataset says so too
        train_bundle("mlp-head", tiny_dataset(), tmp_path / "head", epochs=1, progress=False)


@pytest.fixture()
def musicnn_shaped_store(tiny_store, tmp_path):
    """tiny_store's clips and labels as a `--frontend musicnn` build would store them: one [3512, 1] vector per clip
    (random numbers: only the front-end recorded in the manifest and the array's shape matter here, not the tagger)."""
    import shutil

    from songfeat.frontend import MUSICNN

    store = shutil.copytree(tiny_store, tmp_path / "musicnn-store")
    manifest = json.loads((store / "manifest.json").read_text())
    manifest.update(frontend=MUSICNN.to_dict(), frontend_name="musicnn")
    (store / "manifest.json").write_text(json.dumps(manifest))
    n = len(np.load(store / "features.npy", mmap_mode="r"))
    np.save(store / "features.npy", np.random.default_rng(0).standard_normal((n, *MUSICNN.shape)).astype(np.float32))
    return store


SPECTROGRAM_FAMILIES = ("cnn-simple", "cnn-valence", "cnn-complex", "lstm-simple", "lstm-multitask", "combiner")


def _refused_unread(name: str, store: Path, spec: FrontendSpec, out: Path, monkeypatch) -> str:
    """Train `name` on `store`, which must be refused before its array is read, by the API and by the CLI in one line
    (exit 2, no output folder), and on a Dataset of the store's `spec` with the same words; the refusal's message."""
    from songfeat.cli import app
    from songfeat.data.store import Store
    from songfeat.errors import SongfeatError

    def unread(self):
        raise AssertionError("the store's array was read before its front-end was checked")

    monkeypatch.setattr(Store, "array", unread)
    with pytest.raises(SongfeatError) as e:
        train_bundle(name, store, out, epochs=1, progress=False)
    r = CliRunner().invoke(app, ["train", name, "--store", str(store), "--out", str(out)])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0] == f"songfeat: error: {e.value}", r.output
    assert not out.exists()
    data = tiny_dataset()
    same = replace(data, frontend=np.zeros((len(data), *spec.shape), np.float32), spec=spec)
    with pytest.raises(SongfeatError) as d:  # a Dataset says so too, naming no store
        train_bundle(name, same, out, epochs=1, progress=False)
    assert f"{store}: {d.value}" == str(e.value)
    return str(e.value)


@pytest.mark.parametrize("name", SPECTROGRAM_FAMILIES)
def test_a_spectrogram_family_on_a_musicnn_store_is_one_line_naming_the_build_it_needs(name, musicnn_shaped_store,
                                                                                      tmp_path, monkeypatch):
    """The LSTMs (and the combiner, an LSTM inside) trained silently on a musicnn store's one-frame vector, one step of
    one vector; the CNNs failed on it with a layer-size ValueError naming no store. Each is refused before the array is
    read, as mlp-head is on a spectrogram store: the store, its front-end and the builds the family reads."""
    from songfeat.frontend import MUSICNN

    assert _refused_unread(name, musicnn_shaped_store, MUSICNN, tmp_path / "run", monkeypatch) == (
        f"{musicnn_shaped_store}: built with the musicnn (3512x1) front-end, but {name} needs a store built with "
        "--frontend mfcc, mfcc-dense or logmel; build one from the same labels and audio with `songfeat build --labels "
        "... --audio ... --out NEW_STORE --frontend mfcc`")


@pytest.mark.parametrize(("name", "n_mfcc", "least"), [("cnn-complex", 12, "16x16"), ("cnn-simple", 3, "4x4"),
                                                     ("cnn-valence", 3, "4x4")])
def test_a_store_too_small_for_a_cnn_is_one_line_naming_it_and_the_smallest_shape(name, n_mfcc, least, tiny_store,
                                                                                  tmp_path, monkeypatch):
    """A custom spec of the right kind but under the family's `min_input_shape` failed with the model's ValueError
    ('input_shape [12, 24] is too small ...') after the whole array was read, naming no store; it is refused before the
    read now, naming the store, its front-end shape and the smallest the family takes."""
    import shutil

    from songfeat.errors import SongfeatError

    small = replace(TINY, n_mfcc=n_mfcc)
    store = shutil.copytree(tiny_store, tmp_path / "small-store")
    manifest = json.loads((store / "manifest.json").read_text())
    manifest.update(frontend=small.to_dict())
    (store / "manifest.json").write_text(json.dumps(manifest))
    n = len(np.load(store / "features.npy", mmap_mode="r"))
    np.save(store / "features.npy", np.random.default_rng(0).standard_normal((n, *small.shape)).astype(np.float32))
    assert _refused_unread(name, store, small, tmp_path / "run", monkeypatch) == (
        f"{store}: built with the custom mfcc ({n_mfcc}x24) front-end, but {name} needs a front-end of at least {least} "
        "(channels x frames); build one from the same labels and audio with `songfeat build --labels ... --audio ... "
        "--out NEW_STORE --frontend mfcc`")
    data = tiny_dataset()
    bare = replace(data, frontend=np.zeros((len(data), *small.shape), np.float32), spec=None)  # one without a spec is named by its array's shape
    with pytest.raises(SongfeatError, match=f"^built with a {n_mfcc}x24 front-end, but {name} needs a front-end of at "
                                            f"least {least} "):
        train_bundle(name, bare, tmp_path / "run", epochs=1, progress=False)


def test_the_lstms_take_a_front_end_too_small_for_the_cnns(tmp_path):
    """The shape check is the family's own: a 3x24 spectrogram is too small for a CNN's poolings, not for an LSTM."""
    data = tiny_dataset()
    small = replace(TINY, n_mfcc=3)
    thin = replace(data, frontend=np.asarray(data.frontend)[:, :3], spec=small)
    out = train_bundle("lstm-simple", thin, tmp_path / "lstm", epochs=1, progress=False)
    assert json.loads((out / "config.json").read_text())["hparams"]["input_size"] == 3


def test_numeric_mlp_trains_on_a_musicnn_store_without_reading_its_array(musicnn_shaped_store, tmp_path, monkeypatch):
    """numeric-mlp reads label columns only, so a store of any front-end serves it: it is not refused, nor its array read."""
    from songfeat.data.store import Store

    monkeypatch.setattr(Store, "array", lambda self: (_ for _ in ()).throw(AssertionError("array read")))
    out = train_bundle("numeric-mlp", musicnn_shaped_store, tmp_path / "mlp", epochs=1, progress=False)
    assert json.loads((out / "config.json").read_text())["frontend"] is None


@pytest.mark.parametrize("name", SPECTROGRAM_FAMILIES)
def test_a_spectrogram_family_trains_on_a_logmel_dataset(name, tmp_path):
    """Log-mel is a spectrogram over time as MFCCs are (docs/models.md: models take any spectrogram front-end, sized by
    the spec): the kind check lets it through."""
    data = tiny_dataset()
    logmel = replace(TINY, kind="logmel", n_mels=16)
    out = train_bundle(name, replace(data, spec=logmel), tmp_path / name, epochs=1, progress=False)
    assert json.loads((out / "config.json").read_text())["frontend"]["kind"] == "logmel"


def test_cli_build_limit_zero_is_refused(tiny_store, tmp_path):
    """`build --limit 0` wrote an empty store and exited 0 (a build matching no audio is an error, not an empty store)."""
    from songfeat.cli import app

    root = tiny_store.parent
    r = CliRunner().invoke(app, ["build", "--labels", str(root / "labels.csv"), "--audio", str(root / "audio"),
                                 "--out", str(tmp_path / "s"), "--limit", "0", "-j", "1", "--no-descriptors"])
    assert r.exit_code == 2 and "--limit" in r.output, r.output
    assert not (tmp_path / "s").exists()


def test_cli_train_interrupted_says_so(tiny_store, tmp_path, monkeypatch):
    """Ctrl-C during `train` exited 130 with nothing on stderr; then it always said the state was "kept in
    <out>.training", even before the first epoch had finished, when there was no such folder: now it names the folder
    only when it holds a checkpoint, and otherwise says nothing was kept."""
    from songfeat import train
    from songfeat.cli import app

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    args = ["train", "numeric-mlp", "--store", str(tiny_store), "-o", str(tmp_path / "m"), "--epochs", "2"]
    monkeypatch.setattr(train, "train_model", interrupted)  # Ctrl-C before the first epoch ends
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130
    assert r.stderr.strip() == (f"songfeat: error: interrupted before the first epoch was finished; nothing was kept (a "
                                f"bundle already at {tmp_path / 'm'} is left as it was)")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    _stop_after(monkeypatch, 1)  # Ctrl-C once the first epoch's checkpoint is saved
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130
    assert r.stderr.strip() == (f"songfeat: error: interrupted; the last finished epoch is kept in "
                                f"{tmp_path / 'm.training'}: rerun the same command to continue from it (a bundle "
                                f"already at {tmp_path / 'm'} is left as it was)")
    assert (tmp_path / "m.training" / "numeric-mlp.pt").is_file()


def _stop_after(monkeypatch, epochs: int) -> None:
    """Make `checkpoint.save` raise KeyboardInterrupt once it has saved `epochs` epochs (as Ctrl-C between epochs)."""
    from songfeat import checkpoint

    saved = {"n": 0}
    real = checkpoint.save

    def save(path, state):
        real(path, state)
        saved["n"] += 1
        if saved["n"] == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save)


@pytest.mark.parametrize("family", ["numeric-mlp", "combiner"])
def test_an_interrupted_training_resumes_to_the_same_weights(tiny_store, tmp_path, monkeypatch, family):
    """Ctrl-C in `songfeat train` lost every finished epoch: the run started over. Each epoch's state (weights, Adam's
    moments, batch-order and dropout generators, early-stop counters) is now kept in <out>.training/, and the same
    command continues from it to the weights an uninterrupted run gives (the combiner: after its first member)."""
    from safetensors.numpy import load_file

    from songfeat.checkpoint import folder_for

    kw = dict(epochs=4, seed=5, progress=False)
    whole = train_bundle(family, tiny_store, tmp_path / "whole", **kw)
    assert not folder_for(whole).exists()  # removed once the bundle is written
    stop = 2  # saves before Ctrl-C: after epoch 2 of the family's own fit
    if family == "combiner":  # ... after its two members' fits, each one save per epoch and one when done
        members = json.loads((whole / "config.json").read_text())["training"]["pretrained"]
        stop += sum(m["epochs_run"] + 1 for m in members.values())
    _stop_after(monkeypatch, stop)
    with pytest.raises(KeyboardInterrupt):
        train_bundle(family, tiny_store, tmp_path / "cut", **kw)
    kept = folder_for(tmp_path / "cut")
    assert kept.is_dir() and not (tmp_path / "cut").exists()
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="resuming .* after epoch 2 of 4"):
        cut = train_bundle(family, tiny_store, tmp_path / "cut", **kw)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not kept.exists()
    rec = json.loads((cut / "config.json").read_text())["training"]
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3, 4]


def test_a_checkpoint_of_another_run_is_not_resumed(tiny_store, tmp_path, monkeypatch):
    """A checkpoint left by other settings (or a damaged one) is set aside with a note: training starts over."""
    from safetensors.numpy import load_file

    from songfeat.checkpoint import folder_for

    _stop_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_bundle("numeric-mlp", tiny_store, tmp_path / "m", epochs=4, seed=5, progress=False)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="checkpoint of another run"):
        other = train_bundle("numeric-mlp", tiny_store, tmp_path / "m", epochs=4, seed=6, progress=False)
    fresh = train_bundle("numeric-mlp", tiny_store, tmp_path / "fresh", epochs=4, seed=6, progress=False)
    a, b = load_file(str(other / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    folder_for(tmp_path / "n").mkdir()
    (folder_for(tmp_path / "n") / "numeric-mlp.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable training checkpoint"):
        train_bundle("numeric-mlp", tiny_store, tmp_path / "n", epochs=2, seed=6, progress=False)


def test_cli_train_says_when_it_resumes(tiny_store, tmp_path, monkeypatch):
    from songfeat.cli import app

    _stop_after(monkeypatch, 1)
    args = ["train", "numeric-mlp", "--store", str(tiny_store), "-o", str(tmp_path / "m"), "--epochs", "3"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130 and "the last finished epoch is kept in" in r.stderr
    monkeypatch.undo()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"songfeat: note: {tmp_path / 'm.training' / 'numeric-mlp.pt'}: resuming numeric-mlp after epoch 1 of 3" in r.stderr


def test_a_column_constant_in_training_does_not_blow_up_a_new_value(tmp_path):
    """time_signature was 4 in every training row, so its std was floored at 1e-6: a 3/4 clip became z = -1e6 and the
    model's outputs were pinned at 0 or 1 (musicnn stores: channels that were 0 on every training clip, the same)."""
    from songfeat.train import apply_scalers

    data = tiny_dataset(30)
    data.numeric[:, 5] = 4.0  # time_signature: 4/4 throughout
    sc = fit_scalers(data)
    assert sc["numeric"]["std"][5] == 1.0 and sc["numeric"]["std"][0] != 1.0
    waltz = data.subset([0])
    waltz.numeric[0, 5] = 3.0
    _, z = apply_scalers(waltz, sc)
    assert float(z[0, 5]) == pytest.approx(-1.0)
    b = load_bundle(train_bundle("numeric-mlp", data, tmp_path / "m", epochs=3, progress=False))
    four, three = b.predict(numeric=data.numeric[:1]), b.predict(numeric=waltz.numeric)
    assert np.abs(four - three).max() < 1.0  # was ~1e5 apart (the outputs are linear)


def test_evaluate_reads_only_the_split_rows_of_the_store(tiny_store, tmp_path):
    """evaluate (and compare) loaded every row of the store's array to score the 15% test split: ~10 GB for 20k
    log-mel clips, where the split's rows are ~1.5 GB."""
    from songfeat.data.store import open_store

    out = train_bundle("cnn-simple", tiny_store, tmp_path / "c", epochs=1, progress=False)
    test = json.loads((out / "config.json").read_text())["split"]["test"]
    store = open_store(tiny_store)
    full, read = store.array(), []

    class Counting:
        shape, dtype = full.shape, full.dtype

        def __getitem__(self, rows):
            read.append(len(np.arange(len(full))[rows]))
            return full[rows]

    store.array = lambda: Counting()
    result = evaluate_bundle(out, store)
    assert result["n"] == len(test) and read == [len(test)] and len(test) < len(full)


def test_the_training_bar_is_drawn_on_stderr(capsys, monkeypatch):
    """The CLI shows the bar when stderr is a terminal, but it was drawn on stdout (into `train ... > log`)."""
    from songfeat.train import fit

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich takes stderr for a terminal: bars are drawn only there
    fit(Lin(), (None, torch.randn(16, 3), torch.zeros(16, 1)), None, epochs=2, progress=True, desc="bar-test")
    out, err = capsys.readouterr()
    assert out == "" and "bar-test" in err


def test_cli_train_says_how_many_clips_lacked_a_label(tiny_store, tmp_path):
    """Clips without the model's target were dropped in silence (only the bundle's provenance counted them)."""
    from songfeat.cli import app
    from songfeat.data.store import build_store

    labels = pd.read_csv(tiny_store.parent / "labels.csv", dtype={"track_id": str})
    labels.loc[:3, "valence"] = np.nan
    labels.to_csv(tmp_path / "labels.csv", index=False)
    build_store(tmp_path / "labels.csv", tiny_store.parent / "audio", tmp_path / "store", frontend=TINY, workers=1,
                progress=False, descriptors=False)
    r = CliRunner().invoke(app, ["train", "cnn-valence", "--store", str(tmp_path / "store"), "-o", str(tmp_path / "v"),
                                 "--epochs", "1"])
    assert r.exit_code == 0, r.output
    few = "held-out clips: too few for the figures to mean much"  # the 12 clips left test on 2, as 16 test on 3
    left, scored = r.stderr.splitlines()
    assert left == ("songfeat: warning: 4 of the store's 16 clips were left out: they lack a value the model needs "
                    "(valence in 4)") and few in scored
    r = CliRunner().invoke(app, ["train", "cnn-simple", "--store", str(tmp_path / "store"), "-o", str(tmp_path / "d"),
                                 "--epochs", "1"])
    assert r.exit_code == 0 and "left out" not in r.stderr and few in r.stderr  # danceability is there for every clip


def test_a_run_whose_loss_is_nan_from_the_start_is_refused_not_written(tmp_path):
    """`--lr 1e6` gave NaN losses from epoch 1; the untrained initial weights were kept ('best epoch 0') and written as
    a bundle with metrics, exit 0. A run that diverges later keeps its best finite epoch and says where it stopped."""
    from songfeat.train import fit

    with pytest.raises(ValueError, match="training diverged: the loss was not finite at epoch 1 .*try a smaller --lr"):
        train_bundle("numeric-mlp", tiny_dataset(), tmp_path / "m", lr=1e30, epochs=3, progress=False)
    assert not (tmp_path / "m").exists()

    class Breaks(torch.nn.Module):  # fine for two epochs, then NaN
        inputs = ("numeric",)

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)
            self.calls = 0

        def forward(self, frontend=None, numeric=None):
            self.calls += 1
            y = self.fc(numeric)
            return y * float("nan") if self.calls > 4 else y  # one batch + one validation pass per epoch

    x, y = torch.randn(16, 3), torch.zeros(16, 1)
    rec = fit(Breaks(), (None, x, y), (None, x, y), epochs=10, batch_size=16, progress=False)
    assert rec["diverged_at"] == 3 and rec["best_epoch"] in (1, 2) and rec["epochs_run"] == 3


def test_evaluate_audio_scores_a_trained_bundle_only_on_clips_it_never_trained_on(tiny_store, tmp_path):
    # evaluate-audio left out only a default model's fitting clips (stage2_ids, heads_clips): a `songfeat train` bundle
    # was scored on every labelled clip, most of which it had been fitted (or early-stopped) on
    from songfeat.accuracy import evaluate_audio

    out = train_bundle("cnn-simple", tiny_store, tmp_path / "cnn", epochs=1, progress=False)
    split = json.loads((out / "config.json").read_text())["split"]
    root = tiny_store.parent
    res = evaluate_audio(root / "labels.csv", root / "audio", model=out, progress=False)
    assert res["excluded_trained_on"] == len(split["train"]) + len(split["val"])
    assert res["n_clips"] + len(res["failed"]) == len(split["test"])


def test_weights_that_do_not_fit_their_config_are_one_short_line(tmp_path, monkeypatch):
    # torch's size-mismatch list for every tensor went into the message whole: one 'line' of ~2,000 characters
    import shutil

    from songfeat.bundle import DEFAULT_DIR, load_bundle
    from songfeat.errors import SongfeatError

    copy = tmp_path / "b"
    shutil.copytree(DEFAULT_DIR, copy)
    (copy / "model.onnx").unlink()  # the torch module is built (and its weights loaded) at load time
    config = json.loads((copy / "config.json").read_text())
    del config["hparams"]["n_evidence"]
    (copy / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("SONGFEAT_BACKEND", "torch")
    with pytest.raises(SongfeatError) as e:
        load_bundle(copy)
    text = str(e.value)
    assert "size mismatch for" in text and "more); does config.json belong with them?" in text, text
    assert len(text) < 400 and "\n" not in text, text


def test_evaluating_a_bundle_without_splits_points_at_evaluate_audio(tiny_store):
    # the shipped (or a train-heads) bundle has no store splits: 'records no test split (it has: none)' left the user
    # without the command that does score it
    from songfeat.errors import SongfeatError
    from songfeat.evaluate import evaluate_bundle

    with pytest.raises(SongfeatError, match=r"records no 'test' split \(it has: none\); .*songfeat evaluate-audio"):
        evaluate_bundle(None, tiny_store)


def test_a_refused_failed_or_interrupted_train_leaves_no_folders_it_made(tiny_store, tmp_path, monkeypatch):
    """`train --out new/dir/b` made new/dir before the training (to probe it) and left it behind, empty, when the
    training was then refused, failed or was interrupted. The folders it made go again while empty; a checkpoint
    kept in new/dir/b.training/ keeps them."""
    from songfeat import train
    from songfeat.checkpoint import folder_for
    from songfeat.cli import app

    out = tmp_path / "new" / "dir" / "b"
    r = CliRunner().invoke(app, ["train", "numeric-mlp", "--store", str(tiny_store), "-o", str(out), "--lr", "0"])
    assert r.exit_code == 2 and "learning rate" in r.output, r.output  # refused after the output was checked
    assert list(tmp_path.iterdir()) == []
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def failing(*_a, error=error, **_k):
            raise error

        monkeypatch.setattr(train, "train_model", failing)
        with pytest.raises(type(error)):
            train_bundle("numeric-mlp", tiny_store, out, epochs=1, progress=False)
        assert list(tmp_path.iterdir()) == [], error
    monkeypatch.undo()
    _stop_after(monkeypatch, 1)  # Ctrl-C after the first epoch's checkpoint: kept, and the folders holding it
    with pytest.raises(KeyboardInterrupt):
        train_bundle("numeric-mlp", tiny_store, out, epochs=2, progress=False)
    assert folder_for(out).is_dir() and not out.exists()
    monkeypatch.undo()
    (tmp_path / "new" / "dir").mkdir(exist_ok=True)
    made = tmp_path / "new" / "dir" / "more" / "b"  # a folder that was there before is kept: only those made go
    with pytest.raises(ValueError):
        train_bundle("numeric-mlp", tiny_store, made, epochs=0, progress=False)
    assert not (tmp_path / "new" / "dir" / "more").exists() and (tmp_path / "new" / "dir").is_dir()


@pytest.fixture(scope="module")
def gappy_store(tmp_path_factory):
    """A 10-clip store (tiny front-end, no descriptors) whose labels name artists but leave cells empty: liveness on
    every clip, speechiness on five, danceability on one."""
    import soundfile as sf

    from songfeat.data.store import build_store
    from songfeat.data.synthetic import synth_clip, synth_labels

    root = tmp_path_factory.mktemp("gappy")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(5)
    rows = []
    for i, (e, d, a, s) in enumerate(synth_labels(10, seed=5)):
        tid = f"{i:022d}"
        sf.write(audio / f"{tid}.wav", synth_clip(np.array([e, d, a, s]), 8000, 1.2, rng), 8000)
        rows.append({"track_id": tid, "artists": f"artist {i % 4}", "danceability": d if i else None, "energy": e,
                     "speechiness": s if i >= 5 else None, "acousticness": a, "instrumentalness": 0.5,
                     "valence": float(rng.random()), "liveness": None, "tempo": 120.0, "loudness": -8.0, "key": 1,
                     "mode": 1, "time_signature": 4})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    build_store(root / "labels.csv", audio, root / "store", frontend=TINY, workers=1, progress=False, descriptors=False)
    return root / "store"


def test_an_artist_split_of_no_usable_clip_names_the_empty_column_not_the_artists(gappy_store, tmp_path):
    """`train --split artist` where no clip had the targets said the labels named no artist (they do)."""
    from songfeat.errors import SongfeatError

    with pytest.raises(SongfeatError, match=r"only 0 training rows .*10 clips.*liveness in 10") as e:
        train_bundle("lstm-multitask", gappy_store, tmp_path / "m", targets=["liveness", "energy"], split="artist",
                     epochs=1, progress=False)
    assert "artist" not in str(e.value)


def test_measured_inputs_from_a_store_without_descriptors_say_so(tiny_store, tmp_path):
    """Listing every measured column as empty left the reader to guess the store was built --no-descriptors."""
    from songfeat.errors import SongfeatError

    with pytest.raises(SongfeatError, match="built with --no-descriptors"):
        train_bundle("numeric-mlp", tiny_store, tmp_path / "m", numeric_source="measured", epochs=1, progress=False)


def test_cli_train_says_when_its_test_part_is_too_small_to_score(gappy_store, tmp_path):
    """5 usable clips split 3/1/1: the bundle was written with no held-out metrics, and `evaluate` then refused it,
    with no word from `train`."""
    from songfeat.cli import app

    r = CliRunner().invoke(app, ["train", "lstm-multitask", "--store", str(gappy_store), "--out", str(tmp_path / "b"),
                                 "--epochs", "1", "--targets", "speechiness"])
    assert r.exit_code == 0, r.output
    assert load_bundle(tmp_path / "b").config["metrics"] is None
    assert f"songfeat: warning: {tmp_path / 'b'}: its test part holds 1 clip, too few to score" in r.output
    r = CliRunner().invoke(app, ["train", "lstm-multitask", "--store", str(gappy_store), "--out", str(tmp_path / "c"),
                                 "--epochs", "1", "--targets", "energy"])
    assert r.exit_code == 0 and "too few to score" not in r.output, r.output


def _disk_full_on_savefig(monkeypatch) -> None:
    """Make every PNG write fail as a full disk does, naming the temporary it was writing."""
    import errno

    from matplotlib.figure import Figure

    def full(self, fname, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))

    monkeypatch.setattr(Figure, "savefig", full)


def test_a_scatter_or_bundle_that_cannot_be_written_once_the_work_ran_is_status_1_naming_it(tiny_store, tmp_path,
                                                                                             monkeypatch):
    """`evaluate --scatter` on a full disk exited 2 (a refusal before any work) naming `.s.png.<pid>.<hex>.tmp`; a
    bundle that could not be written after training was status 2 too (README, "Exit status": 1)."""
    import safetensors.torch

    from songfeat.cli import app

    run = CliRunner()
    r = run.invoke(app, ["train", "lstm-multitask", "--store", str(tiny_store), "--out", str(tmp_path / "b"),
                         "--epochs", "1", "--targets", "energy"])
    assert r.exit_code == 0, r.output
    _disk_full_on_savefig(monkeypatch)
    r = run.invoke(app, ["evaluate", str(tmp_path / "b"), "--store", str(tiny_store), "--scatter",
                         str(tmp_path / "s.png")])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"songfeat: error: {tmp_path / 's.png'}: cannot write it (No space left on device)"

    def no_space(model, filename, *a, **k):
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_model", no_space)
    r = run.invoke(app, ["train", "lstm-multitask", "--store", str(tiny_store), "--out", str(tmp_path / "c"),
                         "--epochs", "1", "--targets", "energy"])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == (f"songfeat: error: {tmp_path / 'c'}: cannot write the bundle (No space left on "
                                "device)")


def _run_previews_cv():
    """scripts/run_previews_cv.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_previews_cv",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "run_previews_cv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_cv_script_page_on_the_whole_previews_set_is_the_published_one():
    """The run's figures now come from the run; on the full previews store they still read as docs/results-previews.md
    (so its numbers did not have to be regenerated)."""
    import argparse

    cv = _run_previews_cv()
    a = argparse.Namespace(store=cv.DEFAULT_STORE, folds=5, seed=42)
    manifest = {"labels": {"source": "../shared/data/spotify-previews/labels.csv"}, "limit": None, "failed": 0,
                "labels_without_audio": 0}
    page = cv.page_text(a, manifest, [102, 102], [], [], [])
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-previews.md").read_text(encoding="utf-8")
    assert doc.startswith(page.split("## Ours")[0])
    assert page.splitlines()[-2] in doc.splitlines()  # the run facts' header: 5 folds, 2 cores
    # a dozen previews (--limit 12) are not the skewed 102 the caveat describes
    page = cv.page_text(a, {**manifest, "limit": 12}, [12], [], [], [])
    assert "forró" not in page and "(n = 12)" in page and "102" not in page


def test_the_cv_script_folds_the_clips_a_family_can_use(gappy_store, tmp_path, capsys):
    """Its folds were drawn over every clip in the store, so a clip lacking the family's target reached train_bundle in
    a fold and stopped the run with a KeyError traceback; too few clips for the folds was a traceback too."""
    cv = _run_previews_cv()
    out = tmp_path / "cv.md"
    assert cv.main(["--store", str(gappy_store), "--only", "cnn-simple", "--folds", "2", "--out", str(out)]) == 0
    assert "cnn-simple" in out.read_text() and not list(tmp_path.glob(".cv.md*"))
    # the page is this run's: its store, folds and clips, not "n = 102", "5 folds" and the previews' skew
    page = out.read_text()
    assert page.startswith(f"# Seed model families on `{gappy_store}` (2-fold CV)\n")
    assert f"run_previews_cv.py --store {gappy_store} --folds 2 --seed 42" in page
    assert "(n = 9)" in page and "**Tiny-data caveat.** 9 clips. 4 or 5\ntest clips per fold" in page
    assert "a Pearson of 0.3 on 9 pairs has a 95% interval of\nroughly ±0.63)" in page  # Fisher z: tanh(z ± 1.96/√6)
    assert "training seconds (2 folds, 2 cores)" in page
    assert not any(s in page for s in ("102", "5 folds", "5-fold", "forró", "Twenty-odd"))
    capsys.readouterr()
    assert cv.main(["--store", str(gappy_store), "--only", "cnn-simple", "--folds", "20", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (f"run_previews_cv: error: {gappy_store}: cannot make "
                                                                 "20 folds from 9 ids")
    # lstm-multitask's five targets are on 5 clips: a fold holds 2 or 3 out, and trains on 1 of the rest (1 is val)
    assert cv.main(["--store", str(gappy_store), "--only", "lstm-multitask", "--folds", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"run_previews_cv: error: {gappy_store}: lstm-multitask: with 2 folds one trains on only 1 clip (2 at least); "
        "use more clips, or fewer --folds")


def test_evaluate_audio_leaves_out_a_train_bundles_clip_copied_under_another_name(tmp_path):
    """A `songfeat train` bundle's fitting clips were matched by track id only (its store kept no file hashes): the same
    audio copied under another name was scored as unseen, inflating the figures. The store now keeps each clip's
    content id and the bundle records its splits' (`provenance.heads_clip_content`, as a heads bundle does): the copy is
    left out, another file under a training clip's id is scored; a store built before content ids is matched by id,
    and the report says so."""
    import shutil

    import soundfile as sf

    from songfeat.accuracy import evaluate_audio
    from songfeat.analyze import content_id
    from songfeat.bundle import FITTED_CONTENT
    from songfeat.cli import app
    from songfeat.data.store import build_store, open_store
    from songfeat.data.synthetic import synth_clip

    rng = np.random.default_rng(7)
    knobs = [np.array([0.2 + 0.15 * i, 0.3, 0.5, 0.1]) for i in range(5)]
    audio, mine = tmp_path / "audio", tmp_path / "mine"
    audio.mkdir(), mine.mkdir()
    ids = ["a" * 22, "b" * 22]
    for tid, k in zip(ids, knobs):
        sf.write(audio / f"{tid}.wav", synth_clip(k, 8000, 1.2, rng), 8000)
    rows = [{"track_id": t, "danceability": 0.3 + 0.2 * i} for i, t in enumerate(ids)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    build_store(tmp_path / "labels.csv", audio, tmp_path / "store", frontend=TINY, workers=1, progress=False,
                descriptors=False)
    assert open_store(tmp_path / "store").content_ids() == {t: content_id(audio / f"{t}.wav") for t in ids}

    shutil.copy(audio / f"{ids[0]}.wav", mine / "copy.wav")  # a training clip's audio under another name
    sf.write(mine / f"{ids[1]}.wav", synth_clip(knobs[2], 8000, 1.2, rng), 8000)  # a training clip's id, other audio
    for i in (3, 4):
        sf.write(mine / f"x{i}.wav", synth_clip(knobs[i], 8000, 1.2, rng), 8000)
    labels = tmp_path / "mine.csv"
    labels.write_text(f"track_id,danceability\ncopy,0.3\n{ids[1]},0.4\nx3,0.6\nx4,0.8\n")
    split = {"train": ids, "val": [], "test": []}

    out = train_bundle("cnn-simple", tmp_path / "store", tmp_path / "cnn", epochs=1, split=split, progress=False)
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov[FITTED_CONTENT] == {"train": [content_id(audio / f"{t}.wav") for t in ids], "val": []}
    got = evaluate_audio(labels, mine, model=out, progress=False)
    assert sorted(p["track_id"] for p in got["predictions"]) == sorted([ids[1], "x3", "x4"])  # the copy is not scored
    assert (got["excluded_trained_on"], got["excluded_by"]) == (1, "content")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(mine), "--model", str(out)])
    assert r.exit_code == 0 and "1 left out (the model was fitted on them; matched by content: the same audio)" in r.stdout

    # a store built before content ids (no column in its index): still read, its bundle matched by id, said
    index = pd.read_parquet(tmp_path / "store" / "index.parquet")
    index.drop(columns="content").to_parquet(tmp_path / "store" / "index.parquet")
    assert open_store(tmp_path / "store").content_ids() is None
    old = train_bundle("cnn-simple", tmp_path / "store", tmp_path / "old", epochs=1, split=split, progress=False)
    assert FITTED_CONTENT not in json.loads((old / "config.json").read_text())["provenance"]
    got = evaluate_audio(labels, mine, model=old, progress=False)
    assert sorted(p["track_id"] for p in got["predictions"]) == ["copy", "x3", "x4"]
    assert (got["excluded_trained_on"], got["excluded_by"]) == (1, "id")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(mine), "--model", str(old)])
    assert r.exit_code == 0 and "matched by track id: this bundle records no content ids of its clips" in r.stdout


def test_a_second_train_into_a_bundle_being_trained_is_refused_at_once(tiny_store, tmp_path):
    # two `train --out run` at once shared run.training/ (the second resumed the first's checkpoint mid-run, or set it
    # aside and each overwrote the other's every epoch), and the later rename replaced the first's bundle while both
    # said 'wrote run'; now the second is refused before any work, in one line naming the bundle and the run holding it
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "songfeat", "train", "lstm-multitask", "--store", str(tiny_store), "--out", str(out),
           "--targets", "energy", "--patience", "0"]
    first = subprocess.Popen(cmd + ["--epochs", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.with_name("run.training") / "lstm-multitask.pt").exists():  # its first epoch is kept: it runs
            assert first.poll() is None and time.monotonic() < deadline, "the first train did not start"
            time.sleep(0.05)
        p = subprocess.run(cmd + ["--epochs", "1"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.splitlines() == [
            f"songfeat: error: {out}: is being written by another songfeat run (pid {first.pid}); wait for it to end, "
            "or choose another --out"], p.stderr
        assert not out.exists() and first.poll() is None  # nothing written, the first run untouched
    finally:
        first.kill()
        first.wait()
