"""The options of a StyleGAN2 training run (:class:`GANTrainOptions`, one field per command-line flag), what a
resume may change, and how ``--help`` groups them; the loop that uses them is :mod:`clcae.training.gan`
(the encoder trainers' counterpart is :mod:`clcae.training.encoder_options`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..networks.layers import IMPLS
from ..networks.projected import PROJECTED_MIXING
from .augment import parse_diffaug_policy
from .errors import OptionError
from .options import option, resume_may_change

__all__ = ["GANTrainOptions", "RESUME_MAY_CHANGE", "OPTION_GROUPS", "OPTION_CHOICES", "CONFIG_PATH_OPTIONS"]


@dataclass
class GANTrainOptions:
    """Every option of a StyleGAN2 training run (the CLI flag of ``name_x`` is ``--name-x``)."""

    # data
    data: str = option("", "'synthfaces' (rendered on the fly) or a folder of images (recursive; a folder written by "
                           "scripts/make_synthfaces.py uses its train split)", resume=True)
    synth_n: int = option(70000, "number of distinct SynthFaces images with --data synthfaces")
    data_seed: int = option(0, "SynthFaces dataset seed (identities, attributes)")
    policy: str = option("center_crop", "how folder images reach --size: center_crop | resize | pad")
    mirror: bool = option(False, "x-flip real images with probability 0.5 (dataset augmentation)")
    workers: int = option(2, "DataLoader worker processes per rank (0: load in the training process)", resume=True)
    # model
    size: int = option(256, "image resolution (a power of two >= 4; >= 16 for synthfaces)")
    style_dim: int = option(512, "dimension of z and w")
    n_mlp: int = option(8, "mapping network layers")
    channel_base: int = option(32768, "channels at resolution r: min(channel_base // r, channel_max); 32768 is "
                                      "config-f (rosinality channel_multiplier 2)")
    channel_max: int = option(512, "largest channel count")
    d_arch: str = option("stylegan2", "discriminator: stylegan2 (residual, rosinality layout) | projected (small "
                                      "heads on a frozen domain network's multi-scale features, Projected GAN)")
    proj_net: str = option("", "with --d-arch projected: the DomainNet file whose trunk gives the features (default: "
                               "the shipped pretrained/synthfaces64_domain_net.pt)", resume=True)
    proj_mixing: str = option("none", "with --d-arch projected: fixed random feature mixing: none | ccm "
                                      "(cross-channel) | ccm_csm (cross-channel and cross-scale)")
    proj_width: int = option(64, "with --d-arch projected: channels of each head's convolutions")
    # optimisation
    batch: int = option(32, "global batch size (split over processes)")
    lr: float = option(0.002, "Adam learning rate of G and D (betas 0, 0.99)")
    kimg: float = option(25000.0, "training length in thousands of real images shown to D", resume=True)
    r1: float = option(10.0, "R1 regularisation weight gamma (0 disables)")
    r1_interval: int = option(16, "lazy R1: every N discriminator steps")
    pl_weight: float = option(2.0, "path-length regularisation weight (0 disables)")
    pl_interval: int = option(4, "lazy path-length regularisation: every N generator steps")
    pl_batch_shrink: int = option(2, "path-length batch = batch / this")
    pl_decay: float = option(0.01, "decay of the path-length running mean")
    mixing: float = option(0.9, "style-mixing probability (per sample)")
    ema_kimg: float = option(10.0, "half-life of the G EMA in thousands of images (0: g_ema = G)")
    ema_rampup: float = option(0.0, "EMA ramp-up: half-life at most ema_rampup * images seen (0: off; 0.05 is "
                                    "NVIDIA's choice for short runs)")
    # augmentation
    aug: str = option("ada", "discriminator augmentation: ada (adaptive p) | fixed (p = --aug-p) | none")
    aug_p: float = option(0.0, "initial (ada) or fixed augmentation probability")
    ada_target: float = option(0.6, "ADA target for r_t = E[sign(D(real))]")
    ada_kimg: float = option(500.0, "ADA speed: thousands of images for p to move by 1")
    ada_interval: int = option(4, "ADA: adjust p every N steps")
    diffaug: str = option("", "DiffAugment policy applied to every D input after --aug, always: a comma-separated "
                              "subset of color,translation,cutout ('': off)")
    # run
    out: str = option("", "run directory: must be new or empty (with --resume: defaults to the checkpoint's run)",
                          resume=True)
    seed: int = option(0, "training seed (initialisation, latents, noise, augmentation, data order)")
    snapshot_kimg: float = option(200.0, "keep a snapshot checkpoint every N kimg", resume=True)
    checkpoint_kimg: float = option(20.0, "refresh checkpoints/latest.pt every N kimg (resume point)", resume=True)
    sample_kimg: float = option(20.0, "write a sample grid from g_ema (fixed z) every N kimg", resume=True)
    log_kimg: float = option(4.0, "log scalars (TensorBoard, stats.jsonl, console) every N kimg", resume=True)
    keep_snapshots: int = option(0, "keep only the newest N snapshots (0: keep all)", resume=True)
    sample_n: int = option(32, "images in each sample grid (0: no samples)", resume=True)
    on_nan: str = option("stop", "on a NaN/Inf loss: stop (report and exit) | rollback (reload latest.pt, reseed the "
                                 "random streams, continue)", resume=True)
    max_rollbacks: int = option(3, "with --on-nan rollback: give up after N rollbacks", resume=True)
    # performance and precision
    device: str = option("auto", "auto | cpu | cuda (each torchrun process takes cuda:LOCAL_RANK)", resume=True)
    impl: str = option("auto", "op implementation: auto (CUDA kernels on GPU, fast PyTorch path on CPU) | fast | "
                               "ref | cuda", resume=True)
    bf16: bool = option(False, "bfloat16 autocast for the main G/D passes (regularisers stay fp32)", resume=True)
    channels_last: bool = option(False, "channels-last activations in G and D", resume=True)
    tf32: bool = option(False, "allow TF32 matmuls/convolutions on Ampere+ GPUs (faster, less exact)", resume=True)
    deterministic: bool = option(False, "deterministic GPU algorithms (cudnn, cuBLAS; needed for exact resume on GPU)",
                                        resume=True)
    threads: int = option(0, "torch CPU threads per process (0: torch's default)", resume=True)
    dist_timeout: float = option(600.0, "seconds a collective may wait for another process before the job fails",
                                        resume=True)

    def validate(self, world_size: int = 1) -> None:
        """Raise :class:`OptionError` for any bad value (the message names the option and a valid choice; a
        command line names the flag)."""
        def need(ok: bool, name: str, problem: str, mentions: tuple[str, ...] = ()) -> None:
            if not ok:
                raise OptionError(name, problem, mentions)

        need(bool(self.data), "data", "is required: 'synthfaces' or a folder of images")
        log = int(round(math.log2(self.size))) if self.size > 0 else -1
        need(self.size >= 4 and 2 ** log == self.size, "size",
             f"must be a power of two >= 4 (e.g. 64, 256, 1024); got {self.size}")
        if self.data == "synthfaces":
            need(self.size >= 16, "size", f"must be >= 16: data synthfaces renders at >= 16 px; got {self.size}",
                 ("data",))
            need(self.synth_n >= 1, "synth_n", f"must be >= 1; got {self.synth_n}")
            need(self.data_seed >= 0, "data_seed", f"must be >= 0; got {self.data_seed}")
        for name in ("style_dim", "n_mlp", "channel_max"):
            need(getattr(self, name) >= 1, name, f"must be >= 1; got {getattr(self, name)}")
        need(self.channel_base >= self.size, "channel_base",
             f"{self.channel_base} gives 0 channels at {self.size} px (the channels are this value // the resolution); "
             f"use channel_base >= {self.size}", ("channel_base",))
        need(self.batch >= 1, "batch", f"must be >= 1; got {self.batch}")
        need(self.batch % world_size == 0, "batch",
             f"{self.batch} (over all processes) must be divisible by the number of processes ({world_size}); "
             f"use e.g. batch {max(world_size, self.batch // world_size * world_size)}", ("batch",))
        need(self.lr > 0, "lr", f"must be > 0; got {self.lr}")
        for name in ("kimg", "snapshot_kimg", "checkpoint_kimg", "sample_kimg", "log_kimg", "ada_kimg"):
            need(getattr(self, name) > 0, name, f"must be > 0; got {getattr(self, name)}")
        for name in ("r1", "pl_weight"):
            need(getattr(self, name) >= 0, name, f"must be >= 0; got {getattr(self, name)}")
        for name in ("r1_interval", "pl_interval", "pl_batch_shrink", "ada_interval"):
            need(getattr(self, name) >= 1, name, f"must be >= 1; got {getattr(self, name)}")
        need(0 < self.pl_decay <= 1, "pl_decay", f"must be in (0, 1]; got {self.pl_decay}")
        need(0 <= self.mixing <= 1, "mixing", f"is a probability in [0, 1]; got {self.mixing}")
        for name in ("ema_kimg", "ema_rampup"):
            need(getattr(self, name) >= 0, name, f"must be >= 0; got {getattr(self, name)}")
        need(self.aug in ("ada", "fixed", "none"), "aug", f"must be ada, fixed or none; got {self.aug!r}")
        try:
            parse_diffaug_policy(self.diffaug)
        except ValueError as e:
            raise OptionError("diffaug", f": {e}") from e
        need(self.d_arch in ("stylegan2", "projected"), "d_arch",
             f"must be stylegan2 or projected; got {self.d_arch!r}")
        need(self.proj_mixing in PROJECTED_MIXING, "proj_mixing",
             f"must be one of {', '.join(PROJECTED_MIXING)}; got {self.proj_mixing!r}")
        need(self.proj_width >= 1, "proj_width", f"must be >= 1; got {self.proj_width}")
        if self.d_arch == "projected":
            need(self.feature_net_path().is_file(), "proj_net",
                 f"{self.feature_net_path()}: no such file; pass a DomainNet file "
                 "(scripts/train_domain_net.py writes one)")
        need(0 <= self.aug_p <= 1, "aug_p", f"is a probability in [0, 1]; got {self.aug_p}")
        need(-1 < self.ada_target < 1, "ada_target", f"must be in (-1, 1) (0.6 in the paper); got {self.ada_target}")
        need(self.policy in ("center_crop", "resize", "pad"), "policy",
             f"must be center_crop, resize or pad; got {self.policy!r}")
        for name in ("workers", "threads", "sample_n", "keep_snapshots", "max_rollbacks"):
            need(getattr(self, name) >= 0, name, f"must be >= 0; got {getattr(self, name)}")
        need(self.on_nan in ("stop", "rollback"), "on_nan", f"must be stop or rollback; got {self.on_nan!r}")
        need(self.device in ("auto", "cpu", "cuda"), "device", f"must be auto, cpu or cuda; got {self.device!r}")
        need(self.impl in IMPLS, "impl", f"must be one of {', '.join(IMPLS)}; got {self.impl!r}")
        need(self.dist_timeout > 0, "dist_timeout", f"must be > 0 seconds; got {self.dist_timeout}")

    @property
    def g_kwargs(self) -> dict:
        return dict(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp, channel_base=self.channel_base,
                    channel_max=self.channel_max)

    @property
    def d_kwargs(self) -> dict:
        """Constructor arguments of the StyleGAN2 :class:`Discriminator` (``d_arch == 'stylegan2'``)."""
        return dict(size=self.size, channel_base=self.channel_base, channel_max=self.channel_max)

    def feature_net_path(self) -> Path:
        """The DomainNet file of ``--d-arch projected`` (``--proj-net``, or the shipped one)."""
        if self.proj_net:
            return Path(self.proj_net)
        from ..pretrained import pretrained_dir

        return pretrained_dir() / "synthfaces64_domain_net.pt"


#: Options a resumed run may change. The others define the model, the data or the optimisation and must match the
#: checkpoint. The numeric knobs in the second group may change, but the continuation is then no longer
#: bit-identical to an uninterrupted run.
RESUME_MAY_CHANGE = resume_may_change(GANTrainOptions)
_NUMERIC_KNOBS = ("device", "impl", "bf16", "channels_last", "tf32", "deterministic", "threads")

#: The options by topic (the order of ``--help`` and of docs/TRAINING_GENERATOR.md).
OPTION_GROUPS = {
    "data": ("data", "synth_n", "data_seed", "policy", "mirror", "workers"),
    "model": ("size", "style_dim", "n_mlp", "channel_base", "channel_max", "d_arch", "proj_net", "proj_mixing",
              "proj_width"),
    "optimisation": ("batch", "lr", "kimg", "r1", "r1_interval", "pl_weight", "pl_interval", "pl_batch_shrink",
                     "pl_decay", "mixing", "ema_kimg", "ema_rampup"),
    "augmentation": ("aug", "aug_p", "ada_target", "ada_kimg", "ada_interval", "diffaug"),
    "run": ("out", "seed", "snapshot_kimg", "checkpoint_kimg", "sample_kimg", "log_kimg", "keep_snapshots",
            "sample_n", "on_nan", "max_rollbacks"),
    "performance and precision": ("device", "impl", "bf16", "channels_last", "tf32", "deterministic", "threads",
                                  "dist_timeout"),
}
#: Allowed values of the options that take one of a few words.
OPTION_CHOICES = {"policy": ("center_crop", "resize", "pad"), "aug": ("ada", "fixed", "none"),
                  "d_arch": ("stylegan2", "projected"), "proj_mixing": PROJECTED_MIXING,
                  "on_nan": ("stop", "rollback"), "device": ("auto", "cpu", "cuda"), "impl": IMPLS}


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(GANTrainOptions)]


#: Options of a generator config that name files or folders (with the words that are not paths).
CONFIG_PATH_OPTIONS = {"data": ("synthfaces",), "proj_net": (), "out": ()}
