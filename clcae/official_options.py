"""The official CLCAE / pSp / e4e training checkpoints (``{'state_dict', 'opts'}``): their options read into the
constructor arguments of our networks (docs/OFFICIAL_CHECKPOINTS.md). Used by :func:`clcae.checkpoints.load_inverter`
and :func:`clcae.checkpoints.load_contrastive_encoder`.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch

from .networks.backbones import IRSE_STAGE_UNITS
from .networks.encoders import DEFAULT_IDX_K, n_styles_for_size
from .networks.stylegan2 import channel_plan
from .formats.files import CheckpointError
from .formats.rosinality import infer_generator_config

__all__ = ["CLCAE_UNSUPPORTED_OPTS", "PSP_ENCODER_TYPES", "official_opts", "infer_trunk_kwargs",
           "official_inverter_kwargs"]

#: CLCAE ablation switches whose network layout these loaders do not build.
CLCAE_UNSUPPORTED_OPTS = {
    "no_feature_attention": "replaces the F-branch cross-attention and CNN by plain strided convs",
    "no_res": "replaces the F-branch queries by a transposed-conv decoder of the code",
    "not_for_feature": "drops the F branch (a W+-only model)",
}
#: ``opts['encoder_type']`` of the official pSp / e4e checkpoints that load (the others are not built here).
PSP_ENCODER_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}


def official_opts(obj: Mapping, src: str) -> dict:
    opts = obj.get("opts")
    if not isinstance(opts, dict):
        raise CheckpointError(f"{src}: 'opts' is {type(opts).__name__}, expected the dict the official code saves")
    return opts


def infer_trunk_kwargs(sd: Mapping[str, torch.Tensor], prefix: str, src: str) -> dict:
    """IR-SE trunk arguments (depth, widths, input channels, SE) from the tensor shapes under ``prefix``."""
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


def official_inverter_kwargs(sd: Mapping[str, torch.Tensor], opts: Mapping, src: str,
                              input_size: Sequence[int] | None) -> dict:
    """:func:`~clcae.inversion.build_inverter` kwargs for an official checkpoint, from its tensors and opts."""
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
    trunk = infer_trunk_kwargs(sd, "encoder.", src)
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
        for flag, why in CLCAE_UNSUPPORTED_OPTS.items():
            if opts.get(flag):
                raise CheckpointError(f"{src}: opts['{flag}'] is set: this CLCAE ablation ({why}) is not supported")
        if opts.get("learn_in_w") is False:
            # --learn_in_w is the official training script's own flag, as stored in the checkpoint's opts
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
    arch = PSP_ENCODER_TYPES.get(etype)
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
