"""The ``clcae`` command: one entry point for every script, plus ``doctor`` and ``app``.

``pip install -e .`` puts ``clcae`` on the PATH (a ``console_scripts`` entry point; ``python -m clcae`` is the
same). Each subcommand runs a script's own ``main(argv)``, so its flags, help and exit statuses are exactly the
script's::

    clcae invert --checkpoint ckpt.pt --input photos/ --out out/   ==   python scripts/invert.py --checkpoint ...

``clcae help SUBCOMMAND`` prints that subcommand's help, ``clcae --version`` the version. ``doctor`` and ``app``
live in the package (:mod:`clcae.doctor`, :mod:`clcae.app`); the other subcommands run ``scripts/NAME.py`` of the
checkout the package was installed from (beside the package, as ``pretrained/`` is, see
:func:`clcae.pretrained.pretrained_dir`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Sequence

from .version import __version__
from .cli import EXIT_OK, EXIT_USAGE

__all__ = ["Command", "COMMANDS", "scripts_dir", "load_script", "command_main", "build_usage", "main"]

PROG = "clcae"


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: ``script`` is the file in ``scripts/`` (or ``module`` a package module) whose
    ``main(argv) -> int`` it runs; ``summary`` is its line in ``clcae --help``."""

    summary: str
    script: str | None = None
    module: str | None = None


#: Subcommands in the order ``clcae --help`` lists them.
COMMANDS: dict[str, Command] = {
    "demo": Command("the main job on the shipped models: invert, edit, HTML report", script="demo.py"),
    "invert": Command("invert a folder with CLCAE / pSp / e4e or projection", script="invert.py"),
    "edit": Command("InterFaceGAN / GANSpace / SeFa edits of inverted codes", script="edit.py"),
    "eval": Command("reconstruction and editing metrics, tables and HTML report", script="eval.py"),
    "align": Command("FFHQ alignment of real photos (the [align] extra)", script="align.py"),
    "photo": Command("one photo: align -> invert -> edit -> paste back, one HTML page", script="photo.py"),
    "app": Command("local web app: drop a photo, move the sliders (the [app] extra)", module="clcae.app"),
    "doctor": Command("check the install: torch, CUDA, ops build, extras, shipped models", module="clcae.doctor"),
    "train": Command("train an encoder: CLCAE stage 1/2, pSp, e4e", script="train.py"),
    "train-generator": Command("train a StyleGAN2 generator", script="train_generator.py"),
    "train-domain-net": Command("train the SynthFaces domain network", script="train_domain_net.py"),
    "generate": Command("images, grid and latents from a generator", script="generate.py"),
    "generate-pairs": Command("CLCAE stage-1 latent-image pairs", script="generate_pairs.py"),
    "make-synthfaces": Command("render the SynthFaces domain with labels", script="make_synthfaces.py"),
    "find-directions": Command("learn an InterFaceGAN direction", script="find_directions.py"),
    "ganspace-pca": Command("GANSpace PCA of W", script="ganspace_pca.py"),
    "eval-generator": Command("Frechet distance of a SynthFaces generator", script="eval_generator.py"),
    "convert": Command("convert a generator between formats (.pkl -> .pt, ...)", script="convert_checkpoint.py"),
    "export": Command("export an inverter to ONNX and check it in ONNX Runtime (the [export] extra)",
                      script="export.py"),
}


def scripts_dir() -> Path:
    """The ``scripts/`` folder of the checkout the package runs from (beside the ``clcae`` package)."""
    return Path(__file__).resolve().parents[1] / "scripts"


def load_script(file_name: str) -> ModuleType:
    """Import ``scripts/FILE_NAME`` as a module (once per process; named ``clcae_script_STEM`` so that ``eval``
    does not shadow the builtin). Raises FileNotFoundError naming the path when the checkout has no such file."""
    path = scripts_dir() / file_name
    key = f"clcae_script_{path.stem}"
    if key in sys.modules:
        return sys.modules[key]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the clcae command runs the scripts of the checkout it was installed from; install "
            "it from a checkout with pip install -e .")
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def command_main(name: str):
    """The ``main(argv) -> int`` that subcommand ``name`` runs (KeyError for an unknown name)."""
    command = COMMANDS[name]
    if command.module is not None:
        return importlib.import_module(command.module).main
    return load_script(command.script).main


@contextlib.contextmanager
def _program_name(name: str) -> Iterator[None]:
    """argparse names the program after ``sys.argv[0]``: make a script's usage line read ``clcae NAME``."""
    saved = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = f"{PROG} {name}"
    else:
        sys.argv.append(f"{PROG} {name}")
    try:
        yield
    finally:
        if saved is None:
            sys.argv.pop(0)
        else:
            sys.argv[0] = saved


def build_usage() -> str:
    """The text of ``clcae --help``: usage, the subcommands with one line each, and where help on one is."""
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: {PROG} [--version] [--help] SUBCOMMAND [ARGS ...]", "",
             "StyleGAN2 inversion and editing around CLCAE. Each subcommand takes the flags of its script",
             "(clcae invert ... == python scripts/invert.py ...).", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", f"{PROG} help SUBCOMMAND (or {PROG} SUBCOMMAND --help) prints the flags of one."]
    return "\n".join(lines)


def _unknown(name: str) -> int:
    print(f"{PROG}: unknown subcommand {name!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clcae ARGV``; returns the exit status (the subcommand's own; 2 for an unknown subcommand)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(build_usage())
        return EXIT_OK if args else EXIT_USAGE
    if args[0] == "--version":
        import torch

        print(f"{PROG} {__version__} (torch {torch.__version__}, python {sys.version.split()[0]})")
        return EXIT_OK
    name, rest = args[0], args[1:]
    if name == "help":
        if not rest:
            print(build_usage())
            return EXIT_OK
        name, rest = rest[0], ["--help"]
    if name not in COMMANDS:
        return _unknown(name)
    command = COMMANDS[name]
    if command.script is not None and not (scripts_dir() / command.script).is_file():
        print(f"error: {scripts_dir() / command.script} not found: the {PROG} command runs the scripts of the "
              "checkout it was installed from; install it from a checkout with pip install -e .", file=sys.stderr)
        return EXIT_USAGE
    with _program_name(name):
        return command_main(name)(rest)


def console_entry() -> None:
    """The ``console_scripts`` entry point: ``sys.exit(main())``."""
    sys.exit(main())
