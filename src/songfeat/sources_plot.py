"""A picture of the leave-one-source-out table (`songfeat.sources.evaluate_sources`): how far off each model is on
each held-out source, and which way the heads lean per feature, where the markdown tables take a while to read."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sources import columns

BAR_COLOURS = {"heads": "#2b6cb0", "heads_alone": "#8fb3e0", "previous_default": "#dd8452", "fold_mean": "#9aa5b1", "catalogue_mean": "#cbd2d9"}
SOURCE_NAMES = {"forro": "forró", "poprock": "pop/rock", "older": "older", "fma": "FMA (Echo Nest)"}


def save_plot(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Draw `result` into a PNG at `path` (written atomically): left, average MAE per held-out source and model
    (lower is better); right, the shipped model's bias per source and feature (mean prediction minus label)."""
    from .plotting import pyplot, save_png

    plt = pyplot()
    srcs = list(result["sources"])
    targets = list(result["targets"])
    if not srcs:
        raise ValueError("the result holds no held-out source")
    fig, (ax, axb) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.05, 1.35]})

    x = np.arange(len(srcs))
    cols = columns(result)
    width = 0.8 / len(cols)
    for i, (key, label) in enumerate(cols.items()):
        maes = [result["sources"][s]["learned"][key]["average"]["mae"] for s in srcs]
        bars = ax.bar(x + (i - (len(cols) - 1) / 2) * width, maes, width, label=label, color=BAR_COLOURS.get(key))
        if key == "heads":
            ax.bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
    ax.set_xticks(x, [f"{SOURCE_NAMES.get(s, s)}\n{result['sources'][s]['n']} clips" for s in srcs])
    ax.set_ylabel("average MAE, seven learned features")
    ax.set_title("held out: each source in turn (lower is better)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)

    bias = np.array([[result["sources"][s]["learned"]["heads"]["targets"][t].get("bias", np.nan) for t in targets] for s in srcs])
    lim = max(0.05, float(np.nanmax(np.abs(bias))) if np.isfinite(bias).any() else 0.05)
    im = axb.imshow(bias, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (r, c), v in np.ndenumerate(bias):
        if np.isfinite(v):
            axb.text(c, r, f"{v:+.2f}", ha="center", va="center", fontsize=8, color="white" if abs(v) > 0.6 * lim else "black")
    axb.set_xticks(range(len(targets)), targets, rotation=30, ha="right", fontsize=8)
    axb.set_yticks(range(len(srcs)), [SOURCE_NAMES.get(s, s) for s in srcs], fontsize=8)
    axb.set_title("shipped model's bias: mean prediction minus label (red: too high)", fontsize=10)
    fig.colorbar(im, ax=axb, fraction=0.04, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["save_plot"]
