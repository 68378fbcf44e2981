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
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clcae import cli
from clcae.align.detect import AlignExtraMissing, FaceDetector
from clcae.align.ffhq import align_inputs, alignment_record_for, format_align_summary
from clcae.align.paste import ALIGNED_DIR, PASTED_DIR, PasteTarget, load_paste_target
from clcae.checkpoints import CheckpointError, load_generator, load_inverter
from clcae.data.images import ImageReadError, display_path, save_image
from clcae.editing import GANSPACE_MODES, REPRESENTATIONS, encoder_edit, feature_at, representations_of
from clcae.editing.specs import (EDIT_KINDS, EditOptions, EditSpec, edit_function, parse_edit, parse_layers,
                                 parse_strengths, render_edit, strength_label, unique_labels)
from clcae.fileio import atomic_write
from clcae.networks.encoders import DEFAULT_IDX_K
from clcae.inversion.latents import check_against_generator, read_latents
from clcae.inversion.runner import FORMATS, SIZES, RunnerError, output_at_size, resolve_device
from clcae.sampling import image_grid

# The edit specifications live in clcae.editing.specs (shared with scripts/photo.py and the app).
__all__ = ["EDIT_KINDS", "EditSpec", "parse_edit", "parse_strengths", "parse_layers", "strength_label", "main"]

GRID_PADDING = 2


class UsageError(Exception):
    """A problem with the arguments or the files they name (exit status 2)."""


# ---------------------------------------------------------------------------------------------------- parsing
def edit_options(args: argparse.Namespace) -> EditOptions:
    """The edit options of the command line."""
    return EditOptions(layers=None if args.layers is None else tuple(args.layers), per_layer=args.per_layer,
                       ganspace_mode=args.ganspace_mode, sefa_torgb=args.sefa_torgb)


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class Item:
    """One image to edit: its output name and where its codes come from."""

    name: str
    path: Path


def list_latents(source: Path) -> list[Item]:
    """The ``.pt`` files of a latents folder (recursive; an invert.py run folder means its ``latents/``) or one
    file; names are paths relative to the folder without ``.pt``."""
    if source.is_file():
        return [Item(source.stem, source)]
    if not source.is_dir():
        raise UsageError(f"--latents {display_path(source)}: no such file or folder")
    root = source / "latents" if (source / "latents").is_dir() else source
    files = sorted(p for p in root.rglob("*.pt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"--latents {display_path(source)}: no .pt files found")
    return [Item(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]


class GeneratorSource:
    """The generator for each latents file: ``--generator`` if given, else the checkpoint the file names
    (a generator file, an official pSp / e4e / CLCAE checkpoint, or our inverter), loaded once per path."""

    def __init__(self, generator: Path | None, device: torch.device, impl: str):
        self.device, self.impl = device, impl
        self.fixed = None
        if generator is not None:
            if not generator.is_file():
                raise UsageError(f"--generator {display_path(generator)}: no such file")
            try:
                self.fixed = load_generator(generator, device=device, impl=impl)
            except CheckpointError as e:
                raise UsageError(f"--generator {e}") from None
        self._cache: dict[str, Any] = {}

    def get(self, latents: dict[str, Any]):
        if self.fixed is not None:
            return self.fixed
        ckpt = latents.get("checkpoint")
        if not isinstance(ckpt, str) or ckpt in ("", "None"):
            raise ValueError("the file names no checkpoint to take the generator from; pass --generator")
        if ckpt not in self._cache:
            self._cache[ckpt] = self._load(ckpt)
        got = self._cache[ckpt]
        if isinstance(got, Exception):
            raise got
        return got

    def _load(self, ckpt: str):
        path = Path(ckpt)
        if not path.is_file():
            return ValueError(f"its checkpoint {ckpt} does not exist here; pass --generator")
        try:
            return load_generator(path, device=self.device, impl=self.impl)
        except CheckpointError as e:
            if "'inverter' checkpoint" not in str(e):
                return ValueError(f"cannot take the generator from {ckpt}: {e}")
        except Exception as e:  # noqa: BLE001 - reported for the files that name it; the run goes on
            return ValueError(f"cannot take the generator from {ckpt}: {type(e).__name__}: {e}")
        try:
            return load_inverter(path, device=self.device, impl=self.impl).decoder
        except Exception as e:  # noqa: BLE001 - as above
            return ValueError(f"cannot take the generator from {ckpt}: {e}")


# ---------------------------------------------------------------------------------------------------- outputs
def edit_paths(out: Path, label: str, name: str, kinds: list[str], strengths: list[float],
               fmt: str) -> tuple[Path, dict[tuple[str, float], Path]]:
    """``(grid path, {(kind, strength): image path})`` of one image under one edit."""
    images = {(k, s): out / label / k / name / f"s{strength_label(s)}.{fmt}" for k in kinds for s in strengths}
    return out / label / "grids" / f"{name}.jpg", images


def paste_paths(out: Path, label: str, name: str, kinds: list[str], strengths: list[float],
                fmt: str) -> dict[tuple[str, float], Path]:
    """``{(kind, strength): OUT/pasted/LABEL/KIND/NAME/s+3.FMT}``: the full-size photos of ``--paste-back``."""
    return {(k, s): out / PASTED_DIR / label / k / name / f"s{strength_label(s)}.{fmt}"
            for k in kinds for s in strengths}


def _finished(paths: list[Path]) -> bool:
    try:
        return all(os.stat(p).st_size > 0 for p in paths)
    except OSError:
        return False


def alignment_record(item: Item, latents: dict[str, Any] | None) -> tuple[Path | None, str]:
    """``(record, why_not)``: the alignment record of an input, or ``None`` and the reason.

    Latents name their record (``'alignment'``, written by invert.py for aligned crops); when that path no longer
    exists, ``RUN/aligned/NAME.json`` is tried for a latents file at ``RUN/latents/NAME.pt`` (a moved run folder).
    An image input (``--input``) uses the record beside it (``NAME.json``, as scripts/align.py writes it).
    """
    if latents is None:
        found = alignment_record_for(item.path)
        if found is None:
            return None, (f"no alignment record {display_path(item.path.with_suffix('.json'))} beside the image "
                          "(align the photos with --align, or give the crops of scripts/align.py)")
        return found, ""
    named = latents.get("alignment")
    if not isinstance(named, str) or not named:
        return None, ("its latents carry no alignment record (invert the photos with scripts/invert.py --align, "
                      "or invert the crops of scripts/align.py)")
    if Path(named).is_file():
        return Path(named), ""
    latents_root = item.path.parents[len(Path(item.name).parts) - 1]
    moved = latents_root.parent / ALIGNED_DIR / f"{item.name}.json"
    if latents_root.name == "latents" and moved.is_file():
        return moved, ""
    return None, f"its alignment record {named} does not exist here"


# ---------------------------------------------------------------------------------------------------- running
@torch.no_grad()
def edit_one(generator, latents: dict[str, Any], spec: EditSpec, args: argparse.Namespace, idx_k: int,
             feature_scale: float, input_size: tuple[int, int], kinds: list[str], f_gen: torch.Tensor | None,
             out: Path, name: str, inverter=None, x: torch.Tensor | None = None,
             paste: PasteTarget | None = None) -> None:
    """Render the sweep of one edit for one image and write its images and grid (grid last); with ``paste``, also
    the photo with each edited crop (at the generator's resolution) pasted back, under ``OUT/pasted/``."""
    fn = edit_function(spec, generator, edit_options(args))
    strengths = spec.strengths
    if inverter is not None and args.encoder_edit and spec.kind == "interfacegan":
        direction = spec.loaded_direction(generator)
        if direction.per_layer or direction.layers is not None or args.layers is not None:
            raise ValueError("--encoder-edit moves the foundation code (every layer): it takes one [D] direction "
                             "and no layer choice (--layers, --per-layer, or layers stored in the file)")
        device = generator.latent_avg.device
        full: dict[tuple[str, float], torch.Tensor] = {}
        for start in range(0, len(strengths), args.batch):
            chunk = strengths[start:start + args.batch]
            s = torch.tensor(chunk, dtype=torch.float32, device=device)
            res = encoder_edit(inverter, x.expand(len(chunk), -1, -1, -1), s[:, None] * direction.vector.to(device))
            for kind in kinds:
                images = res[f"image_{kind}"].float().cpu()
                for j, value in enumerate(chunk):
                    full[(kind, value)] = images[j]
    else:
        full = render_edit(generator, latents, fn, strengths, kinds=kinds, idx_k=idx_k, feature_scale=feature_scale,
                           f_gen=f_gen, noise=latents.get("noise"), batch=args.batch)
    rendered = {key: output_at_size(image[None], input_size, args.size)[0] for key, image in full.items()}
    grid_path, image_paths = edit_paths(out, spec.label, name, kinds, strengths, args.format)
    for key, path in image_paths.items():
        save_image(rendered[key], path)
    if paste is not None:
        for key, path in paste_paths(out, spec.label, name, kinds, strengths, args.format).items():
            save_image(paste.paste(full[key], args.feather), path)
    grid = image_grid(torch.stack([rendered[(k, sv)].clamp(-1, 1) for k in kinds for sv in strengths]),
                      nrow=len(strengths), padding=GRID_PADDING)
    save_image(grid, grid_path)


def _latents_meta(latents: dict[str, Any], args: argparse.Namespace, generator) -> tuple[int, float, tuple[int, int]]:
    idx_k = args.idx_k if args.idx_k is not None else int(latents.get("idx_k", DEFAULT_IDX_K))
    scale = args.feature_scale if args.feature_scale is not None else float(latents.get("feature_scale", 1.0))
    size = latents.get("input_size") or [generator.size, generator.size]
    try:
        input_size = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        input_size = (generator.size, generator.size)
    return idx_k, scale, input_size


def _align_photos(args: argparse.Namespace, inverter, detector: FaceDetector) -> tuple[Path, dict]:
    """``--align``: the photos of ``--input`` aligned into ``OUT/aligned/``; ``(crop folder, align summary)``."""
    crops = args.out / ALIGNED_DIR
    size = args.align_size or max(inverter.input_size)
    try:
        summary = align_inputs(args.input, crops, size=size, all_faces=args.all_faces, detector=detector,
                               overwrite=args.overwrite, progress=not args.no_progress, exclude=args.out)
    except RunnerError as e:
        raise UsageError(str(e)) from None
    return crops, summary


def run(args: argparse.Namespace) -> dict:
    """Edit every image; returns the summary (also written to ``OUT/summary.json``)."""
    from tqdm.auto import tqdm

    specs = []
    for text in args.edit:
        try:
            specs.append(parse_edit(text))
        except ValueError as e:
            raise UsageError(f"--edit {e}") from None
    for spec in specs:
        if spec.path is not None and not spec.path.is_file():
            raise UsageError(f"--edit {spec.text!r}: no such file {display_path(spec.path)}")
    unique_labels(specs)
    if not 0.0 <= args.feather <= 0.5:
        raise UsageError(f"--feather must be in [0, 0.5] (a fraction of the crop side); got {args.feather}")
    if not args.align and (args.align_size is not None or args.all_faces):
        raise UsageError("--align-size and --all-faces need --align")
    try:
        device = resolve_device(args.device)
    except RunnerError as e:
        raise UsageError(str(e)) from None
    out: Path = args.out
    inverter = None
    align_summary = None
    if args.input is not None:
        from clcae.inversion.runner import list_inputs, load_method, read_input

        if args.checkpoint is None:
            raise UsageError("--input needs --checkpoint (an inverter file)")
        detector = FaceDetector(min_score=args.min_score) if args.align else None  # fails early without the extra
        try:
            loaded = load_method(args.checkpoint, generator=args.generator, device=device, impl=args.impl)
        except RunnerError as e:
            raise UsageError(str(e)) from None
        inverter = loaded.inverter
        if args.encoder_edit and inverter.arch != "clcae":
            raise UsageError(f"--encoder-edit needs a CLCAE inverter; {args.checkpoint} holds {inverter.arch}")
        source = args.input
        if args.align:
            source, align_summary = _align_photos(args, inverter, detector)
            print(format_align_summary(align_summary))
            no_crop = not align_summary["aligned"] and not align_summary["skipped"]
            if align_summary["interrupted"] or no_crop:
                return _write_summary(out, {"done": 0, "skipped": 0, "failed": 0, "total": 0, "failures": [],
                                            "interrupted": align_summary["interrupted"], "seconds": 0.0,
                                            "no_crop": no_crop, "no_face": align_summary["no_face"],
                                            "align": align_summary})
        try:
            items_in, _ = list_inputs(source, exclude=None if args.align else out)
        except RunnerError as e:
            raise UsageError(str(e)) from None
        items = [Item(it.name, it.path) for it in items_in]
        generators = None
    else:
        if args.latents is None:
            raise UsageError("give --latents (files written by scripts/invert.py) or --input with --checkpoint")
        if args.encoder_edit:
            raise UsageError("--encoder-edit needs the images (--input with a CLCAE --checkpoint)")
        if args.align:
            raise UsageError("--align needs the photos (--input with --checkpoint); latents from invert.py --align "
                             "already name their alignment")
        items = list_latents(args.latents)
        generators = GeneratorSource(args.generator, device, args.impl)

    done = skipped = pasted = 0
    failures: list[dict[str, str]] = []
    not_pasted: list[dict[str, str]] = []
    start = time.perf_counter()
    interrupted = False

    def fail(item: Item, reason: str) -> None:
        shown = display_path(item.path)
        for prefix in (f"{shown}: ", f"{item.path}: "):  # checkpoint errors start with the file name already
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        failures.append({"name": item.name, "path": shown, "reason": reason})
        print(f"skipped {display_path(item.path)}: {reason}", file=sys.stderr)

    def no_paste(item: Item, reason: str) -> None:
        not_pasted.append({"name": item.name, "path": display_path(item.path), "reason": reason})
        print(f"no paste-back for {display_path(item.path)}: {reason}", file=sys.stderr)

    bar = tqdm(items, disable=args.no_progress, desc="editing", unit="image")
    try:
        for item in bar:
            x = None
            try:
                if inverter is not None:
                    generator = inverter.decoder
                    x = read_input(item.path, inverter.input_size).unsqueeze(0).to(device)
                    res = inverter.invert(x, images=())
                    latents = {k: res[k][0] for k in ("w", "wplus", "f") if k in res}
                    latents.update(idx_k=getattr(inverter, "idx_k", DEFAULT_IDX_K),
                                   feature_scale=getattr(inverter, "feature_scale", 1.0),
                                   input_size=list(inverter.input_size))
                else:
                    latents = read_latents(item.path)
                    generator = generators.get(latents)
                check_against_generator(latents, generator)
                idx_k, scale, input_size = _latents_meta(latents, args, generator)
            except (ImageReadError, CheckpointError, ValueError) as e:
                fail(item, getattr(e, "reason", None) or str(e))
                continue
            kinds = representations_of(latents)

            def wanted(spec: EditSpec, pasting: bool) -> list[Path]:
                grid_path, image_paths = edit_paths(out, spec.label, item.name, kinds, spec.strengths, args.format)
                files = [*image_paths.values(), grid_path]
                if pasting:
                    files += paste_paths(out, spec.label, item.name, kinds, spec.strengths, args.format).values()
                return files

            record, why_not, paste = None, "", None
            if args.paste_back:
                record, why_not = alignment_record(item, None if inverter is not None else latents)
                if record is not None and (args.overwrite or not all(_finished(wanted(s, True)) for s in specs)):
                    try:  # the photo is read only when something is to be pasted
                        paste = load_paste_target(record)
                    except ValueError as e:
                        record, why_not = None, str(e)
                if record is None:
                    no_paste(item, why_not)
            todo = [spec for spec in specs if args.overwrite or not _finished(wanted(spec, record is not None))]
            if not todo:
                skipped += 1
                continue
            try:
                f_gen = None
                if "f" in latents:
                    noise = [t.to(device) for t in latents["noise"]] if "noise" in latents else None
                    f_gen, _ = feature_at(generator, latents["wplus"].to(device)[None], idx_k, noise=noise)
                    if f_gen.shape[1:] != latents["f"].shape:
                        raise ValueError(f"'f' has shape {list(latents['f'].shape)}; the generator's activation at "
                                         f"idx_k={idx_k} has {list(f_gen.shape[1:])} (wrong --idx-k?)")
                for spec in todo:
                    edit_one(generator, latents, spec, args, idx_k, scale, input_size, kinds, f_gen, out, item.name,
                             inverter=inverter, x=x, paste=paste)
            except (CheckpointError, ValueError) as e:
                fail(item, str(e))
                continue
            done += 1
            if paste is not None:
                pasted += 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    summary = {"done": done, "skipped": skipped, "failed": len(failures), "total": len(items),
               "failures": failures, "interrupted": interrupted,
               "seconds": round(time.perf_counter() - start, 3),
               "edits": [{"label": s.label, "edit": s.text, "strengths": s.strengths} for s in specs],
               "rows": list(REPRESENTATIONS), "size": args.size, "ganspace_mode": args.ganspace_mode,
               "encoder_edit": bool(args.encoder_edit)}
    if args.paste_back:
        summary.update(pasted=pasted, not_pasted=not_pasted, feather=args.feather)
    if align_summary is not None:
        summary.update(no_face=align_summary["no_face"], align=align_summary)
    return _write_summary(out, summary)


def _write_summary(out: Path, summary: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "summary.json", "w", fsync=False, encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


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


@cli.exit_statuses(usage=(UsageError, AlignExtraMissing))
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.latents is not None and args.input is not None:
        return cli.report_error("give --latents or --input, not both")
    device_type = resolve_device(args.device).type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        summary = run(args)
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
