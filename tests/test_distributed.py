"""The Ray engine end to end on a local cluster: error rows, equality with the local engine, resuming after SIGKILL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songfeat import synth
from songfeat.analyze import analyze_many
from songfeat.bundle import model_id
from songfeat.cli import app
from songfeat.output import outcome_record, parquet_schema, records_table
from spotify_standin import kill_when
from test_store import DIE_HOOK

ray = pytest.importorskip("ray")
distributed = pytest.importorskip("songfeat.distributed")

pytestmark = pytest.mark.slow
GOOD = 5


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local Ray cluster for this module (start-up is paid once); yields its address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five different 3-s wavs, a text file named .mp3 and an empty file."""
    d = tmp_path_factory.mktemp("catalogue")
    for i in range(GOOD):
        y = synth.drum_pattern(90 + 15 * i, seconds=3.0, seed=i) + 0.5 * synth.chord_progression(i, i % 2, seconds=3.0)
        sf.write(d / f"clip{i}.wav", y.astype(np.float32), synth.SR)
    (d / "notes.mp3").write_text("not audio at all\n")
    (d / "empty.wav").write_bytes(b"")
    return d


def _by_path(table):
    return table.sort_by("path")


def test_ray_rows_equal_the_local_engine_and_bad_files_are_error_rows(cluster, folder, tmp_path):
    local = tmp_path / "local.parquet"
    res = CliRunner().invoke(app, ["analyze", str(folder), "--format", "parquet", "--output", str(local), "--workers", "2"])
    assert res.exit_code == 1, res.output  # two bad files
    out = tmp_path / "features"
    report = distributed.analyze_to_parquet([folder], out, chunk_size=4)  # two parts
    assert (report.planned, report.written, report.skipped, len(report.errors)) == (GOOD + 2, GOOD + 2, 0, 2)

    rows = _by_path(distributed.read_output(out))
    assert rows.schema.equals(parquet_schema())
    assert rows.equals(_by_path(pq.read_table(local)))  # bit-identical, error rows included
    by_name = {Path(r["path"]).name: r for r in rows.to_pylist()}
    assert "empty file" in by_name["empty.wav"]["error"]
    assert "not a readable audio file" in by_name["notes.mp3"]["error"]
    for name in ("empty.wav", "notes.mp3"):
        assert all(by_name[name][k] is None for k in ("energy", "tempo", "key", "duration_ms"))
    good = [r for n, r in by_name.items() if n.startswith("clip")]
    assert len(good) == GOOD and all(r["error"] is None and 2900 <= r["duration_ms"] <= 3100 for r in good)
    assert len({r["id"] for r in good}) == GOOD

    manifest = json.loads((out / distributed.MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["parts"]) == 2 and manifest["rows"] == GOOD + 2
    again = distributed.analyze_to_parquet([folder], out)  # idempotent: nothing is redone
    assert (again.written, again.skipped) == (0, GOOD + 2)
    assert _by_path(distributed.read_output(out)).equals(rows)


def test_a_ray_dataset_of_bytes_keeps_extra_columns(cluster, folder):
    ds = ray.data.read_binary_files(str(folder), include_paths=True).map(lambda r: {**r, "label": Path(r["path"]).stem})
    rows = _by_path(pa.concat_tables(ray.get(distributed.analyze_dataset(ds, bytes_column="bytes").to_arrow_refs())))
    assert rows.column_names == list(parquet_schema().names) + ["label"] and rows.num_rows == GOOD + 2
    assert [Path(p).stem for p in rows.column("path").to_pylist()] == rows.column("label").to_pylist()
    errors = {Path(p).name: e for p, e in zip(rows.column("path").to_pylist(), rows.column("error").to_pylist()) if e}
    assert set(errors) == {"empty.wav", "notes.mp3"}
    assert all(str(folder) in e for e in errors.values())  # named after the source, not a temporary file
    good = sorted(str(f) for f in folder.glob("clip*.wav"))
    local = records_table([{**outcome_record(o.path, o.features, o.error), "model": model_id(None)} for o in analyze_many(good)])
    from_bytes = rows.drop_columns(["label"]).filter(pc.is_null(rows.column("error")))
    assert from_bytes.drop_columns(["path"]).equals(_by_path(local).drop_columns(["path"]))  # ids by content: the same


def test_driver_killed_partway_then_rerun_writes_every_track_exactly_once(cluster, folder, tmp_path):
    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "songfeat.cli", "analyze", str(folder), "--engine", "ray", "--address", cluster,
           "--format", "parquet", "--output", str(out), "--chunk-size", "3", "--workers", "2"]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}

    def one_part_committed() -> bool:
        m = distributed.read_manifest(out) if (out / distributed.MANIFEST).exists() else None
        return bool(m and m["parts"])

    kill_when(cmd, env, one_part_committed, timeout=300)
    m = distributed.read_manifest(out)
    assert not m["complete"] and 1 <= len(m["parts"]) < 3  # killed part-way: 7 tracks are 3 parts
    first = {r for r in distributed.read_output(out, columns=["path"]).column("path").to_pylist()}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]  # the two bad files
    assert f"{len(first)} of {GOOD + 2} already there" in p.stderr
    paths = distributed.read_output(out, columns=["path"]).column("path").to_pylist()
    assert sorted(paths) == sorted(str(f.resolve()) for f in folder.iterdir())  # every track, each exactly once
    assert distributed.read_manifest(out)["complete"]
    assert not (out / distributed.STAGING).exists()


def test_ctrl_c_partway_keeps_the_committed_parts_and_a_rerun_finishes(cluster, folder, tmp_path):
    """Ctrl-C (SIGINT) after a part is committed: one line, status 130, the part kept and listed in a valid manifest; a
    rerun writes every track exactly once. (It already held; checked here beside SIGKILL.)"""
    import signal
    import time

    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "songfeat.cli", "analyze", str(folder), "--engine", "ray", "--address", cluster,
           "--format", "parquet", "--output", str(out), "--chunk-size", "1", "--workers", "1"]
    # one file a part: under a loaded CI machine three parts of three could all be committed before SIGINT landed
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ((out / distributed.MANIFEST).exists() and distributed.read_manifest(out)["parts"]):
            assert proc.poll() is None and time.monotonic() < deadline, "never got part-way"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (f"songfeat: error: interrupted; committed parts are kept in {out}; "
                                    "rerun the same command to continue"), err
    assert 1 <= len(distributed.read_manifest(out)["parts"]) < 7 and not distributed.read_manifest(out)["complete"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]  # the two bad files
    paths = distributed.read_output(out, columns=["path"]).column("path").to_pylist()
    assert sorted(paths) == sorted(str(f.resolve()) for f in folder.iterdir())  # every track, each exactly once
    assert distributed.read_manifest(out)["complete"] and not (out / distributed.STAGING).exists()


def test_rows_come_out_in_the_local_engines_order(cluster, tmp_path):
    """Ray Data wrote each part's rows in whichever order its batches ended: another order on every run, where the local
    engine keeps the listing's. A long first file makes its batch end after the other actor's. (The values were the
    same.)"""
    d = tmp_path / "music"
    d.mkdir()
    for i in range(10):
        y = synth.drum_pattern(90 + 5 * i, seconds=30.0 if i == 0 else 2.0, seed=i)
        sf.write(d / f"clip{i}.wav", y.astype(np.float32), synth.SR)
    local = tmp_path / "local.parquet"
    res = CliRunner().invoke(app, ["analyze", str(d), "--format", "parquet", "--output", str(local), "--workers", "2"])
    assert res.exit_code == 0, res.output
    distributed.analyze_to_parquet([d], tmp_path / "features", batch_size=1, concurrency=2)
    rows, want = distributed.read_output(tmp_path / "features"), pq.read_table(local)
    assert [Path(p).name for p in rows.column("path").to_pylist()] == [f"clip{i}.wav" for i in range(10)]
    assert rows.drop_columns(["path"]).equals(want.drop_columns(["path"]))
    assert not ray.data.DataContext.get_current().execution_options.preserve_order  # the caller's settings untouched


def _run_with_a_crashing_decoder(args: list[str], die_on: str, tmp_path: Path) -> tuple[int, str]:
    """Run `songfeat ARGS` on its own local Ray cluster, whose every process loads DIE_HOOK; its status and stderr.
    Fails the test when it is still running after 240 s, or when Ray's lines reached stdout (its driver printed
    "(raylet) A worker died or was killed ..." there, into songfeat's output)."""
    import signal

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIE_HOOK)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=os.pathsep.join([str(hook), *sys.path]), SONGFEAT_TEST_DIE_ON=die_on,
               RAY_DATA_DISABLE_PROGRESS_BARS="1")
    proc = subprocess.Popen([sys.executable, "-m", "songfeat.cli", *args], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # (its cluster's processes are in its group)
        proc.communicate(timeout=60)
        pytest.fail(f"Ray still retrying the batch whose {die_on} kills its actor after 240 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "(raylet)" not in out, out[-2000:]
    return proc.returncode, err


def test_a_file_that_kills_its_actor_is_an_error_row_not_a_retry_for_ever(folder, tmp_path):
    """A file whose decoding kills the process (a decoder crash, the OOM killer) made Ray restart the actor and retry
    the batch, for ever: `analyze --engine ray` never ended and committed nothing. Locally it is that file's error line;
    now on Ray too, and the other tracks are written."""
    out = tmp_path / "features"
    code, err = _run_with_a_crashing_decoder(["analyze", str(folder), "--engine", "ray", "--format", "parquet", "-o",
                                              str(out), "--batch-size", "2", "-j", "2"], "clip2.wav", tmp_path)
    assert code == 1, err[-3000:]
    assert f"songfeat: error: {folder / 'clip2.wav'}: its worker process died (SIGKILL)" in err.splitlines(), err[-3000:]
    rows = {Path(r["path"]).name: r for r in distributed.read_output(out).to_pylist()}
    assert len(rows) == GOOD + 2 and rows["clip2.wav"]["error"].endswith("its worker process died (SIGKILL)")
    assert all(rows[f"clip{i}.wav"]["error"] is None for i in range(GOOD) if i != 2)


def test_a_clip_that_kills_its_actor_fails_alone_in_build(tmp_path):
    """`build --engine ray` retried the batch of a clip that kills its actor for ever, as analyze did; that clip fails
    now, as in the local pool ("the decoder crashed its worker process"), and the others are built."""
    from songfeat.data.store import open_store
    from test_store import make_dataset

    labels, audio, ids = make_dataset(tmp_path / "in", 4)
    code, err = _run_with_a_crashing_decoder(["build", "--labels", str(labels), "--audio", str(audio), "--out",
                                              str(tmp_path / "s"), "--engine", "ray", "-j", "2"], ids[1], tmp_path)
    assert code == 1, err[-3000:]
    crashed = [line for line in err.splitlines() if line.endswith(": the decoder crashed its worker process")]
    assert len(crashed) == 1 and ids[1] in crashed[0], err[-3000:]
    assert sorted(open_store(tmp_path / "s").ids()) == sorted(i for i in ids if i != ids[1])


def test_build_on_ray_equals_the_local_build(cluster, tmp_path):
    from songfeat.data.store import build_store, open_store
    from test_store import make_dataset, spotify_like_id, write_labels

    labels, audio, ids = make_dataset(tmp_path / "in", 4)
    bad = spotify_like_id(99)
    (audio / f"{bad}.mp3").write_text("not audio\n")
    write_labels(labels, ids + [bad])
    local = build_store(labels, audio, tmp_path / "local", workers=1, progress=False)
    on_ray = build_store(labels, audio, tmp_path / "ray", progress=False, runner=distributed.clip_runner())
    assert (on_ray.built, len(on_ray.failed)) == (local.built, len(local.failed)) == (4, 1)
    assert on_ray.failed == local.failed
    a, b = open_store(tmp_path / "local"), open_store(tmp_path / "ray")
    assert a.ids() == b.ids() and np.array_equal(a.array(), b.array())  # the same tensors, bit for bit
    assert a.descriptors().equals(b.descriptors())


def test_build_on_ray_takes_workers_as_its_actor_count(tmp_path, monkeypatch):
    # `build --engine ray --workers N` ignored N: the runner always started an actor per cluster CPU
    from songfeat.data import store
    from songfeat.errors import SongfeatError

    asked = []
    monkeypatch.setattr(distributed, "init", lambda address=None: None)
    monkeypatch.setattr(distributed, "clip_runner",
                        lambda concurrency=None, join=None: asked.append(concurrency) or "runner")

    def fake_build(*args, runner=None, workers=None, **kw):
        assert runner == "runner" and workers >= 1
        raise SongfeatError(None, "stopped here")

    monkeypatch.setattr(store, "build_store", fake_build)
    base = ["build", "--labels", str(tmp_path / "l.csv"), "--audio", str(tmp_path), "--out", str(tmp_path / "s"), "--engine", "ray"]
    for extra, want in ((["--workers", "3"], 3), ([], None)):
        res = CliRunner().invoke(app, base + extra)
        assert res.exit_code == 2 and "stopped here" in res.output, res.output  # a SongfeatError: refused before any clip
        assert asked[-1] == want


def test_another_model_is_refused_on_rerun(folder, tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    (out / distributed.MANIFEST).write_text(json.dumps({"format": distributed.FORMAT, "model": "default",
                                                        "model_sha256": "0" * 64, "complete": True, "parts": []}))
    with pytest.raises(distributed.SongfeatError, match="another model"):
        distributed.analyze_to_parquet([folder], out)


def test_a_folder_that_is_not_a_model_fails_before_any_work(folder, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("not a bundle\n")
    with pytest.raises(distributed.SongfeatError):
        distributed.analyze_to_parquet([folder], tmp_path / "out", model=tmp_path / "m")


def test_a_table_with_empty_or_nul_path_cells_refuses_those_rows_and_keeps_the_rest(folder, tmp_path):
    table = tmp_path / "tracks.csv"
    table.write_bytes(f"path,label\n{folder}/clip0.wav,a\n,b\nNaN,c\nclip\x001.wav,d\n{folder}/clip1.wav,e\n".encode())
    rows, refused = distributed.list_inputs([table])
    assert list(rows["path"]) == [str(folder / "clip0.wav"), str(folder / "clip1.wav")]  # not <folder>/nan
    assert list(rows["label"]) == ["a", "e"]
    assert refused == [f"{table}: row 2: no path (an empty cell)", f"{table}: row 3: no path (an empty cell)",
                       f"{table}: row 4: path holds a NUL byte"]


def test_a_parquet_path_column_that_is_not_text_is_one_clear_error(tmp_path):
    table = tmp_path / "tracks.parquet"
    pq.write_table(pa.table({"path": [b"a.wav", b"b.wav"]}), table)
    with pytest.raises(distributed.SongfeatError, match=r"tracks.parquet: the path column holds bytes values"):
        distributed.list_inputs([table])


def test_a_file_name_that_is_not_utf8_is_refused_not_a_traceback(folder, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    os.link(folder / "clip0.wav", os.path.join(os.fsencode(d), b"caf\xe9.wav"))
    os.link(folder / "clip1.wav", d / "plain.wav")
    rows, refused = distributed.list_inputs([d])
    assert list(rows["path"]) == [str(d / "plain.wav")]
    assert len(refused) == 1 and "caf\\xe9.wav: file name is not UTF-8" in refused[0]
    pa.Table.from_pandas(rows)  # the rest still travels as Arrow text


def test_an_output_that_cannot_be_made_or_a_foreign_manifest_is_one_clear_error(folder, tmp_path):
    with pytest.raises(distributed.SongfeatError, match="cannot create the output folder"):
        distributed.analyze_to_parquet([folder], folder / "clip0.wav" / "features")  # a parent that is a file
    out = tmp_path / "features"
    out.mkdir()
    (out / distributed.MANIFEST).write_text("[1, 2]")
    with pytest.raises(distributed.SongfeatError, match="unreadable manifest"):
        distributed.analyze_to_parquet([folder], out)


@pytest.mark.parametrize("name", ["..", "x" * 300 + ".wav", "a\x00b.wav"])
def test_a_bytes_row_whose_name_cannot_be_a_file_name_is_still_spilled(tmp_path, name):
    spilled = Path(distributed._spill(tmp_path / "0", name, b"RIFF"))
    assert spilled.parent == tmp_path / "0" and spilled.read_bytes() == b"RIFF"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_nothing_listens_is_one_line_not_a_hang(folder, tmp_path):
    # ray.init retried such an address for ever, a warning every few seconds; so did a dead RAY_ADDRESS without --address
    port = _free_port()
    base = [sys.executable, "-m", "songfeat.cli", "analyze", str(folder / "clip0.wav"), "--engine", "ray",
            "--format", "parquet", "--output", str(tmp_path / "features")]
    for extra, env in ((["--address", f"127.0.0.1:{port}"], {}), ([], {"RAY_ADDRESS": f"127.0.0.1:{port}"})):
        try:
            p = subprocess.run(base + extra, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still trying to join 127.0.0.1:{port} after 60 s")
        assert p.returncode == 2, p.stderr[-2000:]
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("songfeat: error: could not join a Ray cluster at ") and \
            f":{port} (Connection refused)" in lines[0], p.stderr[-2000:]
        assert not (tmp_path / "features").exists()


def test_a_symlink_keeps_its_own_name_so_its_id_comes_from_it(folder, tmp_path):
    # the Ray engine resolved links: '<spotify id>.wav' -> clip0.wav got clip0's path and a content id, unlike locally
    d = tmp_path / "links"
    d.mkdir()
    link = d / "4uLU6hMCjMI75M1A2tKUQC.wav"
    link.symlink_to(folder / "clip0.wav")
    table = tmp_path / "tracks.csv"
    table.write_text("path\nlinks/4uLU6hMCjMI75M1A2tKUQC.wav\n")
    assert list(distributed.list_inputs([d])[0]["path"]) == [str(link)]
    assert list(distributed.list_inputs([table])[0]["path"]) == [str(link)]


def test_few_tracks_start_no_idle_actors(cluster, folder, tmp_path, recwarn):
    # a part with fewer batches than --workers started an actor per worker anyway: each idle one loaded the model on a
    # CPU the busy one needed, and Ray printed a UserWarning about the unused actors on the terminal
    link = tmp_path / "4uLU6hMCjMI75M1A2tKUQC.wav"
    link.symlink_to(folder / "clip0.wav")
    report = distributed.analyze_to_parquet([link], tmp_path / "features", concurrency=2)
    assert (report.written, report.errors) == (1, [])
    assert not [w for w in recwarn if "concurrent actors" in str(w.message)], [str(w.message) for w in recwarn]
    (row,) = distributed.read_output(tmp_path / "features").to_pylist()
    assert (row["path"], row["id"]) == (str(link), "4uLU6hMCjMI75M1A2tKUQC")  # as `songfeat analyze` names it


def test_inputs_with_no_audio_are_one_clear_error_and_make_no_output(cluster, tmp_path):
    # an empty or mistyped folder ended with 'wrote 0 tracks' and exit 0, where `songfeat analyze` says so and fails
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not audio\n")
    with pytest.raises(distributed.SongfeatError, match="no audio files found in .*empty"):
        distributed.analyze_to_parquet([tmp_path / "empty"], tmp_path / "features")
    assert not (tmp_path / "features").exists()


def test_the_cli_summary_counts_refused_inputs_and_an_interrupted_join_wrote_nothing(cluster, folder, tmp_path,
                                                                                      monkeypatch):
    # a missing input printed its error line, then "wrote 1 tracks ... 0 errors", then exited 1; and Ctrl-C while Ray
    # was still starting said "committed parts are kept in <output>" of a folder that did not exist
    out = tmp_path / "o"
    base = ["analyze", "--engine", "ray", "--format", "parquet", "--output", str(out)]
    res = CliRunner().invoke(app, base + [str(folder / "clip0.wav"), str(tmp_path / "nothere.wav")])
    assert res.exit_code == 1, res.output
    assert "0 errors; 1 input refused;" in res.stderr and "nothere.wav" in res.stderr

    def interrupted(address=None, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "init", interrupted)
    res = CliRunner().invoke(app, base[:-1] + [str(tmp_path / "p"), str(folder)])
    assert res.exit_code == 130
    assert res.stderr.strip() == "songfeat: error: interrupted before the Ray cluster was ready; nothing was written"
    assert not (tmp_path / "p").exists()


def test_rays_info_lines_stay_off_the_users_stderr(folder, tmp_path):
    # a one-file run printed ~15 lines of Ray's own INFO logging (cluster start, the Dataset's plan, progress logged
    # line by line when not on a terminal) around songfeat's two lines
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(folder / "clip0.wav"), "--engine", "ray",
                        "--format", "parquet", "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "INFO " not in p.stderr, p.stderr
    assert "Token authentication is enabled" not in p.stderr, p.stderr  # Ray's news for the cluster's operator
    # and nothing but songfeat's own lines: the driver's core worker printed a core_worker.cc error line about Ray
    # Data's actor pool ("has constructor arguments in the object store") on every run
    lines = p.stderr.splitlines()
    assert len(lines) == 2 and lines[0] == "songfeat: part 1/1 committed: 1 track (0 errors)", p.stderr
    assert lines[1].startswith(f"wrote 1 track to {tmp_path / 'o'} (0 of 1 already there; 0 errors; "), p.stderr
    p = subprocess.run(p.args, capture_output=True, text=True, timeout=300)  # a rerun: said "all 1 tracks are"
    assert (p.returncode, p.stderr) == (0, f"nothing left to do: the 1 track is already in {tmp_path / 'o'}\n"), p.stderr


def test_a_bad_output_or_empty_input_is_refused_before_ray_starts(folder, tmp_path, monkeypatch):
    # the CLI started (or joined) a cluster first, so each of these waited ~7 s for Ray before its one-line error
    import fcntl

    calls = []
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: calls.append(address))
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "held").mkdir()  # an output another run is writing (and one under a file, below) waited for Ray too
    held = os.open(tmp_path / "held" / distributed.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    base = ["analyze", "--engine", "ray", "--format", "parquet", "--output"]
    for args, message in (([str(afile), str(folder)], "exists and is not a folder"),
                          ([str(tmp_path / "o"), str(tmp_path / "empty")], "no audio files found"),
                          ([str(tmp_path / "o"), str(folder), "--model", str(tmp_path / "empty")], "not a model bundle"),
                          ([str(afile / "o"), str(folder)], "cannot create the output folder"),
                          ([str(tmp_path / "held"), str(folder)], "another run is writing this output")):
        res = CliRunner().invoke(app, base + args)
        assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    os.close(held)
    assert calls == [] and not (tmp_path / "o").exists()


def test_build_on_ray_checks_its_labels_before_ray_starts(folder, tmp_path, monkeypatch):
    # build --engine ray started (or joined) a cluster before reading its labels: a missing table waited ~7 s for Ray
    calls = []
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: calls.append(address))
    res = CliRunner().invoke(app, ["build", "--labels", str(tmp_path / "nope.csv"), "--audio", str(folder),
                                   "--out", str(tmp_path / "s"), "--engine", "ray"])
    assert res.exit_code != 0 and "nope.csv" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert calls == []


def test_timeout_is_refused_on_ray_and_resume_is_what_it_always_does(folder, tmp_path, monkeypatch):
    # `analyze --engine ray --timeout 60` (and build's) ran without a word and without a limit, as Ray has none: the
    # user believed in one that was not there. Refused now, before Ray starts; --timeout 0 (no limit, what Ray does) and
    # --resume (Ray always skips what is written) go on to start Ray, here a stand-in interrupted at once.
    def interrupted(address=None, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "init", interrupted)
    refused = ("songfeat: error: --timeout is for the local engine: Ray has no per-{0} time limit yet, a {0} that hangs "
               "holds its actor until the run is stopped (docs/scaling.md); leave --timeout out, or give --timeout 0\n")
    out = tmp_path / "o"
    base = ["analyze", str(folder), "--engine", "ray", "--format", "parquet", "--output", str(out)]
    for extra in (["--timeout", "60"], ["--timeout", "120", "--resume"]):
        res = CliRunner().invoke(app, base + extra)
        assert (res.exit_code, res.stderr) == (2, refused.format("file")), res.output
    for extra in (["--timeout", "0"], ["--resume"]):
        res = CliRunner().invoke(app, base + extra)
        assert res.exit_code == 130 and "interrupted before the Ray cluster was ready" in res.stderr, res.output
    assert not out.exists()
    labels = tmp_path / "l.csv"
    labels.write_text("track_id,danceability\n" + "".join(f"clip{i},0.5\n" for i in range(GOOD)))
    base = ["build", "--labels", str(labels), "--audio", str(folder), "--out", str(tmp_path / "s"), "--engine", "ray"]
    res = CliRunner().invoke(app, base + ["--timeout", "30"])
    assert (res.exit_code, res.stderr) == (2, refused.format("clip")), res.output
    res = CliRunner().invoke(app, base + ["--timeout", "0"])
    assert res.exit_code == 130 and res.stderr.startswith("songfeat: error: interrupted"), res.output


def test_the_walks_notes_are_warnings_on_ray_too(tmp_path):
    # list_inputs dropped scan_inputs' notes: a folder link already walked was said by the local engine, not by Ray's
    import os
    import shutil

    d = tmp_path / "music"
    d.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "fma-000002.mp3", d / "x.mp3")
    os.symlink(d, d / "again")
    notes: list[str] = []
    rows, refused = distributed.list_inputs([d], notes=notes)
    assert len(rows) == 1 and refused == [] and len(notes) == 1 and "already walked" in notes[0], notes


class Written:
    """What analyze_dataset returns, faked: its write_parquet makes one committed-able file of two rows."""

    def write_parquet(self, path, **_):
        os.makedirs(path)
        rows = {"path": ["a.wav", "b.wav"], "id": ["a", "b"], "error": [None, None]}
        pq.write_table(pa.table(rows), f"{path}/0.parquet")


def fake_chunks(monkeypatch, analysed) -> None:
    """Run analyze_to_parquet's chunks without a cluster: each chunk's Dataset is its rows, and `analysed` stands in for
    analyze_dataset (returning a `Written`, say)."""
    monkeypatch.setattr(distributed, "_listed_run", lambda ray, rows, batch_size, actors, **kw: (rows, actors))
    monkeypatch.setattr(distributed, "analyze_dataset", analysed)


def test_a_run_that_fails_before_committing_a_part_leaves_no_folders_it_made(folder, tmp_path, monkeypatch):
    """`analyze --engine ray -o new/o` made new/o (with its manifest and lock) before the work and left it behind when
    the run then failed or was interrupted before a part was committed; Ctrl-C then said "committed parts are kept in"
    it. Nothing is left now, and it says nothing was written; a committed part keeps the folder, and one already there
    is left as it was. (No cluster: the chunks' Datasets are faked, and so is their analysis.)"""
    runs = []

    def analysed(*_a, **_k):
        runs.append(1)
        if len(runs) in fail_at:
            raise fail_with
        return Written()

    fake_chunks(monkeypatch, analysed)
    kw = dict(chunk_size=2, concurrency=1)
    out = tmp_path / "new" / "o"
    for fail_with in (KeyboardInterrupt(), RuntimeError("an actor died")):
        fail_at, runs[:] = {1}, []
        with pytest.raises(type(fail_with)):
            distributed.analyze_to_parquet([folder], out, **kw)
        assert list(tmp_path.iterdir()) == [], fail_with
    (tmp_path / "there").mkdir()
    fail_at, runs[:] = {1}, []
    with pytest.raises(RuntimeError):
        distributed.analyze_to_parquet([folder], tmp_path / "there", **kw)
    assert (tmp_path / "there").is_dir()  # not made by this run: kept, as resumable as before
    fail_at, runs[:] = {2}, []
    with pytest.raises(RuntimeError):  # the second chunk fails: the first is committed, and kept with its folders
        distributed.analyze_to_parquet([folder], out, **kw)
    assert distributed.committed(out) and len(list(out.glob("part-*"))) == 1

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "analyze_dataset", interrupted)
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: None)
    base = ["analyze", "--engine", "ray", "--format", "parquet", str(folder), "--chunk-size", "2", "-j", "1", "--output"]
    res = CliRunner().invoke(app, base + [str(tmp_path / "cli" / "o")])
    assert res.exit_code == 130 and res.stderr.strip() == (f"songfeat: error: interrupted before any part was committed; "
                                                           f"nothing was written to {tmp_path / 'cli' / 'o'}"), res.stderr
    assert not (tmp_path / "cli").exists()
    res = CliRunner().invoke(app, base + [str(out)])
    assert res.exit_code == 130 and "committed parts are kept in" in res.stderr, res.stderr


def test_a_full_disk_mid_run_is_one_line_and_status_1(folder, tmp_path, monkeypatch):
    """A full disk under Ray's Parquet writer (its task's RayTaskError(OSError) reaches the driver) ended `analyze
    --engine ray` in a ~370-line traceback; it is one line with status 1 (a write that failed once the work was under
    way), saying what was kept. (No cluster: the chunks are faked, the second one's write fails.)"""
    import errno

    enospc = OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    full = ray.exceptions.RayTaskError("Write", "(the worker's traceback)", enospc).as_instanceof_cause()

    class Full(Written):
        def write_parquet(self, path, **_):
            raise full

    chunks = []
    fake_chunks(monkeypatch, lambda *_a, **_k: chunks.append(1) or (Full() if len(chunks) == fail_at else Written()))
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: None)
    out = tmp_path / "o"
    cmd = ["analyze", "--engine", "ray", "--format", "parquet", str(folder), "--chunk-size", "2", "-j", "1", "-o", str(out)]
    for fail_at, kept in ((1, "nothing was written"), (2, "committed parts are kept; rerun the same command to continue")):
        chunks.clear()
        res = CliRunner().invoke(app, cmd)
        assert res.exit_code == 1, res.output
        *parts, last = res.stderr.strip().splitlines()
        assert last == f"songfeat: error: {out}: cannot write (No space left on device); {kept}", res.stderr
        assert len(parts) == fail_at - 1 and all(p.startswith("songfeat: part ") for p in parts), res.stderr
        assert out.exists() == (fail_at == 2)
    assert len(distributed.read_manifest(out)["parts"]) == 1


class Rows:
    """What analyze_dataset returns, faked: its write_parquet writes one row per listed track (the chunk's rows)."""

    def __init__(self, rows):
        self.paths = list(rows["path"])

    def write_parquet(self, path, **_):
        os.makedirs(path)
        pq.write_table(pa.table({"path": self.paths, "id": [Path(p).stem for p in self.paths],
                                 "error": pa.array([None] * len(self.paths), pa.string())}), f"{path}/0.parquet")


def test_a_rerun_with_nothing_left_to_do_starts_no_ray(folder, tmp_path, monkeypatch):
    """A rerun of a finished job started (or joined) a Ray cluster, ~6-7 s, to write nothing; it is one line and status
    0 now, without Ray, and a job killed after its last part (the manifest not yet complete) is marked complete. (No
    cluster: the first run's chunks are faked.)"""
    fake_chunks(monkeypatch, lambda ds, *_a, **_k: Rows(ds))
    out = tmp_path / "o"
    distributed.analyze_to_parquet([folder], out, chunk_size=4, concurrency=1)
    calls = []
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: calls.append(address))
    monkeypatch.setattr(distributed, "analyze_dataset", lambda *_a, **_k: pytest.fail("analysed again"))
    m = distributed.read_manifest(out)
    (out / distributed.MANIFEST).write_text(json.dumps({**m, "complete": False}))  # killed before the last write
    res = CliRunner().invoke(app, ["analyze", str(folder), "--engine", "ray", "--format", "parquet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stderr == f"nothing left to do: all {GOOD + 2} tracks are already in {out}\n"
    assert calls == []
    m = distributed.read_manifest(out)
    assert m["complete"] and m["rows"] == GOOD + 2 and len(m["parts"]) == 2


def interrupt(*_a, **_k):
    raise KeyboardInterrupt


def test_rays_own_log_lines_are_off_the_terminal_unless_verbose(folder, tmp_path, monkeypatch, capfd):
    """Ray's C++ core printed its error notes (core_worker.cc, on every run) and Ray Data its ERROR lines with a failed
    task's traceback (~180 lines for a full disk) above songfeat's one line; --verbose gives them back. (ray.init
    faked: what it is started with, and what its driver prints while starting.)"""
    import logging

    seen = []

    def fake_init(address=None, **kwargs):
        os.write(2, b"logging.cc:303: Set ray log level from environment variable RAY_BACKEND_LOG_LEVEL\n")
        seen.append((os.environ.get("RAY_BACKEND_LOG_LEVEL"), kwargs.get("log_to_driver")))

    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    failed = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
    levels = {h: h.level for h in distributed._ray_console_handlers()}
    try:
        distributed.init()
        failed.error("An exception was raised from a task of operator \"Write\"")
        assert seen == [("fatal", False)] and "RAY_BACKEND_LOG_LEVEL" not in os.environ
        assert capfd.readouterr().err == ""
    finally:
        for h, level in levels.items():
            h.setLevel(level)
    distributed.init(verbose=True)
    assert seen[-1] == (None, True) and "Set ray log level" in capfd.readouterr().err

    calls = []
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: calls.append(kw))
    monkeypatch.setattr(distributed, "analyze_dataset", interrupt)
    CliRunner().invoke(app, ["analyze", str(folder), "--engine", "ray", "--format", "parquet", "-o", str(tmp_path / "o"),
                             "--verbose", "--chunk-size", "2", "-j", "1"])
    assert calls == [{"verbose": True}]


def test_quieting_ray_leaves_handlers_that_are_not_rays_alone():
    # under pytest "ray.data" also held the log-capturing handlers, and quieting Ray set them to CRITICAL + 1: every later
    # test's caplog was empty (two serve tests failed in CI, only after this module ran)
    import io
    import logging

    foreign = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("ray.data")
    logger.addHandler(foreign)
    try:
        distributed._quiet(ray)
        assert foreign.level == logging.NOTSET
    finally:
        logger.removeHandler(foreign)


def test_leaving_ray_holds_off_ctrl_c_and_both_commands_leave_it_before_their_last_line(folder, tmp_path, monkeypatch):
    """Left to Ray's exit-time shutdown (~2 s after a run's last line), a Ctrl-C then printed a traceback ("Exception
    ignored in atexit callback ... KeyboardInterrupt"), ended the command by SIGSEGV instead of its status, and left
    Ray's agents and idle actors running. The commands leave Ray themselves now, with Ctrl-C ignored meanwhile, however
    the work ended. (ray.shutdown faked: a Ctrl-C arrives while it runs.)"""
    import signal

    seen = []

    def stopping():
        os.kill(os.getpid(), signal.SIGINT)  # a KeyboardInterrupt here unless it is ignored
        seen.append(signal.getsignal(signal.SIGINT))

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "shutdown", stopping)
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(distributed, "_joined", False)
    distributed.shutdown()
    assert seen == []  # a session songfeat did not begin (the caller's, the cluster fixture's) is left alone
    monkeypatch.setattr(distributed, "_joined", True)
    distributed.shutdown()
    assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is handler

    left = []
    monkeypatch.setattr(distributed, "shutdown", lambda: left.append(1))
    monkeypatch.setattr(distributed, "init", lambda address=None, **kw: None)
    fake_chunks(monkeypatch, lambda ds, *_a, **_k: Rows(ds))
    base = ["analyze", str(folder), "--engine", "ray", "--format", "parquet", "--chunk-size", "4", "-j", "1", "-o"]
    res = CliRunner().invoke(app, base + [str(tmp_path / "o")])
    assert res.exit_code == 0 and res.stderr.splitlines()[-1].startswith("wrote 7 tracks"), res.output
    assert left == [1]
    monkeypatch.setattr(distributed, "analyze_dataset", interrupt)
    res = CliRunner().invoke(app, base + [str(tmp_path / "p")])
    assert res.exit_code == 130 and left == [1, 1], res.output

    from songfeat.data import store

    monkeypatch.setattr(distributed, "clip_runner", lambda concurrency=None, join=None: "runner")
    monkeypatch.setattr(store, "build_store", lambda *a, **k: interrupt())
    res = CliRunner().invoke(app, ["build", "--labels", str(tmp_path / "l.csv"), "--audio", str(folder), "--out",
                                   str(tmp_path / "s"), "--engine", "ray"])
    assert res.exit_code == 130 and left == [1, 1, 1], res.output
