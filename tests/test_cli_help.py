"""`songfeat <command> --help` explains the options the docs send users to (compare --split, train-heads -j and --cache)."""
from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from songfeat.cli import app

run = CliRunner()


def _help(command: str) -> str:
    r = run.invoke(app, [command, "--help"])
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())  # unwrapped


COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command):
    # this checked `isinstance(p, click.Option)`, which typer's own parameters (typer vendors click) never are: it
    # passed with train --batch-size, train-default --seed, serve --port and two -j without help
    cmd = typer.main.get_command(app).commands[command]
    options = [p for p in cmd.params if p.param_type_name == "option"]
    assert options, f"{command}: no options found (is the check still looking at the right objects?)"
    bare = [p.opts[0] for p in cmd.params if p.param_type_name in ("option", "argument") and not p.help]
    assert not bare, f"{command}: options without help: {bare}"


def test_every_command_is_checked():
    assert {"analyze", "build", "train", "train-default", "check-behaviour", "evaluate-sources", "serve"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_clicks_usual_placeholders(command):
    # typer 0.28 (its own copy of click) showed "Usage: songfeat analyze [OPTIONS] {paths}...", "-m, --model <str>",
    # "<path>", "<int range>": click's usual is PATHS..., TEXT, PATH, INTEGER RANGE
    r = run.invoke(app, [command, "--help"], prog_name="songfeat")
    assert r.exit_code == 0, r.output
    usage, rest = r.output.split("\n", 1)
    assert re.fullmatch(rf"Usage: songfeat {command} \[OPTIONS\]( \[?[A-Z]+\]?(\.\.\.)?)*", usage), usage
    sections = rest.split("\nArguments:\n" if "\nArguments:\n" in rest else "\nOptions:\n", 1)[1]
    rows = re.findall(r"^  (\S.*?)(?:  |$)", sections, re.M)  # the first column: an argument or an option's names
    plain = r"\[?[A-Z]+\]?(\.\.\.)?|(-\w, )?--[\w-]+( / --[\w-]+| [A-Z][A-Z ]*[A-Z](\.\.\.)?)?"
    odd = [row for row in rows if not re.fullmatch(plain, row)]
    assert rows and not odd, f"{command}: {odd}"


def test_help_placeholders_read_as_click_writes_them():
    out = run.invoke(app, ["analyze", "--help"], prog_name="songfeat").output
    assert out.startswith("Usage: songfeat analyze [OPTIONS] PATHS...\n"), out
    for row in ("-m, --model TEXT", "-o, --output PATH", "-j, --workers INTEGER RANGE", "--timeout FLOAT RANGE"):
        assert row in out, row
    out = run.invoke(app, ["export-onnx", "--help"], prog_name="songfeat").output
    assert out.startswith("Usage: songfeat export-onnx [OPTIONS] [BUNDLE]\n") and "  [BUNDLE]  " in out, out


def test_compare_split_names_its_choices():
    assert "test (held out), val or train" in _help("compare")


def test_train_heads_help_names_the_cache_variable_and_what_workers_do():
    out = _help("train-heads")
    assert "$SONGFEAT_CACHE" in out
    assert "Processes reading clips" in out


def test_help_states_what_the_docs_do():
    # the docs say --timeout does not hold on Ray (docs/scaling.md), --engine ray's actors default to the cluster's CPUs,
    # --cv needs K >= 2 and leaves out fitted clips without it, and combiner variant d is the default (docs/models.md):
    # --help said none of these
    analyze = _help("analyze")
    assert "The local engine only: Ray has no per-file limit yet, so --engine ray refuses any but 0" in analyze
    assert "--engine ray always does, with or without it" in analyze
    assert "--engine ray has no per-clip limit and refuses any but 0" in _help("build")
    assert "--engine ray: actors, default one per cluster CPU" in analyze
    assert "K >= 2" in _help("evaluate-audio") and "(default: d, its best)" in _help("train")


@pytest.mark.parametrize("args, said", [
    (["analyze", "-j", "0", "x.mp3"], "--workers/-j: 0 is not in the range x>=1"),
    (["analyze", "--workers", "abc", "x.mp3"], "--workers/-j: 'abc' is not a valid int"),
    (["analyze", "--bogus", "x.mp3"], "no such option: --bogus"),
    (["analyze", "x.mp3", "-o"], "option '-o' requires an argument"),
    (["analyze"], "missing argument 'PATHS...'"),  # as the usage line names it
    (["analysis", "a.mp3", "b.mp3"], "got unexpected extra argument"),
    (["tags", "-k", "0", "x.mp3"], "--top/-k: 0 is not in the range 1<=x<=50"),
    (["build"], "missing option --labels"),
    (["serve", "--port", "x"], "--port/-p: 'x' is not a valid int"),
    (["analyse", "x.mp3"], "no such command 'analyse'. Did you mean 'analyze'"),
    (["--bogus"], "no such option: --bogus"),
])
def test_click_usage_errors_are_one_songfeat_line(args, said):
    # click printed four lines: "Usage: songfeat analyze [OPTIONS] ...", "Try 'songfeat analyze --help' for help.", a
    # blank line and "Error: Invalid value for '--workers' / '-j': 0 is not in the range x>=1."; README promises one
    r = run.invoke(app, args, prog_name="songfeat")
    command = " ".join(["songfeat", *(a for a in args[:1] if a in COMMANDS)])
    assert r.exit_code == 2 and r.stdout == "", r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"songfeat: error: {said}"), r.stderr
    assert r.stderr.endswith(f" (see {command} --help)\n"), r.stderr


def test_help_version_and_a_bare_songfeat_are_left_as_they_were():
    r = run.invoke(app, [], prog_name="songfeat")  # click's help, and 2 (no command given)
    assert r.exit_code == 2 and r.output.startswith("Usage: songfeat [OPTIONS] COMMAND") and "analyze" in r.output
    r = run.invoke(app, ["analyze", "--help"], prog_name="songfeat")
    assert r.exit_code == 0 and r.output.startswith("Usage: songfeat analyze [OPTIONS]"), r.output
    r = run.invoke(app, ["--version"], prog_name="songfeat")
    assert r.exit_code == 0 and r.output.startswith("songfeat ") and r.output.count("\n") == 1, r.output


def test_counts_take_the_number_of_their_noun():
    # messages said "holds 1 clips", "1 labelled ids have", "1 errors": counted() is what they share now
    from songfeat.errors import counted

    assert [counted(n, "clip") for n in (0, 1, 2)] == ["0 clips", "1 clip", "2 clips"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"
    assert counted(1, "track has", "tracks have") == "1 track has" and counted(0, "track has", "tracks have") == "0 tracks have"


def test_the_rest_of_a_long_list_and_a_one_track_summary_take_their_number(capsys, tmp_path):
    # "... and 1 more label rows dropped", "0 failed of 1 previews"
    from songfeat.cli import _echo_dropped, _echo_not_used
    from songfeat.data.download import DownloadReport

    _echo_dropped([f"row {i}" for i in range(6)], "see r.json")
    _echo_not_used([f"cell {i}" for i in range(8)], "see r.json")
    err = capsys.readouterr().err.splitlines()
    assert err[5] == "songfeat: warning: ... and 1 more label row dropped (see r.json)", err
    assert err[-1] == "songfeat: warning: ... and 3 more label values out of range read as missing (see r.json)", err
    summary = DownloadReport(tmp_path, tmp_path / "r.csv", total=1, downloaded=1).summary()
    assert summary.startswith(f"{tmp_path}: 1 downloaded, 0 already there, 0 failed of 1 preview ("), summary
