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

The pieces below the networks live in :mod:`clcae.formats` (file helpers and strict loading, the safe reader, the
NVIDIA converter, the rosinality layout, the official options); this module builds networks from them and keeps
the public ``load_*`` / ``save_*``, re-exporting the helpers' names.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .formats.files import (FORMAT_VERSION, OUR_PREFIX, CheckpointError, atomic_save, check_version, fmt_keys,
                            load_state_dict_strict, validate_finite)
from .formats.nvidia import load_nvidia_pickle, nvidia_generator_to_rosinality
from .formats.read import detect_format, load_file
from .formats.rosinality import infer_generator_config
from .networks.inverters import build_inverter
from .official_options import infer_trunk_kwargs, official_inverter_kwargs, official_opts

__all__ = [
    "CheckpointError", "FORMAT_VERSION", "atomic_save", "load_file", "load_generator", "save_generator",
    "generator_checkpoint", "load_discriminator", "read_generator_source", "infer_generator_config",
    "load_state_dict_strict", "load_nvidia_pickle", "nvidia_generator_to_rosinality", "build_generator",
    "detect_format", "validate_finite",
]

# ---------------------------------------------------------------------------------------------------- generator
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
        check_version(obj, src)
        return dict(obj["kwargs"]), obj["state_dict"], obj.get("latent_avg")
    if fmt == "rosinality":
        if key not in obj:
            raise CheckpointError(f"{src}: no '{key}' entry (has: {fmt_keys(obj.keys())})")
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
            raise CheckpointError(f"{src}: no '{nv_key}' network in the pickle (has: {fmt_keys(obj.keys())})")
        return nvidia_generator_to_rosinality(obj[nv_key], src)
    raise CheckpointError(f"{src}: unrecognised checkpoint layout (top-level keys: "
                          f"{fmt_keys(obj.keys()) if isinstance(obj, dict) else type(obj).__name__})")


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
    ckpt = {"format": OUR_PREFIX + "generator", "kind": "generator", "format_version": FORMAT_VERSION,
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


# ==================================================================================================== inverters
# Official CLCAE (stage 2 ``AFPSP``) / pSp / e4e inversion checkpoints, the official CLCAE stage-1 contrastive
# encoders, and our own inverter checkpoints. Networks are built on the meta device, checked key by key against the
# file (:func:`load_state_dict_strict`), then take over the file's tensors (``assign=True``), so a 1.4 GB checkpoint
# is never held twice in memory. See docs/OFFICIAL_CHECKPOINTS.md.
__all__ += ["load_inverter", "inverter_from_checkpoint", "inverter_checkpoint", "save_inverter",
            "load_contrastive_encoder"]


def _same_generator(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _latent_avg_from_file(path: Path, style_dim: int, src: str, decoder_sd: Mapping[str, torch.Tensor] | None,
                          question: str = "") -> tuple[torch.Tensor, str]:
    """``(latent_avg [D], its source)`` from a StyleGAN2 file, warning when its weights are not ``decoder_sd``."""
    _, gsd, la = read_generator_source(path)
    if la is None:
        raise CheckpointError(f"{path}: this StyleGAN2 file holds no latent_avg, which {src} needs")
    if decoder_sd is not None and not _same_generator(gsd, decoder_sd):
        warnings.warn(f"{path}: its generator weights differ from the decoder stored in {src}{question} (its "
                      "latent_avg is used)", stacklevel=4)  # the frame the warning named before this helper
    return _latent_avg_vector(la, style_dim, str(path)), str(path)


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
        return _latent_avg_from_file(Path(generator), style_dim, src, decoder_sd,
                                     "; is it the StyleGAN2 file this model was trained with?")
    name = opts.get("stylegan_weights")
    if not name:
        raise CheckpointError(f"{src}: the checkpoint holds no latent_avg and its opts name no 'stylegan_weights'; "
                              "pass generator=<StyleGAN2 .pt with 'latent_avg'> or a loaded Generator")
    p = Path(name)
    candidates = [p] if p.is_absolute() else [c for c in ((base_dir / p) if base_dir is not None else None,
                                                          Path.cwd() / p) if c is not None]
    for c in candidates:
        if c.is_file():
            return _latent_avg_from_file(c, style_dim, src, decoder_sd)
    raise CheckpointError(
        f"{src}: the checkpoint holds no latent_avg; the official code reads it from the StyleGAN2 file named by "
        f"opts['stylegan_weights'] = '{name}', which was not found (looked for: "
        + ", ".join(str(c) for c in candidates)
        + "). Pass generator=<path to that file, a rosinality .pt with 'g_ema' and 'latent_avg'> or a Generator.")


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
        raise CheckpointError(f"{src}: internal error: tensors left unloaded: {fmt_keys(left)}")
    return net


def inverter_from_checkpoint(obj: Any, source: str = "checkpoint", base_dir: str | os.PathLike | None = None,
                             generator: Any = None, device: str | torch.device = "cpu",
                             input_size: Sequence[int] | None = None, impl: str = "auto", precision: str = "fp32"):
    """Build an eval-mode inverter from an already-read checkpoint object (see :func:`load_inverter`).

    ``base_dir``: the checkpoint's folder, where ``opts['stylegan_weights']`` is looked for first.
    """
    src = source
    fmt = detect_format(obj)
    avg_image = None
    if fmt == "clcae":
        if obj.get("kind") != "inverter":
            raise CheckpointError(f"{src}: this is a clcae '{obj.get('kind')}' checkpoint, not an inverter")
        check_version(obj, src)
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
        opts = official_opts(obj, src)
        sd = obj["state_dict"]
        kwargs = official_inverter_kwargs(sd, opts, src, input_size)
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
                              f"{fmt_keys(obj.keys()) if isinstance(obj, dict) else type(obj).__name__})")
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
    ckpt = {"format": OUR_PREFIX + "inverter", "kind": "inverter", "format_version": FORMAT_VERSION,
            "kwargs": inverter.config,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in inverter.state_dict().items()},
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
            trunk = infer_trunk_kwargs(sd, "encoder.", src)
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
