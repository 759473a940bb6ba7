"""The default model since the listening heads: stage 1 (numeric MLP) plus nonlinear heads on what was heard.

`base` is the previous default's stage 1 (tempo, loudness, key, mode, metre -> the seven features,
trained on Spotify's catalogue values). The heads read one window's evidence vector (tagger tags
and embeddings, VAD statistics, dynamics; see `songfeat.evidence`) beside stage 1's outputs,
standardise it and clamp it to +-`Z_CLAMP` (so audio unlike anything seen in fitting cannot push a
logit without bound), and an ensemble of small two-layer nets with a linear skip gives each
feature's logit (for `residual` features, a correction added to stage 1's logit, so strong regularisation falls
back on the catalogue-trained stage 1; speechiness and instrumentalness, which stage 1 barely knows,
are predicted outright); the sigmoid keeps every output inside (0, 1). Members are averaged in
logit space.

With `ridge_inputs` > 0 the last that many evidence columns (the MFCC summary, `songfeat.mfcc`) feed a
second member, the previous default's stage 2: a ridge on [those columns, stage 1's outputs] added to
stage 1 and clamped to [0, 1]. Each feature's output is then (1 - blend) x heads + blend x ridge, with
`blend` chosen per feature by leave-one-source-out (`songfeat.sources.select_blend`). Two models that read different
things err differently; their average carries less of one training set's skew into new music.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .numeric_mlp import NumericMLP

Z_CLAMP = 4.0


class HeadNet(nn.Module):
    """One ensemble member: logit = skip(z) + out(gelu(hidden(z)))."""

    def __init__(self, n_in: int, n_out: int, hidden: int):
        super().__init__()
        self.skip = nn.Linear(n_in, n_out)
        self.hidden = nn.Linear(n_in, hidden)
        self.out = nn.Linear(hidden, n_out, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.skip(z) + self.out(nn.functional.gelu(self.hidden(z)))


@register("heads")
class Heads(nn.Module):
    """sigmoid(mean over members of HeadNet(clamp(standardised [evidence, base(numeric)])))."""

    inputs = ("evidence", "numeric")
    fitted_by = "`songfeat train-heads` (or `train-default`)"  # not a family `songfeat train` fits from a store

    def __init__(self, n_outputs: int, n_inputs: int = 5, hidden: tuple[int, ...] = (64, 32), n_evidence: int = 1,
                 head_hidden: int = 16, members: int = 5, residual: bool | list[bool] = False, ridge_inputs: int = 0):
        super().__init__()
        mask = [bool(residual)] * n_outputs if isinstance(residual, bool) else [bool(r) for r in residual]
        self.register_buffer("residual_mask", torch.tensor(mask, dtype=torch.float32))
        self.base = NumericMLP(n_outputs, n_inputs=n_inputs, hidden=tuple(hidden), out="sigmoid")
        n_z = n_evidence + n_outputs
        self.members = nn.ModuleList(HeadNet(n_z, n_outputs, head_hidden) for _ in range(members))
        self.register_buffer("z_mean", torch.zeros(n_z))
        self.register_buffer("z_std", torch.ones(n_z))
        self.n_evidence, self.ridge_inputs = int(n_evidence), int(ridge_inputs)
        if self.ridge_inputs:  # the second member (zero weight until `set_ridge`); older bundles have none
            n_r = self.ridge_inputs + n_outputs
            self.register_buffer("ridge_weight", torch.zeros(n_outputs, n_r))
            self.register_buffer("ridge_bias", torch.zeros(n_outputs))
            self.register_buffer("ridge_mean", torch.zeros(n_r))
            self.register_buffer("ridge_std", torch.ones(n_r))
            self.register_buffer("blend", torch.zeros(n_outputs))

    def head_inputs(self, evidence: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """The standardised, clamped vector the heads read: [evidence, stage-1 outputs]."""
        z = torch.cat([evidence, base_out], dim=-1)
        return torch.clamp((z - self.z_mean) / self.z_std, -Z_CLAMP, Z_CLAMP)

    def offset(self, base_out: torch.Tensor) -> torch.Tensor:
        """The logit the heads correct: stage 1's for residual features, none for the others."""
        return torch.logit(base_out.clamp(0.01, 0.99)) * self.residual_mask

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(z) for m in self.members]).mean(0)

    def set_ridge(self, weight, bias, mean, std, blend) -> None:
        """Install the second member (`songfeat.stack.fit_head`'s W, b, mean, std) and each feature's blend."""
        with torch.no_grad():
            for name, v in (("ridge_weight", weight), ("ridge_bias", bias), ("ridge_mean", mean), ("ridge_std", std),
                            ("blend", blend)):
                getattr(self, name).copy_(torch.as_tensor(v, dtype=torch.float32))

    def ridge(self, extra: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        """The second member: clamp(stage 1 + ridge([MFCC summary, stage 1]), 0, 1), its standardised inputs clamped to
        +-`Z_CLAMP` as the heads' are (silence or noise lie 10-20 standard deviations out; a line would follow them)."""
        z = torch.clamp((torch.cat([extra, base_out], dim=-1) - self.ridge_mean) / self.ridge_std, -Z_CLAMP, Z_CLAMP)
        return torch.clamp(base_out + z @ self.ridge_weight.T + self.ridge_bias, 0.0, 1.0)

    def forward(self, evidence: torch.Tensor | None = None, numeric: torch.Tensor | None = None) -> torch.Tensor:
        base_out = self.base(numeric=numeric)
        ev = evidence[..., : self.n_evidence] if self.ridge_inputs else evidence
        out = torch.sigmoid(self.offset(base_out) + self.logits(self.head_inputs(ev, base_out)))
        if not self.ridge_inputs:
            return out
        return (1.0 - self.blend) * out + self.blend * self.ridge(evidence[..., self.n_evidence:], base_out)
