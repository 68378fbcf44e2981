"""Training utilities shared by the trainers: resumable state, logging, augmentation, the GAN loop.

The process-group helpers (no-ops in a single process) are :mod:`clcae.distributed` and the resumable, rank-sharded
data order and random streams :mod:`clcae.data.sampler`, below the networks and data that use them
(``clcae.training.distributed`` and ``clcae.training.sampler`` re-export them for old imports).

- :mod:`.state`: RNG capture/restore, run directories, options JSON, atomic checkpoints and resume;
- :mod:`.logger`: rank-0 tqdm / TensorBoard / ``stats.jsonl`` logging and image grids;
- :mod:`.augment`: differentiable adaptive augmentation (ADA-style);
- :mod:`.gan`: StyleGAN2 training (:func:`~clcae.training.gan.run_training`).

Importing this package imports nothing heavy beyond torch; the submodules are imported on use.
"""
__all__ = ["state", "logger", "augment", "gan"]
