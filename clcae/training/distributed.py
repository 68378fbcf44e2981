"""The distributed helpers moved below the networks, to :mod:`clcae.distributed`; this path stays for old imports."""
from ..distributed import *  # noqa: F401,F403
from ..distributed import __all__  # noqa: F401
