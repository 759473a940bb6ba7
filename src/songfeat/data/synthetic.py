"""Synthetic labelled audio whose labels are known functions of the sound: the proof that models learn.

Each clip mixes a tonal chord with noise, flips that bed between a dark and a bright colour at a
syllable rate (formant-like movement, as speech has) or holds it steady, adds a click track and scales
the whole by a gain. Four labels in [0, 1], drawn independently per clip, set those knobs:

| label (catalogue name) | what sets it in the audio |
|---|---|
| energy           | level: gain from -36 to -6 dB |
| danceability     | pulse rate: bright clicks from 90 to 240 per minute |
| acousticness     | tonal vs noisy: share of the chord in the chord + noise bed |
| speechiness      | speech-like vs steady: depth of a 2–4 Hz dark/bright colour alternation |

Catalogue names are borrowed so bundles validate; the meaning here is only the table above.
Generated with numpy from a seed, so every run yields the same set.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from ..frontend import FrontendSpec, compute

SYNTH_TARGETS: tuple[str, ...] = ("energy", "danceability", "acousticness", "speechiness")
#: A small front-end for CI-sized runs: the seed's MFCC pipeline at 8 kHz, hop <= n_fft, 16 x 32 for 4 s.
SYNTH_SPEC = FrontendSpec(kind="mfcc", sample_rate=8000, n_fft=1024, hop_length=1000, n_mels=32, n_mfcc=16,
                          frames=32, top_db=80.0, window_seconds=4.0)
GAIN_DB = (-36.0, -6.0)
BPM = (90.0, 240.0)  # 1.5 to 4 pulses per second: 6 to 16 in a 4-s clip
SYLLABLE_HZ = (2.0, 4.0)  # slow syllables: the 8-frames-per-second CI front-end must see them
CLICK_GAIN = 60.0  # click peak relative to the bed's RMS: about +18 dB in the frame it falls in
CLICK_MS = 20.0


_TABLE = sum(np.sin(2 * math.pi * h * np.arange(4096) / 4096) / h for h in range(1, 5))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def synth_clip(labels: np.ndarray, sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clip whose (energy, danceability, acousticness, speechiness) knobs are `labels` (each in [0, 1])."""
    level, pulse, tonal, speech = (float(v) for v in labels)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    root = 110.0 * 2 ** rng.uniform(0, 2)
    chord = np.zeros(n)
    for ratio in (1.0, 2 ** (4 / 12) if rng.random() < 0.5 else 2 ** (3 / 12), 2 ** (7 / 12)):
        phase = (root * ratio * t + rng.uniform(0, 1)) % 1.0  # a 4-harmonic tone via its wavetable
        chord += _TABLE[(phase * _TABLE.size).astype(np.int64) % _TABLE.size]
    noise = rng.standard_normal(n)
    bed = tonal * _unit_rms(chord) + (1.0 - tonal) * _unit_rms(noise)
    dark = _unit_rms(lfilter([0.3], [1.0, -0.7], bed))  # one-pole low-pass: a dark vowel-like colour
    bright = _unit_rms(np.diff(bed, prepend=0.0))  # first difference: a bright colour
    f = rng.uniform(*SYLLABLE_HZ)
    syll = 0.5 * (1 + np.tanh(4 * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))))  # syllables
    m = 0.5 + speech * (syll - 0.5)  # speech-like: the colour flips at syllable rate; steady: a fixed 50/50 mix
    bed = _unit_rms((1.0 - m) * dark + m * bright)
    bpm = BPM[0] + pulse * (BPM[1] - BPM[0])
    period = int(round(sr * 60.0 / bpm))
    clen = int(sr * CLICK_MS / 1000)
    click = np.diff(rng.standard_normal(clen + 1)) / math.sqrt(2)  # differenced noise: a bright click
    click *= np.exp(-np.arange(clen) / (clen / 5)) * CLICK_GAIN
    clicks = np.zeros(n)
    for start in range(int(rng.integers(0, period)), n - clen, period):
        clicks[start:start + clen] += click
    gain = 10 ** ((GAIN_DB[0] + level * (GAIN_DB[1] - GAIN_DB[0])) / 20)
    return (gain * (bed + clicks)).astype(np.float32)


def synth_labels(n: int, seed: int = 0) -> np.ndarray:
    """n x 4 independent uniform labels in [0, 1]."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, len(SYNTH_TARGETS))).astype(np.float32)


def synthetic_dataset(n: int = 800, seed: int = 0, spec: FrontendSpec = SYNTH_SPEC, batch: int = 64):
    """A `songfeat.data.dataset.Dataset` of n generated clips through the real front-end (`frontend.compute`)."""
    from .dataset import Dataset

    labels = synth_labels(n, seed)
    rng = np.random.default_rng(seed + 1)
    fe = np.empty((n, *spec.shape), dtype=np.float32)
    for s in range(0, n, batch):
        audio = np.stack([synth_clip(labels[i], spec.sample_rate, spec.window_seconds, rng)
                          for i in range(s, min(s + batch, n))])
        fe[s:s + len(audio)] = compute(spec, audio).numpy()
    return Dataset(targets=labels, target_names=SYNTH_TARGETS, ids=[f"synth-{seed}-{i:06d}" for i in range(n)],
                   frontend=fe, spec=spec, provenance={"source": "songfeat.data.synthetic", "seed": seed, "n": n})


def synthetic_tensors(n: int = 20000, shape: tuple[int, int] = (20, 160), seed: int = 0, n_targets: int = 5):
    """Cheap front-end-shaped tensors [n, C, T] with targets [n, K] that are functions of them (for throughput benchmarks)."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, size=(n, n_targets)).astype(np.float32)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    for k in range(min(n_targets, shape[0])):
        x[:, k, :] += 2.0 * y[:, k, None]
    return x, y
