"""Shared fixtures: where the optional ../shared data lives, and skipping cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
