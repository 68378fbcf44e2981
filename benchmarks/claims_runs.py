#!/usr/bin/env python
"""Train the seed and ablation runs behind the paper-claims tables (issue 23), one after the other, resumably.

Every run is ``scripts/train.py --config synthfaces64 --method M [extra flags] --seed S`` for the same number of
steps (the config's, 1,200 unless ``--steps``), with the run folder ``ROOT/NAME``. A run whose folder holds
``checkpoints/latest.pt`` is resumed (a finished one returns at once), so the queue can be stopped at any point
(Ctrl-C or SIGTERM: the trainer saves ``latest.pt``) and started again with the same command::

    OMP_WAIT_POLICY=PASSIVE nohup python benchmarks/claims_runs.py --threads 1 > runs/claims.log 2>&1 &
    python benchmarks/claims_runs.py --list          # what each run is and whether it is done

Seed 0 of the main rows is the shipped model (``pretrained/synthfaces64_{clcae,psp,e4e}.pt``, trained by the same
command with ``--seed 0``; CLCAE's version 2, the 1,200-step model that version 4 fine-tunes, from git);
``clcae_sharpen_*`` are the version-4 fine-tunes (``--init-weights`` from the run they name); ``--with-seed0`` trains those again as well. The tables are made by ``scripts/eval.py``
on each run's ``checkpoints/best_model.pt`` (see ``--print-eval``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE1 = "pretrained/synthfaces64_clcae_stage1"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    method: str
    seed: int
    flags: tuple[str, ...]
    what: str
    shipped: str = ""   # the shipped model this run reproduces (seed 0 of a main row)
    init: str = ""      # a run of this queue whose best_model.pt starts this one (--init-weights): a fine-tune


def _clcae(*flags: str) -> tuple[str, ...]:
    return ("--contrastive-image", STAGE1) + flags


#: The shipped CLCAE model's second stage (version 4, issue 18): 200 steps against an image discriminator, with
#: attribute consistency, from the 1,200-step model (scripts/ship_synthfaces.sh's SHARPEN)
SHARPEN = ("--adv-lambda", "0.05", "--attr-lambda", "1.0", "--adv-d", "pretrained/training/synthfaces64_generator_latest.pt",
           "--lr", "0.0001", "--feature-ramp", "none", "--steps", "200", "--val-interval", "100", "--save-interval", "100")


#: The candidate improvement (issue 23): the residual F correction at the 16x16 activation
F16 = ("--idx-k", "5")


def plan() -> list[Run]:
    """The runs in the order they are trained: second seeds of the main rows, the detached query, the ablations,
    and last the seed-0 main rows that reproduce the shipped models (trained only with ``--with-seed0``)."""
    shipped = {m: f"pretrained/synthfaces64_{m}.pt" for m in ("clcae", "psp", "e4e")}
    return [
        Run("clcae_s1", "clcae", 1, _clcae(), "CLCAE, the shipped configuration's 1,200 steps (version 2)"),
        Run("clcae_sharpen_s1", "clcae", 1, _clcae(*SHARPEN), "CLCAE version 4: clcae_s1 + the adversarial fine-tune",
            init="clcae_s1"),
        Run("psp_s1", "psp", 1, (), "pSp"),
        Run("e4e_s1", "e4e", 1, (), "e4e"),
        Run("clcae_detach_s0", "clcae", 0, _clcae("--query-grad", "detach"),
            "CLCAE with the cross-attention query detached (claim 1)"),
        Run("clcae_detach_s1", "clcae", 1, _clcae("--query-grad", "detach"),
            "CLCAE with the cross-attention query detached (claim 1)"),
        Run("clcae_nostage1_s0", "clcae", 0, ("--stage2-init", "none", "--contrastive-lambda", "0"),
            "CLCAE without stage 1: trunk from scratch, no alignment term (claim 1)"),
        Run("clcae_noalign_s0", "clcae", 0, _clcae("--contrastive-lambda", "0"),
            "CLCAE with the stage-1 trunk but no alignment term in stage 2 (claim 1)"),
        Run("clcae_noattn_s0", "clcae", 0, _clcae("--no-w-attention"),
            "CLCAE without cross-attention: W+ not predicted from w (claim 2)"),
        # the improvement of our own (issue 23): the F correction at the 16x16 activation (--idx-k 5) instead of the
        # shipped 8x8, then the same adversarial fine-tune; 1,400 steps like the shipped model
        Run("clcae_f16_s0", "clcae", 0, _clcae(*F16), "ours: the F correction at 16x16 (--idx-k 5), 1,200 steps"),
        Run("clcae_f16_sharpen_s0", "clcae", 0, _clcae(*F16, *SHARPEN), "ours: clcae_f16_s0 + the fine-tune",
            init="clcae_f16_s0"),
        Run("clcae_f16_s1", "clcae", 1, _clcae(*F16), "ours: the F correction at 16x16 (--idx-k 5), 1,200 steps"),
        Run("clcae_f16_sharpen_s1", "clcae", 1, _clcae(*F16, *SHARPEN), "ours: clcae_f16_s1 + the fine-tune",
            init="clcae_f16_s1"),
        Run("clcae_s0", "clcae", 0, _clcae(), "CLCAE version 2 (the 1,200-step model version 4 fine-tunes)",
            "4514919:pretrained/synthfaces64_clcae.pt"),
        Run("clcae_sharpen_s0", "clcae", 0, _clcae(*SHARPEN), "CLCAE version 4 (shipped)", shipped["clcae"],
            init="clcae_s0"),
        Run("psp_s0", "psp", 0, (), "pSp", shipped["psp"]),
        Run("e4e_s0", "e4e", 0, (), "e4e", shipped["e4e"]),
    ]


def is_done(run_dir: Path) -> bool:
    log = run_dir / "log.txt"
    # the trainer's last line: "<date> <time> done: N steps; best validation loss ..."
    return log.is_file() and any(" done: " in line for line in log.read_text(errors="replace").splitlines()[-5:])


def command(run: Run, root: Path, threads: int, steps: int | None) -> list[str]:
    run_dir = root / run.name
    cmd = [sys.executable, "scripts/train.py"]
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += ["--config", "synthfaces64", "--method", run.method, *run.flags, "--seed", str(run.seed),
                "--out", str(run_dir)]
        if run.init:
            cmd += ["--init-weights", str(root / run.init / "checkpoints" / "best_model.pt")]
        elif steps:  # a fine-tune keeps its own length
            cmd += ["--steps", str(steps)]
    return cmd + ["--threads", str(threads)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/claims", help="folder of the run folders (default: runs/claims)")
    p.add_argument("--threads", type=int, default=1, help="threads per training run (default 1)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="train only these runs")
    p.add_argument("--with-seed0", action="store_true",
                   help="also train the seed-0 main rows instead of using the shipped models")
    p.add_argument("--list", action="store_true", help="list the runs and their state, train nothing")
    p.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    p.add_argument("--print-eval", action="store_true", help="print the eval.py command for the finished runs")
    args = p.parse_args(argv)
    root = Path(args.root)
    runs = plan()
    names = {r.name for r in runs}
    if args.only:
        unknown = sorted(set(args.only) - names)
        if unknown:
            p.error(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        runs = [r for r in runs if r.name in args.only]
    elif not args.with_seed0:
        runs = [r for r in runs if not r.shipped]

    if args.list:
        for r in plan():
            state = ("shipped: " + r.shipped if r.shipped and not (root / r.name).exists() else
                     "done" if is_done(root / r.name) else
                     "started" if (root / r.name / "checkpoints" / "latest.pt").is_file() else "to do")
            print(f"{r.name:20s} {state:45s} {r.what}")
        return 0
    if args.print_eval:
        methods = []
        for r in plan():
            ckpt = root / r.name / "checkpoints" / "best_model.pt"
            if is_done(root / r.name):
                methods.append(f"--method {r.name}={ckpt}")
            elif ":" in r.shipped:   # REV:PATH, a model shipped before: written out of git first
                print(f"git show {r.shipped} > {root / (r.name + '.pt')}")
                methods.append(f"--method {r.name}={root / (r.name + '.pt')}")
            elif r.shipped:
                methods.append(f"--method {r.name}={r.shipped}")
        print("python scripts/eval.py " + " ".join(methods) + " --data synthfaces --n 500 --save-images 16 "
              "--threads 1 --out runs/claims-table")
        return 0

    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True   # the child got the same signal from the process group and saves latest.pt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    for r in runs:
        if stop["now"]:
            break
        if is_done(root / r.name):
            print(f"[claims] {r.name}: done", flush=True)
            continue
        cmd = command(r, root, args.threads, args.steps)
        print(f"[claims] {r.name}: {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{r.name}.log", "a") as log:
            rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            print(f"[claims] {r.name}: exit status {rc}; see {root / (r.name + '.log')}", flush=True)
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
