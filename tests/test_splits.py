"""Splits: sizes follow the fractions, same seed same split, groups never straddle parts, k-fold covers each id once."""
from __future__ import annotations

import pytest

from songfeat.data.splits import group_split, kfold, random_split

IDS = [f"t{i:03d}" for i in range(102)]
ARTISTS = [f"artist{i % 23}" if i % 7 else None for i in range(102)]  # some unknown artists


def parts_are_a_partition(split: dict[str, list[str]], ids: list[str]) -> None:
    every = [i for p in split.values() for i in p]
    assert sorted(every) == sorted(ids), "each id in exactly one part"


def test_random_split_fractions_and_determinism():
    s = random_split(IDS)
    parts_are_a_partition(s, IDS)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (70, 16, 16)
    assert s == random_split(list(reversed(IDS)))  # input order does not matter
    assert s == random_split(IDS, seed=42)
    assert s["test"] != random_split(IDS, seed=1)["test"]
    s2 = random_split(IDS[:20], (0.5, 0.25, 0.25))
    assert (len(s2["train"]), len(s2["val"]), len(s2["test"])) == (10, 5, 5)


def test_random_split_rejects_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(IDS, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="duplicate id"):
        random_split(["a", "b", "a"])


def test_group_split_is_group_disjoint_and_near_fractions():
    s = group_split(IDS, ARTISTS)
    parts_are_a_partition(s, IDS)
    group_of = dict(zip(IDS, ARTISTS))
    seen: dict[str, str] = {}
    for part, members in s.items():
        for i in members:
            g = group_of[i]
            if g is None:
                continue
            assert seen.setdefault(g, part) == part, f"{g} is in {seen[g]} and {part}"
    n = len(IDS)
    assert abs(len(s["train"]) - 0.7 * n) <= 6 and abs(len(s["test"]) - 0.15 * n) <= 6
    assert s == group_split(IDS, ARTISTS)
    assert s == group_split(IDS, dict(zip(IDS, ARTISTS)))  # mapping form
    with pytest.raises(ValueError, match="entries"):
        group_split(IDS, ARTISTS[:-1])


def test_group_split_artist_names_compare_case_insensitively():
    ids = ["a", "b", "c", "d", "e", "f"]
    groups = ["Queen", "queen ", "QUEEN", "x", "y", "z"]
    s = group_split(ids, groups, (0.5, 0.25, 0.25))
    where = {i: p for p, m in s.items() for i in m}
    assert where["a"] == where["b"] == where["c"]


@pytest.mark.parametrize("groups", [None, ARTISTS])
def test_kfold_each_id_in_exactly_one_test_fold(groups):
    folds = kfold(IDS, k=5, groups=groups)
    assert len(folds) == 5
    tests = [i for f in folds for i in f["test"]]
    assert sorted(tests) == sorted(IDS)
    for f in folds:
        parts_are_a_partition(f, IDS)
        assert not set(f["train"]) & set(f["test"]) and not set(f["val"]) & set(f["test"])
        assert len(f["val"]) > 0
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= (1 if groups is None else 10)
    assert folds == kfold(IDS, k=5, groups=groups)
    if groups is not None:
        group_of = dict(zip(IDS, groups))
        for f in folds:
            test_groups = {group_of[i] for i in f["test"]} - {None}
            other = {group_of[i] for i in f["train"] + f["val"]} - {None}
            assert not test_groups & other


def test_kfold_rejects_too_few():
    with pytest.raises(ValueError):
        kfold(IDS[:3], k=5)
    with pytest.raises(ValueError):
        kfold(IDS, k=1)


@pytest.mark.parametrize("fractions", [(float("nan"), 0.5, 0.5), (float("inf"), 0.0, 0.0), (0.7, float("nan"), 0.3)])
def test_non_finite_fractions_are_refused(fractions):
    """NaN fails every comparison, so (nan, 0.5, 0.5) used to pass the check and give a quietly empty train part."""
    with pytest.raises(ValueError, match="non-negative and sum to 1"):
        random_split(IDS, fractions)
    with pytest.raises(ValueError, match="non-negative and sum to 1"):
        group_split(IDS, [i[0] for i in IDS], fractions)


def test_artist_groups_link_collaborations_to_their_artists():
    """'A; B' was a group of its own, so A's solo tracks and the A-and-B track landed in different parts."""
    from songfeat.data.splits import artist_groups

    keys = artist_groups(["Drake", "Future; Drake", "future", "Adele", None, float("nan"), "", " Adele ;"])
    assert keys[0] == keys[1] == keys[2] and keys[3] == keys[7] and keys[0] != keys[3]
    assert keys[4] is None and keys[5] is None and keys[6] is None
    assert artist_groups(["future", "Future; Drake", "Drake"])[0] == keys[0]  # the key does not depend on the order
