"""The SynthFaces domain network's training and evaluation (what ``scripts/train_domain_net.py`` runs).

Sections:

- options: :class:`~clcae.training.domain_options.DomainTrainOptions` (declared in
  :mod:`clcae.training.domain_options` like the other trainers' options; the script makes one flag of each),
  :data:`RESUME_MAY_CHANGE`, :func:`validate_options`, :func:`net_kwargs`, :func:`resolve_options`;
- data: :class:`LabelledImages` (uint8 images with person ids and attributes, in memory), :func:`render_split`,
  :func:`read_folder_split`, :func:`load_train_data`, :func:`load_eval_data`, :func:`random_translate`;
- training: :func:`learning_rate` (linear warm-up, cosine decay), :func:`margin_at` (ArcFace margin ramp),
  :func:`parse_boost`, :func:`attribute_losses`, :class:`DomainNetTrainer` (one optimiser step; resumable state)
  and :func:`train` (run directory, logging, checkpoints, SIGINT/SIGTERM, the final evaluation);
- evaluation: :func:`predict`, :func:`evaluate` (verification, attribute errors, Fréchet noise floor on the test
  split), :func:`run_evaluation`, :func:`evaluate_model_file`, :func:`format_metrics`, :func:`load_any_domain_net`.

The metrics themselves are :mod:`clcae.metrics.verification` (verification, attribute errors) and
:mod:`clcae.metrics.frechet`. The network is :class:`clcae.networks.domain.DomainNet`.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import load_file, load_state_dict_strict
from ..data import synthfaces as sf
from ..data.sampler import InfiniteSampler, derive_seed
from ..jobs import write_json
from ..losses.identity import ArcMarginHead
from ..metrics.frechet import feature_statistics, frechet_distance
from ..metrics.verification import attribute_errors, verification_metrics
from ..networks.domain import DomainNet, load_domain_net, save_domain_net
from ..networks.memory_format import to_channels_last
from ..version import __version__
from .domain_options import OPTION_NAMES, RESUME_MAY_CHANGE, DomainTrainOptions
from .errors import ConfigError, NonFiniteLossError, OptionError
from .logger import TrainLogger
from .runs import decide_run_dir, make_run_dir, merge_resume_options, record_options, stop_on_signals
from .state import (CHECKPOINT_DIR, CheckpointWriter, capture_rng_state, load_training_checkpoint,
                    resolve_resume_path, restore_rng_state, seed_everything, to_jsonable)

__all__ = [
    "DomainTrainOptions", "RESUME_MAY_CHANGE", "ConfigError", "OptionError", "NonFiniteLossError", "net_kwargs",
    "validate_options",
    "LabelledImages", "render_split", "read_folder_split", "load_train_data", "load_eval_data", "to_float",
    "random_translate", "learning_rate", "margin_at", "parse_boost", "attribute_losses", "DomainNetTrainer",
    "TrainResult", "resolve_options", "train", "predict", "evaluate", "run_evaluation", "evaluate_model_file",
    "format_metrics", "load_any_domain_net",
]

FORMAT_KEY = "domain_net_train"
TRAIN_FORMAT = "clcae.domain_net.train"
TRAIN_FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------------- options
def net_kwargs(opts: DomainTrainOptions) -> dict:
    """DomainNet constructor arguments from the options."""
    return opts.net_kwargs


def validate_options(opts: DomainTrainOptions) -> None:
    """Raise :class:`ConfigError` (an :class:`OptionError` naming the option) for values that cannot work."""
    opts.validate()
    kwargs = opts.net_kwargs
    try:
        net = DomainNet(**kwargs)
    except ValueError as e:
        raise ConfigError(f"network options: {e}") from e
    parse_boost(opts.attr_boost, net.attribute_names)


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class LabelledImages:
    """Images in memory with their labels: ``images`` uint8 ``[N, 3, H, W]``, ``person_ids`` int64 ``[N]``,
    ``attributes`` float32 ``[N, A]`` (ATTRIBUTES order), and where they came from."""

    images: torch.Tensor
    person_ids: torch.Tensor
    attributes: torch.Tensor
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int) -> "LabelledImages":
        """The first ``n`` items (views, not copies)."""
        return LabelledImages(self.images[:n], self.person_ids[:n], self.attributes[:n], dict(self.source, n=n))


def _render_chunk(job):
    n, res, split, seed, n_persons, indices = job
    ds = sf.SynthFaces(n, res, split, seed, n_persons=n_persons)
    return np.stack([ds.image(i) for i in indices])


def render_split(n: int, res: int, split: str, seed: int, n_persons: int, workers: int = 1,
                 progress: bool = False) -> LabelledImages:
    """Render items ``0..n-1`` of a SynthFaces split into memory (``workers`` processes)."""
    ds = sf.SynthFaces(n, res, split, seed, n_persons=n_persons)
    chunks = [(n, res, split, seed, n_persons, range(s, min(s + 256, n))) for s in range(0, n, 256)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"render {split} {res}px", unit="img", file=sys.stderr)
    parts = []
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            for part in pool.imap(_render_chunk, chunks):
                parts.append(part)
                if bar is not None:
                    bar.update(len(part))
    else:
        for job in chunks:
            parts.append(_render_chunk(job))
            if bar is not None:
                bar.update(len(parts[-1]))
    if bar is not None:
        bar.close()
    images = torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(images, torch.from_numpy(ds.person_ids()), torch.from_numpy(ds.attribute_matrix()),
                          {"kind": "rendered", "split": split, "n": n, "n_persons": n_persons, "seed": seed,
                           "res": res, "synthfaces_version": sf.VERSION})


def read_folder_split(root: str | Path, split: str, n: int | None = None, progress: bool = False) -> LabelledImages:
    """Read (the first ``n`` items of) a split written by :func:`clcae.data.synthfaces.write_dataset`."""
    from PIL import Image

    root = Path(root)
    labels_path = root / f"labels_{split}.csv"
    if not labels_path.is_file():
        raise ConfigError(f"{root}: no {labels_path.name}; write the split with scripts/make_synthfaces.py")
    meta = sf.read_meta(root)
    rows = sf.read_labels(labels_path)
    if n is not None:
        if n > len(rows):
            raise ConfigError(f"{labels_path}: {len(rows)} items, {n} wanted")
        rows = rows[:n]
    images = np.empty((len(rows), meta["res"], meta["res"], 3), np.uint8)
    it = rows
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(rows, desc=f"read {split}", unit="img", file=sys.stderr)
    for i, row in enumerate(it):
        with Image.open(root / row["file"]) as im:
            images[i] = np.asarray(im.convert("RGB"))
    attrs = np.stack([sf.attributes_to_vector(r) for r in rows])
    info = meta["splits"].get(split, {})
    return LabelledImages(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                          torch.tensor([r["person_id"] for r in rows], dtype=torch.int64), torch.from_numpy(attrs),
                          {"kind": "folder", "root": str(root), "split": split, "n": len(rows),
                           "n_persons": info.get("n_persons"), "seed": meta["seed"], "res": meta["res"],
                           "synthfaces_version": meta["version"]})


def load_train_data(opts: DomainTrainOptions, progress: bool = False) -> LabelledImages:
    """The TRAIN split named by ``data``: rendered (``'synthfaces'``: ``n`` images of ``persons`` persons at
    ``--res``) or read from a :func:`clcae.data.synthfaces.write_dataset` folder."""
    if opts.data == "synthfaces":
        return render_split(opts.n, opts.res, "train", opts.data_seed, opts.persons, opts.workers,
                            progress)
    if not Path(opts.data).is_dir():
        raise OptionError("data", f"{opts.data!r} is neither 'synthfaces' nor a folder")
    return read_folder_split(opts.data, "train", progress=progress)


def load_eval_data(opts: DomainTrainOptions, n: int, res: int, progress: bool = False) -> LabelledImages:
    """The first ``n`` images of the TEST split, rendered at ``res`` or read from ``--eval-data``."""
    if opts.eval_data == "synthfaces":
        return render_split(n, res, "test", opts.data_seed, opts.eval_persons, opts.workers, progress)
    data = read_folder_split(opts.eval_data, "test", n, progress)
    if data.source["res"] != res:
        raise OptionError("eval_data", f"{opts.eval_data} holds {data.source['res']} px images; {res} px wanted")
    return data


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> float32 in [-1, 1] (SynthFaces' convention)."""
    return images.float().div_(127.5).sub_(1.0)


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by integers in ``[-max_shift, max_shift]`` (x and y), reflect-padding the border."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).tolist()
    xp = F.pad(x, (max_shift,) * 4, mode="reflect")
    m = max_shift
    return torch.stack([xp[i, :, m + dy:m + dy + h, m + dx:m + dx + w] for i, (dx, dy) in enumerate(shifts)])


# ---------------------------------------------------------------------------------------------------- training
def learning_rate(opts: DomainTrainOptions, step: int) -> float:
    """Linear warm-up over ``warmup * steps``, then cosine decay to 0 at ``steps`` (``step`` is 0-based)."""
    total = opts.steps
    warm = int(round(opts.warmup * total))
    if step < warm:
        return opts.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return opts.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def margin_at(opts: DomainTrainOptions, step: int) -> float:
    """ArcFace margin (radians) at 0-based ``step``: linear from 0 to ``arc_m`` over ``margin_warmup * steps``."""
    ramp = opts.margin_warmup * opts.steps
    return opts.arc_m if ramp <= 0 else opts.arc_m * min(1.0, step / ramp)


def parse_boost(text: str, names: tuple[str, ...]) -> torch.Tensor:
    """``'eyes_open=4,smile=2'`` -> float32 ``[len(names)]`` multipliers (1 for names not listed)."""
    boost = torch.ones(len(names))
    for item in filter(None, (t.strip() for t in str(text).split(","))):
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise OptionError("attr_boost", f"has {item!r}, which is not NAME=FACTOR with NAME one of {list(names)}")
        try:
            boost[names.index(name)] = float(value)
        except ValueError as e:
            raise OptionError("attr_boost", f"has {item!r}: {value!r} is not a number") from e
    return boost


def attribute_losses(net: DomainNet, logits: torch.Tensor, targets: torch.Tensor, beta: float = 0.05,
                     boost: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``{'attr': smooth L1 (``beta``) of sigmoid(logits) vs range-normalised continuous targets, averaged over
    the batch and the attributes (each multiplied by its ``boost`` [A], default 1), 'glasses': BCE}``."""
    label_idx = [sf.ATTRIBUTE_NAMES.index(n) for n in net.attribute_names]
    t = net.normalise_attributes(targets[:, label_idx])
    binary = net.attr_binary
    losses = {}
    if (~binary).any():
        per = F.smooth_l1_loss(torch.sigmoid(logits[:, ~binary]), t[:, ~binary], beta=beta, reduction="none")
        if boost is not None:
            per = per * boost.to(per)[~binary]
        losses["attr"] = per.mean()
    if binary.any():
        losses["glasses"] = F.binary_cross_entropy_with_logits(logits[:, binary], t[:, binary])
    return losses


class DomainNetTrainer:
    """The network, the ArcFace head, the optimiser and the step counter; :meth:`train_step` runs one step."""

    def __init__(self, opts: DomainTrainOptions, class_person_ids: np.ndarray):
        """``opts``: the options; ``class_person_ids``: the sorted person ids of the
        training data, one ArcFace class each."""
        self.opts = dataclasses.replace(opts)
        self.class_person_ids = np.asarray(class_person_ids, np.int64)
        self.net = DomainNet(**net_kwargs(opts))
        self.head = ArcMarginHead(self.net.embed_dim, len(self.class_person_ids), s=opts.arc_s, m=opts.arc_m)
        if opts.channels_last:
            # except the small strided 1x1 shortcuts, whose channels-last CPU backward crashes on AVX-512
            self.net = to_channels_last(self.net)
        decay, no_decay = [], []
        for module in (self.net, self.head):
            for p in module.parameters():
                (decay if p.ndim >= 2 else no_decay).append(p)
        self.optim = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                                        {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr)
        self.attr_boost = parse_boost(opts.attr_boost, self.net.attribute_names)
        self.step = 0

    def classes(self, person_ids: torch.Tensor) -> torch.Tensor:
        """Person ids int64 ``[B]`` -> class indices into the head (positions in ``class_person_ids``)."""
        idx = np.searchsorted(self.class_person_ids, person_ids.numpy())
        return torch.from_numpy(idx)

    def train_step(self, images: torch.Tensor, person_ids: torch.Tensor, attributes: torch.Tensor
                   ) -> dict[str, float]:
        """One optimiser step on a float batch ``[B, 3, H, W]`` in [-1, 1]; returns the losses as floats."""
        self.net.train()
        self.head.train()
        lr = learning_rate(self.opts, self.step)
        for g in self.optim.param_groups:
            g["lr"] = lr
        self.head.m = margin_at(self.opts, self.step)
        if self.opts.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = self.net(images)
        labels = self.classes(person_ids)
        cos = self.head.cosine(out["embed"])
        logits = self.head.logits_from_cosine(cos, labels)
        losses = {"id": F.cross_entropy(logits, labels)}
        losses.update(attribute_losses(self.net, out["attribute_logits"], attributes, self.opts.attr_beta,
                                       self.attr_boost))
        weights = {"id": self.opts.id_weight, "attr": self.opts.attr_weight,
                   "glasses": self.opts.glasses_weight}
        total = sum(weights[k] * v for k, v in losses.items())
        self.optim.zero_grad(set_to_none=True)
        total.backward()
        self.optim.step()
        self.step += 1
        with torch.no_grad():
            train_acc = (cos.argmax(1) == labels).float().mean()  # nearest class centre, no margin
        values = {k: float(v.detach()) for k, v in losses.items()}
        values.update(total=float(total.detach()), train_id_acc=float(train_acc), lr=lr, margin=self.head.m)
        return values

    def state_dict(self, extra: Mapping[str, Any] | None = None) -> dict:
        """The resume point: format tags, step, network kwargs and weights, head, optimiser, class person ids,
        options and the global RNG states (plain tensors and primitives), plus ``extra``."""
        state = {FORMAT_KEY: TRAIN_FORMAT, FORMAT_KEY + "_version": TRAIN_FORMAT_VERSION, "step": self.step,
                 "net_kwargs": dict(self.net.config),
                 "net": {k: v.detach().contiguous().clone() for k, v in self.net.state_dict().items()},
                 "head": {k: v.detach().clone() for k, v in self.head.state_dict().items()},
                 "optim": self.optim.state_dict(), "class_person_ids": torch.from_numpy(self.class_person_ids),
                 "options": to_jsonable(dataclasses.asdict(self.opts)), "rng": capture_rng_state()}
        if extra:
            state.update(extra)
        return state

    def load_state_dict(self, state: Mapping[str, Any], source: str) -> None:
        """Restore :meth:`state_dict` output strictly (``source`` names the file in errors); raises
        :class:`ConfigError` if the checkpoint was trained on other persons than this trainer's classes."""
        saved = state["class_person_ids"].numpy()
        if not np.array_equal(saved, self.class_person_ids):
            raise ConfigError(f"{source}: the checkpoint was trained on other persons ({len(saved)} classes) than "
                              f"the training data holds ({len(self.class_person_ids)})")
        load_state_dict_strict(self.net, state["net"], source, "domain network")
        load_state_dict_strict(self.head, state["head"], source, "ArcFace head")
        self.optim.load_state_dict(state["optim"])
        self.step = int(state["step"])
        restore_rng_state(state["rng"])


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the steps done, whether (and why: ``'SIGINT'``,
    ``'SIGTERM'``, ``'stop_after'``) it stopped before the end, the model file and test metrics (``None`` when
    stopped early), the logged loss means (one dict per ``log_every`` interval) and the wall time in seconds."""

    run_dir: Path
    step: int
    stopped_early: bool
    stop_reason: str | None
    model_path: Path | None
    metrics: dict | None
    history: list[dict]
    seconds: float


def resolve_options(given: Mapping[str, Any], resume: str | None
                    ) -> tuple[DomainTrainOptions, dict | None, Path | None]:
    """Defaults < checkpoint options (on resume) < options given; a resume may change only
    :data:`RESUME_MAY_CHANGE`. Returns ``(options, checkpoint state or None, checkpoint path or None)``."""
    DomainTrainOptions.from_mapping(given)  # unknown names
    if resume is None:
        return DomainTrainOptions.from_mapping(given), None, None
    path = resolve_resume_path(resume)
    state = load_training_checkpoint(path, FORMAT_KEY, TRAIN_FORMAT, TRAIN_FORMAT_VERSION)
    # the checkpoint's options over the defaults (which fill in options newer than the checkpoint)
    saved = dataclasses.asdict(DomainTrainOptions.from_mapping(
        {k: v for k, v in (state.get("options") or {}).items() if k in OPTION_NAMES}))
    merged = merge_resume_options(saved, given, OPTION_NAMES, RESUME_MAY_CHANGE, path, ConfigError)
    return DomainTrainOptions.from_mapping(merged), state, path


def train(given: Mapping[str, Any], resume: str | None = None, tensorboard: bool = True,
          progress: bool | None = None, stop_after: int | None = None) -> TrainResult:
    """Train (or continue) a domain network, then evaluate it on the test split (``scripts/train_domain_net.py``).

    Args:
        given: options set explicitly (fields of :class:`DomainTrainOptions`); the others come from the defaults or the
            checkpoint.
        resume: a run directory or a training checkpoint to continue.
        tensorboard, progress: logging switches (see :class:`~clcae.training.logger.TrainLogger`).
        stop_after: stop cleanly (checkpoint, no evaluation) once this many steps are done (tests; Ctrl-C does the
            same).
    """
    t_start = time.time()
    opts, resume_state, resume_path = resolve_options(given, resume)
    validate_options(opts)
    run_dir, in_place = decide_run_dir(opts.out, resume_path, ConfigError)
    opts.out = str(run_dir)
    torch.set_num_threads(int(opts.threads))
    data = load_train_data(opts, progress=bool(progress))
    class_person_ids = np.unique(data.person_ids.numpy())
    if len(class_person_ids) < 2:
        raise ConfigError("the training data holds fewer than two persons")
    make_run_dir(run_dir, in_place)
    batch, steps = int(opts.batch), int(opts.steps)
    logger = TrainLogger(run_dir, total_kimg=steps * batch / 1000, tensorboard=tensorboard, progress=progress,
                         start_kimg=(resume_state or {}).get("step", 0) * batch / 1000, desc=f"train {run_dir.name}")
    try:
        seed_everything(opts.seed)
        trainer = DomainNetTrainer(opts, class_person_ids)
        record = {"options": dataclasses.asdict(opts), "run": {"data": data.source, "classes": int(len(class_person_ids)),
                                           "clcae_version": __version__, "torch_version": str(torch.__version__),
                                           "command": sys.argv, "resumed_from": str(resume_path) if resume_path
                                           else None}}
        if resume_state is not None:
            trainer.load_state_dict(resume_state, str(resume_path))
            record_options(run_dir, record, in_place, resumed_at={"step": trainer.step})
            logger.info(f"resumed from {resume_path} at step {trainer.step}")
        else:
            record_options(run_dir, record, in_place)
        resume_state = None
        n_params = sum(p.numel() for p in trainer.net.parameters())
        logger.info(f"run {run_dir}: {len(data)} train images of {len(class_person_ids)} persons "
                    f"({data.source.get('kind')}); DomainNet {n_params / 1e6:.2f} M params; batch {batch}, "
                    f"{steps} steps (~{steps * batch / len(data):.1f} epochs); {opts.threads} thread(s)")
        return _loop(trainer, data, opts, logger, run_dir, t_start, progress, stop_after)
    finally:
        logger.close()


def _loop(trainer: DomainNetTrainer, data: LabelledImages, opts: dict, logger: TrainLogger, run_dir: Path,
          t_start: float, progress: bool | None, stop_after: int | None) -> TrainResult:
    batch, steps = int(opts.batch), int(opts.steps)
    writer = CheckpointWriter(run_dir / CHECKPOINT_DIR)
    sampler = InfiniteSampler(len(data), seed=derive_seed(opts.seed, 1))
    val = None
    if opts.val_every > 0:
        val = load_eval_data(opts, min(opts.val_n, opts.eval_n), trainer.net.input_size)
    stop: dict[str, str | None] = {"reason": None}

    def request_stop(reason: str) -> None:  # the latest signal names the stop
        stop["reason"] = reason

    history: list[dict] = []
    sums: dict[str, float] = {}
    count, t_interval, t_train = 0, time.time(), 0.0
    with stop_on_signals(request_stop, logger.info):
        if not writer.latest_path.exists():
            writer.save(trainer.state_dict(), 0)
        while trainer.step < steps:
            idx = torch.tensor(sampler.global_batch(trainer.step * batch, batch))
            gen = torch.Generator().manual_seed(derive_seed(opts.seed, 2, trainer.step))
            x = random_translate(to_float(data.images[idx]), int(opts.translate), gen)
            t0 = time.time()
            values = trainer.train_step(x, data.person_ids[idx], data.attributes[idx])
            t_train += time.time() - t0
            if not all(math.isfinite(v) for v in values.values()):
                raise NonFiniteLossError(f"non-finite loss at step {trainer.step - 1}: {values}; the last good "
                                         f"checkpoint is {writer.latest_path} (resume the run {run_dir}, "
                                         "perhaps with a lower lr)")
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            step = trainer.step
            logger.progress(step * batch / 1000, {"loss": values["total"], "id": values["id"]})
            if step % opts.log_every == 0 or step == steps:
                means = {k: v / count for k, v in sums.items()}
                means["lr"], means["margin"] = values["lr"], values["margin"]
                img_s = count * batch / max(time.time() - t_interval, 1e-9)
                scal = {f"Loss/{k}": means[k] for k in ("total", "id", "attr", "glasses") if k in means}
                scal.update({"Train/id_acc": means["train_id_acc"], "Train/lr": means["lr"],
                             "Train/margin": means["margin"], "Speed/img_per_s": img_s})
                logger.scalars(scal, step * batch, extra={"step": step})
                history.append(dict(means, step=step))
                logger.info(f"step {step}/{steps}: " + " ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in scal.items()))
                sums, count, t_interval = {}, 0, time.time()
            if val is not None and (step % opts.val_every == 0 or step == steps):
                v = verification_metrics(predict(trainer.net, val.images)["embed"], val.person_ids.numpy(),
                                         min(opts.eval_pairs, len(val)), opts.eval_seed)
                logger.scalars({"Val/verification_accuracy": v["accuracy"], "Val/roc_auc": v["roc_auc"]},
                               step * batch, extra={"step": step})
                logger.info(f"step {step}: quick test check on {len(val)} images: verification accuracy "
                            f"{v['accuracy']:.4f}, AUC {v['roc_auc']:.4f}")
            if stop_after is not None and step >= stop_after and stop["reason"] is None:
                stop["reason"] = "stop_after"
            if step % opts.checkpoint_every == 0 or step == steps or stop["reason"] is not None:
                writer.save(trainer.state_dict(), step * batch, snapshot=step == steps)
            if stop["reason"] is not None and step < steps:
                logger.info(f"stopped at step {step} ({stop['reason']}); resume the run {run_dir} to continue")
                return TrainResult(run_dir, step, True, stop["reason"], None, None, history, time.time() - t_start)

    logger.info(f"training done: {steps} steps; {t_train:.0f} s in training steps this session")
    model_path = run_dir / "domain_net.pt"
    trainer.net = trainer.net.to(memory_format=torch.contiguous_format)
    train_info = {"steps": steps, "batch": batch, "images_seen": steps * batch, "classes":
                  int(len(trainer.class_person_ids)), "data": to_jsonable(data.source), "options": to_jsonable(dataclasses.asdict(opts))}
    save_domain_net(trainer.net, model_path, {"training": train_info})
    metrics = run_evaluation(trainer.net, opts, progress)
    write_json(run_dir / "eval_test.json", to_jsonable(metrics))
    save_domain_net(trainer.net, model_path, {"training": train_info, "metrics": to_jsonable(metrics)})
    logger.info("test metrics: " + format_metrics(metrics))
    logger.info(f"wrote {model_path} and {run_dir / 'eval_test.json'}")
    return TrainResult(run_dir, steps, False, None, model_path, metrics, history, time.time() - t_start)


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(net: DomainNet, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Run ``net`` (eval mode) over uint8 images; returns the concatenated outputs (float32, CPU)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    outs: dict[str, list[torch.Tensor]] = {}
    try:
        for s in range(0, len(images), batch):
            out = net(to_float(images[s:s + batch]).to(device))
            for k, v in out.items():
                outs.setdefault(k, []).append(v.float().cpu())
    finally:
        net.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


def evaluate(net: DomainNet, data: LabelledImages, n_pairs: int = 6000, seed: int = 0, batch: int = 256) -> dict:
    """Test metrics of ``net`` on ``data`` (persons never seen in training).

    Args:
        net: the domain network (its mode is restored afterwards); data: the test images with their labels;
        n_pairs, seed: verification pairs (:func:`clcae.metrics.verification.sample_pairs`); batch: images per
        forward pass.

    Returns ``{'verification': {...}, 'attributes': {...}, 'frechet': {...}, 'data': {...}, 'seconds': float}``:

    - ``verification`` (:func:`clcae.metrics.verification.verification_metrics`): ``accuracy`` (2-fold: threshold
      chosen on one half of the pairs, accuracy measured on the other, averaged), ``roc_auc``,
      ``tar_at_far_1e-2``, the mean cosine of same / different pairs;
    - ``attributes`` (:func:`clcae.metrics.verification.attribute_errors`): ``mae`` per continuous attribute in
      label units, ``mae_normalised`` (divided by the attribute's range), ``mae_constant_baseline`` (always
      predicting the test mean), ``mean_mae_normalised`` over the continuous attributes, and for glasses
      ``glasses_accuracy`` (probability > 0.5) with the majority baseline;
    - ``frechet``: the Fréchet distance between the features of the first and second half of the images.
    """
    t0 = time.time()
    out = predict(net, data.images, batch)
    verification = verification_metrics(out["embed"], data.person_ids.numpy(), n_pairs, seed)
    by_name = {a.name: a for a in sf.ATTRIBUTES}
    label_idx = [sf.ATTRIBUTE_NAMES.index(n) for n in net.attribute_names]
    attrs = attribute_errors(out["attributes"], data.attributes[:, label_idx],
                             [by_name[n] for n in net.attribute_names])
    half = len(data) // 2
    feats = out["features"].double()
    fd = (frechet_distance(*feature_statistics(feats[:half]), *feature_statistics(feats[half:2 * half]))
          if half >= 2 else float("nan"))
    return {"verification": verification, "attributes": attrs,
            "frechet": {"test_half_vs_half": fd, "images_per_set": half, "feature_dim": int(feats.shape[1])},
            "data": dict(data.source, res_in=int(data.images.shape[-1]), net_input_size=net.input_size,
                         n_persons_seen=int(len(torch.unique(data.person_ids)))),
            "seconds": round(time.time() - t0, 2)}


def format_metrics(m: Mapping[str, Any]) -> str:
    """One paragraph of the headline numbers."""
    v, a = m["verification"], m["attributes"]
    maes = ", ".join(f"{k} {x:.3f}" for k, x in a["mae"].items())
    extra = ", ".join(f"{k} {x:.4f}" for k, x in a.items() if k.endswith("_accuracy"))
    return (f"verification: accuracy {v['accuracy']:.4f}, ROC AUC {v['roc_auc']:.4f}, TAR@FAR=1e-2 "
            f"{v['tar_at_far_1e-2']:.4f} ({v['pairs']} pairs); attributes: MAE {maes}; mean normalised MAE "
            f"{a['mean_mae_normalised']:.4f}; {extra}; FD(test half vs half) {m['frechet']['test_half_vs_half']:.4g}")


def run_evaluation(net: DomainNet, opts: DomainTrainOptions, progress: bool | None = None) -> dict:
    """Load the test data named by the options and :func:`evaluate` ``net`` on it."""
    res = int(opts.eval_res) or net.input_size
    data = load_eval_data(opts, int(opts.eval_n), res, progress=bool(progress))
    metrics = evaluate(net, data, int(opts.eval_pairs), int(opts.eval_seed))
    metrics["options"] = {k: getattr(opts, k) for k in ("eval_data", "eval_n", "eval_persons", "eval_pairs", "eval_seed",
                                               "eval_res", "data_seed")}
    return metrics


def load_any_domain_net(path: str | Path) -> DomainNet:
    """A DomainNet (eval mode, frozen) from a :func:`~clcae.networks.domain.save_domain_net` file or from a
    training checkpoint written by :func:`train` (``checkpoints/latest.pt`` or a snapshot)."""
    obj = load_file(path)
    if isinstance(obj, dict) and obj.get(FORMAT_KEY) == TRAIN_FORMAT:
        net = DomainNet(**obj["net_kwargs"])
        load_state_dict_strict(net, obj["net"], str(path), "domain network")
        return net.eval().requires_grad_(False)
    return load_domain_net(path)


def evaluate_model_file(model_path: str | Path, given: Mapping[str, Any] | None = None,
                        json_path: str | Path | None = None, progress: bool = True) -> tuple[dict, Path]:
    """Evaluate a model file on the test split and write the metrics as JSON (the script's ``--eval-only``).

    Args:
        model_path: a :func:`~clcae.networks.domain.save_domain_net` file or a training checkpoint
            (:func:`load_any_domain_net`).
        given: options (fields of :class:`DomainTrainOptions`; the evaluation reads ``eval_*``, ``data_seed``, ``workers`` and
            ``threads``) over the defaults.
        json_path: where to write the metrics; default beside the model, ``<stem>.eval_test_<res>px.json``.
        progress: show a progress bar while rendering or reading the test images.
    Returns:
        ``(metrics, json_path)``: :func:`run_evaluation`'s dict plus ``'model'`` (the path as given), and where it
        was written.
    """
    opts = DomainTrainOptions.from_mapping(given or {})
    torch.set_num_threads(int(opts.threads))
    net = load_any_domain_net(model_path)
    metrics = run_evaluation(net, opts, progress=progress)
    metrics["model"] = str(model_path)
    res = metrics["data"]["res_in"]
    out = Path(json_path) if json_path else Path(model_path).with_name(
        f"{Path(model_path).stem}.eval_test_{res}px.json")
    write_json(out, to_jsonable(metrics))
    return metrics, out
