"""How Echo Nest's labels (the FMA clips' annotator) sit against Spotify's catalogue, feature by feature.

    python scripts/compare_annotators.py [--shared ../shared/data]

The held-out FMA clips are scored against Echo Nest's values, and the model predicts on Spotify's scale; where the
two annotators differ for the same kind of music, part of a bias on FMA is the annotators' gap, not the model's
error. No track is labelled by both, so this compares distributions: (1) both whole tables; (2) the nearest genres
the two tables share (FMA's genre_top against the Spotify genre table's genres); (3) both whole tables within bins
of energy, the feature whose distributions agree best, so a difference there is not a difference in how energetic
the music is. Nothing is fitted; a few seconds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from songfeat.genre_prior import ECHONEST, ECHONEST_GENRES, SPOTIFY_CATALOGUE, SPOTIFY_GENRES

FEATURES = ("danceability", "energy", "valence", "acousticness", "liveness", "speechiness", "instrumentalness")
GENRE_PAIRS = (("Electronic", "Dance"), ("Rock", "Alternative"))  # the only close pairs the two tables hold
ENERGY_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def tables(shared: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Echo Nest's FMA table with its genres, Spotify's 41,855-track catalogue, and Spotify's genre table."""
    echo = pd.read_csv(shared / ECHONEST).merge(
        pd.read_csv(shared / ECHONEST_GENRES)[["track_id", "genre_top"]], on="track_id")
    spotify = pd.read_csv(shared / SPOTIFY_CATALOGUE)
    genres = pd.read_csv(shared / SPOTIFY_GENRES, encoding="utf-8-sig")
    return echo, spotify, genres


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    shared = ap.parse_args().shared
    echo, spotify, genres = tables(shared)
    feats = [f for f in FEATURES if f in echo]

    print(f"## Whole tables: median (mean); Echo Nest {len(echo):,} tracks, Spotify {len(spotify):,}\n")
    print("| feature | Echo Nest | Spotify | Echo Nest − Spotify (medians) |\n|---|---|---|---|")
    for f in feats:
        e, s = echo[f].dropna(), spotify[f].dropna()
        print(f"| {f} | {e.median():.3f} ({e.mean():.3f}) | {s.median():.3f} ({s.mean():.3f}) "
              f"| {e.median() - s.median():+.3f} |")

    print("\n## Nearest shared genres: medians, Echo Nest / Spotify\n")
    print("| FMA genre (n) | Spotify genre (n) | " + " | ".join(feats) + " |\n|---|---|" + "---|" * len(feats))
    for eg, sg in GENRE_PAIRS:
        e, s = echo[echo.genre_top == eg], genres[genres.genre == sg]
        if e.empty or s.empty:
            continue
        cells = " | ".join(f"{e[f].median():.2f} / {s[f].median():.2f}" for f in feats)
        print(f"| {eg} ({len(e):,}) | {sg} ({len(s):,}) | {cells} |")

    print("\n## Within energy bins: median Echo Nest − median Spotify (tracks per bin: Echo Nest / Spotify)\n")
    others = [f for f in feats if f != "energy"]
    print("| energy | n | " + " | ".join(others) + " |\n|---|---|" + "---|" * len(others))
    e_bin = pd.cut(echo.energy, ENERGY_BINS, include_lowest=True)
    s_bin = pd.cut(spotify.energy, ENERGY_BINS, include_lowest=True)
    for b in e_bin.cat.categories:
        e, s = echo[e_bin == b], spotify[s_bin == b]
        if len(e) < 20 or len(s) < 20:
            continue
        cells = " | ".join(f"{e[f].median() - s[f].median():+.3f}" for f in others)
        print(f"| {max(b.left, 0.0):.1f}–{b.right:.1f} | {len(e):,} / {len(s):,} | {cells} |")
    print("\nA positive songfeat bias on FMA where Echo Nest runs below Spotify is (in part) the annotators' gap.")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
