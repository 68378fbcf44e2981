"""The rosinality StyleGAN2 layout (``g_ema`` state dicts, the layout pSp / e4e / CLCAE use): the generator's
configuration inferred from its tensor shapes."""
from __future__ import annotations

import re
from typing import Mapping

import torch

from .files import CheckpointError

__all__ = ["infer_generator_config"]


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
