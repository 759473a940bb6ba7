"""The `songfeat` command: a thin typer skin over the Python API (parsing arguments, printing results)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Spotify-style audio features from audio, offline.")


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print one error line on stderr and return the Exit to raise."""
    typer.echo(f"songfeat: error: {message}", err=True)
    return typer.Exit(code)


# ---- analyze (core) --------------------------------------------------------------------------

# ---- research pipeline: build / train / evaluate / compare ------------------------------------

# ---- data collection: collect / download -------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
