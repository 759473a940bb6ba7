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
