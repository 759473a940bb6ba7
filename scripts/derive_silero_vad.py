"""Derive songfeat's Silero VAD file from the silero-vad wheel's: the same model, its STFT as one matrix product.

    pip download silero-vad==6.2.3 --no-deps -d /tmp/silero
    python scripts/derive_silero_vad.py /tmp/silero/silero_vad-6.2.3-py3-none-any.whl   (needs the `train` extra: onnx)

The wheel's `silero_vad_16k_sequence.onnx` computes its STFT as a 1-D convolution (258 filters of 256 taps, stride
128, one input channel), which onnxruntime runs at about a tenth of a core's peak: a third of the VAD's time.
Its 5 frames per 512-sample chunk start every 128 samples and span 256, so they are pairs of neighbouring
128-sample blocks: the derived graph cuts the padded chunk into 6 blocks, pairs them, and multiplies by the same
258 x 256 basis (Slice, Reshape, Slice x 2, Concat, MatMul, Transpose in place of the Conv). Nothing else changes.
The script checks that the derived file gives bit for bit the original's speech probabilities on
generated speech-like, tonal and noise signals and on the test fixture reading, then writes
`weights/silero_vad/silero_vad_16k_frames.onnx` and prints both files' SHA-256 for PROVENANCE.md.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

from songfeat import atomic

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "songfeat" / "weights" / "silero_vad" / "silero_vad_16k_frames.onnx"
WHEEL_MEMBER = "silero_vad/data/silero_vad_16k_sequence.onnx"
CONV, PAD_OUT, BASIS = "/stft/Conv", "/stft/padding/Pad_output_0", "stft.forward_basis_buffer"


def original_bytes(source: Path) -> bytes:
    """The wheel's ONNX file, from the wheel itself or from the .onnx file already taken out of it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            return z.read(WHEEL_MEMBER)
    return source.read_bytes()


def derive(model_bytes: bytes) -> bytes:
    """The model with its STFT convolution replaced by block pairs times the same basis."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    idx = [i for i, n in enumerate(g.node) if n.name == CONV]
    basis = {t.name: t for t in g.initializer}.get(BASIS)
    if len(idx) != 1 or basis is None:
        raise SystemExit(f"not the expected Silero graph: no single {CONV} node or no {BASIS}")
    conv = g.node[idx[0]]
    w = numpy_helper.to_array(basis)  # [258, 1, 256]
    attrs = {a.name: list(a.ints) for a in conv.attribute if a.ints}
    if list(conv.input) != ["/stft/Unsqueeze_output_0", BASIS] or w.shape != (258, 1, 256) \
            or attrs.get("strides") != [128] or attrs.get("pads", [0, 0]) != [0, 0]:
        raise SystemExit(f"unexpected STFT convolution: inputs {list(conv.input)}, basis {w.shape}, {attrs}")
    hop = 128  # 256 taps = two hops: each frame is a pair of neighbouring blocks
    const = {"sf_0": [0], "sf_1": [1], "sf_5": [5], "sf_6": [6], "sf_used": [6 * hop], "sf_blocks_shape": [0, 6, hop]}
    g.initializer.extend(numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in const.items())
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, 0, :].T), "stft.frame_basis"))  # [256, 258]
    new = [helper.make_node("Slice", [PAD_OUT, "sf_0", "sf_used", "sf_1"], ["sf_used_samples"]),  # 5 frames use 768
           helper.make_node("Reshape", ["sf_used_samples", "sf_blocks_shape"], ["sf_blocks"]),  # [N, 6, 128]
           helper.make_node("Slice", ["sf_blocks", "sf_0", "sf_5", "sf_1"], ["sf_first"]),
           helper.make_node("Slice", ["sf_blocks", "sf_1", "sf_6", "sf_1"], ["sf_second"]),
           helper.make_node("Concat", ["sf_first", "sf_second"], ["sf_frames"], axis=2),  # [N, 5, 256]
           helper.make_node("MatMul", ["sf_frames", "stft.frame_basis"], ["sf_spec"]),  # [N, 5, 258]
           helper.make_node("Transpose", ["sf_spec"], [conv.output[0]], perm=[0, 2, 1])]  # [N, 258, 5], as the Conv gave
    del g.node[idx[0]]
    for k, n in enumerate(new):
        g.node.insert(idx[0] + k, n)
    g.initializer.remove(basis)
    if any("/stft/Unsqueeze_output_0" in n.input for n in g.node):
        raise SystemExit("the STFT's Unsqueeze output has another reader; not rewriting")
    g.node.remove(next(n for n in g.node if n.output and n.output[0] == "/stft/Unsqueeze_output_0"))
    _drop_unread_constants(g)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _drop_unread_constants(g) -> None:
    """Remove the constants (initializers and Constant nodes) that nothing reads any more, such as the removed
    Unsqueeze's axes: onnxruntime otherwise warns about each one whenever a session is created."""
    read = {o.name for o in g.output}

    def walk(graph) -> None:
        for n in graph.node:
            read.update(n.input)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sub)
    walk(g)
    for n in [n for n in g.node if n.op_type == "Constant" and not set(n.output) & read]:
        g.node.remove(n)
    for t in [t for t in g.initializer if t.name not in read]:
        g.initializer.remove(t)


def test_signals() -> list[np.ndarray]:
    """16-kHz signals that exercise the VAD's range: a reading (fixture), a glide with bursts, chords, noise."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 20) / 16000
    out = [sf.read(ROOT / "tests" / "fixtures" / "espeak_reading_16k.flac", dtype="float32")[0]]
    glide = np.sin(2 * np.pi * np.cumsum(140 + 60 * np.sin(2 * np.pi * 3 * t)) / 16000) * (np.sin(2 * np.pi * 4 * t) > 0)
    out.append(0.4 * glide + 0.01 * rng.standard_normal(t.size))
    out.append(0.2 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)))
    out.append(0.3 * rng.standard_normal(t.size))
    return [np.asarray(y, dtype=np.float32).reshape(-1) for y in out]


def run(model_bytes: bytes, y: np.ndarray) -> np.ndarray:
    """Per-frame speech probabilities of a 16-kHz signal as `songfeat.vad.speech_probs` gives them, from this model
    (each frame's depends on the LSTM state carried through every frame before it)."""
    import onnxruntime as ort

    from songfeat import vad

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return vad.speech_probs(y, vad.VAD_RATE, ort.InferenceSession(model_bytes, sess_options=opts,
                                                                  providers=["CPUExecutionProvider"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="silero_vad-6.2.3-py3-none-any.whl, or the .onnx file taken from it")
    args = ap.parse_args()
    orig = original_bytes(args.source)
    derived = derive(orig)
    for i, y in enumerate(test_signals()):
        if not np.array_equal(run(orig, y), run(derived, y)):
            sys.exit(f"signal {i}: the derived model's outputs differ from the original's; nothing written")
    with atomic.replacing(OUT, "wb") as f:
        f.write(derived)
    print(f"original {WHEEL_MEMBER}: sha256 {hashlib.sha256(orig).hexdigest()}")
    print(f"wrote {OUT.relative_to(ROOT)}: sha256 {hashlib.sha256(derived).hexdigest()} (outputs bit-identical on "
          f"{len(test_signals())} test signals)")


if __name__ == "__main__":
    main()
