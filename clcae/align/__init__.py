"""FFHQ face alignment for real photographs (the optional ``[align]`` extra: ``pip install -e .[align]``).

- :mod:`clcae.align.detect`: dlib face detection and 68 landmarks (:class:`FaceDetector`); the model files come
  from ``face_recognition_models``. Without the extra, using it raises :class:`AlignExtraMissing` naming the
  install command.
- :mod:`clcae.align.ffhq`: FFHQ's crop procedure (:func:`ffhq_quad`, :func:`align_face`, :func:`align_faces`),
  the crop transform and its inverse (:func:`crop_to_source_matrix`, :func:`source_to_crop`) and pasting an edited
  crop back into the photo (:func:`paste_back`). Pure numpy / scipy / Pillow: importable without dlib.
- :mod:`clcae.align.records`: the per-crop JSON (:func:`save_alignment`, :func:`load_alignment`,
  :func:`alignment_record_for`).
- :mod:`clcae.align.folder`: a whole folder, resumably (:func:`align_folder`, :func:`align_inputs`).

- :mod:`clcae.align.paste`: the photo and quad an aligned crop goes back into (:class:`PasteTarget`), read from
  the crop's record.

The whole real-photo workflow (align -> invert -> edit -> paste back) is :mod:`clcae.photo`; this package only
aligns faces and puts crops back.

``scripts/align.py`` aligns a folder; ``scripts/photo.py`` runs the workflow on one photo; docs/REAL_PHOTOS.md walks
through align -> invert -> edit -> paste back.
"""
from .detect import INSTALL_HINT, AlignExtraMissing, DetectedFace, FaceDetector
from .ffhq import (ALIGNMENT_FORMAT, FFHQ_TRANSFORM_SIZE, AlignedFace, align_face, align_faces, crop_to_source,
                   crop_to_source_matrix, feather_mask, ffhq_quad, no_face_reason, paste_back, source_to_crop)
from .folder import align_folder, align_inputs, format_align_summary
from .paste import ALIGNED_DIR, PASTED_DIR, PasteTarget, load_paste_target
from .records import alignment_record_for, load_alignment, save_alignment

__all__ = ["AlignExtraMissing", "INSTALL_HINT", "DetectedFace", "FaceDetector", "FFHQ_TRANSFORM_SIZE",
           "ALIGNMENT_FORMAT", "AlignedFace", "ffhq_quad", "align_face", "align_faces", "crop_to_source_matrix",
           "crop_to_source", "source_to_crop", "feather_mask", "paste_back", "save_alignment", "load_alignment",
           "alignment_record_for", "no_face_reason", "align_folder", "align_inputs", "format_align_summary",
           "ALIGNED_DIR", "PASTED_DIR", "PasteTarget", "load_paste_target"]
