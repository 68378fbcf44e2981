"""Edit specifications and the one editor every workflow uses: parse an edit, turn it into a function of W+, render
its sweep over strengths for every representation of an inversion.

- :func:`parse_edit` reads one edit string (``interfacegan:PATH:STRENGTHS``, ``ganspace:PCA:COMP:FIRST:LAST:STRENGTHS``
  or ``sefa:K:STRENGTHS``) into an :class:`EditSpec`; :func:`parse_strengths` and :func:`parse_layers` read its
  parts;
- :func:`edit_function` loads what a spec names for one generator (direction, PCA, SeFa factorisation) and returns
  ``fn(wplus, strengths) -> edited W+`` (:class:`EditOptions`: layers, per-layer directions, GANSpace mode);
- :func:`render_edit` renders one image's sweep for w, W+ and W+F (the feature follows the edit,
  :func:`clcae.editing.fspace.edit_and_render`).

``scripts/edit.py`` (:mod:`clcae.editing.folder`), ``scripts/photo.py`` (:mod:`clcae.photo`) and the web app use
these; the command lines add their flag names to the messages.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..networks.encoders import DEFAULT_IDX_K
from .fspace import edit_and_render, feature_at, representations_of
from .ganspace import apply_ganspace, load_pca
from .interfacegan import Direction, apply_direction, load_direction
from .sefa import apply_sefa, sefa_directions

__all__ = ["EDIT_KINDS", "EditSpec", "EditOptions", "parse_strengths", "parse_layers", "parse_edit", "unique_labels",
           "strength_label", "edit_function", "render_edit"]

EDIT_KINDS = ("interfacegan", "ganspace", "sefa")


def parse_strengths(text: str) -> list[float]:
    """``'-3,0,3'`` -> [-3, 0, 3]; ``'-3:3:7'`` -> 7 values from -3 to 3, both ends included; ``'2'`` -> [2].

    Raises ValueError saying what is wrong (no value, a non-number, a range with N < 2, a non-finite value).
    """
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"strength range {text!r}: expected A:B:N (numbers A, B and an integer N)") from None
        if n < 2:
            raise ValueError(f"strength range {text!r}: N must be >= 2 (for one value write it alone)")
        values = [round(a + (b - a) * i / (n - 1), 10) for i in range(n)]
    else:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"strengths {text!r}: expected numbers separated by commas, or A:B:N") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"strengths {text!r}: need at least one finite value")
    return [0.0 if v == 0 else v for v in values]


def parse_layers(text: str) -> list[int]:
    """``'2,3,4,5'`` or ``'2-5'`` (inclusive) or a mix -> W+ layer indices; ValueError for anything else."""
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            layers.extend(range(int(m.group(1)), int(m.group(2)) + 1))
        elif part.isdigit():
            layers.append(int(part))
        elif part:
            raise ValueError(f"layers {text!r}: expected indices like 2,3,4 or 2-5")
    if not layers:
        raise ValueError(f"layers {text!r}: no index")
    return layers


def _is_range(fields: list[str]) -> bool:
    try:
        float(fields[0]), float(fields[1])
        return int(fields[2]) >= 2
    except (ValueError, IndexError):
        return False


@dataclasses.dataclass
class EditSpec:
    """One edit string, parsed (:func:`parse_edit`).

    Attributes:
        kind: ``'interfacegan'``, ``'ganspace'`` or ``'sefa'``.
        text: the argument as given.
        strengths: the sweep.
        path: the direction (InterFaceGAN) or PCA (GANSpace) file.
        component, first, last: GANSpace component and W+ layers (inclusive).
        index: SeFa direction (0 = strongest).
        label: output folder name (unique per run after :func:`unique_labels`).
        cache: per generator, the loaded edit (filled by :func:`edit_function`).
    """

    kind: str
    text: str
    strengths: list[float]
    path: Path | None = None
    component: int = 0
    first: int = 0
    last: int = 0
    index: int = 0
    label: str = ""
    cache: dict = dataclasses.field(default_factory=dict)

    def loaded_direction(self, generator: torch.nn.Module) -> Direction:
        """The InterFaceGAN direction :func:`edit_function` loaded for ``generator`` (KeyError before that)."""
        return self.cache[("direction", id(generator))]


def parse_edit(text: str) -> EditSpec:
    """Parse an edit string: ``interfacegan:PATH:STRENGTHS``, ``ganspace:PCA:COMP:FIRST:LAST:STRENGTHS`` or
    ``sefa:K:STRENGTHS`` (STRENGTHS as :func:`parse_strengths`); ValueError says what is wrong, starting with the
    string (a command line puts its flag in front)."""
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in EDIT_KINDS or not sep:
        raise ValueError(f"{text!r}: expected interfacegan:PATH:STRENGTHS, "
                         "ganspace:PCA:COMP:FIRST:LAST:STRENGTHS or sefa:K:STRENGTHS")
    fields = rest.split(":")
    head_len = {"interfacegan": 1, "ganspace": 4, "sefa": 1}[kind]
    if len(fields) >= head_len + 3 and _is_range(fields[-3:]):
        head, strengths = fields[:-3], parse_strengths(":".join(fields[-3:]))
    elif len(fields) >= head_len + 1:
        head, strengths = fields[:-1], parse_strengths(fields[-1])
    else:
        raise ValueError(f"{text!r}: too few fields for {kind}")
    spec = EditSpec(kind=kind, text=text, strengths=strengths)
    try:
        if kind == "interfacegan":
            spec.path = Path(":".join(head))
            spec.label = f"interfacegan_{spec.path.stem}"
        elif kind == "ganspace":
            spec.path = Path(":".join(head[:-3]))
            spec.component, spec.first, spec.last = (int(v) for v in head[-3:])
            if spec.component < 0 or not 0 <= spec.first <= spec.last:
                raise ValueError
            spec.label = f"ganspace_{spec.path.stem}_c{spec.component}_l{spec.first}-{spec.last}"
        else:
            if len(head) != 1:
                raise ValueError
            spec.index = int(head[0])
            if spec.index < 0:
                raise ValueError
            spec.label = f"sefa_k{spec.index}"
    except ValueError:
        raise ValueError(f"{text!r}: bad {kind} fields {head} (component / layers / K are integers >= 0, "
                         "FIRST <= LAST)") from None
    if spec.path is not None and not str(spec.path):
        raise ValueError(f"{text!r}: no file given")
    return spec


def unique_labels(specs: Sequence[EditSpec]) -> None:
    """Make the specs' labels safe file names and unique (``x``, ``x_2``, ...), in place."""
    seen: dict[str, int] = {}
    for spec in specs:
        base = re.sub(r"[^\w.+-]", "_", spec.label)
        seen[base] = seen.get(base, 0) + 1
        spec.label = base if seen[base] == 1 else f"{base}_{seen[base]}"


def strength_label(s: float) -> str:
    """File-name form of a strength: ``+3``, ``-1.5``, ``+0``."""
    return f"{s:+g}"


@dataclasses.dataclass(frozen=True)
class EditOptions:
    """How edits are applied (``edit.py`` / ``photo.py`` options).

    Attributes:
        layers: W+ layers InterFaceGAN and SeFa edits move (``None``: all, or those a direction file names); SeFa
            directions are computed from these layers.
        per_layer: use every row of a per-layer direction ``[n, D]`` on its layer (e4e) instead of row 0.
        ganspace_mode: ``'relative'`` (add strength x std x component) or ``'absolute'`` (set the coordinate).
        sefa_torgb: SeFa also factorises the ToRGB modulations.
    """

    layers: tuple[int, ...] | None = None
    per_layer: bool = False
    ganspace_mode: str = "relative"
    sefa_torgb: bool = False


def edit_function(spec: EditSpec, generator: torch.nn.Module, options: EditOptions | None = None
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``fn(wplus [B, n, D], strengths [B]) -> edited W+`` for ``spec`` on ``generator`` (cached on the spec per
    generator and options).

    Raises :class:`~clcae.checkpoints.CheckpointError` / ValueError when the edit's file or index does not fit
    the generator.
    """
    options = options or EditOptions()
    key = (id(generator), options)
    if key in spec.cache:
        return spec.cache[key]
    layers = None if options.layers is None else list(options.layers)
    if spec.kind == "interfacegan":
        direction = load_direction(spec.path, generator=generator, per_layer=options.per_layer)
        use_layers = layers if layers is not None else direction.layers
        vec = direction.vector.to(generator.latent_avg.device)
        spec.cache[("direction", id(generator))] = direction

        def fn(codes: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return apply_direction(codes, vec, s, use_layers)
    elif spec.kind == "ganspace":
        pca = load_pca(spec.path, generator=generator)
        if spec.component >= pca.n_components:
            raise ValueError(f"{spec.text}: component {spec.component} does not exist ({spec.path} has "
                             f"{pca.n_components})")
        if spec.last >= generator.n_latent:
            raise ValueError(f"{spec.text}: layer {spec.last} does not exist (the generator has "
                             f"{generator.n_latent} W+ layers, 0..{generator.n_latent - 1})")

        def fn(codes: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return apply_ganspace(codes, pca, [(spec.component, spec.first, spec.last, s)],
                                  mode=options.ganspace_mode)
    elif spec.kind == "sefa":
        if spec.index >= generator.style_dim:
            raise ValueError(f"{spec.text}: SeFa direction {spec.index} does not exist (W has {generator.style_dim} "
                             "dimensions)")
        sefa = sefa_directions(generator, layers="all" if layers is None else layers, k=spec.index + 1,
                               include_torgb=options.sefa_torgb)
        sefa.directions = sefa.directions.to(generator.latent_avg.device)

        def fn(codes: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return apply_sefa(codes, sefa, spec.index, s)
    else:
        raise ValueError(f"unknown edit kind {spec.kind!r}; expected one of {EDIT_KINDS}")
    spec.cache[key] = fn
    return fn


@torch.no_grad()
def render_edit(generator: torch.nn.Module, latents: Mapping[str, Any],
                edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], strengths: Sequence[float], *,
                kinds: Sequence[str] | None = None, idx_k: int = DEFAULT_IDX_K, feature_scale: float = 1.0,
                f_gen: torch.Tensor | None = None, noise: Sequence[torch.Tensor] | None = None, batch: int = 8
                ) -> dict[tuple[str, float], torch.Tensor]:
    """Render one image's edit at every strength, for every representation it has.

    Args:
        generator: the generator of the codes (eval mode).
        latents: one inversion: ``{'w' [D]?, 'wplus' [n, D]?, 'f' [C, h, w]?}`` (as ``scripts/invert.py`` saves).
        edit: ``fn(wplus [B, n, D], strengths [B]) -> edited`` (:func:`edit_function`).
        strengths: the sweep.
        kinds: representations to render (default: all the latents have, :func:`representations_of`).
        idx_k, feature_scale: where and how strongly ``f`` is blended in.
        f_gen: ``G_k(W+)`` ``[1, C, h, w]`` when already computed (one pass saved).
        noise: the generator's noise maps (projection latents); default the constant buffers.
        batch: strengths per generator pass.
    Returns:
        ``{(kind, strength): float32 [3, S, S]}`` on the CPU at the generator's resolution, unclamped. For W+F the
        feature follows the edit: ``f + G_k(W+_edited) - G_k(W+)`` (strength 0 reproduces the inversion exactly).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    device = generator.latent_avg.device
    kinds = list(kinds) if kinds is not None else representations_of(latents)
    codes = {k: latents[k].to(device).float() for k in ("w", "wplus", "f") if k in latents}
    if noise is not None:
        noise = [t.to(device) for t in noise]
    if "f" in codes and f_gen is None and "wplus_f" in kinds:
        f_gen, _ = feature_at(generator, codes["wplus"][None], idx_k, noise=noise)
    rendered: dict[tuple[str, float], torch.Tensor] = {}
    for start in range(0, len(strengths), batch):
        chunk = [float(v) for v in strengths[start:start + batch]]
        b = len(chunk)
        s = torch.tensor(chunk, dtype=torch.float32, device=device)
        batched = {k: v.unsqueeze(0).expand(b, *v.shape) for k, v in codes.items()}
        if f_gen is not None:
            batched["f_gen"] = f_gen.to(device).expand(b, *f_gen.shape[1:])
        res = edit_and_render(generator, batched, lambda c: edit(c, s), idx_k=idx_k, feature_scale=feature_scale,
                              noise=noise, representations=kinds)
        for kind in kinds:
            images = res[f"image_{kind}"].float().cpu()
            for j, value in enumerate(chunk):
                rendered[(kind, value)] = images[j]
    return rendered
