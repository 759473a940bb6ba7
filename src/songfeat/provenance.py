"""Which source files make a result, and a fingerprint of them: caches and stored results key on it, so code that
measures differently is never served numbers an older version computed."""
from __future__ import annotations

import hashlib
from pathlib import Path

# everything between the audio file and the bundle's inputs: decoding, the measured descriptors and the heads' evidence
# the pretrained listeners' weight files (ONNX and safetensors) the heads' evidence is computed with
LISTENING_WEIGHTS = ("weights/musicnn", "weights/silero_vad")
# (features.py: the ranges and rounding descriptors and the genre prior clip their values with)
MEASURING_CODE = ("audio.py", "descriptors.py", "hpcp.py", "evidence.py", "vad.py", "pitch.py", "tagger.py", "musicnn_frontend.py",
                  "genre_prior.py", "mfcc.py", "features.py")


def source_digest(names: tuple[str, ...], folder: str | Path = Path(__file__).parent) -> "hashlib._Hash":
    """SHA-256 over each named file's name and bytes, in order (`folder`: the package directory)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes())
    return h


def weights_digest(h: "hashlib._Hash", folders: tuple[str, ...] = LISTENING_WEIGHTS,
                   root: str | Path = Path(__file__).parent) -> "hashlib._Hash":
    """Add each model file (*.onnx, *.safetensors) under `folders` to `h`, by relative name and SHA-256, in name order:
    new tagger or VAD weights change the evidence as new code does. A folder that is absent adds nothing."""
    root = Path(root)
    for folder in folders:
        files = sorted(p for p in (root / folder).glob("*") if p.suffix in (".onnx", ".safetensors") and p.is_file())
        for p in files:
            with open(p, "rb") as f:
                h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return h


__all__ = ["MEASURING_CODE", "LISTENING_WEIGHTS", "source_digest", "weights_digest"]
