"""The numpy MFCC summary the ridge member reads: equal to the torch front-end it was written from."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat import mfcc


def _torch_summary(y: np.ndarray) -> np.ndarray:
    pytest.importorskip("torch")
    from songfeat.frontend import MFCC_DENSE, compute, fit_window

    c = compute(MFCC_DENSE, fit_window(y, MFCC_DENSE))[0]
    return np.concatenate([c.mean(-1).numpy(), c.std(-1).numpy()])


@pytest.mark.parametrize("seconds", [30.0, 7.3, 41.0])  # exact, tiled, cut
def test_summary_equals_the_torch_front_end(seconds, example_clip):
    from songfeat.audio import load_audio

    y = load_audio(example_clip)
    y = np.tile(y, 2)[: int(seconds * 44100)]
    a, b = mfcc.summary(y), _torch_summary(y)
    assert a.shape == (mfcc.WIDTH,) and a.dtype == np.float32
    # float32 through a 4096-point FFT and 256 mel bands: agreement to ~1e-6 of the values' scale
    assert np.abs(a - b).max() < 1e-6 * np.abs(b).max() * 10


def test_summary_separates_timbres_and_refuses_bad_input():
    t = np.arange(30 * 44100) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    assert np.abs(mfcc.summary(tone)[:20] - mfcc.summary(noise)[:20]).max() > 10  # dB-scale coefficients differ
    with pytest.raises(ValueError, match="44100"):
        mfcc.summary(tone, 22050)
    with pytest.raises(ValueError, match="at least one sample"):
        mfcc.summary(np.zeros(0, np.float32))


@pytest.mark.parametrize("seconds", [30.0, 29.74, 7.3, 0.05])  # a full window, a preview's, tiled, shorter than a frame
def test_frames_shared_with_the_descriptors_give_the_same_summary(seconds, example_clip):
    # The descriptors' STFT holds every second MFCC frame; the summary takes those instead of transforming
    # them again, and must come out bit for bit as if it had not.
    from songfeat import descriptors
    from songfeat.audio import load_audio

    y = np.tile(load_audio(example_clip), 2)[: int(seconds * 44100)]
    shared = mfcc.SharedFrames(y.size)
    descriptors.window_evidence(y, 44100, on_power=shared)
    assert shared.frames == (min(y.size // mfcc.HOP, mfcc.FRAMES) if y.size > mfcc.N_FFT else 0)
    assert np.array_equal(mfcc.summary(y, shared=shared), mfcc.summary(y))
    assert np.array_equal(mfcc.summary(y, shared=mfcc.SharedFrames(y.size)), mfcc.summary(y))  # blocks never came: computed


def test_band_limited_summary_ignores_an_encoders_low_pass(example_clip):
    """The ridge member's summary reads the mel bands below 8 kHz: a copy of the example clip band-limited to 11 kHz
    (what a 22.05-kHz file or a low-bitrate mp3 keeps) reads as the original, while the seed's full-band summary,
    whose top bands then sit at the 80-dB floor, moves by several of its own coefficients' spreads."""
    import soxr

    from songfeat.audio import load_audio

    y = load_audio(example_clip)
    low = soxr.resample(soxr.resample(y, 44100, 22050), 22050, 44100)[: y.size].astype(np.float32)
    (full, band), (full_low, band_low) = mfcc.summaries(y, band=True), mfcc.summaries(low, band=True)
    assert band.shape == full.shape == (mfcc.WIDTH,) and band.dtype == np.float32
    assert np.array_equal(full, mfcc.summary(y))  # the seed's recipe is unchanged by the band-limited one beside it
    assert 0 < mfcc.band_mels() < mfcc.N_MELS
    spread = np.abs(full[mfcc.N_MFCC:]).mean()  # a typical coefficient's spread over the frames, in dB units
    assert np.abs(full_low - full)[: mfcc.N_MFCC].max() > 0.5 * spread  # full band: the means move
    assert np.abs(band_low - band).max() < 0.01 * spread  # band-limited: the same to a hundredth of that
