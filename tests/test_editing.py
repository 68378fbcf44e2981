"""Editing (clcae.editing, scripts/edit.py, find_directions.py, ganspace_pca.py): InterFaceGAN directions and their
files, GANSpace PCA and edits, SeFa, the F-space correction for W+F results, and the scripts end to end.

Everything runs on a tiny 32 px generator on the CPU.
"""
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clcae.checkpoints import CheckpointError, save_generator, save_inverter
from clcae.editing import (PCA, apply_direction, apply_ganspace, apply_sefa, carry_feature, compute_pca,
                           edit_and_render, edit_gate, encoder_edit, from_official_edit, generator_fingerprint,
                           learn_direction,
                           load_direction, load_pca, modulation_weights, orthogonalize, pca_from_samples,
                           sample_scores, save_direction, save_pca, sefa_directions, style_layers)
from clcae.editing.folder import GRID_PADDING
from clcae.inversion import build_inverter
from clcae.networks.domain import DomainNet, save_domain_net
from clcae.networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]
GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
TRUNK = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


edit_script = _script("edit")


def _generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**GEN).eval().requires_grad_(False)
    for i in range(G.num_layers):  # non-zero noise strength, so the noise buffers matter
        getattr(G.convs[i - 1] if i else G.conv1, "noise").weight.fill_(0.1)
    G.latent_avg.copy_(G.mean_latent(256))
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return _generator()


def _codes(G: Generator, b: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(b, G.style_dim, generator=g))
        wplus = G.to_wplus(w) + 0.2 * torch.randn(b, G.n_latent, G.style_dim, generator=g)
        _, feats = G.synthesis(wplus, return_features=True)
    f = feats[5] + 0.5 * torch.randn(feats[5].shape, generator=g)
    return {"w": w, "wplus": wplus, "f": f}


# ---------------------------------------------------------------------------------------------------- InterFaceGAN
def _planted(n: int = 3000, dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(dim, generator=g)
    d /= d.norm()
    x = 2.0 * torch.randn(n, dim, generator=g) + 0.5  # an offset, as W samples have
    scores = x @ d + 0.1 * torch.randn(n, generator=g)
    return x, scores, d


@pytest.mark.parametrize("method", ["svm", "logistic", "linear"])
def test_learned_direction_is_unit_and_recovers_a_planted_direction(method):
    x, scores, d = _planted()
    direction, info = learn_direction(x, scores, method=method, fraction=0.2)
    assert direction.shape == (16,) and direction.dtype == torch.float32
    assert abs(float(direction.norm()) - 1) < 1e-5
    assert float(direction @ d) > 0.95  # the right line and pointing towards higher scores
    if method == "linear":
        assert info["val_correlation"] > 0.9
    else:
        assert info["val_accuracy"] > 0.95 and info["n_positive"] == info["n_negative"] == 600
    flipped, _ = learn_direction(x, -scores, method=method, fraction=0.2)
    assert float(flipped @ d) < -0.95


def test_conditional_direction_is_orthogonal_to_the_conditions():
    x, scores, d = _planted()
    g = torch.Generator().manual_seed(5)
    cond = torch.randn(2, 16, generator=g)
    direction, info = learn_direction(x, scores, condition_on=list(cond))
    assert abs(float(direction.norm()) - 1) < 1e-5
    assert torch.allclose(cond @ direction, torch.zeros(2), atol=1e-5)
    assert 0 < info["cos_to_unconditioned"] < 1
    # the projection of one unit condition: the closed form d - (d.c)c, renormalised
    c = cond[0] / cond[0].norm()
    expected = d - (d @ c) * c
    assert torch.allclose(orthogonalize(d, [cond[0]]), expected / expected.norm(), atol=1e-6)
    with pytest.raises(ValueError, match="span"):
        orthogonalize(c, [c * 3])


def test_learn_direction_rejects_bad_input():
    x, scores, _ = _planted(n=40)
    with pytest.raises(ValueError, match="per side"):
        learn_direction(x, scores, fraction=0.01)
    with pytest.raises(ValueError, match=r"\[N\]"):
        learn_direction(x, scores[:10])
    with pytest.raises(ValueError, match="method"):
        learn_direction(x, scores, method="pca")
    with pytest.raises(ValueError, match="overlap"):
        learn_direction(x, torch.zeros(40))


def test_apply_direction_shapes_layers_and_per_sample_strengths():
    g = torch.Generator().manual_seed(0)
    w, wplus = torch.randn(3, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    d = torch.randn(8, generator=g)
    assert torch.allclose(apply_direction(w, d, 2.0), w + 2 * d)
    assert torch.allclose(apply_direction(w, d[None], 2.0), w + 2 * d)
    s = torch.tensor([-1.0, 0.0, 2.0])
    out = apply_direction(wplus, d, s, layers=[1, 3])
    assert torch.equal(out[:, [0, 2, 4]], wplus[:, [0, 2, 4]])
    assert torch.allclose(out[:, [1, 3]], wplus[:, [1, 3]] + s[:, None, None] * d)
    assert torch.equal(out[1], wplus[1])
    rows = torch.randn(5, 8, generator=g)
    assert torch.allclose(apply_direction(wplus, rows, 1.5), wplus + 1.5 * rows)
    with pytest.raises(ValueError, match="per-layer"):
        apply_direction(w, rows, 1.0)
    with pytest.raises(ValueError, match="no layers"):
        apply_direction(w, d, 1.0, layers=[0])
    with pytest.raises(ValueError, match="layer indices"):
        apply_direction(wplus, d, 1.0, layers=[5])
    with pytest.raises(ValueError, match="dimension"):
        apply_direction(wplus, torch.randn(7), 1.0)
    with pytest.raises(ValueError, match=r"\[B\]"):
        apply_direction(wplus, d, torch.ones(2))


def test_official_direction_files_load(tmp_path, G):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(1, 32, generator=g)
    torch.save(d, tmp_path / "smile.pt")  # age.pt / smile.pt layout
    got = load_direction(tmp_path / "smile.pt", generator=G)
    assert got.vector.shape == (32,) and torch.equal(got.vector, d[0]) and got.attribute is None
    rows = torch.randn(1, G.n_latent, 32, generator=g)
    torch.save(rows, tmp_path / "pose.pt")  # pose.pt layout [1, n, D]
    torch.save(rows[0].clone(), tmp_path / "pose2.pt")  # [n, D]
    with pytest.warns(UserWarning, match="only row 0"):
        first = load_direction(tmp_path / "pose.pt", generator=G)
    assert torch.equal(first.vector, rows[0, 0])
    per = load_direction(tmp_path / "pose2.pt", generator=G, per_layer=True)
    assert per.per_layer and torch.equal(per.vector, rows[0])
    np.save(tmp_path / "boundary.npy", d.numpy())  # InterFaceGAN's own boundaries
    assert torch.equal(load_direction(tmp_path / "boundary.npy").vector, d[0])
    torch.save(torch.randn(1, 16), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="dimension 16.*32"):
        load_direction(tmp_path / "other.pt", generator=G)
    torch.save(torch.randn(3, 32), tmp_path / "rows3.pt")
    with pytest.raises(CheckpointError, match="3 layer rows"):
        load_direction(tmp_path / "rows3.pt", generator=G, per_layer=True)
    torch.save({"comp": torch.randn(3, 32)}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a clcae direction"):
        load_direction(tmp_path / "dict.pt")
    torch.save(torch.full((1, 32), float("nan")), tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_direction(tmp_path / "nan.pt")


def test_our_direction_format_round_trips_with_a_raw_copy(tmp_path, G):
    d = torch.nn.functional.normalize(torch.randn(32), dim=0)
    save_direction(tmp_path / "smile.pt", d, attribute="smile", layers=[0, 1, 2], generator=G,
                   meta={"val_accuracy": 0.9}, raw_path=tmp_path / "smile_raw.pt")
    obj = torch.load(tmp_path / "smile.pt", weights_only=True)
    assert obj["format"] == "clcae.direction" and obj["generator"]["sha256"] == generator_fingerprint(G)["sha256"]
    got = load_direction(tmp_path / "smile.pt", generator=G)
    assert torch.equal(got.vector, d) and got.attribute == "smile" and got.layers == (0, 1, 2)
    assert got.meta["val_accuracy"] == 0.9
    raw = torch.load(tmp_path / "smile_raw.pt", weights_only=True)  # what the official scripts do
    assert raw.shape == (1, 32) and torch.equal(raw[0], d)
    other = _generator(seed=3)
    with pytest.warns(UserWarning, match="another generator"):
        load_direction(tmp_path / "smile.pt", generator=other)


def test_sample_scores_is_reproducible(G):
    score = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731 - any image -> [B] function
    w1, s1 = sample_scores(G, score, 10, seed=4, batch=4)
    w2, s2 = sample_scores(G, score, 6, seed=4, batch=6)
    assert w1.shape == (10, 32) and s1.shape == (10,)
    assert torch.allclose(w1[:6], w2, atol=1e-6) and torch.allclose(s1[:6], s2, atol=1e-5)
    with pytest.raises(ValueError, match="score_fn"):
        sample_scores(G, lambda x: x.mean(), 4)


# ---------------------------------------------------------------------------------------------------- F space
def test_zero_edit_reproduces_the_unedited_results_exactly(G):
    lat = _codes(G, 2)
    with torch.no_grad():
        ref_f = G.synthesis(lat["wplus"], features_in={5: lat["f"]}, feature_scale=0.7)
        ref_wplus = G.synthesis(lat["wplus"])
        ref_w = G.synthesis(lat["w"])
    res = edit_and_render(G, lat, lambda c: apply_direction(c, torch.randn(32), 0.0), idx_k=5, feature_scale=0.7)
    assert torch.equal(res["f_edited"], lat["f"])
    assert torch.equal(res["image_wplus_f"], ref_f)
    assert torch.equal(res["image_wplus"], ref_wplus)
    assert torch.equal(res["image_w"], ref_w)


def test_edited_feature_follows_the_formula_per_sample(G):
    lat = _codes(G, 2)
    d = torch.randn(32, generator=torch.Generator().manual_seed(9))
    s = torch.tensor([2.0, -1.0])
    res = edit_and_render(G, lat, lambda c: apply_direction(c, d, s), idx_k=5)
    with torch.no_grad():
        edited = lat["wplus"] + s[:, None, None] * d
        # one sample at a time: each sample's correction is its own (the official script used sample 0's)
        for i in range(2):
            _, fe = G.synthesis(edited[i:i + 1], return_features=True)
            _, fo = G.synthesis(lat["wplus"][i:i + 1], return_features=True)
            expected = lat["f"][i:i + 1] + fe[5] - fo[5]
            assert torch.allclose(res["f_edited"][i:i + 1], expected, atol=1e-5)
        image = G.synthesis(edited, features_in={5: res["f_edited"]})
        w_edit = G.synthesis(G.to_wplus(lat["w"]) + s[:, None, None] * d)
    assert torch.allclose(res["wplus_edited"], edited)
    assert torch.allclose(res["image_wplus_f"], image, atol=1e-5)
    assert torch.allclose(res["image_w"], w_edit, atol=1e-5)
    assert not torch.allclose(res["f_edited"], lat["f"])
    # a given f_gen (what the inverters return) gives the same result without recomputing it
    with torch.no_grad():
        _, feats = G.synthesis(lat["wplus"], return_features=True)
    again = carry_feature(G, lat["wplus"], edited, lat["f"], 5, f_gen=feats[5])
    assert torch.allclose(again["f_edited"], res["f_edited"], atol=1e-6)


def test_edit_gate_fades_the_correction_only_where_the_edit_redraws(G):
    f_gen = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(edit_gate(f_gen, f_gen, 0.5), torch.ones(2, 1, 4, 4))           # no edit: kept everywhere
    moved = f_gen.clone()
    moved[0, :, 1, 2] += 10.0                                                          # one position of image 0
    m = edit_gate(f_gen, moved, 0.5)
    assert m[0, 0, 1, 2] < 1e-3 and m[1].eq(1).all()
    assert m[0].flatten().topk(15).values.eq(1).all()                                  # every other position kept
    assert torch.equal(edit_gate(f_gen, moved, 0.0), torch.ones(2, 1, 4, 4))           # tau 0: off
    # in an edit: a zero edit reproduces the unedited feature exactly; a real one follows G_k(W+e) + (f - G_k(W+)) m
    lat = _codes(G, 2)
    same = edit_and_render(G, lat, lambda c: c, idx_k=5, gate=0.5)
    assert torch.equal(same["f_edited"], lat["f"])
    d = torch.randn(32, generator=torch.Generator().manual_seed(9))
    res = edit_and_render(G, lat, lambda c: apply_direction(c, d, 3.0), idx_k=5, gate=0.5)
    with torch.no_grad():
        _, fo = G.synthesis(lat["wplus"], return_features=True)
        _, fe = G.synthesis(apply_direction(lat["wplus"], d, 3.0), return_features=True)
    expected = fe[5] + (lat["f"] - fo[5]) * edit_gate(fo[5], fe[5], 0.5)
    assert torch.allclose(res["f_edited"], expected, atol=1e-5)
    plain = edit_and_render(G, lat, lambda c: apply_direction(c, d, 3.0), idx_k=5)
    assert not torch.allclose(res["f_edited"], plain["f_edited"])


def test_edit_and_render_renders_only_what_the_latents_have(G):
    lat = _codes(G, 1)
    only_wplus = edit_and_render(G, {"wplus": lat["wplus"]}, lambda c: c)
    assert set(k for k in only_wplus if k.startswith("image_")) == {"image_wplus"}
    with pytest.raises(ValueError, match="no 'wplus'"):
        edit_and_render(G, {"w": lat["w"], "f": lat["f"]}, lambda c: c)
    with pytest.raises(ValueError, match="activation at index"):
        edit_and_render(G, lat, lambda c: c, idx_k=3)  # f is 16 x 16; the activation at index 3 is 8 x 8
    with pytest.raises(ValueError, match="returned"):
        edit_and_render(G, lat, lambda c: c[:, :2])


# ---------------------------------------------------------------------------------------------------- GANSpace
def test_pca_recovers_a_planted_covariance():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    sigma = torch.tensor([5.0, 4.0, 3.0, 2.0] + [0.5] * 8, dtype=torch.float64)
    x = (torch.randn(40000, 12, generator=g, dtype=torch.float64) * sigma) @ q.T + 3.0
    pca = pca_from_samples(x, n_components=4)
    assert pca.comp.shape == (4, 12) and pca.std.shape == (4,)
    assert torch.allclose(pca.comp @ pca.comp.T, torch.eye(4), atol=1e-5)
    cos = (pca.comp.double() @ q[:, :4]).diagonal().abs()
    assert bool((cos > 0.99).all()), cos
    assert torch.allclose(pca.std.double(), sigma[:4], rtol=0.03)
    assert torch.allclose(pca.mean.double(), torch.full((12,), 3.0, dtype=torch.float64), atol=0.05)


def test_compute_pca_on_a_generator(G):
    pca = compute_pca(G, n_samples=3000, seed=1, n_components=10, batch=700)
    assert pca.comp.shape == (10, 32)
    assert torch.allclose(pca.comp @ pca.comp.T, torch.eye(10), atol=1e-5)
    assert bool((pca.std[:-1] >= pca.std[1:]).all())
    # the streamed float64 moments equal a PCA of the same samples held in memory
    z = torch.randn(3000, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = pca_from_samples(G.mapping(z), n_components=10)
    assert torch.allclose(pca.comp, ref.comp, atol=1e-4) and torch.allclose(pca.std, ref.std, rtol=1e-4)
    assert pca.meta["generator"]["sha256"] == generator_fingerprint(G)["sha256"]


def test_ganspace_edits_relative_and_absolute():
    g = torch.Generator().manual_seed(0)
    comp, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    pca = PCA(comp=comp.T.contiguous(), std=torch.linspace(3, 1, 8), mean=torch.randn(8, generator=g))
    wplus = torch.randn(2, 6, 8, generator=g)
    s = torch.tensor([2.0, -1.0])
    out = apply_ganspace(wplus, pca, [(1, 2, 4, s)])
    delta = (s * pca.std[1])[:, None, None] * pca.comp[1]
    assert torch.allclose(out[:, 2:5], wplus[:, 2:5] + delta, atol=1e-6)  # last layer included
    assert torch.equal(out[:, [0, 1, 5]], wplus[:, [0, 1, 5]])
    assert torch.equal(apply_ganspace(wplus, pca, [(1, 2, 4, 0.0)]), wplus)
    absolute = apply_ganspace(wplus, pca, [(3, 0, 5, 1.5)], mode="absolute")
    coord = ((absolute[:, 0] - pca.mean) @ pca.comp[3]) / pca.std[3]
    assert torch.allclose(coord, torch.full((2,), 1.5), atol=1e-5)
    assert from_official_edit((54, 7, 8, 20)) == (54, 7, 7, 20.0)
    with pytest.raises(ValueError, match="layers"):
        apply_ganspace(wplus, pca, [(0, 3, 6, 1.0)])
    with pytest.raises(ValueError, match="component 8"):
        apply_ganspace(wplus, pca, [(8, 0, 1, 1.0)])
    with pytest.raises(ValueError, match="W\\+ codes"):
        apply_ganspace(wplus[:, 0], pca, [(0, 0, 0, 1.0)])


def test_pca_files_ours_and_official(tmp_path, G):
    pca = pca_from_samples(torch.randn(500, 32), n_components=5)
    save_pca(pca, tmp_path / "ours.pt")
    save_pca(pca, tmp_path / "official.pt", layout="official")
    off = torch.load(tmp_path / "official.pt", weights_only=True)
    assert set(off) == {"comp", "mean", "std"}
    assert off["comp"].shape == (5, 1, 32) and off["mean"].shape == (1, 32) and off["std"].shape == (5,)
    for name in ("ours.pt", "official.pt"):
        got = load_pca(tmp_path / name, generator=G)
        assert torch.equal(got.comp, pca.comp) and torch.equal(got.std, pca.std) and torch.equal(got.mean, pca.mean)
    torch.save({"comp": torch.randn(5, 1, 16), "mean": torch.randn(1, 16), "std": torch.ones(5)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="dimension 16"):
        load_pca(tmp_path / "x.pt", generator=G)
    torch.save(torch.randn(3), tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a GANSpace PCA"):
        load_pca(tmp_path / "y.pt")


# ---------------------------------------------------------------------------------------------------- SeFa
def test_sefa_directions_are_eigenvectors_of_the_modulation_gram(G):
    sefa = sefa_directions(G, layers="all", k=6)
    a, layers = modulation_weights(G, "all")
    assert layers == sefa.layers == tuple(range(G.n_latent - 1))
    assert a.shape == (sum(m.weight.shape[0] for k in layers for _, m in style_layers(G)[k]), 32)
    gram = a.T @ a
    for v, lam in zip(sefa.directions.double(), sefa.eigenvalues.double()):
        assert abs(float(v.norm()) - 1) < 1e-5
        assert torch.allclose(gram @ v, lam * v, atol=1e-4 * float(lam))
    assert bool((sefa.eigenvalues[:-1] >= sefa.eigenvalues[1:]).all())
    sub = sefa_directions(G, layers=[2, 3], k=2)
    a23, _ = modulation_weights(G, [2, 3])
    assert torch.allclose(a23.T @ a23 @ sub.directions[0].double(), sub.eigenvalues[0].double()
                          * sub.directions[0].double(), atol=1e-4 * float(sub.eigenvalues[0]))
    wplus = torch.randn(2, G.n_latent, 32)
    out = apply_sefa(wplus, sub, 1, torch.tensor([3.0, -3.0]))
    assert torch.equal(out[:, [0, 1, 4, 5, 6, 7]], wplus[:, [0, 1, 4, 5, 6, 7]])
    assert torch.allclose(out[:, 2:4], wplus[:, 2:4] + torch.tensor([3.0, -3.0])[:, None, None] * sub.directions[1])
    with pytest.raises(ValueError, match="ToRGB"):
        sefa_directions(G, layers=[G.n_latent - 1])
    assert sefa_directions(G, layers=[G.n_latent - 1], k=1, include_torgb=True).layers == (G.n_latent - 1,)


def test_style_layer_map_matches_the_synthesis(G):
    """style_layers(k) must list exactly the modulations that read W+[:, k] in a synthesis pass."""
    table = style_layers(G, include_torgb=True)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
             for k in table for name, m in table[k]]
    try:
        wplus = torch.randn(1, G.n_latent, 32)
        with torch.no_grad():
            G.synthesis(wplus)
    finally:
        for h in hooks:
            h.remove()
    for k, mods in table.items():
        for name, _ in mods:
            assert torch.equal(seen[name][0], wplus[0, k]), (k, name)
    assert len(seen) == sum(len(v) for v in table.values()) == 1 + len(G.convs) + 1 + len(G.to_rgbs)


# ---------------------------------------------------------------------------------------------------- scripts
def test_parse_strengths_and_edits():
    from clcae.editing.specs import parse_edit, parse_layers, parse_strengths as ps

    assert ps("-3,0,3") == [-3.0, 0.0, 3.0]
    assert ps("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]  # both ends included
    assert ps("2") == [2.0]
    for bad in ("", "a,b", "1:2", "1:2:1", "1:2:x"):
        with pytest.raises(ValueError):
            ps(bad)
    e = parse_edit("interfacegan:dirs/age.pt:-3:3:7")
    assert e.path == Path("dirs/age.pt") and len(e.strengths) == 7
    e = parse_edit("ganspace:pca.pt:54:7:8:-20,0,20")
    assert (e.component, e.first, e.last, e.strengths) == (54, 7, 8, [-20.0, 0.0, 20.0])
    e = parse_edit("ganspace:pca.pt:54:7:8:-20:20:5")
    assert (e.component, e.first, e.last, len(e.strengths)) == (54, 7, 8, 5)
    e = parse_edit("sefa:3:-15:15:11")
    assert e.index == 3 and e.strengths[0] == -15 and e.strengths[-1] == 15
    for bad in ("warp:x:1", "ganspace:pca.pt:1:2:1", "sefa:x:1", "ganspace:p.pt:1:2", "sefa:-1:1,2"):
        with pytest.raises(ValueError):
            parse_edit(bad)
    assert parse_layers("0-2,5") == [0, 1, 2, 5]


def _write_latents(folder: Path, G: Generator, ckpt: Path) -> None:
    lat = _codes(G, 2)
    (folder / "sub").mkdir(parents=True)
    torch.save({"w": lat["w"][0], "wplus": lat["wplus"][0], "f": lat["f"][0], "method": "clcae",
                "checkpoint": str(ckpt), "input_size": [32, 32], "idx_k": 5, "feature_scale": 1.0},
               folder / "a.pt")
    torch.save({"wplus": lat["wplus"][1], "method": "psp", "checkpoint": str(ckpt), "input_size": [32, 32]},
               folder / "sub" / "b.pt")
    (folder / "corrupt.pt").write_bytes(b"not a torch file")
    torch.save({"wplus": torch.randn(3, 32), "checkpoint": str(ckpt)}, folder / "wrong.pt")
    torch.save({"f": torch.randn(16, 16, 16), "checkpoint": str(ckpt)}, folder / "nocode.pt")


def test_edit_script_end_to_end(tmp_path, G):
    ckpt = tmp_path / "G.pt"
    save_generator(G, ckpt)
    _write_latents(tmp_path / "run" / "latents", G, ckpt)
    torch.save(torch.randn(1, 32), tmp_path / "smile.pt")
    save_pca(pca_from_samples(torch.randn(400, 32), n_components=4), tmp_path / "pca.pt", layout="official")
    out = tmp_path / "out"
    edits = ["--edit", f"interfacegan:{tmp_path / 'smile.pt'}:-2:2:5",
             "--edit", f"ganspace:{tmp_path / 'pca.pt'}:1:2:4:-1,1", "--edit", "sefa:0:-5,0,5"]
    argv = ["--latents", str(tmp_path / "run"), *edits, "--out", str(out), "--size", "full", "--batch", "2",
            "--device", "cpu", "--no-progress"]
    assert edit_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["total"]) == (2, 3, 5)
    reasons = {f["name"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"corrupt", "wrong", "nocode"}
    assert "not a readable checkpoint" in reasons["corrupt"] and "[8, 32]" in reasons["wrong"]
    assert "no 'w' or 'wplus'" in reasons["nocode"]
    cell = 32 + GRID_PADDING
    for label, n_strengths in (("interfacegan_smile", 5), ("ganspace_pca_c1_l2-4", 2), ("sefa_k0", 3)):
        grid = Image.open(out / label / "grids" / "a.jpg")
        assert grid.size == (n_strengths * cell + 2, 3 * cell + 2)  # rows w, wplus, wplus_f
        grid_b = Image.open(out / label / "grids" / "sub" / "b.jpg")
        assert grid_b.size == (n_strengths * cell + 2, cell + 2)  # W+ only
        assert len(list((out / label / "wplus_f" / "a").glob("*.png"))) == n_strengths
        assert not (out / label / "wplus_f" / "sub").exists()
    # the zero column of the sweep is the unedited inversion (up to 8-bit rounding)
    rec = torch.load(tmp_path / "run" / "latents" / "a.pt", weights_only=True)
    with torch.no_grad():
        ref = G.synthesis(rec["wplus"][None], features_in={5: rec["f"][None]})[0]
    saved = torch.from_numpy(np.array(Image.open(out / "sefa_k0" / "wplus_f" / "a" / "s+0.png"))).float()
    expected = ((ref.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0)
    assert float((saved - expected).abs().max()) <= 1.0
    edited = torch.from_numpy(np.array(Image.open(out / "sefa_k0" / "wplus_f" / "a" / "s+5.png"))).float()
    assert float((edited - expected).abs().mean()) > 1.0
    # resumable: a second run skips every finished image and leaves the files alone
    stamp = (out / "sefa_k0" / "grids" / "a.jpg").stat().st_mtime_ns
    assert edit_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 2, 3)
    assert (out / "sefa_k0" / "grids" / "a.jpg").stat().st_mtime_ns == stamp


def test_edit_script_argument_errors(tmp_path, G, capsys):
    ckpt = tmp_path / "G.pt"
    save_generator(G, ckpt)
    _write_latents(tmp_path / "lat", G, ckpt)
    base = ["--latents", str(tmp_path / "lat"), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"]
    assert edit_script.main([*base, "--edit", "interfacegan:missing.pt:1"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert edit_script.main([*base, "--edit", "sefa:0:1:2"]) == 2
    torch.save(torch.randn(1, 16), tmp_path / "d16.pt")  # the direction of another generator: every image fails
    assert edit_script.main([*base, "--edit", f"interfacegan:{tmp_path / 'd16.pt'}:1"]) == 1
    assert "dimension 16" in capsys.readouterr().err


def test_edit_script_on_images_with_an_encoder_edit(tmp_path):
    torch.manual_seed(0)
    inv = build_inverter(dict(arch="clcae", generator=GEN, input_size=[32, 32], idx_k=3,
                              encoder=dict(TRUNK, nhead=2, dim_feedforward=32, feature_channels=16,
                                           feature_downsample=0))).eval()
    inv.latent_avg.copy_(inv.decoder.mean_latent(256))
    save_inverter(inv, tmp_path / "clcae.pt")
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / "x.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnothing")
    d = torch.randn(1, 32)
    torch.save(d, tmp_path / "age.pt")
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "img"), "--checkpoint", str(tmp_path / "clcae.pt"), "--edit",
            f"interfacegan:{tmp_path / 'age.pt'}:-1,0,1", "--encoder-edit", "--out", str(out), "--size", "full",
            "--device", "cpu", "--no-progress"]
    assert edit_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (1, 1) and summary["failures"][0]["name"] == "broken"
    assert Image.open(out / "interfacegan_age" / "grids" / "x.jpg").size == (3 * 34 + 2, 3 * 34 + 2)
    # the library call behind it: the offset enters the encoder; w moves by exactly the offset
    x = torch.from_numpy(np.array(Image.open(tmp_path / "img" / "x.png"))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        plain = inv.invert(x)
        moved = encoder_edit(inv, x, 2.0 * d[0])
        zero = encoder_edit(inv, x, torch.zeros(32))
    assert torch.allclose(moved["w"], plain["w"] + 2.0 * d, atol=1e-5)
    assert torch.allclose(zero["image_wplus_f"], plain["image_wplus_f"], atol=1e-5)
    assert not torch.allclose(moved["wplus"], plain["wplus"] + 2.0 * d, atol=1e-3)  # W+ is re-predicted
    # latents naming our inverter checkpoint: the generator is its decoder
    torch.save({"w": plain["w"][0], "wplus": plain["wplus"][0], "f": plain["f"][0], "idx_k": 3,
                "checkpoint": str(tmp_path / "clcae.pt"), "input_size": [32, 32]}, tmp_path / "x.pt")
    assert edit_script.main(["--latents", str(tmp_path / "x.pt"), "--edit", f"interfacegan:{tmp_path / 'age.pt'}:0",
                             "--out", str(tmp_path / "out2"), "--size", "full", "--device", "cpu",
                             "--no-progress"]) == 0
    saved = np.array(Image.open(tmp_path / "out2" / "interfacegan_age" / "wplus_f" / "x" / "s+0.png")).astype(float)
    expected = ((plain["image_wplus_f"][0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(saved - expected).max() <= 1.0


def test_encoder_edit_of_a_residual_f_branch_adds_the_re_predicted_correction_once(tiny_inverters):
    inv = tiny_inverters(feature_residual=True)["clcae"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    d = torch.randn(32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = inv.invert(x)
        zero = encoder_edit(inv, x, torch.zeros(32))
        moved = encoder_edit(inv, x, 2.0 * d)
        ref = inv(x, images=(), w_offset=(2.0 * d).expand(2, -1))
        _, feats = inv.decoder.synthesis(ref["wplus"], noise_mode="const", return_features=True)
        image = inv.decoder.synthesis(ref["wplus"], noise_mode="const", features_in={3: ref["f_delta"]},
                                      feature_mode="add")
    assert torch.allclose(zero["image_wplus_f"], plain["image_wplus_f"], atol=1e-5)
    assert torch.allclose(moved["f_edited"], feats[3] + ref["f_delta"], atol=1e-5)     # G_k(W+_e) + Δf_e, once
    assert torch.allclose(moved["image_wplus_f"], image, atol=1e-5)
    assert not torch.allclose(moved["image_wplus_f"], plain["image_wplus_f"], atol=1e-3)


def _tiny_domain_net() -> DomainNet:
    torch.manual_seed(0)
    return DomainNet(input_size=16, stem_channels=4, channels=(8, 8), blocks=(1, 1), embed_dim=8, attr_reduce=4,
                     attr_hidden=8).eval()


def test_find_directions_and_ganspace_pca_scripts(tmp_path, G, capsys):
    save_generator(G, tmp_path / "G.pt")
    save_domain_net(_tiny_domain_net(), tmp_path / "net.pt")
    find = _script("find_directions")
    argv = ["--generator", str(tmp_path / "G.pt"), "--domain-net", str(tmp_path / "net.pt"), "--attribute", "smile",
            "--n", "200", "--fraction", "0.2", "--check-n", "4", "--cache", str(tmp_path / "cache.pt"), "--out",
            str(tmp_path / "smile.pt"), "--device", "cpu", "--no-progress"]
    assert find.main(argv) == 0
    got = load_direction(tmp_path / "smile.pt", generator=G)
    assert got.attribute == "smile" and abs(float(got.vector.norm()) - 1) < 1e-5
    assert got.meta["n_positive"] == 40 and set(got.meta["effect_check"]) == {"-3", "+0", "+3"}
    raw = torch.load(tmp_path / "smile_raw.pt", weights_only=True)
    assert raw.shape == (1, 32) and torch.equal(raw[0], got.vector)
    # the cache is reused (same samples -> the same direction), and a condition is projected out
    assert find.main([*argv[:-5], "--condition-on", str(tmp_path / "smile.pt"), "--attribute", "age", "--out",
                      str(tmp_path / "age.pt"), "--device", "cpu", "--no-progress"]) == 0
    assert "cached samples" in capsys.readouterr().out
    age = load_direction(tmp_path / "age.pt", generator=G)
    assert abs(float(age.vector @ got.vector)) < 1e-5
    assert find.main([*argv[:4], "--attribute", "hat", "--out", str(tmp_path / "x.pt"), "--device", "cpu"]) == 2

    pca_script = _script("ganspace_pca")
    assert pca_script.main(["--generator", str(tmp_path / "G.pt"), "--n", "1000", "--components", "6", "--out",
                            str(tmp_path / "pca.pt"), "--device", "cpu", "--no-progress"]) == 0
    pca = load_pca(tmp_path / "pca.pt", generator=G)
    assert pca.comp.shape == (6, 32) and math.isclose(pca.meta["n_samples"], 1000)
    ref = compute_pca(G, n_samples=1000, n_components=6)
    assert torch.allclose(pca.comp, ref.comp) and torch.allclose(pca.std, ref.std)


# ---------------------------------------------------------------------------------------------------- paste-back
def test_edit_script_pastes_back_into_the_photo(tmp_path, G, capsys):
    """--paste-back on latents that name an alignment record (made here from synthetic landmarks, no dlib): the
    full-size photo with each edited crop warped back; a clear message for latents without a usable record."""
    from clcae.align import align_face, load_alignment, paste_back, save_alignment

    ckpt = tmp_path / "G.pt"
    save_generator(G, ckpt)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    photo.save(tmp_path / "photo.png")
    landmarks = np.zeros((68, 2))  # an upright face: its square is axis-aligned
    landmarks[36:42], landmarks[42:48], landmarks[48], landmarks[54] = [130, 80], [170, 80], [135, 120], [165, 120]
    run_dir = tmp_path / "run"
    _, record = save_alignment(align_face(photo, landmarks, 32), run_dir / "aligned" / "x.png",
                               source=tmp_path / "photo.png")
    (run_dir / "aligned" / "moved.json").write_text(record.read_text())
    _, lost = save_alignment(align_face(photo, landmarks, 32), tmp_path / "lost.png", source=tmp_path / "gone.png")
    lat = _codes(G, 1)
    codes = {"w": lat["w"][0], "wplus": lat["wplus"][0], "f": lat["f"][0], "checkpoint": str(ckpt), "idx_k": 5}
    (run_dir / "latents").mkdir()
    torch.save(dict(codes, alignment=str(record)), run_dir / "latents" / "x.pt")
    torch.save(dict(codes, alignment=str(tmp_path / "elsewhere" / "moved.json")), run_dir / "latents" / "moved.pt")
    torch.save(codes, run_dir / "latents" / "plain.pt")
    torch.save(dict(codes, alignment=str(lost)), run_dir / "latents" / "lost.pt")
    out = tmp_path / "out"
    argv = ["--latents", str(run_dir), "--edit", "sefa:0:-3,3", "--paste-back", "--size", "full", "--out", str(out),
            "--device", "cpu", "--no-progress"]
    assert edit_script.main(argv) == 0
    err = capsys.readouterr().err
    assert "no paste-back for" in err and "carry no alignment record" in err
    assert "gone.png named by" in err and "does not exist here" in err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["pasted"]) == (4, 2)
    assert sorted(f["name"] for f in summary["not_pasted"]) == ["lost", "plain"]

    quad = load_alignment(record)["quad"]
    left, top = np.floor(quad.min(0)).astype(int)
    right, bottom = np.ceil(quad.max(0)).astype(int)
    original = np.asarray(photo, np.int16)
    for name in ("x", "moved"):  # 'moved': its record was found in the run's aligned/ folder
        for kind in ("w", "wplus", "wplus_f"):
            for s in ("-3", "+3"):
                pasted = np.asarray(Image.open(out / "pasted" / "sefa_k0" / kind / name / f"s{s}.png"), np.int16)
                assert pasted.shape == original.shape
                outside = np.ones(original.shape[:2], bool)
                outside[top:bottom, left:right] = False
                assert np.array_equal(pasted[outside], original[outside])
                edited = Image.open(out / "sefa_k0" / kind / name / f"s{s}.png")
                expected = np.asarray(paste_back(photo, edited, quad), np.int16)
                assert np.abs(pasted - expected).max() <= 1  # the edited crop, warped into its square
                assert np.abs(pasted - original)[top + 20:bottom - 20, left + 20:right - 20].mean() > 10
    assert not (out / "pasted" / "sefa_k0" / "wplus" / "plain").exists()
    assert (out / "sefa_k0" / "wplus" / "plain" / "s+3.png").is_file()  # edited all the same
    # resumable: finished pastes are skipped, a missing pasted file is redone, the others are reported again
    (out / "pasted" / "sefa_k0" / "w" / "x" / "s+3.png").unlink()
    assert edit_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["pasted"]) == (1, 3, 1)
    assert sorted(f["name"] for f in summary["not_pasted"]) == ["lost", "plain"]
    assert (out / "pasted" / "sefa_k0" / "w" / "x" / "s+3.png").is_file()
    assert edit_script.main([*argv, "--feather", "0.7"]) == 2
