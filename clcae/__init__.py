"""clcae: StyleGAN2 inversion and editing built around CLCAE (CVPR 2023).

Importing the package has no side effects: nothing is compiled, downloaded or seeded.
"""
from .version import __version__

__all__ = ["load_generator", "load_inverter", "__version__"]


def load_generator(path, device="cpu", **overrides):
    """Load an eval-mode StyleGAN2 generator from any supported file; see :func:`clcae.checkpoints.load_generator`."""
    from .checkpoints import load_generator as _load

    return _load(path, device=device, **overrides)


def load_inverter(path, generator=None, device="cpu", **kwargs):
    """Load an eval-mode inverter (official CLCAE / pSp / e4e, or ours); see :func:`clcae.checkpoints.load_inverter`."""
    from .checkpoints import load_inverter as _load

    return _load(path, generator=generator, device=device, **kwargs)
