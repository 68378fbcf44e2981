"""Metrics that see what a person sees in a reconstruction: lost fine detail and lost attributes.

MSE, PSNR and SSIM reward a blurred reconstruction (the mean of the plausible images is closer to the input, in
squared error, than any single sharp guess), so a table of them cannot tell blur from fidelity. These two can:

- :func:`detail_ratio`: how much high-frequency energy the reconstruction has, relative to the input. The
  high-pass band is ``x - G_sigma * x`` (Gaussian of ``sigma`` px at the metric size, default 1 px); the energy is
  its mean square over channels and pixels. ``1`` = as much fine detail as the input; below 1 detail was lost
  (a Gaussian blur of sigma 1 px gives about 0.3 on SynthFaces renders); above 1 detail (or noise) was added.
  It counts detail, not whether it is the *right* detail: read it beside a distance.
- :func:`attribute_fidelity`: on SynthFaces, where every input has ground-truth labels, the domain network's
  attribute predictions on the reconstruction against the labels: glasses correct or not, and the absolute errors
  of eyes-open, smile and age (label units). The same predictions on the input itself are the ceiling (the
  network's own error).

Inputs are ``[B, 3, H, W]`` float tensors in [-1, 1]; outputs are float64 ``[B]`` on the CPU, no gradients.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["high_pass", "detail_energy", "detail_ratio", "attribute_fidelity", "FIDELITY_ATTRIBUTES",
           "fidelity_metric_names"]

#: The attributes :func:`attribute_fidelity` reports: a person sees them in a face and they are small features
#: that blur removes first (the frames of glasses, the eye opening, the mouth line) or global ones (age).
FIDELITY_ATTRIBUTES = ("glasses", "eyes_open", "smile", "age")


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def high_pass(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``x - G_sigma * x`` per channel (separable Gaussian, reflect padding), same shape as ``x``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    b, c, h, w = x.shape
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    if min(h, w) <= r:
        raise ValueError(f"images of {h}x{w} px are too small for a high-pass of sigma {sigma}")
    y = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return x - y.view(b, c, h, w)


@torch.no_grad()
def detail_energy(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Mean square of :func:`high_pass` over channels and pixels: ``[B]`` float64 (images clamped to [-1, 1])."""
    hp = high_pass(x.detach().double().clamp(-1, 1), sigma)
    return hp.square().mean(dim=(1, 2, 3)).cpu()


@torch.no_grad()
def detail_ratio(output: torch.Tensor, target: torch.Tensor, sigma: float = 1.0, eps: float = 1e-12) -> torch.Tensor:
    """High-frequency energy of ``output`` over that of ``target`` (see the module docstring): ``[B]`` float64."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    return detail_energy(output, sigma) / detail_energy(target, sigma).clamp_min(eps)


def fidelity_metric_names(attribute_names: Sequence[str]) -> list[str]:
    """The per-image metric names :func:`attribute_fidelity` returns for a network predicting ``attribute_names``."""
    names = []
    for a in FIDELITY_ATTRIBUTES:
        if a in attribute_names:
            names.append("glasses_acc" if a == "glasses" else f"{a}_err")
    return names


@torch.no_grad()
def attribute_fidelity(domain_net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       label_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The domain network's predictions on ``images`` against ground-truth ``labels``.

    Args:
        domain_net: a :class:`~clcae.networks.domain.DomainNet` (``attributes(x)`` in label units, order
            ``attribute_names``).
        images: ``[B, 3, H, W]`` in [-1, 1] (reconstructions, or the inputs for the ceiling).
        labels: ``[B, len(label_names)]`` ground truth in label units.
        label_names: the attribute name of each label column.
    Returns:
        ``{'glasses_acc': 1.0 / 0.0 per image (prediction > 0.5 equals label > 0.5), 'eyes_open_err',
        'smile_err', 'age_err': absolute errors in label units}``, each float64 ``[B]`` on the CPU; attributes the
        network or the labels lack are left out.
    """
    pred = domain_net.attributes(images).double().cpu()
    labels = torch.as_tensor(labels, dtype=torch.float64).cpu()
    if labels.ndim != 2 or labels.shape != (images.shape[0], len(label_names)):
        raise ValueError(f"labels must be [B={images.shape[0]}, {len(label_names)}]; got {tuple(labels.shape)}")
    net_names = list(domain_net.attribute_names)
    out: dict[str, torch.Tensor] = {}
    for a in FIDELITY_ATTRIBUTES:
        if a not in net_names or a not in label_names:
            continue
        p, t = pred[:, net_names.index(a)], labels[:, list(label_names).index(a)]
        if a == "glasses":
            out["glasses_acc"] = ((p > 0.5) == (t > 0.5)).double()
        else:
            out[f"{a}_err"] = (p - t).abs()
    return out
