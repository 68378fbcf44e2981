"""e4e's training parts: latent discriminator, delta / W-norm regularisers, latent GAN losses, progressive schedule."""
import math

import pytest
import torch

from clcae.losses.regularizers import (E4E_DEFAULTS, ProgressiveSchedule, delta_regularization, latent_d_loss,
                                       latent_d_r1, latent_g_loss, sample_real_w, w_norm)
from clcae.networks.latent_discriminator import LatentCodesDiscriminator
from clcae.networks.stylegan2 import Generator


# ---------------------------------------------------------------------------------------------------- discriminator
def test_discriminator_layout():
    d = LatentCodesDiscriminator(512, 4)
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert shapes == {"mlp.0.weight": (512, 512), "mlp.0.bias": (512,), "mlp.2.weight": (512, 512),
                      "mlp.2.bias": (512,), "mlp.4.weight": (512, 512), "mlp.4.bias": (512,),
                      "mlp.6.weight": (1, 512), "mlp.6.bias": (1,)}
    acts = [m for m in d.mlp if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert d.config == {"style_dim": 512, "n_mlp": 4}
    assert set(LatentCodesDiscriminator(8, 1).state_dict()) == {"mlp.0.weight", "mlp.0.bias"}


def test_discriminator_per_code():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(16, 3)
    w = torch.randn(4, 5, 16)
    per_code = d(w)
    assert per_code.shape == (4, 5, 1) and d(w[:, 2]).shape == (4, 1)
    assert torch.allclose(per_code[:, 2], d(w[:, 2]), atol=1e-6)
    # matches the layers applied by hand
    h = w[:, 0]
    for lin in (d.mlp[0], d.mlp[2]):
        h = torch.nn.functional.leaky_relu(lin(h), 0.2)
    assert torch.allclose(d.mlp[4](h), per_code[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="expects codes"):
        d(torch.randn(4, 8))


# ---------------------------------------------------------------------------------------------------- regularisers
def test_delta_regularization_hand_computed():
    w0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    codes = torch.stack([w0, w0 + torch.tensor([3.0, 4.0]), w0 + torch.tensor([[0.0, 1.0], [6.0, 8.0]]), w0], 1)
    # layer 1: norms 5, 5 -> mean 5; layer 2: norms 1, 10 -> mean 5.5; layer 3: 0
    assert delta_regularization(codes, stage=0).item() == 0.0
    assert delta_regularization(codes, stage=1).item() == pytest.approx(5.0)
    assert delta_regularization(codes, stage=2).item() == pytest.approx(10.5)
    assert delta_regularization(codes).item() == pytest.approx(10.5)  # None: all layers (the last delta is 0)
    # L1: layer 1: 7, 7; layer 2: 1, 14
    assert delta_regularization(codes, stage=2, norm="l1").item() == pytest.approx(7.0 + 7.5)
    assert delta_regularization(codes, stage=2, norm=2).item() == pytest.approx(10.5)
    # a latent_avg equal on every layer does not change it
    assert delta_regularization(codes + torch.tensor([2.0, -3.0]), stage=2).item() == pytest.approx(10.5)
    with pytest.raises(ValueError, match="stage must be"):
        delta_regularization(codes, stage=4)
    with pytest.raises(ValueError, match="norm must be"):
        delta_regularization(codes, norm="fro")


def test_delta_regularization_gradient_only_on_active_layers():
    codes = torch.randn(3, 6, 4, requires_grad=True)
    delta_regularization(codes, stage=2).backward()
    assert codes.grad[:, 3:].abs().sum() == 0 and codes.grad[:, 1:3].abs().sum() > 0
    assert torch.allclose(codes.grad[:, 0], -codes.grad[:, 1:3].sum(1), atol=1e-6)


def test_w_norm_hand_computed():
    codes = torch.zeros(2, 3, 2)
    codes[0, 0] = torch.tensor([3.0, 4.0])  # ||.||_F = 5
    codes[1, 1] = torch.tensor([6.0, 0.0])
    codes[1, 2] = torch.tensor([0.0, 8.0])  # ||.||_F = 10
    assert w_norm(codes).item() == pytest.approx(7.5)
    avg = torch.tensor([1.0, 1.0])
    shifted = codes + avg
    assert w_norm(shifted, latent_avg=avg).item() == pytest.approx(7.5)
    assert w_norm(shifted, latent_avg=avg.expand(3, 2)).item() == pytest.approx(7.5)
    # without latent_avg: rows [4,5],[1,1],[1,1] and [1,1],[7,1],[1,9]
    assert w_norm(shifted).item() == pytest.approx((math.sqrt(16 + 25 + 4) + math.sqrt(2 + 50 + 82)) / 2)
    with pytest.raises(ValueError, match="latent_avg must be"):
        w_norm(codes, latent_avg=torch.zeros(3))


# ---------------------------------------------------------------------------------------------------- latent GAN
def test_latent_gan_losses_values():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(8, 2)
    real, fake = torch.randn(4, 8), torch.randn(4, 3, 8)
    sp = torch.nn.functional.softplus
    expect_d = sp(-d(real)).mean() + sp(d(fake)).mean()
    assert torch.allclose(latent_d_loss(d, real, fake), expect_d)
    assert torch.allclose(latent_g_loss(d, fake), sp(-d(fake)).mean())
    # e4e averages over the layers 0..stage
    per_layer = torch.stack([sp(-d(fake[:, i])).mean() for i in range(2)])
    assert torch.allclose(latent_g_loss(d, fake, stage=1), per_layer.mean())


def test_latent_d_step_increases_real_score():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(8, 3)
    real, fake = torch.randn(16, 8) + 1.0, torch.randn(16, 8) - 1.0
    fake.requires_grad_(True)
    before = (d(real).mean() - d(fake).mean()).item()
    loss = latent_d_loss(d, real, fake)
    loss.backward()
    assert fake.grad is None  # the D loss does not reach the encoder's codes
    with torch.no_grad():
        for p in d.parameters():
            p -= 0.05 * p.grad
    assert (d(real).mean() - d(fake).mean()).item() > before
    assert latent_d_loss(d, real, fake).item() < loss.item()


def test_latent_g_loss_pushes_codes_towards_real():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(8, 3)
    fake = torch.randn(16, 2, 8, requires_grad=True)
    latent_g_loss(d, fake).backward()
    with torch.no_grad():
        moved = fake - 0.1 * fake.grad
        assert d(moved).mean() > d(fake).mean()  # the encoder step raises D's score of its codes
    assert all(p.grad is not None for p in d.parameters())  # caller keeps D out of the encoder's optimiser


def test_latent_d_r1():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(8, 3)
    real = torch.randn(5, 8)
    w = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d(w).sum(), w)
    expected = 5.0 * g.square().sum(1).mean()
    r1 = latent_d_r1(d, real, gamma=10.0)
    assert torch.allclose(r1, expected, rtol=1e-5)
    r1.backward()  # differentiable w.r.t. D's weights (the output bias does not enter the input gradient)
    assert all(d.mlp[i].weight.grad is not None and d.mlp[i].weight.grad.abs().sum() > 0 for i in (0, 2, 4))
    assert E4E_DEFAULTS["r1"] == 10 and E4E_DEFAULTS["d_reg_every"] == 16
    lin = LatentCodesDiscriminator(8, 1)  # linear D: the gradient is the weight vector
    assert latent_d_r1(lin, real, gamma=2.0).item() == pytest.approx(lin.mlp[0].weight.square().sum().item(), rel=1e-5)


def test_sample_real_w():
    G = Generator(8, 16, n_mlp=2, channel_base=64, channel_max=16).eval()
    a = sample_real_w(G, 4, torch.Generator().manual_seed(1))
    b = sample_real_w(G, 4, torch.Generator().manual_seed(1))
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 16) and torch.equal(a, b) and not a.requires_grad
    assert torch.allclose(a, G.mapping(z).detach())
    assert sample_real_w(G, 3).shape == (3, 16)


# ---------------------------------------------------------------------------------------------------- schedule
def test_progressive_schedule_boundaries():
    s = ProgressiveSchedule(18, start_step=20000, every=2000)
    assert s(0) == 0 and s(19999) == 0
    assert s(20000) == 1 and s(21999) == 1 and s(22000) == 2
    assert s(20000 + 15 * 2000) == 16 and s(20000 + 16 * 2000 - 1) == 16 and s(20000 + 16 * 2000) == 17
    assert s(10 ** 7) == 17 == s.final_stage
    assert s.steps == [0] + [20000 + 2000 * i for i in range(17)] and len(s.steps) == 18
    for i, start in enumerate(s.steps):  # stage i begins exactly at steps[i]
        assert s(start) == i and (start == 0 or s(start - 1) == i - 1)
    s0 = ProgressiveSchedule(6, every=10)  # start 0: the first delta is active from step 0 (as e4e)
    assert [s0(t) for t in (0, 9, 10, 39, 40, 1000)] == [1, 1, 2, 4, 5, 5]
    assert ProgressiveSchedule(1)(5000) == 0
    with pytest.raises(ValueError):
        ProgressiveSchedule(18, every=0)
    with pytest.raises(ValueError):
        s(-1)
