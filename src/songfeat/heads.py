"""Fitting the listening heads: evidence rows, interval targets, and a deterministic torch fit.

Targets are intervals [lo, hi] per clip and feature, so one loss covers both kinds of knowledge:
a Spotify (or Echo Nest) label is the point interval [y, y]; a behaviour rule from Spotify's
definitions on a *fitting-half* clip is a bound with a margin (speechiness > 0.66 becomes
[0.66 + MARGIN, 1]); an unknown feature is [0, 1] and costs nothing. The loss is the distance of the
prediction to its interval (`FitConfig.loss`: absolute by default, as MAE scores it; or squared), each clip
weighing the same whatever its window count.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import features  # torch is imported inside the fitting functions: analyze calls assemble/layout without it

TARGETS = features.LEARNED
MARGIN = 0.1  # a bound rule asks for this much room inside the bound
LOSSES = ("absolute", "squared")  # FitConfig.loss: the distance to the interval, or its square
TAG_EPS = 1e-4
# (block, part name, transform): what the heads read from each window's evidence
# genre_prior: E[feature | genre] from the genre tables, weighted by the window's tags (`songfeat.genre_prior`)
DEFAULT_PARTS: tuple[tuple[str, str, str], ...] = (
    ("tagger", "msd_tags", "logit"), ("tagger", "mtt_tags", "logit"), ("tagger", "genre_prior", "genre_prior"),
    ("vad", "all", "identity"), ("pitch", "all", "identity"), ("spoken", "all", "identity"), ("dynamics", "all", "identity"))
NO_GENRE_PARTS = tuple(p for p in DEFAULT_PARTS if p[2] != "genre_prior")
NO_TAGGER_PARTS = tuple(p for p in DEFAULT_PARTS if p[0] != "tagger")
RIDGE_PARTS = (("mfcc_band", "all", "identity"),)  # the ridge member's evidence, after the nets' own (`models.heads.Heads`)
RIDGE_BLOCKS = ("mfcc_band", "mfcc")  # the ridge member's summary; bundles made before 2026-12-04 evening read "mfcc"


def nets_layout(lay: list[dict]) -> list[dict]:
    """The parts of a bundle's evidence layout that the nets read: all but the ridge member's trailing columns."""
    out = list(lay)
    while out and out[-1]["block"] in RIDGE_BLOCKS:
        out.pop()
    return out


def layout(parts=DEFAULT_PARTS, genre_table: dict | None = None) -> list[dict]:
    """Resolve parts to slices of their block: [{block, name, start, stop, transform}].

    A genre_prior part reads the tag probabilities (the tagger block's first 100 columns) and carries
    `genre_table` (`songfeat.genre_prior.build_table`), so a bundle's config holds all it needs.
    """
    out = []
    for block, name, tf in parts:
        if tf == "genre_prior":
            if genre_table is None:
                raise ValueError("a genre_prior part needs the genre table (songfeat.genre_prior.build_table)")
            out.append({"block": block, "name": name, "start": 0, "stop": 100, "transform": tf, "table": genre_table})
        elif block == "tagger" and name != "all":
            from .tagger import layout as tagger_layout

            s = tagger_layout()[name]
            out.append({"block": block, "name": name, "start": s.start, "stop": s.stop, "transform": tf})
        else:
            out.append({"block": block, "name": name, "start": 0, "stop": None, "transform": tf})
    return out


def assemble(blocks: dict[str, np.ndarray], lay: list[dict]) -> np.ndarray:
    """Per-window evidence blocks {name: [W, D]} -> the heads' input rows [W, sum of parts]."""
    cols = []
    for p in lay:
        x = np.asarray(blocks[p["block"]], dtype=np.float64)[:, p["start"]:p["stop"]]
        if p["transform"] == "logit":
            x = np.clip(x, TAG_EPS, 1 - TAG_EPS)
            x = np.log(x / (1 - x))
        elif p["transform"] == "genre_prior":
            from .genre_prior import apply

            x = apply(x, p["table"])
        cols.append(x)
    return np.concatenate(cols, axis=1).astype(np.float32)


def rule_interval(rule, margin: float = MARGIN) -> tuple[float, float]:
    """A behaviour rule as an interval on its feature: '>' v -> [v + margin, 1], '<' v -> [0, v - margin]."""
    if rule.op == ">":
        return min(1.0, rule.value + margin), 1.0
    return 0.0, max(0.0, rule.value - margin)


def intervals_from_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels [N, T] (NaN = unknown) -> (lo, hi)."""
    lo = np.where(np.isnan(y), 0.0, y)
    hi = np.where(np.isnan(y), 1.0, y)
    return lo.astype(np.float32), hi.astype(np.float32)


CATALOGUE_QUANTILES = (0.1, 0.9)


def catalogue_intervals(catalogue, rules, q: tuple[float, float] = CATALOGUE_QUANTILES) -> dict[str, tuple[float, float]]:
    """Where Spotify's own values sit on a rule's side: str(rule) -> the [q10, q90] of the catalogue tracks meeting it.

    The rule says which side of a threshold a clip is on ("speechiness>0.66"); Spotify's catalogue says where on
    that side real values lie (its spoken-word tracks read 0.92-0.96, not 0.67). `catalogue` is a frame with the
    seven features (the 41,855-track table).
    """
    out = {}
    for r in rules:
        if r.feature not in TARGETS or str(r) in out:
            continue
        x = catalogue[r.feature].dropna().to_numpy(float)
        x = x[x > r.value] if r.op == ">" else x[x < r.value]
        if len(x) >= 50:
            out[str(r)] = (float(np.quantile(x, q[0])), float(np.quantile(x, q[1])))
    return out


REGION_MIN_TRACKS = 50  # a region of the catalogue this small says too little about where its tracks lie


def catalogue_region(catalogue, rules, q: tuple[float, float] = CATALOGUE_QUANTILES) -> dict[str, tuple[float, float]]:
    """Where Spotify's catalogue tracks meeting *all* of a clip's rules lie on every learned feature: feature -> [q10, q90].

    A piano piece's rules (instrumentalness > 0.5, acousticness > 0.5, energy < 0.4) pick 3,589 catalogue tracks, whose
    danceability runs 0.19-0.76 and liveness 0.09-0.30; nothing else in fitting says so, and without it the heads
    extrapolated such music to danceability and liveness near 0, below any Spotify value. Empty when fewer than
    `REGION_MIN_TRACKS` tracks meet the rules, or when no rule is on a learned feature.
    """
    rules = [r for r in rules if r.feature in TARGETS]
    if not rules:
        return {}
    ok = np.ones(len(catalogue), dtype=bool)
    for r in rules:
        x = catalogue[r.feature].to_numpy(float)
        ok &= (x > r.value) if r.op == ">" else (x < r.value)
    if ok.sum() < REGION_MIN_TRACKS:
        return {}
    sub = catalogue.loc[ok, list(TARGETS)]
    return {t: (float(sub[t].quantile(q[0])), float(sub[t].quantile(q[1])))
            for t in TARGETS if sub[t].notna().sum() >= REGION_MIN_TRACKS}


def intervals_from_rules(rules_per_clip, bounds: dict[str, tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour rules per clip -> (lo, hi) [N, T]; features without a rule stay [0, 1].

    A rule found in `bounds` (`catalogue_intervals`) takes that interval, any other the margin interval.
    """
    lo = np.zeros((len(rules_per_clip), len(TARGETS)), np.float32)
    hi = np.ones_like(lo)
    for i, rules in enumerate(rules_per_clip):
        for r in rules:
            if r.feature in TARGETS:
                j = TARGETS.index(r.feature)
                a, b = (bounds or {}).get(str(r)) or rule_interval(r)
                lo[i, j], hi[i, j] = max(lo[i, j], a), min(hi[i, j], b)
    return lo, hi


@dataclass
class FitConfig:
    """Hyper-parameters of the heads' fit (recorded in the bundle's config)."""

    hidden: int = 16
    members: int = 5
    steps: int = 400
    lr: float = 0.01
    # L2 (mean square) on each feature's skip and output weights: one value, or one per feature in TARGETS
    # order; train-default chooses it per feature by leave-one-source-out over the labelled sources (see
    # `songfeat.sources.select_decay`), never by looking at the source being scored
    weight_decay: float | tuple[float, ...] = 0.5
    hidden_decay: float = 2.0  # extra L2 on the hidden path: the skip (logit-linear) part does most work
    bound_weight: float = 4.0  # a clip known by rule bounds weighs this many labelled clips (they are few)
    residual: tuple[str, ...] = ("danceability", "energy", "acousticness", "valence", "liveness")  # heads correct stage 1's logit

    # residual features may not weaken stage 1: the skip weight from a feature's own stage-1 output to its
    # correction stays >= 0, so the heads cannot undo what stage 1 learned from 28,859 catalogue tracks
    monotone: bool = True
    # Spotify's definitions say what some features are about: (feature, parts) pairs restrict a feature to those
    # evidence parts ("block:name") plus stage 1's outputs, on its linear path only (its nonlinear path is off).
    # Energy is "intensity and activity" from "dynamic range, perceived loudness, timbre, onset rate, and general
    # entropy": things measured, so it reads the measurements and genre knowledge only through the genre prior;
    # with the 100 raw tag logits and ~150 labelled clips it learned tag words as energy (forró's "country"-like
    # tags read as calm: held-out forró energy MAE 0.087, 0.056 without them)
    feature_parts: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("energy", ("tagger:genre_prior", "vad:all", "pitch:all", "dynamics:all")),)
    # (part, features): evidence only those features read, on their linear path; the shared nonlinear path never does.
    # The spoken block is speechiness's own (the VAD's speech outside sung notes and beats, built for Spotify's
    # definition of it); the other features read the raw VAD and pitch statistics.
    private_parts: tuple[tuple[str, tuple[str, ...]], ...] = (("spoken:all", ("speechiness",)),)
    # the loss on each row's distance to its interval, one value or one per feature: "absolute" fits the conditional
    # median, which is what MAE scores, and Spotify's speechiness, instrumentalness and liveness have long upper tails
    # a squared loss chases (held-out forró speechiness MAE 0.050 squared, 0.020 absolute; liveness 0.147, 0.114);
    # "squared" fits the mean, a hedge where labels sit on both sides. `songfeat.sources.select_decay(losses=LOSSES)`
    # can choose it per feature with the decay; held out that did no better (forró 0.096 against 0.089)
    loss: str | tuple[str, ...] = "absolute"
    seed: int = 42

    def residual_mask(self) -> list[bool]:
        return [t in self.residual for t in TARGETS]

    def losses(self) -> list[str]:
        """The loss of each feature, in TARGETS order."""
        out = [self.loss] * len(TARGETS) if isinstance(self.loss, str) else list(self.loss)
        bad = sorted(set(out) - set(LOSSES))
        if bad or len(out) != len(TARGETS):
            raise ValueError(f"loss must be one of {LOSSES} or one per feature ({len(TARGETS)}), got {self.loss!r}")
        return out

    def decays(self) -> np.ndarray:
        """The weight decay of each feature, in TARGETS order."""
        d = np.broadcast_to(np.asarray(self.weight_decay, dtype=np.float64), (len(TARGETS),))
        return d.copy()

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def input_mask(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Which evidence columns (named by part, `part_columns`) each path may read, or None when all read all:
        (skip [T, D] per feature, hidden [D] for the shared nonlinear path, restricted [T] = nonlinear path off)."""
        if not self.feature_parts and not self.private_parts:
            return None
        cols = np.array(columns)
        skip = np.ones((len(TARGETS), len(cols)), dtype=bool)
        hidden = np.ones(len(cols), dtype=bool)
        restricted = np.zeros(len(TARGETS), dtype=bool)
        for part, feats in self.private_parts:
            own = cols == part
            hidden &= ~own
            for j, t in enumerate(TARGETS):
                if t not in feats:
                    skip[j] &= ~own
        for feature, parts in self.feature_parts:
            j = TARGETS.index(feature)
            skip[j] &= np.isin(cols, parts)
            restricted[j] = True
        return skip, hidden, restricted


def part_columns(lay: list[dict]) -> list[str]:
    """The part ("block:name") of each column `assemble` makes from a layout."""
    from .evidence import block_width

    out = []
    for p in lay:
        if p["transform"] == "genre_prior":
            n = len(TARGETS) * len(p["table"]["annotators"])
        else:
            n = (p["stop"] if p["stop"] is not None else block_width(p["block"])) - p["start"]
        out += [f"{p['block']}:{p['name']}"] * n
    return out


def fit_members(model, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, cfg: FitConfig,
                offset: np.ndarray | None = None, mask: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    """Fit every ensemble member of `model` on standardised rows z [R, D] with interval targets and weights `w`,
    one per row [R] or one per row and feature [R, T] (each feature's loss is normalised by its own weights).

    `mask` (`FitConfig.input_mask`) zeroes the skip weights a feature may not read, the hidden layer's weights
    on private columns and a restricted feature's nonlinear output row, at the start and after every step.

    Single-threaded and seeded, so a rerun gives bit-identical weights.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        off = torch.zeros(len(z), lo.shape[1]) if offset is None else torch.from_numpy(np.ascontiguousarray(offset, dtype=np.float32))
        lot, hit = torch.from_numpy(lo), torch.from_numpy(hi)
        span = hit - lot
        bound = ((span > 0) & (span < 1)).any(1).numpy()
        w = np.asarray(w, dtype=np.float64)
        w = w[:, None] if w.ndim == 1 else w  # one weight per row, or one per row and feature
        w = np.where(bound[:, None], w * cfg.bound_weight, w)
        wt = torch.from_numpy((w / w.sum(0)).astype(np.float32))  # [R, 1] or [R, T]
        known = (span < 1.0).float()
        # each feature's loss is normalised by how much of the data constrains it, so a rare bound is not drowned
        col = (wt * known).sum(0).clamp(min=1e-6)
        lam = torch.from_numpy(cfg.decays().astype(np.float32))
        absolute = torch.tensor([x == "absolute" for x in cfg.losses()])
        n_t = lo.shape[1]
        res = [j for j, r in enumerate(model.residual_mask.tolist()) if r] if cfg.monotone and offset is not None else []
        # (output j, input column of stage 1's output j): stage 1's outputs are the last n_t columns of z
        own = (torch.tensor(res), torch.tensor([z.shape[1] - n_t + j for j in res])) if res else None
        keep = None
        if mask is not None:  # (skip, hidden, out) multipliers; stage 1's n_t columns stay open to every path
            skip_m, hidden_m, restricted = mask
            keep = (torch.from_numpy(np.concatenate([skip_m, np.ones((n_t, n_t), dtype=bool)], axis=1).astype(np.float32)),
                    torch.from_numpy(np.concatenate([hidden_m, np.ones(n_t, dtype=bool)]).astype(np.float32))[None, :],
                    torch.from_numpy((~restricted).astype(np.float32))[:, None])
        for k, m in enumerate(model.members):
            g = torch.Generator().manual_seed(cfg.seed + k)
            with torch.no_grad():
                for lin in (m.skip, m.hidden, m.out):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * (0.3 / lin.weight.shape[1] ** 0.5))
                    if lin.bias is not None:
                        lin.bias.zero_()
                # start from each feature's mean label: the logit of the constrained rows' centre
                centre = (((lot + hit) / 2) * wt * known).sum(0) / col
                start = torch.logit(centre.clamp(0.02, 0.98))
                m.skip.bias.copy_(start if offset is None else start - (off * wt).sum(0) / wt.sum(0))
                _zero_masked(m, keep)
            opt = torch.optim.Adam(m.parameters(), lr=cfg.lr)
            for _ in range(cfg.steps):
                p = torch.sigmoid(off + m(zt))
                gap = torch.relu(lot - p) + torch.relu(p - hit)
                loss = (torch.where(absolute, gap, gap ** 2) * wt).sum(0).div(col).mean()
                # per feature: lam_f on its skip row, lam_f + hidden_decay on its output row; the shared hidden
                # layer gets mean(lam) + hidden_decay (with one lam for all this is the plain mean-square L2)
                reg = ((lam * m.skip.weight.pow(2).mean(1)).mean() + ((lam + cfg.hidden_decay) * m.out.weight.pow(2).mean(1)).mean()
                       + (lam.mean() + cfg.hidden_decay) * m.hidden.weight.pow(2).mean())
                opt.zero_grad()
                (loss + reg).backward()
                opt.step()
                if own is not None:
                    with torch.no_grad():
                        m.skip.weight[own] = m.skip.weight[own].clamp(min=0.0)
                _zero_masked(m, keep)
    finally:
        torch.set_num_threads(threads)


def _zero_masked(member, keep) -> None:
    """Zero the weights a mask forbids (`keep`: skip, hidden and output multipliers, or None for no mask)."""
    if keep is None:
        return
    import torch

    with torch.no_grad():
        for lin, k in zip((member.skip, member.hidden, member.out), keep):
            lin.weight.mul_(k)


def fit_heads(model, evidence: np.ndarray, numeric_std: np.ndarray, lo: np.ndarray, hi: np.ndarray, weights: np.ndarray,
              cfg: FitConfig, columns: list[str] | None = None, feature_weights: np.ndarray | None = None) -> None:
    """Standardise [evidence, stage-1 outputs] on these rows, store the scaler in `model`, fit the members.

    `columns` names each evidence column's part (`part_columns`), needed when `cfg.feature_parts` restricts features.
    `feature_weights` [R, T] multiplies each row's weight per feature in the loss (not in the scaler).
    """
    import torch

    with torch.no_grad():
        base_t = model.base(numeric=torch.from_numpy(np.ascontiguousarray(numeric_std, dtype=np.float32)))
        offset = model.offset(base_t).numpy()
        base = base_t.numpy()
    z = np.concatenate([evidence, base], axis=1).astype(np.float64)
    mean = (z * weights[:, None]).sum(0) / weights.sum()
    std = np.sqrt((((z - mean) ** 2) * weights[:, None]).sum(0) / weights.sum()) + 1e-6
    with torch.no_grad():
        model.z_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        model.z_std.copy_(torch.from_numpy(std.astype(np.float32)))
        from .models import heads as heads_module

        c = heads_module.Z_CLAMP  # the same clamp the model's forward applies
        zs = torch.clamp((torch.from_numpy(z.astype(np.float32)) - model.z_mean) / model.z_std, -c, c).numpy()
    if cfg.feature_parts and columns is None:
        raise ValueError("feature_parts needs the evidence columns' part names (heads.part_columns)")
    mask = cfg.input_mask(columns) if columns is not None else None  # unnamed columns hold no private part
    fit_members(model, zs, lo, hi, weights if feature_weights is None else weights[:, None] * feature_weights, cfg, offset, mask)


def predict_rows(model, evidence: np.ndarray, numeric_std: np.ndarray) -> np.ndarray:
    """The model's outputs for rows of evidence and standardised numeric inputs."""
    import torch

    with torch.no_grad():
        return model(evidence=torch.from_numpy(np.ascontiguousarray(evidence, dtype=np.float32)),
                     numeric=torch.from_numpy(np.ascontiguousarray(numeric_std, dtype=np.float32))).numpy()


__all__ = ["FitConfig", "fit_heads", "predict_rows", "assemble", "layout", "intervals_from_labels",
           "intervals_from_rules", "rule_interval", "catalogue_intervals", "catalogue_region", "nets_layout", "DEFAULT_PARTS",
           "NO_GENRE_PARTS", "NO_TAGGER_PARTS", "RIDGE_PARTS", "TARGETS", "held_out_predictions", "constant_labels", "mean_labels"]


def _check_base(base) -> None:
    """Refuse a --model whose stage 1 the heads cannot sit on (another family's bundle, other targets, inputs read from
    labels) before any clip is analysed, in one line instead of a KeyError after the whole analysis."""
    from .errors import SongfeatError
    from .sources import new_heads

    cfg = base.config
    if list(cfg.get("targets") or []) != list(TARGETS):
        why = f"it predicts {', '.join(map(str, cfg.get('targets') or [])) or 'nothing'}, not the seven learned features"
    elif cfg.get("numeric_source") == "labels" or "numeric" not in (cfg.get("scalers") or {}):
        why = "its stage 1 does not read measured features (tempo, loudness, key, ...)"
    else:
        try:
            new_heads(base, 1, FitConfig(members=1))
            return
        except Exception as e:  # no `base` module, or one of another shape
            why = f"it has no stage 1 the heads can sit on ({type(e).__name__})"
    raise SongfeatError(base.path, f"a {cfg.get('model')!r} bundle cannot be the heads' --model: {why}; "
                                   "use the default model or a bundle made by train-heads or train-default")


def keep_stage1(model, features: list[int]) -> None:
    """Make these outputs stage 1's own prediction: residual on stage 1's logit, with every member's correction zero."""
    import torch

    with torch.no_grad():
        model.residual_mask[features] = 1.0
        for m in model.members:
            for layer in (m.skip, m.out):
                layer.weight[features] = 0.0
                if layer.bias is not None:
                    layer.bias[features] = 0.0


CV_FOLDS = 5  # train-heads scores its recipe on clips it did not fit, in this many folds of the user's clips (--cv)


def _fit_labelled(base, evidence: list[np.ndarray], weights: list[np.ndarray], y: np.ndarray, numeric_std: np.ndarray,
                  cfg: FitConfig, columns: list[str]):
    """Heads fitted on clips labelled `y` [N, T] (NaN: unknown) over the base's stage 1, from each clip's evidence rows
    [W, D] and window weights [W] (each clip weighing the same, as `sources.fit_on`); a feature none of these clips is
    labelled with gives stage 1's prediction (its unconstrained heads fell to the floor for every song)."""
    from .sources import new_heads

    lo, hi = intervals_from_labels(y)
    idx = np.concatenate([np.full(len(x), i) for i, x in enumerate(evidence)])
    model = new_heads(base, evidence[0].shape[1], cfg)
    fit_heads(model, np.concatenate(evidence), numeric_std[idx], lo[idx], hi[idx],
              np.concatenate([w / w.sum() for w in weights]), cfg, columns)
    model.eval()
    unlabelled = [j for j in range(y.shape[1]) if np.isnan(y[:, j]).all()]
    if unlabelled:
        keep_stage1(model, unlabelled)
    return model


def _clip_predictions(model, evidence: list[np.ndarray], weights: list[np.ndarray], numeric_std: np.ndarray) -> np.ndarray:
    """Per clip: the window-weighted mean of the model's predictions for its windows, one clip at a time as `analyze`
    predicts a file (a batch of all clips' windows rounds differently in float32, by ~1e-8)."""
    return np.array([np.average(predict_rows(model, x, np.repeat(numeric_std[i:i + 1], len(x), axis=0)), axis=0,
                                weights=w) for i, (x, w) in enumerate(zip(evidence, weights))])


def held_out_predictions(base, evidence: list[np.ndarray], weights: list[np.ndarray], y: np.ndarray, numeric_std,
                         folds: list[np.ndarray], cfg: FitConfig, columns: list[str], fit_all: bool = False,
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray, object]:
    """K-fold held-out predictions [N, T] of heads fitted on labels `y` (NaN: unknown) without each fold, the baseline
    (each feature's mean label over the fold's training clips, NaN where none has it) and, with `fit_all`, the heads
    fitted on every clip (else None): the one loop `train_heads --cv` and `evaluate-audio --cv` (`accuracy._heads_cv`)
    share, so their figures agree.

    `numeric_std` is the clips' standardised stage-1 inputs [N, F], or a function (train, test) -> [N, F] for inputs
    refitted per fold (evaluate-audio's loudness calibration).
    """
    pred, mean_pred, model = np.full(y.shape, np.nan), np.full(y.shape, np.nan), None
    jobs = [None, *folds] if fit_all else list(folds)  # None: the fit on every clip
    if progress:
        from .progress import track

        jobs = track(jobs, "fitting the heads", total=len(jobs))
    for test in jobs:
        if test is None:
            model = _fit_labelled(base, evidence, weights, y, numeric_std, cfg, columns)
            continue
        train = np.setdiff1d(np.arange(len(evidence)), test)
        num = numeric_std(train, test) if callable(numeric_std) else numeric_std
        fold = _fit_labelled(base, [evidence[i] for i in train], [weights[i] for i in train], y[train], num[train], cfg,
                             columns)
        pred[test] = _clip_predictions(fold, [evidence[i] for i in test], [weights[i] for i in test], num[test])
        mean_pred[test] = mean_labels(y[train])
    return pred, mean_pred, model


def mean_labels(y: np.ndarray) -> np.ndarray:
    """Each feature's mean label over the clips labelled with it (NaN: unlabelled; NaN where no clip is), without
    numpy's empty-mean warning: the held-out folds' mean-predictor baseline."""
    known = ~np.isnan(y)
    return np.divide(np.where(known, y, 0.0).sum(0), known.sum(0), out=np.full(y.shape[1], np.nan), where=known.any(0))


def constant_labels(y: np.ndarray, names: list[str]) -> dict[str, str]:
    """Features whose labels cannot teach how the feature varies, with why: a single labelled clip, or every labelled
    clip the same value (a head fitted on them learns that constant, and its held-out r is undefined)."""
    out = {}
    for j, name in enumerate(names):
        v = y[:, j][~np.isnan(y[:, j])]
        if len(v) == 1:
            out[name] = f"only 1 clip is labelled with it ({v[0]:g})"
        elif len(v) > 1 and np.ptp(v) == 0:
            out[name] = f"all {len(v)} clips labelled with it have the same value ({v[0]:g})"
    return out


def train_heads(labels_csv, audio_dir, out, base_model=None, cache=None, workers: int = 1, progress: bool = True,
                cfg: FitConfig | None = None, cv: int = CV_FOLDS):
    """Fit heads on your own labelled audio (any subset of the seven features; missing cells are unknown)
    on top of a bundle's stage 1 (default: the shipped model's), and write a bundle `analyze --model` reads.

    With `cv` K (0: none) the same fit is first made K times, each without one fold of the clips, and scored on that
    fold: the bundle's config then holds how well the recipe does on clips it never saw (`split.heads.held_out`), beside
    predicting the training folds' mean label. The bundle's own heads are fitted on every clip, as without it.
    """
    import copy
    import warnings

    import pandas as pd

    from .accuracy import _folds, pair_table
    from .analyze import get_bundle
    from .bundle import check_bundle_out, removing_folders, save_bundle
    from .data.labels import read_labels, short_id
    from .errors import SongfeatError, SongfeatWarning, WorkFailed, counted
    from .evaluate import regression_metrics
    from .records import DEFAULT_CACHE, get_records

    def need(n: int, why: str, error: type[SongfeatError] = SongfeatError) -> None:
        if n < 5:
            raise error(labels_csv, f"{counted(n, 'usable labelled clip')}{why}; need at least 5 with audio and one of "
                                    f"{', '.join(TARGETS)}")

    if cv == 1 or cv < 0:
        raise SongfeatError(None, f"--cv must be 0 (no held-out score) or at least 2 folds, got {cv}")
    cfg = cfg or FitConfig()
    # before any clip is analysed (save_bundle would find out only after the fit); the folders it made for `out` go
    # again if the fit is refused, fails or is interrupted
    with removing_folders(check_bundle_out(Path(out))):
        base = get_bundle(base_model)
        _check_base(base)
        labels = read_labels(labels_csv)
        rows, missing = pair_table(labels.frame, audio_dir)
        # nothing is left out in silence: unusable label rows, ids without audio and clips that fail are each named
        for line in labels.unread:
            warnings.warn(line, SongfeatWarning, stacklevel=2)
        for line in labels.dropped_lines():
            warnings.warn(f"label row dropped: {line}", SongfeatWarning, stacklevel=2)
        for line in labels.nulled_lines():  # an out-of-range value: that cell alone is missing
            warnings.warn(f"label value not used: {line}", SongfeatWarning, stacklevel=2)
        if missing:
            warnings.warn(f"{labels_csv}: {counted(len(missing), 'labelled id has', 'labelled ids have')} no audio file in "
                          f"{audio_dir} (e.g. {short_id(missing[0])})",
                          SongfeatWarning, stacklevel=2)
        # the label reader gives every feature a column; only those with values were labelled
        targets = [t for t in TARGETS if t in rows.columns and rows[t].notna().any()]
        # a clip labelled only on other columns (tempo, key, ...) teaches the heads nothing: it is not counted or analysed
        learned = rows[targets].notna().any(axis=1) if targets else pd.Series(False, index=rows.index)
        unlearned = rows.loc[~learned, "track_id"].astype(str).tolist()
        if unlearned and targets:
            warnings.warn(f"{labels_csv}: {counted(len(unlearned), 'clip labels', 'clips label')} none of the learned "
                          f"features, left out (e.g. {short_id(unlearned[0])})",
                          SongfeatWarning, stacklevel=2)
        rows = rows[learned].reset_index(drop=True)
        need(len(rows), f" ({counted(len(labels.dropped), 'label row')} unusable, {len(missing)} without audio"
                        + (f", {len(unlearned)} without a learned label" if unlearned else "") + ")")
        if cv > len(rows):
            raise SongfeatError(None, f"--cv must be at most the number of clips ({len(rows)}), got {cv}")
        recs = get_records(list(rows["path"]), DEFAULT_CACHE if cache is None else cache, True, workers, progress)
        ok = [i for i, r in enumerate(recs) if not isinstance(r, str)]
        failed = [r for r in recs if isinstance(r, str)]
        for r in failed:  # each clip that would not analyse: the command prints it as an error and ends with status 1
            warnings.warn(f"left out: {r}", SongfeatWarning, stacklevel=2)
        need(len(ok), f" ({len(failed)} of {len(recs)} clips failed to analyse)", WorkFailed)
        y = np.full((len(ok), len(TARGETS)), np.nan)
        for t in targets:
            y[:, TARGETS.index(t)] = rows.loc[ok, t].to_numpy(float)
        targets = [t for t in targets if not np.isnan(y[:, TARGETS.index(t)]).all()]  # not only on clips that failed
        # the base bundle's own evidence layout (with its genre table) when it has one, else the layout without genre prior;
        # your heads stand alone: the default's second member (a ridge on the MFCC summary, fitted on its labels) is left out
        lay = nets_layout(base.config.get("evidence_layout") or layout(NO_GENRE_PARTS))
        sc = base.config["scalers"]["numeric"]
        num = np.array([base.numeric_row(recs[i].descriptors) for i in ok], dtype=np.float32)
        num_std = (num - np.array(sc["mean"])) / np.maximum(np.array(sc["std"]), 1e-8)
        for t, why in constant_labels(y, list(TARGETS)).items():  # fitted all the same (no crash, no NaN), but said
            warnings.warn(f"{labels_csv}: {t}: {why}; the heads cannot learn how {t} varies from that, and its "
                          "held-out r is undefined: label clips that differ in it, or leave the column out",
                          SongfeatWarning, stacklevel=2)
        ev = [assemble(recs[i].blocks, lay) for i in ok]
        wts = [recs[i].weights for i in ok]
        columns = part_columns(lay)
        folds = _folds(len(ok), min(cv, len(ok)), cfg.seed) if cv else []
        # the bundle's own heads, fitted on every clip; then each fold's, scored on the clips it left out
        pred, mean_pred, model = held_out_predictions(base, ev, wts, y, num_std, folds, cfg, columns, fit_all=True,
                                                      progress=progress)
        unlabelled = [t for t in TARGETS if t not in targets]
        if unlabelled:  # nothing constrained these heads, which fell to the floor for every song: stage 1 answers instead
            warnings.warn(f"{labels_csv}: no labels for {', '.join(unlabelled)}: the bundle gives stage 1's "
                          "prediction for them (from tempo, loudness, key, mode and metre), as the base model's stage 1 does",
                          SongfeatWarning, stacklevel=2)
        idx = [TARGETS.index(t) for t in targets]
        # (save_bundle writes an undefined figure, the r of a constant label, as null)
        held_out = {"folds": len(folds), "seed": cfg.seed, "model": regression_metrics(y[:, idx], pred[:, idx], targets),
                    "mean_predictor": regression_metrics(y[:, idx], mean_pred[:, idx], targets)} if folds else None
        config = copy.deepcopy({k: v for k, v in base.config.items() if k in ("targets", "numeric_inputs", "numeric_descriptors", "numeric_source",
                                                                               "scalers", "label_means", "format")})
        config.update({"model": "heads", "inputs": ["evidence", "numeric"], "evidence_layout": lay,
                       "hparams": {**base.config.get("hparams", {}), "n_evidence": int(model.z_mean.numel() - len(TARGETS)), "ridge_inputs": 0,
                                   "head_hidden": cfg.hidden, "members": cfg.members,
                                   "residual": [bool(r) for r in model.residual_mask.tolist()]},
                       "split": {"heads": {"fit": cfg.to_dict(), "clips": len(ok), "targets_labelled": targets,
                                           **({"held_out": held_out} if held_out else {})}},
                       "provenance": {"labels": str(labels_csv), "audio": str(audio_dir), "stage1_from": str(base.path),
                                      "heads_clips": {"own": [str(t) for t in rows.loc[ok, "track_id"]]}}})
        from .onnx_export import export_bundle

        try:  # with model.onnx, written beside the weights before they go into place: the bundle analyzes on a lean install too
            path = save_bundle(Path(out), model, config, finish=export_bundle)
        except OSError as e:  # a full disk or a permission: one line, not a traceback; the fit was done, so status 1
            raise WorkFailed(e.filename or out, f"cannot write the bundle ({e.strerror or e})") from None
        return path
