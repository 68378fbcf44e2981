"""SynthFaces: the project's procedural face domain, with ground-truth identity and attributes.

No real face data or pretrained network can be fetched where this project runs, so it draws its own faces. An image
is a pure function of three things:

* an *identity* (:func:`sample_identity`): everything fixed per person -- face and jaw shape, skin tone, eye spacing,
  size and iris colour, nose, mouth and lips, brows, ears, hair style (one of :data:`HAIR_STYLES`) and colour, facial
  hair, glasses frame, a mole. It is derived deterministically from ``(seed, person_id)``;
* *attributes* (:data:`ATTRIBUTES`, :func:`sample_attributes`): what varies per image and is stored as labels --
  smile, yaw, age, glasses, eyes open, light direction, background colour and gradient;
* a *detail seed*: fine random detail (skin texture, freckles, hair strands, background noise, clothing colour) that
  a StyleGAN2 W code cannot reproduce, so reconstructions from W, W+ and spatial features really differ.

Faces are framed like FFHQ-aligned crops: eye midpoint at x = 0.5 W, eyes at y = 0.47 H, mouth at y = 0.73 H, face
about 0.5 W wide. When the head turns (yaw) the crop stays aligned on the eyes, as FFHQ's alignment does, so the
features stay centred and the skull, ears and jaw move instead.

Rendering is vectorised numpy on a supersampled coordinate grid (3x at 64 px, 2x at 128 and 256 px) with soft
signed-distance shapes and an area (box) downsample; broad shading, lighting and fine detail are then applied at the
output resolution. Coordinates inside are normalised: x, y in [-1, 1], x to the right and y *down*, (0, 0) the
image centre.

The on-the-fly dataset is :class:`SynthFaces`; :func:`write_dataset` / :func:`read_labels` store and load a folder.
"""
from __future__ import annotations

import copy
import csv
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:  # torch is only needed for the Dataset; rendering and writing work without it
    import torch
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    torch = None
    _TorchDataset = object

__all__ = [
    "Attribute", "ATTRIBUTES", "ATTRIBUTE_NAMES", "HAIR_STYLES", "FACIAL_HAIR", "VERSION", "TEST_PERSON_OFFSET",
    "DEFAULT_PERSONS", "sample_identity", "sample_attributes", "neutral_attributes", "render_face",
    "attributes_to_vector", "vector_to_attributes", "item_labels", "person_ids_for_split", "SynthFaces",
    "write_dataset", "RENDER_CHUNK", "render_chunks", "read_labels", "read_meta", "SynthFacesFolder", "sample_grid",
    "attribute_sweep_grid", "identity_grid",
]

VERSION = 1  # bump whenever the renderer or the samplers change what a (seed, index) produces

# ----------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """One per-image attribute: its name, range ``[low, high]``, kind ('continuous' or 'binary') and meaning."""

    name: str
    low: float
    high: float
    kind: str
    doc: str


#: Per-image attributes in label-vector order. Binary ones take exactly ``low`` or ``high``.
ATTRIBUTES: Tuple[Attribute, ...] = (
    Attribute("smile", -1.0, 1.0, "continuous",
              "-1 frown (corners down), 0 neutral closed mouth, >0.3 mouth opens and shows teeth, 1 broad grin "
              "(corners up, cheeks raised, eyes narrowed a little)"),
    Attribute("yaw", -1.0, 1.0, "continuous",
              "head turn, +-1 = +-30 degrees; +1 turns the face towards image right: features and nose shift "
              "right, the right half of the face is foreshortened, the left ear shows more"),
    Attribute("age", 0.0, 1.0, "continuous",
              "0 young adult, 1 old: grey hair, forehead/eye/mouth wrinkles, eye bags, sagging jaw and mouth "
              "corners, paler skin, receding hairline for persons prone to it"),
    Attribute("glasses", 0.0, 1.0, "binary", "0 none, 1 glasses (frame shape and colour belong to the identity)"),
    Attribute("eyes_open", 0.0, 1.0, "continuous", "0 closed (lash line only), 1 fully open"),
    Attribute("light_x", -1.0, 1.0, "continuous", "light direction, horizontal: -1 from image left, +1 from right"),
    Attribute("light_y", -1.0, 1.0, "continuous", "light direction, vertical: -1 from below, +1 from above"),
    Attribute("bg_r", 0.0, 1.0, "continuous", "background base colour, red (linear 0..1 of the 8-bit value)"),
    Attribute("bg_g", 0.0, 1.0, "continuous", "background base colour, green"),
    Attribute("bg_b", 0.0, 1.0, "continuous", "background base colour, blue"),
    Attribute("bg_gradient", -1.0, 1.0, "continuous",
              "vertical background gradient: +1 top brighter / bottom darker, -1 the reverse, 0 flat"),
)
ATTRIBUTE_NAMES: Tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)

HAIR_STYLES: Tuple[str, ...] = ("short", "long", "bald", "curly", "bun", "fringe", "buzz")
FACIAL_HAIR: Tuple[str, ...] = ("none", "stubble", "moustache", "beard")

#: Test persons are numbered from here, so train ids ``0..P-1`` and test ids never meet.
TEST_PERSON_OFFSET = 1_000_000
DEFAULT_PERSONS = {"train": 5000, "test": 500}
_SPLIT_CODES = {"train": 0, "test": 1}


def attributes_to_vector(attributes: Dict[str, float]) -> np.ndarray:
    """Attribute dict -> float32 vector ``[len(ATTRIBUTES)]`` in :data:`ATTRIBUTES` order."""
    return np.array([attributes[n] for n in ATTRIBUTE_NAMES], dtype=np.float32)


def vector_to_attributes(vector: Sequence[float]) -> Dict[str, float]:
    """Inverse of :func:`attributes_to_vector` (values clipped to each attribute's range, binaries rounded)."""
    if len(vector) != len(ATTRIBUTES):
        raise ValueError(f"expected {len(ATTRIBUTES)} values, got {len(vector)}")
    out = {}
    for a, v in zip(ATTRIBUTES, vector):
        v = min(max(float(v), a.low), a.high)
        out[a.name] = float(round(v)) if a.kind == "binary" else v
    return out


# ----------------------------------------------------------------------------------------------------------------
# Sampling identities and attributes
# ----------------------------------------------------------------------------------------------------------------

_SKIN_TONES = np.array([  # light -> dark, linear 0..1 sRGB-ish
    (0.97, 0.83, 0.72), (0.91, 0.72, 0.58), (0.80, 0.59, 0.43), (0.64, 0.44, 0.29), (0.45, 0.30, 0.19),
    (0.30, 0.19, 0.12)])
_HAIR_COLOURS = {
    "black": (0.07, 0.06, 0.06), "dark_brown": (0.20, 0.12, 0.07), "brown": (0.38, 0.23, 0.12),
    "light_brown": (0.58, 0.42, 0.26), "blond": (0.88, 0.74, 0.45), "platinum": (0.93, 0.90, 0.78),
    "ginger": (0.72, 0.32, 0.12), "auburn": (0.46, 0.15, 0.08), "blue": (0.18, 0.35, 0.75), "pink": (0.90, 0.45, 0.65),
}
_IRIS_COLOURS = {
    "dark_brown": (0.17, 0.09, 0.05), "brown": (0.36, 0.20, 0.09), "hazel": (0.48, 0.38, 0.16),
    "green": (0.29, 0.48, 0.26), "blue": (0.28, 0.48, 0.76), "grey": (0.50, 0.56, 0.62),
}
_FRAME_COLOURS = [(0.05, 0.05, 0.05), (0.30, 0.18, 0.08), (0.62, 0.48, 0.18), (0.62, 0.10, 0.10), (0.12, 0.18, 0.45),
                  (0.35, 0.35, 0.38)]


def _choice(rng: np.random.Generator, options: Sequence, p: Sequence[float]):
    p = np.asarray(p, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def sample_identity(person_id: int, seed: int = 0) -> dict:
    """Identity parameters of one person, a pure function of ``(seed, person_id)``.

    Returns a JSON-serialisable dict of floats, strings and RGB triples (linear 0..1): face shape, skin tone, eyes,
    brows, nose, mouth, ears, hair style and colour, facial hair, glasses frame, mole. Lengths are in normalised
    image units (the image spans [-1, 1]).
    """
    if person_id < 0 or seed < 0:
        raise ValueError("person_id and seed must be non-negative")
    rng = np.random.default_rng([int(seed), int(person_id), 0x5F1D])
    u = rng.uniform
    tone = u(0.0, 1.0)
    pos = tone * (len(_SKIN_TONES) - 1)
    i0 = min(int(pos), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[i0] + (pos - i0) * (_SKIN_TONES[i0 + 1] - _SKIN_TONES[i0])
    skin = np.clip(skin * u(0.96, 1.04) + rng.normal(0, 0.015, 3) + np.array([0.01, 0.0, -0.01]) * u(-2, 2), 0, 1)

    # hair: darker skin makes dark hair likelier; a few dyed colours
    names = list(_HAIR_COLOURS)
    light = 1.0 - tone
    p_hair = [1.0 + 2 * tone, 1.2 + tone, 1.2, 0.9 * light, 0.9 * light, 0.25 * light, 0.5 * light, 0.5, 0.08, 0.08]
    hair_name = _choice(rng, names, p_hair)
    hair = np.clip(np.array(_HAIR_COLOURS[hair_name]) * u(0.85, 1.15) + rng.normal(0, 0.02, 3), 0, 1)
    style = _choice(rng, HAIR_STYLES, [0.24, 0.22, 0.08, 0.11, 0.1, 0.13, 0.12])
    iris_name = _choice(rng, list(_IRIS_COLOURS), [3 + 3 * tone, 3, 1.2 * light + 0.2, light, 2 * light, 0.6 * light])
    facial_hair = _choice(rng, FACIAL_HAIR, [0.72, 0.1, 0.07, 0.11])
    if style in ("long", "bun", "fringe"):
        facial_hair = "none" if rng.uniform() < 0.85 else facial_hair

    identity = {
        "person_id": int(person_id),
        "seed": int(seed),
        # face
        "skin": [float(c) for c in skin],
        "skin_tone": float(tone),
        "face_width": u(0.43, 0.53),          # half-width at the cheekbones
        "chin_y": u(0.70, 0.79),              # bottom of the chin
        "chin_width": u(0.06, 0.17),          # half-width of the flat part of the chin
        "jaw_power": u(1.6, 3.0),             # 1.6 = V-shaped jaw, 3 = square jaw
        "cheek_y": u(0.0, 0.12),              # where the jaw starts to narrow
        "blush": u(0.0, 0.35),
        # eyes and brows
        "eye_spacing": u(0.215, 0.265),        # half the distance between the eye centres
        "eye_width": u(0.08, 0.1),             # half-width of an eye opening
        "eye_height": u(0.042, 0.056),         # upper-lid height above the eye line
        "eye_tilt": u(-0.012, 0.014),          # outer corner up (+) or down (-)
        "eye_dy": u(-0.012, 0.012),
        "iris": [float(c) for c in np.clip(np.array(_IRIS_COLOURS[iris_name]) + rng.normal(0, 0.03, 3), 0, 1)],
        "iris_name": iris_name,
        "brow_gap": u(0.095, 0.135),
        "brow_thickness": u(0.016, 0.038),
        "brow_arch": u(0.005, 0.04),
        "brow_tilt": u(-0.02, 0.025),          # outer end up (+) or down (-)
        "brow_darkness": u(0.55, 0.95),
        # nose, mouth, ears
        "nose_y": u(0.20, 0.28),               # nose tip
        "nose_width": u(0.055, 0.09),
        "nose_bridge": u(0.3, 1.0),            # how strongly the bridge is drawn
        "mouth_y": u(0.43, 0.49),
        "mouth_width": u(0.125, 0.18),
        "lip_upper": u(0.015, 0.03),
        "lip_lower": u(0.02, 0.04),
        "lip_colour": [float(c) for c in np.clip(skin * np.array([0.95, 0.62, 0.62]) + np.array([0.08, 0.0, 0.02])
                                                 + rng.normal(0, 0.02, 3) - u(0, 0.1), 0, 1)],
        "ear_size": u(0.85, 1.2),
        "ear_y": u(0.02, 0.09),
        # hair
        "hair_style": style,
        "hair_colour": [float(c) for c in hair],
        "hair_colour_name": hair_name,
        "hair_volume": u(0.05, 0.12) if style != "curly" else u(0.16, 0.26),
        "hair_top": u(-0.95, -0.85),
        "hairline": u(-0.56, -0.40),
        "hairline_curve": u(0.08, 0.28),
        "hair_part": u(-0.35, 0.35),
        "hair_length": u(0.55, 1.05),          # bottom of long hair
        "fringe_y": u(-0.33, -0.2),
        "bun_size": u(0.12, 0.17),
        "recedes": bool(rng.uniform() < 0.35),  # hairline recedes with age
        "curl_freq": float(rng.integers(9, 17)),
        "curl_phase": u(0, 2 * math.pi),
        "facial_hair": facial_hair,
        # accessories and marks
        "glasses_shape": _choice(rng, ("round", "rect", "wide"), [1, 1, 1]),
        "glasses_colour": [float(c) for c in _FRAME_COLOURS[int(rng.integers(len(_FRAME_COLOURS)))]],
        "glasses_thickness": u(0.018, 0.03),
        "freckles": float(max(0.0, u(-1.5, 1.0))) * max(0.0, 2.0 * light - 1.0),
        "mole": [u(-0.35, 0.35), u(-0.05, 0.55)] if rng.uniform() < 0.3 else None,
    }
    return {k: (float(v) if isinstance(v, (np.floating, float)) and not isinstance(v, bool) else v)
            for k, v in identity.items()}


def sample_attributes(rng: np.random.Generator) -> Dict[str, float]:
    """Draw one image's attributes (see :data:`ATTRIBUTES`) from ``rng``; returns ``{name: float}``.

    Distributions: smile uniform [-1, 1] (with more mass on positive); yaw normal(0, 0.45) truncated to [-1, 1];
    age uniform [0, 1]; glasses 1 with p = 0.3; eyes_open 1 - beta-ish (a quarter of the images anywhere in
    [0, 1], the rest in [0.7, 1]); light_x, light_y uniform [-1, 1]; background a random muted colour with a
    uniform gradient in [-1, 1].
    """
    smile = rng.uniform(-1.0, 1.0) if rng.uniform() < 0.6 else rng.uniform(0.0, 1.0)
    yaw = rng.normal(0.0, 0.45)
    while abs(yaw) > 1.0:  # truncated, not clipped: no pile-up at the ends
        yaw = rng.normal(0.0, 0.45)
    age = rng.uniform(0.0, 1.0)
    glasses = 1.0 if rng.uniform() < 0.3 else 0.0
    eyes_open = rng.uniform(0.0, 1.0) if rng.uniform() < 0.25 else rng.uniform(0.7, 1.0)
    light_x = rng.uniform(-1.0, 1.0)
    light_y = rng.uniform(-1.0, 1.0)
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.05, 0.6), rng.uniform(0.25, 0.95)
    bg = _hsv_to_rgb(hue, sat, val)
    grad = rng.uniform(-1.0, 1.0)
    return {"smile": float(smile), "yaw": float(yaw), "age": float(age), "glasses": glasses,
            "eyes_open": float(eyes_open), "light_x": float(light_x), "light_y": float(light_y),
            "bg_r": float(bg[0]), "bg_g": float(bg[1]), "bg_b": float(bg[2]), "bg_gradient": float(grad)}


def neutral_attributes(**overrides: float) -> Dict[str, float]:
    """A frontal, neutral, evenly lit face on a grey background; keyword arguments override single attributes."""
    attrs = {"smile": 0.0, "yaw": 0.0, "age": 0.2, "glasses": 0.0, "eyes_open": 1.0, "light_x": 0.0,
             "light_y": 0.5, "bg_r": 0.6, "bg_g": 0.62, "bg_b": 0.66, "bg_gradient": 0.0}
    unknown = set(overrides) - set(attrs)
    if unknown:
        raise KeyError(f"unknown attributes {sorted(unknown)}")
    attrs.update({k: float(v) for k, v in overrides.items()})
    return attrs


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# ----------------------------------------------------------------------------------------------------------------
# Drawing primitives: a supersampled canvas with windowed soft shapes
# ----------------------------------------------------------------------------------------------------------------

_SKIN, _HAIR, _OTHER = 0, 1, 2  # materials: the masks they leave drive lighting and the fine detail


class _Canvas:
    """An ``n x n`` float RGB image (channels first, which makes windowed blending fast) plus material masks.

    Shapes are drawn in windows: ``window`` returns the pixel slices of a normalised box and its coordinates as a
    row ``x [1, w]`` and a column ``y [h, 1]``, so most arithmetic stays 1-D until shapes combine.
    """

    def __init__(self, n: int):
        self.n = n
        self.px = 2.0 / n  # one internal pixel in normalised units
        self.coords = ((np.arange(n, dtype=np.float32) + 0.5) * self.px - 1.0).astype(np.float32)
        self.rgb = np.empty((3, n, n), np.float32)
        # material coverage: skin, hair, and any foreground (what the light shades)
        self.masks = np.zeros((3, n, n), np.float32)
        self.skin = self.masks[0]

    def w(self, blur: float) -> float:
        """An edge ramp of ``blur`` normalised units, never sharper than one internal pixel (anti-aliasing)."""
        return max(self.px, blur)

    def window(self, x0: float, x1: float, y0: float, y1: float):
        """``(slices, x [1, w], y [h, 1])`` covering the normalised box, or None when it misses the image."""
        n, px = self.n, self.px
        i0, i1 = max(0, int((x0 + 1.0) / px)), min(n, int(math.ceil((x1 + 1.0) / px)))
        j0, j1 = max(0, int((y0 + 1.0) / px)), min(n, int(math.ceil((y1 + 1.0) / px)))
        if i1 <= i0 or j1 <= j0:
            return None
        return (slice(j0, j1), slice(i0, i1)), self.coords[None, i0:i1], self.coords[j0:j1, None]

    def paint(self, sl, alpha: np.ndarray, colour, material: Optional[int] = None, on_skin: bool = False) -> None:
        """Alpha-blend ``colour`` ([3], or [3, h, w] per pixel) into window ``sl`` with coverage ``alpha [h, w]``.

        ``material`` (skin, hair, other) also updates the masks; None leaves them (shadows, lines, tints).
        ``on_skin`` limits the paint to where skin already is (shading and lines that belong to the face).
        """
        shape = (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        if alpha.shape != shape:
            alpha = np.broadcast_to(alpha, shape)
        if on_skin:
            alpha = alpha * self.skin[sl]
        r0, r1, c0, c1 = 0, shape[0], 0, shape[1]
        if alpha.size > 4096:  # crop big windows to the rows and columns the shape actually touches
            rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
            if rows.size == 0:
                return
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            alpha = alpha[r0:r1, c0:c1]
            sl = (slice(sl[0].start + r0, sl[0].start + r1), slice(sl[1].start + c0, sl[1].start + c1))
        region = self.rgb[:, sl[0], sl[1]]
        colour = np.asarray(colour, np.float32)
        colour = colour.reshape(3, 1, 1) if colour.ndim == 1 else colour[:, r0:r1, c0:c1]
        t = np.subtract(colour, region)
        t *= alpha
        region += t
        if material is not None:
            masks = self.masks[:, sl[0], sl[1]]
            masks *= 1.0 - alpha
            if material != _OTHER:
                masks[material] += alpha
            masks[2] += alpha


def _cover(sd, width):
    """Soft coverage of a signed distance (negative inside); ``width`` is the ramp, centred on the boundary."""
    t = sd * (-1.0 / width)
    t += 0.5
    return np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)


def _ellipse_sd(x, y, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse (first order, exact on the boundary)."""
    dx, dy = x - cx, y - cy
    gx, gy = dx * (1.0 / (a * a)), dy * (1.0 / (b * b))
    f = dx * gx + dy * gy - 1.0
    return f / (2.0 * np.sqrt(gx * gx + gy * gy) + 1e-4)


def _circle_sd(x, y, cx, cy, r):
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _round_box_sd(x, y, cx, cy, hw, hh, r):
    qx, qy = np.abs(x - cx) - (hw - r), np.abs(y - cy) - (hh - r)
    return np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - r


def _mix(a, b, t):
    a = np.asarray(a, np.float32)
    return a + (np.asarray(b, np.float32) - a) * np.float32(t)


def _paint_ellipse(cv, cx, cy, a, b, colour, material=None, blur=0.0, opacity=1.0, on_skin=False):
    """A soft ellipse; ``blur`` is the edge ramp in normalised units (at least one internal pixel)."""
    if opacity <= 0.0:
        return
    pad = 0.6 * cv.w(blur) + cv.px
    win = cv.window(cx - a - pad, cx + a + pad, cy - b - pad, cy + b + pad)
    if win is None:
        return
    sl, x, y = win
    alpha = _cover(_ellipse_sd(x, y, cx, cy, a, b), cv.w(blur))
    if opacity != 1.0:
        alpha *= opacity
    cv.paint(sl, alpha, colour, material, on_skin)


def _paint_curves(cv, x0, x1, curves, colour, opacity=1.0, material=None, blur=0.0, on_skin=False):
    """Bands around curves ``y = centre(x)``, ``x in [x0, x1]``: ``curves`` is a list of ``(centre, half)``
    callables of ``x [1, w]`` (``half`` may also be a number), painted together as one shape."""
    if opacity <= 0.0 or x1 <= x0:
        return
    win = cv.window(x0, x1, -1.0, 1.0)
    if win is None:
        return
    xs = win[1]
    pad = 0.6 * cv.w(blur) + cv.px
    lo, hi = 1e9, -1e9
    for centre, half in curves:
        yc, ht = centre(xs), np.abs(half(xs) if callable(half) else half)
        lo, hi = min(lo, float(np.min(yc - ht))), max(hi, float(np.max(yc + ht)))
    win = cv.window(x0, x1, lo - pad, hi + pad)
    if win is None:
        return
    sl, x, y = win
    sd = None
    for centre, half in curves:
        yc = centre(x)
        slope = np.empty_like(yc)  # the band's width is measured across the curve, not vertically
        if yc.shape[1] > 1:
            slope[:, 1:] = np.diff(yc, axis=1) * (1.0 / cv.px)
            slope[:, 0] = slope[:, 1]
        else:
            slope[:] = 0.0
        d = (np.abs(y - yc) - (half(x) if callable(half) else half)) / np.sqrt(1.0 + slope * slope)
        sd = d if sd is None else np.minimum(sd, d)
    alpha = _cover(sd, cv.w(blur))
    if opacity != 1.0:
        alpha *= opacity
    cv.paint(sl, alpha, colour, material, on_skin)


def _paint_curve(cv, x0, x1, centre: Callable, half_thickness, colour, opacity=1.0, material=None, blur=0.0,
                 on_skin=False):
    """A band around the curve ``y = centre(x)``, ``x in [x0, x1]``, of half-thickness ``half_thickness(x)``."""
    _paint_curves(cv, x0, x1, [(centre, half_thickness)], colour, opacity, material, blur, on_skin)


def _area_downsample(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k x k`` blocks of the last two axes (the exact pixel-area integral of the supersampled image)."""
    if k == 1:
        return a.copy()
    *lead, h, w = a.shape
    rows = a.reshape(*lead, h // k, k, w)
    acc = rows[..., 0, :].copy()
    for i in range(1, k):
        acc += rows[..., i, :]
    out = acc[..., 0::k].copy()
    for i in range(1, k):
        out += acc[..., i::k]
    out *= 1.0 / (k * k)
    return out


def _smooth_noise(rng: np.random.Generator, k: int, res: int) -> np.ndarray:
    """Smooth noise of unit scale: a ``k x k`` normal grid bilinearly interpolated to ``[res, res]``."""
    grid = rng.standard_normal((k, k), dtype=np.float32)
    t = np.linspace(0, k - 1, res, dtype=np.float32)
    i0 = np.minimum(t.astype(np.int64), k - 2)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


# ----------------------------------------------------------------------------------------------------------------
# The face
# ----------------------------------------------------------------------------------------------------------------


def _default_supersample(res: int) -> int:
    return 3 if res <= 64 else (2 if res <= 256 else 1)


def render_face(identity: dict, attributes: Dict[str, float], res: int = 64, detail_seed: int = 0,
                supersample: Optional[int] = None) -> np.ndarray:
    """Render one face; returns ``uint8 [res, res, 3]``.

    ``identity`` comes from :func:`sample_identity`, ``attributes`` holds every name in :data:`ATTRIBUTE_NAMES`
    (values outside the documented ranges are clipped), and ``detail_seed`` seeds the fine detail (skin texture,
    freckles, hair strands, clothing colour, background noise). The result is a pure function of the arguments.
    ``supersample`` (default 3 at <= 64 px, 2 up to 256 px) is the internal oversampling before the area
    downsample that anti-aliases the image.
    """
    if res < 16:
        raise ValueError("res must be at least 16")
    missing = set(ATTRIBUTE_NAMES) - set(attributes)
    if missing:
        raise KeyError(f"missing attributes {sorted(missing)}")
    attrs = {a.name: min(max(float(attributes[a.name]), a.low), a.high) for a in ATTRIBUTES}
    ss = int(supersample or _default_supersample(res))
    rng = np.random.default_rng([int(detail_seed) & 0xFFFFFFFF, 0xDE7A11])
    cv = _Canvas(res * ss)
    g = _Geometry(identity, attrs)
    hair = _hair_colour(identity, attrs["age"])
    skin = _skin_colour(identity, attrs["age"])
    short_hair = identity["hair_style"] in ("short", "bald", "bun", "buzz")
    turned = abs(g.sin_t) > 0.02

    _draw_background(cv, attrs)
    _draw_body(cv, g, rng)
    hair_sd = _HairShape(cv, g, identity)
    _draw_hair_back(cv, hair_sd, hair)
    _draw_neck(cv, g, skin)
    if short_hair:  # long hair hides the ears; the ear turning away hides behind the head
        _draw_ears(cv, g, skin, "leading" if turned else "both")
    _draw_head_skin(cv, g, skin)
    if short_hair and turned:  # the ear turning towards the camera shows in front of the cheek
        _draw_ears(cv, g, skin, "trailing")
    _draw_face_relief(cv, g, attrs, skin)
    _draw_eyes(cv, g, attrs, skin)
    _draw_brows(cv, g, hair, skin)
    _draw_nose(cv, g, attrs, skin)
    _draw_beard(cv, g, hair, skin)
    _draw_mouth(cv, g, attrs, skin)
    _draw_moustache(cv, g, hair)
    _draw_hair_front(cv, hair_sd, g, hair, skin)
    if attrs["glasses"] >= 0.5:
        _draw_glasses(cv, g)

    # area downsample to the output grid; lighting and fine detail are applied at the output resolution
    img = _area_downsample(cv.rgb, ss).transpose(1, 2, 0)
    masks = _area_downsample(cv.masks, ss)
    img = _light_and_detail(img, masks, g, identity, attrs, rng)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _hair_colour(identity, age):
    grey = np.clip((age - 0.3) / 0.65, 0.0, 1.0) ** 1.2
    return _mix(identity["hair_colour"], (0.8, 0.8, 0.79), 0.92 * grey)


def _skin_colour(identity, age):
    s = np.asarray(identity["skin"], np.float32)
    grey = s.mean()
    return _mix(s, grey + 0.4 * (s - grey), 0.3 * age) * np.float32(1.0 - 0.05 * age)


class _Geometry:
    """Where everything goes after the head turn; all in normalised units.

    Seen from above, the head is an ellipse (half-width ``face_width``, half-depth :attr:`DEPTH`) turning about
    its centre; the features sit on its front, a slightly flatter surface. Each height ``y`` of the face has its own
    cross-section, narrower and pushed forward towards the chin, so the jaw swings with the features while the skull
    stays. Like FFHQ's alignment, the crop then follows the eyes: everything shifts by the turned eye midpoint, so
    the features stay centred and the skull, ears and body move the other way.
    """

    DEPTH = 0.56

    def __init__(self, idt: dict, attrs: Dict[str, float]):
        self.idt = idt
        self.theta = attrs["yaw"] * math.pi / 6.0
        self.sin_t, self.cos_t = math.sin(self.theta), math.cos(self.theta)
        self.turn = self.sin_t / 0.5  # -1..1 at -+30 degrees
        self.age, self.smile = attrs["age"], attrs["smile"]
        self.face_w = idt["face_width"]
        ed = idt["eye_spacing"]
        self.shift = 0.0
        self.shift = 0.5 * (self.proj(-ed) + self.proj(ed))
        self.head_x = -self.shift  # the skull's centre (the turning axis)
        self.eye_y = -0.06 + idt["eye_dy"]
        self.chin_y = idt["chin_y"] + 0.02 * self.age
        self.cheek_y = idt["cheek_y"]
        self.chin_x = self.proj(0.0)
        self.nose_x = self.proj(0.0, 0.09)
        self.nose_y = idt["nose_y"] + 0.015 * self.age
        self.mouth_y = idt["mouth_y"] + 0.012 * self.age

    def proj(self, xf: float, extra_depth: float = 0.0) -> float:
        """Frontal x of a point on the face surface (sticking out ``extra_depth``) -> image x after the turn."""
        u = xf / (1.15 * self.face_w)
        z = self.DEPTH * math.sqrt(max(0.0, 1.0 - u * u)) + extra_depth
        return xf * self.cos_t + z * self.sin_t - self.shift

    def span(self, xf_a: float, xf_b: float, extra_depth: float = 0.0):
        """Image x of two frontal points, sorted."""
        a, b = self.proj(xf_a, extra_depth), self.proj(xf_b, extra_depth)
        return (a, b) if a <= b else (b, a)

    def proj_array(self, xf: np.ndarray) -> np.ndarray:
        """:meth:`proj` for an array of frontal x."""
        u = xf * (1.0 / (1.15 * self.face_w))
        z = self.DEPTH * np.sqrt(np.maximum(1.0 - u * u, 0.0))
        return xf * self.cos_t + z * self.sin_t - self.shift

    def outline(self, half_width):
        """Silhouette centre and half-width of the cross-sections with frontal half-widths ``half_width``."""
        depth = self.DEPTH * half_width / self.face_w
        centre = (self.DEPTH - depth) * self.sin_t - self.shift
        half = np.sqrt(half_width * half_width * self.cos_t ** 2 + depth * depth * self.sin_t ** 2)
        # the face surface (where the features sit) must stay inside the silhouette on the side turning away
        left = np.minimum(centre - half, self.proj_array(-half_width))
        right = np.maximum(centre + half, self.proj_array(half_width))
        return 0.5 * (left + right), 0.5 * (right - left)


def _local_u(x, left, centre, right):
    """-1 at ``left``, 0 at ``centre``, +1 at ``right``: a feature's own coordinate, foreshortened per side."""
    return np.where(x < centre, (x - centre) / max(centre - left, 1e-3), (x - centre) / max(right - centre, 1e-3))


def _face_sd(g: _Geometry, x, y):
    """Signed distance (approximately) to the face outline: temples -> cheeks -> jaw -> chin, turned."""
    idt = g.idt
    a0, cy, chy = g.face_w, g.cheek_y, g.chin_y
    above = np.clip((cy - y) / (cy + 0.66), 0.0, 1.0)
    t = np.clip((y - cy) / (chy - cy), 0.0, 1.0)
    p, cw = idt["jaw_power"], idt["chin_width"]
    jaw = cw + (a0 - cw) * np.power(np.maximum(1.0 - np.power(t, p), 0.0), 1.0 / p)
    jaw = jaw + 0.035 * g.age * np.sin(np.pi * np.clip(t * 1.2, 0, 1))  # jowls
    half = np.where(y < cy, a0 * np.sqrt(1.0 - above ** 4), jaw)  # the forehead closes smoothly into the skull
    centre, half = g.outline(half)
    sd = np.abs(x - centre) - half
    if y.shape[0] > 1:  # measure across the outline, not horizontally
        step = 1.0 / float(y[1, 0] - y[0, 0])
        slope = np.empty_like(half)
        slope[1:] = np.abs(np.diff(half, axis=0)) + np.abs(np.diff(centre, axis=0))
        slope[0] = slope[1]
        slope *= step
        sd = sd / np.sqrt(1.0 + np.minimum(slope * slope, 25.0))
    return np.maximum(np.maximum(sd, y - chy), -0.66 - y)


def _draw_background(cv: _Canvas, attrs):
    base = np.array([attrs["bg_r"], attrs["bg_g"], attrs["bg_b"]], np.float32)
    ramp = 1.0 - 0.35 * attrs["bg_gradient"] * cv.coords  # along y (down): top brighter when gradient > 0
    cv.rgb[:] = np.clip(base[:, None, None] * ramp[None, :, None], 0, 1)


def _draw_body(cv, g, rng):
    clothes = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.85)), np.float32)
    win = cv.window(-1, 1, 0.55, 1)
    if win is None:
        return
    sl, x, y = win
    bx = g.head_x * 0.8
    shoulders = _ellipse_sd(x, y, bx, 1.4, 1.02, 0.62)
    cv.paint(sl, _cover(shoulders, cv.px), clothes, _OTHER)
    collar = np.maximum(np.abs(y - (0.9 + 0.5 * (x - bx) ** 2)) - 0.025, shoulders)
    cv.paint(sl, _cover(collar, cv.w(0.015)) * 0.35, clothes * 0.55)


def _draw_neck(cv, g, skin):
    win = cv.window(-0.5, 0.5, 0.2, 1)
    if win is None:
        return
    sl, x, y = win
    nx = g.head_x * 0.6 + g.chin_x * 0.4
    half = 0.21 * g.face_w / 0.48 + 0.06 * np.clip((y - 0.82) / 0.18, 0, 1) ** 2
    sd = np.maximum(np.abs(x - nx) - half, y - (0.93 + 0.5 * (x - nx) ** 2))  # down to the shirt's neckline
    alpha = _cover(sd, cv.px)
    cv.paint(sl, alpha, skin * 0.85, _SKIN)
    cv.paint(sl, alpha * np.clip(1.0 - (y - g.chin_y + 0.02) / 0.16, 0, 1) * 0.5, skin * 0.45)  # under the jaw


def _draw_ears(cv, g, skin, which="both"):
    """Ears at the sides of the head; ``which``: 'both', 'leading' (the one turning away) or 'trailing'."""
    for side in (-1, 1):
        facing = -side * g.turn  # > 0: this ear turns towards the camera
        if which == "leading" and facing > 0 or which == "trailing" and facing <= 0:
            continue
        scale = g.idt["ear_size"]
        w = 0.05 * scale * (1.0 + 0.5 * max(facing, 0.0))
        h = 0.115 * scale
        cx = g.head_x + side * (g.face_w * g.cos_t + 0.02 - 0.03 * max(facing, 0.0))
        cy = g.idt["ear_y"]
        _paint_ellipse(cv, cx, cy, w, h, skin * 0.95, _SKIN)
        _paint_ellipse(cv, cx - side * 0.25 * w * facing + side * 0.1 * w, cy - 0.01, w * 0.5, h * 0.6, skin * 0.7,
                       blur=0.015, opacity=0.75)


def _draw_head_skin(cv, g, skin):
    win = cv.window(min(g.head_x, g.chin_x) - 0.65, max(g.head_x, g.chin_x) + 0.65, -0.9, g.chin_y + 0.02)
    if win is None:
        return
    sl, x, y = win
    skull = _ellipse_sd(x, y, g.head_x, -0.16, g.face_w, 0.66)
    cv.paint(sl, _cover(np.minimum(_face_sd(g, x, y), skull), cv.px), skin, _SKIN)


def _draw_face_relief(cv, g, attrs, skin):
    """Smile and age lines (the soft blush and eye sockets are added at output resolution)."""
    idt = g.idt
    smile, a = attrs["smile"], attrs["age"] ** 1.3
    ed, ew = idt["eye_spacing"], idt["eye_width"]
    wrinkle = skin * 0.6
    if a > 0.03:
        x0, x1 = g.span(-0.22, 0.22)
        forehead = [(lambda x, yy=yy: yy + 0.25 * (x - g.chin_x) ** 2, 0.006) for yy in (-0.37, -0.3, -0.23)]
        _paint_curves(cv, x0, x1, forehead, wrinkle, opacity=0.6 * a, blur=0.015, on_skin=True)
        for side in (-1, 1):
            ex, edge = g.proj(side * ed), g.proj(side * (ed + 1.15 * ew))
            xa, xb = g.span(side * (ed + 1.15 * ew), side * (ed + 1.15 * ew + 0.06))
            crows_feet = [(lambda x, k=k: g.eye_y + 0.005 + k * 0.02 * (1 + side * (x - edge) * 8), 0.005)
                          for k in (-1, 0, 1)]
            _paint_curves(cv, xa, xb, crows_feet, wrinkle, opacity=0.55 * a, blur=0.015, on_skin=True)
            xa, xb = g.span(side * (ed - 0.8 * ew), side * (ed + 0.8 * ew))
            _paint_curve(cv, xa, xb, lambda x: g.eye_y + 0.06 + 4 * (x - ex) ** 2, 0.007, wrinkle,  # eye bags
                         opacity=0.65 * a, blur=0.018, on_skin=True)
    fold = 0.3 * max(smile, 0) + 0.55 * a  # nasolabial folds, from the nose wings past the mouth corners
    if fold > 0.03:
        mw = idt["mouth_width"] * (1 + 0.2 * max(smile, 0))
        for side in (-1, 1):
            xa, ya = g.proj(side * (idt["nose_width"] + 0.04)), g.nose_y - 0.01
            xb, yb = g.proj(side * (mw + 0.045)), g.mouth_y + 0.07

            def centre(x, xa=xa, ya=ya, xb=xb, yb=yb):
                return ya + (yb - ya) * np.clip((x - xa) / (xb - xa + 1e-6), 0, 1) ** 0.6

            _paint_curve(cv, min(xa, xb), max(xa, xb), centre, 0.008, skin * 0.58, opacity=fold, blur=0.02,
                         on_skin=True)


def _eye_lids(g, attrs, side, x):
    """Lid curves of one eye at ``x [1, w]``: upper (after closing), lower, and the eye's own u in [-1, 1]."""
    idt = g.idt
    ed, ew, eh = idt["eye_spacing"], idt["eye_width"], idt["eye_height"]
    centre = g.proj(side * ed)
    inner, outer = g.proj(side * (ed - ew)), g.proj(side * (ed + ew))
    left, right = (inner, outer) if side > 0 else (outer, inner)
    u = np.clip(_local_u(x, left, centre, right), -1.5, 1.5)
    un = u * side  # -1 inner corner, +1 outer corner
    body = 1.0 - np.minimum(u * u, 1.0)
    ey = g.eye_y - idt["eye_tilt"] * un
    upper_open = ey - eh * np.power(body, 0.55) * (1.0 - 0.15 * attrs["age"]) * np.where(un < 0, 1.12, 1.0)
    lower = ey + 0.55 * eh * np.power(body, 0.8) * (1.0 - 0.3 * max(attrs["smile"], 0.0))
    closed = ey + 0.22 * eh * body
    upper = closed + (upper_open - closed) * attrs["eyes_open"]
    return upper, lower, u, body, centre


def _draw_eyes(cv, g, attrs, skin):
    idt = g.idt
    ew, eh = idt["eye_width"], idt["eye_height"]
    iris = np.asarray(idt["iris"], np.float32)
    dark = np.array([0.07, 0.05, 0.05], np.float32)
    for side in (-1, 1):
        c = g.proj(side * idt["eye_spacing"])
        win = cv.window(c - 1.5 * ew, c + 1.5 * ew, g.eye_y - 2.4 * eh, g.eye_y + 1.6 * eh)
        if win is None:
            continue
        sl, x, y = win
        upper, lower, u, body, _ = _eye_lids(g, attrs, side, x)
        ends = _cover(np.abs(u) - 1.0, 3 * cv.px / ew)
        opening = np.minimum(_cover(upper - y, cv.px), _cover(y - lower, cv.px)) * ends
        crease = upper - 0.55 * eh * body - 0.012 - 0.015 * (1 - attrs["eyes_open"])
        cv.paint(sl, _cover(np.abs(y - crease) - 0.005, cv.w(0.015)) * ends * 0.35, skin * 0.55, on_skin=True)
        # the eyeball, composited in the window and painted once: sclera, iris, limbal ring, pupil, catch light,
        # the upper lid's shadow
        ir = 1.0 * eh
        ix, iy = c + 0.25 * ew * g.sin_t, g.eye_y + 0.1 * eh
        d_iris = _circle_sd(x, y, ix, iy, ir)
        hx, hy = ix + 0.35 * ir * (0.5 + 0.5 * attrs["light_x"]), iy - 0.35 * ir
        ball = np.broadcast_to(np.array([0.93, 0.91, 0.88], np.float32).reshape(3, 1, 1), (3,) + opening.shape)
        for alpha, colour in ((_cover(d_iris, cv.px), iris), (_cover(np.abs(d_iris) - 0.004, cv.px) * 0.6, iris * 0.4),
                              (_cover(d_iris + 0.55 * ir, cv.px), (0.03, 0.03, 0.03)),
                              (_cover(_circle_sd(x, y, hx, hy, 0.22 * ir), cv.px) * 0.9, (1.0, 1.0, 1.0)),
                              (_cover(y - upper - 0.3 * eh, cv.w(0.015)) * 0.35, (0.25, 0.2, 0.2))):
            ball = ball + (np.asarray(colour, np.float32).reshape(3, 1, 1) - ball) * alpha
        cv.paint(sl, opening, ball, _OTHER)
        lash = np.abs(y - upper) - 0.009 - 0.005 * body
        cv.paint(sl, _cover(lash, cv.px) * _cover(np.abs(u) - 1.1, 2 * cv.px / ew), dark, _OTHER)
        cv.paint(sl, _cover(np.abs(y - lower) - 0.003, cv.px) * ends * 0.5 * attrs["eyes_open"], skin * 0.6)


def _draw_brows(cv, g, hair, skin):
    idt = g.idt
    colour = _mix(skin, hair * 0.65, idt["brow_darkness"])
    ed, ew = idt["eye_spacing"], idt["eye_width"]
    by = g.eye_y - idt["brow_gap"] + 0.012 * g.age - 0.015 * max(g.smile, 0)
    th = idt["brow_thickness"] * (1 - 0.2 * g.age)
    for side in (-1, 1):
        xa, xb = g.proj(side * (ed - 1.05 * ew)), g.proj(side * (ed + 1.25 * ew))  # inner, outer end

        def t_of(x, xa=xa, xb=xb):
            return np.clip((x - xa) / (xb - xa), 0, 1)

        def centre(x):
            t = t_of(x)
            return by - idt["brow_arch"] * np.sin(np.pi * (0.1 + 0.9 * t)) - idt["brow_tilt"] * t

        def half(x):
            t = t_of(x)
            return 0.5 * th * (1.15 - 0.7 * t ** 2) * np.clip(np.minimum(t, 1 - t) * 12, 0.3, 1.0)

        _paint_curve(cv, min(xa, xb), max(xa, xb), centre, half, colour, blur=0.012)


def _draw_nose(cv, g, attrs, skin):
    idt = g.idt
    nw, ny, nx = idt["nose_width"], g.nose_y, g.nose_x
    lx, ly = attrs["light_x"], attrs["light_y"]
    # the bridge: a soft shadow on the side away from the light (and on the far side when turned)
    shade_side = -1.0 if lx - 0.5 * g.turn > 0 else 1.0
    strength = idt["nose_bridge"] * (0.25 + 0.35 * min(abs(lx - 0.5 * g.turn), 1.0))
    top = g.eye_y + 0.04
    root = g.proj(0.0, 0.02)
    win = cv.window(min(root, nx) - 2 * nw, max(root, nx) + 2 * nw, top, ny + 0.02)
    if win is not None:
        sl, x, y = win
        t = np.clip((y - top) / (ny - top), 0, 1)
        xc = root + (nx - root) * t
        w = 0.022 + (0.75 * nw - 0.022) * t ** 2
        band = np.abs(x - (xc + shade_side * w)) - 0.012 - 0.01 * t
        alpha = _cover(band, cv.w(0.045)) * np.clip(1.2 - np.abs(2 * t - 1.1), 0, 1) * strength
        cv.paint(sl, alpha, skin * 0.6, on_skin=True)
    _paint_ellipse(cv, nx - shade_side * 0.01, ny - 0.02, 0.55 * nw, 0.04, np.minimum(skin * 1.12, 1), blur=0.06,
                   opacity=0.5, on_skin=True)
    _paint_ellipse(cv, nx - 0.02 * lx, ny + 0.035, nw, 0.022, skin * 0.55, blur=0.04,
                   opacity=0.35 + 0.3 * max(ly, 0), on_skin=True)
    for side in (-1, 1):
        facing = 1.0 - 0.5 * max(0.0, side * g.turn)
        _paint_ellipse(cv, nx + side * nw * 0.5 * facing - 0.01 * g.turn, ny + 0.018, 0.02 * facing + 0.004, 0.011,
                       skin * 0.3, blur=0.012, opacity=0.85, on_skin=True)
        _paint_ellipse(cv, nx + side * nw * 0.95 * facing, ny, 0.02, 0.035, skin * 0.65, blur=0.025,
                       opacity=0.5, on_skin=True)


def _mouth_frame(g, widen=1.0):
    mw = g.idt["mouth_width"] * widen
    return g.proj(-mw), g.proj(0.0, 0.03), g.proj(mw)


def _draw_mouth(cv, g, attrs, skin):
    idt = g.idt
    smile, age = attrs["smile"], attrs["age"]
    left, centre, right = _mouth_frame(g, 1.0 + 0.18 * max(smile, 0.0) - 0.05 * max(-smile, 0.0))
    my = g.mouth_y
    win = cv.window(left - 0.02, right + 0.02, my - 0.12, my + 0.14)
    if win is None:
        return
    sl, x, y = win
    u = _local_u(x, left, centre, right)
    u2 = np.minimum(u * u, 1.0)
    body = 1.0 - u2
    lift = 0.06 * smile - 0.02 * age  # corners up with a smile, down with a frown and with age
    line = my - lift * (u2 - 0.3)
    opening = float(np.clip((smile - 0.3) / 0.7, 0.0, 1.0))
    top_open = line - opening * 0.012 * body
    bot_open = line + opening * 0.075 * np.power(body, 0.7)
    lip = np.asarray(idt["lip_colour"], np.float32)
    upper_th = idt["lip_upper"] * (1 - 0.4 * opening) * (1 - 0.3 * age) * np.sqrt(body)
    lower_th = idt["lip_lower"] * (1 - 0.3 * opening) * (1 - 0.3 * age) * np.sqrt(body)
    bow = 0.006 * np.exp(-((u * 6.0) ** 2))  # cupid's bow
    ends = _cover(np.abs(u) - 1.0, 2 * cv.px / idt["mouth_width"])
    cv.paint(sl, _cover(np.maximum(top_open - upper_th + bow - y, y - top_open), cv.px) * ends, lip * 0.85, _OTHER)
    cv.paint(sl, _cover(np.maximum(y - bot_open - lower_th, bot_open - y), cv.px) * ends, lip, _OTHER)
    cv.paint(sl, _cover(np.abs(y - (bot_open + 0.5 * lower_th)) - 0.3 * lower_th, cv.w(0.02)) * ends * 0.25,
             np.minimum(lip * 1.4, 1.0))
    if opening > 0.0:
        inside = np.maximum(top_open - y, y - bot_open)
        inner = _cover(inside, cv.px) * ends
        cv.paint(sl, inner, np.array([0.25, 0.06, 0.06], np.float32), _OTHER)
        teeth = np.maximum(inside, y - (top_open + (bot_open - top_open) * 0.55))
        cv.paint(sl, _cover(teeth, cv.px) * _cover(np.abs(u) - 0.8, 0.1) * inner,
                 np.array([0.94, 0.92, 0.86], np.float32))
    cv.paint(sl, _cover(np.abs(y - line) - 0.004, cv.px) * ends * (1 - opening), lip * 0.35)
    corners = _cover(np.abs(np.abs(u) - 1.0) * (right - left) * 0.5 - 0.01, cv.w(0.015))
    cv.paint(sl, corners * _cover(np.abs(y - line) - 0.01, cv.w(0.015)) * 0.5, skin * 0.5, on_skin=True)


def _draw_beard(cv, g, hair, skin):
    kind = g.idt["facial_hair"]
    if kind not in ("beard", "stubble"):
        return
    win = cv.window(-1, 1, g.nose_y - 0.1, g.chin_y + 0.05)
    if win is None:
        return
    sl, x, y = win
    top = g.nose_y - 0.03 + 0.9 * (x - g.chin_x) ** 2
    sd = np.maximum(_face_sd(g, x, y) - 0.01, top - y)
    if kind == "beard":
        cv.paint(sl, _cover(sd, cv.w(0.025)) * 0.95, hair * 0.85, _HAIR)
    else:
        cv.paint(sl, _cover(sd, cv.w(0.1)) * 0.18, skin * 0.45, on_skin=True)


def _draw_moustache(cv, g, hair):
    if g.idt["facial_hair"] not in ("beard", "moustache"):
        return
    left, centre, right = _mouth_frame(g, 1.05)
    my = g.mouth_y

    def middle(x):
        return my - 0.04 + 0.035 * np.minimum(_local_u(x, left, centre, right) ** 2, 1.0)

    def half(x):
        return 0.022 * np.clip(1.2 - np.abs(_local_u(x, left, centre, right)), 0, 1)

    _paint_curve(cv, left - 0.02, right + 0.02, middle, half, hair * 0.85, material=_HAIR, blur=0.015)


class _HairShape:
    """Signed distance to the identity's hair mass over the whole image, computed once per render.

    The base is a dome over the skull that continues straight down the sides (a capsule), tapering towards the
    ears; styles cut it short, add a drape, a bun or curls. The front part (over the forehead) is what lies above
    the hairline.
    """

    def __init__(self, cv: _Canvas, g: _Geometry, idt: dict):
        self.style = style = idt["hair_style"]
        self.g, self.idt = g, idt
        hx, top, a = g.head_x, idt["hair_top"], g.face_w + idt["hair_volume"]
        self.sl, x, y = cv.window(hx - a - 0.2, hx + a + 0.2, -1, 1)
        self.x, self.y = x, y
        if style == "buzz":
            a, top = g.face_w + 0.02, -0.80
        elif style == "bun":
            a, top = g.face_w + 0.03, -0.83
        elif style == "bald":
            a, top = g.face_w + 0.025, -0.78
        cy = -0.3
        dome = _ellipse_sd(x, y, hx, cy, a, cy - top)
        sides = np.abs(x - hx) - (a - 0.05 * np.clip((y - cy) / 0.35, 0.0, 1.0) ** 2)
        sd = np.where(y < cy, dome, sides)
        self.bun = None
        if style == "curly":
            ang = np.arctan2(y - cy, x - hx)
            sd = sd - 0.022 * np.sin(ang * idt["curl_freq"] + idt["curl_phase"]) - 0.01
            sd = np.maximum(sd, y - 0.3 - 0.03 * np.sin(x * 30))
        elif style == "long":
            flare = a + 0.08 * np.clip(y / 0.8, 0, 1)
            drape = np.maximum(np.abs(x - hx) - flare, y - idt["hair_length"] - 0.02 * np.sin(x * 40))
            sd = np.minimum(sd, np.maximum(drape, cy - y))
        elif style == "fringe":
            sd = np.maximum(sd, y - 0.32 - 0.015 * np.sin(x * 45))  # bob length
        elif style == "bun":
            sd = np.maximum(sd, y)
            self.bun = _circle_sd(x, y, hx, top - 0.6 * idt["bun_size"], idt["bun_size"])
            sd = np.minimum(sd, self.bun)
        elif style == "short":
            sd = np.maximum(sd, y - 0.02)
        elif style == "buzz":
            sd = np.maximum(sd, y + 0.06)
        elif style == "bald":
            sd = np.maximum(np.maximum(sd, y - 0.02), -0.42 - y)
        self.sd = sd

    # how far hair reaches into the face along its sides: (width, from y, down to y)
    SIDE_LOCKS = {"short": (0.05, -1.0, 0.0), "long": (0.075, -1.0, 0.28), "fringe": (0.07, -1.0, 0.22),
                  "curly": (0.06, -1.0, 0.08), "bun": (0.035, -1.0, -0.1), "buzz": (0.03, -1.0, -0.05),
                  "bald": (0.045, -0.42, 0.0)}

    def hairline(self, x):
        """y of the hairline over the forehead at ``x [1, w]``: hair above it covers the skin."""
        g, idt, style = self.g, self.idt, self.style
        q2 = np.minimum(((x - g.proj(idt["hair_part"] * g.face_w * 0.5)) / g.face_w) ** 2, 1.5)
        recede = 0.2 * g.age * (1.0 if idt["recedes"] else 0.15)
        curve = idt["hairline_curve"] + (0.4 * recede if idt["recedes"] else 0.0)
        if style == "fringe":
            return idt["fringe_y"] + 0.015 * np.sin(x * 55.0 + idt["curl_phase"]) + 0.08 * q2
        if style == "bald":
            return np.full_like(x, -1.5)
        line = idt["hairline"] - recede + curve * q2
        if style == "curly":
            line = line + 0.012 * np.sin(x * 50 + idt["curl_phase"])
        elif style == "buzz":
            line = line - 0.02
        return line

    def front(self, y_max: float):
        """Signed distance of the hair in front of the face (rows above ``y_max``) and the row count: what lies
        above the hairline, plus locks along the sides of the face that thin out downwards."""
        rows = int(np.searchsorted(self.y[:, 0], y_max))
        x, y = self.x, self.y[:rows]
        sd = np.maximum(self.sd[:rows], y - self.hairline(x))
        width, y_from, y_to = self.SIDE_LOCKS[self.style]
        reach = width * np.clip((y_to - y) / 0.3, 0, 1) ** 0.7 * np.clip((y - y_from) / 0.1, 0, 1)
        face = _face_sd(self.g, x, y)
        locks = np.maximum(np.maximum(-face - reach, face), self.sd[:rows])  # a band just inside the face edge
        sd = np.minimum(sd, locks)
        if self.bun is not None:  # the bun sits on top, in front of the skull
            sd = np.minimum(sd, self.bun[:rows])
        return sd, rows


def _draw_hair_back(cv, hs: _HairShape, hair):
    alpha = _cover(hs.sd, cv.w(0.01))
    cv.paint(hs.sl, alpha, hair, _HAIR)
    cv.paint(hs.sl, alpha * _cover(-hs.sd - 0.06, cv.w(0.08)) * 0.35, hair * 0.55)  # what shows behind the head


def _draw_hair_front(cv, hs: _HairShape, g, hair, skin):
    sd, rows = hs.front(0.45)
    if rows == 0:
        return
    sl = (slice(hs.sl[0].start, hs.sl[0].start + rows), hs.sl[1])
    cv.paint(sl, _cover(sd - 0.015, cv.w(0.05)) * 0.3, skin * 0.5, on_skin=True)  # the shadow it casts
    cv.paint(sl, _cover(sd, cv.w(0.012)) * (0.85 if hs.style == "buzz" else 1.0), hair, _HAIR)


def _draw_glasses(cv, g):
    idt = g.idt
    colour = np.asarray(idt["glasses_colour"], np.float32)
    th, ed, ew = idt["glasses_thickness"], idt["eye_spacing"], idt["eye_width"]
    hw, hh, r = {"round": (1.25 * ew, 1.2 * ew, 1.2 * ew), "rect": (1.45 * ew, 0.95 * ew, 0.3 * ew),
                 "wide": (1.6 * ew, 1.0 * ew, 0.6 * ew)}[idt["glasses_shape"]]
    cy = g.eye_y + 0.012
    lenses = []
    for side in (-1, 1):
        cx = g.proj(side * ed)
        w = hw * abs(g.proj(side * (ed + ew)) - g.proj(side * (ed - ew))) / (2 * ew)  # foreshortened
        lenses.append((cx, w))
        win = cv.window(cx - w - 0.03, cx + w + 0.03, cy - hh - 0.03, cy + hh + 0.03)
        if win is None:
            continue
        sl, x, y = win
        sd = _round_box_sd(x, y, cx, cy, w, hh, min(r, w, hh))
        inside = _cover(sd, cv.px)
        cv.paint(sl, inside * 0.18, np.array([0.6, 0.7, 0.8], np.float32))  # tint
        glare = _cover(np.abs((x - cx) + (y - cy) * 0.8 + 0.3 * w) - 0.012, cv.w(0.015)) * inside
        cv.paint(sl, glare * 0.35, np.ones(3, np.float32))
        cv.paint(sl, _cover(np.abs(sd) - 0.5 * th, cv.px), colour, _OTHER)
        xa, xb = cx + side * w, g.head_x + side * (g.face_w * g.cos_t + 0.02)  # the arm, towards the ear
        if (xb - xa) * side > 0.005:  # shows only over skin: it passes under hair and behind the head
            _paint_curve(cv, min(xa, xb), max(xa, xb), lambda x_: np.full_like(x_, cy - 0.5 * hh), 0.45 * th,
                         colour, material=_OTHER, on_skin=True)
    (lx, lw), (rx, rw) = lenses
    mid = 0.5 * (lx + rx)
    _paint_curve(cv, lx + lw - 0.005, rx - rw + 0.005, lambda x_: cy - 0.35 * hh - 0.01 + 8 * (x_ - mid) ** 2,
                 0.45 * th, colour, material=_OTHER)


def _light_and_detail(img, masks, g, idt, attrs, rng):
    """Shade the foreground by the light direction, then add the detail that W cannot hold. At output res."""
    res = img.shape[0]
    c = (np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0
    x, y = c[None, :], c[:, None]
    skin_m, hair_m, fg = masks

    # broad soft shading on the skin, smooth enough to draw at output resolution: eye sockets and cheek blush
    ed, ew = idt["eye_spacing"], idt["eye_width"]
    blush = np.array([0.06, -0.22, -0.24], np.float32) * np.float32(idt["blush"] + 0.25 * max(attrs["smile"], 0))
    socket = np.float32(-0.25 * (0.35 + 0.2 * max(attrs["light_y"], 0)))
    px = 2.0 / res
    for side in (-1, 1):
        cheek = _cover(_ellipse_sd(x, y, g.proj(side * 0.27), 0.2 - 0.04 * max(attrs["smile"], 0), 0.1, 0.065),
                       max(px, 0.1)) * skin_m
        eye = _cover(_ellipse_sd(x, y, g.proj(side * ed), g.eye_y - 0.025, ew * 1.4, 0.07), max(px, 0.07)) * skin_m
        img = img * (1.0 + cheek[..., None] * blush + (eye * socket)[..., None])

    # Lambert on an ellipsoid standing in for the head; the neck and shoulders get its outer rim
    nx, ny = (x - g.head_x) / 0.68, (y + 0.05) / 0.92
    r2 = nx * nx + ny * ny
    nz = np.sqrt(np.clip(1.0 - r2, 0.05, 1.0))
    lx, ly, lz = attrs["light_x"], -attrs["light_y"], 0.9
    lam = np.clip((nx * lx + ny * ly + nz * lz) / (np.sqrt(r2 + nz * nz) * math.sqrt(lx * lx + ly * ly + lz * lz)),
                  0.0, 1.0)
    shade = 0.4 + 0.72 * lam
    img = img * (1.0 + fg * (shade - 1.0))[..., None]

    # hair strands flowing from above the parting, each strand its own brightness; curls are blobs instead
    if hair_m.max() > 0.01:
        style = idt["hair_style"]
        if style == "curly":
            tex = _noise(rng, (res, res))
            tex = 0.16 * (0.5 * tex + 0.25 * (np.roll(tex, 1, 0) + np.roll(tex, 1, 1)))
        else:
            # strand index: the tangent of the direction towards a point above the parting; strands ~2 px wide
            slope = (x - g.head_x - 0.3 * idt["hair_part"]) / (y + 1.6)
            sid = np.floor(slope * res * (0.4 if style == "buzz" else 0.28) + rng.random()).astype(np.int64)
            tex = 0.07 * _noise(rng, 4096)[sid % 4096] + 0.04 * _noise(rng, (res, res))
        sheen = np.exp(-((np.sqrt((x - g.head_x) ** 2 + (y + 0.25) ** 2) - 0.5) / 0.09) ** 2)
        sheen *= 0.1 * (0.6 + 0.4 * attrs["light_y"])
        img = img * (1.0 + hair_m * tex)[..., None] + (hair_m * sheen)[..., None]

    # skin: pores, a blotchy low-frequency tone, freckles and a mole
    if skin_m.max() > 0.01:
        noise = _noise(rng, (res, res)) * np.float32(0.012 + 0.01 * attrs["age"])
        blot = _smooth_noise(rng, 6, res) * (0.025 + 0.03 * attrs["age"])
        img = img * (1.0 + skin_m * (noise + blot))[..., None]
        n_freckles = int(rng.poisson(idt["freckles"] * 40 + 3 * attrs["age"]))
        if n_freckles:
            fx = g.chin_x + rng.uniform(-0.4, 0.4, n_freckles)
            fy = rng.uniform(-0.05, 0.3, n_freckles) + 0.2 * np.abs(fx - g.chin_x) - 0.05
            px = np.clip(((fx + 1) * res / 2).astype(np.int64), 0, res - 1)
            py = np.clip(((fy + 1) * res / 2).astype(np.int64), 0, res - 1)
            strength = rng.uniform(0.05, 0.15, n_freckles).astype(np.float32)
            img[py, px] *= (1.0 - strength * skin_m[py, px])[:, None]
        if idt.get("mole") is not None:
            mx, my = g.proj(idt["mole"][0]), idt["mole"][1]
            r = max(0.012, 1.0 / res)
            m = np.clip(1.5 - np.sqrt((x - mx) ** 2 + (y - my) ** 2) / r, 0, 1) * skin_m
            img = img * (1.0 - 0.45 * m)[..., None]

    # background: a faint low-frequency blotch and sensor-like noise
    bg = 1.0 - fg
    img = img + (bg * _smooth_noise(rng, 4, res) * 0.05)[..., None]
    img = img + bg[..., None] * _noise(rng, (res, res, 3)) * np.float32(0.012)
    return img


def _noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Zero-mean, unit-variance float32 noise (uniform: cheaper than normal and just as good for texture)."""
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(math.sqrt(12.0))


# ----------------------------------------------------------------------------------------------------------------
# Items, the Dataset, and folders on disk
# ----------------------------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")


def _resolve_persons(split: str, n_persons: Optional[int]) -> int:
    n_persons = DEFAULT_PERSONS[split] if n_persons is None else int(n_persons)
    if not 1 <= n_persons <= TEST_PERSON_OFFSET:
        raise ValueError(f"n_persons must be in [1, {TEST_PERSON_OFFSET}], got {n_persons}")
    return n_persons


def person_ids_for_split(split: str, n_persons: Optional[int] = None) -> np.ndarray:
    """All person ids of a split: ``0..P-1`` for 'train', ``TEST_PERSON_OFFSET + 0..P-1`` for 'test'."""
    _check_split(split)
    offset = 0 if split == "train" else TEST_PERSON_OFFSET
    return offset + np.arange(_resolve_persons(split, n_persons), dtype=np.int64)


def item_labels(index: int, split: str = "train", seed: int = 0, n_persons: Optional[int] = None) -> dict:
    """Labels of item ``index`` of a split, without rendering.

    Returns ``{'person_id': int, 'split': str, <every attribute>: float, 'detail_seed': int}``. Item ``i`` shows
    person ``offset + i % n_persons`` (so a person's images are ``p, p + P, p + 2P, ...``); its attributes and
    detail seed come from a generator seeded with ``(seed, split, i)``.
    """
    _check_split(split)
    if index < 0 or seed < 0:
        raise ValueError("index and seed must be non-negative")
    n_persons = _resolve_persons(split, n_persons)
    offset = 0 if split == "train" else TEST_PERSON_OFFSET
    rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index), 0xA77])
    attrs = sample_attributes(rng)
    detail_seed = int(rng.integers(0, 2 ** 31 - 1))
    return {"person_id": int(offset + index % n_persons), "split": split, **attrs, "detail_seed": detail_seed}


@functools.lru_cache(maxsize=16384)
def _cached_identity(person_id: int, seed: int) -> dict:
    return sample_identity(person_id, seed)


def _render_item(index: int, res: int, split: str, seed: int, n_persons: int) -> Tuple[np.ndarray, dict]:
    labels = item_labels(index, split, seed, n_persons)
    image = render_face(_cached_identity(labels["person_id"], seed), labels, res, labels["detail_seed"])
    return image, labels


def _image_to_tensor(image: np.ndarray):
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def _label_tensors(labels: dict) -> dict:
    return {"person_id": torch.tensor(labels["person_id"], dtype=torch.int64),
            "attributes": torch.from_numpy(attributes_to_vector(labels))}


class SynthFaces(_TorchDataset):
    """SynthFaces rendered on the fly; item ``i`` is the same image every time (see :func:`item_labels`).

    ``n`` items of ``res`` px from ``split`` ('train' or 'test', whose person ids are disjoint: see
    :func:`person_ids_for_split`), ``n_persons`` persons (default :data:`DEFAULT_PERSONS`), generator ``seed``.
    ``dataset[i]`` is ``(image, labels)``: ``image`` float32 ``[3, res, res]`` in [-1, 1] (passed through
    ``transform`` if given), ``labels = {'person_id': int64 scalar tensor, 'attributes': float32 [A]}`` with the
    attributes in :data:`ATTRIBUTES` order -- the default collate stacks both. ``labels(i)`` gives the plain dict
    without rendering; ``person_ids()`` and ``attribute_matrix()`` give all labels at once.
    """

    def __init__(self, n: int, res: int = 64, split: str = "train", seed: int = 0, n_persons: Optional[int] = None,
                 transform: Optional[Callable] = None):
        _check_split(split)
        if n < 1 or res < 16 or seed < 0:
            raise ValueError("need n >= 1, res >= 16 and seed >= 0")
        self.n, self.res, self.split, self.seed = int(n), int(res), split, int(seed)
        self.n_persons = _resolve_persons(split, n_persons)
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        return i

    def labels(self, i: int) -> dict:
        """Plain labels of item ``i`` (see :func:`item_labels`), without rendering."""
        return item_labels(self._index(i), self.split, self.seed, self.n_persons)

    def identity(self, i: int) -> dict:
        """Identity parameters of the person in item ``i`` (a copy: see :func:`sample_identity`)."""
        return copy.deepcopy(_cached_identity(self.labels(i)["person_id"], self.seed))

    def image(self, i: int) -> np.ndarray:
        """Item ``i`` as ``uint8 [res, res, 3]``."""
        return _render_item(self._index(i), self.res, self.split, self.seed, self.n_persons)[0]

    def __getitem__(self, i: int):
        image, labels = _render_item(self._index(i), self.res, self.split, self.seed, self.n_persons)
        x = _image_to_tensor(image)
        if self.transform is not None:
            x = self.transform(x)
        return x, _label_tensors(labels)

    def person_ids(self) -> np.ndarray:
        """int64 ``[n]``: the person of every item (no rendering)."""
        offset = 0 if self.split == "train" else TEST_PERSON_OFFSET
        return offset + np.arange(self.n, dtype=np.int64) % self.n_persons

    def attribute_matrix(self) -> np.ndarray:
        """float32 ``[n, len(ATTRIBUTES)]``: every item's attributes (no rendering; ~25 us per item)."""
        return np.stack([attributes_to_vector(self.labels(i)) for i in range(self.n)])


def _image_name(split: str, index: int) -> str:
    return f"images/{split}/{index:06d}.png"


def _write_chunk(job) -> int:
    out_dir, indices, res, split, seed, n_persons = job
    from PIL import Image

    for i in indices:
        image, _ = _render_item(i, res, split, seed, n_persons)
        Image.fromarray(image).save(os.path.join(out_dir, _image_name(split, i)), compress_level=1)
    return len(indices)


_CSV_FIXED = ("file", "person_id", "split")


#: Images one rendering process writes at a time (:func:`write_dataset`).
RENDER_CHUNK = 64


def render_chunks(n: int) -> int:
    """How many chunks of :data:`RENDER_CHUNK` images :func:`write_dataset` splits ``n`` images into."""
    return -(-int(n) // RENDER_CHUNK)


def write_dataset(out_dir, n: int, res: int = 64, split: str = "train", seed: int = 0, workers: int = 1,
                  n_persons: Optional[int] = None, progress: bool = False) -> Path:
    """Render ``n`` items of a split to a folder; returns the labels file's path.

    Layout: ``out_dir/images/<split>/<index:06d>.png``; ``out_dir/labels_<split>.csv`` with columns ``file``
    (relative to ``out_dir``), ``person_id``, ``split``, every attribute in :data:`ATTRIBUTES` order and
    ``detail_seed`` (floats written with ``repr``, so :func:`read_labels` gets them back exactly); and
    ``out_dir/meta.json`` (version, seed, res, attribute list, and per split n, n_persons and person id offset).
    Writing a second split into the same folder adds it to ``meta.json``; a different seed, res or version is
    refused. Item ``i`` equals ``SynthFaces(n, res, split, seed, n_persons)[i]``. ``workers`` processes render
    in parallel, each a chunk of :data:`RENDER_CHUNK` images at a time (never more processes than chunks: 6 images
    render in this process); ``progress`` shows a tqdm bar.
    """
    _check_split(split)
    n_persons = _resolve_persons(split, n_persons)
    out = Path(out_dir)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    meta = {"version": VERSION, "seed": int(seed), "res": int(res),
            "attributes": [dict(name=a.name, low=a.low, high=a.high, kind=a.kind, doc=a.doc) for a in ATTRIBUTES],
            "splits": {}}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        for key in ("version", "seed", "res"):
            if old.get(key) != meta[key]:
                raise ValueError(f"{meta_path} has {key}={old.get(key)!r}, this call {meta[key]!r}")
        meta["splits"] = old.get("splits", {})
    labels_path = out / f"labels_{split}.csv"
    with open(labels_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_CSV_FIXED, *ATTRIBUTE_NAMES, "detail_seed"])
        for i in range(n):
            lab = item_labels(i, split, seed, n_persons)
            writer.writerow([_image_name(split, i), lab["person_id"], split, *[repr(lab[k]) for k in ATTRIBUTE_NAMES],
                             lab["detail_seed"]])

    chunk = RENDER_CHUNK
    jobs = [(str(out), range(s, min(s + chunk, n)), int(res), split, int(seed), n_persons) for s in range(0, n, chunk)]
    workers = min(workers, render_chunks(n))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"synthfaces {split} {res}px", unit="img")
    t0 = time.time()
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            for done in pool.imap_unordered(_write_chunk, jobs):
                if bar is not None:
                    bar.update(done)
    else:
        for job in jobs:
            done = _write_chunk(job)
            if bar is not None:
                bar.update(done)
    if bar is not None:
        bar.close()

    meta["splits"][split] = {"n": int(n), "n_persons": n_persons,
                             "person_id_offset": 0 if split == "train" else TEST_PERSON_OFFSET,
                             "labels": labels_path.name, "images": f"images/{split}",
                             "seconds": round(time.time() - t0, 3)}
    meta_path.write_text(json.dumps(meta, indent=2))
    return labels_path


def read_labels(path) -> List[dict]:
    """Read a ``labels_<split>.csv`` written by :func:`write_dataset`.

    Returns one dict per row: ``file`` (str, relative to the folder), ``person_id`` (int), ``split`` (str), every
    attribute (float, bit-exact) and ``detail_seed`` (int) -- the same dicts :func:`item_labels` returns, plus
    ``file``.
    """
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        expected = [*_CSV_FIXED, *ATTRIBUTE_NAMES, "detail_seed"]
        if reader.fieldnames != expected:
            raise ValueError(f"{path}: columns {reader.fieldnames} != {expected}")
        for r in reader:
            row = {"file": r["file"], "person_id": int(r["person_id"]), "split": r["split"]}
            row.update({k: float(r[k]) for k in ATTRIBUTE_NAMES})
            row["detail_seed"] = int(r["detail_seed"])
            rows.append(row)
    return rows


def read_meta(out_dir) -> dict:
    """The ``meta.json`` of a folder written by :func:`write_dataset`."""
    return json.loads((Path(out_dir) / "meta.json").read_text())


class SynthFacesFolder(_TorchDataset):
    """A split written by :func:`write_dataset`, read back from disk; items as in :class:`SynthFaces`."""

    def __init__(self, root, split: str = "train", transform: Optional[Callable] = None):
        _check_split(split)
        self.root = Path(root)
        self.rows = read_labels(self.root / f"labels_{split}.csv")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self, i: int) -> dict:
        return self.rows[i]

    def __getitem__(self, i: int):
        from PIL import Image

        row = self.rows[i]
        with Image.open(self.root / row["file"]) as im:
            x = _image_to_tensor(np.array(im.convert("RGB")))
        if self.transform is not None:
            x = self.transform(x)
        return x, _label_tensors(row)


# ----------------------------------------------------------------------------------------------------------------
# Preview grids (docs and eyeballing)
# ----------------------------------------------------------------------------------------------------------------


def _tile(images: Sequence[np.ndarray], cols: int, scale: int = 1, gap: int = 0) -> np.ndarray:
    res = images[0].shape[0]
    rows = (len(images) + cols - 1) // cols
    step = res + gap
    grid = np.full((rows * step - gap, cols * step - gap, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * step:r * step + res, c * step:c * step + res] = im
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid


def sample_grid(rows: int = 8, cols: int = 8, res: int = 64, seed: int = 0, split: str = "train",
                scale: int = 2) -> np.ndarray:
    """``rows x cols`` items of a split, each a different person; uint8, upscaled ``scale``x (nearest)."""
    ds = SynthFaces(rows * cols, res, split, seed, n_persons=rows * cols)
    return _tile([ds.image(i) for i in range(len(ds))], cols, scale)


def attribute_sweep_grid(person_id: int = 40, seed: int = 0, res: int = 64, steps: int = 7, scale: int = 2,
                         base: Optional[Dict[str, float]] = None, labels: bool = True) -> np.ndarray:
    """One row per attribute (in :data:`ATTRIBUTES` order), sweeping it from low to high over ``steps`` columns
    while the others stay at ``base`` (default :func:`neutral_attributes`); same person and detail seed. ``labels``
    writes each row's name and range in a left margin."""
    identity = sample_identity(person_id, seed)
    base = dict(neutral_attributes() if base is None else base)
    images = []
    for a in ATTRIBUTES:
        for v in np.linspace(a.low, a.high, steps):
            attrs = dict(base, **{a.name: float(round(v)) if a.kind == "binary" else float(v)})
            images.append(render_face(identity, attrs, res, detail_seed=seed))
    grid = _tile(images, steps, scale, gap=1)
    if not labels:
        return grid
    from PIL import Image, ImageDraw

    margin = 96
    canvas = Image.new("RGB", (grid.shape[1] + margin, grid.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = (res + 1) * scale
    for k, a in enumerate(ATTRIBUTES):
        top = k * row_h + row_h // 2 - 12
        draw.text((4, top), a.name, fill=(0, 0, 0))
        draw.text((4, top + 14), f"{a.low:g} .. {a.high:g}", fill=(90, 90, 90))
    return np.asarray(canvas)


def identity_grid(persons: int = 8, per_person: int = 8, res: int = 64, seed: int = 0, scale: int = 2) -> np.ndarray:
    """One row per person, columns are that person under random attributes: identity must survive them."""
    images = []
    for p in range(persons):
        identity = sample_identity(p, seed)
        for k in range(per_person):
            rng = np.random.default_rng([seed, p, k, 0x1D])
            images.append(render_face(identity, sample_attributes(rng), res, detail_seed=int(rng.integers(2 ** 31))))
    return _tile(images, per_person, scale, gap=1)
