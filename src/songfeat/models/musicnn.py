"""musicnn (Pons & Serra, 2019) in torch: the 'musicnn' architecture of the `musicnn==0.1.0` wheel, inference only.

Input is a batch of log-mel patches [B, 187, 96] (time, mel), as `songfeat.tagger.mel_patches` makes them.
Layers follow musicnn's `models.build_musicnn` (TF1, NHWC) one for one; batch norm runs in eval mode
(TF1's epsilon 1e-3) and dropout is left out. The weights are restored by their TF variable names
(`batch_normalization_3/moving_mean`, `conv2d_5/kernel`, ...): `load_musicnn` refuses a file with any
variable missing, unexpected or of the wrong shape, so no layer can silently keep random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SongfeatError

N_MELS = 96
N_FRAMES = 187
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
TIMBRAL_FILTERS = int(1.6 * 128)  # 204, as musicnn's num_filt=1.6
TEMPORAL_FILTERS = int(1.6 * 32)  # 51
TIMBRAL_KERNELS = ((7, int(0.4 * N_MELS)), (7, int(0.7 * N_MELS)))  # (7, 38), (7, 67)
TEMPORAL_KERNELS = (128, 64, 32)
MIDEND_FILTERS = 64
BACKEND_UNITS = 200
FRONTEND_CHANNELS = 2 * TIMBRAL_FILTERS + 3 * TEMPORAL_FILTERS  # 561
POOLED_CHANNELS = FRONTEND_CHANNELS + 3 * MIDEND_FILTERS  # 753 mid-end channels, each mean- and max-pooled over time


def _bn(n: int, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(n, eps=BN_EPS)


def _tf_same(k: int) -> tuple[int, int]:
    """TF's 'same' padding for a stride-1 kernel of size k: the odd sample goes after."""
    return (k - 1) // 2, k - 1 - (k - 1) // 2


CHANNEL_BLOCK = 16  # onnxruntime's NCHWc block on AVX-512: pooling stays in its blocked layout only for whole blocks
# log10(10000·mel + 1) of audio within ±1 stays below 7.7 (a full-scale 512-point frame in one band); louder float audio
# (songfeat.audio accepts peaks up to 100) reaches ~11.4, where the bound below grows in proportion (to ~1.5e-6)
LOG_MEL_MAX = 8.0
CONSTANT_TOL = 1e-6  # a front-end channel whose output can move less than this on such input is exported as a constant


def conv_relu_bn_max(h: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, h_max: float | None = None) -> torch.Tensor:
    """max over frequency of bn(relu(conv(h))) for [B, 1, T, F] -> [B, C, T], as one convolution and one max-pool.

    In eval mode bn is a per-channel affine a·x + b and relu is monotone, so the max over F is
    a·relu(max z) + b where a >= 0 and a·relu(min z) + b where a < 0 (musicnn has channels of both signs).
    The min is taken as -max(-z) by negating those channels' weights and bias (exact: negation only flips
    signs), so one max-pool serves every channel; zero filters pad the channels to whole NCHWc blocks, so
    onnxruntime pools in its convolution's layout instead of first re-laying the full [B, C, T, F] map
    (about 20% of the tagger's time). Equal to the layer-by-layer graph up to float rounding.

    In an ONNX export, given `h_max` (a bound on |h|), a channel whose filter is all but zero is left out of the
    convolution: for any |h| <= h_max its output stays within `CONSTANT_TOL` of a·relu(bias) + b (|a|·|w|₁·h_max
    bounds the difference), so the graph holds that constant. Training left most of musicnn's timbral filters dead
    (the MSD model's: 181 and 190 of 204), and they were most of the tagger's arithmetic.
    """
    if bn.training:
        return bn(F.relu(conv(h))).amax(dim=3)
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    c, kf = conv.out_channels, conv.kernel_size[1]
    if not torch.onnx.is_in_onnx_export():
        return _max_over_frequency(h, conv.weight, conv.bias, a, b, c, kf, pad=False)
    if h_max is None:
        return _max_over_frequency(h, conv.weight, conv.bias, a, b, c, kf)
    # from here on plain values, not traced from the parameters: the exported graph gets them as constants
    w, bias, a, b = (t.detach().clone() for t in (conv.weight, conv.bias, a, b))
    moves = (a.abs() * w.abs().flatten(1).sum(1) * h_max).tolist()  # the most each channel's output can move
    live = [i for i, m in enumerate(moves) if m >= CONSTANT_TOL] or [0]  # (one convolved channel even if all are dead)
    if len(live) == len(moves):
        return _max_over_frequency(h, w, bias, a, b, c, kf)
    dead = [i for i in range(len(moves)) if i not in live]
    top = _max_over_frequency(h, w[live], bias[live], a[live], b[live], len(live), kf)
    rest = (F.relu(bias[dead]) * a[dead] + b[dead])[None, :, None].expand(top.shape[0], -1, top.shape[2])
    where = torch.argsort(torch.tensor(live + dead))  # output channel c is entry where[c] of [live, dead]
    return torch.cat([top, rest], dim=1).index_select(1, where)


def _max_over_frequency(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                        c: int, kf: int, pad: bool = True) -> torch.Tensor:
    """conv_relu_bn_max's arithmetic for `c` filters `weight` [c, 1, kt, kf] with bias and the bn affine (a, b);
    `pad`: zero filters up to whole CHANNEL_BLOCKs (for onnxruntime; torch itself gains nothing from them). `c` and
    `kf` come as plain ints so that a traced export keeps them constant."""
    sign = torch.where(a >= 0, 1.0, -1.0)
    extra = (-c) % CHANNEL_BLOCK if pad else 0
    weight = torch.cat([weight * sign[:, None, None, None], weight.new_zeros((extra, *weight.shape[1:]))])
    bias = torch.cat([bias * sign, bias.new_zeros(extra)])
    width = N_MELS - kf + 1  # a constant, so the ONNX export gets a fixed pooling kernel
    top = F.max_pool2d(F.conv2d(h, weight, bias), kernel_size=(1, width))[:, :c, :, 0] * sign[None, :, None]
    return F.relu(top) * a[None, :, None] + b[None, :, None]


class Musicnn(nn.Module):
    """The musicnn tagger: musically motivated front-end, dense mid-end with residuals, pooled back-end."""

    def __init__(self, num_classes: int = 50):
        super().__init__()
        self.bn_input = _bn(1)
        self.timbral = nn.ModuleList(nn.Conv2d(1, TIMBRAL_FILTERS, k) for k in TIMBRAL_KERNELS)
        self.timbral_bn = nn.ModuleList(_bn(TIMBRAL_FILTERS) for _ in TIMBRAL_KERNELS)
        self.temporal = nn.ModuleList(nn.Conv2d(1, TEMPORAL_FILTERS, (k, 1)) for k in TEMPORAL_KERNELS)
        self.temporal_bn = nn.ModuleList(_bn(TEMPORAL_FILTERS) for _ in TEMPORAL_KERNELS)
        # the mid-end's TF conv2d kernels span the whole feature axis, i.e. 1-D convolutions over time
        self.midend = nn.ModuleList([nn.Conv1d(FRONTEND_CHANNELS, MIDEND_FILTERS, 7, padding=3),
                                     nn.Conv1d(MIDEND_FILTERS, MIDEND_FILTERS, 7, padding=3),
                                     nn.Conv1d(MIDEND_FILTERS, MIDEND_FILTERS, 7, padding=3)])
        self.midend_bn = nn.ModuleList(_bn(MIDEND_FILTERS, 1) for _ in range(3))
        self.bn_pool = _bn(2 * POOLED_CHANNELS, 1)
        self.dense = nn.Linear(2 * POOLED_CHANNELS, BACKEND_UNITS)
        self.bn_dense = _bn(BACKEND_UNITS, 1)
        self.out = nn.Linear(BACKEND_UNITS, num_classes)

    def input_bound(self) -> float:
        """The largest |bn_input(x)| for log-mel x in [0, LOG_MEL_MAX] (an affine map: one of the two ends)."""
        bn = self.bn_input
        with torch.no_grad():
            a = float(bn.weight[0] / torch.sqrt(bn.running_var[0] + bn.eps))
            b = float(bn.bias[0] - bn.running_mean[0] * a)
        return max(abs(b), abs(a * LOG_MEL_MAX + b))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, 187, 96] log-mel patches -> tags [B, 50] (sigmoid), logits, penultimate [B, 200], mean_pool/max_pool [B, 753]."""
        h = self.bn_input(x[:, None])  # [B, 1, T, F]
        h_max = self.input_bound()
        feats = []
        for conv, bn in zip(self.timbral, self.timbral_bn):  # time padding only, as musicnn pads for a cheap 'same'
            feats.append(conv_relu_bn_max(F.pad(h, (0, 0, 3, 3)), conv, bn, h_max))
        for conv, bn, k in zip(self.temporal, self.temporal_bn, TEMPORAL_KERNELS):
            feats.append(conv_relu_bn_max(F.pad(h, (0, 0, *_tf_same(k))), conv, bn, h_max))
        front = torch.cat(feats, dim=1)  # [B, 561, T]
        c1 = self.midend_bn[0](F.relu(self.midend[0](front)))
        c2 = self.midend_bn[1](F.relu(self.midend[1](c1))) + c1
        c3 = self.midend_bn[2](F.relu(self.midend[2](c2))) + c2
        mid = torch.cat([front, c1, c2, c3], dim=1)  # [B, 753, T]
        max_pool, mean_pool = mid.amax(dim=2), mid.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF's concat-then-flatten interleaves them
        penultimate = self.bn_dense(F.relu(self.dense(self.bn_pool(flat))))
        logits = self.out(penultimate)
        return {"tags": torch.sigmoid(logits), "logits": logits, "penultimate": penultimate,
                "mean_pool": mean_pool, "max_pool": max_pool}


def _bn_map(prefix: str, tf: str) -> dict[str, str]:
    return {f"{prefix}.weight": f"{tf}/gamma", f"{prefix}.bias": f"{tf}/beta",
            f"{prefix}.running_mean": f"{tf}/moving_mean", f"{prefix}.running_var": f"{tf}/moving_variance"}


def tf_variable_map() -> dict[str, str]:
    """torch parameter/buffer name -> musicnn's TF variable name (creation order in build_musicnn)."""
    m = _bn_map("bn_input", "batch_normalization")
    convs = [("timbral.0", "timbral_bn.0"), ("timbral.1", "timbral_bn.1"), ("temporal.0", "temporal_bn.0"),
             ("temporal.1", "temporal_bn.1"), ("temporal.2", "temporal_bn.2"), ("midend.0", "midend_bn.0"),
             ("midend.1", "midend_bn.1"), ("midend.2", "midend_bn.2")]
    for i, (conv, bn) in enumerate(convs):
        tfc = "conv2d" if i == 0 else f"conv2d_{i}"
        m[f"{conv}.weight"], m[f"{conv}.bias"] = f"{tfc}/kernel", f"{tfc}/bias"
        m.update(_bn_map(bn, f"batch_normalization_{i + 1}"))
    m.update(_bn_map("bn_pool", "batch_normalization_9"))
    m["dense.weight"], m["dense.bias"] = "dense/kernel", "dense/bias"
    m.update(_bn_map("bn_dense", "batch_normalization_10"))
    m["out.weight"], m["out.bias"] = "dense_1/kernel", "dense_1/bias"
    return m


def tf_to_torch(name: str, value: torch.Tensor) -> torch.Tensor:
    """Re-lay one TF tensor for torch: conv kernels HWIO -> OIHW (mid-end: -> O,I,T), dense [in,out] -> [out,in]."""
    if value.dim() == 4:
        w = value.permute(3, 2, 0, 1)  # [out, in, kh, kw]
        if name.startswith("midend."):  # TF: [7, C, 1, out] over (time, channel) -> conv1d [out, C, 7]
            w = value[:, :, 0, :].permute(2, 1, 0)
        return w.contiguous()
    if value.dim() == 2:
        return value.t().contiguous()
    return value


def load_musicnn(path: str | Path, num_classes: int = 50) -> Musicnn:
    """Build a Musicnn in eval mode from a safetensors file keyed by TF variable names; every variable must match."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SongfeatError(path, "musicnn weights are missing (the package was installed without its weights)")
    tensors = load_file(str(path))
    model = Musicnn(num_classes)
    mapping = tf_variable_map()
    expected = set(model.state_dict()) - {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    if set(mapping) != expected:  # a programming error in the map, not a bad file
        raise AssertionError(f"variable map out of step with the model: {sorted(set(mapping) ^ expected)}")
    missing = sorted(v for v in mapping.values() if v not in tensors)
    unexpected = sorted(set(tensors) - set(mapping.values()))
    if missing or unexpected:
        raise SongfeatError(path, f"musicnn weights do not match the model: missing {missing[:5]}"
                                  f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                                  f"{'...' if len(unexpected) > 5 else ''}")
    state = {}
    own = model.state_dict()
    for tname, tfname in mapping.items():
        v = tf_to_torch(tname, tensors[tfname].float())
        if v.shape != own[tname].shape:
            raise SongfeatError(path, f"variable {tfname} has shape {tuple(tensors[tfname].shape)}, "
                                      f"which does not fit {tname} {tuple(own[tname].shape)}")
        state[tname] = v
    model.load_state_dict(state, strict=False)  # only num_batches_tracked (unused in eval) is left
    return model.eval()
