"""Encoder-based inverters behind one interface: CLCAE, pSp and e4e with a StyleGAN2 generator.

The networks of the pSp lineage's ``models/psp.py``: an encoder and a generator as one module. They live with the
networks so that :mod:`clcae.checkpoints` builds them from files without importing the inversion workflows above it;
:mod:`clcae.inversion` exports them with the optimisation-based projection and the folder job.

An :class:`Inverter` is an ``nn.Module`` holding ``encoder`` and ``decoder`` (the
:class:`~clcae.networks.stylegan2.Generator`), so its state dict has exactly the ``encoder.*`` and ``decoder.*``
keys of the official checkpoints. :meth:`Inverter.invert` maps a batch of images to codes and renderings::

    inv = clcae.load_inverter("ckpt.pt")             # eval mode, gradients off
    out = inv.invert(x)                               # x [B, 3, H, W] in [-1, 1] at inv.input_size
    out["wplus"], out["image_wplus"]                  # [B, n, 512], [B, 3, S, S] at the generator's resolution
    small = inv.official_output(out["image_wplus"])   # what the official scripts write (256 px, cars 192x256)

Outputs (every image unclamped, at the generator's full resolution, rendered with the constant noise buffers):

- ``w`` [B, D]: CLCAE's foundation code ``dw + latent_avg``; e4e's layer-0 code ``w_0 + latent_avg[0]``
  (= ``wplus[:, 0]``); absent for pSp, which has no single code;
- ``wplus`` [B, n, D]: the codes fed to the generator (all archs);
- ``f`` [B, 512, 16, 16] (CLCAE): the F-space feature, blended in at generator index ``idx_k`` with scale 1;
- ``f_gen`` (CLCAE): the generator's own activation at ``idx_k`` in the W+ pass (recorded before the blend);
- ``f_delta`` (CLCAE with a residual F branch): the encoder's correction, ``f = f_gen + f_delta``;
- ``image_wplus_f`` (CLCAE): G(W+) with f injected, the CLCAE result;
- ``image_wplus`` (all): G(W+);
- ``image_w`` (CLCAE): G(w repeated over the layers).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.average import render_average_image
from .encoders import DEFAULT_IDX_K, CLCAEEncoder, Encoder4Editing, GradualStyleEncoder
from .layers import set_impl
from .memory_format import to_channels_last
from .stylegan2 import Generator

__all__ = ["Inverter", "CLCAEInverter", "PSPInverter", "E4EInverter", "build_inverter", "official_output",
           "render_average_image", "ARCHS", "PRECISIONS"]

#: Numerical precisions of :meth:`Inverter.set_precision`.
PRECISIONS = ("fp32", "bf16")


def official_output(image: torch.Tensor, input_size: Sequence[int] = (256, 256), size: int = 256) -> torch.Tensor:
    """The image as the official scripts write it: ``adaptive_avg_pool2d`` to ``size`` x ``size``, then a centred
    crop of rows to the input's aspect ratio.

    Faces (256x256 input): the 4x4-mean-pooled 256x256 image. Cars (192x256 input, 512 px generator): pooled to
    256x256, rows 32:224 kept -> [B, 3, 192, 256]. Input [B, 3, S, S], output [B, 3, size*H/W, size].
    """
    # at its own size the pooling is the identity: skip the kernel (and its backward, in training)
    pooled = image if tuple(image.shape[-2:]) == (size, size) else F.adaptive_avg_pool2d(image, size)
    h, w = (int(v) for v in input_size)
    rows = size * h // w
    if rows >= size:
        return pooled
    top = (size - rows) // 2
    return pooled[:, :, top:top + rows, :]


class Inverter(nn.Module):
    """Base class: an image encoder, a StyleGAN2 ``decoder`` and the ``latent_avg`` the codes are relative to.

    Args:
        encoder: the encoder network (its ``config`` attribute holds its constructor arguments).
        decoder: the generator.
        latent_avg: [D] (CLCAE) or [n_latent, D] (pSp / e4e, added row by row).
        input_size: (H, W) the encoder expects (256x256; cars 192x256).

    ``latent_avg`` is a non-persistent buffer, so ``state_dict()`` holds exactly ``encoder.*`` and ``decoder.*``.
    Subclasses implement :meth:`forward`; :meth:`invert` runs it without gradients.
    """

    arch = "base"
    image_names: tuple[str, ...] = ()

    def __init__(self, encoder: nn.Module, decoder: Generator, latent_avg: torch.Tensor, input_size: Sequence[int]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.register_buffer("latent_avg", latent_avg.detach().clone().float(), persistent=False)
        self.input_size = tuple(int(v) for v in input_size)
        self.precision = "fp32"
        self.memory_format: torch.memory_format | None = None  # None: chosen per call, see invert()

    # ------------------------------------------------------------------ configuration
    @property
    def n_latent(self) -> int:
        """Number of W+ layers of the generator."""
        return self.decoder.n_latent

    @property
    def config(self) -> dict:
        """Constructor arguments (plain data) from which :func:`build_inverter` rebuilds this network."""
        return dict(arch=self.arch, encoder=dict(self.encoder.config), generator=dict(self.decoder.config),
                    input_size=list(self.input_size), **self._extra_config())

    def _extra_config(self) -> dict:
        return {}

    def set_impl(self, impl: str) -> "Inverter":
        """Op implementation of the whole network (``'auto'|'cuda'|'fast'|'ref'``); returns self.

        ``'ref'`` is the official arithmetic everywhere (the generator's grouped modulated convolution and reference
        ``upfirdn2d``; the encoder's batch norms run as separate layers). Any other value lets eval-mode inference
        take the fast forms, equal to the reference within float rounding: batch norms folded into the IR-SE
        convolutions, bias, noise and gain fused into the generator's convolutions, prepared FIR kernels.
        """
        set_impl(self, impl)
        return self

    def set_precision(self, precision: str) -> "Inverter":
        """``'fp32'`` (the default) or ``'bf16'``: :meth:`invert` then runs under bfloat16 autocast on the model's
        device (convolutions and matrix products in bfloat16, FIR filters and reductions in float32) and returns
        float32 tensors. The error against fp32 is measured in ``docs/PERFORMANCE.md``. Returns self."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
        self.precision = precision
        return self

    def set_memory_format(self, memory_format: torch.memory_format | None) -> "Inverter":
        """Run :meth:`invert`'s activations in ``torch.channels_last`` or ``torch.contiguous_format`` (values equal
        within float rounding); ``None`` (the default) picks channels-last on a CPU unless ``impl='ref'`` (its
        convolutions measured 1.4-1.6x faster there, ``docs/PERFORMANCE.md``) and contiguous elsewhere. For
        channels-last the encoder's weights are converted with
        :func:`~clcae.networks.memory_format.to_channels_last` (which keeps the convolutions that crash in
        channels-last on some CPUs contiguous). Returns self."""
        if memory_format == torch.channels_last:
            to_channels_last(self.encoder)
        elif memory_format not in (torch.contiguous_format, None):
            raise ValueError(f"memory_format must be torch.channels_last, torch.contiguous_format or None; got "
                             f"{memory_format!r}")
        self.memory_format = memory_format
        return self

    def _call_memory_format(self, x: torch.Tensor) -> torch.memory_format:
        if self.memory_format is not None:
            return self.memory_format
        fast = getattr(self.decoder.conv1.conv, "impl", "auto") != "ref"
        return torch.channels_last if x.device.type == "cpu" and fast else torch.contiguous_format

    def official_output(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` as the official inference scripts write it (see :func:`official_output`)."""
        return official_output(image, self.input_size)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{type(self).__name__} expects images [B, 3, {self.input_size[0]}, "
                             f"{self.input_size[1]}] in [-1, 1]; got {tuple(x.shape)}")

    def _image_set(self, images: Iterable[str] | None) -> tuple[str, ...]:
        if images is None:
            return self.image_names
        images = tuple(images)
        bad = [n for n in images if n not in self.image_names]
        if bad:
            raise ValueError(f"{type(self).__name__} renders {self.image_names}; unknown {bad}")
        return images

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def invert(self, x: torch.Tensor, avg_image: torch.Tensor | None = None,
               images: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Invert ``x`` [B, 3, H, W] (normalised to [-1, 1] at ``input_size``) without gradients.

        ``avg_image`` is used by CLCAE only (see :class:`CLCAEInverter`). ``images`` picks which images to render
        (names without the ``image_`` prefix; default all). Returns the dict described in the module docstring.
        """
        fmt = self._call_memory_format(x)
        x = x.contiguous(memory_format=fmt)
        previous = self.decoder.memory_format
        self.decoder.set_memory_format(fmt)
        try:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out = self(x, avg_image=avg_image, images=images)
        finally:
            self.decoder.set_memory_format(previous)
        return {k: v.float().contiguous() if torch.is_tensor(v) and v.is_floating_point() else v
                for k, v in out.items()}


class CLCAEInverter(Inverter):
    """CLCAE (official ``AFPSP``): foundation code w, W+ from cross-attention, and the F-space feature f.

    The encoder sees ``x - avg_image``. ``avg_image`` for :meth:`invert` is, in order: the argument; the image
    stored with the model (:meth:`set_avg_image`, or our checkpoints' ``avg_image``); else it is rendered once from
    ``latent_avg`` by :func:`render_average_image` and cached (``avg_image_source`` says which). Three generator
    passes with the constant noise buffers: W+ with ``f`` blended in at ``idx_k`` with ``feature_scale`` (1.0, full
    replacement, as official inference), W+ alone, and w repeated.

    With a residual F branch (``encoder.feature_residual``, ours) the encoder's output is a correction ``Δf`` added
    to the generator's activation ``G_k(W+)``; the output ``f`` is then ``G_k(W+) + Δf`` (what the replace blend
    needs to give the same image, at any scale) and ``f_delta`` is ``Δf``.
    """

    arch = "clcae"
    image_names = ("wplus_f", "wplus", "w")

    def __init__(self, encoder: CLCAEEncoder, decoder: Generator, latent_avg: torch.Tensor, input_size: Sequence[int],
                 idx_k: int = DEFAULT_IDX_K, feature_scale: float = 1.0, avg_image: torch.Tensor | None = None):
        super().__init__(encoder, decoder, latent_avg, input_size)
        self.idx_k = int(idx_k)
        self.feature_scale = float(feature_scale)
        self.register_buffer("avg_image", None, persistent=False)
        self.avg_image_source = "none"
        if avg_image is not None:
            self.set_avg_image(avg_image)

    def _extra_config(self) -> dict:
        return dict(idx_k=self.idx_k, feature_scale=self.feature_scale)

    def set_avg_image(self, avg_image: torch.Tensor | None, source: str = "given") -> None:
        """Store the average image [1, 3, H, W] in [-1, 1] (None forgets it, so the next call renders one)."""
        if avg_image is None:
            self.avg_image, self.avg_image_source = None, "none"
            return
        if avg_image.ndim == 3:
            avg_image = avg_image.unsqueeze(0)
        if avg_image.shape != (1, 3, *self.input_size):
            raise ValueError(f"avg_image must be [1, 3, {self.input_size[0]}, {self.input_size[1]}]; "
                             f"got {tuple(avg_image.shape)}")
        self.avg_image = avg_image.detach().to(self.latent_avg.device, torch.float32).clone()
        self.avg_image_source = source

    def average_image(self) -> torch.Tensor:
        """The stored average image, rendering and caching it from ``latent_avg`` when there is none."""
        if self.avg_image is None:
            self.set_avg_image(render_average_image(self.decoder, self.latent_avg, self.input_size), "rendered")
        return self.avg_image

    def forward(self, x: torch.Tensor, avg_image: torch.Tensor | None = None, images: Iterable[str] | None = None,
                w_offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self._check_input(x)
        images = self._image_set(images)
        avg = self.average_image() if avg_image is None else avg_image.to(x)
        if avg.ndim == 3:
            avg = avg.unsqueeze(0)
        if avg.shape[1:] != x.shape[1:] or avg.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"avg_image must be [1 or B, 3, H, W] like x {tuple(x.shape)}; got {tuple(avg.shape)}")
        dw, offsets, f = self.encoder(x - avg, w_offset)
        w = dw + self.latent_avg
        wplus = offsets + w.unsqueeze(1)
        out = {"w": w, "wplus": wplus, "f": f}
        G = self.decoder
        residual = getattr(self.encoder, "feature_residual", False)
        if "wplus_f" in images:
            img, feats = G.synthesis(wplus, noise_mode="const", features_in={self.idx_k: f},
                                     feature_scale=self.feature_scale, return_features=True,
                                     feature_mode="add" if residual else "replace")
            out["image_wplus_f"], out["f_gen"] = img, feats[self.idx_k]
            del feats
        if "wplus" in images or (residual and "f_gen" not in out):
            if "f_gen" in out:
                out["image_wplus"] = G.synthesis(wplus, noise_mode="const")
            else:
                img, feats = G.synthesis(wplus, noise_mode="const", return_features=True)
                out["f_gen"] = feats[self.idx_k]
                if "wplus" in images:
                    out["image_wplus"] = img
                del feats
        if residual:
            # the feature that replaces G's activation: with the replace blend at any scale s,
            # (1 - s) h + s (h + df) = h + s df, so `f` keeps its meaning for every consumer (edits, latents files)
            out["f_delta"], out["f"] = f, out["f_gen"] + f
        if "w" in images:
            out["image_w"] = G.synthesis(w, noise_mode="const")
        return out


class PSPInverter(Inverter):
    """pSp: W+ = encoder codes + ``latent_avg`` (row by row, when ``start_from_latent_avg``); one generator pass.

    The output has ``wplus`` and ``image_wplus`` (no single code ``w``; ``avg_image`` is ignored).
    """

    arch = "psp"
    image_names = ("wplus",)

    def __init__(self, encoder: GradualStyleEncoder, decoder: Generator, latent_avg: torch.Tensor,
                 input_size: Sequence[int], start_from_latent_avg: bool = True):
        if latent_avg.ndim != 2 or latent_avg.shape[0] != decoder.n_latent:
            raise ValueError(f"latent_avg must be [{decoder.n_latent}, D]; got {tuple(latent_avg.shape)}")
        super().__init__(encoder, decoder, latent_avg, input_size)
        self.start_from_latent_avg = bool(start_from_latent_avg)

    def _extra_config(self) -> dict:
        return dict(start_from_latent_avg=self.start_from_latent_avg)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The W+ codes [B, n, D] for x (encoder output plus ``latent_avg`` when ``start_from_latent_avg``)."""
        codes = self.encoder(x)
        return codes + self.latent_avg if self.start_from_latent_avg else codes

    def forward(self, x: torch.Tensor, avg_image: torch.Tensor | None = None,
                images: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        self._check_input(x)
        images = self._image_set(images)
        out = {"wplus": self.codes(x)}
        if "wplus" in images:
            out["image_wplus"] = self.decoder.synthesis(out["wplus"], noise_mode="const")
        return out


class E4EInverter(PSPInverter):
    """e4e: like pSp (same keys), with the e4e encoder; ``w`` is layer 0's code ``w_0 + latent_avg[0]``."""

    arch = "e4e"

    def forward(self, x: torch.Tensor, avg_image: torch.Tensor | None = None,
                images: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        out = super().forward(x, avg_image=avg_image, images=images)
        return {"w": out["wplus"][:, 0], **out}


ARCHS: dict[str, tuple[type[Inverter], type[nn.Module]]] = {
    "clcae": (CLCAEInverter, CLCAEEncoder),
    "psp": (PSPInverter, GradualStyleEncoder),
    "e4e": (E4EInverter, Encoder4Editing),
}


def build_inverter(kwargs: Mapping[str, Any]) -> Inverter:
    """Build an inverter (random weights, ``latent_avg`` zero) from :attr:`Inverter.config`-style kwargs:
    ``{'arch', 'encoder': {...}, 'generator': {...}, 'input_size': [H, W], ...arch options}``.

    Build under ``with torch.device('meta'):`` to get the structure without allocating memory.
    """
    kwargs = dict(kwargs)
    arch = kwargs.pop("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown inverter arch {arch!r}; known: {sorted(ARCHS)}")
    inverter_cls, encoder_cls = ARCHS[arch]
    enc_kwargs = dict(kwargs.pop("encoder"))
    input_size = kwargs.pop("input_size", enc_kwargs.get("input_size", (256, 256)))
    enc_kwargs["input_size"] = list(input_size)
    decoder = Generator(**kwargs.pop("generator"))
    enc_kwargs.setdefault("n_styles", decoder.n_latent)
    encoder = encoder_cls(**enc_kwargs)
    d = decoder.style_dim
    latent_avg = torch.zeros(d) if arch == "clcae" else torch.zeros(decoder.n_latent, d)
    return inverter_cls(encoder, decoder, latent_avg, input_size, **kwargs)
