"""Inversion encoders on the IR-SE trunk: CLCAE (stage 2), pSp and e4e, in the official parameter layout.

All three share :class:`PyramidEncoder` (an :class:`~clcae.networks.backbones.IRSEBackbone` plus the two FPN
lateral convs ``latlayer1``/``latlayer2``), so their state dicts carry exactly the keys of the released
checkpoints (``input_layer.*``, ``body.*``, ``styles.*``, ..., ``latlayer1.*``, ``latlayer2.*``).

Feature pyramid (for a 256x256 input): ``c3`` [B, 512, 16, 16]; ``p2 = up(c3) + latlayer1(c2)`` [B, 512, 32, 32];
``p1 = up(p2) + latlayer2(c1)`` [B, 512, 64, 64]; ``up`` is bilinear with ``align_corners=True``. Per-layer heads
(:class:`GradualStyleBlock`) read c3 for the coarse layers, p2 for the middle layers and p1 for the fine ones.

- :class:`GradualStyleEncoder` (pSp): one head per W+ layer, split 3 / 4 / rest; returns codes [B, n, D] (the
  caller adds ``latent_avg``).
- :class:`Encoder4Editing` (e4e): ``w_i = w_0 + delta_i`` with ``w_0`` from the first (coarse) head and
  ``delta_i`` from head i (all deltas applied once trained: the final progressive stage).
- :class:`CLCAEEncoder` (CLCAE stage 2): the foundation offset ``dw = styles[0](c3)``, per-layer offsets through one
  cross-attention block per layer (query ``dw``, key/value the layer's head output), and the F-space feature
  ``f`` [B, 512, 16, 16] (p1 tokens query ``dw``, then a small CNN). See ``docs/OFFICIAL_CHECKPOINTS.md``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import IRSE_WIDTHS, IRSEBackbone
from .layers import EqualLinear

__all__ = ["DEFAULT_IDX_K", "GradualStyleBlock", "GradualFeatureBlock", "CrossAttentionLayer", "PyramidEncoder",
           "GradualStyleEncoder", "Encoder4Editing", "CLCAEEncoder", "upsample_add", "n_styles_for_size"]

#: The generator activation index of CLCAE's F space (the feature ``f`` the encoder predicts; 16x16 at 1024 px),
#: the official default of ``idx_k``: what a checkpoint or a latents file that names none uses.
DEFAULT_IDX_K = 5
HEAD_SLOPE = 0.01  # LeakyReLU slope of every conv tower (pinned down by the official-forward fixtures)


def n_styles_for_size(size: int) -> int:
    """Number of W+ layers of a rosinality generator of resolution ``size``: ``2 * log2(size) - 2``."""
    return 2 * int(round(math.log2(size))) - 2


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear (``align_corners=True``) upsampling of ``x`` to ``y``'s size, plus ``y``."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


def _n_halvings(side: int) -> int:
    """Stride-2 convs (padding 1) that take a side of ``side`` down to 1."""
    return max(1, math.ceil(math.log2(side))) if side > 1 else 1


class GradualStyleBlock(nn.Module):
    """Conv tower to one style vector: ``n`` x [3x3 conv stride 2 (bias) + LeakyReLU 0.01], then EqualLinear.

    ``n = ceil(log2(spatial))`` takes a ``spatial``-sided map to 1x1 (16 -> 4 convs, 32 -> 5, 64 -> 6; a 12x16 car
    map also needs 4). Keys ``convs.{0,2,...}`` and ``linear``. Input [B, in_c, h, w] with ``max(h, w) <=
    spatial`` -> [B, out_c].
    """

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        self.spatial = spatial
        layers: list[nn.Module] = []
        for i in range(_n_halvings(spatial)):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU(HEAD_SLOPE)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"GradualStyleBlock(spatial={self.spatial}) got a map that does not reduce to 1x1 "
                             f"(left {tuple(x.shape[-2:])})")
        return self.linear(x.reshape(x.shape[0], self.out_c))


class GradualFeatureBlock(nn.Module):
    """CLCAE's ``content_layer``: ``num_down`` x [3x3 conv stride 2 (bias) + LeakyReLU 0.01].

    [B, in_c, 64, 64] -> [B, out_c, 16, 16] with the default two convs. Keys ``convs.{0,2}``.
    ``num_down=0`` (small domains whose p1 map already has the generator's feature size, e.g. a 64 px input and
    a 64 px generator) keeps one 3x3 conv with stride 1, so the branch still maps ``in_c`` to ``out_c`` channels.
    """

    def __init__(self, in_c: int, out_c: int, num_down: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_down):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU(HEAD_SLOPE)]
        if num_down == 0:
            layers += [nn.Conv2d(in_c, out_c, 3, 1, 1), nn.LeakyReLU(HEAD_SLOPE)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class CrossAttentionLayer(nn.Module):
    """DETR-style decoder layer without self-attention, post-norm (CLCAE's ``CrossAttention``).

    ``t = norm2(tgt + drop(MHA(q=tgt, k=v=memory)))``; ``out = norm3(t + drop(linear2(drop(relu(linear1(t))))))``.
    ``norm1`` exists only because the official layer keeps it (its weights are in the checkpoints); it is unused.
    Sequence-first tensors: ``tgt`` [Lq, B, d_model], ``memory`` [Lk, B, kdim] -> [Lq, B, d_model]. With a single
    key/value token (every CLCAE use) the attention weights are exactly 1, so the attention output is
    ``out_proj(v_proj(memory))`` for every query; attention dropout still acts in training as in the official code.
    """

    def __init__(self, d_model: int = 512, nhead: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1,
                 kdim: int | None = None):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, kdim=kdim, vdim=kdim)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        a = self.multihead_attn(tgt, memory, memory, need_weights=False)[0]
        t = self.norm2(tgt + self.dropout2(a))
        ff = self.linear2(self.dropout(F.relu(self.linear1(t))))
        return self.norm3(t + self.dropout3(ff))


class PyramidEncoder(IRSEBackbone):
    """IR-SE trunk + FPN laterals: the shared base of every encoder here.

    Args:
        input_size: (H, W) of the encoder input (256x256 for faces, 192x256 for cars); multiples of 16.
        style_dim: dimension of each predicted code (512).
        num_layers, in_channels, widths, width_mult, use_se, se_reduction: the trunk
            (:class:`~clcae.networks.backbones.IRSEBackbone`).

    The FPN width is the trunk's c3 width (512 for the standard trunk). Subclasses register their heads, then call
    :meth:`_add_laterals` so that ``latlayer1``/``latlayer2`` come last in the state dict, as in the releases.
    """

    def __init__(self, input_size: Sequence[int] = (256, 256), style_dim: int = 512, num_layers: int = 50,
                 in_channels: int = 3, widths: Sequence[int] = IRSE_WIDTHS, width_mult: float = 1.0,
                 use_se: bool = True, se_reduction: int = 16):
        super().__init__(num_layers=num_layers, in_channels=in_channels, widths=widths, width_mult=width_mult,
                         use_se=use_se, se_reduction=se_reduction)
        h, w = (int(v) for v in input_size)
        if h % 16 or w % 16:
            raise ValueError(f"input_size must be multiples of 16; got {(h, w)}")
        self.input_size = (h, w)
        self.style_dim = style_dim
        self.fpn_channels = self.tap_channels[2]
        side = max(h, w)
        # head "spatial" sizes of the maps they read (16 / 32 / 64 at 256 px): c3, p2, p1
        self.map_sides = (side // 16, side // 8, side // 4)

    def _add_laterals(self) -> None:
        c1, c2, _ = self.tap_channels
        self.latlayer1 = nn.Conv2d(c2, self.fpn_channels, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(c1, self.fpn_channels, 1, 1, 0)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.input_size or x.shape[1] != self.backbone_config["in_channels"]:
            raise ValueError(f"{type(self).__name__} expects [B, {self.backbone_config['in_channels']}, "
                             f"{self.input_size[0]}, {self.input_size[1]}]; got {tuple(x.shape)}")

    def pyramid(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
        """``[c3, p2, p1][:levels]`` for an input x [B, C, H, W] (p2 and p1 only computed when asked for)."""
        self._check_input(x)
        c1, c2, c3 = self.trunk(x)
        maps = [c3]
        if levels >= 2:
            maps.append(upsample_add(c3, self.latlayer1(c2)))
        if levels >= 3:
            maps.append(upsample_add(maps[1], self.latlayer2(c1)))
        return maps

    def _head(self, level: int) -> GradualStyleBlock:
        return GradualStyleBlock(self.fpn_channels, self.style_dim, self.map_sides[level])

    @staticmethod
    def _level(i: int, coarse_ind: int, middle_ind: int) -> int:
        return 0 if i < coarse_ind else (1 if i < middle_ind else 2)

    def _trunk_config(self) -> dict:
        cfg = dict(self.backbone_config)
        cfg.pop("taps")
        return dict(input_size=list(self.input_size), style_dim=self.style_dim, **cfg)


class GradualStyleEncoder(PyramidEncoder):
    """pSp's encoder: one :class:`GradualStyleBlock` per W+ layer (``styles.0 .. styles.{n-1}``).

    Layers ``i < coarse_ind`` read c3, ``i < middle_ind`` read p2, the rest p1 (3 / 4 / rest by default).
    Forward: x [B, 3, H, W] -> codes [B, n_styles, style_dim] (pSp adds ``latent_avg`` row by row afterwards).
    With ``n_styles=1`` this is also the trunk + ``styles.0`` + laterals of CLCAE's stage-1 image encoder.
    """

    def __init__(self, n_styles: int = 18, coarse_ind: int = 3, middle_ind: int = 7, **trunk_kwargs):
        super().__init__(**trunk_kwargs)
        self.n_styles = n_styles
        self.coarse_ind = coarse_ind
        self.middle_ind = middle_ind
        self.styles = nn.ModuleList([self._head(self._level(i, coarse_ind, middle_ind)) for i in range(n_styles)])
        self._add_laterals()
        self.config = dict(n_styles=n_styles, coarse_ind=coarse_ind, middle_ind=middle_ind, **self._trunk_config())

    def _levels_needed(self, n: int) -> int:
        return 1 + (n > self.coarse_ind) + (n > self.middle_ind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.pyramid(x, self._levels_needed(self.n_styles))
        codes = [head(maps[self._level(i, self.coarse_ind, self.middle_ind)]) for i, head in enumerate(self.styles)]
        return torch.stack(codes, dim=1)


class Encoder4Editing(GradualStyleEncoder):
    """e4e's encoder: same modules (and keys) as pSp's, different combination.

    ``w_0 = styles[0](c3)``; ``codes[:, 0] = w_0`` and ``codes[:, i] = w_0 + styles[i](map_i)`` for
    ``1 <= i <= progressive_stage``, ``w_0`` alone above it. ``progressive_stage=None`` (the default, and what a
    trained e4e model uses) applies all ``n_styles - 1`` deltas. Forward: x -> codes [B, n_styles, style_dim].
    """

    def __init__(self, n_styles: int = 18, coarse_ind: int = 3, middle_ind: int = 7,
                 progressive_stage: int | None = None, **trunk_kwargs):
        super().__init__(n_styles=n_styles, coarse_ind=coarse_ind, middle_ind=middle_ind, **trunk_kwargs)
        self.progressive_stage = progressive_stage

    @property
    def progressive_stage(self) -> int | None:
        return self._progressive_stage

    @progressive_stage.setter
    def progressive_stage(self, stage: int | None) -> None:
        # kept in ``config`` too, so a saved model is rebuilt at the stage it was saved at (a training-time stage of
        # 0 stored at construction once made an exported e4e run with its deltas off)
        if stage is not None:
            stage = int(stage)
            if stage < 0:
                raise ValueError(f"progressive_stage must be >= 0 or None, got {stage}")
            if stage >= self.n_styles - 1:
                stage = None  # every delta is on: the trained-model state
        self._progressive_stage = stage
        self.config["progressive_stage"] = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stage = self.n_styles - 1 if self.progressive_stage is None else self.progressive_stage  # setter clamps
        maps = self.pyramid(x, self._levels_needed(stage + 1))
        w0 = self.styles[0](maps[0])
        codes = [w0]
        for i in range(1, self.n_styles):
            if i <= stage:
                codes.append(w0 + self.styles[i](maps[self._level(i, self.coarse_ind, self.middle_ind)]))
            else:
                codes.append(w0)
        return torch.stack(codes, dim=1)


class CLCAEEncoder(PyramidEncoder):
    """CLCAE's stage-2 encoder (the ``encoder`` of the official ``AFPSP``).

    Modules, in the official order: ``styles.0`` (foundation head on c3), ``content_layer``
    (:class:`GradualFeatureBlock`), ``feature_cross_attention``, ``styles_others`` (one head per remaining W+
    layer: ``j < coarse_ind`` on c3, ``j < middle_ind`` on p2, the rest on p1; 2 / 6 by default, i.e. W+ layers
    0-2 from c3, 3-6 from p2, 7+ from p1), ``cross_attention`` (one :class:`CrossAttentionLayer` per W+ layer;
    omitted when ``w_attention=False``), ``latlayer1``, ``latlayer2``.

    Forward ``x`` [B, 3, H, W] (the residual ``image - avg_image``), optional ``w_offset`` [B, D] (an edit direction
    added to ``dw`` before both cross-attention stages) -> ``(dw, offsets, f)``:

    - ``dw`` [B, D]: the foundation offset (``w = dw + latent_avg``);
    - ``offsets`` [B, n_styles, D]: ``CA_k(q=dw, kv=l_k)`` with ``l_0 = dw``, ``l_k = styles_others[k-1](.)``
      (``l_k`` itself when ``w_attention=False``); W+ is ``offsets + w`` (the query residual counted twice, as in
      the official code);
    - ``f`` [B, feature_channels, 16, 16]: p1 tokens (row-major, sequence-first) query ``dw``, back to a map,
      zero-padded to a square (a 48x64 car map gets 8 rows above and below), then ``content_layer``.

    ``feature_residual=True`` (ours, not in the official code): ``f`` is a correction ``Δf`` that the inverter adds
    to the generator's own activation at the injection index (``G_k(W+) + Δf``) instead of a replacement for it; a
    zero-initialised 1x1 conv (``feature_delta``) ends the branch, so training starts from the W+ image.
    """

    def __init__(self, n_styles: int = 18, coarse_ind: int = 2, middle_ind: int = 6, w_attention: bool = True,
                 nhead: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1, feature_channels: int = 512,
                 feature_downsample: int = 2, feature_residual: bool = False, **trunk_kwargs):
        super().__init__(**trunk_kwargs)
        self.n_styles = n_styles
        self.feature_residual = bool(feature_residual)
        self.coarse_ind = coarse_ind
        self.middle_ind = middle_ind
        self.w_attention = w_attention
        d = self.style_dim
        self.styles = nn.ModuleList([self._head(0)])
        self.content_layer = GradualFeatureBlock(self.fpn_channels, feature_channels, feature_downsample)
        self.feature_cross_attention = CrossAttentionLayer(self.fpn_channels, nhead, dim_feedforward, dropout,
                                                           kdim=None if d == self.fpn_channels else d)
        self.styles_others = nn.ModuleList([self._head(self._level(j, coarse_ind, middle_ind))
                                            for j in range(n_styles - 1)])
        if w_attention:
            self.cross_attention = nn.ModuleList([CrossAttentionLayer(d, nhead, dim_feedforward, dropout)
                                                  for _ in range(n_styles)])
        self._add_laterals()
        if self.feature_residual:  # f is a correction added to G's own activation: a zero-initialised linear end
            self.feature_delta = nn.Conv2d(feature_channels, feature_channels, 1)
            self.zero_feature_delta()
        self.config = dict(n_styles=n_styles, coarse_ind=coarse_ind, middle_ind=middle_ind, w_attention=w_attention,
                           nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                           feature_channels=feature_channels, feature_downsample=feature_downsample,
                           **({"feature_residual": True} if self.feature_residual else {}), **self._trunk_config())

    def set_wplus_offset_gain(self, gain: float) -> None:
        """Set the gain of every W+ cross-attention layer's last LayerNorm (``norm3``) to ``gain`` and its bias to 0:
        the W+ offsets then start with norm about ``gain * sqrt(style_dim)`` (the ``--wplus-offset-gain`` option;
        no-op without cross-attention). The official initialisation (gain about 1) suits FFHQ's W; the 64 px
        SynthFaces generator's W is narrower (docs/RESULTS.md)."""
        if self.w_attention:
            for layer in self.cross_attention:
                nn.init.constant_(layer.norm3.weight, float(gain))
                nn.init.zeros_(layer.norm3.bias)

    def zero_feature_delta(self) -> None:
        """Zero the residual F branch's last conv (no-op without one), so that W+F starts as the W+ image; call it
        again after any whole-network re-initialisation."""
        if self.feature_residual:
            nn.init.zeros_(self.feature_delta.weight)
            nn.init.zeros_(self.feature_delta.bias)

    def forward(self, x: torch.Tensor, w_offset: torch.Tensor | None = None, detach_query: bool = False):
        c3, p2, p1 = self.pyramid(x, 3)
        dw = self.styles[0](c3)
        if w_offset is not None:
            dw = dw + w_offset
        # detach_query (training option --query-grad detach): the cross-attention stages see dw as a constant, so
        # no W+/F loss reaches the w head through a LayerNorm of the (at first near-zero) query; values unchanged
        q = dw.detach() if detach_query else dw
        maps = (c3, p2, p1)
        latents = [q] + [head(maps[self._level(j, self.coarse_ind, self.middle_ind)])
                         for j, head in enumerate(self.styles_others)]
        if self.w_attention:
            query = q.unsqueeze(0)  # [1, B, D]
            offsets = [ca(query, lk.unsqueeze(0)).squeeze(0) for ca, lk in zip(self.cross_attention, latents)]
        else:
            offsets = latents
        f = self.feature(p1, q)
        return dw, torch.stack(offsets, dim=1), f

    def feature(self, p1: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        """The F branch: p1 [B, C, h, w] and dw [B, D] -> f [B, feature_channels, 16, 16]."""
        b, c, h, w = p1.shape
        tokens = p1.flatten(2).permute(2, 0, 1)  # [h*w, B, C], row-major positions
        out = self.feature_cross_attention(tokens, dw.unsqueeze(0))
        out = out.permute(1, 2, 0).reshape(b, c, h, w)
        if h != w:
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            out = F.pad(out, (left, side - w - left, top, side - h - top))
        out = self.content_layer(out)
        return self.feature_delta(out) if self.feature_residual else out
