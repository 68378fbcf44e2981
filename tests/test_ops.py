"""Tests of :mod:`clcae.ops`: ``upfirdn2d`` and the fused bias + leaky ReLU.

- The PyTorch implementations reproduce the reference fixtures and have correct first/second order gradients.
- The builder caches, rebuilds on change, survives concurrent builds, and its failure policy (warn once and fall
  back, or raise in strict mode) holds; checked on CPU with a tiny C extension and a simulated failure.
- ``cuda_build``: both CUDA extensions compile (needs nvcc, not a GPU).
- ``gpu``: the CUDA kernels match the reference (forward, first and second order, fp32/fp64/fp16/bf16).
"""
from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from clcae.ops import (_build, _cuda_ops, fused_leaky_relu, fused_leaky_relu_ref, set_strict, upfirdn2d,
                       upfirdn2d_fast, upfirdn2d_ref)

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT.parent / "shared" / "compat"
CASES_FILE = COMPAT / "upfirdn2d_cases.pt"
_CASES = torch.load(CASES_FILE, weights_only=True) if CASES_FILE.is_file() else None
_CASE_PARAMS = (list(range(len(_CASES))) if _CASES
                else [pytest.param(None, marks=pytest.mark.skip(reason=f"fixtures not found: {CASES_FILE}"))])

BLUR = torch.tensor([1.0, 3.0, 3.0, 1.0])
BLUR2D = BLUR.outer(BLUR) / BLUR.sum() ** 2
NONSEP = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.25], [0.0, 1.5, 3.0, 1.0, -0.5], [2.0, -1.0, 0.5, 1.0, 1.0]]) / 8

# (up, down, pad, kernel): the StyleGAN2 cases plus the awkward ones (cropping, non-separable, anisotropic)
CONFIGS = [
    pytest.param(1, 1, (1, 1, 1, 1), BLUR2D, id="blur"),
    pytest.param(2, 1, (2, 1, 2, 1), BLUR2D * 4, id="up2"),
    pytest.param(1, 2, (1, 1, 1, 1), BLUR2D, id="down2"),
    pytest.param(2, 2, (1, 2, 0, 3), NONSEP, id="up2down2-nonsep"),
    pytest.param(1, 1, (-1, 3, 1, -1), NONSEP, id="crop-nonsep"),
    pytest.param(4, 1, (3, 2, 3, 2), BLUR2D * 16, id="up4"),
    pytest.param(1, 4, (0, 0, 0, 0), NONSEP, id="down4"),
    pytest.param((2, 1), (1, 2), (0, 1, 2, -1), NONSEP[:2, :3], id="anisotropic"),
    pytest.param(1, 1, (0, 0, 0, 0), BLUR, id="1d-kernel"),
]
PYTORCH_IMPLS = [pytest.param(upfirdn2d_ref, id="ref"), pytest.param(upfirdn2d_fast, id="fast")]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """``|actual - expected| <= rel * (|expected| + max|expected|)``: relative, with a floor at the tensor's scale."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    actual, expected = actual.double().cpu(), expected.double().cpu()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-12))


def _random_config(rng: random.Random):
    """A random upfirdn2d configuration whose output is not empty."""
    while True:
        up = (rng.choice([1, 1, 2, 4]), rng.choice([1, 1, 2, 4]))
        down = (rng.choice([1, 1, 2, 4]), rng.choice([1, 1, 2, 4]))
        kh, kw = rng.randint(1, 6), rng.randint(1, 6)
        pad = tuple(rng.randint(-3, 5) for _ in range(4))
        n, c, h, w = rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 23), rng.randint(1, 23)
        if h * up[1] + pad[2] + pad[3] >= kh and w * up[0] + pad[0] + pad[1] >= kw:
            return (n, c, h, w), (kh, kw), up, down, pad


def _grad(fn, x: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of ``fn(x, *args)`` and the gradient of ``(y * g).sum()`` for a fixed random ``g``."""
    x = x.detach().requires_grad_(True)
    y = fn(x, *args)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y)
    (gx,) = torch.autograd.grad((y * g).sum(), x)
    return y.detach(), gx


def _lrelu_inputs(shape, dtype=torch.float64, device="cpu", margin=0.2):
    """``(x, bias)`` whose pre-activations ``x + bias`` stay at least ``margin`` away from 0 (lrelu's kink)."""
    gen = torch.Generator().manual_seed(3)
    pre = (torch.rand(shape, generator=gen, dtype=torch.float64) + margin) * torch.where(
        torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).double()
    bias = torch.randn(shape[1], generator=gen, dtype=torch.float64)
    x = pre - bias.reshape((1, -1) + (1,) * (len(shape) - 2))
    return x.to(device, dtype), bias.to(device, dtype)


# ------------------------------------------------------------------------------------------ reference fixtures
@pytest.mark.parametrize("impl", PYTORCH_IMPLS)
@pytest.mark.parametrize("index", _CASE_PARAMS)
def test_upfirdn2d_reproduces_reference_fixtures(impl, index):
    case = _CASES[index]
    cfg = case["cfg"]
    x = case["x"].detach().requires_grad_(True)
    y = impl(x, case["kernel"], cfg["up"], cfg["down"], cfg["pad"])
    (y * case["grad_out"]).sum().backward()
    _assert_close(y.detach(), case["y"], 1e-5)
    _assert_close(x.grad, case["grad_x"], 1e-5)


# ------------------------------------------------------------------------------------------ gradients (float64)
@pytest.mark.parametrize("impl", PYTORCH_IMPLS)
@pytest.mark.parametrize("up, down, pad, kernel", CONFIGS)
def test_upfirdn2d_gradcheck(impl, up, down, pad, kernel):
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    k = kernel.double()
    fn = lambda t: impl(t, k, up, down, pad)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6), (2, 3, 2, 2, 3)], ids=["4d", "2d", "5d"])
def test_fused_leaky_relu_ref_gradcheck(shape):
    x, bias = _lrelu_inputs(shape)
    x.requires_grad_(True)
    bias.requires_grad_(True)
    fn = lambda a, b: fused_leaky_relu_ref(a, b, 0.2, math.sqrt(2))  # noqa: E731
    assert gradcheck(fn, (x, bias))
    assert gradgradcheck(fn, (x, bias))
    assert gradcheck(lambda a: fused_leaky_relu_ref(a, None, 0.1, 3.0), (x,))


def test_fused_leaky_relu_ref_values():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 2.0]]).T.repeat(1, 2)  # [5, 2]: channel dim 1
    bias = torch.tensor([0.0, 1.0])
    y = fused_leaky_relu_ref(x, bias, 0.2, 2.0)
    v = x + bias
    torch.testing.assert_close(y, torch.where(v > 0, v, 0.2 * v) * 2.0)


# ------------------------------------------------------------------------------------------ fast == ref
@pytest.mark.parametrize("seed", range(6))
def test_upfirdn2d_fast_matches_ref_random(seed):
    rng = random.Random(seed)
    for _ in range(8):
        shape, kshape, up, down, pad = _random_config(rng)
        x = torch.randn(shape, dtype=torch.float64)
        k = torch.randn(kshape, dtype=torch.float64)
        if rng.random() < 0.5:  # separable, to take the two-pass path of `fast`
            k = torch.randn(kshape[0], dtype=torch.float64).outer(torch.randn(kshape[1], dtype=torch.float64))
        y_ref, g_ref = _grad(upfirdn2d_ref, x, k, up, down, pad)
        y_fast, g_fast = _grad(upfirdn2d_fast, x, k, up, down, pad)
        _assert_close(y_fast, y_ref, 1e-10)
        _assert_close(g_fast, g_ref, 1e-10)
        y32 = upfirdn2d_fast(x.float(), k.float(), up, down, pad)
        _assert_close(y32, y_ref, 1e-5)


@pytest.mark.parametrize("layout", ["transposed", "strided", "channels_last", "expanded"])
def test_upfirdn2d_fast_matches_ref_noncontiguous(layout):
    base = torch.randn(2, 3, 12, 10)
    x = {"transposed": base.transpose(2, 3), "strided": base[:, :, ::2, 1::3],
         "channels_last": base.contiguous(memory_format=torch.channels_last),
         "expanded": base[:1, :, :1].expand(2, 3, 7, 10)}[layout]
    for up, down, pad, k in [(2, 1, (2, 1, 2, 1), BLUR2D * 4), (1, 2, (1, 1, 1, 1), BLUR2D),
                             (2, 2, (1, 2, 0, 3), NONSEP)]:
        y_ref, g_ref = _grad(upfirdn2d_ref, x, k, up, down, pad)
        y_fast, g_fast = _grad(upfirdn2d_fast, x, k, up, down, pad)
        _assert_close(y_fast, y_ref, 1e-5)
        _assert_close(g_fast, g_ref, 1e-5)
        _assert_close(upfirdn2d_ref(x.contiguous(), k, up, down, pad), y_ref, 1e-6)


@pytest.mark.parametrize("kernel", [BLUR2D, NONSEP, BLUR], ids=["separable", "nonseparable", "1d"])
def test_upfirdn2d_kernel_gradient(kernel):
    """Both PyTorch paths also differentiate with respect to the kernel."""
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    grads = []
    for impl in (upfirdn2d_ref, upfirdn2d_fast):
        k = kernel.double().clone().requires_grad_(True)
        (impl(x, k, 2, 1, (2, 1, 2, 1)) ** 2).sum().backward()
        grads.append(k.grad)
    _assert_close(grads[1], grads[0], 1e-10)


def test_dispatcher_on_cpu():
    x = torch.randn(2, 3, 8, 8)
    _assert_close(upfirdn2d(x, BLUR, up=2, pad=(2, 1)), upfirdn2d_ref(x, BLUR, up=2, pad=(2, 1)), 1e-5)
    _assert_close(upfirdn2d(x, BLUR2D, impl="ref"), upfirdn2d_ref(x, BLUR2D), 0)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        upfirdn2d(x, BLUR2D, impl="cuda")
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        fused_leaky_relu(x, None, impl="cuda")
    with pytest.raises(ValueError, match="impl"):
        upfirdn2d(x, BLUR2D, impl="triton")


def test_nothing_is_built_at_import_or_on_cpu():
    code = textwrap.dedent("""
        import sys, torch
        import clcae, clcae.ops
        from clcae.ops import upfirdn2d, fused_leaky_relu
        upfirdn2d(torch.randn(1, 2, 8, 8), torch.ones(4), up=2, pad=(2, 1))
        fused_leaky_relu(torch.randn(1, 2, 8, 8), torch.zeros(2))
        assert "clcae.ops._cuda_ops" not in sys.modules, "CUDA ops imported without a CUDA tensor"
        assert not clcae.ops._build._loaded, "an extension was built"
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


# ------------------------------------------------------------------------------------------ failure policy
@pytest.fixture
def fresh_ops(monkeypatch):
    """``_cuda_ops`` with nothing built or remembered, strict mode off, and its state restored afterwards."""
    _cuda_ops.reset()
    monkeypatch.setattr(_build, "_strict_override", None)
    monkeypatch.delenv("CLCAE_OPS_STRICT", raising=False)
    yield _cuda_ops
    _cuda_ops.reset()


GETTERS = ["upfirdn2d_cuda_fn", "bias_act_cuda_fn"]


@pytest.mark.parametrize("getter", GETTERS)
def test_failed_build_warns_once_and_returns_none(fresh_ops, monkeypatch, getter):
    calls = []

    def failing_build(name, sources, **kwargs):
        calls.append(name)
        raise RuntimeError("simulated compiler failure")

    monkeypatch.setattr(_build, "build_extension", failing_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr(fresh_ops, getter)(required=False) is None
        assert getattr(fresh_ops, getter)(required=False) is None
    relevant = [w for w in caught if "simulated compiler failure" in str(w.message)]
    assert len(relevant) == 1, [str(w.message) for w in caught]
    assert issubclass(relevant[0].category, RuntimeWarning)
    assert len(calls) == 1, "a failed build must not be retried on every call"
    with pytest.raises(RuntimeError, match="simulated compiler failure"):
        getattr(fresh_ops, getter)(required=True)


@pytest.mark.parametrize("getter", GETTERS)
@pytest.mark.parametrize("how", ["set_strict", "env"])
def test_failed_build_raises_in_strict_mode(fresh_ops, monkeypatch, getter, how):
    def failing_build(name, sources, **kwargs):
        raise OSError("simulated missing toolchain")

    monkeypatch.setattr(_build, "build_extension", failing_build)
    if how == "env":
        monkeypatch.setenv("CLCAE_OPS_STRICT", "1")
    else:
        set_strict(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict mode raises; it must not warn first
        with pytest.raises(RuntimeError, match="simulated missing toolchain"):
            getattr(fresh_ops, getter)(required=False)
        with pytest.raises(RuntimeError, match="simulated missing toolchain"):  # and keeps raising
            getattr(fresh_ops, getter)(required=False)
    set_strict(False)
    monkeypatch.delenv("CLCAE_OPS_STRICT", raising=False)
    assert getattr(fresh_ops, getter)(required=False) is None


def test_set_strict_follows_env_again_with_none(monkeypatch):
    monkeypatch.setattr(_build, "_strict_override", None)
    monkeypatch.setenv("CLCAE_OPS_STRICT", "1")
    assert _build.is_strict()
    set_strict(False)
    assert not _build.is_strict()
    set_strict(None)
    assert _build.is_strict()
    monkeypatch.setenv("CLCAE_OPS_STRICT", "0")
    assert not _build.is_strict()


# ------------------------------------------------------------------------------------------ builder (tiny C module)
def _host_toolchain_missing() -> str | None:
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not available"
    if not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler found"
    return None


needs_host_toolchain = pytest.mark.skipif(_host_toolchain_missing() is not None,
                                          reason=str(_host_toolchain_missing()))

# A minimal CPython extension (no torch headers, so it compiles in about a second) named TORCH_EXTENSION_NAME.
MINI_SOURCE = """
#include <Python.h>
#define MINI_STR2(x) #x
#define MINI_STR(x) MINI_STR2(x)
#define MINI_CAT2(a, b) a##b
#define MINI_CAT(a, b) MINI_CAT2(a, b)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(ANSWER); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "the answer"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef def = {PyModuleDef_HEAD_INIT, MINI_STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
PyMODINIT_FUNC MINI_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&def); }
"""

# builds the mini extension in a fresh process; prints the answer and the file it was loaded from
BUILD_SCRIPT = """
import sys
from clcae.ops import _build
m = _build.build_extension("mini", [sys.argv[1]])
print(m.answer(), m.__file__)
"""


def _write_mini(folder: Path, answer: int) -> Path:
    src = folder / "mini.cpp"
    src.write_text(f"#define ANSWER {answer}\n" + MINI_SOURCE)
    return src


def _build_in_subprocess(src: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "CLCAE_EXTENSIONS_DIR": str(root),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(src)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    answer, file = out.strip().splitlines()[-1].split()
    return int(answer), file


def _cache_entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


@needs_host_toolchain
def test_builder_caches_and_rebuilds_on_change(tmp_path):
    root = tmp_path / "cache"
    src = _write_mini(tmp_path, 42)
    answer, first_file = _result(_build_in_subprocess(src, root))
    assert answer == 42
    (entry,) = _cache_entries(root)
    assert re.fullmatch(r"mini_[0-9a-f]{16}", entry.name)
    library = _build._find_library(entry, entry.name)
    mtime = library.stat().st_mtime_ns

    # unchanged source: loaded from the cache folder, nothing recompiled
    answer, file = _result(_build_in_subprocess(src, root))
    assert answer == 42 and Path(file) == library and library.stat().st_mtime_ns == mtime
    assert _cache_entries(root) == [entry]

    # changed source: a new folder and the new behaviour; the old entry stays valid
    src = _write_mini(tmp_path, 43)
    answer, _ = _result(_build_in_subprocess(src, root))
    assert answer == 43
    assert len(_cache_entries(root)) == 2 and entry in _cache_entries(root)


@needs_host_toolchain
def test_builder_concurrent_builds_share_one_entry(tmp_path):
    root = tmp_path / "cache"
    src = _write_mini(tmp_path, 7)
    procs = [_build_in_subprocess(src, root) for _ in range(3)]
    results = [_result(p) for p in procs]
    assert [a for a, _ in results] == [7, 7, 7]
    (entry,) = _cache_entries(root)  # one complete entry, no temporary folders left behind
    assert _build._find_library(entry, entry.name) is not None


@needs_host_toolchain
def test_builder_in_process_cache_returns_same_module(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCAE_EXTENSIONS_DIR", str(tmp_path / "cache"))
    src = _write_mini(tmp_path, 5)
    first = _build.build_extension("mini", [src])
    assert first.answer() == 5
    assert _build.build_extension("mini", [src]) is first


@needs_host_toolchain
def test_builder_broken_source_raises_and_leaves_no_entry(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("CLCAE_EXTENSIONS_DIR", str(root))
    src = tmp_path / "broken.cpp"
    src.write_text("this is not C++;\n")
    with pytest.raises(Exception, match="(?i)error"):
        _build.build_extension("broken", [src])
    assert _cache_entries(root) == []


@needs_host_toolchain
def test_broken_op_source_warns_once_and_falls_back(fresh_ops, tmp_path, monkeypatch):
    """A real failed compile (not a simulated one) goes through the warn-once / strict policy."""
    monkeypatch.setenv("CLCAE_EXTENSIONS_DIR", str(tmp_path / "cache"))
    src = tmp_path / "broken.cpp"
    src.write_text("#error deliberately broken\n")
    monkeypatch.setitem(fresh_ops._EXTENSIONS, "upfirdn2d", ("clcae_broken", (str(src),)))
    with pytest.warns(RuntimeWarning, match="could not build the CUDA upfirdn2d extension"):
        assert fresh_ops.upfirdn2d_cuda_fn(required=False) is None
    with pytest.raises(RuntimeError, match="could not be built"):
        fresh_ops.upfirdn2d_cuda_fn(required=True)


# ------------------------------------------------------------------------------------------ autograd wiring (CPU)
class _StandInExtension:
    """The CUDA extensions' interface computed by the PyTorch reference, with the kernels' input checks: runs the
    autograd Functions of the CUDA path (backward configs, double backward, bias gradient) on CPU."""

    def __init__(self):
        self.calls = 0

    def upfirdn2d(self, x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, variant=0):
        assert x.is_contiguous() and kernel.is_contiguous() and kernel.ndim == 2 and not torch.is_grad_enabled()
        assert kernel.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        self.calls += 1
        return upfirdn2d_ref(x, kernel.to(x.dtype), (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1))

    def bias_lrelu(self, x, bias, slope, scale):
        assert x.is_contiguous() and (bias is None or (bias.is_contiguous() and bias.dtype == x.dtype))
        assert scale > 0 and slope >= 0 and not torch.is_grad_enabled()
        self.calls += 1
        return fused_leaky_relu_ref(x, bias, slope, scale)

    def lrelu_grad(self, grad_y, y, slope, scale):
        assert grad_y.is_contiguous() and y.is_contiguous() and grad_y.shape == y.shape
        assert grad_y.dtype == y.dtype and not torch.is_grad_enabled()
        self.calls += 1
        g = grad_y * scale
        return torch.where(y > 0, g, g * slope)


@pytest.fixture
def stand_in(monkeypatch):
    ext = _StandInExtension()
    monkeypatch.setitem(_cuda_ops._modules, "upfirdn2d", ext)
    monkeypatch.setitem(_cuda_ops._modules, "bias_act", ext)
    return ext


@pytest.mark.parametrize("up, down, pad, kernel", CONFIGS)
def test_cuda_path_autograd_wiring_upfirdn2d(stand_in, up, down, pad, kernel):
    fn = _cuda_ops.upfirdn2d_cuda_fn(required=True)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    k = kernel.double()
    assert gradcheck(lambda t: fn(t, k, up, down, pad), (x,))
    assert gradgradcheck(lambda t: fn(t, k, up, down, pad), (x,))
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64).transpose(2, 3)  # non-contiguous
    for got, want in zip(_r1_like(lambda t: fn(t, k, up, down, pad), x),
                         _r1_like(lambda t: upfirdn2d_ref(t, k, up, down, pad), x)):
        _assert_close(got, want, 1e-10)
    assert stand_in.calls > 0


def test_cuda_path_autograd_wiring_fused_leaky_relu(stand_in):
    fn = _cuda_ops.bias_act_cuda_fn(required=True)
    for shape in [(2, 3, 4, 5), (4, 6), (2, 3, 2, 2, 3)]:
        x, bias = _lrelu_inputs(shape)
        x.requires_grad_(True)
        bias.requires_grad_(True)
        assert gradcheck(lambda a, b: fn(a, b, 0.2, math.sqrt(2)), (x, bias))
        assert gradgradcheck(lambda a, b: fn(a, b, 0.2, math.sqrt(2)), (x, bias))
        assert gradgradcheck(lambda a: fn(a, None, 0.1, 3.0), (x,))
        for got, want in zip(_r1_like(lambda t: fn(t, bias, 0.2, 2.0), x),
                             _r1_like(lambda t: fused_leaky_relu_ref(t, bias, 0.2, 2.0), x)):
            _assert_close(got, want, 1e-10)
    # a float32 bias with float64 activations: the gradient comes back in the bias' dtype
    x, bias = _lrelu_inputs((2, 3, 4, 5))
    b32 = bias.float().requires_grad_(True)
    fn(x, b32).sum().backward()
    assert b32.grad.dtype == torch.float32
    assert stand_in.calls > 0


# ------------------------------------------------------------------------------------------ CUDA build (no GPU)
def _cuda_toolchain_missing() -> str | None:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) has no CUDA support compiled in"
    if _build._cuda_home() is None:
        return "no CUDA toolkit found (nvcc and include/cuda_runtime.h; set CUDA_HOME)"
    return _host_toolchain_missing()


@pytest.mark.cuda_build
def test_cuda_extensions_build(tmp_path, monkeypatch):
    """Both CUDA extensions compile in strict mode into a fresh cache (a few minutes; build only, nothing runs)."""
    reason = _cuda_toolchain_missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "extensions"
    monkeypatch.setenv("CLCAE_EXTENSIONS_DIR", str(root))
    monkeypatch.setattr(_build, "_strict_override", True)
    _cuda_ops.reset()
    _build._clear_memory_cache()
    try:
        start = time.perf_counter()
        assert _cuda_ops.upfirdn2d_cuda_fn(required=True) is not None
        assert _cuda_ops.bias_act_cuda_fn(required=True) is not None
        elapsed = time.perf_counter() - start
        assert callable(_cuda_ops._modules["upfirdn2d"].upfirdn2d)
        assert callable(_cuda_ops._modules["bias_act"].bias_lrelu)
        assert callable(_cuda_ops._modules["bias_act"].lrelu_grad)
        entries = _cache_entries(root)
        assert sorted(re.sub(r"_[0-9a-f]{16}$", "", e.name) for e in entries) == ["clcae_bias_act",
                                                                                   "clcae_upfirdn2d"]
        assert all(_build._find_library(e, e.name) is not None for e in entries)
        print(f"built both CUDA extensions in {elapsed:.0f} s")
    finally:
        _cuda_ops.reset()
        _build._clear_memory_cache()


# ------------------------------------------------------------------------------------------ GPU
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Tolerances, relative to the larger of |expected| and max|expected| (see _assert_close); expected values come
# from the reference in float64 on the same (rounded) inputs, so half precision only pays for the output rounding
# (and, for gradients, the rounding of intermediate results).
GPU_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture
def cuda_ops(monkeypatch):
    """Strict mode (a failed build fails the test) and the automatic kernel choice restored afterwards."""
    monkeypatch.setattr(_build, "_strict_override", True)
    monkeypatch.setattr(_cuda_ops, "_upfirdn2d_variant", 0)
    _cuda_ops.upfirdn2d_cuda_fn(required=True)
    _cuda_ops.bias_act_cuda_fn(required=True)
    return _cuda_ops


VARIANTS = [pytest.param(0, id="auto"), pytest.param(1, id="simple"), pytest.param(2, id="tiled")]


@gpu
@needs_gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("index", _CASE_PARAMS)
def test_cuda_upfirdn2d_reproduces_reference_fixtures(cuda_ops, monkeypatch, variant, index):
    monkeypatch.setattr(cuda_ops, "_upfirdn2d_variant", variant)
    case = _CASES[index]
    cfg = case["cfg"]
    x = case["x"].cuda().requires_grad_(True)
    y = upfirdn2d(x, case["kernel"].cuda(), cfg["up"], cfg["down"], cfg["pad"], impl="cuda")
    (y * case["grad_out"].cuda()).sum().backward()
    _assert_close(y.detach(), case["y"], 1e-5)
    _assert_close(x.grad, case["grad_x"], 1e-5)


@gpu
@needs_gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("up, down, pad, kernel", CONFIGS)
def test_cuda_upfirdn2d_gradcheck(cuda_ops, monkeypatch, variant, up, down, pad, kernel):
    monkeypatch.setattr(cuda_ops, "_upfirdn2d_variant", variant)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    k = kernel.double().cuda()
    fn = lambda t: upfirdn2d(t, k, up, down, pad, impl="cuda")  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def _r1_like(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward, first-order gradient and the gradient of its squared norm (double backward), as R1 needs."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    dtype = torch.promote_types(y.dtype, torch.float32)  # the losses in at least float32
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(y.device, dtype)
    (g,) = torch.autograd.grad((y.to(dtype) ** 2 * w).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad((g.to(dtype) ** 2).sum(), x)
    return y.detach(), g.detach(), gg


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_upfirdn2d_matches_ref_random(cuda_ops, monkeypatch, variant, dtype):
    monkeypatch.setattr(cuda_ops, "_upfirdn2d_variant", variant)
    rng = random.Random(variant * 10 + 1)
    tol = GPU_TOL[dtype]
    for i in range(20):
        shape, kshape, up, down, pad = _random_config(rng)
        base = torch.randn(shape[:2] + shape[:1:-1], device="cuda")  # [N, C, W, H]: transposed below
        x = (base.transpose(2, 3) if i % 2 else base.transpose(2, 3).contiguous()).to(dtype)
        k = torch.randn(kshape, device="cuda")
        ref = lambda t: upfirdn2d_ref(t.double(), k.double(), up, down, pad)  # noqa: E731
        y, g = _grad(lambda t: upfirdn2d(t, k, up, down, pad, impl="cuda"), x)
        y_ref, g_ref = _grad(ref, x)
        assert y.dtype == dtype and g.dtype == dtype
        _assert_close(y, y_ref, tol)
        _assert_close(g, g_ref, tol * 4)
        if dtype in (torch.float64, torch.float32):
            for got, want in zip(_r1_like(lambda t: upfirdn2d(t, k, up, down, pad, impl="cuda"), x),
                                 _r1_like(ref, x)):
                _assert_close(got, want, 1e-4)


@gpu
@needs_gpu
def test_cuda_upfirdn2d_edge_cases(cuda_ops, monkeypatch):
    # more planes than a grid's z dimension holds (the tiled kernel loops over them)
    x = torch.randn(1, 70000, 4, 4, device="cuda")
    _assert_close(upfirdn2d(x, BLUR2D.cuda() * 4, up=2, pad=(2, 1, 2, 1), impl="cuda"),
                  upfirdn2d_ref(x, BLUR2D.cuda() * 4, up=2, pad=(2, 1, 2, 1)), 1e-5)
    # a kernel whose tile does not fit in shared memory: the automatic choice falls back to the simple kernel
    x = torch.randn(1, 2, 40, 40, device="cuda")
    big = torch.randn(64, 64, device="cuda")
    _assert_close(upfirdn2d(x, big, pad=(32, 31, 32, 31), impl="cuda"), upfirdn2d_ref(x, big, pad=(32, 31, 32, 31)),
                  1e-5)
    monkeypatch.setattr(cuda_ops, "_upfirdn2d_variant", 2)
    with pytest.raises(RuntimeError, match="shared memory"):
        upfirdn2d(x, big, pad=(32, 31, 32, 31), impl="cuda")
    monkeypatch.setattr(cuda_ops, "_upfirdn2d_variant", 0)
    # empty batch, channels_last input, 1-D kernel on another device, kernel larger than the input
    empty = torch.randn(0, 3, 8, 8, device="cuda")
    assert upfirdn2d(empty, BLUR.cuda(), up=2, pad=(2, 1, 2, 1), impl="cuda").shape == (0, 3, 16, 16)
    x = torch.randn(2, 3, 9, 7, device="cuda").contiguous(memory_format=torch.channels_last)
    _assert_close(upfirdn2d(x, BLUR, down=2, pad=(1, 1), impl="cuda"), upfirdn2d_ref(x, BLUR.cuda(), down=2,
                                                                                     pad=(1, 1)), 1e-5)
    with pytest.raises(ValueError, match="larger"):
        upfirdn2d(torch.randn(1, 1, 2, 2, device="cuda"), BLUR2D.cuda(), impl="cuda")
    # a kernel that needs a gradient goes through the PyTorch path (the CUDA one gives the kernel none)
    kk = BLUR2D.cuda().requires_grad_(True)
    upfirdn2d(torch.randn(1, 2, 8, 8, device="cuda"), kk, pad=1, impl="cuda").sum().backward()
    assert kk.grad is not None


@gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6), (2, 3, 2, 2, 3)], ids=["4d", "2d", "5d"])
def test_cuda_fused_leaky_relu_gradcheck(cuda_ops, shape):
    x, bias = _lrelu_inputs(shape, device="cuda")
    x.requires_grad_(True)
    bias.requires_grad_(True)
    fn = lambda a, b: fused_leaky_relu(a, b, 0.2, math.sqrt(2), impl="cuda")  # noqa: E731
    assert gradcheck(fn, (x, bias))
    assert gradgradcheck(fn, (x, bias))
    assert gradcheck(lambda a: fused_leaky_relu(a, None, 0.1, 3.0, impl="cuda"), (x,))


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last"])
def test_cuda_fused_leaky_relu_matches_ref(cuda_ops, dtype, layout):
    tol = GPU_TOL[dtype]
    for shape in [(4, 16, 9, 7), (3, 32), (2, 5, 3, 4, 6)]:
        x, bias = _lrelu_inputs(shape, device="cuda", margin=0.05)
        x = x.to(dtype)
        if layout == "transposed" and x.ndim >= 3:
            x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif layout == "channels_last" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for b in (bias.float(), None):  # a float32 bias with half inputs, as under mixed precision
            xr = x.detach().requires_grad_(True)
            br = b.detach().requires_grad_(True) if b is not None else None
            y = fused_leaky_relu(xr, br, 0.2, math.sqrt(2), impl="cuda")
            assert y.dtype == dtype
            go = torch.randn(y.shape, device="cuda", dtype=torch.float64)
            (y.double() * go).sum().backward()
            x64 = x.double().requires_grad_(True)
            b64 = b.double().requires_grad_(True) if b is not None else None
            y64 = fused_leaky_relu_ref(x64, b64, 0.2, math.sqrt(2))
            (y64 * go).sum().backward()
            _assert_close(y, y64, tol)
            _assert_close(xr.grad, x64.grad, tol)
            if b is not None:
                assert br.grad.dtype == b.dtype
                _assert_close(br.grad, b64.grad, tol * 4)
        if dtype in (torch.float64, torch.float32):
            for got, want in zip(_r1_like(lambda t: fused_leaky_relu(t, bias, impl="cuda"), x),
                                 _r1_like(lambda t: fused_leaky_relu_ref(t.double(), bias.double()), x)):
                _assert_close(got, want, 1e-4)


@gpu
@needs_gpu
def test_cuda_fused_leaky_relu_unusual_parameters_fall_back(cuda_ops):
    x = torch.randn(2, 3, 4, 4, device="cuda")
    b = torch.randn(3, device="cuda")
    for slope, scale in [(-0.5, 1.0), (0.2, -1.0)]:  # the output's sign no longer tells the branch
        _assert_close(fused_leaky_relu(x, b, slope, scale, impl="cuda"), fused_leaky_relu_ref(x, b, slope, scale),
                      1e-6)


@gpu
@needs_gpu
def test_cuda_auto_warns_once_and_falls_back_when_the_build_fails(fresh_ops, monkeypatch):
    def failing_build(name, sources, **kwargs):
        raise RuntimeError("simulated nvcc failure")

    monkeypatch.setattr(_build, "build_extension", failing_build)
    x = torch.randn(2, 3, 8, 8, device="cuda")
    b = torch.randn(3, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _assert_close(upfirdn2d(x, BLUR.cuda(), up=2, pad=(2, 1)), upfirdn2d_ref(x, BLUR.cuda(), up=2,
                                                                                     pad=(2, 1)), 1e-5)
            _assert_close(fused_leaky_relu(x, b), fused_leaky_relu_ref(x, b), 1e-6)
    messages = [str(w.message) for w in caught if "simulated nvcc failure" in str(w.message)]
    assert len(messages) == 2 and "upfirdn2d" in messages[0] and "bias_act" in messages[1], messages
    with pytest.raises(RuntimeError, match="simulated nvcc failure"):
        upfirdn2d(x, BLUR.cuda(), impl="cuda")
    with pytest.raises(RuntimeError, match="simulated nvcc failure"):
        fused_leaky_relu(x, b, impl="cuda")
