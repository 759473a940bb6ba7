"""The baseline songfeat's speed is compared with: the hand-written librosa pipeline a researcher would write.

For each file: librosa.load (mono, 44.1 kHz), MFCC with the seed's settings, beat_track (tempo),
chroma_stft (key), pyloudnorm (loudness). Prints one JSON line per file. Usage: python librosa_baseline.py FILE...
"""
from __future__ import annotations

import json
import sys

import librosa
import numpy as np
import pyloudnorm


def describe(path: str) -> dict:
    y, sr = librosa.load(path, sr=44100, mono=True)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, n_fft=4096, hop_length=8192, n_mels=256, htk=True)
    tempo, _beats = librosa.beat.beat_track(y=y, sr=sr)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    loudness = pyloudnorm.Meter(sr).integrated_loudness(y)
    return {"path": path, "tempo": float(np.atleast_1d(tempo)[0]), "key": int(chroma.mean(axis=1).argmax()),
            "loudness": float(loudness), "mfcc_mean": float(mfcc.mean())}


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(json.dumps(describe(p)), flush=True)
