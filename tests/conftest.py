"""Shared fixtures: where the optional ../shared data lives, and skipping cleanly when it is absent."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

# A suite started with SIGINT ignored (`cmd &` in a non-interactive shell, some CI runners) passes that on to every
# child, whose Python then installs no Ctrl-C handler, so the Ctrl-C tests saw no KeyboardInterrupt and failed. A
# handler set here is reset to the default at each child's exec, so children get Ctrl-C as a user's terminal sends it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SONGFEAT_SHARED", ROOT.parent / "shared")) / "data"
EXAMPLE = ROOT / "examples" / "fma-000002.mp3"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; tests that use it are skipped on a clone without it."""
    if not (SHARED / "spotify-previews" / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED} (set SONGFEAT_SHARED to its parent)")
    return SHARED


@pytest.fixture(scope="session")
def example_clip() -> Path:
    """The Creative Commons example clip committed in the repo."""
    return EXAMPLE


def _running(pid: int) -> bool:
    """Whether process `pid` still runs: a zombie (ended, waiting for its parent to reap it) has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it exists
        pass
    try:  # the state follows the last ')': the command name in parentheses may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # ended since, or no /proc (not Linux), where os.kill's answer stands
        return not Path("/proc/self/stat").exists()


@pytest.fixture
def running() -> Callable[[int], bool]:
    """`running(pid)`: whether process `pid` still runs, a zombie counting as ended (it reads /proc where there is one):
    the one check of the tests that a killed batch leaves no worker process behind."""
    return _running
