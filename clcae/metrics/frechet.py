"""Fréchet distance between two sets of features, each modelled as a Gaussian (FID when the features are
Inception's; in this project, for SynthFaces, :meth:`clcae.networks.domain.DomainNet.features`).

``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, computed in float64 with ``scipy.linalg.sqrtm``.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["feature_statistics", "frechet_distance", "extract_features", "frechet_distance_from_images"]


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``[N, D]`` features (N >= 2): ``(mu [D], sigma [D, D])``, both float64.

    The covariance is the unbiased estimate (divides by ``N - 1``), as in the reference FID code.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2; got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or Inf")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, float]:
    """``(sqrtm(a), relative error |X X - A|_F / |A|_F)``; scipy's singular-matrix warnings are handled by the
    caller, so they are silenced here."""
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = linalg.sqrtm(a)
    if not np.isfinite(x).all():
        return x, float("inf")
    norm = np.linalg.norm(a, "fro")
    err = np.linalg.norm(x @ x - a, "fro") / norm if norm > 0 else float(np.linalg.norm(x, "fro"))
    return x, float(err)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, max_imag: float = 1e-3) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float, >= 0 up to rounding).

    Numerical care, as in the reference FID implementations: if ``sqrtm(sigma1 @ sigma2)`` is not finite or
    inaccurate (relative error above 1e-4: a singular product, e.g. fewer samples than dimensions), it is
    recomputed with ``eps`` added to both diagonals; a complex result (rounding around zero eigenvalues) keeps its
    real part when the imaginary parts of its diagonal are below ``max_imag``, and raises :class:`ValueError`
    otherwise.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    covmean, err = _sqrtm(s1 @ s2)
    if not err < 1e-4:
        offset = np.eye(d) * eps
        covmean, err = _sqrtm((s1 + offset) @ (s2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("the matrix square root is not finite even with an eps offset on the covariances")
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > max_imag:
            raise ValueError(f"the matrix square root has an imaginary component of {imag:.3g} (> {max_imag})")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


@torch.no_grad()
def extract_features(features_fn: Callable[[torch.Tensor], torch.Tensor],
                     images: torch.Tensor | Sequence[torch.Tensor], batch: int = 256,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``features_fn`` over ``images`` (``[N, 3, H, W]``, or any sequence of ``[3, H, W]`` images) in chunks of
    ``batch``, without gradients; returns float32 ``[N, D]`` on the CPU. ``device``: where each chunk is moved
    first (``None``: left where it is)."""
    n = len(images)
    if n == 0:
        raise ValueError("no images")
    out = []
    for start in range(0, n, batch):
        chunk = images[start:start + batch]
        if not isinstance(chunk, torch.Tensor):
            chunk = torch.stack(list(chunk))
        if device is not None:
            chunk = chunk.to(device)
        f = features_fn(chunk)
        if f.ndim != 2 or f.shape[0] != chunk.shape[0]:
            raise ValueError(f"features_fn must return [B, D]; got {tuple(f.shape)} for {chunk.shape[0]} images")
        out.append(f.detach().float().cpu())
    return torch.cat(out)


def frechet_distance_from_images(features_fn: Callable[[torch.Tensor], torch.Tensor],
                                 images_a: torch.Tensor | Sequence[torch.Tensor],
                                 images_b: torch.Tensor | Sequence[torch.Tensor], batch: int = 256,
                                 device: torch.device | str | None = None) -> float:
    """Fréchet distance between the features of two image sets (e.g. ``DomainNet.features`` on real and
    reconstructed SynthFaces, ``[N, 3, H, W]`` in [-1, 1]). The sets may differ in size; each needs at least two
    images (and, for a meaningful number, several times more images than feature dimensions)."""
    fa = extract_features(features_fn, images_a, batch, device)
    fb = extract_features(features_fn, images_b, batch, device)
    return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
