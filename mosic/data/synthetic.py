"""The built-in synthetic video data set, with exact ground-truth point tracks.

Every video is a stack of layers, bottom to top: a textured background moved by a camera
(translation, slight zoom and rotation), then 2-5 textured objects in a fixed z-order. Each object
belongs to one of a few classes; a class has its own shape and texture family, so a feature learner
can tell classes apart. Objects translate, rotate and scale smoothly; one object per video swings
out over an image edge and comes back, and objects occlude each other and the background.

Coordinates
-----------
Points are (x, y) pixels, x along the width. Pixel (col, row) covers [col, col + 1) x [row, row + 1)
and its centre is (col + 0.5, row + 0.5); the same convention holds for a layer's texture in its own
layer-local coordinates. Layer ``l`` at frame ``t`` is placed by an affine map ``A[l, t]`` (2 x 3,
layer-local -> image), stored per frame in ``GroundTruth/<video>.json``; frames are rendered from
these maps with ``cv2.warpAffine``, and :class:`SyntheticGroundTruth` tracks points with the very same
maps, analytically.

Layout written by :func:`generate` (YouTube-VOS style)::

    <out>/classes.json                              ["background", "disc", ...]  (index = class id)
    <out>/<split>/JPEGImages/<video>/<nnnnn>.jpg
    <out>/<split>/Annotations/<video>/<nnnnn>.png   palette PNG, 0 = background, 1..K object ids
    <out>/<split>/meta.json                         {"videos": {video: {"objects": {"1": {"category", "frames"}}}}}
    <out>/<split>/GroundTruth/<video>.json          per-layer class, shape and per-frame affines
    <out>/<split>/synthetic.json                    the generation settings (guards against mixing sets)
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from mosic import MosicError
from mosic.data.base import SOURCES
from mosic.data.sources import YtvosSource, list_jpegs, voc_colormap

GENERATOR = "mosic.synthetic/1"
GT_FORMAT = "mosic-synthetic-gt/1"

#: class names; the index is the semantic class id (0 = background)
CLASSES: tuple[str, ...] = ("background", "disc", "box", "triangle", "star", "ellipse")
#: shape and texture family of each object class
CLASS_SHAPES = {1: "circle", 2: "square", 3: "triangle", 4: "star", 5: "ellipse"}
CLASS_TEXTURES = {1: "stripes", 2: "checkers", 3: "dots", 4: "blobs", 5: "rings"}

JPEG_QUALITY = 90
MIN_SIZE = 32

# object-class colour pairs (RGB), jittered per object
_PALETTES = {
    1: ((190, 50, 35), (250, 185, 80)),  # warm stripes
    2: ((20, 35, 110), (95, 195, 235)),  # blue checkers
    3: ((35, 110, 45), (235, 235, 90)),  # green with yellow dots
    4: ((85, 25, 105), (235, 105, 205)),  # purple blobs
    5: ((25, 25, 30), (225, 225, 215)),  # grey rings
}


# ------------------------------------------------------------------------------------------------
# shapes: signed distance (approximate, in layer-local pixels) from a shape centred at the origin
# ------------------------------------------------------------------------------------------------
_TRI_NORMALS = np.array(
    [[math.cos(a), math.sin(a)] for a in (math.pi / 2 + 2 * math.pi * k / 3 for k in range(3))]
)


def shape_sdf(shape: str, radius: float, d: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) of points ``d`` [..., 2] (relative to the shape's
    centre, layer-local pixels) from a shape of circumradius ``radius``."""
    x, y = d[..., 0], d[..., 1]
    R = radius
    if shape == "circle":
        return np.hypot(x, y) - R
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.7 * R
    if shape == "triangle":
        return np.max(d @ _TRI_NORMALS.T, axis=-1) - 0.5 * R
    if shape == "star":
        r = np.hypot(x, y)
        th = np.arctan2(y, x)
        rt = R * (0.5 + 0.5 * ((1 + np.cos(5 * th)) / 2) ** 2)
        return r - rt
    if shape == "ellipse":
        a, b = R, 0.55 * R
        q = np.sqrt((x / a) ** 2 + (y / b) ** 2)
        g = np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2) / np.maximum(q, 1e-9)
        return (q - 1) / np.maximum(g, 1e-9)
    raise ValueError(f"unknown shape {shape!r}")


# ------------------------------------------------------------------------------------------------
# affine helpers
# ------------------------------------------------------------------------------------------------
def _rot(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [..., 2, 2]


def _compose(lin: np.ndarray, trans: np.ndarray) -> np.ndarray:
    return np.concatenate([lin, trans[..., None]], axis=-1)  # [..., 2, 3]


def invert_affines(A: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(A[..., :2])
    return _compose(lin, -np.einsum("...ij,...j->...i", lin, A[..., 2]))


def apply_affine(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``A`` [2, 3] applied to ``pts`` [N, 2]."""
    return pts @ A[:, :2].T + A[:, 2]


def cv2_matrix(A: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The cv2.warpAffine matrix for the continuous map ``A`` (pixel centres at +0.5 on both sides),
    drawing into an output whose pixel (0, 0) is image pixel ``offset`` (col, row)."""
    lin = A[:, :2]
    t = A[:, 2] + lin @ np.array([0.5, 0.5]) - 0.5 - np.asarray(offset, dtype=np.float64)
    return _compose(lin, t)


# ------------------------------------------------------------------------------------------------
# textures
# ------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float, ch: int = 1) -> np.ndarray:
    """Zero-mean, unit-std noise with features about ``scale`` pixels wide: float32 [h, w(, ch)]."""
    gh, gw = int(h / scale) + 4, int(w / scale) + 4
    g = rng.standard_normal((gh, gw, ch)).astype(np.float32)
    up = cv2.resize(g, (int(gw * scale), int(gh * scale)), interpolation=cv2.INTER_CUBIC)
    up = up.reshape(up.shape[0], up.shape[1], ch)
    oy, ox = int(1.5 * scale), int(1.5 * scale)
    out = up[oy : oy + h, ox : ox + w]
    out = (out - out.mean()) / (out.std() + 1e-6)
    return out if ch > 1 else out[..., 0]


def _fine_noise(rng: np.random.Generator, h: int, w: int, sigma: float = 0.8) -> np.ndarray:
    n = rng.standard_normal((h, w)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / (n.std() + 1e-6)


def _colourise(v: np.ndarray, c0, c1) -> np.ndarray:
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    return c0 + v[..., None] * (c1 - c0)


def _object_texture(rng: np.random.Generator, cls: int, S: int) -> np.ndarray:
    """uint8 [S, S, 3] texture of an object of class ``cls``."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    c = S / 2
    phi = rng.uniform(0, np.pi)
    u = (xx - c) * np.cos(phi) + (yy - c) * np.sin(phi)
    w = -(xx - c) * np.sin(phi) + (yy - c) * np.cos(phi)
    fam = CLASS_TEXTURES[cls]
    if fam == "stripes":
        period = rng.uniform(6, 11)
        v = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    elif fam == "checkers":
        cell = rng.uniform(5, 9)
        v = ((np.floor(u / cell) + np.floor(w / cell)) % 2).astype(np.float32)
        v = cv2.GaussianBlur(v, (0, 0), 0.7)
    elif fam == "dots":
        v = np.zeros((S, S), np.float32)
        spacing = rng.uniform(7, 10)
        n = int(S * S / spacing**2)
        for px, py, r in zip(rng.uniform(0, S, n), rng.uniform(0, S, n), rng.uniform(1.8, 3.2, n)):
            cv2.circle(v, (int(px * 16), int(py * 16)), int(r * 16), 1.0, -1, cv2.LINE_AA, 4)
    elif fam == "blobs":
        v = 1 / (1 + np.exp(-2.5 * _smooth_noise(rng, S, S, rng.uniform(4, 7))))
    elif fam == "rings":
        period = rng.uniform(6, 10)
        r = np.hypot(xx - c, yy - c) + 1.5 * np.sin(3 * np.arctan2(yy - c, xx - c))
        v = 0.5 + 0.5 * np.sin(2 * np.pi * r / period)
    else:  # pragma: no cover
        raise ValueError(fam)
    c0, c1 = (np.asarray(p) + rng.integers(-20, 21, 3) for p in _PALETTES[cls])
    img = _colourise(v, c0, c1)
    img += 9 * _smooth_noise(rng, S, S, 10.0, ch=3)
    img += 16 * _fine_noise(rng, S, S)[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _background_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(95, 150, 3).astype(np.float32)
    coarse = rng.uniform(35, 60)
    img = base + 30 * _smooth_noise(rng, h, w, coarse)[..., None]  # mostly brightness,
    img += 9 * _smooth_noise(rng, h, w, coarse, ch=3)  # a little colour
    img += 14 * _smooth_noise(rng, h, w, rng.uniform(8, 14))[..., None]
    # gradient
    g = rng.uniform(-30, 30, 3).astype(np.float32)
    ramp = (np.mgrid[0:h, 0:w][1 if rng.random() < 0.5 else 0] / max(h, w) - 0.5).astype(np.float32)
    img += ramp[..., None] * g
    # clutter: faint rectangles and lines give corners to lock on to
    clutter = np.zeros((h, w, 3), np.float32)
    for _ in range(int(h * w / 1500)):
        col = tuple(float(x) for x in rng.uniform(-40, 40, 3))
        x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        if rng.random() < 0.5:
            x1, y1 = x0 + int(rng.uniform(3, 20)), y0 + int(rng.uniform(3, 20))
            cv2.rectangle(clutter, (x0, y0), (x1, y1), col, -1)
        else:
            a = rng.uniform(0, np.pi)
            L = rng.uniform(8, 30)
            cv2.line(clutter, (x0, y0), (int(x0 + L * np.cos(a)), int(y0 + L * np.sin(a))), col, 1, cv2.LINE_AA)
    img += cv2.GaussianBlur(clutter, (0, 0), 0.6)
    img += 12 * _fine_noise(rng, h, w)[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# the scene: layers with textures and per-frame affines
# ------------------------------------------------------------------------------------------------
@dataclass
class Layer:
    id: int  # 0 = background, 1..K objects
    class_index: int
    z: int  # drawing order: 0 = background (bottom), larger = nearer
    shape: str  # "plane" for the background
    radius: float  # shape circumradius in layer-local pixels (0 for the background)
    centre: tuple[float, float]  # shape centre in layer-local pixels
    affines: np.ndarray  # float64 [T, 2, 3], layer-local -> image
    motion: dict = field(default_factory=dict)  # the parameters the affines were made from
    texture: np.ndarray | None = None  # uint8 [h, w, 3] (not stored on disk)
    alpha: np.ndarray | None = None  # float32 [h, w] coverage (objects)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "class": CLASSES[self.class_index],
            "class_index": self.class_index,
            "z": self.z,
            "shape": self.shape,
            "radius": self.radius,
            "centre": list(self.centre),
            "motion": self.motion,
            # per frame [a11, a12, b1, a21, a22, b2]: image = [[a11, a12], [a21, a22]] @ local + b
            "affines": [[float(v) for v in a.ravel()] for a in self.affines],
        }


def _video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)]))


def _video_length(rng: np.random.Generator, num_frames: int, exact_length: bool) -> int:
    jitter = rng.uniform(-0.25, 0.25)  # always drawn, so the rest of the stream does not depend on it
    return num_frames if exact_length else max(2, int(round(num_frames * (1 + jitter))))


def _camera(rng: np.random.Generator, T: int, W: int, H: int) -> tuple[Layer, tuple[int, int]]:
    t = np.arange(T, dtype=np.float64)
    dmax = 0.08 * max(W, H)
    zamp = rng.uniform(0.02, 0.06)
    aamp = np.deg2rad(rng.uniform(1.0, 4.0))
    drift = rng.uniform(-1, 1, 2)
    pc, phc = T * rng.uniform(0.8, 2.0, 2), rng.uniform(0, 2 * np.pi, 2)
    pz, phz = T * rng.uniform(0.8, 2.0), rng.uniform(0, 2 * np.pi)
    pa, pha = T * rng.uniform(0.8, 2.0), rng.uniform(0, 2 * np.pi)
    ramp = (2 * t / max(T - 1, 1) - 1)[:, None]
    d = dmax * (0.5 * drift * ramp + 0.5 * np.sin(2 * np.pi * t[:, None] / pc + phc))
    zoom = 1 + zamp * np.sin(2 * np.pi * t / pz + phz)
    ang = aamp * np.sin(2 * np.pi * t / pa + pha)
    half = math.ceil(dmax + 0.5 * math.hypot(W, H) / (1 - zamp) + 4)
    tex_c = np.array([half, half], np.float64)
    img_c = np.array([W / 2, H / 2])
    lin = zoom[:, None, None] * _rot(ang)
    trans = img_c - np.einsum("tij,tj->ti", lin, tex_c + d)
    motion = {
        "kind": "camera",
        "translation_amplitude": dmax,
        "drift": drift.tolist(),
        "periods": pc.tolist(),
        "phases": phc.tolist(),
        "zoom_amplitude": zamp,
        "zoom_period": pz,
        "zoom_phase": phz,
        "rotation_amplitude": aamp,
        "rotation_period": pa,
        "rotation_phase": pha,
    }
    layer = Layer(0, 0, 0, "plane", 0.0, (half, half), _compose(lin, trans), motion)
    return layer, (2 * half, 2 * half)


def _object_motion(rng: np.random.Generator, T: int, W: int, H: int, rb: float, edge_swing: bool) -> tuple[np.ndarray, dict]:
    """Image-space centre path [T, 2] of an object whose bounding radius is ``rb``."""
    t = np.arange(T, dtype=np.float64)
    if edge_swing:
        # swing perpendicular to one image edge: inside at the start, fully outside around the
        # middle of a period, back inside after a period (period < video length)
        edge = int(rng.integers(4))
        P = T * rng.uniform(0.7, 0.85)
        A = 2.2 * rb
        ph = -np.pi / 2 + rng.uniform(-0.3, 0.3)
        s = A * np.sin(2 * np.pi * t / P + ph)
        ext = H if edge in (0, 1) else W  # extent along the edge
        along = ext * rng.uniform(0.3, 0.7) + 0.1 * ext * np.sin(2 * np.pi * t / (T * rng.uniform(1, 2)) + rng.uniform(0, 2 * np.pi))
        perp = {0: -s, 1: W + s, 2: -s, 3: H + s}[edge]  # 0 left, 1 right, 2 top, 3 bottom
        c = np.stack([perp, along] if edge in (0, 1) else [along, perp], -1)
        return c, {"kind": "edge_swing", "edge": ["left", "right", "top", "bottom"][edge], "period": P, "amplitude": A, "phase": ph}
    anchor = np.array([W, H]) * rng.uniform(0.3, 0.7, 2)
    amp = np.array([W, H]) * rng.uniform(0.08, 0.25, 2)
    per = T * rng.uniform(0.8, 2.0, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    c = anchor + amp * np.sin(2 * np.pi * t[:, None] / per + ph)
    return c, {"kind": "oscillate", "anchor": anchor.tolist(), "amplitude": amp.tolist(), "periods": per.tolist(), "phases": ph.tolist()}


@dataclass
class Scene:
    video_id: str
    num_frames: int
    width: int
    height: int
    layers: list[Layer]  # sorted by z, background first

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t``: (uint8 [H, W, 3] RGB, uint8 [H, W] instance mask)."""
        W, H = self.width, self.height
        bg = self.layers[0]
        img = cv2.warpAffine(
            bg.texture, cv2_matrix(bg.affines[t]), (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        ).astype(np.float32)
        mask = np.zeros((H, W), np.uint8)
        for L in self.layers[1:]:
            A = L.affines[t]
            scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
            cx, cy = apply_affine(A, np.array([L.centre]))[0]
            hr = (L.radius + 2) * scale + 2
            x0, y0 = max(0, int(math.floor(cx - hr))), max(0, int(math.floor(cy - hr)))
            x1, y1 = min(W, int(math.ceil(cx + hr)) + 1), min(H, int(math.ceil(cy + hr)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            M = cv2_matrix(A, (x0, y0))
            size = (x1 - x0, y1 - y0)
            tex = cv2.warpAffine(L.texture, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            a = cv2.warpAffine(L.alpha, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            roi = img[y0:y1, x0:x1]
            roi += a[..., None] * (tex.astype(np.float32) - roi)
            mask[y0:y1, x0:x1][a >= 0.5] = L.id
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask

    def ground_truth(self) -> "SyntheticGroundTruth":
        return SyntheticGroundTruth.from_json(self.to_json())

    def to_json(self) -> dict:
        return {
            "format": GT_FORMAT,
            "video_id": self.video_id,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "convention": "affines map layer-local (x, y) to image (x, y) pixels, row-major "
            "[a11, a12, b1, a21, a22, b2]; pixel (col, row) has centre (col + 0.5, row + 0.5)",
            "classes": list(CLASSES),
            "layers": [L.to_json() for L in self.layers],
        }


def make_scene(
    video_index: int,
    seed: int = 0,
    split: str = "train",
    num_frames: int = 80,
    width: int = 320,
    height: int = 240,
    exact_length: bool = False,
    video_id: str | None = None,
) -> Scene:
    """Build video ``video_index`` of the set (textures and motion; nothing is rendered yet)."""
    rng = _video_rng(seed, split, video_index)
    T = _video_length(rng, num_frames, exact_length)
    W, H = width, height
    bg, (bw, bh) = _camera(rng, T, W, H)
    bg.texture = _background_texture(rng, bh, bw)
    K = int(rng.integers(2, 6))
    classes = rng.choice(np.arange(1, len(CLASSES)), size=K, replace=K > len(CLASSES) - 1) if K else []
    swinger = int(rng.integers(K))
    layers = [bg]
    t = np.arange(T, dtype=np.float64)
    for k in range(K):
        cls = int(classes[k])
        r_img = rng.uniform(0.09, 0.16) * min(W, H)
        R = float(math.ceil(1.12 * r_img) + 1)  # shape radius in texture pixels: scale stays < 1
        S = int(2 * (R + 3))
        centre = (S / 2, S / 2)
        c, motion = _object_motion(rng, T, W, H, 1.12 * r_img, k == swinger)
        th0, om = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(0.5, 2.5)) * rng.choice([-1, 1])
        wob, pw, phw = rng.uniform(0, 0.3), T * rng.uniform(0.6, 1.5), rng.uniform(0, 2 * np.pi)
        theta = th0 + om * t + wob * np.sin(2 * np.pi * t / pw + phw)
        ps, phs = T * rng.uniform(0.6, 1.5), rng.uniform(0, 2 * np.pi)
        sigma = (r_img / R) * (1 + 0.12 * np.sin(2 * np.pi * t / ps + phs))
        lin = sigma[:, None, None] * _rot(theta)
        trans = c - np.einsum("tij,j->ti", lin, np.array(centre))
        motion.update(
            rotation={"theta0": th0, "per_frame": om, "wobble": wob, "period": pw, "phase": phw},
            scale={"base": r_img / R, "amplitude": 0.12, "period": ps, "phase": phs},
        )
        shape = CLASS_SHAPES[cls]
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5
        sdf = shape_sdf(shape, R, np.stack([xx - centre[0], yy - centre[1]], -1))
        alpha = np.clip(0.5 - sdf, 0, 1).astype(np.float32)
        layers.append(
            Layer(k + 1, cls, k + 1, shape, R, centre, _compose(lin, trans), motion,
                  _object_texture(rng, cls, S), alpha)
        )
    return Scene(video_id or f"syn{video_index:05d}", T, W, H, layers)


# ------------------------------------------------------------------------------------------------
# ground truth
# ------------------------------------------------------------------------------------------------
@dataclass
class _GTLayer:
    id: int
    class_index: int
    z: int
    shape: str
    radius: float
    centre: np.ndarray
    A: np.ndarray  # [T, 2, 3]
    Ainv: np.ndarray  # [T, 2, 3]


class SyntheticGroundTruth:
    """Exact tracks, visibility and layer membership for one synthetic video."""

    def __init__(self, video_id: str, num_frames: int, width: int, height: int, layers: list[_GTLayer]):
        self.video_id = video_id
        self.num_frames = num_frames
        self.width = width
        self.height = height
        self._layers = {L.id: L for L in layers}
        self._objects_top_down = sorted((L for L in layers if L.shape != "plane"), key=lambda L: -L.z)

    @classmethod
    def from_json(cls, d: dict) -> "SyntheticGroundTruth":
        T = int(d["num_frames"])
        layers = []
        for L in d["layers"]:
            A = np.asarray(L["affines"], dtype=np.float64).reshape(-1, 2, 3)
            if len(A) != T:
                raise MosicError(f"ground truth of {d['video_id']!r}: layer {L['id']} has {len(A)} affines for {T} frames")
            layers.append(_GTLayer(int(L["id"]), int(L["class_index"]), int(L["z"]), L["shape"], float(L["radius"]),
                                   np.asarray(L["centre"], np.float64), A, invert_affines(A)))
        return cls(d["video_id"], T, int(d["width"]), int(d["height"]), layers)

    # -- queries -------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return sorted(i for i in self._layers if i != 0)

    def class_of(self, layer_id: int) -> int:
        """The semantic class index (into CLASSES) of layer ``layer_id`` (0 = background)."""
        return self._layers[layer_id].class_index

    def affine(self, layer_id: int, frame: int) -> np.ndarray:
        """float64 [2, 3]: layer-local -> image at ``frame``."""
        return self._layers[layer_id].A[self._check_frame(frame)].copy()

    def _check_frame(self, frame: int) -> int:
        f = int(frame)
        if not 0 <= f < self.num_frames:
            raise MosicError(f"video {self.video_id!r}: frame {f} out of range (0..{self.num_frames - 1})")
        return f

    def layer_at(self, frame: int, points: np.ndarray) -> np.ndarray:
        """int64 [N]: the topmost layer at each (x, y) point on ``frame`` (0 = background)."""
        f = self._check_frame(frame)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(len(pts), np.int64)
        free = np.ones(len(pts), bool)
        for L in self._objects_top_down:
            loc = apply_affine(L.Ainv[f], pts)
            inside = shape_sdf(L.shape, L.radius, loc - L.centre) <= 0
            out[free & inside] = L.id
            free &= ~inside
            if not free.any():
                break
        return out

    def track(self, query_frame: int, points: np.ndarray, frames: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """points float [N, 2] (x, y) on ``query_frame`` -> (tracks float32 [F, N, 2],
        visibility bool [F, N]) on ``frames``. A point moves with the topmost layer at its query
        position; it is visible where it is inside the image and that layer is topmost there."""
        q = self._check_frame(query_frame)
        fr = np.asarray([self._check_frame(f) for f in frames], dtype=np.int64)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        N, F = len(pts), len(fr)
        own = self.layer_at(q, pts)
        tracks = np.zeros((F, N, 2), np.float64)
        for lid in np.unique(own):
            sel = own == lid
            L = self._layers[int(lid)]
            loc = apply_affine(L.Ainv[q], pts[sel])
            A = L.A[fr]
            tracks[:, sel] = np.einsum("fij,nj->fni", A[:, :, :2], loc) + A[:, None, :, 2]
        vis = np.zeros((F, N), bool)
        for k, f in enumerate(fr):
            p = tracks[k]
            inb = (p[:, 0] >= 0) & (p[:, 0] < self.width) & (p[:, 1] >= 0) & (p[:, 1] < self.height)
            vis[k] = inb & (self.layer_at(int(f), p) == own)
        return tracks.astype(np.float32), vis


def _split_dir(root: Path | str, split: str) -> Path:
    return Path(root) / split


def load_ground_truth(root: Path | str, video_id: str, split: str = "train") -> SyntheticGroundTruth:
    p = _split_dir(root, split) / "GroundTruth" / f"{video_id}.json"
    if not p.is_file():
        raise MosicError(f"no synthetic ground truth for video {video_id!r}: expected {p}")
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise MosicError(f"{p}: not readable JSON: {e}") from None
    if d.get("format") != GT_FORMAT:
        raise MosicError(f"{p}: unknown ground-truth format {d.get('format')!r} (expected {GT_FORMAT!r})")
    return SyntheticGroundTruth.from_json(d)


def load_classes(root: Path | str) -> list[str]:
    p = Path(root) / "classes.json"
    if not p.is_file():
        raise MosicError(f"no class list: expected {p}")
    return list(json.loads(p.read_text()))


# ------------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------------
_PALETTE = voc_colormap().ravel().tolist()  # the DAVIS/YouTube-VOS annotation palette


def generation_spec(videos: int, seed: int, split: str, num_frames: int, width: int, height: int, exact_length: bool) -> dict:
    return {
        "generator": GENERATOR,
        "videos": int(videos),
        "seed": int(seed),
        "split": split,
        "num_frames": int(num_frames),
        "exact_length": bool(exact_length),
        "width": int(width),
        "height": int(height),
    }


def read_spec(root: Path | str, split: str = "train") -> dict | None:
    """The settings a synthetic split was generated with (with "complete": bool), or None."""
    p = _split_dir(root, split) / "synthetic.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


_OUR_ENTRIES = ("JPEGImages", "Annotations", "GroundTruth", "meta.json", "synthetic.json")


def _prepare_split_dir(split_dir: Path, spec: dict, overwrite: bool) -> None:
    existing = read_spec(split_dir.parent, split_dir.name)
    present = [n for n in _OUR_ENTRIES if (split_dir / n).exists()]
    if not present:
        return
    same = existing is not None and {k: v for k, v in existing.items() if k != "complete"} == spec
    if not same and not overwrite:
        what = (
            "a different synthetic set (" + ", ".join(f"{k}={existing.get(k)}, not {spec[k]}" for k in spec if existing.get(k) != spec[k]) + ")"
            if existing
            else "other data (" + ", ".join(present) + ")"
        )
        raise MosicError(f"{split_dir} already holds {what}; choose another --out or pass --overwrite to replace it")
    for n in present:
        p = split_dir / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _is_complete(split_dir: Path, spec: dict, ids: list[str], lengths: list[int]) -> bool:
    existing = read_spec(split_dir.parent, split_dir.name)
    if not existing or not existing.get("complete"):
        return False
    if {k: v for k, v in existing.items() if k != "complete"} != spec or not (split_dir / "meta.json").is_file():
        return False
    return all(
        len(list_jpegs(split_dir / "JPEGImages" / vid)) == n and (split_dir / "GroundTruth" / f"{vid}.json").is_file()
        for vid, n in zip(ids, lengths)
    )


def is_generated(
    out: Path | str, videos: int, seed: int = 0, split: str = "train", num_frames: int = 80,
    width: int = 320, height: int = 240, *, exact_length: bool = False,
) -> bool:
    """Whether ``out/<split>`` already holds, complete, the set these arguments would generate."""
    spec = generation_spec(videos, seed, split, num_frames, width, height, exact_length)
    ids = [f"syn{i:05d}" for i in range(videos)]
    lengths = [_video_length(_video_rng(seed, split, i), num_frames, exact_length) for i in range(videos)]
    return _is_complete(Path(out) / split, spec, ids, lengths)


def _write_json(path: Path, obj, compact: bool = False) -> None:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")) if compact else json.dumps(obj, indent=1, sort_keys=True)
    path.write_text(text + "\n")


def write_video(scene: Scene, split_dir: Path) -> dict:
    """Render and write one video; returns its meta.json entry."""
    vid = scene.video_id
    jdir = split_dir / "JPEGImages" / vid
    adir = split_dir / "Annotations" / vid
    jdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    seen: dict[int, list[str]] = {L.id: [] for L in scene.layers[1:]}
    for t in range(scene.num_frames):
        rgb, mask = scene.render(t)
        name = f"{t:05d}"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover
            raise MosicError(f"could not encode frame {t} of {vid}")
        (jdir / f"{name}.jpg").write_bytes(buf.tobytes())
        im = Image.fromarray(mask, mode="P")
        im.putpalette(_PALETTE)
        im.save(adir / f"{name}.png", compress_level=1)
        for i in np.unique(mask):
            if i:
                seen[int(i)].append(name)
    _write_json(split_dir / "GroundTruth" / f"{vid}.json", scene.to_json(), compact=True)
    return {
        "objects": {
            str(L.id): {"category": CLASSES[L.class_index], "frames": seen[L.id]} for L in scene.layers[1:]
        }
    }


def generate(
    out: Path | str,
    videos: int,
    seed: int = 0,
    split: str = "train",
    num_frames: int = 80,
    width: int = 320,
    height: int = 240,
    progress: bool = False,
    *,
    exact_length: bool = False,
    overwrite: bool = False,
    reuse: bool = True,
) -> list[str]:
    """Write ``videos`` synthetic videos under ``out/<split>`` (YouTube-VOS layout); returns their ids.

    Each video has about ``num_frames`` frames (uniformly 75%..125% of it, per video), or exactly
    ``num_frames`` with ``exact_length``. The same arguments give byte-identical files; the split
    name is part of the seed, so train and valid sets differ. A split folder that already holds a
    different set is refused unless ``overwrite``; one that already holds this very set, complete,
    is left as it is when ``reuse`` (see :func:`is_generated`)."""
    if videos < 1:
        raise MosicError(f"videos must be at least 1, got {videos}")
    if num_frames < 2:
        raise MosicError(f"num_frames must be at least 2, got {num_frames}")
    if width < MIN_SIZE or height < MIN_SIZE:
        raise MosicError(f"frames must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {width}x{height}")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise MosicError(f"invalid split name {split!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MosicError(f"{out} exists and is not a folder")
    split_dir = out / split
    spec = generation_spec(videos, seed, split, num_frames, width, height, exact_length)
    ids = [f"syn{i:05d}" for i in range(videos)]
    lengths = [_video_length(_video_rng(seed, split, i), num_frames, exact_length) for i in range(videos)]
    if reuse and not overwrite and _is_complete(split_dir, spec, ids, lengths):
        return ids
    _prepare_split_dir(split_dir, spec, overwrite)
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "GroundTruth").mkdir(exist_ok=True)
    classes_file = out / "classes.json"
    if classes_file.exists() and json.loads(classes_file.read_text()) != list(CLASSES) and not overwrite:
        raise MosicError(f"{classes_file} lists other classes; choose another --out or pass --overwrite")
    _write_json(classes_file, list(CLASSES))
    _write_json(split_dir / "synthetic.json", {**spec, "complete": False})

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(lengths), unit="frame", desc=f"synthetic {split}", dynamic_ncols=True)
    meta = {"videos": {}}
    try:
        for i, vid in enumerate(ids):
            scene = make_scene(i, seed, split, num_frames, width, height, exact_length, video_id=vid)
            meta["videos"][vid] = write_video(scene, split_dir)
            if bar is not None:
                bar.update(scene.num_frames)
    finally:
        if bar is not None:
            bar.close()
    _write_json(split_dir / "meta.json", meta, compact=True)
    _write_json(split_dir / "synthetic.json", {**spec, "complete": True})
    return ids


# ------------------------------------------------------------------------------------------------
# the frame source
# ------------------------------------------------------------------------------------------------
@SOURCES.register("synthetic")
class SyntheticSource(YtvosSource):
    """A set written by :func:`generate` (``mosic-data synthetic``): YouTube-VOS layout plus ground truth."""

    kind = "synthetic"
    layout = "{root}/{split}/JPEGImages/<video>/*.jpg (make a set with: mosic-data synthetic --out {root} --videos N)"

    def __init__(self, root: str | Path, split: str = "train"):
        super().__init__(root, split)
        self._gt_cache: dict[str, SyntheticGroundTruth] = {}

    def _scan(self):
        infos = super()._scan()
        if not (self.split_root / "GroundTruth").is_dir():
            raise MosicError(
                f"synthetic: {self.split_root} has no GroundTruth folder, so it is not a synthetic set "
                f"(make one with: mosic-data synthetic --out {self.root} --videos N)"
            )
        return infos

    def ground_truth(self, video_id: str) -> SyntheticGroundTruth:
        if video_id not in self._gt_cache:
            self._gt_cache[video_id] = load_ground_truth(self.root, video_id, self.split)
        return self._gt_cache[video_id]

    def classes(self) -> list[str]:
        return load_classes(self.root)

    def spec(self) -> dict | None:
        return read_spec(self.root, self.split)
