"""Sampling images from a generator: seeds -> z -> w (optionally truncated) -> images, and image grids."""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["z_from_seeds", "sample_images", "image_grid"]


def z_from_seeds(seeds: Sequence[int], style_dim: int) -> torch.Tensor:
    """One z [style_dim] per seed, each from its own ``torch.Generator`` (reproducible across batch sizes)."""
    return torch.stack([torch.randn(style_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_images(G, seeds: Sequence[int], truncation: float = 1.0, noise_mode: str = "const", batch: int = 8,
                  device: str | torch.device = "cpu", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one image per seed. Returns ``(images [N,3,H,W] in [-1,1] (clamped), w [N, style_dim])``."""
    from tqdm.auto import tqdm

    z = z_from_seeds(seeds, G.style_dim)
    imgs, ws = [], []
    for i in tqdm(range(0, len(seeds), batch), disable=not progress, desc="sampling", unit="batch"):
        w = G.truncate(G.mapping(z[i:i + batch].to(device)), truncation)
        imgs.append(G.synthesis(w, noise_mode=noise_mode).clamp(-1, 1).cpu())
        ws.append(w.cpu())
    return torch.cat(imgs), torch.cat(ws)


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile images [N,3,H,W] into one [3,H',W'] grid (``nrow`` images per row; default about square)."""
    from torchvision.utils import make_grid

    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    return make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)
