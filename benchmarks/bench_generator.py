#!/usr/bin/env python
"""Generator / discriminator speed, reference path vs fast path, measured side by side in one run.

Reports, per configuration: seconds per call for ``impl='ref'`` (the official-style arithmetic: grouped modulated
convolution, single-channel FIR) and for the fast path (``'fast'`` on CPU, ``'cuda'`` kernels on GPU), their ratio,
and the achieved FLOP/s of the fast path against this machine's measured dense matmul rate (same run).

    python benchmarks/bench_generator.py --device cpu            # 64 px training step + 256 px forward
    python benchmarks/bench_generator.py --device cuda --full    # adds the 1024 px forward

Its "64 px train step" is a plain G + D step (128 channels up to 32 px, no R1, no path length). The training step of
the shipped recipe, with lazy R1 and path-length regularisation, is timed by ``bench_training.py generator``.
"""
import argparse
import datetime
import platform
import time

import torch
import torch.nn.functional as F

from clcae.networks.stylegan2 import Discriminator, Generator


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, reps):
    fn()
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(device, n=2048, reps=3):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n ** 3 / timeit(lambda: a @ b, device, reps)


def count_flops(fn):
    """FLOPs of one call counted by torch's flop counter (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def train_step_fn(G, D, batch, device):
    real = torch.randn(batch, 3, G.size, G.size, device=device)

    def step():
        z = torch.randn(batch, G.style_dim, device=device)
        fake = G(z, noise_mode="random")
        loss_d = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
        loss_d.backward()
        loss_g = F.softplus(-D(G(z, noise_mode="random"))).mean()
        loss_g.backward()
    return step


def forward_fn(G, batch, device):
    with torch.no_grad():
        w = G.mapping(torch.randn(batch, G.style_dim, device=device))

    def fwd():
        with torch.no_grad():
            G.synthesis(w)
    return fwd


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = leave as is)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--full", action="store_true", help="also the 1024 px config-f forward")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    fast = "cuda" if device.type == "cuda" else "fast"
    rate = matmul_rate(device)
    print(f"# bench_generator  {datetime.date.today()}  device={device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or platform.machine()})"
          f"  torch {torch.__version__}  threads={torch.get_num_threads()}  matmul {rate / 1e9:.0f} GFLOP/s")
    print("| workload | batch | ref s | fast s | speed-up | fast GFLOP/s | % of matmul rate |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    cases = [("64 px train step G+D (128..64 ch)", 64, dict(channel_base=4096, channel_max=128), 16, "train"),
             ("256 px forward (config-f)", 256, dict(), 4 if device.type == "cuda" else 1, "fwd")]
    if args.full or device.type == "cuda":
        cases.append(("1024 px forward (config-f)", 1024, dict(), 4 if device.type == "cuda" else 1, "fwd"))
    for name, size, kw, batch, kind in cases:
        G = Generator(size, 512 if not kw else 128, 8 if not kw else 4, **kw).to(device)
        D = Discriminator(size, **kw).to(device) if kind == "train" else None
        times = {}
        flops = None
        for impl in ("ref", fast):
            G.set_impl(impl)
            if D is not None:
                D.set_impl(impl)
            fn = train_step_fn(G, D, batch, device) if kind == "train" else forward_fn(G, batch, device)
            if impl == fast and device.type != "cuda":
                flops = count_flops(fn)
            times[impl] = timeit(fn, device, args.reps)
        if flops is None:
            G.set_impl("ref")
            if D is not None:
                D.set_impl("ref")
            flops = count_flops(train_step_fn(G, D, batch, device) if kind == "train" else forward_fn(G, batch, device))
        gf = flops / times[fast] / 1e9
        print(f"| {name} | {batch} | {times['ref']:.3f} | {times[fast]:.3f} | {times['ref'] / times[fast]:.2f}x | "
              f"{gf:.0f} | {100 * gf * 1e9 / rate:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
