"""Fused bias + leaky ReLU with gain (StyleGAN2's ``FusedLeakyReLU``).

``y = leaky_relu(x + b, negative_slope) * scale`` with the bias broadcast over dimension 1 (channels). The default
``negative_slope=0.2, scale=sqrt(2)`` is what every StyleGAN2 checkpoint was trained with.
"""
from __future__ import annotations

import torch

from .torch_impl import DEFAULT_SCALE, DEFAULT_SLOPE, fused_leaky_relu_ref

__all__ = ["fused_leaky_relu", "fused_leaky_relu_ref", "DEFAULT_SLOPE", "DEFAULT_SCALE"]


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = DEFAULT_SLOPE,
                     scale: float = DEFAULT_SCALE, impl: str = "auto") -> torch.Tensor:
    """Add a per-channel bias, apply leaky ReLU, multiply by ``scale``.

    Args:
        x: ``[N, C, ...]`` tensor.
        bias: ``[C]`` or None.
        impl: ``'auto'`` (CUDA kernel on CUDA tensors when it builds, else the reference), ``'cuda'`` or ``'ref'``.
    Returns:
        Tensor of the shape and dtype of ``x``. First and second order gradients are supported by every impl.
    """
    if impl in ("ref", "fast"):
        return fused_leaky_relu_ref(x, bias, negative_slope, scale)
    if impl not in ("auto", "cuda"):
        raise ValueError(f"impl must be 'auto', 'cuda', 'fast' or 'ref'; got {impl!r}")
    if x.is_cuda:
        from . import _cuda_ops

        fn = _cuda_ops.bias_act_cuda_fn(required=(impl == "cuda"))
        if fn is not None:
            return fn(x, bias, negative_slope, scale)
    elif impl == "cuda":
        raise RuntimeError("fused_leaky_relu(impl='cuda') needs a CUDA tensor; got one on " + str(x.device))
    return fused_leaky_relu_ref(x, bias, negative_slope, scale)
