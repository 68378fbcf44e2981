"""Latent-image pairs from a pretrained StyleGAN2: CLCAE stage 1's training data (spec §3.1).

Folder layout (the official ``ContrastiveDataset``'s, plus the averages and a manifest)::

    <root>/image/<stem>.png       G(w), 8-bit RGB (any Pillow-readable extension is read)
    <root>/latent/<stem>.npy      w, float32 [style_dim]: the W-space vector that was rendered (truncated if psi < 1)
    <root>/avg_image.png          G(latent_avg), 8-bit, at the pairs' size (clcae.data.average)
    <root>/avg_latent.npy         the generator's latent_avg, float32 [style_dim]
    <root>/pairs.json             manifest: generator, settings, seed, count, clcae version (see write_pairs)

Stems written here are zero-padded pair indices (``000000``, ``000001``, ...), which the official car tooling's
numeric sort also expects.

How pair ``i`` is drawn (deterministic in ``(seed, stream, i)`` alone, so any subset can be re-rendered or
resumed in any batch): a ``torch.Generator`` seeded with ``derive_seed(seed, stream, i)`` draws
``z = randn(style_dim)`` and then, for ``noise_mode='random'``, one ``randn(1, r, r)`` noise map per layer;
``w = latent_avg + psi * (mapping(z) - latent_avg)``; the image is ``G.synthesis(w)`` (w repeated over all
layers), clamped to [-1, 1]. Renders of one pair in different batches or on different devices agree to float
rounding (an 8-bit level at most), not bit for bit.

- :func:`render_pairs`: the batched renderer every path uses;
- :func:`write_pairs`: writes a folder, atomically per file and resumably;
- :class:`PairsDataset`: reads a folder, ``(image [3, H, W] in [-1, 1], latent [D])`` items;
- :class:`GeneratedPairs`: the same items rendered on the fly (no disk; for small generators).
"""
from __future__ import annotations

import datetime
import itertools
import json
import logging
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..fileio import atomic_write
from ..fingerprint import generator_sha1
from ..version import __version__
from .average import average_frame, fit_average
from .sampler import derive_seed
from .images import (ImageReadError, display_path, from_tensor, list_images, load_image, probe_image, save_image,
                     to_tensor)

__all__ = [
    "PairsDataset", "GeneratedPairs", "render_pairs", "pair_latents", "write_pairs",
    "pair_stem", "PairsError", "MANIFEST_NAME", "FORMAT_NAME", "FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "clcae-pairs"
FORMAT_VERSION = 1
MANIFEST_NAME = "pairs.json"
IMAGE_DIR = "image"
LATENT_DIR = "latent"
AVG_IMAGE_NAME = "avg_image.png"
AVG_LATENT_NAME = "avg_latent.npy"
STEM_DIGITS = 6
NOISE_MODES = ("const", "random", "none")
# Manifest keys that must agree before write_pairs adds pairs to an existing folder.
_SETTING_KEYS = ("format", "format_version", "generator_sha1", "size", "style_dim", "psi", "noise_mode", "seed",
                 "stream", "image_size", "stem_digits")
# Tolerance when checking a stored latent against its recomputed value (other device / batch: float rounding).
_LATENT_RTOL, _LATENT_ATOL = 1e-3, 1e-4


class PairsError(ValueError):
    """A pairs folder (or a request to write one) is inconsistent; the message names the files or settings."""


def pair_stem(index: int, digits: int = STEM_DIGITS) -> str:
    """File stem of pair ``index``: zero-padded to ``digits`` (``7 -> '000007'``)."""
    return f"{int(index):0{digits}d}"


def _size_hw(size: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        ok = len(size) == 2 and all(int(s) == s and s >= 1 for s in size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a positive int or (H, W); got {size!r}")
    return int(size[0]), int(size[1])


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}; got {noise_mode!r}")


def _generator_device(generator: torch.nn.Module) -> torch.device:
    first = next(itertools.chain(generator.parameters(), generator.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------
# Rendering


def _pair_randoms(generator: torch.nn.Module, index: int, seed: int, stream: int,
                  with_noise: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """z [D] and (optionally) the per-layer noise maps [1, r, r] of one pair, on the CPU."""
    rng = torch.Generator().manual_seed(derive_seed(int(seed), int(stream), int(index)))
    z = torch.randn(generator.style_dim, generator=rng)
    noise = []
    if with_noise:
        for layer in range(generator.num_layers):
            h, w = getattr(generator.noises, f"noise_{layer}").shape[-2:]
            noise.append(torch.randn(1, h, w, generator=rng))
    return z, noise


def _check_seed(seed: int, stream: int) -> None:
    if int(seed) != seed or seed < 0 or int(stream) != stream or stream < 0:
        raise ValueError(f"seed and stream must be non-negative integers; got seed={seed!r}, stream={stream!r}")


def _as_indices(indices: Sequence[int] | torch.Tensor | range) -> list[int]:
    out = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if any(i < 0 for i in out):
        raise ValueError(f"pair indices must be >= 0; got {min(out)}")
    return out


@torch.no_grad()
def pair_latents(generator: torch.nn.Module, indices: Sequence[int], seed: int = 0, stream: int = 0,
                 psi: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """The (truncated) w of each pair, float32 ``[len(indices), style_dim]`` on the CPU, without rendering."""
    _check_seed(seed, stream)
    idx = _as_indices(indices)
    device = torch.device(device) if device is not None else _generator_device(generator)
    if not idx:
        return torch.empty(0, generator.style_dim)
    z = torch.stack([_pair_randoms(generator, i, seed, stream, False)[0] for i in idx]).to(device)
    w = generator.truncate(generator.mapping(z), float(psi))
    return w.float().cpu()


@torch.no_grad()
def render_pairs(generator: torch.nn.Module, indices: Sequence[int], seed: int = 0, stream: int = 0,
                 psi: float = 1.0, noise_mode: str = "const", image_size: int | Sequence[int] | None = None,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the pairs ``indices`` in one batch (see the module docstring for how each pair is drawn).

    Args:
        generator: a :class:`clcae.networks.stylegan2.Generator` (eval mode; its ``latent_avg`` is the truncation
            centre).
        indices: pair indices (>= 0).
        seed, stream: the seed stream; pairs of different ``(seed, stream)`` are independent (train / test).
        psi: truncation towards ``latent_avg`` (1 = none).
        noise_mode: ``'const'`` (the generator's stored noise buffers), ``'random'`` (per-pair seeded maps) or
            ``'none'`` (zero noise).
        image_size: ``None`` keeps the generator resolution; an int or ``(H, W)`` resizes with antialiased
            bilinear filtering (``F.interpolate(..., antialias=True)``) before anything is quantised.
        device: where to run (default: the generator's device; the generator must already be there).
    Returns:
        ``(images float32 [B, 3, H, W] in [-1, 1], w float32 [B, style_dim])`` on the CPU; ``w`` is exactly the
        code that was rendered.
    """
    _check_noise_mode(noise_mode)
    _check_seed(seed, stream)
    target = _size_hw(image_size, "image_size")
    idx = _as_indices(indices)
    device = torch.device(device) if device is not None else _generator_device(generator)
    if not idx:
        h, w = target or (generator.size, generator.size)
        return torch.empty(0, 3, h, w), torch.empty(0, generator.style_dim)
    randoms = [_pair_randoms(generator, i, seed, stream, noise_mode == "random") for i in idx]
    z = torch.stack([r[0] for r in randoms]).to(device)
    w = generator.truncate(generator.mapping(z), float(psi))
    noise = None
    if noise_mode == "random":
        noise = [torch.stack([r[1][layer] for r in randoms]).to(device) for layer in range(generator.num_layers)]
    images = generator.synthesis(w, noise_mode=noise_mode, noise=noise).float().clamp(-1, 1)
    if target is not None and tuple(images.shape[-2:]) != target:
        images = F.interpolate(images, size=target, mode="bilinear", align_corners=False, antialias=True)
        images = images.clamp(-1, 1)
    return images.cpu(), w.float().cpu()


def _average_noise(noise_mode: str) -> str:
    """The noise of the average pair: zero for ``'none'`` pairs, else the stored buffers (``'random'`` pairs too:
    the average is one fixed image)."""
    return "none" if noise_mode == "none" else "const"


def _stored_average(generator: torch.nn.Module, noise_mode: str, image_size: tuple[int, int] | None,
                    quantize: bool = True) -> torch.Tensor:
    """The average image as :func:`write_pairs` stores it (``avg_image.png``): :func:`~clcae.data.average.average_frame`,
    brought to ``image_size`` by :func:`~clcae.data.average.fit_average`; ``[1, 3, H, W]`` on the CPU."""
    image = average_frame(generator, None, _average_noise(noise_mode), quantize)
    if image_size is not None:
        image = fit_average(image, image_size, quantize)
    return image.cpu()


def _reader_transform(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """What a stored pair image becomes in :class:`PairsDataset`: 8-bit quantisation, then PIL bilinear resize."""
    pil = from_tensor(image)
    return to_tensor(_resize_bilinear(pil, size))


def _resize_bilinear(img: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """The official ``transforms.Resize((H, W))`` on a PIL image: ``img.resize((W, H), BILINEAR)``."""
    if size is None or (img.height, img.width) == size:
        return img
    return img.resize((size[1], size[0]), Image.Resampling.BILINEAR)


class GeneratedPairs(torch.utils.data.Dataset):
    """``n`` latent-image pairs rendered on demand from a generator: items equal to what :class:`PairsDataset`
    reads from a folder that :func:`write_pairs` wrote with the same settings (up to float rounding).

    Args:
        generator: the StyleGAN2 generator (eval mode), on the device to render on.
        n: number of pairs.
        seed, stream, psi, noise_mode, image_size: as :func:`render_pairs` (``image_size`` is the stored
            resolution; ``None`` = the generator's).
        size: the loading size, int or ``(H, W)`` (``None``: the stored resolution), applied like
            :class:`PairsDataset` does: 8-bit quantisation, then PIL bilinear.
        quantize: ``False`` skips the 8-bit round trip and resizes the float render with antialiased bilinear
            filtering instead (faster; no longer equal to the stored pairs).

    Items: ``(image float32 [3, H, W] in [-1, 1], latent float32 [D])`` on the CPU. ``__getitems__`` renders a
    whole DataLoader batch in one generator call. Rendering one by one is slow: prefer ``batch_size > 1`` and
    ``num_workers=0`` (a CUDA generator cannot be used from forked worker processes).
    """

    def __init__(self, generator: torch.nn.Module, n: int, seed: int = 0, psi: float = 1.0,
                 noise_mode: str = "const", size: int | Sequence[int] | None = None,
                 image_size: int | Sequence[int] | None = None, stream: int = 0, quantize: bool = True):
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        _check_noise_mode(noise_mode)
        _check_seed(seed, stream)
        self.generator = generator
        self.n = int(n)
        self.seed, self.stream, self.psi, self.noise_mode = int(seed), int(stream), float(psi), noise_mode
        self.image_size = _size_hw(image_size, "image_size")
        self.size = _size_hw(size, "size")
        self.quantize = bool(quantize)
        self._avg: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.n

    def _finish(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.quantize:
            return [_reader_transform(img, self.size) for img in images]
        if self.size is not None and tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False,
                                   antialias=True).clamp(-1, 1)
        return list(images)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.n:
                raise IndexError(f"pair index {i} out of range for {self.n} pairs")
        images, latents = render_pairs(self.generator, idx, self.seed, self.stream, self.psi, self.noise_mode,
                                       self.image_size)
        return list(zip(self._finish(images), latents))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n <= index < self.n:
            raise IndexError(f"pair index {index} out of range for {self.n} pairs")
        return self.__getitems__([index % self.n])[0]

    def _average(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._avg is None:
            image = _stored_average(self.generator, self.noise_mode, self.image_size, self.quantize)
            if self.size is not None:
                image = fit_average(image, self.size, self.quantize)
            self._avg = (image, self.generator.latent_avg.detach().float().cpu().clone())
        return self._avg

    def avg_image(self) -> torch.Tensor:
        """``G(latent_avg)`` as loaded, ``[1, 3, H, W]`` in [-1, 1]: what :class:`PairsDataset` reads from the
        folder :func:`write_pairs` writes with the same settings, bit for bit (``quantize=True``), and, at the
        same input size, what :func:`clcae.networks.inverters.render_average_image` renders (constant noise)."""
        return self._average()[0].clone()

    def avg_latent(self) -> torch.Tensor:
        """The generator's ``latent_avg``, float32 ``[D]``."""
        return self._average()[1].clone()


# --------------------------------------------------------------------------------------------------------------
# Reading a folder


def _read_latent(path: Path, dim: int | None) -> np.ndarray:
    """A float32 [dim] vector from ``path``; PairsError naming the file otherwise."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # truncated, not .npy, pickled object array, unreadable
        raise PairsError(f"{display_path(path)}: cannot read the latent ({type(e).__name__}: {e})") from None
    if arr.dtype != np.float32:
        raise PairsError(f"{display_path(path)}: latent dtype is {arr.dtype}; expected float32")
    if arr.ndim != 1 or (dim is not None and arr.shape[0] != dim):
        want = f"[{dim}]" if dim is not None else "[D]"
        raise PairsError(f"{display_path(path)}: latent shape is {list(arr.shape)}; expected {want}")
    if not np.isfinite(arr).all():
        raise PairsError(f"{display_path(path)}: latent contains NaN or inf")
    return arr


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise PairsError(f"{display_path(path)}: cannot read the manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise PairsError(f"{display_path(path)}: the manifest is not a JSON object")
    return manifest


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class PairsDataset(torch.utils.data.Dataset):
    """The latent-image pairs of a folder (layout in the module docstring), in sorted stem order.

    Args:
        root: the folder holding ``image/`` and ``latent/``.
        size: output image size, int or ``(H, W)`` (default 256, the official stage-1 input); ``None`` keeps the
            stored size. Resizing is the official transform's: PIL bilinear on the 8-bit image.
        avg_image, avg_latent: paths of the average pair (default ``<root>/avg_image.png`` and
            ``<root>/avg_latent.npy``; the official FFHQ data has them in ``avg/image/image_avg.png`` and
            ``avg/latent/latent_avg.npy``).
        style_dim: expected latent width (default: that of ``avg_latent``).

    Items: ``(image float32 [3, H, W] in [-1, 1], latent float32 [D])``. Batches of latents are ``[B, D]``
    (the official loader's ``[B, 1, D]`` is ``latent.unsqueeze(1)``).

    Validation at construction (PairsError naming files): every image stem has a latent and vice versa, no stem
    has two images, and every latent (all loaded here, ``N x D`` float32 in memory) is float32 ``[D]`` and
    finite; the average pair exists and is valid. Images are decoded on access; a bad one raises
    :class:`~clcae.data.images.ImageReadError` naming it (never substituted, which would break the pairing).
    """

    def __init__(self, root: str | os.PathLike, size: int | Sequence[int] | None = 256, *,
                 avg_image: str | os.PathLike | None = None, avg_latent: str | os.PathLike | None = None,
                 style_dim: int | None = None):
        self.root = Path(os.fsdecode(root))
        self.size = _size_hw(size, "size")
        image_dir, latent_dir = self.root / IMAGE_DIR, self.root / LATENT_DIR
        for d in (image_dir, latent_dir):
            if not d.is_dir():
                raise PairsError(f"{display_path(self.root)} is not a pairs folder: {display_path(d)} is missing "
                                 f"(expected {IMAGE_DIR}/<stem>.png and {LATENT_DIR}/<stem>.npy)")
        self.manifest = _read_manifest(self.root)

        images: dict[str, Path] = {}
        duplicates = []
        for path in list_images(image_dir, recursive=False, allow_empty=True):
            stem = path.stem
            if stem in images:
                duplicates.append(f"{images[stem].name} / {path.name}")
            images[stem] = path
        if duplicates:
            raise PairsError(f"{display_path(image_dir)}: several images share a stem: {_listing(duplicates)}")
        latents = {p.stem: p for p in latent_dir.iterdir() if p.suffix == ".npy" and not p.name.startswith(".")}
        lonely_images = sorted(set(images) - set(latents))
        lonely_latents = sorted(set(latents) - set(images))
        if lonely_images or lonely_latents:
            parts = []
            if lonely_images:
                parts.append(f"{len(lonely_images)} image(s) without a latent: "
                             f"{_listing([images[s].name for s in lonely_images])}")
            if lonely_latents:
                parts.append(f"{len(lonely_latents)} latent(s) without an image: "
                             f"{_listing([latents[s].name for s in lonely_latents])}")
            raise PairsError(f"{display_path(self.root)}: unmatched pairs: " + "; ".join(parts))
        if not images:
            raise PairsError(f"{display_path(self.root)}: no pairs found in {IMAGE_DIR}/ and {LATENT_DIR}/")

        self.stems = sorted(images, key=lambda s: os.fsencode(s))
        self.image_paths = [images[s] for s in self.stems]
        self.latent_paths = [latents[s] for s in self.stems]

        self.avg_image_path = Path(os.fsdecode(avg_image)) if avg_image is not None else self.root / AVG_IMAGE_NAME
        self.avg_latent_path = (Path(os.fsdecode(avg_latent)) if avg_latent is not None
                                else self.root / AVG_LATENT_NAME)
        if not self.avg_latent_path.is_file():
            raise PairsError(f"average latent not found: {display_path(self.avg_latent_path)} (pass avg_latent=)")
        if not self.avg_image_path.is_file():
            raise PairsError(f"average image not found: {display_path(self.avg_image_path)} (pass avg_image=)")
        self._avg_latent = _read_latent(self.avg_latent_path, style_dim)
        self.style_dim = int(self._avg_latent.shape[0])
        self._latents = np.empty((len(self.stems), self.style_dim), dtype=np.float32)
        for i, path in enumerate(self.latent_paths):
            self._latents[i] = _read_latent(path, self.style_dim)
        self._avg_image: torch.Tensor | None = None

        if self.manifest is not None:
            count = self.manifest.get("count")
            if not self.manifest.get("complete", True) or (isinstance(count, int) and count != len(self)):
                logger.warning("%s: the manifest says %s pairs (complete=%s) but %d were found; was the writer "
                               "interrupted?", display_path(self.root), count, self.manifest.get("complete"),
                               len(self))

    def __len__(self) -> int:
        return len(self.stems)

    def _load_image(self, path: Path) -> torch.Tensor:
        img = load_image(path, size=None, min_size=1)
        return to_tensor(_resize_bilinear(img, self.size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.stems)
        if not -n <= index < n:
            raise IndexError(f"pair index {index} out of range for {n} pairs")
        index %= n
        return self._load_image(self.image_paths[index]), torch.from_numpy(self._latents[index].copy())

    def latents(self) -> torch.Tensor:
        """Every latent, float32 ``[N, D]`` (a copy), in item order."""
        return torch.from_numpy(self._latents.copy())

    def avg_image(self) -> torch.Tensor:
        """The average image, ``[1, 3, H, W]`` in [-1, 1], brought to ``size`` by
        :func:`~clcae.data.average.fit_average` (the one way every encoder input gets its average image; it can
        differ from the pair images' PIL bilinear resize by one 8-bit level)."""
        if self._avg_image is None:
            image = to_tensor(load_image(self.avg_image_path, size=None, min_size=1)).unsqueeze(0)
            self._avg_image = fit_average(image, self.size) if self.size is not None else image
        return self._avg_image.clone()

    def avg_latent(self) -> torch.Tensor:
        """The average latent, float32 ``[D]``."""
        return torch.from_numpy(self._avg_latent.copy())


# --------------------------------------------------------------------------------------------------------------
# Writing a folder


def _remove_stale_temporaries(folders: Sequence[Path]) -> int:
    """Delete ``.<name>.*.tmp`` files left by an interrupted atomic write. Returns how many."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
    return removed


def _write_manifest(root: Path, manifest: dict) -> None:
    with atomic_write(root / MANIFEST_NAME, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)


def _pair_is_complete(image_path: Path, latent_path: Path, expected_w: np.ndarray,
                      expected_hw: tuple[int, int]) -> bool:
    """Whether a pair on disk is whole and is the pair these settings would write."""
    try:
        stored = _read_latent(latent_path, expected_w.shape[0])
        if probe_image(image_path, min_size=1) != expected_hw:
            return False
    except (PairsError, ImageReadError):
        return False
    return bool(np.allclose(stored, expected_w, rtol=_LATENT_RTOL, atol=_LATENT_ATOL))


def write_pairs(generator: torch.nn.Module, out_root: str | os.PathLike, n: int, seed: int = 0, psi: float = 1.0,
                noise_mode: str = "const", batch: int = 16, device: torch.device | str | None = None,
                image_size: int | Sequence[int] | None = None, progress: bool = True, *, stream: int = 0,
                generator_name: str | None = None, workers: int = 4) -> dict[str, Any]:
    """Render ``n`` pairs into ``out_root`` (layout in the module docstring), resumably.

    Args:
        generator: the StyleGAN2 generator (eval mode); moved to ``device`` if one is given.
        out_root: the folder (created). A folder that already has a manifest must have been written with the same
            generator (weights fingerprint) and settings; more pairs may be added (``n`` >= its count).
        n: number of pairs (>= 0); pair ``i`` has stem :func:`pair_stem` ``(i)``.
        seed, stream, psi, noise_mode: see :func:`render_pairs`. The stored latent is the truncated w.
        batch: pairs rendered per generator call.
        device: where to render (default: the generator's device).
        image_size: ``None`` saves at the generator resolution; an int or ``(H, W)`` resizes first (antialiased
            bilinear on the float render, then 8-bit quantisation). The loader resizes again to its own ``size``.
        progress: show a tqdm bar.
        generator_name: recorded in the manifest (e.g. the file name); informative only.
        workers: threads that encode and write PNGs while the next batch renders.

    Every file is written to a temporary file, flushed to disk and renamed into place, so a file that exists is
    whole. On a re-run, a pair counts as done only if its latent loads, has the right shape and equals the
    recomputed w, and its PNG header reads with the right size; everything else is rendered again.
    The manifest is written first (``"complete": false``) and rewritten at the end (``"complete": true``).
    Two writers must not share a folder.

    Returns:
        ``{'root', 'count', 'written', 'skipped', 'seconds'}``.
    Raises:
        PairsError: the folder holds pairs of another generator or settings, or pair files without a manifest.
    """
    t0 = time.time()
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    n = int(n)
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    _check_noise_mode(noise_mode)
    _check_seed(seed, stream)
    psi = float(psi)
    if not math.isfinite(psi):
        raise ValueError(f"psi must be finite; got {psi}")
    target = _size_hw(image_size, "image_size")
    if device is not None:
        generator.to(device)
    root = Path(os.fsdecode(out_root))
    image_dir, latent_dir = root / IMAGE_DIR, root / LATENT_DIR
    hw = target or (generator.size, generator.size)

    settings = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "generator_sha1": generator_sha1(generator),
        "size": int(generator.size), "style_dim": int(generator.style_dim), "psi": psi, "noise_mode": noise_mode,
        "seed": int(seed), "stream": int(stream), "image_size": list(target) if target else None,
        "stem_digits": STEM_DIGITS,
    }
    existing = _read_manifest(root) if root.is_dir() else None
    if existing is None:
        has_files = any(d.is_dir() and any(not e.name.startswith(".") for e in os.scandir(d))
                        for d in (image_dir, latent_dir))
        if has_files:
            raise PairsError(f"{display_path(root)} holds pair files but no {MANIFEST_NAME}: they were not written "
                             "by write_pairs (or by another version); use an empty folder")
    else:
        diffs = [f"{k}: folder has {existing.get(k)!r}, requested {settings[k]!r}" for k in _SETTING_KEYS
                 if existing.get(k) != settings[k]]
        if diffs:
            raise PairsError(f"{display_path(root)} was written with other settings; refusing to mix pairs "
                             f"(use another folder): " + "; ".join(diffs))
        if int(existing.get("count", 0)) > n:
            raise PairsError(f"{display_path(root)} already holds {existing['count']} pairs; pass n >= "
                             f"{existing['count']} (or use another folder)")

    manifest = dict(settings)
    manifest.update({
        "generator": generator_name, "count": n, "clcae_version": __version__, "complete": False,
        "latent_space": "w (mapping output, truncated towards latent_avg by psi)",
        "sampling": "pair i: torch.Generator seeded derive_seed(seed, stream, i) draws z = randn(style_dim), then "
                    "for noise_mode='random' one randn(1, r, r) map per layer",
        "created": (existing or {}).get("created") or datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })
    root.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(exist_ok=True)
    latent_dir.mkdir(exist_ok=True)
    removed = _remove_stale_temporaries([root, image_dir, latent_dir])
    if removed:
        logger.info("%s: removed %d temporary file(s) of an interrupted run", display_path(root), removed)
    _write_manifest(root, manifest)

    # Which pairs are already complete (latent recomputed from the seed and compared).
    candidates = [i for i in range(n) if (image_dir / f"{pair_stem(i)}.png").is_file()
                  and (latent_dir / f"{pair_stem(i)}.npy").is_file()]
    done: set[int] = set()
    for start in range(0, len(candidates), 1024):
        chunk = candidates[start:start + 1024]
        expected = pair_latents(generator, chunk, seed, stream, psi).numpy()
        for i, w in zip(chunk, expected):
            if _pair_is_complete(image_dir / f"{pair_stem(i)}.png", latent_dir / f"{pair_stem(i)}.npy", w, hw):
                done.add(i)
    todo = [i for i in range(n) if i not in done]

    from tqdm.auto import tqdm

    bar = tqdm(total=n, initial=len(done), desc=f"pairs -> {root.name}", unit="pair", disable=not progress)

    def write_one(i: int, image: torch.Tensor, w: np.ndarray) -> None:
        # Image first, latent last: a pair whose latent exists was fully written.
        save_image(image, image_dir / f"{pair_stem(i)}.png", fsync=True)
        _save_npy(latent_dir / f"{pair_stem(i)}.npy", w)

    pending: deque = deque()
    pool = ThreadPoolExecutor(max(1, int(workers)))
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            images, ws = render_pairs(generator, chunk, seed, stream, psi, noise_mode, target)
            for i, img, w in zip(chunk, images, ws.numpy()):
                future = pool.submit(write_one, i, img, w)
                future.add_done_callback(lambda _f: bar.update(1))
                pending.append(future)
            # At most two batches wait for the writers (memory), and a write error surfaces early.
            while len(pending) > 2 * batch:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    save_image(_stored_average(generator, noise_mode, target)[0], root / AVG_IMAGE_NAME, fsync=True)
    _save_npy(root / AVG_LATENT_NAME, generator.latent_avg.detach().float().cpu().numpy())
    manifest["complete"] = True
    _write_manifest(root, manifest)
    return {"root": str(root), "count": n, "written": len(todo), "skipped": len(done),
            "seconds": time.time() - t0}
