#!/usr/bin/env python
"""Convert a StyleGAN2 generator between formats.

Reads any file ``clcae.load_generator`` reads (our format, rosinality ``.pt``, an official pSp/e4e/CLCAE
checkpoint's ``decoder.*``, NVIDIA stylegan2-ada-pytorch ``.pkl``; never executing code from it) and writes

- ``--to clcae`` (default): our self-describing format, loadable with ``torch.load(weights_only=True)``;
- ``--to rosinality``: ``{'g_ema', 'latent_avg'}``, the file pSp / e4e / CLCAE training code expects as
  ``--stylegan_weights``.

After writing, the output is loaded back and a few images are compared with the input's (max abs difference
printed), so a bad conversion never goes unnoticed.

Example::

    python scripts/convert_checkpoint.py network-snapshot.pkl stylegan2-ffhq.pt --to rosinality
"""
import argparse
import sys

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, atomic_save, generator_checkpoint, load_generator


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="generator file (.pt, .pkl)")
    p.add_argument("output", help="file to write")
    p.add_argument("--to", choices=["clcae", "rosinality"], default="clcae", help="output format")
    p.add_argument("--key", default="g_ema", help="which network: g_ema (default) or g (NVIDIA: G_ema / G)")
    p.add_argument("--lr-mlp", type=float, default=None,
                   help="mapping learning-rate multiplier when the file does not say (rosinality files: 0.01)")
    p.add_argument("--check-samples", type=int, default=4, help="images compared after writing (0 to skip)")
    args = p.parse_args(argv)

    overrides = {} if args.lr_mlp is None else {"lr_mlp": args.lr_mlp}
    try:
        G = load_generator(args.input, key=args.key, **overrides)
    except CheckpointError as e:
        return cli.report_error(e)
    if args.to == "clcae":
        atomic_save(generator_checkpoint(G, {"converted_from": str(args.input)}), args.output)
    else:
        if G.config.get("conv_clamp") is not None:
            print(f"warning: the generator clamps activations at {G.config['conv_clamp']}; rosinality's code does "
                  "not, so its images may differ where activations exceed that", file=sys.stderr)
        atomic_save({"g_ema": {k: v.cpu() for k, v in G.state_dict().items()},
                     "latent_avg": G.latent_avg.cpu().clone()}, args.output)
    print(f"wrote {args.output} ({args.to}): size {G.size}, style_dim {G.style_dim}, n_mlp {G.config['n_mlp']}, "
          f"channels {G.channels}, latent_avg from {G.latent_avg_source}")
    if args.check_samples > 0:
        G2 = load_generator(args.output, **overrides)
        z = torch.randn(args.check_samples, G.style_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            err = (G(z, noise_mode="const") - G2(z, noise_mode="const")).abs().max().item()
        print(f"check: {args.check_samples} images from input and output differ by at most {err:.3g}")
        if err > 1e-4:
            return cli.report_error("the converted generator does not reproduce the input", cli.EXIT_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
