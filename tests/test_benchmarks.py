"""The benchmark scripts' cheap paths: --help, and one error line (no traceback) for a missing peer library, a folder
without audio, unreadable audio or a count of zero, each before any timing starts. No benchmark is run here."""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "benchutil")


def run(script: str, *args: str, block: str | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    """`python benchmarks/<script>.py args` with `block` made unimportable (a package that raises ModuleNotFoundError
    first on PYTHONPATH, as an install without it would)."""
    env = dict(os.environ)
    if block is not None:
        assert tmp is not None
        pkg = tmp / "blocked" / block
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{block}'\", name={block!r})\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "blocked"), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def one_error_line(r: subprocess.CompletedProcess, script: str) -> str:
    """The single stderr line of a failed run, which names the script."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1, (r.returncode, r.stderr[-1500:])
    assert lines[0].startswith(f"{script}: "), lines[0]
    return lines[0]


def test_every_benchmark_is_listed() -> None:
    assert set(SCRIPTS) == {"bench_analysis", "bench_analyze", "bench_build", "bench_descriptors", "bench_distributed",
                            "bench_measured", "bench_serve", "bench_tagger", "bench_train", "librosa_baseline",
                            "profile_tagger"}


@functools.cache
def help_text(script: str) -> str:
    """`benchmarks/<script>.py --help`'s output (asserted to be a usage text)."""
    r = run(script, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr[-1500:]
    return r.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    # librosa_baseline.py took '--help' for an audio file and died in audioread with a traceback
    help_text(script)


def test_documented_benchmark_commands_name_options_they_have() -> None:
    # as tests/test_docs.py does for `songfeat CMD`: a renamed option stays in the docs unnoticed otherwise
    wrong = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(BENCH.glob("*.py"))]:
        for script, rest in re.findall(r"benchmarks/(\w+)\.py([^\n`|]*)", doc.read_text(encoding="utf-8")):
            if script not in SCRIPTS:
                wrong += [] if doc.name == "benchutil.py" else [f"{doc.name}: benchmarks/{script}.py: no such script"]
                continue
            have = set(re.findall(r"--[\w-]+", help_text(script)))
            given = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest.split(" #")[0])
            wrong += [f"{doc.name}: benchmarks/{script}.py {o}" for o in given if o not in have]
    assert not wrong, wrong


@pytest.mark.parametrize("script,module,args", [
    ("bench_analyze", "librosa", ["--files", "1"]),
    ("bench_build", "librosa", ["--generated", "1"]),
    ("bench_measured", "librosa", ["--only", "librosa"]),
    ("bench_tagger", "torch", ["--windows", "1"]),
    ("bench_train", "torch", ["--n", "40"]),
    ("bench_serve", "requests", ["--files", "1"]),
    ("bench_distributed", "ray", ["--files", "1"]),
    ("librosa_baseline", "librosa", [str(ROOT / "examples" / "fma-000002.mp3")]),
    ("bench_descriptors", "essentia", ["--files", "1", "--only", "essentia"]),  # was a note, then a line not naming it
    ("profile_tagger", "onnx", ["--int8"]),  # said `pip install -e '.[train]'`: without the constraints, CUDA torch
])
def test_missing_peer_library_is_one_line(script: str, module: str, args: list[str], tmp_path: Path) -> None:
    line = one_error_line(run(script, *args, block=module, tmp=tmp_path), script)
    assert f"{module} is not installed" in line and "pip install -c constraints.txt" in line, line


@pytest.mark.parametrize("script,args", [
    ("bench_analyze", ["--files", "1", "--audio"]),
    ("bench_tagger", ["--windows", "1", "--audio"]),
])
def test_audio_folder_without_audio_is_one_line(script: str, args: list[str], tmp_path: Path) -> None:
    # bench_analyze: IndexError on files[0]; bench_tagger: ZeroDivisionError after timing nothing
    (tmp_path / "notes.txt").write_text("not audio\n")
    line = one_error_line(run(script, *args, str(tmp_path)), script)
    assert str(tmp_path) in line, line


@pytest.mark.parametrize("script,args", [
    ("bench_analyze", ["--files", "1", "--audio"]),
    ("bench_descriptors", ["--files", "1", "--repeat", "1", "--only", "librosa", "--audio"]),  # (without essentia,
])                                                                                          # a note says it is left out)
def test_unreadable_audio_is_one_line(script: str, args: list[str], tmp_path: Path) -> None:
    # an .mp3 no decoder reads: a traceback from songfeat.audio (or from librosa's audioread in a child process)
    bad = tmp_path / "junk.mp3"
    bad.write_bytes(b"this is not an mp3\n" * 10)
    line = one_error_line(run(script, *args, str(tmp_path)), script)
    assert f"{bad}: not a readable audio file" in line, line


def test_bench_analysis_names_a_missing_clip(tmp_path: Path) -> None:
    line = one_error_line(run("bench_analysis", "--repeat", "1", "--clip", str(tmp_path / "nope.mp3")), "bench_analysis")
    assert "nope.mp3: no such file" in line, line


@pytest.mark.parametrize("script,args", [
    ("bench_analysis", ["--repeat", "0"]),        # statistics.StatisticsError after the whole warm-up
    ("profile_tagger", ["--runs", "0"]),          # ZeroDivisionError after profiling
    ("bench_build", ["--generated", "1", "--limit", "0"]),  # ZeroDivisionError after both loops
])
def test_counts_below_one_are_refused(script: str, args: list[str]) -> None:
    line = one_error_line(run(script, *args), script)
    assert "must be at least 1" in line, line


def test_bench_tagger_layer_by_layer_graph_runs_the_current_model() -> None:
    # the layer-by-layer peer replaced models.musicnn.conv_relu_bn_max with a 3-argument lambda; the model now passes
    # a 4th (h_max), so every run of bench_tagger.py died with a TypeError
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_tagger", BENCH / "bench_tagger.py")
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    from songfeat import tagger
    from songfeat.models import musicnn as mm

    net = tagger.load_model("msd")
    x = torch.from_numpy(__import__("numpy").random.default_rng(0).random((1, 187, 96), dtype="float32") * 3)
    fused = mm.conv_relu_bn_max
    with torch.inference_mode():
        want = net(x)["tags"]
        mm.conv_relu_bn_max = bt.layer_by_layer
        try:
            got = net(x)["tags"]
        finally:
            mm.conv_relu_bn_max = fused
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ---- songfeat.onnx_export's error paths (export-onnx) --------------------------------------------


def test_export_onnx_names_the_bundle_of_an_unexportable_input(tmp_path: Path) -> None:
    # 'cannot export a model input named ...' without the bundle: the one export error line that did not say which
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import json
    import shutil

    from typer.testing import CliRunner

    from songfeat.bundle import DEFAULT_DIR
    from songfeat.cli import app

    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_DIR, bundle)
    config = json.loads((bundle / "config.json").read_text())
    config["inputs"] = ["bogus"]
    (bundle / "config.json").write_text(json.dumps(config))
    before = (bundle / "model.onnx").read_bytes()
    res = CliRunner().invoke(app, ["export-onnx", str(bundle)])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1, res.output
    assert f"{bundle / 'config.json'}: " in lines[0] and "'bogus'" in lines[0], lines[0]
    assert (bundle / "model.onnx").read_bytes() == before
