"""Lazy, cached, process-safe builder for the C++/CUDA extensions of :mod:`clcae.ops`.

Nothing here runs at import. :func:`build_extension` compiles a set of sources with
``torch.utils.cpp_extension.load`` (ninja) the first time it is asked for them and loads the result:

- **Cache.** Builds live in ``$CLCAE_EXTENSIONS_DIR`` (default ``~/.cache/clcae/extensions``), one folder per build,
  named ``<name>_<hash>``. The hash covers the sources' contents and file names, the compiler flags, the target GPU
  architectures, the torch and CUDA versions and the Python ABI, so editing a source (or upgrading torch) builds
  afresh while an unchanged one is loaded in well under a second.
- **Concurrency.** A build happens under an OS file lock (released by the kernel if the holder dies) in a private
  temporary folder that is renamed into place only once it is complete. Two processes that ask at once build
  once; a killed build leaves no half-written cache entry behind.
- **Strict mode.** ``CLCAE_OPS_STRICT=1`` or :func:`set_strict` turns the ops' "warn once and fall back to PyTorch"
  behaviour into an error (for CI and benchmarks). The builder itself always raises; the policy lives in
  :mod:`clcae.ops._cuda_ops`, which asks :func:`is_strict`.
- ``CLCAE_OPS_VERBOSE=1`` shows the compiler's output.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

__all__ = ["build_extension", "build_key", "cached_library", "extensions_root", "set_strict", "is_strict",
           "cuda_arch_list", "find_cuda_home"]

# bump when the way builds are made changes (flags, layout), so that old cache entries are not reused
_BUILDER_VERSION = "1"
_LIB_EXT = ".pyd" if sys.platform == "win32" else ".so"

_strict_override: bool | None = None
_process_lock = threading.RLock()
_loaded: dict[str, ModuleType] = {}  # final build folder -> loaded module (one load per process)
_nvcc_version_cache: dict[str, str] = {}


# ----------------------------------------------------------------------------------------------- strict switch
def set_strict(strict: bool | None = True) -> None:
    """Make a failed extension build fatal (``True``), a warning plus PyTorch fallback (``False``), or follow the
    ``CLCAE_OPS_STRICT`` environment variable again (``None``)."""
    global _strict_override
    _strict_override = None if strict is None else bool(strict)


def is_strict() -> bool:
    """Whether a failed build must raise: :func:`set_strict` if it was called, else ``CLCAE_OPS_STRICT``."""
    if _strict_override is not None:
        return _strict_override
    return os.environ.get("CLCAE_OPS_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------- configuration
def extensions_root() -> Path:
    """The cache root: ``$CLCAE_EXTENSIONS_DIR`` or ``~/.cache/clcae/extensions``."""
    env = os.environ.get("CLCAE_EXTENSIONS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clcae" / "extensions"


def cuda_arch_list() -> tuple[list[str], bool]:
    """The GPU architectures to compile for, as ``['8.6', '9.0+PTX']``, and whether torch reads them from the
    environment itself.

    ``TORCH_CUDA_ARCH_LIST`` wins when set. Otherwise: the visible GPUs (clamped to what this torch supports, as
    torch does); with no GPU visible (a build-only check), the oldest architecture this torch supports plus PTX,
    which every newer GPU can JIT-compile.
    """
    import torch

    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env and env != "native":
        return [a for a in re.split(r"[;\s]+", env) if a], True
    supported = sorted({(int(m.group(1)) // 10, int(m.group(1)) % 10)
                        for a in torch.cuda.get_arch_list() if (m := re.fullmatch(r"sm_(\d+)a?", a))})
    archs: set[tuple[int, int]] = set()
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            archs.add(min(cap, supported[-1]) if supported else cap)
    elif supported:
        archs.add(supported[0])
    else:
        archs.add((7, 5))
    names = [f"{major}.{minor}" for major, minor in sorted(archs)]
    names[-1] += "+PTX"
    return names, False


def _gencode_flags(archs: Sequence[str]) -> list[str]:
    flags = []
    for arch in archs:
        num = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def _is_toolkit(path: str | None) -> bool:
    if not path:
        return False
    nvcc = os.path.join(path, "bin", "nvcc.exe" if sys.platform == "win32" else "nvcc")
    return os.path.isfile(nvcc) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def _cuda_home() -> str | None:
    """The CUDA toolkit root: the first of ``$CUDA_HOME``, ``$CUDA_PATH``, torch's guess, the folder above a real
    ``nvcc`` on ``PATH`` and ``/usr/local/cuda`` that holds both ``bin/nvcc`` and ``include/cuda_runtime.h``.

    torch guesses the root from ``which nvcc``, which is wrong when ``nvcc`` on ``PATH`` is a wrapper script
    (``/usr/local/bin/nvcc`` gives ``/usr/local``); checking for the headers avoids that.
    """
    from torch.utils import cpp_extension

    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME,
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None, "/usr/local/cuda"]
    return next((c for c in candidates if _is_toolkit(c)), None)


def find_cuda_home() -> str | None:
    """The CUDA toolkit root a build uses (see :func:`_cuda_home`), or None when there is none."""
    return _cuda_home()


def _nvcc_version() -> str:
    home = _cuda_home()
    if home is None:
        return "nvcc-not-found"
    nvcc = os.path.join(home, "bin", "nvcc")
    if nvcc not in _nvcc_version_cache:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            out = f"nvcc-failed:{type(exc).__name__}"
        _nvcc_version_cache[nvcc] = out.strip().splitlines()[-1] if out.strip() else "nvcc-silent"
    return _nvcc_version_cache[nvcc]


def _digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- file lock
class _FileLock:
    """Exclusive advisory lock on ``path`` for the lifetime of the ``with`` block (no-op where unsupported; the
    atomic rename still keeps the cache consistent then)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.held = False

    def __enter__(self) -> "_FileLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self.held = True
        except ImportError:
            try:
                import msvcrt

                while True:
                    try:
                        msvcrt.locking(self._fd, msvcrt.LK_LOCK, 1)
                        self.held = True
                        break
                    except OSError:  # LK_LOCK gives up after ~10 s; keep waiting for the other build
                        continue
            except ImportError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        assert self._fd is not None
        try:
            if self.held:
                try:
                    import fcntl

                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                except ImportError:
                    import msvcrt

                    os.lseek(self._fd, 0, os.SEEK_SET)
                    msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(self._fd)
            self._fd = None
            self.held = False


# ----------------------------------------------------------------------------------------------- build
def _find_library(folder: Path, module_name: str) -> Path | None:
    """The built library in ``folder``: ``<module_name>.so``, or ``<module_name>_vN.so`` when torch's in-process
    versioner renamed it (it does when one process builds the same name in two folders)."""
    if not folder.is_dir():
        return None
    pattern = re.compile(re.escape(module_name) + r"(_v\d+)?" + re.escape(_LIB_EXT))
    found = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))
    return found[-1] if found else None


def _import_library(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.name[: -len(_LIB_EXT)], str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the extension library {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_key(name: str, sources: Sequence[str | os.PathLike], *, depends: Sequence[str | os.PathLike] = (),
              extra_cflags: Sequence[str] = (), extra_cuda_cflags: Sequence[str] = ()) -> str:
    """The hash that names the cache folder of a build (see the module docstring for what it covers)."""
    import torch

    with_cuda = any(str(s).endswith((".cu", ".cuh")) for s in sources)
    parts: list[str | bytes] = [_BUILDER_VERSION, name, torch.__version__, str(torch.version.cuda),
                                sys.version.split()[0], str(sysconfig.get_config_var("EXT_SUFFIX")), sys.platform,
                                *extra_cflags, "|", *extra_cuda_cflags, "|"]
    if with_cuda:
        archs, from_env = cuda_arch_list()
        parts += ["archs", ";".join(archs), str(from_env), _nvcc_version()]
    for f in [*sources, "|", *depends]:
        if f == "|":
            parts.append("|")
            continue
        p = Path(f)
        parts += [p.name, p.read_bytes()]
    return _digest(parts)[:16]


def _compile_flags(with_cuda: bool, extra_cflags: Sequence[str], extra_cuda_cflags: Sequence[str]
                   ) -> tuple[list[str], list[str]]:
    """The host and nvcc flags of a build (the latter empty without CUDA sources)."""
    cflags = ["-O3", *extra_cflags]
    if not with_cuda:
        return cflags, []
    archs, from_env = cuda_arch_list()
    return cflags, ["-O3", *([] if from_env else _gencode_flags(archs)), *extra_cuda_cflags]


def _build_folder(name: str, sources: Sequence[Path], depends: Sequence[Path], cflags: Sequence[str],
                  cuda_cflags: Sequence[str]) -> tuple[str, Path]:
    """``(module name, cache folder)`` of a build."""
    key = build_key(name, sources, depends=depends, extra_cflags=cflags, extra_cuda_cflags=cuda_cflags)
    module_name = f"{name}_{key}"
    return module_name, extensions_root() / module_name


def cached_library(name: str, sources: Sequence[str | os.PathLike], *, depends: Sequence[str | os.PathLike] = (),
                   extra_cflags: Sequence[str] = (), extra_cuda_cflags: Sequence[str] = ()) -> Path | None:
    """The library :func:`build_extension` would load from the cache for these arguments, or None when that build
    has not been made yet (nothing is compiled or imported)."""
    sources = [Path(s).resolve() for s in sources]
    with_cuda = any(s.suffix in (".cu", ".cuh") for s in sources)
    cflags, cuda_cflags = _compile_flags(with_cuda, extra_cflags, extra_cuda_cflags)
    module_name, final = _build_folder(name, sources, [Path(d).resolve() for d in depends], cflags, cuda_cflags)
    return _find_library(final, module_name)


def build_extension(name: str, sources: Sequence[str | os.PathLike], *, depends: Sequence[str | os.PathLike] = (),
                    extra_cflags: Sequence[str] = (), extra_cuda_cflags: Sequence[str] = (),
                    verbose: bool | None = None) -> ModuleType:
    """Build (or load from the cache) the extension made of ``sources`` and return it as a Python module.

    Args:
        name: a short identifier (``[A-Za-z0-9_]``); the module is named ``<name>_<hash>``, which the sources see as
            ``TORCH_EXTENSION_NAME``.
        sources: ``.cpp`` / ``.cu`` files. Any ``.cu`` file makes it a CUDA build (needs nvcc and a CUDA torch).
        depends: headers the sources include; hashed, not compiled.
        extra_cflags, extra_cuda_cflags: added to the host / nvcc command lines (and to the hash).
        verbose: show the compiler's output (default: ``CLCAE_OPS_VERBOSE``).
    Returns:
        The loaded module. Calls with the same inputs in one process return the same object.
    Raises:
        Whatever the build raises (``RuntimeError`` with the compiler's log for a compile error, ``OSError`` for a
        missing toolchain, ...). Whether that is fatal is up to the caller (see :func:`is_strict`).
    """
    import torch
    from torch.utils import cpp_extension

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"extension name must be an identifier; got {name!r}")
    sources = [Path(s).resolve() for s in sources]
    depends = [Path(d).resolve() for d in depends]
    with_cuda = any(s.suffix in (".cu", ".cuh") for s in sources)
    if verbose is None:
        verbose = os.environ.get("CLCAE_OPS_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")

    if with_cuda:
        if torch.version.cuda is None:
            raise RuntimeError(f"cannot build {name}: this torch ({torch.__version__}) was built without CUDA")
        cuda_home = _cuda_home()
        if cuda_home is None:
            raise RuntimeError(f"cannot build {name}: no CUDA toolkit found (set CUDA_HOME to the folder that "
                               f"holds bin/nvcc and include/cuda_runtime.h)")
    cflags, cuda_cflags = _compile_flags(with_cuda, extra_cflags, extra_cuda_cflags)
    module_name, final = _build_folder(name, sources, depends, cflags, cuda_cflags)
    root = final.parent

    with _process_lock:
        if str(final) in _loaded:
            return _loaded[str(final)]
        root.mkdir(parents=True, exist_ok=True)
        with _FileLock(root / f"{module_name}.lock") as lock:
            library = _find_library(final, module_name)
            if library is not None:
                module = _import_library(library)
            else:
                if lock.held:  # nobody else is building this one: leftovers of killed builds can go
                    for stale in root.glob(f".{module_name}.*"):
                        shutil.rmtree(stale, ignore_errors=True)
                torch_cuda_home = cpp_extension.CUDA_HOME
                if with_cuda:  # torch's build reads its module-level guess; point it at the checked toolkit
                    cpp_extension.CUDA_HOME = cuda_home
                try:
                    module = _build_into(final, module_name, sources, cflags, cuda_cflags, with_cuda, verbose,
                                         cpp_extension)
                finally:
                    cpp_extension.CUDA_HOME = torch_cuda_home
        _loaded[str(final)] = module
        return module


def _build_into(final: Path, module_name: str, sources: list[Path], cflags: list[str], cuda_cflags: list[str],
                with_cuda: bool, verbose: bool, cpp_extension) -> ModuleType:
    """Compile into a private temporary folder next to ``final``, then rename it into place atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{module_name}.", dir=final.parent))
    try:
        module = cpp_extension.load(name=module_name, sources=[str(s) for s in sources], extra_cflags=cflags,
                                    extra_cuda_cflags=cuda_cflags or None, build_directory=str(tmp),
                                    verbose=verbose, with_cuda=with_cuda)
        if final.exists() and _find_library(final, module_name) is None:
            shutil.rmtree(final, ignore_errors=True)  # an incomplete folder not made by this builder
        try:
            os.rename(tmp, final)
        except OSError:
            # Either another process (without a working file lock) finished first, and its build is as good as
            # ours, or the platform refuses to move a loaded library (Windows): the module works either way, and
            # a later build removes the leftover folder.
            shutil.rmtree(tmp, ignore_errors=True)
        return module
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clear_memory_cache() -> None:
    """Forget the modules loaded by this process (tests use it to exercise the on-disk cache)."""
    with _process_lock:
        _loaded.clear()
