"""Latent editing: InterFaceGAN directions, GANSpace, SeFa, and the F-space correction for CLCAE's W+F results.

- :mod:`~clcae.editing.interfacegan`: direction files (official ``age.pt`` / ``smile.pt`` / ``pose.pt``, ours),
  additive edits, and learning a direction from scored generator samples;
- :mod:`~clcae.editing.ganspace`: PCA of W for any generator and layer-wise edits along its components;
- :mod:`~clcae.editing.sefa`: closed-form directions from the style-modulation weights;
- :mod:`~clcae.editing.fspace`: ``f + G_k(W+_edited) - G_k(W+)`` and rendering an edit for w, W+ and W+F.

``scripts/edit.py``, ``scripts/find_directions.py`` and ``scripts/ganspace_pca.py`` are the command lines; see
``docs/EDITING.md``.
"""
from .fspace import REPRESENTATIONS, carry_feature, edit_and_render, encoder_edit, feature_at, representations_of
from .ganspace import (E4E_CARS_EDITS, E4E_FFHQ_EDITS, GANSPACE_MODES, PCA, apply_ganspace, compute_pca,
                       from_official_edit, load_pca, pca_from_samples, save_pca)
from .interfacegan import (LEARN_METHODS, Direction, apply_direction, check_layers, generator_fingerprint,
                           learn_direction, load_direction, orthogonalize, sample_scores, save_direction)
from .sefa import SeFa, apply_sefa, modulation_weights, sefa_directions, style_layers

__all__ = [
    "Direction", "LEARN_METHODS", "load_direction", "save_direction", "apply_direction", "check_layers",
    "generator_fingerprint", "learn_direction", "orthogonalize", "sample_scores",
    "PCA", "GANSPACE_MODES", "E4E_FFHQ_EDITS", "E4E_CARS_EDITS", "compute_pca", "pca_from_samples", "save_pca",
    "load_pca", "apply_ganspace", "from_official_edit",
    "SeFa", "style_layers", "modulation_weights", "sefa_directions", "apply_sefa",
    "REPRESENTATIONS", "feature_at", "carry_feature", "edit_and_render", "encoder_edit", "representations_of",
]
