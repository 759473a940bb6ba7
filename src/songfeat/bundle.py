"""A trained model on disk: `model.safetensors` (weights) + `config.json` (everything else).

The config records the model family and hyper-parameters, targets, the front-end spec, the
numeric inputs and where they come from, normalisation statistics, the split, held-out metrics
and data provenance, so a bundle alone is enough to analyze audio or to audit how it was made.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import features, models
from .errors import SongfeatError
from .frontend import FrontendSpec

FORMAT = "songfeat-bundle/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_DIR = Path(__file__).parent / "weights" / "default"


@dataclass
class Bundle:
    """A model with its config; `predict` takes raw inputs and returns values on the features' scale."""

    model: torch.nn.Module
    config: dict
    path: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.config["targets"])

    @property
    def frontend(self) -> FrontendSpec | None:
        spec = self.config.get("frontend")
        return FrontendSpec.from_dict(spec) if spec else None

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        return tuple(self.config.get("numeric_inputs") or ())

    @property
    def evidence_layout(self) -> list[dict] | None:
        """For models that read evidence: which blocks and parts, in order (see `songfeat.heads.layout`)."""
        return self.config.get("evidence_layout")

    @property
    def needs(self) -> tuple[str, ...]:
        """Which inputs the model reads: a subset of ("frontend", "numeric", "evidence")."""
        return tuple(self.config.get("inputs") or getattr(self.model, "inputs", ()))

    def _scaler(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if name not in self._cache:
            s = (self.config.get("scalers") or {}).get(name)
            self._cache[name] = None if s is None else (
                torch.tensor(s["mean"], dtype=torch.float32), torch.tensor(s["std"], dtype=torch.float32))
        return self._cache[name]

    def normalise(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Standardise an input with the statistics saved at training time (identity if none)."""
        s = self._scaler(name)
        if s is None:
            return x
        mean, std = s
        if name == "frontend" and mean.dim() == 1 and mean.numel() == x.shape[1]:  # per-channel stats
            mean, std = mean[None, :, None], std[None, :, None]
        return (x - mean) / torch.clamp(std, min=1e-8)

    @torch.no_grad()
    def predict(self, frontend: torch.Tensor | None = None, numeric: np.ndarray | torch.Tensor | None = None,
                evidence: np.ndarray | None = None) -> np.ndarray:
        """Run the model on a batch; returns [B, len(targets)], each clamped to its feature's range.

        `evidence` is the heads' per-window input vector (`songfeat.heads.assemble`), for models that read it.
        """
        kw = {}
        if "evidence" in self.needs:
            if evidence is None:
                raise ValueError("this model needs evidence vectors (tagger, VAD, dynamics)")
            kw["evidence"] = _tensor(evidence)
        if "frontend" in self.needs:
            if frontend is None:
                raise ValueError("this model needs a front-end tensor")
            kw["frontend"] = self.normalise("frontend", _tensor(frontend))
        if "numeric" in self.needs:
            if numeric is None:
                raise ValueError(f"this model needs numeric inputs {self.numeric_inputs}")
            kw["numeric"] = self.normalise("numeric", _tensor(numeric))
        self.model.eval()
        out = self.model(**kw).float().numpy()
        lows = np.array([features.BY_NAME[t].low for t in self.targets], dtype=np.float32)
        highs = np.array([features.BY_NAME[t].high for t in self.targets], dtype=np.float32)
        return np.clip(out, lows, highs)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 tensor of an input; read-only arrays (a store's memmap) are copied, as torch needs."""
    if isinstance(x, torch.Tensor):
        return x.float()
    a = np.asarray(x, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def save_bundle(path: str | Path, model: torch.nn.Module, config: dict, extra_files: dict[str, str] | None = None) -> Path:
    """Write a bundle atomically: into a temporary folder beside `path`, then renamed into place.

    `extra_files` (name -> text, e.g. a model card) are written into the same folder.
    """
    from safetensors.torch import save_model

    path = Path(path)
    cfg = dict(config)
    cfg.setdefault("format", FORMAT)
    cfg.setdefault("model", getattr(model, "family", type(model).__name__))
    cfg.setdefault("inputs", list(getattr(model, "inputs", ())))
    features.check_targets(cfg["targets"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_model(model, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(_strict(cfg), indent=2, allow_nan=False, default=_jsonable) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle should read like any other folder
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _strict(o):
    """NaN/inf (e.g. Pearson of a constant prediction) become null, so the config is strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to a bundle config")


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load a bundle folder; None or "default" means the model shipped inside the package."""
    from safetensors.torch import load_model

    p = DEFAULT_DIR if path in (None, "default") else Path(path)
    if not (p / CONFIG).is_file() or not (p / WEIGHTS).is_file():
        raise SongfeatError(p, f"not a model bundle (expected {CONFIG} and {WEIGHTS} inside)")
    try:
        config = json.loads((p / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise SongfeatError(p / CONFIG, f"invalid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise SongfeatError(p, f"unsupported bundle format {config.get('format')!r} (this songfeat reads {FORMAT})")
    model = models.create(config["model"], n_outputs=len(config["targets"]), **config.get("hparams", {}))
    try:
        load_model(model, str(p / WEIGHTS))
    except Exception as e:
        raise SongfeatError(p / WEIGHTS, f"weights do not fit model {config['model']!r} ({e})") from None
    model.eval()
    return Bundle(model=model, config=config, path=p)
