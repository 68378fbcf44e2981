#!/usr/bin/env python
"""Train an inversion encoder into a frozen StyleGAN2: CLCAE (stage 1 and 2), pSp or e4e; resumable bit for bit.

    # CLCAE on the shipped SynthFaces domain (64 px): stage 1, then stage 2 from the stage-1 run
    python scripts/train.py --config synthfaces64 --stage align --out runs/clcae-align
    python scripts/train.py --config synthfaces64 --stage invert --contrastive-image runs/clcae-align \\
        --out runs/clcae-invert
    # the baselines in the same framework
    python scripts/train.py --config synthfaces64 --method psp --out runs/psp
    python scripts/train.py --config synthfaces64 --method e4e --out runs/e4e
    # FFHQ with the official generator (4 GPUs); see configs/ffhq1024.yaml
    python scripts/generate_pairs.py --generator stylegan2-ffhq-config-f.pt --out pairs/ffhq --n 50000
    torchrun --standalone --nproc_per_node 4 scripts/train.py --config ffhq1024 --stage align \\
        --generator stylegan2-ffhq-config-f.pt --data pairs/ffhq --out runs/ffhq-align
    # build everything and run one step, writing nothing
    python scripts/train.py --config synthfaces64 --method e4e --dry-run
    # continue a run (after Ctrl-C, a crash or a kill)
    python scripts/train.py --resume runs/clcae-invert --steps 200000

Options: defaults < the --config file (its `stages:` / `methods:` sections for this run) < the command line.
Writes OUT/options.json, OUT/checkpoints/{latest.pt, best_model*.pt}, OUT/samples/*.png (input | w | W+ | W+F),
OUT/stats.jsonl, OUT/log.txt, OUT/tensorboard/. See docs/TRAINING.md.

Exit status: 0 done, 1 failed (NaN/Inf loss, a dead process), 2 bad options or input, 130/143 stopped by
SIGINT/SIGTERM after saving.
"""
from __future__ import annotations

import argparse
import sys

from clcae import cli
from clcae.checkpoints import CheckpointError
from clcae.training.encoder_options import OPTION_CHOICES, OPTION_GROUPS, EncoderTrainOptions
from clcae.training.encoder_loop import NonFiniteLossError, run_encoder_training
from clcae.training.options import ConfigError, add_dataclass_arguments
from clcae.training.state import RunDirError


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`EncoderTrainOptions` field, plus ``--config`` and ``--resume``; only the options
    given explicitly end up in the namespace."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", default=None, metavar="NAME_OR_FILE",
                   help="a named config in configs/ (ffhq1024, cars512, synthfaces64) or a YAML file")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="continue a run: its directory (checkpoints/latest.pt) or a checkpoint file")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard event files (default: on)")
    add_dataclass_arguments(p, EncoderTrainOptions, OPTION_GROUPS, OPTION_CHOICES)
    return p


@cli.exit_statuses(usage=(ConfigError, CheckpointError, RunDirError), failure=(NonFiniteLossError,),
                   interrupted=cli.ABORTED_WITHOUT_SAVING)
def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see the module docstring)."""
    args = vars(build_parser().parse_args(argv))
    config = args.pop("config", None)
    resume = args.pop("resume", None)
    tensorboard = args.pop("tensorboard", True)
    result = run_encoder_training(args, config=config, resume=resume, tensorboard=tensorboard)
    if result.stopped_early:
        return cli.stop_exit_status(result.stop_reason)
    if result.rank == 0 and result.checkpoint is not None:
        print(f"finished: {result.step} steps; best validation loss {result.best_loss} (step {result.best_step}); "
              f"checkpoints in {result.checkpoint.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
