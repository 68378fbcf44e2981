"""FFHQ alignment (clcae.align), scripts/align.py and the id_dlib metric.

The geometry and paste-back tests run everywhere (numpy / Pillow only, synthetic landmarks). The tests on real
faces need the optional [align] extra (dlib-bin, face_recognition_models) and are skipped cleanly without it; they
use scikit-image's bundled pictures: the astronaut portrait, the coffee cup (no face) and the LFW subset (a second,
different person).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from clcae.align import detect as detect_module
from clcae.align.ffhq import AlignedFace, align_face, feather_mask, ffhq_quad, paste_back, source_to_crop
from clcae.align.records import load_alignment, save_alignment

ROOT = Path(__file__).resolve().parents[1]
HAS_EXTRA = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec(
    "face_recognition_models") is not None
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="needs the [align] extra: pip install -e .[align]")

#: Where FFHQ puts the eye centres in its crops (fractions of the side), for a face whose eye distance sets the
#: scale: x = 0.5 -+ 1/8; y a little above the middle.
FFHQ_EYES = np.array([[0.375, 0.477], [0.625, 0.477]])


# ------------------------------------------------------------------------------------------------- helpers
def synthetic_landmarks(cx: float, cy: float, eye: float = 80.0, mouth: float = 85.0, angle: float = 0.0
                        ) -> np.ndarray:
    """68 points where only those FFHQ uses are meaningful: eyes (36-47) and mouth corners (48, 54), rotated by
    ``angle`` radians about the eye midpoint at ``(cx, cy)``."""
    pts = np.zeros((68, 2))
    pts[36:42] = [-eye / 2, 0.0]
    pts[42:48] = [eye / 2, 0.0]
    pts[48] = [-30.0, mouth]
    pts[54] = [30.0, mouth]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + [cx, cy]


def smooth_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """Low-pass random colour texture: resampling barely changes it, so a round trip can be compared tightly."""
    rng = np.random.default_rng(seed)
    arr = scipy.ndimage.gaussian_filter(rng.normal(size=(height, width, 3)), [6, 6, 0])
    arr = (arr - arr.min()) / (arr.max() - arr.min()) * 255
    return Image.fromarray(arr.astype(np.uint8))


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """``[2, 2]`` centres of the image-left and image-right eyes, pixel corners (dlib points + 0.5)."""
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)]) + 0.5


def quad_mask(quad: np.ndarray, size: tuple[int, int], shrink: float = 0.0) -> np.ndarray:
    """``bool [H, W]``: pixel centres inside the quad, optionally shrunk towards its centre by a fraction."""
    height, width = size
    centre = quad.mean(0)
    q = centre + (quad - centre) * (1.0 - shrink)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    inside = np.ones((height, width), bool)
    for k in range(4):
        a, b = q[k], q[(k + 1) % 4]
        cross = (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])
        inside &= cross <= 0  # corners go counter-clockwise on screen: TL, BL, BR, TR
    return inside


# ------------------------------------------------------------------------------------- geometry (no dlib)
def test_ffhq_quad_frontal_face_geometry():
    eye, mouth = 80.0, 85.0
    lm = synthetic_landmarks(400, 300, eye, mouth)
    quad, qsize = ffhq_quad(lm)
    half = max(2.0 * eye, 1.8 * mouth)
    assert qsize == pytest.approx(2 * half)
    centre = np.array([400.0, 300.0 + 0.1 * mouth])
    expected = centre + np.array([[-half, -half], [-half, half], [half, half], [half, -half]])
    np.testing.assert_allclose(quad, expected, atol=1e-9)
    # The eyes land at FFHQ's canonical horizontal positions (eye distance sets the scale here).
    eyes = source_to_crop(eye_centres(lm), quad + 0.5, (1, 1))
    np.testing.assert_allclose(eyes[:, 0], [0.375, 0.625], atol=1e-9)


def test_ffhq_quad_rotates_and_scales_with_the_face():
    base, _ = ffhq_quad(synthetic_landmarks(0, 0, 60, 70))
    turned, _ = ffhq_quad(synthetic_landmarks(0, 0, 60, 70, angle=0.4))
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    np.testing.assert_allclose(turned, base @ rot.T, atol=1e-9)
    long_face, qsize = ffhq_quad(synthetic_landmarks(0, 0, 40, 100))  # mouth distance sets the scale
    assert qsize == pytest.approx(2 * 1.8 * 100)
    with pytest.raises(ValueError, match="68 landmarks"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))


@pytest.mark.parametrize("case", ["inside", "shrink", "padded"])
def test_align_face_quad_maps_source_points_into_the_crop(case):
    """A bright dot in the photo lands in the crop where the saved quad says, in every branch of the recipe."""
    photo = np.full((600, 800, 3), 90, np.uint8)
    centre, size = {"inside": ((400, 300), 256), "shrink": ((400, 300), 64), "padded": ((70, 60), 256)}[case]
    lm = synthetic_landmarks(*centre, angle=0.35)
    dot = np.array([centre[0] + 25.0, centre[1] + 40.0])  # pixel-corner coordinates of the dot's centre
    photo[int(dot[1]) - 8:int(dot[1]) + 8, int(dot[0]) - 8:int(dot[0]) + 8] = 255
    face = align_face(Image.fromarray(photo), lm, size)
    assert face.image.size == (size, size)
    assert (face.shrink > 1) == (case == "shrink") and (face.padding is not None) == (case == "padded")
    crop = np.asarray(face.image, dtype=np.float64).mean(-1)
    expected = source_to_crop(dot[None], face.quad, (size, size))[0]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    weights = np.clip(crop - 95, 0, None)  # the dot above the background's 90
    weights[np.hypot(xs - expected[0], ys - expected[1]) > size / 6] = 0
    found = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    photo_pixels = np.hypot(*(face.quad[3] - face.quad[0])) / size  # photo pixels per crop pixel
    assert np.hypot(*(found - expected)) * photo_pixels < 0.15, (found, expected)


def test_padding_fills_outside_the_photo_with_blurred_content():
    photo = smooth_image(400, 500)
    face = align_face(photo, synthetic_landmarks(60, 50, angle=0.2), 128)
    assert face.padding is not None and min(face.padding) > 0
    crop = np.asarray(face.image)
    corner = crop[:16, :16].reshape(-1, 3)  # well outside the photo
    assert corner.min() > 10  # not black: reflected, blurred, faded to the median colour
    black = align_face(photo, synthetic_landmarks(60, 50, angle=0.2), 128, padding=False)
    assert black.padding is None and np.asarray(black.image)[:16, :16].max() == 0


@pytest.mark.parametrize("centre,size", [((400, 300), 256), ((400, 300), 64), ((380, 290), 1024)])
def test_paste_back_of_the_unedited_crop_reproduces_the_photo(centre, size):
    photo = smooth_image(600, 800)
    face = align_face(photo, synthetic_landmarks(*centre, angle=0.3), size,
                      transform_size=min(4 * size, 2048))
    back = paste_back(photo, face.image, face.quad, feather=0.1)
    assert back.size == photo.size
    a, b = np.asarray(photo, np.float64), np.asarray(back, np.float64)
    inner = quad_mask(face.quad, (600, 800), shrink=0.3)
    assert np.abs(a - b)[inner].mean() < 2.0 and np.abs(a - b)[inner].max() <= 12
    outside = ~quad_mask(face.quad, (600, 800), shrink=-0.02)
    assert np.array_equal(a[outside], b[outside])  # pixels outside the square are untouched


def test_paste_back_blends_an_edited_crop_with_a_feathered_edge():
    photo = smooth_image(300, 400)
    face = align_face(photo, synthetic_landmarks(200, 130, 50, 55), 128)
    edited = Image.fromarray(np.full((256, 256, 3), (255, 0, 0), np.uint8))  # another size than the crop
    back = np.asarray(paste_back(photo, edited, face.quad, feather=0.2), np.float64)
    centre = face.quad.mean(0).astype(int)
    np.testing.assert_allclose(back[centre[1], centre[0]], [255, 0, 0], atol=1)
    edge = ((face.quad[0] + face.quad[1]) / 2 * 0.97 + centre * 0.03).astype(int)  # near the left edge
    red = back[edge[1], edge[0], 0] - np.asarray(photo, np.float64)[edge[1], edge[0], 0]
    assert 0 < red < 255 - np.asarray(photo)[edge[1], edge[0], 0] - 20  # partly blended
    hard = np.asarray(paste_back(photo, edited, face.quad, feather=0.0), np.float64)
    np.testing.assert_allclose(hard[edge[1], edge[0]], [255, 0, 0], atol=1)
    masked = np.asarray(paste_back(photo, edited, face.quad, feather=0.0, mask=np.zeros((8, 8))))
    assert np.array_equal(masked, np.asarray(photo))
    with pytest.raises(ValueError, match="feather"):
        feather_mask((8, 8), 0.7)


def test_alignment_record_round_trips(tmp_path):
    photo = smooth_image(300, 400)
    face = align_face(photo, synthetic_landmarks(200, 130, 50, 55), 64)
    png, record_path = save_alignment(face, tmp_path / "x.png", source=tmp_path / "photo.jpg", face_index=0)
    record = load_alignment(record_path)
    assert Image.open(png).size == (64, 64)
    np.testing.assert_allclose(record["quad"], face.quad)
    assert record["source_size"] == (300, 400) and record["face_index"] == 0
    assert record["source"].endswith("photo.jpg")
    (tmp_path / "bad.json").write_text(json.dumps({"quad": [[0, 0]]}))
    with pytest.raises(ValueError, match="bad.json"):
        load_alignment(tmp_path / "bad.json")


def test_missing_extra_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(detect_module.AlignExtraMissing, match=r"pip install -e \.\[align\]"):
        detect_module.import_dlib()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    with pytest.raises(detect_module.AlignExtraMissing, match="face_recognition_models"):
        detect_module.model_file(detect_module.SHAPE_PREDICTOR_68)


# --------------------------------------------------------------------------------------- real faces (dlib)
@pytest.fixture(scope="module")
def detector():
    if not HAS_EXTRA:
        pytest.skip("needs the [align] extra: pip install -e .[align]")
    from clcae.align.detect import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def aligned_astronaut(detector, astronaut) -> AlignedFace:
    from clcae.align import align_faces

    faces = align_faces(astronaut, detector, 256)
    assert len(faces) == 1
    return faces[0]


def two_astronauts(astronaut: Image.Image) -> Image.Image:
    """The astronaut twice side by side: full size on the left, at 3/4 on the right."""
    small = astronaut.resize((384, 384), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (512 + 384, 512), (200, 200, 200))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(small, (512, 64))
    return canvas


def lfw_face() -> Image.Image:
    """A second, different person: scikit-image's LFW subset face 1 (25 px, upscaled and padded for the detector)."""
    data = pytest.importorskip("skimage.data")
    face = (data.lfw_subset()[1] * 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(face).convert("RGB").resize((200, 200), Image.Resampling.BICUBIC))
    return Image.fromarray(np.pad(big, ((60, 60), (60, 60), (0, 0)), mode="edge"))


@needs_extra
def test_astronaut_aligns_with_eyes_at_the_ffhq_positions(detector, aligned_astronaut):
    face = aligned_astronaut
    assert face.image.size == (256, 256) and face.image.mode == "RGB"
    assert face.box is not None and face.score > 0.3
    # Where the quad sends the photo's eyes ...
    eyes = source_to_crop(eye_centres(face.landmarks), face.quad, (256, 256)) / 256
    np.testing.assert_allclose(eyes, FFHQ_EYES, atol=0.02)
    # ... and where the detector finds them again in the crop's pixels.
    again = detector.detect(np.asarray(face.image))
    assert len(again) == 1
    np.testing.assert_allclose(eye_centres(again[0].landmarks) / 256, FFHQ_EYES, atol=0.02)


@needs_extra
def test_astronaut_quad_round_trips(astronaut, aligned_astronaut):
    face = aligned_astronaut
    back = paste_back(astronaut, face.image, face.quad, feather=0.1)
    a, b = np.asarray(astronaut, np.float64), np.asarray(back, np.float64)
    left, top, right, bottom = face.box
    assert np.abs(a - b)[top:bottom, left:right].mean() < 4.0
    outside = ~quad_mask(face.quad, a.shape[:2], shrink=-0.02)
    assert np.array_equal(a[outside], b[outside])
    inverted = Image.fromarray(255 - np.asarray(face.image))  # an "edit" must show up
    changed = np.asarray(paste_back(astronaut, inverted, face.quad), np.float64)
    assert np.abs(a - changed)[top:bottom, left:right].mean() > 50


@needs_extra
def test_largest_face_by_default_all_with_all_faces(detector, astronaut):
    from clcae.align import align_faces

    photo = two_astronauts(astronaut)
    largest = align_faces(photo, detector, 128)
    assert len(largest) == 1 and largest[0].box[2] < 512  # the full-size copy, on the left
    every = align_faces(photo, detector, 128, all_faces=True)
    assert len(every) == 2 and every[1].box[0] >= 512
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in every]
    assert areas[0] > areas[1]
    # The mission patch on the sleeve is a weak candidate, rejected by the default score threshold.
    faces, rejected = detector.detect_with_rejected(np.asarray(astronaut))
    assert len(faces) == 1 and rejected and all(score < detector.min_score for _, score in rejected)


def _load_script():
    spec = importlib.util.spec_from_file_location("align_script", ROOT / "scripts" / "align.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_extra
def test_script_reports_files_without_a_face_and_goes_on(tmp_path, astronaut, capsys):
    data = pytest.importorskip("skimage.data")
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    astronaut.save(src / "astronaut.jpg", quality=95)
    Image.fromarray(data.coffee()).save(src / "sub" / "coffee.png")
    Image.new("RGB", (200, 150), (40, 90, 200)).save(src / "flat.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    two_astronauts(astronaut).save(src / "two.png")
    script = _load_script()
    out = tmp_path / "aligned"

    assert script.main(["--input", str(src), "--out", str(out), "--size", "128", "--no-progress"]) == 0
    captured = capsys.readouterr()
    for name in ("coffee.png", "flat.png"):
        assert f"no face in {src / ('sub' if name == 'coffee.png' else '') / name}" in captured.err
    assert f"unreadable {src / 'broken.png'}" in captured.err
    summary = json.loads((out / "align_summary.json").read_text())
    assert (summary["aligned"], summary["faces"], len(summary["no_face"]), len(summary["failed"])) == (2, 2, 2, 1)
    record = load_alignment(out / "astronaut.json")
    assert record["source_size"] == (512, 512) and record["output_size"] == 128
    assert record["source"] == str(src / "astronaut.jpg") and record["faces_found"] == 1
    assert Image.open(out / "astronaut.png").size == (128, 128)
    assert load_alignment(out / "two.json")["faces_found"] == 2 and not (out / "two_face1.json").exists()

    # Resumable: a second run skips the aligned photos (and reports the others again).
    assert script.main(["--input", str(src), "--out", str(out), "--size", "128", "--no-progress"]) == 0
    summary = json.loads((out / "align_summary.json").read_text())
    assert (summary["skipped"], summary["aligned"], len(summary["no_face"])) == (2, 0, 2)
    # Other settings into the same folder are refused; --all-faces into a new one writes every face.
    assert script.main(["--input", str(src), "--out", str(out), "--size", "64", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
    out_all = tmp_path / "all"
    assert script.main(["--input", str(src / "two.png"), "--out", str(out_all), "--size", "64", "--all-faces",
                        "--no-progress"]) == 0
    assert sorted(p.name for p in out_all.glob("two_face*.png")) == ["two_face0.png", "two_face1.png"]
    only_flat = tmp_path / "flat_only"
    assert script.main(["--input", str(src / "flat.png"), "--out", str(only_flat), "--no-progress"]) == 1


@needs_extra
def test_id_dlib_same_face_high_different_faces_lower(detector, astronaut, aligned_astronaut):
    from clcae.align import align_faces
    from clcae.metrics.dlib_identity import DlibFaceEmbedder, dlib_identity_similarity

    embedder = DlibFaceEmbedder()
    same = aligned_astronaut.image
    smaller = align_faces(astronaut.resize((384, 384), Image.Resampling.LANCZOS), detector, 256)[0].image
    other = align_faces(lfw_face(), detector, 256)[0].image
    result = dlib_identity_similarity([same, same, same], [same, smaller, other], embedder=embedder)
    sim = result.similarity
    assert result.no_face == 0 and sim[0] == pytest.approx(1.0, abs=1e-6)
    assert sim[1] > 0.97 and result.distance[1] < 0.6  # the same person from another resolution
    assert sim[2] < sim[1] - 0.05 and result.distance[2] > 0.6  # a different person (dlib's threshold: 0.6)

    # Tensors in [-1, 1]; 64 px crops (upscaled internally); a non-finite image gives NaN and is counted.
    x = torch.from_numpy(np.array(same.resize((64, 64), Image.Resampling.LANCZOS))).permute(2, 0, 1)
    x = x.float() / 127.5 - 1
    batch = torch.stack([x, x])
    batch_nan = batch.clone()
    batch_nan[1, 0, 0, 0] = float("nan")
    result = dlib_identity_similarity(batch, batch_nan, embedder=embedder)
    assert result.similarity[0] == pytest.approx(1.0, abs=1e-6) and torch.isnan(result.similarity[1])
    assert result.no_face == 1 and result.no_face_indices == [1]
    assert result.summary() == {"id_dlib": pytest.approx(1.0, abs=1e-6), "id_dlib_no_face": 1, "id_dlib_pairs": 2}

    # face_region='detect' on unaligned photos: a picture without a face is NaN, not an error.
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    detected = dlib_identity_similarity([astronaut, flat], [astronaut, astronaut], face_region="detect")
    assert detected.similarity[0] == pytest.approx(1.0, abs=1e-6) and detected.no_face_indices == [1]
    assert detected.mean() == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------- the real-photo pipeline (no dlib)
def test_paste_back_of_a_small_crop_changes_nothing_outside_the_square():
    """A 16 px crop of a ~220 px square: one crop pixel covers 14 photo pixels, yet nothing outside the square
    may change, whatever the feather (the blend weight is evaluated in the photo, not interpolated)."""
    photo = smooth_image(300, 400)
    face = align_face(photo, synthetic_landmarks(200, 130, 55, 60, angle=0.3), 16)
    white = Image.new("RGB", (16, 16), (255, 255, 255))
    a = np.asarray(photo, np.int16)
    outside = ~quad_mask(face.quad, (300, 400))
    for feather in (0.0, 0.1, 0.5):
        back = np.asarray(paste_back(photo, white, face.quad, feather=feather), np.int16)
        assert np.array_equal(back[outside], a[outside]), feather
        if feather < 0.5:  # inside the ramp the crop alone shows (0.5: the ramp reaches the centre)
            assert (back[quad_mask(face.quad, (300, 400), shrink=0.5)] == 255).all(), feather
    hard = np.asarray(paste_back(photo, white, face.quad, feather=0.0), np.int16)
    assert (hard[quad_mask(face.quad, (300, 400), shrink=0.02)] == 255).all()  # a hard edge up to the border


def test_alignment_record_for_finds_only_alignment_records(tmp_path):
    from clcae.align import alignment_record_for

    face = align_face(smooth_image(300, 400), synthetic_landmarks(200, 130, 50, 55), 32)
    png, record = save_alignment(face, tmp_path / "a.png", source=tmp_path / "photo.png")
    assert alignment_record_for(png) == record
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    assert alignment_record_for(tmp_path / "b.png") is None  # no JSON beside it
    Image.new("RGB", (8, 8)).save(tmp_path / "c.png")
    (tmp_path / "c.json").write_text('{"caption": "not an alignment record"}')
    assert alignment_record_for(tmp_path / "c.png") is None


class _CentreFaceDetector:
    """A stand-in detector without dlib: one frontal face in the middle of every image."""

    def detect(self, image: np.ndarray) -> list:
        height, width = image.shape[:2]
        lm = synthetic_landmarks(width / 2, height / 2 - 10, width / 8, width / 7)
        return [detect_module.DetectedFace(box=(0, 0, width - 1, height - 1), score=1.0, landmarks=lm)]


def test_align_folder_leaves_an_excluded_output_folder_alone(tmp_path):
    from clcae.align import align_folder

    photos = tmp_path / "photos"
    (photos / "run" / "w").mkdir(parents=True)
    smooth_image(120, 160).save(photos / "a.png")
    smooth_image(32, 32, seed=1).save(photos / "run" / "w" / "a.png")  # a reconstruction of an earlier run
    summary = align_folder(photos, photos / "run" / "aligned", _CentreFaceDetector(), output_size=32,
                           exclude=photos / "run", progress=False)
    assert (summary["total"], summary["aligned"]) == (1, 1)
    assert load_alignment(photos / "run" / "aligned" / "a.json")["source_size"] == (120, 160)
    other = align_folder(photos, tmp_path / "elsewhere", _CentreFaceDetector(), output_size=32, progress=False)
    assert other["total"] == 3  # without the exclusion the earlier outputs are read as photos
