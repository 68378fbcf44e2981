"""CLCAE stage 1's contrastive loss: CLIP's symmetric InfoNCE, with the negatives gathered over all processes.

For a batch of ``N`` pairs ``(image i, latent i)`` with embeddings ``I [N, D]`` and ``T [N, D]`` (unit vectors in
the official runs) and ``s = exp(logit_scale)``::

    L = s * I @ T.T                                      # [N, N], row i = image i against every latent
    loss = (CE(L, arange(N)) + CE(L.T, arange(N))) / 2   # image->latent and latent->image, mean over rows

Multi-process semantics (``gather=True`` under an initialised ``torch.distributed`` group with ``W > 1`` ranks,
each holding ``n`` local pairs; the global batch is rank 0's pairs, then rank 1's, ...):

* Both embedding sets are all-gathered from every rank **without gradient**, and the rank's own slice is put back
  **with** its gradient (OpenCLIP's ``gather_with_grad=False, local_loss=False``, as the official code). Every rank
  then computes the full ``(W n) x (W n)`` loss with labels ``arange(W n)`` (its own rows, ``rank * n`` to
  ``(rank + 1) * n - 1``, are the ones that carry gradient).
* **Value**: the loss on every rank equals the single-process loss on the concatenated global batch.
* **Gradient**, with ``grad_reduction='sum'`` (default): on rank ``r`` the gradient with respect to its local
  embeddings equals rows ``r n : (r + 1) n`` of the single-process gradient (the other ranks' rows are
  constants here; their own ranks supply those rows). Parameter gradients must therefore be **summed** over ranks
  (:func:`all_reduce_grads_sum`) to equal the single-process gradient. The logit scale enters every rank's loss
  in full, so its gradient is divided by ``W`` on each rank (the forward value is unchanged), which makes the sum
  exact for it too.
* With ``grad_reduction='mean'`` the local gradients are multiplied by ``W`` instead (and the scale's is left
  whole), so that **averaging** over ranks gives the single-process gradient: use this with
  :func:`clcae.distributed.all_reduce_grads` (which averages) or ``DistributedDataParallel``.

Both modes rescale gradients only (``x.detach() + c * (x - x.detach())`` has the value of a finite ``x``
exactly); the loss value is the same. Without a process group, with ``W = 1`` or with ``gather=False`` the
function is the plain single-process loss on the tensors it is given (``gather=False`` under a group: each
rank's own local ``n x n`` loss, as in CLCAE's stage 2, whose ``L_align`` negatives are local).

For the record, the official code wraps the encoders in DDP (gradient averaging) without any rescaling, so its
encoder gradients are ``1/W`` of the global-batch gradient while ``logit_scale``'s is the full one; with
Ranger/Adam, which normalise each parameter's step by its own gradient scale, this differs from the exact
gradient only through ``eps``.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum, get_world_size, is_initialized

__all__ = ["clip_loss", "ContrastiveLoss", "gather_embeddings", "all_reduce_grads_sum", "GRAD_REDUCTIONS"]

GRAD_REDUCTIONS = ("sum", "mean")


def _scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass (bit-exactly), gradient multiplied by ``factor`` in the backward pass."""
    if factor == 1.0 or not x.requires_grad:
        return x
    detached = x.detach()
    return detached + factor * (x - detached)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision embeddings (autocast) are promoted to float32 for the softmax; float32/64 are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_pair(image_emb: torch.Tensor, latent_emb: torch.Tensor) -> None:
    if not isinstance(image_emb, torch.Tensor) or not isinstance(latent_emb, torch.Tensor):
        raise TypeError("clip_loss expects tensors for image_emb and latent_emb")
    if image_emb.ndim != 2 or latent_emb.ndim != 2:
        raise ValueError(f"clip_loss expects image_emb and latent_emb of shape [N, D]; got "
                         f"{tuple(image_emb.shape)} and {tuple(latent_emb.shape)}")
    if image_emb.shape != latent_emb.shape:
        raise ValueError(f"image_emb {tuple(image_emb.shape)} and latent_emb {tuple(latent_emb.shape)} must have the "
                         "same shape [N, D] (pair i = image i with latent i)")
    if image_emb.shape[0] == 0:
        raise ValueError("clip_loss got an empty batch (N = 0)")


def gather_embeddings(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, int]:
    """All-gather ``x [n, D]`` from every rank of ``group`` without gradient, keeping this rank's slice with its
    gradient.

    Returns:
        ``(gathered [W n, D], offset)``: rows ordered by rank, ``offset = rank * n`` is where this rank's rows
        start. Without a group (or ``W = 1``) returns ``(x, 0)``.
    Raises:
        ValueError: the ranks hold different local batch sizes or embedding widths (raised on every rank, so no
            process is left waiting in a collective).
    """
    if not is_initialized():
        return x, 0
    world = dist.get_world_size(group)
    if world == 1:
        return x, 0
    rank = dist.get_rank(group)
    shape = torch.tensor([x.shape[0], x.shape[1]], dtype=torch.int64, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    shapes_list = [tuple(int(v) for v in s.tolist()) for s in shapes]
    if any(s != shapes_list[0] for s in shapes_list):
        raise ValueError(f"rank {rank}: contrastive gather needs the same local batch (rows) and width on every "
                         f"rank; got {', '.join(f'rank {i}: {list(s)}' for i, s in enumerate(shapes_list))} "
                         "(use drop_last=True, or an equal per-rank batch)")
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous(), group=group)
    parts[rank] = x
    return torch.cat(parts, dim=0), rank * x.shape[0]


def clip_loss(image_emb: torch.Tensor, latent_emb: torch.Tensor, scale: torch.Tensor | float, gather: bool = True,
              grad_reduction: str = "sum", group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between paired image and latent embeddings (spec §3.5).

    Args:
        image_emb: ``[n, D]`` image embeddings (the official encoders L2-normalise them; this function does not).
        latent_emb: ``[n, D]`` latent embeddings; row ``i`` is the positive of ``image_emb[i]``.
        scale: the logit scale ``exp(logit_scale)``, a 0-dim tensor (differentiable) or a float. Not clamped.
        gather: under a process group with ``W > 1`` ranks, compute the loss over the global batch (see the module
            docstring); ``False`` uses only the local pairs.
        grad_reduction: ``'sum'`` or ``'mean'``: how the caller reduces parameter gradients over ranks; the
            gradients are scaled so that this reduction gives the single-process gradient (no effect alone).
        group: the process group (default: the global one).
    Returns:
        0-dim tensor (float32, or float64 for float64 inputs): ``(CE(L, y) + CE(L^T, y)) / 2`` with
        ``L = scale * I @ T^T`` and ``y`` the index of each row's positive; the same value on every rank when
        gathering.
    """
    _check_pair(image_emb, latent_emb)
    if grad_reduction not in GRAD_REDUCTIONS:
        raise ValueError(f"grad_reduction must be one of {GRAD_REDUCTIONS}; got {grad_reduction!r}")
    world = dist.get_world_size(group) if gather and is_initialized() else 1
    if world > 1:
        if grad_reduction == "mean":
            image_emb = _scale_grad(image_emb, float(world))
            latent_emb = _scale_grad(latent_emb, float(world))
        elif isinstance(scale, torch.Tensor):
            scale = _scale_grad(scale, 1.0 / world)
        # One collective for both sets: [n, 2D] -> [W n, 2D], then split.
        both, _ = gather_embeddings(torch.cat([image_emb, latent_emb], dim=1), group)
        image_emb, latent_emb = both.split(image_emb.shape[1], dim=1)
    logits = scale * _upcast(image_emb) @ _upcast(latent_emb).T  # [N, N] (N = W n): every rank computes all of it
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class ContrastiveLoss(nn.Module):
    """:func:`clip_loss` as a module (no parameters): ``forward(image_emb, latent_emb, scale) -> loss``.

    Args:
        gather: gather the negatives over all ranks (stage 1, official) or use only the local batch.
        grad_reduction: ``'sum'`` | ``'mean'``, see :func:`clip_loss`.
    """

    def __init__(self, gather: bool = True, grad_reduction: str = "sum"):
        super().__init__()
        if grad_reduction not in GRAD_REDUCTIONS:
            raise ValueError(f"grad_reduction must be one of {GRAD_REDUCTIONS}; got {grad_reduction!r}")
        self.gather = bool(gather)
        self.grad_reduction = grad_reduction

    def forward(self, image_emb: torch.Tensor, latent_emb: torch.Tensor,
                scale: torch.Tensor | float) -> torch.Tensor:
        return clip_loss(image_emb, latent_emb, scale, gather=self.gather, grad_reduction=self.grad_reduction)

    def extra_repr(self) -> str:
        return f"gather={self.gather}, grad_reduction={self.grad_reduction!r}"


def all_reduce_grads_sum(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of ``params`` over processes, in one flat all-reduce (no-op without a group).

    The companion of ``clip_loss(..., grad_reduction='sum')``: after it every rank holds the single-process
    gradient of the global-batch loss. Parameters whose ``.grad`` is ``None`` are skipped (every rank runs the
    same graph, so the set is the same everywhere).
    """
    if not (is_initialized() and get_world_size() > 1):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
