"""Editing metrics on SynthFaces, measured with the domain network: does an edit change what it should, and only that?

For inverted latents ``l`` (W+ codes ``[N, n, D]`` or w codes ``[N, D]``), an edit ``direction_fn(l, s)`` at
strengths ``s_1 .. s_S`` and a domain network ``net`` (:class:`clcae.networks.domain.DomainNet`, or anything with
``attributes``, ``embed`` and ``attribute_names``), :func:`editing_metrics` renders the unedited reconstruction
``x_0 = G(l)`` and every edit ``x_s = G(direction_fn(l, s))`` (constant noise buffers, clamped to [-1, 1]) and
reports, per image and then mean ± std (population std) over the images:

- ``slope``: the least-squares slope of the predicted target attribute against the strength,
  ``sum_s (s - s̄)(a_t(x_s) - ā_t) / sum_s (s - s̄)^2``, in label units per unit strength (how much the edit
  moves the attribute it is meant to move);
- ``id_kept``: the cosine similarity of the identity embeddings of ``x_s`` and ``x_0``, averaged over the
  non-zero strengths (1 = the person is unchanged);
- ``other_change``: ``|a_j(x_s) - a_j(x_0)|`` averaged over the other attributes ``j`` and the non-zero strengths,
  in label units (0 = nothing else changed); also per attribute and per strength.

The strengths need not include 0: the reference is always the unedited render. Edits act on the codes only (an
F-space correction, as CLCAE's official edit applies, belongs to :mod:`clcae.editing`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .tables import summarize

__all__ = ["editing_metrics", "render_codes", "least_squares_slopes"]

DirectionFn = Callable[[torch.Tensor, float], torch.Tensor]


@torch.no_grad()
def render_codes(generator, codes: torch.Tensor) -> torch.Tensor:
    """``generator.synthesis(codes, noise_mode='const')`` clamped to [-1, 1] (images as they would be saved)."""
    return generator.synthesis(codes, noise_mode="const").float().clamp(-1.0, 1.0)


def least_squares_slopes(strengths: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per-row least-squares slope of ``values [N, S]`` against ``strengths [S]`` (at least two distinct)."""
    s = strengths.to(values.dtype)
    sc = s - s.mean()
    denom = (sc * sc).sum()
    if not denom > 0:
        raise ValueError("least_squares_slopes: need at least two distinct strengths")
    return ((values - values.mean(dim=1, keepdim=True)) * sc).sum(dim=1) / denom


def _summary(values: torch.Tensor) -> dict:
    return summarize(values.double().flatten().tolist())


@torch.no_grad()
def editing_metrics(generator, latents: torch.Tensor, direction_fn: DirectionFn, strengths: Sequence[float],
                    domain_net, target_attribute: str, other_attributes: Sequence[str] | None = None,
                    batch: int = 16, return_images: int = 0) -> dict:
    """Measure an edit with the domain network (definitions in the module docstring).

    Args:
        generator: a :class:`~clcae.networks.stylegan2.Generator` (anything with ``synthesis(codes,
            noise_mode='const')`` returning ``[B, 3, H, W]`` in [-1, 1]).
        latents: the inverted codes, ``[N, n, D]`` (W+) or ``[N, D]`` (w), on the generator's device.
        direction_fn: ``direction_fn(codes, strength) -> edited codes`` for a chunk of ``latents`` (e.g.
            ``lambda c, s: apply_direction(c, direction, s)`` from :mod:`clcae.editing.interfacegan`).
        strengths: at least two distinct edit strengths (e.g. ``[-2, -1, 0, 1, 2]``).
        domain_net: ``attributes(x) -> [B, A]`` in label units, ``embed(x) -> [B, E]`` and ``attribute_names``
            (a :class:`clcae.networks.domain.DomainNet`).
        target_attribute: the attribute the edit is meant to change (one of ``domain_net.attribute_names``).
        other_attributes: the attributes whose change counts as a side effect (default: every other one).
        batch: codes rendered per generator call.
        return_images: also return the renders of the first ``k`` latents as ``images`` ``[k, 1 + S, 3, H, W]``
            (the unedited render first, then the strengths in order), on the CPU.

    Returns:
        ``{'target_attribute', 'strengths', 'n', 'slope', 'id_kept', 'other_change'}`` where the last three are
        ``{'mean', 'std', 'n', 'n_invalid'}`` summaries over the images; plus ``'slope_pooled'`` (the slope of the
        per-strength mean change), ``'target_change_per_strength'`` (mean ``a_t(x_s) - a_t(x_0)``),
        ``'id_kept_per_strength'``, ``'other_change_per_strength'``, ``'other_change_per_attribute'``
        (``{name: mean |change|}`` over the non-zero strengths), ``'other_attributes'`` and ``'per_image'``
        (``{'slope', 'id_kept', 'other_change'}`` lists, one value per latent). Per-strength lists follow
        ``strengths``; at strength 0 they hold the values of the zero edit (normally 0 change, similarity 1).
    """
    strengths = [float(s) for s in strengths]
    if len(set(strengths)) < 2:
        raise ValueError(f"editing_metrics: need at least two distinct strengths; got {strengths}")
    if latents.ndim not in (2, 3) or latents.shape[0] < 1:
        raise ValueError(f"editing_metrics: latents must be [N, D] or [N, n, D] with N >= 1; got "
                         f"{tuple(latents.shape)}")
    if batch < 1:
        raise ValueError(f"editing_metrics: batch must be >= 1; got {batch}")
    names = [str(n) for n in domain_net.attribute_names]
    if target_attribute not in names:
        raise ValueError(f"editing_metrics: target attribute {target_attribute!r} is not predicted by the domain "
                         f"network (it predicts {names})")
    if other_attributes is None:
        others = [n for n in names if n != target_attribute]
    else:
        unknown = [n for n in other_attributes if n not in names]
        if unknown:
            raise ValueError(f"editing_metrics: other_attributes {unknown} are not predicted by the domain network "
                             f"(it predicts {names})")
        others = [n for n in other_attributes if n != target_attribute]
    t_idx = names.index(target_attribute)
    o_idx = [names.index(n) for n in others]

    n_total, n_s = latents.shape[0], len(strengths)
    target = torch.empty(n_total, n_s, dtype=torch.float64)        # a_t(x_s)
    target_ref = torch.empty(n_total, dtype=torch.float64)        # a_t(x_0)
    id_sim = torch.empty(n_total, n_s, dtype=torch.float64)        # cos(e(x_s), e(x_0))
    other = torch.empty(n_total, n_s, len(o_idx), dtype=torch.float64)  # |a_j(x_s) - a_j(x_0)|
    kept_images: list[torch.Tensor] = []

    for start in range(0, n_total, batch):
        codes = latents[start:start + batch]
        stop = start + codes.shape[0]
        ref = render_codes(generator, codes)
        ref_attr = domain_net.attributes(ref).double()
        ref_emb = F.normalize(domain_net.embed(ref).double(), dim=1)
        target_ref[start:stop] = ref_attr[:, t_idx].cpu()
        keep = max(0, min(return_images - start, codes.shape[0]))
        row_images = [ref[:keep].cpu()] if keep else []
        for k, s in enumerate(strengths):
            edited = direction_fn(codes, s)
            if edited.shape != codes.shape:
                raise ValueError(f"editing_metrics: direction_fn changed the codes' shape from {tuple(codes.shape)} "
                                 f"to {tuple(edited.shape)}")
            img = render_codes(generator, edited)
            attr = domain_net.attributes(img).double()
            emb = F.normalize(domain_net.embed(img).double(), dim=1)
            target[start:stop, k] = attr[:, t_idx].cpu()
            id_sim[start:stop, k] = (emb * ref_emb).sum(dim=1).cpu()
            if o_idx:
                other[start:stop, k] = (attr[:, o_idx] - ref_attr[:, o_idx]).abs().cpu()
            if keep:
                row_images.append(img[:keep].cpu())
        if keep:
            kept_images.append(torch.stack(row_images, dim=1))

    s_t = torch.tensor(strengths, dtype=torch.float64)
    nonzero = s_t != 0
    slopes = least_squares_slopes(s_t, target)
    change = target - target_ref[:, None]
    mean_change = change.mean(dim=0)
    id_kept = id_sim[:, nonzero].mean(dim=1)
    other_per_image = other[:, nonzero].mean(dim=(1, 2)) if o_idx else torch.zeros(n_total, dtype=torch.float64)
    result = {
        "target_attribute": target_attribute,
        "strengths": strengths,
        "n": n_total,
        "slope": _summary(slopes),
        "slope_pooled": float(least_squares_slopes(s_t, mean_change[None])[0]),
        "id_kept": _summary(id_kept),
        "other_change": _summary(other_per_image),
        "target_change_per_strength": mean_change.tolist(),
        "id_kept_per_strength": id_sim.mean(dim=0).tolist(),
        "other_change_per_strength": (other.mean(dim=(0, 2)).tolist() if o_idx else [0.0] * n_s),
        "other_change_per_attribute": {n: float(other[:, nonzero, j].mean()) for j, n in enumerate(others)},
        "other_attributes": others,
        "per_image": {"slope": slopes.tolist(), "id_kept": id_kept.tolist(),
                      "other_change": other_per_image.tolist()},
    }
    if return_images > 0:
        result["images"] = torch.cat(kept_images) if kept_images else torch.empty(0)
    return result
