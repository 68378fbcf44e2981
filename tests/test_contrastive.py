"""clip_loss: known values, symmetry, and the exact 2-process (gloo, CPU) gather semantics."""
import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from clcae.losses.contrastive import ContrastiveLoss, all_reduce_grads_sum, clip_loss
from clcae.distributed import all_reduce_grads


def _reference_loss(img: torch.Tensor, lat: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written out with explicit sums (independent of F.cross_entropy)."""
    n = img.shape[0]
    logits = [[scale * float(img[i] @ lat[j]) for j in range(n)] for i in range(n)]
    rows = sum(-logits[i][i] + math.log(sum(math.exp(v) for v in logits[i])) for i in range(n)) / n
    cols = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n))) for j in range(n)) / n
    return 0.5 * (rows + cols)


def test_known_value_2x2():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    lat = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)  # unit rows
    # L = 2 * img @ lat^T = [[2, 1.2], [0, 1.6]]
    rows = ((-2 + math.log(math.exp(2) + math.exp(1.2))) + (-1.6 + math.log(1 + math.exp(1.6)))) / 2
    cols = ((-2 + math.log(math.exp(2) + 1)) + (-1.6 + math.log(math.exp(1.2) + math.exp(1.6)))) / 2
    expected = 0.5 * (rows + cols)
    got = clip_loss(img, lat, torch.tensor(2.0, dtype=torch.float64))
    assert got.dtype == torch.float64 and got.ndim == 0
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert clip_loss(img, lat, 2.0).item() == pytest.approx(expected, abs=1e-12)  # float scale


def test_orthonormal_identical_embeddings():
    # Perfectly aligned orthonormal pairs: every row is log(1 + (N - 1) e^{-s}).
    n, s = 5, 3.0
    e = torch.eye(n, dtype=torch.float64)
    assert clip_loss(e, e, s).item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-s)), abs=1e-12)


def test_unit_norm_random_matches_reference_and_is_symmetric():
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randn(7, 16, generator=g, dtype=torch.float64), dim=1)
    lat = F.normalize(torch.randn(7, 16, generator=g, dtype=torch.float64), dim=1)
    scale = 1 / 0.07
    loss = clip_loss(img, lat, scale)
    assert loss.item() == pytest.approx(_reference_loss(img, lat, scale), rel=1e-12)
    # Swapping the roles transposes L: same loss. Permuting the pairs jointly: same loss.
    assert clip_loss(lat, img, scale).item() == pytest.approx(loss.item(), rel=1e-12)
    perm = torch.randperm(7, generator=g)
    assert clip_loss(img[perm], lat[perm], scale).item() == pytest.approx(loss.item(), rel=1e-12)
    # Breaking the pairing (permuting one side only) changes it.
    assert clip_loss(img, lat.roll(1, 0), scale).item() != pytest.approx(loss.item(), rel=1e-6)


def test_no_group_gather_flag_and_module():
    g = torch.Generator().manual_seed(1)
    img, lat = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    s = torch.tensor(5.0)
    a = clip_loss(img, lat, s, gather=True)
    b = clip_loss(img, lat, s, gather=False)
    assert torch.equal(a, b)
    assert torch.equal(ContrastiveLoss(gather=False)(img, lat, s), b)
    # Half-precision inputs are computed in float32.
    assert clip_loss(img.bfloat16(), lat.bfloat16(), s).dtype == torch.float32


def test_scale_gradient_flows_to_logit_scale():
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    e = F.normalize(torch.randn(6, 8), dim=1)
    clip_loss(e, e, logit_scale.exp()).backward()
    # Aligned pairs: a larger temperature scale lowers the loss, so the gradient is negative.
    assert logit_scale.grad is not None and logit_scale.grad.item() < 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        clip_loss(torch.randn(3), torch.randn(3), 1.0)
    with pytest.raises(ValueError, match="grad_reduction"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, grad_reduction="avg")


# ---------------------------------------------------------------------------------------------------- 2 processes

N_GLOBAL, IN_IMG, IN_LAT, DIM = 8, 6, 5, 4


class _Tiny(nn.Module):
    """Two linear 'encoders' and a learned logit scale, in float64 for a tight comparison."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(123)
        self.img = nn.Linear(IN_IMG, DIM).double()
        self.lat = nn.Linear(IN_LAT, DIM).double()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=torch.float64))

    def embed(self, x_img, x_lat):
        return F.normalize(self.img(x_img), dim=1), F.normalize(self.lat(x_lat), dim=1)


def _batch():
    g = torch.Generator().manual_seed(7)
    return (torch.randn(N_GLOBAL, IN_IMG, generator=g, dtype=torch.float64),
            torch.randn(N_GLOBAL, IN_LAT, generator=g, dtype=torch.float64))


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = _Tiny()
        x_img, x_lat = _batch()
        n = N_GLOBAL // world
        sl = slice(rank * n, (rank + 1) * n)
        res = {}

        # grad_reduction='sum': local gradients are the rows of the global gradient; summing gives the global one.
        e_img, e_lat = model.embed(x_img[sl], x_lat[sl])
        e_img.retain_grad()
        e_lat.retain_grad()
        loss = clip_loss(e_img, e_lat, model.logit_scale.exp())
        loss.backward()
        res["loss"] = loss.detach()
        res["emb_grad"] = (e_img.grad.clone(), e_lat.grad.clone())
        res["local_grads"] = _grads(model)
        all_reduce_grads_sum(model.parameters())
        res["summed_grads"] = _grads(model)

        # grad_reduction='mean' + the repository's averaging all-reduce.
        model.zero_grad(set_to_none=True)
        e_img, e_lat = model.embed(x_img[sl], x_lat[sl])
        loss = clip_loss(e_img, e_lat, model.logit_scale.exp(), grad_reduction="mean")
        loss.backward()
        all_reduce_grads(model.parameters())
        res["mean_loss"] = loss.detach()
        res["mean_grads"] = _grads(model)

        # gather=False: the local loss.
        with torch.no_grad():
            res["local_loss"] = clip_loss(*model.embed(x_img[sl], x_lat[sl]), model.logit_scale.exp(), gather=False)

        # Unequal local batches: a clear error on every rank (no hang).
        m = n - 1 if rank == 0 else n
        try:
            with torch.no_grad():
                clip_loss(*model.embed(x_img[:m], x_lat[:m]), 1.0)
            res["unequal_error"] = None
        except ValueError as e:
            res["unequal_error"] = str(e)
        torch.save(res, out.format(rank=rank))
    finally:
        dist.destroy_process_group()


def _run_two_processes(tmp_path, world=2, timeout_s=120.0):
    out = str(tmp_path / "rank{rank}.pt")
    ctx = mp.start_processes(_worker, args=(world, str(tmp_path / "store"), out), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail("2-process gloo run did not finish in time")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(out.format(rank=r), weights_only=False) for r in range(world)]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
def test_two_process_gather_matches_single_process(tmp_path):
    world = 2
    results = _run_two_processes(tmp_path, world)

    # Single process on the concatenated batch.
    model = _Tiny()
    x_img, x_lat = _batch()
    e_img, e_lat = model.embed(x_img, x_lat)
    e_img.retain_grad()
    e_lat.retain_grad()
    loss = clip_loss(e_img, e_lat, model.logit_scale.exp())
    loss.backward()
    ref = _grads(model)
    n = N_GLOBAL // world
    tol = dict(rtol=1e-12, atol=1e-14)

    for rank, res in enumerate(results):
        assert torch.allclose(res["loss"], loss.detach(), **tol), (rank, res["loss"], loss)
        assert torch.allclose(res["mean_loss"], loss.detach(), **tol)
        sl = slice(rank * n, (rank + 1) * n)
        torch.testing.assert_close(res["emb_grad"][0], e_img.grad[sl], **tol)
        torch.testing.assert_close(res["emb_grad"][1], e_lat.grad[sl], **tol)
        for k in ref:
            torch.testing.assert_close(res["summed_grads"][k], ref[k], **tol, msg=f"sum-reduced {k}, rank {rank}")
            torch.testing.assert_close(res["mean_grads"][k], ref[k], **tol, msg=f"mean-reduced {k}, rank {rank}")
        with torch.no_grad():
            local = clip_loss(*model.embed(x_img[sl], x_lat[sl]), model.logit_scale.exp())
        torch.testing.assert_close(res["local_loss"], local, **tol)
        assert not torch.allclose(res["local_loss"], loss.detach())
        assert res["unequal_error"] is not None and "same local batch" in res["unequal_error"] and "rank 0: [3, 8]" in res["unequal_error"]

    # The per-rank local gradients, summed by hand, also give the single-process gradient (before the helper).
    for k in ref:
        summed = sum(res["local_grads"][k] for res in results)
        torch.testing.assert_close(summed, ref[k], **tol, msg=k)
    # ... and a single rank's alone does not (the test can fail).
    assert not torch.allclose(results[0]["local_grads"]["img.weight"], ref["img.weight"])


# ---------------------------------------------------------------------------------------------------- retrieval

from clcae.metrics.retrieval import positive_ranks, retrieval_topk  # noqa: E402

# With img = I the similarity matrix is S[i, j] = <img_i, lat_j> = lat[j, i], so lat = S^T sets it directly.
_S = torch.tensor([[0.9, 0.1, 0.2, 0.00],   # image 0: positive best                  -> rank 0
                   [0.5, 0.3, 0.4, 0.10],   # image 1: 0.5 and 0.4 beat 0.3           -> rank 2
                   [0.0, 0.8, 0.7, 0.60],   # image 2: 0.8 beats 0.7                  -> rank 1
                   [0.1, 0.2, 0.3, 0.05]])  # image 3: everything beats 0.05          -> rank 3
# Columns (latent j against every image): 0 -> rank 0, 1 -> rank 1 (0.8), 2 -> rank 0, 3 -> rank 2 (0.1, 0.6).


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_retrieval_known_matrix(chunk):
    out = retrieval_topk(torch.eye(4), _S.T.contiguous(), ks=(1, 2, 3), normalize=False, chunk=chunk)
    assert out["i2l_top1"] == 0.25 and out["i2l_top2"] == 0.5 and out["i2l_top3"] == 0.75
    assert out["l2i_top1"] == 0.5 and out["l2i_top2"] == 0.75 and out["l2i_top3"] == 1.0
    assert out["i2l_mean_rank"] == 2.5 and out["l2i_mean_rank"] == 1.75 and out["n"] == 4
    assert positive_ranks(torch.eye(4), _S.T.contiguous(), chunk=chunk).tolist() == [0, 2, 1, 3]


def test_retrieval_perfect_ties_and_bruteforce():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g)
    perfect = retrieval_topk(x, x * 3.0, ks=(1, 5))  # cosine: scale does not matter
    assert perfect["i2l_top1"] == 1.0 and perfect["l2i_top1"] == 1.0 and perfect["i2l_mean_rank"] == 1.0
    # Identical image embeddings: a latent query ties with every image, and ties count as misses; an image
    # query hits only when its own latent is the single most similar one (1 of 10).
    # (Distinct integer-valued latents keep every dot product exact, so the ties are exact.)
    lat_int = torch.arange(10.0).unsqueeze(1) * torch.tensor([1.0, 2.0, 0.0, 1.0])
    const = retrieval_topk(torch.ones(10, 4), lat_int, ks=(1, 9, 10), normalize=False)
    assert const["l2i_top1"] == 0.0 and const["l2i_top9"] == 0.0 and const["l2i_top10"] == 1.0
    assert const["i2l_top1"] == pytest.approx(0.1) and const["i2l_mean_rank"] == pytest.approx(5.5)
    # Noisy pairs against a full-matrix brute force.
    img = torch.randn(300, 16, generator=g)
    lat = img + 1.5 * torch.randn(300, 16, generator=g)
    out = retrieval_topk(img, lat, ks=(1, 5, 20), chunk=64)
    sim = F.normalize(img, dim=1) @ F.normalize(lat, dim=1).T
    for name, s in (("i2l", sim), ("l2i", sim.T)):
        ranks = (s > s.diag().unsqueeze(1)).sum(1)  # no exact ties with random floats
        for k in (1, 5, 20):
            assert out[f"{name}_top{k}"] == pytest.approx((ranks < k).double().mean().item(), abs=1e-12)
    assert 0.0 < out["i2l_top1"] < out["i2l_top5"] < out["i2l_top20"] < 1.0
    with pytest.raises(ValueError, match="same shape"):
        retrieval_topk(img, lat[:5])
