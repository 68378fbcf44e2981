"""The SynthFaces domain network (clcae.networks.domain), its ArcFace head and identity similarity
(clcae.losses.identity), the Fréchet distance (clcae.metrics.frechet), the verification and attribute metrics
(clcae.metrics.verification), its training and evaluation (clcae.training.domain) and the CLI
scripts/train_domain_net.py: outputs, checkpoints, margins, closed-form distances and metrics, a tiny training run
that learns, resume, the evaluation's keys and the CLI's exit codes.

Everything runs on the CPU with tiny networks and a few dozen rendered images.
"""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clcae.checkpoints import CheckpointError, atomic_save
from clcae.data import synthfaces as sf
from clcae.losses.identity import ArcMarginHead, identity_loss, identity_similarity
from clcae.metrics import extract_features, feature_statistics, frechet_distance, frechet_distance_from_images
from clcae.metrics import verification as vm
from clcae.networks.domain import DomainNet, load_domain_net, save_domain_net
from clcae.training import domain as dn
from clcae.training.domain_options import OPTION_NAMES, DomainTrainOptions

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_domain_net.py"
SMALL = dict(stem_channels=8, channels=(8, 16, 16, 32), embed_dim=16, attr_reduce=8, attr_hidden=16)
# a tiny run: 8 persons x 4 images, a ~30 k parameter network, batch 16
TINY = dict(data="synthfaces", n=32, persons=8, steps=40, batch=16, lr=3e-3, stem_channels=8,
            channels="8,16,16,32", embed_dim=16, threads=1, log_every=10, checkpoint_every=10, val_every=0,
            eval_n=24, eval_persons=6, eval_pairs=40, warmup=0.05, margin_warmup=0.25, arc_s=16.0, arc_m=0.3)
QUIET = dict(tensorboard=False, progress=False)


@pytest.fixture(scope="module")
def cli():
    """scripts/train_domain_net.py loaded as a module, for its ``main`` (the logic is in clcae.training.domain)."""
    spec = importlib.util.spec_from_file_location("train_domain_net_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pytestmark = pytest.mark.usefixtures("one_thread")


def _faces(n=4, res=64, split="test"):
    ds = sf.SynthFaces(n, res, split, n_persons=n)
    return torch.stack([ds[i][0] for i in range(n)])


# ---------------------------------------------------------------------------------------------------- network
def test_outputs_shapes_and_ranges():
    net = DomainNet().eval()
    assert 0.5e6 < sum(p.numel() for p in net.parameters()) < 2.5e6
    x = torch.rand(5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net(x)
        assert set(out) == {"embed", "attributes", "attribute_logits", "features"}
        assert out["embed"].shape == (5, 128)
        assert torch.allclose(out["embed"].norm(dim=1), torch.ones(5), atol=1e-5)
        assert out["attributes"].shape == (5, len(sf.ATTRIBUTES))
        low = torch.tensor([a.low for a in sf.ATTRIBUTES])
        high = torch.tensor([a.high for a in sf.ATTRIBUTES])
        assert (out["attributes"] >= low).all() and (out["attributes"] <= high).all()
        assert net.attribute_names == sf.ATTRIBUTE_NAMES
        glasses = sf.ATTRIBUTE_NAMES.index("glasses")
        assert torch.allclose(out["attributes"][:, glasses], torch.sigmoid(out["attribute_logits"][:, glasses]))
        assert out["features"].shape == (5, 256) and (out["features"] >= 0).all()
        # the methods give what forward gives
        assert torch.allclose(net.embed(x), out["embed"], atol=1e-6)
        assert torch.allclose(net.attributes(x), out["attributes"], atol=1e-6)
        assert torch.allclose(net.features(x), out["features"], atol=1e-6)


def test_other_resolutions_are_resized_inside():
    net = DomainNet(**SMALL).eval()
    x64 = _faces(2)
    with torch.no_grad():
        ref = net(x64)
        for factor in (2, 4):  # a block-upsampled image area-averages back to the 64 px one exactly
            up = x64.repeat_interleave(factor, 2).repeat_interleave(factor, 3)
            out = net(up)
            for k in ref:
                assert torch.allclose(out[k], ref[k], atol=1e-5), (factor, k)
        assert net(F.interpolate(x64, size=(96, 96), mode="bilinear")).keys() == ref.keys()
        assert net.embed(F.interpolate(x64, size=(32, 32), mode="area")).shape == (2, 16)
    with pytest.raises(ValueError, match="square"):
        net(torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError, match="input_size"):
        DomainNet(input_size=48)
    with pytest.raises(ValueError, match="attributes"):
        DomainNet(attributes=["smile", "beard"])


def test_attribute_subset_maps_each_to_its_range():
    net = DomainNet(**SMALL, attributes=["age", "glasses", "yaw"]).eval()
    logits = torch.tensor([[-30.0, -30.0, -30.0], [30.0, 30.0, 30.0]])
    assert torch.allclose(net.logits_to_attributes(logits), torch.tensor([[0.0, 0.0, -1.0], [1.0, 1.0, 1.0]]))
    assert torch.allclose(net.normalise_attributes(torch.tensor([[0.5, 1.0, 0.0]])), torch.tensor([[0.5, 1.0, 0.5]]))


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_is_strict(tmp_path):
    net = DomainNet(**SMALL)
    with torch.no_grad():  # non-trivial BN statistics
        net.train()(_faces(4))
    net.eval()
    path = save_domain_net(net, tmp_path / "dn.pt", {"metrics": {"accuracy": 0.5}})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "clcae.domain_net" and raw["kind"] == "domain_net" and raw["format_version"] == 1
    assert raw["kwargs"]["channels"] == [8, 16, 16, 32] and raw["metrics"] == {"accuracy": 0.5}
    loaded = load_domain_net(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = _faces(3)
    with torch.no_grad():
        a, b = net(x), loaded(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k

    bad = dict(raw, state_dict={("stem.0.weightx" if k == "stem.0.weight" else k): v
                                for k, v in raw["state_dict"].items()})
    atomic_save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"stem\.0\.weight") as e:
        load_domain_net(tmp_path / "bad.pt")
    assert "stem.0.weightx" in str(e.value) and "missing" in str(e.value)

    shape = dict(raw, kwargs=dict(raw["kwargs"], embed_dim=32))
    atomic_save(shape, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_domain_net(tmp_path / "shape.pt")
    atomic_save(dict(raw, kind="generator"), tmp_path / "kind.pt")
    with pytest.raises(CheckpointError, match="not a domain_net"):
        load_domain_net(tmp_path / "kind.pt")
    atomic_save(dict(raw, kwargs=dict(raw["kwargs"], depth=3)), tmp_path / "kw.pt")
    with pytest.raises(CheckpointError, match="kwargs"):
        load_domain_net(tmp_path / "kw.pt")
    with pytest.raises(ValueError, match="state_dict"):
        save_domain_net(net, tmp_path / "x.pt", {"state_dict": {}})


# ---------------------------------------------------------------------------------------------------- identity
def test_arc_margin_logits():
    head = ArcMarginHead(2, 3, s=10.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]))  # centres at 0, 90, 180 degrees
    angles = torch.tensor([0.3, 1.2, 2.9])
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], 1) * 3.0  # not normalised: the head normalises
    labels = torch.tensor([0, 1, 0])
    cos = torch.stack([torch.cos(angles), torch.cos(angles - math.pi / 2), torch.cos(angles - math.pi)], 1)
    assert torch.allclose(head.cosine(emb), cos, atol=1e-6)
    assert torch.allclose(head(emb), 10 * cos, atol=1e-5)
    logits = head(emb, labels)
    expected = 10 * cos.clone()
    expected[0, 0] = 10 * math.cos(0.3 + 0.5)                # theta + m
    expected[1, 1] = 10 * math.cos(abs(1.2 - math.pi / 2) + 0.5)
    expected[2, 0] = 10 * (math.cos(2.9) - 0.5 * math.sin(0.5))  # theta > pi - m: the linear continuation
    assert torch.allclose(logits, expected, atol=1e-5)
    head.m = 0.0
    assert torch.allclose(head(emb, labels), 10 * cos, atol=1e-5)

    head = ArcMarginHead(4, 5, s=30.0, m=0.5)
    emb = F.normalize(head.weight.detach()[:2].clone(), dim=1).requires_grad_(True)  # theta = 0 exactly
    F.cross_entropy(head(emb, torch.tensor([0, 1])), torch.tensor([0, 1])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    with pytest.raises(ValueError):
        ArcMarginHead(4, 1)


def test_identity_similarity_and_loss_are_generic():
    class Pool(torch.nn.Module):  # any module with .embed works
        def embed(self, x):
            return x.mean(dim=(2, 3))

    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])[:, :, None, None].expand(2, 3, 4, 4)
    b = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[:, :, None, None].expand(2, 3, 4, 4)
    sim = identity_similarity(Pool(), a, b)
    assert torch.allclose(sim, torch.tensor([1.0, 1 / math.sqrt(2)]), atol=1e-6)

    net = DomainNet(**SMALL).eval().requires_grad_(False)
    x = _faces(2)
    assert torch.allclose(identity_similarity(net, x, x), torch.ones(2), atol=1e-5)
    y = x.clone().requires_grad_(True)
    loss = identity_loss(net, (y * 0.8).clamp(-1, 1), x)
    loss.backward()
    assert 0 <= float(loss.detach()) <= 2 and y.grad is not None and y.grad.abs().sum() > 0  # gradients reach the input


# ---------------------------------------------------------------------------------------------------- Fréchet
def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    # a rotation of both covariances changes nothing
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    assert frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T) == pytest.approx(
        expected, rel=1e-8)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance([0.5], [[4.0]], [0.0], [[1.0]]) == pytest.approx(0.25 + 1.0)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, np.diag(v1), mu2[:2], np.diag(v2[:2]))


def test_frechet_distance_from_samples():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 6))
    mu, sigma = feature_statistics(f)
    assert mu.dtype == np.float64 and sigma.shape == (6, 6)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    # samples of N(0, I) vs N(m, 4 I) in 4-D: FD = |m|^2 + 4 * (1 + 4 - 2 * 2) = |m|^2 + 4
    a = rng.normal(size=(40000, 4))
    b = rng.normal(size=(40000, 4)) * 2 + np.array([1.0, 0.0, 0.0, 1.0])
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(6.0, abs=0.15)
    # fewer samples than dimensions: singular covariances still give a finite, ~0 distance for identical sets
    few = torch.from_numpy(rng.normal(size=(10, 32)))
    d = frechet_distance(*feature_statistics(few), *feature_statistics(few))
    assert math.isfinite(d) and abs(d) < 1e-3
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 3)))


def test_frechet_distance_from_images():
    gen = torch.Generator().manual_seed(0)
    imgs_a = torch.rand(50, 3, 8, 8, generator=gen) * 2 - 1
    imgs_b = torch.rand(70, 3, 8, 8, generator=gen) * 2 - 1 + 0.3

    def feats(x):
        return x.mean(dim=(2, 3))

    got = frechet_distance_from_images(feats, imgs_a, imgs_b, batch=16)
    expected = frechet_distance(*feature_statistics(feats(imgs_a)), *feature_statistics(feats(imgs_b)))
    assert got == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_from_images(feats, imgs_a, imgs_a, batch=7) == pytest.approx(0.0, abs=1e-9)
    assert extract_features(feats, list(imgs_a[:5]), batch=2).shape == (5, 3)
    net = DomainNet(**SMALL).eval()
    assert frechet_distance_from_images(net.features, _faces(4), _faces(4), batch=3) == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- evaluation
def test_verification_helpers():
    pids = np.repeat(np.arange(10), 4)
    pairs, same = vm.sample_pairs(pids, 60, seed=1)
    assert pairs.shape == (60, 2) and same.sum() == 30
    assert len({tuple(p) for p in pairs.tolist()}) == 60 and (pairs[:, 0] != pairs[:, 1]).all()
    assert (pids[pairs[same, 0]] == pids[pairs[same, 1]]).all()
    assert (pids[pairs[~same, 0]] != pids[pairs[~same, 1]]).all()

    labels = np.array([1, 1, 0, 1, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    assert vm.roc_auc(scores, labels) == pytest.approx(8 / 9)
    thr, acc = vm.best_threshold(scores, labels)
    assert acc == pytest.approx(5 / 6) and ((scores > thr) == labels).mean() == pytest.approx(acc)
    assert vm.accuracy_at_threshold(scores, labels, thr) == pytest.approx(acc)
    assert thr == pytest.approx(0.75) or thr == pytest.approx(0.4)  # both cuts are best; midway between scores
    assert vm.roc_auc(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 0], bool)) == pytest.approx(0.75)  # ties
    assert vm.tar_at_far(scores, labels, 0.0) == pytest.approx(2 / 3)
    assert vm.tar_at_far(scores, labels, 1 / 3) == 1.0  # threshold 0.2: one negative (0.7) and every positive pass
    assert vm.tar_at_far(scores, labels, 1.0) == 1.0
    assert vm.accuracy_at_threshold(scores, labels, 0.5) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="positives and negatives"):
        vm.roc_auc(scores, np.ones(6, bool))


def test_cross_validated_accuracy_and_pair_similarities():
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    # folds: positives 0,1,0 and negatives 0,1,0 -> fold 0 = items {0, 2, 3, 5}, fold 1 = {1, 4}
    # fold 0's threshold comes from {0.8 T, 0.2 F}: 0.5; fold 1's from {0.9 T, 0.7 F, 0.3 T, 0.1 F}: 0.8
    accs, thrs = vm.cross_validated_accuracy(scores, labels)
    assert thrs == pytest.approx([0.5, 0.8]) and accs == pytest.approx([0.5, 0.5])
    order = np.array([0, 3, 1, 4, 2, 5])  # interleaved: each class keeps its order, so the folds are the same
    assert vm.cross_validated_accuracy(scores[order], labels[order]) == (accs, thrs)
    with pytest.raises(ValueError, match="n_folds"):
        vm.cross_validated_accuracy(scores, labels, 1)

    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    sim = vm.pair_similarities(emb, np.array([[0, 1], [0, 2], [2, 2]]))
    assert sim.dtype == np.float64 and sim == pytest.approx([0.0, 1 / math.sqrt(2), 1.0])

    # separable embeddings (one axis per person) verify perfectly
    pids = np.repeat(np.arange(10), 4)
    m = vm.verification_metrics(F.one_hot(torch.from_numpy(pids), 10).float(), pids, 40, seed=3)
    assert m["pairs"] == 40 and m["same_person_pairs"] == 20 and len(m["accuracy_folds"]) == 2
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["tar_at_far_1e-2"] == 1.0
    assert m["mean_similarity_same"] == pytest.approx(1.0) and m["mean_similarity_different"] == pytest.approx(0.0)


def test_attribute_errors():
    from collections import namedtuple

    Spec = namedtuple("Spec", "name low high kind")
    specs = [Spec("s", -1.0, 1.0, "continuous"), Spec("g", 0.0, 1.0, "binary"), Spec("t", 0.0, 2.0, "continuous")]
    pred = torch.tensor([[0.5, 0.9, 1.0], [-0.5, 0.2, 2.0], [0.0, 0.6, 0.0], [1.0, 0.4, 1.0]])
    target = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 2.0]])
    m = vm.attribute_errors(pred, target, specs)
    assert list(m) == ["g_accuracy", "g_majority_baseline", "mae", "mae_normalised", "mae_constant_baseline",
                       "mean_mae_normalised"]
    assert m["mae"] == pytest.approx({"s": 0.25, "t": 0.5})
    assert m["mae_normalised"] == pytest.approx({"s": 0.125, "t": 0.25})
    assert m["mae_constant_baseline"] == pytest.approx({"s": 0.75, "t": 0.5})
    assert m["mean_mae_normalised"] == pytest.approx(0.1875)
    assert m["g_accuracy"] == pytest.approx(0.75) and m["g_majority_baseline"] == pytest.approx(0.75)
    assert vm.majority_baseline(torch.tensor([False, False, False, True])) == pytest.approx(0.75)
    assert vm.constant_baseline_mae(torch.tensor([0.0, 0.0, 4.0, 4.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one column per attribute"):
        vm.attribute_errors(pred[:, :2], target[:, :2], specs)


def test_training_helpers():
    names = sf.ATTRIBUTE_NAMES
    boost = dn.parse_boost("eyes_open=4, smile=2", names)
    assert boost[names.index("eyes_open")] == 4 and boost[names.index("smile")] == 2 and boost.sum() == 4 + 2 + 9
    with pytest.raises(dn.ConfigError, match="beard"):
        dn.parse_boost("beard=2", names)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert torch.equal(dn.random_translate(x, 0, torch.Generator()), x)
    y = dn.random_translate(x, 1, torch.Generator().manual_seed(0))
    shifts = torch.randint(-1, 2, (2, 2), generator=torch.Generator().manual_seed(0)).tolist()
    for i, (dx, dy) in enumerate(shifts):  # interior pixels move by (dx, dy)
        assert torch.equal(y[i, :, 1:5, 1:5], x[i, :, 1 + dy:5 + dy, 1 + dx:5 + dx])
    opts = DomainTrainOptions(steps=100, lr=1.0, warmup=0.1, arc_m=0.5, margin_warmup=0.2)
    lrs = [dn.learning_rate(opts, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert dn.margin_at(opts, 0) == 0 and dn.margin_at(opts, 10) == pytest.approx(0.25)
    assert dn.margin_at(opts, 50) == 0.5


def test_evaluate_returns_the_metric_keys():
    net = DomainNet(**SMALL).eval()
    data = dn.render_split(24, 64, "test", 0, 6)
    assert data.images.dtype == torch.uint8 and set(data.person_ids.tolist()) == set(
        sf.person_ids_for_split("test", 6).tolist())
    m = dn.evaluate(net, data, n_pairs=40)
    v = m["verification"]
    for key in ("accuracy", "roc_auc", "tar_at_far_1e-2", "pairs", "mean_similarity_same",
                "mean_similarity_different"):
        assert key in v
    assert v["pairs"] == 40 and 0 <= v["accuracy"] <= 1 and 0 <= v["roc_auc"] <= 1
    continuous = [a.name for a in sf.ATTRIBUTES if a.kind == "continuous"]
    assert list(m["attributes"]["mae"]) == continuous
    assert set(m["attributes"]["mae_constant_baseline"]) == set(continuous)
    assert 0 <= m["attributes"]["glasses_accuracy"] <= 1 and "mean_mae_normalised" in m["attributes"]
    assert math.isfinite(m["frechet"]["test_half_vs_half"])
    json.dumps(m)


# ---------------------------------------------------------------------------------------------------- training
def test_tiny_training_run_learns_and_writes_the_model(tmp_path):
    result = dn.train(dict(TINY, out=str(tmp_path / "run")), **QUIET)
    assert not result.stopped_early and result.step == TINY["steps"]
    first, last = result.history[0], result.history[-1]
    assert last["total"] < 0.8 * first["total"] and last["id"] < first["id"] and last["attr"] < first["attr"]
    run = tmp_path / "run"
    for name in ("options.json", "stats.jsonl", "log.txt", "eval_test.json", "checkpoints/latest.pt"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "eval_test.json").read_text())
    assert {"verification", "attributes", "frechet", "data"} <= set(metrics)
    net = load_domain_net(result.model_path)
    raw = torch.load(result.model_path, map_location="cpu", weights_only=True)
    assert raw["metrics"]["verification"]["accuracy"] == metrics["verification"]["accuracy"]
    assert raw["training"]["steps"] == TINY["steps"]
    with torch.no_grad():
        assert net.embed(_faces(2)).shape == (2, 16)
    # the run directory is never overwritten
    with pytest.raises(dn.ConfigError, match="not empty"):
        dn.train(dict(TINY, out=str(run)), **QUIET)


def test_resume_continues_bit_for_bit(cli, tmp_path):
    opts = dict(TINY, steps=12, checkpoint_every=4, eval_n=12, eval_pairs=10)
    full = dn.train(dict(opts, out=str(tmp_path / "full")), **QUIET)
    part = dn.train(dict(opts, out=str(tmp_path / "part")), stop_after=5, **QUIET)
    assert part.stopped_early and part.step == 5
    with pytest.raises(dn.ConfigError, match="lr"):
        dn.train({"lr": 1.0}, resume=str(tmp_path / "part"), **QUIET)
    done = dn.train({}, resume=str(tmp_path / "part"), **QUIET)
    assert done.step == 12 and (tmp_path / "part" / "options-resume-1.json").exists()
    a = torch.load(full.model_path, weights_only=True)["state_dict"]
    b = torch.load(done.model_path, weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # --eval-only reads a training checkpoint too and writes the JSON
    out = tmp_path / "eval.json"
    assert cli.main(["--eval-only", str(tmp_path / "part" / "checkpoints" / "latest.pt"), "--eval-json",
                     str(out), "--eval-n", "12", "--eval-persons", "6", "--eval-pairs", "10"]) == 0
    assert json.loads(out.read_text())["verification"]["pairs"] == 10
    with pytest.raises(dn.ConfigError, match="unknown options"):
        dn.evaluate_model_file(done.model_path, {"eval_n": 12, "eval_nn": 3})


def test_options_are_declared_once_and_errors_name_the_option(cli):
    """The options are a dataclass of shared option() declarations; a bad value is an OptionError that names the
    option by its library name, which the script turns into its flag."""
    assert DomainTrainOptions().batch == 128 and DomainTrainOptions().channels_last is True
    assert dn.RESUME_MAY_CHANGE == {"out", "threads", "workers", "log_every", "checkpoint_every", "val_every", "val_n",
                                    "eval_data", "eval_n", "eval_persons", "eval_pairs", "eval_seed", "eval_res",
                                    "steps"}
    with pytest.raises(dn.OptionError) as e:
        dn.validate_options(DomainTrainOptions(batch=1))
    assert str(e.value) == "batch must be >= 2; got 1" and e.value.option == "batch"
    with pytest.raises(dn.OptionError, match=r"^channels must be comma-separated integers"):
        dn.validate_options(DomainTrainOptions(channels="8,x"))
    with pytest.raises(dn.ConfigError, match=r"unknown options \['nope'\]"):
        DomainTrainOptions.from_mapping({"nope": 1})
    args = vars(cli.build_parser().parse_args(["--batch", "4", "--no-channels-last", "--channels", "8,16"]))
    assert args == {"batch": 4, "channels_last": False, "channels": "8,16", "resume": None, "eval_only": None,
                    "eval_json": None, "tensorboard": True}


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_help_and_exit_codes(cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "Exit status" in text and "clcae.training.domain" in text
    for name in OPTION_NAMES:  # one flag per option
        assert "--" + name.replace("_", "-") in text, name
    assert "--eval-only" in text and "--resume" in text and "--no-tensorboard" in text
    # bad options: status 2 and a message naming the flag, before anything is rendered or written
    assert cli.main(["--steps", "0", "--out", str(tmp_path / "run")]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert cli.main(["--attr-boost", "beard=2", "--out", str(tmp_path / "run")]) == 2
    assert "--attr-boost" in capsys.readouterr().err
    assert cli.main(["--steps", "3"]) == 2  # no --out
    assert "--out is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["--bogus"])
    assert e.value.code == 2
