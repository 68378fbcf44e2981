#!/usr/bin/env python
"""Align the faces of photographs the way FFHQ was aligned, for the FFHQ encoders (CLCAE, pSp, e4e).

Needs the optional extra: pip install -e .[align]   (dlib-bin and face_recognition_models). See docs/REAL_PHOTOS.md.

Writes to --out, per photo NAME (its path under --input without the extension):
  NAME.png, NAME.json                 the largest face: the aligned crop and its record (the quad that maps the
                                      crop back into the photo, the source path and size, the landmarks)
  NAME_face0.png, NAME_face0.json...  with --all-faces: every face, largest first
and align_run.json (the settings) and align_summary.json (counts; each file without a crop, and why).
Re-running the same command skips photos already aligned, so an interrupted run resumes. Photos without a face
and unreadable files are reported one line each and the run goes on.

Examples:
  python scripts/align.py --input photos/ --out aligned/                 # 1024 px, as FFHQ
  python scripts/align.py --input photos/ --out aligned256/ --size 256   # the encoders' input size
  python scripts/align.py --input group.jpg --out faces/ --all-faces

Exit status: 0 when the run completed (photos without a face are reported, not fatal); 1 when no photo gave a
crop; 2 for a problem with the arguments or a missing [align] extra; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clcae.align.detect import AlignExtraMissing, FaceDetector
from clcae.align.folder import align_folder, format_align_summary
from clcae import cli
from clcae.cli import positive_int
from clcae.jobs import JobError


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input and output")
    g.add_argument("--input", type=Path, required=True, help="photo folder (searched recursively) or one photo")
    g.add_argument("--out", type=Path, required=True, help="output folder for the crops and their JSON records")
    g.add_argument("--overwrite", action="store_true",
                   help="redo photos already aligned (default: skip them, so an interrupted run resumes)")
    g = p.add_argument_group("alignment")
    g.add_argument("--size", type=positive_int, default=1024,
                   help="side of the crops in pixels (default 1024, as FFHQ; 256 is the encoders' input)")
    g.add_argument("--transform-size", type=positive_int, default=None,
                   help="supersampled transform side before the final resize (default 4 x --size; FFHQ: 4096)")
    g.add_argument("--no-padding", action="store_true",
                   help="do not pad (reflect + blur) where the crop leaves the photo; the outside is then black")
    g.add_argument("--all-faces", action="store_true", help="one crop per face found (default: the largest)")
    g = p.add_argument_group("detection")
    g.add_argument("--detector", choices=["hog", "cnn"], default="hog",
                   help="dlib's HOG frontal-face detector (as FFHQ; default) or its CNN (slow without CUDA)")
    g.add_argument("--upsample", type=int, default=1, help="2x upsamplings before detection (default 1, as FFHQ)")
    g.add_argument("--min-score", type=float, default=0.3,
                   help="detection score threshold (default 0.3; dlib's own is 0, which also accepts badges)")
    g.add_argument("--detect-size", type=positive_int, default=1024,
                   help="detect on a copy whose longer side is at most this (default 1024); landmarks use the "
                        "full resolution")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.transform_size is not None and args.transform_size < args.size:
        print(f"error: --transform-size ({args.transform_size}) must be >= --size ({args.size})", file=sys.stderr)
        return 2
    try:
        detector = FaceDetector(method=args.detector, upsample=args.upsample, min_score=args.min_score,
                                detect_size=args.detect_size)
        summary = align_folder(args.input, args.out, detector, output_size=args.size, all_faces=args.all_faces,
                               transform_size=args.transform_size, padding=not args.no_padding,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except (AlignExtraMissing, FileNotFoundError, JobError, ValueError) as e:
        return cli.report_error(e)
    except KeyboardInterrupt:
        print("interrupted before the run started", file=sys.stderr)
        return 130
    print(format_align_summary(summary))
    if summary["interrupted"]:
        return 130
    if not summary["aligned"] and not summary["skipped"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
