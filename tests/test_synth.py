"""The signal generators: deterministic, the stated level, length and pitch content."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat import synth

SR = 44100


def test_lengths_and_dtype() -> None:
    for y in (synth.tone(440, 1.5), synth.chord(0, False, 1.5), synth.click_track(120, 1.5), synth.noise(1.5),
              synth.speech_like(1.5), synth.waltz(150, 1.5), synth.compound_pattern(70, 1.5), synth.chord_progression(2, 0, 1.5), synth.scale(4, 1, 1.5)):
        assert y.dtype == np.float32 and y.size == int(1.5 * SR)
        assert np.all(np.isfinite(y))


def test_deterministic_with_seed() -> None:
    assert np.array_equal(synth.noise(1, seed=3), synth.noise(1, seed=3))
    assert not np.array_equal(synth.noise(1, seed=3), synth.noise(1, seed=4))
    assert np.array_equal(synth.speech_like(2, seed=1), synth.speech_like(2, seed=1))


def test_tone_peak_is_dbfs() -> None:
    y = synth.tone(1000, 1.0, dbfs=-12.0)
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-12.0, abs=0.01)


def test_noise_rms_matches_a_sine_at_dbfs() -> None:
    y = synth.noise(2.0, dbfs=-20.0)
    sine = synth.tone(1000, 2.0, dbfs=-20.0)
    assert np.sqrt(np.mean(y.astype(float) ** 2)) == pytest.approx(np.sqrt(np.mean(sine.astype(float) ** 2)), rel=1e-3)


def test_chord_contains_its_notes() -> None:
    y = synth.chord(9, True, 2.0)  # A minor: A, C, E
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(y.size, 1 / SR)
    peaks = freqs[np.argsort(spec)[-4:]]
    pcs = {int(round(12 * np.log2(f / 440.0))) % 12 for f in peaks}  # relative to A
    assert pcs <= {0, 3, 7}  # A, C, E


def test_click_track_click_count() -> None:
    y = synth.click_track(120, 10.0)
    env = np.abs(y) > 0.1 * np.abs(y).max()
    onsets = np.flatnonzero(env[1:] & ~env[:-1])
    gaps = np.diff(onsets)
    assert np.sum(gaps > 0.25 * SR) + 1 == 20  # 2 clicks/s for 10 s


def test_drum_pattern_steps() -> None:
    y = synth.drum_pattern(120, "K...K...K...K...", 4.0)  # a kick every beat: 8 in 4 s at 120 BPM
    env = np.abs(y) > 0.2 * np.abs(y).max()
    onsets = np.flatnonzero(env[1:] & ~env[:-1])
    assert np.sum(np.diff(onsets) > 0.3 * SR) + 1 == 8


def test_compound_pattern_has_a_kick_every_six_eighths() -> None:
    y = synth.compound_pattern(60.0, 8.0)  # dotted quarter at 60 BPM: a 6/8 bar every 2 s, 4 bars in 8 s
    low = np.abs(np.convolve(y, np.ones(400) / 400, mode="same"))  # crude low-pass: the kick and the low chord
    starts = [i * 2 * SR for i in range(4)]
    bar_energy = [low[s: s + SR // 10].mean() for s in starts]
    mid_energy = [low[s + SR // 2: s + SR // 2 + SR // 10].mean() for s in starts]  # the third eighth (a hi-hat)
    assert min(bar_energy) > 2 * max(mid_energy)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        synth.click_track(0, 1.0)
    with pytest.raises(ValueError):
        synth.noise(1.0, colour="blue")
    with pytest.raises(ValueError):
        synth.drum_pattern(120, "KX..")
    with pytest.raises(ValueError):
        synth.compound_pattern(-1.0, 1.0)


def test_placed_puts_each_sound_at_its_time_and_cuts_at_the_end() -> None:
    y = synth.placed(2.0, [(0.5, np.ones(10)), (1.9999, np.ones(100))])
    assert y.dtype == np.float32 and y.size == 2 * SR
    assert np.flatnonzero(y).tolist() == list(range(SR // 2, SR // 2 + 10)) + list(range(2 * SR - 4, 2 * SR))
