"""The options of a domain-network training run (:class:`DomainTrainOptions`, one field per command-line flag of
``scripts/train_domain_net.py``), what a resume may change, and how ``--help`` groups them; the trainer that uses
them is :mod:`clcae.training.domain` (the generator's and the encoders' counterparts are
:mod:`clcae.training.gan_options` and :mod:`clcae.training.encoder_options`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..data.synthfaces import DEFAULT_PERSONS
from .errors import ConfigError, OptionError
from .options import option, resume_may_change

__all__ = ["DomainTrainOptions", "RESUME_MAY_CHANGE", "OPTION_GROUPS", "OPTION_NAMES", "parse_int_list"]


@dataclass
class DomainTrainOptions:
    """Every option of a domain-network training run (the CLI flag of ``name_x`` is ``--name-x``). ``steps`` etc.
    count optimiser steps of ``batch`` images."""

    # data
    data: str = option("synthfaces", "'synthfaces' (render --n images in this process) or a folder written by "
                                     "scripts/make_synthfaces.py (its train split, loaded into memory)")
    n: int = option(20000, "training images to render with --data synthfaces")
    persons: int = option(2000, "training persons with --data synthfaces")
    data_seed: int = option(0, "SynthFaces seed (identities, attributes, detail) for rendered train and test data")
    res: int = option(64, "resolution of rendered training images")
    workers: int = option(1, "processes that render images (--data synthfaces, --eval-data synthfaces)", resume=True)
    # network
    input_size: int = option(64, "DomainNet input size")
    stem_channels: int = option(16, "DomainNet stem channels")
    channels: str = option("32,64,128,256", "DomainNet stage channels, comma separated")
    blocks: str = option("1,1,1,1", "DomainNet residual blocks per stage, comma separated")
    embed_dim: int = option(128, "identity embedding size")
    dropout: float = option(0.0, "dropout before the embedding layer")
    # optimisation
    steps: int = option(1500, "optimiser steps", resume=True)
    batch: int = option(128, "images per step")
    lr: float = option(2e-3, "peak AdamW learning rate")
    weight_decay: float = option(0.05, "AdamW weight decay (conv / linear weights only)")
    warmup: float = option(0.03, "fraction of the steps with a linear learning-rate warm-up (then cosine decay to 0)")
    arc_s: float = option(32.0, "ArcFace logit scale s")
    arc_m: float = option(0.5, "ArcFace additive angular margin m (radians)")
    margin_warmup: float = option(0.2, "fraction of the steps over which the margin ramps linearly from 0 to --arc-m")
    id_weight: float = option(1.0, "weight of the identity (ArcFace cross-entropy) loss")
    attr_weight: float = option(100.0, "weight of the continuous-attribute loss (range-normalised units)")
    attr_beta: float = option(1.0, "smooth-L1 beta of the attribute loss, in range-normalised units (quadratic below "
                                   "it, linear above; >= 1 is a plain halved squared error on [0, 1] targets)")
    attr_boost: str = option("", "per-attribute multipliers of the continuous-attribute loss, e.g. "
                                 "'eyes_open=4,smile=2' (the others stay 1)")
    glasses_weight: float = option(1.0, "weight of the glasses binary cross-entropy")
    translate: int = option(0, "random translation of training images by up to N px (reflect padding; 0: off). "
                               "SynthFaces and its GAN outputs are aligned; even 2 px kept eyes_open from being "
                               "learned (see the model card)")
    seed: int = option(0, "training seed (initialisation, data order, augmentation)")
    threads: int = option(1, "torch CPU threads", resume=True)
    channels_last: bool = option(True, "channels-last memory format (faster convolutions on CPU)")
    # bookkeeping
    out: str = option("", "run directory: new or empty (with --resume: defaults to the checkpoint's run)",
                      resume=True)
    log_every: int = option(20, "log scalars every N steps", resume=True)
    checkpoint_every: int = option(100, "refresh checkpoints/latest.pt every N steps (the resume point)", resume=True)
    val_every: int = option(250, "quick verification check on --val-n test images every N steps (monitoring only: "
                                 "the final model is the last step, nothing is selected on test data; 0: off)",
                            resume=True)
    val_n: int = option(1000, "test images of the quick check", resume=True)
    # evaluation
    eval_data: str = option("synthfaces", "'synthfaces' (render the test split) or a folder with a test split "
                                          "written by scripts/make_synthfaces.py (the same images, read from disk)",
                            resume=True)
    eval_n: int = option(5000, "test images for the final evaluation", resume=True)
    eval_persons: int = option(DEFAULT_PERSONS["test"], "test persons (rendered test data)", resume=True)
    eval_pairs: int = option(6000, "verification pairs (half same person, half different)", resume=True)
    eval_seed: int = option(0, "seed of the pair sampling", resume=True)
    eval_res: int = option(0, "render the test images at this size (0: the network's input size); other sizes are "
                              "resized inside DomainNet", resume=True)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "DomainTrainOptions":
        """The options from ``{name: value}`` (the others at their defaults); :class:`ConfigError` names unknown
        names."""
        unknown = sorted(set(values) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(f"unknown options {unknown}")
        return cls(**dict(values))

    def validate(self) -> None:
        """Raise :class:`OptionError` (naming the option) for a value that cannot work. The network's options are
        checked by the trainer, which builds the network (:func:`clcae.training.domain.validate_options`)."""
        checks = [("steps", self.steps >= 1, "must be >= 1"), ("batch", self.batch >= 2, "must be >= 2"),
                  ("lr", self.lr > 0, "must be > 0"), ("warmup", 0 <= self.warmup < 1, "must be in [0, 1)"),
                  ("margin_warmup", 0 <= self.margin_warmup <= 1, "must be in [0, 1]"),
                  ("n", self.n >= 2, "must be >= 2"), ("persons", self.persons >= 2, "must be >= 2"),
                  ("translate", self.translate >= 0, "must be >= 0"), ("threads", self.threads >= 1, "must be >= 1"),
                  ("eval_n", self.eval_n >= 4, "must be >= 4"), ("eval_pairs", self.eval_pairs >= 8, "must be >= 8"),
                  ("log_every", self.log_every >= 1, "must be >= 1"),
                  ("checkpoint_every", self.checkpoint_every >= 1, "must be >= 1")]
        for name, ok, problem in checks:
            if not ok:
                raise OptionError(name, f"{problem}; got {getattr(self, name)!r}")

    @property
    def net_kwargs(self) -> dict:
        """:class:`~clcae.networks.domain.DomainNet` constructor arguments."""
        return dict(input_size=int(self.input_size), stem_channels=int(self.stem_channels),
                    channels=parse_int_list(self.channels, "channels"), blocks=parse_int_list(self.blocks, "blocks"),
                    embed_dim=int(self.embed_dim), dropout=float(self.dropout))


def parse_int_list(text: str | list | tuple, name: str) -> list[int]:
    """``'32,64,128'`` (or a list) -> ``[32, 64, 128]``; :class:`OptionError` naming option ``name`` otherwise."""
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise OptionError(name, f"must be comma-separated integers; got {text!r}") from None


#: Every option name, in declaration order.
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(DomainTrainOptions))
#: Options a resumed run may change; the others define the model, the data or the optimisation.
RESUME_MAY_CHANGE = resume_may_change(DomainTrainOptions)
#: The options by topic (the order of ``--help``).
OPTION_GROUPS = {
    "data": ("data", "n", "persons", "data_seed", "res", "workers"),
    "network": ("input_size", "stem_channels", "channels", "blocks", "embed_dim", "dropout"),
    "optimisation": ("steps", "batch", "lr", "weight_decay", "warmup", "arc_s", "arc_m", "margin_warmup",
                     "id_weight", "attr_weight", "attr_beta", "attr_boost", "glasses_weight", "translate", "seed",
                     "threads", "channels_last"),
    "bookkeeping": ("out", "log_every", "checkpoint_every", "val_every", "val_n"),
    "evaluation": ("eval_data", "eval_n", "eval_persons", "eval_pairs", "eval_seed", "eval_res"),
}
