"""How songfeat's beats agree with librosa's beat tracker on the dev previews (no beat annotations exist here).

For each preview: songfeat's beats (`songfeat.audio_analysis`) and librosa.beat.beat_track's (its
defaults, 22.05 kHz), compared by F-measure with a +/-70 ms window (the MIREX beat-tracking
tolerance), directly and allowing for an octave (librosa's beats with their midpoints added, or every
other one dropped). librosa is a peer, not the truth: the figure says how often the two trackers
place the same grid, not which is right.

    python scripts/analysis_beats_vs_librosa.py [--shared ../shared/data] [--limit N]
"""
from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import numpy as np

TOLERANCE = 0.07


def f_measure(est: np.ndarray, ref: np.ndarray, tol: float = TOLERANCE) -> float:
    """Beat F-measure: greedy one-to-one matching of estimated to reference beats within `tol` seconds."""
    if est.size == 0 or ref.size == 0:
        return 0.0
    used = np.zeros(ref.size, dtype=bool)
    hits = 0
    for t in est:
        d = np.abs(ref - t)
        d[used] = np.inf
        j = int(np.argmin(d))
        if d[j] <= tol:
            used[j] = True
            hits += 1
    p, r = hits / est.size, hits / ref.size
    return 0.0 if hits == 0 else 2 * p * r / (p + r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    import librosa

    from songfeat.analysis import audio_analysis

    folder = args.shared / "spotify-previews"
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="")))
    direct, octave, same_tempo, ours_ok, theirs_ok = [], [], [], [], []
    for r in rows[: args.limit]:
        path = folder / "audio" / f"{r['track_id']}.mp3"
        if not path.is_file():
            continue
        result = audio_analysis(path)
        ours = np.array([b["start"] for b in result["beats"]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, sr = librosa.load(path, sr=22050, mono=True)
            tempo, frames = librosa.beat.beat_track(y=y, sr=sr)
        ref = librosa.frames_to_time(frames, sr=sr)
        t_ours, t_lib, t_spot = result["track"]["tempo"], float(np.atleast_1d(tempo)[0]), float(r["tempo"])
        same_tempo.append(abs(t_lib / t_ours - 1) <= 0.04 if t_ours > 0 else False)
        ours_ok.append(abs(t_ours / t_spot - 1) <= 0.04)
        theirs_ok.append(abs(t_lib / t_spot - 1) <= 0.04)
        direct.append(f_measure(ours, ref))
        doubled = np.sort(np.concatenate([ref, (ref[1:] + ref[:-1]) / 2])) if ref.size > 1 else ref
        octave.append(max(direct[-1], f_measure(ours, doubled), f_measure(ours, ref[::2]), f_measure(ours, ref[1::2])))
    d, o = np.array(direct), np.array(octave)
    print(f"{d.size} previews, F-measure (+/-{TOLERANCE * 1000:.0f} ms) of songfeat's beats against librosa's: "
          f"median {np.median(d):.2f}, mean {d.mean():.2f}, >= 0.8 for {np.mean(d >= 0.8):.0%}")
    same = np.array(same_tempo)
    print(f"where librosa's tempo is songfeat's (within 4%, {same.sum()} clips): median F {np.median(d[same]):.2f}, "
          f"min {d[same].min():.2f}; tempo within 4% of Spotify's: songfeat {np.mean(ours_ok):.0%}, librosa {np.mean(theirs_ok):.0%}")
    print(f"allowing an octave (double/half the beat rate): median {np.median(o):.2f}, mean {o.mean():.2f}, "
          f">= 0.8 for {np.mean(o >= 0.8):.0%}")


if __name__ == "__main__":
    main()
