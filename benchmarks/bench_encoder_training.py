#!/usr/bin/env python
"""Encoder training speed on this machine: seconds per step of each method/stage of a config, run alone with 1 and
with N threads, and two runs side by side (one thread each), so the training plan of a small machine can be chosen
from measurements (scripts/ship_synthfaces.sh runs the shipped models' trainings in pairs).

Each measurement builds the training task exactly as ``scripts/train.py`` does (same config, same losses, data
rendered on the fly), runs ``--warmup`` steps, then times ``--steps`` steps (data loading included). The side-by-side
runs are separate processes started together.

    python benchmarks/bench_encoder_training.py --generator pretrained/synthfaces64_generator.pt
    python benchmarks/bench_encoder_training.py --generator G.pt --runs psp,clcae --pairs psp+clcae --steps 10
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {  # name -> train.py options on top of the config
    "align": {"stage": "align"},
    "psp": {"method": "psp"},
    "e4e": {"method": "e4e"},
    # stage 2 is timed with freshly initialised stage-1 encoders (written to a temporary run folder): its alignment
    # term costs the same as with trained ones
    "clcae": {"method": "clcae"},
}


def _write_untrained_stage1(config: str, generator: str, run: Path) -> None:
    """Write freshly initialised stage-1 image/latent encoders of ``config`` into the run folder ``run``."""
    import torch

    from clcae.training.encoder_loop import build_task, resolve_encoder_options

    opts, _, _ = resolve_encoder_options(dict(stage="align", generator=generator), config=config)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    (run / "checkpoints").mkdir(parents=True)
    task.export_best(run / "checkpoints", {"step": 0, "val": {}, "options": {}})


def time_one(name: str, config: str, generator: str, threads: int, warmup: int, steps: int) -> dict:
    """Seconds per step of run ``name`` in this process."""
    import torch

    from clcae.training.encoder_loop import _train_loader, build_task, resolve_encoder_options
    from clcae.training.state import seed_everything

    torch.set_num_threads(threads)
    given = dict(RUNS[name], generator=generator, threads=threads)
    with tempfile.TemporaryDirectory(prefix="bench_stage1_") as tmp:  # read while the task is built
        if name == "clcae":
            _write_untrained_stage1(config, generator, Path(tmp))
            given["contrastive_image"] = tmp
        opts, _, _ = resolve_encoder_options(given, config=config)
        task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    seed_everything(0)
    batches = iter(_train_loader(task, opts, 0))
    for s in range(warmup):
        task.train_step(next(batches), s)
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        task.train_step(next(batches), s)
    dt = (time.perf_counter() - t0) / steps
    return {"run": name, "threads": threads, "batch": opts.batch, "s_per_step": dt, "img_per_s": opts.batch / dt,
            "config_steps": opts.steps, "hours_for_config_steps": opts.steps * dt / 3600}


def _child(args, name: str, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", name, "--config", args.config, "--generator", args.generator,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a timing process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, help="generator file the encoders invert into")
    p.add_argument("--config", default="synthfaces64", help="training config (default synthfaces64)")
    p.add_argument("--runs", default="align,psp,e4e,clcae", help="runs timed alone, comma-separated")
    p.add_argument("--pairs", default="align+psp,clcae+e4e", help="runs timed side by side, e.g. psp+clcae")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the 'alone, N threads' runs")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(time_one(args.child, args.config, args.generator, args.threads, args.warmup, args.steps)))
        return 0

    rows = []
    names = [n for n in args.runs.split(",") if n]
    for name in names:
        for threads in sorted({1, args.threads}):
            r = _result(_child(args, name, threads))
            r["mode"] = "alone"
            rows.append(r)
            print(f"{name:6s} alone, {threads} thread(s): {r['s_per_step']:.2f} s/step ({r['img_per_s']:.1f} img/s)",
                  flush=True)
    for pair in [q for q in args.pairs.split(",") if q]:
        a, b = pair.split("+")
        procs = [_child(args, a, 1), _child(args, b, 1)]
        for r in map(_result, procs):
            r["mode"] = f"side by side ({pair})"
            rows.append(r)
            print(f"{r['run']:6s} side by side ({pair}), 1 thread: {r['s_per_step']:.2f} s/step "
                  f"({r['img_per_s']:.1f} img/s)", flush=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "generator": args.generator, "config": args.config, "warmup": args.warmup, "steps": args.steps,
              "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
