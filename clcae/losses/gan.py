"""StyleGAN2's adversarial losses and regularisers (Karras et al. 2020), as small pure functions.

Conventions: ``logits`` are raw discriminator outputs ``[B, 1]`` (or ``[B]``); every loss returns a 0-dim tensor
averaged over the batch, so that averaging gradients over data-parallel ranks gives the gradient of the
global-batch loss. The weights (``gamma / 2``, ``pl_weight``) and the lazy-regularisation interval factor are
applied by the caller: these functions compute the unweighted quantities.

Regularisers take gradients of a network output with respect to its input with ``create_graph=True``; run them
outside autocast (fp32), as their second-order terms are sensitive to rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["d_logistic_loss", "g_nonsaturating_loss", "r1_penalty", "path_lengths", "path_length_penalty",
           "update_pl_mean"]


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss ``E[softplus(D(fake))] + E[softplus(-D(real))]`` (a 0-dim fp32 tensor)."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator non-saturating loss ``E[softplus(-D(G(z)))]`` (a 0-dim fp32 tensor)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty ``E[ ||d D(x) / d x||^2 ]`` on real images (Mescheder et al. 2018).

    Args:
        real_logits: ``D(real_images)`` (or of an augmentation of them), ``[B, 1]``.
        real_images: the leaf ``[B, C, H, W]`` the logits were computed from; must have ``requires_grad=True``.
    Returns:
        0-dim tensor, differentiable with respect to D's parameters. The StyleGAN2 loss term is
        ``gamma / 2 * r1_penalty(...)`` (times the lazy-regularisation interval).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty needs real_images.requires_grad=True before D is evaluated on them")
    (grad,) = torch.autograd.grad(outputs=real_logits.float().sum(), inputs=real_images, create_graph=True)
    return grad.float().square().reshape(grad.shape[0], -1).sum(1).mean()


def path_lengths(fake_images: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample path lengths ``|| J_w^T y ||`` for the path-length regulariser.

    Args:
        fake_images: ``G.synthesis(latents)``, ``[B, C, H, W]``.
        latents: the W+ codes ``[B, n_latent, D]`` the images were synthesised from (part of the graph).
        noise: the random image-space direction ``y`` ``[B, C, H, W]`` already divided by ``sqrt(H * W)``; drawn
            with the global RNG when ``None`` (pass it explicitly for reproducible or rank-sharded draws).
    Returns:
        ``[B]`` lengths ``sqrt(mean_layers(sum_dims(grad^2)))``, differentiable with respect to G's parameters.
    """
    if noise is None:
        noise = torch.randn_like(fake_images) / math.sqrt(fake_images.shape[2] * fake_images.shape[3])
    (grad,) = torch.autograd.grad(outputs=(fake_images.float() * noise).sum(), inputs=latents, create_graph=True)
    return grad.float().square().sum(2).mean(1).sqrt()


def update_pl_mean(pl_mean: torch.Tensor, batch_mean: torch.Tensor, decay: float = 0.01) -> torch.Tensor:
    """The running mean of the path lengths after one batch: ``pl_mean + decay * (batch_mean - pl_mean)``.

    Both arguments are detached 0-dim tensors; ``batch_mean`` should already be averaged over data-parallel ranks.
    A ``pl_mean`` of exactly 0 (not yet initialised) is moved by ``decay`` like any other value, as in the papers.
    """
    return (pl_mean + decay * (batch_mean - pl_mean)).detach()


def path_length_penalty(lengths: torch.Tensor, pl_mean: torch.Tensor) -> torch.Tensor:
    """``E[(lengths - pl_mean)^2]``: the path-length penalty for lengths ``[B]`` and the running mean (0-dim).

    ``pl_mean`` enters as a constant (updated with :func:`update_pl_mean` first). NVIDIA's and rosinality's code
    let a ``decay``-scaled (1 %) gradient flow through the batch mean inside it; treating it as a constant makes the
    penalty's value and gradient identical for any number of data-parallel ranks.
    """
    return (lengths - pl_mean.detach()).square().mean()
