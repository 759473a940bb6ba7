"""Genre-conditional knowledge for the heads: E[feature | genre], weighted by what the tagger heard.

Two label tables carry genres: the Spotify-annotated `spotify-features/it21803666_SpotifyFeatures_subset.csv`
(Alternative, Dance, Country, R&B, A Capella, ...) and the Echo Nest-annotated FMA tracks
(`fma-echonest/echonest_full.csv` joined with `fma_echonest_genres.csv`: Rock, Electronic, Classical, Jazz, ...).
The two annotators disagree in scale (Echo Nest's instrumentalness averages 0.64 over FMA, Spotify's 0.12
over its 41,855-track table), so they are **never pooled**: each gives its own seven-value prior, and the
heads learn how much each counts. For one window, every genre gets the weight of its most probable mapped
musicnn tag (`GENRE_TAGS`), and the prior is the weighted mean of the genres' feature means, shrunk
toward the annotator's overall mean by `PSEUDO_WEIGHT` (a window with no confident genre tag gets the
overall mean, never an extreme). Numpy only, computed before the heads' torch module (which keeps one input).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import features

TARGETS = features.LEARNED
PSEUDO_WEIGHT = 0.5  # the overall mean counts as this much genre-tag probability
PRIOR_EPS = 0.01  # priors enter the heads as log-odds of a value clipped to [eps, 1 - eps]
SPOTIFY_GENRES = Path("spotify-features") / "it21803666_SpotifyFeatures_subset.csv"
# Spotify's 41,855-track catalogue: the spotify prior's overall mean, stage 1's training rows (`default_model`), and the
# catalogue the held-out tables and the heads' rule intervals read (`sources.catalogue_frame`)
SPOTIFY_CATALOGUE = Path("spotify-features") / "combined_unique_by_track_id.csv"
ECHONEST = Path("fma-echonest") / "echonest_full.csv"
ECHONEST_GENRES = Path("fma-echonest") / "fma_echonest_genres.csv"
# table genre -> musicnn tags ("msd:<tag>" from the Million Song Dataset model, "mtt:<tag>" from MagnaTagATune's)
GENRE_TAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "spotify": {
        "Alternative": ("msd:alternative", "msd:indie", "msd:alternative rock", "msd:indie rock", "msd:punk",
                        "msd:hard rock", "mtt:rock"),
        "Dance": ("msd:dance", "msd:electro", "msd:House", "msd:party", "mtt:techno", "mtt:dance"),
        "Country": ("msd:country", "mtt:country"),
        "R&B": ("msd:rnb", "msd:soul", "msd:funk", "msd:sexy"),
        "A Capella": ("mtt:choir", "mtt:choral"),
    },
    "echonest": {
        "Rock": ("msd:rock", "msd:hard rock", "msd:classic rock", "msd:punk", "msd:metal", "msd:heavy metal",
                 "mtt:rock", "mtt:metal"),
        "Electronic": ("msd:electronic", "msd:electronica", "msd:electro", "msd:House", "mtt:techno", "mtt:synth"),
        "Hip-Hop": ("msd:Hip-Hop",),
        "Folk": ("msd:folk", "msd:acoustic"),
        "Pop": ("msd:pop", "msd:indie pop", "msd:catchy", "mtt:pop"),
        "Classical": ("mtt:classical", "mtt:strings", "mtt:violin", "mtt:cello", "mtt:harpsichord", "mtt:opera"),
        "Jazz": ("msd:jazz",),
        "Old-Time / Historic": ("msd:oldies",),
        "Blues": ("msd:blues",),
        "International": ("mtt:indian", "mtt:sitar"),
        "Instrumental": ("msd:instrumental", "mtt:no vocals", "mtt:no vocal", "mtt:no voice"),
        "Experimental": ("msd:experimental", "mtt:weird"),
    },
}
WIDTH = len(GENRE_TAGS) * len(TARGETS)


def build_table(shared: str | Path, exclude_ids: set[str] = frozenset()) -> dict:
    """Per annotator: genre feature means, genre track counts and the overall mean (JSON-able, stored in the bundle).

    `exclude_ids` (Spotify track ids, FMA track ids as strings) are left out, so clips being validated on
    never inform the prior.
    """
    import pandas as pd

    shared = Path(shared)
    cols = list(TARGETS)
    sp = pd.read_csv(shared / SPOTIFY_GENRES, encoding="utf-8-sig", dtype={"track_id": str})
    sp = sp[~sp["track_id"].isin(exclude_ids)]
    cat = pd.read_csv(shared / SPOTIFY_CATALOGUE, dtype={"track_id": str})
    cat = cat[~cat["track_id"].isin(exclude_ids)]
    en = pd.read_csv(shared / ECHONEST, dtype={"track_id": str}).merge(
        pd.read_csv(shared / ECHONEST_GENRES, dtype={"track_id": str})[["track_id", "genre_top"]], on="track_id")
    fma_ids = {i.lstrip("0") for i in exclude_ids}  # FMA ids are written 000002 in clips_labels, 2 here
    en = en[~en["track_id"].str.lstrip("0").isin(fma_ids)]
    out = {"pseudo_weight": PSEUDO_WEIGHT, "targets": cols, "annotators": {}}
    for name, frame, gcol, overall in (("spotify", sp, "genre", cat), ("echonest", en, "genre_top", en)):
        genres = list(GENRE_TAGS[name])
        g = frame[frame[gcol].isin(genres)].groupby(gcol)
        means = g[cols].mean()
        out["annotators"][name] = {
            "genres": genres, "tags": [list(GENRE_TAGS[name][k]) for k in genres],
            "columns": [[_tag_index(t) for t in GENRE_TAGS[name][k]] for k in genres],  # so apply needs no tagger
            "means": [[round(float(v), 5) for v in means.loc[k]] for k in genres],
            "tracks": [int(g.size().get(k, 0)) for k in genres],
            "overall": [round(float(v), 5) for v in overall[cols].mean()]}
    return out


def _tag_index(tag: str) -> int:
    """'msd:<tag>' or 'mtt:<tag>' -> its column among the tagger block's 100 tag probabilities (MSD then MTT)."""
    from .tagger import MSD_TAGS, MTT_TAGS

    model, name = tag.split(":", 1)
    return MSD_TAGS.index(name) if model == "msd" else len(MSD_TAGS) + MTT_TAGS.index(name)


def apply(tags: np.ndarray, table: dict) -> np.ndarray:
    """Window tag probabilities [W, 100] (MSD then MTT) -> the priors' log-odds [W, 7 per annotator]."""
    tags = np.asarray(tags, dtype=np.float64)
    out = []
    for ann in table["annotators"].values():
        cols = ann.get("columns") or [[_tag_index(t) for t in ts] for ts in ann["tags"]]
        w = np.stack([tags[:, c].max(1) for c in cols], axis=1)  # [W, G]
        means, overall = np.asarray(ann["means"]), np.asarray(ann["overall"])
        prior = (w @ means + table["pseudo_weight"] * overall) / (w.sum(1, keepdims=True) + table["pseudo_weight"])
        p = np.clip(prior, PRIOR_EPS, 1 - PRIOR_EPS)
        out.append(np.log(p / (1 - p)))
    return np.concatenate(out, axis=1)


def describe(table: dict) -> list[str]:
    """Markdown lines for the model card: each annotator's genres, their track counts and feature means."""
    lines = []
    for name, ann in table["annotators"].items():
        lines += [f"| {name} genre | tracks | " + " | ".join(table["targets"]) + " |",
                  "|---|---|" + "---|" * len(table["targets"])]
        for g, n, m in zip(ann["genres"], ann["tracks"], ann["means"]):
            lines.append(f"| {g} | {n:,} | " + " | ".join(f"{v:.2f}" for v in m) + " |")
        lines += ["| *overall* | | " + " | ".join(f"{v:.2f}" for v in ann["overall"]) + " |", ""]
    return lines


__all__ = ["build_table", "apply", "describe", "GENRE_TAGS", "WIDTH"]
