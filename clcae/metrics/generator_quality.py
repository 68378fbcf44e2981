"""Quality of a SynthFaces generator in the feature spaces of several networks: Fréchet distance and improved
precision / recall, each beside its real-vs-real floor.

Why several networks: a generator trained against a discriminator built on one feature network (the Projected-GAN
option of ``scripts/train_generator.py`` uses the shipped domain network's trunk) can lower the Fréchet distance in
that network's space without looking better. The distance that judges it must come from an independently trained
network (another seed, data seed and architecture); :func:`generator_quality_report` computes both from the same
images, so they can be read side by side.

Protocol (as :mod:`clcae.metrics.generator`): ``n`` samples of G (z from ``seed``, random noise, truncation
``truncation``, clamped to [-1, 1]) against test-split renders ``0 .. n`` of SynthFaces (``data_seed``); the floor is
test renders ``n .. 2n`` against the same reference.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .frechet import feature_statistics, frechet_distance
from .generator import render_synthfaces
from .precision_recall import precision_recall

__all__ = ["features_of", "real_reference_features", "generated_features", "quality_from_features", "generator_quality_report"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def features_of(images: torch.Tensor, nets: Mapping[str, FeatureFn], batch: int = 64,
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``{net: [N, D]}``: features of ``images`` ``[N, 3, H, W]`` (float in [-1, 1] or uint8 in 0..255)."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    out: dict[str, list[torch.Tensor]] = {name: [] for name in nets}
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device)
        for name, fn in nets.items():
            out[name].append(fn(x).float().cpu())
    return {name: torch.cat(v) for name, v in out.items()}


@torch.no_grad()
def real_reference_features(nets: Mapping[str, FeatureFn], n: int, res: int, data_seed: int = 0, batch: int = 64,
                            device: str | torch.device = "cpu", progress: bool = False
                            ) -> dict[str, dict[str, torch.Tensor]]:
    """``{net: {'reference': [n, D], 'other': [n, D]}}``: features of test renders ``0 .. n`` and ``n .. 2n``."""
    reference = features_of(render_synthfaces(0, n, res, "test", data_seed, progress), nets, batch, device)
    other = features_of(render_synthfaces(n, n, res, "test", data_seed, progress), nets, batch, device)
    return {name: {"reference": reference[name], "other": other[name]} for name in nets}


@torch.no_grad()
def generated_features(G, nets: Mapping[str, FeatureFn], n: int, truncation: float = 1.0, seed: int = 0,
                       batch: int = 64, device: str | torch.device = "cpu", progress: bool = False
                       ) -> dict[str, torch.Tensor]:
    """``{net: [n, D]}``: features of ``n`` samples of ``G`` (the same images for every network).

    z comes from a generator seeded with ``seed``; the per-layer random noise, which ``G`` draws from the global
    torch RNG, is drawn inside ``torch.random.fork_rng`` seeded with ``seed + 1``, so the report is the same on every
    call (on the CPU) and the caller's RNG state is left as it was.
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in nets}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for start in tqdm(range(0, n, batch), disable=not progress, desc="sampling", unit="batch"):
            z = torch.randn(min(batch, n - start), G.style_dim, generator=g).to(device)
            img = G(z, truncation=truncation, noise_mode="random").clamp(-1, 1)
            for name, fn in nets.items():
                out[name].append(fn(img).float().cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def quality_from_features(real: Mapping[str, torch.Tensor], generated: torch.Tensor, k: int = 3) -> dict:
    """FD, precision and recall of ``generated`` ``[n, D]`` against ``real['reference']``, and the same numbers for
    ``real['other']`` (the floor / ceiling that sampling noise gives at this ``n``)."""
    ref = real["reference"]
    ref_stats = feature_statistics(ref)
    gen_pr = precision_recall(ref, generated, k)
    floor_pr = precision_recall(ref, real["other"], k)
    return {
        "fd_generated_vs_test": frechet_distance(*feature_statistics(generated), *ref_stats),
        "fd_real_vs_real": frechet_distance(*feature_statistics(real["other"]), *ref_stats),
        "precision": gen_pr["precision"], "recall": gen_pr["recall"],
        "precision_real_vs_real": floor_pr["precision"], "recall_real_vs_real": floor_pr["recall"],
        "k": int(k),
    }


@torch.no_grad()
def generator_quality_report(G, nets: Mapping[str, FeatureFn], n: int = 5000, truncation: float = 1.0,
                             seed: int = 0, data_seed: int = 0, k: int = 3, batch: int = 64,
                             device: str | torch.device = "cpu", progress: bool = False,
                             real: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> dict:
    """``{'n', 'truncation', 'k', net: quality_from_features(...) for each net}``.

    Args:
        G: a generator (``G(z, truncation=..., noise_mode=...)``, ``G.style_dim``, ``G.size``).
        nets: ``{name: images [B, 3, H, W] in [-1, 1] -> features [B, D]}``.
        real: precomputed :func:`real_reference_features` for the same ``n``, ``G.size`` and ``data_seed`` (to
            evaluate many checkpoints against one set of renders); rendered here when ``None``.
    """
    if real is None:
        real = real_reference_features(nets, n, G.size, data_seed, batch, device, progress)
    gen = generated_features(G, nets, n, truncation, seed, batch, device, progress)
    report: dict = {"n": n, "truncation": truncation, "k": int(k)}
    for name in nets:
        if real[name]["reference"].shape[0] != n:
            raise ValueError(f"the real features of {name!r} hold {real[name]['reference'].shape[0]} images, not {n}")
        report[name] = quality_from_features(real[name], gen[name], k)
    return report
