"""benchmarks/claims_w_precision.py (issue 23, claim 1): distances of the codes to the true w that drew the image."""
import importlib.util
import json
from pathlib import Path

import torch

from clcae.checkpoints import save_generator, save_inverter
from clcae.inversion import build_inverter
from clcae.networks.stylegan2 import Generator

REPO = Path(__file__).resolve().parents[1]
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
TRUNK = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32)


def _module():
    spec = importlib.util.spec_from_file_location("claims_w_precision", REPO / "benchmarks" / "claims_w_precision.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Oracle:
    """An 'inverter' that returns the true codes (or codes off by a known amount), batch after batch."""
    image_names = ("w",)

    def __init__(self, G, codes):
        self.G, self.codes, self.i = G, codes, 0

    def invert(self, x, images=None):
        w = self.codes[self.i:self.i + x.shape[0]]
        self.i += x.shape[0]
        out = {"w": w, "wplus": w[:, None].expand(-1, self.G.n_latent, -1)}
        if images and "w" in images:
            out["image_w"] = self.G.synthesis(w, noise_mode="const")
        return out


def test_true_codes_measure_zero_and_other_samples_measure_about_one():
    mod = _module()
    torch.manual_seed(0)
    G = Generator(**GEN).eval()
    G.latent_avg.copy_(G.mean_latent(256))
    w = mod.sample_true_codes(G, 64, seed=3, psi=1.0)
    assert torch.equal(w, mod.sample_true_codes(G, 64, seed=3, psi=1.0))
    images = G.synthesis(w, noise_mode="const").clamp(-1, 1)
    spread = float((w - w.mean(0)).norm(dim=1).pow(2).mean().sqrt())
    exact = mod.measure(_Oracle(G, w), G, w, images, spread, batch=16)
    assert exact["w_dist"] < 1e-6 and exact["wplus_dist"] < 1e-6 and abs(exact["w_cos"] - 1) < 1e-5
    assert exact["mse_w"] < 1e-6 and len(exact["wplus_dist_layers"]) == G.n_latent
    other = mod.measure(_Oracle(G, w.roll(1, 0)), G, w, images, spread, batch=16)   # another sample's code
    assert 1.0 < other["w_dist"] < 1.8 and other["mse_w"] > 0.01                     # ~sqrt(2) spreads apart


def test_script_reports_each_method_and_refuses_a_wrong_input_size(tmp_path):
    mod = _module()
    torch.manual_seed(0)
    clcae = build_inverter(dict(arch="clcae", generator=GEN, input_size=[32, 32], idx_k=3,
                                encoder=dict(TRUNK, nhead=2, dim_feedforward=32, feature_channels=16,
                                             feature_downsample=0))).eval()
    la = clcae.decoder.mean_latent(256)
    clcae.latent_avg.copy_(la)
    psp = build_inverter(dict(arch="psp", encoder=TRUNK, generator=GEN, input_size=[32, 32])).eval()
    psp.decoder.load_state_dict(clcae.decoder.state_dict())
    psp.latent_avg.copy_(la.expand(psp.n_latent, -1))
    save_inverter(clcae, tmp_path / "clcae.pt")
    save_inverter(psp, tmp_path / "psp.pt")
    clcae.decoder.latent_avg.copy_(la)
    save_generator(clcae.decoder, tmp_path / "G.pt")
    out = tmp_path / "w.json"
    rc = mod.main(["--method", f"clcae={tmp_path / 'clcae.pt'}", "--method", f"psp={tmp_path / 'psp.pt'}",
                   "--generator", str(tmp_path / "G.pt"), "--domain-net", "", "--n", "8", "--batch", "4",
                   "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert res["clcae"]["w_source"] == "w" and res["psp"]["w_source"] == "mean of W+"
    assert all(r["w_dist"] > 0 and len(r["wplus_dist_layers"]) == clcae.n_latent for r in res.values())
    small = build_inverter(dict(arch="psp", encoder=TRUNK, generator=GEN, input_size=[16, 16])).eval()
    small.decoder.load_state_dict(clcae.decoder.state_dict())
    save_inverter(small, tmp_path / "small.pt")
    assert mod.main(["--method", f"s={tmp_path / 'small.pt'}", "--generator", str(tmp_path / "G.pt"),
                     "--domain-net", "", "--n", "4"]) == 2
