#!/usr/bin/env python
"""Export an inverter with its generator to ONNX (image in -> codes and one rendered image out) and check it.

Needs the ``[export]`` extra (``pip install -e ".[export]"``: onnx and onnxruntime). The graph is the fp32 inference
path at a fixed batch size (``clcae.export``); after writing it, the script runs it with ONNX Runtime on random
inputs and compares every output with PyTorch: exit status 1 if any differs by more than ``--tolerance``.

Example::

    python scripts/export.py --checkpoint pretrained/synthfaces64_clcae.pt --out clcae64.onnx
    python scripts/export.py --checkpoint ckpt_ffhq1024.pt --generator stylegan2-ffhq-config-f.pt \\
        --image wplus_f --batch 1 --out clcae_ffhq1024.onnx
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, load_inverter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="CLCAE / pSp / e4e checkpoint (ours or official)")
    p.add_argument("--generator", type=Path, default=None,
                   help="StyleGAN2 file with the latent_avg an official CLCAE checkpoint lacks")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--image", choices=["wplus_f", "wplus", "w"], default=None,
                   help="which image the graph renders (default: the method's main one, wplus_f for CLCAE)")
    p.add_argument("--batch", type=cli.positive_int, default=1, help="batch size of the graph (default 1)")
    p.add_argument("--impl", choices=["fast", "ref"], default="fast",
                   help="fast (default) or ref: the official arithmetic, same numbers, slower")
    p.add_argument("--opset", type=cli.positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest difference from PyTorch the check accepts (default 1e-3)")
    p.add_argument("--no-check", action="store_true", help="write the graph without running it in ONNX Runtime")
    p.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch and the check")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from clcae.export import check_export, export_onnx

    try:
        inv = load_inverter(args.checkpoint, generator=args.generator)
    except CheckpointError as e:
        return cli.report_error(e)
    if args.image is not None and args.image not in inv.image_names:
        return cli.report_error(f"--image {args.image}: a {inv.arch} model renders {', '.join(inv.image_names)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    try:
        names = export_onnx(inv, args.out, batch=args.batch, image=args.image, opset=args.opset, impl=args.impl)
    except ImportError as e:
        return cli.report_error(e, cli.EXIT_FAILED)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2 ** 20:.1f} MiB) in {time.perf_counter() - t:.1f} s: input "
          f"image [{args.batch}, 3, {inv.input_size[0]}, {inv.input_size[1]}], outputs {', '.join(names)}")
    if args.no_check:
        return cli.EXIT_OK
    x = torch.rand(args.batch, 3, *inv.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        diffs = check_export(inv.set_impl(args.impl), args.out, x, image=args.image)
    except ImportError as e:
        return cli.report_error(e, cli.EXIT_FAILED)
    worst = max(diffs.values())
    print("ONNX Runtime vs PyTorch, max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    if not worst <= args.tolerance:
        return cli.report_error(f"the exported graph differs from PyTorch by {worst:.2e} > --tolerance "
                                f"{args.tolerance:g}", cli.EXIT_FAILED)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
