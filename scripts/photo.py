#!/usr/bin/env python
"""One photograph end to end: align the largest face (or --face N, or --all-faces), invert it, edit it, paste every
result back into the photo, and write one HTML page with the steps side by side. See docs/REAL_PHOTOS.md.

Needs the optional extra: pip install -e .[align]   (dlib-bin and face_recognition_models).

Writes to --out (default outputs/photo/STEM):
  index.html                        original | aligned crop | reconstructions w / W+ / W+F | pasted back, and one
                                    table per edit (strengths x edited crops | pasted back); prints its path
  original.png, detected.jpg        the photo as processed (EXIF orientation applied), and with every face found
                                    numbered (largest first; the edited ones with their 68 landmarks and crop square)
  aligned.png, aligned.json         the FFHQ crop and its alignment record
  latents.pt                        the codes (scripts/edit.py --latents DIR/latents.pt --paste-back reads it)
  reconstruction_KIND.png           at the generator's resolution
  edits/LABEL/KIND_s+2.png          the edited crops
  pasted/reconstruction.png, pasted/LABEL/s+2.png    the full-size photo with the crop pasted back

Faces. The first line printed lists the faces found, largest first, numbered from 0. By default face 0 (the
largest) is edited; when the photo has more, a note says so (printed and on the page). --face N edits face N
instead; --all-faces edits every face: its files (aligned.*, latents.pt, reconstruction_*, edits/) go to
OUT/face0/, OUT/face1/, ..., and every pasted photo holds all the faces, each edited.

--edit (repeatable; as scripts/edit.py), STRENGTHS a list "-2,2" or a range "A:B:N":
  interfacegan:PATH:STRENGTHS   ganspace:PCA:COMP:FIRST:LAST:STRENGTHS   sefa:K:STRENGTHS

Models. Without --checkpoint the shipped SynthFaces CLCAE model (pretrained/synthfaces64_clcae.pt) is used. It is
OUT OF DOMAIN for real photos: it was trained on drawn 64 px faces, so the pipeline runs, but the reconstruction
is the nearest drawn face, not a photo of this person (the page says so). For real people pass the official FFHQ
checkpoints (docs/OFFICIAL_CHECKPOINTS.md):
  python scripts/photo.py me.jpg --checkpoint ffhq_inversion.pt --generator stylegan2-ffhq-config-f.pt \\
      --avg-image image_avg.png --edit interfacegan:editings/smile.pt:-2,2 --edit interfacegan:editings/age.pt:3

Exit status: 0 done; 1 no face found in the photo; 2 a problem with the arguments (unreadable photo, missing or
invalid checkpoint, an edit file that is missing or does not fit the generator, a --face the photo does not have,
the [align] extra missing); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from clcae import cli
from clcae.align.detect import AlignExtraMissing, FaceDetector
from clcae.data.images import display_path
from clcae.editing import GANSPACE_MODES, EditOptions, parse_edit, parse_layers
from clcae.inversion.runner import RESIZE_POLICIES, load_method
from clcae.jobs import JobError, resolve_device
from clcae.photo import PASTE_ORDER, NoFaceError, PipelineError, process_photo
from clcae.pretrained import SYNTHFACES_CLCAE, pretrained_dir

DEFAULT_OUT = Path("outputs/photo")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path, help="the photograph (any image file; EXIF orientation is applied)")
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="inverter: ours, or an official CLCAE / pSp / e4e checkpoint (default: the shipped "
                        f"pretrained/{SYNTHFACES_CLCAE}, out of domain for real photos)")
    g.add_argument("--generator", type=Path, default=None,
                   help="StyleGAN2 file supplying an official CLCAE checkpoint's latent_avg")
    g.add_argument("--avg-image", type=Path, default=None, help="average-image PNG for CLCAE (image_avg.png)")
    g = p.add_argument_group("edits")
    g.add_argument("--edit", action="append", default=[], metavar="SPEC",
                   help="interfacegan:PATH:STRENGTHS | ganspace:PCA:COMP:FIRST:LAST:STRENGTHS | sefa:K:STRENGTHS "
                        "(repeatable; none: align, invert and paste back only)")
    g.add_argument("--layers", type=cli.arg_type(parse_layers), default=None, help="W+ layers InterFaceGAN / SeFa edits move, e.g. 0-5")
    g.add_argument("--per-layer", action="store_true", help="use every row of a per-layer direction on its layer")
    g.add_argument("--ganspace-mode", choices=GANSPACE_MODES, default="relative",
                   help="relative: add strength * std * component; absolute: set the coordinate")
    g.add_argument("--sefa-torgb", action="store_true", help="SeFa: also factorise the ToRGB modulations")
    g = p.add_argument_group("faces, alignment and paste-back")
    g.add_argument("--face", type=cli.non_negative_int, default=0, metavar="N",
                   help="edit face N of those found, numbered from the largest (default 0: the largest)")
    g.add_argument("--all-faces", action="store_true",
                   help="edit every face found and paste them all into each result (per-face files in OUT/faceN/)")
    g.add_argument("--align-size", type=cli.positive_int, default=None,
                   help="side of the aligned crop (default: the encoder's input side)")
    g.add_argument("--min-score", type=float, default=0.3, help="face detector score threshold (default 0.3)")
    g.add_argument("--upsample", type=cli.non_negative_int, default=1,
                   help="2x upsamplings before detection (default 1, as FFHQ); more finds smaller faces")
    g.add_argument("--feather", type=float, default=0.1,
                   help="soft edge of the paste-back, a fraction of the crop side in [0, 0.5] (default 0.1)")
    g.add_argument("--paste-kind", choices=list(PASTE_ORDER), default=None,
                   help="representation pasted back (default: W+F for CLCAE, else W+)")
    g.add_argument("--resize", choices=RESIZE_POLICIES, default="resize",
                   help="how the crop reaches the encoder's input size (default resize)")
    g = p.add_argument_group("output and execution")
    g.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT}/STEM)")
    g.add_argument("--format", choices=["png", "jpg"], default="png", help="image format (default png, lossless)")
    g.add_argument("--batch", type=cli.positive_int, default=8, help="strengths rendered per generator pass")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--impl", choices=["auto", "cuda", "fast", "ref"], default="auto", help="generator ops")
    g.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch")
    return p


def _default_checkpoint() -> Path:
    path = pretrained_dir() / SYNTHFACES_CLCAE
    if not path.is_file():
        raise JobError(
            f"no --checkpoint given, and the shipped SynthFaces CLCAE model {path} does not exist yet (it has not "
            "been trained into pretrained/). Pass an inverter: --checkpoint FILE; for real photos the official FFHQ "
            "CLCAE checkpoint with --generator stylegan2-ffhq-config-f.pt (see docs/REAL_PHOTOS.md).")
    return path


@cli.exit_statuses(usage=(JobError, PipelineError, AlignExtraMissing), failure=(NoFaceError,),
                   interrupted="interrupted")
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        edits = [parse_edit(text) for text in args.edit]
    except ValueError as e:
        raise PipelineError(f"--edit {e}") from None
    if args.all_faces and args.face != 0:
        raise PipelineError("--face and --all-faces: give one (--all-faces edits every face)")
    if not args.photo.is_file():
        raise PipelineError(f"{display_path(args.photo)}: no such file")
    detector = FaceDetector(min_score=args.min_score, upsample=args.upsample)  # fails early without the extra
    checkpoint = args.checkpoint if args.checkpoint is not None else _default_checkpoint()
    loaded = load_method(checkpoint, generator=args.generator, device=resolve_device(args.device), impl=args.impl,
                         avg_image=args.avg_image, resize=args.resize)
    options = EditOptions(layers=None if args.layers is None else tuple(args.layers), per_layer=args.per_layer,
                          ganspace_mode=args.ganspace_mode, sefa_torgb=args.sefa_torgb)
    out = args.out if args.out is not None else DEFAULT_OUT / args.photo.stem
    result = process_photo(args.photo, out, loaded, edits, detector=detector, align_size=args.align_size,
                           feather=args.feather, paste_kind=args.paste_kind, options=options, fmt=args.format,
                           batch=args.batch, resize=args.resize, face=args.face, all_faces=args.all_faces,
                           log=print)
    if result.faces_note():
        print(f"note: {result.faces_note()} --face N picks another, --all-faces edits every face.")
    if result.out_of_domain:
        print(f"note: {result.note}")
    print(display_path(result.index))
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
