#!/usr/bin/env python
"""Edit inverted images: InterFaceGAN directions, GANSpace components or SeFa directions, swept over strengths.

Input: the latents that scripts/invert.py writes (one .pt per image: {'w' [D], 'wplus' [n, D], 'f' [C, h, w],
'method', 'checkpoint', 'input_size', 'idx_k', ...}; give the run folder, its latents/ folder or one file), or
images with an inverter (--input IMAGES --checkpoint INVERTER; inverted on the fly, nothing else stored).

--edit (repeatable), STRENGTHS being a list "-3,0,3" or a range "A:B:N" (N values, both ends included):
  interfacegan:PATH:STRENGTHS                direction file (official age.pt / smile.pt / pose.pt, .npy, or ours)
  ganspace:PCA:COMP:FIRST:LAST:STRENGTHS     PCA file (ours or the official ffhq_pca.pt); layers FIRST..LAST
                                             inclusive; strength in standard deviations (--ganspace-mode)
  sefa:K:STRENGTHS                           the K-th SeFa direction of the generator (0 = strongest)

Writes to --out, per edit LABEL and image NAME:
  LABEL/grids/NAME.jpg                 rows: w / wplus / wplus_f (those the latents have), columns: strengths
  LABEL/KIND/NAME/s+3.png, ...         every edited image
and summary.json. For W+F the feature follows the edit: f + G_k(W+_edited) - G_k(W+) (docs/EDITING.md).
Re-running skips finished (image, edit) pairs; a bad latents file is reported by name and skipped.

Real photos (docs/REAL_PHOTOS.md):
  --paste-back   also write the original photo with each edited crop warped back into it (feathered edge):
                   pasted/LABEL/KIND/NAME/s+3.png   full size
                 for latents written by invert.py from aligned crops (invert.py --align, or crops of
                 scripts/align.py: they name their alignment record) and, with --input, for crops whose record
                 (NAME.json) lies beside them. Without a record the edit is still written, and a line says why
                 nothing was pasted.
  --align        with --input PHOTOS: FFHQ-align the faces first (into OUT/aligned/), then invert and edit the
                 crops (needs the [align] extra).

Examples:
  python scripts/edit.py --latents out/clcae --edit interfacegan:editings/smile.pt:-3:3:7 --out out/edit
  python scripts/edit.py --latents out/clcae --generator G.pt --edit ganspace:ffhq_pca.pt:54:7:7:-10:10:5 \\
      --edit sefa:0:-15:15:7 --out out/edit
  python scripts/edit.py --input photos/ --checkpoint clcae.pt --edit interfacegan:age.pt:-3,0,3 --out out/edit
  python scripts/edit.py --latents out/photos --edit interfacegan:smile.pt:-2,2 --paste-back --out out/edit
  python scripts/edit.py --input photos/ --align --checkpoint clcae.pt --edit interfacegan:age.pt:3 --paste-back \\
      --out out/edit

Exit status: 0 when the run completed (bad files, and photos without a face or paste-back, are reported, not
fatal); 1 when every image failed (with --align: or no photo had a face); 2 for a problem with the arguments (or
the [align] extra missing); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.align.detect import AlignExtraMissing
from clcae.align.paste import ALIGNED_DIR, PASTED_DIR
from clcae.data.images import display_path
from clcae.editing import GANSPACE_MODES
from clcae.editing.folder import GRID_PADDING, EditFolderOptions, edit_folder
from clcae.editing.specs import (EDIT_KINDS, EditOptions, EditSpec, parse_edit, parse_layers, parse_strengths,
                                 strength_label)
from clcae.inversion.runner import FORMATS, SIZES
from clcae.jobs import JobError, resolve_device
from clcae.networks.encoders import DEFAULT_IDX_K

# The edit specifications live in clcae.editing.specs and the job in clcae.editing.folder; names stay importable here.
__all__ = ["EDIT_KINDS", "EditSpec", "parse_edit", "parse_strengths", "parse_layers", "strength_label", "main",
           "GRID_PADDING"]


class UsageError(Exception):
    """A problem with the arguments or the files they name (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input")
    g.add_argument("--latents", type=Path, default=None,
                   help="latents written by scripts/invert.py: its output folder, its latents/ folder or one .pt")
    g.add_argument("--input", type=Path, default=None, help="images to invert and edit (folder or file)")
    g.add_argument("--checkpoint", type=Path, default=None, help="inverter for --input (ours, official CLCAE/pSp/e4e)")
    g.add_argument("--align", action="store_true",
                   help=f"with --input: FFHQ-align the faces of the photos first (into OUT/{ALIGNED_DIR}/), then "
                        "invert and edit the crops (needs the [align] extra)")
    g.add_argument("--align-size", type=cli.positive_int, default=None,
                   help="side of the aligned crops (default: the encoder's input side)")
    g.add_argument("--all-faces", action="store_true", help="with --align: every face (default: the largest)")
    g.add_argument("--min-score", type=float, default=0.3,
                   help="with --align: the face detector's score threshold (default 0.3)")
    g.add_argument("--generator", type=Path, default=None,
                   help="with --latents: the generator (default: the checkpoint named in each latents file); with "
                        "--input: the StyleGAN2 file that supplies an official CLCAE checkpoint's latent_avg")
    g = p.add_argument_group("edits")
    g.add_argument("--edit", action="append", required=True, metavar="SPEC",
                   help="interfacegan:PATH:STRENGTHS | ganspace:PCA:COMP:FIRST:LAST:STRENGTHS | sefa:K:STRENGTHS "
                        "(repeatable); STRENGTHS '-3,0,3' or 'A:B:N'")
    g.add_argument("--layers", type=cli.arg_type(parse_layers), default=None,
                   help="W+ layers that InterFaceGAN and SeFa edits move, e.g. 0-5 (default: all; a direction "
                        "file may name its own); SeFa directions are computed from these layers")
    g.add_argument("--per-layer", action="store_true",
                   help="use every row of a per-layer direction ([n, D], e.g. pose.pt) on its layer, as e4e does "
                        "(default: row 0 on every layer, as the official CLCAE script)")
    g.add_argument("--ganspace-mode", choices=GANSPACE_MODES, default="relative",
                   help="relative: add strength * std * component (0 = no edit); absolute: set the coordinate to "
                        "strength std (e4e/CLCAE)")
    g.add_argument("--sefa-torgb", action="store_true", help="SeFa: also factorise the ToRGB modulations")
    g.add_argument("--encoder-edit", action="store_true",
                   help="with --input and a CLCAE inverter: add InterFaceGAN directions inside the encoder (the "
                        "official CLCAE path, which re-predicts W+ and f) instead of to the inverted codes")
    g.add_argument("--idx-k", type=int, default=None,
                   help=f"activation index of f (default: the latents file's, else {DEFAULT_IDX_K})")
    g.add_argument("--feature-scale", type=float, default=None,
                   help="blend scale of f (default: the latents file's, else 1.0)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, required=True, help="output folder")
    g.add_argument("--size", choices=SIZES, default="official",
                   help="official: as invert.py saves (256 px; cars 192x256; smaller generators at their size); "
                        "full: the generator's resolution")
    g.add_argument("--format", choices=FORMATS, default="png", help="format of the individual images")
    g.add_argument("--overwrite", action="store_true", help="redo finished (image, edit) pairs")
    g.add_argument("--paste-back", action="store_true",
                   help=f"also write the original photo with each edited crop pasted back ({PASTED_DIR}/LABEL/KIND/"
                        "NAME/s+3.png, full size) for inputs that carry an alignment record")
    g.add_argument("--feather", type=float, default=0.1,
                   help="soft edge of the paste-back, a fraction of the crop side in [0, 0.5] (default 0.1)")
    g = p.add_argument_group("execution")
    g.add_argument("--batch", type=cli.positive_int, default=8, help="strengths rendered per generator pass")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--impl", choices=["auto", "cuda", "fast", "ref"], default="auto", help="generator ops")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32 (default) or bf16: inversion and rendering under bfloat16 autocast (docs/PERFORMANCE.md)")
    g.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(args: argparse.Namespace) -> tuple[list[EditSpec], EditFolderOptions]:
    """The edits and the job's options from the command line; UsageError (naming the flags) for a bad combination."""
    if args.latents is not None and args.input is not None:
        raise UsageError("give --latents or --input, not both")
    specs = []
    for text in args.edit:
        try:
            specs.append(parse_edit(text))
        except ValueError as e:
            raise UsageError(f"--edit {e}") from None
    for spec in specs:
        if spec.path is not None and not spec.path.is_file():
            raise UsageError(f"--edit {spec.text!r}: no such file {display_path(spec.path)}")
    if not 0.0 <= args.feather <= 0.5:
        raise UsageError(f"--feather must be in [0, 0.5] (a fraction of the crop side); got {args.feather}")
    if not args.align and (args.align_size is not None or args.all_faces):
        raise UsageError("--align-size and --all-faces need --align")
    if args.input is not None and args.checkpoint is None:
        raise UsageError("--input needs --checkpoint (an inverter file)")
    if args.input is None:
        if args.latents is None:
            raise UsageError("give --latents (files written by scripts/invert.py) or --input with --checkpoint")
        if args.encoder_edit:
            raise UsageError("--encoder-edit needs the images (--input with a CLCAE --checkpoint)")
        if args.align:
            raise UsageError("--align needs the photos (--input with --checkpoint); latents from invert.py --align "
                             "already name their alignment")
    options = EditOptions(layers=None if args.layers is None else tuple(args.layers), per_layer=args.per_layer,
                          ganspace_mode=args.ganspace_mode, sefa_torgb=args.sefa_torgb)
    return specs, EditFolderOptions(
        out=args.out, latents=args.latents, input=args.input, checkpoint=args.checkpoint, generator=args.generator,
        align=args.align, align_size=args.align_size, all_faces=args.all_faces, min_score=args.min_score,
        edit_options=options, encoder_edit=args.encoder_edit, idx_k=args.idx_k, feature_scale=args.feature_scale,
        size=args.size, fmt=args.format, overwrite=args.overwrite, paste_back=args.paste_back, feather=args.feather,
        batch=args.batch, device=args.device, impl=args.impl, progress=not args.no_progress)


@cli.exit_statuses(usage=(UsageError, JobError, AlignExtraMissing))
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    specs, options = parse_args(args)
    device_type = resolve_device(args.device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        summary = edit_folder(specs, options)
    if summary.get("no_crop") and not summary["interrupted"]:
        return cli.report_error("no photo gave a face crop: nothing to edit", cli.EXIT_FAILED)
    print(f"{summary['done']} edited, {summary['skipped']} skipped (already finished), {summary['failed']} failed "
          f"of {summary['total']} in {summary['seconds']:.1f} s -> {display_path(args.out)}")
    if args.paste_back:
        print(f"paste-back: {summary['pasted']} image(s) pasted into their photos now "
              f"({display_path(args.out / PASTED_DIR)}); {len(summary['not_pasted'])} without a usable alignment "
              "record or photo (listed in summary.json)")
    return cli.summary_exit_status(summary)


if __name__ == "__main__":
    sys.exit(main())
