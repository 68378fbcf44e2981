#!/usr/bin/env python
"""Fréchet distance of a SynthFaces generator against held-out renders, in the domain network's feature space.

Prints and writes (``--json``) the distance of ``--n`` generated images to ``--n`` test-split renders, next to the
distance between two disjoint sets of real renders (the floor at this sample size).

    python scripts/eval_generator.py --generator pretrained/synthfaces64_generator.pt \
        --domain-net pretrained/synthfaces64_domain_net.pt --n 5000
"""
import argparse
import json
import sys
import time
from pathlib import Path

from clcae import cli
from clcae.checkpoints import CheckpointError, load_generator
from clcae.inversion.runner import RunnerError, resolve_device
from clcae.fileio import atomic_write
from clcae.metrics.generator import generator_fd_report
from clcae.networks.domain import load_domain_net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True)
    p.add_argument("--domain-net", required=True)
    p.add_argument("--n", type=int, default=5000, help="images per set")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=cli.positive_int, default=64, help="images per generator pass (>= 1)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error("--n must be at least 2")
    try:
        args.device = str(resolve_device(args.device))
        G = load_generator(args.generator, device=args.device)
        net = load_domain_net(args.domain_net, device=args.device)
    except (CheckpointError, RunnerError) as e:
        return cli.report_error(e)
    t = time.time()
    report = generator_fd_report(G, net.features, args.n, args.truncation, args.seed, batch=args.batch,
                                 device=args.device, progress=True)
    report.update(generator=str(args.generator), domain_net=str(args.domain_net), seconds=round(time.time() - t, 1))
    print(json.dumps(report, indent=2))
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
