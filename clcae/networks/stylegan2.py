"""StyleGAN2 generator and discriminator in rosinality's layout (the one pSp, e4e and CLCAE checkpoints use).

The generator adds what inversion needs on top of the reference: forward from z, w or W+, truncation and style
mixing helpers, three noise modes, the list of intermediate activations, and CLCAE's F-space hook (blend a given
feature into the activation at index ``k``).

Activation indices (``features`` / ``features_in``): 0 is the constant input, 1 the output of the first 4x4 conv,
then one entry per styled conv (two per resolution). A feature given for index ``j`` replaces the running
activation just before it enters the next styled conv, ``h <- (1 - s) * h + s * f`` (``feature_mode='replace'``, the
official blend) or ``h <- h + s * f`` (``'add'``: f is a correction of the generator's own activation); the returned
``features[j]`` is always the activation as computed, before any blend. At 1024 px index 5 is the 16x16 map that enters the first
32x32 conv (CLCAE's default).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .layers import (ConstantInput, ConvLayer, EqualLinear, PixelNorm, ResBlock, StyledConv, ToRGB, set_impl)

__all__ = ["Generator", "Discriminator", "channel_plan", "NOISE_MODES"]

NOISE_MODES = ("const", "random", "none")


def _log2_exact(size: int, what: str) -> int:
    log = int(round(math.log2(size))) if size > 0 else -1
    if size < 4 or 2 ** log != size:
        raise ValueError(f"{what} must be a power of two >= 4; got {size}")
    return log


def channel_plan(size: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """``{res: min(channel_base // res, channel_max)}`` for res = 4 ... size (config-f: 32768 / 512)."""
    log = _log2_exact(size, "size")
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, log + 1)}


def _resolve_channel_base(channel_base: int | None, channel_multiplier: float | None) -> int:
    if channel_multiplier is not None:
        if channel_base is not None and channel_base != int(16384 * channel_multiplier):
            raise ValueError("give channel_base or channel_multiplier, not both")
        return int(16384 * channel_multiplier)
    return 32768 if channel_base is None else int(channel_base)


class Generator(nn.Module):
    """StyleGAN2 generator.

    Args:
        size: output resolution (power of two).
        style_dim: dimension of z and w.
        n_mlp: number of mapping layers.
        lr_mlp: learning-rate multiplier of the mapping layers.
        channel_base, channel_max: channel plan ``min(channel_base // res, channel_max)``.
        channel_multiplier: rosinality's alias, ``channel_base = 16384 * channel_multiplier``.
        blur_kernel: FIR kernel of the resampling filters.
        conv_clamp: clamp every styled conv and ToRGB output to [-conv_clamp, conv_clamp] (NVIDIA's networks
            trained with mixed precision use 256; rosinality's use none).

    Attributes: ``n_latent`` (styles per W+ code), ``num_layers`` (noise inputs), ``latent_avg`` [style_dim]
    (a non-persistent buffer: rosinality files store it beside ``g_ema``), ``config`` (constructor arguments).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, lr_mlp: float = 0.01,
                 channel_base: int | None = None, channel_max: int = 512, channel_multiplier: float | None = None,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        channel_base = _resolve_channel_base(channel_base, channel_multiplier)
        self.size = size
        self.style_dim = style_dim
        self.log_size = _log2_exact(size, "size")
        self.config = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, lr_mlp=lr_mlp, channel_base=channel_base,
                           channel_max=channel_max, blur_kernel=list(blur_kernel), conv_clamp=conv_clamp)
        self.channels = channel_plan(size, channel_base, channel_max)
        blur_kernel = list(blur_kernel)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])

        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel, clamp=conv_clamp)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False, clamp=conv_clamp)

        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2 ** res, 2 ** res))
        in_channel = c4
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel, clamp=conv_clamp))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel,
                                         clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel, clamp=conv_clamp))
            in_channel = out_channel
        self.register_buffer("latent_avg", torch.zeros(style_dim), persistent=False)
        self.memory_format = torch.contiguous_format

    # ------------------------------------------------------------------ latents
    def set_impl(self, impl: str) -> "Generator":
        """Choose the op implementation (``'auto'|'cuda'|'fast'|'ref'``) for every layer."""
        return set_impl(self, impl)

    def set_memory_format(self, memory_format: torch.memory_format) -> "Generator":
        """Run synthesis activations in ``torch.channels_last`` or ``torch.contiguous_format``.

        (``Module.to(memory_format=...)`` cannot convert the 5-D modulated weights; this converts the activations.)
        """
        self.memory_format = memory_format
        return self

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim]."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"mapping expects z of shape [B, {self.style_dim}]; got {tuple(z.shape)}")
        return self.style(z)

    def truncate(self, w: torch.Tensor, psi: float, latent_avg: torch.Tensor | None = None) -> torch.Tensor:
        """``avg + psi * (w - avg)`` for w [B, D] or W+ [B, n, D]; ``avg`` defaults to ``self.latent_avg``."""
        avg = self.latent_avg if latent_avg is None else latent_avg
        avg = avg.to(w.dtype)
        return avg + psi * (w - avg) if psi != 1 else w

    def mix_styles(self, w1: torch.Tensor, w2: torch.Tensor, inject_index: int) -> torch.Tensor:
        """W+ [B, n_latent, D] with layers ``< inject_index`` from w1 and the rest from w2 (both [B, D])."""
        if not 0 <= inject_index <= self.n_latent:
            raise ValueError(f"inject_index must be in [0, {self.n_latent}]; got {inject_index}")
        a = w1.unsqueeze(1).expand(-1, inject_index, -1)
        b = w2.unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
        return torch.cat([a, b], dim=1)

    def to_wplus(self, ws: torch.Tensor) -> torch.Tensor:
        """w [B, D] -> [B, n_latent, D] (repeated); W+ is checked and returned as is."""
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.n_latent, -1)
        if ws.ndim != 3 or ws.shape[1] != self.n_latent or ws.shape[2] != self.style_dim:
            raise ValueError(f"expected w [B, {self.style_dim}] or W+ [B, {self.n_latent}, {self.style_dim}]; "
                             f"got {tuple(ws.shape)}")
        return ws

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of ``mapping(z)`` over ``n`` samples (z drawn with a private generator seeded by ``seed``)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.style_dim, generator=g).to(self.latent_avg.device)
        return self.mapping(z).mean(0)

    # ------------------------------------------------------------------ synthesis
    def _noise_list(self, noise_mode: str, noise: Sequence[torch.Tensor | None] | None):
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must have {self.num_layers} entries; got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if noise_mode == "random":
            return [None] * self.num_layers
        if noise_mode == "none":
            return [getattr(self.noises, f"noise_{i}").new_zeros(()) for i in range(self.num_layers)]
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}; got {noise_mode!r}")

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", features_in: Mapping[int, torch.Tensor] | None = None,
                  feature_scale: float | torch.Tensor = 1.0, return_features: bool = False,
                  noise: Sequence[torch.Tensor | None] | None = None, feature_mode: str = "replace"):
        """Render images from w or W+.

        Args:
            ws: w [B, style_dim] (repeated over layers) or W+ [B, n_latent, style_dim].
            noise_mode: ``'const'`` (stored buffers), ``'random'`` (fresh N(0,1) per call) or ``'none'`` (zeros).
            features_in: ``{index: feature [B, C, H, W]}`` blended in as described in the module docstring.
            feature_scale: blend scale ``s`` (float or a tensor broadcastable to the feature).
            return_features: also return the list of ``n_latent`` activations (before any blend).
            noise: explicit per-layer noise tensors (overrides ``noise_mode``).
            feature_mode: ``'replace'`` (``h <- (1 - s) h + s f``) or ``'add'`` (``h <- h + s f``).
        Returns:
            image [B, 3, size, size] (unclamped, nominally in [-1, 1]), or ``(image, features)``.
        """
        latent = self.to_wplus(ws)
        noises = self._noise_list(noise_mode, noise)
        features_in = dict(features_in or {})
        if feature_mode not in ("replace", "add"):
            raise ValueError(f"feature_mode must be 'replace' or 'add'; got {feature_mode!r}")
        for j in features_in:
            if not 0 <= j < self.n_latent:
                raise ValueError(f"features_in index must be in [0, {self.n_latent - 1}]; got {j}")
        feats: list[torch.Tensor] = []
        fast = self.conv1.conv.impl != "ref"

        def blend(h: torch.Tensor, j: int) -> torch.Tensor:
            f = features_in.get(j)
            if f is None:
                return h
            if f.shape[1:] != h.shape[1:]:
                raise ValueError(f"features_in[{j}] has shape {tuple(f.shape)}; the activation there is "
                                 f"{tuple(h.shape)}")
            f = f.to(h.dtype).contiguous(memory_format=self.memory_format)
            if feature_mode == "add":
                return h + feature_scale * f
            if fast and isinstance(feature_scale, (int, float)) and feature_scale == 1:
                return f  # full replacement: nothing of h survives the blend
            return (1 - feature_scale) * h + feature_scale * f

        out = self.input(latent.shape[0]).contiguous(memory_format=self.memory_format)
        feats.append(out)
        out = self.conv1(blend(out, 0), latent[:, 0], noise=noises[0])
        feats.append(out)
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise_up, noise_b, to_rgb in zip(self.convs[::2], self.convs[1::2], noises[1::2],
                                                             noises[2::2], self.to_rgbs):
            out = conv_up(blend(out, i), latent[:, i], noise=noise_up)
            feats.append(out)
            out = conv(blend(out, i + 1), latent[:, i + 1], noise=noise_b)
            feats.append(out)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        image = skip
        return (image, feats) if return_features else image

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: str = "random",
                return_features: bool = False, **synthesis_kwargs):
        """z [B, style_dim] -> image: mapping, optional truncation towards ``latent_avg``, synthesis."""
        w = self.truncate(self.mapping(z), truncation)
        return self.synthesis(w, noise_mode=noise_mode, return_features=return_features, **synthesis_kwargs)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (rosinality layout) with minibatch standard deviation.

    Forward: image [B, 3, size, size] -> logits [B, 1].
    """

    def __init__(self, size: int, channel_base: int | None = None, channel_max: int = 512,
                 channel_multiplier: float | None = None, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 stddev_group: int = 4):
        super().__init__()
        channel_base = _resolve_channel_base(channel_base, channel_multiplier)
        log_size = _log2_exact(size, "size")
        self.size = size
        self.config = dict(size=size, channel_base=channel_base, channel_max=channel_max,
                           blur_kernel=list(blur_kernel), stddev_group=stddev_group)
        channels = channel_plan(size, channel_base, channel_max)
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channel = channels[size]
        for i in range(log_size, 2, -1):
            out_channel = channels[2 ** (i - 1)]
            convs.append(ResBlock(in_channel, out_channel, list(blur_kernel)))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def set_impl(self, impl: str) -> "Discriminator":
        """Choose the op implementation (``'auto'|'cuda'|'fast'|'ref'``) for every layer."""
        return set_impl(self, impl)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2:] != (self.size, self.size):
            raise ValueError(f"Discriminator expects [B, 3, {self.size}, {self.size}]; got {tuple(image.shape)}")
        out = self.convs(image)
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:  # the reference requires divisibility; use the largest group that divides the batch
            group -= 1
        std = out.reshape(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8)
        std = std.mean([2, 3, 4], keepdim=True).squeeze(2)
        std = std.repeat(group, 1, h, w)
        out = torch.cat([out, std], 1)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(b, -1))
