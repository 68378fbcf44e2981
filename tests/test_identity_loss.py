"""Identity losses (clcae.losses.identity: IdentityLoss, ArcFaceIdentity, DomainIdentity, build_identity) and the
ArcFace IR-SE network (clcae.networks.arcface): TreB1eN key layout, strict loading, pSp preprocessing, gradients.

No ArcFace weights exist on this machine: the networks are randomly initialised (a width-reduced IR-SE-50 for the
loading and loss tests; the full-size one for the key layout and one forward pass).
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clcae.checkpoints import CheckpointError
from clcae.losses.identity import (PSP_FACE_CROP, ArcFaceIdentity, DomainIdentity, IdentityLoss, build_identity,
                                   identity_similarity)
from clcae.losses.perceptual import MissingWeightsError
from clcae.networks.arcface import ARCFACE_FILE_NAME, ArcFaceIRSE, arcface_config_from_state_dict, load_arcface
from clcae.networks.domain import DomainNet

TINY_DOMAIN = dict(input_size=32, stem_channels=8, channels=(8, 16, 16, 32), embed_dim=16, attr_reduce=8,
                   attr_hidden=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)


@pytest.fixture(scope="module")
def tiny_arcface(tmp_path_factory) -> tuple[ArcFaceIRSE, Path]:
    """A width-reduced (x1/8) IR-SE-50 ArcFace with random weights and BN statistics, saved as a bare state dict."""
    torch.manual_seed(0)
    net = ArcFaceIRSE(width_mult=0.125, embed_dim=32)
    _randomise_bn(net)
    net.eval()
    path = tmp_path_factory.mktemp("arcface") / ARCFACE_FILE_NAME
    torch.save(net.state_dict(), path)
    return net, path


def _images(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------- network
def test_full_size_key_layout_is_treb1en():
    net = ArcFaceIRSE().eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {
        "input_layer.0.weight": (64, 3, 3, 3), "input_layer.1.running_var": (64,), "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,), "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.2.weight": (64,), "body.0.res_layer.3.weight": (64, 64, 3, 3),
        "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1), "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1), "body.3.shortcut_layer.1.weight": (128,),
        "body.7.shortcut_layer.0.weight": (256, 128, 1, 1), "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
        "body.23.res_layer.4.running_mean": (512,), "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 512 * 7 * 7), "output_layer.3.bias": (512,),
        "output_layer.4.running_var": (512,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    # the width-preserving first unit of each stage subsamples with a parameter-free MaxPool2d(1, 2)
    assert not any(k.startswith(("body.0.shortcut_layer", "body.1.shortcut_layer")) for k in shapes)
    assert not any(k.startswith("body.24.") for k in shapes)
    # 43.8 M parameters: 175 MB of float32, the size of the released model_ir_se50.pth
    assert sum(p.numel() for p in net.parameters()) == 43_797_696
    x = _images(2, 112, seed=1)
    with torch.no_grad():
        e = net(x)
    assert e.shape == (2, 512)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert arcface_config_from_state_dict(net.state_dict())["num_layers"] == 50


def test_load_arcface_strict_round_trip(tiny_arcface):
    net, path = tiny_arcface
    loaded = load_arcface(path)
    assert loaded.config["width_mult"] == 0.125 and loaded.config["embed_dim"] == 32
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = _images(2, 112, seed=2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="112"):
        loaded(_images(1, 128))


def test_load_arcface_names_wrong_keys(tiny_arcface, tmp_path):
    net, _ = tiny_arcface
    sd = net.state_dict()
    renamed = dict(sd)
    renamed["body.5.res_layer.1.weights"] = renamed.pop("body.5.res_layer.1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError) as e:
        load_arcface(tmp_path / "renamed.pth")
    assert "body.5.res_layer.1.weight" in str(e.value) and "body.5.res_layer.1.weights" in str(e.value)
    assert "renamed.pth" in str(e.value)

    extra = dict(sd, **{"output_layer.5.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys.*output_layer\.5\.weight"):
        load_arcface(tmp_path / "extra.pth")

    bad_shape = dict(sd, **{"body.2.res_layer.2.weight": torch.zeros(3)})
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"body\.2\.res_layer\.2\.weight"):
        load_arcface(tmp_path / "shape.pth")

    no_head = {k: v for k, v in sd.items() if not k.startswith("output_layer.3")}
    torch.save(no_head, tmp_path / "nohead.pth")
    with pytest.raises(CheckpointError, match=r"output_layer\.3\.weight"):
        load_arcface(tmp_path / "nohead.pth")

    with pytest.raises(CheckpointError, match="no such file"):
        load_arcface(tmp_path / "absent.pth")


def test_load_arcface_accepts_files_without_bn_counters(tiny_arcface, tmp_path):
    net, _ = tiny_arcface
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": old}, tmp_path / "old.pth")
    loaded = load_arcface(tmp_path / "old.pth")
    x = _images(1, 112, seed=3)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- losses
def test_arcface_identity_preprocessing_is_psp(tiny_arcface):
    _, path = tiny_arcface
    loss = ArcFaceIdentity(path)
    assert loss.name == "id_arcface" and PSP_FACE_CROP == (slice(35, 223), slice(32, 220))
    x256 = _images(2, 256, seed=4)
    by_hand = F.adaptive_avg_pool2d(x256[:, :, 35:223, 32:220], (112, 112))
    assert torch.equal(loss.preprocess(x256), by_hand)
    x128 = _images(2, 128, seed=5)  # pooled (here: upsampled) to 256 first
    assert torch.equal(loss.preprocess(x128), loss.preprocess(F.adaptive_avg_pool2d(x128, 256)))
    with torch.no_grad():
        assert torch.allclose(loss.embed(x256), loss.facenet(by_hand))


def test_arcface_identity_values_and_gradients(tiny_arcface):
    _, path = tiny_arcface
    loss = build_identity("arcface", weights=path)
    assert isinstance(loss, ArcFaceIdentity)
    x, y = _images(2, 128, seed=6), _images(2, 128, seed=7)
    with torch.no_grad():
        same, diff = loss(x, x), loss(x, y)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-5)
    assert torch.all(diff > 1e-4) and torch.all(diff <= 2)
    assert torch.allclose(loss.similarity(x, y), 1 - diff, atol=1e-6)
    assert torch.allclose(loss(x, y, reduction="mean"), diff.mean())
    x_hat = x.clone().requires_grad_(True)
    target = y.clone().requires_grad_(True)
    loss(x_hat, target).sum().backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    assert target.grad is None  # the target embedding is fixed, as in pSp
    assert all(p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.facenet.training


def test_arcface_identity_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match=ARCFACE_FILE_NAME):
        ArcFaceIdentity(tmp_path / "nothing_here.pth")
    with pytest.raises(MissingWeightsError, match=ARCFACE_FILE_NAME):
        build_identity("arcface")


def _tiny_domain_net() -> DomainNet:
    torch.manual_seed(0)
    net = DomainNet(**TINY_DOMAIN)
    _randomise_bn(net)
    return net.eval()


def test_domain_identity():
    net = _tiny_domain_net()
    loss = build_identity("domain", domain_net=net)
    assert isinstance(loss, DomainIdentity) and isinstance(loss, IdentityLoss) and loss.name == "id_domain"
    assert not any(p.requires_grad for p in net.parameters())
    x, y = _images(3, 64, seed=8), _images(3, 64, seed=9)
    d = loss(x, y)
    assert d.shape == (3,) and torch.all(d > 1e-4)
    assert torch.allclose(loss(x, x), torch.zeros(3), atol=1e-5)
    assert torch.allclose(d, 1 - identity_similarity(net, x, y), atol=1e-6)
    x_hat = x.clone().requires_grad_(True)
    loss(x_hat, y, reduction="mean").backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        loss(x, y[:2])


def test_build_identity_kinds():
    assert build_identity("none") is None
    with pytest.raises(ValueError, match="domain_net"):
        build_identity("domain")
    with pytest.raises(ValueError, match="unknown identity"):
        build_identity("curricularface")
    with pytest.raises(ValueError, match="reduction"):
        DomainIdentity(_tiny_domain_net(), reduction="sum")
