"""Identity: the additive angular margin head that trains an embedding (ArcFace), and the identity similarity / loss
computed with any network that has an ``embed`` method.

ArcFace (Deng et al. 2019) classifies training persons with logits ``s * cos(theta_j)``, where ``theta_j`` is the
angle between the normalised embedding and the normalised class centre ``j``, except for the true class, whose angle
is penalised by a margin: ``s * cos(theta_y + m)``. The embedding is then used on its own, for unseen persons.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ArcMarginHead", "identity_similarity", "identity_loss"]


class ArcMarginHead(nn.Module):
    """Additive angular margin classification head (training only; not part of the embedding network).

    Args:
        embed_dim: embedding size ``D``.
        num_classes: number of training persons ``C``.
        s: logit scale (the radius of the hypersphere).
        m: additive angular margin in radians (may be changed later through :attr:`m`, e.g. for a warm-up).

    ``forward(embeddings [B, D], labels [B] int64 or None) -> logits [B, C]``: ``s * cos(theta_j)`` for every class,
    and ``s * cos(theta_y + m)`` for the label's class. Where ``theta_y + m`` would pass pi (and ``cos`` stop
    decreasing) the target logit is ``s * (cos(theta_y) - m * sin(m))`` instead, which keeps it monotonic in the
    angle. Without labels (or with ``m = 0``) the logits are plain scaled cosines. Feed the logits to
    ``F.cross_entropy``. Embeddings need not be normalised (they are normalised here).
    """

    def __init__(self, embed_dim: int, num_classes: int, s: float = 32.0, m: float = 0.5):
        super().__init__()
        if embed_dim < 1 or num_classes < 2:
            raise ValueError(f"need embed_dim >= 1 and num_classes >= 2; got {embed_dim}, {num_classes}")
        if s <= 0 or not 0 <= m < math.pi / 2:
            raise ValueError(f"need s > 0 and 0 <= m < pi/2; got s={s}, m={m}")
        self.embed_dim, self.num_classes = int(embed_dim), int(num_classes)
        self.s, self.m = float(s), float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, C]``: cosine between each embedding and each class centre."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"expected embeddings [B, {self.embed_dim}]; got {tuple(embeddings.shape)}")
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits_from_cosine(self.cosine(embeddings), labels)

    def logits_from_cosine(self, cos: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The logits of :meth:`forward` from precomputed :meth:`cosine` values ``[B, C]``."""
        if labels is None or self.m == 0:
            return self.s * cos
        if labels.shape != (cos.shape[0],):
            raise ValueError(f"labels must be [B] = [{cos.shape[0]}]; got {tuple(labels.shape)}")
        cos_y = cos.gather(1, labels.view(-1, 1)).clamp(-1.0, 1.0)
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(1e-7))  # clamp: finite gradient at theta = 0
        cos_m, sin_m = math.cos(self.m), math.sin(self.m)
        with_margin = cos_y * cos_m - sin_y * sin_m  # cos(theta + m)
        # beyond theta = pi - m, cos(theta + m) would increase again: continue linearly instead
        with_margin = torch.where(cos_y > math.cos(math.pi - self.m), with_margin, cos_y - self.m * sin_m)
        logits = cos.scatter(1, labels.view(-1, 1), with_margin)
        return self.s * logits

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, s={self.s}, m={self.m}"


def identity_similarity(net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity ``[B]`` in [-1, 1] of ``net.embed(a)`` and ``net.embed(b)``.

    ``net`` is any module with ``embed(images) -> [B, D]`` (e.g. :class:`clcae.networks.domain.DomainNet`); the
    embeddings are (re-)normalised here. ``a`` and ``b`` are image batches of the same length; gradients flow to
    both (use the network frozen, in eval mode).
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b need the same batch size; got {a.shape[0]} and {b.shape[0]}")
    ea = F.normalize(net.embed(a), dim=1)
    eb = F.normalize(net.embed(b), dim=1)
    return (ea * eb).sum(dim=1)


def identity_loss(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Identity loss as in pSp: ``mean(1 - cos(embed(x), embed(target)))``, a scalar in [0, 2]; the target's
    embedding is detached (only ``x`` receives gradients)."""
    ex = F.normalize(net.embed(x), dim=1)
    with torch.no_grad():
        et = F.normalize(net.embed(target), dim=1)
    return (1.0 - (ex * et).sum(dim=1)).mean()
