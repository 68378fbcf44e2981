"""Checkpoint file helpers that every layer may use: the error type, atomic saves, strict state-dict loading.

Nothing here imports a network; :mod:`clcae.checkpoints` re-exports these names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..errors import AboutOption
from ..fileio import atomic_write

__all__ = ["CheckpointError", "FORMAT_VERSION", "OUR_PREFIX", "fmt_keys", "atomic_save", "load_state_dict_strict",
           "validate_finite", "check_version"]

#: The format version of the checkpoints this package writes (``'format_version'``); it reads 1..FORMAT_VERSION.
FORMAT_VERSION = 1
#: The ``'format'`` of our checkpoints starts with this (``'clcae.generator'``, ``'clcae.inverter'``, ...).
OUR_PREFIX = "clcae."


class CheckpointError(AboutOption, RuntimeError):
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
                           what: str = "network", finite: bool = True, *, key_map: Mapping[str, str] | None = None,
                           ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``state_dict`` into ``module``; any missing/unexpected key or shape mismatch raises
    :class:`CheckpointError` that names the keys (and shapes) and the source.

    Args:
        module, state_dict: the network and the tensors read from ``source``.
        source, what: the file and what it holds, for the messages.
        finite: refuse a floating tensor holding NaN or Inf (:func:`validate_finite`); pass ``False`` for a module
            that keeps non-finite values on purpose.
        key_map: for a file in another layout, ``{module key: file key}`` covering every key of ``module``; the
            messages then name the file's keys. Default: the same names.
        ignore_prefixes: file keys that start with one of these and that ``key_map`` does not use are skipped
            (e.g. torchvision's ``classifier.*`` when only the trunk is loaded); any other unused key is refused.
    Nothing is loaded when the file is refused.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{source}: expected a state dict (a mapping of tensors) for the {what}; got "
                              f"{type(state_dict).__name__}")
    expected = module.state_dict()
    if key_map is None:
        key_map = {k: k for k in expected}
    elif set(key_map) != set(expected):
        raise ValueError(f"key_map must cover exactly the keys of the {what}; differs in "
                         f"{fmt_keys(set(key_map) ^ set(expected))}")
    wanted = set(key_map.values())
    missing = wanted - set(state_dict)
    unexpected = {k for k in state_dict if k not in wanted and not k.startswith(tuple(ignore_prefixes))}
    mismatched = [f"{src}: file {tuple(state_dict[src].shape)} vs network {tuple(expected[dst].shape)}"
                  for dst, src in key_map.items()
                  if src in state_dict and tuple(state_dict[src].shape) != tuple(expected[dst].shape)]
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
        validate_finite({src: state_dict[src] for src in key_map.values()}, f"{source} ({what})")
    module.load_state_dict({dst: state_dict[src] for dst, src in key_map.items()}, strict=True)


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
