"""Front-ends: batched MFCC and log-mel spectrograms in torch, described by a spec saved with each model.

`SEED_MFCC` is the seed report's transform exactly (torchaudio.transforms.MFCC with n_fft 4096,
hop 8192, 256 HTK mel bands without area normalisation, 20 coefficients, dB with an 80 dB floor,
orthonormal DCT-II) giving 20x160 for a 30-s clip at 44.1 kHz. Its hop is twice its FFT size, so it
reads only half of the audio; `MFCC_DENSE` fixes that and `LOGMEL` is the richer input for newer
models. `MUSICNN` is not a spectrogram but the pretrained musicnn tagger's output for the window
(`songfeat.tagger`: 100 tag probabilities and embeddings, one 3512-vector stored as [3512, 1]), of the window
brought to one level first, as the default model's tagger hears it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from .audio import SAMPLE_RATE, WINDOW_SECONDS
from .descriptors import mel_filterbank_htk
from .mfcc import dct_basis, fit_length
from .musicnn_frontend import LEVEL_DB, SAMPLE_RATE as RATE16, levelled, resample

AMIN = 1e-10  # power floor before the log, as torchaudio and librosa use
MUSICNN_CHANNELS = 3512  # len(songfeat.tagger.vector(...)); a test keeps the two equal
KINDS = ("mfcc", "logmel", "musicnn")


@dataclass(frozen=True)
class FrontendSpec:
    """Everything needed to recompute a model's input from audio; stored in every bundle."""

    kind: str = "mfcc"  # "mfcc", "logmel" or "musicnn" (tagger outputs; its own fixed recipe, see tagger.py)
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 4096
    hop_length: int = 8192
    n_mels: int = 256
    n_mfcc: int = 20
    frames: int = 160  # output is padded with zeros or trimmed to this many frames
    top_db: float | None = 80.0
    window_seconds: float = WINDOW_SECONDS
    # musicnn only: the level (dB) each window is brought to before the tagger, as the default model's evidence does
    # (`musicnn_frontend.levelled`); None, as in bundles and stores made before it, feeds the window as it is
    tagger_level_db: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"front-end kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels, got {self.n_mfcc}")

    @property
    def channels(self) -> int:
        """Rows of the output: coefficients for MFCC, mel bands for log-mel, tagger outputs for musicnn."""
        if self.kind == "musicnn":
            return MUSICNN_CHANNELS
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def shape(self) -> tuple[int, int]:
        return (self.channels, self.frames)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendSpec":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


SEED_MFCC = FrontendSpec()
MFCC_DENSE = replace(SEED_MFCC, hop_length=2048, frames=646)  # hop <= n_fft: every sample is read
LOGMEL = FrontendSpec(kind="logmel", n_fft=2048, hop_length=1024, n_mels=96, frames=1292)
# musicnn's STFT/mel numbers for the record; the 44.1-kHz window is resampled inside the tagger.
MUSICNN = FrontendSpec(kind="musicnn", n_fft=512, hop_length=256, n_mels=96, frames=1, top_db=None,
                       tagger_level_db=LEVEL_DB)
SPECS: dict[str, FrontendSpec] = {"mfcc": SEED_MFCC, "mfcc-dense": MFCC_DENSE, "logmel": LOGMEL, "musicnn": MUSICNN}


def get_spec(name: str) -> FrontendSpec:
    """Look a named front-end up; raise ValueError listing the names when unknown."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown front-end {name!r}; choose one of {', '.join(SPECS)}") from None


def spec_name(spec: FrontendSpec) -> str:
    """How messages name a spec: its `--frontend` name and shape ("mfcc-dense (20x646)"), or its kind and shape."""
    name = next((n for n, s in SPECS.items() if s == spec), f"custom {spec.kind}")
    return f"{name} ({spec.channels}x{spec.frames})"


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """HTK-scale triangular mel filters without area normalisation, [n_mels, n_fft//2+1] (float32).

    Equal to librosa.filters.mel(htk=True, norm=None); the numpy formula lives in
    `descriptors.mel_filterbank_htk`, shared with the measurements.
    """
    return torch.from_numpy(mel_filterbank_htk(sample_rate, n_fft, n_mels).astype(np.float32))


@lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II basis [n_mfcc, n_mels], as scipy.fft.dct(norm='ortho') applies it (`mfcc.dct_basis`)."""
    return torch.from_numpy(dct_basis(n_mfcc, n_mels).astype(np.float32))


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> torch.Tensor:
    """The periodic Hann window every STFT here uses (torch's and librosa's default)."""
    return torch.hann_window(n_fft, periodic=True)


def power_spectrogram(y: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT|^2 of [B, N] (or [N]) audio, centred with reflect padding as torch.stft: [B, n_fft//2+1, T].

    Framed by hand (unfold + rfft): torch.stft(center=True) measured up to ~3x slower on CPU here.
    """
    squeeze = y.dim() == 1
    y = y[None] if squeeze else y
    if y.shape[-1] <= n_fft // 2:  # reflect padding needs more samples than half a frame
        y = torch.nn.functional.pad(y, (0, n_fft // 2 + 1 - y.shape[-1]))
    yp = torch.nn.functional.pad(y[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    x = torch.fft.rfft(yp.unfold(-1, n_fft, hop_length) * hann_window(n_fft))
    p = (x.real.square() + x.imag.square()).transpose(-1, -2)
    return p[0] if squeeze else p


def power_to_db(s: torch.Tensor, top_db: float | None) -> torch.Tensor:
    """10*log10 of power with a floor `top_db` below each item's maximum ([B, ...] input)."""
    db = 10.0 * torch.log10(torch.clamp(s, min=AMIN))
    if top_db is not None:
        peak = db.amax(dim=tuple(range(1, db.dim())), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def pad_or_trim(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Zero-pad or cut the last axis to `frames`, as the seed's pad_tensor did."""
    t = x.shape[-1]
    if t >= frames:
        return x[..., :frames]
    return torch.nn.functional.pad(x, (0, frames - t))


def compute(spec: FrontendSpec, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The front-end of a batch of equal-length mono clips [B, N] (or one clip [N]) -> [B, C, frames]."""
    y = torch.as_tensor(audio, dtype=torch.float32)
    if y.dim() == 1:
        y = y[None]
    if spec.kind == "musicnn":
        return _musicnn_vectors(spec, y)
    mel = mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels) @ power_spectrogram(y, spec.n_fft, spec.hop_length)
    db = power_to_db(mel, spec.top_db)
    out = dct_matrix(spec.n_mfcc, spec.n_mels) @ db if spec.kind == "mfcc" else db
    return pad_or_trim(out, spec.frames)


def _musicnn_vectors(spec: FrontendSpec, y: torch.Tensor) -> torch.Tensor:
    """The tagger's 3512-vector of each clip in [B, N] -> [B, 3512, 1] (imported lazily: it loads weights), each clip
    brought to `spec.tagger_level_db` first when the spec names one."""
    from . import tagger

    y16 = [resample(w, spec.sample_rate) for w in y.numpy()]
    if spec.tagger_level_db is not None:
        y16 = [levelled(w, spec.tagger_level_db) for w in y16]
    vecs = [tagger.vector(d) for d in tagger.describe_batch(y16, RATE16)]
    return torch.from_numpy(np.stack(vecs))[:, :, None]


def fit_window(y: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """Make one analysis window exactly `window_seconds` long: longer is cut, shorter is tiled.

    Tiling (repeating the clip) keeps a short clip's statistics instead of padding with silence
    the model never saw in training.
    """
    return fit_length(y, int(round(spec.window_seconds * spec.sample_rate)))
