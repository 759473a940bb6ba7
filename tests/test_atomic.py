"""The atomic writers: the old file stays whole until the new one is complete, and no temporary is ever left behind."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from songfeat import atomic


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_replacing_writes_the_new_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old\n")
    with atomic.replacing(target, "w", encoding="utf-8", newline="") as f:
        f.write("a,b\r\n1,é\r\n")
        assert target.read_text() == "old\n"  # readers see the old file until the rename
        tmp = Path(f.name)
        assert tmp.parent == tmp_path and tmp.name.startswith(".t.csv.") and tmp.name.endswith(".tmp")
    assert target.read_bytes() == "a,b\r\n1,é\r\n".encode() and names(tmp_path) == ["t.csv"]


def test_replacing_keeps_the_old_file_when_the_writer_raises_midway(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text('{"old": true}')
    with pytest.raises(ValueError, match="half way"):
        with atomic.replacing(target) as f:
            f.write('{"new": ' + "1" * 100_000)  # more than a buffer: some of it is already on disk
            raise ValueError("half way")
    assert target.read_text() == '{"old": true}' and names(tmp_path) == ["state.json"]


def test_replacing_cleans_up_on_an_interrupt_and_when_there_was_no_old_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing(target, "wb") as f:
            f.write(b"\0" * 10)
            raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_replacing_keeps_the_old_file_when_fsync_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as err:
        with atomic.replacing(target) as f:
            f.write("new\n")
    assert err.value.errno == errno.ENOSPC  # the caller's own error, not reworded
    assert target.read_text() == "old\n" and names(tmp_path) == ["t.csv"]


def test_replacing_an_unwritable_folder_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        with atomic.replacing(tmp_path / "missing" / "f.txt") as f:
            f.write("x")


def test_the_final_file_has_an_ordinary_files_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    with atomic.replacing(tmp_path / "a.npz", "wb") as f:
        np.savez(f, x=np.arange(3))
    with atomic.temp_beside(tmp_path / "b.txt") as tmp:
        tmp.write_text("b")
    for name in ("a.npz", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2]


def test_temp_beside_renames_what_the_writer_wrote(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    target = tmp_path / "index.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(target)
    with atomic.temp_beside(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".index.parquet.") and not tmp.exists()
        pd.DataFrame({"a": [1, 2, 3]}).to_parquet(tmp)
        assert pd.read_parquet(target)["a"].tolist() == [1]
    assert pd.read_parquet(target)["a"].tolist() == [1, 2, 3] and names(tmp_path) == ["index.parquet"]


def test_temp_beside_keeps_the_old_file_when_the_writer_raises_midway(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old picture")
    with pytest.raises(RuntimeError, match="drawing failed"):
        with atomic.temp_beside(target) as tmp:
            tmp.write_bytes(b"half a pict")
            raise RuntimeError("drawing failed")
    assert target.read_bytes() == b"old picture" and names(tmp_path) == ["plot.png"]


def test_temp_beside_passes_on_an_error_raised_before_anything_was_written(tmp_path: Path) -> None:
    target = tmp_path / "t.json"
    with pytest.raises(ValueError, match="bad value"):
        with atomic.temp_beside(target):
            raise ValueError("bad value")
    assert names(tmp_path) == []


def test_temp_beside_with_nothing_written_is_an_oserror_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "t.json"
    target.write_text("old")
    with pytest.raises(FileNotFoundError):
        with atomic.temp_beside(target):
            pass
    assert target.read_text() == "old" and names(tmp_path) == ["t.json"]


def test_two_writers_of_one_file_use_two_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    with atomic.replacing(target) as a, atomic.replacing(target) as b:
        assert a.name != b.name
        a.write("first")
        b.write("second")
    assert target.read_text() == "first" and names(tmp_path) == ["m.json"]  # the last to finish wins, whole


def test_probe_folder_makes_the_folder_and_leaves_nothing_in_it(tmp_path: Path) -> None:
    atomic.probe_folder(tmp_path / "new" / "deeper")
    atomic.probe_folder(tmp_path / "new", "bundle")
    assert names(tmp_path / "new") == ["deeper"] and names(tmp_path / "new" / "deeper") == []


def test_probe_folder_raises_the_oserror_of_a_place_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for folder in (tmp_path / "f", tmp_path / "f" / "sub"):  # a file in the way
        with pytest.raises(OSError):
            atomic.probe_folder(folder)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        try:
            with pytest.raises(PermissionError):
                atomic.probe_folder(ro)
        finally:
            ro.chmod(0o700)
    assert names(tmp_path) == ["f"] + (["ro"] if os.geteuid() != 0 else [])


def test_the_record_cache_and_bundle_checks_share_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # records.check_cache and bundle.check_bundle_out each had a probe of their own; one now, each caller's own words
    from songfeat.bundle import check_bundle_out
    from songfeat.errors import SongfeatError
    from songfeat.records import check_cache

    probed = []

    def read_only(folder, name=None):
        probed.append((Path(folder), name))
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic, "probe_folder", read_only)
    with pytest.raises(SongfeatError) as err:
        check_cache(tmp_path / "cache")
    assert str(err.value) == f"{tmp_path / 'cache'}: cannot write the record cache (Read-only file system)"
    with pytest.raises(SongfeatError) as err:
        check_bundle_out(tmp_path / "out" / "b")
    assert str(err.value) == f"{tmp_path / 'out' / 'b'}: cannot be written (Read-only file system)"
    assert probed == [(tmp_path / "cache", None), (tmp_path / "out", "b")]


def test_make_folders_says_which_it_made_and_remove_folders_takes_only_empty_ones_away(tmp_path: Path) -> None:
    # `analyze -o out/dir/x.json` on files that all failed left out/dir behind, empty: the folders made for an output
    # are known now, and taken away again (innermost first, each only while empty) when nothing was written there
    (tmp_path / "here").mkdir()
    made = atomic.make_folders(tmp_path / "here" / "a" / "b")
    assert made == [tmp_path / "here" / "a", tmp_path / "here" / "a" / "b"] and (tmp_path / "here" / "a" / "b").is_dir()
    assert atomic.make_folders(tmp_path / "here" / "a" / "b") == []  # nothing made: nothing to take away
    atomic.remove_folders(made)
    assert names(tmp_path / "here") == []
    made = atomic.make_folders(tmp_path / "x" / "y")
    (tmp_path / "x" / "kept.json").write_text("{}")  # written into since: it and its parents stay
    atomic.remove_folders(made)
    assert names(tmp_path) == ["here", "x"] and names(tmp_path / "x") == ["kept.json"]


def test_make_folders_in_the_way_of_a_file_raises_and_leaves_none_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("in the way")
    with pytest.raises(OSError):
        atomic.make_folders(tmp_path / "f" / "sub")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "g").write_text("in the way")
    with pytest.raises(FileExistsError):
        atomic.make_folders(tmp_path / "d" / "g")
    assert names(tmp_path) == ["d", "f"] and names(tmp_path / "d") == ["g"]


def test_a_run_lock_on_the_current_folder_sits_beside_it(tmp_path, monkeypatch):
    # `songfeat train --out .` (a bundle into the current folder) ended in a ValueError traceback from pathlib: '.' has
    # no name of its own to put '.lock' after
    from songfeat.errors import SongfeatError

    here = tmp_path / "run"
    here.mkdir()
    monkeypatch.chdir(here)
    with atomic.RunLock(".") as lock:
        assert lock.path == tmp_path / "run.lock" and lock.path.exists()
        with pytest.raises(SongfeatError, match="is being written by another songfeat run"):
            atomic.RunLock(here)
    assert not (tmp_path / "run.lock").exists()
    with pytest.raises(SongfeatError, match="root folder"):
        atomic.RunLock("/")
