"""Spotify's audio-analysis object (beats, bars, tatums, sections, segments) for any audio file, offline.

One streamed pass in little memory: each 30-s window gives `descriptors.window_evidence` (so the
track-level tempo, key, loudness and metre are `songfeat analyze`'s own) and is reduced here to a
few compact per-frame features on a uniform 23-ms grid (STFT 2048 / hop 1024 at 44.1 kHz, context
carried across windows): a log-mel flux onset envelope and a < 200 Hz one, the frame level in
dBFS, a 12-bin peak chroma, the 12 timbre coefficients and the waveform peak, plus a 2.9-ms energy
envelope that onsets are placed on. No audio is kept (~22 MB per hour). Then, on the whole song:

* beats: dynamic programming over the onset envelope at the track's beat period (Ellis 2007), each
  stretch of sound between silences (frames under -59 dBFS for >= 1 s) on its own, so none falls in one; whether
  there is a beat at all is `descriptors`' (`carries_beat`): with none the track's tempo is 0, as Spotify's;
* bars: beats grouped by the track's time signature, phased on the beat with the strongest bass
  onsets and chord changes; tatums: each beat split in two (or three when triplets dominate);
* sections: Foote novelty on beat-independent blocks of chroma + timbre + rhythm with a Gaussian
  checkerboard kernel, but none where the music repeats what it played up to 12 s before (a loop), each with its own
  loudness (measured and mapped as the track's), tempo and key (none in a song with no key:
  the track's values are `songfeat analyze`'s, from one computation);
  a silence of 4 s or more is a section of its own;
* segments: peaks of the onset envelope and starts of silences, with loudness envelopes in dBFS, chroma pitches
  (max = 1) and timbre on a fixed DCT basis of the log-mel spectrum (docs/analysis.md);
* fades: where the smoothed loudness envelope stops rising from the start (and from the end).
"""
from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import descriptors as D
from .analyze import measured_values
from . import features
from .descriptors import SILENCE_DBFS, SILENCE_SECONDS, beat_spans, longer, silent_runs
from .audio import SAMPLE_RATE, AudioInfo, check_windows, header_info, iter_windows, reporting_windows

# --- frame grid (all times below are on it): frame k is centred at sample k * HOP
N_FFT = 2048
HOP = 1024
FPS = SAMPLE_RATE / HOP  # ~43.1 frames per second
FINE = 128  # samples per block of the fine energy envelope (2.9 ms) that onset times are refined on
REFINE_MIN_RISE_DB = 3.0  # an onset moves to the fine envelope's steepest rise only if it rises this much
# --- timbre: log-mel bands up to 11 kHz, projected on a fixed DCT-II basis (see timbre_basis)
N_BANDS = 40
BAND_FMAX = SAMPLE_RATE // 4  # 11025 Hz: mp3 encoders often cut above 16 kHz, so the top is left out
BAND_FLOOR_DB = -80.0  # band levels below this (re a full-scale sine) are clipped: digital silence
TIMBRE_DIMS = 12
TIMBRE_OFFSET_DB = 80.0  # timbre[0] = total band power (dB) + this: silence 0, loud music ~60-70
# --- chroma from spectral peaks, each placed by parabolic interpolation on the nearest pitch class
CHROMA_FMIN, CHROMA_FMAX = 55.0, 5000.0
PEAK_REL_DB = 40.0  # peaks more than this below the frame's strongest are side lobes or noise
HALF_FRAME_DB = 10.0 * math.log10(2.0)  # the first frame's window is half zero padding: steady sound reads 3 dB lower
ONSET_RANGE_DB = 50.0  # band levels further below the frame's loudest band do not count towards onsets
LOW_BAND_HZ = 200.0  # the kick/bass band whose onsets mark downbeats
LOW_FLOOR_DB = -60.0  # its bins' power (re the FFT's raw scale) is floored here
LOUDNESS_FLOOR_DB = -60.0  # Spotify's floor for every loudness value
# --- beats (Ellis 2007, as librosa.beat.beat_track)
BEAT_TIGHTNESS = 100.0  # how strongly inter-beat intervals are held to the period
# --- segments: onset peak picking (librosa.onset.onset_detect's rule, in seconds)
SEG_PRE_MAX, SEG_POST_MAX = 0.03, 0.03
SEG_PRE_AVG, SEG_POST_AVG = 0.10, 0.10
SEG_WAIT = 0.06  # shortest segment
SEG_MAX_DROP_DB = 3.0  # the frame after an onset may not be this much quieter than the one before it
SEG_DELTA = 0.06  # onset must exceed its local mean by this fraction of the song's 99th-percentile onset
SEG_SCALE_FLOOR = 0.5  # that percentile's floor: real recordings read 2-25, a steady tone's float noise 1e-5
# --- sections: Foote novelty with a Gaussian-tapered checkerboard kernel, blind to what repeats
NOVELTY_TIMBRE_DB = 10.0  # timbre change (dB, root-mean-square over the 12 dims) that weighs like a unit chroma change
BLOCK_SECONDS = 0.25  # features are averaged over blocks of this length before the novelty
KERNEL_SECONDS = 6.0  # half-width of the checkerboard kernel (past vs future)
REPEAT_SECONDS = 2 * KERNEL_SECONDS  # what repeats a stretch heard up to this long before (or after) is no change: a
# loop of up to 12 s (four bars at 80 BPM) is one section, and a part of over 6 s between two alike ones is still new
RHYTHM_SECONDS = 4.0  # each block's rhythm: the onset envelope's autocorrelation over this much audio around it ...
RHYTHM_LAGS = (0.1, 1.5)  # ... at lags from a fast subdivision to a beat at 40 BPM (two such beats fit in the 4 s)
RHYTHM_WEIGHT = 0.3  # its weight in the novelty: drums going from 90 to 140 BPM read ~0.8, about as a chord change does
MIN_SECTION_SECONDS = 8.0  # no two section boundaries closer than this (nor to either end)
SECTION_THRESHOLD = 0.3  # a boundary's novelty must reach this fraction of the highest novelty around it ...
SECTION_CONTEXT_SECONDS = 45.0  # ... within this many seconds either side
MIN_NOVELTY = 0.2  # ... and this much in absolute terms (squared feature distance), so steady audio has one section
KEY_CHANGE_MARGIN = 0.1  # a section's key differs from the track's only if it fits its chroma this much better
SECTION_TEMPO_TOLERANCE = math.log2(1.08)  # a section tempo further than 8% from its own beats' tempo is not kept ...
SECTION_TEMPO_MARGIN = 0.25  # ... unless its onsets' harmonic support (mean autocorrelation) is this much higher at
# its own period than at the beats': then the tempo has changed and the beats, which keep the track's period, miss it
# --- fades
FADE_SMOOTH_SECONDS = 1.0  # shortest smoothing of the loudness envelope (power mean) where fades are found: a bar if longer
FADE_FINE_SECONDS = 0.1  # ... and the light smoothing where their ends are placed
FADE_LOOKAHEAD_SECONDS = 2.0  # a fade ends when the envelope stops gaining >= FADE_RISE_DB within this
FADE_RISE_DB = 1.0
SILENCE_REL_DB = 50.0  # frames this far below the song's loudest are silence for the fade search
# --- silence: digital zeros, dither or a noise floor under -60 dBFS; never a quiet recording (a field recording at -57)
OPEN_SILENCE_SECONDS = 0.5  # a song whose first hit dies into silence within this long opens from silence, as one ...
OPEN_HIT_SECONDS = 0.015  # ... silent at its start: its first frame is compared with silence (`opens_from_silence`)
# SILENCE_DBFS (a silent frame), SILENCE_SECONDS (a silence), and the stretches of sound beats are laid on (`beat_spans`,
# TRACK_BEATS) are `descriptors`': they decide there whether the track has a beat at all, on the same unweighted frame
# level, so the two agree (`analyse` keeps a guard for level right at the edge, where frame layouts differ)
SILENT_SECTION_SECONDS = 4.0  # a silence this long is a section of its own (half MIN_SECTION_SECONDS, as at the ends)
MIN_LOUDNESS_SECONDS = 0.5  # a section is measured on at least this much audio: BS.1770 gates in 0.4-s blocks, so
# a shorter one (a click between two silent sections) read -60
TRACK_MEASURED = ("loudness", "tempo", "tempo_confidence", "time_signature", "time_signature_confidence", "key",
                  "key_confidence", "mode", "mode_confidence")  # the track's fields that are `songfeat analyze`'s own
ANALYZER_VERSION = "songfeat-analysis-8"  # in every object's meta: bumped when the output changes


@lru_cache(maxsize=1)
def timbre_basis() -> np.ndarray:
    """The fixed timbre basis [12, N_BANDS]: the orthonormal DCT-II of the band levels, with two sign/scale choices.

    Row 1 is negated so that positive means bright (more treble than bass), as Spotify's second
    dimension. Row 0 is replaced in use by the total band power in dB + `TIMBRE_OFFSET_DB` (the
    loudness-like first dimension; the mean of floored band levels would not scale with gain).
    Derived from its formula, so nothing is fitted or shipped and it can never drift.
    """
    n = np.arange(N_BANDS)
    k = np.arange(TIMBRE_DIMS)[:, None]
    basis = np.cos(np.pi / N_BANDS * (n + 0.5) * k) * math.sqrt(2.0 / N_BANDS)
    basis[0] = 1.0 / N_BANDS  # the plain mean (dB); replaced in use, see above
    basis[1] *= -1.0
    return basis.astype(np.float32)


@lru_cache(maxsize=1)
def _band_filters() -> np.ndarray:
    """[bins, N_BANDS] HTK mel filters up to BAND_FMAX on the N_FFT grid, scaled so a full-scale sine reads ~0 dB."""
    nb = int(BAND_FMAX * N_FFT / SAMPLE_RATE) + 1
    fb = D._mel_filterbank_t(2 * BAND_FMAX, 2 * (nb - 1), N_BANDS)  # same bin spacing, 0..BAND_FMAX
    ref = float(D._hann_window(N_FFT).sum()) ** 2 / 4.0  # power of a unit sine's peak bin
    return np.ascontiguousarray(fb / np.float32(ref), dtype=np.float32)


@lru_cache(maxsize=1)
def _chroma_bins() -> tuple[int, int]:
    """(first, last) bin of the chroma search band."""
    return max(2, int(CHROMA_FMIN * N_FFT / SAMPLE_RATE)), int(CHROMA_FMAX * N_FFT / SAMPLE_RATE) + 1


@dataclass
class Frames:
    """Compact per-frame features of a whole song on the HOP grid (no audio)."""

    onset: np.ndarray  # [T] mean positive log-mel flux (dB)
    onset_low: np.ndarray  # [T] positive flux below LOW_BAND_HZ (dB)
    level_db: np.ndarray  # [T] frame level, dBFS (0 = full-scale sine), floored at -60
    chroma: np.ndarray  # [T, 12] spectral-peak power per pitch class, C first
    timbre: np.ndarray  # [T, 12] timbre coefficients of the frame's log-mel spectrum
    peak: np.ndarray  # [T] waveform peak |y| over the frame's hop
    fine_db: np.ndarray  # [n_samples // FINE] energy of each FINE-sample block, dB
    n_samples: int

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.onset.size) * (HOP / SAMPLE_RATE)


class FrameStream:
    """Turns consecutive blocks of audio into `Frames`, carrying STFT context across block edges."""

    def __init__(self) -> None:
        self.buf = np.zeros(N_FFT // 2, dtype=np.float32)  # zero padding before the first sample
        self.buf_start = -(N_FFT // 2)  # song sample index of buf[0]
        self.next_frame = 0
        self.n_samples = 0
        self.prev_bands: np.ndarray | None = None  # the last frame's onset bands; none before the song (`_features`)
        self.prev_low: np.ndarray | None = None
        self.first_from_silence = (0.0, 0.0)  # the first frame's (onset, onset_low) against silence before the song
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.fine: list[np.ndarray] = []
        self.fine_rest = np.zeros(0, dtype=np.float32)

    def push(self, y: np.ndarray) -> None:
        """Add the next block of mono float32 audio."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        self.n_samples += y.size
        self.buf = np.concatenate([self.buf, y])
        self._run()
        f = np.concatenate([self.fine_rest, y])
        m = f.size // FINE * FINE
        blocks = f[:m].reshape(-1, FINE)
        self.fine.append((10.0 * np.log10(np.einsum("ij,ij->i", blocks, blocks) / FINE + 1e-10)).astype(np.float32))
        self.fine_rest = f[m:].copy()

    def finish(self) -> Frames:
        """Pad the end with zeros, compute the last frames and return the whole song's features."""
        last = (self.n_samples - 1) // HOP if self.n_samples else -1  # the last frame centred inside the audio
        need = last * HOP + N_FFT // 2 - (self.buf_start + self.buf.size)
        if need > 0:
            self.buf = np.concatenate([self.buf, np.zeros(need, dtype=np.float32)])
        self._run(limit=last)
        if not self.parts:
            z = np.zeros(0, dtype=np.float32)
            return Frames(z, z, z, np.zeros((0, 12), np.float32), np.zeros((0, 12), np.float32), z, z, self.n_samples)
        cols = [np.concatenate(c) for c in zip(*self.parts)]
        fine_db = np.concatenate(self.fine)
        if opens_from_silence(fine_db):
            cols[0][0], cols[1][0] = self.first_from_silence  # the first frame's onset and onset_low
        return Frames(*cols, fine_db=fine_db, n_samples=self.n_samples)

    def _run(self, limit: int | None = None) -> None:
        end = self.buf_start + self.buf.size
        k_last = (end - N_FFT // 2) // HOP  # frames whose whole span is in the buffer
        if limit is not None:
            k_last = min(k_last, limit)
        count = k_last - self.next_frame + 1
        if count <= 0:
            return
        i0 = self.next_frame * HOP - N_FFT // 2 - self.buf_start
        seg = np.ascontiguousarray(self.buf[i0: i0 + (count - 1) * HOP + N_FFT])
        frames = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP]
        self.parts.append(self._features(frames))
        self.next_frame += count
        drop = self.next_frame * HOP - N_FFT // 2 - self.buf_start
        self.buf = self.buf[drop:].copy()
        self.buf_start += drop

    def _features(self, frames: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-frame features of [K, N_FFT] float32 frames (numpy, float32 throughout)."""
        f32 = np.float32
        mid = frames[:, N_FFT // 2 - HOP // 2: N_FFT // 2 + HOP // 2]
        peak = np.abs(mid).max(1)
        hann = D._hann_window(N_FFT)
        x = np.fft.rfft(frames * hann, axis=1)
        p = (x.real * x.real + x.imag * x.imag).astype(f32)  # [K, bins] power
        bf = _band_filters()
        band_power = p[:, : bf.shape[0]] @ bf
        bands = f32(10.0) * np.log10(np.maximum(band_power, f32(10 ** (BAND_FLOOR_DB / 10))))
        nlow = max(3, int(LOW_BAND_HZ * N_FFT / SAMPLE_RATE))
        low = f32(10.0) * np.log10(np.maximum(p[:, 1:nlow], f32(10 ** (LOW_FLOOR_DB / 10))))
        # flux on levels floored ONSET_RANGE_DB below each frame's loudest band: the splatter of a note's
        # release (quiet, broadband) is not an onset
        fb = np.maximum(bands, bands.max(1, keepdims=True) - f32(ONSET_RANGE_DB))
        # the song's first frame is compared with itself, not with silence, and the second with the first as if its
        # window were whole: a file cut mid-music (a preview) does not start on an onset. Against silence 101 of the
        # 102 previews had a beat and a segment at 0.0 with confidence 1.0, and the beat path bent to reach that beat
        # (the first interval 1.1-1.3 periods). Its onset against silence is kept too: `finish` takes it for a song
        # that opens from silence (`opens_from_silence`), so a hit in its first 15 ms is marked
        first = self.prev_bands is None
        if first:
            self.first_from_silence = (
                float(np.maximum(fb[0] - f32(BAND_FLOOR_DB), f32(0)).mean(dtype=f32)),
                float(np.maximum(low[0] - f32(LOW_FLOOR_DB), f32(0)).mean(dtype=f32)))
        before = np.concatenate([fb[:1] if first else self.prev_bands, fb[:-1]])
        before_low = np.concatenate([low[:1] if first else self.prev_low, low[:-1]])
        second = 1 - self.next_frame  # the song's second frame, in this block or not
        if 0 <= second < fb.shape[0]:
            before[second] += f32(HALF_FRAME_DB)
            before_low[second] += f32(HALF_FRAME_DB)
        onset = np.maximum(fb - before, f32(0)).mean(1, dtype=f32)
        onset_low = np.maximum(low - before_low, f32(0)).mean(1, dtype=f32)
        self.prev_bands, self.prev_low = fb[-1:], low[-1:]
        timbre = bands @ timbre_basis().T
        timbre[:, 0] = np.maximum(f32(10.0) * np.log10(np.maximum(band_power.sum(1), f32(1e-12))), f32(BAND_FLOOR_DB)) + f32(TIMBRE_OFFSET_DB)
        # frame level: Parseval over the rfft bins, divided by the window's energy -> mean square of the audio
        wsum2 = float(np.square(hann).sum())
        ms = (f32(2.0) * p.sum(1) - p[:, 0] - p[:, -1]) / f32(N_FFT * wsum2)
        level = np.maximum(f32(10.0) * np.log10(np.maximum(f32(2.0) * ms, f32(1e-12))), f32(LOUDNESS_FLOOR_DB))
        return (onset.astype(f32), onset_low.astype(f32), level.astype(f32), _peak_chroma(p),
                timbre.astype(f32), peak.astype(f32))


def opens_from_silence(fine_db: np.ndarray) -> bool:
    """Whether a song's first frame is compared with silence, from its level per FINE block (`fine_db`): it opens in
    silence (its first block is silent), or on a hit that dies away into silence within OPEN_SILENCE_SECONDS, nothing
    louder before that silence than its first OPEN_HIT_SECONDS (a click track from t = 0).

    A file cut mid-music holds its sound (every preview reads -45 dBFS or more throughout its first 0.5 s), and speech
    over a room's noise grows louder before its first pause: neither opens on an onset.
    """
    head = fine_db[: int(round(OPEN_SILENCE_SECONDS * SAMPLE_RATE / FINE))] + 10.0 * math.log10(2.0)  # dB re a sine
    quiet = np.flatnonzero(head < SILENCE_DBFS)
    if quiet.size == 0:
        return False
    hit = max(1, int(round(OPEN_HIT_SECONDS * SAMPLE_RATE / FINE)))
    return bool(quiet[0] == 0 or head[: quiet[0]].max() <= head[:hit].max())


def _peak_chroma(p: np.ndarray) -> np.ndarray:
    """[K, 12] chroma: each spectral peak's power on the pitch class nearest its interpolated frequency."""
    f32 = np.float32
    b0, b1 = _chroma_bins()
    band = p[:, b0 - 1: b1 + 1]
    mid = band[:, 1:-1]
    floor = p.max(1, keepdims=True) * f32(10 ** (-PEAK_REL_DB / 10))
    is_peak = (mid > band[:, :-2]) & (mid >= band[:, 2:]) & (mid > floor) & (mid > 1e-9)
    row, col = np.nonzero(is_peak)  # peaks are sparse: interpolate only there
    a, b, c = (np.log(np.maximum(band[row, col + i], f32(1e-20))) for i in range(3))
    den = a - f32(2) * b + c
    ok = np.abs(den) > 1e-9
    delta = np.zeros_like(den)
    np.divide(f32(0.5) * (a - c), den, out=delta, where=ok)
    delta = np.clip(delta, -0.5, 0.5)
    freq = (col.astype(f32) + f32(b0) + delta) * f32(SAMPLE_RATE / N_FFT)
    pc = np.remainder(np.round(f32(69.0) + f32(12.0) * np.log2(freq / f32(440.0))), 12).astype(np.int64)
    out = np.bincount(row * 12 + pc, weights=mid[row, col], minlength=p.shape[0] * 12)
    return out.astype(f32).reshape(-1, 12)


# ----------------------------------------------------------------------------------------------
# beats, bars, tatums


def track_beats(onset: np.ndarray, period: float, tightness: float = BEAT_TIGHTNESS) -> np.ndarray:
    """Frame indices of beats: dynamic programming over the onset envelope at `period` frames (Ellis 2007).

    Each frame's score is its (smoothed) onset strength plus the best predecessor's score, penalised
    by tightness * log(interval / period)^2; the best path is read back from the last strong beat.
    """
    if period <= 1 or onset.size < 2 * period or not np.any(onset > 0):
        return np.zeros(0, dtype=np.int64)
    env = onset / (onset.std() + 1e-12)
    w = np.arange(-int(period), int(period) + 1)
    win = np.exp(-0.5 * (w * 32.0 / period) ** 2)
    local = np.convolve(env, win, mode="same")
    lo, hi = max(1, int(round(period / 2))), int(round(2 * period))
    lags = np.arange(lo, hi + 1)
    penalty = -tightness * np.log(lags / period) ** 2
    n = local.size
    score = local.copy()
    back = np.full(n, -1, dtype=np.int64)
    above = np.flatnonzero(local >= 0.01 * local.max())
    start = max(lo, int(above[0]) if above.size else n)
    # frames less than `lo` apart never depend on each other: fill the recursion `lo` frames at a time
    for t0 in range(start, n, lo):
        t = np.arange(t0, min(t0 + lo, n))
        prev = t[:, None] - lags[None, :]
        s = np.where(prev >= 0, score[np.maximum(prev, 0)] + penalty, -np.inf)
        j = np.argmax(s, axis=1)
        best = s[np.arange(t.size), j]
        # a beat may also start the path: a first onset just over half a period in had only silence before it, reached
        # through a heavily penalised short lag, so the path skipped it and the song's first beat (and bar) was lost
        score[t] = local[t] + np.maximum(best, 0.0)
        back[t] = np.where(best > 0.0, prev[np.arange(t.size), j], -1)
    # end on the best local maximum of the cumulative score within the last period of those that are not weak: the
    # last of them may lie off the beat (an off-beat onset just before the end), and reading back from it bent the
    # last beats to reach it (by 10% of a period or more at the end of 18 of the 102 previews)
    peaks = np.flatnonzero((score[1:-1] > score[:-2]) & (score[1:-1] >= score[2:])) + 1
    if peaks.size == 0:
        return np.zeros(0, dtype=np.int64)
    good = peaks[score[peaks] >= 0.5 * np.median(score[peaks])]
    good = good if good.size else peaks[-1:]
    last = good[good > good[-1] - period]
    t = int(last[np.argmax(score[last])])
    beats = [t]
    while back[t] >= 0:
        t = int(back[t])
        beats.append(t)
    beats = np.array(beats[::-1], dtype=np.int64)
    # trim weak beats at either end (silence, fade tails): below half the median local score at beats. A median, not
    # the RMS: one huge onset (sound starting from digital silence at 0 s) lifted the RMS so far that a quieter half
    # of a steady song was trimmed as a "tail" (a 6-s chord loop kept beats to 3 s at full level, to 5.5 s at -12 dB)
    strong = local[beats] >= 0.5 * float(np.median(local[beats]))
    if strong.any():
        a, b = np.flatnonzero(strong)[[0, -1]]
        beats = beats[a: b + 1]
    return beats


def onset_rise(fine_db: np.ndarray) -> np.ndarray:
    """Per fine block: its level minus the loudest of the 8 blocks before it (dB): where attacks start."""
    pad = np.concatenate([np.full(8, -100.0, dtype=np.float32), fine_db])
    before = np.lib.stride_tricks.sliding_window_view(pad, 8)[: fine_db.size].max(1)
    return fine_db - before


def refine_times(frames_idx: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """Seconds of onsets found at frames `frames_idx`, moved to the steepest energy rise within the frame's span.

    A frame's flux fires when an attack enters its 46-ms window, so the frame time alone is off by up
    to +/-23 ms; the 2.9-ms energy envelope pins the attack down when it rises by REFINE_MIN_RISE_DB.
    """
    t = frames_idx * (HOP / SAMPLE_RATE)
    if rise.size == 0 or frames_idx.size == 0:
        return t
    span = HOP // FINE
    centre = frames_idx * (HOP // FINE)
    offs = np.arange(-span, span + 1)
    j = np.clip(centre[:, None] + offs[None, :], 0, rise.size - 1)
    r = rise[j]
    best = np.argmax(r, axis=1)
    ok = r[np.arange(best.size), best] >= REFINE_MIN_RISE_DB
    return np.where(ok, j[np.arange(best.size), best] * (FINE / SAMPLE_RATE), t)


def _norm_conf(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(x / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(x)


def downbeat_phase(beat_frames: np.ndarray, fr: Frames, meter: int, end: int | None = None) -> tuple[int, np.ndarray]:
    """Which beat of each `meter` group is the downbeat, and each beat's accent (z-score).

    Accent = bass-band onset at the beat + chroma change across it: kicks, bass notes and chord
    changes gather on the first beat of the bar. The last beat's span runs to frame `end` (the song's end).
    """
    n = beat_frames.size
    if n == 0 or meter <= 1:
        return 0, np.zeros(n)
    T = fr.onset_low.size if end is None else end
    lo = np.array([fr.onset_low[max(0, k - 1): min(T, k + 2)].max() for k in beat_frames])
    cs = np.concatenate([np.zeros((1, 12)), np.cumsum(fr.chroma, axis=0, dtype=np.float64)])
    edges = np.concatenate([beat_frames, [T]])
    starts = np.concatenate([[0], beat_frames])
    seg = cs[edges] - cs[starts]  # chroma of the span before each beat boundary, then the last span
    seg /= np.linalg.norm(seg, axis=1, keepdims=True) + 1e-12
    change = 1.0 - np.einsum("ij,ij->i", seg[:-1], seg[1:])

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / (v.std() + 1e-9)

    accent = z(lo) + 0.5 * z(change)
    scores = [accent[p::meter].mean() if accent[p::meter].size else -np.inf for p in range(meter)]
    return int(np.argmax(scores)), accent


def tatum_division(spans: list[np.ndarray], onset: np.ndarray) -> int:
    """2 (eighths) unless onsets between beats sit at thirds clearly more than at halves, and are not faint (then 3).

    `spans`: the beat frames of each stretch of sound; only beats of one stretch are read as neighbours.
    """
    if sum(max(0, s.size - 1) for s in spans) < 3:
        return 2
    a = np.concatenate([s[:-1] for s in spans]).astype(np.float64)
    b = np.concatenate([s[1:] for s in spans]).astype(np.float64)

    def at(frac: float) -> float:
        return float(onset[np.clip(np.round(a + frac * (b - a)).astype(np.int64), 0, onset.size - 1)].mean())

    half, thirds = at(0.5), 0.5 * (at(1 / 3) + at(2 / 3))
    return 3 if thirds > 1.3 * half and thirds > 0.25 * at(0.0) else 2


# ----------------------------------------------------------------------------------------------
# segments, sections, fades


def segment_starts(fr: Frames, rise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start seconds, confidence) of segments: onset peaks (librosa's picking rule), refined."""
    o = fr.onset.astype(np.float64)
    T = o.size
    if T == 0:
        return np.zeros(0), np.zeros(0)
    scale = max(float(np.quantile(o, 0.99)), SEG_SCALE_FLOOR)  # no onsets at all: no segments from rounding noise
    pre_max, post_max = int(math.ceil(SEG_PRE_MAX * FPS)), int(math.ceil(SEG_POST_MAX * FPS))
    pre_avg, post_avg = int(math.ceil(SEG_PRE_AVG * FPS)), int(math.ceil(SEG_POST_AVG * FPS))
    padded = np.pad(o, (pre_max, post_max), constant_values=-np.inf)
    is_max = o >= np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max + 1).max(1)
    cs = np.concatenate([[0.0], np.cumsum(o)])
    i = np.arange(T)
    a, b = np.maximum(0, i - pre_avg), np.minimum(T, i + post_avg + 1)
    mean = (cs[b] - cs[a]) / (b - a)
    lv = fr.level_db.astype(np.float64)
    before = np.concatenate([[LOUDNESS_FLOOR_DB], lv[:-1]])
    after = np.concatenate([lv[1:], [LOUDNESS_FLOOR_DB]])
    # an onset adds sound: the level rises at it, or holds just after it; a note's release does neither
    adds = (lv >= before + 1.0) | (after >= before - SEG_MAX_DROP_DB)
    cand = np.flatnonzero(is_max & (o >= mean + SEG_DELTA * scale) & (o > 0) & adds)
    wait = max(1, int(round(SEG_WAIT * FPS)))
    keep, last = [], -wait
    for k in cand:
        if k - last >= wait:
            keep.append(k)
            last = k
    ks = np.array(keep, dtype=np.int64)
    return refine_times(ks, rise), _norm_conf(o[ks], scale)


def _window_sums(cs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sums over [a, b) from a cumulative sum with a leading 0 (`cs[k]` = the sum of the first k values)."""
    return cs[b] - cs[a]


def _sq_norms(d: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row."""
    return np.einsum("ij,ij->i", d, d)


def rhythm_blocks(onset: np.ndarray, per: int, nb: int) -> np.ndarray:
    """[nb, lags] the rhythm of each block of `per` frames: the autocorrelation of the onset envelope (less its 1-s
    moving mean: swells are not beats) over RHYTHM_SECONDS around the block, at every lag in RHYTHM_LAGS.

    Each lag's value is the correlation of the frame pairs that lag apart inside the window (-1 to 1, ~0 without a
    pulse), so a steady pulse gives the same vector throughout and a new tempo or pattern another.
    """
    o = onset.astype(np.float64)
    T = o.size
    w = max(3, int(round(FPS)))
    i = np.arange(T)
    a0, b0 = np.maximum(0, i - w // 2), np.minimum(T, i - w // 2 + w)
    o = o - _window_sums(np.concatenate([[0.0], np.cumsum(o)]), a0, b0) / (b0 - a0)
    lo, hi = max(1, int(round(RHYTHM_LAGS[0] * FPS))), int(round(RHYTHM_LAGS[1] * FPS))
    W = int(round(RHYTHM_SECONDS * FPS))
    a = np.clip(np.arange(nb) * per + per // 2 - W // 2, 0, max(0, T - W))  # whole windows, moved in at the ends
    b = np.minimum(a + W, T)
    energy = np.concatenate([[0.0], np.cumsum(o * o)])
    out = np.zeros((nb, max(0, hi - lo + 1)))
    for j, lag in enumerate(range(lo, min(hi, T - 1) + 1)):
        e = np.maximum(b - lag, a)  # pairs (t, t + lag) with t in [a, e) lie in the window
        prod = np.concatenate([[0.0], np.cumsum(o[:-lag] * o[lag:])])
        s = _window_sums(prod, np.minimum(a, T - lag), np.minimum(e, T - lag))
        norm = _window_sums(energy, a, e) * _window_sums(energy, np.minimum(a + lag, T), np.minimum(e + lag, T))
        out[:, j] = s / np.sqrt(np.maximum(norm, 1e-24))
    return out


def novelty(fr: Frames) -> tuple[np.ndarray, float]:
    """Novelty on blocks of chroma + timbre + rhythm, and the block length (s): Foote's, unless what comes (or what
    went) repeats a stretch of the REPEAT_SECONDS around it.

    Foote's novelty with a separable (Gaussian-tapered) checkerboard kernel: correlating the self-similarity matrix
    along its diagonal equals the squared distance between the weighted mean features before and after each instant,
    so the matrix is never built: memory and time are linear in the song. That kernel weighs most the second either
    side, so on its own it peaks at every chord change of a loop. A section boundary is a change that does not
    repeat: the novelty at t is the least of Foote's and the squared distances between the plain means of the
    KERNEL_SECONDS after t and of each as long stretch starting KERNEL_SECONDS to REPEAT_SECONDS before (and of the
    KERNEL_SECONDS before t and each stretch ending as far after). A loop of up to REPEAT_SECONDS meets itself again
    within that reach, so it has none; a new part resembles neither side, so it keeps Foote's.
    """
    per = max(1, int(round(BLOCK_SECONDS * FPS)))
    nb = fr.onset.size // per
    if nb < 4:
        return np.zeros(max(nb, 0)), per / FPS
    ch = fr.chroma[: nb * per].reshape(nb, per, 12).sum(1).astype(np.float64)
    ch /= np.linalg.norm(ch, axis=1, keepdims=True) + 1e-12
    tb = fr.timbre[: nb * per].reshape(nb, per, TIMBRE_DIMS).mean(1).astype(np.float64)
    tb = tb / (NOVELTY_TIMBRE_DB * math.sqrt(TIMBRE_DIMS))  # absolute units: a steady song stays steady
    x = np.concatenate([ch, tb, RHYTHM_WEIGHT * rhythm_blocks(fr.onset, per, nb)], axis=1)
    K = max(1, int(round(KERNEL_SECONDS / (per / FPS))))
    g = np.exp(-0.5 * (np.arange(K) / (K / 2.0)) ** 2)
    past = np.zeros_like(x)
    fut = np.zeros_like(x)
    wp = np.zeros(nb)
    wf = np.zeros(nb)
    for i in range(min(K, nb)):  # past: blocks b-1-i; future: blocks b+i
        past[i + 1:] += g[i] * x[: nb - i - 1]
        wp[i + 1:] += g[i]
        fut[: nb - i] += g[i] * x[i:]
        wf[: nb - i] += g[i]
    past /= np.maximum(wp, 1e-12)[:, None]
    fut /= np.maximum(wf, 1e-12)[:, None]
    past -= fut
    nov = np.where((wp > 0) & (wf > 0), _sq_norms(past), 0.0)
    del past, fut  # (memory: an hour's blocks of these features take 10 MB a copy)
    cs = np.zeros((nb + 1, x.shape[1]))
    np.cumsum(x, axis=0, out=cs[1:])
    del x
    t = np.arange(nb)
    a, b = np.maximum(0, t - K), np.minimum(nb, t + K)
    before = _window_sums(cs, a, t) / np.maximum(t - a, 1)[:, None]  # plain means of the K blocks before t ...
    after = _window_sums(cs, t, b) / (b - t)[:, None]  # ... and of the K from t on
    del cs
    for lag in range(K, min(int(round(REPEAT_SECONDS / (per / FPS))), nb - 1) + 1):
        nov[lag:] = np.minimum(nov[lag:], _sq_norms(after[lag:] - after[:-lag]))  # what comes was heard
        nov[:-lag] = np.minimum(nov[:-lag], _sq_norms(before[lag:] - before[:-lag]))  # what went comes back
    return nov, per / FPS


def section_bounds(nov: np.ndarray, block: float, duration: float,
                   fixed: list[float] | None = None) -> list[tuple[float, float]]:
    """(time, confidence) of section boundaries: the `fixed` ones (silence edges, confidence 1), then the strongest
    novelty peaks at least MIN_SECTION_SECONDS from every boundary chosen before them.

    A peak must reach MIN_NOVELTY and SECTION_THRESHOLD of the highest novelty within
    SECTION_CONTEXT_SECONDS (local, so one dramatic change does not hide the rest of a long song).
    """
    chosen = [(float(f), 1.0) for f in fixed or []]
    if nov.size < 3:
        return sorted(chosen)
    peaks = np.flatnonzero((nov[1:-1] > nov[:-2]) & (nov[1:-1] >= nov[2:])) + 1  # before the ends are cut off: a slope
    # falling from a change near an end had its first (last) kept block read as a peak: 22 of the 138 previews had a
    # section of 4.1-4.2 s at one end from it
    t = np.arange(nov.size) * block
    nov = np.where((t >= MIN_SECTION_SECONDS / 2) & (duration - t >= MIN_SECTION_SECONDS / 2), nov, 0.0)  # half-empty kernels
    if nov.max() <= 0:
        return sorted(chosen)
    w = int(round(SECTION_CONTEXT_SECONDS / block))
    local = np.lib.stride_tricks.sliding_window_view(np.pad(nov, w), 2 * w + 1).max(1)
    peaks = peaks[(nov[peaks] >= MIN_NOVELTY) & (nov[peaks] >= SECTION_THRESHOLD * local[peaks])]
    for p in peaks[np.argsort(-nov[peaks])]:
        if all(abs(p * block - c) >= MIN_SECTION_SECONDS for c, _ in chosen):
            chosen.append((p * block, float(nov[p] / local[p])))
    return sorted(chosen)


def silence_bounds(silences: np.ndarray, n_frames: int) -> list[float]:
    """Section boundaries (s) around every silence (of `silent_runs`) of SILENT_SECTION_SECONDS or more in a song of
    `n_frames` frames, but at the song's ends.

    Each sits half a loudness frame (`descriptors`' 4096-point window) inside the silence, so the silent
    section's loudness is measured on silence alone, not on the music beside it.
    """
    pad = D.N_FFT / 2 / SAMPLE_RATE
    out = []
    for s, e in longer(silences, SILENT_SECTION_SECONDS * FPS):
        out += ([s / FPS + pad] if s > 0 else []) + ([e / FPS - pad] if e < n_frames else [])
    return out


def _smoothed_level(level_db: np.ndarray, seconds: float) -> np.ndarray:
    """Centred power mean of the frame levels over `seconds`, dB; within half a window of either end, the nearest
    full window's value (the whole song's mean when it is shorter than one).

    A window cut short at an edge read half a bar, accents and all: a 4-s loop of clicks accented every four beats
    was a "fade-out" from 0.0 s, a 2-s drum loop one from 0.02 s.
    """
    w = max(1, int(round(seconds * FPS)))
    pw = 10 ** (level_db.astype(np.float64) / 10)
    if w >= pw.size:
        return np.full(pw.size, 10 * np.log10(pw.mean() + 1e-12)) if pw.size else pw
    full = np.convolve(pw, np.ones(w) / w, mode="valid")  # full[i]: frames i .. i + w - 1, centred as mode="same"
    return 10 * np.log10(np.pad(full, (w // 2, (w - 1) // 2), mode="edge") + 1e-12)


def _fade_end(coarse: np.ndarray, fine: np.ndarray, level: np.ndarray, silent: float, width: int) -> int:
    """Frame where a fade-in ends (0 for none): where the running maximum stops rising.

    On the envelope smoothed over a bar (`coarse`), the fade ends at the first frame after the first
    sound whose running maximum gains less than FADE_RISE_DB over the look-ahead; the bar-long
    smoothing keeps a bar's accent pattern from reading as a fade. That frame is then made precise on
    the lightly smoothed envelope (`fine`): the first frame within FADE_RISE_DB of its loudest up to
    half a bar later. A rise shorter than the smoothing (a bar) is not a fade: the first sound is returned, the first
    frame of the unsmoothed `level` above `silent` (read on `fine`, which reaches ahead of each frame, it lay 26-39 ms
    before the sound after leading silence, and a fade-out's start 44-57 ms after it before trailing silence).
    """
    sound = np.flatnonzero(coarse > silent)
    if sound.size == 0:
        return 0
    s0 = int(sound[0])
    run = np.maximum.accumulate(coarse[s0:])
    L = max(1, int(round(FADE_LOOKAHEAD_SECONDS * FPS)))
    ahead = run[np.minimum(np.arange(run.size) + L, run.size - 1)]
    done = np.flatnonzero(ahead - run < FADE_RISE_DB)
    c = s0 + int(done[0] if done.size else run.size - 1)
    span = fine[: min(fine.size, c + width // 2 + 1)]
    end = int(np.flatnonzero(span >= span.max() - FADE_RISE_DB)[0])
    heard = np.flatnonzero(level[s0:] > silent)  # from the bar-smoothed first sound: a stray click in the silence
    first = s0 + int(heard[0]) if heard.size else s0  # before it is no sound (it set both fades, once unsmoothed)
    return end if end - first >= width else first  # shorter than a bar: accents, not a fade


def fades(level_db: np.ndarray, duration: float, bar_seconds: float = 0.0) -> tuple[float, float]:
    """(end_of_fade_in, start_of_fade_out) in seconds from the frame loudness envelope."""
    if level_db.size == 0:
        return 0.0, duration
    width = max(FADE_SMOOTH_SECONDS, bar_seconds)
    coarse = _smoothed_level(level_db, width)
    fine = _smoothed_level(level_db, FADE_FINE_SECONDS)
    silent = max(float(coarse.max()) - SILENCE_REL_DB, LOUDNESS_FLOOR_DB + 0.5)
    w = int(round(width * FPS))
    fin = _fade_end(coarse, fine, level_db, silent, w) / FPS
    # frames before the end; 0: sound to the end, no fade
    back = _fade_end(coarse[::-1], fine[::-1], level_db[::-1], silent, w)
    # the last frame is centred up to a hop before the end: sound that lasts to the end ends with the file, which is
    # Spotify's value for no fade-out (the track's length). Until version 7 it read up to 23 ms short of it
    fout = duration if back == 0 else (level_db.size - 1 - back) / FPS
    fin = min(max(0.0, fin), duration)
    return fin, max(fin, min(duration, fout))


# ----------------------------------------------------------------------------------------------
# the whole object


@dataclass
class Analysis:
    """The audio-analysis dict and the per-frame features it was read from (for plotting)."""

    result: dict
    frames: Frames = field(repr=False)


def _r(x: float, nd: int = 5) -> float:
    return round(float(x), nd)


def _span_cols(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, duration) rounded to 5 places, the duration taken between the rounded ends.

    Rounding start and duration apiece left one interval in ten ending 1e-5 s after the next one's start (and as many
    1e-5 s short of it): segments and sections did not tile the track, beats and bars overlapped.
    """
    s = np.round(np.asarray(start, dtype=np.float64), 5)
    return s, np.round(np.round(np.asarray(end, dtype=np.float64), 5) - s, 5)


def key_fit(chroma: np.ndarray, key: int, mode: int) -> float:
    """Correlation of a chroma vector with the key profile `descriptors.estimate_key` uses for (key, mode)."""
    return float(D.key_correlations(np.asarray(chroma, dtype=np.float64))[0][0 if mode == 1 else 1, key])


def loudness_span(a: float, b: float, duration: float) -> tuple[float, float]:
    """The span [a, b) seconds, widened about its middle to MIN_LOUDNESS_SECONDS (within the song) when shorter.

    Sections are 4 s and more but for the sound between two silent sections, which may be one click.
    """
    if b - a >= MIN_LOUDNESS_SECONDS:
        return a, b
    a = min(max(0.0, (a + b - MIN_LOUDNESS_SECONDS) / 2), max(0.0, duration - MIN_LOUDNESS_SECONDS))
    return a, min(duration, a + MIN_LOUDNESS_SECONDS)


def section_period(ac: np.ndarray, period: float) -> float:
    """A section's beat period (frames) from the peaks of its onset autocorrelation `ac` at multiples of `period`, each
    placed between lags by parabolic interpolation, fitted as lag_k = k * period by least squares.

    `descriptors.estimate_tempo` reads its period off the mean of `ac` at 1-8 periods, linearly interpolated; the best
    such comb lies on a lag of a harmonic, so the fewer harmonics a short section's autocorrelation holds (lags
    stop at half its length), the coarser its period: to a quarter frame in 4 s (1.2% at 120 BPM). A parabola
    through each peak's three lags has no such grid. A multiple with no local maximum within a frame is left out; with
    none, `period` is kept.
    """
    ks, lags = [], []
    for k in range(1, len(D.COMB_8) + 1):
        i = int(round(k * period))
        if i + 2 >= ac.size:
            break
        j = i - 1 + int(np.argmax(ac[i - 1: i + 2]))
        y0, y1, y2 = float(ac[j - 1]), float(ac[j]), float(ac[j + 1])
        bend = y0 - 2.0 * y1 + y2
        if y1 >= y0 and y1 >= y2 and bend < 0:  # a peak (else the autocorrelation only rises or falls here)
            ks.append(k)
            lags.append(j + 0.5 * (y0 - y2) / bend)
    if not ks:
        return period
    k = np.asarray(ks, dtype=np.float64)
    return float(np.dot(k, lags) / np.dot(k, k))


def own_tempo(env: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """The tempo a section's onset envelope `env` alone says: `descriptors.estimate_tempo`'s (tempo, confidence,
    autocorrelation, period in frames), with the period placed off the lag grid by `section_period`."""
    tempo, conf, _, ac, period = D.estimate_tempo(env.astype(np.float64), FPS)
    if tempo <= 0:
        return tempo, conf, ac, period
    period = section_period(ac, period)
    return 60.0 * FPS / period, conf, ac, period


def _section_values(a: float, b: float, fr: Frames, ev: dict, beat_times: np.ndarray, track: dict) -> dict:
    """Loudness (measured and mapped as the track's, Spotify's dB scale), tempo and key of the span [a, b) seconds."""
    sr = SAMPLE_RATE
    la, lb = loudness_span(a, b, fr.n_samples / sr)
    sel = (ev["pos"] >= la * sr) & (ev["pos"] < lb * sr)
    loud = (D.spotify_loudness(D.loudness_levels(ev["kw"][sel], ev["pos"][sel] - la * sr, int((lb - la) * sr), sr)[1])
            if sel.any() else LOUDNESS_FLOOR_DB)
    ka, kb = int(round(a * FPS)), max(int(round(a * FPS)) + 1, int(round(b * FPS)))
    inside = beat_times[(beat_times >= a) & (beat_times < b)]
    beat_tempo = 60.0 / float(np.median(np.diff(inside))) if inside.size >= 3 else track["tempo"]
    # a silence (every frame under the silence level: zeros, or sound under it) has no tempo of its own, as it has no
    # key: 100-BPM clicks peaking at -55 dBFS after 120-BPM drums read 100.0 BPM at confidence 0.94
    heard = fr.level_db[ka:kb] >= SILENCE_DBFS
    own, tconf, ac, period = own_tempo(fr.onset[ka:kb]) if heard.any() else (0.0, 0.0, None, 0.0)
    if own > 0 and beat_tempo > 0:  # the octave of this section's own estimate nearest its beats, if near them
        near = min([own, own / 2, own * 2], key=lambda t: abs(math.log2(t / beat_tempo)))
        if abs(math.log2(near / beat_tempo)) <= SECTION_TEMPO_TOLERANCE:
            tempo = near
        elif D.harmonic_support(ac, period) - D.harmonic_support(ac, 60.0 * FPS / beat_tempo) >= SECTION_TEMPO_MARGIN:
            tempo = own  # the beats keep the track's period, which this section's onsets do not: the tempo changed
        else:  # a 3:2 or 4:3 reading of its own beats, or no pulse at all (a crowd read 116.8 BPM over beats at 83.7)
            tempo, tconf = beat_tempo, 0.0
    else:
        tempo, tconf = beat_tempo, 0.0
    ch = fr.chroma[ka:kb].astype(np.float64)
    voiced = (ch.max(1) > 0) & heard  # max-normalised, a silent frame's faint peaks count in full
    chroma = (ch[voiced] / ch[voiced].max(1, keepdims=True)).sum(0) if voiced.any() else np.zeros(12)
    key, kconf, mode, mconf = D.estimate_key(chroma)
    tk, tm = track["key"], track["mode"]
    if key >= 0 and tk < 0:  # the song has no tonal centre (`songfeat analyze`'s -1): nor has any part of it. A few
        key, kconf = -1, track["key_confidence"]  # seconds of speech pass the rule by chance; the song's decision holds
    elif key >= 0:
        span = (ev["pos"] >= a * sr) & (ev["pos"] < b * sr)
        gate = D.estimate_key(ev["chroma"][span].sum(0, dtype=np.float64))  # the chroma that decides the track's key -1
        if gate[0] < 0:  # none here (a drum loop's pitched kicks read D major above)
            key, kconf = -1, gate[1]
    if key >= 0 and tk >= 0 and (key, mode) != (tk, tm) and key_fit(chroma, key, mode) - key_fit(chroma, tk, tm) < KEY_CHANGE_MARGIN:
        key, mode = tk, tm  # not clearly another key: the song's (the two chroma estimators differ slightly)
    if key < 0:  # no key, so no mode: Spotify's -1 "no result" for a section (was "major", confidence up to 0.6)
        mode, mconf = -1, 0.0
    return {"loudness": _r(loud, 3), "tempo": _r(tempo, 3), "tempo_confidence": _r(tconf, 3),
            "key": int(key), "key_confidence": _r(kconf, 3), "mode": int(mode), "mode_confidence": _r(mconf, 3),
            "time_signature": track["time_signature"], "time_signature_confidence": track["time_signature_confidence"]}


def _timed(start: np.ndarray, end: np.ndarray, conf: np.ndarray) -> list[dict]:
    """{start, duration, confidence} records, rounded in bulk (per-value round() is slow on long songs)."""
    s, d = _span_cols(start, end)
    cols = (s.tolist(), d.tolist(), np.round(np.clip(conf, 0, 1), 3).tolist())
    return [{"start": s, "duration": d, "confidence": c} for s, d, c in zip(*cols)]


def rhythm(fr: Frames, rise: np.ndarray, track: dict, duration: float,
           silences: np.ndarray) -> tuple[list, list, list, np.ndarray]:
    """Beats at the track's tempo, bars by its time signature, tatums between beats; and the beat times.

    Each stretch of sound between silences (`beat_spans` of the `silent_runs`) is tracked and barred on its own: no
    beat is laid over a silence, and the music after one may come back on any beat of the bar.
    """
    if track["tempo"] <= 0:
        return [], [], [], np.zeros(0)
    period = 60.0 * FPS / track["tempo"]
    spans = beat_spans(silences, fr.onset.size, period, FPS)
    found = [(a + track_beats(fr.onset[a:b].astype(np.float64), period), b) for a, b in spans]
    found = [(bf, b) for bf, b in found if bf.size]
    div = tatum_division([bf for bf, _ in found], fr.onset)
    smooth = np.convolve(fr.onset, np.ones(3) / 3, mode="same")
    scale = float(np.quantile(smooth, 0.99))
    beats, bars, tatums, times = [], [], [], [np.zeros(0)]
    for bf, end in found:
        bt = refine_times(bf, rise)
        ends = np.concatenate([bt[1:], [min(duration, bt[-1] + period / FPS)]])
        beats += _timed(bt, ends, _norm_conf(smooth[bf], scale))
        bars += bar_records(bf, bt, ends, fr, track["time_signature"], end)
        tatums += tatum_records(bt, ends, div, smooth, scale)
        times.append(bt)
    return beats, bars, tatums, np.concatenate(times)


def bar_records(bf: np.ndarray, bt: np.ndarray, ends: np.ndarray, fr: Frames, meter: int, end: int) -> list[dict]:
    """Bars of `meter` beats (frames `bf`, times `bt` to `ends`) of one stretch of sound ending at frame `end`."""
    phase, accent = downbeat_phase(bf, fr, meter, end)
    spread = float(accent.std()) or 1.0
    first = np.arange(phase, bf.size, meter)
    last = np.minimum(first + meter, bf.size) - 1
    others = np.array([accent[i + 1: j + 1].mean() if j > i else 0.0 for i, j in zip(first, last)])
    return _timed(bt[first], ends[last], 0.5 + 0.25 * (accent[first] - others) / spread)


def tatum_records(bt: np.ndarray, ends: np.ndarray, div: int, smooth: np.ndarray, scale: float) -> list[dict]:
    """Each beat (times `bt` to `ends`) split evenly in `div`; confidence from the smoothed onset at each tatum."""
    step = (ends - bt) / div
    tstart = (bt[:, None] + step[:, None] * np.arange(div)[None, :]).reshape(-1)
    tk = np.clip(np.round(tstart * FPS).astype(np.int64), 0, smooth.size - 1)
    return _timed(tstart, tstart + np.repeat(step, div), _norm_conf(smooth[tk], scale))


def segment_records(fr: Frames, rise: np.ndarray, duration: float, silences: np.ndarray) -> list[dict]:
    """Segments from the start of the song to its end, one per onset and one per silence of SILENCE_SECONDS or more
    (`silences`, from `silent_runs`; plus a leading one from 0 if needed): the sound before a silence does not lend the
    silence its loudness."""
    seg_t, seg_c = segment_starts(fr, rise)
    quiet_k = longer(silences, SILENCE_SECONDS * FPS)[:, 0]
    quiet = quiet_k / FPS
    order = np.argsort(np.concatenate([seg_t, quiet]), kind="stable")
    seg_t, seg_c = np.concatenate([seg_t, quiet])[order], np.concatenate([seg_c, np.zeros(quiet.size)])[order]
    if seg_t.size == 0 or seg_t[0] > SEG_WAIT:
        seg_t, seg_c = np.concatenate([[0.0], seg_t]), np.concatenate([[0.0], seg_c])
    seg_t[0] = 0.0
    T = fr.onset.size
    ka = np.minimum(T - 1, np.round(seg_t * FPS).astype(np.int64))
    keep = np.concatenate([[True], ka[1:] > ka[:-1]])  # two onsets on one frame make one segment
    seg_t, seg_c, ka = seg_t[keep], seg_c[keep], ka[keep]
    # a segment of silence has confidence 0, also where an onset fell on the silence's first frame: a file opening on
    # hiss under the silence level is compared with silence there (`opens_from_silence`), and that segment read 1.0
    seg_c[np.isin(ka, quiet_k)] = 0.0
    kb = np.concatenate([ka[1:], [T]])
    end = np.concatenate([seg_t[1:], [duration]])
    n = np.maximum(kb - ka, 1)[:, None]
    chroma = np.add.reduceat(fr.chroma.astype(np.float64), ka, axis=0)
    top = chroma.max(1, keepdims=True)
    pitches = np.where(top > 0, chroma / np.where(top > 0, top, 1.0), 1.0)  # no pitched peaks at all: flat
    timbre = np.add.reduceat(fr.timbre.astype(np.float64), ka, axis=0) / n
    lv = fr.level_db.astype(np.float64)  # float32 values rounded to 3 places print as -24.861000061035156
    imax = np.array([a + int(np.argmax(lv[a:b])) for a, b in zip(ka, kb)])
    lv = np.minimum(lv, 0.0)  # dB re a full-scale sine: a square wave or clipped master reads up to +3, Spotify's stop at 0
    s, d = _span_cols(seg_t, end)
    cols = {
        "start": s.tolist(), "duration": d.tolist(),
        "confidence": np.round(seg_c, 3).tolist(), "loudness_start": np.round(lv[ka], 3).tolist(),
        "loudness_max": np.round(lv[imax], 3).tolist(),
        "loudness_max_time": np.minimum(np.round(np.maximum(imax / FPS - seg_t, 0.0), 5), d).tolist(),
        "loudness_end": np.round(lv[np.minimum(kb, T - 1)], 3).tolist(),
        "pitches": np.round(pitches, 3).tolist(), "timbre": np.round(timbre, 3).tolist(),
    }
    return [dict(zip(cols, v)) for v in zip(*cols.values())]


def analyse(path: str | Path, on_window: Callable[[float], None] | None = None, *,
            info: AudioInfo | None = None) -> Analysis:
    """Stream `path` once and build Spotify's AudioAnalysisObject; raises SongfeatError for unusable audio.

    `on_window(seconds read so far)` after each 30-s window, as `analyze.analyze`'s (a progress hook for long files: the
    windows are nearly all of the time, the whole-song stage after them ~4% of it). `info`: the file's
    `audio.header_info`, when the caller has probed it already (for a bar's length), so its header is not read again;
    without it, it is probed here.
    """
    t_start = time.perf_counter()
    info = header_info(path) if info is None else info
    evidence: list[D.WindowEvidence] = []
    stream = FrameStream()
    windows = iter_windows(path)
    if on_window is not None:
        windows = reporting_windows(windows, on_window)
    for w in windows:
        evidence.append(D.window_evidence(w, SAMPLE_RATE))
        stream.push(w)
    check_windows(path, evidence)
    desc = D.combine(evidence)
    fr = stream.finish()
    n = fr.n_samples
    duration = n / SAMPLE_RATE
    offsets = np.cumsum([0] + [e.n_samples for e in evidence[:-1]])
    ev = {"kw": np.concatenate([e.kw_energy for e in evidence]),
          "chroma": np.concatenate([e.chroma_track for e in evidence]),  # the chroma that says whether there is a key
          "pos": np.concatenate([o + D.HOP * np.arange(e.kw_energy.size) for o, e in zip(offsets, evidence)]).astype(np.float64)}
    del evidence

    d = measured_values(desc.to_dict())  # `songfeat analyze`'s own values: the track block reads nothing else
    bar = 60.0 / d["tempo"] * d["time_signature"] if d["tempo"] > 0 else 0.0
    fin, fout = fades(fr.level_db, duration, bar)
    track = {
        "num_samples": int(n), "duration": _r(duration), "sample_md5": "",
        "offset_seconds": 0, "window_seconds": 0, "analysis_sample_rate": SAMPLE_RATE, "analysis_channels": 1,
        "end_of_fade_in": _r(fin), "start_of_fade_out": _r(fout),
        **{k: d[k] for k in TRACK_MEASURED},
        "codestring": "", "code_version": 0.0, "echoprintstring": "", "echoprint_version": 0.0,
        "synchstring": "", "synch_version": 0.0, "rhythmstring": "", "rhythm_version": 0.0,
    }
    rise = onset_rise(fr.fine_db)
    silences = silent_runs(fr.level_db, SILENCE_SECONDS * FPS)  # once: beats, sections and segments each read them
    beats, bars, tatums, beat_times = rhythm(fr, rise, track, duration, silences)
    if not beats and track["tempo"] > 0:  # a guard, never seen on real audio: `descriptors.carries_beat` heard sound
        # where these frame levels (zero-padded, not reflected, at a window's edges) find silence throughout; a tempo over
        # no beats is not kept (the rare place where this track block and `analyze` can differ)
        track.update(tempo=0.0, tempo_confidence=0.0, time_signature=features.NO_METRE, time_signature_confidence=0.0)
    nov, block = novelty(fr)
    starts = [(0.0, 1.0)] + section_bounds(nov, block, duration, silence_bounds(silences, fr.onset.size))
    sections = []
    for i, (a, c) in enumerate(starts):
        b = starts[i + 1][0] if i + 1 < len(starts) else duration
        sections.append({"start": _r(a), "duration": _r(_r(b) - _r(a)), "confidence": _r(c, 3), **_section_values(a, b, fr, ev, beat_times, track)})
    segments = segment_records(fr, rise, duration, silences)

    meta = {"analyzer_version": ANALYZER_VERSION, "platform": platform.system(), "detailed_status": "OK",
            "status_code": 0, "timestamp": int(time.time()), "analysis_time": _r(time.perf_counter() - t_start),
            "input_process": f"{info.decoder} {info.channels}ch {info.sample_rate} Hz -> mono {SAMPLE_RATE} Hz"}
    result = {"meta": meta, "track": track, "bars": bars, "beats": beats, "tatums": tatums,
              "sections": sections, "segments": segments}
    return Analysis(result, fr)


def audio_analysis(path: str | Path, on_window: Callable[[float], None] | None = None, *,
                   info: AudioInfo | None = None) -> dict:
    """Spotify's AudioAnalysisObject for an audio file: meta, track, bars, beats, tatums, sections, segments
    (`on_window`: `analyse`'s progress hook; `info`: its header, when probed already, as `analyse` takes it)."""
    return analyse(path, on_window, info=info).result
