#!/usr/bin/env python
"""Write CLCAE stage-1 latent-image pairs from a pretrained StyleGAN2 (any format ``clcae.load_generator`` reads).

Writes ``OUT/train`` (``--n`` pairs, seed stream 0) and ``OUT/test`` (``--n-test`` pairs, seed stream 1, so the
two splits never share a z), each with ``image/``, ``latent/``, ``avg_image.png``, ``avg_latent.npy`` and
``pairs.json`` (layout: :mod:`clcae.data.pairs`). Re-running the same command resumes: complete pairs are
verified and skipped. A folder written with other settings or another generator is refused.

Example::

    python scripts/generate_pairs.py --generator pretrained/stylegan2-ffhq-config-f.pt --out data/ffhq_pairs \\
        --n 50000 --n-test 1000 --psi 1.0 --noise const --image-size 256
"""
import argparse
import sys
import time
from pathlib import Path

from clcae import cli
from clcae.checkpoints import CheckpointError, load_generator
from clcae.data.pairs import PairsError, write_pairs
from clcae.jobs import JobError, resolve_device

TRAIN_STREAM, TEST_STREAM = 0, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, type=Path, help="generator file (.pt / .pkl)")
    p.add_argument("--out", required=True, type=Path, help="output folder (gets train/ and test/)")
    p.add_argument("--n", type=cli.non_negative_int, default=50000, help="training pairs (default 50000)")
    p.add_argument("--n-test", type=cli.non_negative_int, default=1000, help="test pairs (default 1000)")
    p.add_argument("--psi", type=float, default=1.0, help="truncation towards latent_avg (1 = none; default 1)")
    p.add_argument("--noise", choices=["const", "random", "none"], default="const",
                   help="noise when rendering: stored buffers (default), seeded per pair, or zero")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="seed of both splits' streams (default 0)")
    p.add_argument("--batch", type=cli.positive_int, default=16, help="pairs per generator call (default 16)")
    p.add_argument("--workers", type=cli.positive_int, default=4, help="PNG writer threads (default 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--image-size", type=cli.positive_int, default=None,
                   help="save images at this square size (antialiased resize) instead of the generator's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@cli.exit_statuses(usage=(CheckpointError, JobError, PairsError))
def main(argv=None) -> int:
    """Run the command line; returns 0 on success, 2 for a bad --generator, --device or output folder."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    G = load_generator(args.generator, device=device)
    if getattr(G, "latent_avg_source", "file") != "file":
        print(f"note: {args.generator} has no latent_avg; using the mean of 4096 mapped samples", file=sys.stderr)
    t = time.time()
    summaries = []
    for split, n, stream in (("train", args.n, TRAIN_STREAM), ("test", args.n_test, TEST_STREAM)):
        summary = write_pairs(G, args.out / split, n, seed=args.seed, psi=args.psi, noise_mode=args.noise,
                              batch=args.batch, image_size=args.image_size, progress=not args.no_progress,
                              stream=stream, generator_name=args.generator.name, workers=args.workers)
        summaries.append((split, summary))
    size = args.image_size or G.size
    print(f"generator {args.generator.name}: {G.size}px, style_dim {G.style_dim}; psi {args.psi}, noise "
          f"{args.noise}, seed {args.seed}; images saved at {size}px on {device}")
    for split, s in summaries:
        print(f"  {split}: {s['count']} pairs in {s['root']} ({s['written']} written, {s['skipped']} already "
              f"complete, {s['seconds']:.1f}s)")
    print(f"done in {time.time() - t:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
