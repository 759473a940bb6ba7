"""Writing analysis results as JSON, JSON Lines, CSV or Parquet: atomically, and resumably for long batches.

A batch written to a file goes to `<file>.partial` line by line (flushed as each song finishes)
and is renamed onto `<file>` when the batch ends, so a reader never sees half a file. With
`resume=True`, songs already in `<file>.partial` (or in `<file>` itself) are skipped and the rest
appended: an interrupted hour-long batch loses at most the song in flight. Parquet cannot be
appended to, so its `.partial` is JSON Lines, converted into one Parquet file at the end.

Parquet rows (both engines, local and Ray) share one schema, `parquet_schema()`: `path`, every
Spotify key, the extras, and `error` (set, with every feature null, for a file that failed).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO

from .analyze import EXTRA_KEYS
from .features import SPOTIFY_KEYS

FORMATS = ("json", "jsonl", "csv", "parquet")
CSV_COLUMNS = ("path",) + SPOTIFY_KEYS + EXTRA_KEYS
PARQUET_COLUMNS = ("path",) + SPOTIFY_KEYS + EXTRA_KEYS + ("error",)
_INT_KEYS = ("key", "mode", "time_signature", "duration_ms")
_STR_KEYS = ("type", "id", "uri", "track_href", "analysis_url", "key_name", "camelot")


def parquet_schema():
    """The Arrow schema of a Parquet row, shared by the local and the Ray engine so both write the same file."""
    import pyarrow as pa

    def kind(name: str):
        if name in ("path", "error") or name in _STR_KEYS:
            return pa.string()
        if name in _INT_KEYS:
            return pa.int64()
        if name == "tempo_alternatives":
            return pa.list_(pa.float64())
        return pa.float64()

    return pa.schema([pa.field(c, kind(c)) for c in PARQUET_COLUMNS])


def error_record(path: str | Path, error: str) -> dict:
    """The row of a file that failed: its path, the error, the identity when the file can be read, no features."""
    from .analyze import track_identity

    rec: dict = dict.fromkeys(PARQUET_COLUMNS)
    rec.update(path=str(path), type="audio_features", error=error)
    if os.path.isfile(path):  # a regular file only: reading a FIFO or a device could block
        try:
            rec.update(track_identity(path))
        except OSError:  # unreadable: no content hash to name it by
            pass
    return rec


def outcome_record(path: str | Path, features: dict | None, error: str | None) -> dict:
    """One Parquet row from an analysis outcome (features, or the error that stopped it)."""
    if error is not None or features is None:
        return error_record(path, error or "no features")
    return {"path": str(path), **features, "error": None}


def records_table(records: list[dict]):
    """Rows as an Arrow table in `parquet_schema()` (missing keys become nulls, extra keys are dropped)."""
    import pyarrow as pa

    schema = parquet_schema()
    return pa.Table.from_pylist([{k: r.get(k) for k in PARQUET_COLUMNS} for r in records], schema=schema)


def _parquet_records(path: Path) -> list[dict]:
    """Rows of a finished Parquet output, for resuming; [] if none or unreadable."""
    if not path.is_file():
        return []
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception:  # not a Parquet file we wrote: start afresh rather than fail
        return []


def _csv_row(record: dict) -> dict:
    row = {k: record.get(k) for k in CSV_COLUMNS}
    alts = row.get("tempo_alternatives")
    if isinstance(alts, list):
        row["tempo_alternatives"] = ";".join(f"{a:g}" for a in alts)
    return row


def done_paths(path: Path, fmt: str) -> list[dict]:
    """Records already written to `path` (JSON Lines or CSV), for resuming; [] if none or unreadable."""
    if not path.is_file() or fmt == "json":
        return []
    text = path.read_text()
    if fmt == "jsonl":
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: drop it, the song is redone
                break
        return out
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if r.get("id")]


class ResultWriter:
    """Streams records to stdout or atomically to a file in one of FORMATS."""

    def __init__(self, fmt: str, output: str | Path | None = None, resume: bool = False, single: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.fmt, self.single = fmt, single
        self.output = Path(output) if output else None
        self.partial = self.output.with_name(self.output.name + ".partial") if self.output else None
        if fmt == "parquet" and self.output is None:
            raise ValueError("--format parquet needs --output (Parquet is not written to a terminal)")
        self.previous: list[dict] = []
        if self.output and resume:
            if fmt == "parquet":
                self.previous = done_paths(self.partial, "jsonl") or _parquet_records(self.output)
            else:
                self.previous = done_paths(self.partial, fmt) or done_paths(self.output, fmt)
        self._records: list[dict] = list(self.previous) if fmt == "json" else []
        self._fh: IO[str] | None = None
        self._csv: csv.DictWriter | None = None

    @property
    def done(self) -> set[str]:
        """Paths already written by an earlier, interrupted run."""
        return {str(r.get("path")) for r in self.previous}

    def _open(self) -> IO[str]:
        if self._fh is None:
            if self.output is None:
                import sys

                self._fh = sys.stdout
            else:
                self.output.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.partial, "w", newline="")
            if self.fmt == "csv":
                self._csv = csv.DictWriter(self._fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                self._csv.writeheader()
            for r in self.previous if self.fmt != "json" else ():
                self._emit(r)
        return self._fh

    def _emit(self, record: dict) -> None:
        if self.fmt in ("jsonl", "parquet"):  # parquet: JSON Lines in .partial until close
            if self.fmt == "parquet":
                record = {k: record.get(k) for k in PARQUET_COLUMNS}
            self._fh.write(json.dumps(record) + "\n")
        else:
            self._csv.writerow(_csv_row(record))
        self._fh.flush()

    def write(self, record: dict) -> None:
        """Add one song's record (JSON keeps them until close; the other formats write at once)."""
        if self.fmt == "json":
            self._records.append(record)
            return
        self._open()
        self._emit(record)

    def close(self) -> None:
        """Finish the output: print/write JSON, then move the partial file onto its final name."""
        if self.fmt == "json":
            doc = self._records[0] if self.single and len(self._records) == 1 else self._records
            fh = self._open()
            fh.write(json.dumps(doc, indent=2) + "\n")
        elif self._fh is None:
            self._open()
        if self.output is not None and self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            if self.fmt == "parquet":
                self._partial_to_parquet()
            else:
                os.replace(self.partial, self.output)
        self._fh = None

    def _partial_to_parquet(self) -> None:
        """Convert the JSON Lines partial into the Parquet output (via a temporary file), then drop the partial."""
        import pyarrow.parquet as pq

        tmp = self.output.with_name(f".{self.output.name}.tmp{os.getpid()}")
        pq.write_table(records_table(done_paths(self.partial, "jsonl")), tmp)
        os.replace(tmp, self.output)
        self.partial.unlink()
