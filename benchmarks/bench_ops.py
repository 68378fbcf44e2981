"""Time the custom ops (``upfirdn2d``, fused bias + leaky ReLU) of every available implementation.

    python benchmarks/bench_ops.py --device cpu
    python benchmarks/bench_ops.py --device cuda --dtype float16

Needs the package importable (``pip install -e .`` or ``PYTHONPATH=.``). Shapes are the ones a StyleGAN2 generator/discriminator feeds the ops (scaled by --batch/--channels/--res).
Prints a Markdown table: the median time per call of the forward pass and of forward + backward, and the speed-up
over ``ref`` measured in the same run. The CUDA implementation is built in strict mode: a failed build is an error
here, never a silent fallback.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from clcae.ops import fused_leaky_relu, set_strict, upfirdn2d

BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0])


@dataclass
class Case:
    op: str  # "upfirdn2d" or "fused_leaky_relu"
    label: str
    shape: tuple[int, ...]
    kwargs: dict


def stylegan2_cases(batch: int, channels: int, res: int) -> list[Case]:
    """The calls a StyleGAN2 block at resolution ``res`` makes (rosinality's layers, NVIDIA's 4x4 [1,3,3,1] kernel)."""
    blur = BLUR.outer(BLUR) / BLUR.sum() ** 2
    half = res // 2
    return [
        Case("upfirdn2d", "up=2, 4x4 (ToRGB skip)", (batch, 3, half, half), dict(kernel=blur * 4, up=2, pad=(2, 1, 2, 1))),
        Case("upfirdn2d", "up=2, 4x4 (features)", (batch, channels, half, half),
             dict(kernel=blur * 4, up=2, pad=(2, 1, 2, 1))),
        Case("upfirdn2d", "blur after conv-transpose", (batch, channels, res + 1, res + 1),
             dict(kernel=blur * 4, pad=(1, 1, 1, 1))),
        Case("upfirdn2d", "blur before stride-2 conv", (batch, channels, res, res), dict(kernel=blur, pad=(2, 2, 2, 2))),
        Case("upfirdn2d", "down=2, 4x4", (batch, channels, res, res), dict(kernel=blur, down=2, pad=(1, 1, 1, 1))),
        Case("fused_leaky_relu", "bias + lrelu (conv output)", (batch, channels, res, res), {}),
        Case("fused_leaky_relu", "bias + lrelu (mapping MLP)", (batch * 64, channels), {}),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def make_calls(case: Case, impl: str, device: torch.device, dtype: torch.dtype):
    """``(forward, forward_backward)`` closures for one case and implementation."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=gen).to(device, dtype)
    if case.op == "upfirdn2d":
        kernel = case.kwargs["kernel"].to(device)
        kw = {k: v for k, v in case.kwargs.items() if k != "kernel"}
        op = lambda t: upfirdn2d(t, kernel, impl=impl, **kw)  # noqa: E731
        params = [x.requires_grad_(True)]
    else:
        bias = torch.randn(case.shape[1], generator=gen).to(device, dtype)
        op = lambda t: fused_leaky_relu(t, bias, 0.2, math.sqrt(2), impl=impl)  # noqa: E731
        params = [x.requires_grad_(True), bias.requires_grad_(True)]
    with torch.no_grad():
        grad_out = torch.randn_like(op(x))

    def forward():
        with torch.no_grad():
            return op(x)

    def forward_backward():
        y = op(x)
        return torch.autograd.grad(y, params, grad_out)

    return forward, forward_backward


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads ({os.cpu_count()} logical cores)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], default="float32")
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on cpu, 8 on cuda")
    parser.add_argument("--channels", type=int, default=None, help="default: 64 on cpu, 256 on cuda")
    parser.add_argument("--res", type=int, default=None, help="feature-map resolution; default: 64 on cpu, 128 on cuda")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default: 20 cpu, 50 cuda)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 gives steadier numbers on a busy host)")
    parser.add_argument("--impls", default=None, help="comma-separated subset of ref,fast,cuda (default: all available)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    on_gpu = device.type == "cuda"
    batch = args.batch or (8 if on_gpu else 2)
    channels = args.channels or (256 if on_gpu else 64)
    res = args.res or (128 if on_gpu else 64)
    iters = args.iters or (50 if on_gpu else 20)
    dtype = getattr(torch, args.dtype)
    impls = args.impls.split(",") if args.impls else (["ref", "fast", "cuda"] if on_gpu else ["ref", "fast"])
    if "cuda" in impls and not on_gpu:
        parser.error("impl 'cuda' needs --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_strict(True)  # a benchmark must never time a silent fallback

    rows = []
    for case in stylegan2_cases(batch, channels, res):
        case_impls = [i for i in impls if not (case.op == "fused_leaky_relu" and i == "fast")]  # fast == ref there
        results = {}
        for impl in case_impls:
            forward, forward_backward = make_calls(case, impl, device, dtype)
            forward()  # builds the CUDA extension on first use, outside the timing
            results[impl] = (median_time(forward, device, args.warmup, iters),
                             median_time(forward_backward, device, args.warmup, iters))
        base = results.get("ref")
        for impl, (fwd, fwd_bwd) in results.items():
            rows.append((case.op, case.label, "x".join(map(str, case.shape)), impl,
                         f"{fwd:.3f}", f"{base[0] / fwd:.2f}x" if base else "n/a",
                         f"{fwd_bwd:.3f}", f"{base[1] / fwd_bwd:.2f}x" if base else "n/a"))

    cuda_version = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    print("## clcae.ops benchmark\n")
    print(f"- device: {device_description(device)}")
    print(f"- torch {torch.__version__}{cuda_version}, Python {platform.python_version()}")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- dtype {args.dtype}; median of {iters} calls after {args.warmup} warm-up calls; speed-up = time(ref) / "
          f"time(impl), same run\n")
    header = ("op", "case", "input shape", "impl", "forward (ms)", "vs ref", "fwd+bwd (ms)", "vs ref")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 4 + ["---:"] * 4) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
