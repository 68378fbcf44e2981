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


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0,
               border: bool = True) -> torch.Tensor:
    """Tile images ``[N, C, H, W]`` into one ``[C, H', W']`` grid, ``nrow`` images per row (default: about square).

    ``padding`` pixels of ``pad_value`` separate the cells and, with ``border`` (default), surround the grid, as
    ``torchvision.utils.make_grid`` (which also returns a single image unpadded); without ``border`` the grid is
    ``[C, rows * (H + p) - p, nrow * (W + p) - p]`` (the training logger's grids). Missing cells of the last row
    are ``pad_value``. The values are copied as they are (same range and dtype).
    """
    if images.ndim != 4:
        raise ValueError(f"image_grid expects [N, C, H, W]; got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if border and n == 1:
        return images[0]
    nrow = max(1, min(nrow or int(math.ceil(math.sqrt(n))), n))
    rows = math.ceil(n / nrow)
    edge = padding if border else 0
    grid = images.new_full((c, rows * (h + padding) - padding + 2 * edge, nrow * (w + padding) - padding + 2 * edge),
                           pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = edge + r * (h + padding), edge + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid
