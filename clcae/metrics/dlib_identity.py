"""``id_dlib``: identity similarity of real faces with dlib's face-recognition network, an offline stand-in for the
paper's CurricularFace ID when its weights are not at hand.

The embedding is dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (a ResNet-29 trained with a metric loss on
about 3 million faces; 99.38 % on LFW), shipped by the ``face_recognition_models`` package of the optional
``[align]`` extra. It maps a face to 128 numbers; dlib's own verification rule is "same person when the Euclidean
distance is below 0.6". This module reports the **cosine similarity** of the two embeddings of each pair (1 for
identical faces; lower for different people), and the Euclidean distance beside it.

It is reported under its own name, ``id_dlib``, and must never be mixed with the paper's ``ID`` (CurricularFace):
the two networks' similarities live on different scales.

**Where the face is.** dlib computes the embedding from a 150x150 chip cut around 68 landmarks, which need a face
box to start from:

* ``face_region='aligned'`` (default, for FFHQ-aligned crops such as the encoders' inputs and outputs): the box
  is the one dlib's detector gives on an FFHQ crop (:data:`ALIGNED_FACE_BOX`, a fraction of the side), so an
  aligned image *always* gets an embedding, even a blurry reconstruction the detector would miss, and the two
  sides of a pair are treated the same way;
* ``face_region='detect'`` (for unaligned photos): dlib's HOG detector, largest face. Where it finds none the
  pair's similarity is NaN and counted in :attr:`DlibIdentityResult.no_face`.

A pair is also NaN (and counted) when either image holds non-finite values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..align.detect import FaceDetector, as_rgb_array, import_dlib, load_face_recognition_model, \
    load_shape_predictor

__all__ = ["METRIC_NAME", "ALIGNED_FACE_BOX", "FACE_REGIONS", "DlibIdentityResult", "DlibFaceEmbedder",
           "dlib_identity_similarity"]

#: The name this metric is reported under (never ``id``, which is the paper's CurricularFace similarity).
METRIC_NAME = "id_dlib"
#: ``(left, top, right, bottom)`` of the face box in an FFHQ-aligned crop, as fractions of its side: where dlib's
#: HOG detector puts a frontal face (on the astronaut portrait's crop: 0.26, 0.375, 0.77, 0.88), made symmetric.
#: It only starts the 68-point predictor, and the embedding comes from the landmarks: boxes 0.05-0.1 of the side
#: larger or smaller change the astronaut's embedding by 0.01-0.03 in distance (dlib's threshold: 0.6).
ALIGNED_FACE_BOX = (0.25, 0.375, 0.75, 0.875)
FACE_REGIONS = ("aligned", "detect")

Images = Union[torch.Tensor, Sequence[Union[Image.Image, np.ndarray, torch.Tensor]]]


@dataclasses.dataclass
class DlibIdentityResult:
    """Per-pair identity similarity of two batches.

    Attributes:
        similarity: ``float64 [B]`` cosine similarity of the 128-D embeddings, in [-1, 1] (in practice about 0.7
            to 1); NaN where a face was missing in either image.
        distance: ``float64 [B]`` Euclidean distance of the embeddings (dlib: same person below 0.6); NaN likewise.
        no_face: how many pairs are NaN.
        no_face_indices: their indices.
    """

    similarity: torch.Tensor
    distance: torch.Tensor
    no_face: int
    no_face_indices: list[int]

    def mean(self) -> float:
        """The mean similarity over the pairs with a face on both sides (NaN when there is none)."""
        valid = self.similarity[~torch.isnan(self.similarity)]
        return float(valid.mean()) if valid.numel() else math.nan

    def summary(self) -> dict[str, float | int]:
        """``{'id_dlib': mean, 'id_dlib_no_face': count, 'id_dlib_pairs': B}`` for a metrics table."""
        return {METRIC_NAME: self.mean(), f"{METRIC_NAME}_no_face": int(self.no_face),
                f"{METRIC_NAME}_pairs": int(self.similarity.numel())}


def _as_arrays(images: Images, what: str) -> list[np.ndarray | None]:
    """A batch as ``uint8 [H, W, 3]`` arrays; ``None`` for an image holding non-finite values.

    Tensors are ``[B, 3, H, W]`` (or one ``[3, H, W]`` per item) in [-1, 1], the project's convention."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{what}: expected a tensor [B, 3, H, W] in [-1, 1]; got shape {tuple(images.shape)}")
        items: Sequence[Any] = list(images)
    else:
        items = list(images)
    arrays: list[np.ndarray | None] = []
    for k, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            t = item.detach().to("cpu", torch.float32)
            if t.ndim != 3 or t.shape[0] not in (1, 3):
                raise ValueError(f"{what}[{k}]: expected a tensor [3, H, W] in [-1, 1]; got shape {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                arrays.append(None)
                continue
            t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).expand(3, -1, -1)
            arrays.append(np.ascontiguousarray(t.permute(1, 2, 0).numpy()))
        elif isinstance(item, np.ndarray) and item.dtype.kind == "f" and not np.isfinite(item).all():
            arrays.append(None)
        else:
            arrays.append(as_rgb_array(item))
    return arrays


class DlibFaceEmbedder:
    """dlib's 128-D face embedding of images.

    Args:
        face_region: ``'aligned'`` (the fixed :data:`ALIGNED_FACE_BOX` of an FFHQ crop; always an embedding) or
            ``'detect'`` (dlib's detector, the largest face; none -> NaN). See the module docstring.
        num_jitters: dlib's test-time augmentation (random crops/flips averaged; 0 = none, deterministic).
        min_side: images whose shorter side is smaller are upscaled (bicubic) to it first, so the 68-point
            predictor sees enough pixels (e.g. 64 px SynthFaces crops).
        detector: the :class:`~clcae.align.detect.FaceDetector` for ``'detect'`` (default: its defaults).

    Raises :class:`~clcae.align.detect.AlignExtraMissing` when the ``[align]`` extra is not installed.
    """

    def __init__(self, face_region: str = "aligned", num_jitters: int = 0, min_side: int = 256,
                 detector: FaceDetector | None = None):
        if face_region not in FACE_REGIONS:
            raise ValueError(f"face_region must be one of {FACE_REGIONS}; got {face_region!r}")
        if num_jitters < 0 or min_side < 1:
            raise ValueError(f"need num_jitters >= 0 and min_side >= 1; got {num_jitters}, {min_side}")
        self.face_region, self.num_jitters, self.min_side = face_region, int(num_jitters), int(min_side)
        self.dlib = import_dlib()
        self.predictor = load_shape_predictor()
        self.model = load_face_recognition_model()
        self.detector = (detector or FaceDetector()) if face_region == "detect" else None

    def _box(self, arr: np.ndarray) -> tuple[int, int, int, int] | None:
        height, width = arr.shape[:2]
        if self.detector is None:
            l, t, r, b = ALIGNED_FACE_BOX
            return round(l * width), round(t * height), round(r * width) - 1, round(b * height) - 1
        faces = self.detector.detect(arr)
        return faces[0].box if faces else None

    def embed_one(self, arr: np.ndarray) -> np.ndarray | None:
        """``float64 [128]`` embedding of one ``uint8 [H, W, 3]`` image, or ``None`` when no face was found."""
        height, width = arr.shape[:2]
        if min(height, width) < self.min_side:
            factor = self.min_side / min(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            arr = np.ascontiguousarray(np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC)))
        box = self._box(arr)
        if box is None:
            return None
        shape = self.predictor(arr, self.dlib.rectangle(*(int(v) for v in box)))
        return np.array(self.model.compute_face_descriptor(arr, shape, self.num_jitters), dtype=np.float64)

    def embed(self, images: Images) -> np.ndarray:
        """``float64 [B, 128]`` embeddings; a row of NaN where no face was found or the image was not finite.

        ``images``: a tensor ``[B, 3, H, W]`` in [-1, 1], or a sequence of ``PIL.Image`` / ``uint8 [H, W, 3]``
        arrays / ``[3, H, W]`` tensors in [-1, 1].
        """
        arrays = _as_arrays(images, "images")
        out = np.full((len(arrays), 128), np.nan, dtype=np.float64)
        for k, arr in enumerate(arrays):
            if arr is not None:
                emb = self.embed_one(arr)
                if emb is not None:
                    out[k] = emb
        return out


def dlib_identity_similarity(images_a: Images, images_b: Images, *, face_region: str = "aligned",
                             num_jitters: int = 0, embedder: DlibFaceEmbedder | None = None) -> DlibIdentityResult:
    """``id_dlib``: cosine similarity of dlib face embeddings, pair by pair.

    Args:
        images_a, images_b: two batches of the same length ``B`` (e.g. inputs and reconstructions): tensors
            ``[B, 3, H, W]`` in [-1, 1] or sequences of ``PIL.Image`` / ``uint8`` arrays / ``[3, H, W]`` tensors.
        face_region, num_jitters: see :class:`DlibFaceEmbedder` (ignored when ``embedder`` is given).
        embedder: a prepared :class:`DlibFaceEmbedder` (reuse one across batches).

    Returns:
        :class:`DlibIdentityResult` (per-pair similarity with NaN where a face is missing, the count of such pairs);
        ``result.mean()`` is the number to report as ``id_dlib``.
    """
    embedder = embedder or DlibFaceEmbedder(face_region=face_region, num_jitters=num_jitters)
    ea, eb = embedder.embed(images_a), embedder.embed(images_b)
    if ea.shape[0] != eb.shape[0]:
        raise ValueError(f"the two batches differ in length: {ea.shape[0]} and {eb.shape[0]} images")
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (ea * eb).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
        distance = np.linalg.norm(ea - eb, axis=1)
    missing = np.isnan(cosine) | np.isnan(distance)
    cosine[missing] = np.nan
    distance[missing] = np.nan
    indices = [int(i) for i in np.flatnonzero(missing)]
    return DlibIdentityResult(similarity=torch.from_numpy(np.clip(cosine, -1.0, 1.0)),
                              distance=torch.from_numpy(distance), no_face=len(indices), no_face_indices=indices)
