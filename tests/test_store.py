"""The dataset store on generated audio: shapes, cached tensors equal the front-end, bad files reported, SIGKILL resume."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from songfeat import features, frontend
from songfeat.audio import load_audio
from songfeat.data.store import build_store, open_store
from songfeat.errors import SongfeatError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LABEL_HEADER = ["track_id", *features.LABEL_COLUMNS]


def spotify_like_id(n: int) -> str:
    """A valid 22-character base-62 id, distinct per n."""
    return f"T{n:05d}" + "abcdefghijKLMNOPQ"[: 22 - 6]


def clip(n: int, seconds: float, sr: int = 44100, channels: int = 1) -> np.ndarray:
    """A deterministic, distinct clip: a few harmonics plus clicks at a tempo that depends on n."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110.0 * 2 ** ((n % 12) / 12)
    y = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)
    beat = 60.0 / (90 + 5 * (n % 10))
    y += 0.4 * np.exp(-((t % beat) / 0.01)) * np.sin(2 * np.pi * 2000 * t)
    y = (y / np.abs(y).max() * 0.8).astype(np.float32)
    return np.stack([y, 0.5 * y], axis=1) if channels == 2 else y


def write_labels(path: Path, ids: list[str]) -> None:
    rows = []
    for k, tid in enumerate(ids):
        rows.append([tid, *[round((0.1 + 0.01 * k) % 1.0, 3)] * 7, 120.0 + k % 100, -8.0, k % 12, k % 2, 4])
    pd.DataFrame(rows, columns=LABEL_HEADER).to_csv(path, index=False)


def make_dataset(root: Path, n_good: int, seconds: float = 3.0) -> tuple[Path, Path, list[str]]:
    """n_good labelled wav clips (mixed rates, channels, lengths) in root/audio and their labels CSV."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    ids = [spotify_like_id(i) for i in range(n_good)]
    for i, tid in enumerate(ids):
        sr = 22050 if i % 3 == 1 else 44100  # some need resampling
        sf.write(audio / f"{tid}.wav", clip(i, seconds, sr, channels=2 if i % 4 == 3 else 1), sr)
    labels = root / "labels.csv"
    write_labels(labels, ids)
    return labels, audio, ids


def expected_tensor(path: Path, spec: frontend.FrontendSpec) -> np.ndarray:
    """What the store must hold for a clip: the front-end of its first window, fitted to 30 s (one torch thread, as the build)."""
    import torch

    y = load_audio(path, max_seconds=spec.window_seconds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return frontend.compute(spec, frontend.fit_window(y, spec))[0].numpy()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """One store over good and bad clips, built with a process pool."""
    root = tmp_path_factory.mktemp("store")
    labels, audio, ids = make_dataset(root, 6)
    sf.write(audio / f"{spotify_like_id(6)}.wav", clip(6, 33.0), 44100)  # longer than a window: cut
    ids.append(spotify_like_id(6))
    bad = {
        spotify_like_id(50): ("corrupt.mp3", bytes(range(256)) * 64),
        spotify_like_id(51): ("silent.wav", None),
        spotify_like_id(52): ("short.wav", None),
        spotify_like_id(53): ("empty.flac", b""),
    }
    for tid, (kind, data) in bad.items():
        p = audio / f"{tid}{Path(kind).suffix}"
        if kind == "silent.wav":
            sf.write(p, np.zeros(44100 * 2, dtype=np.float32), 44100)
        elif kind == "short.wav":
            sf.write(p, clip(52, 0.4), 44100)
        else:
            p.write_bytes(data)
    sf.write(audio / "not_in_labels.wav", clip(60, 2.0), 44100)  # audio without labels
    write_labels(labels, ids + list(bad) + [spotify_like_id(70)])  # last one: labels without audio
    out = root / "out"
    report = build_store(labels, audio, out, workers=2, progress=False)
    return {"root": root, "labels": labels, "audio": audio, "ids": ids, "bad": bad, "out": out, "report": report}


def test_store_shapes_ids_and_tensors(built):
    store = open_store(built["out"])
    ids = sorted(built["ids"])
    assert store.ids() == ids and len(store) == len(ids)
    assert store.spec == frontend.SEED_MFCC
    arr = store.array()
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    assert arr.shape == (len(ids), 20, 160) and arr.dtype == np.float32
    for i, tid in enumerate(ids):
        got = store.features(tid)
        assert got.shape == (20, 160) and got.dtype == np.float32
        np.testing.assert_array_equal(got, arr[i])
        np.testing.assert_array_equal(got, expected_tensor(Path(store.index()["path"][i]), store.spec))
    assert len({arr[i].tobytes() for i in range(len(ids))}) == len(ids)  # distinct clips, distinct rows
    with pytest.raises(KeyError):
        store.features("nope")


def test_store_labels_and_descriptors(built):
    store = open_store(built["out"])
    lab = store.labels()
    assert list(lab.index) == store.ids() and lab.index.name == "track_id"
    assert set(features.LABEL_COLUMNS) <= set(lab.columns)
    src = pd.read_csv(built["labels"]).set_index("track_id").loc[store.ids()]
    np.testing.assert_allclose(lab["tempo"].to_numpy(), src["tempo"].to_numpy())
    np.testing.assert_allclose(lab["danceability"].to_numpy(), src["danceability"].to_numpy())
    desc = store.descriptors()
    assert list(desc.index) == store.ids()
    for c in ("duration_ms", "loudness", "tempo", "key", "mode", "time_signature", "tempo_confidence", "key_confidence"):
        assert c in desc.columns and desc[c].notna().all(), c
    secs = store.index().set_index("track_id")["audio_seconds"]
    np.testing.assert_allclose(desc["duration_ms"].to_numpy(), 1000 * secs.loc[store.ids()].to_numpy(), atol=1.0)
    assert desc.loc[spotify_like_id(6), "duration_ms"] == pytest.approx(33000, abs=1)  # whole file, not the window
    assert desc.loc[spotify_like_id(0), "duration_ms"] == pytest.approx(3000, abs=1)


def test_bad_audio_is_reported_not_fatal(built):
    report, out = built["report"], built["out"]
    assert not report.ok and report.built == len(built["ids"]) and report.planned == len(built["ids"]) + 4
    got = pd.read_csv(out / "report.csv").set_index("track_id")["reason"].to_dict()
    assert set(got) == set(built["bad"])
    assert "not a readable audio file" in got[spotify_like_id(50)]
    assert "silent" in got[spotify_like_id(51)]
    assert "too short" in got[spotify_like_id(52)]
    assert "empty file" in got[spotify_like_id(53)]
    rep = json.loads((out / "report.json").read_text())
    assert rep["labels_without_audio"] == 1 and rep["labels_without_audio_examples"] == [spotify_like_id(70)]
    assert rep["audio_without_labels"] == 1 and rep["failed"] == 4
    m = open_store(out).manifest
    assert m["complete"] and m["frontend"] == frontend.SEED_MFCC.to_dict() and m["built"] == len(built["ids"])
    assert m["labels"]["source"] == str(built["labels"]) and m["audio_dir"] == str(built["audio"].resolve())
    assert "songfeat_version" in m and "created" in m
    assert not (out / "work").exists()


def test_rerun_retries_failed_clips_and_leaves_the_built_ones(built):
    # the four bad files fail for good: a rerun tries them again, fails them again, and changes nothing else
    out = built["out"]
    kept = ("features.npy", "index.parquet", "labels.parquet", "descriptors.parquet", "manifest.json")
    before = {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in kept}
    csv_before = (out / "report.csv").read_text()
    r = build_store(built["labels"], built["audio"], out, workers=1, progress=False)
    assert r.built == len(built["ids"]) and r.resumed == len(built["ids"]) and (r.retried, r.recovered) == (4, 0)
    assert {f["track_id"] for f in r.failed} == set(built["bad"])
    assert {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in kept} == before
    assert (out / "report.csv").read_text() == csv_before
    rep = json.loads((out / "report.json").read_text())
    assert rep["failed"] == 4 and rep["retried"] == 4 and rep["recovered"] == 0
    assert not (out / "work").exists() and not (out / ".work.tmp").exists()


def test_different_inputs_are_refused(built):
    with pytest.raises(SongfeatError, match="different inputs"):
        build_store(built["labels"], built["audio"], built["out"], frontend="logmel", workers=1, progress=False)
    with pytest.raises(SongfeatError, match="different inputs"):
        build_store(built["labels"], built["audio"], built["out"], limit=2, workers=1, progress=False)


def test_cli_exit_code_and_errors(built, tmp_path):
    from typer.testing import CliRunner

    from songfeat.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["build", "--labels", str(built["labels"]), "--audio", str(built["audio"]),
                            "--out", str(out), "-j", "1", "--no-descriptors"])
    assert r.exit_code == 1, r.output  # clips failed ...
    assert open_store(out).ids() == sorted(built["ids"])  # ... but the store is written
    assert "built 7 of 11 clips" in r.stdout and "songfeat: error:" in r.stderr
    r = runner.invoke(app, ["build", "--labels", str(built["labels"]), "--audio", str(built["audio"]),
                            "--out", str(out), "-j", "1", "--no-descriptors"])
    assert r.exit_code == 1 and "(7 from an earlier run; retried 4 that failed before, now built 0; 4 failed;" in r.stdout
    r = runner.invoke(app, ["build", "--labels", str(tmp_path / "missing.csv"), "--audio", str(built["audio"]), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.stderr.strip() == f"songfeat: error: {tmp_path / 'missing.csv'}: no such file"
    # an --out that cannot be a folder (under a file here; read-only places alike) printed a PermissionError traceback
    r = runner.invoke(app, ["build", "--labels", str(built["labels"]), "--audio", str(built["audio"]),
                            "--out", str(built["labels"] / "store")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip().startswith(f"songfeat: error: {built['labels'] / 'store'}: cannot create the store folder (")
    r = runner.invoke(app, ["build", "--labels", str(built["labels"]), "--audio", str(built["audio"]),
                            "--out", str(out), "--limit", "2"])  # a store of other inputs: refused, left as it is
    assert r.exit_code == 2 and "already holds a build of different inputs" in r.stderr and r.stdout == "", r.output


def test_a_rerun_on_a_complete_store_says_nothing_was_left_to_do(tmp_path):
    """It printed "0.00 clips/s", a rate of a run that computed nothing, read as a stalled build."""
    from typer.testing import CliRunner

    from songfeat.cli import app

    labels, audio, _ = make_dataset(tmp_path, 2)
    args = ["build", "--labels", str(labels), "--audio", str(audio), "--out", str(tmp_path / "s"), "--no-descriptors"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and " clips/s)" in r.stdout, r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "(2 from an earlier run;" in r.stdout and r.stdout.rstrip().endswith("; nothing was left to do)")
    assert "clips/s" not in r.stdout


def test_training_on_a_store_whose_every_clip_failed_points_at_its_report(tmp_path):
    """`train` said "only 0 training rows (of 0 usable of 0 clips in the store)", not that the clips had failed to build
    nor where their reasons are."""
    from typer.testing import CliRunner

    from songfeat.cli import app

    audio = tmp_path / "audio"
    audio.mkdir()
    ids = [spotify_like_id(80 + i) for i in range(3)]
    for tid in ids:
        (audio / f"{tid}.mp3").write_bytes(bytes(range(256)) * 64)  # not audio
    write_labels(tmp_path / "labels.csv", ids)
    build_store(tmp_path / "labels.csv", audio, tmp_path / "s", workers=1, progress=False, descriptors=False)
    r = CliRunner().invoke(app, ["train", "numeric-mlp", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip().endswith(f"3 of the store's 3 clips failed to build: their reasons are in "
                                     f"{tmp_path / 's' / 'report.csv'} (rerun `songfeat build` to try them again)")


@pytest.mark.parametrize("case", ["no-labels", "header-only", "no-audio", "nothing-pairs", "out-a-file",
                                  "out-under-a-file", "out-read-only", "out-not-a-store"])
def test_build_refuses_inputs_it_cannot_use_with_status_2(tmp_path, monkeypatch, case):
    """build exited 1 for inputs it refused before any clip, the status of a build whose clips failed: each is one line
    and status 2 now (README, "Exit status"), as analyze, collect and download give; nothing is built."""
    import errno

    from typer.testing import CliRunner

    from songfeat.cli import app
    from songfeat.data.store import LOCK

    ids = [spotify_like_id(i) for i in range(2)]
    (tmp_path / "audio").mkdir()
    for tid in ids:
        (tmp_path / "audio" / f"{tid}.wav").write_bytes(b"never read: refused before any clip")
    write_labels(tmp_path / "labels.csv", ids)
    (tmp_path / "header.csv").write_text(",".join(LABEL_HEADER) + "\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "song.wav").write_bytes(b"x")
    (tmp_path / "afile").write_text("x")
    for name in ("ro", "mine"):
        (tmp_path / name).mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("someone's work")
    real_open = os.open

    def read_only(path, *a, **k):  # a folder the build may not write into (root may write anywhere, so faked)
        if str(path) == str(tmp_path / "ro" / LOCK):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    labels, audio, out, message = {
        "no-labels": ("nope.csv", "audio", "s", "nope.csv: no such file"),
        "header-only": ("header.csv", "audio", "s", "header.csv: no label rows (the file holds a header and nothing else)"),
        "no-audio": ("labels.csv", "noaudio", "s", "noaudio: audio folder not found"),
        "nothing-pairs": ("labels.csv", "elsewhere", "s", "elsewhere: no audio file matches a labelled track id (2 label "
                                                          f"rows, 1 audio file; e.g. song.wav vs label id {ids[0]}); name "
                                                          "files <track_id>.<ext>"),
        "out-a-file": ("labels.csv", "audio", "afile", "afile: exists and is not a folder"),
        "out-under-a-file": ("labels.csv", "audio", "afile/s", "afile/s: cannot create the store folder (Not a directory)"),
        "out-read-only": ("labels.csv", "audio", "ro", "ro: cannot write into the store folder (Permission denied)"),
        "out-not-a-store": ("labels.csv", "audio", "mine", "mine: folder is not empty and holds no songfeat store; choose an "
                                                           "empty or new --out"),
    }[case]
    r = CliRunner().invoke(app, ["build", "--labels", str(tmp_path / labels), "--audio", str(tmp_path / audio),
                                 "--out", str(tmp_path / out), "-j", "1"])
    assert (r.exit_code, r.stderr, r.stdout) == (2, f"songfeat: error: {tmp_path}/{message}\n", ""), r.output
    assert not (tmp_path / "s").exists() and [p.name for p in (tmp_path / "ro").iterdir()] == []


def test_a_store_that_cannot_be_finished_once_its_clips_ran_is_work_failed(tmp_path, monkeypatch):
    """The other side of the rule: a store left unfinished after its clips ran (a pool that stopped early) is a
    WorkFailed, status 1, not a refusal (2)."""
    from typer.testing import CliRunner

    from songfeat.cli import app
    from songfeat.data import store
    from songfeat.errors import WorkFailed

    ids = [spotify_like_id(i) for i in range(2)]
    (tmp_path / "audio").mkdir()
    for tid in ids:
        (tmp_path / "audio" / f"{tid}.wav").write_bytes(b"never read: the pool does nothing")
    write_labels(tmp_path / "labels.csv", ids)
    monkeypatch.setattr(store, "SERIAL_MAX", 0)
    monkeypatch.setattr(store, "run_pool", lambda *a, **k: None)
    with pytest.raises(WorkFailed, match="2 clips were not processed"):
        build_store(tmp_path / "labels.csv", tmp_path / "audio", tmp_path / "a", workers=1, progress=False)
    r = CliRunner().invoke(app, ["build", "--labels", str(tmp_path / "labels.csv"), "--audio", str(tmp_path / "audio"),
                                 "--out", str(tmp_path / "b"), "-j", "1"])
    assert (r.exit_code, r.stderr) == (1, f"songfeat: error: {tmp_path / 'b'}: 2 clips were not processed; rerun the "
                                          "build to finish them\n"), r.output


def test_cli_address_needs_the_ray_engine(built, tmp_path):
    # build --address is read by --engine ray alone; with the local engine it was ignored without a word
    from typer.testing import CliRunner

    from songfeat.cli import app

    r = CliRunner().invoke(app, ["build", "--labels", str(built["labels"]), "--audio", str(built["audio"]),
                                 "--out", str(tmp_path / "x"), "--address", "auto"])
    assert r.exit_code == 2 and r.stderr.strip() == ("songfeat: error: --address is for --engine ray; the local engine "
                                                     "has no use for it"), r.output
    assert not (tmp_path / "x").exists()


def test_dropped_label_rows_are_named(tmp_path):
    from typer.testing import CliRunner

    from songfeat.cli import app

    labels, audio, ids = make_dataset(tmp_path, 2, seconds=2.0)
    table = pd.read_csv(labels)
    bad = table.iloc[[0]].assign(track_id=spotify_like_id(40), danceability=5.0)  # a typo: out of Spotify's range
    pd.concat([table, bad]).to_csv(labels, index=False)
    r = CliRunner().invoke(app, ["build", "--labels", str(labels), "--audio", str(audio), "--out", str(tmp_path / "s"),
                                 "-j", "1", "--no-descriptors"])
    assert r.exit_code == 0, r.output
    # the bad cell alone is read as missing (it cost the row all its labels), and said
    line = (f"{labels}: line 4 ({spotify_like_id(40)}): danceability 5 outside [0, 1]: read as missing (the row's "
            "other labels are used)")
    assert f"songfeat: warning: {line}" in r.stderr
    assert "0 label rows dropped" in r.stdout
    assert json.loads((tmp_path / "s" / "report.json").read_text())["label_values_not_used"] == [line]



def test_a_misspelt_feature_column_is_named(tmp_path):
    # LabelTable.unread ('valance' is not read) was said by evaluate-audio and train-heads, never by build
    from typer.testing import CliRunner

    from songfeat.cli import app

    labels, audio, ids = make_dataset(tmp_path, 2, seconds=2.0)
    pd.read_csv(labels).rename(columns={"valence": "valance"}).to_csv(labels, index=False)
    r = CliRunner().invoke(app, ["build", "--labels", str(labels), "--audio", str(audio), "--out", str(tmp_path / "s"),
                                 "-j", "1", "--no-descriptors"])
    assert r.exit_code == 0, r.output
    line = f"{labels}: column 'valance' is not read: no feature has that name (did you mean 'valence'?)"
    assert r.stderr.splitlines()[0] == f"songfeat: warning: {line}"
    assert json.loads((tmp_path / "s" / "report.json").read_text())["columns_not_read"] == [line]
    r = CliRunner().invoke(app, ["build", "--labels", str(labels), "--audio", str(audio), "--out", str(tmp_path / "s"),
                                 "-j", "1", "--no-descriptors"])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[0] == f"songfeat: warning: {line}"  # a rerun with nothing left to do says it again

def test_other_frontend_and_limit(tmp_path):
    labels, audio, ids = make_dataset(tmp_path, 3, seconds=2.0)
    store_dir = tmp_path / "logmel"
    r = build_store(labels, audio, store_dir, frontend="logmel", workers=1, progress=False, limit=2, descriptors=False)
    store = open_store(store_dir)
    assert r.ok and store.ids() == sorted(ids)[:2] and store.array().shape == (2, 96, 1292)
    np.testing.assert_array_equal(store.features(ids[0]), expected_tensor(audio / f"{ids[0]}.wav", frontend.LOGMEL))
    assert store.descriptors()["duration_ms"].tolist() == [2000.0, 2000.0]


def test_open_store_errors(tmp_path):
    with pytest.raises(SongfeatError, match="no such store folder"):
        open_store(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SongfeatError, match="not a songfeat store"):
        open_store(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    labels, audio, _ = make_dataset(tmp_path / "d", 1)
    with pytest.raises(SongfeatError, match="not empty"):
        build_store(labels, audio, tmp_path / "junk", workers=1, progress=False)


def test_resume_after_sigkill_equals_uninterrupted_build(tmp_path):
    """Kill -9 a pooled `songfeat build` part-way, rerun it, and compare with a clean build elsewhere."""
    n = 40
    labels, audio, ids = make_dataset(tmp_path, n, seconds=3.0)
    killed = tmp_path / "killed"
    cmd = [PY, "-m", "songfeat.cli", "build", "--labels", str(labels), "--audio", str(audio), "--out", str(killed), "-j", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    journal = killed / "work" / "journal.jsonl"
    deadline = time.monotonic() + 120
    lines = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists():
                lines = journal.read_bytes().count(b"\n")
                if lines >= 5:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker processes, as a crash would
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"build ended on its own before the kill: {proc.stderr.read().decode()[-500:]}"
    assert 5 <= lines < n
    with pytest.raises(SongfeatError, match="incomplete"):
        open_store(killed)
    with open(journal, "ab") as f:  # as if the kill had landed mid-write: a torn last line
        f.write(b'{"row": 39, "track_id": "T000')

    resumed = build_store(labels, audio, killed, workers=2, progress=False)
    assert resumed.ok and resumed.resumed >= 5 and resumed.built == n and resumed.resumed < n

    clean = tmp_path / "clean"
    build_store(labels, audio, clean, workers=1, progress=False)
    a, b = open_store(killed), open_store(clean)
    assert a.ids() == b.ids() == sorted(ids)
    assert len(set(a.ids())) == n and len(a.index()) == n  # every clip exactly once
    np.testing.assert_array_equal(a.array(), b.array())
    pd.testing.assert_frame_equal(a.descriptors(), b.descriptors())
    pd.testing.assert_frame_equal(a.labels(), b.labels())


@pytest.mark.shared
def test_real_previews(shared_data, tmp_path):
    previews = shared_data / "spotify-previews"
    r = build_store(previews / "labels.csv", previews / "audio", tmp_path / "s", workers=1, progress=False, limit=2)
    store = open_store(tmp_path / "s")
    assert r.ok and len(store) == 2 and r.labels_without_audio == 0
    tid = store.ids()[0]
    np.testing.assert_array_equal(store.features(tid), expected_tensor(previews / "audio" / f"{tid}.mp3", store.spec))
    assert store.labels().loc[tid, list(features.LABEL_COLUMNS)].notna().all()
    assert 29000 <= store.descriptors().loc[tid, "duration_ms"] <= 31000


def crash_on_marker(path: str, spec_dict: dict, with_descriptors: bool = True) -> dict:
    """A stand-in for process_clip whose worker process dies (as on a decoder segfault) on files named *crash*."""
    if "crash" in Path(path).name:
        os._exit(1)
    from songfeat.data.store import process_clip

    return process_clip(path, spec_dict, with_descriptors)


def test_a_worker_crash_fails_only_its_clip(tmp_path):
    from songfeat.data import store as st

    labels, audio, ids = make_dataset(tmp_path, 6, seconds=1.5)
    paths = [str(audio / f"{t}.wav") for t in ids]
    paths[2] = str(tmp_path / "crash.wav")
    results: dict[int, dict] = {}
    st.run_pool(list(range(6)), paths, frontend.SEED_MFCC.to_dict(), False, 2, lambda i, r: results.__setitem__(i, r),
                fn=crash_on_marker)
    assert sorted(results) == list(range(6))
    assert results[2] == {"ok": False, "reason": "the decoder crashed its worker process"}
    assert all(results[i]["ok"] for i in (0, 1, 3, 4, 5))


# Stands in for a decoder that crashes on one file (or the OOM killer): whatever process decodes it dies by SIGKILL.
DIE_HOOK = """
import os, sys
if os.environ.get("SONGFEAT_TEST_DIE_ON"):
    import songfeat.audio
    windows = songfeat.audio.iter_windows
    def iter_windows(path, *args, **kwargs):
        if os.environ["SONGFEAT_TEST_DIE_ON"] in str(path):
            os.kill(os.getpid(), 9)
        return windows(path, *args, **kwargs)
    for name, module in list(sys.modules.items()):  # those that imported it already (songfeat.analyze) too
        if name.startswith("songfeat") and getattr(module, "iter_windows", None) is windows:
            module.iter_windows = iter_windows
"""


def test_a_clip_that_kills_a_small_builds_process_fails_alone_on_the_rerun(tmp_path):
    """A build of SERIAL_MAX clips or fewer runs them in this process, so a clip whose decoding kills the process (a
    decoder crash, the OOM killer) ends the command; its reruns ran in-process too and died on it every time, for good.
    A rerun now goes to worker processes: that clip fails alone ("the decoder crashed its worker process")."""
    labels, audio, ids = make_dataset(tmp_path / "in", 4)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIE_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *sys.path]), "SONGFEAT_TEST_DIE_ON": ids[1]}
    args = [PY, "-m", "songfeat.cli", "build", "--labels", str(labels), "--audio", str(audio), "--out", str(tmp_path / "s")]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]  # the first run dies with it, as any program would
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr[-2000:]
    crashed = [line for line in again.stderr.splitlines() if line.endswith(": the decoder crashed its worker process")]
    assert len(crashed) == 1 and ids[1] in crashed[0], again.stderr[-2000:]
    assert len(open_store(tmp_path / "s")) == 3


def read_or_crash(job: tuple) -> str:
    """A stand-in for records' per-clip reader whose worker process dies (the OOM killer, a decoder) on *crash* files."""
    if "crash" in job[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"read {job[0]}"


def test_a_worker_crash_while_reading_clips_fails_only_its_clip():
    """train-heads and evaluate-audio read clips with records.map_files: a killed worker ended the run in a
    BrokenProcessPool traceback; it is that clip's error line, as a clip the reader cannot analyse is."""
    from songfeat.records import map_files

    out = map_files(read_or_crash, [("a.wav",), ("crash.wav",), ("b.wav",), ("c.wav",)], workers=2, progress=False)
    assert out == ["read a.wav", "crash.wav: analysis failed (its worker process died (SIGKILL))", "read b.wav", "read c.wav"]


ORPHAN_SCRIPT = """
import os, sys, time
from songfeat.records import map_files
def job(args):
    open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
    time.sleep(0.2)
    return args[0]
map_files(job, [(str(i),) for i in range(500)], workers=2, progress=False)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_clip_reading_workers_do_not_outlive_a_killed_batch(tmp_path, running):
    """A train-heads -j 2 killed with SIGKILL (or by the OOM killer) left its ProcessPoolExecutor workers waiting on
    their queue for ever, each holding its models' memory and the caller's stdout pipe."""
    proc = subprocess.Popen([PY, "-c", ORPHAN_SCRIPT, str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            pids = [int(p.name) for p in tmp_path.iterdir()]
        assert len(pids) == 2, f"the workers did not start: {proc.stderr.read().decode()[-500:] if proc.poll() else ''}"
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while any(map(running, pids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(running, pids)), "worker processes outlived the killed batch"
    finally:
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


MEMORY_SCRIPT = """
import resource, sys
from songfeat.data.store import build_store
labels, audio, out = sys.argv[1:4]
build_store(labels, audio, out + "-warm", frontend="logmel", workers=1, progress=False, descriptors=False, limit=8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
build_store(labels, audio, out, frontend="logmel", workers=1, progress=False, descriptors=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_memory_stays_flat(tmp_path):
    """Peak memory while building 200 log-mel clips grows far less than their 99 MB of tensors."""
    labels, audio, ids = make_dataset(tmp_path, 200, seconds=1.0)
    r = subprocess.run([PY, "-c", MEMORY_SCRIPT, str(labels), str(audio), str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    growth = int(r.stdout.strip().splitlines()[-1])
    tensors = 200 * 96 * 1292 * 4
    assert growth < tensors / 2, f"peak RSS grew {growth / 1e6:.1f} MB for {tensors / 1e6:.1f} MB of tensors"
    assert len(open_store(tmp_path / "out")) == 200


def test_nothing_to_join_is_an_error(tmp_path):
    labels, audio, _ = make_dataset(tmp_path, 2, seconds=1.0)
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "song.wav", clip(1, 1.0), 44100)
    with pytest.raises(SongfeatError, match=r"other: no audio file matches a labelled track id \(2 label rows, 1 audio file"):
        build_store(labels, other, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_two_builds_cannot_write_one_store(tmp_path):
    import fcntl

    labels, audio, _ = make_dataset(tmp_path, 2, seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SongfeatError, match="another build is writing this store"):
            build_store(labels, audio, out, workers=1, progress=False)
    assert build_store(labels, audio, out, workers=1, progress=False).built == 2  # lock released: builds


def test_a_build_starting_a_store_refuses_a_second_in_its_own_words(tmp_path):
    # a first build holds out/.lock and has made work/ but not yet written its manifest: a second build started then
    # was told the folder 'holds no songfeat store; choose an empty or new --out', of the store being built
    import fcntl

    labels, audio, _ = make_dataset(tmp_path, 2, seconds=1.0)
    out = tmp_path / "out"
    (out / "work").mkdir(parents=True)
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SongfeatError, match="another build is writing this store right now"):
            build_store(labels, audio, out, workers=1, progress=False)


def test_rerun_with_edited_labels_is_refused(tmp_path):
    """A finished store rerun after fixing a label used to report success and keep the stale label."""
    labels, audio, ids = make_dataset(tmp_path, 2, seconds=2.0)
    out = tmp_path / "s"
    build_store(labels, audio, out, workers=1, progress=False, descriptors=False)
    assert build_store(labels, audio, out, workers=1, progress=False, descriptors=False).resumed == 2  # same: a no-op
    table = pd.read_csv(labels)
    table.loc[0, "danceability"] = 0.9
    table.to_csv(labels, index=False)
    with pytest.raises(SongfeatError, match="different inputs.*label values"):
        build_store(labels, audio, out, workers=1, progress=False, descriptors=False)
    assert open_store(out).labels()["danceability"].tolist() == [0.1, 0.11]  # the store is left as it was


def test_rerun_with_another_limit_says_so_not_edited_labels(tmp_path):
    # changing only --limit was refused as "label values (the label file was edited or replaced); clips (...)"
    labels, audio, ids = make_dataset(tmp_path, 3, seconds=2.0)
    out = tmp_path / "s"
    build_store(labels, audio, out, workers=1, progress=False, descriptors=False, limit=2)
    with pytest.raises(SongfeatError, match=r"different inputs \(--limit 2 before, 1 now; clips \(2 planned before, 1 "
                                            r"now\)\)") as e:
        build_store(labels, audio, out, workers=1, progress=False, descriptors=False, limit=1)
    assert "label values" not in str(e.value)


def test_labels_with_no_usable_row_name_the_file_and_why(tmp_path):
    """Every row dropped (or none at all) used to surface as 'no audio file matches ... (0 label rows ...)'."""
    _, audio, ids = make_dataset(tmp_path, 1, seconds=2.0)
    header = tmp_path / "header.csv"
    header.write_text(",".join(LABEL_HEADER) + "\n")
    with pytest.raises(SongfeatError, match=r"header.csv: no label rows"):
        build_store(header, audio, tmp_path / "a", workers=1, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(LABEL_HEADER) + "\n" + ",".join([ids[0], *["5"] * 7, "500", "9", "20", "", "2.5"]) + "\n")
    with pytest.raises(SongfeatError, match=rf"bad.csv: every label row was dropped \(1: line 2 \({ids[0]}\): out of range: "
                                            r"danceability 5"):
        build_store(bad, audio, tmp_path / "b", workers=1, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_damaged_store_files_are_named(tmp_path):
    """A truncated or missing table, array or manifest: SongfeatError naming it, not a pyarrow/numpy/AttributeError."""
    import shutil

    labels, audio, _ = make_dataset(tmp_path, 2, seconds=2.0)
    good = tmp_path / "good"
    build_store(labels, audio, good, workers=1, progress=False, descriptors=False)

    def damaged(name: str, data: bytes | None) -> Path:
        s = tmp_path / name.replace(".", "_")
        shutil.copytree(good, s)
        if data is None:
            (s / name).unlink()
        else:
            (s / name).write_bytes(data)
        return s

    s = damaged("manifest.json", b"[]")
    with pytest.raises(SongfeatError, match="manifest.json: unreadable store manifest"):
        open_store(s)
    s = damaged("index.parquet", (good / "index.parquet").read_bytes()[:40])
    with pytest.raises(SongfeatError, match="index.parquet: damaged store table"):
        open_store(s)
    s = damaged("features.npy", (good / "features.npy").read_bytes()[:60])
    with pytest.raises(SongfeatError, match="features.npy: damaged array"):
        open_store(s).array()
    s = damaged("labels.parquet", None)
    with pytest.raises(SongfeatError, match="labels.parquet: missing from the store"):
        open_store(s).labels()


def _corrupt(path: Path) -> None:
    path.write_bytes(b"RIFF" + bytes(range(256)) * 16)  # a .wav no decoder reads


def test_rerun_builds_clips_fixed_since_and_equals_a_clean_build(tmp_path):
    """A clip that failed (an unreadable file, replaced since) is built by a rerun; the other clips are not recomputed."""
    labels, audio, ids = make_dataset(tmp_path, 4, seconds=2.0)
    fixed = {t: (audio / f"{t}.wav").read_bytes() for t in (ids[1], ids[2])}
    for t in fixed:
        _corrupt(audio / f"{t}.wav")
    out = tmp_path / "s"
    first = build_store(labels, audio, out, workers=1, progress=False)
    assert first.built == 2 and {f["track_id"] for f in first.failed} == set(fixed)
    rows_before = {t: open_store(out).features(t).tobytes() for t in open_store(out).ids()}
    again = build_store(labels, audio, out, workers=1, progress=False)  # still broken: failed again, nothing changes
    assert (again.retried, again.recovered, len(again.failed)) == (2, 0, 2)
    for t, data in fixed.items():
        (audio / f"{t}.wav").write_bytes(data)

    r = build_store(labels, audio, out, workers=1, progress=False)
    assert r.ok and r.built == 4 and r.resumed == 2 and (r.retried, r.recovered) == (2, 2)
    store = open_store(out)
    assert store.ids() == sorted(ids) and store.manifest["built"] == 4 and store.manifest["failed"] == 0
    for t, data in rows_before.items():
        assert store.features(t).tobytes() == data  # copied, not recomputed
    assert pd.read_csv(out / "report.csv").empty
    rep = json.loads((out / "report.json").read_text())
    assert (rep["built"], rep["failed"], rep["failures"], rep["retried"], rep["recovered"]) == (4, 0, [], 2, 2)
    assert not (out / "work").exists()

    clean = tmp_path / "clean"
    build_store(labels, audio, clean, workers=1, progress=False)
    a, b = open_store(out), open_store(clean)
    np.testing.assert_array_equal(a.array(), b.array())
    pd.testing.assert_frame_equal(a.index(), b.index())
    pd.testing.assert_frame_equal(a.descriptors(), b.descriptors())
    pd.testing.assert_frame_equal(a.labels(), b.labels())

    mtime = (out / "features.npy").stat().st_mtime_ns
    r = build_store(labels, audio, out, workers=1, progress=False)  # nothing failed: a rerun does nothing
    assert r.resumed == 4 and r.retried == 0 and (out / "features.npy").stat().st_mtime_ns == mtime


def test_a_store_keeps_each_clips_content_id_and_one_built_before_them_still_works(tmp_path):
    """The store kept no hash of its files, so a bundle trained on it could only name its clips by track id (a renamed
    copy of one was scored as unseen). index.parquet now holds each clip's content id, kept through a retry; a store
    built before (no such column) opens and retries as before, with no content ids (all or none: a store of some
    clips' hashes would leave the rest to be matched by id unsaid)."""
    from songfeat.analyze import content_id

    labels, audio, ids = make_dataset(tmp_path, 3, seconds=2.0)
    good = (audio / f"{ids[1]}.wav").read_bytes()
    _corrupt(audio / f"{ids[1]}.wav")
    out = tmp_path / "s"
    build_store(labels, audio, out, workers=1, progress=False, descriptors=False)
    assert open_store(out).content_ids() == {t: content_id(audio / f"{t}.wav") for t in (ids[0], ids[2])}
    index = pd.read_parquet(out / "index.parquet")
    index.drop(columns="content").to_parquet(out / "index.parquet")  # as an older songfeat wrote it
    assert open_store(out).content_ids() is None and open_store(out).ids() == sorted([ids[0], ids[2]])
    (audio / f"{ids[1]}.wav").write_bytes(good)
    r = build_store(labels, audio, out, workers=1, progress=False, descriptors=False)
    assert r.ok and r.recovered == 1
    store = open_store(out)
    assert store.ids() == sorted(ids) and store.content_ids() is None


def test_a_clip_replaced_while_it_is_read_fails_rather_than_keep_another_files_content_id(tmp_path, monkeypatch):
    """The content id was hashed from a fresh open after decoding: a file replaced in between (a sync tool renaming a
    new version into place) left the row with the old audio's tensor and the new file's content id, so evaluate-audio
    would have left out the new audio and scored the audio trained on as unseen."""
    import songfeat.data.store as store_mod

    labels, audio, ids = make_dataset(tmp_path, 2, seconds=2.0)
    victim = audio / f"{ids[0]}.wav"
    real = store_mod.content_id

    def replaced_first(path):
        """Hash after the file was replaced by another version (renamed into place)."""
        if Path(path) == victim:
            other = victim.with_suffix(".new")
            other.write_bytes(victim.read_bytes() + bytes(64))
            os.replace(other, victim)
        return real(path)

    monkeypatch.setattr(store_mod, "content_id", replaced_first)
    res = store_mod.process_clip(str(victim), frontend.FrontendSpec().to_dict(), False)
    assert not res["ok"] and "changed while it was read" in res["reason"], res
    assert store_mod.process_clip(str(audio / f"{ids[1]}.wav"), frontend.FrontendSpec().to_dict(), False)["ok"]


def test_an_interrupted_retry_loses_nothing(tmp_path, monkeypatch):
    """Stopped while retrying, then killed while merging: each rerun goes on, and the store ends as a clean build."""
    from songfeat import atomic
    from songfeat.data import store as st

    labels, audio, ids = make_dataset(tmp_path, 5, seconds=2.0)
    fixed = {t: (audio / f"{t}.wav").read_bytes() for t in ids[1:4]}
    for t in fixed:
        _corrupt(audio / f"{t}.wav")
    out = tmp_path / "s"
    build_store(labels, audio, out, workers=1, progress=False)
    for t, data in fixed.items():
        (audio / f"{t}.wav").write_bytes(data)

    real = st.process_clip
    seen = []

    def stop_at_second(path, spec_dict, with_descriptors=True):
        seen.append(path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(path, spec_dict, with_descriptors)

    monkeypatch.setattr(st, "process_clip", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        build_store(labels, audio, out, workers=1, progress=False)
    monkeypatch.setattr(st, "process_clip", real)
    store = open_store(out)  # still the finished store it was, readable while its retry waits
    assert store.ids() == sorted([ids[0], ids[4]]) and len(store.report()["failures"]) == 3
    assert (out / "work" / "retry.json").exists()

    real_replacing = atomic.replacing

    def die_before_report(path, *a, **k):
        if Path(path).name == "report.json":
            raise OSError(28, "No space left on device")
        return real_replacing(path, *a, **k)

    monkeypatch.setattr(atomic, "replacing", die_before_report)
    with pytest.raises(OSError):  # features.npy is merged, the tables are half written
        build_store(labels, audio, out, workers=1, progress=False)
    monkeypatch.setattr(atomic, "replacing", real_replacing)
    with pytest.raises(SongfeatError, match="incomplete"):
        open_store(out)

    r = build_store(labels, audio, out, workers=1, progress=False)
    assert r.ok and r.resumed == 5 and (r.retried, r.recovered) == (3, 3)
    clean = tmp_path / "clean"
    build_store(labels, audio, clean, workers=1, progress=False)
    a, b = open_store(out), open_store(clean)
    assert a.ids() == sorted(ids) and a.manifest["complete"]
    np.testing.assert_array_equal(a.array(), b.array())
    pd.testing.assert_frame_equal(a.index(), b.index())
    pd.testing.assert_frame_equal(a.descriptors(), b.descriptors())
    assert not (out / "work").exists() and pd.read_csv(out / "report.csv").empty


def test_cli_rerun_retries_clips_that_timed_out(tmp_path):
    """A --timeout too low fails clips in the worker pool; the same command without it builds them."""
    from typer.testing import CliRunner

    from songfeat.cli import app

    labels, audio, ids = make_dataset(tmp_path, 13, seconds=1.5)  # over SERIAL_MAX: worker processes, a time limit
    out = tmp_path / "s"
    args = ["build", "--labels", str(labels), "--audio", str(audio), "--out", str(out), "-j", "2", "--no-descriptors"]
    r = CliRunner().invoke(app, [*args, "--timeout", "0.001"])
    assert r.exit_code == 1 and "timed out" in r.stderr, r.output
    failed = json.loads((out / "report.json").read_text())["failed"]
    assert failed >= 1
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"built 13 of 13 clips into {out} ({13 - failed} from an earlier run; retried {failed} that failed before, " \
           f"now built {failed}; 0 failed;" in r.stdout
    store = open_store(out)
    assert store.ids() == sorted(ids) and store.report()["failures"] == []
    np.testing.assert_array_equal(store.features(ids[5]), expected_tensor(audio / f"{ids[5]}.wav", store.spec))


def test_a_pooled_builds_resume_stays_in_worker_processes_however_few_clips_are_left(tmp_path, monkeypatch):
    # a resume with at most SERIAL_MAX clips left ran them in the build's own process, with no time limit: the clip in
    # flight when the build died (one that stalls its decoder, say) could then hang or take down the resume itself
    from songfeat.data import store as st

    labels, audio, ids = make_dataset(tmp_path, st.SERIAL_MAX + 1, seconds=1.0)
    out = tmp_path / "s"

    def all_but_one(todo, paths, spec_dict, descriptors, workers, record):
        for i in todo[:-1]:
            record(i, st.process_clip(paths[i], spec_dict, descriptors))
        raise KeyboardInterrupt  # the build is stopped with one clip to go

    with pytest.raises(KeyboardInterrupt):
        build_store(labels, audio, out, workers=1, progress=False, runner=all_but_one)
    pooled = []
    real = st.run_pool
    monkeypatch.setattr(st, "run_pool", lambda todo, *a, **k: (pooled.append(list(todo)), real(todo, *a, **k))[1])
    r = build_store(labels, audio, out, workers=1, progress=False)
    assert r.ok and r.built == len(ids) and r.resumed == len(ids) - 1
    assert len(pooled) == 1 and len(pooled[0]) == 1  # the one clip left, in a worker with its time limit


def test_a_clip_silent_through_its_first_window_is_warned_about(tmp_path):
    # the store keeps the front-end of a clip's first 30 s: one opening with 32 s of silence was kept as silence, quietly
    from songfeat.data.store import process_clip

    spec = frontend.get_spec("mfcc").to_dict()
    song = clip(3, 12.0)
    cases = {"late.wav": (32.0, "is silent \\(a long silent intro\\?\\); its row describes silence"),
             "half.wav": (20.0, "is silent up to 20 s .*describes mostly silence"),
             "prompt.wav": (2.0, None)}
    for name, (silence, warning) in cases.items():
        path = tmp_path / name
        sf.write(path, np.concatenate([np.zeros(int(silence * 44100), np.float32), song]), 44100)
        res = process_clip(str(path), spec, with_descriptors=False)
        assert res["ok"], res
        if warning is None:
            assert not res.get("warnings"), res.get("warnings")
        else:
            assert len(res["warnings"]) == 1, res.get("warnings")
            assert re.match(f"{re.escape(str(path))}: its first 30 s, the window whose front-end the store keeps, "
                            f"{warning}", res["warnings"][0]), res["warnings"][0]
