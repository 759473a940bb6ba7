"""Heads on your own labels (`songfeat train-heads`): fit the listening heads on a labelled audio folder over a bundle's
stage 1, score the recipe on clips it did not fit, and write a bundle `analyze --model` reads.

The fitting itself is `songfeat.heads`; the K-fold loop here (`held_out_predictions`) is also what
`evaluate-audio --cv` runs on a heads bundle (`accuracy._heads_cv`), so both commands give the same figures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluate import baseline_metrics, constant_labels, mean_labels
from .heads import (NO_GENRE_PARTS, TARGETS, FitConfig, assemble, fit_clips, intervals_from_labels, keep_stage1, layout,
                    nets_layout, new_heads, part_columns, predict_rows)


def _check_base(base) -> None:
    """Refuse a --model whose stage 1 the heads cannot sit on (another family's bundle, other targets, inputs read from
    labels) before any clip is analysed, in one line instead of a KeyError after the whole analysis."""
    from .errors import SongfeatError

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

CV_FOLDS = 5  # train-heads scores its recipe on clips it did not fit, in this many folds of the user's clips (--cv)
# the prefixes of train_heads' warnings that the CLI sorts by: rows dropped, cells not used, clips that would not analyse
DROPPED, NOT_USED, LEFT_OUT = "label row dropped: ", "label value not used: ", "left out: "

def _fit_labelled(base, evidence: list[np.ndarray], weights: list[np.ndarray], y: np.ndarray, numeric_std: np.ndarray,
                  cfg: FitConfig, columns: list[str]):
    """Heads fitted on clips labelled `y` [N, T] (NaN: unknown) over the base's stage 1, from each clip's evidence rows
    [W, D] and window weights [W] (each clip weighing the same: `heads.fit_clips`, as `sources.fit_on`); a feature none
    of these clips is labelled with gives stage 1's prediction (its unconstrained heads fell to the floor for every song)."""
    lo, hi = intervals_from_labels(y)
    model = fit_clips(base, evidence, weights, numeric_std, lo, hi, cfg, columns)
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
    (each feature's mean label over the fold's training clips, NaN where none has it: `evaluate.baseline_metrics` scores
    it on the other clips) and, with `fit_all`, the heads
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


def train_heads(labels_csv, audio_dir, out, base_model=None, cache=None, workers: int = 1, progress: bool = True,
                cfg: FitConfig | None = None, cv: int = CV_FOLDS) -> tuple[Path, dict]:
    """Fit heads on your own labelled audio (any subset of the seven features; missing cells are unknown)
    on top of a bundle's stage 1 (default: the shipped model's), and write a bundle `analyze --model` reads; returns its
    path and its config's `split.heads` (the clips fitted on and, with `cv`, the held-out scores the CLI prints).

    With `cv` K (0: none) the same fit is first made K times, each without one fold of the clips, and scored on that
    fold: the bundle's config then holds how well the recipe does on clips it never saw (`split.heads.held_out`), beside
    predicting the training folds' mean label. The bundle's own heads are fitted on every clip, as without it.
    """
    import copy
    import warnings

    import pandas as pd

    from .analyze import get_bundle
    from .bundle import FITTED_CONTENT, write_bundle_or_fail, writing_bundle
    from .data.labels import pair_table, read_labels, short_id
    from .data.splits import index_folds
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
    with writing_bundle(Path(out)):
        base = get_bundle(base_model)
        _check_base(base)
        labels = read_labels(labels_csv)
        rows, missing = pair_table(labels.frame, audio_dir)
        # nothing is left out in silence: unusable label rows, ids without audio and clips that fail are each named
        for line in labels.unread:
            warnings.warn(line, SongfeatWarning, stacklevel=2)
        for line in labels.dropped_lines():
            warnings.warn(f"{DROPPED}{line}", SongfeatWarning, stacklevel=2)
        for line in labels.nulled_lines():  # an out-of-range value: that cell alone is missing
            warnings.warn(f"{NOT_USED}{line}", SongfeatWarning, stacklevel=2)
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
            warnings.warn(f"{LEFT_OUT}{r}", SongfeatWarning, stacklevel=2)
        need(len(ok), f" ({len(failed)} of {len(recs)} clips failed to analyse)", WorkFailed)
        y = np.full((len(ok), len(TARGETS)), np.nan)
        for t in targets:
            y[:, TARGETS.index(t)] = rows.loc[ok, t].to_numpy(float)
        targets = [t for t in targets if not np.isnan(y[:, TARGETS.index(t)]).all()]  # not only on clips that failed
        # the base bundle's own evidence layout (with its genre table) when it has one, else the layout without genre prior;
        # your heads stand alone: the default's second member (a ridge on the MFCC summary, fitted on its labels) is left out
        lay = nets_layout(base.config.get("evidence_layout") or layout(NO_GENRE_PARTS))
        num = np.array([base.numeric_row(recs[i].descriptors) for i in ok], dtype=np.float32)
        # standardised as analysis and `evaluate-audio --cv` do (float32); in float64 the same folds fitted other heads,
        # and the two commands' held-out tables differed in the third digit
        num_std = base.normalise("numeric", num)
        for t, why in constant_labels(y, list(TARGETS)).items():  # fitted all the same (no crash, no NaN), but said
            warnings.warn(f"{labels_csv}: {t}: {why}; the heads cannot learn how {t} varies from that, and its "
                          "held-out r is undefined: label clips that differ in it, or leave the column out",
                          SongfeatWarning, stacklevel=2)
        ev = [assemble(recs[i].blocks, lay) for i in ok]
        wts = [recs[i].weights for i in ok]
        columns = part_columns(lay)
        folds = index_folds(len(ok), min(cv, len(ok)), cfg.seed) if cv else []
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
                    "mean_predictor": baseline_metrics(y[:, idx], mean_pred[:, idx], targets)} if folds else None
        config = copy.deepcopy({k: v for k, v in base.config.items() if k in ("targets", "numeric_inputs", "numeric_descriptors", "numeric_source",
                                                                               "scalers", "label_means", "format")})
        config.update({"model": "heads", "inputs": ["evidence", "numeric"], "evidence_layout": lay,
                       "hparams": {**base.config.get("hparams", {}), "n_evidence": int(model.z_mean.numel() - len(TARGETS)), "ridge_inputs": 0,
                                   "head_hidden": cfg.hidden, "members": cfg.members,
                                   "residual": [bool(r) for r in model.residual_mask.tolist()]},
                       "split": {"heads": {"fit": cfg.to_dict(), "clips": len(ok), "targets_labelled": targets,
                                           **({"held_out": held_out} if held_out else {})}},
                       "provenance": {"labels": str(labels_csv), "audio": str(audio_dir), "stage1_from": str(base.path),
                                      "heads_clips": {"own": [str(t) for t in rows.loc[ok, "track_id"]]},
                                      FITTED_CONTENT: {"own": [recs[i].content_id for i in ok]}}})
        from .onnx_export import export_bundle

        # with model.onnx, written beside the weights before they go into place: it analyzes on a lean install too
        path = write_bundle_or_fail(Path(out), model, config, finish=export_bundle)
        return path, config["split"]["heads"]


__all__ = ["train_heads", "held_out_predictions", "CV_FOLDS"]
