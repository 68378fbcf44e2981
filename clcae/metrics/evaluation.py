"""The evaluation engine: invert a test set with several methods and measure every output representation.

::

    suite = build_metric_suite(lpips_weights=None, domain_net="pretrained/synthfaces64_domain_net.pt")
    methods = [EvalMethod("clcae", load_inverter("clcae.pt")), EvalMethod("psp", load_inverter("psp.pt"))]
    result = evaluate(methods, SynthFacesSource(500, res=64), suite, protocol="default", batch=16)
    write_all(result.to_report(), "out/")            # clcae.metrics.tables

What happens, per batch of test images (each read once, as 8-bit RGB):

1. every method gets the images resized to its ``input_size`` with PIL's bilinear filter (the official
   ``transforms.Resize``) in [-1, 1] and renders its representations (:func:`default_representations`: CLCAE
   ``w``, ``wplus``, ``wplus_f``; pSp and e4e ``wplus``; projection its space, ``w`` or ``wplus``);
2. each render is brought to the protocol's metric size (:class:`Protocol`: ``official_output``, i.e. average
   pooling to 256 px, or to the generator's side when that is smaller, with the official car crop), clamped to
   [-1, 1] (and, for ``celebahq``, quantised to 8 bits as the official ``tensor2im`` saves it);
3. the ground truth is the original image resized to the same size with PIL's bilinear filter;
4. :class:`MetricSuite` computes the per-image metrics (MSE, PSNR, SSIM with both windows, and those whose
   networks are available: LPIPS, ArcFace and domain identity, domain perceptual distance) and collects the
   features of the set-level Fréchet distances (``fd_domain``, ``fid_tv``).

Then per (method, representation) the per-image values are aggregated (mean ± population std over the finite
values, n), the Fréchet distances computed, and, for SynthFaces with edits requested, the editing metrics of
:mod:`clcae.metrics.editing` measured on each method's W+ codes.

No metric is ever computed with random weights: a network whose weights file is missing is left out, and
:attr:`MetricSuite.missing` says which file it needs (an explicitly given path that does not exist is an error).
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol as TypingProtocol, Sequence

import torch
from PIL import Image
from torch import nn

from ..data.images import ImageReadError, display_path, load_image, save_image, to_tensor
from ..inversion.inverters import official_output
from .editing import editing_metrics
from .fidelity import attribute_fidelity, detail_ratio
from .frechet import feature_statistics, frechet_distance
from .reconstruction import mse, psnr, ssim
from .tables import (REPRESENTATION_LABELS, GridRow, ImageGrid, MetricInfo, Report, ResultEntry,
                     representation_label, summarize)

__all__ = ["Protocol", "PROTOCOLS", "PSNR_CAP", "INCEPTION_FILE_NAME", "default_inception_path", "InceptionFeatures",
           "MetricSuite", "build_metric_suite", "EvalSource", "SynthFacesSource", "FolderSource", "EvalMethod",
           "AttributeEdit", "default_representations", "EvaluationResult", "evaluate", "EvaluationError"]

#: Per-image PSNR is capped here (dB): an exact reconstruction has infinite PSNR, which would make every mean
#: infinite. 8-bit images at 256 px cannot exceed ~101 dB unless identical, so the cap only marks exact copies.
PSNR_CAP = 100.0
#: Smallest image side LPIPS' AlexNet trunk can process.
LPIPS_MIN_SIDE = 32
#: torchvision's ImageNet Inception-v3 weights (``Inception_V3_Weights.IMAGENET1K_V1``), the network of the
#: official ``mertric/fid.py``.
INCEPTION_FILE_NAME = "inception_v3_google-0cc3c7bd.pth"


class EvaluationError(RuntimeError):
    """A problem with the evaluation's inputs (methods, data, weights files); the message names it."""


# ---------------------------------------------------------------------------------------------------- protocol
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
        192x256 -> 192x256 at side 256), as :func:`~clcae.inversion.inverters.official_output`."""
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


# ---------------------------------------------------------------------------------------------------- Inception
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


# ---------------------------------------------------------------------------------------------------- metrics
def _short(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


class MetricSuite:
    """The metrics of one evaluation and the networks they need; build it with :func:`build_metric_suite`.

    Per-image metrics (:meth:`per_image`, each ``[B]``): ``mse``, ``psnr`` (capped at :data:`PSNR_CAP`),
    ``ssim_w11`` (11x11 Gaussian, sigma 1.5), ``ssim_w21`` (the official uniform 21x21 window), and when their
    networks are given ``lpips`` (AlexNet v0.1), ``domain_perceptual``, ``id_arcface``, ``id_domain``.
    Set-level features (:meth:`features`, ``[B, D]``): ``fd_domain`` (domain network) and ``fid_tv``
    (torchvision Inception-v3). :attr:`missing` holds one sentence per metric left out and the file it needs.
    """

    def __init__(self, lpips: nn.Module | None = None, lpips_weights: str | None = None,
                 arcface: nn.Module | None = None, arcface_weights: str | None = None,
                 domain_net: nn.Module | None = None, domain_weights: str | None = None,
                 inception: nn.Module | None = None, inception_weights: str | None = None,
                 dlib: Any = None, missing: Sequence[str] = (),
                 judge_net: nn.Module | None = None, judge_weights: str | None = None):
        from ..losses.identity import DomainIdentity
        from ..losses.perceptual import DomainPerceptualLoss

        self.lpips, self.lpips_weights = lpips, lpips_weights
        self.arcface, self.arcface_weights = arcface, arcface_weights
        self.domain_net, self.domain_weights = domain_net, domain_weights
        self.inception, self.inception_weights = inception, inception_weights
        self.dlib = dlib  # a clcae.metrics.dlib_identity.DlibFaceEmbedder (real faces), or None
        # the attribute judge: a second DomainNet trained apart from the one the encoders' losses use (None: the
        # domain network judges its own attributes)
        self.judge_net, self.judge_weights = judge_net, judge_weights
        self.domain_identity = DomainIdentity(domain_net) if domain_net is not None else None
        self.domain_perceptual = DomainPerceptualLoss(domain_net) if domain_net is not None else None
        self.missing = list(missing)

    # -------------------------------------------------------------- what is measured
    def metric_infos(self, size: str = "the metric size") -> list[MetricInfo]:
        """The :class:`MetricInfo` of every metric this suite computes, in table order; ``size`` (e.g.
        ``'256x256'``) is put into the descriptions."""
        infos = [
            MetricInfo("mse", f"mean squared error at {size} in [-1, 1] (range 0..4)", False, decimals=4),
            MetricInfo("psnr", f"PSNR in dB on [0, 1] at {size}, data range 1; per image capped at "
                               f"{PSNR_CAP:g} dB (an exact copy is infinite)", True, decimals=2),
            MetricInfo("ssim_w11", f"SSIM at {size}, 11x11 Gaussian window (sigma 1.5), per RGB channel on "
                                   "[0, 1] (Wang et al.; skimage gaussian_weights=True)", True, decimals=4),
            MetricInfo("ssim_w21", f"SSIM at {size}, uniform 21x21 window with sample covariances, per RGB channel "
                                   "on [0, 1] (the official measure.py: skimage win_size=21)", True, decimals=4),
        ]
        infos.append(MetricInfo("detail_ratio", f"high-frequency energy of the reconstruction over the input's "
                                                f"at {size} (x - Gaussian blur of sigma 1 px; clcae.metrics.fidelity): "
                                                "1 = as much fine detail as the input, below 1 = detail lost (blur), "
                                                "above 1 = detail or noise added", None, decimals=3, best_at=1.0))
        if self.lpips is not None:
            infos.append(MetricInfo("lpips", f"LPIPS v0.1, AlexNet trunk, at {size} in [-1, 1] (lpips package "
                                             "heads)", False, weights=self.lpips_weights, decimals=4))
        if self.domain_perceptual is not None:
            infos.append(MetricInfo("domain_perceptual", "LPIPS-like distance on the SynthFaces domain network's "
                                                         "trunk maps; NOT LPIPS and not comparable with it", False,
                                    weights=self.domain_weights, decimals=4))
        if self.arcface is not None:
            infos.append(MetricInfo("id_arcface", "cosine similarity of ArcFace IR-SE-50 embeddings (pSp crop of a "
                                                  "256 px aligned face), reconstruction vs input; not the paper's "
                                                  "MTCNN + CurricularFace", True, weights=self.arcface_weights))
        if self.dlib is not None:
            infos.append(MetricInfo("id_dlib", "cosine similarity of dlib's 128-D face-recognition embeddings "
                                               "(dlib_face_recognition_resnet_model_v1), reconstruction vs input, on "
                                               "the aligned crop; an offline real-face ID, NOT the paper's "
                                               "CurricularFace ID", True,
                                    weights="dlib_face_recognition_resnet_model_v1.dat"))
        if self.domain_identity is not None:
            infos.append(MetricInfo("id_domain", "cosine similarity of the SynthFaces domain network's identity "
                                                 "embeddings, reconstruction vs input", True,
                                    weights=self.domain_weights))
        if self.domain_net is not None:
            infos.append(MetricInfo("fd_domain", "Fréchet distance between the domain network's pooled features of "
                                                 "the reconstructions and of the inputs", False,
                                    weights=self.domain_weights, per_image=False))
        judge, judge_weights = self.attribute_judge()
        if judge is not None:  # computed where the data has labels (SynthFaces)
            from .fidelity import fidelity_metric_names

            who = ("the independent attribute judge (a DomainNet trained apart from the losses' network)"
                   if self.judge_net is not None else "the domain network")
            text = {"glasses_acc": (f"glasses present or not, as {who} sees it on the reconstruction, against the "
                                    "input's ground-truth label (accuracy)", True),
                    "eyes_open_err": (f"|eyes_open predicted by {who} on the reconstruction - the input's label| "
                                      "(0..1; compare with its error on the inputs in the notes)", False),
                    "smile_err": (f"|smile predicted by {who} on the reconstruction - the input's label| (-1..1)",
                                  False),
                    "age_err": (f"|age predicted by {who} on the reconstruction - the input's label| (0..1)", False)}
            for name in fidelity_metric_names(judge.attribute_names):
                infos.append(MetricInfo(name, text[name][0], text[name][1], weights=judge_weights, decimals=3))
        if self.inception is not None:
            infos.append(MetricInfo("fid_tv", "Fréchet distance of torchvision Inception-v3 pool features (2048-d, "
                                              "bilinear 299 px), reconstructions vs inputs, as the official "
                                              "mertric/fid.py; NOT comparable with pytorch-fid / clean-fid FID",
                                    False, weights=self.inception_weights, per_image=False, decimals=3))
        return infos

    def feature_names(self) -> list[str]:
        """Names of the set-level (Fréchet) metrics."""
        return [n for n, net in (("fd_domain", self.domain_net), ("fid_tv", self.inception)) if net is not None]

    # -------------------------------------------------------------- computing
    @torch.no_grad()
    def per_image(self, output: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
        """Per-image metrics of ``output`` against ``target`` (both ``[B, 3, H, W]`` in [-1, 1], same size).

        Returns ``({name: float64 [B] on the CPU}, number of PSNR values capped)``. SSIM variants whose window is
        or LPIPS that do not fit the images are left out (see :meth:`skipped`).
        """
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
        out: dict[str, torch.Tensor] = {}
        out["mse"] = mse(output, target, size=None)
        p = psnr(output, target)
        capped = int((p > PSNR_CAP).sum())
        out["psnr"] = p.clamp(max=PSNR_CAP)
        side = min(output.shape[-2:])
        if side >= 11:
            out["ssim_w11"] = ssim(output, target, win_size=11, gaussian=True, sigma=1.5)
        if side >= 21:
            out["ssim_w21"] = ssim(output, target, win_size=21, gaussian=False)
        if side > 6:
            out["detail_ratio"] = detail_ratio(output, target)
        if self.lpips is not None and side >= LPIPS_MIN_SIDE:
            out["lpips"] = self.lpips(output, target, reduction="none")
        if self.domain_perceptual is not None:
            out["domain_perceptual"] = self.domain_perceptual(output, target, reduction="none")
        if self.arcface is not None:
            out["id_arcface"] = self.arcface.similarity(output, target)
        if self.domain_identity is not None:
            out["id_domain"] = self.domain_identity.similarity(output, target)
        if self.dlib is not None:
            from .dlib_identity import dlib_identity_similarity

            sim = dlib_identity_similarity(output.float().cpu(), target.float().cpu(), embedder=self.dlib)
            out["id_dlib"] = torch.as_tensor(sim.similarity, dtype=torch.float64)  # NaN where no face
        return {k: v.detach().double().cpu() for k, v in out.items()}, capped

    def attribute_judge(self) -> tuple[nn.Module | None, str | None]:
        """The network that judges attributes (the judge when one is loaded, else the domain network) and its
        weights file; ``(None, None)`` without either."""
        if self.judge_net is not None:
            return self.judge_net, self.judge_weights
        return self.domain_net, self.domain_weights

    @torch.no_grad()
    def attribute_fidelity(self, images: torch.Tensor, labels: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The judge's attributes of ``images`` against the ground-truth ``labels`` (one
        ``{'attributes': vector in ATTRIBUTE_NAMES order}`` per image; see
        :func:`clcae.metrics.fidelity.attribute_fidelity`); ``{}`` without a judge or domain network."""
        judge, _ = self.attribute_judge()
        if judge is None:
            return {}
        from ..data.synthfaces import ATTRIBUTE_NAMES

        truth = torch.stack([torch.as_tensor(lb["attributes"]) for lb in labels]).double()
        return attribute_fidelity(judge, images, truth, ATTRIBUTE_NAMES)

    def skipped(self, side: int) -> list[str]:
        """The per-image metrics left out for images whose shorter side is ``side`` (an SSIM window or the
        LPIPS trunk larger than the image)."""
        out = [name for name, win in (("ssim_w11", 11), ("ssim_w21", 21)) if side < win]
        if self.lpips is not None and side < LPIPS_MIN_SIDE:
            out.append("lpips")
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Set-level features of ``images`` ``[B, 3, H, W]`` in [-1, 1]: ``{name: float32 [B, D] on the CPU}``."""
        out = {}
        if self.domain_net is not None:
            out["fd_domain"] = self.domain_net.features(images).float().cpu()
        if self.inception is not None:
            out["fid_tv"] = self.inception(images).float().cpu()
        return out


def _existing(path: str | os.PathLike, option: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{option} {display_path(p)}: no such file")
    return p


def build_metric_suite(lpips_weights: str | os.PathLike | None = None,
                       arcface_weights: str | os.PathLike | None = None,
                       inception_weights: str | os.PathLike | None = None,
                       domain_net: str | os.PathLike | nn.Module | None = None,
                       device: str | torch.device = "cpu", use_hub_cache: bool = True,
                       id_dlib: bool = False,
                       judge_net: str | os.PathLike | nn.Module | None = None) -> MetricSuite:
    """Load the metric networks whose weights are available, and record the others as missing.

    Args:
        lpips_weights: torchvision's AlexNet file (``alexnet-owt-7be5be79.pth``). ``None``: the torch hub cache
            when ``use_hub_cache`` and the file is there, else LPIPS is left out (with a note naming the file).
        arcface_weights: ``model_ir_se50.pth`` for ``id_arcface`` (``None``: left out, with a note).
        inception_weights: torchvision's ``inception_v3_google-0cc3c7bd.pth`` for ``fid_tv`` (``None``: the
            torch hub cache when there, else left out, with a note).
        domain_net: the SynthFaces domain network (a path or a loaded ``DomainNet``) for ``id_domain``,
            ``domain_perceptual`` and ``fd_domain`` (``None``: left out, with a note).
        device: where the networks run.
        use_hub_cache: look for the LPIPS and Inception weights in the torch hub cache.
        id_dlib: add ``id_dlib`` (dlib face-recognition embeddings; needs the ``[align]`` extra, an error naming
            what to install otherwise), for real faces.
        judge_net: a second SynthFaces ``DomainNet`` (path or module) that judges the attribute-fidelity metrics
            instead of ``domain_net``: a network the encoders were not trained against
            (``pretrained/synthfaces64_judge_net.pt``). ``None``: ``domain_net`` judges.

    A path that is given but does not exist or does not load raises :class:`EvaluationError` naming it.
    """
    from ..formats.files import CheckpointError
    from ..losses.perceptual import LPIPSLoss, MissingWeightsError, default_lpips_backbone_path, lpips_backbone_file

    missing: list[str] = []
    kwargs: dict[str, Any] = {}
    domain_note = ""

    # domain network first: the LPIPS note says whether domain_perceptual replaces it
    if domain_net is not None:
        if isinstance(domain_net, nn.Module):
            kwargs.update(domain_net=domain_net.to(device).eval().requires_grad_(False),
                          domain_weights=getattr(domain_net, "weights_path", "(a DomainNet object)"))
        else:
            from ..networks.domain import load_domain_net

            p = _existing(domain_net, "--domain-net")
            try:
                kwargs.update(domain_net=load_domain_net(p, device=device), domain_weights=_short(p))
            except CheckpointError as e:
                raise EvaluationError(f"--domain-net: {e}") from None
        domain_note = " The SynthFaces domain network's `domain_perceptual` (an LPIPS-like distance, not LPIPS) " \
                      "is reported instead."
    else:
        missing.append("id_domain, domain_perceptual and fd_domain not computed: they need the SynthFaces domain "
                       "network (--domain-net FILE; pretrained/synthfaces64_domain_net.pt is used by default on "
                       "--data synthfaces).")

    if judge_net is not None:
        if isinstance(judge_net, nn.Module):
            kwargs.update(judge_net=judge_net.to(device).eval().requires_grad_(False),
                          judge_weights=getattr(judge_net, "weights_path", "(a DomainNet object)"))
        else:
            from ..networks.domain import load_domain_net

            p = _existing(judge_net, "--judge-net")
            try:
                kwargs.update(judge_net=load_domain_net(p, device=device), judge_weights=_short(p))
            except CheckpointError as e:
                raise EvaluationError(f"--judge-net: {e}") from None

    lp = Path(lpips_weights) if lpips_weights is not None else (default_lpips_backbone_path("alex")
                                                               if use_hub_cache else None)
    if lpips_weights is not None:
        _existing(lpips_weights, "--lpips-weights")
    if lp is not None and lp.is_file():
        try:
            kwargs.update(lpips=LPIPSLoss("alex", backbone_weights=lp, resize=None).to(device),
                          lpips_weights=_short(lp))
        except (MissingWeightsError, CheckpointError) as e:
            raise EvaluationError(f"LPIPS: {e}") from None
    else:
        missing.append(f"LPIPS not computed: needs {lpips_backbone_file('alex')} in "
                       f"{default_lpips_backbone_path('alex').parent} (the torch hub cache) or --lpips-weights FILE "
                       "(torchvision's ImageNet AlexNet)." + domain_note)

    if arcface_weights is not None:
        from ..losses.identity import ArcFaceIdentity

        p = _existing(arcface_weights, "--arcface-weights")
        try:
            kwargs.update(arcface=ArcFaceIdentity(p, device=device), arcface_weights=_short(p))
        except (MissingWeightsError, CheckpointError, ValueError) as e:
            raise EvaluationError(f"--arcface-weights: {e}") from None
    else:
        missing.append("id_arcface not computed: needs ArcFace IR-SE-50 weights model_ir_se50.pth (pSp's "
                       "pretrained_models file) via --arcface-weights FILE. The paper's ID metric (MTCNN alignment + "
                       "CurricularFace IR-101) is not available here.")

    ip = Path(inception_weights) if inception_weights is not None else (default_inception_path()
                                                                       if use_hub_cache else None)
    if inception_weights is not None:
        _existing(inception_weights, "--inception-weights")
    if ip is not None and ip.is_file():
        try:
            kwargs.update(inception=InceptionFeatures(ip).to(device), inception_weights=_short(ip))
        except (MissingWeightsError, CheckpointError) as e:
            raise EvaluationError(f"Inception: {e}") from None
    else:
        missing.append(f"FID (fid_tv) not computed: needs {INCEPTION_FILE_NAME} in {default_inception_path().parent} "
                       "(the torch hub cache) or --inception-weights FILE (torchvision's ImageNet Inception-v3)."
                       + (" fd_domain (domain network features) is reported instead." if domain_note else ""))
    if id_dlib:
        from ..align.detect import AlignExtraMissing
        from .dlib_identity import DlibFaceEmbedder

        try:
            kwargs["dlib"] = DlibFaceEmbedder()
        except AlignExtraMissing as e:
            raise EvaluationError(f"--id-dlib: {e}") from None
    return MetricSuite(missing=missing, **kwargs)


# ---------------------------------------------------------------------------------------------------- data
class EvalSource(TypingProtocol):
    """What :func:`evaluate` reads: ``len(source)``, ``source.name(i)``, ``source.load(i)`` (8-bit RGB
    ``PIL.Image``; may raise :class:`~clcae.data.images.ImageReadError`), ``source.labels(i)`` (``None`` or
    ``{'person_id': int, 'attributes': float32 [A]}``) and ``source.describe()`` (plain data)."""

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def load(self, i: int) -> Image.Image: ...

    def labels(self, i: int) -> dict | None: ...

    def describe(self) -> dict: ...


class SynthFacesSource:
    """Items ``0 .. n-1`` of a SynthFaces split (default the test split: persons never seen in training) rendered
    at ``res`` px, with their ground-truth person ids and attributes (:class:`clcae.data.synthfaces.SynthFaces`)."""

    def __init__(self, n: int, res: int = 64, split: str = "test", seed: int = 0, n_persons: int | None = None):
        from ..data.synthfaces import ATTRIBUTE_NAMES, SynthFaces

        self.dataset = SynthFaces(n, res=res, split=split, seed=seed, n_persons=n_persons)
        self.attribute_names = tuple(ATTRIBUTE_NAMES)

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        """``'<split>/<index:06d>'``."""
        return f"{self.dataset.split}/{int(i):06d}"

    def load(self, i: int) -> Image.Image:
        """The rendered item as an RGB image."""
        return Image.fromarray(self.dataset.image(i))

    def labels(self, i: int) -> dict:
        """``{'person_id': int, 'attributes': float32 [11]}`` (ground truth, in label units)."""
        from ..data.synthfaces import attributes_to_vector

        lab = self.dataset.labels(i)
        return {"person_id": int(lab["person_id"]), "attributes": attributes_to_vector(lab)}

    def describe(self) -> dict:
        """Plain-data description for the report."""
        d = self.dataset
        return {"kind": "synthfaces", "split": d.split, "n": len(d), "res": d.res, "seed": d.seed,
                "n_persons": d.n_persons}


class FolderSource:
    """The images under a folder (recursive, sorted; names from :func:`clcae.jobs.list_inputs`), the
    first ``n`` of them (``None``: all). No labels."""

    def __init__(self, folder: str | os.PathLike, n: int | None = None):
        from ..jobs import JobError, list_inputs

        try:
            items, _ = list_inputs(folder, label="--data")
        except JobError as e:
            raise EvaluationError(str(e)) from None
        self.folder = Path(folder)
        self.total = len(items)
        self.items = items if n is None else items[:int(n)]

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        """The file's path under the folder without its extension, printable: bytes that are not UTF-8 appear as
        ``\\xNN`` escapes (:func:`~clcae.data.images.display_path`), so reports and file names can be written."""
        return display_path(self.items[i].name)

    def load(self, i: int) -> Image.Image:
        """The file as 8-bit RGB at its own size (raises :class:`ImageReadError` for a bad file)."""
        return load_image(self.items[i].path, None)

    def labels(self, i: int) -> None:
        """Folders have no labels."""
        return None

    def describe(self) -> dict:
        """Plain-data description for the report."""
        return {"kind": "folder", "path": str(self.folder.resolve()), "files_found": self.total,
                "n": len(self.items)}


def _resize(img: Image.Image, hw: Sequence[int]) -> torch.Tensor:
    h, w = (int(v) for v in hw)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return to_tensor(img)


# ---------------------------------------------------------------------------------------------------- methods
def default_representations(inverter: Any) -> tuple[str, ...]:
    """The outputs a method is measured on: CLCAE ``('w', 'wplus', 'wplus_f')``; pSp / e4e ``('wplus',)``;
    projection its optimised space (``('w',)`` or ``('wplus',)``: in space ``w`` the W+ render is the same
    image); anything else: the representations of :data:`~clcae.metrics.tables.REPRESENTATION_LABELS` among its
    ``image_names``."""
    if getattr(inverter, "arch", "") == "projection":
        return (inverter.projector.space,)
    names = tuple(getattr(inverter, "image_names", ()))
    return tuple(k for k in REPRESENTATION_LABELS if k in names)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass
class EvalMethod:
    """A method to evaluate: its table name, an eval-mode inverter (``invert(x, images=...)`` returning
    ``image_<repr>`` renders and ``wplus`` codes; ``input_size``; ``decoder`` for edits), the representations to
    measure (default :func:`default_representations`) and ``info`` (plain data for the report: checkpoint,
    arch, settings)."""

    name: str
    inverter: Any
    representations: tuple[str, ...] | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name or _SAFE.search(self.name):
            raise EvaluationError(f"method name {self.name!r}: use letters, digits, '_', '-' and '.' only")
        reps = default_representations(self.inverter) if self.representations is None else tuple(self.representations)
        names = tuple(getattr(self.inverter, "image_names", ()))
        bad = [r for r in reps if r not in names]
        if not reps or bad:
            raise EvaluationError(f"method {self.name}: representations {list(reps)} must be non-empty and among "
                                  f"what it renders {list(names)}")
        self.representations = reps


@dataclasses.dataclass
class AttributeEdit:
    """An edit to measure on SynthFaces: ``direction_fn(codes, strength) -> codes`` meant to change
    ``attribute``; ``strengths``; ``source`` (e.g. the direction file, for the report); ``other_attributes``
    (default: all the others)."""

    attribute: str
    direction_fn: Callable[[torch.Tensor, float], torch.Tensor]
    strengths: Sequence[float]
    source: str = ""
    other_attributes: Sequence[str] | None = None


# ---------------------------------------------------------------------------------------------------- result
@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` measured; :meth:`to_report` turns it into a :class:`~clcae.metrics.tables.Report`.

    Attributes:
        image_names: the images measured, in order (failed reads left out).
        failures: ``[{'image', 'reason'}]`` for images that could not be read.
        per_image: ``{(method, representation): {metric: [value per image]}}``.
        set_level: ``{(method, representation): {metric: value}}`` (Fréchet distances).
        psnr_capped: ``{(method, representation): count}`` of PSNR values capped at :data:`PSNR_CAP`.
        metric_infos, missing: the suite's metric definitions and notes on metrics left out.
        methods: ``[{'name', 'representations', 'seconds', 'images_per_s', **info}]``.
        protocol: the protocol used; metric_sizes: ``{method: [H, W]}``.
        source: the data's description; editing: the editing results (with ``method``, ``source``).
        saved_images: ``{'input': [path], '<method>/<repr>': [path]}`` for the first images.
        edit_images: ``{(attribute, method): [[path per column] per image]}``.
        notes: further notes (skipped metrics or methods, warnings).
    """

    image_names: list[str]
    failures: list[dict]
    per_image: dict[tuple[str, str], dict[str, list[float]]]
    set_level: dict[tuple[str, str], dict[str, float]]
    psnr_capped: dict[tuple[str, str], int]
    metric_infos: list[MetricInfo]
    missing: list[str]
    methods: list[dict]
    protocol: Protocol
    metric_sizes: dict[str, list[int]]
    source: dict
    editing: list[dict]
    saved_images: dict[str, list[str]]
    edit_images: dict[tuple[str, str], list[list[str]]]
    notes: list[str]

    def aggregates(self) -> list[ResultEntry]:
        """One :class:`ResultEntry` per (method, representation, metric)."""
        weights = {m.name: m.weights for m in self.metric_infos}
        out = []
        for info in self.metric_infos:
            for (method, rep), values in self.per_image.items():
                if info.per_image:
                    if info.name not in values:
                        continue
                    s = summarize(values[info.name])
                    note = ""
                    if info.name == "psnr" and self.psnr_capped.get((method, rep)):
                        note = f"{self.psnr_capped[(method, rep)]} image(s) capped at {PSNR_CAP:g} dB"
                    out.append(ResultEntry(method, rep, info.name, s["mean"], s["std"], s["n"], s["n_invalid"],
                                           weights[info.name], note))
                else:
                    v = self.set_level.get((method, rep), {}).get(info.name)
                    if v is None:
                        continue
                    out.append(ResultEntry(method, rep, info.name, v, None, len(self.image_names), 0,
                                           weights[info.name], "set-level: reconstructions vs inputs"))
        return out

    def per_image_rows(self) -> list[dict]:
        """``[{'image', 'method', 'representation', <metric>: value}]`` in image order within each row key."""
        rows = []
        for (method, rep), values in self.per_image.items():
            for i, name in enumerate(self.image_names):
                row = {"image": name, "method": method, "representation": rep}
                row.update({k: v[i] for k, v in values.items()})
                rows.append(row)
        return rows

    def to_report(self, title: str = "Inversion evaluation", sections: Mapping[str, Any] | None = None) -> Report:
        """The :class:`~clcae.metrics.tables.Report` of this result (``sections`` are added to its description,
        e.g. the command line)."""
        n = len(self.image_names)
        methods = ", ".join(m["name"] for m in self.methods)
        src = self.source
        what = f"SynthFaces {src.get('split')} split" if src.get("kind") == "synthfaces" else \
            f"folder {src.get('path')}"
        summary = f"{n} images of the {what}; methods: {methods}; protocol '{self.protocol.name}'."
        if self.failures:
            summary += f" {len(self.failures)} image(s) could not be read and were skipped."
        info_sections: dict[str, Any] = {
            "summary": summary,
            "protocol": {"name": self.protocol.name, "description": self.protocol.description,
                         "metric_size": self.metric_sizes, "psnr_cap_db": PSNR_CAP,
                         "std": "population standard deviation over the images (ddof=0)"},
            "data": {**self.source, "n_measured": n, "failures": self.failures},
            "methods": self.methods,
        }
        if sections:
            info_sections.update(sections)
        grids = []
        if self.saved_images.get("input"):
            keys = [(m["name"], r) for m in self.methods for r in m["representations"]]
            columns = ["input"] + [f"{m} {representation_label(r)}" for m, r in keys]
            rows = []
            for i, inp in enumerate(self.saved_images["input"]):
                cells = [("input", inp)]
                for m, r in keys:
                    paths = self.saved_images.get(f"{m}/{r}", [])
                    cells.append((f"{m} {representation_label(r)}", paths[i] if i < len(paths) else None))
                rows.append(GridRow(self.image_names[i], cells))
            grids.append(ImageGrid("Reconstructions", columns, rows,
                                   "Each row: the input (ground truth at the metric size) and every method's output "
                                   "at the metric size, as measured."))
        for e in self.editing:
            key = (e["target_attribute"], e["method"])
            if key not in self.edit_images:
                continue
            columns = ["unedited"] + [f"s = {s:g}" for s in e["strengths"]]
            rows = [GridRow(self.image_names[i], list(zip(columns, paths)))
                    for i, paths in enumerate(self.edit_images[key])]
            grids.append(ImageGrid(f"Edit '{e['target_attribute']}' — {e['method']}", columns, rows,
                                   f"W+ codes moved along {e.get('source') or 'the direction'}, rendered with "
                                   "constant noise."))
        return Report(title=title, metrics=list(self.metric_infos), results=self.aggregates(),
                      rows=list(self.per_image), notes=[*self.missing, *self.notes], sections=info_sections,
                      per_image=self.per_image_rows(), editing=self.editing, grids=grids)


# ---------------------------------------------------------------------------------------------------- engine
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _file_stem(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "x"


def _frechet_distances(feats: Mapping[tuple[str, str], Mapping[str, list[torch.Tensor]]],
                       gt_feats: Mapping[tuple[int, int], Mapping[str, list[torch.Tensor]]],
                       metric_sizes: Mapping[str, list[int]], n: int, notes: list[str]
                       ) -> dict[tuple[str, str], dict[str, float]]:
    """Every (method, representation)'s features against the inputs' at its metric size; problems go to
    ``notes``."""
    set_level: dict[tuple[str, str], dict[str, float]] = {k: {} for k in feats}
    if not any(fs for fs in feats.values()):
        return set_level
    if n < 2:
        notes.append("Fréchet distances not computed: they need at least 2 images.")
        return set_level
    dims: dict[str, int] = {}
    for (method, rep), fs in feats.items():
        hw = tuple(metric_sizes[method])
        for name, chunks in fs.items():
            a, b = torch.cat(chunks), torch.cat(gt_feats[hw][name])
            dims[name] = int(a.shape[1])
            try:
                set_level[(method, rep)][name] = frechet_distance(*feature_statistics(a), *feature_statistics(b))
            except ValueError as e:
                notes.append(f"{name} for {method} {representation_label(rep)} not computed: {e}")
    for name, d in dims.items():
        if n < 2 * d:
            notes.append(f"{name}: {n} images for {d}-d features; the covariance estimate is poor below a few times "
                         f"{d} images, so compare its values only at the same n.")
    return set_level


def _measure_edits(edits: Sequence[AttributeEdit], methods: Sequence[EvalMethod], codes: Mapping[str, list[torch.Tensor]],
                   domain_net: nn.Module, gt_pred: torch.Tensor, gt_true: torch.Tensor, edit_n: int | None,
                   batch: int, device: torch.device, keep_images: int, image_dir: Path | None, notes: list[str]
                   ) -> tuple[list[dict], dict[tuple[str, str], list[list[str]]]]:
    """:func:`~clcae.metrics.editing.editing_metrics` for every edit and method on its W+ codes; the renders of
    the first ``keep_images`` images are saved to ``image_dir``. ``gt_pred`` / ``gt_true``: the domain network's
    attributes of the inputs and their labels (label order of :data:`~clcae.data.synthfaces.ATTRIBUTE_NAMES`)."""
    from ..data.synthfaces import ATTRIBUTE_NAMES

    label_index = {a: i for i, a in enumerate(ATTRIBUTE_NAMES)}
    predictor_mae = {a: float((gt_pred[:, j] - gt_true[:, label_index[a]]).abs().mean())
                     for j, a in enumerate(domain_net.attribute_names)}
    editing: list[dict] = []
    saved: dict[tuple[str, str], list[list[str]]] = {}
    for e in edits:
        for m in methods:
            dec = getattr(m.inverter, "decoder", None)
            if dec is None or not codes[m.name]:
                notes.append(f"edit '{e.attribute}' not measured for {m.name}: it has no generator or W+ codes")
                continue
            lat = torch.cat(codes[m.name])[:edit_n].to(device)
            res = editing_metrics(dec, lat, e.direction_fn, e.strengths, domain_net, e.attribute,
                                  other_attributes=e.other_attributes, batch=batch, return_images=keep_images)
            images = res.pop("images", None)
            res.update(method=m.name, source=e.source, predictor_mae_on_inputs=predictor_mae[e.attribute],
                       note="slope in label units per unit strength, measured by the domain network; "
                            "predictor_mae_on_inputs is that network's error on this attribute against the "
                            "ground-truth labels of the inputs")
            editing.append(res)
            if images is not None and images.numel() and image_dir is not None:
                rows = []
                for i in range(images.shape[0]):
                    stem = f"edit_{_file_stem(e.attribute)}_{_file_stem(m.name)}_{i:04d}"
                    rows.append([str(save_image(images[i, j], image_dir / f"{stem}_{j:02d}.png"))
                                 for j in range(images.shape[1])])
                saved[(e.attribute, m.name)] = rows
    return editing, saved


#: The report's note on its image files, by ``Protocol.as_saved``. The sizes were measured on 64 SynthFaces test
#: images with the shipped CLCAE and pSp (256 rows), recomputing each metric from the saved PNGs.
_SAVED_IMAGES_NOTE = {
    False: "The report's images (images/*.png) are 8-bit PNGs, clamped to [-1, 1] and rounded; the metrics were "
           "measured on the float renders, not quantised. Metrics recomputed from the PNG files therefore differ "
           "slightly: measured on 64 SynthFaces test images with the shipped CLCAE and pSp, per image by up to "
           "9.3e-4 SSIM (6.2e-4 with the 21x21 window), 5.5e-5 MSE and 0.01 dB PSNR.",
    True: "The report's images (images/*.png) hold exactly the 8-bit renders the metrics measured (truncated to "
          "8 bits as the official tensor2im saves them): metrics recomputed from them are the same.",
}


def evaluate(methods: Sequence[EvalMethod], source: EvalSource, metrics: MetricSuite,
             protocol: Protocol | str = "default", *, batch: int = 8, device: str | torch.device = "cpu",
             save_images: int = 0, image_dir: str | os.PathLike | None = None, edits: Sequence[AttributeEdit] = (),
             edit_n: int | None = None, edit_images: int = 4, progress: bool = False) -> EvaluationResult:
    """Invert ``source`` with every method and measure every representation (see the module docstring).

    Args:
        methods: the methods (unique names); their inverters must already be on ``device``.
        source: the test images (:class:`SynthFacesSource`, :class:`FolderSource` or any :class:`EvalSource`).
        metrics: from :func:`build_metric_suite`.
        protocol: ``'default'``, ``'celebahq'`` or a :class:`Protocol`.
        batch: images per inversion call.
        device: where inputs and metric networks run.
        save_images: save the first ``k`` inputs and outputs (at the metric size, as measured) as PNG files in
            ``image_dir`` for the report's grid.
        edits: editing metrics to measure on the W+ codes (needs a source with labels, i.e. SynthFaces, and the
            suite's domain network).
        edit_n: how many images the edits use (default all measured).
        edit_images: renders of the first ``k`` images per edit and method saved for the report (with
            ``image_dir``).
        progress: show a progress bar.

    Returns an :class:`EvaluationResult`. Raises :class:`EvaluationError` for invalid arguments; images that
    cannot be read are skipped and listed in ``failures``.
    """
    from tqdm.auto import tqdm

    protocol = _protocol(protocol)
    device = torch.device(device)
    if not methods:
        raise EvaluationError("no methods to evaluate")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise EvaluationError(f"method names must be unique; got {names}")
    if batch < 1:
        raise EvaluationError(f"batch must be >= 1; got {batch}")
    if len(source) == 0:
        raise EvaluationError("the data source holds no images")
    if (save_images > 0 or (edits and edit_images > 0)) and image_dir is None:
        raise EvaluationError("save_images / edit_images need image_dir")
    has_labels = source.labels(0) is not None if len(source) else False
    if edits:
        if metrics.domain_net is None:
            raise EvaluationError("editing metrics need the SynthFaces domain network (--domain-net)")
        if not has_labels:
            raise EvaluationError("editing metrics are defined on SynthFaces (a source with attribute labels); "
                                  "use --data synthfaces")
        for e in edits:
            if e.attribute not in metrics.domain_net.attribute_names:
                raise EvaluationError(f"edit attribute {e.attribute!r} is not predicted by the domain network "
                                      f"({list(metrics.domain_net.attribute_names)})")
    image_dir = Path(image_dir) if image_dir is not None else None
    notes: list[str] = []
    if save_images > 0:
        notes.append(_SAVED_IMAGES_NOTE[protocol.as_saved])
    if protocol.fixed_side:
        small = [m.name for m in methods if getattr(getattr(m.inverter, "decoder", None), "size", protocol.side)
                 < protocol.side]
        if small:
            notes.append(f"protocol '{protocol.name}' measures at {protocol.side} px, but the generator of "
                         f"{', '.join(small)} renders fewer pixels: its outputs are enlarged by the pooling.")

    keys = [(m.name, r) for m in methods for r in m.representations]
    per_image: dict[tuple[str, str], dict[str, list[float]]] = {k: {} for k in keys}
    capped = {k: 0 for k in keys}
    feats: dict[tuple[str, str], dict[str, list[torch.Tensor]]] = {k: {} for k in keys}
    gt_feats: dict[tuple[int, int], dict[str, list[torch.Tensor]]] = {}
    metric_sizes: dict[str, list[int]] = {}
    seconds = {m.name: 0.0 for m in methods}
    codes: dict[str, list[torch.Tensor]] = {m.name: [] for m in methods}
    ceiling: dict[str, list[float]] = {}  # attribute fidelity of the inputs themselves
    gt_attr_pred: list[torch.Tensor] = []
    gt_attr_true: list[torch.Tensor] = []
    image_names: list[str] = []
    failures: list[dict] = []
    saved: dict[str, list[str]] = {"input": []}
    skipped: set[str] = set()

    bar = tqdm(total=len(source), unit="img", desc="evaluate", disable=not progress)
    for start in range(0, len(source), batch):
        pil, names_b, labels_b = [], [], []
        for i in range(start, min(start + batch, len(source))):
            try:
                pil.append(source.load(i))
            except ImageReadError as e:
                failures.append({"image": source.name(i), "reason": e.reason})
                continue
            except Exception as e:  # a decoder bug must not stop the evaluation
                failures.append({"image": source.name(i), "reason": f"{type(e).__name__}: {e}"})
                continue
            names_b.append(source.name(i))
            labels_b.append(source.labels(i))
        bar.update(min(batch, len(source) - start))
        if not pil:
            continue
        first = len(image_names)
        image_names.extend(names_b)
        inputs: dict[tuple[int, int], torch.Tensor] = {}
        targets: dict[tuple[int, int], torch.Tensor] = {}

        def input_at(hw: tuple[int, int]) -> torch.Tensor:
            if hw not in inputs:
                inputs[hw] = torch.stack([_resize(im, hw) for im in pil]).to(device)
            return inputs[hw]

        def target_at(hw: tuple[int, int]) -> torch.Tensor:
            if hw not in targets:
                targets[hw] = torch.stack([_resize(im, hw) for im in pil]).to(device)
                if metrics.feature_names():
                    for k, v in metrics.features(targets[hw]).items():
                        gt_feats.setdefault(hw, {}).setdefault(k, []).append(v)
            return targets[hw]

        for m in methods:
            inv = m.inverter
            x = input_at(tuple(int(v) for v in inv.input_size))
            _sync(device)
            t0 = time.perf_counter()
            out = inv.invert(x, images=m.representations)
            _sync(device)
            seconds[m.name] += time.perf_counter() - t0
            if edits and "wplus" in out:
                codes[m.name].append(out["wplus"].detach().float().cpu())
            for rep in m.representations:
                img = protocol.prepare_output(out[f"image_{rep}"], inv.input_size)
                hw = (int(img.shape[-2]), int(img.shape[-1]))
                metric_sizes.setdefault(m.name, list(hw))
                gt = target_at(hw)
                values, n_capped = metrics.per_image(img, gt)
                if has_labels:
                    values.update(metrics.attribute_fidelity(img, labels_b))
                skipped.update(metrics.skipped(min(hw)))
                capped[(m.name, rep)] += n_capped
                for k, v in values.items():
                    per_image[(m.name, rep)].setdefault(k, []).extend(v.tolist())
                for k, v in metrics.features(img).items():
                    feats[(m.name, rep)].setdefault(k, []).append(v)
                for j in range(max(0, min(save_images - first, img.shape[0]))):
                    idx = first + j
                    path = image_dir / f"{idx:04d}_{_file_stem(m.name)}_{rep}.png"
                    save_image(img[j], path)
                    saved.setdefault(f"{m.name}/{rep}", []).append(str(path))
            del out
        # inputs as measured (ground truth at the first metric size), for the grid
        if targets:
            hw0 = next(iter(targets))
            for j in range(max(0, min(save_images - first, len(pil)))):
                idx = first + j
                path = image_dir / f"{idx:04d}_input.png"
                save_image(targets[hw0][j], path)
                saved["input"].append(str(path))
            if has_labels:
                for k, v in metrics.attribute_fidelity(targets[hw0], labels_b).items():
                    ceiling.setdefault(k, []).extend(v.tolist())
            if edits and has_labels:
                with torch.no_grad():
                    gt_attr_pred.append(metrics.domain_net.attributes(targets[hw0]).double().cpu())
                gt_attr_true.append(torch.stack([torch.as_tensor(lb["attributes"]) for lb in labels_b]).double())
    bar.close()

    n = len(image_names)
    if n == 0:
        raise EvaluationError(f"no image could be read ({len(failures)} failed; first: "
                              f"{failures[0] if failures else 'none'})")
    if skipped:
        side = min(min(v) for v in metric_sizes.values())
        notes.append(f"{', '.join(sorted(skipped))} not computed: the images ({side} px) are smaller than the SSIM "
                     f"window or the LPIPS trunk's minimum of {LPIPS_MIN_SIDE} px.")

    if ceiling:
        means = ", ".join(f"{k} {summarize(v)['mean']:.3f}" for k, v in ceiling.items())
        who = "attribute judge's" if metrics.judge_net is not None else "domain network's"
        notes.append(f"Attribute fidelity ceiling: the same {who} predictions on the inputs themselves "
                     f"give {means} (the network's own error; a reconstruction cannot be expected to do better).")
    set_level = _frechet_distances(feats, gt_feats, metric_sizes, n, notes)
    editing: list[dict] = []
    edit_saved: dict[tuple[str, str], list[list[str]]] = {}
    if edits:
        editing, edit_saved = _measure_edits(edits, methods, codes, metrics.domain_net,
                                             torch.cat(gt_attr_pred), torch.cat(gt_attr_true), edit_n, batch,
                                             device, edit_images if image_dir is not None else 0, image_dir, notes)

    size_text = None
    sizes = {tuple(v) for v in metric_sizes.values()}
    if len(sizes) == 1:
        h, w = next(iter(sizes))
        size_text = f"{h}x{w}"
    infos = [i for i in metrics.metric_infos(size_text or "each method's metric size")
             if i.name not in skipped]
    method_rows = []
    for m in methods:
        sec = seconds[m.name]
        method_rows.append({"name": m.name, "representations": list(m.representations),
                            "arch": getattr(m.inverter, "arch", type(m.inverter).__name__),
                            "input_size": list(m.inverter.input_size), "metric_size": metric_sizes.get(m.name),
                            "seconds": round(sec, 3), "images_per_s": round(n / sec, 3) if sec > 0 else None,
                            **m.info})
    return EvaluationResult(image_names=image_names, failures=failures, per_image=per_image, set_level=set_level,
                            psnr_capped=capped, metric_infos=infos, missing=list(metrics.missing),
                            methods=method_rows, protocol=protocol, metric_sizes=metric_sizes,
                            source=source.describe(), editing=editing, saved_images=saved, edit_images=edit_saved,
                            notes=notes)
