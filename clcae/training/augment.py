"""Differentiable augmentation with an adaptive probability (a small ADA, Karras et al. 2020).

The discriminator sees every image (real and generated, in every loss term) through the same random pipeline, so
it cannot learn the augmentations and they do not leak into the generator. Each transform is applied to each image
independently with probability ``p``:

- geometric: x-flip, rotation by a multiple of 90 degrees, integer translation by up to 1/8 of the image (reflect
  padding);
- colour: brightness (``+ N(0, 0.2)``), contrast (``* 2^N(0, 0.5)``), saturation (``2^N(0, 1)`` around the grey axis).

Every transform is differentiable in the pixels (gradients flow to G and through R1). ``p`` adapts with the
``r_t = E[sign(D(real))]`` overfitting heuristic: every ``interval`` steps, ``p`` moves by
``sign(r_t - target) * images / (speed_kimg * 1000)``, so it can go from 0 to 1 in ``speed_kimg`` thousand images.

:class:`DiffAugment` is the fixed-policy alternative of Zhao et al. 2020 (*Differentiable Augmentation for
Data-Efficient GAN Training*), which Projected GAN also uses: every image D sees goes through every transform of the
policy, always (no probability, nothing adapts):

- ``color``: brightness ``+ U(-0.5, 0.5)``, saturation ``* U(0, 2)`` around the per-pixel channel mean, contrast
  ``* U(0.5, 1.5)`` around the image mean;
- ``translation``: an integer shift of up to 1/8 of the size in x and y, zero fill;
- ``cutout``: a square of half the size, at a random centre (clipped at the border), set to zero.

Random parameters are drawn on the CPU from a :class:`~clcae.data.sampler.ShardedRandom` (for the global batch,
sliced per rank), so augmenting never waits for the GPU and every rank's images get the numbers a single process
would give them.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from ..data.sampler import ShardedRandom
from ..distributed import all_reduce_sum

__all__ = ["AdaptiveAugment", "DiffAugment", "DIFFAUG_TRANSFORMS", "parse_diffaug_policy"]


class AdaptiveAugment:
    """The augmentation pipeline and its adaptive probability.

    Args:
        p: initial (or, with ``adaptive=False``, fixed) probability per transform, in [0, 1].
        adaptive: adjust ``p`` from :meth:`observe` d statistics in :meth:`update`.
        target: the ``r_t`` value to hold (0.6 in the paper).
        speed_kimg: thousand images for ``p`` to move by 1.
        interval: training steps between adjustments.
        xflip, rotate90, translate, color: enable each group of transforms.
        max_translate: largest translation as a fraction of the image size.

    Call ``augment(images, rand)`` on ``[b, 3, H, W]`` images (H == W), observe the real logits with
    :meth:`observe`, and call :meth:`update` once per training step.
    """

    def __init__(self, p: float = 0.0, adaptive: bool = True, target: float = 0.6, speed_kimg: float = 500.0,
                 interval: int = 4, xflip: bool = True, rotate90: bool = True, translate: bool = True,
                 color: bool = True, max_translate: float = 0.125):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1]; got {p}")
        if interval < 1 or speed_kimg <= 0:
            raise ValueError("interval must be >= 1 and speed_kimg > 0")
        self.p = float(p)
        self.adaptive = bool(adaptive)
        self.target = float(target)
        self.speed_kimg = float(speed_kimg)
        self.interval = int(interval)
        self.xflip, self.rotate90, self.translate, self.color = bool(xflip), bool(rotate90), bool(translate), bool(color)
        self.max_translate = float(max_translate)
        self._sign_sum = 0.0
        self._count = 0.0
        self._pending: list[torch.Tensor] = []
        self._steps = 0
        self.last_rt: float | None = None

    # ------------------------------------------------------------------ pipeline
    def __call__(self, images: torch.Tensor, rand: ShardedRandom) -> torch.Tensor:
        """Augment ``images`` ``[b, C, H, W]`` (``b`` = global batch / world size); identity when ``p == 0``."""
        if self.p <= 0:
            return images
        b, _, h, w = images.shape
        if h != w:
            raise ValueError(f"augmentation needs square images; got {h}x{w}")
        n = b * rand.world_size  # the global batch the parameters are drawn for
        dev = images.device

        def applied(values: torch.Tensor, identity: float) -> torch.Tensor:
            keep = rand.rand(n) < self.p
            shape = (-1,) + (1,) * (values.ndim - 1)
            return torch.where(keep.view(shape), values, torch.full_like(values, identity))

        x = images
        if self.xflip:
            flip = applied(rand.randint(0, 2, n).float(), 0.0).to(dev, non_blocking=True)
            x = torch.where(flip.view(-1, 1, 1, 1) > 0.5, x.flip(3), x)
        if self.rotate90:
            k = applied(rand.randint(0, 4, n).float(), 0.0).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            x = torch.where(k == 1, torch.rot90(x, 1, (2, 3)), torch.where(
                k == 2, torch.rot90(x, 2, (2, 3)), torch.where(k == 3, torch.rot90(x, 3, (2, 3)), x)))
        if self.translate:
            m = int(math.ceil(self.max_translate * h))
            t = applied(((rand.rand(n, 2) * 2 - 1) * self.max_translate * h).round().clamp(-m, m), 0.0)
            if m > 0 and bool(t.abs().max() > 0):
                x = self._translate(x, t.long().tolist(), m)
        if self.color:
            brightness = applied(rand.randn(n) * 0.2, 0.0).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            contrast = applied(torch.exp2(rand.randn(n) * 0.5), 1.0).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            saturation = applied(torch.exp2(rand.randn(n) * 1.0), 1.0).to(dev, non_blocking=True).view(-1, 1, 1, 1)
            x = x + brightness.to(x.dtype)
            x = x * contrast.to(x.dtype)
            grey = x.mean(dim=1, keepdim=True)
            x = grey + (x - grey) * saturation.to(x.dtype)
        return x

    @staticmethod
    def _translate(x: torch.Tensor, shifts: list[list[int]], m: int) -> torch.Tensor:
        """Shift image ``i`` by ``shifts[i] = (dx, dy)`` pixels with reflect padding (slicing: exact, deterministic
        gradients on every device)."""
        _, _, h, w = x.shape
        xp = F.pad(x, (m, m, m, m), mode="reflect")
        return torch.stack([xp[i, :, m - dy:m - dy + h, m - dx:m - dx + w] for i, (dx, dy) in enumerate(shifts)])

    # ------------------------------------------------------------------ adaptation
    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate ``sign(D(real))`` of this step's (augmented) reals; no device synchronisation."""
        if self.adaptive:
            s = real_logits.detach().float().sign()
            self._pending.append(torch.stack([s.sum(), s.new_tensor(float(s.numel()))]))

    def update(self, global_batch: int) -> bool:
        """Count one training step; every ``interval`` steps, average the statistics over ranks and move ``p``.

        Returns True when ``p`` was adjusted (``last_rt`` then holds the ``r_t`` used).
        """
        self._steps += 1
        if not self.adaptive or self._steps % self.interval:
            return False
        self._flush()  # sums of +-1 in float64: exact, whatever the order
        sign_sum, count = self._sign_sum, self._count
        self._sign_sum = self._count = 0.0
        if count <= 0:
            return False
        rt = sign_sum / count
        self.last_rt = rt
        step = (global_batch * self.interval) / (self.speed_kimg * 1000)
        sign = (rt > self.target) - (rt < self.target)
        self.p = float(min(max(self.p + sign * step, 0.0), 1.0))
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``{'p', 'sign_sum', 'count', 'steps', 'last_rt'}`` as python numbers.

        Collective with several processes (call it on every rank): the statistics gathered since the last
        adjustment are summed over ranks first, so the saved state is the same everywhere.
        """
        self._flush()
        return {"p": self.p, "sign_sum": self._sign_sum, "count": self._count, "steps": self._steps,
                "last_rt": self.last_rt}

    def _flush(self) -> None:
        if self._pending:
            acc = all_reduce_sum(torch.stack(self._pending).sum(0).double()).cpu()
            self._pending = []
            self._sign_sum += float(acc[0])
            self._count += float(acc[1])

    def load_state_dict(self, state: Mapping) -> None:
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = float(state["count"])
        self._steps = int(state["steps"])
        self.last_rt = state.get("last_rt")
        self._pending = []


# ---------------------------------------------------------------------------------------------------- DiffAugment
#: The transforms :class:`DiffAugment` knows, in the order it applies them.
DIFFAUG_TRANSFORMS = ("color", "translation", "cutout")


def parse_diffaug_policy(policy: str) -> tuple[str, ...]:
    """``'color,translation,cutout'`` -> ``('color', 'translation', 'cutout')`` (in :data:`DIFFAUG_TRANSFORMS`
    order); ``''`` -> ``()``. Raises ValueError on an unknown or repeated name."""
    names = [n.strip() for n in policy.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIFFAUG_TRANSFORMS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"a DiffAugment policy is a comma-separated subset of {', '.join(DIFFAUG_TRANSFORMS)}; "
                         f"got {policy!r}")
    return tuple(n for n in DIFFAUG_TRANSFORMS if n in names)


class DiffAugment:
    """DiffAugment (Zhao et al. 2020): ``color``, ``translation`` and ``cutout`` applied to every image, always.

    Args:
        policy: a comma-separated subset of :data:`DIFFAUG_TRANSFORMS` (``''``: identity).
        translation_ratio: largest shift as a fraction of the size (1/8 in the paper).
        cutout_ratio: side of the cut-out square as a fraction of the size (1/2 in the paper).

    ``augment(images, rand)`` maps ``[b, C, H, W]`` to the same shape, differentiably in the pixels; ``b`` is this
    rank's share of the global batch the parameters are drawn for (see the module docstring). Stateless.
    """

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        self.transforms = parse_diffaug_policy(policy)
        if not 0 <= translation_ratio < 1 or not 0 <= cutout_ratio <= 1:
            raise ValueError("translation_ratio must be in [0, 1) and cutout_ratio in [0, 1]")
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)

    def __call__(self, images: torch.Tensor, rand: ShardedRandom) -> torch.Tensor:
        x = images
        b, _, h, w = x.shape
        n = b * rand.world_size
        dev, dt = x.device, x.dtype
        if "color" in self.transforms:
            brightness = (rand.rand(n) - 0.5).to(dev, dt).view(-1, 1, 1, 1)
            saturation = (rand.rand(n) * 2).to(dev, dt).view(-1, 1, 1, 1)
            contrast = (rand.rand(n) + 0.5).to(dev, dt).view(-1, 1, 1, 1)
            x = x + brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * saturation + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
        if "translation" in self.transforms:
            sy, sx = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
            ty = rand.randint(-sy, sy + 1, n).to(dev)
            tx = rand.randint(-sx, sx + 1, n).to(dev)
            x = _shift_zero_fill(x, ty, tx)
        if "cutout" in self.transforms:
            ch, cw = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
            cy = rand.randint(0, h + (1 - ch % 2), n).to(dev).view(-1, 1, 1)
            cx = rand.randint(0, w + (1 - cw % 2), n).to(dev).view(-1, 1, 1)
            yy = torch.arange(h, device=dev).view(1, -1, 1)
            xx = torch.arange(w, device=dev).view(1, 1, -1)
            inside = ((yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch) & (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw))
            x = x * (~inside).unsqueeze(1).to(dt)
        return x


def _shift_zero_fill(x: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """Image ``i`` moved down by ``ty[i]`` and right by ``tx[i]`` pixels (integers), zeros where nothing moved in.

    ``out[i, :, y, x] = x[i, :, y - ty[i], x - tx[i]]`` where that pixel exists, else 0 (a gather: differentiable).
    """
    b, c, h, w = x.shape
    m_y, m_x = int(ty.abs().max()) if b else 0, int(tx.abs().max()) if b else 0
    xp = F.pad(x, (m_x, m_x, m_y, m_y))  # zero padding wide enough for every shift
    rows = (torch.arange(h, device=x.device).view(1, -1) - ty.view(-1, 1) + m_y)  # [b, h] rows of xp
    cols = (torch.arange(w, device=x.device).view(1, -1) - tx.view(-1, 1) + m_x)  # [b, w]
    idx_r = rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * m_x)
    out = xp.gather(2, idx_r)
    idx_c = cols.view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, idx_c)
