"""NVIDIA stylegan2-ada-pytorch ``.pkl`` network pickles: read through a restricted unpickler that imports nothing
from the file (persistent objects become plain data, their embedded ``module_src`` is kept as a string and never
executed; tensors are rebuilt with ``torch.load(weights_only=True)``; any other global is refused), and the
generator converted to the rosinality layout (NVIDIA's ``legacy.py``, the other way round).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .files import CheckpointError, fmt_keys

__all__ = ["PersistentObject", "load_nvidia_pickle", "nvidia_generator_to_rosinality"]


class PersistentObject:
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
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
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
    """Read an NVIDIA network pickle as data: ``{'G': PersistentObject, 'G_ema': ..., 'D': ..., ...}``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, str(path)).load()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable network pickle ({type(e).__name__}: {e})") from e


def _flatten_module(obj: PersistentObject, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Flatten a persistent module tree into ``(state_dict, {module_path: attributes})``."""
    tensors: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict] = {}
    st = obj.state if isinstance(obj, PersistentObject) else obj
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


def nvidia_generator_to_rosinality(net: PersistentObject, source: str = "pkl") -> tuple[dict, dict, torch.Tensor]:
    """Convert an NVIDIA stylegan2-ada-pytorch ``Generator`` to ``(kwargs, rosinality_state_dict, latent_avg)``.

    Supports unconditional generators with the 'skip' architecture (the StyleGAN2 default). The conversion is a
    renaming plus reshapes: the two implementations compute the same function (checked against NVIDIA's own
    outputs in the tests).
    """
    if not isinstance(net, PersistentObject) or net.class_name != "Generator":
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
        raise CheckpointError(f"{source}: NVIDIA generator has tensors this converter does not map: {fmt_keys(left)}")
    return kwargs, out, latent_avg
