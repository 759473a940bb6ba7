"""What the heads read about one 30-s window: the tagger's outputs, spoken-word statistics, dynamics.

One window of mono 44.1-kHz audio (and its `descriptors.WindowEvidence`, already computed for the
measured features) becomes four named float32 vectors:
- `tagger`: musicnn's patch-averaged tags and embeddings (`songfeat.tagger.vector`, 3512 values), of the window
  brought to one level first (`TAGGER_LEVEL_DB`), so they say what is playing, not how loud the file is;
- `vad`: Silero VAD's speech statistics (`songfeat.vad.STATS`);
- `pitch`: how the voice's pitch moves, which tells speech from singing (`songfeat.pitch.STATS`);
- `spoken`: the VAD's speech with sung notes, beats and accompanied voice taken out (`SPOKEN`, `spoken`);
- `dynamics`: level and movement read off the evidence the descriptors computed anyway (no extra
  STFT): loudness spread, dynamic range, quiet share, onset strength and steadiness, tonal clarity,
  plus a few spectral-shape statistics from one cheap 16-kHz FFT pass;
- `mfcc`: the previous default's 40-value MFCC summary (`songfeat.mfcc`; the baseline it is scored as);
- `mfcc_band`: the same recipe on the mel bands below 8 kHz (`mfcc.summaries`), read by the heads' second
  member, a ridge on it and stage 1 (`models.heads.Heads`), not by the nets: the full-band summary moves
  with an encoder's low-pass, which no preview shows.
The 16-kHz signal is resampled once and shared by the tagger, the VAD and the pitch track.
"""
from __future__ import annotations

import numpy as np

from . import mfcc, pitch, vad
from .musicnn_frontend import GAIN_DB, LEVEL_DB, SAMPLE_RATE as RATE16, level_db, levelled, resample

TAGGER_PATCHES = 5  # 3-s patches per 30-s window the tagger reads (at most 10): half the cost of 10 on CPU
DYNAMICS = ("level_db_mean", "level_db_std", "dynamic_range_db", "quiet_share", "onset_mean", "onset_std",
            "onset_low_mean", "onset_regularity", "chroma_clarity", "centroid_hz", "flatness", "high_share",
            "zero_crossing")
# Spotify: speechiness "detects the presence of spoken words"; above 0.66 a track is probably entirely spoken,
# 0.33-0.66 may hold "both music and speech", below is music. The VAD hears sung voice too, so its speech is
# counted outside held notes (`spoken_*`), and "bare" speech also outside a steady beat (x (1 - onset_regularity)).
# "Unaccompanied" speech is spoken speech whose pauses fall to a quiet floor: a reading's gaps between words
# drop 20 dB or more below its voice, while a band fills a singer's gaps to within ~10 dB (UNACCOMPANIED_DB).
SPOKEN = ("spoken_fraction", "spoken_prob_mean", "bare_speech_fraction", "bare_speech_prob_mean",
          "unaccompanied_speech_fraction", "unaccompanied_speech_prob_mean")
UNACCOMPANIED_DB = (10.0, 20.0)  # voice above the window's floor (10th-percentile frame): no credit / full credit
BLOCKS = ("tagger", "vad", "pitch", "spoken", "dynamics", "mfcc", "mfcc_band")


resample16 = resample  # mono audio -> float32 at 16 kHz (soxr HQ), the rate both the tagger and the VAD read


def dynamics(ev, y16: np.ndarray) -> np.ndarray:
    """The `DYNAMICS` statistics of one window from its WindowEvidence and its 16-kHz samples."""
    out = dict.fromkeys(DYNAMICS, 0.0)
    kw = np.asarray(ev.kw_energy, dtype=np.float64)
    if kw.size:
        k = 17  # ~0.4 s of 23-ms hops: BS.1770's momentary block
        blocks = np.convolve(kw, np.ones(k) / k, mode="valid") if kw.size >= k else kw
        db = 10 * np.log10(np.maximum(blocks, 1e-12))
        top = db.max()
        db = np.maximum(db, top - 60.0)
        out["level_db_mean"] = float(db.mean())
        out["level_db_std"] = float(db.std())
        out["dynamic_range_db"] = float(np.percentile(db, 95) - np.percentile(db, 10))
        out["quiet_share"] = float(np.mean(db < top - 20.0))
    on = np.asarray(ev.onset, dtype=np.float64)
    if on.size > 2:
        out["onset_mean"] = float(on.mean())
        out["onset_std"] = float(on.std())
        out["onset_low_mean"] = float(np.mean(ev.onset_low))
        c = on - on.mean()
        ac = np.correlate(c, c, mode="full")[c.size - 1:]
        if ac[0] > 0:
            lo, hi = int(0.25 * ev.sr / 1024), min(ac.size, int(2.0 * ev.sr / 1024))  # beats of 30..240 BPM
            out["onset_regularity"] = float(ac[lo:hi].max() / ac[0]) if hi > lo else 0.0
    if ev.chroma_frames:
        ch = ev.chroma / max(ev.chroma_frames, 1)
        out["chroma_clarity"] = float(ch.max() / max(ch.mean(), 1e-9))
    if y16.size >= 1024:
        n = (y16.size // 1024) * 1024
        frames = y16[:n].reshape(-1, 1024) * np.hanning(1024).astype(np.float32)
        p = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
        e = p.sum(1)
        keep = e > e.max() * 1e-5
        if keep.any():
            p = p[keep]
            f = np.fft.rfftfreq(1024, 1 / RATE16)
            out["centroid_hz"] = float(np.mean((p * f).sum(1) / p.sum(1)))
            out["flatness"] = float(np.mean(np.exp(np.log(p).mean(1)) / p.mean(1)))
            out["high_share"] = float(np.mean(p[:, f >= 4000].sum(1) / p.sum(1)))
        s = np.signbit(y16[:n])
        out["zero_crossing"] = float(np.mean(s[1:] != s[:-1]))
    return np.array([out[k] for k in DYNAMICS], dtype=np.float32)


def floor_depth_db(probs: np.ndarray, levels_db: np.ndarray) -> float:
    """How far the speech frames' median level sits above the window's quiet floor (its 10th-percentile frame), in dB;
    0 with fewer than 3 speech frames."""
    n = min(probs.size, levels_db.size)
    on = probs[:n] > vad.THRESHOLD
    if on.sum() < 3:
        return 0.0
    return float(np.median(levels_db[:n][on]) - np.percentile(levels_db[:n], 10))


def spoken(probs: np.ndarray, outside: np.ndarray, beat: float, levels_db: np.ndarray) -> np.ndarray:
    """The `SPOKEN` statistics from the VAD's per-frame probabilities, each frame's share outside held notes
    (`pitch.outside_notes`), the window's beat strength (`onset_regularity`, 0-1) and each VAD frame's level in dB
    (`vad.frame_levels_db`)."""
    if probs.size == 0:
        return np.zeros(len(SPOKEN), dtype=np.float32)
    free = np.clip(1.0 - float(beat), 0.0, 1.0)
    lo, hi = UNACCOMPANIED_DB
    alone = float(np.clip((floor_depth_db(probs, levels_db) - lo) / (hi - lo), 0.0, 1.0))
    frac = float(np.mean((probs > vad.THRESHOLD) * outside))
    mean = float(np.mean(probs * outside))
    return np.array([frac, mean, frac * free, mean * free, frac * alone, mean * alone], dtype=np.float32)


def voice(y16: np.ndarray, probs: np.ndarray, beat: float) -> tuple[np.ndarray, np.ndarray]:
    """The `pitch` and `spoken` vectors of one 16-kHz window, given the VAD's per-frame probabilities and the
    window's beat strength (`onset_regularity`)."""
    f0, voiced = pitch.f0_track(y16, RATE16)
    steady = pitch.steady_frames(f0, voiced)
    stats = pitch.summarise(f0, voiced, RATE16, steady)
    return (np.array([stats[k] for k in pitch.STATS], dtype=np.float32),
            spoken(probs, pitch.outside_notes(probs, steady, vad.FRAME), beat, vad.frame_levels_db(y16)))


def block_width(block: str) -> int:
    """How many values a named evidence block holds per window."""
    if block == "tagger":
        from .tagger import VECTOR_SIZE

        return VECTOR_SIZE
    return {"vad": len(vad.STATS), "pitch": len(pitch.STATS), "spoken": len(SPOKEN), "dynamics": len(DYNAMICS),
            "mfcc": mfcc.WIDTH, "mfcc_band": mfcc.WIDTH}[block]


TAGGER_LEVEL_DB, TAGGER_GAIN_DB = LEVEL_DB, GAIN_DB  # the level every window is brought to before the tagger
tagger_level_db = level_db


def tagger_block(y16: np.ndarray) -> np.ndarray:
    """The `tagger` vector of one window from its 16-kHz samples (musicnn over `TAGGER_PATCHES` patches), the window
    brought to `TAGGER_LEVEL_DB` first (`musicnn_frontend.levelled`)."""
    from . import tagger

    return tagger.vector(tagger.describe(levelled(y16), sr=RATE16, max_patches=TAGGER_PATCHES)).astype(np.float32)


def window_inputs(y: np.ndarray, sr: int, ev, with_tagger: bool = True, y16: np.ndarray | None = None,
                  shared: mfcc.SharedFrames | None = None) -> dict[str, np.ndarray]:
    """The named vectors for one mono window (see the module docstring); `y16`: its 16-kHz samples, if at hand;
    `shared`: the STFT frames the window's `descriptors.window_evidence` passed on (`mfcc.SharedFrames`)."""
    y16 = resample16(y, sr) if y16 is None else y16
    probs = vad.speech_probs(y16, RATE16)  # once: the VAD statistics and the spoken block both read it
    speech = vad.summarise(probs)
    dyn = dynamics(ev, y16)
    pitch_v, spoken_v = voice(y16, probs, dyn[DYNAMICS.index("onset_regularity")])
    full, band = mfcc.summaries(y, sr, shared, band=True)
    out = {"vad": np.array([speech[k] for k in vad.STATS], dtype=np.float32), "pitch": pitch_v, "spoken": spoken_v,
           "dynamics": dyn, "mfcc": full, "mfcc_band": band}
    if with_tagger:
        out["tagger"] = tagger_block(y16)
    return out


__all__ = ["window_inputs", "tagger_block", "tagger_level_db", "TAGGER_LEVEL_DB", "dynamics", "voice", "spoken", "floor_depth_db", "block_width", "resample16", "DYNAMICS", "SPOKEN",
           "BLOCKS"]
