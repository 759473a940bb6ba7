"""The research pipeline through the CLI, end to end on a tiny generated labelled set:
`build --frontend musicnn` -> `train mlp-head` -> `evaluate` -> `analyze --model`, and `train-heads` -> `analyze --model`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songfeat import synth
from songfeat.cli import app
from songfeat.evaluate import _fmt

from test_store import clip, make_dataset

run = CliRunner()


def _ok(args):
    r = run.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.slow
def test_build_musicnn_train_mlp_head_evaluate_analyze(tmp_path):
    labels, audio, ids = make_dataset(tmp_path, 8, seconds=2.0)
    store, bundle = tmp_path / "store", tmp_path / "bundle"
    r = _ok(["build", "--labels", labels, "--audio", audio, "--out", store, "--frontend", "musicnn", "-j", "1",
             "--no-descriptors"])
    assert "built 8 of 8 clips" in r.output
    _ok(["train", "mlp-head", "--store", store, "--out", bundle, "--targets", "energy,valence", "--epochs", "3"])
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["model"] == "mlp-head" and cfg["targets"] == ["energy", "valence"]
    ev = json.loads(_ok(["evaluate", bundle, "--store", store, "--format", "json"]).stdout)
    assert "energy" in json.dumps(ev)  # the held-out metrics name the targets
    wav = tmp_path / "new.wav"
    sf.write(wav, clip(11, 3.0), 44100)
    out = json.loads(_ok(["analyze", wav, "--model", bundle]).stdout)
    assert 0.0 <= out["energy"] <= 1.0 and 0.0 <= out["valence"] <= 1.0


@pytest.mark.slow
def test_train_heads_cli_learns_an_ordering(tmp_path):
    """Energy labelled by level on drum loops: the fitted heads rank the loudest clip above the quietest."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["track_id,energy"]
    for i, db in enumerate((-32, -28, -24, -20, -16, -12, -8, -4)):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100 + 5 * i, seconds=6.0, peak_dbfs=db, seed=i), 44100)
        rows.append(f"c{i},{0.1 + 0.1 * i:.2f}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    bundle = tmp_path / "heads"
    r = _ok(["train-heads", "--labels", tmp_path / "labels.csv", "--audio", audio, "--out", bundle,
             "--cache", tmp_path / "cache"])
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["model"] == "heads" and cfg["split"]["heads"]["targets_labelled"] == ["energy"]
    out = json.loads(_ok(["analyze", audio / "c0.wav", audio / "c7.wav", "--model", bundle]).stdout)
    energy = {o["path"]: o["energy"] for o in out}
    quiet, loud = (np.mean([v for k, v in energy.items() if k.endswith(f"c{i}.wav")]) for i in (0, 7))
    assert loud > quiet + 0.2, energy
    # the six unlabelled features: their unconstrained heads fell to the floor (0.02 for every song); now they are
    # stage 1's own prediction from the measured descriptors, and the user is told so
    assert "no labels for danceability, speechiness, acousticness, instrumentalness, valence, liveness" in r.stderr
    from songfeat.analyze import get_bundle
    from songfeat.descriptors import measure_file

    model = get_bundle(bundle).model
    for o in out:
        num = get_bundle(bundle).numeric_row(measure_file(o["path"]))
        sc = cfg["scalers"]["numeric"]
        x = (np.asarray(num, np.float32) - np.array(sc["mean"])) / np.maximum(np.array(sc["std"]), 1e-8)
        import torch

        stage1 = model.base(numeric=torch.as_tensor(x, dtype=torch.float32)[None])[0].clamp(0.01, 0.99).tolist()
        for j, t in enumerate(cfg["targets"]):
            if t != "energy":
                assert abs(o[t] - stage1[j]) < 1e-3, (t, o[t], stage1[j])


def test_train_heads_names_what_it_leaves_out(tmp_path):
    """Bad label rows, ids without audio and the count behind 'too few' are each said, before any model runs."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100, seconds=2.0, seed=i), 44100)
    (tmp_path / "labels.csv").write_text("track_id,energy\nc0,0.2\nc1,7\nc2,0.4\nc3,0.5\nc9,0.3\n")
    r = run.invoke(app, ["train-heads", "--labels", str(tmp_path / "labels.csv"), "--audio", str(audio),
                         "--out", str(tmp_path / "heads"), "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 2
    assert "label row dropped: " in r.output and "line 3 (c1): out of range: energy 7" in r.output
    assert "1 labelled id has no audio file" in r.output and "(e.g. c9)" in r.output
    assert "3 usable labelled clips (1 label row unusable, 1 without audio); need at least 5" in r.output
    assert not (tmp_path / "cache").exists()  # refused before any clip was analysed


def _two_clips(tmp_path, labels: str):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(6):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100, seconds=2.0, seed=i), 44100)
    (tmp_path / "labels.csv").write_text(labels)
    return ["train-heads", "--labels", str(tmp_path / "labels.csv"), "--audio", str(audio), "--cache", str(tmp_path / "cache")]


LABELS6 = "track_id,energy\n" + "".join(f"c{i},0.{i + 1}\n" for i in range(6))


def test_train_heads_refuses_an_out_it_cannot_write_before_analysing(tmp_path):
    """A non-bundle folder (whose files a bundle would replace) or a path under a file is one error line, before any
    clip is analysed, not after the whole fit (or a FileExistsError traceback)."""
    args = _two_clips(tmp_path, LABELS6)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "a_file").write_text("x")
    for out, says in ((tmp_path / "notes", "holds no model bundle"), (tmp_path / "a_file" / "b", "a_file is not a folder")):
        r = run.invoke(app, args + ["--out", str(out)])
        assert r.exit_code == 2 and f"songfeat: error: {out}: " in r.output and says in r.output, r.output
        assert not (tmp_path / "cache").exists()  # refused before any clip was analysed
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_train_heads_refuses_a_base_model_the_heads_cannot_sit_on(tmp_path):
    """A --model of another family (here a numeric MLP fed by labels) is named in one line before any analysis, not a
    KeyError after it."""
    from songfeat import models
    from songfeat.bundle import save_bundle

    targets = ["danceability", "energy", "speechiness", "acousticness", "instrumentalness"]
    inputs = ["valence", "tempo", "loudness", "key", "mode", "time_signature"]
    save_bundle(tmp_path / "mlp", models.create("numeric-mlp", n_outputs=5, n_inputs=6),
                {"model": "numeric-mlp", "hparams": {"n_inputs": 6}, "targets": targets, "inputs": ["numeric"],
                 "numeric_inputs": inputs, "numeric_source": "labels",
                 "scalers": {"numeric": {"mean": [0.0] * 6, "std": [1.0] * 6}}})
    r = run.invoke(app, _two_clips(tmp_path, LABELS6) + ["--out", str(tmp_path / "heads"), "--model", str(tmp_path / "mlp")])
    assert r.exit_code == 2 and f"songfeat: error: {tmp_path / 'mlp'}: a 'numeric-mlp' bundle cannot be" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "cache").exists()


def test_train_heads_counts_only_clips_with_a_learned_label(tmp_path):
    """Rows labelled only on tempo teach the heads nothing: one energy label among six rows is too few, said before any
    clip is analysed (it used to fit the heads on that one clip)."""
    labels = "track_id,tempo,energy\nc0,100,0.5\n" + "".join(f"c{i},100,\n" for i in range(1, 6))
    r = run.invoke(app, _two_clips(tmp_path, labels) + ["--out", str(tmp_path / "heads")])
    assert r.exit_code == 2, r.output
    assert "5 clips label none of the learned features, left out (e.g. c1)" in r.output
    assert "1 usable labelled clip (0 label rows unusable, 0 without audio, 5 without a learned label)" in r.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "heads").exists()


def test_numeric_ids_pair_with_unpadded_file_names_and_folders_are_not_audio(tmp_path):
    # Ids 1, 2, 3 are read as FMA-style ids (000001 ...), so files named 1.wav ... paired with nothing (every clip
    # "without audio", though `build` pairs them); and a folder named like audio was taken as a clip.
    import soundfile as sf

    from songfeat.data.labels import pair_labels_audio

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in (1, 2, 3):
        sf.write(audio / f"{i}.wav", np.zeros(100, np.float32), 44100)
    sf.write(audio / "000004.wav", np.zeros(100, np.float32), 44100)
    (audio / "5.wav").mkdir()
    (tmp_path / "labels.csv").write_text("track_id,energy\n1,0.5\n2,0.4\n3,0.3\n4,0.2\n5,0.1\n")
    rows, missing = pair_labels_audio(tmp_path / "labels.csv", audio)
    assert dict(zip(rows["track_id"], [p.rsplit("/", 1)[-1] for p in rows["path"]])) == {
        "000001": "1.wav", "000002": "2.wav", "000003": "3.wav", "000004": "000004.wav"}
    assert missing == ["000005"]


def test_train_heads_names_a_misspelt_feature_column(tmp_path):
    """A 'valance' column was read as nothing and the fit went on: the user is told, by the refusal or the fit."""
    labels = "track_id,energy,valance\n" + "".join(f"c{i},,0.{i + 1}\n" for i in range(6))
    r = run.invoke(app, _two_clips(tmp_path, labels) + ["--out", str(tmp_path / "heads")])
    assert r.exit_code == 2, r.output
    assert "column 'valance' is not read: no feature has that name (did you mean 'valence'?)" in r.output


def test_a_refused_failed_or_interrupted_train_heads_leaves_no_folders_it_made(tmp_path, monkeypatch):
    """`train-heads --out new/dir/b` made new/dir before the fit (to probe it) and left it behind, empty, when the fit
    was then refused, failed or was interrupted. The folders it made go again; one that was there before is kept."""
    from songfeat import records
    from songfeat.own_heads import train_heads

    work = tmp_path / "work"
    work.mkdir()
    args = _two_clips(tmp_path, "track_id,energy\nc0,0.1\nc1,0.2\n")  # two labelled clips: refused, 5 are needed
    r = run.invoke(app, args + ["--out", str(work / "new" / "dir" / "b")])
    assert r.exit_code == 2 and "2 usable labelled clips" in r.output, r.output
    assert list(work.iterdir()) == []
    (tmp_path / "labels.csv").write_text(LABELS6)
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def failing(*_a, error=error, **_k):
            raise error

        monkeypatch.setattr(records, "get_records", failing)  # the clips' analysis, the first of the long work
        with pytest.raises(type(error)):
            train_heads(tmp_path / "labels.csv", tmp_path / "audio", work / "new" / "dir" / "b", cache=tmp_path / "cache",
                        progress=False)
        assert list(work.iterdir()) == [], error
        (work / "new").mkdir()
        with pytest.raises(type(error)):
            train_heads(tmp_path / "labels.csv", tmp_path / "audio", work / "new" / "dir" / "b", cache=tmp_path / "cache",
                        progress=False)
        assert [p.name for p in work.iterdir()] == ["new"] and list((work / "new").iterdir()) == [], error
        (work / "new").rmdir()


@pytest.fixture
def quick_fit(monkeypatch):
    """train-heads' fits with one member and few steps: the tests below are about what is scored and said, not how well."""
    import functools

    from songfeat import own_heads

    monkeypatch.setattr(own_heads, "FitConfig", functools.partial(own_heads.FitConfig, members=1, steps=60))


def test_train_heads_scores_its_fit_on_clips_each_fold_left_out(tmp_path, quick_fit, monkeypatch):
    """train-heads said only 'wrote <bundle>', though on a few clips the heads learn any labels by heart (these are
    labels of nothing): now it prints each labelled feature's K-fold MAE and r beside the labels' mean, the figures
    `evaluate-audio --cv` gives for the same folds, and keeps them in the bundle's config; --cv 0 skips it, saying so.
    Both commands' folds are one function (`own_heads.held_out_predictions`; they were two loops alike)."""
    from songfeat import own_heads

    callers, numeric = [], []
    shared = own_heads.held_out_predictions

    def spy(*a, **k):
        import inspect

        callers.append(inspect.stack()[1].function)
        num = a[4]  # numeric_std: evaluate-audio's is a function of the fold (its loudness calibration refitted)
        numeric.append(num(np.arange(1, 6), np.arange(1)) if callable(num) else num)
        return shared(*a, **k)

    monkeypatch.setattr(own_heads, "held_out_predictions", spy)
    args = _two_clips(tmp_path, "track_id,energy,valence\n" + "".join(f"c{i},0.{i + 1},{'' if i == 2 else 0.3}\n"
                                                                      for i in range(6)))
    r = _ok(args + ["--out", tmp_path / "heads"])
    held = json.loads((tmp_path / "heads" / "config.json").read_text())["split"]["heads"]["held_out"]
    energy = held["model"]["targets"]["energy"]
    assert held["folds"] == 5 and energy["n"] == 6 and held["model"]["targets"]["valence"]["n"] == 5  # a blank: 5
    assert held["model"]["targets"]["valence"]["pearson"] is None  # a constant label has no r: null, not NaN
    assert r.stdout.startswith("Held out: 5-fold cross-validation over the 6 clips")
    mean = held["mean_predictor"]["targets"]["energy"]["mae"]
    assert f"| energy | {energy['mae']:.3f} | {energy['pearson']:.2f} | {mean:.3f} | " in r.stdout, r.stdout
    ev = json.loads(_ok(["evaluate-audio", "--labels", tmp_path / "labels.csv", "--audio", tmp_path / "audio",
                         "--model", tmp_path / "heads", "--cv", "5", "-f", "json"]).stdout)
    assert ev["learned"]["model"]["targets"]["energy"]["mae"] == energy["mae"]  # the same folds, the same function
    assert ev["learned"]["mean_predictor"]["targets"]["energy"]["mae"] == mean
    assert callers == ["train_heads", "_heads_cv"]
    # and the same inputs: train-heads standardised stage 1's in float64, evaluate-audio (and analysis) in float32,
    # so on the 11 FMA clips the two tables differed in the third digit (valence 0.433 against 0.434)
    assert numeric[0].dtype == numeric[1].dtype and np.array_equal(numeric[0], numeric[1])
    md = _ok(["evaluate-audio", "--labels", tmp_path / "labels.csv", "--audio", tmp_path / "audio",
              "--model", tmp_path / "heads", "--cv", "5"]).stdout
    # one renderer (`accuracy.learned_table`): train-heads' rows, the average's too, begin as evaluate-audio's do (which
    # adds the catalogue mean's columns before the count)
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    assert table[0] == "| feature | model MAE | model r | mean_predictor MAE | mean_predictor r | clips |", r.stdout
    assert [ln.split(" | ")[0] for ln in table[2:]] == ["| energy", "| valence", "| **average**"], r.stdout
    for ln in table[2:]:
        assert any(row.startswith(ln.rsplit(" | ", 1)[0] + " | ") for row in md.splitlines()), (ln, md)
    r = _ok(args + ["--out", tmp_path / "quick", "--cv", "0"])
    assert r.stdout.splitlines()[0] == "not scored held out (--cv 0); --cv 5 scores the fit on clips it did not see"
    assert "held_out" not in json.loads((tmp_path / "quick" / "config.json").read_text())["split"]["heads"]
    for k, says in (("1", "at least 2 folds, got 1"), ("7", "at most the number of clips (6), got 7")):
        r = run.invoke(app, args + ["--out", str(tmp_path / "refused"), "--cv", k])
        assert r.exit_code == 2 and r.stderr.strip().endswith(says), r.output
        assert not (tmp_path / "refused").exists()


def test_the_mean_baseline_is_scored_where_a_fold_has_a_mean_label(tmp_path, quick_fit):
    """valence labelled on 2 clips that share a fold (c2, c3: `index_folds(6, 5, 42)`): that fold's training clips have
    no valence, so the labels' mean has no guess for them (NaN), yet the baseline's valence figures claimed n=2 and
    showed "–" as if undefined on 2 clips; it is now scored on the clips it has a guess for, none, and says n=0.
    (Every other fold trains on both, so a feature's baseline is wholly scored or not at all.) The model's own figures
    are as before, and a baseline scored on the model's clips says no n."""
    args = _two_clips(tmp_path, "track_id,energy,valence\n" + "".join(
        f"c{i},0.{i + 1},{f'0.{i + 2}' if i in (2, 3) else ''}\n" for i in range(6)))
    r = _ok(args + ["--out", tmp_path / "heads"])
    held = json.loads((tmp_path / "heads" / "config.json").read_text())["split"]["heads"]["held_out"]
    model, mean = held["model"]["targets"]["valence"], held["mean_predictor"]["targets"]["valence"]
    assert model["n"] == 2 and model["mae"] is not None and mean["n"] == 0 and mean["mae"] is None
    assert f"| valence | {model['mae']:.3f} | {_fmt(model['pearson'], 2)} | – (n=0) | – | 2 |" in r.stdout, r.stdout
    energy = held["mean_predictor"]["targets"]["energy"]
    assert energy["n"] == 6 and f"| {energy['mae']:.3f} | {_fmt(energy['pearson'], 2)} | 6 |" in r.stdout, r.stdout
    ev = _ok(["evaluate-audio", "--labels", tmp_path / "labels.csv", "--audio", tmp_path / "audio",
              "--model", tmp_path / "heads", "--cv", "5", "-f", "json"]).stdout
    ev = json.loads(ev)["learned"]
    assert ev["mean_predictor"]["targets"]["valence"]["n"] == 0 and ev["model"]["targets"]["valence"]["n"] == 2
    assert ev["model"]["targets"]["valence"]["mae"] == model["mae"]
    md = _ok(["evaluate-audio", "--labels", tmp_path / "labels.csv", "--audio", tmp_path / "audio",
              "--model", tmp_path / "heads", "--cv", "5"]).stdout
    row = next(ln for ln in md.splitlines() if ln.startswith("| valence |"))
    assert "| – (n=0) | – |" in row and row.endswith("| 2 |"), md
    assert "(n=" not in next(ln for ln in md.splitlines() if ln.startswith("| energy |")), md


def test_train_heads_exits_1_for_clips_that_fail_and_a_bundle_it_cannot_write(tmp_path, quick_fit, monkeypatch):
    """A clip that would not analyse was a warning and the run said 0, and a bundle that could not be written (or too
    few clips left to fit once the others failed) said 2, the status of a refusal before any work: the README gives 1
    when the work ran and some of it failed, the count at the end, as build and evaluate-audio do."""
    from songfeat import bundle

    args = _two_clips(tmp_path, LABELS6)
    (tmp_path / "audio" / "c5.wav").write_bytes(b"RIFF broken")
    r = run.invoke(app, args + ["--out", str(tmp_path / "heads")])
    assert r.exit_code == 1 and (tmp_path / "heads" / "config.json").is_file(), r.output
    assert f"songfeat: error: {tmp_path / 'audio' / 'c5.wav'}: " in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "songfeat: 1 of 6 clips failed (the heads were fitted on the others)"

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device", str(tmp_path / "full"))

    monkeypatch.setattr(bundle, "save_bundle", disk_full)
    r = run.invoke(app, args + ["--out", str(tmp_path / "full")])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == (
        f"songfeat: error: {tmp_path / 'full'}: cannot write the bundle (No space left on device)"), r.output
    (tmp_path / "audio" / "c4.wav").write_bytes(b"RIFF broken")
    r = run.invoke(app, args + ["--out", str(tmp_path / "few")])
    assert r.exit_code == 1 and "4 usable labelled clips (2 of 6 clips failed to analyse)" in r.stderr, r.output
    assert r.stderr.count("songfeat: error: ") == 3 and not (tmp_path / "few").exists()


def test_train_heads_reads_an_out_of_range_cell_as_missing_and_keeps_the_row(tmp_path, quick_fit):
    """A valence of 1.7 dropped its whole row, the clip's energy label with it: now that cell alone is missing, said in
    one line naming the table, the row's id, the column and the value, and the clip is fitted on its energy."""
    labels = "track_id,energy,valence\n" + "".join(f"c{i},0.{i + 1},{'1.7' if i == 1 else f'0.{i + 2}'}\n" for i in range(6))
    r = _ok(_two_clips(tmp_path, labels) + ["--out", tmp_path / "heads", "--cv", "2"])
    assert (f"songfeat: warning: {tmp_path / 'labels.csv'}: line 3 (c1): valence 1.7 outside [0, 1]: read as missing "
            "(the row's other labels are used)") in r.stderr, r.output
    assert "label row dropped" not in r.output
    cfg = json.loads((tmp_path / "heads" / "config.json").read_text())
    assert cfg["split"]["heads"]["clips"] == 6 and "c1" in cfg["provenance"]["heads_clips"]["own"]
    held = cfg["split"]["heads"]["held_out"]["model"]["targets"]
    assert held["energy"]["n"] == 6 and held["valence"]["n"] == 5


def test_constant_labels_are_named():
    from songfeat.evaluate import constant_labels

    y = np.array([[0.3, 0.1, np.nan, np.nan], [0.3, 0.2, 0.4, np.nan], [0.3, 0.3, np.nan, np.nan]])
    assert constant_labels(y, ["valence", "energy", "liveness", "speechiness"]) == {
        "valence": "all 3 clips labelled with it have the same value (0.3)",
        "liveness": "only 1 clip is labelled with it (0.4)"}


def test_train_heads_warns_of_a_label_that_cannot_teach_and_still_fits_finite(tmp_path, quick_fit):
    """Every clip labelled valence 0.3, or one clip alone labelled liveness: a head fitted on that learns a constant, and
    nothing said so. Now a warning names the feature and why; the fit goes on, without NaN anywhere."""
    labels = "track_id,energy,valence,liveness\n" + "".join(f"c{i},0.{i + 1},0.3,{'0.4' if i == 0 else ''}\n"
                                                             for i in range(6))
    r = _ok(_two_clips(tmp_path, labels) + ["--out", tmp_path / "heads", "--cv", "2"])
    table = tmp_path / "labels.csv"
    for t, why in (("valence", "all 6 clips labelled with it have the same value (0.3)"),
                   ("liveness", "only 1 clip is labelled with it (0.4)")):
        assert (f"songfeat: warning: {table}: {t}: {why}; the heads cannot learn how {t} varies from that, and its "
                "held-out r is undefined: label clips that differ in it, or leave the column out") in r.stderr, r.output
    assert "energy:" not in r.stderr
    cfg = json.loads((tmp_path / "heads" / "config.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"{c} in config.json"))  # strict JSON: no NaN
    assert cfg["split"]["heads"]["targets_labelled"] == ["energy", "valence", "liveness"]
    out = json.loads(_ok(["analyze", tmp_path / "audio" / "c0.wav", "--model", tmp_path / "heads"]).stdout)
    assert all(np.isfinite(out[t]) for t in cfg["targets"]), out


def test_evaluate_audio_leaves_out_the_audio_a_bundle_was_fitted_on_not_its_ids(tmp_path, quick_fit):
    """evaluate-audio left out every clip whose id was among the bundle's fitting clips' ids, so a user's own clips
    numbered like the default model's FMA tracks (000002, ...) were dropped as 'fitted on'. A bundle now records its
    clips' content ids (`provenance.heads_clip_content`): another clip under a fitting clip's id is scored, the fitting
    clip's own bytes under another name are not; a bundle without them (older) is matched by id, and says so."""
    import shutil

    _ok(_two_clips(tmp_path, LABELS6) + ["--out", tmp_path / "heads", "--cv", "0"])
    mine = tmp_path / "mine"
    mine.mkdir()
    sf.write(mine / "c0.wav", synth.drum_pattern(140, seconds=2.0, seed=20), 44100)  # c0's id, other audio
    shutil.copy(tmp_path / "audio" / "c1.wav", mine / "copy.wav")  # a fitting clip's audio under another name
    for i in (2, 3):
        sf.write(mine / f"x{i}.wav", synth.drum_pattern(80 + 20 * i, seconds=2.0, seed=20 + i), 44100)
    labels = tmp_path / "mine.csv"
    labels.write_text("track_id,energy,valence\nc0,0.2,0.5\ncopy,0.4,0.5\nx2,0.6,0.5\nx3,0.9,0.5\n")
    from songfeat.accuracy import evaluate_audio

    got = evaluate_audio(labels, mine, model=tmp_path / "heads", progress=False)
    assert sorted(p["track_id"] for p in got["predictions"]) == ["c0", "x2", "x3"]  # c0 scored, the copy not
    assert (got["excluded_trained_on"], got["excluded_by"]) == (1, "content")
    args = ["evaluate-audio", "--labels", labels, "--audio", mine]
    r = _ok(args + ["--model", tmp_path / "heads"])
    assert "Clips: 3; 1 left out (the model was fitted on them; matched by content: the same audio)" in r.stdout, r.stdout
    assert ("1 clip is not scored: the model was fitted on it (matched by content: the same audio; --cv K refits it per "
            "fold)") in r.stderr, r.stderr

    # a bundle written before content ids: matched by id, c0 left out (its audio unknown), the copy scored, said
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "heads", old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["provenance"]["heads_clip_content"]
    (old / "config.json").write_text(json.dumps(cfg))
    got = evaluate_audio(labels, mine, model=old, progress=False)
    assert got["excluded_by"] == "id" and sorted(p["track_id"] for p in got["predictions"]) == ["copy", "x2", "x3"]
    r = _ok(args + ["--model", old])
    assert ("1 left out (the model was fitted on them; matched by track id: this bundle records no content ids of its "
            "clips, so other audio under those ids is left out too)") in r.stdout, r.stdout


def _evaluate_four_clips(tmp_path, valence: str) -> list:
    """evaluate-audio's arguments for four 2-s drum clips labelled energy 0.1-0.7 and valence `valence` (a format of i)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(90 + 10 * i, seconds=2.0, peak_dbfs=-24 + 4 * i, seed=i), 22050)
    labels = tmp_path / "labels.csv"
    rows = "".join(f"c{i},0.{2 * i + 1},{valence.format(i=i)}\n" for i in range(4))
    labels.write_text("track_id,energy,valence\n" + rows)
    return ["evaluate-audio", "--labels", labels, "--audio", audio]


def test_evaluate_audio_says_why_an_r_is_undefined(tmp_path):
    """Without --cv the mean predictor's guess for a clip is the other clips' mean label, which falls as the clip's own
    label rises: its r printed -1.00 for every feature, read as a perfectly wrong baseline. It is now "–" (null in JSON)
    with a note why; and a feature labelled all alike, whose r printed "–" without a word, is named with the reason
    train-heads gives."""
    args = _evaluate_four_clips(tmp_path, "0.5")
    md = _ok(args).stdout
    energy = next(ln for ln in md.splitlines() if ln.startswith("| energy |")).split(" | ")
    assert energy[4] == "–" and energy[2] != "–", md  # the baseline's r; the model's own is a figure
    assert "-1.00" not in md, md
    assert ("**note**: mean_predictor r undefined (–): without --cv each clip's guess is the mean of the other clips' "
            "labels, lower the higher its own label, so its r is -1 whatever the labels") in md, md
    assert "**note**: valence: r undefined (–): all 4 clips labelled with it have the same value (0.5)" in md, md
    res = json.loads(_ok(args + ["-f", "json"]).stdout)
    assert res["learned"]["mean_predictor"]["targets"]["energy"]["pearson"] is None
    assert res["learned"]["mean_predictor"]["targets"]["energy"]["mae"] is not None
    md = _ok(args + ["--cv", "2"]).stdout  # the folds' mean is another baseline: its r stands; the constant label's note too
    assert "mean_predictor r undefined" not in md and "**note**: valence: r undefined (–): all 4 clips" in md, md


def test_evaluate_audio_says_why_the_models_r_is_undefined(tmp_path, monkeypatch):
    """A model predicting one value for every clip has no r with labels that vary: it printed "–" without a word, where a
    constant label's "–" has a note. Now a note names the feature and why (JSON's `notes` too); a feature it varies on
    has none."""
    from songfeat import accuracy

    args = _evaluate_four_clips(tmp_path, "0.{i}")  # valence varying
    real = accuracy.predict_clip
    monkeypatch.setattr(accuracy, "predict_clip", lambda bundle, c: {**real(bundle, c), "energy": 0.25})
    md = _ok(args).stdout
    energy = next(ln for ln in md.splitlines() if ln.startswith("| energy |")).split(" | ")
    assert energy[2] == "–", md  # the model's r
    said = "energy: r undefined (–): the model predicts the same value (0.25) for all 4 clips labelled with it"
    assert f"**note**: {said}" in md and "**note**: valence: r undefined" not in md, md
    assert said in json.loads(_ok(args + ["-f", "json"]).stdout)["notes"]


_HOLD = """
import sys
from songfeat import records, sources
from songfeat.cli import app

def hold(*_a, **_k):  # the long work (reading clips; the default's cache check, first inside its lock) stops here
    print("holding", flush=True)
    sys.stdin.readline()
    raise SystemExit(0)

sources.check_shared = lambda *_a, **_k: None  # no shared data here: train-default goes on to its lock
records.get_records = records.check_cache = hold
app(sys.argv[1:], prog_name="songfeat")
"""


@pytest.mark.parametrize("command", ["train-heads", "train-default"])
def test_a_second_run_into_a_bundle_being_written_is_refused_at_once(command, tmp_path, monkeypatch):
    # two train-heads (or train-default) runs into one --out both did the whole fit, and the later rename replaced the
    # first's bundle (or, at the same moment, failed on the other's '.<out>.old'); now the second is refused before
    # any work, in one line naming the bundle and the run holding it
    import subprocess
    import sys

    from songfeat import records, sources

    def analysed(*_a, **_k):
        raise AssertionError("the second run did the work")

    monkeypatch.setattr(records, "get_records", analysed)
    monkeypatch.setattr(records, "check_cache", analysed)
    monkeypatch.setattr(sources, "check_shared", lambda *_a, **_k: None)
    out = tmp_path / "heads"
    args = (_two_clips(tmp_path, LABELS6) if command == "train-heads" else [command, "--shared", str(tmp_path)]) + [
        "--out", str(out)]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        r = run.invoke(app, args)
        assert r.exit_code == 2 and r.stderr.splitlines()[-1] == (
            f"songfeat: error: {out}: is being written by another songfeat run (pid {holder.pid}); wait for it to end, "
            "or choose another --out"), r.output
        assert not out.exists()
    finally:
        holder.communicate("go\n", timeout=60)
    assert not (tmp_path / "heads.lock").exists()  # let go (and removed) at the holder's end
