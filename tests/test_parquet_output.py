"""`songfeat analyze --format parquet` on the local engine: one row per track in the shared schema, resumable."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from songfeat.cli import app
from songfeat.output import PARQUET_COLUMNS, ResultWriter, parquet_schema


def test_local_parquet_has_the_shared_schema_and_error_rows(example_clip, tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_text("not audio\n")
    out = tmp_path / "f.parquet"
    res = CliRunner().invoke(app, ["analyze", str(example_clip), str(bad), "--format", "parquet", "--output", str(out)])
    assert res.exit_code == 1  # one bad file
    t = pq.read_table(out)
    assert t.schema.equals(parquet_schema()) and t.column_names == list(PARQUET_COLUMNS)
    rows = {r["path"]: r for r in t.to_pylist()}
    assert rows[str(example_clip)]["error"] is None and 0 <= rows[str(example_clip)]["energy"] <= 1
    assert rows[str(bad)]["error"].startswith(f"{bad}: ") and rows[str(bad)]["energy"] is None
    assert rows[str(bad)]["id"] and rows[str(bad)]["type"] == "audio_features"  # named by its content hash
    assert not out.with_name(out.name + ".partial").exists()


def test_parquet_needs_an_output_file(example_clip):
    res = CliRunner().invoke(app, ["analyze", str(example_clip), "--format", "parquet"])
    assert res.exit_code == 2 and "needs --output" in res.output


def test_an_interrupted_parquet_batch_resumes_from_its_partial(example_clip, tmp_path):
    out = tmp_path / "f.parquet"
    done = {c: None for c in PARQUET_COLUMNS} | {"path": "/earlier/song.mp3", "id": "x", "energy": 0.5, "tempo_alternatives": [60.0]}
    out.with_name(out.name + ".partial").write_text(json.dumps(done) + "\n" + '{"path": "/torn/li')  # killed mid-line
    w = ResultWriter("parquet", out, resume=True)
    assert w.done == {"/earlier/song.mp3"}
    w.release()  # the output's lock: this writer only looked, the run below writes
    res = CliRunner().invoke(app, ["analyze", str(example_clip), "--format", "parquet", "--output", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    assert t.column("path").to_pylist() == ["/earlier/song.mp3", str(example_clip)]
    assert t.to_pylist()[0]["tempo_alternatives"] == [60.0] and t.to_pylist()[0]["energy"] == 0.5


def test_resume_refuses_a_parquet_output_it_cannot_read_and_leaves_it_alone(tmp_path):
    # an unreadable Parquet, or another tool's table, read as "nothing done": the batch's own file then replaced it
    import os

    import pyarrow as pa
    import pytest

    from songfeat.errors import SongfeatError

    foreign = tmp_path / "theirs.parquet"
    pq.write_table(pa.table({"track": ["a", "b"], "rating": [5, 3]}), foreign)
    damaged = tmp_path / "cut.parquet"
    damaged.write_bytes(foreign.read_bytes()[:-40])
    typed = tmp_path / "typed.parquet"  # a partial whose values cannot become the schema's columns
    typed.with_name("typed.parquet.partial").write_text(json.dumps({"path": "/a.mp3", "energy": "high"}) + "\n")
    for out in (foreign, damaged, typed):
        before = out.read_bytes() if out.exists() else None
        with pytest.raises(SongfeatError) as err:
            ResultWriter("parquet", out, resume=True)
        assert "--resume cannot continue" in str(err.value) and "\n" not in str(err.value)
        assert (out.read_bytes() if out.exists() else None) == before
    assert sorted(os.listdir(tmp_path)) == ["cut.parquet", "theirs.parquet", "typed.parquet.partial"]


def test_parquet_rows_of_names_that_are_not_utf8_are_written_and_resumed(tmp_path):
    # pyarrow refused the name's surrogate escapes at the end of the batch (ArrowInvalid, a traceback): nothing written
    import os

    name = os.fsdecode(b"/music/caf\xe9.mp3")
    out = tmp_path / "f.parquet"
    w = ResultWriter("parquet", out)
    w.write({"path": name, "id": "x", "energy": 0.5, "error": None})
    w.write({"path": "/b.mp3", "id": "y", "error": f"{name}: not a readable audio file"})
    w.close()
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["path"] == "/music/caf\\xe9.mp3" and rows[1]["error"].startswith("/music/caf\\xe9.mp3: ")
    assert name in ResultWriter("parquet", out, resume=True).done


def test_resume_tries_again_the_files_that_failed(example_clip, tmp_path):
    # an error row's path counted as done: a file fixed since (or one that timed out) was never tried again by --resume,
    # as it is in the other formats, which write no row for a failure
    import shutil

    song = tmp_path / "song.mp3"
    song.write_text("not audio yet\n")
    out = tmp_path / "f.parquet"
    res = CliRunner().invoke(app, ["analyze", str(example_clip), str(song), "--format", "parquet", "--output", str(out)])
    assert res.exit_code == 1
    shutil.copyfile(example_clip, song)  # fixed
    res = CliRunner().invoke(app, ["analyze", str(example_clip), str(song), "--format", "parquet", "--output", str(out),
                                   "--resume"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    assert [r["path"] for r in rows] == [str(example_clip), str(song)]  # one row each: the error row is gone
    assert rows[1]["error"] is None and rows[1]["energy"] == rows[0]["energy"]
