"""Putting an edited crop back into its photograph: the photo and quad an aligned crop came from
(:class:`PasteTarget`, read from the crop's alignment record by :func:`load_paste_target`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import ImageReadError, display_path, load_image
from .ffhq import paste_back
from .records import load_alignment

__all__ = ["ALIGNED_DIR", "PASTED_DIR", "PasteTarget", "load_paste_target"]

#: Sub-folders of an inversion / edit output folder: the aligned crops (+ records), the pasted-back photos.
ALIGNED_DIR = "aligned"
PASTED_DIR = "pasted"


@dataclasses.dataclass
class PasteTarget:
    """Where an inversion's crop goes back: the original photo and the crop's quad.

    Attributes:
        photo: the source photo, RGB, EXIF orientation applied (as it was aligned).
        quad: ``float64 [4, 2]`` pixel-corner corners of the crop in the photo.
        record: the alignment record's path.
        source: the photo's path.
    """

    photo: Image.Image
    quad: np.ndarray
    record: Path
    source: Path

    def paste(self, crop: torch.Tensor | Image.Image, feather: float = 0.1) -> Image.Image:
        """The full-size photo with ``crop`` (``[3, S, S]`` in [-1, 1] or a PIL image, any size) warped into the
        quad and blended with a feathered edge (:func:`clcae.align.paste_back`)."""
        return paste_back(self.photo, crop, self.quad, feather=feather)


def load_paste_target(record_path: str | os.PathLike) -> PasteTarget:
    """Read an alignment record and its source photo.

    Raises ValueError with the reason (the record is unreadable, names no photo, the photo is missing or
    unreadable, or its size is not the one recorded, i.e. it is another or a modified photo).
    """
    record_path = Path(os.fsdecode(record_path))
    record = load_alignment(record_path)
    source = record.get("source")
    if not source:
        raise ValueError(f"the alignment record {display_path(record_path)} names no source photo")
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"the source photo {source} named by {display_path(record_path)} does not exist here "
                         "(paste-back needs the original photo at the path it was aligned from)")
    try:
        photo = load_image(path)
    except ImageReadError as e:
        raise ValueError(f"the source photo {e}") from None
    if (photo.size[1], photo.size[0]) != tuple(record["source_size"]):
        raise ValueError(f"the source photo {source} is {photo.size[1]}x{photo.size[0]} (HxW) but was "
                         f"{record['source_size'][0]}x{record['source_size'][1]} when aligned "
                         f"({display_path(record_path)}): it has changed")
    return PasteTarget(photo=photo, quad=record["quad"], record=record_path, source=path)
