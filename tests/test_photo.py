"""The real-photo workflow on scikit-image's astronaut with tiny CPU networks (32 px generator, narrow encoder):
scripts/photo.py (align -> invert -> edit -> paste back -> index.html), scripts/invert.py --align and
scripts/edit.py --paste-back / --align.

Needs the optional [align] extra (dlib-bin, face_recognition_models); the whole module is skipped cleanly without
it. The paste-back of edit.py without dlib (synthetic landmarks) is tested in test_editing.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("dlib", reason="needs the [align] extra: pip install -e .[align]")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs the [align] extra: pip install -e .[align]", allow_module_level=True)
skimage_data = pytest.importorskip("skimage.data")

from clcae.align.records import load_alignment  # noqa: E402
from clcae.checkpoints import save_inverter  # noqa: E402
from clcae.data.images import display_path, load_image  # noqa: E402
from clcae.networks.inverters import build_inverter  # noqa: E402
from test_align import quad_mask, two_astronauts  # noqa: E402  (the same helpers, one definition)

ROOT = Path(__file__).resolve().parents[1]
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
ENCODER = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32, nhead=2, dim_feedforward=32, feature_channels=16,
               feature_downsample=0)

pytestmark = pytest.mark.usefixtures("one_thread")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_photo_test", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


photo_script, invert_script, edit_script = _script("photo"), _script("invert"), _script("edit")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A tiny CLCAE inverter, an InterFaceGAN direction for its generator, and photos: the astronaut (one face)
    and the coffee cup (no face)."""
    d = tmp_path_factory.mktemp("photo")
    torch.manual_seed(1)
    inv = build_inverter(dict(arch="clcae", encoder=ENCODER, generator=GEN, input_size=[32, 32], idx_k=3)).eval()
    inv.latent_avg.copy_(inv.decoder.mean_latent(256))
    save_inverter(inv, d / "clcae.pt")
    torch.save(torch.randn(1, 32, generator=torch.Generator().manual_seed(2)), d / "smile.pt")
    photos = d / "photos"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.jpg", quality=95)
    Image.fromarray(skimage_data.coffee()).save(photos / "coffee.png")
    two_astronauts(Image.fromarray(skimage_data.astronaut())).save(d / "two.png")  # not in photos/: 2 faces
    return d


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def check_pasted(pasted: Path, photo: np.ndarray, quad: np.ndarray) -> None:
    """The photo's size; identical to the photo outside the (slightly grown) quad; replaced inside."""
    got = _rgb(pasted)
    assert got.shape == photo.shape, pasted
    outside = ~quad_mask(quad, photo.shape[:2], shrink=-0.02)
    assert np.array_equal(got[outside], photo[outside]), pasted
    inside = quad_mask(quad, photo.shape[:2], shrink=0.3)
    assert np.abs(got - photo)[inside].mean() > 10, pasted  # the tiny random generator draws no astronaut


# ---------------------------------------------------------------------------------------------------- photo.py
def test_photo_script_end_to_end(assets, tmp_path, capsys):
    out = tmp_path / "page"
    photo = assets / "photos" / "astronaut.jpg"
    argv = [str(photo), "--checkpoint", str(assets / "clcae.pt"), "--edit",
            f"interfacegan:{assets / 'smile.pt'}:-2,0,2", "--edit", "sefa:0:5", "--out", str(out), "--device", "cpu"]
    assert photo_script.main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == display_path(out / "index.html")

    page = (out / "index.html").read_text(encoding="utf-8")
    sources = [urllib.parse.unquote(s) for s in re.findall(r'<img src="([^"]+)"', page)]
    # original | crop | 3 reconstructions | pasted back; per strength 3 edited crops + 1 pasted back (3 + 1 strengths)
    assert len(sources) == 6 + 4 * 4 and len(set(sources)) == len(sources)
    assert all((out / s).is_file() for s in sources), [s for s in sources if not (out / s).is_file()]
    for name in ("detected.jpg", "aligned.png", "reconstruction_w.png", "reconstruction_wplus.png",
                 "reconstruction_wplus_f.png", "pasted/reconstruction.png", "pasted/interfacegan_smile/s+2.png",
                 "edits/sefa_k0/wplus_f_s+5.png"):
        assert name in sources, name
    assert "not a photo of this person" in page and "note warning" not in page  # a general note, no warning

    record = load_alignment(out / "aligned.json")
    assert record["source"] == os.path.abspath(photo) and record["source_size"] == (512, 512)
    assert Image.open(out / "aligned.png").size == (32, 32)  # default: the encoder's input side
    original = np.asarray(load_image(photo), dtype=np.int16)
    assert np.array_equal(_rgb(out / "original.png"), original)
    for pasted in ("pasted/reconstruction.png", "pasted/interfacegan_smile/s-2.png",
                   "pasted/interfacegan_smile/s+2.png", "pasted/sefa_k0/s+5.png"):
        check_pasted(out / pasted, original, record["quad"])
    # strength 0 is the reconstruction; the edit changes the crop and the pasted photo
    rec = _rgb(out / "reconstruction_wplus_f.png")
    assert np.abs(_rgb(out / "edits" / "interfacegan_smile" / "wplus_f_s+0.png") - rec).max() <= 1
    assert np.abs(_rgb(out / "edits" / "interfacegan_smile" / "wplus_f_s+2.png") - rec).mean() > 1
    assert np.abs(_rgb(out / "pasted" / "interfacegan_smile" / "s+0.png")
                  - _rgb(out / "pasted" / "reconstruction.png")).max() <= 1
    assert not np.array_equal(_rgb(out / "pasted" / "interfacegan_smile" / "s+2.png"),
                              _rgb(out / "pasted" / "reconstruction.png"))
    # the codes name the record, so edit.py can paste back later
    latents = torch.load(out / "latents.pt", weights_only=True)
    assert latents["alignment"] == str((out / "aligned.json").resolve()) and latents["f"].shape == (16, 8, 8)


def test_photo_script_default_model_is_synthfaces_and_out_of_domain(assets, tmp_path, monkeypatch, capsys):
    pre = tmp_path / "pretrained"
    pre.mkdir()
    monkeypatch.setenv("CLCAE_PRETRAINED_DIR", str(pre))
    photo = str(assets / "photos" / "astronaut.jpg")
    assert photo_script.main([photo, "--out", str(tmp_path / "none"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "synthfaces64_clcae.pt" in err and "does not exist" in err and "--checkpoint FILE" in err

    shutil.copy(assets / "clcae.pt", pre / "synthfaces64_clcae.pt")
    out = tmp_path / "synth"
    assert photo_script.main([photo, "--out", str(out), "--device", "cpu", "--align-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "note: Out of domain" in printed and "not a photo of this person" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'class="note warning">Out of domain' in page and "SynthFaces" in page
    assert Image.open(out / "aligned.png").size == (64, 64)  # aligned larger, resized when read
    assert Image.open(out / "pasted" / "reconstruction.png").size == (512, 512)


def test_photo_script_errors(assets, tmp_path, capsys):
    ckpt = ["--checkpoint", str(assets / "clcae.pt"), "--device", "cpu"]
    assert photo_script.main([str(assets / "photos" / "coffee.png"), *ckpt, "--out", str(tmp_path / "a")]) == 1
    assert "no face in" in capsys.readouterr().err
    assert photo_script.main([str(tmp_path / "missing.jpg"), *ckpt]) == 2
    assert "missing.jpg: no such file" in capsys.readouterr().err
    torch.save(torch.randn(1, 16), tmp_path / "d16.pt")  # a direction of another generator
    assert photo_script.main([str(assets / "photos" / "astronaut.jpg"), *ckpt, "--edit",
                              f"interfacegan:{tmp_path / 'd16.pt'}:1", "--out", str(tmp_path / "b")]) == 2
    assert "dimension 16" in capsys.readouterr().err and not (tmp_path / "b").exists()  # checked before any work


def test_photo_script_with_two_faces_says_so_and_picks_or_edits_all(assets, tmp_path, capsys):
    photo = assets / "two.png"
    original = np.asarray(load_image(photo), dtype=np.int16)
    base = [str(photo), "--checkpoint", str(assets / "clcae.pt"), "--device", "cpu", "--edit",
            f"interfacegan:{assets / 'smile.pt'}:2"]

    # default: the largest face, and both the output and the page say that another face was left alone
    out = tmp_path / "largest"
    assert photo_script.main([*base, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found 2 face(s)" in printed and "0: box" in printed and "1: box" in printed
    assert "note: 2 faces found" in printed and "only face 0 (the largest) is edited" in printed
    assert "--face N" in printed and "--all-faces" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'class="note faces">2 faces found' in page and "face 1: box" in page
    record = load_alignment(out / "aligned.json")
    assert (record["face_index"], record["faces_found"]) == (0, 2) and record["quad"][:, 0].max() < 512
    pasted = _rgb(out / "pasted" / "interfacegan_smile" / "s+2.png")
    assert np.array_equal(pasted[:, 560:], original[:, 560:])  # the right-hand face is untouched

    # --face 1: the smaller face on the right
    out = tmp_path / "second"
    assert photo_script.main([*base, "--face", "1", "--out", str(out)]) == 0
    assert "only face 1 is edited" in capsys.readouterr().out
    record = load_alignment(out / "aligned.json")
    assert record["face_index"] == 1 and record["quad"][:, 0].min() > 480
    check_pasted(out / "pasted" / "reconstruction.png", original, record["quad"])

    # --all-faces: per-face folders, and every pasted photo holds both edited faces
    out = tmp_path / "all"
    assert photo_script.main([*base, "--all-faces", "--out", str(out)]) == 0
    assert "note: 2 faces found" not in capsys.readouterr().out
    quads = [load_alignment(out / f"face{i}" / "aligned.json")["quad"] for i in (0, 1)]
    for i in (0, 1):
        assert (out / f"face{i}" / "latents.pt").is_file() and (out / f"face{i}" / "reconstruction_wplus_f.png").is_file()
        assert load_alignment(out / f"face{i}" / "aligned.json")["face_index"] == i
    assert not (out / "aligned.png").exists()
    for name in ("pasted/reconstruction.png", "pasted/interfacegan_smile/s+2.png"):
        got = _rgb(out / name)
        outside = ~(quad_mask(quads[0], original.shape[:2], shrink=-0.02)
                    | quad_mask(quads[1], original.shape[:2], shrink=-0.02))
        assert np.array_equal(got[outside], original[outside]), name
        for quad in quads:
            inside = quad_mask(quad, original.shape[:2], shrink=0.3)
            assert np.abs(got - original)[inside].mean() > 10, name
    # the same as pasting each face's saved edited crop, one after the other
    from clcae.align import paste_back

    again = load_image(photo)
    for i, quad in enumerate(quads):
        again = paste_back(again, Image.open(out / f"face{i}" / "edits" / "interfacegan_smile" / "wplus_f_s+2.png"),
                           quad)
    assert np.abs(np.asarray(again, np.int16) - _rgb(out / "pasted" / "interfacegan_smile" / "s+2.png")).max() <= 1
    page = (out / "index.html").read_text(encoding="utf-8")
    sources = [urllib.parse.unquote(s) for s in re.findall(r'<img src="([^"]+)"', page)]
    assert all((out / s).is_file() for s in sources) and "face1/edits/interfacegan_smile/wplus_f_s+2.png" in sources
    assert 'class="note faces"' not in page

    # a face the photo does not have, or both options: usage errors, nothing written
    assert photo_script.main([*base, "--face", "2", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "face 2:" in err and "two.png has 2 face(s), numbered 0 to 1" in err
    assert not (tmp_path / "none").exists()
    assert photo_script.main([*base, "--face", "1", "--all-faces", "--out", str(tmp_path / "none")]) == 2
    assert "--face and --all-faces" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ invert.py / edit.py
@pytest.fixture(scope="module")
def aligned_run(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("inverted") / "run"
    argv = ["--checkpoint", str(assets / "clcae.pt"), "--input", str(assets / "photos"), "--align", "--out",
            str(out), "--device", "cpu", "--no-progress"]
    return argv, out


def test_invert_align_reports_the_photo_without_a_face_and_inverts_the_face(assets, aligned_run, capsys):
    argv, out = aligned_run
    assert invert_script.main(argv) == 0
    captured = capsys.readouterr()
    assert f"no face in {assets / 'photos' / 'coffee.png'}" in captured.err
    assert "1 without a face" in captured.out and "coffee.png" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["total"]) == (1, 0, 1)
    assert [Path(f["path"]).name for f in summary["no_face"]] == ["coffee.png"]
    assert summary["align"]["photos"] == 2 and summary["align"]["faces"] == 1
    record = load_alignment(out / "aligned" / "astronaut.json")
    assert record["source"] == os.path.abspath(assets / "photos" / "astronaut.jpg")
    assert Image.open(out / "aligned" / "astronaut.png").size == (32, 32)
    latents = torch.load(out / "latents" / "astronaut.pt", weights_only=True)
    assert latents["alignment"] == str((out / "aligned" / "astronaut.json").resolve())
    assert latents["wplus"].shape == (8, 32) and not (out / "latents" / "coffee.pt").exists()
    assert json.loads((out / "run.json").read_text())["settings"]["align"]["output_size"] == 32
    # resumable: nothing is aligned or inverted again
    assert invert_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["align"]["skipped"]) == (0, 1, 1)
    # another crop size into the same folder is refused
    capsys.readouterr()
    assert invert_script.main([*argv, "--align-size", "48"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_invert_align_without_any_face_fails(assets, tmp_path, capsys):
    assert invert_script.main(["--checkpoint", str(assets / "clcae.pt"), "--input",
                               str(assets / "photos" / "coffee.png"), "--align", "--out", str(tmp_path / "o"),
                               "--device", "cpu", "--no-progress"]) == 1
    assert "no photo gave a face crop" in capsys.readouterr().err


def test_edit_paste_back_writes_full_size_photos(assets, aligned_run, tmp_path, capsys):
    argv, run = aligned_run
    if not (run / "latents" / "astronaut.pt").is_file():
        assert invert_script.main(argv) == 0
    # a second latents file without an alignment record: edited, not pasted, and said so
    plain = tmp_path / "latents"
    plain.mkdir()
    shutil.copy(run / "latents" / "astronaut.pt", plain / "astronaut.pt")
    rec = torch.load(plain / "astronaut.pt", weights_only=True)
    rec.pop("alignment")
    torch.save(rec, plain / "plain.pt")
    out = tmp_path / "edit"
    edit_argv = ["--latents", str(plain), "--edit", f"interfacegan:{assets / 'smile.pt'}:-2,2", "--paste-back",
                 "--out", str(out), "--device", "cpu", "--no-progress"]
    capsys.readouterr()
    assert edit_script.main(edit_argv) == 0
    captured = capsys.readouterr()
    assert f"no paste-back for {plain / 'plain.pt'}: its latents carry no alignment record" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["pasted"], [f["name"] for f in summary["not_pasted"]]) == (2, 1, ["plain"])
    photo = np.asarray(load_image(assets / "photos" / "astronaut.jpg"), dtype=np.int16)
    quad = load_alignment(run / "aligned" / "astronaut.json")["quad"]
    for kind in ("w", "wplus", "wplus_f"):
        for s in ("-2", "+2"):
            check_pasted(out / "pasted" / "interfacegan_smile" / kind / "astronaut" / f"s{s}.png", photo, quad)
    assert (out / "interfacegan_smile" / "wplus_f" / "plain" / "s+2.png").is_file()
    assert not (out / "pasted" / "interfacegan_smile" / "wplus_f" / "plain").exists()
    # the pasted crop is the edited image: warping the saved crop back gives the same photo (up to resampling)
    edited = Image.open(out / "interfacegan_smile" / "wplus_f" / "astronaut" / "s+2.png")
    from clcae.align import paste_back

    again = np.asarray(paste_back(load_image(assets / "photos" / "astronaut.jpg"), edited, quad), dtype=np.int16)
    pasted = _rgb(out / "pasted" / "interfacegan_smile" / "wplus_f" / "astronaut" / "s+2.png")
    assert np.abs(again - pasted).max() <= 1


def test_edit_align_on_photos_pastes_back(assets, tmp_path, capsys):
    out = tmp_path / "edit"
    argv = ["--input", str(assets / "photos"), "--align", "--checkpoint", str(assets / "clcae.pt"), "--edit",
            "sefa:0:3", "--paste-back", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert edit_script.main(argv) == 0
    assert "no face in" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["pasted"], len(summary["no_face"])) == (1, 1, 1)
    photo = np.asarray(load_image(assets / "photos" / "astronaut.jpg"), dtype=np.int16)
    quad = load_alignment(out / "aligned" / "astronaut.json")["quad"]
    check_pasted(out / "pasted" / "sefa_k0" / "wplus_f" / "astronaut" / "s+3.png", photo, quad)
    assert edit_script.main(["--input", str(assets / "photos" / "coffee.png"), "--align", "--checkpoint",
                             str(assets / "clcae.pt"), "--edit", "sefa:0:3", "--out", str(tmp_path / "c"),
                             "--device", "cpu", "--no-progress"]) == 1
    assert "no photo gave a face crop" in capsys.readouterr().err
