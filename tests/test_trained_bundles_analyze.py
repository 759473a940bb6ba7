"""Any trained bundle plugs into analyze: front-end models, measured-numeric models; label-input models are refused clearly."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat import features
from songfeat.analyze import analyze
from songfeat.errors import SongfeatError
from songfeat.frontend import SEED_MFCC
from songfeat.train import Dataset, train_bundle

TARGETS = ("danceability", "energy")


def tiny_dataset(numeric_source: str, numeric_names: tuple[str, ...], n: int = 24) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(targets=rng.uniform(0.2, 0.8, (n, len(TARGETS))), target_names=TARGETS, ids=[f"t{i}" for i in range(n)],
                   frontend=rng.standard_normal((n, *SEED_MFCC.shape)).astype(np.float32),
                   numeric=rng.standard_normal((n, len(numeric_names))).astype(np.float32) if numeric_names else None,
                   numeric_names=numeric_names, numeric_source=numeric_source, spec=SEED_MFCC)


@pytest.mark.parametrize("family,source,names", [
    ("lstm-multitask", "labels", ()),
    ("cnn-complex", "labels", ()),
    ("numeric-mlp", "measured", features.MEASURED_NUMERIC_INPUTS),
])
def test_trained_bundle_analyzes_audio(tmp_path, example_clip, family, source, names):
    out = train_bundle(family, tiny_dataset(source, names), tmp_path / family, targets=TARGETS, epochs=1,
                       numeric_source=source, numeric_inputs=names or None, progress=False)
    r = analyze(example_clip, model=out)
    for t in TARGETS:
        assert 0.0 <= r[t] <= 1.0
    assert r["valence"] is None  # not predicted by this model: present, and null rather than invented
    assert r["tempo"] > 0 and r["type"] == "audio_features"


def test_label_input_model_is_refused_with_a_reason(tmp_path, example_clip):
    names = features.SEED_NUMERIC_INPUTS
    out = train_bundle("numeric-mlp", tiny_dataset("labels", names), tmp_path / "mlp", targets=TARGETS, epochs=1,
                       numeric_source="labels", numeric_inputs=names, progress=False)
    with pytest.raises(SongfeatError, match="label table"):
        analyze(example_clip, model=out)
