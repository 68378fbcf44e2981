"""The real-photo workflow: align -> invert -> edit -> paste back, for one photo, and its HTML page.

``scripts/photo.py`` (one photo, one HTML page) and the web app (:mod:`clcae.app`) are thin layers over
:func:`process_photo`; ``scripts/invert.py --align`` and ``scripts/edit.py --align`` use :func:`align_inputs`:

- **alignment of inputs** (:func:`align_inputs`): a folder of photos -> FFHQ crops with their JSON records, with
  the photos' paths made absolute so a later paste-back finds them from any working directory;
- **one photo end to end** (:func:`process_photo`) and its page (:func:`write_photo_page`).

The pieces live where their names say: face alignment and paste-back targets in :mod:`clcae.align`
(:class:`~clcae.align.paste.PasteTarget`), the edit specifications and the editor in :mod:`clcae.editing.specs`,
inversion in :mod:`clcae.inversion`, the latents file in :mod:`clcae.inversion.latents`.

Which photos a model can reconstruct: only a generator and an encoder trained on FFHQ-aligned photographs (the
official FFHQ generator and CLCAE / pSp / e4e checkpoints) reconstruct the person in the photo. The shipped
SynthFaces models (``pretrained/``) are trained on procedurally drawn 64 px faces: with them the pipeline runs, but
the reconstruction is the nearest drawn face, not that person (:func:`domain_note`; docs/REAL_PHOTOS.md).
"""
from __future__ import annotations

import dataclasses
import html
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .align.ffhq import (_LEFT_EYE, _MOUTH_LEFT, _MOUTH_RIGHT, _RIGHT_EYE, AlignedFace, align_face, no_face_reason,
                         paste_back)
from .align.folder import align_inputs
from .align.paste import ALIGNED_DIR, PASTED_DIR
from .align.records import save_alignment
from .checkpoints import CheckpointError
from .data.images import ImageReadError, display_path, load_image, save_image
from .editing.specs import EditOptions, EditSpec, edit_function, render_edit, strength_label, unique_labels
from .errors import AboutOption
from .fileio import atomic_write
from .inversion.latents import write_latents
from .networks.encoders import DEFAULT_IDX_K

__all__ = ["ALIGNED_DIR", "PASTED_DIR", "PASTE_ORDER", "align_inputs", "best_kind", "PipelineError", "NoFaceError",
           "domain_note", "PhotoFace", "PhotoResult", "process_photo", "write_photo_page"]

#: Representation pasted back by default: the first one an inversion has.
PASTE_ORDER = ("wplus_f", "wplus", "w")


class PipelineError(AboutOption, Exception):
    """A problem with the photo or the settings that stops :func:`process_photo` (the message names the file)."""


class NoFaceError(Exception):
    """The detector found no face in the photo (the message says how close the best candidate came); the work
    failed, the arguments were fine."""


def best_kind(kinds: Sequence[str]) -> str:
    """The representation pasted back by default: the first of :data:`PASTE_ORDER` in ``kinds``."""
    for kind in PASTE_ORDER:
        if kind in kinds:
            return kind
    raise ValueError(f"no representation to paste among {list(kinds)}")


# --------------------------------------------------------------------------------------------- one photo
def domain_note(checkpoint: str | os.PathLike | None) -> tuple[str, bool]:
    """``(text, out_of_domain)``: what a reader of the results must know about the model.

    A SynthFaces checkpoint (its file name says ``synthfaces``; the shipped ones do) is out of domain for real
    photos: the text says so plainly and ``out_of_domain`` is True. Otherwise the text says which models can
    reconstruct a real person.
    """
    name = "" if checkpoint is None else Path(os.fsdecode(checkpoint)).name.lower()
    if "synthfaces" in name:
        return ("Out of domain. This model was trained on SynthFaces, procedurally drawn 64 px faces, not on "
                "photographs. The pipeline runs (align, invert, edit, paste back), but the reconstruction is the "
                "nearest drawn SynthFaces face: it is not a photo of this person, and the edits change that drawn "
                "face. To edit real people use the official FFHQ generator and CLCAE checkpoint (see "
                "docs/REAL_PHOTOS.md)."), True
    return ("A reconstruction looks like the person in the photo only when the generator and the encoder were "
            "trained on FFHQ-aligned photographs of faces (the official FFHQ generator with the CLCAE, pSp or e4e "
            "checkpoints). With any other model the pipeline runs, but the result is not a photo of this "
            "person."), False


@dataclasses.dataclass
class PhotoFace:
    """One face of the photo that :func:`process_photo` inverted and edited (paths inside ``PhotoResult.out``).

    Attributes:
        index: its number among the faces found, largest first (0 = the largest), as ``--face`` counts.
        folder: where its files are: ``out`` when one face is edited, ``out/faceN`` with ``all_faces``.
        face: the aligned face (quad, landmarks, detector box and score).
        aligned, record: the aligned crop and its alignment record (JSON).
        latents: the codes (as ``scripts/invert.py`` writes them, with the alignment record).
        reconstructions: ``{kind: path}`` at the generator's resolution.
        edits: ``{label: {(kind, strength): path}}``: the edited crops.
    """

    index: int
    folder: Path
    face: AlignedFace
    aligned: Path
    record: Path
    latents: Path
    reconstructions: dict[str, Path]
    edits: dict[str, dict[tuple[str, float], Path]]


@dataclasses.dataclass
class PhotoResult:
    """What :func:`process_photo` wrote (paths inside ``out``).

    Attributes:
        out: the output folder; index: its ``index.html``.
        photo: the input photo as given; original: its copy as processed (RGB, EXIF orientation applied).
        detected: the photo with every face found drawn in (numbered, largest first), and for the edited faces
            their landmarks and crop squares.
        faces: the edited faces (:class:`PhotoFace`), in the order of their numbers.
        found: every face the detector found, largest first: ``[{'index', 'box', 'score'}]``.
        pasted_reconstruction: the photo with every edited face's (unedited) reconstruction pasted back.
        paste_kind: the representation pasted back.
        edits: per edit ``{'label', 'text', 'strengths', 'pasted': {strength: path}}``; each pasted photo holds
            every edited face at that strength.
        method, checkpoint, generator_size, input_size: the model.
        note, out_of_domain: :func:`domain_note`.
        seconds: per step.
    """

    out: Path
    index: Path
    photo: Path
    original: Path
    detected: Path
    faces: list[PhotoFace]
    found: list[dict]
    pasted_reconstruction: Path
    paste_kind: str
    edits: list[dict]
    method: str
    checkpoint: str
    generator_size: int
    input_size: tuple[int, int]
    note: str
    out_of_domain: bool
    seconds: dict[str, float]

    @property
    def faces_found(self) -> int:
        """How many faces the detector found."""
        return len(self.found)

    def faces_note(self) -> str | None:
        """One sentence when the photo has more faces than were edited (None otherwise)."""
        if len(self.found) <= len(self.faces):
            return None
        edited = ", ".join(str(f.index) for f in self.faces)
        largest = " (the largest)" if [f.index for f in self.faces] == [0] else ""
        return (f"{len(self.found)} faces found in the photo (numbered in the first picture, largest first); only "
                f"face {edited}{largest} is edited and pasted back.")


def _draw_quad(photo: Image.Image, quad: np.ndarray, landmarks: np.ndarray | None = None,
               img: Image.Image | None = None, label: str | None = None) -> Image.Image:
    """A copy of the photo (or ``img``, drawn on in place) with the crop's square outlined (green) and its top edge
    marked (red); with ``landmarks`` ([68, 2]) also the 68 points (yellow), and the eye centres and mouth centre
    the square is built from (cyan, joined by the eye-to-eye and eye-to-mouth lines); with ``label`` that text at
    the square's top-left corner."""
    img = photo.copy() if img is None else img
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 250))
    corners = [tuple(float(v) for v in c) for c in quad]  # TL, BL, BR, TR of the crop
    draw.line([*corners, corners[0]], fill=(40, 220, 60), width=width)
    draw.line([corners[0], corners[3]], fill=(230, 40, 40), width=width)
    if landmarks is not None:
        lm = np.asarray(landmarks, dtype=np.float64)
        r = max(1.5, min(img.size) / 300)
        for x, y in lm:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(250, 220, 40))
        eye_l, eye_r = lm[_LEFT_EYE].mean(axis=0), lm[_RIGHT_EYE].mean(axis=0)  # the points ffhq_quad uses
        mouth = (lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) / 2
        eye_avg = (eye_l + eye_r) / 2
        cyan = (40, 210, 240)
        draw.line([tuple(eye_l), tuple(eye_r)], fill=cyan, width=max(1, width // 2))
        draw.line([tuple(eye_avg), tuple(mouth)], fill=cyan, width=max(1, width // 2))
        for x, y in (eye_l, eye_r, mouth):
            draw.ellipse([x - 2 * r, y - 2 * r, x + 2 * r, y + 2 * r], outline=cyan, width=max(1, width // 2))
    if label is not None:
        _draw_label(draw, corners[0], label, (40, 220, 60), img.size)
    return img


def _draw_label(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, color: tuple[int, int, int],
                size: tuple[int, int]) -> None:
    """``text`` in a filled box at ``at`` (kept inside the image), large enough to read on the page."""
    from PIL import ImageFont

    font_size = max(12, round(min(size) / 25))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 6
    x = min(max(0.0, at[0]), size[0] - w)
    y = min(max(0.0, at[1] - h), size[1] - h)
    draw.rectangle([x, y, x + w, y + h], fill=color)
    draw.text((x + 3 - left, y + 3 - top), text, fill=(0, 0, 0), font=font)


def _draw_faces(photo: Image.Image, found: Sequence[Any], chosen: Mapping[int, AlignedFace]) -> Image.Image:
    """The photo with every detected face numbered: an edited face with its landmarks and crop square
    (:func:`_draw_quad`), any other face with its detector box in grey."""
    img = photo.copy()
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 250))
    for i, det in enumerate(found):
        if i in chosen:
            _draw_quad(photo, chosen[i].quad, det.landmarks, img=img, label=f"face {i}")
        elif len(found) > 1:
            left, top, right, bottom = (float(v) for v in det.box)
            draw.rectangle([left, top, right, bottom], outline=(160, 160, 160), width=width)
            _draw_label(draw, (left, top), f"face {i} (not edited)", (190, 190, 190), img.size)
    return img


def process_photo(photo: str | os.PathLike, out: str | os.PathLike, loaded: Any,
                  edits: Sequence[EditSpec] = (), *, detector: Any = None, align_size: int | None = None,
                  feather: float = 0.1, paste_kind: str | None = None, options: EditOptions | None = None,
                  fmt: str = "png", batch: int = 8, resize: str = "resize", face: int = 0, all_faces: bool = False,
                  log: Callable[[str], None] | None = None) -> PhotoResult:
    """Find the faces of one photo; align, invert and edit one of them (``face``) or all of them (``all_faces``);
    paste every edited face back into one copy of the photo per result; and write a page.

    Writes to ``out`` (created)::

        original.FMT, detected.jpg           the photo (as processed), and with every face found numbered (largest
                                             first), the edited ones with their landmarks and crop squares
        aligned.png, aligned.json            the FFHQ crop at ``align_size`` and its alignment record
        latents.pt                           the codes, as scripts/invert.py writes them (+ 'alignment')
        reconstruction_KIND.FMT              w / wplus / wplus_f, those the method renders, at the generator's size
        edits/LABEL/KIND_s+2.FMT             every edited crop
        pasted/reconstruction.FMT            the photo with the reconstruction pasted back
        pasted/LABEL/s+2.FMT                 the photo with the edited crop pasted back
        index.html                           the steps side by side (:func:`write_photo_page`)

    With ``all_faces`` the per-face files (``aligned.*``, ``latents.pt``, ``reconstruction_*``, ``edits/``) are in
    ``out/face0/``, ``out/face1/``, ... (largest first), and every pasted photo holds all the faces, each with its
    own reconstruction or edit.

    Args:
        photo: the photo file (any format :func:`clcae.data.images.load_image` reads; EXIF orientation applied).
        out: output folder; files of an earlier run are replaced (each atomically).
        loaded: a :class:`clcae.inversion.runner.LoadedMethod` (an encoder inverter; its decoder renders edits).
        edits: parsed edit specs (:func:`clcae.editing.specs.parse_edit`); checked against the generator before any
            work.
        detector: a :class:`~clcae.align.detect.FaceDetector` (default: its defaults; needs the ``[align]`` extra).
        align_size: side of the aligned crop (default: the inverter's input side, the crop is then read as is).
        feather: soft edge of the paste-back, a fraction of the crop side in [0, 0.5].
        paste_kind: representation pasted back (default :func:`best_kind`: W+F for CLCAE).
        options: how edits are applied (:class:`EditOptions`).
        fmt: ``'png'`` (lossless; default) or ``'jpg'`` for the written images.
        batch: strengths per generator pass.
        resize: how the crop reaches the input size (:func:`clcae.inversion.runner.read_input`).
        face: which face to edit, by its number among the faces found, largest first (0: the largest).
        all_faces: edit every face found (``face`` is then ignored).
        log: called with one line per step (default: silent); the first says how many faces were found.

    Returns:
        :class:`PhotoResult` (:meth:`PhotoResult.faces_note` says when faces were left out). Raises
        :class:`PipelineError` (unreadable photo, bad options, a ``face`` the photo does not have, an edit file
        that is missing or does not fit the generator), :class:`NoFaceError` and
        :class:`~clcae.align.detect.AlignExtraMissing`.
    """
    from .align.detect import FaceDetector, as_rgb_array
    from .inversion.runner import IMAGE_KINDS, read_input

    say = log or (lambda line: None)
    if fmt not in ("png", "jpg"):
        raise PipelineError(f"format must be 'png' or 'jpg'; got {fmt!r}")
    if not 0.0 <= feather <= 0.5:
        raise PipelineError.about("feather", f"must be in [0, 0.5] (a fraction of the crop side); got {feather}")
    if face < 0:
        raise PipelineError(f"face must be >= 0 (0 is the largest face); got {face}")
    photo = Path(os.fsdecode(photo))
    out = Path(os.fsdecode(out))
    if out.exists() and not out.is_dir():
        raise PipelineError.about("out", f"{display_path(out)}: exists and is not a folder")
    inverter = loaded.inverter
    generator = inverter.decoder
    kinds = [k for k in IMAGE_KINDS if k in inverter.image_names]
    if paste_kind is None:
        paste_kind = best_kind(kinds)
    elif paste_kind not in kinds:
        raise PipelineError.about("paste_kind", f"{paste_kind}: the {loaded.method} inverter renders "
                                                f"{', '.join(kinds)}")
    align_size = int(align_size or max(inverter.input_size))
    if align_size < 1:
        raise PipelineError.about("align_size", f"must be >= 1; got {align_size}")
    edits = list(edits)
    unique_labels(edits)
    functions = []
    for spec in edits:  # fail before any work
        if spec.path is not None and not spec.path.is_file():
            raise PipelineError.about("edit", f"{spec.text!r}: no such file {display_path(spec.path)}")
        try:
            functions.append(edit_function(spec, generator, options))
        except (CheckpointError, ValueError) as e:
            raise PipelineError.about("edit", f"{spec.text!r}: {e}") from None
    idx_k = int(getattr(inverter, "idx_k", DEFAULT_IDX_K))
    feature_scale = float(getattr(inverter, "feature_scale", 1.0))
    seconds: dict[str, float] = {}

    # 1. find the faces, align the chosen ones
    start = time.perf_counter()
    try:
        image = load_image(photo)
    except ImageReadError as e:
        raise PipelineError(str(e)) from None
    detector = FaceDetector() if detector is None else detector
    detections, rejected = detector.detect_with_rejected(as_rgb_array(image))
    if not detections:
        raise NoFaceError(f"no face in {display_path(photo)}: {no_face_reason(detector, rejected)}")
    found = [{"index": i, "box": [int(v) for v in d.box], "score": round(float(d.score), 3)}
             for i, d in enumerate(detections)]
    say(f"found {len(found)} face(s) in {display_path(photo)}, largest first: "
        + "; ".join(f"{f['index']}: box {f['box']}, score {f['score']:.2f}" for f in found))
    if not all_faces and face >= len(detections):
        raise PipelineError(f"face {face}: {display_path(photo)} has {len(detections)} face(s), numbered 0 to "
                            f"{len(detections) - 1} from the largest")
    chosen = list(range(len(detections))) if all_faces else [face]
    aligned_faces: dict[int, AlignedFace] = {}
    for i in chosen:
        aligned_faces[i] = align_face(image, detections[i].landmarks, align_size)
        aligned_faces[i].box = tuple(int(v) for v in detections[i].box)
        aligned_faces[i].score = float(detections[i].score)
    out.mkdir(parents=True, exist_ok=True)
    original = save_image(image, out / f"original.{fmt}")
    detected = save_image(_draw_faces(image, detections, aligned_faces), out / "detected.jpg")
    faces: list[PhotoFace] = []
    for i in chosen:
        folder = out / f"face{i}" if all_faces else out
        aligned, record = save_alignment(aligned_faces[i], folder / "aligned.png", source=os.path.abspath(photo),
                                         face_index=i, faces_found=len(detections))
        faces.append(PhotoFace(index=i, folder=folder, face=aligned_faces[i], aligned=aligned, record=record,
                               latents=folder / "latents.pt", reconstructions={}, edits={}))
    seconds["align"] = time.perf_counter() - start
    say(f"aligned face {', '.join(str(i) for i in chosen)} of {len(detections)} -> "
        f"{', '.join(display_path(f.aligned) for f in faces)}")

    # 2. invert every chosen face
    start = time.perf_counter()
    device = inverter.latent_avg.device
    codes, paste_images, f_gens = [], [], []
    for pf in faces:
        x = read_input(pf.aligned, inverter.input_size, resize).unsqueeze(0).to(device)
        with torch.no_grad():
            result = inverter.invert(x, images=tuple(kinds))
        latents = {k: result[k][0].float().cpu() for k in ("w", "wplus", "f") if k in result}
        bad = [k for k, v in latents.items() if not torch.isfinite(v).all()]
        if bad:
            raise PipelineError(f"the inversion of face {pf.index} of {display_path(photo)} gave non-finite codes "
                                f"({', '.join(bad)})")
        saved = dict(latents, method=loaded.method, checkpoint=str(loaded.checkpoint),
                     input_size=list(inverter.input_size), source=display_path(pf.aligned),
                     alignment=str(pf.record.resolve()))
        if "f" in latents:
            saved.update(idx_k=idx_k, feature_scale=feature_scale)
        write_latents(pf.latents, saved)
        pf.reconstructions = {kind: save_image(result[f"image_{kind}"][0].float().cpu(),
                                               pf.folder / f"reconstruction_{kind}.{fmt}") for kind in kinds}
        codes.append(latents)
        paste_images.append(result[f"image_{paste_kind}"][0].float().cpu())
        f_gen = result.get("f_gen")
        f_gens.append(None if f_gen is None else f_gen[:1])
    seconds["invert"] = time.perf_counter() - start
    say(f"inverted with {loaded.method} ({', '.join(kinds)}) -> {display_path(out)}")

    # 3. paste back the reconstructions; 4. edit and paste back (every face into one photo per strength)
    def paste_all(crops: Sequence[torch.Tensor]) -> Image.Image:
        photo_out = image
        for pf, crop in zip(faces, crops):
            photo_out = paste_back(photo_out, crop, pf.face.quad, feather=feather)
        return photo_out

    start = time.perf_counter()
    pasted_reconstruction = save_image(paste_all(paste_images), out / PASTED_DIR / f"reconstruction.{fmt}")
    edit_results = []
    for spec, fn in zip(edits, functions):
        per_face = []
        for pf, latents, f_gen in zip(faces, codes, f_gens):
            rendered = render_edit(generator, latents, fn, spec.strengths, kinds=kinds, idx_k=idx_k,
                                   feature_scale=feature_scale, f_gen=f_gen, batch=batch)
            pf.edits[spec.label] = {(kind, value): save_image(tensor, pf.folder / "edits" / spec.label /
                                                             f"{kind}_s{strength_label(value)}.{fmt}")
                                    for (kind, value), tensor in rendered.items()}
            per_face.append({value: rendered[(paste_kind, value)] for value in spec.strengths})
        pasted = {value: save_image(paste_all([crops[value] for crops in per_face]),
                                    out / PASTED_DIR / spec.label / f"s{strength_label(value)}.{fmt}")
                  for value in spec.strengths}
        edit_results.append({"label": spec.label, "text": spec.text, "strengths": list(spec.strengths),
                             "pasted": pasted})
        say(f"edit {spec.text}: {len(spec.strengths)} strength(s) -> {display_path(out / PASTED_DIR / spec.label)}")
    seconds["edit_and_paste"] = time.perf_counter() - start

    note, out_of_domain = domain_note(loaded.checkpoint)
    res = PhotoResult(out=out, index=out / "index.html", photo=photo, original=original, detected=detected,
                      faces=faces, found=found, pasted_reconstruction=pasted_reconstruction, paste_kind=paste_kind,
                      edits=edit_results, method=loaded.method, checkpoint=str(loaded.checkpoint),
                      generator_size=int(generator.size), input_size=tuple(inverter.input_size), note=note,
                      out_of_domain=out_of_domain, seconds={k: round(v, 3) for k, v in seconds.items()})
    write_photo_page(res)
    return res


# --------------------------------------------------------------------------------------------------- the page
_KIND_TITLES = {"w": "w", "wplus": "W+", "wplus_f": "W+F"}

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
.note { border-left: 5px solid #888; background: #f3f3f3; padding: .6em 1em; max-width: 60em; }
.note.warning { border-left-color: #d9480f; background: #fff0e6; font-weight: 600; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-end; }
figure { margin: 0; text-align: center; }
figure img { display: block; width: 256px; height: auto; }
figure img.small { image-rendering: pixelated; }
figure.photo img { width: auto; height: auto; max-width: 360px; max-height: 360px; }
figcaption { font-size: .85em; margin-top: 4px; color: #444; max-width: 360px; margin-left: auto; margin-right: auto; }
table.sweep td { padding: 4px; vertical-align: bottom; text-align: center; }
table.sweep th { font-weight: 600; font-size: .85em; padding: 4px; }
table.details td { padding: 2px 10px 2px 0; vertical-align: top; font-size: .9em; }
code { background: #eee; padding: 0 .2em; }
"""


def _rel(path: Path, root: Path) -> str:
    return urllib.parse.quote(Path(os.path.relpath(path, root)).as_posix())


def _figure(path: Path, root: Path, caption: str, *, photo: bool = False, small: bool = False) -> str:
    cls = ' class="photo"' if photo else ""
    img_cls = ' class="small"' if small else ""
    return (f'<figure{cls}><a href="{_rel(path, root)}"><img src="{_rel(path, root)}"{img_cls} '
            f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>')


def write_photo_page(result: PhotoResult) -> Path:
    """Write ``result.index`` (``index.html``): the model note (out-of-domain warning for SynthFaces), a note when
    the photo has faces that were not edited, the steps side by side (the photo with every face numbered | aligned
    crop | reconstructions | pasted back; one row per face when several are edited), one table per edit (rows:
    strengths; columns: the edited crops, per representation for one face or the pasted one per face for several
    | pasted back) and the details. Images are referenced by relative paths, so the folder can be moved as a
    whole. Returns the page's path."""
    root = result.out
    small = result.generator_size < 256
    several = len(result.faces) > 1
    titles = ", ".join(_KIND_TITLES[k] for k in result.faces[0].reconstructions)
    paste_title = _KIND_TITLES[result.paste_kind]
    detected = _figure(result.detected, root, "original: faces found, numbered from the largest; for the edited "
                       "ones 68 landmarks (yellow), eye and mouth centres (cyan), crop (green, top edge red)",
                       photo=True)
    pasted = _figure(result.pasted_reconstruction, root, f"pasted back ({paste_title}"
                     + (", every face)" if several else ")"), photo=True)
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(result.photo.name)}: align, invert, edit, paste back</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(result.photo.name)}: align &rarr; invert &rarr; edit &rarr; paste back</h1>",
             f'<p class="note{" warning" if result.out_of_domain else ""}">{html.escape(result.note)}</p>']
    faces_note = result.faces_note()
    if faces_note:
        parts.append(f'<p class="note faces">{html.escape(faces_note)}</p>')
    parts.append("<h2>Steps</h2>")

    def face_figures(pf: PhotoFace) -> list[str]:
        prefix = f"face {pf.index}: " if several else ""
        figures = [_figure(pf.aligned, root, f"{prefix}aligned crop ({pf.face.output_size} px)",
                           small=pf.face.output_size < 256)]
        figures += [_figure(path, root, f"{prefix}reconstruction {_KIND_TITLES[kind]}", small=small)
                    for kind, path in pf.reconstructions.items()]
        return figures

    if several:
        parts += ['<div class="row">', detected, pasted, "</div>"]
        for pf in result.faces:
            parts += [f"<h3>face {pf.index}</h3>", '<div class="row">', *face_figures(pf), "</div>"]
    else:
        parts += ['<div class="row">', detected, *face_figures(result.faces[0]), pasted, "</div>"]

    if result.edits:
        parts.append("<h2>Edits</h2>")
    for edit in result.edits:
        label_ = edit["label"]
        if several:  # one column per face: its edited crop in the representation pasted back
            columns = [(pf, result.paste_kind, f"face {pf.index} {paste_title}") for pf in result.faces]
        else:
            pf = result.faces[0]
            kinds = list(dict.fromkeys(kind for kind, _ in pf.edits[label_]))
            columns = [(pf, k, _KIND_TITLES[k]) for k in kinds]
        parts.append(f"<h3>{html.escape(label_)} <code>{html.escape(edit['text'])}</code></h3>")
        parts.append('<table class="sweep"><tr><th>strength</th>'
                     + "".join(f"<th>edited {html.escape(title)}</th>" for _, _, title in columns)
                     + f"<th>pasted back ({paste_title})</th></tr>")
        for value in edit["strengths"]:
            label = strength_label(value)
            cells = [f"<td>{html.escape(label)}</td>"]
            cells += [f"<td>{_figure(pf.edits[label_][(k, value)], root, f'{title} {label}', small=small)}</td>"
                      for pf, k, title in columns]
            cells.append(f"<td>{_figure(edit['pasted'][value], root, f'pasted {label}', photo=True)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")

    first = result.faces[0].face
    edited = ", ".join(str(pf.index) for pf in result.faces)
    rows = [("photo", display_path(result.photo)),
            ("photo size", f"{first.source_size[1]} x {first.source_size[0]} px"),
            ("faces found", f"{result.faces_found}, numbered from the largest; edited: face {edited}"),
            ("detector", "; ".join(f"face {f['index']}: box {f['box']}, score {f['score']:.2f}"
                                   for f in result.found)),
            ("aligned crop", f"{first.output_size} px; record(s) "
                             + ", ".join(_rel(pf.record, root) for pf in result.faces)),
            ("model", f"{result.method}, checkpoint {result.checkpoint}"),
            ("generator", f"{result.generator_size} px; encoder input {result.input_size[0]} x "
                          f"{result.input_size[1]}; reconstructions: {titles}"),
            ("codes", ", ".join(_rel(pf.latents, root) for pf in result.faces)
                      + " (scripts/edit.py --latents ... --paste-back reads them)"),
            ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))]
    parts.append("<h2>Details</h2><table class=\"details\">")
    parts += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows]
    parts.append("</table></body></html>")
    with atomic_write(result.index, mode="w", fsync=False, encoding="utf-8") as fh:
        fh.write("\n".join(parts) + "\n")
    return result.index
