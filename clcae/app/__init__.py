"""``clcae app``: a local web app for editing a face photo in the browser.

Open a photo (or pick the bundled example), and the app finds and aligns the largest face, inverts it with the
chosen model, shows the reconstructions from w, W+ and W+F side by side, and gives one slider per direction file
of the directions folder; moving a slider renders the edit and pastes it back into the photo. The edited photo
and the latents file (``latents.pt``, as ``clcae invert`` writes it) can be downloaded.

    clcae app                                     # shipped SynthFaces models, http://127.0.0.1:7860/
    clcae app --checkpoint ffhq=ffhq_inversion.pt --generator stylegan2-ffhq-config-f.pt \\
        --avg-image image_avg.png --directions editings/ --port 8080

Needs the ``[align]`` extra for face detection (``pip install -e ".[app]"`` installs it); the server itself is
Python's standard library. The shipped SynthFaces models are out of domain for real photos: the page says so.

Safety: binds to 127.0.0.1 unless ``--host`` says otherwise (bound there, it answers only requests addressed to a
loopback name); refuses uploads over ``--max-upload-mb`` (checked by the page, and by the server from the
``Content-Length``) and files that are not images with a message; never uses an uploaded file's name (only its bytes
are sent); keeps each photo in its own session (128 random bits, a private folder, only the files it wrote are
served); a bad upload leaves the app, and the photo already open, as they were. See :mod:`clcae.app.editor` and
:mod:`clcae.app.server`.

Exit status: 0 stopped with Ctrl-C; 2 a problem with the arguments (a missing checkpoint, the [align] extra
missing, the port in use).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import cli
from ..align.detect import AlignExtraMissing, FaceDetector
from ..jobs import JobError, resolve_device
from ..pretrained import (SYNTHFACES_CLCAE, SYNTHFACES_DIRECTIONS, SYNTHFACES_E4E, SYNTHFACES_PSP, pretrained_dir,
                          shipped)

__all__ = ["build_parser", "default_models", "main"]


def default_models() -> list:
    """The shipped SynthFaces inverters that are present: CLCAE, pSp, e4e (as :class:`ModelChoice`)."""
    from .editor import ModelChoice

    names = [("clcae (SynthFaces)", SYNTHFACES_CLCAE), ("psp (SynthFaces)", SYNTHFACES_PSP),
             ("e4e (SynthFaces)", SYNTHFACES_E4E)]
    return [ModelChoice(label, path) for label, name in names if (path := shipped(name)) is not None]


def _model_arg(text: str):
    from .editor import ModelChoice

    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).stem, text
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE or FILE; got {text!r}")
    return ModelChoice(name, Path(path))


def _port(text: str) -> int:
    port = cli.non_negative_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``clcae app``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--checkpoint", type=_model_arg, action="append", default=[], metavar="[NAME=]FILE",
                   help="an inverter for the menu (repeatable; default: the shipped SynthFaces CLCAE, pSp, e4e)")
    g.add_argument("--generator", type=Path, default=None,
                   help="StyleGAN2 file supplying an official CLCAE checkpoint's latent_avg (for --checkpoint)")
    g.add_argument("--avg-image", type=Path, default=None, help="average-image PNG for CLCAE (for --checkpoint)")
    g.add_argument("--directions", type=Path, default=None,
                   help="folder of InterFaceGAN direction files NAME.pt, one slider each (default: the shipped "
                        f"pretrained/{SYNTHFACES_DIRECTIONS})")
    g.add_argument("--min-score", type=float, default=0.3, help="face detector score threshold (default 0.3)")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=_port, default=7860, help="port (default 7860; 0: any free one)")
    g.add_argument("--max-upload-mb", type=float, default=10.0, help="largest photo accepted, in MiB (default 10)")
    g.add_argument("--max-sessions", type=cli.positive_int, default=16,
                   help="photos kept open at once; the least recently used is closed beyond (default 16)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads for torch")
    g.add_argument("--verbose", action="store_true", help="log every request")
    return p


@cli.exit_statuses(usage=(JobError, AlignExtraMissing))
def main(argv: list[str] | None = None) -> int:
    """Start the app and serve until Ctrl-C; returns the exit status (see the module docstring)."""
    from .editor import ModelChoice, PhotoEditor
    from .server import make_server

    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.max_upload_mb <= 0:
        return cli.report_error(f"--max-upload-mb must be > 0; got {args.max_upload_mb}")
    models = [ModelChoice(m.name, m.checkpoint, args.generator, args.avg_image) for m in args.checkpoint]
    models = models or default_models()
    if not models:
        return cli.report_error(f"no --checkpoint given and no shipped inverter in pretrained/ "
                                f"({SYNTHFACES_CLCAE}, ...); pass --checkpoint FILE")
    missing = [str(m.checkpoint) for m in models if not m.checkpoint.is_file()]
    if missing:
        return cli.report_error(f"--checkpoint: no such file {', '.join(missing)}")
    directions = args.directions if args.directions is not None else pretrained_dir() / SYNTHFACES_DIRECTIONS
    if args.directions is not None and not directions.is_dir():
        return cli.report_error(f"--directions {directions}: not a folder")
    detector = FaceDetector(min_score=args.min_score)  # fails here, with the install command, without the extra
    editor = PhotoEditor(models, directions, device=resolve_device(args.device), detector=detector,
                         max_upload_bytes=int(args.max_upload_mb * 2 ** 20), max_sessions=args.max_sessions)
    try:
        server = make_server(editor, args.host, args.port, verbose=args.verbose)
    except OSError as e:
        editor.close()
        return cli.report_error(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    print(f"clcae app: {server.url}  (models: {', '.join(editor.models)}; sliders: "
          f"{', '.join(editor.direction_names()) or 'none'}; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
        editor.close()
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
