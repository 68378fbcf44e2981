"""The test images of an evaluation: the SynthFaces test split (with labels) or an image folder
(:class:`SynthFacesSource`, :class:`FolderSource`; both :class:`EvalSource`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol as TypingProtocol, Sequence

import torch
from PIL import Image

from ..data.images import display_path, load_image, to_tensor

from .protocol import EvaluationError

__all__ = ["EvalSource", "SynthFacesSource", "FolderSource"]


class EvalSource(TypingProtocol):
    """What :func:`evaluate` reads: ``len(source)``, ``source.name(i)``, ``source.load(i)`` (8-bit RGB
    ``PIL.Image``; may raise :class:`~clcae.data.images.ImageReadError`), ``source.labels(i)`` (``None`` or
    ``{'person_id': int, 'attributes': float32 [A]}``) and ``source.describe()`` (plain data)."""

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def load(self, i: int) -> Image.Image: ...

    def labels(self, i: int) -> dict | None: ...

    def describe(self) -> dict: ...


class SynthFacesSource:
    """Items ``0 .. n-1`` of a SynthFaces split (default the test split: persons never seen in training) rendered
    at ``res`` px, with their ground-truth person ids and attributes (:class:`clcae.data.synthfaces.SynthFaces`)."""

    def __init__(self, n: int, res: int = 64, split: str = "test", seed: int = 0, n_persons: int | None = None):
        from ..data.synthfaces import ATTRIBUTE_NAMES, SynthFaces

        self.dataset = SynthFaces(n, res=res, split=split, seed=seed, n_persons=n_persons)
        self.attribute_names = tuple(ATTRIBUTE_NAMES)

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        """``'<split>/<index:06d>'``."""
        return f"{self.dataset.split}/{int(i):06d}"

    def load(self, i: int) -> Image.Image:
        """The rendered item as an RGB image."""
        return Image.fromarray(self.dataset.image(i))

    def labels(self, i: int) -> dict:
        """``{'person_id': int, 'attributes': float32 [11]}`` (ground truth, in label units)."""
        from ..data.synthfaces import attributes_to_vector

        lab = self.dataset.labels(i)
        return {"person_id": int(lab["person_id"]), "attributes": attributes_to_vector(lab)}

    def describe(self) -> dict:
        """Plain-data description for the report."""
        d = self.dataset
        return {"kind": "synthfaces", "split": d.split, "n": len(d), "res": d.res, "seed": d.seed,
                "n_persons": d.n_persons}


class FolderSource:
    """The images under a folder (recursive, sorted; names from :func:`clcae.jobs.list_inputs`), the
    first ``n`` of them (``None``: all). No labels."""

    def __init__(self, folder: str | os.PathLike, n: int | None = None):
        from ..jobs import JobError, list_inputs

        try:
            items, _ = list_inputs(folder, label="data")
        except JobError as e:
            raise EvaluationError.retold(e) from None
        self.folder = Path(folder)
        self.total = len(items)
        self.items = items if n is None else items[:int(n)]

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        """The file's path under the folder without its extension, printable: bytes that are not UTF-8 appear as
        ``\\xNN`` escapes (:func:`~clcae.data.images.display_path`), so reports and file names can be written."""
        return display_path(self.items[i].name)

    def load(self, i: int) -> Image.Image:
        """The file as 8-bit RGB at its own size (raises :class:`ImageReadError` for a bad file)."""
        return load_image(self.items[i].path, None)

    def labels(self, i: int) -> None:
        """Folders have no labels."""
        return None

    def describe(self) -> dict:
        """Plain-data description for the report."""
        return {"kind": "folder", "path": str(self.folder.resolve()), "files_found": self.total,
                "n": len(self.items)}


def _resize(img: Image.Image, hw: Sequence[int]) -> torch.Tensor:
    h, w = (int(v) for v in hw)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return to_tensor(img)
