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

Rendering is vectorised numpy on a supersampled coordinate grid (4x at 64 px) with soft signed-distance shapes, an
area (box) downsample, then lighting and fine detail at the output resolution. Coordinates inside are normalised:
x, y in [-1, 1], x to the right and y *down*, (0, 0) the image centre.

The on-the-fly dataset is :class:`SynthFaces`; :func:`write_dataset` / :func:`read_labels` store and load a folder.
"""
from __future__ import annotations

import csv
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
    "write_dataset", "read_labels", "read_meta",
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
_FRAME_COLOURS = [(0.05, 0.05, 0.05), (0.30, 0.18, 0.08), (0.75, 0.62, 0.30), (0.62, 0.10, 0.10), (0.15, 0.22, 0.50),
                  (0.55, 0.55, 0.58)]


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
        "eye_width": u(0.075, 0.095),          # half-width of an eye opening
        "eye_height": u(0.036, 0.052),         # upper-lid height above the eye line
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
        "glasses_thickness": u(0.012, 0.024),
        "freckles": float(max(0.0, u(-1.5, 1.0))) * light,
        "mole": [u(-0.35, 0.35), u(-0.05, 0.55)] if rng.uniform() < 0.3 else None,
    }
    return {k: (float(v) if isinstance(v, (np.floating, float)) and not isinstance(v, bool) else v)
            for k, v in identity.items()}


def sample_attributes(rng: np.random.Generator) -> Dict[str, float]:
    """Draw one image's attributes (see :data:`ATTRIBUTES`) from ``rng``; returns ``{name: float}``.

    Distributions: smile uniform [-1, 1] (with more mass on positive); yaw normal(0, 0.45) clipped to [-1, 1];
    age uniform [0, 1]; glasses 1 with p = 0.3; eyes_open 1 - beta-ish (a quarter of the images anywhere in
    [0, 1], the rest in [0.7, 1]); light_x, light_y uniform [-1, 1]; background a random muted colour with a
    uniform gradient in [-1, 1].
    """
    smile = rng.uniform(-1.0, 1.0) if rng.uniform() < 0.6 else rng.uniform(0.0, 1.0)
    yaw = float(np.clip(rng.normal(0.0, 0.45), -1.0, 1.0))
    age = rng.uniform(0.0, 1.0)
    glasses = 1.0 if rng.uniform() < 0.3 else 0.0
    eyes_open = rng.uniform(0.0, 1.0) if rng.uniform() < 0.25 else rng.uniform(0.7, 1.0)
    light_x = rng.uniform(-1.0, 1.0)
    light_y = rng.uniform(-1.0, 1.0)
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.05, 0.6), rng.uniform(0.25, 0.95)
    bg = _hsv_to_rgb(hue, sat, val)
    grad = rng.uniform(-1.0, 1.0)
    return {"smile": float(smile), "yaw": yaw, "age": float(age), "glasses": glasses, "eyes_open": float(eyes_open),
            "light_x": float(light_x), "light_y": float(light_y), "bg_r": float(bg[0]), "bg_g": float(bg[1]),
            "bg_b": float(bg[2]), "bg_gradient": float(grad)}


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

_SKIN, _HAIR, _OTHER, _BACKGROUND = 0, 1, 2, 3  # material ids; masks drive lighting and fine detail


class _Canvas:
    """An ``n x n`` float RGB image (channels first, which makes windowed blending fast) plus material coverage."""

    def __init__(self, n: int):
        self.n = n
        self.px = 2.0 / n  # one pixel in normalised units
        self.coords = ((np.arange(n, dtype=np.float32) + 0.5) * self.px - 1.0).astype(np.float32)
        self.rgb = np.empty((3, n, n), np.float32)
        self.skin = np.zeros((n, n), np.float32)
        self.hair = np.zeros((n, n), np.float32)
        self.fg = np.zeros((n, n), np.float32)  # anything but background: what the light shades

    def window(self, x0: float, x1: float, y0: float, y1: float):
        """Pixel slices and 1-D coordinates (``x [1, w]``, ``y [h, 1]``) covering a normalised box, or None."""
        n, px = self.n, self.px
        i0, i1 = max(0, int((x0 + 1.0) / px)), min(n, int(math.ceil((x1 + 1.0) / px)))
        j0, j1 = max(0, int((y0 + 1.0) / px)), min(n, int(math.ceil((y1 + 1.0) / px)))
        if i1 <= i0 or j1 <= j0:
            return None
        return (slice(j0, j1), slice(i0, i1)), self.coords[None, i0:i1], self.coords[j0:j1, None]

    def paint(self, sl, alpha: np.ndarray, colour, material: Optional[int] = None) -> None:
        """Alpha-blend the constant ``colour`` [3] into window ``sl`` with coverage ``alpha`` ``[h, w]``.

        ``material`` (skin, hair, other) also updates the coverage masks; None leaves them (shadows, lines).
        """
        alpha = np.broadcast_to(alpha, (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
        # crop to the rows and columns the shape actually touches
        rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
        if rows.size == 0:
            return
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        alpha = alpha[r0:r1, c0:c1]
        sl = (slice(sl[0].start + r0, sl[0].start + r1), slice(sl[1].start + c0, sl[1].start + c1))
        for c in range(3):
            region = self.rgb[c][sl]
            t = np.subtract(np.float32(colour[c]), region)
            t *= alpha
            region += t
        if material is not None:
            keep = 1.0 - alpha
            for mask, on in ((self.skin, material == _SKIN), (self.hair, material == _HAIR), (self.fg, True)):
                region = mask[sl]
                region *= keep
                if on:
                    region += alpha


def _cover(sd, width):
    """Soft coverage of a signed distance (negative inside); ``width`` is the anti-aliasing ramp."""
    return np.clip(0.5 - sd * (1.0 / width), 0.0, 1.0)


def _ellipse_sd(x, y, cx, cy, a, b):
    """Approximate signed distance to an axis-aligned ellipse (first-order, exact on the boundary)."""
    gx, gy = (x - cx) * (1.0 / (a * a)), (y - cy) * (1.0 / (b * b))
    f = (x - cx) * gx + (y - cy) * gy - 1.0
    return f / (2.0 * np.sqrt(gx * gx + gy * gy) + 1e-4)


def _circle_sd(x, y, cx, cy, r):
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _round_box_sd(x, y, cx, cy, hw, hh, r):
    qx, qy = np.abs(x - cx) - (hw - r), np.abs(y - cy) - (hh - r)
    return np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - r


def _mix(a, b, t):
    return np.asarray(a, np.float32) + (np.asarray(b, np.float32) - np.asarray(a, np.float32)) * t


def _paint_ellipse(cv, cx, cy, a, b, colour, material=None, soft=1.0, opacity=1.0):
    win = cv.window(cx - a - 4 * soft * cv.px, cx + a + 4 * soft * cv.px, cy - b - 4 * soft * cv.px,
                    cy + b + 4 * soft * cv.px)
    if win is None:
        return
    sl, x, y = win
    alpha = _cover(_ellipse_sd(x, y, cx, cy, a, b), soft * cv.px)
    if opacity != 1.0:
        alpha *= opacity
    cv.paint(sl, alpha, colour, material)


def _paint_curve(cv, x0, x1, centre: Callable, half_thickness: Callable, colour, opacity=1.0, material=None,
                 soft=1.0, pad=0.08):
    """A band around the curve ``y = centre(x)`` for ``x in [x0, x1]``, thickness ``half_thickness(x)``."""
    win = cv.window(x0, x1, -1.0, 1.0)
    if win is None:
        return
    sl, x, _ = win
    yc, ht = centre(x), half_thickness(x)
    lo, hi = float(np.min(yc - ht)) - pad, float(np.max(yc + ht)) + pad
    win = cv.window(x0, x1, lo, hi)
    if win is None:
        return
    sl, x, y = win
    yc, ht = centre(x), half_thickness(x)
    slope = np.gradient(yc[0], cv.px)[None, :] if yc.shape[1] > 1 else 0.0
    sd = (np.abs(y - yc) - ht) / np.sqrt(1.0 + slope * slope)
    alpha = _cover(sd, soft * cv.px)
    alpha *= opacity if np.ndim(opacity) == 0 else opacity
    cv.paint(sl, alpha, colour, material)


# ----------------------------------------------------------------------------------------------------------------
# The face
# ----------------------------------------------------------------------------------------------------------------


def _default_supersample(res: int) -> int:
    return 4 if res <= 64 else (2 if res <= 256 else 1)


def render_face(identity: dict, attributes: Dict[str, float], res: int = 64, detail_seed: int = 0,
                supersample: Optional[int] = None) -> np.ndarray:
    """Render one face; returns ``uint8 [res, res, 3]``.

    ``identity`` from :func:`sample_identity`, ``attributes`` a dict with every name in :data:`ATTRIBUTE_NAMES`,
    ``detail_seed`` seeds the fine detail (skin texture, freckles, strands, clothing, background noise). The
    result is a pure function of the arguments (same bytes every time, on any machine with the same numpy).
    ``supersample`` (default 4 at <= 64 px, else 2) is the internal oversampling before the area downsample.
    """
    if res < 16:
        raise ValueError("res must be at least 16")
    missing = set(ATTRIBUTE_NAMES) - set(attributes)
    if missing:
        raise KeyError(f"missing attributes {sorted(missing)}")
    ss = supersample or _default_supersample(res)
    rng = np.random.default_rng([int(detail_seed) & 0xFFFFFFFF, 0xDE7A11])
    cv = _Canvas(res * ss)
    g = _Geometry(identity, attributes)
    hair_colour = _hair_colour(identity, attributes["age"])
    skin = _skin_colour(identity, attributes["age"])

    _draw_background(cv, attributes)
    _draw_body(cv, g, skin, rng)
    _draw_hair(cv, g, identity, hair_colour, front=False)
    _draw_neck(cv, g, skin)
    ears_over_hair = identity["hair_style"] in ("short", "bald", "bun", "buzz")
    if not ears_over_hair:
        _draw_ears(cv, g, skin)
    _draw_head_skin(cv, g, skin)
    if ears_over_hair:
        _draw_ears(cv, g, skin)
    _draw_face_relief(cv, g, identity, attributes, skin)
    _draw_eyes(cv, g, identity, attributes, skin)
    _draw_brows(cv, g, identity, hair_colour, skin)
    _draw_nose(cv, g, identity, attributes, skin)
    _draw_facial_hair(cv, g, identity, hair_colour, skin, part="beard")
    _draw_mouth(cv, g, identity, attributes, skin)
    _draw_facial_hair(cv, g, identity, hair_colour, skin, part="moustache")
    _draw_hair(cv, g, identity, hair_colour, front=True)
    if attributes["glasses"] >= 0.5:
        _draw_glasses(cv, g, identity)

    # area downsample to the output grid; the soft shapes above are already anti-aliased at the internal scale
    img = _area_downsample(cv.rgb, ss).transpose(1, 2, 0)
    mat = np.stack([_area_downsample(m, ss) for m in (cv.skin, cv.hair, cv.fg)], axis=-1)
    img = _light_and_detail(img, mat, g, identity, attributes, hair_colour, rng)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _area_downsample(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k x k`` blocks of the last two axes (the exact pixel-area integral of the supersampled image)."""
    *lead, h, w = a.shape
    rows = a.reshape(*lead, h // k, k, w)
    acc = rows[..., 0, :].copy()
    for i in range(1, k):
        acc += rows[..., i, :]
    acc = acc.reshape(*lead, h // k, w // k, k).sum(axis=-1)
    acc *= 1.0 / (k * k)
    return acc


def _hair_colour(identity, age):
    grey = np.clip((age - 0.3) / 0.65, 0.0, 1.0) ** 1.2
    base = np.asarray(identity["hair_colour"], np.float32)
    return _mix(base, (0.78, 0.78, 0.77), 0.9 * grey)


def _skin_colour(identity, age):
    s = np.asarray(identity["skin"], np.float32)
    grey = s.mean()
    return _mix(s, grey + 0.35 * (s - grey), 0.25 * age) * (1.0 - 0.04 * age)


class _Geometry:
    """Where everything goes, after the head turn; all in normalised units."""

    HEAD_R = 0.62  # radius of the cylinder the face features sit on
    NOSE_R = 0.80  # the nose tip sticks out further, so it moves more when the head turns

    def __init__(self, idt: dict, attrs: Dict[str, float]):
        self.theta = attrs["yaw"] * math.pi / 6.0
        age, smile = attrs["age"], attrs["smile"]
        self.age, self.smile = age, smile
        self.sin_t = math.sin(self.theta)
        ed = idt["eye_spacing"]
        # FFHQ-style alignment: the crop is centred on the (turned) eyes, so shift everything by their midpoint
        self.shift = 0.5 * (self._proj_raw(-ed, self.HEAD_R) + self._proj_raw(ed, self.HEAD_R))
        self.eye_y = -0.06 + idt["eye_dy"]
        self.face_w = idt["face_width"]
        self.chin_y = idt["chin_y"] + 0.025 * age
        self.cheek_y = idt["cheek_y"]
        # head silhouette centre (the skull does not move with the features; the crop follows the eyes)
        self.head_x = -self.shift
        # jaw centre follows the chin, which sits on the face cylinder
        self.chin_x = self.proj(0.0)
        self.nose_x = self.proj(0.0, self.NOSE_R)
        self.mouth_y = idt["mouth_y"] + 0.012 * age
        self.nose_y = idt["nose_y"] + 0.015 * age
        self.ear_scale = idt["ear_size"]
        self.ear_y = idt["ear_y"]
        self.idt = idt

    def _proj_raw(self, xf, r):
        return r * math.sin(math.asin(max(-1.0, min(1.0, xf / r))) + self.theta)

    def proj(self, xf: float, r: float = HEAD_R) -> float:
        """Frontal x of a feature on a cylinder of radius ``r`` -> image x after the head turn."""
        return self._proj_raw(xf, r) - self.shift


def _face_sd(g: _Geometry, idt, x, y):
    """Signed distance (approximately, in x) to the face outline: temples -> cheeks -> jaw -> chin."""
    a0 = g.face_w
    cy, chy = g.cheek_y, g.chin_y
    above = np.clip((cy - y) / (cy + 0.45), 0.0, 1.0)
    t = np.clip((y - cy) / (chy - cy), 0.0, 1.0)
    p = idt["jaw_power"]
    cw = idt["chin_width"]
    jaw = cw + (a0 - cw) * np.power(np.maximum(1.0 - np.power(t, p), 0.0), 1.0 / p)
    sag = 0.03 * g.age * np.sin(np.pi * np.clip(t * 1.25, 0, 1))  # jowls
    half = np.where(y < cy, a0 * (1.0 - 0.12 * above * above), jaw + sag)
    # the jaw swings with the chin; the leading side is foreshortened, the trailing side shows more cheek
    swing = np.clip((y - cy + 0.2) / (chy - cy + 0.2), 0.0, 1.0)
    cx = g.head_x + (g.chin_x - g.head_x) * swing
    s = g.sin_t / 0.5  # -1..1 at +-30 degrees
    lead = 1.0 - 0.16 * abs(s) * swing
    trail = 1.0 + 0.04 * abs(s)
    right = half * (lead if s > 0 else trail)
    left = half * (trail if s > 0 else lead)
    dx = x - cx
    sd = np.where(dx > 0, dx - right, -dx - left)
    slope = np.gradient(half[:, 0], y[:, 0])[:, None] if y.shape[0] > 1 else 0.0
    sd = sd / np.sqrt(1.0 + np.minimum(slope * slope, 25.0))
    return np.maximum(np.maximum(sd, y - chy), -0.45 - y)


def _draw_background(cv: _Canvas, attrs):
    base = np.array([attrs["bg_r"], attrs["bg_g"], attrs["bg_b"]], np.float32)
    ramp = 1.0 - 0.35 * attrs["bg_gradient"] * cv.coords  # [n], y down: top brighter when gradient > 0
    cv.rgb[:] = np.clip(base[:, None, None] * ramp[None, :, None], 0, 1)


def _draw_body(cv, g, skin, rng):
    clothes = np.array(_hsv_to_rgb(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.85)), np.float32)
    win = cv.window(-1, 1, 0.55, 1)
    if win is None:
        return
    sl, x, y = win
    bx = g.head_x * 0.6
    shoulders = _ellipse_sd(x, y, bx, 1.38, 1.0, 0.62)
    cv.paint(sl, _cover(shoulders, cv.px), clothes, _OTHER)
    # a slightly darker fold line near the neckline
    neckline = np.abs(y - (0.9 + 0.5 * (x - bx) ** 2)) - 0.02
    cv.paint(sl, _cover(np.maximum(neckline, shoulders), 2 * cv.px) * 0.3, clothes * 0.6)


def _draw_neck(cv, g, skin):
    win = cv.window(-0.45, 0.45, 0.2, 1)
    if win is None:
        return
    sl, x, y = win
    nx = g.head_x * 0.7 + g.chin_x * 0.3
    half = 0.2 * g.face_w / 0.48 + 0.05 * np.clip((y - 0.85) / 0.15, 0, 1) ** 2
    bottom = 0.93 + 0.5 * (x - nx) ** 2  # neckline of the shirt
    sd = np.maximum(np.abs(x - nx) - half, y - bottom)
    cv.paint(sl, _cover(sd, cv.px), skin * 0.82, _SKIN)
    # shadow under the jaw
    shadow = np.clip(1.0 - (y - g.chin_y + 0.05) / 0.18, 0, 1) * _cover(sd, cv.px)
    cv.paint(sl, shadow * 0.45, skin * 0.5)


def _draw_ears(cv, g, skin):
    idt_scale = g.ear_scale
    for side in (-1, 1):
        # an ear sits at the side of the head; it grows on the trailing side and hides on the leading side
        facing = -side * g.sin_t / 0.5  # +1 when this ear turns towards the camera
        w = 0.055 * idt_scale * (1.0 + 0.35 * facing)
        h = 0.12 * idt_scale
        if w <= 0.01:
            continue
        cx = g.head_x + side * (g.face_w * (1.0 + 0.04 * abs(g.sin_t) * 2) + 0.015 - 0.5 * facing * 0.03)
        cy = g.ear_y
        _paint_ellipse(cv, cx, cy, w, h, skin * 0.93, _SKIN)
        _paint_ellipse(cv, cx + side * 0.008, cy - 0.01, w * 0.55, h * 0.62, skin * 0.72, soft=2.0, opacity=0.7)


def _draw_head_skin(cv, g, skin):
    win = cv.window(-1, 1, -0.95, g.chin_y + 0.02)
    if win is None:
        return
    sl, x, y = win
    sd = _face_sd(g, g.idt, x, y)
    skull = _ellipse_sd(x, y, g.head_x, -0.16, g.face_w * 1.0, 0.66)
    cv.paint(sl, _cover(np.minimum(sd, skull), cv.px), skin, _SKIN)


def _draw_face_relief(cv, g, idt, attrs, skin):
    """Cheek blush, eye sockets, smile and age lines -- soft shapes that read as 3-D form at low resolution."""
    smile, age = attrs["smile"], attrs["age"]
    for side in (-1, 1):
        cx = g.proj(side * 0.27)
        # cheeks: a warm blob, raised by smiling
        _paint_ellipse(cv, cx, 0.22 - 0.04 * max(smile, 0), 0.1, 0.07, skin * np.array([1.05, 0.8, 0.78]),
                       soft=14.0, opacity=idt["blush"] + 0.2 * max(smile, 0))
        # eye sockets
        ex = g.proj(side * idt["eye_spacing"])
        _paint_ellipse(cv, ex, g.eye_y - 0.02, idt["eye_width"] * 1.35, 0.07, skin * 0.78, soft=10.0,
                       opacity=0.35 + 0.25 * max(attrs["light_y"], 0))
    wrinkle = skin * 0.62
    a = age ** 1.3
    if a > 0.05:
        # forehead lines
        for k, yy in enumerate((-0.36, -0.29, -0.22)):
            _paint_curve(cv, g.proj(-0.22), g.proj(0.22), lambda x, yy=yy: yy + 0.2 * (x - g.proj(0)) ** 2,
                         lambda x: np.full_like(x, 0.006), wrinkle, opacity=0.55 * a, soft=2.0)
        for side in (-1, 1):
            ex = g.proj(side * idt["eye_spacing"])
            # crow's feet and eye bags
            for k in (-1, 0, 1):
                x0 = ex + side * idt["eye_width"] * 1.15
                _paint_curve(cv, min(x0, x0 + side * 0.06), max(x0, x0 + side * 0.06),
                             lambda x, k=k, x0=x0: g.eye_y + 0.01 + k * 0.02 * (1 + side * (x - x0) * 8),
                             lambda x: np.full_like(x, 0.005), wrinkle, opacity=0.5 * a, soft=2.0)
            _paint_curve(cv, ex - idt["eye_width"] * 0.8, ex + idt["eye_width"] * 0.8,
                         lambda x, ex=ex: g.eye_y + 0.055 + 0.8 * (x - ex) ** 2 * 0 + 4 * (x - ex) ** 2,
                         lambda x: np.full_like(x, 0.007), wrinkle, opacity=0.6 * a, soft=2.5)
    # nasolabial folds: from the nose wings to beyond the mouth corners; deepen with smile and age
    fold = 0.25 * max(smile, 0) + 0.55 * a
    if fold > 0.03:
        mw = idt["mouth_width"] * (1 + 0.2 * max(smile, 0))
        for side in (-1, 1):
            xa, ya = g.proj(side * (idt["nose_width"] + 0.04)), g.nose_y - 0.01
            xb, yb = g.proj(side * (mw + 0.04)), g.mouth_y + 0.06
            x0, x1 = min(xa, xb), max(xa, xb)

            def centre(x, xa=xa, ya=ya, xb=xb, yb=yb):
                t = np.clip((x - xa) / (xb - xa + 1e-6), 0, 1)
                return ya + (yb - ya) * t ** 0.6

            _paint_curve(cv, x0, x1, centre, lambda x: np.full_like(x, 0.008), skin * 0.6, opacity=fold, soft=2.5)


def _eye_boundaries(g, idt, attrs, side, x):
    """Upper and lower lid curves ``y(x)`` of one eye and the coverage ramp in x."""
    ed, ew, eh = idt["eye_spacing"], idt["eye_width"], idt["eye_height"]
    inner, outer = g.proj(side * (ed - ew)), g.proj(side * (ed + ew))
    centre = g.proj(side * ed)
    half_in, half_out = abs(centre - inner), abs(outer - centre)
    d = x - centre
    u = np.where(side * d > 0, d / max(half_out, 1e-3), d / max(half_in, 1e-3)) * side  # -1 inner .. +1 outer
    u = np.clip(u, -1.5, 1.5)
    base = 1.0 - np.minimum(u * u, 1.0)
    tilt = -idt["eye_tilt"] * u  # outer corner up for positive tilt
    ey = g.eye_y + tilt
    smile_squint = 0.3 * max(attrs["smile"], 0.0)
    age_hood = 0.15 * attrs["age"]
    upper_open = ey - eh * np.power(base, 0.55) * (1.0 - age_hood) * (1.0 + 0.15 * (u < 0))
    lower = ey + 0.55 * eh * np.power(base, 0.8) * (1.0 - smile_squint)
    closed = ey + 0.22 * eh * base
    op = float(np.clip(attrs["eyes_open"], 0, 1))
    upper = closed + (upper_open - closed) * op
    return upper, lower, closed, u, centre, min(inner, outer), max(inner, outer)


def _draw_eyes(cv, g, idt, attrs, skin):
    ew, eh = idt["eye_width"], idt["eye_height"]
    iris = np.asarray(idt["iris"], np.float32)
    lx = attrs["light_x"]
    for side in (-1, 1):
        centre = g.proj(side * idt["eye_spacing"])
        win = cv.window(centre - 1.6 * ew, centre + 1.6 * ew, g.eye_y - 2.2 * eh, g.eye_y + 1.6 * eh)
        if win is None:
            continue
        sl, x, y = win
        upper, lower, closed, u, c, x_in, x_out = _eye_boundaries(g, idt, attrs, side, x)
        xin = _cover(np.abs(u) - 1.0, cv.px * 3 / max(ew, 1e-3))  # soft ends
        opening = np.minimum(_cover(upper - y, cv.px), _cover(y - lower, cv.px)) * xin
        # upper lid crease and a lid shadow above the eye
        crease = upper - 0.5 * eh * (1 - np.minimum(u * u, 1)) - 0.012 - 0.02 * (1 - attrs["eyes_open"])
        lid = _cover(np.abs(y - crease) - 0.005, 2 * cv.px) * xin
        cv.paint(sl, lid * 0.35, skin * 0.55)
        # sclera, iris, pupil, catch light
        cv.paint(sl, opening, np.array([0.93, 0.91, 0.88], np.float32), _OTHER)
        gaze = 0.25 * ew * math.sin(g.theta)
        ir = 0.95 * eh
        ix, iy = c + gaze, g.eye_y + 0.1 * eh
        cv.paint(sl, _cover(_circle_sd(x, y, ix, iy, ir), cv.px) * opening, iris)
        cv.paint(sl, _cover(_circle_sd(x, y, ix, iy, ir), 2 * cv.px) * opening *
                 _cover(np.abs(_circle_sd(x, y, ix, iy, ir)) - 0.004, cv.px), iris * 0.45)
        cv.paint(sl, _cover(_circle_sd(x, y, ix, iy, 0.45 * ir), cv.px) * opening, np.array([0.03, 0.03, 0.03]))
        hx, hy = ix + 0.35 * ir * (0.5 + 0.5 * lx), iy - 0.35 * ir
        cv.paint(sl, _cover(_circle_sd(x, y, hx, hy, 0.22 * ir), cv.px) * opening * 0.9, np.array([1, 1, 1]))
        # shadow of the upper lid on the eyeball, then the lash line
        cv.paint(sl, _cover(y - upper - 0.3 * eh, 2 * cv.px) * opening * 0.35, np.array([0.25, 0.2, 0.2]))
        lash = (np.abs(y - upper) - 0.009 - 0.004 * (1 - np.minimum(u * u, 1))) * 1.0
        lash_x = _cover(np.abs(u) - 1.1, cv.px * 2 / max(ew, 1e-3))
        cv.paint(sl, _cover(lash, cv.px) * lash_x, np.array([0.07, 0.05, 0.05]), _OTHER)
        low = np.abs(y - lower) - 0.003
        cv.paint(sl, _cover(low, cv.px) * xin * 0.5 * attrs["eyes_open"], skin * 0.6)


def _draw_brows(cv, g, idt, hair_colour, skin):
    colour = _mix(skin, hair_colour * 0.7, idt["brow_darkness"])
    ed, ew = idt["eye_spacing"], idt["eye_width"]
    by = g.eye_y - idt["brow_gap"] + 0.012 * g.age - 0.02 * max(g.smile, 0)
    th = idt["brow_thickness"] * (1 - 0.2 * g.age)
    for side in (-1, 1):
        xa, xb = g.proj(side * (ed - 1.05 * ew)), g.proj(side * (ed + 1.25 * ew))
        x0, x1 = min(xa, xb), max(xa, xb)

        def centre(x, xa=xa, xb=xb):
            t = np.clip((x - xa) / (xb - xa), 0, 1)  # 0 inner .. 1 outer
            return by - idt["brow_arch"] * np.sin(np.pi * np.clip(t * 0.9 + 0.1, 0, 1)) - idt["brow_tilt"] * t

        def half(x, xa=xa, xb=xb):
            t = np.clip((x - xa) / (xb - xa), 0, 1)
            return 0.5 * th * (1.15 - 0.7 * t ** 2) * np.clip(np.minimum(t, 1 - t) * 12, 0.3, 1.0)

        _paint_curve(cv, x0, x1, centre, half, colour, soft=1.5)


def _draw_nose(cv, g, idt, attrs, skin):
    nw, ny = idt["nose_width"], g.nose_y
    nx = g.nose_x
    lx, ly = attrs["light_x"], attrs["light_y"]
    s = g.sin_t / 0.5
    # bridge: a soft shadow on the side away from the light (and on the far side when turned)
    shade_side = -1.0 if lx - 0.5 * s > 0 else 1.0
    strength = idt["nose_bridge"] * (0.25 + 0.35 * abs(lx - 0.5 * s))
    top = g.eye_y + 0.04
    win = cv.window(nx - 2 * nw, nx + 2 * nw, top, ny + 0.07)
    if win is not None:
        sl, x, y = win
        t = np.clip((y - top) / (ny - top), 0, 1)
        xc = g.head_x * 0 + (g.proj(0.0) + (nx - g.proj(0.0)) * t)
        w = 0.022 + (nw * 0.75 - 0.022) * t ** 2
        band = np.abs(x - (xc + shade_side * w)) - 0.012 - 0.01 * t
        alpha = _cover(band, 6 * cv.px) * np.clip(1.2 - np.abs(2 * t - 1.1), 0, 1) * strength
        cv.paint(sl, alpha, skin * 0.6)
        # nose tip and wings: a lighter ball, a shadow beneath, two nostrils
        _paint_ellipse(cv, nx - shade_side * 0.01, ny - 0.02, nw * 0.55, 0.04, np.minimum(skin * 1.12, 1),
                       soft=8, opacity=0.5)
    under = 0.35 + 0.3 * max(ly, 0)
    _paint_ellipse(cv, nx + 0.02 * lx * -1, ny + 0.035, nw * 1.0, 0.022, skin * 0.55, soft=5, opacity=under)
    for side in (-1, 1):
        facing = 1.0 - 0.5 * max(0.0, side * s)
        ox = nx + side * nw * 0.5 * facing - 0.01 * s
        _paint_ellipse(cv, ox, ny + 0.018, 0.02 * facing + 0.004, 0.011, skin * 0.3, soft=1.5, opacity=0.85)
        # wing outline
        _paint_ellipse(cv, nx + side * nw * 0.95 * facing, ny + 0.0, 0.02, 0.035, skin * 0.65, soft=3.0,
                       opacity=0.5)


def _draw_mouth(cv, g, idt, attrs, skin):
    smile, age = attrs["smile"], attrs["age"]
    mw = idt["mouth_width"] * (1.0 + 0.18 * max(smile, 0.0) - 0.05 * max(-smile, 0.0))
    left, right, centre = g.proj(-mw), g.proj(mw), g.proj(0.0, 0.66)
    my = g.mouth_y
    win = cv.window(left - 0.02, right + 0.02, my - 0.12, my + 0.14)
    if win is None:
        return
    sl, x, y = win
    u = np.where(x < centre, (x - centre) / max(centre - left, 1e-3), (x - centre) / max(right - centre, 1e-3))
    u2 = np.minimum(u * u, 1.0)
    body = 1.0 - u2
    lift = 0.06 * smile - 0.02 * age  # corners up with smile, down with frown and age
    line = my - lift * (u2 - 0.3)
    opening = np.clip((smile - 0.3) / 0.7, 0.0, 1.0)
    top_open = line - opening * 0.012 * body
    bot_open = line + opening * 0.075 * np.power(body, 0.7)
    lip_c = np.asarray(idt["lip_colour"], np.float32)
    upper_th = idt["lip_upper"] * (1 - 0.4 * opening) * (1 - 0.3 * age) * np.power(body, 0.5)
    lower_th = idt["lip_lower"] * (1 - 0.3 * opening) * (1 - 0.3 * age) * np.power(body, 0.5)
    # upper lip with a cupid's bow, lower lip
    bow = 0.006 * np.exp(-((u * 6.0) ** 2))
    up_sd = np.maximum(top_open - upper_th + bow - y, y - top_open)
    lo_sd = np.maximum(y - bot_open - lower_th, bot_open - y)
    ends = _cover(np.abs(u) - 1.0, cv.px * 2 / max(mw, 1e-3))
    cv.paint(sl, _cover(up_sd, cv.px) * ends, lip_c * 0.85, _OTHER)
    cv.paint(sl, _cover(lo_sd, cv.px) * ends, lip_c, _OTHER)
    # lower-lip highlight
    cv.paint(sl, _cover(np.abs(y - (bot_open + 0.5 * lower_th)) - 0.3 * lower_th, 3 * cv.px) * ends * 0.25,
             np.minimum(lip_c * 1.4, 1.0))
    if opening > 0.0:
        inside = np.maximum(top_open - y, y - bot_open)
        in_a = _cover(inside, cv.px) * ends
        cv.paint(sl, in_a, np.array([0.25, 0.06, 0.06], np.float32), _OTHER)
        teeth_bottom = top_open + (bot_open - top_open) * 0.55
        teeth = np.maximum(inside, y - teeth_bottom)
        cv.paint(sl, _cover(teeth, cv.px) * _cover(np.abs(u) - 0.8, 0.1) * in_a, np.array([0.94, 0.92, 0.86]))
    # the dark line where the lips meet, and the corners
    cv.paint(sl, _cover(np.abs(y - line) - 0.004, cv.px) * ends * (1 - opening), lip_c * 0.35)
    corners = _cover(np.abs(np.abs(u) - 1.0) * (right - left) * 0.5 - 0.01, 2 * cv.px) * \
        _cover(np.abs(y - line) - 0.01, 2 * cv.px)
    cv.paint(sl, corners * 0.5, skin * 0.5)


def _beard_sd(g, idt, x, y):
    face = _face_sd(g, idt, x, y)
    top = g.nose_y + 0.02 + 0.9 * (x - g.chin_x) ** 2 - 0.05
    return np.maximum(face - 0.01, top - y)


def _draw_facial_hair(cv, g, idt, hair_colour, skin, part):
    kind = idt["facial_hair"]
    if kind == "none":
        return
    colour = hair_colour * 0.85
    if part == "beard" and kind in ("beard", "stubble"):
        win = cv.window(-0.8, 0.8, g.nose_y - 0.1, g.chin_y + 0.05)
        if win is None:
            return
        sl, x, y = win
        alpha = _cover(_beard_sd(g, idt, x, y), (3 if kind == "beard" else 8) * cv.px)
        cv.paint(sl, alpha * (0.95 if kind == "beard" else 0.3), colour if kind == "beard" else skin * 0.45,
                 _HAIR if kind == "beard" else None)
    if part == "moustache" and kind in ("beard", "moustache"):
        mw = idt["mouth_width"] * 1.05
        left, right, centre = g.proj(-mw), g.proj(mw), g.proj(0.0, 0.66)

        def mcentre(x):
            u = np.where(x < centre, (x - centre) / (centre - left), (x - centre) / (right - centre))
            return g.mouth_y - 0.04 + 0.035 * np.minimum(u * u, 1.0)

        def mhalf(x):
            u = np.where(x < centre, (x - centre) / (centre - left), (x - centre) / (right - centre))
            return 0.022 * np.clip(1.2 - np.abs(u), 0, 1)

        _paint_curve(cv, left - 0.02, right + 0.02, mcentre, mhalf, colour, material=_HAIR, soft=2.0)


def _hair_shape_sd(g, idt, x, y):
    """Signed distance to the whole hair mass (drawn behind the head) for the identity's style."""
    style = idt["hair_style"]
    hx = g.head_x
    vol = idt["hair_volume"]
    top = idt["hair_top"]
    a = g.face_w + vol
    if style == "buzz":
        a, top = g.face_w + 0.015, -0.80
    if style == "bun":
        a = g.face_w + 0.02
    cy = -0.16
    b = cy - top
    cap = _ellipse_sd(x, y, hx, cy, a, b)
    if style == "curly":
        ang = np.arctan2(y - cy, x - hx)
        cap = cap - 0.025 * np.sin(ang * idt["curl_freq"] + idt["curl_phase"]) - 0.01
        cap = np.maximum(cap, y - 0.28)
    elif style == "long":
        flare = a + 0.06 * np.clip(y / 0.8, 0, 1)
        drape = np.maximum(np.abs(x - hx * 0.8) - flare, y - idt["hair_length"] - 0.02 * np.sin(x * 40))
        drape = np.maximum(drape, cy - y)
        cap = np.minimum(cap, drape)
    elif style == "fringe":
        cap = np.maximum(cap, y - 0.30)  # bob length
    elif style == "bun":
        cap = np.maximum(cap, y - 0.02)
        bun = _circle_sd(x, y, hx, -0.72 - 0.5 * idt["bun_size"], idt["bun_size"])
        cap = np.minimum(cap, bun)
    elif style in ("short", "buzz"):
        cap = np.maximum(cap, y - (0.02 if style == "short" else -0.05))
    elif style == "bald":
        cap = np.maximum(cap, y - 0.05)
        cap = np.maximum(cap, -0.45 - y)
    return cap


def _hairline(g, idt, x):
    """y of the hairline over the forehead (hair above it covers the skin); ``x [1, w]``."""
    style = idt["hair_style"]
    q = (x - g.proj(idt["hair_part"] * g.face_w * 0.5)) / g.face_w
    recede = 0.18 * g.age * (1.0 if idt["recedes"] else 0.2)
    h0 = idt["hairline"] - recede
    curve = idt["hairline_curve"] + (0.35 * recede if idt["recedes"] else 0.0)
    side = np.clip((np.abs((x - g.head_x) / g.face_w) - 0.72) / 0.25, 0, 1)
    line = h0 + curve * np.minimum(q * q, 1.5) + 0.55 * side ** 2
    if style == "fringe":
        line = idt["fringe_y"] + 0.015 * np.sin(x * 55.0 + idt["curl_phase"]) + 0.05 * q * q + 0.5 * side ** 2
    elif style == "bald":
        line = -0.9 + 0.0 * x + 0.95 * side ** 0.7
    elif style == "curly":
        line = line + 0.01 * np.sin(x * 50 + idt["curl_phase"])
    elif style == "buzz":
        line = line - 0.02
    return line


def _draw_hair(cv, g, idt, colour, front: bool):
    win = cv.window(-1, 1, -1, 1 if not front else 0.45)
    if win is None:
        return
    sl, x, y = win
    shape = _hair_shape_sd(g, idt, x, y)
    if front:
        sd = np.maximum(shape, y - _hairline(g, idt, x))
        if idt["hair_style"] == "bun":  # the bun sits on top of the head, in front of the skull
            sd = np.minimum(sd, _circle_sd(x, y, g.head_x, -0.72 - 0.5 * idt["bun_size"], idt["bun_size"]))
        alpha = _cover(sd, 1.5 * cv.px)
        if idt["hair_style"] == "buzz":
            alpha *= 0.85
    else:
        alpha = _cover(shape, 1.2 * cv.px)
    cv.paint(sl, alpha, colour, _HAIR)
    if not front:
        # the hair behind the head is in shadow
        cv.paint(sl, alpha * _cover(-shape - 0.06, 10 * cv.px) * 0.35, colour * 0.55)


def _draw_glasses(cv, g, idt):
    colour = np.asarray(idt["glasses_colour"], np.float32)
    shape = idt["glasses_shape"]
    th = idt["glasses_thickness"]
    ed, ew = idt["eye_spacing"], idt["eye_width"]
    hw, hh, r = {"round": (1.25 * ew, 1.2 * ew, 1.2 * ew), "rect": (1.45 * ew, 0.95 * ew, 0.3 * ew),
                 "wide": (1.6 * ew, 1.0 * ew, 0.6 * ew)}[shape]
    cy = g.eye_y + 0.012
    centres = []
    for side in (-1, 1):
        cx = g.proj(side * ed)
        fore = abs(g.proj(side * (ed + ew)) - g.proj(side * (ed - ew))) / (2 * ew)  # foreshortening
        w = hw * fore
        centres.append((cx, w))
        win = cv.window(cx - w - 0.03, cx + w + 0.03, cy - hh - 0.03, cy + hh + 0.03)
        if win is None:
            continue
        sl, x, y = win
        sd = _round_box_sd(x, y, cx, cy, w, hh, min(r, w, hh))
        cv.paint(sl, _cover(sd, cv.px) * 0.12, np.array([0.6, 0.7, 0.8], np.float32))  # lens tint
        glare = _cover(np.abs((x - cx) + (y - cy) * 0.8 + 0.3 * w) - 0.012, 2 * cv.px) * _cover(sd, cv.px)
        cv.paint(sl, glare * 0.35, np.array([1, 1, 1], np.float32))
        cv.paint(sl, _cover(np.abs(sd) - th * 0.5, cv.px), colour, _OTHER)
        # the arm towards the ear
        ear_x = g.head_x + side * (g.face_w + 0.02)
        xa, xb = cx + side * w, ear_x
        if (xb - xa) * side > 0.005:
            _paint_curve(cv, min(xa, xb), max(xa, xb), lambda x_: np.full_like(x_, cy - hh * 0.5),
                         lambda x_: np.full_like(x_, th * 0.45), colour, material=_OTHER)
    (lx, lw), (rx, rw) = centres
    _paint_curve(cv, lx + lw - 0.005, rx - rw + 0.005, lambda x_: cy - hh * 0.35 - 0.4 * (x_ - 0.5 * (lx + rx)) ** 2
                 * 0 - 0.01 + 8 * (x_ - 0.5 * (lx + rx)) ** 2, lambda x_: np.full_like(x_, th * 0.45), colour,
                 material=_OTHER)


def _light_and_detail(img, mat, g, idt, attrs, hair_colour, rng):
    """Shade the foreground by the light direction, then add the detail that W cannot hold. Works at output res."""
    res = img.shape[0]
    c = ((np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0)
    x, y = c[None, :], c[:, None]
    skin_m, hair_m, fg = mat[..., 0], mat[..., 1], mat[..., 2]

    # Lambert on an ellipsoid standing in for the head (the neck and shoulders get its outer rim)
    nx, ny = (x - g.head_x) / 0.75, (y + 0.05) / 0.95
    r2 = nx * nx + ny * ny
    nz = np.sqrt(np.clip(1.0 - r2, 0.05, 1.0))
    norm = np.sqrt(r2 + nz * nz)
    lx, ly = attrs["light_x"], -attrs["light_y"]
    lz = 0.9
    ln = math.sqrt(lx * lx + ly * ly + lz * lz)
    lam = np.clip((nx * lx + ny * ly + nz * lz) / (norm * ln), 0.0, 1.0)
    shade = 0.42 + 0.72 * lam
    img = img * (1.0 + fg * (shade - 1.0))[..., None]

    # hair strands: stripes radiating from the crown, each strand its own brightness, phase per image
    if hair_m.max() > 0.01:
        style = idt["hair_style"]
        ang = np.arctan2(y - (-0.25), x - g.head_x)
        if style == "curly":
            tex = rng.normal(0.0, 1.0, (res, res)).astype(np.float32)
            tex = 0.5 * tex + 0.25 * (np.roll(tex, 1, 0) + np.roll(tex, 1, 1))
            tex *= 0.16
        else:
            freq = res * (0.35 if style != "buzz" else 0.6)
            table = rng.normal(0.0, 1.0, 4096).astype(np.float32)
            sid = np.floor(ang * freq / math.pi + rng.uniform(0, 1)).astype(np.int64) % 4096
            tex = 0.1 * table[sid] + 0.05 * rng.normal(0.0, 1.0, (res, res)).astype(np.float32)
        sheen = np.exp(-((np.sqrt((x - g.head_x) ** 2 + (y + 0.25) ** 2) - 0.5) / 0.09) ** 2)
        sheen *= 0.12 * (0.6 + 0.4 * attrs["light_y"])
        img = img * (1.0 + hair_m * tex)[..., None] + (hair_m * sheen)[..., None]

    # skin: pores/noise, a blotchy low-frequency tone, freckles
    if skin_m.max() > 0.01:
        noise = rng.normal(0.0, 0.022 + 0.012 * attrs["age"], (res, res)).astype(np.float32)
        blot = _upsample_noise(rng, 6, res) * (0.025 + 0.03 * attrs["age"])
        img = img * (1.0 + skin_m * (noise + blot))[..., None]
        n_freckles = int(rng.poisson(idt["freckles"] * 60 + 4 * attrs["age"]))
        if n_freckles:
            fx = g.proj(0.0) + rng.uniform(-0.4, 0.4, n_freckles)
            fy = rng.uniform(-0.05, 0.3, n_freckles) + 0.2 * np.abs(fx - g.proj(0.0)) - 0.05
            px = np.clip(((fx + 1) * res / 2).astype(int), 0, res - 1)
            py = np.clip(((fy + 1) * res / 2).astype(int), 0, res - 1)
            dark = rng.uniform(0.08, 0.22, n_freckles).astype(np.float32)
            img[py, px] *= (1.0 - dark * skin_m[py, px])[:, None]
    if idt.get("mole") is not None:
        mx, my = g.proj(idt["mole"][0]), idt["mole"][1]
        r = max(0.012, 1.0 / res)
        d = np.sqrt((x - mx) ** 2 + (y - my) ** 2)
        m = np.clip(1.5 - d / r, 0, 1) * skin_m
        img = img * (1.0 - 0.45 * m)[..., None]

    # background: sensor-ish noise and a faint low-frequency blotch
    bg = 1.0 - fg
    img = img + (bg * (_upsample_noise(rng, 4, res) * 0.05))[..., None]
    img = img + bg[..., None] * rng.normal(0.0, 0.012, (res, res, 3)).astype(np.float32)
    return img


def _upsample_noise(rng, k, res):
    """Smooth noise in ~[-1, 1]: a ``k x k`` normal grid, bilinearly interpolated to ``res x res``."""
    grid = rng.normal(0.0, 1.0, (k, k)).astype(np.float32)
    t = np.linspace(0, k - 1, res, dtype=np.float32)
    i0 = np.minimum(t.astype(int), k - 2)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
