"""The baseline songfeat's speed is compared with: the hand-written librosa pipeline a researcher would write.

For each file: librosa.load (mono, 44.1 kHz), MFCC with the seed's settings, beat_track (tempo),
chroma_stft (key), pyloudnorm (loudness). Prints one JSON line per file. Needs the `bench` extra (librosa,
pyloudnorm); a missing one, or a file librosa cannot read, is one error line (status 1).

    python benchmarks/librosa_baseline.py FILE...
"""
from __future__ import annotations

import argparse
import json

import benchutil


def describe(path: str) -> dict:
    import librosa
    import numpy as np
    import pyloudnorm

    y, sr = librosa.load(path, sr=44100, mono=True)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, n_fft=4096, hop_length=8192, n_mels=256, htk=True)
    tempo, _beats = librosa.beat.beat_track(y=y, sr=sr)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    loudness = pyloudnorm.Meter(sr).integrated_loudness(y)
    return {"path": path, "tempo": float(np.atleast_1d(tempo)[0]), "key": int(chroma.mean(axis=1).argmax()),
            "loudness": float(loudness), "mfcc_mean": float(mfcc.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE", help="audio files to describe")
    args = ap.parse_args()
    benchutil.require("librosa", "pyloudnorm")
    for p in args.files:
        try:
            out = describe(p)
        except Exception as e:  # noqa: BLE001  (audioread, soundfile and numba each raise their own types)
            raise benchutil.fail(f"{p}: librosa could not describe it ({type(e).__name__}: {e})") from None
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
