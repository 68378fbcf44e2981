"""GlobalBatchNorm: batch statistics over every process's batch on CPU (gloo), equal to one process on the
concatenated batch (outputs, running statistics and gradients)."""
from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clcae.networks.sync_bn import GlobalBatchNorm, convert_global_batchnorm


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))


def _data() -> torch.Tensor:
    return torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = convert_global_batchnorm(_model()).double().train()
        x = _data().chunk(world)[rank]
        y = model(x)
        # the loss of the whole batch is the sum of the per-rank sums; each rank backpropagates its own part
        (y.square().sum()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        for g in grads.values():
            dist.all_reduce(g)
        torch.save({"y": y.detach(), "grads": grads, "state": model.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_conversion_keeps_state_and_single_process_behaviour():
    ref = _model().double().train()
    conv = convert_global_batchnorm(_model()).double().train()
    assert isinstance(conv[1], GlobalBatchNorm) and isinstance(conv[5], GlobalBatchNorm)
    assert set(ref.state_dict()) == set(conv.state_dict())
    x = _data()
    torch.testing.assert_close(conv(x), ref(x))  # no process group: an ordinary batch norm
    conv.eval(), ref.eval()
    torch.testing.assert_close(conv(x), ref(x))


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    world = 2
    ctx = mp.start_processes(_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("2-process GlobalBatchNorm run timed out")
    ref = _model().double().train()
    x = _data()
    y = ref(x)
    y.square().sum().backward()
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach(), rtol=1e-9, atol=1e-10)
    for k, p in ref.named_parameters():
        for part in parts:
            torch.testing.assert_close(part["grads"][k], p.grad, rtol=1e-9, atol=1e-10, msg=k)
    for k, v in ref.state_dict().items():
        for part in parts:
            torch.testing.assert_close(part["state"][k], v, rtol=1e-9, atol=1e-10, msg=k)
