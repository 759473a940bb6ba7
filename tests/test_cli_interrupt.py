"""Ctrl-C in every long command: one `songfeat: error:` line saying what was kept, and status 130 (README, "Exit
status"), not click's "Aborted!" with status 1. The long work is faked to raise KeyboardInterrupt."""
from __future__ import annotations

import importlib
import json
import os

import pytest
import soundfile as sf
from typer.testing import CliRunner

from songfeat import synth
from songfeat.cli import app
from songfeat.records import DEFAULT_CACHE

run = CliRunner()


def _interrupt(*_a, **_k):
    raise KeyboardInterrupt


def _fake(monkeypatch, target: str) -> None:
    """Make `module.attr` (e.g. 'songfeat.own_heads.train_heads') raise KeyboardInterrupt when called."""
    module, attr = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), attr, _interrupt)


def _said(r) -> list[str]:
    assert r.exit_code == 130, (r.exit_code, r.output)
    assert "Aborted" not in r.output and "Traceback" not in r.output, r.output
    return r.stderr.strip().splitlines()


def _cache_line(cache) -> str:
    return f"the clips read so far are kept in the record cache {cache}, so a rerun does not read them again"


def test_train_heads_interrupted_says_nothing_was_written_and_the_clips_read_are_cached(tmp_path, monkeypatch):
    """`train-heads` fell through to "Aborted!" and status 1, losing the warnings it had gathered: now they are printed,
    then one line saying the bundle was not written and where the clips read so far are cached."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(6):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100, seconds=1.0, seed=i), 22050)
    (tmp_path / "labels.csv").write_text("track_id,energy\n" + "".join(f"c{i},0.{i + 1}\n" for i in range(7)))
    _fake(monkeypatch, "songfeat.records.get_records")  # the clips' analysis, the first of the long work
    out, cache = tmp_path / "b", tmp_path / "cache"
    r = run.invoke(app, ["train-heads", "--labels", str(tmp_path / "labels.csv"), "--audio", str(audio), "--out", str(out),
                         "--cache", str(cache)])
    lines = _said(r)
    assert lines[0].startswith("songfeat: warning: ") and "1 labelled id has no audio file" in lines[0], lines
    assert lines[1:] == [f"songfeat: error: interrupted; nothing was written to {out} (a bundle there is left as it was); "
                         f"{_cache_line(cache)}"]
    assert not out.exists()


def test_train_default_interrupted_says_so(tmp_path, monkeypatch):
    _fake(monkeypatch, "songfeat.default_model.train_default")
    out = tmp_path / "b"
    lines = _said(run.invoke(app, ["train-default", "--shared", str(tmp_path), "--out", str(out)]))
    assert lines == [f"songfeat: error: interrupted; nothing was written to {out} (a bundle there is left as it was); "
                     f"{_cache_line(DEFAULT_CACHE)}"]


@pytest.mark.parametrize("argv, target, message", [
    (["evaluate-audio", "--labels", "l.csv", "--audio", "a"], "songfeat.accuracy.evaluate_audio",
     "interrupted; nothing was written (a rerun reads every clip again)"),
    (["evaluate-sources", "--shared", "s", "--cache", "c"], "songfeat.sources.evaluate_sources",
     f"interrupted; nothing was written; {_cache_line('c')}"),
    (["check-behaviour", "--shared", "s"], "songfeat.behaviour.analyze_clips",
     "interrupted; nothing was written (a rerun analyses every clip again)"),
    (["evaluate", "bundle", "--store", "store"], "songfeat.evaluate.evaluate_bundle", "interrupted; nothing was written"),
    (["compare", "b1", "b2", "--store", "store"], "songfeat.evaluate.evaluate_bundle", "interrupted; nothing was written"),
    (["export-onnx", "bundle"], "songfeat.onnx_export.export_bundle", "interrupted; bundle/model.onnx is left as it was"),
    (["export-onnx", "--musicnn"], "songfeat.onnx_export.export_musicnn",
     "interrupted; each tagger's .onnx is either new or left as it was: rerun to export both"),
])
def test_long_commands_that_keep_nothing_say_so(argv, target, message, monkeypatch):
    """Each fell through to click's "Aborted!" and status 1."""
    _fake(monkeypatch, target)
    assert _said(run.invoke(app, argv)) == [f"songfeat: error: {message}"]


def test_tags_interrupted_says_how_far_it_got(example_clip, tmp_path, monkeypatch):
    """`tags` fell through to "Aborted!"; it writes no file: what it keeps is what it printed, and it says how much."""
    import shutil

    from songfeat import tagger

    for name in ("a.mp3", "b.mp3"):
        shutil.copy(example_clip, tmp_path / name)

    calls = {"n": 0}

    def second_interrupted(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return "fake"

    monkeypatch.setattr(tagger, "describe_file", second_interrupted)
    monkeypatch.setattr(tagger, "top_tags", lambda _d, k: {"msd": [("rock", 0.5)]})
    r = run.invoke(app, ["tags", str(tmp_path)])
    assert _said(r) == ["songfeat: error: interrupted after 1 of 2 files; the tags of those are printed on stdout"]
    assert r.stdout.splitlines() == [str(tmp_path / "a.mp3"), "  MSD: rock 0.50"]


def test_analysis_interrupted_says_what_was_written(example_clip, tmp_path, monkeypatch):
    from songfeat import analysis, analysis_plot
    from songfeat.output import ResultWriter

    _fake(monkeypatch, "songfeat.analysis.analyse")
    out = tmp_path / "new" / "a.json"
    assert _said(run.invoke(app, ["analysis", str(example_clip), "-o", str(out)])) == [
        "songfeat: error: interrupted; nothing was written"]
    assert list(tmp_path.iterdir()) == []
    # the picture is written, then Ctrl-C before the JSON is
    monkeypatch.setattr(analysis, "analyse", lambda *a, **k: type("R", (), {"result": {}})())
    monkeypatch.setattr(analysis_plot, "save_plot", lambda _r, path, title: path.write_bytes(b"png"))
    monkeypatch.setattr(ResultWriter, "write", _interrupt)
    plot = tmp_path / "a.png"
    assert _said(run.invoke(app, ["analysis", str(example_clip), "-o", str(out), "--plot", str(plot)])) == [
        f"songfeat: error: interrupted; {plot} was written, nothing was written to {out}"]
    assert not out.exists()


@pytest.mark.parametrize("fmt, message", [
    ("json", "interrupted; nothing was printed (JSON is printed at the end; with --output a rerun can --resume)"),
    ("jsonl", "interrupted; the rows of the files finished are printed on stdout"),
])
def test_analyze_to_stdout_interrupted_says_what_was_printed(example_clip, fmt, message, monkeypatch):
    """It said only "interrupted"."""
    _fake(monkeypatch, "songfeat.analyze.analyze_many")
    assert _said(run.invoke(app, ["analyze", str(example_clip), "-f", fmt])) == [f"songfeat: error: {message}"]


def test_build_interrupted_before_its_store_was_begun_says_nothing_was_written(tmp_path, monkeypatch):
    """It said "finished clips are kept in <out>" of a folder it had not yet made."""
    from songfeat.data.store import MANIFEST

    _fake(monkeypatch, "songfeat.data.store.build_store")
    out = tmp_path / "store"
    argv = ["build", "--labels", "l.csv", "--audio", "a", "--out", str(out)]
    assert _said(run.invoke(app, argv)) == [
        f"songfeat: error: interrupted before the store was begun; nothing was written to {out}"]
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"planned": 3}))
    assert _said(run.invoke(app, argv)) == [f"songfeat: error: interrupted before a clip was finished; {out} holds the "
                                            "store's plan: rerun the same command to build it"]


def _build_inputs(tmp_path, n: int = 3) -> list[str]:
    """Labels and n one-second clips named by their ids, for a real `build`; its arguments but --out."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(n):
        sf.write(audio / f"c{i}.wav", synth.drum_pattern(100, seconds=1.0, seed=i), 22050)
    (tmp_path / "labels.csv").write_text("track_id,energy\n" + "".join(f"c{i},0.{i + 1}\n" for i in range(n)))
    return ["build", "--labels", str(tmp_path / "labels.csv"), "--audio", str(audio), "--no-descriptors"]


def test_build_interrupted_says_how_many_clips_it_keeps(tmp_path, monkeypatch):
    """It said "finished clips are kept in <out>" whenever the manifest was written, which is before the first clip."""
    from songfeat.data import store

    argv = [*_build_inputs(tmp_path), "--out", str(tmp_path / "s")]
    real, done = store.process_clip, []

    def two_then_interrupt(*a, **k):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*a, **k)

    monkeypatch.setattr(store, "process_clip", _interrupt)
    assert _said(run.invoke(app, argv)) == [f"songfeat: error: interrupted before a clip was finished; {tmp_path / 's'} "
                                            "holds the store's plan: rerun the same command to build it"]
    monkeypatch.setattr(store, "process_clip", two_then_interrupt)
    assert _said(run.invoke(app, argv)) == [f"songfeat: error: interrupted; 2 of 3 clips finished, kept in {tmp_path / 's'}; "
                                            "rerun the same command to continue"]
    monkeypatch.setattr(store, "process_clip", real)
    r = run.invoke(app, argv)  # and so they are: the rerun builds the last one alone
    assert r.exit_code == 0 and "built 3 of 3 clips" in r.output and "(2 from an earlier run;" in r.output, r.output


def test_build_on_ray_interrupted_while_ray_starts_says_no_clip_was_finished(tmp_path, monkeypatch):
    """Ray starts after the store's manifest is written: Ctrl-C then said "finished clips are kept" of none."""
    pytest.importorskip("ray")
    from songfeat import distributed

    from songfeat.data.store import MANIFEST

    started = []

    def ray_starting(*_a, **_k):  # Ctrl-C while Ray is starting
        started.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "init", ray_starting)
    out = tmp_path / "s"
    assert _said(run.invoke(app, [*_build_inputs(tmp_path), "--out", str(out), "--engine", "ray"])) == [
        f"songfeat: error: interrupted before a clip was finished; {out} holds the store's plan: rerun the same command "
        "to build it"]
    assert started == [1] and (out / MANIFEST).is_file()


def test_a_picture_interrupted_says_it_was_not_written(tmp_path, capsys):
    """evaluate-sources and check-behaviour draw their pictures last: Ctrl-C there fell through to "Aborted!"."""
    import typer

    from songfeat.cli import _save_picture

    with pytest.raises(typer.Exit) as e:
        _save_picture(_interrupt, {}, tmp_path / "p.png")
    assert e.value.exit_code == 130
    assert capsys.readouterr().err.strip() == (f"songfeat: error: interrupted; {tmp_path / 'p.png'} was not written "
                                               "(what was printed before it is whole)")


class _InterruptedImport:
    """A meta-path finder that raises KeyboardInterrupt when `name` is imported: Ctrl-C while torch loads."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


@pytest.mark.parametrize("argv, module, message", [
    (["build", "--labels", "l.csv", "--audio", "a", "--out", "s"], "songfeat.data.store",
     "interrupted before the store was begun; nothing was written to s"),
    (["train", "lstm-multitask", "--store", "s", "--out", "b"], "songfeat.train",
     "interrupted before the training began; nothing was written (a bundle already at b is left as it was)"),
])
def test_ctrl_c_while_the_command_loads_torch_says_so(argv, module, message, monkeypatch):
    """Importing torch takes seconds on a busy machine; Ctrl-C then was typer's silent exit 130, no line at all."""
    import sys

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(module), *sys.meta_path])
    assert _said(run.invoke(app, argv)) == [f"songfeat: error: {message}"]


def test_ctrl_c_before_the_command_says_what_it_kept_is_one_line(monkeypatch):
    """A Ctrl-C in a command before its own handler (here while check-behaviour imports what it runs) was typer's
    silent exit 130, where a moment later it was a line: it is the one `interrupted` line now."""
    import sys

    monkeypatch.delitem(sys.modules, "songfeat.behaviour", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport("songfeat.behaviour"), *sys.meta_path])
    assert _said(run.invoke(app, ["check-behaviour", "--shared", "s"])) == ["songfeat: error: interrupted"]


def test_ctrl_c_while_typer_builds_the_commands_is_one_line(monkeypatch, capsys):
    """`main` before typer's own handler (typer building the click commands): a KeyboardInterrupt traceback."""
    import sys

    from songfeat import cli

    class Building:
        registered_commands: list = []

        def __call__(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", Building())
    monkeypatch.setattr(sys, "argv", ["songfeat", "analyze", "x.wav"])
    try:
        with pytest.raises(SystemExit) as e:
            cli.main()
    except KeyboardInterrupt:  # not let through: pytest would stop the whole run
        pytest.fail("KeyboardInterrupt escaped main()")
    assert e.value.code == 130 and capsys.readouterr().err == "songfeat: error: interrupted\n"


def test_ctrl_c_while_the_cli_loads_is_one_line_and_python_keeps_its_handler_afterwards():
    """The first moments of `songfeat ...` (typer's import, the commands' definitions) ended in Python's KeyboardInterrupt
    traceback: a real SIGINT, sent as typer is imported, ends in the one line and 130 now. Once the module is loaded,
    Ctrl-C is a KeyboardInterrupt again, so a program that imports it keeps its own handling."""
    import subprocess
    import sys

    trip = ("import os, signal, sys\n"
            "class Trip:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.meta_path.insert(0, Trip())\n"
            "from songfeat.cli import main\n"
            "main()\n")
    p = subprocess.run([sys.executable, "-c", trip, "analyze", "x.wav"], capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (130, "", "songfeat: error: interrupted\n"), p.stderr
    after = subprocess.run([sys.executable, "-c", "import signal, songfeat.cli\n"
                            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                           capture_output=True, text=True, timeout=120)
    assert after.stdout == "True\n", after.stderr


def test_a_failed_cli_import_gives_python_its_ctrl_c_back():
    """cli.py installs its own Ctrl-C handler while it loads; when the load failed (typer missing) and the program
    caught the ImportError, that handler stayed: a later Ctrl-C printed `songfeat: error: interrupted` and exited 130."""
    import subprocess
    import sys

    code = ("import signal, sys\n"
            "class NoTyper:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            raise ImportError('no typer here')\n"
            "sys.meta_path.insert(0, NoTyper())\n"
            "try:\n"
            "    import songfeat.cli\n"
            "except ImportError:\n"
            "    pass\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout == "True\n", p.stderr


_TRIP_IN_IMPORT = ("import os, signal, sys\n"
                   "class Trip:  # a real SIGINT as `import songfeat` imports its `analyze`\n"
                   "    def find_spec(self, name, path=None, target=None):\n"
                   "        if name == 'songfeat.analyze':\n"
                   "            sys.meta_path.remove(self)\n"
                   "            os.kill(os.getpid(), signal.SIGINT)\n"
                   "sys.meta_path.insert(0, Trip())\n")


def _tripped_env(tmp_path):
    """An environment whose Python sends itself SIGINT while `import songfeat` runs (a sitecustomize on PYTHONPATH,
    ahead of this songfeat)."""
    import songfeat

    (tmp_path / "sitecustomize.py").write_text(_TRIP_IN_IMPORT)
    src = os.path.dirname(os.path.dirname(songfeat.__file__))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), src])}


@pytest.mark.parametrize("how", ["script", "-m songfeat", "-m songfeat.cli"])
def test_ctrl_c_while_the_command_imports_songfeat_is_one_line(tmp_path, how):
    """The `songfeat` command imports the package (~0.1 s) before cli.py holds Ctrl-C: a SIGINT then was Python's
    KeyboardInterrupt traceback, from its console script and from `python -m songfeat` alike."""
    import subprocess
    import sys

    env = _tripped_env(tmp_path)
    if how == "script":  # what pip writes for the `songfeat` console script
        script = tmp_path / "bin" / "songfeat"
        script.parent.mkdir()
        script.write_text("import re\nimport sys\nfrom songfeat.cli import main\nif __name__ == '__main__':\n"
                          "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n")
        argv = [sys.executable, str(script)]
    else:
        argv = [sys.executable, *how.split()]
    p = subprocess.run([*argv, "analyze", "x.wav"], capture_output=True, text=True, timeout=120, env=env)
    assert (p.returncode, p.stdout, p.stderr) == (130, "", "songfeat: error: interrupted\n"), p.stderr


def test_ctrl_c_while_a_program_imports_songfeat_is_still_its_keyboardinterrupt(tmp_path):
    """Only the command holds Ctrl-C while it starts: a program's own `import songfeat` keeps Python's
    KeyboardInterrupt, to catch or to end in its traceback."""
    import subprocess
    import sys

    code = "try:\n    import songfeat\nexcept KeyboardInterrupt:\n    print('caught')\n"
    p = subprocess.run([sys.executable, "-c", code, "analyze"], capture_output=True, text=True, timeout=120,
                       env=_tripped_env(tmp_path))
    assert (p.returncode, p.stdout) == (0, "caught\n"), p.stderr


@pytest.mark.parametrize("argv, orig, starting", [
    (["/venv/bin/songfeat", "analyze"], None, True),
    ([os.path.join("venv", "Scripts", "songfeat.exe")], None, True),
    (["-m", "analyze"], ["python", "-m", "songfeat", "analyze"], True),
    (["-m", "analyze"], ["python", "-X", "importtime", "-Imsongfeat.cli", "analyze"], True),
    (["-m", "songfeat"], ["python", "-m", "mytool", "songfeat"], False),  # another module, run with 'songfeat'
    (["-c", "analyze"], ["python", "-c", "import songfeat", "analyze"], False),
    (["/home/me/songfeat_report.py"], None, False),
    ([], None, False),
])
def test_starting_the_cli_is_the_command_alone(argv, orig, starting, monkeypatch):
    """Which processes hold Ctrl-C while songfeat is imported: the command's console script and `python -m songfeat`
    (the package is imported while sys.argv[0] is '-m'), no other program."""
    import sys

    from songfeat.interrupts import starting_the_cli

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig if orig is not None else ["python", *argv], raising=False)
    assert starting_the_cli() is starting
