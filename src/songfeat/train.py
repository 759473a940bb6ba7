"""Training: an in-memory `Dataset`, a fast deterministic `fit` loop, and `train_bundle` that writes a bundle.

The core works on arrays (front-end [N, C, T], numeric [N, F], targets [N, K], ids), so the same code
trains on a dataset store, a synthetic set or one cross-validation fold. Inputs are standardised with
statistics of the training split only (per front-end channel, per numeric column) and those statistics
go into the bundle, where `Bundle.predict` applies them again.
"""
from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import features, models
from .data.dataset import Dataset, dataset_from_store

#: The seed's per-family defaults: targets, loss, epochs (report / slides), batch size.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "numeric-mlp": {"targets": features.SEED_TARGETS, "loss": "mse", "epochs": 100, "batch_size": 32, "lr": 1e-3},
    "cnn-simple": {"targets": ("danceability",), "loss": "mse", "epochs": 20, "batch_size": 32, "lr": 1e-3},
    "cnn-valence": {"targets": ("valence",), "loss": "mse", "epochs": 20, "batch_size": 32, "lr": 1e-3},
    "lstm-simple": {"targets": ("danceability",), "loss": "mse", "epochs": 20, "batch_size": 32, "lr": 1e-3},
    "lstm-multitask": {"targets": features.SEED_TARGETS, "loss": "smoothl1", "epochs": 20, "batch_size": 32, "lr": 1e-3},
    "cnn-complex": {"targets": features.SEED_TARGETS, "loss": "mse", "epochs": 6, "batch_size": 32, "lr": 1e-3},
    "combiner": {"targets": features.SEED_TARGETS, "loss": "mse", "epochs": 6, "batch_size": 32, "lr": 1e-3},
    # not a seed family: a head over cached embeddings (`--frontend musicnn` stores), all seven learned features
    "mlp-head": {"targets": features.LEARNED, "loss": "mse", "epochs": 100, "batch_size": 32, "lr": 1e-3},
}
LOSSES = {"mse": torch.nn.functional.mse_loss, "mae": torch.nn.functional.l1_loss,
          "smoothl1": torch.nn.functional.smooth_l1_loss}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
DEFAULT_THREADS = 2  # the project's CI and dev boxes have 2 cores


# ---- data ---------------------------------------------------------------------------------------


def _as_dataset(store_or_dataset: Any, targets: Sequence[str], numeric_inputs: Sequence[str] | None,
                numeric_source: str, needs_frontend: bool) -> Dataset:
    if isinstance(store_or_dataset, Dataset):
        d = store_or_dataset
        if numeric_inputs and d.numeric is None:
            raise ValueError("this model needs numeric inputs but the dataset has none")
        if needs_frontend and d.frontend is None:
            raise ValueError("this model needs a front-end tensor but the dataset has none")
        return d.select_targets(targets)
    return dataset_from_store(store_or_dataset, targets, numeric_inputs=numeric_inputs,
                              numeric_source=numeric_source, frontend=needs_frontend)


# ---- splits -------------------------------------------------------------------------------------


def make_split(ids: Sequence[str], kind: str = "random", seed: int = 42, groups: Sequence[str] | None = None,
               fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Train/val/test id lists: "random" or "artist" (no artist on both sides, a collaboration with its artists' own
    tracks), via songfeat.data.splits."""
    ids = list(ids)
    if kind not in ("random", "artist"):
        raise ValueError(f"split must be 'random' or 'artist', not {kind!r}")
    from .data import splits as _splits

    if kind == "artist":
        groups = _splits.artist_groups(groups or [])
        if not any(g is not None for g in groups):  # every clip its own group: a random split recorded as 'artist'
            raise ValueError("split 'artist' needs artist names in the label table, and it has none; use --split random")
    out = _splits.random_split(ids, fractions, seed=seed) if kind == "random" else \
        _splits.group_split(ids, groups, fractions, seed=seed)
    return {k: list(out[k]) for k in ("train", "val", "test")}


# ---- normalisation ------------------------------------------------------------------------------


CONSTANT_STD = 1e-6  # a channel or column whose training spread is below this is constant there


def _spread(x: np.ndarray, axis: int | tuple[int, ...]) -> list[float]:
    """Standard deviations, 1 for a constant channel (as sklearn's StandardScaler): the old floor of 1e-6 multiplied a
    new clip's step off that constant by a million (time_signature 4 in every training row, then a 3/4 clip), which
    pinned every output at 0 or 1."""
    sd = x.std(axis=axis)
    return np.where(sd < CONSTANT_STD, 1.0, sd).tolist()


def fit_scalers(data: Dataset) -> dict:
    """Per-channel front-end and per-column numeric mean/std of a (training) dataset."""
    out: dict[str, dict] = {}
    if data.frontend is not None:
        fe = np.asarray(data.frontend, dtype=np.float64)
        out["frontend"] = {"mean": fe.mean(axis=(0, 2)).tolist(), "std": _spread(fe, (0, 2))}
    if data.numeric is not None:
        nu = np.asarray(data.numeric, dtype=np.float64)
        out["numeric"] = {"mean": nu.mean(axis=0).tolist(), "std": _spread(nu, 0)}
    return out


def apply_scalers(data: Dataset, scalers: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Standardised torch tensors (front-end, numeric), computed as `Bundle.normalise` does."""
    fe = nu = None
    if data.frontend is not None and "frontend" in scalers:
        m = torch.tensor(scalers["frontend"]["mean"], dtype=torch.float32)[None, :, None]
        s = torch.tensor(scalers["frontend"]["std"], dtype=torch.float32)[None, :, None]
        fe = (torch.as_tensor(np.asarray(data.frontend), dtype=torch.float32) - m) / torch.clamp(s, min=1e-8)
    if data.numeric is not None and "numeric" in scalers:
        m = torch.tensor(scalers["numeric"]["mean"], dtype=torch.float32)
        s = torch.tensor(scalers["numeric"]["std"], dtype=torch.float32)
        nu = (torch.as_tensor(np.asarray(data.numeric), dtype=torch.float32) - m) / torch.clamp(s, min=1e-8)
    return fe, nu


# ---- the loop -----------------------------------------------------------------------------------


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, else the CPU; or the device asked for, refused at once (not an AssertionError from inside
    torch mid-training) when it is not cpu or cuda, or is cuda on a machine without it."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be cpu or cuda (cuda:N for one GPU), not {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda (cuda:N for one GPU), not {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices here")
    return dev


def _batches(model: torch.nn.Module, fe: torch.Tensor | None, nu: torch.Tensor | None, idx: torch.Tensor) -> dict:
    kw = {}
    if "frontend" in model.inputs:
        kw["frontend"] = fe[idx]
    if "numeric" in model.inputs:
        kw["numeric"] = nu[idx]
    return kw


@torch.no_grad()
def predict_tensors(model: torch.nn.Module, fe: torch.Tensor | None, nu: torch.Tensor | None, n: int,
                    batch_size: int = 512) -> torch.Tensor:
    """Model outputs over n rows of already-standardised tensors, in eval mode."""
    model.eval()
    dev = next(model.parameters()).device
    outs = []
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(s + batch_size, n), device=dev)
        outs.append(model(**_batches(model, fe, nu, idx)))
    return torch.cat(outs) if outs else torch.empty(0)


def fit(model: torch.nn.Module, train: tuple, val: tuple | None = None, *, loss: str = "mse", epochs: int = 20,
        lr: float = 1e-3, batch_size: int = 32, seed: int = 42, early_stop_patience: int | None = 5,
        lr_steps: Sequence[float] | None = None, plateau_patience: int = 1, device: str | torch.device | None = None,
        progress: bool = True, desc: str = "train", checkpoint: str | Path | None = None) -> dict:
    """Adam over (frontend, numeric, targets) tensors with a validation pass per epoch, early stop and best-weight restore.

    Batches index the tensors with a seeded permutation per epoch (no DataLoader). `lr_steps` is a
    plateau schedule: start at lr_steps[0] and move to the next rate whenever the training loss has not
    improved for `plateau_patience` epochs (the combiner's 0.01 -> 0.005 -> 0.002 -> 0.001).
    Returns the training record (epochs run, best epoch, per-epoch losses and rates, seconds, samples/s). A loss
    that turns NaN or infinite stops the run on the best finite epoch, or raises ValueError when there was none.
    With `checkpoint` (a file path), the whole state is saved there after every epoch and a run with the same
    settings, initial weights and data resumes from it (`songfeat.checkpoint`); a finished fit leaves its result there.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
    crit = LOSSES[loss]
    dev = pick_device(device)
    model.to(dev)
    fe, nu, y = (None if t is None else t.to(dev) for t in train)
    n = len(y)
    if val is not None and val[2] is not None and len(val[2]) > 0:
        vfe, vnu, vy = (None if t is None else t.to(dev) for t in val)
    else:
        vfe = vnu = vy = None
    steps = list(lr_steps) if lr_steps else [lr]
    step_i = 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=steps[0])
    gen = torch.Generator().manual_seed(seed)
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    best_train, since_train_best, since_best = math.inf, 0, 0
    history = []
    t0 = time.perf_counter()
    epoch, diverged, first, before = 0, None, 1, 0.0
    ck_path, ck_print = None, None
    if checkpoint is not None:
        from . import checkpoint as ck

        ck_path = Path(checkpoint)
        ck_print = ck.fingerprint(model, [fe, nu, y, vfe, vnu, vy], {
            "desc": desc, "model": type(model).__name__, "loss": loss, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "seed": seed, "early_stop_patience": early_stop_patience, "lr_steps": steps, "plateau_patience": plateau_patience})
        state = ck.load(ck_path, ck_print, dev)
        if state is not None and state.get("done"):  # this fit finished before the run was stopped (a combiner's member)
            model.load_state_dict(state["model"])
            model.eval()
            return state["record"]
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            torch.set_rng_state(state["rng"])
            if state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            best, history, step_i = tuple(state["best"]), state["history"], state["step_i"]
            best_train, since_train_best, since_best = state["best_train"], state["since_train_best"], state["since_best"]
            epoch = state["epoch"]
            first, before = epoch + 1, state["seconds"]
            ck.note(f"{ck_path}: resuming {desc} after epoch {epoch} of {epochs}")
    bar = _progress(progress, epochs, desc)
    if bar is not None and first > 1:
        bar[0].update(bar[1], completed=first - 1)
    try:
        for epoch in range(first, epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            total = 0.0
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                opt.zero_grad(set_to_none=True)
                out = model(**_batches(model, fe, nu, idx))
                l = crit(out, y[idx])
                l.backward()
                opt.step()
                total += float(l.detach()) * len(idx)
            train_loss = total / n
            if vy is not None:
                val_loss = float(crit(predict_tensors(model, vfe, vnu, len(vy)), vy))
            else:
                val_loss = train_loss
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "lr": opt.param_groups[0]["lr"]})
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):  # NaN from here on: stop, keep the best
                diverged = epoch
                break
            if val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
                since_best = 0
            else:
                since_best += 1
            if train_loss < best_train - 1e-9:
                best_train, since_train_best = train_loss, 0
            else:
                since_train_best += 1
                if since_train_best >= plateau_patience and step_i + 1 < len(steps):
                    step_i += 1
                    since_train_best = 0
                    for g in opt.param_groups:
                        g["lr"] = steps[step_i]
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"{desc} train {train_loss:.4f} val {val_loss:.4f}")
            if ck_path is not None:
                ck.save(ck_path, {"fingerprint": ck_print, "epoch": epoch, "model": model.state_dict(),
                                  "opt": opt.state_dict(), "gen": gen.get_state(), "rng": torch.get_rng_state(),
                                  "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                                  "best": list(best), "best_train": best_train, "since_train_best": since_train_best,
                                  "since_best": since_best, "history": history, "step_i": step_i,
                                  "seconds": before + time.perf_counter() - t0})
            if early_stop_patience and since_best >= early_stop_patience:
                break
    finally:
        if bar is not None:
            bar[0].stop()
    secs = before + time.perf_counter() - t0
    if best[1] == 0 and diverged:  # the initial random weights were kept and written as a trained model, with metrics
        raise ValueError(f"training diverged: the loss was not finite at epoch {diverged} (learning rate "
                         f"{steps[step_i]:g}); nothing was learned, so nothing is written: try a smaller --lr")
    model.load_state_dict(best[2])
    model.eval()
    record = {"epochs_run": epoch, "best_epoch": best[1], "best_val_loss": best[0], "loss": loss,
              "lr": lr if not lr_steps else list(lr_steps), "batch_size": batch_size, "history": history,
              "seconds": round(secs, 3), "samples_per_s": round(n * epoch / max(secs, 1e-9), 1),
              "stopped_early": epoch < epochs, "diverged_at": diverged}
    if ck_path is not None:
        ck.save(ck_path, {"fingerprint": ck_print, "done": True, "model": model.state_dict(), "record": record})
    return record



def _progress(show: bool, total: int, desc: str):
    """A per-epoch bar on stderr, where the CLI decides to show it (it drew on stdout: into `train ... > log`, and not
    on the terminal where stderr was)."""
    if not show:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from .progress import bar

    p = bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    p.start()
    return p, p.add_task(desc, total=total)


# ---- bundles ------------------------------------------------------------------------------------


#: Families whose output is a sigmoid by default (the combiner's always is).
SIGMOID_OUT = ("cnn-simple", "cnn-valence", "lstm-multitask", "mlp-head")


def outside_unit(targets: Sequence[str]) -> list[str]:
    """The targets whose range is not inside [0, 1] (tempo, loudness, key, ... or a name of unknown range): a sigmoid
    output cannot reach them."""
    known = features.BY_NAME
    return [t for t in targets if t not in known or not (known[t].low >= 0 and known[t].high <= 1)]


def _hparams_for(model_name: str, data: Dataset, user: dict | None) -> dict:
    hp: dict[str, Any] = {}
    if model_name in ("cnn-simple", "cnn-valence", "cnn-complex"):
        hp["input_shape"] = [int(data.frontend.shape[1]), int(data.frontend.shape[2])]
    elif model_name in ("lstm-simple", "lstm-multitask"):
        hp["input_size"] = int(data.frontend.shape[1])
    elif model_name == "numeric-mlp":
        hp["n_inputs"] = int(data.numeric.shape[1])
    elif model_name == "mlp-head":
        hp["n_inputs"] = int(data.frontend.shape[1] * data.frontend.shape[2])
    if model_name == "mlp-head" or (model_name in SIGMOID_OUT and outside_unit(data.target_names)):
        hp["out"] = "linear" if outside_unit(data.target_names) else "sigmoid"  # a sigmoid capped tempo at 1, silently
    hp.update(user or {})
    return hp


def _tensors(data: Dataset, scalers: dict) -> tuple:
    fe, nu = apply_scalers(data, scalers)
    return fe, nu, torch.as_tensor(data.targets, dtype=torch.float32)


def _set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_model(model_name: str, train: Dataset, val: Dataset | None, *, hparams: dict | None = None,
                epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                loss: str | None = None, seed: int = 42, early_stop_patience: int | None = 5,
                device: str | None = None, progress: bool = True, scalers: dict | None = None,
                checkpoints: str | Path | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """Build and fit one model on a training Dataset; returns (model, scalers, training record).

    The combiner first trains its lstm-multitask and numeric-mlp on the same training rows (each with
    its seed defaults), then fits its own layers with the sub-models frozen. With `checkpoints` (a folder), each
    fit saves and resumes its state there (`<family>.pt`; `fit`'s `checkpoint`).
    """
    d = FAMILY_DEFAULTS.get(model_name, FAMILY_DEFAULTS["lstm-multitask"])
    scalers = scalers or fit_scalers(train)
    dev = pick_device(device)
    _set_determinism(seed)
    if model_name not in models.names():
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(models.names())}")
    k = train.targets.shape[1]
    record: dict[str, Any] = {}
    hp = dict(hparams or {})
    lr_steps = None
    if model_name == "combiner":
        from .models.combiner import PLATEAU_LRS

        sub_rec = {}
        subs = {}
        for sub in ("lstm-multitask", "numeric-mlp"):
            m, _, r = train_model(sub, train, val, hparams=hp.pop(sub, None), seed=seed,
                                  early_stop_patience=early_stop_patience, device=device, progress=progress,
                                  scalers=scalers, batch_size=batch_size, checkpoints=checkpoints)
            subs[sub], sub_rec[sub] = m, r
        variant = hp.get("variant", "d")
        hp = {"variant": variant, **hp, "lstm": _hparams_for("lstm-multitask", train, None),
              "mlp": _hparams_for("numeric-mlp", train, None), "lstm_outputs": k, "mlp_outputs": k}
        _set_determinism(seed)
        model = models.create("combiner", k, **hp)
        model.load_pretrained(subs["lstm-multitask"], subs["numeric-mlp"])
        if variant == "d" and lr is None:
            lr_steps = PLATEAU_LRS
        record["pretrained"] = sub_rec
    else:
        hp = _hparams_for(model_name, train, hp)
        model = models.create(model_name, k, **hp)
    rec = fit(model, _tensors(train, scalers), None if val is None or len(val) == 0 else _tensors(val, scalers),
              loss=loss or d["loss"], epochs=epochs if epochs is not None else d["epochs"],
              lr=lr if lr is not None else d["lr"], batch_size=batch_size if batch_size is not None else d["batch_size"],
              seed=seed, early_stop_patience=early_stop_patience, lr_steps=lr_steps, device=dev, progress=progress,
              desc=model_name, checkpoint=None if checkpoints is None else Path(checkpoints) / f"{model_name}.pt")
    record.update(rec)
    record["hparams"] = hp
    model.to("cpu")
    return model, scalers, record


def _check_disjoint(parts: dict[str, list[str]]) -> None:
    """An explicit split whose parts share an id would score the model on clips it trained (or stopped) on."""
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        shared = sorted(set(parts[a]) & set(parts[b]))
        if shared:
            from .data.labels import short_id

            raise ValueError(f"split: {len(shared)} ids are in both {a!r} and {b!r} "
                             f"(e.g. {short_id(shared[0], quote=True)}); "
                             "the parts must not share clips")


def _too_few(source: Any, data: Dataset, n_train: int) -> Exception:
    """The error for a training split under 2 rows: names the store and, when rows lacked values, which columns (and a
    store built --no-descriptors, when the measured inputs are what is missing)."""
    from .errors import SongfeatError, counted

    prov = data.provenance
    why = f"only {counted(n_train, 'training row')} (of {len(data)} usable"
    if "rows" in prov:
        why += f" of {counted(prov['rows'], 'clip')} in the store"
    why += "); need at least 2"
    gaps = prov.get("missing_by_column") or {}
    if gaps:
        why += "; clips lacking a value: " + ", ".join(f"{c} in {n}" for c, n in sorted(gaps.items(), key=lambda x: -x[1]))
    manifest = prov.get("manifest") or {}
    failed = manifest.get("failed")
    if isinstance(failed, int) and failed and prov.get("store"):  # an all-failed store said "0 clips", not why
        why += (f"; {failed} of the store's {counted(manifest.get('planned', failed), 'clip')} failed to build: their "
                f"reasons are in {Path(prov['store']) / 'report.csv'} (rerun `songfeat build` to try them again)")
    if data.numeric_source == "measured" and manifest.get("descriptors") is False:
        why += ("; the store was built with --no-descriptors, so it holds no measured inputs: build one with "
                "descriptors, or use --numeric-source labels")
    if isinstance(source, Dataset):
        return ValueError(why)
    return SongfeatError(prov.get("store") or getattr(source, "path", None) or str(source), why)


def _check_frontend_kind(model_name: str, cls: type, source: Any) -> None:
    """Refuse a store (or Dataset) whose front-end the family is not made for (its `frontend_kinds`), naming the store
    and the build that makes one, before its array is read: `train mlp-head` on an MFCC store fitted an MLP to the
    flattened spectrogram, `lstm-*` on a musicnn store stepped once through its one-frame vector, and the CNNs failed
    on it with a layer-size ValueError naming no store."""
    from .errors import SongfeatError
    from .frontend import SPECS, spec_name

    kinds = getattr(cls, "frontend_kinds", None)
    spec = getattr(source, "spec", None)
    if not kinds or spec is None or spec.kind in kinds:
        return
    names = [n for n, s in SPECS.items() if s.kind in kinds]  # the builds that make one, the first the one suggested
    needed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    raise SongfeatError(_where(source), f"built with the {spec_name(spec)} front-end, but {model_name} needs a store "
                                        f"built with --frontend {needed}; build one from the same labels and audio with "
                                        f"`songfeat build --labels ... --audio ... --out NEW_STORE --frontend {names[0]}`")


def _where(source: Any) -> str | Path | None:
    """What a front-end refusal names: the store (a Dataset's, when it came from one), or nothing."""
    where = source.provenance.get("store") if isinstance(source, Dataset) else getattr(source, "path", source)
    return where or None


def _check_frontend_shape(model_name: str, cls: type, source: Any) -> None:
    """Refuse a store (or Dataset) whose front-end is smaller than the family's `min_input_shape`, naming the store, its
    shape and the smallest the family takes, before its array is read: a custom spec under 16x16 for cnn-complex (under
    4x4 for the simple CNNs) failed with the model's ValueError after the whole array was read, naming no store."""
    from .errors import SongfeatError
    from .frontend import SPECS, spec_name

    least = getattr(cls, "min_input_shape", None)
    if not least or "frontend" not in cls.inputs:
        return
    spec = getattr(source, "spec", None)
    if isinstance(source, Dataset) and source.frontend is not None:
        shape = tuple(int(n) for n in np.shape(source.frontend)[1:])  # what the model would be given
    elif spec is not None:
        shape = spec.shape
    else:
        return
    if len(shape) != 2 or (shape[0] >= least[0] and shape[1] >= least[1]):
        return
    kinds = getattr(cls, "frontend_kinds", None)
    fits = [n for n, s in SPECS.items()  # the named builds it takes, the first the one suggested
            if (not kinds or s.kind in kinds) and s.channels >= least[0] and s.frames >= least[1]]
    front = (f"the {spec_name(spec)} front-end" if spec is not None and spec.shape == shape
             else f"a {shape[0]}x{shape[1]} front-end")
    hint = (f"; build one from the same labels and audio with `songfeat build --labels ... --audio ... --out NEW_STORE "
            f"--frontend {fits[0]}`" if fits else "")
    raise SongfeatError(_where(source), f"built with {front}, but {model_name} needs a front-end of at least "
                                        f"{least[0]}x{least[1]} (channels x frames){hint}")


def _store_content(source: Any) -> dict[str, str] | None:
    """Track id -> content id of a store's clips (`Store.content_ids`), or None for a Dataset or a store built before
    they were recorded: the clips are then known by track id alone."""
    ids = getattr(source, "content_ids", None)
    return ids() if callable(ids) else None


def _check_numbers(*, lr: float | None, epochs: int | None, batch_size: int | None) -> None:
    """Refuse a learning rate, epoch count or batch size that cannot train, before any work: `--lr 0` silently trained
    at 1e-3, and a negative or NaN rate failed inside torch's Adam once the store was read."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive number, not {lr}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, not {batch_size}")


def train_bundle(model_name: str, store_or_dataset: Any, out: str | Path, *, targets: Sequence[str] | None = None,
                 epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                 seed: int = 42, split: str | dict = "random", numeric_source: str = "labels",
                 numeric_inputs: Sequence[str] | None = None, hparams: dict | None = None, loss: str | None = None,
                 device: str | None = None, early_stop_patience: int | None = 5, progress: bool = True,
                 threads: int | None = DEFAULT_THREADS, resume: bool = True) -> Path:
    """Train `model_name` on a store (path or object) or a Dataset, evaluate on its held-out split, write a bundle to `out`.

    `split` is "random", "artist" (by the label table's artists) or an explicit {"train","val","test"}
    dict of ids. `numeric_source` is "labels" (the seed's inputs from the label table) or "measured"
    (descriptors computed from the audio, what a user analysing a new file has). With `resume`, every epoch's state
    is kept in `<out>.training/` until the bundle is written, and the same command run again continues from it.
    """
    from . import __version__
    from .bundle import FITTED_CONTENT, Bundle, write_bundle_or_fail, writing_bundle
    from .evaluate import _nan_to_none, predict_dataset, report

    if threads:
        torch.set_num_threads(threads)
    if model_name not in models.trainable():
        fitted_by = getattr(models.REGISTRY.get(model_name), "fitted_by", None)
        what = (f"{model_name!r} is not trained from a store: it is fitted by {fitted_by}" if fitted_by
                else f"unknown model {model_name!r}")
        raise ValueError(f"{what}; choose one of {', '.join(models.trainable())}")
    cls = models.REGISTRY[model_name]
    pick_device(device)  # a device this machine lacks, and an output it cannot write, are refused before the training
    # the folders made for `out` go again if the training is refused, fails or is interrupted before it keeps anything
    # there (a checkpoint in <out>.training/ keeps them, as it keeps the run's state)
    with writing_bundle(Path(out)):
        d = FAMILY_DEFAULTS.get(model_name, FAMILY_DEFAULTS["lstm-multitask"])
        targets = features.check_targets(tuple(targets or d["targets"]))
        _check_numbers(lr=lr, epochs=epochs, batch_size=batch_size)
        if model_name == "combiner" and outside_unit(targets):
            raise ValueError(f"the combiner's output is a sigmoid, inside [0, 1]; {', '.join(outside_unit(targets))} "
                             "lies outside it: choose [0, 1] targets, or another family")
        if numeric_source not in ("labels", "measured"):
            raise ValueError(f"numeric_source must be 'labels' or 'measured', not {numeric_source!r}")
        needs_num = "numeric" in cls.inputs
        if needs_num and isinstance(store_or_dataset, Dataset) and store_or_dataset.numeric_names:
            numeric_inputs = tuple(numeric_inputs or store_or_dataset.numeric_names)
            numeric_source = store_or_dataset.numeric_source
        if needs_num and numeric_inputs is None:
            numeric_inputs = (features.SEED_NUMERIC_INPUTS if numeric_source == "labels"
                              else features.MEASURED_NUMERIC_INPUTS)
        overlap = set(numeric_inputs or ()) & set(targets)
        if overlap:
            raise ValueError(f"{sorted(overlap)} cannot be both a numeric input and a target")
        if isinstance(store_or_dataset, (str, Path)):
            from .data.store import open_store

            # opened here: its front-end is checked before its array is read
            store_or_dataset = open_store(store_or_dataset)
        _check_frontend_kind(model_name, cls, store_or_dataset)
        _check_frontend_shape(model_name, cls, store_or_dataset)
        data = _as_dataset(store_or_dataset, targets, numeric_inputs if needs_num else None, numeric_source,
                           "frontend" in cls.inputs)
        if needs_num and isinstance(store_or_dataset, Dataset):
            if numeric_inputs and tuple(numeric_inputs) != tuple(data.numeric_names) and data.numeric_names:
                raise ValueError(f"dataset numeric columns {data.numeric_names} differ from {tuple(numeric_inputs)}")
            numeric_inputs = data.numeric_names or numeric_inputs
            numeric_source = data.numeric_source
        if not needs_num:
            data = replace(data, numeric=None, numeric_names=())
        if "frontend" not in cls.inputs:
            data = replace(data, frontend=None)
        if len(data) < 2:  # said before a split is made: `--split artist` blamed the artists when no clip was usable
            raise _too_few(store_or_dataset, data, len(data))
        if isinstance(split, dict):
            parts = {k: list(split.get(k) or []) for k in ("train", "val", "test")}
            _check_disjoint(parts)
            split_rec: dict[str, Any] = {"recipe": "explicit", "seed": seed}
        else:
            parts = make_split(data.ids, split, seed=seed, groups=data.groups)
            split_rec = {"recipe": split, "seed": seed, "fractions": list(SPLIT_FRACTIONS)}
        if len(parts["train"]) < 2:
            raise _too_few(store_or_dataset, data, len(parts["train"]))
        tr, va = data.select_ids(parts["train"]), data.select_ids(parts["val"]) if parts["val"] else None
        te = data.select_ids(parts["test"]) if parts["test"] else None
        prev_det = torch.are_deterministic_algorithms_enabled()
        from .checkpoint import folder_for

        checkpoints = folder_for(out) if resume else None
        try:
            model, scalers, record = train_model(model_name, tr, va, hparams=hparams, epochs=epochs, lr=lr,
                                                 batch_size=batch_size, loss=loss, seed=seed,
                                                 early_stop_patience=early_stop_patience, device=device,
                                                 progress=progress, checkpoints=checkpoints)
        finally:
            torch.use_deterministic_algorithms(prev_det)
        hp = record.pop("hparams")
        spec = data.spec.to_dict() if (data.spec is not None and "frontend" in cls.inputs) else None
        config: dict[str, Any] = {
            "model": model_name, "hparams": hp, "targets": list(targets), "inputs": list(cls.inputs), "frontend": spec,
            "numeric_inputs": list(numeric_inputs or []) if needs_num else [],
            "numeric_source": numeric_source if needs_num else None, "scalers": scalers,
            "split": {**split_rec, **parts}, "metrics": None, "training": record,
            "provenance": {**data.provenance, "n_train": len(tr), "n_val": 0 if va is None else len(va),
                           "n_test": 0 if te is None else len(te), "songfeat": __version__,
                           "torch": torch.__version__,
                           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        }
        content = _store_content(store_or_dataset)
        if content is not None:  # the splits' audio: evaluate-audio leaves out these bytes under any name, as a heads bundle's
            config["provenance"][FITTED_CONTENT] = {k: [content[t] for t in parts[k]] for k in ("train", "val")}
        if te is not None and len(te) >= 2:
            pred = predict_dataset(Bundle(model=model, config=config), te)
            config["metrics"] = _nan_to_none({"split": "test", **report(te.targets, pred, list(targets))})
        written = write_bundle_or_fail(out, model, config)
        if checkpoints is not None:
            import shutil

            shutil.rmtree(checkpoints, ignore_errors=True)  # the bundle holds the result now
        return written
