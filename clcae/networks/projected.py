"""A Projected-GAN discriminator (Sauer et al. 2021) on the SynthFaces domain network's frozen trunk.

Projected GAN replaces StyleGAN2's discriminator by small trainable heads on the multi-scale features of a fixed,
pretrained network; the paper reports StyleGAN2-ADA's quality with many times fewer images. Here the pretrained
network is :class:`~clcae.networks.domain.DomainNet`'s trunk (``pretrained/synthfaces64_domain_net.pt``)::

    image [B, 3, S, S]  (resized to the trunk's input size, as DomainNet does)
      -> frozen trunk: stage 1 .. stage 4 maps (32, 16, 8, 4 px at 64 px; 32, 64, 128, 256 channels)
      -> optional fixed random projections ('mixing'):
           'ccm'      cross-channel mixing: a random 1x1 conv per scale (to max(64, C) channels)
           'ccm_csm'  and cross-scale mixing: coarse to fine, m_i <- ccm_i + up2(p_i(m_{i+1})), p_i a random 1x1 conv
      -> one head per scale: stride-2 4x4 convs (spectral norm, leaky ReLU 0.2) down to 8 px, then a 4x4 conv to
         a logit map (5 x 5 at 8 px, 1 x 1 at 4 px)
      -> logits [B, N]: every head's map, flattened and concatenated (the losses average over them)

Differences from the paper's code, each for a reason: no BatchNorm in the heads (its running statistics would
differ between data-parallel ranks and depend on how real and fake images are batched; spectral norm alone keeps
the heads Lipschitz); the frozen random projections are buffers (saved with the checkpoint, so a resume is exact).

The frozen trunk is **not** in :meth:`state_dict` (it would add the whole feature network to every checkpoint):
it comes from the DomainNet file, and :meth:`feature_fingerprint` (a SHA-256 of its tensors) is what a checkpoint
stores to make sure a resume uses the very same weights. :meth:`strip_feature_state` accepts a state dict that
still holds the trunk (``features.*``) when those tensors equal the loaded trunk bit for bit.

The trunk is always in eval mode with ``requires_grad=False`` (:meth:`train` and :meth:`requires_grad_` keep it
so); gradients flow through it to the input images. Only :meth:`trainable_parameters` go to the optimiser.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .domain import DomainNet

__all__ = ["ProjectedDiscriminator", "PROJECTED_MIXING", "feature_trunk"]

#: The allowed ``mixing`` values of :class:`ProjectedDiscriminator`.
PROJECTED_MIXING = ("none", "ccm", "ccm_csm")


def feature_trunk(net: DomainNet) -> DomainNet:
    """A copy of ``net`` without its embedding and attribute heads (stem, stages and input resizing only)."""
    trunk = DomainNet(**net.config)
    trunk.load_state_dict(net.state_dict())
    del trunk.embed_head, trunk.attr_head
    return trunk.eval().requires_grad_(False)


def _random_conv_weight(out_ch: int, in_ch: int, generator: torch.Generator) -> torch.Tensor:
    """A 1x1 conv weight ``[out, in, 1, 1]`` with ``nn.Conv2d``'s default (Kaiming-uniform) scale, from ``generator``."""
    bound = 1.0 / math.sqrt(in_ch)
    return (torch.rand(out_ch, in_ch, 1, 1, generator=generator) * 2 - 1) * bound


class _Head(nn.Module):
    """``[B, C, r, r] -> [B, (r' - 3) ** 2]`` logits: stride-2 4x4 convs (spectral norm, lrelu 0.2) down to
    ``r' = min(r, 8)``, then a 4x4 conv (spectral norm) to one channel."""

    def __init__(self, in_ch: int, res: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        while res > 8:
            layers += [spectral_norm(nn.Conv2d(ch, width, 4, 2, 1)), nn.LeakyReLU(0.2)]
            ch, res = width, res // 2
        layers.append(spectral_norm(nn.Conv2d(ch, 1, 4, 1, 0)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Trainable heads on a frozen :class:`DomainNet` trunk's stage maps.

    Args:
        size: the image size it judges (``[B, 3, size, size]``).
        feature_net: the config of the :class:`DomainNet` whose trunk extracts the features (``net.config``);
            its weights are loaded with :meth:`load_feature_weights` (or come with a checkpoint's state dict).
        mixing: one of :data:`PROJECTED_MIXING` (see the module docstring).
        width: channels of every head conv.
        seed: seed of the fixed random projections.
        scales: which trunk stages to judge (1-based; stage ``i`` is ``input_size / 2 ** i`` px; default: all).

    ``forward(images) -> [B, N]`` logits. ``config`` holds these arguments as primitives (the checkpoint's
    ``d_kwargs``).
    """

    def __init__(self, size: int, feature_net: Mapping[str, Any], mixing: str = "none", width: int = 64,
                 seed: int = 0, scales: Sequence[int] | None = None):
        super().__init__()
        if mixing not in PROJECTED_MIXING:
            raise ValueError(f"mixing must be one of {PROJECTED_MIXING}; got {mixing!r}")
        if width < 1:
            raise ValueError(f"width must be >= 1; got {width}")
        net = DomainNet(**dict(feature_net))
        n_stages = len(net.config["channels"])
        scales = sorted(int(s) for s in (range(1, n_stages + 1) if scales is None else scales))
        if not scales or scales[0] < 1 or scales[-1] > n_stages or len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct stages in 1..{n_stages}; got {scales}")
        self.size = int(size)
        self.scales = scales
        self.mixing = mixing
        self.config = dict(kind="projected", size=self.size, feature_net=dict(net.config), mixing=mixing,
                           width=int(width), seed=int(seed), scales=list(scales))
        self.features = feature_trunk(net)
        in_ch = [net.config["channels"][s - 1] for s in scales]
        res = [net.input_size >> s for s in scales]
        g = torch.Generator().manual_seed(int(seed))
        out_ch = in_ch
        if mixing != "none":
            out_ch = [max(64, c) for c in in_ch]
            for i, (ci, co) in enumerate(zip(in_ch, out_ch)):
                self.register_buffer(f"ccm_{i}", _random_conv_weight(co, ci, g))
        if mixing == "ccm_csm":
            for i in range(len(scales) - 1):
                self.register_buffer(f"csm_{i}", _random_conv_weight(out_ch[i], out_ch[i + 1], g))
        self.heads = nn.ModuleList([_Head(c, r, width) for c, r in zip(out_ch, res)])
        self.register_state_dict_post_hook(_drop_feature_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_feature_keys)

    # ------------------------------------------------------------------ the frozen part stays frozen
    def train(self, mode: bool = True) -> "ProjectedDiscriminator":
        super().train(mode)
        self.features.eval()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "ProjectedDiscriminator":
        super().requires_grad_(requires_grad)
        self.features.requires_grad_(False)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The heads' parameters (what the optimiser updates); the trunk's are excluded."""
        return list(self.heads.parameters())

    def load_feature_weights(self, net: DomainNet) -> "ProjectedDiscriminator":
        """Copy the trunk weights of ``net`` (same config as ``feature_net``) into the frozen feature extractor."""
        if dict(net.config) != self.config["feature_net"]:
            raise ValueError(f"feature network config {net.config} != {self.config['feature_net']}")
        sd = {k: v for k, v in net.state_dict().items() if not k.startswith(("embed_head.", "attr_head."))}
        self.features.load_state_dict(sd)
        return self

    def feature_fingerprint(self) -> str:
        """SHA-256 (hex) of the frozen trunk's tensors (names, dtypes, shapes, bytes): what checkpoints record."""
        h = hashlib.sha256()
        for k, v in sorted(self.features.state_dict().items()):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
        return h.hexdigest()

    def strip_feature_state(self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
                            ) -> dict[str, torch.Tensor]:
        """``state_dict`` without ``features.*`` entries, which must equal the loaded trunk exactly (ValueError
        otherwise); a state dict without them is returned unchanged."""
        trunk = self.features.state_dict()
        out = {}
        for k, v in state_dict.items():
            if not k.startswith("features."):
                out[k] = v
                continue
            mine = trunk.get(k[len("features."):])
            if mine is None or mine.shape != v.shape or not torch.equal(mine.cpu(), v.cpu()):
                raise ValueError(f"{source}: its frozen feature network ({k}) differs from the one loaded now")
        return out

    def set_impl(self, impl: str) -> "ProjectedDiscriminator":
        """No custom ops here (plain convolutions); accepted for the trainer's common interface."""
        return self

    # ------------------------------------------------------------------ forward
    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The (mixed) trunk maps the heads judge, fine to coarse."""
        maps = self.features.trunk_features(images)
        maps = [maps[s] for s in self.scales]  # maps[0] is the stem
        if self.mixing != "none":
            maps = [F.conv2d(m, getattr(self, f"ccm_{i}").to(m.dtype)) for i, m in enumerate(maps)]
        if self.mixing == "ccm_csm":
            for i in range(len(maps) - 2, -1, -1):
                coarse = F.conv2d(maps[i + 1], getattr(self, f"csm_{i}").to(maps[i + 1].dtype))
                maps[i] = maps[i] + F.interpolate(coarse, size=maps[i].shape[-2:], mode="bilinear",
                                                  align_corners=False)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, size, size]`` in [-1, 1] -> logits ``[B, N]`` (every head's logit map, concatenated)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (self.size, self.size):
            raise ValueError(f"ProjectedDiscriminator expects [B, 3, {self.size}, {self.size}]; "
                             f"got {tuple(images.shape)}")
        return torch.cat([head(m) for head, m in zip(self.heads, self.feature_maps(images))], dim=1)


def _drop_feature_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for k in [k for k in state_dict if k.startswith(prefix + "features.")]:
        del state_dict[k]


def _ignore_missing_feature_keys(module: nn.Module, incompatible_keys) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith("features.")]
