"""Audio decoding: any file to mono float32 at one sample rate, whole or as a stream of windows.

Decoding goes through soundfile (wav, flac, ogg, mp3 and every other libsndfile format) and falls
back to PyAV (m4a, aac, mp4, opus, wma, ...). Channels are averaged to mono and the signal is
resampled with soxr. Long files are streamed block by block, so memory stays bounded by one window
however long the song. Where soundfile gives up part-way (damage mid-file), PyAV reads on past the damage.

Native decoders (libmpg123 inside libsndfile, above all) print their complaints straight to file
descriptor 2. Every decoder call here runs with fd 2 pointed at a temporary file, so that text is
kept per file (`capture_output`) and summarised in one warning instead of reaching the terminal.
"""
from __future__ import annotations

import contextvars
import math
import os
import re
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# numpy is imported inside the functions that use it: `songfeat --help` and `import songfeat` stay fast
if TYPE_CHECKING:  # annotations only
    import numpy as np

from .errors import AudioError, SongfeatWarning

SAMPLE_RATE = 44100  # every front-end and descriptor works at this rate (Spotify previews' own)
WINDOW_SECONDS = 30.0  # learned features are predicted on windows of this length (a preview's length)
MIN_SECONDS = 1.0  # shorter audio carries too little rhythm or timbre to describe
MIN_TAIL_SECONDS = 10.0  # a last window shorter than this is not used for learned features when a full one exists
SILENCE_DBFS = -90.0  # audio whose peak stays below this is treated as silent
SILENCE_PEAK = 10 ** (SILENCE_DBFS / 20)  # the same as a linear peak
PEAK_EDGE = 882  # samples (20 ms at 44.1 kHz) at each end of a window where the silence check allows resampler ringing
RING_RATIO = 1.5  # ... up to this many times the window's offset (a constant's ringing stays under 0.97 of it, 1-768 kHz)
MAX_PEAK = 100.0  # +40 dBFS: float files may overshoot ±1 a little, never by this much (1e19 once gave NaN features)
GLITCH_SECONDS = 0.5  # how long after a corrupt packet PyAV skipped a frame is checked for a spike (see `_glitch`)
GLITCH_RATIO = 2.0  # ... a spike: past ±1 and over this many times (+6 dB) the peak of all the audio decoded before it
MIN_RATE, MAX_RATE = 1000, 768000  # Hz: the lowest rate the fuzz corpus reads, to DXD; a header outside this is damaged (1 Hz crashed soxr)
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
    promised_seconds: float | None = None  # a length the header states exactly, checked against what decodes: a cut-off
    # WAV's (set only when it is more than the file holds), a Matroska/WebM or MP4/M4A container's
    empty_header: bool = False  # a WAV header declaring no data (a recorder stopped before writing the length)


# ---- native decoder output -------------------------------------------------------------------

_FD2_LOCK = threading.RLock()  # fd 2 is process-wide: one redirection at a time
_SINK: contextvars.ContextVar["Captured | None"] = contextvars.ContextVar("songfeat_capture", default=None)
_ERROR_LINE = re.compile(r"\berror\b|\billegal\b", re.IGNORECASE)  # libmpg123: "[...] error: ...", "Note: Illegal Audio-MPEG-Header"
MAX_LOG_CHARS = 20_000  # raw decoder text kept per file (for --verbose); the error count covers all of it


@contextmanager
def fd2_to(fileno: int) -> Iterator[None]:
    """Run the body with file descriptor 2 (what native code prints to) pointed at `fileno`, Python's own stderr flushed
    first, fd 2 restored after; one redirection at a time in the process."""
    with _FD2_LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        saved = os.dup(2)
        os.dup2(fileno, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class DecoderLog:
    """What native decoders printed on fd 2 while one file was decoded (collected call by call)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._file = None

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Run the body with fd 2 pointed at this log's temporary file (Python's own stderr is flushed first)."""
        with _FD2_LOCK:
            if self._file is None:
                self._file = tempfile.TemporaryFile()
            with fd2_to(self._file.fileno()):
                yield

    def add(self, text: str) -> None:
        """Append `text` (another log's capture) to this log, as if the decoder had printed it here."""
        if not text:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile()
        self._file.seek(0, os.SEEK_END)
        self._file.write(text.encode("utf-8"))
        self._file.flush()

    def text(self) -> str:
        """Everything captured so far, decoded leniently (may be long: see MAX_LOG_CHARS)."""
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def decoder_errors(text: str) -> int:
    """How many error reports a decoder's raw output holds: its lines saying "error" or "illegal" (a bad frame header)."""
    return sum(1 for ln in text.splitlines() if _ERROR_LINE.search(ln))


def is_cut_off(text: str) -> bool:
    """Whether a file's decoder output says it holds less than its header promises (libmpg123: the VBR header's byte
    count is larger than the file), i.e. a copy or download cut off part-way."""
    return "Xing stream size off" in text


def decoder_warning(path: str | Path, text: str) -> str:
    """The one-line summary of a file's decoder output.

    '<file>: decoder reported N errors (corrupt frames skipped)' when it reported errors, else its
    first message (e.g. libmpg123's note that a truncated file is shorter than its header says).
    """
    n = decoder_errors(text)
    if n:
        return f"{path}: decoder reported {n} error{'s' if n != 1 else ''} (corrupt frames skipped)"
    if is_cut_off(text):
        return f"{path}: shorter than its mp3 header says (cut off?); analysed the audio that is there"
    lines = list(dict.fromkeys(ln.strip() for ln in text.splitlines() if ln.strip()))
    more = f" (and {len(lines) - 1} more messages)" if len(lines) > 1 else ""
    return f"{path}: decoder said: {lines[0][:200]}{more}" if lines else f"{path}: decoder printed blank output"


@dataclass
class Captured:
    """Decoder output and Python warnings raised while running some code, kept per file instead of printed."""

    warnings: list[str] = field(default_factory=list)  # one-line messages, each '<file>: <what>'
    logs: dict[str, str] = field(default_factory=dict)  # file -> raw native decoder text
    other: list[str] = field(default_factory=list)  # third-party Python warnings (for --verbose)

    def add_log(self, path: str, text: str) -> None:
        self.logs[path] = self.logs.get(path, "") + text

    def raw(self, path: str | None = None) -> str:
        """The raw text behind the warnings, one '<file>: decoder: <line>' per line, for --verbose.

        `path` names the file the third-party Python warnings belong to, when there is one.
        """
        out = []
        for p, t in self.logs.items():
            lines = [ln for ln in t[:MAX_LOG_CHARS].splitlines() if ln.strip()]
            out += [f"{p}: decoder: {ln}" for ln in lines]
            if len(t) > MAX_LOG_CHARS:
                out.append(f"{p}: decoder: [... {len(t) - MAX_LOG_CHARS} more characters not shown]")
        return "\n".join(out + [f"{path}: {w}" if path else w for w in self.other])


_QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextmanager
def capture_output() -> Iterator[Captured]:
    """Keep decoder output and warnings raised in the body in the yielded Captured instead of printing them.

    For batch code (CLI, workers, services): run one file's work inside it, then report
    `captured.warnings` as lines and `captured.raw()` behind a verbose switch. Python warnings are
    recorded with `warnings.catch_warnings`, which is process-wide: use from one thread at a time.
    """
    cap = Captured()
    token = _SINK.set(cap)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield cap
            finally:
                other: dict[str, int] = {}  # a warning raised once per block is listed once, with its count
                for w in caught:
                    msg = str(w.message)
                    if issubclass(w.category, SongfeatWarning):
                        if msg not in cap.warnings:
                            cap.warnings.append(msg)
                    elif not issubclass(w.category, _QUIET_CATEGORIES):
                        key = f"{w.category.__name__}: {msg} ({Path(w.filename).name}:{w.lineno})"
                        other[key] = other.get(key, 0) + 1
                cap.other += [k if n == 1 else f"{k} (x{n})" for k, n in other.items()]
                cap.warnings += [decoder_warning(p, t) for p, t in cap.logs.items()]
    finally:
        _SINK.reset(token)


def _finish_log(log: DecoderLog, warn: bool = True) -> None:
    """Hand a file's decoder output to the active capture_output(), or else (if `warn`) warn once for the file."""
    text = log.text()
    log.close()
    if not text.strip():
        return
    sink = _SINK.get()
    if sink is not None:
        sink.add_log(log.path, text)
    elif warn:
        warnings.warn(decoder_warning(log.path, text), SongfeatWarning, stacklevel=3)


def _captured(gen: Iterator, log: DecoderLog) -> Iterator:
    """Iterate a decoder generator with every step (open, each block read, close) under `log.capturing()`."""
    try:
        while True:
            with log.capturing():
                try:
                    item = next(gen)
                except StopIteration:
                    return
            yield item
    finally:
        with log.capturing():
            gen.close()


# ---- probing and decoding ----------------------------------------------------------------------

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _special_kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is ('a FIFO (named pipe)', ...), or None for a regular file or folder."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _stat_error(p: Path, e: OSError) -> AudioError:
    """A one-line AudioError for a failed stat/open: loop, broken link, permission, missing."""
    import errno

    if e.errno == errno.ELOOP:
        return AudioError(p, "symlink loop (the link points back at itself)")
    if e.errno == errno.ENOENT and p.is_symlink():
        return AudioError(p, f"broken symlink (points to {os.readlink(p)}, which does not exist)")
    if e.errno == errno.ENOENT:
        return AudioError(p, "no such file")
    if e.errno in (errno.EACCES, errno.EPERM):
        return AudioError(p, "permission denied")
    return AudioError(p, f"cannot read ({e.strerror or type(e).__name__})")


def _check_path(path: str | Path) -> Path:
    """Refuse what must not reach a decoder: missing, unreadable, empty, folders and special files (never opened); and an
    empty path, which Path() reads as '.' (it was refused as '.: is a directory')."""
    if isinstance(path, (str, bytes)) and not path:
        raise AudioError(None, "the path is empty; name an audio file")
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise _stat_error(p, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(p, "is a directory, not an audio file")
    kind = _special_kind(st.st_mode)
    if kind:
        raise AudioError(p, f"is {kind}, not an audio file")
    if st.st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    try:
        os.close(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as e:
        raise _stat_error(p, e) from None
    return p


def _soundfile_info(p: Path) -> AudioInfo | None:
    import soundfile as sf

    try:
        info = sf.info(str(p))
    except Exception:
        return None
    seconds = info.frames / info.samplerate if info.frames > 0 else None
    log = getattr(info, "extra_info", "") or ""
    return AudioInfo(str(p), int(info.samplerate), int(info.channels), seconds, "soundfile",
                     _promised_seconds(seconds, log), empty_header=info.frames == 0 and bool(_DATA_EMPTY.search(log)))


_DATA_CUT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)  # libsndfile's WAV log
_DATA_EMPTY = re.compile(r"^data\s*:\s*0\s*$", re.MULTILINE)  # libsndfile's log of a WAV whose data chunk says 0 bytes
UNKNOWN_LENGTH = 0xFFFFFFFF  # a WAV size field's 'length not known' (ffmpeg and others writing to a pipe)


def _promised_seconds(seconds: float | None, log: str) -> float | None:
    """The length a WAV header promised when libsndfile's log says its data chunk is longer than the file holds
    ('data : 882000 (should be 440978)'): libsndfile then quietly reads what is there, so this is the only sign of a
    file cut off mid-copy. None otherwise."""
    m = _DATA_CUT.search(log or "")
    if seconds is None or not m or int(m.group(2)) <= 0 or int(m.group(1)) <= int(m.group(2)):
        return None
    if int(m.group(1)) == UNKNOWN_LENGTH:  # a streamed WAV says nothing about its length: it promised nothing
        return None
    return seconds * int(m.group(1)) / int(m.group(2))


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
            return AudioInfo(str(p), int(s.rate or s.codec_context.sample_rate), int(s.channels), seconds, "pyav",
                             seconds if _exact_length(c, s) else None)
    except Exception:
        return None


def _exact_length(c, s) -> bool:
    """Whether a PyAV container states its audio's length exactly, so that decoding less means a file cut off part-way:
    an MP4/M4A track's own duration, or a Matroska/WebM file's Duration when audio is all it holds (a video's may be
    longer). Ogg's and ADTS/MP3's are read off the last page or estimated from the bitrate: they promise nothing."""
    name = c.format.name or ""
    if name.startswith("mov,"):
        return s.duration is not None
    return name.startswith("matroska") and len(c.streams) == 1 and c.duration is not None


OGG_EOS = 0x04  # an Ogg page header's flag: the last page of its stream
_OGG_TAIL = 1 << 17  # bytes read from an Ogg file's end: more than two of its largest pages (65,307 bytes)


def _ogg_table() -> list[int]:
    """The byte table of Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected)."""
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_TABLE = _ogg_table()


def _ogg_crc(data: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, no final xor; its own field zeroed)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


def _ogg_pages(path: str | Path) -> tuple[bytes, bytes | None] | None:
    """An Ogg file's first page header and its last whole page's (checksum intact; None when no whole page is found
    near the end), 27 bytes each; None for other files. Ogg states no length or end up front: these pages say it."""
    with open(path, "rb") as f:
        first = f.read(27)
        if first[:4] != b"OggS":
            return None
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _OGG_TAIL))
        tail = f.read()
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        head = tail[at:at + 27]
        if len(head) < 27 or head[4] != 0:
            continue
        lacing = tail[at + 27:at + 27 + head[26]]
        end = at + 27 + head[26] + sum(lacing)
        if len(lacing) < head[26] or end > len(tail):  # the page the file breaks off in (or "OggS" inside packet data)
            continue
        page = bytearray(tail[at:end])
        page[22:26] = bytes(4)
        if _ogg_crc(page) == int.from_bytes(head[22:26], "little"):
            return first, head
    return first, None


def _ogg_cut_off(pages: tuple[bytes, bytes | None] | None) -> bool:
    """Whether an Ogg file (Vorbis, Opus, ...; `_ogg_pages`) breaks off part-way: its last whole page (checksum intact)
    is not an end-of-stream page. Ogg states no length up front (decoders read it off the last page there is), so a
    download cut off mid-file decodes quietly to its break; the missing end page is the only sign. False for other
    files, and when no whole page is found near the end (nothing to tell from)."""
    return pages is not None and pages[1] is not None and not pages[1][5] & OGG_EOS


def _chained_ogg(pages: tuple[bytes, bytes | None] | None) -> bool:
    """Whether an Ogg file's last whole page belongs to another logical stream than its first (serial numbers, bytes
    14-18): Ogg files joined end to end (`cat a.ogg b.ogg`, a radio rip), of which libsndfile decodes the first alone."""
    return pages is not None and pages[1] is not None and pages[0][14:18] != pages[1][14:18]


def _ogg_seconds(p: Path, pages: tuple[bytes, bytes | None] | None) -> float | None:
    """An Ogg file's length as PyAV reads it off its last page (less its first page's start), None for other files and
    chained ones (whose last page gives its own link's length): what it should decode to. (libsndfile counts from the
    first page it can read, so a damaged first audio page took the lost audio out of its length too.)"""
    if pages is None or _chained_ogg(pages):
        return None
    info, _ = _probe_quietly(_pyav_info, p)
    return info.seconds if info is not None else None


def _probe_quietly(probe, p: Path) -> tuple[AudioInfo | None, str]:
    """Run one probe with fd 2 captured in a log of its own; return its AudioInfo (or None) and what it printed.

    Kept apart so a decoder that does not recognise the file (libmpg123 searching an .m4a named .mp3 for an MPEG
    header) is not reported as 'corrupt frames skipped' in a file the next decoder reads whole."""
    scratch = DecoderLog(p)
    try:
        with scratch.capturing():
            info = probe(p)
        return info, scratch.text()
    finally:
        scratch.close()


def _accept(info: AudioInfo, text: str, log: DecoderLog, own: bool) -> AudioInfo:
    """The probe result `audio_info` settles on: its decoder output kept in `log`, its rate checked."""
    log.add(text)  # only the decoder that will read the file speaks for it
    if own:
        _finish_log(log)
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise AudioError(info.path, f"sample rate {info.sample_rate} Hz is not an audio rate (songfeat reads "
                                    f"{MIN_RATE}-{MAX_RATE} Hz; a damaged header?)")
    return info


def audio_info(path: str | Path, log: DecoderLog | None = None) -> AudioInfo:
    """Probe a file's rate, channels and length; raise AudioError if no decoder recognises it.

    Decoder output during the probe goes to `log` (or, without one, to a capture of its own).
    """
    p = _check_path(path)
    own = log is None
    log = log or DecoderLog(p)
    pyav_first = p.suffix.lower() in _PYAV_FIRST or _chained_ogg(_ogg_pages(p))  # libsndfile: a chain's first link
    probes = (_pyav_info, _soundfile_info) if pyav_first else (_soundfile_info, _pyav_info)
    no_channels = False
    failed: list[str] = []  # what the probes that did not recognise the file printed
    fallback: tuple[AudioInfo, str] | None = None
    for probe in probes:
        info, text = _probe_quietly(probe, p)
        no_channels |= info is not None and info.sample_rate > 0 and info.channels <= 0
        if info is not None and info.sample_rate > 0 and info.channels > 0:
            if info.empty_header and fallback is None:  # libsndfile reads 0 frames of it; PyAV reads on to the end
                fallback = (info, text)
                continue
            return _accept(info, text, log, own)
        failed.append(text)
    if fallback is not None:  # a header-only WAV: no frames from either, said as such
        return _accept(*fallback, log, own)
    log.add("".join(failed))  # nothing reads the file: all of it, for --verbose behind the error
    if own:
        _finish_log(log, warn=False)  # the error says it
    if no_channels:  # a header that declares 0 channels: decoding it failed deep in libavcodec with "Invalid argument"
        raise AudioError(p, "its header declares 0 audio channels (damaged or not audio)")
    raise AudioError(p, "not a readable audio file (no decoder recognises its format)")


def header_info(path: str | Path) -> AudioInfo:
    """`audio_info` with the probe's decoder output discarded, for a caller that decodes the file next: the decode
    reports that output again (kept, a truncated mp3 was warned about twice, and a probe's error lines counted twice).

    Raises AudioError for a file no decoder recognises (as decoding it would).
    """
    log = DecoderLog(path)
    try:
        return audio_info(path, log)
    finally:
        log.close()


def _soundfile_blocks(p: Path, mono: bool = True) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, source rate) from soundfile; `mono=False`: frames x channels blocks, as stored."""
    import numpy as np
    import soundfile as sf

    with sf.SoundFile(str(p)) as f:
        sr = int(f.samplerate)
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                return
            ch = block.shape[1]
            if not mono:
                yield block, sr
                continue
            # matrix-vector product: much faster than ndarray.mean over a short axis
            yield (block @ np.full(ch, 1.0 / ch, dtype=np.float32)) if ch > 1 else block[:, 0], sr


def _pyav_blocks(p: Path, mono: bool = True, log: DecoderLog | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, source rate) from PyAV (`mono=False`: frames x channels): packed float32 in the
    stream's own channel layout, averaged over the channels as `_soundfile_blocks` does. (PyAV's own mono downmix keeps
    the channels' sum at 1/sqrt(2), so stereo read through it came out 3 dB louder than the same audio read by
    soundfile: an .m4a or .opus file, or any file soundfile cannot open by name, read louder and more energetic than
    its WAV.) A corrupt packet is skipped, as ffmpeg and players do, with an error line in `log` (decoding stopped at
    the first one), and so is a frame decoded into a spike right after one (`_glitch`); a file whose every packet is
    corrupt raises the first packet's error."""
    import numpy as np
    import av

    with av.open(str(p)) as c:
        stream = c.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="flt", layout=stream.codec_context.layout, rate=sr)

        def mix(out) -> np.ndarray:
            ch = out.layout.nb_channels
            block = out.to_ndarray().reshape(-1, ch).astype(np.float32, copy=False)  # packed: frames x channels
            if not mono:
                return block
            return (block @ np.full(ch, 1.0 / ch, dtype=np.float32)) if ch > 1 else block[:, 0]

        first_error: Exception | None = None
        decoded = False
        checks = not stream.codec_context.name.startswith("pcm_f")  # float samples may stand past ±1: never spikes
        peak, since = 0.0, None  # the peak of the frames kept; samples decoded since the last corrupt packet
        for packet in c.demux(stream):  # its last packet is empty: decoding it flushes the decoder
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as e:
                first_error = first_error or e
                since = 0
                if log is not None:
                    log.add(f"pyav: error: {str(e).strip() or 'corrupt packet'} (skipped)\n")
                continue
            for frame in frames:
                for out in resampler.resample(frame):
                    block = mix(out)
                    level = float(np.max(np.abs(block))) if block.size else 0.0
                    near = since is not None and since < GLITCH_SECONDS * sr
                    if since is not None:
                        since += out.samples
                    if checks and near and _glitch(level, peak):
                        if log is not None:
                            log.add(f"pyav: error: a frame right after a corrupt packet decoded to {level:.3g} "
                                    f"({20 * math.log10(level):+.0f} dBFS) where the audio before peaks at "
                                    f"{peak:.3g} (skipped)\n")
                        continue
                    if math.isfinite(level):
                        peak = max(peak, level)
                    decoded = True
                    yield block, sr
        for out in resampler.resample(None):
            decoded = True
            yield mix(out), sr
        if first_error is not None and not decoded:
            raise first_error


def _glitch(level: float, before: float) -> bool:
    """Whether a frame decoded right after a corrupt packet peaking at `level` is damage decoded into a spike (an mp3
    frame whose bit reservoir lay in the damage rang to +21 dBFS): past ±1, and over `GLITCH_RATIO` times the peak of
    the audio `before` it (none before: nothing to compare, kept). A compressed file's own overs stay within a few dB."""
    return before > 0.0 and level > max(1.0, GLITCH_RATIO * before)


@dataclass
class _Break:
    """Where soundfile stopped short in a file (and its error, if it raised one) when PyAV then read on past it."""

    seconds: float | None = None
    error: Exception | None = None


def _well_short(expected: float | None, held: float) -> bool:
    """Whether `held` seconds of audio fall well (over 1 s and 2 %) short of the `expected` length a header gives."""
    return expected is not None and expected - held > max(1.0, 0.02 * expected)


def _stopped_short(info: AudioInfo, frames: int) -> bool:
    """Whether soundfile's decoder ended well short of the length the file's header gives: libmpg123 can end a file
    quietly at damage it cannot resync past, as if it were the end."""
    return _well_short(info.seconds, frames / info.sample_rate)


def _blocks_reading_on(p: Path, info: AudioInfo, log: DecoderLog, brk: _Break) -> Iterator[tuple[np.ndarray, int]]:
    """The file's (mono block, source rate) pairs, each decoder step under `log`; where soundfile breaks off part-way
    (an error, or a quiet end well short of its header's length), the rest from PyAV (decoded from the start, the frames
    already read dropped, corrupt packets skipped): libmpg123 gives up resyncing after 1 KB of damage, so a 4-KB hole
    6 s into a 60-s mp3 left 4.5 s of it. PyAV's frames past `MAX_PEAK` there are damage decoded into noise, and
    dropped. Notes the break in `brk`; raises soundfile's error when PyAV adds nothing."""
    import numpy as np

    if info.decoder == "pyav":  # `yield from` closes it with this generator
        yield from _captured(_pyav_blocks(p, log=log), log)
        return
    done, rate, error = 0, 0, None
    first = _captured(_soundfile_blocks(p), log)
    try:
        for block, rate in first:
            done += block.size
            yield block, rate
        if not done or not _stopped_short(info, done) or is_cut_off(log.text()):  # a cut-off mp3 has nothing further
            return
    except Exception as e:
        if done == 0:
            raise
        error = e
    finally:
        first.close()
    rest, skip, more = _captured(_pyav_blocks(p, log=log), log), done, False
    try:
        for block, r in rest:
            if r != rate:  # another reading of the file (a rate of its own): not a continuation
                break
            if skip >= block.size:
                skip -= block.size
                continue
            block, skip = block[skip:], 0
            level = float(np.max(np.abs(block))) if block.size else 0.0
            if not level <= MAX_PEAK:  # damage PyAV decoded into noise far past ±1 (or NaN): dropped, not the file
                log.add(f"pyav: error: a frame decoded to {level:.3g}, far past ±1 (skipped)\n")
                continue
            if not more:
                brk.seconds, brk.error, more = done / rate, error, True
            yield block, r
    except Exception:
        if more:
            raise
    finally:
        rest.close()
    if not more and error is not None:  # PyAV read no further: soundfile's break is the one to report
        raise error


def _stores_floats(p: Path, decoder: str) -> bool:
    """Whether the file holds float samples (asked only of one whose samples came out far past ±1): there that means
    integers stored as floats; from a compressed file (a corrupt mp3 decoded to +84 dBFS) it means corrupt data."""
    try:
        if decoder == "pyav":
            import av

            with av.open(str(p)) as c:
                return c.streams.audio[0].codec_context.name.startswith("pcm_f")
        import soundfile as sf

        return sf.info(str(p)).subtype in ("FLOAT", "DOUBLE")
    except Exception:  # it was readable a moment ago; if not now, keep the float wording
        return True


def iter_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 blocks at `sr`; a decode error mid-file keeps what came before (and PyAV reads on).

    Raises AudioError for files no decoder reads. A file that breaks off part-way (a truncated
    mp3, say) yields the audio decoded up to the break and warns, as audio players do; one that soundfile gives up on
    part-way (damage mid-file) is read on past it by PyAV (`_blocks_reading_on`), with a warning. What the
    native decoder prints is captured: see `capture_output`. `max_seconds`: stop once that much is yielded (a block or
    so more), damage read past in it warned of as in a whole read (its length, unread, is not checked).
    """
    log = DecoderLog(path)
    unreadable = False
    try:
        yield from _iter_audio(path, sr, log, max_seconds)
    except AudioError:
        unreadable = True
        raise
    finally:
        _finish_log(log, warn=not unreadable)  # a file that fails says so once, with its error


def _iter_audio(path: str | Path, sr: int, log: DecoderLog, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    import numpy as np

    info = audio_info(path, log)
    p = Path(info.path)
    brk = _Break()
    blocks = _blocks_reading_on(p, info, log, brk)
    resampler = None
    got = src_frames = 0
    limit = None if max_seconds is None else int(math.ceil(max_seconds * sr))
    try:
        for block, src_sr in blocks:
            src_frames += block.size
            peak = float(np.max(np.abs(block))) if block.size else 0.0
            if not math.isfinite(peak):
                raise AudioError(p, "audio contains NaN or infinite samples")
            if peak > MAX_PEAK:
                level = f"sample values reach {peak:.3g} ({20 * math.log10(peak):+.0f} dBFS)"
                if _stores_floats(p, info.decoder):
                    raise AudioError(p, f"{level}, but float audio lives within ±1: integer samples stored as float, or "
                                        "not audio")
                raise AudioError(p, f"decoded {level}, far past ±1: corrupt data the decoder could not make sense of")
            if src_sr != sr:
                if resampler is None:
                    import soxr

                    resampler = soxr.ResampleStream(src_sr, sr, 1, dtype="float32", quality="HQ")
                block = resampler.resample_chunk(block, last=False)
            got += block.size
            if block.size:
                yield np.ascontiguousarray(block, dtype=np.float32)
            if limit is not None and got >= limit:  # stopped here, not by its caller: what it read on past is still said
                break
    except AudioError:
        raise
    except Exception as e:  # the decoder broke part-way
        if got == 0:
            raise AudioError(p, f"cannot decode audio ({type(e).__name__}: {str(e).strip() or 'corrupt data'})") from None
        warnings.warn(f"{p}: decoding stopped after {got / sr:.1f} s ({type(e).__name__}); using the audio read so far",
                      SongfeatWarning, stacklevel=3)
    else:
        promised, held = info.promised_seconds, src_frames / info.sample_rate
        _warn_read_on(p, brk, held)
        reached = limit is not None and got >= limit  # the rest is not read: the file's length is not known
        pages = None if reached else _ogg_pages(p)
        if reached:
            pass
        elif _well_short(promised, held):
            warnings.warn(f"{p}: holds {held:.1f} s of audio but its header says {promised:.1f} s "
                          "(cut off?); analysed the audio that is there", SongfeatWarning, stacklevel=3)
        elif _ogg_cut_off(pages):
            warnings.warn(f"{p}: holds {held:.1f} s of audio but its Ogg stream has no end page "
                          "(cut off?); analysed the audio that is there", SongfeatWarning, stacklevel=3)
        elif _well_short(expected := _ogg_seconds(p, pages), held):  # the decoders skip pages damaged part-way, quietly
            warnings.warn(f"{p}: holds {held:.1f} s of audio but its Ogg stream's last page says {expected:.1f} s: "
                          f"{expected - held:.1f} s were lost in pages damaged part-way (skipped); analysed the "
                          "audio that is there", SongfeatWarning, stacklevel=3)
    finally:  # now, under `log`: left to the garbage collector, the decoder closed after the log and opened a new one
        blocks.close()
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield np.ascontiguousarray(tail, dtype=np.float32)


def _warn_read_on(p: Path, brk: _Break, held: float) -> None:
    """Warn that PyAV read on to `held` s past where soundfile stopped (`brk`), if it did (a cut-off file's last frame or
    two that PyAV reads and libsndfile did not are no damage read past: its cut is reported on its own)."""
    if brk.seconds is not None and (brk.error is not None or held - brk.seconds > 1.0):
        why = f" ({type(brk.error).__name__})" if brk.error is not None else ""
        warnings.warn(f"{p}: soundfile stopped at {brk.seconds:.1f} s{why}, on damaged or missing data; PyAV read "
                      f"on past it to {held:.1f} s", SongfeatWarning, stacklevel=4)


def iter_windows(path: str | Path, seconds: float = WINDOW_SECONDS, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Stream a file as consecutive windows of `seconds` (the last one shorter), mono float32 at `sr`.

    A file that is one short window only is checked before it is yielded (`check_first_window`): too short or silent
    audio is refused before any model runs on it. Longer files are checked by their callers, on every window's
    evidence (`check_windows`)."""
    import numpy as np

    size = int(round(seconds * sr))
    buf: list[np.ndarray] = []
    have = 0
    whole = True  # no full window yielded yet
    for block in iter_audio(path, sr):
        buf.append(block)
        have += block.size
        while have >= size:
            joined = np.concatenate(buf)
            yield joined[:size]
            whole = False
            rest = joined[size:]
            buf, have = ([rest] if rest.size else []), rest.size
    if have:
        w = np.concatenate(buf)
        if whole:
            check_first_window(path, w, seconds, sr)
        yield w


def reporting_windows(windows: Iterator[np.ndarray], on_window: Callable[[float], None],
                      sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """`windows` (`iter_windows`') passed through, `on_window(seconds so far)` called once the loop is done with each
    (a progress hook for long files; between decoder calls, so fd 2 is the terminal's then, not a decoder capture)."""
    done = 0
    for w in windows:
        yield w
        done += w.size
        on_window(done / sr)


def learned_window(n_samples: int, sr: int = SAMPLE_RATE, after_used: bool = False) -> bool:
    """Whether a window feeds the learned features: every window but a trailing one under `MIN_TAIL_SECONDS` that
    follows a used window (tiled to 30 s, such a tail would be mostly repetition). Analysis, the training records and
    the benchmark all decide it here."""
    return not (after_used and n_samples < MIN_TAIL_SECONDS * sr)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode a whole file (or its first `max_seconds`) to a mono float32 array at `sr`."""
    import numpy as np

    limit = None if max_seconds is None else int(math.ceil(max_seconds * sr))
    parts = list(iter_audio(path, sr, max_seconds))  # it stops by itself, so that it says what it read past
    y = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return y[:limit] if limit is not None else y


def sound_peak(y: np.ndarray, edge: int = PEAK_EDGE) -> float:
    """The largest excursion of `y` from its mean: a constant (DC) offset is not sound, so a file holding only one
    reads 0 and is refused as silent instead of analysed into a key and a loudness out of window leakage. The first and
    last `edge` samples (when `y` is longer than four of them) count only past `RING_RATIO` times the offset: resampling a
    constant rings there, as the resampler starts from and ends in zeros, which made a DC-only file at another rate pass
    for sound; a real sound at the very start or end of silence (a click at t=0) is no ringing, and counts."""
    import numpy as np

    def excursion(part: np.ndarray, m) -> float:
        return float(max(part.max() - m, m - part.min())) if part.size else 0.0  # = max |part - m|, no 30-s temporary

    if not y.size:
        return 0.0
    trim = y.size > 4 * edge > 0
    core = y[edge:-edge] if trim else y
    m = core.dtype.type(core.mean(dtype=np.float64))
    peak = excursion(core, m)
    if trim:
        ends = max(excursion(y[:edge], m), excursion(y[-edge:], m))
        if ends > RING_RATIO * abs(float(m)):
            peak = max(peak, ends)
    return peak


def check_usable(path: str | Path, total_samples: int, peak: float, sr: int = SAMPLE_RATE,
                 silent: str = "audio is silent") -> None:
    """Raise AudioError if decoded audio is too short or silent to describe; `peak`: the largest `sound_peak`;
    `silent`: what the error says of silence (a caller that decoded only the start of a file says so)."""
    seconds = total_samples / sr
    if total_samples == 0:
        raise AudioError(path, "no audio frames decoded")
    if seconds < MIN_SECONDS:
        shown = math.floor(seconds * 1000) / 1000  # 0.999 s, not "1.00 s; need at least 1 s"
        length = f"{shown:g} s" if shown else f"{total_samples} sample{'s' * (total_samples > 1)}, under 1 ms"  # not "0 s"
        raise AudioError(path, f"too short ({length}; need at least {MIN_SECONDS:g} s)")
    if peak <= SILENCE_PEAK:
        if channels_cancel(path):
            raise AudioError(path, f"{silent} once its channels are averaged to mono, which songfeat analyses: they "
                                   "cancel out (one is the other with its polarity inverted?)")
        raise AudioError(path, f"{silent} (peak below {SILENCE_DBFS:g} dBFS, not counting a constant offset)")


def channels_cancel(path: str | Path) -> bool:
    """Whether a file whose mono mix is silent holds sound in its channels (a copy of one channel polarity-inverted
    into the other): its silence error then says why, as the file plays loud. Decodes it again: error path only."""
    import numpy as np

    log = DecoderLog(path)
    try:
        info = audio_info(path, log)
        if info.channels < 2:
            return False
        p = Path(info.path)
        blocks = _captured(_pyav_blocks(p, mono=False) if info.decoder == "pyav" else _soundfile_blocks(p, mono=False), log)
        try:
            for block, _ in blocks:  # loud channels where their mix is silent (a click in both is no cancelling), and
                # their mix far (20 dB) below their average swing: one faint channel beside silent ones only averages down
                if not block.size:
                    continue
                spans, mixed = np.ptp(block, axis=0), float(np.ptp(block.mean(axis=1)))
                if float(spans.max()) / 2 > SILENCE_PEAK >= mixed / 2 and mixed < 0.1 * float(spans.mean()):
                    return True
        finally:
            blocks.close()
    except Exception:  # an unreadable file says so elsewhere; this only words the silence error
        return False
    finally:
        log.close()  # the decode that found the silence reported what the decoder said
    return False


def check_windows(path: str | Path, evidence) -> None:
    """`check_usable` over a whole file's per-window evidence (anything with `n_samples` and `peak`, a `sound_peak`)."""
    check_usable(path, sum(e.n_samples for e in evidence), max((e.peak for e in evidence), default=0.0))


def check_first_window(path: str | Path, w: np.ndarray, seconds: float = WINDOW_SECONDS, sr: int = SAMPLE_RATE) -> None:
    """`check_usable` on a file's first window from `iter_windows` when it is shorter than a full one, i.e. the whole
    file: too short or silent audio is refused before any model runs on it (a 1-sample file reached the tagger)."""
    if w.size < int(round(seconds * sr)):
        check_usable(path, w.size, sound_peak(w), sr)


DATA_DIR = ".songfeat"  # `songfeat serve`'s own folder inside a library (its index and stored uploads)


def scan_inputs(paths: list[str | Path]) -> tuple[list[Path], list[AudioError], list[str]]:
    """Expand files and folders into the audio files to analyse, accounting for every input.

    Returns (files, errors, notes). A path named on the command line is taken whatever its
    extension; inside folders, only names with an audio extension are inputs (readme.txt is not).
    Every input ends as a file or as one AudioError: missing, broken or looping symlinks,
    unreadable files or folders, FIFOs, sockets and devices (checked with stat only, never opened,
    so a FIFO cannot block the walk). Symlinks to folders are followed once: a folder already
    walked (a link back to an ancestor, or a second way into the same folder) is not walked again,
    and gets a note instead. A served library's own `.songfeat` folder (`DATA_DIR`: the index and stored uploads) is
    not walked either, with a note (name it to take its files). Files come sorted within each input; repeats are dropped.
    """
    files: list[Path] = []
    errors: list[AudioError] = []
    notes: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()

    def take(p: Path, st: os.stat_result) -> None:
        kind = _special_kind(st.st_mode)
        if kind:
            errors.append(AudioError(p, f"is {kind}, not an audio file"))
        elif os.path.abspath(p) not in seen_files:  # the same path named twice (a/b.mp3 and ./a/b.mp3) is one input
            seen_files.add(os.path.abspath(p))
            files.append(p)

    def walk(d: Path, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            notes.append(f"{d}: links to a folder already walked ({d.resolve()}); not walked again")
            return
        seen_dirs.add(key)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            errors.append(AudioError(d, f"cannot list folder ({e.strerror or type(e).__name__})"))
            return
        for entry in entries:
            q = Path(entry.path)
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as e:
                if q.suffix.lower() in AUDIO_EXTENSIONS:
                    errors.append(_stat_error(q, e))
                continue  # a broken link without an audio name is not an input
            if stat.S_ISDIR(est.st_mode) and entry.name == DATA_DIR:
                notes.append(f"{q}: songfeat serve's own folder (its index and uploads); not walked")
            elif stat.S_ISDIR(est.st_mode):
                walk(q, est)
            elif q.suffix.lower() in AUDIO_EXTENSIONS:
                take(q, est)

    failed_args: set[str] = set()
    for raw in paths:
        p = Path(raw)
        try:
            st = p.stat()
        except OSError as e:
            if os.path.abspath(p) in failed_args:  # named twice: one input, one error (as a file named twice is one)
                continue
            failed_args.add(os.path.abspath(p))
            err = _stat_error(p, e)
            errors.append(AudioError(p, "no such file or folder") if err.reason == "no such file" else err)
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(p, st)
        else:
            take(p, st)
    return files, errors, notes


def find_audio(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Expand files and folders (recursively) into audio files; return (audio, inputs that could not be taken).

    Kept for callers that only need the paths; `scan_inputs` also says why each input was refused.
    """
    files, errors, _ = scan_inputs(paths)
    return files, [Path(e.path) for e in errors]
