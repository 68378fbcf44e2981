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
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..data.images import ImageReadError, save_image
from .editing import editing_metrics
from .frechet import feature_statistics, frechet_distance
from .inception import INCEPTION_FILE_NAME, InceptionFeatures, default_inception_path
from .protocol import PROTOCOLS, EvaluationError, Protocol, _protocol
from .sources import EvalSource, FolderSource, SynthFacesSource, _resize
from .suite import LPIPS_MIN_SIDE, PSNR_CAP, MetricSuite, build_metric_suite
from .tables import (REPRESENTATION_LABELS, GridRow, ImageGrid, MetricInfo, Report, ResultEntry,
                     representation_label, summarize)

__all__ = ["Protocol", "PROTOCOLS", "PSNR_CAP", "INCEPTION_FILE_NAME", "default_inception_path", "InceptionFeatures",
           "MetricSuite", "build_metric_suite", "EvalSource", "SynthFacesSource", "FolderSource", "EvalMethod",
           "AttributeEdit", "default_representations", "EvaluationResult", "evaluate", "EvaluationError"]


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
