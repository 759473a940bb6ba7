"""Measured features side by side: songfeat vs Essentia vs librosa against Spotify / Echo Nest / documented values.

    python benchmarks/bench_measured.py [--shared ../shared/data] [--only songfeat,essentia,librosa] [--limit N]

Sets: the 102 dev previews (and their two origins, forró and pop/rock), the 36 previews of
`spotify-previews-extra` (a third source), the 11 FMA clips with Echo Nest tempo, and the behaviour
clips whose notes document a key. Peers run in this process on the same decoded audio
(songfeat.audio.load_audio, mono 44.1 kHz):

* songfeat: `songfeat.descriptors.measure`;
* Essentia (AGPL, benchmark-only extra `bench`): `RhythmExtractor2013(method="multifeature")` and
  `KeyExtractor` with the edma, bgate, temperley and krumhansl profiles;
* librosa: `beat.beat_track` and a Krumhansl-Kessler key on the mean `chroma_cqt` (22.05 kHz).

Prints tempo acc1 / acc2 (within 4%; acc2 also accepts x1/2, x2, x3, x1/3), key, mode, key+mode, the
MIREX weighted key score (1 / 0.5 fifth / 0.3 relative / 0.2 parallel), time-signature agreement and
loudness MAE. Loudness is mapped to Spotify's dB with an offset (slope 1) fitted on one dev half and checked on
the other (and fitted on all dev previews for extra). Then every clip whose songfeat tempo misses its reference
even in acc2, beside each peer's tempo for the same audio (do the peers hear songfeat's pulse or the label's?). Peer outputs are cached as JSON under
`.cache/bench_measured/` (gitignored), keyed by what they depend on: the peer's code in this file, its library's
version (songfeat: the hash of its measuring code, `provenance.MEASURING_CODE`) and the clip's bytes, so a rerun only
computes what changed and says how many results it read from the cache. A peer whose library is missing
(Essentia, librosa: the `bench` extra), a shared folder with none of these sets, a label table without a column the
set needs, or a clip no decoder reads stops it with one line.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from songfeat import atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchutil, also when loaded from elsewhere (the tests)
import benchutil  # noqa: E402
from benchutil import KK_MAJOR, KK_MINOR, kk_key  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench_measured"
PITCH = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
ESSENTIA_PROFILES = ("edma", "bgate", "temperley", "krumhansl")
ORIGIN_NAMES = {"lucasmouragomes/audio_analysis": "forró", "QMIND-Team/QMIND-Music": "pop/rock"}


@dataclass
class Clip:
    """One audio file with whatever reference values its source documents (None = not documented)."""

    set: str
    group: str
    path: Path
    tempo: float | None = None
    key: int | None = None
    mode: int | None = None
    time_signature: int | None = None
    loudness: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def cache_key(self) -> str:
        return f"{self.set}/{self.path.stem}"


def _pitch_class(name: str) -> int:
    name = name.strip()
    return PITCH.index(FLAT.get(name, name))


def _rows(table: Path, make) -> list[Clip]:
    """`make(row)` for every row of a CSV table that gives a clip (None: its audio is absent); a row without a column
    or with a cell that is not a number stops the run with one line naming the table and the row."""
    out = []
    with open(table, newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            try:
                c = make(r)
            except (KeyError, ValueError) as e:
                what = f"no {e} column" if isinstance(e, KeyError) else str(e)
                raise benchutil.fail(f"{table}: row {line}: {what}") from None
            if c is not None:
                out.append(c)
    return out


def _previews(folder: Path, set_name: str, group_of) -> list[Clip]:
    def make(r: dict) -> Clip | None:
        p = folder / "audio" / f"{r['track_id']}.mp3"
        return Clip(set_name, group_of(r), p, float(r["tempo"]), int(r["key"]), int(r["mode"]),
                    int(r["time_signature"]), float(r["loudness"])) if p.is_file() else None

    return _rows(folder / "labels.csv", make)


def _behaviour(folder: Path) -> list[Clip]:
    """Behaviour clips whose manifest documents a key ("key C# minor", "key F# major")."""
    import re

    def make(r: dict) -> Clip | None:
        m = re.search(r"key ([A-G][#b]?) (major|minor)", r["expectation"])
        if not (m and (folder / r["file"]).is_file()):
            return None
        return Clip("behaviour", "behaviour", folder / r["file"], key=_pitch_class(m.group(1)),
                    mode=1 if m.group(2) == "major" else 0)

    return _rows(folder / "manifest.csv", make)


def clips(shared: Path) -> list[Clip]:
    """Every clip of every set that is present under `shared` (a set is present when its label table is)."""
    out: list[Clip] = []
    dev = shared / "spotify-previews"
    if (dev / "labels.csv").is_file():
        out += _previews(dev, "dev", lambda r: ORIGIN_NAMES.get(r["origin"], r["origin"]))
    extra = shared / "spotify-previews-extra"
    if (extra / "labels.csv").is_file():
        out += _previews(extra, "extra", lambda r: "extra")
    fma = shared / "fma-echonest"
    if (fma / "clips_labels.csv").is_file():
        out += _rows(fma / "clips_labels.csv", lambda r: Clip("fma", "fma", fma / r["file"], tempo=float(r["tempo"]))
                     if (fma / r["file"]).is_file() else None)
    if (shared / "behaviour" / "manifest.csv").is_file():
        out += _behaviour(shared / "behaviour")
    return out


# ----------------------------------------------------------------------------------------------
# peers


def _load(path: Path) -> np.ndarray:
    from songfeat.audio import load_audio

    return load_audio(path)


def peer_songfeat(y: np.ndarray) -> dict:
    """songfeat's own measurement of the decoded clip, plus its tempo under every octave-weight pair of the grid."""
    from songfeat import descriptors as D

    size = int(D.WINDOW_SECONDS * D.SAMPLE_RATE)
    ev = [D.window_evidence(y[i: i + size]) for i in range(0, y.size, size)]
    d = D.combine(ev)
    env = np.concatenate([e.onset for e in ev]).astype(np.float64)
    grid = {f"{c:g},{w:g}": D.estimate_tempo(env, D.SAMPLE_RATE / D.HOP, comb_weight=c, density_weight=w)[0]
            for c, w in D.OCTAVE_WEIGHT_GRID}
    return {"tempo": d.tempo, "tempo_alternatives": d.tempo_alternatives, "key": d.key, "mode": d.mode,
            "time_signature": d.time_signature, "loudness_level": d.loudness_level, "tempo_by_octave_weights": grid}


def peer_essentia(y: np.ndarray) -> dict:
    """Essentia's multifeature beat tracker and its key extractor under four profiles."""
    es = benchutil.essentia_standard()
    bpm = es.RhythmExtractor2013(method="multifeature")(y)[0]
    out = {"tempo": float(bpm)}
    for prof in ESSENTIA_PROFILES:
        key, scale, strength = es.KeyExtractor(profileType=prof)(y)
        out[f"key_{prof}"] = _pitch_class(key)
        out[f"mode_{prof}"] = 1 if scale == "major" else 0
    return out


def peer_librosa(y: np.ndarray) -> dict:
    """librosa's default beat tracker and a Krumhansl-Kessler key on the mean CQT chroma, at 22.05 kHz."""
    import librosa

    y22 = librosa.resample(y, orig_sr=44100, target_sr=22050, res_type="soxr_hq")
    tempo, _ = librosa.beat.beat_track(y=y22, sr=22050)
    chroma = librosa.feature.chroma_cqt(y=y22, sr=22050).mean(axis=1)
    key, mode = kk_key(chroma)
    return {"tempo": float(np.atleast_1d(tempo)[0]), "key": key, "mode": mode}


PEERS = {"songfeat": peer_songfeat, "essentia": peer_essentia, "librosa": peer_librosa}
PEER_CONSTANTS = {"essentia": ESSENTIA_PROFILES, "librosa": (KK_MAJOR.tolist(), KK_MINOR.tolist())}


def peer_version(peer: str) -> str:
    """A hash of what a peer's outputs depend on: its function here (and the constants and benchutil helper it reads),
    and its library's version (songfeat: the hash of its measuring code, as songfeat's own record cache keys on). A
    change to any of them is a fresh cache folder, so old figures are never printed as new ones."""
    import hashlib
    import inspect
    from importlib import metadata

    h = hashlib.sha256(inspect.getsource(PEERS[peer]).encode() + repr(PEER_CONSTANTS.get(peer)).encode())
    if peer == "librosa":  # its key is benchutil's
        h.update(inspect.getsource(kk_key).encode())
    if peer == "songfeat":
        from songfeat.provenance import MEASURING_CODE, source_digest

        h.update(source_digest(MEASURING_CODE).digest())
    else:
        try:
            h.update(metadata.version(peer).encode())  # essentia's __version__ leaves out the dev build number
        except metadata.PackageNotFoundError:
            h.update(str(getattr(__import__(peer), "__version__", "")).encode())
    return h.hexdigest()[:12]


def cache_file(c: Clip, peer: str, version: str, digest: str) -> Path:
    """Where one peer's output for one clip is cached: under the peer's version, named by the clip and `digest`, the
    first 12 hex digits of its SHA-256 (another file under the same name, e.g. from another --shared folder, is
    measured afresh)."""
    return CACHE / f"{peer}-{version}" / c.set / f"{c.path.stem}.{digest}.json"


def _cached(f: Path) -> dict | None:
    """A cached output, or None when there is none or it does not read as a JSON object (measured afresh)."""
    try:
        out = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def run_peers(all_clips: list[Clip], peers: list[str]) -> dict[str, dict[str, dict]]:
    """{peer: {clip key: output}}, computed where the cache lacks it (atomic JSON writes), with a progress bar."""
    from rich.progress import Progress

    from songfeat.analyze import content_id

    versions = {p: peer_version(p) for p in peers}
    results: dict[str, dict[str, dict]] = {p: {} for p in peers}
    todo = []
    for c in all_clips:
        digest = content_id(c.path)[:12]  # songfeat's content id, read once however many peers ask
        for p in peers:
            f = cache_file(c, p, versions[p], digest)
            out = _cached(f)
            if out is not None:
                results[p][c.cache_key] = out
            else:
                todo.append((c, p, f))
    for p in peers:
        if results[p]:  # a rerun says so: these figures are from an earlier run of the same code on the same audio
            print(f"read {len(results[p])} {p} results from {CACHE / f'{p}-{versions[p]}'} "
                  "(same peer code, library version and audio)")
    timings: dict[str, dict[str, float]] = {p: {} for p in peers}  # {peer: {clip key: seconds}}
    by_clip: dict[str, list] = {}
    for c, p, f in todo:
        by_clip.setdefault(c.cache_key, [c, []])[1].append((p, f))
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("measuring", total=len(todo))
        for c, jobs in by_clip.values():
            with benchutil.one_line_errors():  # a clip no decoder reads: its path and why, not a traceback
                y = _load(c.path)
            for p, f in jobs:
                t0 = time.perf_counter()
                out = PEERS[p](y)
                timings[p][c.cache_key] = time.perf_counter() - t0
                f.parent.mkdir(parents=True, exist_ok=True)
                with atomic.replacing(f) as fh:
                    fh.write(json.dumps(out))
                results[p][c.cache_key] = out
                bar.advance(task)
    own = timings.get("songfeat", {})
    for p, ts in timings.items():
        if ts:
            # the peer's time against songfeat's, on the clips both measured in this run (none when one was cached)
            both = [k for k in ts if k in own] if p != "songfeat" else []
            vs = (f" ({np.median([ts[k] for k in both]) / np.median([own[k] for k in both]):.1f}x songfeat's time "
                  f"on the same {len(both)} clips)") if both else ""
            print(f"computed {len(ts)} {p} results, median {1000 * np.median(list(ts.values())):.0f} ms per clip{vs}")
    return results


# ----------------------------------------------------------------------------------------------
# metrics


def tempo_hits(est: float, ref: float, tol: float = 0.04) -> tuple[bool, bool]:
    """(acc1, acc2): within `tol` of the reference; acc2 also at 1/2, 2, 1/3 or 3 times it."""
    if not est or not ref or est <= 0 or ref <= 0:
        return False, False
    a1 = abs(est / ref - 1) <= tol
    a2 = a1 or any(abs(est * f / ref - 1) <= tol for f in (0.5, 2.0, 1 / 3, 3.0))
    return a1, a2


def mirex_key_score(key: int, mode: int, ref_key: int, ref_mode: int) -> float:
    """MIREX weighted key score: 1 same, 0.5 a fifth away (same mode), 0.3 relative, 0.2 parallel, else 0."""
    if key < 0 or ref_key < 0:
        return float(key == ref_key)
    if key == ref_key and mode == ref_mode:
        return 1.0
    if mode == ref_mode and (key - ref_key) % 12 in (5, 7):
        return 0.5
    if mode != ref_mode:
        rel = (ref_key + 9) % 12 if ref_mode == 1 else (ref_key + 3) % 12  # relative minor / major of the reference
        if key == rel:
            return 0.3
        if key == ref_key:
            return 0.2
    return 0.0


def loudness_cross(all_clips: list[Clip], res: dict[str, dict]) -> dict[str, float]:
    """songfeat loudness MAE per group with the level->dB offset fitted without that group (dev halves swap; extra uses all dev)."""
    from songfeat.descriptors import loudness_map

    dev = [c for c in all_clips if c.set == "dev" and c.cache_key in res]
    groups = sorted({c.group for c in dev})
    out = {}
    for g in groups:
        train = [c for c in dev if c.group != g]
        test = [c for c in dev if c.group == g]
        if len(train) < 2:
            continue
        a, b = loudness_map(np.array([res[c.cache_key]["loudness_level"] for c in train]), np.array([c.loudness for c in train]))
        out[g] = float(np.mean([abs(a * res[c.cache_key]["loudness_level"] + b - c.loudness) for c in test]))
        out[f"{g}:fit"] = (a, b)
    if dev:
        if all(g in out for g in groups):
            out["dev"] = float(sum(out[g] * sum(c.group == g for c in dev) for g in groups) / len(dev))
        a, b = loudness_map(np.array([res[c.cache_key]["loudness_level"] for c in dev]), np.array([c.loudness for c in dev]))
        extra = [c for c in all_clips if c.set == "extra" and c.cache_key in res]
        if extra:
            out["extra"] = float(np.mean([abs(a * res[c.cache_key]["loudness_level"] + b - c.loudness) for c in extra]))
    return out


LOSO_SOURCES = ("forró", "pop/rock", "extra")


def loso_octave_weights(all_clips: list[Clip], res: dict[str, dict]) -> dict[str, str]:
    """For each labelled preview source, the octave-weight pair with the best tempo acc1 on the other two sources.

    Ties go to the smaller weights. Returns {source: "comb,density"}.
    """
    chosen = {}
    pool = [c for c in all_clips if c.group in LOSO_SOURCES and c.cache_key in res]
    if not pool:
        return chosen
    grid = list(res[pool[0].cache_key]["tempo_by_octave_weights"])
    for g in LOSO_SOURCES:
        train = [c for c in pool if c.group != g]
        if not train or not any(c.group == g for c in pool):
            continue

        def acc(w: str) -> tuple[float, float]:
            hits = sum(tempo_hits(res[c.cache_key]["tempo_by_octave_weights"][w], c.tempo)[0] for c in train)
            return hits, -sum(abs(float(v)) for v in w.split(","))

        chosen[g] = max(grid, key=acc)
    return chosen


def score(sel: list[Clip], est) -> dict[str, float | int | None]:
    """Agreement of `est(clip) -> dict(tempo, key, mode, time_signature)` with the clips' references."""
    out: dict[str, float | int | None] = {"n": len(sel)}
    t = [(est(c), c) for c in sel if c.tempo is not None]
    t = [(e, c) for e, c in t if e is not None and "tempo" in e]
    if t:
        hits = [tempo_hits(e["tempo"], c.tempo) for e, c in t]
        out["acc1"] = float(np.mean([h[0] for h in hits]))
        out["acc2"] = float(np.mean([h[1] for h in hits]))
        out["n_tempo"] = len(t)
    k = [(est(c), c) for c in sel if c.key is not None]
    k = [(e, c) for e, c in k if e is not None and "key" in e]
    if k:
        out["key"] = float(np.mean([e["key"] == c.key for e, c in k]))
        out["mode"] = float(np.mean([e["mode"] == c.mode for e, c in k]))
        out["key+mode"] = float(np.mean([e["key"] == c.key and e["mode"] == c.mode for e, c in k]))
        out["mirex"] = float(np.mean([mirex_key_score(e["key"], e["mode"], c.key, c.mode) for e, c in k]))
        out["n_key"] = len(k)
    s = [(est(c), c) for c in sel if c.time_signature is not None]
    s = [(e, c) for e, c in s if e is not None and "time_signature" in e]
    if s:
        out["ts"] = float(np.mean([e["time_signature"] == c.time_signature for e, c in s]))
        out["ts_always4"] = float(np.mean([c.time_signature == 4 for _, c in s]))
    return out


def tempo_misses(all_clips: list[Clip], res: dict[str, dict[str, dict]]) -> list[dict]:
    """Every clip whose songfeat tempo misses its reference even in acc2, with each peer's tempo beside it.

    `agree`: every peer that measured the clip reads within 4% of songfeat (octaves allowed, as acc2), i.e. the
    peers hear the same pulse in this audio and the reference names another one."""
    sf = res.get("songfeat", {})
    out = []
    for c in all_clips:
        if c.tempo is None or c.cache_key not in sf or tempo_hits(sf[c.cache_key]["tempo"], c.tempo)[1]:
            continue
        mine = sf[c.cache_key]["tempo"]
        peers = {p: res[p][c.cache_key]["tempo"] for p in res if p != "songfeat" and c.cache_key in res[p]}
        out.append({"set": c.set, "clip": c.path.name, "reference": c.tempo, "songfeat": mine, **peers,
                    "ratio": mine / c.tempo, "agree": bool(peers) and all(tempo_hits(t, mine)[1] for t in peers.values())})
    return out


def _fmt(v, pct=True) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}"


def report(all_clips: list[Clip], res: dict[str, dict[str, dict]]) -> None:
    """Print one markdown table: every set and group, every peer (Essentia per profile and its best)."""
    sets = [("dev", lambda c: c.set == "dev")]
    for g in sorted({c.group for c in all_clips if c.set == "dev"}):
        sets.append((f"dev: {g}", lambda c, g=g: c.set == "dev" and c.group == g))
    sets += [("extra", lambda c: c.set == "extra"), ("fma", lambda c: c.set == "fma"), ("behaviour", lambda c: c.set == "behaviour")]
    loud = loudness_cross(all_clips, res["songfeat"]) if "songfeat" in res else {}
    loso = loso_octave_weights(all_clips, res["songfeat"]) if "songfeat" in res else {}
    cols = ["acc1", "acc2", "key", "mode", "key+mode", "mirex", "ts"]
    print("| set (n) | peer | tempo acc1 | tempo acc2 | key | mode | key+mode | MIREX | time sig. | loudness MAE dB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, pred in sets:
        sel = [c for c in all_clips if pred(c)]
        if not sel:
            continue
        rows = []
        if "songfeat" in res:
            sf = res["songfeat"]
            rows.append(("songfeat", score(sel, lambda c: sf.get(c.cache_key))))
            if loso and all(c.group in loso for c in sel):
                held = score(sel, lambda c: None if c.cache_key not in sf else
                             {"tempo": sf[c.cache_key]["tempo_by_octave_weights"][loso[c.group]]})
                rows.append(("songfeat, octave weights chosen without this source", held))
        if "essentia" in res:
            ess = res["essentia"]
            per = {}
            for prof in ESSENTIA_PROFILES:
                per[prof] = score(sel, lambda c, p=prof: None if c.cache_key not in ess else
                                  {"tempo": ess[c.cache_key]["tempo"], "key": ess[c.cache_key][f"key_{p}"], "mode": ess[c.cache_key][f"mode_{p}"]})
            if any("key+mode" in s for s in per.values()):
                best = max(ESSENTIA_PROFILES, key=lambda p: per[p].get("key+mode", 0))
                for prof in ESSENTIA_PROFILES:
                    rows.append((f"Essentia {prof}{' (best key+mode)' if prof == best else ''}", per[prof]))
            else:
                rows.append(("Essentia", per[ESSENTIA_PROFILES[0]]))
        if "librosa" in res:
            rows.append(("librosa", score(sel, lambda c: res["librosa"].get(c.cache_key))))
        key_name = name.split(": ")[-1] if name.startswith("dev: ") else name
        for i, (peer, s) in enumerate(rows):
            ts = _fmt(s.get("ts")) + (f" (always-4 {s['ts_always4']:.2f})" if "ts" in s and peer == "songfeat" else "")
            if s.get("ts") is None:
                ts = "–"
            ld = f"{loud[key_name]:.2f}" if peer == "songfeat" and key_name in loud else "–"
            label = f"{name} ({s['n']})" if i == 0 else ""
            ditto = peer.startswith("Essentia") and any(r[0].startswith("Essentia") for r in rows[:i])
            vals = ["″" if ditto and k in ("acc1", "acc2") and k in s else _fmt(s.get(k)) for k in cols[:-1]]
            print(f"| {label} | {peer} | " + " | ".join(vals) + f" | {ts} | {ld} |")
    if loud:
        fits = {k: v for k, v in loud.items() if k.endswith(":fit")}
        if loso:
            print("octave weights (comb, density) chosen without each source: " + ", ".join(f"{g}: {w}" for g, w in loso.items()))
        if fits:  # none when the dev previews are one origin only (e.g. --limit 1): no other half to fit on
            print("\nloudness lines (fitted on the other dev half): " + ", ".join(f"{k[:-4]} tested with dB = level + {b:.2f}" for k, (a, b) in fits.items()))
    misses = tempo_misses(all_clips, res)
    if misses:
        others = [p for p in res if p != "songfeat"]
        print("\nsongfeat's tempo misses (not even acc2), with every peer's reading of the same audio:\n")
        print("| set | clip | reference | songfeat | " + " | ".join(others) + " | songfeat / reference | peers hear songfeat's pulse |")
        print("|---|---|---|---|" + "---|" * len(others) + "---|---|")
        for m in misses:
            peers = " | ".join(f"{m[p]:.1f}" if p in m else "–" for p in others)
            print(f"| {m['set']} | {m['clip']} | {m['reference']:.1f} | {m['songfeat']:.1f} | {peers} | {m['ratio']:.3f} | "
                  f"{'yes' if m['agree'] else 'no'} |")


def main() -> None:
    """Measure every clip with every peer (cached) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=benchutil.shared_data(),
                    help="the shared data folder (default: $SONGFEAT_SHARED/data, else ../shared/data)")
    ap.add_argument("--only", default="songfeat,essentia,librosa", help="comma-separated peers")
    ap.add_argument("--limit", type=int, default=None, help="first N clips of each set (a quick look)")
    args = ap.parse_args()
    try:  # optional: no peer needs torch any more; where installed, keep it to one thread as before
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    peers = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad or not peers:
        raise benchutil.fail(f"unknown peer(s) {', '.join(bad) or repr(args.only)}; choose from {', '.join(PEERS)}")
    benchutil.at_least_one(limit=args.limit)
    if "essentia" in peers:
        benchutil.require("essentia")
    if "librosa" in peers:
        benchutil.require("librosa")
    all_clips = clips(args.shared)
    if not all_clips:
        raise benchutil.fail(f"no clips found under {args.shared}")
    if args.limit:
        seen: dict[str, int] = {}
        kept = []
        for c in all_clips:
            seen[c.set] = seen.get(c.set, 0) + 1
            if seen[c.set] <= args.limit:
                kept.append(c)
        all_clips = kept
    res = run_peers(all_clips, peers)
    report(all_clips, res)


if __name__ == "__main__":
    main()
