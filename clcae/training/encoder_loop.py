"""Encoder training, resumable: CLCAE stage 1 and 2, pSp and e4e (the body of ``scripts/train.py``).

The loop (:func:`run_encoder_training`) is shared; what a step does lives in a *task*
(:class:`~clcae.training.encoder_task.EncoderTask`): :class:`~clcae.training.contrastive.ContrastiveTask`
(stage 1) or :class:`~clcae.training.inversion.InversionTask` (stage 2 and the baselines). The loop owns the run
directory, data order, logging, validation with the best checkpoint, checkpoints, resume, signals and NaN handling:

- ``OUT/options.json`` (all options and how the run was started), ``OUT/log.txt``, ``OUT/stats.jsonl``,
  ``OUT/tensorboard/`` (scalars and image grids), ``OUT/samples/*.png`` (the same grids as files);
- ``OUT/checkpoints/latest.pt``: the full training state (networks, optimisers, schedulers, step, best value,
  every rank's RNG states), written atomically every ``--save-interval`` steps, on Ctrl-C/SIGTERM and at the end;
- the best model by validation loss in inference format: ``best_model.pt`` (stage 2, pSp, e4e: loads with
  :func:`clcae.load_inverter`) or ``best_model_image.pt`` + ``best_model_latent.pt`` (stage 1, the official
  ``{'state_dict', 'opts'}`` layout that :func:`clcae.checkpoints.load_contrastive_encoder` and stage 2 read).

Exact resume: the data order is a function of ``(seed, step)`` (:class:`~clcae.data.sampler.InfiniteSampler`),
and everything else random (flips, generator noise, dropout) comes from the global RNGs, saved per rank. A run
stopped at a checkpoint and resumed ends bit-identical to an uninterrupted one (same device, threads, options).

Several processes (``torchrun``): the global batch is split over ranks; batch norms use the statistics of the
global batch (SyncBatchNorm on GPUs, :class:`~clcae.networks.sync_bn.GlobalBatchNorm` on CPU), gradients are
averaged with one all-reduce per step, so a step equals the one-process step on the same global batch up to float
rounding (randomness -- flips, noise, dropout -- is drawn per rank); only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .. import distributed as du
from ..data.sampler import InfiniteSampler, derive_seed
from ..version import __version__
from .encoder_options import PATH_OPTIONS, RESUME_MAY_CHANGE, EncoderTrainOptions, parse_size
from .encoder_task import EncoderTask
from .errors import NonFiniteLossError
from .logger import TrainLogger
from .options import ConfigError, load_config
from .runs import (decide_run_dir, make_run_dir, merge_resume_options, process_group, record_options,
                   stop_on_signals)
from .state import (CHECKPOINT_DIR, CheckpointWriter, capture_rng_state, load_training_checkpoint,
                    resolve_resume_path, restore_rng_state, seed_everything)

__all__ = ["run_encoder_training", "resolve_encoder_options", "EncoderTask", "EncoderTrainResult",
           "NonFiniteLossError", "TRAIN_FORMAT", "FORMAT_KEY"]

FORMAT_KEY = "train_format"
TRAIN_FORMAT = "clcae.encoder_training"
TRAIN_FORMAT_VERSION = 1


@dataclass
class EncoderTrainResult:
    """What :func:`run_encoder_training` returns."""

    run_dir: Path
    step: int
    best_loss: float | None
    best_step: int | None
    checkpoint: Path | None
    stopped_early: bool
    stop_reason: str | None
    last_values: dict
    last_val: dict
    rank: int = 0
    world_size: int = 1
    img_per_s: float = 0.0


# ---------------------------------------------------------------------------------------------------- options
def _names() -> list[str]:
    return [f.name for f in dataclasses.fields(EncoderTrainOptions)]


def resolve_encoder_options(given: Mapping[str, Any], config: str | None = None, resume: str | os.PathLike | None = None
                            ) -> tuple[EncoderTrainOptions, dict | None, Path | None]:
    """Options from defaults < config file (its sections for the method/stage) < ``given``; or, with ``resume``,
    from the checkpoint < ``given`` (only :data:`RESUME_MAY_CHANGE` may differ).

    Returns ``(options, checkpoint_state or None, checkpoint_path or None)``.
    Raises: ConfigError (unknown names, forbidden changes), CheckpointError (unreadable / foreign checkpoint).
    """
    names = _names()
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    if resume is not None:
        if config:
            raise ConfigError.about("config", "and resume together: a resumed run takes its options from the "
                                              "checkpoint", ("resume",))
        path = resolve_resume_path(resume)
        state = load_training_checkpoint(path, FORMAT_KEY, TRAIN_FORMAT, TRAIN_FORMAT_VERSION)
        merged = merge_resume_options(state.get("args") or {}, given, names, RESUME_MAY_CHANGE, path, ConfigError)
        if "out" not in given:
            merged["out"] = ""
        return EncoderTrainOptions(**merged), state, path
    merged: dict[str, Any] = {}
    if config:
        method = given.get("method", EncoderTrainOptions.method)
        stage = given.get("stage", EncoderTrainOptions.stage)
        merged.update(load_config(config, method, stage, known=names, paths=PATH_OPTIONS))
    merged.update(given)
    return EncoderTrainOptions(**merged), None, None


# ---------------------------------------------------------------------------------------------------- run
def run_encoder_training(given: Mapping[str, Any], config: str | None = None,
                         resume: str | os.PathLike | None = None, tensorboard: bool = True,
                         progress: bool | None = None) -> EncoderTrainResult:
    """Train (or continue) an encoder from options; see the module docstring for what is written.

    Args:
        given: options set explicitly (names of :class:`EncoderTrainOptions`).
        config: a config name (``configs/<name>.yaml``) or file; applies below ``given``.
        resume: a checkpoint file or run directory to continue.
    Raises:
        ConfigError / CheckpointError / RunDirError: bad input, before any work.
        NonFiniteLossError: a NaN/Inf loss (with ``--on-nan stop`` or when rollbacks are exhausted).
    """
    opts, resume_state, resume_path = resolve_encoder_options(given, config, resume)
    with process_group(opts, ConfigError) as info:
        return _run(opts, info, resume_state, resume_path, tensorboard, progress, config)


def build_task(opts: EncoderTrainOptions, device: torch.device, rank: int, world_size: int,
               log: Callable[[str], None]) -> EncoderTask:
    """The task for ``opts.stage`` (imports lazily: each task pulls in its own losses and data)."""
    if opts.stage == "align":
        from .contrastive import ContrastiveTask

        return ContrastiveTask(opts, device, rank, world_size, log)
    from .inversion import TASKS

    return TASKS[opts.method](opts, device, rank, world_size, log)


def _run(opts: EncoderTrainOptions, info: du.DistInfo, resume_state: dict | None, resume_path: Path | None,
         tensorboard: bool, progress: bool | None, config: str | None) -> EncoderTrainResult:
    main = info.is_main
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    seed_everything(derive_seed(opts.seed, 0, info.rank))  # the init below is the same on every rank ...
    torch.manual_seed(derive_seed(opts.seed, 0))            # ... for torch, which builds the networks
    if opts.dry_run:
        return _dry_run(opts, info)
    run_dir, in_place = decide_run_dir(opts.out, resume_path, ConfigError)
    opts.out = str(run_dir)
    # everything that can refuse the input (networks, data, loss weights, the checkpoint's tensors) runs before the
    # run directory exists, so a bad option leaves nothing behind; the messages wait for the log
    early: list[str] = []
    task = build_task(opts, info.device, info.rank, info.world_size, early.append)
    seed_everything(derive_seed(opts.seed, 1, info.rank))  # training randomness: flips, noise, dropout
    if resume_state is not None:
        task.load_state_dict(resume_state["task"], str(resume_path))
    if main:
        make_run_dir(run_dir, in_place)
    du.barrier("run directory", opts.dist_timeout)
    from .datasets import UNREADABLE_LOG, unreadable_report

    datasets = [task.train_dataset, task.val_dataset]
    unreadable_report(datasets, run_dir / UNREADABLE_LOG)  # DataLoader workers append what they find there
    logger = TrainLogger(run_dir, enabled=main, total_kimg=opts.steps, tensorboard=tensorboard, progress=progress,
                         start_kimg=float((resume_state or {}).get("step", 0)), desc=f"{opts.method}-{opts.stage}",
                         unit="steps")
    try:
        for m in early:
            logger.info(m)
        task.log = logger.info
        writer = CheckpointWriter(run_dir / CHECKPOINT_DIR, opts.keep_snapshots)
        record = {"options": dataclasses.asdict(opts),
                  "run": {"world_size": info.world_size, "device": str(info.device), "backend": info.backend,
                          "config": config, "clcae_version": __version__, "torch_version": str(torch.__version__),
                          "command": sys.argv, "resumed_from": str(resume_path) if resume_path else None,
                          "task": task.describe(), "data": unreadable_report(datasets)}}
        loop = _Loop(opts, task, writer, logger, main, run_dir)
        if resume_state is not None:
            loop.load(resume_state, str(resume_path), task_loaded=True)
            if main:
                record_options(run_dir, record, in_place, resumed_at={"step": loop.step})
            logger.info(f"resumed from {resume_path} at step {loop.step}")
        elif main:
            record_options(run_dir, record, in_place)
        resume_state = None
        logger.info(f"run {run_dir}: {opts.method} {opts.stage}; {task.describe()}; {info.world_size} process(es) "
                    f"on {info.device}, batch {opts.batch}")
        for line in unreadable_report(datasets):
            logger.info(f"data at start: {line}")
        try:
            return loop.run()
        finally:
            for line in unreadable_report(datasets):
                logger.info(f"data at the end: {line}")
    finally:
        logger.close()


def _dry_run(opts: EncoderTrainOptions, info: du.DistInfo) -> EncoderTrainResult:
    """Build the task, run one training step and one validation batch; write nothing."""
    msgs: list[str] = []

    def log(m: str) -> None:
        msgs.append(m)
        if info.is_main:
            print(m, file=sys.stderr)

    task = build_task(opts, info.device, info.rank, info.world_size, log)
    seed_everything(derive_seed(opts.seed, 1, info.rank))
    batch = next(iter(_train_loader(task, opts, 0)))
    t0 = time.perf_counter()
    values = {k: float(v) for k, v in task.train_step(batch, 0).items()}
    dt = time.perf_counter() - t0
    val = task.validate(_limited(_val_loader(task, opts), 1))
    log(f"dry run OK: {task.describe()}; one step {dt:.2f} s: " + " ".join(f"{k}={v:.4g}" for k, v in values.items())
        + "; validation: " + " ".join(f"{k}={v:.4g}" for k, v in val.items()))
    return EncoderTrainResult(run_dir=Path(opts.out or "."), step=1, best_loss=None, best_step=None, checkpoint=None,
                              stopped_early=False, stop_reason=None, last_values=values, last_val=val,
                              rank=info.rank, world_size=info.world_size)


def _limited(it, n: int):
    for i, x in enumerate(it):
        if i >= n:
            break
        yield x


def _train_loader(task: EncoderTask, opts: EncoderTrainOptions, step: int):
    ds = task.train_dataset
    sampler = InfiniteSampler(len(ds), seed=derive_seed(opts.seed, 4), shuffle=True, rank=task.rank,
                              world_size=task.world_size, start=step * opts.batch)
    return torch.utils.data.DataLoader(ds, batch_size=task.local_batch, sampler=sampler, num_workers=opts.workers,
                                       pin_memory=task.device.type == "cuda", drop_last=True,
                                       generator=torch.Generator().manual_seed(0))


def _val_loader(task: EncoderTask, opts: EncoderTrainOptions):
    ds = task.val_dataset
    idx = list(range(task.rank, len(ds), task.world_size))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=max(1, task.local_batch),
                                       shuffle=False, num_workers=opts.workers)


class _Loop:
    def __init__(self, opts: EncoderTrainOptions, task: EncoderTask, writer: CheckpointWriter, logger: TrainLogger,
                 main: bool, run_dir: Path):
        self.opts, self.task, self.writer, self.logger, self.main, self.run_dir = opts, task, writer, logger, main, run_dir
        self.step = 0
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.rollbacks = 0
        self.stop_reason: str | None = None
        self.last_ckpt: Path | None = writer.latest_path if writer.latest_path.exists() else None
        self.last_val: dict = {}
        self._grid_batch = None

    # --- state
    def state_dict(self) -> dict:
        rng = du.all_gather_object(capture_rng_state()) if du.is_initialized() else [capture_rng_state()]
        return {FORMAT_KEY: TRAIN_FORMAT, FORMAT_KEY + "_version": TRAIN_FORMAT_VERSION,
                "args": dataclasses.asdict(self.opts), "step": self.step, "best_loss": self.best_loss,
                "best_step": self.best_step, "rng": rng, "task": self.task.state_dict(),
                "clcae_version": __version__}

    def load(self, state: Mapping[str, Any], source: str, task_loaded: bool = False) -> None:
        if not task_loaded:
            self.task.load_state_dict(state["task"], source)
        self.step = int(state["step"])
        self.best_loss = state.get("best_loss")
        self.best_step = state.get("best_step")
        rng = state.get("rng") or []
        if len(rng) == self.task.world_size:
            restore_rng_state(rng[self.task.rank])
        else:
            self.logger.info(f"warning: the checkpoint holds RNG states of {len(rng)} process(es), this run has "
                             f"{self.task.world_size}: random streams are reseeded (not bit-identical)")
            seed_everything(derive_seed(self.opts.seed, 1, self.step, self.task.rank))

    def save(self, snapshot: bool = False) -> None:
        state = self.state_dict()  # collective (RNG gather)
        if self.main:
            paths = self.writer.save(state, self.nimg, snapshot=snapshot)  # snapshot-<kimg>: images seen, as GAN runs
            self.last_ckpt = paths[0]
        du.barrier("checkpoint", self.opts.dist_timeout)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    # --- pieces
    def validate(self) -> dict:
        t0 = time.perf_counter()
        self.task.current_step = self.step
        val = self.task.validate(_limited(_val_loader(self.task, self.opts), 10 ** 9))
        self.last_val = val
        improved = self.best_loss is None or val["loss"] < self.best_loss
        if improved:
            self.best_loss, self.best_step = float(val["loss"]), self.step
            if self.main:
                paths = self.task.export_best(self.writer.directory, {"step": self.step, "val": val,
                                                                      "options": dataclasses.asdict(self.opts)})
                self.logger.info(f"step {self.step}: new best validation loss {val['loss']:.5g}; wrote "
                                 + ", ".join(p.name for p in paths))
        if self.opts.lr_plateau > 0:
            self.task.step_schedulers(val["loss"])
        self.logger.scalars({f"Val/{k}": v for k, v in val.items()} | {"Val/best_loss": self.best_loss},
                            self.nimg, extra={"step": self.step, "val_seconds": time.perf_counter() - t0})
        self.logger.info(f"step {self.step} validation: " + " ".join(f"{k}={v:.5g}" for k, v in val.items()))
        du.barrier("validation", self.opts.dist_timeout)
        return val

    @property
    def nimg(self) -> int:
        """Training images seen so far (all processes): the x axis of the logs, as in the other trainers."""
        return self.step * self.opts.batch

    def images(self) -> None:
        if not self.main or self.opts.sample_n == 0:
            return
        self.task.current_step = self.step
        if self._grid_batch is None:
            ds = self.task.val_dataset
            n = min(self.opts.sample_n, len(ds))
            self._grid_batch = torch.utils.data.default_collate([ds[i] for i in range(n)])
        cols = self.task.image_columns(self._grid_batch)
        if not cols:
            return
        stacked = torch.stack([c.detach().float().cpu().clamp(-1, 1) for c in cols], dim=1)  # [N, k, 3, H, W]
        grid = stacked.flatten(0, 1)
        self.logger.images("Images/val", grid, self.nimg, nrow=len(cols), filename=f"val-{self.step:07d}.png")

    # --- the loop
    def run(self) -> EncoderTrainResult:
        opts, task, logger = self.opts, self.task, self.logger
        if du.broadcast_object(not self.writer.latest_path.exists()):
            self.save()
        if self.step == 0:
            self.images()
        loader = iter(_train_loader(task, opts, self.step))
        sums: dict[str, float] = {}
        n_sum = 0
        t_interval, imgs_interval = 0.0, 0
        t_total, imgs_total = 0.0, 0
        values: dict[str, float] = {}
        stopped_early = False
        with stop_on_signals(self.request_stop, self.logger.info, stopping=lambda: self.stop_reason is not None):
            while self.step < opts.steps:
                t0 = time.perf_counter()
                batch = next(loader)
                losses = task.train_step(batch, self.step)
                names = sorted(losses)
                packed = torch.stack([losses[k].detach().float().reshape(()).cpu() for k in names]
                                     + [torch.tensor(float(self.stop_reason is not None))])
                packed = du.all_reduce_sum(packed.to(task.device)).cpu()
                vals = packed.tolist()
                values = {k: v / task.world_size for k, v in zip(names, vals[:-1])}
                if vals[-1] > 0 and self.stop_reason is None:
                    self.request_stop("stop requested by another process")
                dt = time.perf_counter() - t0
                t_interval += dt
                t_total += dt
                imgs_interval += opts.batch
                imgs_total += opts.batch
                bad = {k: v for k, v in values.items() if not math.isfinite(v)}
                if bad:
                    detail = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
                    logger.info(f"non-finite loss at step {self.step}: {detail}")
                    if (opts.on_nan == "rollback" and self.rollbacks < opts.max_rollbacks
                            and du.broadcast_object(self.writer.latest_path.exists())):
                        state = load_training_checkpoint(self.writer.latest_path, FORMAT_KEY, TRAIN_FORMAT,
                                                         TRAIN_FORMAT_VERSION)
                        attempts = self.rollbacks + 1
                        self.load(state, str(self.writer.latest_path))
                        self.rollbacks = attempts
                        seed_everything(derive_seed(opts.seed, 2, self.step, attempts, task.rank))
                        loader = iter(_train_loader(task, opts, self.step))
                        logger.info(f"rollback {attempts}/{opts.max_rollbacks}: reloaded step {self.step}, reseeded")
                        sums.clear()
                        n_sum = 0
                        continue
                    hint = (f"the last good checkpoint is {self.last_ckpt}; continue with --resume {opts.out} "
                            "(consider a lower --lr or --on-nan rollback)") if self.last_ckpt else "nothing was saved"
                    raise NonFiniteLossError(f"training stopped: non-finite loss at step {self.step}: {detail}; "
                                             f"{hint}")
                self.step += 1
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_sum += 1
                logger.progress(float(self.step), {"loss": values.get("loss")})
                done = self.step >= opts.steps
                if self.step % opts.log_interval == 0 or done:
                    scal = {f"Loss/{k}": v / n_sum for k, v in sums.items()}
                    ips = imgs_interval / max(t_interval, 1e-9)
                    scal.update({"Speed/img_per_s": ips, "Progress/step": float(self.step)})
                    for name, o in task.optimizers.items():
                        scal[f"LR/{name}"] = float(o.param_groups[0]["lr"])
                    logger.scalars(scal, self.nimg, extra={"step": self.step})
                    logger.info(f"step {self.step}: " + " ".join(f"{k.split('/', 1)[1]}={v:.4g}"
                                                                for k, v in scal.items() if k.startswith("Loss/"))
                                + f" img/s={ips:.2f}")
                    sums.clear()
                    n_sum = 0
                    t_interval, imgs_interval = 0.0, 0
                if self.step % opts.val_interval == 0 or done:
                    self.validate()
                if self.step % opts.image_interval == 0 or done:
                    self.images()
                snapshot = opts.snapshot_interval > 0 and (self.step % opts.snapshot_interval == 0)
                # read once: a signal between the save check and the stop check would otherwise stop unsaved
                stopping = self.stop_reason is not None
                if self.step % opts.save_interval == 0 or done or snapshot or stopping:
                    self.save(snapshot=snapshot)
                if stopping and not done:
                    stopped_early = True
                    logger.info(f"stopped at step {self.step}: {self.stop_reason}; continue with --resume {opts.out}")
                    break
        ips = imgs_total / max(t_total, 1e-9)
        if not stopped_early:
            logger.info(f"done: {self.step} steps; best validation loss {self.best_loss} at step {self.best_step}; "
                        f"{ips:.2f} img/s; checkpoints in {self.writer.directory}")
        return EncoderTrainResult(run_dir=self.run_dir, step=self.step, best_loss=self.best_loss,
                                  best_step=self.best_step, checkpoint=self.last_ckpt, stopped_early=stopped_early,
                                  stop_reason=self.stop_reason, last_values=values, last_val=self.last_val,
                                  rank=task.rank, world_size=task.world_size, img_per_s=ips)


def input_size_of(opts: EncoderTrainOptions) -> tuple[int, int]:
    """The encoder input (H, W) of ``opts``."""
    return parse_size(opts.input_size)
