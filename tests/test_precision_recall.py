"""Improved precision / recall (clcae.metrics.precision_recall) and the multi-network generator report
(clcae.metrics.generator_quality): closed-form cases and synthetic sets whose answer is known."""
import math

import pytest
import torch

from clcae.metrics.generator_quality import generator_quality_report, quality_from_features, real_reference_features
from clcae.metrics.precision_recall import knn_radii, manifold_coverage, precision_recall


def _col(*values):
    return torch.tensor(values, dtype=torch.float64).view(-1, 1)


def test_knn_radii_exclude_the_point_itself():
    x = _col(0, 1, 3, 7)
    assert knn_radii(x, 1).tolist() == [1, 1, 2, 4]
    assert knn_radii(x, 2).tolist() == [3, 2, 3, 6]
    # a duplicate is a neighbour at distance 0, the point itself is not
    assert knn_radii(_col(0, 0, 5), 1).tolist() == [0, 0, 5]
    with pytest.raises(ValueError):
        knn_radii(_col(0, 1), 2)


def test_precision_recall_in_closed_form():
    # reals 0, 1, 2, 3 (k=1 radii all 1); fakes 0.5 (inside) and 10 (outside): precision 1/2.
    # fake radii (k=1) are both 9.5, so every real lies within 9.5 of 0.5: recall 1.
    out = precision_recall(_col(0, 1, 2, 3), _col(0.5, 10), k=1)
    assert out["precision"] == 0.5 and out["recall"] == 1.0
    # swap the roles: real 0.5 and 10, fakes 0..3 -> fakes 0, 1 are within 9.5 of 0.5 and so are 2, 3 -> precision 1;
    # reals: 0.5 is within radius 1 of fake 0 or 1, 10 is not -> recall 1/2
    out = precision_recall(_col(0.5, 10), _col(0, 1, 2, 3), k=1)
    assert out["precision"] == 1.0 and out["recall"] == 0.5
    # the boundary counts as inside
    assert manifold_coverage(_col(0), torch.tensor([2.0]), _col(2, 2.0001)).tolist() == [True, False]


def test_identical_and_disjoint_sets():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    same = precision_recall(x, x.clone(), k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(x, x + 100.0, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_mode_collapse_keeps_precision_and_loses_recall():
    g = torch.Generator().manual_seed(1)
    centres = torch.zeros(2, 4)
    centres[1, 0] = 50.0  # two well-separated modes

    def sample(n, modes=(0, 1), scale=1.0):
        return centres[torch.tensor(modes)[torch.arange(n) % len(modes)]] + scale * torch.randn(n, 4, generator=g)

    real = sample(2000)
    fair = precision_recall(real, sample(2000), k=3)  # the same distribution: what finite samples give
    assert fair["precision"] > 0.9 and fair["recall"] > 0.9
    collapsed = precision_recall(real, sample(2000, modes=(0,)), k=3)  # only the first mode
    assert abs(collapsed["precision"] - fair["precision"]) < 0.05
    assert abs(collapsed["recall"] - fair["recall"] / 2) < 0.05  # only the reals of the covered mode
    # blur: samples shrunk towards each mode's centre stay in the real manifold but cover little of it
    blurred = precision_recall(real, sample(2000, scale=0.2), k=3)
    assert blurred["precision"] > 0.99 and blurred["recall"] < 0.5 * fair["recall"]


def test_quality_from_features_matches_its_parts():
    g = torch.Generator().manual_seed(2)
    real = {"reference": torch.randn(400, 4, generator=g), "other": torch.randn(400, 4, generator=g)}
    gen = torch.randn(400, 4, generator=g) * 2 + 1
    q = quality_from_features(real, gen, k=3)
    assert q["fd_generated_vs_test"] > 10 * q["fd_real_vs_real"]  # mean 1, std 2 vs N(0, I): FD = 4 + 4*(2-1)^2 = 8
    assert math.isclose(q["fd_generated_vs_test"], 8.0, rel_tol=0.25)
    assert q["precision_real_vs_real"] > 0.8 and q["recall_real_vs_real"] > 0.8
    assert q["recall"] > q["precision"]  # a wider set covers the reals but has many samples outside them


class _MeanColour(torch.nn.Module):
    """A 'feature network' in closed form: the mean colour of each image ``[B, 3]``."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class _ConstantG(torch.nn.Module):
    """A 'generator' that draws flat grey images: every sample is the same point in any feature space."""

    style_dim, size = 4, 16

    def forward(self, z, truncation=1.0, noise_mode="random"):
        return torch.zeros(z.shape[0], 3, self.size, self.size)


def test_generator_report_uses_the_same_images_for_every_network():
    nets = {"colour": _MeanColour(), "colour_x2": lambda x: 2 * _MeanColour()(x)}
    real = real_reference_features(nets, 24, 16)
    torch.testing.assert_close(real["colour_x2"]["reference"], 2 * real["colour"]["reference"])
    report = generator_quality_report(_ConstantG(), nets, n=24, k=3, real=real)
    a, b = report["colour"], report["colour_x2"]
    assert math.isclose(b["fd_generated_vs_test"], 4 * a["fd_generated_vs_test"], rel_tol=1e-6)  # FD scales by c^2
    assert a["precision"] == b["precision"] and a["recall"] == b["recall"]
    # one repeated grey image: at most one point of the real manifold's coverage, recall ~0
    assert a["recall"] <= 1 / 24
    with pytest.raises(ValueError):
        generator_quality_report(_ConstantG(), nets, n=12, real=real)


def test_eval_generator_script_reports_both_networks(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from clcae.checkpoints import save_generator
    from clcae.networks.domain import DomainNet, save_domain_net
    from clcae.networks.stylegan2 import Generator

    torch.manual_seed(0)
    save_generator(Generator(16, 32, 2, channel_base=256, channel_max=16), tmp_path / "G.pt")
    save_domain_net(DomainNet(input_size=16, stem_channels=4, channels=(8, 16), blocks=(1, 1), embed_dim=8,
                              attr_reduce=4, attr_hidden=8), tmp_path / "a.pt")
    save_domain_net(DomainNet(input_size=16, stem_channels=6, channels=(8, 12), blocks=(2, 1), embed_dim=8,
                              attr_reduce=4, attr_hidden=8), tmp_path / "b.pt")
    spec = importlib.util.spec_from_file_location(
        "eval_generator_script", Path(__file__).resolve().parents[1] / "scripts" / "eval_generator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = ["--generator", str(tmp_path / "G.pt"), "--domain-net", str(tmp_path / "a.pt"), "--n", "12",
            "--batch", "5"]
    assert mod.main(base + ["--json", str(tmp_path / "old.json")]) == 0
    assert mod.main(base + ["--independent-net", str(tmp_path / "b.pt"), "--k", "2",
                            "--json", str(tmp_path / "new.json")]) == 0
    old, new = (json.loads((tmp_path / f"{x}.json").read_text()) for x in ("old", "new"))
    assert "spaces" not in old and old["domain_net"] == str(tmp_path / "a.pt")  # the report without it is unchanged
    # the same images and the same network give the same distance with or without the second network
    assert math.isclose(new["fd_generated_vs_test"], old["fd_generated_vs_test"], rel_tol=1e-9)
    assert new["spaces"]["domain_net"]["fd_generated_vs_test"] == new["fd_generated_vs_test"]
    indep = new["spaces"]["independent_net"]
    assert indep["fd_generated_vs_test"] != new["fd_generated_vs_test"]
    assert 0 <= indep["precision"] <= 1 and 0 <= indep["recall"] <= 1 and new["k"] == 2
    with pytest.raises(SystemExit):
        mod.main(base[:-4] + ["--n", "2", "--independent-net", str(tmp_path / "b.pt"), "--k", "3"])


def test_generated_features_are_reproducible_and_leave_the_global_rng_alone():
    from clcae.metrics.generator_quality import generated_features
    from clcae.networks.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(16, 32, 2, channel_base=256, channel_max=16).eval()
    with torch.no_grad():  # noise weights start at 0; make the per-layer noise matter
        for m in G.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(1.0)
        z = torch.randn(2, 32)
        assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
    nets = {"colour": _MeanColour()}
    state = torch.get_rng_state()
    a = generated_features(G, nets, 6, batch=4, seed=3)["colour"]
    assert torch.equal(torch.get_rng_state(), state)  # the per-layer noise came from a forked, seeded RNG
    torch.manual_seed(123)  # whatever the caller's RNG holds
    b = generated_features(G, nets, 6, batch=4, seed=3)["colour"]
    assert torch.equal(a, b)
    assert not torch.equal(a, generated_features(G, nets, 6, batch=4, seed=4)["colour"])
