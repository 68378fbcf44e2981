"""Encoder training (scripts/train.py): every method and stage on tiny networks, on CPU.

A 32 px generator (style_dim 32) and a tiny IR-SE-18 trunk stand in for the real networks; CLCAE injects f at
index 3 (8x8), which a 32 px input's 8x8 p1 map reaches without downsampling.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from clcae.checkpoints import load_contrastive_encoder, load_file, load_inverter, save_generator
from clcae.networks.stylegan2 import Generator
from clcae.training.encoder_options import EncoderTrainOptions
from clcae.training.encoder_loop import build_task, resolve_encoder_options, run_encoder_training
from clcae.training.options import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(input_size="32", num_layers=18, widths="8,8,16,24", nhead=2, dim_feedforward=32, projection_dim=16,
            idx_k=3, val_n=4, synth_n=64, perceptual="none", identity="none", threads=1, log_interval=1,
            image_interval=2, sample_n=2, optimizer="adam", lr=1e-3)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    G = Generator(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    G.latent_avg.copy_(G.mean_latent(256))
    path = tmp_path_factory.mktemp("gen") / "g.pt"
    save_generator(G, path)
    return path


def _opts(generator_file, **kw) -> dict:
    return dict(TINY, generator=str(generator_file), **kw)


def _train(**given):
    return run_encoder_training(given, tensorboard=False, progress=False)


def test_align_stage_trains_and_exports_official_layout(generator_file, tmp_path):
    res = _train(**_opts(generator_file, stage="align", data="generate", pairs_n=32, batch=4, steps=3,
                         val_interval=3, save_interval=3, out=str(tmp_path / "align")))
    assert res.step == 3 and res.best_step == 3
    assert {"loss", "i2l_top1", "l2i_top1", "i2l_top5", "l2i_top5"} <= set(res.last_val)
    ckpt = tmp_path / "align" / "checkpoints"
    e_i = load_contrastive_encoder(ckpt / "best_model_image.pt")
    e_w = load_contrastive_encoder(ckpt / "best_model_latent.pt")
    assert tuple(e_i.config["input_size"]) == (32, 32)
    raw = load_file(ckpt / "best_model_image.pt")
    assert set(raw) == {"state_dict", "opts"} and "logit_scale" in raw["state_dict"]
    x = torch.randn(2, 3, 32, 32)
    assert e_i(x).shape == (2, 16) and e_w(torch.randn(2, 32)).shape == (2, 16)
    assert (tmp_path / "align" / "samples").is_dir()
    stats = [json.loads(line) for line in (tmp_path / "align" / "stats.jsonl").read_text().splitlines()]
    assert any("Val/i2l_top1" in s for s in stats)
    assert all(s["nimg"] == s["step"] * 4 for s in stats)  # the x axis counts images (batch 4), as in GAN training


def test_clcae_stage2_from_stage1_and_load_inverter(generator_file, tmp_path):
    _train(**_opts(generator_file, stage="align", data="generate", pairs_n=16, batch=4, steps=1, val_interval=1,
                   out=str(tmp_path / "align")))
    res = _train(**_opts(generator_file, method="clcae", stage="invert", data="synthfaces", batch=2, steps=2,
                         val_interval=2, save_interval=1, contrastive_image=str(tmp_path / "align"),
                         out=str(tmp_path / "inv")))
    assert res.best_step == 2
    assert {"l2_wplus_f", "l2_wplus", "l2_w", "feature_matching", "align"} <= set(res.last_values)
    inv = load_inverter(tmp_path / "inv" / "checkpoints" / "best_model.pt")
    out = inv.invert(torch.zeros(1, 3, 32, 32))
    assert out["wplus"].shape == (1, inv.n_latent, 32) and out["f"].shape[-2:] == (8, 8)
    assert out["image_wplus_f"].shape == (1, 3, 32, 32)
    # the stage-2 trunk started from the stage-1 image encoder (then trained 2 steps: close, not equal)
    log = (tmp_path / "inv" / "log.txt").read_text()
    assert "initialised from" in log


@pytest.mark.parametrize("method", ["clcae", "psp", "e4e"])
def test_steps_reduce_the_loss_on_a_fixed_batch(generator_file, method):
    extra = dict(contrastive_lambda=0.0, stage2_init="none") if method == "clcae" else {}
    if method == "e4e":
        extra = dict(progressive_start=0, progressive_every=2)
    opts, _, _ = resolve_encoder_options(_opts(generator_file, method=method, data="synthfaces", batch=4,
                                               train_noise="const", flip=False, **extra))
    opts.validate()
    torch.manual_seed(0)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    batch = torch.stack([task.train_dataset[i] for i in range(4)])
    losses = [float(task.train_step(batch, step)["loss"]) for step in range(25)]
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("steps, stage", [(3, 3), (12, None)])
def test_exported_e4e_loads_at_the_stage_it_reached(generator_file, tmp_path, steps, stage):
    """The best e4e model is saved at the progressive stage its validation ran at (schedule(step); None: every delta
    on, the trained state) and loads back so; an exported e4e once loaded at stage 0 (its construction-time stage),
    silently dropping its deltas."""
    out = tmp_path / "e4e"
    _train(**_opts(generator_file, method="e4e", data="synthfaces", batch=2, steps=steps, val_interval=steps,
                   save_interval=steps, progressive_start=1, progressive_every=1, out=str(out)))
    inv = load_inverter(out / "checkpoints" / "best_model.pt")
    assert inv.encoder.progressive_stage == stage
    codes = inv.codes(torch.randn(2, 3, 32, 32))
    active = inv.n_latent - 1 if stage is None else stage
    delta = (codes[:, 1:] - codes[:, :1]).abs().flatten(2).amax(-1)  # [B, n_latent - 1]
    assert (delta[:, :active] > 0).all() and (delta[:, active:] == 0).all()


def test_query_grad_detach_keeps_the_outputs_and_cuts_the_cross_attention_path_into_the_w_head(generator_file):
    """--query-grad detach: the same w, W+ and f; the W+ offsets (the cross-attention outputs) no longer send a
    gradient into the w head (styles.0), while G(w)'s loss still does."""
    grads, outs = {}, {}
    for mode in ("full", "detach"):
        opts, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces", batch=2,
                                                   contrastive_lambda=0.0, stage2_init="none", query_grad=mode))
        opts.validate()
        torch.manual_seed(0)
        task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
        x = torch.stack([task.train_dataset[i] for i in range(2)])
        out = task._forward(x, 0, "const", train=True)
        outs[mode] = {k: out[k].detach() for k in ("w", "wplus", "f")}
        head = list(task.inverter.encoder.styles[0].parameters())
        offsets = out["wplus"] - out["w"].unsqueeze(1)
        g_off = torch.autograd.grad(offsets.square().sum() + out["f"].square().sum(), head, retain_graph=True,
                                    allow_unused=True)
        g_w = torch.autograd.grad(task._losses(x, out, 0)["l2_w"], head, allow_unused=True)
        grads[mode] = (sum(0.0 if g is None else float(g.norm()) for g in g_off),
                       sum(0.0 if g is None else float(g.norm()) for g in g_w))
    for k in outs["full"]:
        assert torch.equal(outs["full"][k], outs["detach"][k]), k
    assert grads["full"][0] > 0 and grads["detach"][0] == 0
    assert grads["detach"][1] > 0 and grads["detach"][1] == pytest.approx(grads["full"][1])


def test_residual_feature_branch_starts_at_the_wplus_image_and_loads_back(generator_file, tmp_path):
    """--feature-mode residual: the F branch's correction starts at zero, so W+F == W+ at step 0; feature matching
    is ||f||^2; after training, the loaded inverter's f (= G_k(W+) + correction) re-renders W+F with the replace
    blend, and old (replace) encoders keep their architecture."""
    opts, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces", batch=2,
                                               contrastive_lambda=0.0, stage2_init="none", feature_mode="residual",
                                               feature_ramp="none"))
    opts.validate()
    torch.manual_seed(0)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    assert task.inverter.encoder.feature_residual and hasattr(task.inverter.encoder, "feature_delta")
    x = torch.stack([task.train_dataset[i] for i in range(2)])
    out = task._forward(x, 0, "const", train=True)
    assert torch.equal(out["image_wplus_f"], out["image_wplus"]) and float(out["f"].detach().abs().max()) == 0
    terms = task._losses(x, out, 0)
    assert float(terms["feature_matching"]) == 0
    res = _train(**_opts(generator_file, method="clcae", stage="invert", data="synthfaces", batch=2, steps=3,
                         val_interval=3, save_interval=3, contrastive_lambda=0.0, stage2_init="none", lr=1e-2,
                         feature_mode="residual", out=str(tmp_path / "res")))
    assert res.step == 3
    inv = load_inverter(tmp_path / "res" / "checkpoints" / "best_model.pt")
    assert inv.encoder.feature_residual
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        o = inv.invert(x)
        assert float(o["f_delta"].abs().max()) > 0  # trained away from zero
        torch.testing.assert_close(o["f"], o["f_gen"] + o["f_delta"])
        again = inv.decoder.synthesis(o["wplus"], noise_mode="const", features_in={inv.idx_k: o["f"]})
        torch.testing.assert_close(again, o["image_wplus_f"], rtol=1e-4, atol=1e-5)
        half = inv.decoder.synthesis(o["wplus"], noise_mode="const", features_in={inv.idx_k: o["f_delta"]},
                                     feature_scale=0.5, feature_mode="add")
        torch.testing.assert_close(half, inv.decoder.synthesis(o["wplus"], noise_mode="const", feature_scale=0.5,
                                                               features_in={inv.idx_k: o["f"]}), rtol=1e-4,
                                   atol=1e-5)
        only_w = inv.invert(x, images=("w",))  # f needs G_k(W+) even when no W+ image is asked for
        torch.testing.assert_close(only_w["f"], o["f"])
    plain, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces",
                                                contrastive_lambda=0.0, stage2_init="none"))
    plain.validate()
    assert plain.feature_mode == "replace"
    enc = build_task(plain, torch.device("cpu"), 0, 1, lambda m: None).inverter.encoder
    assert not enc.feature_residual and "feature_residual" not in enc.config


def test_wplus_offset_gain_sets_the_initial_size_of_the_wplus_offsets(generator_file, tmp_path):
    """--wplus-offset-gain G: every W+ cross-attention layer's last LayerNorm starts at gain G and bias 0, so the
    offsets W+ - w start with norm G * sqrt(style_dim) exactly (G = 0: W+ = w); the gains learn; -1 (default) keeps
    the official initialisation; a negative gain other than -1 is refused."""
    sizes = {}
    for gain in (0.0, 0.25):
        opts, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces", batch=2,
                                                   contrastive_lambda=0.0, stage2_init="none", feature_ramp="none",
                                                   wplus_offset_gain=gain))
        opts.validate()
        torch.manual_seed(0)
        task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
        enc = task.inverter.encoder
        assert all(torch.equal(ca.norm3.weight, torch.full_like(ca.norm3.weight, gain)) for ca in enc.cross_attention)
        x = torch.stack([task.train_dataset[i] for i in range(2)])
        out = task._forward(x, 0, "const", train=False)
        offsets = out["wplus"] - out["w"].unsqueeze(1)
        sizes[gain] = offsets.norm(dim=-1)
        terms = task._losses(x, out, 0)
        terms["loss"].backward()
        assert any(float(ca.norm3.weight.grad.abs().max()) > 0 for ca in enc.cross_attention)
    d = out["w"].shape[-1]
    assert float(sizes[0.0].max()) == 0
    # LayerNorm output has RMS 1 per element (up to its eps), so the offset norm is gain * sqrt(D)
    torch.testing.assert_close(sizes[0.25], torch.full_like(sizes[0.25], 0.25 * d ** 0.5), rtol=1e-3, atol=1e-3)
    res = _train(**_opts(generator_file, method="clcae", stage="invert", data="synthfaces", batch=2, steps=3,
                         val_interval=3, save_interval=3, contrastive_lambda=0.0, stage2_init="none", lr=1e-2,
                         wplus_offset_gain=0.25, out=str(tmp_path / "g")))
    assert res.step == 3
    inv = load_inverter(tmp_path / "g" / "checkpoints" / "best_model.pt")
    assert any(not torch.equal(ca.norm3.weight, torch.full_like(ca.norm3.weight, 0.25))
               for ca in inv.encoder.cross_attention)
    plain, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces",
                                                contrastive_lambda=0.0, stage2_init="none"))
    plain.validate()
    assert plain.wplus_offset_gain == -1
    enc = build_task(plain, torch.device("cpu"), 0, 1, lambda m: None).inverter.encoder
    # the official initialisation draws LayerNorm gains from N(1, 0.02)
    assert all(abs(float(ca.norm3.weight.mean()) - 1) < 0.05 for ca in enc.cross_attention)
    bad, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces",
                                              contrastive_lambda=0.0, stage2_init="none", wplus_offset_gain=-0.5))
    with pytest.raises(Exception, match="^wplus_offset_gain must be -1"):
        bad.validate()


def test_resume_is_bit_identical(generator_file, tmp_path):
    common = _opts(generator_file, method="e4e", data="synthfaces", batch=2, val_interval=2, save_interval=2,
                   progressive_start=1, progressive_every=1)
    _train(**common, steps=4, out=str(tmp_path / "straight"))
    _train(**common, steps=2, out=str(tmp_path / "split"))
    run_encoder_training({"steps": 4}, resume=tmp_path / "split", tensorboard=False, progress=False)
    a = load_file(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_file(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 4
    for name in a["task"]["modules"]:
        for k, v in a["task"]["modules"][name].items():
            assert torch.equal(v, b["task"]["modules"][name][k]), (name, k)


def test_dry_run_writes_nothing(generator_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _train(**_opts(generator_file, method="psp", data="synthfaces", batch=2, dry_run=True))
    assert "loss" in res.last_values and "loss" in res.last_val
    assert list(tmp_path.iterdir()) == []


def test_bad_options_fail_before_work(generator_file, tmp_path):
    with pytest.raises(ConfigError, match="^stage align is CLCAE"):
        _train(**_opts(generator_file, method="psp", stage="align", data="generate", out=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="^contrastive_image is required"):
        _train(**_opts(generator_file, method="clcae", data="synthfaces", out=str(tmp_path / "y")))
    with pytest.raises(ConfigError, match="^input_size must be multiples of 16"):
        _train(**_opts(generator_file, method="psp", data="synthfaces", input_size="30", out=str(tmp_path / "z")))
    with pytest.raises(ConfigError, match="unknown option"):
        _train(**_opts(generator_file, method="psp", data="synthfaces", bogus=1))
    with pytest.raises(ConfigError, match="^idx_k "):
        _train(**_opts(generator_file, method="clcae", data="synthfaces", idx_k=5, contrastive_lambda=0.0,
                       stage2_init="none", out=str(tmp_path / "w")))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_shipped_configs_are_valid():
    names = {f.name for f in __import__("dataclasses").fields(EncoderTrainOptions)}
    for cfg in ("synthfaces64", "ffhq1024", "cars512"):
        for method, stage in (("clcae", "align"), ("clcae", "invert"), ("psp", "invert"), ("e4e", "invert")):
            merged = load_config(cfg, method, stage, known=names)
            EncoderTrainOptions(**{**merged, "method": method, "stage": stage})
    assert load_config("synthfaces64", "clcae", "align")["batch"] == 64
    assert load_config("ffhq1024", "psp", "invert")["lpips_lambda"] == 0.8


def test_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch: 4\nmethods:\n  psp: {lr_typo: 1}\n")
    with pytest.raises(ConfigError, match="lr_typo"):
        load_config(bad, "psp", "invert", known=["batch", "lr"])


def test_train_script_help_lists_every_option():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.build_parser().format_help()
    for f in __import__("dataclasses").fields(EncoderTrainOptions):
        assert "--" + f.name.replace("_", "-") in text


def _stats(run: Path) -> list[dict]:
    return [s for s in (json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines())
            if "Loss/loss" in s]


@pytest.mark.slow
@pytest.mark.parametrize("stage,method", [("align", "clcae"), ("invert", "psp")])
def test_torchrun_two_processes_match_one_process(generator_file, tmp_path, stage, method):
    """2 gloo processes on a global batch of 4: the same per-step losses and weights as one process (randomness
    switched off: constant noise, no flips, no dropout); only rank 0 writes."""
    import os
    import subprocess
    import sys

    opts = _opts(generator_file, method=method, stage=stage, batch=4, steps=2, val_interval=2, save_interval=2,
                 dropout=0.0, flip=False, train_noise="const")
    opts["data"] = "generate" if stage == "align" else "synthfaces"
    opts["pairs_n"] = 16
    _train(**dict(opts, out=str(tmp_path / "single")))
    cli = []
    for k, v in dict(opts, out=str(tmp_path / "ddp")).items():
        flag = "--" + k.replace("_", "-")
        cli += ([flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [flag, str(v)])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "scripts" / "train.py"), "--no-tensorboard"] + cli
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished:") == 1
    a, b = _stats(tmp_path / "ddp"), _stats(tmp_path / "single")
    assert [s["step"] for s in a] == [s["step"] for s in b] == [1, 2]
    # step 1 agrees to float rounding; Adam's normalised update amplifies last-bit gradient differences after it
    assert a[0]["Loss/loss"] == pytest.approx(b[0]["Loss/loss"], rel=1e-5, abs=1e-6)
    assert a[1]["Loss/loss"] == pytest.approx(b[1]["Loss/loss"], rel=1e-3, abs=1e-5)
    sa = load_file(tmp_path / "ddp" / "checkpoints" / "latest.pt")["task"]["modules"]
    sb = load_file(tmp_path / "single" / "checkpoints" / "latest.pt")["task"]["modules"]
    # Parameters whose true gradient is zero (a bias right before a batch norm) get rounding-noise gradients whose
    # sign Adam turns into a full +-lr step (per step), so weights agree to a few lr; the losses are the real check.
    # (Stage 2 too since its encoder runs in channels-last on a CPU: those convolutions round differently for a
    # per-process batch of 2 and of 4, and one such bias, body.0.res_layer.4.bias, moved 1.7e-5 apart.)
    atol = 5 * opts["lr"]
    for name in sb:
        for k, v in sb[name].items():
            if v.is_floating_point():
                torch.testing.assert_close(sa[name][k], v, rtol=1e-3, atol=atol, msg=f"{name}.{k}")


# ---------------------------------------------------------------------------------------------------- --adv-lambda
def _discriminator_state(tmp_path, size=32) -> tuple[Path, "torch.nn.Module"]:
    """A train_generator.py-style training state holding only what load_training_discriminator reads."""
    from clcae.networks.stylegan2 import Discriminator
    from clcae.training.gan import FORMAT_KEY, TRAIN_FORMAT, TRAIN_FORMAT_VERSION

    torch.manual_seed(3)
    D = Discriminator(size, channel_base=256, channel_max=16)
    path = tmp_path / "latest.pt"
    torch.save({FORMAT_KEY: TRAIN_FORMAT, "train_format_version": TRAIN_FORMAT_VERSION, "d": D.state_dict(),
                "d_kwargs": D.config, "args": {"d_arch": "stylegan2"}}, path)
    return path, D


def test_image_adversarial_term_judges_the_result_and_trains_its_discriminator(generator_file, tmp_path):
    from clcae.losses.gan import g_nonsaturating_loss

    d_file, D0 = _discriminator_state(tmp_path)
    opts, _, _ = resolve_encoder_options(_opts(generator_file, method="clcae", data="synthfaces", batch=2,
                                               contrastive_lambda=0.0, stage2_init="none", train_noise="const",
                                               flip=False, adv_lambda=0.5, adv_d=str(d_file), d_reg_every=2))
    opts.validate()
    torch.manual_seed(0)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    D = task.trainable["image_discriminator"]
    assert all(torch.equal(v, D0.state_dict()[k]) for k, v in D.state_dict().items())  # started from the file
    batch = torch.stack([task.train_dataset[i] for i in range(2)])
    task.inverter.encoder.train()
    out = task._forward(batch, 0, "const", train=True)
    terms = task._losses(batch, out, 0)
    want = g_nonsaturating_loss(D(out["image_wplus_f"]))      # the W+F image, CLCAE's result
    assert torch.allclose(terms["adv"], want)
    without = {k: v for k, v in terms.items() if k not in ("adv", "loss")}
    rest = sum(float(v.detach()) * _weight(opts, k) for k, v in without.items())
    assert float(terms["loss"]) == pytest.approx(rest + 0.5 * float(want), rel=1e-5)
    logs = [task.train_step(batch, step) for step in range(3)]
    assert "adv_r1" in logs[0] and "adv_r1" not in logs[1] and "adv_r1" in logs[2]   # lazy R1, every 2 D steps
    assert all("adv_d" in lg and "adv" in lg for lg in logs)
    assert any(not torch.equal(v, D0.state_dict()[k]) for k, v in D.state_dict().items())  # D trained
    assert task.image_d_steps == 3 and task.extra_state()["image_d_steps"] == 3
    assert "adv" not in task.validate(iter([batch]))   # the validation loss (best checkpoint) leaves it out


def _weight(opts, term: str) -> float:
    """The weight of a logged loss term in the tiny CLCAE run above (no perceptual, identity or alignment term)."""
    return {"feature_matching": opts.feature_matching_lambda}.get(term, opts.l2_lambda if term.startswith("l2_")
                                                                  else 0.0)


def test_adversarial_run_resumes_bit_identically_and_refuses_a_wrong_discriminator(generator_file, tmp_path):
    d_file, _ = _discriminator_state(tmp_path)
    common = _opts(generator_file, method="psp", data="synthfaces", batch=2, val_interval=2, save_interval=2,
                   adv_lambda=0.1, adv_d=str(d_file), d_reg_every=2)
    _train(**common, steps=4, out=str(tmp_path / "straight"))
    _train(**common, steps=2, out=str(tmp_path / "split"))
    run_encoder_training({"steps": 4}, resume=tmp_path / "split", tensorboard=False, progress=False)
    a = load_file(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_file(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert set(a["task"]["modules"]) == {"encoder", "image_discriminator"}
    for name in a["task"]["modules"]:
        for k, v in a["task"]["modules"][name].items():
            assert torch.equal(v, b["task"]["modules"][name][k]), (name, k)
    assert a["task"]["extra"]["image_d_steps"] == b["task"]["extra"]["image_d_steps"] == 4
    (tmp_path / "w64").mkdir()
    wrong, _ = _discriminator_state(tmp_path / "w64", size=64)
    with pytest.raises(ConfigError, match="adv_d.*64 px"):
        _train(**dict(common, adv_d=str(wrong)), steps=1, out=str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="adv_d.*not a train_generator.py training state"):
        _train(**dict(common, adv_d=str(generator_file)), steps=1, out=str(tmp_path / "bad2"))


# ---------------------------------------------------------------------------------------------------- --init-weights
def test_init_weights_starts_from_a_saved_model_and_refuses_another_method_or_generator(generator_file, tmp_path):
    common = _opts(generator_file, method="psp", data="synthfaces", batch=2, val_interval=1, save_interval=1)
    _train(**common, steps=1, out=str(tmp_path / "first"))
    best = tmp_path / "first" / "checkpoints" / "best_model.pt"
    saved = load_inverter(best).encoder.state_dict()
    opts, _, _ = resolve_encoder_options(dict(common, init_weights=str(best)))
    opts.validate()
    logs = []
    task = build_task(opts, torch.device("cpu"), 0, 1, logs.append)
    own = task.inverter.encoder.state_dict()
    assert own.keys() == saved.keys() and all(torch.equal(own[k], saved[k]) for k in own)
    assert any("initialised from" in m and str(best) in m for m in logs)
    fresh = build_task(resolve_encoder_options(common)[0], torch.device("cpu"), 0, 1, lambda m: None)
    assert not all(torch.equal(v, saved[k]) for k, v in fresh.inverter.encoder.state_dict().items())
    with pytest.raises(ConfigError, match="init_weights.*psp inverter; this run trains e4e"):
        _train(**dict(common, method="e4e", init_weights=str(best)), steps=1, out=str(tmp_path / "bad"))
    torch.manual_seed(5)
    G2 = Generator(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    G2.latent_avg.copy_(G2.mean_latent(256))
    save_generator(G2, tmp_path / "g2.pt")
    with pytest.raises(ConfigError, match="init_weights.*another generator"):
        _train(**dict(common, generator=str(tmp_path / "g2.pt"), init_weights=str(best)), steps=1,
               out=str(tmp_path / "bad2"))
    with pytest.raises(ConfigError, match="init_weights.*cannot read"):
        _train(**dict(common, init_weights=str(tmp_path / "missing.pt")), steps=1, out=str(tmp_path / "bad3"))
    with pytest.raises(ConfigError, match="init_weights.*encoder.*use the options it was trained with"):
        _train(**dict(common, widths="8,8,16,16", init_weights=str(best)), steps=1, out=str(tmp_path / "bad4"))


def test_snapshots_are_named_by_the_images_seen(generator_file, tmp_path):
    """snapshot-<kimg>kimg.pt counts training images (step x batch), as the generator's runs do (it once counted
    steps: step 100 of batch 16 was named 0.100 kimg)."""
    out = tmp_path / "snap"
    _train(**_opts(generator_file, method="psp", data="synthfaces", batch=2, steps=2, val_interval=2,
                   snapshot_interval=1, out=str(out)))
    snaps = sorted(p.name for p in (out / "checkpoints").glob("snapshot-*.pt"))
    assert snaps == ["snapshot-000000.002kimg.pt", "snapshot-000000.004kimg.pt"]


# ---------------------------------------------------------------------------------------------------- --attr-lambda
def test_attribute_term_compares_the_result_with_the_input_through_the_domain_network(generator_file, tmp_path):
    from clcae.networks.domain import DomainNet, save_domain_net

    torch.manual_seed(2)
    net = DomainNet(input_size=16, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8, attr_reduce=4,
                    attr_hidden=8).eval()
    save_domain_net(net, tmp_path / "domain.pt")
    opts, _, _ = resolve_encoder_options(_opts(generator_file, method="psp", data="synthfaces", batch=2,
                                               train_noise="const", flip=False, attr_lambda=0.5,
                                               domain_net=str(tmp_path / "domain.pt")))
    opts.validate()
    torch.manual_seed(0)
    task = build_task(opts, torch.device("cpu"), 0, 1, lambda m: None)
    batch = torch.stack([task.train_dataset[i] for i in range(2)])
    task.inverter.encoder.train()
    out = task._forward(batch, 0, "const", train=True)
    terms = task._losses(batch, out, 0)
    with torch.no_grad():
        want = (net.normalise_attributes(net.attributes(out["image_wplus"]))
                - net.normalise_attributes(net.attributes(batch))).abs().mean()
    assert torch.allclose(terms["attr"], want, atol=1e-6)
    without = {k: v for k, v in terms.items() if k not in ("attr", "loss")}
    rest = sum(float(v.detach()) * _weight(opts, k) for k, v in without.items())
    assert float(terms["loss"].detach()) == pytest.approx(rest + 0.5 * float(want), rel=1e-5)
    terms["loss"].backward()   # the term reaches the encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.inverter.encoder.parameters())
    task.inverter.encoder.eval()
    assert "attr" not in task.validate(iter([batch]))   # the validation loss leaves it out
    with pytest.raises(ConfigError, match="domain_net.*attr_lambda"):
        _train(**_opts(generator_file, method="psp", data="synthfaces", attr_lambda=0.5), steps=1,
               out=str(tmp_path / "bad"))
