"""A picture of an audio analysis: waveform and loudness, beat/bar ticks, section bands, segment pitch/timbre strips.

matplotlib (Agg, set up by `songfeat.plotting`) is imported only when a picture is drawn, so the analysis itself
never pays for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .analysis import Analysis
from .features import PITCH_NAMES, key_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation

SECTION_COLOURS = ("#dbe9f6", "#fde5c8", "#dcefd9", "#f2dcef", "#f6f3c8", "#d9eef0")
LABEL_INSET_PT = 2.0  # a section's label starts this far inside its band, and ends at least as far before its end
MIN_TICK_PX = 4.0  # beat and bar ticks closer than this (their median spacing) merge into a band: they are thinned out


def _starts(items: list[dict]) -> np.ndarray:
    """The `start` times of beats, bars or sections, in seconds."""
    return np.array([x["start"] for x in items], dtype=np.float64)


def _edges(items: list[dict], duration: float) -> np.ndarray:
    return np.concatenate([_starts(items), [duration]])


def tick_plan(beats: list[dict], bars: list[dict], px_per_second: float) -> tuple[bool, int]:
    """(draw the beat ticks?, draw every how many bars' tick): beats only while they stand MIN_TICK_PX apart, bars
    thinned to every n-th once even they would not. Ticks of a 6-minute song's 700 beats merged into one red band."""

    def spacing(items: list[dict]) -> float:
        # (a zero spacing, which analysis never gives, counts as none to draw rather than a division by zero)
        step = float(np.median(np.diff(_starts(items)))) * px_per_second if len(items) > 1 else np.inf
        return step if step > 0 else np.inf

    return spacing(beats) >= MIN_TICK_PX, max(1, int(np.ceil(MIN_TICK_PX / spacing(bars))))


def _x_label(show_beats: bool, bar_step: int) -> str:
    """The x-axis label, saying what the ticks drawn by `tick_plan`'s decision mean."""
    bars = "bars" if bar_step == 1 else f"one bar in {bar_step}"
    ticks = f"red ticks: beats, blue: {bars}," if show_beats else f"blue ticks: {bars}; beats too close to draw;"
    return f"seconds ({ticks} green dashes: fade-in end / fade-out start)"


def _fit_labels(fig: Figure, ax: Axes, labels: list[tuple[Annotation, tuple[str, ...], float]]) -> None:
    """Shorten each section's label (text, shorter forms, band end in s) to the first form that ends inside its band,
    and hide it where none does: the labels of a 10-minute song's 15 sections overprinted one another."""
    renderer = fig.canvas.get_renderer()
    pad = LABEL_INSET_PT * fig.dpi / 72.0
    for text, shorter, end in labels:
        limit = ax.transData.transform((end, 0.0))[0] - pad
        for form in shorter:
            if text.get_window_extent(renderer).x1 <= limit:
                break
            text.set_text(form)
        text.set_visible(bool(text.get_window_extent(renderer).x1 <= limit))


def save_plot(analysis: Analysis, path: str | Path, title: str | None = None) -> Path:
    """Draw `analysis` into a PNG at `path` (written atomically) and return the path.

    Raises OutputError (an OSError) before drawing when `path` is a folder, a device or an audio file (the input, say).
    """
    from .output import check_output
    from .plotting import PNG_DPI, pyplot, save_png

    check_output(Path(path), "the picture")
    plt = pyplot()
    r, fr = analysis.result, analysis.frames
    tr = r["track"]
    dur = float(tr["duration"])
    t = fr.times
    fig, axes = plt.subplots(3, 1, figsize=(12, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1.3, 1.3]},
                             dpi=PNG_DPI)  # as saved, so the labels are fitted to their bands as they will show
    ax, axp, axt = axes

    # sections as coloured bands, waveform envelope, loudness, beats and bars
    labels = []
    for i, s in enumerate(r["sections"]):
        end = s["start"] + s["duration"]
        for a in axes:
            a.axvspan(s["start"], end, color=SECTION_COLOURS[i % len(SECTION_COLOURS)], zorder=0, lw=0)
        key = "no key" if s["key"] < 0 else f"{PITCH_NAMES[s['key']]} {'maj' if s['mode'] == 1 else 'min'}"
        tempo = f"{s['tempo']:.0f} BPM" if s["tempo"] > 0 else "no beat"
        text = ax.annotate(f"section {i + 1}: {key}, {tempo}, {s['loudness']:.1f} dB", (s["start"], 0.98),
                           xycoords=ax.get_xaxis_transform(), xytext=(LABEL_INSET_PT, 0), textcoords="offset points",
                           fontsize=7, va="top", ha="left", zorder=5, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1})
        labels.append((text, (f"{i + 1}: {key}, {tempo}", str(i + 1)), end))
    ax.fill_between(t, -fr.peak, fr.peak, color="#8c8c8c", lw=0, zorder=2)
    ax.set_ylim(-1.05, 1.25)
    ax.set_ylabel("waveform")
    lax = ax.twinx()
    lax.plot(t, fr.level_db, color="#e06000", lw=0.7, zorder=4)
    lax.set_ylim(-62, 2)
    lax.set_ylabel("loudness (dBFS)", color="#e06000")
    for x in (tr["end_of_fade_in"], tr["start_of_fade_out"]):
        ax.axvline(x, color="#2ca02c", ls="--", lw=1, zorder=3)
    ax.set_title(title or "audio analysis", fontsize=10, loc="left")
    beat = f"{tr['tempo']:.1f} BPM · {tr['time_signature']}/4" if tr["tempo"] > 0 else "no beat"
    ax.text(1.0, 1.02, f"{beat} · "
            f"{key_name(tr['key'], tr['mode']) or 'no key'} · "
            f"{tr['loudness']:.1f} dB · {len(r['bars'])} bars, {len(r['beats'])} beats, {len(r['segments'])} segments",
            fontsize=8, ha="right", transform=ax.transAxes)

    # segment strips: pitches as they are (0..1), timbre with each dimension scaled to its spread
    segs = r["segments"]
    if segs:
        edges = _edges(segs, dur)
        pitches = np.array([s["pitches"] for s in segs]).T
        axp.pcolormesh(edges, np.arange(13), pitches, cmap="magma", vmin=0, vmax=1, shading="flat")
        timbre = np.array([s["timbre"] for s in segs]).T
        z = (timbre - timbre.mean(1, keepdims=True)) / (timbre.std(1, keepdims=True) + 1e-9)
        axt.pcolormesh(edges, np.arange(13), z, cmap="coolwarm", vmin=-2.5, vmax=2.5, shading="flat")
    axp.set_yticks(np.arange(12) + 0.5, PITCH_NAMES, fontsize=6)
    axp.set_ylabel("pitches")
    axt.set_yticks(np.arange(12) + 0.5, [str(i + 1) for i in range(12)], fontsize=6)
    axt.set_ylabel("timbre")
    axt.set_xlabel(_x_label(True, 1))  # as tall as the one set once the ticks are drawn, below
    axt.set_xlim(0, dur)
    fig.tight_layout()
    # beat and bar ticks, as many as stand apart at the width the axes have once laid out
    show_beats, bar_step = tick_plan(r["beats"], r["bars"], ax.get_window_extent().width / max(dur, 1e-9))
    if show_beats:
        ax.vlines(_starts(r["beats"]), 0.0, 0.06, transform=ax.get_xaxis_transform(), color="#d62728",
                  lw=0.6, zorder=3, label="beats")
    ax.vlines(_starts(r["bars"])[::bar_step], 0.0, 0.14, transform=ax.get_xaxis_transform(), color="#1f3b99",
              lw=1.4, zorder=3, label="bars")
    axt.set_xlabel(_x_label(show_beats, bar_step))
    _fit_labels(fig, ax, labels)
    return save_png(fig, path)
