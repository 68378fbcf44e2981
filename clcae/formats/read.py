"""Reading any checkpoint file without executing code from it, and telling its layout.

``torch.save`` files are read with ``weights_only=True``; raw pickles (NVIDIA ``.pkl``) with the restricted
unpickler of :mod:`clcae.formats.nvidia`. The first is what networks and losses call for their own files.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .files import OUR_PREFIX, CheckpointError
from .nvidia import PersistentObject, load_nvidia_pickle

__all__ = ["load_file", "detect_format"]


def _is_torch_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint file without executing code from it.

    ``torch.save`` files are read with ``weights_only=True``; raw pickles (NVIDIA ``.pkl``) with the restricted
    unpickler of :func:`load_nvidia_pickle`. Raises :class:`CheckpointError` with the file name on any failure.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if not _is_torch_zip(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and not _legacy_torch(path):
            return load_nvidia_pickle(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        if m is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a torch file)") from e
        raise CheckpointError(
            f"{path}: refused to load: the file asks for '{m.group(1)}', which a weights-only load does not allow. "
            "Checkpoints are never unpickled with code execution; nothing from the file was run.") from e
    except Exception as e:  # truncated zip, garbage bytes, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Reads plain data only: any global (class, function) is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def _legacy_torch(path: Path) -> bool:
    """True for the pre-1.6 ``torch.save`` format (a pickle whose first object is the legacy magic number)."""
    try:
        with open(path, "rb") as f:
            magic = _NoGlobalsUnpickler(f).load()
        return isinstance(magic, int) and magic == 0x1950A86A20F9469CFC6C
    except Exception:
        return False


def detect_format(obj: Any) -> str:
    """``'clcae'``, ``'rosinality'``, ``'official'`` (pSp/e4e/CLCAE), ``'nvidia'`` or ``'unknown'``."""
    if isinstance(obj, dict):
        fmt = obj.get("format")
        if isinstance(fmt, str) and fmt.startswith(OUR_PREFIX):
            return "clcae"
        if "g_ema" in obj or ("g" in obj and "d" in obj):
            return "rosinality"
        if "state_dict" in obj and "opts" in obj:
            return "official"
        if any(isinstance(v, PersistentObject) for v in obj.values()):
            return "nvidia"
    return "unknown"
