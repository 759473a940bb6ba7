"""Splits of track ids: the seed's random 70/15/15 split, a group-disjoint split (by artist), and k-fold.

All are deterministic for a given seed and list of ids, and independent of the order the ids are
given in (ids are sorted before shuffling), so the same store always yields the same split. Each
returns plain lists of ids, which is what a bundle saves.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

PARTS = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions summing to 1 (train, val, test); ValueError otherwise."""
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    f = tuple(float(x) for x in fractions)
    if not all(np.isfinite(f)) or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:  # NaN fails no comparison
        raise ValueError(f"fractions must be non-negative and sum to 1, got {f}")
    return f  # type: ignore[return-value]


def _unique_sorted(ids: Sequence[str]) -> list[str]:
    """Ids as strings, sorted, checking there are no duplicates (a duplicate would leak across parts)."""
    out = [str(i) for i in ids]
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(i for i in out if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate id in split input: {dup!r}")
    return sorted(out)


def _cut_points(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Sizes as the seed's sklearn train_test_split twice gave: test and val rounded up, train the rest."""
    n_test = int(np.ceil(n * fractions[2])) if fractions[2] > 0 else 0
    n_val = int(np.ceil(n * fractions[1])) if fractions[1] > 0 else 0
    n_val = min(n_val, n - n_test)
    return n - n_test - n_val, n_val


def random_split(ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42) -> dict[str, list[str]]:
    """The seed's random split: shuffle with `seed`, cut into train/val/test by `fractions`."""
    f = _check_fractions(fractions)
    order = _unique_sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    n_train, n_val = _cut_points(len(shuffled), f)
    return {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val], "test": shuffled[n_train + n_val:]}


def _groups_of(ids: list[str], groups: Sequence[Hashable] | Mapping[str, Hashable]) -> list[str]:
    """One group key per id (from a parallel sequence or an id->group mapping); a missing group is the id itself."""
    if isinstance(groups, Mapping):
        raw = [groups.get(i) for i in ids]
    else:
        raw = list(groups)
    out = []
    for i, g in zip(ids, raw):
        missing = g is None or (isinstance(g, float) and np.isnan(g)) or (isinstance(g, str) and not g.strip())
        out.append(f"\0{i}" if missing else str(g).strip().casefold())  # unknown artist: a group of its own
    return out


def artist_groups(artists: Sequence[Hashable]) -> list[str | None]:
    """One group key per entry of `artists` ("A; B" strings, as the label tables write several artists), the same for
    entries linked by any shared artist, so "A; B" sits with A's and B's own tracks (keyed by the whole string, a
    collaboration fell in another part than its artists' solo tracks); None where no artist is known."""
    parent: dict[str, str] = {}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    names_of = []
    for a in artists:
        missing = a is None or (isinstance(a, float) and np.isnan(a))
        names = [] if missing else [n.strip().casefold() for n in str(a).split(";") if n.strip()]
        for n in names:
            parent.setdefault(n, n)
        for n in names[1:]:
            ra, rb = root(names[0]), root(n)
            if ra != rb:  # the smaller name is the root: the keys do not depend on the order of the entries
                parent[max(ra, rb)] = min(ra, rb)
        names_of.append(names)
    return [root(names[0]) if names else None for names in names_of]


def group_split(ids: Sequence[str], groups: Sequence[Hashable] | Mapping[str, Hashable],
                fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42) -> dict[str, list[str]]:
    """Split so that no group (e.g. artist) has ids in two parts; part sizes follow `fractions` as closely as groups allow.

    Groups are shuffled with `seed` and then assigned greedily, largest first, to the part furthest
    below its target size, so one prolific artist cannot make the split lopsided by chance.
    Ids with an unknown group (None, NaN, empty) each form a group of their own.
    """
    f = _check_fractions(fractions)
    ids_l = [str(i) for i in ids]
    if not isinstance(groups, Mapping) and len(groups) != len(ids_l):
        raise ValueError(f"groups has {len(groups)} entries for {len(ids_l)} ids")
    _unique_sorted(ids_l)
    pairs = sorted(zip(ids_l, _groups_of(ids_l, groups)))
    members: dict[str, list[str]] = {}
    for i, g in pairs:
        members.setdefault(g, []).append(i)
    names = sorted(members)
    rng = np.random.default_rng(seed)
    names = [names[k] for k in rng.permutation(len(names))]
    names.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    n = len(pairs)
    targets = dict(zip(PARTS, (n * x for x in f)))
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for g in names:
        # the part with the largest remaining deficit relative to its target
        best = max((p for p in PARTS if targets[p] > 0), key=lambda p: (targets[p] - len(parts[p])) / targets[p])
        parts[best].extend(members[g])
    for p in PARTS:
        order = rng.permutation(len(parts[p]))
        parts[p] = [parts[p][k] for k in order]
    return parts


def kfold(ids: Sequence[str], k: int = 5, seed: int = 42, groups: Sequence[Hashable] | Mapping[str, Hashable] | None = None,
          val_fraction: float = 0.15) -> list[dict[str, list[str]]]:
    """K folds, each {"train", "val", "test"}: every id is in exactly one test fold; val is carved from the rest.

    With `groups`, whole groups go to one test fold (group k-fold) and val is carved group-disjointly too.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    ids_l = _unique_sorted(ids) if groups is None or isinstance(groups, Mapping) else [str(i) for i in ids]
    if groups is not None and not isinstance(groups, Mapping):
        if len(groups) != len(ids_l):
            raise ValueError(f"groups has {len(groups)} entries for {len(ids_l)} ids")
        _unique_sorted(ids_l)
    if len(ids_l) < k:
        raise ValueError(f"cannot make {k} folds from {len(ids_l)} ids")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(len(ids_l))
        buckets = [[ids_l[j] for j in perm[f::k]] for f in range(k)]
        gmap: dict[str, str] | None = None
    else:
        keys = _groups_of(ids_l, groups)
        gmap = dict(zip(ids_l, keys))
        members: dict[str, list[str]] = {}
        for i, g in sorted(zip(ids_l, keys)):
            members.setdefault(g, []).append(i)
        if len(members) < k:
            raise ValueError(f"cannot make {k} group-disjoint folds from {len(members)} groups")
        names = sorted(members)
        names = [names[j] for j in rng.permutation(len(names))]
        names.sort(key=lambda g: -len(members[g]))
        buckets = [[] for _ in range(k)]
        for g in names:  # largest groups first, each to the currently smallest fold
            min(buckets, key=len).extend(members[g])
    folds = []
    for f in range(k):
        test = sorted(buckets[f])
        rest = sorted(i for b, bucket in enumerate(buckets) if b != f for i in bucket)
        fr = (1.0 - val_fraction, val_fraction, 0.0)
        inner = random_split(rest, fr, seed + f) if gmap is None else group_split(rest, gmap, fr, seed + f)
        folds.append({"train": inner["train"], "val": inner["val"], "test": test})
    return folds


def index_folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """K test folds of the positions 0..n-1 (a seeded permutation cut in k near-equal parts): the folds `evaluate-audio
    --cv` and `train-heads --cv` refit over, the same for both given the same seed."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)
