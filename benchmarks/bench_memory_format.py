"""Training-step time of the networks the project trains in channels-last, side by side in one run:
contiguous format vs channels-last with the guard of :mod:`clcae.networks.memory_format` (small strided 1x1
convolutions kept contiguous on the CPU, issue 25).

    python benchmarks/bench_memory_format.py --threads 1 --repeats 5

Rows: the shipped SynthFaces domain network (its default options, batch 64) and the SynthFaces discriminator
(R1 step at 64 px, batch 16). Prints the CPU model and features, the median step time of each format (the two run
alternately) and the ratio. Nothing here is timed in the tests.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch
import torch.nn.functional as F

from clcae.doctor import cpu_flags
from clcae.networks.domain import DomainNet
from clcae.networks.memory_format import guarded_convolutions, to_channels_last
from clcae.networks.stylegan2 import Discriminator


def cpu_description() -> str:
    """CPU model and the vector features that decide oneDNN's kernels (read by ``clcae doctor``'s parser)."""
    info = cpu_flags()
    present = [f for f, on in info["flags"].items() if on]
    return f"{info['model'] or 'unknown CPU'} ({', '.join(present) or 'no AVX2'})"


def time_pair(a, b, repeats: int) -> tuple[float, float]:
    """Median step times of ``a`` and ``b``, run alternately so that a busy machine slows both alike."""
    a(), b()  # warm-up (oneDNN primitive creation)
    ta, tb = [], []
    for _ in range(repeats):
        for step, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def domain_step(channels_last: bool):
    torch.manual_seed(0)
    net = DomainNet().train()
    if channels_last:
        to_channels_last(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(64, 3, 64, 64) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        out = net(x)
        loss = out["embed"].square().mean() + out["attribute_logits"].square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, guarded_convolutions(net)


def discriminator_step(channels_last: bool):
    torch.manual_seed(0)
    D = Discriminator(64, channel_base=8192, channel_max=128)
    if channels_last:
        to_channels_last(D)
    x = torch.rand(16, 3, 64, 64) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        real = x.detach().requires_grad_()
        logits = D(real)
        (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
        loss = F.softplus(logits).mean() + grad.square().sum([1, 2, 3]).mean()
        D.zero_grad(set_to_none=True)
        loss.backward()
    return step, guarded_convolutions(D)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{datetime.date.today()}  torch {torch.__version__}  {cpu_description()}  threads {args.threads}\n")
    print("| network (training step) | contiguous s | channels-last (guarded) s | ratio | guarded convs |")
    print("|---|---|---|---|---|")
    for name, make in (("domain network, batch 64", domain_step), ("discriminator + R1, 64 px, batch 16",
                                                                  discriminator_step)):
        plain, _ = make(False)
        cl, guarded = make(True)
        t0, t1 = time_pair(plain, cl, args.repeats)
        print(f"| {name} | {t0:.3f} | {t1:.3f} | {t0 / t1:.2f}x | {len(guarded)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
