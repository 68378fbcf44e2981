"""Perceptual distances: LPIPS (Zhang et al. 2018) with local backbone weights, and a domain perceptual distance.

- :class:`LPIPSLoss` wraps the ``lpips`` package (its network definitions and its v0.1 linear heads, which ship
  with the package). The ImageNet backbone (AlexNet / VGG-16 / SqueezeNet-1.1 from torchvision) is read from a
  local file; nothing is ever downloaded: a missing file raises :class:`MissingWeightsError`, never a silent fall
  back to random weights. This is the LPIPS of the CLCAE training loss and of its evaluation (AlexNet, v0.1, images
  average-pooled to 256x256 in [-1, 1]; spec §4.9 and §8).
- :class:`DomainPerceptualLoss` is an LPIPS-*like* distance on the feature maps of the frozen SynthFaces domain
  network (:class:`clcae.networks.domain.DomainNet`), for the procedural domain where no ImageNet backbone is
  available. It has no learned heads and is not comparable with LPIPS values; its :attr:`name` says so.
- :func:`build_perceptual` builds either from a config string.

Every loss here is frozen (eval mode, no parameter gradients; :meth:`train` cannot switch its dropout on) while
gradients flow to the input images, and returns per-sample values ``[B]`` (``reduction='none'``) or their mean.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.files import load_state_dict_strict
from ..formats.read import load_file

__all__ = ["MissingWeightsError", "LPIPSLoss", "DomainPerceptualLoss", "build_perceptual", "lpips_backbone_file",
           "default_lpips_backbone_path", "unit_normalize"]

#: torchvision builder and weights enum per LPIPS trunk (the enum gives the official file name; nothing is fetched).
_TRUNKS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
_REDUCTIONS = ("mean", "none")
#: smallest image side every LPIPS trunk can process (AlexNet's stride-4 stem and two max-pools need >= 32 px)
_MIN_SIDE = 32


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that a loss or metric needs are not on this machine (nothing is downloaded)."""


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def _check_pair(x: torch.Tensor, y: torch.Tensor, who: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{who}: expected RGB image batches [B, 3, H, W]; got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"{who}: the two image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")


def _repeat_to(target: torch.Tensor, rows: int, who: str) -> torch.Tensor:
    """``target`` [B, ...] tiled along dim 0 to ``rows`` = k * B rows (row i is target row i mod B)."""
    b = target.shape[0]
    if b == 0 or rows % b:
        raise ValueError(f"{who}: {rows} images cannot be matched to a target batch of {b} (need a multiple)")
    return target if rows == b else target.repeat((rows // b,) + (1,) * (target.ndim - 1))


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every spatial feature vector of ``[B, C, H, W]`` to unit length along ``C`` (LPIPS' normalisation).

    Computed as ``f / sqrt(|f|^2 + eps^2)``: equal to the ``lpips`` package's ``f / (|f| + eps)`` to float
    precision wherever ``|f| >> eps``, but with a finite gradient where a feature vector is exactly zero (the
    package's ``sqrt`` backward gives NaN there).
    """
    return features * torch.rsqrt(features.pow(2).sum(dim=1, keepdim=True) + eps * eps)


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"a size must be an int or (height, width) of positive ints; got {size}")
    return size


# ---------------------------------------------------------------------------------------------------- LPIPS
def _backbone_url(net: str) -> str:
    if net not in _TRUNKS:
        raise ValueError(f"net must be one of {sorted(_TRUNKS)}; got {net!r}")
    import torchvision.models as tvm

    return getattr(tvm, _TRUNKS[net]).IMAGENET1K_V1.url  # metadata only: nothing is fetched


def lpips_backbone_file(net: str = "alex") -> str:
    """The file name torchvision gives the ImageNet weights of an LPIPS trunk, e.g. ``alexnet-owt-7be5be79.pth``."""
    return os.path.basename(_backbone_url(net))


def default_lpips_backbone_path(net: str = "alex") -> Path:
    """Where torchvision would cache the trunk's weights: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / lpips_backbone_file(net)


def _trunk_key_map(trunk: nn.Module) -> dict[str, str]:
    """``lpips`` trunk key (``sliceK.N.rest``) -> torchvision key (``features.N.rest``): the slices keep the
    indices of torchvision's ``features`` Sequential."""
    return _key_map(trunk, r"slice\d+\.(\d+)\.(.+)", r"features.\1.\2", "trunk")


def _heads_key_map(heads: nn.Module) -> dict[str, str]:
    """``lpips`` head key (``lins.I.rest``, the ModuleList) -> the package's file key (``linI.rest``)."""
    return _key_map(heads, r"(\d+)\.(.+)", r"lin\1.\2", "linear heads")


def _key_map(module: nn.Module, pattern: str, replacement: str, what: str) -> dict[str, str]:
    mapping = {}
    for key in module.state_dict():
        if re.fullmatch(pattern, key) is None:
            raise RuntimeError(f"unexpected key {key!r} in the lpips {what}; the lpips package layout changed")
        mapping[key] = re.sub(pattern, replacement, key)
    return mapping


class LPIPSLoss(nn.Module):
    """LPIPS v0.1 distance with a locally loaded ImageNet trunk; frozen, differentiable w.r.t. the images.

    Args:
        net: ``'alex'`` (CLCAE / pSp), ``'vgg'`` or ``'squeeze'``.
        backbone_weights: the torchvision ImageNet state dict of the trunk (a ``.pth`` file with ``features.*``
            keys; ``classifier.*`` keys, if present, are ignored). Default: the torch hub cache,
            ``torch.hub.get_dir()/checkpoints/<torchvision file name>`` (:func:`default_lpips_backbone_path`),
            e.g. ``~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth``. Missing: :class:`MissingWeightsError`.
        scales: 1 computes LPIPS at the (resized) input size, as the official CLCAE code actually does; 3 sums LPIPS
            over the input size and its halves and quarters (256 + 128 + 64 at the defaults), the multi-scale loss
            the official code intended (spec §11.4). Each smaller scale is an adaptive average pool of the resized
            images.
        resize: images are first average-pooled (``F.adaptive_avg_pool2d``, the official ``face_pool``) to this
            side (int) or ``(height, width)``; ``None`` keeps the input size. Default 256, the official protocol.
        reduction: ``'none'`` (per-sample ``[B]``) or ``'mean'`` (scalar); :meth:`forward` may override it.

    Forward: ``x, y`` ``[B, 3, H, W]`` in [-1, 1] -> LPIPS ``[B]`` (>= 0, 0 for identical images, symmetric).
    Gradients flow to both inputs; the network's parameters never require gradients.

    The v0.1 linear heads come from the ``lpips`` package's own files; construction never downloads anything.
    """

    def __init__(self, net: str = "alex", backbone_weights: str | os.PathLike | None = None, scales: int = 1,
                 resize: int | Sequence[int] | None = 256, reduction: str = "none"):
        super().__init__()
        import lpips

        file_name = lpips_backbone_file(net)
        if int(scales) < 1:
            raise ValueError(f"scales must be >= 1; got {scales}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.net_type, self.scales, self.resize, self.reduction = net, int(scales), _as_size(resize), reduction
        self.name = f"lpips_{net}" + ("" if self.scales == 1 else f"_{self.scales}scales")

        path = Path(backbone_weights) if backbone_weights is not None else default_lpips_backbone_path(net)
        if not path.is_file():
            raise MissingWeightsError(
                f"LPIPS ({net}) needs the torchvision ImageNet weights '{file_name}', but {path} does not exist. "
                f"Nothing is downloaded: copy '{file_name}' (torchvision's file, from {_backbone_url(net)}) to "
                f"{default_lpips_backbone_path(net)} (the torch hub cache) or pass backbone_weights=<path>.")

        with warnings.catch_warnings():  # torchvision's deprecation notice for pretrained=False
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand: random trunk (no download); pretrained=False: random heads; both are loaded below
            model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)

        heads_path = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
        if not heads_path.is_file():
            raise MissingWeightsError(f"the lpips package's v0.1 linear heads are missing: {heads_path} "
                                      "(reinstall the 'lpips' package)")
        load_state_dict_strict(model.lins, load_file(heads_path), str(heads_path), "LPIPS v0.1 linear heads",
                               key_map=_heads_key_map(model.lins))
        # torchvision's file: the trunk's features.* (any it does not use, and the classifier, are skipped)
        load_state_dict_strict(model.net, load_file(path), str(path), f"LPIPS {net} trunk (torchvision features)",
                               key_map=_trunk_key_map(model.net), ignore_prefixes=("features.", "classifier."))

        self.lpips = model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        """The loss stays in eval mode whatever ``mode`` is (its heads have dropout)."""
        super().train(mode)
        self.lpips.eval()
        return self

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Single-scale LPIPS ``[B]`` of two batches at their given size (no resizing), in [-1, 1]."""
        if min(x.shape[-2:]) < _MIN_SIDE:
            raise ValueError(f"{self.name}: images must be at least {_MIN_SIDE} px per side at every scale; got "
                             f"{tuple(x.shape[-2:])}")
        m = self.lpips
        feats = m.net(m.scaling_layer(torch.cat([x, y])))  # one pass for both batches (the trunks have no BN)
        total = x.new_zeros(x.shape[0])
        for head, f in zip(m.lins, feats):
            fx, fy = unit_normalize(f).chunk(2)
            total = total + head((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        """``x, y`` ``[B, 3, H, W]`` in [-1, 1] -> LPIPS ``[B]`` (or its mean); see the class docstring."""
        _check_pair(x, y, self.name)
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x, y = F.adaptive_avg_pool2d(x, self.resize), F.adaptive_avg_pool2d(y, self.resize)
        h, w = x.shape[-2:]
        total = self.distance(x, y)
        for s in range(1, self.scales):
            size = (h >> s, w >> s)
            total = total + self.distance(F.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(y, size))
        return _reduce(total, self.reduction if reduction is None else reduction)

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """What :meth:`to_target` compares with: here the target images themselves (detached)."""
        return y.detach()

    def to_target(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS ``[k * B]`` of ``x`` (k batches stacked along dim 0) to the target ``[B]`` of
        :meth:`target`, row i against target row i mod B (one network call for all k batches)."""
        return self(x, _repeat_to(target, x.shape[0], self.name), reduction="none")

    def extra_repr(self) -> str:
        return f"net={self.net_type!r}, scales={self.scales}, resize={self.resize}, reduction={self.reduction!r}"


# ---------------------------------------------------------------------------------------------------- domain
class DomainPerceptualLoss(nn.Module):
    """An LPIPS-like distance on the frozen SynthFaces domain network's trunk maps (no learned heads).

    ``d(x, y) = sum_l mean_{h,w} || n(f_l(x))[:, h, w] - n(f_l(y))[:, h, w] ||^2`` where ``f_l`` are the maps of
    :meth:`clcae.networks.domain.DomainNet.trunk_features` (stem and every stage, fine to coarse) and ``n`` scales
    each spatial feature vector to unit length (:func:`unit_normalize`). Each layer contributes a value in [0, 4].
    This is LPIPS' "baseline" form (``lpips=False``) on another network: use it where the ImageNet trunk of LPIPS
    is unavailable (the 64 px SynthFaces domain). Its values are not LPIPS values (:attr:`name` is
    ``'domain_perceptual'``).

    Args:
        domain_net: a :class:`~clcae.networks.domain.DomainNet` (e.g. from
            :func:`~clcae.networks.domain.load_domain_net`); it is frozen here (eval, no parameter gradients).
            It resizes the inputs to its own ``input_size`` (see :meth:`DomainNet.prepare`).
        layers: indices into ``trunk_features`` to use (default: all).
        reduction: ``'none'`` (per-sample ``[B]``) or ``'mean'``.

    Forward: ``x, y`` ``[B, 3, H, W]`` in [-1, 1], square -> ``[B]`` (>= 0, 0 for identical images). Gradients
    flow to both inputs.
    """

    name = "domain_perceptual"

    def __init__(self, domain_net: nn.Module, layers: Sequence[int] | None = None, reduction: str = "none"):
        super().__init__()
        if not hasattr(domain_net, "trunk_features"):
            raise TypeError(f"domain_net must have trunk_features(x) (a clcae DomainNet); got {type(domain_net)}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.domain_net = domain_net.eval().requires_grad_(False)
        self.layers = None if layers is None else tuple(int(i) for i in layers)
        self.reduction = reduction

    def train(self, mode: bool = True) -> "DomainPerceptualLoss":
        """The domain network stays in eval mode (its BatchNorm statistics are fixed)."""
        super().train(mode)
        self.domain_net.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        """``x, y`` ``[B, 3, H, W]`` in [-1, 1] -> distance ``[B]`` (or its mean)."""
        _check_pair(x, y, self.name)
        maps = self.domain_net.trunk_features(torch.cat([x, y]))  # eval-mode BN: the batches do not interact
        chosen = maps if self.layers is None else [maps[i] for i in self.layers]
        total = x.new_zeros(x.shape[0])
        for f in chosen:
            fx, fy = unit_normalize(f).chunk(2)
            total = total + (fx - fy).pow(2).sum(dim=1).mean(dim=(1, 2))
        return _reduce(total, self.reduction if reduction is None else reduction)

    def target(self, y: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The unit-normalised maps of the target images ``y`` [B, 3, H, W], computed once without gradients (a
        fixed target: :meth:`to_target` differentiates only its images). ``maps``: ``trunk_features(y)`` if the
        caller already has them (e.g. shared with :class:`~clcae.losses.identity.DomainIdentity`)."""
        with torch.no_grad():
            maps = self.domain_net.trunk_features(y) if maps is None else maps
            return [unit_normalize(f) for f in (maps if self.layers is None else [maps[i] for i in self.layers])]

    def to_target(self, x: torch.Tensor, target: Sequence[torch.Tensor],
                  maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-sample distance ``[k * B]`` of ``x`` (k batches of B images stacked along dim 0) to the target of
        :meth:`target`, row i against target row i mod B: one network pass for all k batches, none for the
        target. Equal to ``forward(x_j, y)`` for every batch j up to float rounding. ``maps``: the domain
        network's ``trunk_features(x)`` if the caller already has them."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected RGB image batches [B, 3, H, W]; got {tuple(x.shape)}")
        maps = self.domain_net.trunk_features(x) if maps is None else maps
        chosen = maps if self.layers is None else [maps[i] for i in self.layers]
        total = x.new_zeros(x.shape[0])
        for f, ft in zip(chosen, target):
            b = ft.shape[0]
            if b == 0 or f.shape[0] % b:
                raise ValueError(f"{self.name}: {f.shape[0]} images cannot be matched to a target batch of {b}")
            # [k, B, C, H, W] against the target broadcast over k (no repeated copy of the target's maps)
            d = unit_normalize(f).unflatten(0, (f.shape[0] // b, b)) - ft
            total = total + d.pow(2).sum(dim=2).mean(dim=(2, 3)).flatten()
        return total

    def extra_repr(self) -> str:
        return f"layers={self.layers}, reduction={self.reduction!r}"


def build_perceptual(kind: str, **kwargs) -> nn.Module | None:
    """Build the perceptual loss named by ``kind``.

    - ``'lpips'``: :class:`LPIPSLoss` (kwargs: ``net``, ``backbone_weights``, ``scales``, ``resize``,
      ``reduction``);
    - ``'domain'``: :class:`DomainPerceptualLoss` (kwargs: ``domain_net`` (required), ``layers``, ``reduction``);
    - ``'none'``: returns ``None`` (build only the losses with a weight > 0; the caller skips the term).
    """
    if kind == "lpips":
        return LPIPSLoss(**kwargs)
    if kind == "domain":
        if kwargs.get("domain_net") is None:
            raise ValueError("build_perceptual('domain') needs domain_net=<DomainNet> (clcae.networks.domain)")
        return DomainPerceptualLoss(**kwargs)
    if kind == "none":
        return None
    raise ValueError(f"unknown perceptual loss kind {kind!r}; expected 'lpips', 'domain' or 'none'")
