"""The pure-PyTorch implementations of :mod:`clcae.ops` (``impl='ref'`` and ``impl='fast'``) and their argument checks.

The public front-ends (:func:`clcae.ops.upfirdn2d`, :func:`clcae.ops.fused_leaky_relu`) dispatch between these and the
CUDA kernels of :mod:`clcae.ops._cuda_ops`; both of those import from here, and nothing here imports them back.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_SLOPE = 0.2
DEFAULT_SCALE = math.sqrt(2.0)


# ------------------------------------------------------------------------------------------------ upfirdn2d
def parse_pad(pad: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Normalise ``pad`` to ``(x0, x1, y0, y1)``; an int or a pair ``(px, py)`` is expanded."""
    if isinstance(pad, int):
        return (pad, pad, pad, pad)
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    if len(pad) != 4:
        raise ValueError(f"pad must be an int, (px, py) or (x0, x1, y0, y1); got {pad!r}")
    return pad  # type: ignore[return-value]


def _parse_factor(f: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(f, int):
        fx = fy = f
    else:
        fx, fy = (int(v) for v in f)
    if fx < 1 or fy < 1:
        raise ValueError(f"{name} must be >= 1; got {f!r}")
    return fx, fy


def _check(x: torch.Tensor, kernel: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W]; got {tuple(x.shape)}")
    if kernel.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d expects a 1-D or 2-D kernel; got shape {tuple(kernel.shape)}")


def _as_2d(kernel: torch.Tensor) -> torch.Tensor:
    return kernel.outer(kernel) if kernel.ndim == 1 else kernel


def _out_size(size: int, up: int, p0: int, p1: int, k: int, down: int) -> int:
    return (size * up + p0 + p1 - k) // down + 1


def upfirdn2d_ref(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0)) -> torch.Tensor:
    """Reference ``upfirdn2d``.

    Args:
        x: ``[N, C, H, W]``.
        kernel: ``[kh, kw]`` FIR filter (a 1-D kernel ``k`` means the separable ``outer(k, k)``).
        up, down: integer factors (an int or ``(fx, fy)``).
        pad: ``(x0, x1, y0, y1)`` padding of the upsampled image; negative values crop.
    Returns:
        ``[N, C, H', W']`` with ``H' = (H*up_y + y0 + y1 - kh) // down_y + 1`` (likewise ``W'``).
    """
    _check(x, kernel)
    upx, upy = _parse_factor(up, "up")
    downx, downy = _parse_factor(down, "down")
    x0, x1, y0, y1 = parse_pad(pad)
    k = _as_2d(kernel).to(x.dtype)
    n, c, h, w = (int(v) for v in x.shape)
    # zero insertion: place each sample at the top-left of an up_y x up_x cell
    out = x.reshape(n * c, h, 1, w, 1)
    out = F.pad(out, [0, upx - 1, 0, 0, 0, upy - 1])
    out = out.reshape(n * c, 1, h * upy, w * upx)
    # positive padding adds zeros, negative padding crops
    out = F.pad(out, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    out = out[:, :, max(-y0, 0): out.shape[2] - max(-y1, 0), max(-x0, 0): out.shape[3] - max(-x1, 0)]
    # true convolution: conv2d computes correlation, so flip the kernel
    out = F.conv2d(out, k.flip([0, 1]).reshape(1, 1, *k.shape))
    out = out[:, :, ::downy, ::downx]
    return out.reshape(n, c, out.shape[2], out.shape[3])


_SEPARABLE_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor] | None] = {}


def _separable(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return ``(ky, kx)`` with ``k == outer(ky, kx)`` exactly enough for fp32, else None.

    The factorisation (an SVD) is cached by the kernel's values, so a network's fixed filters cost it once.
    """
    if k.ndim == 1:
        return k, k
    if k.shape[0] == 1 or k.shape[1] == 1:
        return None
    key = (tuple(k.shape), k.dtype, k.device, tuple(k.detach().reshape(-1).tolist()))
    if key not in _SEPARABLE_CACHE:
        if len(_SEPARABLE_CACHE) > 256:
            _SEPARABLE_CACHE.clear()
        _SEPARABLE_CACHE[key] = _factorise(k)
    return _SEPARABLE_CACHE[key]


def separable_factors(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(ky, kx)`` with ``kernel == outer(ky, kx)`` to float precision (a 1-D kernel ``k`` gives ``(k, k)``), or None
    for a kernel that is not separable. Computed by an SVD in float64, once: modules that own a fixed kernel keep
    the result (see :class:`clcae.networks.layers.Blur`) and call :func:`upfirdn2d_separable`."""
    if kernel.ndim == 1:
        return kernel, kernel
    if kernel.shape[0] == 1 or kernel.shape[1] == 1:
        return None
    return _factorise(kernel)


def _factorise(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    with torch.no_grad():
        kd = k.detach().double()
        u, s, vh = torch.linalg.svd(kd)
        if s.numel() > 1 and s[1] > 1e-7 * s[0]:
            return None
        ky = (u[:, 0] * s[0].sqrt())
        kx = (vh[0] * s[0].sqrt())
        if (ky.outer(kx) - kd).abs().max() > 1e-7 * kd.abs().max():
            return None
    return ky.to(k.dtype), kx.to(k.dtype)


def upfirdn2d_fast(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0)) -> torch.Tensor:
    """Faster pure-PyTorch ``upfirdn2d``: depthwise convolution, separable when the kernel is.

    Same arguments and result as :func:`upfirdn2d_ref`. Gradients are taken by autograd through standard ops.
    On CPU, reduced-precision inputs (and autocast) are computed in float32 and cast back: CPU depthwise
    convolutions have no fast bf16/fp16 kernel (measured 7x slower than float32 on an AVX2 machine).
    """
    _check(x, kernel)
    if x.device.type == "cpu" and (x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            return _upfirdn2d_fast(x.float(), kernel.float(), up, down, pad).to(x.dtype)
    return _upfirdn2d_fast(x, kernel, up, down, pad)


def _upfirdn2d_fast(x: torch.Tensor, kernel: torch.Tensor, up, down, pad) -> torch.Tensor:
    upx, upy = _parse_factor(up, "up")
    downx, downy = _parse_factor(down, "down")
    x0, x1, y0, y1 = parse_pad(pad)
    n, c, h, w = x.shape
    # _separable factors the kernel outside autograd: a kernel that needs a gradient takes the 2-D path
    sep = None if kernel.ndim == 2 and kernel.requires_grad and torch.is_grad_enabled() else _separable(kernel)
    k2 = _as_2d(kernel).to(x.dtype)
    if upx > 1 or upy > 1:
        # zero insertion via strides is what conv_transpose does; build it cheaply with a strided view write
        up_x = x.new_zeros(n, c, h * upy, w * upx)
        up_x[:, :, ::upy, ::upx] = x
        x = up_x
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    if sep is not None:
        ky, kx = (t.to(x.dtype) for t in sep)
        wy = ky.flip(0).reshape(1, 1, -1, 1).expand(c, 1, -1, 1)
        wx = kx.flip(0).reshape(1, 1, 1, -1).expand(c, 1, 1, -1)
        x = F.conv2d(x, wy, stride=(downy, 1), groups=c)
        x = F.conv2d(x, wx, stride=(1, downx), groups=c)
        return x
    wk = k2.flip([0, 1]).reshape(1, 1, *k2.shape).expand(c, 1, *k2.shape)
    return F.conv2d(x, wk, stride=(downy, downx), groups=c)


def upfirdn2d_separable(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0),
                        bias: torch.Tensor | None = None,
                        flipped: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``upfirdn2d(x, outer(ky, kx), up, down, pad)`` (+ ``bias`` [C] per channel, added by the last pass for free)
    with the factors already known: two depthwise 1-D passes, no factorisation, nothing but standard convolutions
    (so it traces and exports). ``ky``/``kx`` are 1-D, or already repeated per channel as ``[C, 1, K, 1]`` /
    ``[C, 1, 1, K]`` (what a module caches, so that a trace holds them as constants); ``flipped`` optionally gives
    the same two reversed (else reversed here). Same result as
    :func:`upfirdn2d_ref` up to float rounding; autograd gives gradients for ``x``. On CPU, bf16/fp16 inputs are
    computed in float32 (no fast reduced-precision depthwise kernels)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W]; got {tuple(x.shape)}")
    if x.device.type == "cpu" and (x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            return upfirdn2d_separable(x.float(), ky.float(), kx.float(), up, down, pad,
                                       None if bias is None else bias.float(),
                                       None if flipped is None else tuple(t.float() for t in flipped)).to(x.dtype)
    upx, upy = _parse_factor(up, "up")
    downx, downy = _parse_factor(down, "down")
    x0, x1, y0, y1 = parse_pad(pad)
    c = int(x.shape[1])
    wy = (ky if ky.ndim == 4 else ky.reshape(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous()).to(x.dtype)
    wx = (kx if kx.ndim == 4 else kx.reshape(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous()).to(x.dtype)
    b = None if bias is None else bias.to(x.dtype)
    # (A transposed-convolution upsampling path was tried here and removed: its grouped backward changes with the
    # batch size in the last bits, and using it only without gradients made a no-grad render differ in the last
    # bits from the same render with gradients; both broke exact-equality tests.)
    if upx == upy == 1 and x0 == x1 >= 0 and y0 == y1 >= 0:
        py, px = y0, x0  # symmetric padding: the convolutions pad, no padded copy of x
    else:
        x, py, px = _upsample_pad(x, upx, upy, (x0, x1, y0, y1)), 0, 0
    # conv2d correlates: reversed filters for a true convolution
    wy, wx = (wy.flip(2), wx.flip(3)) if flipped is None else (flipped[0].to(x.dtype), flipped[1].to(x.dtype))
    x = F.conv2d(x, wy, stride=(downy, 1), padding=(py, 0), groups=c)
    return F.conv2d(x, wx, bias=b, stride=(1, downx), padding=(0, px), groups=c)


def _upsample_pad(x: torch.Tensor, upx: int, upy: int, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero insertion (a strided write) then padding (negative values crop)."""
    x0, x1, y0, y1 = pad
    n, c, h, w = x.shape
    if upx > 1 or upy > 1:
        up_x = torch.empty((n, c, h * upy, w * upx), dtype=x.dtype, device=x.device,
                           memory_format=_format_of(x)).zero_()
        up_x[:, :, ::upy, ::upx] = x
        x = up_x
    if max(x0, x1, y0, y1) > 0:
        x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    if min(x0, x1, y0, y1) < 0:
        x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    return x


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if (x.ndim == 4 and not x.is_contiguous()
                                   and x.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format


# ------------------------------------------------------------------------------------------------ bias + lrelu
def _bias_view(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if bias.ndim != 1 or x.ndim < 2 or bias.shape[0] != x.shape[1]:
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match channel dim of x {tuple(x.shape)}")
    return bias.reshape((1, -1) + (1,) * (x.ndim - 2)).to(x.dtype)


def fused_leaky_relu_ref(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = DEFAULT_SLOPE,
                         scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Reference: ``leaky_relu(x + bias[None, :, None...], negative_slope) * scale`` (bias optional)."""
    if bias is not None:
        x = x + _bias_view(x, bias)
    return F.leaky_relu(x, negative_slope) * scale
