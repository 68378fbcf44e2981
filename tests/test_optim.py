"""Ranger (RAdam + Lookahead + gradient centralisation) and build_optimizer."""
import io

import pytest
import torch
from torch import nn

from clcae.training.optim import Ranger, build_optimizer, centralize_gradient


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Conv1d(1, 1, 1), nn.Flatten(), nn.Linear(8, 2))


class _Net(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(5, 8)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc2 = nn.Linear(3 * 4 * 4, 2)
        self.unused = nn.Linear(2, 2)  # never gets a gradient

    def forward(self, x):
        h = torch.tanh(self.fc1(x)).repeat(1, 4)[:, :32].view(-1, 2, 4, 4)
        return self.fc2(torch.relu(self.conv(h)).flatten(1))


def _data(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)


def _train(model, opt, steps):
    for s in steps:
        x, y = _data(s)
        opt.zero_grad(set_to_none=True)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def test_ranger_minimises_quadratic():
    torch.manual_seed(0)
    target = torch.randn(4, 3)

    def run(use_gc):
        w = nn.Parameter(torch.zeros(4, 3))
        b = nn.Parameter(torch.full((3,), 2.0))
        opt = Ranger([w, b], lr=0.05, use_gc=use_gc)
        losses = []
        for _ in range(1000):
            opt.zero_grad()
            loss = ((w - target) ** 2).sum() + (b ** 2).sum()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return w.detach(), b.detach(), losses

    w, b, losses = run(use_gc=False)
    assert losses[-1] < 1e-8 * losses[0] and losses[100] < losses[0]
    w, b, losses = run(use_gc=True)
    assert losses[-1] < 0.05 * losses[0] and b.abs().max() < 1e-4
    # With GC, w only sees the centralised gradient, so it stops where that vanishes: w - target has equal
    # entries within each row (the row offsets left are not reachable; without GC they would vanish too).
    resid = w - target
    torch.testing.assert_close(resid - resid.mean(1, keepdim=True), torch.zeros(4, 3), atol=1e-4, rtol=0)
    assert resid.abs().max() > 0.1


def test_gradient_centralisation_is_applied():
    torch.manual_seed(0)
    w2 = nn.Parameter(torch.randn(4, 3))        # ndim 2: centralised
    w4 = nn.Parameter(torch.randn(2, 3, 2, 2))  # conv weight: centralised per output channel
    b = nn.Parameter(torch.randn(4))            # ndim 1: left alone
    g2, g4, gb = torch.randn(4, 3) + 5.0, torch.randn(2, 3, 2, 2) - 3.0, torch.randn(4) + 1.0
    before = [t.detach().clone() for t in (w2, w4, b)]
    lr = 0.1
    opt = Ranger([w2, w4, b], lr=lr)
    for p, g in zip((w2, w4, b), (g2, g4, gb)):
        p.grad = g.clone()
    opt.step()
    # RAdam's first step is un-adapted (rho_t <= 5): p -= lr * g, with g the centralised gradient.
    d2, d4, db = [(t.detach() - t0) for t, t0 in zip((w2, w4, b), before)]
    torch.testing.assert_close(d2.mean(1), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(d4.mean((1, 2, 3)), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(d2, -lr * (g2 - g2.mean(1, keepdim=True)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d4, -lr * (g4 - g4.mean((1, 2, 3), keepdim=True)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(db, -lr * gb, atol=1e-5, rtol=1e-5)  # not centralised
    assert abs(db.mean().item()) > 0.01
    # p.grad itself was centralised in place.
    torch.testing.assert_close(w2.grad.mean(1), torch.zeros(4), atol=1e-6, rtol=0)
    # Without GC the step follows the raw gradient.
    w = nn.Parameter(torch.zeros(4, 3))
    w.grad = g2.clone()
    Ranger([w], lr=lr, use_gc=False).step()
    torch.testing.assert_close(w.detach(), -lr * g2, atol=1e-5, rtol=1e-5)
    # Helper on its own.
    g = torch.randn(3, 4, 5)
    assert centralize_gradient(g.clone()).mean((1, 2)).abs().max() < 1e-6
    assert torch.equal(centralize_gradient(g.clone(), min_ndim=4), g)


def test_lookahead_synchronises_every_k_steps():
    # Constant gradient on a 1-D parameter (no GC): 5 fast steps of RAdam, then on step 6 the weight is pulled back
    # to slow + alpha * (fast - slow), with slow = the initial value.
    p_ranger = nn.Parameter(torch.tensor([1.0, -2.0]))
    p_radam = nn.Parameter(torch.tensor([1.0, -2.0]))
    ranger = Ranger([p_ranger], lr=0.1, k=6, alpha=0.5)
    radam = torch.optim.RAdam([p_radam], lr=0.1, betas=(0.95, 0.999), eps=1e-5)
    grad = torch.tensor([0.3, -0.7])
    for step in range(1, 7):
        for p, opt in ((p_ranger, ranger), (p_radam, radam)):
            p.grad = grad.clone()
            opt.step()
        if step < 6:
            assert torch.equal(p_ranger.detach(), p_radam.detach())
    expected = torch.tensor([1.0, -2.0]) + 0.5 * (p_radam.detach() - torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(p_ranger.detach(), expected)
    st = ranger.state[p_ranger]
    assert torch.equal(st["lookahead_slow"], p_ranger.detach())
    assert ranger.param_groups[0]["lookahead_step"] == 6


@pytest.mark.parametrize("split", [4, 6, 9])
def test_resume_is_bit_identical(split):
    total = 15  # spans two lookahead synchronisations (steps 6 and 12)
    ref = _Net()
    opt = Ranger(ref.parameters(), lr=1e-2)
    _train(ref, opt, range(total))

    model = _Net()
    opt = Ranger(model.parameters(), lr=1e-2)
    _train(model, opt, range(split))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    # The saved state has the slow weights and the counter.
    assert saved["opt"]["param_groups"][0]["lookahead_step"] == split
    assert any("lookahead_slow" in s for s in saved["opt"]["state"].values())

    resumed = _Net(seed=99)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt2 = Ranger(resumed.parameters(), lr=1e-2)
    opt2.load_state_dict(saved["opt"])
    _train(resumed, opt2, range(split, total))
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.unused.weight.grad is None and "lookahead_slow" not in opt2.state.get(resumed.unused.weight, {})

    # Without the optimiser state the run differs (the test can fail).
    fresh = _Net(seed=99)
    fresh.load_state_dict(saved["model"])
    _train(fresh, Ranger(fresh.parameters(), lr=1e-2), range(split, total))
    assert not torch.equal(fresh.fc1.weight, ref.fc1.weight)


def test_build_optimizer():
    params = list(_model().parameters())
    r = build_optimizer("ranger", params, 1e-4)
    assert isinstance(r, Ranger)
    g = r.param_groups[0]
    assert g["betas"] == (0.95, 0.999) and g["eps"] == 1e-5 and g["weight_decay"] == 0
    assert g["lookahead_k"] == 6 and g["lookahead_alpha"] == 0.5 and g["lr"] == 1e-4
    assert build_optimizer("Ranger", params, 1e-3, k=3).param_groups[0]["lookahead_k"] == 3
    assert type(build_optimizer("adam", params, 1e-3)) is torch.optim.Adam
    assert type(build_optimizer("adamw", params, 1e-3, weight_decay=0.1)) is torch.optim.AdamW
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("sgd", params, 1e-3)
    with pytest.raises(ValueError, match="alpha"):
        Ranger(params, alpha=0.0)
    # A param group added later gets the Lookahead settings too.
    r.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
    assert r.param_groups[1]["lookahead_k"] == 6 and r.param_groups[1]["lookahead_step"] == 0


def test_step_hooks_run_once():
    torch.optim.RAdam([nn.Parameter(torch.zeros(1))])  # wraps RAdam.step in the hook runner
    p = nn.Parameter(torch.ones(3))
    opt = Ranger([p], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    p.grad = torch.ones(3)
    opt.step()
    assert calls == ["pre", "post"] and not torch.equal(p.detach(), torch.ones(3))
