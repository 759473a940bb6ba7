"""The behaviour clips (../shared/data/behaviour): rules from Spotify's definitions, a fixed split, a checker.

Each clip's `expectation` holds rules such as `speechiness>0.66; instrumentalness<0.5`; every
`<feature><op><number>` in it is a rule (the seed's count: 118 over 48 clips), other text is ignored.
The clips are split once, deterministically and stratified by category, into a **fitting** half
(pseudo-labels for the heads may come from it) and a **checking** half (claims come only from it):
inside each category the files are ordered by the SHA-256 of their name and alternate check, fit,
check, ... (so the checking half gets the odd one). The split is a pure function of the manifest.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import features
from .errors import SongfeatError, no_folder

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


# a word right before a comparison: a rule, or a mistyped one ("speechines>0.66", "energy>=0.5", "energy>high")
RULE_LIKE = re.compile(r"\b([A-Za-z_]\w*)\s*([<>=!]+)\s*([^\s;,()]*)")


def check_rules(expectation: str) -> str | None:
    """Why an expectation holds a comparison that is not a rule (an unknown feature, another operator, no number, a
    learned feature's bound outside 0-1, which no value can meet), or None: such text was silently ignored, and the
    clip's rule never checked."""
    known = features.LEARNED + ("tempo", "loudness")
    for m in RULE_LIKE.finditer(str(expectation or "")):
        if not set("<>") & set(m.group(2)) and m.group(1) not in known:
            continue  # prose such as "content = sea waves"
        text = m.group(0).strip().rstrip(".:")  # a rule may end a sentence
        rule = parse_rules(text)
        if len(rule) != 1 or RULE.fullmatch(text) is None:
            return f"{text!r} is not a rule: write <feature><'<' or '>'><number>, the feature one of {', '.join(known)}"
        r = rule[0]
        if r.feature in features.LEARNED and not 0.0 <= r.value <= 1.0:
            return f"{text!r}: {r.feature} lies in 0-1, so no value can meet this bound"
    return None


def read_manifest(shared: str | Path) -> pd.DataFrame:
    """The manifest with absolute `path`, parsed `rules` and the `half` ('fit' or 'check') of each clip.

    A manifest that cannot be what it says is refused in one line naming the file and its line: unreadable text, no
    file, category or expectation column, an empty cell, a file listed twice, missing or outside behaviour/, or a
    comparison that is not a rule (silently dropped, it would turn a clip into a robustness clip that passes).
    """
    root = Path(shared) / "behaviour"
    file = Path(shared) / MANIFEST
    if not Path(shared).is_dir():  # a file was refused as "<file>/behaviour/manifest.csv: no such file"
        raise SongfeatError(shared, f"{no_folder(shared)} (--shared names the shared data folder, with behaviour/ in it)")
    if not file.is_file():
        raise SongfeatError(file, "no such file (--shared names the shared data folder, with behaviour/ in it)")
    try:
        text = file.read_text(encoding="utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        with warnings.catch_warnings():  # the empty cells past the header that pandas warns of are checked below
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            m = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, UnicodeDecodeError, ValueError) as e:
        raise SongfeatError(file, f"not a readable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for i, row in enumerate(rows[1:], start=2):  # pandas would drop the extra cells: a comma in an unquoted expectation
        if any(c.strip() for c in row[len(rows[0]):]):
            raise SongfeatError(file, f"line {i}: {len(row)} cells under {len(rows[0])} columns (quote an expectation that "
                                      "holds a comma)")
    absent = [c for c in ("file", "category", "expectation") if c not in m.columns]
    if absent:
        raise SongfeatError(file, f"no {', '.join(absent)} column (columns: {', '.join(map(str, m.columns))})")
    if m.empty:
        raise SongfeatError(file, "lists no clips")
    seen: dict[str, int] = {}
    for i, r in enumerate(m.to_dict("records")):
        line, f = i + 2, str(r["file"]).strip()  # line 1 is the header
        rel = Path(f)
        why = ("no file named" if not f else "no category" if not str(r["category"]).strip()
               else f"{f}: a path outside behaviour/" if rel.is_absolute() or ".." in rel.parts
               else f"{f}: listed twice (line {seen[f]} too)" if f in seen
               else f"{f}: no such file" if not (root / rel).is_file()
               else check_rules(r["expectation"]))
        if why:
            raise SongfeatError(file, f"line {line}: {why}")
        seen[f] = line
    m["path"] = [str(root / f.strip()) for f in m["file"]]
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
        val = "error: " + str(r["error"]).split(": ", 1)[-1][:60] if isinstance(r["error"], str) else ("–" if r["value"] is None or pd.isna(r["value"]) else f"{r['value']:.3f}")
        lines.append(f"| {Path(r['file']).name} | {r['half']} | {r['rule']} | {val} | {'yes' if r['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def analyze_clips(shared: str | Path, model: str | Path | None = None, workers: int = 1,
                  progress: bool | None = None) -> tuple[pd.DataFrame, dict]:
    """Analyze every behaviour clip with `songfeat analyze`'s own path -> (manifest, path -> features or error line).

    `progress` (default: when stderr is a terminal) shows how far it is on stderr (`progress.bar`): the clips take
    minutes, which passed in silence.
    """
    from .analyze import analyze_many

    m = read_manifest(shared)
    outcomes = analyze_many(m["path"], model=model, workers=workers)
    if sys.stderr.isatty() if progress is None else progress:
        from .progress import track

        outcomes = track(outcomes, "analysing behaviour clips", total=len(m))
    return m, {o.path: (o.features if o.error is None else o.error) for o in outcomes}


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


__all__ = ["Rule", "parse_rules", "check_rules", "read_manifest", "split", "check", "summary", "to_markdown", "evaluate_behaviour",
           "analyze_clips", "region_table", "region_summary", "region_markdown", "NO_REGION_CATEGORIES"]
