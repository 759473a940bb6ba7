"""Leave-one-source-out plumbing: the four sources, and the per-clip record cache."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat.records import get_record


def test_record_cache_roundtrip_and_errors(tmp_path, example_clip):
    a = get_record(example_clip, cache=tmp_path, with_tagger=False)
    assert set(a.blocks) == {"vad", "pitch", "spoken", "dynamics", "mfcc", "mfcc_band"} and a.mfcc_summary.shape == (40,)
    assert np.array_equal(a.mfcc_summary, a.blocks["mfcc"][0])  # the previous default read the first window
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = get_record(example_clip, cache=tmp_path, with_tagger=False)  # from the cache
    for k in a.blocks:
        assert np.array_equal(a.blocks[k], b.blocks[k])
    assert a.descriptors == b.descriptors
    short = tmp_path / "short.wav"
    import soundfile as sf

    sf.write(short, np.zeros(1000, np.float32) + 0.1, 44100)
    err = get_record(short, cache=tmp_path, with_tagger=False)
    assert isinstance(err, str) and "too short" in err and str(short) in err


@pytest.mark.shared
def test_sources_are_the_four_labelled_sets(shared_data):
    from songfeat.sources import labelled_clips

    c = labelled_clips(shared_data)
    assert c.groupby("source").size().to_dict() == {"forro": 54, "poprock": 48, "older": 36, "fma": 11}
    assert c["loudness"].isna().sum() == 11  # Echo Nest's FMA table has no loudness
    assert c[["danceability", "energy", "speechiness"]].notna().all().all()


def test_behaviour_intervals_give_music_clips_their_catalogue_region_and_robustness_clips_only_rules(monkeypatch):
    import pandas as pd

    from songfeat import behaviour, sources
    from songfeat.heads import TARGETS

    rng = np.random.default_rng(1)
    cat = pd.DataFrame({t: rng.uniform(0, 1, 3000) for t in TARGETS})
    monkeypatch.setattr(sources, "catalogue_frame", lambda shared: cat)
    fit = pd.DataFrame({"file": ["clips/piano.mp3", "clips/noise.flac"],
                        "category": ["instrumental_classical_acoustic", "other_robustness"],
                        "rules": [behaviour.parse_rules("instrumentalness>0.5; energy<0.4"),
                                  behaviour.parse_rules("instrumentalness>0.5")]})
    lo, hi, info = sources.behaviour_intervals("unused", fit)
    d = TARGETS.index("danceability")
    assert 0.05 < lo[0, d] < 0.15 and 0.85 < hi[0, d] < 0.95  # the piano's danceability: where such tracks lie
    assert (lo[1, d], hi[1, d]) == (0.0, 1.0)  # the noise clip's: unknown, no rule names it
    i = TARGETS.index("instrumentalness")
    assert lo[1, i] == pytest.approx(info["rules"]["instrumentalness>0.5"][0])  # its own rule's catalogue interval
    assert list(info["regions"]) == ["clips/piano.mp3"]
    lo_m, hi_m, info_m = sources.behaviour_intervals("unused", fit, catalogue_bounds=False)
    assert info_m == {"rules": {}, "regions": {}} and lo_m[0, i] == pytest.approx(0.6) and hi_m[0, d] == 1.0


def test_bias_table_shows_each_sources_shift_beside_the_previous_default():
    from songfeat.evaluate import regression_metrics
    from songfeat.sources import bias_table, to_markdown

    t = np.array([[0.2, 0.5], [0.4, 0.7], [0.6, 0.9]])
    names = ["energy", "valence"]
    learned = {"heads": regression_metrics(t, t + [0.1, -0.2], names), "previous_default": regression_metrics(t, t, names),
               "fold_mean": regression_metrics(t, t, names), "catalogue_mean": regression_metrics(t, t, names)}
    result = {"targets": names, "sources": {"forro": {"n": 3, "learned": learned}}}
    lines = bias_table(result)
    assert lines[2] == "| held-out source | energy | valence |"
    assert lines[4] == "| forro | +0.100 (+0.000) | -0.200 (+0.000) |"
    assert "| forro | +0.100" in to_markdown(result)
    for m in learned.values():  # a result recorded before the bias was: no table, no error
        for v in m["targets"].values():
            v.pop("bias")
    assert bias_table(result) == []


def test_held_out_report_names_the_clips_the_vocal_gate_raised():
    from songfeat.evaluate import regression_metrics
    from songfeat.sources import to_markdown

    t = np.array([[0.0], [0.9]])
    learned = {k: regression_metrics(t, t, ["instrumentalness"]) for k in ("heads", "previous_default", "fold_mean", "catalogue_mean")}
    gate = {"feature": "instrumentalness", "value": 0.875, "fitting_rows": {"instrumental": 12, "sung": 100},
            "raised": [{"track_id": "abc", "label": 0.9, "before": 0.06, "after": 0.875}]}
    result = {"targets": ["instrumentalness"], "sources": {"fma": {"n": 2, "learned": learned, "vocal_gate": gate}}}
    assert "raised instrumentalness to 0.875 on: abc (label 0.90, was 0.06)." in to_markdown(result)
    gate["raised"] = []
    assert "12 instrumental and 100 sung or spoken clips) raised instrumentalness to 0.875 on: no clip." in to_markdown(result)


def test_seed_spread_reports_each_seeds_figure_and_the_range():
    from songfeat.sources import seed_spread, spread_markdown

    def run(seed, forro, fma, fma_without):
        return {"fit": {"seed": seed}, "sources": {
            "forro": {"learned": {"heads": {"average": {"mae": forro}}}},
            "fma": {"learned": {"heads": {"average": {"mae": fma}}}, "average_without": {"heads": {"mae": fma_without}}}}}

    spread = seed_spread([run(42, 0.090, 0.23, 0.17), run(43, 0.093, 0.22, 0.16), run(44, 0.091, 0.24, 0.18)])
    assert spread["seeds"] == [42, 43, 44]
    f = spread["sources"]["forro"]
    assert f["mae"] == [0.090, 0.093, 0.091] and f["min"] == 0.090 and f["max"] == 0.093
    assert f["mean"] == pytest.approx(0.09133, abs=1e-5) and "without" not in f
    assert spread["sources"]["fma"]["without"] == [0.17, 0.16, 0.18]
    md = spread_markdown(spread)
    assert "| held-out source | seed 42 | seed 43 | seed 44 | mean | max - min |" in md
    assert "| forro | 0.0900 | 0.0930 | 0.0910 | 0.0913 | 0.0030 |" in md
    assert "| fma without its masked features | 0.1700 | 0.1600 | 0.1800 | 0.1700 | 0.0200 |" in md


def test_plot_draws_the_held_out_table_and_bias_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from songfeat.evaluate import regression_metrics
    from songfeat.sources_plot import save_plot

    t = np.array([[0.2, 0.5], [0.4, 0.7], [0.6, 0.9]])
    names = ["energy", "valence"]

    def result(shift):
        learned = {"heads": regression_metrics(t, t + shift, names), "previous_default": regression_metrics(t, t + 0.05, names),
                   "fold_mean": regression_metrics(t, t * 0 + 0.5, names), "catalogue_mean": regression_metrics(t, t * 0 + 0.4, names)}
        return {"targets": names, "sources": {"forro": {"n": 3, "learned": learned}, "fma": {"n": 3, "learned": learned}}}

    a, b = save_plot(result([0.1, -0.2]), tmp_path / "a.png"), save_plot(result([-0.1, 0.2]), tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(a).shape[:2] == (506, 1430)
    assert a.read_bytes() != b.read_bytes()  # the bias panel follows the numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no partial file left behind
    with pytest.raises(ValueError, match="no held-out source"):
        save_plot({"targets": names, "sources": {}}, tmp_path / "c.png")


def test_scatter_draws_every_held_out_prediction_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from songfeat.sources_plot import save_scatter

    names = ["danceability", "energy", "speechiness", "acousticness", "instrumentalness", "valence", "liveness"]
    y = np.linspace(0.1, 0.9, 5)[:, None].repeat(7, 1)

    def result(pull):  # predictions pulled towards 0.5 by `pull`
        p = (1 - pull) * y + pull * 0.5
        return {"targets": names, "sources": {s: {"n": 5, "labels": y.tolist(), "predictions": {"heads": p.tolist()}}
                                              for s in ("forro", "fma")}}

    a, b = save_scatter(result(0.0), tmp_path / "a.png"), save_scatter(result(0.6), tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(a).ndim == 3
    assert a.read_bytes() != b.read_bytes()  # the points (and the slopes in the titles) follow the numbers
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="no per-clip predictions"):
        save_scatter({"targets": names, "sources": {"forro": {"n": 5}}}, tmp_path / "c.png")


def test_blend_weight_is_the_best_one_that_breaks_no_more_rules_than_the_heads():
    from songfeat.sources import pick_blend

    grid = (0.0, 0.25, 0.5)
    mae = np.array([[0.10, 0.10, 0.10], [0.08, 0.09, 0.10], [0.07, 0.12, 0.10]])  # rows: weights; columns: features
    misses = np.array([[1, 0, 0], [1, 0, 0], [2, 0, 0]])
    # feature 0: 0.5 is best on MAE but breaks a rule the heads keep -> 0.25; feature 1: 0.25; feature 2: a tie -> 0
    assert pick_blend(mae, misses, grid).tolist() == [0.25, 0.25, 0.0]
    with pytest.raises(ValueError, match="start at 0"):
        pick_blend(mae, misses, (0.25, 0.5, 0.75))


def test_stretch_moves_predictions_away_from_the_centre_and_leaves_factor_one_untouched():
    from songfeat.sources import stretch_outputs

    p = np.array([[0.2, 0.3, 0.123456789], [0.9, 0.6, 0.7]], dtype=np.float32)
    centre = np.array([0.7, 0.5, 0.3])
    out = stretch_outputs(p, centre, np.array([1.5, 2.0, 1.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0.7 + 1.5 * (0.2 - 0.7), 0.7 + 1.5 * (0.9 - 0.7)], rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], [0.1, 0.7], rtol=1e-6)
    assert np.array_equal(out[:, 2], p[:, 2])  # factor 1: bit for bit the input, not c + (p - c)


def _silent(path):
    import soundfile as sf

    sf.write(path, np.zeros(44100 * 2, np.float32), 44100)
    return path


def test_a_cached_failure_names_each_file_with_those_bytes(tmp_path):
    """Two files with the same bytes share one cache entry; each failure still names its own file, fresh or cached."""
    from songfeat.records import get_records

    a, b = _silent(tmp_path / "a.wav"), _silent(tmp_path / "b.wav")
    for _ in range(2):  # computed, then from the cache
        ea, eb = get_records([a, b], tmp_path / "cache", with_tagger=False, progress=False)
        assert ea.startswith(f"{a}: audio is silent") and eb.startswith(f"{b}: audio is silent"), (ea, eb)


def test_an_unreadable_cache_entry_is_computed_again(tmp_path):
    """A cut-off or empty entry (a crash, a full disk, another tool) is a miss: recomputed and rewritten, never a clip
    left out for good as 'analysis failed (BadZipFile ...)'."""
    from songfeat.records import get_records

    a = _silent(tmp_path / "a.wav")
    first = get_records([a], tmp_path / "cache", with_tagger=False, progress=False)[0]
    (entry,) = (tmp_path / "cache").glob("*.npz")
    for broken in (entry.read_bytes()[:50], b""):
        entry.write_bytes(broken)
        assert get_records([a], tmp_path / "cache", with_tagger=False, progress=False)[0] == first
        with np.load(entry) as z:  # rewritten whole
            assert "reason" in z


def test_a_cache_that_cannot_be_a_folder_is_refused_before_any_analysis(tmp_path):
    from songfeat.errors import SongfeatError
    from songfeat.records import get_records

    (tmp_path / "f").write_text("x")
    for cache in (tmp_path / "f", tmp_path / "f" / "records"):
        with pytest.raises(SongfeatError, match="cannot be the record cache: .*f is not a folder"):
            get_records([_silent(tmp_path / "a.wav")], cache, with_tagger=False, progress=False)


def test_a_cache_that_cannot_be_written_is_refused_before_any_analysis(tmp_path, monkeypatch):
    # a read-only --cache let train-heads analyse every clip, fail to save each record, then blame the labels file
    import errno
    import tempfile

    from songfeat import records
    from songfeat.errors import SongfeatError

    def read_only(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)  # the probe's (atomic.probe_folder) entry cannot be made
    monkeypatch.setattr(records, "_compute", lambda *_a, **_k: pytest.fail("analysed before the cache was checked"))
    with pytest.raises(SongfeatError, match=r"cache: cannot write the record cache \(Permission denied\)"):
        records.get_records([_silent(tmp_path / "a.wav")], tmp_path / "cache", with_tagger=False, progress=False)


def _partial_shared(root, leave_out):
    """A shared-data folder holding every input evaluate-sources reads (tiny but readable) except `leave_out`."""
    files = ("spotify-previews/labels.csv", "spotify-previews-extra/labels.csv", "fma-echonest/clips_labels.csv",
             "spotify-features/combined_unique_by_track_id.csv", "spotify-features/it21803666_SpotifyFeatures_subset.csv",
             "fma-echonest/echonest_full.csv", "fma-echonest/fma_echonest_genres.csv", "behaviour/manifest.csv")
    for rel, folder in [(f, False) for f in files] + [("spotify-previews/audio", True), ("spotify-previews-extra/audio", True)]:
        p = root / rel
        if rel == leave_out:
            continue
        if folder:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("track_id,energy,origin,file\nx,0.5,a,x.wav\n")
    return root


def test_a_partial_or_empty_shared_folder_is_refused_before_any_work(tmp_path):
    """A missing input is named in one line up front (a missing FMA table was a FileNotFoundError traceback; others
    were found only after every clip's analysis)."""
    from songfeat.errors import SongfeatError
    from songfeat.sources import evaluate_sources

    shared = _partial_shared(tmp_path / "shared", "fma-echonest/clips_labels.csv")
    with pytest.raises(SongfeatError, match=r"fma-echonest/clips_labels\.csv: no such file; --shared names"):
        evaluate_sources(shared, cache=tmp_path / "cache", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SongfeatError, match=r"empty: holds none of the shared data"):
        evaluate_sources(tmp_path / "empty", cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command", [["evaluate-sources"], ["train-default", "--out", "b"], ["check-behaviour"]])
def test_a_shared_option_naming_a_file_says_it_is_a_file_not_a_missing_folder(tmp_path, command, monkeypatch):
    """`evaluate-sources --shared song.wav` said "song.wav: no such folder" of a file that exists, and check-behaviour
    "song.wav/behaviour/manifest.csv: no such file"; a file is said to be a file now, and a missing folder missing."""
    from typer.testing import CliRunner

    from songfeat.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "song.wav").write_bytes(b"RIFF")
    for shared, reason in (("song.wav", "is a file, not a folder"), ("nowhere", "no such folder")):
        r = CliRunner().invoke(app, [*command, "--shared", shared])
        assert r.exit_code == 2 and r.stdout == "", r.output
        assert r.stderr.startswith(f"songfeat: error: {shared}: {reason}") and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def _tiny_shared(root):
    """A shared-data folder whose three labelled sources are tiny but well formed (two clips each, audio files present);
    the other inputs only exist (they are read later)."""
    import pandas as pd

    from songfeat.heads import TARGETS
    from songfeat.sources import ORIGINS

    _partial_shared(root, leave_out=None)

    def labels(folder, origins):
        ids = [f"{folder[:4].replace('-', 'x')}{i:018d}" for i in range(len(origins))]
        (root / folder / "audio").mkdir(parents=True, exist_ok=True)
        for t in ids:
            (root / folder / "audio" / f"{t}.mp3").write_bytes(b"")
        pd.DataFrame({"track_id": ids, **{t: 0.5 for t in TARGETS}, "origin": origins}).to_csv(root / folder / "labels.csv", index=False)

    labels("spotify-previews", [o for o in ORIGINS.values() for _ in range(2)])
    labels("spotify-previews-extra", ["older", "older"])
    pd.DataFrame({"track_id": ["000002", "000003"], "file": ["000002.mp3", "a/000003.mp3"], **{t: 0.5 for t in TARGETS}}) \
        .to_csv(root / "fma-echonest" / "clips_labels.csv", index=False)
    return root


def _edit(file, fn):
    import pandas as pd

    fn(pd.read_csv(file, dtype={"track_id": str})).to_csv(file, index=False)


@pytest.mark.parametrize("file, edit, message", [
    ("spotify-previews/labels.csv", lambda d: d.drop(columns=["origin"]), r"spotify-previews/labels\.csv: no origin column"),
    ("spotify-previews/labels.csv", lambda d: d.drop(columns=["danceability"]), r"labels\.csv: no danceability column"),
    ("spotify-previews/labels.csv", lambda d: d.assign(origin="elsewhere"),
     r"labels\.csv: 0 labelled clip\(s\) of origin 'lucasmouragomes/audio_analysis' with audio; the forro source needs at least 2"),
    ("spotify-previews-extra/labels.csv", lambda d: d.assign(energy=float("nan")), r"extra/labels\.csv: no energy column \(or no value"),
    ("fma-echonest/clips_labels.csv", lambda d: d.drop(columns=["file"]), r"clips_labels\.csv: no file column"),
    ("fma-echonest/clips_labels.csv", lambda d: d.drop(columns=["valence"]), r"clips_labels\.csv: no valence column"),
    ("fma-echonest/clips_labels.csv", lambda d: d.assign(file=["000002.mp3", None]), r"clips_labels\.csv: line 3: no file named"),
])
def test_a_label_table_without_a_column_it_needs_is_one_line_up_front(tmp_path, file, edit, message):
    """A label table missing `origin`, FMA's `file` or a learned feature was a KeyError or TypeError traceback (for
    train-default after stage 1's fit); a source left without clips failed only when its metrics were computed."""
    from songfeat.errors import SongfeatError
    from songfeat.sources import check_shared

    shared = _tiny_shared(tmp_path / "shared")
    check_shared(shared)
    _edit(shared / file, edit)
    with pytest.raises(SongfeatError, match=message):
        check_shared(shared)


def test_a_repeated_track_id_in_the_previews_labels_is_read_once(tmp_path):
    """A labels.csv listing an id twice ended in 'ValueError: Length of values (5) does not match length of index (4)'."""
    import pandas as pd

    from songfeat.sources import labelled_clips

    shared = _tiny_shared(tmp_path / "shared")
    _edit(shared / "spotify-previews" / "labels.csv", lambda d: pd.concat([d, d.iloc[:1].assign(origin="elsewhere")]))
    c = labelled_clips(shared)
    assert c.groupby("source").size().to_dict() == {"forro": 2, "poprock": 2, "older": 2, "fma": 2}


def test_train_default_and_evaluate_sources_refuse_bad_labels_and_cache_before_any_fit(tmp_path, monkeypatch):
    """A bad label table or an unwritable --cache surfaced only after stage 1's fit (about two minutes in)."""
    from songfeat import default_model
    from songfeat.errors import SongfeatError
    from songfeat.sources import evaluate_sources

    monkeypatch.setattr(default_model, "check_table", lambda *a: pytest.fail("read the 41,855-track table first"))
    monkeypatch.setattr(default_model, "train_base", lambda *a, **k: pytest.fail("fitted stage 1 first"))
    shared = _tiny_shared(tmp_path / "shared")
    (tmp_path / "file").write_text("x")
    for run in (lambda: default_model.train_default(shared, tmp_path / "out", progress=False, cache=tmp_path / "file" / "cache"),
                lambda: evaluate_sources(shared, cache=tmp_path / "file" / "cache", progress=False)):
        with pytest.raises(SongfeatError, match=r"file/cache: cannot be the record cache: .*file is not a folder"):
            run()
    _edit(shared / "spotify-previews" / "labels.csv", lambda d: d.drop(columns=["origin"]))
    with pytest.raises(SongfeatError, match=r"labels\.csv: no origin column"):
        default_model.train_default(shared, tmp_path / "out", progress=False, cache=tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_the_reading_and_training_bars_are_drawn_on_stderr(capsys, monkeypatch):
    # callers show them when stderr is a terminal, but both were drawn on rich's default console, stdout: a blank line
    # went into `evaluate-sources --format json > f.json` and no bar reached the terminal
    from songfeat.default_model import _progress
    from songfeat.records import map_files

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich takes stderr for a terminal: bars are drawn only there
    assert map_files(abs, [-1, -2, 3], progress=True) == [1, 2, 3]
    assert list(_progress(iter([1, 2]), "bar-test", True)) == [1, 2]
    out, err = capsys.readouterr()
    assert out == "" and "bar-test" in err


def test_the_same_recording_under_another_id_is_held_out_with_the_clip(monkeypatch):
    """A catalogue row whose learned features and loudness all equal a labelled clip's is that recording under another
    Spotify id (two older hits were in the 41,855-track table so): no fit that scores the clip may read it either."""
    import pandas as pd

    from songfeat import sources

    cols = [*sources.TARGETS, "loudness"]
    clip = dict(zip(cols, (0.5, 0.6, 0.04, 0.1, 0.0, 0.7, 0.12, -5.5)))
    monkeypatch.setattr(sources, "labelled_clips", lambda shared: pd.DataFrame([{"track_id": "clip", **clip}]))
    catalogue = pd.DataFrame([{"track_id": "twin", **clip}, {"track_id": "other", **{**clip, "energy": 0.61}},
                              {"track_id": "clip", **clip}, {"track_id": "rounded", **{**clip, "valence": 0.70001}}])
    assert sources.held_out_ids("unused", catalogue) == {"clip", "twin", "rounded"}


def test_evaluate_sources_cli_checks_format_and_pictures_first_and_writes_strict_json(tmp_path, monkeypatch):
    """`evaluate-sources -f xml` ran its minutes of work and printed Markdown; `--plot a.png --scatter a.png` wrote the
    scatter over the plot; `-f json` printed the fold mean's undefined r (constant predictions) as NaN, which strict
    JSON readers (jq, JSON.parse) refuse."""
    import json
    import math

    from typer.testing import CliRunner

    from songfeat import sources
    from songfeat.cli import app

    result = {"sources": {"pop": {"n": 3, "learned": {"fold_mean": {"average": {"mae": np.float64(0.1),
                                                                                "pearson": float("nan")}}}}},
              "failed": []}
    ran: list = []
    monkeypatch.setattr(sources, "evaluate_sources", lambda *a, **k: ran.append(1) or result)
    base = ["evaluate-sources", "--shared", str(tmp_path), "--cache", str(tmp_path / "cache")]
    r = CliRunner().invoke(app, [*base, "-f", "xml"])
    assert (r.exit_code, r.stderr, ran) == (2, "songfeat: error: --format must be md or json, not 'xml'\n", []), r.output
    png = tmp_path / "a.png"
    r = CliRunner().invoke(app, [*base, "--plot", str(png), "--scatter", str(png)])
    assert r.exit_code == 2 and ran == [] and r.stderr == (
        f"songfeat: error: {png}: named for two pictures (--plot and --scatter); give each its own file\n"), r.output
    r = CliRunner().invoke(app, [*base, "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    average = doc["sources"]["pop"]["learned"]["fold_mean"]["average"]
    assert average == {"mae": 0.1, "pearson": None} and not math.isnan(average["mae"])
