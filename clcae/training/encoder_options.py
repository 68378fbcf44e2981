"""Every option of encoder training (``scripts/train.py``): CLCAE stage 1 (``--stage align``), CLCAE stage 2 and
the pSp / e4e baselines (``--stage invert``).

Defaults follow the official code (spec §5) where it is explicit; the open points of the method are options whose
defaults are the choices documented in ``docs/TRAINING.md`` (the decisions, with the reason for each).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..jobs import parse_size as _parse_size
from ..networks.layers import IMPLS
from .errors import OptionError
from .options import option, resume_may_change

__all__ = ["EncoderTrainOptions", "OPTION_GROUPS", "OPTION_CHOICES", "RESUME_MAY_CHANGE", "PATH_OPTIONS",
           "parse_size", "parse_widths", "METHODS", "STAGES"]

METHODS = ("clcae", "psp", "e4e")
STAGES = ("align", "invert")
#: The options that name files or folders, each with the words it takes that are not paths: in a config file they
#: are resolved against the shipped models' folder or the config's own folder (:func:`.options.load_config`).
PATH_OPTIONS = {"generator": (), "data": ("synthfaces", "generate"), "val_data": (), "contrastive_image": (),
                "contrastive_latent": (), "lpips_weights": (), "arcface_weights": (), "domain_net": (),
                "adv_d": ()}


@dataclass
class EncoderTrainOptions:
    """Options of one encoder training run (the CLI flag of ``name_x`` is ``--name-x``)."""

    # what
    method: str = option("clcae", "clcae | psp | e4e")
    stage: str = option("invert", "align (CLCAE stage 1: contrastive W-image alignment) | invert (stage 2, pSp, e4e)")
    generator: str = option("", "the pretrained StyleGAN2 (any format clcae.load_generator reads); frozen", resume=True)
    # data
    data: str = option("", "invert: 'synthfaces' (rendered on the fly) or a folder of images (recursive). align: a "
                           "pairs folder written by scripts/generate_pairs.py (with train/ and test/), or 'generate' "
                           "(pairs rendered on the fly from --generator)", resume=True)
    val_data: str = option("", "invert: validation images (a folder); empty: SynthFaces' test split (held-out persons) "
                               "with --data synthfaces, else the last --val-n images of --data are held out",
                               resume=True)
    val_n: int = option(256, "validation images / pairs")
    synth_n: int = option(70000, "SynthFaces training images (--data synthfaces)")
    data_seed: int = option(0, "SynthFaces seed (identities, attributes)")
    policy: str = option("resize", "how folder images reach the input size: resize | center_crop | pad")
    flip: bool = option(True, "random horizontal flip of training images (the official stage 2 does; stage 1 not)")
    pairs_n: int = option(50000, "align with --data generate: training pairs")
    psi: float = option(1.0, "align with --data generate: truncation of the rendered pairs (1: none)")
    pair_noise: str = option("const", "align with --data generate: noise of the renders: const | random | none")
    workers: int = option(0, "DataLoader worker processes per rank", resume=True)
    # model
    input_size: str = option("256", "encoder input H or HxW (256 for faces, 192x256 for cars, 64 for SynthFaces 64)")
    num_layers: int = option(50, "IR-SE trunk depth: 18 | 34 | 50 | 100 | 152")
    widths: str = option("64,128,256,512", "IR-SE stage widths (the c3 width is the FPN width)")
    use_se: bool = option(True, "squeeze-excitation in the trunk units")
    nhead: int = option(4, "CLCAE: attention heads of the cross-attention / latent-encoder layers")
    dim_feedforward: int = option(1024, "CLCAE: FFN width of the cross-attention / latent-encoder layers")
    dropout: float = option(0.1, "CLCAE: dropout of the cross-attention / latent-encoder layers")
    projection_dim: int = option(512, "align: embedding dimension")
    w_attention: bool = option(True, "CLCAE: W+ from cross-attention (off: the --no_w_attention ablation)")
    feature_branch: bool = option(True, "CLCAE: predict the F-space feature f (off: the --not_for_feature ablation)")
    idx_k: int = option(5, "CLCAE: generator activation index that f replaces (5: 16x16 at every resolution)")
    feature_mode: str = option("replace", "CLCAE: replace (f replaces G's activation at --idx-k, the official code) | "
                                          "residual (ours: the F branch predicts a correction added to G's own "
                                          "activation, zero at the start; docs/RESULTS.md)")
    wplus_offset_gain: float = option(-1.0, "CLCAE: initial gain of each W+ cross-attention layer's last LayerNorm "
                                            "(bias 0), which sets the size of the W+ offsets: -1 keeps the official "
                                            "initialisation (gain about 1: offsets of norm about sqrt(style_dim), "
                                            "FFHQ's W scale); e.g. 0.25 for a generator whose W is narrower "
                                            "(docs/RESULTS.md)")
    coarse_ind: int = option(-1, "W+ layers below this read c3 (-1: 3 for pSp/e4e, 2 for CLCAE, as released)")
    middle_ind: int = option(-1, "W+ layers below this read p2, the rest p1 (-1: 7 for pSp/e4e, 6 for CLCAE)")
    init: str = option("official", "encoder initialisation: official (normal 0.02 as the official BaseNetwork) | "
                                   "torch (PyTorch defaults)")
    stage2_init: str = option("contrastive", "CLCAE stage 2 trunk init: contrastive (the stage-1 image encoder's "
                                             "trunk, the intent of the official code) | none (what the official code "
                                             "actually does) | arcface (IR-SE50 ArcFace weights, --arcface-weights)")
    init_weights: str = option("", "fine-tuning: start the encoder from the weights of an inverter checkpoint of "
                                   "the same method and architecture (a best_model.pt or a shipped model, e.g. "
                                   "pretrained/synthfaces64_clcae.pt; pSp's --checkpoint_path), loaded strictly "
                                   "after every other initialisation; the optimiser starts afresh; empty: off")
    contrastive_image: str = option("", "CLCAE stage 2: the stage-1 image encoder (best_model_image.pt), or a stage-1 "
                                        "run directory (its checkpoints/best_model_image.pt and _latent.pt)",
                                        resume=True)
    contrastive_latent: str = option("", "CLCAE stage 2: the stage-1 latent encoder (default: next to the image one)",
                                         resume=True)
    # losses
    l2_lambda: float = option(1.0, "L2 weight (on every output image)")
    perceptual: str = option("lpips", "perceptual loss: lpips (AlexNet backbone weights from the torch hub cache "
                                      "or --lpips-weights) | domain (SynthFaces domain-network features) | none")
    lpips_lambda: float = option(0.8, "perceptual weight (the official README uses 0.2 for CLCAE FFHQ)")
    lpips_scales: int = option(1, "LPIPS scales: 1 (what the official code computes) | 3 (256+128+64, its intent)")
    lpips_weights: str = option("", "torchvision AlexNet weights file for LPIPS (default: the torch hub cache)",
                                    resume=True)
    identity: str = option("none", "identity loss network: arcface (IR-SE50, --arcface-weights) | domain (SynthFaces "
                                   "domain network) | none")
    id_lambda: float = option(0.0, "identity loss weight (0.1 in the official FFHQ runs)")
    arcface_weights: str = option("", "ArcFace IR-SE50 weights (TreB1eN model_ir_se50.pth)", resume=True)
    domain_net: str = option("", "SynthFaces domain network (perceptual=domain / identity=domain)", resume=True)
    feature_matching_lambda: float = option(0.01, "CLCAE: ||f - G_k(W+)||^2 weight")
    contrastive_lambda: float = option(0.1, "CLCAE: alignment term through the frozen stage-1 encoders")
    align_image: str = option("gen_w", "CLCAE: image of the alignment term: gen_w (G(w), the official code) | input "
                                       "(the input image, the paper's figure)")
    query_grad: str = option("full", "CLCAE: gradient of the W+ and F losses into the w head through the "
                                     "cross-attention query dw: full (the official code) | detach (dw enters the "
                                     "cross-attention as a constant; the w head learns from G(w)'s losses, the "
                                     "alignment term and W+'s direct + w residual; docs/RESULTS.md)")
    feature_ramp: str = option("per_epoch", "CLCAE: f blend scale during training: per_epoch (0 -> 1 over every "
                                            "epoch, the official code) | once (0 -> 1 over the first epoch, then 1) | "
                                            "none (always 1)")
    ramp_steps: int = option(0, "CLCAE: steps of one ramp (0: one epoch = ceil(training images / batch))")
    w_norm_lambda: float = option(0.0, "W-norm weight (pSp; off by default)")
    delta_lambda: float = option(2e-4, "e4e: delta regularisation weight")
    progressive_start: int = option(20000, "e4e: step at which the progressive deltas start")
    progressive_every: int = option(2000, "e4e: steps per progressive stage")
    w_discriminator_lambda: float = option(0.1, "e4e: latent-discriminator adversarial weight (0: off)")
    w_discriminator_lr: float = option(2e-5, "e4e: latent-discriminator learning rate")
    r1: float = option(10.0, "e4e: R1 weight on real w codes")
    d_reg_every: int = option(16, "R1 every N discriminator steps (e4e's latent discriminator and the image "
                                  "discriminator of --adv-lambda)")
    adv_lambda: float = option(0.0, "image adversarial weight: the non-saturating loss of an image discriminator, "
                                    "trained along with the encoder (as HFGI), on the method's result (W+F for "
                                    "CLCAE, W+ for pSp and e4e); 0: off")
    adv_d: str = option("", "image discriminator start: a train_generator.py training state whose discriminator "
                            "is loaded (e.g. pretrained/training/synthfaces64_generator_latest.pt, the one the "
                            "shipped generator was trained against); empty: a new StyleGAN2 discriminator of the "
                            "generator's size and widths", resume=True)
    adv_d_lr: float = option(0.002, "image discriminator learning rate (Adam, betas 0 and 0.99)")
    adv_r1: float = option(0.1, "image discriminator R1 weight gamma on the input images (lazy, every "
                                "--d-reg-every discriminator steps)")
    attr_lambda: float = option(0.0, "attribute consistency weight: L1 between the domain network's (domain_net) "
                                     "attribute predictions on the method's result and on the input, each attribute "
                                     "scaled to 0..1 (not in the official code; counters the adversarial term's pull "
                                     "towards typical attributes); 0: off")
    train_noise: str = option("random", "generator noise in training: random (the official code) | const")
    # optimisation
    optimizer: str = option("ranger", "ranger (the official code) | adam | adamw")
    lr: float = option(1e-4, "learning rate")
    batch: int = option(8, "global batch (split over processes)")
    steps: int = option(500000, "training steps", resume=True)
    lr_plateau: int = option(0, "ReduceLROnPlateau on the validation loss with this patience in validations (0: off; "
                                "the official code uses 10 epochs)")
    grad_clip: float = option(0.0, "clip the encoder's gradient norm (0: off)")
    # run
    out: str = option("", "run directory (new or empty; with --resume defaults to the checkpoint's run)", resume=True)
    seed: int = option(0, "seed (initialisation, data order, noise, dropout)")
    val_interval: int = option(1000, "validate (and keep the best checkpoint) every N steps", resume=True)
    save_interval: int = option(1000, "refresh checkpoints/latest.pt every N steps", resume=True)
    snapshot_interval: int = option(0, "keep a snapshot every N steps (0: none)", resume=True)
    log_interval: int = option(50, "log scalars every N steps", resume=True)
    image_interval: int = option(500, "write an image grid every N steps", resume=True)
    sample_n: int = option(8, "rows of each image grid", resume=True)
    keep_snapshots: int = option(0, "keep only the newest N snapshots (0: all)", resume=True)
    on_nan: str = option("stop", "on a NaN/Inf loss: stop | rollback (reload latest.pt and continue)", resume=True)
    max_rollbacks: int = option(3, "with --on-nan rollback: give up after N", resume=True)
    dry_run: bool = option(False, "build everything, run one training step and one validation batch, write nothing",
                                  resume=True)
    # performance
    device: str = option("auto", "auto | cpu | cuda", resume=True)
    impl: str = option("auto", "generator op implementation: auto | fast | ref | cuda", resume=True)
    bf16: bool = option(False, "bfloat16 autocast for the encoder and generator passes", resume=True)
    threads: int = option(0, "torch CPU threads (0: default)", resume=True)
    dist_timeout: float = option(600.0, "seconds a collective may wait before the job fails", resume=True)

    # ---------------------------------------------------------------------------------------------------------
    def resolved_coarse_middle(self) -> tuple[int, int]:
        """``(coarse_ind, middle_ind)`` with the released defaults filled in."""
        default = (2, 6) if self.method == "clcae" else (3, 7)
        return (default[0] if self.coarse_ind < 0 else self.coarse_ind,
                default[1] if self.middle_ind < 0 else self.middle_ind)

    def validate(self, world_size: int = 1) -> None:
        """Raise :class:`OptionError` for a bad value or combination (the message names the option and a fix; a
        command line names the flags)."""
        def need(ok: bool, name: str, problem: str, mentions: tuple[str, ...] = ()) -> None:
            if not ok:
                raise OptionError(name, problem, mentions)

        need(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}; got {self.method!r}")
        need(self.stage in STAGES, "stage", f"must be align or invert; got {self.stage!r}")
        need(not (self.stage == "align" and self.method != "clcae"), "stage",
             f"align is CLCAE's stage 1; method {self.method} has only the invert stage", ("method",))
        need(bool(self.generator), "generator", "is required: the pretrained StyleGAN2 the encoder inverts into")
        need(bool(self.data), "data", "is required: 'synthfaces' or a folder of images")
        h, w = parse_size(self.input_size)
        need(h % 16 == 0 and w % 16 == 0 and h >= 32 and w >= 32, "input_size",
             f"must be multiples of 16, at least 32 (e.g. 256, 192x256, 64); got {self.input_size!r}")
        parse_widths(self.widths)
        need(self.num_layers in (18, 34, 50, 100, 152), "num_layers",
             f"must be 18, 34, 50, 100 or 152; got {self.num_layers}")
        need(self.batch >= 1 and self.batch % world_size == 0, "batch",
             f"{self.batch} is the global batch and must be a positive multiple of the number of processes "
             f"({world_size})")
        need(self.stage != "align" or self.batch >= 2, "batch",
             f"must be >= 2 with stage align (in-batch negatives); got {self.batch}", ("stage",))
        need(self.steps >= 1, "steps", f"must be >= 1; got {self.steps}")
        need(self.lr > 0, "lr", f"must be > 0; got {self.lr}")
        for name in ("val_interval", "save_interval", "log_interval", "image_interval", "val_n", "pairs_n",
                     "synth_n", "progressive_every", "d_reg_every", "idx_k"):
            need(getattr(self, name) >= 1, name, f"must be >= 1; got {getattr(self, name)}")
        for name in ("snapshot_interval", "keep_snapshots", "sample_n", "progressive_start", "ramp_steps",
                     "lr_plateau", "max_rollbacks", "workers", "threads"):
            need(getattr(self, name) >= 0, name, f"must be >= 0; got {getattr(self, name)}")
        for name, allowed in OPTION_CHOICES.items():
            need(getattr(self, name) in allowed, name,
                 f"must be one of {', '.join(map(str, allowed))}; got {getattr(self, name)!r}")
        for name in ("l2_lambda", "lpips_lambda", "id_lambda", "feature_matching_lambda", "contrastive_lambda",
                     "w_norm_lambda", "delta_lambda", "w_discriminator_lambda", "r1", "grad_clip", "adv_lambda",
                     "adv_d_lr", "adv_r1"):
            need(getattr(self, name) >= 0 and math.isfinite(getattr(self, name)), name,
                 f"must be >= 0; got {getattr(self, name)}")
        need(self.lpips_scales in (1, 3), "lpips_scales", f"must be 1 or 3; got {self.lpips_scales}")
        need(self.identity != "arcface" or bool(self.arcface_weights) or self.id_lambda == 0, "arcface_weights",
             "is required with identity arcface: model_ir_se50.pth (or id_lambda 0)", ("identity", "id_lambda"))
        need(self.stage2_init != "arcface" or bool(self.arcface_weights), "arcface_weights",
             "is required with stage2_init arcface: model_ir_se50.pth", ("stage2_init",))
        need(not ("domain" in (self.perceptual, self.identity)) or bool(self.domain_net), "domain_net",
             "is required with perceptual domain or identity domain (e.g. pretrained/synthfaces64_domain_net.pt)",
             ("perceptual", "identity"))
        need(self.attr_lambda >= 0, "attr_lambda", f"must be >= 0; got {self.attr_lambda}")
        need(self.attr_lambda == 0 or bool(self.domain_net), "domain_net",
             "is required with attr_lambda > 0 (its attribute head judges the result)", ("attr_lambda",))
        if self.method == "clcae" and self.stage == "invert":
            need(self.contrastive_lambda == 0 or bool(self.contrastive_image), "contrastive_image",
                 "is required by CLCAE's inversion training when contrastive_lambda > 0: the alignment run's directory "
                 "or its best_model_image.pt (trained with stage align), or pass contrastive_lambda 0",
                 ("contrastive_lambda", "stage"))
            need(self.stage2_init != "contrastive" or bool(self.contrastive_image), "contrastive_image",
                 "is required with stage2_init contrastive (or pass stage2_init none)", ("stage2_init",))
        need(self.psi > 0, "psi", f"must be > 0; got {self.psi}")
        need(self.wplus_offset_gain == -1 or self.wplus_offset_gain >= 0, "wplus_offset_gain",
             f"must be -1 (official initialisation) or >= 0; got {self.wplus_offset_gain}")
        need(self.dist_timeout > 0, "dist_timeout", f"must be > 0 seconds; got {self.dist_timeout}")


def parse_size(text: str | int) -> tuple[int, int]:
    """``'256'`` -> (256, 256); ``'192x256'`` -> (192, 256) (H x W): :func:`clcae.jobs.parse_size`; an
    :class:`OptionError` (a ValueError) about option ``input_size`` otherwise."""
    try:
        return _parse_size(text)
    except ValueError:
        raise OptionError("input_size", f"must be N or HxW (e.g. 256, 192x256); got {text!r}") from None


def parse_widths(text: str) -> list[int]:
    """``'64,128,256,512'`` -> [64, 128, 256, 512] (four positive stage widths); an :class:`OptionError` (a
    ValueError) about option ``widths`` otherwise."""
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise OptionError("widths", f"must be 4 comma-separated integers; got {text!r}") from None
    if len(vals) != 4 or min(vals) < 1:
        raise OptionError("widths", f"must be 4 comma-separated positive integers; got {text!r}")
    return vals


OPTION_CHOICES = {
    "method": METHODS, "stage": STAGES, "policy": ("resize", "center_crop", "pad"),
    "pair_noise": ("const", "random", "none"), "init": ("official", "torch"),
    "stage2_init": ("contrastive", "none", "arcface"), "perceptual": ("lpips", "domain", "none"),
    "identity": ("arcface", "domain", "none"), "align_image": ("gen_w", "input"), "query_grad": ("full", "detach"),
    "feature_mode": ("replace", "residual"),
    "feature_ramp": ("per_epoch", "once", "none"), "train_noise": ("random", "const"),
    "optimizer": ("ranger", "adam", "adamw"), "on_nan": ("stop", "rollback"), "device": ("auto", "cpu", "cuda"),
    "impl": IMPLS,
}

OPTION_GROUPS = {
    "what": ("method", "stage", "generator"),
    "data": ("data", "val_data", "val_n", "synth_n", "data_seed", "policy", "flip", "pairs_n", "psi", "pair_noise",
             "workers"),
    "model": ("input_size", "num_layers", "widths", "use_se", "nhead", "dim_feedforward", "dropout",
              "projection_dim", "w_attention", "feature_branch", "idx_k", "feature_mode", "wplus_offset_gain", "coarse_ind", "middle_ind", "init",
              "stage2_init", "init_weights", "contrastive_image", "contrastive_latent"),
    "losses": ("l2_lambda", "perceptual", "lpips_lambda", "lpips_scales", "lpips_weights", "identity", "id_lambda",
               "arcface_weights", "domain_net", "feature_matching_lambda", "contrastive_lambda", "align_image",
               "query_grad", "feature_ramp", "ramp_steps", "w_norm_lambda", "delta_lambda", "progressive_start",
               "progressive_every", "w_discriminator_lambda", "w_discriminator_lr", "r1", "d_reg_every",
               "adv_lambda", "adv_d", "adv_d_lr", "adv_r1", "attr_lambda",
               "train_noise"),
    "optimisation": ("optimizer", "lr", "batch", "steps", "lr_plateau", "grad_clip"),
    "run": ("out", "seed", "val_interval", "save_interval", "snapshot_interval", "log_interval", "image_interval",
            "sample_n", "keep_snapshots", "on_nan", "max_rollbacks", "dry_run"),
    "performance": ("device", "impl", "bf16", "threads", "dist_timeout"),
}

#: Options a resumed run may change; the others define the model, data or objective and must match.
RESUME_MAY_CHANGE = resume_may_change(EncoderTrainOptions)
