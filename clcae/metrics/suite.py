"""The metric suite: every per-image and set-level metric whose network weights are present (:class:`MetricSuite`,
built by :func:`build_metric_suite`); a missing weights file leaves its metric out and says which file it needs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.images import display_path
from .fidelity import attribute_fidelity, detail_ratio
from .inception import INCEPTION_FILE_NAME, InceptionFeatures, default_inception_path
from .protocol import EvaluationError
from .reconstruction import mse, psnr, ssim
from .tables import MetricInfo

__all__ = ["PSNR_CAP", "LPIPS_MIN_SIDE", "MetricSuite", "build_metric_suite"]

#: Per-image PSNR is capped here (dB): an exact reconstruction has infinite PSNR, which would make every mean
#: infinite. 8-bit images at 256 px cannot exceed ~101 dB unless identical, so the cap only marks exact copies.
PSNR_CAP = 100.0
#: Smallest image side LPIPS' AlexNet trunk can process.
LPIPS_MIN_SIDE = 32


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
        raise EvaluationError.about(option, f"{display_path(p)}: no such file")
    return p


def _domain_net(net: str | os.PathLike | nn.Module, option: str, device: str | torch.device
                ) -> tuple[nn.Module, str | None]:
    """A SynthFaces DomainNet (a module, or a file loaded strictly) in eval mode and its weights' name;
    EvaluationError naming ``option`` for a missing or refused file."""
    if isinstance(net, nn.Module):
        return net.to(device).eval().requires_grad_(False), getattr(net, "weights_path", "(a DomainNet object)")
    from ..formats.files import CheckpointError
    from ..networks.domain import load_domain_net

    p = _existing(net, option)
    try:
        return load_domain_net(p, device=device), _short(p)
    except CheckpointError as e:
        raise EvaluationError.about(option, f": {e}") from None


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
        kwargs["domain_net"], kwargs["domain_weights"] = _domain_net(domain_net, "domain_net", device)
        domain_note = " The SynthFaces domain network's `domain_perceptual` (an LPIPS-like distance, not LPIPS) " \
                      "is reported instead."
    else:
        missing.append("id_domain, domain_perceptual and fd_domain not computed: they need the SynthFaces domain "
                       "network (--domain-net FILE; pretrained/synthfaces64_domain_net.pt is used by default for "
                       "SynthFaces data).")

    if judge_net is not None:
        kwargs["judge_net"], kwargs["judge_weights"] = _domain_net(judge_net, "judge_net", device)

    lp = Path(lpips_weights) if lpips_weights is not None else (default_lpips_backbone_path("alex")
                                                               if use_hub_cache else None)
    if lpips_weights is not None:
        _existing(lpips_weights, "lpips_weights")
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

        p = _existing(arcface_weights, "arcface_weights")
        try:
            kwargs.update(arcface=ArcFaceIdentity(p, device=device), arcface_weights=_short(p))
        except (MissingWeightsError, CheckpointError, ValueError) as e:
            raise EvaluationError.about("arcface_weights", f": {e}") from None
    else:
        missing.append("id_arcface not computed: needs ArcFace IR-SE-50 weights model_ir_se50.pth (pSp's "
                       "pretrained_models file) via --arcface-weights FILE. The paper's ID metric (MTCNN alignment + "
                       "CurricularFace IR-101) is not available here.")

    ip = Path(inception_weights) if inception_weights is not None else (default_inception_path()
                                                                       if use_hub_cache else None)
    if inception_weights is not None:
        _existing(inception_weights, "inception_weights")
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
            raise EvaluationError.about("id_dlib", f": {e}") from None
    return MetricSuite(missing=missing, **kwargs)
