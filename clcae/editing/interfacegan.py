"""InterFaceGAN: linear attribute directions in W, their files, and additive edits of w / W+ codes.

A direction ``d`` moves a code along one attribute: ``w' = w + strength * d``. InterFaceGAN (Shen et al., CVPR 2020)
finds ``d`` as the unit normal of a linear classifier that separates generator samples with a high attribute score
from samples with a low one; :func:`sample_scores` draws and scores the samples with any image-scoring function
(e.g. the SynthFaces domain network's attribute head) and :func:`learn_direction` fits the classifier.

Direction files read by :func:`load_direction` (always with ``weights_only``):

- the official ones that e4e and CLCAE ship (``age.pt``, ``smile.pt``: a raw tensor ``[1, 512]``; ``pose.pt``:
  ``[1, 18, 512]``), and any raw tensor ``[D]``, ``[1, D]``, ``[n, D]`` or ``[1, n, D]``; InterFaceGAN's own
  ``.npy`` boundaries (``[1, D]``) too;
- ours (:func:`save_direction`): ``{'format': 'clcae.direction', 'direction': [D] or [n, D], 'attribute',
  'layers', 'generator' (fingerprint), 'meta', ...}``. :func:`save_direction` can also write the raw tensor beside
  it, which the official scripts read with a plain ``torch.load``.

A direction with one row per W+ layer (``pose.pt``) is reduced to its first row by default, as the official CLCAE
script does (it adds ``factor * d[:, 0]`` to the encoder's foundation code, so the same offset reaches every layer);
``per_layer=True`` keeps every row and adds row ``k`` to layer ``k`` (what e4e's ``LatentEditor`` does with a
``[1, 18, 512]`` tensor).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..fingerprint import generator_fingerprint
from ..formats.files import FORMAT_VERSION, CheckpointError, atomic_save
from ..formats.read import load_file

__all__ = ["Direction", "DIRECTION_KIND", "LEARN_METHODS", "load_direction", "save_direction",
           "generator_fingerprint", "apply_direction", "check_layers", "learn_direction", "orthogonalize",
           "sample_scores"]

DIRECTION_KIND = "direction"
LEARN_METHODS = ("svm", "logistic", "linear")


# ---------------------------------------------------------------------------------------------------- files
@dataclass
class Direction:
    """An editing direction as read from a file.

    Attributes:
        vector: ``[D]`` (one direction for every layer) or ``[n, D]`` (one row per W+ layer).
        attribute: the attribute it changes, when the file says (official files: None).
        layers: W+ layers the file asks to edit (None: all).
        generator: fingerprint of the generator it was learned on (:func:`generator_fingerprint`), or None.
        meta: anything else the file stores (learning settings, accuracies).
        source: the file it came from.
    """

    vector: torch.Tensor
    attribute: str | None = None
    layers: tuple[int, ...] | None = None
    generator: dict | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""

    @property
    def per_layer(self) -> bool:
        """True when :attr:`vector` has one row per W+ layer."""
        return self.vector.ndim == 2


def _generator_dims(generator: Any) -> tuple[int | None, int | None]:
    if generator is None:
        return None, None
    return int(generator.style_dim), int(generator.n_latent)


def _as_rows(t: torch.Tensor, src: str) -> torch.Tensor:
    """A raw direction tensor -> ``[rows, D]`` (``[D]``, ``[1, D]``, ``[n, D]``, ``[1, n, D]``)."""
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise CheckpointError(f"{src}: a direction must have shape [D], [1, D], [n, D] or [1, n, D]; "
                              f"got {list(t.shape)}")
    return t


def load_direction(path: str | os.PathLike, generator: Any = None, per_layer: bool = False) -> Direction:
    """Read a direction file (official raw tensor, InterFaceGAN ``.npy``, or ours); see the module docstring.

    Args:
        path: the file.
        generator: when given, the direction's dimension (and, with ``per_layer``, its row count) must match
            ``generator.style_dim`` (and ``n_latent``); a learned direction whose stored fingerprint differs from
            this generator's gives a warning (it may still be meant for it, e.g. a converted copy).
        per_layer: keep one row per W+ layer (``[n, D]``). Default: a multi-row direction is reduced to its first
            row (the official CLCAE behaviour; a warning says so when the rows differ).

    Returns:
        :class:`Direction` with a float32 ``vector`` ``[D]`` (or ``[n, D]`` with ``per_layer`` and a multi-row
        file). Raises :class:`~clcae.checkpoints.CheckpointError` naming the file and the problem.
    """
    p = Path(path)
    src = str(p)
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise CheckpointError(f"{src}: no such file")
        try:
            obj: Any = torch.from_numpy(np.load(p, allow_pickle=False).astype(np.float32))
        except Exception as e:  # bad header, pickled object arrays, ...
            raise CheckpointError(f"{src}: not a readable .npy direction ({type(e).__name__}: {e})") from e
    else:
        obj = load_file(p)
    attribute = layers = fingerprint = None
    meta: dict = {}
    if isinstance(obj, Mapping):
        fmt = obj.get("format")
        if fmt != f"clcae.{DIRECTION_KIND}":
            raise CheckpointError(f"{src}: a dict that is not a clcae direction (format {fmt!r}; keys "
                                  f"{sorted(map(str, obj))[:10]}); expected a raw tensor or our direction file")
        version = obj.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{src}: format_version {version!r} is not supported (reads 1..{FORMAT_VERSION})")
        vec = obj.get("direction")
        attribute = obj.get("attribute")
        layers = obj.get("layers")
        fingerprint = obj.get("generator")
        meta = dict(obj.get("meta") or {})
    else:
        vec = obj
    if not isinstance(vec, torch.Tensor) or not vec.is_floating_point():
        raise CheckpointError(f"{src}: the direction must be a floating-point tensor; got {type(vec).__name__}"
                              + (f" {vec.dtype}" if isinstance(vec, torch.Tensor) else ""))
    rows = _as_rows(vec.detach().float(), src)
    if not torch.isfinite(rows).all():
        raise CheckpointError(f"{src}: the direction has NaN or Inf values")
    if rows.norm(dim=1).min() == 0:
        raise CheckpointError(f"{src}: the direction has an all-zero row")
    style_dim, n_latent = _generator_dims(generator)
    if style_dim is not None and rows.shape[1] != style_dim:
        raise CheckpointError(f"{src}: the direction has dimension {rows.shape[1]}, but the generator's W space "
                              f"has {style_dim}: it was made for another generator")
    if per_layer and rows.shape[0] > 1:
        if n_latent is not None and rows.shape[0] != n_latent:
            raise CheckpointError(f"{src}: the direction has {rows.shape[0]} layer rows, the generator has "
                                  f"{n_latent} W+ layers (use per_layer=False to take the first row only)")
        vector = rows
    else:
        if rows.shape[0] > 1 and not torch.allclose(rows, rows[:1].expand_as(rows)):
            warnings.warn(f"{src}: the direction has {rows.shape[0]} different layer rows; only row 0 is used (as "
                          "the official CLCAE edit script does); pass per_layer=True to use each row on its layer",
                          stacklevel=2)
        vector = rows[0]
    if layers is not None:
        layers = tuple(int(v) for v in layers)
        if n_latent is not None:
            check_layers(layers, n_latent, src)
    if fingerprint is not None and generator is not None and isinstance(fingerprint, Mapping):
        mine = generator_fingerprint(generator)
        if fingerprint.get("sha256") not in (None, mine["sha256"]):
            warnings.warn(f"{src}: the direction was learned on another generator (fingerprint "
                          f"{str(fingerprint.get('sha256'))[:12]}..., this one {mine['sha256'][:12]}...)",
                          stacklevel=2)
    return Direction(vector=vector.contiguous(), attribute=attribute, layers=layers,
                     generator=dict(fingerprint) if isinstance(fingerprint, Mapping) else None, meta=meta, source=src)


def save_direction(path: str | os.PathLike, vector: torch.Tensor, attribute: str | None = None,
                   layers: Sequence[int] | None = None, generator: torch.nn.Module | Mapping | None = None,
                   meta: Mapping[str, Any] | None = None, raw_path: str | os.PathLike | None = None) -> Path:
    """Write a direction in our format (atomically), and optionally the official raw-tensor layout.

    Args:
        path: our file: ``{'format': 'clcae.direction', 'kind': 'direction', 'format_version', 'direction'
            ([D] or [n, D], float32), 'attribute', 'layers' (list or None = all), 'generator' (fingerprint or
            None), 'meta' (plain data)}``; it loads with ``torch.load(weights_only=True)``.
        vector: ``[D]`` or ``[n, D]``.
        generator: the generator (its :func:`generator_fingerprint` is stored) or an already computed fingerprint.
        raw_path: also write the bare tensor there, shaped like the official files (``[1, D]``, or ``[1, n, D]``
            for a per-layer direction), for code that does ``torch.load(path)`` and adds the result to a code.
    Returns:
        ``Path(path)``.
    """
    vec = vector.detach().to("cpu", torch.float32).clone()
    if vec.ndim not in (1, 2) or not torch.isfinite(vec).all():
        raise ValueError(f"vector must be a finite [D] or [n, D] tensor; got shape {list(vec.shape)}")
    if isinstance(generator, torch.nn.Module):
        fingerprint: dict | None = generator_fingerprint(generator)
    else:
        fingerprint = dict(generator) if generator is not None else None
    obj = {"format": f"clcae.{DIRECTION_KIND}", "kind": DIRECTION_KIND, "format_version": FORMAT_VERSION,
           "direction": vec, "attribute": attribute, "layers": None if layers is None else [int(v) for v in layers],
           "generator": fingerprint, "meta": dict(meta or {})}
    atomic_save(obj, path)
    if raw_path is not None:
        atomic_save(vec.unsqueeze(0).clone(), raw_path)
    return Path(path)


# ---------------------------------------------------------------------------------------------------- editing
def check_layers(layers: Sequence[int], n_latent: int, what: str = "layers") -> tuple[int, ...]:
    """Validate W+ layer indices (each in ``[0, n_latent)``, no repeats); returns them as a tuple."""
    layers = tuple(int(v) for v in layers)
    bad = [v for v in layers if not 0 <= v < n_latent]
    if bad or not layers or len(set(layers)) != len(layers):
        raise ValueError(f"{what}: W+ layer indices must be distinct values in [0, {n_latent - 1}]; got "
                         f"{list(layers)}")
    return layers


def _strength_tensor(strength: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample strength -> ``[B]`` on ``like``'s device and dtype."""
    s = torch.as_tensor(strength, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        return s.expand(batch)
    if s.shape != (batch,):
        raise ValueError(f"strength must be a number or a [B] tensor with B = {batch}; got shape {list(s.shape)}")
    return s


def apply_direction(codes: torch.Tensor, direction: torch.Tensor, strength: float | torch.Tensor,
                    layers: Sequence[int] | None = None) -> torch.Tensor:
    """``codes + strength * direction`` (a new tensor; the input is unchanged).

    Args:
        codes: w ``[B, D]`` or W+ ``[B, n, D]``.
        direction: ``[D]`` (or ``[1, D]``) for every layer, or ``[n, D]`` (one row per layer; W+ only).
        strength: a number or a per-sample ``[B]`` tensor (e.g. one strength per column of a sweep).
        layers: W+ layer indices to move (default all); the other layers are returned unchanged. W+ only.
    Returns:
        The edited codes, same shape and dtype as ``codes``.
    """
    if codes.ndim not in (2, 3):
        raise ValueError(f"codes must be w [B, D] or W+ [B, n, D]; got shape {list(codes.shape)}")
    d = direction.to(codes.device, codes.dtype)
    if d.ndim == 2 and d.shape[0] == 1:
        d = d[0]
    dim = codes.shape[-1]
    if d.shape[-1] != dim or d.ndim not in (1, 2):
        raise ValueError(f"direction has shape {list(direction.shape)}; the codes have dimension {dim}")
    s = _strength_tensor(strength, codes.shape[0], codes)
    if codes.ndim == 2:
        if d.ndim == 2:
            raise ValueError("a per-layer direction [n, D] needs W+ codes [B, n, D], not w [B, D]")
        if layers is not None:
            raise ValueError("layers can only be chosen for W+ codes [B, n, D]; w [B, D] has no layers")
        return codes + s[:, None] * d
    n = codes.shape[1]
    if d.ndim == 2 and d.shape[0] != n:
        raise ValueError(f"the direction has {d.shape[0]} layer rows; the codes have {n} layers")
    delta = s[:, None, None] * (d if d.ndim == 2 else d[None]).unsqueeze(0)
    if layers is not None:
        mask = torch.zeros(n, 1, dtype=codes.dtype, device=codes.device)
        mask[list(check_layers(layers, n))] = 1
        delta = delta * mask
    return codes + delta


# ---------------------------------------------------------------------------------------------------- learning
def orthogonalize(direction: torch.Tensor, others: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """InterFaceGAN's conditional manipulation: remove from ``direction`` [D] its projection onto the span of
    ``others`` (each [D]; a [K, D] tensor works too) and renormalise, so moving along the result leaves the
    linear scores of the other attributes unchanged. Returns a unit ``[D]`` tensor (float32)."""
    d = direction.detach().double().reshape(-1)
    o = torch.stack([t.detach().double().reshape(-1) for t in others]) if not isinstance(others, torch.Tensor) \
        else others.detach().double().reshape(-1, d.numel())
    if o.numel() == 0:
        return (d / d.norm()).float()
    if o.shape[1] != d.numel():
        raise ValueError(f"condition directions have dimension {o.shape[1]}; the direction has {d.numel()}")
    q, r = torch.linalg.qr(o.T)  # orthonormal basis of span(others)
    keep = r.diagonal().abs() > 1e-10 * max(1.0, float(r.diagonal().abs().max()))
    q = q[:, keep]
    scale = d.norm()
    d = d - q @ (q.T @ d)
    norm = d.norm()
    if norm < 1e-6 * scale:  # float32 inputs: a residual at rounding level is no direction
        raise ValueError("the direction lies in the span of the condition directions; nothing is left")
    return (d / norm).float()


def _fit_classifier(x: torch.Tensor, y: torch.Tensor, method: str, c: float, max_iter: int) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """L2-regularised linear classifier on float64 ``x`` [N, D], labels ``y`` in {-1, +1}; returns (w, b).

    ``'svm'``: squared hinge loss (an L2-SVM); ``'logistic'``: logistic loss. Objective
    ``mean(loss) + ||w||^2 / (2 C N)``, minimised with L-BFGS (strong Wolfe line search); convex, so the result
    does not depend on the start.
    """
    n, dim = x.shape
    w = torch.zeros(dim, dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")
    reg = 1.0 / (2.0 * c * n)

    def closure():
        opt.zero_grad()
        margin = y * (x @ w + b)
        if method == "svm":
            loss = torch.clamp(1 - margin, min=0).pow(2).mean()
        else:
            loss = torch.nn.functional.softplus(-margin).mean()
        loss = loss + reg * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def learn_direction(latents: torch.Tensor, scores: torch.Tensor, method: str = "svm", fraction: float = 0.1,
                    split: float = 0.7, c: float = 1.0, condition_on: Sequence[torch.Tensor] | None = None,
                    seed: int = 0, max_iter: int = 500) -> tuple[torch.Tensor, dict]:
    """Learn an attribute direction from latent codes and their attribute scores (InterFaceGAN's recipe).

    Args:
        latents: ``[N, D]`` codes (w of generator samples).
        scores: ``[N]`` attribute scores of the samples (any monotonic scale; higher = more of the attribute).
        method: ``'svm'`` (default; InterFaceGAN): the ``fraction`` of samples with the highest scores are labelled
            positive and the same number with the lowest negative, a linear L2-SVM (squared hinge, L-BFGS, in
            torch; scikit-learn is not needed) separates them, and its unit normal is the direction.
            ``'logistic'``: the same with a logistic regression. ``'linear'``: ridge regression of the score on
            all samples (no labelling); the direction is the unit weight vector.
        fraction: share of samples labelled positive (and the same share negative); InterFaceGAN uses 0.02 of
            500k samples (10k each side). Must give at least 2 samples per side.
        split: share of the labelled samples used to fit; the rest measures ``val_accuracy`` (or
            ``val_correlation`` for ``'linear'``). 1.0 fits on everything (no validation figure).
        c: inverse regularisation strength (``mean(loss) + ||w||^2 / (2 c N)``; ``'linear'``: ridge
            ``lambda = 1 / c``).
        condition_on: directions ``[D]`` to project out afterwards (InterFaceGAN's conditional manipulation,
            :func:`orthogonalize`).
        seed: seed of the train/validation shuffle.
        max_iter: L-BFGS iterations.
    Returns:
        ``(direction [D] float32 unit vector pointing towards higher scores, info)``; ``info`` holds the method,
        sample counts, the score thresholds of the labelled sets, training / validation accuracy (classifiers) or
        correlation (``'linear'``), and the cosine between the raw and the conditioned direction.
    """
    if method not in LEARN_METHODS:
        raise ValueError(f"method must be one of {LEARN_METHODS}; got {method!r}")
    x = latents.detach().to("cpu", torch.float64)
    s = scores.detach().to("cpu", torch.float64).reshape(-1)
    if x.ndim != 2 or s.shape[0] != x.shape[0]:
        raise ValueError(f"latents must be [N, D] and scores [N]; got {list(latents.shape)} and "
                         f"{list(scores.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(s).all()):
        raise ValueError("latents and scores must be finite")
    if not 0 < split <= 1:
        raise ValueError(f"split must be in (0, 1]; got {split}")
    n = x.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    info: dict[str, Any] = {"method": method, "n_samples": n, "c": float(c), "split": float(split)}
    if method == "linear":
        perm = torch.randperm(n, generator=gen)
        n_fit = max(2, int(round(split * n)))
        fit, val = perm[:n_fit], perm[n_fit:]
        mu, smu = x[fit].mean(0), s[fit].mean()
        xc, sc = x[fit] - mu, s[fit] - smu
        scale = float(xc.pow(2).mean().sqrt()) or 1.0
        xs = xc / scale
        gram = xs.T @ xs + (1.0 / c) * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(gram, xs.T @ sc)
        info["train_correlation"] = float(torch.corrcoef(torch.stack([xs @ w, sc]))[0, 1])
        if len(val) >= 2:
            pred = ((x[val] - mu) / scale) @ w
            info["val_correlation"] = float(torch.corrcoef(torch.stack([pred, s[val]]))[0, 1])
    else:
        if not 0 < fraction <= 0.5:
            raise ValueError(f"fraction must be in (0, 0.5]; got {fraction}")
        k = int(math.floor(fraction * n))
        if k < 2:
            raise ValueError(f"fraction {fraction} of {n} samples gives {k} per side; need at least 2 (more samples "
                             "or a larger fraction)")
        order = torch.argsort(s, stable=True)
        neg, pos = order[:k], order[n - k:]
        info.update(n_positive=k, n_negative=k, threshold_low=float(s[neg].max()), threshold_high=float(s[pos].min()))
        if info["threshold_low"] >= info["threshold_high"]:
            raise ValueError("the highest and lowest scores overlap (too many equal scores); the attribute does not "
                             "vary enough among the samples")
        idx = torch.cat([pos, neg])
        y = torch.cat([torch.ones(k, dtype=x.dtype), -torch.ones(k, dtype=x.dtype)])
        perm = torch.randperm(2 * k, generator=gen)
        idx, y = idx[perm], y[perm]
        n_fit = max(2, int(round(split * 2 * k)))
        if split < 1 and n_fit >= 2 * k:
            n_fit = 2 * k - 1
        fit, val = slice(0, n_fit), slice(n_fit, None)
        if bool((y[fit] == y[fit][0]).all()):
            raise ValueError("the training split holds samples of one class only; use more samples")
        mu = x[idx[fit]].mean(0)
        scale = float((x[idx[fit]] - mu).pow(2).mean().sqrt()) or 1.0
        xs = (x[idx] - mu) / scale
        w, b = _fit_classifier(xs[fit], y[fit], method, c, max_iter)
        info["train_accuracy"] = float(((xs[fit] @ w + b).sign() == y[fit]).double().mean())
        if y[val].numel():
            info["val_accuracy"] = float(((xs[val] @ w + b).sign() == y[val]).double().mean())
    norm = w.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the fitted direction is zero: the scores do not depend linearly on the latents")
    direction = (w / norm).float()  # the scalar rescaling of the inputs leaves the normal's direction unchanged
    if condition_on:
        raw = direction
        direction = orthogonalize(raw, list(condition_on))
        info["cos_to_unconditioned"] = float(raw @ direction)
        info["n_conditions"] = len(condition_on)
    return direction, info


@torch.no_grad()
def sample_scores(generator: torch.nn.Module, score_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
                  seed: int = 0, batch: int = 64, truncation: float = 1.0, noise_mode: str = "const",
                  device: str | torch.device = "cpu", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` generator samples and score their images: the data :func:`learn_direction` needs.

    Args:
        generator: a :class:`~clcae.networks.stylegan2.Generator` (``mapping``, ``truncate``, ``synthesis``).
        score_fn: images ``[B, 3, H, W]`` in [-1, 1] (clamped) -> scores ``[B]`` or ``[B, A]`` (several attributes
            at once). Any attribute network fits, e.g. ``lambda x: domain_net.attributes(x)[:, i]``.
        n: number of samples; z is drawn in one stream from ``torch.Generator().manual_seed(seed)`` (so the first
            ``m`` samples of a larger run are the samples of a run with ``n = m``).
        truncation: psi towards ``generator.latent_avg`` (1 = none, InterFaceGAN's choice).
        noise_mode: the generator's noise (``'const'``: the stored buffers).
    Returns:
        ``(w [n, D], scores [n] or [n, A])`` on the CPU (float32); ``w`` is after truncation.
    """
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    ws, ss = [], []
    for start in tqdm(range(0, n, batch), disable=not progress, desc="sampling", unit="batch"):
        b = min(batch, n - start)
        z = torch.randn(b, generator.style_dim, generator=gen).to(device)
        w = generator.truncate(generator.mapping(z), truncation)
        img = generator.synthesis(w, noise_mode=noise_mode).clamp(-1, 1)
        score = score_fn(img)
        if not isinstance(score, torch.Tensor) or score.ndim not in (1, 2) or score.shape[0] != b:
            raise ValueError(f"score_fn must return [B] or [B, A] for B = {b} images; got "
                             f"{list(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__}")
        ws.append(w.float().cpu())
        ss.append(score.float().cpu())
    return torch.cat(ws), torch.cat(ss)
