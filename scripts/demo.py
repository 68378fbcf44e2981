#!/usr/bin/env python
"""The main job on the embedded default, with no download: invert the example faces with the shipped SynthFaces
CLCAE model, edit them, and write a report you open in a browser.

Each step is one of the package's scripts, run in this process; the equivalent command is printed before it runs:
  1. samples  scripts/generate.py  16 samples of the shipped generator             -> OUT/samples/grid.png
  2. invert   scripts/invert.py    examples/ with the shipped CLCAE model          -> OUT/invert/
                                   (w, W+ and W+F reconstructions, codes, input|outputs strips)
  3. edit     scripts/edit.py      smile, age and yaw: the InterFaceGAN directions learned for the shipped
                                   generator (pretrained/synthfaces64_directions/), on every representation,
                                   the F feature carried through the edit                -> OUT/edit/
  4. report   scripts/eval.py      reconstruction metrics of CLCAE (next to the shipped pSp and e4e models when
                                   present), editing metrics measured against SynthFaces ground truth, image grids
                                                                                  -> OUT/report/report.html
Re-running skips finished inversions and edits and rewrites the report.

What is missing is said plainly, and the rest still runs: without the shipped generator the samples come from a
RANDOMLY INITIALISED generator (not faces) and nothing is inverted; without the shipped CLCAE model only the samples
are made; without a direction file that edit is left out.

Exit status: 0 done; 2 a problem with the arguments or a shipped file; 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError
from clcae.data.images import display_path
from clcae.jobs import JobError, resolve_device
from clcae.networks.stylegan2 import Generator
from clcae.pretrained import (SYNTHFACES_CLCAE, SYNTHFACES_DOMAIN_NET, SYNTHFACES_E4E, SYNTHFACES_GENERATOR,
                              SYNTHFACES_PSP, pretrained_dir, shipped, shipped_direction)

SCRIPTS = Path(__file__).resolve().parent
EXAMPLES = SCRIPTS.parent / "examples"
#: Attributes edited by the demo, and the strengths swept (in the direction file's units).
DEMO_EDITS = ("smile", "age", "yaw")
DEMO_STRENGTHS = (-3.0, -1.5, 0.0, 1.5, 3.0)
#: Inverters compared in the report, in this order (CLCAE is required, the others join when shipped).
REPORT_METHODS = (("clcae", SYNTHFACES_CLCAE), ("psp", SYNTHFACES_PSP), ("e4e", SYNTHFACES_E4E))


def _script(name: str):
    """Load ``scripts/NAME.py`` as a module (``eval`` would shadow the builtin as a plain import)."""
    key = f"clcae_demo_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    return module


def _step(title: str, name: str, argv: list[str]) -> int:
    """Print the command, run ``scripts/NAME.py`` with ``argv``, return its exit status."""
    print(f"\n== {title}\n$ python scripts/{name}.py " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)
    return _script(name).main([str(a) for a in argv])


def run(args: argparse.Namespace) -> int:
    """The demo for parsed ``args``; returns the exit status."""
    device = resolve_device(args.device)
    out: Path = args.out
    t0 = time.time()
    notes: list[str] = []
    common = ["--device", args.device] + (["--no-progress"] if args.no_progress else [])
    strengths = [f"{s:g}" for s in DEMO_STRENGTHS]

    gen_path = shipped(SYNTHFACES_GENERATOR)
    samples = out / "samples"
    if gen_path is not None:
        status = _step("1. samples of the shipped generator", "generate",
                       ["--generator", gen_path, "--seeds", f"0-{args.n - 1}", "--truncation", "0.7",
                        "--out", samples, "--device", args.device])
        if status:
            return status
    else:
        print(f"NOTE: no trained generator found at {display_path(pretrained_dir() / SYNTHFACES_GENERATOR)}; "
              "rendering from a RANDOMLY INITIALISED 64 px generator so the pipeline runs. These images are not "
              "faces, and nothing is inverted or edited.")
        generate = _script("generate").generate
        torch.manual_seed(0)
        G = Generator(64, 128, 4, channel_base=4096, channel_max=128).eval().to(device)
        with torch.no_grad():
            G.latent_avg.copy_(G.mean_latent(1024))
        generate(G, list(range(args.n)), samples, truncation=1.0, device=device)
        notes.append("samples from a randomly initialised generator (no shipped generator)")

    clcae_path = shipped(SYNTHFACES_CLCAE)
    report = None
    if gen_path is not None and clcae_path is None:
        print(f"NOTE: the shipped SynthFaces CLCAE model {display_path(pretrained_dir() / SYNTHFACES_CLCAE)} is not "
              "there yet, so the demo stops after the samples (inversion, edits and report need it).")
        notes.append("no shipped CLCAE model: no inversion, edits or report")
    elif clcae_path is not None:
        status = _step("2. invert examples/ with the shipped CLCAE model", "invert",
                       ["--checkpoint", clcae_path, "--input", args.input, "--out", out / "invert"] + common)
        if status:
            return status

        directions = [(a, shipped_direction(a)) for a in DEMO_EDITS]
        missing = [a for a, p in directions if p is None]
        if missing:
            print(f"NOTE: no shipped direction for {', '.join(missing)} in "
                  f"{display_path(pretrained_dir())}: left out of the edits")
            notes.append(f"no shipped direction for {', '.join(missing)}")
        directions = [(a, p) for a, p in directions if p is not None]
        if directions:
            edit_argv = ["--latents", out / "invert"]
            for _, path in directions:
                edit_argv += ["--edit", f"interfacegan:{path}:{','.join(strengths)}"]
            status = _step("3. edit the inverted codes", "edit", edit_argv + ["--out", out / "edit"] + common)
            if status:
                return status

        eval_argv = []
        for name, file in REPORT_METHODS:
            path = shipped(file)
            if path is not None:
                eval_argv += ["--method", f"{name}={path}"]
        if Path(args.input).resolve() == EXAMPLES.resolve():
            # examples/ are SynthFaces test items 0-7: eval renders the same faces with their ground truth, which
            # the editing metrics need
            eval_argv += ["--data", "synthfaces", "--n", str(len(list(EXAMPLES.glob("*.png"))))]
            if shipped(SYNTHFACES_DOMAIN_NET) is None:
                notes.append("no shipped domain network: identity, Fréchet and editing metrics left out")
            elif directions:
                for attribute, path in directions:
                    eval_argv += ["--edit", f"{attribute}={path}"]
                eval_argv += ["--edit-strengths"] + strengths
        else:
            eval_argv += ["--data", args.input]  # no ground truth: reconstruction metrics only
        eval_argv += ["--save-images", "8", "--title", "clcae demo: the shipped SynthFaces models",
                      "--out", out / "report", "--overwrite"]
        status = _step("4. report: metrics and image grids", "eval", eval_argv + common)
        if status:
            return status
        report = out / "report" / "report.html"

    print(f"\nDemo finished in {time.time() - t0:.1f}s" + (f" ({'; '.join(notes)})" if notes else "") + ".")
    print(f"samples:  {display_path((samples / 'grid.png').resolve())}")
    if clcae_path is not None:
        print(f"inverted: {display_path((out / 'invert').resolve())}  (strips/, latents/, summary.json)")
        if (out / "edit").is_dir():
            print(f"edited:   {display_path((out / 'edit').resolve())}  (LABEL/grids/NAME.jpg)")
    if report is not None:
        print(f"Report: {display_path(report.resolve())}")
    return 0


@cli.exit_statuses(usage=(CheckpointError, JobError), interrupted="interrupted")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    p.add_argument("--input", type=Path, default=EXAMPLES,
                   help="images to invert (default: examples/, SynthFaces test renders)")
    p.add_argument("--n", type=cli.positive_int, default=16, help="number of generator samples (>= 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    resolve_device(args.device)  # a bad device fails before any work
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
