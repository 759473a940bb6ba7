"""README.md and docs/*.md as a new user meets them: links and pictures resolve, every `songfeat CMD ...` shown names
options CMD has, and the README's Python snippets that read one audio file run on the example clip."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import typer

from songfeat.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = typer.main.get_command(app).commands


def _anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", re.sub(r"[`*]", "", heading).strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    """The ids of a markdown file's headings."""
    return {_anchor(h) for h in re.findall(r"^#+\s+(.*)$", doc.read_text(encoding="utf-8"), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_and_pictures_resolve(doc):
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, fragment = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in _anchors(target):
            broken.append(f"{link}: no such heading in {target.name}")
    assert not broken, f"{doc.name}: {broken}"


def _options(command: str) -> set[str]:
    """Every spelling of every option `songfeat COMMAND` takes, --help included."""
    return {"--help"} | {o for p in COMMANDS[command].params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_name_options_they_have(doc):
    # a renamed or removed option stays in the docs unnoticed otherwise: the user meets "No such option"
    text = doc.read_text(encoding="utf-8")
    wrong = []
    for command, rest in re.findall(r"songfeat ([a-z][\w-]*)([^\n`|]*)", text):
        if command not in COMMANDS:  # prose ("songfeat serve answers ..."), not a command line
            continue
        given = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest.split(" #")[0])
        wrong += [f"songfeat {command} {o}" for o in given if o not in _options(command)]
    assert not wrong, f"{doc.name}: options these commands do not have: {wrong}"


def _file_snippets(doc: Path) -> list[str]:
    """The doc's ```python blocks that need nothing but an audio file named song.mp3 (not a store, a server or Ray)."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if not re.search(r"spotipy|ray\.|open_store|store\.", b)]


def test_readme_python_snippets_run(tmp_path, example_clip, monkeypatch):
    # the README's tagger snippet called tagger.describe(y, ...) with no y anywhere: a NameError for whoever pasted it
    snippets = _file_snippets(ROOT / "README.md") + _file_snippets(ROOT / "docs" / "analysis.md")
    assert len(snippets) >= 4, snippets  # analyze, audio_analysis (README and docs) and the tagger's
    shutil.copy(example_clip, tmp_path / "song.mp3")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in snippets:  # one namespace, as a reader pasting them in order into one session would have
        exec(compile(code, "<snippet>", "exec"), namespace)
    assert set(namespace) >= {"songfeat", "tagger", "d"}
    assert set(namespace["d"]) == {"msd_tags", "mtt_tags", "msd_penultimate", "mtt_penultimate", "msd_pooled", "mtt_pooled"}
