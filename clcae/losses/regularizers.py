"""Latent-code regularisers of the encoder baselines (pSp's W-norm, e4e's delta and latent-adversarial losses) and
e4e's progressive training schedule, as small pure functions.

Conventions as :mod:`clcae.losses.gan`: every loss returns a 0-dim fp32 tensor averaged over the batch (so that
averaging gradients over data-parallel ranks gives the global-batch gradient) and is unweighted; the caller applies
the weights. e4e's values (``training/coach.py`` and ``options/train_options.py`` of the official e4e code,
recorded in :data:`E4E_DEFAULTS`):

- ``delta_norm_lambda`` 2e-4 with ``delta_norm`` 2 (the L2 norm);
- latent discriminator :class:`~clcae.networks.latent_discriminator.LatentCodesDiscriminator` (512, 4), trained with
  Adam at ``w_discriminator_lr`` 2e-5; the encoder's adversarial weight ``w_discriminator_lambda`` 0.1 (the
  value of the released training commands; the option's own default is 0, i.e. off);
- R1 on real codes with ``r1`` (gamma) 10, applied lazily every ``d_reg_every`` 16 discriminator steps as
  ``r1 / 2 * penalty * d_reg_every``;
- real codes ``mapping(z)`` with z ~ N(0, I), one per image of the batch; fake codes pooled with an image-pool
  of size ``w_pool_size`` 50 when ``use_w_pool`` (not provided here);
- progressive schedule: ``progressive_start`` 20000, ``progressive_step_every`` 2000 (released commands).
"""
from __future__ import annotations

import torch
from torch import nn

from ..networks.stylegan2 import Generator
from .gan import d_logistic_loss, g_nonsaturating_loss, r1_penalty

__all__ = ["delta_regularization", "w_norm", "latent_d_loss", "latent_d_r1", "latent_g_loss", "sample_real_w",
           "ProgressiveSchedule", "E4E_DEFAULTS"]

E4E_DEFAULTS = dict(delta_norm=2, delta_norm_lambda=2e-4, w_discriminator_lambda=0.1, w_discriminator_lr=2e-5,
                    r1=10.0, d_reg_every=16, w_pool_size=50, progressive_start=20000, progressive_step_every=2000)
"""e4e's training values for these losses (see the module docstring for their sources)."""

_NORMS = {"l2": 2.0, "l1": 1.0}


def _check_codes(codes: torch.Tensor, what: str) -> None:
    if codes.ndim != 3:
        raise ValueError(f"{what}: codes must be W+ [B, n, D]; got {tuple(codes.shape)}")


def delta_regularization(codes: torch.Tensor, stage: int | None = None, norm: str | float = "l2") -> torch.Tensor:
    """e4e's delta regulariser ``sum_{i=1..stage} mean_b ||w_i - w_0||_p``.

    Args:
        codes: W+ codes [B, n, D]. Only differences between layers enter, so the codes with or without a
            ``latent_avg`` that is the same on every layer (e4e's) give the same value.
        stage: the progressive stage: layers 1 ... ``stage`` are active (``None``: all ``n - 1``; 0: nothing to
            regularise, returns 0).
        norm: ``'l2'`` (e4e's ``delta_norm`` 2), ``'l1'``, or a number p for the p-norm over D.
    Returns:
        0-dim tensor: for each active layer the norm of its delta, averaged over the batch, summed over the layers
        (as e4e sums the per-layer batch means).
    """
    _check_codes(codes, "delta_regularization")
    n = codes.shape[1]
    stage = n - 1 if stage is None else int(stage)
    if not 0 <= stage <= n - 1:
        raise ValueError(f"delta_regularization: stage must be in [0, {n - 1}] for {n} layers; got {stage}")
    p = _NORMS.get(norm) if isinstance(norm, str) else float(norm)
    if p is None:
        raise ValueError(f"delta_regularization: norm must be 'l2', 'l1' or a number; got {norm!r}")
    deltas = codes[:, 1:stage + 1].float() - codes[:, :1].float()  # [B, stage, D]
    return torch.linalg.vector_norm(deltas, ord=p, dim=2).mean(0).sum()


def w_norm(codes: torch.Tensor, latent_avg: torch.Tensor | None = None) -> torch.Tensor:
    """pSp's W-norm loss ``sum_b ||W+_b - w_avg||_F / B`` (the Frobenius norm over [n, D], mean over the batch).

    Args:
        codes: W+ codes [B, n, D].
        latent_avg: [D] or [n, D] subtracted first (pSp with ``start_from_latent_avg``); ``None``: the codes as is.
    Returns:
        0-dim tensor.
    """
    _check_codes(codes, "w_norm")
    codes = codes.float()
    if latent_avg is not None:
        if latent_avg.shape not in (codes.shape[2:], codes.shape[1:]):
            raise ValueError(f"w_norm: latent_avg must be [{codes.shape[2]}] or [{codes.shape[1]}, {codes.shape[2]}]; "
                             f"got {tuple(latent_avg.shape)}")
        codes = codes - latent_avg.to(codes)
    return torch.linalg.vector_norm(codes, ord=2, dim=(1, 2)).mean()


@torch.no_grad()
def sample_real_w(generator: Generator, n: int, rand: torch.Generator | None = None) -> torch.Tensor:
    """Real codes for the latent discriminator: ``generator.mapping(z)`` for ``n`` z ~ N(0, I).

    ``rand``: a ``torch.Generator`` to draw z from (on its own device, then moved to the generator's); ``None``
    uses the global RNG on the generator's device. Returns [n, D] (no gradient) on the generator's device.
    """
    if n < 1:
        raise ValueError(f"sample_real_w: n must be >= 1; got {n}")
    device = generator.latent_avg.device
    if rand is None:
        z = torch.randn(n, generator.style_dim, device=device)
    else:
        z = torch.randn(n, generator.style_dim, generator=rand, device=rand.device).to(device)
    return generator.mapping(z)


def _codes_for_d(codes: torch.Tensor, stage: int | None, what: str) -> torch.Tensor:
    if codes.ndim == 3 and stage is not None:
        if not 0 <= stage < codes.shape[1]:
            raise ValueError(f"{what}: stage must be in [0, {codes.shape[1] - 1}]; got {stage}")
        codes = codes[:, :stage + 1]
    if codes.ndim not in (2, 3):
        raise ValueError(f"{what}: codes must be [B, D] or [B, n, D]; got {tuple(codes.shape)}")
    return codes


def latent_d_loss(d: nn.Module, real_w: torch.Tensor, fake_w: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss ``E[softplus(-D(real))] + E[softplus(D(fake))]`` on codes.

    ``real_w`` [B, D] (e.g. :func:`sample_real_w`); ``fake_w`` [B, D] or [B, k, D] (each code scored on its own;
    e4e's discriminator step uses the encoder's layer-0 code ``codes[:, 0]``). ``fake_w`` is detached: this loss
    trains D only. Returns a 0-dim fp32 tensor.
    """
    real_w = _codes_for_d(real_w, None, "latent_d_loss")
    fake_w = _codes_for_d(fake_w.detach(), None, "latent_d_loss")
    return d_logistic_loss(d(real_w), d(fake_w))


def latent_d_r1(d: nn.Module, real_w: torch.Tensor, gamma: float = E4E_DEFAULTS["r1"]) -> torch.Tensor:
    """R1 on real codes: ``gamma / 2 * E[||dD(w)/dw||^2]`` (e4e: gamma 10).

    ``real_w`` [B, D] is detached and made a leaf here. The lazy-regularisation factor (e4e: times
    ``d_reg_every`` = 16, applied every 16 D steps) is the caller's. Returns a 0-dim tensor differentiable with
    respect to D's parameters.
    """
    real_w = _codes_for_d(real_w, None, "latent_d_r1").detach().float().requires_grad_(True)
    return 0.5 * float(gamma) * r1_penalty(d(real_w), real_w)


def latent_g_loss(d: nn.Module, fake_w: torch.Tensor, stage: int | None = None) -> torch.Tensor:
    """The encoder's non-saturating adversarial loss ``E[softplus(-D(w))]`` on its codes.

    ``fake_w``: [B, D], or W+ [B, n, D] whose codes are each scored and averaged (e4e averages over the layers
    ``0 ... stage`` of the progressive stage; ``stage=None`` uses all given layers). Gradients flow into the
    codes (and D's parameters, which the caller keeps out of the encoder's optimiser). Returns 0-dim fp32.
    """
    fake_w = _codes_for_d(fake_w, stage, "latent_g_loss")
    return g_nonsaturating_loss(d(fake_w))


class ProgressiveSchedule:
    """e4e's progressive training schedule: the number of active deltas as a function of the training step.

    Stage 0 (only ``w_0``: the encoder outputs a W code) until ``start_step``; then stage 1 at ``start_step``, and
    one more delta every ``every`` steps, up to ``n_styles - 1`` (all deltas). As e4e's ``progressive_steps``
    ``[0, start, start + every, ..., start + (n_styles - 2) * every]``: stage i begins at ``steps[i]``. The stage
    is a pure function of the step, so a resumed run gets exactly the stage it had.

    Use: ``encoder.progressive_stage = schedule(step)`` before the step, and the same value as ``stage`` for
    :func:`delta_regularization` and :func:`latent_g_loss`.
    """

    def __init__(self, n_styles: int, start_step: int = 0, every: int = E4E_DEFAULTS["progressive_step_every"]):
        if n_styles < 1:
            raise ValueError(f"ProgressiveSchedule: n_styles must be >= 1; got {n_styles}")
        if start_step < 0 or every < 1:
            raise ValueError(f"ProgressiveSchedule: need start_step >= 0 and every >= 1; got {start_step}, {every}")
        self.n_styles, self.start_step, self.every = int(n_styles), int(start_step), int(every)

    @property
    def final_stage(self) -> int:
        """The last stage, ``n_styles - 1`` (all deltas active)."""
        return self.n_styles - 1

    @property
    def steps(self) -> list[int]:
        """e4e's ``progressive_steps``: the step at which each stage 0 ... n_styles - 1 begins."""
        return [0] + [self.start_step + i * self.every for i in range(self.n_styles - 1)]

    def __call__(self, step: int) -> int:
        """The active stage at training step ``step`` (>= 0)."""
        if step < 0:
            raise ValueError(f"ProgressiveSchedule: step must be >= 0; got {step}")
        if step < self.start_step or self.n_styles == 1:
            return 0
        return min(self.final_stage, 1 + (step - self.start_step) // self.every)

    def __repr__(self) -> str:
        return f"ProgressiveSchedule(n_styles={self.n_styles}, start_step={self.start_step}, every={self.every})"
