"""Batch hygiene on a generated corpus of bad and odd inputs: every input accounted for, only songfeat's lines on stderr.

The corpus is made here, in tmp_path, from the example clip and generated audio (nothing is committed).
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songfeat.analyze import analyze_many, time_limit
from songfeat.audio import capture_output, load_audio, scan_inputs
from songfeat.workers import run_jobs
from test_analyze import music  # the same pulsed chord as the analyze tests

SR = 44100
ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SLOW_HOOK = """
import os
if os.environ.get("SONGFEAT_TEST_SLOW_PREFIX"):  # test-only: files named so take an hour to decode
    import time
    import songfeat.audio as _a
    _orig = _a._soundfile_blocks
    def _slow(p, _orig=_orig):
        if p.name.startswith(os.environ["SONGFEAT_TEST_SLOW_PREFIX"]):
            time.sleep(3600)
        return _orig(p)
    _a._soundfile_blocks = _slow
"""


def wav_bytes(y: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def make_corpus(root: Path, example: Path) -> tuple[Path, list[Path], list[str]]:
    """Write the corpus; return (folder, the inputs the walk must account for, extra command-line inputs)."""
    d = root / "corpus"
    d.mkdir()
    inputs: list[Path] = []

    def put(name: str, data: bytes) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        inputs.append(p)
        return p

    mp3 = example.read_bytes()[:160_000]  # the first ~5 s of the example: short clips keep the test quick
    rng = np.random.default_rng(13)
    for pct in (0.1, 1, 5, 10, 25, 50, 75, 90):
        put(f"trunc_{pct:g}pct.mp3", mp3[: max(1, int(len(mp3) * pct / 100))])
    for k, n_flips in enumerate((10, 100, 1000, 10000)):
        b = bytearray(mp3)
        for i in rng.integers(0, len(b), n_flips):
            b[i] ^= 0xFF
        put(f"flipped_{n_flips}.mp3", bytes(b))
    put("zeroed_middle.mp3", mp3[:40_000] + b"\0" * 40_000 + mp3[80_000:])
    put("header_id3_only.mp3", mp3[:10])
    put("header_frame_only.mp3", mp3[:600])
    good = wav_bytes(music(3))
    put("header_wav_only.wav", good[:44])
    put("header_flac_only.flac", b"fLaC\x00\x00\x00\x22" + bytes(34))
    put("header_ogg_only.ogg", b"OggS\x00\x02" + bytes(22))
    shuffled = np.frombuffer(mp3, np.uint8).copy()
    rng.shuffle(shuffled)
    put("shuffled.mp3", shuffled.tobytes())
    put("mp3_named.wav", mp3)
    put("wav_named.mp3", good)
    put("page.mp3", b"<!doctype html><html><head><title>404 Not Found</title></head><body>Not found</body></html>\n" * 20)
    put("data.flac", json.dumps({"tracks": [{"id": i, "name": f"song {i}"} for i in range(200)]}).encode())
    put("notes.ogg", b"just some text, not audio at all\n" * 200)
    put("program.m4a", Path(sys.executable).read_bytes()[:65536])
    put("random.m4a", rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    put("random.opus", rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    put("empty.mp3", b"")
    claims = bytearray(wav_bytes(music(1)))  # a WAV whose RIFF and data sizes claim 2 GB
    claims[4:8] = struct.pack("<I", 0x7FFF_FFF0)
    k = claims.find(b"data")
    claims[k + 4:k + 8] = struct.pack("<I", 0x7FFF_FF00)
    put("claims_2gb.wav", bytes(claims))
    put("rate_1khz.wav", wav_bytes(music(3, 1000), 1000))
    put("rate_192khz.wav", wav_bytes(music(2, 192000), 192000))
    put("channels_8.wav", wav_bytes(np.stack([music(2, seed=c) for c in range(8)], axis=1)))
    put("bits_8.wav", wav_bytes(music(2), subtype="PCM_U8"))
    put("bits_24.flac", b"")  # replaced below by a real 24-bit FLAC
    sf.write(d / "bits_24.flac", music(2), SR, subtype="PCM_24")
    put("float_clipping.wav", wav_bytes(np.clip(music(2) * 40, -8, 8), subtype="FLOAT"))
    put("silence.wav", wav_bytes(np.zeros(3 * SR, np.float32)))
    put("dc_offset.wav", wav_bytes(np.full(3 * SR, 0.5, np.float32)))
    put("near_silence.wav", wav_bytes(music(3) * 1e-6, subtype="FLOAT"))
    put("too_short.wav", wav_bytes(music(0.3)))
    put("one_sample.wav", wav_bytes(np.array([0.5], np.float32)))
    put("white_noise.wav", wav_bytes((0.3 * rng.standard_normal(3 * SR)).astype(np.float32)))
    put("good.wav", good)
    put("good.ogg", b"")
    sf.write(d / "good.ogg", music(3), SR, format="OGG", subtype="VORBIS")
    put("UPPER.MP3", mp3)
    put("spaces and ünïcode.mp3", mp3)
    put("new\nline.mp3", b"not audio, and a newline in the name")  # its error line must stay one line
    put("x.mp3/inside.wav", wav_bytes(music(2, seed=5)))  # a folder named like audio is walked, not analysed
    (d / "readme.txt").write_text("not an input: no audio extension\n")
    # links: a loop pair, a self-loop, a broken link, a link to a file, a link back to an ancestor folder,
    # and a link to a folder outside the corpus (followed once)
    for name, target in (("loop_a.mp3", "loop_b.mp3"), ("loop_b.mp3", "loop_a.mp3"), ("self.mp3", "self.mp3"),
                         ("broken.mp3", "nowhere/gone.mp3"), ("link_to_good.wav", "good.wav")):
        os.symlink(target, d / name)
        inputs.append(d / name)
    os.symlink("..", d / "x.mp3" / "back_up")  # an ancestor: walking it again would loop
    outside = root / "outside"
    outside.mkdir()
    (outside / "elsewhere.wav").write_bytes(wav_bytes(music(2, seed=7)))
    os.symlink(outside, d / "linked_folder")
    inputs.append(d / "linked_folder" / "elsewhere.wav")
    os.mkfifo(d / "pipe.mp3")  # must never be opened: it would block
    inputs.append(d / "pipe.mp3")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "socket.wav"))
    sock.close()
    inputs.append(d / "socket.wav")
    locked = put("unreadable.wav", good)
    locked.chmod(0)  # unreadable for a normal user; root reads it anyway, so it must then give a result
    put("slow_decode.wav", wav_bytes(music(2, seed=9)))  # takes an hour under the test hook: the time limit ends it
    os.mkfifo(root / "explicit_pipe.mp3")
    extra = [str(root / "explicit_pipe.mp3"), "/dev/null", str(root / "no_such_file.mp3"), str(d / "good.wav")]
    return d, inputs, extra


def test_scan_accounts_for_links_and_special_files(tmp_path, example_clip):
    d, inputs, extra = make_corpus(tmp_path, example_clip)
    files, errors, notes = scan_inputs([d])
    assert sorted(map(str, files + [Path(e.path) for e in errors])) == sorted(map(str, inputs))
    reasons = {Path(e.path).name: e.reason for e in errors}
    assert "symlink loop" in reasons["loop_a.mp3"] and "symlink loop" in reasons["self.mp3"]
    assert "broken symlink" in reasons["broken.mp3"] and "FIFO" in reasons["pipe.mp3"] and "socket" in reasons["socket.wav"]
    assert len(notes) == 1 and "back_up" in notes[0] and "already walked" in notes[0]
    files, errors, _ = scan_inputs(extra)
    assert [f.name for f in files] == ["good.wav"]
    assert [e.reason.split(" (")[0] for e in errors] == ["is a FIFO", "is a character device, not an audio file", "no such file or folder"]


@pytest.mark.skipif(IS_ROOT, reason="runs as root, which may read any file: a permission error cannot be provoked")
def test_unreadable_file_and_folder_are_named(tmp_path):
    f = tmp_path / "locked.wav"
    f.write_bytes(wav_bytes(music(2)))
    f.chmod(0)
    sub = tmp_path / "closed"
    sub.mkdir()
    (sub / "a.wav").write_bytes(b"x")
    sub.chmod(0)
    try:
        files, errors, _ = scan_inputs([tmp_path])
        assert "cannot list folder" in {e.path: e.reason for e in errors}[str(sub)]
        out = list(analyze_many([f]))
        assert out[0].error == f"{f}: permission denied"
    finally:
        sub.chmod(0o755)


def test_permission_errors_are_named_even_as_root(tmp_path, monkeypatch):
    """The same two cases with the OS's refusal simulated, so this runs as root too (CI does)."""
    import errno

    import songfeat.audio as audio

    f = tmp_path / "locked.wav"
    f.write_bytes(wav_bytes(music(2)))
    sub = tmp_path / "closed"
    sub.mkdir()
    real_open, real_scandir = os.open, os.scandir

    def refuse(path, *a, **k):
        if str(path) in (str(f), str(sub)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return (real_open if a else real_scandir)(path, *a, **k)

    monkeypatch.setattr(audio.os, "open", refuse)
    monkeypatch.setattr(audio.os, "scandir", refuse)
    files, errors, _ = scan_inputs([tmp_path])
    assert [str(x) for x in files] == [str(f)] and [str(e) for e in errors] == [f"{sub}: cannot list folder (Permission denied)"]
    assert list(analyze_many([f]))[0].error == f"{f}: permission denied"


@pytest.mark.parametrize("command", ["analyze", "tags", "analysis"])
def test_an_unreadable_file_named_on_the_command_line_is_one_line(tmp_path, monkeypatch, command):
    """`songfeat analyze good.wav locked.wav`: click's own readability test refused the whole batch in its four-line usage
    error with status 2; the locked file is one `songfeat: error:` line, the good one is analysed, status 1 (refusal
    simulated, as above, so this runs as root too)."""
    import errno

    from typer.testing import CliRunner

    from songfeat.cli import app

    good, locked = tmp_path / "good.wav", tmp_path / "locked.wav"
    for f in (good, locked):
        f.write_bytes(wav_bytes(music(2)))
    real_open, real_access = os.open, os.access

    def refuse(path, *a, **k):
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(os, "access", lambda path, mode, **k: str(path) != str(locked) and real_access(path, mode, **k))
    inputs = [locked] if command == "analysis" else [good, locked]
    r = CliRunner().invoke(app, [command, *map(str, inputs), *(["--timeout", "0"] if command == "analyze" else [])])
    assert r.exit_code == 1 and "Usage:" not in r.output, r.output
    assert r.stderr.splitlines()[0] == f"songfeat: error: {locked}: permission denied", r.output
    assert (str(good) in r.stdout) == (command != "analysis")


def test_fuzz_corpus_every_input_accounted_for(tmp_path, example_clip):
    """`songfeat analyze <corpus> --format jsonl`: one result or one error per input, only songfeat lines on stderr."""
    d, inputs, extra = make_corpus(tmp_path, example_clip)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "SONGFEAT_TEST_SLOW_PREFIX": "slow_decode"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(d), *extra, "--format", "jsonl",
                        "--workers", "2", "--timeout", "20"], capture_output=True, text=True, env=env, timeout=240)
    seconds = time.monotonic() - t0
    expected = [str(x) for x in inputs] + extra
    expected.remove(str(d / "good.wav"))  # named twice (in the folder and on the command line): one input
    results = [json.loads(line)["path"] for line in p.stdout.splitlines()]
    lines = p.stderr.splitlines()
    foreign = [ln for ln in lines if not ln.startswith("songfeat: ")]
    errors = [ln for ln in lines if ln.startswith("songfeat: error: ")]
    print(f"\ncorpus: {len(expected)} inputs, {len(results)} results, {len(errors)} named errors, "
          f"{sum(ln.startswith('songfeat: warning: ') for ln in lines)} warnings, {len(foreign)} foreign stderr lines, "
          f"exit code {p.returncode}, {seconds:.1f} s")
    assert foreign == [], foreign[:10]
    assert "\x1b[" not in p.stderr  # no progress bar (stderr is not a terminal)
    for path in expected:
        n_err = sum(ln.startswith(f"songfeat: error: {path}: ".replace("\n", "\\n")) for ln in errors)
        assert results.count(path) + n_err == 1, (path, results.count(path), n_err)
    assert len(results) + len(errors) == len(expected), "a result or an error for something not in the corpus"
    assert p.returncode == 1
    assert lines[-1] == f"songfeat: {len(errors)} of {len(expected)} inputs failed"
    err = {ln[len("songfeat: error: "):].split(": ", 1)[0]: ln for ln in errors}
    assert "timed out" in err[str(d / "slow_decode.wav")]
    for name in ("good.wav", "good.ogg", "UPPER.MP3", "rate_1khz.wav", "rate_192khz.wav", "channels_8.wav", "bits_8.wav",
                 "link_to_good.wav", "x.mp3/inside.wav", "linked_folder/elsewhere.wav", "wav_named.mp3", "mp3_named.wav"):
        assert str(d / name) in results, name
    assert (str(d / "unreadable.wav") in results) == IS_ROOT
    for name, reason in (("pipe.mp3", "FIFO"), ("socket.wav", "socket"), ("loop_a.mp3", "symlink loop"),
                         ("broken.mp3", "broken symlink"), ("silence.wav", "silent"), ("empty.mp3", "empty"),
                         ("page.mp3", "not a readable audio file")):
        assert reason in err[str(d / name)], err[str(d / name)]
    assert "decoder reported" in p.stderr  # the byte-flipped mp3s: one summary line each, not libmpg123's own lines
    for path in results:
        assert sum(ln.startswith(f"songfeat: warning: {path}: decoder") for ln in lines) <= 1


def test_verbose_shows_the_decoders_own_lines(tmp_path, example_clip):
    b = bytearray(example_clip.read_bytes()[:160_000])
    for i in np.random.default_rng(0).integers(2000, len(b), 300):
        b[i] ^= 0xFF
    f = tmp_path / "flipped.mp3"
    f.write_bytes(bytes(b))
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(f), "--verbose"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert all(ln.startswith("songfeat: ") for ln in lines)
    summary = [ln for ln in lines if ln.startswith(f"songfeat: warning: {f}: decoder reported")]
    raw = [ln for ln in lines if ln.startswith(f"songfeat: {f}: decoder: ")]
    assert len(summary) == 1 and raw
    n = int(summary[0].split("decoder reported ")[1].split()[0])
    assert n == sum("error" in ln.lower() or "illegal" in ln.lower() for ln in raw)
    quiet = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(f)], capture_output=True, text=True, timeout=120)
    assert quiet.stderr.splitlines() == summary and json.loads(quiet.stdout) == json.loads(p.stdout)


def test_api_batch_returns_problems_and_prints_nothing(tmp_path, example_clip, capfd):
    b = bytearray(example_clip.read_bytes()[:160_000])
    for i in np.random.default_rng(1).integers(2000, len(b), 300):
        b[i] ^= 0xFF
    flipped, bad, ok = tmp_path / "flipped.mp3", tmp_path / "bad.mp3", tmp_path / "ok.wav"
    flipped.write_bytes(bytes(b))
    bad.write_text("<html></html>")
    ok.write_bytes(wav_bytes(music(2)))
    capfd.readouterr()
    for kwargs in ({}, {"workers": 2, "timeout": 60}):  # in this process, then in worker processes
        outs = list(analyze_many([flipped, bad, ok], **kwargs))
        assert [o.path for o in outs] == [str(flipped), str(bad), str(ok)]
        assert outs[0].features and len(outs[0].warnings) == 1 and "decoder reported" in outs[0].warnings[0]
        assert "dequantization" in outs[0].log or "error" in outs[0].log
        assert outs[1].error.startswith(f"{bad}: not a readable audio file") and outs[2].features and not outs[2].warnings
        captured = capfd.readouterr()
        assert captured.err == "" and captured.out == "", kwargs


def test_capture_keeps_native_output_and_lets_python_through(tmp_path, example_clip, capfd):
    b = bytearray(example_clip.read_bytes()[:160_000])
    for i in np.random.default_rng(2).integers(2000, len(b), 300):
        b[i] ^= 0xFF
    f = tmp_path / "flipped.mp3"
    f.write_bytes(bytes(b))
    with capture_output() as cap:
        print("python's own line", file=sys.stderr)
        load_audio(f)
    err = capfd.readouterr().err
    assert err == "python's own line\n"  # the decoder's lines are not on stderr, Python's are
    assert list(cap.logs) == [str(f)] and "error" in cap.logs[str(f)] and len(cap.warnings) == 1
    with pytest.warns(UserWarning, match="decoder reported"):  # outside a capture: one warning, no raw lines
        load_audio(f)
    assert capfd.readouterr().err == ""


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _die(code: int) -> int:
    if code:
        os._exit(code)
    return code


def _noisy(text: str) -> str:
    os.write(2, text.encode())
    os.write(1, b"stdout too\n")
    return text


def test_run_jobs_kills_overruns_and_keeps_going(capfd):
    t0 = time.monotonic()
    got = {r.index: r for r in run_jobs(_nap, [0.1, 60, 0.1, 0.2], workers=1, timeout=2)}
    assert time.monotonic() - t0 < 30
    assert [got[i].status for i in range(4)] == ["ok", "timeout", "ok", "ok"]
    assert "timed out" in got[1].value
    got = {r.index: r for r in run_jobs(_die, [0, 3], workers=2)}
    assert got[0].status == "ok" and got[1].status == "crashed" and "exit code 3" in got[1].value
    got = list(run_jobs(_noisy, ["native chatter\n"], workers=1))
    assert got[0].log == "native chatter\nstdout too\n"
    assert capfd.readouterr() == ("", "")


def test_time_limit_scales_with_long_audio():
    assert time_limit(120, None) == time_limit(120, 30) == 120
    assert time_limit(120, 3600) == 720 and time_limit(120, 10**9) == 120 * 18


def test_single_file_csv_has_its_path_and_a_failed_file_prints_nothing(tmp_path, example_clip):
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(example_clip), "--format", "csv"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.splitlines()[1].startswith(f"{example_clip},")
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    for fmt in ("json", "csv"):
        p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", str(bad), "--format", fmt],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and p.stdout == "" and p.stderr.startswith(f"songfeat: error: {bad}: ")


def test_build_reports_bad_inputs_and_keeps_stderr_clean(tmp_path, example_clip):
    """`songfeat build` over good, corrupt and special files: failures in report.csv, decoder noise summarised."""
    import pandas as pd

    from songfeat import features

    audio = tmp_path / "audio"
    audio.mkdir()
    ids = [f"T{n:05d}abcdefghijKLMNOP" for n in range(16)]
    for n, tid in enumerate(ids[:12]):  # more than SERIAL_MAX clips: the build runs in worker processes
        (audio / f"{tid}.wav").write_bytes(wav_bytes(music(1.5, seed=n)))
    b = bytearray(example_clip.read_bytes()[:160_000])
    for i in np.random.default_rng(3).integers(2000, len(b), 300):
        b[i] ^= 0xFF
    (audio / f"{ids[12]}.mp3").write_bytes(bytes(b))
    os.mkfifo(audio / f"{ids[13]}.mp3")
    os.symlink(f"{ids[14]}.mp3", audio / f"{ids[14]}.mp3")
    (audio / f"{ids[15]}.mp3").write_text("<html></html>")
    rows = [[tid, *[0.5] * 7, 120.0, -8.0, 0, 1, 4] for tid in ids]
    pd.DataFrame(rows, columns=["track_id", *features.LABEL_COLUMNS]).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "build", "--labels", str(tmp_path / "labels.csv"),
                        "--audio", str(audio), "--out", str(out), "-j", "2", "--no-descriptors"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    foreign = [ln for ln in p.stderr.splitlines() if not ln.startswith("songfeat: ")]
    assert foreign == [], foreign[:10]
    reasons = pd.read_csv(out / "report.csv").set_index("track_id")["reason"].to_dict()
    assert set(reasons) == set(ids[13:])
    assert "FIFO" in reasons[ids[13]] and "symlink loop" in reasons[ids[14]] and "not a readable" in reasons[ids[15]]
    assert sum("decoder reported" in ln for ln in p.stderr.splitlines()) == 1, p.stderr
    rep = json.loads((out / "report.json").read_text())
    assert [w["track_id"] for w in rep["warnings"]] == [ids[12]]
    # a rerun tries the three again, in worker processes as before: they fail again, the built clips' warnings stay
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "build", "--labels", str(tmp_path / "labels.csv"),
                        "--audio", str(audio), "--out", str(out), "-j", "2", "--no-descriptors"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "retried 3 that failed before, now built 0; 3 failed;" in p.stdout, p.stderr
    assert pd.read_csv(out / "report.csv").set_index("track_id")["reason"].to_dict() == reasons
    assert json.loads((out / "report.json").read_text())["warnings"] == rep["warnings"]


def _pid_then_sleep(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(3600)


def test_a_killed_batch_leaves_no_worker_behind(tmp_path, running):
    """SIGKILL the batch process while its worker is stuck: the worker must end too (it watches its batch)."""
    import signal

    pid_file = tmp_path / "worker.pid"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from test_hygiene import _pid_then_sleep; "
              "from songfeat.workers import run_jobs; list(run_jobs(_pid_then_sleep, [sys.argv[2]]))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent), str(pid_file)])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "the worker never started"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not running(worker):  # gone, or ended and waiting to be reaped by init
            return
        time.sleep(0.3)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its killed batch")


def test_tags_keeps_stderr_to_songfeat_lines(tmp_path):
    """`songfeat tags` on a cut-off WAV printed Python's own two-line SongfeatWarning (with a source line of audio.py)."""
    import soundfile as sf

    y = 0.3 * np.sin(2 * np.pi * 220 * np.arange(44100 * 4) / 44100)
    full = tmp_path / "full.wav"
    sf.write(full, y.astype(np.float32), 44100, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 44100 * 2])  # the header still promises 4 s; 2 s are there
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "tags", str(cut)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() and all(ln.startswith("songfeat: warning: ") for ln in p.stderr.splitlines()), p.stderr
    assert "cut off" in p.stderr and p.stdout.startswith(str(cut))


def test_songfeat_errors_survive_a_trip_between_processes():
    """A SongfeatError raised in a worker could not be unpickled in the parent (its __init__ takes two arguments), which
    broke the server's whole process pool; every error type must cross a process boundary whole."""
    import pickle

    from songfeat.errors import AudioError, CutOffAudioError, SongfeatError, WorkFailed
    from songfeat.output import OutputError

    for kind in (SongfeatError, AudioError, CutOffAudioError, OutputError, WorkFailed):
        e = pickle.loads(pickle.dumps(kind("/music/a.wav", "audio is silent")))
        assert type(e) is kind and (e.path, e.reason, str(e)) == ("/music/a.wav", "audio is silent", "/music/a.wav: audio is silent")
    assert str(pickle.loads(pickle.dumps(SongfeatError(None, "no file")))) == "no file"
    failed = ["/music/a.wav: audio is silent"]
    assert pickle.loads(pickle.dumps(WorkFailed("/music", "too few", failed))).failed == failed
