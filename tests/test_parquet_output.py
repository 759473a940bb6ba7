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
    res = CliRunner().invoke(app, ["analyze", str(example_clip), "--format", "parquet", "--output", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    assert t.column("path").to_pylist() == ["/earlier/song.mp3", str(example_clip)]
    assert t.to_pylist()[0]["tempo_alternatives"] == [60.0] and t.to_pylist()[0]["energy"] == 0.5
