"""The side-by-side benchmark's scoring rules (no peers run here)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_measured", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_measured.py")
B = importlib.util.module_from_spec(_spec)
sys.modules["bench_measured"] = B  # dataclasses look their module up here
_spec.loader.exec_module(B)


def test_tempo_hits_accepts_octaves_and_thirds_only_in_acc2() -> None:
    assert B.tempo_hits(123.0, 120.0) == (True, True)
    assert B.tempo_hits(60.0, 120.0) == (False, True)
    assert B.tempo_hits(360.0, 120.0) == (False, True)
    assert B.tempo_hits(40.5, 120.0) == (False, True)
    assert B.tempo_hits(80.0, 120.0) == (False, False)  # 2/3 is not an accepted ratio
    assert B.tempo_hits(0.0, 120.0) == (False, False)


@pytest.mark.parametrize("est,ref,score", [
    ((0, 1), (0, 1), 1.0),   # C major = C major
    ((7, 1), (0, 1), 0.5),   # G major vs C major: a fifth up
    ((5, 1), (0, 1), 0.5),   # F major vs C major: a fifth down
    ((9, 0), (0, 1), 0.3),   # A minor vs C major: relative
    ((0, 1), (9, 0), 0.3),   # C major vs A minor: relative
    ((0, 0), (0, 1), 0.2),   # C minor vs C major: parallel
    ((2, 1), (0, 1), 0.0),
    ((-1, 1), (0, 1), 0.0),
])
def test_mirex_key_score(est, ref, score) -> None:
    assert B.mirex_key_score(*est, *ref) == score


def test_clips_reads_documented_keys(shared_data) -> None:
    clips = B.clips(shared_data)
    beh = {c.path.name: (c.key, c.mode) for c in clips if c.set == "behaviour"}
    assert beh.get("classical_beethoven_moonlight_pitman_piano.mp3") == (1, 0)  # C# minor
    dev = [c for c in clips if c.set == "dev"]
    assert {c.group for c in dev} == {"forró", "pop/rock"} and len(dev) == 102
