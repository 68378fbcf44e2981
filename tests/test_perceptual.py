"""Perceptual losses (clcae.losses.perceptual): LPIPS with local backbone weights (never downloaded) and the domain
perceptual distance on the SynthFaces domain network's trunk maps (clcae.networks.domain.DomainNet.trunk_features).

LPIPS runs with a randomly initialised AlexNet trunk saved to a temporary file (the ImageNet weights are not on this
machine); the v0.1 linear heads are the lpips package's own.
"""
import shutil
import socket
from pathlib import Path

import lpips
import pytest
import torch
import torch.nn.functional as F
import torchvision

from clcae.checkpoints import CheckpointError
from clcae.data import synthfaces as sf
from clcae.losses.perceptual import (DomainPerceptualLoss, LPIPSLoss, MissingWeightsError, build_perceptual,
                                     default_lpips_backbone_path, lpips_backbone_file, unit_normalize)
from clcae.networks.domain import DomainNet, load_domain_net

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_NET = ROOT / "pretrained" / "synthfaces64_domain_net.pt"
ALEX_FILE = "alexnet-owt-7be5be79.pth"
TINY_DOMAIN = dict(input_size=32, stem_channels=8, channels=(8, 16, 16, 32), embed_dim=16, attr_reduce=8,
                   attr_hidden=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here fails if anything tries to download or open a connection."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torchvision.models._api as tv_api
    if hasattr(tv_api, "load_state_dict_from_url"):
        monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _random_alexnet_features(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    return {f"features.{k}": v.clone() for k, v in feats.items()}


@pytest.fixture(scope="module")
def alex_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("alex") / "random_alexnet.pth"
    torch.save(_random_alexnet_features(), path)
    return path


@pytest.fixture(scope="module")
def alex_loss(alex_weights) -> LPIPSLoss:
    """Single-scale LPIPS at the input size (shared: constructing one takes about a second on one core)."""
    return LPIPSLoss(backbone_weights=alex_weights, resize=None)


def _images(b=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------- LPIPS
def test_lpips_weights_are_the_files(alex_weights, alex_loss):
    loss = alex_loss
    sd = torch.load(alex_weights, weights_only=True)
    assert torch.equal(loss.lpips.net.slice1[0].weight, sd["features.0.weight"])
    assert torch.equal(getattr(loss.lpips.net.slice5, "10").bias, sd["features.10.bias"])
    heads = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                       weights_only=True)
    for i in range(5):
        assert torch.equal(loss.lpips.lins[i].model[-1].weight, heads[f"lin{i}.model.1.weight"])
    assert loss.name == "lpips_alex"
    assert not any(p.requires_grad for p in loss.parameters())


def test_lpips_zero_positive_symmetric_and_matches_the_package(alex_weights, alex_loss):
    loss = alex_loss
    x, y = _images(seed=1), _images(seed=2)
    with torch.no_grad():
        d_xy, d_yx, d_xx = loss(x, y), loss(y, x), loss(x, x)
        reference = loss.lpips(x, y).flatten()  # the lpips package's own forward on the same modules
    assert d_xy.shape == (3,)
    assert torch.all(d_xy > 1e-4)
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=1e-7)
    assert torch.allclose(d_xx, torch.zeros(3), atol=1e-7)
    assert torch.allclose(d_xy, reference, rtol=1e-5, atol=1e-7)
    assert torch.allclose(loss(x, y, reduction="mean"), d_xy.mean())
    assert LPIPSLoss(backbone_weights=alex_weights, resize=64, reduction="mean")(x, y).shape == ()


def test_lpips_gradients_reach_the_input_only(alex_loss):
    loss = alex_loss
    x = _images(2, seed=3).requires_grad_(True)
    y = _images(2, seed=4)
    loss(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_lpips_stays_in_eval_mode(alex_loss):
    loss = alex_loss
    loss.train()
    assert not loss.lpips.training and not any(m.training for m in loss.lpips.modules())
    x, y = _images(2, seed=5), _images(2, seed=6)
    assert torch.equal(loss(x, y), loss(x, y))  # dropout in the heads is off


def test_lpips_resize_pools_to_the_given_size(alex_weights, alex_loss):
    x, y = _images(2, 128, seed=7), _images(2, 128, seed=8)
    pooled = LPIPSLoss(backbone_weights=alex_weights, resize=64)(x, y)
    by_hand = alex_loss(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2))
    assert torch.allclose(pooled, by_hand, rtol=1e-5, atol=1e-7)


def test_lpips_multiscale_is_the_sum_of_single_scales(alex_weights, alex_loss):
    x, y = _images(2, 160, seed=9), _images(2, 160, seed=10)
    multi = LPIPSLoss(backbone_weights=alex_weights, scales=3, resize=128)
    assert multi.name == "lpips_alex_3scales"
    single = alex_loss
    x128, y128 = F.adaptive_avg_pool2d(x, 128), F.adaptive_avg_pool2d(y, 128)
    by_hand = sum(single(F.adaptive_avg_pool2d(x128, s), F.adaptive_avg_pool2d(y128, s)) for s in (128, 64, 32))
    got = multi(x, y)
    assert torch.allclose(got, by_hand, rtol=1e-5, atol=1e-7)
    assert torch.all(got > single(x128, y128))


def test_lpips_gradient_is_finite_where_features_vanish(tmp_path):
    # a trunk whose first layer is switched off: every relu1 feature vector is exactly zero
    sd = _random_alexnet_features(1)
    sd["features.0.bias"] = torch.full_like(sd["features.0.bias"], -1e4)
    path = tmp_path / "dead.pth"
    torch.save(sd, path)
    loss = LPIPSLoss(backbone_weights=path, resize=None)
    x = _images(2, seed=11).requires_grad_(True)
    loss(x, _images(2, seed=12)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(unit_normalize(torch.zeros(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def test_lpips_missing_weights_raise_without_download(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert lpips_backbone_file("alex") == ALEX_FILE
    assert default_lpips_backbone_path("alex") == hub / "checkpoints" / ALEX_FILE
    with pytest.raises(MissingWeightsError) as e:
        LPIPSLoss()
    assert ALEX_FILE in str(e.value) and str(hub / "checkpoints") in str(e.value)
    with pytest.raises(MissingWeightsError, match=ALEX_FILE):
        LPIPSLoss(backbone_weights=tmp_path / "nowhere.pth")
    with pytest.raises(MissingWeightsError, match="vgg16-"):
        LPIPSLoss(net="vgg")
    assert issubclass(MissingWeightsError, FileNotFoundError)


def test_lpips_reads_the_hub_cache(tmp_path, monkeypatch, alex_weights):
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    shutil.copy(alex_weights, hub / "checkpoints" / ALEX_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    from_cache = LPIPSLoss(resize=None)
    sd = torch.load(alex_weights, weights_only=True)
    assert torch.equal(from_cache.lpips.net.slice1[0].weight, sd["features.0.weight"])


def test_lpips_rejects_a_wrong_backbone_file(tmp_path):
    sd = _random_alexnet_features()
    broken = dict(sd)
    del broken["features.3.weight"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"features\.3\.weight"):
        LPIPSLoss(backbone_weights=tmp_path / "missing.pth")
    wrong = dict(sd)
    wrong["features.6.weight"] = torch.zeros(8, 8, 3, 3)
    torch.save(wrong, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"features\.6\.weight"):
        LPIPSLoss(backbone_weights=tmp_path / "shape.pth")
    extra = dict(sd, **{"fc.weight": torch.zeros(2, 2)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"fc\.weight"):
        LPIPSLoss(backbone_weights=tmp_path / "extra.pth")
    # torchvision's full file carries the classifier too: accepted and ignored
    torch.save(dict(sd, **{"classifier.1.weight": torch.zeros(4, 4)}), tmp_path / "full.pth")
    LPIPSLoss(backbone_weights=tmp_path / "full.pth")


def test_lpips_argument_errors(alex_weights, alex_loss):
    loss = alex_loss
    with pytest.raises(ValueError, match="shape"):
        loss(_images(2), _images(3))
    with pytest.raises(ValueError, match="at least 32"):
        loss(_images(1, 16), _images(1, 16))
    with pytest.raises(ValueError, match="net must be"):
        LPIPSLoss(net="resnet", backbone_weights=alex_weights)
    with pytest.raises(ValueError, match="reduction"):
        LPIPSLoss(backbone_weights=alex_weights, reduction="sum")


# ---------------------------------------------------------------------------------------------------- domain
def _tiny_domain_net() -> DomainNet:
    torch.manual_seed(0)
    net = DomainNet(**TINY_DOMAIN)
    for m in net.modules():  # non-trivial BN statistics and residual branches (not the identity init)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_trunk_features_are_the_trunk_stages():
    net = _tiny_domain_net()
    x = _images(2, 32, seed=15)
    maps = net.trunk_features(x)
    assert [tuple(m.shape) for m in maps] == [(2, 8, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4),
                                              (2, 32, 2, 2)]
    assert torch.equal(maps[-1], net.trunk(x))
    assert all((m >= 0).all() for m in maps)


def test_domain_perceptual_zero_positive_gradients():
    net = _tiny_domain_net()
    loss = build_perceptual("domain", domain_net=net)
    assert isinstance(loss, DomainPerceptualLoss) and loss.name == "domain_perceptual"
    assert not any(p.requires_grad for p in net.parameters())
    x, y = _images(3, 32, seed=16), _images(3, 32, seed=17)
    d = loss(x, y)
    assert d.shape == (3,) and torch.all(d > 1e-4)
    assert torch.allclose(loss(y, x), d, rtol=1e-5)
    assert torch.allclose(loss(x, x), torch.zeros(3), atol=1e-6)
    # 5 layers, each term in [0, 4]
    assert torch.all(d <= 5 * 4)
    xg = x.clone().requires_grad_(True)
    loss(xg, y, reduction="mean").backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    loss.train()
    assert not net.training
    only_last = DomainPerceptualLoss(net, layers=[-1])
    assert torch.all(only_last(x, y) < d)


@pytest.mark.skipif(not DOMAIN_NET.is_file(), reason=f"{DOMAIN_NET} not present")
def test_domain_perceptual_grows_with_the_perturbation():
    net = load_domain_net(DOMAIN_NET)
    ds = sf.SynthFaces(4, 64, "test", n_persons=4)
    faces = torch.stack([ds[i][0] for i in range(4)])
    noise = torch.randn(faces.shape, generator=torch.Generator().manual_seed(0))
    loss = DomainPerceptualLoss(net)
    with torch.no_grad():
        d = [loss(faces, (faces + s * noise).clamp(-1, 1)) for s in (0.02, 0.1, 0.4)]
        other = loss(faces, faces.roll(1, dims=0))  # another person
    assert torch.all(d[0] < d[1]) and torch.all(d[1] < d[2])
    assert torch.all(d[0] < other)


def test_build_perceptual_kinds(alex_weights):
    assert build_perceptual("none") is None
    assert isinstance(build_perceptual("lpips", backbone_weights=alex_weights), LPIPSLoss)
    with pytest.raises(ValueError, match="domain_net"):
        build_perceptual("domain")
    with pytest.raises(ValueError, match="unknown perceptual"):
        build_perceptual("vgg_feature_loss")
