"""Identity: the additive angular margin head that trains an embedding (ArcFace), the identity similarity / loss
computed with any network that has an ``embed`` method, and the identity loss modules of the inversion training.

- :class:`IdentityLoss`: per-sample ``1 - cos(embed(y_hat), embed(y))`` and :meth:`IdentityLoss.similarity`;
- :class:`ArcFaceIdentity`: pSp's ID loss with ArcFace IR-SE-50 (``model_ir_se50.pth``, 256 px FFHQ-aligned faces);
- :class:`DomainIdentity`: the same with the SynthFaces domain network's embedding (no ArcFace weights needed);
- :func:`build_identity`: either from a config string.

ArcFace (Deng et al. 2019) classifies training persons with logits ``s * cos(theta_j)``, where ``theta_j`` is the
angle between the normalised embedding and the normalised class centre ``j``, except for the true class, whose angle
is penalised by a margin: ``s * cos(theta_y + m)``. The embedding is then used on its own, for unseen persons.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.arcface import ARCFACE_FILE_NAME, load_arcface
from .perceptual import MissingWeightsError

__all__ = ["ArcMarginHead", "identity_similarity", "identity_loss", "IdentityLoss", "ArcFaceIdentity",
           "DomainIdentity", "build_identity", "PSP_FACE_CROP"]

#: pSp's crop of a 256x256 FFHQ-aligned face before ArcFace: rows 35:223, columns 32:220 (188 x 188 pixels).
PSP_FACE_CROP = (slice(35, 223), slice(32, 220))
_REDUCTIONS = ("mean", "none")


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


# ---------------------------------------------------------------------------------------------------- loss modules
class IdentityLoss(nn.Module):
    """Base of the identity losses: ``1 - cos(embed(y_hat), embed(y))`` per sample, in [0, 2].

    Subclasses implement :meth:`embed` (images ``[B, 3, H, W]`` in [-1, 1] -> unit-norm ``[B, D]``) with a frozen
    network. ``forward(y_hat, y)`` embeds the target without gradients (as pSp does: the target is fixed); gradients
    flow to ``y_hat``. :meth:`similarity` is the symmetric cosine ``[B]`` (for metrics; gradients flow to both).

    Args:
        reduction: ``'none'`` (per-sample ``[B]``) or ``'mean'`` (pSp's scalar); :meth:`forward` may override it.
    """

    name = "identity"

    def __init__(self, reduction: str = "none"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> unit-norm embeddings ``[B, D]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement embed()")

    @staticmethod
    def _check(a: torch.Tensor, b: torch.Tensor) -> None:
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(f"expected two RGB batches [B, 3, H, W] of the same shape; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity ``[B]`` in [-1, 1] of the embeddings of ``a`` and ``b`` (symmetric)."""
        self._check(a, b)
        return (F.normalize(self.embed(a), dim=1) * F.normalize(self.embed(b), dim=1)).sum(dim=1)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        """``1 - cos(embed(y_hat), embed(y))``: ``[B]`` (or the mean); the target's embedding is not differentiated."""
        self._check(y_hat, y)
        e_hat = F.normalize(self.embed(y_hat), dim=1)
        with torch.no_grad():
            e = F.normalize(self.embed(y), dim=1)
        loss = 1.0 - (e_hat * e).sum(dim=1)
        reduction = self.reduction if reduction is None else reduction
        if reduction == "none":
            return loss
        if reduction == "mean":
            return loss.mean()
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """The unit-norm embeddings ``[B, D]`` of the target images ``y``, computed once without gradients."""
        self._check(y, y)
        with torch.no_grad():
            return F.normalize(self.embed(y), dim=1)

    def to_target(self, y_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample ``1 - cos`` ``[k * B]`` of ``y_hat`` (k batches of B images stacked along dim 0) to the
        target embeddings of :meth:`target`, row i against target row i mod B: one network pass for all k
        batches. Equal to ``forward(y_hat_j, y)`` for every batch j up to float rounding."""
        self._check(y_hat, y_hat)
        return self._to_target(F.normalize(self.embed(y_hat), dim=1), target)

    def _to_target(self, e_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b = target.shape[0]
        if b == 0 or e_hat.shape[0] % b:
            raise ValueError(f"{self.name}: {e_hat.shape[0]} images cannot be matched to {b} target embeddings")
        return 1.0 - (e_hat * target.repeat(e_hat.shape[0] // b, 1)).sum(dim=1)

    def train(self, mode: bool = True) -> "IdentityLoss":
        """The embedding network stays in eval mode (fixed BatchNorm statistics, no dropout)."""
        super().train(mode)
        for child in self.children():
            child.eval()
        return self


class ArcFaceIdentity(IdentityLoss):
    """pSp's ID loss with ArcFace IR-SE-50 (TreB1eN's ``model_ir_se50.pth``), as used by CLCAE (spec §4.9).

    Preprocessing (pSp ``IDLoss.extract_feats``): the image is average-pooled to ``pool_size`` (256x256; skipped when
    it already has that size), cropped to rows 35:223 and columns 32:220 (:data:`PSP_FACE_CROP`), and
    average-pooled to the network's 112x112 input. The crop assumes **256 px FFHQ-aligned faces** (it keeps the
    face and drops hair and background); on other crops or domains it is meaningless. Non-square inputs are pooled
    to ``pool_size`` as well.

    Args:
        weights_path: ``model_ir_se50.pth`` (TreB1eN / pSp); missing or ``None``:
            :class:`~clcae.losses.perceptual.MissingWeightsError`.
        pool_size: the size the input is pooled to before the crop (256, or ``(H, W)``).
        reduction: see :class:`IdentityLoss`.
        device: where the network is loaded.
    """

    name = "id_arcface"

    def __init__(self, weights_path: str | os.PathLike | None, pool_size: int | Sequence[int] = 256,
                 reduction: str = "none", device: str | torch.device = "cpu"):
        super().__init__(reduction)
        if weights_path is None or not Path(weights_path).is_file():
            raise MissingWeightsError(
                f"the ArcFace ID loss needs the IR-SE-50 weights '{ARCFACE_FILE_NAME}' (TreB1eN's InsightFace_Pytorch "
                f"model, distributed with pSp as pretrained_models/{ARCFACE_FILE_NAME}); "
                f"{'no path was given' if weights_path is None else f'{weights_path} does not exist'}. "
                "Nothing is downloaded: copy the file here and pass its path.")
        self.pool_size = (int(pool_size),) * 2 if isinstance(pool_size, int) else tuple(int(s) for s in pool_size)
        rows, cols = PSP_FACE_CROP
        if len(self.pool_size) != 2 or self.pool_size[0] < rows.stop or self.pool_size[1] < cols.stop:
            raise ValueError(f"pool_size must be (H, W) with H >= {rows.stop} and W >= {cols.stop} for pSp's crop; "
                             f"got {pool_size}")
        self.facenet = load_arcface(weights_path, device)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> the network input ``[B, 3, 112, 112]`` (pool, pSp crop, pool)."""
        if tuple(x.shape[-2:]) != self.pool_size:
            x = F.adaptive_avg_pool2d(x, self.pool_size)
        rows, cols = PSP_FACE_CROP
        s = self.facenet.input_size
        return F.adaptive_avg_pool2d(x[:, :, rows, cols], (s, s))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm ArcFace embedding ``[B, 512]`` of images ``[B, 3, H, W]`` in [-1, 1]."""
        return self.facenet.embed(self.preprocess(x))


class DomainIdentity(IdentityLoss):
    """The identity loss with the SynthFaces domain network's embedding (:meth:`DomainNet.embed`, unit norm), for
    the procedural domain where no ArcFace weights exist. The network resizes its input itself
    (:meth:`DomainNet.prepare`); no crop. ``domain_net`` is frozen here (eval, no parameter gradients)."""

    name = "id_domain"

    def __init__(self, domain_net: nn.Module, reduction: str = "none"):
        super().__init__(reduction)
        if not hasattr(domain_net, "embed"):
            raise TypeError(f"domain_net must have embed(x) (a clcae DomainNet); got {type(domain_net).__name__}")
        self.domain_net = domain_net.eval().requires_grad_(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm domain embedding ``[B, embed_dim]`` of images ``[B, 3, H, W]`` in [-1, 1]."""
        return self.domain_net.embed(x)

    def target(self, y: torch.Tensor, maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """As :meth:`IdentityLoss.target`; ``maps``: the domain network's ``trunk_features(y)`` if the caller
        already has them (e.g. shared with :class:`~clcae.losses.perceptual.DomainPerceptualLoss`)."""
        if maps is None:
            return super().target(y)
        with torch.no_grad():
            return F.normalize(self.domain_net.embed_map(maps[-1]), dim=1)

    def to_target(self, y_hat: torch.Tensor, target: torch.Tensor,
                  maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """As :meth:`IdentityLoss.to_target`; ``maps``: the domain network's ``trunk_features(y_hat)`` if the
        caller already has them (one trunk pass then serves the perceptual and the identity loss)."""
        if maps is None:
            return super().to_target(y_hat, target)
        return self._to_target(F.normalize(self.domain_net.embed_map(maps[-1]), dim=1), target)


def build_identity(kind: str, weights: str | os.PathLike | None = None, domain_net: nn.Module | None = None,
                   **kwargs) -> IdentityLoss | None:
    """Build the identity loss named by ``kind``.

    - ``'arcface'``: :class:`ArcFaceIdentity` from ``weights`` (``model_ir_se50.pth``);
    - ``'domain'``: :class:`DomainIdentity` with ``domain_net``;
    - ``'none'``: ``None`` (the caller skips the term).

    ``kwargs`` go to the constructor (``reduction``; ``pool_size`` and ``device`` for ArcFace).
    """
    if kind == "arcface":
        return ArcFaceIdentity(weights, **kwargs)
    if kind == "domain":
        if domain_net is None:
            raise ValueError("build_identity('domain') needs domain_net=<DomainNet> (clcae.networks.domain)")
        return DomainIdentity(domain_net, **kwargs)
    if kind == "none":
        return None
    raise ValueError(f"unknown identity loss kind {kind!r}; expected 'arcface', 'domain' or 'none'")
