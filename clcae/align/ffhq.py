"""FFHQ face alignment from 68 landmarks, the crop transform (the "quad") and pasting an edited crop back.

Every FFHQ encoder (pSp, e4e, ReStyle, HFGI, CLCAE) expects its input cropped the way FFHQ was: a square whose
orientation and scale come from the eyes and the mouth. This module implements that procedure (Karras et al.,
NVIDIA's ``ffhq-dataset`` recipe, as described in its ``recreate_aligned_images``) with numpy, scipy and Pillow only;
the landmarks come from :mod:`clcae.align.detect` (dlib) or from anywhere else.

**The oriented square** (:func:`ffhq_quad`, exactly the recipe): from the iBUG-68 landmarks, the eye centres
(points 36-41 and 42-47) and the mouth corners (48, 54) give ``eye_avg``, ``eye_to_eye`` and ``eye_to_mouth``; the
square's half-axis ``x`` is ``eye_to_eye`` minus ``eye_to_mouth`` rotated by 90 degrees, normalised and scaled by
``max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|)``; ``y`` is ``x`` rotated by 90 degrees; the centre is
``eye_avg + 0.1 eye_to_mouth``. In a frontal face the eyes land at about 37.5 % and 62.5 % of the width, 47 % of
the height.

**The crop** (:func:`align_face`), step by step:

1. *shrink* (exact): when the square is more than twice the output size, the image is downsampled by the integer
   factor ``floor(qsize / output_size / 2)`` (Lanczos) and the square divided by it;
2. *crop* (exact): to the square's bounding box plus a border of ``max(round(0.1 qsize), 3)`` pixels, clipped to
   the image;
3. *pad* (exact): when the square still leaves the image, the image is reflect-padded by at least
   ``round(0.3 qsize)`` pixels on every side, then blended towards a Gaussian-blurred copy (sigma ``0.02 qsize``)
   and towards its median colour with masks that rise from inside the original edge to 1 at the outer edge of
   the padding (the median is taken over the whole padded image, as in the recipe);
4. *transform*: Pillow's bilinear ``QUAD`` transform of the square onto ``transform_size`` pixels, then a Lanczos
   resize to ``output_size``. FFHQ uses ``transform_size = 4096`` for its 1024 px images; here the default is
   ``4 * output_size`` (so exactly 4096 at 1024 px, and 1024 for a 256 px crop: the same 4x supersampling at a
   sixteenth of the cost). Pass ``transform_size=4096`` to reproduce the recipe's numbers at any output size.

The crop's JSON record is :mod:`clcae.align.records`; aligning a whole folder (resumable) is
:mod:`clcae.align.folder`.

The one deliberate departure from the recipe is bookkeeping, not pixels: the square actually realised in the
original image (:attr:`AlignedFace.quad`) accounts for the shrink's rounding of the image size, so that
:func:`paste_back` puts every pixel back exactly where it came from.

**Coordinates.** Landmarks use dlib's convention (pixel centres at integers). The saved ``quad`` uses *pixel-corner*
coordinates, Pillow's: ``(0, 0)`` is the top-left corner of the top-left pixel, so pixel ``(row i, column j)``
covers ``[j, j+1) x [i, i+1)``; it equals the landmark-convention square plus 0.5. Its corners are ordered as
Pillow's ``QUAD`` expects: top-left, bottom-left, bottom-right, top-right *of the crop*. The crop point ``(u, v)``
(pixel corners, ``0 <= u, v <= S``) comes from the photo point ``quad[0] + u/S (quad[3] - quad[0]) + v/S
(quad[1] - quad[0])`` (:func:`crop_to_source_matrix`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence, Union

import numpy as np
import scipy.ndimage
import torch
from PIL import Image

from ..data.images import display_path, from_tensor

__all__ = ["FFHQ_TRANSFORM_SIZE", "ALIGNMENT_FORMAT", "ffhq_quad", "AlignedFace", "align_face", "align_faces",
           "crop_to_source_matrix", "source_to_crop", "crop_to_source", "paste_back", "feather_mask", "no_face_reason"]

#: FFHQ's supersampled transform size (for its 1024 px images).
FFHQ_TRANSFORM_SIZE = 4096
#: Version of the JSON written by :func:`save_alignment`.
ALIGNMENT_FORMAT = 1

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]

_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54


# ------------------------------------------------------------------------------------------------------ the quad
def _rot90(v: np.ndarray) -> np.ndarray:
    """``(a, b) -> (-b, a)``: a quarter turn (clockwise on screen, where y points down)."""
    return np.array([-v[1], v[0]], dtype=np.float64)


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """FFHQ's oriented square for a face, from its 68 landmarks.

    Args:
        landmarks: ``[68, 2]`` ``(x, y)`` points in the iBUG-68 order (dlib's shape predictor), pixel centres at
            integers.

    Returns:
        ``(quad, qsize)``: ``float64 [4, 2]`` corners top-left, bottom-left, bottom-right, top-right of the crop,
        in the landmarks' convention, and the square's side ``qsize`` in pixels.

    Raises ValueError for a wrong shape, non-finite points or a degenerate face (eyes and mouth coincide).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks of shape [68, 2]; got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks hold NaN or infinite values")
    eye_left = lm[_LEFT_EYE].mean(axis=0)
    eye_right = lm[_RIGHT_EYE].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = float(np.hypot(*x))
    half = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8)
    if norm < 1e-9 or half < 1e-9:
        raise ValueError("degenerate landmarks: the eye and mouth centres coincide")
    x = x / norm * half
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, 2.0 * half


# ---------------------------------------------------------------------------------------------------- results
@dataclasses.dataclass
class AlignedFace:
    """One FFHQ-aligned crop and how it was made.

    Attributes:
        image: the crop, RGB ``PIL.Image`` of ``output_size x output_size``.
        quad: ``float64 [4, 2]``: the square of the source image that became the crop, pixel-corner coordinates,
            corners top-left, bottom-left, bottom-right, top-right of the crop (module docstring).
        landmarks: ``float64 [68, 2]`` in the source image, dlib's convention.
        source_size: ``(H, W)`` of the source image.
        output_size: side of the crop.
        transform_size: side of the supersampled transform.
        shrink: the integer downsampling factor applied first (1: none).
        padding: ``(left, top, right, bottom)`` pixels of reflect padding (at the shrunk scale), ``None`` when the
            square lay inside the image.
        box: the detector's ``(left, top, right, bottom)``, when the face came from a detector.
        score: the detector's score, when the face came from a detector.
    """

    image: Image.Image
    quad: np.ndarray
    landmarks: np.ndarray
    source_size: tuple[int, int]
    output_size: int
    transform_size: int
    shrink: int = 1
    padding: tuple[int, int, int, int] | None = None
    box: tuple[int, int, int, int] | None = None
    score: float | None = None

    def crop_to_source(self) -> np.ndarray:
        """``float64 [2, 3]`` affine matrix from crop pixel-corner coordinates to source ones
        (:func:`crop_to_source_matrix`)."""
        return crop_to_source_matrix(self.quad, (self.output_size, self.output_size))

    def to_record(self, source: str | os.PathLike | None = None, **extra: Any) -> dict:
        """The JSON-ready description of the crop (everything but the pixels); see :func:`save_alignment`."""
        record = {
            "format": ALIGNMENT_FORMAT,
            "source": None if source is None else display_path(source),
            "source_size": [int(v) for v in self.source_size],
            "output_size": int(self.output_size),
            "quad": [[float(v) for v in corner] for corner in self.quad],
            "crop_to_source": [[float(v) for v in row] for row in self.crop_to_source()],
            "landmarks": [[float(v) for v in point] for point in self.landmarks],
            "box": None if self.box is None else [int(v) for v in self.box],
            "score": None if self.score is None else float(self.score),
            "transform_size": int(self.transform_size),
            "shrink": int(self.shrink),
            "padding": None if self.padding is None else [int(v) for v in self.padding],
            "coordinates": ("quad and crop_to_source: pixel corners of the source image (EXIF orientation applied), "
                            "(0, 0) = top-left corner of the top-left pixel; corners ordered top-left, bottom-left, "
                            "bottom-right, top-right of the crop; landmarks and box: pixel centres at integers "
                            "(dlib)"),
        }
        record.update(extra)
        return record


# ------------------------------------------------------------------------------------------------- geometry
def crop_to_source_matrix(quad: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """The affine map ``[2, 3]`` taking crop pixel-corner coordinates ``(u, v, 1)`` to source ones.

    Args:
        quad: ``[4, 2]`` pixel-corner corners top-left, bottom-left, bottom-right, top-right (:attr:`AlignedFace.quad`).
        crop_size: ``(H, W)`` of the crop (or of an edited crop of another size: the map scales with it).
    """
    q = _check_quad(quad)
    height, width = (int(v) for v in crop_size)
    ex = (q[3] - q[0]) / width  # source step per crop pixel along u
    ey = (q[1] - q[0]) / height  # ... along v
    return np.array([[ex[0], ey[0], q[0, 0]], [ex[1], ey[1], q[0, 1]]], dtype=np.float64)


def crop_to_source(points: np.ndarray, quad: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """Map ``[N, 2]`` crop pixel-corner points ``(u, v)`` to the source image (pixel corners)."""
    m = crop_to_source_matrix(quad, crop_size)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]


def source_to_crop(points: np.ndarray, quad: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """Map ``[N, 2]`` source pixel-corner points to crop pixel-corner coordinates (the inverse of
    :func:`crop_to_source`); e.g. ``landmarks + 0.5`` gives the landmarks in the crop (``- 0.5`` for dlib's)."""
    m = crop_to_source_matrix(quad, crop_size)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (p - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


def _check_quad(quad: np.ndarray) -> np.ndarray:
    q = np.asarray(quad, dtype=np.float64)
    if q.shape != (4, 2) or not np.isfinite(q).all():
        raise ValueError(f"quad must be 4 finite (x, y) corners, shape [4, 2]; got shape {q.shape}")
    ex, ey = q[3] - q[0], q[1] - q[0]
    if abs(ex[0] * ey[1] - ex[1] * ey[0]) < 1e-9:
        raise ValueError("quad is degenerate (its corners are collinear)")
    return q


# ------------------------------------------------------------------------------------------------ alignment
def _to_pil(image: ImageLike, what: str) -> Image.Image:
    """PIL (any mode) / uint8 array [H, W(, 3|4)] / tensor [3, H, W] in [-1, 1] -> RGB PIL.Image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        return from_tensor(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{what}: expected an image [H, W], [H, W, 3] or [H, W, 4]; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 array (or a PIL image / a [-1, 1] tensor); got {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")


def _edge_ramp(n: int, pad_low: int, pad_high: int) -> np.ndarray:
    """Per position along an axis of ``n`` padded pixels: ``1 - min(distance to the low edge / pad_low, distance
    to the high edge / pad_high)``: 1 at the outer edges, 0 where the original image starts, negative inside."""
    pos = np.arange(n, dtype=np.float32)
    low = pos / np.float32(max(pad_low, 1))
    high = (np.float32(n - 1) - pos) / np.float32(max(pad_high, 1))
    return 1.0 - np.minimum(low, high)


def _pad_and_blend(img: Image.Image, pad: tuple[int, int, int, int], qsize: float) -> Image.Image:
    """Reflect-pad ``img`` by ``pad = (left, top, right, bottom)`` and fade the padding into a blurred copy and the
    median colour (step 3 of the module docstring)."""
    left, top, right, bottom = pad
    arr = np.pad(np.asarray(img, dtype=np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = arr.shape[:2]
    mask = np.maximum(_edge_ramp(w, left, right)[None, :], _edge_ramp(h, top, bottom)[:, None])[..., None]
    sigma = qsize * 0.02
    blurred = scipy.ndimage.gaussian_filter(arr, [sigma, sigma, 0])
    arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")


def align_face(image: ImageLike, landmarks: np.ndarray, output_size: int = 1024, *,
               transform_size: int | None = None, padding: bool = True) -> AlignedFace:
    """Crop one face the FFHQ way (module docstring, steps 1-4).

    Args:
        image: the source photo: RGB ``PIL.Image`` (other modes are converted), ``uint8 [H, W, 3]`` array or a
            ``[3, H, W]`` tensor in [-1, 1].
        landmarks: the face's ``[68, 2]`` landmarks in ``image`` (dlib convention).
        output_size: side of the crop in pixels (FFHQ: 1024; the encoders read 256).
        transform_size: side of the supersampled transform before the final resize (default ``4 * output_size``;
            FFHQ: 4096). Must be at least ``output_size``.
        padding: pad the image when the square leaves it (FFHQ's ``enable_padding``); without it the outside is
            black.

    Returns:
        :class:`AlignedFace` (``face.image`` is the crop; ``face.quad`` the square it came from).
    """
    img = _to_pil(image, "align_face image")
    if output_size < 1:
        raise ValueError(f"output_size must be >= 1; got {output_size}")
    transform_size = 4 * int(output_size) if transform_size is None else int(transform_size)
    if transform_size < output_size:
        raise ValueError(f"transform_size ({transform_size}) must be >= output_size ({output_size})")
    lm = np.asarray(landmarks, dtype=np.float64)
    quad, qsize = ffhq_quad(lm)
    source_w, source_h = img.size
    # The working image relates to the source by  source = (work + offset) * scale  (pixel corners).
    offset = np.zeros(2)
    scale = np.ones(2)

    # 1. shrink
    shrink = int(math.floor(qsize / output_size * 0.5))
    if shrink > 1:
        resized = (int(np.rint(source_w / shrink)), int(np.rint(source_h / shrink)))
        img = img.resize(resized, Image.Resampling.LANCZOS)
        scale = np.array([source_w / resized[0], source_h / resized[1]])
        quad = quad / shrink
        qsize = qsize / shrink
    else:
        shrink = 1

    # 2. crop
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.size[0]),
            min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2])
        offset = offset + np.array(crop[:2])

    # 3. pad
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.size[0] + border, 0),
           max(hi[1] - img.size[1] + border, 0))
    applied_pad = None
    if padding and max(pad) > border - 4:
        pad = tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))
        img = _pad_and_blend(img, pad, qsize)
        quad = quad + np.array(pad[:2])
        offset = offset - np.array(pad[:2])
        applied_pad = pad

    # 4. transform: the landmark-convention square + 0.5 is the pixel-corner square Pillow samples.
    work_quad = quad + 0.5
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple(work_quad.flatten()),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    realised = (work_quad + offset) * scale
    return AlignedFace(image=img, quad=realised, landmarks=lm, source_size=(source_h, source_w),
                       output_size=int(output_size), transform_size=transform_size, shrink=shrink,
                       padding=applied_pad)


def align_faces(image: ImageLike, detector: Any = None, output_size: int = 1024, *, all_faces: bool = False,
                transform_size: int | None = None, padding: bool = True) -> list[AlignedFace]:
    """Detect the faces of a photo and align them.

    Args:
        image: the photo (see :func:`align_face`).
        detector: an object with ``detect(rgb_uint8_array) -> [DetectedFace]`` sorted largest first
            (default: a :class:`clcae.align.detect.FaceDetector` with its defaults; needs the ``[align]`` extra).
        output_size, transform_size, padding: see :func:`align_face`.
        all_faces: align every face found (largest first); by default only the largest.

    Returns:
        ``[AlignedFace]``, largest face first; ``[]`` when no face was found.
    """
    from .detect import FaceDetector, as_rgb_array

    img = _to_pil(image, "align_faces image")
    detector = FaceDetector() if detector is None else detector
    faces = detector.detect(as_rgb_array(img))
    if not all_faces:
        faces = faces[:1]
    aligned = []
    for face in faces:
        result = align_face(img, face.landmarks, output_size, transform_size=transform_size, padding=padding)
        result.box, result.score = tuple(int(v) for v in face.box), float(face.score)
        aligned.append(result)
    return aligned


# ------------------------------------------------------------------------------------------------ paste back
def feather_mask(size: Sequence[int], feather: float) -> np.ndarray:
    """``float32 [H, W]`` in [0, 1]: 1 inside, falling smoothly (smoothstep) to 0 at the edges over
    ``feather * min(H, W)`` pixels. ``feather = 0`` gives all ones (a hard edge)."""
    height, width = (int(v) for v in size)
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (a fraction of the crop side); got {feather}")
    if feather == 0.0:
        return np.ones((height, width), np.float32)
    ramp = feather * min(height, width)

    def axis(n: int) -> np.ndarray:
        centre = np.arange(n, dtype=np.float32) + 0.5
        return np.minimum(centre, n - centre)

    distance = np.minimum(axis(height)[:, None], axis(width)[None, :])
    t = np.clip(distance / ramp, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def paste_back(original_image: ImageLike, edited_crop: ImageLike, quad: np.ndarray, feather: float = 0.1, *,
               mask: np.ndarray | None = None) -> Image.Image:
    """Warp an (edited) aligned crop back into the photograph it was cut from.

    Args:
        original_image: the source photo, as it was aligned (same size and orientation: read it with
            :func:`clcae.data.images.load_image`, which applies the EXIF orientation as alignment did). RGB
            ``PIL.Image``, ``uint8 [H, W, 3]`` array or ``[3, H, W]`` tensor in [-1, 1].
        edited_crop: the crop to paste, same types; any size (e.g. a 256 px reconstruction of a 1024 px crop):
            it stands for the whole square ``quad``.
        quad: ``[4, 2]`` pixel-corner corners from :attr:`AlignedFace.quad` or the ``quad`` of the JSON written by
            :func:`save_alignment`.
        feather: width of the soft edge, as a fraction of the crop side, in [0, 0.5] (0: hard edge).
        mask: optional ``[h, w]`` weights in [0, 1] in crop coordinates (any size; e.g. a face-parsing mask),
            multiplied with the feathered square.

    Returns:
        The full-size RGB ``PIL.Image``: the photo, with the crop blended in where the mask is positive. Pixels
        outside the square are unchanged.
    """
    photo = _to_pil(original_image, "paste_back original_image")
    crop = _to_pil(edited_crop, "paste_back edited_crop")
    q = _check_quad(quad)
    width, height = photo.size

    # Downscale a crop that is larger than the square it covers, antialiased, so the warp does not alias.
    side_u, side_v = float(np.hypot(*(q[3] - q[0]))), float(np.hypot(*(q[1] - q[0])))
    if crop.size[0] > side_u + 1 or crop.size[1] > side_v + 1:
        target = (max(1, min(crop.size[0], math.ceil(side_u))), max(1, min(crop.size[1], math.ceil(side_v))))
        crop = crop.resize(target, Image.Resampling.LANCZOS)
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (a fraction of the crop side); got {feather}")
    crop_w, crop_h = crop.size

    # The pasted region: the square's bounding box, inside the photo.
    lo = np.maximum(np.floor(q.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(q.max(axis=0)).astype(int), [width, height])
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        return photo.copy()
    box_w, box_h = int(hi[0] - lo[0]), int(hi[1] - lo[1])

    # Photo (pixel corners, relative to the box) -> crop (pixel corners, + the edge padding below).
    edge = 2
    m = crop_to_source_matrix(q, (crop_h, crop_w))
    inv = np.linalg.inv(m[:, :2])
    shift = inv @ (lo - m[:, 2])
    coeffs = (inv[0, 0], inv[0, 1], shift[0] + edge, inv[1, 0], inv[1, 1], shift[1] + edge)

    # Replicate the crop's edge pixels so the interpolation at the square's border does not pull in black.
    padded = Image.fromarray(np.pad(np.asarray(crop), ((edge, edge), (edge, edge), (0, 0)), mode="edge"), "RGB")
    warped = padded.transform((box_w, box_h), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)

    # The feathered square, evaluated at each photo pixel's centre mapped into the crop (the continuous form of
    # feather_mask): exactly 0 outside the square at any crop size (interpolating a sampled mask would leak up
    # to half a crop pixel past the edge, several photo pixels for a small crop).
    xs = (np.arange(box_w, dtype=np.float64) + 0.5)[None, :]
    ys = (np.arange(box_h, dtype=np.float64) + 0.5)[:, None]
    u = (inv[0, 0] * xs + inv[0, 1] * ys + shift[0]).astype(np.float32)
    v = (inv[1, 0] * xs + inv[1, 1] * ys + shift[1]).astype(np.float32)
    distance = np.minimum(np.minimum(u, crop_w - u), np.minimum(v, crop_h - v))
    del u, v
    if feather == 0.0:
        a = (distance > 0).astype(np.float32)
    else:
        t = np.clip(distance / (feather * min(crop_h, crop_w)), 0.0, 1.0)
        a = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    if mask is not None:
        weights = np.asarray(mask, dtype=np.float32)
        if weights.ndim != 2:
            raise ValueError(f"mask must be [h, w]; got shape {weights.shape}")
        if weights.shape != (crop_h, crop_w):
            weights = np.asarray(Image.fromarray(weights, "F").resize((crop_w, crop_h), Image.Resampling.BILINEAR))
        weights = np.pad(np.clip(np.nan_to_num(weights), 0.0, 1.0), edge, mode="edge")
        sampled = Image.fromarray(weights, "F").transform((box_w, box_h), Image.Transform.AFFINE, coeffs,
                                                          Image.Resampling.BILINEAR)
        a = a * np.clip(np.asarray(sampled, dtype=np.float32), 0.0, 1.0)
    a = a[..., None]
    out = np.array(photo, dtype=np.uint8)
    region = out[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
    blended = region + (np.asarray(warped, dtype=np.float32) - region) * a
    out[lo[1]:hi[1], lo[0]:hi[0]] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def no_face_reason(detector: Any, rejected: list) -> str:
    """The message for a photo without a face: how close the best rejected candidate ``(box, score)`` came to the
    detector's ``min_score``, when there was one."""
    if rejected:
        (_, score) = rejected[0]
        return (f"no face found (best candidate scored {score:.2f}, below the detection threshold "
                f"{getattr(detector, 'min_score', 0.0):g}; a lower --min-score accepts it)")
    return "no face found"
