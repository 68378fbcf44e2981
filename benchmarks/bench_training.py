#!/usr/bin/env python
"""Training speed, side by side (issue 20): the generator training step and the CLCAE stage-2 step.

Two workloads, each timed as several variants in turn (A, B, C, A, B, C, ...; one warm-up round, then ``--rounds``
timed rounds, medians), so every variant sees the same load of a shared machine:

- ``generator``: ``StyleGAN2Trainer.train_step`` with the shipped SynthFaces recipe
  (``configs/generator_synthfaces64_shipped.yaml``: 64 px, batch 16, style 128, 64 channels, StyleGAN2 D, R1 every
  16 and path length every 4 steps). Variants: ``ref`` (``impl='ref'``, the official arithmetic) and ``fast``
  (``impl='auto'``, the default). Each round times the three kinds of step (main only; main + path length; main +
  R1 + path length) and reports their mean over a lazy-regularisation cycle, ``(12 main + 3 pl + 1 both) / 16``.
- ``clcae-parts``: the pieces of that step on their own (the losses on 48 renders per render / stacked / with a
  shared trunk / in channels-last; the three generator passes, the encoder and the stage-1 image encoder in
  contiguous and channels-last form), to say what each change bought.
- ``clcae``: ``CLCAETask.train_step`` with ``configs/synthfaces64.yaml`` and ``--method clcae`` (three generator
  passes with L2, domain perceptual and identity losses, feature matching, alignment through the shipped stage-1
  encoders), batch 16. Variants: ``fast`` (the default), ``plain`` (``InversionTask.fast_step = False``: one loss
  call per render, contiguous generator).

``--baseline REV`` adds the variants of another commit (``git archive REV`` into a temporary folder), named
``REV:variant``, run by a second process that takes its turn like the others: e.g. ``--baseline HEAD~3`` measures
today's default against the default before this work. Variants of one code version share one process; only one
process runs at a time.

    python benchmarks/bench_training.py generator --threads 1 --rounds 3
    python benchmarks/bench_training.py clcae --threads 1 --rounds 5 --baseline 26dbb0c
    python benchmarks/bench_training.py clcae-parts --threads 1 --rounds 5
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_KINDS = {"main": (1, 12), "pl": (4, 3), "r1+pl": (16, 1)}  # trainer.step that selects it, count per 16 steps


# ------------------------------------------------------------------------------------------------- worker side
def _generator_variants(names: list[str]) -> dict:
    import torch

    from clcae.training.gan import StyleGAN2Trainer, load_generator_config, resolve_options

    real = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    out = {}
    for name in names:
        given = load_generator_config("generator_synthfaces64_shipped")
        given.update(impl="ref" if name == "ref" else "auto", workers=0)
        opts, _, _ = resolve_options(given)
        out[name] = (StyleGAN2Trainer(opts, torch.device("cpu")), real)
    return out


def _time_generator(variant) -> dict:
    trainer, real = variant
    times = {}
    for kind, (step, _) in STEP_KINDS.items():
        trainer.step = step
        t = time.perf_counter()
        trainer.train_step(real)
        times[kind] = time.perf_counter() - t
    times["cycle"] = sum(times[k] * n for k, (_, n) in STEP_KINDS.items()) / 16
    return times


def _clcae_variants(names: list[str]) -> dict:
    import torch

    from clcae.training.encoder_loop import _train_loader, build_task, resolve_encoder_options

    given = dict(method="clcae", generator="pretrained/synthfaces64_generator.pt", threads=torch.get_num_threads(),
                 contrastive_image=str(REPO / "pretrained" / "synthfaces64_clcae_stage1"))
    out = {}
    for name in names:
        opts, _, _ = resolve_encoder_options(given, config="synthfaces64")
        torch.manual_seed(0)
        if name == "plain":
            from clcae.training.inversion import InversionTask

            if not hasattr(InversionTask, "fast_step"):
                raise SystemExit("variant 'plain' needs InversionTask.fast_step (not in this code version)")
            InversionTask.fast_step = False  # read when the task is built
        task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
        if name == "plain":
            InversionTask.fast_step = True
        batches = iter(_train_loader(task, opts, 0))
        out[name] = [task, [next(batches) for _ in range(2)], 1000]
    return out


def _time_clcae(variant, steps: int = 2) -> dict:
    task, batches, step = variant
    t = time.perf_counter()
    for i in range(steps):
        task.train_step(batches[i % len(batches)], step + i)
    variant[2] += steps
    return {"step": (time.perf_counter() - t) / steps}


def _parts_variants(names: list[str]) -> dict:
    """The pieces of the CLCAE stage-2 step, each in two forms (``name`` and ``name+``), forward + backward."""
    import copy

    import torch

    from clcae.checkpoints import load_generator
    from clcae.losses.identity import DomainIdentity
    from clcae.losses.perceptual import DomainPerceptualLoss
    from clcae.networks.memory_format import to_channels_last
    from clcae.training.encoder_loop import build_task, resolve_encoder_options

    given = dict(method="clcae", generator="pretrained/synthfaces64_generator.pt", threads=torch.get_num_threads(),
                 contrastive_image=str(REPO / "pretrained" / "synthfaces64_clcae_stage1"))
    opts, _, _ = resolve_encoder_options(given, config="synthfaces64")
    from clcae.training.inversion import InversionTask

    InversionTask.fast_step = False  # contiguous networks, converted below where a variant wants it
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    InversionTask.fast_step = True
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 64, 64, generator=g) * 2 - 1
    renders = torch.rand(48, 3, 64, 64, generator=g) * 2 - 1
    G = load_generator(opts.generator)
    net = task.perceptual.domain_net
    net_cl = to_channels_last(copy.deepcopy(net))
    enc = task.inverter.encoder.train()
    enc_cl = to_channels_last(copy.deepcopy(enc))
    e_i = task.E_I
    e_i_cl = to_channels_last(copy.deepcopy(e_i))

    def losses(kind):
        o = renders.clone().requires_grad_(True)
        P, I = DomainPerceptualLoss(net), DomainIdentity(net)
        if kind == "per-render":  # the plain step: one call per render, the target recomputed in each
            total = sum(P(r, x).mean() + I(r, x).mean() for r in o.chunk(3))
        elif kind == "stacked":  # one call on the stacked renders, the target's features once
            total = P.to_target(o, P.target(x)).mean() + I.to_target(o, I.target(x)).mean()
        else:  # + one trunk pass for both losses (shared), optionally in channels-last
            n = net_cl if kind == "shared-cl" else net
            P, I = DomainPerceptualLoss(n), DomainIdentity(n)
            with torch.no_grad():
                tm = n.trunk_features(x)
            m = n.trunk_features(o)
            total = P.to_target(o, P.target(x, maps=tm), maps=m).mean() + I.to_target(
                o, I.target(x, maps=tm), maps=m).mean()
        total.backward()

    def generator(fmt):
        G.set_memory_format(fmt)
        ws = G.latent_avg + 0.1 * torch.randn(16, G.n_latent, G.style_dim, generator=g)
        ws.requires_grad_(True)
        sum(G.synthesis(ws, noise_mode="random").square().mean() for _ in range(3)).backward()

    def encoder(module, fmt):
        dw, off, f = module(x.contiguous(memory_format=fmt))
        (dw.square().mean() + off.square().mean() + f.square().mean()).backward()

    def stage1(module, fmt):
        module(renders[:16].contiguous(memory_format=fmt).requires_grad_(True)).square().mean().backward()

    cl, nchw = torch.channels_last, torch.contiguous_format
    table = {"losses:per-render": lambda: losses("per-render"), "losses:stacked": lambda: losses("stacked"),
             "losses:shared": lambda: losses("shared"), "losses:shared-cl": lambda: losses("shared-cl"),
             "generator:contiguous": lambda: generator(nchw), "generator:channels-last": lambda: generator(cl),
             "encoder:contiguous": lambda: encoder(enc, nchw), "encoder:channels-last": lambda: encoder(enc_cl, cl),
             "stage1-image-encoder:contiguous": lambda: stage1(e_i, nchw),
             "stage1-image-encoder:channels-last": lambda: stage1(e_i_cl, cl)}
    return {n: table[n] for n in names}


def _time_part(fn) -> dict:
    t = time.perf_counter()
    fn()
    return {"s": time.perf_counter() - t}


def worker(workload: str, names: list[str], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    build = {"generator": _generator_variants, "clcae": _clcae_variants, "clcae-parts": _parts_variants}[workload]
    variants = build(names)
    timer = {"generator": _time_generator, "clcae": _time_clcae, "clcae-parts": _time_part}[workload]
    print(json.dumps({"ready": names, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        print(json.dumps(timer(variants[name])), flush=True)


# ------------------------------------------------------------------------------------------------- parent side
class Worker:
    def __init__(self, tree: Path, workload: str, names: list[str], threads: int):
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads),
                   CLCAE_PRETRAINED_DIR=str(REPO / "pretrained"))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", workload, "--variants", ",".join(names),
               "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(REPO))
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"a timing process failed (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def time(self, name: str) -> dict:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait()


def _export(rev: str, into: Path) -> Path:
    """The package and configs of commit ``rev`` in ``into`` (git archive; the working tree is not touched)."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "clcae", "configs"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    keep = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                      "amx_bf16", "amx_tile", "amx_int8")]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(keep) or '(none of avx2/avx512/amx)'}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", nargs="?", choices=("generator", "clcae", "clcae-parts"))
    p.add_argument("--variants", default=None, help="comma-separated (generator: ref,fast; clcae: fast,plain)")
    p.add_argument("--baseline", default=None, help="also time the default ('fast') of this commit, e.g. HEAD~3")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.variants.split(","), args.threads)
        return 0
    if args.workload is None:
        p.error("name a workload: generator or clcae")
    default = {"generator": "ref,fast", "clcae": "fast,plain", "clcae-parts": ",".join(PARTS)}[args.workload]
    names = (args.variants or default).split(",")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        workers = {name: w for w in [Worker(REPO, args.workload, names, args.threads)] for name in names}
        variant = {name: name for name in names}  # shown name -> the worker's name for it
        if args.baseline:
            base = Worker(_export(args.baseline, Path(tmp)), args.workload, ["fast"], args.threads)
            workers[f"{args.baseline}:fast"] = base
            variant[f"{args.baseline}:fast"] = "fast"
        order = list(workers)
        results: dict[str, list[dict]] = {n: [] for n in order}
        loads = []
        for r in range(args.rounds + 1):
            line = []
            for name in order:
                times = workers[name].time(variant[name])
                if r:
                    results[name].append(times)
                line.append(f"{name} {_fmt(times)}")
            loads.append(os.getloadavg()[0])
            print(f"round {r}{' (warm-up)' if not r else ''}: " + "; ".join(line), flush=True)
        for w in set(workers.values()):
            w.close()
    med = {n: {k: statistics.median(t[k] for t in results[n]) for k in results[n][0]} for n in order}
    if args.workload == "clcae-parts":
        _print_parts(args, med, load_start, loads, workers[order[0]].info["torch"])
        return 0
    key = "cycle" if args.workload == "generator" else "step"
    ref_name = "ref" if args.workload == "generator" and "ref" in order else order[-1]
    torch_version = workers[order[0]].info["torch"]
    print(f"\n# bench_training {args.workload}  {datetime.datetime.now().isoformat(timespec='minutes')}  "
          f"{_machine()}  torch {torch_version}  threads {args.threads}  rounds {args.rounds} (+1 warm-up)  "
          f"load average {load_start[0]:.1f} at the start, {min(loads):.1f}-{max(loads):.1f} during")
    kinds = list(med[order[0]])
    print("| variant | " + " | ".join(f"{k} s" for k in kinds) + f" | speed-up vs {ref_name} ({key}) |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for n in order:
        print(f"| {n} | " + " | ".join(f"{med[n][k]:.3f}" for k in kinds)
              + f" | {med[ref_name][key] / med[n][key]:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"workload": args.workload, "machine": _machine(),
                                               "torch": torch_version, "threads": args.threads,
                                               "load_start": load_start, "loads": loads, "results": results,
                                               "medians": med}, indent=2))
    return 0


def _print_parts(args, med: dict, load_start, loads, torch_version: str) -> None:
    print(f"\n# bench_training clcae-parts  {datetime.datetime.now().isoformat(timespec='minutes')}  {_machine()}  "
          f"torch {torch_version}  threads {args.threads}  rounds {args.rounds} (+1 warm-up)  load average "
          f"{load_start[0]:.1f} at the start, {min(loads):.1f}-{max(loads):.1f} during")
    print("| piece (forward + backward, batch 16; losses on 48 renders) | form | s | vs the first form |")
    print("|---|---|---|---|")
    first: dict[str, float] = {}
    for name, t in med.items():
        piece, form = name.split(":")
        first.setdefault(piece, t["s"])
        print(f"| {piece} | {form} | {t['s']:.3f} | {first[piece] / t['s']:.2f}x |")


PARTS = ("losses:per-render", "losses:stacked", "losses:shared", "losses:shared-cl", "generator:contiguous",
         "generator:channels-last", "encoder:contiguous", "encoder:channels-last", "stage1-image-encoder:contiguous",
         "stage1-image-encoder:channels-last")


def _fmt(times: dict) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in times.items())


if __name__ == "__main__":
    sys.exit(main())
