"""Gomez's HPCP (`songfeat.hpcp`), the second pitch class profile the key decision averages with songfeat's own."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat import descriptors as D
from songfeat import hpcp

SR = 44100


def _tones(freqs: list[float], amps: list[float], seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps)).astype(np.float32)


def test_a_note_lands_on_its_pitch_class() -> None:
    # a note in each band (below and from 500 Hz): with one band empty, the band preset would scale the window's
    # sidelobe peaks there (~1e-4) up to 1, as Essentia's does; music always has both
    for f, pitch_bin in ((220.0, 27), (261.63, 0), (329.63, 12)):  # A3, C4, E4 and their octaves (C first, 1/3 semitone)
        fr = hpcp.frames(_tones([f, 2 * f, 4 * f], [0.5, 0.3, 0.1]), SR)
        assert fr.shape[1] == 36 and fr.shape[0] > 10
        assert set(np.argmax(fr, axis=1)) == {pitch_bin}
        assert np.all(fr[:, pitch_bin] == pytest.approx(2.0, abs=0.01))  # the maximum of each band


def test_a_detuned_peak_spreads_by_a_cosine() -> None:
    # 0.2 semitone above A4: the bins centred on A (d = 0.2), A + 1/3 (d = -0.133) and A + 2/3 (d = -0.467) get
    # cos(pi d) of its magnitude squared; bins half a semitone or more away get nothing
    fr = hpcp._from_peaks(np.zeros(1, np.int64), np.array([440 * 2 ** (0.2 / 12)]), np.array([0.5]), 1)[0]
    want = np.cos(np.pi * np.array([0.2, 0.2 - 1 / 3, 0.2 - 2 / 3]))
    np.testing.assert_allclose(fr[27:30], want / want.max(), rtol=1e-9)
    assert np.count_nonzero(fr) == 3
    # and the magnitude counts squared: a second, half as loud peak on C4 gets a quarter
    two = hpcp._from_peaks(np.zeros(2, np.int64), np.array([440.0, 261.63]), np.array([0.5, 0.25]), 1)[0]
    assert two[0] / two[27] == pytest.approx(0.25, rel=1e-3)


def test_each_band_is_scaled_to_its_own_maximum() -> None:
    # a loud 300 Hz tone and one 20 dB quieter at 1000 Hz: the band preset gives each its own maximum of 1
    fr = hpcp.frames(_tones([300.0, 1000.0], [0.5, 0.05]), SR)[5]
    low = np.remainder(np.round(36 * np.log2(300 / 440) + 27).astype(int), 36)
    high = np.remainder(np.round(36 * np.log2(1000 / 440) + 27).astype(int), 36)
    assert fr[low] == pytest.approx(1.0, abs=0.05) and fr[high] == pytest.approx(1.0, abs=0.05)


def test_only_the_strongest_peaks_count() -> None:
    m = np.zeros((1, 400), dtype=np.float32)
    bins = np.arange(10, 310, 3)  # 100 separate peaks between ~108 and ~3340 Hz
    m[0, bins] = np.linspace(0.01, 1.0, bins.size)
    t, f, a = hpcp._peaks(m, SR)
    assert t.size == hpcp.MAX_PEAKS
    np.testing.assert_allclose(np.sort(a), np.sort(m[0, bins])[-hpcp.MAX_PEAKS:])
    m[0, bins] = 1e-5  # below the threshold: no peak at all
    assert hpcp._peaks(m, SR)[0].size == 0


def test_silence_and_empty_audio_give_no_frames() -> None:
    assert hpcp.frames(np.zeros(0, np.float32), SR).shape == (0, 36)
    assert hpcp.frames(np.zeros(SR, np.float32), SR).shape == (0, 36)
    y = np.concatenate([np.zeros(SR, np.float32), _tones([440.0], [0.5], 1.0)])
    assert hpcp.frames(y, SR).shape[0] == pytest.approx(SR / hpcp.N_FFT, abs=1.5)  # the silent second is left out


def test_key_profile_averages_the_two_profiles() -> None:
    rng = np.random.default_rng(0)
    c, g = rng.random(36) * 50, rng.random(36) * 3
    np.testing.assert_array_equal(D.key_profile(c, None), c)
    np.testing.assert_array_equal(D.key_profile(c, np.zeros(36)), c)  # no Gomez frames (silence): songfeat's alone
    np.testing.assert_allclose(D.key_profile(c, g), 0.5 * c / c.sum() + 0.5 * g / g.sum())
    ev = D.window_evidence(_tones([261.63, 329.63, 392.0], [0.3, 0.3, 0.3], 4.0))
    assert ev.hpcp_gomez.shape == (36,) and np.argmax(ev.hpcp_gomez) in (0, 12, 21)  # C, E or G


def test_matches_essentias_hpcp() -> None:
    # Essentia is a benchmark-only peer (AGPL; the `bench` extra); its default-style HPCP on the same frames
    es = pytest.importorskip("essentia.standard")
    y = _tones([196.0, 246.94, 293.66, 587.33, 1174.66], [0.4, 0.2, 0.3, 0.1, 0.05], 1.0)
    y = y + np.random.default_rng(1).normal(0, 1e-3, y.size).astype(np.float32)
    ours = hpcp.frames(y, SR)
    window = es.Windowing(type="blackmanharris62", size=hpcp.N_FFT)
    spectrum = es.Spectrum(size=hpcp.N_FFT)
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=hpcp.PEAK_THRESHOLD, minFrequency=hpcp.FMIN,
                             maxFrequency=hpcp.FMAX, maxPeaks=hpcp.MAX_PEAKS, sampleRate=SR)
    ref = es.HPCP(size=36, referenceFrequency=440, harmonics=0, bandPreset=True, bandSplitFrequency=hpcp.BAND_SPLIT_HZ,
                  minFrequency=hpcp.FMIN, maxFrequency=hpcp.FMAX, weightType="cosine", nonLinear=False, windowSize=1.0,
                  sampleRate=SR, normalized="unitMax")
    for i in range(3, 8):
        f, m = peaks(spectrum(window(y[i * hpcp.N_FFT: (i + 1) * hpcp.N_FFT])))
        theirs = np.roll(np.asarray(ref(f, m)), 27)  # A first -> C first
        assert np.corrcoef(ours[i], theirs)[0, 1] > 1 - 1e-6
