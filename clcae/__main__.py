"""``python -m clcae ...`` is the ``clcae`` command (:mod:`clcae.console`)."""
from .console import console_entry

if __name__ == "__main__":
    console_entry()
