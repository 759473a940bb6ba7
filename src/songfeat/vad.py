"""Spoken-word evidence: Silero VAD's per-frame speech probability, summarised per window.

Spotify's speechiness is about spoken words; a voice-activity detector trained on speech fires on
readings and rap but rarely on sung melody or instruments, which no timbre statistic separates as
well. The shipped ONNX file (MIT, see weights/silero_vad/) runs at 16 kHz on 512-sample frames
(32 ms) with its LSTM state carried from frame to frame; onnxruntime runs blocks of frames per call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import runtime

VAD_RATE = 16000
FRAME = 512  # samples per frame at 16 kHz: the model's documented chunk size
CONTEXT = 64  # samples of the previous frame the model sees before each frame
BLOCK_FRAMES = 512  # frames per ONNX call (about 16 s)
THRESHOLD = 0.5  # Silero's default speech threshold
# the wheel's sequence model with its STFT convolution written as a matrix product, same outputs (PROVENANCE.md)
MODEL_FILE = Path(__file__).parent / "weights" / "silero_vad" / "silero_vad_16k_frames.onnx"
STATS = ("speech_fraction", "speech_prob_mean", "speech_prob_p90", "longest_speech_s", "speech_switches_per_s")


def _session():
    """The ONNX session (runtime's per-process cache), one thread: a sequential LSTM over 32-ms frames, which
    more threads do not help; songfeat parallelises over files."""
    return runtime.session(MODEL_FILE, n_threads=1)


def _blocks(y16: np.ndarray):
    """[frames, CONTEXT + FRAME] blocks: each frame with the last CONTEXT samples of the one before."""
    n = (y16.size + FRAME - 1) // FRAME
    frames = np.zeros((n, FRAME), dtype=np.float32)
    frames.reshape(-1)[: y16.size] = y16
    ctx = np.zeros((n, CONTEXT), dtype=np.float32)
    if n > 1:
        ctx[1:] = frames[:-1, -CONTEXT:]
    full = np.concatenate([ctx, frames], axis=1)
    for i in range(0, n, BLOCK_FRAMES):
        yield full[i:i + BLOCK_FRAMES]


def speech_probs(y: np.ndarray, sr: int, session=None) -> np.ndarray:
    """Per-frame (32 ms) speech probability of a mono signal at any rate (resampled to 16 kHz with soxr).

    `session`: an onnxruntime session of another Silero file to run instead of the shipped one (the derivation
    script compares the wheel's file with the shipped one this way)."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if sr != VAD_RATE:
        import soxr

        y = soxr.resample(y, sr, VAD_RATE, quality="HQ").astype(np.float32, copy=False)
    if y.size == 0:
        return np.zeros(0, dtype=np.float32)
    sess = _session() if session is None else session
    h = np.zeros((1, 1, 128), dtype=np.float32)
    c = np.zeros((1, 1, 128), dtype=np.float32)
    out = []
    for block in _blocks(y):
        p, h, c = sess.run(["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c})
        out.append(np.asarray(p, dtype=np.float32).reshape(-1))
    return np.concatenate(out)


def frame_levels_db(y16: np.ndarray) -> np.ndarray:
    """Per frame as `speech_probs` cuts a 16-kHz signal: its mean power in dB (the last, short frame over its own samples)."""
    y = np.asarray(y16, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return np.zeros(0)
    n_full = y.size // FRAME
    power = (y[: n_full * FRAME].reshape(n_full, FRAME) ** 2).mean(1)
    tail = y[n_full * FRAME:]
    if tail.size:
        power = np.append(power, np.mean(tail ** 2))
    return 10 * np.log10(power + 1e-12)


def summarise(probs: np.ndarray) -> dict[str, float]:
    """Window statistics: speech-frame fraction (p > 0.5), mean and 90th-percentile probability,
    longest speech run in seconds, and speech on/off switches per second (speech is choppy, song is not)."""
    if probs.size == 0:
        return dict.fromkeys(STATS, 0.0)
    on = probs > THRESHOLD
    runs, cur = 0, 0
    for v in on:  # at most ~1000 frames per 30-s window
        cur = cur + 1 if v else 0
        runs = max(runs, cur)
    seconds = probs.size * FRAME / VAD_RATE
    return {"speech_fraction": float(on.mean()), "speech_prob_mean": float(probs.mean()),
            "speech_prob_p90": float(np.percentile(probs, 90)), "longest_speech_s": runs * FRAME / VAD_RATE,
            "speech_switches_per_s": float(np.count_nonzero(np.diff(on.astype(np.int8)))) / seconds}


def describe(y: np.ndarray, sr: int) -> dict[str, float]:
    """Speech statistics of one mono window (see `summarise`)."""
    return summarise(speech_probs(y, sr))


__all__ = ["describe", "speech_probs", "summarise", "STATS", "THRESHOLD"]
