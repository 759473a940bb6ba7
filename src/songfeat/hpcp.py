"""A second pitch class profile for the key: Gomez's (2006) HPCP recipe, as Essentia's `HPCP` computes it by default.

songfeat's own HPCP (`descriptors.hpcp_frames`) reads every spectral peak of the shared 4096-point STFT (hop 1024,
Hann, dB-interpolated, 40-5000 Hz, amplitude, cos^2 weight). This one follows the published recipe instead:
non-overlapping 4096-sample frames under a Blackman-Harris 62 dB window, each frame's 60 strongest peaks above
1e-4 (parabola on the linear magnitude), 25-3500 Hz, magnitude squared with a cos weight, and the band preset
(peaks below and from 500 Hz make two profiles, each scaled to its own maximum, then added). The two profiles err on
different songs, and their average names Spotify's key more often than either (docs/descriptors.md, "Key and mode").
As in Essentia, a band holding nothing but the window's sidelobes (a lone pure tone below 500 Hz) is scaled up like
any other; music always has both bands.

Written from the published method; `scripts/try_measured_variants.py --only-hpcp-settings` checks the same numpy
pieces against Essentia's own (a benchmark-only peer, never imported here).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

N_FFT = 4096  # frame and hop: the frames do not overlap
FMIN, FMAX = 25.0, 3500.0  # Hz: the peaks that count
MAX_PEAKS = 60  # the strongest peaks per frame
PEAK_THRESHOLD = 1e-4  # linear magnitude, with the window scaled to sum 2 (a sinusoid of amplitude A peaks near A)
BAND_SPLIT_HZ = 500.0  # the band preset's split
SILENCE = 1e-6  # frames whose energy (bins up to sr/4) is below this fraction of the loudest frame's are left out
BINS = 3 * 12  # 1/3 semitone, C first, bins centred on equal-tempered pitches (A440)


@lru_cache(maxsize=4)
def _window(n: int) -> np.ndarray:
    """Symmetric 3-term Blackman-Harris (62 dB) window, scaled to sum 2 (float32)."""
    k = np.arange(n, dtype=np.float64) * (2 * math.pi / (n - 1))
    w = 0.44959 - 0.49364 * np.cos(k) + 0.05677 * np.cos(2 * k)
    return (w * 2.0 / w.sum()).astype(np.float32)


def frames(y: np.ndarray, sr: int) -> np.ndarray:
    """Per-frame 36-bin HPCP [frames, 36] (float64; each band scaled to its own maximum, so a frame peaks at 1 or 2) of
    mono float32 audio `y`, frames from sample 0 (the last one zero-padded), frames of (near) digital silence dropped;
    `descriptors.sum_normalised` sums them as the song's profile."""
    y = np.asarray(y, dtype=np.float32)
    if y.size == 0:
        return np.zeros((0, BINS))
    n = -(-y.size // N_FFT)
    x = np.pad(y, (0, n * N_FFT - y.size)).reshape(n, N_FFT)
    hi = min(N_FFT // 2, int(FMAX * N_FFT / sr) + 2)
    nb = N_FFT // 4 + 1
    mags, energy = [], []
    for i in range(0, n, 32):  # small blocks: less scratch memory, and faster here than one large transform
        s = np.fft.rfft(x[i: i + 32] * _window(N_FFT), axis=1)
        p = s.real**2 + s.imag**2
        mags.append(np.sqrt(p[:, : hi + 1]))
        energy.append(p[:, :nb].sum(1))
    mag, e = np.concatenate(mags), np.concatenate(energy)
    out = _from_peaks(*_peaks(mag, sr), n)
    return out[e > e.max() * SILENCE] if e.max() > 0 else out[:0]


def _peaks(m: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, frequency Hz, amplitude) of each frame's MAX_PEAKS strongest local maxima above PEAK_THRESHOLD in
    [FMIN, FMAX], placed by a parabola through the three linear magnitudes. As in Essentia's peak detection, the
    search starts at FMIN's bin, which counts as a peak (unplaced) when it is above the next bin."""
    a, b, c = m[:, :-2], m[:, 1:-1], m[:, 2:]
    cand = (b > a) & (b > c) & (b > PEAK_THRESHOLD)
    i0 = int(math.ceil(FMIN * N_FFT / sr))  # first bin searched; column i0 - 1 of `cand`
    cand[:, : max(0, i0 - 1)] = False
    cand[:, i0 - 1] = (m[:, i0] > m[:, i0 + 1]) & (m[:, i0] > PEAK_THRESHOLD)
    t, j = np.nonzero(cand)
    pa, pb, pc = (v[t, j].astype(np.float64) for v in (a, b, c))
    den = pa - 2 * pb + pc
    safe = np.abs(den) > 1e-12
    delta = np.clip(np.where(safe, 0.5 * (pa - pc) / np.where(safe, den, 1.0), 0.0), -0.5, 0.5)
    amp = pb - 0.25 * (pa - pc) * delta
    edge = j == i0 - 1
    delta[edge], amp[edge] = 0.0, pb[edge]
    freq = (j + 1 + delta) * sr / N_FFT
    ok = (freq >= FMIN) & (freq <= FMAX)
    t, freq, amp = t[ok], freq[ok], amp[ok]
    order = np.lexsort((-amp, t))  # by frame, loudest first
    rank = np.arange(t.size) - np.searchsorted(t[order], t[order], side="left")
    keep = order[rank < MAX_PEAKS]
    return t[keep], freq[keep], amp[keep]


def _from_peaks(t: np.ndarray, freq: np.ndarray, amp: np.ndarray, n_frames: int) -> np.ndarray:
    """Peaks -> [frames, 36]: magnitude squared, cos weight within half a semitone, the band preset."""
    x = amp**2
    pos = np.remainder(36.0 * np.log2(freq / 440.0) + 27.0, 36.0)  # A = bin 27, C = bin 0
    base = np.floor(pos)
    out = np.zeros((n_frames, BINS))
    for sel in (freq < BAND_SPLIT_HZ, freq >= BAND_SPLIT_HZ):
        h = np.zeros(n_frames * BINS)
        for off in (-1.0, 0.0, 1.0, 2.0):
            k = base[sel] + off
            d = (pos[sel] - k) / 3.0  # distance in semitones
            wt = np.where(np.abs(d) < 0.5, np.cos(np.pi * d), 0.0)
            h += np.bincount(t[sel] * BINS + np.remainder(k, BINS).astype(np.int64), weights=x[sel] * wt, minlength=h.size)
        h = h.reshape(n_frames, BINS)
        mx = h.max(1, keepdims=True)
        out += np.where(mx > 0, h / np.where(mx > 0, mx, 1.0), 0.0)
    return out
