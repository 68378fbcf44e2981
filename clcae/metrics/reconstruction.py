"""Per-image reconstruction metrics: MSE, PSNR and SSIM, batched, on image tensors in [-1, 1].

The CLCAE evaluation protocol (spec §8):

- **MSE**: both images at **256x256** in **[-1, 1]** (the official ``calc_losses_on_images.py --mode l2``),
  ``mean((x - y)^2)`` over channels and pixels; :func:`mse` defaults to that (adaptive average pool to 256).
- **PSNR / SSIM**: ``mertric/measure.py`` on the images **as saved** (no resizing), as [0, 1] floats:
  ``peak_signal_noise_ratio`` (data range 1) and ``structural_similarity(data_range=1, win_size=21,
  multichannel=True)``: a **uniform 21x21 window** (not the default 7, nor Wang et al.'s Gaussian),
  computed per RGB channel and averaged (``channel_axis=-1``), not on grayscale.

Conventions of every function here:

- inputs ``x, y`` are ``[B, 3, H, W]`` (any channel count works) float tensors in [-1, 1]; by default they are
  first clamped to [-1, 1] (``clamp=True``) as saving an image would; ``quantize=True`` also rounds to the 256
  levels of an 8-bit file, to reproduce metrics computed on saved PNGs;
- resizing is explicit: ``size`` (int or ``(H, W)``; ``None`` = as given) with ``resize_mode`` ``'area'``
  (``F.adaptive_avg_pool2d``, pSp's ``face_pool``) or ``'bilinear'`` (antialiased);
- PSNR and SSIM map the images to [0, 1] and use data range 1;
- the result is a ``[B]`` float64 tensor (one value per image; average it for the table); no gradients.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["mse", "psnr", "ssim", "resize_images", "to_unit_range"]

_RESIZE_MODES = ("area", "bilinear")


def resize_images(x: torch.Tensor, size: int | Sequence[int] | None, mode: str = "area") -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size`` (int -> square; ``None`` or the same size -> unchanged).

    ``mode='area'``: ``F.adaptive_avg_pool2d`` (pSp / CLCAE's ``face_pool``; exact block averages for integer
    factors); ``'bilinear'``: antialiased bilinear interpolation (close to PIL's resize).
    """
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}; got {mode!r}")
    if size is None:
        return x
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be an int or (height, width); got {size}")
    if tuple(x.shape[-2:]) == hw:
        return x
    if mode == "area":
        return F.adaptive_avg_pool2d(x, hw)
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: ``(x + 1) / 2``."""
    return (x + 1.0) * 0.5


def _prepare(x: torch.Tensor, y: torch.Tensor, size, resize_mode: str, clamp: bool, quantize: bool,
             who: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"{who}: expected two image batches [B, C, H, W] of the same shape; got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise TypeError(f"{who}: expected float tensors in [-1, 1]; got {x.dtype} and {y.dtype}")
    out = []
    for t in (x, y):
        t = t.detach().double()
        if clamp or quantize:
            t = t.clamp(-1.0, 1.0)
        if quantize:
            t = torch.round(to_unit_range(t) * 255.0) / 255.0 * 2.0 - 1.0
        out.append(resize_images(t, size, resize_mode))
    return out[0], out[1]


@torch.no_grad()
def mse(x: torch.Tensor, y: torch.Tensor, size: int | Sequence[int] | None = 256, resize_mode: str = "area",
        clamp: bool = True, quantize: bool = False) -> torch.Tensor:
    """Per-image mean squared error ``[B]`` in **[-1, 1] units** (range [0, 4]), after resizing both images to
    ``size`` (default 256x256 by average pooling, the official protocol). See the module docstring for the
    arguments."""
    x, y = _prepare(x, y, size, resize_mode, clamp, quantize, "mse")
    return (x - y).pow(2).flatten(1).mean(dim=1)


@torch.no_grad()
def psnr(x: torch.Tensor, y: torch.Tensor, size: int | Sequence[int] | None = None, resize_mode: str = "area",
         clamp: bool = True, quantize: bool = False) -> torch.Tensor:
    """Per-image PSNR in dB ``[B]`` on the [0, 1] images (data range 1): ``10 log10(1 / mean((x01 - y01)^2))``,
    as ``skimage.metrics.peak_signal_noise_ratio(data_range=1)``; ``inf`` for identical images. Default: no
    resizing (the official ``measure.py`` uses the images as saved)."""
    x, y = _prepare(x, y, size, resize_mode, clamp, quantize, "psnr")
    err = (to_unit_range(x) - to_unit_range(y)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / err)


def _window_1d(win_size: int, gaussian: bool, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    if not gaussian:
        return torch.full((win_size,), 1.0 / win_size, dtype=dtype, device=device)
    r = (win_size - 1) // 2
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable correlation of every channel of ``[B, C, H, W]`` with ``w`` (outer product), no padding."""
    c, k = x.shape[1], w.numel()
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


@torch.no_grad()
def ssim(x: torch.Tensor, y: torch.Tensor, win_size: int = 11, gaussian: bool = True, sigma: float = 1.5,
         sample_covariance: bool | None = None, k1: float = 0.01, k2: float = 0.03,
         size: int | Sequence[int] | None = None, resize_mode: str = "area", clamp: bool = True,
         quantize: bool = False) -> torch.Tensor:
    """Per-image mean SSIM ``[B]`` (Wang et al. 2004), computed per channel on the [0, 1] images (data range 1)
    and averaged over channels, exactly as ``skimage.metrics.structural_similarity(..., channel_axis=-1,
    data_range=1)``.

    Local statistics use a ``win_size`` x ``win_size`` window: Gaussian (``gaussian=True``, std ``sigma``,
    normalised over the window) or uniform. ``C1 = (k1 * 1)^2``, ``C2 = (k2 * 1)^2``. The SSIM map is averaged over
    the pixels whose window lies inside the image (skimage crops ``(win_size - 1) / 2`` from each border), so the
    border handling of the filter never matters.

    - ``ssim(x, y)``: Wang et al.'s standard SSIM: 11x11 Gaussian, sigma 1.5, population (co)variances; matches
      skimage with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
    - ``ssim(x, y, win_size=21, gaussian=False)``: the official CLCAE evaluation (``measure.py``): uniform 21x21
      window with skimage's default sample (co)variances (``N / (N - 1)`` with ``N = win_size^2``).

    Args:
        sample_covariance: ``None`` picks the convention of each setting above (population for Gaussian, sample for
            uniform, i.e. skimage's default); pass a bool to override.
        size, resize_mode, clamp, quantize: see the module docstring (default: no resizing, as saved).

    Images must be at least ``win_size`` pixels on each side; ``win_size`` must be odd.
    """
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3; got {win_size}")
    if gaussian and sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    x, y = _prepare(x, y, size, resize_mode, clamp, quantize, "ssim")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images {tuple(x.shape[-2:])} are smaller than the {win_size}x{win_size} window")
    x, y = to_unit_range(x), to_unit_range(y)
    if sample_covariance is None:
        sample_covariance = not gaussian
    n = win_size * win_size
    cov_norm = n / (n - 1) if sample_covariance else 1.0
    w = _window_1d(win_size, gaussian, sigma, x.dtype, x.device)

    # one filtering pass over the five moment images
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), w)
    ux, uy, uxx, uyy, uxy = stats.chunk(5, dim=1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)
