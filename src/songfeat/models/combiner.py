"""The seed's "linear combiner": a pretrained lstm-multitask and a pretrained numeric-mlp joined by fully connected layers.

Both sub-models live inside the combiner (`self.lstm`, `self.mlp`), so one safetensors file holds all
weights and `hparams` (which carry the sub-models' own hyper-parameters) rebuild the whole thing.
The report's four settings:

- a: drop both sub-models' final layers; join their last hidden layers (64 and 32) through two
  32-wide layers, concatenate (64) and map to the targets — the slides' `CombinerModel`.
- b: keep the final layers (the LSTM's sigmoid removed); two 16-wide layers, 32 concatenated.
- c: keep every layer (sigmoid included); two 5-wide layers, 10 concatenated.
- d: a's architecture, trained with the plateau schedule 0.01 -> 0.005 -> 0.002 -> 0.001 (the report's best).

The pretrained sub-models are frozen by default (the seed's optimizer only saw the combiner's own layers).
"""
from __future__ import annotations

import torch
from torch import nn

from . import SPECTROGRAM_KINDS, register
from .lstm import LSTMMultitask
from .numeric_mlp import NumericMLP

#: variant -> (what each sub-model hands over, default branch widths)
VARIANTS: dict[str, tuple[str, tuple[int, int]]] = {
    "a": ("embed", (32, 32)),
    "b": ("logits", (16, 16)),
    "c": ("output", (5, 5)),
    "d": ("embed", (32, 32)),
}
#: the report's setting (d): learning rates stepped down each time the training loss plateaus
PLATEAU_LRS: tuple[float, ...] = (0.01, 0.005, 0.002, 0.001)


@register("combiner")
class Combiner(nn.Module):
    """Concatenate the (pretrained, frozen) LSTM and numeric-MLP features through one ReLU layer each, then a linear + sigmoid."""

    inputs = ("frontend", "numeric")
    frontend_kinds = SPECTROGRAM_KINDS  # its front-end half is an lstm-multitask: frames to step through

    def __init__(self, n_outputs: int = 5, variant: str = "d", lstm: dict | None = None, mlp: dict | None = None,
                 lstm_outputs: int | None = None, mlp_outputs: int | None = None,
                 branch: tuple[int, int] | None = None, freeze: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"combiner variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant = variant
        self.take, default_branch = VARIANTS[variant]
        branch = tuple(branch or default_branch)
        self.lstm = LSTMMultitask(n_outputs=lstm_outputs or n_outputs, **(lstm or {}))
        self.mlp = NumericMLP(n_outputs=mlp_outputs or n_outputs, **(mlp or {}))
        if self.take == "embed":
            widths = (self.lstm.embedding_size, self.mlp.embedding_size)
        else:
            widths = (self.lstm.fc.out_features, self.mlp.head.out_features)
        self.fc_rnn = nn.Linear(widths[0], branch[0])
        self.fc_lm = nn.Linear(widths[1], branch[1])
        self.fc_combiner = nn.Linear(branch[0] + branch[1], n_outputs)
        self.freeze = freeze
        if freeze:
            for p in list(self.lstm.parameters()) + list(self.mlp.parameters()):
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Combiner":
        """Set training mode, keeping frozen sub-models in eval mode."""
        super().train(mode)
        if self.freeze:
            self.lstm.eval()
            self.mlp.eval()
        return self

    def load_pretrained(self, lstm: nn.Module, mlp: nn.Module) -> None:
        """Copy trained sub-model weights in (shapes must match the hparams this combiner was built with)."""
        self.lstm.load_state_dict(lstm.state_dict())
        self.mlp.load_state_dict(mlp.state_dict())

    def _parts(self, frontend: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.take == "embed":
            return self.lstm.embed(frontend), self.mlp.embed(numeric)
        if self.take == "logits":
            return self.lstm.logits(frontend), self.mlp(numeric=numeric)
        return self.lstm(frontend=frontend), self.mlp(numeric=numeric)

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        a, b = self._parts(frontend, numeric)
        x = torch.cat((torch.relu(self.fc_rnn(a)), torch.relu(self.fc_lm(b))), dim=1)
        return torch.sigmoid(self.fc_combiner(x))
