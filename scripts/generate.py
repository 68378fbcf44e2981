#!/usr/bin/env python
"""Generate images from a StyleGAN2 generator (any format ``clcae.load_generator`` reads).

Writes one PNG per seed, ``grid.png``, and ``latents.pt`` (``{'seeds', 'w'}``) to ``--out``.

Example::

    python scripts/generate.py --generator stylegan2-ffhq-config-f.pt --seeds 0-15 --truncation 0.7 --out out/gen
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, atomic_save, load_generator
from clcae.data.images import save_image
from clcae.jobs import JobError, resolve_device
from clcae.sampling import image_grid, sample_images


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, help="generator file (.pt / .pkl)")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-15"), help="e.g. 0-15 or 1,5,9")
    p.add_argument("--truncation", type=float, default=1.0, help="psi towards latent_avg (1 = none)")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--batch", type=cli.positive_int, default=8, help="images per generator pass (>= 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    return p


def generate(G, seeds, out: Path, truncation=1.0, noise_mode="const", batch=8, device="cpu") -> Path:
    """Render and write the images, grid and latents; returns the grid path."""
    out.mkdir(parents=True, exist_ok=True)
    imgs, ws = sample_images(G, seeds, truncation, noise_mode, batch, device, progress=True)
    for s, img in zip(seeds, imgs):
        save_image(img, out / f"seed{s:05d}.png")
    grid = out / "grid.png"
    save_image(image_grid(imgs), grid)
    atomic_save({"seeds": torch.tensor(seeds), "w": ws}, out / "latents.pt")
    return grid


@cli.exit_statuses(usage=(CheckpointError, JobError))
def main(argv=None) -> int:
    """Run the command line; returns 0 on success, 2 for a bad --generator or --device."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    G = load_generator(args.generator, device=device)
    t = time.time()
    grid = generate(G, args.seeds, args.out, args.truncation, args.noise_mode, args.batch, device)
    print(f"{len(args.seeds)} images ({G.size}px) in {time.time() - t:.1f}s -> {args.out} (grid: {grid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
