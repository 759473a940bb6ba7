"""Validation that reveals shift: leave one labelled *source* out, refit every fitted part, score it.

Sources (each a different selection of music, so holding one out shows how the fitted parts carry
one set's skew into another):
- `forro`: the dev previews whose origin is lucasmouragomes/audio_analysis (Brazilian forró/piseiro);
- `poprock`: the dev previews from QMIND-Team/QMIND-Music (mixed pop/rock);
- `older`: ../spotify-previews-extra (older catalogue hits);
- `fma`: the 11 FMA clips with Echo Nest labels. Echo Nest is a second annotator whose
  instrumentalness runs far above Spotify's (SOURCE.md), so FMA instrumentalness is never a fitting
  target (masked); it is scored when FMA is held out, and averages are shown with and without it.
For each held-out source, the heads and the loudness calibration are fitted on the other sources
plus the fitting half of the behaviour clips (rule bounds); baselines: the fold mean (training
sources' label mean), the catalogue mean (the 41,855-track table) and the previous default (its
stage-2 ridge and loudness calibration refitted without the held-out source, as `evaluate-audio --cv` does).
The shipped model blends the heads with that ridge, per feature (`select_blend`); "heads alone" is the
nets without it. The blend's instrumentalness then passes the vocal gate (`songfeat.vocal_gate`), fitted on the training
sources' previews and the behaviour fitting half.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import behaviour, features, vocal_gate
from .evaluate import regression_metrics
from .heads import (DEFAULT_PARTS, NO_TAGGER_PARTS, RIDGE_PARTS, TARGETS, FitConfig, assemble, catalogue_intervals,
                    catalogue_region, clip_rows, fit_clips, intervals_from_labels, intervals_from_rules, layout, part_columns,
                    predict_rows)
from .models.heads import Z_CLAMP
from .records import DEFAULT_CACHE, check_cache, get_records

SOURCES = ("forro", "poprock", "older", "fma")
ORIGINS = {"forro": "lucasmouragomes/audio_analysis", "poprock": "QMIND-Team/QMIND-Music"}
NUMERIC = features.MEASURED_NUMERIC_INPUTS
NOT_FITTED = {"fma": ("instrumentalness",)}  # second annotator: scored, never fitted
RIDGE_BLOCK = RIDGE_PARTS[0][0]  # the ridge member's MFCC summary (band-limited); the previous default read "mfcc"


def shared_inputs() -> tuple[tuple[Path, bool], ...]:
    """What evaluate-sources and train-default read from the shared data folder: (path inside it, is a folder)."""
    from .genre_prior import ECHONEST, ECHONEST_GENRES, SPOTIFY_CATALOGUE, SPOTIFY_GENRES

    files = (Path("spotify-previews") / "labels.csv", Path("spotify-previews-extra") / "labels.csv",
             Path("fma-echonest") / "clips_labels.csv", SPOTIFY_CATALOGUE, SPOTIFY_GENRES, ECHONEST, ECHONEST_GENRES,
             behaviour.MANIFEST)
    return tuple((f, False) for f in files) + ((Path("spotify-previews") / "audio", True), (Path("spotify-previews-extra") / "audio", True))


def check_shared(shared: str | Path) -> None:
    """Refuse a --shared folder that lacks any file these commands read, before any work: some are read only after
    stage 1's fit or every clip's analysis, minutes in (and a missing FMA table ended in a traceback)."""
    from .errors import SongfeatError, no_folder

    hint = "--shared names the shared data folder (spotify-features/, spotify-previews/, behaviour/, ...)"
    if not Path(shared).is_dir():
        raise SongfeatError(shared, f"{no_folder(shared)}; {hint}")
    missing = [Path(shared) / p for p, folder in shared_inputs() if not ((Path(shared) / p).is_dir() if folder else (Path(shared) / p).is_file())]
    if len(missing) == len(shared_inputs()):
        raise SongfeatError(shared, f"holds none of the shared data (e.g. {missing[0].relative_to(shared)}); {hint}")
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(str(m) for m in missing[1:4])}{', ...' if len(missing) > 4 else ''})" \
            if len(missing) > 1 else ""
        raise SongfeatError(missing[0], f"no such {'folder' if missing[0].suffix == '' else 'file'}{more}; {hint}")
    labelled_clips(shared)  # the label tables' columns too: a missing one was a KeyError, for train-default after stage 1


MIN_SOURCE_CLIPS = 2  # a held-out source is scored (`regression_metrics`) on at least this many clips


def _need(file: Path, frame: pd.DataFrame, columns) -> None:
    """Refuse a label table lacking a column the labelled sources read (or holding no value in it), in one line naming it."""
    from .errors import SongfeatError

    absent = [c for c in columns if c not in frame.columns or (len(frame) and frame[c].isna().all())]  # none: counted below
    if absent:
        raise SongfeatError(file, f"no {', '.join(absent)} column (or no value in it); --shared names the shared data folder")


def _raw_table(file: Path) -> pd.DataFrame:
    """A label table as written (ids as text), or one SongfeatError line naming it."""
    from .errors import SongfeatError

    try:
        return pd.read_csv(file, dtype={"track_id": str})
    except (OSError, ValueError) as e:  # pandas' parser and decoding errors are ValueErrors
        raise SongfeatError(file, f"not a readable CSV table ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def labelled_clips(shared: str | Path) -> pd.DataFrame:
    """Every labelled clip with audio: source, track_id, path, the seven targets and Spotify loudness (NaN for FMA).

    A table without a column read here, or a source left with fewer than MIN_SOURCE_CLIPS clips, is one SongfeatError
    line naming the file (a KeyError or a length mismatch before, or a metrics error after every fit)."""
    from .data.labels import pair_labels_audio
    from .errors import SongfeatError

    shared = Path(shared)
    parts = []
    prev_file, extra_file = shared / "spotify-previews" / "labels.csv", shared / "spotify-previews-extra" / "labels.csv"
    fma_file = shared / "fma-echonest" / "clips_labels.csv"
    prev, _ = pair_labels_audio(prev_file, shared / "spotify-previews" / "audio")
    _need(prev_file, prev, TARGETS)
    raw = _raw_table(prev_file)
    _need(prev_file, raw, ("track_id", "origin"))
    origin = raw.drop_duplicates("track_id").set_index("track_id")["origin"]  # the first row of an id, as read_labels keeps
    prev = prev.assign(origin=origin.reindex(prev["track_id"]).to_numpy())
    for name, o in ORIGINS.items():
        parts.append(prev[prev["origin"] == o].assign(source=name))
    extra, _ = pair_labels_audio(extra_file, shared / "spotify-previews-extra" / "audio")
    _need(extra_file, extra, TARGETS)
    parts.append(extra.assign(source="older"))
    fma = _raw_table(fma_file)
    _need(fma_file, fma, ("track_id", "file", *TARGETS))
    blank = [i + 2 for i, f in enumerate(fma["file"]) if not isinstance(f, str) or not f.strip()]  # line 1: the header
    if blank:
        raise SongfeatError(fma_file, f"line {blank[0]}: no file named")
    fma = fma.assign(path=[str(shared / "fma-echonest" / f.strip()) for f in fma["file"]], source="fma", loudness=np.nan)
    parts.append(fma)
    for name, part, file in zip(SOURCES, parts, (prev_file, prev_file, extra_file, fma_file)):
        if len(part) < MIN_SOURCE_CLIPS:
            what = f" of origin {ORIGINS[name]!r}" if name in ORIGINS else ""
            audio = "" if name == "fma" else " with audio"
            raise SongfeatError(file, f"{len(part)} labelled clip(s){what}{audio}; the {name} source needs at least "
                                      f"{MIN_SOURCE_CLIPS}")
    cols = ["source", "track_id", "path", *TARGETS, "loudness"]
    return pd.concat([p[cols] for p in parts], ignore_index=True)


def _numeric(records, slope: float, icpt: float) -> np.ndarray:
    """Stage-1 inputs per clip with loudness from a given calibration of its BS.1770 LUFS (the scale the heads' stage 1
    reads, `loudness_bs1770`; the default bundle's `numeric_descriptors` says so)."""
    rows = []
    for r in records:
        d = dict(r.descriptors)
        d["loudness"] = float(np.clip(slope * d["loudness_lufs"] + icpt, -60.0, 0.0))
        rows.append([float(d[k]) for k in NUMERIC])
    return np.asarray(rows, dtype=np.float32)


def _evidence(records, lay) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per clip: its windows' evidence under `lay` and their weights, the two lists `clip_predictions` and `fit_on` pass on."""
    return [assemble(r.blocks, lay) for r in records], [r.weights for r in records]


def clip_predictions(model, records, lay, numeric_std, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per clip: the duration-weighted mean of the model's per-window predictions (as `analyze` does); `bounds`, a
    bundle's `output_range`, clamps each window's first, as `Bundle.predict` does."""
    ev, num, idx, w = clip_rows(*_evidence(records, lay), numeric_std)
    p = predict_rows(model, ev, num)
    if bounds is not None:
        p = np.clip(p, *bounds)
    out = np.zeros((len(records), p.shape[1]))
    np.add.at(out, idx, p * w[:, None])
    return out


def fit_on(bundle, records, lo, hi, lay, numeric_std, cfg: FitConfig, feature_weights: np.ndarray | None = None):
    """A heads model fitted on clips with interval targets (clip weights equal, windows share them); `feature_weights`
    [clips, T], if given, multiplies each clip's loss per feature (`heads.fit_heads`)."""
    return fit_clips(bundle, *_evidence(records, lay), numeric_std, lo, hi, cfg, part_columns(lay), feature_weights)


FIT_MEMO = 8  # heads fits `_Data.fit` keeps (~2 MB each)
DECAY_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)  # weight decays tried per feature by the inner leave-one-source-out


class _Data:
    """Everything the folds share: labelled and behaviour-fit records, targets, sources, loudness."""

    def __init__(self, shared, bundle, cache, with_tagger, workers, progress, catalogue_bounds: bool = True,
                 catalogue: pd.DataFrame | None = None):
        # `bundle` supplies stage 1 and the numeric scaler (`calibrated`, `fit`); it may be set later;
        # `catalogue`: `catalogue_frame(shared)` if the caller already holds it (read here otherwise)
        clips = labelled_clips(shared)
        man = behaviour.read_manifest(shared)
        fit_beh = man[man["half"] == "fit"].reset_index(drop=True)
        recs = get_records(list(clips["path"]) + list(fit_beh["path"]), cache, with_tagger, workers, progress)
        self.failed = [r for r in recs if isinstance(r, str)]
        n_lab = len(clips)
        ok_lab = [i for i in range(n_lab) if not isinstance(recs[i], str)]
        ok_beh = [j for j in range(len(fit_beh)) if not isinstance(recs[n_lab + j], str)]
        self.clips = clips.loc[ok_lab].reset_index(drop=True)
        self.lab_recs = [recs[i] for i in ok_lab]
        self.beh_recs = [recs[n_lab + j] for j in ok_beh]
        self.beh_files = list(fit_beh.loc[ok_beh, "file"])
        self.beh_rules = list(fit_beh.loc[ok_beh, "rules"])
        # read once: the rule bounds, the vocal gate's value and train-default's region table (`behaviour.region_table`)
        self.catalogue = cat = catalogue_frame(shared) if catalogue is None else catalogue
        self.beh_lo, self.beh_hi, intervals = behaviour_intervals(shared, fit_beh.loc[ok_beh], catalogue_bounds, cat)
        self.bounds, self.regions = intervals["rules"], intervals["regions"]
        self.y = self.clips[list(TARGETS)].to_numpy(float)
        self.y_fit = self.y.copy()
        self.source = self.clips["source"].to_numpy()
        for src, cols in NOT_FITTED.items():
            for c in cols:
                self.y_fit[self.source == src, TARGETS.index(c)] = np.nan
        self.lufs = np.array([r.descriptors["loudness_lufs"] for r in self.lab_recs])
        self.spot_loud = self.clips["loudness"].to_numpy(float)
        self.bundle = bundle
        self.gate_value = vocal_gate.typical_value(cat[vocal_gate.FEATURE].to_numpy(float))
        self._gate_x: tuple[np.ndarray, np.ndarray] | None = None
        self._fits: dict = {}  # `fit`'s results: a pool's heads are read by several choices (held out, inner, behaviour)

    def calibrated(self, train: np.ndarray):
        """Loudness calibration on the training clips -> (slope, intercept, labelled numeric_std, behaviour numeric_std).

        The shipped map's form (`descriptors.loudness_map`: slope 1 by physics, the mean offset), refitted; a
        fitted line's slope is source-dependent and would score a map analysis never uses.
        """
        from .descriptors import loudness_map

        cal = train & np.isfinite(self.spot_loud)
        slope, icpt = loudness_map(self.lufs[cal], self.spot_loud[cal])
        num_std = self.bundle.normalise("numeric", _numeric(self.lab_recs, slope, icpt))
        beh_std = self.bundle.normalise("numeric", _numeric(self.beh_recs, slope, icpt))
        return slope, icpt, num_std, beh_std

    def fit(self, train: np.ndarray, lay, cfg: FitConfig):
        """Heads fitted on the training clips' labels plus the behaviour fitting half's bounds -> (model, num_std).

        Fitted once per (clips, layout, config, bundle): the fit is deterministic (seeded per member), and the held-out
        predictions and the blend's behaviour check of one fold read the same heads."""
        key = (train.tobytes(), id(lay), repr(cfg), id(self.bundle))
        if key not in self._fits:
            self._fits[key] = (*self._fit(train, lay, cfg), lay, self.bundle)  # the objects keep their ids unique
            while len(self._fits) > FIT_MEMO:
                del self._fits[next(iter(self._fits))]  # the oldest: a fold's reuses come within a few fits
        return self._fits[key][:2]

    def _fit(self, train: np.ndarray, lay, cfg: FitConfig):
        _, _, num_std, beh_std = self.calibrated(train)
        lo, hi = intervals_from_labels(self.y_fit[train])
        tr_recs = [r for r, t in zip(self.lab_recs, train) if t] + self.beh_recs
        model = fit_on(self.bundle, tr_recs, np.concatenate([lo, self.beh_lo]), np.concatenate([hi, self.beh_hi]), lay,
                       np.concatenate([num_std[train], beh_std]), cfg)
        return model, num_std

    def predict(self, train: np.ndarray, test: np.ndarray, lay, cfg: FitConfig) -> np.ndarray:
        model, num_std = self.fit(train, lay, cfg)
        return clip_predictions(model, [r for r, t in zip(self.lab_recs, test) if t], lay, num_std[test])

    def stage1(self, num_std: np.ndarray) -> np.ndarray:
        """Stage 1's outputs for standardised numeric inputs [N, F] -> [N, T]."""
        with torch.no_grad():
            return self.bundle.model.base(numeric=torch.from_numpy(np.asarray(num_std, dtype=np.float32))).numpy()

    def fit_ridge(self, train: np.ndarray, num_std: np.ndarray | None = None, block: str = RIDGE_BLOCK) -> tuple[np.ndarray, ...]:
        """The previous default's stage 2 on the training clips with every label known: ridge on [MFCC summary `block`,
        stage 1] to the residual from stage 1 -> (W, b, mean, std) as `Heads.set_ridge` takes them. `num_std`: the
        labelled clips' numeric inputs under `train`'s calibration, if already at hand."""
        from .stack import fit_head

        if num_std is None:
            _, _, num_std, _ = self.calibrated(train)
        known = train & ~np.isnan(self.y_fit).any(1)
        z = np.concatenate([np.stack([r.mean(block) for r in self.lab_recs]), self.stage1(num_std)], axis=1)
        return fit_head(z[known], self.y[known] - z[known, -len(TARGETS):])[:4]

    def predict_ridge(self, train: np.ndarray, test: np.ndarray, previous: bool = False) -> list[np.ndarray]:
        """The ridge member fitted on `train` (its loudness calibration from `train` too), per clip of `test`: [the
        shipped member (band-limited MFCC summary, inputs clamped)], and with `previous` also the previous default as
        it shipped (the seed's full-band summary, inputs not clamped)."""
        _, _, num_std, _ = self.calibrated(train)
        recs, base = [r for r, t in zip(self.lab_recs, test) if t], self.stage1(num_std[test])
        out = [ridge_predictions(self.fit_ridge(train, num_std), recs, base)]
        if previous:
            out.append(ridge_predictions(self.fit_ridge(train, num_std, "mfcc"), recs, base, clamp=False, block="mfcc"))
        return out

    def behaviour_predictions(self, train: np.ndarray, lay, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Heads and ridge member, both fitted on `train`, on the behaviour fitting half's clips."""
        model, _ = self.fit(train, lay, cfg)
        _, _, num_std, beh_std = self.calibrated(train)
        return (clip_predictions(model, self.beh_recs, lay, beh_std),
                ridge_predictions(self.fit_ridge(train, num_std), self.beh_recs, self.stage1(beh_std)))

    def gate_inputs(self, lay) -> tuple[np.ndarray, np.ndarray]:
        """The vocal gate's inputs per labelled clip and per behaviour fitting clip, read as `analyze` reads them."""
        if self._gate_x is None:
            tags = vocal_gate.parts(lay)  # only the columns the gate reads, not the whole row
            x = [np.array([vocal_gate.inputs(assemble(r.blocks, tags), r.weights, tags) for r in recs]).reshape(-1, 2)
                 for recs in (self.lab_recs, self.beh_recs)]
            self._gate_x = (x[0], x[1])
        return self._gate_x

    def fit_gate(self, train: np.ndarray, lay) -> dict:
        """The vocal gate fitted on the training clips with a Spotify instrumentalness (label > 0.5: instrumental) and
        the behaviour fitting half's clips with an instrumentalness rule ("> x": instrumental)."""
        lab_x, beh_x = self.gate_inputs(lay)
        y = self.y_fit[:, TARGETS.index(vocal_gate.FEATURE)]
        keep = train & np.isfinite(y)
        ruled = [(i, any(r.op == ">" for r in rules if r.feature == vocal_gate.FEATURE))
                 for i, rules in enumerate(self.beh_rules) if any(r.feature == vocal_gate.FEATURE for r in rules)]
        x = np.concatenate([lab_x[keep], beh_x[[i for i, _ in ruled]].reshape(-1, 2)])
        return vocal_gate.fit(x, np.concatenate([y[keep] > 0.5, [b for _, b in ruled]]), self.gate_value)

    def rule_misses(self, pred: np.ndarray) -> np.ndarray:
        """Per feature, how many of the behaviour fitting half's rules the per-clip predictions [N, T] break."""
        out = np.zeros(len(TARGETS), dtype=int)
        for rules, row in zip(self.beh_rules, pred):
            for rule in rules:
                if rule.feature in TARGETS and not rule.holds(float(row[TARGETS.index(rule.feature)])):
                    out[TARGETS.index(rule.feature)] += 1
        return out


def ridge_predictions(coef, records, stage1: np.ndarray, clamp: bool = True, block: str = RIDGE_BLOCK) -> np.ndarray:
    """The ridge member per clip: per window clamp(stage 1 + ridge([MFCC summary `block`, stage 1]), 0, 1), its
    standardised inputs clamped to +-Z_CLAMP unless `clamp` is False, then the duration-weighted mean over the windows
    (what `Heads.ridge` and `analyze` compute)."""
    w, b, mean, std = coef
    out = np.zeros((len(records), len(TARGETS)))
    for i, r in enumerate(records):
        x = np.asarray(r.blocks[block], dtype=np.float64)
        base = np.repeat(stage1[i:i + 1], len(x), axis=0)
        z = (np.concatenate([x, base], axis=1) - mean) / std
        z = np.clip(z, -Z_CLAMP, Z_CLAMP) if clamp else z
        p = np.clip(base + z @ np.asarray(w, np.float64).T + b, 0, 1)
        out[i] = np.average(p, axis=0, weights=r.weights)
    return out


BLEND_GRID = (0.0, 0.25, 0.5, 0.75)  # how much the ridge member may count, per feature


def pick_blend(mae: np.ndarray, misses: np.ndarray, grid=BLEND_GRID) -> np.ndarray:
    """Per feature (columns), the grid weight (rows; the first must be 0, the heads alone) with the lowest `mae` among
    those whose rule `misses` are no more than the heads alone's; ties go to the smaller weight."""
    if grid[0] != 0:
        raise ValueError("the blend grid must start at 0 (the heads alone)")
    return _pick(mae, misses, grid)


def _pick(mae: np.ndarray, misses: np.ndarray, grid) -> np.ndarray:
    """Per feature (columns), the grid value (rows; the first is the neutral one) with the lowest `mae` among those whose
    rule `misses` are no more than the first's; ties go to the earlier value."""
    allowed = np.asarray(misses) <= np.asarray(misses)[0]
    return np.asarray(grid, dtype=np.float64)[np.argmin(np.where(allowed, np.nan_to_num(mae, nan=np.inf), np.inf), axis=0)]


@dataclass
class Inner:
    """The leave-one-source-out folds *inside* a pool, predicted once for every post-fit choice made on them."""
    sources: list[str]
    tests: list[np.ndarray]  # per inner source: its clips (a mask over the labelled clips)
    heads: list[np.ndarray]  # the heads fitted without that source, on its clips [n, T]
    ridge: list[np.ndarray]  # the ridge member, likewise
    centres: list[np.ndarray]  # the mean label [T] of the clips each inner fit learned from
    behaviour: tuple[np.ndarray, np.ndarray]  # heads and ridge fitted on the whole pool, on the behaviour fitting half


def inner_folds(data: _Data, pool: np.ndarray, lay, cfg: FitConfig) -> Inner:
    """Fit the heads and the ridge once per source inside `pool` without it, and once on `pool` (behaviour clips)."""
    sources = [s for s in SOURCES if (pool & (data.source == s)).any()]
    tests = [pool & (data.source == s) for s in sources]
    heads, ridge = [], []
    for test in tests:
        heads.append(data.predict(pool & ~test, test, lay, cfg))
        ridge.append(data.predict_ridge(pool & ~test, test)[0])
    centres = [np.nanmean(data.y_fit[pool & ~test], axis=0) for test in tests]
    return Inner(sources, tests, heads, ridge, centres, data.behaviour_predictions(pool, lay, cfg))


def _column_mae(err: np.ndarray) -> np.ndarray:
    """Per feature (column), the mean of the finite absolute errors [n, T]; NaN where a feature has none."""
    return np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in err.T])


def _inner_mae(data: _Data, inner: Inner, predict) -> np.ndarray:
    """Per feature, the MAE of `predict(fold index)` [n, T] averaged over the inner folds (NaN labels not scored)."""
    maes = []
    for i, test in enumerate(inner.tests):
        err = np.abs(predict(i) - data.y_fit[test])  # NOT_FITTED cells are NaN: not scored
        maes.append(_column_mae(err))
    return np.nanmean(np.stack(maes), axis=0)


def select_blend(data: _Data, pool: np.ndarray, lay, cfg: FitConfig, grid=BLEND_GRID,
                 inner: Inner | None = None) -> tuple[np.ndarray, dict]:
    """Per feature, how much the ridge member counts beside the heads: the weight in `grid` with the lowest MAE averaged
    over leave-one-source-out folds *inside* `pool`, among the weights whose blend, fitted on `pool`, breaks no more of
    the behaviour fitting half's rules for that feature than the heads alone (the ridge never saw those clips: it was
    fitted on songs, so it may not undo what the rules taught the heads). Returns (weights [T], the evidence).
    `inner`: the pool's `inner_folds`, if already fitted."""
    inner = inner or inner_folds(data, pool, lay, cfg)
    mae = np.stack([_inner_mae(data, inner, lambda i, a=a: (1 - a) * inner.heads[i] + a * inner.ridge[i])
                    for a in grid])  # [A, T]
    hb, rb = inner.behaviour
    misses = np.stack([data.rule_misses((1 - a) * hb + a * rb) for a in grid])  # [A, T]
    chosen = pick_blend(mae, misses, grid)
    return chosen, {"grid": [float(a) for a in grid], "inner_sources": inner.sources,
                    "inner_mae": {f"{a:g}": [float(v) for v in row] for a, row in zip(grid, mae)},
                    "rule_misses": {f"{a:g}": [int(v) for v in row] for a, row in zip(grid, misses)},
                    "chosen": [float(a) for a in chosen]}


STRETCH_GRID = (1.0, 1.25, 1.5, 2.0)  # factors tried per feature: centre + k (prediction - centre); 1 = unchanged


def stretch_outputs(p: np.ndarray, centre: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Predictions [.., T] pulled away from `centre` by `factor` per target: centre + factor (p - centre), exactly p
    where the factor is 1 (`select_stretch`; tried, not shipped)."""
    p = np.asarray(p)
    factor, centre = np.asarray(factor, dtype=p.dtype), np.asarray(centre, dtype=p.dtype)
    return np.where(factor != 1, centre + factor * (p - centre), p)


def select_stretch(data: _Data, pool: np.ndarray, blend: np.ndarray, inner: Inner,
                   grid=STRETCH_GRID) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per feature, how far the blended predictions are pulled away from the centre their fit regresses towards (the
    mean label of its training clips; `stretch_outputs`): the factor in `grid` with the lowest MAE over the
    inner folds of `pool` (each fold stretched about its own training centre, clamped to the output range), among the
    factors that break no more of the behaviour fitting half's rules than none. Absolute loss fits medians, and on
    labels skewed happy and loud the heads' held-out predictions keep only part of a label's distance from the centre
    (valence about a third), so calm, sad music reads happier than Spotify rates it. Tried and not shipped: nested, it
    picks different factors per held-out source and costs pop/rock and forró (docs/accuracy-notes.md).
    Returns (factors [T], the pool's centre [T], the evidence)."""
    if grid[0] != 1:
        raise ValueError("the stretch grid must start at 1 (unchanged)")
    bounds = data.bundle.output_range()
    mix = [(1 - blend) * h + blend * r for h, r in zip(inner.heads, inner.ridge)]

    def stretched(p: np.ndarray, c: np.ndarray, k: float) -> np.ndarray:
        return np.clip(stretch_outputs(p, c, np.full(len(TARGETS), k)), *bounds)

    mae = np.stack([_inner_mae(data, inner, lambda i, k=k: stretched(mix[i], inner.centres[i], k)) for k in grid])  # [K, T]
    centre = np.nanmean(data.y_fit[pool], axis=0)
    hb, rb = inner.behaviour
    misses = np.stack([data.rule_misses(stretched((1 - blend) * hb + blend * rb, centre, k)) for k in grid])  # [K, T]
    chosen = _pick(mae, misses, grid)
    return chosen, centre, {"grid": [float(k) for k in grid], "inner_sources": inner.sources,
                            "inner_mae": {f"{k:g}": [float(v) for v in row] for k, row in zip(grid, mae)},
                            "rule_misses": {f"{k:g}": [int(v) for v in row] for k, row in zip(grid, misses)},
                            "centre": [float(c) for c in centre], "chosen": [float(k) for k in chosen]}


def select_decay(data: _Data, pool: np.ndarray, lay, cfg: FitConfig, grid=DECAY_GRID,
                 losses: tuple[str, ...] | None = None) -> tuple[FitConfig, dict]:
    """Per feature, the weight decay (and, given `losses`, e.g. `heads.LOSSES`, the loss) with the lowest MAE averaged
    over leave-one-source-out folds *inside* `pool`: `cfg` with those chosen, and {"loss decay": per-feature inner MAE}.

    Only clips in `pool` are fitted or scored (the behaviour fitting half is in every fit), so a source
    outside the pool never influences the choice. Without `losses`, `cfg.loss` stays as given.
    """
    from dataclasses import replace

    inner = [s for s in SOURCES if (pool & (data.source == s)).any()]
    fixed = losses is None
    losses = (cfg.loss,) if fixed else tuple(losses)
    combos = [(loss, float(g)) for loss in losses for g in grid]
    table = {}
    for loss, g in combos:
        maes = []
        for s in inner:
            test = pool & (data.source == s)
            p = data.predict(pool & ~test, test, lay, replace(cfg, weight_decay=g, loss=loss))
            err = np.abs(p - data.y_fit[test])  # NOT_FITTED cells are NaN: not scored
            maes.append(_column_mae(err))
        m = np.stack(maes)
        table[f"{loss} {g:g}"] = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan") for c in m.T]
    scores = np.array([table[f"{loss} {g:g}"] for loss, g in combos])  # [C, T]
    best = [combos[i] for i in np.nanargmin(scores, axis=0)]
    chosen = replace(cfg, weight_decay=tuple(g for _, g in best))
    if not fixed:
        chosen = replace(chosen, loss=tuple(loss for loss, _ in best))
    return chosen, {"grid": [float(g) for g in grid], "losses": None if fixed else list(losses), "inner_sources": inner,
                    "inner_mae": table, "chosen": [g for _, g in best], "chosen_loss": chosen.losses()}


def held_out_ids(shared: str | Path, catalogue: pd.DataFrame) -> set[str]:
    """The track ids no fit may read while the labelled clips are scored: the clips' own, and those of `catalogue` rows
    that are the same recording under another Spotify id (every learned feature and the loudness equal to a clip's, to
    4 decimals: two older hits were in the 41,855-track table so, three rows, and reached stage 1, the bounds and the
    genre prior of the folds that held them out)."""
    clips = labelled_clips(shared)
    cols = [*TARGETS, "loudness"]

    def recordings(frame: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_frame(frame[cols].astype(float).round(4))

    scored = recordings(clips.dropna(subset=cols))  # a clip without a value (FMA's loudness) is no recording's twin
    twins = catalogue.loc[recordings(catalogue).isin(scored), "track_id"]
    return set(clips["track_id"].astype(str)) | set(twins.astype(str))


def held_out_catalogue(shared: str | Path, check=None) -> tuple[pd.DataFrame, set[str], pd.DataFrame]:
    """Spotify's 41,855-track table read once -> (the table, its `held_out_ids`, the table without them), for callers
    needing more than `catalogue_frame`; `check(table, file)`, if given, runs on the table before the ids are sought."""
    from .data.labels import read_labels
    from .genre_prior import SPOTIFY_CATALOGUE

    table = read_labels(Path(shared) / SPOTIFY_CATALOGUE).frame
    if check is not None:
        check(table, Path(shared) / SPOTIFY_CATALOGUE)
    held_out = held_out_ids(shared, table)
    return table, held_out, table[~table["track_id"].astype(str).isin(held_out)]


def catalogue_frame(shared: str | Path) -> pd.DataFrame:
    """Spotify's 41,855-track table without the labelled clips and their twins (so no scored clip informs a bound)."""
    return held_out_catalogue(shared)[2]


def behaviour_intervals(shared: str | Path, fit_beh: pd.DataFrame, catalogue_bounds: bool = True,
                        catalogue: pd.DataFrame | None = None):
    """Targets for the behaviour fitting half -> (lo, hi [N, T], {"rules": per-rule intervals, "regions": file -> intervals}).

    Each rule takes the catalogue's interval on its side (`heads.catalogue_intervals`); a music or speech clip's
    every learned feature then takes where the catalogue's tracks meeting all its rules lie (`heads.catalogue_region`),
    so features no rule names stay among Spotify's values for such music. `catalogue_bounds=False`: margin intervals only.
    `catalogue`: `catalogue_frame(shared)` if the caller already holds it (read here otherwise).
    """
    rules = list(fit_beh["rules"])
    if not catalogue_bounds:
        lo, hi = intervals_from_rules(rules, {})
        return lo, hi, {"rules": {}, "regions": {}}
    cat = catalogue_frame(shared) if catalogue is None else catalogue
    bounds = catalogue_intervals(cat, [r for rs in rules for r in rs])
    lo, hi = intervals_from_rules(rules, bounds)
    regions = {}
    for i, (f, c, rs) in enumerate(zip(fit_beh["file"], fit_beh["category"], rules)):
        region = {} if c in behaviour.NO_REGION_CATEGORIES else catalogue_region(cat, rs)
        for t, (a, b) in region.items():
            j = TARGETS.index(t)
            lo[i, j], hi[i, j] = a, b
        if region:
            regions[f] = {t: [round(a, 4), round(b, 4)] for t, (a, b) in region.items()}
    return lo, hi, {"rules": bounds, "regions": regions}


def default_genre_table(shared: str | Path, exclude_ids: set[str] | None = None) -> dict:
    """The genre-prior table built without any labelled clip or its twin in the catalogue (so no scored clip informs it);
    `exclude_ids`, if given, are those ids (`held_out_ids`), so a caller holding them spares working them out again
    (`genre_prior.build_table` still reads the catalogue's genre column itself)."""
    from .genre_prior import build_table

    if exclude_ids is None:
        exclude_ids = held_out_catalogue(shared)[1]
    return build_table(shared, exclude_ids=exclude_ids)


def evaluate_sources(shared: str | Path, model: str | Path | None = None, cache: str | Path | None = DEFAULT_CACHE,
                     with_tagger: bool = True, workers: int = 1, progress: bool = True, cfg: FitConfig | None = None,
                     parts=None, select: bool = True, grid=DECAY_GRID, catalogue_bounds: bool = True,
                     losses: tuple[str, ...] | None = None, blend: bool = True, stretch: bool = False,
                     gate: bool = True) -> dict:
    """Leave-one-source-out table (see the module docstring); `model` supplies stage 1 (default: the shipped one).

    With `select` (nested selection), each held-out source's heads use the per-feature loss and weight decay chosen
    by `select_decay` over the *other* sources only (and the loss too, given `losses`); without it, `cfg.weight_decay`
    and `cfg.loss` as given. With `blend`, "heads" is the shipped blend of the heads and the ridge member, its weights
    chosen by `select_blend` over the other sources only; "heads alone" is the nets without it. With `stretch` (and
    `blend`; a variant tried, not shipped), the blend is then stretched away from the training labels' centre by
    `select_stretch`'s factors, chosen over the other sources only. With `gate` (and `blend`), the blend's
    instrumentalness passes the vocal gate fitted on the training sources (`_gated`).
    """
    from .analyze import get_bundle

    check_shared(shared)
    check_cache(cache)  # before the genre tables and the bundle are read, not when the clips are
    cfg = cfg or FitConfig()
    parts = parts or (DEFAULT_PARTS if with_tagger else NO_TAGGER_PARTS)
    _, held_out, cat = held_out_catalogue(shared)  # read once for the genre table and the clips' targets
    lay = layout(parts, default_genre_table(shared, held_out) if any(p[2] == "genre_prior" for p in parts) else None)
    bundle = get_bundle(model)
    data = _Data(shared, bundle, cache, with_tagger, workers, progress, catalogue_bounds, catalogue=cat)
    clips, y, y_fit = data.clips, data.y, data.y_fit
    catalogue = np.array([bundle.config["label_means"][t] for t in TARGETS])
    bounds = bundle.output_range()  # held-out predictions as analyze returns them (the catalogue's range: no labelled clip)
    result = {"sources": {}, "targets": list(TARGETS), "failed": data.failed, "fit": cfg.to_dict(), "rule_intervals": data.bounds,
              "region_intervals": data.regions,
              "parts": [list(p) for p in parts], "behaviour_fit_clips": len(data.beh_recs),
              "selection": "nested: per-feature weight decay" + (" and loss" if losses else "") + " chosen by leave-one-source-out over the other sources"
              if select else "fixed: the given FitConfig"}
    for held in SOURCES:
        test = data.source == held
        train = ~test
        fold_cfg, sel = cfg, None
        if select:
            fold_cfg, sel = select_decay(data, train, lay, cfg, grid, losses)
        slope, icpt, num_std, _ = data.calibrated(train)
        p_alone = data.predict(train, test, lay, fold_cfg)
        # the previous default: stage 1 + ridge on the MFCC summary, refitted on the training sources
        p_ridge, p_old = data.predict_ridge(train, test, previous=True)  # the previous default as it shipped
        weights, bsel, factors, ssel = np.zeros(len(TARGETS)), None, np.ones(len(TARGETS)), None
        fold_mean = np.nanmean(y_fit[train], axis=0)
        if blend:
            inner = inner_folds(data, train, lay, fold_cfg)
            weights, bsel = select_blend(data, train, lay, fold_cfg, inner=inner)
            if stretch:
                factors, _, ssel = select_stretch(data, train, weights, inner)
        yt = y[test]
        blended = np.clip(stretch_outputs((1 - weights) * p_alone + weights * p_ridge, fold_mean, factors), *bounds)
        gate_entry = None
        if gate and with_tagger:
            blended, gate_entry = _gated(data, train, test, lay, blended, bounds)
        p_alone = np.clip(p_alone, *bounds)
        preds = {"heads": blended, "heads_alone": p_alone, "previous_default": p_old,
                 "fold_mean": np.tile(fold_mean, (test.sum(), 1)), "catalogue_mean": np.tile(catalogue, (test.sum(), 1))}
        entry = {"n": int(test.sum()), "learned": {k: regression_metrics(yt, v, TARGETS) for k, v in preds.items()},
                 "calibration": {"slope": float(slope), "intercept": float(icpt)},
                 "decay": list(fold_cfg.decays()), "loss": fold_cfg.losses(), "selection": sel,
                 "blend": [float(a) for a in weights], "blend_selection": bsel,
                 "stretch": [float(k) for k in factors], "stretch_selection": ssel, "vocal_gate": gate_entry,
                 "predictions": {k: v.tolist() for k, v in preds.items()}, "labels": yt.tolist(),
                 "track_ids": clips.loc[test, "track_id"].tolist()}
        if held in NOT_FITTED:
            keep = [t for t in TARGETS if t not in NOT_FITTED[held]]
            ix = [TARGETS.index(t) for t in keep]
            entry["average_without"] = {"dropped": list(NOT_FITTED[held]),
                                        **{k: regression_metrics(yt[:, ix], v[:, ix], keep)["average"] for k, v in preds.items()}}
        result["sources"][held] = entry
    return result


def _gated(data: _Data, train: np.ndarray, test: np.ndarray, lay, blended: np.ndarray, bounds) -> tuple[np.ndarray, dict]:
    """The held-out blend with its instrumentalness through the vocal gate fitted on `train`, and what the gate did."""
    g = data.fit_gate(train, lay)
    col = TARGETS.index(vocal_gate.FEATURE)
    x = data.gate_inputs(lay)[0][test]
    out = blended.copy()
    out[:, col] = vocal_gate.apply(g, blended[:, col], x)
    out = np.clip(out, *bounds)
    moved = np.flatnonzero(out[:, col] != blended[:, col])
    ids, y = data.clips.loc[test, "track_id"].to_numpy(), data.y[test, col]
    raised = [{"track_id": str(ids[i]), "label": float(y[i]), "before": float(blended[i, col]), "after": float(out[i, col])}
              for i in moved]
    return out, {**g, "raised": raised}


COLUMNS = {"heads": "shipped (heads + ridge)", "heads_alone": "heads alone", "previous_default": "previous default",
           "fold_mean": "fold mean", "catalogue_mean": "catalogue mean"}


def columns(result: dict) -> dict[str, str]:
    """The models a result holds, in `COLUMNS` order (results recorded before the blend have no "heads alone")."""
    held = [set(e["learned"]) for e in result["sources"].values()]
    return {k: v for k, v in COLUMNS.items() if all(k in h for h in held)}


def to_markdown(result: dict) -> str:
    """One table per held-out source (MAE and r per feature and model), then a summary of the averages."""
    lines = []
    cols = columns(result)
    summary = ["| held-out source | clips | " + " | ".join(f"{v} MAE" for v in cols.values()) + " |",
               "|---|---|" + "---|" * len(cols)]
    for src, e in result["sources"].items():
        lines += [f"### held out: {src} ({e['n']} clips)", "",
                  "| feature | " + " | ".join(f"{v} MAE | r" for v in cols.values()) + " |",
                  "|---|" + "---|---|" * len(cols)]
        for t in list(result["targets"]) + ["average"]:
            cells = []
            for k in cols:
                m = e["learned"][k]["average"] if t == "average" else e["learned"][k]["targets"][t]
                r = m.get("pearson")
                cells += [f"{m['mae']:.3f}", "–" if r is None or r != r else f"{r:.2f}"]
            lines.append(f"| {'**average**' if t == 'average' else t} | " + " | ".join(cells) + " |")
        avg = [f"{e['learned'][k]['average']['mae']:.4f}" for k in cols]
        if "average_without" in e:
            aw = e["average_without"]
            lines.append(f"| average without {', '.join(aw['dropped'])} | "
                         + " | ".join(f"{aw[k]['mae']:.3f} | " for k in cols) + " |")
            avg = [f"{a} ({aw[k]['mae']:.4f} w/o {', '.join(aw['dropped'])})" for a, k in zip(avg, cols)]
        if e.get("decay") is not None:
            lines.append("")
            losses = e.get("loss") or [None] * len(e["decay"])
            lines.append("Heads' loss and weight decay per feature" + (" (chosen by leave-one-source-out over the other sources only)"
                                                                     if e.get("selection") else "") + ": "
                         + ", ".join(f"{t} {(loss + ' ') if loss else ''}{d:g}"
                                     for t, loss, d in zip(result["targets"], losses, e["decay"])) + ".")
        if e.get("blend_selection"):
            lines.append("")
            lines.append("How much the ridge member counts per feature (chosen by leave-one-source-out over the other sources "
                         "only, never breaking more behaviour fitting-half rules than the heads alone): "
                         + ", ".join(f"{t} {a:g}" for t, a in zip(result["targets"], e["blend"])) + ".")
        if e.get("vocal_gate"):
            g = e["vocal_gate"]
            lines.append("")
            lines.append(f"The vocal gate (refitted on the other sources: {g['fitting_rows']['instrumental']} instrumental and "
                         f"{g['fitting_rows']['sung']} sung or spoken clips) raised {g['feature']} to {g['value']:g} on: "
                         + (", ".join(f"{r['track_id']} (label {r['label']:.2f}, was {r['before']:.2f})" for r in g["raised"])
                            or "no clip") + ".")
        if e.get("stretch_selection"):
            lines.append("")
            lines.append("Stretch of the blend away from the training labels' centre per feature (`--stretch`; chosen the same "
                         "way): " + ", ".join(f"{t} x{k:g}" for t, k in zip(result["targets"], e["stretch"])) + ".")
        lines.append("")
        summary.append(f"| {src} | {e['n']} | " + " | ".join(avg) + " |")
    return "\n".join(["Average MAE over the seven learned features, per held-out source:", "", *summary, "",
                      *bias_table(result), *lines])


def seed_spread(results: list[dict]) -> dict:
    """How much the heads' held-out average MAE moves with nothing but the fit's random start: per source, the
    figure of each run (runs differing only in `FitConfig.seed`), their mean, min and max (and without the
    masked features where a source has them). A difference between two models smaller than this spread is noise."""
    out = {"seeds": [r["fit"]["seed"] for r in results], "sources": {}}
    for src in results[0]["sources"]:
        runs = [r["sources"][src]["learned"]["heads"]["average"]["mae"] for r in results]
        e = {"mae": runs, "mean": float(np.mean(runs)), "min": float(np.min(runs)), "max": float(np.max(runs))}
        if "average_without" in results[0]["sources"][src]:
            e["without"] = [r["sources"][src]["average_without"]["heads"]["mae"] for r in results]
        out["sources"][src] = e
    return out


def spread_markdown(spread: dict) -> str:
    """`seed_spread` as a table: one column per seed, then mean and range."""
    seeds = spread["seeds"]
    lines = [f"Heads' held-out average MAE by the fit's seed ({len(seeds)} runs; everything else equal):", "",
             "| held-out source | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | max - min |",
             "|---|" + "---|" * (len(seeds) + 2)]
    def row(label: str, values: list[float]) -> str:
        return f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {np.mean(values):.4f} | {max(values) - min(values):.4f} |"

    for src, e in spread["sources"].items():
        lines.append(row(src, e["mae"]))
        if "without" in e:
            lines.append(row(f"{src} without its masked features", e["without"]))
    return "\n".join(lines + [""])


def bias_table(result: dict) -> list[str]:
    """Markdown lines: the heads' bias (mean prediction minus label) per held-out source and feature, the previous
    default's in brackets; empty for results from before the bias was recorded."""
    srcs = result["sources"]
    if not srcs or any("bias" not in e["learned"]["heads"]["targets"][t] for e in srcs.values() for t in result["targets"]):
        return []
    out = ["Bias (mean prediction minus Spotify's value; the previous default's in brackets), per held-out source:", "",
           "| held-out source | " + " | ".join(result["targets"]) + " |", "|---|" + "---|" * len(result["targets"])]
    for src, e in srcs.items():
        cells = [f"{e['learned']['heads']['targets'][t]['bias']:+.3f} ({e['learned']['previous_default']['targets'][t]['bias']:+.3f})"
                 for t in result["targets"]]
        out.append(f"| {src} | " + " | ".join(cells) + " |")
    return out + [""]


__all__ = ["evaluate_sources", "check_shared", "labelled_clips", "to_markdown", "bias_table", "seed_spread", "spread_markdown", "SOURCES", "fit_on", "clip_predictions",
           "select_decay", "select_blend", "select_stretch", "inner_folds", "columns", "pick_blend", "ridge_predictions", "default_genre_table", "DECAY_GRID", "BLEND_GRID", "STRETCH_GRID"]
