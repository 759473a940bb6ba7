"""Front-end: the seed MFCC equals librosa's on known signals; shapes, batching and filters are right."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from songfeat import frontend as fe

SR = 44100
# Tolerance against librosa: float32 STFT in torch vs float32 STFT in numpy differ by rounding only;
# relative to the largest coefficient (hundreds) the gap stays below 1e-5, so we allow 1e-4.
REL_TOL = 1e-4


def signals() -> dict[str, np.ndarray]:
    t = np.arange(30 * SR) / SR
    rng = np.random.default_rng(1)
    return {
        "sine_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (100 * t + 100 * t**2)),
        "noise": 0.1 * rng.standard_normal(t.size),
        "clicks": (np.arange(t.size) % (SR // 2) < 200) * 0.8,
    }


@pytest.mark.parametrize("name", list(signals()))
def test_seed_mfcc_matches_librosa(name):
    librosa = pytest.importorskip("librosa")
    y = signals()[name].astype(np.float32)
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_fft=4096, hop_length=8192, n_mels=256, htk=True,
                               mel_norm=None, norm="ortho", center=True, pad_mode="reflect")
    ours = fe.compute(fe.SEED_MFCC, y)[0].numpy()
    assert ours.shape == (20, 160)
    err = np.abs(ours - ref[:, :160]).max() / np.abs(ref).max()
    assert err < REL_TOL, f"{name}: relative error {err:.2e}"


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for n_fft, n_mels in ((4096, 256), (2048, 96)):
        ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, htk=True, norm=None)
        np.testing.assert_allclose(fe.mel_filterbank(SR, n_fft, n_mels).numpy(), ref, atol=1e-6)


def test_dct_is_orthonormal_dct_ii():
    scipy_fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(0).standard_normal(256)
    np.testing.assert_allclose(fe.dct_matrix(20, 256).numpy() @ x, scipy_fft.dct(x, norm="ortho")[:20], atol=1e-4)


def test_seed_shape_is_20_by_160_and_batches_agree():
    rng = np.random.default_rng(2)
    batch = rng.standard_normal((3, 30 * SR)).astype(np.float32) * 0.1
    out = fe.compute(fe.SEED_MFCC, batch)
    assert out.shape == (3, 20, 160)
    torch.testing.assert_close(out[1], fe.compute(fe.SEED_MFCC, batch[1])[0], rtol=1e-5, atol=1e-4)


def test_logmel_puts_a_tone_in_the_right_band():
    y = signals()["sine_440"].astype(np.float32)
    out = fe.compute(fe.LOGMEL, y)[0]
    assert out.shape == fe.LOGMEL.shape
    band = int(out.mean(dim=1).argmax())
    top = 2595.0 * np.log10(1.0 + (SR / 2) / 700.0)  # HTK mel of Nyquist
    centres = (700.0 * (10.0 ** (np.linspace(0, top, fe.LOGMEL.n_mels + 2) / 2595.0) - 1.0))[1:-1]
    assert abs(centres[band] - 440) < 60


def test_seed_hop_reads_half_the_audio_and_dense_reads_all():
    assert fe.SEED_MFCC.hop_length > fe.SEED_MFCC.n_fft  # the seed's defect, kept for faithfulness
    assert fe.MFCC_DENSE.hop_length <= fe.MFCC_DENSE.n_fft


def test_fit_window_cuts_and_tiles():
    spec = fe.SEED_MFCC
    n = int(spec.window_seconds * spec.sample_rate)
    assert fe.fit_window(np.ones(n + 5, np.float32), spec).size == n
    short = np.arange(1000, dtype=np.float32)
    out = fe.fit_window(short, spec)
    assert out.size == n and out[1000] == 0 and out[1999] == 999


def test_spec_round_trip_and_errors():
    assert fe.FrontendSpec.from_dict(fe.LOGMEL.to_dict()) == fe.LOGMEL
    with pytest.raises(ValueError, match="kind"):
        fe.FrontendSpec(kind="cqt")
    with pytest.raises(ValueError, match="unknown front-end"):
        fe.get_spec("nope")


def test_tiny_input_does_not_crash():
    assert fe.compute(fe.SEED_MFCC, np.zeros(100, np.float32)).shape == (1, 20, 160)
