#!/usr/bin/env python
"""Evaluate inversion methods side by side: reconstruction metrics per image and aggregated, editing metrics on
SynthFaces, written as Markdown, CSV, JSON and an HTML report with image grids. See docs/EVALUATION.md.

Writes to --out:
  results.md, results.csv, results.json   one row per (method, representation): mean ± std, n, weights files
  per_image.csv                           one row per (image, method, representation)
  report.html + images/                   tables, metric definitions, image grids (open in a browser)

Examples:
  python scripts/eval.py --method clcae=runs/clcae/best.pt --method psp=runs/psp/best.pt \\
      --projection proj_w=pretrained/synthfaces64_generator.pt:w:300 --data synthfaces --n 500 --out eval/sf
  python scripts/eval.py --protocol celebahq --method clcae=ffhq_inversion.pt --method e4e=e4e_ffhq_encode.pt \\
      --generator stylegan2-ffhq-config-f.pt --data celeba_hq/test --lpips-weights alexnet-owt-7be5be79.pth \\
      --out eval/celebahq

Metrics whose pretrained weights are missing are left out and the report says which file they need; nothing is
downloaded and no metric is computed with random weights.

Exit status: 0 on success; 1 when no image could be read; 2 for a problem with the arguments or files;
130 when interrupted.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.metrics.evaluation import PROTOCOLS, EvaluationError
from clcae.metrics.job import EvalJob, run_evaluation
from clcae.metrics.tables import markdown_report
from clcae.pretrained import SYNTHFACES_DOMAIN_NET, SYNTHFACES_JUDGE_NET, pretrained_dir

#: The shipped SynthFaces domain network, used on --data synthfaces when --domain-net is not given.
DEFAULT_DOMAIN_NET = SYNTHFACES_DOMAIN_NET
#: SynthFaces test images by default (the test split's 500 persons, one image each).
DEFAULT_SYNTHFACES_N = 500
#: Attributes left out of the "other attributes changed" editing metric by default: the shipped domain network
#: predicts eyes_open hardly better than a constant (its model card), so its changes are noise.
DEFAULT_EDIT_IGNORE = ("eyes_open",)


def _named(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE, got {text!r}")
    return name, value


def method_arg(text: str) -> tuple[str, str]:
    """``NAME=CHECKPOINT``."""
    return _named(text, "--method")


def projection_arg(text: str) -> tuple[str, str, str, int]:
    """``NAME=GENERATOR:SPACE:STEPS`` -> (name, generator, space, steps); the generator path may contain ':'."""
    name, spec = _named(text, "--projection")
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or parts[1] not in ("w", "wplus"):
        raise argparse.ArgumentTypeError(f"--projection: expected NAME=GENERATOR:SPACE:STEPS with SPACE w or wplus, "
                                         f"got {text!r}")
    try:
        steps = int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--projection: STEPS must be an integer, got {parts[2]!r}") from None
    if steps < 1:
        raise argparse.ArgumentTypeError(f"--projection: STEPS must be >= 1, got {steps}")
    return name, parts[0], parts[1], steps


def edit_arg(text: str) -> tuple[str, str]:
    """``ATTRIBUTE=DIRECTION_FILE``."""
    return _named(text, "--edit")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("methods (at least one)")
    g.add_argument("--method", type=method_arg, action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="an inverter checkpoint (ours, or official CLCAE / pSp / e4e); repeatable")
    g.add_argument("--projection", type=projection_arg, action="append", default=[],
                   metavar="NAME=GENERATOR:SPACE:STEPS",
                   help="optimisation-based projection into GENERATOR in space w or wplus with STEPS steps; its "
                        "loss is LPIPS when available, else the domain perceptual distance, else MSE; repeatable")
    g.add_argument("--generator", default=None,
                   help="StyleGAN2 file giving latent_avg to official CLCAE checkpoints that do not store it")
    g.add_argument("--avg-image", default=None, help="the official image_avg.png for CLCAE methods")
    g.add_argument("--projection-seed", type=int, default=0, help="seed of the projection's noise")
    d = p.add_argument_group("data and protocol")
    d.add_argument("--data", required=True, help="'synthfaces' (the SynthFaces test split) or an image folder")
    d.add_argument("--n", type=cli.positive_int, default=None,
                   help=f"images to evaluate (default: {DEFAULT_SYNTHFACES_N} on synthfaces, every file of a folder)")
    d.add_argument("--res", type=cli.positive_int, default=None,
                   help="SynthFaces render size (default: the methods' generator resolution)")
    d.add_argument("--synthfaces-seed", type=cli.non_negative_int, default=0, help="SynthFaces dataset seed")
    d.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default",
                   help="'default': metrics at min(256, generator size); 'celebahq': the paper's protocol on a "
                        "CelebA-HQ-style test folder (256 px, outputs as saved 8-bit images)")
    w = p.add_argument_group("metric weights (local files; nothing is downloaded)")
    w.add_argument("--lpips-weights", default=None,
                   help="torchvision AlexNet file alexnet-owt-7be5be79.pth (default: the torch hub cache)")
    w.add_argument("--arcface-weights", default=None, help="ArcFace IR-SE-50 model_ir_se50.pth for id_arcface")
    w.add_argument("--id-dlib", action="store_true",
                   help="also report id_dlib: dlib face-recognition embeddings (real faces; needs pip install -e "
                        "'.[align]'), never mixed with the paper's CurricularFace ID")
    w.add_argument("--inception-weights", default=None,
                   help="torchvision inception_v3_google-0cc3c7bd.pth for fid_tv (default: the torch hub cache)")
    w.add_argument("--domain-net", default=None,
                   help=f"SynthFaces domain network (default on synthfaces: pretrained/{DEFAULT_DOMAIN_NET})")
    w.add_argument("--judge-net", default=None,
                   help="SynthFaces network that judges the attribute-fidelity columns (default on synthfaces: "
                        f"pretrained/{SYNTHFACES_JUDGE_NET}, trained apart from the domain network the losses use; "
                        "'domain': the domain network judges)")
    w.add_argument("--no-hub-cache", action="store_true",
                   help="do not look for LPIPS / Inception weights in the torch hub cache")
    e = p.add_argument_group("editing metrics (SynthFaces)")
    e.add_argument("--edit", type=edit_arg, action="append", default=[], metavar="ATTRIBUTE=DIRECTION_FILE",
                   help="measure an InterFaceGAN direction on each method's W+ codes; repeatable")
    e.add_argument("--edit-strengths", type=float, nargs="+", default=[-2.0, -1.0, 0.0, 1.0, 2.0],
                   metavar="S", help="edit strengths, at least two distinct (default: -2 -1 0 1 2)")
    e.add_argument("--edit-n", type=cli.positive_int, default=None, help="images per edit (default: all)")
    e.add_argument("--edit-ignore", default=",".join(DEFAULT_EDIT_IGNORE),
                   help="attributes left out of the 'other attributes' change (comma-separated; default "
                        f"{','.join(DEFAULT_EDIT_IGNORE)}, which the shipped domain network predicts poorly)")
    o = p.add_argument_group("output and running")
    o.add_argument("--out", required=True, type=Path, help="output folder")
    o.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    o.add_argument("--save-images", type=cli.non_negative_int, default=8,
                   help="inputs and outputs of the first N images for the report's grid (default 8)")
    o.add_argument("--embed-images", action="store_true",
                   help="embed the grid images in report.html (base64) instead of referencing images/")
    o.add_argument("--batch", type=cli.positive_int, default=8, help="images per inversion call")
    o.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    o.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="the inverters' precision: fp32 (default) or bf16 (docs/PERFORMANCE.md)")
    o.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch (default: torch's)")
    o.add_argument("--title", default="Inversion evaluation", help="report title")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _shipped_by_default(given, name: str, synthfaces: bool):
    """The file given, else on synthfaces the shipped ``pretrained/NAME`` when it exists, else None."""
    if given is not None or not synthfaces:
        return given
    shipped = pretrained_dir() / name
    return shipped if shipped.is_file() else None


def run(args) -> int:
    """Run the evaluation for parsed ``args``; returns the exit status."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.method and not args.projection:
        raise EvaluationError("give at least one --method NAME=CHECKPOINT or --projection NAME=GENERATOR:SPACE:STEPS")
    names = [m[0] for m in args.method] + [p[0] for p in args.projection]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EvaluationError(f"method names must be unique; repeated: {dup}")
    synthfaces = args.data == "synthfaces"
    if args.protocol == "celebahq" and synthfaces:
        raise EvaluationError("--protocol celebahq runs on a CelebA-HQ-style test folder (--data FOLDER), not on "
                              "synthfaces")
    if args.edit and not synthfaces:
        raise EvaluationError("--edit: editing metrics are measured on SynthFaces (--data synthfaces)")
    if args.edit and len(set(args.edit_strengths)) < 2:
        raise EvaluationError(f"--edit-strengths: need at least two distinct values; got {args.edit_strengths}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--out {out}: exists and is not a folder")
    if (out / "results.json").exists() and not args.overwrite:
        raise EvaluationError(f"--out {out} already holds results; choose another folder or pass --overwrite")
    domain = _shipped_by_default(args.domain_net, DEFAULT_DOMAIN_NET, synthfaces)
    judge = (None if args.judge_net == "domain"
             else _shipped_by_default(args.judge_net, SYNTHFACES_JUDGE_NET, synthfaces))
    job = EvalJob(
        methods=args.method, projections=args.projection, data=args.data, out=out,
        n=(args.n or DEFAULT_SYNTHFACES_N) if synthfaces else args.n, res=args.res,
        synthfaces_seed=args.synthfaces_seed, protocol=args.protocol, generator=args.generator,
        avg_image=args.avg_image, projection_seed=args.projection_seed, lpips_weights=args.lpips_weights,
        arcface_weights=args.arcface_weights, inception_weights=args.inception_weights, domain_net=domain,
        judge_net=judge, use_hub_cache=not args.no_hub_cache, id_dlib=args.id_dlib, edits=args.edit,
        edit_strengths=args.edit_strengths,
        edit_n=args.edit_n, edit_ignore=[a.strip() for a in args.edit_ignore.split(",") if a.strip()],
        save_images=args.save_images, embed_images=args.embed_images, batch=args.batch, device=args.device,
        precision=args.precision, title=args.title, progress=not args.no_progress)
    report = run_evaluation(job, {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    })
    print(markdown_report(report))
    print(f"wrote {out / 'results.md'}, results.csv, results.json, per_image.csv, report.html")
    return 0


@cli.exit_statuses(interrupted="interrupted")
def main(argv=None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except EvaluationError as e:
        return cli.report_error(e, cli.EXIT_FAILED if str(e).startswith("no image could be read") else cli.EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
