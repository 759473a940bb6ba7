"""What every songfeat picture shares: matplotlib on the Agg backend (no screen needed) and an atomic PNG write.

matplotlib is imported only here and by the picture modules, so analysis itself never pays for it.
"""
from __future__ import annotations

from pathlib import Path

from . import atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PNG_DPI = 110  # the pictures' resolution; a figure drawn at it measures its text as the PNG shows it


def save_png(fig, path: str | Path, dpi: int = PNG_DPI) -> Path:
    """Write `fig` to `path` as PNG atomically (a partial file never takes the name), close it, return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.temp_beside(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
        pyplot().close(fig)
    return out


__all__ = ["PNG_DPI", "pyplot", "save_png"]
