"""A picture of the behaviour check (`songfeat.behaviour.check`): every rule's predicted value against its threshold,
one row per kind of rule, so the margins (how far inside or outside each clip lands) read at a glance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import features
from .behaviour import parse_rules, summary

HOLD, MISS = "#2b6cb0", "#d62728"


def save_plot(table: pd.DataFrame, path: str | Path, half: str | None = "check") -> Path:
    """Draw `table`'s bound rules (one half, or all clips when `half` is None) into a PNG at `path` (written
    atomically): per rule kind, e.g. `speechiness>0.66`, each clip's predicted value, the side the rule allows shaded,
    misses in red and named."""
    from .plotting import pyplot, save_png

    t = table if half is None else table[table["half"] == half]
    t = t[t["value"].notna() & (t["rule"] != "analyzes or fails clearly")]
    t = t[[bool(parse_rules(r)) and parse_rules(r)[0].feature in features.LEARNED for r in t["rule"]]]  # the 0-1 scales
    if t.empty:
        raise ValueError("the table holds no bound rule with a predicted value")
    kinds = sorted(t["rule"].unique(), key=lambda r: (parse_rules(r)[0].feature, r))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(kinds) + 1.4))
    rng = np.random.default_rng(0)  # vertical jitter only, so overlapping clips stay visible
    for row, kind in enumerate(kinds):
        rule = parse_rules(kind)[0]
        lo, hi = (rule.value, 1.0) if rule.op == ">" else (0.0, rule.value)
        ax.add_patch(plt.Rectangle((lo, row - 0.38), hi - lo, 0.76, color="#e6eef7", zorder=0))
        ax.plot([rule.value] * 2, [row - 0.4, row + 0.4], color="#52606d", lw=1, zorder=1)
        g = t[t["rule"] == kind]
        y = row + rng.uniform(-0.22, 0.22, len(g))
        ok = g["holds"].to_numpy(bool)
        x = g["value"].to_numpy(float)
        ax.scatter(x[ok], y[ok], s=22, color=HOLD, zorder=2)
        ax.scatter(x[~ok], y[~ok], s=30, color=MISS, marker="X", zorder=3)
        for j, (xv, yv, f) in enumerate(zip(x[~ok], y[~ok], g["file"].to_numpy()[~ok])):
            ax.annotate(Path(f).stem[:28], (xv, yv), xytext=(4, 5 if j % 2 == 0 else -11), textcoords="offset points",
                        fontsize=7, color=MISS)  # alternate above and below, so neighbouring misses stay readable
    ax.set_yticks(range(len(kinds)), [f"{k}  ({int(t.loc[t['rule'] == k, 'holds'].sum())}/{int((t['rule'] == k).sum())})"
                                      for k in kinds], fontsize=8)
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted value (shaded: the side the rule allows; line: its threshold)")
    s = summary(table, half)
    ax.set_title(f"behaviour clips, {s['half']} half: {s['hold']} of {s['rules']} rules hold "
                 f"({s['clips']} clips; red: misses)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["save_plot"]
