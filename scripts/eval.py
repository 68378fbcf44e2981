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
import datetime
import platform
import shlex
import sys
from pathlib import Path

import torch

import clcae
from clcae import cli
from clcae.metrics.evaluation import (PROTOCOLS, EditSpec, EvalMethod, EvaluationError, FolderSource,
                                      SynthFacesSource, build_metric_suite, evaluate)
from clcae.metrics.tables import markdown_report, write_all
from clcae.pretrained import SYNTHFACES_DOMAIN_NET, SYNTHFACES_JUDGE_NET

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


def _load_methods(args, device, suite) -> list[EvalMethod]:
    from clcae.inversion.runner import ProjectionOptions, load_avg_image, load_method

    methods = []
    for name, ckpt in args.method:
        lm = load_method(checkpoint=ckpt, method="auto", generator=args.generator, device=device)
        inv = lm.inverter
        if args.precision != "fp32":
            inv.set_precision(args.precision)
        if args.avg_image is not None and hasattr(inv, "set_avg_image"):
            inv.set_avg_image(load_avg_image(args.avg_image, inv.input_size).to(device), str(args.avg_image))
            lm.settings["avg_image"] = str(Path(args.avg_image).resolve())
        info = dict(lm.settings)
        if hasattr(inv, "avg_image_source"):
            info["avg_image_source"] = inv.avg_image_source
        methods.append(EvalMethod(name, inv, info=info))
    for name, generator, space, steps in args.projection:
        if suite.lpips is not None:
            perceptual = "lpips"
        elif suite.domain_net is not None:
            perceptual = "domain"
        else:
            perceptual = "none"
        opts = ProjectionOptions(space=space, steps=steps, perceptual=perceptual, lpips_weights=suite.lpips_weights,
                                 domain_net=suite.domain_weights if perceptual == "domain" else None,
                                 seed=args.projection_seed)
        lm = load_method(checkpoint=None, method="projection", generator=generator, device=device, projection=opts)
        methods.append(EvalMethod(name, lm.inverter, info=dict(lm.settings)))
    return methods


def _generator_side(methods: list[EvalMethod]) -> int:
    sides = {int(m.inverter.decoder.size) for m in methods}
    if len(sides) != 1:
        raise EvaluationError(f"the methods' generators differ in resolution ({sorted(sides)}); pass --res")
    return sides.pop()


def _edits(args, attribute_names, generator) -> list[EditSpec]:
    from clcae.checkpoints import CheckpointError
    from clcae.editing.interfacegan import apply_direction, load_direction

    ignore = {a.strip() for a in args.edit_ignore.split(",") if a.strip()}
    unknown = sorted(ignore - set(attribute_names))
    if unknown:
        raise EvaluationError(f"--edit-ignore {unknown}: not attributes of the domain network "
                              f"({list(attribute_names)})")
    specs = []
    for attribute, path in args.edit:
        if attribute not in attribute_names:
            raise EvaluationError(f"--edit {attribute}={path}: {attribute!r} is not an attribute of the domain "
                                  f"network ({list(attribute_names)})")
        if not Path(path).is_file():
            raise EvaluationError(f"--edit {attribute}={path}: no such file")
        try:
            direction = load_direction(path, generator=generator)
        except CheckpointError as e:
            raise EvaluationError(f"--edit {attribute}: {e}") from None
        if direction.attribute is not None and direction.attribute != attribute:
            raise EvaluationError(f"--edit {attribute}={path}: the file is a direction for {direction.attribute!r}")

        def fn(codes: torch.Tensor, strength: float, d=direction) -> torch.Tensor:
            return apply_direction(codes, d.vector, strength, layers=d.layers)

        others = [a for a in attribute_names if a != attribute and a not in ignore]
        specs.append(EditSpec(attribute, fn, args.edit_strengths, source=str(Path(path).resolve()),
                              other_attributes=others))
    return specs


def run(args) -> int:
    """Run the evaluation for parsed ``args``; returns the exit status."""
    from clcae.jobs import JobError, resolve_device
    from clcae.pretrained import pretrained_dir

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
    try:
        device = resolve_device(args.device)
    except JobError as e:
        raise EvaluationError(str(e)) from None

    domain = args.domain_net
    if domain is None and synthfaces:
        shipped = pretrained_dir() / DEFAULT_DOMAIN_NET
        domain = shipped if shipped.is_file() else None
    judge = None if args.judge_net == "domain" else args.judge_net
    if args.judge_net is None and synthfaces:
        shipped_judge = pretrained_dir() / SYNTHFACES_JUDGE_NET
        judge = shipped_judge if shipped_judge.is_file() else None
    suite = build_metric_suite(lpips_weights=args.lpips_weights, arcface_weights=args.arcface_weights,
                               inception_weights=args.inception_weights, domain_net=domain, device=device,
                               use_hub_cache=not args.no_hub_cache, id_dlib=args.id_dlib, judge_net=judge)
    try:
        methods = _load_methods(args, device, suite)
    except JobError as e:
        raise EvaluationError(str(e)) from None

    if synthfaces:
        res = args.res or _generator_side(methods)
        source = SynthFacesSource(args.n or DEFAULT_SYNTHFACES_N, res=res, split="test", seed=args.synthfaces_seed)
        if args.edit and suite.domain_net is None:
            raise EvaluationError("--edit needs the SynthFaces domain network (--domain-net)")
        edits = _edits(args, suite.domain_net.attribute_names, methods[0].inverter.decoder) if args.edit else []
    else:
        source = FolderSource(args.data, args.n)
        edits = []

    out.mkdir(parents=True, exist_ok=True)
    result = evaluate(methods, source, suite, args.protocol, batch=args.batch, device=device,
                      save_images=args.save_images, image_dir=out / "images", edits=edits, edit_n=args.edit_n,
                      progress=not args.no_progress)
    sections = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"clcae": clcae.__version__, "torch": torch.__version__, "python": platform.python_version(),
                        "device": str(device),
                        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    report = result.to_report(args.title, sections)
    write_all(report, out, embed_images=args.embed_images)
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
