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


def test_cache_is_measured_afresh_when_the_audio_or_the_peer_changes(tmp_path, monkeypatch, capsys) -> None:
    # the cache was keyed on set/file name and a fixed tag per peer ("bt-kkcqt"): new audio under the same name, or a
    # new librosa / Essentia, printed the old figures as if measured now
    import importlib.metadata

    import numpy as np

    monkeypatch.setattr(B, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(B, "_load", lambda p: np.frombuffer(p.read_bytes(), np.uint8).astype(np.float32))
    calls = []

    def fake_peer(y):
        calls.append(y.size)
        return {"tempo": float(y.size)}

    monkeypatch.setitem(B.PEERS, "librosa", fake_peer)
    real_version = importlib.metadata.version
    version = {"librosa": "0.11.0"}
    monkeypatch.setattr(importlib.metadata, "version", lambda d: version.get(d) or real_version(d))
    audio = tmp_path / "000002.mp3"
    audio.write_bytes(b"one")
    clip = B.Clip("fma", "fma", audio, tempo=120.0)

    def tempo() -> float:
        return B.run_peers([clip], ["librosa"])["librosa"][clip.cache_key]["tempo"]

    assert tempo() == 3.0 and len(calls) == 1
    assert tempo() == 3.0 and len(calls) == 1  # a rerun reads the cache
    audio.write_bytes(b"other!")  # another recording under the same name
    assert tempo() == 6.0 and len(calls) == 2
    version["librosa"] = "0.12.0"
    assert tempo() == 6.0 and len(calls) == 3
    (cached,) = (B.CACHE / f"librosa-{B.peer_version('librosa')}").rglob("*.json")
    cached.write_text('{"tempo": 6')  # cut short (a write from before they were atomic): measured again
    assert tempo() == 6.0 and len(calls) == 4
    assert not [p for p in B.CACHE.rglob("*") if p.name.endswith(".tmp")]
    assert "read 1 librosa results from" in capsys.readouterr().out  # and says so


def test_clips_names_a_label_table_that_lacks_a_column(tmp_path) -> None:
    # a previews folder without labels.csv was a FileNotFoundError traceback, a table without a column a KeyError
    (tmp_path / "spotify-previews" / "audio").mkdir(parents=True)
    assert B.clips(tmp_path) == []
    fma = tmp_path / "fma-echonest"
    fma.mkdir()
    (fma / "a.mp3").write_bytes(b"x")
    (fma / "clips_labels.csv").write_text("file,bpm\na.mp3,120\n")
    with pytest.raises(SystemExit) as e:
        B.clips(tmp_path)
    assert str(e.value).endswith(f"{fma / 'clips_labels.csv'}: row 2: no 'tempo' column"), e.value


def test_tempo_misses_lists_each_clip_songfeat_misses_with_the_peers_beside_it(tmp_path) -> None:
    # a miss the peers share (they hear the same pulse in the audio) reads differently from one only songfeat makes
    def clip(name, tempo):
        return B.Clip("fma", "fma", tmp_path / name, tempo=tempo)

    shared, alone, hit, unlabelled = clip("a.mp3", 127.0), clip("b.mp3", 120.0), clip("c.mp3", 100.0), clip("d.mp3", None)
    res = {"songfeat": {shared.cache_key: {"tempo": 85.0}, alone.cache_key: {"tempo": 80.0},
                        hit.cache_key: {"tempo": 50.5}, unlabelled.cache_key: {"tempo": 90.0}},
           "essentia": {shared.cache_key: {"tempo": 170.0}, alone.cache_key: {"tempo": 121.0}},
           "librosa": {shared.cache_key: {"tempo": 86.0}}}
    misses = B.tempo_misses([shared, alone, hit, unlabelled], res)
    assert [m["clip"] for m in misses] == ["a.mp3", "b.mp3"]  # c is an acc2 hit (half tempo), d has no reference
    assert misses[0]["agree"] and not misses[1]["agree"]  # 170 is 85's double; 121 is the label's pulse
    assert misses[0]["librosa"] == 86.0 and "librosa" not in misses[1]
    assert abs(misses[0]["ratio"] - 85 / 127) < 1e-12
