"""``clcae doctor``: what this machine can run, and the one-sentence fix for what it cannot.

Each check prints one line ``OK`` / ``WARN`` / ``FAIL``, what it found, and for WARN / FAIL the fix on the next
line. The exit status is 1 when any check FAILs (else 0); ``--json`` prints the same as one JSON object. In order:

- **Python, torch** (its CUDA and cuDNN versions), the **GPU** (name, compute capability, memory) or that there is
  none: without a GPU everything runs on the CPU, which is not a failure;
- the **CUDA toolchain**: ``nvcc`` and ``CUDA_HOME`` (as the ops' builder finds them), the host compiler, ninja,
  ``TORCH_CUDA_ARCH_LIST`` and the architectures a build targets;
- the **CUDA ops build**: the cached build of each extension (``clcae.ops``), loaded; or, with ``--build``, the
  build itself (compiling takes a minute or more; the result is cached, and the ops would build it on their first
  CUDA call anyway);
- the **ops against their reference** on a small tensor: the fast PyTorch path on the CPU, and the CUDA kernels
  when there is a GPU and a build;
- the **CPU**: its features from ``/proc/cpuinfo`` (AVX2, AVX-512, bf16 / AMX), torch's kernel level and threads;
  and the **fastest settings**, measured here: one synthesis of the shipped generator with the reference path, the
  fast path, bf16 autocast and (on the CPU) one thread against all (``--no-bench`` skips it);
- the **optional extras**: dlib and its model files (``[align]``, which ``clcae app`` needs too), the LPIPS trunk
  weights in the torch cache (nothing is downloaded);
- the **shipped models** in ``pretrained/`` (or ``$CLCAE_PRETRAINED_DIR``): each present file loaded as the tools
  load it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["OK", "WARN", "FAIL", "Check", "run_checks", "format_checks", "exit_status", "build_parser", "main"]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: Largest difference from the reference that an op may show on the check's float32 tensors.
OPS_TOLERANCE = 1e-4
#: Present when the NVIDIA kernel driver is loaded.
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
#: CPU flags reported (``/proc/cpuinfo`` names).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


@dataclasses.dataclass
class Check:
    """One line of the report.

    Attributes:
        name: what was checked (``torch``, ``gpu``, ``ops build``, ``model generator``, ...).
        status: :data:`OK`, :data:`WARN` or :data:`FAIL`.
        detail: what was found, one line.
        fix: for WARN / FAIL, the one sentence that fixes it.
        data: the values behind the line, for ``--json``.
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def _run(command: list[str]) -> str:
    """The first non-empty line a command prints, or '' when it cannot run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _quiet_cpp_extension() -> None:
    """torch's cpp_extension logs its own CUDA_HOME guess at import (wrong where nvcc on PATH is a wrapper); the
    nvcc line reports the toolkit the ops' builder actually uses instead."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---------------------------------------------------------------------------------------------------- platform
def check_python() -> Check:
    version = sys.version.split()[0]
    if sys.version_info < (3, 10):
        return Check("python", FAIL, f"{version} ({sys.executable})", "Use Python 3.10 or newer.")
    return Check("python", OK, f"{version} ({sys.executable})", data={"version": version})


def check_torch() -> Check:
    from .version import __version__

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    detail = f"{torch.__version__} ({build}{f', cuDNN {cudnn}' if cudnn else ''}); clcae {__version__}"
    return Check("torch", OK, detail, data={"version": torch.__version__, "cuda": torch.version.cuda,
                                            "cudnn": cudnn, "clcae": __version__})


def check_gpu() -> Check:
    n = _gpu_count()
    if n == 0:
        driver = NVIDIA_DRIVER_FILE.is_file()
        if torch.version.cuda and driver:
            return Check("gpu", WARN, "an NVIDIA driver is loaded but torch sees no GPU",
                         f"Install a torch build whose CUDA ({torch.version.cuda}) the driver supports, and check "
                         "CUDA_VISIBLE_DEVICES.", {"count": 0, "driver": True})
        return Check("gpu", OK, "none: everything runs on the CPU (the PyTorch ops give the same numbers)",
                     data={"count": 0})
    gpus = []
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                     "memory_gib": round(p.total_memory / 2 ** 30, 1)})
    detail = "; ".join(f"cuda:{g['index']} {g['name']} (compute capability {g['capability']}, "
                       f"{g['memory_gib']} GiB)" for g in gpus)
    return Check("gpu", OK, detail, data={"count": n, "devices": gpus})


def check_cuda_toolkit() -> Check:
    from .ops import _build

    home = _build.find_cuda_home()
    env = os.environ.get("CUDA_HOME")
    if home is None:
        data = {"cuda_home": None, "env_cuda_home": env, "nvcc": shutil.which("nvcc")}
        if _gpu_count() and torch.version.cuda:
            return Check("nvcc", WARN, "no CUDA toolkit found: the ops use the PyTorch path on the GPU (slower)",
                         f"Install the CUDA {torch.version.cuda} toolkit and set CUDA_HOME to the folder holding "
                         "bin/nvcc and include/cuda_runtime.h.", data)
        return Check("nvcc", OK, "no CUDA toolkit found (not needed without a GPU)", data=data)
    nvcc = os.path.join(home, "bin", "nvcc")
    try:
        full = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return Check("nvcc", FAIL, f"{nvcc} does not run ({e})", "Reinstall the CUDA toolkit or point CUDA_HOME at a "
                     "working one.", {"cuda_home": home, "nvcc": nvcc})
    m = re.search(r"release (\d+)\.(\d+)", full)
    version = f"{m.group(1)}.{m.group(2)}" if m else "unknown"
    data = {"cuda_home": home, "env_cuda_home": env, "nvcc": nvcc, "version": version}
    detail = f"nvcc {version} in {home}" + ("" if env else " (found; CUDA_HOME is not set, the builder uses it)")
    if torch.version.cuda and m and m.group(1) != torch.version.cuda.split(".")[0]:
        return Check("nvcc", WARN, detail + f", but torch was built with CUDA {torch.version.cuda}",
                     f"Install the CUDA {torch.version.cuda.split('.')[0]}.x toolkit (torch refuses to build "
                     f"extensions with another major version) or a torch built for CUDA {version}.", data)
    return Check("nvcc", OK, detail, data=data)


def check_compiler() -> Check:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        status = WARN if torch.version.cuda else OK
        return Check("compiler", status, f"no C++ compiler ({cxx}) on PATH",
                     "Install g++ (Debian/Ubuntu: apt install g++) to build the CUDA ops." if status == WARN
                     else "", {"cxx": cxx, "path": None})
    return Check("compiler", OK, f"{_run([path, '--version'])} ({path})", data={"cxx": cxx, "path": path})


def check_ninja() -> Check:
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return Check("ninja", WARN, "ninja not found: the CUDA ops cannot be built",
                     "pip install ninja", {"available": False})
    return Check("ninja", OK, _run(["ninja", "--version"]) or "available", data={"available": True})


def check_arch_list() -> Check:
    from .ops import _build

    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    try:
        archs, from_env = _build.cuda_arch_list()
    except Exception as e:  # noqa: BLE001 - a malformed value must not stop the report
        return Check("arch list", FAIL, f"TORCH_CUDA_ARCH_LIST={env!r} cannot be read ({e})",
                     "Set TORCH_CUDA_ARCH_LIST to a list like '8.6;9.0' or unset it.", {"env": env})
    data = {"env": env, "archs": archs}
    where = "from TORCH_CUDA_ARCH_LIST" if from_env else "unset: the visible GPUs, else the oldest this torch supports"
    detail = f"builds target {';'.join(archs)} ({where})"
    for i in range(_gpu_count()):
        major, minor = torch.cuda.get_device_capability(i)
        have = {a.replace("+PTX", "") for a in archs}
        ptx = [a for a in archs if a.endswith("+PTX")]
        covered = f"{major}.{minor}" in have or any(float(a[:-4]) <= major + minor / 10 for a in ptx)
        if from_env and not covered:
            return Check("arch list", WARN, detail + f", which does not cover cuda:{i} ({major}.{minor})",
                         f"Add {major}.{minor} to TORCH_CUDA_ARCH_LIST (or unset it to build for the visible GPUs).",
                         data)
    return Check("arch list", OK, detail, data=data)


# ---------------------------------------------------------------------------------------------------- ops
def check_ops_build(build: bool) -> Check:
    """The cached CUDA build of each op (loaded), or the build itself with ``build``."""
    from .ops import _build, _cuda_ops

    gpu = _gpu_count() > 0
    if not torch.version.cuda:
        return Check("ops build", OK, "not needed: this torch has no CUDA (the PyTorch ops are used)")
    if _build.find_cuda_home() is None and not build:
        if gpu:
            return Check("ops build", WARN, "not built: no CUDA toolkit (the ops run their PyTorch path)",
                         "Install the CUDA toolkit (see the nvcc line) and run clcae doctor --build.")
        return Check("ops build", OK, "not built (no GPU and no CUDA toolkit: the PyTorch ops are used)")
    cached = {op: _cuda_ops.cached_library(op) for op in _cuda_ops.EXTENSION_OPS}
    data: dict[str, Any] = {"cache": str(_build.extensions_root()),
                            "cached": {op: None if p is None else str(p) for op, p in cached.items()}}
    if all(p is not None for p in cached.values()) and not build:
        try:
            for op in _cuda_ops.EXTENSION_OPS:  # a cache hit: loading takes well under a second
                _cuda_ops.load_extension(op)
        except Exception as e:  # noqa: BLE001
            return Check("ops build", FAIL, f"the cached build in {_build.extensions_root()} does not load: {e}",
                         "Delete that folder (or set CLCAE_EXTENSIONS_DIR elsewhere) and run clcae doctor --build.",
                         data)
        run = "" if gpu else " (not run: no GPU)"
        return Check("ops build", OK, f"cached build loaded from {_build.extensions_root()}{run}", data=data)
    if not build:
        missing = ", ".join(op for op, p in cached.items() if p is None)
        if gpu:
            return Check("ops build", WARN, f"{missing} not built yet: the first CUDA call builds it (a minute or "
                         "more, once)", "Run clcae doctor --build to build and check it now.", data)
        return Check("ops build", OK, f"{missing} not built (no GPU needs it); clcae doctor --build compiles them "
                     "to check the toolchain", data=data)
    start = time.perf_counter()
    try:
        for op in _cuda_ops.EXTENSION_OPS:
            _cuda_ops.load_extension(op)
    except Exception as e:  # noqa: BLE001 - any build failure is the finding
        summary = str(e).strip().splitlines()
        return Check("ops build", FAIL, f"the CUDA build failed: {summary[-1] if summary else type(e).__name__}",
                     "Run CLCAE_OPS_VERBOSE=1 clcae doctor --build for the compiler's output; the usual causes are "
                     "an nvcc whose major version differs from torch's CUDA, or a host compiler nvcc does not "
                     "support (set CXX).", dict(data, error=str(e)[-2000:]))
    seconds = time.perf_counter() - start
    data.update(seconds=round(seconds, 1),
                cached={op: str(_cuda_ops.cached_library(op)) for op in _cuda_ops.EXTENSION_OPS})
    run = "" if gpu else " (not run: no GPU)"
    return Check("ops build", OK, f"built in {seconds:.0f} s into {_build.extensions_root()}{run}", data=data)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def check_ops_numerics() -> list[Check]:
    """``upfirdn2d`` and the fused bias + leaky ReLU against their references on small float32 tensors: the fast
    PyTorch path on the CPU; the CUDA kernels on the GPU when a build is loaded."""
    from .ops import _cuda_ops, fused_leaky_relu, fused_leaky_relu_ref, upfirdn2d, upfirdn2d_ref

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 16, 16, generator=g)
    k1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = k1[:, None] * k1[None, :]
    kernel = kernel / kernel.sum()
    bias = torch.randn(8, generator=g)
    cases = [("upfirdn2d up=2", lambda impl, t: upfirdn2d(t, kernel.to(t.device), up=2, pad=(2, 1, 2, 1), impl=impl),
              lambda t: upfirdn2d_ref(t, kernel.to(t.device), up=2, pad=(2, 1, 2, 1))),
             ("upfirdn2d down=2", lambda impl, t: upfirdn2d(t, kernel.to(t.device), down=2, pad=(1, 1, 1, 1),
                                                            impl=impl),
              lambda t: upfirdn2d_ref(t, kernel.to(t.device), down=2, pad=(1, 1, 1, 1))),
             ("bias+lrelu", lambda impl, t: fused_leaky_relu(t, bias.to(t.device), impl=impl),
              lambda t: fused_leaky_relu_ref(t, bias.to(t.device)))]
    runs = [("cpu", "fast", torch.device("cpu"))]
    if _gpu_count() and all(_cuda_ops.cached_library(op) is not None for op in _cuda_ops.EXTENSION_OPS):
        runs.append(("cuda", "cuda", torch.device("cuda")))
    checks = []
    for label, impl, device in runs:
        t = x.to(device)
        diffs = {}
        try:
            for name, fn, ref in cases:
                diffs[name] = _max_diff(fn(impl, t), ref(t))
        except Exception as e:  # noqa: BLE001
            checks.append(Check(f"ops {label}", FAIL, f"impl={impl} raised {type(e).__name__}: {e}",
                                "Run python -m pytest tests/test_ops.py for the failing case.", {"impl": impl}))
            continue
        worst = max(diffs.values())
        detail = f"impl={impl} vs reference: max |diff| {worst:.1e} (" + ", ".join(diffs) + ")"
        if worst > OPS_TOLERANCE:
            checks.append(Check(f"ops {label}", FAIL, detail + f" > {OPS_TOLERANCE:g}",
                                "Use impl='ref' (G.set_impl('ref')) until python -m pytest tests/test_ops.py passes.",
                                {"impl": impl, "max_diff": diffs}))
        else:
            checks.append(Check(f"ops {label}", OK, detail, data={"impl": impl, "max_diff": diffs}))
    if _gpu_count() and len(runs) == 1:
        checks.append(Check("ops cuda", WARN, "CUDA kernels not checked: no cached build",
                            "Run clcae doctor --build."))
    return checks


# ---------------------------------------------------------------------------------------------------- CPU
def cpu_flags(cpuinfo: str | None = None) -> dict[str, Any]:
    """``{'model': str | None, 'flags': {name: bool}}`` for :data:`CPU_FLAGS`, read from ``/proc/cpuinfo`` (or the
    text given); flags are all False where the file does not exist (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), None)
    flag_line = next((line.split(":", 1)[1] for line in cpuinfo.splitlines()
                      if line.startswith(("flags", "Features"))), "")
    present = set(flag_line.split())
    return {"model": model or platform.processor() or None, "flags": {f: f in present for f in CPU_FLAGS}}


def check_cpu() -> Check:
    info = cpu_flags()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        capability = "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    have = [f for f, v in info["flags"].items() if v]
    detail = (f"{info['model'] or platform.machine()}; {cores} core(s) usable, torch uses "
              f"{torch.get_num_threads()} thread(s); kernels {capability}; flags: {' '.join(have) or 'none found'}")
    return Check("cpu", OK, detail, data={**info, "cores": cores, "torch_threads": torch.get_num_threads(),
                                          "torch_capability": capability})


def _time_best(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def check_fastest_settings(reps: int = 3) -> Check:
    """Time one synthesis of the shipped generator (batch 4, best of ``reps`` after a warm-up) with the reference
    path, the fast path and bf16 autocast on the fast path, on the GPU when there is one, and on a CPU with several
    threads also the fast path on one thread; the line names the fastest setting (all agree with the reference)
    and the load average, since timings on a busy machine move."""
    from .checkpoints import load_generator
    from .pretrained import SYNTHFACES_GENERATOR, shipped

    path = shipped(SYNTHFACES_GENERATOR)
    if path is None:
        return Check("fastest", WARN, "not measured: the shipped generator is missing",
                     f"Restore pretrained/{SYNTHFACES_GENERATOR} (git checkout pretrained/).")
    device = torch.device("cuda" if _gpu_count() else "cpu")
    G = load_generator(path, device=device)
    ws = G.mapping(torch.randn(4, G.style_dim, generator=torch.Generator().manual_seed(0)).to(device))
    threads = torch.get_num_threads()
    # (label, impl, bf16 autocast, threads)
    settings = [("ref", "ref", False, threads), ("fast", "fast", False, threads)]
    if device.type == "cuda":
        settings.append(("cuda", "cuda", False, threads))
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        impl = "cuda" if device.type == "cuda" else "fast"
        settings.append((f"{impl}+bf16", impl, True, threads))
    if device.type == "cpu" and threads > 1:
        settings.append(("fast@1 thread", "fast", False, 1))
    timings: dict[str, float] = {}
    images: dict[str, torch.Tensor] = {}

    def render(autocast: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = G.synthesis(ws, noise_mode="const")
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    try:
        for label, impl, autocast, n in settings:
            G.set_impl(impl)
            torch.set_num_threads(n)
            images[label] = render(autocast).float()
            timings[label] = _time_best(lambda: render(autocast), reps)
    finally:
        torch.set_num_threads(threads)
        G.set_impl("auto")
    diffs = {k: _max_diff(v, images["ref"]) for k, v in images.items()}
    fastest = min(timings, key=timings.get)
    ms = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in timings.items())
    _, impl, autocast, n = next(s for s in settings if s[0] == fastest)
    pick = ("impl='ref'" if impl == "ref" else "the default impl='auto'") + (", bf16 autocast" if autocast else "")
    pick += f", {n} thread(s) (--threads {n})" if device.type == "cpu" else ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy = f"; load average {load:.1f}" if load is not None and device.type == "cpu" else ""
    detail = f"{G.size} px generator, batch 4, {device.type}{busy}: {ms}; fastest: {pick}"
    data = {"device": device.type, "threads": threads, "seconds": timings, "max_diff_vs_ref": diffs,
            "fastest": fastest, "load_average": load}
    if diffs["fast"] > 1e-3:
        return Check("fastest", FAIL, detail + f"; but fast differs from ref by {diffs['fast']:.1e}",
                     "Use G.set_impl('ref') and run python -m pytest tests/test_stylegan2.py.", data)
    return Check("fastest", OK, detail, data=data)


# ---------------------------------------------------------------------------------------------------- extras
def check_align_extra() -> Check:
    from .align.detect import INSTALL_HINT, SHAPE_PREDICTOR_68, AlignExtraMissing, import_dlib, model_file

    try:
        dlib = import_dlib()
        predictor = model_file(SHAPE_PREDICTOR_68)
    except (AlignExtraMissing, FileNotFoundError) as e:
        return Check("align extra", WARN, f"clcae align, photo and app cannot find faces: "
                     f"{str(e).split('. Install')[0]}",
                     f"Install the optional extra: {INSTALL_HINT}.", {"available": False})
    return Check("align extra", OK, f"dlib {getattr(dlib, '__version__', '?')}, landmark model {predictor.name} "
                 "(clcae align, photo and app find faces)",
                 data={"available": True, "predictor": str(predictor)})


def check_lpips_weights() -> Check:
    from .losses.perceptual import _backbone_url, default_lpips_backbone_path

    path = default_lpips_backbone_path("alex")
    if not path.is_file():
        return Check("lpips weights", WARN, f"{path} missing: LPIPS losses and metrics are left out (the rest "
                     "runs)", f"Copy torchvision's ImageNet AlexNet file from {_backbone_url('alex')} to {path} "
                     "(nothing is downloaded for you).", {"path": str(path), "present": False})
    return Check("lpips weights", OK, str(path), data={"path": str(path), "present": True})


def check_export_extra() -> Check:
    import importlib

    found = {}
    for name in ("onnx", "onnxruntime"):
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            found[name] = None
    missing = [n for n, v in found.items() if v is None]
    if missing:
        return Check("export extra", WARN, f"{', '.join(missing)} not installed: scripts/export.py and invert.py "
                     "--backend onnxruntime are unavailable (the rest runs)",
                     "Install the optional extra: pip install -e \".[export]\".", {"available": False, **found})
    return Check("export extra", OK, f"onnx {found['onnx']}, onnxruntime {found['onnxruntime']} (ONNX export and "
                 "invert.py --backend onnxruntime)", data={"available": True, **found})


# ---------------------------------------------------------------------------------------------------- models
def check_shipped_models() -> list[Check]:
    """Each shipped model loaded as the tools load it (missing files WARN, files that do not load FAIL)."""
    from .checkpoints import load_contrastive_encoder, load_generator, load_inverter
    from .editing import load_direction
    from .networks.domain import load_domain_net
    from .pretrained import (SYNTHFACES_CLCAE, SYNTHFACES_CLCAE_STAGE1, SYNTHFACES_DIRECTIONS, SYNTHFACES_DOMAIN_NET,
                             SYNTHFACES_E4E, SYNTHFACES_GENERATOR, SYNTHFACES_PSP, pretrained_dir)

    root = pretrained_dir()
    generator: Any = None

    def load_gen(p: Path) -> str:
        nonlocal generator
        generator = load_generator(p)
        return f"{generator.size} px, W+ {generator.n_latent}x{generator.style_dim}"

    def load_inv(p: Path) -> str:
        inv = load_inverter(p, generator=generator)
        return f"{type(inv).__name__}, input {inv.input_size[0]}x{inv.input_size[1]}"

    def load_stage1(p: Path) -> str:
        for f in ("best_model_image.pt", "best_model_latent.pt"):
            load_contrastive_encoder(p / f)
        return "image and latent encoders"

    def load_directions(p: Path) -> str:
        names = sorted(f.stem for f in p.glob("*.pt"))
        if not names:
            raise FileNotFoundError(f"no direction files in {p}")
        for name in names:
            load_direction(p / f"{name}.pt", generator=generator)
        return ", ".join(names)

    models = [("generator", SYNTHFACES_GENERATOR, load_gen), ("clcae", SYNTHFACES_CLCAE, load_inv),
              ("psp", SYNTHFACES_PSP, load_inv), ("e4e", SYNTHFACES_E4E, load_inv),
              ("domain net", SYNTHFACES_DOMAIN_NET, lambda p: type(load_domain_net(p)).__name__),
              ("clcae stage 1", SYNTHFACES_CLCAE_STAGE1, load_stage1),
              ("directions", SYNTHFACES_DIRECTIONS, load_directions)]
    checks = []
    for label, name, load in models:
        path = root / name
        if not path.exists():
            checks.append(Check(f"model {label}", WARN, f"{path} missing",
                                f"Restore it with git checkout {name} in pretrained/ (or set CLCAE_PRETRAINED_DIR).",
                                {"path": str(path), "present": False}))
            continue
        try:
            start = time.perf_counter()
            what = load(path)
            seconds = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - every load failure is a finding
            checks.append(Check(f"model {label}", FAIL, f"{path} does not load: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}",
                                f"Restore the file with git checkout {name} in pretrained/ (it is damaged or "
                                "from another version).", {"path": str(path), "present": True, "loads": False}))
            continue
        checks.append(Check(f"model {label}", OK, f"{name}: {what}",
                            data={"path": str(path), "present": True, "loads": True, "seconds": round(seconds, 2)}))
    return checks


# ---------------------------------------------------------------------------------------------------- report
def _guarded(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an unexpected exception is itself a FAIL line, so the report always completes."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001
        return [Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}",
                      "Report this with the output of clcae doctor --json.")]
    return result if isinstance(result, list) else [result]


def run_checks(build: bool = False, bench: bool = True) -> list[Check]:
    """Every check in report order (see the module docstring); ``build`` compiles the CUDA ops when they are not
    cached, ``bench`` measures the fastest settings."""
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", check_python), ("torch", check_torch), ("gpu", check_gpu), ("nvcc", check_cuda_toolkit),
        ("compiler", check_compiler), ("ninja", check_ninja), ("arch list", check_arch_list),
        ("ops build", lambda: check_ops_build(build)), ("ops", check_ops_numerics), ("cpu", check_cpu)]
    if bench:
        steps.append(("fastest", check_fastest_settings))
    steps += [("align extra", check_align_extra), ("lpips weights", check_lpips_weights),
              ("export extra", check_export_extra), ("models", check_shipped_models)]
    _quiet_cpp_extension()
    checks: list[Check] = []
    for name, fn in steps:
        checks += _guarded(name, fn)
    return checks


def exit_status(checks: list[Check]) -> int:
    """1 when any check FAILed, else 0."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def format_checks(checks: list[Check]) -> str:
    """The text report: one ``STATUS name  detail`` line per check, the fix indented below WARN / FAIL lines, and a
    closing count."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)}
    lines.append(f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``clcae doctor``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", action="store_true",
                   help="compile the CUDA ops now when no cached build exists (a minute or more; cached afterwards)")
    p.add_argument("--no-bench", action="store_true", help="skip the timing of the fastest settings")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the report; returns 1 when any check FAILed, else 0."""
    args = build_parser().parse_args(argv)
    checks = run_checks(build=args.build, bench=not args.no_bench)
    status = exit_status(checks)
    if args.json:
        print(json.dumps({"checks": [dataclasses.asdict(c) for c in checks],
                          "counts": {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)},
                          "exit_status": status}, indent=2, default=str))
    else:
        print(format_checks(checks))
    return status
