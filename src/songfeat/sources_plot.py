"""Pictures of the leave-one-source-out table (`songfeat.sources.evaluate_sources`): how far off each model is on
each held-out source and which way the heads lean per feature (`save_plot`), and every held-out prediction against
its label (`save_scatter`), where the markdown tables take a while to read."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sources import columns

SOURCE_COLOURS = {"forro": "#2b6cb0", "poprock": "#dd8452", "older": "#55a868", "fma": "#8172b2"}
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


def save_scatter(result: dict, path: str | Path, model: str = "heads") -> Path:
    """Draw every held-out clip's prediction by `model` against its label, one panel per learned feature, coloured by
    source, with the identity line and the least-squares slope of prediction on label (1 = no shrinkage towards the
    training centre). Needs a result with per-clip `predictions` and `labels` (as `evaluate_sources` returns)."""
    from .plotting import pyplot, save_png

    plt = pyplot()
    srcs = [s for s in result["sources"] if "predictions" in result["sources"][s]]
    if not srcs:
        raise ValueError("the result holds no per-clip predictions")
    targets = list(result["targets"])
    cols = 4
    rows = -(-len(targets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for j, t in enumerate(targets):
        ax = axes[j // cols][j % cols]
        ys, ps = [], []
        for s in srcs:
            y = np.asarray(result["sources"][s]["labels"], dtype=float)[:, j]
            p = np.asarray(result["sources"][s]["predictions"][model], dtype=float)[:, j]
            ok = np.isfinite(y) & np.isfinite(p)
            ax.scatter(y[ok], p[ok], s=9, alpha=0.75, color=SOURCE_COLOURS.get(s), label=SOURCE_NAMES.get(s, s), linewidths=0)
            if s != "fma":  # Echo Nest's labels are another annotator's: the slope is Spotify's previews only
                ys.append(y[ok])
                ps.append(p[ok])
        ax.plot([0, 1], [0, 1], color="#9aa5b1", lw=0.8)
        y, p = (np.concatenate(ys), np.concatenate(ps)) if ys else (np.zeros(0), np.zeros(0))
        note = f"slope {np.polyfit(y, p, 1)[0]:.2f}" if y.size > 2 and np.ptp(y) > 0 else ""
        ax.set_title(f"{t}  {note}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
        if j % cols == 0:
            ax.set_ylabel("held-out prediction", fontsize=8)
        if j // cols == rows - 1:
            ax.set_xlabel("label (Spotify; FMA: Echo Nest)", fontsize=8)
    for k in range(len(targets), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    spare = axes[-1][-1] if len(targets) < rows * cols else None
    (spare or fig).legend(handles, labels, loc="center", fontsize=9, frameon=False, markerscale=2)
    fig.suptitle("each clip predicted with its source held out (slope: previews only; 1 = no pull towards the centre)",
                 fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["save_plot", "save_scatter"]
