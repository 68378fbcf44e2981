"""The models shipped in pretrained/: each loads strictly with weights_only, has its model card, stays under the
size limit, and behaves as its card says. Models not trained yet are skipped (they name the file)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from clcae.checkpoints import load_file, load_generator
from clcae.pretrained import (SYNTHFACES_CLCAE, SYNTHFACES_CLCAE_STAGE1, SYNTHFACES_DIRECTIONS, SYNTHFACES_DOMAIN_NET, SYNTHFACES_E4E,
                              SYNTHFACES_JUDGE_NET,
                              SYNTHFACES_GENERATOR, SYNTHFACES_PSP, pretrained_dir, shipped)

#: per file; an inverter file holds its encoder (~5 M parameters at 64 px) and the 2 MB generator as decoder
MAX_BYTES = 32 * 2 ** 20
#: everything in pretrained/ together (the repository carries it)
MAX_TOTAL_BYTES = 128 * 2 ** 20
INVERTERS = [SYNTHFACES_CLCAE, SYNTHFACES_PSP, SYNTHFACES_E4E]
pytestmark = pytest.mark.usefixtures("one_thread")


def _need(name: str) -> Path:
    path = shipped(name)
    if path is None:
        pytest.skip(f"{pretrained_dir() / name} is not shipped yet")
    return path


@pytest.mark.parametrize("name", [SYNTHFACES_GENERATOR, SYNTHFACES_DOMAIN_NET, SYNTHFACES_JUDGE_NET] + INVERTERS)
def test_shipped_file_has_a_card_and_fits(name):
    path = _need(name)
    assert path.stat().st_size < MAX_BYTES, path
    assert path.with_suffix(".md").is_file(), f"no model card for {path}"


def test_pretrained_folder_stays_small():
    total = sum(p.stat().st_size for p in pretrained_dir().rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"pretrained/ holds {total / 2 ** 20:.1f} MiB"


@pytest.mark.parametrize("name", INVERTERS)
def test_shipped_inverter_inverts_into_the_shipped_generator_and_beats_the_average_face(name):
    """Each shipped encoder decodes with exactly the shipped generator's weights, and its reconstructions of unseen
    test persons are far closer than the average face (a broken or untrained encoder is not) and as close as its
    recorded training validation says (a model that loads differently from how it trained is not)."""
    from clcae.checkpoints import load_inverter
    from clcae.data.synthfaces import SynthFaces

    path = _need(name)
    inv = load_inverter(path)
    G = load_generator(_need(SYNTHFACES_GENERATOR))
    for k, v in G.state_dict().items():
        assert torch.equal(inv.decoder.state_dict()[k], v), f"{name}: decoder.{k} differs from the shipped generator"
    data = SynthFaces(8, res=64, split="test")
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        out = inv.invert(x)
        avg = G.synthesis(inv.latent_avg.reshape(-1, G.style_dim)[:1].expand(G.n_latent, -1).unsqueeze(0),
                          noise_mode="const")
    mse_avg = float(((avg - x) ** 2).mean())
    val = load_file(path)["training"]["val"]
    for key in inv.image_names:
        mse = float(((out[f"image_{key}"] - x) ** 2).mean())
        # the loaded model is the one training validated (an e4e once loaded with its deltas off: 2.4x its val MSE)
        recorded = val[f"mse_{key}"]
        assert 0.6 * recorded < mse < 1.5 * recorded, f"{name} {key}: MSE {mse:.4f}, training validation {recorded:.4f}"
        if key == "w":
            continue  # CLCAE's foundation code is a coarse reconstruction by design
        assert mse < 0.6 * mse_avg, f"{name} {key}: MSE {mse:.4f} vs the average face's {mse_avg:.4f}"


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


def test_shipped_stage1_encoders_retrieve_fresh_pairs():
    """CLCAE's stage-1 encoders match images of the shipped generator to their own w among 64 fresh pairs (a seed
    never used in training or validation) far above chance (1/64)."""
    from clcae.checkpoints import load_contrastive_encoder
    from clcae.data.pairs import render_pairs
    from clcae.networks.inverters import render_average_image

    folder = pretrained_dir() / SYNTHFACES_CLCAE_STAGE1
    if not (folder / "best_model_image.pt").is_file():
        pytest.skip(f"{folder} is not shipped yet")
    assert (folder / "README.md").is_file(), f"no model card in {folder}"
    e_i = load_contrastive_encoder(folder / "best_model_image.pt")
    e_w = load_contrastive_encoder(folder / "best_model_latent.pt")
    G = load_generator(_need(SYNTHFACES_GENERATOR))
    images, w = render_pairs(G, range(64), seed=987654)
    with torch.no_grad():  # as in training: both relative to the average pair
        avg = render_average_image(G, G.latent_avg, (64, 64))
        sim = e_i(images - avg) @ e_w(w - G.latent_avg).t()
    truth = torch.arange(64)
    assert (sim.argmax(1) == truth).float().mean() > 0.8  # image -> latent top-1
    assert (sim.argmax(0) == truth).float().mean() > 0.8  # latent -> image top-1
