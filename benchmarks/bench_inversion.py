"""Inference speed of the encoder-based inverters: the official-style reference path vs the faster configurations.

One process, one table. For each model (the official CLCAE FFHQ-1024 network regenerated from ``../shared/compat/``
into a temporary folder, optionally cars-512, pSp and e4e; the shipped 64 px SynthFaces models) and batch size, each
configuration inverts the same batch; the components (encoder, each generator pass) are timed inside that one call.
Configurations run **alternately** (ref, fast, ref, fast, ...) and the medians are reported, so that on a shared
machine both see the same load; read the ratios, not the absolute times.

    python benchmarks/bench_inversion.py --threads 2                 # ffhq1024 + shipped 64 px, batch 1 and 4
    python benchmarks/bench_inversion.py --quick                     # ffhq1024 batch 1 + shipped CLCAE batch 1
    python benchmarks/bench_inversion.py --models ffhq1024,cars512,psp1024,e4e1024 --json out.json

Configurations (``--configs``):

- ``ref``: ``set_impl('ref')``, fp32, contiguous: the official arithmetic (grouped modulated convolution, FIR
  filters as one single-channel convolution over all maps, batch norms as separate layers);
- ``fast``: ``impl='auto'``, fp32, contiguous activations (equal to ``ref`` within 1e-4: the parity tests);
- ``fast-cl``: ``fast`` with channels-last activations: the default on a CPU (``memory_format=None``);
- ``bf16``: ``fast-cl`` with ``precision='bf16'`` (opt-in; its error against fp32 is printed below the table);
- ``onnxruntime``: the exported graph (encoder and every generator pass, ``clcae.export``) run by ONNX Runtime
  (needs the ``[export]`` extra; total only).

Per row: seconds per image (median over ``--reps``), speed-up against the ``ref`` row of the same model and batch,
GFLOP/s achieved (FLOPs counted once by ``torch.utils.flop_counter`` on the arithmetic the network does) and that
as a share of this run's own 2048^2 matmul and 3x3-convolution rates, and the peak resident memory of the process
while that configuration ran (Linux: ``/proc/self/clear_refs``; else the process peak).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clcae.export import output_names

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO.parent / "shared" / "compat"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
#: name -> (how to obtain the checkpoint, default generator file or None)
MODELS = {
    "ffhq1024": ("regen_clcae", "ffhq1024", "keys_clcae_afpsp_ffhq1024.tsv", 20231),
    "cars512": ("regen_clcae", "car512", "keys_clcae_afpsp_car512.tsv", 20232),
    "psp1024": ("regen_psp", "psp_ffhq1024", "keys_psp_full_ffhq1024.tsv", 20241),
    "e4e1024": ("regen_psp", "e4e_ffhq1024", "keys_psp_full_ffhq1024.tsv", 20242),
    "clcae64": ("shipped", "synthfaces64_clcae.pt"),
    "psp64": ("shipped", "synthfaces64_psp.pt"),
    "e4e64": ("shipped", "synthfaces64_e4e.pt"),
}
CONFIGS = ("ref", "fast", "fast-cl", "bf16", "onnxruntime")


# ------------------------------------------------------------------------------------------------ machine
def cpu_info() -> dict:
    """CPU model, the vector/matrix features in /proc/cpuinfo, and the kernel level torch dispatches to."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 platform.processor())
    flags = set(next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "").split())
    return {"model": model, "features": [f for f in CPU_FLAGS if f in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count()}


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, reps: int = 3) -> float:
    fn()
    ts = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def machine_rates(dtype=torch.float32, device=torch.device("cpu")) -> dict:
    """GFLOP/s of a 2048^2 matmul (8192^2 on a GPU) and of a 3x3 convolution (256 -> 256 channels, 64x64, batch 1;
    batch 32 on a GPU; channels-last) in ``dtype``, measured now."""
    n, batch = (8192, 32) if device.type == "cuda" else (2048, 1)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    mm = 2 * n ** 3 / _timed(lambda: a @ b, device)
    x = torch.randn(batch, 256, 64, 64, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    conv = 2 * batch * 256 * 256 * 9 * 64 * 64 / _timed(lambda: F.conv2d(x, w, padding=1), device)
    return {"matmul": mm / 1e9, "conv3x3": conv / 1e9}


@contextlib.contextmanager
def peak_rss(device: torch.device = torch.device("cpu")):
    """Yields a dict whose 'mb' is the peak resident memory (MiB) while the block ran (process peak where the
    kernel cannot reset it); on a GPU, the peak of the memory torch allocated there."""
    out = {"mb": float("nan")}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        try:
            yield out
        finally:
            out["mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    try:
        yield out
    finally:
        if reset:
            for ln in Path("/proc/self/status").read_text().splitlines():
                if ln.startswith("VmHWM:"):
                    out["mb"] = int(ln.split()[1]) / 1024
        else:
            out["mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ models
def obtain(name: str, workdir: Path) -> Path:
    """The checkpoint file of model ``name`` (regenerated into ``workdir`` from ``../shared/compat/``)."""
    spec = MODELS[name]
    if spec[0] == "shipped":
        return REPO / "pretrained" / spec[1]
    kind, preset, keys, seed = spec
    script = COMPAT / ("regen_clcae_checkpoint.py" if kind == "regen_clcae" else "regen_psp_e4e_checkpoint.py")
    out = workdir / preset
    path = out / f"ckpt_{preset}.pt"
    if not path.exists():
        if not script.exists():
            raise SystemExit(f"{script} not found: the official-format models are regenerated from ../shared/compat/")
        subprocess.run([sys.executable, str(script), str(COMPAT / keys), str(seed), "--preset", preset,
                        "--out-dir", str(out)], check=True, stdout=subprocess.DEVNULL)
    return path


def configure(inv, config: str):
    """Put the one inverter instance in ``config`` (every configuration shares the weights)."""
    inv.set_impl("ref" if config == "ref" else "auto")
    inv.set_precision("bf16" if config == "bf16" else "fp32")
    inv.set_memory_format(torch.channels_last if config in ("fast-cl", "bf16") else torch.contiguous_format)


class ComponentTimer:
    """Wraps the encoder's forward and the generator's synthesis of one inverter and records how long each call
    took: 'encoder', and one entry per generator pass ('wplus_f', 'wplus', 'w')."""

    def __init__(self, inv, device: torch.device):
        self.times: dict[str, float] = {}
        enc, G = inv.encoder, inv.decoder
        enc_forward, synthesis = enc.forward, G.synthesis

        def timed_encoder(*a, **k):
            sync(device)
            t = time.perf_counter()
            out = enc_forward(*a, **k)
            sync(device)
            self.times["encoder"] = self.times.get("encoder", 0.0) + time.perf_counter() - t
            return out

        def timed_synthesis(ws, *a, **k):
            name = "wplus_f" if k.get("features_in") else ("w" if ws.ndim == 2 else "wplus")
            sync(device)
            t = time.perf_counter()
            out = synthesis(ws, *a, **k)
            sync(device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t
            return out

        enc.forward, G.synthesis = timed_encoder, timed_synthesis

    def reset(self):
        self.times = {}


def count_flops(inv, x, avg) -> dict[str, float]:
    """FLOPs per component for one call on ``x`` (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    enc, G = inv.encoder, inv.decoder
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            dwf = enc(x - avg) if inv.arch == "clcae" else enc(x)
        flops["encoder"] = fc.get_total_flops()
        if inv.arch == "clcae":
            dw, offsets, f = dwf
            w = dw + inv.latent_avg
            wplus = offsets + w.unsqueeze(1)
            with FlopCounterMode(display=False) as fc:
                G.synthesis(wplus, features_in={inv.idx_k: f})
            flops["wplus_f"] = flops["wplus"] = flops["w"] = fc.get_total_flops()
        else:
            with FlopCounterMode(display=False) as fc:
                G.synthesis(dwf)
            flops["wplus"] = fc.get_total_flops()
    return flops


def onnx_session(inv, workdir: Path, batch: int):
    """An ONNX Runtime session of the inverter's W+F graph (``scripts/export.py``'s export), or None."""
    import warnings

    from clcae.export import export_onnx, ort_session

    warnings.filterwarnings("ignore", module="torch.onnx")
    try:
        path = workdir / f"inverter_{inv.arch}_{inv.decoder.size}_b{batch}_all.onnx"
        if not path.exists():  # every image the method renders, as inv.invert(x) does: 'total' compares
            export_onnx(inv, path, batch=batch, image=inv.image_names)
        return ort_session(path)
    except Exception as e:  # a missing extra, or an export this model does not support: the row is left out
        print(f"# onnxruntime row skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None


# ------------------------------------------------------------------------------------------------ main
def run_case(name: str, path: Path, batch: int, configs: list[str], reps: int, rates: dict, workdir: Path,
             device: torch.device = torch.device("cpu")) -> list:
    import clcae

    inv = clcae.load_inverter(path, device=device)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, *inv.input_size, generator=g) * 2 - 1).to(device)
    avg = inv.average_image() if inv.arch == "clcae" else None
    flops = count_flops(inv, x, avg if avg is not None else 0)
    timer = ComponentTimer(inv, device)
    session = onnx_session(inv, workdir, batch) if "onnxruntime" in configs and device.type == "cpu" else None
    samples = {c: [] for c in configs}
    peaks = {c: 0.0 for c in configs}
    outputs = {}
    loads = []
    for rep in range(reps + 1):  # the first round warms up every configuration
        for config in configs:
            if config == "onnxruntime":
                if session is None:
                    continue
                feed = {"image": x.numpy()}
                with peak_rss(device) as mem:
                    t = time.perf_counter()
                    res = session.run(None, feed)
                    total = time.perf_counter() - t
                times = {"total": total}
                names = list(output_names(inv, inv.image_names))
                outputs[config] = torch.from_numpy(res[names.index(f"image_{inv.image_names[0]}")])
            else:
                configure(inv, config)
                timer.reset()
                with peak_rss(device) as mem:
                    sync(device)
                    t = time.perf_counter()
                    out = inv.invert(x)
                    sync(device)
                    total = time.perf_counter() - t
                times = dict(timer.times, total=total)
                outputs[config] = out["image_wplus_f" if inv.arch == "clcae" else "image_wplus"]
            if rep:
                samples[config].append(times)
                peaks[config] = max(peaks[config], mem["mb"])
        loads.append(loadavg())
    rows = []
    ref = samples.get("ref") and {k: statistics.median(s[k] for s in samples["ref"]) for k in samples["ref"][0]}
    for config in configs:
        if not samples[config]:
            continue
        med = {k: statistics.median(s[k] for s in samples[config]) for k in samples[config][0]}
        total_flops = sum(flops.values())
        if inv.arch == "clcae":
            med["wplus_f_only"] = med["encoder"] + med["wplus_f"] if "encoder" in med else float("nan")
        row = {"model": name, "arch": inv.arch, "size": inv.decoder.size, "batch": batch, "config": config,
               "s_per_img": {k: v / batch for k, v in med.items()},
               "speedup": {k: ref[k] / med[k] for k in med if ref and k in ref} if ref else {},
               "gflops": total_flops / med["total"] / 1e9 if med["total"] else float("nan"),
               "peak_rss_mb": peaks[config], "load_avg": statistics.median(loads)}
        if inv.arch == "clcae" and ref and "wplus_f_only" in med:
            row["speedup"]["wplus_f_only"] = (ref["encoder"] + ref["wplus_f"]) / med["wplus_f_only"]
        rate = rates["bf16" if config == "bf16" else "fp32"]
        row["pct_matmul"] = 100 * row["gflops"] / rate["matmul"]
        row["pct_conv"] = 100 * row["gflops"] / rate["conv3x3"]
        if config != "ref" and "ref" in outputs:
            d = (outputs[config].float().cpu() - outputs["ref"].float().cpu())
            peak = outputs["ref"].float().abs().max().item()
            mse = d.pow(2).mean().item()
            row["max_abs_err_vs_ref"] = d.abs().max().item()
            row["psnr_vs_ref_db"] = 10 * math.log10(peak ** 2 / mse) if mse > 0 else float("inf")
        rows.append(row)
    del inv
    return rows


def fmt_table(rows: list) -> str:
    comps = ["encoder", "wplus_f", "wplus", "w", "wplus_f_only", "total"]
    head = ("| model | batch | config | " + " | ".join(f"{c} s/img (x)" for c in comps)
            + " | GFLOP/s | % matmul | % conv3x3 | peak RSS MiB | max abs err vs ref | PSNR dB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = []
        for c in comps:
            v = r["s_per_img"].get(c)
            sp = r["speedup"].get(c)
            cells.append("" if v is None else (f"{v:.3f}" + (f" ({sp:.2f}x)" if sp else "")))
        err = r.get("max_abs_err_vs_ref")
        psnr = r.get("psnr_vs_ref_db")
        lines.append(f"| {r['model']} | {r['batch']} | {r['config']} | " + " | ".join(cells)
                     + f" | {r['gflops']:.1f} | {r['pct_matmul']:.0f}% | {r['pct_conv']:.0f}% | "
                     f"{r['peak_rss_mb']:.0f} | {'' if err is None else f'{err:.2e}'} | "
                     f"{'' if psnr is None else f'{psnr:.1f}'} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="ffhq1024,clcae64,psp64,e4e64",
                   help=f"comma list from {','.join(MODELS)} (default ffhq1024,clcae64,psp64,e4e64)")
    p.add_argument("--batches", default="1,4", help="comma list of batch sizes (default 1,4)")
    p.add_argument("--configs", default="ref,fast,fast-cl,bf16", help=f"comma list from {','.join(CONFIGS)}")
    p.add_argument("--reps", type=int, default=3, help="timed rounds after one warm-up round (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N] (TF32 off, as the parity tests)")
    p.add_argument("--quick", action="store_true",
                   help="ffhq1024 and clcae64 at batch 1, configs ref,fast,bf16, 2 rounds")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the regenerated checkpoints go (default a temporary folder, removed at the end)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.configs, args.reps = "ffhq1024,clcae64", "1", "ref,fast,bf16", 2
    for m in args.models.split(","):
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for c in args.configs.split(","):
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")
    if args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    info = cpu_info()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    load0 = loadavg()
    rates = {"fp32": machine_rates(torch.float32, device)}
    rates["bf16"] = machine_rates(torch.bfloat16, device) if "bf16" in args.configs else rates["fp32"]
    gpu = f"  GPU {info['gpu']} (peak memory = GPU memory)" if "gpu" in info else ""
    header = (f"# bench_inversion  {datetime.date.today()}  {info['model']}  features: "
              f"{' '.join(info['features']) or 'none'}  (torch kernels {info['torch_capability']}, "
              f"{info['cores']} cores)  torch {torch.__version__}  threads {args.threads}{gpu}\n"
              f"# matmul {rates['fp32']['matmul']:.0f} GFLOP/s fp32, {rates['bf16']['matmul']:.0f} bf16; "
              f"3x3 conv {rates['fp32']['conv3x3']:.0f} fp32, {rates['bf16']['conv3x3']:.0f} bf16; "
              f"load average at start {load0:.1f}")
    print(header, flush=True)
    rows = []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_inversion_")))
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            path = obtain(name, workdir)
            for batch in (int(b) for b in args.batches.split(",")):
                case = run_case(name, path, batch, args.configs.split(","), args.reps, rates, workdir, device)
                rows += case
                print(fmt_table(case).split("\n", 2)[-1], flush=True)
    load1 = loadavg()
    print(f"\n# load average at end {load1:.1f}; medians of {args.reps} alternating rounds; (x) = speed-up vs the "
          f"ref row of the same model and batch; wplus_f_only = encoder + the W+F pass (what "
          f"invert(images=('wplus_f',)) runs)\n")
    print(fmt_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"date": str(datetime.date.today()), "cpu": info, "device": str(device),
                                         "torch": torch.__version__,
                                         "threads": args.threads, "rates_gflops": rates,
                                         "load_avg": [load0, load1], "reps": args.reps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
