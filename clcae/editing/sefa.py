"""SeFa: closed-form factorisation of the generator's style-modulation weights (Shen & Zhou, CVPR 2021).

Every styled layer turns its W+ code into per-channel styles with an affine map (``...conv.modulation``, an
:class:`~clcae.networks.layers.EqualLinear` with weight ``[C_in, D]``). Stack the rows of the chosen layers' weights
into ``A`` ``[C_total, D]``, normalise each row to unit length, and the directions in W that change the styles the
most are the eigenvectors of ``A^T A`` ``[D, D]`` with the largest eigenvalues. No sampling and no training.

Layers are named here by their **W+ index** ``k`` (the code ``W+[:, k]`` they consume), mapped to the modules of
:class:`~clcae.networks.stylegan2.Generator`: ``k = 0`` is ``conv1``; ``1 <= k <= n - 2`` is ``convs[k - 1]``; the
ToRGB layers (``to_rgb1`` reads ``k = 1``, ``to_rgbs[j]`` reads ``k = 2 j + 3``) join only with
``include_torgb=True``. ``'all'`` = every styled-conv layer ``0 .. n - 2`` (SeFa's and e4e's default: conv layers,
no ToRGB). An edit moves the same W+ layers the directions were computed from.

e4e's ``editings/sefa.py`` (which CLCAE copies, unwired) picks ``conv1`` for index 0 and ``convs[idx - 1]`` for the
others, but then moves W+ rows ``idx - 1``: its edits land one layer early. Here the layers that are factorised
are the layers that are moved. Its eigenvectors come from ``numpy.linalg.eig`` (order not guaranteed); here from a
symmetric eigensolver, sorted by decreasing eigenvalue, each sign fixed so the largest-magnitude entry is positive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .interfacegan import apply_direction, check_layers

__all__ = ["SeFa", "style_layers", "modulation_weights", "sefa_directions", "apply_sefa"]


@dataclass
class SeFa:
    """The result of :func:`sefa_directions`.

    Attributes:
        directions: ``[K, D]`` unit eigenvectors of ``A^T A``, by decreasing eigenvalue.
        eigenvalues: ``[K]``.
        layers: the W+ layers they were computed from (and that :func:`apply_sefa` moves by default).
    """

    directions: torch.Tensor
    eigenvalues: torch.Tensor
    layers: tuple[int, ...]


def style_layers(generator: nn.Module, include_torgb: bool = False) -> dict[int, list[tuple[str, nn.Module]]]:
    """``{W+ index: [(module name, modulation EqualLinear), ...]}`` for every layer that reads a style."""
    n = int(generator.n_latent)
    out: dict[int, list[tuple[str, nn.Module]]] = {k: [] for k in range(n)}
    out[0].append(("conv1.conv.modulation", generator.conv1.conv.modulation))
    for j, conv in enumerate(generator.convs):
        out[j + 1].append((f"convs.{j}.conv.modulation", conv.conv.modulation))
    if include_torgb:
        out[1].append(("to_rgb1.conv.modulation", generator.to_rgb1.conv.modulation))
        for j, rgb in enumerate(generator.to_rgbs):
            out[2 * j + 3].append((f"to_rgbs.{j}.conv.modulation", rgb.conv.modulation))
    return {k: v for k, v in out.items() if v}


def _resolve_layers(generator: nn.Module, layers: str | Sequence[int], include_torgb: bool) -> tuple[int, ...]:
    available = style_layers(generator, include_torgb)
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all' or a list of W+ indices; got {layers!r}")
        return tuple(sorted(available))
    chosen = check_layers(layers, int(generator.n_latent), "SeFa layers")
    missing = [k for k in chosen if k not in available]
    if missing:
        raise ValueError(f"W+ layers {missing} feed no styled conv (only a ToRGB); pass include_torgb=True or pick "
                         f"from {sorted(available)}")
    return chosen


def modulation_weights(generator: nn.Module, layers: str | Sequence[int] = "all",
                       include_torgb: bool = False) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The stacked, row-normalised modulation weights ``A`` ``[C_total, D]`` (float64) of the chosen layers, and
    the layers. Each row maps W to one channel's style; the equalised-lr scale vanishes in the normalisation."""
    chosen = _resolve_layers(generator, layers, include_torgb)
    table = style_layers(generator, include_torgb)
    rows = [mod.weight.detach().to("cpu", torch.float64) for k in chosen for _, mod in table[k]]
    a = torch.cat(rows, dim=0)
    return a / a.norm(dim=1, keepdim=True).clamp(min=1e-12), chosen


def sefa_directions(generator: nn.Module, layers: str | Sequence[int] = "all", k: int | None = None,
                    include_torgb: bool = False) -> SeFa:
    """SeFa's closed form: the top-``k`` eigenvectors of ``A^T A`` (see the module docstring).

    Args:
        generator: a :class:`~clcae.networks.stylegan2.Generator`.
        layers: ``'all'`` (every styled conv) or W+ indices, e.g. ``[0, 1]`` coarse (pose, shape), ``[2..5]``
            middle, ``[6..]`` fine (colour, texture) at 1024 px.
        k: number of directions (default all D).
        include_torgb: also factorise the ToRGB modulations of the chosen layers.
    Returns:
        :class:`SeFa` (directions float32 ``[k, D]``, eigenvalues ``[k]``, the layers).
    """
    a, chosen = modulation_weights(generator, layers, include_torgb)
    dim = a.shape[1]
    k = dim if k is None else int(k)
    if not 1 <= k <= dim:
        raise ValueError(f"k must be in [1, {dim}]; got {k}")
    evals, evecs = torch.linalg.eigh(a.T @ a)
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k].T
    idx = evecs.abs().argmax(dim=1)
    signs = evecs.gather(1, idx[:, None]).sign()
    signs[signs == 0] = 1
    return SeFa((evecs * signs).float().contiguous(), evals.float(), chosen)


def apply_sefa(codes: torch.Tensor, sefa: SeFa, index: int, strength: float | torch.Tensor,
               layers: Sequence[int] | None = None) -> torch.Tensor:
    """Move W+ codes ``[B, n, D]`` along direction ``index`` by ``strength`` (a number or ``[B]``) on ``layers``
    (default: the layers the directions came from). SeFa's own sweeps use distances in ``[-15, 15]``
    (``linspace(-15, 15, 11)``). Returns the edited codes."""
    if not 0 <= int(index) < sefa.directions.shape[0]:
        raise ValueError(f"SeFa direction {index} does not exist (have {sefa.directions.shape[0]})")
    if codes.ndim != 3:
        raise ValueError(f"apply_sefa needs W+ codes [B, n, D]; got shape {list(codes.shape)}")
    return apply_direction(codes, sefa.directions[int(index)], strength, sefa.layers if layers is None else layers)
