"""What every trainer checks about its image folders: readable files up front, and the unreadable ones counted in
the run's log (also those DataLoader workers meet while training). Used by the generator and encoder trainers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError

__all__ = ["verify_image_folder", "image_folders", "unreadable_report", "UNREADABLE_LOG"]


def verify_image_folder(ds, option: str, folder: str | Path) -> str:
    """Check the headers of every file of an image-folder dataset up front (dropping the unreadable ones) and return
    a one-line count, e.g. ``'10 readable image(s), 2 unreadable file(s) skipped'``.

    Args:
        ds: a :class:`~clcae.data.images.ImageFolderDataset` (renumbered in place by its ``verify``).
        option, folder: the option that named the folder and the folder, for messages (``'data'``, ``'photos'``).
    Raises:
        ConfigError: no file of the folder is a readable image (about ``option``; the message lists the files and
            reasons).
    """
    try:
        ds.verify(progress=False)
    except ValueError as e:
        raise ConfigError.about(option, f"{folder}: no readable image (every file is unreadable)\n"
                                        f"{ds.summary()}") from e
    return f"{len(ds)} readable image(s), {len(ds.bad_files)} unreadable file(s) skipped"


def image_folders(ds) -> list:
    """The :class:`~clcae.data.images.ImageFolderDataset` objects inside ``ds`` (through ``Subset`` and the wrappers
    that keep the wrapped dataset as ``.dataset``), each once, in order."""
    from ..data.images import ImageFolderDataset

    found: list = []
    seen = 0
    while ds is not None and seen < 16:
        if isinstance(ds, ImageFolderDataset):
            found.append(ds)
            break
        ds = getattr(ds, "dataset", None)
        seen += 1
    return found


def unreadable_report(datasets: Sequence[Any], log_file: Path | None = None) -> list[str]:
    """Lines for a run's log about the unreadable files of its image folders (found up front or while training).

    Args:
        datasets: the run's datasets (any wrapping, see :func:`image_folders`); repeated folders are reported once.
        log_file: when given, set as each folder's ``error_log`` (JSON lines shared with DataLoader workers) so
            that bad files found in worker processes are counted too; call this before the loaders start.
    Returns:
        One :meth:`~clcae.data.images.ImageFolderDataset.summary` per image folder (empty for generated data).
    """
    lines: list[str] = []
    done: set[int] = set()
    for d in datasets:
        for folder in image_folders(d):
            if id(folder) in done:
                continue
            done.add(id(folder))
            if log_file is not None and folder.error_log is None:
                folder.error_log = Path(log_file)
            lines.append(folder.summary())
    return lines


#: The file (in the run directory) to which every process appends the unreadable images it meets (JSON lines).
UNREADABLE_LOG = "unreadable_images.jsonl"
