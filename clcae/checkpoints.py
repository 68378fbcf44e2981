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

Every load is strict: missing or unexpected keys and shape mismatches raise :class:`CheckpointError` naming them.
Writes go to a temporary file in the same folder followed by an atomic rename.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

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


def _legacy_torch(path: Path) -> bool:
    """True for the pre-1.6 ``torch.save`` format (a pickle starting with the legacy magic number)."""
    try:
        with open(path, "rb") as f:
            u = pickle.Unpickler(f)
            u.find_class = lambda *a: (_ for _ in ()).throw(pickle.UnpicklingError("global"))  # type: ignore
            magic = u.load()
        return magic == 0x1950A86A20F9469CFC6C
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------- strictness
def _fmt_keys(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                           what: str = "network") -> None:
    """Load ``state_dict`` into ``module``; any missing/unexpected key or shape mismatch raises
    :class:`CheckpointError` that names the keys (and shapes) and the source."""
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
