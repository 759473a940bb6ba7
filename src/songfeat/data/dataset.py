"""The in-memory `Dataset` the trainers and `evaluate` work on, and its adapters from a dataset store
(`songfeat.data.store`): arrays (front-end [N, C, T], numeric [N, F], targets [N, K]) with their ids.

Below both `songfeat.train` (which fits on a Dataset) and `songfeat.evaluate` (which scores a bundle on the split it
recorded), so neither imports the other for it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import features

if TYPE_CHECKING:
    from ..frontend import FrontendSpec


@dataclass
class Dataset:
    """Arrays for training or evaluation: front-end [N,C,T] and/or numeric [N,F], targets [N,K], ids."""

    targets: np.ndarray
    target_names: tuple[str, ...]
    ids: list[str]
    frontend: np.ndarray | None = None
    numeric: np.ndarray | None = None
    numeric_names: tuple[str, ...] = ()
    numeric_source: str = "labels"
    spec: FrontendSpec | None = None
    groups: list[str] | None = None  # e.g. artists, for group-aware splits
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.float32)
        if self.targets.ndim == 1:
            self.targets = self.targets[:, None]
        n = len(self.ids)
        if self.targets.shape != (n, len(self.target_names)):
            raise ValueError(f"targets {self.targets.shape} do not match {n} ids x {len(self.target_names)} names")
        for name, a in (("frontend", self.frontend), ("numeric", self.numeric)):
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} rows but there are {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> "Dataset":
        """The rows `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return replace(self, targets=self.targets[idx], ids=[self.ids[i] for i in idx],
                       frontend=None if self.frontend is None else np.asarray(self.frontend[idx]),
                       numeric=None if self.numeric is None else self.numeric[idx],
                       groups=None if self.groups is None else [self.groups[i] for i in idx])

    def select_ids(self, ids: Sequence[str]) -> "Dataset":
        """The rows whose ids are `ids`, in that order; raise KeyError naming missing ids."""
        pos = {k: i for i, k in enumerate(self.ids)}
        missing = [k for k in ids if k not in pos]
        if missing:
            from .labels import short_id

            shown = ", ".join(short_id(k, quote=True) for k in missing[:3])
            raise KeyError(f"{len(missing)} ids not in this dataset, e.g. {shown}")
        return self.subset([pos[k] for k in ids])

    def select_targets(self, names: Sequence[str]) -> "Dataset":
        """Keep only the target columns `names` (in that order); a name the dataset lacks is said, not tuple.index's error."""
        absent = [n for n in names if n not in self.target_names]
        if absent:
            raise ValueError(f"the dataset has no target column(s) {absent} (it has: {', '.join(self.target_names)})")
        cols = [self.target_names.index(n) for n in names]
        return replace(self, targets=self.targets[:, cols], target_names=tuple(names))


def dataset_from_store(store: Any, targets: Sequence[str], *, numeric_inputs: Sequence[str] | None = None,
                       numeric_source: str = "labels", frontend: bool = True, only: Sequence[str] | None = None) -> Dataset:
    """Adapt a dataset store (`songfeat.data.store.open_store`) to a Dataset; rows missing a value are dropped.

    `only` keeps just those ids, so scoring a split reads its rows of the array, not all of them."""
    if isinstance(store, (str, Path)):
        from .store import open_store

        store = open_store(store)
    if numeric_source not in ("labels", "measured"):
        raise ValueError(f"numeric_source must be 'labels' or 'measured', not {numeric_source!r}")
    ids = list(store.ids())
    labels = store.labels().reindex(ids)
    missing_t = [t for t in targets if t not in labels.columns]
    if missing_t:
        raise ValueError(f"store has no label column(s) {missing_t}")
    keep = labels[list(targets)].notna().all(axis=1).to_numpy().copy()
    num = None
    names: tuple[str, ...] = ()
    if numeric_inputs:
        names = tuple(numeric_inputs)
        table = labels if numeric_source == "labels" else store.descriptors().reindex(ids)
        absent = [c for c in names if c not in table.columns]
        if absent:
            raise ValueError(f"store has no {numeric_source} column(s) {absent}")
        num = table[list(names)].to_numpy(dtype=np.float32)
        if numeric_source == "measured":
            num = features.model_numeric(names, num)
        keep &= np.isfinite(num).all(axis=1)
    n_usable = int(keep.sum())
    if only is not None:
        keep &= np.isin(np.asarray(ids, dtype=object), list(only))
    rows = np.flatnonzero(keep)
    missing = {c: int(labels[c].isna().sum()) for c in targets}
    if num is not None:
        missing.update({c: int((~np.isfinite(num[:, k])).sum()) for k, c in enumerate(names)})
    arr = np.asarray(store.array()[rows], dtype=np.float32) if frontend else None
    groups = None
    if "artists" in labels.columns:
        groups = [str(a) for a in labels["artists"].fillna("").to_numpy()[rows]]
    manifest = dict(getattr(store, "manifest", {}) or {})
    return Dataset(targets=labels[list(targets)].to_numpy(dtype=np.float32)[rows], target_names=tuple(targets),
                   ids=[ids[i] for i in rows], frontend=arr, numeric=None if num is None else num[rows],
                   numeric_names=names, numeric_source=numeric_source, spec=getattr(store, "spec", None),
                   groups=groups, provenance={"store": str(getattr(store, "path", "")), "manifest": manifest,
                                              "rows": len(ids), "dropped_missing": len(ids) - n_usable,
                                              "missing_by_column": {c: n for c, n in missing.items() if n}})


def dataset_for_bundle(config: dict, store: Any, only: Sequence[str] | None = None) -> Dataset:
    """The Dataset a bundle needs (its targets, numeric inputs and their source) from a store; checks the front-end matches."""
    if isinstance(store, (str, Path)):
        from .store import open_store

        store = open_store(store)
    needs_fe = "frontend" in (config.get("inputs") or [])
    if needs_fe and config.get("frontend") and getattr(store, "spec", None) is not None:
        from ..errors import SongfeatError
        from ..frontend import FrontendSpec, spec_name

        want = FrontendSpec.from_dict(config["frontend"])
        if store.spec != want:  # said as two dataclass reprs before, naming no file
            raise SongfeatError(getattr(store, "path", None), f"built with the {spec_name(store.spec)} front-end, but the "
                                f"bundle reads {spec_name(want)}; use the store it was trained from")
    return dataset_from_store(store, config["targets"], numeric_inputs=config.get("numeric_inputs") or None,
                              numeric_source=config.get("numeric_source") or "labels", frontend=needs_fe, only=only)


__all__ = ["Dataset", "dataset_from_store", "dataset_for_bundle"]
