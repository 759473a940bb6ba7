"""Why an instrumental clip reads as sung: per-patch vocal evidence, and which heads input moves its instrumentalness.

    python scripts/why_instrumental_misses.py [--shared ../shared/data] [--clip NAME] [--donor NAME]

1. For every dev and older preview and every behaviour clip (first 30 s): the MTT tagger's largest vocal-word probability
   (vocal, singing, voice, male/female vocal, choir, ...) in each 3-s patch, summarised per group as the range of the
   clips' patch maxima. A cue that lifts `--clip` above the songs would have to separate it from them here.
2. For `--clip` (default: the behaviour checking half's guitar piece) and `--donor` (an instrumental clip the model reads
   as one): each block of the heads' inputs (MSD tags, MTT tags, genre prior, VAD, pitch, spoken, dynamics, MFCC summary)
   and the measured descriptors swapped in from the donor one at a time, and the clip's instrumentalness after each.
Nothing is fitted or changed; about 2 minutes on 2 CPUs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from songfeat import evidence as E
from songfeat import pitch, tagger, vad
from songfeat.analyze import Clip, get_bundle, predict_clip, read_clip
from songfeat.audio import SAMPLE_RATE, load_audio

ROOT = Path(__file__).resolve().parents[1]
VOICE = ("vocal", "singing", "vocals", "female", "male", "woman", "man", "male vocal", "female vocal", "voice",
         "male voice", "female voice", "choir", "choral", "opera")


def patch_voice(path: Path) -> float:
    """The largest per-patch vocal-word probability of the MTT tagger over a clip's first 30 s."""
    y = load_audio(path, max_seconds=30)
    tags = tagger.run_patches(tagger.mel_patches(y, SAMPLE_RATE))["mtt_tags"]
    return float(tags[:, [tagger.MTT_TAGS.index(t) for t in VOICE]].max())


def voice_ranges(shared: Path) -> None:
    """Print, per group of clips, the range (and median) of their largest per-patch vocal probability."""
    man = pd.read_csv(shared / "behaviour" / "manifest.csv")
    rows = [(shared / "behaviour" / f, c) for f, c in zip(man["file"], man["category"])]
    for folder in ("spotify-previews", "spotify-previews-extra"):
        rows += [(p, "previews (songs and the odd instrumental)") for p in sorted((shared / folder / "audio").glob("*"))]
    got = []
    for path, group in rows:
        try:
            got.append((group, path.name, patch_voice(path)))
        except Exception as e:  # a clip too short for a patch, or one the robustness set makes unreadable
            print(f"  skipped {path.name}: {e}")
    df = pd.DataFrame(got, columns=["group", "clip", "voice"])
    print("largest per-patch vocal-word probability (MTT), per group: min / median / max")
    for g, d in df.groupby("group"):
        print(f"  {g:40s} n={len(d):3d}  {d.voice.min():.3f} / {d.voice.median():.3f} / {d.voice.max():.3f}")
    for name in ("classical_hyde_acoustic_instrumental.mp3", "classical_supertux_credits_piano.ogg"):
        v = df.loc[df["clip"] == name, "voice"]
        if len(v):
            songs = df[df.group.str.startswith("previews")].voice
            print(f"  {name}: {v.iloc[0]:.3f} (previews below it: {(songs < v.iloc[0]).sum()} of {len(songs)})")


def block_widths(bundle, n: int) -> list[tuple[str, int]]:
    """(name, width) of each part of the bundle's evidence layout, in order; the genre prior takes what is left."""
    fixed = {"vad": len(vad.STATS), "pitch": len(pitch.STATS), "spoken": len(E.SPOKEN), "dynamics": len(E.DYNAMICS)}
    parts = []
    for p in bundle.evidence_layout:
        name = p["name"] if p["block"] == "tagger" else p["block"]
        if p["transform"] == "logit":
            parts.append((name, p["stop"] - p["start"]))
        elif p["block"] in fixed:
            parts.append((name, fixed[p["block"]]))
        elif p["block"] == "mfcc_band":
            parts.append((name, 40))
        else:
            parts.append((name, -1))
    rest = n - sum(w for _, w in parts if w > 0)
    return [(name, w if w > 0 else rest) for name, w in parts]


def swap_blocks(shared: Path, clip: str, donor: str) -> None:
    """Print the clip's instrumentalness with each input block (and the descriptors) taken from the donor."""
    bundle = get_bundle(None)
    a = read_clip(shared / "behaviour" / "clips" / clip, None, bundle.evidence_layout)
    b = read_clip(shared / "behaviour" / "clips" / donor, None, bundle.evidence_layout)
    print(f"\n{clip}: instrumentalness {predict_clip(bundle, a)['instrumentalness']:.3f}; "
          f"{donor}: {predict_clip(bundle, b)['instrumentalness']:.3f}. With one block from the second:")
    ea, eb = a.evidence.mean(0, keepdims=True), b.evidence.mean(0, keepdims=True)
    start = 0
    for name, width in block_widths(bundle, a.evidence.shape[1]):
        e = ea.copy()
        e[:, start:start + width] = eb[:, start:start + width]
        swapped = Clip(a.path, a.descriptors, None, np.ones(1), e)
        print(f"  {name:12s} {predict_clip(bundle, swapped)['instrumentalness']:.3f}")
        start += width
    swapped = Clip(a.path, b.descriptors, None, a.weights, a.evidence)
    print(f"  {'descriptors':12s} {predict_clip(bundle, swapped)['instrumentalness']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--clip", default="classical_hyde_acoustic_instrumental.mp3")
    ap.add_argument("--donor", default="classical_trow_acoustic_guitar_solo.mp3")
    args = ap.parse_args()
    if not (args.shared / "behaviour" / "manifest.csv").is_file():
        raise SystemExit(f"{args.shared}: no behaviour/manifest.csv there (--shared names the shared data folder)")
    voice_ranges(args.shared)
    swap_blocks(args.shared, args.clip, args.donor)


if __name__ == "__main__":
    main()
