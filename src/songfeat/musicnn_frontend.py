"""musicnn's input, as it was trained: 16 kHz, 96 Slaney mel bands of |STFT|², log10(10000·x + 1), 3-s patches.

The recipe is musicnn 0.1.0's `extractor.batch_data` (librosa.feature.melspectrogram with its defaults:
power 2, centred frames, periodic Hann), with two deliberate differences:
  * the log compression is done in float32. musicnn casts the mel to float16 first; `10000·x` then
    stays float16 and overflows to inf for x > 6.55 (about 1% of a pop clip's bins), which spreads
    through the network;
  * frames are reflect-padded at the edges, as librosa < 0.10 (which musicnn was trained with) did;
    librosa >= 0.10 pads with zeros. Only the first and last frame of a window differ.
Computed in numpy (the lean runtime has no torch); `log_mel_torch` is the same recipe in torch, kept for
the torch path and the equivalence tests. Self-contained (numpy, soxr), so `frontend.compute` can reach
it through `tagger` without a cycle.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000  # musicnn's configuration.SR
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, hop_length=256) + 1, what musicnn was trained on
MAX_PATCHES = 10
_CHUNK = 256  # frames per FFT block in `log_mel` (8 s of audio)

_F_SP = 200.0 / 3  # Slaney: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    return _MIN_LOG_MEL + math.log(f / _MIN_LOG_HZ) / _LOGSTEP if f >= _MIN_LOG_HZ else f / _F_SP


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=4)
def slaney_mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters [n_mels, n_fft//2+1] float32: librosa.filters.mel's default.

    Written out (a dozen lines, checked against librosa in the tests) rather than shipped as a matrix
    file: it is exact to float32 rounding, costs ~0.1 ms, and neither librosa nor numba is needed at run time.
    """
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    ramps = hz[:, None] - freqs[None, :]
    fdiff = np.diff(hz)[:, None]
    tri = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
    fb = (tri * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32)
    fb.flags.writeable = False  # shared by the cache
    return fb


def log_compress(mel_power: np.ndarray) -> np.ndarray:
    """musicnn's log10(10000·x + 1), always in float32 (see the module note on float16)."""
    return np.log10(np.float32(10000.0) * np.asarray(mel_power, dtype=np.float32) + np.float32(1.0))


def resample(y: np.ndarray, sr: int) -> np.ndarray:
    """Mono audio at `sr` -> 1-D float32 at 16 kHz with soxr HQ (librosa.load's resampler today)."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if sr == SAMPLE_RATE:
        return y
    import soxr

    return soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


# The tagger hears each window at one level: its input is log-compressed mel energy, so its tags move with the file's
# gain (6 dB less raised the MTT voice words of a string orchestra from 0.03 to 0.08, and tipped three of 18 CC
# instrumentals under the vocal gate). The level is the 90th percentile of 100-ms frame power, the target the dev
# previews' median of it (-9.3 dB, older previews -12.2, the CC classical and speech clips about -21), and the gain is
# bounded so near-silence is not blown up. How loud the music is still reaches the default model's heads, through
# `evidence.dynamics` and the measured loudness (docs/accuracy-notes.md, "FFmpeg's encoders and the level").
LEVEL_DB = -10.0
GAIN_DB = (-20.0, 30.0)


def level_db(y16: np.ndarray) -> float:
    """A 16-kHz window's level for the tagger: the 90th percentile of its 100-ms frames' power, in dB of full scale
    (the loud part of the window, which pauses and fades do not pull down)."""
    y = np.asarray(y16, dtype=np.float64)
    n = SAMPLE_RATE // 10
    frames = y[: y.size // n * n].reshape(-1, n) if y.size >= n else y.reshape(1, -1)
    return float(np.percentile(10 * np.log10(np.maximum((frames ** 2).mean(1), 1e-12)), 90))


def levelled(y16: np.ndarray, target_db: float = LEVEL_DB) -> np.ndarray:
    """A 16-kHz window scaled so its `level_db` is `target_db` (the gain bounded to `GAIN_DB`), as float32."""
    gain = float(np.clip(target_db - level_db(y16), *GAIN_DB))
    return (np.asarray(y16, dtype=np.float32) * np.float32(10 ** (gain / 20))).astype(np.float32, copy=False)


def _padded(y16: np.ndarray) -> np.ndarray:
    """float32 audio long enough for reflect padding (more than half a frame): zeros appended if not."""
    y = np.ascontiguousarray(y16, dtype=np.float32).reshape(-1)
    if y.size <= N_FFT // 2:
        y = np.pad(y, (0, N_FFT // 2 + 1 - y.size))
    return y


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)  # periodic, as torch/librosa


def n_frames(n_samples: int) -> int:
    """Frames `log_mel` gives for `n_samples` of 16-kHz audio (centred frames, a hop of 256)."""
    return 1 + max(n_samples, N_FFT // 2 + 1) // HOP


def log_mel(y16: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """16-kHz mono audio -> musicnn's input [frames, 96] float32, frames = 1 + len // 256 (numpy).

    `rows`: only these frame indices (sorted), e.g. the frames of the patches the tagger reads; each frame is
    computed on its own, so a row is the same whichever other rows are asked for.
    """
    y = _padded(y16)
    y = np.pad(y, N_FFT // 2, mode="reflect")  # centred frames
    n = 1 + (y.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(y, (n, N_FFT), (HOP * y.strides[0], y.strides[0]), writeable=False)
    if rows is not None:
        frames = frames[np.asarray(rows, dtype=np.int64)]
    fb = slaney_mel_filterbank().T.astype(np.float64)
    out = np.empty((frames.shape[0], N_MELS), dtype=np.float32)
    for i in range(0, frames.shape[0], _CHUNK):  # in chunks: a few MB at a time, however long the audio
        spec = np.fft.rfft(frames[i:i + _CHUNK].astype(np.float64) * _hann(), axis=1)  # float64: at least as exact as torch's float32
        out[i:i + _CHUNK] = log_compress((spec.real ** 2 + spec.imag ** 2) @ fb)  # [frames, 257] power -> mel
    return out


def log_mel_torch(y16: np.ndarray) -> np.ndarray:
    """`log_mel` in torch (torch.stft): the torch path's front-end, kept to check the numpy one against."""
    import torch

    y = torch.from_numpy(_padded(y16).copy())
    window = torch.hann_window(N_FFT, periodic=True)
    x = torch.stft(y, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = x.real.square() + x.imag.square()  # [257, frames]
    mel = torch.from_numpy(np.array(slaney_mel_filterbank())) @ power
    return torch.log10(10000.0 * mel + 1.0).T.contiguous().numpy()


def patch_starts(n_frames: int, max_patches: int = MAX_PATCHES) -> np.ndarray:
    """First frames of min(max_patches, frames // 187) patches (at least 1), spread evenly from start to end."""
    if max_patches < 1:
        raise ValueError(f"max_patches must be at least 1, got {max_patches}")
    n = max(1, min(max_patches, n_frames // PATCH_FRAMES))
    return np.round(np.linspace(0, max(n_frames - PATCH_FRAMES, 0), n)).astype(np.int64)


def mel_patches(y: np.ndarray, sr: int, max_patches: int = MAX_PATCHES, backend: str = "onnx") -> np.ndarray:
    """One mono window -> [P, 187, 96] float32 log-mel patches, P <= max_patches.

    A window shorter than 3 s has its spectrogram repeated up to 187 frames: musicnn was trained
    that way (its config's pad_short is 'repeat-pad'), and silence padding would read as quiet music.
    `backend` "torch" computes the spectrogram with `log_mel_torch` (the torch path), else with numpy.
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
    y16 = resample(y, sr)
    n = n_frames(y16.size)
    if backend == "torch" or n < PATCH_FRAMES:
        spec = (log_mel_torch if backend == "torch" else log_mel)(y16)
        if spec.shape[0] < PATCH_FRAMES:
            spec = np.tile(spec, (-(-PATCH_FRAMES // spec.shape[0]), 1))[:PATCH_FRAMES]
        return np.stack([spec[s:s + PATCH_FRAMES] for s in patch_starts(spec.shape[0], max_patches)])
    # only the frames the patches cover (5 patches read 15 s of a 30-s window): the same values, half the work
    starts = patch_starts(n, max_patches)
    rows = np.unique(np.concatenate([np.arange(s, s + PATCH_FRAMES) for s in starts]))
    spec = log_mel(y16, rows)
    return np.stack([spec[i:i + PATCH_FRAMES] for i in np.searchsorted(rows, starts)])
