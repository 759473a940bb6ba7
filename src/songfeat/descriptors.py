"""Measured features on Spotify's definitions and scales: duration, loudness, tempo, key/mode, time signature.

How a song is measured (bounded memory, whole-song answer):

* Each 30-s window (`songfeat.audio.iter_windows`) is reduced by `window_evidence` to a small
  `WindowEvidence`; no audio is kept. One STFT (numpy, Hann 4096, hop 1024 at 44.1 kHz, ~43
  frames/s) gives everything: a log-mel spectral-flux onset envelope and a < 200 Hz flux envelope
  (one float per frame each), a 12-bin chroma sum from spectral peaks, a 36-bin HPCP sum from
  interpolated peaks, and the BS.1770 K-weighted energy of each frame; a second 36-bin HPCP sum
  (Gomez's recipe, `songfeat.hpcp`) comes from its own non-overlapping frames, and each frame's
  peak chroma is kept (float16) for the chord changes. That is ~52 kB per window, ~6 MB per hour.
* `combine` concatenates the windows' per-frame arrays in order and analyses them as one signal,
  so the answer is the whole song's, not a vote of windows: 400-ms loudness gating blocks are read
  off the cumulative energy of all frames (blocks straddling two windows count like any other);
  the chroma sums are added; tempo and metre come from one autocorrelation of the whole onset
  envelope.
* tempo: (1) the pulse level is the lag best supported at 1/2, 1, 2 and 4 times its period (a
  duple metrical grid) under librosa's broad 120-BPM prior; (2) the octave of that pulse (x1/2, x1,
  x2) is chosen by Spotify's catalogue tempo prior, its comb evidence and the onsets per beat (which
  separate half from double time), refined to 1/40 frame.
  Confidence is the mean normalised autocorrelation at 1..4 periods; the double and half tempi are
  `tempo_alternatives`, the better supported first. Near-silence, and sound that never lasts two beats (`carries_beat`:
  one click, lone clicks or notes seconds apart), have no beat: tempo 0, as Spotify's.
* key/mode: correlation of the tuning-corrected average of the two 36-bin HPCPs, folded to 12, with
  the 24 rotations of the Aarden-Essen key profiles; key -1 when the 12-bin peak chroma is too flat or too unlike any key
  to be tonal (noise, drums).
* time_signature: beat-level accent periodicity, i.e. the onset and chord-change autocorrelations at
  2..8 beat periods: 3 when bars of three beats repeat more strongly than bars of two/four (waltzes,
  and 6/8 as Spotify counts it), else 4; 5 is possible but rarely detected, 7 never (Spotify's analyser gives no 6 or 7:
  SPOTIFY_METRES; see docs/descriptors.md); the chord
  changes never win against what the onsets alone clearly say (`METRE_ONSET_VETO`). With no
  beat to count (tempo confidence under METRE_MIN_BEAT_CONFIDENCE: noise, field recordings) it is 4, confidence 0;
  with no beat at all (tempo 0) it is 0, as Spotify's (`features.NO_METRE`; models read 4 for it).
* loudness: ITU-R BS.1770-4 integrated loudness (pyloudnorm's K-weighting, applied in the frequency
  domain to the STFT frames), plus the fitted offset below to land on Spotify's dB scale.

Nothing here imports torch, scipy.signal, pyloudnorm, librosa or numba (they cost ~1-2 s on a cold start):
numpy only, so measuring needs no deep-learning stack.
Figures and how to reproduce them: docs/descriptors.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import features, hpcp
from .audio import SAMPLE_RATE, WINDOW_SECONDS, sound_peak

# --- loudness: Spotify dB = LOUDNESS_SLOPE * level + LOUDNESS_INTERCEPT, clipped to [-60, 0], where the level is
# Echo Nest's recipe (Spotify's loudness comes from the Echo Nest analyser): a track's loudness averages its
# segments' loudness_max, the peak of a short-time loudness inside each sound event (`segment_level`: fixed
# 0.25-s segments of 23-ms K-weighted frames). The slope is 1 by physics (a gain of g dB moves both scales by
# g dB). The offset is the mean of Spotify dB - level over the 102 dev previews; fitted on one dev half and
# checked on the other it is off by 0.57 / 0.77 dB, where BS.1770 LUFS + offset (shipped until then, kept as
# `loudness_lufs`) was off by 0.90 / 1.04 dB. Reproduce with `python scripts/calibrate_loudness.py`.
LOUDNESS_SLOPE = 1.0
LOUDNESS_INTERCEPT = 4.7138
# The listening model's stage 1 and heads were fitted with loudness read the earlier way, BS.1770 LUFS + 7.1187
# (`loudness_bs1770`); its bundle says so (`numeric_descriptors`), so its inputs stay those it was fitted on.
# Fed the segment level instead, held-out forró lost 0.005 of average MAE (acousticness 0.189 -> 0.218).
BS1770_OFFSET = 7.1187
LOUDNESS_MEASURES = {"loudness": "loudness_level", "loudness_bs1770": "loudness_lufs"}  # Spotify-scale field -> its level
SEGMENT_SECONDS = 0.25  # Echo Nest's segments are sound events of a few tenths of a second
SEGMENT_GATE_DB = 40.0  # segments this far below the loudest (or under -70) are silence, left out as LUFS gates them
LOUDNESS_FLOOR_DB = -60.0  # Spotify's scale bottoms out here; silence reports this, not -inf
LUFS_FLOOR = -70.0  # BS.1770's absolute gate: the raw measure of audio with no block above it

# --- analysis constants
N_FFT = 4096
HOP = 1024
N_MELS = 128
TOP_DB = 80.0
LOW_BAND_HZ = 200.0  # upper edge of the kick/bass band whose flux marks downbeats
SUBBLOCK_SECONDS = 0.1  # BS.1770 gating step (400-ms blocks, 75% overlap)
GATE_BLOCK = 4  # sub-blocks per gating block
ONSET_SMOOTH_FRAMES = 1.0  # Gaussian sigma (frames) applied to the onset envelope before autocorrelation
TEMPO_MIN, TEMPO_MAX = 40.0, 240.0
PULSE_PRIOR_BPM, PULSE_PRIOR_OCTAVES = 120.0, 1.0  # librosa's broad prior, for finding the pulse level
# A metre is counted in beats: below this tempo confidence there is no beat to count, and the bar is Spotify's default 4
# with confidence 0. Noise, hiss, birdsong, street and crowd recordings read 0.01-0.08 here; the least periodic music
# (an orchestral game theme) 0.12, every preview 0.16 or more. A crowd once read 7/4 at confidence 1.0.
METRE_MIN_BEAT_CONFIDENCE = 0.1
# --- no beat: sound that never lasts long enough to carry one (`carries_beat`). Silence as `songfeat.analysis` judges it:
SILENCE_DBFS = -59.0  # a frame below this is silent: within 1 dB of the -60 floor analysis's frame levels are clipped at
SILENCE_SECONDS = 1.0  # a shorter quiet run is a rest inside the music; a longer one is a segment of its own
SILENCE_BEATS = 2.0  # ... and beats skip it if it is also this many periods long: over a shorter gap the pulse goes on
TRACK_BEATS = 2.0  # a beat needs a stretch of sound this many periods long: between two shorter ones a silence is a rest
# of a sparse pulse (a 30-BPM metronome, tracked at 120 BPM, had every click alone and no beat at all) ...
LONGEST_REST_SECONDS = 2.0  # ... if it lasts no longer than this: sounds further apart are heard one by one, not as a
# pulse (the slowest beat listeners follow is ~30 BPM, 2 s between onsets; a 20-BPM metronome is lone clicks)
# The chord changes alone cannot make a metre the onsets argue against: when the two onset cues (full band, < 200 Hz)
# score 4 at least this much above the winner, it is 4. Drums at 110 BPM under chords changing every second (1.83
# beats, off the beat) read 7/4: the chord changes recur every 4 s (7.3 beats), while the drums repeat every 2 beats
# (onsets 4 over 7 by 0.17-0.38 on generated mixes). Chords changing every third beat over even clicks (3/4, heard only
# in the harmony) have onsets 4 over 3 by 0.05; the four extra previews read as 3/4 favour 3 in the onsets by 0.25-0.58.
METRE_ONSET_VETO = 0.1
# The metres Spotify's analyser gives for music with a beat, whatever its docs' "3 to 7": of the 66,348 rows of the
# three catalogue tables of ../shared/data/spotify-features, 4 (85%), 3 (11%), 5 (2.7%) and 1 (1.4%, "no regular
# metre", read as no label), never 6 or 7 (and 0 exactly where its tempo is 0). Scoring 7 only ever added wrong answers:
# a crowd, German speech and 4/4 drums under off-beat chords all read 7/4 at one time or another.
SPOTIFY_METRES = (3, 4, 5)
# Which octave of the pulse is "the tempo": log prior + OCTAVE_COMB_WEIGHT x log(comb evidence at 1..4
# beats) + OCTAVE_DENSITY_WEIGHT x (onsets per beat). The prior is Spotify's catalogue, not the dev set:
# log2(tempo) over the 41,855 tracks of ../shared/data/spotify-features/combined_unique_by_track_id.csv
# has mean log2(114.8) and std 0.375 octave (median 117.5 BPM). Onsets per beat separates half from double
# time: busy music at a slow candidate has many onsets per beat. The two weights are the ones picked on
# all three labelled preview sources (forró, pop/rock, extra) from a 5 x 7 grid; picked without each
# source in turn they score 0.89 / 0.81 / 0.81 exact on the held-out source (scripts/evaluate_descriptors.py
# --loso; benchmarks/bench_measured.py prints the same).
TEMPO_PRIOR_BPM = 115.0
TEMPO_PRIOR_OCTAVES = 0.375
OCTAVE_COMB_WEIGHT = 2.0
OCTAVE_DENSITY_WEIGHT = -0.75
# Beat periods the octave decision weighs, as multiples of the strongest pulse. Two FMA clips read at 2/3 of Echo
# Nest's tempo, but adding 2/3 moved no FMA clip, and adding 3/2 (a dotted beat) cost forró 10 songs (its 3-3-2
# rhythms): scripts/try_measured_variants.py --only-tempo-families.
TEMPO_FAMILY = (0.5, 1.0, 2.0)
OCTAVE_WEIGHT_GRID = tuple((c, d) for c in (0.0, 0.5, 1.0, 2.0, 4.0) for d in (0.0, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0))
CHROMA_BINS = 1 + int(8000 * N_FFT / SAMPLE_RATE)  # chroma weights above ~8 kHz are negligible (octave weighting)
# No key (-1) when the chroma is too flat (contrast = std/mean) or too unlike any key (best profile
# correlation). Dev previews: contrast >= 0.12, correlation >= 0.37 (Spotify gives each a key); white
# and pink noise: contrast 0.007 / 0.059; synthetic drum loops (pitched kicks): correlation 0.26.
KEY_MIN_CONTRAST = 0.1
KEY_MIN_CORRELATION = 0.33
SINGLE_NOTE_SHARE = 0.6  # one pitch class holding this much of the profile is a lone note or drone (music: at most 0.31)
CHROMA_SIZE = 12
HPCP_FMIN, HPCP_FMAX = 40.0, 5000.0  # Hz: spectral peaks that make the pitch class profile (Essentia HPCP's defaults)
HPCP_RANGE_DB = 60.0  # peaks more than this below the frame's loudest bin are ignored

# Key profiles, tonic first: Aarden-Essen (Aarden 2003, note counts in the Essen folk corpus). Of seven
# published profile pairs tried on the dev previews' chroma (Krumhansl-Kessler, Temperley,
# Albrecht-Shanahan, Aarden-Essen, Bellman-Budge, diatonic, triad) it agreed most with Spotify's key
# (54% vs Krumhansl-Kessler's 41%; chosen inside 5-fold cross-validation it still scores 53.7% held out).
MAJOR_PROFILE = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122])
MINOR_PROFILE = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623])


@dataclass
class WindowEvidence:
    """Per-window summary that `combine` accumulates; no raw audio is kept."""

    sr: int
    n_samples: int
    peak: float  # `audio.sound_peak`: the largest excursion from the window's mean (silence check)
    onset: np.ndarray  # float32 [frames] log-mel spectral flux, ~43/s
    onset_low: np.ndarray  # float32 [frames] flux of the < 200 Hz band
    chroma: np.ndarray  # float64 [12] sum over voiced frames of max-normalised peak chroma (C first)
    chroma_frames: int  # frames that contributed to `chroma`
    kw_energy: np.ndarray  # float64 [frames] K-weighted signal energy per hop, read off the STFT
    chroma36: np.ndarray | None = None  # float64 [36] the same sum at 1/3 semitone (C first, centred bins), for tuning
    hpcp_gomez: np.ndarray | None = None  # float64 [36] the same sum of Gomez's (2006) HPCP (`songfeat.hpcp`)
    chroma_track: np.ndarray | None = None  # float16 [frames, 12] each frame's max-normalised peak chroma (chord changes)
    # float64 [frames] each frame's mean square (unweighted, as `songfeat.analysis` reads its frame level): silence for
    # `carries_beat` is judged on it, not on the K-weighted energy, which reads hiss 4 dB louder and a bass 5 dB quieter
    mean_square: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.chroma36 is None:
            self.chroma36 = np.zeros(3 * CHROMA_SIZE)
        if self.hpcp_gomez is None:
            self.hpcp_gomez = np.zeros(3 * CHROMA_SIZE)
        if self.chroma_track is None:
            self.chroma_track = np.zeros((self.onset.size, CHROMA_SIZE), dtype=np.float16)
        if self.mean_square is None:
            self.mean_square = np.zeros(self.onset.size)

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sr


@dataclass
class Descriptors:
    """The measured features of one song, on Spotify's scales, with confidences."""

    duration_ms: int
    loudness: float
    loudness_lufs: float
    tempo: float
    tempo_confidence: float
    tempo_alternatives: list[float] = field(default_factory=list)
    key: int = -1
    key_confidence: float = 0.0
    mode: int = 1
    mode_confidence: float = 0.0
    time_signature: int = 4  # 3-5; features.NO_METRE (0) when tempo is 0
    time_signature_confidence: float = 0.0
    loudness_level: float = LUFS_FLOOR  # Echo Nest's segment-peak level (dB) that `loudness` maps; see segment_level
    loudness_bs1770: float = LOUDNESS_FLOOR_DB  # Spotify's scale the earlier way, LUFS + BS1770_OFFSET: a model input

    def numeric(self, names) -> list[float]:
        """Values by feature name, e.g. ("tempo", "loudness", "key", "mode", "time_signature")."""
        allowed = [f for f in self.__dataclass_fields__ if f != "tempo_alternatives"]
        out = []
        for n in names:
            if n not in allowed:
                raise ValueError(f"{n!r} is not a measured descriptor; choose from {', '.join(allowed)}")
            out.append(float(getattr(self, n)))
        return out

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every field."""
        d = asdict(self)
        d["tempo_alternatives"] = [float(t) for t in self.tempo_alternatives]
        return d


# ----------------------------------------------------------------------------------------------
# filters built once per sample rate


@lru_cache(maxsize=4)
def chroma_filter(sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """FFT-bin -> pitch-class weights [12, n_fft//2+1], C first; equal to librosa.filters.chroma's defaults.

    Written out (librosa's own formula) because importing librosa.filters pulls numba (~1 s cold).
    """
    n_chroma = 12
    freqs = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(freqs / (440.0 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidth = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    d = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(n_chroma / 2)
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * d / np.tile(binwidth, (n_chroma, 1))) ** 2)
    wts /= np.maximum(np.sqrt((wts**2).sum(axis=0, keepdims=True)), np.finfo(float).tiny)  # L2 per bin
    wts *= np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2.0) ** 2))  # octave weighting around 880 Hz
    wts = np.roll(wts, -3, axis=0)  # start at C
    return np.ascontiguousarray(wts[:, : 1 + n_fft // 2], dtype=np.float32)


def _biquad(kind: str, gain_db: float, q: float, fc: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ cookbook biquad (b, a) exactly as pyloudnorm.iirfilter builds its K-weighting stages."""
    a_ = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * fc / sr
    alpha = np.sin(w0) / (2.0 * q)
    c = np.cos(w0)
    if kind == "high_shelf":
        b = [a_ * ((a_ + 1) + (a_ - 1) * c + 2 * np.sqrt(a_) * alpha), -2 * a_ * ((a_ - 1) + (a_ + 1) * c), a_ * ((a_ + 1) + (a_ - 1) * c - 2 * np.sqrt(a_) * alpha)]
        a = [(a_ + 1) - (a_ - 1) * c + 2 * np.sqrt(a_) * alpha, 2 * ((a_ - 1) - (a_ + 1) * c), (a_ + 1) - (a_ - 1) * c - 2 * np.sqrt(a_) * alpha]
    else:  # high_pass
        b = [(1 + c) / 2, -(1 + c), (1 + c) / 2]
        a = [1 + alpha, -2 * c, 1 - alpha]
    b, a = np.array(b), np.array(a)
    return b / a[0], a / a[0]


@lru_cache(maxsize=8)
def _k_weighting_response(sr: int, n: int) -> np.ndarray:
    """Complex response of BS.1770's K-weighting (pyloudnorm's two biquads) at the rfft bins of length n.

    Filtering by multiplication in the frequency domain replaces scipy.signal.lfilter, whose import
    costs ~1.2 s cold (pyloudnorm imports it). Applied to each STFT frame's power spectrum, so the
    loudness costs one matrix-vector product on the spectrogram the other descriptors already need.
    """
    w = np.exp(-1j * 2 * np.pi * np.arange(n // 2 + 1) / n)
    h = np.ones_like(w)
    for kind, g, q, fc in (("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0), ("high_pass", 0.0, 0.5, 38.0)):
        b, a = _biquad(kind, g, q, fc, sr)
        h *= (b[0] + b[1] * w + b[2] * w**2) / (a[0] + a[1] * w + a[2] * w**2)
    return h.astype(np.complex64)


# ----------------------------------------------------------------------------------------------
# per window


@lru_cache(maxsize=4)
def _kw_frame_weights(sr: int, n_fft: int, hop: int) -> np.ndarray:
    """Per-bin weights turning a frame's power spectrum into the K-weighted signal energy of one hop.

    Parseval for an rfft (DC and Nyquist once, the rest twice), divided by the Hann window's
    overlap-add constant sum_t w^2(n - t*hop), so that summing frames gives the samples' energy.
    """
    h2 = np.abs(_k_weighting_response(sr, n_fft)).astype(np.float64) ** 2
    c = np.full_like(h2, 2.0)
    c[0] = c[-1] = 1.0
    ola = float((_hann_window(n_fft).astype(np.float64) ** 2).sum()) / hop
    return (c * h2 / (n_fft * ola)).astype(np.float32)


@lru_cache(maxsize=4)
def _hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, float32 (torch.hann_window(periodic=True) and librosa's default)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def mel_filterbank_htk(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """HTK-scale triangular mel filters without area normalisation, [n_mels, n_fft//2+1] (float64).

    Equal to librosa.filters.mel(htk=True, norm=None); written out (a dozen lines) so neither a cold
    start nor a lean install pays for librosa. `songfeat.frontend` wraps it for the research MFCCs.
    """
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_pts = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2)
    hz_pts = 700.0 * (10.0 ** (mel_pts / 2595.0) - 1.0)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    return np.maximum(0.0, np.minimum(lower, upper))


@lru_cache(maxsize=4)
def _mel_filterbank_t(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """`mel_filterbank_htk` transposed to [n_fft//2+1, n_mels], float32 (the layout the spectrogram blocks multiply)."""
    return np.ascontiguousarray(mel_filterbank_htk(sample_rate, n_fft, n_mels).T, dtype=np.float32)


STFT_BLOCK_FRAMES = 128  # frames transformed at once: bounds the scratch memory to a few MB


def centred_frames(y: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """[frames, n_fft] strided view (no copy) of mono float32 audio, centred as torch.stft: reflect padding of half a
    frame at each end (audio shorter than half a frame is zero-padded first, which reflection needs)."""
    y = np.asarray(y, dtype=np.float32)
    if y.size <= n_fft // 2:
        y = np.pad(y, (0, n_fft // 2 + 1 - y.size))
    yp = np.pad(y, (n_fft // 2, n_fft // 2), mode="reflect")
    return np.lib.stride_tricks.sliding_window_view(yp, n_fft)[::hop]


def _power_blocks(y: np.ndarray, n_fft: int = N_FFT, hop: int = HOP, first: int = 0):
    """|STFT|^2 of mono float32 audio in blocks of frames [<= STFT_BLOCK_FRAMES, n_fft//2+1] (float32), in order,
    from frame `first` on.

    Centred with reflect padding as torch.stft; strided frames (no copy) times a periodic Hann window,
    numpy.fft.rfft, each frame on its own (a row is the same in whichever block it falls). Blocks keep the
    memory of a 30-s window's analysis to a few MB.
    """
    frames = centred_frames(y, n_fft, hop)[first:]
    win = _hann_window(n_fft)
    for i in range(0, frames.shape[0], STFT_BLOCK_FRAMES):
        x = np.fft.rfft(frames[i: i + STFT_BLOCK_FRAMES] * win, axis=1)
        yield x.real**2 + x.imag**2


def power_spectrogram(y: np.ndarray, n_fft: int = N_FFT, hop: int = HOP, first: int = 0) -> np.ndarray:
    """|STFT|^2 [frames, n_fft//2+1] (float32) of mono float32 audio, centred with reflect padding as torch.stft
    (from frame `first` on)."""
    blocks = list(_power_blocks(y, n_fft, hop, first))
    return np.concatenate(blocks) if blocks else np.zeros((0, n_fft // 2 + 1), dtype=np.float32)


def _as_mono(y: np.ndarray) -> np.ndarray:
    """`y` as a 1-D float32 array; [1, N] and [N, 1] are accepted, anything else is a ValueError."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"y must be mono audio of shape [samples], got shape {y.shape}")
    return y


def window_evidence(y: np.ndarray, sr: int = SAMPLE_RATE, on_power: Callable[[int, np.ndarray], None] | None = None) -> WindowEvidence:
    """Reduce one window of mono audio (any length; 30 s in the pipeline) to its small summary.

    `on_power(first_frame, block)` also receives each |STFT|^2 block (N_FFT, HOP) as it is computed, so another
    reader of the same spectrogram (the MFCC summary, `mfcc.SharedFrames`) need not compute it again.
    """
    y = _as_mono(y)
    if sr <= 0:
        raise ValueError(f"sr must be a positive sample rate, got {sr}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite samples")
    n = int(y.size)
    if n == 0:
        z = np.zeros(0, dtype=np.float32)
        return WindowEvidence(sr, 0, 0.0, z, z.copy(), np.zeros(12), 0, np.zeros(0))
    # The one STFT every descriptor is read from, reduced block by block to per-frame values (the
    # spectrogram itself is never held whole): mel and < 200 Hz band powers for the onset envelopes,
    # peak chroma, un-normalised HPCP, frame energy and K-weighted energy.
    nb = N_FFT // 4 + 1  # bins up to sr/4 (11 kHz): the band librosa's onset strength sees at 22.05 kHz
    lo_bins = max(3, int(LOW_BAND_HZ * N_FFT / sr))
    hpcp_bins = int(HPCP_FMAX * N_FFT / sr) + 3
    mel_fb, chroma_t, kw_w = _mel_filterbank_t(sr // 2, N_FFT // 2, N_MELS), _chroma_t(sr), _kw_frame_weights(sr, N_FFT, HOP)
    mel, low, ch, h36, energy, kw, ms = [], [], [], [], [], [], []
    wsum2 = float(np.square(_hann_window(N_FFT)).sum())
    first = 0
    for p in _power_blocks(y, N_FFT, HOP):
        if on_power is not None:
            on_power(first, p)
        first += p.shape[0]
        mel.append(p[:, :nb] @ mel_fb)  # same bin spacing, half the band
        low.append(p[:, 2:lo_bins].copy())
        # chroma: pitch-class energies, each frame normalised to its max (librosa.feature.chroma_stft)
        # from spectral peaks only (HPCP-style): a Hann main lobe spans ~4 bins (43 Hz), which below
        # ~300 Hz smears a note over its neighbouring semitones; keeping local maxima undoes most of it.
        # It decides whether there is a key at all (its octave weighting around 880 Hz ignores pitched kicks).
        pc = p[:, :CHROMA_BINS]
        peaks = np.zeros_like(pc)
        peaks[:, 1:-1] = pc[:, 1:-1] * ((pc[:, 1:-1] > pc[:, :-2]) & (pc[:, 1:-1] >= pc[:, 2:]))
        ch.append(peaks @ chroma_t)  # [B, 12]
        # chroma36: a 1/3-semitone harmonic pitch class profile from interpolated peaks; it names the key
        h36.append(hpcp_frames(p[:, :hpcp_bins], sr))
        energy.append(p[:, :nb].sum(1))
        kw.append(p @ kw_w)
        # Parseval over the rfft bins over the window's energy: the frame's mean square, as analysis's frame level
        ms.append((2.0 * p.sum(1, dtype=np.float64) - p[:, 0] - p[:, -1]) / (N_FFT * wsum2))
    mel, low, ch, h36, frame_energy, kw, ms = (np.concatenate(a) for a in (mel, low, ch, h36, energy, kw, ms))
    # onset strength: mean positive log-mel flux (librosa.onset.onset_strength's recipe)
    db = 10.0 * np.log10(np.maximum(mel, np.float32(1e-10)))
    top = db.max()
    db = np.maximum(db, top - np.float32(TOP_DB))
    flux = np.maximum(db[1:] - db[:-1], np.float32(0.0)).mean(1)
    onset = np.concatenate([np.zeros(1, np.float32), flux])
    ldb = 10.0 * np.log10(np.maximum(low, np.float32(1e-10)))
    ldb = np.maximum(ldb, top - np.float32(TOP_DB))
    lflux = np.maximum(ldb[1:] - ldb[:-1], np.float32(0.0)).mean(1)
    onset_low = np.concatenate([np.zeros(1, np.float32), lflux])
    voiced = frame_energy > frame_energy.max() * np.float32(1e-6)
    chn_all = np.where(voiced[:, None], ch / np.maximum(ch.max(1, keepdims=True), np.float32(1e-20)), np.float32(0.0))
    chn = chn_all[voiced]
    return WindowEvidence(
        sr=sr,
        n_samples=n,
        peak=sound_peak(y),
        onset=onset.astype(np.float32),
        onset_low=onset_low.astype(np.float32),
        chroma=chn.astype(np.float64).sum(0),
        chroma_frames=int(voiced.sum()),
        chroma36=sum_normalised(h36[voiced]),
        hpcp_gomez=sum_normalised(hpcp.frames(y, sr)),
        chroma_track=chn_all.astype(np.float16),
        kw_energy=kw.astype(np.float64),
        mean_square=ms,
    )


def hpcp36(p: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Sum over frames of the max-normalised 36-bin pitch class profile of power spectra `p` [frames, bins].

    HPCP-style (Gomez 2006): each local maximum of the spectrum between HPCP_FMIN and HPCP_FMAX gets
    its frequency and amplitude by parabolic interpolation on the dB spectrum, and adds its amplitude
    to the 1/3-semitone bins within half a semitone with a cos^2 weight. Bins are centred on
    equal-tempered pitches (A440) and C comes first; `fold_chroma` corrects the tuning and folds to 12.
    """
    return sum_normalised(hpcp_frames(p, sr))


def sum_normalised(frames: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Sum of the rows of `frames` [frames, 36] each divided by its maximum (all-zero rows skipped), each row
    times its `weight` when given (research variants weight frames; analysis does not)."""
    if frames.shape[0] == 0:
        return np.zeros(3 * CHROMA_SIZE)
    mx = frames.max(1, keepdims=True)
    keep = mx[:, 0] > 0
    f = frames[keep] / mx[keep]
    if weight is not None:
        f = f * np.asarray(weight)[keep][:, None]
    return f.sum(0)


def hpcp_frames(p: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = HPCP_FMIN, fmax: float = HPCP_FMAX) -> np.ndarray:
    """Per-frame, not yet normalised 36-bin HPCP [frames, 36] (float64) of power spectra `p` (see `hpcp36`),
    from peaks between `fmin` and `fmax` Hz (analysis uses the defaults; a bass profile reads 40-250 Hz)."""
    p = np.asarray(p, dtype=np.float32)
    if p.shape[0] == 0:
        return np.zeros((0, 3 * CHROMA_SIZE))
    hi = min(p.shape[1] - 1, int(fmax * N_FFT / sr) + 2)
    db = 10.0 * np.log10(np.maximum(p[:, : hi + 1], np.float32(1e-12)))
    a, b, c = db[:, :-2], db[:, 1:-1], db[:, 2:]
    is_peak = (b > a) & (b >= c) & (b > db.max(1, keepdims=True) - np.float32(HPCP_RANGE_DB))
    t, j = np.nonzero(is_peak)  # work on the peaks only (~5% of the bins)
    pa, pb, pc = a[t, j], b[t, j], c[t, j]
    den = pa - 2 * pb + pc
    safe = np.abs(den) > 1e-9
    delta = np.clip(np.where(safe, np.float32(0.5) * (pa - pc) / np.where(safe, den, np.float32(1.0)), np.float32(0.0)), -0.5, 0.5)
    freq = (j.astype(np.float32) + 1 + delta) * np.float32(sr / N_FFT)
    amp = np.power(np.float32(10.0), (pb - np.float32(0.25) * (pa - pc) * delta) / np.float32(20.0))
    ok = (freq >= fmin) & (freq <= fmax)
    t, freq, amp = t[ok], freq[ok], amp[ok].astype(np.float64)
    pos = np.remainder(36.0 * np.log2(freq.astype(np.float64) / 440.0) + 27.0, 36.0)  # A = bin 27, C = bin 0
    out = np.zeros(p.shape[0] * 36, dtype=np.float64)
    base = np.floor(pos)
    for off in (-1.0, 0.0, 1.0, 2.0):
        k = base + off
        d = (pos - k) / 3.0  # distance in semitones
        wt = np.where(np.abs(d) < 0.5, np.cos(math.pi * d) ** 2, 0.0)
        out += np.bincount(t * 36 + np.remainder(k, 36).astype(np.int64), weights=amp * wt, minlength=out.size)
    return out.reshape(p.shape[0], 36)


def fold_chroma(chroma: np.ndarray, tuning: bool = True) -> np.ndarray:
    """12-bin chroma (C first) from a 12- or 36-bin one; with `tuning`, 36 bins are first shifted by the detuning.

    The detuning is the 1/3-semitone offset (-1, 0 or +1) holding the most energy, as Essentia's
    `averageDetuningCorrection`: a song tuned ~30 cents off A440 then folds onto the right pitch classes.
    """
    c = np.asarray(chroma, dtype=np.float64)
    if c.size == CHROMA_SIZE:
        return c
    if c.size != 3 * CHROMA_SIZE:
        raise ValueError(f"chroma must have 12 or 36 bins, got {c.size}")
    offset = (0, 1, -1)[int(np.argmax(c.reshape(CHROMA_SIZE, 3).sum(0)))] if tuning else 0  # sub-bin of the centres
    return np.roll(c, 1 - offset).reshape(CHROMA_SIZE, 3).sum(1)  # bins centre-1, centre, centre+1 of each pitch


@lru_cache(maxsize=4)
def _chroma_t(sr: int) -> np.ndarray:
    """librosa's chroma filter [bins, 12] with each pitch class's total weight equalised.

    librosa's rows sum to 0.87 (C) .. 1.13 (A#) of their mean, so white noise would read as
    tilted towards A/A#; equal row sums make a flat spectrum give a flat chroma (no false key).
    """
    cf = chroma_filter(sr, N_FFT)[:, :CHROMA_BINS].astype(np.float64)
    cf /= cf.sum(1, keepdims=True) / cf.sum(1).mean()
    return np.ascontiguousarray(cf.T, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# whole song


def integrated_lufs(kw_energy: np.ndarray, frame_pos: np.ndarray, n_samples: int, sr: int) -> float:
    """BS.1770-4 gated integrated loudness from per-frame K-weighted energies centred at samples `frame_pos`.

    Each frame's energy is spread evenly over the hop around its centre; 400-ms blocks with 75%
    overlap (pyloudnorm's layout) are read off the cumulative energy, then gated at -70 LUFS and at
    10 LU below the mean of the blocks above it.
    """
    block = GATE_BLOCK * SUBBLOCK_SECONDS
    seconds = n_samples / sr
    if seconds < block or kw_energy.size == 0:
        return LUFS_FLOOR
    n_blocks = int(round((seconds - block) / SUBBLOCK_SECONDS)) + 1
    edges = np.concatenate([frame_pos - HOP / 2, [frame_pos[-1] + HOP / 2]])
    cum = np.concatenate([[0.0], np.cumsum(kw_energy)])
    starts = np.arange(n_blocks) * SUBBLOCK_SECONDS * sr
    e = np.interp(starts + block * sr, edges, cum) - np.interp(starts, edges, cum)
    z = np.maximum(e, 0.0) / (block * sr)
    with np.errstate(divide="ignore"):
        lk = -0.691 + 10 * np.log10(z)
    keep = lk >= -70.0
    if not keep.any():
        return LUFS_FLOOR
    rel = -0.691 + 10 * np.log10(z[keep].mean()) - 10.0
    keep &= lk > rel
    if not keep.any():
        return LUFS_FLOOR
    return float(max(LUFS_FLOOR, -0.691 + 10 * np.log10(z[keep].mean())))


def segment_level(kw_energy: np.ndarray, sr: int) -> float:
    """Echo Nest's loudness level (dB) from per-hop K-weighted energies: the mean over 0.25-s segments of each
    segment's loudest frame, segments more than SEGMENT_GATE_DB below the loudest or under -70 left out;
    LUFS_FLOOR when nothing is left (silence)."""
    kw = np.asarray(kw_energy, dtype=np.float64)
    if kw.size == 0:
        return LUFS_FLOOR
    frames = -0.691 + 10 * np.log10(np.maximum(kw / HOP, 1e-20))
    seg = max(1, int(round(SEGMENT_SECONDS * sr / HOP)))
    n = frames.size // seg
    peaks = frames[: n * seg].reshape(n, seg).max(1) if n else frames.max(keepdims=True)
    keep = peaks[peaks > max(-70.0, float(peaks.max()) - SEGMENT_GATE_DB)]
    return float(keep.mean()) if keep.size else LUFS_FLOOR


def loudness_levels(kw_energy: np.ndarray, frame_pos: np.ndarray, n_samples: int, sr: int) -> tuple[float, float]:
    """(BS.1770 LUFS, `segment_level`) of a span; audio that BS.1770's gates call silence is silence for both."""
    lufs = integrated_lufs(kw_energy, frame_pos, n_samples, sr)
    return lufs, (segment_level(kw_energy, sr) if lufs > LUFS_FLOOR else LUFS_FLOOR)


def spotify_loudness(level: float, offset: float = LOUDNESS_INTERCEPT) -> float:
    """Map a `segment_level` (dB) to Spotify's loudness dB with the calibrated offset, floored at -60 dB
    (`offset=BS1770_OFFSET` maps LUFS the earlier way, `loudness_bs1770`)."""
    if not math.isfinite(level) or level <= LUFS_FLOOR:
        return LOUDNESS_FLOOR_DB
    return float(min(0.0, max(LOUDNESS_FLOOR_DB, LOUDNESS_SLOPE * level + offset)))


def _autocorr(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Unbiased autocorrelation of mean-removed x for lags 0..max_lag, normalised so ac[0] = 1.

    Lags stop at half of x: beyond it the estimate rests on a few products and swings to +-1 (5 s of white noise read
    49 BPM with tempo confidence 1.0, short clips 3/4 or 7/4); 30-s windows never reach it (8 beats at 40 BPM = 12 s).
    """
    x = x - x.mean()
    n = x.size
    max_lag = min(max_lag, n // 2)
    nfft = 1 << int(math.ceil(math.log2(2 * n)))
    f = np.fft.rfft(x, nfft)
    ac = np.fft.irfft(f.real**2 + f.imag**2, nfft)[: max_lag + 1]
    ac = ac / (n - np.arange(max_lag + 1))  # unbiased: divide by the overlap
    return ac / ac[0] if ac[0] > 0 else np.zeros_like(ac)


def _interp(ac: np.ndarray, lag: float) -> float:
    """Linear interpolation of `ac` at a fractional lag (0 beyond its end)."""
    i = int(math.floor(lag))
    if i < 0 or i + 1 >= ac.size:
        return 0.0
    f = lag - i
    return float((1 - f) * ac[i] + f * ac[i + 1])


def _smooth_onset(env: np.ndarray, fps: float) -> np.ndarray:
    """Subtract a ~1-s moving average (swells are not beats) and blur by ~1 frame."""
    w = max(3, int(fps))
    x = env - np.convolve(env, np.ones(w) / w, mode="same")
    g = np.exp(-0.5 * (np.arange(-3, 4) / ONSET_SMOOTH_FRAMES) ** 2)
    return np.convolve(x, g / g.sum(), mode="same")  # widen one-frame peaks so fractional lags are seen


def onset_density(x: np.ndarray, fps: float) -> float:
    """Onsets per second: local maxima above zero of the smoothed, detrended onset envelope `x`."""
    if x.size < 3:
        return 0.0
    pk = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:]) & (x[1:-1] > 0)
    return float(pk.sum()) * fps / x.size


def estimate_tempo(env: np.ndarray, fps: float, comb_weight: float | None = None, density_weight: float | None = None,
                   prior: tuple[float, float] | None = None,
                   multiples: tuple[float, ...] = TEMPO_FAMILY) -> tuple[float, float, list[float], np.ndarray, float]:
    """Tempo (BPM), confidence, [alternatives], the autocorrelation and the beat period (frames).

    The keyword arguments override the octave decision's constants (OCTAVE_*_WEIGHT, TEMPO_PRIOR_*,
    TEMPO_FAMILY as `multiples`), for cross-validating them.
    """
    cw = OCTAVE_COMB_WEIGHT if comb_weight is None else comb_weight
    dw = OCTAVE_DENSITY_WEIGHT if density_weight is None else density_weight
    centre, octaves = (TEMPO_PRIOR_BPM, TEMPO_PRIOR_OCTAVES) if prior is None else prior
    if env.size < 4 * fps or not np.any(env > 0):
        return 0.0, 0.0, [], np.zeros(1), 0.0
    x = _smooth_onset(env.astype(np.float64), fps)
    ac = _autocorr(x, int(fps * 60.0 / TEMPO_MIN * 8) + 2)
    lo = max(1, int(math.floor(fps * 60.0 / TEMPO_MAX)))
    hi = min(ac.size - 2, int(math.ceil(fps * 60.0 / TEMPO_MIN)))
    lags = np.arange(lo, hi + 1)
    # 1) the strongest pulse level: harmonic support under librosa's broad prior
    support = harmonic_support(ac, lags.astype(np.float64))
    score = np.clip(support, 0, None) * _tempo_prior(60.0 * fps / lags, PULSE_PRIOR_BPM, PULSE_PRIOR_OCTAVES)
    pulse = _refine_period(ac, float(lags[int(np.argmax(score))]))
    # 2) which octave of that pulse is the beat: catalogue prior, comb evidence, onsets per beat
    family = [pulse * f for f in multiples if TEMPO_MIN <= 60.0 * fps / (pulse * f) <= TEMPO_MAX]
    family = [_refine_period(ac, p, width=max(1.0, 0.03 * p)) for p in family] or [pulse]
    dens = onset_density(x, fps)
    fam_score = [np.log(_tempo_prior(60.0 * fps / p, centre, octaves)) + cw * np.log(max(_comb(ac, p, 4), 1e-3))
                 + dw * dens * p / fps for p in family]
    period = family[int(np.argmax(fam_score))]
    tempo = 60.0 * fps / period
    conf = float(np.clip(_comb(ac, period, 4), 0.0, 1.0))  # periodicity at 1..4 beats: syncopation-proof
    # octave alternatives, better supported first
    alts = []
    for p in (period * 2, period / 2):
        t = 60.0 * fps / p
        if 30.0 <= t <= 300.0:
            alts.append((harmonic_support(ac, p), t))
    alts.sort(key=lambda a: -a[0])
    return float(tempo), conf, [round(float(t), 3) for _, t in alts], ac, period


def _mean_at(ac: np.ndarray, periods: np.ndarray, multiples: tuple[float, ...]) -> np.ndarray:
    """For each period, the mean of `ac` (linearly interpolated) at period * multiples inside its range; 0 if none."""
    lags = np.asarray(periods, dtype=np.float64)[:, None] * np.asarray(multiples, dtype=np.float64)[None, :]
    valid = (lags >= 0) & (lags < ac.size - 1)
    lags = np.where(valid, lags, 0.0)
    i = np.floor(lags).astype(np.int64)
    f = lags - i
    vals = np.where(valid, (1 - f) * ac[i] + f * ac[np.minimum(i + 1, ac.size - 1)], 0.0)
    count = valid.sum(1)
    return np.where(count > 0, vals.sum(1) / np.maximum(count, 1), 0.0)


DUPLE_GRID = (0.5, 1.0, 2.0, 4.0)  # multiples of a beat period whose periodicity supports it
COMB_8 = tuple(float(j) for j in range(1, 9))


def harmonic_support(ac: np.ndarray, period: float | np.ndarray) -> float | np.ndarray:
    """Evidence for a beat period: mean autocorrelation at its half, itself, 2x and 4x (a duple metrical grid).

    Including the half period (the eighth-note subdivision) is what keeps 3-3-2 (dembow, tresillo)
    rhythms from being read at 2/3 of their tempo: on the dev previews it lifted the share of songs
    whose beat is found up to an octave from 76% to 98%.
    """
    out = _mean_at(ac, np.atleast_1d(period), DUPLE_GRID)
    return out if np.ndim(period) else float(out[0])


def _comb(ac: np.ndarray, period: float, k: int = 8) -> float:
    """Mean autocorrelation at 1..k multiples of `period` (a sharp comb for sub-frame refinement)."""
    return float(_mean_at(ac, np.array([period]), tuple(float(j) for j in range(1, k + 1)))[0])


def _tempo_prior(bpm: np.ndarray | float, centre: float, octaves: float) -> np.ndarray:
    """Log-normal weight over tempo: Gaussian in log2(BPM) around `centre` with `octaves` std."""
    return np.exp(-0.5 * ((np.log2(bpm) - math.log2(centre)) / octaves) ** 2)


def _refine_period(ac: np.ndarray, lag: float, width: float = 1.0) -> float:
    """Sub-frame beat period: the best 8-harmonic comb within +/-`width` frames of `lag`."""
    cands = lag + np.linspace(-width, width, 81)
    cands = cands[cands > 1]
    return float(cands[int(np.argmax(_mean_at(ac, cands, COMB_8)))])


def chord_changes(track: np.ndarray, period: float) -> np.ndarray:
    """Harmonic change at each frame: the cosine distance between the chroma summed over the beat before it and over the
    beat after it (`track` [frames, 12], `period` in frames). Chords tend to change on downbeats, so this peaks once a bar."""
    b = max(2, int(round(period)))
    x = np.asarray(track, dtype=np.float64)
    if period <= 0 or x.shape[0] < 2 * b + 8:
        return np.zeros(0)
    cs = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    t = np.arange(b, x.shape[0] - b + 1)  # cs[t] sums frames before t
    before, after = cs[t] - cs[t - b], cs[t + b] - cs[t]
    norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    return np.where(norm > 0, 1.0 - (before * after).sum(1) / np.where(norm > 0, norm, 1.0), 0.0)


def estimate_time_signature(ac: np.ndarray, ac_low: np.ndarray, period: float,
                            ac_chord: np.ndarray | None = None) -> tuple[int, float]:
    """Beats per bar from accent periodicity at multiples of the beat period (3 vs 4; 5 rarely; SPOTIFY_METRES): the onset
    autocorrelation (full band and < 200 Hz) and, when given, the autocorrelation of the chord changes
    (`chord_changes`), averaged with equal weights. A metre other than 4 that the two onset cues alone score
    METRE_ONSET_VETO below 4 is 4: the chord changes may tell a bar the onsets leave open, not overrule them."""
    if period <= 0:
        return 4, 0.0
    acs = [ac, ac_low] + ([ac_chord] if ac_chord is not None and ac_chord.size > 8 * period + 2 else [])

    reach = min(x.size for x in acs) - 1  # the longest lag every autocorrelation covers
    if 4 * period >= reach:  # not even one bar of four to compare: too short to tell
        return 4, 0.0
    scores = _metre_scores(acs, period, reach)
    best = max(scores, key=lambda m: scores[m])
    margin = scores[best]
    if best != 4 and margin < 0.1:  # not clearly another metre: Spotify's default
        return 4, float(np.clip(0.5 + scores[4], 0.0, 1.0))
    if best != 4 and len(acs) > 2:  # won with the chord changes: the onsets must not clearly say 4 (METRE_ONSET_VETO)
        onsets = _metre_scores(acs[:2], period, reach)
        if onsets[4] - onsets[best] >= METRE_ONSET_VETO:
            return 4, float(np.clip(0.5 + scores[4], 0.0, 1.0))
    return best, float(np.clip(0.5 + margin, 0.0, 1.0))


def _metre_scores(acs: list[np.ndarray], period: float, reach: int) -> dict[int, float]:
    """Each metre's accent score from the mean of the autocorrelations `acs` at multiples of `period` (frames): how much
    more its bar lags repeat than its rivals'. Only metres whose bars end before lag `reach` are scored."""
    def a(m: float) -> float:
        return float(np.mean([_interp(x, m * period) for x in acs]))

    scores = {
        3: (a(3) + a(6)) / 2 - (a(2) + a(4)) / 2,
        4: (a(4) + a(8)) / 2 - (a(3) + a(6)) / 2 if 8 * period < reach else a(4) - a(3),
        5: a(5) - (a(2) + a(3) + a(4)) / 3,
    }  # no 7 (nor 6): Spotify's analyser gives neither (SPOTIFY_METRES)
    # a metre whose bars reach past the autocorrelation would be scored against zeros (a short clip read 7/4)
    longest = {3: 6, 4: 4, 5: 5}
    return {m: v for m, v in scores.items() if m in SPOTIFY_METRES and longest[m] * period < reach}


def key_correlations(chroma: np.ndarray) -> tuple[np.ndarray, float]:
    """Pearson correlation [2 modes (major, minor), 12 tonics] of a 12-bin chroma with the key profiles, and its contrast."""
    c = chroma / chroma.mean()
    corr = np.zeros((2, 12))  # row 0 major, row 1 minor; column = tonic pitch class
    for row, prof in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for k in range(12):
            corr[row, k] = np.corrcoef(c, np.roll(prof, k))[0, 1]
    return corr, float(c.std())  # contrast: 0 for a flat (noise-like) chroma


def key_profile(chroma36: np.ndarray, gomez: np.ndarray | None = None) -> np.ndarray:
    """The 36-bin profile that names the key: songfeat's HPCP sum, or with Gomez's (`WindowEvidence.hpcp_gomez`) the
    average of the two, each scaled to sum 1 (equal weights: no weight was fitted)."""
    c = np.asarray(chroma36, dtype=np.float64)
    if gomez is None or np.sum(gomez) <= 0:
        return c
    g = np.asarray(gomez, dtype=np.float64)
    return 0.5 * c / max(c.sum(), 1e-300) + 0.5 * g / g.sum()


def estimate_key(chroma: np.ndarray, chroma36: np.ndarray | None = None,
                 gomez: np.ndarray | None = None) -> tuple[int, float, int, float]:
    """Key (-1..11), its confidence, mode (1 major / 0 minor) and its confidence from a chroma (C first).

    `chroma` (12 bins: `WindowEvidence.chroma`) decides whether there is a key at all; when
    `chroma36` (`WindowEvidence.chroma36`) is given, the tuning-corrected HPCP names the key and
    mode, averaged with Gomez's HPCP when `gomez` is given (`key_profile`). A 36-bin `chroma` alone is
    tuning-corrected and folded (`fold_chroma`) for both. A profile with one pitch class holding
    `SINGLE_NOTE_SHARE` of it (a lone note or drone) is in that pitch class, major, with mode confidence 0.
    """
    chroma = fold_chroma(np.asarray(chroma, dtype=np.float64))
    if chroma.sum() <= 0:
        return -1, 0.0, 1, 0.0
    corr, contrast = key_correlations(chroma)
    tonal = contrast * max(float(corr.max()), 0.0)
    no_key = contrast < KEY_MIN_CONTRAST or corr.max() < KEY_MIN_CORRELATION
    naming = chroma
    if chroma36 is not None and np.sum(chroma36) > 0:
        naming = fold_chroma(key_profile(chroma36, gomez))
        corr, _ = key_correlations(naming)
    row, key = np.unravel_index(int(np.argmax(corr)), corr.shape)
    best = float(corr[row, key])
    mode = 1 if row == 0 else 0
    key_conf = float(np.clip(best, 0, 1) * np.clip(tonal / 0.1, 0, 1))
    mode_conf = float(np.clip(5.0 * (best - corr[1 - row].max()), 0, 1))  # margin over the best key of the other mode
    top = int(np.argmax(naming))
    if naming[top] >= SINGLE_NOTE_SHARE * naming.sum():  # one sounding note or drone: it is the tonal centre
        # (a profile's best match for a lone pitch is a key it is the fifth or third of). It has no third to tell the
        # mode: major, as two thirds of Spotify's catalogue, with no confidence
        key, mode, mode_conf = top, 1, 0.0
    if no_key:
        return -1, key_conf, mode, mode_conf
    return int(key), key_conf, mode, mode_conf


# ----------------------------------------------------------------------------------------------
# silence and the stretches of sound a beat can be laid on (`songfeat.analysis` lays its beats on the same)


def frame_levels(mean_square: np.ndarray) -> np.ndarray:
    """Each frame's level in dBFS (0 = a full-scale sine) from its mean square (`WindowEvidence.mean_square`), floored
    at -120: `songfeat.analysis`'s frame level (the same frames inside a window; reflect-padded at its edges), to judge
    silence on."""
    return 10.0 * np.log10(np.maximum(2.0 * np.asarray(mean_square, dtype=np.float64), 1e-12))


def silent_runs(level_db: np.ndarray, min_frames: float) -> np.ndarray:
    """[n, 2] frame spans [start, end) of at least `min_frames` frames, every one below SILENCE_DBFS.

    Nothing there is music: no beats are laid over them, and they get segments (and, when long, sections) of their own.
    `songfeat.analysis` finds them once (from SILENCE_SECONDS on); each reader keeps the runs as long as it needs (`longer`).
    """
    quiet = np.concatenate([[False], level_db < SILENCE_DBFS, [False]])
    runs = np.flatnonzero(np.diff(quiet.astype(np.int8))).reshape(-1, 2)
    return longer(runs, min_frames)


def longer(runs: np.ndarray, min_frames: float) -> np.ndarray:
    """The [n, 2] frame spans of `runs` at least `min_frames` long."""
    return runs[runs[:, 1] - runs[:, 0] >= min_frames]


def sounding_spans(runs: np.ndarray, n_frames: int) -> list[tuple[int, int]]:
    """Frame spans [start, end) of a song of `n_frames` frames between the silent `runs` (all of it without one)."""
    edges = np.concatenate([[0], runs.reshape(-1), [n_frames]])
    return [(int(a), int(b)) for a, b in edges.reshape(-1, 2) if b > a]


def beat_spans(silences: np.ndarray, n_frames: int, period: float, fps: float) -> list[tuple[int, int]]:
    """Frame spans [start, end) beats are tracked on, one by one: the `sounding_spans` between the `silences`
    (`silent_runs`) of SILENCE_SECONDS and SILENCE_BEATS periods, joined across a silence of at most LONGEST_REST_SECONDS
    with too little sound either side to track (`fps` frames a second).

    A stretch under TRACK_BEATS periods gets no beats of its own; when both neighbours of a short enough silence are that
    short, the silence is a rest between the hits of a slow pulse, and the pulse carries through it.
    """
    spans = sounding_spans(longer(silences, max(SILENCE_SECONDS * fps, SILENCE_BEATS * period)), n_frames)
    out = spans[:1]
    for (pa, pb), (a, b) in zip(spans, spans[1:]):
        if max(pb - pa, b - a) < TRACK_BEATS * period and a - pb <= LONGEST_REST_SECONDS * fps:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def carries_beat(level_db: np.ndarray, period: float, fps: float) -> bool:
    """Whether sound with frame levels `level_db` (dBFS) lasts long enough anywhere to carry a beat of `period` frames: a
    `beat_spans` stretch of TRACK_BEATS periods. Without one (one click, lone clicks or notes seconds apart) there is no
    beat, as `songfeat.analysis` lays none."""
    spans = beat_spans(silent_runs(level_db, SILENCE_SECONDS * fps), level_db.size, period, fps)
    return any(b - a >= TRACK_BEATS * period for a, b in spans)


def combine(evidence: list[WindowEvidence]) -> Descriptors:
    """Whole-song descriptors from the ordered per-window evidence of one song."""
    if not evidence:
        raise ValueError("combine needs at least one window's evidence")
    sr = evidence[0].sr
    if any(e.sr != sr for e in evidence):
        raise ValueError("all windows must share one sample rate")
    n = sum(e.n_samples for e in evidence)
    fps = sr / HOP
    offsets = np.cumsum([0] + [e.n_samples for e in evidence[:-1]])
    pos = np.concatenate([o + HOP * np.arange(e.kw_energy.size) for o, e in zip(offsets, evidence)]).astype(np.float64)
    lufs, level = loudness_levels(np.concatenate([e.kw_energy for e in evidence]), pos, n, sr)
    env = np.concatenate([e.onset for e in evidence]).astype(np.float64)
    env_low = np.concatenate([e.onset_low for e in evidence]).astype(np.float64)
    # audio that BS.1770's absolute gate calls silence throughout (loudness at its floor) has no beat either, as
    # `songfeat.analysis` lays none there: until 2026-12-05 a -88 dBFS "silence" track read 80.8 BPM in 4/4
    silent = lufs <= LUFS_FLOOR
    tempo, tconf, alts, ac, period = (0.0, 0.0, [], np.zeros(1), 0.0) if silent else estimate_tempo(env, fps)
    # nor has sound too brief to carry one (one click in 20 s of zeros read 101.3 BPM in 4/4 until 2026-12-06)
    if period > 0 and not carries_beat(frame_levels(np.concatenate([e.mean_square for e in evidence])), period, fps):
        tempo, tconf, alts, period = 0.0, 0.0, [], 0.0
    if period > 0 and tconf >= METRE_MIN_BEAT_CONFIDENCE:
        ac_low = _autocorr(_smooth_onset(env_low, fps), ac.size - 1) if np.any(env_low > 0) else np.zeros_like(ac)
        changes = chord_changes(np.concatenate([e.chroma_track for e in evidence]), period)
        ac_chord = _autocorr(changes, ac.size - 1) if changes.size and np.ptp(changes) > 0 else None
        ts, ts_conf = estimate_time_signature(ac, ac_low, period, ac_chord)
    else:  # no beat (tempo 0) has no bar: Spotify's 0; a beat too weak to count bars has its default 4
        ts, ts_conf = (features.NO_METRE if tempo <= 0 else 4), 0.0
    key, kconf, mode, mconf = estimate_key(sum(e.chroma for e in evidence), sum(e.chroma36 for e in evidence),
                                           sum(e.hpcp_gomez for e in evidence))
    return Descriptors(
        duration_ms=int(round(1000.0 * n / sr)),
        loudness=spotify_loudness(level),
        loudness_lufs=float(lufs),
        loudness_level=float(level),
        loudness_bs1770=spotify_loudness(lufs, BS1770_OFFSET),
        tempo=round(float(tempo), 3),
        tempo_confidence=round(float(tconf), 3),
        tempo_alternatives=alts,
        key=key,
        key_confidence=round(kconf, 3),
        mode=mode,
        mode_confidence=round(mconf, 3),
        time_signature=ts,
        time_signature_confidence=round(ts_conf, 3),
    )


def measure(y: np.ndarray, sr: int = SAMPLE_RATE) -> Descriptors:
    """Descriptors of a whole in-memory signal, cut into the pipeline's 30-s windows."""
    y = _as_mono(y)
    size = int(round(WINDOW_SECONDS * sr))
    windows = [y[i: i + size] for i in range(0, y.size, size)] or [y]
    return combine([window_evidence(w, sr) for w in windows])


def measure_file(path: str | Path) -> Descriptors:
    """Descriptors of an audio file, streamed window by window (memory bounded by one window)."""
    from .audio import iter_windows

    ev = [window_evidence(w, SAMPLE_RATE) for w in iter_windows(path)]
    if not ev:
        ev = [window_evidence(np.zeros(0, dtype=np.float32), SAMPLE_RATE)]
    return combine(ev)


# ----------------------------------------------------------------------------------------------
# evaluation against Spotify's own values (dev previews)


def tempo_agreement(estimate: float, reference: float, tol: float = 0.04) -> tuple[bool, bool]:
    """(exact, up-to-octave) agreement: within `tol` relative, directly or after halving/doubling."""
    if reference <= 0 or estimate <= 0:
        return False, False
    exact = abs(estimate / reference - 1) <= tol
    octave = exact or any(abs(estimate * f / reference - 1) <= tol for f in (0.5, 2.0))
    return exact, octave


def loudness_map(level: np.ndarray, spotify_db: np.ndarray) -> tuple[float, float]:
    """The shipped map's form refitted on some songs' levels (`segment_level` for `loudness`, LUFS for
    `loudness_bs1770`): (LOUDNESS_SLOPE, mean offset), so held-out scores use the map analysis uses."""
    x, y = np.asarray(level, dtype=np.float64), np.asarray(spotify_db, dtype=np.float64)
    return LOUDNESS_SLOPE, float(np.mean(y - LOUDNESS_SLOPE * x))


def fit_loudness(lufs: np.ndarray, spotify_db: np.ndarray, k: int = 5, seed: int = 0) -> dict:
    """Least-squares line Spotify dB ~ x (a level: the segment level or LUFS), with k-fold cross-validated mean absolute error (dB)."""
    x = np.asarray(lufs, dtype=np.float64)
    y = np.asarray(spotify_db, dtype=np.float64)
    if x.size < 2 * k:
        raise ValueError(f"need at least {2 * k} songs for {k}-fold cross-validation, got {x.size}")
    order = np.random.default_rng(seed).permutation(x.size)
    folds = np.array_split(order, k)
    fold_mae, fold_mae_offset = [], []
    for f in folds:
        train = np.setdiff1d(order, f)
        a, b = np.polyfit(x[train], y[train], 1)
        fold_mae.append(float(np.mean(np.abs(a * x[f] + b - y[f]))))
        off = float(np.mean(y[train] - x[train]))  # slope fixed at 1: a pure offset
        fold_mae_offset.append(float(np.mean(np.abs(x[f] + off - y[f]))))
    slope, intercept = np.polyfit(x, y, 1)
    return {
        "n": int(x.size),
        "k": k,
        "fold_mae_db": fold_mae,
        "cv_mae_db": float(np.mean(fold_mae)),
        "cv_mae_db_offset_only": float(np.mean(fold_mae_offset)),
        "slope": float(slope),
        "intercept": float(intercept),
        "offset": float(np.mean(y - x)),  # the intercept when the slope is fixed at 1
        "pearson_r": float(np.corrcoef(x, y)[0, 1]),
    }


def measure_previews(labels_csv: str | Path, audio_dir: str | Path, limit: int | None = None) -> list[tuple[dict, Descriptors, float]]:
    """(label row, our Descriptors, seconds taken) for each labelled preview whose audio exists."""
    import csv
    import time

    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        path = Path(audio_dir) / f"{r['track_id']}.mp3"
        if not path.is_file():
            continue
        t0 = time.perf_counter()
        d = measure_file(path)
        out.append((r, d, time.perf_counter() - t0))
        if limit is not None and len(out) >= limit:
            break
    return out


def evaluate_descriptors(labels_csv: str | Path, audio_dir: str | Path, limit: int | None = None) -> dict:
    """Agreement of our descriptors with Spotify's labels on the previews (tempo, key/mode, metre, loudness)."""
    meas = measure_previews(labels_csv, audio_dir, limit)
    if not meas:
        raise ValueError(f"no labelled audio found under {audio_dir}")
    n = len(meas)
    t_exact = t_oct = t_alt = 0
    key = key_mode = mode = ts = 0
    lufs, spot, ours = [], [], []
    rows = []
    for r, d, secs in meas:
        ref = float(r["tempo"])
        ex, oc = tempo_agreement(d.tempo, ref)
        alt = ex or any(tempo_agreement(a, ref)[0] for a in d.tempo_alternatives)
        t_exact += ex
        t_oct += oc
        t_alt += alt
        k_ok = d.key == int(r["key"])
        m_ok = d.mode == int(r["mode"])
        key += k_ok
        mode += m_ok
        key_mode += k_ok and m_ok
        ts += d.time_signature == int(r["time_signature"])
        lufs.append(d.loudness_lufs)
        spot.append(float(r["loudness"]))
        ours.append(d.loudness)
        rows.append({"track_id": r["track_id"], "seconds": round(secs, 3), "spotify": {k: r[k] for k in ("tempo", "loudness", "key", "mode", "time_signature")}, "ours": d.to_dict()})
    ts_labels = [int(r["time_signature"]) for r, _, _ in meas]
    result = {
        "n": n,
        "tempo_exact": t_exact / n,
        "tempo_octave": t_oct / n,
        "tempo_exact_or_alternative": t_alt / n,
        "key_exact": key / n,
        "key_and_mode": key_mode / n,
        "mode": mode / n,
        "time_signature": ts / n,
        "time_signature_always_4": sum(t == 4 for t in ts_labels) / n,
        "loudness_mae_db": float(np.mean(np.abs(np.array(ours) - np.array(spot)))),
        "seconds_per_file_median": float(np.median([s for _, _, s in meas])),
        "rows": rows,
    }
    if n >= 10:
        result["loudness_fit"] = fit_loudness(np.array(lufs), np.array(spot))
    return result
