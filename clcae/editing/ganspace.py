"""GANSpace: principal components of W and layer-wise edits along them (Härkönen et al., NeurIPS 2020).

:func:`compute_pca` samples ``w = mapping(z)`` from any generator and returns the principal axes of W
(:class:`PCA`: ``comp`` [K, D] orthonormal rows sorted by variance, ``std`` [K], ``mean`` [D]); :func:`apply_ganspace`
moves chosen W+ layers along a component.

Edits are tuples ``(component, first_layer, last_layer, strength)`` with **inclusive** layer bounds. The official
e4e/CLCAE tuples use a Python slice ``start:end`` (end excluded): convert them with :func:`from_official_edit`
(``(54, 7, 8, 20)``, "eyes", edits layer 7 only, i.e. ``(54, 7, 7, 20)`` here).

Two meanings of ``strength`` (both scaled by the component's standard deviation, as e4e's editor is):

- ``mode='relative'`` (default): add ``strength * std_k * comp_k``; strength 0 is no edit, so a sweep ``-s..s`` is
  centred on the inversion;
- ``mode='absolute'`` (e4e's ``ganspace.edit``, used by CLCAE's scripts): set the code's coordinate along the
  component to ``strength`` standard deviations, ``delta = (strength - c) * std_k * comp_k`` with
  ``c = <W+[0] - mean, comp_k> / std_k`` measured on layer 0 of each sample.

Files: ours (:func:`save_pca`, ``{'format': 'clcae.ganspace_pca', 'comp' [K, D], 'mean' [D], 'std' [K], ...}``) and
the official ``ffhq_pca.pt`` layout of the e4e / CLCAE repositories (``{'comp': [K, 1, D], 'mean': [1, D],
'std': [K]}``), which :func:`save_pca` can also write (``layout='official'``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..formats.files import FORMAT_VERSION, CheckpointError, atomic_save
from ..formats.read import load_file
from .interfacegan import generator_fingerprint

__all__ = ["PCA", "PCA_KIND", "GANSPACE_MODES", "E4E_FFHQ_EDITS", "E4E_CARS_EDITS", "compute_pca",
           "pca_from_samples", "save_pca", "load_pca", "apply_ganspace", "from_official_edit"]

PCA_KIND = "ganspace_pca"
GANSPACE_MODES = ("relative", "absolute")

#: The official FFHQ GANSpace edits of the CLCAE scripts (spec §7.2), in their own ``(component, start, end,
#: strength)`` convention: layers ``start:end`` (end excluded), strength an absolute coordinate (``mode='absolute'``).
#: Convert with :func:`from_official_edit` before :func:`apply_ganspace`.
E4E_FFHQ_EDITS = {"eyes": (54, 7, 8, 20), "beard": (58, 7, 9, 20), "lip": (34, 10, 11, 20),
                  "white_hair": (57, 7, 10, -24)}
#: The official car edits (same convention; they need the car generator's PCA, which the repositories lack).
E4E_CARS_EDITS = {"viewpoint1": (0, 0, 5, 2), "viewpoint2": (0, 0, 5, -2), "cube": (16, 3, 6, 25),
                  "color": (22, 9, 11, -27), "grass": (41, 9, 11, -18)}


@dataclass
class PCA:
    """Principal axes of W.

    Attributes:
        comp: ``[K, D]`` orthonormal components, sorted by decreasing variance; each sign fixed so that its
            largest-magnitude entry is positive (reproducible across runs).
        std: ``[K]`` standard deviation of the samples along each component (unbiased).
        mean: ``[D]`` sample mean of W.
        meta: how it was computed (samples, seed, generator fingerprint, explained variance ratio, ...).
        source: the file it came from (empty when computed).
    """

    comp: torch.Tensor
    std: torch.Tensor
    mean: torch.Tensor
    meta: dict = field(default_factory=dict)
    source: str = ""

    @property
    def n_components(self) -> int:
        """K."""
        return int(self.comp.shape[0])

    @property
    def dim(self) -> int:
        """D (the generator's style_dim)."""
        return int(self.comp.shape[1])


def _canonical_signs(comp: torch.Tensor) -> torch.Tensor:
    idx = comp.abs().argmax(dim=1)
    signs = comp.gather(1, idx[:, None]).sign()
    signs[signs == 0] = 1
    return comp * signs


def _pca_from_moments(total: torch.Tensor, outer: torch.Tensor, n: int, k: int | None) -> tuple[torch.Tensor, ...]:
    """(comp [K, D], std [K], mean [D], explained_variance_ratio [K]) from float64 sums over ``n`` samples."""
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples; got {n}")
    dim = total.numel()
    k = dim if k is None else int(k)
    if not 1 <= k <= dim:
        raise ValueError(f"n_components must be in [1, {dim}]; got {k}")
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    cov = (cov + cov.T) / 2
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    comp = _canonical_signs(evecs.T[:k].contiguous())
    total_var = float(evals.sum()) or 1.0
    return comp.float(), evals[:k].sqrt().float(), mean.float(), (evals[:k] / total_var).float()


def pca_from_samples(samples: torch.Tensor, n_components: int | None = None) -> PCA:
    """PCA of ``samples`` [N, D] (float64 internally): the eigen-decomposition of their covariance."""
    x = samples.detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"samples must be [N, D]; got {list(samples.shape)}")
    comp, std, mean, ratio = _pca_from_moments(x.sum(0), x.T @ x, x.shape[0], n_components)
    return PCA(comp, std, mean, {"n_samples": int(x.shape[0]), "explained_variance_ratio": ratio})


@torch.no_grad()
def compute_pca(generator: torch.nn.Module, n_samples: int = 100_000, seed: int = 0,
                n_components: int | None = 80, batch: int = 10_000, device: str | torch.device = "cpu",
                progress: bool = False) -> PCA:
    """GANSpace's PCA for any generator: the principal axes of ``w = mapping(z)``, ``z ~ N(0, I)``.

    Args:
        generator: a :class:`~clcae.networks.stylegan2.Generator` (only ``mapping`` runs).
        n_samples: number of w samples (GANSpace: 1M for StyleGAN2; 100k gives the leading components).
        seed: z is drawn in one stream from ``torch.Generator().manual_seed(seed)``.
        n_components: K kept (official files: 80; None or more than D keeps all D).
        batch: samples per mapping call. The covariance is accumulated in float64, so memory does not grow
            with ``n_samples``.
    Returns:
        :class:`PCA` whose ``meta`` records ``n_samples``, ``seed``, the explained variance ratio and the
        generator's fingerprint.
    """
    from tqdm.auto import tqdm

    dim = int(generator.style_dim)
    k = None if n_components is None or n_components >= dim else int(n_components)
    gen = torch.Generator().manual_seed(int(seed))
    total = torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    for start in tqdm(range(0, n_samples, batch), disable=not progress, desc="PCA samples", unit="batch"):
        b = min(batch, n_samples - start)
        z = torch.randn(b, dim, generator=gen).to(device)
        w = generator.mapping(z).to("cpu", torch.float64)
        total += w.sum(0)
        outer += w.T @ w
    comp, std, mean, ratio = _pca_from_moments(total, outer, n_samples, k)
    meta = {"n_samples": int(n_samples), "seed": int(seed), "space": "w", "explained_variance_ratio": ratio,
            "generator": generator_fingerprint(generator)}
    return PCA(comp, std, mean, meta)


def save_pca(pca: PCA, path: str | os.PathLike, layout: str = "ours") -> Path:
    """Write ``pca`` atomically.

    ``layout='ours'``: ``{'format': 'clcae.ganspace_pca', 'kind', 'format_version', 'comp' [K, D], 'std' [K],
    'mean' [D], 'meta'}``. ``layout='official'``: the e4e / CLCAE ``ffhq_pca.pt`` dict ``{'comp': [K, 1, D],
    'mean': [1, D], 'std': [K]}`` (nothing else). Both load with ``torch.load(weights_only=True)``.
    """
    comp, std, mean = (t.detach().to("cpu", torch.float32).clone() for t in (pca.comp, pca.std, pca.mean))
    if layout == "ours":
        obj: dict[str, Any] = {"format": f"clcae.{PCA_KIND}", "kind": PCA_KIND, "format_version": FORMAT_VERSION,
                               "comp": comp, "std": std, "mean": mean, "meta": dict(pca.meta)}
    elif layout == "official":
        obj = {"comp": comp.unsqueeze(1), "mean": mean.unsqueeze(0), "std": std}
    else:
        raise ValueError(f"layout must be 'ours' or 'official'; got {layout!r}")
    return atomic_save(obj, path)


def load_pca(path: str | os.PathLike, generator: Any = None) -> PCA:
    """Read a PCA file: ours or the official ``{'comp': [K, 1, D], 'mean': [1, D], 'std': [K]}`` layout.

    With ``generator``, the dimension must equal its ``style_dim``. Raises
    :class:`~clcae.checkpoints.CheckpointError` naming the file and the problem.
    """
    src = str(path)
    obj = load_file(path)
    if not isinstance(obj, Mapping) or not all(k in obj for k in ("comp", "mean", "std")):
        keys = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{src}: not a GANSpace PCA (expected a dict with 'comp', 'mean' and 'std'; got {keys})")
    meta: dict = {}
    if "format" in obj:
        if obj.get("format") != f"clcae.{PCA_KIND}":
            raise CheckpointError(f"{src}: format {obj.get('format')!r} is not a clcae GANSpace PCA")
        version = obj.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{src}: format_version {version!r} is not supported (reads 1..{FORMAT_VERSION})")
        meta = dict(obj.get("meta") or {})
    else:
        meta = {"layout": "official"}
    comp, mean, std = obj["comp"], obj["mean"], obj["std"]
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (comp, mean, std)):
        raise CheckpointError(f"{src}: 'comp', 'mean' and 'std' must be floating-point tensors")
    comp = comp.detach().float()
    if comp.ndim == 3 and comp.shape[1] == 1:  # official [K, 1, D]
        comp = comp[:, 0]
    mean, std = mean.detach().float().reshape(-1), std.detach().float().reshape(-1)
    if comp.ndim != 2 or mean.numel() != comp.shape[1] or std.numel() != comp.shape[0]:
        raise CheckpointError(f"{src}: inconsistent shapes comp {list(obj['comp'].shape)}, mean "
                              f"{list(obj['mean'].shape)}, std {list(obj['std'].shape)} (expected [K, D] or "
                              "[K, 1, D], [D] or [1, D], [K])")
    if not all(torch.isfinite(t).all() for t in (comp, mean, std)):
        raise CheckpointError(f"{src}: NaN or Inf values")
    if generator is not None and comp.shape[1] != int(generator.style_dim):
        raise CheckpointError(f"{src}: the PCA has dimension {comp.shape[1]}, but the generator's W space has "
                              f"{generator.style_dim}: it was computed for another generator")
    return PCA(comp.contiguous(), std.contiguous(), mean.contiguous(), meta, src)


def from_official_edit(edit: Sequence[float]) -> tuple[int, int, int, float]:
    """An official ``(component, start, end, strength)`` tuple (layers ``start:end``, end excluded) -> ours
    ``(component, first, last, strength)`` with inclusive layers (``last = end - 1``)."""
    comp, start, end, strength = edit
    if int(end) <= int(start):
        raise ValueError(f"official edit {tuple(edit)}: the slice {start}:{end} selects no layer")
    return int(comp), int(start), int(end) - 1, float(strength)


def apply_ganspace(wplus: torch.Tensor, pca: PCA, edits: Sequence[Sequence[Any]], mode: str = "relative"
                   ) -> torch.Tensor:
    """Move W+ codes along PCA components on chosen layers (a new tensor; the input is unchanged).

    Args:
        wplus: ``[B, n, D]``.
        pca: :class:`PCA` with the same D.
        edits: ``(component, first_layer, last_layer, strength)`` tuples, layers inclusive; ``strength`` is a
            number or a per-sample ``[B]`` tensor (one column of a sweep per sample). Several edits are applied in
            order and add up.
        mode: ``'relative'`` or ``'absolute'`` (see the module docstring).
    Returns:
        Edited ``[B, n, D]``.
    """
    if mode not in GANSPACE_MODES:
        raise ValueError(f"mode must be one of {GANSPACE_MODES}; got {mode!r}")
    if wplus.ndim != 3:
        raise ValueError(f"apply_ganspace needs W+ codes [B, n, D]; got shape {list(wplus.shape)} (repeat a w code "
                         "over the layers first)")
    b, n, dim = wplus.shape
    if dim != pca.dim:
        raise ValueError(f"the codes have dimension {dim}; the PCA has {pca.dim}")
    out = wplus.clone()
    for edit in edits:
        if len(edit) != 4:
            raise ValueError(f"a GANSpace edit is (component, first_layer, last_layer, strength); got {edit!r}")
        k, first, last, strength = edit
        k, first, last = int(k), int(first), int(last)
        if not 0 <= k < pca.n_components:
            raise ValueError(f"component {k} does not exist (the PCA has {pca.n_components})")
        if not 0 <= first <= last < n:
            raise ValueError(f"layers {first}..{last} (inclusive) must satisfy 0 <= first <= last <= {n - 1}")
        comp = pca.comp[k].to(out.device, out.dtype)
        std = pca.std[k].to(out.device, out.dtype)
        s = torch.as_tensor(strength, dtype=out.dtype, device=out.device)
        s = s.expand(b) if s.ndim == 0 else s
        if s.shape != (b,):
            raise ValueError(f"strength must be a number or a [B] tensor with B = {b}; got shape {list(s.shape)}")
        if mode == "absolute":
            coord = ((out[:, 0] - pca.mean.to(out.device, out.dtype)) @ comp) / std
            s = s - coord
        out[:, first:last + 1] += (s * std)[:, None, None] * comp
    return out
