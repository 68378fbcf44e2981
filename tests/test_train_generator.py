"""StyleGAN2 training (scripts/train_generator.py, clcae.training): it trains, resumes bit for bit, runs under
torchrun, fails fast on bad input and stops (or rolls back) on a NaN.

Every run is tiny (16 px, a few channels, batch 4 or 8, one thread) so the file stays well under two minutes on two
CPU cores; the subprocess and torchrun tests are marked slow (they still run in CI).
"""
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clcae
from clcae.checkpoints import detect_format, load_discriminator, save_generator
from clcae.networks.stylegan2 import Generator
from clcae.networks.domain import DomainNet, save_domain_net
from clcae.networks.projected import ProjectedDiscriminator
from clcae.training.augment import AdaptiveAugment, DiffAugment, parse_diffaug_policy
from clcae.training.gan import (ConfigError, GANTrainOptions, NonFiniteLossError, TrainerCallback, build_dataset,
                                ema_beta, load_generator_config, run_training)
from clcae.data.sampler import InfiniteSampler, ShardedRandom

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_generator.py"

# A 16 px StyleGAN2 with 16 channels: ~20 k parameters per network. Regularisers every 2 / 3 steps and a fast
# ADA (p moves by 0.08 per adjustment) so a few steps exercise every code path.
TINY = dict(size=16, style_dim=32, n_mlp=2, channel_base=256, channel_max=16, batch=4, workers=0, threads=1,
            r1_interval=2, pl_interval=3, ada_interval=2, ada_kimg=0.1, aug_p=0.3, mirror=True, ema_rampup=0.05,
            sample_n=4, log_kimg=0.004, sample_kimg=0.008, checkpoint_kimg=0.008, snapshot_kimg=1.0, synth_n=64)
QUIET = dict(tensorboard=False, progress=False)


def _cli(options: dict) -> list[str]:
    """Options dict -> command-line flags."""
    out = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        else:
            out += [flag, str(v)]
    return out


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def script_main():
    spec = importlib.util.spec_from_file_location("train_generator_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def _assert_identical(a, b, path="state"):
    """Bit-identical nested state (tensors with torch.equal, everything else with ==)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs (max abs diff {(a.double() - b.double()).abs().max().item():.3g})"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _training_state(ckpt: dict) -> dict:
    """Everything in a checkpoint that training produces (not the options, which name the run directory, nor the
    measured CPU / wall time)."""
    return {k: v for k, v in ckpt.items() if k not in ("args", "timing")}


class StopAt(TrainerCallback):
    """Ask for a clean stop (the Ctrl-C path) once ``step`` steps are done."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, values):
        if trainer.step == self.step:
            trainer.request_stop("test stop")


class InjectNaN(TrainerCallback):
    """Turn the G loss of step ``at`` (0-based) into NaN, ``times`` times."""

    def __init__(self, at, times=1):
        self.at, self.times = at, times

    def on_losses(self, trainer, losses):
        if trainer.step - 1 == self.at and self.times > 0:  # trainer.step already counts the step just run
            self.times -= 1
            losses["G"] = losses["G"] * float("nan")


def _image_folder(root: Path) -> Path:
    """Eight small images of mixed sizes and modes in nested folders, plus a non-image file."""
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True)
    for i in range(8):
        h, w = (20, 28) if i % 2 else (24, 24)
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        sub = root / ("a/b" if i % 3 == 0 else "a" if i % 3 == 1 else "")
        img = Image.fromarray(arr)
        if i == 5:
            img.convert("L").save(sub / f"img{i}.jpg")
        else:
            img.save(sub / f"img{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------------------------------- pieces
def test_sampler_shards_the_global_order_and_resumes():
    full = InfiniteSampler(10, seed=3)
    it = iter(full)
    order = [next(it) for _ in range(40)]
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))  # epochs are permutations
    assert order[:10] != order[10:20]
    shards = [iter(InfiniteSampler(10, seed=3, rank=r, world_size=2)) for r in range(2)]
    merged = [next(shards[i % 2]) for i in range(40)]
    assert merged == order  # rank r takes positions r, r + W, ...: the global batch split r::W
    resumed = iter(InfiniteSampler(10, seed=3, start=18))
    assert [next(resumed) for _ in range(22)] == order[18:]


def test_sharded_random_slices_one_global_stream():
    whole = ShardedRandom(7).randn(6, 3)
    parts = [ShardedRandom(7, rank=r, world_size=3).randn(6, 3) for r in range(3)]
    for r in range(3):
        assert torch.equal(parts[r], whole[r::3])
    a = ShardedRandom(7)
    a.randn(5)
    state = a.state_dict()
    x = a.randn(4)
    b = ShardedRandom(0)
    assert b.load_state_dict(state)
    assert torch.equal(b.randn(4), x)


def test_augment_is_differentiable_and_p_adapts():
    aug = AdaptiveAugment(p=1.0, adaptive=True, target=0.6, speed_kimg=0.1, interval=1)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = aug(x, ShardedRandom(0))
    assert y.shape == x.shape and not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.equal(AdaptiveAugment(p=0.0)(x, ShardedRandom(0)), x)  # p = 0: identity, nothing drawn
    aug.observe(torch.ones(4, 1))  # r_t = 1 > target: p goes up (clamped at 1)
    aug.update(4)
    assert aug.p == 1.0 and aug.last_rt == 1.0
    aug.observe(-torch.ones(4, 1))  # r_t = -1 < target: p goes down by 4 / 100
    aug.update(4)
    assert aug.p == pytest.approx(0.96)


def test_ema_beta_half_life_and_rampup():
    assert ema_beta(32, 10**6, ema_kimg=10) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, 1000, ema_kimg=10, rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 0, ema_kimg=10, rampup=0.05) == 0.0 and ema_beta(4, 100, ema_kimg=0) == 0.0


def test_synthfaces_folder_uses_the_train_split(tmp_path):
    from clcae.data.synthfaces import write_dataset

    write_dataset(tmp_path / "sf", 6, res=16, split="train")
    write_dataset(tmp_path / "sf", 3, res=16, split="test")
    ds, desc = build_dataset(GANTrainOptions(data=str(tmp_path / "sf"), size=16))
    assert len(ds) == 6 and "train split" in desc
    assert ds[0].shape == (3, 16, 16) and -1 <= ds[0].min() and ds[0].max() <= 1


# ---------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """A 3-step SynthFaces run (on the fly), shared by the tests that need a finished run."""
    out = tmp_path_factory.mktemp("runs") / "synth"
    result = run_training(dict(TINY, data="synthfaces", kimg=0.012, out=str(out)), tensorboard=True, progress=False)
    return out, result


def _check_finished_run(out: Path, result, steps: int):
    assert result.step == steps and result.nimg == steps * 4 and not result.stopped_early
    stats = _stats(out)
    assert [s["step"] for s in stats] == list(range(1, steps + 1))
    for s in stats:
        for k in ("Loss/D", "Loss/G", "Speed/img_per_s"):
            assert isinstance(s[k], float) and math.isfinite(s[k]), (k, s)
    assert any("Loss/r1" in s for s in stats) and any("Loss/pl" in s for s in stats)
    ckpt_path = out / "checkpoints" / "latest.pt"
    ckpt = _load(ckpt_path)
    assert detect_format(ckpt) == "rosinality"  # g / d / g_ema keys: what the ecosystem loads
    for key in ("g", "d", "g_ema", "g_optim", "d_optim", "latent_avg", "step", "kimg", "args", "g_kwargs",
                "d_kwargs", "rng", "sampler", "augment", "pl_mean", "train_format", "train_format_version"):
        assert key in ckpt, key
    assert ckpt["step"] == steps and ckpt["g_kwargs"]["channel_base"] == 256
    G = clcae.load_generator(ckpt_path)
    assert G.latent_avg_source == "file" and torch.equal(G.latent_avg, ckpt["latent_avg"])
    with torch.no_grad():
        img = G(torch.randn(2, 32), noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    for k, v in G.state_dict().items():
        assert torch.equal(v, ckpt["g_ema"][k])
    D = load_discriminator(ckpt_path)
    assert torch.isfinite(D(img)).all()
    options = json.loads((out / "options.json").read_text())
    assert options["options"]["size"] == 16 and options["run"]["world_size"] == 1
    assert (out / "samples" / "reals.png").is_file() and (out / "samples" / "fakes-init.png").is_file()


def test_trains_on_synthfaces_and_writes_rosinality_checkpoints(synth_run):
    out, result = synth_run
    _check_finished_run(out, result, steps=3)
    assert list((out / "tensorboard").iterdir())  # TensorBoard event file
    snaps = sorted(p.name for p in (out / "checkpoints").glob("snapshot-*.pt"))
    assert snaps == ["snapshot-000000.012kimg.pt"]  # the final snapshot


def test_trains_on_an_image_folder(tmp_path):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    result = run_training(dict(TINY, data=str(data), kimg=0.012, out=str(out)), **QUIET)
    _check_finished_run(out, result, steps=3)
    assert "8 images" in json.loads((out / "options.json").read_text())["run"]["data"]


def test_in_process_stop_and_resume_is_bit_identical(tmp_path):
    opts = dict(TINY, data="synthfaces", kimg=0.028)  # 7 steps; stop after 3, resume to 7
    full = run_training(dict(opts, out=str(tmp_path / "full")), **QUIET)
    part = run_training(dict(opts, out=str(tmp_path / "part")), callbacks=[StopAt(3)], **QUIET)
    assert part.stopped_early and part.step == 3 and part.stop_reason == "test stop"
    assert _load(tmp_path / "part" / "checkpoints" / "latest.pt")["step"] == 3
    step3 = tmp_path / "step3.pt"  # a checkpoint file outside any run directory
    step3.write_bytes((tmp_path / "part" / "checkpoints" / "latest.pt").read_bytes())
    resumed = run_training({}, resume=str(tmp_path / "part"), **QUIET)  # options come from the checkpoint
    assert resumed.step == full.step == 7
    a = _load(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = _load(tmp_path / "part" / "checkpoints" / "latest.pt")
    assert a["augment"]["p"] != TINY["aug_p"]  # ADA moved p, so its state is part of what must match
    _assert_identical(_training_state(a), _training_state(b))
    # a fork: resume a loose checkpoint file into a new run directory
    forked = run_training({"out": str(tmp_path / "fork")}, resume=str(step3), **QUIET)
    assert forked.step == 7 and (tmp_path / "fork" / "options.json").is_file()
    _assert_identical(_training_state(a), _training_state(_load(tmp_path / "fork" / "checkpoints" / "latest.pt")))
    # the logged losses after the resume point match too
    sa = {s["step"]: s for s in _stats(tmp_path / "full")}
    sb = {s["step"]: s for s in _stats(tmp_path / "part")}
    for step in range(4, 8):
        assert sa[step]["Loss/D"] == sb[step]["Loss/D"] and sa[step]["Loss/G"] == sb[step]["Loss/G"]
    assert (tmp_path / "part" / "options-resume-1.json").is_file()


def test_nan_loss_stops_with_the_step(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as err:
        run_training(dict(TINY, data="synthfaces", kimg=0.04, out=str(out)), callbacks=[InjectNaN(at=2)], **QUIET)
    assert err.value.step == 2 and "step 2" in str(err.value) and math.isnan(err.value.losses["G"])
    assert "--resume" in str(err.value)
    latest = _load(out / "checkpoints" / "latest.pt")
    assert latest["step"] == 2  # the last good state; the NaN step was never saved
    assert all(torch.isfinite(v).all() for v in latest["g"].values())
    assert "non-finite loss at step 2" in (out / "log.txt").read_text()


def test_nan_loss_rollback_reloads_and_continues(tmp_path):
    out = tmp_path / "rollback"
    result = run_training(dict(TINY, data="synthfaces", kimg=0.016, on_nan="rollback", out=str(out)),
                          callbacks=[InjectNaN(at=2)], **QUIET)
    assert result.step == 4 and result.rollbacks == 1 and not result.stopped_early
    assert "rollback 1/3" in (out / "log.txt").read_text()
    assert _load(out / "checkpoints" / "latest.pt")["rollbacks"] == 1
    with pytest.raises(NonFiniteLossError):  # a NaN that keeps coming back exhausts the rollbacks
        run_training(dict(TINY, data="synthfaces", kimg=0.016, on_nan="rollback", max_rollbacks=1,
                          out=str(tmp_path / "again")), callbacks=[InjectNaN(at=2, times=5)], **QUIET)


def test_diffaugment_translation_and_cutout_in_closed_form():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8) + 1  # no zero pixel
    stream = ShardedRandom(5)
    twin = ShardedRandom(5)
    y = DiffAugment("translation")(x, stream)
    ty, tx = twin.randint(-1, 2, 2), twin.randint(-1, 2, 2)  # ratio 1/8 of 8 px: shifts in -1..1
    for i in range(2):
        dy, dx = int(ty[i]), int(tx[i])
        want = torch.zeros(8, 8)
        for r in range(8):
            for c in range(8):
                if 0 <= r - dy < 8 and 0 <= c - dx < 8:
                    want[r, c] = x[i, 0, r - dy, c - dx]
        assert torch.equal(y[i, 0], want), (dy, dx)
    x = x.requires_grad_(True)
    y = DiffAugment("cutout")(x, stream)
    cy, cx = twin.randint(0, 9, 2), twin.randint(0, 9, 2)  # a 4x4 square at a centre in 0..8, clipped
    for i in range(2):
        rows = [r for r in range(8) if int(cy[i]) - 2 <= r < int(cy[i]) + 2]
        cols = [c for c in range(8) if int(cx[i]) - 2 <= c < int(cx[i]) + 2]
        assert int((y[i] == 0).sum()) == len(rows) * len(cols)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float())  # differentiable: gradient 1 where the pixel survives
    colour = DiffAugment("color")(torch.zeros(3, 3, 4, 4), ShardedRandom(0))  # grey images: only brightness moves
    assert colour.abs().max() <= 0.5 and torch.equal(colour, colour[:, :1].expand_as(colour))
    assert parse_diffaug_policy("cutout, color") == ("color", "cutout") and parse_diffaug_policy("") == ()
    for bad in ("colour", "color,color"):
        with pytest.raises(ValueError):
            parse_diffaug_policy(bad)


@pytest.fixture(scope="module")
def tiny_domain_net(tmp_path_factory):
    """A random 16 px DomainNet file (two stages: 8 and 4 px maps) standing in for the shipped one."""
    torch.manual_seed(0)
    net = DomainNet(input_size=16, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8, attr_reduce=4,
                    attr_hidden=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from train mode
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("domain") / "domain_net.pt"
    save_domain_net(net, path)
    return path, net


def test_projected_discriminator_keeps_its_trunk_frozen(tiny_domain_net):
    _, net = tiny_domain_net
    D = ProjectedDiscriminator(16, net.config, mixing="ccm_csm", width=8).load_feature_weights(net)
    D.train().requires_grad_(True)
    assert not D.features.training and not any(p.requires_grad for p in D.features.parameters())
    assert {id(p) for p in D.trainable_parameters()} == {id(p) for p in D.heads.parameters()}
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(x)
    assert logits.shape == (4, 5 * 5 + 1)  # an 8 px map -> 5x5 logits, a 4 px map -> 1
    logits.sum().backward()
    assert x.grad.abs().sum() > 0  # gradients reach the images through the frozen trunk
    assert all(p.grad is None for p in D.features.parameters())
    # the frozen trunk gives the domain network's own stage maps
    maps = net.eval().trunk_features(x.detach())
    D0 = ProjectedDiscriminator(16, net.config, mixing="none", width=8).load_feature_weights(net)
    for a, b in zip(D0.feature_maps(x.detach()), maps[1:]):
        torch.testing.assert_close(a, b)


def test_projected_d_with_diffaug_resumes_bit_identically(tmp_path, tiny_domain_net):
    path, net = tiny_domain_net
    opts = dict(TINY, data="synthfaces", kimg=0.024, d_arch="projected", proj_net=str(path), proj_mixing="ccm_csm",
                proj_width=8, diffaug="color,translation,cutout", aug="none", r1=0.5)  # 6 steps; stop after 3
    full = run_training(dict(opts, out=str(tmp_path / "full")), **QUIET)
    part = run_training(dict(opts, out=str(tmp_path / "part")), callbacks=[StopAt(3)], **QUIET)
    assert part.stopped_early and part.step == 3
    moved = tmp_path / "moved.pt"  # the feature network may move (it is recognised by its fingerprint) ...
    moved.write_bytes(path.read_bytes())
    other = tmp_path / "other.pt"  # ... but not change
    torch.manual_seed(1)
    save_domain_net(DomainNet(**net.config), other)
    with pytest.raises(clcae.checkpoints.CheckpointError, match="different network"):
        run_training({"proj_net": str(other)}, resume=str(tmp_path / "part"), **QUIET)
    resumed = run_training({"proj_net": str(moved)}, resume=str(tmp_path / "part"), **QUIET)
    assert resumed.step == full.step == 6
    a = _load(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = _load(tmp_path / "part" / "checkpoints" / "latest.pt")
    fingerprint = a.pop("d_feature_net")["sha256"]
    assert b.pop("d_feature_net")["sha256"] == fingerprint  # (the file names differ)
    _assert_identical(_training_state(a), _training_state(b))
    assert a["d_kwargs"]["kind"] == "projected" and a["args"]["diffaug"] == "color,translation,cutout"
    assert not any(k.startswith("features.") for k in a["d"])  # the frozen trunk is not copied into checkpoints
    D = ProjectedDiscriminator(16, net.config, "ccm_csm", 8).load_feature_weights(net)
    assert fingerprint == D.feature_fingerprint()
    # an older checkpoint that still holds the trunk in d loads when the trunk is the same, bit for bit
    D.load_state_dict(D.strip_feature_state(dict(a["d"], **{f"features.{k}": v for k, v in
                                                           D.features.state_dict().items()})))
    with pytest.raises(ValueError, match="differs"):
        D.strip_feature_state({"features.stem.0.weight": torch.zeros_like(D.features.stem[0].weight)})
    head_params = sum(p.numel() for p in ProjectedDiscriminator(16, net.config, "ccm_csm", 8).heads.parameters())
    assert sum(s["exp_avg"].numel() for s in a["d_optim"]["state"].values()) == head_params  # only heads train
    G = clcae.load_generator(tmp_path / "full" / "checkpoints" / "latest.pt")  # still a generator checkpoint
    assert G(torch.randn(1, 32)).shape == (1, 3, 16, 16)
    # CPU and wall time of the training steps: in the checkpoint (summed over sessions) and in the stats
    assert 0 < a["timing"]["train_cpu_s"] and 0 < a["timing"]["train_wall_s"]
    cpu = [s["Time/train_cpu_s"] for s in _stats(tmp_path / "part")]  # both sessions: the resume adds to the total
    assert len(cpu) == 6 and cpu == sorted(cpu) and cpu[0] > 0 and b["timing"]["train_cpu_s"] == cpu[-1]
    with pytest.raises(ConfigError, match="^proj_net .*absent.pt: no such file"):
        run_training(dict(opts, proj_net=str(tmp_path / "absent.pt"), out=str(tmp_path / "bad")), **QUIET)


def test_named_generator_configs(tmp_path, script_main, tiny_domain_net):
    shipped = sorted(p.stem for p in (ROOT / "configs").glob("generator_*.yaml"))
    assert shipped, "no named generator recipe in configs/"
    for name in shipped:
        opts = GANTrainOptions(**load_generator_config(name))
        opts.validate()
    mine = tmp_path / "recipe.yaml"
    mine.write_text("size: 16\nstyle_dim: 32\nn_mlp: 2\nchannel_base: 256\nchannel_max: 16\nbatch: 4\n"
                    "diffaug: color,cutout\nd_arch: projected\nproj_net: nets/dn.pt\nkimg: 0.008\n")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "dn.pt").write_bytes(tiny_domain_net[0].read_bytes())
    got = load_generator_config(mine)
    assert got["proj_net"] == str(tmp_path / "nets" / "dn.pt")  # relative to the config file
    out = tmp_path / "run"
    rc = script_main(["--config", str(mine), "--data", "synthfaces", "--synth-n", "16", "--batch", "8",
                      "--workers", "0", "--threads", "1", "--sample-n", "0", "--no-tensorboard", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "options.json").read_text())["options"]
    assert saved["batch"] == 8 and saved["diffaug"] == "color,cutout" and saved["d_arch"] == "projected"
    (tmp_path / "typo.yaml").write_text("sise: 16\n")
    with pytest.raises(ConfigError, match="sise"):
        load_generator_config(tmp_path / "typo.yaml")
    assert script_main(["--config", str(mine), "--resume", str(out)]) == 2


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_fail_fast_with_a_fix(tmp_path, capsys, script_main, synth_run, monkeypatch):
    base = ["--data", "synthfaces", "--workers", "0"]
    synth_out, _ = synth_run
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    G = Generator(16, 32, 2, channel_base=256, channel_max=16)
    save_generator(G, tmp_path / "generator.pt")
    cases = [
        (["--size", "48", "--out", str(tmp_path / "o1")], "--size must be a power of two"),
        (["--size", "8", "--out", str(tmp_path / "o2")], "synthfaces renders at >= 16 px"),
        (["--size", "64", "--channel-base", "32", "--out", str(tmp_path / "o3")], "use --channel-base >= 64"),
        (["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o4")], "no image"),
        (["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o5")], "no such folder"),
        (["--size", "16", "--out", str(tmp_path / "taken")], "already exists and is not empty"),
        (["--size", "16"], "--out is required"),
        (["--resume", str(synth_out), "--size", "32", "--lr", "0.001"], "--size: checkpoint has 16, you passed 32"),
        (["--resume", str(tmp_path / "generator.pt"), "--out", str(tmp_path / "o6")], "training checkpoint"),
        (["--resume", str(tmp_path / "nothing.pt")], "no such file"),
        (["--resume", str(tmp_path / "empty")], "has no checkpoints/latest.pt"),
    ]
    errors = []
    for argv, message in cases:
        t0 = time.perf_counter()
        rc = script_main(base + argv)
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert message in err, (argv, err)
        assert time.perf_counter() - t0 < 10, argv  # before any training work
        errors.append(err)
    assert "--lr: checkpoint has 0.002, you passed 0.001" in errors[7]  # every conflict is listed at once
    for name in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / name).exists()  # nothing created
    monkeypatch.setenv("WORLD_SIZE", "2")  # the global batch must split over the processes
    assert script_main(base + ["--size", "16", "--batch", "3", "--out", str(tmp_path / "o7")]) == 2
    assert "divisible by the number of processes (2)" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SystemExit) as e:  # argparse rejects unknown choices itself
        script_main(base + ["--aug", "sometimes"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------------------------------- processes
def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {path.name} appeared:\n"
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigint_then_sigkill_then_resume_is_bit_identical(tmp_path):
    """A real process: Ctrl-C saves and exits 130; a resumed process is SIGKILLed after a checkpoint; resuming
    again ends bit-identical to an uninterrupted run."""
    opts = dict(TINY, data="synthfaces", kimg=0.1, snapshot_kimg=0.008, sample_kimg=1.0, log_kimg=0.02)  # 25 steps
    full = run_training(dict(opts, out=str(tmp_path / "full")), **QUIET)
    assert full.step == 25
    out = tmp_path / "killed"
    snap = out / "checkpoints"
    cmd = [sys.executable, str(SCRIPT), "--no-tensorboard"]
    proc = subprocess.Popen(cmd + _cli(dict(opts, out=str(out))), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(snap / "snapshot-000000.008kimg.pt", proc)  # step 2 done: the loop (and the handler) is running
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log
    assert "SIGINT received" in log and f"--resume {out}" in log and "Traceback" not in log
    stopped = _load(snap / "latest.pt")["step"]
    assert 2 <= stopped < 25

    proc = subprocess.Popen(cmd + ["--resume", str(out)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    target = snap / f"snapshot-{(stopped // 2 + 1) * 2 * 4 / 1000:010.3f}kimg.pt"  # the next snapshot
    _wait_for(target, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _load(snap / "latest.pt")["step"]  # atomic writes: latest.pt is always a whole file
    assert stopped < killed_at < 25, "the process was not killed mid-run; make the run longer"

    resumed = run_training({}, resume=str(out), **QUIET)
    assert resumed.step == 25
    _assert_identical(_training_state(_load(tmp_path / "full" / "checkpoints" / "latest.pt")),
                      _training_state(_load(snap / "latest.pt")))


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """2 gloo processes split a global batch of 8 (4 each): per-step losses equal the 1-process run's up to float
    rounding, the final weights agree to 1e-5, and only rank 0 writes."""
    opts = dict(TINY, data="synthfaces", batch=8, kimg=0.016, log_kimg=0.008, checkpoint_kimg=1.0, ada_interval=1)
    single = run_training(dict(opts, out=str(tmp_path / "single")), **QUIET)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    proc = subprocess.run(cmd + _cli(dict(opts, out=str(out))), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished:") == 1  # only rank 0 reports
    run = json.loads((out / "options.json").read_text())["run"]
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    # rank 0 alone writes: one line per log point, one TensorBoard file, each message once
    ddp_stats, single_stats = _stats(out), _stats(tmp_path / "single")
    assert [s["step"] for s in ddp_stats] == [1, 2] == [s["step"] for s in single_stats]
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert (out / "log.txt").read_text().count("done: 2 steps") == 1
    for a, b in zip(ddp_stats, single_stats):
        for key in ("Loss/D", "Loss/G", "Loss/r1", "Loss/pl", "Scores/real", "Scores/fake", "ADA/p"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert single.step == 2
    a = _load(out / "checkpoints" / "latest.pt")
    b = _load(tmp_path / "single" / "checkpoints" / "latest.pt")
    assert a["world_size"] == 2 and len(a["rng"]["ranks"]) == 2
    for net in ("g", "d", "g_ema"):
        for k in b[net]:
            torch.testing.assert_close(a[net][k], b[net][k], rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")


_DEAD_RANK = """
import os, sys
from clcae import distributed as du
info = du.init_distributed("cpu", timeout_s=30)
if info.rank == 1:
    os._exit(0)  # dies without a word, like a crashed or OOM-killed worker
try:
    du.barrier("after setup", timeout_s=3)
except du.DistributedError as e:
    print("CAUGHT:", e)
    sys.exit(3)
print("NO ERROR")
"""


@pytest.mark.slow
def test_barrier_fails_with_a_message_when_a_rank_is_dead():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-c", _DEAD_RANK], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    t0 = time.time()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert procs[1].returncode == 0
    assert procs[0].returncode == 3, outs[0]
    assert "CAUGHT: rank 0: barrier 'after setup' failed or timed out" in outs[0]
    assert time.time() - t0 < 100
