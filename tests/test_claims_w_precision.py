"""benchmarks/claims_w_precision.py (issue 23, claim 1): distances of the codes to the true w that drew the image."""
import json

import torch

from clcae.checkpoints import save_inverter
from clcae.inversion import build_inverter


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


def test_true_codes_measure_zero_and_other_samples_measure_about_one(benchmark_module, tiny_inverters):
    mod = benchmark_module("claims_w_precision")
    G = tiny_inverters()["clcae"].decoder   # a 32 px generator with its average latent
    w = mod.sample_true_codes(G, 64, seed=3, psi=1.0)
    assert torch.equal(w, mod.sample_true_codes(G, 64, seed=3, psi=1.0))
    images = G.synthesis(w, noise_mode="const").clamp(-1, 1)
    spread = float((w - w.mean(0)).norm(dim=1).pow(2).mean().sqrt())
    exact = mod.measure(_Oracle(G, w), G, w, images, spread, batch=16)
    assert exact["w_dist"] < 1e-6 and exact["wplus_dist"] < 1e-6 and abs(exact["w_cos"] - 1) < 1e-5
    assert exact["mse_w"] < 1e-6 and len(exact["wplus_dist_layers"]) == G.n_latent
    other = mod.measure(_Oracle(G, w.roll(1, 0)), G, w, images, spread, batch=16)   # another sample's code
    assert 1.0 < other["w_dist"] < 1.8 and other["mse_w"] > 0.01                     # ~sqrt(2) spreads apart


def test_script_reports_each_method_and_refuses_a_wrong_input_size(tmp_path, benchmark_module, tiny_inverters):
    mod = benchmark_module("claims_w_precision")
    models = tiny_inverters(tmp_path)
    clcae = models["clcae"]
    out = tmp_path / "w.json"
    rc = mod.main(["--method", f"clcae={tmp_path / 'clcae.pt'}", "--method", f"psp={tmp_path / 'psp.pt'}",
                   "--generator", str(tmp_path / "G.pt"), "--domain-net", "", "--n", "8", "--batch", "4",
                   "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert res["clcae"]["w_source"] == "w" and res["psp"]["w_source"] == "mean of W+"
    assert all(r["w_dist"] > 0 and len(r["wplus_dist_layers"]) == clcae.n_latent for r in res.values())
    small = build_inverter(dict(models["psp"].config, input_size=[16, 16])).eval()
    small.decoder.load_state_dict(clcae.decoder.state_dict())
    save_inverter(small, tmp_path / "small.pt")
    assert mod.main(["--method", f"s={tmp_path / 'small.pt'}", "--generator", str(tmp_path / "G.pt"),
                     "--domain-net", "", "--n", "4"]) == 2
