"""Variants of the measured key, loudness and tempo tried against the issue-8 targets, with held-out figures.

    python scripts/try_measured_variants.py [--shared ../shared/data] [--hpss]

Decodes the labelled previews (dev halves forró and pop/rock, extra), the behaviour clips with a
documented key and the FMA clips with Echo Nest tempo once, then prints:

* key: key+mode / mode per source for HPCP variants (harmonic/percussive separation with `--hpss`,
  ~8 min more; per-frame tonal-confidence weighting; an added bass HPCP; 5-s segment normalisation;
  a bass or chroma tonic cue deciding between fifth-related keys; a learned 24-weight profile whose
  shrinkage is picked by leave-one-source-out inside the training sources; Essentia's key profiles on
  songfeat's HPCP and Essentia's HPCP under songfeat's key decision, with the bench extra). Weights are shown as a
  grid so the reader can see that no setting chosen on one half helps the other;
* loudness: the LUFS -> Spotify dB map for several recipes (one on the stereo signal, as BS.1770
  sums channels), fitted on one dev half and checked on the other, plus the recipe each half would
  choose by its own 5-fold CV and by a nested cross-source check against the extra previews (neither
  uses the half it is scored on);
* tempo: for each FMA clip whose tempo misses Echo Nest's up to octaves/thirds, the onset
  autocorrelation at Echo Nest's beat period and at ours.

Nothing here changes songfeat; docs/descriptors.md ("Tried and not adopted") quotes its output.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from songfeat import descriptors as D
from songfeat.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_measured", ROOT / "benchmarks" / "bench_measured.py")
B = importlib.util.module_from_spec(_spec)
sys.modules["bench_measured"] = B
_spec.loader.exec_module(B)

SR = D.SAMPLE_RATE
SPEC_BINS = 600  # up to ~6.5 kHz: all the HPCP reads
GROUPS = ("forró", "pop/rock", "extra", "behaviour")

agg = D.sum_normalised  # frames -> the summed, max-normalised profile analysis uses


def load(shared: Path) -> list[dict]:
    """Every clip with its evidence and its low-band power spectrogram (voiced frames)."""
    out = []
    size = int(D.WINDOW_SECONDS * SR)
    for c in B.clips(shared):
        y = load_audio(c.path)
        ev = [D.window_evidence(y[i: i + size]) for i in range(0, max(1, y.size), size)]
        full = [D.power_spectrogram(y[i: i + size]) for i in range(0, max(1, y.size), size)]
        p = np.concatenate([f[:, :SPEC_BINS] for f in full])
        e = np.concatenate([f[:, : D.N_FFT // 4 + 1].sum(1) for f in full])
        out.append({"c": c, "ev": ev, "p": p[e > e.max() * 1e-6], "peak": float(np.abs(y).max()),
                    "stereo lufs": stereo_lufs(c.path) if c.loudness is not None else float("nan")})
    return out


def stereo_lufs(path: Path) -> float:
    """BS.1770 integrated loudness as the standard defines it for stereo (each channel's power summed; pyloudnorm),
    where songfeat measures the mono downmix: wide stereo reads up to 3 dB louder this way than its downmix."""
    import av
    import pyloudnorm

    with av.open(str(path)) as f:
        resampler = av.AudioResampler(format="fltp", rate=SR)
        frames = [o.to_ndarray() for pk in f.decode(f.streams.audio[0]) for o in resampler.resample(pk)]
        frames += [o.to_ndarray() for o in resampler.resample(None)]
    x = np.concatenate(frames, axis=1).T.astype(np.float64)
    return float(pyloudnorm.Meter(SR).integrated_loudness(x if x.shape[1] > 1 else x[:, 0]))


# ----------------------------------------------------------------------------------------------
# key


def key_table(rows: list[dict], hpss: bool, shared: Path) -> None:
    """key+mode / mode per source for each HPCP variant."""
    keyed = [r for r in rows if r["c"].key is not None]
    for r in keyed:
        r["F"] = D.hpcp_frames(r["p"])
        r["Fb"] = D.hpcp_frames(r["p"], fmin=40.0, fmax=250.0)
        r["chroma"] = sum(e.chroma for e in r["ev"])

    def show(name: str, fn) -> None:
        res: dict[str, list] = {}
        for r in keyed:
            k, _, m, _ = D.estimate_key(r["chroma"], fn(r))
            res.setdefault(r["c"].group, []).append((k == r["c"].key and m == r["c"].mode, m == r["c"].mode))
        print(f"| {name} | " + " | ".join(f"{np.mean([a for a, _ in res[g]]):.2f} / {np.mean([b for _, b in res[g]]):.2f}" for g in GROUPS if g in res) + " |")

    print("| key variant | " + " | ".join(f"{g} key+mode / mode" for g in GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    show("shipped HPCP (Aarden)", lambda r: agg(r["F"]))
    if hpss:
        from scipy.ndimage import median_filter

        for L in (9, 17, 31):
            def soft(r, L=L):
                h, q = median_filter(r["p"], size=(L, 1)), median_filter(r["p"], size=(1, L))
                return agg(D.hpcp_frames(r["p"] * (h**2 / (h**2 + q**2 + 1e-30))))
            show(f"HPSS soft mask, median {L}", soft)
    prof = np.stack([np.roll(D.MAJOR_PROFILE, k) for k in range(12)] + [np.roll(D.MINOR_PROFILE, k) for k in range(12)])
    prof = prof - prof.mean(1, keepdims=True)
    prof /= np.linalg.norm(prof, axis=1, keepdims=True)

    def tonal(r) -> np.ndarray:
        off = (0, 1, -1)[int(np.argmax(r["F"].sum(0).reshape(12, 3).sum(0)))]
        f12 = np.roll(r["F"], 1 - off, axis=1).reshape(-1, 12, 3).sum(-1)
        z = f12 - f12.mean(1, keepdims=True)
        return np.clip(((z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)) @ prof.T).max(1), 0, None)

    for pw in (1.0, 2.0, 4.0):
        show(f"frames weighted by tonal confidence^{pw:g}", lambda r, pw=pw: agg(r["F"], tonal(r) ** pw))
    for w in (0.25, 0.5, 1.0):
        show(f"plus bass (40-250 Hz) HPCP x{w:g}", lambda r, w=w: agg(r["F"]) / agg(r["F"]).sum() + w * agg(r["Fb"]) / max(agg(r["Fb"]).sum(), 1e-12))

    def segments(r, seg: int = 215) -> np.ndarray:
        out = np.zeros(36)
        for i in range(0, r["F"].shape[0], seg):
            a = agg(r["F"][i: i + seg])
            out += a / a.sum() if a.sum() > 0 else 0
        return out

    show("5-s segments normalised before summing", segments)
    fifth_cue(keyed)
    decision_variants(keyed, shared)
    learned_profile(keyed)
    essentia_profiles(keyed)
    essentia_hpcp(keyed)


def decision_variants(keyed: list[dict], shared: Path) -> None:
    """Two changes to the key decision itself, each on a grid so a weight can be read as chosen on the other sources:
    a prior from Spotify's catalogue (log P(key, mode) over the 41,855-track table, or log P(mode) alone, added to the
    profile correlations with weight w), and the 12-bin peak chroma's correlations added to the HPCP's (weight w)."""
    import pandas as pd

    cat = pd.read_csv(shared / "spotify-features" / "combined_unique_by_track_id.csv", usecols=["key", "mode"])
    cat = cat[cat["key"] >= 0]
    p = np.ones((2, 12))  # row 0 major, as key_correlations
    np.add.at(p, (1 - cat["mode"].to_numpy(int), cat["key"].to_numpy(int)), 1)
    p /= p.sum()
    priors = {"catalogue key+mode prior": np.log(p), "catalogue mode prior": np.log(p.sum(1, keepdims=True)) * np.ones((1, 12))}
    corr = [(r, D.key_correlations(D.fold_chroma(np.asarray(r["chroma"], dtype=np.float64)))[0],
             D.key_correlations(D.fold_chroma(np.asarray(agg(r["F"]), dtype=np.float64)))[0]) for r in keyed]

    def counts(score) -> str:
        res: dict[str, list] = {}
        for r, c12, c36 in corr:
            row, key = np.unravel_index(int(np.argmax(score(c12, c36))), c36.shape)
            mode = 1 if row == 0 else 0
            res.setdefault(r["c"].group, []).append((key == r["c"].key and mode == r["c"].mode, mode == r["c"].mode))
        return "  ".join(f"{g} {sum(a for a, _ in v)}/{sum(b for _, b in v)}" for g, v in res.items())

    print(f"\nKey decision variants (key+mode / mode right, counts; catalogue major share {p[0].sum():.2f}):")
    for name, lp in priors.items():
        for w in (0.0, 0.01, 0.02, 0.05, 0.08):
            print(f"  {name}, w {w:g}: " + counts(lambda c12, c36, lp=lp, w=w: c36 + w * lp))
    for w in (0.0, 0.25, 0.5, 1.0, 2.0):
        print(f"  HPCP + w x 12-bin chroma correlations, w {w:g}: " + counts(lambda c12, c36, w=w: c36 + w * c12))


def fifth_cue(keyed: list[dict]) -> None:
    """Fifth-related confusions: re-decide between the best key and its fifths by a tonic-vs-dominant cue."""
    print("\nfifth disambiguation (score = correlation + w x (cue[tonic] - cue[dominant]) over best key, +5, +7):")
    for r in keyed:
        a = D.fold_chroma(agg(r["F"]))
        b = D.fold_chroma(agg(r["Fb"]))
        r["cues"] = {"bass HPCP": b / max(b.max(), 1e-12), "HPCP": a / max(a.max(), 1e-12)}
        r["corr"] = D.key_correlations(a)[0]
    for cue in ("bass HPCP", "HPCP"):
        for w in (0.02, 0.05, 0.1, 0.2, 0.4):
            res: dict[str, list] = {}
            for r in keyed:
                row, key = np.unravel_index(int(np.argmax(r["corr"])), r["corr"].shape)
                cands = [(row, (key + d) % 12) for d in (0, 5, 7)]
                cv = r["cues"][cue]
                rw, k = cands[int(np.argmax([r["corr"][a, b] + w * (cv[b] - cv[(b + 7) % 12]) for a, b in cands]))]
                m = 1 if rw == 0 else 0
                res.setdefault(r["c"].group, []).append((k == r["c"].key and m == r["c"].mode, m == r["c"].mode))
            print(f"  {cue} w={w:g}: " + "  ".join(f"{g} {np.mean([a for a, _ in v]):.2f}/{np.mean([b for _, b in v]):.2f}" for g, v in sorted(res.items())))


def learned_profile(keyed: list[dict]) -> None:
    """A 24-weight key profile (softmax over the 24 rotations) shrunk towards Aarden, trained without the test half."""
    def z(p: np.ndarray) -> np.ndarray:
        p = p - p.mean()
        return p / np.linalg.norm(p)

    w0 = np.concatenate([z(D.MAJOR_PROFILE), z(D.MINOR_PROFILE)]) * 10

    def cands(r) -> np.ndarray:
        a = D.fold_chroma(agg(r["F"]))
        a = a / a.sum()
        out = np.zeros((24, 24))
        for k in range(12):
            v = np.roll(a, -k) - a.mean()
            out[k, :12] = v
            out[12 + k, 12:] = v
        return out

    data = {g: ([cands(r) for r in keyed if r["c"].group == g], [(0 if r["c"].mode == 1 else 12) + r["c"].key for r in keyed if r["c"].group == g])
            for g in ("forró", "pop/rock", "extra")}

    def train(xs, ys, lam: float) -> np.ndarray:
        w = w0.copy()
        for _ in range(300):
            g = np.zeros_like(w)
            for x, y in zip(xs, ys):
                s = x @ w
                p = np.exp(s - s.max())
                p /= p.sum()
                g += x.T @ p - x[y]
            w -= 10 * (g / len(xs) + lam * (w - w0))
        return w

    def acc(xs, ys, w) -> tuple[float, float]:
        pr = [int(np.argmax(x @ w)) for x in xs]
        return float(np.mean([a == b for a, b in zip(pr, ys)])), float(np.mean([(a < 12) == (b < 12) for a, b in zip(pr, ys)]))

    print("\nlearned 24-weight profile (shrinkage picked by leave-one-source-out inside the training sources):")
    for test in ("forró", "pop/rock"):
        train_groups = [g for g in data if g != test]
        best = None
        for lam in (0.001, 0.01, 0.1, 1.0):
            inner = [acc(*data[h], train(*data[[g for g in train_groups if g != h][0]], lam))[0] for h in train_groups]
            if best is None or np.mean(inner) > best[0]:
                best = (float(np.mean(inner)), lam)
        w = train(sum((data[g][0] for g in train_groups), []), sum((data[g][1] for g in train_groups), []), best[1])
        km, m = acc(*data[test], w)
        print(f"  held-out {test}: shrinkage {best[1]:g}, key+mode {km:.2f}, mode {m:.2f}")


ESSENTIA_PROFILES = ("diatonic", "krumhansl", "temperley", "tonictriad", "temperley2005", "thpcp", "shaath", "gomez",
                     "noland", "edmm", "edma", "bgate", "braw")
PITCH_CLASS = {n: i for i, names in enumerate(("C", "C# Db", "D", "D# Eb", "E", "F", "F# Gb", "G", "G# Ab", "A", "A# Bb", "B"))
               for n in names.split()}  # C = 0, either spelling


def essentia_profiles(keyed: list[dict]) -> None:
    """Essentia's key profiles (its `Key`, 12 bins; plain, then with its polyphony and three-chord options) on songfeat's
    own tuning-corrected HPCP: whether a profile, not Essentia's HPCP, is what puts bgate ahead on forró. Needs the
    bench extra."""
    try:
        import essentia.standard as es
    except ImportError:
        print("\nEssentia profiles: skipped (pip install -e '.[bench]')")
        return
    print("\nEssentia's profiles on songfeat's HPCP (key+mode / mode, counts; '+poly': polyphony and three chords,"
          " 4 harmonics, slope 0.6):")
    for prof, poly in [(p, False) for p in ESSENTIA_PROFILES] + [(p, True) for p in ESSENTIA_PROFILES]:
        key = es.Key(profileType=prof, pcpSize=12, usePolyphony=poly, useThreeChords=poly, numHarmonics=4, slope=0.6)
        res: dict[str, list] = {}
        for r in keyed:
            h = D.fold_chroma(agg(r["F"]))
            name, scale, _, _ = key(np.roll(h / max(h.max(), 1e-12), -9).astype(np.float32))  # C-first -> A-first
            k = PITCH_CLASS.get(name, -1)
            m = 1 if scale == "major" else 0
            res.setdefault(r["c"].group, []).append((k == r["c"].key and m == r["c"].mode, m == r["c"].mode))
        print(f"  {prof + (' +poly' if poly else ''):20s} " + "  ".join(f"{g} {sum(a for a, _ in v)}/{sum(b for _, b in v)} of {len(v)}" for g, v in res.items()))


def essentia_hpcp(keyed: list[dict]) -> None:
    """Essentia's own HPCP (its SpectralPeaks and HPCP on 4096-sample frames, 25-3500 Hz, with or without its spectral
    whitening and harmonics) fed to songfeat's key decision (Aarden profile, `estimate_key`): whether the HPCP is what
    puts Essentia's bgate ahead on forró. Needs the bench extra."""
    try:
        import essentia.standard as es
    except ImportError:
        print("\nEssentia's HPCP: skipped (pip install -e '.[bench]')")
        return
    sr = 44100
    window, spectrum = es.Windowing(type="blackmanharris62"), es.Spectrum()
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=1e-4, minFrequency=25, maxFrequency=3500, maxPeaks=60,
                             sampleRate=sr)
    whitening = es.SpectralWhitening(maxFrequency=3500, sampleRate=sr)
    variants = {f"{'whitened' if w else 'plain'}, {h} harmonics": (w, es.HPCP(
        size=36, referenceFrequency=440, harmonics=h, bandPreset=True, minFrequency=25, maxFrequency=3500, weightType="cosine",
        nonLinear=False, windowSize=1.0, sampleRate=sr, normalized="unitMax")) for w in (False, True) for h in (0, 4)}
    res: dict[str, dict[str, list]] = {k: {} for k in variants}
    for r in keyed:
        y = load_audio(r["c"].path, sr=sr).astype(np.float32)
        sums = {k: np.zeros(36) for k in variants}
        for frame in es.FrameGenerator(y, frameSize=4096, hopSize=4096, startFromZero=True):
            spec = spectrum(window(frame))
            f, m = peaks(spec)
            if len(f) == 0:
                continue
            mw = whitening(spec, f, m)
            for k, (white, hpcp) in variants.items():
                sums[k] += np.asarray(hpcp(f, mw if white else m))
        for k in variants:
            c36 = np.roll(sums[k], 27)  # Essentia's bin 0 is A; songfeat's is C (A is 9 semitones = 27 bins up)
            key, _, mode, _ = D.estimate_key(c36, c36)
            res[k].setdefault(r["c"].group, []).append((key == r["c"].key and mode == r["c"].mode, mode == r["c"].mode))
    print("\nEssentia's HPCP, songfeat's key decision (key+mode / mode, counts):")
    for k, v in res.items():
        print(f"  {k:22s} " + "  ".join(f"{g} {sum(a for a, _ in x)}/{sum(b for _, b in x)} of {len(x)}" for g, x in v.items()))


# ----------------------------------------------------------------------------------------------
# loudness


def loudness_features(r: dict) -> dict[str, float]:
    """Candidate level measures of one clip: gated LUFS, ungated K-weighted mean, block statistics, peak."""
    ev = r["ev"]
    n = sum(e.n_samples for e in ev)
    kw = np.concatenate([e.kw_energy for e in ev])
    offsets = np.cumsum([0] + [e.n_samples for e in ev[:-1]])
    pos = np.concatenate([o + D.HOP * np.arange(e.kw_energy.size) for o, e in zip(offsets, ev)]).astype(float)
    lufs = D.integrated_lufs(kw, pos, n, SR)
    nb = int(round((n / SR - 0.4) / 0.1)) + 1
    edges = np.concatenate([pos - D.HOP / 2, [pos[-1] + D.HOP / 2]])
    cum = np.concatenate([[0], np.cumsum(kw)])
    st = np.arange(nb) * 0.1 * SR
    blocks = -0.691 + 10 * np.log10(np.maximum(np.interp(st + 0.4 * SR, edges, cum) - np.interp(st, edges, cum), 1e-20) / (0.4 * SR))
    g = blocks[blocks > -70]
    # Echo Nest's way (Spotify's predecessor), as songfeat now ships it: the mean of 0.25-s segments' peak level
    return {"segment-max mean": D.segment_level(kw, SR), "lufs": lufs, "ungated": -0.691 + 10 * np.log10(kw.sum() / n), "block log-mean": float(g.mean()),
            "block median": float(np.median(g)), "block p90": float(np.percentile(g, 90)),
            "peak dBFS": 20 * np.log10(r["peak"] + 1e-9), "range p95-p10": float(np.percentile(g, 95) - np.percentile(g, 10)),
            "stereo lufs": r["stereo lufs"]}


RECIPES = [(b, ()) for b in ("lufs", "ungated", "block log-mean", "block median", "block p90", "stereo lufs", "segment-max mean")] + \
    [(b, (e,)) for b in ("lufs", "ungated", "block log-mean") for e in ("peak dBFS", "range p95-p10")]


def _fit(feats: list[dict], y: np.ndarray, recipe) -> np.ndarray:
    base, extra = recipe
    x = np.stack([np.ones(len(feats))] + [[f[e] for f in feats] for e in extra], 1)
    return np.linalg.lstsq(x, y - np.array([f[base] for f in feats]), rcond=None)[0]


def _pred(feats: list[dict], recipe, coef: np.ndarray) -> np.ndarray:
    base, extra = recipe
    x = np.stack([np.ones(len(feats))] + [[f[e] for f in feats] for e in extra], 1)
    return np.array([f[base] for f in feats]) + x @ coef


def _err(train: list[dict], test: list[dict], recipe) -> float:
    coef = _fit([r["lf"] for r in train], np.array([r["c"].loudness for r in train]), recipe)
    return float(np.mean(np.abs(_pred([r["lf"] for r in test], recipe, coef) - np.array([r["c"].loudness for r in test]))))


def _cv(rows: list[dict], recipe, k: int = 5) -> float:
    idx = np.random.default_rng(0).permutation(len(rows))
    errs = []
    for f in np.array_split(idx, k):
        errs.append(_err([rows[i] for i in np.setdiff1d(idx, f)], [rows[i] for i in f], recipe) * len(f))
    return float(sum(errs) / len(rows))


def loudness_table(rows: list[dict]) -> None:
    """Cross-half MAE of each recipe, and the recipe each half would choose without the other."""
    src = {g: [r for r in rows if r["c"].group == g and r["c"].loudness is not None] for g in ("forró", "pop/rock", "extra")}
    for r in rows:
        r["lf"] = loudness_features(r)

    def name(rec) -> str:
        return rec[0] + "".join(f" + a x {e}" for e in rec[1]) + " + offset"

    print("\n| loudness recipe (Spotify dB = ...) | fit pop/rock, check forró | fit forró, check pop/rock | fit dev, check extra |")
    print("|---|---|---|---|")
    for rec in RECIPES:
        print(f"| {name(rec)} | {_err(src['pop/rock'], src['forró'], rec):.2f} | {_err(src['forró'], src['pop/rock'], rec):.2f} | "
              f"{_err(src['forró'] + src['pop/rock'], src['extra'], rec):.2f} |")
    for test, train in (("forró", "pop/rock"), ("pop/rock", "forró")):
        own = min(RECIPES, key=lambda rec: _cv(src[train], rec))
        nested = min(RECIPES, key=lambda rec: (_err(src[train], src["extra"], rec) + _err(src["extra"], src[train], rec)) / 2)
        print(f"checked on {test}: chosen by 5-fold CV on {train}: {name(own)} -> {_err(src[train], src[test], own):.2f} dB; "
              f"chosen between {train} and extra: {name(nested)} -> {_err(src[train], src[test], nested):.2f} dB")


# ----------------------------------------------------------------------------------------------
# tempo


def tempo_misses(rows: list[dict]) -> None:
    """FMA clips missed up to octaves/thirds: onset autocorrelation at Echo Nest's period and at ours."""
    fps = SR / D.HOP
    print("\nFMA tempo misses (onset autocorrelation at 0.5, 1, 1.5, 2, 3 and 4 periods):")
    for r in rows:
        c = r["c"]
        if c.set != "fma":
            continue
        env = np.concatenate([e.onset for e in r["ev"]]).astype(float)
        t, conf, _, ac, per = D.estimate_tempo(env, fps)
        if B.tempo_hits(t, c.tempo)[1]:
            continue
        ref = 60 * fps / c.tempo
        print(f"  {c.path.name}: Echo Nest {c.tempo:.1f}, songfeat {t:.1f} (confidence {conf:.2f}, ratio {c.tempo / t:.3f})")
        for label, p in (("Echo Nest", ref), ("songfeat", per)):
            print(f"    {label:9s} period {p:5.1f} frames: " + " ".join(f"{D._interp(ac, m * p):+.2f}" for m in (0.5, 1, 1.5, 2, 3, 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--hpss", action="store_true", help="also try harmonic/percussive separation (~8 min more)")
    args = ap.parse_args()
    rows = load(args.shared)
    if not rows:
        raise SystemExit(f"try_measured_variants: no clips found under {args.shared}")
    key_table(rows, args.hpss, args.shared)
    loudness_table(rows)
    tempo_misses(rows)


if __name__ == "__main__":
    main()
