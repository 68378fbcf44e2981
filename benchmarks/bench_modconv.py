#!/usr/bin/env python
"""Grouped vs unfused modulated convolution, per workload, measured side by side (fast upfirdn2d in both).

This is the measurement behind ``ModulatedConv2d.fused='auto'`` on CPU (unfused when gradients are taken over a
batch, grouped otherwise).

    python benchmarks/bench_modconv.py --threads 2
"""
import argparse
import time

import torch

from clcae.networks.layers import ModulatedConv2d
from clcae.networks.stylegan2 import Generator


def set_form(G, fused):
    for m in G.modules():
        if isinstance(m, ModulatedConv2d):
            m.fused = fused


def best_time(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| size | batch | pass | grouped s | unfused s |")
    print("|---|---|---|---|---|")
    for size, batch, grad in [(256, 1, False), (256, 4, False), (1024, 1, False), (1024, 2, False), (64, 16, True)]:
        kw = dict(channel_base=4096, channel_max=128) if size == 64 else {}
        G = Generator(size, **kw).set_impl("fast")
        with torch.no_grad():
            w = G.mapping(torch.randn(batch, G.style_dim))
        w.requires_grad_(grad)

        def run():
            with torch.set_grad_enabled(grad):
                y = G.synthesis(w)
                if grad:
                    y.square().mean().backward()
        times = {}
        for fused in (True, False):
            set_form(G, fused)
            times[fused] = best_time(run, args.reps)
        print(f"| {size} | {batch} | {'fwd+bwd' if grad else 'fwd'} | {times[True]:.3f} | {times[False]:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
