"""Atomic file writes: write to a temporary file beside the target, then rename it into place.

An interrupted write (crash, SIGKILL, full disk) never leaves a truncated target: the previous file, if any, stays.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = True, replace: bool = True,
                 encoding: str | None = None) -> Iterator[IO]:
    """Yield a file object; on success its content becomes ``path``, on any exception nothing changes.

    Args:
        path: the target (parent folders are created).
        mode: ``'wb'`` or ``'w'``.
        fsync: flush to disk before the rename (checkpoints: yes; throw-away previews may skip it).
        replace: overwrite an existing ``path`` (``os.replace``); with False an existing file raises
            :class:`FileExistsError` and is left untouched (``os.link`` semantics).
    """
    path = Path(os.fsdecode(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
