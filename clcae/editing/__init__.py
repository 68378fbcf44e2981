"""Latent editing: InterFaceGAN directions, GANSpace, SeFa, and the F-space correction for CLCAE's W+F results.

- :mod:`~clcae.editing.interfacegan`: direction files (official ``age.pt`` / ``smile.pt`` / ``pose.pt``, ours),
  additive edits, and learning a direction from scored generator samples;
- :mod:`~clcae.editing.ganspace`: PCA of W for any generator and layer-wise edits along its components;
- :mod:`~clcae.editing.sefa`: closed-form directions from the style-modulation weights;
- :mod:`~clcae.editing.fspace`: ``f + G_k(W+_edited) - G_k(W+)`` and rendering an edit for w, W+ and W+F;
- :mod:`~clcae.editing.specs`: edit specifications (``interfacegan:PATH:STRENGTHS``, ...), the editor
  (:func:`edit_function`) and one image's sweep over strengths (:func:`render_edit`), shared by every workflow;
- :mod:`~clcae.editing.folder` (not imported here: it needs the inversion and alignment layers): a folder of
  latents or images edited (:func:`~clcae.editing.folder.edit_folder`), the counterpart of
  :func:`clcae.inversion.runner.invert_folder`.

``scripts/edit.py``, ``scripts/find_directions.py`` and ``scripts/ganspace_pca.py`` are the command lines; see
``docs/EDITING.md``.
"""
from .fspace import (REPRESENTATIONS, carry_feature, edit_and_render, edit_gate, encoder_edit, feature_at,
                     representations_of)
from .ganspace import (E4E_CARS_EDITS, E4E_FFHQ_EDITS, GANSPACE_MODES, PCA, apply_ganspace, compute_pca,
                       from_official_edit, load_pca, pca_from_samples, save_pca)
from .interfacegan import (LEARN_METHODS, Direction, apply_direction, check_layers, generator_fingerprint,
                           learn_direction, load_direction, orthogonalize, sample_scores, save_direction)
from .sefa import SeFa, apply_sefa, modulation_weights, sefa_directions, style_layers
from .specs import (EDIT_KINDS, EditOptions, EditSpec, edit_function, parse_edit, parse_layers, parse_strengths,
                    render_edit, strength_label, unique_labels)

__all__ = [
    "Direction", "LEARN_METHODS", "load_direction", "save_direction", "apply_direction", "check_layers",
    "generator_fingerprint", "learn_direction", "orthogonalize", "sample_scores",
    "PCA", "GANSPACE_MODES", "E4E_FFHQ_EDITS", "E4E_CARS_EDITS", "compute_pca", "pca_from_samples", "save_pca",
    "load_pca", "apply_ganspace", "from_official_edit",
    "SeFa", "style_layers", "modulation_weights", "sefa_directions", "apply_sefa",
    "REPRESENTATIONS", "feature_at", "edit_gate", "carry_feature", "edit_and_render", "encoder_edit", "representations_of",
    "EDIT_KINDS", "EditSpec", "EditOptions", "parse_edit", "parse_strengths", "parse_layers", "unique_labels",
    "strength_label", "edit_function", "render_edit",
]
