"""The SynthFaces domain network: identity embedding, attribute predictions and Fréchet features from one trunk.

Real face pipelines borrow three pretrained networks: ArcFace (the ID loss and ID metric), attribute classifiers
(editing directions and editing metrics) and Inception (FID). None can be downloaded where this project runs, so
:class:`DomainNet` plays all three roles for SynthFaces (:mod:`clcae.data.synthfaces`), trained on its labels by
``scripts/train_domain_net.py`` (model card: ``pretrained/synthfaces64_domain_net.md``).

Architecture (defaults, 64 px, 1.82 M parameters)::

    x [B, 3, 64, 64] in [-1, 1]
    stem      3x3 conv 3 -> 16, BN, ReLU                     64 x 64
    stage 1   residual block 16 -> 32, stride 2              32 x 32
    stage 2   residual block 32 -> 64, stride 2              16 x 16
    stage 3   residual block 64 -> 128, stride 2              8 x 8
    stage 4   residual block 128 -> 256, stride 2             4 x 4   = the trunk's feature map
    features  global average pool                         [B, 256]   (Fréchet distance)
    embed     BN, flatten (4096), linear -> 128, BN, L2 norm  [B, 128]   (identity, ArcFace-trained)
    attribute 1x1 conv 256 -> 32, BN, ReLU, flatten (512), linear -> 128, ReLU, linear -> 11
              -> low + (high - low) * sigmoid                 [B, 11]   (label units)

The embedding head flattens the 4 x 4 map instead of pooling it (as ArcFace's IR networks do): where a feature
sits matters for a face.

Use it in eval mode (:func:`load_domain_net` returns it frozen: eval, no parameter gradients; gradients still flow
to the input, so it serves as a loss).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.files import FORMAT_VERSION, CheckpointError, atomic_save, load_state_dict_strict, validate_finite
from ..formats.read import detect_format, load_file
from ..data.synthfaces import ATTRIBUTES

__all__ = ["DomainNet", "ResidualBlock", "save_domain_net", "load_domain_net", "domain_net_checkpoint",
           "DOMAIN_NET_KIND"]

DOMAIN_NET_KIND = "domain_net"
_RESERVED_KEYS = ("format", "kind", "format_version", "kwargs", "state_dict")


class ResidualBlock(nn.Module):
    """ResNet basic block (post-activation): ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    ``[B, in_ch, H, W] -> [B, out_ch, H / stride, W / stride]``; the shortcut is a strided 1x1 conv + BN when the
    shape changes, else the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class DomainNet(nn.Module):
    """A small CNN with a shared trunk and three outputs: identity embedding, attributes, Fréchet features.

    Args:
        input_size: the resolution the trunk runs at (a power of two, >= 16). Inputs of another size are resized
            to it inside every method: an integer-factor reduction (128 or 256 px to 64 px) averages pixel blocks
            (``F.interpolate(mode='area')``, the box filter SynthFaces renders with); any other size uses
            antialiased bilinear resampling. Both are differentiable.
        stem_channels: channels of the full-resolution stem conv.
        channels: output channels of the stride-2 stages; each stage halves the resolution, so
            ``input_size / 2 ** len(channels)`` is the side of the final map (4 at the defaults).
        blocks: residual blocks per stage (the first of each stage has stride 2).
        embed_dim: size of the identity embedding.
        attr_reduce, attr_hidden: the attribute head's 1x1 reduction channels and hidden width.
        attributes: names of the predicted attributes, a subset of :data:`clcae.data.synthfaces.ATTRIBUTES` in
            any order (default: all 11 in label order); each is mapped to its label range.
        dropout: dropout on the flattened map before the embedding layer (training only).

    Inputs are ``[B, 3, H, W]`` float images in [-1, 1] (SynthFaces' convention), ``H == W``.
    """

    def __init__(self, input_size: int = 64, stem_channels: int = 16, channels: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 1, 1, 1), embed_dim: int = 128, attr_reduce: int = 32,
                 attr_hidden: int = 128, attributes: Sequence[str] | None = None, dropout: float = 0.0):
        super().__init__()
        channels, blocks = [int(c) for c in channels], [int(b) for b in blocks]
        if len(channels) != len(blocks) or not channels or min(blocks) < 1:
            raise ValueError(f"channels {channels} and blocks {blocks} need the same length and >= 1 block each")
        map_size = int(input_size) >> len(channels)
        if input_size < 16 or input_size & (input_size - 1) or map_size < 1:
            raise ValueError(f"input_size must be a power of two >= 16 and >= 2 ** len(channels); got {input_size}")
        by_name = {a.name: a for a in ATTRIBUTES}
        names = [a.name for a in ATTRIBUTES] if attributes is None else [str(n) for n in attributes]
        unknown = [n for n in names if n not in by_name]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"attributes must be distinct names from {list(by_name)}; got {names}")
        self.config = dict(input_size=int(input_size), stem_channels=int(stem_channels), channels=channels,
                           blocks=blocks, embed_dim=int(embed_dim), attr_reduce=int(attr_reduce),
                           attr_hidden=int(attr_hidden), attributes=names, dropout=float(dropout))
        self.input_size = int(input_size)
        self.attribute_names = tuple(names)
        self.embed_dim = int(embed_dim)
        self.feature_dim = channels[-1]
        self.map_size = map_size

        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels),
                                  nn.ReLU(inplace=True))
        stages, prev = [], stem_channels
        for ch, n in zip(channels, blocks):
            stages.append(nn.Sequential(*[ResidualBlock(prev if i == 0 else ch, ch, 2 if i == 0 else 1)
                                          for i in range(n)]))
            prev = ch
        self.stages = nn.Sequential(*stages)
        flat = channels[-1] * map_size * map_size
        self.embed_head = nn.Sequential(nn.BatchNorm2d(channels[-1]), nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(flat, embed_dim), nn.BatchNorm1d(embed_dim))
        self.attr_head = nn.Sequential(
            nn.Conv2d(channels[-1], attr_reduce, 1, bias=False), nn.BatchNorm2d(attr_reduce), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(attr_reduce * map_size * map_size, attr_hidden), nn.ReLU(inplace=True),
            nn.Linear(attr_hidden, len(names)))
        # label ranges (derived from the names, so not stored in the state dict)
        self.register_buffer("attr_low", torch.tensor([by_name[n].low for n in names]), persistent=False)
        self.register_buffer("attr_high", torch.tensor([by_name[n].high for n in names]), persistent=False)
        self.register_buffer("attr_binary", torch.tensor([by_name[n].kind == "binary" for n in names]),
                             persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():  # zero-init the last BN of each residual branch: blocks start as identities
            if isinstance(block, ResidualBlock):
                nn.init.zeros_(block.bn2.weight)

    # ------------------------------------------------------------------ input
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``[B, 3, H, W]`` (H == W) and resize to ``input_size`` (see the class docstring)."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
            raise ValueError(f"DomainNet expects square images [B, 3, H, W]; got {tuple(x.shape)}")
        size = x.shape[-1]
        if size == self.input_size:
            return x
        if size > self.input_size and size % self.input_size == 0:
            return F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                             antialias=size > self.input_size)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the final feature map ``[B, channels[-1], map_size, map_size]`` (post-ReLU)."""
        return self.stages(self.stem(self.prepare(x)))

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images -> the trunk's intermediate maps, fine to coarse (all post-ReLU, non-negative).

        Returns ``[stem, stage 1, ..., stage N]``: the stem output ``[B, stem_channels, S, S]`` (``S`` =
        ``input_size``) and the output of every stage ``[B, channels[i], S / 2 ** (i + 1), ...]``; the last one is
        :meth:`trunk`'s map. Used by the domain perceptual loss (:class:`clcae.losses.perceptual.DomainPerceptualLoss`).
        """
        h = self.stem(self.prepare(x))
        maps = [h]
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    # ------------------------------------------------------------------ heads on a feature map
    def _embed(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed_head(fmap), dim=1)

    def _features(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def logits_to_attributes(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw attribute outputs -> label units: ``low + (high - low) * sigmoid(logits)`` per attribute.

        Continuous attributes land inside their label range; the binary one (glasses, range 0..1) becomes the
        probability that the attribute is present.
        """
        return self.attr_low + (self.attr_high - self.attr_low) * torch.sigmoid(logits)

    def normalise_attributes(self, values: torch.Tensor) -> torch.Tensor:
        """Labels in label units ``[B, A]`` -> ``(v - low) / (high - low)`` in [0, 1] (the training targets)."""
        return (values - self.attr_low) / (self.attr_high - self.attr_low)

    # ------------------------------------------------------------------ public outputs
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Identity embedding ``[B, embed_dim]``, L2-normalised (compare with a dot product = cosine)."""
        return self._embed(self.trunk(x))

    def embed_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """The identity embedding of a trunk map (:meth:`trunk`, or the last of :meth:`trunk_features`): what
        :meth:`embed` returns for the images the map came from, without running the trunk again."""
        return self._embed(fmap)

    def attribute_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw attribute head outputs ``[B, A]`` (before :meth:`logits_to_attributes`); for training losses."""
        return self.attr_head(self.trunk(x))

    def attributes(self, x: torch.Tensor) -> torch.Tensor:
        """Attribute predictions ``[B, A]`` in the label units of :data:`~clcae.data.synthfaces.ATTRIBUTES`
        (order :attr:`attribute_names`): continuous ones regressed into ``[low, high]``, glasses a probability."""
        return self.logits_to_attributes(self.attribute_logits(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled trunk features ``[B, feature_dim]`` (non-negative), for the Fréchet distance."""
        return self._features(self.trunk(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All outputs from one trunk pass: ``{'embed': [B, E], 'attributes': [B, A], 'attribute_logits': [B, A],
        'features': [B, F]}`` (see the methods of the same names)."""
        fmap = self.trunk(x)
        logits = self.attr_head(fmap)
        return {"embed": self._embed(fmap), "attributes": self.logits_to_attributes(logits),
                "attribute_logits": logits, "features": self._features(fmap)}


# ---------------------------------------------------------------------------------------------------- checkpoints
def domain_net_checkpoint(net: DomainNet, extra: Mapping[str, Any] | None = None) -> dict:
    """Our self-describing checkpoint of ``net`` as a dict of tensors and primitives (``extra`` added on top)."""
    ckpt = {"format": f"clcae.{DOMAIN_NET_KIND}", "kind": DOMAIN_NET_KIND, "format_version": FORMAT_VERSION,
            "kwargs": dict(net.config), "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if extra:
        clash = [k for k in extra if k in _RESERVED_KEYS]
        if clash:
            raise ValueError(f"extra entries may not replace the checkpoint's own keys {clash}")
        ckpt.update(extra)
    return ckpt


def save_domain_net(net: DomainNet, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``net`` in our format (atomically). ``extra``: more plain entries (e.g. ``{'metrics': {...}}``).

    The file loads with ``torch.load(weights_only=True)`` and rebuilds its network with :func:`load_domain_net`.
    """
    return atomic_save(domain_net_checkpoint(net, extra), path)


def load_domain_net(path: str | os.PathLike, device: str | torch.device = "cpu") -> DomainNet:
    """Load a :class:`DomainNet` written by :func:`save_domain_net`: strict, weights only, frozen.

    Returns the network on ``device`` in eval mode with ``requires_grad=False`` on every parameter (gradients
    still flow to its input). Raises :class:`~clcae.checkpoints.CheckpointError` naming the file and the problem:
    not our format, another kind, an unsupported version, bad constructor arguments, missing / unexpected keys or
    shape mismatches (named), NaN / Inf weights.
    """
    src = str(path)
    obj = load_file(path)
    if detect_format(obj) != "clcae":
        raise CheckpointError(f"{src}: not a clcae checkpoint (expected format 'clcae.{DOMAIN_NET_KIND}')")
    if obj.get("kind") != DOMAIN_NET_KIND:
        raise CheckpointError(f"{src}: this is a clcae '{obj.get('kind')}' checkpoint, not a {DOMAIN_NET_KIND}")
    version = obj.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{src}: format_version {version!r} is not supported (reads 1..{FORMAT_VERSION})")
    kwargs, sd = obj.get("kwargs"), obj.get("state_dict")
    if not isinstance(kwargs, dict) or not isinstance(sd, dict):
        raise CheckpointError(f"{src}: 'kwargs' and 'state_dict' must be dicts")
    try:
        net = DomainNet(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{src}: cannot build a DomainNet from the stored kwargs {kwargs}: {e}") from e
    validate_finite(sd, src)
    load_state_dict_strict(net, sd, src, "domain network")
    return net.to(device).eval().requires_grad_(False)
