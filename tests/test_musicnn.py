"""musicnn in torch against the original TF graph, and songfeat's front-end against musicnn's (librosa) recipe.

The references in tests/fixtures/musicnn/reference.npz were recorded once from the wheel's own TF graph
by scripts/record_musicnn_reference.py (variables restored by name, none left uninitialised). No
TensorFlow is needed here. Both backends are held to the same tolerances: the torch port and its ONNX
export run in onnxruntime (what analysis uses), and both front-ends (numpy, torch).

Tolerances (also in docs/musicnn.md):
  * model, same input patches: tag probabilities within 1e-5 absolute; penultimate within 1e-4
    absolute (values within ±7); pooled within 1e-3 absolute + 1e-5 relative (values up to ~130, summed
    through three residual layers). Measured worst cases (2026-12-05, ONNX export and torch port): 1.3e-6 (tags),
    8.7e-6 (penultimate), 3.1e-4 (pooled, on a value near 36).
  * front-end, same decoded samples: log-mel (values 0..~5) within 1e-4 absolute everywhere and 2e-6
    on average. Measured worst: 2.6e-5 max, 5.6e-7 mean (torch front-end; numpy 1.9e-6, 1.1e-7).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from songfeat import tagger
from songfeat.errors import SongfeatError
from songfeat.musicnn_frontend import log_compress, log_mel_torch, slaney_mel_filterbank
from songfeat.models.musicnn import load_musicnn, tf_variable_map

FIX = Path(__file__).parent / "fixtures" / "musicnn"
REF = np.load(FIX / "reference.npz")
CLIPS = sorted({k.rsplit("_msd_tags", 1)[0] for k in REF.files if k.endswith("_msd_tags")})
AUDIO = sorted({k.rsplit("_mel", 1)[0] for k in REF.files if k.endswith("_mel")})
TAGS_ATOL = 1e-5
PEN_ATOL = 1e-4
POOL_ATOL, POOL_RTOL = 1e-3, 1e-5
MEL_MAX_ATOL, MEL_MEAN_ATOL = 1e-4, 2e-6


def ref_patches(clip: str) -> np.ndarray:
    """The patches TF saw: stored as such for the mp3, else cut from the reference log-mel."""
    if f"{clip}_patches" in REF.files:
        return REF[f"{clip}_patches"]
    mel = REF[f"{clip}_mel"]
    return np.stack([mel[s:s + 187] for s in REF[f"{clip}_starts"]])


@pytest.fixture(scope="module", params=["onnx", "torch"])
def torch_out(request) -> dict[str, dict[str, np.ndarray]]:
    return {c: tagger.run_patches(ref_patches(c), backend=request.param) for c in CLIPS}


def test_fixture_covers_the_clips():
    assert set(CLIPS) == {"fma_000002", "generated", "arovane_beat", "css10_es"}
    assert set(AUDIO) == {"generated", "arovane_beat", "css10_es"}


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("model", tagger.MODELS)
def test_torch_matches_tf_graph(torch_out, clip, model):
    out = torch_out[clip]
    np.testing.assert_allclose(out[f"{model}_tags"], REF[f"{clip}_{model}_tags"], rtol=0, atol=TAGS_ATOL)
    np.testing.assert_allclose(out[f"{model}_penultimate"], REF[f"{clip}_{model}_penultimate"], rtol=0, atol=PEN_ATOL)
    pooled = np.concatenate([REF[f"{clip}_{model}_mean_pool"], REF[f"{clip}_{model}_max_pool"]], axis=1)
    np.testing.assert_allclose(out[f"{model}_pooled"], pooled, rtol=POOL_RTOL, atol=POOL_ATOL)


def test_reference_clips_get_different_tags():
    """The float16 trap gave every clip the same tags; the references themselves must not."""
    means = np.stack([REF[f"{c}_msd_tags"].mean(0) for c in CLIPS])
    assert np.abs(means[:, None] - means[None]).max(axis=2)[np.triu_indices(len(CLIPS), 1)].min() > 0.05


@pytest.mark.parametrize("log_mel", [tagger.log_mel, log_mel_torch], ids=["numpy", "torch"])
@pytest.mark.parametrize("clip", AUDIO)
def test_frontend_matches_musicnn_recipe(clip, log_mel):
    sf = pytest.importorskip("soundfile")
    y, sr = sf.read(str(FIX / f"{clip}.flac"), dtype="float32")
    mel = log_mel(tagger.resample(y, sr))
    ref = REF[f"{clip}_mel"]
    assert mel.shape == ref.shape
    err = np.abs(mel - ref)
    assert err.max() < MEL_MAX_ATOL and err.mean() < MEL_MEAN_ATOL, (err.max(), err.mean())


def test_slaney_filterbank_is_librosas_default():
    import librosa

    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)
    np.testing.assert_allclose(slaney_mel_filterbank(16000, 512, 96), ref, rtol=1e-5, atol=1e-8)


def test_log_compress_stays_float32():
    """10000·x overflows float16 beyond x = 6.55; musicnn mel powers reach the thousands."""
    x = np.array([0.0, 1e-6, 7.0, 5000.0], dtype=np.float32)
    np.testing.assert_allclose(log_compress(x), np.log10(1e4 * x.astype(np.float64) + 1), rtol=1e-6)
    assert log_compress(x.astype(np.float16)).dtype == np.float32 and np.isfinite(log_compress(x.astype(np.float16))).all()


def test_numpy_frontend_equals_torch_frontend():
    """The lean path's log-mel against the torch path's on noise, a tone and a clip shorter than a frame."""
    rng = np.random.default_rng(3)
    for y in (rng.standard_normal(16000 * 7).astype(np.float32) * 0.2,
              (0.5 * np.sin(2 * np.pi * 220 * np.arange(40000) / 16000)).astype(np.float32),
              rng.standard_normal(200).astype(np.float32)):
        a, b = tagger.log_mel(y), log_mel_torch(y)
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.abs(a - b).max() < 1e-4


def test_shared_constants_match_the_torch_port():
    from songfeat.models import musicnn

    assert (tagger.BACKEND_UNITS, tagger.POOLED_CHANNELS) == (musicnn.BACKEND_UNITS, musicnn.POOLED_CHANNELS)


def test_onnx_files_are_the_recorded_export():
    """The shipped .onnx files are what provenance.json says; an export of the torch port reproduces them byte for byte."""
    import hashlib
    import json

    prov = json.loads((tagger.WEIGHTS_DIR / "provenance.json").read_text())["onnx"]
    for name, file in tagger.ONNX_FILES.items():
        stem = file.removesuffix(".onnx")
        assert hashlib.sha256((tagger.WEIGHTS_DIR / file).read_bytes()).hexdigest() == prov[stem]["sha256"]


@pytest.mark.slow
def test_musicnn_export_is_reproducible(tmp_path):
    """A fresh export of the torch port is the shipped file: the same graph, and the same constants up to float32
    rounding. Byte for byte it holds on the CPU family that exported it (the shipped files: an AMD EPYC VM); across
    families torch's vectorised sqrt and division can round the folded batch-norm scale weight / sqrt(var + eps) one or
    two units in the last place differently for a few channels (up to 1.9e-6 between the Intel export before it and an
    AMD EPYC), which the sha256 calls a different file."""
    onnx = pytest.importorskip("onnx")
    import hashlib

    from onnx import numpy_helper

    from songfeat.onnx_export import export_musicnn

    out = tmp_path / "a" / "new folder"  # made by the export (a traceback from deep inside it before)
    report = export_musicnn(out)
    for name, file in tagger.ONNX_FILES.items():
        if report[name]["sha256"] == hashlib.sha256((tagger.WEIGHTS_DIR / file).read_bytes()).hexdigest():
            continue
        fresh, shipped = onnx.load(str(out / file)), onnx.load(str(tagger.WEIGHTS_DIR / file))
        assert [(n.op_type, list(n.input), list(n.output)) for n in fresh.graph.node] == \
            [(n.op_type, list(n.input), list(n.output)) for n in shipped.graph.node], file
        got = {i.name: numpy_helper.to_array(i) for i in fresh.graph.initializer}
        want = {i.name: numpy_helper.to_array(i) for i in shipped.graph.initializer}
        assert got.keys() == want.keys(), file
        for k, w in want.items():
            g = got[k]
            assert g.shape == w.shape and g.dtype == w.dtype, (file, k)
            if w.dtype == np.float32:  # at most 4 float32 steps apart (same sign, so the integer views are monotone)
                assert np.array_equal(np.signbit(g), np.signbit(w)), (file, k)
                assert np.all(np.abs(g.view(np.int32).astype(np.int64) - w.view(np.int32).astype(np.int64)) <= 4), (file, k)
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{file} {k}")


def test_onnx_and_torch_describe_agree():
    """Whole describe() on real audio: numpy front-end + onnxruntime against torch front-end + torch port."""
    sf = pytest.importorskip("soundfile")
    for clip in AUDIO:
        y, sr = sf.read(str(FIX / f"{clip}.flac"), dtype="float32")
        a, b = tagger.describe(y, sr, 5, backend="onnx"), tagger.describe(y, sr, 5, backend="torch")
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4 if k.endswith("pooled") else 1e-5, err_msg=f"{clip} {k}")


def test_dead_filters_are_constants_at_the_input_range_ends():
    """The shipped graphs convolve only the live filters (the rest are constants, see conv_relu_bn_max): they must
    agree with the torch port, which keeps every filter, at the ends of the log-mel range the bound assumes (silence,
    and the loudest value audio within ±1 reaches) as much as in between, and leave out what docs/musicnn.md says."""
    import onnx

    from songfeat.models.musicnn import LOG_MEL_MAX, N_FRAMES, N_MELS

    rng = np.random.default_rng(3)
    patches = np.stack([np.zeros((N_FRAMES, N_MELS)), np.full((N_FRAMES, N_MELS), 7.7),
                        rng.random((N_FRAMES, N_MELS)) * LOG_MEL_MAX,
                        (rng.random((N_FRAMES, N_MELS)) < 0.5) * LOG_MEL_MAX]).astype(np.float32)
    a, b = tagger.run_patches(patches, backend="onnx"), tagger.run_patches(patches, backend="torch")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4 if k.endswith("pooled") else 1e-5, err_msg=k)
    live = {}
    for name in tagger.MODELS:
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(tagger.WEIGHTS_DIR / tagger.ONNX_FILES[name]))).graph
        shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in graph.value_info}
        weights = [shapes.get(n.input[1], ()) for n in graph.node if n.op_type == "Conv"]
        live[name] = sorted(w[0] for w in weights if len(w) == 4 and w[2] == 7)  # the timbral banks: 7 x 38, 7 x 67
    assert live == {"msd": [16, 32], "mtt": [80, 128]}, live  # 14 and 23, 80 and 115 live filters, padded to blocks of 16


def test_describe_shapes_and_patch_budget():
    sr = 44100
    y = np.random.default_rng(0).standard_normal(30 * sr).astype(np.float32) * 0.1
    patches = tagger.mel_patches(y, sr)
    assert patches.shape == (10, 187, 96)
    d = tagger.describe(y, sr)
    assert {k: v.shape for k, v in d.items()} == {k: (n,) for k, n in tagger.OUTPUTS}
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in d.values())
    assert tagger.vector(d).shape == (tagger.VECTOR_SIZE,)
    np.testing.assert_array_equal(tagger.vector(d)[tagger.layout()["mtt_tags"]], d["mtt_tags"])
    assert tagger.mel_patches(y, sr, max_patches=3).shape[0] == 3


def test_patches_spread_over_the_window():
    starts = tagger.patch_starts(3000, 10)
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == 3000 - 187
    assert np.all(np.diff(starts) >= 187)  # no overlap when there is room
    assert tagger.patch_starts(200, 10).tolist() == [0]


@pytest.mark.parametrize("seconds,patches", [(30.0, 5), (29.74, 10), (4.0, 5), (3.01, 3)])
def test_patches_read_only_their_frames_and_get_the_same_values(seconds, patches):
    # mel_patches transforms only the frames its patches cover (half of a 30-s window at 5 patches); each
    # patch must equal the same rows of the whole window's spectrogram, bit for bit.
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(3)
    y = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    spec = tagger.log_mel(tagger.resample(y, sr))
    starts = tagger.patch_starts(spec.shape[0], patches)
    want = np.stack([spec[s:s + 187] for s in starts])
    got = tagger.mel_patches(y, sr, patches)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_short_clip_is_tiled_not_padded():
    sr = 16000
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)  # 1 s
    p = tagger.mel_patches(y, sr)
    assert p.shape == (1, 187, 96)
    spec = tagger.log_mel(y)
    np.testing.assert_array_equal(p[0, spec.shape[0]:2 * spec.shape[0]], spec)  # repeated, no silent frames
    assert tagger.describe(y, sr)["msd_tags"].shape == (50,)


def test_describe_batch_equals_describe():
    sr = 22050
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4 * sr, 7 * sr))
    both = tagger.describe_batch([a, b], sr)
    for w, d in zip((a, b), both):
        one = tagger.describe(w, sr)
        for k in d:
            np.testing.assert_allclose(d[k], one[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad,sr", [(np.zeros(0, np.float32), 16000), (np.zeros((2, 100), np.float32), 16000),
                                    (np.array([np.nan] * 1000, np.float32), 16000), (np.ones(1000, np.float32), 0),
                                    (np.ones(1000, np.float32), 44100.5)])
def test_bad_windows_are_refused(bad, sr):
    with pytest.raises(ValueError):
        tagger.describe(bad, sr)


@pytest.mark.parametrize("model,file", [("msd", "MSD_musicnn"), ("mtt", "MTT_musicnn")])
def test_tag_names_are_the_weights_own(model, file):
    """The conversion wrote the wheel's label list into each file; our hard-coded names must be that list."""
    import json

    from safetensors import safe_open

    with safe_open(str(tagger.WEIGHTS_DIR / f"{file}.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["tags"]) == list(tagger.TAGS[model]) and len(tagger.TAGS[model]) == 50
    assert "ISC" in meta["licence"] and meta["source"].startswith("musicnn-0.1.0-py3-none-any.whl")


def test_loader_refuses_missing_or_unexpected_variables(tmp_path):
    from safetensors.torch import load_file, save_file

    src = tagger.WEIGHTS_DIR / "MSD_musicnn.safetensors"
    tensors = load_file(str(src))
    assert set(tensors) == set(tf_variable_map().values())
    missing = dict(tensors)
    missing.pop("conv2d_3/kernel")
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(SongfeatError, match="missing.*conv2d_3/kernel"):
        load_musicnn(tmp_path / "missing.safetensors")
    extra = {**tensors, "conv2d_8/kernel": torch.zeros(3)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(SongfeatError, match="unexpected.*conv2d_8/kernel"):
        load_musicnn(tmp_path / "extra.safetensors")
    bad = {**tensors, "dense/bias": torch.zeros(7)}
    save_file(bad, str(tmp_path / "shape.safetensors"))
    with pytest.raises(SongfeatError, match="dense/bias"):
        load_musicnn(tmp_path / "shape.safetensors")
    with pytest.raises(SongfeatError, match="missing"):
        load_musicnn(tmp_path / "absent.safetensors")


def test_tags_command_prints_top_tags_and_names_bad_files(tmp_path):
    from typer.testing import CliRunner

    from songfeat.cli import app

    res = CliRunner().invoke(app, ["tags", str(FIX / "arovane_beat.flac"), "--top", "3"])
    assert res.exit_code == 0, res.output
    assert "MSD: electronic" in res.output and res.output.count(",") == 4  # 3 tags per model line
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio")
    res = CliRunner().invoke(app, ["tags", str(bad)])
    assert res.exit_code == 1 and "bad.mp3" in res.output and "Traceback" not in res.output
    # only the error: a 'corrupt frames skipped' warning before it contradicted it
    assert res.stderr.strip().splitlines() == [f"songfeat: error: {bad}: not a readable audio file (no decoder recognises its format)",
                                               "songfeat: 1 of 1 inputs failed"]


def test_tags_of_a_file_are_those_of_its_louder_copy(tmp_path):
    """`songfeat tags` (`describe_file`) hears the file at the default model's tagger level: 12 dB quieter, same tags."""
    import soundfile as sf

    y, sr = sf.read(FIX / "arovane_beat.flac", dtype="float32")
    sf.write(tmp_path / "quiet.wav", y * 10 ** (-12 / 20), sr, subtype="FLOAT")
    loud, quiet = (tagger.vector(tagger.describe_file(p)) for p in (FIX / "arovane_beat.flac", tmp_path / "quiet.wav"))
    assert np.abs(loud - quiet).max() < 1e-3


def test_tags_of_a_song_whose_first_30_s_are_silent_says_so(tmp_path):
    """`tags` reads a file's first 30 s: a song starting with 35 s of silence was called silent ("audio is silent") though
    `analyze` reads it; the error now says which part was silent. A file silent throughout still reads as before."""
    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat.cli import app

    sr = 44100
    t = np.arange(5 * sr) / sr
    late, quiet = tmp_path / "late.wav", tmp_path / "quiet.wav"
    sf.write(late, np.concatenate([np.zeros(35 * sr), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32), sr)
    sf.write(quiet, np.zeros(5 * sr, np.float32), sr)
    res = CliRunner().invoke(app, ["tags", str(late), str(quiet)])
    assert res.exit_code == 1 and res.stderr.strip().splitlines() == [
        f"songfeat: error: {late}: its first 30 s, all that tags reads, are silent (peak below -90 dBFS, not counting a "
        "constant offset)",
        f"songfeat: error: {quiet}: audio is silent (peak below -90 dBFS, not counting a constant offset)",
        "songfeat: 2 of 2 inputs failed"], res.output


def test_tags_of_folders_without_audio_is_one_line_error(tmp_path):
    # a folder with no audio file in it exited 1 with nothing printed at all
    from typer.testing import CliRunner

    from songfeat.cli import app

    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    res = CliRunner().invoke(app, ["tags", str(tmp_path / "empty"), str(tmp_path / "docs")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "no audio files found" in lines[0], res.output  # as analyze
    assert str(tmp_path / "empty") in lines[0]
    same = CliRunner().invoke(app, ["analyze", str(tmp_path / "empty"), str(tmp_path / "docs")])
    assert same.exit_code == 2 and same.output == res.output


def test_tags_ends_with_the_count_of_failed_inputs(tmp_path, example_clip):
    # `tags` printed its error lines among the listings and exited 1 with no count, unlike `analyze`
    from typer.testing import CliRunner

    from songfeat.cli import app

    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    res = CliRunner().invoke(app, ["tags", str(example_clip), str(tmp_path / "bad.wav"), str(tmp_path / "gone.mp3")])
    assert res.exit_code == 1, res.output
    assert res.stderr.strip().splitlines()[-1] == "songfeat: 2 of 3 inputs failed"
    assert "MSD:" in res.stdout


def test_the_heads_tagger_block_does_not_follow_the_files_gain():
    """The heads read the tags of each window brought to one level (`evidence.TAGGER_LEVEL_DB`): the same music 6 or 12
    dB quieter gives the same vector (it moved the MTT voice words of a string orchestra 0.03 -> 0.08 -> 0.22 before),
    while the tagger itself still hears level; near-silence is not raised past the gain bound."""
    from songfeat import evidence, synth

    y = synth.chord_progression(0, 1, 12.0).astype(np.float32)
    y16 = evidence.resample16(0.5 * y / np.abs(y).max(), 44100)
    ref = evidence.tagger_block(y16)
    for db in (-6.0, -12.0):
        quiet = (y16 * 10 ** (db / 20)).astype(np.float32)
        assert np.abs(evidence.tagger_block(quiet) - ref).max() < 1e-3, db
        assert np.abs(tagger.vector(tagger.describe(quiet, sr=16000)) - tagger.vector(tagger.describe(y16, sr=16000))).max() > 0.05
    assert evidence.tagger_level_db(y16 * 10 ** (-6 / 20)) == pytest.approx(evidence.tagger_level_db(y16) - 6, abs=1e-6)
    hiss = (1e-6 * np.random.default_rng(0).standard_normal(16000 * 5)).astype(np.float32)  # -120 dB: at most +30 dB
    assert evidence.TAGGER_LEVEL_DB - evidence.tagger_level_db(hiss) > evidence.TAGGER_GAIN_DB[1]
    bounded = tagger.vector(tagger.describe(hiss * np.float32(10 ** (evidence.TAGGER_GAIN_DB[1] / 20)), sr=16000,
                                            max_patches=evidence.TAGGER_PATCHES))
    assert np.abs(evidence.tagger_block(hiss) - bounded).max() < 1e-4


def test_tags_says_damage_inside_the_30_s_it_reads(tmp_path):
    """`tags` stopped the decoder at 30 s before it warned: an mp3 damaged 4 s in, which PyAV reads on past (and
    `analyze` warns of), got no warning from tags."""
    import soundfile as sf
    from typer.testing import CliRunner

    from songfeat.cli import app

    sr = 44100
    t = np.arange(40 * sr) / sr
    path = tmp_path / "a.mp3"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size))
             .astype(np.float32), sr, format="MP3")
    b = bytearray(path.read_bytes())
    b[len(b) // 10:len(b) // 10 + 4096] = bytes(4096)
    path.write_bytes(bytes(b))
    res = CliRunner().invoke(app, ["tags", str(path)])
    assert res.exit_code == 0, res.output
    assert any(ln.startswith(f"songfeat: warning: {path}: soundfile stopped at ") and "PyAV read on past it to 3" in ln
               for ln in res.stderr.splitlines()), res.stderr
