"""Variants of the measured key, loudness and tempo tried against the issue-8 targets, with held-out figures.

    python scripts/try_measured_variants.py [--shared ../shared/data] [--hpss] [--only-hpcp-settings] [--only-tempo-families]
                                            [--only-profile-average] [--only-basic-pitch NMP_ONNX]
                                            [--only-compound-meter] [--only-loudness-prior] [--only-nnls]
                                            [--only-synthetic-profiles] [--only-key-prior] [--only-cqt] [--only-modal]

Decodes the labelled previews (dev halves forró and pop/rock, extra), the behaviour clips with a
documented key and the FMA clips with Echo Nest tempo once, then prints:

* key: key+mode / mode per source for HPCP variants (harmonic/percussive separation with `--hpss`,
  ~8 min more; per-frame tonal-confidence weighting; an added bass HPCP; 5-s segment normalisation;
  a bass or chroma tonic cue deciding between fifth-related keys; a learned 24-weight profile whose
  shrinkage is picked by leave-one-source-out inside the training sources; Essentia's key profiles on
  songfeat's HPCP and Essentia's HPCP under songfeat's key decision, with the bench extra). Weights are shown as a
  grid so the reader can see that no setting chosen on one half helps the other;
* HPCP settings (`hpcp_settings`; alone with `--only-hpcp-settings`, a few minutes): a numpy HPCP whose window, hop,
  peak picking, interpolation, band, contribution, weighting and band preset are each songfeat's or Essentia's /
  Gomez (2006)'s, switched one at a time and cumulatively, under songfeat's key decision, with the variant each source
  would get when picked on the other two; Essentia (bench extra) only checks it and is shown as a peer;
* the average of songfeat's HPCP and Gomez's (`profile_average`; alone with `--only-profile-average`, ~30 s), with
  the weight each source would get when picked on the other two: the plain average is what the key reads since
  2026-12-04;
* loudness: the LUFS -> Spotify dB map for several recipes (one on the stereo signal, as BS.1770
  sums channels), fitted on one dev half and checked on the other, plus the recipe each half would
  choose by its own 5-fold CV and by a nested cross-source check against the extra previews (neither
  uses the half it is scored on);
* tempo: for each FMA clip whose tempo misses Echo Nest's up to octaves/thirds, the onset
  autocorrelation at Echo Nest's beat period and at ours; and acc1 / acc2 per source when the octave decision
  also weighs dotted beat periods (`descriptors.TEMPO_FAMILY` with 2/3 and 3/2);
* alone, with `--only-basic-pitch NMP_ONNX`: the key from Basic Pitch's note posteriors (Spotify's transcriber; its
  ONNX file from the `basic-pitch` wheel), alone and averaged with the shipped profile (~1.5 min);
* alone, with `--only-nnls`: the key from NNLS chroma (Mauch & Dixon 2010's approximate transcription), alone and
  averaged with the shipped profile (~2 min);
* alone, with `--only-cqt`: the key from librosa's tuning-corrected constant-Q chroma (`chroma_cqt`, `chroma_cens`),
  alone and averaged with the shipped profile (~3 min);
* alone, with `--only-synthetic-profiles`: key profiles learned from generated chord progressions and melodies only
  (nearest centroid per mode), alone and averaged with Aarden's (~3 min);
* alone, with `--only-compound-meter`: a ternary sub-beat cue beside each clip's reference / songfeat tempo ratio, to
  see whether it tells Echo Nest's 3:2 tempos (about a minute);
* alone, with `--only-loudness-prior`: the octave decision's catalogue prior made conditional on the measured loudness
  (log2 tempo regressed on loudness over the 41,855-track table: quiet tracks are slower there), with the octave weights
  picked on the other preview sources for each held-out one, beside the shipped fixed prior (about a minute).

Nothing here changes songfeat; docs/descriptors.md ("Key and mode", "Tried and not adopted") quotes its output.
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


def load(shared: Path, keyed_only: bool = False) -> list[dict]:
    """Every clip with its evidence and its low-band power spectrogram (voiced frames), and, for clips with a reference
    key, the decoded audio (the key tables read it again with other settings); with `keyed_only`, only those clips, and
    without the stereo loudness (the key tables need neither)."""
    out = []
    size = int(D.WINDOW_SECONDS * SR)
    for c in B.clips(shared):
        if keyed_only and c.key is None:
            continue
        y = load_audio(c.path)
        ev = [D.window_evidence(y[i: i + size]) for i in range(0, max(1, y.size), size)]
        full = [D.power_spectrogram(y[i: i + size]) for i in range(0, max(1, y.size), size)]
        p = np.concatenate([f[:, :SPEC_BINS] for f in full])
        e = np.concatenate([f[:, : D.N_FFT // 4 + 1].sum(1) for f in full])
        out.append({"c": c, "ev": ev, "p": p[e > e.max() * 1e-6], "peak": float(np.abs(y).max()),
                    "y": y if c.key is not None else None,
                    "stereo lufs": stereo_lufs(c.path) if c.loudness is not None and not keyed_only else float("nan")})
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


def key_table(rows: list[dict], hpss: bool, shared: Path, only_hpcp_settings: bool = False,
              only_profile_average: bool = False) -> None:
    """key+mode / mode per source for each HPCP variant (with `only_hpcp_settings` or `only_profile_average`, only
    that table)."""
    keyed = [r for r in rows if r["c"].key is not None]
    for r in keyed:
        r["chroma"] = sum(e.chroma for e in r["ev"])
    if only_hpcp_settings:
        hpcp_settings(keyed)
        return
    if only_profile_average:
        profile_average(keyed)
        return
    for r in keyed:
        r["F"] = D.hpcp_frames(r["p"])
        r["Fb"] = D.hpcp_frames(r["p"], fmin=40.0, fmax=250.0)

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
    hpcp_settings(keyed)
    profile_average(keyed)


AVERAGE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def counts_table(title: str, column: str, rows: dict[str, dict], groups: list[str]) -> None:
    """Print a markdown table of key+mode / mode counts: `rows` maps a row's name to {group: (key+mode, mode, clips)}."""
    print("\n" + title)
    first = next(iter(rows.values()))
    print(f"| {column} | " + " | ".join(f"{g} ({first[g][2]})" for g in groups) + " |")
    print("|---|" + "---|" * len(groups))
    for name, sc in rows.items():
        print(f"| {name} | " + " | ".join(f"{sc[g][0]}/{sc[g][1]}" for g in groups) + " |")


def profile_average(keyed: list[dict]) -> None:
    """songfeat's HPCP (as before 2026-12-04, `estimate_key` without Gomez's) averaged with Gomez's (`songfeat.hpcp`, the
    numpy recipe that matches Essentia's HPCP) with weight w on Gomez's, each profile scaled to sum 1, under songfeat's key
    decision; then the w each source would get when picked on the other two. Shipped since 2026-12-04: w = 0.5 (the
    plain average: no weight fitted)."""
    for r in keyed:
        r["sf"] = sum(e.chroma36 for e in r["ev"])
        r["gomez"] = sum(e.hpcp_gomez for e in r["ev"])  # window_evidence's own Gomez HPCP sum (`songfeat.hpcp`)
    groups = [g for g in GROUPS if any(r["c"].group == g for r in keyed)]
    table = {}
    for w in AVERAGE_WEIGHTS:
        res: dict[str, list] = {g: [] for g in groups}
        for r in keyed:
            prof = (1 - w) * r["sf"] / r["sf"].sum() + w * r["gomez"] / max(r["gomez"].sum(), 1e-300)
            k, _, m, _ = D.estimate_key(r["chroma"], prof)
            res[r["c"].group].append((k == r["c"].key and m == r["c"].mode, m == r["c"].mode))
        table[w] = {g: (sum(a for a, _ in v), sum(b for _, b in v), len(v)) for g, v in res.items()}
    counts_table("songfeat's HPCP averaged with Gomez's (weight w on Gomez's; key+mode / mode right, counts):", "w",
                 {f"{w:g}{' (shipped)' if w == 0.5 else ''}": sc for w, sc in table.items()}, groups)
    held = [g for g in ("forró", "pop/rock", "extra") if g in groups]
    print("Held out (w picked on the other two sources by key+mode, then mode; ties towards 0.5):")
    for g in held:
        others = [h for h in held if h != g]
        best = min(AVERAGE_WEIGHTS, key=lambda w: (-sum(table[w][h][0] for h in others), -sum(table[w][h][1] for h in others),
                                                   abs(w - 0.5)))
        print(f"  {g}: w {best:g} ({sum(table[best][h][0] for h in others)} on {' + '.join(others)}) -> {g} "
              f"{table[best][g][0]}/{table[best][g][1]} of {table[best][g][2]}")
    learned_classifier(keyed, held)


CLASSIFIER_SHRINKAGE = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def learned_classifier(keyed: list[dict], held: list[str]) -> None:
    """A small learned key classifier on the two profiles (the issue's last key candidate): each of the 24 candidate keys
    is scored by w_mode . [songfeat's and Gomez's 12-bin profiles rotated to the candidate tonic, each centred] + b_mode,
    a softmax over the 24 (so it is transposition-equivariant: no augmentation needed), 48 weights started at and shrunk
    towards the Aarden profiles (x50, the scale of a correlation), the shrinkage picked by leave-one-source-out inside the
    training sources, trained on the other two sources and scored on the third."""
    from scipy.optimize import minimize

    def prof(c: np.ndarray) -> np.ndarray:
        p = D.fold_chroma(np.asarray(c, dtype=np.float64))
        return p / p.sum()

    rows = [r for r in keyed if r["c"].group in held]
    x = np.array([[np.concatenate([np.roll(prof(r["sf"]), -t) - 1 / 12, np.roll(prof(r["gomez"]), -t) - 1 / 12])
                   for t in range(12)] for r in rows])  # [N, 12 tonics, 24]
    y = np.array([(0 if r["c"].mode == 1 else 12) + r["c"].key for r in rows])
    group = np.array([r["c"].group for r in rows])
    ref = [D.MAJOR_PROFILE / D.MAJOR_PROFILE.sum(), D.MINOR_PROFILE / D.MINOR_PROFILE.sum()]
    w0 = np.concatenate([np.tile(p - p.mean(), 2) * 50 for p in ref] + [np.zeros(2)])

    def scores(w: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([x[idx] @ w[:24] + w[48], x[idx] @ w[24:48] + w[49]], axis=1)  # [n, 24]: majors, minors

    def fit(idx: np.ndarray, lam: float) -> np.ndarray:
        def loss(w):
            s = scores(w, idx)
            s = s - s.max(1, keepdims=True)
            p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
            onehot = np.eye(24)[y[idx]]
            g = (p - onehot) / len(idx)  # d(mean cross-entropy) / d scores
            grad = np.concatenate([np.einsum("nk,nkd->d", g[:, :12], x[idx]), np.einsum("nk,nkd->d", g[:, 12:], x[idx]),
                                   [g[:, :12].sum(), g[:, 12:].sum()]])
            pen = w - w0
            pen[48:] = 0.0
            return -np.mean(np.log(p[np.arange(len(idx)), y[idx]] + 1e-300)) + lam * (pen ** 2).sum(), grad + 2 * lam * pen
        return minimize(loss, w0, jac=True, method="L-BFGS-B").x

    def count(w: np.ndarray, idx: np.ndarray) -> tuple[int, int]:
        pred = scores(w, idx).argmax(1)
        return int((pred == y[idx]).sum()), int(((pred >= 12) == (y[idx] >= 12)).sum())

    print("\nLearned key classifier on the two profiles (held out; key+mode / mode right):")
    for g in held:
        others = [h for h in held if h != g]
        inner = {lam: sum(count(fit(np.flatnonzero(np.isin(group, [o for o in others if o != ih])), lam),
                                np.flatnonzero(group == ih))[0] for ih in others) for lam in CLASSIFIER_SHRINKAGE}
        lam = max(CLASSIFIER_SHRINKAGE, key=lambda v: (inner[v], v))
        test = np.flatnonzero(group == g)
        every = {v: count(fit(np.flatnonzero(np.isin(group, others)), v), test) for v in CLASSIFIER_SHRINKAGE}
        print(f"  {g}: shrinkage {lam:g} (inner {inner[lam]} on {' + '.join(others)}) -> {g} {every[lam][0]}/{every[lam][1]} of "
              f"{len(test)}; every shrinkage: " + ", ".join(f"{v:g} {a}/{b}" for v, (a, b) in every.items()))


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
        y = r["y"]
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
# HPCP settings, songfeat's against Essentia's / Gomez (2006)'s, one at a time (numpy; Essentia only as a peer and a check)

HPCP_SETTINGS = ("window", "hop", "peaks", "interp", "band", "contrib", "weight", "preset")
SONGFEAT_HPCP = {"window": "hann", "hop": D.HOP, "peaks": "range", "interp": "db", "band": (D.HPCP_FMIN, D.HPCP_FMAX),
                 "contrib": "mag", "weight": "cos2", "preset": False}
ESSENTIA_HPCP = {"window": "bh62", "hop": D.N_FFT, "peaks": "top60", "interp": "lin", "band": (25.0, 3500.0),
                 "contrib": "mag2", "weight": "cos", "preset": True}
HPCP_LABELS = {
    "window": {"hann": "Hann window", "bh62": "Blackman-Harris 62 dB window (3-term)", "bh92": "Blackman-Harris 92 dB window (4-term)"},
    "hop": {D.HOP: "hop 1024 (centred frames)", D.N_FFT: "hop 4096 (frames from sample 0)"},
    "peaks": {"range": "local maxima within 60 dB of the frame max", "top60": "60 strongest peaks above 1e-4"},
    "interp": {"db": "interpolation on dB", "lin": "interpolation on linear magnitude"},
    "band": {(D.HPCP_FMIN, D.HPCP_FMAX): "40-5000 Hz", (25.0, 3500.0): "25-3500 Hz"},
    "contrib": {"mag": "magnitude", "mag2": "magnitude squared"},
    "weight": {"cos2": "cos^2 weight", "cos": "cos weight"},
    "preset": {False: "one band", True: "band preset (below / from 500 Hz, each band unitMax)"},
}
PEAK_THRESHOLD = 1e-4  # Essentia SpectralPeaks' magnitudeThreshold (KeyExtractor's spectralPeaksThreshold)
MAX_PEAKS = 60
BAND_SPLIT_HZ = 500.0  # Essentia HPCP's bandSplitFrequency
HPCP_SPEC_BINS = int(D.HPCP_FMAX * D.N_FFT / SR) + 4  # magnitude bins kept: every peak read up to 5 kHz and its neighbour


def hpcp_window(name: str) -> np.ndarray:
    """Analysis window (float32) scaled to sum 2, as Essentia's Windowing(normalized=True): a sinusoid of amplitude A then
    reads ~A at its spectral peak, so Essentia's 1e-4 peak threshold means the same here. Hann is songfeat's periodic one;
    the Blackman-Harris windows are Essentia's symmetric ones (blackmanharris62: 3 terms; blackmanharris92: 4 terms)."""
    n = np.arange(D.N_FFT, dtype=np.float64)
    if name == "hann":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * n / D.N_FFT)
    else:
        a = {"bh62": (0.44959, 0.49364, 0.05677), "bh92": (0.35875, 0.48829, 0.14128, 0.01168)}[name]
        w = sum((-1) ** k * ak * np.cos(2 * np.pi * k * n / (D.N_FFT - 1)) for k, ak in enumerate(a))
    return (w * 2.0 / w.sum()).astype(np.float32)


def hpcp_spectra(y: np.ndarray, window: str, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude spectra [frames, HPCP_SPEC_BINS] (float32) and frame energy up to 11 kHz. Hop 1024 frames as songfeat does
    (centred, reflect-padded, each 30-s window on its own); hop 4096 as Essentia's FrameGenerator(startFromZero=True)
    (frames from sample 0, the last one zero-padded)."""
    w = hpcp_window(window)
    if hop == D.HOP:
        size = int(D.WINDOW_SECONDS * SR)
        frames = []
        for i in range(0, max(1, y.size), size):
            frames.append(D.centred_frames(y[i: i + size], D.N_FFT, hop))
    else:
        n = max(1, -(-y.size // hop))
        frames = [np.lib.stride_tricks.sliding_window_view(np.pad(y, (0, n * hop + D.N_FFT - y.size)), D.N_FFT)[::hop][:n]]
    mags, energy = [], []
    for f in frames:
        for i in range(0, f.shape[0], 256):
            x = np.fft.rfft(f[i: i + 256] * w, axis=1)
            p = x.real**2 + x.imag**2
            mags.append(np.sqrt(p[:, :HPCP_SPEC_BINS]))
            energy.append(p[:, : D.N_FFT // 4 + 1].sum(1))
    return np.concatenate(mags), np.concatenate(energy)


def hpcp_peaks(mag: np.ndarray, s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectral peaks (frame index, frequency Hz, linear amplitude) of magnitude spectra under settings `s`.

    peaks "range": songfeat's (`D.hpcp_frames`): every local maximum (above its left neighbour, not below its right) within
    HPCP_RANGE_DB of the frame's loudest bin up to fmax. "top60": Essentia's SpectralPeaks (PeakDetection): local maxima
    strictly above both neighbours whose bin magnitude exceeds 1e-4 (the first bin of the range counts when above the next),
    the 60 largest by interpolated magnitude. interp "db": parabola through the three bins in dB, amplitude back to linear;
    "lin": the parabola through the linear magnitudes (Essentia's SpectralPeaks works on the magnitude spectrum)."""
    fmin, fmax = s["band"]
    hi = min(mag.shape[1] - 1, int(fmax * D.N_FFT / SR) + 2)
    m = mag[:, : hi + 1]
    a, b, c = m[:, :-2], m[:, 1:-1], m[:, 2:]
    if s["peaks"] == "range":
        db = 20.0 * np.log10(np.maximum(m, np.float32(1e-6)))  # = songfeat's 10 log10(max(power, 1e-12))
        cand = (b > a) & (b >= c) & (db[:, 1:-1] > db.max(1, keepdims=True) - np.float32(D.HPCP_RANGE_DB))
    else:
        cand = (b > a) & (b > c) & (b > PEAK_THRESHOLD)
        i0 = int(np.ceil(fmin * D.N_FFT / SR))  # PeakDetection starts here; this bin is a peak if above the next one
        cand[:, : max(0, i0 - 1)] = False
        edge = (m[:, i0] > m[:, i0 + 1]) & (m[:, i0] > PEAK_THRESHOLD)
        cand[:, i0 - 1] = edge
    t, j = np.nonzero(cand)
    pa, pb, pc = (v[t, j].astype(np.float64) for v in (a, b, c))
    if s["interp"] == "db":
        pa, pb, pc = (20.0 * np.log10(np.maximum(v, 1e-6)) for v in (pa, pb, pc))
    den = pa - 2 * pb + pc
    safe = np.abs(den) > 1e-12
    delta = np.clip(np.where(safe, 0.5 * (pa - pc) / np.where(safe, den, 1.0), 0.0), -0.5, 0.5)
    amp = pb - 0.25 * (pa - pc) * delta
    if s["peaks"] == "top60":  # the boundary bin is taken as it is, not interpolated
        at_edge = j == i0 - 1
        delta[at_edge], amp[at_edge] = 0.0, pb[at_edge]
    if s["interp"] == "db":
        amp = 10.0 ** (amp / 20.0)
    freq = (j + 1 + delta) * SR / D.N_FFT
    ok = (freq >= fmin) & (freq <= fmax)
    t, freq, amp = t[ok], freq[ok], amp[ok]
    if s["peaks"] == "top60":
        keep = np.ones(t.size, dtype=bool)
        order = np.lexsort((-amp, t))  # by frame, then loudest first
        rank = np.arange(t.size) - np.searchsorted(t[order], t[order], side="left")
        keep[order[rank >= MAX_PEAKS]] = False
        t, freq, amp = t[keep], freq[keep], amp[keep]
    return t, freq, amp


def hpcp_from_peaks(t: np.ndarray, freq: np.ndarray, amp: np.ndarray, n_frames: int, s: dict) -> np.ndarray:
    """Per-frame 36-bin HPCP [frames, 36] (C first, bins centred on A440 pitches) from peaks, under settings `s`:
    contrib "mag" adds the amplitude, "mag2" its square (Essentia); weight "cos2" = cos^2(pi d), "cos" = cos(pi d), d the
    distance in semitones, |d| < 0.5; with the band preset, peaks below 500 Hz and from 500 Hz up make two profiles, each
    divided by its own maximum, then added (Essentia's bandPreset with unitMax, as measured in `hpcp_essentia_checks`)."""
    x = amp if s["contrib"] == "mag" else amp**2
    pos = np.remainder(36.0 * np.log2(freq / 440.0) + 27.0, 36.0)
    base = np.floor(pos)
    bands = [freq < BAND_SPLIT_HZ, freq >= BAND_SPLIT_HZ] if s["preset"] else [np.ones(freq.size, dtype=bool)]
    out = np.zeros((n_frames, 36))
    for sel in bands:
        h = np.zeros(n_frames * 36)
        for off in (-1.0, 0.0, 1.0, 2.0):
            k = base[sel] + off
            d = (pos[sel] - k) / 3.0
            cw = np.cos(np.pi * d)
            wt = np.where(np.abs(d) < 0.5, cw**2 if s["weight"] == "cos2" else cw, 0.0)
            h += np.bincount(t[sel] * 36 + np.remainder(k, 36).astype(np.int64), weights=x[sel] * wt, minlength=h.size)
        h = h.reshape(n_frames, 36)
        if s["preset"]:
            mx = h.max(1, keepdims=True)
            h = np.where(mx > 0, h / np.where(mx > 0, mx, 1.0), 0.0)
        out += h
    return out


def hpcp_variants() -> list[tuple[str, str, dict]]:
    """(kind, name, settings) of every variant: songfeat's recipe; each setting switched alone to Essentia's (and the
    4-term Blackman-Harris window); the settings switched cumulatively towards Essentia's; Essentia's recipe with each
    setting switched back to songfeat's."""
    def lab(k: str, s: dict) -> str:
        return HPCP_LABELS[k][s[k]]

    out = [("songfeat", "songfeat's recipe (shipped)", dict(SONGFEAT_HPCP))]
    for k in HPCP_SETTINGS:
        out.append(("single", f"songfeat + {lab(k, ESSENTIA_HPCP)}", {**SONGFEAT_HPCP, k: ESSENTIA_HPCP[k]}))
        if k == "window":
            out.append(("single", f"songfeat + {HPCP_LABELS['window']['bh92']}", {**SONGFEAT_HPCP, "window": "bh92"}))
    s = dict(SONGFEAT_HPCP)
    for i, k in enumerate(HPCP_SETTINGS):
        s = {**s, k: ESSENTIA_HPCP[k]}
        if i > 0:  # the first step is the single window switch above
            out.append(("cumulative", f"cumulative {i + 1}: Essentia's {', '.join(HPCP_SETTINGS[: i + 1])}"
                        + (" (= all Essentia's settings)" if i == len(HPCP_SETTINGS) - 1 else ""), dict(s)))
    for k in HPCP_SETTINGS:
        out.append(("essentia-but-one", f"Essentia's settings but {lab(k, SONGFEAT_HPCP)}", {**ESSENTIA_HPCP, k: SONGFEAT_HPCP[k]}))
    return out


def hpcp_essentia_checks(keyed: list[dict]) -> dict | None:
    """Check the numpy pieces against Essentia (benchmark dependency only) and return its own HPCP pieces for the peer
    row, or None without Essentia. Prints: the window, SpectralPeaks' peak lists on real frames, and HPCP's semantics
    on synthetic peak lists (contribution, weighting, band preset)."""
    try:
        import essentia.standard as es
    except ImportError:
        print("\nEssentia checks: skipped (pip install -e '.[bench]')")
        return None
    ess = ESSENTIA_HPCP
    window, spectrum = es.Windowing(type="blackmanharris62", size=D.N_FFT), es.Spectrum(size=D.N_FFT)
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=PEAK_THRESHOLD, minFrequency=ess["band"][0],
                             maxFrequency=ess["band"][1], maxPeaks=MAX_PEAKS, sampleRate=SR)
    hpcp = es.HPCP(size=36, referenceFrequency=440, harmonics=0, bandPreset=True, bandSplitFrequency=BAND_SPLIT_HZ,
                   minFrequency=ess["band"][0], maxFrequency=ess["band"][1], weightType="cosine", nonLinear=False,
                   windowSize=1.0, sampleRate=SR, normalized="unitMax")
    print("\nChecks against Essentia (it is only a peer and a check here):")
    w = np.asarray(es.Windowing(type="blackmanharris62", size=D.N_FFT, zeroPhase=False)(np.ones(D.N_FFT, np.float32)))
    print(f"  window: numpy blackmanharris62 (symmetric, scaled to sum 2) vs Essentia's Windowing(normalized=True): "
          f"max |diff| {np.abs(w - hpcp_window('bh62')).max():.1e}")
    # synthetic peak lists: Essentia's HPCP against the numpy one, each setting of contribution / weight / band preset
    rng = np.random.default_rng(0)
    worst: dict[tuple, float] = {}
    for weight, preset in [(wt, p) for wt in ("cos", "cos2") for p in (False, True)]:
        ref = es.HPCP(size=36, referenceFrequency=440, harmonics=0, bandPreset=preset, bandSplitFrequency=BAND_SPLIT_HZ,
                      minFrequency=25, maxFrequency=3500, weightType="cosine" if weight == "cos" else "squaredCosine",
                      nonLinear=False, windowSize=1.0, sampleRate=SR, normalized="unitMax")
        s = {**ess, "weight": weight, "preset": preset}
        err = 0.0
        for _ in range(200):
            n = int(rng.integers(1, 80))
            f = np.exp(rng.uniform(np.log(25), np.log(3500), n)).astype(np.float32)
            m = rng.uniform(1e-4, 1, n).astype(np.float32)
            mine = hpcp_from_peaks(np.zeros(n, np.int64), f.astype(np.float64), m.astype(np.float64), 1, s)[0]
            mine = np.roll(mine / max(mine.max(), 1e-30), -27)  # C-first -> A-first, unitMax as Essentia
            err = max(err, float(np.abs(np.asarray(ref(f, m)) - mine).max()))
        worst[(weight, preset)] = err
    print("  HPCP, unitMax, on 200 random synthetic peak lists each (1-79 peaks, 25-3500 Hz): max |numpy (magnitude squared) -"
          " Essentia| " + ", ".join(f"{wt} weight / {'band preset' if p else 'one band'} {e:.1e}" for (wt, p), e in worst.items()))
    one = es.HPCP(size=36, harmonics=0, bandPreset=False, minFrequency=25, maxFrequency=3500, weightType="cosine",
                  windowSize=1.0, sampleRate=SR, normalized="none")
    h1, h2 = np.asarray(one(np.float32([440 * 2 ** (0.2 / 12)]), np.float32([1.0]))), np.asarray(one(np.float32([440 * 2 ** (0.2 / 12)]), np.float32([2.0])))
    print(f"  one peak 0.2 semitone above A4, amplitude 1: bins A, A+1/3, A+2/3 get {h1[0]:.4f} {h1[1]:.4f} {h1[2]:.4f} "
          f"(cos(pi d) for d = 0.2, 0.133, 0.467 semitone: {np.cos(np.pi * 0.2):.4f} {np.cos(np.pi * 0.4 / 3):.4f} {np.cos(np.pi * 1.4 / 3):.4f}); "
          f"amplitude 2 gives {h2[1] / h1[1]:.2f}x (magnitude squared)")
    bp = es.HPCP(size=36, harmonics=0, bandPreset=True, bandSplitFrequency=500, minFrequency=25, maxFrequency=3500,
                 weightType="cosine", windowSize=1.0, sampleRate=SR, normalized="unitMax")
    hb = np.asarray(bp(np.float32([300, 1000]), np.float32([1.0, 0.1])))
    hn = np.asarray(es.HPCP(size=36, harmonics=0, bandPreset=True, bandSplitFrequency=500, minFrequency=25, maxFrequency=3500,
                            weightType="cosine", windowSize=1.0, sampleRate=SR, normalized="none")(np.float32([300, 1000]), np.float32([1.0, 0.1])))
    print(f"  band preset: peaks at 300 Hz (amplitude 1) and 1000 Hz (0.1) read max {hb[6:9].max():.3f} and {hb[15:18].max():.3f} "
          f"with unitMax (each band scaled to max 1 before adding; without the preset 0.010 and 1.000), "
          f"and {hn[6:9].max():.4f} / {hn[15:18].max():.4f} with normalized='none' (the preset then does nothing)")
    # SpectralPeaks against hpcp_peaks on real frames
    nmatch = nboth = 0
    fdiff = mdiff = 0.0
    for r in keyed[::20]:
        y = r["y"]
        for i in (10, 60, 110, 200):
            if (i + 1) * D.N_FFT > y.size:
                continue
            fr = y[i * D.N_FFT: (i + 1) * D.N_FFT].astype(np.float32)
            ef, em = (np.asarray(v, dtype=np.float64) for v in peaks(spectrum(window(fr))))
            mag = np.abs(np.fft.rfft(fr * hpcp_window("bh62")))[None, :HPCP_SPEC_BINS].astype(np.float32)
            _, nf, nm = hpcp_peaks(mag, ess)
            nboth += 1
            if nf.size == ef.size:
                a, b = np.sort(nf), np.sort(ef)
                if a.size == 0:
                    nmatch += 1
                elif np.all(np.abs(a - b) < 1.0):
                    nmatch += 1
                    fdiff = max(fdiff, float(np.abs(a - b).max()))
                    mdiff = max(mdiff, float(np.max(np.abs(nm[np.argsort(nf)] - em[np.argsort(ef)]) / em[np.argsort(ef)])))
    print(f"  SpectralPeaks (blackmanharris62 frame, Spectrum, 60 strongest > 1e-4, 25-3500 Hz) vs the numpy peaks on {nboth} "
          f"real frames ({len(keyed[::20])} clips): same peak list in {nmatch}; worst frequency difference {fdiff:.2e} Hz, worst "
          f"relative magnitude difference {mdiff:.1e}")
    return {"window": window, "spectrum": spectrum, "peaks": peaks, "hpcp": hpcp}


def hpcp_settings(keyed: list[dict]) -> None:
    """Which of Essentia's HPCP settings (window, hop, peak picking, interpolation, band, contribution, weighting, band
    preset) moves songfeat's key, switched one at a time from songfeat's recipe, cumulatively towards Essentia's, and
    back one at a time from Essentia's; each summed HPCP goes to songfeat's key decision (`D.estimate_key(chroma12, hpcp36)`).
    Then the held-out picks: for each of forró, pop/rock and extra, the variant best on the other two (key+mode)."""
    import time

    t0 = time.perf_counter()
    variants = hpcp_variants()
    ess = hpcp_essentia_checks(keyed)
    sums = {name: [] for _, name, _ in variants}
    from songfeat import hpcp

    peer, corr_frames, corr_sums, base_dev, gomez_dev = [], [], [], [], []
    for r in keyed:
        y = r["y"]
        spectra: dict[tuple, tuple] = {}
        peak_cache: dict[tuple, tuple] = {}
        for _, name, s in variants:
            sk = (s["window"], s["hop"])
            if sk not in spectra:
                spectra[sk] = hpcp_spectra(y, *sk)
            mag, energy = spectra[sk]
            pk = sk + (s["peaks"], s["interp"], s["band"])
            if pk not in peak_cache:
                peak_cache[pk] = hpcp_peaks(mag, s)
            frames = hpcp_from_peaks(*peak_cache[pk], mag.shape[0], s)
            voiced = energy > energy.max() * 1e-6  # as load(): frames of (near) digital silence are left out
            sums[name].append(agg(frames[voiced]))
            if s == SONGFEAT_HPCP:  # the recipe must be songfeat's own HPCP (the script's rows: D.hpcp_frames on r["p"])
                ref = agg(D.hpcp_frames(r["p"]))
                base_dev.append(float(np.abs(sums[name][-1] - ref).max() / ref.max()))
            if s == ESSENTIA_HPCP:
                mine, mine_sum = frames, sums[name][-1]
                # the shipped `songfeat.hpcp` is this variant (its own whole-file framing here): they must not drift apart
                shipped = agg(hpcp.frames(y, SR))
                gomez_dev.append(float(np.abs(mine_sum - shipped).max() / shipped.max()))
        if ess is not None:  # Essentia's own HPCP on the same frames: the peer row, and the per-frame check of `mine`
            n = mine.shape[0]
            fr = np.pad(y, (0, n * D.N_FFT - y.size)).reshape(n, D.N_FFT).astype(np.float32)
            theirs = np.zeros((n, 36))
            for i in range(n):
                f, m = ess["peaks"](ess["spectrum"](ess["window"](fr[i])))
                if len(f):
                    theirs[i] = np.roll(np.asarray(ess["hpcp"](f, m)), 27)  # A-first -> C-first
            both = (theirs.max(1) > 0) & (mine.max(1) > 0)
            corr_frames += [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(mine[both], theirs[both])]
            peer.append(theirs.sum(0))
            corr_sums.append(float(np.corrcoef(mine_sum, theirs.sum(0))[0, 1]))
    if ess is not None:
        cf = np.array(corr_frames)
        print(f"  all-Essentia settings, numpy vs Essentia's HPCP on the same frames ({cf.size} frames of {len(keyed)} clips): "
              f"per-frame correlation median {np.median(cf):.7f}, mean {cf.mean():.7f}, 1st percentile {np.percentile(cf, 1):.7f}, "
              f"min {cf.min():.7f} (1 - min = {1 - cf.min():.1e}), {np.mean(cf > 0.99):.1%} of frames > 0.99; summed over each clip: min {min(corr_sums):.7f}, "
              f"median {np.median(corr_sums):.7f}")

    print(f"  songfeat's recipe here vs the shipped D.hpcp_frames: worst relative difference of a clip's summed HPCP {max(base_dev):.1e}")
    print(f"  all-Essentia settings here vs the shipped songfeat.hpcp (the key's second profile): worst relative difference "
          f"{max(gomez_dev):.1e}")
    groups = [g for g in GROUPS if any(r["c"].group == g for r in keyed)]

    def score(c36s) -> dict[str, tuple[int, int, int]]:
        res: dict[str, list] = {g: [] for g in groups}
        for r, c36 in zip(keyed, c36s):
            k, _, m, _ = D.estimate_key(r["chroma"], c36)
            res[r["c"].group].append((k == r["c"].key and m == r["c"].mode, m == r["c"].mode))
        return {g: (sum(a for a, _ in v), sum(b for _, b in v), len(v)) for g, v in res.items()}

    table = [(kind, name, s, score(sums[name])) for kind, name, s in variants]
    print(f"\nHPCP settings, songfeat's key decision (key+mode / mode right, counts; {time.perf_counter() - t0:.0f} s):")
    print("| HPCP variant | settings differing from songfeat's | " + " | ".join(f"{g} ({table[0][3][g][2]})" for g in groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for kind, name, s, sc in table:
        diff = sum(s[k] != SONGFEAT_HPCP[k] for k in HPCP_SETTINGS)
        print(f"| {name} | {diff} | " + " | ".join(f"{sc[g][0]}/{sc[g][1]}" for g in groups) + " |")
    if peer:
        sc = score(peer)
        print("| (peer) Essentia's own HPCP, same frames, no silence gate | – | " + " | ".join(f"{sc[g][0]}/{sc[g][1]}" for g in groups) + " |")

    base = table[0][3]
    print("\nSingle settings moving key+mode or mode by >= 2 songs on a source (against songfeat's recipe):")
    for kind, name, s, sc in table:
        if kind == "single":
            moves = [f"{g} key+mode {sc[g][0] - base[g][0]:+d}, mode {sc[g][1] - base[g][1]:+d}" for g in groups
                     if abs(sc[g][0] - base[g][0]) >= 2 or abs(sc[g][1] - base[g][1]) >= 2]
            print(f"  {name}: " + ("; ".join(moves) if moves else "none"))

    bgate = {"forró": 32, "pop/rock": 20, "extra": 18}  # benchmarks/bench_measured.py, KeyExtractor(profileType="bgate")
    held = [g for g in ("forró", "pop/rock", "extra") if g in groups]
    for pool_name, pool in (("every variant above", table), ("single and cumulative switches only",
                                                              [t for t in table if t[0] in ("songfeat", "single", "cumulative")])):
        print(f"\nHeld out (picked on the other two sources by key+mode; ties: fewer settings differing from songfeat's, then"
              f" mode on the other two, then table order); pool: {pool_name}:")
        for g in held:
            others = [h for h in held if h != g]

            def rank(i_t):
                i, (kind, name, s, sc) = i_t
                return (-sum(sc[h][0] for h in others), sum(s[k] != SONGFEAT_HPCP[k] for k in HPCP_SETTINGS),
                        -sum(sc[h][1] for h in others), i)

            _, (kind, name, s, sc) = min(enumerate(pool), key=rank)
            print(f"  {g}: pick '{name}' ({sum(sc[h][0] for h in others)} key+mode on {' + '.join(others)}) -> {g} "
                  f"{sc[g][0]}/{sc[g][1]} of {sc[g][2]}; songfeat's recipe {base[g][0]}/{base[g][1]}; Essentia bgate KeyExtractor {bgate[g]}")


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


def onset_envelope(r: dict) -> np.ndarray:
    """A clip's whole-song onset envelope (its windows' in order), as `descriptors.combine` hands it to the tempo."""
    return np.concatenate([e.onset for e in r["ev"]]).astype(float)


def tempo_misses(rows: list[dict]) -> None:
    """FMA clips missed up to octaves/thirds: onset autocorrelation at Echo Nest's period and at ours."""
    fps = SR / D.HOP
    print("\nFMA tempo misses (onset autocorrelation at 0.5, 1, 1.5, 2, 3 and 4 periods):")
    for r in rows:
        c = r["c"]
        if c.set != "fma":
            continue
        env = onset_envelope(r)
        t, conf, _, ac, per = D.estimate_tempo(env, fps)
        if B.tempo_hits(t, c.tempo)[1]:
            continue
        ref = 60 * fps / c.tempo
        print(f"  {c.path.name}: Echo Nest {c.tempo:.1f}, songfeat {t:.1f} (confidence {conf:.2f}, ratio {c.tempo / t:.3f})")
        for label, p in (("Echo Nest", ref), ("songfeat", per)):
            print(f"    {label:9s} period {p:5.1f} frames: " + " ".join(f"{D._interp(ac, m * p):+.2f}" for m in (0.5, 1, 1.5, 2, 3, 4)))


def tempo_families(rows: list[dict]) -> None:
    """Tempo acc1 / acc2 per source when the octave decision also weighs dotted (3/2, 2/3) beat periods."""
    fps = SR / D.HOP
    print("\nTempo families (multiples of the strongest pulse the octave decision weighs; acc1 / acc2 per source):")
    for fam in (D.TEMPO_FAMILY, (0.5, 2 / 3, 1.0, 2.0), (0.5, 1.0, 1.5, 2.0), (0.5, 2 / 3, 1.0, 1.5, 2.0)):
        hits: dict[str, list] = {}
        for r in rows:
            c = r["c"]
            if c.tempo is None:
                continue
            env = onset_envelope(r)
            hits.setdefault(c.group if c.set == "dev" else c.set, []).append(B.tempo_hits(D.estimate_tempo(env, fps, multiples=fam)[0], c.tempo))
        name = ", ".join(f"{f:.3g}" for f in fam) + (" (shipped)" if fam == D.TEMPO_FAMILY else "")
        print(f"  {name}: " + "; ".join(f"{s} {np.mean([h[0] for h in v]):.2f} / {np.mean([h[1] for h in v]):.2f}"
                                          for s, v in sorted(hits.items())))


def loudness_prior(rows: list[dict], shared: Path) -> None:
    """Tempo acc1 / acc2 per held-out source with the catalogue prior fixed (shipped) or centred by the measured loudness.

    Spotify's catalogue is slower where it is quieter (geometric mean tempo 102 BPM in its quietest sixth, 123 in its
    loudest), so calm music could get a slower prior. The regression and its residual spread come from the catalogue
    only; the octave weights are picked from `D.OCTAVE_WEIGHT_GRID` on the other labelled preview sources, as
    `scripts/evaluate_descriptors.py --loso` does, and FMA gets the weights picked on all previews."""
    import pandas as pd

    cat = pd.read_csv(shared / "spotify-features" / "combined_unique_by_track_id.csv", usecols=["tempo", "loudness"])
    cat = cat[(cat.tempo > 30) & np.isfinite(cat.loudness)]
    x = np.log2(cat.tempo.to_numpy())
    slope, icpt = np.polyfit(cat.loudness.to_numpy(), x, 1)
    spread = float(np.std(x - (icpt + slope * cat.loudness.to_numpy())))
    print(f"\nLoudness-conditional tempo prior: log2 BPM = {icpt:.3f} + {slope:.4f} x loudness dB, spread {spread:.3f} "
          f"octave (fixed: {D.TEMPO_PRIOR_BPM:g} BPM, {D.TEMPO_PRIOR_OCTAVES} octave)")
    fps = SR / D.HOP
    clips = [(r["c"].group if r["c"].set == "dev" else r["c"].set, r["c"].tempo, onset_envelope(r),
              D.combine(r["ev"]).loudness) for r in rows if r["c"].tempo is not None]
    src = np.array([c[0] for c in clips])
    for name in ("fixed (shipped)", "loudness-conditional"):
        hits = {}
        for w in D.OCTAVE_WEIGHT_GRID:
            hits[w] = np.array([B.tempo_hits(D.estimate_tempo(
                env, fps, comb_weight=w[0], density_weight=w[1],
                prior=None if name.startswith("fixed") else (2.0 ** (icpt + slope * loud), spread))[0], ref)
                for _, ref, env, loud in clips])
        labelled = src != "fma"
        out = []
        for s in sorted(set(src)):
            train = labelled & (src != s)
            w = max(D.OCTAVE_WEIGHT_GRID, key=lambda w: (hits[w][train, 0].sum(), -abs(w[0]) - abs(w[1])))
            h = hits[w][src == s]
            out.append(f"{s} {h[:, 0].mean():.2f} / {h[:, 1].mean():.2f} (weights {w[0]:g}, {w[1]:g})")
        print(f"  {name}: " + "; ".join(out))


BASIC_PITCH_NOTE = "StatefulPartitionedCall:1"  # the note posteriorgram [windows, 172, 88] (TF's outputs sorted: contour, note, onset)
BASIC_PITCH_SAMPLES = 43844  # one input window: 2 s at 22.05 kHz minus a hop (basic_pitch.constants.AUDIO_N_SAMPLES)


def basic_pitch_notes(y: np.ndarray, session) -> np.ndarray:
    """Basic Pitch's note posteriorgram [frames, 88 piano keys] of a 44.1-kHz clip's first 30 s (non-overlapping windows)."""
    import soxr

    y22 = soxr.resample(y[: int(D.WINDOW_SECONDS * SR)], SR, 22050).astype(np.float32)
    n = max(1, int(np.ceil(y22.size / BASIC_PITCH_SAMPLES)))
    buf = np.zeros(n * BASIC_PITCH_SAMPLES, np.float32)
    buf[: y22.size] = y22
    (note,) = session.run([BASIC_PITCH_NOTE], {session.get_inputs()[0].name: buf.reshape(n, BASIC_PITCH_SAMPLES, 1)})
    return note.reshape(-1, 88)


def fold_keys(v: np.ndarray) -> np.ndarray:
    """88 piano keys (A0 first) -> 12 pitch classes (C first)."""
    return np.bincount((21 + np.arange(88)) % 12, weights=v, minlength=12)


def basic_pitch_key(keyed: list[dict], onnx: Path) -> None:
    """Key from Basic Pitch's note posteriors (Spotify's polyphonic transcriber, Apache-2.0; its ONNX file is inside the
    `basic-pitch` wheel: `pip download --no-deps basic-pitch`, unzip, basic_pitch/saved_models/icassp_2022/nmp.onnx),
    folded to 12 pitch classes under songfeat's key decision, alone and averaged with the shipped profile (weight w on
    the notes; w picked for each source on the other two). Costs ~0.27 s per 30 s on 2 threads, about half of a whole
    `analyze`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    for r in keyed:
        r["shipped12"] = D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]), sum(e.hpcp_gomez for e in r["ev"])))
        r["bp"] = basic_pitch_notes(r["y"], session)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / max(float(v.sum()), 1e-12)

    def no_bass(n: np.ndarray) -> np.ndarray:
        m = n.copy()
        m[:, :27] = 0  # below C3
        return m

    notes = {"sum": lambda n: n.sum(0), "squared": lambda n: (n ** 2).sum(0), "above 0.3": lambda n: (n * (n > 0.3)).sum(0),
             "from C3 up": lambda n: no_bass(n).sum(0)}
    variants = {"shipped (two HPCPs)": lambda r: r["shipped12"]}
    for name, f in notes.items():
        variants[f"notes, {name}"] = lambda r, f=f: fold_keys(f(r["bp"]))
    weights = (0.25, 0.5, 0.75)
    for name in ("sum", "from C3 up"):
        for w in weights:
            variants[f"shipped + notes ({name}), w {w:g}"] = (
                lambda r, w=w, f=notes[name]: (1 - w) * unit(r["shipped12"]) + w * unit(fold_keys(f(r["bp"]))))
    groups = [g for g in GROUPS if any(r["c"].group == g for r in keyed)]
    table = {name: tally(keyed, groups, [best_key(D.key_correlations(f(r))[0]) for r in keyed])
             for name, f in variants.items()}
    counts_table("Basic Pitch's note posteriors as the key profile (key+mode / mode right, counts):", "profile", table, groups)
    held = [g for g in ("forró", "pop/rock", "extra") if g in groups]
    for base in ("sum", "from C3 up"):
        names = ["shipped (two HPCPs)"] + [f"shipped + notes ({base}), w {w:g}" for w in weights]
        held_out_picks(f"Held out, w on the notes ({base}) picked on the other two sources (ties towards the shipped "
                       "profile):", table, held, names)


def best_key(corr: np.ndarray) -> tuple[int, int]:
    """(tonic, mode: 1 major / 0 minor) of the largest of [2 modes, 12 tonics] profile correlations."""
    row, key = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(key), 1 if row == 0 else 0


def tally(keyed: list[dict], groups: list[str], answers: list[tuple[int, int]]) -> dict[str, list[int]]:
    """{group: [key+mode right, mode right, clips]} of one (key, mode) answer per clip."""
    res = {g: [0, 0, 0] for g in groups}
    for r, (k, m) in zip(keyed, answers):
        cell = res[r["c"].group]
        cell[0] += k == r["c"].key and m == r["c"].mode
        cell[1] += m == r["c"].mode
        cell[2] += 1
    return res

def held_out_picks(title: str, table: dict, held: list[str], names: list[str]) -> None:
    """For each source, the row of `names` best on the other sources (key+mode, then mode, then the earlier name), and
    what it scores on that source: the issue's held-out way of choosing."""
    print(title)
    for g in held:
        others = [h for h in held if h != g]
        best = min(names, key=lambda n: (-sum(table[n][h][0] for h in others), -sum(table[n][h][1] for h in others),
                                         names.index(n)))
        print(f"  {g}: {best} -> {g} {table[best][g][0]}/{table[best][g][1]} of {table[best][g][2]}")


NNLS_SPECTRAL_SHAPE = 0.7  # harmonic h has amplitude 0.7^(h-1) in each note template (Chordino's default)
NNLS_FRAME_STEP = 4  # every 4th STFT frame (~93 ms apart): a prototype's cost, not a shipped one


def nnls_chroma(r: dict, whiten: float, lowest_note: int) -> np.ndarray:
    """12-bin chroma from an approximate transcription (Mauch & Dixon 2010, NNLS chroma): each frame's magnitude spectrum
    on a 1/3-semitone axis (shifted by the song's tuning), whitened by a running octave mean and std^whiten, explained as
    a non-negative sum of harmonic note templates (20 partials), the note activations folded to pitch classes."""
    from scipy.optimize import nnls

    off = (0, 1, -1)[int(np.argmax(sum(e.chroma36 for e in r["ev"]).reshape(12, 3).sum(0)))]
    axis = np.arange(21 * 3, 113 * 3 + 1) / 3.0 + off / 3.0  # MIDI, A0 up to ~6.2 kHz
    pos = 440.0 * 2 ** ((axis - 69) / 12) * D.N_FFT / SR
    i0 = np.floor(pos).astype(int)
    ok = i0 + 1 < r["p"].shape[1]
    interp = np.zeros((axis.size, r["p"].shape[1]))
    interp[np.flatnonzero(ok), i0[ok]] = 1 - (pos - i0)[ok]
    interp[np.flatnonzero(ok), i0[ok] + 1] = (pos - i0)[ok]
    spec = np.sqrt(np.maximum(r["p"][::NNLS_FRAME_STEP].astype(np.float64), 0)) @ interp.T
    kernel = np.ones(37) / 37  # one octave of 1/3-semitone bins
    def run_mean(x):
        return np.apply_along_axis(lambda v: np.convolve(np.pad(v, 18, mode="edge"), kernel, "valid"), 1, x)
    mu = run_mean(spec)
    sd = np.sqrt(np.maximum(run_mean((spec - mu) ** 2), 1e-30))
    spec = np.maximum((spec - mu) / sd ** whiten, 0)
    notes = np.arange(lowest_note, 97) + off / 3.0
    templates = np.zeros((axis.size, notes.size))
    for j, n in enumerate(notes):
        for h in range(1, 21):
            templates[:, j] += NNLS_SPECTRAL_SHAPE ** (h - 1) * np.exp(-0.5 * ((axis - n - 12 * np.log2(h)) * 3) ** 2)
    templates /= np.linalg.norm(templates, axis=0, keepdims=True)
    act = sum(nnls(templates, f, maxiter=200)[0] for f in spec if f.sum() > 0)
    return np.bincount(np.arange(lowest_note, 97) % 12, weights=act, minlength=12)


def profile_variants(keyed: list[dict], title: str, chromas: dict[str, list[np.ndarray]]) -> None:
    """Score each named per-clip chroma alone and averaged with the shipped profile (weight w 0.25 / 0.5 on it) under
    songfeat's key decision, then print the table and the per-source held-out picks (`held_out_picks`)."""
    for r in keyed:
        r["shipped12"] = D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]), sum(e.hpcp_gomez for e in r["ev"])))
    variants: dict[str, list] = {"shipped (two HPCPs)": [r["shipped12"] for r in keyed]}
    for name, ch in chromas.items():
        variants[name] = ch
        for w in (0.25, 0.5):
            variants[f"shipped + {name}, w {w:g}"] = [(1 - w) * a / a.sum() + w * b / max(b.sum(), 1e-12)
                                                     for a, b in zip(variants["shipped (two HPCPs)"], ch)]
    groups = [g for g in GROUPS if any(r["c"].group == g for r in keyed)]
    table = {name: tally(keyed, groups, [best_key(D.key_correlations(c)[0]) for c in chs]) for name, chs in variants.items()}
    counts_table(title, "profile", table, groups)
    held = [g for g in ("forró", "pop/rock", "extra") if g in groups]
    held_out_picks("Held out, profile and weight picked on the other two sources (ties towards the shipped profile):",
                   table, held, list(table))


def nnls_key(keyed: list[dict]) -> None:
    """Key from NNLS chroma (`nnls_chroma`): a transcription-like chroma should not carry a note's third partial into
    the pitch class a fifth above, which is the forró half's most common key error. Alone (notes from A1 or from C3,
    whitening std^1 or std^0.5) and averaged with the shipped profile (weight w on it), with w and the setting picked
    for each source on the other two, as `basic_pitch_key` does. Needs scipy (librosa's dependency)."""
    chromas = {f"NNLS, std^{whiten:g}, notes from {'A1' if lowest == 33 else 'C3'}": [nnls_chroma(r, whiten, lowest) for r in keyed]
               for whiten in (1.0, 0.5) for lowest in (33, 48)}
    profile_variants(keyed, "NNLS chroma as the key profile (key+mode / mode right, counts):", chromas)


def cqt_key(keyed: list[dict]) -> None:
    """Key from librosa's tuning-corrected constant-Q chroma (`chroma_cqt`, the issue's first key candidate) and from its
    energy-normalised, smoothed form (`chroma_cens`), summed over the clip, alone and averaged with the shipped profile
    (weight w on it), under songfeat's key decision (Aarden, `key_correlations`); picked per source on the other two,
    as `nnls_key` does. Needs librosa (the `train` extra)."""
    import librosa

    def chroma(r: dict, kind: str) -> np.ndarray:
        y = librosa.resample(r["y"], orig_sr=SR, target_sr=22050)
        return (librosa.feature.chroma_cqt if kind == "cqt" else librosa.feature.chroma_cens)(y=y, sr=22050, tuning=None).sum(axis=1)

    chromas = {f"chroma_{kind} (tuning estimated)": [chroma(r, kind) for r in keyed] for kind in ("cqt", "cens")}
    profile_variants(keyed, "Constant-Q chroma as the key profile (key+mode / mode right, counts):", chromas)


SYNTH_MAJOR_PROGRESSIONS = ((0, 3, 4, 0), (0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4), (0, 2, 3, 4), (0, 6, 3, 0))
SYNTH_MINOR_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 2, 6, 3))
SYNTH_MINOR_RAISED_V = (False, False, True, True, False)  # harmonic minor's major V in these
SYNTH_VOICES = {"pluck": (3.0, 0.6), "organ": (0.0, 0.8), "piano": (1.2, 0.5)}  # envelope decay /s, partial decay


def synthetic_piece(tonic: int, mode: int, prog: tuple, raised_v: bool, voice: str, bpm: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Two passes of a four-chord progression in `tonic`/`mode`: triads (8 partials) from C4 up, the root two octaves
    lower, and a melody of chord tones (60%) and scale tones on each beat. In the major list, degree 6 of the last
    progression is the mixolydian flat-seventh chord (I-bVII-IV-I), as rock and baiao use it."""
    scale = (0, 2, 4, 5, 7, 9, 11) if mode == 1 else (0, 2, 3, 5, 7, 8, 10)
    env_decay, partial_decay = SYNTH_VOICES[voice]
    beat = 60.0 / bpm

    def note(m: float, dur: float, env: float, partials: float) -> np.ndarray:
        t = np.arange(int(dur * SR)) / SR
        f = 440.0 * 2 ** ((m - 69) / 12)
        y = sum(partials ** (h - 1) * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
                for h in range(1, 9) if f * h < 8000)
        return y * np.exp(-t * env) * np.minimum(1, t * 200) * np.minimum(1, (dur - t) * 50)

    out = np.zeros(int(len(prog) * 8 * beat * SR) + SR)
    pos = 0.0
    for deg in prog * 2:
        if mode == 1 and deg == 6 and prog == SYNTH_MAJOR_PROGRESSIONS[-1]:
            notes = [10, 14, 17]
        else:
            notes = [scale[(deg + k) % 7] + 12 * ((deg + k) // 7) for k in (0, 2, 4)]
            if raised_v and deg == 4:
                notes[1] += 1
        i0 = int(pos * SR)
        for m in notes:
            y = 0.25 * note(60 + tonic + m, 4 * beat, env_decay, partial_decay)
            out[i0:i0 + y.size] += y
        y = 0.35 * note(36 + tonic + notes[0] % 12, 4 * beat, 3.0, 0.6)
        out[i0:i0 + y.size] += y
        for k in range(4):
            m = rng.choice(notes) if rng.random() < 0.6 else scale[rng.integers(7)]
            y = 0.3 * note(72 + tonic + m, beat, 3.0, 0.6)
            j = int((pos + k * beat) * SR)
            out[j:j + y.size] += y
        pos += 4 * beat
    return 0.5 * out / max(1e-9, float(np.abs(out).max()))


def synthetic_profiles(keyed: list[dict]) -> None:
    """Key profiles learned from generated music alone (the issue's "learned key classifier trained on chroma of
    generated audio", as a nearest-centroid one): 432 pieces (12 tonics x 3 voices x 7 major and 5 minor progressions,
    80-140 BPM), each through `window_evidence` and the shipped profile, rotated to C and averaged per mode; then these
    centroids, and their averages with the Aarden profiles (z-scored, weight w), name the real clips' keys. No real
    clip shapes them, so every row is a held-out figure (~3 min)."""
    rng = np.random.default_rng(0)
    sums: dict[int, list] = {1: [], 0: []}
    for tonic in range(12):
        for voice in SYNTH_VOICES:
            pieces = [(1, p, False) for p in SYNTH_MAJOR_PROGRESSIONS]
            pieces += [(0, p, v) for p, v in zip(SYNTH_MINOR_PROGRESSIONS, SYNTH_MINOR_RAISED_V)]
            for mode, prog, raised in pieces:
                ev = D.window_evidence(synthetic_piece(tonic, mode, prog, raised, voice, rng.uniform(80, 140), rng)[: 30 * SR])
                p12 = D.fold_chroma(D.key_profile(ev.chroma36, ev.hpcp_gomez))
                sums[mode].append(np.roll(p12 / p12.sum(), -tonic))
    major, minor = np.mean(sums[1], 0), np.mean(sums[0], 0)
    print("\nCentroids from generated music (C first, scaled to their maxima):")
    print("  major " + " ".join(f"{v:.2f}" for v in major / major.max()))
    print("  minor " + " ".join(f"{v:.2f}" for v in minor / minor.max()))

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / v.std()

    profiles = {"Aarden (shipped)": (D.MAJOR_PROFILE, D.MINOR_PROFILE), "generated centroids": (major, minor)}
    for w in (0.25, 0.5, 0.75):
        profiles[f"Aarden + generated, w {w:g}"] = ((1 - w) * z(D.MAJOR_PROFILE) + w * z(major),
                                                   (1 - w) * z(D.MINOR_PROFILE) + w * z(minor))
    groups = [g for g in GROUPS if any(r["c"].group == g for r in keyed)]
    shipped = [D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]), sum(e.hpcp_gomez for e in r["ev"])))
               for r in keyed]
    table = {name: tally(keyed, groups, [best_key(np.array([[np.corrcoef(c, np.roll(p, k))[0, 1] for k in range(12)]
                                                            for p in (pmaj, pmin)])) for c in shipped])
             for name, (pmaj, pmin) in profiles.items()}
    counts_table("Key profiles from generated music (key+mode / mode right, counts):", "profile", table, groups)


def chord_cadence(keyed: list[dict]) -> None:
    """Does a chord-level tonic cue settle the fifth and relative confusions? Per beat (songfeat's tempo period, from the
    clip's start), the best of 24 major/minor triad templates on the mean per-frame chroma; then, among the shipped
    decision's top 2 keys, the one maximising correlation + a x (share of beats on its tonic triad) + b x (share of
    chord changes that fall a fifth onto that triad, V -> I). (a, b) is picked for each source on the other two."""
    fps = SR / D.HOP
    names: list[tuple[int, int]] = [(m, root) for root in range(12) for m in (1, 0)]
    tm = np.zeros((24, 12))
    for i, (m, root) in enumerate(names):
        tm[i, [root, (root + (4 if m else 3)) % 12, (root + 7) % 12]] = 1
    tm -= tm.mean(1, keepdims=True)
    tm /= np.linalg.norm(tm, axis=1, keepdims=True)
    for r in keyed:
        corr, _ = D.key_correlations(D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]),
                                                                   sum(e.hpcp_gomez for e in r["ev"]))))
        track = np.concatenate([e.chroma_track for e in r["ev"]]).astype(np.float64)
        period = D.estimate_tempo(np.concatenate([e.onset for e in r["ev"]]).astype(np.float64), fps)[4]
        b = max(2, int(round(period))) if period > 0 else int(fps // 2)
        n = track.shape[0] // b
        beats = track[: n * b].reshape(n, b, 12).mean(1)
        beats = beats - beats.mean(1, keepdims=True)
        keep = np.linalg.norm(beats, axis=1) > 1e-9
        chords = [names[i] for i in (beats[keep] @ tm.T).argmax(1)]
        top = sorted(((corr[row, k], 1 - row, k) for row in (0, 1) for k in range(12)), reverse=True)[:2]
        cues = []
        for c, mode, k in top:
            share = float(np.mean([ch == (mode, k) for ch in chords])) if chords else 0.0
            falls = sum(1 for a, z in zip(chords, chords[1:]) if z == (mode, k) and a != z and a[1] == (k + 7) % 12)
            cues.append((c, share, falls / max(1, len(chords)), k, mode))
        r["cadence cues"] = cues
    grid = [(a, bb) for a in (0, 0.05, 0.1, 0.2, 0.3, 0.5) for bb in (0, 0.1, 0.3, 0.5, 1.0)]
    groups = [g for g in ("forró", "pop/rock", "extra") if any(r["c"].group == g for r in keyed)]
    table = {}
    for a, bb in grid:
        res = {g: [0, 0, 0] for g in groups}
        for r in keyed:
            if r["c"].group not in res:
                continue
            _, _, _, k, m = max(r["cadence cues"], key=lambda t: t[0] + a * t[1] + bb * t[2])
            cell = res[r["c"].group]
            cell[0] += k == r["c"].key and m == r["c"].mode
            cell[1] += m == r["c"].mode
            cell[2] += 1
        table[f"a {a:g}, b {bb:g}"] = res
    counts_table("Chord-level tonic cue on the top 2 keys (key+mode / mode right, counts; a 0, b 0 is shipped):", "weights",
                 table, groups)
    print("Held out, (a, b) picked on the other two sources (ties towards the smaller weights):")
    for g in groups:
        others = [h for h in groups if h != g]
        best = max(table, key=lambda n: (sum(table[n][h][0] for h in others), -list(table).index(n)))
        print(f"  {g}: {best} -> {g} {table[best][g][0]}/{table[best][g][1]} of {table[best][g][2]}")


KEY_PRIOR_WEIGHTS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)


def catalogue_key_prior(keyed: list[dict], shared: Path) -> None:
    """Do Spotify's catalogue key frequencies settle fifth and relative confusions? The shipped correlations of the 24
    keys plus w x the centred log frequency of each (key, mode) among the 41,855 catalogue tracks (no preview's label:
    the tempo prior's source), w picked for each source on the other two."""
    import pandas as pd

    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    cat = pd.read_csv(shared / "spotify-features" / "combined_unique_by_track_id.csv", usecols=["key", "mode"]).dropna()
    cat = cat[(cat["key"] >= 0) & (cat["key"] <= 11) & cat["mode"].isin([0, 1])]
    counts = np.ones((2, 12))  # rows as key_correlations: 0 major, 1 minor (add-one)
    for (k, m), n in cat.groupby(["key", "mode"]).size().items():
        counts[0 if m == 1 else 1, int(k)] += n
    logp = np.log(counts / counts.sum())
    logp -= logp.mean()
    print(f"catalogue key prior from {len(cat)} tracks: most common "
          + ", ".join(f"{names[k]}{'' if r == 0 else 'm'}"
                      for r, k in zip(*np.unravel_index(np.argsort(-logp, axis=None)[:5], logp.shape)))
          + f"; log-frequency spread {logp.min():+.2f} .. {logp.max():+.2f}")
    groups = [g for g in ("forró", "pop/rock", "extra") if any(r["c"].group == g for r in keyed)]
    keyed = [r for r in keyed if r["c"].group in groups]
    corrs = [D.key_correlations(D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]),
                                                            sum(e.hpcp_gomez for e in r["ev"]))))[0] for r in keyed]
    table = {f"w {w:g}": tally(keyed, groups, [best_key(c + w * logp) for c in corrs]) for w in KEY_PRIOR_WEIGHTS}
    counts_table("Catalogue key prior added to the shipped correlations (key+mode / mode right, counts; w 0 is shipped):",
                 "weight", table, groups)
    held_out_picks("Held out, w picked on the other two sources:", table, groups, list(table))


MODAL_PENALTIES = (None, 0.2, 0.1, 0.05, 0.02, 0.01, 0.0, -0.01, -0.02)  # None: no modal candidates (the shipped
# decision); a negative penalty is a bonus, to see whether any song would gain at all


def modal_profiles() -> tuple[np.ndarray, np.ndarray]:
    """Mixolydian and Dorian profiles from Aarden's (the shipped ones): the major profile with its flat and natural
    seventh swapped, the minor profile with its minor and major sixth swapped (what marks each mode)."""
    mixo, dorian = D.MAJOR_PROFILE.copy(), D.MINOR_PROFILE.copy()
    mixo[[10, 11]] = mixo[[11, 10]]
    dorian[[8, 9]] = dorian[[9, 8]]
    return mixo, dorian


def modal_keys(keyed: list[dict]) -> None:
    """Does a mixolydian (or Dorian) reading settle fifth confusions? Northeastern Brazilian music (baiao, xote, forro)
    is often mixolydian: a song on G with F natural has C major's notes, so a major/minor profile reads it a fifth below.
    Spotify names such a song by its tonic and mode major. The shipped correlations of the 24 keys, plus 12 mixolydian
    candidates (reported as the tonic, major) and 12 Dorian ones (the tonic, minor), each lowered by a penalty b (the
    modes are rarer than major and minor); b picked for each source on the other two."""
    mixo, dorian = modal_profiles()
    groups = [g for g in ("forró", "pop/rock", "extra") if any(r["c"].group == g for r in keyed)]
    keyed = [r for r in keyed if r["c"].group in groups]
    answers: dict[str, list[tuple[int, int]]] = {}
    rows = []
    for r in keyed:
        c = D.fold_chroma(D.key_profile(sum(e.chroma36 for e in r["ev"]), sum(e.hpcp_gomez for e in r["ev"])))
        corr = D.key_correlations(c)[0]
        z = c / c.mean()
        modal = np.array([[np.corrcoef(z, np.roll(p, k))[0, 1] for k in range(12)] for p in (mixo, dorian)])
        rows.append((corr, modal))
    for b in MODAL_PENALTIES:
        name = "shipped (major and minor only)" if b is None else f"+ mixolydian/Dorian, penalty {b:g}"
        out = []
        for corr, modal in rows:
            if b is None:
                out.append(best_key(corr))
                continue
            both = np.vstack([corr, modal - b])  # rows: major, minor, mixolydian (major), Dorian (minor)
            row, key = np.unravel_index(int(np.argmax(both)), both.shape)
            out.append((int(key), 1 if row in (0, 2) else 0))
        answers[name] = out
    table = {n: tally(keyed, groups, a) for n, a in answers.items()}
    counts_table("Modal candidates beside major and minor (key+mode / mode right, counts):", "decision", table, groups)
    held_out_picks("Held out, the penalty picked on the other two sources:", table, groups, list(table))


def compound_meter(rows: list[dict]) -> None:
    """Does a ternary sub-beat tell Echo Nest's 3:2 tempos? For every clip with a reference tempo: the onset
    autocorrelation at 1/3 and 2/3 of songfeat's beat against that at 1/4, 1/2 and 3/4 (a 6/8 or shuffle feel reads
    positive), beside the reference / songfeat tempo ratio; the ten most ternary clips and every 3:2 miss."""
    fps = SR / D.HOP
    out = []
    for r in rows:
        c = r["c"]
        if c.tempo is None:
            continue
        env = onset_envelope(r)
        t, _, _, ac, per = D.estimate_tempo(env, fps)
        if t <= 0:
            continue
        ac = D._autocorr(D._smooth_onset(env, fps), ac.size - 1)
        at = {m: D._interp(ac, m * per) for m in (0.25, 1 / 3, 0.5, 2 / 3, 0.75)}
        cue = (at[1 / 3] + at[2 / 3]) / 2 - (at[0.25] + at[0.5] + at[0.75]) / 3
        out.append((cue, c.group if c.set == "dev" else c.set, c.path.stem, c.tempo, t))
    out.sort(reverse=True)
    print("\nTernary sub-beat cue (autocorrelation at 1/3 and 2/3 of our beat minus at 1/4, 1/2, 3/4) and the tempo ratio:")
    print("| clip | source | cue | reference | songfeat | ratio |")
    print("|---|---|---|---|---|---|")
    for i, (cue, src, stem, ref, t) in enumerate(out):
        ratio = ref / t
        if i < 10 or abs(ratio - 1.5) < 0.06 or abs(ratio - 2 / 3) < 0.03:
            print(f"| {stem[:14]} | {src} | {cue:+.2f} | {ref:.1f} | {t:.1f} | {ratio:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--hpss", action="store_true", help="also try harmonic/percussive separation (~8 min more)")
    ap.add_argument("--only-hpcp-settings", action="store_true",
                    help="only the HPCP-settings table (songfeat's vs Essentia's settings, one at a time and cumulatively)")
    ap.add_argument("--only-tempo-families", action="store_true", help="only the tempo-families table (about a minute)")
    ap.add_argument("--only-profile-average", action="store_true",
                    help="only the table of songfeat's HPCP averaged with Gomez's (what the key reads since 2026-12-04)")
    ap.add_argument("--only-basic-pitch", type=Path, metavar="NMP_ONNX",
                    help="only the key from Basic Pitch's note posteriors, given the wheel's nmp.onnx (~1.5 min)")
    ap.add_argument("--only-compound-meter", action="store_true",
                    help="only the ternary sub-beat cue against Echo Nest's and Spotify's 3:2 tempos (about a minute)")
    ap.add_argument("--only-chord-cadence", action="store_true",
                    help="only the chord-level tonic cue (tonic-triad share, V -> I) on the top two keys (about a minute)")
    ap.add_argument("--only-synthetic-profiles", action="store_true",
                    help="only key profiles learned from generated music, scored on the real clips (~3 min)")
    ap.add_argument("--only-nnls", action="store_true",
                    help="only the key from NNLS chroma (an approximate transcription), alone and averaged (~2 min)")
    ap.add_argument("--only-key-prior", action="store_true",
                    help="only the catalogue's key frequencies as a prior on the shipped key decision (about a minute)")
    ap.add_argument("--only-cqt", action="store_true",
                    help="only the key from librosa's constant-Q chroma (chroma_cqt, chroma_cens), alone and averaged (~3 min)")
    ap.add_argument("--only-modal", action="store_true",
                    help="only mixolydian and Dorian key candidates beside major and minor (about a minute)")
    ap.add_argument("--only-loudness-prior", action="store_true",
                    help="only the tempo octave prior centred by the measured loudness (about a minute)")
    args = ap.parse_args()
    if args.only_basic_pitch is not None and not args.only_basic_pitch.is_file():
        raise SystemExit(f"try_measured_variants: {args.only_basic_pitch}: no such file (Basic Pitch's nmp.onnx)")
    rows = load(args.shared, keyed_only=args.only_hpcp_settings or args.only_profile_average or bool(args.only_basic_pitch)
                or args.only_chord_cadence or args.only_nnls or args.only_synthetic_profiles or args.only_key_prior
                or args.only_cqt or args.only_modal)
    if not rows:
        raise SystemExit(f"try_measured_variants: no clips found under {args.shared}")
    single = {"only_tempo_families": lambda: tempo_families(rows),  # the options that print one table
              "only_basic_pitch": lambda: basic_pitch_key(rows, args.only_basic_pitch),
              "only_compound_meter": lambda: compound_meter(rows),
              "only_chord_cadence": lambda: chord_cadence(rows),
              "only_nnls": lambda: nnls_key(rows),
              "only_cqt": lambda: cqt_key(rows),
              "only_synthetic_profiles": lambda: synthetic_profiles(rows),
              "only_key_prior": lambda: catalogue_key_prior(rows, args.shared),
              "only_modal": lambda: modal_keys(rows),
              "only_loudness_prior": lambda: loudness_prior(rows, args.shared)}
    for option, table in single.items():
        if getattr(args, option):
            table()
            return
    key_table(rows, args.hpss, args.shared, args.only_hpcp_settings, args.only_profile_average)
    if args.only_hpcp_settings or args.only_profile_average:
        return
    loudness_table(rows)
    tempo_misses(rows)
    tempo_families(rows)


if __name__ == "__main__":
    main()
