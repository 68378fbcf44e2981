"""The one place that reads and writes checkpoints, strictly and safely.

Formats read:

- **ours**: ``{'format': 'clcae.<kind>', 'format_version': 1, 'kwargs': {...}, 'state_dict': {...}, ...}``, plain
  tensors and primitives only, so ``torch.load(weights_only=True)`` reads it and it rebuilds its own network;
- **rosinality** ``.pt`` (``g_ema``, ``g``, ``d``, ``latent_avg``, optimiser states), the layout pSp/e4e/CLCAE use
  for their StyleGAN2 weights; the configuration is inferred from tensor shapes;
- **official pSp / e4e / CLCAE** training checkpoints (``{'state_dict': encoder.* + decoder.*, 'opts', ...}``): the
  generator is taken from ``decoder.*``;
- **NVIDIA stylegan2-ada-pytorch** ``.pkl`` network pickles, through a restricted unpickler that imports nothing
  from the file: persistent objects become plain data (their embedded ``module_src`` is kept as a string and never
  executed), tensors are rebuilt with ``torch.load(weights_only=True)``, and any other global is refused.

Inverters (encoder + generator: official CLCAE stage 2, pSp, e4e, and ours) and the official CLCAE stage-1
contrastive encoders load through :func:`load_inverter` and :func:`load_contrastive_encoder` (last section).

Every load is strict: missing or unexpected keys and shape mismatches raise :class:`CheckpointError` naming them.
Writes go to a temporary file in the same folder followed by an atomic rename.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .fileio import atomic_write

__all__ = [
    "CheckpointError", "FORMAT_VERSION", "atomic_save", "load_file", "load_generator", "save_generator",
    "generator_checkpoint", "load_discriminator", "read_generator_source", "infer_generator_config",
    "load_state_dict_strict", "load_nvidia_pickle", "nvidia_generator_to_rosinality", "build_generator",
    "detect_format", "validate_finite",
]

FORMAT_VERSION = 1
_OUR_PREFIX = "clcae."


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not match the network; the message names the file and the keys."""


# ---------------------------------------------------------------------------------------------------- file I/O
def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush to disk, then rename over ``path``.

    An interrupted save leaves the previous file intact. Returns the path.
    """
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def _is_torch_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint file without executing code from it.

    ``torch.save`` files are read with ``weights_only=True``; raw pickles (NVIDIA ``.pkl``) with the restricted
    unpickler of :func:`load_nvidia_pickle`. Raises :class:`CheckpointError` with the file name on any failure.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if not _is_torch_zip(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and not _legacy_torch(path):
            return load_nvidia_pickle(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        if m is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a torch file)") from e
        raise CheckpointError(
            f"{path}: refused to load: the file asks for '{m.group(1)}', which a weights-only load does not allow. "
            "Checkpoints are never unpickled with code execution; nothing from the file was run.") from e
    except Exception as e:  # truncated zip, garbage bytes, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Reads plain data only: any global (class, function) is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def _legacy_torch(path: Path) -> bool:
    """True for the pre-1.6 ``torch.save`` format (a pickle whose first object is the legacy magic number)."""
    try:
        with open(path, "rb") as f:
            magic = _NoGlobalsUnpickler(f).load()
        return isinstance(magic, int) and magic == 0x1950A86A20F9469CFC6C
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------- strictness
def _fmt_keys(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                           what: str = "network", finite: bool = True) -> None:
    """Load ``state_dict`` into ``module``; any missing/unexpected key or shape mismatch raises
    :class:`CheckpointError` that names the keys (and shapes) and the source.

    With ``finite`` (default) a floating tensor holding NaN or Inf is refused too (:func:`validate_finite`: the
    error names the keys, the source and ``what``); pass ``finite=False`` for a module that keeps non-finite values
    on purpose. Nothing is loaded when the file is refused.
    """
    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs network {tuple(expected[k].shape)}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
    if problems:
        raise CheckpointError(f"{source}: the {what} does not match the file: " + " | ".join(problems))
    if finite:
        validate_finite(state_dict, f"{source} ({what})")
    module.load_state_dict(state_dict, strict=True)


def validate_finite(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first keys whose floating tensors hold NaN or Inf."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN/Inf) in {_fmt_keys(bad)}")


# ---------------------------------------------------------------------------------------------------- generator
def infer_generator_config(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """Infer ``size, style_dim, n_mlp, channel_base, channel_max, blur_kernel`` from a rosinality ``g_ema``."""
    try:
        style_dim = sd["style.1.weight"].shape[1]
        n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
        n_rgbs = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
        size = 2 ** (n_rgbs + 2)
        channels = {4: sd["input.input"].shape[1]}
        for i in range(n_rgbs):
            channels[2 ** (i + 3)] = sd[f"convs.{2 * i}.conv.weight"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 generator state dict (no key {e})") from e
    channel_max = max(channels.values())
    below = [(res, c) for res, c in channels.items() if c < channel_max]
    channel_base = min(below)[0] * min(below)[1] if below else channel_max * size
    plan = {res: min(channel_base // res, channel_max) for res in channels}
    if plan != channels:
        raise CheckpointError(f"{source}: channel counts {channels} follow no plan min(base // res, max)")
    blur_kernel = [1, 3, 3, 1]
    if "convs.0.conv.blur.kernel" in sd:
        k = sd["convs.0.conv.blur.kernel"].double().sum(0)
        blur_kernel = [round(float(v), 6) for v in (k / k.min())]
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_base=channel_base, channel_max=channel_max,
                blur_kernel=blur_kernel)


def build_generator(kwargs: Mapping[str, Any]):
    """Construct a :class:`~clcae.networks.stylegan2.Generator` from constructor kwargs."""
    from .networks.stylegan2 import Generator

    return Generator(**kwargs)


def _latent_avg_vector(latent_avg: torch.Tensor | None, style_dim: int, source: str) -> torch.Tensor | None:
    if latent_avg is None:
        return None
    la = latent_avg.detach().float()
    if la.numel() == style_dim:
        return la.reshape(style_dim)
    if la.ndim >= 2 and la.shape[-1] == style_dim and bool((la.reshape(-1, style_dim) == la.reshape(-1, style_dim)[0]).all()):
        return la.reshape(-1, style_dim)[0]
    raise CheckpointError(f"{source}: latent_avg has shape {tuple(la.shape)}; expected [{style_dim}] "
                          "(or rows that repeat one vector)")


def read_generator_source(path: str | os.PathLike, key: str = "g_ema") -> tuple[dict, dict, torch.Tensor | None]:
    """Read any supported generator file as ``(kwargs, rosinality_state_dict, latent_avg or None)``.

    ``key`` picks ``'g_ema'`` (default) or ``'g'`` in rosinality files and ``'G_ema'``/``'G'`` in NVIDIA pickles.
    """
    path = Path(path)
    obj = load_file(path)
    fmt = detect_format(obj)
    src = str(path)
    if fmt == "clcae":
        if obj.get("kind") != "generator":
            raise CheckpointError(f"{src}: this is a clcae '{obj.get('kind')}' checkpoint, not a generator")
        _check_version(obj, src)
        return dict(obj["kwargs"]), obj["state_dict"], obj.get("latent_avg")
    if fmt == "rosinality":
        if key not in obj:
            raise CheckpointError(f"{src}: no '{key}' entry (has: {_fmt_keys(obj.keys())})")
        sd = obj[key]
        kwargs = infer_generator_config(sd, src)
        stored = obj.get("g_kwargs")  # our training checkpoints keep the constructor arguments beside g/g_ema
        if isinstance(stored, dict):
            clash = {k: (v, stored[k]) for k, v in kwargs.items() if k in stored and k != "blur_kernel"
                     and stored[k] != v}
            if clash:
                raise CheckpointError(f"{src}: stored g_kwargs disagree with the tensor shapes: "
                                      + ", ".join(f"{k}: shapes say {a}, file says {b}" for k, (a, b) in clash.items()))
            kwargs.update(stored)
        return kwargs, sd, obj.get("latent_avg")
    if fmt == "official":
        sd = {k[len("decoder."):]: v for k, v in obj["state_dict"].items() if k.startswith("decoder.")}
        if not sd:
            raise CheckpointError(f"{src}: the checkpoint has no decoder.* weights")
        return infer_generator_config(sd, src), sd, obj.get("latent_avg")
    if fmt == "nvidia":
        nv_key = {"g_ema": "G_ema", "g": "G"}.get(key, key)
        if nv_key not in obj:
            raise CheckpointError(f"{src}: no '{nv_key}' network in the pickle (has: {_fmt_keys(obj.keys())})")
        return nvidia_generator_to_rosinality(obj[nv_key], src)
    raise CheckpointError(f"{src}: unrecognised checkpoint layout (top-level keys: "
                          f"{_fmt_keys(obj.keys()) if isinstance(obj, dict) else type(obj).__name__})")


def detect_format(obj: Any) -> str:
    """``'clcae'``, ``'rosinality'``, ``'official'`` (pSp/e4e/CLCAE), ``'nvidia'`` or ``'unknown'``."""
    if isinstance(obj, dict):
        fmt = obj.get("format")
        if isinstance(fmt, str) and fmt.startswith(_OUR_PREFIX):
            return "clcae"
        if "g_ema" in obj or ("g" in obj and "d" in obj):
            return "rosinality"
        if "state_dict" in obj and "opts" in obj:
            return "official"
        if any(isinstance(v, _PersistentObject) for v in obj.values()):
            return "nvidia"
    return "unknown"


def _check_version(obj: Mapping, src: str) -> None:
    v = obj.get("format_version")
    if not isinstance(v, int) or v < 1 or v > FORMAT_VERSION:
        raise CheckpointError(f"{src}: format_version {v!r} is not supported by this clcae "
                              f"(reads 1..{FORMAT_VERSION}); upgrade the package")


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu", key: str = "g_ema",
                   impl: str = "auto", **overrides):
    """Load an eval-mode generator from our format, a rosinality ``.pt``, an official pSp/e4e/CLCAE checkpoint
    (its ``decoder.*``) or an NVIDIA ``.pkl``.

    The configuration is read from our files and inferred from tensor shapes otherwise; ``overrides`` (e.g.
    ``lr_mlp=0.01``, ``size=...``) replace inferred values. ``G.latent_avg`` is set from the file when it has one,
    else estimated from 4096 mapped samples (and ``G.latent_avg_source`` says which).
    """
    kwargs, sd, latent_avg = read_generator_source(path, key=key)
    kwargs.update(overrides)
    G = build_generator(kwargs)
    validate_finite(sd, str(path))
    load_state_dict_strict(G, sd, str(path), "generator")
    la = _latent_avg_vector(latent_avg, G.style_dim, str(path))
    if la is not None:
        G.latent_avg.copy_(la)
        G.latent_avg_source = "file"
    else:
        G.latent_avg.copy_(G.mean_latent(4096))
        G.latent_avg_source = "estimated"
    G.set_impl(impl)
    return G.to(device).eval().requires_grad_(False)


def generator_checkpoint(G: nn.Module, extra: Mapping[str, Any] | None = None) -> dict:
    """Our self-describing generator checkpoint as a dict of tensors and primitives."""
    ckpt = {"format": _OUR_PREFIX + "generator", "kind": "generator", "format_version": FORMAT_VERSION,
            "kwargs": dict(G.config), "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
            "latent_avg": G.latent_avg.detach().cpu().clone()}
    if extra:
        ckpt.update(extra)
    return ckpt


def save_generator(G: nn.Module, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``G`` in our format (atomically); loadable with ``torch.load(weights_only=True)``."""
    return atomic_save(generator_checkpoint(G, extra), path)


def load_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu", **overrides):
    """Load the discriminator ``d`` of a rosinality checkpoint (configuration inferred from the shapes)."""
    from .networks.stylegan2 import Discriminator

    obj = load_file(path)
    if detect_format(obj) != "rosinality" or "d" not in obj:
        raise CheckpointError(f"{path}: no rosinality discriminator ('d') in this file")
    sd = obj["d"]
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    size = 2 ** (n_blocks + 2)
    channels = {size: sd["convs.0.0.weight"].shape[0]}
    for i in range(1, n_blocks + 1):
        channels[size // 2 ** i] = sd[f"convs.{i}.conv2.1.weight"].shape[0]
    channel_max = max(channels.values())
    below = [(r, c) for r, c in channels.items() if c < channel_max]
    kwargs = dict(size=size, channel_base=(min(below)[0] * min(below)[1]) if below else channel_max * size,
                  channel_max=channel_max)
    kwargs.update(overrides)
    D = Discriminator(**kwargs)
    load_state_dict_strict(D, sd, str(path), "discriminator")
    return D.to(device).eval()


# ---------------------------------------------------------------------------------------------------- NVIDIA pkl
class _PersistentObject:
    """What an NVIDIA persistent network becomes: its ``meta`` as data. Nothing from ``module_src`` runs."""

    def __init__(self, meta: dict):
        self.meta = meta

    @property
    def class_name(self) -> str:
        return self.meta.get("class_name", "?")

    @property
    def state(self) -> dict:
        return self.meta.get("state", {})

    def __repr__(self) -> str:
        return f"<persistent {self.class_name}>"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


def _storage_from_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np
    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _PersistentObject,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib.easydict", "EasyDict"): _EasyDict,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = multiarray.scalar
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, source: str):
        super().__init__(f)
        self._allowed = _allowed_globals()
        self._source = source

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        fn = self._allowed.get((module, name))
        if fn is None:
            raise CheckpointError(
                f"{self._source}: refused to load: the pickle asks for '{module}.{name}', which is not on the "
                "allow-list of data-only constructors (nothing from the file was run)")
        return fn

    def persistent_load(self, pid):
        raise CheckpointError(f"{self._source}: refused to load: unexpected persistent id in the pickle")


def load_nvidia_pickle(path: str | os.PathLike) -> dict:
    """Read an NVIDIA network pickle as data: ``{'G': _PersistentObject, 'G_ema': ..., 'D': ..., ...}``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, str(path)).load()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable network pickle ({type(e).__name__}: {e})") from e


def _flatten_module(obj: _PersistentObject, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Flatten a persistent module tree into ``(state_dict, {module_path: attributes})``."""
    tensors: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict] = {}
    st = obj.state if isinstance(obj, _PersistentObject) else obj
    if not isinstance(st, dict):
        raise CheckpointError(f"unexpected module state at '{prefix}'")
    attrs[prefix.rstrip(".")] = {k: v for k, v in st.items() if not k.startswith("_") or k == "_init_kwargs"}
    for group in ("_parameters", "_buffers"):
        for name, t in (st.get(group) or {}).items():
            if t is not None:
                tensors[prefix + name] = t.detach() if isinstance(t, torch.Tensor) else t
    for name, sub in (st.get("_modules") or {}).items():
        if sub is None:
            continue
        sub_t, sub_a = _flatten_module(sub, prefix + name + ".")
        tensors.update(sub_t)
        attrs.update(sub_a)
    return tensors, attrs


def nvidia_generator_to_rosinality(net: _PersistentObject, source: str = "pkl") -> tuple[dict, dict, torch.Tensor]:
    """Convert an NVIDIA stylegan2-ada-pytorch ``Generator`` to ``(kwargs, rosinality_state_dict, latent_avg)``.

    Supports unconditional generators with the 'skip' architecture (the StyleGAN2 default). The conversion is a
    renaming plus reshapes: the two implementations compute the same function (checked against NVIDIA's own
    outputs in the tests).
    """
    if not isinstance(net, _PersistentObject) or net.class_name != "Generator":
        raise CheckpointError(f"{source}: expected an NVIDIA Generator, got {net!r}")
    sd, attrs = _flatten_module(net)
    top = attrs[""]
    init = top.get("_init_kwargs") or {}
    syn_kwargs = dict(init.get("synthesis_kwargs") or {})
    map_kwargs = dict(init.get("mapping_kwargs") or {})
    if top.get("c_dim", 0):
        raise CheckpointError(f"{source}: conditional generators (c_dim={top['c_dim']}) are not supported")
    if top["z_dim"] != top["w_dim"]:
        raise CheckpointError(f"{source}: z_dim {top['z_dim']} != w_dim {top['w_dim']} has no rosinality layout")
    if syn_kwargs.get("architecture", "skip") != "skip":
        raise CheckpointError(f"{source}: synthesis architecture {syn_kwargs.get('architecture')!r} is not 'skip'")
    if top.get("img_channels", 3) != 3:
        raise CheckpointError(f"{source}: {top['img_channels']}-channel generators are not supported")
    size = int(top["img_resolution"])
    log_size = size.bit_length() - 1
    style_dim = int(top["w_dim"])
    n_mlp = len([k for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    lr_mlp = float(map_kwargs.get("lr_multiplier", 0.01))
    kwargs = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, lr_mlp=lr_mlp,
                  channel_base=int(syn_kwargs.get("channel_base", 32768)),
                  channel_max=int(syn_kwargs.get("channel_max", 512)), blur_kernel=[1, 3, 3, 1])
    conv_clamp = syn_kwargs.get("conv_clamp")
    if conv_clamp is not None:
        kwargs["conv_clamp"] = float(conv_clamp)

    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"{source}: NVIDIA generator lacks '{key}'")
        used.add(key)
        return sd[key].detach().float().clone()

    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight")
        out[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias")
    latent_avg = take("mapping.w_avg")

    def layer(src: str, dst: str, noise_idx: int, up: bool):
        out[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        out[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
        out[f"{dst}.activate.bias"] = take(f"{src}.bias")
        out[f"noises.noise_{noise_idx}"] = take(f"{src}.noise_const").reshape(1, 1, *sd[f"{src}.noise_const"].shape)
        if up:
            f = take(f"{src}.resample_filter")
            out[f"{dst}.conv.blur.kernel"] = f.outer(f) * 4 if f.ndim == 1 else f * 4
        elif f"{src}.resample_filter" in sd:
            used.add(f"{src}.resample_filter")

    def torgb(src: str, dst: str, up: bool, filt_src: str | None):
        out[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(1, -1, 1, 1)
        if up and filt_src:
            f = take(filt_src)
            out[f"{dst}.upsample.kernel"] = f.outer(f) * 4 if f.ndim == 1 else f * 4

    out["input.input"] = take("synthesis.b4.const").unsqueeze(0)
    layer("synthesis.b4.conv1", "conv1", 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", up=False, filt_src=None)
    if "synthesis.b4.resample_filter" in sd:
        used.add("synthesis.b4.resample_filter")
    for i, res_log in enumerate(range(3, log_size + 1)):
        b = f"synthesis.b{2 ** res_log}"
        layer(f"{b}.conv0", f"convs.{2 * i}", 2 * i + 1, up=True)
        layer(f"{b}.conv1", f"convs.{2 * i + 1}", 2 * i + 2, up=False)
        torgb(f"{b}.torgb", f"to_rgbs.{i}", up=True, filt_src=f"{b}.resample_filter")
    left = set(sd) - used
    if left:
        raise CheckpointError(f"{source}: NVIDIA generator has tensors this converter does not map: {_fmt_keys(left)}")
    return kwargs, out, latent_avg


# ==================================================================================================== inverters
# Official CLCAE (stage 2 ``AFPSP``) / pSp / e4e inversion checkpoints, the official CLCAE stage-1 contrastive
# encoders, and our own inverter checkpoints. Networks are built on the meta device, checked key by key against the
# file (:func:`load_state_dict_strict`), then take over the file's tensors (``assign=True``), so a 1.4 GB checkpoint
# is never held twice in memory. See docs/OFFICIAL_CHECKPOINTS.md.
__all__ += ["load_inverter", "inverter_from_checkpoint", "inverter_checkpoint", "save_inverter",
            "load_contrastive_encoder"]

#: CLCAE ablation switches whose network layout these loaders do not build.
_CLCAE_UNSUPPORTED_OPTS = {
    "no_feature_attention": "replaces the F-branch cross-attention and CNN by plain strided convs",
    "no_res": "replaces the F-branch queries by a transposed-conv decoder of the code",
    "not_for_feature": "drops the F branch (a W+-only model)",
}
#: ``opts['encoder_type']`` of the official pSp / e4e checkpoints that load (the others are not built here).
_PSP_ENCODER_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}


def _official_opts(obj: Mapping, src: str) -> dict:
    opts = obj.get("opts")
    if not isinstance(opts, dict):
        raise CheckpointError(f"{src}: 'opts' is {type(opts).__name__}, expected the dict the official code saves")
    return opts


def _infer_trunk_kwargs(sd: Mapping[str, torch.Tensor], prefix: str, src: str) -> dict:
    """IR-SE trunk arguments (depth, widths, input channels, SE) from the tensor shapes under ``prefix``."""
    from .networks.backbones import IRSE_STAGE_UNITS

    n_units = len([k for k in sd if re.fullmatch(re.escape(prefix) + r"body\.\d+\.res_layer\.1\.weight", k)])
    depths = {sum(units): depth for depth, units in IRSE_STAGE_UNITS.items()}
    if n_units not in depths or f"{prefix}input_layer.0.weight" not in sd:
        raise CheckpointError(f"{src}: no IR-SE trunk under '{prefix}' ({n_units} body units; known depths: "
                              + ", ".join(f"IR-{d} = {n} units" for n, d in sorted(depths.items())) + ")")
    depth = depths[n_units]
    units = IRSE_STAGE_UNITS[depth]
    starts = [sum(units[:i]) for i in range(4)]
    widths = [int(sd[f"{prefix}body.{s}.res_layer.1.weight"].shape[0]) for s in starts]
    # the reduction from the widest stage (narrow stages clamp the squeeze width at 1)
    fc1 = sd.get(f"{prefix}body.{starts[3]}.res_layer.5.fc1.weight")
    return dict(num_layers=depth, in_channels=int(sd[f"{prefix}input_layer.0.weight"].shape[1]), widths=widths,
                use_se=fc1 is not None, se_reduction=widths[3] // int(fc1.shape[0]) if fc1 is not None else 16)


def _same_generator(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _resolve_latent_avg(generator: Any, opts: Mapping, base_dir: Path | None, style_dim: int, src: str,
                        decoder_sd: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, str]:
    """``(latent_avg [style_dim], where it came from)`` for a checkpoint that does not store it.

    Order: ``generator`` (a Generator, or a path to a StyleGAN2 file with ``latent_avg``); else the file named by
    ``opts['stylegan_weights']``, relative to ``base_dir`` (the checkpoint's folder), then to the cwd.
    """
    if generator is not None:
        if isinstance(generator, nn.Module):
            la = getattr(generator, "latent_avg", None)
            if la is None:
                raise CheckpointError(f"{src}: the generator given has no latent_avg")
            if getattr(generator, "latent_avg_source", "file") != "file":
                warnings.warn(f"{src}: the generator's latent_avg was {generator.latent_avg_source}, not read from "
                              "its file: codes will be offset from the official ones", stacklevel=3)
            return _latent_avg_vector(la, style_dim, src), "generator argument"
        gpath = Path(generator)
        _, gsd, la = read_generator_source(gpath)
        if la is None:
            raise CheckpointError(f"{gpath}: this StyleGAN2 file holds no latent_avg, which {src} needs")
        if decoder_sd is not None and not _same_generator(gsd, decoder_sd):
            warnings.warn(f"{gpath}: its generator weights differ from the decoder stored in {src}; is it the "
                          "StyleGAN2 file this model was trained with? (its latent_avg is used)", stacklevel=3)
        return _latent_avg_vector(la, style_dim, str(gpath)), str(gpath)
    name = opts.get("stylegan_weights")
    if not name:
        raise CheckpointError(f"{src}: the checkpoint holds no latent_avg and its opts name no 'stylegan_weights'; "
                              "pass generator=<StyleGAN2 .pt with 'latent_avg'> or a loaded Generator")
    p = Path(name)
    candidates = [p] if p.is_absolute() else [c for c in ((base_dir / p) if base_dir is not None else None,
                                                          Path.cwd() / p) if c is not None]
    for c in candidates:
        if c.is_file():
            _, gsd, la = read_generator_source(c)
            if la is None:
                raise CheckpointError(f"{c}: this StyleGAN2 file holds no latent_avg, which {src} needs")
            if decoder_sd is not None and not _same_generator(gsd, decoder_sd):
                warnings.warn(f"{c}: its generator weights differ from the decoder stored in {src} "
                              "(its latent_avg is used)", stacklevel=3)
            return _latent_avg_vector(la, style_dim, str(c)), str(c)
    raise CheckpointError(
        f"{src}: the checkpoint holds no latent_avg; the official code reads it from the StyleGAN2 file named by "
        f"opts['stylegan_weights'] = '{name}', which was not found (looked for: "
        + ", ".join(str(c) for c in candidates)
        + "). Pass generator=<path to that file, a rosinality .pt with 'g_ema' and 'latent_avg'> or a Generator.")


def _official_inverter_kwargs(sd: Mapping[str, torch.Tensor], opts: Mapping, src: str,
                              input_size: Sequence[int] | None) -> dict:
    """:func:`~clcae.inversion.build_inverter` kwargs for an official checkpoint, from its tensors and opts."""
    from .networks.encoders import DEFAULT_IDX_K, n_styles_for_size
    from .networks.stylegan2 import channel_plan

    if "logit_scale" in sd or "pos_embedding" in sd:
        raise CheckpointError(f"{src}: this is a CLCAE stage-1 contrastive encoder; load it with "
                              "load_contrastive_encoder()")
    dec_sd = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    if not dec_sd or not any(k.startswith("encoder.") for k in sd):
        raise CheckpointError(f"{src}: expected encoder.* and decoder.* weights (an official pSp / e4e / CLCAE "
                              "training checkpoint); found neither or only one")
    gen = infer_generator_config(dec_sd, src)
    size, style_dim = gen["size"], gen["style_dim"]
    n_styles = n_styles_for_size(size)
    trunk = _infer_trunk_kwargs(sd, "encoder.", src)
    if trunk["in_channels"] != 3:
        raise CheckpointError(f"{src}: the encoder takes {trunk['in_channels']} input channels; only RGB-input "
                              "(input_nc=3) inversion encoders are supported")
    dataset_type = str(opts.get("dataset_type") or "")
    if input_size is None:
        input_size = (192, 256) if "car" in dataset_type.lower() else (256, 256)
    for key in ("output_size", "stylegan_size"):
        if opts.get(key) is not None and int(opts[key]) != size:
            raise CheckpointError(f"{src}: opts['{key}'] = {opts[key]} but the stored decoder is {size} px")
    is_clcae = any(k.startswith(("encoder.styles_others.", "encoder.cross_attention.", "encoder.content_layer."))
                   for k in sd)
    if is_clcae:
        for flag, why in _CLCAE_UNSUPPORTED_OPTS.items():
            if opts.get(flag):
                raise CheckpointError(f"{src}: opts['{flag}'] is set: this CLCAE ablation ({why}) is not supported")
        if opts.get("learn_in_w") is False:
            raise CheckpointError(f"{src}: opts['learn_in_w'] is False; the official CLCAE model only runs with "
                                  "--learn_in_w (latent_avg as one [1, 512] row)")
        if opts.get("encoder_type", "GradualStyleEncoder") != "GradualStyleEncoder":
            raise CheckpointError(f"{src}: CLCAE with encoder_type {opts['encoder_type']!r} is not supported")
        # opts['n_styles'] is not used by the official CLCAE network (it counts layers from output_size; the car
        # release keeps the default 18), so it is not checked here.
        conv0 = sd.get("encoder.content_layer.convs.0.weight")
        feature_channels = int(conv0.shape[0]) if conv0 is not None else 512
        feature_downsample = len([k for k in sd if re.fullmatch(r"encoder\.content_layer\.convs\.\d+\.weight", k)])
        idx_k = DEFAULT_IDX_K if opts.get("idx_k") is None else int(opts["idx_k"])
        res = 2 ** (2 + idx_k // 2)
        channels = channel_plan(size, gen["channel_base"], gen["channel_max"])
        f_side = max(input_size) // 4 // 2 ** feature_downsample
        if not 0 <= idx_k < n_styles or res != f_side or channels.get(res) != feature_channels:
            raise CheckpointError(
                f"{src}: opts['idx_k'] = {idx_k}: f is [{feature_channels}, {f_side}, {f_side}] but the generator "
                f"activation at index {idx_k} is [{channels.get(res)}, {res}, {res}]")
        lin1 = sd.get("encoder.feature_cross_attention.linear1.weight")
        encoder = dict(trunk, style_dim=style_dim, n_styles=n_styles, w_attention=not opts.get("no_w_attention"),
                       feature_channels=feature_channels, feature_downsample=feature_downsample,
                       dim_feedforward=int(lin1.shape[0]) if lin1 is not None else 1024)
        return dict(arch="clcae", encoder=encoder, generator=gen, input_size=list(input_size), idx_k=idx_k)
    etype = opts.get("encoder_type")
    arch = _PSP_ENCODER_TYPES.get(etype)
    if arch is None:
        raise CheckpointError(f"{src}: encoder_type {etype!r} is not supported (pSp 'GradualStyleEncoder' and e4e "
                              "'Encoder4Editing' are)")
    if arch == "psp" and opts.get("learn_in_w"):
        raise CheckpointError(f"{src}: opts['learn_in_w'] is set, which pSp uses only with its W-space encoders "
                              "(not supported)")
    if opts.get("n_styles") is not None and int(opts["n_styles"]) != n_styles:
        raise CheckpointError(f"{src}: opts['n_styles'] = {opts['n_styles']} but a {size} px decoder has "
                              f"{n_styles} styles")
    encoder = dict(trunk, style_dim=style_dim, n_styles=n_styles)
    return dict(arch=arch, encoder=encoder, generator=gen, input_size=list(input_size),
                start_from_latent_avg=bool(opts.get("start_from_latent_avg", True)))


def _build_and_assign(kwargs: Mapping[str, Any], sd: Mapping[str, torch.Tensor], src: str, what: str,
                      builder) -> nn.Module:
    """Build ``builder(kwargs)`` on the meta device, check ``sd`` against it strictly, then assign its tensors."""
    with torch.device("meta"):
        net = builder(kwargs)
    with warnings.catch_warnings():  # on a meta network this checks keys and shapes; the copy itself is a no-op
        warnings.simplefilter("ignore", UserWarning)
        load_state_dict_strict(net, sd, src, what)
    validate_finite(sd, src)
    net.load_state_dict(sd, strict=True, assign=True)
    for mod in net.modules():  # non-persistent buffers are not in the file: give them real (zero) storage
        for name in mod._non_persistent_buffers_set:
            b = mod._buffers.get(name)
            if b is not None and b.is_meta:
                mod._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{src}: internal error: tensors left unloaded: {_fmt_keys(left)}")
    return net


def inverter_from_checkpoint(obj: Any, source: str = "checkpoint", base_dir: str | os.PathLike | None = None,
                             generator: Any = None, device: str | torch.device = "cpu",
                             input_size: Sequence[int] | None = None, impl: str = "auto", precision: str = "fp32"):
    """Build an eval-mode inverter from an already-read checkpoint object (see :func:`load_inverter`).

    ``base_dir``: the checkpoint's folder, where ``opts['stylegan_weights']`` is looked for first.
    """
    from .inversion import build_inverter

    src = source
    fmt = detect_format(obj)
    avg_image = None
    if fmt == "clcae":
        if obj.get("kind") != "inverter":
            raise CheckpointError(f"{src}: this is a clcae '{obj.get('kind')}' checkpoint, not an inverter")
        _check_version(obj, src)
        kwargs = dict(obj["kwargs"])
        if input_size is not None:
            kwargs["input_size"] = list(input_size)
        sd = obj["state_dict"]
        inv = _build_and_assign(kwargs, sd, src, "inverter", build_inverter)
        latent_avg, la_source = obj.get("latent_avg"), "checkpoint"
        if latent_avg is None:
            raise CheckpointError(f"{src}: our inverter checkpoint has no latent_avg")
        avg_image = obj.get("avg_image")
    elif fmt == "official":
        opts = _official_opts(obj, src)
        sd = obj["state_dict"]
        kwargs = _official_inverter_kwargs(sd, opts, src, input_size)
        d = kwargs["generator"]["style_dim"]
        decoder_sd = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
        base = Path(base_dir) if base_dir is not None else None
        if kwargs["arch"] == "clcae":  # never stored in the official CLCAE checkpoint; resolved before the big build
            latent_avg, la_source = _resolve_latent_avg(generator, opts, base, d, src, decoder_sd)
        elif obj.get("latent_avg") is not None:  # pSp / e4e store it ([18, 512], one row per layer)
            latent_avg, la_source = obj["latent_avg"], "checkpoint"
        elif kwargs["start_from_latent_avg"]:
            latent_avg, la_source = _resolve_latent_avg(generator, opts, base, d, src, decoder_sd)
        else:
            latent_avg, la_source = torch.zeros(d), "unused (start_from_latent_avg is off)"
        inv = _build_and_assign(kwargs, sd, src, f"official {kwargs['arch']} network", build_inverter)
    else:
        raise CheckpointError(f"{src}: not an inverter checkpoint (layout '{fmt}'; top-level keys: "
                              f"{_fmt_keys(obj.keys()) if isinstance(obj, dict) else type(obj).__name__})")
    want = tuple(inv.latent_avg.shape)  # [D] (CLCAE) or [n_latent, D] (pSp / e4e: kept row by row)
    la = latent_avg.detach().float()
    if la.numel() == want[-1]:  # one vector: the same for every layer
        la = la.reshape(1, want[-1]).expand(want) if len(want) == 2 else la.reshape(want)
    elif la.numel() == torch.Size(want).numel():
        la = la.reshape(want)
    if tuple(la.shape) != want:
        raise CheckpointError(f"{src}: latent_avg has shape {tuple(latent_avg.shape)}; this {kwargs['arch']} "
                              f"network needs {list(want)}" + (" (or one row)" if len(want) == 2 else ""))
    inv.latent_avg.copy_(la)
    inv.decoder.latent_avg.copy_(la.reshape(-1, want[-1])[0])
    inv.decoder.latent_avg_source = "file"
    inv.latent_avg_source = la_source
    if avg_image is not None:
        inv.set_avg_image(avg_image, "checkpoint")
    inv.set_impl(impl)
    inv.set_precision(precision)
    return inv.to(device).eval().requires_grad_(False)


def load_inverter(path: str | os.PathLike, generator: Any = None, device: str | torch.device = "cpu",
                  input_size: Sequence[int] | None = None, impl: str = "auto", precision: str = "fp32"):
    """Load an eval-mode :class:`~clcae.inversion.Inverter` (gradients off) from a checkpoint, strictly.

    Reads (always ``weights_only``):

    - the official CLCAE stage-2 checkpoint ``{'state_dict': encoder.* + decoder.*, 'opts', 'iter'}`` (FFHQ
      1024 / 18 styles, cars 512 / 16 styles with 192x256 inputs). It holds no ``latent_avg``: that comes from
      ``generator`` (a path to a rosinality StyleGAN2 file, or a Generator), else from the file named by
      ``opts['stylegan_weights']``, looked for relative to the checkpoint's folder and then the cwd; otherwise a
      :class:`CheckpointError` names the file needed. Unsupported ablations (``no_feature_attention``, ``no_res``,
      ``not_for_feature``) are refused; ``idx_k`` and ``no_w_attention`` are honoured.
    - official pSp / e4e checkpoints (``opts['encoder_type']`` 'GradualStyleEncoder' / 'Encoder4Editing') with
      their ``latent_avg`` ([18, 512] rows, each added to its layer; a single row is repeated);
    - our own inverter checkpoints (:func:`save_inverter`).

    ``generator`` is only consulted for a ``latent_avg`` the checkpoint lacks; the decoder always comes from the
    checkpoint's ``decoder.*``. Every missing or unexpected key, or shape mismatch, raises :class:`CheckpointError`
    naming them (the official
    code loads the encoder with ``strict=False``; this loader never does). The configuration comes from the tensor
    shapes and is checked against ``opts``; ``input_size`` overrides the encoder input size (default 192x256 when
    ``opts['dataset_type']`` names cars, else 256x256); ``impl`` picks the op implementation
    (:meth:`~clcae.inversion.Inverter.set_impl`); ``precision`` is ``'fp32'`` or the opt-in ``'bf16'``
    (:meth:`~clcae.inversion.Inverter.set_precision`).
    """
    path = Path(path)
    return inverter_from_checkpoint(load_file(path), source=str(path), base_dir=path.parent, generator=generator,
                                    device=device, input_size=input_size, impl=impl, precision=precision)


def inverter_checkpoint(inverter: nn.Module, extra: Mapping[str, Any] | None = None) -> dict:
    """Our self-describing inverter checkpoint: ``{'format': 'clcae.inverter', 'kind': 'inverter',
    'format_version', 'kwargs' (inverter.config), 'state_dict' (encoder.* + decoder.*), 'latent_avg',
    'avg_image' ([1, 3, H, W] or None)}`` plus ``extra``; tensors and primitives only."""
    avg = getattr(inverter, "avg_image", None)
    ckpt = {"format": _OUR_PREFIX + "inverter", "kind": "inverter", "format_version": FORMAT_VERSION,
            "kwargs": inverter.config,
            "state_dict": {k: v.detach().cpu() for k, v in inverter.state_dict().items()},
            "latent_avg": inverter.latent_avg.detach().cpu().clone(),
            "avg_image": avg.detach().cpu().clone() if avg is not None else None}
    if extra:
        ckpt.update(extra)
    return ckpt


def save_inverter(inverter: nn.Module, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``inverter`` in our format (atomically); :func:`load_inverter` reads it back."""
    return atomic_save(inverter_checkpoint(inverter, extra), path)


def load_contrastive_encoder(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load an official CLCAE stage-1 encoder (``best_model_image.pt`` / ``best_model_latent.pt``:
    ``{'state_dict', 'opts'}``) strictly, in eval mode with gradients off.

    Returns an :class:`~clcae.networks.contrastive.ImageEncoder` (state dict with ``logit_scale``) or a
    :class:`~clcae.networks.contrastive.LatentEncoder` (with ``pos_embedding``); sizes come from the tensor shapes,
    ``use_norm`` from ``opts`` (default True, as the README runs).
    """
    from .networks.contrastive import ImageEncoder, LatentEncoder

    path = Path(path)
    src = str(path)
    obj = load_file(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), Mapping)):
        raise CheckpointError(f"{src}: expected {{'state_dict', 'opts'}} as the official stage-1 coach saves")
    sd = obj["state_dict"]
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    use_norm = bool(opts.get("use_norm", True))
    try:
        if "logit_scale" in sd:
            # official files are always 256x256; ours record the input size (and the head count) in opts
            input_size = [int(v) for v in opts.get("input_size", (256, 256))]
            trunk = _infer_trunk_kwargs(sd, "encoder.", src)
            if isinstance(opts.get("se_reduction"), int):
                trunk["se_reduction"] = opts["se_reduction"]
            kwargs = dict(trunk, input_size=input_size,
                          style_dim=int(sd["encoder.styles.0.linear.weight"].shape[0]),
                          projection_dim=int(sd["image_projection.lin2.weight"].shape[0]), use_norm=use_norm)
            net = _build_and_assign(kwargs, sd, src, "stage-1 image encoder", lambda kw: ImageEncoder(**kw))
        elif "pos_embedding" in sd:
            kwargs = dict(style_dim=int(sd["pos_embedding"].shape[-1]), nhead=int(opts.get("nhead", 4)),
                          dim_feedforward=int(sd["coarse.linear1.weight"].shape[0]),
                          projection_dim=int(sd["latent_projection.lin2.weight"].shape[0]), use_norm=use_norm)
            net = _build_and_assign(kwargs, sd, src, "stage-1 latent encoder", lambda kw: LatentEncoder(**kw))
        else:
            raise CheckpointError(f"{src}: neither a stage-1 image encoder (logit_scale) nor a latent encoder "
                                  "(pos_embedding)")
    except KeyError as e:
        raise CheckpointError(f"{src}: incomplete stage-1 checkpoint (no key {e})") from e
    return net.to(device).eval().requires_grad_(False)
