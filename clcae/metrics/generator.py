"""Quality of a generator on the SynthFaces domain: Fréchet distance in the domain network's feature space.

The generator's samples are compared with held-out renders (test-split persons, never seen in training); the same
distance between two disjoint sets of real renders is reported beside it as the floor that sampling noise alone
gives at this number of images.
"""
from __future__ import annotations

from typing import Callable

import torch

from .frechet import feature_statistics, frechet_distance

__all__ = ["render_synthfaces", "generator_features", "generator_fd_report"]


def render_synthfaces(start: int, n: int, res: int, split: str = "test", seed: int = 0, progress: bool = False):
    """Items ``start .. start + n`` of the SynthFaces ``split`` as ``[n, 3, res, res]`` in [-1, 1]."""
    from tqdm.auto import tqdm

    from ..data.synthfaces import SynthFaces

    ds = SynthFaces(start + n, res=res, split=split, seed=seed)
    return torch.stack([ds[i][0] for i in tqdm(range(start, start + n), disable=not progress,
                                               desc=f"rendering {split}", unit="img")])


@torch.no_grad()
def generator_features(G, features_fn: Callable[[torch.Tensor], torch.Tensor], n: int, truncation: float = 1.0,
                       noise_mode: str = "random", seed: int = 0, batch: int = 64,
                       device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """Features ``[n, D]`` of ``n`` generator samples (z from ``seed``; images clamped to [-1, 1])."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, n, batch), disable=not progress, desc="sampling", unit="batch"):
        z = torch.randn(min(batch, n - start), G.style_dim, generator=g).to(device)
        img = G(z, truncation=truncation, noise_mode=noise_mode).clamp(-1, 1)
        out.append(features_fn(img).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def generator_fd_report(G, features_fn: Callable[[torch.Tensor], torch.Tensor], n: int = 5000,
                        truncation: float = 1.0, seed: int = 0, data_seed: int = 0, batch: int = 64,
                        device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """``{'fd_generated_vs_test', 'fd_real_vs_real', 'n', 'truncation'}``.

    ``fd_generated_vs_test``: n samples of ``G`` against test-split renders ``0 .. n``; ``fd_real_vs_real``: test
    renders ``n .. 2n`` against the same reference (disjoint images).
    """
    def feats(images):
        return torch.cat([features_fn(images[i:i + batch].to(device)).float().cpu()
                          for i in range(0, len(images), batch)])

    reference = feats(render_synthfaces(0, n, G.size, "test", data_seed, progress))
    other_real = feats(render_synthfaces(n, n, G.size, "test", data_seed, progress))
    generated = generator_features(G, features_fn, n, truncation, seed=seed, batch=batch, device=device,
                                   progress=progress)
    ref_stats = feature_statistics(reference)
    return {
        "fd_generated_vs_test": frechet_distance(*feature_statistics(generated), *ref_stats),
        "fd_real_vs_real": frechet_distance(*feature_statistics(other_real), *ref_stats),
        "n": n,
        "truncation": truncation,
    }
