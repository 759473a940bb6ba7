"""Signals with known answers (tempo, key, level, metre), for tests and benchmarks; pure numpy.

Every generator returns mono float32 at `sr` and is deterministic for a given `seed`.
"""
from __future__ import annotations

import numpy as np

SR = 44100  # songfeat.audio.SAMPLE_RATE, repeated so this module imports nothing from the package

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def midi_to_hz(m: float) -> float:
    """Equal-tempered frequency of MIDI note `m` (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((m - 69) / 12.0)


def _n(seconds: float, sr: int) -> int:
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return int(round(seconds * sr))


def tone(freq: float, seconds: float, sr: int = SR, dbfs: float = -20.0, phase: float = 0.0) -> np.ndarray:
    """A sine whose peak is `dbfs` (0 dBFS = full-scale sine, the AES17 / BS.1770 convention)."""
    t = np.arange(_n(seconds, sr)) / sr
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def _note(freq: float, n: int, sr: int, harmonics: int = 6, decay: float = 0.0) -> np.ndarray:
    """A harmonic tone (1/k amplitudes) of `n` samples with 10-ms fades, optional exponential decay."""
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq < sr / 2:
            y += np.sin(2 * np.pi * k * freq * t) / k
    if decay > 0:
        y *= np.exp(-t * decay)
    fade = min(int(0.01 * sr), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        y[:fade] *= ramp
        y[n - fade:] *= ramp[::-1]
    return y


def _scale_to(y: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = np.max(np.abs(y)) if y.size else 0.0
    if peak > 0:
        y = y * (10 ** (peak_dbfs / 20) / peak)
    return y.astype(np.float32)


def chord(root_pc: int, minor: bool, seconds: float, sr: int = SR, octave: int = 4, peak_dbfs: float = -6.0) -> np.ndarray:
    """A sustained triad (root, third, fifth) with a bass root an octave below; root_pc 0 = C."""
    n = _n(seconds, sr)
    base = 12 * (octave + 1) + root_pc  # MIDI of the root in `octave`
    notes = [base, base + (3 if minor else 4), base + 7, base - 12]
    return _scale_to(sum(_note(midi_to_hz(m), n, sr) for m in notes), peak_dbfs)


def scale(key: int, mode: int, seconds: float, sr: int = SR, octave: int = 4, peak_dbfs: float = -6.0) -> np.ndarray:
    """The scale of `key` (pitch class) in `mode` (1 major, 0 natural minor) up and down over a tonic+fifth drone, filling `seconds`."""
    steps = MAJOR_STEPS if mode == 1 else MINOR_STEPS
    base = 12 * (octave + 1) + key
    seq = [base + s for s in steps] + [base + 12] + [base + s for s in reversed(steps)]
    n = _n(seconds, sr)
    per = max(1, n // len(seq))
    out = np.concatenate([_note(midi_to_hz(m), per, sr, decay=2.0) for m in seq])
    # a tonic + fifth drone (as a tonal context would give): a bare scale cannot tell a major key from its relative minor
    drone = _note(midi_to_hz(base - 12), out.size, sr) + 0.7 * _note(midi_to_hz(base - 5), out.size, sr)
    out = np.pad(out + 0.5 * drone, (0, n - out.size))
    return _scale_to(out, peak_dbfs)


def chord_progression(key: int, mode: int, seconds: float = 16.0, sr: int = SR, chord_seconds: float = 1.0, peak_dbfs: float = -6.0) -> np.ndarray:
    """I-IV-V-I (major) or i-iv-V-i (minor, with the raised leading tone) in `key`, repeated to fill `seconds`."""
    if mode == 1:
        chords = [(0, False), (5, False), (7, False), (0, False)]
    else:
        chords = [(0, True), (5, True), (7, False), (0, True)]
    per = _n(chord_seconds, sr)
    n = _n(seconds, sr)
    if per == 0:
        return np.zeros(n, dtype=np.float32)
    made = {(off, minor): chord((key + off) % 12, minor, chord_seconds, sr, octave=4 if key + off < 12 else 3) for off, minor in chords}
    reps = -(-n // per)
    parts = [made[chords[i % len(chords)]] for i in range(reps)]
    return _scale_to(np.concatenate(parts)[:n] if parts else np.zeros(0), peak_dbfs)


def _click(n: int, sr: int, freq: float, decay_s: float = 0.015) -> np.ndarray:
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * freq * t) * np.exp(-t / decay_s)


def placed(seconds: float, sounds: list[tuple[float, np.ndarray]], sr: int = SR) -> np.ndarray:
    """`seconds` of digital silence with each (start s, sound) of `sounds` added in (cut at the end): lone clicks or
    notes, sound with long silences around it."""
    y = np.zeros(_n(seconds, sr), dtype=np.float32)
    for t, sound in sounds:
        i = _n(t, sr)
        part = np.asarray(sound, dtype=np.float32)[: max(0, y.size - i)]
        y[i: i + part.size] += part
    return y


def click_track(bpm: float, seconds: float, sr: int = SR, accent_every: int | None = None, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """Clicks (1 kHz, 15-ms decay) at `bpm`; with `accent_every`=k every k-th click is louder and has a low thump."""
    if bpm <= 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    n = _n(seconds, sr)
    y = np.zeros(n)
    rng = np.random.default_rng(seed)
    click = _click(int(0.06 * sr), sr, 1000.0)
    thump = _click(int(0.15 * sr), sr, 80.0, decay_s=0.05)
    period = 60.0 / bpm
    k = 0
    while True:
        start = int(round(k * period * sr))
        if start >= n:
            break
        accent = accent_every is not None and k % accent_every == 0
        ev = (1.0 if accent else (0.35 if accent_every else 0.7)) * click
        if accent:
            ev = np.pad(ev, (0, max(0, thump.size - ev.size))) + 1.5 * thump
        end = min(n, start + ev.size)
        y[start:end] += ev[: end - start]
        k += 1
    y += 1e-4 * rng.standard_normal(n)  # a whisper of noise so nothing is digitally exact
    return _scale_to(y, peak_dbfs)


def metre_pattern(bpm: float, beats_per_bar: int, seconds: float, sr: int = SR, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """A drum-and-chord bar pattern: kick + bass chord on beat 1, hi-hat + light chord on the others."""
    n = _n(seconds, sr)
    y = np.zeros(n)
    rng = np.random.default_rng(seed)
    period = 60.0 / bpm
    kick = _click(int(0.2 * sr), sr, 60.0, decay_s=0.06)
    hat_len = int(0.05 * sr)
    hat = rng.standard_normal(hat_len) * np.exp(-np.arange(hat_len) / (0.01 * sr))
    beat_len = int(period * sr)
    low_chord = _note(midi_to_hz(48), beat_len, sr, decay=4.0) + _note(midi_to_hz(55), beat_len, sr, decay=4.0)
    light = _note(midi_to_hz(64), beat_len, sr, decay=8.0) + _note(midi_to_hz(67), beat_len, sr, decay=8.0)
    k = 0
    while True:
        start = int(round(k * period * sr))
        if start >= n:
            break
        if k % beats_per_bar == 0:
            ev = np.pad(kick, (0, max(0, beat_len - kick.size)))[: max(beat_len, kick.size)]
            ev[: low_chord.size] += 0.6 * low_chord
        else:
            ev = np.zeros(max(beat_len, hat_len))
            ev[:hat_len] += 0.3 * hat
            ev[: light.size] += 0.25 * light
        end = min(n, start + ev.size)
        y[start:end] += ev[: end - start]
        k += 1
    return _scale_to(y, peak_dbfs)


def waltz(bpm: float = 150.0, seconds: float = 30.0, sr: int = SR, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """A 3/4 pattern ("oom-pah-pah"): accented low beat then two light ones, per bar."""
    return metre_pattern(bpm, 3, seconds, sr, peak_dbfs, seed)


def noise(seconds: float, sr: int = SR, dbfs: float = -20.0, seed: int = 0, colour: str = "white") -> np.ndarray:
    """Gaussian noise with RMS `dbfs` (re a full-scale sine's RMS); colour 'white' or 'pink' (1/f power)."""
    n = _n(seconds, sr)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    if colour == "pink" and n > 1:
        spec = np.fft.rfft(x)
        f = np.arange(spec.size, dtype=float)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n)
    elif colour != "white":
        raise ValueError(f"colour must be 'white' or 'pink', not {colour!r}")
    rms = np.sqrt(np.mean(x**2)) if n else 1.0
    return (x / rms * 10 ** (dbfs / 20) / np.sqrt(2)).astype(np.float32)


def speech_like(seconds: float, sr: int = SR, seed: int = 0, syllable_rate: float = 4.0, peak_dbfs: float = -6.0) -> np.ndarray:
    """Speech-shaped sound: a jittered 120-Hz pulse train plus noise through moving formants, gated at syllable rate."""
    n = _n(seconds, sr)
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    t0 = 0
    formants = ((700, 1200), (300, 2300), (500, 900), (400, 2000), (600, 1700))
    while t0 < n:
        dur = int(sr * rng.uniform(0.5, 1.5) / syllable_rate)
        gap = int(sr * rng.uniform(0.02, 0.12))
        seg = min(dur, n - t0)
        f0 = 120.0 * (1 + 0.1 * rng.standard_normal())
        src = np.zeros(seg)
        pos = 0.0
        while pos < seg:
            src[int(pos)] = 1.0
            pos += sr / (f0 * (1 + 0.02 * rng.standard_normal()))
        src += 0.05 * rng.standard_normal(seg)
        spec = np.fft.rfft(src)
        freqs = np.fft.rfftfreq(seg, 1 / sr)
        f1, f2 = formants[rng.integers(len(formants))]
        shape = 1 / (1 + ((freqs - f1) / 80) ** 2) + 0.5 / (1 + ((freqs - f2) / 120) ** 2)
        syl = np.fft.irfft(spec * shape, seg) * np.hanning(seg)
        out[t0 : t0 + seg] += syl
        t0 += dur + gap
    return _scale_to(out, peak_dbfs)


ROCK = ("K.h.S.h.K.h.S.h.", "kick on 1 and 3, snare on 2 and 4, eighth-note hi-hats")
DEMBOW = ("K..SK.S.K..SK.S.", "reggaeton's 3-3-2 'dembow': kick on every beat, snare on the tresillo off-beats")


def drum_pattern(bpm: float, pattern: str = ROCK[0], seconds: float = 30.0, sr: int = SR, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """A looped drum bar on a sixteenth-note grid: 'K' kick, 'S' snare, 'h' hi-hat, '.' rest (4 steps per beat)."""
    if bpm <= 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    if not pattern or set(pattern) - set("KSh."):
        raise ValueError(f"pattern must use only 'K', 'S', 'h', '.', got {pattern!r}")
    n = _n(seconds, sr)
    rng = np.random.default_rng(seed)
    kick = _click(int(0.25 * sr), sr, 55.0, decay_s=0.07)
    snare_len, hat_len = int(0.15 * sr), int(0.04 * sr)
    snare = rng.standard_normal(snare_len) * np.exp(-np.arange(snare_len) / (0.04 * sr)) * 0.6 + 0.4 * _click(snare_len, sr, 190.0, 0.03)
    hat = rng.standard_normal(hat_len) * np.exp(-np.arange(hat_len) / (0.008 * sr)) * 0.3
    sounds = {"K": kick, "S": snare, "h": hat}
    return _scale_to(_sequence(n, sr, 60.0 / bpm / 4, lambda k: sounds.get(pattern[k % len(pattern)])), peak_dbfs)


def _sequence(n: int, sr: int, step_s: float, event_at) -> np.ndarray:
    """`n` samples with `event_at(k)` (an array, or None for a rest) added at every step k of `step_s` seconds."""
    y = np.zeros(n)
    k = 0
    while (start := int(round(k * step_s * sr))) < n:
        ev = event_at(k)
        if ev is not None:
            end = min(n, start + ev.size)
            y[start:end] += ev[: end - start]
        k += 1
    return y


def compound_pattern(bpm: float, seconds: float = 30.0, sr: int = SR, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """6/8: `bpm` dotted-quarter beats, each of three eighths; kick + low chord on 1, snare on 4, hi-hat on every eighth.

    Spotify counts 6/8 as time_signature 3 (bars of three eighth-note pulses, twice).
    """
    if bpm <= 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    n = _n(seconds, sr)
    rng = np.random.default_rng(seed)
    eighth = 60.0 / bpm / 3
    kick = _click(int(0.2 * sr), sr, 60.0, decay_s=0.06)
    snare_len, hat_len = int(0.12 * sr), int(0.04 * sr)
    snare = rng.standard_normal(snare_len) * np.exp(-np.arange(snare_len) / (0.03 * sr)) * 0.5
    hat = rng.standard_normal(hat_len) * np.exp(-np.arange(hat_len) / (0.008 * sr)) * 0.25
    bar_len = int(6 * eighth * sr)
    low = _note(midi_to_hz(45), bar_len // 2, sr, decay=3.0) + _note(midi_to_hz(52), bar_len // 2, sr, decay=3.0)

    def event(k: int) -> np.ndarray:
        step = k % 6
        ev = hat.copy()
        if step == 0:
            ev = np.pad(ev, (0, max(0, low.size - ev.size)))
            ev[: kick.size] += kick
            ev[: low.size] += 0.5 * low
        elif step == 3:
            ev = np.pad(ev, (0, max(0, snare.size - ev.size)))
            ev[: snare.size] += snare
        return ev

    return _scale_to(_sequence(n, sr, eighth, event), peak_dbfs)
