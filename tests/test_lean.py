"""The lean runtime: analysis without torch and the research stack, equal to the torch path within tolerance.

Tolerance (also in the README, "Install"): the seven learned features within 1e-4 of the torch path
(unrounded here, and the printed 4-decimal values may then differ by at most one last digit), tempo,
key, mode, time signature and loudness identical (both paths measure them with the same numpy code).
A lean install is simulated in subprocesses by an import hook that makes the research modules missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from songfeat import analyze as analyze_mod  # noqa: F401  (the module, through sys.modules below)
from songfeat.bundle import DEFAULT_DIR, ONNX, WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fma-000002.mp3"
FIX = ROOT / "tests" / "fixtures"
A = sys.modules["songfeat.analyze"]
FEATURE_TOL = 1e-4
RESEARCH = ("torch", "pandas", "librosa", "scipy", "matplotlib", "sklearn", "pyarrow", "safetensors", "onnx",
            "numba", "spotipy", "requests", "fastapi", "ray")
EXACT = ("tempo", "key", "mode", "time_signature", "loudness", "duration_ms")


def _lean(args: list[str], blocked=RESEARCH, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`songfeat ARGS` in a fresh interpreter where the `blocked` top-level modules cannot be imported."""
    return _lean_python(f"sys.argv = ['songfeat'] + {args!r}\nfrom songfeat.cli import main\nmain()", blocked, cwd, env)


def _lean_python(code: str, blocked=RESEARCH, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Python `code` in a fresh interpreter where the `blocked` top-level modules cannot be imported."""
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {tuple(blocked)!r}
        class Missing(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Missing())
    """) + code
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _torch_features(path: Path, model=None, monkeypatch=None) -> tuple[dict, object]:
    """Unrounded learned features and descriptors of a file on the torch path."""
    monkeypatch.setenv("SONGFEAT_BACKEND", "torch")
    try:
        bundle = A.get_bundle(model)
        assert not bundle.use_onnx
        clip = A.read_clip(path, evidence_layout=bundle.evidence_layout)
        return A.predict_clip(bundle, clip), clip
    finally:
        monkeypatch.delenv("SONGFEAT_BACKEND")


def _onnx_features(path: Path, model=None) -> tuple[dict, object]:
    bundle = A.get_bundle(model)
    assert bundle.use_onnx
    clip = A.read_clip(path, evidence_layout=bundle.evidence_layout)
    return A.predict_clip(bundle, clip), clip


def _generated(tmp_path: Path) -> Path:
    """A generated clip (chords over a click track, 40 s: two windows, the second a short tail)."""
    import soundfile as sf

    from songfeat import synth

    sr = 44100
    music = synth.chord_progression(7, 1, seconds=40.0, sr=sr)
    clicks = synth.click_track(124, 40.0, sr=sr)
    n = min(music.size, clicks.size)
    path = tmp_path / "generated.flac"
    sf.write(str(path), (0.6 * music[:n] + 0.4 * clicks[:n]).astype(np.float32), sr)
    return path


@pytest.mark.parametrize("name", ["example", "generated", "musicnn/arovane_beat.flac", "musicnn/css10_es.flac",
                                  "espeak_reading_16k.flac"])
def test_onnx_path_equals_torch_path(name, tmp_path, monkeypatch):
    path = {"example": EXAMPLE, "generated": None}.get(name) or (FIX / name)
    if name == "generated":
        path = _generated(tmp_path)
    lean, lclip = _onnx_features(path)
    ref, rclip = _torch_features(path, monkeypatch=monkeypatch)
    assert lean.keys() == ref.keys()
    worst = max(abs(lean[k] - ref[k]) for k in lean)
    assert worst <= FEATURE_TOL, (name, worst)
    a, b = lclip.descriptors.to_dict(), rclip.descriptors.to_dict()
    for k in EXACT:
        assert a[k] == b[k], k
    # the heads' inputs themselves: tag log-odds, VAD and dynamics
    np.testing.assert_allclose(lclip.evidence, rclip.evidence, rtol=1e-4, atol=2e-3)


def test_lean_cli_prints_what_the_full_install_prints(monkeypatch):
    """`songfeat analyze` with torch, pandas, librosa, scipy, ... unimportable prints the full install's object."""
    res = _lean(["analyze", str(EXAMPLE)])
    assert res.returncode == 0, res.stderr
    lean = json.loads(res.stdout)
    monkeypatch.setenv("SONGFEAT_BACKEND", "torch")
    full = A.analyze(EXAMPLE)
    assert lean.keys() == full.keys()
    for k, v in full.items():
        if isinstance(v, float) and k not in EXACT:
            assert abs(lean[k] - v) <= FEATURE_TOL + 1e-9, k
        else:
            assert lean[k] == v, k


def test_lean_batch_in_worker_processes(tmp_path):
    """Two files with --workers 2 (forked workers, one thread each), lean: both analysed, JSON Lines."""
    a, b = tmp_path / "a.mp3", tmp_path / "b.mp3"
    shutil.copy(EXAMPLE, a)
    shutil.copy(EXAMPLE, b)
    res = _lean(["analyze", str(a), str(b), "--workers", "2", "--format", "jsonl"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(a), str(b)] and rows[0]["energy"] == rows[1]["energy"]


@pytest.mark.parametrize("args,command,extra", [
    (["analyze", str(EXAMPLE), "--format", "parquet", "-o", "OUT/x.parquet"], "analyze --format parquet", "parquet"),
    (["train-default", "--shared", "OUT"], "train-default", "train"),
    (["export-onnx"], "export-onnx", "train"),
    (["evaluate-sources", "--shared", "OUT"], "evaluate-sources", "train"),
    (["collect", "--genres", "pop", "--per-genre", "1", "--out", "OUT/t.csv"], "collect", "collect"),
    (["serve", "--library", "OUT"], "serve", "serve"),
    (["analysis", str(EXAMPLE), "--plot", "OUT/a.png"], "analysis --plot", "plot"),
    (["analyze", str(EXAMPLE), "--engine", "ray", "--format", "parquet", "-o", "OUT/r"], "analyze --engine ray", "ray"),
])
def test_a_missing_extra_is_named_in_one_line(tmp_path, args, command, extra):
    res = _lean([a.replace("OUT", str(tmp_path)) for a in args])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == f"songfeat: error: {command} needs the '{extra}' extra: pip install 'songfeat[{extra}]'\n"


COMMAND_EXTRA = {"serve": "serve", "build": "train", "train-heads": "train", "train-default": "train",
                 "evaluate-sources": "train", "check-behaviour": "train", "evaluate-audio": "train", "train": "train",
                 "evaluate": "train", "compare": "train", "export-onnx": "train", "collect": "collect",
                 "download": "collect"}


@pytest.mark.parametrize("command", sorted(COMMAND_EXTRA))
def test_a_bare_extra_only_command_names_its_extra_first(command):
    """A lean `songfeat serve` (or build, train-heads, ...) with no options said "missing option --library/-l", and only
    a run with every option filled in told the extra to install; its --help still shows without the extra."""
    extra = COMMAND_EXTRA[command]
    res = _lean([command])
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == f"songfeat: error: {command} needs the '{extra}' extra: pip install 'songfeat[{extra}]'\n"
    res = _lean([command, "--help"])
    assert res.returncode == 0 and res.stdout.startswith(f"Usage: songfeat {command} ") and res.stderr == ""


def test_the_whole_public_api_imports_and_documents_itself_on_the_lean_install():
    """`from songfeat import *` raised pandas' ModuleNotFoundError (open_store, in __all__, needs the 'train' extra), and
    help(songfeat) listed only analyze and analyze_many; open_store now says which extra it needs when called."""
    res = _lean_python(textwrap.dedent("""
        import pydoc
        import songfeat
        from songfeat import *
        print(pydoc.render_doc(songfeat, renderer=pydoc.plaintext))
        try:
            open_store("store")
        except ModuleNotFoundError as e:
            print("open_store:", e)
    """))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    functions = res.stdout.split("\nFUNCTIONS\n")[1].split("\nDATA\n")[0]
    for name in ("analyze", "analyze_many", "audio_analysis", "load_audio", "load_bundle", "open_store"):
        assert f"\n    {name}" in functions, name
    assert "class SongfeatError" in res.stdout
    assert "open_store: songfeat.open_store needs the 'train' extra: pip install 'songfeat[train]'\n" in res.stdout


def test_the_public_api_imports_with_pandas_but_no_torch():
    """With pandas installed but not torch (the 'ray' extra brings pandas, and many environments have it), `from songfeat
    import *` raised torch's ModuleNotFoundError: the store imports its front-end, which needs torch."""
    res = _lean_python(textwrap.dedent("""
        from songfeat import *
        try:
            open_store("store")
        except ModuleNotFoundError as e:
            print("open_store:", e)
    """), blocked=tuple(m for m in RESEARCH if m not in ("pandas", "pyarrow")))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout == "open_store: songfeat.open_store needs the 'train' extra: pip install 'songfeat[train]'\n"


def test_import_and_help_load_no_numpy():
    code = "import sys, songfeat.cli; print(sorted(m for m in ('numpy', 'onnxruntime', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_songfeat_is_the_cli():
    # `python -m songfeat` said "No module named songfeat.__main__" (a venv whose scripts are not on PATH has only that)
    out = subprocess.run([sys.executable, "-m", "songfeat", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("songfeat ") and "bundled model" in out.stdout, out


def test_default_onnx_is_the_export_of_its_weights(tmp_path):
    """The committed model.onnx records the SHA-256 of model.safetensors and is what export_bundle writes now."""
    pytest.importorskip("onnx")
    import hashlib

    from songfeat.onnx_export import export_bundle

    bundle = tmp_path / "default"
    shutil.copytree(DEFAULT_DIR, bundle)
    report = export_bundle(bundle)
    assert report["sha256"] == hashlib.sha256((DEFAULT_DIR / ONNX).read_bytes()).hexdigest()
    assert report["max_rel_diff_vs_torch"] < 1e-5


def test_stale_onnx_is_refused_and_a_bundle_without_one_runs_in_torch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from songfeat.errors import SongfeatError
    from songfeat.onnx_export import export_bundle

    bundle = tmp_path / "changed"
    shutil.copytree(DEFAULT_DIR, bundle)
    tensors = load_file(str(bundle / WEIGHTS))
    key = next(k for k in sorted(tensors) if k.endswith("skip.bias"))
    tensors[key] = tensors[key] + 0.5
    save_file(tensors, str(bundle / WEIGHTS))
    with pytest.raises(SongfeatError, match="export-onnx"):
        A.analyze(EXAMPLE, model=bundle)
    (bundle / ONNX).unlink()
    changed_torch = A.analyze(EXAMPLE, model=bundle)  # no model.onnx: the torch module
    assert not A.get_bundle(bundle).use_onnx
    export_bundle(bundle)  # get_bundle sees the new file and loads the bundle again
    changed_onnx = A.analyze(EXAMPLE, model=bundle)
    assert A.get_bundle(bundle).use_onnx
    default = A.analyze(EXAMPLE)
    assert any(abs(changed_onnx[k] - default[k]) > 1e-3 for k in ("danceability", "energy", "valence"))
    for k in ("danceability", "energy", "speechiness", "acousticness", "instrumentalness", "valence", "liveness"):
        assert abs(changed_onnx[k] - changed_torch[k]) <= FEATURE_TOL + 1e-9


def test_a_damaged_onnx_file_is_named(tmp_path):
    from songfeat.bundle import load_bundle
    from songfeat.errors import SongfeatError

    bundle = tmp_path / "damaged"
    shutil.copytree(DEFAULT_DIR, bundle)
    (bundle / ONNX).write_bytes((DEFAULT_DIR / ONNX).read_bytes()[:5000])  # a copy cut off part-way
    with pytest.raises(SongfeatError) as err:  # once reported against the audio file, as an onnxruntime error
        load_bundle(bundle).session()
    assert str(err.value).startswith(str(bundle / ONNX)) and "cannot load this ONNX model" in str(err.value)


@pytest.mark.parametrize("blocked", [("safetensors",), ("torch",)])
def test_a_torch_only_bundle_on_the_lean_install_names_itself_and_its_extra(tmp_path, blocked):
    """load_bundle of a bundle without model.onnx raised a bare ModuleNotFoundError('safetensors') (or torch's) on the
    lean install, and `analyze -m` named the extra but not the bundle: one SongfeatError now says both."""
    bundle = tmp_path / "torch-only"
    shutil.copytree(DEFAULT_DIR, bundle)
    (bundle / ONNX).unlink()
    said = (f"{bundle}: this model needs the 'train' extra: pip install 'songfeat[train]' (it runs in torch; "
            f"`songfeat export-onnx {bundle}`, where torch is installed, adds the {ONNX} that runs without it)")
    res = _lean_python(textwrap.dedent(f"""
        from songfeat.bundle import load_bundle
        from songfeat.errors import SongfeatError
        try:
            load_bundle({str(bundle)!r})
        except SongfeatError as e:
            print(e)
        """), blocked=blocked)
    assert res.returncode == 0 and res.stdout == said + "\n", res.stderr
    res = _lean(["analyze", str(EXAMPLE), "--model", str(bundle)], blocked=blocked)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"songfeat: error: {said}\n")


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _crash(_: object) -> None:
    os.kill(os.getpid(), 9)


def test_a_lone_forked_job_keeps_the_time_limit_and_crash_isolation():
    from songfeat.workers import run_jobs

    t = time.monotonic()
    (res,) = run_jobs(_sleep, [30.0], workers=1, timeout=0.5, fork=True)
    assert res.status == "timeout" and time.monotonic() - t < 10
    (res,) = run_jobs(_crash, [None], workers=1, timeout=5, fork=True)
    assert res.status == "crashed" and "SIGKILL" in res.value
    (res,) = run_jobs(_sleep, [0.01], workers=1, timeout=5, fork=True)
    assert res.ok and res.value == 0.01


FORK_PROBE = """
import os, threading
from songfeat.workers import run_jobs
def parents(**kw):
    return sorted({r.value for r in run_jobs(eval, ["__import__('os').getppid()"] * 4, workers=2, **kw)})
print(parents(fork=True) == [os.getpid()], parents() != [os.getpid()])
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
print(os.getpid() not in parents(fork=True))
stop.set()
t.join()
"""


def test_batch_workers_fork_this_process_when_it_is_safe():
    # A fork of the batch process starts in a few ms; the fork server costs a new interpreter and its imports
    # (~0.3 s a batch). With a thread running here a fork could copy a held lock: then the fork server.
    # A fresh process: this one may hold torch or onnxruntime sessions from other tests, where fork is not safe.
    p = subprocess.run([sys.executable, "-c", FORK_PROBE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "True", "True"], p.stdout


def _features_in_child(path: str) -> dict:
    return A.analyze(path)


def test_a_forked_child_makes_its_own_side_thread_and_sessions():
    """Threads do not survive fork(): a 'fork' child of a process that has analysed (so holds the tagger's
    side thread and onnxruntime sessions) must make its own instead of waiting on the parent's forever."""
    import multiprocessing as mp

    from songfeat import runtime

    runtime.set_threads(2)
    try:
        here = A.analyze(EXAMPLE)
        assert A._SIDE and runtime.open_sessions() >= 2
        with mp.get_context("fork").Pool(1) as pool:
            there = pool.apply_async(_features_in_child, (str(EXAMPLE),)).get(timeout=120)
    finally:
        runtime._threads = None
    assert there == here
