"""Audio loading: every format, channel layout and rate to mono float32 at 44.1 kHz; bad files fail clearly."""
from __future__ import annotations

import gc
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songfeat.audio import (SAMPLE_RATE, AudioError, audio_info, capture_output, check_first_window, find_audio, iter_windows,
                            load_audio, sound_peak)


def sine(freq: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return y if channels == 1 else np.stack([y] * channels, axis=1)


def peak_hz(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.argmax(spec) * sr / y.size)


@pytest.mark.parametrize("ext,fmt,subtype", [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"),
                                              ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")])
def test_soundfile_formats_decode_to_mono_44k(tmp_path, ext, fmt, subtype):
    path = tmp_path / f"a.{ext}"
    sf.write(path, sine(440, 2.0, SAMPLE_RATE, channels=2), SAMPLE_RATE, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size / SAMPLE_RATE - 2.0) < 0.08  # mp3 adds encoder padding
    assert abs(peak_hz(y) - 440) < 3


def test_m4a_goes_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "a.m4a"
    sr = 48000
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "stereo"
        y = sine(1000, 2.0, sr, channels=2)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y.T), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    assert audio_info(path).decoder == "pyav"
    out = load_audio(path)
    assert abs(out.size / SAMPLE_RATE - 2.0) < 0.1
    assert abs(peak_hz(out) - 1000) < 5


def test_both_decoders_downmix_alike(tmp_path):
    # PyAV's own mono downmix kept the channels' sum at 1/sqrt(2): stereo read through PyAV (.m4a, .opus, or any file
    # soundfile cannot open by name) came out 3 dB louder than the same audio read by soundfile
    pytest.importorskip("av")
    rng = np.random.default_rng(0)
    y = np.stack([sine(300, 2.0, SAMPLE_RATE), 0.5 * rng.standard_normal(2 * SAMPLE_RATE).astype(np.float32)], axis=1)
    wav = tmp_path / "st.wav"
    sf.write(wav, 0.4 * y, SAMPLE_RATE, subtype="FLOAT")
    renamed = tmp_path / "st.m4a"  # the same bytes; the name sends it to PyAV
    renamed.write_bytes(wav.read_bytes())
    assert (audio_info(wav).decoder, audio_info(renamed).decoder) == ("soundfile", "pyav")
    np.testing.assert_allclose(load_audio(renamed), load_audio(wav), atol=1e-6)


def test_stereo_is_averaged(tmp_path):
    left = sine(300, 1.5, SAMPLE_RATE)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, -left], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert np.abs(load_audio(path)).max() < 1e-6  # opposite channels cancel: a true average


def test_8khz_mono_and_96khz_multichannel_resample(tmp_path):
    lo = tmp_path / "lo.wav"
    sf.write(lo, sine(440, 3.0, 8000), 8000)
    y = load_audio(lo)
    assert abs(y.size - 3 * SAMPLE_RATE) < 50 and abs(peak_hz(y) - 440) < 3
    hi = tmp_path / "hi.wav"
    sf.write(hi, sine(5000, 2.0, 96000, channels=6), 96000, subtype="PCM_24")
    y = load_audio(hi)
    assert abs(y.size - 2 * SAMPLE_RATE) < 50 and abs(peak_hz(y) - 5000) < 5


def test_windows_cover_the_file_exactly(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, sine(220, 75.0, 22050), 22050)
    sizes = [w.size for w in iter_windows(path, seconds=30)]
    assert sizes[:2] == [30 * SAMPLE_RATE] * 2
    assert abs(sum(sizes) - 75 * SAMPLE_RATE) < 50


def test_max_seconds(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, sine(220, 5.0, SAMPLE_RATE), SAMPLE_RATE)
    assert load_audio(path, max_seconds=1.5).size == int(1.5 * SAMPLE_RATE)


@pytest.mark.parametrize("case", ["missing", "empty", "text", "directory", "nan", "huge", "rate"])
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path = tmp_path / "notes.mp3"
        path.write_text("this is not audio\n" * 100)
    elif case == "directory":
        path.mkdir()
    elif case == "nan":
        y = sine(440, 1.0, SAMPLE_RATE)
        y[100] = np.nan
        sf.write(path, y, SAMPLE_RATE, subtype="FLOAT")
    elif case == "huge":  # finite, but far past float audio's ±1: once analysed to NaN features without a word
        sf.write(path, sine(440, 1.0, SAMPLE_RATE) * 1e20, SAMPLE_RATE, subtype="FLOAT")
    elif case == "rate":  # a damaged header saying 1 Hz: soxr failed with 'std::bad_alloc'
        sf.write(path, sine(440, 1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
        data = bytearray(path.read_bytes())
        data[24:32] = (1).to_bytes(4, "little") + (2).to_bytes(4, "little")  # fmt chunk: rate, bytes per second
        path.write_bytes(bytes(data))
    with pytest.raises(AudioError) as err:
        load_audio(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert {"missing": "no such file", "empty": "empty", "text": "not a readable audio file",
            "directory": "directory", "nan": "NaN", "huge": "dBFS", "rate": "sample rate 1 Hz"}[case] in msg


@pytest.mark.parametrize("kind", ["float wav", "mp3", "m4a"])
def test_samples_far_past_one_are_blamed_on_what_the_file_holds(tmp_path, monkeypatch, kind):
    """A corrupt mp3 that libmpg123 decoded to +84 dBFS was refused as "integer samples stored as float": true of a
    float WAV, not of a compressed file. (MAX_PEAK is lowered so that ordinary files cross it.)"""
    import shutil

    from songfeat import audio

    monkeypatch.setattr(audio, "MAX_PEAK", 0.01)
    path = tmp_path / f"a.{kind.split()[-1]}"
    if kind == "float wav":
        sf.write(path, sine(440, 2.0, SAMPLE_RATE), SAMPLE_RATE, subtype="FLOAT")
    elif kind == "mp3":
        shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "fma-000002.mp3", path)
    else:
        _write_m4a(path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    if kind == "float wav":
        assert "dBFS), but float audio lives within ±1: integer samples stored as float, or not audio" in str(err.value)
    else:
        assert str(err.value).startswith(f"{path}: decoded sample values reach ")
        assert str(err.value).endswith("dBFS), far past ±1: corrupt data the decoder could not make sense of")


def test_float_overshoot_is_still_audio(tmp_path):
    path = tmp_path / "hot.wav"  # a float master peaking at +6 dBFS is a recording, not an error
    sf.write(path, sine(440, 1.0, SAMPLE_RATE) * 4.0, SAMPLE_RATE, subtype="FLOAT")  # sine() peaks at 0.5
    assert np.abs(load_audio(path)).max() > 1.5


def test_truncated_mp3_keeps_what_decodes(tmp_path, example_clip):
    data = example_clip.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="shorter than its mp3 header says"):  # one warning, not libmpg123's own lines
        y = load_audio(cut)
    assert 5 * SAMPLE_RATE < y.size < 15 * SAMPLE_RATE


def _damage(path: Path, at: float, data: bytes) -> None:
    """Overwrite `path`'s bytes from fraction `at` of its length with `data` (a stretch an interrupted download zeroed)."""
    b = bytearray(path.read_bytes())
    start = int(len(b) * at)
    b[start:start + len(data)] = data
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("fmt,damage", [("MP3", "zeros"), ("MP3", "noise"), ("FLAC", "zeros")])
def test_damage_part_way_is_read_past(tmp_path, fmt, damage):
    # libmpg123 gives up resyncing after 1 KB of damage (libsndfile's FLAC decoder at once): a 4-KB hole 6 s into a 60-s
    # mp3 left 4.5 s to analyse, the other 55 s lost with "decoding stopped" (or none: random bytes ended it quietly, as
    # if the file ended there); PyAV now reads on past it, as players do (noise it decodes out of the damage, far past
    # ±1, is dropped rather than refusing the file)
    path = tmp_path / f"a.{fmt.lower()}"
    rng = np.random.default_rng(0)
    y = (sine(440, 20.0, SAMPLE_RATE) + 0.05 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32)
    sf.write(path, y, SAMPLE_RATE, format=fmt)
    whole = load_audio(path).size
    _damage(path, 0.2, bytes(4096) if damage == "zeros" else rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with capture_output() as cap:
        got = load_audio(path)
    assert got.size > 0.9 * whole, (got.size / SAMPLE_RATE, cap.warnings)
    assert np.all(np.isfinite(got))  # a frame or two at the damage may still glitch, as libmpg123's own skips do
    assert any(w.startswith(f"{path}: soundfile stopped at ") and ", on damaged or missing data; PyAV read on past it "
               "to " in w for w in cap.warnings), cap.warnings


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_a_spike_decoded_right_after_damage_is_dropped(tmp_path, seed):
    # the frame or two PyAV decodes right after a corrupt packet (their bit reservoir lay in the damage) rang to +21 and
    # +28 dBFS in a file peaking at -3 dBFS, under the +40 dBFS (MAX_PEAK) that was dropped: a click that dominated the
    # window's loudness and spectrum
    path = tmp_path / "a.mp3"
    rng = np.random.default_rng(seed)
    sf.write(path, (sine(440, 20.0, SAMPLE_RATE) + 0.05 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32),
             SAMPLE_RATE, format="MP3")
    _damage(path, 0.2, bytes(4096))
    with capture_output() as cap:
        got = load_audio(path)
    assert got.size > 19 * SAMPLE_RATE and np.abs(got).max() < 2.0, (np.abs(got).max(), cap.warnings)


def test_a_spike_is_past_one_and_far_past_the_audio_before_it():
    from songfeat.audio import _glitch

    assert _glitch(10.9, 0.72) and _glitch(1.6, 0.7)
    assert not _glitch(1.3, 0.9)  # a hot master's overs, a few dB past what came before
    assert not _glitch(0.9, 0.1)  # a loud entrance within ±1
    assert not _glitch(5.0, 0.0)  # nothing before it to compare with: kept


def test_ogg_pages_lost_part_way_are_said(tmp_path):
    # Ogg's decoders drop a page whose checksum fails and go on at the next good one, silently: 2 KB of random bytes in
    # an 8-s low-bitrate Vorbis file (4-KB pages of ~2.5 s each) lost two pages, 5.7 s, and analysed the 2.3 s left
    # (libsndfile even counts its length from the first page it can read); the last page's granule says 8 s
    path = tmp_path / "a.ogg"
    sf.write(path, sine(440, 8.0, SAMPLE_RATE), SAMPLE_RATE, format="OGG")
    _damage(path, 0.5, np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with capture_output() as cap:
        got = load_audio(path)
    assert 1 * SAMPLE_RATE < got.size < 7 * SAMPLE_RATE
    assert [w for w in cap.warnings if "Ogg" in w] == [
        f"{path}: holds {got.size / SAMPLE_RATE:.1f} s of audio but its Ogg stream's last page says 8.0 s: "
        f"{8.0 - got.size / SAMPLE_RATE:.1f} s were lost in pages damaged part-way (skipped); analysed the audio that is "
        "there"], cap.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        sf.write(path, sine(440, 8.0, SAMPLE_RATE), SAMPLE_RATE, format="OGG")
        load_audio(path)


def test_a_chained_ogg_is_read_whole_without_a_damage_warning(tmp_path):
    # Ogg files joined end to end (`cat a.ogg b.ogg`, a radio rip) are one valid chained file: libsndfile decoded its
    # first link alone (3 of 8 s), silently, and the lost-pages check then took the last link's 5 s for the file's
    # length and called the file damaged
    links = []
    for k, seconds in enumerate((3.0, 5.0)):
        link = tmp_path / f"link{k}.ogg"
        sf.write(link, sine(220.0 * (k + 1), seconds, SAMPLE_RATE), SAMPLE_RATE, format="OGG")
        links.append(link.read_bytes())
    path = tmp_path / "chain.ogg"
    path.write_bytes(b"".join(links))
    with capture_output() as cap:
        got = load_audio(path)
    assert abs(got.size / SAMPLE_RATE - 8.0) < 0.05 and cap.warnings == []


def test_damage_inside_the_part_read_is_said(tmp_path):
    # a caller reading only a file's start (tags: its first 30 s) stopped the decoder before it warned: the damage PyAV
    # read on past was said by analyze, never by tags
    path = tmp_path / "a.mp3"
    rng = np.random.default_rng(0)
    sf.write(path, (sine(440, 20.0, SAMPLE_RATE) + 0.05 * rng.standard_normal(20 * SAMPLE_RATE)).astype(np.float32),
             SAMPLE_RATE, format="MP3")
    _damage(path, 0.2, bytes(4096))
    with capture_output() as cap:
        got = load_audio(path, max_seconds=10.0)
    assert got.size == 10 * SAMPLE_RATE
    assert any(w.startswith(f"{path}: soundfile stopped at 3.0 s ") and re.search(r"PyAV read on past it to 1[01]\.\d s$", w)
               for w in cap.warnings), cap.warnings  # as far as it read: the blocks it was given reach past 10 s


def test_corrupt_packets_in_an_m4a_are_skipped(tmp_path):
    # PyAV stopped at its first corrupt packet: an m4a with 2 KB of damage a third of the way in lost the rest
    pytest.importorskip("av")
    path = tmp_path / "a.m4a"
    _write_m4a(path, seconds=8.0)
    _damage(path, 1 / 3, np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with capture_output() as cap:
        got = load_audio(path)
    assert got.size > 7 * SAMPLE_RATE, cap.warnings
    assert any(w.startswith(f"{path}: decoder reported ") and "corrupt frames skipped" in w for w in cap.warnings)


def test_cut_off_wav_says_so(tmp_path):
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    sf.write(whole, sine(440, 10.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still promises 10 s; libsndfile reads the 5 s quietly
    with pytest.warns(UserWarning, match=r"cut\.wav: holds 5\.0 s of audio but its header says 10\.0 s"):
        y = load_audio(cut)
    assert y.size == pytest.approx(5 * SAMPLE_RATE, abs=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        load_audio(whole)


def test_a_constant_offset_alone_is_silence(tmp_path):
    path = tmp_path / "dc.wav"  # a DC level is not sound: it once read 'F major, -34 dB' from window leakage
    sf.write(path, np.full(3 * SAMPLE_RATE, 0.3, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent"):
        check_first_window(path, load_audio(path))
    assert sound_peak(np.full(10, 0.3, dtype=np.float32) + sine(440, 10 / SAMPLE_RATE, SAMPLE_RATE)) > 0


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_a_constant_offset_at_another_rate_is_silence_too(tmp_path, rate):
    # resampled to 44.1 kHz, a DC-only file rings at both ends (the resampler starts from zeros), which passed for
    # sound: it was analysed into a key and a loudness (the ends' ringing stays within the offset, so it is still allowed)
    path = tmp_path / "dc.wav"
    sf.write(path, np.full(3 * rate, 0.3, dtype=np.float32), rate, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):
        check_first_window(path, load_audio(path))
    tone = np.zeros(3 * rate, dtype=np.float32)
    tone[rate: rate + rate // 10] = 0.1 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)  # 0.1 s of sound
    sf.write(path, tone, rate, subtype="FLOAT")
    check_first_window(path, load_audio(path))  # a short sound inside the file still counts


@pytest.mark.parametrize("rate", [SAMPLE_RATE, 8000])
@pytest.mark.parametrize("at", ["start", "end"])
def test_a_sound_at_the_very_start_or_end_of_silence_counts(tmp_path, rate, at):
    # the silence check skipped each window's first and last 20 ms (resampler ringing of a constant), so a 2-s file
    # whose only sound is a 200-sample click at t=0 was refused as "audio is silent"; ringing stays within the offset,
    # so an excursion at the ends past 1.5 times it is sound (the DC-only files above are still silent)
    path = tmp_path / "click.wav"
    y = np.zeros(2 * rate, dtype=np.float32)
    click = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(200) / SAMPLE_RATE).astype(np.float32)[: 200 * rate // SAMPLE_RATE]
    if at == "start":
        y[: click.size] = click
    else:
        y[-click.size:] = click
    sf.write(path, y, rate, subtype="FLOAT")
    check_first_window(path, load_audio(path))
    assert sound_peak(y) > 0.1
    with pytest.raises(AudioError, match="silent"):  # a ringing-sized excursion on a DC level is still no sound
        check_first_window(path, np.r_[np.zeros(100, np.float32), np.full(2 * SAMPLE_RATE, 0.3, np.float32)])


def test_garbage_after_a_valid_header(tmp_path, example_clip):
    junk = tmp_path / "junk.mp3"
    rng = np.random.default_rng(0)
    junk.write_bytes(example_clip.read_bytes()[:4096] + rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    try:
        y = load_audio(junk)
    except AudioError as e:
        assert str(e).startswith(str(junk))
    else:
        assert y.dtype == np.float32 and np.all(np.isfinite(y))


def test_find_audio_recurses_and_reports_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "a/readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    found, missing = find_audio([tmp_path / "a", tmp_path / "nope.mp3"])
    assert [p.name for p in found] == ["y.flac", "x.wav"] or sorted(p.name for p in found) == ["x.wav", "y.flac"]
    assert missing == [tmp_path / "nope.mp3"]


@pytest.mark.parametrize("seconds, used", [(25.0, [True]), (38.0, [True, False]), (40.0, [True, True]), (72.0, [True, True, True]),
                                           (62.0, [True, True, False])])
def test_learned_windows_leave_out_only_a_short_tail(seconds, used):
    """A trailing window under MIN_TAIL_SECONDS is left out of the learned features when a full window exists; a short
    clip's only window is always used. Analysis and the training records both ask `learned_window`."""
    from songfeat.audio import MIN_TAIL_SECONDS, WINDOW_SECONDS, learned_window

    n = int(seconds * SAMPLE_RATE)
    sizes = [min(int(WINDOW_SECONDS * SAMPLE_RATE), n - i) for i in range(0, n, int(WINDOW_SECONDS * SAMPLE_RATE))]
    got, before = [], False
    for size in sizes:
        got.append(learned_window(size, SAMPLE_RATE, before))
        before = before or got[-1]
    assert got == used, (seconds, MIN_TAIL_SECONDS, sizes)


def test_zero_channels_and_almost_a_second_are_named_plainly(tmp_path):
    # a header declaring 0 channels failed inside libavcodec ("avcodec_open2 ... returned 22"); 0.999 s read
    # "too short (1.00 s; need at least 1 s)"
    import struct

    fmt = struct.pack("<HHIIHH", 1, 0, 44100, 0, 0, 16)
    data = b"\0" * 1000
    zero = tmp_path / "zero_ch.wav"
    zero.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                     + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    with pytest.raises(AudioError, match="header declares 0 audio channels"):
        load_audio(zero)
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * sine(440, 0.9995, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"too short \(0\.999 s; need at least 1 s\)"):
        check_first_window(short, load_audio(short))
    one = tmp_path / "one.wav"  # a single sample read "too short (0 s; ...)"
    sf.write(one, np.full(1, 0.5, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"too short \(1 sample, under 1 ms; need at least 1 s\)"):
        check_first_window(one, load_audio(one))


def _write_m4a(path, seconds: float = 2.0, sr: int = 44100) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sine(1000, seconds, sr, channels=2).T), format="fltp",
                                           layout="stereo")
        frame.sample_rate = sr
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


def test_a_wrong_extension_is_no_corrupt_frame(tmp_path):
    # an .m4a named .mp3: libmpg123 (the first probe, by the name) searched it for an MPEG header and said so; that
    # line was counted as 'decoder reported 1 error (corrupt frames skipped)' though PyAV then read every frame
    pytest.importorskip("av")
    path = tmp_path / "song.mp3"
    _write_m4a(path)
    with capture_output() as cap:
        assert audio_info(path).decoder == "pyav"
        y = load_audio(path)
    assert abs(y.size / SAMPLE_RATE - 2.0) < 0.1
    assert cap.warnings == [] and cap.logs == {}


def test_a_refused_or_abandoned_stream_leaves_no_file_open(tmp_path):
    # the decoder generator was closed by the garbage collector after the file's decoder log, and its close opened a new
    # temporary file for that log which nothing closed ('ResourceWarning: unclosed file'), per NaN file and per
    # load_audio(max_seconds): the decoder's last words went nowhere, and a descriptor stayed open until collection
    nan, ok = tmp_path / "nan.wav", tmp_path / "ok.wav"
    y = sine(440, 2.0, SAMPLE_RATE)
    y[100] = np.nan
    sf.write(nan, y, SAMPLE_RATE, subtype="FLOAT")
    sf.write(ok, sine(440, 3.0, SAMPLE_RATE), SAMPLE_RATE)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with pytest.raises(AudioError, match="NaN"):
                load_audio(nan)
            load_audio(ok, max_seconds=1.0)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


def _wav_with_sizes(path, riff: int, data: int, seconds: float = 3.0) -> None:
    """A 16-bit WAV whose RIFF and data size fields are set to the given values (the samples are all there)."""
    import io
    import struct

    buf = io.BytesIO()
    sf.write(buf, sine(440, seconds, SAMPLE_RATE), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    b = bytearray(buf.getvalue())
    b[4:8] = struct.pack("<I", riff)
    k = b.find(b"data")
    b[k + 4:k + 8] = struct.pack("<I", data)
    path.write_bytes(bytes(b))


def test_a_streamed_wav_promises_no_length(tmp_path):
    # ffmpeg writing WAV to a pipe leaves both sizes at 0xFFFFFFFF ('not known'): that read as a header promising
    # 48695 s, and every such file was warned about as 'cut off?'
    path = tmp_path / "piped.wav"
    _wav_with_sizes(path, 0xFFFFFFFF, 0xFFFFFFFF)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = load_audio(path)
    assert y.size == pytest.approx(3 * SAMPLE_RATE, abs=2)


def test_a_wav_whose_header_was_never_finished_is_read(tmp_path):
    # a recorder killed before it wrote the sizes leaves them at 0: libsndfile reads no frames ('no audio frames
    # decoded', the recording refused); PyAV reads the data to the end of the file
    pytest.importorskip("av")
    path = tmp_path / "unfinished.wav"
    _wav_with_sizes(path, 0, 0)
    y = load_audio(path)
    assert y.size == pytest.approx(3 * SAMPLE_RATE, abs=2)
    assert abs(peak_hz(y) - 440) < 3
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0, np.float32), SAMPLE_RATE, format="WAV")
    assert load_audio(header_only).size == 0  # nothing after the header: still nothing (refused as 'no audio frames')


def test_a_served_librarys_own_folder_is_not_walked(tmp_path):
    # `analyze library/` took serve's stored uploads (library/.songfeat/uploads/*.mp3) for library tracks
    from songfeat.audio import scan_inputs

    (tmp_path / ".songfeat" / "uploads").mkdir(parents=True)
    (tmp_path / ".songfeat" / "uploads" / "up.wav").write_bytes(b"RIFF")
    (tmp_path / "song.wav").write_bytes(b"RIFF")
    files, errors, notes = scan_inputs([tmp_path])
    assert files == [tmp_path / "song.wav"] and not errors
    assert notes == [f"{tmp_path / '.songfeat'}: songfeat serve's own folder (its index and uploads); not walked"]
    files, _, _ = scan_inputs([tmp_path / ".songfeat"])  # named, it is walked
    assert files == [tmp_path / ".songfeat" / "uploads" / "up.wav"]


def _write_ogg_or_webm(path, seconds: float = 12.0) -> None:
    """A stereo tone in an Ogg (Vorbis or Opus, by the suffix) or, through PyAV, a WebM (Opus) file."""
    rate = 48000
    y = sine(440, seconds, rate, channels=2)
    if path.suffix == ".webm":
        av = pytest.importorskip("av")
        with av.open(str(path), "w", format="webm") as c:
            s = c.add_stream("libopus", rate=rate, layout="stereo")
            for i in range(0, len(y), 960):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[i:i + 960].T), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, i
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode(None):
                c.mux(pkt)
        return
    subtype = "OPUS" if path.suffix == ".opus" else "VORBIS"
    with sf.SoundFile(path, "w", rate, 2, format="OGG", subtype=subtype) as f:
        for i in range(0, len(y), 4096):  # libsndfile's Vorbis encoder crashed on one large write
            f.write(y[i:i + 4096])


@pytest.mark.parametrize("ext,says", [("ogg", "its Ogg stream has no end page"), ("opus", "its Ogg stream has no end page"),
                                      ("webm", r"its header says 12\.0 s")])
def test_cut_off_ogg_opus_and_webm_say_so(tmp_path, ext, says):
    # Ogg states no length up front (decoders take the last page's), so a cut-off .ogg/.opus decoded quietly to its
    # break; a WebM's Duration was read but never compared with what decoded
    whole, cut = tmp_path / f"whole.{ext}", tmp_path / f"cut.{ext}"
    _write_ogg_or_webm(whole)
    data = whole.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        n = load_audio(whole).size
    assert n == pytest.approx(12 * SAMPLE_RATE, abs=SAMPLE_RATE // 10)
    for keep in (len(data) // 2, data.rfind(b"OggS") if ext != "webm" else len(data) * 2 // 3):  # mid-page, page edge
        cut.write_bytes(data[:keep])
        with pytest.warns(UserWarning, match=rf"cut\.{ext}: holds \d+\.\d s of audio but {says} \(cut off\?\); analysed "
                                             "the audio that is there"):
            y = load_audio(cut)
        assert 3 * SAMPLE_RATE < y.size < n


@pytest.mark.parametrize("ext", ["wav", "m4a"])
def test_channels_that_cancel_are_named_in_the_silence_error(tmp_path, ext):
    # one channel the other inverted: the mono mix songfeat analyses is silent, and the error said only 'audio is
    # silent' of a file that plays loud
    path = tmp_path / f"antiphase.{ext}"
    y = sine(440, 3.0, SAMPLE_RATE)
    if ext == "wav":
        sf.write(path, np.stack([y, -y], axis=1), SAMPLE_RATE, subtype="PCM_16")
    else:
        av = pytest.importorskip("av")
        with av.open(str(path), "w", format="ipod") as c:
            s = c.add_stream("alac", rate=SAMPLE_RATE, layout="stereo")  # lossless: the channels still cancel exactly
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.stack([y, -y])), format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            for pkt in [*s.encode(frame), *s.encode(None)]:
                c.mux(pkt)
    with pytest.raises(AudioError, match=rf"antiphase\.{ext}: audio is silent once its channels are averaged to mono, "
                                         r"which songfeat analyses: they cancel out \(one is the other with its polarity"):
        check_first_window(path, load_audio(path))
    sf.write(path.with_suffix(".wav"), np.zeros((3 * SAMPLE_RATE, 2), dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"audio is silent \(peak below -90 dBFS"):  # silence in both: as before
        check_first_window(path.with_suffix(".wav"), load_audio(path.with_suffix(".wav")))

def test_one_faint_channel_beside_a_silent_one_is_not_said_to_cancel(tmp_path):
    """A channel just above the silence floor beside a silent one averages to a silent mix without cancelling anything:
    the error said 'they cancel out (one is the other with its polarity inverted?)' of it."""
    path = tmp_path / "faint-left.wav"
    y = sine(440, 3.0, SAMPLE_RATE) / np.abs(sine(440, 3.0, SAMPLE_RATE)).max() * 10 ** (-87 / 20)
    sf.write(path, np.stack([y, np.zeros_like(y)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"faint-left\.wav: audio is silent \(peak below -90 dBFS"):
        check_first_window(path, load_audio(path))
