"""Every seed model family: registered by name, the seed's layer sizes, right output shapes, gradients flow."""
from __future__ import annotations

import pytest
import torch

from songfeat import models
from songfeat.models.combiner import VARIANTS

FAMILIES = ("numeric-mlp", "cnn-simple", "cnn-valence", "cnn-complex", "lstm-simple", "lstm-multitask", "combiner")


SMALL = (20, 32)  # CNNs built for a short input keep the tests fast; the seed's 20x160 is checked separately


def _make(name: str, k: int, **kw):
    if name.startswith("cnn-"):
        kw.setdefault("input_shape", SMALL)
    return models.create(name, k, **kw)


def _inputs(b: int = 3, c: int = 20, t: int = 32, f: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"frontend": torch.randn(b, c, t, generator=g), "numeric": torch.randn(b, f, generator=g)}


def test_every_seed_family_is_registered():
    assert set(FAMILIES) <= set(models.names())


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("k", [1, 5])
def test_output_shape(name: str, k: int):
    torch.manual_seed(0)
    m = _make(name, k).eval()
    assert set(m.inputs) <= {"frontend", "numeric"}
    with torch.no_grad():
        y = m(**{n: v for n, v in _inputs().items() if n in m.inputs})
    assert y.shape == (3, k)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_reach_trainable_weights(name: str):
    """No rounding inside the graph: every trainable parameter gets a non-zero gradient."""
    torch.manual_seed(0)
    m = _make(name, 2).train()
    y = m(**{n: v for n, v in _inputs(b=8).items() if n in m.inputs})
    ((y - 0.3) ** 2).mean().backward()
    for pname, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", FAMILIES)
def test_seed_input_20x160(name: str):
    m = models.create(name, 5).eval()
    with torch.no_grad():
        y = m(**{n: v for n, v in _inputs(b=1, t=160).items() if n in m.inputs})
    assert y.shape == (1, 5)


def test_cnn_complex_has_the_seed_layers():
    m = models.create("cnn-complex", 5)
    assert [c.out_channels for c in (m.conv1, m.conv2, m.conv3, m.conv4)] == [32, 64, 128, 256]
    assert m.fc1.in_features == 16384 and m.fc1.out_features == 128
    assert (m.dropout1.p, m.dropout2.p) == (0.25, 0.5)


def test_simple_cnn_matches_the_seed_valence_notebook():
    m = models.create("cnn-valence", 1)
    assert m.fc1.in_features == 32 * 5 * 40 and m.fc1.out_features == 64


def test_lstm_sizes_and_heads():
    s, mt = models.create("lstm-simple", 1), models.create("lstm-multitask", 5)
    assert s.lstm.input_size == 20 and s.lstm.hidden_size == 64 and s.out == "linear"
    assert mt.out == "sigmoid"
    with torch.no_grad():
        y = mt.eval()(frontend=torch.randn(4, 20, 160) * 10)
    assert ((y >= 0) & (y <= 1)).all()


def test_numeric_mlp_seed_sizes():
    m = models.create("numeric-mlp", 5, n_inputs=6)
    assert [l.out_features for l in m.body if isinstance(l, torch.nn.Linear)] == [64, 32]


def test_small_frontends_are_accepted_and_too_small_ones_named():
    m = models.create("cnn-complex", 4, input_shape=(20, 64))
    assert m(frontend=torch.randn(2, 20, 64)).shape == (2, 4)
    with pytest.raises(ValueError, match="too small"):
        models.create("cnn-complex", 4, input_shape=(8, 8))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_combiner_variants(variant: str):
    torch.manual_seed(0)
    m = models.create("combiner", 5, variant=variant)
    y = m(**_inputs())

    assert y.shape == (3, 5)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"fc_rnn", "fc_lm", "fc_combiner"}  # pretrained parts are frozen
    if variant in ("a", "d"):
        assert (m.fc_rnn.in_features, m.fc_lm.in_features, m.fc_combiner.in_features) == (64, 32, 64)
    elif variant == "b":
        assert (m.fc_rnn.out_features, m.fc_combiner.in_features) == (16, 32)
    else:
        assert (m.fc_rnn.out_features, m.fc_combiner.in_features) == (5, 10)


def test_combiner_keeps_frozen_parts_in_eval_mode():
    m = models.create("combiner", 5).train()
    assert m.training and not m.lstm.training and not m.mlp.training


def test_every_front_end_family_declares_the_kinds_it_is_made_for():
    """`train` checks a store's front-end kind against `frontend_kinds` before reading it; a family that reads a
    front-end without declaring them would train on whatever it is given (lstm-simple on a musicnn vector did)."""
    from songfeat.frontend import KINDS

    for name in models.trainable():
        cls = models.REGISTRY[name]
        kinds = getattr(cls, "frontend_kinds", None)
        if "frontend" in cls.inputs:
            assert kinds and set(kinds) <= set(KINDS), name
        else:
            assert kinds is None, name  # a family that reads no front-end takes a store of any
    for name in ("cnn-simple", "cnn-valence", "cnn-complex", "lstm-simple", "lstm-multitask", "combiner"):
        assert models.REGISTRY[name].frontend_kinds == models.SPECTROGRAM_KINDS == ("mfcc", "logmel"), name
    assert models.REGISTRY["mlp-head"].frontend_kinds == ("musicnn",)


@pytest.mark.parametrize("name", ["cnn-simple", "cnn-valence", "cnn-complex"])
def test_each_cnn_states_the_smallest_input_it_takes(name: str):
    """`train` refuses a store smaller than a family's `min_input_shape` before reading it, so that attribute must be the
    true edge: a model of exactly that shape builds and runs, one frame or channel fewer is refused by its constructor."""
    c, t = models.REGISTRY[name].min_input_shape
    assert (c, t) == ((16, 16) if name == "cnn-complex" else (4, 4))
    y = models.create(name, 2, input_shape=(c, t)).eval()(frontend=torch.randn(2, c, t))
    assert y.shape == (2, 2) and torch.isfinite(y).all()
    for small in ((c - 1, t), (c, t - 1)):
        with pytest.raises(ValueError, match=f"too small .*need >= {c} x {t}"):
            models.create(name, 2, input_shape=small)


def test_unknown_family_and_variant_are_named():
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet", 5)
    with pytest.raises(ValueError, match="variant"):
        models.create("combiner", 5, variant="e")
