"""Drawing the synthetic scenes' parts: the object classes' shapes (signed distances) and textures."""

from __future__ import annotations

import math

import cv2
import numpy as np

#: class names; the index is the semantic class id (0 = background)
CLASSES: tuple[str, ...] = ("background", "disc", "box", "triangle", "star", "ellipse")
#: shape and texture family of each object class
CLASS_SHAPES = {1: "circle", 2: "square", 3: "triangle", 4: "star", 5: "ellipse"}
CLASS_TEXTURES = {1: "stripes", 2: "checkers", 3: "dots", 4: "blobs", 5: "rings"}

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
