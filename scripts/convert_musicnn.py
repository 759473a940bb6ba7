"""Convert the musicnn wheel's TF1 checkpoints (MSD_musicnn, MTT_musicnn) to safetensors for songfeat.

Run once, in a throwaway venv with TensorFlow (never a songfeat dependency):

    python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 safetensors librosa
    pip download musicnn==0.1.0 --no-deps -d /tmp/musicnn
    .venv-tf/bin/python scripts/convert_musicnn.py /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

It rebuilds musicnn's own graph (the wheel's models.py) to learn exactly which variables inference
restores, reads each of them BY NAME from the checkpoint (failing if any is absent), and writes them
under their TF names with TF layouts; songfeat.models.musicnn re-lays them for torch and again refuses
any missing or unexpected name. Provenance (wheel, sha256 of wheel and checkpoint files) goes into the
safetensors metadata and weights/musicnn/NOTICE.md.
"""
from __future__ import annotations

import argparse
import os
import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs tf_keras, not Keras 3
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet CUDA probing on CPU boxes

MODELS = ("MSD_musicnn", "MTT_musicnn")
OUT = Path(__file__).resolve().parents[1] / "src" / "songfeat" / "weights" / "musicnn"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_variables(pkg_root: Path, model: str) -> tuple[list[str], list[str]]:
    """Names of the global variables musicnn's graph for `model` creates (what saver.restore must fill), and its tags."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    sys.path.insert(0, str(pkg_root))
    from musicnn import configuration, models  # the wheel's own code

    labels = configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS
    g = tf.Graph()
    with g.as_default(), tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, configuration.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        models.define_model(x, is_training, model, len(labels))
        return [v.op.name for v in tf.compat.v1.global_variables()], list(labels)


def convert(wheel: Path, out: Path) -> dict:
    import tensorflow as tf
    from safetensors.numpy import save_file

    provenance = {"wheel": wheel.name, "wheel_sha256": sha256(wheel), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        root = Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for model in MODELS:
            ckpt_dir = root / "musicnn" / model
            names, tags = graph_variables(root, model)
            reader = tf.compat.v1.train.NewCheckpointReader(str(ckpt_dir) + "/")  # its `checkpoint` file names the author's paths
            in_ckpt = reader.get_variable_to_shape_map()
            missing = [n for n in names if n not in in_ckpt]
            if missing:
                raise SystemExit(f"{model}: variables the graph needs are absent from the checkpoint: {missing}")
            tensors = {n: np.ascontiguousarray(reader.get_tensor(n), dtype=np.float32) for n in names}
            skipped = sorted(n for n in in_ckpt if n not in tensors)  # optimiser slots, step counters
            files = {p.name: sha256(p) for p in sorted(ckpt_dir.iterdir()) if p.name.startswith(".")}
            meta = {"source": f"{wheel.name}:musicnn/{model}/", "wheel_sha256": provenance["wheel_sha256"],
                    "checkpoint_sha256": json.dumps(files), "licence": "ISC (Music Technology Group, UPF 2019)",
                    "authors": "Jordi Pons, Xavier Serra", "layout": "TensorFlow (conv HWIO, dense [in, out])",
                    "tags": json.dumps(tags)}  # the output order, from the wheel's configuration.py
            dest = out / f"{model}.safetensors"
            save_file(tensors, str(dest), metadata=meta)
            provenance["models"][model] = {"variables": len(tensors), "parameters": int(sum(t.size for t in tensors.values())),
                                           "skipped_checkpoint_entries": len(skipped), "checkpoint_files": files,
                                           "safetensors_sha256": sha256(dest)}
            print(f"{model}: {len(tensors)} variables, {provenance['models'][model]['parameters']} numbers "
                  f"({len(skipped)} optimiser/step entries skipped) -> {dest}")
    return provenance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path, help="musicnn-0.1.0-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    prov = convert(args.wheel, args.out)
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
