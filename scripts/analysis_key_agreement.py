"""How the analysis chroma's key compares with descriptors' and Spotify's on the dev previews (docs/analysis.md).

For each labelled preview: the key/mode of the whole clip from the analysis chroma (the one section
keys use) and from `descriptors` (the track's key), against Spotify's label; and, where the two
estimators disagree, how much better the analysis chroma's own key fits it than the track's key
does (the margin a section needs, `analysis.KEY_CHANGE_MARGIN`, to report its own key).

    python scripts/analysis_key_agreement.py [--shared ../shared/data]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    from songfeat import analysis as A
    from songfeat import descriptors as D
    from songfeat.audio import iter_windows

    folder = args.shared / "spotify-previews"
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="")))
    n = mine = desc = mine_km = desc_km = same = 0
    margins = []
    for r in rows:
        path = folder / "audio" / f"{r['track_id']}.mp3"
        if not path.is_file():
            continue
        evidence, stream = [], A.FrameStream()
        for w in iter_windows(path):
            evidence.append(D.window_evidence(w))
            stream.push(w)
        d = D.combine(evidence)
        ch = stream.finish().chroma.astype(np.float64)
        v = ch.max(1) > 0
        chroma = (ch[v] / ch[v].max(1, keepdims=True)).sum(0)
        key, _, mode, _ = D.estimate_key(chroma)
        k, m = int(r["key"]), int(r["mode"])
        n += 1
        mine += key == k
        desc += d.key == k
        mine_km += key == k and mode == m
        desc_km += d.key == k and d.mode == m
        same += key == d.key
        if key >= 0 and d.key >= 0 and (key, mode) != (d.key, d.mode):
            margins.append(A.key_fit(chroma, key, mode) - A.key_fit(chroma, d.key, d.mode))
    margins = np.array(margins)
    print(f"{n} previews: key agrees with Spotify's: analysis chroma {mine / n:.0%}, descriptors {desc / n:.0%}; "
          f"key and mode: {mine_km / n:.0%} vs {desc_km / n:.0%}; the two name the same key for {same / n:.0%}")
    print(f"{margins.size} clips where they differ in key or mode; margin of the analysis key over the track's: "
          f"median {np.median(margins):.3f}, {np.mean(margins < A.KEY_CHANGE_MARGIN):.0%} below KEY_CHANGE_MARGIN = {A.KEY_CHANGE_MARGIN}")


if __name__ == "__main__":
    main()
