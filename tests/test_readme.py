"""README.md as a new user reads it: every Python block runs as written, from a folder outside the checkout, on the
files shipped in pretrained/; and what the README says about the generator's output range holds."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(markdown: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_readme_python_blocks_run_as_written_on_the_shipped_files(tmp_path, monkeypatch):
    blocks = python_blocks(README)
    assert blocks, "README.md has no ```python block"
    monkeypatch.delenv("CLCAE_PRETRAINED_DIR", raising=False)  # the shipped files, not a stand-in folder
    monkeypatch.chdir(tmp_path)  # a new user's working folder, not the checkout
    scope: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)
    # What the Public API block promises, checked on what it produced.
    G = scope["G"]
    assert (G.size, G.n_latent, G.style_dim) == (64, 10, 128)  # the numbers its comment states
    assert scope["w"].shape == (4, G.style_dim) and scope["ws"].shape == (4, G.n_latent, G.style_dim)
    assert scope["img"].shape == (4, 3, G.size, G.size) and len(scope["feats"]) == G.n_latent
    assert scope["f"].shape[-2:] == (16, 16)
    assert scope["wp"].shape == (2, G.n_latent, G.style_dim)
    assert scope["y"].shape == (1, 3, 16, 16) and Image.open(tmp_path / "sample.png").size == (64, 64)


def test_readme_names_no_missing_file_in_its_python_blocks():
    """Any file name a block passes as a string is one a new user has: the official FFHQ file is prose, not code."""
    for block in python_blocks(README):
        assert "stylegan2-ffhq-config-f.pt" not in block


def test_synthesis_is_unclamped_and_saving_clamps(tmp_path):
    """README: G.synthesis returns unclamped values (measured range on the shipped generator stated there), and
    save_image clamps to [-1, 1] and rounds to 8 bits."""
    import clcae
    from clcae.data.images import save_image
    from clcae.pretrained import SYNTHFACES_GENERATOR, shipped

    path = shipped(SYNTHFACES_GENERATOR)
    if path is None:
        pytest.skip(f"{SYNTHFACES_GENERATOR} is not shipped")
    G = clcae.load_generator(path)
    z = torch.randn(64, G.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = G.synthesis(G.mapping(z), noise_mode="const")
    low, high = img.min().item(), img.max().item()
    outside = ((img < -1) | (img > 1)).float().mean().item()
    text = README.read_text(encoding="utf-8")
    assert "**unclamped**" in text and "[B, 3, H, W] in [-1, 1]" not in text
    stated = re.search(r"range from −(\d\.\d\d) to (\d\.\d\d), and (\d+\.\d) % of the values", text)
    assert stated, "README no longer states the measured range"
    assert (-low, high, 100 * outside) == pytest.approx(tuple(float(v) for v in stated.groups()), abs=0.01)
    assert low < -1 and high > 1
    save_image(img[0], tmp_path / "x.png")
    saved = np.asarray(Image.open(tmp_path / "x.png"), dtype=np.int16)
    expected = ((img[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.array_equal(saved, expected)
