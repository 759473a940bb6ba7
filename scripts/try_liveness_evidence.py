"""Can an audience be heard in the noise? Four crowd-noise cues against Spotify's liveness on the labelled previews.

    python scripts/try_liveness_evidence.py [--shared ../shared/data]

Spotify defines liveness as the presence of an audience in the recording. Applause and cheering are broadband noise
that neither the harmonic nor the percussive part of a mix explains, so each clip's first 30 s (22.05 kHz mono, the
band 1-8 kHz where every songfeat input stops) gets four cues, none fitted:

* the share of energy in the residual of a harmonic/percussive separation (`librosa.decompose.hpss`, margin 2);
* the median spectral flatness of its frames;
* the mean flatness of its quietest quarter of frames (crowd noise fills the gaps between notes);
* the mean flatness of all frames.

For each preview source (and all previews) it prints how many clips Spotify rates above 0.5, each cue's Spearman
correlation with liveness and its AUC for liveness > 0.5; and each cue for the behaviour clips of a crowd and of
applause beside the previews' median. A cue worth giving the heads would rank the live recordings first in every
source. Nothing here changes songfeat; docs/accuracy-notes.md quotes its output. Needs the train extra (librosa,
scikit-learn, scipy); about 2 minutes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from songfeat import sources
from songfeat.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
BAND = (1000.0, 8000.0)
CUES = ("residual share", "median flatness", "quiet-quarter flatness", "mean flatness")
BEHAVIOUR = ("live_lmms_raving_crowd.ogg", "other_short_applause_2s.ogg")


def cues(path: Path) -> np.ndarray:
    """The four cues of one file's first 30 s (see the module docstring)."""
    import librosa

    y = load_audio(path, sr=SR, max_seconds=30.0)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    freqs = librosa.fft_frequencies(sr=SR, n_fft=2048)
    band = (freqs >= BAND[0]) & (freqs <= BAND[1])
    harmonic, percussive = librosa.decompose.hpss(mag, margin=2.0)
    residual = np.maximum(mag - harmonic - percussive, 0.0)
    flat = librosa.feature.spectral_flatness(S=mag[band], power=2.0)[0]
    level = 10 * np.log10((mag[band] ** 2).sum(0) + 1e-12)
    quiet = level <= np.percentile(level, 25)
    share = (residual[band] ** 2).sum() / max(float((mag[band] ** 2).sum()), 1e-12)
    return np.array([share, np.median(flat), flat[quiet].mean(), flat.mean()])


def main() -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    clips = sources.labelled_clips(args.shared)
    clips = clips[clips["source"] != "fma"]  # Echo Nest's table has no liveness column
    if clips.empty:
        raise SystemExit(f"try_liveness_evidence: no labelled previews under {args.shared}")
    x = np.array([cues(Path(p)) for p in clips["path"]])
    live = clips["liveness"].to_numpy(float)
    src = clips["source"].to_numpy()
    print("| source | clips | liveness > 0.5 | " + " | ".join(f"{c}: rho / AUC" for c in CUES) + " |")
    print("|---|---|---|" + "---|" * len(CUES))
    for name in [*dict.fromkeys(src), "all previews"]:
        m = np.ones(len(src), bool) if name == "all previews" else src == name
        pos = live[m] > 0.5
        cells = []
        for k in range(len(CUES)):
            rho = spearmanr(x[m, k], live[m])[0]
            auc = roc_auc_score(pos, x[m, k]) if 0 < pos.sum() < m.sum() else float("nan")
            cells.append(f"{rho:+.2f} / {auc:.2f}")
        print(f"| {name} | {m.sum()} | {pos.sum()} | " + " | ".join(cells) + " |")
    print("\nBehaviour clips (Spotify's definition: an audience) beside the previews' median:")
    for f in BEHAVIOUR:
        path = args.shared / "behaviour" / "clips" / f
        if path.is_file():
            print(f"  {f}: " + ", ".join(f"{c} {v:.3f} (median {med:.3f})"
                                        for c, v, med in zip(CUES, cues(path), np.median(x, axis=0))))


if __name__ == "__main__":
    main()
