"""The behaviour clips (../shared/data/behaviour): rules from Spotify's definitions, a fixed split, a checker.

Each clip's `expectation` holds rules such as `speechiness>0.66; instrumentalness<0.5`; every
`<feature><op><number>` in it is a rule (the seed's count: 118 over 48 clips), other text is ignored.
The clips are split once, deterministically and stratified by category, into a **fitting** half
(pseudo-labels for the heads may come from it) and a **checking** half (claims come only from it):
inside each category the files are ordered by the SHA-256 of their name and alternate check, fit,
check, ... (so the checking half gets the odd one). The split is a pure function of the manifest.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import features
from .errors import SongfeatError

MANIFEST = Path("behaviour") / "manifest.csv"
# robustness clips (silence, noise, field recordings, single hits) resemble no release in Spotify's catalogue: only
# their own rules say anything about them, never where the catalogue's tracks lie (`region_table`, `heads.catalogue_region`)
NO_REGION_CATEGORIES = ("other_robustness",)
RULE = re.compile(r"\b(" + "|".join(features.LEARNED + ("tempo", "loudness")) + r")\s*([<>])\s*(-?\d*\.?\d+)")


@dataclass(frozen=True)
class Rule:
    """One bound, e.g. speechiness > 0.66."""

    feature: str
    op: str
    value: float

    def holds(self, x: float | None) -> bool:
        if x is None or x != x:
            return False
        return x > self.value if self.op == ">" else x < self.value

    def __str__(self) -> str:
        return f"{self.feature}{self.op}{self.value:g}"


def parse_rules(expectation: str) -> list[Rule]:
    """Every `<feature><op><number>` in an expectation string, in order."""
    return [Rule(f, op, float(v)) for f, op, v in RULE.findall(str(expectation or ""))]


def read_manifest(shared: str | Path) -> pd.DataFrame:
    """The manifest with absolute `path`, parsed `rules` and the `half` ('fit' or 'check') of each clip."""
    root = Path(shared) / "behaviour"
    if not (Path(shared) / MANIFEST).is_file():
        raise SongfeatError(Path(shared) / MANIFEST, "no such file (--shared names the shared data folder, with behaviour/ in it)")
    m = pd.read_csv(Path(shared) / MANIFEST)
    m["path"] = [str(root / f) for f in m["file"]]
    m["rules"] = [parse_rules(e) for e in m["expectation"]]
    m["half"] = split(m)
    return m


def split(manifest: pd.DataFrame) -> list[str]:
    """'check' or 'fit' per row: per category, files ordered by SHA-256 of the name alternate check, fit, ..."""
    half = {}
    for _, g in manifest.groupby("category", sort=True):
        order = sorted(g["file"], key=lambda f: hashlib.sha256(str(f).encode()).hexdigest())
        for i, f in enumerate(order):
            half[f] = "check" if i % 2 == 0 else "fit"
    return [half[f] for f in manifest["file"]]


def check(manifest: pd.DataFrame, outputs: dict[str, dict | str]) -> pd.DataFrame:
    """One row per rule: clip, category, half, rule, predicted value, holds; `outputs` maps path -> features or error."""
    rows = []
    for _, r in manifest.iterrows():
        out = outputs.get(r["path"])
        err = out if isinstance(out, str) else None
        for rule in r["rules"]:
            v = None if err or out is None else out.get(rule.feature)
            rows.append({"file": r["file"], "category": r["category"], "half": r["half"], "rule": str(rule),
                         "value": v, "holds": rule.holds(v), "error": err})
        if not r["rules"]:  # robustness clips without a bound: they must analyze or fail with a clear error
            clear = err is None or (": " in err and "Traceback" not in err and "analysis failed" not in err)
            rows.append({"file": r["file"], "category": r["category"], "half": r["half"], "rule": "analyzes or fails clearly",
                         "value": None, "holds": bool(out is not None and clear), "error": err})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, half: str | None = "check") -> dict:
    """Rules holding per category and overall (on one half, or all clips when half is None)."""
    t = table if half is None else table[table["half"] == half]
    bounds = t[t["rule"] != "analyzes or fails clearly"]
    per_cat = {c: {"hold": int(g["holds"].sum()), "rules": len(g)} for c, g in bounds.groupby("category")}
    return {"half": half or "all", "clips": int(t["file"].nunique()), "rules": len(bounds), "hold": int(bounds["holds"].sum()),
            "share": float(bounds["holds"].mean()) if len(bounds) else float("nan"), "categories": per_cat,
            "robustness": {"clips": int((t["rule"] == "analyzes or fails clearly").sum()),
                           "ok": int(t.loc[t["rule"] == "analyzes or fails clearly", "holds"].sum())}}


def to_markdown(table: pd.DataFrame, half: str | None = "check") -> str:
    """Per-clip and per-category report of which rules hold."""
    s = summary(table, half)
    t = table if half is None else table[table["half"] == half]
    lines = [f"Behaviour clips ({s['half']} half: {s['clips']} clips): **{s['hold']} of {s['rules']}** rules hold "
             f"({s['share']:.0%}); robustness clips without bounds analysed or failed clearly: "
             f"{s['robustness']['ok']} of {s['robustness']['clips']}.", "",
             "| category | rules holding |", "|---|---|"]
    lines += [f"| {c} | {v['hold']} / {v['rules']} |" for c, v in s["categories"].items()]
    lines += ["", "| clip | half | rule | value | holds |", "|---|---|---|---|---|"]
    for _, r in t.iterrows():
        val = "error: " + str(r["error"]).split(": ", 1)[-1][:60] if isinstance(r["error"], str) else ("–" if r["value"] is None else f"{r['value']:.3f}")
        lines.append(f"| {Path(r['file']).name} | {r['half']} | {r['rule']} | {val} | {'yes' if r['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def analyze_clips(shared: str | Path, model: str | Path | None = None, workers: int = 1) -> tuple[pd.DataFrame, dict]:
    """Analyze every behaviour clip with `songfeat analyze`'s own path -> (manifest, path -> features or error line)."""
    from .analyze import analyze_many

    m = read_manifest(shared)
    return m, {o.path: (o.features if o.error is None else o.error) for o in analyze_many(m["path"], model=model, workers=workers)}


def evaluate_behaviour(shared: str | Path, model: str | Path | None = None, workers: int = 1) -> pd.DataFrame:
    """Analyze every behaviour clip and check every rule."""
    return check(*analyze_clips(shared, model, workers))


def region_table(manifest: pd.DataFrame, outputs: dict, catalogue: pd.DataFrame, half: str | None = "check") -> pd.DataFrame:
    """Per music or speech clip and learned feature: the prediction beside the 10th-90th percentile of Spotify's
    catalogue tracks meeting all the clip's rules (`heads.catalogue_region`), and whether it lies inside.

    A sanity check for features no rule names (a piano piece's danceability, an audiobook's liveness): a model
    that drew from Spotify's own distribution would land inside about 80% of the time, not always.
    """
    from .heads import catalogue_region

    rows = []
    m = manifest if half is None else manifest[manifest["half"] == half]
    for _, r in m.iterrows():
        out = outputs.get(r["path"])
        if r["category"] in NO_REGION_CATEGORIES or not isinstance(out, dict):
            continue
        for t, (lo, hi) in catalogue_region(catalogue, r["rules"]).items():
            v = out.get(t)
            rows.append({"file": r["file"], "category": r["category"], "feature": t, "value": v, "q10": lo, "q90": hi,
                         "inside": v is not None and lo <= v <= hi})
    return pd.DataFrame(rows, columns=["file", "category", "feature", "value", "q10", "q90", "inside"])


def region_summary(table: pd.DataFrame) -> dict:
    """`region_table`'s counts: {"inside", "predictions", "by_feature": feature -> [inside, predictions]}."""
    return {"inside": int(table["inside"].sum()), "predictions": len(table),
            "by_feature": {t: [int(g["inside"].sum()), len(g)] for t, g in table.groupby("feature", sort=False)}}


def region_markdown(table: pd.DataFrame) -> str:
    """How many predictions lie where the catalogue puts such music, per feature, and the ones outside."""
    if table.empty:
        return "No music or speech clip with a catalogue region.\n"
    s = region_summary(table)
    lines = [f"Where Spotify's catalogue puts such music (10th-90th percentile of its tracks meeting each clip's rules): "
             f"**{s['inside']} of {s['predictions']}** predictions inside; a model drawing from Spotify's own "
             "distribution would land inside about 80% of the time.", "",
             "| feature | inside |", "|---|---|"]
    lines += [f"| {t} | {a} / {b} |" for t, (a, b) in s["by_feature"].items()]
    lines += ["", "| clip | feature | value | catalogue 10th-90th |", "|---|---|---|---|"]
    for _, r in table[~table["inside"]].iterrows():
        lines.append(f"| {Path(r['file']).name} | {r['feature']} | {r['value']:.3f} | {r['q10']:.2f}-{r['q90']:.2f} |")
    return "\n".join(lines) + "\n"


__all__ = ["Rule", "parse_rules", "read_manifest", "split", "check", "summary", "to_markdown", "evaluate_behaviour",
           "analyze_clips", "region_table", "region_summary", "region_markdown", "NO_REGION_CATEGORIES"]
