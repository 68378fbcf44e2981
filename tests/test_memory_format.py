"""Channels-last only where the CPU convolution is safe (clcae.networks.memory_format; issue 25).

On AVX-512 CPUs (torch 2.14.1) the channels-last backward of a small 1×1 stride-2 convolution corrupts the heap and
kills the process. The child-process tests run PyTorch's own reproduction, then the project's training steps on the
same shapes with and without the guard: where the reproduction crashes, the unguarded steps must crash too (the
guard is still needed and the test still reaches the kernel) and the guarded ones must not.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from clcae.networks.domain import DomainNet
from clcae.networks.layers import EqualConv2d
from clcae.networks.memory_format import (SAFE_MIN_CHANNELS, channels_last_unsafe, guarded_convolutions,
                                          to_channels_last)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(stem_channels=8, channels=(8, 16, 16, 32), embed_dim=16, attr_reduce=8, attr_hidden=16)


def _standard(t: torch.Tensor) -> bool:
    return t.stride() == torch.empty(t.shape, device="meta").stride()


def test_unsafe_geometry():
    assert channels_last_unsafe(8, 8, 1, 2) and channels_last_unsafe(3, 64, (1, 1), (2, 2))
    assert channels_last_unsafe(SAFE_MIN_CHANNELS - 1, 512, 1, 2)
    assert not channels_last_unsafe(SAFE_MIN_CHANNELS, SAFE_MIN_CHANNELS, 1, 2)
    assert not channels_last_unsafe(8, 8, 1, 1)       # stride 1
    assert not channels_last_unsafe(8, 8, 3, 2)       # 3x3
    assert not channels_last_unsafe(8, 8, (1, 3), 2)


def test_guard_feeds_contiguous_tensors_and_keeps_the_numbers():
    torch.manual_seed(0)
    net = DomainNet(**dict(SMALL, channels=(8, 16, 32, 64))).eval()
    ref_in = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(ref_in)["embed"]
    to_channels_last(net)
    to_channels_last(net)  # idempotent: one hook per convolution
    guarded = guarded_convolutions(net)
    # every stage's first block has a strided 1x1 shortcut; the last (32 -> 64) is safe in channels-last
    assert guarded == ["stages.0.0.shortcut.0", "stages.1.0.shortcut.0", "stages.2.0.shortcut.0"]
    assert all(len(net.get_submodule(n)._forward_pre_hooks) == 1 for n in guarded)
    seen = {}

    def record(name):
        def hook(module, args):
            seen[name] = (_standard(args[0]), _standard(module.weight))
        return hook
    for name in guarded + ["stages.3.0.shortcut.0", "stages.0.0.conv1"]:
        net.get_submodule(name).register_forward_pre_hook(record(name))
    net.to(memory_format=torch.channels_last)  # a caller re-strides everything: the guard still holds
    with torch.no_grad():
        out = net(ref_in.contiguous(memory_format=torch.channels_last))["embed"]
    assert all(seen[n] == (True, True) for n in guarded), seen
    assert seen["stages.3.0.shortcut.0"] == (False, False)  # 32 channels: channels-last
    assert seen["stages.0.0.conv1"] == (False, False)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_discriminator_skips_are_guarded():
    from clcae.training.gan import GANTrainOptions, StyleGAN2Trainer
    opts = GANTrainOptions(size=32, style_dim=16, n_mlp=1, channel_base=128, channel_max=16, batch=4,
                           channels_last=True, threads=1, workers=0)
    D = StyleGAN2Trainer(opts, torch.device("cpu")).D
    names = guarded_convolutions(D)
    assert names and all(n.endswith("skip.1") or ".skip." in n for n in names), names
    assert all(isinstance(D.get_submodule(n), EqualConv2d) for n in names)
    assert guarded_convolutions(to_channels_last(nn.Sequential(nn.Conv2d(64, 64, 1, 2)))) == []


# --------------------------------------------------------------------------------- child processes
_CHILD = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    torch.set_num_threads(1)
    mode = sys.argv[1]
    if mode == "repro":  # PyTorch alone (the issue's reproduction)
        conv = nn.Conv2d(8, 8, 1, 2, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(16, 8, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_()
        for _ in range(2):
            conv(x).square().mean().backward()
        raise SystemExit(0)
    what, guard = mode.split("-")
    if guard == "unguarded":  # what the trainers did before the guard
        import clcae.training.domain, clcae.training.gan
        plain = lambda m: m.to(memory_format=torch.channels_last)
        clcae.training.domain.to_channels_last = clcae.training.gan.to_channels_last = plain
    torch.manual_seed(0)
    if what == "domain":  # the domain network's training step, channels_last on (its default)
        import numpy as np
        from clcae.training import domain as dn
        from clcae.training.domain_options import DomainTrainOptions
        opts = DomainTrainOptions(stem_channels=8, channels="8,16,16,32", embed_dim=16, steps=10, batch=16,
                                  channels_last=True)
        trainer = dn.DomainNetTrainer(opts, np.arange(8))
        for _ in range(2):
            trainer.train_step(torch.rand(16, 3, 64, 64) * 2 - 1, torch.arange(16) % 8, torch.rand(16, 11))
    else:  # the generator trainer's step (D loss with R1, G loss with path length) at 64 px, 8-16 channels
        from clcae.training.gan import GANTrainOptions, StyleGAN2Trainer
        opts = GANTrainOptions(size=64, style_dim=32, n_mlp=2, channel_base=256, channel_max=16, batch=16,
                               r1_interval=1, pl_interval=1, channels_last=True, threads=1, workers=0)
        trainer = StyleGAN2Trainer(opts, torch.device("cpu"))
        for _ in range(2):
            trainer.train_step(torch.rand(16, 3, 64, 64) * 2 - 1)
""")


def _run_child(mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_CHECK_="3", OMP_NUM_THREADS="1")  # glibc: report heap corruption at once
    return subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, capture_output=True, text=True, timeout=300)


def _crashed(p: subprocess.CompletedProcess) -> bool:
    return p.returncode < 0 or p.returncode in (134, 139)


@pytest.fixture(scope="module")
def platform_crashes() -> bool:
    """Whether PyTorch's channels-last 1x1 stride-2 backward crashes on this machine."""
    p = _run_child("repro")
    assert p.returncode == 0 or _crashed(p), p.stderr[-2000:]
    return _crashed(p)


@pytest.mark.parametrize("what", ["domain", "gan"])
def test_training_steps_do_not_reach_the_crashing_kernel(what, platform_crashes):
    guarded = _run_child(f"{what}-guarded")
    assert guarded.returncode == 0, f"the guarded {what} training step failed:\n{guarded.stderr[-3000:]}"
    if platform_crashes and what == "domain":  # (the discriminator's skips see odd sizes, 63x63 at 64 px, which
        # ran clean unguarded; they are guarded all the same, see test_discriminator_skips_are_guarded)
        unguarded = _run_child(f"{what}-unguarded")
        assert _crashed(unguarded), (
            f"PyTorch's reproduction crashes here but the unguarded {what} step did not: the test no longer reaches "
            f"the crashing kernel (rc {unguarded.returncode}); re-check the shapes\n{unguarded.stderr[-2000:]}")
