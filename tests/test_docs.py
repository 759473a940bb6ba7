"""README.md and docs/*.md as a new user meets them: links and pictures resolve, every `songfeat CMD ...` shown names
options CMD has, and the docs' Python snippets that read one audio file run on the example clip."""
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


def test_python_snippets_run(tmp_path, example_clip, monkeypatch):
    # the README's tagger snippet called tagger.describe(y, ...) with no y anywhere: a NameError for whoever pasted it;
    # docs/musicnn.md's did the same, unseen while only the README and docs/analysis.md were run
    snippets = [code for doc in DOCS for code in _file_snippets(doc)]
    assert len(snippets) >= 6, snippets  # analyze, audio_analysis and the tagger's (README and docs), measure_file
    shutil.copy(example_clip, tmp_path / "song.mp3")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in snippets:  # one namespace, as a reader pasting them in order into one session would have
        exec(compile(code, "<snippet>", "exec"), namespace)
    assert set(namespace) >= {"songfeat", "tagger", "d"}
    assert set(namespace["d"]) == {"msd_tags", "mtt_tags", "msd_penultimate", "mtt_penultimate", "msd_pooled", "mtt_pooled"}


def _code_spans(doc: Path) -> list[str]:
    """The doc's inline code (`...`) and the lines of its fenced blocks: where it shows commands, options and names."""
    text = doc.read_text(encoding="utf-8")
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    return [*re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)), *(l for b in fenced for l in b.splitlines())]


def _script_options(script: Path) -> set[str]:
    """The options a script or benchmark defines: every quoted '--name' in its source."""
    return set(re.findall(r"[\"'](--[a-zA-Z][\w-]*)[\"'=]", script.read_text(encoding="utf-8")))


#: options of other programs the docs show beside songfeat's: curl's, uvicorn's
OTHER_TOOLS_OPTIONS = {"--data-binary", "--http", "--factory"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_options_exist(doc):
    # the command-line test above sees `songfeat CMD --opt` only: prose names options as `analyze --model`, as
    # `--rescan-interval` alone, or on a script's command line (`python scripts/x.py --opt`), and a renamed one stayed
    wrong = []
    scripts = {p.relative_to(ROOT).as_posix(): p for p in [*ROOT.glob("scripts/*.py"), *ROOT.glob("benchmarks/*.py")]}
    anywhere = OTHER_TOOLS_OPTIONS | {"--version"} | {o for c in COMMANDS for o in _options(c)} | {
        o for p in scripts.values() for o in _script_options(p)}
    for span in _code_spans(doc):
        span = span.split(" #")[0]
        for script, rest in re.findall(r"((?:scripts|benchmarks)/\w+\.py)((?: +[^\s|]+)*)", span):
            have = _script_options(scripts[script]) if script in scripts else set()
            wrong += [f"{script} {o}" for o in re.findall(r"(?<![\w-])(--[a-zA-Z][\w-]*)", rest) if o not in have]
        for command, rest in re.findall(r"(?<![\w./-])([a-z][\w-]*)((?: +(?:--?[a-zA-Z][\w-]*|[^-\s]\S*))+)", span):
            if command in COMMANDS:
                wrong += [f"{command} {o}" for o in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest)
                          if o not in _options(command)]
        wrong += [o for o in re.findall(r"(?<![\w-])(--[a-zA-Z][\w-]*)", span) if o not in anywhere]
    assert not wrong, f"{doc.name}: options that do not exist: {sorted(set(wrong))}"


def _variables_read() -> set[str]:
    """Every SONGFEAT_* variable named anywhere in songfeat's source (comments included, so a name only mentioned counts:
    this catches documented variables nothing names, not every unread one), or `serve.env_name` of an `app_from_env`
    setting."""
    serve = pytest.importorskip("songfeat.serve")
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "songfeat").rglob("*.py"))
    return set(re.findall(r"SONGFEAT_[A-Z_]*[A-Z]", source)) | {serve.env_name(o) for o in serve.ENV_OPTIONS}


def test_documented_environment_variables_are_read_and_read_ones_documented():
    # a variable the docs tell users to set that nothing reads does nothing, without a word; one read but not in the
    # docs is a setting no user can find
    documented = {v for doc in DOCS for v in re.findall(r"SONGFEAT_[A-Z_]*[A-Z]", doc.read_text(encoding="utf-8"))}
    tests_and_benchmarks = {"SONGFEAT_SHARED"}  # where the tests and benchmarks find ../shared (tests/conftest.py)
    assert all(v in (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8") for v in tests_and_benchmarks)
    read = _variables_read()
    unread = documented - read - tests_and_benchmarks
    assert not unread, f"documented but never read: {unread}"
    assert not read - documented, f"read but not in README.md or docs/: {read - documented}"


def _api_names(span: str) -> list[str]:
    """Dotted names in a code span that name songfeat's own API: `songfeat.x.y`, or `x.y` for a module x of songfeat
    (its top-level modules and `data`), a file name (`analysis.py`) excepted."""
    top = {p.stem for p in (ROOT / "src" / "songfeat").glob("*.py")} - {"__init__", "__main__"} | {"data"}
    names = []
    for name in re.findall(r"(?<![\w./-])((?:songfeat\.)?[a-z_]+(?:\.[A-Za-z_]\w*)+)", span):
        if re.search(r"\.(py|md|csv|json|jsonl|npy|parquet|db|lock|png|mp3|wav)$", name):
            continue
        if name.startswith("songfeat."):
            names.append(name)
        elif name.split(".")[0] in top:
            names.append("songfeat." + name)
    return names


def _resolves(name: str) -> bool:
    """Whether `songfeat.x.y.z` is a module, or an attribute (chain) of the longest module it starts with."""
    import importlib

    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_api_names_exist(doc):
    # the docs point readers at `library.PROGRESS_SECONDS`, `songfeat.bundle.model_id`, ...: a rename leaves them
    # pointing at nothing
    missing = sorted({n for span in _code_spans(doc) for n in _api_names(span) if not _resolves(n)})
    assert not missing, f"{doc.name}: names songfeat does not have: {missing}"


def test_window_evidence_table_names_every_field_and_its_size():
    # docs/descriptors.md's table of what `combine` keeps of a window missed `mean_square` (added with the no-beat
    # rule), and the size per window it gave, ~52 kB, was that of the fields before it (~63 kB)
    import dataclasses

    import numpy as np

    from songfeat.descriptors import WindowEvidence, window_evidence

    text = (ROOT / "docs" / "descriptors.md").read_text(encoding="utf-8")
    section = text.split("## How windows combine", 1)[1].split("\n## ", 1)[0]
    named = {n for cell in re.findall(r"^\| ([^|]*) \|", section, re.M) for n in re.findall(r"`(\w+)`", cell)}
    assert named == {f.name for f in dataclasses.fields(WindowEvidence)}
    y = np.random.default_rng(0).normal(0.0, 0.1, 30 * 44100).astype(np.float32)
    ev = window_evidence(y)
    size = sum(v.nbytes for v in vars(ev).values() if isinstance(v, np.ndarray))
    stated = re.search(r"That is ~(\d+) kB per window", section)
    assert stated and int(stated.group(1)) == round(size / 1000), (stated and stated.group(0), size)
