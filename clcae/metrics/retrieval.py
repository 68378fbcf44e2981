"""Cross-modal retrieval accuracy of paired embeddings (CLCAE stage 1's image <-> latent alignment).

Pair ``i`` is ``(image_emb[i], latent_emb[i])``. For image ``i`` the candidates are all ``N`` latents, ranked by
similarity; the query is a hit at ``k`` when its own latent is among the ``k`` best. Latent -> image is the same
with the roles swapped. Similarities are computed in row chunks, so 10k x 10k needs ``chunk x N`` floats at a time,
never the full matrix.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["retrieval_topk", "positive_ranks"]


def positive_ranks(query: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """0-based rank of each query's positive (``keys[i]`` for ``query[i]``) among all keys, by dot product.

    Args:
        query: ``[N, D]``; keys: ``[N, D]``.
        chunk: queries per similarity block (memory ``chunk x N``).
    Returns:
        int64 ``[N]`` on the CPU: ``rank[i] = #{j != i : <q_i, k_j> >= <q_i, k_i>}``. Ties count against the query
        (a key as similar as the positive ranks before it), so a constant embedding never scores a hit by luck;
        a NaN similarity also counts against it.
    """
    if query.ndim != 2 or keys.shape != query.shape:
        raise ValueError(f"expected query and keys of the same shape [N, D]; got {tuple(query.shape)} and "
                         f"{tuple(keys.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    n = query.shape[0]
    ranks = torch.empty(n, dtype=torch.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = query[start:stop] @ keys.T  # [c, N]
        rows = torch.arange(stop - start, device=sim.device)
        positive = sim[rows, rows + start].unsqueeze(1)
        better = ~(sim < positive)  # >= positive, or NaN
        better[rows, rows + start] = False
        ranks[start:stop] = better.sum(dim=1).cpu()
    return ranks


@torch.no_grad()
def retrieval_topk(image_emb: torch.Tensor, latent_emb: torch.Tensor, ks: Sequence[int] = (1, 5),
                   normalize: bool = True, chunk: int = 1024) -> dict[str, float]:
    """Top-k image -> latent and latent -> image retrieval accuracy over ``N`` pairs.

    Args:
        image_emb: ``[N, D]`` image embeddings; latent_emb: ``[N, D]`` latent embeddings, pair ``i`` matches ``i``.
        ks: the ``k`` values (each >= 1; a ``k >= N`` is always 1.0).
        normalize: rank by cosine similarity (L2-normalise both sides first, as the encoders' ``use_norm``
            outputs are); ``False`` ranks by raw dot product.
        chunk: rows per similarity block.
    Returns:
        ``{'i2l_top{k}': float, 'l2i_top{k}': float for each k, 'i2l_mean_rank': float, 'l2i_mean_rank': float,
        'n': N}``: accuracies in [0, 1]; mean ranks are 1-based (1.0 = perfect). Ties count as misses (see
        :func:`positive_ranks`).
    """
    if image_emb.ndim != 2 or image_emb.shape != latent_emb.shape:
        raise ValueError(f"expected image_emb and latent_emb of the same shape [N, D]; got {tuple(image_emb.shape)} "
                         f"and {tuple(latent_emb.shape)}")
    if image_emb.shape[0] == 0:
        raise ValueError("retrieval_topk got no pairs (N = 0)")
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of integers >= 1; got {ks}")
    img = image_emb.float()
    lat = latent_emb.to(img.device).float()
    if normalize:
        img, lat = F.normalize(img, dim=1), F.normalize(lat, dim=1)
    i2l = positive_ranks(img, lat, chunk)
    l2i = positive_ranks(lat, img, chunk)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2l_top{k}"] = (i2l < k).double().mean().item()
        out[f"l2i_top{k}"] = (l2i < k).double().mean().item()
    out["i2l_mean_rank"] = (i2l.double() + 1).mean().item()
    out["l2i_mean_rank"] = (l2i.double() + 1).mean().item()
    out["n"] = int(image_emb.shape[0])
    return out
