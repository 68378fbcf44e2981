"""Weight initialisation of the official CLCAE code (``BaseNetwork.init_weights('normal', 0.02)``, spec §3.6).

Applied to the stage-1 encoders and the stage-2 encoder before any weights are loaded:

- ``BatchNorm2d`` and ``LayerNorm``: weight ~ N(1, gain), bias 0;
- every module whose class name contains ``Linear`` (``nn.Linear``, ``EqualLinear``, the attention's
  ``out_proj``): weight ~ truncated normal (std ``gain``), bias untouched;
- every module whose class name contains ``Conv``: weight ~ N(0, gain), bias 0;
- everything else keeps PyTorch's defaults (``BatchNorm1d``, ``PReLU``, the attention ``in_proj``).

For ``EqualLinear`` the stored weight is scaled by ``1/sqrt(fan_in)`` at run time, so its effective weights are
tiny and an encoder's codes start near 0 (w near ``latent_avg``), as in the official runs.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["official_init"]


@torch.no_grad()
def official_init(module: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """Initialise ``module`` in place as described in the module docstring; returns it."""
    for m in module.modules():
        name = type(m).__name__
        weight = getattr(m, "weight", None)
        bias = getattr(m, "bias", None)
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and name in ("BatchNorm2d", "LayerNorm", "SyncBatchNorm"):
            if weight is not None:
                weight.normal_(1.0, gain, generator=generator)
            if bias is not None:
                bias.zero_()
        elif "Linear" in name and isinstance(weight, torch.Tensor):
            nn.init.trunc_normal_(weight, std=gain, generator=generator)
        elif "Conv" in name and isinstance(weight, torch.Tensor):
            weight.normal_(0.0, gain, generator=generator)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
    return module
