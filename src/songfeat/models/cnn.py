"""The seed's 2D CNNs over the MFCC image: `cnn-simple` (danceability), `cnn-valence`, `cnn-complex` (5 targets).

All read a spectrogram front-end tensor [B, C, T] (mfcc, mfcc-dense or logmel stores; `train` refuses a musicnn
store, whose one-frame vector is no image) and treat it as a one-channel image [B, 1, C, T]. Layer sizes
are the seed's; `input_shape` only sizes the first linear layer of the simple CNNs (32 x C/4 x T/4,
which is the seed's 32*5*40 for 20x160). Each states the smallest input it takes in `min_input_shape` (4x4, 16x16),
which its constructor and `train` both check. Nothing is rounded inside the graph (the seed's
`torch.round(x*1000)/1000` has zero gradient almost everywhere, so its loss could not go down).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import SPECTROGRAM_KINDS, register


@register("cnn-simple")
class CNNSimple(nn.Module):
    """Two conv (3x3, ReLU, 2x2 max-pool) + two linear layers (ReLU, then sigmoid): the seed's simple 2D CNN."""

    inputs = ("frontend",)
    frontend_kinds = SPECTROGRAM_KINDS  # an image of channels x frames; musicnn's [3512, 1] cannot be pooled twice
    #: the smallest channels x frames it takes: two 2x2 poolings leave at least one cell (`train` checks a store by it)
    min_input_shape: tuple[int, int] = (4, 4)

    def __init__(self, n_outputs: int = 1, input_shape: tuple[int, int] = (20, 160), channels: tuple[int, int] = (16, 32),
                 hidden: int = 64, out: str = "sigmoid"):
        super().__init__()
        if out not in ("linear", "sigmoid"):
            raise ValueError(f"out must be 'linear' or 'sigmoid', not {out!r}")
        c, t = int(input_shape[0]), int(input_shape[1])
        if c < self.min_input_shape[0] or t < self.min_input_shape[1]:
            raise ValueError(f"input_shape {input_shape} is too small for two 2x2 poolings "
                             f"(need >= {self.min_input_shape[0]} x {self.min_input_shape[1]})")
        self.conv1 = nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc1 = nn.Linear(channels[1] * (c // 4) * (t // 4), hidden)
        self.fc2 = nn.Linear(hidden, n_outputs)
        self.out = out

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        x = frontend.unsqueeze(1)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = self.fc2(x)
        return torch.sigmoid(x) if self.out == "sigmoid" else x


@register("cnn-valence")
class CNNValence(CNNSimple):
    """The seed's valence CNN (valence_mfcc_model): the simple CNN's layers, trained on valence by default."""


@register("cnn-complex")
class CNNComplex(nn.Module):
    """Four conv layers, two dropouts, adaptive average pool to 8x8, two fc layers (16384 -> 128 -> n): the seed's complex CNN.

    The output is linear, as in the seed (trained with MSE); `out="sigmoid"` squashes it into [0, 1].
    """

    inputs = ("frontend",)
    frontend_kinds = SPECTROGRAM_KINDS  # an image of channels x frames; musicnn's [3512, 1] has one frame
    #: the smallest channels x frames it takes: two valid 3x3 convs, 2x2 pool, two more and a pool leave >= 1 cell
    #: ((n - 4) // 2 - 4 >= 2); `train` checks a store by it
    min_input_shape: tuple[int, int] = (16, 16)

    def __init__(self, n_outputs: int = 5, input_shape: tuple[int, int] = (20, 160), pool: tuple[int, int] = (8, 8),
                 hidden: int = 128, dropout: tuple[float, float] = (0.25, 0.5), out: str = "linear"):
        super().__init__()
        if out not in ("linear", "sigmoid"):
            raise ValueError(f"out must be 'linear' or 'sigmoid', not {out!r}")
        c, t = int(input_shape[0]), int(input_shape[1])
        if c < self.min_input_shape[0] or t < self.min_input_shape[1]:
            raise ValueError(f"input_shape {input_shape} is too small for four 3x3 convolutions "
                             f"(need >= {self.min_input_shape[0]} x {self.min_input_shape[1]})")
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.conv3 = nn.Conv2d(64, 128, 3, 1)
        self.conv4 = nn.Conv2d(128, 256, 3, 1)
        self.dropout1 = nn.Dropout(dropout[0])
        self.dropout2 = nn.Dropout(dropout[1])
        self.pooling = nn.AdaptiveAvgPool2d(tuple(pool))
        self.fc1 = nn.Linear(256 * pool[0] * pool[1], hidden)  # 16384 for the seed's 8x8
        self.fc2 = nn.Linear(hidden, n_outputs)
        self.out = out

    def forward(self, frontend: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        x = frontend.unsqueeze(1)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.conv4(F.relu(self.conv3(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(self.pooling(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        x = self.fc2(x)
        return torch.sigmoid(x) if self.out == "sigmoid" else x
