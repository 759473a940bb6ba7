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
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # and so does store's own check
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
