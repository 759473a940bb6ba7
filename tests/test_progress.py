"""Progress bars: drawn on stderr, and stdout left to the results while they show."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "songfeat"


def _train_bar():
    from songfeat.train import _progress

    return _progress(True, 3, "epochs")[0]


def _store_bar():
    from songfeat.data.store import _progress

    return _progress(True, 3, 0)


def _bar():
    from songfeat.progress import bar

    return bar().__enter__()


@pytest.mark.parametrize("make", [_train_bar, _store_bar, _bar], ids=["train", "build", "progress.bar"])
def test_a_bar_leaves_a_redirected_stdout_to_the_results(monkeypatch, capsys, make):
    """rich's Progress redirects stdout by default: what was printed while a bar showed (the results, sent to a file)
    went through the bar's console onto the terminal instead."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich takes stderr for a terminal: the bar shows
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = make()
    try:
        assert bar is not None and not bar.disable and bar.live.is_started
        print("result")
    finally:
        bar.stop()
    assert capsys.readouterr().out == "result\n"


def test_track_leaves_a_redirected_stdout_to_the_results(monkeypatch, capsys):
    from songfeat.progress import track

    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    for i in track(range(2), "reading clips"):
        print(f"result {i}")
    captured = capsys.readouterr()
    assert captured.out == "result 0\nresult 1\n" and "reading clips" in captured.err


def test_no_bar_is_made_but_by_progress_bar():
    # collect's and download's bars sit inside their long loops: none of them may build a rich Progress of its own
    makers = re.compile(r"\bProgress\(|rich\.progress import[^\n]*\btrack\b")
    found = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if p.name != "progress.py" and makers.search(p.read_text())]
    assert found == []


def _plain(monkeypatch, seconds: str | None) -> None:
    """stderr as a log file (not a terminal), with the plain lines' interval set to `seconds` (None: the default)."""
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    if seconds is None:
        monkeypatch.delenv("SONGFEAT_PROGRESS_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("SONGFEAT_PROGRESS_INTERVAL", seconds)


def test_a_log_gets_plain_progress_lines_and_a_last_one(monkeypatch, capsys):
    """Off a terminal a bar was disabled: a long `build` or `train` with stderr in a log said nothing until it ended."""
    from songfeat.progress import track

    _plain(monkeypatch, "0")  # every step is past the interval
    for i in track(range(4), "reading clips"):
        print(f"result {i}")
    captured = capsys.readouterr()
    assert captured.out == "".join(f"result {i}\n" for i in range(4))  # the results untouched
    lines = captured.err.splitlines()
    assert [line.split(", ")[0] for line in lines] == [f"songfeat: reading clips: {i}/4 ({i * 25}%)"
                                                       for i in (1, 2, 3, 4, 4)]
    assert all(line.endswith(" s elapsed") for line in lines[:-1]) and lines[-1].endswith(" s elapsed (done)")


def test_work_within_the_first_interval_prints_nothing(monkeypatch, capsys):
    from songfeat.progress import INTERVAL, track

    _plain(monkeypatch, None)
    assert INTERVAL == 30
    assert list(track(range(50), "reading clips")) == list(range(50))
    assert capsys.readouterr().err == ""


def test_lines_come_at_most_once_an_interval(monkeypatch, capsys):
    import songfeat.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress, "_now", lambda: clock[0])
    _plain(monkeypatch, "30")
    p = progress.bar(transient=True)
    p.start()
    task = p.add_task("build", total=1000)
    for _ in range(1000):  # a clip every 1/8 s: 125 s in all
        clock[0] += 0.125
        p.advance(task)
    p.stop()
    p.stop()  # stopped twice (a caller's finally and a context's exit): one last line
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["songfeat: build: 240/1000 (24%), 30 s elapsed", "songfeat: build: 480/1000 (48%), 1 min elapsed",
                     "songfeat: build: 720/1000 (72%), 1 min elapsed", "songfeat: build: 960/1000 (96%), 2 min elapsed",
                     "songfeat: build: 1000/1000 (100%), 2 min elapsed (done)"]


def test_every_caller_prints_lines_off_a_terminal(monkeypatch, capsys):
    """train's epochs, build's clips (whose own isatty check kept them silent) and analyze's batch, through `bar`."""
    from songfeat.cli import _bar
    from songfeat.data.store import _progress as store_progress
    from songfeat.train import _progress as train_progress

    _plain(monkeypatch, "0")
    p, task = train_progress(True, 3, "epochs")
    p.update(task, advance=1, description="epochs train 0.5000 val 0.6000")
    p.stop()
    b = store_progress(True, 3, 1)
    b.advance(b.task_ids[0])
    b.stop()
    a, task = _bar("analysing", 2)
    a.advance(task)
    a.stop()
    assert capsys.readouterr().err.splitlines() == [
        "songfeat: epochs train 0.5000 val 0.6000: 1/3 (33%), 0 s elapsed",
        "songfeat: epochs train 0.5000 val 0.6000: 1/3 (33%), 0 s elapsed (stopped)",
        "songfeat: build: 2/3 (67%), 0 s elapsed", "songfeat: build: 2/3 (67%), 0 s elapsed (stopped)",
        "songfeat: analysing: 1/2 (50%), 0 s elapsed", "songfeat: analysing: 1/2 (50%), 0 s elapsed (stopped)"]
    assert train_progress(False, 3, "epochs") is None and store_progress(False, 3, 0) is None


def test_without_show_nothing_is_printed(monkeypatch, capsys):
    from songfeat.progress import bar

    _plain(monkeypatch, "0")
    with bar(show=False) as p:
        p.advance(p.add_task("build", total=2))
    assert capsys.readouterr().err == ""


def test_a_bad_interval_is_named_once_and_the_default_used(monkeypatch, capsys):
    from songfeat import progress
    from songfeat.progress import INTERVAL, interval

    monkeypatch.setattr(progress, "_refused", set())  # values warned about earlier in the run are said once only
    monkeypatch.setenv("SONGFEAT_PROGRESS_INTERVAL", "soon")
    assert interval() == INTERVAL and interval() == INTERVAL
    assert capsys.readouterr().err == ("songfeat: warning: SONGFEAT_PROGRESS_INTERVAL='soon' is not a number of "
                                       "seconds >= 0; using 30\n")
