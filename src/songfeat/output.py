"""Writing analysis results as JSON, JSON Lines, CSV or Parquet: atomically, and resumably for long batches.

A batch written to a file goes to `<file>.partial` line by line (flushed as each song finishes)
and is renamed onto `<file>` when the batch ends, so a reader never sees half a file. With
`resume=True`, songs already in `<file>.partial` (or in `<file>` itself) are skipped and the rest
appended: an interrupted hour-long batch loses at most the song in flight. JSON and Parquet cannot
be appended to, so their `.partial` is JSON Lines, converted into the one document at the end.
An output --resume cannot read as songfeat's own (another format, another tool's columns, a damaged
file) or whose rows name another model (`model`, see `bundle.model_id`) is refused rather than replaced, and so is
an --output that is a folder, a device or an audio file. A file already written is known by its real path too.
A run writing a file holds `<file>.lock` (flock) from its start to its end, so a second run with the same --output is
refused at once rather than interleaving its rows with the first's.

Parquet rows (both engines, local and Ray) share one schema, `parquet_schema()`: `path`, every
Spotify key, the extras, `model`, and `error` (set, with every feature null, for a file that failed).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from . import atomic
from .analyze import EXTRA_KEYS
from .audio import AUDIO_EXTENSIONS
from .errors import SongfeatError, existing_ancestor
from .features import SPOTIFY_KEYS

FORMATS = ("json", "jsonl", "csv", "parquet")
# what an --output's extension says to write when --format is not given
FORMAT_OF_SUFFIX = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
MODEL_KEY = "model"  # in batch rows: `bundle.model_id` of the model that wrote the row (--resume refuses another)
CSV_COLUMNS = ("path",) + SPOTIFY_KEYS + EXTRA_KEYS + (MODEL_KEY,)
PARQUET_COLUMNS = ("path",) + SPOTIFY_KEYS + EXTRA_KEYS + (MODEL_KEY, "error")
_INT_KEYS = ("key", "mode", "time_signature", "duration_ms")
_STR_KEYS = ("type", "id", "uri", "track_href", "analysis_url", "key_name", "camelot")


class OutputError(SongfeatError, OSError):
    """An output that cannot be written or resumed from: a SongfeatError naming the file, and an OSError for
    callers that catch failed writes (`songfeat analysis` prints '<file>: cannot write (<reason>)')."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(path, reason)
        self.strerror = reason


def utf8_text(value):
    """`value` as text CSV and Parquet can hold: a file name that is not UTF-8 gets its stray bytes as \\xNN."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:  # os.fsdecode's surrogate escapes: the name's own bytes
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


class _Paths(set):
    """Paths already written; a name that is not UTF-8 also matches the text CSV and Parquet stored it as, and a file
    named another way (relative against absolute, through a symlink) matches by its real path."""

    def __init__(self, paths=()):
        super().__init__(paths)
        self._real = {r for r in map(_realpath, self) if r is not None}

    def __contains__(self, path) -> bool:
        if set.__contains__(self, path) or (isinstance(path, str) and set.__contains__(self, utf8_text(path))):
            return True
        real = _realpath(path)
        return real is not None and real in self._real


def _realpath(path) -> str | None:
    """`os.path.realpath(path)`, or None for what cannot name a file (a NUL inside, not a path at all)."""
    try:
        return os.path.realpath(path)
    except (TypeError, ValueError, OSError):
        return None


def parquet_schema():
    """The Arrow schema of a Parquet row, shared by the local and the Ray engine so both write the same file."""
    import pyarrow as pa

    def kind(name: str):
        if name in ("path", "error", MODEL_KEY) or name in _STR_KEYS:
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
    return pa.Table.from_pylist([{k: utf8_text(r.get(k)) for k in PARQUET_COLUMNS} for r in records], schema=schema)


def _strict(obj):
    """`obj` with every NaN or infinite float made None (null): JSON has no NaN, and strict readers refuse one; and
    every text as `utf8_text` gives it (a file name that is not UTF-8 carried lone surrogates, written as \\udcNN
    escapes, which strict readers refuse too)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return utf8_text(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def _dumps(obj, **kw) -> str:
    """Strict JSON text of `obj`: a non-finite number becomes null rather than the invalid token NaN, and a file name
    that is not UTF-8 gets its stray bytes as \\xNN (as in CSV and Parquet) rather than lone-surrogate escapes."""
    try:
        text = json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_strict(obj), allow_nan=False, **kw)
    return json.dumps(_strict(obj), allow_nan=False, **kw) if "\\udc" in text else text


def _foreign(path: Path, why: str) -> OutputError:
    """The error for an existing output --resume cannot read as songfeat's: it is kept, never replaced."""
    return OutputError(path, f"--resume cannot continue from it: {why}; move it away, or run without --resume to replace it")


def _read_text(path: Path) -> str:
    """A whole output file as text, line endings untouched (a name may hold a carriage return)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError:
        raise _foreign(path, "it is not UTF-8 text") from None
    except OSError as e:
        raise OutputError(path, f"cannot read it ({e.strerror or e})") from None


def _record(path: Path, rec, where: str) -> dict:
    """One earlier result, checked: an object naming its file in "path" (else the file is not a songfeat batch output)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not rec["path"]:
        raise _foreign(path, f"{where} is not a result with a \"path\"")
    return rec


def _jsonl_records(path: Path, text: str, need_path: bool = True) -> list[dict]:
    """Records of JSON Lines text; a last line without its newline that is not JSON was cut by a kill and is dropped.

    `need_path=False` reads this run's own partial, where a lone file's object has no "path".
    """
    check = _record if need_path else (lambda _path, rec, _where: rec)
    lines = text.split("\n")
    tail = lines.pop()  # "" when the text ends with a newline
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise _foreign(path, f"line {i} is not JSON") from None
        out.append(check(path, rec, f"line {i}"))
    if tail.strip():
        try:
            out.append(check(path, json.loads(tail), f"line {len(lines) + 1}"))
        except json.JSONDecodeError:  # the song in flight when the batch was killed: it is redone
            pass
    return out


def _json_records(path: Path, text: str) -> list[dict]:
    """Records of a finished JSON output: a list of results (a lone file's object carries no path to resume by)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _foreign(path, f"it is not JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(doc, dict) and "path" not in doc:
        raise _foreign(path, "it holds one track's object without its \"path\" (a lone file's output)")
    docs = doc if isinstance(doc, list) else [doc]
    return [_record(path, rec, f"item {i}") for i, rec in enumerate(docs, 1)]


def _csv_records(path: Path, text: str) -> list[dict]:
    """Rows of a CSV output with songfeat's columns; a last row without its newline was cut by a kill and is dropped."""
    if "\n" not in text:  # nothing, or a header cut short
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = reader.fieldnames or []
    other = [f for f in fields if f not in CSV_COLUMNS]
    if "path" not in fields or other:
        why = "no \"path\" column" if "path" not in fields else f"columns songfeat does not write: {', '.join(other[:3])}"
        raise _foreign(path, f"it is not CSV with songfeat's columns ({why})")
    rows = list(reader)
    if rows and not text.endswith("\n"):
        rows.pop()
    for i, r in enumerate(rows, 2):
        if None in r or None in r.values():
            raise _foreign(path, f"row {i} does not have the header's {len(fields)} fields")
        if not r["path"]:
            raise _foreign(path, f"row {i} has no path")
    return rows


def _parquet_records(path: Path) -> list[dict]:
    """Rows of a finished Parquet output with songfeat's columns, for resuming."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow says why in its own exception types
        raise _foreign(path, f"it is not a readable Parquet file ({str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__})") from None
    other = [c for c in table.column_names if c not in PARQUET_COLUMNS]
    if "path" not in table.column_names or other:
        raise _foreign(path, "it has no \"path\" column" if "path" not in table.column_names
                       else f"it has columns songfeat does not write ({', '.join(other[:3])})")
    return [_record(path, r, f"row {i}") for i, r in enumerate(table.to_pylist(), 1)]


def done_paths(path: Path, fmt: str) -> list[dict]:
    """Records already written to `path` in `fmt`, for resuming; [] if it is missing or empty.

    Raises OutputError for a file that is not songfeat's output in that format (it must not be replaced).
    """
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return []
    if not path.is_file():
        raise OutputError(path, "is not a regular file")
    if fmt == "parquet":
        return _parquet_records(path)
    text = _read_text(path)
    if not text.strip():
        return []
    try:
        return _TEXT_READERS[fmt](path, text)
    except OutputError:
        other = _text_format_of(path, text, fmt)
        if other is None:
            raise
    # an older songfeat wrote JSON into `-o features.csv`, whatever its name: say how to continue it
    rename = "" if FORMAT_OF_SUFFIX.get(path.suffix.lower()) == other else f" (or rename it to {path.stem}.{other})"
    how = ("add the --format the run was started with (json or jsonl)" if path.suffix == ".partial"
           else f"add --format {other}{rename}")
    raise _foreign(path, f"it holds songfeat's {_FORMAT_NAMES[other]} results, not {_FORMAT_NAMES[fmt]}; to continue it, "
                         f"{how}")


def _text_format_of(path: Path, text: str, fmt: str) -> str | None:
    """Which other of songfeat's text formats `text` reads as (None: none), for an output --resume cannot read as `fmt`."""
    for other in _TEXT_READERS:
        if other != fmt:
            with contextlib.suppress(OutputError, csv.Error):
                if _TEXT_READERS[other](path, text):
                    return other
    return None


# in the order _text_format_of tries them: JSON Lines first, as a one-line JSON Lines file is JSON too
_TEXT_READERS = {"jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records}
_FORMAT_NAMES = {"json": "JSON", "jsonl": "JSON Lines", "csv": "CSV", "parquet": "Parquet"}


def _csv_row(record: dict) -> dict:
    row = {k: utf8_text(record.get(k)) for k in CSV_COLUMNS}
    alts = row.get("tempo_alternatives")
    if isinstance(alts, list):
        row["tempo_alternatives"] = ";".join(f"{a:g}" for a in alts)
    return row


def check_output(output: Path, what: str = "the results", inputs: Iterable[str | Path] = ()) -> None:
    """Refuse an output the final rename would wreck or cannot make: a folder (or a path naming none, like '.'), a
    device or pipe, an existing audio file or one of `inputs` under any name (a link, song.dat), or a place with no
    writable folder (tried: a hidden entry is made and removed in the nearest folder that exists). Raises OutputError."""
    output = Path(output)
    try:
        st = output.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(output, f"cannot write it ({e.strerror or e})") from None
    if (st is not None and stat.S_ISDIR(st.st_mode)) or not output.name:
        raise OutputError(output, "is a folder, not a file to write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(output, f"is not a regular file (a device or a pipe); {what} are written aside and renamed onto it")
    if st is not None and output.suffix.lower() in AUDIO_EXTENSIONS:
        raise OutputError(output, f"is an audio file, which {what} would replace: name another file")
    if st is not None and any(_same_file(st, p) for p in inputs):
        raise OutputError(output, f"is an input audio file, which {what} would replace: name another file")
    folder = existing_ancestor(output.parent)
    if not folder.is_dir():
        raise OutputError(output, f"cannot write it ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(output, f"cannot write it (no permission to write in {folder})")
    try:  # os.access says yes to root everywhere (`--plot /proc/x.png` failed only after the work): an entry made proves it
        atomic.probe_folder(folder, "songfeat")
    except OSError as e:
        raise OutputError(output, f"cannot write it (nothing can be made in {folder}: {e.strerror or e})") from None


def _same_file(st: os.stat_result, path: str | Path) -> bool:
    """Whether `path` is the file `st` describes (by device and inode: a link or a second name is the same file)."""
    try:
        other = os.stat(path)
    except (OSError, ValueError):
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


class OutputLock(atomic.RunLock):
    """`atomic.RunLock` on `<output>.lock`, held while one run writes `<output>`: two runs with the same --output would
    both append to its `.partial`, and the second's rename would drop rows the first wrote. Raises OutputError naming
    `output` when another run holds it, or when the lock cannot be made there."""

    def __init__(self, output: Path):
        super().__init__(output, error=OutputError)


class ResultWriter:
    """Streams records to stdout or atomically to a file in one of FORMATS.

    Raises OutputError for an unusable --output (see `check_output`), one another run is writing (see `OutputLock`,
    held until close() or release()) and, with `resume`, for one it cannot read.
    """

    def __init__(self, fmt: str, output: str | Path | None = None, resume: bool = False, single: bool = False,
                 model: str | None = None, inputs: Iterable[str | Path] = ()):
        """`model`: the `bundle.model_id` written into every batch row, and the only one --resume continues from;
        `inputs`: the audio files being analysed, none of which the output may be."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.fmt, self.single = fmt, single
        self.output = Path(output) if output is not None and str(output) != "" else None
        if self.output is not None:
            check_output(self.output, inputs=inputs)  # before naming its .partial: '.' has no name to add to
        if self.output is not None and self.output.is_symlink():  # write through the link: the rename must not replace it
            self.output = Path(os.path.realpath(self.output))
        self.partial = self.output.with_name(self.output.name + ".partial") if self.output else None
        if fmt == "parquet" and self.output is None:
            raise ValueError("--format parquet needs --output (Parquet is not written to a terminal)")
        self.model = model
        self.previous: list[dict] = []
        # before the .partial is looked at: another run's rows there are not an interrupted run's
        self._lock = OutputLock(self.output) if self.output is not None else None
        try:
            if self.output and not resume and self.partial_has_rows:
                # writing would start it afresh: the songs an interrupted run finished would be lost without a word
                raise OutputError(self.partial, "holds the results of an interrupted run: add --resume to continue it, or "
                                                "delete it to start over")
            if self.output and resume:
                self.previous = done_paths(self.partial, self._line_format) or done_paths(self.output, fmt)
                if fmt == "parquet" and self.previous:
                    self._check_parquet(self.previous)
                self._check_model(self.previous)
                self._check_here(self.previous)
                # a file that failed is tried again, as in the other formats, whose failures are no rows at all: its
                # error row (Parquet's) is dropped, and the retry writes its row anew
                self.previous = [r for r in self.previous if not r.get("error")]
        except BaseException:
            self.release()
            raise
        self.done: set[str] = _Paths(str(r.get("path")) for r in self.previous)  # written by an earlier, interrupted run
        self._records: list[dict] = []  # JSON to stdout only: printed whole at close
        self._fh: IO[str] | None = None
        self._csv: csv.DictWriter | None = None

    def release(self) -> None:
        """Let go of the output's lock (close() does; a caller giving up on the batch may too). Idempotent."""
        if self._lock is not None:
            self._lock.release()

    @property
    def partial_has_rows(self) -> bool:
        """The `.partial` holds what an interrupted run wrote (an empty one is nothing to lose or resume from)."""
        return self.partial.is_file() and self.partial.stat().st_size > 0

    @property
    def _resume_source(self) -> Path:
        """What `--resume` reads: the `.partial` when it holds rows, else the finished output."""
        return self.partial if self.partial_has_rows else self.output

    def _check_here(self, rows: list[dict]) -> None:
        """Refuse a resume run from another folder than the batch's: its rows name files relative to where it started,
        so from elsewhere none of them is found, and every file would be analysed and written again."""
        relative = [str(r.get("path")) for r in rows if r.get("path") and not os.path.isabs(str(r.get("path")))]
        if relative and not any(os.path.exists(p) for p in relative):
            src = self._resume_source
            raise OutputError(src, f"its rows name files relative to the folder the batch was started in (e.g. "
                                   f"{relative[0]}), and none of them is found from {os.getcwd()}: run --resume from "
                                   "that folder")

    @property
    def _line_format(self) -> str:
        """What the `.partial` holds: CSV for CSV, else JSON Lines (JSON and Parquet are converted at close)."""
        return "csv" if self.fmt == "csv" else "jsonl"

    def _check_parquet(self, records: list[dict]) -> None:
        """Refuse earlier records whose values do not fit the Parquet schema now, not after the whole batch."""
        try:
            records_table(records)
        except Exception as e:  # pyarrow's ArrowInvalid / ArrowTypeError
            src = self._resume_source
            raise _foreign(src, f"its values do not fit songfeat's Parquet columns ({str(e).strip()[:120]})") from None

    def _check_model(self, records: list[dict]) -> None:
        """Refuse to continue results another model wrote: the output would mix two models' numbers unmarked.
        Rows without a model (written before rows named theirs) are taken as they are."""
        others = sorted({str(r[MODEL_KEY]) for r in records if r.get(MODEL_KEY)} - {self.model})
        if self.model is None or not others:
            return
        src = self._resume_source
        n = sum(1 for r in records if r.get(MODEL_KEY) and str(r[MODEL_KEY]) != self.model)
        raise _foreign(src, f"{n} of its {len(records)} results were written by another model ({', '.join(others[:2])}) "
                            f"than this run's ({self.model}); rerun with the --model that wrote them")

    def _open(self) -> IO[str]:
        if self._fh is None:
            if self.output is None:
                import sys

                self._fh = sys.stdout
            else:
                try:
                    self.output.parent.mkdir(parents=True, exist_ok=True)
                    self._fh = open(self.partial, "w", newline="", encoding="utf-8")
                except OSError as e:
                    raise OutputError(self.partial, f"cannot write it ({e.strerror or e})") from None
            if self.fmt == "csv":
                self._csv = csv.DictWriter(self._fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                self._emit(None)
            for r in self.previous:
                self._emit(r)
        return self._fh

    def _emit(self, record: dict | None) -> None:
        """One record (None: the CSV header) on its own line, flushed, so a kill loses at most the song in flight."""
        try:
            if self.fmt == "csv":
                self._csv.writeheader() if record is None else self._csv.writerow(_csv_row(record))
            else:  # jsonl; json and parquet to a file: JSON Lines in .partial until close
                if self.fmt == "parquet":
                    record = {k: record.get(k) for k in PARQUET_COLUMNS}
                self._fh.write(_dumps(record) + "\n")
            self._fh.flush()
        except OSError as e:
            if self.output is None:
                self._stdout_failed(e)
            raise OutputError(self.partial, f"cannot write it ({e.strerror or e}); the songs finished so far are kept in it, "
                              "rerun with --resume to continue") from None

    @staticmethod
    def _stdout_failed(e: OSError) -> None:
        """A failed write to stdout (a full disk behind `> file`) as one error; a closed pipe (`| head`) stays as it is."""
        if isinstance(e, BrokenPipeError):
            raise e
        raise OutputError("stdout", f"cannot write ({e.strerror or e})") from None

    def write(self, record: dict) -> None:
        """Add one song's record (JSON to stdout keeps them until close; everything else is written at once).
        A batch row (one with a "path") gets this writer's model; a lone file's Spotify object stays as it is."""
        if self.model is not None and "path" in record:
            record = {**record, MODEL_KEY: self.model}
        if self.fmt == "json" and self.output is None:
            self._records.append(record)
            return
        self._open()
        self._emit(record)

    def close(self) -> None:
        """Finish the output: print JSON, or move the partial file (converted for JSON and Parquet) onto its final name."""
        if self.fmt == "json" and self.output is None:
            doc = self._records[0] if self.single and len(self._records) == 1 else self._records
            fh = self._open()
            try:
                fh.write(_dumps(doc, indent=2) + "\n")
                fh.flush()
            except OSError as e:
                self._stdout_failed(e)
            self._fh = None
            return
        try:
            self._open()
            if self.output is not None and self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                    self._fh.close()
                    if self.fmt in ("json", "parquet"):
                        self._convert_partial()
                    else:
                        os.replace(self.partial, self.output)
                except OSError as e:
                    if isinstance(e, OutputError):
                        raise
                    raise OutputError(self.output, f"cannot write it ({e.strerror or e}); the results are kept in {self.partial}") from None
            self._fh = None
        finally:
            self.release()

    def _convert_partial(self) -> None:
        """Write the JSON Lines partial as the JSON or Parquet output (via a temporary file), then drop the partial."""
        records = _jsonl_records(self.partial, _read_text(self.partial), need_path=False)
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = records_table(records)
            with atomic.temp_beside(self.output) as tmp:
                pq.write_table(table, tmp)
        else:
            doc = records[0] if self.single and len(records) == 1 else records
            with atomic.replacing(self.output, encoding="utf-8") as f:
                f.write(_dumps(doc, indent=2) + "\n")
        self.partial.unlink()
