"""The models shipped in pretrained/: each loads strictly with weights_only, has its model card, stays under the
size limit, and behaves as its card says. Models not trained yet are skipped (they name the file)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from clcae.checkpoints import load_generator
from clcae.pretrained import (SYNTHFACES_DIRECTIONS, SYNTHFACES_DOMAIN_NET, SYNTHFACES_GENERATOR, pretrained_dir,
                              shipped)

MAX_BYTES = 16 * 2 ** 20
pytestmark = pytest.mark.usefixtures("one_thread")


def _need(name: str) -> Path:
    path = shipped(name)
    if path is None:
        pytest.skip(f"{pretrained_dir() / name} is not shipped yet")
    return path


@pytest.mark.parametrize("name", [SYNTHFACES_GENERATOR, SYNTHFACES_DOMAIN_NET])
def test_shipped_file_has_a_card_and_fits(name):
    path = _need(name)
    assert path.stat().st_size < MAX_BYTES, path
    assert path.with_suffix(".md").is_file(), f"no model card for {path}"


def test_shipped_generator_draws_64px_images_and_its_fd_report_is_kept():
    G = load_generator(_need(SYNTHFACES_GENERATOR))
    assert (G.size, G.style_dim, G.n_latent) == (64, 128, 10)
    assert G.latent_avg_source == "file"
    with torch.no_grad():
        img = G(torch.randn(4, 128, generator=torch.Generator().manual_seed(0)), truncation=0.7, noise_mode="const")
    assert img.shape == (4, 3, 64, 64) and torch.isfinite(img).all()
    assert img.std() > 0.1  # not a constant picture
    report = json.loads((pretrained_dir() / "synthfaces64_generator_fd.json").read_text())
    assert report["fd_real_vs_real"] < report["fd_generated_vs_test"]
    card = (pretrained_dir() / "synthfaces64_generator.md").read_text(encoding="utf-8")
    assert f"{report['fd_generated_vs_test']:.3f}" in card and f"{report['fd_real_vs_real']:.3f}" in card


def test_shipped_directions_fit_the_shipped_generator():
    from clcae.editing import load_direction

    G = load_generator(_need(SYNTHFACES_GENERATOR))
    files = sorted((pretrained_dir() / SYNTHFACES_DIRECTIONS).glob("*.pt"))
    if not files:
        pytest.skip(f"no directions in {pretrained_dir() / SYNTHFACES_DIRECTIONS} yet")
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a direction learned for another generator warns: fail on it here
            d = load_direction(path, generator=G)
        assert d.attribute == path.stem
        assert d.vector.shape[-1] == G.style_dim and abs(float(d.vector.norm()) - 1.0) < 1e-4
