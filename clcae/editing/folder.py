"""Edit a folder: every image's latents (or the images, inverted on the fly) with every edit, swept over strengths;
the counterpart of :func:`clcae.inversion.runner.invert_folder` and the body of ``scripts/edit.py``.

Writes to ``out``, per edit LABEL and image NAME::

    LABEL/grids/NAME.jpg                 rows: w / wplus / wplus_f (those the latents have), columns: strengths
    LABEL/KIND/NAME/s+3.png, ...         every edited image
    pasted/LABEL/KIND/NAME/s+3.png       with ``paste_back``: the photo with the edited crop put back (full size)
    summary.json

For W+F the feature follows the edit: ``f + G_k(W+_edited) - G_k(W+)`` (docs/EDITING.md). A re-run skips finished
(image, edit) pairs; a bad latents file is reported by name and skipped. The generator of a latents file is
``generator`` if given, else the checkpoint the file names (:class:`GeneratorSource`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..align.detect import FaceDetector
from ..align.folder import align_inputs, format_align_summary
from ..align.paste import ALIGNED_DIR, PASTED_DIR, PasteTarget, load_paste_target
from ..align.records import alignment_record_for
from ..checkpoints import CheckpointError, load_generator, load_inverter
from ..data.images import ImageReadError, display_path, save_image
from ..inversion.latents import check_against_generator, read_latents
from ..inversion.runner import load_method, output_at_size, read_input
from ..jobs import InputItem, JobError, list_inputs, resolve_device, write_json
from ..networks.encoders import DEFAULT_IDX_K
from ..sampling import image_grid
from .fspace import REPRESENTATIONS, encoder_edit, feature_at, representations_of
from .specs import EditOptions, EditSpec, edit_function, render_edit, strength_label, unique_labels

__all__ = ["EditFolderOptions", "GeneratorSource", "edit_folder", "list_latents", "edit_paths", "paste_paths",
           "GRID_PADDING"]

#: Pixels between the cells of an edit grid.
GRID_PADDING = 2


@dataclasses.dataclass(frozen=True)
class EditFolderOptions:
    """What :func:`edit_folder` edits and how (``scripts/edit.py`` fills it from its flags of the same names).

    Attributes:
        out: the output folder.
        latents: latents written by an inversion (a run folder, its ``latents/`` or one ``.pt``); or
        input, checkpoint: images (folder or file) inverted on the fly with this inverter.
        generator: the generator of the latents (default: the checkpoint each file names); with ``input``: the
            StyleGAN2 file that supplies an official CLCAE checkpoint's ``latent_avg``.
        align, align_size, all_faces, min_score: with ``input``: FFHQ-align the photos first (into
            ``out/aligned/``; crop side, every face, detector threshold).
        edit_options: how edits are applied (:class:`~clcae.editing.specs.EditOptions`).
        encoder_edit: InterFaceGAN directions added inside a CLCAE encoder (the official path) instead of to the
            codes.
        idx_k, feature_scale: where and how strongly ``f`` is blended in (default: the latents file's).
        size: ``'official'`` or ``'full'`` (:func:`clcae.inversion.runner.output_at_size`); fmt: ``'png'`` or
            ``'jpg'``.
        overwrite: redo finished (image, edit) pairs.
        paste_back, feather: also paste each edited crop back into its photo, with this soft edge.
        batch: strengths per generator pass; device, impl: where and with which ops; progress: a tqdm bar.
    """

    out: Path
    latents: Path | None = None
    input: Path | None = None
    checkpoint: Path | None = None
    generator: Path | None = None
    align: bool = False
    align_size: int | None = None
    all_faces: bool = False
    min_score: float = 0.3
    edit_options: EditOptions = EditOptions()
    encoder_edit: bool = False
    idx_k: int | None = None
    feature_scale: float | None = None
    size: str = "official"
    fmt: str = "png"
    overwrite: bool = False
    paste_back: bool = False
    feather: float = 0.1
    batch: int = 8
    device: str = "auto"
    impl: str = "auto"
    progress: bool = True


# ---------------------------------------------------------------------------------------------------- inputs
def list_latents(source: Path) -> list[InputItem]:
    """The ``.pt`` files of a latents folder (recursive; an invert.py run folder means its ``latents/``) or one
    file; names are paths relative to the folder without ``.pt``."""
    if source.is_file():
        return [InputItem(source, source.stem)]
    if not source.is_dir():
        raise JobError.about("latents", f"{display_path(source)}: no such file or folder")
    root = source / "latents" if (source / "latents").is_dir() else source
    files = sorted(p for p in root.rglob("*.pt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise JobError.about("latents", f"{display_path(source)}: no .pt files found")
    return [InputItem(p, p.relative_to(root).with_suffix("").as_posix()) for p in files]


class GeneratorSource:
    """The generator for each latents file: ``--generator`` if given, else the checkpoint the file names
    (a generator file, an official pSp / e4e / CLCAE checkpoint, or our inverter), loaded once per path."""

    def __init__(self, generator: Path | None, device: torch.device, impl: str):
        self.device, self.impl = device, impl
        self.fixed = None
        if generator is not None:
            if not generator.is_file():
                raise JobError.about("generator", f"{display_path(generator)}: no such file")
            try:
                self.fixed = load_generator(generator, device=device, impl=impl)
            except CheckpointError as e:
                raise JobError.about("generator", str(e)) from None
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


def alignment_record(item: InputItem, latents: dict[str, Any] | None) -> tuple[Path | None, str]:
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
def edit_one(generator, latents: dict[str, Any], spec: EditSpec, opts: EditFolderOptions, idx_k: int,
             feature_scale: float, input_size: tuple[int, int], kinds: list[str], f_gen: torch.Tensor | None,
             out: Path, name: str, inverter=None, x: torch.Tensor | None = None,
             paste: PasteTarget | None = None) -> None:
    """Render the sweep of one edit for one image and write its images and grid (grid last); with ``paste``, also
    the photo with each edited crop (at the generator's resolution) pasted back, under ``OUT/pasted/``."""
    fn = edit_function(spec, generator, opts.edit_options)
    strengths = spec.strengths
    if inverter is not None and opts.encoder_edit and spec.kind == "interfacegan":
        direction = spec.loaded_direction(generator)
        if direction.per_layer or direction.layers is not None or opts.edit_options.layers is not None:
            raise ValueError("encoder_edit moves the foundation code (every layer): it takes one [D] direction "
                             "and no layer choice (layers, per_layer, or layers stored in the file)")
        device = generator.latent_avg.device
        full: dict[tuple[str, float], torch.Tensor] = {}
        for start in range(0, len(strengths), opts.batch):
            chunk = strengths[start:start + opts.batch]
            s = torch.tensor(chunk, dtype=torch.float32, device=device)
            res = encoder_edit(inverter, x.expand(len(chunk), -1, -1, -1), s[:, None] * direction.vector.to(device))
            for kind in kinds:
                images = res[f"image_{kind}"].float().cpu()
                for j, value in enumerate(chunk):
                    full[(kind, value)] = images[j]
    else:
        full = render_edit(generator, latents, fn, strengths, kinds=kinds, idx_k=idx_k, feature_scale=feature_scale,
                           f_gen=f_gen, noise=latents.get("noise"), batch=opts.batch)
    rendered = {key: output_at_size(image[None], input_size, opts.size)[0] for key, image in full.items()}
    grid_path, image_paths = edit_paths(out, spec.label, name, kinds, strengths, opts.fmt)
    for key, path in image_paths.items():
        save_image(rendered[key], path)
    if paste is not None:
        for key, path in paste_paths(out, spec.label, name, kinds, strengths, opts.fmt).items():
            save_image(paste.paste(full[key], opts.feather), path)
    grid = image_grid(torch.stack([rendered[(k, sv)].clamp(-1, 1) for k in kinds for sv in strengths]),
                      nrow=len(strengths), padding=GRID_PADDING)
    save_image(grid, grid_path)


def _latents_meta(latents: dict[str, Any], opts: EditFolderOptions, generator) -> tuple[int, float, tuple[int, int]]:
    idx_k = opts.idx_k if opts.idx_k is not None else int(latents.get("idx_k", DEFAULT_IDX_K))
    scale = opts.feature_scale if opts.feature_scale is not None else float(latents.get("feature_scale", 1.0))
    size = latents.get("input_size") or [generator.size, generator.size]
    try:
        input_size = (int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        input_size = (generator.size, generator.size)
    return idx_k, scale, input_size


def _align_photos(opts: EditFolderOptions, inverter, detector: FaceDetector) -> tuple[Path, dict]:
    """``align``: the photos of ``input`` aligned into ``OUT/aligned/``; ``(crop folder, align summary)``."""
    crops = opts.out / ALIGNED_DIR
    size = opts.align_size or max(inverter.input_size)
    summary = align_inputs(opts.input, crops, size=size, all_faces=opts.all_faces, detector=detector,
                           overwrite=opts.overwrite, progress=opts.progress, exclude=opts.out)
    return crops, summary


def edit_folder(specs: Sequence[EditSpec], opts: EditFolderOptions) -> dict:
    """Edit every image of ``opts.latents`` (latents files) or ``opts.input`` (images, inverted on the fly with
    ``opts.checkpoint``) with every spec; write the files of the module docstring and ``OUT/summary.json``.

    Returns the summary: ``done``, ``skipped`` (finished before), ``failed`` and ``failures`` (``{'name', 'path',
    'reason'}``), ``total``, ``interrupted``, ``seconds``, ``edits``, ... (with ``paste_back``: ``pasted``,
    ``not_pasted``; with ``align``: ``no_face``, ``align``, and ``no_crop`` when no photo gave a face). Bad files
    are reported (stderr) and skipped. Raises :class:`~clcae.jobs.JobError` for a problem with the settings or the
    files they name, before any work.
    """
    from tqdm.auto import tqdm

    if opts.latents is not None and opts.input is not None:
        raise JobError("give latents or input images, not both")
    if not 0.0 <= opts.feather <= 0.5:
        raise JobError(f"feather must be in [0, 0.5] (a fraction of the crop side); got {opts.feather}")
    specs = list(specs)
    unique_labels(specs)
    for spec in specs:
        if spec.path is not None and not spec.path.is_file():
            raise JobError(f"edit {spec.text!r}: no such file {display_path(spec.path)}")
    device = resolve_device(opts.device)
    out: Path = opts.out
    inverter = None
    align_summary = None
    if opts.input is not None:
        if opts.checkpoint is None:
            raise JobError("input images need a checkpoint (an inverter file) to invert them")
        detector = FaceDetector(min_score=opts.min_score) if opts.align else None  # fails early without the extra
        loaded = load_method(opts.checkpoint, generator=opts.generator, device=device, impl=opts.impl)
        inverter = loaded.inverter
        if opts.encoder_edit and inverter.arch != "clcae":
            raise JobError(f"encoder_edit needs a CLCAE inverter; {opts.checkpoint} holds {inverter.arch}")
        source = opts.input
        if opts.align:
            source, align_summary = _align_photos(opts, inverter, detector)
            print(format_align_summary(align_summary))
            no_crop = not align_summary["aligned"] and not align_summary["skipped"]
            if align_summary["interrupted"] or no_crop:
                return _write_summary(out, {"done": 0, "skipped": 0, "failed": 0, "total": 0, "failures": [],
                                            "interrupted": align_summary["interrupted"], "seconds": 0.0,
                                            "no_crop": no_crop, "no_face": align_summary["no_face"],
                                            "align": align_summary})
        items, _ = list_inputs(source, exclude=None if opts.align else out)
        generators = None
    else:
        if opts.latents is None:
            raise JobError("nothing to edit: give latents (files written by an inversion) or input images")
        if opts.encoder_edit or opts.align:
            raise JobError("encoder_edit and align need the images (input with a checkpoint), not latents")
        items = list_latents(opts.latents)
        generators = GeneratorSource(opts.generator, device, opts.impl)

    done = skipped = pasted = 0
    failures: list[dict[str, str]] = []
    not_pasted: list[dict[str, str]] = []
    start = time.perf_counter()
    interrupted = False

    def fail(item: InputItem, reason: str) -> None:
        shown = display_path(item.path)
        for prefix in (f"{shown}: ", f"{item.path}: "):  # checkpoint errors start with the file name already
            reason = reason[len(prefix):] if reason.startswith(prefix) else reason
        failures.append({"name": item.name, "path": shown, "reason": reason})
        print(f"skipped {display_path(item.path)}: {reason}", file=sys.stderr)

    def no_paste(item: InputItem, reason: str) -> None:
        not_pasted.append({"name": item.name, "path": display_path(item.path), "reason": reason})
        print(f"no paste-back for {display_path(item.path)}: {reason}", file=sys.stderr)

    bar = tqdm(items, disable=not opts.progress, desc="editing", unit="image")
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
                idx_k, scale, input_size = _latents_meta(latents, opts, generator)
            except (ImageReadError, CheckpointError, ValueError) as e:
                fail(item, getattr(e, "reason", None) or str(e))
                continue
            kinds = representations_of(latents)

            def wanted(spec: EditSpec, pasting: bool) -> list[Path]:
                grid_path, image_paths = edit_paths(out, spec.label, item.name, kinds, spec.strengths, opts.fmt)
                files = [*image_paths.values(), grid_path]
                if pasting:
                    files += paste_paths(out, spec.label, item.name, kinds, spec.strengths, opts.fmt).values()
                return files

            record, why_not, paste = None, "", None
            if opts.paste_back:
                record, why_not = alignment_record(item, None if inverter is not None else latents)
                if record is not None and (opts.overwrite or not all(_finished(wanted(s, True)) for s in specs)):
                    try:  # the photo is read only when something is to be pasted
                        paste = load_paste_target(record)
                    except ValueError as e:
                        record, why_not = None, str(e)
                if record is None:
                    no_paste(item, why_not)
            todo = [spec for spec in specs if opts.overwrite or not _finished(wanted(spec, record is not None))]
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
                    edit_one(generator, latents, spec, opts, idx_k, scale, input_size, kinds, f_gen, out, item.name,
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
               "rows": list(REPRESENTATIONS), "size": opts.size, "ganspace_mode": opts.edit_options.ganspace_mode,
               "encoder_edit": bool(opts.encoder_edit)}
    if opts.paste_back:
        summary.update(pasted=pasted, not_pasted=not_pasted, feather=opts.feather)
    if align_summary is not None:
        summary.update(no_face=align_summary["no_face"], align=align_summary)
    return _write_summary(out, summary)


def _write_summary(out: Path, summary: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    return summary
