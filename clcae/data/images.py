"""Reading image folders safely: the one image reader every script uses.

Training (FFHQ, CelebA-HQ, any folder), ``invert.py`` on a user's folder and ``eval.py`` all go through
:func:`list_images`, :func:`load_image` and :class:`ImageFolderDataset`. The contract:

* **Anything Pillow can open** is accepted, whatever its extension says; files are decided by trying to open
  them, with an extension list and a magic-byte sniff only to skip obvious non-images quickly.
* **Every colour mode ends as 8-bit RGB**: EXIF orientation applied; L/1 replicated; LA/RGBA/PA, palette or RGB/L
  images with a transparent colour composited onto ``background`` (white by default); CMYK and YCbCr converted;
  16-bit (``I;16``, ``I;16B``, ``I``) *scaled* to 8 bits, never clipped; float (``F``) mapped by its range.
* **Nothing bad stops a run**: a file that cannot be used raises :class:`ImageReadError` naming the file and the
  reason; the dataset logs it, records it and substitutes the next readable file.
* **Safety before decoding**: the pixel count is checked from the header, so a 20000x20000 header bomb is refused
  without allocating its pixels (Pillow's own ``DecompressionBombError`` becomes the same clear error). Images
  whose shorter side is below ``min_size`` are refused: set ``min_size=1`` to accept them, and the size policy
  will then upscale them like any other image.
* **Odd names**: non-UTF-8 names (bytes on Linux, surrogate-escaped in ``str``) are kept intact for opening and
  printed with :func:`display_path`, which never raises.

Sizes follow the project convention ``(H, W)``; Pillow's own ``img.size`` is ``(W, H)``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..fileio import atomic_write

__all__ = [
    "ImageReadError",
    "POLICIES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIZE",
    "display_path",
    "list_images",
    "probe_image",
    "load_image",
    "fit_image",
    "to_tensor",
    "from_tensor",
    "save_image",
    "ImageFolderDataset",
    "skip_bad_collate",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, bytes, os.PathLike]
Color = tuple[int, int, int]

POLICIES = ("resize", "center_crop", "pad", "none")
DEFAULT_MAX_PIXELS = 128_000_000  # 128 megapixels: far above any training image, far below a bomb
DEFAULT_MIN_SIZE = 16  # shorter side, in pixels
_REDUCING_GAP = 3.0  # Pillow's "fair" speed/quality trade-off for large downscales

# Obvious non-images in dataset folders: skipped by name without reading a byte.
NON_IMAGE_EXTENSIONS = frozenset(
    ".txt .md .rst .csv .tsv .json .jsonl .yaml .yml .toml .ini .cfg .xml .html .htm .log .py .pyc .sh .ipynb "
    ".pt .pth .ckpt .pkl .pickle .npy .npz .h5py .safetensors .onnx .db .sqlite .lmdb .mdb .lock "
    ".zip .tar .gz .tgz .bz2 .xz .7z .rar .mp4 .avi .mov .mkv .webm .mp3 .wav .flac .doc .docx .pdf .svg".split()
)

# (offset, magic) pairs for a quick sniff of files whose extension says nothing.
_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (8, b"WEBP"),
    (4, b"ftypavif"),
    (4, b"ftypheic"),
    (0, b"\x00\x00\x01\x00"),  # ICO
    (0, b"qoif"),
    (0, b"8BPS"),  # PSD
    (0, b"\x00\x00\x00\x0cjP  "),  # JPEG 2000
)

_HIGH_DEPTH_MODES = ("I", "F")  # plus every "I;..." mode
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

_ORIENTATION_TAG = 0x0112


# --------------------------------------------------------------------------------------------------------------
# Errors and names


def display_path(path: PathLike | None) -> str:
    """A printable form of ``path`` that never raises: undecodable bytes appear as ``\\xff`` escapes.

    Linux file names are bytes; Python keeps the undecodable ones as lone surrogates in ``str``, which crash
    ``print`` and ``str.encode('utf-8')``. Use this for every message that names a file.
    """
    if path is None:
        return "<unknown>"
    try:
        raw = os.fsencode(path)
    except (TypeError, ValueError):
        return repr(path)
    return raw.decode("utf-8", "backslashreplace")


class ImageReadError(Exception):
    """An image file that cannot be used, with ``.path`` (as given) and ``.reason`` (one human-readable line).

    ``str(err)`` is ``"<printable path>: <reason>"``. ``ImageReadError(message)`` with a single argument is also
    accepted (``path`` is then ``None``) so a DataLoader worker can re-raise it in the parent process.
    """

    def __init__(self, path: PathLike | None, reason: str | None = None):
        if reason is None:
            path, reason = None, str(path)
        self.path = path
        self.reason = reason
        super().__init__(reason if path is None else f"{display_path(path)}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def _describe(exc: BaseException) -> str:
    """One line for an exception raised by a decoder (they are not always informative on their own)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------------------
# Scanning


def _openable_extensions() -> frozenset[str]:
    """Extensions of every format this Pillow build (with its plugins) can *open*, lower-case with the dot."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _sniff_is_image(path: str) -> bool:
    """Whether a file of unknown extension looks like an image: magic bytes first, then Pillow's header parse."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return False
    if not head:
        return False
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _MAGIC):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path):
                return True
    except Image.DecompressionBombError:
        return True  # it is an image; load_image will refuse it by name
    except Exception:
        return False


def _sort_key(path: Path) -> tuple[bytes, ...]:
    # Byte order of each component: independent of locale and of directory listing order.
    return tuple(os.fsencode(part) for part in path.parts)


def list_images(
    root: PathLike,
    recursive: bool = True,
    *,
    include_hidden: bool = False,
    allow_empty: bool = False,
    errors: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """Find the image files under ``root``, sorted deterministically.

    Args:
        root: a folder (``str``, ``bytes`` or path-like), or a single file, which is returned as ``[Path(root)]``
            without any check (the caller asked for it by name; :func:`load_image` reports it if it is bad).
        recursive: descend into sub-folders, following symbolic links. Each real folder is visited once
            (tracked by device and inode), so symlink loops terminate and a folder linked twice is not listed twice.
        include_hidden: also list names starting with ``.`` (by default skipped, with hidden folders: e.g. macOS
            ``._photo.jpg`` resource forks, which have an image extension but are not images).
        allow_empty: return ``[]`` instead of raising when nothing is found.
        errors: if given, ``(folder, reason)`` is appended for each folder that could not be listed.

    A file is listed when its extension is one that Pillow can open (``.JPG`` counts). Files with a known
    non-image extension (``.txt``, ``.json``, ``.pt``, ...) are skipped unread; any other file is listed only if
    its header looks like an image (magic bytes, then Pillow's header parse). A file with an image extension is
    listed even if its contents are bad, so that loading reports it by name.

    Returns:
        ``list[Path]`` joined onto ``root`` as given (symlinked paths are not resolved). Non-UTF-8 names are kept
        surrogate-escaped, so ``open()`` still works; print them with :func:`display_path`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no image was found (unless ``allow_empty``); the message names the folder.
    """
    root_str = os.fsdecode(root)
    root_path = Path(root_str)
    if not os.path.exists(root_str):
        raise FileNotFoundError(f"image folder does not exist: {display_path(root_str)}")
    if not os.path.isdir(root_str):
        return [root_path]

    image_exts = _openable_extensions()
    found: list[Path] = []
    skipped = 0
    visited: set[tuple[int, int]] = set()

    def on_walk_error(err: OSError) -> None:
        where = err.filename if err.filename is not None else root_str
        reason = f"cannot list folder: {err.strerror or _describe(err)}"
        logger.warning("%s: %s", display_path(where), reason)
        if errors is not None:
            errors.append((Path(os.fsdecode(where)), reason))

    try:
        root_stat = os.stat(root_str)
        visited.add((root_stat.st_dev, root_stat.st_ino))
    except OSError as err:
        on_walk_error(err)

    for dirpath, dirnames, filenames in os.walk(root_str, onerror=on_walk_error, followlinks=True):
        # Prune in place (top-down walk): hidden folders, and folders already seen through another link.
        kept = []
        for name in sorted(dirnames, key=os.fsencode):
            if not include_hidden and name.startswith("."):
                continue
            if not recursive:
                continue
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError as err:
                on_walk_error(err)
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                logger.debug("skipping %s: folder already visited (symlink loop or duplicate link)",
                             display_path(os.path.join(dirpath, name)))
                continue
            visited.add(key)
            kept.append(name)
        dirnames[:] = kept

        for name in filenames:
            if not include_hidden and name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            ext = os.path.splitext(name)[1].lower()
            if ext in image_exts:
                found.append(Path(full))
            elif ext in NON_IMAGE_EXTENSIONS:
                skipped += 1
            elif os.path.isfile(full) and _sniff_is_image(full):
                found.append(Path(full))
            else:
                skipped += 1

    found.sort(key=_sort_key)
    if not found and not allow_empty:
        detail = f" ({skipped} non-image file(s) skipped)" if skipped else " (the folder is empty)"
        raise ValueError(f"no image files found in {display_path(root_str)}{detail}")
    return found


# --------------------------------------------------------------------------------------------------------------
# Loading one image


def _normalize_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None`` | ``int`` | ``(H, W)`` -> ``None`` | ``(H, W)``; raises ValueError on anything else."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        valid = len(size) == 2 and all(int(s) == s and s >= 1 for s in size)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


@contextlib.contextmanager
def _open_header(path: PathLike, max_pixels: int | None, min_size: int) -> Iterator[Image.Image]:
    """Context manager: open ``path`` and parse only its header; the size checks happen here, before decoding.

    Yields an opened, not yet loaded, image; the file is closed on exit. Raises ImageReadError.
    """
    path_str = os.fsdecode(path)
    try:
        st = os.stat(path_str)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path_str) else "file not found"
        raise ImageReadError(path, reason) from None
    except OSError as err:
        raise ImageReadError(path, f"cannot stat: {err.strerror or _describe(err)}") from None
    if not stat.S_ISREG(st.st_mode):
        # FIFOs and devices would block or never end; folders are not images.
        raise ImageReadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        fh = open(path_str, "rb")
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot open: {err.strerror or _describe(err)}") from None

    with fh:  # Pillow does not close a file object it was handed: this does
        try:
            with warnings.catch_warnings():
                # We enforce our own max_pixels below; Pillow's softer warning would only be noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fh)
        except Image.UnidentifiedImageError:
            raise ImageReadError(path, "not an image (no Pillow decoder recognises the file)") from None
        except Image.DecompressionBombError as err:
            raise ImageReadError(path, _bomb_reason(err, max_pixels)) from None
        except Exception as err:
            raise ImageReadError(path, f"cannot read header: {_describe(err)}") from None

        with im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    path,
                    f"{width}x{height} (WxH) = {width * height:,} pixels, above the pixel limit of {max_pixels:,} "
                    "(max_pixels); refused before decoding",
                )
            if min(width, height) < min_size:
                raise ImageReadError(
                    path,
                    f"too small: {width}x{height} (WxH), shorter side below min_size={min_size} "
                    "(pass a smaller min_size to accept and upscale it)",
                )
            yield im


def _bomb_reason(err: Exception, max_pixels: int | None) -> str:
    """Pillow's DecompressionBombError (raised while parsing the header) as our pixel-limit message."""
    match = _BOMB_PIXELS.search(str(err))
    claimed = int(match.group(1)) if match else None
    claimed_text = f"{claimed:,} pixels" if claimed is not None else "too many pixels"
    if max_pixels is not None and (claimed is None or claimed > max_pixels):
        return (f"header claims {claimed_text}, above the pixel limit of {max_pixels:,} (max_pixels); "
                "refused before decoding (possible decompression bomb)")
    # The caller allowed more than Pillow's global limit does.
    return (f"header claims {claimed_text}, above Pillow's own pixel limit (2 x PIL.Image.MAX_IMAGE_PIXELS = "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}); raise PIL.Image.MAX_IMAGE_PIXELS to read it")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if 1 <= int(value) <= 8 else 1
    except Exception:
        return 1


def probe_image(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> tuple[int, int]:
    """Check an image from its header only (no pixel decoding) and return its displayed size ``(H, W)``.

    Runs every check of :func:`load_image` that does not need the pixels: existence, permissions, regular
    file, empty file, a recognised format, the pixel limit, the minimum side, and a colour mode that can be
    converted to RGB. The size accounts for EXIF orientation. Truncated or corrupt pixel data is *not*
    detected (that needs :func:`load_image`).

    Raises:
        ImageReadError: with the reason.
    """
    with _open_header(path, max_pixels, min_size) as im:
        if not _mode_supported(im.mode):
            raise ImageReadError(path, f"unsupported colour mode {im.mode!r}")
        width, height = im.size
        if _orientation(im) in (5, 6, 7, 8):
            width, height = height, width
    return height, width


def _mode_supported(mode: str) -> bool:
    return mode in ("1", "L", "P", "RGB", "RGBA", "RGBa", "RGBX", "LA", "La", "PA", "CMYK", "YCbCr", "I", "F") or (
        mode.startswith("I;16")
    )


def _high_depth_to_uint8(im: Image.Image) -> np.ndarray:
    """A single-band 16/32-bit integer or float image -> ``uint8`` array ``[H, W]``, scaled, never clipped.

    * ``I;16*`` (unsigned 16-bit): ``round(v * 255 / 65535)``, so 65535 -> 255 and 257*k -> k.
    * ``I`` (32-bit signed, e.g. 16-bit PNG/PGM in some Pillow versions, 32-bit TIFF): values within
      ``[0, 65535]`` are taken as 16-bit as above; anything else is min-max normalised per image.
    * ``F`` (float): NaN/inf -> 0; values within ``[0, 1]`` are multiplied by 255, values within ``[0, 255]``
      are kept, anything else is min-max normalised per image.
    """
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"expected one band, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        values = np.where(np.isfinite(arr), arr, 0.0).astype(np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            values = values * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)

    values = arr.astype(np.int64)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if arr.dtype.kind == "u":
        full_scale = (1 << (8 * arr.dtype.itemsize)) - 1
    elif lo >= 0 and hi <= 65535:
        full_scale = 65535
    else:
        if hi == lo:
            return np.zeros(arr.shape, np.uint8)
        return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    # Integer round-half-up of v * 255 / full_scale.
    return ((values * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def _to_rgb(im: Image.Image, background: Color) -> Image.Image:
    """Any loaded Pillow image -> 8-bit RGB. Transparency is composited onto ``background``."""
    mode = im.mode
    if mode == "I" or mode == "F" or mode.startswith("I;"):
        return Image.fromarray(_high_depth_to_uint8(im)).convert("RGB")
    has_alpha = getattr(im, "has_transparency_data", None)
    transparent = has_alpha if has_alpha is not None else (
        mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    )
    if transparent:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "RGB":
        return im
    return im.convert("RGB")


def _apply_policy(
    img: Image.Image,
    path: PathLike,
    target: tuple[int, int] | None,
    policy: str,
    pad_color: Color,
    resample: int,
) -> Image.Image:
    """Bring an RGB image to ``target = (H, W)`` by ``policy`` (see :func:`load_image`)."""
    if target is None:
        return img
    out_h, out_w = target
    width, height = img.size
    if (width, height) == (out_w, out_h):
        return img
    if policy == "none":
        raise ImageReadError(
            path, f"is {height}x{width} (HxW) but {out_h}x{out_w} was requested with policy='none'"
        )
    if policy == "resize":
        return img.resize((out_w, out_h), resample, reducing_gap=_REDUCING_GAP)
    if policy == "center_crop":
        # Largest centred box with the output's aspect ratio (a square for square outputs), then resize.
        if width * out_h > height * out_w:  # too wide
            crop_w = height * out_w / out_h
            box = ((width - crop_w) / 2, 0.0, (width + crop_w) / 2, float(height))
        else:  # too tall (or exact aspect)
            crop_h = width * out_h / out_w
            box = (0.0, (height - crop_h) / 2, float(width), (height + crop_h) / 2)
        return img.resize((out_w, out_h), resample, box=box, reducing_gap=_REDUCING_GAP)
    if policy == "pad":
        scale = min(out_w / width, out_h / height)
        new_w = min(out_w, max(1, round(width * scale)))
        new_h = min(out_h, max(1, round(height * scale)))
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample, reducing_gap=_REDUCING_GAP)
        canvas = Image.new("RGB", (out_w, out_h), tuple(pad_color))
        canvas.paste(img, ((out_w - new_w) // 2, (out_h - new_h) // 2))
        return canvas
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def load_image(
    path: PathLike,
    size: int | Sequence[int] | None = None,
    policy: str = "center_crop",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
    background: Color = (255, 255, 255),
    pad_color: Color = (0, 0, 0),
    resample: int = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Read one image file as a fully loaded 8-bit RGB ``PIL.Image`` (the file is closed on return).

    Args:
        path: the file (``str``, ``bytes`` or path-like; non-UTF-8 names are fine).
        size: output size, an ``int`` for square or ``(H, W)`` (e.g. ``(192, 256)``); ``None`` keeps the image's
            own size whatever the policy.
        policy: how to reach ``size`` when the image differs from it:
            ``'resize'`` squash to ``size`` (aspect ratio not kept);
            ``'center_crop'`` crop the largest centred region with the aspect ratio of ``size`` (a square for a
            square size), then resize;
            ``'pad'`` resize to fit inside ``size`` keeping the aspect ratio, then letterbox with ``pad_color``;
            ``'none'`` no resampling: an image whose size differs is refused with ImageReadError.
        max_pixels: refuse images with more pixels than this, read from the header *before* decoding
            (``None`` disables our check; Pillow still refuses above ``2 * PIL.Image.MAX_IMAGE_PIXELS``).
        min_size: refuse images whose shorter side is below this (``1`` accepts all; they are then upscaled by
            the policy like any other image).
        background: RGB colour that transparent pixels (alpha channels, palette or colour-key transparency)
            are composited onto. Default white, as most viewers show transparency.
        pad_color: RGB colour of the letterbox bars for ``policy='pad'``.
        resample: Pillow resampling filter; LANCZOS by default (as NVIDIA's dataset_tool).

    Returns:
        ``PIL.Image`` in mode ``'RGB'``, of size ``size`` (``img.size == (W, H)``) when ``size`` is given.

    Conversion per input kind: EXIF orientation applied first (orientation 6 -> rotated 90 degrees clockwise);
    ``1``/``L`` -> grey replicated to RGB; ``P`` -> its palette colours; ``LA``/``RGBA``/``PA`` and any palette or
    colour-key transparency -> composited onto ``background``; ``CMYK``/``YCbCr`` -> Pillow's conversion (ICC
    profiles are not applied); 16-bit and float -> see ``_high_depth_to_uint8`` (scaled, never clipped).
    16-bit RGB PNGs are reduced to 8 bits by Pillow itself (high byte). Multi-frame files give their first frame.

    Raises:
        ImageReadError: the file cannot be used; ``.reason`` says why (not found, broken symlink, permission
            denied, not a regular file, empty file, not an image, header bomb / above ``max_pixels``, too small,
            truncated or corrupt data, unsupported colour mode, size mismatch with ``policy='none'``).
        ValueError: bad ``size`` or ``policy`` (a caller's mistake, not the file's).
    """
    target = _normalize_size(size)
    _check_policy(policy)
    with _open_header(path, max_pixels, min_size) as im:
        if not _mode_supported(im.mode):
            raise ImageReadError(path, f"unsupported colour mode {im.mode!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except Image.DecompressionBombError:
            raise ImageReadError(path, "a frame is above Pillow's decompression-bomb limit") from None
        except MemoryError:
            raise ImageReadError(path, "out of memory while decoding") from None
        except Exception as err:
            reason = _describe(err)
            if "truncated" in reason and not ImageFile.LOAD_TRUNCATED_IMAGES:
                reason = f"truncated file ({reason})"
            raise ImageReadError(path, f"cannot decode: {reason}") from None
        try:
            oriented = ImageOps.exif_transpose(im) if _orientation(im) != 1 else im
        except Exception as err:  # malformed EXIF must not lose the image
            logger.debug("%s: EXIF orientation ignored (%s)", display_path(path), _describe(err))
            oriented = im
        try:
            rgb = _to_rgb(oriented, background)
        except Exception as err:
            raise ImageReadError(path, f"cannot convert {im.mode!r} to RGB: {_describe(err)}") from None
        if rgb is im:
            rgb = im.copy()  # detach from the file before it is closed
    return _apply_policy(rgb, path, target, policy, pad_color, resample)


def fit_image(
    img: Image.Image,
    size: int | Sequence[int],
    policy: str = "center_crop",
    *,
    pad_color: Color = (0, 0, 0),
    resample: int = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Bring an RGB ``PIL.Image`` already in memory to ``size`` (``int`` or ``(H, W)``) by ``policy``, exactly as
    :func:`load_image` does after reading (same policies, ``pad_color`` and ``resample``); e.g. to read a file once
    and use it at two sizes. Raises ValueError for a bad ``size`` or ``policy``, and ImageReadError for a size
    mismatch with ``policy='none'``."""
    target = _normalize_size(size)
    _check_policy(policy)
    return _apply_policy(img, "<image in memory>", target, policy, pad_color, resample)


# --------------------------------------------------------------------------------------------------------------
# Tensors and saving


def to_tensor(img: Image.Image) -> torch.Tensor:
    """``PIL.Image`` (any mode; converted to RGB) -> ``float32`` tensor ``[3, H, W]`` in ``[-1, 1]``.

    ``0 -> -1`` and ``255 -> 1`` (``x / 127.5 - 1``); :func:`from_tensor` inverts it exactly for 8-bit images.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy, [H, W, 3]
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


def from_tensor(t: torch.Tensor) -> Image.Image:
    """Float tensor ``[3, H, W]`` or ``[1, H, W]`` (optionally with a batch dimension of 1) in ``[-1, 1]`` -> RGB PIL.

    Values are clamped to ``[-1, 1]`` and rounded to the nearest 8-bit level; NaN becomes mid-grey (128).
    Works on any device and dtype, with or without grad.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"expected a floating-point tensor in [-1, 1], got dtype {t.dtype}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected shape [3, H, W], [1, H, W] or [1, 3, H, W], got {tuple(t.shape)}")
    t = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0)
    arr = ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy())


def save_image(
    image: torch.Tensor | Image.Image,
    path: PathLike,
    *,
    format: str | None = None,
    fsync: bool = False,
    **save_kwargs: Any,
) -> Path:
    """Write an image atomically: to a hidden temporary file in the same folder, then ``os.replace``.

    A reader never sees a half-written file, and a crash leaves the previous file (if any) intact.

    Args:
        image: a tensor accepted by :func:`from_tensor` (``[3, H, W]`` in ``[-1, 1]``) or a ``PIL.Image``.
        path: destination; its parent folders are created. The format comes from the extension unless
            ``format`` is given.
        fsync: also flush the data to disk before the rename (slower; for crash durability).
        **save_kwargs: passed to ``PIL.Image.save``; JPEG defaults to ``quality=95``.

    Returns:
        ``Path(path)``.
    """
    img = from_tensor(image) if isinstance(image, torch.Tensor) else image
    dest = Path(os.fsdecode(path))
    if format is None:
        Image.init()
        format = Image.registered_extensions().get(dest.suffix.lower())
        if format is None:
            raise ValueError(f"cannot tell the image format from the name {display_path(dest)}; pass format=")
    if format.upper() == "JPEG":
        save_kwargs.setdefault("quality", 95)
        if img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
    with atomic_write(dest, fsync=fsync) as fh:
        img.save(fh, format=format, **save_kwargs)
    return dest


# --------------------------------------------------------------------------------------------------------------
# Dataset


def skip_bad_collate(batch: list[Any]) -> Any:
    """A DataLoader ``collate_fn`` that drops ``None`` items (from ``on_error='none'``), then default-collates.

    Returns ``None`` when every item of the batch was bad; the loop should then ``continue``.
    """
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


class ImageFolderDataset(torch.utils.data.Dataset):
    """The images of a folder (recursive) as tensors, robust to bad files.

    Args:
        root: a folder, a single image file, or a sequence of image paths (used as given, in that order).
        size: output size, ``int`` or ``(H, W)``; ``None`` keeps each image's size (batching then needs equal sizes).
        policy: ``'resize'`` | ``'center_crop'`` | ``'pad'`` | ``'none'``; see :func:`load_image`.
        transform: called on the RGB ``PIL.Image`` (already at ``size``); its result is the item's first element.
            Default :func:`to_tensor`: ``float32 [3, H, W]`` in ``[-1, 1]``.
        return_path: items become ``(image, index, path_str)`` instead of ``(image, index)``.
        on_error: what ``__getitem__`` does with a bad file (always logged as a warning and recorded first):
            ``'substitute'`` (default) returns the next readable file (wrapping around), so a DataLoader never
            dies; ``'none'`` returns ``None`` (use :func:`skip_bad_collate`); ``'raise'`` raises ImageReadError.
        error_log: optional path of a text file (JSON lines) to which every bad file is appended. Unlike
            ``bad_files`` in memory, it is shared by DataLoader worker processes; :attr:`bad_files` reads it back.
        max_pixels, min_size, background, pad_color, resample: see :func:`load_image`.
        recursive, include_hidden: see :func:`list_images`.

    Items: ``(image, index)`` where ``index`` is the index of the file actually returned, i.e. the substitute's
    index when the requested file was bad, so ``dataset.paths[index]`` always names the pixels.

    With ``num_workers > 0`` each worker process works on its own copy of the dataset: bad files found there are
    logged by the worker but cannot update the parent's ``bad_files`` (pass ``error_log`` to collect them), and
    each worker rediscovers them. To know all bad files before a run, call :meth:`verify` first: it drops the
    bad files from ``paths`` so every worker sees a clean list.

    Raises (at construction):
        FileNotFoundError / ValueError: missing folder, or no image found (the message names the folder).
    """

    def __init__(
        self,
        root: PathLike | Sequence[PathLike],
        size: int | Sequence[int] | None = None,
        policy: str = "center_crop",
        transform: Callable[[Image.Image], Any] | None = None,
        return_path: bool = False,
        *,
        on_error: str = "substitute",
        error_log: PathLike | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        min_size: int = DEFAULT_MIN_SIZE,
        background: Color = (255, 255, 255),
        pad_color: Color = (0, 0, 0),
        resample: int = Image.Resampling.LANCZOS,
        recursive: bool = True,
        include_hidden: bool = False,
    ):
        _check_policy(policy)
        if on_error not in ("substitute", "none", "raise"):
            raise ValueError(f"on_error must be 'substitute', 'none' or 'raise', got {on_error!r}")
        if isinstance(root, (list, tuple)):
            self.root = None
            self.paths = [Path(os.fsdecode(p)) for p in root]
            if not self.paths:
                raise ValueError("ImageFolderDataset got an empty list of paths")
        else:
            self.root = Path(os.fsdecode(root))
            self.paths = list_images(root, recursive, include_hidden=include_hidden)
        self.size = _normalize_size(size)
        self.policy = policy
        self.transform = transform
        self.return_path = return_path
        self.on_error = on_error
        self.error_log = Path(os.fsdecode(error_log)) if error_log is not None else None
        self.load_kwargs = dict(max_pixels=max_pixels, min_size=min_size, background=tuple(background),
                                pad_color=tuple(pad_color), resample=resample)
        self._bad: list[tuple[Path, str]] = []
        self._bad_indices: set[int] = set()

    # -- reading ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        """The RGB image at ``index`` (size policy applied, no transform); raises ImageReadError."""
        return load_image(self.paths[index], self.size, self.policy, **self.load_kwargs)

    def __getitem__(self, index: int):
        count = len(self.paths)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} images")
        index %= count
        for step in range(count):
            i = (index + step) % count
            if i in self._bad_indices:
                if self.on_error == "substitute":
                    continue
                if self.on_error == "none":
                    return None
            try:
                img = self.load(i)
            except ImageReadError as err:
                self._record_bad(i, err.reason)
                if self.on_error == "raise":
                    raise
                if self.on_error == "none":
                    return None
                continue
            image = self.transform(img) if self.transform is not None else to_tensor(img)
            return (image, i, str(self.paths[i])) if self.return_path else (image, i)
        raise RuntimeError(f"no readable image left in {self._where()} ({count} files, all unreadable)")

    # -- bad-file bookkeeping -----------------------------------------------------------------------------------

    def _where(self) -> str:
        return display_path(self.root) if self.root is not None else "the given list of paths"

    def _record_bad(self, index: int, reason: str) -> None:
        path = self.paths[index]
        self._bad_indices.add(index)
        self._bad.append((path, reason))
        logger.warning("skipping unreadable image %s: %s", display_path(path), reason)
        if self.error_log is not None:
            # One small O_APPEND write per line: safe to share between worker processes.
            line = json.dumps({"path": str(path), "reason": reason}, ensure_ascii=True) + "\n"
            try:
                self.error_log.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.error_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
                try:
                    os.write(fd, line.encode("ascii"))
                finally:
                    os.close(fd)
            except OSError as err:
                logger.warning("cannot append to error log %s: %s", display_path(self.error_log), _describe(err))

    def _read_error_log(self) -> Iterable[tuple[Path, str]]:
        if self.error_log is None or not self.error_log.exists():
            return []
        entries = []
        with open(self.error_log, "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                    entries.append((Path(record["path"]), str(record["reason"])))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash
        return entries

    @property
    def bad_files(self) -> list[tuple[Path, str]]:
        """``(path, reason)`` for each bad file found so far: in this process, by :meth:`verify`, and, when
        ``error_log`` is set, by any process (e.g. DataLoader workers). Each path is listed once."""
        seen: set[str] = set()
        merged = []
        for path, reason in list(self._bad) + list(self._read_error_log()):
            key = str(path)
            if key not in seen:
                seen.add(key)
                merged.append((path, reason))
        return merged

    def summary(self, max_listed: int = 50) -> str:
        """A printable report: how many images, and each bad file by name with its reason."""
        bad = self.bad_files
        lines = [f"{self._where()}: {len(self.paths)} image file(s) listed, {len(bad)} unreadable file(s) skipped"]
        for path, reason in bad[:max_listed]:
            lines.append(f"  - {display_path(path)}: {reason}")
        if len(bad) > max_listed:
            lines.append(f"  ... and {len(bad) - max_listed} more")
        return "\n".join(lines)

    def verify(self, progress: bool = True, decode: bool = False, workers: int = 1) -> str:
        """Check every file up front, drop the bad ones from ``paths``, and return :meth:`summary`.

        Args:
            progress: show a tqdm progress bar (if tqdm is installed).
            decode: ``False`` checks headers only (:func:`probe_image`: fast; catches missing, unreadable, empty,
                non-image, bomb, too-small, unsupported-mode and, for ``policy='none'``, wrong-size files, but not
                truncated pixel data); ``True`` decodes every image fully with :func:`load_image` (catches all).
            workers: threads to use (Pillow decodes without holding the GIL, so this speeds up ``decode=True``).

        Call it before building a DataLoader: it renumbers the dataset. Raises ValueError when nothing is left.
        """
        kwargs = self.load_kwargs

        def check(path: Path) -> str | None:
            try:
                if decode:
                    load_image(path, self.size, self.policy, **kwargs)
                else:
                    height, width = probe_image(path, max_pixels=kwargs["max_pixels"], min_size=kwargs["min_size"])
                    if self.policy == "none" and self.size is not None and (height, width) != self.size:
                        raise ImageReadError(path, f"is {height}x{width} (HxW) but {self.size[0]}x{self.size[1]} "
                                                   "was requested with policy='none'")
            except ImageReadError as err:
                return err.reason
            return None

        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(workers)
            results: Iterable[str | None] = pool.map(check, self.paths)
        else:
            pool = None
            results = map(check, self.paths)
        if progress:
            try:
                from tqdm.auto import tqdm

                results = tqdm(results, total=len(self.paths), desc="verifying images", unit="img")
            except ImportError:
                pass
        try:
            reasons = list(results)
        finally:
            if pool is not None:
                pool.shutdown()

        already = {str(p) for p, _ in self._bad}
        good = []
        for index, (path, reason) in enumerate(zip(self.paths, reasons)):
            if reason is None:
                good.append(path)
            elif str(path) not in already:
                self._record_bad(index, reason)
        self.paths = good
        self._bad_indices = set()
        report = self.summary()
        if not self.paths:
            raise ValueError(f"no readable image left after verification\n{report}")
        return report
