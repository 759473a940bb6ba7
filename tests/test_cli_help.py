"""`songfeat <command> --help` explains the options the docs send users to (compare --split, train-heads -j and --cache)."""
from __future__ import annotations

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


def test_compare_split_names_its_choices():
    assert "test (held out), val or train" in _help("compare")


def test_train_heads_help_names_the_cache_variable_and_what_workers_do():
    out = _help("train-heads")
    assert "$SONGFEAT_CACHE" in out
    assert "Processes reading clips" in out
