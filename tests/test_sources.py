"""Leave-one-source-out plumbing: the four sources, and the per-clip record cache."""
from __future__ import annotations

import numpy as np
import pytest

from songfeat.records import get_record


def test_record_cache_roundtrip_and_errors(tmp_path, example_clip):
    a = get_record(example_clip, cache=tmp_path, with_tagger=False)
    assert set(a.blocks) == {"vad", "pitch", "spoken", "dynamics"} and a.mfcc_summary.shape == (40,)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = get_record(example_clip, cache=tmp_path, with_tagger=False)  # from the cache
    for k in a.blocks:
        assert np.array_equal(a.blocks[k], b.blocks[k])
    assert a.descriptors == b.descriptors
    short = tmp_path / "short.wav"
    import soundfile as sf

    sf.write(short, np.zeros(1000, np.float32) + 0.1, 44100)
    err = get_record(short, cache=tmp_path, with_tagger=False)
    assert isinstance(err, str) and "too short" in err and str(short) in err


@pytest.mark.shared
def test_sources_are_the_four_labelled_sets(shared_data):
    from songfeat.sources import labelled_clips

    c = labelled_clips(shared_data)
    assert c.groupby("source").size().to_dict() == {"forro": 54, "poprock": 48, "older": 36, "fma": 11}
    assert c["loudness"].isna().sum() == 11  # Echo Nest's FMA table has no loudness
    assert c[["danceability", "energy", "speechiness"]].notna().all().all()
