#!/usr/bin/env python
"""GANSpace: compute the PCA of W (w = mapping(z), z ~ N(0, I)) for any generator, for scripts/edit.py.

Writes --out in our format ({'format': 'clcae.ganspace_pca', 'comp' [K, D], 'std' [K], 'mean' [D], 'meta'}) or,
with --layout official, the {'comp': [K, 1, D], 'mean': [1, D], 'std': [K]} layout of the e4e / CLCAE ffhq_pca.pt.
Prints the explained variance of the leading components.

Example:
  python scripts/ganspace_pca.py --generator pretrained/synthfaces64_generator.pt --n 100000 --out pca.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, load_generator
from clcae.editing import compute_pca, save_pca
from clcae.jobs import JobError, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, required=True, help="generator file (any format load_generator reads)")
    p.add_argument("--n", type=int, default=100_000, help="w samples (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the z stream (default 0)")
    p.add_argument("--components", type=int, default=80, help="components kept (default 80, as ffhq_pca.pt)")
    p.add_argument("--batch", type=int, default=10_000, help="samples per mapping call")
    p.add_argument("--layout", choices=["ours", "official"], default="ours", help="file layout (default ours)")
    p.add_argument("--out", type=Path, required=True, help="file to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns 0 on success, 2 for a problem with the arguments or files."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.n < 2 or args.components < 1 or args.batch < 1:
            raise ValueError("--n must be >= 2, --components and --batch >= 1")
        generator = load_generator(args.generator, device=device)
        pca = compute_pca(generator, n_samples=args.n, seed=args.seed, n_components=args.components,
                          batch=args.batch, device=device, progress=not args.no_progress)
    except (CheckpointError, JobError, ValueError) as e:
        return cli.report_error(e)
    save_pca(pca, args.out, layout=args.layout)
    ratio = pca.meta["explained_variance_ratio"]
    lead = ", ".join(f"{float(r):.3f}" for r in ratio[:10])
    print(f"{pca.n_components} components of W ({pca.dim}-D) from {args.n} samples; explained variance of the "
          f"first {min(10, pca.n_components)}: {lead} (total kept {float(ratio.sum()):.3f})")
    print(f"wrote {args.out} ({args.layout} layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
