"""Carrying CLCAE's F-space feature through a latent edit, and rendering every representation of an edit.

A CLCAE result is ``G(W+, features_in={k: f})``: the spatial feature ``f`` replaces the generator's own activation
``G_k(W+)`` at index ``k`` (default 5, the 16x16 map at 1024 px). An edit changes W+ but not ``f``, so ``f`` would
paint the unedited content back. The official scripts (spec §7) add the generator's own change instead::

    f_edited = f + (G_k(W+_edited) - G_k(W+))          per sample
    result   = G(W+_edited, features_in={k: f_edited})

:func:`carry_feature` computes ``f_edited``; :func:`edit_and_render` edits and renders every representation present
in an inversion (w, W+, W+ with f); :func:`encoder_edit` is the official CLCAE InterFaceGAN path, which adds the
direction inside the encoder (the query of its cross-attention) and re-predicts W+ and f.

Every pass uses the same noise (the constant buffers by default, as inversion does), so a zero edit reproduces the
unedited images exactly (the difference ``G_k(W+_edited) - G_k(W+)`` is computed first and is exactly zero then).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..networks.stylegan2 import Generator

__all__ = ["feature_at", "edit_gate", "carry_feature", "edit_and_render", "encoder_edit", "representations_of",
           "REPRESENTATIONS"]

#: Representations, in grid-row order: G(w), G(W+), G(W+ with the F-space feature).
REPRESENTATIONS = ("w", "wplus", "wplus_f")


def _check_idx(generator: Generator, idx_k: int) -> int:
    idx_k = int(idx_k)
    if not 0 <= idx_k < generator.n_latent:
        raise ValueError(f"idx_k must be in [0, {generator.n_latent - 1}]; got {idx_k}")
    return idx_k


def representations_of(latents: Mapping[str, object]) -> list[str]:
    """The representations an inversion can render, in :data:`REPRESENTATIONS` order: ``'w'`` with a ``w`` code,
    ``'wplus'`` with ``wplus``, ``'wplus_f'`` with ``wplus`` and ``f``. ValueError for ``f`` without ``wplus``."""
    if "f" in latents and "wplus" not in latents:
        raise ValueError("latents has 'f' but no 'wplus': the F-space feature belongs to a W+ code")
    have = {"w": "w" in latents, "wplus": "wplus" in latents, "wplus_f": "wplus" in latents and "f" in latents}
    return [r for r in REPRESENTATIONS if have[r]]


@torch.no_grad()
def feature_at(generator: Generator, wplus: torch.Tensor, idx_k: int, noise_mode: str = "const",
               noise: Sequence[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthesis pass of W+ ``[B, n, D]`` (or w ``[B, D]``): ``(G_k(W+) [B, C, h, w], image [B, 3, S, S])``."""
    image, feats = generator.synthesis(wplus, noise_mode=noise_mode, noise=noise, return_features=True)
    return feats[_check_idx(generator, idx_k)], image


def edit_gate(f_gen: torch.Tensor, f_gen_edited: torch.Tensor, tau: float) -> torch.Tensor:
    """How much of the inversion's own correction ``f - G_k(W+)`` to keep at each position under an edit (ours):
    ``exp(-(d / (tau * s))^2)`` ``[B, 1, h, w]``, where ``d`` is the channel norm of the edit's change of the
    generator's activation ``G_k(W+_edited) - G_k(W+)`` at the position and ``s`` the RMS over positions of
    ``G_k(W+)``'s channel norm (per image). Where the edit redraws a region (the mouth of a smile), the correction,
    which holds the unedited region, fades; elsewhere it stays. ``tau <= 0``: all ones (the correction carried
    everywhere, the official behaviour). A zero edit gives ones exactly."""
    if tau <= 0:
        return torch.ones_like(f_gen[:, :1])
    d = (f_gen_edited - f_gen).pow(2).sum(1, keepdim=True)                       # [B, 1, h, w]
    s2 = f_gen.pow(2).sum(1, keepdim=True).mean((2, 3), keepdim=True).clamp_min(1e-12)
    return torch.exp(-d / (s2 * tau * tau))


@torch.no_grad()
def carry_feature(generator: Generator, wplus: torch.Tensor, wplus_edited: torch.Tensor, f: torch.Tensor,
                  idx_k: int, f_gen: torch.Tensor | None = None, noise_mode: str = "const",
                  noise: Sequence[torch.Tensor | None] | None = None, gate: float = 0.0) -> dict[str, torch.Tensor]:
    """``f_edited = f + (G_k(W+_edited) - G_k(W+))`` per sample; with ``gate > 0`` the inversion's correction
    ``f - G_k(W+)`` is weighted by :func:`edit_gate` instead: ``G_k(W+_edited) + (f - G_k(W+)) * m``.

    Args:
        wplus, wplus_edited: ``[B, n, D]`` before and after the edit.
        f: ``[B, C, h, w]`` the F-space feature of the inversion.
        idx_k: generator activation index the feature belongs to.
        f_gen: ``G_k(W+)`` when already known (the inverters return it as ``f_gen``), saving one pass.
        noise_mode, noise: the generator's noise for every pass.
        gate: ``tau`` of :func:`edit_gate` (0: off).
    Returns:
        ``{'f_edited', 'f_gen' (G_k(W+)), 'f_gen_edited' (G_k(W+_edited)), 'image_wplus' (G(W+_edited))}``.
    """
    if wplus.shape != wplus_edited.shape:
        raise ValueError(f"wplus {list(wplus.shape)} and wplus_edited {list(wplus_edited.shape)} must match")
    if f.shape[0] != wplus.shape[0]:
        raise ValueError(f"f has batch {f.shape[0]}; wplus has {wplus.shape[0]}")
    if f_gen is None:
        f_gen, _ = feature_at(generator, wplus, idx_k, noise_mode, noise)
    f_gen_edited, image = feature_at(generator, wplus_edited, idx_k, noise_mode, noise)
    if f_gen.shape != f.shape or f_gen_edited.shape != f.shape:
        raise ValueError(f"f has shape {list(f.shape)}; the generator's activation at index {idx_k} has "
                         f"{list(f_gen_edited.shape)} (wrong idx_k, or f from another generator)")
    f_gen = f_gen.to(f_gen_edited)
    if gate > 0:
        f_edited = f_gen_edited + (f - f_gen) * edit_gate(f_gen, f_gen_edited, gate)
    else:
        f_edited = f + (f_gen_edited - f_gen)
    return {"f_edited": f_edited, "f_gen": f_gen, "f_gen_edited": f_gen_edited, "image_wplus": image}


@torch.no_grad()
def edit_and_render(generator: Generator, latents: Mapping[str, torch.Tensor],
                    edit_fn: Callable[[torch.Tensor], torch.Tensor], idx_k: int = 5, feature_scale: float = 1.0,
                    noise_mode: str = "const", noise: Sequence[torch.Tensor | None] | None = None,
                    representations: Sequence[str] | None = None, gate: float = 0.0) -> dict[str, torch.Tensor]:
    """Edit an inversion and render every representation it has.

    Args:
        generator: the generator the codes belong to.
        latents: ``{'w': [B, D] (optional), 'wplus': [B, n, D] (optional), 'f': [B, C, h, w] (optional, needs
            'wplus'), 'f_gen': G_k(W+) (optional; computed when absent)}`` on the generator's device.
        edit_fn: W+ ``[B, n, D]`` -> edited W+ ``[B, n, D]`` (e.g. ``lambda c: apply_direction(c, d, 3.0)``).
            A w code is edited as W+ (repeated over the layers), so layer-selective edits work on it too.
        idx_k: activation index of ``f``.
        feature_scale: blend scale of ``f`` (1.0: replace, as official inference).
        noise_mode, noise: the generator's noise for every pass (``noise``: explicit per-layer tensors, e.g. the
            optimised noise of a projection).
        representations: subset of :data:`REPRESENTATIONS` to render (default: every one the latents allow).
        gate: ``tau`` of :func:`edit_gate`: fade f's own correction where the edit redraws (0: off).
    Returns:
        ``{'image_w', 'image_wplus', 'image_wplus_f'}`` (those rendered; ``[B, 3, S, S]``, unclamped) and the edited
        codes ``'w_edited'`` ([B, n, D]: the w code after the edit, as W+), ``'wplus_edited'``, ``'f_edited'``.
    """
    present = representations_of(latents)
    if representations is not None:
        unknown = [r for r in representations if r not in REPRESENTATIONS]
        missing = [r for r in representations if r in REPRESENTATIONS and r not in present]
        if unknown or missing:
            raise ValueError(f"representations {list(representations)}: unknown {unknown}, not in the latents "
                             f"{missing} (have {present})")
        present = [r for r in REPRESENTATIONS if r in representations]
    if not present:
        raise ValueError(f"latents has none of 'w', 'wplus' (keys: {sorted(latents)})")

    def edited(codes: torch.Tensor) -> torch.Tensor:
        out = edit_fn(codes)
        if out.shape != codes.shape:
            raise ValueError(f"edit_fn returned {list(out.shape)} for codes {list(codes.shape)}")
        return out

    result: dict[str, torch.Tensor] = {}
    if "w" in present:
        w = generator.to_wplus(latents["w"])
        result["w_edited"] = edited(w)
        result["image_w"] = generator.synthesis(result["w_edited"], noise_mode=noise_mode, noise=noise)
    if "wplus" in present or "wplus_f" in present:
        wplus = generator.to_wplus(latents["wplus"])
        wplus_edited = edited(wplus)
        result["wplus_edited"] = wplus_edited
        if "wplus_f" in present:
            carried = carry_feature(generator, wplus, wplus_edited, latents["f"], idx_k, latents.get("f_gen"),
                                    noise_mode, noise, gate=gate)
            result["f_edited"] = carried["f_edited"]
            if "wplus" in present:
                result["image_wplus"] = carried["image_wplus"]
            result["image_wplus_f"] = generator.synthesis(wplus_edited, noise_mode=noise_mode, noise=noise,
                                                          features_in={_check_idx(generator, idx_k):
                                                                       carried["f_edited"]},
                                                          feature_scale=feature_scale)
        else:
            result["image_wplus"] = generator.synthesis(wplus_edited, noise_mode=noise_mode, noise=noise)
    return result


@torch.no_grad()
def encoder_edit(inverter: torch.nn.Module, x: torch.Tensor, w_offset: torch.Tensor,
                 avg_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The official CLCAE InterFaceGAN edit (spec §7.1): the offset enters the encoder, before cross-attention.

    The encoder runs twice, without and with ``w_offset`` added to its foundation code ``dw``; the edited run gives
    ``w_e = w + offset``, a re-predicted ``W+_e`` and ``f_e``; the feature becomes
    ``f_e + (G_k(W+_e) - G_k(W+_o))`` and is blended in with the inverter's ``feature_scale``. With a residual F
    branch (ours) the re-predicted correction is added to the edited activation: ``G_k(W+_e) + Δf_e`` (one encoder
    run: the unedited pass is not needed).

    Args:
        inverter: a :class:`~clcae.inversion.CLCAEInverter`.
        x: images ``[B, 3, H, W]`` in [-1, 1] at ``inverter.input_size``.
        w_offset: ``[D]`` or ``[B, D]`` (``strength * direction``; one row per image for a sweep).
        avg_image: as :meth:`~clcae.inversion.CLCAEInverter.invert`.
    Returns:
        ``{'w', 'wplus', 'f_edited', 'image_w', 'image_wplus', 'image_wplus_f'}`` (edited).
    """
    if getattr(inverter, "arch", None) != "clcae":
        raise ValueError(f"encoder_edit needs a CLCAE inverter; got {getattr(inverter, 'arch', type(inverter))!r}")
    offset = w_offset.to(x.device, x.dtype)
    if offset.ndim == 1:
        offset = offset.expand(x.shape[0], -1)
    G = inverter.decoder
    if offset.shape != (x.shape[0], G.style_dim):
        raise ValueError(f"w_offset must be [{G.style_dim}] or [{x.shape[0]}, {G.style_dim}]; got "
                         f"{list(w_offset.shape)}")
    residual = getattr(inverter.encoder, "feature_residual", False)
    # a residual inverter renders G(W+_e) anyway (the pass that gives G_k(W+_e)): ask for the image of that pass
    moved = inverter(x, avg_image=avg_image, images=("wplus",) if residual else (), w_offset=offset)
    if residual:
        # a residual F branch (ours) re-predicts the correction: moved["f"] is already G_k(W+_e) + Δf_e, the edited
        # activation plus the correction for the edited face (the official formula would add the edit's change
        # G_k(W+_e) - G_k(W+_o) a second time)
        f_edited, image_wplus = moved["f"], moved["image_wplus"]
    else:
        plain = inverter(x, avg_image=avg_image, images=())
        carried = carry_feature(G, plain["wplus"], moved["wplus"], moved["f"], inverter.idx_k)
        f_edited, image_wplus = carried["f_edited"], carried["image_wplus"]
    image_f = G.synthesis(moved["wplus"], noise_mode="const", features_in={inverter.idx_k: f_edited},
                          feature_scale=inverter.feature_scale)
    return {"w": moved["w"], "wplus": moved["wplus"], "f_edited": f_edited,
            "image_w": G.synthesis(moved["w"], noise_mode="const"), "image_wplus": image_wplus,
            "image_wplus_f": image_f}
