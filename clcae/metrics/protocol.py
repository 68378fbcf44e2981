"""What an evaluation measures and at which size (:class:`Protocol`, :data:`PROTOCOLS`), and the error of every
evaluation step (:class:`EvaluationError`)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..errors import AboutOption
from ..networks.inverters import official_output

__all__ = ["EvaluationError", "Protocol", "PROTOCOLS"]


class EvaluationError(AboutOption, RuntimeError):
    """A problem with the evaluation's inputs (methods, data, weights files); the message names it."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How renders and ground truth are brought to the size the metrics compare them at.

    Attributes:
        name: ``'default'`` or ``'celebahq'``.
        side: the metric side (256, as the official scripts).
        fixed_side: ``True``: always ``side`` (renders of smaller generators are enlarged by the pooling);
            ``False``: ``min(side, generator side)``, so a 64 px SynthFaces generator is measured at 64 px.
        as_saved: quantise renders to 8 bits by truncation, as the official ``tensor2im`` writes them
            (``uint8(255 * clamp((x + 1) / 2, 0, 1))``), before measuring.
        description: one paragraph for the report.
    """

    name: str
    side: int = 256
    fixed_side: bool = False
    as_saved: bool = False
    description: str = ""

    def metric_side(self, output_side: int) -> int:
        """The width the metrics compare at for renders of ``output_side`` pixels."""
        return self.side if self.fixed_side else min(self.side, int(output_side))

    def metric_hw(self, output_side: int, input_size: Sequence[int]) -> tuple[int, int]:
        """``(H, W)`` of the compared images: the metric side, rows cropped to the input's aspect ratio (cars
        192x256 -> 192x256 at side 256), as :func:`~clcae.networks.inverters.official_output`."""
        side = self.metric_side(output_side)
        h, w = (int(v) for v in input_size)
        rows = side * h // w
        return (rows, side) if rows < side else (side, side)

    def prepare_output(self, image: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
        """A render ``[B, 3, S, S]`` -> the compared image ``[B, 3, H, W]`` (float32, clamped to [-1, 1])."""
        out = official_output(image.float(), input_size, size=self.metric_side(image.shape[-1])).clamp(-1.0, 1.0)
        if self.as_saved:
            out = torch.floor((out + 1.0) * 127.5) / 127.5 - 1.0
        return out


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        "default", 256, fixed_side=False, as_saved=False,
        description="Renders average-pooled to 256 px (or the generator's side when smaller: SynthFaces 64 px is "
                    "measured at 64 px), clamped to [-1, 1], not quantised; ground truth resized to the same size "
                    "with PIL bilinear. MSE and LPIPS in [-1, 1]; PSNR and SSIM on [0, 1] with data range 1."),
    "celebahq": Protocol(
        "celebahq", 256, fixed_side=True, as_saved=True,
        description="The paper's protocol (spec §8): renders average-pooled to 256x256 (official_output) and "
                    "quantised to 8 bits by truncation as tensor2im saves them; ground truth resized to 256x256 "
                    "with PIL bilinear (calc_losses_on_images.py); MSE and LPIPS (AlexNet, v0.1) at 256 px in "
                    "[-1, 1]; SSIM with the official uniform 21x21 window (and the standard 11x11 Gaussian) and "
                    "PSNR at 256 px on [0, 1]."),
}


def _protocol(protocol: Protocol | str) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]
