"""What one kind of encoder training does (:class:`EncoderTask`), apart from the loop that drives it.

The loop (:func:`clcae.training.encoder_loop.run_encoder_training`) owns the run directory, data order, logging,
validation, checkpoints and resume; a task owns the networks, optimisers, losses and datasets of one kind of
training: :class:`~clcae.training.contrastive.ContrastiveTask` (CLCAE stage 1) and
:class:`~clcae.training.inversion.InversionTask` (CLCAE stage 2, pSp, e4e). Both import this module; it imports
neither, nor the loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from .. import distributed as du
from ..formats.files import CheckpointError, load_state_dict_strict
from ..networks.inverters import official_output
from ..networks.sync_bn import convert_global_batchnorm
from .encoder_options import EncoderTrainOptions
from .state import cpu_copy

__all__ = ["EncoderTask", "to_input_geometry"]


def to_input_geometry(image: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """A generator image [B, 3, S, S] as the encoder input geometry: area-pooled to the input width, rows centre-
    cropped to the input height (faces: S -> 256 or 64; cars: 512 -> 256 then rows 32:224)."""
    return official_output(image, input_size, size=input_size[1])


class EncoderTask:
    """What one kind of training does; subclasses implement the methods below.

    Attributes set by subclasses: ``trainable`` (``{name: module}`` trained and saved), ``optimizers``
    (``{name: optimizer}``), ``train_dataset`` / ``val_dataset`` (items collated by the default collate).
    """

    trainable: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, opts: EncoderTrainOptions, device: torch.device, rank: int, world_size: int,
                 log: Callable[[str], None]):
        self.opts = opts
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.log = log
        self.local_batch = opts.batch // world_size
        self.schedulers: dict[str, Any] = {}
        #: the loop's step count (validation and image grids use it, e.g. for CLCAE's feature-blend ramp)
        self.current_step = 0

    # --- to implement
    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on this rank's slice; returns detached scalar losses for logging."""
        raise NotImplementedError

    def validate(self, batches: Iterator[Any]) -> dict[str, float]:
        """Validation metrics over this rank's batches, reduced over ranks; must contain ``'loss'``."""
        raise NotImplementedError

    def image_columns(self, batch: Any) -> list[torch.Tensor]:
        """Columns of the logged image grid (each [N, 3, H, W] in [-1, 1]), e.g. input | w | W+ | W+F."""
        raise NotImplementedError

    def export_best(self, directory: Path, info: Mapping[str, Any]) -> list[Path]:
        """Write the inference-format best model(s) into ``directory``; returns the paths."""
        raise NotImplementedError

    def describe(self) -> str:
        return ""

    # --- shared
    def distributed_batchnorm(self, module: torch.nn.Module) -> torch.nn.Module:
        """With several processes, batch statistics over the global batch: ``SyncBatchNorm`` on CUDA,
        :class:`~clcae.networks.sync_bn.GlobalBatchNorm` elsewhere (same state-dict keys). Call before building
        the optimisers (the parameters are new objects)."""
        if self.world_size <= 1:
            return module
        if self.device.type == "cuda":
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return convert_global_batchnorm(module)

    def sync_gradients(self) -> None:
        """Average the trainable modules' gradients over ranks (one all-reduce)."""
        params = [p for m in self.trainable.values() for p in m.parameters()]
        du.all_reduce_grads(params)

    def sync_buffers(self) -> None:
        """Average floating buffers (BatchNorm running statistics) over ranks so every rank saves the same model."""
        if not (du.is_initialized() and du.get_world_size() > 1):
            return
        bufs = [b for m in self.trainable.values() for b in m.buffers() if b.is_floating_point()]
        if bufs:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            du.all_reduce_mean(flat)
            offset = 0
            for b in bufs:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()

    def state_dict(self) -> dict:
        return {"modules": {k: cpu_copy(m.state_dict()) for k, m in self.trainable.items()},
                "optimizers": {k: cpu_copy(o.state_dict()) for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "extra": self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any], source: str) -> None:
        for name, m in self.trainable.items():
            if name not in state["modules"]:
                raise CheckpointError(f"{source}: no '{name}' network in the training checkpoint")
            load_state_dict_strict(m, state["modules"][name], source, name)
        for name, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][name])
        for name, s in self.schedulers.items():
            if name in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][name])
        self.load_extra_state(state.get("extra") or {})

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def step_schedulers(self, val_loss: float) -> None:
        for s in self.schedulers.values():
            s.step(val_loss)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.opts.bf16)
