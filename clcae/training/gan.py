"""StyleGAN2 training (Karras et al. 2020) on an image folder or SynthFaces, resumable bit for bit.

The loss is rosinality's / NVIDIA's: non-saturating logistic loss, lazy R1 on reals (every ``r1_interval`` D steps),
lazy path-length regularisation (every ``pl_interval`` G steps, running mean, smaller batch), style mixing, an EMA
copy of G with a half-life in thousands of images, and optional adaptive augmentation (:mod:`.augment`).

One step (``step`` counts completed steps, ``nimg`` the images of the global batch seen so far):

1. D: ``d_logistic_loss(D(aug(x)), D(aug(G(z))))``; then, if ``step % r1_interval == 0``, ``r1 / 2 * R1 *
   r1_interval`` with its own optimiser step (lazy regularisation: Adam's lr and betas scaled by
   ``interval / (interval + 1)``);
2. G: ``g_nonsaturating_loss(D(aug(G(z))))``; then, if ``step % pl_interval == 0``, ``pl_weight * PL *
   pl_interval`` on ``batch / pl_batch_shrink`` images;
3. EMA of G, the augmentation probability update, logging, samples, checkpoints.

Reproducibility. Everything random in a step comes from two seeded streams shared by all ranks
(:class:`~clcae.data.sampler.ShardedRandom`: latents, mixing, noise on the device; augmentation and mirroring
on the CPU) and the data order from :class:`~clcae.data.sampler.InfiniteSampler`; each is drawn for the global
batch and sliced per rank. A checkpoint stores those streams, the data position, both optimisers, G, D, G_ema, the
path-length mean, the augmentation state and every process's global RNG states, so a run stopped at any
checkpoint and resumed ends bit-identical to an uninterrupted run (same device type, thread count and options that
affect numerics). Changing the number of processes changes results only by float rounding.

Entry points: :func:`run_training` (what ``scripts/train_generator.py`` calls; tests drive it in-process) and
:class:`StyleGAN2Trainer` (the networks, optimisers and the step, for finer control).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .. import distributed as du
from ..data.sampler import InfiniteSampler, ShardedRandom, derive_seed
from ..formats.files import CheckpointError, load_state_dict_strict
from ..losses.gan import (d_logistic_loss, g_nonsaturating_loss, path_length_penalty, path_lengths, r1_penalty,
                          update_pl_mean)
from ..networks.memory_format import to_channels_last
from ..networks.projected import ProjectedDiscriminator
from ..networks.stylegan2 import Discriminator, Generator
from ..version import __version__
from .augment import AdaptiveAugment, DiffAugment
from .datasets import UNREADABLE_LOG, unreadable_report, verify_image_folder
from .errors import ConfigError, NonFiniteLossError
from .gan_options import (_NUMERIC_KNOBS, CONFIG_PATH_OPTIONS, OPTION_CHOICES, OPTION_GROUPS, RESUME_MAY_CHANGE,
                          GANTrainOptions, _field_names)
from .logger import TrainLogger
from .options import load_config
from .runs import (decide_run_dir, make_run_dir, merge_resume_options, process_group, record_options,
                   stop_on_signals)
from .state import (CHECKPOINT_DIR, CheckpointWriter, capture_rng_state, cpu_copy, load_training_checkpoint,
                    resolve_resume_path, restore_rng_state, seed_everything)

__all__ = [
    "GANTrainOptions", "ConfigError", "NonFiniteLossError", "TrainerCallback", "TrainResult", "StyleGAN2Trainer",
    "run_training", "resolve_options", "build_dataset", "build_discriminator", "load_training_discriminator", "load_generator_config", "verify_image_folder", "unreadable_report", "UNREADABLE_LOG",
    "ema_beta", "update_ema", "RESUME_MAY_CHANGE",
    "TRAIN_FORMAT", "TRAIN_FORMAT_VERSION", "FORMAT_KEY", "OPTION_GROUPS", "OPTION_CHOICES",
]

FORMAT_KEY = "train_format"  # not 'format': clcae.load_generator must see these files as rosinality checkpoints
TRAIN_FORMAT = "clcae.stylegan2_training"
TRAIN_FORMAT_VERSION = 1


def load_generator_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The options of a named recipe (``configs/<name>.yaml``) or a YAML file, as ``{option: value}``.

    Keys are :class:`GANTrainOptions` field names (an unknown key is an error naming the file). Paths follow
    :func:`clcae.training.options.resolve_config_path`: ``pretrained/...`` is the shipped models' folder, any other
    relative path is relative to the config file. Raises :class:`ConfigError`.
    """
    return load_config(name_or_path, known=_field_names(), paths=CONFIG_PATH_OPTIONS)


def resolve_options(given: Mapping[str, Any], resume: str | os.PathLike | None = None
                    ) -> tuple[GANTrainOptions, dict | None, Path | None]:
    """Combine the options given explicitly with the defaults, or, when resuming, with the checkpoint's options.

    Args:
        given: only the options the user set (``{'size': 64, ...}``; CLI flags with ``-`` become ``_``).
        resume: a checkpoint file or run directory, or ``None``.
    Returns:
        ``(options, checkpoint_state or None, checkpoint_path or None)``.
    Raises:
        ConfigError: unknown option names, or a resume that changes an option outside :data:`RESUME_MAY_CHANGE`.
        CheckpointError: the resume file cannot be read or is not a training checkpoint of this trainer.
    """
    names = set(_field_names())
    unknown = sorted(set(given) - names)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    if resume is None:
        return GANTrainOptions(**dict(given)), None, None
    path = resolve_resume_path(resume)
    state = load_training_checkpoint(path, FORMAT_KEY, TRAIN_FORMAT, TRAIN_FORMAT_VERSION)
    merged = merge_resume_options(state.get("args") or {}, given, names, RESUME_MAY_CHANGE, path, ConfigError)
    if "out" not in given:
        merged["out"] = ""  # decided by run_training from the checkpoint's location
    return GANTrainOptions(**merged), state, path


# ---------------------------------------------------------------------------------------------------- data
class _ImagesOnly(torch.utils.data.Dataset):
    """Item ``i`` of a dataset whose items are ``(image, ...)``, as the image alone (collates to one tensor)."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]


def build_dataset(opts: GANTrainOptions) -> tuple[torch.utils.data.Dataset, str]:
    """The training images as a Dataset of float ``[3, size, size]`` tensors in [-1, 1], and a description.

    ``opts.data`` is ``'synthfaces'`` (:class:`~clcae.data.synthfaces.SynthFaces`, rendered on the fly), a folder
    written by ``scripts/make_synthfaces.py`` (its train split, in label order), or any folder of images
    (:class:`~clcae.data.images.ImageFolderDataset`, recursive, brought to ``size`` by ``opts.policy``).

    Raises:
        ConfigError: missing folder, no images in it (the message names the folder).
    """
    from ..data.images import ImageFolderDataset

    if opts.data == "synthfaces":
        from ..data.synthfaces import SynthFaces

        ds = SynthFaces(opts.synth_n, res=opts.size, split="train", seed=opts.data_seed)
        return _ImagesOnly(ds), f"SynthFaces (on the fly): {len(ds)} images at {opts.size} px, seed {opts.data_seed}"
    root = Path(opts.data)
    if not root.exists():
        raise ConfigError.about("data", f"{root}: no such folder; pass a folder of images (searched recursively) "
                                        "or 'synthfaces'")
    if not root.is_dir():
        raise ConfigError.about("data", f"{root} is a file; pass a folder of images or 'synthfaces'")
    if (root / "meta.json").is_file() and (root / "labels_train.csv").is_file():
        from ..data.synthfaces import read_labels

        paths = [root / row["file"] for row in read_labels(root / "labels_train.csv")]
        if not paths:
            raise ConfigError.about("data", f"{root}: labels_train.csv lists no images; write the folder again "
                                            "(scripts/make_synthfaces.py)")
        ds = ImageFolderDataset(paths, size=opts.size, policy=opts.policy)
        report = verify_image_folder(ds, "data", root)
        return _ImagesOnly(ds), f"SynthFaces folder {root} (train split): {len(ds)} images -> {opts.size} px; {report}"
    try:
        ds = ImageFolderDataset(root, size=opts.size, policy=opts.policy)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError.about("data", f"{root}: {e}; put images (any format Pillow reads) in it or its "
                                        "sub-folders") from e
    report = verify_image_folder(ds, "data", root)
    return _ImagesOnly(ds), f"image folder {root}: {len(ds)} images -> {opts.size} px ({opts.policy}); {report}"


# ---------------------------------------------------------------------------------------------------- networks
def build_discriminator(opts: GANTrainOptions) -> nn.Module:
    """The discriminator ``opts.d_arch`` names: StyleGAN2's :class:`Discriminator`, or a
    :class:`~clcae.networks.projected.ProjectedDiscriminator` whose frozen trunk is loaded from
    ``opts.feature_net_path()`` (checkpoints record its fingerprint, and a resume refuses another network)."""
    if opts.d_arch == "stylegan2":
        return Discriminator(**opts.d_kwargs)
    from ..networks.domain import load_domain_net

    try:
        net = load_domain_net(opts.feature_net_path())
    except CheckpointError as e:
        raise ConfigError.about("proj_net", f": {e}") from e
    D = ProjectedDiscriminator(opts.size, net.config, mixing=opts.proj_mixing, width=opts.proj_width,
                               seed=derive_seed(opts.seed, 5))
    return D.load_feature_weights(net)


def load_training_discriminator(path: str | os.PathLike, device: torch.device | str = "cpu") -> Discriminator:
    """The StyleGAN2 discriminator of a ``train_generator.py`` training state (``latest.pt``, a snapshot, or
    ``pretrained/training/*.pt``), loaded strictly (``weights_only``); e.g. to start an image discriminator for
    encoder training from the one the generator was trained against. A projected discriminator is refused (its
    trained heads alone do not make an image discriminator)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file (expected a train_generator.py training state)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file: say which and why
        raise CheckpointError(f"{path}: not a readable training state ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping) or state.get(FORMAT_KEY) != TRAIN_FORMAT:
        raise CheckpointError(f"{path}: not a train_generator.py training state (no {FORMAT_KEY} "
                              f"'{TRAIN_FORMAT}'); pass its latest.pt or a snapshot")
    arch = dict(state.get("args") or {}).get("d_arch", "stylegan2")
    if arch != "stylegan2" or "d_kwargs" not in state:
        raise CheckpointError(f"{path}: its discriminator is '{arch}', not a StyleGAN2 image discriminator")
    D = Discriminator(**dict(state["d_kwargs"]))
    load_state_dict_strict(D, state["d"], str(path), "discriminator (d)")
    return D.to(device)


# ---------------------------------------------------------------------------------------------------- EMA
def ema_beta(batch: int, nimg: int, ema_kimg: float, rampup: float = 0.0) -> float:
    """NVIDIA's EMA coefficient: ``0.5 ** (batch / half_life_img)``, the half-life optionally ramped up as
    ``min(ema_kimg * 1000, rampup * nimg)``. ``ema_kimg == 0`` gives 0 (the EMA copies G)."""
    half_life = ema_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, nimg * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch / half_life)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema_param <- model_param + beta * (ema_param - model_param)``; buffers are copied from ``model``."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


# ---------------------------------------------------------------------------------------------------- trainer
class TrainerCallback:
    """Hooks into the loop (for tests, fault injection and custom logging); every method is optional.

    - ``on_losses(trainer, losses)``: after a step's passes, before the NaN check; ``losses`` maps names to
      0-dim tensors and may be modified (e.g. to inject a NaN).
    - ``on_step_end(trainer, values)``: after a finite step, with the step's values (floats, all ranks averaged);
      call ``trainer.request_stop(reason)`` to save a checkpoint and stop at the end of this step.
    """

    def on_losses(self, trainer: "StyleGAN2Trainer", losses: dict[str, torch.Tensor]) -> None:
        pass

    def on_step_end(self, trainer: "StyleGAN2Trainer", values: Mapping[str, float]) -> None:
        pass


@dataclass
class TrainResult:
    """What :func:`run_training` returns."""

    run_dir: Path
    step: int
    nimg: int
    checkpoint: Path | None
    stopped_early: bool = False
    stop_reason: str | None = None
    img_per_s: float = 0.0
    rollbacks: int = 0
    last_values: dict = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1


class StyleGAN2Trainer:
    """G, D, G_ema, their optimisers and everything else a step needs; :meth:`state_dict` is a full checkpoint.

    Args:
        opts: validated options.
        device: where to train.
        rank, world_size: this process's place (the global batch ``opts.batch`` is split over ranks).
        callbacks: :class:`TrainerCallback` objects.
        logger: rank-0 :class:`TrainLogger` (``None``: no logging).
    """

    def __init__(self, opts: GANTrainOptions, device: torch.device, rank: int = 0, world_size: int = 1,
                 callbacks: Sequence[TrainerCallback] = (), logger: TrainLogger | None = None):
        self.opts = opts
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.callbacks = list(callbacks)
        self.logger = logger
        self.batch = opts.batch
        self.local_batch = opts.batch // world_size

        seed_everything(opts.seed)  # identical initialisation on every rank
        self.G = Generator(**opts.g_kwargs).to(self.device).train()
        self.D = build_discriminator(opts).to(self.device).train()
        self.G_ema = Generator(**opts.g_kwargs).to(self.device).eval()
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)
        for net in (self.G, self.D, self.G_ema):
            net.set_impl(opts.impl)
        if opts.channels_last:
            self.G.set_memory_format(torch.channels_last)
            self.G_ema.set_memory_format(torch.channels_last)
            to_channels_last(self.D)  # not its small strided 1x1 skips: their CPU backward crashes on AVX-512
        seed_everything(derive_seed(opts.seed, rank))  # per-rank global RNGs (the loop itself uses the streams)

        def adam(params, interval: int, active: bool) -> torch.optim.Adam:
            ratio = interval / (interval + 1) if active else 1.0  # lazy regularisation (StyleGAN2 appendix B)
            return torch.optim.Adam(params, lr=opts.lr * ratio, betas=(0.0 ** ratio, 0.99 ** ratio), eps=1e-8)

        self.g_optim = adam(self.G.parameters(), opts.pl_interval, opts.pl_weight > 0)
        d_params = (self.D.trainable_parameters() if isinstance(self.D, ProjectedDiscriminator)
                    else self.D.parameters())
        self.d_optim = adam(d_params, opts.r1_interval, opts.r1 > 0)

        self.rand = ShardedRandom(derive_seed(opts.seed, 1), self.device, rank, world_size)  # z, mixing, noise
        self.aug_rand = ShardedRandom(derive_seed(opts.seed, 2), "cpu", rank, world_size)  # augment, mirror
        self.augment: AdaptiveAugment | None = None
        if opts.aug != "none":
            self.augment = AdaptiveAugment(p=opts.aug_p, adaptive=opts.aug == "ada", target=opts.ada_target,
                                           speed_kimg=opts.ada_kimg, interval=opts.ada_interval)
        self.diffaug = DiffAugment(opts.diffaug) if opts.diffaug else None
        self.pl_mean = torch.zeros((), device=self.device)
        self.step = 0
        self.nimg = 0
        self.rollbacks = 0
        # cumulative time in training steps (data loading included) over every session of the run: process CPU
        # seconds (time.process_time: all threads of this process, not DataLoader workers) and wall seconds
        self.train_cpu_s = 0.0
        self.train_wall_s = 0.0
        self.stop_reason: str | None = None
        self.dataset_size: int | None = None  # set by the loop; recorded in checkpoints
        self._noise_res = [getattr(self.G.noises, f"noise_{i}").shape[-1] for i in range(self.G.num_layers)]
        self._layer_idx = torch.arange(self.G.n_latent, device=self.device).view(1, -1, 1)
        self.sample_z = torch.randn(max(opts.sample_n, 1), opts.style_dim,
                                    generator=torch.Generator().manual_seed(derive_seed(opts.seed, 3)))

    # ------------------------------------------------------------------ helpers
    @property
    def kimg(self) -> float:
        return self.nimg / 1000.0

    def request_stop(self, reason: str = "stop requested") -> None:
        """Save a checkpoint and stop at the end of the current step (safe from signal handlers)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def _autocast(self):
        if not self.opts.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _aug(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            images = self.augment(images, self.aug_rand)
        if self.diffaug is not None:
            images = self.diffaug(images, self.aug_rand)
        return images

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.opts.channels_last else x

    def generate(self, G: Generator, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their W+ codes for this rank's share of ``global_batch`` fresh samples (style mixing with
        probability ``opts.mixing`` per sample, per-sample random noise), all drawn from the shared stream."""
        r = self.rand
        z = r.randn(global_batch, G.style_dim)
        mixing = self.opts.mixing > 0
        if mixing:
            z2 = r.randn(global_batch, G.style_dim)
            mix = r.rand(global_batch) < self.opts.mixing
            cut = r.randint(1, G.n_latent, global_batch)
        noise = [r.randn(global_batch, 1, res, res) for res in self._noise_res]
        if mixing:
            w1, w2 = G.mapping(torch.cat([z, z2])).chunk(2)
            cutoff = torch.where(mix, cut, torch.full_like(cut, G.n_latent)).view(-1, 1, 1)
            ws = torch.where(self._layer_idx < cutoff, w1.unsqueeze(1), w2.unsqueeze(1))
        else:
            ws = G.mapping(z).unsqueeze(1).repeat(1, G.n_latent, 1)
        return G.synthesis(ws, noise=noise), ws

    # ------------------------------------------------------------------ one step
    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D step (+ lazy R1), one G step (+ lazy path length), EMA and augmentation update.

        Args:
            real: this rank's real images ``[local_batch, 3, size, size]`` in [-1, 1].
        Returns:
            ``{name: 0-dim tensor}``: ``D``, ``G``, ``D/real``, ``D/fake`` (mean logits) and, on regularisation
            steps, ``r1`` and ``pl`` (unweighted penalties) and ``pl_mean``.
        """
        opts, B = self.opts, self.batch
        G, D = self.G, self.D
        losses: dict[str, torch.Tensor] = {}
        real = self._fmt(real.to(self.device, torch.float32, non_blocking=True))
        if opts.mirror:
            flip = (self.aug_rand.rand(B) < 0.5).to(self.device).view(-1, 1, 1, 1)
            real = torch.where(flip, real.flip(3), real)

        # --- D main: logistic loss
        G.requires_grad_(False)
        D.requires_grad_(True)
        with self._autocast():
            with torch.no_grad():
                fake, _ = self.generate(G, B)
            fake_logits = D(self._fmt(self._aug(fake)))
            real_logits = D(self._fmt(self._aug(real)))
        d_loss = d_logistic_loss(real_logits, fake_logits)
        D.zero_grad(set_to_none=True)
        d_loss.backward()
        du.all_reduce_grads(D.parameters())
        self.d_optim.step()
        if self.augment is not None:
            self.augment.observe(real_logits)
        losses["D"] = d_loss.detach()
        losses["D/real"] = real_logits.detach().float().mean()
        losses["D/fake"] = fake_logits.detach().float().mean()

        # --- D reg: lazy R1 (fp32)
        if opts.r1 > 0 and self.step % opts.r1_interval == 0:
            real_r = real.detach().requires_grad_(True)
            logits = D(self._fmt(self._aug(real_r)))
            r1 = r1_penalty(logits, real_r)
            D.zero_grad(set_to_none=True)
            (r1 * (opts.r1 / 2 * opts.r1_interval) + 0 * logits.sum()).backward()
            du.all_reduce_grads(D.parameters())
            self.d_optim.step()
            losses["r1"] = r1.detach()

        # --- G main: non-saturating loss
        G.requires_grad_(True)
        D.requires_grad_(False)
        with self._autocast():
            fake, _ = self.generate(G, B)
            fake_logits = D(self._fmt(self._aug(fake)))
        g_loss = g_nonsaturating_loss(fake_logits)
        G.zero_grad(set_to_none=True)
        g_loss.backward()
        du.all_reduce_grads(G.parameters())
        self.g_optim.step()
        losses["G"] = g_loss.detach()

        # --- G reg: lazy path length (fp32)
        if opts.pl_weight > 0 and self.step % opts.pl_interval == 0:
            pl_global = max(1, self.local_batch // opts.pl_batch_shrink) * self.world_size
            fake, ws = self.generate(G, pl_global)
            h, w = fake.shape[2], fake.shape[3]
            direction = self.rand.randn(pl_global, fake.shape[1], h, w).div_(math.sqrt(h * w))
            lengths = path_lengths(fake, ws, direction)
            batch_mean = du.all_reduce_mean(lengths.detach().mean().clone())
            self.pl_mean = update_pl_mean(self.pl_mean, batch_mean, opts.pl_decay)
            pl = path_length_penalty(lengths, self.pl_mean)
            G.zero_grad(set_to_none=True)
            (pl * (opts.pl_weight * opts.pl_interval) + 0 * fake[:, 0, 0, 0].sum()).backward()
            du.all_reduce_grads(G.parameters())
            self.g_optim.step()
            losses["pl"] = pl.detach()
            losses["pl_mean"] = self.pl_mean.detach().clone()
        D.requires_grad_(True)

        # --- EMA, augmentation probability, counters
        update_ema(self.G_ema, G, ema_beta(B, self.nimg, opts.ema_kimg, opts.ema_rampup))
        if self.augment is not None:
            self.augment.update(B)
        self.step += 1
        self.nimg += B
        return losses

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """``opts.sample_n`` images from G_ema for the fixed sample latents (constant noise), on the CPU."""
        out = []
        chunk = max(1, self.local_batch)
        for i in range(0, self.opts.sample_n, chunk):
            z = self.sample_z[i:i + chunk].to(self.device)
            out.append(self.G_ema(z, noise_mode="const").float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 3, self.opts.size, self.opts.size)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The full training state in rosinality's layout plus our extras (collective: call on every rank).

        Keys: ``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim``, ``latent_avg`` (mean of G_ema's w over 4096 fixed
        z), ``step``, ``nimg``, ``kimg``, ``args``, ``g_kwargs``, ``d_kwargs``, ``rng`` (shared streams and every
        rank's global RNGs), ``sampler``, ``augment``, ``pl_mean``, ``rollbacks``, ``world_size``, ``train_format``,
        ``train_format_version``, ``clcae_version``, ``torch_version``. Tensors are on the CPU.
        """
        rank_rngs = du.all_gather_object(capture_rng_state())
        aug_state = self.augment.state_dict() if self.augment is not None else None
        du.check_consistency({"g": self.G, "d": self.D, "g_ema": self.G_ema})
        return {
            "g": cpu_copy(self.G.state_dict()),
            "d": cpu_copy(self.D.state_dict()),
            "g_ema": cpu_copy(self.G_ema.state_dict()),
            "g_optim": cpu_copy(self.g_optim.state_dict()),
            "d_optim": cpu_copy(self.d_optim.state_dict()),
            "latent_avg": self.G_ema.mean_latent(4096).detach().cpu(),
            "step": self.step,
            "nimg": self.nimg,
            "kimg": self.kimg,
            "args": dataclasses.asdict(self.opts),
            "g_kwargs": dict(self.G.config),
            "d_kwargs": dict(self.D.config),
            "rng": {"ranks": rank_rngs, "stream": self.rand.state_dict(), "aug_stream": self.aug_rand.state_dict()},
            "sampler": {"position": self.nimg, "seed": self.opts.seed, "dataset_size": self.dataset_size},
            "augment": aug_state,
            "pl_mean": self.pl_mean.detach().cpu().clone(),
            "rollbacks": self.rollbacks,
            "world_size": self.world_size,
            "timing": {"train_cpu_s": self.train_cpu_s, "train_wall_s": self.train_wall_s},
            "d_feature_net": self._feature_net_record(),
            FORMAT_KEY: TRAIN_FORMAT,
            FORMAT_KEY + "_version": TRAIN_FORMAT_VERSION,
            "clcae_version": __version__,
            "torch_version": str(torch.__version__),
        }

    def _feature_net_record(self) -> dict | None:
        """``{'sha256', 'file'}`` of a projected D's frozen feature network (not saved in ``d``), else None."""
        if not isinstance(self.D, ProjectedDiscriminator):
            return None
        return {"sha256": self.D.feature_fingerprint(), "file": str(self.opts.feature_net_path())}

    def _discriminator_state(self, state: Mapping[str, Any], source: str) -> Mapping[str, torch.Tensor]:
        """The checkpoint's ``d``, checked against a projected D's frozen feature network (which must be the one
        the run was trained with: recorded by fingerprint, or stored in ``d`` by older checkpoints)."""
        d_state = state["d"]
        if not isinstance(self.D, ProjectedDiscriminator):
            return d_state
        try:
            stripped = self.D.strip_feature_state(d_state, source)
        except ValueError as e:
            raise CheckpointError(f"{e}; pass the DomainNet file the run was trained with as --proj-net") from e
        record = state.get("d_feature_net") or {}
        mine = self.D.feature_fingerprint()
        if record.get("sha256") is None and len(stripped) == len(d_state):
            raise CheckpointError(f"{source}: no record of the feature network its projected discriminator used")
        if record.get("sha256") is not None and record["sha256"] != mine:
            raise CheckpointError(
                f"{source}: its projected discriminator was trained on the feature network {record.get('file')} "
                f"(sha256 {record['sha256'][:16]}...), but --proj-net {self.opts.feature_net_path()} is a different "
                f"network (sha256 {mine[:16]}...); pass the original file as --proj-net")
        return stripped

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> list[str]:
        """Restore everything :meth:`state_dict` saved. Returns warnings (e.g. RNG states that could not be
        restored exactly because the device type or the number of processes changed)."""
        warnings_: list[str] = []
        for key, kwargs, net in (("g_kwargs", self.G.config, self.G), ("d_kwargs", self.D.config, self.D)):
            saved = {k: v for k, v in dict(state.get(key) or {}).items()}
            if saved and saved != dict(kwargs):
                raise CheckpointError(f"{source}: {key} {saved} do not match the options' network {dict(kwargs)}")
        load_state_dict_strict(self.G, state["g"], source, "generator (g)")
        load_state_dict_strict(self.D, self._discriminator_state(state, source), source, "discriminator (d)")
        load_state_dict_strict(self.G_ema, state["g_ema"], source, "generator (g_ema)")
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        self.step = int(state["step"])
        self.nimg = int(state["nimg"])
        self.rollbacks = int(state.get("rollbacks", 0))
        timing = state.get("timing") or {}
        self.train_cpu_s = float(timing.get("train_cpu_s", 0.0))
        self.train_wall_s = float(timing.get("train_wall_s", 0.0))
        self.pl_mean = state["pl_mean"].to(self.device, torch.float32).clone()
        if self.augment is not None:
            if state.get("augment"):
                self.augment.load_state_dict(state["augment"])
            else:
                warnings_.append("the checkpoint has no augmentation state; starting from --aug-p")
        rng = state["rng"]
        for stream, key, salt in ((self.rand, "stream", 1), (self.aug_rand, "aug_stream", 2)):
            if not stream.load_state_dict(rng[key]):
                stream.reseed(self.opts.seed, salt, self.step, self.rollbacks)
                warnings_.append(f"random stream '{key}' was saved on {rng[key].get('device_type')} and cannot be "
                                 f"restored on {stream.device.type}: reseeded (the continuation is not bit-identical)")
        ranks = rng.get("ranks") or []
        if len(ranks) == self.world_size:
            restore_rng_state(ranks[self.rank])
        else:
            seed_everything(derive_seed(self.opts.seed, self.rank, self.step))
            warnings_.append(f"the checkpoint was written by {len(ranks)} process(es), this run has "
                             f"{self.world_size}: per-process global RNGs reseeded (the shared streams, which drive "
                             "training, are restored exactly)")
        return warnings_


# ---------------------------------------------------------------------------------------------------- the run
def _crossed(interval_kimg: float, before: int, after: int) -> bool:
    """True when the image count passed a multiple of ``interval_kimg`` thousand images during a step."""
    interval = max(1, int(round(interval_kimg * 1000)))
    return before // interval != after // interval


def _set_backend_flags(opts: GANTrainOptions, device: torch.device) -> None:
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = opts.tf32
        torch.backends.cudnn.allow_tf32 = opts.tf32
        torch.backends.cudnn.benchmark = not opts.deterministic
        torch.backends.cudnn.deterministic = opts.deterministic
        if opts.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)


def _data_iterator(dataset, trainer: StyleGAN2Trainer, opts: GANTrainOptions) -> Iterator[torch.Tensor]:
    sampler = InfiniteSampler(len(dataset), seed=derive_seed(opts.seed, 4), shuffle=True, rank=trainer.rank,
                              world_size=trainer.world_size, start=trainer.nimg)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=trainer.local_batch, sampler=sampler, num_workers=opts.workers,
        pin_memory=trainer.device.type == "cuda", drop_last=True,
        prefetch_factor=2 if opts.workers > 0 else None, persistent_workers=False,
        generator=torch.Generator().manual_seed(0))  # keeps DataLoader from drawing on the global torch RNG
    return iter(loader)


def run_training(given: Mapping[str, Any], resume: str | os.PathLike | None = None,
                 callbacks: Sequence[TrainerCallback] = (), tensorboard: bool = True,
                 progress: bool | None = None) -> TrainResult:
    """Train a StyleGAN2 from options, or continue a run; the body of ``scripts/train_generator.py``.

    Args:
        given: the options set explicitly (see :class:`GANTrainOptions`); the rest come from the defaults or, with
            ``resume``, from the checkpoint (see :func:`resolve_options`).
        resume: a checkpoint file or a run directory (its ``checkpoints/latest.pt``).
        callbacks: :class:`TrainerCallback` hooks.
        tensorboard, progress: logging switches (see :class:`TrainLogger`).
    Returns:
        :class:`TrainResult`.
    Raises:
        ConfigError / CheckpointError / RunDirError: bad input, before any work.
        NonFiniteLossError: a NaN/Inf loss (with ``on_nan='stop'`` or when rollbacks are exhausted).
        DistributedError: another process died or timed out.
    """
    opts, resume_state, resume_path = resolve_options(given, resume)
    with process_group(opts, ConfigError) as info:
        return _run(opts, info, resume_state, resume_path, callbacks, tensorboard, progress)


def _run(opts: GANTrainOptions, info: du.DistInfo, resume_state: dict | None, resume_path: Path | None,
         callbacks: Sequence[TrainerCallback], tensorboard: bool, progress: bool | None) -> TrainResult:
    run_dir, in_place = decide_run_dir(opts.out, resume_path, ConfigError)
    opts.out = str(run_dir)
    dataset, data_desc = build_dataset(opts)  # fails fast on a bad folder, on every rank
    if len(dataset) < 1:
        raise ConfigError.about("data", f"{opts.data}: the dataset is empty")
    main = info.is_main
    _set_backend_flags(opts, info.device)

    # the networks are built and a resumed state is loaded into them before the run directory exists, so a refused
    # checkpoint (wrong shapes, another network, a bad version) leaves nothing behind; the messages wait for the log
    early: list[str] = []
    trainer = StyleGAN2Trainer(opts, info.device, info.rank, info.world_size, callbacks, None)
    trainer.dataset_size = len(dataset)
    if resume_state is not None:
        saved_args = resume_state.get("args") or {}
        changed = [k for k in _NUMERIC_KNOBS if k in saved_args and saved_args[k] != getattr(opts, k)]
        if changed:
            early.append("warning: resuming with a different " + ", ".join(
                f"{k} ({saved_args[k]!r} -> {getattr(opts, k)!r})" for k in changed)
                + ": training continues, but not bit-identically to an uninterrupted run")
        saved_size = (resume_state.get("sampler") or {}).get("dataset_size")
        if saved_size is not None and saved_size != len(dataset):
            early.append(f"warning: the checkpoint was trained on {saved_size} images, the data now has "
                         f"{len(dataset)}: the data order from here on differs")
        for w in trainer.load_state_dict(resume_state, str(resume_path)):
            early.append(f"warning: {w}")

    if main:
        make_run_dir(run_dir, in_place)
    du.barrier("run directory", opts.dist_timeout)
    unreadable_report([dataset], run_dir / UNREADABLE_LOG)  # workers append what they find there

    logger = TrainLogger(run_dir, enabled=main, total_kimg=opts.kimg, tensorboard=tensorboard, progress=progress,
                         start_kimg=(resume_state or {}).get("nimg", 0) / 1000.0, desc=f"train {run_dir.name}")
    try:
        trainer.logger = logger
        for m in early:
            logger.info(m)
        writer = CheckpointWriter(run_dir / CHECKPOINT_DIR, opts.keep_snapshots)
        run_record = {"options": dataclasses.asdict(opts),
                      "run": {"world_size": info.world_size, "device": str(info.device), "backend": info.backend,
                              "data": data_desc, "dataset_size": len(dataset), "clcae_version": __version__,
                              "torch_version": str(torch.__version__), "command": sys.argv,
                              "resumed_from": str(resume_path) if resume_path else None}}
        if resume_state is not None:
            if main:  # a fork into a new directory gets its own options.json
                record_options(run_dir, run_record, in_place, resumed_at={"step": trainer.step, "nimg": trainer.nimg})
            logger.info(f"resumed from {resume_path} at step {trainer.step} ({trainer.kimg:.3f} kimg)")
        elif main:
            record_options(run_dir, run_record, in_place)
        fresh = resume_state is None
        resume_state = None  # free the memory
        n_g = sum(p.numel() for p in trainer.G.parameters())
        n_d = sum(p.numel() for group in trainer.d_optim.param_groups for p in group["params"])  # trainable
        logger.info(f"run {run_dir}: {data_desc}; G {n_g / 1e6:.2f} M params, D {n_d / 1e6:.2f} M trained params; "
                    f"{info.world_size} process(es) on {info.device}, batch {opts.batch} "
                    f"({trainer.local_batch} per process), impl {opts.impl}, bf16 {opts.bf16}")
        for line in unreadable_report([dataset]):
            logger.info(f"data at start: {line}")
        try:
            return _loop(trainer, dataset, writer, logger, opts, main, fresh)
        finally:
            for line in unreadable_report([dataset]):
                logger.info(f"data at the end: {line}")
    finally:
        logger.close()


def _loop(trainer: StyleGAN2Trainer, dataset, writer: CheckpointWriter, logger: TrainLogger,
          opts: GANTrainOptions, main: bool, fresh: bool) -> TrainResult:
    total_nimg = int(round(opts.kimg * 1000))
    timeout = opts.dist_timeout
    last_ckpt: Path | None = writer.latest_path if writer.latest_path.exists() else None

    def save(snapshot: bool) -> None:
        nonlocal last_ckpt
        state = trainer.state_dict()  # collective
        if main:
            paths = writer.save(state, trainer.nimg, snapshot=snapshot)
            last_ckpt = paths[0]
            logger.info(f"step {trainer.step} ({trainer.kimg:.3f} kimg): saved " + ", ".join(p.name for p in paths))
        du.barrier("checkpoint", timeout)

    def samples(tag: str) -> None:
        if main and opts.sample_n > 0:
            logger.images("Samples/fakes", trainer.sample_images(), trainer.nimg,
                          filename=f"fakes-{tag}.png")

    if fresh:
        if main and opts.sample_n > 0:
            reals = torch.stack([dataset[i] for i in range(min(opts.sample_n, len(dataset)))])
            logger.images("Samples/reals", reals, 0, filename="reals.png")
        samples("init")
    if du.broadcast_object(not writer.latest_path.exists()):  # rank 0 decides: saving is collective
        save(snapshot=False)  # a resume / rollback point before the first step (new runs and forks)

    data = _data_iterator(dataset, trainer, opts)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    train_time = 0.0
    interval_imgs = 0
    total_imgs_timed, total_time = 0, 0.0
    last_values: dict[str, float] = {}
    stopped_early = False

    with stop_on_signals(trainer.request_stop, logger.info, stopping=lambda: trainer.stop_reason is not None):
        while trainer.nimg < total_nimg:
            t0 = time.perf_counter()
            c0 = time.process_time()
            real = next(data)
            before = trainer.nimg
            losses = trainer.train_step(real)
            for cb in trainer.callbacks:
                cb.on_losses(trainer, losses)
            names = sorted(losses)
            packed = torch.stack([losses[k].detach().float().reshape(()) for k in names]
                                 + [torch.tensor(float(trainer.stop_reason is not None), device=trainer.device)])
            packed = du.all_reduce_sum(packed)
            values_list = packed.tolist()  # one synchronisation per step
            stop_any = values_list[-1] > 0
            values = {k: v / trainer.world_size for k, v in zip(names, values_list[:-1])}
            dt = time.perf_counter() - t0
            trainer.train_cpu_s += time.process_time() - c0
            trainer.train_wall_s += dt
            train_time += dt
            interval_imgs += trainer.nimg - before
            total_imgs_timed += trainer.nimg - before
            total_time += dt

            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                where = f"step {trainer.step - 1} ({before / 1000:.3f} kimg)"
                detail = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
                logger.info(f"non-finite loss at {where}: {detail}")
                can_rollback = du.broadcast_object(writer.latest_path.exists())
                if opts.on_nan == "rollback" and trainer.rollbacks < opts.max_rollbacks and can_rollback:
                    du.barrier("rollback", timeout)
                    state = load_training_checkpoint(writer.latest_path, FORMAT_KEY, TRAIN_FORMAT,
                                                     TRAIN_FORMAT_VERSION)
                    attempts = trainer.rollbacks + 1
                    trainer.load_state_dict(state, str(writer.latest_path))
                    trainer.rollbacks = attempts
                    trainer.rand.reseed(opts.seed, 1, trainer.step, attempts)
                    trainer.aug_rand.reseed(opts.seed, 2, trainer.step, attempts)
                    del data
                    data = _data_iterator(dataset, trainer, opts)
                    logger.progress(trainer.kimg)
                    logger.info(f"rollback {attempts}/{opts.max_rollbacks}: reloaded {writer.latest_path} (step "
                                f"{trainer.step}) and reseeded the random streams")
                    sums.clear()
                    counts.clear()
                    continue
                hint = (f"the last good checkpoint is {last_ckpt}; continue with --resume {opts.out} (consider a "
                        "lower --lr, a higher --r1, or --on-nan rollback)") if last_ckpt else "no checkpoint was saved"
                raise NonFiniteLossError(f"training stopped: non-finite loss at {where}: {detail}; {hint}",
                                         trainer.step - 1, before, values, last_ckpt)

            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            last_values = dict(values)
            if trainer.augment is not None:
                last_values["ADA/p"] = trainer.augment.p
            for cb in trainer.callbacks:
                cb.on_step_end(trainer, last_values)
            if stop_any and trainer.stop_reason is None:
                trainer.request_stop("stop requested by another process")

            # --- maintenance
            logger.progress(trainer.kimg, {"D": values.get("D"), "G": values.get("G"),
                                           "p": trainer.augment.p if trainer.augment else 0.0})
            done = trainer.nimg >= total_nimg
            if _crossed(opts.log_kimg, before, trainer.nimg) or done:
                scal = {f"Loss/{k}": sums[k] / counts[k] for k in sums if k in ("D", "G", "r1", "pl")}
                scal.update({f"Scores/{k[2:]}": sums[k] / counts[k] for k in sums if k.startswith("D/")})
                if "pl_mean" in sums:
                    scal["Loss/pl_mean"] = last_values.get("pl_mean", float(trainer.pl_mean))
                img_s = interval_imgs / max(train_time, 1e-9)
                scal.update({"Speed/img_per_s": img_s, "Speed/sec_per_kimg": 1000.0 / max(img_s, 1e-9),
                             "Progress/kimg": trainer.kimg, "Progress/step": float(trainer.step),
                             "Time/train_cpu_s": trainer.train_cpu_s, "Time/train_wall_s": trainer.train_wall_s})
                if trainer.augment is not None:
                    scal["ADA/p"] = trainer.augment.p
                    if trainer.augment.last_rt is not None:
                        scal["ADA/rt"] = trainer.augment.last_rt
                logger.scalars(scal, trainer.nimg, extra={"step": trainer.step})
                logger.info(f"step {trainer.step} kimg {trainer.kimg:.3f}: " + " ".join(
                    f"{k.split('/', 1)[1]}={v:.4g}" for k, v in scal.items()
                    if k.startswith(("Loss/", "ADA/", "Speed/img"))))
                sums.clear()
                counts.clear()
                train_time, interval_imgs = 0.0, 0
            if _crossed(opts.sample_kimg, before, trainer.nimg) or done:
                samples(f"{trainer.kimg:010.3f}kimg")
            snapshot = _crossed(opts.snapshot_kimg, before, trainer.nimg) or done
            # read once: a signal between the save check and the stop check would otherwise stop unsaved
            stopping = trainer.stop_reason is not None
            if snapshot or _crossed(opts.checkpoint_kimg, before, trainer.nimg) or stopping:
                save(snapshot=snapshot)
            if stopping and not done:
                stopped_early = True
                logger.info(f"stopped at step {trainer.step} ({trainer.kimg:.3f} kimg): {trainer.stop_reason}; "
                            f"continue with --resume {opts.out}")
                break
    del data
    img_s = total_imgs_timed / max(total_time, 1e-9)
    if not stopped_early:
        logger.info(f"done: {trainer.step} steps, {trainer.kimg:.3f} kimg; {img_s:.1f} img/s over this session's "
                    f"training steps; checkpoints in {writer.directory}")
    return TrainResult(run_dir=Path(opts.out), step=trainer.step, nimg=trainer.nimg, checkpoint=last_ckpt,
                       stopped_early=stopped_early, stop_reason=trainer.stop_reason, img_per_s=img_s,
                       rollbacks=trainer.rollbacks, last_values=last_values, rank=trainer.rank,
                       world_size=trainer.world_size)
