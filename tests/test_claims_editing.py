"""benchmarks/claims_editing.py (issue 23, claim 3): edits at equal target change, against the renderer's face."""
import json

import pytest
import torch

from clcae.checkpoints import save_inverter
from clcae.data.synthfaces import SynthFaces
from clcae.editing.interfacegan import save_direction
from clcae.networks.domain import DomainNet, save_domain_net


@pytest.fixture
def mod(benchmark_module):
    return benchmark_module("claims_editing")


@pytest.fixture
def clcae(tiny_inverters):
    """A tiny CLCAE inverter with a residual F branch and a non-zero correction."""
    inv = tiny_inverters(feature_residual=True)["clcae"]
    with torch.no_grad():   # a non-zero correction (the residual branch's last layer starts at zero)
        for p in inv.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return inv


def test_the_result_renderer_carries_the_f_correction_and_the_renderer_redraws_the_input(mod, clcae):
    inv = clcae
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = inv.invert(x)
    r = mod._ResultRenderer(inv.decoder, out["f_delta"], inv.idx_k)
    assert torch.allclose(r.synthesis(out["wplus"]), out["image_wplus_f"], atol=1e-5)
    assert not torch.allclose(out["image_wplus_f"], out["image_wplus"], atol=1e-4)
    images, labels = mod.test_images(3, seed=0, res=32)
    assert torch.equal(images[1], SynthFaces(3, res=32, split="test")[1][0])
    same = mod.renderer_edits(labels, "smile", [0.0, 0.0, 0.0], 32, 0)
    assert torch.allclose(same, images, atol=1e-6)
    moved = mod.renderer_edits(labels, "smile", [0.8, 0.8, 0.8], 32, 0)
    assert (moved - images).abs().amax() > 0.1


def test_gated_and_encoder_edit_renderers_reproduce_the_unedited_result(mod, clcae):
    from clcae.editing import encoder_edit

    inv = clcae
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = inv.invert(x)
    gated = mod._ResultRenderer(inv.decoder, out["f_delta"], inv.idx_k, 0.5, out["wplus"])
    assert torch.allclose(gated.synthesis(out["wplus"]), out["image_wplus_f"], atol=1e-5)
    enc = mod._EncoderEditRenderer(inv, x, out["wplus"], out["image_wplus_f"])
    assert torch.equal(enc.synthesis(out["wplus"]), out["image_wplus_f"])
    d = torch.randn(32)
    edited = enc.synthesis(out["wplus"] + 1.5 * d)
    assert torch.allclose(edited, encoder_edit(inv, x, 1.5 * d)["image_wplus_f"], atol=1e-5)
    layered = out["wplus"].clone()
    layered[:, 0] += d
    with pytest.raises(ValueError, match="every layer"):
        enc.synthesis(layered)


def test_edits_reach_the_target_change_for_each_method(tmp_path, mod, clcae):
    inv = clcae
    save_inverter(inv, tmp_path / "clcae.pt")
    torch.manual_seed(1)
    save_domain_net(DomainNet(input_size=16, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8,
                              attr_reduce=4, attr_hidden=8).eval(), tmp_path / "domain.pt")
    torch.manual_seed(2)
    save_direction(tmp_path / "smile.pt", torch.randn(32), attribute="smile", generator=inv.decoder)
    out = tmp_path / "out"
    rc = mod.main(["--method", f"clcae={tmp_path / 'clcae.pt'}", "--edit", f"smile={tmp_path / 'smile.pt'}",
                   "--domain-net", str(tmp_path / "domain.pt"), "--n", "4", "--target-change", "0.002",
                   "--strengths", "-4", "0", "4", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())["results"]["clcae"]
    e = res["edits"]["smile"]
    assert res["result"] == "W+F (F carried)" and len(e["curve"]["id_kept"]) == 3
    if "strength" in e:   # an untrained network's attribute may not move at all: then the row says so
        assert e["reached"] == (abs(e["target_change"] - 0.002) <= 0.002 * 0.02)
        assert e["mse_to_renderer"] > 0 and 0 < e["id_kept"] <= 1 + 1e-6
    else:
        assert "does not move" in e["note"]
    assert (out / "curves.png").is_file() and "smile" in (out / "results.md").read_text()
    if "strength" in e:
        from PIL import Image
        grid = Image.open(out / "edits_smile.png")   # 4 rows of input | renderer | clcae, 2x
        assert grid.size == (2 * (3 * 34 + 2), 2 * (4 * 34 + 2))


def test_find_strength_rescales_a_curved_response_and_gives_up_on_the_wrong_sign(mod):
    calls = []

    def measure(s):
        calls.append(s)
        return 0.1 * s + 0.02 * s ** 3      # steeper than its slope at 0

    s, got, ok = mod.find_strength(measure, lambda r: r, 0.5, start=5.0)
    assert ok and abs(got - 0.5) <= 0.01 and 1 < len(calls) <= 8 and s < 5.0
    s, got, ok = mod.find_strength(lambda s: -0.1 * s, lambda r: r, 0.5, start=5.0)
    assert not ok and got < 0
