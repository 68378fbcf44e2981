"""The Inception-v3 feature network of ``fid_tv`` (torchvision's ImageNet weights, as the official FID script),
loaded only from a local weights file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

__all__ = ["INCEPTION_FILE_NAME", "default_inception_path", "InceptionFeatures"]

#: torchvision's ImageNet Inception-v3 weights (``Inception_V3_Weights.IMAGENET1K_V1``), the network of the
#: official ``mertric/fid.py``.
INCEPTION_FILE_NAME = "inception_v3_google-0cc3c7bd.pth"


def default_inception_path() -> Path:
    """Where torchvision caches the Inception-v3 weights: ``torch.hub.get_dir()/checkpoints/`` +
    :data:`INCEPTION_FILE_NAME`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE_NAME


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 (ImageNet weights from a local file) as a 2048-d pool-feature extractor.

    This is the network of the official ``mertric/fid.py`` (torchvision ``inception_v3(pretrained=True)``), not
    the TF-Inception of pytorch-fid / clean-fid, so its Fréchet distances are **not comparable with standard FID**.

    Args:
        weights_path: torchvision's ``inception_v3_google-0cc3c7bd.pth`` (a state dict with ``AuxLogits.*``);
            default :func:`default_inception_path`. Missing: :class:`~clcae.losses.perceptual.MissingWeightsError`.
            Loaded strictly (:func:`~clcae.checkpoints.load_state_dict_strict`, weights only).

    Forward: ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 2048]``: bilinear resize to 299x299, then the network with
    ``transform_input=False`` on the [-1, 1] image, which equals torchvision's documented use of these weights
    (ImageNet-normalised input with ``transform_input=True`` maps back to exactly this range); the final fully
    connected layer is removed, so the output is the average-pooled 2048-d feature.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        import torchvision

        from ..formats.files import CheckpointError, load_state_dict_strict, validate_finite
        from ..losses.perceptual import MissingWeightsError

        path = Path(weights_path) if weights_path is not None else default_inception_path()
        if not path.is_file():
            raise MissingWeightsError(
                f"FID needs torchvision's Inception-v3 weights '{INCEPTION_FILE_NAME}', but {path} does not exist. "
                f"Nothing is downloaded: copy it (from {torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url}) "
                f"to {default_inception_path()} or pass its path (--inception-weights).")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read the Inception-v3 weights with a weights-only load "
                                  f"({type(e).__name__}: {e})") from e
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"{path}: expected a state dict; got {type(sd).__name__}")
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                              init_weights=False)
        load_state_dict_strict(net, sd, str(path), "Inception-v3")
        validate_finite(sd, str(path))
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.weights_path = str(path)

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Always in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x)
