"""The MFCC summary one window gives the heads' second member: mean and spread of 20 dense MFCCs, in numpy.

The recipe of `frontend.MFCC_DENSE` (the previous default's input): the window cut or tiled to exactly
30 s, a centred 4096-point STFT every 2048 samples, 256 HTK mel bands without area normalisation, dB with
an 80-dB floor below the window's peak, an orthonormal DCT-II to 20 coefficients, 646 frames; then per
coefficient the mean and the (unbiased) standard deviation over the frames. Numpy only, so the lean
runtime (no torch) computes it; a test keeps it equal to the torch front-end it was written from.
The descriptors' STFT (same 4096-point frames, half the hop) already holds every second frame of it:
`SharedFrames` takes those from `descriptors.window_evidence`, and only the last frame or so, which the
tiling to 30 s changes, is transformed again.

`summaries` also gives the same recipe on the mel bands below `BAND_HZ` only (`band=True`), which the shipped
ridge member reads: the seed's bands run to 22.05 kHz, where an encoder's low-pass (16 kHz for a 128-kbit/s mp3,
11 kHz for a 22.05-kHz file) leaves bands at the 80-dB floor, and that alone moved a preview's summary by up to 9
standard deviations and its acousticness by up to 0.24. Every other input the heads read comes from 16-kHz audio.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import descriptors
from .descriptors import mel_filterbank_htk, power_spectrogram

SAMPLE_RATE = 44100
WINDOW_SECONDS = 30.0
N_FFT, HOP, N_MELS, N_MFCC, FRAMES, TOP_DB, AMIN = 4096, 2048, 256, 20, 646, 80.0, 1e-10
WIDTH = 2 * N_MFCC  # the summary's length: 20 means, then 20 standard deviations
BAND_HZ = 8000.0  # the band-limited summary keeps the mel bands wholly below this (the heads' other inputs: 16-kHz audio)


@lru_cache(maxsize=8)
def dct_basis(n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
    """Orthonormal DCT-II basis [n_mfcc, n_mels] (float64), as scipy.fft.dct(norm='ortho') applies it; the torch
    front-end (`frontend.dct_matrix`) uses it too."""
    n, k = np.arange(n_mels, dtype=np.float64), np.arange(n_mfcc, dtype=np.float64)[:, None]
    basis = np.cos(np.pi / n_mels * (n + 0.5) * k) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis


@lru_cache(maxsize=1)
def _mel_dct() -> tuple[np.ndarray, np.ndarray]:
    """The mel filters transposed [bins, mels] and the DCT basis transposed [mels, n_mfcc] (float32)."""
    mel = np.ascontiguousarray(mel_filterbank_htk(SAMPLE_RATE, N_FFT, N_MELS).T, dtype=np.float32)
    return mel, np.ascontiguousarray(dct_basis().T, dtype=np.float32)


@lru_cache(maxsize=1)
def band_mels() -> int:
    """How many of the recipe's mel bands lie wholly below `BAND_HZ` (their upper edge at or under it)."""
    fb = mel_filterbank_htk(SAMPLE_RATE, N_FFT, N_MELS)
    top = np.array([np.flatnonzero(row > 0).max() if np.any(row > 0) else 0 for row in fb]) * SAMPLE_RATE / N_FFT
    return int(np.sum(top <= BAND_HZ))


@lru_cache(maxsize=1)
def _band_dct() -> np.ndarray:
    """The DCT basis over the band-limited mels, transposed [band_mels, n_mfcc] (float32)."""
    return np.ascontiguousarray(dct_basis(N_MFCC, band_mels()).T, dtype=np.float32)


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """`y` made exactly n samples long: longer is cut, shorter is tiled (a short clip keeps its statistics instead of
    silence the model never saw); the torch front-end's windows (`frontend.fit_window`) are made the same way."""
    if y.size >= n or y.size == 0:
        return y[:n]
    return np.tile(y, -(-n // y.size))[:n]


class SharedFrames:
    """The MFCC frames' |STFT|^2 rows that `descriptors.window_evidence`'s STFT computes anyway (~5 MB for 30 s).

    Pass an instance as `window_evidence(..., on_power=...)`, then to `summary(..., shared=...)`. Its frames are
    every second one of the descriptors' (same 4096-point periodic Hann frames, hop 1024 against 2048), taken while
    they lie wholly inside the window, where the cut or tiled 30-s signal `summary` reads equals the window.
    """

    def __init__(self, n_samples: int, sr: int = SAMPLE_RATE):
        same_stft = sr == SAMPLE_RATE and descriptors.N_FFT == N_FFT and HOP == 2 * descriptors.HOP
        n = min(int(n_samples), int(round(WINDOW_SECONDS * sr)))
        self.frames = min(FRAMES, n // HOP) if same_stft and n > N_FFT else 0  # frame k spans samples [HOP(k-1), HOP(k+1))
        self._rows: list[np.ndarray] = []
        self._seen = 0

    def __call__(self, first: int, block: np.ndarray) -> None:
        """One block of the descriptors' |STFT|^2 rows, starting at their frame `first`."""
        j = np.arange(first, first + block.shape[0])
        keep = (j % 2 == 0) & (j // 2 < self.frames)
        if keep.any():
            self._rows.append(block[keep])
            self._seen += int(keep.sum())

    def power(self) -> np.ndarray:
        """[frames, 2049] |STFT|^2 of the shared frames (all of them, or none if the blocks did not arrive)."""
        if self._seen != self.frames or not self._rows:
            return np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)
        return np.concatenate(self._rows)


def summary(y: np.ndarray, sr: int = SAMPLE_RATE, shared: SharedFrames | None = None) -> np.ndarray:
    """One mono 44.1-kHz window -> float32 [40]: each MFCC's mean over the frames, then its standard deviation.

    `shared`: the frames the window's descriptor STFT already computed (`SharedFrames`); the result is the same.
    """
    return summaries(y, sr, shared)[0]


def summaries(y: np.ndarray, sr: int = SAMPLE_RATE, shared: SharedFrames | None = None,
              band: bool = False) -> tuple[np.ndarray, ...]:
    """(`summary`,) or, with `band`, (`summary`, the same recipe on the mel bands below `BAND_HZ`), from one
    spectrogram."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"the MFCC summary is defined at {SAMPLE_RATE} Hz, got {sr}")
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise ValueError("the MFCC summary needs at least one sample")
    mel_t, dct_t = _mel_dct()
    head = shared.power() if shared is not None else np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)
    rest = power_spectrogram(fit_length(y, int(round(WINDOW_SECONDS * sr))), N_FFT, HOP, first=head.shape[0])
    p = np.concatenate([head, rest]) if head.shape[0] else rest  # [frames, bins]: one product, as without sharing
    mel_db = 10.0 * np.log10(np.maximum(p @ mel_t, AMIN))
    out = [_stats(np.maximum(mel_db, mel_db.max() - TOP_DB) @ dct_t)]
    if band:
        low = mel_db[:, :band_mels()]
        out.append(_stats(np.maximum(low, low.max() - TOP_DB) @ _band_dct()))  # its own 80-dB floor, below its own peak
    return tuple(out)


def _stats(c: np.ndarray) -> np.ndarray:
    """[frames, 20] coefficients -> float32 [40]: per coefficient the mean and the unbiased standard deviation (a
    30-s window has exactly the recipe's `FRAMES`)."""
    c = c[:FRAMES]
    return np.concatenate([c.mean(0), c.std(0, ddof=1)]).astype(np.float32)


__all__ = ["summary", "summaries", "SharedFrames", "fit_length", "dct_basis", "band_mels", "WIDTH", "BAND_HZ"]
