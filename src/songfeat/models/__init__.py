"""Model families, one file each, found by name through a small registry.

Every model is a torch.nn.Module whose constructor takes `n_outputs` plus its own keyword
hyper-parameters, whose class attribute `inputs` says which inputs it reads ("frontend": a
[B, C, T] front-end tensor; "numeric": a [B, F] table of numeric features), and whose forward is
`forward(frontend=None, numeric=None) -> [B, n_outputs]`. Models know nothing of files, the CLI or HTTP.
"""
from __future__ import annotations

import importlib

import torch

REGISTRY: dict[str, type[torch.nn.Module]] = {}
_MODULES = ("numeric_mlp", "cnn", "lstm", "combiner", "stack", "mlp_head")  # imported on first lookup


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


def create(name: str, n_outputs: int, **hparams) -> torch.nn.Module:
    """Build a model of family `name`; raise ValueError listing the families when unknown."""
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](n_outputs=n_outputs, **hparams)
