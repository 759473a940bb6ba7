"""Behaviour clips: rule parsing, the fixed stratified split, and the checker's counting."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from songfeat import behaviour


def test_rules_are_every_bound_in_the_text():
    rules = behaviour.parse_rules("instrumentalness>0.5; acousticness>0.5; energy<0.4; speechiness<0.33; key C# minor")
    assert [str(r) for r in rules] == ["instrumentalness>0.5", "acousticness>0.5", "energy<0.4", "speechiness<0.33"]
    assert [str(r) for r in behaviour.parse_rules("very short (0.56 s) single drum hit; instrumentalness>0.5")] == ["instrumentalness>0.5"]
    assert behaviour.parse_rules("near-silent (about -88 dBFS); energy~0") == []
    r = behaviour.parse_rules("speechiness>0.66")[0]
    assert r.holds(0.7) and not r.holds(0.66) and not r.holds(None)


def _manifest():
    return pd.DataFrame({"file": [f"clips/{c}_{i}.wav" for c in "abc" for i in range(5)],
                         "category": [c for c in "abc" for _ in range(5)],
                         "expectation": ["speechiness>0.66; instrumentalness<0.5"] * 15})


def test_split_is_stratified_deterministic_and_order_free():
    m = _manifest()
    halves = behaviour.split(m)
    assert halves == behaviour.split(m.iloc[::-1].reset_index(drop=True))[::-1]
    per = pd.Series(halves).groupby(m["category"]).value_counts().unstack()
    assert (per["check"] == 3).all() and (per["fit"] == 2).all()


def test_checker_counts_rules_and_errors():
    m = _manifest().assign(path=lambda d: d["file"], rules=lambda d: [behaviour.parse_rules(e) for e in d["expectation"]])
    m["half"] = behaviour.split(m)
    outs = {p: {"speechiness": 0.9, "instrumentalness": 0.1} for p in m["path"]}
    outs[m["path"][0]] = {"speechiness": 0.5, "instrumentalness": 0.1}
    outs[m["path"][1]] = "clips/a_1.wav: too short (0.50 s; need at least 1 s)"
    t = behaviour.check(m, outs)
    s = behaviour.summary(t, None)
    assert s["rules"] == 30 and s["hold"] == 27
    assert "**no**" in behaviour.to_markdown(t, None)


@pytest.mark.shared
def test_manifest_has_the_seed_count_of_rules(shared_data):
    m = behaviour.read_manifest(shared_data)
    assert sum(len(r) for r in m["rules"]) == 118
    assert set(m["half"]) == {"fit", "check"}
    for cat, g in m.groupby("category"):
        assert (g["half"] == "check").sum() - (g["half"] == "fit").sum() in (0, 1), cat


def test_region_table_counts_predictions_inside_the_catalogue_range_of_such_music():
    import numpy as np

    from songfeat.heads import TARGETS

    rng = np.random.default_rng(0)
    cat = pd.DataFrame({t: rng.uniform(0, 1, 4000) for t in TARGETS})
    m = pd.DataFrame({"file": ["clips/piano.mp3", "clips/noise.flac", "clips/broken.mp3"], "path": ["/p", "/n", "/b"],
                      "category": ["instrumental_classical_acoustic", "other_robustness", "instrumental_classical_acoustic"],
                      "half": ["check"] * 3})
    m["rules"] = [behaviour.parse_rules("instrumentalness>0.5")] * 3
    pred = {t: 0.5 for t in TARGETS} | {"danceability": 0.01, "instrumentalness": 0.8}
    outs = {"/p": pred, "/n": pred, "/b": "/b: cannot decode"}
    t = behaviour.region_table(m, outs, cat)
    assert set(t["file"]) == {"clips/piano.mp3"}  # robustness clips and failures have no region
    assert len(t) == len(TARGETS) and list(t.loc[~t["inside"], "feature"]) == ["danceability"]  # 0.01: below its q10
    md = behaviour.region_markdown(t)
    assert f"**{len(TARGETS) - 1} of {len(TARGETS)}**" in md and "| piano.mp3 | danceability | 0.010 |" in md
    assert behaviour.region_table(m, outs, cat, half="fit").empty


def test_check_behaviour_prints_rules_and_catalogue_ranges_or_skips_them_without_the_table(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from songfeat import sources
    from songfeat.cli import app
    from songfeat.errors import SongfeatError
    from songfeat.heads import TARGETS

    m = pd.DataFrame({"file": ["clips/piano.mp3"], "path": ["/p"], "category": ["instrumental_classical_acoustic"],
                      "half": ["check"], "rules": [behaviour.parse_rules("instrumentalness>0.5")]})
    outs = {"/p": {t: 0.5 for t in TARGETS} | {"instrumentalness": 0.9}}
    monkeypatch.setattr(behaviour, "analyze_clips", lambda shared, model=None, workers=1, progress=None: (m, outs))
    cat = pd.DataFrame({t: [i / 999 for i in range(1000)] for t in TARGETS})
    monkeypatch.setattr(sources, "catalogue_frame", lambda shared: cat)
    r = CliRunner().invoke(app, ["check-behaviour", "--shared", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "**1 of 1** rules hold" in r.output and f"of {len(TARGETS)}** predictions inside" in r.output

    def missing(shared):
        raise SongfeatError(tmp_path / "table.csv", "no such file")

    monkeypatch.setattr(sources, "catalogue_frame", missing)
    r = CliRunner().invoke(app, ["check-behaviour", "--shared", str(tmp_path)])
    assert r.exit_code == 0 and "**1 of 1** rules hold" in r.output and "catalogue ranges skipped" in r.output
    r = CliRunner().invoke(app, ["check-behaviour", "--shared", str(tmp_path), "--no-regions"])
    assert r.exit_code == 0 and "catalogue" not in r.output


def test_missing_manifest_is_a_clear_error(tmp_path):
    from songfeat.errors import SongfeatError

    with pytest.raises(SongfeatError, match=r"behaviour/manifest\.csv: no such file"):
        behaviour.read_manifest(tmp_path)


def test_behaviour_picture_draws_each_rule_kind_and_follows_the_values(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from songfeat.behaviour_plot import save_plot

    manifest = pd.DataFrame({"file": ["clips/a.ogg", "clips/b.ogg", "clips/c.ogg"], "category": ["x", "x", "y"],
                             "half": ["check", "check", "fit"],
                             "rules": [behaviour.parse_rules("speechiness>0.66; instrumentalness<0.5"),
                                       behaviour.parse_rules("instrumentalness>0.5; tempo>100"),
                                       behaviour.parse_rules("energy<0.4")]})
    manifest["path"] = manifest["file"]

    def table(instr_b):
        outs = {"clips/a.ogg": {"speechiness": 0.9, "instrumentalness": 0.01},
                "clips/b.ogg": {"instrumentalness": instr_b, "tempo": 120.0}, "clips/c.ogg": {"energy": 0.2}}
        return behaviour.check(manifest, outs)

    a, b = save_plot(table(0.8), tmp_path / "a.png"), save_plot(table(0.1), tmp_path / "b.png")  # b: a miss
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(a).ndim == 3
    assert a.read_bytes() != b.read_bytes()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.png", "b.png"]  # no partial file left behind
    with pytest.raises(ValueError, match="no bound rule"):
        save_plot(table(0.8), tmp_path / "c.png", half="nonexistent")


@pytest.mark.parametrize("manifest, says", [
    ("", "not a readable CSV"),
    ("file,category,expectation\n", "lists no clips"),
    ("name,category,expectation\nclips/a.wav,music,energy>0.5\n", "no file column"),
    ("file,expectation\nclips/a.wav,energy>0.5\n", "no category column"),
    ("file,category,expectation\n,music,energy>0.5\n", "line 2: no file named"),
    ("file,category,expectation\nclips/a.wav,,energy>0.5\n", "line 2: no category"),
    ("file,category,expectation\nclips/a.wav,music,energy>0.5\nclips/a.wav,music,energy<0.5\n",
     "line 3: clips/a.wav: listed twice (line 2 too)"),
    ("file,category,expectation\n../outside.wav,music,energy>0.5\n", "line 2: ../outside.wav: a path outside behaviour/"),
    ("file,category,expectation\nclips/a.wav,music,energy>0.5\n/etc/hostname,music,energy<0.5\n",
     "line 3: /etc/hostname: a path outside behaviour/"),
    ("file,category,expectation\nclips/a.wav,music,energy>0.5\nclips/gone.wav,other_robustness,\n",
     "line 3: clips/gone.wav: no such file"),
    ("file,category,expectation\nclips/a.wav,music,speechines>0.66\n", "line 2: 'speechines>0.66' is not a rule"),
    ("file,category,expectation\nclips/a.wav,music,energy>=0.5\n", "line 2: 'energy>=0.5' is not a rule"),
    ("file,category,expectation\nclips/a.wav,music,energy>high\n", "line 2: 'energy>high' is not a rule"),
    ("file,category,expectation\nclips/a.wav,music,energy>50\n", "line 2: 'energy>50': energy lies in 0-1"),
    ("file,category,expectation\nclips/a.wav,music,speechiness<0.33, energy>0.5\n",
     "line 2: 4 cells under 3 columns (quote an expectation that holds a comma)"),
    ("file,category,expectation\nclips/a.wav,music,energy>0.5,\nclips/b.wav,music\n", None),  # empty cells are not mistakes
])
def test_manifest_mistakes_are_refused_naming_the_line(tmp_path, manifest, says):
    """A manifest that cannot say what it means is one error naming it and its line, before any clip is analysed:
    no pandas traceback, no path read from outside behaviour/, no mistyped rule silently dropped (which made the clip a
    robustness clip), and no missing file counted as 'analyzes or fails clearly'."""
    from songfeat.errors import SongfeatError

    (tmp_path / "outside.wav").write_bytes(b"x")
    (tmp_path / "behaviour" / "clips").mkdir(parents=True)
    (tmp_path / "behaviour" / "clips" / "a.wav").write_bytes(b"x")
    (tmp_path / "behaviour" / "clips" / "b.wav").write_bytes(b"x")
    (tmp_path / "behaviour" / "manifest.csv").write_text(manifest)
    if says is None:
        assert [[str(r) for r in rs] for rs in behaviour.read_manifest(tmp_path)["rules"]] == [["energy>0.5"], []]
        return
    with pytest.raises(SongfeatError) as e:
        behaviour.read_manifest(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'behaviour' / 'manifest.csv'}: ") and says in str(e.value), str(e.value)
    from typer.testing import CliRunner

    from songfeat.cli import app

    r = CliRunner().invoke(app, ["check-behaviour", "--shared", str(tmp_path), "--no-regions"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and says in r.output, r.output


def test_prose_in_expectations_is_not_mistaken_for_a_rule():
    """The shared manifest's own wording still reads: only comparisons after a word are checked."""
    for text in ("6-channel (5.1) WAV robustness test; content = sea waves field recording, no music",
                 "very short (<1 s) 8 kHz single spoken word", "near-silent (about -88 dBFS); energy~0; loudness very low",
                 "instrumentalness>0.5; acousticness>0.5; speechiness<0.33; energy>0.5 (presto); key G minor",
                 "tempo>120; loudness<-20; energy<0.4."):
        assert behaviour.check_rules(text) is None, text


def test_a_robustness_row_shows_no_value_beside_rules_with_values():
    m = pd.DataFrame({"file": ["a.wav", "b.wav"], "category": ["x", "x"], "path": ["a", "b"], "half": ["check"] * 2,
                      "rules": [behaviour.parse_rules("energy>0.5"), []]})
    md = behaviour.to_markdown(behaviour.check(m, {"a": {"energy": 0.7}, "b": {"energy": 0.1}}))
    assert "| b.wav | check | analyzes or fails clearly | – | yes |" in md and "nan" not in md


def test_a_plot_that_cannot_be_written_is_refused_before_the_clips_are_analysed(monkeypatch, tmp_path):
    # `check-behaviour --plot <a folder>` (or a path under a file) analysed every clip, then raised IsADirectoryError /
    # FileExistsError from matplotlib: a traceback after minutes of work.
    from typer.testing import CliRunner

    from songfeat.cli import app

    calls = []
    monkeypatch.setattr(behaviour, "analyze_clips", lambda *a, **k: calls.append(1) or (None, {}))
    (tmp_path / "notes.txt").write_text("x")
    for target in (tmp_path, tmp_path / "notes.txt" / "p.png"):
        r = CliRunner().invoke(app, ["check-behaviour", "--shared", str(tmp_path), "--plot", str(target)])
        assert r.exit_code == 2 and r.output.count("\n") == 1, r.output  # refused before any work (it was 1)
        reason = "is a folder, not a file to write" if target == tmp_path else "cannot write it (Not a directory)"
        assert r.output == f"songfeat: error: {target}: {reason}\n", r.output  # once (it was wrapped in a second reason)
    assert calls == []


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="needs Linux's /proc, where nothing can be made")
@pytest.mark.parametrize("argv, work", [
    (["check-behaviour", "--shared", ".", "--plot"], "songfeat.behaviour.analyze_clips"),
    (["evaluate-sources", "--shared", ".", "--scatter"], "songfeat.sources.evaluate_sources"),
    (["evaluate", "bundle", "--store", "store", "--scatter"], "songfeat.evaluate.evaluate_bundle"),
])
def test_a_picture_in_a_folder_that_only_looks_writable_is_refused_before_the_work(argv, work, monkeypatch):
    """As root, `check-behaviour --plot /proc/x.png` passed the permission check (os.access says yes to root), ran every
    clip, and failed at the write with status 1: the folder is tried now (an entry made and removed), before the work.
    os.access is made to say yes here, as it does to root, so this runs as any user."""
    import importlib

    from typer.testing import CliRunner

    from songfeat import output
    from songfeat.cli import app

    module, attr = work.rsplit(".", 1)
    calls = []
    monkeypatch.setattr(importlib.import_module(module), attr, lambda *a, **k: calls.append(1))
    monkeypatch.setattr(output.os, "access", lambda *a, **k: True)
    r = CliRunner().invoke(app, [*argv, "/proc/songfeat-picture.png"])
    assert (r.exit_code, r.stdout, calls) == (2, "", []), r.output
    assert r.stderr.startswith("songfeat: error: /proc/songfeat-picture.png: cannot write it (nothing can be made in "
                               "/proc: ") and r.stderr.count("\n") == 1, r.stderr


def test_analyze_clips_shows_progress_while_the_clips_are_analysed(monkeypatch):
    """check-behaviour analysed every clip (minutes) with nothing on the terminal until the table."""
    import importlib

    from songfeat.analyze import Outcome

    analyze_module = importlib.import_module("songfeat.analyze")  # `songfeat.analyze` the attribute is the function

    m = pd.DataFrame({"file": ["a.wav", "b.wav"], "path": ["/a.wav", "/b.wav"]})
    monkeypatch.setattr(behaviour, "read_manifest", lambda shared: m)
    monkeypatch.setattr(analyze_module, "analyze_many",
                        lambda paths, model=None, workers=1: (Outcome(path=p, features={"energy": 0.5}) for p in paths))
    seen = []

    def bar(items, label, total=None):
        seen.append((total, label))
        return items

    monkeypatch.setattr(importlib.import_module("songfeat.progress"), "track", bar)
    _, outs = behaviour.analyze_clips("unused", progress=True)
    assert seen == [(2, "analysing behaviour clips")] and outs == {"/a.wav": {"energy": 0.5}, "/b.wav": {"energy": 0.5}}
    seen.clear()
    behaviour.analyze_clips("unused", progress=False)
    assert seen == []
