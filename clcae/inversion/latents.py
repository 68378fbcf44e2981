"""The latents file: one inversion's codes, written by every inversion (``scripts/invert.py``, ``photo.py``,
``invert.py --align``) and read by every edit (``scripts/edit.py``, the web app).

One ``.pt`` per image, a dict of CPU tensors and plain values (loads with ``torch.load(weights_only=True)``)::

    'w' [D]?, 'wplus' [n, D]?, 'f' [C, h, w]?      the codes (at least one of w / wplus; f only with wplus)
    'noise' [[1, 1, h, w], ...]?                   projection: the optimised noise maps
    'method', 'checkpoint', 'input_size'           where the codes come from
    'idx_k', 'feature_scale'                       with 'f': where and how strongly it is blended in
    'alignment'?                                   an aligned crop's alignment record (absolute path)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..fileio import atomic_write
from ..formats.read import load_file

__all__ = ["write_latents", "read_latents", "check_against_generator"]


def write_latents(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write one latents file atomically (temporary file + rename; no fsync: it can be recomputed); returns the
    path."""
    path = Path(path)
    with atomic_write(path, fsync=False) as f:
        torch.save(dict(record), f)
    return path


def read_latents(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check one latents file: ``{'w' [D]?, 'wplus' [n, D]?, 'f' [C, h, w]?, 'noise'?, meta...}``, the
    codes as float32 (a leading batch dimension of 1 is dropped), the noise maps as ``[1, 1, h, w]``.

    Raises ValueError / :class:`~clcae.checkpoints.CheckpointError` (with the reason) for anything unusable.
    """
    obj = load_file(path)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict of tensors (as scripts/invert.py writes), got {type(obj).__name__}")
    out: dict[str, Any] = {k: v for k, v in obj.items() if k not in ("w", "wplus", "f", "noise")}
    want = {"w": 1, "wplus": 2, "f": 3}
    for key, ndim in want.items():
        if key not in obj or obj[key] is None:
            continue
        t = obj[key]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"'{key}' is not a floating-point tensor")
        if t.ndim == ndim + 1 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != ndim:
            raise ValueError(f"'{key}' has shape {list(t.shape)}; expected {ndim} dimensions")
        if not torch.isfinite(t).all():
            raise ValueError(f"'{key}' has NaN or Inf values")
        out[key] = t.float()
    if "w" not in out and "wplus" not in out:
        raise ValueError(f"no 'w' or 'wplus' code (keys: {sorted(map(str, obj))})")
    if "f" in out and "wplus" not in out:
        raise ValueError("'f' without 'wplus'")
    noise = obj.get("noise")
    if noise is not None:
        if not isinstance(noise, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in noise):
            raise ValueError("'noise' must be a list of tensors")
        out["noise"] = [t.float().reshape(1, 1, *t.shape[-2:]) for t in noise]
    return out


def check_against_generator(latents: Mapping[str, Any], generator: torch.nn.Module) -> None:
    """ValueError when the codes do not fit the generator (dimension, layer count, noise count)."""
    d, n = generator.style_dim, generator.n_latent
    if "w" in latents and latents["w"].shape != (d,):
        raise ValueError(f"'w' has shape {list(latents['w'].shape)}; the generator needs [{d}]")
    if "wplus" in latents and latents["wplus"].shape != (n, d):
        raise ValueError(f"'wplus' has shape {list(latents['wplus'].shape)}; the generator needs [{n}, {d}]")
    if "noise" in latents and len(latents["noise"]) != generator.num_layers:
        raise ValueError(f"'noise' has {len(latents['noise'])} maps; the generator has {generator.num_layers}")
