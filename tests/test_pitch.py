"""Voice pitch statistics: a sung melody holds its notes, read speech glides, noise and silence are unvoiced."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songfeat import pitch, synth

FIXTURE = Path(__file__).parent / "fixtures" / "espeak_reading_16k.flac"  # espeak-ng reading (see test_vad.py)


def sung_melody(seconds: float = 12.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voice-like melody: harmonic notes of 0.45 s on a major scale, with a 5.5-Hz vibrato of 0.3 semitone."""
    rng = np.random.default_rng(seed)
    n = int(0.45 * sr)
    t = np.arange(n) / sr
    out = []
    for _ in range(int(seconds / 0.45)):
        f = 440.0 * 2 ** ((57 + rng.choice([0, 2, 4, 5, 7, 9, 11, 12]) - 69) / 12)
        phase = 2 * np.pi * np.cumsum(f * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)) / sr
        out.append(sum(np.sin(h * phase) / h for h in range(1, 7)) * np.hanning(n) ** 0.3)
    return (0.15 * np.concatenate(out)).astype(np.float32)


def test_pure_tone_pitch_is_found():
    f0, voiced = pitch.f0_track(synth.tone(220.0, 2.0, sr=16000))
    assert voiced.mean() > 0.95
    assert abs(np.median(f0[voiced]) - 220.0) < 1.0  # parabolic refinement: well under a lag step (~2 Hz here)


def test_singing_holds_notes_and_speech_glides():
    y, sr = sf.read(FIXTURE, dtype="float32")
    speech = pitch.describe(y, sr)
    sung = pitch.describe(sung_melody(), 16000)
    assert sung["steady_share"] > 0.8 and speech["steady_share"] < 0.5
    assert sung["voiced_run_p90_s"] > 0.4 and speech["voiced_run_p90_s"] < 0.3
    assert sung["voiced_share"] > speech["voiced_share"]


@pytest.mark.parametrize("signal", [np.zeros(16000 * 3, np.float32), synth.noise(3.0, sr=16000), np.zeros(300, np.float32)])
def test_silence_noise_and_short_input_are_unvoiced(signal):
    s = pitch.describe(signal, 16000)
    assert set(s) == set(pitch.STATS)
    assert s["voiced_share"] < 0.02 and s["steady_share"] == 0.0 and all(np.isfinite(list(s.values())))


def test_blocks_do_not_change_the_answer(monkeypatch):
    y = sung_melody(seconds=8.0)
    a = pitch.f0_track(y)
    monkeypatch.setattr(pitch, "BLOCK", 37)  # blocks end mid-note
    b = pitch.f0_track(y)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0], rtol=1e-12)


def test_spoken_speech_discounts_held_notes_and_beats():
    from songfeat import evidence, vad

    y, sr = sf.read(FIXTURE, dtype="float32")
    probs = vad.speech_probs(y, sr)
    f0, voiced = pitch.f0_track(y, sr)
    outside = pitch.outside_notes(probs, pitch.steady_frames(f0, voiced), vad.FRAME)
    speech = dict(zip(evidence.SPOKEN, evidence.spoken(probs, outside, 0.1, vad.frame_levels_db(y))))
    assert speech["spoken_fraction"] > 0.5 * vad.summarise(probs)["speech_fraction"] > 0.3
    assert speech["bare_speech_fraction"] == pytest.approx(0.9 * speech["spoken_fraction"])
    # a sung melody the VAD takes for speech (as Silero does with an unaccompanied singer) is mostly discounted
    sung = sung_melody()
    heard = np.full(sung.size // vad.FRAME, 0.9, dtype=np.float32)
    f0, voiced = pitch.f0_track(sung)
    s = dict(zip(evidence.SPOKEN, evidence.spoken(heard, pitch.outside_notes(heard, pitch.steady_frames(f0, voiced), vad.FRAME), 0.0,
                                                   vad.frame_levels_db(sung))))
    assert s["spoken_prob_mean"] < 0.2 and s["spoken_fraction"] < 0.2


def test_outside_notes_without_steady_frames_is_whole():
    probs = np.array([0.9, 0.2, 0.7, 0.1])
    assert np.array_equal(pitch.outside_notes(probs, np.zeros(200, dtype=bool), 512), np.ones(4))
    assert np.array_equal(pitch.outside_notes(probs, np.ones(200, dtype=bool), 512), np.zeros(4))
    assert pitch.outside_notes(np.zeros(0), np.ones(10, dtype=bool), 512).size == 0


def test_unaccompanied_speech_needs_quiet_pauses():
    """A reading's pauses fall to silence (full credit); under a chord bed a few dB below it they do not (none)."""
    from songfeat import evidence, vad

    y, sr = sf.read(FIXTURE, dtype="float32")
    probs = vad.speech_probs(y, sr)
    outside = np.ones(probs.size)
    alone = dict(zip(evidence.SPOKEN, evidence.spoken(probs, outside, 0.0, vad.frame_levels_db(y))))
    assert evidence.floor_depth_db(probs, vad.frame_levels_db(y)) > evidence.UNACCOMPANIED_DB[1]
    assert alone["spoken_fraction"] > 0.3
    assert alone["unaccompanied_speech_fraction"] == pytest.approx(alone["spoken_fraction"])
    bed = synth.chord_progression(0, 1, seconds=y.size / sr + 1, sr=sr)[: y.size]
    bed *= 0.5 * np.sqrt(np.mean(y ** 2) / np.mean(bed ** 2))  # 6 dB under the voice's mean power
    mixed = y + bed
    assert evidence.floor_depth_db(probs, vad.frame_levels_db(mixed)) < evidence.UNACCOMPANIED_DB[0]
    band = dict(zip(evidence.SPOKEN, evidence.spoken(probs, outside, 0.0, vad.frame_levels_db(mixed))))
    assert band["spoken_fraction"] == alone["spoken_fraction"] and band["unaccompanied_speech_fraction"] == 0.0
    assert evidence.floor_depth_db(np.zeros(probs.size), vad.frame_levels_db(y)) == 0.0  # no speech: no depth
