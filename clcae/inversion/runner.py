"""The shared inference function: invert a folder of images with any method and write what it produces.

Every script that inverts images (``scripts/invert.py`` now; ``eval.py`` and ``edit.py`` later) goes through
this module, so the image preprocessing, the output layout and the resume logic exist once:

- :func:`load_method` loads an encoder inverter (ours, or the official CLCAE / pSp / e4e files) or builds an
  optimisation-based :class:`~clcae.inversion.projection.ProjectionInverter`, and applies an average-image PNG;
- :func:`~clcae.jobs.list_inputs` (from :mod:`clcae.jobs`, re-exported here) lists the images of a folder
  (recursive) or one file and gives each a unique output name;
- :func:`read_input` reads one image as the network input (``[3, H, W]`` in [-1, 1] at ``inverter.input_size``);
- :func:`invert_folder` runs the inverter in batches and writes, for each image ``NAME`` (its path relative to the
  input folder, without extension)::

      OUT/w/NAME.png  OUT/wplus/NAME.png  OUT/wplus_f/NAME.png   reconstructions (only those the method renders)
      OUT/latents/NAME.pt                                        codes: w [D], wplus [n, D], f [C, h, w], ...
                                                                 (+ 'alignment': the crop's alignment record)
      OUT/strips/NAME.jpg                                        input as it was | w | wplus | wplus_f
      OUT/summary.json, OUT/run.json                             counts and failures; the run's settings

Every file is written atomically (temporary file + rename), the latents last, so a killed run never leaves a
half-written file, and an image counts as finished only when all of its files exist. A re-run skips finished
images (one ``stat`` per file); bad input files are reported by name and skipped; nothing stops the run except a
problem with the settings themselves (:class:`RunnerError`).

An input that is an aligned crop (written by ``scripts/align.py`` / :func:`clcae.align.save_alignment`, with its
alignment record ``NAME.json`` beside it) gets the record's absolute path in its latents (``'alignment'``), so that
``scripts/edit.py --paste-back`` can put an edit back into the original photograph. ``scripts/invert.py --align``
aligns the photos first (into ``OUT/aligned/``) and passes the alignment summary here (``align_summary``) so the
photos without a face are counted and listed in the run's summary.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoints import CheckpointError, load_generator, load_inverter
from ..data.images import DEFAULT_MIN_SIZE, ImageReadError, display_path, fit_image, load_image, \
    save_image, to_tensor
from ..jobs import (InputItem, JobError, check_run_settings, list_inputs, listed_lines, resolve_device,
                    write_json)
from ..networks.inverters import Inverter, official_output
from .latents import write_latents

__all__ = ["RunnerError", "ProjectionOptions", "LoadedMethod", "InputItem", "METHODS", "SIZES", "FORMATS",
           "RESIZE_POLICIES", "IMAGE_KINDS", "OFFICIAL_SIDE", "resolve_device", "load_method", "load_avg_image",
           "is_shipped_synthfaces_generator",
           "read_input", "read_input_and_preview", "list_inputs", "output_paths", "is_finished", "output_at_size",
           "to_output_size", "make_strip",
           "invert_folder", "format_summary"]

#: ``--method`` values: ``'auto'`` takes the arch of the checkpoint; the others also check it.
METHODS = ("auto", "clcae", "psp", "e4e", "projection")
#: ``'official'``: the size the official scripts write (:func:`to_output_size`); ``'full'``: the generator's.
SIZES = ("official", "full")
FORMATS = ("png", "jpg")
#: ``'resize'``: squash to the input size with PIL bilinear, as the official transform; ``'center_crop'``: the
#: largest centred box with the input's aspect ratio, then the same resize.
RESIZE_POLICIES = ("resize", "center_crop")
#: Reconstructions, in strip order: from w, from W+, from W+ and the F-space feature.
IMAGE_KINDS = ("w", "wplus", "wplus_f")
#: Side of the official outputs (``--resize_outputs``: 256 px; cars 192x256).
OFFICIAL_SIDE = 256

_RUN_FILE = "run.json"
_SUMMARY_FILE = "summary.json"
_OOM_ERRORS = tuple({getattr(torch, "OutOfMemoryError", RuntimeError), torch.cuda.OutOfMemoryError})

#: The folder jobs' error (:class:`clcae.jobs.JobError`) under the name this module has always raised.
RunnerError = JobError


# ---------------------------------------------------------------------------------------------------- methods
@dataclasses.dataclass
class ProjectionOptions:
    """Options of the optimisation-based method (:class:`~clcae.inversion.projection.Projector`).

    Attributes:
        space: ``'w'`` (one code) or ``'wplus'`` (one code per layer).
        steps: optimisation steps per image (NVIDIA: 1000).
        perceptual: ``'auto'`` (default: LPIPS when its AlexNet weights are found; without them, on the shipped
            SynthFaces generator, the domain network, said in :attr:`LoadedMethod.notes`; otherwise an error),
            ``'lpips'`` (AlexNet LPIPS; needs the torchvision weights locally), ``'domain'`` (the SynthFaces
            domain network's feature distance) or ``'none'`` (pixel MSE only).
        lpips_weights: the torchvision AlexNet file for ``'lpips'`` (default: the torch hub cache).
        domain_net: the domain network file for ``'domain'`` (default: the shipped SynthFaces one).
        seed: every image is projected with this seed (its result does not depend on its batch).
        mse_weight: pixel-MSE weight (``None``: 0 with a perceptual loss, 1 without, as the projector's default).
        optimize_noise: also optimise the generator's noise maps (NVIDIA); they are saved with the latents.
        w_avg_samples: mapping samples for the code statistics.
    """

    space: str = "w"
    steps: int = 1000
    perceptual: str = "auto"
    lpips_weights: str | None = None
    domain_net: str | None = None
    seed: int = 0
    mse_weight: float | None = None
    optimize_noise: bool = True
    w_avg_samples: int = 10000

    def to_dict(self) -> dict:
        """Plain-data copy (paths as given)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LoadedMethod:
    """What :func:`load_method` returns.

    Attributes:
        inverter: the eval-mode inverter on its device.
        method: ``'clcae'``, ``'psp'``, ``'e4e'`` or ``'projection'``.
        checkpoint: the file the networks came from, as given (for the latents files).
        settings: plain data that determines the results (method, resolved file paths, input size, projection
            options with the perceptual loss actually used); :func:`invert_folder` refuses to mix results of
            different settings in one folder.
        notes: choices made for the caller that it should be told (one line each), e.g. the projection's loss
            chosen by ``perceptual='auto'``.
    """

    inverter: Inverter
    method: str
    checkpoint: str
    settings: dict
    notes: tuple[str, ...] = ()


def _existing_file(path: str | os.PathLike, option: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise RunnerError.about(option, f"{display_path(p)}: no such file")
    if not p.is_file():
        raise RunnerError.about(option, f"{display_path(p)}: not a file")
    return p


def _resolved(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _size_tuple(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise RunnerError(f"input size must be (H, W) of positive ints; got {size}")
    return size


def _load_encoder(checkpoint: Path, generator: str | None, device: torch.device, impl: str,
                  input_size: tuple[int, int] | None) -> Inverter:
    try:
        return load_inverter(checkpoint, generator=generator, device=device, input_size=input_size, impl=impl)
    except CheckpointError as e:
        hint = ""
        if "not an inverter" in str(e):
            hint = (" (a StyleGAN2 generator file is not an inverter; to invert with it by optimisation use "
                    "method projection with generator FILE)")
        raise RunnerError.about("checkpoint", f": {e}{hint}", ("method", "generator") if hint else ()) from None
    except (ValueError, TypeError) as e:  # e.g. a stored avg_image that does not fit an input_size override
        raise RunnerError.about("checkpoint", f"{display_path(checkpoint)}: cannot build the inverter: {e}") from None


def is_shipped_synthfaces_generator(generator: torch.nn.Module) -> bool:
    """Whether ``generator`` has exactly the weights of the shipped SynthFaces generator
    (``pretrained/synthfaces64_generator.pt``; False when that file is not there)."""
    from ..pretrained import SYNTHFACES_GENERATOR, shipped

    path = shipped(SYNTHFACES_GENERATOR)
    if path is None or int(getattr(generator, "size", 0)) != 64:
        return False
    try:
        reference = load_generator(path, device="cpu").state_dict()
    except CheckpointError:
        return False
    mine = generator.state_dict()
    return mine.keys() == reference.keys() and all(
        mine[k].shape == v.shape and torch.equal(mine[k].detach().cpu(), v) for k, v in reference.items())


def _auto_perceptual(opts: ProjectionOptions, generator: torch.nn.Module) -> tuple[str, str | None]:
    """``(loss, note)`` for ``perceptual='auto'``: LPIPS when its weights are found, else the domain network on the
    shipped SynthFaces generator (with a one-line note); else RunnerError saying what to pass."""
    from ..losses.perceptual import default_lpips_backbone_path

    if opts.lpips_weights:  # a file named by the caller is used (or its absence reported), never replaced
        return "lpips", None
    weights = default_lpips_backbone_path("alex")
    if weights.is_file():
        return "lpips", None
    if is_shipped_synthfaces_generator(generator):
        return "domain", (f"projection loss: the SynthFaces domain network's perceptual distance (the LPIPS AlexNet "
                          f"weights {display_path(weights)} are not there, and the generator is the shipped "
                          "SynthFaces one)")
    raise RunnerError.about("perceptual", f"auto: the LPIPS AlexNet weights {display_path(weights)} are not there "
                            f"({_PERCEPTUAL_CHOICES})", _PERCEPTUAL_MENTIONS)


#: What to pass when the LPIPS weights are missing (the options are named in the caller's words by a command line).
_PERCEPTUAL_CHOICES = ("pass lpips_weights FILE; or perceptual domain for SynthFaces, or perceptual none for pixel "
                       "MSE only")
_PERCEPTUAL_MENTIONS = ("lpips_weights", "perceptual")


def _perceptual_loss(opts: ProjectionOptions, device: torch.device):
    from ..losses.perceptual import MissingWeightsError, build_perceptual

    if opts.perceptual == "none":
        return None
    if opts.perceptual == "lpips":
        try:
            return build_perceptual("lpips", backbone_weights=opts.lpips_weights, reduction="none").to(device)
        except (MissingWeightsError, CheckpointError) as e:
            raise RunnerError.about("perceptual", f"lpips: {e} ({_PERCEPTUAL_CHOICES})", _PERCEPTUAL_MENTIONS) from None
    if opts.perceptual == "domain":
        from ..networks.domain import load_domain_net
        from ..pretrained import SYNTHFACES_DOMAIN_NET, pretrained_dir

        path = opts.domain_net
        if path is None:
            path = pretrained_dir() / SYNTHFACES_DOMAIN_NET
            if not path.is_file():
                raise RunnerError.about("perceptual", f"domain: no domain_net given and the shipped domain network "
                                        f"{display_path(path)} does not exist", ("domain_net",))
        path = _existing_file(path, "domain_net")
        try:
            net = load_domain_net(path, device=device)
        except CheckpointError as e:
            raise RunnerError.about("domain_net", f": {e}") from None
        return build_perceptual("domain", domain_net=net, reduction="none").to(device)
    raise RunnerError.about("perceptual", f"{opts.perceptual!r}: expected auto, lpips, domain or none")


def load_method(checkpoint: str | os.PathLike | None = None, method: str = "auto",
                generator: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                impl: str = "auto", input_size: Sequence[int] | None = None,
                projection: ProjectionOptions | None = None, avg_image: str | os.PathLike | None = None,
                resize: str = "resize", progress: bool = False) -> LoadedMethod:
    """Load or build the inverter a run uses.

    Args:
        checkpoint: an inverter file (ours, or an official CLCAE / pSp / e4e checkpoint). With
            ``method='projection'`` it is optional: its decoder is then the generator (unless ``generator`` is
            given) and its codes start the optimisation.
        method: one of :data:`METHODS`. ``'auto'`` uses the checkpoint's arch; ``'clcae'|'psp'|'e4e'`` also check
            it; ``'projection'`` optimises codes (:class:`ProjectionOptions`).
        generator: a StyleGAN2 file. For an official CLCAE checkpoint (which stores no ``latent_avg``) its
            ``latent_avg`` is used, taking precedence over the file named by ``opts['stylegan_weights']``; for
            projection it is the generator.
        device, impl: where to run and the generator's op implementation (``'auto'|'cuda'|'fast'|'ref'``).
        input_size: ``(H, W)`` overriding the inverter's input size (projection default: the generator's size).
        projection: options of the projection method (default :class:`ProjectionOptions`).
        avg_image: an average-image file (the official ``image_avg.png``), read like the inputs (``resize``) and
            used by CLCAE instead of the stored or rendered one; other methods ignore it with a warning.
        progress: show the projector's per-step progress bar.

    Returns:
        :class:`LoadedMethod`. Raises :class:`RunnerError` with a message naming the file or option at fault.
    """
    if method not in METHODS:
        raise RunnerError.about("method", f"{method!r}: expected one of {', '.join(METHODS)}")
    device = torch.device(device)
    input_size = _size_tuple(input_size)
    settings: dict[str, Any] = {}
    notes: tuple[str, ...] = ()
    if method == "projection":
        projection = projection or ProjectionOptions()
        inv, source, projection, notes = _build_projection(checkpoint, generator, device, impl, input_size,
                                                           projection, progress)
        settings["projection"] = projection.to_dict()
        for key in ("lpips_weights", "domain_net"):
            settings["projection"][key] = _resolved(settings["projection"][key])
    else:
        if checkpoint is None:
            raise RunnerError.about("checkpoint", "is required: an inverter file (ours, or an official CLCAE / pSp / "
                                    "e4e checkpoint); or use method projection with generator FILE",
                                    ("method", "generator"))
        path = _existing_file(checkpoint, "checkpoint")
        if generator is not None:
            _existing_file(generator, "generator")
        inv = _load_encoder(path, None if generator is None else str(generator), device, impl, input_size)
        if method != "auto" and inv.arch != method:
            raise RunnerError.about("method", f"{method}: {display_path(path)} holds a {inv.arch} inverter")
        source = str(checkpoint)
    name = "projection" if method == "projection" else inv.arch
    settings.update(method=name, checkpoint=_resolved(checkpoint), generator=_resolved(generator),
                    input_size=list(inv.input_size), avg_image=None)
    if avg_image is not None:
        if hasattr(inv, "set_avg_image"):
            inv.set_avg_image(load_avg_image(avg_image, inv.input_size, resize).to(device), str(avg_image))
            settings["avg_image"] = _resolved(avg_image)
        else:
            warnings.warn(f"avg_image {display_path(avg_image)} is ignored: only CLCAE subtracts an average "
                          f"image ({name} does not)", stacklevel=2)
    return LoadedMethod(inverter=inv, method=name, checkpoint=source, settings=settings, notes=notes)


def _build_projection(checkpoint, generator, device, impl, input_size, opts: ProjectionOptions, progress: bool):
    """``(inverter, source, options with the perceptual loss resolved, notes)``."""
    from .projection import SPACES, ProjectionInverter, Projector

    if opts.space not in SPACES:
        raise RunnerError.about("space", f"{opts.space!r}: expected one of {', '.join(SPACES)}")
    if opts.steps < 1:
        raise RunnerError.about("steps", f"must be >= 1; got {opts.steps}")
    if generator is None and checkpoint is None:
        raise RunnerError.about("method", "projection needs generator FILE (a StyleGAN2 file: ours, rosinality .pt, "
                                "NVIDIA .pkl, or a pSp/e4e/CLCAE checkpoint's decoder)", ("generator",))
    encoder = None
    if checkpoint is not None:  # an encoder gives the starting codes (and the generator if none is given)
        encoder = _load_encoder(_existing_file(checkpoint, "checkpoint"), None if generator is None
                                else str(generator), device, impl, None)
        if opts.space == "w" and encoder.arch == "psp":
            raise RunnerError.about("space", "w: pSp gives no single code w to start from; use space wplus",
                                    ("space",))
    if generator is not None:
        gpath = _existing_file(generator, "generator")
        try:
            G = load_generator(gpath, device=device, impl=impl)
        except CheckpointError as e:
            raise RunnerError.about("generator", f": {e}") from None
        source = str(generator)
    else:
        G, source = encoder.decoder, str(checkpoint)
    notes: tuple[str, ...] = ()
    if opts.perceptual == "auto":
        chosen, note = _auto_perceptual(opts, G)
        opts = dataclasses.replace(opts, perceptual=chosen)
        notes = (note,) if note else ()
    perceptual = _perceptual_loss(opts, device)
    latent_avg = G.latent_avg if getattr(G, "latent_avg_source", "file") == "file" else None
    try:
        projector = Projector(G, perceptual, space=opts.space, mse_weight=opts.mse_weight, latent_avg=latent_avg,
                              w_avg_samples=opts.w_avg_samples, optimize_noise=opts.optimize_noise)
        init_fn = None if encoder is None else _encoder_codes(encoder, "w" if opts.space == "w" else "wplus")
        inv = ProjectionInverter(projector, input_size=input_size, steps=opts.steps, seed=opts.seed,
                                 progress=progress, init_fn=init_fn)
    except ValueError as e:
        raise RunnerError.about("method", f"projection: {e}") from None
    return inv.eval(), source, opts, notes


def _encoder_codes(encoder: Inverter, key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> encoder.invert(x)[key]`` with x resized (bilinear, antialiased) to the encoder's input size."""

    def codes(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != encoder.input_size:
            x = F.interpolate(x, size=encoder.input_size, mode="bilinear", align_corners=False, antialias=True)
        return encoder.invert(x, images=())[key]

    return codes


# ---------------------------------------------------------------------------------------------------- inputs
def read_input(path: str | os.PathLike, input_size: Sequence[int], policy: str = "resize",
               min_size: int = DEFAULT_MIN_SIZE) -> torch.Tensor:
    """Read one image as the network input: ``float32 [3, H, W]`` in [-1, 1] at ``input_size = (H, W)``.

    Any readable file (every colour mode ends as 8-bit RGB, transparency on white; see
    :func:`clcae.data.images.load_image`). ``policy='resize'`` squashes the image to ``(H, W)`` with PIL's
    bilinear filter, exactly as the official ``transforms.Resize`` on a PIL image; ``'center_crop'`` first keeps
    the largest centred region with the input's aspect ratio. Raises
    :class:`~clcae.data.images.ImageReadError` (with the reason) for a file that cannot be used.
    """
    _check_resize_policy(policy)
    return _network_input(load_image(path, None, min_size=min_size), input_size, policy)


def read_input_and_preview(path: str | os.PathLike, input_size: Sequence[int], policy: str = "resize",
                           preview_height: int | None = None, min_size: int = DEFAULT_MIN_SIZE
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, preview)``: the network input exactly as :func:`read_input`, and the whole file as it was (before
    any squash or crop) at ``preview_height`` pixels tall (default: the input's height), its aspect ratio kept:
    ``float32 [3, preview_height, round(W * preview_height / H)]`` in [-1, 1]. The file is read once."""
    _check_resize_policy(policy)
    img = load_image(path, None, min_size=min_size)
    height = int(preview_height or input_size[0])
    if height < 1:
        raise ValueError(f"preview_height must be >= 1; got {preview_height}")
    width = max(1, round(img.size[0] * height / img.size[1]))
    preview = img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BILINEAR,
                                                                  reducing_gap=3.0)
    return _network_input(img, input_size, policy), to_tensor(preview)


def _check_resize_policy(policy: str) -> None:
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}; got {policy!r}")


def _network_input(img: Image.Image, input_size: Sequence[int], policy: str) -> torch.Tensor:
    """An RGB image -> ``[3, H, W]`` at ``input_size`` (PIL bilinear, as the official transforms)."""
    h, w = (int(v) for v in input_size)
    if policy == "resize":
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
    else:
        img = fit_image(img, (h, w), "center_crop", resample=Image.Resampling.BILINEAR)
    return to_tensor(img)


def load_avg_image(path: str | os.PathLike, input_size: Sequence[int], policy: str = "resize") -> torch.Tensor:
    """An average-image file (the official ``image_avg.png``) read as the inputs are: ``[1, 3, H, W]`` in [-1, 1].

    Raises :class:`RunnerError` naming the file when it cannot be read.
    """
    p = _existing_file(path, "avg_image")
    try:
        return read_input(p, input_size, policy).unsqueeze(0)
    except ImageReadError as e:
        raise RunnerError.about("avg_image", str(e)) from None


# ---------------------------------------------------------------------------------------------------- outputs
def output_paths(out: str | os.PathLike, name: str, kinds: Iterable[str], fmt: str = "png",
                 strips: bool = True) -> dict[str, Path]:
    """The files of one image: ``{kind: OUT/kind/NAME.fmt, 'strip': OUT/strips/NAME.jpg, 'latents':
    OUT/latents/NAME.pt}`` (latents last: it is written last)."""
    out = Path(out)
    paths = {kind: out / kind / f"{name}.{fmt}" for kind in kinds}
    if strips:
        paths["strip"] = out / "strips" / f"{name}.jpg"
    paths["latents"] = out / "latents" / f"{name}.pt"
    return paths


def is_finished(paths: Mapping[str, Path]) -> bool:
    """Whether every file of an image exists and is non-empty (one ``stat`` each; files are written
    atomically, so an existing file is complete)."""
    for p in paths.values():
        try:
            if os.stat(p).st_size == 0:
                return False
        except OSError:
            return False
    return True


def output_at_size(images: torch.Tensor, input_size: Sequence[int], size: str = "official") -> torch.Tensor:
    """Renders ``[B, 3, S, S]`` of an inverter with ``input_size = (H, W)`` at the size a run saves.

    ``'full'``: unchanged (the generator's resolution). ``'official'``: what the official scripts write with
    ``--resize_outputs`` (:func:`~clcae.networks.inverters.official_output`): average-pooled to 256 px and, for
    a non-square input such as cars' 192x256, rows centre-cropped to the input's aspect ratio. Generators below
    256 px are not enlarged: their side replaces 256 (SynthFaces 64 px -> 64x64).
    """
    if size == "full":
        return images
    if size != "official":
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    return official_output(images, tuple(input_size), size=min(OFFICIAL_SIDE, images.shape[-1]))


def to_output_size(inverter: Inverter, images: torch.Tensor, size: str = "official") -> torch.Tensor:
    """:func:`output_at_size` at ``inverter.input_size``."""
    return output_at_size(images, inverter.input_size, size)


def make_strip(inputs: torch.Tensor, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``input | output_1 | ...`` side by side: ``[3, H, W_total]`` in [-1, 1].

    ``inputs`` ``[3, h, w]`` is resized (bilinear, antialiased) to the outputs' height ``H`` keeping its aspect
    ratio; ``outputs`` are ``[3, H, W]`` each, clamped to [-1, 1]. :func:`invert_folder` passes the input file as
    it was (:func:`read_input_and_preview`), so a 160x100 photo appears 102x64 beside 64x64 outputs, not squashed.
    """
    height = outputs[0].shape[-2]
    h, w = inputs.shape[-2:]
    width = max(1, round(w * height / h))
    x = inputs.float()
    if (h, w) != (height, width):
        x = F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0]
    return torch.cat([x.clamp(-1, 1), *[o.float().clamp(-1, 1) for o in outputs]], dim=-1)


def _write_image_files(paths: Mapping[str, Path], images: Mapping[str, torch.Tensor], strip_input: torch.Tensor | None,
                       record: dict) -> None:
    """Write one image's files, each atomically, the latents last (the marker of a finished image)."""
    for kind, img in images.items():
        save_image(img, paths[kind])
    if "strip" in paths:
        save_image(make_strip(strip_input, [images[k] for k in IMAGE_KINDS if k in images]), paths["strip"])
    write_latents(paths["latents"], record)


def _invert_chunks(inverter: Inverter, x: torch.Tensor, kinds: tuple[str, ...], bf16: bool
                   ) -> list[tuple[int, dict]]:
    """``[(start, outputs)]``: one chunk, or halves (recursively) when the batch runs out of memory."""
    try:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return [(0, inverter.invert(x, images=kinds))]
    except _OOM_ERRORS:
        if x.shape[0] == 1:
            raise
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
        half = x.shape[0] // 2
        first = _invert_chunks(inverter, x[:half], kinds, bf16)
        second = _invert_chunks(inverter, x[half:], kinds, bf16)
        return first + [(start + half, out) for start, out in second]


def _split_result(inverter: Inverter, result: Mapping[str, Any], kinds: Sequence[str], size: str
                  ) -> list[tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]]:
    """Per image of a batch result: ``(images, record, bad)``.

    ``images``: ``{kind: [3, H, W]}`` float32 on the CPU at the saved size; ``record``: the codes as float32 CPU
    tensors of their own (``w`` [D], ``wplus`` [n, D], ``f`` [C, h, w], projection's ``noise`` maps [1, r, r]),
    plus ``idx_k`` and ``feature_scale`` with ``f``, so the F-space result can be re-rendered; ``bad``: the
    names of entries holding NaN or Inf (such an image is not written).
    """
    images = {kind: to_output_size(inverter, result[f"image_{kind}"].float(), size).cpu() for kind in kinds}
    codes = {key: result[key].float().cpu() for key in ("w", "wplus", "f") if key in result}
    noise = [m.float().cpu() for m in result["noise"]] if "noise" in result else None
    split = []
    for j in range(result["wplus"].shape[0]):
        own = {kind: images[kind][j] for kind in kinds}
        record: dict[str, Any] = {key: v[j].clone() for key, v in codes.items()}  # clone: not the batch storage
        if noise is not None:
            record["noise"] = [m[j].clone() for m in noise]
        tensors = {**{k: v for k, v in record.items() if k != "noise"}, **{f"image_{k}": v for k, v in own.items()}}
        if noise is not None:
            tensors.update({f"noise_{i}": m for i, m in enumerate(record["noise"])})
        bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
        if "f" in record and hasattr(inverter, "idx_k"):
            record.update(idx_k=int(inverter.idx_k), feature_scale=float(inverter.feature_scale))
        split.append((own, record, bad))
    return split


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def invert_folder(inverter: Inverter, inputs: str | os.PathLike | Sequence[InputItem], out: str | os.PathLike, *,
                  batch: int = 4, size: str = "official", fmt: str = "png", strips: bool = True,
                  overwrite: bool = False, resize: str = "resize", bf16: bool = False, method: str | None = None,
                  checkpoint: str = "", settings: Mapping[str, Any] | None = None, progress: bool = True,
                  io_workers: int = 2, align_summary: Mapping[str, Any] | None = None) -> dict:
    """Invert every image of ``inputs`` and write the results to ``out`` (layout in the module docstring).

    Args:
        inverter: any :class:`~clcae.networks.inverters.Inverter` (encoder or projection), eval mode, on its
            device (the inputs go to ``inverter.latent_avg.device``).
        inputs: a folder (recursive), one image file, or items from :func:`list_inputs`.
        out: the output folder (created).
        batch: images per :meth:`Inverter.invert` call (halved automatically on out-of-memory).
        size: ``'official'`` or ``'full'`` (:func:`to_output_size`).
        fmt: ``'png'`` or ``'jpg'`` for the reconstructions (strips are always JPEG).
        strips: write ``strips/NAME.jpg``.
        overwrite: recompute finished images (otherwise they are skipped: the run resumes).
        resize: input preprocessing, one of :data:`RESIZE_POLICIES` (:func:`read_input`).
        bf16: run the inverter under bfloat16 autocast (outputs are saved as float32).
        method, checkpoint: recorded in each latents file (``method`` defaults to ``inverter.arch``).
        settings: plain data identifying the results (:attr:`LoadedMethod.settings`); stored in ``run.json``
            with ``size``, ``resize`` and ``bf16``; a later run into the same folder with other settings is
            refused unless ``overwrite``.
        progress: show a tqdm bar (images/s).
        io_workers: threads that read the next batch and write the finished images meanwhile.
        align_summary: when the inputs are crops that :func:`clcae.align.align_folder` has just made, its summary:
            the photos without a face (``no_face``) and the unreadable ones (``failed``) are then reported in this
            run's summary too.

    Returns:
        The summary, also written to ``out/summary.json``: ``done``, ``skipped`` (already finished), ``failed``
        and ``failures`` (``[{'path', 'reason'}]``), ``total``, ``renamed`` (``[{'path', 'name'}]``),
        ``seconds``, ``images_per_s`` (``done / seconds``), ``device``, ``method``, ``checkpoint``, ``size``,
        ``output_size`` ([H, W] of the saved reconstructions, when any was written), ``avg_image_source``
        (CLCAE), ``interrupted`` (Ctrl-C: finished images are kept, the rest can be resumed), ``out``; with
        ``align_summary`` also ``no_face`` (``[{'path', 'reason'}]``, photos without a crop) and ``align``
        (``photos``, ``faces``, ``aligned``, ``skipped``, ``failed``: unreadable photos, ``out``). A latents file
        whose input had an alignment record beside it holds ``'alignment'`` (that record's absolute path).

    Raises :class:`RunnerError` for bad options, a missing or empty input, or an output folder holding results
    of other settings. Bad image files never raise: they are counted and listed with their reason.
    """
    from tqdm.auto import tqdm

    from ..align.records import alignment_record_for

    if batch < 1:
        raise RunnerError(f"batch must be >= 1; got {batch}")
    if size not in SIZES:
        raise RunnerError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    if fmt not in FORMATS:
        raise RunnerError(f"fmt {fmt!r}: expected one of {', '.join(FORMATS)}")
    if resize not in RESIZE_POLICIES:
        raise RunnerError(f"resize {resize!r}: expected one of {', '.join(RESIZE_POLICIES)}")
    out = Path(os.fsdecode(out))
    if out.exists() and not out.is_dir():
        raise RunnerError.about("out", f"{display_path(out)}: exists and is not a folder")
    if isinstance(inputs, (str, bytes, os.PathLike)):
        items, renamed = list_inputs(inputs, exclude=out)
    else:
        items, renamed = list(inputs), []
        if not items:
            raise RunnerError("no input images given")
    method = method or inverter.arch
    run_settings = dict(settings or {"method": method, "checkpoint": checkpoint},
                        size=size, resize=resize, bf16=bool(bf16))
    check_run_settings(out, run_settings, overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunnerError.about("out", f"{display_path(out)}: cannot create the folder ({_describe(e)})") from None
    write_json(out / _RUN_FILE, {"settings": run_settings})

    device = inverter.latent_avg.device
    kinds = tuple(k for k in IMAGE_KINDS if k in inverter.image_names)
    input_size = inverter.input_size
    plans = [(item, output_paths(out, item.name, kinds, fmt, strips)) for item in items]
    skipped = 0
    todo = []
    for item, paths in plans:
        if not overwrite and is_finished(paths):
            skipped += 1
        else:
            todo.append((item, paths))

    avg_source = None
    if hasattr(inverter, "average_image"):  # CLCAE: render (or check) the average image once, before timing
        if todo:
            inverter.average_image()
        avg_source = inverter.avg_image_source

    failures: list[dict] = []
    done = 0
    output_hw: list[int] | None = None
    interrupted = False

    def fail(item: InputItem, reason: str) -> None:
        failures.append({"path": display_path(item.path), "reason": reason})

    pool = cf.ThreadPoolExecutor(max_workers=max(1, io_workers), thread_name_prefix="invert-io")
    writes: collections.deque = collections.deque()

    def collect(block: bool) -> None:
        nonlocal done
        while writes and (block or writes[0][1].done()):
            item, fut = writes.popleft()
            try:
                fut.result()
                done += 1
            except Exception as e:  # disk full, permission denied, ...
                fail(item, f"cannot write the outputs: {_describe(e)}")

    def submit_reads(chunk):  # with strips: (input, the file as it was) per image, from one read
        if strips:
            return [(item, paths, pool.submit(read_input_and_preview, item.path, input_size, resize))
                    for item, paths in chunk]
        return [(item, paths, pool.submit(read_input, item.path, input_size, resize)) for item, paths in chunk]

    batches = [todo[i:i + batch] for i in range(0, len(todo), batch)]
    bar = tqdm(total=len(todo), unit="img", desc=f"invert ({method})", disable=not progress or not todo,
               dynamic_ncols=True)
    start = time.perf_counter()
    reads = submit_reads(batches[0]) if batches else []
    try:
        for k in range(len(batches)):
            current, reads = reads, (submit_reads(batches[k + 1]) if k + 1 < len(batches) else [])
            good = []
            for item, paths, fut in current:
                try:
                    good.append((item, paths, fut.result()))
                except ImageReadError as e:
                    fail(item, e.reason)
                except Exception as e:  # a decoder bug must not stop the run either
                    fail(item, f"cannot read: {_describe(e)}")
            if good:
                previews = [t[1] for _, _, t in good] if strips else None
                x_cpu = torch.stack([t[0] if strips else t for _, _, t in good])
                try:
                    chunks = _invert_chunks(inverter, x_cpu.to(device), kinds, bf16)
                except _OOM_ERRORS as e:
                    for item, _, _ in good:
                        fail(item, f"out of memory even for one image ({_describe(e)}); try bf16 or the CPU")
                    chunks = []
                for offset, result in chunks:
                    for j, (images, record, bad) in enumerate(_split_result(inverter, result, kinds, size)):
                        item, paths, _ = good[offset + j]
                        if bad:
                            fail(item, f"non-finite values in the inversion output ({', '.join(bad)})")
                            continue
                        record.update(method=method, checkpoint=str(checkpoint), input_size=list(input_size),
                                      source=display_path(item.path))
                        alignment = alignment_record_for(item.path)
                        if alignment is not None:
                            record["alignment"] = str(alignment.resolve())
                        if images and output_hw is None:
                            output_hw = list(next(iter(images.values())).shape[-2:])
                        writes.append((item, pool.submit(_write_image_files, paths, images,
                                                         previews[offset + j] if strips else None, record)))
            collect(block=False)
            while len(writes) > 2 * batch:  # bound the memory held by pending writes
                cf.wait([writes[0][1]])
                collect(block=False)
            bar.update(len(current))
            bar.set_postfix(failed=len(failures), refresh=False)
    except KeyboardInterrupt:
        interrupted = True
        for _, _, fut in reads:
            fut.cancel()
    finally:
        collect(block=True)
        pool.shutdown(wait=True)
        bar.close()
    seconds = time.perf_counter() - start

    summary = {
        "done": done, "skipped": skipped, "failed": len(failures), "total": len(items),
        "failures": failures,
        "renamed": [{"path": display_path(it.path), "name": it.name} for it in renamed],
        "seconds": round(seconds, 3), "images_per_s": round(done / seconds, 3) if done and seconds > 0 else 0.0,
        "device": _device_name(device), "method": method, "checkpoint": str(checkpoint), "size": size,
        "output_size": output_hw, "avg_image_source": avg_source, "bf16": bool(bf16),
        "interrupted": interrupted, "out": display_path(out),
    }
    if align_summary is not None:
        summary["no_face"] = list(align_summary.get("no_face", []))
        summary["align"] = {"photos": align_summary.get("total", 0), "faces": align_summary.get("faces", 0),
                            "aligned": align_summary.get("aligned", 0), "skipped": align_summary.get("skipped", 0),
                            "failed": list(align_summary.get("failed", [])), "out": align_summary.get("out")}
    write_json(out / _SUMMARY_FILE, summary)
    return summary


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def format_summary(summary: Mapping[str, Any], max_listed: int = 20) -> str:
    """A few printable lines: the counts, the speed, each failed file with its reason, where the outputs are."""
    lines = [f"{summary['method']}: {summary['done']} inverted, {summary['skipped']} skipped (already finished), "
             f"{summary['failed']} failed, of {summary['total']} image file(s) "
             f"in {summary['seconds']:.1f} s ({summary['images_per_s']:.2f} img/s on {summary['device']})"]
    if summary.get("interrupted"):
        lines.append("interrupted: finished images are kept; run the same command again to resume")
    for it in summary.get("renamed", [])[:max_listed]:
        lines.append(f"  renamed (same name as another input): {it['path']} -> {it['name']}")
    lines += listed_lines([("failed", f) for f in summary["failures"]], max_listed, "summary.json")
    if "align" in summary:
        align = summary["align"]
        lines.append(f"aligned: {align['aligned']} photo(s) now ({align['faces']} face crop(s)), {align['skipped']} "
                     f"already aligned, {len(summary['no_face'])} without a face, {len(align['failed'])} unreadable, "
                     f"of {align['photos']} photo(s); crops and their records in {align['out']}")
        listed = [("no face", f) for f in summary["no_face"]] + [("unreadable", f) for f in align["failed"]]
        lines += listed_lines(listed, max_listed, "summary.json")
    lines.append(f"outputs: {summary['out']} (summary.json lists every failure)")
    return "\n".join(lines)
