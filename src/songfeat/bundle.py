"""A trained model on disk: `model.safetensors` (weights) + `config.json` (everything else).

The config records the model family and hyper-parameters, targets, the front-end spec, the
numeric inputs and where they come from, normalisation statistics, the split, held-out metrics
and data provenance, so a bundle alone is enough to analyze audio or to audit how it was made.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import atomic, features
from .errors import SongfeatError, WorkFailed, counted, existing_ancestor, missing_package, needs_extra

FORMAT = "songfeat-bundle/1"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"  # the same model exported for onnxruntime (songfeat.onnx_export), used when present
ONNX_SHA_KEY = "songfeat_weights_sha256"  # ONNX metadata: the model.safetensors it was exported from
CONFIG = "config.json"
# provenance: source -> the content ids (`analyze.content_id`) of the clips the heads were fitted on, beside their track
# ids (`heads_clips`; a `songfeat train` bundle's: split -> its 'train' and 'val' clips'): evaluate-audio leaves out
# that audio, not a user's own clip that happens to share an id
FITTED_CONTENT = "heads_clip_content"
DEFAULT_DIR = Path(__file__).parent / "weights" / "default"


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a bundle's model.safetensors: what its model.onnx must have been exported from."""
    return hashlib.sha256((Path(path) / WEIGHTS).read_bytes()).hexdigest()


class Bundle:
    """A model with its config; `predict` takes raw inputs and returns values on the features' scale.

    Predictions run in onnxruntime when the folder holds a model.onnx exported from its weights (and
    SONGFEAT_BACKEND is not torch), else in torch. `model`, the torch module, is loaded on first use.
    """

    def __init__(self, model=None, config: dict | None = None, path: Path | None = None, use_onnx: bool = False):
        self._model = model
        self.config = config if config is not None else {}
        self.path = path
        self.use_onnx = use_onnx
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"Bundle(path={str(self.path)!r}, model={self.config.get('model')!r}, onnx={self.use_onnx})"

    @property
    def model(self):
        """The torch module (needs torch): given at construction, else loaded from the bundle's weights."""
        if self._model is None:
            self._model = _load_torch_model(self.path, self.config)
        return self._model

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.config["targets"])

    @property
    def frontend(self):
        """The front-end spec (songfeat.frontend.FrontendSpec) of models that read one, else None."""
        spec = self.config.get("frontend")
        if not spec:
            return None
        from .frontend import FrontendSpec

        return FrontendSpec.from_dict(spec)

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        return tuple(self.config.get("numeric_inputs") or ())

    def numeric_descriptor(self, name: str) -> str:
        """The `Descriptors` field that feeds numeric input `name`: the config's `numeric_descriptors` map, else `name`
        (the default listening model reads loudness as `loudness_bs1770`, the scale it was fitted with)."""
        return (self.config.get("numeric_descriptors") or {}).get(name, name)

    def numeric_row(self, desc) -> list[float]:
        """This model's numeric inputs, in order, from a song's `descriptors.Descriptors` (or its `to_dict()`)."""
        return numeric_values(desc, self.numeric_inputs, self.config.get("numeric_descriptors"))

    @property
    def evidence_layout(self) -> list[dict] | None:
        """For models that read evidence: which blocks and parts, in order (see `songfeat.heads.layout`)."""
        return self.config.get("evidence_layout")

    @property
    def evidence_width(self) -> int | None:
        """Columns of the evidence vector the model reads: the heads' own (`n_evidence`), then the ridge member's
        (`ridge_inputs`); None for models that read no evidence."""
        hp = self.config.get("hparams") or {}
        return None if hp.get("n_evidence") is None else int(hp["n_evidence"]) + int(hp.get("ridge_inputs", 0))

    @property
    def needs(self) -> tuple[str, ...]:
        """Which inputs the model reads: a subset of ("frontend", "numeric", "evidence")."""
        return tuple(self.config.get("inputs") or getattr(self.model, "inputs", ()))

    def _scaler(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        key = ("scaler", name)
        if key not in self._cache:
            s = (self.config.get("scalers") or {}).get(name)
            self._cache[key] = None if s is None else (
                np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32))
        return self._cache[key]

    def normalise(self, name: str, x: np.ndarray) -> np.ndarray:
        """Standardise an input (float32 numpy) with the statistics saved at training time (identity if none)."""
        x = np.asarray(x, dtype=np.float32)
        s = self._scaler(name)
        if s is None:
            return x
        mean, std = s
        if name == "frontend" and mean.ndim == 1 and mean.size == x.shape[1]:  # per-channel stats
            mean, std = mean[None, :, None], std[None, :, None]
        return ((x - mean) / np.maximum(std, np.float32(1e-8))).astype(np.float32, copy=False)

    def session(self):
        """The onnxruntime session of model.onnx (created on first use); refuses an export of other weights."""
        from . import runtime

        sess = runtime.session(self.path / ONNX)  # cached there (per process, fork-aware), not here
        if self._cache.get("verified") is not sess:
            recorded = sess.get_modelmeta().custom_metadata_map.get(ONNX_SHA_KEY)
            if recorded != weights_sha256(self.path):
                raise SongfeatError(self.path / ONNX, f"was exported from other weights than {WEIGHTS}; "
                                    f"export it again: songfeat export-onnx {self.path}")
            self._cache["verified"] = sess
        return sess

    def predict(self, frontend=None, numeric=None, evidence: np.ndarray | None = None) -> np.ndarray:
        """Run the model on a batch; returns [B, len(targets)], each clamped to `output_range`.

        `evidence` is the heads' per-window input vector (`songfeat.heads.assemble`), for models that read it.
        """
        kw = {}
        if "evidence" in self.needs:
            if evidence is None:
                raise ValueError("this model needs evidence vectors (tagger, VAD, pitch, spoken, dynamics)")
            kw["evidence"] = _array(evidence)
        if "frontend" in self.needs:
            if frontend is None:
                raise ValueError("this model needs a front-end tensor")
            kw["frontend"] = self.normalise("frontend", _array(frontend))
        if "numeric" in self.needs:
            if numeric is None:
                raise ValueError(f"this model needs numeric inputs {self.numeric_inputs}")
            kw["numeric"] = self.normalise("numeric", _array(numeric))
        if self.use_onnx:
            out = np.asarray(self.session().run(None, kw)[0], dtype=np.float32)
        else:
            import torch

            self.model.eval()
            with torch.no_grad():
                out = self.model(**{k: torch.from_numpy(v) for k, v in kw.items()}).float().numpy()
        return np.clip(out, *self.output_range())

    def output_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per target, the lowest and highest value `predict` returns (float32): the feature's own range, narrowed to
        the config's `label_range` where it has one (the default bundle: Spotify's catalogue, `default_model.RANGE_QUANTILE`)."""
        lows = np.array([features.BY_NAME[t].low for t in self.targets], dtype=np.float32)
        highs = np.array([features.BY_NAME[t].high for t in self.targets], dtype=np.float32)
        given = self.config.get("label_range") or {}
        for i, t in enumerate(self.targets):
            if t in given:
                lows[i], highs[i] = max(lows[i], given[t][0]), min(highs[i], given[t][1])
        return lows, highs


def _array(x) -> np.ndarray:
    """A contiguous, writeable float32 array of an input (numpy, a store's read-only memmap, or a torch tensor)."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    return np.array(a) if not (a.flags.writeable and a.flags.c_contiguous) else a


def save_bundle(path: str | Path, model, config: dict, extra_files: dict[str, str] | None = None,
                finish: Callable[[Path], object] | None = None) -> Path:
    """Write a bundle atomically: into a temporary folder beside `path`, then renamed into place.

    `extra_files` (name -> text, e.g. a model card) are written into the same folder. `finish(folder)` runs on the
    complete temporary bundle before the rename (e.g. `onnx_export.export_bundle`), so `path` never holds new weights
    beside an old model.onnx, whatever interrupts the run.
    """
    from safetensors.torch import save_model

    path = Path(path)
    cfg = dict(config)
    cfg.setdefault("format", FORMAT)
    cfg.setdefault("model", getattr(model, "family", type(model).__name__))
    cfg.setdefault("inputs", list(getattr(model, "inputs", ())))
    features.check_targets(cfg["targets"])
    with removing_folders(check_bundle_out(path)):  # the folders made for path.parent go again if nothing is written
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_model(model, str(tmp / WEIGHTS))
            (tmp / CONFIG).write_text(json.dumps(_strict(cfg), indent=2, allow_nan=False, default=_jsonable) + "\n")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            if finish is not None:
                finish(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle should read like any other folder
            for f in tmp.iterdir():
                os.chmod(f, 0o666 & ~umask)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                _remove(old)
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def write_bundle_or_fail(path: str | Path, model, config: dict, **kw) -> Path:
    """`save_bundle`, with a full disk or a permission once the fit is done as one line naming the bundle and status 1
    (`WorkFailed`), not a traceback, nor a refusal's 2 (train and train-heads)."""
    try:
        return save_bundle(path, model, config, **kw)
    except OSError as e:
        raise WorkFailed(path, f"cannot write the bundle ({e.strerror or e})") from None


def _remove(path: Path) -> None:
    """Delete a leftover `.<name>.old` whatever it is (a folder, or a file an older songfeat moved aside)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_bundle_out(path: Path) -> list[Path]:
    """Refuse to write over anything but a bundle or an empty folder (replacing `path` deletes what it held), and a path
    that cannot be created (under a file): callers with minutes of work ahead check this first. Returns the folders it
    made for the bundle (`atomic.make_folders`), for the caller to take away again if it then writes nothing
    (`atomic.remove_folders`, as `removing_folders` does)."""
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise SongfeatError(path, "exists and is not a model bundle folder; choose a new output folder")
        names = [q.name for q in path.iterdir()]
        if names and not ((path / CONFIG).is_file() and (path / WEIGHTS).is_file()):
            raise SongfeatError(path, "folder is not empty and holds no model bundle "
                                      f"({counted(len(names), 'entry', 'entries')}, e.g. "
                                      f"{sorted(names)[0]!r}); writing a bundle there would delete them: choose a new output folder")
    else:
        p = existing_ancestor(path.parent)
        if not p.is_dir():
            raise SongfeatError(path, f"cannot be created: {p} is not a folder")
    made: list[Path] = []
    try:  # the bundle is written beside `path` and renamed: a read-only place failed only at the end, naming a temp folder
        made = atomic.make_folders(path.parent)
        atomic.probe_folder(path.parent, path.name)
    except OSError as e:
        atomic.remove_folders(made)
        raise SongfeatError(path, f"cannot be written ({e.strerror or e})") from None
    return made


@contextlib.contextmanager
def removing_folders(made: list[Path]) -> Iterator[None]:
    """Run the work that is to write a bundle into folders `check_bundle_out` made: if it fails, is refused or is
    interrupted, those folders are taken away again while empty (a failed `train --out new/dir/b` left new/ behind)."""
    try:
        yield
    except BaseException:
        atomic.remove_folders(made)
        raise


@contextlib.contextmanager
def writing_bundle(path: Path) -> Iterator[None]:
    """Hold the run that is to write a bundle at `path` (train, train-heads): `check_bundle_out` first, then
    `atomic.RunLock` on `<path>.lock` to the run's end, refusing a second run into the same folder at once (two trains
    shared `<path>.training/`, and the later rename replaced the first's bundle while both said 'wrote'); the folders
    made for `path` go again if the run is refused, fails or is interrupted (`removing_folders`)."""
    with removing_folders(check_bundle_out(path)), atomic.RunLock(path, advice="choose another --out"):
        yield


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


def numeric_values(desc, names, descriptors: dict[str, str] | None = None) -> list[float]:
    """Numeric inputs `names` from a `Descriptors` or its dict, each read from the field `descriptors` maps it to
    (a bundle's `numeric_descriptors`), else from the field of its own name."""
    fields = [(descriptors or {}).get(n, n) for n in names]
    values = desc.numeric(fields) if hasattr(desc, "numeric") else [float(desc[f]) for f in fields]
    return features.model_numeric(list(names), values).tolist()


def bundle_folder(path: str | Path | None = None) -> Path:
    """The folder of a bundle (None or "default": the bundled model), checked to hold one; else one SongfeatError that
    tells a mistyped path ("no such model bundle folder") from a folder holding something else."""
    folder = DEFAULT_DIR if path in (None, "default") else Path(path)
    try:  # a folder it may not look into (no search permission) refuses even the stat: a traceback, not an answer
        if not folder.exists():
            raise SongfeatError(folder, "no such model bundle folder")
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise SongfeatError(folder, f"not a model bundle (expected {CONFIG} and {WEIGHTS} inside)")
    except OSError as e:
        raise SongfeatError(folder, f"cannot read the model ({e.strerror or e})") from None
    return folder

def fingerprint(path: str | Path | None = None) -> str:
    """SHA-256 over a bundle folder's files (names and bytes; None or "default": the bundled model), so a result can
    say which model wrote it and a resumed run can refuse to mix two models. Its documents (*.md: the model card) are
    left out: editing a card changes nothing the model computes, so results written before stay its results.
    Raises SongfeatError for a non-bundle."""
    folder = bundle_folder(path)
    h = hashlib.sha256()
    try:
        for f in sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix.lower() != ".md"):
            h.update(f.relative_to(folder).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:  # in blocks: a user's bundle may hold large weights
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    except OSError as e:
        raise SongfeatError(folder, f"cannot read the model ({e.strerror or e})") from None
    return h.hexdigest()


def model_id(path: str | Path | None = None) -> str:
    """The short name of a model in result rows ("model"): the first 12 hex digits of its `fingerprint`."""
    return fingerprint(path)[:12]


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load a bundle folder; None or "default" means the model shipped inside the package.

    With a model.onnx beside the weights (and SONGFEAT_BACKEND not torch) it runs in onnxruntime and
    torch is never imported; otherwise the torch module is built now, so bad weights fail here.
    """
    from . import runtime

    p = bundle_folder(path)
    try:
        config = json.loads((p / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SongfeatError(p / CONFIG, f"invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise SongfeatError(p / CONFIG, f"holds a JSON {type(config).__name__}, not a bundle config object")
    if config.get("format") != FORMAT:
        raise SongfeatError(p, f"unsupported bundle format {config.get('format')!r} (this songfeat reads {FORMAT})")
    _check_config(p / CONFIG, config)
    if runtime.backend() == "onnx" and (p / ONNX).is_file() and config.get("inputs"):
        return Bundle(config=config, path=p, use_onnx=True)
    return Bundle(model=_load_torch_model(p, config), config=config, path=p)


def _check_config(file: Path, config: dict) -> None:
    """The keys every bundle needs, with the right types, and scalers as wide as the inputs: an edited or truncated
    config fails here by name instead of deep inside torch (or, worse, with scalers silently broadcast)."""
    if not isinstance(config.get("model"), str):
        raise SongfeatError(file, "no 'model' name")
    targets = config.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise SongfeatError(file, "'targets' must be a non-empty list of feature names")
    try:
        features.check_targets(tuple(targets))
    except ValueError as e:
        raise SongfeatError(file, str(e)) from None
    for key in ("hparams", "scalers", "split"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise SongfeatError(file, f"{key!r} must be an object, not {type(config[key]).__name__}")
    numeric = config.get("numeric_inputs") or []
    scalers = config.get("scalers") or {}
    for name, s in scalers.items():
        try:
            mean, std = np.asarray(s["mean"], dtype=np.float64), np.asarray(s["std"], dtype=np.float64)
        except (TypeError, KeyError, ValueError):
            raise SongfeatError(file, f"scaler {name!r} needs numeric 'mean' and 'std' lists") from None
        if mean.shape != std.shape or (name == "numeric" and numeric and mean.shape != (len(numeric),)):
            raise SongfeatError(file, f"scaler {name!r} has mean {mean.shape} and std {std.shape}, "
                                      f"not one value per input" + (f" ({len(numeric)})" if name == "numeric" else ""))


def _load_torch_model(p: Path, config: dict):
    """Build a bundle's torch module from its config and load its weights (needs the `train` extra).

    Raises SongfeatError naming the bundle and the extra on an install without torch or safetensors (it was their bare
    ModuleNotFoundError)."""
    try:
        from safetensors.torch import load_model

        from . import models
    except ModuleNotFoundError as e:
        if missing_package(e) not in ("safetensors", "torch"):
            raise
        raise SongfeatError(p, f"{needs_extra('this model', 'train')} (it runs in torch; `songfeat export-onnx {p}`, "
                               f"where torch is installed, adds the {ONNX} that runs without it)") from None

    try:
        model = models.create(config["model"], n_outputs=len(config["targets"]), **(config.get("hparams") or {}))
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise SongfeatError(p / CONFIG, f"cannot build model {config['model']!r} from this config ({type(e).__name__}: "
                                        f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no message'})") from None
    try:
        load_model(model, str(p / WEIGHTS))
    except Exception as e:
        raise SongfeatError(p / WEIGHTS, f"weights do not fit model {config['model']!r} ({_first_problem(e)}); does "
                                         f"{CONFIG} belong with them?") from None
    model.eval()
    return model


def _first_problem(e: Exception) -> str:
    """torch's load error in short: its first problem and how many more (it lists every tensor, ~2,000 characters)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    problems = [ln for ln in lines if ln.split(" ", 1)[0] in ("size", "Missing", "Unexpected")] or lines[:1]
    if not problems:
        return type(e).__name__
    more = len(problems) - 1
    return problems[0].rstrip(".") + (f"; and {more} more" if more else "")
