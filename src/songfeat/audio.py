"""Audio decoding: any file to mono float32 at one sample rate, whole or as a stream of windows.

Decoding goes through soundfile (wav, flac, ogg, mp3 and every other libsndfile format) and falls
back to PyAV (m4a, aac, mp4, opus, wma, ...). Channels are averaged to mono and the signal is
resampled with soxr. Long files are streamed block by block, so memory stays bounded by one window
however long the song.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 44100  # every front-end and descriptor works at this rate (Spotify previews' own)
WINDOW_SECONDS = 30.0  # learned features are predicted on windows of this length (a preview's length)
MIN_SECONDS = 1.0  # shorter audio carries too little rhythm or timbre to describe
SILENCE_DBFS = -90.0  # audio whose peak stays below this is treated as silent
BLOCK_FRAMES = 1 << 16  # decoder block size (frames) while streaming
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".aif", ".aiff", ".wma", ".webm")
_PYAV_FIRST = (".m4a", ".aac", ".mp4", ".wma", ".webm", ".opus")


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file before decoding it."""

    path: str
    sample_rate: int
    channels: int
    seconds: float | None  # None when the container does not say
    decoder: str  # "soundfile" or "pyav"


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "no such file")
    if p.is_dir():
        raise AudioError(p, "is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    return p


def _soundfile_info(p: Path) -> AudioInfo | None:
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except Exception:
        return None
    seconds = info.frames / info.samplerate if info.frames > 0 else None
    return AudioInfo(str(p), int(info.samplerate), int(info.channels), seconds, "soundfile")


def _pyav_info(p: Path) -> AudioInfo | None:
    import av

    try:
        with av.open(str(p)) as c:
            streams = c.streams.audio
            if not streams:
                return None
            s = streams[0]
            seconds = None
            if s.duration is not None and s.time_base is not None:
                seconds = float(s.duration * s.time_base)
            elif c.duration is not None:
                seconds = c.duration / 1_000_000
            return AudioInfo(str(p), int(s.rate or s.codec_context.sample_rate), int(s.channels or 1), seconds, "pyav")
    except Exception:
        return None


def audio_info(path: str | Path) -> AudioInfo:
    """Probe a file's rate, channels and length; raise AudioError if no decoder recognises it."""
    p = _check_path(path)
    probes = (_pyav_info, _soundfile_info) if p.suffix.lower() in _PYAV_FIRST else (_soundfile_info, _pyav_info)
    for probe in probes:
        info = probe(p)
        if info is not None and info.sample_rate > 0 and info.channels > 0:
            return info
    raise AudioError(p, "not a readable audio file (no decoder recognises its format)")


def _soundfile_blocks(p: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, source rate) from soundfile."""
    import soundfile as sf

    with sf.SoundFile(str(p)) as f:
        sr = int(f.samplerate)
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                return
            ch = block.shape[1]
            # matrix-vector product: much faster than ndarray.mean over a short axis
            yield (block @ np.full(ch, 1.0 / ch, dtype=np.float32)) if ch > 1 else block[:, 0], sr


def _pyav_blocks(p: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, source rate) from PyAV, downmixed by its resampler."""
    import av

    with av.open(str(p)) as c:
        stream = c.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in c.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False), sr
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False), sr


def iter_audio(path: str | Path, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 blocks at `sr`; a decode error mid-file keeps what came before.

    Raises AudioError for files no decoder reads. A file that breaks off part-way (a truncated
    mp3, say) yields the audio decoded up to the break and warns, as audio players do.
    """
    info = audio_info(path)
    p = Path(info.path)
    blocks = _pyav_blocks(p) if info.decoder == "pyav" else _soundfile_blocks(p)
    resampler = None
    got = 0
    try:
        for block, src_sr in blocks:
            if not np.all(np.isfinite(block)):
                raise AudioError(p, "audio contains NaN or infinite samples")
            if src_sr != sr:
                if resampler is None:
                    import soxr

                    resampler = soxr.ResampleStream(src_sr, sr, 1, dtype="float32", quality="HQ")
                block = resampler.resample_chunk(block, last=False)
            got += block.size
            if block.size:
                yield np.ascontiguousarray(block, dtype=np.float32)
    except AudioError:
        raise
    except Exception as e:  # the decoder broke part-way
        if got == 0:
            raise AudioError(p, f"cannot decode audio ({type(e).__name__}: {str(e).strip() or 'corrupt data'})") from None
        warnings.warn(f"{p}: decoding stopped after {got / sr:.1f} s ({type(e).__name__}); using the audio read so far", stacklevel=2)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield np.ascontiguousarray(tail, dtype=np.float32)


def iter_windows(path: str | Path, seconds: float = WINDOW_SECONDS, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Stream a file as consecutive windows of `seconds` (the last one shorter), mono float32 at `sr`."""
    size = int(round(seconds * sr))
    buf: list[np.ndarray] = []
    have = 0
    for block in iter_audio(path, sr):
        buf.append(block)
        have += block.size
        while have >= size:
            joined = np.concatenate(buf)
            yield joined[:size]
            rest = joined[size:]
            buf, have = ([rest] if rest.size else []), rest.size
    if have:
        yield np.concatenate(buf)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode a whole file (or its first `max_seconds`) to a mono float32 array at `sr`."""
    limit = None if max_seconds is None else int(math.ceil(max_seconds * sr))
    parts, have = [], 0
    for block in iter_audio(path, sr):
        parts.append(block)
        have += block.size
        if limit is not None and have >= limit:
            break
    y = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return y[:limit] if limit is not None else y


def check_usable(path: str | Path, total_samples: int, peak: float, sr: int = SAMPLE_RATE) -> None:
    """Raise AudioError if decoded audio is too short or silent to describe."""
    seconds = total_samples / sr
    if total_samples == 0:
        raise AudioError(path, "no audio frames decoded")
    if seconds < MIN_SECONDS:
        raise AudioError(path, f"too short ({seconds:.2f} s; need at least {MIN_SECONDS:g} s)")
    if peak <= 10 ** (SILENCE_DBFS / 20):
        raise AudioError(path, f"audio is silent (peak below {SILENCE_DBFS:g} dBFS)")


def find_audio(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Expand files and folders (recursively) into audio files, sorted; return (audio, missing)."""
    found: list[Path] = []
    missing: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS))
        elif p.exists():
            found.append(p)
        else:
            missing.append(p)
    return found, missing
