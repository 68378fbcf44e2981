"""Inversion: images to StyleGAN2 codes (and CLCAE's F-space feature) behind one interface.

:class:`Inverter` and its encoder-based implementations (:class:`CLCAEInverter`, :class:`PSPInverter`,
:class:`E4EInverter`, defined in :mod:`clcae.networks.inverters`); load official or our own checkpoints with
:func:`clcae.checkpoints.load_inverter`. :mod:`.projection` inverts by optimisation, :mod:`.runner` inverts a
folder, :mod:`.latents` reads and writes the latents file.
"""
from ..networks.inverters import (ARCHS, CLCAEInverter, E4EInverter, Inverter, PSPInverter, build_inverter,
                                 official_output, render_average_image)

__all__ = ["Inverter", "CLCAEInverter", "PSPInverter", "E4EInverter", "build_inverter", "official_output",
           "render_average_image", "ARCHS"]
