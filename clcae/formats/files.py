"""Checkpoint file helpers that every layer may use: the error type, atomic saves, strict state-dict loading.

Nothing here imports a network; :mod:`clcae.checkpoints` re-exports these names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..fileio import atomic_write

__all__ = ["CheckpointError", "FORMAT_VERSION", "OUR_PREFIX", "fmt_keys", "atomic_save", "load_state_dict_strict",
           "validate_finite", "check_version"]

#: The format version of the checkpoints this package writes (``'format_version'``); it reads 1..FORMAT_VERSION.
FORMAT_VERSION = 1
#: The ``'format'`` of our checkpoints starts with this (``'clcae.generator'``, ``'clcae.inverter'``, ...).
OUR_PREFIX = "clcae."


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not match the network; the message names the file and the keys."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush to disk, then rename over ``path``.

    An interrupted save leaves the previous file intact. Returns the path.
    """
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def fmt_keys(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                           what: str = "network", finite: bool = True) -> None:
    """Load ``state_dict`` into ``module``; any missing/unexpected key or shape mismatch raises
    :class:`CheckpointError` that names the keys (and shapes) and the source.

    With ``finite`` (default) a floating tensor holding NaN or Inf is refused too (:func:`validate_finite`: the
    error names the keys, the source and ``what``); pass ``finite=False`` for a module that keeps non-finite values
    on purpose. Nothing is loaded when the file is refused.
    """
    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs network {tuple(expected[k].shape)}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {fmt_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
    if problems:
        raise CheckpointError(f"{source}: the {what} does not match the file: " + " | ".join(problems))
    if finite:
        validate_finite(state_dict, f"{source} ({what})")
    module.load_state_dict(state_dict, strict=True)


def validate_finite(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first keys whose floating tensors hold NaN or Inf."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN/Inf) in {fmt_keys(bad)}")


def check_version(obj: Mapping, src: str) -> None:
    v = obj.get("format_version")
    if not isinstance(v, int) or v < 1 or v > FORMAT_VERSION:
        raise CheckpointError(f"{src}: format_version {v!r} is not supported by this clcae "
                              f"(reads 1..{FORMAT_VERSION}); upgrade the package")
