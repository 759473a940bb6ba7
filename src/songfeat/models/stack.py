"""The default model: the numeric MLP on measured features, plus a linear audio correction on top.

Stage 1 (`base`) maps tempo, loudness, key, mode and time signature to the learned features; it is
trained on Spotify's own values in a 41,855-track table. Stage 2 (`head`) adds a ridge-regression
correction from timbre statistics (per-coefficient mean and spread of the MFCC over time) and the
stage-1 outputs; it is fitted on real previews with cross-validated regularisation, so it stays
near zero for features the audio statistics do not help with.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .numeric_mlp import NumericMLP


def timbre_summary(frontend: torch.Tensor) -> torch.Tensor:
    """[B, C, T] front-end -> [B, 2C]: each channel's mean and standard deviation over time."""
    return torch.cat([frontend.mean(dim=-1), frontend.std(dim=-1)], dim=-1)


@register("stack")
class Stack(nn.Module):
    """base(numeric) + head([standardised timbre summary, base output]), clamped later to [0, 1]."""

    inputs = ("frontend", "numeric")
    fitted_by = "`songfeat.default_model` (the previous default's recipe)"  # not a family `songfeat train` fits

    def __init__(self, n_outputs: int, n_inputs: int = 5, hidden: tuple[int, ...] = (64, 32), n_channels: int = 20):
        super().__init__()
        self.base = NumericMLP(n_outputs, n_inputs=n_inputs, hidden=tuple(hidden), out="sigmoid")
        n_z = 2 * n_channels + n_outputs
        self.head = nn.Linear(n_z, n_outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("z_mean", torch.zeros(n_z))
        self.register_buffer("z_std", torch.ones(n_z))

    def head_inputs(self, frontend: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """The (unstandardised) features the correction reads."""
        return torch.cat([timbre_summary(frontend), base_out], dim=-1)

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        base_out = self.base(numeric=numeric)
        z = (self.head_inputs(frontend, base_out) - self.z_mean) / self.z_std
        return base_out + self.head(z)
