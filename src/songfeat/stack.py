"""The stack model's shared parts (`models.stack.Stack`, the previous default: stage 1's numeric MLP plus a ridge
correction from timbre statistics): stage 1's outputs for a bundle, and the ridge fit (stage 1's training rows,
Spotify's catalogue, lie at `genre_prior.SPOTIFY_CATALOGUE` in the shared data).

Below everything that fits or scores them: the held-out tables' ridge member (`sources`) and `evaluate-audio --cv` of
a stack bundle (`accuracy`) read them from here, and the recipe (`default_model`) its heads' front-end spec.
"""
from __future__ import annotations

import numpy as np
import torch

from .bundle import Bundle
from .frontend import MFCC_DENSE

HEAD_SPEC = MFCC_DENSE  # the seed's MFCC without its skipped half: every sample is read
ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 25))  # ridge strengths tried by cross-validation


def base_outputs(bundle: Bundle, numeric: np.ndarray) -> np.ndarray:
    """Stage 1's predictions for raw numeric inputs [N, F] -> [N, T], standardised as the bundle says."""
    with torch.no_grad():
        x = torch.from_numpy(bundle.normalise("numeric", numeric))
        return bundle.model.base(numeric=x).numpy()


def head_inputs(bundle: Bundle, frontends: list[np.ndarray], numeric: np.ndarray) -> np.ndarray:
    """Stage 2's inputs per clip (first window's front-end) -> [N, 2C + T]."""
    base = torch.from_numpy(base_outputs(bundle, numeric))
    front = torch.from_numpy(np.stack([f[0] for f in frontends]))
    return bundle.model.head_inputs(front, base).numpy()


def fit_head(z: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Ridge per target on standardised z with alpha chosen by leave-one-out CV; returns (W, b, mean, std, alphas)."""
    from sklearn.linear_model import RidgeCV

    mean, std = z.mean(0), z.std(0) + 1e-8
    r = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit((z - mean) / std, residual)
    return r.coef_.astype(np.float32), r.intercept_.astype(np.float32), mean, std, [float(a) for a in np.atleast_1d(r.alpha_)]


__all__ = ["HEAD_SPEC", "ALPHAS", "base_outputs", "head_inputs", "fit_head"]
