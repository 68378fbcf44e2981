"""Optimisation-based inversion: project images into a StyleGAN2 generator by gradient descent on the code.

Follows the recipe of NVIDIA's stylegan2-ada-pytorch ``projector.py`` (Karras et al. 2020), batched and with a
choice of latent space:

- the code starts at the average latent (or at a given code, e.g. an encoder's output) and is optimised with
  Adam (betas 0.9 / 0.999) at a base learning rate of 0.1, linearly ramped up over the first 5 % of the steps and
  cosine-ramped down over the last 25 %;
- during optimisation Gaussian noise of scale ``w_std * 0.05 * max(0, 1 - t / 0.75) ** 2`` (``t = step / steps``)
  is added to the code, where ``w_std = sqrt(E ||w - w_mean||^2)`` is estimated from mapping-network samples;
- the generator's per-layer noise inputs are optimised too (``optimize_noise=True``), penalised by NVIDIA's
  multi-scale autocorrelation regulariser (:func:`noise_regularization`, weight 1e5) and renormalised to zero mean
  and unit variance after every step; the final renders use these optimised noise maps.

Space ``'w'`` optimises one code repeated over the layers, ``'wplus'`` one code per layer.

The image loss is ``perceptual(x_hat, x) + mse_weight * MSE(x_hat, x)`` per sample, where ``perceptual`` is a
callable given by the caller (LPIPS, a domain perceptual loss, ...; not built here) and ``x_hat`` is the render
brought to the input's size (see :func:`match_input_size`). Without a perceptual loss only the MSE is used.

Batched projection: the per-sample losses are summed over the batch, and every sample has its own random stream,
so the samples of a batch do not interact. Adam's update is element-wise, so a sample projected in a batch follows
the same trajectory as when projected alone with the same seed (up to floating-point rounding of batched ops).

Entry points: :class:`Projector` (``project(x, steps, ...)``) and :class:`ProjectionInverter`, which puts it behind
the :class:`~clcae.networks.inverters.Inverter` interface (``invert(x, avg_image=None, images=None)``).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..networks.stylegan2 import Generator
from ..networks.inverters import Inverter

__all__ = ["Projector", "ProjectionInverter", "noise_regularization", "renormalize_noise", "match_input_size",
           "learning_rate_at", "w_noise_scale_at", "SPACES"]

SPACES = ("w", "wplus")

PerceptualLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------- schedules
def learning_rate_at(step: int, steps: int, lr: float = 0.1, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """NVIDIA's projector learning rate at ``step`` of ``steps``.

    With ``t = step / steps``: ``lr * (0.5 - 0.5 * cos(pi * min(1, (1 - t) / rampdown))) * min(1, t / rampup)``,
    i.e. a linear ramp-up over the first ``rampup`` fraction (the rate is 0 at step 0) and a cosine ramp-down over
    the last ``rampdown`` fraction.
    """
    t = step / steps
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(down * math.pi)
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    return lr * ramp * up


def w_noise_scale_at(step: int, steps: int, w_std: float, initial_noise_factor: float = 0.05,
                     noise_ramp: float = 0.75) -> float:
    """Std of the noise added to the code at ``step``: ``w_std * factor * max(0, 1 - t / noise_ramp) ** 2``."""
    t = step / steps
    return w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp) ** 2 if noise_ramp > 0 else 0.0


# ---------------------------------------------------------------------------------------------------- noise maps
def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """NVIDIA's multi-scale autocorrelation penalty on noise maps, per sample.

    For every map ``n`` [B, 1, H, W] and every scale (the map, then 2x2 average-pooled while its side is above 8):
    ``mean(n * roll(n, 1, W)) ** 2 + mean(n * roll(n, 1, H)) ** 2`` with the means over each sample's map (rolls
    wrap around). Summed over maps and scales. Returns [B] (0 for perfectly uncorrelated maps; for a +-1
    checkerboard of side 8 it is 2, as both neighbour correlations are -1).
    """
    if not noises:
        raise ValueError("noise_regularization: got no noise maps")
    total = None
    for n in noises:
        if n.ndim != 4 or n.shape[1] != 1:
            raise ValueError(f"noise_regularization: noise maps must be [B, 1, H, W]; got {tuple(n.shape)}")
        while True:
            reg = (n * torch.roll(n, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            reg = reg + (n * torch.roll(n, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            total = reg if total is None else total + reg
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return total


@torch.no_grad()
def renormalize_noise(noises: Sequence[torch.Tensor]) -> None:
    """In place: shift and scale each sample's noise map [B, 1, H, W] to zero mean and unit variance."""
    for n in noises:
        n -= n.mean(dim=(1, 2, 3), keepdim=True)
        n *= n.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


# ---------------------------------------------------------------------------------------------------- image loss
def match_input_size(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring a square render [B, C, S, S] to the input's size (H, W) (each at most S) for the loss.

    The render is centre-cropped to the input's aspect ratio (rows ``S * H // W`` when H < W, as the official car
    crop; columns when W < H), then area-downsampled (average pooling; a no-op at equal size) to (H, W).
    """
    h, w = (int(v) for v in size)
    s_h, s_w = image.shape[-2:]
    if h > s_h or w > s_w:
        raise ValueError(f"match_input_size: the input ({h}x{w}) is larger than the render ({s_h}x{s_w}); "
                         "project images at most at the generator's resolution")
    if h * s_w != w * s_h:
        if h * s_w < w * s_h:  # input is wider than the render: keep the centre rows
            rows = s_w * h // w
            top = (s_h - rows) // 2
            image = image[:, :, top:top + rows, :]
        else:
            cols = s_h * w // h
            left = (s_w - cols) // 2
            image = image[:, :, :, left:left + cols]
    if tuple(image.shape[-2:]) != (h, w):
        image = F.interpolate(image, size=(h, w), mode="area")
    return image


# ---------------------------------------------------------------------------------------------------- projector
class Projector:
    """Optimisation-based inversion into a StyleGAN2 generator (NVIDIA's projector, batched, W or W+).

    Args:
        generator: the (frozen) generator; its parameters are not modified and receive no gradients.
        perceptual: ``perceptual(x_hat, x) -> [B]`` per-sample distance between images [B, 3, H, W] in [-1, 1]
            at the input's size (e.g. LPIPS). It must treat samples independently (eval mode) for batched
            projection to equal per-image projection. ``None``: MSE only.
        space: ``'w'`` (one code [B, D] repeated over the layers) or ``'wplus'`` (one code per layer [B, n, D]).
        mse_weight: weight of the per-sample pixel MSE. ``None`` (default): 0 with a perceptual loss (NVIDIA's
            projector uses the perceptual distance alone), 1 without one.
        latent_avg: starting code when :meth:`project` gets no ``init``: [D] (``'w'``), or [D] / [n, D]
            (``'wplus'``). ``None``: the mean of the ``w_avg_samples`` mapping samples (NVIDIA's choice). Pass the
            checkpoint's ``latent_avg`` to start where the encoders' codes are centred.
        w_avg_samples, w_avg_seed: number of mapping samples (z ~ N(0, I) drawn with a private generator seeded
            by ``w_avg_seed``) for the mean and ``w_std = sqrt(mean_i ||w_i - w_mean||^2)``.
        optimize_noise: optimise per-sample noise maps (NVIDIA) with the regulariser; ``False`` keeps the
            generator's constant noise buffers and drops the regulariser.
        lr, betas, lr_rampdown, lr_rampup: Adam and the learning-rate schedule (:func:`learning_rate_at`).
        initial_noise_factor, noise_ramp: code-noise schedule (:func:`w_noise_scale_at`).
        noise_reg_weight: weight of :func:`noise_regularization` (1e5).

    Attributes: ``w_mean`` [D], ``w_std`` (float), ``init_latent`` ([D] or [n, D]), ``generator``.
    """

    def __init__(self, generator: Generator, perceptual: PerceptualLoss | None = None, space: str = "w",
                 mse_weight: float | None = None, latent_avg: torch.Tensor | None = None,
                 w_avg_samples: int = 10000, w_avg_seed: int = 123, optimize_noise: bool = True, lr: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.999), lr_rampdown: float = 0.25, lr_rampup: float = 0.05,
                 initial_noise_factor: float = 0.05, noise_ramp: float = 0.75, noise_reg_weight: float = 1e5):
        if space not in SPACES:
            raise ValueError(f"Projector: space must be one of {SPACES}; got {space!r}")
        if mse_weight is None:
            mse_weight = 0.0 if perceptual is not None else 1.0
        if mse_weight < 0:
            raise ValueError(f"Projector: mse_weight must be >= 0; got {mse_weight}")
        if perceptual is None and mse_weight == 0:
            raise ValueError("Projector: no image loss (perceptual=None and mse_weight=0)")
        if w_avg_samples < 2:
            raise ValueError(f"Projector: w_avg_samples must be >= 2; got {w_avg_samples}")
        self.generator = generator
        self.perceptual = perceptual
        self.space = space
        self.mse_weight = float(mse_weight)
        self.optimize_noise = bool(optimize_noise)
        self.lr, self.betas = float(lr), tuple(float(b) for b in betas)
        self.lr_rampdown, self.lr_rampup = float(lr_rampdown), float(lr_rampup)
        self.initial_noise_factor, self.noise_ramp = float(initial_noise_factor), float(noise_ramp)
        self.noise_reg_weight = float(noise_reg_weight)
        self.w_avg_samples, self.w_avg_seed = int(w_avg_samples), int(w_avg_seed)

        with torch.no_grad():
            g = torch.Generator().manual_seed(self.w_avg_seed)
            z = torch.randn(self.w_avg_samples, generator.style_dim, generator=g).to(self._device)
            ws = generator.mapping(z).float()
            self.w_mean = ws.mean(0)
            self.w_std = float((ws - self.w_mean).square().sum(1).mean().sqrt())
        self.init_latent = self._check_latent_avg(self.w_mean if latent_avg is None else latent_avg)

    # -------------------------------------------------------------- helpers
    @property
    def _device(self) -> torch.device:
        return self.generator.latent_avg.device

    @property
    def config(self) -> dict:
        """The projector's options (plain data), e.g. for run logs."""
        return dict(space=self.space, mse_weight=self.mse_weight, perceptual=self.perceptual is not None,
                    w_avg_samples=self.w_avg_samples, w_avg_seed=self.w_avg_seed,
                    optimize_noise=self.optimize_noise, lr=self.lr, betas=list(self.betas),
                    lr_rampdown=self.lr_rampdown, lr_rampup=self.lr_rampup,
                    initial_noise_factor=self.initial_noise_factor, noise_ramp=self.noise_ramp,
                    noise_reg_weight=self.noise_reg_weight)

    @property
    def image_names(self) -> tuple[str, ...]:
        """Images :meth:`project` can render: ``('wplus', 'w')`` in space ``'w'``, ``('wplus',)`` in ``'wplus'``."""
        return ("wplus", "w") if self.space == "w" else ("wplus",)

    def _check_latent_avg(self, latent_avg: torch.Tensor) -> torch.Tensor:
        G = self.generator
        la = latent_avg.detach().float()
        if la.ndim == 2 and la.shape[0] == 1:
            la = la[0]
        ok = la.shape == (G.style_dim,) or (self.space == "wplus" and la.shape == (G.n_latent, G.style_dim))
        if not ok:
            allowed = f"[{G.style_dim}]" + (f" or [{G.n_latent}, {G.style_dim}]" if self.space == "wplus" else "")
            raise ValueError(f"Projector: latent_avg must be {allowed} for space {self.space!r}; "
                             f"got {tuple(latent_avg.shape)}")
        return la.clone()

    def _initial_code(self, batch: int, init: torch.Tensor | None) -> torch.Tensor:
        G = self.generator
        n, d = G.n_latent, G.style_dim
        if init is None:  # init_latent: [D] or (space 'wplus') [n, D], shared by the batch
            la = self.init_latent.to(self._device)
            if self.space == "w":
                return la.expand(batch, -1).clone()
            return (la if la.ndim == 2 else la.expand(n, -1)).expand(batch, -1, -1).clone()
        code = init.detach().to(self._device, torch.float32)
        if code.ndim == 1:
            code = code.expand(batch, -1)
        if self.space == "w":
            if code.shape != (batch, d):
                raise ValueError(f"Projector.project: init for space 'w' must be [{d}] or [B={batch}, {d}]; "
                                 f"got {tuple(init.shape)}")
        else:
            if code.ndim == 2:  # one code per image, repeated over the layers
                code = code.unsqueeze(1).expand(-1, n, -1)
            if code.ndim == 3 and code.shape[0] == 1:
                code = code.expand(batch, -1, -1)
            if code.shape != (batch, n, d):
                raise ValueError(f"Projector.project: init for space 'wplus' must be [{d}], [B={batch}, {d}], "
                                 f"[1, {n}, {d}] or [B={batch}, {n}, {d}]; got {tuple(init.shape)}")
        return code.clone().contiguous()

    def image_loss(self, image: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample image loss [B]: ``perceptual(x_hat, x) + mse_weight * mean((x_hat - x)^2)`` where ``x_hat``
        is ``image`` [B, 3, S, S] brought to x's size by :func:`match_input_size`."""
        x_hat = match_input_size(image, x.shape[-2:])
        loss = x_hat.new_zeros(x.shape[0])
        if self.perceptual is not None:
            p = self.perceptual(x_hat, x)
            if p.numel() != x.shape[0]:
                raise ValueError(f"Projector: perceptual(x_hat, x) must return one value per sample ([{x.shape[0]}]); "
                                 f"got shape {tuple(p.shape)}")
            loss = loss + p.reshape(-1).float()
        if self.mse_weight > 0:
            loss = loss + self.mse_weight * (x_hat - x).float().square().mean(dim=(1, 2, 3))
        return loss

    def _seeds(self, seed: int | Sequence[int], batch: int) -> list[int]:
        if isinstance(seed, int):
            return [seed] * batch
        seeds = [int(s) for s in seed]
        if len(seeds) != batch:
            raise ValueError(f"Projector.project: seed must be an int or {batch} ints (one per image); "
                             f"got {len(seeds)}")
        return seeds

    def _noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [tuple(getattr(self.generator.noises, f"noise_{i}").shape) for i in range(self.generator.num_layers)]

    # -------------------------------------------------------------- projection
    def project(self, x: torch.Tensor, steps: int = 1000, init: torch.Tensor | None = None,
                seed: int | Sequence[int] = 0, progress: bool = True,
                images: Iterable[str] | None = None) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Project images ``x`` [B, 3, H, W] in [-1, 1] (H, W at most the generator's resolution).

        Args:
            x: target images; the loss compares at x's size (:func:`match_input_size`).
            steps: optimisation steps (NVIDIA: 1000).
            init: starting code instead of ``init_latent``: [D] or [B, D] (space ``'w'``); [D] or [B, D]
                (repeated over the layers), [1, n, D] or [B, n, D] (``'wplus'``). E.g. an encoder's ``wplus``.
            seed: an int (every image uses this seed, so an image's result does not depend on its batch or its
                position in it) or one int per image. Each image's noise-map initialisation and code noise are
                drawn from its own ``torch.Generator`` on the CPU, so results are identical across devices up to
                rounding.
            progress: show a tqdm bar.
            images: which images to render at the end (``'wplus'``, ``'w'``; default all of :attr:`image_names`).
        Returns:
            dict with ``wplus`` [B, n, D] (the optimised code); in space ``'w'`` also ``w`` [B, D] (the code) and
            ``image_w``, the same image as ``image_wplus`` (w repeated is the W+ code). In space ``'wplus'`` there
            is no single code, so no ``w`` (like pSp). ``image_wplus`` [B, 3, S, S] at the generator's resolution,
            unclamped, rendered without code noise and with the optimised noise maps; ``noise``: list of
            ``num_layers`` maps [B, 1, r, r] used for the renders (the generator's constant buffers expanded to
            B when ``optimize_noise=False``); ``loss_history`` [steps, B]: the per-sample image loss at every step
            (on the noisy code, as optimised, without the noise regulariser); ``loss`` [B]: the image loss of the
            final render. All detached, on the generator's device.
        """
        G = self.generator
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Projector.project: x must be [B, 3, H, W] in [-1, 1]; got {tuple(x.shape)}")
        if x.shape[-2] > G.size or x.shape[-1] > G.size:
            raise ValueError(f"Projector.project: x is {x.shape[-2]}x{x.shape[-1]}, larger than the generator's "
                             f"{G.size}x{G.size}; downsample it first")
        if steps < 1:
            raise ValueError(f"Projector.project: steps must be >= 1; got {steps}")
        names = self.image_names if images is None else tuple(images)
        bad = [nm for nm in names if nm not in self.image_names]
        if bad:
            raise ValueError(f"Projector.project: space {self.space!r} renders {self.image_names}; unknown {bad}")

        device = self._device
        x = x.detach().to(device, torch.float32)
        batch = x.shape[0]
        rngs = [torch.Generator().manual_seed(s) for s in self._seeds(seed, batch)]

        code = self._initial_code(batch, init).requires_grad_(True)
        if self.optimize_noise:
            per_sample = [[torch.randn(shape[1:], generator=g) for shape in self._noise_shapes()] for g in rngs]
            noises = [torch.stack([maps[i] for maps in per_sample]).to(device).requires_grad_(True)
                      for i in range(G.num_layers)]
            params = [code, *noises]
        else:
            noises, params = None, [code]
        opt = torch.optim.Adam(params, lr=self.lr, betas=self.betas)

        history = []
        bar = tqdm(range(steps), desc=f"projection ({self.space})", disable=not progress, leave=False)
        with torch.enable_grad():
            for step in bar:
                lr = learning_rate_at(step, steps, self.lr, self.lr_rampdown, self.lr_rampup)
                for group in opt.param_groups:
                    group["lr"] = lr
                scale = w_noise_scale_at(step, steps, self.w_std, self.initial_noise_factor, self.noise_ramp)
                ws = code
                if scale > 0:
                    w_noise = torch.stack([torch.randn(code.shape[1:], generator=g) for g in rngs]).to(device)
                    ws = code + scale * w_noise
                image = G.synthesis(ws, noise_mode="const", noise=noises)
                dist = self.image_loss(image, x)
                loss = dist
                if self.optimize_noise and self.noise_reg_weight > 0:
                    loss = loss + self.noise_reg_weight * noise_regularization(noises)
                grads = torch.autograd.grad(loss.sum(), params)
                for p, grad in zip(params, grads):
                    p.grad = grad
                opt.step()
                if self.optimize_noise:
                    renormalize_noise(noises)
                history.append(dist.detach())
                if progress and (step % 10 == 0 or step == steps - 1):
                    bar.set_postfix(loss=f"{float(history[-1].mean()):.4f}", lr=f"{lr:.4f}")
        bar.close()

        with torch.no_grad():
            code = code.detach()
            wplus = G.to_wplus(code).clone()
            if noises is None:
                final_noise = [getattr(G.noises, f"noise_{i}").expand(batch, -1, -1, -1).clone()
                               for i in range(G.num_layers)]
            else:
                final_noise = [n.detach() for n in noises]
            out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
            if self.space == "w":
                out["w"] = code
            out["wplus"] = wplus
            out["noise"] = final_noise
            image = G.synthesis(wplus, noise=final_noise)
            if "wplus" in names:
                out["image_wplus"] = image
            if "w" in names:
                out["image_w"] = image
            out["loss_history"] = torch.stack(history)
            out["loss"] = self.image_loss(image, x).detach()
        return out


class ProjectionInverter(Inverter):
    """A :class:`Projector` behind the :class:`~clcae.networks.inverters.Inverter` interface.

    ``invert(x, avg_image=None, images=None)`` projects ``x`` [B, 3, H, W] in [-1, 1] at ``input_size`` (default
    the generator's resolution) with ``steps`` steps and ``seed`` and returns :meth:`Projector.project`'s dict (keys
    as the encoder inverters: ``wplus``, ``image_wplus``, and ``w`` / ``image_w`` in space ``'w'``; plus
    ``noise``, ``loss_history``, ``loss``). ``avg_image`` is ignored. The optimisation runs with gradients enabled
    although ``invert`` is a no-grad call; the outputs are detached.

    Args:
        projector: the configured projector (its generator becomes ``decoder``).
        input_size: (H, W) of the images to invert (each at most the generator's resolution).
        steps, seed, progress: passed to :meth:`Projector.project`.
        init_fn: optional ``init_fn(x) -> code`` giving the starting code (e.g.
            ``lambda x: e4e.invert(x)["wplus"]``); default the projector's ``init_latent``.

    There is no encoder (``encoder`` is None) and no weights of its own: ``state_dict()`` holds ``decoder.*``.
    The perceptual loss lives in the projector and is not moved by ``.to()``; put it on the generator's device.
    """

    arch = "projection"
    image_names = ("wplus", "w")

    def __init__(self, projector: Projector, input_size: Sequence[int] | None = None, steps: int = 1000,
                 seed: int = 0, progress: bool = False,
                 init_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        G = projector.generator
        size = (G.size, G.size) if input_size is None else tuple(int(v) for v in input_size)
        if len(size) != 2 or size[0] > G.size or size[1] > G.size or min(size) < 1:
            raise ValueError(f"ProjectionInverter: input_size must be (H, W) with each side in [1, {G.size}]; "
                             f"got {input_size}")
        if steps < 1:
            raise ValueError(f"ProjectionInverter: steps must be >= 1; got {steps}")
        super().__init__(encoder=None, decoder=G, latent_avg=projector.init_latent, input_size=size)
        # the projector optimises in the generator's own format: invert() gives exactly Projector.project's result
        self.memory_format = torch.contiguous_format
        self.projector = projector
        self.image_names = projector.image_names
        self.steps, self.seed, self.progress = int(steps), int(seed), bool(progress)
        self.init_fn = init_fn

    @property
    def config(self) -> dict:
        """Plain-data description (generator config, input size, projector options, steps, seed)."""
        return dict(arch=self.arch, generator=dict(self.decoder.config), input_size=list(self.input_size),
                    projector=self.projector.config, steps=self.steps, seed=self.seed)

    def forward(self, x: torch.Tensor, avg_image: torch.Tensor | None = None,
                images: Iterable[str] | None = None) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        self._check_input(x)
        images = self._image_set(images)
        init = None
        if self.init_fn is not None:
            with torch.no_grad():
                init = self.init_fn(x)
        return self.projector.project(x, steps=self.steps, init=init, seed=self.seed, progress=self.progress,
                                      images=images)
