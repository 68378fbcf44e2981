#!/usr/bin/env python
"""The main job on the embedded default, with no download.

Today this generates faces with the project's shipped SynthFaces generator (``pretrained/``). Inversion and editing
with the shipped CLCAE model join it when those models are trained (see the README's status section).
If the shipped generator is absent (e.g. a checkout before it was trained), it says so plainly and renders from a
randomly initialised generator instead, so the pipeline still runs end to end — those images are noise-like
patterns, not faces.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, load_generator
from clcae.inversion.runner import RunnerError, resolve_device
from clcae.networks.stylegan2 import Generator
from clcae.pretrained import SYNTHFACES_GENERATOR, pretrained_dir, shipped

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate  # noqa: E402


@cli.exit_statuses(usage=(CheckpointError, RunnerError))
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    p.add_argument("--n", type=cli.positive_int, default=16, help="number of images (>= 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    t0 = time.time()
    path = shipped(SYNTHFACES_GENERATOR)
    if path is not None:
        G = load_generator(path, device=device)
        what = f"the shipped SynthFaces generator ({path})"
    else:
        print(f"NOTE: no trained generator found at {pretrained_dir() / SYNTHFACES_GENERATOR}; rendering from a "
              "RANDOMLY INITIALISED 64 px generator so the pipeline runs. These images are not faces.")
        torch.manual_seed(0)
        G = Generator(64, 128, 4, channel_base=4096, channel_max=128).eval().to(device)
        with torch.no_grad():
            G.latent_avg.copy_(G.mean_latent(1024))
        what = "a randomly initialised generator (untrained)"
    grid = generate(G, list(range(args.n)), args.out, truncation=0.7 if path else 1.0, device=device)
    print(f"Generated {args.n} images with {what} in {time.time() - t0:.1f}s.")
    print(f"Results: {args.out.resolve()}  (grid: {grid.resolve()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
