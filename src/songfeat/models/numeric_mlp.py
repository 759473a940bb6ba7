"""The seed's multi-task regression: numeric features -> 64 -> 32 -> targets (ReLU, or sigmoid)."""
from __future__ import annotations

import torch
from torch import nn

from . import register


@register("numeric-mlp")
class NumericMLP(nn.Module):
    """Three linear layers over standardised numeric features (the seed's 6 -> 64 -> 32 -> 5).

    `activation="sigmoid"` is the report's variant that did marginally better; `out="sigmoid"`
    squashes outputs into [0, 1] (the seed left the last layer linear).
    """

    inputs = ("numeric",)

    def __init__(self, n_outputs: int, n_inputs: int = 6, hidden: tuple[int, ...] = (64, 32),
                 activation: str = "relu", out: str = "linear"):
        super().__init__()
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation must be 'relu' or 'sigmoid', not {activation!r}")
        if out not in ("linear", "sigmoid"):
            raise ValueError(f"out must be 'linear' or 'sigmoid', not {out!r}")
        act = nn.ReLU if activation == "relu" else nn.Sigmoid
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)
        self.out = out
        self.embedding_size = width

    def embed(self, numeric: torch.Tensor) -> torch.Tensor:
        """The last hidden layer: what the combiner joins when it drops the final layer."""
        return self.body(numeric)

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        y = self.head(self.embed(numeric))
        return torch.sigmoid(y) if self.out == "sigmoid" else y
