"""Stage-2 training of an encoder into a frozen StyleGAN2: CLCAE (w, W+ and F), pSp and e4e.

:class:`InversionTask` holds what the three methods share; :class:`CLCAETask`, :class:`PSPTask` and
:class:`E4ETask` (:data:`TASKS`, by ``opts.method``) what each does differently; the loop is
:func:`clcae.training.encoder_loop.run_encoder_training`.

CLCAE step (spec §4.7, §4.9): the encoder sees ``x - avg_image`` and predicts ``dw``, the W+ offsets and ``f``;
``w = dw + latent_avg``, ``W+ = offsets + w``. Three generator passes (each with its own random noise in
training, as the official code): ``x_rec = G(W+, f at idx_k blended with scale s)`` (also giving the target
``G_k(W+)``), ``x_ww = G(W+)`` and ``x_w = G(w)``. Each image is pooled to the input geometry (the official
256-px pooling; cars also cropped to 192x256) and the loss is::

    sum over o in {x_rec, x_ww, x_w}: l2 * MSE(o, x) + lpips * P(o, x) + id * (1 - cos(ID(o), ID(x)))
    + feature_matching * MSE(f, G_k(W+).detach())
    + contrastive * InfoNCE(E_I(image - avg_I), E_w(w - latent_avg))   (frozen stage-1 encoders, local batch)
    + w_norm * W-norm(W+)

pSp: ``W+ = encoder(x) + latent_avg`` and one pass; e4e adds the progressive deltas (stage 0 until
``--progressive-start``, then one more delta every ``--progressive-every`` steps), the delta regulariser and a
latent discriminator (D step on the layer-0 code against mapped z, lazy R1; the encoder's adversarial term averages
D over the active codes), as e4e's training code. Only the encoder is optimised; the generator and every loss network are
frozen (``requires_grad=False``, eval mode).

The decisions on the method's open points (spec §11-12) are options; see ``docs/TRAINING.md``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as du
from ..checkpoints import CheckpointError, load_contrastive_encoder, load_generator, save_inverter
from ..networks.encoders import CLCAEEncoder, Encoder4Editing, GradualStyleEncoder
from ..networks.init import official_init
from ..networks.inverters import CLCAEInverter, E4EInverter, PSPInverter, render_average_image
from ..networks.memory_format import to_channels_last
from .encoder_options import EncoderTrainOptions, parse_size, parse_widths
from .encoder_task import EncoderTask, to_input_geometry
from .options import ConfigError

__all__ = ["InversionTask", "CLCAETask", "PSPTask", "E4ETask", "TASKS", "build_image_datasets", "feature_ramp_scale",
           "to_input_geometry", "resolve_contrastive_paths", "load_stage1_trunk"]


# ---------------------------------------------------------------------------------------------------- helpers
def feature_ramp_scale(mode: str, step: int, ramp_steps: int) -> float:
    """The F blend scale ``s`` at training ``step`` (spec §4.7 and §11.5).

    ``per_epoch``: ``(step mod R) / (R - 1)``, restarting every ``R = ramp_steps`` steps (the official code's
    ``batch_idx / (len(loader) - 1)``); ``once``: ``min(1, step / (R - 1))``; ``none``: 1.
    """
    if mode == "none" or ramp_steps <= 1:
        return 1.0
    if mode == "per_epoch":
        return (step % ramp_steps) / (ramp_steps - 1)
    if mode == "once":
        return min(1.0, step / (ramp_steps - 1))
    raise ValueError(f"unknown feature ramp {mode!r}")


class _ImagesOnly(torch.utils.data.Dataset):
    """Item ``i`` of a dataset of ``(image, ...)`` tuples (or images) as the image alone."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        return item[0] if isinstance(item, (tuple, list)) else item


def build_image_datasets(opts: EncoderTrainOptions, input_size: tuple[int, int]):
    """``(train, val, description)``: Datasets of images [3, H, W] in [-1, 1] at the encoder input size.

    ``--data synthfaces``: SynthFaces train split rendered on the fly; validation = its test split (persons never
    seen in training) unless ``--val-data``. A folder: :class:`~clcae.data.images.ImageFolderDataset` (recursive,
    unreadable files reported and skipped); validation = ``--val-data`` or the last ``--val-n`` images held out.
    """
    from ..data.images import ImageFolderDataset
    from .datasets import verify_image_folder

    h, w = input_size

    def folder(root: str, option: str):
        p = Path(root)
        if not p.is_dir():
            raise ConfigError.about(option, f"{root}: no such folder (pass a folder of images or 'synthfaces')")
        try:
            ds = ImageFolderDataset(p, size=(h, w), policy=opts.policy)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError.about(option, f"{root}: {e}") from e
        # up front, so the held-out validation images are readable ones (not substitutes from the training part)
        verify_image_folder(ds, option, root)
        return ds

    if opts.data == "synthfaces":
        from ..data.synthfaces import SynthFaces

        if h != w:
            raise ConfigError.about("input_size", f"{opts.input_size} is not square, and data synthfaces renders "
                                                  "square images", ("data",))
        train = _ImagesOnly(SynthFaces(opts.synth_n, res=h, split="train", seed=opts.data_seed))
        desc = f"SynthFaces train split ({opts.synth_n} images at {h} px, on the fly)"
        if opts.val_data:
            val = _ImagesOnly(folder(opts.val_data, "val_data"))
            desc += f"; validation {opts.val_data} ({len(val)} images)"
        else:
            val = _ImagesOnly(SynthFaces(opts.val_n, res=h, split="test", seed=opts.data_seed))
            desc += f"; validation SynthFaces test split ({opts.val_n} images, unseen persons)"
        return train, val, desc
    ds = _ImagesOnly(folder(opts.data, "data"))
    if opts.val_data:
        val = _ImagesOnly(folder(opts.val_data, "val_data"))
        val = torch.utils.data.Subset(val, range(min(opts.val_n, len(val))))
        return ds, val, f"{opts.data} ({len(ds)} images); validation {opts.val_data} ({len(val)} images)"
    if len(ds) <= opts.val_n:
        raise ConfigError.about("data", f"{opts.data} has {len(ds)} images, not more than val_n {opts.val_n}; pass "
                                        "val_data or a smaller val_n", ("val_n", "val_data"))
    n = len(ds)
    train = torch.utils.data.Subset(ds, range(n - opts.val_n))
    val = torch.utils.data.Subset(ds, range(n - opts.val_n, n))
    return train, val, f"{opts.data} ({len(train)} training images, the last {opts.val_n} held out for validation)"


def resolve_contrastive_paths(image: str, latent: str = "") -> tuple[Path, Path]:
    """Stage-1 checkpoint files from ``--contrastive-image`` (a file, or a stage-1 run directory) and
    ``--contrastive-latent`` (default: ``best_model_latent.pt`` next to the image one)."""
    p = Path(image)
    if p.is_dir():
        for cand in (p / "checkpoints" / "best_model_image.pt", p / "best_model_image.pt"):
            if cand.is_file():
                p = cand
                break
        else:
            raise ConfigError.about("contrastive_image", f"{image}: the directory has no checkpoints/"
                                    "best_model_image.pt (train CLCAE's alignment first, with stage align)",
                                    ("stage",))
    if not p.is_file():
        raise ConfigError.about("contrastive_image", f"{image}: no such file")
    q = Path(latent) if latent else p.with_name(p.name.replace("image", "latent"))
    if not q.is_file():
        raise ConfigError.about("contrastive_latent", f"{q}: no such file (the stage-1 latent encoder; by default "
                                "the file beside contrastive_image)", ("contrastive_image",))
    return p, q


_TRUNK_PREFIXES = ("input_layer.", "body.", "styles.0.", "latlayer1.", "latlayer2.")


def load_stage1_trunk(encoder: nn.Module, image_encoder: nn.Module, source: str) -> list[str]:
    """Copy the stage-1 image encoder's trunk, ``styles.0`` head and FPN laterals into a stage-2 encoder (the
    intent of the official ``load_weights``, spec §4.11), strictly: every key under those prefixes must exist in
    both with the same shape. Returns the keys copied."""
    src = {k[len("encoder."):]: v for k, v in image_encoder.state_dict().items() if k.startswith("encoder.")}
    dst = encoder.state_dict()
    want = [k for k in dst if k.startswith(_TRUNK_PREFIXES)]
    missing = [k for k in want if k not in src]
    shape = [k for k in want if k in src and src[k].shape != dst[k].shape]
    if missing or shape:
        raise CheckpointError(f"{source}: the stage-1 image encoder does not match the stage-2 trunk (missing: "
                              f"{missing[:5]}, shape mismatch: {[(k, tuple(src[k].shape), tuple(dst[k].shape)) for k in shape[:5]]}); "
                              "train stage 1 with the same --num-layers/--widths/--input-size, or --stage2-init none")
    with torch.no_grad():
        for k in want:
            dst[k].copy_(src[k])
    return want


# ---------------------------------------------------------------------------------------------------- task
class InversionTask(EncoderTask):
    """CLCAE stage 2, pSp or e4e training (see the module docstring)."""

    #: The ``image_*`` render that is the method's result (what ``--adv-lambda`` judges).
    result_image = "image_wplus"

    #: The step's faster arithmetic (docs/PERFORMANCE.md, "Training speed"): every loss network runs once on the
    #: renders stacked along the batch, the target's features are computed once without gradients, the domain
    #: network's trunk pass is shared by the perceptual and the identity loss, and on a CPU the generator passes, the
    #: encoder and the stage-1 image encoder run in channels-last. False: the step as first written (one loss call
    #: per render, contiguous activations); the same losses and gradients up to float rounding. Kept as the
    #: reference that tests/test_training_speed.py and benchmarks/bench_training.py compare with. Read when the
    #: task is built.
    fast_step: bool = True

    def __init__(self, opts: EncoderTrainOptions, device: torch.device, rank: int, world_size: int, log):
        super().__init__(opts, device, rank, world_size, log)
        self.fast_step = type(self).fast_step  # fixed at construction: the networks' memory format follows it
        self.input_size = parse_size(opts.input_size)
        G = load_generator(opts.generator, device=device, impl=opts.impl)
        self.G = G
        self.train_dataset, self.val_dataset, self.data_desc = build_image_datasets(opts, self.input_size)
        self.ramp_steps = opts.ramp_steps or math.ceil(len(self.train_dataset) / opts.batch)
        self.inverter = self._build_inverter(G).to(device)
        enc = self.inverter.encoder
        if opts.init == "official":
            official_init(enc)
            self._after_official_init(enc)
        self._init_trunk(enc)
        self._after_init(enc)
        if opts.init_weights:
            self._load_init_weights(enc, G)
        enc = self.inverter.encoder = self.distributed_batchnorm(enc)
        if self._channels_last():
            to_channels_last(enc)  # before the optimiser: its state follows the parameters' format
        self.trainable = {"encoder": enc}
        from .optim import build_optimizer

        self.optimizers = {"encoder": build_optimizer(opts.optimizer, enc.parameters(), lr=opts.lr)}
        if opts.lr_plateau > 0:
            self.schedulers["encoder"] = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizers["encoder"], mode="min", patience=opts.lr_plateau, factor=0.1)
        self._build_losses()
        self._build_method_parts()
        self._build_image_discriminator()
        self.noise_mode = opts.train_noise

    def _load_init_weights(self, enc: nn.Module, G) -> None:
        """``init_weights``: copy a saved inverter's encoder into ``enc`` (strict: every key and shape must match),
        refusing a checkpoint of another method or one made for a generator with another average latent."""
        from ..checkpoints import load_inverter

        path = self.opts.init_weights
        try:
            src = load_inverter(path, device="cpu")
        except (CheckpointError, OSError) as e:
            raise ConfigError.about("init_weights", f"cannot read {path}: {e}") from e
        arch = getattr(src, "config", {}).get("arch")
        mine = self.inverter.config.get("arch")
        if arch != mine:
            raise ConfigError.about("init_weights", f"{path} holds a {arch} inverter; this run trains {mine}",
                                    ("method",))
        own_avg = self.inverter.latent_avg.detach().cpu().reshape(-1, G.style_dim)[0]
        src_avg = src.latent_avg.detach().cpu().reshape(-1, G.style_dim)[0]
        if not torch.allclose(own_avg, src_avg, rtol=1e-4, atol=1e-4):
            raise ConfigError.about("init_weights", f"{path} was trained for another generator (its average latent "
                                    f"differs from {self.opts.generator}'s by "
                                    f"{(own_avg - src_avg).abs().max().item():.3g})", ("generator",))
        from ..formats.files import load_state_dict_strict

        have = src.encoder.state_dict()
        try:
            load_state_dict_strict(enc, have, str(path), "encoder")
        except CheckpointError as e:
            raise ConfigError.about("init_weights", f"{e}; use the options it was trained with") from e
        self.log(f"encoder initialised from {path} ({len(have)} tensors)")

    # --- what the methods differ in (CLCAETask, PSPTask, E4ETask override these)
    def _build_inverter(self, G) -> nn.Module:
        """The method's inverter around ``G``, its encoder freshly built."""
        raise NotImplementedError

    def _after_official_init(self, enc: nn.Module) -> None:
        """Adjust the encoder after the official initialisation."""

    def _init_contrastive(self, enc: nn.Module) -> None:
        """Load the frozen stage-1 encoders (CLCAE) into ``E_I`` / ``E_w``."""

    def _after_init(self, enc: nn.Module) -> None:
        """Adjust the encoder after every other initialisation (CLCAE: ``--wplus-offset-gain``)."""

    def _build_method_parts(self) -> None:
        """Networks and schedules of the method beyond the encoder (e4e: progressive schedule, latent D)."""

    def _describe_losses(self) -> list[str]:
        """The method's own loss weights for :meth:`describe`."""
        return []

    def _codes_and_images(self, x: torch.Tensor, step: int, noise_mode: str, out: dict[str, torch.Tensor]) -> None:
        """Fill ``out`` with the codes and the renders (``image_*``, at the generator's resolution) of ``x``."""
        inv, G = self.inverter, self.G
        wplus = inv.codes(x)
        out["wplus"] = wplus
        out["image_wplus"] = G.synthesis(wplus, noise_mode=noise_mode)

    def _objective_terms(self, x: torch.Tensor, out: Mapping[str, torch.Tensor], terms: dict[str, torch.Tensor],
                         total: torch.Tensor) -> torch.Tensor:
        """Add the method's own objectives (CLCAE: feature matching, alignment) to ``terms``; returns the total."""
        return total

    def _w_norm_centre(self) -> torch.Tensor:
        """The code the W-norm regulariser measures from (``latent_avg``, one row of it for W+ averages)."""
        return self.inverter.latent_avg[0]

    def _regulariser_terms(self, out: Mapping[str, torch.Tensor], step: int, terms: dict[str, torch.Tensor],
                           total: torch.Tensor) -> torch.Tensor:
        """Add the method's code regularisers (e4e: deltas, latent adversarial) to ``terms``; returns the total."""
        return total

    def _before_encoder_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Work before the encoder's step (e4e: the latent discriminator's step); returns logs."""
        return {}

    def _prepare_export(self, step: int) -> None:
        """Put the inverter in the state it is exported in (e4e: the progressive stage reached)."""

    # --- the image discriminator (--adv-lambda), shared by every method
    def _build_image_discriminator(self) -> None:
        opts = self.opts
        self.image_d_steps = 0
        if opts.adv_lambda <= 0:
            return
        from ..networks.stylegan2 import Discriminator
        from .gan import load_training_discriminator

        size = self.G.size
        if opts.adv_d:
            try:
                D = load_training_discriminator(opts.adv_d, self.device)
            except CheckpointError as e:
                raise ConfigError.about("adv_d", str(e)) from e
            if D.size != size:
                raise ConfigError.about("adv_d", f"{opts.adv_d}: its discriminator judges {D.size} px images, the "
                                                 f"generator renders {size} px")
            self.log(f"image discriminator loaded from {opts.adv_d}")
        else:
            cfg = self.G.config
            D = Discriminator(size, channel_base=cfg.get("channel_base"), channel_max=cfg.get("channel_max", 512),
                              blur_kernel=cfg.get("blur_kernel", (1, 3, 3, 1))).to(self.device)
        self.trainable["image_discriminator"] = D
        self.optimizers["image_discriminator"] = torch.optim.Adam(D.parameters(), lr=opts.adv_d_lr, betas=(0.0, 0.99))

    def _d_view(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the image discriminator sees them: at the generator's resolution."""
        size = self.G.size
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return images

    def _adversarial_term(self, out: Mapping[str, torch.Tensor], terms: dict[str, torch.Tensor],
                          total: torch.Tensor) -> torch.Tensor:
        D = self.trainable.get("image_discriminator")
        if D is None or not self.inverter.encoder.training:
            # validation (encoder in eval mode) leaves the term out: the discriminator changes as it trains, and
            # the validation loss picks the best checkpoint
            return total
        from ..losses.gan import g_nonsaturating_loss

        D.requires_grad_(False)
        try:
            adv = g_nonsaturating_loss(D(self._d_view(out[self.result_image].float())))
        finally:
            D.requires_grad_(True)
        terms["adv"] = adv
        return total + self.opts.adv_lambda * adv

    def _attribute_term(self, x: torch.Tensor, out: Mapping[str, torch.Tensor], terms: dict[str, torch.Tensor],
                        total: torch.Tensor) -> torch.Tensor:
        """``attr_lambda``: L1 between the domain network's attribute predictions on the method's result and on the
        input, each attribute scaled to 0..1 by its label range (glasses: the probability). It keeps what the
        attributes of the input are (an eye stays closed) where the adversarial term pulls towards what the
        generator's images usually show. Left out of the validation loss, as the adversarial term."""
        net = self.attr_net
        if net is None or not self.inverter.encoder.training:
            return total
        with torch.no_grad():
            target = net.normalise_attributes(net.attributes(x.float()))
        pred = net.normalise_attributes(net.attributes(out[self.result_image].float()))
        attr = (pred - target).abs().mean()
        terms["attr"] = attr
        return total + self.opts.attr_lambda * attr

    def _image_d_step(self, x: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of the image discriminator: the inputs are real, the method's (detached) results fake; lazy R1
        on the inputs every ``--d-reg-every`` steps."""
        from ..losses.gan import d_logistic_loss, r1_penalty

        opts = self.opts
        D = self.trainable["image_discriminator"]
        real = self._d_view(x.detach().float())
        loss = d_logistic_loss(D(real), D(self._d_view(fake.detach().float())))
        logs = {"adv_d": loss.detach()}
        if opts.adv_r1 > 0 and self.image_d_steps % opts.d_reg_every == 0:
            real_r = real.detach().requires_grad_(True)
            r1 = r1_penalty(D(real_r), real_r)
            loss = loss + r1 * (opts.adv_r1 / 2 * opts.d_reg_every)
            logs["adv_r1"] = r1.detach()
        self._step_module("image_discriminator", loss)
        self.image_d_steps += 1
        return logs

    def _step_module(self, name: str, loss: torch.Tensor) -> None:
        """One optimiser step of ``self.trainable[name]`` on ``loss`` (gradients averaged over processes): the
        discriminators' update (the image D of ``adv_lambda``, e4e's latent D)."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        du.all_reduce_grads(list(self.trainable[name].parameters()))
        opt.step()

    # --- construction
    def _trunk_kwargs(self, G) -> dict:
        """The IR-SE trunk and head arguments every method's encoder shares."""
        opts = self.opts
        coarse, middle = opts.resolved_coarse_middle()
        return dict(n_styles=G.n_latent, coarse_ind=coarse, middle_ind=middle, input_size=list(self.input_size),
                    style_dim=G.style_dim, num_layers=opts.num_layers, widths=parse_widths(opts.widths),
                    use_se=opts.use_se)

    def _init_trunk(self, enc: nn.Module) -> None:
        opts = self.opts
        self.E_I = self.E_w = None
        self._init_contrastive(enc)
        if opts.stage2_init == "arcface":
            from ..networks.arcface import load_arcface

            net = load_arcface(opts.arcface_weights)
            sd = {k: v for k, v in net.state_dict().items() if k.startswith(("input_layer.", "body."))}
            own = enc.state_dict()
            bad = [k for k, v in sd.items() if k not in own or own[k].shape != v.shape]
            if bad:
                raise ConfigError.about("stage2_init", f"arcface: the encoder trunk does not match IR-SE50 (e.g. "
                                        f"{bad[:3]}); use num_layers 50, widths 64,128,256,512 and use_se",
                                        ("num_layers", "widths", "use_se"))
            with torch.no_grad():
                for k, v in sd.items():
                    own[k].copy_(v)
            self.log(f"encoder trunk initialised from ArcFace {opts.arcface_weights} ({len(sd)} tensors)")

    def _build_losses(self) -> None:
        opts = self.opts
        self.perceptual = None
        self.identity = None
        domain = None
        if "domain" in (opts.perceptual, opts.identity) or opts.attr_lambda > 0:
            from ..networks.domain import load_domain_net

            domain = load_domain_net(opts.domain_net, device=self.device).eval().requires_grad_(False)
        self.attr_net = domain if opts.attr_lambda > 0 else None
        if opts.lpips_lambda > 0 and opts.perceptual != "none":
            from ..losses.perceptual import MissingWeightsError, build_perceptual

            kw: dict[str, Any] = {}
            if opts.perceptual == "lpips":
                kw = dict(scales=opts.lpips_scales, backbone_weights=opts.lpips_weights or None)
            else:
                kw = dict(domain_net=domain)
            try:
                self.perceptual = build_perceptual(opts.perceptual, **kw)
            except MissingWeightsError as e:
                raise ConfigError.about("lpips_weights", f"{opts.lpips_weights or '(not given)'}: {e} Pass "
                                        "lpips_weights FILE, or perceptual none",
                                        ("lpips_weights", "perceptual")) from e
            if isinstance(self.perceptual, nn.Module):
                self.perceptual = self.perceptual.to(self.device).eval().requires_grad_(False)
        if opts.id_lambda > 0 and opts.identity != "none":
            from ..losses.identity import build_identity

            self.identity = build_identity(opts.identity, weights=opts.arcface_weights or None, domain_net=domain)
            if isinstance(self.identity, nn.Module):
                self.identity = self.identity.to(self.device).eval().requires_grad_(False)

    def describe(self) -> str:
        n = sum(p.numel() for p in self.inverter.encoder.parameters())
        parts = [f"{self.opts.method} encoder {n / 1e6:.2f} M params", f"generator {self.G.size} px "
                 f"({self.G.n_latent} styles)", self.data_desc]
        losses = [f"l2 {self.opts.l2_lambda}"]
        if self.perceptual is not None:
            losses.append(f"{getattr(self.perceptual, 'name', self.opts.perceptual)} {self.opts.lpips_lambda}")
        if self.identity is not None:
            losses.append(f"{getattr(self.identity, 'name', self.opts.identity)} {self.opts.id_lambda}")
        losses += self._describe_losses()
        if self.opts.adv_lambda > 0:
            losses.append(f"image adversarial {self.opts.adv_lambda} on {self.result_image[len('image_'):]}")
        if self.opts.attr_lambda > 0:
            losses.append(f"attribute consistency {self.opts.attr_lambda} on {self.result_image[len('image_'):]}")
        return "; ".join(parts) + "; losses: " + ", ".join(losses)

    # --- forward
    def _forward(self, x: torch.Tensor, step: int, noise_mode: str, train: bool) -> dict[str, torch.Tensor]:
        """Codes and images (at the input geometry) for x; training-mode forward of the encoder when ``train``."""
        out: dict[str, torch.Tensor] = {}
        previous = self.G.memory_format
        self.G.set_memory_format(self._generator_memory_format())
        try:
            with self.autocast():
                self._codes_and_images(x, step, noise_mode, out)
        finally:
            self.G.set_memory_format(previous)
        for k in [k for k in out if k.startswith("image_")]:
            # contiguous: the loss networks and the stage-1 encoders are not guarded for channels-last inputs
            # (clcae.networks.memory_format: small strided 1x1 convolutions crash in its CPU backward)
            out[k] = to_input_geometry(out[k].float(), self.input_size).contiguous()
        return out

    def _channels_last(self) -> bool:
        """Whether the step runs the generator passes, the encoder and the stage-1 image encoder in channels-last
        (measured faster with gradients on a CPU; the domain network was slower and stays contiguous): on a CPU
        with :attr:`fast_step` and the fast arithmetic (``impl='ref'`` stays contiguous). The encoders are
        converted by :func:`~clcae.networks.memory_format.to_channels_last`, which keeps the small strided 1x1
        convolutions that crash in channels-last on AVX-512 CPUs contiguous."""
        return self.fast_step and self.device.type == "cpu" and self.opts.impl != "ref"

    def _generator_memory_format(self) -> torch.memory_format:
        return torch.channels_last if self._channels_last() else torch.contiguous_format

    def _image_terms(self, x: torch.Tensor, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``[{'l2', 'perc', 'id'}]`` (0-dim, those whose loss is built) of each render in ``images`` against x.

        With :attr:`fast_step`, every loss network runs once on the renders stacked along the batch and the
        target's features are computed once, without gradients (``target`` / ``to_target`` of the losses); else
        once per render, with the target recomputed each time. Same values up to float rounding."""
        out: list[dict[str, torch.Tensor]] = [{"l2": F.mse_loss(o, x)} for o in images]
        if not self.fast_step or len(images) == 1:
            for terms, o in zip(out, images):
                if self.perceptual is not None:
                    terms["perc"] = self.perceptual(o, x).mean()
                if self.identity is not None:
                    terms["id"] = self.identity(o, x).mean()
            return out
        stacked = torch.cat(images)
        shared: dict[str, Any] = {}
        net = self._shared_domain_net()
        if net is not None:  # one trunk pass of the domain network serves the perceptual and the identity loss
            with torch.no_grad():
                target_maps = net.trunk_features(x)
            shared = {"maps": net.trunk_features(stacked)}
        for key, loss in (("perc", self.perceptual), ("id", self.identity)):
            if loss is not None:
                target = loss.target(x, maps=target_maps) if shared else loss.target(x)
                for terms, v in zip(out, loss.to_target(stacked, target, **shared).chunk(len(images))):
                    terms[key] = v.mean()
        return out

    def _shared_domain_net(self) -> nn.Module | None:
        """The domain network when both the perceptual and the identity loss are computed on it, else None."""
        from ..losses.identity import DomainIdentity
        from ..losses.perceptual import DomainPerceptualLoss

        if (isinstance(self.perceptual, DomainPerceptualLoss) and isinstance(self.identity, DomainIdentity)
                and self.perceptual.domain_net is self.identity.domain_net):
            return self.perceptual.domain_net
        return None

    def _losses(self, x: torch.Tensor, out: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        opts = self.opts
        terms: dict[str, torch.Tensor] = {}
        total = x.new_zeros(())
        names = [k for k in out if k.startswith("image_")]
        lambdas = {"l2": opts.l2_lambda, "perc": opts.lpips_lambda, "id": opts.id_lambda}
        for name, values in zip(names, self._image_terms(x, [out[k] for k in names])):
            tag = name[len("image_"):]
            for key, v in values.items():
                terms[f"{key}_{tag}"] = v
                total = total + lambdas[key] * v
        total = self._objective_terms(x, out, terms, total)
        if opts.w_norm_lambda > 0:
            from ..losses.regularizers import w_norm

            wn = w_norm(out["wplus"].float(), self._w_norm_centre())
            terms["w_norm"] = wn
            total = total + opts.w_norm_lambda * wn
        total = self._regulariser_terms(out, step, terms, total)
        total = self._adversarial_term(out, terms, total)
        total = self._attribute_term(x, out, terms, total)
        terms["loss"] = total
        return terms

    # --- steps
    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x = batch.to(self.device, non_blocking=True).float()
        if self.opts.flip:
            flip = torch.rand(x.shape[0]) < 0.5
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        logs = dict(self._before_encoder_step(x, step))
        enc = self.inverter.encoder
        enc.train()
        out = self._forward(x, step, self.noise_mode, train=True)
        terms = self._losses(x, out, step)
        opt = self.optimizers["encoder"]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.sync_gradients_of(enc)
        if self.opts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(enc.parameters(), self.opts.grad_clip)
        opt.step()
        self.sync_buffers()
        if "image_discriminator" in self.trainable:
            logs.update(self._image_d_step(x, out[self.result_image]))
        if "feature_scale" in out:
            logs["feature_scale"] = out["feature_scale"]
        logs.update({k: v.detach() for k, v in terms.items()})
        return logs

    def sync_gradients_of(self, module: nn.Module) -> None:
        du.all_reduce_grads(list(module.parameters()))

    @torch.no_grad()
    def validate(self, batches: Iterator[Any]) -> dict[str, float]:
        enc = self.inverter.encoder
        was = enc.training
        enc.eval()
        sums: dict[str, float] = {}
        n = 0
        step = self.current_step
        for batch in batches:
            x = batch.to(self.device).float()
            out = self._forward(x, step, "const", train=False)
            terms = self._losses(x, out, step)
            b = x.shape[0]
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            for name in [k for k in out if k.startswith("image_")]:
                mse = ((out[name] - x) ** 2).flatten(1).mean(1)
                sums[f"mse_{name[6:]}"] = sums.get(f"mse_{name[6:]}", 0.0) + float(mse.sum())
            n += b
        enc.train(was)
        keys = sorted(sums)
        t = du.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [float(n)], dtype=torch.float64,
                                           device=self.device)).cpu().tolist()
        total = max(t[-1], 1.0)
        return {k: v / total for k, v in zip(keys, t[:-1])}

    @torch.no_grad()
    def image_columns(self, batch: Any) -> list[torch.Tensor]:
        enc = self.inverter.encoder
        was = enc.training
        enc.eval()
        x = batch.to(self.device).float()
        out = self._forward(x, self.current_step, "const", train=False)
        enc.train(was)
        cols = [x]
        for name in ("image_w", "image_wplus", "image_wplus_f"):
            if name in out:
                cols.append(out[name])
        return cols

    def export_best(self, directory: Path, info: Mapping[str, Any]) -> list[Path]:
        inv = self.inverter
        self._prepare_export(int(info["step"]))
        from ..training.state import to_jsonable

        path = save_inverter(inv, Path(directory) / "best_model.pt",
                             extra={"training": to_jsonable({"step": info["step"], "val": dict(info["val"]),
                                                             "options": dict(info["options"])})})
        return [path]

    def extra_state(self) -> dict:
        return {"d_steps": getattr(self, "d_steps", 0), "image_d_steps": self.image_d_steps}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.d_steps = int(state.get("d_steps", 0))
        self.image_d_steps = int(state.get("image_d_steps", 0))


# ---------------------------------------------------------------------------------------------------- methods
class CLCAETask(InversionTask):
    """CLCAE stage 2: w, W+ and the F-space feature from one encoder, three generator passes, feature matching and
    the alignment through the frozen stage-1 encoders."""

    @property
    def result_image(self) -> str:
        return "image_wplus_f" if self.opts.feature_branch else "image_wplus"

    def _build_inverter(self, G) -> nn.Module:
        opts = self.opts
        la = G.latent_avg.detach().clone()
        if not 1 <= opts.idx_k < G.n_latent:
            raise ConfigError.about("idx_k", f"{opts.idx_k} is outside the generator's activations "
                                             f"1..{G.n_latent - 1}")
        with torch.no_grad():
            _, feats = G.synthesis(la[None], noise_mode="const", return_features=True)
        c, fh, fw = feats[opts.idx_k].shape[1:]
        p1 = max(self.input_size) // 4
        down = math.log2(p1 / fh) if fh <= p1 else -1
        if down < 0 or down != int(down):
            raise ConfigError.about("idx_k", f"{opts.idx_k}: the generator's activation there is {fh}x{fw}, which the "
                                    f"F branch cannot produce from its {p1}x{p1} map (needs {p1} / 2^n); pick another "
                                    "idx_k (5 is 16x16) or input_size", ("idx_k", "input_size"))
        enc = CLCAEEncoder(w_attention=opts.w_attention, nhead=opts.nhead, dim_feedforward=opts.dim_feedforward,
                           dropout=opts.dropout, feature_channels=int(c), feature_downsample=int(down),
                           feature_residual=opts.feature_mode == "residual", **self._trunk_kwargs(G))
        inv = CLCAEInverter(enc, G, la, self.input_size, idx_k=opts.idx_k)
        inv.set_avg_image(render_average_image(G, la, self.input_size), "rendered")
        return inv

    def _after_official_init(self, enc: nn.Module) -> None:
        enc.zero_feature_delta()  # a residual F branch starts at zero (W+F = W+)

    def _after_init(self, enc: nn.Module) -> None:
        if self.opts.wplus_offset_gain >= 0:
            enc.set_wplus_offset_gain(self.opts.wplus_offset_gain)

    def _init_contrastive(self, enc: nn.Module) -> None:
        opts = self.opts
        if not (opts.contrastive_lambda > 0 or opts.stage2_init == "contrastive"):
            return
        pi, pl = resolve_contrastive_paths(opts.contrastive_image, opts.contrastive_latent)
        self.E_I = load_contrastive_encoder(pi, device=self.device)
        self.E_w = load_contrastive_encoder(pl, device=self.device)
        if self._channels_last():
            to_channels_last(self.E_I)
        self.contrastive_paths = (str(pi), str(pl))
        if opts.stage2_init == "contrastive":
            keys = load_stage1_trunk(enc, self.E_I, str(pi))
            self.log(f"stage-2 trunk initialised from {pi} ({len(keys)} tensors: trunk, styles.0, laterals)")
        isz = tuple(self.E_I.config["input_size"])
        self.avg_I = render_average_image(self.G, self.G.latent_avg, isz).to(self.device)
        self.E_I_size = isz

    def _describe_losses(self) -> list[str]:
        return [f"fm {self.opts.feature_matching_lambda}",
                f"align {self.opts.contrastive_lambda if self.E_I is not None else 0}"]

    def _codes_and_images(self, x: torch.Tensor, step: int, noise_mode: str, out: dict[str, torch.Tensor]) -> None:
        opts, inv, G = self.opts, self.inverter, self.G
        dw, offsets, f = inv.encoder(x - inv.average_image().to(x), detach_query=opts.query_grad == "detach")
        w = dw + inv.latent_avg
        wplus = offsets + w.unsqueeze(1)
        out.update(w=w, wplus=wplus, f=f)
        if opts.feature_branch:
            s = feature_ramp_scale(opts.feature_ramp, step, self.ramp_steps)
            residual = opts.feature_mode == "residual"
            img, feats = G.synthesis(wplus, noise_mode=noise_mode, features_in={opts.idx_k: f},
                                     feature_scale=s, return_features=True,
                                     feature_mode="add" if residual else "replace")
            # feature matching pulls the injected feature towards G_k(W+): for a residual branch the
            # injected feature is G_k(W+) + f, so the term is ||f||^2
            out["f_target"] = torch.zeros_like(f) if residual else feats[opts.idx_k].detach()
            out["image_wplus_f"] = img
            out["feature_scale"] = torch.tensor(s)
        out["image_wplus"] = G.synthesis(wplus, noise_mode=noise_mode)
        out["image_w"] = G.synthesis(w, noise_mode=noise_mode)

    def _objective_terms(self, x: torch.Tensor, out: Mapping[str, torch.Tensor], terms: dict[str, torch.Tensor],
                         total: torch.Tensor) -> torch.Tensor:
        opts = self.opts
        if opts.feature_branch and opts.feature_matching_lambda > 0:
            fm = F.mse_loss(out["f"].float(), out["f_target"].float())
            terms["feature_matching"] = fm
            total = total + opts.feature_matching_lambda * fm
        if self.E_I is not None and opts.contrastive_lambda > 0:
            from ..losses.contrastive import clip_loss

            img = out["image_w"] if opts.align_image == "gen_w" else x
            if tuple(img.shape[-2:]) != tuple(self.E_I_size):
                img = F.interpolate(img, size=self.E_I_size, mode="bilinear", align_corners=False, antialias=True)
            e_i = self.E_I(img - self.avg_I)
            e_w = self.E_w(out["w"].float() - self.inverter.latent_avg)
            al = clip_loss(e_i, e_w, self.E_I.scale(), gather=False)
            terms["align"] = al
            total = total + opts.contrastive_lambda * al
        return total

    def _w_norm_centre(self) -> torch.Tensor:
        return self.inverter.latent_avg


class PSPTask(InversionTask):
    """pSp: W+ = encoder(x) + latent_avg, one generator pass."""

    def _build_inverter(self, G) -> nn.Module:
        la_plus = G.latent_avg.detach().clone()[None].repeat(G.n_latent, 1)
        return PSPInverter(GradualStyleEncoder(**self._trunk_kwargs(G)), G, la_plus, self.input_size)


class E4ETask(InversionTask):
    """e4e: pSp's pass with progressive deltas, the delta regulariser and a latent discriminator."""

    def _build_inverter(self, G) -> nn.Module:
        la_plus = G.latent_avg.detach().clone()[None].repeat(G.n_latent, 1)
        enc = Encoder4Editing(progressive_stage=0, **self._trunk_kwargs(G))
        return E4EInverter(enc, G, la_plus, self.input_size)

    def _build_method_parts(self) -> None:
        from ..losses.regularizers import ProgressiveSchedule
        from ..networks.latent_discriminator import LatentCodesDiscriminator

        opts = self.opts
        self.schedule = ProgressiveSchedule(self.G.n_latent, start_step=opts.progressive_start,
                                            every=opts.progressive_every)
        if opts.w_discriminator_lambda > 0:
            D = LatentCodesDiscriminator(self.G.style_dim, 4).to(self.device)
            self.trainable["w_discriminator"] = D
            self.optimizers["w_discriminator"] = torch.optim.Adam(D.parameters(), lr=opts.w_discriminator_lr)
        self.d_steps = 0

    def _codes_and_images(self, x: torch.Tensor, step: int, noise_mode: str, out: dict[str, torch.Tensor]) -> None:
        self.inverter.encoder.progressive_stage = self.schedule(step)
        super()._codes_and_images(x, step, noise_mode, out)

    def _regulariser_terms(self, out: Mapping[str, torch.Tensor], step: int, terms: dict[str, torch.Tensor],
                           total: torch.Tensor) -> torch.Tensor:
        from ..losses.regularizers import delta_regularization

        opts = self.opts
        stage = self.schedule(step)
        if opts.delta_lambda > 0 and stage > 0:
            d = delta_regularization(out["wplus"].float(), stage)
            terms["delta"] = d
            total = total + opts.delta_lambda * d
        if "w_discriminator" in self.trainable:
            from ..losses.regularizers import latent_g_loss

            adv = latent_g_loss(self.trainable["w_discriminator"], out["wplus"].float(), stage)
            terms["w_adv"] = adv
            total = total + opts.w_discriminator_lambda * adv
        return total

    def _before_encoder_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return self._d_step(x, step) if "w_discriminator" in self.trainable else {}

    def _d_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        from ..losses.regularizers import latent_d_loss, latent_d_r1, sample_real_w

        opts = self.opts
        D = self.trainable["w_discriminator"]
        stage = self.schedule(step)
        with torch.no_grad():  # e4e's D step scores the layer-0 code (the W code) against mapped z
            self.inverter.encoder.progressive_stage = stage
            fake = self.inverter.codes(x)[:, 0].float()
            rand = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 2 ** 62, (1,)).item()))
            real = sample_real_w(self.G, fake.shape[0], rand).to(fake)
        loss = latent_d_loss(D, real, fake)
        logs = {"w_d": loss.detach()}
        if opts.r1 > 0 and self.d_steps % opts.d_reg_every == 0:
            r1 = latent_d_r1(D, real, opts.r1)
            loss = loss + r1 * opts.d_reg_every
            logs["w_r1"] = r1.detach()
        self._step_module("w_discriminator", loss)
        self.d_steps += 1
        return logs

    def _prepare_export(self, step: int) -> None:
        self.inverter.encoder.progressive_stage = self.schedule(step)


#: The task class of each ``--method`` (stage 2): what the methods differ in is written once, in their class.
TASKS = {"clcae": CLCAETask, "psp": PSPTask, "e4e": E4ETask}
