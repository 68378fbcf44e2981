"""What each process draws: data indices and random numbers, as slices of one global, resumable sequence.

Both classes here follow one rule, which makes training reproducible, resumable and (up to float rounding)
independent of the number of processes: *a global batch is defined once, and rank ``r`` of ``W`` keeps the
elements ``r, r + W, r + 2W, ...`` of it*.

- :class:`InfiniteSampler` walks an endless sequence of seeded permutations of the dataset; its only state is the
  global position (images consumed so far), so resuming is "start at position p".
- :class:`ShardedRandom` draws the latent codes, noise and augmentation parameters of the global batch from one
  seeded generator shared by all ranks, and hands each rank its slice; its state is the generator state.

The interleaved slicing (not contiguous blocks) also keeps StyleGAN2's minibatch-standard-deviation groups the same
as in a single process whenever the group size divides the per-process batch.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

__all__ = ["InfiniteSampler", "ShardedRandom", "derive_seed"]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative integers (``numpy.random.SeedSequence``); well mixed."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, deterministic, resumable, rank-sharded dataset indices.

    The global sequence is epoch 0's permutation of ``range(dataset_size)``, then epoch 1's, ...; epoch ``e`` uses
    ``numpy.random.default_rng([seed, e])`` (or the identity order with ``shuffle=False``). Rank ``r`` of
    ``world_size`` yields global positions ``start + r, start + r + world_size, ...``.

    Args:
        dataset_size: number of items (>= 1).
        seed: permutation seed.
        shuffle: permute each epoch (``False``: 0, 1, 2, ... repeated).
        rank, world_size: this process's shard.
        start: global position to start from (images already consumed by all ranks together); a multiple of
            ``world_size``.

    The sampler has no hidden state: with a DataLoader that prefetches, the loop itself knows how many images it
    consumed (``step * global_batch``) and resumes by building a new sampler with ``start`` at that position.
    """

    def __init__(self, dataset_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1; got {dataset_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        if start < 0 or start % world_size:
            raise ValueError(f"start must be a non-negative multiple of world_size={world_size}; got {start}")
        self.dataset_size = int(dataset_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start = int(start)
        self._epoch = -1
        self._order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The dataset indices of epoch ``epoch``, in order (int64 ``[dataset_size]``)."""
        if epoch != self._epoch or self._order is None:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, int(epoch)]).permutation(self.dataset_size)
            else:
                self._order = np.arange(self.dataset_size)
            self._epoch = epoch
        return self._order

    def index_at(self, position: int) -> int:
        """Dataset index at global position ``position``."""
        epoch, offset = divmod(int(position), self.dataset_size)
        return int(self.epoch_order(epoch)[offset])

    def global_batch(self, position: int, batch: int) -> list[int]:
        """The dataset indices of the global batch that starts at ``position`` (all ranks together)."""
        return [self.index_at(position + i) for i in range(batch)]

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        while True:
            yield self.index_at(position)
            position += self.world_size

    def state_dict(self) -> dict:
        """The constructor arguments that define the sequence (position is the caller's ``start``)."""
        return {"dataset_size": self.dataset_size, "seed": self.seed, "shuffle": self.shuffle, "start": self.start}


class ShardedRandom:
    """One random stream for the global batch, shared by all processes; each keeps its slice.

    Every draw method takes the *global* batch size first and returns this rank's rows ``[rank::world_size]``, so
    the numbers that reach a given sample do not depend on how many processes share the batch. All ranks must
    make the same sequence of calls (they do: they run the same loop).

    Args:
        seed: seed of the stream (the same on every rank).
        device: where the numbers are drawn (a CUDA generator draws on the GPU).
        rank, world_size: this process's shard.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.generator = torch.Generator(device=self.device)
        self.reseed(seed)

    def reseed(self, *keys: int) -> None:
        """Restart the stream from a seed derived from ``keys`` (e.g. ``(seed,)`` or ``(seed, step, attempt)``)."""
        self.generator.manual_seed(derive_seed(*keys))

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch tensor."""
        if self.world_size == 1:
            return x
        if x.shape[0] % self.world_size:
            raise ValueError(f"global batch {x.shape[0]} is not divisible by world size {self.world_size}")
        return x[self.rank::self.world_size].contiguous()

    def randn(self, global_batch: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal ``[global_batch // world_size, *shape]``."""
        return self.local(torch.randn((global_batch, *shape), generator=self.generator, device=self.device,
                                      dtype=dtype))

    def rand(self, global_batch: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) ``[global_batch // world_size, *shape]``."""
        return self.local(torch.rand((global_batch, *shape), generator=self.generator, device=self.device,
                                     dtype=dtype))

    def randint(self, low: int, high: int, global_batch: int, *shape: int) -> torch.Tensor:
        """Integers in ``[low, high)``, int64 ``[global_batch // world_size, *shape]``."""
        return self.local(torch.randint(low, high, (global_batch, *shape), generator=self.generator,
                                        device=self.device))

    def state_dict(self) -> dict:
        """``{'device_type': str, 'state': uint8 tensor}`` (plain tensors: loads with ``weights_only=True``)."""
        return {"device_type": self.device.type, "state": self.generator.get_state().clone()}

    def load_state_dict(self, state: dict) -> bool:
        """Restore a state from :meth:`state_dict`. Returns False (leaving the stream unchanged) when it was saved
        on another device type, whose generator algorithm differs; the caller should then reseed."""
        if state.get("device_type") != self.device.type:
            return False
        self.generator.set_state(state["state"].to("cpu", torch.uint8))
        return True

