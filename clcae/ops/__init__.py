"""StyleGAN2's custom ops: ``upfirdn2d`` and the fused bias + leaky ReLU.

Each op is one public function with ``impl='auto'|'cuda'|'fast'|'ref'``. CUDA kernels are compiled on first CUDA use
(never at import) by :mod:`clcae.ops._build`; without a GPU or a toolchain the PyTorch paths give the same numbers.
A failed build warns once and falls back to PyTorch; :func:`set_strict` (or ``CLCAE_OPS_STRICT=1``) makes it fatal.
"""
from ._build import is_strict, set_strict
from .bias_act import fused_leaky_relu, fused_leaky_relu_ref
from .upfirdn2d import separable_factors, upfirdn2d, upfirdn2d_fast, upfirdn2d_ref, upfirdn2d_separable

__all__ = ["upfirdn2d", "upfirdn2d_ref", "upfirdn2d_fast", "upfirdn2d_separable", "separable_factors", "fused_leaky_relu", "fused_leaky_relu_ref",
           "set_strict", "is_strict"]
