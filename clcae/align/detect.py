"""Face detection and 68-point landmarks with dlib, the models FFHQ itself was aligned with.

The optional ``[align]`` extra provides them: ``pip install -e .[align]`` installs ``dlib-bin`` (dlib compiled,
no build needed) and ``face_recognition_models`` (the model files: the 68-point shape predictor
``shape_predictor_68_face_landmarks.dat``, the face-recognition ResNet ``dlib_face_recognition_resnet_model_v1.dat``
and the CNN detector ``mmod_human_face_detector.dat``). Nothing is imported at module import time: dlib is imported,
and each model file loaded (once per process), on first use; without the extra, :class:`AlignExtraMissing` says
what to install.

Detection follows NVIDIA's FFHQ landmark step (dlib's HOG frontal-face detector with one 2x upsampling, then the
68-point shape predictor), plus three things a photo collection needs:

* a **score threshold** (``min_score``): dlib's own threshold of 0 accepts weak candidates such as a mission patch
  on the astronaut's sleeve (score 0.12; her face scores 1.16). Candidates below the threshold are kept aside as
  ``rejected`` so a "no face" message can say how close the best one came;
* **large photos** are detected on a copy whose longer side is at most ``detect_size`` pixels (the HOG detector's
  cost grows with the pixel count, 4x with the upsampling); the landmarks are then predicted on the full-resolution
  image inside the rescaled box;
* faces are **sorted largest first** (box area, ties by score), so "the largest face" is ``faces[0]``.

Coordinates: boxes and landmarks are in dlib's convention, pixel ``(i, j)`` centred at integer ``(x=j, y=i)``, in the
image as given (after EXIF orientation when it was read with :func:`clcae.data.images.load_image`).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

__all__ = ["AlignExtraMissing", "INSTALL_HINT", "SHAPE_PREDICTOR_68", "FACE_RECOGNITION_RESNET",
           "CNN_FACE_DETECTOR", "import_dlib", "model_file", "load_shape_predictor", "load_face_recognition_model",
           "as_rgb_array", "DetectedFace", "FaceDetector"]

INSTALL_HINT = "pip install -e .[align]  (or: pip install dlib-bin face_recognition_models)"
#: Model files shipped by the ``face_recognition_models`` package.
SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
FACE_RECOGNITION_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"
_MODELS_PACKAGE = "face_recognition_models"


class AlignExtraMissing(ImportError):
    """The optional ``[align]`` dependencies (dlib, face_recognition_models) are not installed; the message says
    what is missing and the command that installs it."""


def import_dlib() -> Any:
    """The ``dlib`` module; raises :class:`AlignExtraMissing` with the install command when it is missing."""
    try:
        return importlib.import_module("dlib")
    except ImportError as e:
        raise AlignExtraMissing(f"face detection and alignment need dlib, which is not installed ({e}). Install "
                                f"the optional extra: {INSTALL_HINT}") from None


def model_file(name: str) -> Path:
    """The path of one model file of the ``face_recognition_models`` package (e.g. :data:`SHAPE_PREDICTOR_68`).

    The package is located without being imported: its ``__init__`` imports ``pkg_resources``, which recent
    setuptools no longer ships, so importing it can fail although the files are there.

    Raises :class:`AlignExtraMissing` when the package is not installed, :class:`FileNotFoundError` (naming the
    path) when the file is missing from it.
    """
    spec = importlib.util.find_spec(_MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AlignExtraMissing(f"the dlib model files come from the package {_MODELS_PACKAGE!r}, which is not "
                                f"installed. Install the optional extra: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    where = ", ".join(str(Path(f) / "models") for f in spec.submodule_search_locations)
    raise FileNotFoundError(f"dlib model file {name!r} not found in {where}; reinstall {_MODELS_PACKAGE} "
                            f"({INSTALL_HINT})")


@functools.lru_cache(maxsize=4)
def load_shape_predictor(path: str | None = None) -> Any:
    """dlib's 68-point ``shape_predictor`` (default: :data:`SHAPE_PREDICTOR_68`), loaded once per process."""
    dlib = import_dlib()
    return dlib.shape_predictor(str(path or model_file(SHAPE_PREDICTOR_68)))


@functools.lru_cache(maxsize=4)
def load_face_recognition_model(path: str | None = None) -> Any:
    """dlib's ``face_recognition_model_v1`` (default: :data:`FACE_RECOGNITION_RESNET`), loaded once per process."""
    dlib = import_dlib()
    return dlib.face_recognition_model_v1(str(path or model_file(FACE_RECOGNITION_RESNET)))


@functools.lru_cache(maxsize=2)
def _hog_detector() -> Any:
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=2)
def _cnn_detector(path: str | None = None) -> Any:
    return import_dlib().cnn_face_detection_model_v1(str(path or model_file(CNN_FACE_DETECTOR)))


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A ``PIL.Image`` (any mode) or an array ``[H, W]`` / ``[H, W, 3|4]`` -> C-contiguous ``uint8 [H, W, 3]`` RGB,
    the layout dlib reads. Float arrays are taken as [0, 255] and rounded; an alpha channel is dropped."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an image array [H, W], [H, W, 3] or [H, W, 4]; got shape {arr.shape}")
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float64))), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclasses.dataclass
class DetectedFace:
    """One face found in an image.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detection, in pixels of the image as given (dlib's inclusive
            rectangle).
        score: the detector's confidence (HOG: SVM margin, about 0 to 3; CNN: its own scale, about -1 to 2).
        landmarks: ``float64 [68, 2]`` ``(x, y)`` of the iBUG 68 points (0-16 jaw, 17-26 brows, 27-35 nose,
            36-41 / 42-47 the eyes on the image's left / right, 48-67 mouth), pixel centres at integers.
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> int:
        """Area of :attr:`box` in pixels."""
        left, top, right, bottom = self.box
        return max(0, right - left + 1) * max(0, bottom - top + 1)


class FaceDetector:
    """dlib face detection + 68 landmarks.

    Args:
        method: ``'hog'`` (dlib's frontal-face detector, as FFHQ; fast on a CPU) or ``'cnn'`` (dlib's MMOD CNN
            ``mmod_human_face_detector.dat``: finds more rotated and profile faces, slow without CUDA).
        upsample: times the image is upsampled 2x before detection (FFHQ: 1); each finds faces half as large.
        min_score: candidates scoring below it are rejected (dlib's own threshold is 0; the default 0.3 drops weak
            candidates such as badges and logos). May be negative to accept weaker faces.
        detect_size: the longer side of the copy detection runs on when the image is larger (``None``: always
            the full image). Landmarks are always predicted at full resolution.
        predictor: a 68-point shape predictor ``.dat`` file (default: the one in ``face_recognition_models``).

    Raises :class:`AlignExtraMissing` when dlib or the model files are not installed (at construction, so a
    script fails before reading any image).
    """

    def __init__(self, method: str = "hog", upsample: int = 1, min_score: float = 0.3,
                 detect_size: int | None = 1024, predictor: str | Path | None = None):
        if method not in ("hog", "cnn"):
            raise ValueError(f"detector method must be 'hog' or 'cnn'; got {method!r}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0; got {upsample}")
        if detect_size is not None and detect_size < 64:
            raise ValueError(f"detect_size must be >= 64 or None; got {detect_size}")
        self.method, self.upsample, self.min_score = method, int(upsample), float(min_score)
        self.detect_size = detect_size
        self.dlib = import_dlib()
        self.predictor = load_shape_predictor(None if predictor is None else str(predictor))
        self.detector = _hog_detector() if method == "hog" else _cnn_detector()

    def settings(self) -> dict:
        """Plain data describing the detection (recorded by ``scripts/align.py``)."""
        return {"method": self.method, "upsample": self.upsample, "min_score": self.min_score,
                "detect_size": self.detect_size}

    def landmarks(self, image: Image.Image | np.ndarray, box: Sequence[float]) -> np.ndarray:
        """The 68 landmarks (``float64 [68, 2]``) predicted inside ``box = (left, top, right, bottom)``.

        The predictor always returns 68 points, whatever the box holds: pass a box that frames a face.
        """
        arr = as_rgb_array(image)
        return self._predict(arr, box)

    def _predict(self, arr: np.ndarray, box: Sequence[float]) -> np.ndarray:
        left, top, right, bottom = (int(round(float(v))) for v in box)
        shape = self.predictor(arr, self.dlib.rectangle(left, top, right, bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def _candidates(self, arr: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """``[(box, score)]`` on ``arr`` (scores down to ``min(min_score, 0)``), boxes in ``arr``'s pixels."""
        if self.method == "hog":
            rects, scores, _ = self.detector.run(arr, self.upsample, min(self.min_score, 0.0))
            return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        found = self.detector(arr, self.upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
                for d in found]

    def detect_with_rejected(self, image: Image.Image | np.ndarray
                             ) -> tuple[list[DetectedFace], list[tuple[tuple[int, int, int, int], float]]]:
        """``(faces, rejected)``: the faces scoring at least ``min_score`` (largest first, with landmarks), and the
        weaker candidates as ``(box, score)`` (best first), e.g. to explain a "no face found"."""
        arr = as_rgb_array(image)
        height, width = arr.shape[:2]
        scale = 1.0
        small = arr
        if self.detect_size is not None and max(height, width) > self.detect_size:
            scale = self.detect_size / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.ascontiguousarray(np.asarray(Image.fromarray(arr).resize(
                size, Image.Resampling.BILINEAR, reducing_gap=3.0)))
        faces, rejected = [], []
        for box, score in self._candidates(small):
            if scale != 1.0:  # dlib boxes are inclusive: map pixel centres back through the resize
                box = tuple((v + 0.5) / scale - 0.5 for v in box)
            int_box = tuple(int(round(v)) for v in box)
            if score < self.min_score:
                rejected.append((int_box, score))
                continue
            faces.append(DetectedFace(box=int_box, score=score, landmarks=self._predict(arr, box)))
        faces.sort(key=lambda f: (-f.area, -f.score))
        rejected.sort(key=lambda r: -r[1])
        return faces, rejected

    def detect(self, image: Image.Image | np.ndarray) -> list[DetectedFace]:
        """The faces of ``image`` (a ``PIL.Image`` or an RGB/grey array), largest first; ``[]`` when none."""
        return self.detect_with_rejected(image)[0]
