"""StyleGAN2 generator/discriminator: parity with the reference implementation and the released layouts."""
import math

import pytest
import torch

from clcae.checkpoints import CheckpointError, load_generator, load_state_dict_strict
from clcae.networks.stylegan2 import Discriminator, Generator, channel_plan

TOL = 1e-4


def _max_err(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def sg2(compat_dir):
    cases = torch.load(compat_dir / "sg2_official_32px_cases.pt", weights_only=True)
    ckpt = torch.load(compat_dir / "sg2_official_32px.pt", weights_only=True)
    return cases, ckpt


def _build(cases, ckpt, impl):
    cfg = cases["config"]
    G = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], channel_base=cfg["channel_base"],
                  channel_max=cfg["channel_max"]).eval()
    load_state_dict_strict(G, ckpt["g_ema"], "sg2_official_32px.pt")
    G.latent_avg.copy_(ckpt["latent_avg"])
    D = Discriminator(cfg["size"], channel_base=cfg["channel_base"], channel_max=cfg["channel_max"]).eval()
    load_state_dict_strict(D, ckpt["d"], "sg2_official_32px.pt")
    return G.set_impl(impl), D.set_impl(impl)


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_reference_outputs(sg2, impl):
    cases, ckpt = sg2
    G, D = _build(cases, ckpt, impl)
    with torch.no_grad():
        w = G.mapping(cases["z"])
        assert _max_err(w, cases["w"]) <= TOL
        assert _max_err(G.synthesis(w), cases["img_z"]) <= TOL
        assert _max_err(G.synthesis(cases["w"]), cases["img_w"]) <= TOL
        assert _max_err(G(cases["z"], truncation=cases["truncation"], noise_mode="const"), cases["img_trunc"]) <= TOL
        img, feats = G.synthesis(cases["wplus"], return_features=True)
        assert _max_err(img, cases["img_wplus"]) <= TOL
        assert len(feats) == len(cases["features"]) == G.n_latent
        for mine, ref in zip(feats, cases["features"]):
            assert mine.shape == ref.shape and _max_err(mine, ref) <= TOL
        mixed = G.mix_styles(G.mapping(cases["z"]), G.mapping(cases["z2"]), cases["inject_index"])
        assert _max_err(G.synthesis(mixed), cases["img_mix"]) <= TOL
        k, f = cases["feature_index"], cases["feature_in"]
        assert _max_err(G.synthesis(cases["wplus"], features_in={k: f}), cases["img_inject"]) <= TOL
        half = G.synthesis(cases["wplus"], features_in={k: f}, feature_scale=0.5)
        assert _max_err(half, cases["img_inject_half"]) <= TOL
        assert _max_err(D(cases["img_w"]), cases["d_out"]) <= TOL


def test_load_generator_rosinality_file(compat_dir, sg2):
    cases, _ = sg2
    G = load_generator(compat_dir / "sg2_official_32px.pt")
    assert G.size == 32 and G.style_dim == 64 and G.n_latent == 8 and G.latent_avg_source == "file"
    assert G.config["channel_base"] == 512 and G.config["channel_max"] == 64 and G.config["n_mlp"] == 2
    assert not G.training
    with torch.no_grad():
        assert _max_err(G.synthesis(cases["wplus"]), cases["img_wplus"]) <= TOL


def test_features_are_recorded_before_the_blend(sg2):
    cases, ckpt = sg2
    G, _ = _build(cases, ckpt, "ref")
    with torch.no_grad():
        _, plain = G.synthesis(cases["wplus"], return_features=True)
        _, injected = G.synthesis(cases["wplus"], features_in={5: cases["feature_in"]}, return_features=True)
    for j in range(6):
        assert torch.equal(plain[j], injected[j])
    assert not torch.allclose(plain[6], injected[6])


def _manifest(path):
    rows = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return rows


def _layout(module):
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("manifest,kwargs", [
    ("keys_g_ema_ffhq1024_config_f.tsv", dict(size=1024)),
    ("keys_g_ema_car512_config_f.tsv", dict(size=512)),
    ("keys_g_ema_256_cm1.tsv", dict(size=256, channel_multiplier=1)),
])
def test_generator_layout_matches_release(compat_dir, manifest, kwargs):
    with torch.device("meta"):
        G = Generator(style_dim=512, n_mlp=8, **kwargs)
    assert _layout(G) == _manifest(compat_dir / manifest)


def test_discriminator_layout_matches_release(compat_dir):
    with torch.device("meta"):
        D = Discriminator(1024)
    assert _layout(D) == _manifest(compat_dir / "keys_d_ffhq1024_config_f.tsv")


def test_channel_plan():
    assert channel_plan(1024) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert channel_plan(256, 16384)[64] == 256
    with pytest.raises(ValueError, match="power of two"):
        channel_plan(96)


def _tiny():
    torch.manual_seed(1)
    G = Generator(32, 32, 2, channel_base=256, channel_max=32).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)  # noise strengths start at 0; make noise visible
    return G


def test_noise_modes_and_shapes():
    G = _tiny()
    w = G.mapping(torch.randn(2, 32))
    a, b = G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="const")
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    r1, r2 = G.synthesis(w, noise_mode="random"), G.synthesis(w, noise_mode="random")
    assert not torch.equal(r1, r2)
    n = G.synthesis(w, noise_mode="none")
    assert not torch.equal(n, a)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(w, noise_mode="bogus")
    with pytest.raises(ValueError, match="W\\+"):
        G.synthesis(torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="features_in\\[5\\]"):
        G.synthesis(w, features_in={5: torch.randn(2, 3, 4, 4)})


def test_truncation_and_mixing_helpers():
    G = _tiny()
    G.latent_avg.normal_()
    w = torch.randn(3, 32)
    assert torch.allclose(G.truncate(w, 0.0), G.latent_avg.expand(3, -1))
    assert torch.equal(G.truncate(w, 1.0), w)
    mixed = G.mix_styles(w, -w, 2)
    assert torch.equal(mixed[:, :2], w[:, None].expand(-1, 2, -1)) and torch.equal(mixed[:, 2:], -w[:, None].expand(-1, 6, -1))


def test_fast_path_matches_reference_with_gradients():
    G = _tiny()
    ws = torch.randn(2, G.n_latent, 32, requires_grad=True)
    out_ref = G.set_impl("ref").synthesis(ws)
    g_ref, = torch.autograd.grad(out_ref.square().sum(), ws)
    out_fast = G.set_impl("fast").synthesis(ws)
    g_fast, = torch.autograd.grad(out_fast.square().sum(), ws)
    assert _max_err(out_ref, out_fast) <= 1e-4
    assert _max_err(g_ref, g_fast) <= 1e-3 * g_ref.abs().max().item()


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_double_backward_for_regularisers(impl):
    """R1 (gradient penalty on D) and path-length regularisation (on G) need second-order gradients."""
    torch.manual_seed(0)
    D = Discriminator(16, channel_base=128, channel_max=32).set_impl(impl)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    grad, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    grad.square().sum().backward()
    # every weight receives a second-order gradient (biases only move the piecewise-linear activation pattern,
    # so their second-order gradient is exactly zero)
    for name, p in D.named_parameters():
        if name.endswith("weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    G = Generator(16, 32, 2, channel_base=128, channel_max=32).set_impl(impl)
    w = G.mapping(torch.randn(2, 32)).unsqueeze(1).expand(-1, G.n_latent, -1)
    img = G.synthesis(w, noise_mode="random")
    g, = torch.autograd.grad((img * torch.randn_like(img)).sum() / math.sqrt(16 * 16), w, create_graph=True)
    g.square().sum(2).mean(1).sqrt().mean().backward()
    assert G.conv1.conv.weight.grad is not None and torch.isfinite(G.conv1.conv.weight.grad).all()


def test_autocast_bf16_and_channels_last():
    G = _tiny()
    w = G.mapping(torch.randn(2, 32))
    ref = G.synthesis(w)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            low = G.synthesis(w)
        assert torch.isfinite(low).all() and (low.float() - ref).abs().mean() < 0.05, dtype
    G.set_memory_format(torch.channels_last)
    assert _max_err(G.synthesis(w), ref) <= 1e-4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(G.synthesis(w)).all()
    D = Discriminator(32, channel_base=256, channel_max=32).eval().to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(D(ref.to(memory_format=torch.channels_last))).all()


def test_strict_loading_names_keys():
    G = _tiny()
    sd = dict(G.state_dict())
    sd.pop("conv1.noise.weight")
    sd["bogus.weight"] = torch.zeros(1)
    sd["input.input"] = torch.zeros(1, 7, 4, 4)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(_tiny(), sd, "file.pt", "generator")
    msg = str(e.value)
    assert "file.pt" in msg and "conv1.noise.weight" in msg and "bogus.weight" in msg and "input.input" in msg


def test_strict_loading_through_a_key_map_names_the_files_keys():
    """A file in another layout (torchvision's, the lpips package's) loads through an explicit key map; every problem
    is named by the file's key, keys under ignore_prefixes that the map does not use are skipped."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    key_map = {"0.weight": "fc.w", "0.bias": "fc.b"}
    sd = {"fc.w": torch.ones(2, 3), "fc.b": torch.zeros(2), "head.x": torch.zeros(1)}
    load_state_dict_strict(net, sd, "tv.pth", "trunk", key_map=key_map, ignore_prefixes=("head.",))
    assert torch.equal(net[0].weight, torch.ones(2, 3))
    with pytest.raises(CheckpointError, match=r"tv\.pth.*unexpected keys \(1\): head\.x"):
        load_state_dict_strict(net, sd, "tv.pth", "trunk", key_map=key_map)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): fc\.b"):
        load_state_dict_strict(net, {"fc.w": torch.ones(2, 3)}, "tv.pth", "trunk", key_map=key_map)
    with pytest.raises(CheckpointError, match=r"fc\.w: file \(3, 2\) vs network \(2, 3\)"):
        load_state_dict_strict(net, dict(sd, **{"fc.w": torch.ones(3, 2)}), "tv.pth", "trunk", key_map=key_map,
                               ignore_prefixes=("head.",))
    with pytest.raises(CheckpointError, match=r"non-finite.*fc\.b"):
        load_state_dict_strict(net, dict(sd, **{"fc.b": torch.full((2,), float("nan"))}), "tv.pth", "trunk",
                               key_map=key_map, ignore_prefixes=("head.",))
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_state_dict_strict(net, [1, 2], "tv.pth", "trunk")
    with pytest.raises(ValueError, match="key_map must cover"):
        load_state_dict_strict(net, sd, "tv.pth", "trunk", key_map={"0.weight": "fc.w"})
