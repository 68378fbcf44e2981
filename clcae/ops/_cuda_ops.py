"""CUDA implementations of :mod:`clcae.ops`, built on first use (never at import).

``upfirdn2d_cuda_fn(required)`` and ``bias_act_cuda_fn(required)`` return callables with the arguments of the
dispatchers (``fn(x, kernel, up, down, pad)``, ``fn(x, bias, negative_slope, scale)``), or None when the extension
could not be built; that failure is reported by one ``RuntimeWarning`` per op and process, and raises instead when
``required`` is true or strict mode is on (:func:`clcae.ops.set_strict`, ``CLCAE_OPS_STRICT=1``).

Gradients: both ops are ``torch.autograd.Function`` s whose backward passes are again autograd Functions, so that
double backward (R1, path-length regularisation) works:

- the input gradient of ``upfirdn2d`` is ``upfirdn2d`` of the output gradient with the kernel flipped, ``up`` and
  ``down`` swapped and the padding adjusted, computed by the same Function;
- the input gradient of the fused bias + leaky ReLU is ``grad_y * (scale if y > 0 else slope * scale)``, read from
  the sign of the output ``y`` (valid for ``scale > 0`` and ``slope >= 0``); it is linear in ``grad_y`` with a
  coefficient that is piecewise constant in ``y``, so its own backward is the same op. The bias gradient is that
  input gradient summed over every dimension but 1.

Not covered by the CUDA path, which then hands over to the PyTorch implementation (same results): gradients with
respect to the upfirdn2d kernel (a fixed buffer in StyleGAN2), ``scale <= 0`` or ``negative_slope < 0``, and dtypes
other than float32/float16/bfloat16/float64.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from . import _build
from .torch_impl import (_as_2d, _check, _out_size, _parse_factor, fused_leaky_relu_ref, parse_pad,
                         upfirdn2d_fast)

__all__ = ["upfirdn2d_cuda_fn", "bias_act_cuda_fn", "reset", "EXTENSION_OPS", "cached_library", "load_extension"]

_CSRC = Path(__file__).resolve().parent / "csrc"
# op -> (extension name, sources)
_EXTENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "upfirdn2d": ("clcae_upfirdn2d", ("upfirdn2d.cpp", "upfirdn2d_kernel.cu")),
    "bias_act": ("clcae_bias_act", ("bias_act.cpp", "bias_act_kernel.cu")),
}
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

_lock = threading.RLock()
_modules: dict[str, ModuleType] = {}
_failures: dict[str, BaseException] = {}

# Which upfirdn2d kernel to run: 0 = automatic, 1 = simple, 2 = tiled without specialisation. Tests set it to check
# every code path against the reference; nothing else should.
_upfirdn2d_variant = 0


#: The ops that have a CUDA extension.
EXTENSION_OPS = tuple(_EXTENSIONS)


def cached_library(op: str) -> Path | None:
    """The cached build of ``op``'s extension (one of :data:`EXTENSION_OPS`) that the first CUDA call would load,
    or None when it has not been built for this torch, toolkit and architecture list (nothing is compiled)."""
    name, sources = _EXTENSIONS[op]
    return _build.cached_library(name, [_CSRC / s for s in sources])


def load_extension(op: str) -> ModuleType:
    """Build (or load from the cache) ``op``'s extension now; raises ``RuntimeError`` with the build's error when
    that fails, whatever the strict setting (``clcae doctor --build``)."""
    module = _extension(op, required=True)
    assert module is not None  # required=True raises instead
    return module


def reset() -> None:
    """Forget built modules and remembered build failures, so that the next call builds (and warns) again."""
    with _lock:
        _modules.clear()
        _failures.clear()


def _summary(exc: BaseException, limit: int = 1500) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else "... " + text[-limit:]


def _extension(op: str, required: bool) -> ModuleType | None:
    """The built extension of ``op``, building it on the first call; None (after one warning) if that fails."""
    with _lock:
        if op in _modules:
            return _modules[op]
        fatal = required or _build.is_strict()
        if op not in _failures:
            name, sources = _EXTENSIONS[op]
            try:
                _modules[op] = _build.build_extension(name, [_CSRC / s for s in sources])
                return _modules[op]
            except Exception as exc:  # noqa: BLE001 - any build failure means "fall back", or raise if strict
                _failures[op] = exc
                if not fatal:
                    warnings.warn(
                        f"clcae.ops: could not build the CUDA {op} extension; using the PyTorch implementation "
                        f"instead (set CLCAE_OPS_STRICT=1 to make this an error, CLCAE_OPS_VERBOSE=1 for the "
                        f"compiler's output). {_summary(exc)}", RuntimeWarning, stacklevel=4)
                    return None
        if fatal:
            exc = _failures[op]
            raise RuntimeError(f"clcae.ops: the CUDA {op} extension could not be built: {_summary(exc)}") from exc
        return None


# ------------------------------------------------------------------------------------------------ upfirdn2d
def _backward_config(in_h: int, in_w: int, out_h: int, out_w: int, kh: int, kw: int, up: tuple[int, int],
                     down: tuple[int, int], pad: tuple[int, int, int, int]):
    """The ``(up, down, pad)`` of the upfirdn2d that maps an output gradient to the input gradient (kernel flipped).

    With ``p0' = k - 1 - p0`` the taps line up; ``p1'`` makes the result exactly ``in`` samples long.
    """
    (upx, upy), (downx, downy), (x0, _, y0, _) = up, down, pad
    bx0 = kw - 1 - x0
    by0 = kh - 1 - y0
    bx1 = in_w * upx - out_w * downx + x0 - upx + 1
    by1 = in_h * upy - out_h * downy + y0 - upy + 1
    return (downx, downy), (upx, upy), (bx0, bx1, by0, by1)


class _UpFirDn2dCuda(torch.autograd.Function):
    """``upfirdn2d`` on the CUDA kernel; ``kernel`` is a 2-D, contiguous float32 (float64 for float64 ``x``) tensor
    that receives no gradient, ``up``/``down`` are ``(x, y)`` pairs and ``pad`` is ``(x0, x1, y0, y1)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
                pad: tuple[int, int, int, int]) -> torch.Tensor:
        ext = _modules["upfirdn2d"]
        y = ext.upfirdn2d(x.contiguous(), kernel, up[0], up[1], down[0], down[1], pad[0], pad[1], pad[2], pad[3],
                          _upfirdn2d_variant)
        ctx.save_for_backward(kernel)
        ctx.config = (x.shape[2], x.shape[3], y.shape[2], y.shape[3], up, down, pad)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        grad_x = None
        if ctx.needs_input_grad[0]:
            (kernel,) = ctx.saved_tensors
            in_h, in_w, out_h, out_w, up, down, pad = ctx.config
            b_up, b_down, b_pad = _backward_config(in_h, in_w, out_h, out_w, kernel.shape[0], kernel.shape[1], up,
                                                   down, pad)
            grad_x = _UpFirDn2dCuda.apply(grad_y.contiguous(), kernel.flip([0, 1]).contiguous(), b_up, b_down, b_pad)
        return grad_x, None, None, None, None


def _upfirdn2d_cuda(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=(0, 0, 0, 0)) -> torch.Tensor:
    """CUDA ``upfirdn2d``: same arguments and result as :func:`clcae.ops.upfirdn2d_ref`."""
    _check(x, kernel)
    if x.dtype not in _SUPPORTED_DTYPES or (kernel.requires_grad and torch.is_grad_enabled()):
        return upfirdn2d_fast(x, kernel, up, down, pad)
    upx, upy = _parse_factor(up, "up")
    downx, downy = _parse_factor(down, "down")
    x0, x1, y0, y1 = parse_pad(pad)
    k = _as_2d(kernel).to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    kh, kw = k.shape
    out_h = _out_size(x.shape[2], upy, y0, y1, kh, downy)
    out_w = _out_size(x.shape[3], upx, x0, x1, kw, downx)
    if out_h < 1 or out_w < 1 or x.shape[2] * upy + y0 + y1 < kh or x.shape[3] * upx + x0 + x1 < kw:
        raise ValueError(f"upfirdn2d: the {kh}x{kw} kernel is larger than the upsampled, padded input "
                         f"({x.shape[2] * upy + y0 + y1}x{x.shape[3] * upx + x0 + x1})")
    return _UpFirDn2dCuda.apply(x.contiguous(), k.contiguous(), (upx, upy), (downx, downy), (x0, x1, y0, y1))


def upfirdn2d_cuda_fn(required: bool = False) -> Callable[..., torch.Tensor] | None:
    """The CUDA ``upfirdn2d`` as ``fn(x, kernel, up, down, pad)``, building it on the first call.

    Returns None (after one warning per process) when the build fails, unless ``required`` or strict mode is on,
    in which case it raises ``RuntimeError``.
    """
    return _upfirdn2d_cuda if _extension("upfirdn2d", required) is not None else None


# ------------------------------------------------------------------------------------------------ bias + lrelu
class _LReLUGrad(torch.autograd.Function):
    """``grad_y * (scale if y > 0 else slope * scale)``: linear in ``grad_y``, piecewise constant in ``y``."""

    @staticmethod
    def forward(ctx, grad_y: torch.Tensor, y: torch.Tensor, slope: float, scale: float) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.slope, ctx.scale = slope, scale
        return _modules["bias_act"].lrelu_grad(grad_y.contiguous(), y, slope, scale)

    @staticmethod
    def backward(ctx, grad_grad_x: torch.Tensor):
        (y,) = ctx.saved_tensors
        grad_grad_y = None
        if ctx.needs_input_grad[0]:
            grad_grad_y = _LReLUGrad.apply(grad_grad_x, y, ctx.slope, ctx.scale)
        # the coefficient is constant in y except at 0, where it has no derivative: zero gradient for y
        return grad_grad_y, None, None, None


class _FusedBiasLReLUCuda(torch.autograd.Function):
    """``leaky_relu(x + bias along dim 1, slope) * scale`` on the CUDA kernel (bias may be None)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor | None, slope: float, scale: float) -> torch.Tensor:
        y = _modules["bias_act"].bias_lrelu(x.contiguous(), bias, slope, scale)
        ctx.save_for_backward(y)
        ctx.slope, ctx.scale = slope, scale
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        (y,) = ctx.saved_tensors
        need_x, need_bias = ctx.needs_input_grad[0], ctx.has_bias and ctx.needs_input_grad[1]
        if not (need_x or need_bias):
            return None, None, None, None
        grad_x = _LReLUGrad.apply(grad_y, y, ctx.slope, ctx.scale)
        grad_bias = None
        if need_bias:
            dims = [0, *range(2, grad_x.ndim)]
            acc = torch.float64 if grad_x.dtype == torch.float64 else torch.float32
            grad_bias = grad_x.sum(dim=dims, dtype=acc).to(grad_x.dtype)
        return (grad_x if need_x else None), grad_bias, None, None


def _fused_leaky_relu_cuda(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                           scale: float = 2 ** 0.5) -> torch.Tensor:
    """CUDA fused bias + leaky ReLU: same arguments and result as :func:`clcae.ops.fused_leaky_relu_ref`."""
    negative_slope, scale = float(negative_slope), float(scale)
    if x.dtype not in _SUPPORTED_DTYPES or not (scale > 0 and negative_slope >= 0):
        return fused_leaky_relu_ref(x, bias, negative_slope, scale)
    if bias is not None:
        if bias.ndim != 1 or x.ndim < 2 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not match channel dim of x {tuple(x.shape)}")
        bias = bias.to(dtype=x.dtype).contiguous()  # as the reference does; autograd casts the gradient back
    return _FusedBiasLReLUCuda.apply(x.contiguous(), bias, negative_slope, scale)


def bias_act_cuda_fn(required: bool = False) -> Callable[..., torch.Tensor] | None:
    """The CUDA fused bias + leaky ReLU as ``fn(x, bias, negative_slope, scale)``, building it on the first call.

    Returns None (after one warning per process) when the build fails, unless ``required`` or strict mode is on,
    in which case it raises ``RuntimeError``.
    """
    return _fused_leaky_relu_cuda if _extension("bias_act", required) is not None else None
