"""The evaluation report's images are 8-bit PNGs while the default protocol measures float renders: the report's
notes say so, and the difference they state is real and small; under the paper's protocol (renders quantised as
saved) the PNGs give back the measured numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clcae.data.images import load_image, to_tensor
from clcae.inversion import build_inverter
from clcae.metrics.evaluation import EvalMethod, FolderSource, build_metric_suite, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def _recomputed(result, suite, image_dir, n):
    """Per metric, the largest |value from the saved PNGs - value in the results| over the saved images."""
    worst: dict[str, float] = {}
    for i in range(n):
        x = to_tensor(load_image(image_dir / f"{i:04d}_psp_wplus.png", None))[None]
        gt = to_tensor(load_image(image_dir / f"{i:04d}_input.png", None))[None]
        values, _ = suite.per_image(x, gt)
        for k, v in values.items():
            measured = result.per_image[("psp", "wplus")][k][i]
            worst[k] = max(worst.get(k, 0.0), abs(float(v[0]) - measured))
    return worst


def test_report_notes_say_the_pngs_are_8_bit_and_the_metrics_float(tmp_path):
    torch.manual_seed(0)
    psp = build_inverter(dict(arch="psp", encoder=dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32),
                              generator=dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16),
                              input_size=[32, 32])).eval()
    psp.latent_avg.normal_()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    suite = build_metric_suite(use_hub_cache=False)

    default = evaluate([EvalMethod("psp", psp)], FolderSource(data), suite, save_images=3,
                       image_dir=tmp_path / "default")
    (note,) = [n for n in default.notes if "images/*.png" in n]
    assert "8-bit" in note and "float renders" in note and "differ" in note
    worst = _recomputed(default, suite, tmp_path / "default", 3)
    assert 0 < worst["ssim_w11"] < 2e-3 and 0 < worst["mse"] < 1e-4  # real, and as small as the note says

    paper = evaluate([EvalMethod("psp", psp)], FolderSource(data), suite, protocol="celebahq", save_images=3,
                     image_dir=tmp_path / "paper")
    (note,) = [n for n in paper.notes if "images/*.png" in n]
    assert "are the same" in note
    worst = _recomputed(paper, suite, tmp_path / "paper", 3)
    assert max(worst.values()) < 1e-6

    none_saved = evaluate([EvalMethod("psp", psp)], FolderSource(data, n=1), suite)
    assert not any("images/*.png" in n for n in none_saved.notes)  # no images, no note
