"""Options as data: named configs (YAML) with sections, merged under command-line overrides, and the argparse
builder that turns an options dataclass into flags.

A config file (``configs/<name>.yaml``) is a mapping of option names to values, optionally with sections whose
values apply on top of the top level for one method or stage::

    generator: pretrained/synthfaces64_generator.pt
    batch: 8
    stages:
      align: {batch: 64, lr: 0.0001}
    methods:
      e4e: {delta_lambda: 0.0002}

:func:`load_config` returns the merged flat mapping for a ``(method, stage)``; the command line wins over it.

Paths in a config (the options named in ``paths=``) do not depend on the working folder (:func:`resolve_config_path`):
a path under ``pretrained/`` names a shipped model and is found in :func:`clcae.pretrained.pretrained_dir` (the
checkout's ``pretrained/``, or ``$CLCAE_PRETRAINED_DIR``), as every script finds its default models; any other
relative path is relative to the folder holding the config file. Paths given on the command line are relative to
the working folder, as usual.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError

__all__ = ["ConfigError", "option", "resume_may_change", "flag", "load_config", "config_path", "resolve_config_path", "add_dataclass_arguments",
           "CONFIG_DIR", "SHIPPED_PREFIX"]

#: The named configs shipped with the repository (``--config synthfaces64`` finds ``configs/synthfaces64.yaml``).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
#: A config path starting with this folder names a shipped model (:func:`resolve_config_path`).
SHIPPED_PREFIX = "pretrained"


def option(default: Any, help: str, *, resume: bool = False, **meta: Any) -> Any:
    """A field of a trainer's options dataclass: its default, its ``--help`` text, whether a resumed run may change
    it (``resume``; the others define the model, the data or the optimisation and must match the checkpoint) and
    any further metadata."""
    return dataclasses.field(default=default, metadata={"help": help, "resume": resume, **meta})


def resume_may_change(cls: type) -> frozenset[str]:
    """The options of dataclass ``cls`` declared with ``option(..., resume=True)``."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume"))


def flag(name: str) -> str:
    """The command-line flag of option ``name`` (``l2_lambda`` -> ``--l2-lambda``)."""
    return "--" + name.replace("_", "-")


def config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file from a path, or a name of a shipped config (``ffhq1024`` -> ``configs/ffhq1024.yaml``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for candidate in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError.about("config", f"{name_or_path}: no such file and no shipped config of that name"
                            + (f" (shipped: {', '.join(known)})" if known else ""))


def resolve_config_path(value: str, config_file: str | os.PathLike) -> str:
    """Where a path written in ``config_file`` points, whatever the working folder.

    An absolute path (``~`` expanded) is kept. ``pretrained/NAME`` is ``pretrained_dir() / NAME`` (the shipped
    models' folder, ``$CLCAE_PRETRAINED_DIR`` when set). Any other relative path is taken relative to the folder of
    ``config_file``. Returns an absolute path as a string.
    """
    from ..pretrained import pretrained_dir

    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return str(p)
    if p.parts and p.parts[0] == SHIPPED_PREFIX:
        return str(pretrained_dir().joinpath(*p.parts[1:]))
    return str(Path(os.path.abspath(Path(config_file).resolve().parent / p)))


def load_config(name_or_path: str | os.PathLike, method: str | None = None, stage: str | None = None,
                known: Sequence[str] | None = None, paths: Mapping[str, Sequence[str]] | None = None
                ) -> dict[str, Any]:
    """Read a YAML config and flatten it for ``(method, stage)``: top level, then ``stages[stage]``, then
    ``methods[method]`` (later wins).

    Args:
        name_or_path: see :func:`config_path`.
        method, stage: which sections apply (``None``: none).
        known: the valid option names; any other key is an error naming the file and the key.
        paths: ``{option: words that are not paths}`` (e.g. ``{'data': ('synthfaces',)}``): the options whose
            values are files or folders, made absolute with :func:`resolve_config_path` (empty values and the
            listed words are kept as they are).
    Raises:
        ConfigError: unreadable file, not a mapping, unknown keys, a path option that is not a string.
    """
    import yaml

    path = config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option names to values")
    sections = {"stages": data.pop("stages", None) or {}, "methods": data.pop("methods", None) or {}}
    out = dict(data)
    for section, key in (("stages", stage), ("methods", method)):
        block = sections[section]
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: '{section}' must map names to option mappings")
        if key is not None and key in block:
            if not isinstance(block[key], dict):
                raise ConfigError(f"{path}: {section}.{key} must be a mapping of option names to values")
            out.update(block[key])
    if known is not None:
        bad = sorted(set(out) - set(known))
        for section, block in sections.items():
            for name, values in block.items():
                bad += [f"{section}.{name}.{k}" for k in (values or {}) if k not in known]
        if bad:
            raise ConfigError(f"{path}: unknown option(s) {', '.join(sorted(set(bad)))}")
    for name, words in (paths or {}).items():
        value = out.get(name)
        if value is None or value == "" or value in words:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {name} must be a path (a string); got {value!r}")
        out[name] = resolve_config_path(value, path)
    return out


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, groups: Mapping[str, Sequence[str]],
                            choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` (``--name-x``), grouped by ``groups``.

    Booleans become ``--x/--no-x``; the help text is the field's ``metadata['help']`` plus its default. Use with
    ``argument_default=argparse.SUPPRESS`` so the namespace holds only what was given explicitly.
    """
    choices = dict(choices or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = sorted(set(fields) - {n for names in groups.values() for n in names})
    if missing:
        raise ValueError(f"options not in any group: {missing}")
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            f = fields[name]
            default = f.default
            help_text = f.metadata.get("help", "") + (f" (default: {default})" if default not in ("", None) else "")
            if isinstance(default, bool):
                group.add_argument(flag(name), action=argparse.BooleanOptionalAction, help=help_text)
            else:
                metavar = {int: "N", float: "X"}.get(type(default), name.upper())
                group.add_argument(flag(name), type=type(default), choices=choices.get(name),
                                   metavar=None if name in choices else metavar, help=help_text)
