"""ArcFace IR-SE-50 (TreB1eN's InsightFace_Pytorch ``model_ir_se50.pth``), the face network of pSp's ID loss.

The network is the IR-SE trunk of :class:`clcae.networks.backbones.IRSEBackbone` (the same units as every pSp / e4e /
CLCAE encoder, not a copy) followed by TreB1eN's embedding head; :func:`load_arcface` reads the released file
strictly (weights only).

Key layout (identical to TreB1eN's ``Backbone(112, 50, drop_ratio=0.6, mode='ir_se')``, so no key is renamed)::

    input_layer.0  Conv2d(3, 64, 3, 1, 1, bias=False)        input_layer.1  BatchNorm2d(64)     input_layer.2  PReLU(64)
    body.N         bottleneck_IR_SE = clcae BottleneckIR(use_se=True), N = 0..23 for IR-50 (stages of 3/4/14/3
                   units, widths 64/128/256/512, the first unit of each stage with stride 2):
      body.N.shortcut_layer    MaxPool2d(1, stride) when the width is unchanged (no parameters), else
                               .0 Conv2d 1x1 (no bias), .1 BatchNorm2d
      body.N.res_layer         .0 BatchNorm2d, .1 Conv2d 3x3, .2 PReLU, .3 Conv2d 3x3 (stride), .4 BatchNorm2d,
                               .5 SEModule (.5.fc1, .5.fc2: bias-free 1x1 convs, reduction 16)
    output_layer.0 BatchNorm2d(512)   .1 Dropout(0.6)   .2 Flatten   .3 Linear(512 * 7 * 7, 512)   .4 BatchNorm1d(512)

Input ``[B, 3, 112, 112]`` in [-1, 1] (TreB1eN normalises with mean = std = 0.5, which is the [-1, 1] range), output
the L2-normalised 512-d embedding. A 224 px variant (``Linear(512 * 14 * 14, 512)``) exists in TreB1eN's code and is
supported for completeness.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.files import CheckpointError, load_state_dict_strict, validate_finite
from .backbones import IRSE_STAGE_UNITS, IRSE_WIDTHS, IRSEBackbone

__all__ = ["ArcFaceIRSE", "load_arcface", "ARCFACE_FILE_NAME", "arcface_config_from_state_dict"]

#: The file name of the released TreB1eN / pSp ArcFace weights.
ARCFACE_FILE_NAME = "model_ir_se50.pth"
_SIZES = (112, 224)


class ArcFaceIRSE(IRSEBackbone):
    """ArcFace IR(-SE) face recognition network: IR-SE trunk + BN / dropout / linear / BN head, L2-normalised.

    Args:
        input_size: 112 (the released model) or 224; the input must have exactly this size.
        num_layers: 50 (the released model); any depth of :data:`~clcae.networks.backbones.IRSE_STAGE_UNITS`.
        drop_ratio: dropout before the linear layer (training only; 0.6 in TreB1eN / pSp).
        use_se: IR-SE units (True, the released model) or plain IR units.
        width_mult: scales every width (1.0 for the released model; smaller only for tests).
        embed_dim: embedding size (512).

    ``forward(x)`` / :meth:`embed`: ``[B, 3, input_size, input_size]`` in [-1, 1] -> ``[B, embed_dim]`` with unit
    L2 norm. The trunk methods of :class:`IRSEBackbone` remain available (:meth:`trunk` returns the last unit's map).
    """

    def __init__(self, input_size: int = 112, num_layers: int = 50, drop_ratio: float = 0.6, use_se: bool = True,
                 width_mult: float = 1.0, embed_dim: int = 512):
        if input_size not in _SIZES:
            raise ValueError(f"input_size must be one of {_SIZES}; got {input_size}")
        if num_layers not in IRSE_STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(IRSE_STAGE_UNITS)}; got {num_layers}")
        last_unit = sum(IRSE_STAGE_UNITS[num_layers]) - 1
        super().__init__(num_layers=num_layers, in_channels=3, widths=IRSE_WIDTHS, width_mult=width_mult,
                         use_se=use_se, taps=(last_unit,))
        self.config = dict(input_size=int(input_size), num_layers=int(num_layers), drop_ratio=float(drop_ratio),
                           use_se=bool(use_se), width_mult=float(width_mult), embed_dim=int(embed_dim))
        self.input_size = int(input_size)
        channels = self.tap_channels[-1]
        side = self.input_size // 16
        self.output_layer = nn.Sequential(nn.BatchNorm2d(channels), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(channels * side * side, embed_dim), nn.BatchNorm1d(embed_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` in [-1, 1] (``S`` = ``input_size``) -> unit-norm embedding ``[B, embed_dim]``."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"ArcFaceIRSE expects [B, 3, {self.input_size}, {self.input_size}] images; "
                             f"got {tuple(x.shape)} (crop and resize first, as ArcFaceIdentity.preprocess does)")
        return F.normalize(self.output_layer(self.trunk(x)[-1]), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.embed(x)


def arcface_config_from_state_dict(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """Constructor arguments of :class:`ArcFaceIRSE` read off a TreB1eN-layout state dict (depth from the number of
    ``body.N`` units, width from ``input_layer.0``, SE from ``res_layer.5``, input size and embedding size from the
    linear layer). Raises :class:`CheckpointError` naming the file when the layout is not recognisable."""
    try:
        stem = sd["input_layer.0.weight"]
        linear = sd["output_layer.3.weight"]
    except KeyError as e:
        raise CheckpointError(f"{source}: not an ArcFace IR-SE state dict: no key {e.args[0]!r} "
                              f"(expected TreB1eN's layout input_layer.*, body.N.*, output_layer.*)") from None
    units = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k))}
    by_units = {sum(v): depth for depth, v in IRSE_STAGE_UNITS.items()}
    if units != set(range(len(units))) or len(units) not in by_units:
        found = f"{len(units)} (indices {min(units)}..{max(units)})" if units else "none"
        raise CheckpointError(f"{source}: body units found: {found}; an IR trunk of depth "
                              f"{sorted(IRSE_STAGE_UNITS)} has units 0..n-1 with n in {sorted(by_units)}")
    width_mult = stem.shape[0] / IRSE_WIDTHS[0]
    last_channels = max(1, int(round(IRSE_WIDTHS[-1] * width_mult)))
    cells = linear.shape[1] / last_channels
    side = int(round(cells ** 0.5))
    if side * side != cells or side * 16 not in _SIZES:
        raise CheckpointError(f"{source}: output_layer.3.weight {tuple(linear.shape)} fits no input size in {_SIZES}")
    return dict(input_size=side * 16, num_layers=by_units[len(units)], use_se="body.0.res_layer.5.fc1.weight" in sd,
                width_mult=width_mult, embed_dim=int(linear.shape[0]))


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu") -> ArcFaceIRSE:
    """Load TreB1eN's / pSp's ``model_ir_se50.pth`` (or any state dict of the same layout) into :class:`ArcFaceIRSE`.

    The file is read with ``torch.load(weights_only=True)``; it must be a bare state dict (or ``{'state_dict': ...}``).
    Loading is strict: missing or unexpected keys and shape mismatches raise :class:`CheckpointError` listing them.
    The one tolerance: BatchNorm ``num_batches_tracked`` counters absent from the whole file (files written by torch
    < 0.4.1) are filled with 0; they do not affect eval mode. Returns the network on ``device``, eval mode, frozen
    (gradients still flow to its input).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (the ArcFace weights are TreB1eN's / pSp's {ARCFACE_FILE_NAME})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # torch.load: also reads pre-1.6 files
    except Exception as e:
        raise CheckpointError(f"{path}: not readable with a weights-only load ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors; got {type(obj).__name__}")
    sd = dict(obj)
    net = ArcFaceIRSE(**arcface_config_from_state_dict(sd, str(path)))
    counters = [k for k in net.state_dict() if k.endswith("num_batches_tracked")]
    if not any(k in sd for k in counters):
        sd.update({k: torch.zeros((), dtype=torch.long) for k in counters})
    validate_finite(sd, str(path))
    load_state_dict_strict(net, sd, str(path), "ArcFace IR-SE network")
    return net.to(device).eval().requires_grad_(False)
