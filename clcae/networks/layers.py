"""StyleGAN2 building blocks in rosinality's parameter layout.

Every module here keeps the parameter and buffer names of rosinality's ``stylegan2-pytorch`` (as vendored by
pSp, e4e and CLCAE), so released checkpoints load strictly. Modules that call a custom op carry an ``impl``
attribute (``'auto'|'cuda'|'fast'|'ref'``) set through :func:`set_impl`; ``'ref'`` reproduces the reference
implementation's arithmetic (grouped modulated convolution, reference ``upfirdn2d``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import fused_leaky_relu, separable_factors, upfirdn2d, upfirdn2d_separable

__all__ = [
    "make_kernel", "PixelNorm", "EqualLinear", "EqualConv2d", "FusedLeakyReLU", "Blur", "Upsample",
    "ModulatedConv2d", "NoiseInjection", "ConstantInput", "StyledConv", "ToRGB", "ConvLayer", "ResBlock",
    "set_impl", "IMPLS",
]

IMPLS = ("auto", "cuda", "fast", "ref")


def set_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set the op implementation of every submodule that has one; returns ``module``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    for m in module.modules():
        if hasattr(m, "impl"):
            m.impl = impl
    return module


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """A 2-D FIR kernel from a 1-D list (outer product), normalised to sum 1."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square: ``x * rsqrt(mean(x^2) + 1e-8)`` over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight ``* lr_mul / sqrt(in_dim)`` at run time.

    ``activation='fused_lrelu'`` applies the fused bias + leaky ReLU (gain sqrt 2).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, self.bias * self.lr_mul if self.bias is not None else None, impl=self.impl)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (weight ``/ sqrt(fan_in)`` at run time)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias then leaky ReLU (slope 0.2) times sqrt(2); parameter ``bias`` [C]."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2, scale: float = math.sqrt(2)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale
        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale, impl=self.impl)


class _FIRFilter(nn.Module):
    """A module that owns a fixed FIR ``kernel`` buffer and filters with it.

    The kernel is prepared once, not per call: its separable factors are computed (one SVD) the first time the
    PyTorch fast path runs and kept until the buffer changes (a checkpoint load, a ``.to()``), so each call is two
    depthwise 1-D convolutions. ``impl='ref'``, and CUDA tensors (the CUDA kernel), use :func:`upfirdn2d` with the
    2-D kernel as before.
    """

    up = 1

    def _factors(self, channels: int | None = None) -> tuple[torch.Tensor, ...] | None:
        """``(ky, kx)`` of the kernel, or None if it is not separable; with ``channels``, ``(wy, wx, wy reversed,
        wx reversed)``, the factors repeated per channel as depthwise weights ``[C, 1, K, 1]`` / ``[C, 1, 1, K]``
        (cached too, so a trace sees constants)."""
        k = self.kernel
        key = (k.data_ptr(), k._version, k.device, k.dtype)
        if getattr(self, "_factors_key", None) != key:
            self._factors_cache = separable_factors(k)
            self._factors_key = key
            self._depthwise_cache = {}
        factors = self._factors_cache
        if factors is None or channels is None:
            return factors
        if channels not in self._depthwise_cache:
            ky, kx = factors
            wy = ky.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)
            wx = kx.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
            self._depthwise_cache[channels] = (wy, wx, wy.flip(2).contiguous(), wx.flip(3).contiguous())
        return self._depthwise_cache[channels]

    def filter(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Filter ``x`` [B, C, H, W]; ``bias`` [C] (optional) is added to the result."""
        p0, p1 = self.pad
        pad = (p0, p1, p0, p1)
        if self.impl != "ref" and not (x.is_cuda and self.impl in ("auto", "cuda")):
            factors = self._factors(int(x.shape[1]))
            if factors is not None:
                return upfirdn2d_separable(x, factors[0], factors[1], up=self.up, pad=pad, bias=bias,
                                           flipped=factors[2:])
        out = upfirdn2d(x, self.kernel, up=self.up, pad=pad, impl=self.impl)
        return out if bias is None else out + bias.reshape(1, -1, 1, 1).to(out.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter(x)


class Blur(_FIRFilter):
    """FIR low-pass filter with padding ``(p0, p1)`` on both axes; buffer ``kernel`` (scaled by ``factor**2`` when it
    follows an upsampling transposed convolution)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)
        self.impl = "auto"


class Upsample(_FIRFilter):
    """2x FIR upsampling (zero insertion + filter, kernel scaled by ``factor**2``); buffer ``kernel``."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = self.up = factor
        self.register_buffer("kernel", make_kernel(kernel) * (factor ** 2))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.impl = "auto"


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2), optionally with 2x upsampling (transposed conv + blur).

    Parameters: ``weight`` [1, out, in, k, k], ``modulation`` (EqualLinear style_dim -> in, bias init 1).
    Forward: ``x`` [B, in, H, W], ``style`` [B, style_dim] -> [B, out, H', W'].

    Two arithmetic forms give the same function: the *grouped* form (rosinality's: build one weight per sample and
    run a grouped convolution) and the *unfused* form (scale the input by the style, convolve with the shared
    weight, scale the output by the demodulation). ``impl='ref'`` always uses the grouped form; otherwise
    ``fused`` (``'auto'|True|False``) chooses, ``'auto'`` picking the unfused form on CPU when gradients are
    taken over a batch (training), where it measured faster, and the grouped form otherwise.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            pad0 = (p + 1) // 2 + factor - 1
            pad1 = p // 2 + 1
            self.blur = Blur(blur_kernel, pad=(pad0, pad1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate
        self.impl = "auto"
        self.fused: str | bool = "auto"

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"demodulate={self.demodulate}")

    def _use_grouped(self, x: torch.Tensor) -> bool:
        if self.impl == "ref":
            return True
        if self.fused != "auto":
            return bool(self.fused)
        if x.is_cuda:
            return True
        if torch.is_grad_enabled():
            # Measured on a 2-core CPU (docs/PERFORMANCE.md): the unfused form is ~2x faster for training
            # (gradients, batch > 1); at batch 1 the grouped form is one plain convolution.
            return x.shape[0] == 1
        # Inference, chosen per layer shape: the grouped form builds B weights (out * in * k^2 each), the unfused
        # one scales the input (in * H * W per sample); the cheaper preparation wins (bench_inversion.py). A batch
        # in channels-last runs unfused: the grouped form's [1, B*C, H, W] view does not exist in that format.
        if x.shape[0] > 1 and not x.is_contiguous():
            return False
        return self.out_channel * self.kernel_size ** 2 <= x.shape[2] * x.shape[3]

    def _fast_inference(self) -> bool:
        return self.impl != "ref" and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor, style: torch.Tensor, gain: float = 1.0,
                bias: torch.Tensor | None = None, add: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, in, H, W], style [B, style_dim] -> ``gain * conv + add + bias`` [B, out, H', W'] (``bias`` [out]
        and ``add`` [B, 1, H', W'] (e.g. the scaled noise) optional; ``gain``, ``add`` and ``bias`` let a caller
        fuse its epilogue into the convolution's own element-wise passes)."""
        b, c, h, w = x.shape
        if c != self.in_channel:
            raise ValueError(f"ModulatedConv2d expects {self.in_channel} input channels; got {tuple(x.shape)}")
        s = self.modulation(style)  # [B, in]
        if self._fast_inference() and add is None:
            return self._forward_inference(x, s, gain, bias)
        if self._use_grouped(x):
            out = self._forward_grouped(x, s)
            if gain != 1.0:
                out = out * gain
            if add is not None:
                out = out + add.to(out.dtype)
        else:
            out = self._forward_unfused(x, s, gain, add)
        return out if bias is None else out + bias.reshape(1, -1, 1, 1).to(out.dtype)

    def _weight_sq(self) -> torch.Tensor:
        """``sum_k (scale * weight)^2`` [out, in], cached while the weight is unchanged (inference only)."""
        wt = self.weight
        key = (wt.data_ptr(), wt._version, wt.dtype, wt.device)
        if getattr(self, "_wsq_key", None) != key:
            self._wsq = (self.scale * wt.squeeze(0)).pow(2).sum([2, 3])
            self._wsq_key = key
        return self._wsq

    def _forward_inference(self, x: torch.Tensor, s: torch.Tensor, gain: float,
                           bias: torch.Tensor | None) -> torch.Tensor:
        """No-gradient forward: the per-sample scale ``s * demod * gain`` is built as a [B, out, in] coefficient and
        applied to the weight in one pass (grouped form), or to input and output (unfused form); ``bias`` goes into
        the convolution (or the blur after an upsampling one). Equal to the reference up to float rounding."""
        b, c, h, w = (int(v) for v in x.shape)  # plain ints: a traced graph gets static weight shapes
        k, o = self.kernel_size, self.out_channel
        demod = torch.rsqrt(s.pow(2) @ self._weight_sq().t() + self.eps) if self.demodulate else None  # [B, out]
        out_scale = demod * gain if demod is not None else None
        if self._use_grouped(x):
            coef = s.view(b, 1, c) * self.scale
            coef = coef * out_scale.view(b, o, 1) if out_scale is not None else (coef * gain).expand(b, o, c)
            weight = self.weight.squeeze(0).unsqueeze(0) * coef.reshape(b, o, c, 1, 1)  # [B, out, in, k, k]
            weight = weight.to(x.dtype)
            # batch 1: x itself (a reshape would re-stride a channels-last tensor into the contiguous format)
            if self.upsample:
                xg = x if b == 1 else x.reshape(1, b * c, h, w)
                weight = weight.transpose(1, 2).reshape(b * c, o, k, k)
                out = F.conv_transpose2d(xg, weight, padding=0, stride=2, groups=b)
                if b > 1:
                    out = out.reshape(b, o, out.shape[2], out.shape[3])
                return self.blur.filter(out, bias)
            xg = x if b == 1 else x.reshape(1, b * c, h, w)
            gbias = None if bias is None else bias.to(x.dtype).repeat(b)
            out = F.conv2d(xg, weight.reshape(b * o, c, k, k), bias=gbias, padding=self.padding, groups=b)
            return out if b == 1 else out.reshape(b, o, out.shape[2], out.shape[3])
        weight = (self.scale * self.weight.squeeze(0)).to(x.dtype)
        xs = x * s.view(b, c, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(xs, weight.transpose(0, 1), padding=0, stride=2)
        else:
            out = F.conv2d(xs, weight, padding=self.padding)
        scale = (out_scale if out_scale is not None else s.new_full((b, o), gain)).view(b, o, 1, 1).to(out.dtype)
        if self.upsample:
            out = out.mul_(scale)
            return self.blur.filter(out, bias)
        if bias is None:
            return out.mul_(scale)
        return torch.addcmul(bias.view(1, o, 1, 1).to(out.dtype), out, scale)

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = (int(v) for v in x.shape)  # ints: an exported graph gets a static kernel shape
        k = self.kernel_size
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(b, self.out_channel, 1, 1, 1)
        if self.upsample:
            x = x.reshape(1, b * c, h, w)
            weight = weight.view(b, self.out_channel, c, k, k).transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.reshape(b, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        x = x.reshape(1, b * c, h, w)
        weight = weight.view(b * self.out_channel, c, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_channel, out.shape[2], out.shape[3])

    def _forward_unfused(self, x: torch.Tensor, s: torch.Tensor, gain: float = 1.0,
                         add: torch.Tensor | None = None) -> torch.Tensor:
        """``gain * conv + add`` in the unfused form: the input scaled by the style, one shared convolution (and the
        blur after an upsampling one), then the demodulation, the gain and ``add`` in one pass (``addcmul``). The
        blur is applied before the per-sample, per-channel scale, with which it commutes."""
        b, c = x.shape[:2]
        weight = self.scale * self.weight.squeeze(0)  # [out, in, k, k]
        if self.kernel_size == 1 and not self.upsample:
            out = self._pointwise(x, weight, s)
        else:
            x = x * s.view(b, c, 1, 1).to(x.dtype)
            if self.upsample:
                out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2))
            else:
                out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            w2 = weight.pow(2).sum([2, 3])  # [out, in]
            scale = torch.rsqrt(s.pow(2) @ w2.t() + self.eps)  # [B, out]
            if gain != 1.0:
                scale = scale * gain
            scale = scale.view(b, self.out_channel, 1, 1).to(out.dtype)
            return out * scale if add is None else torch.addcmul(add.to(out.dtype), out, scale)
        if gain != 1.0:
            out = out * gain
        return out if add is None else out + add.to(out.dtype)

    def _pointwise(self, x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """A 1x1 convolution with the per-sample weight ``weight * s`` as one batched matrix product (ToRGB): no
        style-scaled copy of ``x``, and its backward reads ``x`` once for the style's gradient. Keeps the format
        of ``x`` (channels-last or contiguous)."""
        b, c, h, w = (int(v) for v in x.shape)
        o = self.out_channel
        wb = weight.reshape(1, o, c) * s.view(b, 1, c).to(weight.dtype)  # [B, out, in]
        wb = wb.to(x.dtype)
        if x.is_contiguous():
            return torch.bmm(wb, x.reshape(b, c, h * w)).view(b, o, h, w)
        xl = x.permute(0, 2, 3, 1)  # [B, H, W, C]: a view of a channels-last x
        return torch.bmm(xl.reshape(b, h * w, c), wb.transpose(1, 2)).view(b, h, w, o).permute(0, 3, 1, 2)


class NoiseInjection(nn.Module):
    """Adds ``weight * noise`` (learned scalar ``weight`` [1]); ``noise`` [B or 1, 1, H, W]; fresh N(0,1) if None."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned constant ``input`` [1, C, size, size] repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> noise -> fused bias + leaky ReLU (rosinality ``StyledConv``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True, clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        act = self.activate
        if self.conv._fast_inference() and act.bias is not None and act.scale > 0:
            # inference: leaky_relu(z) * g == leaky_relu(g * z) for g > 0, so the gain and the bias go into the
            # convolution and the noise is added in place: two passes over the output instead of five
            g = act.scale
            out = self.conv(x, style, gain=g, bias=act.bias * g)
            if noise is None:
                noise = out.new_empty(out.shape[0], 1, out.shape[2], out.shape[3]).normal_()
            out = out.add_(noise.to(out.dtype) * (self.noise.weight * g).to(out.dtype))
            out = F.leaky_relu_(out, act.negative_slope)
        elif (self.conv.impl != "ref" and act.bias is not None and act.scale > 0 and not x.is_cuda
              and not torch.is_autocast_enabled(x.device.type)):
            # with gradients, the same identity: the demodulation, the gain and the noise go into one addcmul, the
            # bias into one in-place add, then an in-place leaky ReLU (three passes over the output instead of six)
            g = act.scale
            if noise is None:
                noise = self._fresh_noise(x, 2 if self.conv.upsample else 1)
            out = self.conv(x, style, gain=g, add=noise.to(x.dtype) * (self.noise.weight * g).to(x.dtype))
            out = out.add_((act.bias * g).reshape(1, -1, 1, 1).to(out.dtype))
            out = F.leaky_relu_(out, act.negative_slope)
        else:
            out = act(self.noise(self.conv(x, style), noise=noise))
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)

    @staticmethod
    def _fresh_noise(x: torch.Tensor, up: int) -> torch.Tensor:
        """N(0, 1) noise [B, 1, H * up, W * up], drawn as :class:`NoiseInjection` draws it (same numbers)."""
        b, _, h, w = x.shape
        return x.new_empty(b, 1, h * up, w * up).normal_()


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus ``bias`` [1,3,1,1] (optionally clamped), added to the
    upsampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), clamp: float | None = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.conv._fast_inference():
            out = self.conv(x, style, bias=self.bias.reshape(-1))
        else:
            out = self.conv(x, style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU], as an indexed Sequential (keys ``0.kernel``, ``1.weight``, ...)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block: two 3x3 convs (the second downsampling) plus a blurred 1x1 skip, / sqrt 2."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, activate=False,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return (out + self.skip(x)) / math.sqrt(2)
