"""Latent-image pairs: rendering, the folder writer (atomic, resumable, refusing to mix), the readers, the script."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clcae.data.pairs as pairs_mod
from clcae.checkpoints import save_generator
from clcae.data.images import to_tensor
from clcae.data.pairs import (GeneratedPairs, PairsDataset, PairsError, pair_latents, pair_stem, render_pairs,
                              write_pairs)
from clcae.fingerprint import generator_sha1
from clcae.networks.stylegan2 import Generator

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generate_pairs.py"
LEVEL = 1 / 127.5  # one 8-bit level in [-1, 1]


def _tiny(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(16, 32, 2, channel_base=128, channel_max=32).eval().requires_grad_(False)
    with torch.no_grad():  # noise strengths start at 0; make noise visible so the noise modes differ
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    G.latent_avg.copy_(G.mean_latent(256, seed=seed))
    return G


@pytest.fixture(scope="module")
def G():
    return _tiny()


@pytest.fixture(scope="module")
def written(G, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs") / "train"
    summary = write_pairs(G, root, 7, seed=3, batch=3, progress=False, generator_name="tiny.pt")
    return root, summary


# ---------------------------------------------------------------------------------------------------- rendering

def test_render_is_deterministic_per_pair(G):
    images, ws = render_pairs(G, [0, 1, 2, 3, 4], seed=5)
    assert images.shape == (5, 3, 16, 16) and ws.shape == (5, 32)
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    again, ws_again = render_pairs(G, [0, 1, 2, 3, 4], seed=5)
    assert torch.equal(images, again) and torch.equal(ws, ws_again)
    # Pair 3 alone (other batch): the same up to float rounding.
    one, w_one = render_pairs(G, [3], seed=5)
    torch.testing.assert_close(one[0], images[3], atol=1e-4, rtol=0)
    torch.testing.assert_close(w_one[0], ws[3], atol=1e-5, rtol=1e-5)
    # The stored latent is what was rendered.
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const").clamp(-1, 1), images, atol=1e-5, rtol=0)
    # Other seed / stream: other pairs.
    assert not torch.allclose(render_pairs(G, [0], seed=6)[1], ws[:1])
    assert not torch.allclose(render_pairs(G, [0], seed=5, stream=1)[1], ws[:1])
    torch.testing.assert_close(pair_latents(G, [0, 1, 2, 3, 4], seed=5), ws)


def test_truncation_and_noise_modes(G):
    w1 = pair_latents(G, [0, 1], psi=1.0)
    w_half = pair_latents(G, [0, 1], psi=0.5)
    torch.testing.assert_close(w_half, G.latent_avg + 0.5 * (w1 - G.latent_avg), atol=1e-5, rtol=1e-5)
    images0, w0 = render_pairs(G, [0, 1], psi=0.0)
    torch.testing.assert_close(w0, G.latent_avg.expand(2, -1))
    torch.testing.assert_close(images0[0], images0[1])  # psi = 0: every pair is the average image

    const = render_pairs(G, [0, 1])[0]
    none = render_pairs(G, [0, 1], noise_mode="none")[0]
    rand = render_pairs(G, [0, 1], noise_mode="random")[0]
    assert not torch.allclose(const, none) and not torch.allclose(const, rand)
    torch.testing.assert_close(rand, render_pairs(G, [0, 1], noise_mode="random")[0])  # seeded, not fresh
    torch.testing.assert_close(rand[1], render_pairs(G, [1], noise_mode="random")[0][0], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="noise_mode"):
        render_pairs(G, [0], noise_mode="fresh")
    def average(mode):
        return GeneratedPairs(G, 1, noise_mode=mode, quantize=False).avg_image()

    avg_const = average("const")
    torch.testing.assert_close(avg_const, images0[:1])  # G(latent_avg) with the stored noise
    assert not torch.allclose(average("none"), avg_const)
    assert torch.equal(average("random"), avg_const)
    assert torch.equal(GeneratedPairs(G, 1, noise_mode="random").avg_latent(), G.latent_avg)
    resized = render_pairs(G, [0, 1], image_size=(8, 12))[0]
    assert resized.shape == (2, 3, 8, 12) and resized.min() >= -1 and resized.max() <= 1


# ---------------------------------------------------------------------------------------------------- writing

def test_written_layout_and_manifest(G, written):
    root, summary = written
    assert summary["count"] == 7 and summary["written"] == 7 and summary["skipped"] == 0
    stems = [pair_stem(i) for i in range(7)]
    assert stems[0] == "000000"
    assert sorted(p.name for p in (root / "image").iterdir()) == [f"{s}.png" for s in stems]
    assert sorted(p.name for p in (root / "latent").iterdir()) == [f"{s}.npy" for s in stems]
    manifest = json.loads((root / "pairs.json").read_text())
    assert manifest["complete"] is True and manifest["count"] == 7 and manifest["generator"] == "tiny.pt"
    assert manifest["size"] == 16 and manifest["style_dim"] == 32 and manifest["psi"] == 1.0
    assert manifest["noise_mode"] == "const" and manifest["seed"] == 3 and manifest["stream"] == 0
    assert manifest["generator_sha1"] == generator_sha1(G) and manifest["clcae_version"]

    images, ws = render_pairs(G, range(7), seed=3)
    for i, s in enumerate(stems):
        lat = np.load(root / "latent" / f"{s}.npy")
        assert lat.dtype == np.float32 and lat.shape == (32,)
        np.testing.assert_allclose(lat, ws[i].numpy(), rtol=1e-5, atol=1e-6)
        png = to_tensor(Image.open(root / "image" / f"{s}.png"))
        assert (png - images[i]).abs().max() <= LEVEL / 2 + 1e-4  # 8-bit rounding of the render
    np.testing.assert_array_equal(np.load(root / "avg_latent.npy"), G.latent_avg.numpy())
    avg = to_tensor(Image.open(root / "avg_image.png"))
    expected_avg = G.synthesis(G.latent_avg[None], noise_mode="const").clamp(-1, 1)[0]
    assert (avg - expected_avg).abs().max() <= LEVEL / 2 + 1e-4
    assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))


def test_image_size_is_antialiased(G, tmp_path):
    write_pairs(G, tmp_path / "small", 2, image_size=8, progress=False)
    img = Image.open(tmp_path / "small" / "image" / "000000.png")
    assert img.size == (8, 8) and Image.open(tmp_path / "small" / "avg_image.png").size == (8, 8)
    full = render_pairs(G, [0])[0]
    # Antialiased 2x downscale of a bilinear filter ~ a 2x2-ish box average: close to avg-pooling the render.
    pooled = torch.nn.functional.avg_pool2d(full, 2)[0]
    assert (to_tensor(img) - pooled).abs().mean() < 0.1
    assert json.loads((tmp_path / "small" / "pairs.json").read_text())["image_size"] == [8, 8]


def test_resume_verifies_and_repairs(G, tmp_path):
    root = tmp_path / "p"
    write_pairs(G, root, 6, batch=4, progress=False)
    def snapshot():
        out = {}
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(root))
            if p.suffix == ".npy":
                out[rel] = torch.from_numpy(np.load(p))
            elif p.suffix == ".png":
                out[rel] = to_tensor(Image.open(p))
        return out

    reference = snapshot()
    (root / "latent" / "000001.npy").unlink()                                  # missing latent
    (root / "image" / "000002.png").write_bytes(b"")                           # empty image
    np.save(root / "latent" / "000003.npy", np.zeros(32, np.float32))          # a latent of another pair
    (root / "image" / ".000004.png.abcd.tmp").write_bytes(b"partial")          # leftover of a killed write
    summary = write_pairs(G, root, 6, batch=4, progress=False)
    assert summary["written"] == 3 and summary["skipped"] == 3
    after = snapshot()
    assert after.keys() == reference.keys() and not any(p.name.endswith(".tmp") for p in root.rglob("*"))
    for rel in after:  # the repaired pairs are the same pairs (rendered in another batch: float rounding only)
        tol = LEVEL + 1e-6 if rel.endswith(".png") else 1e-5
        assert (after[rel] - reference[rel]).abs().max() <= tol, rel
    again = write_pairs(G, root, 6, progress=False)
    assert again["written"] == 0 and again["skipped"] == 6
    grown = write_pairs(G, root, 8, progress=False)  # extending is allowed
    assert grown["written"] == 2 and len(PairsDataset(root, size=None)) == 8


def test_interrupted_run_resumes(G, tmp_path, monkeypatch):
    root = tmp_path / "p"
    calls = {"n": 0}
    real = pairs_mod._save_npy

    def failing(path, array):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real(path, array)

    monkeypatch.setattr(pairs_mod, "_save_npy", failing)
    with pytest.raises(OSError, match="simulated"):
        write_pairs(G, root, 6, batch=2, progress=False, workers=1)
    assert json.loads((root / "pairs.json").read_text())["complete"] is False
    with pytest.raises(PairsError, match="without a latent"):
        PairsDataset(root)  # the image of the failed pair exists, its latent does not
    monkeypatch.setattr(pairs_mod, "_save_npy", real)
    summary = write_pairs(G, root, 6, batch=2, progress=False)
    assert summary["skipped"] >= 3 and summary["written"] == 6 - summary["skipped"]
    assert json.loads((root / "pairs.json").read_text())["complete"] is True
    ds = PairsDataset(root, size=None)
    torch.testing.assert_close(ds.latents(), pair_latents(G, range(6)), atol=1e-5, rtol=1e-5)


def test_refuses_to_mix(G, written, tmp_path):
    root, _ = written
    with pytest.raises(PairsError, match="seed"):
        write_pairs(G, root, 7, seed=4, progress=False)
    with pytest.raises(PairsError, match="psi"):
        write_pairs(G, root, 7, seed=3, psi=0.7, progress=False)
    with pytest.raises(PairsError, match="generator_sha1"):
        write_pairs(_tiny(seed=1), root, 7, seed=3, progress=False)
    with pytest.raises(PairsError, match="already holds 7 pairs"):
        write_pairs(G, root, 5, seed=3, progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "image").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(foreign / "image" / "a.png")
    with pytest.raises(PairsError, match="no pairs.json"):
        write_pairs(G, foreign, 2, progress=False)


# ---------------------------------------------------------------------------------------------------- reading

def test_dataset_items_and_generated_pairs_agree(G, written):
    root, _ = written
    for size in (None, 8, (6, 10)):
        ds = PairsDataset(root, size=size)
        gp = GeneratedPairs(G, 7, seed=3, size=size)
        assert len(ds) == len(gp) == 7 and ds.stems == [pair_stem(i) for i in range(7)]
        h, w = (16, 16) if size is None else ((size, size) if isinstance(size, int) else size)
        for i in (0, 4):
            image, latent = ds[i]
            assert image.shape == (3, h, w) and image.dtype == torch.float32 and latent.shape == (32,)
            assert image.min() >= -1 and image.max() <= 1
            np.testing.assert_array_equal(latent.numpy(), np.load(root / "latent" / f"{pair_stem(i)}.npy"))
            g_image, g_latent = gp[i]
            assert (g_image - image).abs().max() <= LEVEL + 1e-6
            torch.testing.assert_close(g_latent, latent, atol=1e-5, rtol=1e-5)
        assert ds.avg_image().shape == gp.avg_image().shape == (1, 3, h, w)
        assert torch.equal(ds.avg_image(), gp.avg_image())  # one implementation (clcae.data.average)
        torch.testing.assert_close(ds.avg_latent(), G.latent_avg)
        torch.testing.assert_close(gp.avg_latent(), G.latent_avg)
    # The resize is the official transform's: PIL bilinear on the 8-bit image, then [-1, 1].
    stored = Image.open(root / "image" / "000002.png").convert("RGB")
    expected = torch.from_numpy(np.asarray(stored.resize((10, 6), Image.Resampling.BILINEAR), np.float32))
    expected = (expected / 255 - 0.5) / 0.5
    torch.testing.assert_close(PairsDataset(root, size=(6, 10))[2][0], expected.permute(2, 0, 1), atol=1e-6,
                               rtol=0)


def test_pairs_stage1_and_inverters_subtract_one_average_image(G, written, tmp_path):
    """The average image has one implementation (clcae.data.average): the avg_image.png a pairs folder stores, its
    readers, the pairs rendered on the fly, both stage-1 data sources and an inverter's rendered average are the same
    image, bit for bit, at every input size (non-square: rows cropped to the aspect ratio, as for cars)."""
    from clcae.networks.inverters import CLCAEInverter, render_average_image
    from clcae.training.contrastive import build_pair_datasets
    from clcae.training.encoder_options import EncoderTrainOptions

    root, _ = written
    stored = to_tensor(Image.open(root / "avg_image.png"))[None]
    assert torch.equal(stored, render_average_image(G, G.latent_avg, (16, 16)))
    for size in ((16, 16), (8, 8), (6, 10)):
        inverter = CLCAEInverter(torch.nn.Identity(), G, G.latent_avg, size)
        expected = inverter.average_image()
        assert inverter.avg_image_source == "rendered" and expected.shape == (1, 3, *size)
        assert torch.equal(PairsDataset(root, size=size).avg_image(), expected), size
        assert torch.equal(GeneratedPairs(G, 7, seed=3, size=size).avg_image(), expected), size
    data = tmp_path / "pairs"
    for split, stream in (("train", 0), ("test", 1)):
        write_pairs(G, data / split, 2, seed=3, stream=stream, progress=False)
    expected = render_average_image(G, G.latent_avg, (8, 8))
    for source in (str(data), "generate"):
        avg = build_pair_datasets(EncoderTrainOptions(data=source, pairs_n=2, val_n=2), (8, 8), G)[2]
        assert torch.equal(avg, expected), source


def test_generated_pairs_in_a_dataloader(G):
    gp = GeneratedPairs(G, 5, seed=1, size=8)
    batches = list(torch.utils.data.DataLoader(gp, batch_size=2))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert batches[0][0].shape == (2, 3, 8, 8) and batches[0][1].shape == (2, 32)
    # Batched rendering (__getitems__) gives the items of one-by-one access (up to one 8-bit level).
    assert (batches[1][0][1] - gp[3][0]).abs().max() <= LEVEL + 1e-6
    with pytest.raises(IndexError):
        gp[5]
    float_items = GeneratedPairs(G, 2, size=8, quantize=False)[0][0]
    assert float_items.shape == (3, 8, 8)


def _copy(root, dst):
    import shutil

    shutil.copytree(root, dst)
    return dst


def test_dataset_validation(written, tmp_path):
    root, _ = written
    bad = _copy(root, tmp_path / "a")
    (bad / "latent" / "000001.npy").unlink()
    (bad / "latent" / "000005.npy").unlink()
    with pytest.raises(PairsError, match=r"2 image\(s\) without a latent: 000001.png, 000005.png"):
        PairsDataset(bad)
    bad = _copy(root, tmp_path / "b")
    np.save(bad / "latent" / "extra.npy", np.zeros(32, np.float32))
    with pytest.raises(PairsError, match=r"latent\(s\) without an image: extra.npy"):
        PairsDataset(bad)
    for name, array, message in [
        ("c", np.zeros(31, np.float32), r"000003.npy: latent shape is \[31\]; expected \[32\]"),
        ("d", np.zeros((1, 32), np.float32), r"000003.npy: latent shape is \[1, 32\]"),
        ("e", np.zeros(32, np.float64), r"000003.npy: latent dtype is float64; expected float32"),
        ("f", np.full(32, np.nan, np.float32), r"000003.npy: latent contains NaN"),
    ]:
        bad = _copy(root, tmp_path / name)
        np.save(bad / "latent" / "000003.npy", array)
        with pytest.raises(PairsError, match=message):
            PairsDataset(bad)
    bad = _copy(root, tmp_path / "g")
    (bad / "latent" / "000003.npy").write_bytes(b"not numpy")
    with pytest.raises(PairsError, match="000003.npy: cannot read"):
        PairsDataset(bad)
    bad = _copy(root, tmp_path / "h")
    Image.open(bad / "image" / "000002.png").save(bad / "image" / "000002.jpg")
    with pytest.raises(PairsError, match="share a stem: 000002.jpg / 000002.png|share a stem: 000002.png / 000002"):
        PairsDataset(bad)
    bad = _copy(root, tmp_path / "i")
    (bad / "avg_latent.npy").unlink()
    with pytest.raises(PairsError, match="average latent not found"):
        PairsDataset(bad)
    # The official layout keeps the averages elsewhere: pass their paths.
    ds = PairsDataset(bad, avg_latent=root / "avg_latent.npy")
    assert ds.avg_latent().shape == (32,)
    with pytest.raises(PairsError, match="is not a pairs folder"):
        PairsDataset(tmp_path / "nowhere")
    # A bad image is reported by name on access (never substituted).
    bad = _copy(root, tmp_path / "j")
    (bad / "image" / "000006.png").write_bytes(b"garbage")
    ds = PairsDataset(bad)
    with pytest.raises(Exception, match="000006.png"):
        ds[6]


def test_sorted_order_and_foreign_names(tmp_path):
    root = tmp_path / "official"
    (root / "image").mkdir(parents=True)
    (root / "latent").mkdir()
    rng = np.random.default_rng(0)
    for stem in ["b", "a", "c10", "c09"]:
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(root / "image" / f"{stem}.jpg")
        np.save(root / "latent" / f"{stem}.npy", rng.standard_normal(8).astype(np.float32))
    np.save(root / "avg_latent.npy", np.zeros(8, np.float32))
    Image.new("RGB", (20, 20), (128, 128, 128)).save(root / "avg_image.png")
    ds = PairsDataset(root, size=16)
    assert ds.stems == ["a", "b", "c09", "c10"] and ds.manifest is None
    np.testing.assert_array_equal(ds[2][1].numpy(), np.load(root / "latent" / "c09.npy"))
    torch.testing.assert_close(ds.avg_image(), torch.full((1, 3, 16, 16), 128 / 127.5 - 1))


# ---------------------------------------------------------------------------------------------------- script

@pytest.fixture()
def script():
    spec = importlib.util.spec_from_file_location("generate_pairs_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_script_writes_disjoint_splits_and_resumes(G, tmp_path, script, capsys):
    gen_file = save_generator(G, tmp_path / "tiny.pt")
    out = tmp_path / "pairs"
    args = ["--generator", str(gen_file), "--out", str(out), "--n", "5", "--n-test", "3", "--device", "cpu",
            "--batch", "2", "--no-progress"]
    assert script.main(args) == 0
    first = capsys.readouterr().out
    assert "train: 5 pairs" in first and "test: 3 pairs" in first and "5 written" in first
    train, test = PairsDataset(out / "train", size=None), PairsDataset(out / "test", size=None)
    assert len(train) == 5 and len(test) == 3
    dists = torch.cdist(train.latents(), test.latents())
    assert dists.min() > 1e-3  # different seed streams: no shared pair
    assert json.loads((out / "test" / "pairs.json").read_text())["stream"] == 1
    assert json.loads((out / "train" / "pairs.json").read_text())["generator"] == "tiny.pt"
    assert script.main(args) == 0
    assert "0 written, 5 already complete" in capsys.readouterr().out
    # Other settings on the same folder: a clear error, exit status 2.
    assert script.main(args[:-1] + ["--psi", "0.5", "--no-progress"]) == 2
    assert "psi" in capsys.readouterr().err
    assert script.main(["--generator", str(tmp_path / "missing.pt"), "--out", str(out), "--device", "cpu"]) == 2
