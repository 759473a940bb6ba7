"""analyze: Spotify's JSON shape and scale from audio; bad input gives one-line errors; memory stays bounded."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import songfeat
from songfeat import features
from songfeat.analyze import analyze, analyze_many, content_id
from songfeat.errors import SongfeatError

SR = 44100
SPOTIFY_ID = "4uLU6hMCjMI75M1A2tKUQC"


def write(path, y, sr=SR, subtype="PCM_16"):
    sf.write(path, y, sr, subtype=subtype)
    return path


def music(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A pulsed chord with a little noise: enough structure for every descriptor."""
    t = np.arange(int(seconds * sr)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
    pulse = (np.mod(t, 0.5) < 0.1).astype(np.float32)
    rng = np.random.default_rng(seed)
    return (0.4 * chord * (0.3 + 0.7 * pulse) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def example_result(example_clip):
    return analyze(example_clip)


def test_learned_features_do_not_follow_the_files_bandwidth(tmp_path, example_clip, example_result):
    """The same recording as a 22.05-kHz file (nothing above 11 kHz, like a low-bitrate mp3) reads as the original:
    every input of the shipped model stops at 8 kHz. (With the full-band MFCC summary the previous bundle read, this
    copy's valence moved by 0.06, and a 16-kHz low-pass moved full-band clips' acousticness by 0.11 on average.)"""
    import soundfile as sf
    import soxr

    y, sr = sf.read(example_clip, dtype="float32", always_2d=True)
    copy = tmp_path / "example_22k.wav"
    sf.write(copy, soxr.resample(y, sr, 22050), 22050, subtype="FLOAT")
    r = analyze(copy)
    for name in features.LEARNED:
        assert abs(r[name] - example_result[name]) < 0.01, (name, r[name], example_result[name])


def test_spotify_shape_and_ranges(example_result):
    r = example_result
    assert list(r)[: len(features.SPOTIFY_KEYS)] == list(features.SPOTIFY_KEYS)
    assert r["type"] == "audio_features"
    for name in features.LEARNED:
        assert 0.0 <= r[name] <= 1.0, name
    assert -60 <= r["loudness"] <= 0 and 0 < r["tempo"] < 250
    assert r["key"] in range(-1, 12) and r["mode"] in (0, 1) and r["time_signature"] in range(3, 8)
    assert abs(r["duration_ms"] - 29977) < 30
    assert isinstance(r["tempo_alternatives"], list) and 0 <= r["tempo_confidence"] <= 1
    json.dumps(r, allow_nan=False)  # strict JSON


def test_key_names_and_camelot_codes():
    # The Camelot wheel as DJ software prints it: relative keys share a number, one step is a fifth.
    assert features.camelot(0, 1) == "8B" and features.camelot(9, 0) == "8A"  # C major, A minor
    assert features.camelot(7, 1) == "9B" and features.camelot(5, 1) == "7B"  # G (a fifth up), F (a fifth down)
    assert features.camelot(0, 0) == "5A" and features.camelot(6, 1) == "2B" and features.camelot(8, 0) == "1A"
    codes = {features.camelot(k, m) for k in range(12) for m in (0, 1)}
    assert len(codes) == 24
    for k in range(12):  # a major key and its relative minor (three semitones down) share a number
        assert features.camelot(k, 1)[:-1] == features.camelot((k - 3) % 12, 0)[:-1]
    assert features.key_name(1, 0) == "C# minor" and features.key_name(11, 1) == "B major"
    assert features.key_name(-1, 1) is None and features.camelot(-1, 0) is None


def test_output_names_its_key(example_result):
    r = example_result
    assert r["key_name"] == features.key_name(r["key"], r["mode"])
    assert r["camelot"] == features.camelot(r["key"], r["mode"])


def test_example_agrees_with_its_echo_nest_tempo(example_result):
    """FMA track 2's Echo Nest tempo is 165.9 BPM: we must give it or expose it as the half/double alternative."""
    ref = 165.922
    candidates = [example_result["tempo"], *example_result["tempo_alternatives"]]
    assert any(abs(c - ref) / ref < 0.04 for c in candidates), candidates


def test_readme_example_figures_are_the_bundled_models(example_result):
    """The README quotes the example clip's features; they must be what the shipped model gives today."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    para = readme[readme.index("For the example clip (FMA track 2"):][:700]
    quoted = dict(re.findall(r"(energy|danceability|acousticness|instrumentalness|liveness|speechiness|valence) (\d\.\d\d) \(", para))
    assert len(quoted) == 7, para
    for name, v in quoted.items():
        assert abs(example_result[name] - float(v)) <= 0.005 + 1e-9, (name, v, example_result[name])
    assert f"{example_result['tempo']:.1f} BPM" in para


def test_ids_hash_or_spotify(tmp_path, example_clip, example_result):
    assert example_result["id"] == content_id(example_clip) and len(example_result["id"]) == 22
    assert example_result["uri"] == f"songfeat:track:{example_result['id']}" and example_result["track_href"] is None
    named = tmp_path / f"{SPOTIFY_ID}.mp3"
    shutil.copy(example_clip, named)
    r = analyze(named)
    assert r["id"] == SPOTIFY_ID and r["uri"] == f"spotify:track:{SPOTIFY_ID}"
    assert r["track_href"].endswith(SPOTIFY_ID) and r["analysis_url"].endswith(SPOTIFY_ID)
    assert {k: r[k] for k in features.LEARNED} == {k: example_result[k] for k in features.LEARNED}


def test_package_level_api(example_clip, example_result):
    assert songfeat.analyze(example_clip) == example_result


def test_every_public_name_is_listed_documented_and_typed():
    """Each name of `songfeat.__all__` is in dir(songfeat) (what help() and tab completion read: the lazily imported
    ones were missing), has a docstring, and annotates every parameter and its return."""
    import inspect

    for name in songfeat.__all__:
        assert name in dir(songfeat), name
        obj = getattr(songfeat, name)
        if name == "__version__":
            continue
        assert (inspect.getdoc(obj) or "").strip(), name
        sig = inspect.signature(obj)
        missing = [p for p in sig.parameters if sig.parameters[p].annotation is inspect.Parameter.empty]
        assert not missing and (inspect.isclass(obj) or sig.return_annotation is not inspect.Signature.empty), name


def test_analyze_many_takes_a_lone_path(example_clip, example_result):
    """analyze_many("song.mp3") went through the str letter by letter: one "s: no such file" Outcome per character."""
    for path in (str(example_clip), example_clip):
        outs = list(analyze_many(path))
        assert [o.path for o in outs] == [str(example_clip)] and outs[0].error is None
        assert outs[0].features == example_result


@pytest.mark.parametrize("case,reason", [("silent", "silent"), ("short", "too short"), ("missing", "no such file"),
                                         ("empty", "empty"), ("text", "not a readable audio file")])
def test_bad_inputs_raise_one_line_errors(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "silent":
        write(path, np.zeros(5 * SR, np.float32))
    elif case == "short":
        write(path, music(0.5))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello\n" * 50)
    with pytest.raises(SongfeatError) as err:
        analyze(path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("sr,channels", [(8000, 1), (96000, 6)])
def test_odd_rates_and_channels_give_valid_results(tmp_path, sr, channels):
    y = music(12, sr)
    path = write(tmp_path / "odd.wav", np.stack([y] * channels, axis=1) if channels > 1 else y, sr=sr, subtype="PCM_24")
    r = analyze(path)
    assert abs(r["duration_ms"] - 12000) < 20 and all(0 <= r[k] <= 1 for k in features.LEARNED)


def test_windows_combine_over_a_long_song(tmp_path):
    path = write(tmp_path / "long.wav", music(95, 22050), sr=22050)
    r = analyze(path)
    assert abs(r["duration_ms"] - 95000) < 20
    assert abs(r["tempo"] - 120) / 120 < 0.04 or any(abs(a - 120) / 120 < 0.04 for a in r["tempo_alternatives"])


@pytest.mark.slow
def test_one_long_file_reports_its_progress_window_by_window(tmp_path):
    """`songfeat analyze` on one long file showed nothing for its whole run (~40 s for an hour): its worker's fd 2 is a
    capture file, so each window's progress now reaches the batch process over the worker's pipe, where the bar is."""
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for i in range(20):  # 30 s at a time: ten minutes of tones and noise, never whole in memory
            f.write(music(30, seed=i))
    calls = []
    outs = list(analyze_many([path], timeout=120, on_progress=lambda *a: calls.append(a)))  # in a worker, as the CLI
    assert outs[0].error is None and outs[0].features["duration_ms"] == 600_000
    assert calls == [(str(path), 30.0 * k, 600.0) for k in range(1, 21)]  # (file, seconds done, seconds in all)


def test_progress_in_this_process_counts_every_window_the_short_last_one_too(tmp_path):
    path = write(tmp_path / "song.wav", music(70))
    calls = []
    outs = list(analyze_many([path], on_progress=lambda *a: calls.append(a)))  # one worker, no time limit: here
    assert outs[0].features and [c[0] for c in calls] == [str(path)] * 3
    assert [c[1:] for c in calls] == [(30.0, 70.0), (60.0, 70.0), (70.0, 70.0)]

@pytest.mark.slow
def test_memory_does_not_grow_with_duration(tmp_path):
    """Peak traced memory for a 10-minute file stays near that of a 2-minute one (windows are streamed)."""
    peaks = {}
    for minutes in (2, 10):
        path = tmp_path / f"{minutes}.wav"
        with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as f:
            for i in range(minutes * 2):
                f.write(music(30, 8000, seed=i))
        analyze(path)  # warm caches so they do not count
        tracemalloc.start()
        analyze(path)
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    whole_10min = 10 * 60 * SR * 4  # bytes of the fully decoded 10-minute file at 44.1 kHz
    assert peaks[10] < 1.3 * peaks[2] + 8e6, peaks
    assert peaks[10] < whole_10min / 2, peaks


def test_batch_reports_bad_files_and_keeps_the_rest(tmp_path, example_clip):
    good = tmp_path / "good.mp3"
    shutil.copy(example_clip, good)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 1000)
    outs = list(analyze_many([good, bad]))
    assert outs[0].features is not None and outs[0].error is None
    assert outs[1].features is None and outs[1].error.startswith(str(bad))


@pytest.mark.parametrize("samples,reason", [(1, "too short"), (22050, "too short"), (88200, "silent")])
def test_tiny_or_silent_files_are_refused_before_any_model(tmp_path, samples, reason):
    # a 1-sample file reached the tagger and failed there ("the tagger got an empty window"), not as too short
    path = tmp_path / "tiny.wav"
    sf.write(path, np.full(samples, 0.5 if reason == "too short" else 0.0, np.float32), 44100)
    with pytest.raises(SongfeatError) as err:
        analyze(path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value)


def test_no_beat_reports_time_signature_0_and_keeps_the_models_answer(tmp_path, monkeypatch):
    # 3 s of a held chord: too short for a beat, so tempo 0, and Spotify's time signature 0 with it (songfeat said 4).
    # The model still reads the 4 it was trained with: its answer is the one it gave before.
    from songfeat import descriptors

    y = music(3.0)
    y[:] = 0.4 * np.sin(2 * np.pi * 220.0 * np.arange(y.size) / SR)
    r = analyze(write(tmp_path / "held.wav", y))
    assert (r["tempo"], r["time_signature"], r["time_signature_confidence"]) == (0, 0, 0)
    combine = descriptors.combine

    def as_before(evidence):
        d = combine(evidence)
        d.time_signature = 4
        return d

    monkeypatch.setattr(descriptors, "combine", as_before)
    before = analyze(write(tmp_path / "held2.wav", y))
    assert before["time_signature"] == 4
    assert all(r[f] == before[f] for f in features.LEARNED)


WORKER_MODULES = """
from songfeat.analyze import analysis_preload, get_bundle
from songfeat.workers import run_jobs
probe = "[m in __import__('sys').modules for m in ('torch', 'songfeat.tagger', 'onnxruntime')]"
print(list(run_jobs(eval, [probe], workers=2, preload=analysis_preload(get_bundle(None))))[0].value)
"""


def test_analysis_workers_of_the_default_model_do_not_import_torch():
    # The fork server preloaded songfeat.frontend (torch) for every batch: ~1.6 s per run with the train
    # extra installed, for a model that never touches torch. A fresh process, so a fresh fork server.
    p = subprocess.run([sys.executable, "-c", WORKER_MODULES], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SONGFEAT_BACKEND": "onnx"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[False, True, True]", p.stdout


BLAS_IN_WORKERS = """
from songfeat.analyze import _start_analysis_worker, analysis_preload, get_bundle
from songfeat.workers import run_jobs
probe = "sorted({p['num_threads'] for p in __import__('threadpoolctl').threadpool_info() if p['user_api'] == 'blas'})"
print(list(run_jobs(eval, [probe], workers=2, init=_start_analysis_worker, init_args=(None,),
                    preload=analysis_preload(get_bundle(None))))[0].value)
"""


def test_analysis_workers_use_one_blas_thread():
    # Each worker's OpenBLAS ran a pool as wide as the machine: two workers on two cores spun against each
    # other and took 1.0 s a clip instead of 0.6. set_threads(1) caps it, as it does onnxruntime's.
    p = subprocess.run([sys.executable, "-c", BLAS_IN_WORKERS], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "", "OMP_NUM_THREADS": ""})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[1]", p.stdout


def test_analysis_preload_adds_torch_only_when_asked(monkeypatch):
    from songfeat.analyze import analysis_preload, get_bundle

    bundle = get_bundle(None)
    assert "songfeat.frontend" not in analysis_preload(bundle)
    monkeypatch.setenv("SONGFEAT_BACKEND", "torch")
    assert "songfeat.frontend" in analysis_preload(bundle)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "songfeat.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_single_file_prints_one_object(example_clip, example_result):
    p = run_cli("analyze", example_clip)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == example_result


def test_cli_reads_one_file_from_standard_input(tmp_path, example_clip, example_result):
    """`songfeat analyze -` said "-: no such file": it now reads one audio file from stdin (spooled to a temporary
    file, removed afterwards), named "-" in its row; an empty or terminal stdin is refused in one line."""
    import pty

    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()

    def run(*args, stdin):
        return subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", *map(str, args)], stdin=stdin,
                              capture_output=True, text=True, env=env, timeout=300)

    with open(example_clip, "rb") as f:
        p = run("-", stdin=f)
    assert p.returncode == 0 and json.loads(p.stdout) == example_result, p.stderr
    with open(example_clip, "rb") as f:
        p = run("-", "-f", "jsonl", stdin=f)
    row = json.loads(p.stdout)
    assert (row["path"], row["id"], row["energy"]) == ("-", content_id(example_clip), example_result["energy"])
    with open(tmp_path / "notes.txt", "wb+") as f:
        f.write(b"not audio at all\n" * 100)
        f.seek(0)
        p = run("-", "-f", "jsonl", stdin=f)
    assert p.returncode == 1 and p.stderr.splitlines()[0].startswith("songfeat: error: -: not a readable audio file")
    p = run("-", stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stdout) == (2, "") and p.stderr == (
        "songfeat: error: -: standard input is empty; pipe or redirect an audio file into it\n")
    main, terminal = pty.openpty()
    try:
        p = run("-", stdin=terminal)
    finally:
        os.close(main)
        os.close(terminal)
    assert p.returncode == 2 and p.stderr.startswith("songfeat: error: -: standard input is a terminal;"), p.stderr
    assert not list((tmp_path / "tmp").glob("songfeat-stdin-*"))  # every spooled copy removed


@pytest.mark.parametrize("command", ["tags", "analysis"])
def test_tags_and_analysis_read_one_file_from_standard_input_as_analyze_does(tmp_path, example_clip, command):
    """`songfeat tags -` and `songfeat analysis -` said "-: no such file": they read standard input as `analyze -` does
    (spooled, named "-" in what they print and in errors, removed afterwards; an empty one refused in one line)."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()

    def run(*args, stdin=subprocess.DEVNULL):
        return subprocess.run([sys.executable, "-m", "songfeat.cli", command, *map(str, args)], stdin=stdin,
                              capture_output=True, text=True, env=env, timeout=300)

    def shown(p):  # what the command printed, less the analysis's clock readings
        if command == "tags":
            return p.stdout
        doc = json.loads(p.stdout)
        for k in ("timestamp", "analysis_time"):
            doc["meta"].pop(k)
        return doc

    from_file = run(example_clip)
    with open(example_clip, "rb") as f:
        p = run("-", stdin=f)
    assert p.returncode == 0, p.stderr
    if command == "tags":
        assert p.stdout.splitlines()[0] == "-"
        assert p.stdout.splitlines()[1:] == from_file.stdout.splitlines()[1:]
    else:
        assert shown(p) == shown(from_file)
    with open(tmp_path / "notes.txt", "wb+") as f:
        f.write(b"not audio at all\n" * 100)
        f.seek(0)
        p = run("-", stdin=f)
    assert p.returncode == 1 and p.stderr.startswith("songfeat: error: -: not a readable audio file"), p.stderr
    p = run("-")
    assert (p.returncode, p.stdout) == (2, "") and p.stderr == (
        "songfeat: error: -: standard input is empty; pipe or redirect an audio file into it\n")
    assert not list((tmp_path / "tmp").glob("songfeat-stdin-*"))  # every spooled copy removed


@pytest.mark.parametrize("command", ["analyze", "tags", "analysis"])
def test_standard_input_is_read_up_to_a_limit(tmp_path, monkeypatch, command):
    """`analyze -` copied standard input into $TMPDIR with no limit: `yes | songfeat analyze -` filled the disk (memory,
    on a tmpfs) and never ended. Over STDIN_MAX_BYTES it is refused in one line (status 2) naming - and the limit; up
    to the limit it is read as before (here not audio: that file's own error, status 1)."""
    import tempfile

    from typer.testing import CliRunner

    from songfeat import cli

    monkeypatch.setattr(cli, "STDIN_MAX_BYTES", 1 << 20)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = CliRunner().invoke(cli.app, [command, "-"], input=b"y" * ((1 << 20) + 1))
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr == (f"songfeat: error: -: standard input holds more than 1 MB, the limit for -; save it to a file "
                        f"and name that file instead (songfeat {command} song.wav: files have no size limit)\n"), r.stderr
    r = CliRunner().invoke(cli.app, [command, "-"], input=b"y" * (1 << 20))  # exactly the limit: read, then not audio
    assert r.exit_code == 1 and "songfeat: error: -: not a readable audio file" in r.stderr, r.output
    assert not list(tmp_path.glob("songfeat-stdin-*"))  # the spooled copies are gone


def test_an_endless_standard_input_is_read_no_further_than_the_limit():
    """What `-` copies stops one block past the limit: an input that never ends (`yes | songfeat analyze -`) ends."""
    import io

    from songfeat.cli import _copy_at_most

    class Endless(io.RawIOBase):
        given = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            b[:] = b"y" * len(b)
            Endless.given += len(b)
            return len(b)

    copy = io.BytesIO()
    assert _copy_at_most(io.BufferedReader(Endless()), copy, 3 << 20) == (3 << 20) + 1 == len(copy.getvalue())
    assert Endless.given < 5 << 20
    assert _copy_at_most(io.BytesIO(b"y" * 10), io.BytesIO(), 10) == 10  # at the limit: all of it, and no more asked


def test_a_lone_files_json_output_can_be_resumed_by_a_batch(tmp_path):
    """`analyze one.wav -o out.json` wrote Spotify's object without its `path`, so `analyze one.wav two.wav -o out.json
    --resume` was refused (status 2: 'holds one track's object without its "path"') and one.wav had to be analysed
    again; even the same `analyze one.wav -o out.json --resume` twice was refused. Written to a file, the lone object
    names its path and model, as a batch row does; printed on stdout it is Spotify's object as is."""
    one, two = write(tmp_path / "one.wav", music(2)), write(tmp_path / "two.wav", music(2, seed=1))
    out = tmp_path / "out.json"
    p = run_cli("analyze", one, "-o", out)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    printed = json.loads(run_cli("analyze", one).stdout)
    assert "path" not in printed and "model" not in printed  # stdout: Spotify's object, unchanged
    assert doc == {"path": str(one), **printed, "model": doc["model"]} and list(doc)[-1] == "model"
    p = run_cli("analyze", one, "-o", out, "--resume")  # the same command again: nothing left to do
    assert p.returncode == 0 and json.loads(out.read_text()) == doc, p.stderr
    out.write_text(json.dumps({**doc, "energy": 0.123}))  # a mark: the row kept, not one.wav analysed again
    p = run_cli("analyze", one, two, "-o", out, "--resume")
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(one), str(two)] and rows[0]["energy"] == 0.123
    assert rows[1]["model"] == doc["model"]


@pytest.mark.parametrize("args", [["analyze", "EXAMPLE", "-f", "csv"], ["analyze", "EXAMPLE"], ["analysis", "EXAMPLE"],
                                  ["--help"]])
def test_a_closed_stdout_pipe_ends_quietly_with_sigpipes_status(example_clip, args):
    """`songfeat analyze ... | head -1` ended with click's 1 (`analysis` with "error: None: cannot write (Broken
    pipe)"): a reader that has gone ends the command without a word, with the 141 the shell gives `seq 1000000 | head
    -1`."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write
    try:
        p = subprocess.run([sys.executable, "-m", "songfeat.cli", *(str(example_clip) if a == "EXAMPLE" else a for a in args)],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert (p.returncode, p.stderr) == (141, "")


@pytest.mark.parametrize("args", [[], ["analyze"]])
def test_a_closed_pipe_behind_stderr_ends_quietly_with_sigpipes_status_too(args):
    """A bare `songfeat` prints its help on stderr (click's, status 2); into a closed pipe (`songfeat |& head -1`) it
    ended with 1, shown by click after songfeat's own handling, where every command's one line ends with 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([sys.executable, "-m", "songfeat.cli", *args], stdout=write_end, stderr=write_end, timeout=300)
    finally:
        os.close(write_end)
    assert p.returncode == 141
    p = run_cli(*args)  # with a reader: the help (or the one error line) on stderr, status 2, as before
    assert p.returncode == 2 and p.stdout == "" and p.stderr.startswith("Usage:" if not args else "songfeat: error:")


def test_an_empty_path_is_said_to_be_empty(tmp_path, monkeypatch):
    """`songfeat.analyze("")` said '.: is a directory', and `songfeat analyze ""` (an unset shell variable) analysed the
    whole working folder: an empty path is named as such."""
    from typer.testing import CliRunner

    from songfeat.cli import app

    with pytest.raises(SongfeatError, match=r"^the path is empty; name an audio file$"):
        analyze("")
    assert [o.error for o in analyze_many([""])] == ["the path is empty; name an audio file"]
    write(tmp_path / "s0.wav", music(1.5))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["analyze", ""], prog_name="songfeat")
    assert r.exit_code == 2 and r.output == (
        "songfeat: error: PATHS...: the path is empty; name a file or folder (see songfeat analyze --help)\n"), r.output
    r = CliRunner().invoke(app, ["analyze", "s0.wav", "-o", ""])
    assert r.exit_code == 2 and "songfeat: error: --output/-o: the path is empty" in r.output, r.output


def test_cli_batch_formats_errors_and_exit_code(tmp_path, example_clip):
    music_dir = tmp_path / "music" / "sub"
    music_dir.mkdir(parents=True)
    shutil.copy(example_clip, music_dir / "a.mp3")
    write(music_dir / "b.wav", music(8))
    (music_dir / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 500)
    out = tmp_path / "features.csv"
    p = run_cli("analyze", tmp_path / "music", "--format", "csv", "--output", out, "--workers", "2")
    assert p.returncode == 1
    assert "broken.mp3" in p.stderr and "Traceback" not in p.stderr
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["a.mp3", "b.wav"]
    assert set(features.SPOTIFY_KEYS) <= set(rows[0])
    assert not (tmp_path / "features.csv.partial").exists()
    p = run_cli("analyze", music_dir / "a.mp3", music_dir / "b.wav", "--format", "jsonl")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 0 and [x["path"].rsplit("/", 1)[1] for x in lines] == ["a.mp3", "b.wav"]


def test_cli_output_extension_picks_the_format_unless_format_is_given(tmp_path):
    """`-o features.csv` without --format wrote a JSON list into features.csv; an explicit --format still wins."""
    song, other = write(tmp_path / "s.wav", music(3)), write(tmp_path / "t.wav", music(3, seed=1))
    for name in ("f.csv", "f.jsonl", "f.ndjson", "f.txt"):
        p = run_cli("analyze", song, other, "-o", tmp_path / name)
        assert p.returncode == 0, p.stderr
        text = (tmp_path / name).read_text()
        if name == "f.csv":
            assert [r["path"] for r in csv.DictReader(text.splitlines())] == [str(song), str(other)]
        elif name == "f.txt":  # no format's extension: json, as before
            assert [r["path"] for r in json.loads(text)] == [str(song), str(other)]
        else:
            assert [json.loads(line)["path"] for line in text.splitlines()] == [str(song), str(other)]
    p = run_cli("analyze", song, "-o", tmp_path / "g.csv", "--format", "json")
    assert p.returncode == 0 and json.loads((tmp_path / "g.csv").read_text())["type"] == "audio_features", p.stderr


def test_cli_resume_skips_done_files(tmp_path):
    for i in range(3):
        write(tmp_path / f"s{i}.wav", music(4, seed=i))
    out = tmp_path / "out.jsonl"
    # an interrupted run left one finished song (and half a line) in the partial file
    first = {"path": str(tmp_path / "s0.wav"), "id": "x", "marker": "kept"}
    (tmp_path / "out.jsonl.partial").write_text(json.dumps(first) + "\n" + '{"path": "cut')
    p = run_cli("analyze", tmp_path, "--format", "jsonl", "--output", out, "--resume")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["path"].rsplit("/", 1)[1] for x in lines] == ["s0.wav", "s1.wav", "s2.wav"]
    assert lines[0].get("marker") == "kept"  # not redone


def test_cli_rerun_without_resume_keeps_an_interrupted_runs_results(tmp_path):
    # a rerun without --resume opened the .partial afresh: the songs an interrupted run had finished were lost silently
    write(tmp_path / "s0.wav", music(4, seed=0))
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    earlier = json.dumps({"path": str(tmp_path / "s0.wav"), "id": "x"}) + "\n"
    partial.write_text(earlier)
    p = run_cli("analyze", tmp_path, "--format", "jsonl", "--output", out)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and "--resume" in lines[0] and str(partial) in lines[0], p.stderr
    assert partial.read_text() == earlier and not out.exists()


def test_cli_rows_name_their_model_and_resume_refuses_another_models_rows(tmp_path):
    # --resume took the rows of an interrupted run with another --model as done and appended this model's rows:
    # the output mixed two models' numbers and nothing said which row came from which
    from songfeat.bundle import model_id

    for i in range(2):
        write(tmp_path / f"s{i}.wav", music(4, seed=i))
    out = tmp_path / "out.jsonl"
    p = run_cli("analyze", tmp_path, "--format", "jsonl", "--output", out)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == [model_id(None)] * 2 and len(model_id(None)) == 12
    partial = tmp_path / "o2.jsonl.partial"
    earlier = json.dumps({"path": str(tmp_path / "s0.wav"), "id": "x", "model": "0123456789ab"}) + "\n"
    partial.write_text(earlier)
    p = run_cli("analyze", tmp_path, "--format", "jsonl", "--output", tmp_path / "o2.jsonl", "--resume")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert f"{partial}: --resume cannot continue from it: 1 of its 1 results were written by another model" in p.stderr
    assert "0123456789ab" in p.stderr and model_id(None) in p.stderr and partial.read_text() == earlier


def test_resume_takes_rows_of_its_own_model_and_rows_without_one(tmp_path):
    from songfeat.output import ResultWriter

    out = tmp_path / "f.jsonl"
    (tmp_path / "f.jsonl.partial").write_text(json.dumps(_record("/a.mp3", model="aaaaaaaaaaaa")) + "\n"
                                              + json.dumps(_record("/b.mp3")) + "\n")
    w = ResultWriter("jsonl", out, resume=True, model="aaaaaaaaaaaa")
    assert w.done == {"/a.mp3", "/b.mp3"}
    w.write(_record("/c.mp3"))
    w.close()
    assert [json.loads(x).get("model") for x in out.read_text().splitlines()] == ["aaaaaaaaaaaa", None, "aaaaaaaaaaaa"]


def test_resume_knows_a_done_file_named_another_way(tmp_path, monkeypatch):
    # a batch started as `songfeat analyze music/ ...` and resumed as `songfeat analyze /abs/music/ ...` (or through a
    # symlinked folder) analysed every file again and wrote each twice
    import os

    from songfeat.output import ResultWriter

    (tmp_path / "music").mkdir()
    song = tmp_path / "music" / "a.wav"
    song.write_bytes(b"")
    os.symlink(tmp_path / "music", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.csv.partial").write_text("path,energy\nmusic/a.wav,0.5\nodd\x00name.wav,0.4\n")  # a NUL: no real path
    done = ResultWriter("csv", tmp_path / "f.csv", resume=True).done
    assert str(song) in done and str(tmp_path / "link" / "a.wav") in done and "music/a.wav" in done
    assert str(tmp_path / "music" / "b.wav") not in done and "\0" not in done


def test_resume_from_another_folder_is_refused_not_redone(tmp_path, monkeypatch):
    # rows keep the paths as given (music/a.wav), read from the working directory: resumed from another folder, none
    # matched, and every file was analysed and written a second time
    from songfeat.output import OutputError, ResultWriter

    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "a.wav").write_bytes(b"")
    (tmp_path / "f.csv.partial").write_text("path,energy\nmusic/a.wav,0.5\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match=r"relative to the folder the batch was started in \(e\.g\. music/a\.wav\).*run "
                                          r"--resume from that folder"):
        ResultWriter("csv", tmp_path / "f.csv", resume=True)
    monkeypatch.chdir(tmp_path)
    assert "music/a.wav" in ResultWriter("csv", tmp_path / "f.csv", resume=True).done  # from the batch's folder: fine


def test_cli_caps_workers_at_the_usable_cpus(tmp_path, monkeypatch):
    # --workers 64 on a 2-CPU machine started 64 processes, each holding the model (up to ~0.75 GB): memory for nothing
    from typer.testing import CliRunner

    from songfeat import runtime
    from songfeat.cli import app

    module = sys.modules["songfeat.analyze"]  # the package exports a function of the same name

    asked = []

    def fake_many(files, model=None, workers=1, timeout=None, **kwargs):
        asked.append(workers)
        return iter(())

    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    monkeypatch.setattr(module, "analyze_many", fake_many)
    for i in range(3):
        write(tmp_path / f"s{i}.wav", music(1.5, seed=i))
    r = CliRunner().invoke(app, ["analyze", str(tmp_path), "-f", "jsonl", "--workers", "64"])
    assert asked == [2] and "songfeat: warning: --workers 64 is more than the 2 usable CPUs here; using 2" in r.output
    r = CliRunner().invoke(app, ["analyze", str(tmp_path), "-f", "jsonl", "--workers", "2"])
    assert asked == [2, 2] and "warning" not in r.output


def test_cli_draws_one_files_progress_window_by_window(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from songfeat import cli
    from songfeat.analyze import Outcome

    module = sys.modules["songfeat.analyze"]
    asked = []

    def fake_many(files, on_progress=None, **kwargs):
        asked.append(on_progress)
        for f in files:
            if on_progress is not None:
                for done in (30.0, 60.0, 61.5):  # the last a little past the header's length: still drawn
                    on_progress(str(f), done, 61.0)
            yield Outcome(str(f), features={"energy": 0.5})

    monkeypatch.setattr(module, "analyze_many", fake_many)
    for i in range(2):
        write(tmp_path / f"s{i}.wav", music(1.5, seed=i))
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path / "s0.wav")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"energy": 0.5} and callable(asked[0])
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path), "-f", "jsonl"])
    assert r.exit_code == 0 and asked[1] is None  # several files: the bar counts files


def test_cli_off_a_terminal_says_one_files_seconds_in_plain_lines(tmp_path, monkeypatch):
    """A lone long file with stderr in a log said nothing until it ended (its seconds were drawn on a terminal only; a
    6-hour file takes minutes): now a plain line every SONGFEAT_PROGRESS_INTERVAL seconds, and none within 30 s."""
    from typer.testing import CliRunner

    from songfeat import cli
    from songfeat.analyze import Outcome

    def fake_many(files, on_progress=None, **kwargs):
        for f in files:
            for done in (30.0, 60.0, 61.0):
                on_progress(str(f), done, 61.0)
            yield Outcome(str(f), features={"energy": 0.5})

    monkeypatch.setattr(sys.modules["songfeat.analyze"], "analyze_many", fake_many)
    write(tmp_path / "s0.wav", music(1.5))
    monkeypatch.setenv("SONGFEAT_PROGRESS_INTERVAL", "0")
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path / "s0.wav")])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"energy": 0.5}
    assert [line.split(", ")[0] for line in r.stderr.splitlines()] == [
        "songfeat: analysing s0.wav: 30/61 (49%)", "songfeat: analysing s0.wav: 60/61 (98%)",
        "songfeat: analysing s0.wav: 61/61 (100%)", "songfeat: analysing s0.wav: 61/61 (100%)"], r.stderr
    assert r.stderr.splitlines()[-1].endswith(" elapsed (done)")
    monkeypatch.delenv("SONGFEAT_PROGRESS_INTERVAL")
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path / "s0.wav")])
    assert r.exit_code == 0 and r.stderr == ""

def test_cli_batch_off_a_terminal_says_how_far_it_is_in_plain_lines(tmp_path, monkeypatch):
    """A batch with stderr in a log file said nothing until it ended (the bar was for terminals only); now a plain line
    every SONGFEAT_PROGRESS_INTERVAL seconds (0 here: every file) and a last one, the rows on stdout as they were."""
    from typer.testing import CliRunner

    from songfeat import cli
    from songfeat.analyze import Outcome

    def fake_many(files, on_progress=None, **kwargs):
        assert on_progress is None  # a batch counts files, not one file's seconds
        for f in files:
            yield Outcome(str(f), features={"energy": 0.5}) if f.name != "s1.wav" else Outcome(str(f), error="bad")

    monkeypatch.setenv("SONGFEAT_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(sys.modules["songfeat.analyze"], "analyze_many", fake_many)
    for i in range(3):
        write(tmp_path / f"s{i}.wav", music(1.5, seed=i))
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path), "-f", "jsonl"])
    assert r.exit_code == 1
    assert [json.loads(line)["path"] for line in r.stdout.splitlines()] == [str(tmp_path / f"s{i}.wav") for i in (0, 2)]
    lines = [line.split(", ")[0] for line in r.stderr.splitlines()]
    assert lines == ["songfeat: analysing: 1/3 (33%)", "songfeat: analysing: 2/3 (67%)", "songfeat: error: bad",
                     "songfeat: analysing: 3/3 (100%)", "songfeat: analysing: 3/3 (100%)",
                     "songfeat: 1 of 3 inputs failed"], r.stderr
    assert r.stderr.splitlines()[-2].endswith(" elapsed (done)")
    monkeypatch.delenv("SONGFEAT_PROGRESS_INTERVAL")
    r = CliRunner().invoke(cli.app, ["analyze", str(tmp_path), "-f", "jsonl"])  # done within 30 s: no line
    assert r.stderr.splitlines() == ["songfeat: error: bad", "songfeat: 1 of 3 inputs failed"]


@pytest.mark.parametrize("files", [1, 2])
def test_a_bar_on_a_terminal_leaves_stdout_to_the_results(tmp_path, files):
    """With stderr a terminal and stdout a file, the results went to the terminal through the bar's console (rich's
    Progress redirects stdout by default) and the file stayed empty; one file now has a bar too."""
    from terminal import run_on_a_terminal

    paths = [write(tmp_path / f"song{i}.wav", music(40 if files == 1 else 2, seed=i)) for i in range(files)]
    p, shown = run_on_a_terminal("analyze", *map(str, paths), "-f", "jsonl")
    assert p.returncode == 0
    assert [json.loads(line)["path"] for line in p.stdout.decode().splitlines()] == [str(x) for x in paths]
    assert ("analysing song0.wav" if files == 1 else "analysing") in shown and '"danceability"' not in shown

def test_cli_version_names_the_bundled_model():
    # there was no --version: nothing told a user which songfeat (and which model id, the outputs' "model") they had
    from songfeat.bundle import model_id

    p = run_cli("--version")
    assert p.returncode == 0 and p.stdout == f"songfeat {songfeat.__version__} (bundled model {model_id(None)})\n", p.stderr


def test_cli_output_that_is_an_input_under_any_name_is_refused(tmp_path):
    # only audio extensions were refused: `analyze song.dat -o song.dat` (or a hard link to the input) replaced the song
    # with its features; `-o .` was a ValueError traceback
    song = tmp_path / "song.dat"
    sf.write(song, music(2, seed=1), SR, format="WAV", subtype="PCM_16")
    os.link(song, tmp_path / "link.csv")
    before = song.read_bytes()
    for out in ("song.dat", "link.csv"):
        p = run_cli("analyze", song, "-f", "csv", "-o", tmp_path / out)
        assert p.returncode == 2 and "is an input audio file" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert song.read_bytes() == before
    p = run_cli("analyze", song, "-o", ".", cwd=tmp_path)
    assert p.returncode == 2 and "is a folder" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_output_folders_made_for_a_run_that_writes_nothing_are_taken_away(tmp_path):
    """`analyze -o out/dir/x.json` made out/dir before the work and, when every input failed, left it behind empty; the
    folders it made go again now, in every format, while those holding a result (or anything else) stay."""
    from songfeat.output import ResultWriter

    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    for fmt in ("json", "jsonl", "csv"):
        p = run_cli("analyze", bad, "-f", fmt, "-o", tmp_path / "out" / "dir" / f"x.{fmt}")
        assert p.returncode == 1 and "1 of 1 inputs failed" in p.stderr, p.stderr
        assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.mp3"], fmt
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("kept")
    p = run_cli("analyze", bad, "-o", tmp_path / "out" / "dir" / "x.json")
    assert p.returncode == 1 and sorted(x.name for x in (tmp_path / "out").iterdir()) == ["theirs.txt"], p.stderr
    good = write(tmp_path / "good.wav", music(2))
    out = tmp_path / "new" / "deeper" / "x.jsonl"
    p = run_cli("analyze", bad, good, "-f", "jsonl", "-o", out)
    assert p.returncode == 1 and [json.loads(x)["path"] for x in out.read_text().splitlines()] == [str(good)], p.stderr
    w = ResultWriter("jsonl", tmp_path / "api" / "x.jsonl")  # the writer itself: released unwritten, nothing is left
    assert (tmp_path / "api").is_dir()
    w.release()
    assert not (tmp_path / "api").exists()


def test_a_write_that_fails_mid_batch_is_status_1_as_in_analysis(tmp_path):
    """A result that cannot be written once the work is under way is a failed run (1), as `analysis` says it; `analyze`
    said 2, its status for a refusal before any work."""
    song = write(tmp_path / "s0.wav", music(2))
    (tmp_path / "out.json.partial").mkdir()  # the writer's temporary name is taken by a folder: the first write fails
    for command in ("analyze", "analysis"):
        p = run_cli(command, song, "-o", tmp_path / "out.json")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and "cannot write it" in lines[0], (command, p.stderr)


def test_cli_missing_input_and_bad_model(tmp_path, example_clip):
    p = run_cli("analyze", tmp_path / "nope.mp3")
    assert p.returncode != 0 and "nope.mp3" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("analyze", example_clip, "--model", tmp_path)
    assert p.returncode != 0 and "not a model bundle" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("analyze", example_clip, "--model", tmp_path / "typo")  # said "not a model bundle (expected ...)"
    assert p.returncode != 0 and p.stderr.strip() == f"songfeat: error: {tmp_path / 'typo'}: no such model bundle folder"


def test_cli_an_output_whose_lock_file_cannot_be_made_is_named_as_given(tmp_path, monkeypatch):
    """`analyze x.wav -o /proc/x.json` read "/proc/x.json.lock: cannot write it (No such file or directory)": the lock
    beside the output is songfeat's own, so the output the user named is the one said (refusal simulated, as root)."""
    import errno

    from typer.testing import CliRunner

    from songfeat.cli import app

    song, out = write(tmp_path / "s0.wav", music(2)), tmp_path / "x.json"
    real_open = os.open

    def refuse(path, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    r = CliRunner().invoke(app, ["analyze", str(song), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert r.stderr == f"songfeat: error: {out}: cannot write it (Read-only file system)\n", r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.wav"]


def test_cli_a_model_folder_it_may_not_look_into_is_one_line(tmp_path, monkeypatch):
    """`--model` naming a folder without search permission (its config.json cannot even be stat'ed) printed a traceback
    with status 1; it is one line and status 2, as every unusable bundle (refusal simulated, so this runs as root too)."""
    import errno

    from typer.testing import CliRunner

    from songfeat.cli import app

    song, locked = write(tmp_path / "s0.wav", music(2)), tmp_path / "locked"
    locked.mkdir()
    real_stat = os.stat

    def refuse(path, *a, **k):
        if str(path).startswith(f"{locked}{os.sep}"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", refuse)
    r = CliRunner().invoke(app, ["analyze", str(song), "--model", str(locked)])
    assert r.exit_code == 2 and not isinstance(r.exception, PermissionError), r.exception
    assert r.stderr.strip() == f"songfeat: error: {locked}: cannot read the model (Permission denied)"


# --- the output file: resumable, atomic, never replacing what it cannot read -------------------


def _record(path: str, **extra) -> dict:
    return {"path": path, "id": "x" * 22, "energy": 0.5, "tempo_alternatives": [60.0, 240.0], **extra}


JSONL_TEXT = json.dumps(_record("/a.mp3")) + "\n" + json.dumps(_record("/b.mp3")) + "\n"
CSV_TEXT = "path,id,energy\n/a.mp3,xxxxxxxxxxxxxxxxxxxxxx,0.5\n/b.mp3,xxxxxxxxxxxxxxxxxxxxxx,0.6\n"


@pytest.mark.parametrize("fmt,name,text", [
    ("csv", "out.jsonl", JSONL_TEXT),  # --format differs from the earlier run's
    ("jsonl", "out.csv", CSV_TEXT),
    ("json", "out.csv", CSV_TEXT),
    ("csv", "other.csv", "name,score\nfoo,1\nbar,2\n"),  # another tool's table
    ("csv", "more.csv", CSV_TEXT.replace("energy", "energy,note").replace("0.5", "0.5,mine").replace("0.6", "0.6,too")),
    ("jsonl", "mid.jsonl", JSONL_TEXT.replace("\n", "\ngarbage\n", 1)),  # damaged in the middle, not cut at the end
    ("jsonl", "list.jsonl", "[1, 2]\n"),
    ("json", "lone.json", json.dumps({"id": "x", "energy": 0.5})),  # a lone file's object: no path to resume by
])
def test_resume_refuses_an_output_it_cannot_read_and_leaves_it_alone(tmp_path, fmt, name, text):
    # --resume read these as "nothing done" (or dropped every line after a bad one) and the batch then renamed its new
    # output over them: an earlier run's results, or another tool's file, were lost. A non-dict line was a traceback.
    from songfeat.output import ResultWriter

    out = tmp_path / name
    out.write_text(text)
    with pytest.raises(SongfeatError) as err:
        w = ResultWriter(fmt, out, resume=True)
        w.write(_record("/c.mp3"))
        w.close()
    assert str(err.value).startswith(f"{out}: ") and "--resume" in str(err.value) and "\n" not in str(err.value)
    assert out.read_text() == text and not (tmp_path / f"{name}.partial").exists()


def test_cli_resume_in_another_format_keeps_the_earlier_output(tmp_path):
    write(tmp_path / "s0.wav", music(2))
    out = tmp_path / "f.jsonl"
    out.write_text(JSONL_TEXT)
    p = run_cli("analyze", tmp_path / "s0.wav", "--format", "csv", "--output", out, "--resume")
    assert p.returncode != 0 and f"{out}: --resume cannot continue from it" in p.stderr.replace("\n", " ")
    assert out.read_text() == JSONL_TEXT


def test_resume_onto_json_in_a_csv_says_which_format_continues_it(tmp_path):
    """An older songfeat wrote JSON into `-o f.csv`; --resume onto it was refused without saying that --format json
    continues it."""
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    write(music_dir / "s0.wav", music(2))
    out = tmp_path / "f.csv"
    out.write_text(json.dumps([_record(str(music_dir / "a.mp3"))], indent=2) + "\n")
    p = run_cli("analyze", music_dir, "--output", out, "--resume")
    assert p.returncode == 2 and p.stderr.startswith(
        f"songfeat: error: {out}: --resume cannot continue from it: it holds songfeat's JSON results, not CSV; to "
        f"continue it, add --format json (or rename it to f.json)"), p.stderr
    p = run_cli("analyze", music_dir, "--output", out, "--resume", "--format", "json")
    assert p.returncode == 0 and [r["path"] for r in json.loads(out.read_text())] == [
        str(music_dir / "a.mp3"), str(music_dir / "s0.wav")], p.stderr


def test_a_csv_row_cut_by_a_kill_is_redone_not_kept(tmp_path):
    # a row cut after its id counted as done: the song was skipped and its row kept half empty
    from songfeat.output import ResultWriter

    out = tmp_path / "f.csv"
    w = ResultWriter("csv", out)
    for name in ("/a.mp3", "/b.mp3"):
        w.write({**_record(name), "uri": "songfeat:track:" + "x" * 22, "duration_ms": 1000})
    w._fh.close()  # killed: no close(), so the rows are only in the partial ...
    del w  # ... and the process, its lock with it, is gone
    partial = tmp_path / "f.csv.partial"
    text = partial.read_text()
    partial.write_text(text[: text.rindex("songfeat:track:") + 5])  # cut inside the second row's uri
    w = ResultWriter("csv", out, resume=True)
    assert w.done == {"/a.mp3"}
    w.write(_record("/b.mp3"))
    w.close()
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["path"] for r in rows] == ["/a.mp3", "/b.mp3"] and rows[0]["duration_ms"] == "1000"


def test_an_interrupted_json_batch_keeps_its_finished_songs_and_resumes(tmp_path):
    # JSON was held in memory until the end: Ctrl-C lost every finished song (though the message said they were
    # kept in f.json.partial), and --resume never read a JSON output, so a rerun replaced it with the new files only.
    from songfeat.output import ResultWriter

    out = tmp_path / "f.json"
    w = ResultWriter("json", out)
    w.write(_record("/a.mp3"))
    w.write(_record("/b.mp3"))
    del w  # killed mid-batch
    w = ResultWriter("json", out, resume=True)
    assert w.done == {"/a.mp3", "/b.mp3"}
    w.write(_record("/c.mp3"))
    w.close()
    assert [r["path"] for r in json.loads(out.read_text())] == ["/a.mp3", "/b.mp3", "/c.mp3"]
    assert not (tmp_path / "f.json.partial").exists()
    w = ResultWriter("json", out, resume=True)  # a finished JSON output resumes too
    assert w.done == {"/a.mp3", "/b.mp3", "/c.mp3"}
    w.write(_record("/d.mp3"))
    w.close()
    assert [r["path"] for r in json.loads(out.read_text())] == ["/a.mp3", "/b.mp3", "/c.mp3", "/d.mp3"]


def test_a_lone_files_json_output_is_its_object(tmp_path):
    from songfeat.output import ResultWriter

    out = tmp_path / "one.json"
    w = ResultWriter("json", out, single=True)
    w.write({"id": "x", "energy": 0.5})
    w.close()
    assert json.loads(out.read_text()) == {"id": "x", "energy": 0.5}


def test_an_output_that_is_a_folder_a_device_or_audio_is_refused_before_any_work(tmp_path):
    # a folder failed only at the final rename, after the whole batch, with a traceback; an input named as the
    # output (analyze a.wav -o a.wav) was replaced by the results; a device would have been renamed over
    from songfeat.output import ResultWriter

    song = write(tmp_path / "song.wav", music(1))
    before = song.read_bytes()
    folder = tmp_path / "results"
    folder.mkdir()
    for fmt, target, reason in [("jsonl", folder, "is a folder"), ("json", song, "is an audio file"),
                                ("csv", "/dev/null", "not a regular file")]:
        with pytest.raises(SongfeatError) as err:
            ResultWriter(fmt, target)
        assert str(err.value).startswith(f"{target}: ") and reason in str(err.value)
    assert song.read_bytes() == before and set(tmp_path.iterdir()) == {folder, song}


def test_an_output_in_a_place_that_cannot_hold_it_is_one_error(tmp_path):
    # `--output notes.txt/f.jsonl` raised NotADirectoryError from deep in the writer (a traceback)
    from songfeat.output import ResultWriter

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SongfeatError) as err:
        w = ResultWriter("jsonl", tmp_path / "notes.txt" / "f.jsonl")
        w.write(_record("/a.mp3"))
    assert "notes.txt" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_file_names_that_are_not_utf8_are_written_and_resumed(tmp_path, fmt):
    # a Latin-1 name (os.fsdecode gives it surrogate escapes) crashed the CSV writer with UnicodeEncodeError,
    # at that song and again at every --resume: the batch could never finish
    from songfeat.output import ResultWriter

    name = os.fsdecode(b"/music/caf\xe9.mp3")
    out = tmp_path / f"f.{fmt}"
    w = ResultWriter(fmt, out)
    w.write(_record(name))
    w.close()
    text = out.read_text(encoding="utf-8")  # valid UTF-8 text
    # JSON wrote the name's lone surrogate as \\udce9, which strict readers (Go, Rust's serde) refuse; now as CSV does
    escaped = "caf\\xe9.mp3" if fmt == "csv" else "caf\\\\xe9.mp3"  # the stray byte as \\xNN (JSON escapes the backslash)
    assert "\\udc" not in text and escaped in text, text
    assert name in ResultWriter(fmt, out, resume=True).done


def test_non_finite_numbers_are_written_as_null(tmp_path):
    # json.dumps wrote NaN / Infinity: not JSON, refused by strict readers (and by jq, JavaScript, Go)
    from songfeat.output import ResultWriter

    out = tmp_path / "f.jsonl"
    w = ResultWriter("jsonl", out)
    w.write(_record("/a.mp3", energy=float("nan"), tempo_alternatives=[float("inf"), 60.0]))
    w.close()

    def refuse(token):
        raise ValueError(token)

    rec = json.loads(out.read_text(), parse_constant=refuse)
    assert rec["energy"] is None and rec["tempo_alternatives"] == [None, 60.0]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_full_disk_behind_stdout_is_one_error(monkeypatch, fmt):
    # `songfeat analyze music/ > /mnt/full/f.jsonl` ended in a traceback from deep inside the writer
    import errno
    import io

    from songfeat.output import ResultWriter

    class Full(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    with pytest.raises(SongfeatError) as err:
        w = ResultWriter(fmt)
        w.write(_record("/a.mp3"))
        w.close()
    assert str(err.value) == "stdout: cannot write (No space left on device)"


def test_cli_refuses_a_bad_output_in_one_line_before_any_work(tmp_path):
    # The writer's refusals (an input named as the output, an output --resume cannot read) reached the terminal as a
    # traceback ending in OutputError, because `analyze` built its writer outside its error handling.
    from typer.testing import CliRunner

    from songfeat.cli import app

    song = write(tmp_path / "song.wav", music(1))
    before = song.read_bytes()
    r = CliRunner().invoke(app, ["analyze", str(song), "-o", str(song)])
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith(f"songfeat: error: {song}: ") and "audio file" in r.output
    theirs = tmp_path / "scores.csv"
    theirs.write_text("name,score\nsong,3\n")
    r = CliRunner().invoke(app, ["analyze", str(song), "-f", "csv", "-o", str(theirs), "--resume"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--resume cannot continue" in r.output, r.output
    assert song.read_bytes() == before and theirs.read_text() == "name,score\nsong,3\n"


# --- one run per output file ------------------------------------------------------------------------------------------


_HOLD = """
import sys, time
from songfeat.output import ResultWriter
w = ResultWriter("jsonl", sys.argv[1])
w.write({"path": "/held.mp3"})
print("holding", flush=True)
time.sleep(120)
"""


def _holder(out):
    """A process writing `out` through ResultWriter (so holding its lock), stopped mid-batch; waits until it holds it."""
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_a_second_run_on_the_same_output_is_refused_at_once(tmp_path):
    # two `analyze -o f.jsonl` at once both appended to f.jsonl.partial, and the first to finish renamed it, rows of the
    # other's batch half written; now the second run is refused before any work, in one line naming the file and run
    import time

    write(tmp_path / "s0.wav", music(2))
    out = tmp_path / "f.jsonl"
    holder = _holder(out)
    try:
        for extra in ((), ("--resume",)):  # a --resume would take the running batch's rows as an interrupted run's
            t0 = time.monotonic()
            p = run_cli("analyze", tmp_path / "s0.wav", "-f", "jsonl", "-o", out, *extra)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 2 and len(lines) == 1, p.stderr
            assert lines[0] == (f"songfeat: error: {out}: is being written by another songfeat run (pid {holder.pid}); "
                                "wait for it to end, or name another output"), p.stderr
            assert time.monotonic() - t0 < 60
        p = run_cli("analysis", tmp_path / "s0.wav", "-o", out)  # the same writer, the same lock, line and status
        assert p.returncode == 2 and p.stderr.strip() == lines[0], p.stderr
        assert (tmp_path / "f.jsonl.partial").read_text() == '{"path": "/held.mp3"}\n' and not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_file_does_not_block_the_next_run(tmp_path):
    # the OS lets go of a flock when its process dies (SIGKILL included): the lock file left behind is taken over
    write(tmp_path / "s0.wav", music(2))
    out = tmp_path / "f.jsonl"
    holder = _holder(out)
    holder.kill()
    holder.wait()
    assert (tmp_path / "f.jsonl.lock").read_text() == f"{holder.pid}\n"  # left behind, naming a dead run
    p = run_cli("analyze", tmp_path / "s0.wav", "-f", "jsonl", "-o", out, "--resume")
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["path"] for x in out.read_text().splitlines()] == ["/held.mp3", str(tmp_path / "s0.wav")]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.jsonl", "s0.wav"]  # no lock file once the run is done


def test_the_writers_lock_is_held_from_start_to_close(tmp_path):
    # in-process: a second writer of one file is refused (flock conflicts between two descriptors, even in one process);
    # close(), a refusal in the constructor and a dropped writer each let go
    from songfeat.output import ResultWriter

    out = tmp_path / "f.csv"
    lock = tmp_path / "f.csv.lock"
    w = ResultWriter("csv", out)
    with pytest.raises(SongfeatError, match=f"is being written by another songfeat run \\(pid {os.getpid()}\\)"):
        ResultWriter("csv", out)
    with pytest.raises(SongfeatError, match="is being written"):
        ResultWriter("jsonl", tmp_path / "." / "f.csv", resume=True)  # the same file by another name
    w.write(_record("/a.mp3"))
    w.close()
    assert not lock.exists()
    (tmp_path / "f.csv.partial").write_text(CSV_TEXT)
    with pytest.raises(SongfeatError, match="interrupted run"):  # refused after the lock was taken: it is let go
        ResultWriter("csv", out)
    assert not lock.exists()
    w = ResultWriter("csv", out, resume=True)
    assert lock.exists()
    del w  # dropped without close() (killed, as far as the output knows)
    ResultWriter("csv", out, resume=True).close()
    assert not lock.exists() and [r["path"] for r in csv.DictReader(out.open())] == ["/a.mp3", "/b.mp3"]


def test_a_forked_worker_does_not_keep_the_output_locked(tmp_path):
    # analysis workers are forks of the run: had they kept its lock descriptor, a run killed mid-batch would have left
    # its output locked for as long as a worker went on with a long file
    from songfeat.output import ResultWriter

    out = tmp_path / "f.jsonl"
    w = ResultWriter("jsonl", out)
    r, go = os.pipe()
    ready, up = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: says it has started (its fork hooks have run), then lives until the test is done
        os.close(go)
        os.write(up, b"1")
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(up)
    try:
        assert os.read(ready, 1) == b"1"
        w._lock.forget()  # the run dies: its own descriptor closes, the lock file stays
        assert (tmp_path / "f.jsonl.lock").exists()
        ResultWriter("jsonl", out).close()  # taken over, though the worker lives on
    finally:
        os.close(go)
        os.close(ready)
        os.waitpid(pid, 0)


def test_cli_error_lines_name_a_file_as_the_outputs_do_and_once(tmp_path):
    # a name that is not UTF-8 reached stderr as Python's lone surrogate (bad\udce9.wav) while every output writes it
    # bad\xe9.wav; and a missing file named twice was two inputs and two error lines, where a file named twice is one
    bad = os.fsencode(tmp_path) + b"/bad\xe9.wav"
    open(bad, "wb").close()
    missing = tmp_path / "missing.wav"
    p = subprocess.run([sys.executable, "-m", "songfeat.cli", "analyze", os.fsdecode(bad), str(missing),
                        f"{tmp_path}/./missing.wav"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert f"songfeat: error: {tmp_path}/bad\\xe9.wav: empty file (0 bytes)" in lines, lines
    assert "\\udc" not in p.stderr
    assert sum("missing.wav" in ln for ln in lines) == 1 and lines[-1] == "songfeat: 2 of 2 inputs failed", lines


def test_ray_only_options_are_refused_with_the_local_engine(tmp_path):
    # --address, --batch-size and --chunk-size are read by --engine ray alone; with the local engine they were ignored
    # without a word, so `analyze music/ --address auto` analysed locally as if the cluster had been asked for.
    from typer.testing import CliRunner

    from songfeat.cli import app

    song = tmp_path / "s.wav"
    write(song, music(1.5))
    r = CliRunner().invoke(app, ["analyze", str(song), "--address", "auto"])
    assert r.exit_code == 2 and "--address is for --engine ray" in r.output, r.output
    r = CliRunner().invoke(app, ["analyze", str(song), "--batch-size", "16", "--chunk-size", "3"])
    assert r.exit_code == 2 and "--batch-size, --chunk-size are for --engine ray" in r.output, r.output
    assert "danceability" not in r.output  # refused before any analysis


def test_an_interrupted_batch_names_its_partial_only_when_it_holds_rows(tmp_path, monkeypatch):
    """Ctrl-C before the first row said 'finished files are kept in f.jsonl.partial, rerun with --resume': a file that
    did not exist. It says nothing was written then (and leaves no folder it made); after a row, where the row is."""
    import importlib

    from typer.testing import CliRunner

    from songfeat.analyze import Outcome
    from songfeat.cli import app

    analyze_module = importlib.import_module("songfeat.analyze")  # `songfeat.analyze` the attribute is the function
    songs = [write(tmp_path / f"{n}.wav", music(1, seed=i)) for i, n in enumerate("ab")]

    def interrupted_after(n: int):
        def fake(files, **_):
            for f in files[:n]:
                yield Outcome(str(f), features={"energy": 0.5})
            raise KeyboardInterrupt
        return fake

    out = tmp_path / "new" / "f.jsonl"
    monkeypatch.setattr(analyze_module, "analyze_many", interrupted_after(0))
    r = CliRunner().invoke(app, ["analyze", *map(str, songs), "-f", "jsonl", "-o", str(out)])
    assert r.exit_code == 130 and r.output.strip().splitlines() == [
        f"songfeat: error: interrupted before any file was finished; nothing was written to {out}"], r.output
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(analyze_module, "analyze_many", interrupted_after(1))
    r = CliRunner().invoke(app, ["analyze", *map(str, songs), "-f", "jsonl", "-o", str(out)])
    partial = tmp_path / "new" / "f.jsonl.partial"
    assert r.exit_code == 130 and r.output.strip().splitlines() == [
        f"songfeat: error: interrupted; finished files are kept in {partial}, rerun with --resume to continue"], r.output
    assert [json.loads(line)["path"] for line in partial.read_text().splitlines()] == [str(songs[0])]


def test_a_library_failure_reads_alike_wherever_a_file_is_analysed(tmp_path, monkeypatch):
    """analyze, the record cache (train-heads) and evaluate-audio's clip reading each wrote their own 'analysis failed
    (...)' line: analyze's one line of at most 200 characters, the others the exception's whole text, its newline too."""
    import importlib

    from songfeat import accuracy, records

    analyze_module = importlib.import_module("songfeat.analyze")  # the package's `analyze` is the function

    def fail(*args, **kwargs):
        raise RuntimeError("x" * 300 + "\n")

    for module, name in ((analyze_module, "analyze"), (records, "get_record"), (accuracy, "read_clip")):
        monkeypatch.setattr(module, name, fail)
    path = str(tmp_path / "a.wav")
    said = {analyze_module._analyze_one((path, None)).error, records._one((path, None, False)),
            accuracy._read_one((path, None, None))}
    assert said == {f"{path}: analysis failed (RuntimeError: {'x' * 200})"}
