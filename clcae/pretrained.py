"""Where the models this project trained itself live (``pretrained/`` beside the package, or
``$CLCAE_PRETRAINED_DIR``), and the names of the shipped files."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pretrained_dir", "shipped", "SYNTHFACES_GENERATOR"]

SYNTHFACES_GENERATOR = "synthfaces64_generator.pt"


def pretrained_dir() -> Path:
    """``$CLCAE_PRETRAINED_DIR`` if set, else the repository's ``pretrained/`` folder."""
    env = os.environ.get("CLCAE_PRETRAINED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


def shipped(name: str) -> Path | None:
    """Path of a shipped model file, or None when it is not there (e.g. not trained yet)."""
    p = pretrained_dir() / name
    return p if p.is_file() else None
