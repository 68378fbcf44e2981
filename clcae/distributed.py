"""Distributed helpers: one code path for 1 or N processes.

Every helper is a no-op (or the identity) when no process group is initialised, so training code calls them
unconditionally. Start N processes with ``torchrun --nproc_per_node N script.py ...``; :func:`init_distributed`
reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and uses
NCCL on GPUs and gloo on CPU.

A process that dies must end the job rather than hang it: collectives run under the process group's timeout, and
:func:`barrier` waits at most ``timeout_s`` and then raises :class:`DistributedError` naming the barrier (torchrun
also stops the remaining workers when one exits with an error).

Gradients are averaged with :func:`all_reduce_grads` after ``backward`` instead of wrapping modules in
``DistributedDataParallel`` (as NVIDIA's StyleGAN2-ADA does): it works for any number of backward passes per step,
double backward (R1, path length) included, and keeps parameters without a gradient untouched, exactly as in a
single process.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from .errors import AboutOption

__all__ = [
    "DistributedError", "DistInfo", "init_distributed", "cleanup", "is_initialized", "get_rank", "get_world_size",
    "get_local_rank", "is_main_process", "barrier", "all_reduce_sum", "all_reduce_mean", "all_reduce_max",
    "all_reduce_grads", "all_gather_object", "broadcast_object", "check_consistency",
]

DEFAULT_TIMEOUT_S = 600.0


class DistributedError(AboutOption, RuntimeError):
    """A collective failed or timed out (usually because another process died); the message says which."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from e


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Initialise the default process group from torchrun's environment (if ``WORLD_SIZE > 1``) and pick a device.

    Args:
        device: ``'auto'`` (CUDA when available, else CPU), ``'cpu'`` or ``'cuda'``. With CUDA each process takes
            ``cuda:LOCAL_RANK``.
        backend: ``None`` picks ``'nccl'`` for CUDA and ``'gloo'`` for CPU.
        timeout_s: timeout of every collective, in seconds.
    Returns:
        :class:`DistInfo`. Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialised and the
        result says rank 0 of 1.
    Raises:
        DistributedError: CUDA was asked for but is missing, or there are fewer GPUs than local processes.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise DistributedError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError.about("device", "cuda was requested but torch.cuda.is_available() is False; "
                                         "use device cpu (or auto)", ("device",))
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                                   "start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    chosen = None
    if world_size > 1:
        chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if not dist.is_initialized():
            kwargs: dict[str, Any] = dict(backend=chosen, timeout=datetime.timedelta(seconds=timeout_s))
            if dev.type == "cuda":
                kwargs["device_id"] = dev
            try:
                dist.init_process_group(**kwargs)
            except TypeError:  # older torch without device_id
                kwargs.pop("device_id", None)
                dist.init_process_group(**kwargs)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=chosen)


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    """Rank on this node, from torchrun's ``LOCAL_RANK`` (0 when unset)."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the only process that writes files."""
    return get_rank() == 0


def barrier(name: str = "barrier", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Wait until every process reaches this point, for at most ``timeout_s`` seconds.

    Raises:
        DistributedError: naming the barrier and, with gloo, the ranks that did not arrive.
    """
    if not is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
        else:
            work = dist.barrier(async_op=True)
            if not work.wait(timeout=timeout):
                raise RuntimeError("wait returned False")
    except Exception as e:  # torch raises RuntimeError / DistBackendError subclasses
        raise DistributedError(
            f"rank {get_rank()}: barrier '{name}' failed or timed out after {timeout_s:.0f} s: another process "
            f"probably died or is stuck (see its log above). Details: {e}") from e


def _collective(fn, name: str):
    try:
        return fn()
    except Exception as e:
        raise DistributedError(f"rank {get_rank()}: collective '{name}' failed (another process probably died; "
                               f"see its log): {e}") from e


def all_reduce_sum(tensor: torch.Tensor, name: str = "all_reduce_sum") -> torch.Tensor:
    """Sum of ``tensor`` over processes (in place; returns it). Identity without a process group.

    ``name`` labels the collective in the :class:`DistributedError` raised when it fails (a dead or stuck peer).
    """
    if is_initialized() and get_world_size() > 1:
        _collective(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM), name)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over processes (in place for floating tensors; returns it). Identity without a group."""
    if is_initialized() and get_world_size() > 1:
        all_reduce_sum(tensor)
        tensor.div_(get_world_size())
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over processes (in place; returns it). Identity without a process group."""
    if is_initialized() and get_world_size() > 1:
        _collective(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.MAX), "all_reduce_max")
    return tensor


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the ``.grad`` of ``params`` over processes, in one flat all-reduce. No-op without a group.

    Parameters whose ``.grad`` is ``None`` are skipped (every rank runs the same graph, so the set is the same
    everywhere), so optimisers treat them exactly as in a single process.
    """
    if not (is_initialized() and get_world_size() > 1):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` (picklable objects). ``[obj]`` without a process group."""
    if not (is_initialized() and get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * get_world_size()
    _collective(lambda: dist.all_gather_object(out, obj), "all_gather_object")
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process. ``obj`` itself without a process group."""
    if not (is_initialized() and get_world_size() > 1):
        return obj
    box = [obj]
    _collective(lambda: dist.broadcast_object_list(box, src=src), "broadcast_object")
    return box[0]


def check_consistency(modules: dict[str, torch.nn.Module] | Sequence[tuple[str, torch.nn.Module]],
                      ignore: Sequence[str] = ()) -> None:
    """Raise :class:`DistributedError` if any parameter or buffer differs between processes (no-op alone).

    Compares, per tensor, a float64 checksum (sum and sum of squares) via all-reduce MIN/MAX; used before writing a
    checkpoint so that a silent divergence between ranks is never saved.
    """
    if not (is_initialized() and get_world_size() > 1):
        return
    items = modules.items() if isinstance(modules, dict) else modules
    names, sums = [], []
    for mod_name, module in items:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            full = f"{mod_name}.{name}"
            if any(full.startswith(i) for i in ignore) or not t.is_floating_point():
                continue
            t64 = t.detach().double()
            names.append(full)
            sums.append(torch.stack([t64.sum(), t64.square().sum()]))
    if not sums:
        return
    local = torch.stack(sums)
    lo, hi = local.clone(), local.clone()
    _collective(lambda: dist.all_reduce(lo, op=dist.ReduceOp.MIN), "check_consistency")
    _collective(lambda: dist.all_reduce(hi, op=dist.ReduceOp.MAX), "check_consistency")
    bad = [names[i] for i in range(len(names)) if not torch.equal(lo[i], hi[i])]
    if bad:
        raise DistributedError(f"processes disagree on {len(bad)} tensor(s), e.g. {', '.join(bad[:5])}: the replicas "
                               "diverged (a rank-dependent code path or a missed gradient all-reduce)")

