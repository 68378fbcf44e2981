"""Aligning a folder of photos, resumably: every photo (or every face of it) -> an FFHQ crop and its record, the
run's settings and summary beside them (:func:`align_folder`; :func:`align_inputs` for the invert / edit jobs)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.images import display_path
from ..jobs import JobError, check_run_settings, list_inputs, listed_lines, write_json
from .ffhq import align_face, no_face_reason
from .records import save_alignment

__all__ = ["RUN_FILE", "SUMMARY_FILE", "align_folder", "align_inputs", "format_align_summary"]

#: The run's settings and its summary, written by :func:`align_folder` next to the crops.
RUN_FILE = "align_run.json"
SUMMARY_FILE = "align_summary.json"


def _face_paths(out: Path, name: str, index: int | None) -> tuple[Path, Path]:
    stem = name if index is None else f"{name}_face{index}"
    return out / f"{stem}.png", out / f"{stem}.json"


def _finished(out: Path, name: str, all_faces: bool) -> bool:
    """An image is finished when its first crop's PNG and JSON exist (with ``all_faces`` the faces are written
    last to first, so face 0's JSON is the last file of the image)."""
    png, record = _face_paths(out, name, 0 if all_faces else None)
    return png.is_file() and record.is_file()


def align_folder(inputs: str | os.PathLike, out: str | os.PathLike, detector: Any = None, *,
                 output_size: int = 1024, all_faces: bool = False, transform_size: int | None = None,
                 padding: bool = True, overwrite: bool = False, progress: bool = True,
                 report: Callable[[str], None] | None = None, exclude: str | os.PathLike | None = None) -> dict:
    """Align every photo of a folder (recursive) or one file, writing for each input ``NAME`` (its path under the
    folder without the extension, as :func:`clcae.jobs.list_inputs` names it)::

        OUT/NAME.png, OUT/NAME.json                      the largest face (default)
        OUT/NAME_face0.png, OUT/NAME_face0.json, ...     every face, largest first (all_faces=True)
        OUT/align_run.json, OUT/align_summary.json       the settings; counts and the files without a crop

    Each JSON is the record of :func:`save_alignment` plus ``face_index`` and ``faces_found``; its ``source`` is the
    photo's absolute path, so a paste-back finds the photo from any working directory. Files are written
    atomically; an image with its (first) crop on disk is skipped by a later run, which therefore resumes.
    Unreadable files and photos without a face are reported (through ``report``, one line each) and the run goes
    on; they are retried by the next run.

    Args:
        inputs: a folder or one image.
        out: the output folder (created; may lie inside ``inputs``: it is then not read).
        detector: a :class:`clcae.align.detect.FaceDetector` (default: its defaults).
        output_size, transform_size, padding: see :func:`align_face`.
        all_faces: write every face instead of the largest.
        overwrite: redo finished images (and accept an ``out`` made with other settings).
        progress: show a tqdm bar.
        report: called with each per-file message (default: printed to stderr above the bar).
        exclude: a folder under ``inputs`` that is not read (default: ``out``); e.g. an inversion's output folder
            that holds ``out``.

    Returns:
        The summary (also in ``OUT/align_summary.json``): ``total``, ``aligned`` (images with a crop written now),
        ``faces`` (crops written now), ``skipped`` (finished before), ``no_face`` and ``failed`` (lists of
        ``{'path', 'reason'}``), ``renamed``, ``seconds``, ``interrupted``, ``out``, ``settings``.

    Raises :class:`clcae.jobs.JobError` for a missing input, no images, an output that is not a
    folder, or one holding crops of other settings.
    """
    from tqdm.auto import tqdm

    from ..data.images import ImageReadError, load_image
    from .detect import FaceDetector

    out = Path(os.fsdecode(out))
    if out.exists() and not out.is_dir():
        raise JobError(f"{display_path(out)}: exists and is not a folder")
    if output_size < 1:
        raise JobError(f"output_size must be >= 1; got {output_size}")
    resolved_transform = 4 * output_size if transform_size is None else int(transform_size)
    if resolved_transform < output_size:
        raise JobError(f"transform_size ({resolved_transform}) must be >= output_size ({output_size})")
    items, renamed = list_inputs(inputs, exclude=out if exclude is None else exclude)
    reserved = {Path(RUN_FILE).stem.casefold(), Path(SUMMARY_FILE).stem.casefold()}
    items = [type(it)(it.path, f"{it.name}~img") if it.name.casefold() in reserved else it for it in items]

    detector = FaceDetector() if detector is None else detector
    settings = {"output_size": int(output_size), "transform_size": resolved_transform, "padding": bool(padding),
                "all_faces": bool(all_faces)}
    if hasattr(detector, "settings"):
        settings["detector"] = detector.settings()

    check_run_settings(out, settings, overwrite, run_file=RUN_FILE, holds="crops made with", redo="redo them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobError(f"{display_path(out)}: cannot create the folder ({e})") from None
    write_json(out / RUN_FILE, {"settings": settings})

    def say(line: str) -> None:
        if report is not None:
            report(line)
        else:
            tqdm.write(line, file=sys.stderr)

    todo = [it for it in items if overwrite or not _finished(out, it.name, all_faces)]
    skipped = len(items) - len(todo)
    no_face: list[dict] = []
    failed: list[dict] = []
    aligned = faces_written = 0
    interrupted = False
    start = time.perf_counter()
    bar = tqdm(todo, unit="img", desc="align", disable=not progress or not todo, dynamic_ncols=True)
    try:
        for item in bar:
            where = display_path(item.path)
            try:
                photo = load_image(item.path)
            except ImageReadError as e:
                failed.append({"path": where, "reason": e.reason})
                say(f"unreadable {where}: {e.reason}")
                continue
            try:
                arr = np.asarray(photo)
                if hasattr(detector, "detect_with_rejected"):
                    found, rejected = detector.detect_with_rejected(arr)
                else:
                    found, rejected = detector.detect(arr), []
                if not found:
                    reason = no_face_reason(detector, rejected)
                    no_face.append({"path": where, "reason": reason})
                    say(f"no face in {where}: {reason}")
                    continue
                chosen = found if all_faces else found[:1]
                crops = []
                for face in chosen:
                    crop = align_face(photo, face.landmarks, output_size, transform_size=resolved_transform,
                                      padding=padding)
                    crop.box, crop.score = tuple(int(v) for v in face.box), float(face.score)
                    crops.append(crop)
                # Last face first: the first face's JSON, written last, marks the image as finished.
                for index in reversed(range(len(crops))):
                    png, record = _face_paths(out, item.name, index if all_faces else None)
                    save_alignment(crops[index], png, record, source=os.path.abspath(item.path), face_index=index,
                                   faces_found=len(found))
            except Exception as e:  # degenerate landmarks, disk full, ...: reported, the run goes on
                failed.append({"path": where, "reason": f"{type(e).__name__}: {e}"})
                say(f"failed {where}: {type(e).__name__}: {e}")
                continue
            aligned += 1
            faces_written += len(crops)
            bar.set_postfix(no_face=len(no_face), failed=len(failed), refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    summary = {
        "total": len(items), "aligned": aligned, "faces": faces_written, "skipped": skipped,
        "no_face": no_face, "failed": failed,
        "renamed": [{"path": display_path(it.path), "name": it.name} for it in renamed],
        "seconds": round(seconds, 3), "interrupted": interrupted, "out": display_path(out), "settings": settings,
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def align_inputs(inputs: str | os.PathLike, out: str | os.PathLike, *, size: int, all_faces: bool = False,
                 detector: Any = None, overwrite: bool = False, progress: bool = True,
                 report: Callable[[str], None] | None = None, exclude: str | os.PathLike | None = None) -> dict:
    """Align the photos of ``inputs`` (a folder or one file) into ``out`` with :func:`clcae.align.align_folder`
    (default detector: :class:`~clcae.align.detect.FaceDetector` with its defaults).

    Each crop's record (``out/NAME.json``) names its photo by absolute path, for the paste-back. ``exclude`` is a
    folder under ``inputs`` that is not read (default ``out``; pass the inversion's output folder when ``out`` lies
    inside it). Photos without a face and
    unreadable files are reported through ``report`` and listed in the returned summary (see ``align_folder``).

    Raises :class:`~clcae.align.detect.AlignExtraMissing` without the ``[align]`` extra, and
    :class:`~clcae.jobs.JobError` for a missing input or conflicting settings in ``out``.
    """
    from .detect import FaceDetector

    detector = FaceDetector() if detector is None else detector
    return align_folder(inputs, out, detector, output_size=int(size),
                        all_faces=all_faces, overwrite=overwrite, progress=progress, report=report,
                        exclude=exclude)


def format_align_summary(summary: dict, max_listed: int = 20) -> str:
    """A few printable lines: counts, each photo without a crop and why, where the crops are."""
    lines = [f"aligned {summary['aligned']} image(s) ({summary['faces']} face crop(s)), {summary['skipped']} "
             f"skipped (already aligned), {len(summary['no_face'])} without a face, {len(summary['failed'])} "
             f"unreadable or failed, of {summary['total']} image file(s) in {summary['seconds']:.1f} s"]
    if summary.get("interrupted"):
        lines.append("interrupted: finished crops are kept; run the same command again to resume")
    listed = [("no face", f) for f in summary["no_face"]] + [("failed", f) for f in summary["failed"]]
    lines += listed_lines(listed, max_listed, SUMMARY_FILE)
    lines.append(f"crops: {summary['out']} ({SUMMARY_FILE} lists every file without a crop)")
    return "\n".join(lines)
