"""`songfeat <command> --help` explains the options the docs send users to (compare --split, train-heads -j and --cache)."""
from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from songfeat.cli import app

run = CliRunner()


def _help(command: str) -> str:
    r = run.invoke(app, [command, "--help"])
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())  # unwrapped


@pytest.mark.parametrize("command", ["compare", "evaluate", "train-heads", "evaluate-audio"])
def test_every_option_has_help(command):
    cmd = typer.main.get_command(app).commands[command]
    bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert not bare, f"{command}: options without help: {bare}"


def test_compare_split_names_its_choices():
    assert "test (held out), val or train" in _help("compare")


def test_train_heads_help_names_the_cache_variable_and_what_workers_do():
    out = _help("train-heads")
    assert "$SONGFEAT_CACHE" in out
    assert "Processes reading clips" in out
