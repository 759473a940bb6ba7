"""The MFCC summary one window gives the heads' second member: mean and spread of 20 dense MFCCs, in numpy.

The recipe of `frontend.MFCC_DENSE` (the previous default's input): the window cut or tiled to exactly
30 s, a centred 4096-point STFT every 2048 samples, 256 HTK mel bands without area normalisation, dB with
an 80-dB floor below the window's peak, an orthonormal DCT-II to 20 coefficients, 646 frames; then per
coefficient the mean and the (unbiased) standard deviation over the frames. Numpy only, so the lean
runtime (no torch) computes it; a test keeps it equal to the torch front-end it was written from.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .descriptors import mel_filterbank_htk, power_spectrogram

SAMPLE_RATE = 44100
WINDOW_SECONDS = 30.0
N_FFT, HOP, N_MELS, N_MFCC, FRAMES, TOP_DB, AMIN = 4096, 2048, 256, 20, 646, 80.0, 1e-10
WIDTH = 2 * N_MFCC  # the summary's length: 20 means, then 20 standard deviations


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


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """`y` made exactly n samples long: longer is cut, shorter is tiled (a short clip keeps its statistics instead of
    silence the model never saw); the torch front-end's windows (`frontend.fit_window`) are made the same way."""
    if y.size >= n or y.size == 0:
        return y[:n]
    return np.tile(y, -(-n // y.size))[:n]


def summary(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One mono 44.1-kHz window -> float32 [40]: each MFCC's mean over the frames, then its standard deviation."""
    if sr != SAMPLE_RATE:
        raise ValueError(f"the MFCC summary is defined at {SAMPLE_RATE} Hz, got {sr}")
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise ValueError("the MFCC summary needs at least one sample")
    mel_t, dct_t = _mel_dct()
    p = power_spectrogram(fit_length(y, int(round(WINDOW_SECONDS * sr))), N_FFT, HOP)  # [frames, bins]
    db = 10.0 * np.log10(np.maximum(p @ mel_t, AMIN))
    db = np.maximum(db, db.max() - TOP_DB)
    c = (db @ dct_t)[:FRAMES]  # [646, 20]: a 30-s window has exactly the recipe's frame count
    return np.concatenate([c.mean(0), c.std(0, ddof=1)]).astype(np.float32)


__all__ = ["summary", "fit_length", "dct_basis", "WIDTH"]
