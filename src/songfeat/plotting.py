"""What every songfeat picture shares: matplotlib on the Agg backend (no screen needed) and an atomic PNG write.

matplotlib is imported only here and by the picture modules, so analysis itself never pays for it.
"""
from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` as PNG atomically (a partial file never takes the name), close it, return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    os.replace(tmp, out)
    return out


__all__ = ["pyplot", "save_png"]
