"""The encoder-based inverters live in :mod:`clcae.networks.inverters` (below :mod:`clcae.checkpoints`, which builds
them); this path stays for old imports."""
from ..networks.inverters import *  # noqa: F401,F403
from ..networks.inverters import __all__  # noqa: F401
