"""The evaluation job: load the methods, build the metric suite and the data, measure, write the tables and the
report into a folder (the body of ``scripts/eval.py``; :func:`run_evaluation`). See docs/EVALUATION.md.

Writes to ``job.out``: ``results.md``, ``results.csv``, ``results.json`` (one row per method and representation),
``per_image.csv``, ``report.html`` and ``images/`` (:func:`clcae.metrics.tables.write_all`).
"""
from __future__ import annotations

import dataclasses
import datetime
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..version import __version__
from ..checkpoints import CheckpointError
from ..editing.interfacegan import apply_direction, load_direction
from ..inversion.runner import ProjectionOptions, load_avg_image, load_method
from ..jobs import JobError, resolve_device
from .evaluation import AttributeEdit, EvalMethod, evaluate
from .protocol import EvaluationError
from .sources import FolderSource, SynthFacesSource
from .suite import MetricSuite, build_metric_suite
from .tables import Report, write_all

__all__ = ["EvalJob", "run_evaluation", "load_eval_methods", "generator_side", "attribute_edits"]


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """What :func:`run_evaluation` measures and where it writes (``scripts/eval.py`` fills it from its flags).

    Attributes:
        methods: ``(name, checkpoint)`` of encoder inverters; projections: ``(name, generator, space, steps)``.
        data: ``'synthfaces'`` (the test split, ``n`` images at ``res``, ``synthfaces_seed``) or an image folder
            (its first ``n`` images; all by default).
        out: the output folder.
        generator, avg_image: for official CLCAE checkpoints (latent_avg; the average image).
        protocol: a key of :data:`clcae.metrics.protocol.PROTOCOLS`.
        lpips_weights, arcface_weights, inception_weights, domain_net, use_hub_cache, id_dlib: metric weights;
            judge_net: the network that judges attribute fidelity (None: the domain network).
        edits: ``(attribute, direction file)`` measured on SynthFaces at ``edit_strengths`` on ``edit_n`` images;
            ``edit_ignore``: attributes left out of the "other attributes changed" metric.
        save_images, embed_images: the report's image grids. batch, device, precision, progress: how it runs.
    """

    methods: Sequence[tuple[str, str]]
    projections: Sequence[tuple[str, str, str, int]]
    data: str
    out: Path
    n: int | None = None
    res: int | None = None
    synthfaces_seed: int = 0
    protocol: str = "default"
    generator: str | None = None
    avg_image: str | None = None
    projection_seed: int = 0
    lpips_weights: str | None = None
    arcface_weights: str | None = None
    inception_weights: str | None = None
    domain_net: str | Path | None = None
    judge_net: str | Path | None = None
    use_hub_cache: bool = True
    id_dlib: bool = False
    edits: Sequence[tuple[str, str]] = ()
    edit_strengths: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    edit_n: int | None = None
    edit_ignore: Sequence[str] = ()
    save_images: int = 8
    embed_images: bool = False
    batch: int = 8
    device: str = "auto"
    precision: str = "fp32"
    title: str = "Inversion evaluation"
    progress: bool = True


def load_eval_methods(job: EvalJob, device: torch.device, suite: MetricSuite) -> list[EvalMethod]:
    """The job's inverters (checkpoints, then projections) as :class:`EvalMethod`; a projection's loss is LPIPS
    when the suite has it, else the domain perceptual distance, else MSE."""
    methods = []
    for name, ckpt in job.methods:
        lm = load_method(checkpoint=ckpt, method="auto", generator=job.generator, device=device)
        inv = lm.inverter
        if job.precision != "fp32":
            inv.set_precision(job.precision)
        if job.avg_image is not None and hasattr(inv, "set_avg_image"):
            inv.set_avg_image(load_avg_image(job.avg_image, inv.input_size).to(device), str(job.avg_image))
            lm.settings["avg_image"] = str(Path(job.avg_image).resolve())
        info = dict(lm.settings)
        if hasattr(inv, "avg_image_source"):
            info["avg_image_source"] = inv.avg_image_source
        methods.append(EvalMethod(name, inv, info=info))
    for name, generator, space, steps in job.projections:
        if suite.lpips is not None:
            perceptual = "lpips"
        elif suite.domain_net is not None:
            perceptual = "domain"
        else:
            perceptual = "none"
        opts = ProjectionOptions(space=space, steps=steps, perceptual=perceptual, lpips_weights=suite.lpips_weights,
                                 domain_net=suite.domain_weights if perceptual == "domain" else None,
                                 seed=job.projection_seed)
        lm = load_method(checkpoint=None, method="projection", generator=generator, device=device, projection=opts)
        methods.append(EvalMethod(name, lm.inverter, info=dict(lm.settings)))
    return methods


def generator_side(methods: Sequence[EvalMethod]) -> int:
    """The resolution every method's generator has; EvaluationError when they differ."""
    sides = {int(m.inverter.decoder.size) for m in methods}
    if len(sides) != 1:
        raise EvaluationError(f"the methods' generators differ in resolution ({sorted(sides)}); pass --res")
    return sides.pop()


def attribute_edits(edits: Sequence[tuple[str, str]], attribute_names: Sequence[str], generator: torch.nn.Module,
                    strengths: Sequence[float], ignore: Sequence[str] = ()) -> list[AttributeEdit]:
    """``(attribute, InterFaceGAN direction file)`` pairs as :class:`AttributeEdit`; EvaluationError for an
    attribute the domain network does not predict, a missing file or a direction for another attribute."""
    ignore = set(ignore)
    unknown = sorted(ignore - set(attribute_names))
    if unknown:
        raise EvaluationError.about("edit_ignore", f"{unknown}: not attributes of the domain network "
                                    f"({list(attribute_names)})")
    specs = []
    for attribute, path in edits:
        if attribute not in attribute_names:
            raise EvaluationError.about("edit", f"{attribute}={path}: {attribute!r} is not an attribute of the "
                                        f"domain network ({list(attribute_names)})")
        if not Path(path).is_file():
            raise EvaluationError.about("edit", f"{attribute}={path}: no such file")
        try:
            direction = load_direction(path, generator=generator)
        except CheckpointError as e:
            raise EvaluationError.about("edit", f"{attribute}: {e}") from None
        if direction.attribute is not None and direction.attribute != attribute:
            raise EvaluationError.about("edit", f"{attribute}={path}: the file is a direction for "
                                                f"{direction.attribute!r}")

        def fn(codes: torch.Tensor, strength: float, d=direction) -> torch.Tensor:
            return apply_direction(codes, d.vector, strength, layers=d.layers)

        others = [a for a in attribute_names if a != attribute and a not in ignore]
        specs.append(AttributeEdit(attribute, fn, list(strengths), source=str(Path(path).resolve()),
                                   other_attributes=others))
    return specs


def run_evaluation(job: EvalJob, sections: Mapping[str, Any] | None = None) -> Report:
    """Measure every method of ``job`` and write the tables and the report into ``job.out`` (created).

    ``sections``: extra report sections (e.g. the command line and its options); an ``environment`` section
    (versions, device, date) is added. Returns the :class:`~clcae.metrics.tables.Report`. Raises
    :class:`~clcae.metrics.protocol.EvaluationError` for bad settings or files (before any measuring).
    """
    synthfaces = job.data == "synthfaces"
    try:
        device = resolve_device(job.device)
    except JobError as e:
        raise EvaluationError.retold(e) from None
    suite = build_metric_suite(lpips_weights=job.lpips_weights, arcface_weights=job.arcface_weights,
                               inception_weights=job.inception_weights, domain_net=job.domain_net, device=device,
                               use_hub_cache=job.use_hub_cache, id_dlib=job.id_dlib, judge_net=job.judge_net)
    try:
        methods = load_eval_methods(job, device, suite)
    except JobError as e:
        raise EvaluationError.retold(e) from None
    if synthfaces:
        source = SynthFacesSource(job.n, res=job.res or generator_side(methods), split="test",
                                  seed=job.synthfaces_seed)
        if job.edits and suite.domain_net is None:
            raise EvaluationError.about("edit", "needs the SynthFaces domain network (domain_net)", ("domain_net",))
        edits = (attribute_edits(job.edits, suite.domain_net.attribute_names, methods[0].inverter.decoder,
                                 job.edit_strengths, job.edit_ignore) if job.edits else [])
    else:
        source = FolderSource(job.data, job.n)
        edits = []
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate(methods, source, suite, job.protocol, batch=job.batch, device=device,
                      save_images=job.save_images, image_dir=out / "images", edits=edits, edit_n=job.edit_n,
                      progress=job.progress)
    sections = dict(sections or {})
    sections["environment"] = {"clcae": __version__, "torch": torch.__version__,
                               "python": platform.python_version(), "device": str(device),
                               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    report = result.to_report(job.title, sections)
    write_all(report, out, embed_images=job.embed_images)
    return report
