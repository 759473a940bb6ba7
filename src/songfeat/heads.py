"""Fitting the listening heads: evidence rows, interval targets, and a deterministic torch fit.

Targets are intervals [lo, hi] per clip and feature, so one loss covers both kinds of knowledge:
a Spotify (or Echo Nest) label is the point interval [y, y]; a behaviour rule from Spotify's
definitions on a *fitting-half* clip is a bound with a margin (speechiness > 0.66 becomes
[0.66 + MARGIN, 1]); an unknown feature is [0, 1] and costs nothing. The loss is the distance of the
prediction to its interval (`FitConfig.loss`: absolute by default, as MAE scores it; or squared), each clip
weighing the same whatever its window count.

Nothing here reads files or bundles from disk: the recipes that fit heads are `songfeat.default_model` (the shipped
model, with `songfeat.sources`) and `songfeat.own_heads` (`train-heads` on your own labelled audio).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import features  # torch is imported inside the fitting functions: analyze calls assemble/layout without it
from .runtime import torch_threads

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

    with torch_threads(1):
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


def clip_rows(evidence: list[np.ndarray], weights: list[np.ndarray], numeric_std: np.ndarray):
    """Window rows of clips: evidence [R, D], numeric [R, F] (each clip's row once per window), clip index [R], weight [R]
    (each clip's window weights divided by their sum, so every clip weighs the same)."""
    idx = np.concatenate([np.full(len(x), i) for i, x in enumerate(evidence)])
    return np.concatenate(evidence), numeric_std[idx], idx, np.concatenate([w / w.sum() for w in weights])


def fit_clips(bundle, evidence: list[np.ndarray], weights: list[np.ndarray], numeric_std: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, cfg: FitConfig, columns: list[str] | None = None, feature_weights: np.ndarray | None = None):
    """Heads over the bundle's stage 1 fitted on clips (each clip's evidence rows [W, D] and window weights [W], its
    numeric_std, lo, hi and `feature_weights` rows per clip), every clip weighing the same: the one fit of
    `sources.fit_on` and `train-heads`."""
    ev, num, idx, w = clip_rows(evidence, weights, numeric_std)
    model = new_heads(bundle, ev.shape[1], cfg)
    fit_heads(model, ev, num, lo[idx], hi[idx], w, cfg, columns,
              feature_weights=None if feature_weights is None else feature_weights[idx])
    model.eval()
    return model


def new_heads(bundle, n_evidence: int, cfg: FitConfig):
    """A fresh heads model whose stage 1 is the bundle's (same recipe, same weights)."""
    from .models.heads import Heads

    hp = bundle.config.get("hparams", {})
    m = Heads(len(TARGETS), n_inputs=hp.get("n_inputs", len(features.MEASURED_NUMERIC_INPUTS)), hidden=tuple(hp.get("hidden", (64, 32))),
              n_evidence=n_evidence, head_hidden=cfg.hidden, members=cfg.members, residual=cfg.residual_mask())
    m.base.load_state_dict(bundle.model.base.state_dict())
    m.eval()
    return m


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


__all__ = ["FitConfig", "fit_heads", "fit_clips", "clip_rows", "predict_rows", "new_heads", "keep_stage1", "assemble",
           "layout", "intervals_from_labels", "intervals_from_rules", "rule_interval", "catalogue_intervals",
           "catalogue_region", "nets_layout", "DEFAULT_PARTS", "NO_GENRE_PARTS", "NO_TAGGER_PARTS", "RIDGE_PARTS", "TARGETS"]
