"""Record reference outputs of the ORIGINAL musicnn TF graph for tests/test_musicnn.py (run once, in a TF venv).

    .venv-tf/bin/python scripts/record_musicnn_reference.py /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

The graph is the wheel's own `models.define_model`; its variables are restored BY NAME from the wheel's
checkpoints with no initialiser run first, and the script stops if TF reports any variable left
uninitialised (musicnn's extractor hides a failed restore in a bare `except` and runs on random weights).

The reference front-end is musicnn's `batch_data` recipe in librosa, with its two changes spelt out:
  * the log compression is computed in float32 (the extractor's float16 cast overflows under numpy 2);
  * pad_mode='reflect' is passed explicitly: librosa < 0.10, which musicnn was trained with, defaulted to it.
Resampling is librosa's default today (soxr_hq).

Writes tests/fixtures/musicnn/: three short FLAC clips (a generated signal and two excerpts of public
clips, see tests/fixtures/ATTRIBUTION.md) and reference.npz with, per clip, the full log-mel
(`<clip>_mel`) and the first frames of the patches fed to TF (`<clip>_starts`; the mp3 stores its
`<clip>_patches` instead, as mp3 decoders differ), and per model (msd, mtt) the tags, penultimate,
mean_pool and max_pool of every patch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs tf_keras, not Keras 3
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet CUDA probing on CPU boxes

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "musicnn"
BEHAVIOUR = ROOT.parent / "shared" / "data" / "behaviour" / "clips"
N_FRAMES, SR = 187, 16000

# name -> (source, start s, seconds); None = generated here
CLIPS = {
    "generated": (None, 0.0, 4.5),
    "arovane_beat": (BEHAVIOUR / "electronic_arovane_beat_b_cc0.flac", 4.0, 6.5),  # CC0
    "css10_es": (BEHAVIOUR / "speech_css10_es.wav", 1.0, 3.5),  # public domain (LibriVox), 22.05 kHz
}
MP3 = ("fma_000002", ROOT / "examples" / "fma-000002.mp3", 2)  # only its patches are stored (mp3 decoders differ)


def generated(sr: int = 44100, seconds: float = 4.5) -> np.ndarray:
    """A chirp, an amplitude-modulated tone and noise bursts: broadband, with onsets, deterministic."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(7)
    chirp = 0.3 * np.sin(2 * np.pi * (60 * t + 0.5 * (3000 - 60) / seconds * t ** 2))
    tone = 0.2 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    bursts = 0.3 * rng.standard_normal(t.size) * ((t * 4) % 1 < 0.05)
    return (chirp + tone + bursts).astype(np.float32)


def write_clips() -> dict[str, tuple[np.ndarray, int]]:
    """Make the fixture FLACs (16-bit mono) and return what they decode to."""
    import soundfile as sf

    FIX.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (src, start, secs) in CLIPS.items():
        if src is None:
            y, sr = generated(), 44100
        else:
            info = sf.info(str(src))
            sr = info.samplerate
            y, _ = sf.read(str(src), start=int(start * sr), frames=int(secs * sr), dtype="float32", always_2d=True)
            y = y.mean(axis=1)
        path = FIX / f"{name}.flac"
        sf.write(str(path), y, sr, subtype="PCM_16")
        out[name] = (sf.read(str(path), dtype="float32")[0], sr)  # the quantised samples the test will read
    return out


def reference_mel(y: np.ndarray, sr: int) -> np.ndarray:
    """musicnn's extractor front-end in librosa, float32 throughout: [frames, 96]."""
    import librosa

    y16 = librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq") if sr != SR else y
    mel = librosa.feature.melspectrogram(y=y16, sr=SR, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect").T
    mel = mel.astype(np.float32)
    return np.log10(np.float32(10000) * mel + np.float32(1)).astype(np.float32)


def starts(mel: np.ndarray, n: int) -> np.ndarray:
    return np.round(np.linspace(0, mel.shape[0] - N_FRAMES, n)).astype(np.int64)


def patches(mel: np.ndarray, first: np.ndarray) -> np.ndarray:
    return np.stack([mel[s:s + N_FRAMES] for s in first]).astype(np.float32)


def run_tf(pkg_root: Path, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    sys.path.insert(0, str(pkg_root))
    from musicnn import configuration, models

    labels = configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS
    g = tf.Graph()
    with g.as_default():
        with tf.name_scope("model"):
            xp = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, configuration.N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            y, timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool, penultimate = models.define_model(
                xp, is_training, model, len(labels))
            tags = tf.nn.sigmoid(y)
        variables = tf.compat.v1.global_variables()
        saver = tf.compat.v1.train.Saver(var_list={v.op.name: v for v in variables})
        with tf.compat.v1.Session(graph=g) as sess:
            saver.restore(sess, str(pkg_root / "musicnn" / model) + "/")  # no try/except: a failure must stop us
            left = sess.run(tf.compat.v1.report_uninitialized_variables())
            if len(left):
                raise SystemExit(f"{model}: variables left uninitialised after restore: {left}")
            print(f"{model}: restored {len(variables)} variables by name, none uninitialised")
            t, p, mp, xp_ = sess.run([tags, penultimate, mean_pool, max_pool], feed_dict={xp: x, is_training: False})
    return {"tags": t, "penultimate": p, "mean_pool": mp, "max_pool": xp_}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    args = ap.parse_args()
    import librosa

    arrays: dict[str, np.ndarray] = {}
    clips = write_clips()
    inputs = {}
    for name, (y, sr) in clips.items():
        mel = reference_mel(y, sr)
        arrays[f"{name}_mel"] = mel
        arrays[f"{name}_starts"] = starts(mel, max(1, mel.shape[0] // N_FRAMES))  # patches = mel[s:s+187]
        inputs[name] = patches(mel, arrays[f"{name}_starts"])
    mname, mpath, n = MP3
    y, sr = librosa.load(str(mpath), sr=None, mono=True)
    mel = reference_mel(y, sr)
    inputs[mname] = arrays[f"{mname}_patches"] = patches(mel, starts(mel, n))
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.wheel) as z:
            z.extractall(tmp)
        for model, key in (("MSD_musicnn", "msd"), ("MTT_musicnn", "mtt")):
            x = np.concatenate(list(inputs.values()))
            out = run_tf(Path(tmp), model, x)
            bounds = np.cumsum([0] + [len(v) for v in inputs.values()])
            for (name, _), a, b in zip(inputs.items(), bounds[:-1], bounds[1:]):
                for k, v in out.items():
                    arrays[f"{name}_{key}_{k}"] = np.asarray(v[a:b], dtype=np.float32)
    arrays["versions"] = np.array([f"tensorflow {__import__('tensorflow').__version__}", f"librosa {librosa.__version__}",
                                   f"numpy {np.__version__}", f"wheel {args.wheel.name}"])
    np.savez_compressed(FIX / "reference.npz", **arrays)
    for name, x in inputs.items():
        top = np.argsort(-arrays[f"{name}_msd_tags"].mean(0))[:3]
        print(f"{name}: {len(x)} patches; MSD top tag indices {top.tolist()}")
    print(f"wrote {FIX / 'reference.npz'} ({(FIX / 'reference.npz').stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
