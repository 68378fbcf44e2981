"""The average image: ``G(latent_avg)``, which CLCAE subtracts from every encoder input (spec §3.1, §4.7).

One rendering and one way to bring it to an encoder's input size, for every user: the inverters (stage 2,
inference; :func:`clcae.networks.inverters.render_average_image`), CLCAE stage 1 (:mod:`clcae.training.contrastive`)
and the pairs folders (:mod:`clcae.data.pairs`, which store ``avg_image.png`` and read it back).

Officially the average image is a PNG of ``G(w_avg)`` read through the input transform (PIL bilinear resize, then
``Normalize(0.5, 0.5)``); the script that made those PNGs is not released. Here:

1. :func:`average_frame`: ``G(latent_avg)`` at the generator's resolution with the constant noise buffers,
   clamped to [-1, 1] and quantised to 8 bits (the PNG);
2. :func:`fit_average`: rows centre-cropped to the target's aspect ratio (cars: rows 64:448 of 512, the region the
   official output crop keeps), resized with antialiased bilinear interpolation (``F.interpolate(...,
   antialias=True)``, the filter of PIL's bilinear resampling) and quantised again, as PIL resizes 8-bit images.

The result can differ from a PIL-resized PNG by one 8-bit level (1/127.5 in [-1, 1]); at the generator's own size
it is the PNG exactly. A pairs folder's ``avg_image.png`` is step 1 (brought to the folder's ``image_size`` by
step 2), and its readers apply step 2 again for their loading size, so a pairs folder and an inverter at the same
input size subtract the same image, bit for bit.

Since these became the one implementation, CLCAE stage 1 on a pairs folder subtracts an average image that differs
by at most one 8-bit level from the PIL-resized one it used before (square input sizes; at a non-square size it is
now cropped to the aspect ratio like every other average image, not stretched).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["average_frame", "fit_average", "render_average_image", "AVERAGE_NOISE_MODES"]

#: Noise of the average render: the stored buffers (what inference uses) or none (pairs rendered without noise).
AVERAGE_NOISE_MODES = ("const", "none")


@torch.no_grad()
def average_frame(generator: torch.nn.Module, latent_avg: torch.Tensor | None = None, noise_mode: str = "const",
                  quantize: bool = True) -> torch.Tensor:
    """``G(latent_avg)`` as the average image's PNG holds it: ``[1, 3, S, S]`` float32 in [-1, 1] on the generator's
    device, at the generator's resolution ``S``.

    Args:
        generator: a :class:`~clcae.networks.stylegan2.Generator` (``synthesis``, ``latent_avg``).
        latent_avg: the code to render, [D] or [n, D] (the first row is used); default the generator's own.
        noise_mode: ``'const'`` (the stored noise buffers) or ``'none'`` (zero noise).
        quantize: round to 8-bit levels, as a PNG stores them (``False``: the float render, clamped).
    Raises:
        ValueError: an unknown ``noise_mode`` or a code that is not finite.
    """
    if noise_mode not in AVERAGE_NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {AVERAGE_NOISE_MODES}; got {noise_mode!r}")
    first = next(itertools.chain(generator.parameters(), generator.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    code = generator.latent_avg if latent_avg is None else latent_avg
    code = code.reshape(-1, code.shape[-1])[:1].to(device, torch.float32)
    if not torch.isfinite(code).all():
        raise ValueError("latent_avg is not finite")
    image01 = (generator.synthesis(code, noise_mode=noise_mode).float().clamp(-1, 1) + 1) / 2
    if quantize:
        image01 = (image01 * 255).round() / 255
    return image01 * 2 - 1


@torch.no_grad()
def fit_average(image: torch.Tensor, size: Sequence[int], quantize: bool = True) -> torch.Tensor:
    """Bring an average image ``[1, 3, h, w]`` in [-1, 1] to ``size`` ``(H, W)``.

    The rows are centre-cropped to the aspect ratio ``H / W`` (when the image is taller than that), the image is
    quantised to 8-bit levels, resized with antialiased bilinear interpolation and quantised again
    (``quantize=False``: the float image is resized, nothing is rounded). Returns ``[1, 3, H, W]`` float32 in
    [-1, 1] on ``image``'s device; an 8-bit image already at ``size`` comes back with the same values.
    """
    h, w = (int(v) for v in size)
    if image.ndim != 4 or tuple(image.shape[:2]) != (1, 3) or h < 1 or w < 1:
        raise ValueError(f"expected an image [1, 3, h, w] and a size (H, W) >= 1; got {tuple(image.shape)} and "
                         f"{tuple(size)}")
    rows = image.shape[-1] * h // w
    if rows < image.shape[-2]:
        top = (image.shape[-2] - rows) // 2
        image = image[:, :, top:top + rows, :]
    image01 = (image.float().clamp(-1, 1) + 1) / 2
    if not quantize:
        if tuple(image01.shape[-2:]) != (h, w):
            image01 = F.interpolate(image01, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return image01 * 2 - 1
    levels = (image01 * 255).round()
    if tuple(levels.shape[-2:]) != (h, w):
        levels = F.interpolate(levels, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return levels.round().clamp(0, 255) / 255 * 2 - 1


def render_average_image(generator: torch.nn.Module, latent_avg: torch.Tensor | None, input_size: Sequence[int],
                         quantize: bool = True) -> torch.Tensor:
    """The average image an encoder with input ``input_size`` (H, W) subtracts: :func:`fit_average` of
    :func:`average_frame` (constant noise). ``quantize=False`` skips both 8-bit roundings. Returns ``[1, 3, H, W]``
    float32 in [-1, 1] on the generator's device."""
    return fit_average(average_frame(generator, latent_avg, "const", quantize), input_size, quantize)
