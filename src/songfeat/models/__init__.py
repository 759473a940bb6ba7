"""Model families, one file each, found by name through a small registry.

Every model is a torch.nn.Module whose constructor takes `n_outputs` plus its own keyword
hyper-parameters, whose class attribute `inputs` says which inputs it reads ("frontend": a
[B, C, T] front-end tensor; "numeric": a [B, F] table of numeric features), and whose forward is
`forward(frontend=None, numeric=None) -> [B, n_outputs]`. An optional class attribute `frontend_kinds` names the only
front-end kinds `train` fits it on (the CNNs, LSTMs and combiner: `SPECTROGRAM_KINDS`; mlp-head: musicnn), and an
optional `min_input_shape` (channels, frames) the smallest front-end it takes (the CNNs' poolings), which `train`
checks a store against before reading it. Models know nothing of files, the CLI or HTTP.
"""
from __future__ import annotations

import importlib
import inspect

import torch

REGISTRY: dict[str, type[torch.nn.Module]] = {}
#: front-end kinds that are a spectrogram over time [C, T]: what the seed's CNNs and LSTMs convolve or step through
#: (a musicnn store's [3512, 1] is one vector, no time axis: too small for a CNN's poolings, one step for an LSTM)
SPECTROGRAM_KINDS: tuple[str, ...] = ("mfcc", "logmel")
_MODULES = ("numeric_mlp", "cnn", "lstm", "combiner", "stack", "mlp_head", "heads")  # imported on first lookup


def register(name: str):
    """Class decorator: make a model family available as `name`."""

    def deco(cls):
        cls.family = name
        REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def names() -> list[str]:
    """Registered family names, sorted."""
    _load_all()
    return sorted(REGISTRY)


def trainable() -> list[str]:
    """Families `songfeat train` fits from a store, sorted (the composite default models have their own recipes and
    name them in `fitted_by`)."""
    return [n for n in names() if not getattr(REGISTRY[n], "fitted_by", None)]


def create(name: str, n_outputs: int, **hparams) -> torch.nn.Module:
    """Build a model of family `name`; raise ValueError listing the families when unknown, or naming a hyper-parameter
    the family does not take (the constructor's TypeError said it from deep inside)."""
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    own = [p for k in cls.__mro__ if "__init__" in vars(k) for p, v in inspect.signature(k.__init__).parameters.items()
           if p not in ("self", "n_outputs") and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    for key in hparams:
        if key not in own:
            raise ValueError(f"model {name!r} takes no {key!r} (its settings: {', '.join(dict.fromkeys(own)) or 'none'})")
    return cls(n_outputs=n_outputs, **hparams)
