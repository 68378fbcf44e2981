"""Optimisation-based projection (NVIDIA-style projector) on a tiny 16 px generator."""
import math

import pytest
import torch
import torch.nn.functional as F

from clcae.networks.inverters import Inverter
from clcae.inversion.projection import (ProjectionInverter, Projector, learning_rate_at, match_input_size,
                                        noise_regularization, renormalize_noise, w_noise_scale_at)
from clcae.networks.layers import NoiseInjection
from clcae.networks.stylegan2 import Generator

STYLE_DIM = 32


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    G = Generator(16, STYLE_DIM, n_mlp=2, channel_base=512, channel_max=32).eval()
    for m in G.modules():  # the reference initialises the noise strengths to 0; make the noise matter
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.1)
    return G


@pytest.fixture(scope="module")
def targets(gen):
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        w = gen.mapping(torch.randn(2, STYLE_DIM, generator=g))
        w2 = gen.mapping(torch.randn(2, STYLE_DIM, generator=g))
        return dict(w=w, x_w=gen.synthesis(w), x_mix=gen.synthesis(gen.mix_styles(w, w2, 3)))


def _mse(a, b):
    return (a - b).square().mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------------- schedules
def test_learning_rate_schedule():
    steps = 1000
    assert learning_rate_at(0, steps) == 0.0
    assert learning_rate_at(25, steps) == pytest.approx(0.05)  # halfway up the 5 % linear ramp
    assert learning_rate_at(50, steps) == pytest.approx(0.1)
    assert learning_rate_at(750, steps) == pytest.approx(0.1)  # the cosine ramp-down starts at 75 %
    assert learning_rate_at(875, steps) == pytest.approx(0.05)  # half-way down the cosine
    assert learning_rate_at(900, steps) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.4 * math.pi)))
    assert learning_rate_at(999, steps) < 1e-5


def test_w_noise_schedule():
    assert w_noise_scale_at(0, 100, w_std=2.0) == pytest.approx(0.1)
    assert w_noise_scale_at(375, 1000, w_std=2.0) == pytest.approx(0.1 * 0.25)  # (1 - 0.5) ** 2
    assert w_noise_scale_at(750, 1000, w_std=2.0) == 0.0
    assert w_noise_scale_at(900, 1000, w_std=2.0) == 0.0


# ---------------------------------------------------------------------------------------------------- noise maps
def test_noise_regularization_known_values():
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 * 2.0 - 1  # +-1 checkerboard
    # both neighbour correlations are -1 -> (-1)^2 + (-1)^2; side 8 stops the pyramid
    assert noise_regularization([checker.view(1, 1, 8, 8)]).item() == pytest.approx(2.0)
    big = (torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2 * 2.0 - 1
    # 16: 2 at full scale; its 2x2 average is 0 at the 8x8 scale
    assert noise_regularization([big.view(1, 1, 16, 16)]).item() == pytest.approx(2.0)
    const = torch.full((1, 1, 8, 8), 0.5)  # fully correlated: (0.25)^2 * 2
    assert noise_regularization([const]).item() == pytest.approx(2 * 0.25 ** 2)


def test_noise_regularization_white_vs_correlated_and_per_sample():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 1, 64, 64, generator=g)
    smooth = F.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=64, mode="bilinear", align_corners=False)
    renormalize_noise([smooth])
    r_white, r_smooth = noise_regularization([white]).item(), noise_regularization([smooth]).item()
    assert r_white < 1e-3 and r_smooth > 0.5 and r_smooth > 100 * r_white
    both = noise_regularization([torch.cat([white, smooth])])  # one value per sample, no mixing
    assert both.shape == (2,)
    assert torch.allclose(both, torch.tensor([r_white, r_smooth]), rtol=1e-5)


def test_renormalize_noise_per_sample():
    n = torch.randn(3, 1, 8, 8) * torch.tensor([0.5, 2.0, 7.0]).view(3, 1, 1, 1) + 3
    renormalize_noise([n])
    assert torch.allclose(n.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.square().mean(dim=(1, 2, 3)), torch.ones(3), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- image size
def test_match_input_size():
    img = torch.randn(2, 3, 16, 16)
    assert torch.equal(match_input_size(img, (16, 16)), img)
    assert torch.allclose(match_input_size(img, (8, 8)), F.avg_pool2d(img, 2))
    assert torch.equal(match_input_size(img, (8, 16)), img[:, :, 4:12, :])  # cars: centre rows
    assert torch.allclose(match_input_size(img, (4, 8)), F.avg_pool2d(img[:, :, 4:12, :], 2))
    assert torch.equal(match_input_size(img, (16, 8)), img[:, :, :, 4:12])
    with pytest.raises(ValueError, match="larger than the render"):
        match_input_size(img, (32, 32))


# ---------------------------------------------------------------------------------------------------- projection
def test_project_w_recovers_image(gen, targets):
    x = targets["x_w"]
    P = Projector(gen, space="w", w_avg_samples=1000, optimize_noise=False)
    with torch.no_grad():
        start = _mse(gen.synthesis(P.w_mean.expand(2, -1)), x)
    out = P.project(x, steps=100, progress=False)
    assert set(out) == {"w", "wplus", "noise", "image_wplus", "image_w", "loss_history", "loss"}
    assert out["w"].shape == (2, STYLE_DIM)
    assert out["wplus"].shape == (2, gen.n_latent, STYLE_DIM)
    assert torch.equal(out["wplus"], out["w"].unsqueeze(1).expand(-1, gen.n_latent, -1))
    assert out["image_wplus"].shape == (2, 3, 16, 16) and torch.equal(out["image_w"], out["image_wplus"])
    assert out["loss_history"].shape == (100, 2)
    assert not out["w"].requires_grad and not out["image_wplus"].requires_grad
    assert all(p.grad is None for p in gen.parameters())  # the generator is not touched
    final = _mse(out["image_wplus"], x)
    assert torch.allclose(out["loss"], final)
    assert (final < 0.05 * start).all() and (final < 0.02).all()
    # with the constant noise buffers (no noise optimisation) the render is G(w) as the encoders render it
    assert torch.allclose(out["image_wplus"], gen.synthesis(out["w"], noise_mode="const"), atol=1e-5)


def test_wplus_fits_at_least_as_well_as_w(gen, targets):
    x = targets["x_mix"]  # a W+ target (style mixing): not reachable with one code
    res = {}
    for space in ("w", "wplus"):
        P = Projector(gen, space=space, w_avg_samples=1000, optimize_noise=False)
        res[space] = P.project(x, steps=100, progress=False)
    assert set(res["wplus"]) == {"wplus", "noise", "image_wplus", "loss_history", "loss"}  # no single code
    assert (res["wplus"]["loss"] <= res["w"]["loss"]).all()
    assert (res["wplus"]["loss"] < 0.1 * res["wplus"]["loss_history"][:5].mean(0)).all()


def test_optimised_noise_is_used_and_normalised(gen, targets):
    x = targets["x_w"]
    P = Projector(gen, space="w", w_avg_samples=1000, optimize_noise=True)
    out = P.project(x, steps=30, progress=False)
    assert len(out["noise"]) == gen.num_layers
    for n, i in zip(out["noise"], range(gen.num_layers)):
        assert n.shape == (2, *getattr(gen.noises, f"noise_{i}").shape[1:])
        assert torch.allclose(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
        assert torch.allclose(n.square().mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    with torch.no_grad():
        again = gen.synthesis(out["wplus"], noise=out["noise"])
        const = gen.synthesis(out["wplus"], noise_mode="const")
    assert torch.allclose(out["image_wplus"], again, atol=1e-6)
    assert (out["image_wplus"] - const).abs().max() > 1e-2  # the optimised maps, not the buffers


def test_deterministic_for_a_seed(gen, targets):
    x = targets["x_w"]
    P = Projector(gen, space="wplus", w_avg_samples=500)
    a = P.project(x, steps=15, seed=7, progress=False)
    b = P.project(x, steps=15, seed=7, progress=False)
    c = P.project(x, steps=15, seed=8, progress=False)
    for k in ("wplus", "image_wplus", "loss_history"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["wplus"], c["wplus"])


@pytest.mark.parametrize("space", ["w", "wplus"])
def test_batch_equals_single_runs(gen, targets, space):
    x = targets["x_w"]
    P = Projector(gen, space=space, w_avg_samples=500)
    both = P.project(x, steps=25, seed=3, progress=False)
    for i in range(2):
        one = P.project(x[i:i + 1], steps=25, seed=3, progress=False)
        for k in ("wplus", "image_wplus", "loss_history"):
            ref = both[k][:, i:i + 1] if k == "loss_history" else both[k][i:i + 1]
            assert torch.allclose(ref, one[k], atol=1e-4), k
        for n_both, n_one in zip(both["noise"], one["noise"]):
            assert torch.allclose(n_both[i:i + 1], n_one, atol=1e-4)
    # per-image seeds: the second image with seed 4 equals its single run with seed 4
    mixed = P.project(x, steps=25, seed=[3, 4], progress=False)
    one = P.project(x[1:], steps=25, seed=4, progress=False)
    assert torch.allclose(mixed["wplus"][1:], one["wplus"], atol=1e-4)
    assert torch.allclose(mixed["wplus"][:1], both["wplus"][:1], atol=1e-4)


def test_perceptual_callable_and_input_size(gen, targets):
    calls = []

    def l1(a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return (a - b).abs().mean(dim=(1, 2, 3))

    x = F.avg_pool2d(targets["x_w"], 2)  # 8x8 input: the loss compares at 8x8
    P = Projector(gen, perceptual=l1, space="w", w_avg_samples=500, optimize_noise=False)
    assert P.mse_weight == 0.0
    out = P.project(x, steps=5, progress=False)
    assert calls and all(c == ((2, 3, 8, 8), (2, 3, 8, 8)) for c in calls)
    assert out["image_wplus"].shape == (2, 3, 16, 16)
    assert torch.allclose(out["loss"], (F.avg_pool2d(out["image_wplus"], 2) - x).abs().mean(dim=(1, 2, 3)))
    # perceptual + mse_weight * MSE
    P2 = Projector(gen, perceptual=l1, space="w", mse_weight=2.0, w_avg_samples=500, optimize_noise=False)
    img = out["image_wplus"]
    expected = l1(F.avg_pool2d(img, 2), x) + 2.0 * _mse(F.avg_pool2d(img, 2), x)
    assert torch.allclose(P2.image_loss(img, x), expected)
    bad = Projector(gen, perceptual=lambda a, b: (a - b).abs().mean(), w_avg_samples=500)
    with pytest.raises(ValueError, match="one value per sample"):
        bad.project(x, steps=1, progress=False)


def test_init_and_argument_checks(gen, targets):
    x = targets["x_w"]
    P = Projector(gen, space="wplus", w_avg_samples=500, latent_avg=targets["w"][0], optimize_noise=False)
    assert torch.equal(P.init_latent, targets["w"][0])
    # a given init (e.g. an encoder's output) is where the optimisation starts: at lr 0 nothing moves
    P0 = Projector(gen, space="wplus", w_avg_samples=500, lr=0.0, optimize_noise=False)
    out = P0.project(x, steps=2, init=targets["w"], progress=False)
    assert torch.allclose(out["wplus"], targets["w"].unsqueeze(1).expand(-1, gen.n_latent, -1))
    assert torch.allclose(out["loss"], torch.zeros(2), atol=1e-8)
    with pytest.raises(ValueError, match="init for space 'wplus'"):
        P.project(x, steps=1, init=torch.zeros(3, STYLE_DIM), progress=False)
    with pytest.raises(ValueError, match="space must be"):
        Projector(gen, space="z", w_avg_samples=500)
    with pytest.raises(ValueError, match="no image loss"):
        Projector(gen, mse_weight=0.0, w_avg_samples=500)
    with pytest.raises(ValueError, match="latent_avg must be"):
        Projector(gen, space="w", latent_avg=torch.zeros(gen.n_latent, STYLE_DIM), w_avg_samples=500)
    with pytest.raises(ValueError, match="larger than the generator"):
        P.project(torch.zeros(1, 3, 32, 32), steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        P.project(x, steps=1, images=["w"], progress=False)


def test_w_std_estimate(gen):
    P = Projector(gen, w_avg_samples=500, w_avg_seed=1)
    with torch.no_grad():
        ws = gen.mapping(torch.randn(500, STYLE_DIM, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(P.w_mean, ws.mean(0), atol=1e-5)
    assert P.w_std == pytest.approx((ws - ws.mean(0)).square().sum(1).mean().sqrt().item(), rel=1e-5)


def test_projection_inverter_interface(gen, targets):
    P = Projector(gen, space="w", w_avg_samples=500, optimize_noise=False)
    inv = ProjectionInverter(P, steps=10, seed=2)
    assert isinstance(inv, Inverter) and inv.arch == "projection"
    assert inv.image_names == ("wplus", "w") and inv.input_size == (16, 16)
    assert set(inv.state_dict()) == {f"decoder.{k}" for k in gen.state_dict()}
    out = inv.invert(targets["x_w"])  # a no-grad call that still optimises
    ref = P.project(targets["x_w"], steps=10, seed=2, progress=False)
    assert torch.equal(out["w"], ref["w"]) and torch.equal(out["image_w"], ref["image_w"])
    only = inv.invert(targets["x_w"], images=["wplus"])
    assert "image_wplus" in only and "image_w" not in only
    with pytest.raises(ValueError, match="expects images"):
        inv.invert(torch.zeros(1, 3, 8, 8))
    init_inv = ProjectionInverter(Projector(gen, space="w", w_avg_samples=500, lr=0.0, optimize_noise=False),
                                  steps=2, init_fn=lambda x: targets["w"])
    assert torch.allclose(init_inv.invert(targets["x_w"])["w"], targets["w"])
    assert inv.config["arch"] == "projection" and inv.config["projector"]["space"] == "w"
    wp = ProjectionInverter(Projector(gen, space="wplus", w_avg_samples=500), steps=3, input_size=(8, 16))
    assert wp.image_names == ("wplus",)
    out = wp.invert(targets["x_w"][:, :, 4:12, :])
    assert "w" not in out and out["image_wplus"].shape == (2, 3, 16, 16)


# ------------------------------------------------------------------------------------ the default loss (invert.py)
def _invert_script():
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("invert_projection_test", root / "scripts" / "invert.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, root


def test_default_loss_on_the_shipped_generator_without_lpips_weights(tmp_path, monkeypatch, capsys):
    """--perceptual auto: no AlexNet weights + the shipped SynthFaces generator -> the domain loss, said in one line;
    on another generator the missing file is named; with the weights it is LPIPS."""
    import json

    import torchvision

    from clcae.checkpoints import save_generator
    from clcae.inversion.runner import ProjectionOptions, is_shipped_synthfaces_generator, load_method
    from clcae.pretrained import SYNTHFACES_GENERATOR, shipped

    shipped_generator = shipped(SYNTHFACES_GENERATOR)
    if shipped_generator is None:
        pytest.skip("the shipped generator is not there")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: no LPIPS weights
    monkeypatch.delenv("CLCAE_PRETRAINED_DIR", raising=False)
    torch.set_num_threads(1)
    script, root = _invert_script()
    example = sorted((root / "examples").glob("*.png"))[0]
    out = tmp_path / "proj"
    assert script.main(["--method", "projection", "--generator", str(shipped_generator), "--steps", "2",
                        "--input", str(example), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "domain network" in notes[0] and "alexnet-owt-7be5be79.pth" in notes[0]
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["projection"]["perceptual"] == "domain"  # the loss actually used is recorded

    # another generator (a copy with one weight changed is not the shipped one): the missing file is named
    from clcae import load_generator

    G = load_generator(shipped_generator)
    assert is_shipped_synthfaces_generator(G)
    with torch.no_grad():
        next(G.parameters()).add_(1e-3)
    assert not is_shipped_synthfaces_generator(G)
    save_generator(G, tmp_path / "other.pt")
    assert script.main(["--method", "projection", "--generator", str(tmp_path / "other.pt"), "--steps", "2",
                        "--input", str(example), "--out", str(tmp_path / "p2"), "--device", "cpu",
                        "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--perceptual auto" in err and "alexnet-owt-7be5be79.pth" in err and "--lpips-weights" in err

    # with the AlexNet weights in the hub cache, auto is LPIPS, also on the shipped generator
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in feats.items()}, hub / "alexnet-owt-7be5be79.pth")
    loaded = load_method(method="projection", generator=shipped_generator,
                         projection=ProjectionOptions(steps=1, w_avg_samples=100))
    assert loaded.settings["projection"]["perceptual"] == "lpips" and loaded.notes == ()
