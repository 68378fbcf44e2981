"""What every folder job shares (inversion, editing, alignment, evaluation, generation): input listing, run
settings, JSON records, device choice. Below every workflow; imports only the image reader and :mod:`clcae.fileio`.

- :func:`resolve_device`: ``'auto'`` / ``'cpu'`` / ``'cuda:N'`` -> a ``torch.device`` that exists here;
- :func:`parse_size`: ``'256'`` / ``'192x256'`` -> ``(H, W)``;
- :func:`list_inputs`: the images of a folder (recursive) or one file, each with a unique output name;
- :func:`check_run_settings`: refuse to resume into a folder made with other settings;
- :func:`write_json`: indented ASCII JSON, written atomically.

They raise :class:`JobError` (``clcae.inversion.runner.RunnerError`` is the same class) for a problem with the
settings or the files they name; the message names the value or the file.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from .data.images import display_path, list_images
from .errors import AboutOption
from .fileio import atomic_write

__all__ = ["JobError", "InputItem", "resolve_device", "parse_size", "list_inputs", "check_run_settings", "listed_lines",
           "write_json"]


class JobError(AboutOption, Exception):
    """A problem with the settings or the files they name that stops a job before it starts (bad checkpoint,
    missing folder, no images, conflicting output folder); the message names the file or value."""


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> ``cuda`` when available, else ``cpu``; any other torch device string as given.

    Raises :class:`JobError` for an unknown name or a CUDA device on a machine without one.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise JobError(f"device {name!r} is not a device (use auto, cpu, cuda or cuda:N): {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JobError(f"device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def parse_size(text: str | int) -> tuple[int, int]:
    """An image size: ``256`` or ``'256'`` -> (256, 256); ``'192x256'`` or ``'192,256'`` -> (192, 256) (H x W).

    Raises ValueError naming the text for anything else (a non-integer side, three sides, a side < 1).
    """
    parts = str(text).lower().replace(" ", "").replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"expected a size S or HxW with positive sides (e.g. 256, 192x256); got {text!r}")
    return values[0], values[1]


@dataclasses.dataclass(frozen=True)
class InputItem:
    """One input file and its output name (relative path without extension, ``/``-separated)."""

    path: Path
    name: str


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` (symlinks followed) lies under ``folder``; a symlink loop or an unresolvable path is not."""
    try:
        Path(os.path.realpath(path)).relative_to(folder)
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def list_inputs(source: str | os.PathLike, exclude: str | os.PathLike | None = None, *, label: str = "input"
                ) -> tuple[list[InputItem], list[InputItem]]:
    """The images under ``source`` (a folder, searched recursively, or one file) with unique output names.

    A file's name is its path relative to the folder (for one file: its file name) without the extension, e.g.
    ``a/b.png`` -> ``a/b``. Names that would collide (``x.png`` and ``x.jpg``; compared case-insensitively, for
    case-insensitive file systems) keep their extension instead (``x.png``, ``x.jpg``); any remaining clash
    (``X.PNG`` and ``x.png``) gets ``~2``, ``~3``, ... on all but the first in sorted order. Files under
    ``exclude`` (the output folder, when it lies inside the input folder) are left out.

    Returns ``(items, renamed)``: every item in a deterministic order, and the items whose name was
    disambiguated. Raises :class:`JobError` when ``source`` does not exist or holds no image: about option
    ``label`` (the name the caller gives the source) when given, else naming only the path.
    """
    src = Path(os.fsdecode(source))

    def error(problem: str) -> JobError:
        where = f"{display_path(src)}: {problem}"
        return JobError.about(label, where) if label else JobError(where)

    try:
        paths = list_images(src, recursive=True, allow_empty=True)
    except FileNotFoundError:
        raise error("no such file or folder") from None
    root = src if src.is_dir() else src.parent
    if exclude is not None and src.is_dir():
        out = Path(os.fsdecode(exclude)).resolve()
        paths = [p for p in paths if not _within(p, out)]
    if not paths:
        raise error("no image files found (the folder is empty or holds only non-image files)")
    rels = [p.relative_to(root) for p in paths]
    names = [rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix() for rel in rels]

    def clashes(candidates: list[str]) -> set[int]:
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for i, n in enumerate(candidates):
            groups[n.casefold()].append(i)
        return {i for idx in groups.values() if len(idx) > 1 for i in idx}

    renamed = clashes(names)
    for i in renamed:
        names[i] = rels[i].as_posix()
    taken = {n.casefold() for n in names}
    used: set[str] = set()
    for i, n in enumerate(names):  # still clashing ('X.PNG' and 'x.png'): the first keeps its name
        if n.casefold() in used:
            k = 2
            while f"{n}~{k}".casefold() in taken:
                k += 1
            names[i] = f"{n}~{k}"
            renamed.add(i)
        used.add(names[i].casefold())
        taken.add(names[i].casefold())
    items = [InputItem(p, n) for p, n in zip(paths, names)]
    return items, [items[i] for i in sorted(renamed)]


def check_run_settings(out: Path, settings: dict, overwrite: bool, run_file: str = "run.json",
                       holds: str = "results of a run with", redo: str = "recompute them") -> None:
    """Refuse to resume into a folder whose ``run_file`` records other ``settings`` (unless ``overwrite``);
    ``holds`` / ``redo`` word the message (e.g. ``'crops made with'`` / ``'redo them'`` for alignment). The
    :class:`JobError` is about option ``out`` and names the way out (``overwrite``, or another ``out``), as every
    folder job has both."""
    path = out / run_file
    if overwrite or not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        raise JobError.about("out", f"{display_path(out)}: {run_file} is unreadable; delete it or pass overwrite",
                             ("overwrite",)) from None
    differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if differ:
        detail = "; ".join(f"{k}: {previous.get(k)!r} before, {settings.get(k)!r} now" for k in differ)
        raise JobError.about("out", f"{display_path(out)} holds {holds} other settings ({detail}). "
                                    f"Pass overwrite to {redo}, or choose another out.", ("overwrite", "out"))


def listed_lines(listed: list[tuple[str, dict]], max_listed: int, record: str) -> list[str]:
    """Summary lines for files a job could not use: ``'  KIND: PATH: REASON'`` for the first ``max_listed`` of
    ``listed`` (``(kind, {'path', 'reason'})``), then ``'  ... and N more (see RECORD)'``."""
    lines = [f"  {kind}: {f['path']}: {f['reason']}" for kind, f in listed[:max_listed]]
    if len(listed) > max_listed:
        lines.append(f"  ... and {len(listed) - max_listed} more (see {record})")
    return lines


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented ASCII JSON, atomically (temp file + rename); returns the path."""
    path = Path(path)
    with atomic_write(path, mode="w", fsync=False, encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=True)
        f.write("\n")
    return path
