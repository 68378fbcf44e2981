"""Training utilities shared by the trainers: distributed helpers, resumable state, logging, sampling, the GAN loop.

- :mod:`.distributed`: process-group helpers that are no-ops in a single process;
- :mod:`.sampler`: the resumable, rank-sharded data order and random streams;
- :mod:`.state`: RNG capture/restore, run directories, options JSON, atomic checkpoints and resume;
- :mod:`.logger`: rank-0 tqdm / TensorBoard / ``stats.jsonl`` logging and image grids;
- :mod:`.augment`: differentiable adaptive augmentation (ADA-style);
- :mod:`.gan`: StyleGAN2 training (:func:`~clcae.training.gan.run_training`).

Importing this package imports nothing heavy beyond torch; the submodules are imported on use.
"""
__all__ = ["distributed", "sampler", "state", "logger", "augment", "gan"]
