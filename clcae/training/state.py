"""Training state on disk: RNG states, run directories, options JSON, and atomic checkpoints with resume.

Generic pieces shared by every trainer (the StyleGAN2 trainer of :mod:`clcae.training.gan`, the encoder trainers):

- :func:`seed_everything`, :func:`capture_rng_state`, :func:`restore_rng_state`: python, numpy, torch CPU and every
  CUDA device, as plain tensors and primitives (a checkpoint stays loadable with ``torch.load(weights_only=True)``);
- :func:`check_new_run_dir`, :func:`create_run_dir`: a run directory is never overwritten;
- :func:`write_json_new`: write the options JSON once (refuses to replace an existing file);
- :class:`CheckpointWriter`: ``latest.pt`` plus kept periodic snapshots, each written atomically
  (:func:`clcae.checkpoints.atomic_save`); :func:`resolve_resume_path`, :func:`load_training_checkpoint`;
- :func:`diff_options`: which options a resume changes, and whether it may;
- :func:`cpu_copy`: a state dict (or any nest of dicts, lists and tuples) with every tensor copied to the CPU.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..errors import AboutOption
from ..fileio import atomic_write
from ..formats.files import CheckpointError, atomic_save
from ..formats.read import load_file

__all__ = [
    "RunDirError", "seed_everything", "capture_rng_state", "restore_rng_state", "check_new_run_dir",
    "create_run_dir", "write_json_new", "to_jsonable", "CheckpointWriter", "resolve_resume_path",
    "load_training_checkpoint", "run_dir_of_checkpoint", "diff_options", "cpu_copy", "LATEST_NAME", "CHECKPOINT_DIR",
]

CHECKPOINT_DIR = "checkpoints"
LATEST_NAME = "latest.pt"


class RunDirError(AboutOption, ValueError):
    """A run directory cannot be used (exists and is not empty, or is a file); the message says what to do."""


# ---------------------------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device) with ``seed``."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict:
    """Every global RNG state of this process, as tensors and primitives.

    Returns ``{'python': {...}, 'numpy': {...}, 'torch': uint8 tensor, 'cuda': [uint8 tensor per device]}``
    (``'cuda'`` is empty when CUDA is not initialised).
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned. CUDA states are restored for the devices present."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), int(npy["pos"]), int(npy["has_gauss"]),
                         float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda[i].to("cpu", torch.uint8), device=i)


# ---------------------------------------------------------------------------------------------------- run dirs
def check_new_run_dir(path: str | os.PathLike) -> Path:
    """Raise :class:`RunDirError` unless ``path`` does not exist or is an empty directory; creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise RunDirError.about("out", f"{path} exists and is a file; choose a new directory")
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise RunDirError.about("out", f"{path} already exists and is not empty ({shown}); run directories are "
                                    "never overwritten: choose a new out, or continue that run with resume "
                                    f"{path}", ("out", "resume"))
    return path


def create_run_dir(path: str | os.PathLike) -> Path:
    """Create a new (or empty) run directory; refuses a non-empty one (see :func:`check_new_run_dir`)."""
    path = check_new_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(value: Any) -> Any:
    """Options as JSON: paths and other objects become strings, tuples lists, non-finite floats strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_json_new(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically; raises :class:`FileExistsError` if it exists."""
    with atomic_write(path, "w", fsync=False, replace=False, encoding="utf-8") as f:
        json.dump(to_jsonable(data), f, indent=2, sort_keys=True)
        f.write("\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------------- checkpoints
class CheckpointWriter:
    """Writes ``<dir>/latest.pt`` and kept snapshots ``<dir>/snapshot-<kimg>kimg.pt``, atomically.

    Args:
        directory: where checkpoints go (created on first write).
        keep_snapshots: keep only the newest ``n`` snapshots (``0`` keeps all). ``latest.pt`` is always kept.
    """

    SNAPSHOT_RE = re.compile(r"^snapshot-(\d+(?:\.\d+)?)kimg\.pt$")

    def __init__(self, directory: str | os.PathLike, keep_snapshots: int = 0):
        self.directory = Path(directory)
        self.keep_snapshots = int(keep_snapshots)

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST_NAME

    @staticmethod
    def snapshot_name(nimg: int) -> str:
        """``snapshot-000012.345kimg.pt`` for 12345 images (sorts by training progress)."""
        return f"snapshot-{nimg / 1000:010.3f}kimg.pt"

    def snapshots(self) -> list[Path]:
        """Existing snapshots, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if self.SNAPSHOT_RE.match(p.name)]
        return sorted(found, key=lambda p: float(self.SNAPSHOT_RE.match(p.name).group(1)))

    def save(self, state: Mapping[str, Any], nimg: int, snapshot: bool = False) -> list[Path]:
        """Write ``state`` to ``latest.pt`` (and, with ``snapshot``, to a kept snapshot). Returns the paths written.

        The snapshot shares the file with ``latest.pt`` through a hard link when the file system allows it.
        """
        latest = atomic_save(dict(state), self.latest_path)
        written = [latest]
        if snapshot:
            target = self.directory / self.snapshot_name(nimg)
            tmp = self.directory / f".{target.name}.link.tmp"
            try:
                if tmp.exists():
                    tmp.unlink()
                os.link(latest, tmp)
                os.replace(tmp, target)
            except OSError:
                atomic_save(dict(state), target)
            written.append(target)
            self._prune()
        return written

    def _prune(self) -> None:
        if self.keep_snapshots <= 0:
            return
        for old in self.snapshots()[:-self.keep_snapshots]:
            try:
                old.unlink()
            except OSError:
                pass


def resolve_resume_path(path: str | os.PathLike) -> Path:
    """A checkpoint file from the ``resume`` option: a file as given, or a run directory's ``checkpoints/latest.pt``.

    Raises:
        CheckpointError: nothing to resume from there (the message lists what was looked for).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / LATEST_NAME, path / LATEST_NAME):
            if candidate.is_file():
                return candidate
        raise CheckpointError.about("resume", f"{path}: the directory has no {CHECKPOINT_DIR}/{LATEST_NAME}; pass a "
                                    "checkpoint file or a run directory written by this trainer")
    if not path.exists():
        raise CheckpointError.about("resume", f"{path}: no such file or directory")
    return path


def run_dir_of_checkpoint(path: str | os.PathLike) -> Path | None:
    """The run directory a checkpoint file lives in (``RUN/checkpoints/x.pt`` -> ``RUN``), if it looks like one."""
    path = Path(path).resolve()
    parent = path.parent
    if parent.name == CHECKPOINT_DIR and (parent.parent / "options.json").exists():
        return parent.parent
    if (parent / "options.json").exists():
        return parent
    return None


def load_training_checkpoint(path: str | os.PathLike, format_key: str, format_name: str,
                             max_version: int) -> dict:
    """Read a training checkpoint written by :class:`CheckpointWriter` (weights only) and check its format tag.

    Args:
        path: the file.
        format_key, format_name: the checkpoint must have ``state[format_key] == format_name``.
        max_version: newest ``state[format_key + '_version']`` this code reads.
    Raises:
        CheckpointError: unreadable file, or not a checkpoint of this trainer (the message says what it is).
    """
    state = load_file(path)
    if not isinstance(state, dict) or state.get(format_key) != format_name:
        what = sorted(state.keys())[:12] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a {format_name} training checkpoint (top-level keys: {what}); only "
                              "checkpoints written by this trainer can be resumed")
    version = state.get(format_key + "_version")
    if not isinstance(version, int) or not 1 <= version <= max_version:
        raise CheckpointError(f"{path}: training checkpoint version {version!r} is not supported (reads 1.."
                              f"{max_version}); upgrade clcae")
    return state


def diff_options(saved: Mapping[str, Any], given: Mapping[str, Any], keys: Iterable[str] | None = None
                 ) -> dict[str, tuple[Any, Any]]:
    """``{name: (saved, given)}`` for every option in ``given`` (or ``keys``) whose value differs from ``saved``.

    Values are compared after :func:`to_jsonable`, so a path and its string are equal.
    """
    names = list(given) if keys is None else list(keys)
    out = {}
    for name in names:
        if name not in given:
            continue
        a, b = to_jsonable(saved.get(name)), to_jsonable(given[name])
        if a != b:
            out[name] = (saved.get(name), given[name])
    return out


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor detached and cloned onto the CPU, through nested dicts, lists and tuples (kept as
    such); anything else is returned as is. For checkpoints: the copy no longer aliases the training state, and is
    contiguous (a channels-last network's weights are saved in the plain layout: same values, and
    ``tensor.view(-1)`` works on what a user loads)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone(memory_format=torch.contiguous_format)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(cpu_copy(v) for v in obj)
    return obj
