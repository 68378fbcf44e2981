#!/usr/bin/env python
"""Invert a folder of images into a StyleGAN2 generator: CLCAE, pSp, e4e (ours or the official checkpoints) or
optimisation-based projection. See docs/INVERSION.md.

Writes to --out, per image NAME (its path under --input without the extension):
  w/NAME.png, wplus/NAME.png, wplus_f/NAME.png   reconstructions from w, W+ and W+ with f (those the method has)
  latents/NAME.pt                                 {'w', 'wplus', 'f', 'method', 'checkpoint', 'input_size', ...}
  strips/NAME.jpg                                 input | reconstructions
and summary.json (counts, failures with reasons, images/s). Re-running skips finished images.

Real photos (--align; needs the [align] extra, see docs/REAL_PHOTOS.md): the faces are FFHQ-aligned first, into
  aligned/NAME.png, aligned/NAME.json   the crop (--align-size, default the encoder's input side) and its record
and the crops are inverted; each latents file names its record ('alignment'), so scripts/edit.py --paste-back
can put an edit back into the photo. Photos without a face are reported one line each and counted in summary.json.
Crops made by scripts/align.py can also be inverted directly (--input aligned/): their records are found beside
them.

Examples:
  python scripts/invert.py                        # shipped SynthFaces CLCAE model on examples/ -> outputs/invert
  python scripts/invert.py --checkpoint ffhq_inversion.pt --generator stylegan2-ffhq-config-f.pt \\
      --avg-image image_avg.png --input photos/ --out out/clcae
  python scripts/invert.py --method projection --generator stylegan2-ffhq-config-f.pt --steps 500 \\
      --input photos/ --out out/projection
  python scripts/invert.py --checkpoint ffhq_inversion.pt --generator stylegan2-ffhq-config-f.pt \\
      --avg-image image_avg.png --input photos/ --align --out out/photos --size full

Exit status: 0 when the run completed (bad input files are reported, not fatal); 1 when every image failed (with
--align: or no photo had a face); 2 for a problem with the arguments (missing or invalid checkpoint, no images, the
[align] extra missing, ...); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.align.detect import AlignExtraMissing, FaceDetector
from clcae.align.folder import align_inputs, format_align_summary
from clcae.align.paste import ALIGNED_DIR
from clcae.inversion.runner import (FORMATS, METHODS, RESIZE_POLICIES, SIZES, ProjectionOptions, format_summary,
                                    invert_folder, load_method)
from clcae.jobs import JobError, list_inputs, parse_size, resolve_device
from clcae.pretrained import SYNTHFACES_CLCAE, pretrained_dir

#: The shipped SynthFaces CLCAE inverter (in the pretrained folder once it is trained).
DEFAULT_CHECKPOINT_NAME = SYNTHFACES_CLCAE
#: Example images that ship with the repository.
DEFAULT_INPUT = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_OUT = Path("outputs/invert")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("method")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="inverter file: ours, or an official CLCAE / pSp / e4e checkpoint (default: the shipped "
                        f"pretrained/{DEFAULT_CHECKPOINT_NAME}); with --method projection it starts the codes")
    g.add_argument("--method", choices=METHODS, default="auto",
                   help="auto: the checkpoint's arch (clcae/psp/e4e also check it); projection: optimisation")
    g.add_argument("--generator", type=Path, default=None,
                   help="StyleGAN2 file (rosinality .pt, NVIDIA .pkl, ours): the latent_avg for an official CLCAE "
                        "checkpoint whose opts['stylegan_weights'] cannot be found; the generator for projection")
    g.add_argument("--avg-image", type=Path, default=None,
                   help="average-image PNG (the official image_avg.png) for CLCAE, instead of the stored one or "
                        "the one rendered from latent_avg")
    g.add_argument("--input-size", type=cli.arg_type(parse_size), default=None,
                   help="network input size S or HxW (default: the checkpoint's; projection: the generator's)")
    g = p.add_argument_group("projection (--method projection)")
    g.add_argument("--space", choices=["w", "wplus"], default="w", help="optimised code (default w)")
    g.add_argument("--steps", type=cli.positive_int, default=1000, help="optimisation steps per image (default 1000)")
    g.add_argument("--perceptual", choices=["auto", "lpips", "domain", "none"], default="auto",
                   help="image loss: LPIPS (needs local AlexNet weights), the SynthFaces domain network, or none "
                        "(pixel MSE); auto (default): LPIPS when its weights are found, else the domain network on "
                        "the shipped SynthFaces generator (printed as a note)")
    g.add_argument("--domain-net", type=Path, default=None,
                   help="domain network for --perceptual domain (default: the shipped one)")
    g.add_argument("--lpips-weights", type=Path, default=None,
                   help="torchvision AlexNet weights for --perceptual lpips (default: the torch hub cache)")
    g.add_argument("--seed", type=int, default=0, help="projection seed (the same for every image)")
    g = p.add_argument_group("input and output")
    g.add_argument("--input", type=Path, default=None,
                   help="image folder (searched recursively) or one image (default: examples/)")
    g.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    g.add_argument("--resize", choices=RESIZE_POLICIES, default="resize",
                   help="to the input size: resize (squash, as the official transform) or center_crop")
    g.add_argument("--size", choices=SIZES, default="official",
                   help="saved image size: official (256 px, cars 192x256; smaller generators at their size) or "
                        "full (the generator's resolution)")
    g.add_argument("--format", choices=FORMATS, default="png", help="reconstruction image format")
    g.add_argument("--no-strips", action="store_true", help="do not write strips/NAME.jpg")
    g.add_argument("--overwrite", action="store_true",
                   help="recompute finished images (default: skip them, so an interrupted run resumes)")
    g = p.add_argument_group("real photos (needs the [align] extra: pip install -e .[align])")
    g.add_argument("--align", action="store_true",
                   help=f"FFHQ-align the faces of the inputs first (crops and records in OUT/{ALIGNED_DIR}/), then "
                        "invert the crops; the latents name the records, for edit.py --paste-back")
    g.add_argument("--align-size", type=cli.positive_int, default=None,
                   help="side of the aligned crops (default: the encoder's input side; larger crops are resized "
                        "to it when read)")
    g.add_argument("--all-faces", action="store_true",
                   help="with --align: one crop per face (NAME_face0, NAME_face1, ...; default: the largest)")
    g.add_argument("--min-score", type=float, default=0.3,
                   help="with --align: the face detector's score threshold (default 0.3)")
    g = p.add_argument_group("execution")
    g.add_argument("--batch", type=cli.positive_int, default=4, help="images per batch (default 4)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster; results differ slightly)")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default) or bf16 (= --bf16; error and speed in docs/PERFORMANCE.md)")
    g.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime: encoder models run as an ONNX graph in ONNX Runtime on the CPU, fp32 (the "
                        "[export] extra; exported once per model and --batch into ~/.cache/clcae/onnx; faster on "
                        "CPUs, docs/PERFORMANCE.md)")
    g.add_argument("--impl", choices=["auto", "cuda", "fast", "ref"], default="auto",
                   help="generator op implementation")
    g.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _defaults(args: argparse.Namespace) -> None:
    """Fill in the shipped checkpoint and examples/ when they were not given; JobError if they are missing."""
    if args.checkpoint is None and args.method != "projection":
        path = pretrained_dir() / DEFAULT_CHECKPOINT_NAME
        if not path.is_file():
            raise JobError(
                f"no --checkpoint given, and the shipped SynthFaces CLCAE model {path} does not exist yet (it has "
                "not been trained into pretrained/). Pass an inverter checkpoint: --checkpoint FILE (ours, or an "
                "official CLCAE / pSp / e4e file; see docs/INVERSION.md), or project with --method projection "
                "--generator FILE.")
        args.checkpoint = path
    if args.input is None:
        if not DEFAULT_INPUT.is_dir():
            raise JobError(f"no --input given, and the default example folder {DEFAULT_INPUT} does not exist; "
                              "pass --input FOLDER (or one image file)")
        args.input = DEFAULT_INPUT


@cli.exit_statuses(usage=(JobError, AlignExtraMissing), interrupted="interrupted before the run started")
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.align and (args.align_size is not None or args.all_faces):
        raise JobError("--align-size and --all-faces need --align")
    torch.manual_seed(args.seed)
    _defaults(args)
    detector = FaceDetector(min_score=args.min_score) if args.align else None  # fails early without the extra
    device = resolve_device(args.device)
    projection = ProjectionOptions(space=args.space, steps=args.steps, perceptual=args.perceptual,
                                   lpips_weights=None if args.lpips_weights is None else str(args.lpips_weights),
                                   domain_net=None if args.domain_net is None else str(args.domain_net),
                                   seed=args.seed)
    loaded = load_method(args.checkpoint, method=args.method, generator=args.generator, device=device,
                         impl=args.impl, input_size=args.input_size, projection=projection,
                         avg_image=args.avg_image, resize=args.resize, progress=not args.no_progress)
    for note in loaded.notes:
        print(f"note: {note}")
    inputs, settings, align_summary = args.input, dict(loaded.settings), None
    if args.align:
        crops = args.out / ALIGNED_DIR
        size = args.align_size or max(loaded.inverter.input_size)
        align_summary = align_inputs(args.input, crops, size=size, all_faces=args.all_faces, detector=detector,
                                     overwrite=args.overwrite, progress=not args.no_progress, exclude=args.out)
        settings["align"] = align_summary["settings"]
        if align_summary["interrupted"]:
            print(format_align_summary(align_summary))
            return cli.EXIT_SIGINT
        if not align_summary["aligned"] and not align_summary["skipped"]:
            print(format_align_summary(align_summary))
            return cli.report_error("no photo gave a face crop: nothing to invert", cli.EXIT_FAILED)
        inputs, _ = list_inputs(crops)
    inverter = loaded.inverter
    if args.backend == "onnxruntime":
        if loaded.method == "projection" or device.type != "cpu" or args.bf16 or args.precision != "fp32":
            return cli.report_error("--backend onnxruntime runs an encoder model (clcae, psp, e4e) on the CPU in fp32")
        from clcae.export import OnnxInverter

        try:
            inverter = OnnxInverter(loaded.inverter, batch=args.batch)
        except ImportError as e:
            return cli.report_error(e, cli.EXIT_FAILED)
        settings["backend"] = "onnxruntime"
    summary = invert_folder(inverter, inputs, args.out, batch=args.batch, size=args.size,
                            fmt=args.format, strips=not args.no_strips, overwrite=args.overwrite,
                            resize=args.resize, bf16=args.bf16 or args.precision == "bf16", method=loaded.method,
                            checkpoint=loaded.checkpoint, settings=settings,
                            progress=not args.no_progress, align_summary=align_summary)
    print(format_summary(summary))
    return cli.summary_exit_status(summary)


if __name__ == "__main__":
    sys.exit(main())
