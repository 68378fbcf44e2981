"""Where the models this project trained itself live (``pretrained/`` beside the package, or
``$CLCAE_PRETRAINED_DIR``), and the names of the shipped files (each has a model card ``NAME.md`` beside it)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pretrained_dir", "shipped", "shipped_direction", "SYNTHFACES_GENERATOR", "SYNTHFACES_DOMAIN_NET",
           "SYNTHFACES_JUDGE_NET",           "SYNTHFACES_CLCAE", "SYNTHFACES_CLCAE_STAGE1", "SYNTHFACES_PSP", "SYNTHFACES_E4E", "SYNTHFACES_DIRECTIONS"]

#: The 64 px SynthFaces StyleGAN2 (our format; ``clcae.load_generator``).
SYNTHFACES_GENERATOR = "synthfaces64_generator.pt"
#: The SynthFaces domain network: identity embedding, attributes, Fréchet features.
SYNTHFACES_DOMAIN_NET = "synthfaces64_domain_net.pt"
#: A second domain network, trained apart from the first (other seeds, eyes and smile weighted up), that judges the
#: attribute-fidelity metrics: the encoders' losses never saw it (``scripts/eval.py --judge-net``).
SYNTHFACES_JUDGE_NET = "synthfaces64_judge_net.pt"
#: Inverters trained on SynthFaces with the shipped generator (``clcae.load_inverter``).
SYNTHFACES_CLCAE = "synthfaces64_clcae.pt"
#: Folder of CLCAE's stage-1 encoders (``best_model_image.pt``, ``best_model_latent.pt``;
#: ``clcae.checkpoints.load_contrastive_encoder``), as the official stage-1 run writes them.
SYNTHFACES_CLCAE_STAGE1 = "synthfaces64_clcae_stage1"
SYNTHFACES_PSP = "synthfaces64_psp.pt"
SYNTHFACES_E4E = "synthfaces64_e4e.pt"
#: Folder of InterFaceGAN directions learned for the shipped generator (``ATTRIBUTE.pt``, scripts/find_directions.py).
SYNTHFACES_DIRECTIONS = "synthfaces64_directions"


def pretrained_dir() -> Path:
    """``$CLCAE_PRETRAINED_DIR`` if set, else the repository's ``pretrained/`` folder."""
    env = os.environ.get("CLCAE_PRETRAINED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


def shipped(name: str) -> Path | None:
    """Path of a shipped model file, or None when it is not there (e.g. not trained yet)."""
    p = pretrained_dir() / name
    return p if p.is_file() else None


def shipped_direction(attribute: str) -> Path | None:
    """The shipped InterFaceGAN direction for ``attribute`` (e.g. ``'smile'``), or None when it is not there."""
    return shipped(f"{SYNTHFACES_DIRECTIONS}/{attribute}.pt")
