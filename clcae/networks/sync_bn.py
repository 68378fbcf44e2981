"""Batch normalisation over the global batch of all processes, on any device (CPU/gloo included).

``torch.nn.SyncBatchNorm`` only runs on GPUs. :class:`GlobalBatchNorm` does the same on any backend: in training
it all-reduces the per-channel sum, sum of squares and count (a differentiable all-reduce, so gradients flow
through the global statistics exactly as in one process holding the whole batch), normalises with the global mean
and biased variance, and updates the running statistics with the unbiased one. Without a process group, or in
eval mode, it is an ordinary batch norm. Parameter and buffer names are those of ``nn.BatchNorm*``, so state dicts
are interchangeable.

:func:`convert_global_batchnorm` swaps every ``BatchNorm1d/2d`` of a module in place (weights and statistics
kept); the encoder trainer does it when it runs on more than one CPU process (on GPUs it uses SyncBatchNorm).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlobalBatchNorm", "convert_global_batchnorm"]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of every input is the sum of the output gradients over processes.

    Both passes go through :func:`clcae.distributed.all_reduce_sum`, so a dead or stuck peer raises
    :class:`~clcae.distributed.DistributedError` (naming the collective) instead of the backend's error.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        from ..distributed import all_reduce_sum

        return all_reduce_sum(x.clone(), "GlobalBatchNorm statistics (forward)")

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        from ..distributed import all_reduce_sum

        return all_reduce_sum(g.clone(), "GlobalBatchNorm statistics (backward)")


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover every process's batch (see the module docstring).

    Input [N, C] or [N, C, *]; same arguments as ``nn.BatchNorm2d``.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects [N, C, ...]; got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and _world() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x if x.dtype == torch.float64 else x.float()
        count = torch.full((1,), float(x.numel() // c), device=x.device, dtype=xf.dtype)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = _AllReduceSum.apply(stats)  # differentiable sum over processes
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by a :class:`GlobalBatchNorm` with the same state.

    Returns the converted module (the argument itself unless it is a batch norm)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm) \
            and not isinstance(module, nn.SyncBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats).to(next(iter(module.state_dict().values())).device)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_global_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
