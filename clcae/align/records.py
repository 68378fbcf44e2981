"""The JSON record of an aligned crop (``NAME.png`` + ``NAME.json``): where the crop came from in its photo, so an
edit can be pasted back. Written by :func:`save_alignment`, read by :func:`load_alignment`, found beside a crop by
:func:`alignment_record_for` (what carries it into an inversion's latents)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import display_path
from ..fileio import atomic_write
from .ffhq import AlignedFace, _check_quad

__all__ = ["save_alignment", "load_alignment", "alignment_record_for"]


def save_alignment(face: AlignedFace, image_path: str | os.PathLike, json_path: str | os.PathLike | None = None, *,
                   source: str | os.PathLike | None = None, **extra: Any) -> tuple[Path, Path]:
    """Write the crop (format from the extension) and its JSON record, each atomically, the JSON last.

    The JSON holds ``format``, ``source`` (printable path), ``source_size`` ``[H, W]``, ``output_size``, ``quad``
    ``[4][2]``, ``crop_to_source`` ``[2][3]``, ``landmarks`` ``[68][2]``, ``box``, ``score``, ``transform_size``,
    ``shrink``, ``padding``, ``coordinates`` (the conventions in words), and ``extra``.

    Returns ``(image_path, json_path)``; ``json_path`` defaults to the image path with ``.json``.
    """
    from ..data.images import save_image

    image_path = Path(os.fsdecode(image_path))
    json_path = image_path.with_suffix(".json") if json_path is None else Path(os.fsdecode(json_path))
    save_image(face.image, image_path)
    record = face.to_record(source, **extra)
    # One key per line, each value on its line (the 68 landmarks stay one line): readable and diff-friendly.
    text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=True)}" for k, v in record.items())
    with atomic_write(json_path, mode="w", fsync=False, encoding="utf-8") as fh:
        fh.write(text + "\n}\n")
    return image_path, json_path


def load_alignment(json_path: str | os.PathLike) -> dict:
    """Read a JSON record written by :func:`save_alignment`; ``quad`` (``[4, 2]``), ``crop_to_source`` and
    ``landmarks`` come back as ``float64`` arrays, ``source_size`` as ``(H, W)``.

    Raises ValueError naming the file when it is not such a record.
    """
    path = Path(os.fsdecode(json_path))
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{display_path(path)}: cannot read the alignment record ({e})") from None
    if not isinstance(record, dict) or "quad" not in record or "source_size" not in record:
        raise ValueError(f"{display_path(path)}: not an alignment record (no 'quad' / 'source_size')")
    try:
        record["quad"] = _check_quad(np.asarray(record["quad"], dtype=np.float64))
        for key in ("crop_to_source", "landmarks"):
            if record.get(key) is not None:
                record[key] = np.asarray(record[key], dtype=np.float64)
        record["source_size"] = tuple(int(v) for v in record["source_size"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{display_path(path)}: malformed alignment record ({e})") from None
    return record


def alignment_record_for(image_path: str | os.PathLike) -> Path | None:
    """The alignment record of a crop written by :func:`save_alignment` (the ``.json`` beside it, e.g.
    ``aligned/anna.png`` -> ``aligned/anna.json``), or ``None`` when there is none or that file is not an alignment
    record. Used to carry the record from a crop to its inversion, so an edit can be pasted back."""
    path = Path(os.fsdecode(image_path)).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        load_alignment(path)
    except ValueError:
        return None
    return path
