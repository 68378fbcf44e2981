"""Channels-last memory format, used only where PyTorch's CPU convolutions are safe with it.

Why a guard: with torch 2.14.1 on x86 CPUs with AVX-512 (Intel Xeon, oneDNN), the backward of a **1×1 convolution
with stride > 1** corrupts the heap when it runs in channels-last with few channels: the process aborts
(``corrupted size vs. prev_size``, ``double free``) or segfaults, sometimes only at exit. Measured on a 2-core
Intel Xeon (AVX-512, bf16, AMX), batch 16, 64×64 input, ``MALLOC_CHECK_=3``: it crashes for every tried pair with
``in_channels < 16`` and ``out_channels <= 16`` (3, 4, 8, 12, 15 in; 3, 8, 16 out), and either the input or the
weight being channels-last is enough; 16 or more input channels, 32 or more output channels, any 3×3 or 2×2 kernel,
transposed convolutions and padded 1×1 convolutions ran clean. The input size matters too (8 channels: 64 and 128
crashed; 31, 32, 33, 63, 65, 127, 255 did not), so a shape that runs clean today is no proof of safety. AVX2-only CPUs (AMD EPYC) did not crash. The
domain network's shortcut and StyleGAN2's discriminator skip are such convolutions, and small test networks hit
the crash region.

So :func:`to_channels_last` converts a module to channels-last except for the convolutions of
:func:`channels_last_unsafe` (1×1, stride > 1, fewer than :data:`SAFE_MIN_CHANNELS` input or output channels: a
factor 2 of margin over the measured crash region, because heap corruption can also pass silently). On a CPU
those run in the contiguous format, input and weight alike. They are the cheapest convolutions of any network
(one multiply per input channel and output pixel), so nothing measurable is lost: see ``docs/PERFORMANCE.md``.
The guard applies on every CPU kind so that numbers are computed the same way on AMD and Intel machines.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SAFE_MIN_CHANNELS", "channels_last_unsafe", "to_channels_last", "guarded_convolutions"]

#: 1×1 strided convolutions with fewer input or output channels than this stay in the contiguous format on CPU.
SAFE_MIN_CHANNELS = 32


def channels_last_unsafe(in_channels: int, out_channels: int, kernel_size: tuple[int, int] | int,
                         stride: tuple[int, int] | int) -> bool:
    """True for a convolution geometry that must not run in channels-last on a CPU (see the module docstring)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
    return (kh, kw) == (1, 1) and max(sh, sw) > 1 and min(in_channels, out_channels) < SAFE_MIN_CHANNELS


def _geometry(module: nn.Module) -> tuple[int, int, tuple[int, int], int | tuple[int, int]] | None:
    """(in, out, kernel, stride) of a plain convolution module (``nn.Conv2d`` or a layer with a 4-D ``weight``
    ``[out, in, kh, kw]`` and a ``stride`` attribute, like :class:`~clcae.networks.layers.EqualConv2d`)."""
    if isinstance(module, nn.ConvTranspose2d):
        return None
    weight = getattr(module, "weight", None)
    stride = getattr(module, "stride", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or stride is None:
        return None
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return None
    out_ch, in_ch, kh, kw = weight.shape
    return int(in_ch), int(out_ch), (int(kh), int(kw)), stride


def _standard(t: torch.Tensor) -> bool:
    """True if ``t`` has the contiguous format's strides (``is_contiguous()`` also says True for channels-last
    tensors whose channel or spatial sizes are 1, and oneDNN then picks its channels-last kernel)."""
    return t.stride() == torch.empty(t.shape, device="meta").stride()


def _contiguous_on_cpu(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of a guarded convolution: on a CPU, run it with a contiguous-format input and weight."""
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        return None
    if not _standard(module.weight):  # a later .to(memory_format=...) re-strided it
        module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
    if _standard(x):
        return None
    return (x.clone(memory_format=torch.contiguous_format),) + tuple(args[1:])


def guarded_convolutions(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` that :func:`to_channels_last` keeps in the contiguous format."""
    return [name for name, m in module.named_modules() if getattr(m, "_clcae_contiguous_guard", None) is not None]


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module.to(memory_format=torch.channels_last)`` except for the convolutions that
    :func:`channels_last_unsafe` names, which keep contiguous inputs and weights on a CPU (a forward pre-hook;
    idempotent). Returns ``module``. Inputs should still be made channels-last by the caller."""
    module.to(memory_format=torch.channels_last)
    for m in module.modules():
        geometry = _geometry(m)
        if geometry is None or not channels_last_unsafe(*geometry):
            continue
        m.weight.data = m.weight.data.clone(memory_format=torch.contiguous_format)
        if getattr(m, "_clcae_contiguous_guard", None) is None:
            m._clcae_contiguous_guard = m.register_forward_pre_hook(_contiguous_on_cpu)
    return module
