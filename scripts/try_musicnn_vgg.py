"""Do the musicnn wheel's two VGG taggers (MTT_vgg, MSD_vgg; not shipped) hear the instrumental checking clips better?

The wheel holds four checkpoints; songfeat ships the two musicnn ones. This looks at the other two on every behaviour
clip, preview and FMA clip (first 30 s, songfeat's musicnn front-end, which the VGG models share), in three steps:

    .venv/bin/python scripts/try_musicnn_vgg.py patches --out /tmp/vgg               # ~1 min, songfeat's venv
    .venv-tf/bin/python scripts/try_musicnn_vgg.py tags --out /tmp/vgg --wheel musicnn-0.1.0-py3-none-any.whl
                                                                                      # ~1.5 min, the TF venv of
                                                                                      # scripts/convert_musicnn.py
    .venv/bin/python scripts/try_musicnn_vgg.py gate --out /tmp/vgg                   # seconds

`tags` runs the wheel's own graphs with every variable restored by name (it stops on any uninitialised one).
`gate` fits a one-to-four-input logistic P(instrumental) on log tag probabilities (the "instrumental" tag, the mean of
each patch's largest voice-word probability) with the previews (Spotify label > 0.5) and the behaviour FITTING half,
then prints what it says on the checking half and on the previews. Nothing is fitted into songfeat.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VOICE = ("vocal", "singing", "vocals", "female", "male", "woman", "man", "male vocal", "female vocal", "voice",
         "male voice", "female voice", "choir", "choral", "opera", "female vocalists", "male vocalists")
MISSES = ("classical_hyde_acoustic_instrumental.mp3", "classical_supertux_credits_piano.ogg")


def clips(shared: Path) -> list[tuple[Path, str]]:
    """(path, group) of every behaviour clip, labelled preview and FMA clip."""
    import pandas as pd

    man = pd.read_csv(shared / "behaviour" / "manifest.csv")
    rows = [(shared / "behaviour" / f, c) for f, c in zip(man["file"], man["category"])]
    for folder in ("spotify-previews", "spotify-previews-extra"):
        rows += [(p, "preview") for p in sorted((shared / folder / "audio").glob("*"))]
    return rows + [(p, "fma") for p in sorted((shared / "fma-echonest").rglob("*.mp3"))]


def patches(shared: Path, out: Path) -> None:
    """songfeat's musicnn mel patches and its shipped models' tags, per clip."""
    import pandas as pd

    from songfeat import tagger
    from songfeat.audio import SAMPLE_RATE, load_audio

    arrays, meta = {}, []
    for i, (path, group) in enumerate(clips(shared)):
        try:
            p = tagger.mel_patches(load_audio(path, max_seconds=30), SAMPLE_RATE)
        except Exception as e:  # the robustness set holds clips made to fail
            print(f"  skipped {path.name}: {e}")
            continue
        tags = tagger.run_patches(p)
        arrays[f"c{i}"] = p.astype(np.float32)
        arrays[f"MSD_musicnn|c{i}"], arrays[f"MTT_musicnn|c{i}"] = tags["msd_tags"], tags["mtt_tags"]
        meta.append((f"c{i}", path.name, group))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "patches.npz", **arrays)
    pd.DataFrame(meta, columns=["key", "clip", "group"]).to_csv(out / "meta.csv", index=False)
    print(f"{len(meta)} clips -> {out}")


def tags(wheel: Path, out: Path) -> None:
    """The wheel's own MTT_vgg and MSD_vgg graphs on the saved patches (TF venv)."""
    import csv

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    data = np.load(out / "patches.npz")
    keys = [r["key"] for r in csv.DictReader(open(out / "meta.csv", encoding="utf-8"))]
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        sys.path.insert(0, tmp)
        from musicnn import configuration, models  # the wheel's own code

        for model in ("MTT_vgg", "MSD_vgg"):
            labels = configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS
            g = tf.Graph()
            with g.as_default():
                with tf.name_scope("model"):
                    x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
                    training = tf.compat.v1.placeholder(tf.bool)
                    y = tf.nn.sigmoid(models.define_model(x, training, model, len(labels))[0])
                with tf.compat.v1.Session() as s:
                    tf.compat.v1.train.Saver().restore(s, f"{tmp}/musicnn/{model}/")
                    left = s.run(tf.compat.v1.report_uninitialized_variables())
                    if len(left):
                        raise SystemExit(f"{model}: variables not restored: {left}")
                    for k in keys:
                        res[f"{model}|{k}"] = s.run(y, {x: data[k], training: False})
            res[f"{model}|labels"] = np.array(labels)
            print(f"{model}: done")
    np.savez(out / "vgg_tags.npz", **res)


def gate(shared: Path, out: Path) -> None:
    """Per-clip tag summaries, and logistic gates fitted without the behaviour checking half."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from songfeat import tagger
    from songfeat.behaviour import split

    meta = pd.read_csv(out / "meta.csv")
    a, v = np.load(out / "patches.npz"), np.load(out / "vgg_tags.npz")
    names = {"MSD_musicnn": list(tagger.MSD_TAGS), "MTT_musicnn": list(tagger.MTT_TAGS),
             "MSD_vgg": list(v["MSD_vgg|labels"]), "MTT_vgg": list(v["MTT_vgg|labels"])}
    cols = {}
    for model, labels in names.items():
        src = v if "vgg" in model else a
        vi = [labels.index(t) for t in VOICE if t in labels]
        per = [src[f"{model}|{k}"] for k in meta["key"]]
        cols[f"{model} voice"] = [p[:, vi].max(axis=1).mean() for p in per]
        if "instrumental" in labels:
            cols[f"{model} instrumental"] = [p[:, labels.index("instrumental")].mean() for p in per]
    d = pd.concat([meta, pd.DataFrame(cols)], axis=1)
    lab = pd.concat([pd.read_csv(shared / f / "labels.csv") for f in ("spotify-previews", "spotify-previews-extra")])
    instr = dict(zip(lab["track_id"].astype(str), lab["instrumentalness"]))
    man = pd.read_csv(shared / "behaviour" / "manifest.csv")
    half = dict(zip(man["file"].str.split("/").str[-1], split(man)))
    d["half"] = d["clip"].map(half)
    is_prev = d["group"] == "preview"
    prev_instr = is_prev & (d["clip"].str.rsplit(".", n=1).str[0].map(instr) > 0.5)
    d.loc[prev_instr, "group"] = "preview, instrumental (label > 0.5)"
    d.loc[is_prev & ~prev_instr, "group"] = "preview, song"
    d["y"] = np.select([d["group"].str.startswith("instrumental") | prev_instr,
                        d["group"].isin(["preview, song", "song_sung_vocals", "spoken_word"])], [1, 0], -1)
    print("per group, min / median / max of the clip's mean tag probability")
    for g, x in d.groupby("group"):
        print(f"  {g:38s} n={len(x):3d}  " + "  ".join(f"{c} {x[c].min():.3f}/{x[c].median():.3f}/{x[c].max():.3f}"
                                                        for c in cols if "instrumental" in c))
    songs = d[d["group"] == "preview, song"]
    for clip in MISSES:
        r = d[d["clip"] == clip].iloc[0]
        print(f"  {clip}: " + "  ".join(f"{c} {r[c]:.3f} ({(songs[c] > r[c]).sum()} songs above)"
                                        for c in cols if "instrumental" in c))
    fit, chk = (d["y"] >= 0) & (d["half"] != "check"), d["half"] == "check"
    print("\nlogistic P(instrumental) fitted on the previews and the behaviour fitting half:")
    for inputs in (["MSD_vgg instrumental"], ["MSD_musicnn instrumental"], ["MSD_vgg instrumental", "MTT_vgg voice"],
                   ["MSD_musicnn instrumental", "MTT_musicnn voice"], list(cols)):
        X = np.log(d[inputs].to_numpy() + 1e-3)
        p = LogisticRegression(C=10, max_iter=1000).fit(X[fit], d["y"][fit]).predict_proba(X)[:, 1]
        ins, sung = chk & (d["y"] == 1), chk & (d["y"] == 0)
        miss = ", ".join(f"{c.split('_')[1]} {p[(d['clip'] == c).to_numpy()][0]:.2f}" for c in MISSES)
        print(f"  {' + '.join(inputs)}:\n    checking half instrumental > 0.5: {(p[ins] > 0.5).sum()} of {ins.sum()} ({miss}); "
              f"sung/spoken > 0.5: {(p[sung] > 0.5).sum()} of {sung.sum()}; preview songs > 0.5: "
              f"{(p[d['group'] == 'preview, song'] > 0.5).sum()} of {len(songs)}; instrumental previews: "
              f"{(p[prev_instr] > 0.5).sum()} of {prev_instr.sum()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["patches", "tags", "gate"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/vgg"))
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--wheel", type=Path, help="musicnn-0.1.0-py3-none-any.whl (for `tags`)")
    a = ap.parse_args()
    if a.step == "patches":
        patches(a.shared, a.out)
    elif a.step == "tags":
        if a.wheel is None:
            ap.error("tags needs --wheel")
        tags(a.wheel, a.out)
    else:
        gate(a.shared, a.out)


if __name__ == "__main__":
    main()
