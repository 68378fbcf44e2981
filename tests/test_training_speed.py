"""The faster training arithmetic (issue 20) computes the same losses and gradients as the plain one.

- CLCAE stage 2 with ``InversionTask.fast_step`` (loss networks once on the stacked renders, the target's features
  once, one domain-network trunk pass for perceptual + identity, channels-last generator and encoders on a CPU)
  against the step as first written (``fast_step = False``): every loss term and every encoder gradient.
- The loss modules' ``target`` / ``to_target`` against their ``forward``.
- The generator's fast path with gradients (fused epilogue: demodulation, gain and noise in one ``addcmul``; ToRGB
  as a batched matrix product) against ``impl='ref'``: parameter gradients, fresh random noise drawn in the same
  order, and the second-order gradients of path-length regularisation; and a whole generator training step.
"""
from __future__ import annotations

import math

import pytest
import torch

from clcae.checkpoints import save_generator
from clcae.losses.identity import DomainIdentity
from clcae.losses.perceptual import DomainPerceptualLoss
from clcae.networks.domain import DomainNet, save_domain_net
from clcae.networks.stylegan2 import Generator
from clcae.training.encoder_loop import build_task, resolve_encoder_options, run_encoder_training
from clcae.training.inversion import InversionTask

TINY = dict(input_size="32", num_layers=18, widths="8,8,16,24", nhead=2, dim_feedforward=32, projection_dim=16,
            idx_k=3, val_n=4, synth_n=64, threads=1, log_interval=1, image_interval=2, sample_n=2,
            optimizer="adam", lr=1e-3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 32 px generator, a tiny domain network, and a stage-1 run (1 step) for the alignment term."""
    root = tmp_path_factory.mktemp("speed")
    torch.manual_seed(0)
    G = Generator(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    G.latent_avg.copy_(G.mean_latent(256))
    save_generator(G, root / "g.pt")
    torch.manual_seed(1)
    net = DomainNet(input_size=32, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8, attr_reduce=4,
                    attr_hidden=8).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and residual branches
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    save_domain_net(net, root / "domain.pt")
    run_encoder_training(dict(TINY, generator=str(root / "g.pt"), stage="align", data="generate", pairs_n=16,
                              batch=4, steps=1, val_interval=1, perceptual="none", identity="none",
                              out=str(root / "align")), tensorboard=False, progress=False)
    return root


def _task(files, fast: bool, **kw):
    return _build(dict(TINY, generator=str(files / "g.pt"), method="clcae", data="synthfaces", batch=4,
                       perceptual="domain", identity="domain", domain_net=str(files / "domain.pt"), lpips_lambda=0.8,
                       id_lambda=0.1, contrastive_lambda=0.1, feature_matching_lambda=0.01,
                       contrastive_image=str(files / "align"), train_noise="random", **kw), fast)


def _build(given: dict, fast: bool):
    """The task of options ``given``, built with ``InversionTask.fast_step = fast`` (restored afterwards)."""
    opts, _, _ = resolve_encoder_options(given)
    opts.validate()
    previous = InversionTask.fast_step
    InversionTask.fast_step = fast
    try:
        torch.manual_seed(0)
        return build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    finally:
        InversionTask.fast_step = previous


def _step(task, x, step: int):
    """Loss terms and encoder gradients of one training forward/backward (fixed RNG: same noise, same dropout)."""
    enc = task.inverter.encoder
    enc.train()
    torch.manual_seed(123)
    out = task._forward(x, step, task.noise_mode, train=True)
    terms = task._losses(x, out, step)
    enc.zero_grad(set_to_none=True)
    terms["loss"].backward()
    return ({k: float(v.detach()) for k, v in terms.items()},
            {n: p.grad.detach().clone() for n, p in enc.named_parameters() if p.grad is not None})


def _assert_same_step(a, b):
    (ta, ga), (tb, gb) = a, b
    assert set(ta) == set(tb)
    for k in ta:
        assert tb[k] == pytest.approx(ta[k], rel=1e-5, abs=1e-7), k
    assert set(ga) == set(gb) and ga
    num = math.sqrt(sum(float((ga[n] - gb[n]).square().sum()) for n in ga))
    den = math.sqrt(sum(float(ga[n].square().sum()) for n in ga))
    assert num <= 1e-4 * den, num / den
    largest = max(float(g.norm()) for g in ga.values())
    for n in ga:  # each parameter up to rounding (tiny gradients after BatchNorm cancel: an absolute floor)
        assert float((ga[n] - gb[n]).norm()) <= 1e-3 * float(ga[n].norm()) + 1e-5 * largest, n


@pytest.mark.parametrize("feature_mode", ["residual", "replace"])
def test_fast_clcae_step_matches_the_plain_step(files, feature_mode):
    plain, fast = _task(files, False, feature_mode=feature_mode), _task(files, True, feature_mode=feature_mode)
    assert not plain.fast_step and fast.fast_step
    assert fast._shared_domain_net() is not None  # the shared-trunk path is the one tested
    fast.inverter.encoder.load_state_dict(plain.inverter.encoder.state_dict())
    x = torch.stack([plain.train_dataset[i] for i in range(4)])
    for step in (0, 7):
        _assert_same_step(_step(plain, x, step), _step(fast, x, step))
    # and the comparison can fail: the identity target of the wrong images (batch order reversed) is caught
    original = fast.identity.target
    fast.identity.target = lambda y, maps=None: original(y.flip(0))
    with pytest.raises(AssertionError):
        _assert_same_step(_step(plain, x, 7), _step(fast, x, 7))


def test_fast_psp_step_matches_the_plain_step(files):
    def task(fast):
        return _build(dict(TINY, generator=str(files / "g.pt"), method="psp", data="synthfaces", batch=4,
                           perceptual="domain", identity="domain", domain_net=str(files / "domain.pt"),
                           lpips_lambda=0.8, id_lambda=0.1, train_noise="random"), fast)

    plain, fast = task(False), task(True)
    fast.inverter.encoder.load_state_dict(plain.inverter.encoder.state_dict())
    x = torch.stack([plain.train_dataset[i] for i in range(4)])
    _assert_same_step(_step(plain, x, 3), _step(fast, x, 3))


def test_domain_losses_to_target_equal_their_forward():
    torch.manual_seed(0)
    net = DomainNet(input_size=32, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8).eval()
    net.requires_grad_(False)
    P, I = DomainPerceptualLoss(net), DomainIdentity(net)
    y = torch.rand(3, 3, 32, 32) * 2 - 1
    renders = [torch.rand(3, 3, 32, 32) * 2 - 1 for _ in range(2)]
    stacked = torch.cat(renders).requires_grad_(True)
    per = P.to_target(stacked, P.target(y))
    ids = I.to_target(stacked, I.target(y))
    maps = net.trunk_features(stacked)
    per_shared = P.to_target(stacked, P.target(y), maps=maps)
    ids_shared = I.to_target(stacked, I.target(y, maps=net.trunk_features(y)), maps=maps)
    want_p = torch.cat([P(r, y) for r in renders])
    want_i = torch.cat([I(r, y) for r in renders])
    for got, want in ((per, want_p), (per_shared, want_p), (ids, want_i), (ids_shared, want_i)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    # gradients reach the renders (not the fixed target)
    (g,) = torch.autograd.grad(per.sum() + ids.sum(), stacked)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot be matched"):
        P.to_target(stacked[:5], P.target(y))
    with pytest.raises(ValueError, match="cannot be matched"):
        I.to_target(stacked[:5], I.target(y))


def _tiny_generator() -> Generator:
    torch.manual_seed(0)
    G = Generator(16, 32, 2, channel_base=128, channel_max=32)
    with torch.no_grad():  # non-zero noise strengths and biases, so that their gradients and effects are tested
        for name, p in G.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith(".bias"):
                p.uniform_(-0.5, 0.5)
    return G


def _grads(G, impl: str, memory_format, ws, noise):
    G.set_impl(impl).set_memory_format(memory_format)
    G.zero_grad(set_to_none=True)
    img = G.synthesis(ws, noise=noise) if noise is not None else G.synthesis(ws, noise_mode="random")
    (img * torch.linspace(-1, 1, img.numel()).view_as(img)).sum().backward()
    return img.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("noise_given", [True, False])
def test_generator_fast_path_parameter_gradients_match_reference(memory_format, noise_given):
    G = _tiny_generator()
    ws = torch.randn(3, G.n_latent, 32)
    noise = [torch.randn(3, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(G.num_layers)]
    torch.manual_seed(5)
    img_ref, g_ref = _grads(G, "ref", torch.contiguous_format, ws, noise if noise_given else None)
    torch.manual_seed(5)  # fresh noise: the fast path must draw the same numbers in the same order
    img_fast, g_fast = _grads(G, "fast", memory_format, ws, noise if noise_given else None)
    assert (img_fast - img_ref).abs().max() <= 1e-5 * img_ref.abs().max()
    assert set(g_ref) == set(g_fast)
    assert any("noise" in n for n in g_ref) and any("to_rgb" in n for n in g_ref)
    for n in g_ref:
        assert (g_fast[n] - g_ref[n]).abs().max() <= 1e-4 * g_ref[n].abs().max() + 1e-7, n


def test_generator_fast_path_length_gradients_match_reference():
    """Path-length regularisation differentiates through G twice (create_graph): the fused epilogue and the
    batched-matrix ToRGB must give the same second-order gradients."""
    G = _tiny_generator()
    w = torch.randn(4, 32)
    noise = [torch.randn(4, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(G.num_layers)]
    y = torch.randn(4, 3, 16, 16) / 16
    grads = {}
    for impl in ("ref", "fast"):
        G.set_impl(impl)
        G.zero_grad(set_to_none=True)
        ws = G.mapping(w).unsqueeze(1).repeat(1, G.n_latent, 1)
        img = G.synthesis(ws, noise=noise)
        (g,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
        g.square().sum(2).mean(1).sqrt().mean().backward()
        grads[impl] = {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}
    assert set(grads["ref"]) == set(grads["fast"])
    for n, g in grads["ref"].items():
        assert (grads["fast"][n] - g).abs().max() <= 1e-4 * g.abs().max() + 1e-7, n


def test_generator_training_step_fast_matches_reference():
    """One step of the shipped recipe's arithmetic (R1 and path length both due at step 0) on a tiny network:
    the fast path's losses and updated weights equal the reference path's up to rounding."""
    from clcae.training.gan import StyleGAN2Trainer, resolve_options

    results = {}
    for impl in ("ref", "auto"):
        opts, _, _ = resolve_options(dict(data="synthfaces", size=16, style_dim=32, n_mlp=2, channel_base=128,
                                          channel_max=32, batch=4, r1=0.1, pl_weight=2, aug="none", impl=impl,
                                          workers=0, sample_n=0))
        trainer = StyleGAN2Trainer(opts, torch.device("cpu"))
        real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
        losses = trainer.train_step(real)
        assert {"r1", "pl"} <= set(losses)
        results[impl] = ({k: float(v) for k, v in losses.items()},
                         {**{f"g.{k}": v.clone() for k, v in trainer.G.state_dict().items()},
                          **{f"d.{k}": v.clone() for k, v in trainer.D.state_dict().items()}})
    (l_ref, p_ref), (l_fast, p_fast) = results["ref"], results["auto"]
    for k in l_ref:
        assert l_fast[k] == pytest.approx(l_ref[k], rel=1e-4, abs=1e-6), k
    for k in p_ref:
        assert torch.allclose(p_fast[k], p_ref[k], rtol=1e-4, atol=1e-6), k


def test_fast_clcae_training_resumes_bit_identically(files, tmp_path):
    """The fast step keeps exact resume: 4 steps straight equal 2 steps, a checkpoint, and 2 more (the channels-last
    encoder's weights and optimiser state come back from the checkpoint in its format)."""
    from clcae.checkpoints import load_file

    common = dict(TINY, generator=str(files / "g.pt"), method="clcae", data="synthfaces", batch=4,
                  perceptual="domain", identity="domain", domain_net=str(files / "domain.pt"), lpips_lambda=0.8,
                  id_lambda=0.1, contrastive_lambda=0.1, contrastive_image=str(files / "align"), val_interval=2,
                  save_interval=2)
    run_encoder_training(dict(common, steps=4, out=str(tmp_path / "straight")), tensorboard=False, progress=False)
    run_encoder_training(dict(common, steps=2, out=str(tmp_path / "split")), tensorboard=False, progress=False)
    run_encoder_training({"steps": 4}, resume=tmp_path / "split", tensorboard=False, progress=False)
    a = load_file(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_file(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 4
    for name, state in a["task"]["modules"].items():
        for k, v in state.items():
            assert torch.equal(v, b["task"]["modules"][name][k]), (name, k)
