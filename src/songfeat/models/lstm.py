"""The seed's LSTMs over MFCC frames: `lstm-simple` (one target, linear head) and `lstm-multitask` (sigmoid head).

Input is a front-end tensor [B, C, T]; it is transposed to [B, T, C] inside, so C (20 MFCCs) is the
LSTM's input size and the hidden state after the last frame feeds the linear head, as in the seed.
Made for spectrogram stores (mfcc, mfcc-dense, logmel): `train` refuses a musicnn store, whose [3512, 1]
vector has a single frame, so the LSTM would take one step and be a plain dense layer.
"""
from __future__ import annotations

import torch
from torch import nn

from . import SPECTROGRAM_KINDS, register


class _LSTMRegressor(nn.Module):
    """LSTM(C -> hidden) over frames, then a linear layer on the last hidden state, optionally a sigmoid."""

    inputs = ("frontend",)
    frontend_kinds = SPECTROGRAM_KINDS  # frames to step through; musicnn's [3512, 1] would be one step of one vector
    default_out = "sigmoid"

    def __init__(self, n_outputs: int, input_size: int = 20, hidden_size: int = 64, num_layers: int = 1,
                 out: str | None = None, forget_bias: float = 1.0):
        super().__init__()
        out = out or self.default_out
        if out not in ("linear", "sigmoid"):
            raise ValueError(f"out must be 'linear' or 'sigmoid', not {out!r}")
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        if forget_bias:  # start remembering (Jozefowicz et al. 2015); PyTorch's 0 forgets half of the state each frame
            with torch.no_grad():
                for name, b in self.lstm.named_parameters():
                    if name.startswith("bias_ih"):
                        b[hidden_size:2 * hidden_size] = forget_bias
                    elif name.startswith("bias_hh"):
                        b[hidden_size:2 * hidden_size] = 0.0
        self.fc = nn.Linear(hidden_size, n_outputs)
        self.out = out
        self.embedding_size = hidden_size

    def embed(self, frontend: torch.Tensor) -> torch.Tensor:
        """The last frame's hidden state [B, hidden]: what the combiner joins when it drops the final layer."""
        _, (h, _) = self.lstm(frontend.transpose(1, 2))
        return h[-1]

    def logits(self, frontend: torch.Tensor) -> torch.Tensor:
        """The linear head's output before any sigmoid (combiner variant b uses it)."""
        return self.fc(self.embed(frontend))

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        y = self.logits(frontend)
        return torch.sigmoid(y) if self.out == "sigmoid" else y


@register("lstm-simple")
class LSTMSimple(_LSTMRegressor):
    """The seed's simple 1D RNN: LSTM 20 -> 64 then a linear layer, one target (danceability), linear output."""

    default_out = "linear"

    def __init__(self, n_outputs: int = 1, **kw):
        super().__init__(n_outputs, **kw)


@register("lstm-multitask")
class LSTMMultitask(_LSTMRegressor):
    """The seed's multi-task RNN: LSTM 20 -> 64, linear 64 -> n, sigmoid; trained with SmoothL1 on 5 targets."""

    default_out = "sigmoid"

    def __init__(self, n_outputs: int = 5, **kw):
        super().__init__(n_outputs, **kw)
