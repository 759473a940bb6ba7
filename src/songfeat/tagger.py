"""The musicnn tagger: 50 MSD and 50 MagnaTagATune tag probabilities and embeddings for a mono window.

Audio flows: `musicnn_frontend` (16 kHz, 96 Slaney mel bands, log10(10000·x + 1) in float32, at most
`max_patches` 3-s patches spread evenly over the window) -> both models, patch by patch -> averages
over the patches. The models run as ONNX files (exported from the torch port `models.musicnn` by
`songfeat.onnx_export`) in onnxruntime; SONGFEAT_BACKEND=torch runs the torch port itself (and the
torch front-end), the reference the ONNX path is tested against. See docs/musicnn.md for the architecture, provenance and the two traps.

Outputs of `describe` (all float32, patch-averaged):
    msd_tags, mtt_tags            [50]   sigmoid tag probabilities, names in MSD_TAGS / MTT_TAGS
    msd_penultimate, ...          [200]  the back-end's dense layer after ReLU and batch norm
    msd_pooled, mtt_pooled        [1506] the 753 mid-end channels (561 front-end + 3x64 mid-end) pooled
                                         over time: mean (first 753) then max (last 753)
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from . import runtime
from .musicnn_frontend import MAX_PATCHES, N_MELS, PATCH_FRAMES, SAMPLE_RATE, levelled, log_mel, mel_patches, patch_starts, resample

__all__ = ["MSD_TAGS", "MTT_TAGS", "OUTPUTS", "SAMPLE_RATE", "describe", "describe_batch", "layout", "log_mel",
           "mel_patches", "patch_starts", "resample", "run_patches", "top_tags", "vector"]
WEIGHTS_DIR = Path(__file__).parent / "weights" / "musicnn"
MODELS = ("msd", "mtt")
_FILES = {"msd": "MSD_musicnn.safetensors", "mtt": "MTT_musicnn.safetensors"}
ONNX_FILES = {"msd": "MSD_musicnn.onnx", "mtt": "MTT_musicnn.onnx"}
BACKEND_UNITS = 200  # models.musicnn.BACKEND_UNITS (not imported: that module needs torch); a test keeps them equal
POOLED_CHANNELS = 753  # models.musicnn.POOLED_CHANNELS
ONNX_OUTPUTS = ("tags", "penultimate", "pooled")  # the exported graphs' outputs, pooled = [mean_pool, max_pool]

# From musicnn 0.1.0's configuration.py, in output order.
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad",
    "House", "happy")
MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral")
TAGS = {"msd": MSD_TAGS, "mtt": MTT_TAGS}

#: The arrays `describe` returns, with their lengths, in the order `vector` concatenates them.
OUTPUTS: tuple[tuple[str, int], ...] = (
    ("msd_tags", len(MSD_TAGS)), ("mtt_tags", len(MTT_TAGS)), ("msd_penultimate", BACKEND_UNITS),
    ("mtt_penultimate", BACKEND_UNITS), ("msd_pooled", 2 * POOLED_CHANNELS), ("mtt_pooled", 2 * POOLED_CHANNELS))
VECTOR_SIZE = sum(n for _, n in OUTPUTS)  # 3512


def layout() -> dict[str, slice]:
    """Where each output sits in `vector(...)`: name -> slice."""
    out, i = {}, 0
    for name, n in OUTPUTS:
        out[name] = slice(i, i + n)
        i += n
    return out


@lru_cache(maxsize=None)
def load_model(name: str):
    """One of the shipped torch models ('msd' or 'mtt'), loaded once per process (needs torch)."""
    from .models.musicnn import load_musicnn

    if name not in _FILES:
        raise ValueError(f"unknown musicnn model {name!r}; choose one of {', '.join(_FILES)}")
    return load_musicnn(WEIGHTS_DIR / _FILES[name], num_classes=len(TAGS[name]))


def onnx_session(name: str):
    """One of the shipped models as an onnxruntime session (created once per process)."""
    if name not in ONNX_FILES:
        raise ValueError(f"unknown musicnn model {name!r}; choose one of {', '.join(ONNX_FILES)}")
    path = WEIGHTS_DIR / ONNX_FILES[name]
    if not path.is_file():
        from .errors import SongfeatError

        raise SongfeatError(path, "musicnn ONNX file is missing (the package was installed without its weights)")
    return runtime.session(path)


def run_patches(patches: np.ndarray, backend: str | None = None) -> dict[str, np.ndarray]:
    """Both models on [P, 187, 96] patches -> per-patch arrays: {msd,mtt}_{tags,penultimate,pooled} [P, D].

    `backend` "onnx" (default: `runtime.backend()`) or "torch".
    """
    x = np.ascontiguousarray(patches, dtype=np.float32)
    if x.ndim != 3 or tuple(x.shape[1:]) != (PATCH_FRAMES, N_MELS):
        raise ValueError(f"patches must be [P, {PATCH_FRAMES}, {N_MELS}], got {tuple(x.shape)}")
    out: dict[str, np.ndarray] = {}
    if (backend or runtime.backend()) == "onnx":
        # one patch per call: a 5-patch batch's intermediates (~46 MB per timbral convolution) are fresh memory the
        # first runs of each session page in (~35 ms a model, twice), and one patch's fit the cache better; ~5% of a
        # batch's time. The values differ from a batched call's only in float rounding (~1e-7)
        for name in MODELS:
            res = [onnx_session(name).run(list(ONNX_OUTPUTS), {"patches": x[i:i + 1]}) for i in range(len(x))]
            for j, key in enumerate(ONNX_OUTPUTS):
                out[f"{name}_{key}"] = np.concatenate([r[j] for r in res])
        return out
    import torch

    x = torch.from_numpy(x)
    with torch.inference_mode():
        for name in MODELS:
            r = load_model(name)(x)
            out[f"{name}_tags"] = r["tags"].numpy()
            out[f"{name}_penultimate"] = r["penultimate"].numpy()
            out[f"{name}_pooled"] = torch.cat([r["mean_pool"], r["max_pool"]], dim=1).numpy()
    return out


def describe_batch(windows: list[np.ndarray], sr: int = 44100, max_patches: int = MAX_PATCHES,
                   backend: str | None = None) -> list[dict[str, np.ndarray]]:
    """`describe` for several windows, with all their patches in one `run_patches` call."""
    backend = backend or runtime.backend()
    patches = [mel_patches(w, sr, max_patches, backend=backend) for w in windows]
    if not patches:
        return []
    per_patch = run_patches(np.concatenate(patches), backend=backend)
    bounds = np.cumsum([0] + [len(p) for p in patches])
    return [{k: v[a:b].mean(axis=0).astype(np.float32) for k, v in per_patch.items()}
            for a, b in zip(bounds[:-1], bounds[1:])]


def describe(y: np.ndarray, sr: int = 44100, max_patches: int = MAX_PATCHES, backend: str | None = None) -> dict[str, np.ndarray]:
    """Tags and embeddings of one mono window (up to ~30 s), averaged over at most `max_patches` 3-s patches."""
    return describe_batch([y], sr, max_patches, backend)[0]


def vector(d: dict[str, np.ndarray]) -> np.ndarray:
    """`describe`'s dict flattened to one float32 [3512] vector in OUTPUTS order (see `layout`)."""
    return np.concatenate([np.asarray(d[k], dtype=np.float32).reshape(-1) for k, _ in OUTPUTS])


def top_tags(d: dict[str, np.ndarray], k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """The k most probable tags of each model, e.g. for a quick look at what the tagger heard."""
    return {m: [(TAGS[m][i], float(d[f"{m}_tags"][i])) for i in np.argsort(-d[f"{m}_tags"])[:k]] for m in MODELS}



def describe_file(path: str | Path, max_patches: int = MAX_PATCHES) -> dict[str, np.ndarray]:
    """`describe` of a file's first 30-s window (decoded at 44.1 kHz), brought to the level the default model's tagger
    hears (`musicnn_frontend.levelled`); SongfeatError for unreadable or silent audio."""
    from .audio import SAMPLE_RATE as AUDIO_SR
    from .audio import WINDOW_SECONDS, check_usable, load_audio, sound_peak

    y = load_audio(path, sr=AUDIO_SR, max_seconds=WINDOW_SECONDS)
    # tags reads no further than 30 s: a song whose first 30 s are silent was called silent as a whole
    cut = y.size >= WINDOW_SECONDS * AUDIO_SR
    check_usable(path, y.size, sound_peak(y),
                 silent=f"its first {WINDOW_SECONDS:g} s, all that tags reads, are silent" if cut else "audio is silent")
    return describe(levelled(resample(y, AUDIO_SR)), SAMPLE_RATE, max_patches)
