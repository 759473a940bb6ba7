"""Voice pitch statistics that tell speech from singing: speech glides, singing holds notes.

The VAD hears any voice, sung or spoken, as speech (an unaccompanied singer reads 0.8, like an audiobook),
and so does a forró singer over an accordion. What Spotify's speechiness separates is *how* the voice
moves: spoken pitch slides continuously through short voiced syllables, sung pitch sits on notes for
hundreds of milliseconds. A YIN f0 track (de Cheveigné & Kawahara 2002: cumulative-mean-normalised
difference, first dip under a threshold, parabolic refinement) on the 16-kHz window gives four numbers:
- `voiced_share`: frames with a clear periodicity, among all frames;
- `steady_share`: voiced frames inside a 150-ms stretch whose smoothed pitch stays within a semitone;
- `voiced_run_p90_s`: the 90th percentile of continuous voiced runs, in seconds (notes are long);
- `pitch_slope`: the median pitch change between neighbouring voiced frames, in semitones per 10 ms.
`steady_frames` marks the held notes, so `songfeat.evidence` can discount the VAD's speech inside them.
Textbook settings (40-ms frames, 10-ms hop, 70-800 Hz, dip threshold 0.2), not fitted to any data.
"""
from __future__ import annotations

import numpy as np

FRAME = 640  # 40 ms at 16 kHz: two periods of the lowest pitch
HOP = 160  # 10 ms
FMIN, FMAX = 70.0, 800.0
DIP = 0.2  # YIN's aperiodicity threshold: a frame is voiced when its normalised difference dips below it
GATE_DB = 35.0  # frames quieter than the loudest by more than this are not judged
STEADY_FRAMES = 15  # 150 ms
STEADY_SEMITONES = 1.0
BLOCK = 256  # frames per FFT block: memory stays a few MB whatever the window length
STATS = ("voiced_share", "steady_share", "voiced_run_p90_s", "pitch_slope")


def f0_track(y: np.ndarray, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Per 10-ms frame: f0 in Hz and whether the frame is voiced (periodic and not quiet)."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n = 1 + (y.size - FRAME) // HOP if y.size >= FRAME else 0
    if n <= 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    tmin, tmax = int(sr / FMAX), min(int(sr / FMIN), FRAME // 2)
    nfft = 1 << int(np.ceil(np.log2(FRAME + tmax)))  # no wrap-around up to lag tmax
    frames = np.lib.stride_tricks.sliding_window_view(y, FRAME)[::HOP][:n]
    f0, ap, energy = np.empty(n), np.empty(n), np.empty(n)
    lags = np.arange(1, tmax + 1)
    for s in range(0, n, BLOCK):
        x = frames[s:s + BLOCK].astype(np.float64)
        x = x - x.mean(1, keepdims=True)
        sq = x ** 2
        e = sq.sum(1)
        r = np.fft.irfft(np.abs(np.fft.rfft(x, nfft)) ** 2, nfft)[:, 1:tmax + 1]
        back = np.cumsum(sq[:, ::-1], axis=1)  # back[:, j] = energy of the last j + 1 samples
        tail = back[:, ::-1][:, lags]  # energy of x[tau:]
        head = e[:, None] - back[:, lags - 1]  # energy of x[:FRAME - tau]
        d = np.maximum(head + tail - 2 * r, 0.0)
        cmnd = d * lags / np.maximum(np.cumsum(d, axis=1), 1e-12)
        seg = cmnd[:, tmin - 1:]
        rows = np.arange(len(x))
        below = seg < DIP
        k = np.where(below.any(1), below.argmax(1), seg.argmin(1))
        for _ in range(seg.shape[1]):  # walk down from the first dip to its local minimum
            nxt = np.minimum(k + 1, seg.shape[1] - 1)
            move = seg[rows, nxt] < seg[rows, k]
            if not move.any():
                break
            k = np.where(move, nxt, k)
        a, b, c = seg[rows, np.maximum(k - 1, 0)], seg[rows, k], seg[rows, np.minimum(k + 1, seg.shape[1] - 1)]
        den = a - 2 * b + c
        inner = (k > 0) & (k < seg.shape[1] - 1) & (den > 1e-12)
        off = np.where(inner, 0.5 * (a - c) / np.where(inner, den, 1.0), 0.0)
        f0[s:s + BLOCK] = sr / (k + tmin + np.clip(off, -0.5, 0.5))
        ap[s:s + BLOCK], energy[s:s + BLOCK] = b, e
    level = 10 * np.log10(energy + 1e-12)
    voiced = (ap < DIP) & (level > level.max() - GATE_DB) & (energy > 1e-8 * FRAME)
    return f0, voiced


def semitones(f0: np.ndarray) -> np.ndarray:
    """Hz -> semitones relative to A4 (440 Hz)."""
    return 12 * np.log2(np.maximum(f0, 1e-6) / 440.0)


def steady_frames(f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """Per frame: inside a voiced 150-ms stretch whose smoothed pitch stays within a semitone (a held note)."""
    steady = np.zeros(f0.size, dtype=bool)
    if f0.size < STEADY_FRAMES or not voiced.any():
        return steady
    st = semitones(f0)
    view = np.lib.stride_tricks.sliding_window_view
    smooth = np.median(view(np.pad(st, 2, mode="edge"), 5), axis=1)
    win = view(smooth, STEADY_FRAMES)
    ok = view(voiced, STEADY_FRAMES).all(1) & (win.max(1) - win.min(1) < STEADY_SEMITONES)
    for i in range(STEADY_FRAMES):  # mark every frame covered by a steady stretch
        steady[i:i + ok.size] |= ok
    return steady


def outside_notes(probs: np.ndarray, steady: np.ndarray, vad_frame: int) -> np.ndarray:
    """Per VAD frame of `vad_frame` samples: the share of it *not* inside a held note (1 where no pitch frame falls)."""
    if probs.size == 0:
        return np.zeros(0)
    centres = np.arange(steady.size) * HOP + FRAME // 2  # pitch frame centres, in samples
    k = np.minimum(centres // vad_frame, probs.size - 1)
    counts = np.bincount(k, minlength=probs.size)
    sung = np.bincount(k, weights=steady.astype(np.float64), minlength=probs.size) / np.maximum(counts, 1)
    return 1.0 - sung


def summarise(f0: np.ndarray, voiced: np.ndarray, sr: int = 16000, steady: np.ndarray | None = None) -> dict[str, float]:
    """The `STATS` of one f0 track (all 0 when nothing is voiced); `steady`: its `steady_frames`, if at hand."""
    out = dict.fromkeys(STATS, 0.0)
    if not voiced.any():
        return out
    st = semitones(f0)
    step = np.abs(np.diff(st))
    joined = voiced[1:] & voiced[:-1] & (step < STEADY_SEMITONES)  # frame i+1 continues frame i's run
    starts = np.flatnonzero(voiced & ~np.concatenate([[False], joined]))
    ends = np.flatnonzero(voiced & ~np.concatenate([joined, [False]]))
    out["voiced_share"] = float(voiced.mean())
    out["voiced_run_p90_s"] = float(np.percentile(ends - starts + 1, 90) * HOP / sr)
    both = voiced[1:] & voiced[:-1]
    if both.any():
        out["pitch_slope"] = float(np.median(step[both]))
    steady = steady_frames(f0, voiced) if steady is None else steady
    out["steady_share"] = float(steady[voiced].mean())
    return out


def describe(y16: np.ndarray, sr: int = 16000) -> dict[str, float]:
    """Speech-versus-singing statistics of one mono window at 16 kHz (see the module docstring)."""
    return summarise(*f0_track(y16, sr), sr=sr)


__all__ = ["describe", "f0_track", "summarise", "steady_frames", "outside_notes", "STATS"]
