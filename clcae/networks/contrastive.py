"""CLCAE stage 1: the contrastive image and latent encoders (the "alignment critic"), official parameter layout.

- :class:`ImageEncoder` (``E_I``): the IR-SE-50 trunk + ``styles.0`` head of the stage-2 encoder (plus the unused
  FPN laterals, kept so the names match), a :class:`Projection` head ``image_projection`` and the learned
  temperature ``logit_scale``. Input: the residual image ``x - avg_image`` [B, 3, 256, 256].
- :class:`LatentEncoder` (``E_w``): a learned ``pos_embedding`` and three post-norm transformer encoder layers
  (``coarse``, ``medium``, ``fine``) over the single token ``w - latent_avg``, then ``latent_projection``.

Both return L2-normalised embeddings when ``use_norm`` (the official runs set it). The keys equal those of the
released ``best_model_image.pt`` / ``best_model_latent.pt`` ``state_dict`` entries (loaded by
:func:`clcae.checkpoints.load_contrastive_encoder`). Training comes later; these modules only build and run.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import GradualStyleEncoder

__all__ = ["Projection", "SelfAttentionLayer", "ImageEncoder", "LatentEncoder"]


class Projection(nn.Module):
    """Projection head: Linear (no bias) -> BatchNorm1d -> ReLU -> Linear (no bias). [B, in] -> [B, out]."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 512, out_dim: int = 512):
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.lin2 = nn.Linear(hidden_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.relu(self.bn(self.lin1(x))))


class SelfAttentionLayer(nn.Module):
    """DETR-style post-norm transformer encoder layer with a positional embedding on queries and keys only.

    ``h = norm1(x + drop(MHA(q=k=x+pos, v=x)))``; ``out = norm2(h + drop(linear2(drop(relu(linear1(h))))))``.
    Sequence-first: x [L, B, d_model], pos broadcastable to it -> [L, B, d_model].
    """

    def __init__(self, d_model: int = 512, nhead: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = x if pos is None else x + pos
        a = self.self_attn(qk, qk, x, need_weights=False)[0]
        h = self.norm1(x + self.dropout1(a))
        return self.norm2(h + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h))))))


class ImageEncoder(nn.Module):
    """CLCAE's stage-1 image encoder ``E_I``.

    Args:
        input_size: (H, W) of the input (256x256 in the official runs, also for cars).
        style_dim: width of the ``styles.0`` head output (512).
        projection_dim: embedding dimension (512).
        use_norm: L2-normalise the embedding.
        trunk_kwargs: IR-SE trunk options (``num_layers``, ``in_channels``, ``widths``, ``width_mult``, ``use_se``,
            ``se_reduction``; see :class:`~clcae.networks.backbones.IRSEBackbone`).

    Forward: the residual image [B, 3, H, W] -> embedding [B, projection_dim]. :meth:`scale` is
    ``exp(logit_scale)`` (initialised to 1/0.07, learned, unclamped as in the official code).
    """

    def __init__(self, input_size: Sequence[int] = (256, 256), style_dim: int = 512, projection_dim: int = 512,
                 use_norm: bool = True, **trunk_kwargs):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.encoder = GradualStyleEncoder(n_styles=1, input_size=input_size, style_dim=style_dim, **trunk_kwargs)
        self.image_projection = Projection(style_dim, style_dim, projection_dim)
        self.use_norm = use_norm
        trunk = {k: v for k, v in self.encoder.config.items() if k not in ("n_styles", "coarse_ind", "middle_ind",
                                                                          "input_size", "style_dim")}
        self.config = dict(input_size=list(input_size), style_dim=style_dim, projection_dim=projection_dim,
                           use_norm=use_norm, **trunk)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-projection code ``styles.0(c3)`` [B, style_dim]."""
        return self.encoder(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.image_projection(self.features(x))
        return F.normalize(e, dim=-1) if self.use_norm else e

    def scale(self) -> torch.Tensor:
        """The InfoNCE logit scale ``exp(logit_scale)`` (a scalar tensor)."""
        return self.logit_scale.exp()


class LatentEncoder(nn.Module):
    """CLCAE's stage-1 latent encoder ``E_w`` over one token ``w - latent_avg``.

    Args: ``style_dim`` (d_model, 512), ``nhead`` (4), ``dim_feedforward`` (1024), ``dropout`` (0.1),
    ``projection_dim`` (512), ``use_norm``.

    Forward: ``w - latent_avg`` as [B, style_dim] or [B, 1, style_dim] -> embedding [B, projection_dim].
    (With one token the attention weights are exactly 1: the layers act as residual MLP blocks with LayerNorm.)
    """

    def __init__(self, style_dim: int = 512, nhead: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1,
                 projection_dim: int = 512, use_norm: bool = True):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, 1, style_dim))
        self.coarse = SelfAttentionLayer(style_dim, nhead, dim_feedforward, dropout)
        self.medium = SelfAttentionLayer(style_dim, nhead, dim_feedforward, dropout)
        self.fine = SelfAttentionLayer(style_dim, nhead, dim_feedforward, dropout)
        self.latent_projection = Projection(style_dim, style_dim, projection_dim)
        self.use_norm = use_norm
        self.style_dim = style_dim
        self.config = dict(style_dim=style_dim, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                           projection_dim=projection_dim, use_norm=use_norm)

    def forward(self, dw: torch.Tensor) -> torch.Tensor:
        if dw.ndim == 2:
            dw = dw.unsqueeze(1)
        if dw.ndim != 3 or dw.shape[1:] != (1, self.style_dim):
            raise ValueError(f"LatentEncoder expects [B, {self.style_dim}] or [B, 1, {self.style_dim}]; "
                             f"got {tuple(dw.shape)}")
        x = dw.permute(1, 0, 2)  # [1, B, D], sequence-first
        pos = self.pos_embedding.permute(1, 0, 2)  # [1, 1, D]
        for layer in (self.coarse, self.medium, self.fine):
            x = layer(x, pos)
        e = self.latent_projection(x[0])
        return F.normalize(e, dim=-1) if self.use_norm else e
