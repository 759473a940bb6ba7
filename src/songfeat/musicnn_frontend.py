"""musicnn's input, as it was trained: 16 kHz, 96 Slaney mel bands of |STFT|², log10(10000·x + 1), 3-s patches.

The recipe is musicnn 0.1.0's `extractor.batch_data` (librosa.feature.melspectrogram with its defaults:
power 2, centred frames, periodic Hann), with two deliberate differences:
  * the log compression is done in float32. musicnn casts the mel to float16 first; `10000·x` then
    stays float16 and overflows to inf for x > 6.55 (about 1% of a pop clip's bins), which spreads
    through the network;
  * frames are reflect-padded at the edges, as librosa < 0.10 (which musicnn was trained with) did;
    librosa >= 0.10 pads with zeros. Only the first and last frame of a window differ.
Self-contained (numpy, torch, soxr), so `frontend.compute` can reach it through `tagger` without a cycle.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000  # musicnn's configuration.SR
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, hop_length=256) + 1, what musicnn was trained on
MAX_PATCHES = 10

_F_SP = 200.0 / 3  # Slaney: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    return _MIN_LOG_MEL + math.log(f / _MIN_LOG_HZ) / _LOGSTEP if f >= _MIN_LOG_HZ else f / _F_SP


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=4)
def slaney_mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney-scale, area-normalised triangular filters [n_mels, n_fft//2+1]: librosa.filters.mel's default.

    Written out (a dozen lines, checked against librosa in the tests) so the tagger's cold start does
    not import numba.
    """
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    ramps = hz[:, None] - freqs[None, :]
    fdiff = np.diff(hz)[:, None]
    tri = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
    return torch.from_numpy((tri * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32))


def log_compress(mel_power: torch.Tensor) -> torch.Tensor:
    """musicnn's log10(10000·x + 1), always in float32 (see the module note on float16)."""
    return torch.log10(10000.0 * mel_power.float() + 1.0)


def resample(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono audio at `sr` -> float32 at 16 kHz with soxr HQ (librosa.load's resampler today)."""
    y = np.asarray(y, dtype=np.float32)
    if sr == SAMPLE_RATE:
        return y
    import soxr

    return soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def log_mel(y16: np.ndarray) -> np.ndarray:
    """16-kHz mono audio -> musicnn's input [frames, 96] float32, frames = 1 + len // 256."""
    y = torch.as_tensor(np.ascontiguousarray(y16, dtype=np.float32))
    if y.numel() <= N_FFT // 2:  # reflect padding needs more samples than half a frame
        y = torch.nn.functional.pad(y, (0, N_FFT // 2 + 1 - y.numel()))
    window = torch.hann_window(N_FFT, periodic=True)
    x = torch.stft(y, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = x.real.square() + x.imag.square()  # [257, frames]
    return log_compress(slaney_mel_filterbank() @ power).T.contiguous().numpy()


def patch_starts(n_frames: int, max_patches: int = MAX_PATCHES) -> np.ndarray:
    """First frames of min(max_patches, frames // 187) patches (at least 1), spread evenly from start to end."""
    if max_patches < 1:
        raise ValueError(f"max_patches must be at least 1, got {max_patches}")
    n = max(1, min(max_patches, n_frames // PATCH_FRAMES))
    return np.round(np.linspace(0, max(n_frames - PATCH_FRAMES, 0), n)).astype(np.int64)


def mel_patches(y: np.ndarray, sr: int, max_patches: int = MAX_PATCHES) -> np.ndarray:
    """One mono window -> [P, 187, 96] float32 log-mel patches, P <= max_patches.

    A window shorter than 3 s has its spectrogram repeated up to 187 frames: musicnn was trained
    that way (its config's pad_short is 'repeat-pad'), and silence padding would read as quiet music.
    """
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"the tagger takes one mono window (1-D), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("the tagger got an empty window")
    if not np.all(np.isfinite(y)):
        raise ValueError("the tagger got audio with NaN or infinite samples")
    spec = log_mel(resample(y, sr))
    if spec.shape[0] < PATCH_FRAMES:
        spec = np.tile(spec, (-(-PATCH_FRAMES // spec.shape[0]), 1))[:PATCH_FRAMES]
    return np.stack([spec[s:s + PATCH_FRAMES] for s in patch_starts(spec.shape[0], max_patches)])
