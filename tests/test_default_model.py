"""The shipped default model: a complete bundle, honest accuracy on real previews, a reproducible recipe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from songfeat import features
from songfeat.bundle import DEFAULT_DIR, load_bundle
from songfeat.errors import SongfeatError


def test_default_bundle_is_complete():
    b = load_bundle()
    cfg = json.loads((DEFAULT_DIR / "config.json").read_text())  # strict JSON (no NaN)
    assert b.targets == features.LEARNED and b.config["numeric_source"] == "measured"
    assert cfg["model"] == "heads" and set(b.needs) == {"evidence", "numeric"} and b.evidence_layout
    for key in ("scalers", "split", "metrics", "provenance", "hparams", "evidence_layout"):
        assert cfg.get(key), key
    held = cfg["metrics"]["stage1_heldout_on_spotify_values"]
    assert held["model"]["average"]["mae"] < held["mean_predictor"]["average"]["mae"]
    card = (DEFAULT_DIR / "MODEL_CARD.md").read_text()
    loso = cfg["metrics"]["leave_one_source_out"]
    assert set(loso) == {"forro", "poprock", "older", "fma"}
    for src, e in loso.items():  # the card is written from this config
        assert f"{e['learned']['heads']['average']['mae']:.3f}" in card, src
    beh = cfg["metrics"]["behaviour_check_half"]["summary"]
    assert f"{beh['hold']} of {beh['rules']} rules hold" in card
    reg = cfg["metrics"]["behaviour_check_regions"]
    assert f"**{reg['inside']} of {reg['predictions']}** predictions" in card
    assert sum(a for a, _ in reg["by_feature"].values()) == reg["inside"]
    regions = cfg["split"]["heads"]["behaviour_region_intervals"]  # only fitting-half clips give regions
    assert regions and set(regions) <= set(cfg["split"]["heads"]["behaviour_fit"])
    split = cfg["split"]["heads"]
    assert not set(split["behaviour_fit"]) & set(split["behaviour_check"])  # fitting clips never check
    assert "ISC" in card and "MIT" in card and "forbid" in card


def test_default_bundle_predicts_in_range():
    b = load_bundle()
    rng = np.random.default_rng(0)
    width = b.evidence_width  # the heads' columns and the ridge member's
    evidence = rng.standard_normal((4, width)).astype(np.float32) * 3
    numeric = np.array([[120, -8, 5, 1, 4], [80, -20, 0, 0, 3], [170, -4, 11, 1, 4], [60, -30, 2, 0, 4]], np.float32)
    out = b.predict(numeric=numeric, evidence=evidence)
    assert out.shape == (4, 7) and np.all((out > 0) & (out < 1))
    assert out[:, features.LEARNED.index("energy")].std() > 0.01  # not one constant


def test_spoken_word_and_music_end_to_end():
    from pathlib import Path

    from songfeat import synth
    from songfeat.analyze import analyze

    speech = analyze(Path(__file__).parent / "fixtures" / "espeak_reading_16k.flac")
    assert speech["speechiness"] > 0.5 and speech["instrumentalness"] < 0.5, speech
    import soundfile as sf

    tmp = Path(__file__).parent / "fixtures" / ".chords.wav"
    try:
        sf.write(tmp, synth.chord_progression(0, 1, seconds=30.0), 44100)
        music = analyze(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    assert music["speechiness"] < 0.33, music


@pytest.mark.shared
def test_stage1_recipe_learns_from_the_table(shared_data):
    from songfeat.data.labels import read_labels
    from songfeat.default_model import SPOTIFY_CATALOGUE, train_base

    table = read_labels(shared_data / SPOTIFY_CATALOGUE).frame
    fit = train_base(table, exclude_ids=set(), seed=1, epochs=8, progress=False)
    m = fit.metrics
    assert m["model"]["targets"]["energy"]["pearson"] > 0.75  # loudness drives energy strongly
    assert m["model"]["average"]["mae"] < 0.9 * m["mean_predictor"]["average"]["mae"]


def test_stage1_reads_each_recording_once():
    """Rows equal in every input and target are one recording under several ids: stage 1 keeps one, so its random
    split cannot put a copy of a test row among the training rows (the catalogue holds 926 such rows)."""
    import pandas as pd

    from songfeat.default_model import INPUTS, TARGETS, train_base

    rng = np.random.default_rng(0)
    rows = pd.DataFrame(rng.uniform(0, 1, (60, len(INPUTS) + len(TARGETS))), columns=[*INPUTS, *TARGETS])
    table = pd.concat([rows.assign(track_id=[f"{k}{i}" for i in range(60)]) for k in "abc"], ignore_index=True)
    fit = train_base(table, exclude_ids={"a0"}, seed=1, epochs=1, progress=False)
    assert sum(fit.n_rows.values()) == 60  # 180 rows, 60 recordings: "a0" out, its copies "b0" and "c0" keep it once


def test_stage1_runs_on_its_own_thread_count_and_gives_the_callers_back(monkeypatch):
    """Stage 1's last bits depend on how many torch threads split its sums: run with OMP_NUM_THREADS=1 (or on a 1-CPU
    machine) train-default wrote other bytes than the shipped bundle's, fitted on two. It runs on STAGE1_THREADS now
    whatever the caller set, and the caller's count is back afterwards, also when the fit fails."""
    import torch

    from songfeat import default_model

    seen = []

    def fit(*args):
        seen.append(torch.get_num_threads())
        if len(seen) == 2:
            raise RuntimeError("the fit failed")
        return "fit"

    monkeypatch.setattr(default_model, "_train_base", fit)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert default_model.train_base(None, set()) == "fit" and torch.get_num_threads() == 1
        torch.set_num_threads(3)
        with pytest.raises(RuntimeError):
            default_model.train_base(None, set())
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert seen == [default_model.STAGE1_THREADS] * 2 == [2, 2]


@pytest.mark.shared
@pytest.mark.slow
def test_stage1_on_the_catalogue_is_the_same_bytes_whatever_the_callers_thread_count(shared_data):
    """On the real catalogue, one torch thread and two gave different stage-1 weights (2026-12-06, on this 2-CPU VM;
    three gave one's): train_base gives the same bytes whether the caller runs torch on one thread or two."""
    import torch

    from songfeat.data.labels import read_labels
    from songfeat.default_model import SPOTIFY_CATALOGUE, train_base

    table = read_labels(shared_data / SPOTIFY_CATALOGUE).frame
    before, weights = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            fit = train_base(table, exclude_ids=set(), seed=42, progress=False)
            weights.append(b"".join(v.numpy().tobytes() for v in fit.model.base.state_dict().values()))
    finally:
        torch.set_num_threads(before)
    assert weights[0] == weights[1]


@pytest.mark.shared
@pytest.mark.slow
def test_cross_validated_accuracy_on_older_previews_beats_the_mean(shared_data):
    from songfeat.accuracy import evaluate_audio

    prev = shared_data / "spotify-previews-extra"  # 36 clips: the heads are refitted per fold on the other folds
    r = evaluate_audio(prev / "labels.csv", prev / "audio", cv=3, workers=2, progress=False)
    assert r["n_clips"] == 36 and not r["failed"]
    model, mean = r["learned"]["model"]["average"], r["learned"]["mean_predictor"]["average"]
    assert model["mae"] < 0.95 * mean["mae"], (model, mean)
    assert r["learned"]["model"]["targets"]["energy"]["pearson"] > 0.5
    assert r["measured"]["loudness_mae_db"] < 2.5


@pytest.mark.shared
def test_plain_evaluation_refuses_clips_the_model_was_fitted_on(shared_data):
    from songfeat.accuracy import evaluate_audio

    prev = shared_data / "spotify-previews"
    with pytest.raises(SongfeatError, match="--cv"):
        evaluate_audio(prev / "labels.csv", prev / "audio", progress=False)


def _unseen_song(path: Path, seed: int = 0) -> None:
    """A 10-s generated song (chords over a drum pattern) the shipped model was never fitted on: evaluate-audio leaves
    out the example clip's bytes, which are FMA 000002's, one of the heads' fitting clips."""
    import soundfile as sf

    from songfeat import synth

    y = synth.chord_progression(0, 1, 10.0) + synth.drum_pattern(120.0, seconds=10.0, seed=seed)
    sf.write(path, 0.5 * y / max(1e-9, float(abs(y).max())), synth.SR)


def test_evaluation_names_the_label_rows_it_cannot_score(tmp_path):
    # bad rows and missing labels were dropped without a word: the report left out a whole feature in silence
    from songfeat.accuracy import evaluate_audio, to_markdown

    audio = tmp_path / "audio"
    audio.mkdir()
    for i, tid in enumerate(("A" * 22, "B" * 22, "C" * 22)):
        _unseen_song(audio / f"{tid}.wav", seed=i)
    head = "track_id,danceability,energy,speechiness,acousticness,instrumentalness,valence,liveness,tempo,loudness,key,mode,time_signature"
    rows = [f"{'A' * 22},0.6,0.7,0.1,0.3,0.0,0.5,0.1,120,-7,1,1,4", f"{'B' * 22},,0.7,0.2,0.3,0.0,0.7,0.1,120,-7,1,1,4",
            f"{'C' * 22},0.5,0.7,abc,0.3,0.0,0.7,0.1,120,-7,1,1,4", "../../etc/passwd,0.5,0.5,0.1,0.3,0,0.5,0.1,120,-7,1,1,4"]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join([head, *rows]) + "\n")
    r = evaluate_audio(labels, audio, progress=False)
    assert r["n_clips"] == 2 and "danceability" not in r["targets"] and r["targets_left_out"] == {"danceability": 1}
    assert [line.split(": ")[1] for line in r["labels_dropped"]] == ["line 4 (" + "C" * 22 + ")", "line 5 (../../etc/passwd)"]
    assert "speechiness 'abc'" in r["labels_dropped"][0]
    assert "2 label rows dropped" in to_markdown(r) and "danceability (1 missing)" in to_markdown(r)


def test_evaluation_of_one_clip_says_one_clip_is_too_few(tmp_path):
    # one labelled clip the model never saw was refused with "this model was fitted on 0 of these clips", blaming the
    # model for what was a count too small to score
    from songfeat.accuracy import evaluate_audio

    audio = tmp_path / "audio"
    audio.mkdir()
    _unseen_song(audio / f"{'A' * 22}.wav")
    labels = tmp_path / "labels.csv"
    labels.write_text("track_id,energy,valence\n" + f"{'A' * 22},0.7,0.5\n")
    with pytest.raises(SongfeatError) as err:
        evaluate_audio(labels, audio, progress=False)
    assert str(err.value) == f"{labels}: 1 labelled clip with audio in {audio}; scoring needs at least 2"


def test_shipped_heads_read_only_what_their_config_allows():
    """Energy reads its definition's parts only, linearly; the spoken block is speechiness's alone (config.json says so)."""
    from songfeat.heads import TARGETS, FitConfig, nets_layout, part_columns

    b = load_bundle()
    fitc = b.config["split"]["heads"]["fit"]
    cfg = FitConfig(**{k: v for k, v in fitc.items() if k in FitConfig.__dataclass_fields__})
    assert dict(cfg.feature_parts).get("energy"), "the shipped model restricts energy"
    skip_ok, hidden_ok, restricted = cfg.input_mask(part_columns(nets_layout(b.evidence_layout)))  # ridge's columns aside
    n_ev = skip_ok.shape[1]
    members = b.model.members
    for m in members:
        skip = m.skip.weight.detach().numpy()[:, :n_ev]
        assert np.all(skip[~skip_ok] == 0)
        assert np.any(skip[TARGETS.index("energy")][skip_ok[TARGETS.index("energy")]] != 0)
        assert np.all(m.hidden.weight.detach().numpy()[:, :n_ev][:, ~hidden_ok] == 0)
        assert np.all(m.out.weight.detach().numpy()[restricted] == 0)


def test_shipped_blend_is_the_recorded_choice_and_beats_the_previous_default_held_out():
    """The ridge member's weights are what the recorded selection picks, installed as recorded, reading only the
    band-limited MFCC summary; and the held-out table the config records has the blend ahead of the previous default on every source."""
    from songfeat import mfcc
    from songfeat.sources import pick_blend

    b = load_bundle()
    cfg = b.config
    sel = cfg["split"]["heads"]["blend"]
    grid = sel["grid"]
    mae = np.array([sel["inner_mae"][f"{a:g}"] for a in grid])
    misses = np.array([sel["rule_misses"][f"{a:g}"] for a in grid])
    assert pick_blend(mae, misses, grid).tolist() == sel["chosen"]
    assert cfg["hparams"]["ridge_inputs"] == mfcc.WIDTH
    assert [p["block"] for p in cfg["evidence_layout"]][-1] == "mfcc_band"  # the summary below 8 kHz
    pytest.importorskip("torch")
    from songfeat.bundle import _load_torch_model

    model = _load_torch_model(DEFAULT_DIR, cfg)
    assert model.blend.numpy().tolist() == sel["chosen"]
    for src, e in cfg["metrics"]["leave_one_source_out"].items():
        learned = e["learned"]
        assert learned["heads"]["average"]["mae"] < learned["previous_default"]["average"]["mae"], src
        assert learned["heads"]["average"]["mae"] < learned["fold_mean"]["average"]["mae"], src


def test_default_model_reads_loudness_on_the_scale_it_was_fitted_with():
    # The reported loudness is Echo Nest's segment level + 4.71; the listening model's stage 1 and heads were fitted
    # with BS.1770 LUFS + 7.12, and its config keeps that input (a research bundle without the map reads `loudness`).
    from songfeat import descriptors as D

    b = load_bundle(DEFAULT_DIR)
    d = D.Descriptors(duration_ms=30000, loudness=-5.0, loudness_lufs=-14.0, tempo=120.0, tempo_confidence=0.5,
                      loudness_level=-9.7, loudness_bs1770=-6.88)
    row = b.numeric_row(d)
    assert row[list(b.numeric_inputs).index("loudness")] == pytest.approx(-6.88)
    plain = load_bundle(DEFAULT_DIR)
    plain.config.pop("numeric_descriptors")
    assert plain.numeric_row(d)[list(b.numeric_inputs).index("loudness")] == pytest.approx(-5.0)
    m = D.measure(np.sin(2 * np.pi * 440 * np.arange(5 * 44100) / 44100).astype(np.float32) * 0.3)
    assert m.loudness_bs1770 == pytest.approx(m.loudness_lufs + D.BS1770_OFFSET, abs=1e-6)
    assert m.loudness == pytest.approx(m.loudness_level + D.LOUDNESS_INTERCEPT, abs=1e-6)


def test_outputs_stay_in_the_catalogues_range():
    """The default bundle keeps each learned feature inside Spotify's catalogue range (its config's label_range), and a
    bundle without one only inside the feature's own range."""
    from songfeat.bundle import Bundle

    bundle = load_bundle()
    rng = bundle.config["label_range"]
    lows, highs = bundle.output_range()
    for i, t in enumerate(bundle.targets):
        lo, hi = rng[t]
        assert 0.0 <= lo < hi <= 1.0
        assert lows[i] == np.float32(lo) and highs[i] == np.float32(hi)
    assert rng["speechiness"][0] > 0.02 and rng["danceability"][0] > 0.05  # Spotify's floors, not 0

    class Fixed:  # a stand-in model whose outputs run past both ends of every range
        def eval(self):
            return self

        def __call__(self, numeric):
            import torch

            return torch.tensor([[-0.5] * 7, [0.001] * 7, [1.5] * 7])

    cfg = {"targets": list(bundle.targets), "inputs": ["numeric"], "numeric_inputs": ["tempo"],
           "label_range": {"speechiness": [0.03, 0.9]}}
    out = Bundle(Fixed(), cfg).predict(numeric=np.zeros((3, 1), dtype=np.float32))
    s = list(bundle.targets).index("speechiness")
    assert out[:, s].tolist() == pytest.approx([0.03, 0.03, 0.9])
    d = list(bundle.targets).index("danceability")  # no label_range for it: only its own 0..1
    assert out[:, d].tolist() == pytest.approx([0.0, 0.001, 1.0])


def test_train_default_refuses_a_partial_shared_folder_or_an_out_it_cannot_replace_before_stage_1(tmp_path):
    """Found up front in one line, not after stage 1's fit (a missing behaviour manifest) or after every clip's
    analysis (an --out folder holding other files)."""
    from test_sources import _tiny_shared

    from songfeat.default_model import train_default

    shared = _tiny_shared(tmp_path / "shared")  # labelled sources well formed: only the missing manifest is wrong
    (shared / "behaviour" / "manifest.csv").unlink()
    with pytest.raises(SongfeatError, match=r"behaviour/manifest\.csv: no such file; --shared names"):
        train_default(shared, tmp_path / "out", progress=False, cache=tmp_path / "cache")
    (shared / "behaviour" / "manifest.csv").write_text("file,category,expectation\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(SongfeatError, match=r"notes: folder is not empty and holds no model bundle"):
        train_default(shared, tmp_path / "notes", progress=False, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_train_default_refuses_a_stage_1_table_too_small_to_fit(tmp_path):
    """A tiny or truncated catalogue table is named in one line, not a TypeError from inside stage 1's fit."""
    from test_sources import _tiny_shared

    from songfeat.default_model import train_default

    shared = _tiny_shared(tmp_path / "shared")
    with pytest.raises(SongfeatError, match=r"combined_unique_by_track_id\.csv: 0 rows hold every stage-1 input"):
        train_default(shared, tmp_path / "out", progress=False, cache=tmp_path / "cache")


def test_a_refused_failed_or_interrupted_train_default_leaves_no_folders_it_made(tmp_path, monkeypatch):
    """`train-default --out new/dir/b` made new/dir before stage 1 (to probe it) and left it behind, empty, when the
    recipe was then refused, failed or was interrupted. The folders it made go again; one that was there is kept."""
    from test_sources import _tiny_shared

    from songfeat import default_model

    shared = _tiny_shared(tmp_path / "shared")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "new" / "dir" / "b"
    with pytest.raises(SongfeatError, match=r"0 rows hold every stage-1 input"):  # refused after --out was checked
        default_model.train_default(shared, out, progress=False, cache=tmp_path / "cache")
    assert list(work.iterdir()) == []
    monkeypatch.setattr(default_model, "check_table", lambda *a: None)
    for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        def failing(*_a, error=error, **_k):
            raise error

        monkeypatch.setattr(default_model, "train_base", failing)  # stage 1's fit, the first of the long work
        with pytest.raises(type(error)):
            default_model.train_default(shared, out, progress=False, cache=tmp_path / "cache")
        assert list(work.iterdir()) == [], error
        (work / "new").mkdir()
        with pytest.raises(type(error)):
            default_model.train_default(shared, out, progress=False, cache=tmp_path / "cache")
        assert [p.name for p in work.iterdir()] == ["new"] and list((work / "new").iterdir()) == [], error
        (work / "new").rmdir()


def test_a_model_cards_edit_keeps_the_model_id_and_a_weight_change_does_not(tmp_path):
    # the id was a hash over every file, the card too: a line added to MODEL_CARD.md made results written before look
    # like another model's (`analyze --resume` refused them, serve re-analysed its library)
    import shutil

    from songfeat.bundle import bundle_folder, model_id

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_folder(None), copy)
    assert model_id(copy) == model_id(None)
    with open(copy / "MODEL_CARD.md", "a", encoding="utf-8") as f:
        f.write("\nOne more line of documentation.\n")
    assert model_id(copy) == model_id(None)
    config = (copy / "config.json").read_text(encoding="utf-8")
    (copy / "config.json").write_text(config.replace("{", "{ ", 1), encoding="utf-8")  # same JSON, other bytes
    assert model_id(copy) != model_id(None)
