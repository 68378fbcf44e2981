"""Losses as small pure functions (tensors in, tensors out; no state, no optimiser steps).

- :mod:`clcae.losses.gan`: StyleGAN2's adversarial losses and regularisers (logistic / non-saturating, R1,
  path length).
"""
from .gan import (d_logistic_loss, g_nonsaturating_loss, path_length_penalty, path_lengths, r1_penalty,
                  update_pl_mean)

__all__ = ["d_logistic_loss", "g_nonsaturating_loss", "r1_penalty", "path_lengths", "path_length_penalty",
           "update_pl_mean"]
