"""ONNX export of the shipped torch models, so analysis runs in onnxruntime without torch (needs `train`).

`export_musicnn` writes weights/musicnn/{MSD,MTT}_musicnn.onnx from the safetensors ports;
`export_bundle` writes a bundle's model.onnx from its torch module, with one named input per entry of
the bundle's `inputs` (evidence, numeric, frontend) and the batch axis dynamic, and records the SHA-256
of the model.safetensors it came from (a stale export is refused at load). `songfeat train-default`
calls `export_bundle` on the bundle it writes; `songfeat export-onnx` reruns either on existing weights.
Every export is checked against the torch module on random and real-scale inputs before it is kept.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np

from . import atomic

OPSET = 17
CHECK_TOL = 1e-4  # exported graph vs torch module: max |onnx - torch| / (1 + |torch|) on the check inputs


def _check_target(path: Path) -> None:
    """Refuse a target .onnx that is a folder or a device (OutputError) before the export, not at the final rename."""
    from .output import check_output

    check_output(path, "the ONNX model")


def _export(module, args: tuple, input_names: list[str], output_names: list[str], metadata: dict[str, str]) -> bytes:
    """The module as ONNX bytes (TorchScript exporter, batch axis dynamic), with `metadata` in the model's props."""
    import onnx
    import torch

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding notes
        torch.onnx.export(module, args, buf, input_names=input_names, output_names=output_names, opset_version=OPSET,
                          dynamic_axes={n: {0: "batch"} for n in input_names + output_names}, dynamo=False,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _check(data: bytes, module, inputs: dict[str, np.ndarray], output_names: list[str], what: str) -> float:
    """Run the exported graph and the torch module on the same inputs; raise if they differ beyond CHECK_TOL
    (relative to 1 + |value|: tags are probabilities, musicnn's pooled embeddings reach ~130)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(output_names, inputs)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(v) for v in inputs.values()))
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    worst = max(float(np.max(np.abs(g - r.numpy()) / (1.0 + np.abs(r.numpy())))) for g, r in zip(got, ref))
    if not worst <= CHECK_TOL:
        raise RuntimeError(f"{what}: the ONNX export differs from the torch module by {worst:.2e} (> {CHECK_TOL}, relative)")
    return worst


def export_musicnn(out_dir: str | Path | None = None) -> dict[str, dict]:
    """Export both shipped musicnn taggers to ONNX (input `patches` [B, 187, 96]; outputs tags [B, 50],
    penultimate [B, 200], pooled [B, 1506] = mean then max pool), checked on random and fixture-scale inputs.
    Returns per model: file (its path), sha256, worst difference from torch."""
    import hashlib

    import torch

    from . import __version__, tagger
    from .models.musicnn import N_FRAMES, N_MELS

    class Tagger(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, patches):
            r = self.net(patches)
            return r["tags"], r["penultimate"], torch.cat([r["mean_pool"], r["max_pool"]], dim=1)

    out_dir = Path(out_dir) if out_dir else tagger.WEIGHTS_DIR
    for name in tagger.MODELS:
        _check_target(out_dir / tagger.ONNX_FILES[name])
    out_dir.mkdir(parents=True, exist_ok=True)  # a new folder is made, as check_output allows one
    rng = np.random.default_rng(0)
    report = {}
    for name in tagger.MODELS:
        module = Tagger(tagger.load_model(name)).eval()
        src = tagger.WEIGHTS_DIR / tagger._FILES[name]
        meta = {"source": src.name, "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                "exported_by": f"songfeat {__version__} songfeat.onnx_export.export_musicnn, torch {torch.__version__}",
                "tags": json.dumps(list(tagger.TAGS[name]))}
        example = torch.zeros(2, N_FRAMES, N_MELS)
        data = _export(module, (example,), ["patches"], list(tagger.ONNX_OUTPUTS), meta)
        # log-mel values lie in 0..~5: check on that scale, with 1 and 7 patches (the batch axis is dynamic)
        worst = max(_check(data, module, {"patches": (rng.random((n, N_FRAMES, N_MELS)) * 5).astype(np.float32)},
                           list(tagger.ONNX_OUTPUTS), f"musicnn {name}") for n in (1, 7))
        path = out_dir / tagger.ONNX_FILES[name]
        with atomic.replacing(path, "wb") as f:
            f.write(data)
        report[name] = {"file": str(path), "sha256": hashlib.sha256(data).hexdigest(), "max_rel_diff_vs_torch": worst}
    return report


def _input_width(bundle, name: str) -> tuple[int, ...]:
    """The per-row shape of one model input, read from the bundle's config."""
    if name == "numeric":
        return (len(bundle.numeric_inputs),)
    if name == "evidence":
        if bundle.evidence_width is None:
            raise ValueError("the bundle's config has no hparams.n_evidence: cannot size its evidence input")
        return (bundle.evidence_width,)
    if name == "frontend":
        return tuple(bundle.frontend.shape)
    raise ValueError(f"cannot export a model input named {name!r}")


def export_bundle(path: str | Path, model=None) -> dict:
    """Write `path`/model.onnx from the bundle's torch module (or `model`), checked against it on random
    inputs, with the SHA-256 of its model.safetensors in the ONNX metadata. Returns what was written."""
    import hashlib

    import torch

    from . import __version__
    from .bundle import CONFIG, ONNX, ONNX_SHA_KEY, Bundle, load_bundle, weights_sha256

    path = Path(path)
    loaded = load_bundle(path)
    _check_target(path / ONNX)
    config = loaded.config
    module = (model if model is not None else Bundle(config=config, path=path).model).eval()
    names = list(config.get("inputs") or getattr(module, "inputs", ()))
    if not names:
        raise ValueError(f"{path}: the bundle names no inputs")

    class Wrapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *xs):
            return self.net(**dict(zip(names, xs)))

    wrapped = Wrapped(module).eval()
    try:
        shapes = {n: _input_width(loaded, n) for n in names}
    except ValueError as e:  # an edited config: say which bundle, as every other refusal of one does
        from .errors import SongfeatError

        raise SongfeatError(path / CONFIG, str(e)) from None
    meta = {ONNX_SHA_KEY: weights_sha256(path), "inputs": json.dumps(names), "targets": json.dumps(config["targets"]),
            "exported_by": f"songfeat {__version__} songfeat.onnx_export.export_bundle, torch {torch.__version__}"}
    data = _export(wrapped, tuple(torch.zeros(2, *shapes[n]) for n in names), names, ["output"], meta)
    rng = np.random.default_rng(0)
    worst = max(_check(data, wrapped, {k: (rng.standard_normal((b, *shapes[k])) * scale).astype(np.float32) for k in names},
                       ["output"], str(path)) for b in (1, 5) for scale in (1.0, 5.0))
    with atomic.replacing(path / ONNX, "wb") as f:
        f.write(data)
    return {"file": str(path / ONNX), "sha256": hashlib.sha256(data).hexdigest(), "max_rel_diff_vs_torch": worst,
            "inputs": {n: list(s) for n, s in shapes.items()}}


__all__ = ["export_musicnn", "export_bundle", "OPSET", "CHECK_TOL"]
