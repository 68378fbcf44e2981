"""Official CLCAE / pSp / e4e encoders: exact parameter layout, strict loading, and forward parity.

(1) Networks built here have exactly the keys, shapes and dtypes (and order) of the manifests in shared/compat;
    the loaders refuse missing / unexpected keys by name and explain unsupported options.
(2) Parity (slow): the regenerated official checkpoints load and reproduce the official outputs stored in
    shared/compat at the tolerances its README fixes, on the generator's reference and default paths.
(3) e4e and cars-512 CLCAE (no stored outputs): they load strictly and run with the right shapes.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clcae.checkpoints import (CheckpointError, inverter_from_checkpoint, load_contrastive_encoder, load_inverter,
                               save_inverter)
from clcae.inversion import (CLCAEInverter, E4EInverter, PSPInverter, build_inverter, official_output,
                             render_average_image)
from clcae.networks.contrastive import ImageEncoder, LatentEncoder
from clcae.networks.stylegan2 import Generator

GEN_1024 = dict(size=1024, style_dim=512, n_mlp=8, channel_base=32768, channel_max=512, blur_kernel=[1, 3, 3, 1])
GEN_512 = dict(GEN_1024, size=512)


# ---------------------------------------------------------------------------------------------------- helpers
def read_manifest(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape, dtype = line.split("\t")
            rows.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip()), dtype.strip()))
    return rows


def network_rows(module: torch.nn.Module, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    return [(prefix + k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in module.state_dict().items()]


def manifest_state_dict(rows, fill: str = "empty") -> dict[str, torch.Tensor]:
    """A state dict with the manifest's keys, shapes and dtypes. ``empty`` allocates lazily (pages untouched) for
    tests that stop at the key check; ``random`` fills plausible values."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    fir = (k[None, :] * k[:, None]) / 64 * 4  # the fixed StyleGAN2 blur / upsample kernel every checkpoint stores
    sd = {}
    for key, shape, dtype in rows:
        dt = getattr(torch, dtype)
        if key.endswith(".kernel"):
            sd[key] = fir.clone()
        elif fill == "empty" or not dt.is_floating_point:
            sd[key] = torch.zeros(shape, dtype=dt) if not dt.is_floating_point else torch.empty(shape, dtype=dt)
        elif key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
            sd[key] = torch.ones(shape)
        else:
            sd[key] = torch.randn(shape) / math.sqrt(max(1, math.prod(shape[1:])))
    return sd


CLCAE_OPTS = {"encoder_type": "GradualStyleEncoder", "dataset_type": "ffhq_encode_inversion", "output_size": 1024,
              "learn_in_w": True, "n_styles": 18, "idx_k": None, "no_w_attention": False, "no_res": False,
              "no_feature_attention": False, "not_for_feature": False,
              "stylegan_weights": "pretrained/stylegan2-ffhq-config-f.pt", "device": torch.device("cpu")}
PSP_OPTS = {"encoder_type": "GradualStyleEncoder", "dataset_type": "ffhq_encode", "output_size": 1024,
            "start_from_latent_avg": True, "learn_in_w": False, "n_styles": 18, "input_nc": 3}


def tiny_generator_with_avg() -> Generator:
    """A small real Generator whose only role is to carry a 512-d latent_avg."""
    G = Generator(size=4, style_dim=512, n_mlp=1, channel_base=32, channel_max=8)
    G.latent_avg.normal_()
    return G


# ---------------------------------------------------------------------------------------------------- (1) layout
@pytest.mark.parametrize("manifest, kwargs, part", [
    ("keys_clcae_afpsp_ffhq1024.tsv", dict(arch="clcae", encoder={}, generator=GEN_1024, input_size=[256, 256]),
     "all"),
    ("keys_clcae_afpsp_car512.tsv", dict(arch="clcae", encoder={}, generator=GEN_512, input_size=[192, 256]), "all"),
    ("keys_psp_full_ffhq1024.tsv", dict(arch="psp", encoder={}, generator=GEN_1024, input_size=[256, 256]), "all"),
    ("keys_psp_encoder_ffhq1024.tsv", dict(arch="psp", encoder={}, generator=GEN_1024, input_size=[256, 256]),
     "encoder"),
    ("keys_e4e_encoder_ffhq1024.tsv", dict(arch="e4e", encoder={}, generator=GEN_1024, input_size=[256, 256]),
     "encoder"),
])
def test_inverter_layout_matches_manifest(compat_dir, manifest, kwargs, part):
    with torch.device("meta"):
        inv = build_inverter(kwargs)
    ours = network_rows(inv) if part == "all" else network_rows(inv.encoder, "encoder.")
    assert ours == read_manifest(compat_dir / manifest)  # keys, shapes, dtypes and order


@pytest.mark.parametrize("manifest, cls", [("keys_clcae_stage1_image.tsv", ImageEncoder),
                                           ("keys_clcae_stage1_latent.tsv", LatentEncoder)])
def test_stage1_layout_matches_manifest(compat_dir, manifest, cls):
    with torch.device("meta"):
        net = cls()
    assert network_rows(net) == read_manifest(compat_dir / manifest)


def test_official_loader_infers_the_manifest_network(compat_dir):
    """The configuration the loader infers from a manifest-shaped state dict rebuilds exactly that manifest."""
    from clcae.official_options import official_inverter_kwargs as _official_inverter_kwargs

    for manifest, opts in [("keys_clcae_afpsp_ffhq1024.tsv", CLCAE_OPTS),
                           ("keys_clcae_afpsp_car512.tsv", dict(CLCAE_OPTS, output_size=512,
                                                                dataset_type="car_encode_inversion")),
                           ("keys_psp_full_ffhq1024.tsv", PSP_OPTS),
                           ("keys_psp_full_ffhq1024.tsv", dict(encoder_type="Encoder4Editing", stylegan_size=1024,
                                                               start_from_latent_avg=True))]:
        rows = read_manifest(compat_dir / manifest)
        sd = manifest_state_dict(rows)
        kwargs = _official_inverter_kwargs(sd, opts, manifest, None)
        with torch.device("meta"):
            inv = build_inverter(kwargs)
        assert network_rows(inv) == rows, manifest
        if "car512" in manifest:
            assert kwargs["input_size"] == [192, 256] and inv.n_latent == 16
        assert kwargs["arch"] == {"Encoder4Editing": "e4e"}.get(opts["encoder_type"],
                                                                "clcae" if "clcae" in manifest else "psp")


def test_strict_errors_name_missing_and_unexpected_keys(compat_dir):
    rows = read_manifest(compat_dir / "keys_clcae_afpsp_ffhq1024.tsv")
    sd = manifest_state_dict(rows)
    del sd["encoder.cross_attention.3.norm1.weight"], sd["decoder.noises.noise_4"]
    sd["encoder.styles_others.99.linear.weight"] = torch.empty(512, 512)
    ckpt = {"state_dict": sd, "opts": dict(CLCAE_OPTS), "iter": 1.0}
    with pytest.raises(CheckpointError) as e:
        inverter_from_checkpoint(ckpt, source="clcae.pt", generator=tiny_generator_with_avg())
    msg = str(e.value)
    for key in ("encoder.cross_attention.3.norm1.weight", "decoder.noises.noise_4",
                "encoder.styles_others.99.linear.weight", "missing", "unexpected", "clcae.pt"):
        assert key in msg, (key, msg)

    rows = read_manifest(compat_dir / "keys_psp_full_ffhq1024.tsv")
    sd = manifest_state_dict(rows)
    sd["encoder.styles.3.convs.8.weight"] = torch.empty(512, 512, 1, 1)
    ckpt = {"state_dict": sd, "opts": dict(PSP_OPTS), "latent_avg": torch.zeros(18, 512)}
    with pytest.raises(CheckpointError, match=r"shape mismatch.*encoder\.styles\.3\.convs\.8\.weight"):
        inverter_from_checkpoint(ckpt, source="psp.pt")


def test_missing_latent_avg_names_the_stylegan_file(compat_dir, tmp_path):
    rows = read_manifest(compat_dir / "keys_clcae_afpsp_ffhq1024.tsv")
    ckpt = {"state_dict": manifest_state_dict(rows), "opts": dict(CLCAE_OPTS), "iter": 1.0}
    with pytest.raises(CheckpointError) as e:
        inverter_from_checkpoint(ckpt, source="ckpt_ffhq1024.pt", base_dir=tmp_path)
    msg = str(e.value)
    assert "latent_avg" in msg and "pretrained/stylegan2-ffhq-config-f.pt" in msg and "generator=" in msg
    assert str(tmp_path / "pretrained" / "stylegan2-ffhq-config-f.pt") in msg  # where it looked
    with pytest.raises(CheckpointError, match="no such file"):
        inverter_from_checkpoint(ckpt, source="ckpt_ffhq1024.pt", generator=tmp_path / "nope.pt")


@pytest.mark.parametrize("change, pattern", [
    (dict(no_res=True), r"no_res.*not supported"),
    (dict(no_feature_attention=True), r"no_feature_attention.*not supported"),
    (dict(not_for_feature=True), r"not_for_feature.*not supported"),
    (dict(learn_in_w=False), r"learn_in_w"),
    (dict(idx_k=7), r"idx_k"),
    (dict(output_size=512), r"output_size.*1024"),
])
def test_unsupported_clcae_options_are_refused(compat_dir, change, pattern):
    rows = read_manifest(compat_dir / "keys_clcae_afpsp_ffhq1024.tsv")
    ckpt = {"state_dict": manifest_state_dict(rows), "opts": dict(CLCAE_OPTS, **change), "iter": 1.0}
    with pytest.raises(CheckpointError, match=pattern):
        inverter_from_checkpoint(ckpt, generator=tiny_generator_with_avg())


def test_unsupported_psp_encoder_type_is_refused(compat_dir):
    rows = read_manifest(compat_dir / "keys_psp_full_ffhq1024.tsv")
    for change, pattern in [(dict(encoder_type="BackboneEncoderUsingLastLayerIntoW"), "encoder_type"),
                            (dict(n_styles=16), "n_styles")]:
        ckpt = {"state_dict": manifest_state_dict(rows), "opts": dict(PSP_OPTS, **change),
                "latent_avg": torch.zeros(18, 512)}
        with pytest.raises(CheckpointError, match=pattern):
            inverter_from_checkpoint(ckpt)


@pytest.mark.parametrize("manifest, cls", [("keys_clcae_stage1_image.tsv", ImageEncoder),
                                           ("keys_clcae_stage1_latent.tsv", LatentEncoder)])
def test_stage1_checkpoints_load_strictly(compat_dir, tmp_path, manifest, cls):
    rows = read_manifest(compat_dir / manifest)
    sd = manifest_state_dict(rows, fill="random")
    path = tmp_path / "best_model.pt"
    torch.save({"state_dict": sd, "opts": {"use_norm": True}}, path)
    net = load_contrastive_encoder(path)
    assert isinstance(net, cls) and not net.training
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())
    x = torch.randn(2, 3, 256, 256) if cls is ImageEncoder else torch.randn(2, 512)
    with torch.no_grad():
        e = net(x)
    assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    del sd[rows[-1][0]]
    torch.save({"state_dict": sd, "opts": {"use_norm": True}}, path)
    with pytest.raises(CheckpointError, match=rows[-1][0].replace(".", r"\.")):
        load_contrastive_encoder(path)


# ---------------------------------------------------------------------------------------------------- our format
def small_clcae_kwargs() -> dict:
    """A small CLCAE for a 64 px domain: narrow IR-SE trunk, 64x64 input, 32-d codes (exercises the options)."""
    gen = dict(size=64, style_dim=32, n_mlp=2, channel_base=512, channel_max=32, blur_kernel=[1, 3, 3, 1])
    enc = dict(width_mult=1 / 16, style_dim=32, dim_feedforward=64, feature_channels=32, feature_downsample=0)
    return dict(arch="clcae", encoder=enc, generator=gen, input_size=[64, 64], idx_k=5)


def test_our_inverter_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    inv = build_inverter(small_clcae_kwargs()).eval()
    inv.latent_avg.normal_()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = inv.invert(x)  # no avg_image stored: rendered from latent_avg and cached
    assert inv.avg_image_source == "rendered" and inv.avg_image.shape == (1, 3, 64, 64)
    assert out["wplus"].shape == (2, 10, 32) and out["f"].shape == (2, 32, 16, 16) == out["f_gen"].shape
    for name in ("image_wplus_f", "image_wplus", "image_w"):
        assert out[name].shape == (2, 3, 64, 64)
    path = save_inverter(inv, tmp_path / "inv.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "clcae.inverter" and raw["kind"] == "inverter" and raw["kwargs"]["arch"] == "clcae"
    assert set(raw["state_dict"]) == set(inv.state_dict())
    back = load_inverter(path)
    assert isinstance(back, CLCAEInverter) and not back.training and back.avg_image_source == "checkpoint"
    assert torch.equal(back.latent_avg, inv.latent_avg) and torch.equal(back.avg_image, inv.avg_image)
    out2 = back.invert(x)
    for k, v in out.items():
        torch.testing.assert_close(out2[k], v, rtol=0, atol=0, msg=k)
    # strictness on our format too
    raw["state_dict"].pop("encoder.latlayer1.bias")
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"encoder\.latlayer1\.bias"):
        load_inverter(tmp_path / "bad.pt")


def test_average_image_rendering_is_quantised_and_cropped():
    torch.manual_seed(2)
    G = Generator(size=32, style_dim=16, n_mlp=1, channel_base=256, channel_max=16).eval()
    la = torch.randn(16) * 0.3
    img = render_average_image(G, la, (24, 32))
    assert img.shape == (1, 3, 24, 32) and img.min() >= -1 and img.max() <= 1
    assert torch.allclose((img + 1) / 2 * 255, ((img + 1) / 2 * 255).round(), atol=1e-4)  # 8-bit levels
    raw = render_average_image(G, la, (32, 32), quantize=False)
    with torch.no_grad():
        full = G.synthesis(la[None], noise_mode="const").clamp(-1, 1)
    torch.testing.assert_close(raw, full)  # same size: the resize is the identity


def test_official_output_crop():
    img = torch.randn(2, 3, 512, 512)
    cars = official_output(img, (192, 256))
    assert cars.shape == (2, 3, 192, 256)
    torch.testing.assert_close(cars, F.adaptive_avg_pool2d(img, 256)[:, :, 32:224, :])
    faces = official_output(torch.randn(1, 3, 1024, 1024))
    assert faces.shape == (1, 3, 256, 256)


# ---------------------------------------------------------------------------------------------------- (2) parity
def _regen(compat_dir: Path, script: str, manifest: str, seed: int, preset: str, out_dir: Path) -> None:
    subprocess.run([sys.executable, str(compat_dir / script), str(compat_dir / manifest), str(seed),
                    "--preset", preset, "--out-dir", str(out_dir)], check=True, capture_output=True, timeout=600)


#: Where the FFHQ-1024 parity tests run: CLCAE_TEST_DEVICE=cuda runs them on a GPU (benchmarks/gpu_check.sh; TF32 is
#: turned off there, as the fixtures' tolerances assume).
PARITY_DEVICE = os.environ.get("CLCAE_TEST_DEVICE", "cpu")
if PARITY_DEVICE.startswith("cuda"):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="module")
def clcae_ffhq(compat_dir, tmp_path_factory):
    """The regenerated official CLCAE FFHQ-1024 checkpoint, loaded (latent_avg from opts['stylegan_weights']
    resolved next to the checkpoint); the 1.4 GB files are deleted once loaded."""
    d = tmp_path_factory.mktemp("clcae_ffhq")
    try:
        _regen(compat_dir, "regen_clcae_checkpoint.py", "keys_clcae_afpsp_ffhq1024.tsv", 20231, "ffhq1024", d)
        inv = load_inverter(d / "ckpt_ffhq1024.pt", device=PARITY_DEVICE)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    cases = torch.load(compat_dir / "clcae_official_ffhq1024_cases.pt", weights_only=True)
    yield inv, cases
    del inv


@pytest.fixture(scope="module")
def psp_ffhq(compat_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("psp_ffhq")
    try:
        _regen(compat_dir, "regen_psp_e4e_checkpoint.py", "keys_psp_full_ffhq1024.tsv", 20241, "psp_ffhq1024", d)
        inv = load_inverter(d / "ckpt_psp_ffhq1024.pt", device=PARITY_DEVICE)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    cases = torch.load(compat_dir / "psp_official_ffhq1024_cases.pt", weights_only=True)
    yield inv, cases
    del inv


def _close(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float, report: dict) -> None:
    got = got.cpu()
    report[name] = (got - want).abs().max().item()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def _print_report(title: str, report: dict, seconds: float) -> None:
    print(f"\n{title} ({seconds:.1f} s): " + ", ".join(f"{k} {v:.2e}" for k, v in report.items()))


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["auto", "ref"])
def test_clcae_ffhq1024_matches_official(clcae_ffhq, impl):
    inv, c = clcae_ffhq
    assert isinstance(inv, CLCAEInverter) and inv.input_size == (256, 256) and inv.n_latent == 18
    assert inv.latent_avg_source.endswith("stylegan2-ffhq-config-f.pt")
    torch.testing.assert_close(inv.latent_avg.cpu(), c["latent_avg"][0], rtol=0, atol=0)
    inv.set_impl(impl)
    try:
        t = time.perf_counter()
        out = inv.invert(c["x"].to(PARITY_DEVICE), avg_image=c["x_avg"].to(PARITY_DEVICE))
        seconds = time.perf_counter() - t
    finally:
        inv.set_impl("auto")
    report: dict = {}
    for key in ("w", "wplus", "f"):
        _close(key, out[key], c[key], 1e-4, 1e-4, report)
    _close("f_gen", out["f_gen"], c["f_gen"], 1e-4, 5e-4, report)
    for ours, theirs in [("image_wplus_f", "img_inject"), ("image_wplus", "img_wplus"), ("image_w", "img_w")]:
        full = out[ours]
        assert full.shape == (2, 3, 1024, 1024)
        _close(f"{theirs}_256", F.adaptive_avg_pool2d(full, 256), c[f"{theirs}_256"], 1e-4, 1e-3, report)
        _close(f"{theirs}_crop64", full[:, :, 512:576, 512:576], c[f"{theirs}_crop64"], 1e-4, 1e-3, report)
    _print_report(f"CLCAE FFHQ-1024 parity, impl={impl}", report, seconds)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["auto", "ref"])
def test_psp_ffhq1024_matches_official(psp_ffhq, impl):
    inv, c = psp_ffhq
    assert isinstance(inv, PSPInverter) and not isinstance(inv, E4EInverter)
    torch.testing.assert_close(inv.latent_avg.cpu(), c["latent_avg"], rtol=0, atol=0)  # all 18 distinct rows kept
    inv.set_impl(impl)
    try:
        t = time.perf_counter()
        out = inv.invert(c["x"].to(PARITY_DEVICE))
        seconds = time.perf_counter() - t
    finally:
        inv.set_impl("auto")
    report: dict = {}
    assert "w" not in out
    _close("codes_raw", (out["wplus"] - inv.latent_avg).cpu(), c["codes_raw"], 1e-4, 1e-4, report)
    _close("wplus", out["wplus"], c["wplus"], 1e-4, 1e-4, report)
    full = out["image_wplus"]
    _close("img_256", F.adaptive_avg_pool2d(full, 256), c["img_256"], 1e-4, 1e-3, report)
    _close("img_crop64", full[:, :, 512:576, 512:576], c["img_crop64"], 1e-4, 1e-3, report)
    _print_report(f"pSp FFHQ-1024 parity, impl={impl}", report, seconds)


# ---------------------------------------------------------------------------------------------------- (3) e4e, cars
@pytest.mark.slow
def test_e4e_ffhq1024_loads_and_runs(compat_dir, tmp_path):
    _regen(compat_dir, "regen_psp_e4e_checkpoint.py", "keys_psp_full_ffhq1024.tsv", 20242, "e4e_ffhq1024", tmp_path)
    path = tmp_path / "ckpt_e4e_ffhq1024.pt"
    stored = torch.load(path, weights_only=True)["latent_avg"]
    inv = load_inverter(path)
    path.unlink()
    assert isinstance(inv, E4EInverter) and inv.encoder.progressive_stage is None
    torch.testing.assert_close(inv.latent_avg, stored, rtol=0, atol=0)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    out = inv.invert(x)
    assert out["wplus"].shape == (1, 18, 512) and out["image_wplus"].shape == (1, 3, 1024, 1024)
    assert torch.isfinite(out["image_wplus"]).all()
    torch.testing.assert_close(out["w"], out["wplus"][:, 0])
    # e4e's combination: w_i = w_0 + delta_i (+ latent_avg row i); delta from c3 (i < 3), p2 (i < 7), p1 after
    enc = inv.encoder
    with torch.no_grad():
        c3, p2, p1 = enc.pyramid(x)
        w0 = enc.styles[0](c3)
        for i, fmap in [(0, None), (2, c3), (5, p2), (17, p1)]:
            want = w0 + (enc.styles[i](fmap) if fmap is not None else 0) + inv.latent_avg[i]
            torch.testing.assert_close(out["wplus"][:, i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_clcae_car512_loads_and_runs(compat_dir, tmp_path):
    _regen(compat_dir, "regen_clcae_checkpoint.py", "keys_clcae_afpsp_car512.tsv", 20232, "car512", tmp_path)
    inv = load_inverter(tmp_path / "ckpt_car512.pt")
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert isinstance(inv, CLCAEInverter) and inv.input_size == (192, 256) and inv.n_latent == 16
    x = torch.rand(1, 3, 192, 256) * 2 - 1
    out = inv.invert(x)  # no average image given: rendered from latent_avg (cropped to 3:4, resized to 192x256)
    assert inv.avg_image_source == "rendered" and inv.avg_image.shape == (1, 3, 192, 256)
    assert out["w"].shape == (1, 512) and out["wplus"].shape == (1, 16, 512)
    assert out["f"].shape == (1, 512, 16, 16) == out["f_gen"].shape
    for name in ("image_wplus_f", "image_wplus", "image_w"):
        assert out[name].shape == (1, 3, 512, 512) and torch.isfinite(out[name]).all()
        assert inv.official_output(out[name]).shape == (1, 3, 192, 256)
    assert not torch.equal(out["image_wplus_f"], out["image_wplus"])  # f changes the image


@pytest.mark.slow
def test_invert_script_on_the_official_clcae_checkpoint(compat_dir, tmp_path):
    """issue 10 (4): scripts/invert.py takes the official CLCAE file with --generator and --avg-image and writes the
    same codes as load_inverter + invert on the same (8-bit) inputs."""
    import importlib.util

    from PIL import Image

    from clcae.inversion.runner import load_avg_image, read_input

    d = tmp_path / "official"
    _regen(compat_dir, "regen_clcae_checkpoint.py", "keys_clcae_afpsp_ffhq1024.tsv", 20231, "ffhq1024", d)
    stylegan = d / "pretrained" / "stylegan2-ffhq-config-f.pt"
    ckpt = d / "moved" / "ckpt_ffhq1024.pt"  # away from the generator: --generator must supply latent_avg
    ckpt.parent.mkdir()
    (d / "ckpt_ffhq1024.pt").rename(ckpt)
    cases = torch.load(compat_dir / "clcae_official_ffhq1024_cases.pt", weights_only=True)

    def png(t: torch.Tensor, path: Path) -> None:
        a = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(a).save(path)

    (tmp_path / "in").mkdir()
    png(cases["x"][0], tmp_path / "in" / "face.png")
    png(cases["x_avg"][0], tmp_path / "image_avg.png")
    spec = importlib.util.spec_from_file_location("invert_script", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "invert.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(out), "--no-progress"]
    assert mod.main(argv) == 2  # latent_avg cannot be resolved without the generator: a clear refusal
    rc = mod.main(argv + ["--generator", str(stylegan), "--avg-image", str(tmp_path / "image_avg.png")])
    assert rc == 0
    saved = torch.load(out / "latents" / "face.pt", weights_only=True)
    inv = load_inverter(ckpt, generator=stylegan)
    x = read_input(tmp_path / "in" / "face.png", inv.input_size)[None]
    avg = load_avg_image(tmp_path / "image_avg.png", inv.input_size)
    with torch.no_grad():
        dw, offsets, f = inv.encoder(x - avg)
    w = dw + inv.latent_avg
    torch.testing.assert_close(saved["w"], w[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(saved["wplus"], (offsets + w[:, None])[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(saved["f"], f[0], rtol=1e-5, atol=1e-5)
    for kind in ("w", "wplus", "wplus_f"):
        assert Image.open(out / kind / "face.png").size == (256, 256)
