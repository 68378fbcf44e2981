"""IR-SE trunks (ArcFace / TreB1eN layout), the backbone of the pSp, e4e and CLCAE encoders.

Parameter names follow the layout every released pSp / e4e / CLCAE checkpoint uses (``input_layer.*``,
``body.N.shortcut_layer.*``, ``body.N.res_layer.*`` with the squeeze-excitation module at ``res_layer.5.fc1/fc2``),
so these trunks load those checkpoints strictly. One implementation serves every encoder: the encoders in
:mod:`clcae.networks.encoders` and :mod:`clcae.networks.contrastive` subclass :class:`IRSEBackbone`.

Layout (IR-SE-50, input 256x256): a 3x3 stem (conv, BN, PReLU) at full resolution, then four stages of
bottleneck units ``(64, 3), (128, 4), (256, 14), (512, 3)`` whose first unit has stride 2. The taps are the ends of
stages 2, 3 and 4: ``c1`` [B, 128, 64, 64], ``c2`` [B, 256, 32, 32], ``c3`` [B, 512, 16, 16] (for 256x256 inputs;
a 192x256 car input gives 48x64, 24x32 and 12x16).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SEModule", "BottleneckIR", "IRSEBackbone", "IRSE_STAGE_UNITS", "IRSE_WIDTHS", "fold_batch_norm"]

#: Units per stage for the supported depths: ArcFace's IR-50 / IR-100 / IR-152 (the released encoders use IR-SE-50),
#: plus ResNet-style IR-18 and IR-34 for small encoders on small domains (e.g. the 64 px SynthFaces models).
IRSE_STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
#: Output channels of the four stages of the standard trunk (the stem has ``widths[0]`` channels).
IRSE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics):
    ``w * g / sqrt(var + eps)`` per output channel, bias ``beta + (b - mean) * g / sqrt(var + eps)``. Cached on
    ``conv`` until any of the tensors involved changes (an optimiser step, a checkpoint load, ``.to()``)."""
    tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) if t is not None else None for t in tensors)
    cached = getattr(conv, "_clcae_folded", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        g = inv_std * bn.weight if bn.weight is not None else inv_std
        w = conv.weight * g.reshape(-1, 1, 1, 1)
        b = -bn.running_mean * g
        if conv.bias is not None:
            b = b + conv.bias * g
        if bn.bias is not None:
            b = b + bn.bias
    conv._clcae_folded = (key, (w, b))
    return w, b


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with bias-free 1x1 convs.

    ``fc1``: C -> C // reduction (at least 1), ``fc2``: back to C. Input and output [B, C, H, W].
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


class BottleneckIR(nn.Module):
    """One IR(-SE) unit: ``res_layer(x) + shortcut_layer(x)``.

    - ``shortcut_layer``: ``MaxPool2d(1, stride)`` (a strided subsampling) when the channel count is unchanged,
      else a strided 1x1 conv (no bias) + BN;
    - ``res_layer``: BN, 3x3 conv (stride 1, no bias), PReLU(C_out), 3x3 conv (stride ``stride``, no bias), BN,
      and the :class:`SEModule` when ``use_se``.

    Input [B, C_in, H, W] -> [B, C_out, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_se: bool = True, se_reduction: int = 16):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if use_se:
            layers.append(SEModule(out_channels, se_reduction))
        self.res_layer = nn.Sequential(*layers)

        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or self.impl == "ref":
            return self.res_layer(x) + self.shortcut_layer(x)
        return self._forward_folded(x)

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode inference with the batch norms after convolutions folded into them (:func:`fold_batch_norm`);
        the leading batch norm stays a layer (folding it into a zero-padded convolution would change the border).
        Equal to the layered forward up to float rounding."""
        bn1, conv1, prelu, conv2, bn2 = list(self.res_layer)[:5]
        r = prelu(conv1(bn1(x)))
        r = _conv(conv2, r, *fold_batch_norm(conv2, bn2))
        if len(self.res_layer) > 5:
            r = self.res_layer[5](r)
        sc = self.shortcut_layer
        if isinstance(sc, nn.MaxPool2d):  # MaxPool2d(1, s) is a strided subsampling
            s = sc.stride if isinstance(sc.stride, int) else sc.stride[0]
            return r.add_(x[:, :, ::s, ::s])
        return r.add_(_conv(sc[0], x, *fold_batch_norm(sc[0], sc[1])))


class IRSEBackbone(nn.Module):
    """IR-SE trunk returning three tapped feature maps ``(c1, c2, c3)`` at strides 4, 8 and 16.

    Args:
        num_layers: 18, 34, 50, 100 or 152 (units per stage from :data:`IRSE_STAGE_UNITS`).
        in_channels: input channels (3 for RGB).
        widths: output channels of the four stages (the stem has ``widths[0]``); default (64, 128, 256, 512).
        width_mult: multiplies every width (rounded, at least 1), for small encoders on small domains.
        use_se: IR-SE units (True, the released encoders) or plain IR units.
        se_reduction: squeeze-excitation reduction (16).
        taps: indices into ``body`` whose outputs are returned; default the last unit of stages 2, 3 and 4
            (6, 20, 23 for IR-SE-50).

    Attributes: ``tap_channels`` (channels of c1, c2, c3), ``config`` (constructor arguments).
    Forward: x [B, in_channels, H, W] (H, W multiples of 16) -> tuple of the tapped maps.
    """

    def __init__(self, num_layers: int = 50, in_channels: int = 3, widths: Sequence[int] = IRSE_WIDTHS,
                 width_mult: float = 1.0, use_se: bool = True, se_reduction: int = 16,
                 taps: Sequence[int] | None = None):
        super().__init__()
        if num_layers not in IRSE_STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(IRSE_STAGE_UNITS)}; got {num_layers}")
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 stage widths; got {list(widths)}")
        self.backbone_config = dict(num_layers=num_layers, in_channels=in_channels, widths=list(widths),
                                    width_mult=width_mult, use_se=use_se, se_reduction=se_reduction,
                                    taps=None if taps is None else list(taps))
        stage_widths = [max(1, int(round(w * width_mult))) for w in widths]
        units = IRSE_STAGE_UNITS[num_layers]
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, stage_widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(stage_widths[0]),
            nn.PReLU(stage_widths[0]))
        body: list[nn.Module] = []
        unit_channels: list[int] = []
        in_c = stage_widths[0]
        for width, n in zip(stage_widths, units):
            for u in range(n):
                body.append(BottleneckIR(in_c, width, stride=2 if u == 0 else 1, use_se=use_se,
                                         se_reduction=se_reduction))
                unit_channels.append(width)
                in_c = width
        self.body = nn.Sequential(*body)
        ends = [sum(units[:i + 1]) - 1 for i in range(4)]
        self.taps = tuple(ends[1:]) if taps is None else tuple(int(t) for t in taps)
        if any(not 0 <= t < len(body) for t in self.taps) or list(self.taps) != sorted(set(self.taps)):
            raise ValueError(f"taps must be increasing indices into the {len(body)} body units; got {self.taps}")
        self.tap_channels = tuple(unit_channels[t] for t in self.taps)
        self.impl = "auto"  # 'ref': batch norms run as layers also at inference (see BottleneckIR)

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, C, H, W] -> the tapped feature maps, in order (computes only up to the last tap)."""
        if x.ndim != 4:
            raise ValueError(f"expected an image batch [B, C, H, W]; got {tuple(x.shape)}")
        if self.training or torch.is_grad_enabled() or self.impl == "ref":
            out = self.input_layer(x)
        else:  # eval-mode inference: the stem's batch norm folded into its convolution
            conv, bn, prelu = self.input_layer
            out = prelu(_conv(conv, x, *fold_batch_norm(conv, bn)))
        feats = []
        last = self.taps[-1]
        for i, unit in enumerate(self.body):
            out = unit(out)
            if i in self.taps:
                feats.append(out)
            if i == last:
                break
        return tuple(feats)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.trunk(x)
