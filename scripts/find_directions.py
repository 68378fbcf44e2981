#!/usr/bin/env python
"""Learn an InterFaceGAN direction for an attribute from generator samples labelled by an attribute network.

Samples z ~ N(0, I), renders G(mapping(z)) with the constant noise, scores every image with the attribute network
(default: the shipped SynthFaces domain network, whose attributes(x) gives the 11 SynthFaces attributes), labels
the top and bottom --fraction of the samples, fits a linear SVM in W and writes its unit normal.

Writes --out (our direction file: the direction, attribute, generator fingerprint, accuracies) and, unless
--no-raw, OUT_STEM_raw.pt, the bare [1, D] tensor the official scripts load. Prints the validation accuracy and a
check: the mean attribute score of fresh samples moved along the direction by -S, 0, +S.

Examples:
  python scripts/find_directions.py --generator pretrained/synthfaces64_generator.pt --attribute smile \\
      --n 20000 --out directions/smile.pt
  python scripts/find_directions.py --generator G.pt --attribute age --condition-on directions/smile.pt \\
      --cache samples.pt --out directions/age_no_smile.pt

Any attribute network fits the Python API (clcae.editing.sample_scores takes a function images -> scores); this
command line reads networks saved by clcae.networks.domain.save_domain_net (anything with attributes(x) -> [B, A]
and attribute_names).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.checkpoints import CheckpointError, atomic_save, load_file, load_generator
from clcae.editing import (LEARN_METHODS, apply_direction, generator_fingerprint, learn_direction, load_direction,
                           sample_scores, save_direction)
from clcae.jobs import JobError, resolve_device
from clcae.networks.domain import load_domain_net
from clcae.pretrained import SYNTHFACES_DOMAIN_NET, pretrained_dir

DEFAULT_DOMAIN_NET = SYNTHFACES_DOMAIN_NET


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, required=True, help="generator file (any format load_generator reads)")
    p.add_argument("--domain-net", type=Path, default=None,
                   help=f"attribute network (default: pretrained/{DEFAULT_DOMAIN_NET})")
    p.add_argument("--attribute", required=True, help="attribute name, e.g. smile, age, yaw, glasses")
    p.add_argument("--n", type=int, default=20000, help="generator samples (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the z stream (default 0)")
    p.add_argument("--truncation", type=float, default=1.0, help="psi of the samples (default 1: none)")
    p.add_argument("--method", choices=LEARN_METHODS, default="svm",
                   help="svm (InterFaceGAN), logistic, or linear (ridge regression on every sample)")
    p.add_argument("--fraction", type=float, default=0.1,
                   help="share of samples labelled positive, and negative (default 0.1; InterFaceGAN: 0.02 of 500k)")
    p.add_argument("--split", type=float, default=0.7, help="share of the labelled samples used to fit (default 0.7)")
    p.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength (default 1)")
    p.add_argument("--condition-on", type=Path, action="append", default=[],
                   help="direction file(s) to project out (conditional manipulation); repeatable")
    p.add_argument("--cache", type=Path, default=None,
                   help="file holding the samples and all their attribute scores: reused when it matches the "
                        "generator, network, n, seed and truncation, written otherwise")
    p.add_argument("--check-strength", type=float, default=3.0,
                   help="strength of the printed effect check (default 3; 0 skips it)")
    p.add_argument("--check-n", type=int, default=64, help="fresh samples in the effect check (default 64)")
    p.add_argument("--out", type=Path, required=True, help="direction file to write (ours)")
    p.add_argument("--no-raw", action="store_true", help="do not write OUT_STEM_raw.pt (the official raw tensor)")
    p.add_argument("--batch", type=cli.positive_int, default=64, help="images per generator pass (>= 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true")
    return p


def _scores_for(args, generator, net, fingerprint: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [N, D], attribute scores [N, A]) from the cache when it matches, else sampled (and cached)."""
    key = {"generator": fingerprint, "domain_net": str(args.domain_net.resolve()), "n": args.n, "seed": args.seed,
           "truncation": args.truncation, "attributes": list(net.attribute_names)}
    if args.cache is not None and args.cache.is_file():
        try:
            cached = load_file(args.cache)
            if isinstance(cached, dict) and cached.get("key") == key:
                print(f"using the cached samples in {args.cache}")
                return cached["w"], cached["scores"]
            print(f"{args.cache} was made with other settings; sampling again", file=sys.stderr)
        except CheckpointError as e:
            print(f"ignoring the cache: {e}", file=sys.stderr)
    device = generator.latent_avg.device
    w, scores = sample_scores(generator, lambda x: net.attributes(x), args.n, seed=args.seed, batch=args.batch,
                              truncation=args.truncation, device=device, progress=not args.no_progress)
    if args.cache is not None:
        atomic_save({"key": key, "w": w, "scores": scores}, args.cache)
    return w, scores


@torch.no_grad()
def effect_check(generator, net, direction: torch.Tensor, attr: int, strength: float, n: int, seed: int,
                 truncation: float) -> dict[str, float]:
    """Mean attribute score of ``n`` fresh samples moved by -strength, 0, +strength along ``direction``."""
    device = generator.latent_avg.device
    z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = generator.truncate(generator.mapping(z), truncation)
    out = {}
    for s in (-strength, 0.0, strength):
        img = generator.synthesis(apply_direction(w, direction.to(device), s), noise_mode="const").clamp(-1, 1)
        out[f"{s:+g}"] = float(net.attributes(img)[:, attr].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns 0 on success, 2 for a problem with the arguments or files."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.domain_net = args.domain_net or pretrained_dir() / DEFAULT_DOMAIN_NET
    try:
        device = resolve_device(args.device)
        if args.n < 4:
            raise ValueError(f"--n {args.n}: need at least 4 samples")
        generator = load_generator(args.generator, device=device)
        net = load_domain_net(args.domain_net, device=device)
        names = list(net.attribute_names)
        if args.attribute not in names:
            raise ValueError(f"--attribute {args.attribute!r}: {args.domain_net} predicts {names}")
        attr = names.index(args.attribute)
        conditions = [load_direction(p, generator=generator).vector for p in args.condition_on]
        fingerprint = generator_fingerprint(generator)
        w, scores = _scores_for(args, generator, net, fingerprint["sha256"])
        direction, info = learn_direction(w, scores[:, attr], method=args.method, fraction=args.fraction,
                                          split=args.split, c=args.c, condition_on=conditions or None, seed=args.seed)
    except (CheckpointError, JobError, ValueError) as e:
        return cli.report_error(e)
    info.update(attribute_network=str(args.domain_net), truncation=args.truncation, seed=args.seed,
                conditioned_on=[str(p) for p in args.condition_on],
                score_mean=float(scores[:, attr].mean()), score_std=float(scores[:, attr].std()))
    if args.check_strength:
        info["effect_check"] = effect_check(generator, net, direction, attr, args.check_strength, args.check_n,
                                            args.seed + 1, args.truncation)
    raw = None if args.no_raw else args.out.with_name(f"{args.out.stem}_raw{args.out.suffix or '.pt'}")
    save_direction(args.out, direction, attribute=args.attribute, generator=fingerprint, meta=info, raw_path=raw)
    print(json.dumps({k: v for k, v in info.items() if k != "attribute_network"}, indent=2))
    print(f"wrote {args.out}" + (f" and {raw}" if raw else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
