"""Metrics against hand-computed values and scipy/sklearn; markdown, JSON, scatter PNG, compare, constant-output check."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from songfeat.evaluate import (compare, constant_outputs, danceable_accuracy, pearson, regression_metrics, report,
                               scatter_png, to_json, to_markdown)


def test_hand_computed_values():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    p = np.array([0.0, 1.0, 2.0, 5.0])  # one error of 2
    r = regression_metrics(t, p, ["energy"])["targets"]["energy"]
    assert r["mse"] == pytest.approx(1.0)  # 4 / 4
    assert r["mae"] == pytest.approx(0.5)
    assert r["rmse"] == pytest.approx(1.0)
    assert r["r2"] == pytest.approx(1 - 4 / 5.0)  # SS_tot = 2.25+0.25+0.25+2.25
    assert r["bias"] == pytest.approx(0.5)  # predictions sit 2/4 above the truth on average
    assert regression_metrics(t, t - 0.25, ["energy"])["targets"]["energy"]["bias"] == pytest.approx(-0.25)
    # Pearson by hand: cov / (sd_t sd_p)
    tc, pc = t - t.mean(), p - p.mean()
    assert r["pearson"] == pytest.approx((tc @ pc) / math.sqrt((tc @ tc) * (pc @ pc)))


def test_against_scipy_and_sklearn():
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    t = rng.random((40, 3))
    p = t + rng.normal(0, 0.2, t.shape)
    out = regression_metrics(t, p, ["danceability", "energy", "valence"])
    for i, n in enumerate(["danceability", "energy", "valence"]):
        m = out["targets"][n]
        assert m["mse"] == pytest.approx(mean_squared_error(t[:, i], p[:, i]))
        assert m["mae"] == pytest.approx(mean_absolute_error(t[:, i], p[:, i]))
        assert m["r2"] == pytest.approx(r2_score(t[:, i], p[:, i]))
        assert m["pearson"] == pytest.approx(pearsonr(t[:, i], p[:, i])[0])
    assert out["average"]["mae"] == pytest.approx(np.mean(np.abs(p - t).mean(axis=0)))
    assert out["n"] == 40


def test_constant_prediction_has_undefined_pearson_and_is_flagged():
    t = np.linspace(0, 1, 20)
    p = np.full(20, 0.6)
    r = report(t, p, ["danceability"])
    assert math.isnan(r["targets"]["danceability"]["pearson"])
    assert r["constant_outputs"] == ["danceability"]
    assert "null" in to_json(r) and "NaN" not in to_json(r)
    assert constant_outputs(t, t + 0.01 * np.sin(np.arange(20)), ["danceability"]) == []


def test_danceable_accuracy_is_the_seed_binary_view():
    t = np.array([0.2, 0.6, 0.7, 0.4])
    p = np.array([0.6, 0.9, 0.4, 0.1])  # right, right, wrong... : 0.2->0.6 wrong, 0.6->0.9 right, 0.7->0.4 wrong, 0.4->0.1 right
    assert danceable_accuracy(t, p) == pytest.approx(0.5)


def test_shape_and_name_errors():
    with pytest.raises(ValueError, match="shape"):
        regression_metrics(np.zeros((4, 2)), np.zeros((4, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="names"):
        regression_metrics(np.zeros((4, 2)), np.zeros((4, 2)), ["a"])


def test_markdown_json_scatter_and_compare(tmp_path):
    rng = np.random.default_rng(2)
    t = rng.random((30, 2))
    a = report(t, t + rng.normal(0, 0.1, t.shape), ["danceability", "energy"])
    b = report(t[:, :1], t[:, :1] * 0 + 0.5, ["danceability"])
    md = to_markdown(a, title="m")
    assert "| danceability |" in md and "**average**" in md and "danceable accuracy" in md
    assert json.loads(to_json(a))["targets"]["energy"]["mae"] == pytest.approx(a["targets"]["energy"]["mae"])
    png = scatter_png(t, t, ["danceability", "energy"], tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = compare([a, b], labels=["good", "flat"])
    rows = [l for l in table.splitlines() if l.startswith("| flat")]
    assert rows and "X" in rows[0]  # energy not predicted by the second model: 'X' as in the seed's tables
    assert "Pearson" in table


def test_pearson_of_constant_is_nan():
    assert math.isnan(pearson(np.ones(5), np.arange(5.0)))


def test_compare_notes_results_scored_on_different_clips():
    """Side-by-side figures on different held-out clips (another store, split or seed) are not like for like."""
    t = np.array([[0.1], [0.5], [0.9]])
    a = {**report(t, t + 0.1, ["energy"]), "model": "a", "clips": "aaaa"}
    b = {**report(t, t - 0.1, ["energy"]), "model": "b", "clips": "bbbb"}
    assert "**note**: scored on different sets of clips (a: n=3, b: n=3)" in compare([a, b])
    assert "different sets" not in compare([a, {**b, "clips": "aaaa"}])
    assert "different sets" not in compare([report(t, t, ["energy"]), report(t, t, ["energy"])])  # without a record


def test_two_clips_give_no_pearson_and_say_they_are_too_few():
    """A 12-clip store's test part is 2 clips: Pearson was ±1 in every cell (2 points lie on a line), printed as a
    perfect or perfectly wrong model, and nothing said the figures meant nothing."""
    from songfeat.evaluate import few_clips_warning

    t = np.array([[0.2, 0.7], [0.6, 0.3]])
    r = report(t, t[::-1] * 0.5 + 0.1, ["danceability", "energy"])
    assert all(math.isnan(r["targets"][n]["pearson"]) for n in ("danceability", "energy"))
    assert math.isnan(r["average"]["pearson"]) and math.isnan(pearson(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    md = to_markdown(r)
    assert md.count("– (n=2)") == 2 and "1.000" not in md
    assert "n = 2 held-out clips (under 16: too few for these figures to mean much)" in md
    assert "no Pearson r for danceability, energy: under 3 clips scored" in md
    assert few_clips_warning(r, "runs/b") == (
        "runs/b: scored on only 2 held-out clips: too few for the figures to mean much (under 16 clips a Pearson r of "
        "0.5 cannot be told from none; under 3 no Pearson r is given: 2 points always lie on a line); train on a larger "
        "store")
    table = compare([{**r, "model": "m"}], labels=["m"])
    assert ("**note**: scored on under 16 clips, too few for the figures to mean much: m (n=2) (no Pearson r under 3)"
            in table)
    # 16 clips is enough not to be warned about (an r of 0.5 is significant there), and 3 give an r again
    rng = np.random.default_rng(4)
    t16 = rng.random((16, 1))
    r16 = report(t16, t16, ["energy"])
    assert few_clips_warning(r16, "b") is None and "too few" not in to_markdown(r16)
    assert regression_metrics(t16[:3], t16[:3], ["energy"])["targets"]["energy"]["pearson"] == pytest.approx(1.0)


def test_r2_of_a_near_constant_truth_is_undefined_and_left_out_of_the_average():
    """instrumentalness ~0 on every scored clip: R²'s denominator was rounding, R² reached about -7e11 and the average
    row with it; it is undefined ('–', null) now, the average is over the other targets and the note says so."""
    rng = np.random.default_rng(5)
    t = np.column_stack([rng.random(20), rng.choice([0.0, 1e-6, 4.5e-5], 20)])
    p = np.column_stack([t[:, 0] + rng.normal(0, 0.1, 20), np.full(20, 0.3) + rng.normal(0, 0.01, 20)])
    r = report(t, p, ["energy", "instrumentalness"])
    assert math.isnan(r["targets"]["instrumentalness"]["r2"])
    assert r["average"]["r2"] == pytest.approx(r["targets"]["energy"]["r2"])
    assert json.loads(to_json(r))["targets"]["instrumentalness"]["r2"] is None
    md = to_markdown(r)
    assert ("R² undefined (–) for instrumentalness: the true values barely vary in the scored clips (std under 0.001 "
            "of their scale); the average R² is over the other targets") in md
    assert "e+" not in md and "-" + "0" * 5 not in md
    table = compare([r], labels=["m"], metrics=("mse", "r2"))
    assert "**note**: R² undefined (–) where the true values barely vary (instrumentalness)" in table
    # a label that does vary, however small its values, keeps its R² (as sklearn's)
    from sklearn.metrics import r2_score

    small = rng.random(20) * 0.05
    assert regression_metrics(small, small + 0.01, ["speechiness"])["targets"]["speechiness"]["r2"] == pytest.approx(
        r2_score(small, small + 0.01))


def test_two_audio_files_for_one_id_are_said_and_the_first_is_used(tmp_path):
    # evaluate-audio and train-heads took the last file silently (build the first, counting it in report.json only)
    import warnings

    import pandas as pd

    from songfeat.data.labels import pair_table
    from songfeat.errors import SongfeatWarning

    for name in ("x.mp3", "x.wav", "y.flac"):
        (tmp_path / name).write_bytes(b"\0")
    table = pd.DataFrame({"track_id": ["x", "y"], "energy": [0.5, 0.6]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, missing = pair_table(table, tmp_path)
    assert [Path(p).name for p in rows["path"]] == ["x.mp3", "y.flac"] and missing == []
    said = [str(w.message) for w in caught if issubclass(w.category, SongfeatWarning)]
    assert len(said) == 1 and "1 audio file(s) repeat a labelled id" in said[0] and "x.mp3 used, x.wav not" in said[0]


def test_evaluate_pairs_a_folder_as_build_does(tmp_path):
    # evaluate-audio and train-heads paired labels with audio by a walk of their own beside build's, patched towards it
    # one difference at a time: '<id>_preview.mp3' still paired with nothing there, a linked folder was not walked,
    # and a broken link was "no audio file" rather than a clip failing with its reason; now both use one function
    import os
    import warnings

    import pandas as pd

    from songfeat.data.labels import pair_table
    from songfeat.errors import SongfeatWarning

    sid = "4uLU6hMCjMI75M1A2tKUQC"
    audio, elsewhere = tmp_path / "audio", tmp_path / "elsewhere"
    (audio / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for name in (f"sub/{sid}_preview.mp3", "x.mp3", "x.wav", "notes.txt"):
        (audio / name).write_bytes(b"\0")
    (elsewhere / "y.flac").write_bytes(b"\0")
    os.symlink(elsewhere, audio / "linked")
    os.symlink(tmp_path / "gone.mp3", audio / "z.mp3")
    table = pd.DataFrame({"track_id": [sid, "x", "y", "z", "w"], "energy": [0.1, 0.2, 0.3, 0.4, 0.5]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, missing = pair_table(table, audio)
    paired = dict(zip(rows["track_id"], rows["path"]))
    assert paired == {sid: str(audio / "sub" / f"{sid}_preview.mp3"), "x": str(audio / "x.mp3"),
                      "y": str(audio / "linked" / "y.flac"), "z": str(audio / "z.mp3")} and missing == ["w"]
    said = [str(w.message) for w in caught if issubclass(w.category, SongfeatWarning)]
    repeat = f"{audio}: 1 audio file(s) repeat a labelled id and are not used; the first by name is (e.g. x: x.mp3 used, x.wav not)"
    assert said == [repeat]
    from songfeat.data.labels import index_audio

    lines = []  # build's pairing (`build_store` calls index_audio with its on_message): the same files, the same words
    found, unlabelled, repeats = index_audio(audio, set(table["track_id"]), "spotify", on_message=lines.append)
    assert {t: str(p) for t, p in found.items()} == paired and repeats == 1 and lines == [f"warning: {repeat}"]


def test_train_and_val_splits_are_not_called_held_out():
    """`evaluate --split train` printed 'n = 8 held-out clips' for the clips the model was fitted on, and `compare
    --split train` printed tables that looked exactly like held-out ones."""
    t = np.array([[0.1], [0.5], [0.9]])
    r = report(t, t + 0.1, ["energy"])
    assert "n = 3 held-out clips" in to_markdown({**r, "split": "test"}) and "held-out clips" in to_markdown(r)
    md = to_markdown({**r, "split": "train"})
    assert "held-out clips" not in md and "'train' split (the model was fitted on them: not held out)" in md
    assert "held-out clips" not in to_markdown({**r, "split": "val"})
    table = compare([{**r, "model": "a", "split": "train"}, {**r, "model": "b", "split": "train"}])
    assert "**note**: scored on clips of the 'train' split" in table
    assert "scored on clips of" not in compare([{**r, "split": "test"}, {**r, "split": "test"}])


def test_measured_scores_count_only_the_clips_labelled_with_each_measure():
    # a table without key/mode/time_signature columns reported "key exact 0%", and one empty loudness or tempo cell made
    # the loudness MAE nan and counted that clip's tempo as wrong
    import pandas as pd

    from songfeat.accuracy import measured_scores

    desc = pd.DataFrame({"loudness": [-8.0, -6.0, -5.0], "tempo": [120.0, 100.0, 90.0], "key": [0, 2, 4],
                         "mode": [1, 0, 1], "time_signature": [4, 4, 3]})
    nan = float("nan")
    ref = pd.DataFrame({"loudness": [-7.0, nan, -6.0], "tempo": [120.0, nan, 45.0], "key": [nan] * 3,
                        "mode": [1.0, nan, 0.0], "time_signature": [nan] * 3})
    m = measured_scores(desc, ref)
    assert m["loudness_mae_db"] == pytest.approx(1.0) and m["loudness_bias_db"] == pytest.approx(0.0)
    assert m["tempo"]["exact"] == 0.5 and m["tempo"]["up_to_octave"] == 1.0
    assert m["key_exact"] is None and m["key_and_mode"] is None and m["time_signature"] is None and m["mode"] == 0.5
    assert m["labelled"] == {"loudness": 2, "tempo": 2, "key": 0, "mode": 2, "key_and_mode": 0, "time_signature": 0}


def test_evaluate_audio_says_what_it_leaves_out_and_scores_cv_without_a_loudness_label(tmp_path, example_clip):
    # labelled ids without audio were left out with no word (only a count in --format json), a second file for one id
    # came out as a two-line Python warning, and with --cv one empty loudness cell made every learned figure nan
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat import synth
    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(90 + 10 * i, seconds=3.0, peak_dbfs=-20 + 4 * i, seed=i), 22050)
    sf.write(audio / "c0.flac", synth.drum_pattern(90, seconds=3.0, seed=0), 22050)
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy,valence,tempo,loudness\nc0,0.2,0.3,90,-12\nc1,0.4,0.5,100,\n"
                      "c2,0.6,0.4,110,-8\nc3,0.8,0.6,120,-5\nghost,0.5,0.5,100,-7\n")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio)])
    assert r.exit_code == 0, r.output
    # said "1 labelled ids have"
    assert f"songfeat: warning: {labels}: 1 labelled id has no audio file in {audio} (e.g. ghost)" in r.stderr
    assert "repeat a labelled id and are not used" in r.stderr and "SongfeatWarning" not in r.stderr
    assert "1 labelled id without audio" in r.stdout
    assert "| key exact | – (no clip labelled) |" in r.stdout and "(3 of 4 clips labelled)" in r.stdout
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio), "--cv", "2", "-f", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # strict: no NaN
    assert np.isfinite(res["learned"]["model"]["average"]["mae"]), res["learned"]["model"]
    assert res["learned"]["catalogue_mean"]["targets"]["energy"]["pearson"] is None  # a constant guess has no r
    # the default's ridge member is not refitted in the folds: one of the notes (printed after the table as the others
    # are), and JSON's `note` as before
    alone = "heads alone: the ridge member blended into the bundle's outputs is not refitted in these folds"
    assert alone in res["notes"] and res["note"] == alone, res["notes"]
    assert np.isfinite(res["measured"]["loudness_mae_db"]) and res["measured"]["labelled"]["loudness"] == 3


@pytest.mark.parametrize("cv", ["1", "2", "5", None])
def test_evaluate_audio_says_no_clip_is_labelled_whatever_the_cv(tmp_path, cv):
    # `--cv 1` on a folder with no labelled clip said "--cv must be between 2 and the number of clips (0), got 1"
    from typer.testing import CliRunner

    from songfeat.cli import app

    (tmp_path / "audio").mkdir()
    (tmp_path / "labels.csv").write_text("track_id,energy\nx1,0.5\n")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(tmp_path / "labels.csv"), "--audio",
                                 str(tmp_path / "audio"), *(["--cv", cv] if cv else [])])
    assert r.exit_code == 2 and r.stderr == (f"songfeat: error: {tmp_path / 'labels.csv'}: no labelled clips with audio in "
                                             f"{tmp_path / 'audio'}; scoring needs at least 2; 1 labelled id has no audio "
                                             "file there (e.g. x1)\n"), r.output


def test_evaluate_audio_names_a_file_given_as_the_audio_folder_as_not_a_folder(tmp_path):
    # `--audio song.wav` said "song.wav: audio folder not found" of a file that is there (`build` said "not a folder")
    from typer.testing import CliRunner

    from songfeat.cli import app

    (tmp_path / "labels.csv").write_text("track_id,energy\nx1,0.5\n")
    (tmp_path / "song.wav").write_bytes(b"RIFF")
    for audio, why in ((tmp_path / "song.wav", "not a folder"), (tmp_path / "nope", "audio folder not found")):
        r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(tmp_path / "labels.csv"), "--audio", str(audio)])
        assert r.exit_code == 2 and r.stderr == f"songfeat: error: {audio}: {why}\n", r.output


def test_evaluate_audio_refusal_names_ids_without_audio(tmp_path):
    # a table whose ids match no file said only "0 labelled clips with audio", not which ids it looked for
    from songfeat.accuracy import evaluate_audio
    from songfeat.errors import SongfeatError

    (tmp_path / "audio").mkdir()
    (tmp_path / "labels.csv").write_text("track_id,energy\nx1,0.5\nx2,0.4\n")
    with pytest.raises(SongfeatError, match=r"no labelled clips with audio in .*; 2 labelled ids have no audio file there "
                                            r"\(e\.g\. x1\)$"):
        evaluate_audio(tmp_path / "labels.csv", tmp_path / "audio", progress=False)


def test_evaluate_audio_with_a_failed_clip_reports_the_rest_and_exits_1(tmp_path):
    # a clip that could not be analysed was an error line and then exit 0, where analyze, tags and build exit 1
    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat import synth
    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(90 + 10 * i, seconds=3.0, seed=i), 22050)
    (audio / "c3.wav").write_bytes(b"RIFF broken")
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy\nc0,0.2\nc1,0.4\nc2,0.6\nc3,0.8\n")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio)])
    assert r.exit_code == 1, r.output
    assert "Clips: 3" in r.stdout and "c3.wav" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "songfeat: 1 of 4 clips failed (the figures are over the others)"


def test_evaluate_audio_names_the_features_it_cannot_score_in_one_line(tmp_path):
    # a table labelling only energy and valence gave one warning line per unlabelled feature: five lines of the same news
    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat import synth
    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(90 + 10 * i, seconds=3.0, seed=i), 22050)
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy,valence,liveness\nc0,0.2,,\nc1,0.4,0.5,\nc2,0.6,0.4,0.1\n")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio)])
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.stderr.splitlines() if "not scored" in ln]
    assert said == ["songfeat: warning: not scored, for lack of labels: danceability, speechiness, acousticness, "
                    "instrumentalness (no clip is labelled with them); liveness (2 of the 3 clips lack a label)"]


def test_evaluate_audio_scores_each_feature_on_the_clips_labelled_with_it(tmp_path):
    # one clip lacking its valence label left valence out of the report altogether (`evaluate` scores each feature on
    # the clips that have it): now it is scored on those, its n said in the table, with --cv too; and an out-of-range
    # valence costs its clip that label alone (the whole row was dropped), said
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat import synth
    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(90 + 10 * i, seconds=3.0, peak_dbfs=-20 + 4 * i, seed=i), 22050)
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy,valence\nc0,0.2,1.7\nc1,0.4,0.5\nc2,0.6,0.4\nc3,0.8,0.7\n")  # 1.7: out of range
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio)])
    assert r.exit_code == 0, r.output
    assert (f"songfeat: warning: {labels}: line 2 (c0): valence 1.7 outside [0, 1]: read as missing (the row's other "
            "labels are used)") in r.stderr and "Clips: 4; 1 label value out of range, read as missing" in r.stdout
    assert "| feature | model MAE | model r | mean_predictor MAE | mean_predictor r | clips |" in r.stdout
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ")[-1].strip(" |") for ln in r.stdout.splitlines()
            if ln.startswith("| ")}
    assert rows["energy"] == "4" and rows["valence"] == "3", r.stdout
    assert "valence" not in [ln for ln in r.stderr.splitlines() if "not scored" in ln][0]
    for cv in ([], ["--cv", "2"]):
        r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio), "-f", "json", *cv])
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # strict: no NaN
        assert res["targets"] == ["energy", "valence"] and "valence" not in res["targets_left_out"]
        for k in res["learned"]:
            v = res["learned"][k]["targets"]["valence"]
            assert v["n"] == 3 and np.isfinite(v["mae"]), (cv, k, v)


def test_a_missing_label_is_masked_for_its_feature_only():
    # one NaN label made every figure of its feature NaN (shown as '–', or 'nan' in evaluate-sources' table), and the
    # average was then over the other features without a word; the clip's other features were scored as usual
    from sklearn.metrics import mean_absolute_error, r2_score

    t = np.array([[0.1, np.nan], [0.4, 0.2], [0.9, 0.8], [0.5, 0.3]])
    p = np.array([[0.2, 0.5], [0.3, 0.3], [0.7, 0.6], [0.6, 0.3]])
    r = regression_metrics(t, p, ["energy", "valence"])
    v = r["targets"]["valence"]
    assert v["n"] == 3 and r["targets"]["energy"]["n"] == 4 and r["n"] == 4
    assert v["mae"] == pytest.approx(mean_absolute_error(t[1:, 1], p[1:, 1]))
    assert v["r2"] == pytest.approx(r2_score(t[1:, 1], p[1:, 1]))
    assert r["average"]["mae"] == pytest.approx((r["targets"]["energy"]["mae"] + v["mae"]) / 2)
    assert "valence scored on 3 of the 4 clips (the others lack its label)" in to_markdown(r)
    assert danceable_accuracy([0.7, np.nan, 0.2], [0.6, 0.9, 0.9]) == pytest.approx(0.5)  # not a miss: not scored
    none = regression_metrics(np.array([[np.nan], [np.nan]]), np.zeros((2, 1)), ["energy"])["targets"]["energy"]
    assert none["n"] == 0 and all(math.isnan(none[m]) for m in ("mse", "mae", "rmse", "r2", "pearson", "bias"))


def test_compare_says_when_the_averages_are_over_different_targets():
    # cnn-simple's 'average' (danceability alone) sat beside lstm-multitask's (five targets) as if like for like
    t = np.array([[0.1, 0.2], [0.5, 0.6], [0.9, 0.3]])
    both, one = report(t, t + 0.1, ["danceability", "energy"]), report(t[:, :1], t[:, :1], ["danceability"])
    note = "**note**: each average is over that model's own targets (X: not predicted), so averages of models"
    assert note in compare([both, one]) and note not in compare([both, both])


def test_evaluate_audio_shows_an_undefined_figure_as_a_dash():
    # evaluate-audio's table printed 'nan' where evaluate's prints '–' (a constant guess has no Pearson r)
    import pandas as pd

    from songfeat.accuracy import measured_scores
    from songfeat.accuracy import to_markdown as audio_markdown

    t = np.array([[0.1], [0.5], [0.9]])
    desc = pd.DataFrame({"loudness": [-8.0] * 3, "tempo": [120.0] * 3, "key": [0] * 3, "mode": [1] * 3,
                         "time_signature": [4] * 3})
    ref = desc.assign(loudness=[-7.0, -6.0, -5.0])
    result = {"n_clips": 3, "cv": 2, "failed": [], "targets": ["energy"], "measured": measured_scores(desc, ref),
              "learned": {"model": regression_metrics(t, t + 0.1, ["energy"]),
                          "catalogue_mean": regression_metrics(t, np.full_like(t, 0.5), ["energy"])}}
    md = audio_markdown(result)
    assert "nan" not in md
    assert "| energy | 0.100 | 1.00 | 0.267 | – |" in md and "r –)" in md


def test_evaluate_audio_when_too_few_clips_analyse_names_each_failure_and_exits_1(tmp_path):
    # every clip failing said only 'fewer than 2 clips could be analysed (3 failed)', not why, with 2, the status of a
    # refusal before any work: each clip's reason is an error line, then that one, and the status is 1
    from typer.testing import CliRunner

    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        (audio / f"c{i}.wav").write_bytes(b"RIFF broken")
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy\nc0,0.2\nc1,0.4\nc2,0.6\n")
    r = CliRunner().invoke(app, ["evaluate-audio", "--labels", str(labels), "--audio", str(audio)])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert [ln.split(": ")[:2] for ln in lines[:3]] == [["songfeat", "error"]] * 3
    assert [str(audio / f"c{i}.wav") in lines[i] for i in range(3)] == [True] * 3
    assert lines[3:] == [f"songfeat: error: {audio}: fewer than 2 clips could be analysed (3 failed)"]


def test_a_stack_models_cv_refits_each_feature_on_the_clips_labelled_with_it():
    # evaluate-audio --cv of a 'stack' model fitted its ridge correction on all training clips' labels at once, which a
    # missing label (NaN) would turn into a failed fit: each feature is now fitted on the clips labelled with it, and
    # with every label known it is the one fit it was
    from songfeat.accuracy import _stack_fold
    from songfeat.stack import fit_head

    rng = np.random.default_rng(0)
    z, base = rng.normal(size=(12, 5)).astype(np.float32), rng.uniform(0.2, 0.8, (12, 2)).astype(np.float32)
    y = np.clip(base + 0.1 * z[:, :2], 0, 1).astype(np.float64)
    train, test = np.arange(8), np.arange(8, 12)
    w, b, zm, zs, _ = fit_head(z[train], y[train] - base[train])
    assert np.array_equal(_stack_fold(z, y, base, train, test), base[test] + ((z[test] - zm) / zs) @ w.T + b)
    y[[1, 4], 1] = np.nan
    got = _stack_fold(z, y, base, train, test)
    assert np.isfinite(got).all()
    tr = np.setdiff1d(train, [1, 4])
    w1, b1, zm1, zs1, _ = fit_head(z[tr], y[tr, 1:] - base[tr, 1:])
    assert np.allclose(got[:, 1], base[test, 1] + ((z[test] - zm1) / zs1) @ np.ravel(w1) + np.ravel(b1)[0])
    assert np.allclose(got[:, 0], (base[test] + ((z[test] - zm) / zs) @ w.T + b)[:, 0])


def test_model_label_names_the_numeric_inputs_a_bundle_read():
    """`compare` told numeric-mlp on label inputs from numeric-mlp on measured ones only by the folders' names."""
    from songfeat.evaluate import model_label

    assert model_label({"model": "numeric-mlp", "numeric_source": "measured"}) == "numeric-mlp, measured inputs"
    assert model_label({"model": "numeric-mlp", "numeric_source": "labels"}) == "numeric-mlp, label inputs"
    assert model_label({"model": "cnn-simple", "numeric_source": None}) == "cnn-simple"
    assert model_label({}) is None
