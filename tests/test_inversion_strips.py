"""The strips of an inversion run (OUT/strips/NAME.jpg) show the input file as it was, with its aspect ratio, as
docs/INVERSION.md says; the encoder still gets the squashed (or cropped) input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clcae.data.images import to_tensor
from clcae.inversion import build_inverter
from clcae.inversion.runner import invert_folder, read_input, read_input_and_preview

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(width: int, height: int) -> Image.Image:
    """A wide test picture: a horizontal ramp with a dark disc at its centre (squashing turns the disc oval)."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    yy, xx = np.mgrid[:height, :width]
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (0.3 * height) ** 2
    arr = np.stack([x, 255 - x, np.full_like(x, 128)], -1)
    arr[disc] = 20
    return Image.fromarray(arr.astype(np.uint8))


@pytest.mark.parametrize("policy", ["resize", "center_crop"])
def test_preview_is_the_whole_file_and_the_input_is_unchanged(tmp_path, policy):
    _photo(160, 100).save(tmp_path / "wide.png")
    x, preview = read_input_and_preview(tmp_path / "wide.png", (32, 32), policy)
    assert torch.equal(x, read_input(tmp_path / "wide.png", (32, 32), policy))  # what the encoder gets
    assert preview.shape == (3, 32, 51)  # 160 x 32 / 100, the aspect ratio kept
    expected = to_tensor(_photo(160, 100).resize((51, 32), Image.Resampling.BILINEAR, reducing_gap=3.0))
    assert torch.equal(preview, expected)
    assert read_input_and_preview(tmp_path / "wide.png", (32, 32), policy, preview_height=64)[1].shape == (3, 64, 102)


def test_strip_shows_the_input_with_its_aspect_ratio(tmp_path):
    torch.manual_seed(0)
    inverter = build_inverter(dict(arch="psp", encoder=dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32),
                                   generator=dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16),
                                   input_size=[32, 32])).eval()
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(160, 100).save(photos / "wide.png")
    summary = invert_folder(inverter, photos, tmp_path / "out", progress=False)
    assert summary["done"] == 1
    strip = Image.open(tmp_path / "out" / "strips" / "wide.jpg")
    assert strip.size == (51 + 32, 32)  # input 51x32 (not squashed to 32x32) | wplus 32x32
    shown = np.asarray(strip.convert("RGB"), dtype=np.float64)[:, :51]
    as_was = np.asarray(_photo(160, 100).resize((51, 32), Image.Resampling.BILINEAR, reducing_gap=3.0), np.float64)
    assert np.abs(shown - as_was).mean() < 6  # JPEG
    wplus = np.asarray(Image.open(tmp_path / "out" / "wplus" / "wide.png"), dtype=np.float64)
    assert np.abs(np.asarray(strip.convert("RGB"), dtype=np.float64)[:, 51:] - wplus).mean() < 6
