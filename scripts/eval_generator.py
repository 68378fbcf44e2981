#!/usr/bin/env python
"""Fréchet distance of a SynthFaces generator against held-out renders, in the domain network's feature space, and,
with ``--independent-net``, FD and improved precision / recall in an independently trained network's space.

Prints and writes (``--json``) the distance of ``--n`` generated images to ``--n`` test-split renders, next to the
distance between two disjoint sets of real renders (the floor at this sample size).

    python scripts/eval_generator.py --generator pretrained/synthfaces64_generator.pt \
        --domain-net pretrained/synthfaces64_domain_net.pt --n 5000
    # + the independent feature network (pretrained/synthfaces64_fd_net.md): FD, precision and recall in both spaces
    python scripts/eval_generator.py --generator pretrained/synthfaces64_generator.pt \
        --domain-net pretrained/synthfaces64_domain_net.pt --independent-net pretrained/synthfaces64_fd_net.pt

The report's top-level ``fd_generated_vs_test`` / ``fd_real_vs_real`` are the domain network's (as before). With
``--independent-net`` it also has ``spaces``, a section per network (``domain_net``, ``independent_net``), each with
``fd_generated_vs_test``, ``fd_real_vs_real``, ``precision``, ``recall`` (Kynkäänniemi et al. 2019, k-NN manifolds
with ``--k``) and ``precision_real_vs_real`` / ``recall_real_vs_real`` (what two sets of real renders give). Use
the independent network's numbers to judge a generator whose training used the domain network (e.g.
``train_generator.py --d-arch projected``).
"""
import argparse
import json
import sys
import time
from pathlib import Path

from clcae import cli
from clcae.checkpoints import CheckpointError, load_generator
from clcae.jobs import JobError, resolve_device
from clcae.fileio import atomic_write
from clcae.metrics.generator import generator_fd_report
from clcae.metrics.generator_quality import generator_quality_report
from clcae.networks.domain import load_domain_net


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True)
    p.add_argument("--domain-net", required=True)
    p.add_argument("--independent-net", default=None, metavar="DOMAIN_NET",
                   help="a second, independently trained DomainNet (e.g. pretrained/synthfaces64_fd_net.pt): adds FD "
                        "and precision / recall in both networks' feature spaces")
    p.add_argument("--k", type=cli.positive_int, default=3, help="neighbours of the precision / recall manifolds")
    p.add_argument("--n", type=int, default=5000, help="images per set")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=cli.positive_int, default=64, help="images per generator pass (>= 1)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error("--n must be at least 2")
    if args.independent_net and args.n <= args.k:
        p.error("--n must be larger than --k (the precision / recall neighbours)")
    try:
        args.device = str(resolve_device(args.device))
        G = load_generator(args.generator, device=args.device)
        net = load_domain_net(args.domain_net, device=args.device)
        independent = (load_domain_net(args.independent_net, device=args.device) if args.independent_net
                       else None)
    except (CheckpointError, JobError) as e:
        return cli.report_error(e)
    t = time.time()
    if independent is None:
        report = generator_fd_report(G, net.features, args.n, args.truncation, args.seed, batch=args.batch,
                                     device=args.device, progress=True)
    else:
        spaces = generator_quality_report(G, {"domain_net": net.features, "independent_net": independent.features},
                                          args.n, args.truncation, args.seed, k=args.k, batch=args.batch,
                                          device=args.device, progress=True)
        report = {"fd_generated_vs_test": spaces["domain_net"]["fd_generated_vs_test"],
                  "fd_real_vs_real": spaces["domain_net"]["fd_real_vs_real"], "n": args.n,
                  "truncation": args.truncation, "k": args.k,
                  "spaces": {name: spaces[name] for name in ("domain_net", "independent_net")},
                  "independent_net": str(args.independent_net)}
    report.update(generator=str(args.generator), domain_net=str(args.domain_net), seconds=round(time.time() - t, 1))
    print(json.dumps(report, indent=2))
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
