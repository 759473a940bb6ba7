"""Which source files make a result, and a fingerprint of them: caches and stored results key on it, so code that
measures differently is never served numbers an older version computed."""
from __future__ import annotations

import hashlib
from pathlib import Path

# everything between the audio file and the bundle's inputs: decoding, the measured descriptors and the heads' evidence
MEASURING_CODE = ("audio.py", "descriptors.py", "evidence.py", "vad.py", "pitch.py", "tagger.py", "musicnn_frontend.py",
                  "genre_prior.py", "mfcc.py")


def source_digest(names: tuple[str, ...], folder: str | Path = Path(__file__).parent) -> "hashlib._Hash":
    """SHA-256 over each named file's name and bytes, in order (`folder`: the package directory)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes())
    return h


__all__ = ["MEASURING_CODE", "source_digest"]
