"""Run a songfeat command with stderr on a pseudo-terminal (where its bars show) and stdout on a pipe."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading


def run_on_a_terminal(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, str]:
    """`python -m songfeat.cli *args` with stderr a terminal: (the finished process, stdout captured, and everything
    drawn on the terminal, decoded)."""
    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def read() -> None:  # drained as it is drawn: a full pty would block the bar, and with it the run
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child has gone
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        p = subprocess.run([sys.executable, "-m", "songfeat.cli", *args], stdout=subprocess.PIPE, stderr=slave,
                           timeout=timeout)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return p, b"".join(drawn).decode("utf-8", "replace")
