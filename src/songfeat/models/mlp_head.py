"""`mlp-head`: a small MLP over a cached fixed-length vector, e.g. musicnn's tags + embeddings ([B, 3512, 1]).

Made for `songfeat build --frontend musicnn` stores (`train` refuses a store of another front-end): the
pretrained tagger does the listening once, at build time, and only this head is trained on your labels.
The trainer standardises each input channel with training-split statistics, so tag probabilities and
embeddings of different scales mix.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register


@register("mlp-head")
class MLPHead(nn.Module):
    """Flattened front-end -> hidden ReLU layers with dropout -> targets (sigmoid for [0, 1] features)."""

    inputs = ("frontend",)
    frontend_kinds = ("musicnn",)  # the stores `train` fits it on: a flattened spectrogram is not what it is made for

    def __init__(self, n_outputs: int, n_inputs: int = 3512, hidden: tuple[int, ...] = (256,), dropout: float = 0.3,
                 out: str = "sigmoid"):
        super().__init__()
        if out not in ("linear", "sigmoid"):
            raise ValueError(f"out must be 'linear' or 'sigmoid', not {out!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Dropout(dropout)]  # input dropout: 3512 correlated inputs, few labels
        width = int(n_inputs)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)
        self.out = out

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        y = self.head(self.body(frontend.flatten(1)))
        return torch.sigmoid(y) if self.out == "sigmoid" else y
