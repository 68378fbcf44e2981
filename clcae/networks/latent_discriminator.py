"""e4e's latent-code discriminator: an MLP that tells codes of the generator's W space from encoder codes.

Layout of e4e's ``LatentCodesDiscriminator`` (Tov et al. 2021): ``mlp`` is an ``nn.Sequential`` of
``n_mlp - 1`` blocks ``Linear(style_dim, style_dim), LeakyReLU(0.2)`` and a final ``Linear(style_dim, 1)``, with
PyTorch's default initialisation. With the default ``n_mlp=4`` the state-dict keys are ``mlp.0.*``, ``mlp.2.*``,
``mlp.4.*`` (hidden layers) and ``mlp.6.*`` (output), as in e4e's training checkpoints
(``discriminator_state_dict``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LatentCodesDiscriminator"]


class LatentCodesDiscriminator(nn.Module):
    """MLP discriminator on single W codes.

    Args:
        style_dim: code dimension D.
        n_mlp: number of linear layers (>= 1): ``n_mlp - 1`` hidden ``D -> D`` layers with LeakyReLU(0.2), then
            ``D -> 1``.

    Forward: codes [B, D] -> logits [B, 1]; or [B, n, D] -> [B, n, 1] (each code scored on its own).
    ``config`` holds the constructor arguments.
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 4):
        super().__init__()
        if style_dim < 1 or n_mlp < 1:
            raise ValueError(f"LatentCodesDiscriminator: style_dim and n_mlp must be >= 1; got {style_dim}, {n_mlp}")
        self.style_dim = int(style_dim)
        self.config = dict(style_dim=self.style_dim, n_mlp=int(n_mlp))
        layers: list[nn.Module] = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim not in (2, 3) or w.shape[-1] != self.style_dim:
            raise ValueError(f"LatentCodesDiscriminator expects codes [B, {self.style_dim}] or "
                             f"[B, n, {self.style_dim}]; got {tuple(w.shape)}")
        return self.mlp(w)
