"""The `songfeat` command: a thin typer skin over the Python API (parsing arguments, printing results)."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional

from .interrupts import INTERRUPTED, give_back, hold_ctrl_c, interrupted_at_start

# A Ctrl-C while this module loads (typer's import, the commands' definitions: ~0.1 s) ends in that line, not in a
# traceback. Python's own handler is put back at the end of the module, so a program importing it keeps its
# KeyboardInterrupt; a SIGINT ignored (a background job) stays ignored. (`import songfeat` before this, ~0.1 s of
# the package's own imports, holds Ctrl-C the same way when it is the `songfeat` command starting:
# `interrupts.hold_ctrl_c_while_the_cli_starts`; a program's own `import songfeat` keeps Python's traceback.)
_LOADING = hold_ctrl_c()

try:
    import typer  # noqa: E402
    from typer.core import TyperCommand, TyperGroup  # noqa: E402
except BaseException:  # a program that catches the failed import keeps Python's Ctrl-C, not this module's
    if _LOADING:
        give_back()
    raise

from . import serve_options
from .errors import counted, missing_package, needs_extra, no_folder

if TYPE_CHECKING:  # annotations only: the CLI imports the analysis when a command runs
    from .analyze import Outcome


class _Songfeat(TyperGroup):
    """The app's command group: click's own usage errors, in parsing and resolving any command, end as songfeat's one
    error line with status 2 (README, "Exit status"), not click's four (usage, hint, blank line, error)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        with _closed_pipe_ends_quietly(), _usage_in_one_line(ctx), _interrupted(INTERRUPTED):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> object:
        # a Ctrl-C before a command's own `_interrupted` (its imports, its checks) was typer's 130 without a word
        with _closed_pipe_ends_quietly(), _usage_in_one_line(ctx), _interrupted(INTERRUPTED):
            return super().invoke(ctx)


# click's placeholder for each type without one of its own (a choice shows [a|b]); typer 0.28's copy of click names them
# str, int, int range, where click says TEXT, INTEGER, INTEGER RANGE
_PLACEHOLDERS = {"str": "TEXT", "text": "TEXT", "int": "INTEGER", "integer": "INTEGER", "int range": "INTEGER RANGE",
                 "integer range": "INTEGER RANGE", "float": "FLOAT", "float range": "FLOAT RANGE", "path": "PATH",
                 "file": "FILE", "directory": "DIRECTORY", "boolean": "BOOLEAN"}


class _Command(TyperCommand):
    """A songfeat command: --help shows click's usual placeholders (PATHS..., [BUNDLE], TEXT, PATH, INTEGER RANGE) for
    every parameter without its own metavar, not typer 0.28's ({paths}..., [bundle], <str>, <path>, <int range>)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None:
                continue
            if param.param_type_name == "argument":
                name = param.name.upper() if param.required else f"[{param.name.upper()}]"
                param.metavar = name + ("..." if param.nargs != 1 else "")
            elif param.type.name in _PLACEHOLDERS and not getattr(param, "is_flag", False):
                param.metavar = _PLACEHOLDERS[param.type.name] + ("..." if param.nargs != 1 else "")

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """A command that needs an extra says so before its options are checked: on the lean install, a bare `songfeat
        serve` said "missing option --library/-l" and only the run with every option named told the extra to install."""
        if not ctx.resilient_parsing and not set(args) & set(self.get_help_option_names(ctx)):
            for module in COMMAND_NEEDS.get(self.name or "", ()):
                require(self.name or "", module)
        rest = super().parse_args(ctx, args)
        if not ctx.resilient_parsing:
            _no_empty_paths(ctx, self.params)
        return rest

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """The usage line with each argument as its metavar: typer braces a required one even when it has one."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            pieces += [param.metavar] if param.param_type_name == "argument" else param.get_usage_pieces(ctx)
        return pieces


class _Typer(typer.Typer):
    """The app: every command a _Command unless it names its own class."""

    def command(self, *args: object, cls: Optional[type[TyperCommand]] = None, **kwargs: object) -> Callable:
        """typer's decorator, with _Command as the class when none is named."""
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(cls=_Songfeat, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
             help="Spotify-style audio features from audio, offline.")


def _print_version(value: bool) -> None:
    """--version: songfeat's version and the bundled model's id (the `model` column of batch outputs)."""
    if not value:
        return
    from . import __version__
    from .bundle import model_id

    typer.echo(f"songfeat {__version__} (bundled model {model_id(None)})")
    raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print songfeat's version and the bundled model's id, and exit.")) -> None:
    """Spotify-style audio features from audio, offline."""


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one error line on stderr (control characters escaped) and return the Exit to raise.

    The codes (README, "Exit status"): 2 a refusal before any work (a bad option, input, output or picture path, a
    missing extra), 1 work that ran and failed (a file that would not analyse, a write that failed), 130 interrupted."""
    typer.echo(one_line(f"songfeat: error: {message}"), err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _usage_in_one_line(ctx: typer.Context) -> Iterator[None]:
    """A click error raised in the body (a bad option value, an unknown option or command, a missing argument) printed
    as `songfeat: error: <what> (see <command> --help)`, with click's status: one line, whatever the command. A bare
    `songfeat` prints click's help (on stderr, status 2) here, inside `_closed_pipe_ends_quietly`: shown by click
    after it, a closed pipe (`songfeat |& head -1`) ended in click's status 1. Left to click: shell completion's parsing
    (it prints nothing)."""
    from importlib import import_module

    errors = import_module(typer.BadParameter.__module__)  # the click typer runs on: its own copy, or click itself
    try:
        yield
    except errors.ClickException as e:
        if ctx.resilient_parsing:
            raise
        if isinstance(e, getattr(errors, "NoArgsIsHelpError", ())):
            e.show()
            raise typer.Exit(e.exit_code) from None
        if not isinstance(e, errors.UsageError):
            raise fail(_click_message(e), e.exit_code) from None
        # a parser error (`-j` given no value) comes without its context: it is the command being resolved
        command = e.ctx.command_path if e.ctx else " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
        raise fail(f"{_click_message(e)} (see {command} --help)", e.exit_code) from None


SIGPIPE_STATUS = 128 + 13  # what a shell reports for a program that SIGPIPE ended (13 on every Unix)


@contextlib.contextmanager
def _closed_pipe_ends_quietly() -> Iterator[None]:
    """A stdout whose reader has gone (`songfeat analyze music/ -f csv | head -1`) ends the command at once, with no
    traceback or message, and status 141, as the shell reports for `seq 1000000 | head -1`: the status Unix tools, killed
    by SIGPIPE, end with, so `set -o pipefail` scripts treat songfeat as they treat them. Not 0: results were lost past
    the closed pipe, and not 1, which says that analysing an input failed (README, "Exit status"; click said 1).
    stdout is pointed at /dev/null first, so the output still buffered cannot fail again as Python exits."""
    try:
        yield
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        raise typer.Exit(SIGPIPE_STATUS) from None


def _no_empty_paths(ctx: typer.Context, params: list) -> None:
    """Refuse an empty path argument or option (`songfeat analyze "$UNSET"`): typer made it Path(""), which is ".", so
    the command went on to analyse the current folder, or said '.: is a directory'."""
    for param in params:
        value = ctx.params.get(param.name or "")
        values = value if isinstance(value, (list, tuple)) else (value,)
        if param.type.name == "path" and "" in values:
            name = "/".join(param.opts) if param.param_type_name == "option" else param.metavar or param.name
            raise fail(f"{name}: the path is empty; name a file or folder (see {ctx.command_path} --help)")


def _click_message(e: Exception) -> str:
    """A click error's message in songfeat's words: an option as --workers/-j (click's "Invalid value for '--workers' /
    '-j': ..."), a required choice's list on the line, no capital to start or full stop to end."""
    message = e.format_message().replace("\n\t", " ")  # "Choose from:\n\ta,\n\tb"
    param = getattr(e, "param", None)
    if param is not None and getattr(e, "param_hint", None) is None:
        quoted = param.get_error_hint(e.ctx)
        name = "/".join(param.opts) if param.param_type_name == "option" else quoted
        message = message.replace(f"Invalid value for {quoted}", name).replace(quoted, name)
    if message[1:2].islower():
        message = message[0].lower() + message[1:]
    return message.removesuffix(".")


@contextlib.contextmanager
def _interrupted(message: str | Callable[[], str]) -> Iterator[None]:
    """Ctrl-C in the body ends the command in one line with status 130 (README, "Exit status"), not click's "Aborted!"
    and 1: `message` says what was kept, or is called for it when what the body got done decides."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail(message() if callable(message) else message, 130) from None


def _cache_kept(cache: Optional[Path]) -> str:
    """What an interrupted command that reads clips through the record cache keeps: the clips it has read."""
    from .records import DEFAULT_CACHE

    return f"the clips read so far are kept in the record cache {cache or DEFAULT_CACHE}, so a rerun does not read them again"


def _given(ctx: typer.Context, options: dict[str, str]) -> list[str]:
    """Of `options` (parameter name -> option name), those given on the command line rather than left at their default."""
    return [flag for name, flag in options.items()  # by name: typer's ParameterSource is not click's
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]


def _format_of(ctx: typer.Context, fmt: str, output: Optional[Path]) -> str:
    """--format as given, else the one --output's extension names: `-o features.csv` wrote JSON into features.csv."""
    if output is None or _given(ctx, {"fmt": "--format"}):
        return fmt
    from .output import FORMAT_OF_SUFFIX

    return FORMAT_OF_SUFFIX.get(output.suffix.lower(), fmt)


def _ray_only(ctx: typer.Context, engine: str, options: dict[str, str]) -> None:
    """Refuse options that only --engine ray reads when given with the local engine (`options`: parameter name ->
    option name): they used to be ignored without a word."""
    given = _given(ctx, options)
    if engine == "local" and given:
        raise fail(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray; the local engine has no use "
                   f"for {'it' if len(given) == 1 else 'them'}")


def _no_timeout_on_ray(ctx: typer.Context, engine: str, timeout: float, what: str) -> None:
    """Refuse a --timeout other than 0 given with --engine ray, before Ray starts: Ray has no per-`what` time limit, and
    the option was ignored without a word, so a run the user believed bounded could hang on one file for ever."""
    if engine == "ray" and timeout and _given(ctx, {"timeout": "--timeout"}):
        raise fail(f"--timeout is for the local engine: Ray has no per-{what} time limit yet, a {what} that hangs holds "
                   f"its actor until the run is stopped (docs/scaling.md); leave --timeout out, or give --timeout 0")


def _os_error(e: OSError) -> str:
    """'<file>: <reason>' for an OSError (a full disk, a permission, a vanished file), as SongfeatError reads."""
    return f"{e.filename}: {e.strerror or e}" if e.filename else str(e)


@contextlib.contextmanager
def _exit_status(refusals: tuple[type[Exception], ...] = (), os_status: int = 1) -> Iterator[None]:
    """The exit-status rule (README, "Exit status") for a command's work, one error line each: WorkFailed (the work ran
    and failed) is 1, any other SongfeatError (a refusal before any work) or one of `refusals` 2, and an OSError (a
    full disk) `os_status`."""
    from .errors import SongfeatError, WorkFailed

    try:
        yield
    except WorkFailed as e:
        raise fail(str(e), 1) from None
    except (SongfeatError, *refusals) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(_os_error(e), os_status) from None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _same_name(a: Path, b: Path) -> bool:
    """Whether two paths given name the same file (`p.png` and `./p.png`): one written would replace the other."""
    return os.path.abspath(a) == os.path.abspath(b)


def _picture_error(path: Path, e: OSError) -> str:
    """'<file>: <reason>' for a picture that cannot be written, in -o's words: an OutputError says it whole already
    (it was wrapped again, 'cannot write the picture (cannot write it (Not a directory))'); any other as it would."""
    from .output import OutputError

    return str(e) if isinstance(e, OutputError) else f"{path}: cannot write it ({e.strerror or e})"


def _check_pictures(*paths: Optional[Path], inputs: tuple = ()) -> None:
    """Refuse a --plot/--scatter that is a folder, a device, an audio file (one of `inputs` under any name), under a
    file, or an existing file that is not a PNG (`evaluate --scatter b/model.safetensors` replaced the bundle's weights
    with a picture), or one file named for two pictures, before the work, not after: status 2, as every refusal before
    the work (it was 1, a failed write's)."""
    from .output import check_output

    given = [p for p in paths if p is not None]
    for i, p in enumerate(given):
        if any(_same_name(p, q) for q in given[:i]):  # the second picture replaced the first
            raise fail(f"{p}: named for two pictures (--plot and --scatter); give each its own file")
        try:
            check_output(p, "the picture", inputs=inputs)
            if p.is_file():
                with open(p, "rb") as f:
                    if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                        raise fail(f"{p}: exists and is not a PNG picture; name another file for the picture")
        except OSError as e:
            raise fail(_picture_error(p, e)) from None
        if p.suffix.lower() != ".png":  # PNG data under another name (p.jpg, p) opens nowhere as what it claims
            raise fail(f"{p}: pictures are written as PNG; give the file a .png name")


def _save_picture(save, *args) -> None:
    """Run a plot writer and say where it wrote; a write that fails (a full disk) is one error line."""
    try:  # the picture is written whole (atomically) or not at all
        with _interrupted(f"interrupted; {args[1]} was not written (what was printed before it is whole)"):
            typer.echo(f"wrote {save(*args)}", err=True)
    except OSError as e:
        raise fail(_picture_error(args[1], e), 1) from None


def _target_list(targets: Optional[str]) -> Optional[list[str]]:
    """--targets as a list (None: the family's default); a value naming no feature is an error, not the default."""
    if targets is None:
        return None
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise fail(f"--targets names no feature ({targets!r}); give e.g. --targets energy,valence, or leave it out")
    return names


def _local_workers(n: Optional[int]) -> Optional[int]:
    """--workers for a process pool on this machine: at most one per usable CPU. Each worker holds the model and its
    buffers (up to ~0.75 GB), so more workers than CPUs cost memory and gain no speed; a larger number is capped with one
    warning line (the Ray engine's --workers counts a cluster's actors and is not capped)."""
    if n is None:
        return None
    from .runtime import capped_workers

    n, warning = capped_workers(n, f"--workers {n}")
    if warning:
        typer.echo(f"songfeat: warning: {warning}", err=True)
    return n


# ---- analyze (core) --------------------------------------------------------------------------

STDIN = "-"  # `analyze -`: one audio file read from standard input, named "-" in its row and messages
# The most `-` reads (README): an endless or huge stdin filled $TMPDIR (memory, on a tmpfs) before anything was analysed.
# About 100 minutes of CD-quality WAV, days of MP3; a larger file is named on the command line, where no cap applies.
STDIN_MAX_BYTES = 1 << 30


def _bar(label: str, total: Optional[int] = None):
    """The transient bar `analyze` and `analysis` draw on stderr, started: (progress, task). Refreshed from this thread
    only (a refresh thread could write while fd 2 points at a decoder capture); stdout is left alone (`progress.bar`)."""
    from rich.markup import escape

    from .progress import bar

    progress = bar(transient=True, auto_refresh=False)
    task = progress.add_task(escape(one_line(label)), total=total)
    progress.start()
    return progress, task


def _show_seconds(progress, task, done: float, total: Optional[float]) -> None:
    """One file's seconds analysed so far (an hour of audio takes tens of seconds), out of its header's length if known."""
    progress.update(task, completed=done, total=max(total, done) if total else None)
    progress.refresh()


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {10: "\\n", 13: "\\r", 127: "\\x7f"}


def one_line(text: str) -> str:
    """A message kept to one line: control characters (a newline in a file name, a decoder's escape codes) shown escaped,
    and a file name that is not UTF-8 with its stray bytes as \\xNN, as the outputs write it (not Python's \\udcNN)."""
    from .output import utf8_text

    return utf8_text(text).translate(_CONTROL)


@contextlib.contextmanager
def _songfeat_warnings(kind: str = "warning") -> Iterator[None]:
    """A context in which each SongfeatWarning is printed at once as one `songfeat: <kind>: ...` line on stderr (not
    Python's two-line form with a source line); other warnings are shown as usual."""
    import warnings

    from .errors import SongfeatWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", SongfeatWarning)
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:
            if issubclass(category, SongfeatWarning):
                typer.echo(one_line(f"songfeat: {kind}: {message}"), err=True)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _report(out, verbose: bool, say) -> None:
    """Print a batch Outcome's warnings (one line each), with --verbose the raw decoder text behind them, and its error."""
    for w in out.warnings:
        say(f"songfeat: warning: {w}")
    if verbose and out.log:
        for line in out.log.splitlines():
            say(f"songfeat: {line}")
    if out.error:
        say(f"songfeat: error: {out.error}")


@app.command()
def analyze(
    ctx: typer.Context,
    # readable=False on every path songfeat opens itself: click's own os.access test refused a whole batch for one
    # unreadable file, in its four-line usage error with status 2, where songfeat names the file in one line and goes on
    paths: list[Path] = typer.Argument(..., readable=False, help="Audio files or folders (folders are searched recursively); "
                                                                "- reads one audio file from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A trained bundle folder; default: the bundled model."),
    fmt: str = typer.Option("json", "--format", "-f", show_default=False,
                            help="json (one object, or a list for several files), jsonl, csv or parquet (needs --output); "
                                 "default: the one --output's extension names (.json, .jsonl, .csv, .parquet), else json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", readable=False, help="Write here (atomically; missing folders are made, and taken away again if nothing is written) instead of stdout."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Processes analysing files in parallel; default: 1 for fewer than 8 files, else every CPU "
                                               "(--engine ray: actors, default one per cluster CPU)."),
    resume: bool = typer.Option(False, "--resume", help="Skip files already in --output (after an interrupted run); "
                                                        "--engine ray always does, with or without it."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.0,  # analyze.DEFAULT_TIMEOUT, not imported: keeps --help fast
                                  help="Seconds one file may take (per 10 minutes of audio, for longer files); 0: no limit. The local "
                                       "engine only: Ray has no per-file limit yet, so --engine ray refuses any but 0 (docs/scaling.md)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the decoders' own messages behind each warning (--engine ray: Ray's own log lines too)."),
    engine: str = typer.Option("local", "--engine", help="local (a process pool) or ray (a Ray cluster; --format parquet, --output a folder, always resumable)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto: the running one); default: $RAY_ADDRESS or the last `ray start` here, else start a local one."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="ray: tracks per actor call (fewer when a part has few tracks per actor)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, help="ray: tracks per committed part; default 1000 per cluster CPU."),
) -> None:
    """Analyze audio files and print Spotify-style audio features."""
    fmt = _format_of(ctx, fmt, output)
    _no_timeout_on_ray(ctx, engine, timeout, "file")  # (--resume is what the Ray engine always does: no refusal)
    reads_stdin = STDIN in map(str, paths)
    if engine == "ray" and reads_stdin:
        raise fail(f"{STDIN}: standard input is read by the local engine only (Ray's workers read files by path); "
                   "save it to a file first")
    if engine == "ray":
        return _analyze_ray(paths, model, fmt, output, workers, address, batch_size, chunk_size, verbose)
    if engine != "local":
        raise fail(f"--engine must be local or ray, not {engine!r}")
    _ray_only(ctx, engine, {"address": "--address", "batch_size": "--batch-size", "chunk_size": "--chunk-size"})
    workers = _local_workers(workers)
    from .analyze import analyze_many, auto_workers
    from .audio import scan_inputs
    from .bundle import model_id
    from .errors import SongfeatError
    from .output import FORMATS, OutputError, ResultWriter, error_record

    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if resume and output is None:
        raise fail("--resume needs --output")
    if fmt == "parquet" and output is None:
        raise fail("--format parquet needs --output")
    if fmt == "parquet":
        require("analyze --format parquet", "pyarrow")
    if resume and reads_stdin:
        raise fail(f"--resume cannot tell whether standard input ({STDIN}) was analysed before; leave out one of them")
    paths, spooled = _spool_stdin(ctx, paths)
    files, refused, notes = scan_inputs(list(paths))
    for e in refused:
        typer.echo(one_line(f"songfeat: error: {e}"), err=True)
    for n in notes:
        typer.echo(one_line(f"songfeat: warning: {n}"), err=True)
    single = len(paths) == 1 and len(files) == 1 and paths[0].is_file()
    if not files and not refused:
        raise fail("no audio files found in " + ", ".join(map(str, paths)))
    failed, written = len(refused), 0
    writer = None
    try:  # an --output that is a folder, an input, being written by another run, or (with --resume) not songfeat's
        # or another model's: refused first
        writer = ResultWriter(fmt, output, resume=resume, single=single, model=model_id(model), inputs=files)
        if fmt == "parquet":  # a refused input is a track too: one error row each
            for e in refused:
                if str(e.path) not in writer.done:
                    writer.write(error_record(e.path, str(e)))
                    written += 1
    except SongfeatError as e:
        if writer is not None:
            writer.release()
        raise fail(str(e)) from None
    todo = [f for f in files if str(f) not in writer.done]
    progress = None
    if todo:  # files done, or a lone file's seconds analysed (off a terminal, a plain line every 30 s: a 6-hour file
        # takes minutes, and a log said nothing until it ended)
        progress, task = _bar("analysing", len(todo)) if len(todo) > 1 else _bar(f"analysing {todo[0].name}")

    on_window = (lambda _path, done, total: _show_seconds(progress, task, done, total)) \
        if progress is not None and len(todo) == 1 else None

    def say(line: str) -> None:  # above the progress bar while it shows
        if progress is None or progress.disable:
            typer.echo(one_line(line), err=True)
        else:
            progress.console.print(one_line(line), markup=False, highlight=False, soft_wrap=True)

    def interrupted() -> str:  # the .partial is named only when it holds rows: before the first there is none to resume
        if output is None:  # said after the bar is gone; JSON to stdout is printed whole at the end, the others row by row
            return ("interrupted; nothing was printed (JSON is printed at the end; with --output a rerun can --resume)"
                    if fmt == "json" else "interrupted; the rows of the files finished are printed on stdout")
        if writer.partial_has_rows:
            return f"interrupted; finished files are kept in {writer.partial}, rerun with --resume to continue"
        return f"interrupted before any file was finished; nothing was written to {output}"

    with _interrupted(interrupted):
        try:
            outcomes = analyze_many(todo, model=model, workers=workers or auto_workers(len(todo)), timeout=timeout or None,
                                    on_progress=on_window) if todo else ()
            for out in outcomes:
                out = _as_stdin(out, spooled) if spooled is not None else out
                if progress is not None and on_window is None:
                    progress.advance(task)
                    progress.refresh()
                _report(out, verbose, say)
                if out.error:
                    failed += 1
                    if fmt == "parquet":  # Parquet keeps one row per track, failures included (as the Ray engine does)
                        writer.write(error_record(out.path, out.error))
                        written += 1
                    continue
                # a lone file's JSON on stdout is Spotify's object as is; every row written to a file says which file
                # (and, through the writer, which model), so that a later --resume knows what the output holds
                bare = single and fmt == "json" and output is None
                writer.write(out.features if bare else {"path": out.path, **out.features})
                written += 1
            if written or not failed or writer.previous:  # when every input failed, nothing reaches stdout
                writer.close()
        except OutputError as e:  # a write that failed once the work was under way (a full disk): status 1, as analysis's
            raise fail(str(e), 1) from None
        except SongfeatError as e:
            raise fail(str(e)) from None
        finally:
            writer.release()  # the output's lock: close() let go of it already, unless the batch stopped short
            if progress is not None:
                progress.stop()
    if failed:
        typer.echo(f"songfeat: {failed} of {len(files) + len(refused)} inputs failed", err=True)
        raise typer.Exit(1)


def _spool_stdin(ctx: typer.Context, paths: list[Path]) -> tuple[list[Path], Optional[Path]]:
    """`paths` with `-` replaced by standard input spooled into a temporary file (removed when the command ends, however
    it ends), and that file (None: no `-` was given): how analyze, tags and analysis all read standard input."""
    if STDIN not in map(str, paths):
        return paths, None
    spooled = ctx.with_resource(_stdin_spooled(ctx.info_name or "analyze"))
    return [spooled if str(p) == STDIN else p for p in paths], spooled


def _as_given(text: str, spooled: Optional[Path]) -> str:
    """`text` (an error, a warning, a decoder's log) naming the spooled standard input `-`, as given, not by its
    temporary file; as it is when no standard input was read."""
    return text.replace(str(spooled), STDIN) if spooled is not None and text else text


@contextlib.contextmanager
def _stdin_spooled(command: str) -> Iterator[Path]:
    """`<command> -`: standard input copied into a temporary file (decoders seek and probe, a pipe cannot be read twice),
    removed again when the body ends. A terminal (nothing piped in), an empty input and one over STDIN_MAX_BYTES (read
    no further) are refused, status 2."""
    import shutil
    import tempfile

    if sys.stdin is None or sys.stdin.isatty():
        raise fail(f"{STDIN}: standard input is a terminal; pipe or redirect an audio file into it "
                   f"(songfeat {command} {STDIN} < song.mp3)")
    folder = Path(tempfile.mkdtemp(prefix="songfeat-stdin-"))
    try:
        path = folder / "stdin"  # no extension: the decoders recognise the format by its content
        try:
            with open(path, "wb") as f, _interrupted("interrupted while reading standard input; nothing was analysed"):
                size = _copy_at_most(sys.stdin.buffer, f, STDIN_MAX_BYTES)
        except OSError as e:  # a full temporary folder
            raise fail(f"{STDIN}: cannot copy standard input into {folder} ({e.strerror or e})", 1) from None
        if size > STDIN_MAX_BYTES:
            raise fail(f"{STDIN}: standard input holds more than {STDIN_MAX_BYTES >> 20} MB, the limit for {STDIN}; save it to "
                       f"a file and name that file instead (songfeat {command} song.wav: files have no size limit)")
        if size == 0:
            raise fail(f"{STDIN}: standard input is empty; pipe or redirect an audio file into it")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy_at_most(source: IO[bytes], target: IO[bytes], limit: int) -> int:
    """Copy `source` into `target` until it ends or more than `limit` bytes have come (read no further: it may never
    end); returns the bytes copied, over `limit` when it stopped short."""
    size = 0
    while size <= limit and (block := source.read(min(1 << 20, limit + 1 - size))):
        target.write(block)
        size += len(block)
    return size


def _as_stdin(out: Outcome, spooled: Path) -> Outcome:
    """A batch Outcome of the spooled standard input named `-` as given (its path, error and warning lines), not by
    its temporary file; any other Outcome as it is."""
    if out.path != str(spooled):
        return out
    import dataclasses

    return dataclasses.replace(out, path=STDIN, error=out.error and _as_given(out.error, spooled),
                               warnings=[_as_given(w, spooled) for w in out.warnings], log=_as_given(out.log, spooled))


def _echo_failures(lines: list[str], more: str, shown: int = 5) -> None:
    """The first few failures on stderr, one line each, then how many more and where they are listed."""
    for line in lines[:shown]:
        typer.echo(one_line(f"songfeat: error: {line}"), err=True)
    if len(lines) > shown:
        typer.echo(f"songfeat: error: ... and {len(lines) - shown} more ({more})", err=True)


def _echo_dropped(lines: list[str], more: str, shown: int = 5, prefix: str = "label row dropped: ",
                  rest: tuple[str, str] = ("label row dropped", "label rows dropped")) -> None:
    """The first few unusable label rows (or, with `prefix` and `rest`, other label lines; `rest` is what the rest are,
    one and several) as warnings, then how many more and where they are all listed (a table with thousands of repeated ids must not flood the terminal)."""
    for line in lines[:shown]:
        typer.echo(one_line(f"songfeat: warning: {prefix}{line}"), err=True)
    if len(lines) > shown:
        typer.echo(f"songfeat: warning: ... and {counted(len(lines) - shown, 'more ' + rest[0], 'more ' + rest[1])} "
                   f"({more})", err=True)


def _echo_not_used(lines: list[str], more: str) -> None:
    """The out-of-range label values read as missing (`LabelTable.nulled_lines`), the first few, then how many more."""
    _echo_dropped(lines, more, prefix="",
                  rest=("label value out of range read as missing", "label values out of range read as missing"))


def _analyze_ray(paths: list[Path], model: Optional[str], fmt: str, output: Optional[Path], workers: Optional[int],
                 address: Optional[str], batch_size: int, chunk_size: Optional[int], verbose: bool = False) -> None:
    """`analyze --engine ray`: a resumable Parquet folder written by a Ray cluster (see songfeat.distributed); Ray's own
    log lines only with --verbose."""
    from .errors import SongfeatError
    from .output import OutputError

    if fmt != "parquet" or output is None:
        raise fail("--engine ray writes --format parquet into an --output folder")
    require("analyze --engine ray", "ray")
    from . import distributed

    joined: list[bool] = []

    def join() -> None:  # after the inputs, output and model are checked: a mistake there is said before Ray starts
        distributed.init(address, verbose=verbose)
        joined.append(True)

    def note(p: dict) -> None:
        typer.echo(f"songfeat: part {p['chunk']}/{p['chunks']} committed: {counted(p['rows'], 'track')} "
                   f"({counted(p['errors'], 'error')})", err=True)

    def interrupted() -> str:
        if not joined:  # it said "committed parts are kept in <output>" of a folder not yet made
            return "interrupted before the Ray cluster was ready; nothing was written"
        if not distributed.committed(output):  # a folder it made is gone again; one that was there is as it was
            return f"interrupted before any part was committed; nothing was written to {output}"
        return f"interrupted; committed parts are kept in {output}; rerun the same command to continue"

    try:
        with _interrupted(interrupted):
            try:
                report = distributed.analyze_to_parquet([str(p) for p in paths], output, model=model,
                                                        batch_size=batch_size, concurrency=workers,
                                                        chunk_size=chunk_size, on_part=note, join=join)
            finally:  # before the last lines: a Ctrl-C during Ray's exit-time shutdown was a traceback and a SIGSEGV
                distributed.shutdown()
    except OutputError as e:  # a write that failed once the work was under way (a full disk): status 1, as locally
        kept = ("committed parts are kept; rerun the same command to continue" if distributed.committed(output)
                else "nothing was written")
        raise fail(f"{e}; {kept}", 1) from None
    except SongfeatError as e:
        raise fail(str(e)) from None
    for line in report.notes:  # what the walk noted (a folder link already walked, ...), as the local engine says it
        typer.echo(one_line(f"songfeat: warning: {line}"), err=True)
    for line in report.refused:
        typer.echo(one_line(f"songfeat: error: {line}"), err=True)
    _echo_failures([e["error"] for e in report.errors], f"rows with error set in {output}")
    if report.planned and report.skipped == report.planned and not report.refused:  # Ray was not started
        every = f"{'the' if report.planned == 1 else 'all'} {counted(report.planned, 'track is', 'tracks are')}"
        typer.echo(f"nothing left to do: {every} already in {output}", err=True)
        return
    refused = f"; {counted(len(report.refused), 'input')} refused" if report.refused else ""
    typer.echo(f"wrote {counted(report.written, 'track')} to {output} ({report.skipped} of {report.planned} already there; "
               f"{counted(len(report.errors), 'error')}{refused}; {report.tracks_per_second:.2f} tracks/s)", err=True)
    if report.errors or report.refused:
        raise typer.Exit(1)


@app.command("tags")
def tags_cmd(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., readable=False, help="Audio files or folders (folders are searched recursively); "
                                                                "- reads one audio file from standard input."),
    top: int = typer.Option(5, "--top", "-k", min=1, max=50, help="How many tags of each model to print."),
) -> None:
    """Print the musicnn tagger's most probable MSD and MagnaTagATune tags for each file's first 30 s (at the level the
    default model's tagger hears it)."""
    from .audio import capture_output, scan_inputs
    from .errors import SongfeatError
    from .tagger import describe_file, top_tags

    paths, spooled = _spool_stdin(ctx, paths)  # `-`: a regular file, taken as named (never refused or noted)
    files, refused, notes = scan_inputs(list(paths))
    for e in refused:
        typer.echo(one_line(f"songfeat: error: {e}"), err=True)
    for n in notes:
        typer.echo(one_line(f"songfeat: warning: {n}"), err=True)
    if not files and not refused:  # folders with no audio in them: said, and with analyze's words and status
        raise fail("no audio files found in " + ", ".join(map(str, paths)))
    failed, done = len(refused), []
    # it writes no file: what it keeps of an interrupted run is what it printed
    with _interrupted(lambda: f"interrupted after {len(done)} of {len(files)} files; the tags of those are printed on stdout"):
        for f in files:
            with capture_output() as captured:  # a cut-off file's decoder note is one warning line, as in `analyze`
                try:
                    tops = top_tags(describe_file(f), top)
                except SongfeatError as e:
                    tops = e
            done.append(f)
            if isinstance(tops, SongfeatError):  # its error says it all ('corrupt frames skipped' before it contradicted it)
                typer.echo(one_line(f"songfeat: error: {_as_given(str(tops), spooled)}"), err=True)
                failed += 1
                continue
            for w in captured.warnings:
                typer.echo(one_line(f"songfeat: warning: {_as_given(w, spooled)}"), err=True)
            typer.echo(one_line(_as_given(str(f), spooled)))
            for model, pairs in tops.items():
                typer.echo(f"  {model.upper()}: " + ", ".join(f"{t} {p:.2f}" for t, p in pairs))
    if failed:  # the count at the end, as `analyze` gives it: in a long listing the error lines scroll away
        typer.echo(f"songfeat: {failed} of {len(files) + len(refused)} inputs failed", err=True)
        raise typer.Exit(1)


@contextlib.contextmanager
def _file_bar(path: Path, total: Optional[float]) -> Iterator[Callable[[float], None]]:
    """While the body analyses one file in this process, a bar of its seconds analysed (out of `total`, its header's
    length, when known; off a terminal `progress.bar`'s plain lines): yields the `on_window(seconds done)` hook that
    draws it, called between decoder calls, when fd 2 is the terminal's."""
    progress, task = _bar(f"analysing {path.name}")
    try:
        yield lambda done: _show_seconds(progress, task, done, total)
    finally:
        progress.stop()


@app.command("analysis")
def analysis_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., readable=False, help="One audio file; - reads it from standard input."),
    plot: Optional[Path] = typer.Option(None, "--plot", readable=False, help="Also draw a PNG: waveform and loudness, beats, bars, sections, segment pitches and timbre (missing folders are made)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", readable=False, help="Write the JSON here (atomically; missing folders are made, and taken away again if nothing is written) instead of stdout."),
) -> None:
    """Spotify's audio-analysis object (beats, bars, tatums, sections, segments) for one file, as JSON."""
    if plot is not None:
        require("analysis --plot", "matplotlib")
    from .analysis import analyse
    from .audio import capture_output, header_info
    from .errors import SongfeatError
    from .output import OutputError, ResultWriter

    # a bad --plot or -o is refused before the analysis, not after it, with analyze -o's status 2 (it was 1)
    _check_pictures(plot, inputs=(path,))
    if plot is not None and output is not None and _same_name(plot, output):
        raise fail(f"{output}: cannot write (named as both -o and --plot: the JSON would replace the picture)")
    try:
        writer = ResultWriter("json", output, single=True, inputs=(path,))
    except OutputError as e:  # names its file and says why already, as `analyze -o` prints it
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"{getattr(e, 'path', None) or output}: cannot write ({e.strerror or e})") from None
    plotted: list[Path] = []

    def interrupted() -> str:  # the picture and the JSON are each written whole (atomically) or not at all
        json_not = f"nothing was written to {output}" if output is not None else "the JSON was not printed"
        return f"interrupted; {plotted[0]} was written, {json_not}" if plotted else "interrupted; nothing was written"

    with _interrupted(interrupted):
        try:
            (path,), spooled = _spool_stdin(ctx, [path])  # after -o and --plot are checked: a refusal reads nothing
            with capture_output() as captured:  # decoder noise becomes one warning line, as in `analyze`
                try:
                    info = header_info(path)  # once: the bar's length, and the analysis's meta (not probed again there)
                    with _file_bar(Path(STDIN) if spooled else path, info.seconds) as on_window:  # gone before anything else is printed
                        result = analyse(path, on_window, info=info)
                except SongfeatError as e:
                    raise fail(_as_given(str(e), spooled), 1) from None
            for w in captured.warnings:
                typer.echo(one_line(f"songfeat: warning: {_as_given(w, spooled)}"), err=True)
            if plot is not None:
                from .analysis_plot import save_plot

                try:
                    save_plot(result, plot, title="standard input" if spooled else path.name)
                    plotted.append(plot)
                except OSError as e:
                    raise fail(_picture_error(plot, e), 1) from None
            try:
                writer.write(result.result)
                writer.close()
            except OutputError as e:  # every failed write, named and said (a closed pipe's BrokenPipeError goes on up:
                raise fail(str(e), 1) from None  # see _closed_pipe_ends_quietly)
        finally:
            writer.release()  # the output's lock, when the analysis or the plot failed before close()


def _md_or_json(fmt: str) -> None:
    """Refuse a --format other than md or json (status 2), before the work: the accuracy commands' one check."""
    if fmt not in ("md", "json"):
        raise fail(f"--format must be md or json, not {fmt!r}")


def _left_out_line(left_out: dict[str, int], n: int) -> str:
    """The features evaluate-audio does not score for lack of labels, in one line: those no clip is labelled with
    together, then each partly labelled one with how many of the `n` clips lack its label."""
    none = [t for t, k in left_out.items() if k >= n]
    parts = [f"{t} ({k} of the {n} clips {'lacks' if k == 1 else 'lack'} a label)" for t, k in left_out.items() if k < n]
    if none:
        parts.insert(0, f"{', '.join(none)} (no clip is labelled with {'them' if len(none) > 1 else 'it'})")
    return "not scored, for lack of labels: " + "; ".join(parts)


@app.command("evaluate-audio")
def evaluate_audio(
    labels: Path = typer.Option(..., "--labels", help="CSV of Spotify labels (any supported schema), keyed by track id."),
    audio: Path = typer.Option(..., "--audio", help="Folder of audio files named <track_id>.<ext>."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A trained bundle folder; default: the bundled model."),
    cv: Optional[int] = typer.Option(None, "--cv", help="Refit the audio-fitted parts of the default model (or of a train-heads "
                                    "bundle) in K folds, K >= 2, scoring every clip held out; default: no refit, and clips "
                                    "the model was fitted on are left out."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes analysing clips in parallel."),
    fmt: str = typer.Option("md", "--format", "-f", help="md or json."),
) -> None:
    """Accuracy against Spotify's labels on real audio: per-feature MAE/Pearson, loudness dB error, tempo/key agreement."""
    _md_or_json(fmt)  # checked before the analysis, not after it
    workers = _local_workers(workers)
    from .accuracy import EXCLUDED_BY, evaluate_audio as run, to_markdown
    from .data.labels import short_id
    from .errors import SongfeatError, WorkFailed

    # its clips are read afresh each run (no record cache): an interrupted run keeps nothing
    with _songfeat_warnings(), _interrupted("interrupted; nothing was written (a rerun reads every clip again)"):
        try:  # a repeated file for one id: one warning line, not Python's two
            result = run(labels, audio, model=model, cv=cv, workers=workers, progress=True)
        except WorkFailed as e:  # too few clips would analyse: each one's reason, then why nothing was scored
            for line in e.failed:
                typer.echo(one_line(f"songfeat: error: {line}"), err=True)
            raise fail(str(e), 1) from None
        except SongfeatError as e:
            raise fail(str(e)) from None
    for line in result["failed"]:
        typer.echo(one_line(f"songfeat: error: {line}"), err=True)
    for line in result["columns_not_read"]:
        typer.echo(one_line(f"songfeat: warning: {line}"), err=True)
    _echo_dropped(result["labels_dropped"], "all are listed in --format json's labels_dropped")
    _echo_not_used(result["label_values_not_used"], "all are listed in --format json's label_values_not_used")
    if result["ids_without_audio"]:  # as train-heads says it: those labels are not scored
        nowhere = counted(result["labels_without_audio"], "labelled id has", "labelled ids have")
        typer.echo(one_line(f"songfeat: warning: {labels}: {nowhere} no audio file "
                            f"in {audio} (e.g. {short_id(result['ids_without_audio'][0])})"), err=True)
    if result["excluded_trained_on"]:
        typer.echo(f"songfeat: warning: {counted(result['excluded_trained_on'], 'clip is', 'clips are')} not scored: "
                   f"the model was fitted on {'it' if result['excluded_trained_on'] == 1 else 'them'} "
                   f"({EXCLUDED_BY[result['excluded_by']]}; --cv K refits it per fold)", err=True)
    if result["targets_left_out"]:  # one line for them all: a table labelling one feature gave six lines
        typer.echo(f"songfeat: warning: {_left_out_line(result['targets_left_out'], result['n_clips'])}", err=True)
    if fmt == "json":
        from .evaluate import to_json

        result.pop("predictions", None)
        typer.echo(to_json(result))  # strict JSON, as evaluate writes: an undefined r (constant labels) is null, not NaN
    else:
        typer.echo(to_markdown(result))
    if result["failed"]:  # scored on the others, but the run was not whole: status 1, as analyze, tags and build give
        typer.echo(f"songfeat: {len(result['failed'])} of {len(result['failed']) + result['n_clips']} clips failed "
                   "(the figures are over the others)", err=True)
        raise typer.Exit(1)


@app.command("train-default")
def train_default(
    shared: Path = typer.Option(Path("../shared/data"), "--shared", help="The shared data folder (spotify-features/, spotify-previews/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the bundle; default: the package's weights/default."),
    seed: int = typer.Option(42, "--seed", help="Seeds stage 1's split, initial weights and batch order, and the heads' fit."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Per-clip input cache; default: ~/.cache/songfeat/records ($SONGFEAT_CACHE)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes reading clips (the fit itself is single-threaded)."),
) -> None:
    """Retrain the bundled default model from the shared data (reproduces songfeat/weights/default)."""
    workers = _local_workers(workers)
    from .bundle import DEFAULT_DIR
    from .default_model import train_default as run
    from .errors import SongfeatError

    # the bundle is written whole at the end (save_bundle), and stage 1's fit is not checkpointed: it starts over
    kept = (f"interrupted; nothing was written to {out or DEFAULT_DIR} (a bundle there is left as it was); "
            f"{_cache_kept(cache)}")
    try:
        with _interrupted(kept):
            path = run(shared, out or DEFAULT_DIR, seed=seed, progress=True, cache=cache, workers=workers)
    except SongfeatError as e:
        raise fail(str(e)) from None
    typer.echo(f"wrote {path}")


@app.command("export-onnx")
def export_onnx_cmd(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle folder to export; default: the bundled model."),
    musicnn: bool = typer.Option(False, "--musicnn", help="Export the shipped musicnn taggers instead (weights/musicnn/*.onnx)."),
) -> None:
    """Write a bundle's model.onnx (or the musicnn taggers' .onnx) from its torch weights, checked against torch."""
    from .bundle import DEFAULT_DIR
    from .onnx_export import export_bundle, export_musicnn

    if musicnn and bundle is not None:  # it was ignored: the shipped taggers were rewritten, not the bundle named
        raise fail(f"{bundle}: --musicnn exports the shipped musicnn taggers, not a bundle; give one or the other")
    # each .onnx is written whole (atomically) or not at all; the taggers' lines are printed once both are written
    kept = ("interrupted; each tagger's .onnx is either new or left as it was: rerun to export both" if musicnn else
            f"interrupted; {Path(bundle or DEFAULT_DIR) / 'model.onnx'} is left as it was")
    with _exit_status((ValueError,)), _interrupted(kept):  # an OSError: a write that fails (a full disk)
        written = export_musicnn() if musicnn else {None: export_bundle(bundle or DEFAULT_DIR)}
    for name, r in written.items():
        typer.echo(f"wrote {r['file']} ({f'{name}; ' if name else ''}sha256 {r['sha256'][:16]}...; max difference from "
                   f"torch {r['max_rel_diff_vs_torch']:.1e} relative)")


# ---- validation of the learned features: held-out sources, behaviour clips ----------------------


@app.command("evaluate-sources")
def evaluate_sources_cmd(
    shared: Path = typer.Option(Path("../shared/data"), "--shared", help="The shared data folder."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle whose stage 1 is used; default: the bundled model."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Per-clip input cache; default: ~/.cache/songfeat/records ($SONGFEAT_CACHE)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes reading clips (the fits themselves are single-threaded)."),
    fmt: str = typer.Option("md", "--format", "-f", help="md or json."),
    nested: bool = typer.Option(True, "--nested/--fixed-decay", help="Choose the heads' weight decay per feature by leave-one-source-out over the other sources (nested), or use the default FitConfig's."),
    choose_loss: bool = typer.Option(False, "--choose-loss", help="With --nested, also choose each feature's loss (absolute or squared) that way; default: absolute for all."),
    stretch: bool = typer.Option(False, "--stretch", help="Also stretch the shipped blend away from the training labels' centre by per-feature factors chosen by the inner leave-one-source-out (a variant tried, not shipped)."),
    seeds: int = typer.Option(1, "--seeds", min=1, max=20, help="Also rerun with this many fit seeds (42, 43, ...) and print how much the heads' figures move with the seed alone."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw a PNG: average MAE per held-out source and model, and the heads' bias per feature."),
    scatter: Optional[Path] = typer.Option(None, "--scatter", help="Also draw a PNG: every held-out prediction against its label, per feature."),
) -> None:
    """Leave-one-source-out accuracy (forró, pop/rock, older previews, FMA) for the heads beside the baselines."""
    _md_or_json(fmt)  # checked before the minutes of work, not after them (any other was read as md)
    workers = _local_workers(workers)
    from dataclasses import replace

    from .errors import SongfeatError
    from .evaluate import to_json
    from .heads import LOSSES, FitConfig
    from .records import DEFAULT_CACHE
    from .sources import evaluate_sources, seed_spread, spread_markdown, to_markdown

    if plot is not None or scatter is not None:
        require("evaluate-sources --plot/--scatter", "matplotlib")
    _check_pictures(plot, scatter)
    runs, base = [], FitConfig()
    try:
        with _interrupted(f"interrupted; nothing was written; {_cache_kept(cache)}"):
            for k in range(seeds):
                    runs.append(evaluate_sources(shared, model=model, cache=cache or DEFAULT_CACHE, workers=workers,
                                             progress=True,
                                             cfg=replace(base, seed=base.seed + k), select=nested,
                                             losses=LOSSES if choose_loss else None, stretch=stretch))
    except SongfeatError as e:
        raise fail(str(e)) from None
    result = runs[0]
    for line in result["failed"]:
        typer.echo(f"songfeat: note: {line}", err=True)
    spread = seed_spread(runs) if seeds > 1 else None
    if fmt == "json":
        # strict JSON, as evaluate and evaluate-audio write: the fold mean's r (constant predictions) is null, not NaN
        typer.echo(to_json({**result, **({"seed_spread": spread} if spread else {})}))
    else:
        typer.echo(to_markdown(result) + ("\n" + spread_markdown(spread) if spread else ""))
    if plot is not None:
        from .sources_plot import save_plot

        _save_picture(save_plot, result, plot)
    if scatter is not None:
        from .sources_plot import save_scatter

        _save_picture(save_scatter, result, scatter)


@app.command("train-heads")
def train_heads_cmd(
    labels: Path = typer.Option(..., "--labels", help="CSV of labels keyed by track id (any of the seven learned features)."),
    audio: Path = typer.Option(..., "--audio", help="Folder of audio files named <track_id>.<ext>."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write (use it with analyze --model)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundle whose stage 1 the heads sit on; default: the bundled model."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Per-clip input cache; default: ~/.cache/songfeat/records ($SONGFEAT_CACHE)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes reading clips (the fit itself is single-threaded)."),
    cv: int = typer.Option(5, "--cv", min=0, help="Score the fit held out: K-fold cross-validation over your clips (K more "
                                                  "fits, printed and kept in the bundle's config); 0: skip it."),
) -> None:
    """Fit the listening heads (tagger, VAD, pitch, dynamics, genre prior) on your own labelled audio."""
    workers = _local_workers(workers)
    import warnings

    from .errors import SongfeatError, SongfeatWarning, WorkFailed
    from .own_heads import DROPPED as dropped, LEFT_OUT as clip, NOT_USED as cell, train_heads

    caught: list = []
    failed: list[str] = []
    # the bundle is written whole at the end (save_bundle): an interrupted fit keeps only the clips it read
    with _interrupted(f"interrupted; nothing was written to {out} (a bundle there is left as it was); {_cache_kept(cache)}"):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SongfeatWarning)
                code = 2  # a refusal before the clips are read; 1 once the work ran (README, "Exit status")
                try:
                    path, heads = train_heads(labels, audio, out, base_model=model, cache=cache, workers=workers,
                                              progress=True, cv=cv)
                except WorkFailed as e:  # too few clips analysed to fit, or a bundle it could not write
                    error, code = str(e), 1
                except SongfeatError as e:
                    error = str(e)
                except OSError as e:  # a safety net: train_heads names the failures it knows of itself
                    error = _os_error(e)
                else:
                    error = None
        finally:  # what was left out, first: before the error or interruption line too
            said = [str(w.message) for w in caught if issubclass(w.category, SongfeatWarning)]
            _echo_dropped([m[len(dropped):] for m in said if m.startswith(dropped)], f"check {labels}")
            _echo_not_used([m[len(cell):] for m in said if m.startswith(cell)], f"check {labels}")
            failed = [m[len(clip):] for m in said if m.startswith(clip)]
            for line in failed:  # a clip that would not analyse is an error line, as in analyze, build and evaluate-audio
                typer.echo(one_line(f"songfeat: error: {line}"), err=True)
            for message in (m for m in said if not m.startswith((dropped, clip, cell))):
                typer.echo(one_line(f"songfeat: warning: {message}"), err=True)
    if error is not None:
        raise fail(error, code)
    _echo_held_out(heads, cv)
    typer.echo(f"wrote {path}")
    if failed:  # fitted on the others, but the run was not whole: status 1, as build and evaluate-audio give
        typer.echo(f"songfeat: {len(failed)} of {len(failed) + heads['clips']} clips failed (the heads were fitted on the "
                   "others)", err=True)
        raise typer.Exit(1)


def _echo_held_out(heads: dict, cv: int) -> None:
    """How well train-heads' fit does on clips it did not see, from the bundle's `split.heads` (its `held_out`): per
    labelled feature the cross-validated MAE and r beside predicting the training folds' mean label. Without --cv the
    figures on the training clips would flatter it, so none are printed; the line says how to get the held-out ones.
    The table is evaluate-audio's (`accuracy.learned_table`), which gives the same figures for the same folds."""
    from .accuracy import learned_table

    h = heads.get("held_out")
    if h is None:
        typer.echo(f"not scored held out (--cv {cv}); --cv 5 scores the fit on clips it did not see")
        return
    n = heads["clips"]
    learned = {k: h[k] for k in ("model", "mean_predictor")}  # the baseline's "(n=K)": where a fold had a mean label
    lines = [f"Held out: {h['folds']}-fold cross-validation over the {n} clips (each clip predicted by heads fitted "
             "without it; the bundle's heads are fitted on all of them)", "",
             *learned_table(learned, list(h["model"]["targets"]), n)]
    typer.echo("\n".join(lines) + "\n")


@app.command("check-behaviour")
def check_behaviour_cmd(
    shared: Path = typer.Option(Path("../shared/data"), "--shared", help="The shared data folder (behaviour/)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A trained bundle folder; default: the bundled model."),
    half: str = typer.Option("check", "--half", help="check (claims), fit, or all."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes analysing the clips in parallel."),
    regions: bool = typer.Option(True, "--regions/--no-regions",
                                 help="Also count predictions inside the catalogue's range for music meeting each clip's rules."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw a PNG: every rule's predicted value against its threshold."),
) -> None:
    """Analyze the behaviour clips and count which of their rules (from Spotify's definitions) hold."""
    workers = _local_workers(workers)
    from .behaviour import analyze_clips, check, region_markdown, region_table, to_markdown
    from .errors import SongfeatError

    if half not in ("check", "fit", "all"):
        raise fail(f"--half must be check, fit or all, not {half!r}")
    if plot is not None:
        require("check-behaviour --plot", "matplotlib")
    _check_pictures(plot)
    try:  # the clips are analysed afresh each run (no record cache)
        with _interrupted("interrupted; nothing was written (a rerun analyses every clip again)"):
            manifest, outputs = analyze_clips(shared, model=model, workers=workers, progress=True)
    except (SongfeatError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    sel = None if half == "all" else half
    table = check(manifest, outputs)
    typer.echo(to_markdown(table, sel))
    if plot is not None:
        from .behaviour_plot import save_plot

        _save_picture(save_plot, table, plot, sel)
    if regions:
        from .sources import catalogue_frame

        with _interrupted("interrupted; the rule table printed is whole, the catalogue ranges were not printed"):
            try:
                catalogue = catalogue_frame(shared)
            except (SongfeatError, FileNotFoundError) as e:  # the rule table above stands without it
                typer.echo(f"songfeat: catalogue ranges skipped ({e}); --no-regions leaves them out", err=True)
                return
            ranges = region_markdown(region_table(manifest, outputs, catalogue, sel))
        typer.echo(ranges)


# ---- research pipeline: build / train / evaluate / compare ------------------------------------


@app.command("build")
def build_cmd(
    ctx: typer.Context,
    labels: Path = typer.Option(..., "--labels", readable=False, help="Label CSV in any supported Spotify-style schema (see docs/store.md)."),
    audio: Path = typer.Option(..., "--audio", readable=False, help="Folder of audio files named by track id (<track_id>.mp3, ...), searched recursively."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Store folder to create; rerun the same command to resume an interrupted build, or to try the clips that failed again."),
    frontend: str = typer.Option("mfcc", "--frontend", help="Front-end to cache: mfcc (the seed's), mfcc-dense, logmel or musicnn (tagger tags + embeddings, see docs/musicnn.md)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Processes decoding clips in parallel (a build of up to 12 clips runs in this process); default 2, "
                                               "or with --engine ray the cluster's CPUs (actors)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Build only the first N clips (by track id)."),
    descriptors: bool = typer.Option(True, "--descriptors/--no-descriptors", help="Also measure tempo, key, loudness, ... per clip."),
    engine: str = typer.Option("local", "--engine", help="local (a process pool) or ray (clips computed on a Ray cluster, written here)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (auto: the running one); default: $RAY_ADDRESS or the last `ray start` here, else start a local one."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.0,  # analyze.DEFAULT_TIMEOUT, not imported: keeps --help fast
                                  help="Seconds one clip may take in a worker process (builds of more than 12 clips); 0: no limit. The "
                                       "local engine only: --engine ray has no per-clip limit and refuses any but 0."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the decoders' own messages behind each warning (--engine ray: Ray's own log lines too)."),
) -> None:
    """Build a dataset store: labels joined to audio, cached front-end tensors and measured descriptors."""
    with _interrupted(f"interrupted before the store was begun; nothing was written to {out}"):
        from .data.store import build_store, finished_clips  # torch: seconds on a busy machine, where Ctrl-C was silent

    if engine not in ("local", "ray"):
        raise fail(f"--engine must be local or ray, not {engine!r}")
    _ray_only(ctx, engine, {"address": "--address"})
    _no_timeout_on_ray(ctx, engine, timeout, "clip")
    if engine == "local":
        workers = _local_workers(workers) or 2
    if engine == "ray":
        require("build --engine ray", "ray")
    def interrupted() -> str:  # the store's manifest is written before its first clip (and before Ray starts)
        kept = finished_clips(out)
        if kept is None:
            return f"interrupted before the store was begun; nothing was written to {out}"
        if kept[0] == 0:
            return f"interrupted before a clip was finished; {out} holds the store's plan: rerun the same command to build it"
        return (f"interrupted; {kept[0]} of {counted(kept[1], 'clip')} finished, kept in {out}; rerun the same command "
                "to continue")

    # 2: refused before any clip (labels, audio folder or --out it cannot use, no clip pairs); 1: the clips ran and the
    # store could not be finished, or a full disk
    with _exit_status((ValueError,)), _interrupted(interrupted):  # a ValueError: e.g. an unknown --frontend
        runner = None
        if engine == "ray":
            from . import distributed

            # --workers was ignored: every cluster CPU ran. Ray starts once the labels and audio are checked
            runner = distributed.clip_runner(concurrency=workers,
                                             join=lambda: distributed.init(address, verbose=verbose))
        try:
            report = build_store(labels, audio, out, frontend=frontend, workers=workers or 2, progress=True,
                                 limit=limit, descriptors=descriptors, timeout=timeout or None, on_message=_note,
                                 verbose=verbose, runner=runner)
        finally:
            if runner is not None:  # (as analyze --engine ray does)
                distributed.shutdown()
    dropped = report.label_rows_dropped_lines
    _echo_dropped(dropped, f"see {out / 'report.json'}")  # as evaluate-audio and train-heads say them
    _echo_not_used(report.label_values_not_used, f"see {out / 'report.json'}")
    _echo_failures([f"{f['path']}: {f['reason']}" for f in report.failed], f"see {out / 'report.csv'}")
    retried = f"retried {report.retried} that failed before, now built {report.recovered}; " if report.retried else ""
    typer.echo(f"built {report.built} of {counted(report.planned, 'clip')} into {out} ({report.resumed} from an earlier run; {retried}"
               f"{len(report.failed)} failed; {counted(len(dropped), 'label row')} dropped, "
               f"{counted(report.labels_without_audio, 'label')} without audio, "
               f"{counted(report.audio_without_labels, 'audio file')} without labels; "
               + (f"{report.clips_per_second:.2f} clips/s)" if report.processed else "nothing was left to do)"))
    if report.failed:
        raise typer.Exit(1)


@app.command("train")
def train_cmd(
    model: str = typer.Argument(..., help="Model family: numeric-mlp (any store), cnn-simple, cnn-valence, cnn-complex, lstm-simple, lstm-multitask, combiner (an mfcc, mfcc-dense or logmel store), mlp-head (a --frontend musicnn store)."),
    store: Path = typer.Option(..., "--store", readable=False, help="Dataset store folder (made by `songfeat build`)."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Bundle folder to write."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated features to learn; default: the family's (the seed's; the seven learned features for mlp-head)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Default: the seed's count for the family."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-3; combiner variant d: 0.01 -> 0.001 on plateaus)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Examples per training step; default: the family's (32, the seed's)."),
    seed: int = typer.Option(42, "--seed", help="Seeds the split, the initial weights and the batch order."),
    split: str = typer.Option("random", "--split", help="random (70/15/15) or artist (no artist in two parts)."),
    numeric_source: str = typer.Option("labels", "--numeric-source", help="Numeric inputs from the label table (labels, as the seed) or measured from the audio (measured)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="combiner only: the report's setting a, b, c or d (default: d, its best)."),
    activation: Optional[str] = typer.Option(None, "--activation", help="numeric-mlp only: relu (the seed's, default) or sigmoid (the report's variant)."),
    patience: int = typer.Option(5, "--patience", min=0, help="Stop after this many epochs without a better validation loss (0: never)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda; default: cuda when present."),
) -> None:
    """Train one model family on a store and write a bundle (weights + config with held-out metrics).

    Every epoch's state is kept in OUT.training/ until the bundle is written: the same command run again after an
    interruption continues from the last finished epoch, with the same result as an uninterrupted run."""
    with _interrupted(f"interrupted before the training began; nothing was written (a bundle already at {out} is left "
                      "as it was)"):
        from .checkpoint import kept  # torch: seconds on a busy machine, where Ctrl-C was a silent exit 130
        from .train import train_bundle

    hp: dict = {}
    if variant:
        hp["variant"] = variant
    if activation:
        hp["activation"] = activation
    def interrupted() -> str:  # <out>.training is named only when it holds a checkpoint: none before the first epoch ends
        if (folder := kept(out)) is not None:
            return (f"interrupted; the last finished epoch is kept in {folder}: rerun the same command to continue from "
                    f"it (a bundle already at {out} is left as it was)")
        return f"interrupted before the first epoch was finished; nothing was kept (a bundle already at {out} is left as it was)"

    # a checkpoint resumed or set aside is a note; Ctrl-C was a silent exit 130: was the old bundle lost, or half replaced?
    with _songfeat_warnings("note"), _interrupted(interrupted), _exit_status((ValueError, KeyError), os_status=2):
        path = train_bundle(model, store, out, targets=_target_list(targets), epochs=epochs, lr=lr,
                            batch_size=batch_size, seed=seed, split=split, numeric_source=numeric_source,
                            hparams=hp or None, device=device, early_stop_patience=patience or None,
                            progress=True)
    _warn_left_out(path)
    typer.echo(f"wrote {path}")


def _warn_few_clips(result: dict, bundle: Path) -> None:
    """Warn when a bundle was scored on too few clips for its figures to mean much (evaluate.few_clips_warning)."""
    from .evaluate import few_clips_warning

    if (few := few_clips_warning(result, bundle)) is not None:
        typer.echo(one_line(f"songfeat: warning: {few}"), err=True)


def _bundle_config(bundle: Path) -> dict:
    """A bundle's config.json, or {} when it cannot be read (what the caller says from it is then left unsaid)."""
    import json

    from .bundle import CONFIG

    try:
        config = json.loads((Path(bundle) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _warn_left_out(bundle: Path) -> None:
    """Say how many of the store's clips training left out for lacking a target or input (only the bundle's provenance
    knew: 40 of 100 clips could go unused without a word), and when the test part was too small to score, or scored on
    too few clips to mean much (as `evaluate` says it)."""
    config = _bundle_config(bundle)
    if not config:
        return
    prov = config.get("provenance") or {}
    n, gaps = prov.get("dropped_missing") or 0, prov.get("missing_by_column") or {}
    if n:
        why = ", ".join(f"{c} in {k}" for c, k in sorted(gaps.items(), key=lambda x: -x[1]))
        typer.echo(f"songfeat: warning: {n} of the store's {prov.get('rows')} clips were left out: they lack a value the "
                   f"model needs ({why})", err=True)
    if config.get("metrics") is None:  # the bundle was written with no held-out metrics, which said nothing
        n_test = counted(prov.get("n_test", 0), "clip")
        typer.echo(f"songfeat: warning: {bundle}: its test part holds {n_test}, too few to score: no held-out metrics "
                   "were recorded and `songfeat evaluate` cannot score it; train on more clips", err=True)
    elif isinstance(config["metrics"], dict):
        _warn_few_clips(config["metrics"], bundle)


@app.command("evaluate")
def evaluate_cmd(
    bundle: Path = typer.Argument(..., readable=False, help="A trained bundle folder."),
    store: Path = typer.Option(..., "--store", readable=False, help="The store it was trained from (its recorded test ids are looked up there)."),
    fmt: str = typer.Option("md", "--format", "-f", help="md or json."),
    split: str = typer.Option("test", "--split", help="Which recorded split to score: test (held out), val or train."),
    scatter: Optional[Path] = typer.Option(None, "--scatter", readable=False, help="Also write a prediction-vs-truth PNG here."),
) -> None:
    """The seed's metrics (MSE, MAE, RMSE, R², Pearson per target + average) of a bundle on its held-out split."""
    from .evaluate import evaluate_bundle, to_json, to_markdown

    _md_or_json(fmt)
    _check_pictures(scatter)
    # the scatter is written whole (atomically) or not at all
    with _exit_status((ValueError, KeyError), os_status=2), _interrupted("interrupted; nothing was written"):
        result = evaluate_bundle(bundle, store, split=split, scatter=scatter)
    _warn_few_clips(result, bundle)  # 2 clips printed Pearson ±1 without a word
    typer.echo(to_json(result) if fmt == "json" else to_markdown(result, title=f"{result['model']} — {bundle} ({split})"))


@app.command("compare")
def compare_cmd(
    bundles: list[Path] = typer.Argument(..., readable=False, help="Bundle folders to put side by side."),
    store: Path = typer.Option(..., "--store", readable=False, help="The store they were trained from."),
    split: str = typer.Option("test", "--split", help="Which recorded split to score: test (held out), val or train."),
) -> None:
    """Bundles side by side on their held-out splits, like the report's Tables 1–4 (MSE/MAE, then Pearson)."""
    from .evaluate import compare, evaluate_bundle

    with _exit_status((ValueError, KeyError), os_status=2), _interrupted("interrupted; nothing was written"):
        results = [evaluate_bundle(b, store, split=split) for b in bundles]
    for r, b in zip(results, bundles):
        _warn_few_clips(r, b)
    # numeric-mlp on label inputs or on measured ones were told apart only by their folders' names
    typer.echo(compare(results, labels=[f"{r.get('label') or r['model']} ({Path(b).name})" for r, b in zip(results, bundles)]))


# ---- data collection: collect / download -------------------------------------------------------


def _retry_policy(retries: int, backoff: float, max_wait: float) -> "object":
    from .data.spotify_api import RetryPolicy

    return RetryPolicy(retries=retries, backoff=backoff, max_backoff=max(60.0, backoff), max_retry_after=max_wait)


def _note(message: str) -> None:
    typer.echo(one_line(f"songfeat: {message}"), err=True)


@app.command("collect")
def collect_cmd(
    genres: str = typer.Option(..., "--genres", help="Comma-separated Spotify genres, e.g. pop,rock,hip-hop,jazz."),
    per_genre: int = typer.Option(..., "--per-genre", min=1, help="Unique tracks to keep per genre."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV to write; rerun the same command to resume."),
    client_id: Optional[str] = typer.Option(None, "--client-id", envvar="SPOTIPY_CLIENT_ID", show_envvar=True, help="Spotify app client id."),
    client_secret: Optional[str] = typer.Option(None, "--client-secret", envvar="SPOTIPY_CLIENT_SECRET", show_envvar=True, help="Spotify app client secret."),
    api_url: Optional[str] = typer.Option(None, "--api-url", envvar="SONGFEAT_SPOTIFY_API_URL", show_envvar=True, help="Web API root (default https://api.spotify.com/v1/)."),
    token_url: Optional[str] = typer.Option(None, "--token-url", envvar="SONGFEAT_SPOTIFY_TOKEN_URL", show_envvar=True, help="Token endpoint (default https://accounts.spotify.com/api/token)."),
    features: bool = typer.Option(True, "--features/--no-features", help="Ask audio-features for the label columns."),
    require_preview: bool = typer.Option(False, "--require-preview", help="Keep only tracks that have a preview URL."),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries per request after a 429, 5xx or network error."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="First wait (s) before retrying a 5xx or network error; doubles each time."),
    max_wait: float = typer.Option(600.0, "--max-wait", min=0.0, help="Longest Retry-After (s) to wait out; a longer one stops the run (resumable)."),
) -> None:
    """Collect tracks per genre from Spotify's search, with their audio features, into one CSV."""
    from .data.collect import collect
    from .data.spotify_api import SpotifyAPIError

    # 2: refused before any request (no genres, credentials, an --out it cannot use); 1: a save or a request that failed
    with _exit_status():
        try:
            with _interrupted(f"interrupted; progress is kept in {out}; rerun the same command to continue"):
                report = collect(genres, per_genre, out, client_id=client_id, client_secret=client_secret,
                                 api_url=api_url, token_url=token_url, features=features,
                                 require_preview=require_preview, policy=_retry_policy(retries, backoff, max_wait),
                                 progress=True, on_message=_note)
        except SpotifyAPIError as e:  # (a WorkFailed) said with where the progress is
            raise fail(f"{e} (progress is kept in {out}; rerun the same command to continue)" if out.exists() else str(e),
                       1) from None
    if report.message:
        typer.echo(one_line(f"songfeat: warning: {report.message}"), err=True)
    for genre, n in report.short.items():
        why = f"ran out at {n} of {per_genre} tracks" if n else "found no tracks (is it one of Spotify's genre names?)"
        typer.echo(one_line(f"songfeat: warning: genre {genre!r}: Spotify's search {why}"), err=True)
    typer.echo(report.summary())


@app.command("download")
def download_cmd(
    tracks: Path = typer.Option(..., "--tracks", help="Track table with track_id and preview_url columns (from `songfeat collect`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the previews (<track_id>.mp3); rerun to resume."),
    concurrency: int = typer.Option(8, "--concurrency", "-j", min=1, max=64, help="Downloads in flight at once."),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries per file after a 429, 5xx, network error or truncated body."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait for a connection or for the next bytes."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="First wait (s) before a retry; doubles each time."),
    max_wait: float = typer.Option(600.0, "--max-wait", min=0.0, help="Longest Retry-After (s) to wait out."),
) -> None:
    """Download the 30-s previews of a track table: atomic, resumable, failures listed in a report."""
    from .data.download import download
    from .data.cells import short_id  # not labels: it needs pandas, and download runs on the 'collect' extra

    # 2: refused before any download (a table or --out folder it cannot use); 1: a write that failed (a full disk)
    with _exit_status(), _interrupted(f"interrupted; files already in {out} are complete; rerun the same command to "
                                      "continue"):
        report = download(tracks, out, concurrency=concurrency, timeout=timeout,
                          policy=_retry_policy(retries, backoff, max_wait), progress=True, on_message=_note)
    for f in report.failures[:5]:
        typer.echo(one_line(f"songfeat: error: {short_id(f.track_id)}: {f.url}: {f.reason}"), err=True)
    if len(report.failures) > 5:
        typer.echo(f"songfeat: error: ... and {len(report.failures) - 5} more", err=True)
    typer.echo(report.summary())
    if report.failures:
        raise typer.Exit(1)


# ---- serving a library -------------------------------------------------------------------------


@app.command("serve")
def serve_cmd(
    library: Path = typer.Option(..., "--library", "-l", help="Music folder to index and serve (searched recursively)."),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="Port to listen on (0: a free one, named in the start-up line)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback should come with --token."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SONGFEAT_TOKEN", show_envvar=True,
                                        help="Require 'Authorization: Bearer <token>' on every request but /healthz and /docs."),
    db: Optional[Path] = typer.Option(None, "--db", help="SQLite index; default: LIBRARY/.songfeat/library.db."),
    workers: Optional[int] = typer.Option(serve_options.default("workers"), "--workers", "-j", min=serve_options.least("workers"), help="Analysis processes; default: every usable CPU."),
    rescan: bool = typer.Option(serve_options.default("rescan"), "--rescan", help="Hash every file again at start-up, even those whose size and mtime are unchanged."),
    rescan_interval: float = typer.Option(serve_options.default("rescan-interval"), "--rescan-interval", min=serve_options.least("rescan-interval"), help="Seconds between scans for new, changed and removed files (0: only at start-up)."),
    max_upload_mb: float = typer.Option(serve_options.default("max-upload-mb"), "--max-upload-mb", min=serve_options.least("max-upload-mb"), help="Largest POST /v1/audio-features body (413 beyond)."),
    time_limit: float = typer.Option(serve_options.default("time-limit"), "--time-limit", min=serve_options.least("time-limit"), help="Seconds one file may take before its worker is killed (per 10 minutes of audio, for longer files, as analyze --timeout)."),
    cors_origin: Optional[list[str]] = typer.Option(None, "--cors-origin", help="Let browser pages from this origin (scheme://host[:port], or '*' for any) call the GET routes; repeatable. Default: no CORS."),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", metavar="NAME", help="Also answer requests addressed (Host header) to this name: a reverse proxy's or a LAN name, '*.lan' for every name under lan, or an IP address; repeatable; '*': any name (no check). Default on a loopback --host: only localhost, *.localhost, 127.x.x.x and [::1] (a DNS-rebinding defence); on any other: any name, unless this is given."),
    quiet: bool = typer.Option(serve_options.default("quiet"), "--quiet", "-q", help="Print only warnings and errors: no scan summaries or analysis progress (failed files are still named)."),
) -> None:
    """Serve Spotify's audio-features API over a music library (indexes, analyses in the background, answers)."""
    workers = _local_workers(workers)
    from .errors import SongfeatError
    from .library import Library
    from .runtime import usable_cpus
    from .serve import check_allowed_host, check_cors_origin, check_token, is_loopback, listen, run, unsafe_settings

    if not library.is_dir():
        raise fail(f"{library}: {no_folder(library)}")
    try:
        check_token("" if token is None and os.environ.get("SONGFEAT_TOKEN") == "" else token)  # click reads "" as unset
    except ValueError as e:
        raise fail(f"--token: {e}") from None
    try:
        cors_origins = [check_cors_origin(o) for o in cors_origin or ()]
    except ValueError as e:
        raise fail(f"--cors-origin: {e}") from None
    try:
        allowed_hosts = [check_allowed_host(h) for h in allowed_host or ()]
    except ValueError as e:
        raise fail(f"--allowed-host: {e}") from None
    try:
        lib = Library(library, db=db, workers=workers or usable_cpus(), time_limit=time_limit)
    except SongfeatError as e:
        raise fail(str(e)) from None
    try:
        lib.claim()  # before anything starts: a second server on this library stops here, leaving the first's uploads
        sock = listen(host, port)  # a port in use is one line here, before the workers start and the folder is scanned
    except SongfeatError as e:
        lib.stop()  # nothing started yet: this releases the lock
        raise fail(str(e)) from None
    bound, port = sock.getsockname()[:2]  # --port 0: the port the system chose, not 0
    # the address the socket is bound to decides, as it does the Host check: --host was judged as a string, so a name
    # of this machine on 127.0.1.1 was warned about and a name on a LAN address could pass as loopback
    if not token and not is_loopback(bound):
        typer.echo(f"songfeat: warning: serving on {host} without --token: anyone who can reach it can read and upload", err=True)
    for line in unsafe_settings(token, cors_origins, allowed_hosts, is_loopback(bound)):
        typer.echo(f"songfeat: warning: {line}", err=True)
    typer.echo(f"songfeat: serving {lib.root} at http://{host}:{port}/v1/ (index {lib.index.path}, {lib.workers} "
               f"worker{'s' if lib.workers != 1 else ''}, "
               f"docs at /docs)", err=True)
    run(lib, host=host, port=port, token=token or None, max_upload_mb=max_upload_mb, rehash=rescan,
        rescan_interval=rescan_interval, log_level="warning", sock=sock, cors_origins=cors_origins,
        allowed_hosts=allowed_hosts, quiet=quiet)


# The extra that brings each optional top-level module (pyproject.toml); a command that reaches a
# missing one says which extra to install, in one line.
EXTRA_OF = {"torch": "train", "safetensors": "train", "onnx": "train", "pandas": "train", "sklearn": "train",
            "matplotlib": "plot", "librosa": "train", "scipy": "train", "pyloudnorm": "train", "pyarrow": "parquet",
            "spotipy": "collect", "requests": "collect", "fastapi": "serve", "starlette": "serve", "uvicorn": "serve",
            "multipart": "serve", "python_multipart": "serve", "prometheus_client": "serve", "pebble": "serve",
            "ray": "ray", "essentia": "bench"}


# The modules each command imports whatever its options (a subset will do: the rest are still caught in `main`), checked
# before its options so that a lean install names the extra first; options that need one more (--plot, --format
# parquet, --engine ray) check it themselves.
COMMAND_NEEDS = {"serve": ("fastapi", "uvicorn", "pebble"), "build": ("pandas",), "train-heads": ("pandas",),
                 "train-default": ("pandas", "torch"), "evaluate-sources": ("pandas", "torch"),
                 "check-behaviour": ("pandas",), "evaluate-audio": ("pandas",), "train": ("torch",),
                 "evaluate": ("torch",), "compare": ("torch",), "export-onnx": ("torch", "onnx"),
                 "collect": ("requests",), "download": ("requests",)}


def require(command: str, module: str) -> None:
    """Fail in one line, before any work, when `module` (of extra EXTRA_OF[module]) is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise fail(needs_extra(command, EXTRA_OF.get(module, module)))


def _command_name(argv: list[str]) -> str:
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    return next((a for a in argv if a in names), "this command")


SINGLE_BLAS_COMMANDS = ("analyze", "analysis", "tags", "serve")


def main() -> None:
    """Console-script entry point: the app, with a missing optional dependency reported as its extra."""
    try:
        if _command_name(sys.argv[1:]) in SINGLE_BLAS_COMMANDS and "numpy" not in sys.modules:
            # analysis's matrix products are small; OpenBLAS's own thread pool only spins beside the tagger's
            # onnxruntime thread (~0.1 s of a 1-s cold run on 2 cores). A user's own setting wins.
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        app()
    except KeyboardInterrupt:  # while typer builds the commands, before its own handler
        interrupted_at_start()
    except ModuleNotFoundError as e:
        top = missing_package(e)
        if top not in EXTRA_OF:
            raise
        typer.echo(f"songfeat: error: {needs_extra(_command_name(sys.argv[1:]), EXTRA_OF[top])}", err=True)
        sys.exit(2)


if _LOADING:  # loaded: Ctrl-C is KeyboardInterrupt again, which each command (and `main`) turns into its line
    give_back()

if __name__ == "__main__":
    main()
