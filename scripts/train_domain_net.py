#!/usr/bin/env python
"""Train the SynthFaces domain network (identity embedding + attributes + Fréchet features) and evaluate it on the
test split, whose persons it never saw.

    # render a dataset once (see docs/SYNTHFACES.md), then train on it (loaded into memory)
    python scripts/make_synthfaces.py --res 64 --n 48000 --persons 4000 --test-n 5000 --out DATA --workers 1
    python scripts/train_domain_net.py --data DATA --eval-data DATA --steps 1500 --out runs/domain_net/train
    # or render the training images in this process (--n images of --persons persons)
    python scripts/train_domain_net.py --data synthfaces --n 20000 --persons 2000 --steps 800 --out RUN
    # continue an interrupted run (options not given come from the checkpoint)
    python scripts/train_domain_net.py --resume RUN
    # evaluate a model (a save_domain_net file or a training checkpoint) on the test split
    python scripts/train_domain_net.py --eval-only RUN/domain_net.pt --eval-res 128

Training: a person-classification ArcFace head (:class:`clcae.losses.identity.ArcMarginHead`) over the training
persons on the embedding, plus attribute losses on the attribute head (smooth L1 with ``--attr-beta`` on the
range-normalised continuous attributes -- the default beta 1 makes it a halved squared error -- and binary
cross-entropy for glasses); AdamW with a linear warm-up and a cosine decay; the margin ramps up from 0 over
``--margin-warmup`` of the steps; optional random translations (``--translate``, off by default).

Evaluation (:func:`clcae.training.domain.evaluate`), on the TEST split: identity verification over
``--eval-pairs`` image pairs (half the same person, half different persons; every image has its own random
attributes): accuracy at the threshold chosen on the other half of the pairs (2-fold, averaged), ROC AUC, TAR at
FAR = 1e-2; per-attribute mean absolute error in label units (and a constant-prediction baseline), glasses accuracy
(:mod:`clcae.metrics.verification`); the Fréchet distance between the features of two disjoint halves of the test
images (the noise floor of the metric at that size). Written as JSON.

Writes RUN/options.json, RUN/checkpoints/latest.pt (resume point, every ``--checkpoint-every`` steps and on
SIGINT/SIGTERM), RUN/stats.jsonl, RUN/log.txt, RUN/tensorboard/, and at the end RUN/domain_net.pt (the model,
:func:`clcae.networks.domain.save_domain_net`, with the metrics inside) and RUN/eval_test.json.

The options (:mod:`clcae.training.domain_options`), data, training loop and evaluation live in
:mod:`clcae.training.domain`; this script is its CLI.

Exit status: 0 done, 1 failed (NaN/Inf loss), 2 bad options or input, 130/143 stopped by SIGINT/SIGTERM after
saving.
"""
from __future__ import annotations

import argparse
import sys

from clcae import cli
from clcae.checkpoints import CheckpointError
from clcae.training.domain import ConfigError, NonFiniteLossError, evaluate_model_file, format_metrics, train
from clcae.training.domain_options import OPTION_GROUPS, DomainTrainOptions
from clcae.training.options import add_dataclass_arguments
from clcae.training.state import RunDirError


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per :class:`~clcae.training.domain_options.DomainTrainOptions` field (``--name-x``), plus
    ``--resume``, ``--eval-only``, ``--eval-json`` and ``--tensorboard``.

    Defaults are suppressed in the namespace, so the result holds only the options given explicitly; the others
    come from :class:`~clcae.training.domain_options.DomainTrainOptions` or, with ``--resume``, from the checkpoint.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CKPT", help="continue a run")
    p.add_argument("--eval-only", default=None, metavar="CKPT",
                   help="evaluate a model file (domain_net.pt or a training checkpoint) on the test split and exit")
    p.add_argument("--eval-json", default=None, metavar="PATH",
                   help="with --eval-only: where to write the metrics (default: beside CKPT, "
                        "<stem>.eval_test_<res>px.json)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard event files (default: on)")
    add_dataclass_arguments(p, DomainTrainOptions, OPTION_GROUPS)
    return p


@cli.exit_statuses(usage=(ConfigError, CheckpointError, RunDirError), failure=(NonFiniteLossError,))
def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see the module docstring)."""
    args = vars(build_parser().parse_args(argv))
    resume, eval_only, eval_json = args.pop("resume", None), args.pop("eval_only", None), args.pop("eval_json", None)
    tensorboard = args.pop("tensorboard", True)
    if eval_only:
        metrics, out = evaluate_model_file(eval_only, args, eval_json, progress=True)
        print(format_metrics(metrics))
        print(f"wrote {out}")
        return 0
    result = train(args, resume=resume, tensorboard=tensorboard)
    if result.stopped_early:
        return cli.stop_exit_status(result.stop_reason)
    print(f"finished: {result.step} steps in {result.seconds / 60:.1f} min; model {result.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
