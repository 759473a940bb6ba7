"""A Ctrl-C before any `songfeat` command can say what it kept: one `songfeat: error: interrupted` line and status 130.

Imported first by `songfeat/__init__.py`, before anything else of the package, so it uses only modules Python has
loaded at start-up (`_signal`, not `signal`, whose `enum` costs ~10 ms): its handler is in place for nearly all of the
command's first moments.
"""
from __future__ import annotations

import _signal as signal  # the objects `signal` re-exports (getsignal, default_int_handler, SIGINT), already loaded
import os
import sys

TYPE_CHECKING = False  # `typing` (~20 ms) is not imported: annotations only
if TYPE_CHECKING:
    from typing import NoReturn

INTERRUPTED = "interrupted"  # what a Ctrl-C says where no command says what it kept (README, "Exit status")
COMMAND_MODULES = ("songfeat", "songfeat.__main__", "songfeat.cli")  # what `python -m` runs as the command
SCRIPT_NAMES = ("songfeat", "songfeat.exe", "songfeat-script.py", "songfeat-script.pyw")  # its console script


def interrupted_at_start(*_signal: object) -> NoReturn:
    """End a Ctrl-C that came before any command could say what it kept (the package and the CLI loading, the commands
    being built) as a later one ends: one `songfeat: error: interrupted` line and status 130, not Python's traceback.
    Also the SIGINT handler while they load (hence `*_signal`)."""
    try:
        sys.stderr.write(f"songfeat: error: {INTERRUPTED}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # a stderr gone (or None): the status still says it
        pass
    sys.exit(130)


def starting_the_cli() -> bool:
    """Whether this process is the `songfeat` command starting: its console script, or `python -m songfeat` (or
    `songfeat.cli`), whose package is imported while sys.argv[0] is '-m', the module named in sys.orig_argv just
    before the command's own arguments (`-m songfeat`, `-msongfeat`, `-Im songfeat`)."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    if not argv:
        return False
    if argv[0] != "-m":
        return os.path.basename(argv[0]).lower() in SCRIPT_NAMES
    if len(orig) <= len(argv):
        return False
    name = orig[-len(argv)]
    return (name[name.index("m") + 1:] if name.startswith("-") else name) in COMMAND_MODULES


def hold_ctrl_c() -> bool:
    """Make a Ctrl-C `interrupted_at_start`'s line and 130 if Python's own handler (or this one) has it; whether it
    does now. A SIGINT ignored (a background job) or a program's own handler is left alone, as off the main thread."""
    if signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, interrupted_at_start):
        return False
    try:
        signal.signal(signal.SIGINT, interrupted_at_start)
    except ValueError:  # not the main thread: only it may set handlers
        return False
    return True


def give_back() -> None:
    """Python's own Ctrl-C handler back (KeyboardInterrupt), once what `hold_ctrl_c` held for has loaded or failed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def hold_ctrl_c_while_the_cli_starts() -> None:
    """While the `songfeat` command imports the package (~0.1 s before cli.py can hold Ctrl-C itself), a Ctrl-C is
    `interrupted_at_start`'s line and 130, not Python's traceback; cli.py gives Python its handler back once loaded.
    A program importing songfeat keeps Python's KeyboardInterrupt, and a SIGINT ignored (a background job) stays so."""
    if starting_the_cli():
        hold_ctrl_c()
