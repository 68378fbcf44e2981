"""Evaluation: the engine (clcae.metrics.evaluation), the table writers (clcae.metrics.tables), the editing metrics
(clcae.metrics.editing) and scripts/eval.py, with tiny random networks on the CPU.

Nothing here uses pretrained weights: where a test needs an LPIPS or Inception file it writes one with random
weights (to exercise the loading path, not to produce meaningful numbers); every other test checks that such
metrics are left out, with the note naming the file they need.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clcae.checkpoints import CheckpointError, load_inverter
from clcae.losses.perceptual import MissingWeightsError
from clcae.metrics import editing as editing_mod
from clcae.metrics.editing import editing_metrics, least_squares_slopes
from clcae.metrics.evaluation import (INCEPTION_FILE_NAME, PROTOCOLS, PSNR_CAP, EvalMethod, EvaluationError,
                                      FolderSource, InceptionFeatures, SynthFacesSource, build_metric_suite,
                                      default_representations, evaluate)
from clcae.metrics.tables import (GridRow, ImageGrid, MetricInfo, Report, ResultEntry, markdown_table, summarize,
                                  write_all)
from clcae.networks.domain import DomainNet, save_domain_net
from clcae.networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
TINY_DOMAIN = dict(input_size=16, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8, attr_reduce=4,
                   attr_hidden=8)


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "scripts" / "eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


eval_script = _load_script()


pytestmark = pytest.mark.usefixtures("one_thread")


class CopyInverter(nn.Module):
    """A stub method whose W+ render is its input, exactly (a perfect reconstruction)."""

    arch = "copy"
    image_names = ("wplus",)

    def __init__(self, size: int = 32):
        super().__init__()
        self.input_size = (size, size)

    def invert(self, x, avg_image=None, images=None):
        return {"wplus": torch.zeros(x.shape[0], 4, 8), "image_wplus": x.clone()}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_inverters):
    """Tiny CLCAE and pSp inverters sharing one 32 px generator, the generator itself and a tiny domain net."""
    d = tmp_path_factory.mktemp("models")
    tiny_inverters(d)
    torch.manual_seed(1)
    save_domain_net(DomainNet(**TINY_DOMAIN).eval(), d / "domain.pt")
    return d


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_synthfaces_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = eval_script.main([
        "--method", f"clcae={files / 'clcae.pt'}", "--method", f"psp={files / 'psp.pt'}",
        "--projection", f"proj={files / 'G.pt'}:wplus:3", "--data", "synthfaces", "--n", "5", "--batch", "3",
        "--domain-net", str(files / "domain.pt"), "--no-hub-cache", "--save-images", "2", "--out", str(out),
        "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| method | repr. | n |" in printed and "LPIPS not computed" in printed
    for name in ("results.md", "results.csv", "results.json", "per_image.csv", "report.html"):
        assert (out / name).is_file(), name

    # one row per (method, representation), in order
    rows = _read_csv(out / "results.csv")
    assert [(r["method"], r["representation"]) for r in rows] == [
        ("clcae", "w"), ("clcae", "wplus"), ("clcae", "wplus_f"), ("psp", "wplus"), ("proj", "wplus")]
    assert all(r["n"] == "5" for r in rows)
    header = list(rows[0])
    assert "lpips" not in header and "id_arcface" not in header and "fid_tv" not in header
    for col in ("mse", "psnr", "ssim_w11", "ssim_w21", "domain_perceptual", "id_domain", "fd_domain"):
        assert col in header and all(r[col] != "" for r in rows), col

    # results.json: every number named, with n and provenance; per-image means reproduce the aggregates
    res = json.loads((out / "results.json").read_text())
    per_image = _read_csv(out / "per_image.csv")
    assert len(per_image) == 5 * 5 and "fd_domain" not in per_image[0]
    per_image_metrics = {m["name"] for m in res["metrics"] if m["per_image"]}
    checked = 0
    for e in res["results"]:
        assert {"method", "representation", "metric", "mean", "std", "n", "weights"} <= set(e)
        if e["metric"] not in per_image_metrics:
            assert e["std"] is None and e["metric"] == "fd_domain" and e["n"] == 5
            continue
        vals = np.array([float(r[e["metric"]]) for r in per_image
                         if r["method"] == e["method"] and r["representation"] == e["representation"]])
        assert len(vals) == e["n"] == 5
        assert math.isclose(e["mean"], vals.mean(), rel_tol=1e-12, abs_tol=1e-12)
        assert math.isclose(e["std"], vals.std(), rel_tol=1e-9, abs_tol=1e-12)
        checked += 1
    # mse, psnr, 2 ssim, detail_ratio, domain_perceptual, id_domain and the 4 attribute-fidelity metrics (labels)
    assert checked == 5 * 11
    assert {"detail_ratio", "glasses_acc", "eyes_open_err", "smile_err", "age_err"} <= per_image_metrics
    assert any(n.startswith("Attribute fidelity ceiling") for n in res["notes"])
    domain = str((files / "domain.pt").resolve())
    assert {e["weights"] for e in res["results"] if e["metric"] in ("id_domain", "fd_domain")} == {domain}
    assert {e["weights"] for e in res["results"] if e["metric"] == "mse"} == {None}
    # the attribute columns are judged by the shipped judge (a network the encoders were not trained against)
    judge = ROOT / "pretrained" / "synthfaces64_judge_net.pt"
    expect_judge = str(judge.resolve()) if judge.is_file() else domain
    assert {e["weights"] for e in res["results"] if e["metric"] == "eyes_open_err"} == {expect_judge}
    assert any("LPIPS not computed: needs alexnet-owt-7be5be79.pth" in n and "--lpips-weights" in n
               for n in res["notes"])
    assert res["data"]["kind"] == "synthfaces" and res["data"]["n_measured"] == 5
    assert [m["name"] for m in res["methods"]] == ["clcae", "psp", "proj"]
    assert res["methods"][2]["projection"]["perceptual"] == "domain"  # no LPIPS weights: the domain distance

    # Markdown and HTML: the table, the note naming the file, the grid with existing images
    md = (out / "results.md").read_text()
    assert "| clcae | W+F | 5 |" in md and "domain_perceptual" in md and "alexnet-owt-7be5be79.pth" in md
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<table class=\"results\">" in page
    assert "LPIPS not computed: needs alexnet-owt-7be5be79.pth" in page and "<script" not in page
    srcs = [s for s in page.split("src=\"")[1:]]
    srcs = [s.split("\"")[0] for s in srcs]
    assert len(srcs) == 2 * (1 + 5)  # 2 images x (input + 5 outputs)
    assert all(not Path(s).is_absolute() and (out / s).is_file() for s in srcs)
    assert "images/0000_input.png" in srcs and "images/0001_clcae_wplus_f.png" in srcs


def test_cli_argument_errors(files, tmp_path, capsys):
    base = ["--data", "synthfaces", "--n", "2", "--no-hub-cache", "--no-progress",
            "--domain-net", str(files / "domain.pt")]
    assert eval_script.main(base + ["--out", str(tmp_path / "a")]) == 2
    assert "at least one --method" in capsys.readouterr().err
    m = ["--method", f"x={files / 'psp.pt'}"]
    assert eval_script.main(base + m + m + ["--out", str(tmp_path / "a")]) == 2
    assert "unique" in capsys.readouterr().err
    assert eval_script.main(base + m + ["--protocol", "celebahq", "--out", str(tmp_path / "a")]) == 2
    assert "CelebA-HQ-style test folder" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "alexnet.pth"
    assert eval_script.main(base + m + ["--lpips-weights", str(missing), "--out", str(tmp_path / "a")]) == 2
    assert "--lpips-weights" in capsys.readouterr().err
    assert eval_script.main(base + ["--method", f"x={tmp_path / 'none.pt'}", "--out", str(tmp_path / "a")]) == 2
    assert "none.pt" in capsys.readouterr().err
    # a finished run is not overwritten by accident
    out = tmp_path / "done"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert eval_script.main(base + m + ["--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_script.main(base + ["--projection", "p=G.pt:z:3", "--out", str(out)])


def test_cli_edit_metrics(files, tmp_path):
    from clcae.editing.interfacegan import save_direction

    torch.manual_seed(3)
    direction = save_direction(tmp_path / "smile.pt", F.normalize(torch.randn(32), dim=0), attribute="smile")
    out = tmp_path / "eval"
    rc = eval_script.main(["--method", f"psp={files / 'psp.pt'}", "--data", "synthfaces", "--n", "3",
                           "--domain-net", str(files / "domain.pt"), "--no-hub-cache", "--save-images", "1",
                           "--edit", f"smile={direction}", "--edit-strengths", "-1", "0", "1", "--out", str(out),
                           "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    (e,) = res["editing"]
    assert e["method"] == "psp" and e["target_attribute"] == "smile" and e["n"] == 3
    assert e["strengths"] == [-1.0, 0.0, 1.0] and "eyes_open" not in e["other_attributes"]
    assert math.isclose(e["id_kept_per_strength"][1], 1.0, abs_tol=1e-6)  # strength 0 is the reconstruction
    assert set(e["slope"]) == {"mean", "std", "n", "n_invalid"} and e["slope"]["n"] == 3
    assert "predictor_mae_on_inputs" in e
    page = (out / "report.html").read_text()
    assert "Edit &#x27;smile&#x27;" in page or "Edit 'smile'" in page
    assert "| psp | smile | -1, 0, 1 | 3 |" in (out / "results.md").read_text()
    assert (out / "images" / "edit_smile_psp_0000_03.png").is_file()
    # a direction file for another attribute is refused
    assert eval_script.main(["--method", f"psp={files / 'psp.pt'}", "--data", "synthfaces", "--n", "2",
                             "--domain-net", str(files / "domain.pt"), "--no-hub-cache", "--edit",
                             f"age={direction}", "--out", str(tmp_path / "e2"), "--no-progress"]) == 2


# ---------------------------------------------------------------------------------------------------- engine
def test_perfect_reconstruction_scores(files, tmp_path):
    suite = build_metric_suite(domain_net=files / "domain.pt", use_hub_cache=False)
    result = evaluate([EvalMethod("copy", CopyInverter(32))], SynthFacesSource(4, res=32), suite, batch=3,
                      save_images=1, image_dir=tmp_path)
    got = {(e.metric): e for e in result.aggregates()}
    assert got["mse"].mean == 0 and got["mse"].std == 0 and got["mse"].n == 4
    assert got["psnr"].mean == PSNR_CAP and "4 image(s) capped" in got["psnr"].note  # infinite PSNR, capped
    assert got["ssim_w11"].mean == pytest.approx(1.0, abs=1e-12)
    assert got["ssim_w21"].mean == pytest.approx(1.0, abs=1e-12)
    assert got["id_domain"].mean == pytest.approx(1.0, abs=1e-5)
    assert got["domain_perceptual"].mean == pytest.approx(0.0, abs=1e-6)
    assert abs(got["fd_domain"].mean) < 1e-3
    assert result.metric_sizes == {"copy": [32, 32]}


def test_imperfect_method_is_worse_and_mse_is_exact(files):
    """A method that darkens its input by a known amount: MSE equals the mean squared offset."""

    class Darken(CopyInverter):
        def invert(self, x, avg_image=None, images=None):
            return {"wplus": torch.zeros(x.shape[0], 4, 8), "image_wplus": x - 0.25}

    suite = build_metric_suite(use_hub_cache=False)
    src = SynthFacesSource(3, res=32)
    result = evaluate([EvalMethod("copy", CopyInverter()), EvalMethod("dark", Darken())], src, suite)
    per = result.per_image
    x = torch.stack([torch.as_tensor(np.array(src.load(i)), dtype=torch.float64).permute(2, 0, 1) / 127.5 - 1
                     for i in range(3)])
    expected = ((x - (x - 0.25).clamp(-1, 1)) ** 2).flatten(1).mean(1)
    np.testing.assert_allclose(per[("dark", "wplus")]["mse"], expected.numpy(), rtol=1e-6)
    assert min(per[("copy", "wplus")]["ssim_w11"]) > max(per[("dark", "wplus")]["ssim_w11"])
    assert {n for n in result.missing if "domain network" in n}  # no domain net: said so


def test_folder_source_protocols_and_bad_files(files, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    suite = build_metric_suite(use_hub_cache=False)
    src = FolderSource(data)
    assert len(src) == 4 and src.describe()["kind"] == "folder"
    result = evaluate([EvalMethod("copy", CopyInverter(32))], src, suite, protocol="celebahq", batch=2)
    assert [f["image"] for f in result.failures] == ["broken"] and result.image_names == ["img0", "img1", "img2"]
    assert result.metric_sizes == {"copy": [256, 256]}  # the paper's protocol always measures at 256 px
    assert not any("enlarged" in n for n in result.notes)  # the stub has no generator: no size warning
    psp = load_inverter(files / "psp.pt")  # a 32 px generator under the 256 px protocol: said so
    small = evaluate([EvalMethod("psp", psp)], FolderSource(data, n=2), suite, protocol="celebahq")
    assert any("enlarged" in n and "psp" in n for n in small.notes) and small.metric_sizes == {"psp": [256, 256]}
    default = evaluate([EvalMethod("copy", CopyInverter(32))], FolderSource(data, n=3), suite, batch=2)
    assert default.metric_sizes == {"copy": [32, 32]} and default.image_names == ["img0", "img1"]
    with pytest.raises(EvaluationError, match="^data .*missing: no such file or folder") as e:
        FolderSource(tmp_path / "missing")
    assert e.value.option == "data"  # the library names the option; eval.py prints --data
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no image files"):
        FolderSource(tmp_path / "empty")


def test_protocol_output_preparation():
    x = torch.rand(2, 3, 64, 64) * 2.4 - 1.2
    celeb = PROTOCOLS["celebahq"].prepare_output(x, (64, 64))
    assert celeb.shape == (2, 3, 256, 256) and celeb.min() >= -1 and celeb.max() <= 1
    levels = (celeb + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # 8-bit, as saved
    pooled = F.adaptive_avg_pool2d(x, 256).clamp(-1, 1)
    torch.testing.assert_close(celeb, torch.floor((pooled + 1) * 127.5) / 127.5 - 1)  # tensor2im truncates
    dflt = PROTOCOLS["default"].prepare_output(x, (64, 64))
    torch.testing.assert_close(dflt, x.clamp(-1, 1))  # 64 px generator: measured at 64 px, not quantised
    big = torch.rand(1, 3, 512, 512) * 2 - 1
    cars = PROTOCOLS["default"].prepare_output(big, (192, 256))
    assert cars.shape == (1, 3, 192, 256) and PROTOCOLS["default"].metric_hw(512, (192, 256)) == (192, 256)


def test_default_representations(files):
    assert default_representations(load_inverter(files / "clcae.pt")) == ("w", "wplus", "wplus_f")
    assert default_representations(load_inverter(files / "psp.pt")) == ("wplus",)
    with pytest.raises(EvaluationError, match="representations"):
        EvalMethod("x", CopyInverter(), representations=("w",))
    with pytest.raises(EvaluationError, match="method name"):
        EvalMethod("a b", CopyInverter())


# ---------------------------------------------------------------------------------------------------- weights
def test_lpips_only_with_a_weights_file(tmp_path):
    import torchvision

    suite = build_metric_suite(use_hub_cache=False)
    assert "lpips" not in {m.name for m in suite.metric_infos()}
    (note,) = [n for n in suite.missing if n.startswith("LPIPS")]
    assert "alexnet-owt-7be5be79.pth" in note and "--lpips-weights" in note
    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({f"features.{k}": v for k, v in feats.items()}, path)
    suite = build_metric_suite(lpips_weights=path, use_hub_cache=False)
    info = {m.name: m for m in suite.metric_infos()}["lpips"]
    assert info.weights == str(path.resolve()) and not any(n.startswith("LPIPS") for n in suite.missing)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    vals, _ = suite.per_image(x, x.flip(-1))
    same, _ = suite.per_image(x, x)
    assert vals["lpips"].shape == (2,) and (vals["lpips"] > 0).all() and same["lpips"].abs().max() < 1e-6
    small, _ = suite.per_image(x[..., :16, :16], x[..., :16, :16])
    assert "lpips" not in small and suite.skipped(16) == ["ssim_w21", "lpips"]
    with pytest.raises(EvaluationError, match="^lpips_weights .*nope.pth"):
        build_metric_suite(lpips_weights=tmp_path / "nope.pth")
    with pytest.raises(EvaluationError, match="^arcface_weights .*model_ir_se50.pth"):
        build_metric_suite(arcface_weights=tmp_path / "model_ir_se50.pth", use_hub_cache=False)


def test_inception_features_from_a_local_file(tmp_path):
    import torchvision

    with pytest.raises(MissingWeightsError, match=INCEPTION_FILE_NAME):
        InceptionFeatures(tmp_path / "missing.pth")
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / INCEPTION_FILE_NAME
    sd = net.state_dict()
    torch.save(sd, path)
    feats = InceptionFeatures(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    f = feats(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert not feats.train().net.training
    suite = build_metric_suite(inception_weights=path, use_hub_cache=False)
    assert suite.feature_names() == ["fid_tv"] and not any("fid_tv" in n for n in suite.missing)
    del sd["fc.bias"]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="fc.bias"):
        InceptionFeatures(path)


# ---------------------------------------------------------------------------------------------------- editing
class BrightnessGenerator:
    """Renders every code as a flat grey image whose value is the code's first component (layer-averaged)."""

    def synthesis(self, codes, noise_mode="const"):
        v = codes[..., 0].mean(dim=1) if codes.ndim == 3 else codes[:, 0]
        return v.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


class BrightnessNet:
    """A stand-in domain network: smile = brightness, age = 0.5 * brightness, yaw = 0.3; embedding [1, brightness]."""

    attribute_names = ("smile", "age", "yaw")

    def attributes(self, x):
        b = x.mean(dim=(1, 2, 3))
        return torch.stack([b, 0.5 * b, torch.full_like(b, 0.3)], dim=1)

    def embed(self, x):
        b = x.mean(dim=(1, 2, 3))
        return F.normalize(torch.stack([torch.ones_like(b), b], dim=1), dim=1)


def test_editing_metrics_recover_a_known_slope():
    torch.manual_seed(0)
    n, layers, dim = 5, 4, 6
    base = torch.rand(n) - 0.5
    latents = torch.randn(n, layers, dim) * 0.1
    latents[..., 0] = base[:, None]
    direction = torch.zeros(dim)
    direction[0] = 0.1
    strengths = [-2.0, -1.0, 0.0, 1.0, 2.0]
    res = editing_metrics(BrightnessGenerator(), latents, lambda c, s: c + s * direction, strengths,
                          BrightnessNet(), "smile", batch=2, return_images=3)
    assert res["slope"]["mean"] == pytest.approx(0.1, abs=1e-6) and res["slope"]["std"] < 1e-6
    assert res["slope_pooled"] == pytest.approx(0.1, abs=1e-6)
    np.testing.assert_allclose(res["target_change_per_strength"], [0.1 * s for s in strengths], atol=1e-6)
    # others: age moves by 0.05 * |s|, yaw never: mean over (nonzero s, 2 attributes) = 0.5 * 0.05 * 1.5
    assert res["other_change"]["mean"] == pytest.approx(0.0375, abs=1e-6)
    assert res["other_change_per_attribute"] == pytest.approx({"age": 0.075, "yaw": 0.0}, abs=1e-6)
    # identity: cos([1, b0], [1, b0 + 0.1 s]) averaged over the non-zero strengths (renders are float32)
    expected = []
    for b0 in base.double().tolist():
        cos = [(1 + b0 * (b0 + 0.1 * s)) / math.sqrt((1 + b0 ** 2) * (1 + (b0 + 0.1 * s) ** 2))
               for s in strengths if s != 0]
        expected.append(sum(cos) / len(cos))
    np.testing.assert_allclose(res["per_image"]["id_kept"], expected, atol=1e-6)
    assert res["id_kept_per_strength"][2] == pytest.approx(1.0, abs=1e-6)
    assert res["images"].shape == (3, 1 + len(strengths), 3, 4, 4)
    only_yaw = editing_metrics(BrightnessGenerator(), latents, lambda c, s: c + s * direction, strengths,
                               BrightnessNet(), "smile", other_attributes=["yaw"])
    assert only_yaw["other_change"]["mean"] == 0.0
    with pytest.raises(ValueError, match="not predicted"):
        editing_metrics(BrightnessGenerator(), latents, lambda c, s: c, strengths, BrightnessNet(), "glasses")
    with pytest.raises(ValueError, match="two distinct strengths"):
        editing_metrics(BrightnessGenerator(), latents, lambda c, s: c, [1.0, 1.0], BrightnessNet(), "smile")


def test_editing_metrics_with_real_networks():
    torch.manual_seed(0)
    G = Generator(**GEN).eval()
    net = DomainNet(**TINY_DOMAIN).eval()
    codes = G.mapping(torch.randn(3, 32)).unsqueeze(1).expand(-1, G.n_latent, -1).contiguous()
    zero = editing_metrics(G, codes, lambda c, s: c + s * 0.0, [-1.0, 1.0], net, "age")
    assert zero["slope"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert zero["id_kept"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert zero["other_change"]["mean"] == pytest.approx(0.0, abs=1e-9)
    d = F.normalize(torch.randn(32), dim=0) * 3
    moved = editing_metrics(G, codes, lambda c, s: c + s * d, [-1.0, 0.0, 1.0], net, "age")
    assert moved["other_change"]["mean"] > 0 and moved["id_kept"]["mean"] < 1
    assert len(moved["other_attributes"]) == len(net.attribute_names) - 1


def test_least_squares_slopes():
    s = torch.tensor([0.0, 1.0, 3.0])
    y = torch.stack([2 * s + 1, -s, torch.zeros(3)])
    torch.testing.assert_close(least_squares_slopes(s, y), torch.tensor([2.0, -1.0, 0.0]))
    with pytest.raises(ValueError):
        least_squares_slopes(torch.ones(3), y)
    assert editing_mod.render_codes(BrightnessGenerator(), torch.full((1, 2), 3.0)).max() == 1.0  # clamped


# ---------------------------------------------------------------------------------------------------- tables
def test_tables_writers(tmp_path):
    metrics = [MetricInfo("mse", "mean squared error", False), MetricInfo("psnr", "PSNR", True, decimals=2),
               MetricInfo("fd", "Fréchet distance", False, weights="/w/net.pt", per_image=False)]
    results = [ResultEntry("a", "w", "mse", 0.2, 0.01, 3), ResultEntry("a", "w", "psnr", 20.0, 1.0, 3),
               ResultEntry("b", "wplus_f", "mse", 0.1, 0.02, 3), ResultEntry("b", "wplus_f", "psnr", float("nan"),
                                                                            float("nan"), 0, 3),
               ResultEntry("b", "wplus_f", "fd", 1.5, None, 3, weights="/w/net.pt")]
    img = tmp_path / "x.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(img)
    report = Report("Test | report", metrics, results, notes=["LPIPS not computed: needs `file.pth`"],
                    sections={"summary": "two methods"},
                    per_image=[{"image": "i0", "method": "a", "representation": "w", "mse": 0.2, "psnr": 20.0}],
                    grids=[ImageGrid("Grid", ["input"], [GridRow("i0", [("input", img)])])])
    table = markdown_table(report)
    assert table.splitlines()[0] == "| method | repr. | n | mse ↓ | psnr ↑ | fd ↓ |"
    assert "| b | W+F | 0/3 | **0.1000 ± 0.0200** | n/a | 1.5000 |" in table
    paths = write_all(report, tmp_path / "out", embed_images=True)
    rows = _read_csv(paths["csv"])
    assert rows[1]["psnr"] == "" and rows[1]["fd"] == "1.5" and rows[1]["fd_std"] == "" and rows[0]["mse"] == "0.2"
    data = json.loads(paths["json"].read_text())
    assert data["results"][3]["mean"] is None and data["summary"] == "two methods"
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<code>file.pth</code>" in page and "Test | report" in page
    assert _read_csv(paths["per_image"]) == [{"image": "i0", "method": "a", "representation": "w", "mse": "0.2",
                                              "psnr": "20.0"}]
    relative = write_all(report, tmp_path / "out2")["html"].read_text()
    assert 'src="../x.png"' in relative
    s = summarize([1.0, 2.0, float("inf"), 4.0])
    assert s["n"] == 3 and s["n_invalid"] == 1 and s["mean"] == pytest.approx(7 / 3)
    assert s["std"] == pytest.approx(np.std([1.0, 2.0, 4.0]))


def test_id_dlib_is_its_own_column_on_real_faces(tmp_path):
    """--id-dlib: dlib face-recognition similarity, reported as id_dlib (never as the paper's ID); a perfect copy of
    a real face scores ~1. Skips without the [align] extra."""
    skimage_data = pytest.importorskip("skimage.data")
    from clcae.align.detect import AlignExtraMissing

    try:
        suite = build_metric_suite(use_hub_cache=False, id_dlib=True)
    except EvaluationError as e:
        if "align" in str(e):
            pytest.skip(f"align extra not installed: {e}")
        raise
    assert isinstance(AlignExtraMissing, type)
    names = [m.name for m in suite.metric_infos()]
    assert "id_dlib" in names and "id_arcface" not in names
    data = tmp_path / "faces"
    data.mkdir()
    Image.fromarray(skimage_data.astronaut()[20:276, 120:376]).save(data / "astronaut.png")
    result = evaluate([EvalMethod("copy", CopyInverter(256))], FolderSource(data), suite, protocol="celebahq")
    entry = next(e for e in result.to_report("t").results if e.metric == "id_dlib")
    assert entry.mean > 0.99 and entry.n == 1  # the protocol saves outputs as 8-bit: near, not exactly, 1
