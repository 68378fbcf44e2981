"""The sampler and random streams moved below the data, to :mod:`clcae.data.sampler`; this path stays for old
imports."""
from ..data.sampler import *  # noqa: F401,F403
from ..data.sampler import __all__  # noqa: F401
