#!/usr/bin/env python
"""Train a StyleGAN2 generator (rosinality layout) on SynthFaces or any image folder; resumable bit for bit.

    # SynthFaces rendered on the fly, 64 px, one GPU (or CPU)
    python scripts/train_generator.py --data synthfaces --size 64 --channel-base 16384 --batch 32 \\
        --kimg 5000 --out runs/sg2-synthfaces64
    # an image folder (searched recursively, centre-cropped and resized to --size), 4 GPUs
    torchrun --standalone --nproc_per_node 4 scripts/train_generator.py --data /data/ffhq --size 256 \\
        --batch 32 --mirror --out runs/sg2-ffhq256
    # a named recipe (configs/generator_*.yaml) on your own folder of images; flags given here win over it
    python scripts/train_generator.py --config generator_synthfaces64_projected --data /data/my_faces \\
        --out runs/my_faces64
    # continue a run (after Ctrl-C, a crash or a kill); options not given come from the checkpoint
    python scripts/train_generator.py --resume runs/sg2-ffhq256 --kimg 10000

Writes OUT/options.json, OUT/checkpoints/latest.pt and snapshot-*.pt (rosinality keys g, d, g_ema, g_optim,
d_optim, latent_avg, plus the training state), OUT/samples/*.png, OUT/stats.jsonl, OUT/log.txt and
OUT/tensorboard/. Ctrl-C saves a checkpoint and exits (a second Ctrl-C aborts). See docs/TRAINING_GENERATOR.md.

Exit status: 0 done, 1 failed (NaN/Inf loss, a dead process), 2 bad options or input, 130/143 stopped by
SIGINT/SIGTERM after saving.
"""
from __future__ import annotations

import argparse
import sys

from clcae import cli
from clcae.checkpoints import CheckpointError
from clcae.training.gan import (OPTION_CHOICES, OPTION_GROUPS, ConfigError, GANTrainOptions, NonFiniteLossError,
                                load_generator_config, run_training)
from clcae.training.options import add_dataclass_arguments
from clcae.training.state import RunDirError


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per :class:`GANTrainOptions` field (``--name-x``), plus ``--resume``.

    Defaults are suppressed in the namespace, so the result holds only the options given explicitly; the others
    come from :class:`GANTrainOptions` or, with ``--resume``, from the checkpoint.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT",
                   help="continue a run: a run directory (uses checkpoints/latest.pt) or a checkpoint file; options "
                        "not given are taken from the checkpoint")
    p.add_argument("--config", default=None, metavar="NAME_OR_YAML",
                   help="a named recipe (configs/NAME.yaml, e.g. generator_synthfaces64_projected) or a YAML file of "
                        "options; flags given on the command line win over it (not with --resume: a run keeps the "
                        "options it was started with)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard event files under OUT/tensorboard (default: on; stats.jsonl is always "
                        "written)")
    add_dataclass_arguments(p, GANTrainOptions, OPTION_GROUPS, OPTION_CHOICES)
    return p


@cli.exit_statuses(usage=(ConfigError, CheckpointError, RunDirError), failure=(NonFiniteLossError,),
                   interrupted=cli.ABORTED_WITHOUT_SAVING)
def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see the module docstring)."""
    args = vars(build_parser().parse_args(argv))
    resume = args.pop("resume", None)
    tensorboard = args.pop("tensorboard", True)
    config = args.pop("config", None)
    if config is not None:
        if resume is not None:
            raise ConfigError("--config and --resume do not go together: a resumed run keeps the options stored in "
                              "its checkpoint (give only the options a resume may change)")
        args = {**load_generator_config(config), **args}
    result = run_training(args, resume=resume, tensorboard=tensorboard)
    if result.stopped_early:
        return cli.stop_exit_status(result.stop_reason)
    if result.rank == 0:
        print(f"finished: {result.step} steps, {result.nimg / 1000:.3f} kimg, {result.img_per_s:.1f} img/s; "
              f"latest checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
