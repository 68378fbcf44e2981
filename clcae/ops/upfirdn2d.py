"""Upsample, FIR-filter, downsample (``upfirdn2d``).

``y = downsample(conv(pad(upsample(x, up)), flip(kernel)), down)`` applied to every channel independently. The kernel
is applied as a true convolution (flipped), as in rosinality's and NVIDIA's implementations, so checkpoints trained
with either give the same images.

Three implementations share one signature:

- ``ref``: pure PyTorch, written for clarity (zero insertion by reshape, explicit pad/crop, one single-channel
  ``conv2d`` over all ``N*C`` maps). It is the numerical reference; autograd gives first and second order gradients.
- ``fast``: pure PyTorch, depthwise (``groups=C``) and, for separable kernels, two 1-D passes; transposed
  convolution instead of zero insertion when upsampling. Same numbers as ``ref`` up to float rounding, several
  times faster on CPU. It is what ``impl='auto'`` uses off-GPU.
- ``cuda``: a custom CUDA kernel built on first use (see :mod:`clcae.ops._build`), with backward passes expressed
  through the same op so that double backward works.
"""
from __future__ import annotations

import torch

from .torch_impl import parse_pad, separable_factors, upfirdn2d_fast, upfirdn2d_ref, upfirdn2d_separable

__all__ = ["upfirdn2d", "upfirdn2d_ref", "upfirdn2d_fast", "upfirdn2d_separable", "separable_factors", "parse_pad"]


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0), impl: str = "auto") -> torch.Tensor:
    """Upsample by ``up``, pad by ``pad`` = ``(x0, x1, y0, y1)``, convolve with ``kernel`` (flipped), keep every
    ``down``-th sample.

    Args:
        x: ``[N, C, H, W]`` tensor on any device, any floating dtype.
        kernel: ``[kh, kw]`` (or 1-D for a separable ``outer(k, k)``) FIR filter.
        up, down: int or ``(fx, fy)``.
        pad: int, ``(px, py)`` or ``(x0, x1, y0, y1)``.
        impl: ``'auto'`` (CUDA kernel on CUDA tensors when it builds, else the fast PyTorch path), ``'cuda'``,
            ``'fast'`` or ``'ref'``.
    Returns:
        ``[N, C, H', W']`` (see :func:`upfirdn2d_ref`).
    """
    if impl == "ref":
        return upfirdn2d_ref(x, kernel, up, down, pad)
    if impl == "fast":
        return upfirdn2d_fast(x, kernel, up, down, pad)
    if impl not in ("auto", "cuda"):
        raise ValueError(f"impl must be 'auto', 'cuda', 'fast' or 'ref'; got {impl!r}")
    if x.is_cuda:
        from . import _cuda_ops

        fn = _cuda_ops.upfirdn2d_cuda_fn(required=(impl == "cuda"))
        if fn is not None:
            return fn(x, kernel, up, down, pad)
    elif impl == "cuda":
        raise RuntimeError("upfirdn2d(impl='cuda') needs a CUDA tensor; got one on " + str(x.device))
    return upfirdn2d_fast(x, kernel, up, down, pad)
